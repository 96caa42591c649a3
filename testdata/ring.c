/* The flight recorder's test (tests/ring_test.cc): four threads each make CALLS calls of f0..f7 in a
   sequence the test computes (thread K's call I is f((I * 7 + K * 3 + I / 16) % 8), 16 of them under
   each call of g), then print "thread K tid T". With "crash", once all four are done, thread 0 calls
   crash_here, which dereferences a null pointer; with "forever" they never stop (the test kills them),
   sleeping 50 us every 512 calls.
   Usage: ring CALLS finish|crash|forever */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define F(n) __attribute__((noinline)) int f##n(int x) { __asm__ volatile("" ::: "memory"); return x + n; }
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7)
static int (*const fs[8])(int) = {f0, f1, f2, f3, f4, f5, f6, f7};
__attribute__((noinline)) int g(long k, long i) {
  int s = 0;
  for (int j = 0; j < 16; j++, i++) s += fs[(i * 7 + k * 3 + i / 16) % 8](j);
  return s;
}

static int* volatile nowhere;  /* read at run time: the compiler cannot see the fault coming */
__attribute__((noinline)) void crash_here(void) { *nowhere = 1; }

static long calls;
static int forever, crash;
static pthread_barrier_t done;

static void* worker(void* arg) {
  const long k = (long)arg;
  volatile long sink = 0;
  for (long i = 0; forever || i < calls; i += 16) {
    sink += g(k, i);
    /* Forever: a pause now and then leaves the test's own threads some of the machine. */
    if (forever && i % 512 == 0) usleep(50);
  }
  printf("thread %ld tid %d\n", k, gettid());
  fflush(stdout);
  if (crash) {
    pthread_barrier_wait(&done);
    if (k == 0) crash_here();
    pause();
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 3) return fprintf(stderr, "usage: ring CALLS finish|crash|forever\n"), 2;
  calls = atol(argv[1]);
  forever = strcmp(argv[2], "forever") == 0;
  crash = strcmp(argv[2], "crash") == 0;
  pthread_barrier_init(&done, NULL, 4);
  pthread_t t[4];
  for (long k = 0; k < 4; k++) pthread_create(&t[k], NULL, worker, (void*)k);
  for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
  return 0;
}
