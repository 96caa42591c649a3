/* What bench/toggle_bench.py's and bench/objects_bench.py's programs share: two threads calling
   `call_all` the whole time while the main thread times `rounds` pairs of "enable everything" and
   "disable everything" through `toggle`, printing per round
   "toggle SITES_ON MS_ON SITES_OFF MS_OFF" (toggle_times() in bench/common.py reads them). */
#ifndef PREPATCH_TOGGLE_ROUNDS_H
#define PREPATCH_TOGGLE_ROUNDS_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int toggle_rounds_stop;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void pause_ms(long ms) {
  struct timespec t = {0, ms * 1000000L};
  nanosleep(&t, NULL);
}

struct toggle_rounds_runner {
  unsigned (*call_all)(unsigned);
  unsigned seed;
};

static void* toggle_rounds_run(void* arg) {
  const struct toggle_rounds_runner* r = arg;
  unsigned acc = r->seed;
  while (!atomic_load_explicit(&toggle_rounds_stop, memory_order_relaxed)) acc = r->call_all(acc);
  return (void*)(unsigned long)acc;
}

/* toggle(1) enables every site, toggle(0) disables them; each returns how many it switched. */
static void toggle_rounds(int rounds, unsigned (*call_all)(unsigned), unsigned long (*toggle)(int)) {
  pthread_t t[2];
  struct toggle_rounds_runner r[2] = {{call_all, 0}, {call_all, 1}};
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, toggle_rounds_run, &r[i]);
  pause_ms(20);
  for (int k = 0; k < rounds; k++) {
    double t0 = now_ms();
    unsigned long on = toggle(1);
    double t1 = now_ms();
    pause_ms(5);
    double t2 = now_ms();
    unsigned long off = toggle(0);
    double t3 = now_ms();
    pause_ms(5);
    printf("toggle %lu %.4f %lu %.4f\n", on, t1 - t0, off, t3 - t2);
  }
  atomic_store(&toggle_rounds_stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
}
#endif
