/* The shim's control channel, as docs/SHIM.md describes it, spoken from inside a prepared program
   (testdata/live.c, bench/toggle_bench.py's program): control("enable *") returns the shim's reply.
   The request goes to the calling thread, so the reply is there when the signal call returns.
   One thread at a time: the request number and the reply buffer are shared (two threads asking at
   once could take the same number, and one would remove the other's reply). */
#ifndef PREPATCH_CTL_CHANNEL_H
#define PREPATCH_CTL_CHANNEL_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char reply[1 << 16];

static const char* control(const char* command) {
  static unsigned id;
  char dir[64], req[128], tmp[160], rep[160];
  snprintf(dir, sizeof dir, "/tmp/prepatch-%u", (unsigned)geteuid());
  mkdir(dir, 0700);
  id++;
  snprintf(req, sizeof req, "%s/%d.%u.req", dir, (int)getpid(), id);
  snprintf(tmp, sizeof tmp, "%s.tmp", req);
  snprintf(rep, sizeof rep, "%s/%d.%u.reply", dir, (int)getpid(), id);
  FILE* f = fopen(tmp, "w");
  if (!f || fprintf(f, "%s\n", command) < 0 || fclose(f) != 0 || rename(tmp, req) != 0) {
    perror(tmp);
    exit(2);
  }
  siginfo_t si;
  memset(&si, 0, sizeof si);
  si.si_signo = 62;
  si.si_code = SI_QUEUE;
  si.si_pid = getpid();
  si.si_uid = getuid();
  /* shim/abi.h message_value(ctl_magic, ctl_tag, id); a 32-bit process keeps the low 32 bits */
  si.si_value.sival_ptr = (void*)(uintptr_t)(0x50524550ull << 32 | 0xc7ull << 24 | (id & 0xffffff));
  /* To this thread: the handler has answered when the call returns. */
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), 62, &si) != 0) {
    perror("rt_tgsigqueueinfo");
    exit(2);
  }
  int fd = open(rep, O_RDONLY);
  ssize_t n = fd < 0 ? -1 : read(fd, reply, sizeof reply - 1);
  if (fd >= 0) close(fd);
  unlink(req);
  unlink(rep);
  if (n < 0) {
    fprintf(stderr, "no reply to \"%s\"\n", command);
    exit(2);
  }
  reply[n] = 0;
  return reply;
}

/* "enable *" (on) or "disable *": how many sites the shim says it switched; exits on any other answer. */
__attribute__((unused)) static unsigned long control_all(int on) {
  const char* r = control(on ? "enable *" : "disable *");
  if (strncmp(r, "ok: ", 4) != 0) {
    fprintf(stderr, "%s", r);
    exit(1);
  }
  return strtoul(r + strlen(on ? "ok: enabled " : "ok: disabled "), NULL, 10);
}

#endif
