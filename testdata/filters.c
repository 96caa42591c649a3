/* The record-time filters' test program (tests/filters_test.cc). Each round, every worker thread calls
   work(R), which makes the same calls every time:
     for i in 0..3:  a(i) -> b(i) -> c(i), c(i + 1)      (a three-level chain)
                     quiet(i) -> c(i)                    (GRAPH_NOTRACE's target)
                     slow(i == 1 || i == 3 ? SLOW_MS : 0) -> c(0)   (sleeps that long: THRESHOLD's slow calls)
                     mix(ARGUMENTS(R, i)) = its value    (six integer arguments: PREPATCH_ARGS, RETVAL)
   and prints "mix K R I = V" for each mix call (K the thread, V what mix returned).
   Usage: filters once THREADS    one round on THREADS threads, then exit
          filters live THREADS    prints "ready PID tids T1 T2 ...", then a round per line read from
                                  stdin, each ended by a line "done R"; exits at end of input.
   With FILTERS_CHDIR=DIR set, main changes its working directory to DIR before the first round (after
   the shim made its trace file). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __clang__
#define noipa noinline
#endif
#define SLOW_MS 150

__attribute__((noipa)) int c(int x) { __asm__ volatile("" ::: "memory"); return 3 * x + 1; }
__attribute__((noipa)) int b(int x) { return c(x) + c(x + 1); }
__attribute__((noipa)) int a(int x) { return b(x) + 1; }
__attribute__((noipa)) int quiet(int x) { return c(x) - 1; }
__attribute__((noipa)) int slow(int ms) {
  if (ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&t, &t) != 0) {
    }
  }
  return c(0);
}
/* Small and negative values, and ones that take more than 34 bits (pointers, large constants; where
   long is 32 bits, t is the constant's low word: the product is unsigned, so that it wraps). */
__attribute__((noipa)) long mix(int p, long q, const void* r, int s, long t, unsigned u) {
  return p * 1000003L + q - (long)(uintptr_t)r / 2 + s * 7L + t + u;
}

static char buffer[64];
static int threads;
static pthread_barrier_t hello, start, end;
static int round_no;

__attribute__((noipa)) long work(int k, int r) {
  long sum = 0;
  for (int i = 0; i < 4; i++) {
    sum += a(i) + quiet(i) + slow(i == 1 || i == 3 ? SLOW_MS : 0);
    const long v = mix(k * 10 + i, -(long)(r + 1) * (i + 1), buffer + i, -i, (long)(0x123456789abULL * (i + 1)), 0xffffffffu - i);
    printf("mix %d %d %d = %ld\n", k, r, i, v);
    sum += v;
  }
  return sum;
}

static pid_t tids[8];

static void* worker(void* arg) {
  const int k = (int)(intptr_t)arg;
  tids[k] = gettid();
  pthread_barrier_wait(&hello);
  for (;;) {
    pthread_barrier_wait(&start);
    if (round_no < 0) return NULL;
    work(k, round_no);
    pthread_barrier_wait(&end);
  }
}

int main(int argc, char** argv) {
  if (argc != 3 || (strcmp(argv[1], "once") != 0 && strcmp(argv[1], "live") != 0))
    return fprintf(stderr, "usage: filters once|live THREADS\n"), 2;
  threads = atoi(argv[2]);
  if (threads < 1 || threads > 8) return fprintf(stderr, "filters: 1 to 8 threads\n"), 2;
  setvbuf(stdout, NULL, _IOLBF, 0);
  pthread_barrier_init(&hello, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&end, NULL, (unsigned)threads + 1);
  pthread_t t[8];
  for (int k = 0; k < threads; k++) pthread_create(&t[k], NULL, worker, (void*)(intptr_t)k);
  pthread_barrier_wait(&hello);
  const int live = strcmp(argv[1], "live") == 0;
  printf(live ? "ready %d tids" : "pid %d tids", (int)getpid());
  for (int k = 0; k < threads; k++) printf(" %d", (int)tids[k]);
  printf("\n");
  const char* dir = getenv("FILTERS_CHDIR");
  if (dir && chdir(dir) != 0) return perror(dir), 2;
  char line[64];
  for (int r = 0; live ? fgets(line, sizeof line, stdin) != NULL : r < 1; r++) {
    round_no = r;
    pthread_barrier_wait(&start);
    pthread_barrier_wait(&end);
    if (live) printf("done %d\n", r);
  }
  round_no = -1;
  pthread_barrier_wait(&start);
  for (int k = 0; k < threads; k++) pthread_join(t[k], NULL);
  return 0;
}
