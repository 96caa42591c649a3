/* A small single-threaded program: a few call paths, recursion, a function pointer, a static function.
   Its output depends only on its arguments, so an original and a prepared build must print the same. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) int square(int x) { return x * x; }
__attribute__((noinline)) static int cube(int x) { return x * square(x); }
__attribute__((noinline)) long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) void reverse(char* s) {
  for (size_t i = 0, j = strlen(s); i + 1 < j; i++, j--) {
    char c = s[i];
    s[i] = s[j - 1];
    s[j - 1] = c;
  }
}
__attribute__((noinline)) int apply(int (*f)(int), int x) { return f(x); }

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20;
  char word[] = "prepatch";
  reverse(word);
  printf("square(%d) = %d\n", n, square(n));
  printf("cube(%d) = %d\n", n, apply(cube, n));
  printf("fib(%d) = %ld\n", n, fib(n));
  printf("reversed: %s\n", word);
  return n % 7;  /* a non-zero exit status that must survive preparation */
}
