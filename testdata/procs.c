/* Processes and limits under live toggling, for tests/shim_test.cc. Each mode toggles every site from
   a thread of its own through the shim's control channel (ctl_channel.h) while the program works:
     procs threads N CALLS [still]  N threads (64 KiB stacks), all alive at once, each call leaf()
                                    CALLS times and check every result; with `still`, nothing is
                                    toggled (for exact counts)
     procs vfork N                  N times: vfork; the child calls a traced function, then execs
                                    /bin/true; the parent checks the child's exit status
     procs exit MS                  4 workers call leaf() until, after MS ms, main calls exit(7) in
                                    the middle of the toggling
     procs wx MS [first]            2 workers call leaf() for MS ms while a thread reads
                                    /proc/self/maps over and over and counts the mappings it saw
                                    both writable and executable (PREPATCH_WX=strict: none); with
                                    `first`, it stops as soon as it has seen one
     procs fork N                   only in_child() is toggled, and 2 workers call leaf(); N times:
                                    fork a child that disables in_child() and enables leaf() for
                                    itself, and checks its in_child() bytes keep still while the
                                    parent's toggles go on; the parent checks its leaf() bytes
                                    meanwhile: neither process's toggles may reach the other's text
     procs deep MS                  a thread uses up its stack but for 512 bytes (no room for a
                                    signal frame) and calls leaf() there for MS ms while every site
                                    is toggled: its traps are handled on the alternate signal stack
     procs churn N                  N threads one after another, ending by return, pthread_exit and
                                    cancellation in turn, each calling leaf(); prints how many
                                    mappings the process had before and after (none may be left)
   Prints what it checked; exits 0 when every result was right (exit mode: 7). */
#define _GNU_SOURCE
#include <pthread.h>
#include <alloca.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl_channel.h"

#ifdef __clang__
#define noipa noinline
#endif

__attribute__((noipa)) unsigned leaf(unsigned x) { return x * 5 + 1; }
__attribute__((noipa)) int in_child(int x) { return x + 1; }

static atomic_int stop;
static atomic_ulong wrong, toggles, refused;
static const char* toggled = "*";  /* the functions the toggler switches */

static void* toggler(void* arg) {
  (void)arg;
  char enable[64], disable[64];
  snprintf(enable, sizeof enable, "enable %s", toggled);
  snprintf(disable, sizeof disable, "disable %s", toggled);
  for (int on = 1; !atomic_load(&stop); on = !on) {
    const char* r = control(on ? enable : disable);
    if (strncmp(r, "busy", 4) == 0) on = !on; /* a fork holds the batch lock for a moment: again */
    else if (strncmp(r, "ok", 2) == 0) atomic_fetch_add(&toggles, 1);
    else if (atomic_fetch_add(&refused, 1) == 0) fprintf(stderr, "refused: %s", r);
  }
  return NULL;
}

static unsigned long calls_each;
static atomic_int ready, go;

static void* caller(void* arg) {
  unsigned base = (unsigned)(unsigned long)arg;
  atomic_fetch_add(&ready, 1);  /* all of them alive at once before any calls */
  while (!atomic_load(&go)) usleep(1000);
  for (unsigned long i = 0; i < calls_each; i++)
    if (leaf(base + (unsigned)i) != (base + (unsigned)i) * 5 + 1) atomic_fetch_add(&wrong, 1);
  return NULL;
}

static void* forever(void* arg) {
  for (unsigned x = (unsigned)(unsigned long)arg;; x++)
    if (leaf(x) != x * 5 + 1) atomic_fetch_add(&wrong, 1);
  return NULL;
}

__attribute__((noipa)) int spawn_true(int i) {
  pid_t pid = vfork();
  if (pid == 0) {
    if (in_child(i) != i + 1) _exit(3);
    execl("/bin/true", "true", (char*)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static atomic_ulong wx_seen;

static void* watch_maps(void* arg) {
  (void)arg;
  char line[512], perms[8];
  while (!atomic_load(&stop)) {
    FILE* f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f))
      if (sscanf(line, "%*s %7s", perms) == 1 && perms[1] == 'w' && perms[2] == 'x') atomic_fetch_add(&wx_seen, 1);
    if (f) fclose(f);
  }
  return NULL;
}

/* The first bytes of leaf() and in_child(), both sites off, before anything was toggled. */
static unsigned char leaf_off[16], in_child_off[16];

static int fork_child(void) {
  if (strncmp(control("disable in_child"), "ok", 2) || strncmp(control("enable leaf"), "ok", 2)) return 10;
  if (!memcmp((void*)leaf, leaf_off, 16)) return 11; /* its own enable did not land */
  for (int k = 0; k < 20; k++) {
    if (memcmp((void*)in_child, in_child_off, 16)) return 12; /* the parent's toggles reached it */
    if (leaf(k) != (unsigned)k * 5 + 1 || in_child(k) != k + 1) return 13;
    usleep(1000);
  }
  return 0;
}

static int fork_one(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(fork_child());
  int st = 0, seen = 0;
  while (pid > 0 && waitpid(pid, &st, WNOHANG) == 0)
    if (memcmp((void*)leaf, leaf_off, 16)) seen++; /* the child's enable reached the parent */
  if (pid < 0 || seen) return fprintf(stderr, "fork: %s\n", pid < 0 ? "failed" : "the child's toggle reached the parent"), 1;
  if (!WIFEXITED(st) || WEXITSTATUS(st)) return fprintf(stderr, "fork: child status %d\n", st), 1;
  return 0;
}

__attribute__((noipa)) static unsigned long spin_leaf(void) {
  unsigned long calls = 0;
  for (unsigned x = 0; !atomic_load(&stop); x++, calls++)
    if (leaf(x) != x * 5 + 1) atomic_fetch_add(&wrong, 1);
  return calls;
}

static void* deep(void* arg) {
  pthread_attr_t a;
  void* lo;
  size_t size;
  if (pthread_getattr_np(pthread_self(), &a) || pthread_attr_getstack(&a, &lo, &size)) return NULL;
  char here;
  volatile char* pad = alloca((size_t)(&here - (char*)lo) - 512);
  pad[0] = 0;
  *(unsigned long*)arg = spin_leaf();
  return NULL;
}

static int count_maps(void) {
  FILE* f = fopen("/proc/self/maps", "r");
  int n = 0;
  for (int c; f && (c = getc(f)) != EOF;) n += c == '\n';
  if (f) fclose(f);
  return n;
}

static void* ending(void* arg) {
  const unsigned long how = (unsigned long)arg;
  if (leaf((unsigned)how) != (unsigned)how * 5 + 1) atomic_fetch_add(&wrong, 1);
  if (how % 3 == 1) pthread_exit(NULL);
  if (how % 3 == 2)
    for (;;) pthread_testcancel(), usleep(100);
  return NULL;
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  pthread_t tog;
  memcpy(leaf_off, (void*)leaf, 16);
  memcpy(in_child_off, (void*)in_child, 16);
  if (!strcmp(mode, "fork")) toggled = "in_child";
  const int still = argc > 4 && !strcmp(argv[4], "still");
  if (!still) pthread_create(&tog, NULL, toggler, NULL);
  if (!strcmp(mode, "threads") && argc > 3) {
    int n = atoi(argv[2]);
    calls_each = strtoul(argv[3], NULL, 10);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    pthread_t* t = calloc(n, sizeof *t);
    int made = 0;
    for (int i = 0; i < n; i++) made += pthread_create(&t[i], &attr, caller, (void*)(unsigned long)(i * 7919)) == 0;
    while (atomic_load(&ready) != made) usleep(1000);
    atomic_store(&go, 1);
    for (int i = 0; i < made; i++) pthread_join(t[i], NULL);
    printf("threads %d calls %lu wrong %lu\n", made, made * calls_each, atomic_load(&wrong));
  } else if (!strcmp(mode, "vfork") && argc > 2) {
    int n = atoi(argv[2]), bad = 0;
    for (int i = 0; i < n; i++) bad += spawn_true(i) != 0;
    printf("vforks %d failed %d\n", n, bad);
    atomic_store(&wrong, bad);
  } else if (!strcmp(mode, "exit") && argc > 2) {
    for (unsigned long i = 0; i < 4; i++) {
      pthread_t w;
      pthread_create(&w, NULL, forever, (void*)(i << 20));
    }
    struct timespec ts = {0, atol(argv[2]) * 1000000L};
    nanosleep(&ts, NULL);
    printf("exiting, wrong %lu\n", atomic_load(&wrong));
    fflush(stdout);
    exit(7);
  } else if (!strcmp(mode, "wx") && argc > 2) {
    pthread_t w;
    for (unsigned long i = 0; i < 2; i++) pthread_create(&w, NULL, forever, (void*)(i << 20));
    pthread_create(&w, NULL, watch_maps, NULL);
    const int first = argc > 3 && !strcmp(argv[3], "first");
    for (long ms = atol(argv[2]); ms > 0 && !(first && atomic_load(&wx_seen)); ms -= 10) {
      struct timespec ts = {0, (ms < 10 ? ms : 10) * 1000000L};
      nanosleep(&ts, NULL);
    }
    atomic_store(&stop, 1);
    pthread_join(w, NULL);
    printf("writable and executable mappings seen %lu, wrong %lu\n", atomic_load(&wx_seen), atomic_load(&wrong));
  } else if (!strcmp(mode, "deep") && argc > 2) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    unsigned long calls = 0;
    pthread_create(&t, &attr, deep, &calls);
    struct timespec ts = {atol(argv[2]) / 1000, atol(argv[2]) % 1000 * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    pthread_join(tog, NULL); /* control() serves one thread at a time: the toggler's requests end first */
    const char* status = control("status");
    const char* traps = strstr(status, "traps resolved ");
    printf("deep calls %s, wrong %lu, %.*s\n", calls ? "made" : "none", atomic_load(&wrong), traps ? (int)strcspn(traps, ",") : 0, traps);
  } else if (!strcmp(mode, "churn") && argc > 2) {
    int n = atoi(argv[2]), before = count_maps();
    for (unsigned long i = 0; i < (unsigned long)n; i++) {
      pthread_t t;
      if (pthread_create(&t, NULL, ending, (void*)i) != 0) atomic_fetch_add(&wrong, 1);
      if (i % 3 == 2) pthread_cancel(t);
      pthread_join(t, NULL);
    }
    printf("threads %d, maps before %d after %d, wrong %lu\n", n, before, count_maps(), atomic_load(&wrong));
  } else if (!strcmp(mode, "fork") && argc > 2) {
    for (unsigned long i = 0; i < 2; i++) {
      pthread_t w;
      pthread_create(&w, NULL, forever, (void*)(i << 20));
    }
    int n = atoi(argv[2]), bad = 0;
    for (int i = 0; i < n; i++) bad += fork_one();
    printf("forks %d failed %d\n", n, bad);
    atomic_fetch_add(&wrong, bad);
  } else {
    fprintf(stderr, "usage: procs threads N CALLS [still] | vfork N | exit MS | wx MS [first] | fork N | deep MS | churn N\n");
    return 2;
  }
  atomic_store(&stop, 1);
  if (!still && strcmp(mode, "deep")) pthread_join(tog, NULL);
  fprintf(stderr, "toggles %lu refused %lu\n", atomic_load(&toggles), atomic_load(&refused));
  return atomic_load(&wrong) != 0;
}
