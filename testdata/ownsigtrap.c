/* A program that uses SIGTRAP itself: its handler must still get its own traps (an int3 of its own and
   a raise(SIGTRAP)) when the shim's handler sits in front of it. `ownsigtrap wait` installs its
   handler, prints "ready PID" and traps only after a line on stdin (time for a batch to put the
   shim's handler back in front). `ownsigtrap crash` installs no handler and executes an int3: it must
   die of SIGTRAP, prepared or not. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t traps, raised;

static void on_trap(int sig, siginfo_t* si, void* uc) {
  (void)sig, (void)uc;
  if (si->si_code == SI_KERNEL) traps++;
  else raised++;
}

__attribute__((noinline)) int work(int x) { return x * 2 + 1; }

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "crash") == 0) {
    printf("int3 without a handler\n");
    fflush(stdout);
    __asm__ volatile("int3");
    printf("survived\n");
    return 0;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_trap;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGTRAP, &sa, NULL);
  if (argc > 1 && strcmp(argv[1], "wait") == 0) {
    char line[16];
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 2;
  }
  int acc = 0;
  for (int i = 0; i < 3; i++) {
    acc += work(i);
    __asm__ volatile("int3");
    raise(SIGTRAP);
  }
  printf("acc %d, own int3 traps %d, raised %d\n", acc, (int)traps, (int)raised);
  return 0;
}
