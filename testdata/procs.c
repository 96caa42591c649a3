/* Processes and limits under live toggling, for tests/shim_test.cc. Each mode toggles every site from
   a thread of its own through the shim's control channel (ctl_channel.h) while the program works:
     procs threads N CALLS [still]  N threads (64 KiB stacks), all alive at once, each call leaf()
                                    CALLS times and check every result; with `still`, nothing is
                                    toggled (for exact counts)
     procs vfork N                  N times: vfork; the child calls a traced function, then execs
                                    /bin/true; the parent checks the child's exit status
     procs exit MS                  4 workers call leaf() until, after MS ms, main calls exit(7) in
                                    the middle of the toggling
   Prints what it checked; exits 0 when every result was right (exit mode: 7). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void* toggler(void* arg) {
  (void)arg;
  for (int on = 1; !atomic_load(&stop); on = !on) {
    const char* r = control(on ? "enable *" : "disable *");
    if (strncmp(r, "ok", 2) == 0) atomic_fetch_add(&toggles, 1);
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

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  pthread_t tog;
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
  } else {
    fprintf(stderr, "usage: procs threads N CALLS [still] | vfork N | exit MS\n");
    return 2;
  }
  atomic_store(&stop, 1);
  if (!still) pthread_join(tog, NULL);
  fprintf(stderr, "toggles %lu refused %lu\n", atomic_load(&toggles), atomic_load(&refused));
  return atomic_load(&wrong) != 0;
}
