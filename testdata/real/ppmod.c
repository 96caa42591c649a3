/* A Lua C module (tests/real_programs_test.cc, RealShared): Debian's own lua5.4 requires it built
   -pg -mfentry and prepared. ppmod.collatz(n) sums the Collatz path lengths of 1..n through a few
   instrumented functions, so the calls a run makes are known: steps() once per number. */
#include "lauxlib.h"
#include "lua.h"

__attribute__((noinline)) static unsigned long next(unsigned long x) { return x % 2 ? 3 * x + 1 : x / 2; }

__attribute__((noinline)) static unsigned long steps(unsigned long x) {
  unsigned long n = 0;
  for (; x != 1; n++) x = next(x);
  return n;
}

static int collatz(lua_State* L) {
  const lua_Integer n = luaL_checkinteger(L, 1);
  unsigned long total = 0;
  for (lua_Integer i = 1; i <= n; i++) total += steps((unsigned long)i);
  lua_pushinteger(L, (lua_Integer)total);
  return 1;
}

int luaopen_ppmod(lua_State* L) {
  static const luaL_Reg fns[] = {{"collatz", collatz}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
