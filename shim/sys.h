// Raw Linux x86-64 system calls and the kernel's structures the shim uses: no libc. The shim runs
// before libc is initialized (it is the program's entry point) and inside signal handlers.
#pragma once
#include "elf/ints.h"

namespace prepatch::shim::sys {

inline long call(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  long ret;
  register long r10 asm("r10") = d;
  register long r8 asm("r8") = e;
  register long r9 asm("r9") = f;
  asm volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
  return ret;
}

// System call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
enum : long {
  nr_read = 0, nr_write = 1, nr_close = 3, nr_fstat = 5, nr_mmap = 9, nr_mprotect = 10, nr_munmap = 11, nr_madvise = 28,
  nr_rt_sigaction = 13, nr_rt_sigprocmask = 14, nr_nanosleep = 35, nr_getpid = 39,
  nr_ftruncate = 77, nr_rename = 82, nr_unlink = 87, nr_geteuid = 107, nr_gettid = 186, nr_getdents64 = 217,
  nr_futex = 202, nr_clock_gettime = 228, nr_tgkill = 234, nr_openat = 257, nr_rt_tgsigqueueinfo = 297, nr_membarrier = 324,
  nr_arch_prctl = 158, nr_fallocate = 285, nr_pwrite64 = 18, nr_memfd_create = 319, nr_sigaltstack = 131,
};

inline constexpr int at_fdcwd = -100;
inline constexpr int futex_wait_private = 128, futex_wake_private = 129;  // FUTEX_WAIT/WAKE | FUTEX_PRIVATE_FLAG
inline constexpr int o_rdonly = 0, o_wronly = 1, o_rdwr = 2, o_creat = 0100, o_trunc = 01000, o_directory = 0200000,
                     o_nofollow = 0400000, o_cloexec = 02000000;
inline constexpr int prot_read = 1, prot_write = 2, prot_exec = 4;
inline constexpr int map_shared = 1, map_private = 2, map_fixed = 0x10, map_anonymous = 0x20;
inline constexpr int mfd_cloexec = 1, mfd_exec = 0x10;  // memfd_create flags (MFD_EXEC: Linux 6.3)
inline constexpr int sigtrap = 5;
inline constexpr int si_kernel = 0x80, si_queue = -1;
inline constexpr int enosys = 38, esrch = 3, eintr = 4, einval = 22;

// membarrier(2) commands.
inline constexpr int membarrier_query = 0, membarrier_private_expedited_sync_core = 32,
                     membarrier_register_private_expedited_sync_core = 64;

// sigaction flags.
inline constexpr u64 sa_siginfo = 4, sa_restorer = 0x04000000, sa_onstack = 0x08000000, sa_restart = 0x10000000,
                     sa_nodefer = 0x40000000, sa_resethand = 0x80000000;

// The kernel's struct sigaction on x86-64 (not glibc's): sa_restorer is required.
struct KernelSigaction {
  void* handler;  // 0 = SIG_DFL, 1 = SIG_IGN
  u64 flags;
  void (*restorer)();
  u64 mask;
};

struct SigInfo {
  int signo, errno_, code, pad;
  int pid;  // SI_USER, SI_QUEUE: the sender
  unsigned uid;
  u64 value;  // SI_QUEUE: si_value
  u8 rest[128 - 32];
};
static_assert(sizeof(SigInfo) == 128);

// The parts of ucontext_t the handler reads and writes: uc_mcontext's general registers.
struct UContext {
  u64 flags;
  void* link;
  u8 stack[24];      // stack_t
  u64 gregs[23];     // struct sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, ...
};
inline constexpr int reg_rsp = 15, reg_rip = 16;

struct Stat {
  u64 dev, ino, nlink;
  u32 mode, uid, gid, pad0;
  u64 rdev;
  i64 size, blksize, blocks;
  u64 times[6];
  i64 unused[3];
};
static_assert(sizeof(Stat) == 144);

// stack_t, for sigaltstack(2).
struct StackT {
  void* sp;
  int flags;  // ss_onstack, ss_disable
  u64 size;
};
inline constexpr int ss_onstack = 1, ss_disable = 2;

struct Timespec {
  i64 sec, nsec;
};

inline long write_all(int fd, const char* p, u64 n) {
  while (n > 0) {
    long w = call(nr_write, fd, reinterpret_cast<long>(p), static_cast<long>(n));
    if (w == -eintr) continue;
    if (w <= 0) return w;
    p += w, n -= static_cast<u64>(w);
  }
  return 0;
}

}  // namespace prepatch::shim::sys
