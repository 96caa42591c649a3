/* A small single-threaded program: a few call paths, recursion, a function pointer, a static function.
   Its output depends only on its arguments, so an original and a prepared build must print the same.
   Every function counts its own calls and the last line reports them: the oracle the shim's per-site
   counters are checked against. `noipa` and the volatile pointer keep each call a real call (no clones,
   no recursion turned into a loop), so entries and calls agree. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#define noipa noinline /* clang has no noipa; noinline keeps its calls real */
#endif

static unsigned long calls_square, calls_cube, calls_fib, calls_reverse, calls_apply;

__attribute__((noipa)) int square(int x) { calls_square++; return x * x; }
__attribute__((noipa)) static int cube(int x) { calls_cube++; return x * square(x); }
__attribute__((noipa)) long fib(int n);
static long (*volatile fib_call)(int) = fib;
__attribute__((noipa)) long fib(int n) { calls_fib++; return n < 2 ? n : fib_call(n - 1) + fib_call(n - 2); }
__attribute__((noipa)) void reverse(char* s) {
  calls_reverse++;
  for (size_t i = 0, j = strlen(s); i + 1 < j; i++, j--) {
    char c = s[i];
    s[i] = s[j - 1];
    s[j - 1] = c;
  }
}
__attribute__((noipa)) int apply(int (*f)(int), int x) { calls_apply++; return f(x); }

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20;
  char word[] = "prepatch";
  reverse(word);
  printf("square(%d) = %d\n", n, square(n));
  printf("cube(%d) = %d\n", n, apply(cube, n));
  printf("fib(%d) = %ld\n", n, fib(n));
  printf("reversed: %s\n", word);
  printf("calls: main=1 square=%lu cube=%lu fib=%lu reverse=%lu apply=%lu\n", calls_square, calls_cube, calls_fib,
         calls_reverse, calls_apply);
  return n % 7;  /* a non-zero exit status that must survive preparation */
}
