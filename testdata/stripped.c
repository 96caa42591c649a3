// Three functions, one of them static, for the stripped-binary tests (tests/debug_file_test.cc,
// tests/stripped_test.cc): main calls h argv[1] times, h calls g twice; prints the sum (2: 16, 3: 33).
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) static int g(int i) { return i * 3 + 1; }
__attribute__((noinline)) int h(int i) { return g(i) + g(i + 1); }
int main(int argc, char** argv) {
  int n = atoi(argv[1]), s = 0;
  for (int i = 0; i < n; i++) s += h(i);
  printf("%d\n", s);
  return 0;
}
