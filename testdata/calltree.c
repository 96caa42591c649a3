/* A program with a known call tree, for the tracers (tests/trace_test.cc). Every worker calls
   top() ROUNDS times; top -> mid -> leaf, leaf. Modes (argv[1]):
     threads   3 workers at once, then 2 more one after the other (glibc reuses a thread block)
     longjmp   catcher -> deep -> jumper, which longjmps back into catcher, which then calls leaf
     wait      one worker on the main thread, then "ready PID" and a wait for stdin to close (or kill -9)
     fork      top, then fork inside spawn(); the child returns from spawn and calls top; the parent waits
               and calls top again
     forkfds   as fork, and the child then prints `fd N LINK` for each of its descriptors from 3 on
     exec      top, then exec itself in mode `after`, which calls top once more (the same process)
     tailcall  chain -> relay -> leaf, each arrow a tail call (a jump through a pointer), 3 times */
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 1000

__attribute__((noinline)) int leaf(int x) {
  __asm__ volatile("");
  return x * 3 + 1;
}
__attribute__((noinline)) int mid(int x) { return leaf(x) + leaf(x + 1); }
__attribute__((noinline)) int top(int x) { return mid(x) - x; }
__attribute__((noinline)) void* worker(void* arg) {
  long id = (long)arg, sum = 0;
  for (int i = 0; i < ROUNDS; i++) sum += top(i + (int)id);
  return (void*)sum;
}

static jmp_buf env;
__attribute__((noinline)) void jumper(int x) {
  if (x >= 0) longjmp(env, 1);
}
__attribute__((noinline)) void deep(int x) {
  jumper(x);
  leaf(x); /* never reached */
}
__attribute__((noinline)) int catcher(int x) {
  if (setjmp(env)) return leaf(x);
  deep(x);
  return -1;
}

/* Tail calls: the callee returns straight to the caller's caller, through the return address the
   caller was entered with (under graph, the exit trampoline). */
__attribute__((noinline)) int relay(int x);
static int (*volatile leaf_call)(int) = leaf;
static int (*volatile relay_call)(int) = relay;
__attribute__((noinline)) int relay(int x) { return leaf_call(x + 1); }
__attribute__((noinline)) int chain(int x) { return relay_call(x * 2); }

__attribute__((noinline)) int spawn(void) { return fork(); }

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "threads";
  if (!strcmp(mode, "threads")) {
    long total = 0;
    pthread_t t[3];
    for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, worker, (void*)i);
    for (int i = 0; i < 3; i++) {
      void* r;
      pthread_join(t[i], &r);
      total += (long)r;
    }
    for (long i = 3; i < 5; i++) {
      void* r;
      pthread_create(&t[0], NULL, worker, (void*)i);
      pthread_join(t[0], &r);
      total += (long)r;
    }
    printf("sum %ld\n", total);
  } else if (!strcmp(mode, "longjmp")) {
    int sum = 0;
    for (int i = 0; i < 3; i++) sum += catcher(i);
    printf("sum %d\n", sum);
  } else if (!strcmp(mode, "wait")) {
    printf("sum %ld\n", (long)worker(0));
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
  } else if (!strcmp(mode, "fork") || !strcmp(mode, "forkfds")) {
    int a = top(1);
    fflush(stdout);
    int pid = spawn();
    if (pid == 0) {
      printf("child %d\n", top(2) + a);
      DIR* fds = mode[4] ? opendir("/proc/self/fd") : NULL;
      for (struct dirent* e; fds && (e = readdir(fds));) {
        static char link[4096];  // (not on main's stack: RISC-V's -pg graph follows only small frames' prologues)
        ssize_t n;
        if (atoi(e->d_name) >= 3 && atoi(e->d_name) != dirfd(fds) && (n = readlinkat(dirfd(fds), e->d_name, link, sizeof link)) > 0)
          printf("fd %s %.*s\n", e->d_name, (int)n, link);
      }
      if (fds) closedir(fds);
      fflush(stdout);
      _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    printf("parent %d child exit %d\n", top(3) + a, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  } else if (!strcmp(mode, "exec")) {
    printf("before %d\n", top(1));
    fflush(stdout);
    execl("/proc/self/exe", argv[0], "after", (char*)NULL);
    return 1;
  } else if (!strcmp(mode, "tailcall")) {
    int sum = 0;
    for (int i = 0; i < 3; i++) sum += chain(i);
    printf("sum %d\n", sum);
  } else if (!strcmp(mode, "after")) {
    printf("after %d\n", top(2));
  }
  return 0;
}
