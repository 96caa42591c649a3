/* A multithreaded program: workers call instrumented functions in loops; results are deterministic. */
#include <pthread.h>
#include <stdio.h>

#define THREADS 4
#define ROUNDS 100000

__attribute__((noinline)) unsigned mix(unsigned x) { return x * 2654435761u ^ (x >> 13); }
__attribute__((noinline)) unsigned step(unsigned acc, unsigned i) { return acc + mix(i) % 1000; }

struct work { unsigned id, result; };

__attribute__((noinline)) void* worker(void* arg) {
  struct work* w = arg;
  unsigned acc = w->id;
  for (unsigned i = 0; i < ROUNDS; i++) acc = step(acc, i + w->id);
  w->result = acc;
  return NULL;
}

int main(void) {
  pthread_t t[THREADS];
  struct work w[THREADS];
  for (unsigned i = 0; i < THREADS; i++) {
    w[i].id = i;
    pthread_create(&t[i], NULL, worker, &w[i]);
  }
  for (unsigned i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    printf("worker %u: %u\n", i, w[i].result);
  }
  return 0;
}
