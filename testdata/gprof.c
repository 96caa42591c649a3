/* gprof's run-time effects, as a program sees them (tests/shim_test.cc, ShimStart.GprofNeverRuns): a
   -pg link brings glibc's profiler, started before main (a SIGPROF interval timer and its handler) and
   written out at exit (gmon.out). Prints whether the profiling timer runs and who handles SIGPROF, and
   how often a CPU-bound second of poll()s was cut short by a signal (EINTR), then exits 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static atomic_int stop;

__attribute__((noinline)) static unsigned spin(unsigned x) { return x * 2654435761u + 1; }

static void* burn(void* arg) {
  sigset_t prof;  /* SIGPROF goes to a thread that does not block it: the one waiting in poll() */
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  pthread_sigmask(SIG_BLOCK, &prof, NULL);
  volatile unsigned x = (unsigned)(unsigned long)arg;
  while (!atomic_load(&stop)) x = spin(x);
  return NULL;
}

int main(void) {
  struct itimerval t;
  getitimer(ITIMER_PROF, &t);
  struct sigaction sa;
  sigaction(SIGPROF, NULL, &sa);
  printf("profiling timer %s, SIGPROF %s\n", t.it_interval.tv_sec || t.it_interval.tv_usec ? "on" : "off",
         sa.sa_handler == SIG_DFL ? "default" : "handled");
  /* A thread burns CPU time, which ITIMER_PROF counts, while this one waits in poll() (never restarted
     after a handler, SA_RESTART or not): with the profiler on, SIGPROF cuts some of them short. */
  pthread_t b;
  pthread_create(&b, NULL, burn, NULL);
  int interrupted = 0;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  do {
    if (poll(NULL, 0, 5) < 0 && errno == EINTR) interrupted++;
    clock_gettime(CLOCK_MONOTONIC, &now);
  } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < 1000);
  atomic_store(&stop, 1);
  pthread_join(b, NULL);
  printf("poll interrupted %s\n", interrupted ? "sometimes" : "never");
  return 0;
}
