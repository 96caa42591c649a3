/* A workload whose trace can be made as large as wanted, for the readers' tests and benchmarks
   (tests/reader_test.cc, bench/reader_bench.py): THREADS threads (argv[1]) each walk a call tree
   ROUNDS times (argv[2]). One round is wide and deep:
     round -> level0 -> 4x level1 -> 4x level2 -> 4x level3 -> 4x leaf   (341 calls + 256 leaves)
           -> dive(60), which recurses 60 deep and calls leaf at the bottom (62 calls)
   so a round is 1 + 1 + 4 + 16 + 64 + 256 + 61 + 1 = 404 calls. Every thread prints its checksum;
   main prints the total number of calls it made, so a test knows what the trace must hold. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define CALLS_PER_ROUND 404

__attribute__((noinline)) int leaf(int x) {
  __asm__ volatile("");
  return x + 1;
}
__attribute__((noinline)) int level3(int x) { return leaf(x) + leaf(x + 1) + leaf(x + 2) + leaf(x + 3); }
__attribute__((noinline)) int level2(int x) { return level3(x) + level3(x + 1) + level3(x + 2) + level3(x + 3); }
__attribute__((noinline)) int level1(int x) { return level2(x) + level2(x + 1) + level2(x + 2) + level2(x + 3); }
__attribute__((noinline)) int level0(int x) { return level1(x) + level1(x + 1) + level1(x + 2) + level1(x + 3); }
__attribute__((noinline)) int dive(int d) {
  if (d == 0) return leaf(d);
  int r = dive(d - 1);
  __asm__ volatile("" : "+r"(r)); /* not a loop: every level is a call */
  return r + 1;
}
__attribute__((noinline)) int round_of(int x) { return level0(x) + dive(60); }

static long rounds;

__attribute__((noinline)) void* worker(void* arg) {
  long sum = (long)arg;
  for (long i = 0; i < rounds; i++) sum += round_of((int)i);
  return (void*)sum;
}

int main(int argc, char** argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  rounds = argc > 2 ? atol(argv[2]) : 1000;
  if (threads < 1 || threads > 64 || rounds < 0) return 2;
  pthread_t t[64];
  for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void*)i);
  long check = 0;
  for (int i = 0; i < threads; i++) {
    void* r;
    pthread_join(t[i], &r);
    check += (long)r;
  }
  printf("calls %ld checksum %ld\n", (long)threads * rounds * CALLS_PER_ROUND, check);
  return 0;
}
