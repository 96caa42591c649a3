/* The plugin soak (tests/unload_test.cc): four threads load a prepared plugin (testdata/plugin.c)
   with dlopen, call it, check every result and unload it with dlclose, CYCLES times in all; then one
   of them CYCLES / 10 times more alone (each dlclose then unloads it, where the loader may), while a
   fifth thread enables and disables every site through the control channel until they are done.
   Then every site is enabled, each plugin function is called once more, and every site disabled.
   PLUGIN may list several prepared plugins, separated by colons (copies of one: several objects,
   each enrolling with the first one's runtime as it first loads, while batches run): cycle C loads
   the (C modulo their number)th.
   Usage: plugin_soak PLUGIN[:PLUGIN...] CYCLES. Prints "cycles N toggles T rss_anon_kib EARLY LATE loads L"
   (L: how often a plugin was loaded, its constructor run; more than once when the loader unmapped it
   in between) and exits 0; exits 1 at a wrong result, 2 when the plugin cannot be loaded or a request
   is refused. Built without hooks, the runtime is the plugin's (which is then never unmapped); built
   -pg -mfentry, linked -rdynamic and prepared, the host's, and the plugin comes and goes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ctl_channel.h"

#define THREADS 4

static char* plugins[64];
static int nplugins;
static long cycles;
static atomic_long next_cycle, loaded, done_threads, loads;

/* Called by the plugin's constructor (testdata/plugin.c). */
void soak_plugin_loaded(void) { atomic_fetch_add(&loads, 1); }
static long early_rss = -1;

/* The plugin's own formula: plugin_work(n) = sum over i < n of mix(i) + n, mix(i) = (i * 7 + 3) % 11. */
static long expected(int n) {
  long s = n;
  for (int i = 0; i < n; i++) s += (i * 7 + 3) % 11;
  return s;
}

static long rss_anon_kib(void) {
  FILE* f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "RssAnon: %ld", &kib) == 1) break;
  if (f) fclose(f);
  return kib;
}

static void* open_plugin(long c) {
  void* h = dlopen(plugins[c % nplugins], RTLD_NOW);
  if (!h) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    exit(2);
  }
  return h;
}

static void one_cycle(long c) {
  void* h = open_plugin(c);
  atomic_store(&loaded, 1);
  long (*work)(int) = (long (*)(int))dlsym(h, "plugin_work");
  const int n = (int)(c * 37 % 5000);
  const long got = work ? work(n) : -1;
  if (got != expected(n)) {
    fprintf(stderr, "cycle %ld: plugin_work(%d) = %ld, expected %ld\n", c, n, got, expected(n));
    exit(1);
  }
  if (dlclose(h) != 0) {
    fprintf(stderr, "dlclose: %s\n", dlerror());
    exit(2);
  }
}

static void* worker(void* arg) {
  for (long c; (c = atomic_fetch_add(&next_cycle, 1)) < cycles;) {
    one_cycle(c);
    if (c == cycles / 10) early_rss = rss_anon_kib();
  }
  if (arg) { /* the first worker: the others done, the cycles alone */
    while (atomic_load(&done_threads) < THREADS - 1) sched_yield();
    for (long c = 0; c < cycles / 10; c++) one_cycle(c);
  }
  atomic_fetch_add(&done_threads, 1);
  return NULL;
}

/* Sends `command` until it is carried out: "busy" (an object enrolling holds the batch lock, or a
   batch runs) is asked again, as prepatch ctl does. */
static void request(const char* command) {
  const char* r;
  while (strncmp(r = control(command), "busy", 4) == 0) sched_yield();
  if (strncmp(r, "ok:", 3) != 0) {
    fprintf(stderr, "\"%s\" answered: %s", command, r);
    exit(2);
  }
}

int main(int argc, char** argv) {
  if (argc != 3) return fprintf(stderr, "usage: plugin_soak PLUGIN[:PLUGIN...] CYCLES\n"), 2;
  for (char* p = strtok(argv[1], ":"); p && nplugins < 64; p = strtok(NULL, ":")) plugins[nplugins++] = p;
  cycles = atol(argv[2]);
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, i == 0 ? (void*)1 : NULL);
  long toggles = 0;
  while (atomic_load(&done_threads) < THREADS) {
    if (!atomic_load(&loaded)) continue; /* the runtime comes with the plugin */
    request("enable *");
    request("disable *");
    toggles++;
  }
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  request("enable *");
  one_cycle(cycles);
  request("disable *");
  printf("cycles %ld toggles %ld rss_anon_kib %ld %ld loads %ld\n", cycles, toggles, early_rss, rss_anon_kib(), atomic_load(&loads));
  return 0;
}
