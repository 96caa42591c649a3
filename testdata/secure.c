/* A small program for the secure-execution and shared-directory tests (tests/security_test.cc): run
   setuid, setgid or with a file capability, it must behave exactly like its unprepared build. It
   prints its user ids and the signals it catches (a shim that installed its handlers would show), does
   some traced work and exits 7. With "wait": prints "ready PID" first and waits for its input to end. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(int argc, char** argv) {
  if (argc > 1 && !strcmp(argv[1], "wait")) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (fgets(buf, sizeof buf, stdin)) {
    }
  }
  FILE* f = fopen("/proc/self/status", "r");
  char line[256];
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "SigCgt:", 7) || !strncmp(line, "SigBlk:", 7)) fputs(line, stdout);
  if (f) fclose(f);
  printf("ruid %d euid %d rgid %d egid %d fib %d\n", (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid(), fib(20));
  return 7;
}
