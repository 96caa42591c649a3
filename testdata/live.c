/* A multithreaded program for the shim's live tests (tests/shim_test.cc). Modes:
     live stress TOGGLES CHECK_EVERY   4 workers call two leaves in tight loops and check every result,
                                       a spawner keeps creating short-lived threads that call a third
                                       leaf, and the main thread enables and disables all sites TOGGLES
                                       times through the shim's control channel (the protocol of
                                       docs/SHIM.md, spoken here without prepatch). Every CHECK_EVERY
                                       toggles, with all sites enabled, it pauses the workers, reads the
                                       shim's counters for the two leaves, lets the workers run, pauses
                                       them again and checks the counters grew by exactly the calls
                                       the workers made. Needs PREPATCH_COUNTS unless CHECK_EVERY is 0
                                       (no check: the graph tracer's stress).
     live wait [block]                 workers run until stdin closes; with `block`, one more thread
                                       blocks every signal (a thread pool) and calls a leaf too.
     live fork                         forks; the child runs `wait` and prints its pid first.
   Prints the wrong results and counter mismatches it saw; exits 0 only when both are 0. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl_channel.h"

#ifdef __clang__
#define noipa noinline
#endif

__attribute__((noipa)) unsigned leaf_add(unsigned x) { return x + 7; }
__attribute__((noipa)) unsigned leaf_mul(unsigned x) { return x * 3; }
__attribute__((noipa)) unsigned leaf_spawned(unsigned x) { return x ^ 0x5a5a; }

#define WORKERS 4
static atomic_int stop, pause_req, paused;
static atomic_ulong wrong;
static unsigned long worker_calls[WORKERS];  /* read only while the workers are paused */

static void* worker(void* arg) {
  unsigned long id = (unsigned long)arg;
  for (unsigned x = (unsigned)id; !atomic_load_explicit(&stop, memory_order_relaxed); x += WORKERS) {
    if (atomic_load_explicit(&pause_req, memory_order_acquire)) {
      atomic_fetch_add(&paused, 1);
      while (atomic_load(&pause_req)) {
      }
      atomic_fetch_sub(&paused, 1);
    }
    if (leaf_add(x) != x + 7) atomic_fetch_add(&wrong, 1);
    if (leaf_mul(x) != x * 3) atomic_fetch_add(&wrong, 1);
    worker_calls[id] += 2;
  }
  return NULL;
}

static void* short_lived(void* arg) {
  unsigned base = (unsigned)(unsigned long)arg;
  for (unsigned i = 0; i < 1000; i++)
    if (leaf_spawned(base + i) != ((base + i) ^ 0x5a5a)) atomic_fetch_add(&wrong, 1);
  return NULL;
}

static void* spawner(void* arg) {
  (void)arg;
  for (unsigned long n = 0; !atomic_load(&stop); n++) {
    pthread_t t;
    if (pthread_create(&t, NULL, short_lived, (void*)n) == 0) pthread_join(t, NULL);
  }
  return NULL;
}

static void* blocked_pool(void* arg) {
  (void)arg;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (unsigned x = 0; !atomic_load(&stop); x++)
    if (leaf_add(x) != x + 7) atomic_fetch_add(&wrong, 1);
  return NULL;
}

/* The shim's counts file, mapped, and the table indices of the two leaves. */
static volatile uint64_t* counts;  /* the file's counters are 64-bit everywhere (32-bit ARM too) */
static long index_add = -1, index_mul = -1;

static int find_sites(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size, (void)data;
  if (info->dlpi_name && info->dlpi_name[0]) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)* p = &info->dlpi_phdr[i];
    const unsigned char* t = (const unsigned char*)(info->dlpi_addr + p->p_vaddr);
    if (p->p_type != PT_LOAD || p->p_filesz < 64 || memcmp(t, "PREPATCH", 8) != 0) continue;
    unsigned count, strings;
    memcpy(&count, t + 16, 4);
    memcpy(&strings, t + 24, 4);
    for (unsigned e = 0; e < count; e++) {  /* by name: a -pg site may lie anywhere in the prologue */
      unsigned name;
      memcpy(&name, t + 64 + 16 * e + 8, 4);
      if (strcmp((const char*)t + strings + name, "leaf_add") == 0) index_add = e;
      if (strcmp((const char*)t + strings + name, "leaf_mul") == 0) index_mul = e;
    }
    return 1;
  }
  return 0;
}

static void map_counts(void) {
  const char* path = getenv("PREPATCH_COUNTS");
  int fd = path ? open(path, O_RDONLY) : -1;
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    fprintf(stderr, "cannot open the counts file (PREPATCH_COUNTS)\n");
    exit(2);
  }
  void* m = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) exit(2);
  /* Version 2: the header's `first` (offset 32) is this program's section, whose 512-byte header the
     counters follow (docs/SHIM.md, "The counts file"). */
  uint64_t first;
  memcpy(&first, (char*)m + 32, 8);
  if (first == 0 || first + 512 > (uint64_t)st.st_size) {
    fprintf(stderr, "the counts file has no section\n");
    exit(2);
  }
  counts = (volatile uint64_t*)((char*)m + first + 512);
  dl_iterate_phdr(find_sites, NULL);
  if (index_add < 0 || index_mul < 0) {
    fprintf(stderr, "the leaves have no sites in the table\n");
    exit(2);
  }
}

static void pause_workers(void) {
  atomic_store(&pause_req, 1);
  while (atomic_load(&paused) != WORKERS) {
  }
}

static void resume_workers(void) { atomic_store(&pause_req, 0); }

static unsigned long leaf_counts(void) { return (unsigned long)(counts[index_add] + counts[index_mul]); }

static unsigned long worker_total(void) {
  unsigned long s = 0;
  for (int i = 0; i < WORKERS; i++) s += worker_calls[i];
  return s;
}

static int stress(long toggles, long check_every) {
  pthread_t w[WORKERS], sp;
  for (unsigned long i = 0; i < WORKERS; i++) pthread_create(&w[i], NULL, worker, (void*)i);
  pthread_create(&sp, NULL, spawner, NULL);
  unsigned long mismatches = 0, windows = 0, refusals = 0;
  for (long k = 0; k < toggles; k++) {
    const char* r = control("enable *");
    if (strncmp(r, "ok:", 3) != 0) refusals++, fprintf(stderr, "enable: %s", r);
    if (k == 0 && check_every > 0) map_counts();
    if (check_every > 0 && k % check_every == 0) {
      pause_workers();
      unsigned long c0 = leaf_counts(), w0 = worker_total();
      resume_workers();
      struct timespec ms = {0, 1000000};
      nanosleep(&ms, NULL);
      pause_workers();
      unsigned long c1 = leaf_counts(), w1 = worker_total();
      resume_workers();
      windows++;
      if (c1 - c0 != w1 - w0) {
        mismatches++;
        fprintf(stderr, "window %lu: counters grew by %lu, the workers made %lu calls\n", windows, c1 - c0, w1 - w0);
      }
    }
    r = control("disable *");
    if (strncmp(r, "ok:", 3) != 0) refusals++, fprintf(stderr, "disable: %s", r);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
  pthread_join(sp, NULL);
  printf("%s", control("status"));
  printf("toggles %ld, windows %lu, mismatches %lu, refusals %lu, wrong results %lu\n", toggles, windows, mismatches, refusals,
         (unsigned long)atomic_load(&wrong));
  return mismatches || refusals || atomic_load(&wrong) ? 1 : 0;
}

static int wait_for_stdin(int block) {
  pthread_t w[WORKERS], b;
  for (unsigned long i = 0; i < WORKERS; i++) pthread_create(&w[i], NULL, worker, (void*)i);
  if (block) pthread_create(&b, NULL, blocked_pool, NULL);
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
  if (block) pthread_join(b, NULL);
  printf("wrong results %lu\n", (unsigned long)atomic_load(&wrong));
  return atomic_load(&wrong) ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc >= 4 && strcmp(argv[1], "stress") == 0) return stress(atol(argv[2]), atol(argv[3]));
  if (argc >= 2 && strcmp(argv[1], "wait") == 0) return wait_for_stdin(argc > 2 && strcmp(argv[2], "block") == 0);
  if (argc >= 2 && strcmp(argv[1], "fork") == 0) {
    pid_t c = fork();
    if (c == 0) return wait_for_stdin(0);
    int status;
    waitpid(c, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  }
  fprintf(stderr, "usage: live stress TOGGLES CHECK_EVERY | live wait [block] | live fork\n");
  return 2;
}
