// Raw Linux system calls and the kernel's structures the shim uses, for each ISA it is built for
// (x86-64, AArch64, PPC64le, RISC-V64, ARM32 Thumb-2): no libc. The shim runs before libc is initialized (it is the program's
// entry point) and inside signal handlers.
#pragma once
#include "arch/plan.h"
#include "elf/ints.h"

namespace prepatch::shim::sys {

// The ISA this copy of the shim is built for, as the site table names it (its ELF e_machine).
#if defined(__x86_64__)
inline constexpr arch::Isa isa = arch::Isa::x86_64;
inline constexpr u16 machine = 62;  // EM_X86_64
#elif defined(__aarch64__)
inline constexpr arch::Isa isa = arch::Isa::aarch64;
inline constexpr u16 machine = 183;  // EM_AARCH64
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
inline constexpr arch::Isa isa = arch::Isa::ppc64le;
inline constexpr u16 machine = 21;  // EM_PPC64
#elif defined(__riscv) && __riscv_xlen == 64
inline constexpr arch::Isa isa = arch::Isa::riscv64;
inline constexpr u16 machine = 243;  // EM_RISCV
#elif defined(__arm__) && defined(__thumb2__) && !defined(__ARMEB__)
inline constexpr arch::Isa isa = arch::Isa::thumb2;
inline constexpr u16 machine = 40;  // EM_ARM
#else
#error "the shim exists for x86-64, AArch64, PPC64le, RISC-V64 and ARM32 Thumb-2 (little-endian)"
#endif

#if defined(__x86_64__)
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
  nr_process_vm_readv = 310,
  nr_read = 0, nr_write = 1, nr_close = 3, nr_fstat = 5, nr_mmap = 9, nr_mprotect = 10, nr_munmap = 11, nr_madvise = 28,
  nr_rt_sigaction = 13, nr_rt_sigprocmask = 14, nr_nanosleep = 35, nr_getpid = 39,
  nr_ftruncate = 77, nr_renameat2 = 316, nr_unlinkat = 263, nr_geteuid = 107, nr_gettid = 186, nr_getdents64 = 217,
  nr_futex = 202, nr_clock_gettime = 228, nr_tgkill = 234, nr_openat = 257, nr_rt_tgsigqueueinfo = 297, nr_membarrier = 324,
  nr_arch_prctl = 158, nr_fallocate = 285, nr_pwrite64 = 18, nr_pwritev = 296, nr_memfd_create = 319, nr_sigaltstack = 131, nr_readlinkat = 267,
  nr_getrandom = 318, nr_prctl = 157, nr_getresuid = 118, nr_capget = 125, nr_getresgid = 120, nr_rt_sigpending = 127, nr_fcntl = 72, nr_pipe2 = 293,
};
inline constexpr int o_directory = 0200000, o_nofollow = 0400000;
#elif defined(__aarch64__) || defined(__riscv)
inline long call(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
#if defined(__aarch64__)
  register long x8 asm("x8") = n;
  register long x0 asm("x0") = a;
  register long x1 asm("x1") = b;
  register long x2 asm("x2") = c;
  register long x3 asm("x3") = d;
  register long x4 asm("x4") = e;
  register long x5 asm("x5") = f;
  asm volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
#else
  register long a7 asm("a7") = n;
  register long a0 asm("a0") = a;
  register long a1 asm("a1") = b;
  register long a2 asm("a2") = c;
  register long a3 asm("a3") = d;
  register long a4 asm("a4") = e;
  register long a5 asm("a5") = f;
  asm volatile("ecall" : "+r"(a0) : "r"(a7), "r"(a1), "r"(a2), "r"(a3), "r"(a4), "r"(a5) : "memory");
  return a0;
#endif
}

// System call numbers (include/uapi/asm-generic/unistd.h; riscv_flush_icache: arch/riscv's own).
enum : long {
  nr_riscv_flush_icache = 259,
  nr_process_vm_readv = 270,
  nr_read = 63, nr_write = 64, nr_close = 57, nr_fstat = 80, nr_mmap = 222, nr_mprotect = 226, nr_munmap = 215, nr_madvise = 233,
  nr_rt_sigaction = 134, nr_rt_sigprocmask = 135, nr_nanosleep = 101, nr_getpid = 172,
  nr_ftruncate = 46, nr_renameat2 = 276, nr_unlinkat = 35, nr_geteuid = 175, nr_gettid = 178, nr_getdents64 = 61,
  nr_futex = 98, nr_clock_gettime = 113, nr_tgkill = 131, nr_openat = 56, nr_rt_tgsigqueueinfo = 240, nr_membarrier = 283,
  nr_fallocate = 47, nr_pwrite64 = 68, nr_pwritev = 70, nr_memfd_create = 279, nr_sigaltstack = 132, nr_readlinkat = 78,
  nr_getrandom = 278, nr_prctl = 167, nr_getresuid = 148, nr_capget = 90, nr_getresgid = 150, nr_rt_sigpending = 136, nr_fcntl = 25, nr_pipe2 = 59,
};
#if defined(__aarch64__)
inline constexpr int o_directory = 040000, o_nofollow = 0100000;  // arch/arm64's own values
#else
inline constexpr int o_directory = 0200000, o_nofollow = 0400000;  // asm-generic's, as on x86-64
#endif
#elif defined(__arm__)
// ARM EABI: `svc #0` with the number in r7 (the shim is built without a frame pointer, which Thumb
// code would keep in r7) and arguments in r0..r5.
inline long call(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  register long r7 asm("r7") = n;
  register long r0 asm("r0") = a;
  register long r1 asm("r1") = b;
  register long r2 asm("r2") = c;
  register long r3 asm("r3") = d;
  register long r4 asm("r4") = e;
  register long r5 asm("r5") = f;
  asm volatile("svc #0" : "+r"(r0) : "r"(r7), "r"(r1), "r"(r2), "r"(r3), "r"(r4), "r"(r5) : "memory");
  return r0;
}

// System call numbers (arch/arm/tools/syscall.tbl, EABI). The 32-bit forms take `long` arguments:
// mmap2 (its offset counts pages, and the shim maps from offset 0), ftruncate (a counts file under
// 2 GiB), fstat's struct stat, clock_gettime's and futex's 32-bit timespec, geteuid32. fallocate and
// pwrite64 split their 64-bit offsets over register pairs: they go through allocate_at and write_at
// (shim/runtime/os.inc), which do so. cacheflush is ARM's
// private call: cleans the data cache and invalidates the instruction cache over a range, on every core.
enum : long {
  nr_cacheflush = 0x0f0002,
  nr_process_vm_readv = 376,
  nr_read = 3, nr_write = 4, nr_close = 6, nr_fstat = 108, nr_mmap = 192, nr_mprotect = 125, nr_munmap = 91, nr_madvise = 220,
  nr_rt_sigaction = 174, nr_rt_sigprocmask = 175, nr_nanosleep = 162, nr_getpid = 20,
  nr_ftruncate = 93, nr_renameat2 = 382, nr_unlinkat = 328, nr_geteuid = 201, nr_gettid = 224, nr_getdents64 = 217,
  nr_futex = 240, nr_clock_gettime = 263, nr_tgkill = 268, nr_openat = 322, nr_rt_tgsigqueueinfo = 363, nr_membarrier = 389,
  nr_fallocate = 352, nr_pwrite64 = 181, nr_pwritev = 362, nr_memfd_create = 385, nr_sigaltstack = 186, nr_readlinkat = 332,
  nr_getrandom = 384, nr_prctl = 172, nr_getresuid = 209 /* getresuid32 */, nr_capget = 184, nr_getresgid = 211 /* getresgid32 */, nr_rt_sigpending = 176, nr_fcntl = 55, nr_pipe2 = 359,
};
inline constexpr int o_directory = 040000, o_nofollow = 0100000;  // arch/arm's own values
#else
// PPC64: `sc` with the number in r0 and arguments in r3..r8; the kernel flags an error in CR0.SO and
// returns the positive errno in r3, made negative here as on the other ISAs.
inline long call(long n, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  register long r0 asm("r0") = n;
  register long r3 asm("r3") = a;
  register long r4 asm("r4") = b;
  register long r5 asm("r5") = c;
  register long r6 asm("r6") = d;
  register long r7 asm("r7") = e;
  register long r8 asm("r8") = f;
  asm volatile("sc\n\tbns+ 1f\n\tneg %1, %1\n1:"
               : "+r"(r0), "+r"(r3), "+r"(r4), "+r"(r5), "+r"(r6), "+r"(r7), "+r"(r8)
               :
               : "r9", "r10", "r11", "r12", "cr0", "ctr", "xer", "memory");
  return r3;
}

// System call numbers (arch/powerpc/kernel/syscalls/syscall.tbl, 64-bit).
enum : long {
  nr_process_vm_readv = 351,
  nr_read = 3, nr_write = 4, nr_close = 6, nr_fstat = 108, nr_mmap = 90, nr_mprotect = 125, nr_munmap = 91, nr_madvise = 205,
  nr_rt_sigaction = 173, nr_rt_sigprocmask = 174, nr_nanosleep = 162, nr_getpid = 20,
  nr_ftruncate = 93, nr_renameat2 = 357, nr_unlinkat = 292, nr_geteuid = 49, nr_gettid = 207, nr_getdents64 = 202,
  nr_futex = 221, nr_clock_gettime = 246, nr_tgkill = 250, nr_openat = 286, nr_rt_tgsigqueueinfo = 322, nr_membarrier = 365,
  nr_fallocate = 309, nr_pwrite64 = 180, nr_pwritev = 321, nr_memfd_create = 360, nr_sigaltstack = 185, nr_readlinkat = 296,
  nr_getrandom = 359, nr_prctl = 171, nr_getresuid = 165, nr_capget = 183, nr_getresgid = 170, nr_rt_sigpending = 175, nr_fcntl = 55, nr_pipe2 = 317,
};
inline constexpr int o_directory = 040000, o_nofollow = 0100000;
#endif

inline constexpr int at_fdcwd = -100;
inline constexpr int futex_wait_private = 128, futex_wake_private = 129;  // FUTEX_WAIT/WAKE | FUTEX_PRIVATE_FLAG
inline constexpr int o_rdonly = 0, o_wronly = 1, o_rdwr = 2, o_creat = 0100, o_excl = 0200, o_noctty = 0400, o_trunc = 01000,
                     o_nonblock = 04000, o_cloexec = 02000000, o_path = 010000000;  // the same on these ISAs
inline constexpr int prot_read = 1, prot_write = 2, prot_exec = 4;
inline constexpr int sig_setmask = 2;  // rt_sigprocmask's how, the same on these ISAs
inline constexpr int map_shared = 1, map_private = 2, map_fixed = 0x10, map_anonymous = 0x20;
inline constexpr int map_fixed_noreplace = 0x100000;  // (Linux 4.17; the same on every ISA here)
#if defined(__powerpc64__)
inline constexpr int map_noreserve = 0x40;  // arch/powerpc's own value
#else
inline constexpr int map_noreserve = 0x4000;
#endif
inline constexpr int mfd_cloexec = 1, mfd_exec = 0x10;  // memfd_create flags (MFD_EXEC: Linux 6.3)
inline constexpr int sigtrap = 5, sigill = 4, sigabrt = 6, sigbus = 7, sigsegv = 11;
inline constexpr int si_kernel = 0x80, si_queue = -1;
// si_code of the SIGTRAP the ISA's breakpoint raises: x86-64's int3 SI_KERNEL, RISC-V's ebreak,
// Thumb's udf #1 (the kernel's ptrace breakpoint), AArch64's brk and PPC64's trap TRAP_BRKPT.
#if !defined(__x86_64__)
inline constexpr int trap_code = 1;
#else
inline constexpr int trap_code = si_kernel;
#endif
inline constexpr int efault = 14, enosys = 38, esrch = 3, eintr = 4, einval = 22, enoent = 2, eexist = 17, eacces = 13, eperm = 1, eloop = 40,
                     enospc = 28, erofs = 30, enotdir = 20, eisdir = 21, enxio = 6;

// membarrier(2) commands.
inline constexpr int membarrier_query = 0, membarrier_private_expedited_sync_core = 32,
                     membarrier_register_private_expedited_sync_core = 64;

// sigaction flags (the same values on these ISAs).
inline constexpr u64 sa_siginfo = 4, sa_restorer = 0x04000000, sa_onstack = 0x08000000, sa_restart = 0x10000000,
                     sa_nodefer = 0x40000000, sa_resethand = 0x80000000;
// x86-64 requires a restorer (shim/entry_x86_64.S's rt_sigreturn); AArch64, PPC64, RISC-V and ARM
// return through the vDSO's or the kernel's sigreturn page (or qemu-user's) when none is given.
#if defined(__x86_64__)
inline constexpr u64 restorer_flag = sa_restorer;
#else
inline constexpr u64 restorer_flag = 0;
#endif

// The kernel's struct sigaction on these ISAs (not glibc's): its sigset_t is an array of longs, so
// 4-byte aligned on ARM32.
using KernelSigset = u64 __attribute__((aligned(alignof(long))));
struct KernelSigaction {
  void* handler;  // 0 = SIG_DFL, 1 = SIG_IGN
  unsigned long flags;
  void (*restorer)();
  KernelSigset mask;
};
static_assert(sizeof(KernelSigaction) == 3 * sizeof(long) + 8);

// Executes the ISA's instruction-stream serialization on this core: what a sync must make every
// thread run before it executes new code (x86 cpuid, SDM 8.1.3; AArch64 and ARMv7 isb; PPC isync; RISC-V
// fence.i, which also makes this hart's own stores visible to its instruction fetch).
inline void serialize_core() {
#if defined(__x86_64__)
  u32 a = 0, b, c = 0, d;
  asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) : : "memory");
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("isb" : : : "memory");
#elif defined(__riscv)
  asm volatile("fence.i" : : : "memory");
#else
  asm volatile("isync" : : : "memory");
#endif
}

// After a store of code at `at` (through `written`, the same memory, perhaps at another address):
// makes the new instruction visible to instruction fetch on this core and, once every other core has
// serialized, on all of them. x86 keeps instruction fetch coherent itself. AArch64: dc cvau; dsb ish;
// ic ivau; dsb ish; isb (ARM ARM B2.4.4). PPC: dcbst; sync; icbi; sync; isync (Power ISA Book II 1.9).
// RISC-V has no per-line maintenance in user mode: the sync's fence.i on every hart does it. An
// aligned 4-byte word lies in one cache line, so one line is cleaned and invalidated.
inline void sync_icache([[maybe_unused]] const void* written, [[maybe_unused]] const void* at) {
#if defined(__aarch64__)
  asm volatile("dc cvau, %0\n\tdsb ish\n\tic ivau, %1\n\tdsb ish\n\tisb" : : "r"(written), "r"(at) : "memory");
#elif defined(__powerpc64__)
  asm volatile("dcbst 0, %0\n\tsync\n\ticbi 0, %1\n\tsync\n\tisync" : : "r"(written), "r"(at) : "memory");
#endif
}

// After halfword stores of code within [lo, hi), before the sync. ARMv7 has no cache maintenance in
// user mode: the kernel's cacheflush call cleans the data cache and invalidates the instruction cache
// over the range, for every core (the code is written in place: PREPATCH_WX=strict is x86-64's).
// RISC-V's halfword stores need nothing here: the sync's fence.i on every hart does it.
inline void flush_code([[maybe_unused]] u64 lo, [[maybe_unused]] u64 hi) {
#if defined(__arm__)
  call(nr_cacheflush, static_cast<long>(lo), static_cast<long>(hi), 0);
#endif
}

struct Timespec {  // the kernel's timespec: 32-bit on ARM32's clock_gettime, nanosleep and futex
  long sec, nsec;
};

// clock_gettime(clock) in ns: 0 CLOCK_REALTIME, 1 CLOCK_MONOTONIC.
inline i64 clock_ns(int clock) {
  Timespec t{};
  call(nr_clock_gettime, clock, reinterpret_cast<long>(&t));
  return i64{t.sec} * 1000000000 + t.nsec;  // (ARM32: a 32-bit sec, which would overflow alone)
}

#if defined(__arm__)
// ARMv7: set at start where user space cannot read the generic timer's CNTVCT (a core without one,
// such as the Cortex-A9, or a kernel that keeps it from user space, or qemu-arm), which then raises
// SIGILL (shim/runtime/trap.inc, probe_counter).
extern "C" unsigned prepatch_ticks_from_clock;
#endif

// A cycle or time-base counter for trace timestamps (x86 TSC, AArch64 CNTVCT_EL0, PPC time base,
// RISC-V time, ARMv7 CNTVCT, or ARMv7's CLOCK_MONOTONIC where CNTVCT cannot be read).
inline u64 ticks() {
#if defined(__x86_64__)
  u32 lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return u64{hi} << 32 | lo;
#elif defined(__aarch64__)
  u64 v;
  asm volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#elif defined(__riscv)
  u64 v;
  asm volatile("rdtime %0" : "=r"(v));
  return v;
#elif defined(__arm__)
  if (prepatch_ticks_from_clock) return static_cast<u64>(clock_ns(1));  // no generic timer user space may read
  u64 v;
  asm volatile("mrrc p15, 1, %Q0, %R0, c14" : "=r"(v));
  return v;
#else
  u64 v;
  asm volatile("mftb %0" : "=r"(v));
  return v;
#endif
}

// The thread pointer: what tells threads apart (x86 %fs:0, glibc's TCB pointing to itself; AArch64
// TPIDR_EL0; PPC64 r13; RISC-V tp; ARM TPIDRURO).
inline u64 thread_pointer() {
  unsigned long tp;
#if defined(__x86_64__)
  asm("mov %%fs:0, %0" : "=r"(tp));
#elif defined(__aarch64__)
  asm("mrs %0, tpidr_el0" : "=r"(tp));
#elif defined(__riscv)
  asm("mv %0, tp" : "=r"(tp));
#elif defined(__arm__)
  asm("mrc p15, 0, %0, c13, c0, 3" : "=r"(tp));
#else
  asm("mr %0, 13" : "=r"(tp));
#endif
  return tp;
}

// A spin loop's pause.
inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" : : : "memory");
#elif defined(__riscv)
  asm volatile(".4byte 0x0100000f" : : : "memory");  // pause (Zihintpause; a fence hint before it)
#else
  asm volatile("or 27, 27, 27" : : : "memory");  // the "yield" hint
#endif
}

// siginfo_t: its union is pointer-aligned (after 16 bytes on 64-bit ISAs, 12 on ARM32).
struct SigInfo {
  int signo, errno_, code;
  alignas(sizeof(long)) int pid;  // SI_USER, SI_QUEUE: the sender
  unsigned uid;
  unsigned long value;  // SI_QUEUE: si_value
  u8 rest[128 - 16 - 2 * sizeof(long)];
};
static_assert(sizeof(SigInfo) == 128 && __builtin_offsetof(SigInfo, value) == 16 + sizeof(long));

#if defined(__x86_64__)
// The parts of ucontext_t the handler reads and writes: uc_mcontext's general registers.
struct UContext {
  u64 flags;
  void* link;
  u8 stack[24];      // stack_t
  u64 gregs[23];     // struct sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, ...
};
inline constexpr int reg_rsp = 15, reg_rip = 16;
#elif defined(__riscv) || defined(__aarch64__)
// The kernel's riscv and arm64 ucontext: uc_sigmask padded to 128 bytes, then uc_mcontext (16-byte
// aligned). RISC-V's starts with user_regs_struct: pc, then x1..x31 (ra, sp, gp, tp, t0, ...); arm64's
// is struct sigcontext: fault_address, x0..x30, sp, pc, pstate.
struct UContext {
  u64 flags;
  void* link;
  u8 stack[24];      // stack_t
  u8 sigmask[128];   // sigset_t and its padding
  u64 pad;
  u64 gregs[35];
};
static_assert(__builtin_offsetof(UContext, gregs) == 176);
#if defined(__riscv)
inline constexpr int reg_pc = 0;
#else
inline constexpr int reg_x30 = 31, reg_pc = 33;
#endif
#elif defined(__arm__)
// The kernel's ARM ucontext: uc_mcontext is struct sigcontext, trap_no, error_code, oldmask, then
// r0..r10, fp, ip, sp, lr, pc, cpsr.
struct UContext {
  u32 flags;
  void* link;
  u8 stack[12];      // stack_t
  u32 gregs[21];     // struct sigcontext
};
static_assert(__builtin_offsetof(UContext, gregs) == 20);
inline constexpr int reg_r0 = 3, reg_sp = 16, reg_lr = 17, reg_pc = 18;
#elif defined(__powerpc64__)
// The kernel's ppc64 ucontext: uc_sigmask and 15 more sigsets, then uc_mcontext (struct sigcontext):
// _unused[4], signal, _pad0, handler, oldmask, regs, then gp_regs (pt_regs order: r0..r31, nip, msr,
// orig_gpr3, ctr, link, ...).
struct UContext {
  u64 flags;
  void* link;
  u8 stack[24];      // stack_t
  u8 sigmask[128];   // uc_sigmask, __unused[15]
  u8 head[64];       // sigcontext before gp_regs
  u64 gregs[48];     // gp_regs
};
static_assert(__builtin_offsetof(UContext, gregs) == 232);
inline constexpr int reg_nip = 32, reg_link = 36;
#endif

#if defined(__aarch64__)
// `ptr` signed with key A and `modifier` as paciasp signs a return address with the stack pointer
// (-mbranch-protection=pac-ret). PACIA1716 is in the hint space: without FEAT_PAuth it is a nop, and
// `ptr` comes back as it was.
inline u64 pac_sign(u64 ptr, u64 modifier) {
  register u64 x17 asm("x17") = ptr;
  register u64 x16 asm("x16") = modifier;
  asm("hint #8" : "+r"(x17) : "r"(x16));
  return x17;
}
#endif

// struct stat as fstat(2) fills it in: the x86-64 and PPC64 layout, asm-generic's (AArch64, RISC-V),
// or ARM32's.
#if defined(__arm__)
struct Stat {
  u32 dev, ino;
  u16 mode, nlink, uid, gid;
  u32 rdev, size, blksize, blocks;
  u32 times[6];
  u32 unused[2];
};
static_assert(sizeof(Stat) == 64);
#elif defined(__aarch64__) || defined(__riscv)
struct Stat {
  u64 dev, ino;
  u32 mode, nlink, uid, gid;
  u64 rdev, pad1;
  i64 size;
  i32 blksize, pad2;
  i64 blocks;
  u64 times[6];
  u32 unused[2];
};
static_assert(sizeof(Stat) == 128);
#else
struct Stat {
  u64 dev, ino, nlink;
  u32 mode, uid, gid, pad0;
  u64 rdev;
  i64 size, blksize, blocks;
  u64 times[6];
  i64 unused[3];
};
static_assert(sizeof(Stat) == 144);
#endif

// stack_t, for sigaltstack(2).
struct StackT {
  void* sp;
  int flags;  // ss_onstack, ss_disable
  unsigned long size;
};
inline constexpr int ss_onstack = 1, ss_disable = 2;


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
