#!/usr/bin/env bash
# Fetches lua5.4 and zlib as Debian source packages (apt-get source: scripts/install-deps.sh adds the
# deb-src entry) and builds them in three site flavors for tests/real_programs_test.cc: the Lua
# interpreter, and zlib's own test programs (example, minigzip, infcover) with zlib compiled in; and
# zlib and Lua as shared libraries (-pg -mfentry) under programs built without hooks and with them, plus a
# Lua C module; and the Lua interpreter cross-built for AArch64 (-pg).
# Usage: tests/real_programs.sh OUTDIR   (does nothing when OUTDIR is already complete)
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cd "$out"
[ -f built ] && [ -f shared/built.v2 ] && [ -f a64-pg/lua ] && exit 0
if ! ls -d lua5.4-*/src zlib-*/test >/dev/null 2>&1; then
  rm -rf lua5.4* zlib*
  apt-get source -qq lua5.4 zlib >fetch.log 2>&1 || { cat fetch.log >&2; echo "real_programs: apt-get source failed" >&2; exit 1; }
fi
lua=$(ls -d lua5.4-*/src)
zlib=$(ls -d zlib-*/ | head -1)
zlib=${zlib%/}
# Debian's patch makes luaconf.h include a header its build generates.
mkdir -p include
echo '#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"' >include/lua5.4-deb-multiarch.h
lua_sources=$(ls "$lua"/*.c | grep -v '/luac\.c$')
zlib_sources=$(for f in adler32 compress crc32 deflate gzclose gzlib gzread gzwrite infback inffast inflate inftrees trees uncompr zutil; do
  echo "$zlib/$f.c"; done)

build() {  # NAME FLAGS
  local name=$1 flags=$2
  mkdir -p "$name"
  # shellcheck disable=SC2086
  gcc -O2 -g0 -w $flags -Iinclude -DLUA_USE_LINUX $lua_sources -o "$name/lua" -lm -ldl
  for p in example minigzip infcover; do
    # shellcheck disable=SC2086
    gcc -O2 -g0 -w $flags -I"$zlib" $zlib_sources "$zlib/test/$p.c" -o "$name/$p"
  done
}
if [ ! -f built ]; then
  build fentry "-pg -mfentry" &
  first=$!
  build pfe5 "-fpatchable-function-entry=5"
  wait $first
  build mcount "-pg"
  touch built
fi
# Lua for AArch64 (-pg), run under qemu-aarch64 (RealAarch64).
if [ ! -f a64-pg/lua ]; then
  mkdir -p a64-pg
  # shellcheck disable=SC2086
  aarch64-linux-gnu-gcc -O2 -g0 -w -pg -Iinclude -DLUA_USE_LINUX $lua_sources -o a64-pg/lua.new -lm -ldl
  mv a64-pg/lua.new a64-pg/lua
fi
# Shared: zlib as libz.so.1 and Lua as liblua5.4.so.0, built -pg -mfentry, with minigzip, example and
# the interpreter built without hooks and linked against them (they find the library through
# LD_LIBRARY_PATH); and a Lua C module (testdata/real/ppmod.c) for Debian's own lua5.4.
mkdir -p shared/lib
# shellcheck disable=SC2086
gcc -O2 -g0 -w -pg -mfentry -fPIC -shared -Wl,-soname,libz.so.1 -I"$zlib" $zlib_sources -o shared/lib/libz.so.1
for p in example minigzip; do
  gcc -O2 -g0 -w -I"$zlib" "$zlib/test/$p.c" shared/lib/libz.so.1 -o "shared/$p"
done
# shellcheck disable=SC2046
gcc -O2 -g0 -w -pg -mfentry -fPIC -shared -Wl,-soname,liblua5.4.so.0 -Iinclude -DLUA_USE_LINUX \
  $(ls "$lua"/*.c | grep -v '/lua\.c$' | grep -v '/luac\.c$') -o shared/lib/liblua5.4.so.0 -lm -ldl
gcc -O2 -g0 -w -Iinclude -DLUA_USE_LINUX "$lua/lua.c" shared/lib/liblua5.4.so.0 -o shared/lua -lm -ldl
gcc -O2 -g0 -w -pg -mfentry -fPIC -shared -I"$lua" -Iinclude "$here/../testdata/real/ppmod.c" -o shared/lib/ppmod.so
# The same programs with hooks too (NAME.hooks), to be prepared along with the libraries: compiled
# -pg -mfentry, linked without -pg (glibc's __fentry__; no gmon.out).
for p in example minigzip; do
  gcc -O2 -g0 -w -pg -mfentry -I"$zlib" -c "$zlib/test/$p.c" -o "shared/$p.o"
  gcc "shared/$p.o" shared/lib/libz.so.1 -o "shared/$p.hooks"
done
gcc -O2 -g0 -w -pg -mfentry -Iinclude -DLUA_USE_LINUX -c "$lua/lua.c" -o shared/lua.o
gcc shared/lua.o shared/lib/liblua5.4.so.0 -o shared/lua.hooks -lm -ldl
touch shared/built.v2
