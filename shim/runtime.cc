// The shim: the runtime prepatch embeds in every prepared binary (docs/SHIM.md). Freestanding: it runs
// as the program's entry point before libc exists, and inside signal handlers. Raw system calls
// (shim/sys.h), no allocation beyond mmap, no locks, no exceptions, no static constructors. Built once
// per ISA (x86-64, AArch64, PPC64le, RISC-V64, ARM32 Thumb-2: shim/build.cmake), with that ISA's
// shim/entry_*.S.
//
// What it does:
//   start:    registers membarrier SYNC_CORE, installs its handlers (SIGTRAP and the trap self-test
//             where the ISA's plan lays a trap: x86-64, RISC-V64, Thumb-2), enables the sites PREPATCH_TRACE names, then
//             the program starts.
//   a batch:  switches a set of sites between nop and call by running arch/plan.h's plan phase by phase
//             (shim/core.h run_batch), with the text made writable for the batch only (or, with
//             PREPATCH_WX=strict, through a writable mapping of the memfd the text is mapped from).
//   SIGTRAP:  a thread that hits a site's trap mid-batch (int3, c.ebreak, udf #1; on Thumb-2 also the
//             SIGILL of a trap replaced before the kernel read it back) is resolved by a binary search of
//             the table and the emulation of the site's new form; other traps go to the program's own handler.
//   control:  `prepatch ctl PID ...` leaves a request file and queues signal 62 carrying its id.
//   threads:  each gets an alternate signal stack for the handlers (pthread_create hooked); fork waits
//             for a running batch (glibc's fork handlers).
#pragma GCC visibility push(hidden)

#include "shim/abi.h"
#include "shim/core.h"
#include "shim/dynlink.h"
#include "shim/names.h"
#include "shim/settings.h"
#include "shim/sys.h"

using namespace prepatch;
using namespace prepatch::shim;

extern "C" {
extern u8 __shim_base[];
extern u8 __shim_data[];
extern u8 __shim_mem_end[];
extern u8 prepatch_tramp_fentry[];
extern u8 prepatch_tramp_mcount[];
extern u8 prepatch_tramp_patchable[];
extern u8 prepatch_tramp_count[];
extern u8 prepatch_tramp_exit[];
extern u8 prepatch_selftest_site[];
extern u8 prepatch_hook_raise[];
extern u8 prepatch_hook_resume[];
extern u8 prepatch_hook_rethrow[];
extern u8 prepatch_hook_catch[];
void prepatch_selftest();
void prepatch_restorer();
void* prepatch_thread_start(void* region);
int prepatch_hook_pthread_create(void* thread, const void* attr, void* (*start)(void*), void* arg);

// What the compiler may call even in freestanding code.
void* memcpy(void* d, const void* s, size_t n) {
  auto* dd = static_cast<u8*>(d);
  auto* ss = static_cast<const u8*>(s);
  for (size_t i = 0; i < n; i++) dd[i] = ss[i];
  return d;
}
void* memmove(void* d, const void* s, size_t n) {
  auto* dd = static_cast<u8*>(d);
  auto* ss = static_cast<const u8*>(s);
  if (dd < ss)
    for (size_t i = 0; i < n; i++) dd[i] = ss[i];
  else
    for (size_t i = n; i > 0; i--) dd[i - 1] = ss[i - 1];
  return d;
}
void* memset(void* d, int c, size_t n) {
  auto* dd = static_cast<u8*>(d);
  for (size_t i = 0; i < n; i++) dd[i] = static_cast<u8>(c);
  return d;
}
int memcmp(const void* a, const void* b, size_t n) {
  auto* x = static_cast<const u8*>(a);
  auto* y = static_cast<const u8*>(b);
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}
#if defined(__arm__)
// ARMv7-A has no divide instruction, so gcc calls the run-time ABI's helpers (ARM IHI 0043), which
// libgcc would bring with its division-by-zero path into libc; the shim divides rarely (a hash's
// bucket, decimal numbers), by shifting and subtracting. __aeabi_uldivmod returns its remainder in
// r2:r3, which C cannot: it is shim/entry_arm.S's, around prepatch_udivmod64.
u64 prepatch_udivmod64(u64 n, u64 d, u64* rem) {
  u64 q = 0, r = 0;
  for (int i = 63; i >= 0; i--) {
    r = r << 1 | ((n >> i) & 1);
    if (r >= d) r -= d, q |= u64{1} << i;
  }
  *rem = r;
  return q;
}
u32 __aeabi_uidiv(u32 n, u32 d) {
  u64 r;
  return static_cast<u32>(prepatch_udivmod64(n, d, &r));
}
u64 __aeabi_uidivmod(u32 n, u32 d) {  // the quotient in r0, the remainder in r1
  u64 r;
  return prepatch_udivmod64(n, d, &r) | r << 32;
}
#endif

// Filled in by the preparer (shim/abi.h); in .data so that it is part of the file image.
__attribute__((section(".data.config"))) Config prepatch_config = {};

// The site hash (shim/core.h), read by the count trampoline in shim/entry_x86_64.S.
SiteHashSlot* prepatch_hash;
u64 prepatch_hash_mask;

// The functions the exception hooks in shim/entry_x86_64.S go on to, in hook_unwinder's order.
u64 prepatch_unwind_real[4];
}

namespace {

using sys::call;

struct Stats {
  u64 batches, syncs, writes, protections, traps, refused, sync_timeouts;
  u64 block_waits, block_wait_max_ns;  // batches that waited for threads blocking signals, longest wait
  // Control requests: answered (a reply written, refusals included), dropped unread (one was being
  // served, or a burst past ctl_burst), refused for what their file or directory is, and the longest
  // time one took in its handler.
  u64 requests, requests_dropped, requests_refused, request_max_ns;
};

// The shim's whole state: one object in .bss, zero at start.
struct State {
  u64 bias;        // run-time address minus link-time address
  u64 tramp[3];    // run-time trampoline addresses, by SiteKind - 1
  const u8* phdr;  // the program headers, as the kernel reported them (AT_PHDR)
  u64 phnum;
  TableView table;
  int table_state;  // 0 unchecked, 1 sound, -1 malformed
  u8* site;         // per site: site_on, site_in_batch, site_outside bits
  // Per executable segment: the run-time page span of its sites and the segment's protection, which a
  // batch makes writable (found once: the table does not change).
  struct TextSpan {
    u64 lo, hi;
    int prot;
    u64 off;  // PREPATCH_WX=strict: where the span lies in the text's memfd
  } text[16];
  unsigned text_spans;
  // PREPATCH_WX=strict: the spans are mapped from a memfd (wx_fd, wx_size bytes), written through a
  // second, writable mapping of it made for each batch alone (docs/SHIM.md, "W^X").
  bool wx_strict, wx_mapped;
  int wx_fd;
  u64 wx_size;
  // One site of a batch: its run-time address, length and the bytes it must end up as (the kernel's
  // text_poke_loc). Mapped with the site states, one per table entry; a batch touches what it uses.
  struct BatchEntry {
    u64 addr;
    u8 len;
    u8 target[15];
  } * batch;
  u64* counts;      // per site call counts, in the counts file's shared mapping
  u32 file_mode;          // PREPATCH_FILE_MODE: the trace and counts files' mode
  int serving;            // a control request is being served
  u32 burst;              // control requests served while more were queued, since the queue was last empty
  char counts_env[512];   // PREPATCH_COUNTS
  char counts_path[520];  // the counts file, once created
  u64 start_pid;          // the process that started (a forked child has another pid)
  sys::KernelSigaction chained[3];  // the program's dispositions of SIGTRAP, ctl_signal and SIGILL, to chain to
  const char* disabled;          // why the shim is off, or nullptr
  bool use_signals;              // sync by signalling every thread (membarrier unavailable or forced)
  bool use_flush_icache;         // RISC-V: sync by riscv_flush_icache (membarrier unavailable or forced)
  u8 emulated;                   // under a user-mode emulator (qemu-user; emulated()): 0 not known yet, 1 no, 2 yes
  long membarrier_error;
  int busy;      // a batch runs
  int busy_tid;  // the thread running it, once it has set it (0 otherwise)
  bool fork_locked;  // fork's prepare handler holds `busy` for the fork
  // The signal fallback: the last round's number, the threads the running round waits for (each with
  // the number of the last round it answered), and how many have not answered yet (a futex word).
  u32 sync_round;
  struct SyncSlot {
    int tid;
    u32 answered;
  } * sync_slots;
  u64 sync_count;
  u32 sync_left;
  u64 selftest_traps, selftest_calls;
  Stats stats;
  // Tracing (PREPATCH_TRACER): what a call does, where the trace file goes, how large it may grow.
  Tracer tracer;
  char output[512];  // PREPATCH_OUTPUT, "" for the default
  u64 buffer_bytes;  // PREPATCH_BUFFER
  struct Thread* threads;
  struct Writer* writer;  // wiped in a child after fork: the child writes its own file
  u64 generation;         // numbers the trace files this process (and its parents) created
  u64 tsc_hz;             // the TSC's rate, measured when the first trace file was created
  int tid_in_tcb;         // glibc keeps the thread's tid at %fs:0x2d0: 1 checked, -1 not so, 0 unknown
  u64 unwind_in_place, unwind_got;  // entry points of the binary's own unwinder, and GOT slots, hooked (graph)
  // Alternate signal stacks: glibc's pthread_create and pthread_setspecific, the key whose destructor
  // frees a thread's stack, and the GOT slots of pthread_create hooked.
  int (*pthread_create)(void*, const void*, void* (*)(void*), void*);
  int (*pthread_setspecific)(u32, const void*);
  u32 pthread_key;
  u64 pthread_got;
  // Stacks of threads that ended, for the next threads to take (mapping and unmapping one costs a
  // thread ~20 us), under a spin lock (held for a few instructions; fork holds it across).
  u8* stack_cache[64];
  u32 stacks_cached;
  int stack_lock;
  const char* unwind_unhooked;  // why exceptions are not followed (graph), or nullptr
};
constinit State g{};

// Function names as users write them (shim/names.h): one demangler for batches, which run under the
// batch lock, one for `status`, which requests run one at a time. Their text is here, not on the
// (signal) stack, which holds only the demangler's frames (~20 KiB at its deepest).
char batch_names_out[4096], status_names_out[4096];
constinit Demangler batch_demangler, status_demangler;

// g.site bits: the form a site is (or is being switched to) is the call, the site is in the running
// batch, the site lies outside every executable segment (never switched).
constexpr u8 site_on = 1, site_in_batch = 2, site_outside = 4;

constexpr u64 sigtrap_bit = u64{1} << (sys::sigtrap - 1), ctl_bit = u64{1} << (ctl_signal - 1), sigill_bit = u64{1} << (sys::sigill - 1);

void say(const char* a, const char* b = "", const char* c = "") {
  char buf[512];
  Text t(buf, sizeof buf);
  t.str("prepatch: ").str(a).str(b).str(c).ch('\n');
  sys::write_all(2, t.data(), t.size());
}

// The sa_restorer the shim's handlers name: its own rt_sigreturn on x86-64 (required there), none on
// the ISAs whose kernel returns through the vDSO (sys::restorer_flag).
void (*restorer())() {
#if defined(__x86_64__)
  return &prepatch_restorer;
#else
  return nullptr;
#endif
}

// A trap may stand at sites mid-batch on this ISA (x86-64's int3 plan, RISC-V's c.ebreak for sites that
// are not 4-byte aligned): the SIGTRAP handler, its self-test and the check that no thread blocks
// SIGTRAP exist for it. AArch64 and PPC64le swap one word in one store and never lay a trap.
constexpr bool traps = arch::may_trap(sys::isa);
// Thumb-2: Linux turns udf #1 into SIGTRAP only after reading the instruction back from memory (its
// undefined-instruction hooks match the halfword at the pc), and so does qemu-user. When a batch has
// replaced the trap meanwhile, the thread gets SIGILL at the site instead, which the handler resolves
// the same way; SIGILL anywhere else is the program's.
constexpr bool sigill_at_sites = sys::isa == arch::Isa::thumb2;

// Restores the default action of `sig` and sends it to this thread.
void raise_default(int sig) {
  sys::KernelSigaction dfl{nullptr, sys::restorer_flag, restorer(), 0};
  call(sys::nr_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, 8);
  call(sys::nr_tgkill, call(sys::nr_getpid), call(sys::nr_gettid), sig);
}

// ---- threads -----------------------------------------------------------------------------------

// Calls f(tid) for every thread of the process (/proc/self/task); false when it cannot list them.
template <class F>
bool for_each_thread(F f) {
  int fd = static_cast<int>(call(sys::nr_openat, sys::at_fdcwd, reinterpret_cast<long>("/proc/self/task"),
                                 sys::o_rdonly | sys::o_directory | sys::o_cloexec));
  if (fd < 0) return false;
  alignas(8) char buf[1024];
  bool ok = true;
  for (;;) {
    long n = call(sys::nr_getdents64, fd, reinterpret_cast<long>(buf), sizeof buf);
    if (n < 0) ok = false;
    if (n <= 0) break;
    for (long at = 0; at < n;) {
      const char* rec = buf + at;
      u16 reclen = static_cast<u16>(load_le(reinterpret_cast<const u8*>(rec) + 16, 2));
      const char* name = rec + 19;
      int tid = 0;
      for (; *name >= '0' && *name <= '9'; name++) tid = tid * 10 + (*name - '0');
      if (tid > 0 && !*name) f(tid);
      at += reclen;
    }
  }
  call(sys::nr_close, fd);
  return ok;
}

// The SigBlk mask of thread `tid`, from /proc/self/task/TID/status; false when unreadable.
bool blocked_mask(int tid, u64& mask) {
  char path[64];
  Text p(path, sizeof path - 1);
  p.str("/proc/self/task/").num(static_cast<u64>(tid)).str("/status");
  path[p.size()] = 0;
  int fd = static_cast<int>(call(sys::nr_openat, sys::at_fdcwd, reinterpret_cast<long>(path), sys::o_rdonly | sys::o_cloexec));
  if (fd < 0) return false;
  char buf[2048];
  long n = call(sys::nr_read, fd, reinterpret_cast<long>(buf), sizeof buf);
  call(sys::nr_close, fd);
  if (n <= 0) return false;
  return status_mask(buf, static_cast<size_t>(n), "SigBlk:", mask);
}

// clock_gettime(clock) in ns: 0 CLOCK_REALTIME, 1 CLOCK_MONOTONIC.
i64 clock_ns(int clock) {
  sys::Timespec t{};
  call(sys::nr_clock_gettime, clock, reinterpret_cast<long>(&t));
  return t.sec * 1000000000 + t.nsec;
}

i64 now_ns() { return clock_ns(1); }

// Renames `from` to `to`, both relative to directory `dir` (at_fdcwd: the working directory). A
// symbolic link, FIFO or file at `to` is replaced, never written through.
long rename(const char* from, const char* to, int dir = sys::at_fdcwd) {
  return call(sys::nr_renameat2, dir, reinterpret_cast<long>(from), dir, reinterpret_cast<long>(to), 0);
}

// What a failed system call's result (-errno) means, for messages.
const char* errno_text(long r) {
  switch (-r) {
    case sys::eacces: return "permission denied";
    case sys::eperm: return "operation not permitted";
    case sys::eexist: return "a file of that name exists";
    case sys::enoent: return "no such file or directory";
    case sys::eloop: return "a symbolic link is in the way";
    case sys::enospc: return "no space left on the device";
    case sys::erofs: return "read-only file system";
    case sys::enotdir: return "a component of the path is not a directory";
    case sys::eisdir: return "a directory is in the way";
    case sys::enxio: return "no such device";
  }
  return "an error";
}

// Appends a temporary name's unpredictable characters (shim/core.h temp_name_chars): from getrandom,
// or, where the kernel has none (before 3.17), the TSC and the clock mixed.
void random_chars(Text& t) {
  constexpr unsigned n = temp_random_chars;
  u8 r[n] = {};
  if (call(sys::nr_getrandom, reinterpret_cast<long>(r), n, 1 /* GRND_NONBLOCK */) != static_cast<long>(n)) {
    u64 x = sys::ticks() ^ static_cast<u64>(clock_ns(0)) * 0x9E3779B97F4A7C15;
    for (unsigned i = 0; i < n; i++) x = (x ^ (x >> 29)) * 0xBF58476D1CE4E5B9, r[i] = static_cast<u8>(x >> 56);
  }
  for (unsigned i = 0; i < n; i++) t.ch(temp_name_chars[r[i] & 31]);
}

// Creates the new file `path` (relative to directory `dir`) exclusively: it fails, rather than open
// anything, when any file is there already, a symbolic link (dangling or not), a FIFO or a device
// (O_EXCL | O_NOFOLLOW). Mode `mode` less the umask. The descriptor, or -errno.
long create_exclusive(int dir, const char* path, u32 mode) {
  return call(sys::nr_openat, dir, reinterpret_cast<long>(path),
              sys::o_rdwr | sys::o_creat | sys::o_excl | sys::o_nofollow | sys::o_noctty | sys::o_cloexec, mode);
}

// Creates a temporary file beside `path` under an unpredictable name, PATH.tmp-XXXXXXXXXXXX (60 random
// bits), put in `tmp` (`cap` bytes); a name someone took meanwhile is drawn again, temp_tries times at
// most. The descriptor, or -errno.
long create_temporary(int dir, const char* path, char* tmp, u64 cap, u32 mode) {
  long fd = -sys::eexist;
  for (unsigned k = 0; k < temp_tries && fd == -sys::eexist; k++) {
    Text t(tmp, cap - 1);
    t.str(path).str(".tmp-");
    random_chars(t);
    tmp[t.size()] = 0;
    if (t.truncated) return -sys::einval;
    fd = create_exclusive(dir, tmp, mode);
  }
  return fd;
}

void* map(u64 size, int prot, int flags, int fd) {
  long p = call(sys::nr_mmap, 0, static_cast<long>(size), prot, flags, fd, 0);
  return p < 0 && p > -4096 ? nullptr : reinterpret_cast<void*>(p);
}

// ---- sync --------------------------------------------------------------------------------------

// The fallback: every other thread takes ctl_signal carrying sync_magic and the round's number,
// serializes its core in the handler (cpuid) and checks itself off; the batch waits until every thread
// has, or has exited. All threads are signalled first, then the batch thread sleeps on a futex the
// last answer wakes, so the threads it waits for get its core too. A thread that does not answer
// within a second (stopped, traced) is counted in sync_timeouts and the batch goes on.
constexpr u64 sync_slots = 8192;  // threads per round; more are synced in further rounds

// Checks slot i off for round `seq`: only from "answered the round before" (how slots are filled), so
// a late answer to an earlier round can never check a thread off in a later one. The last one wakes
// the batch thread.
void check_off(u64 i, u32 seq) {
  u32 expected = seq - 1;
  if (!__atomic_compare_exchange_n(&g.sync_slots[i].answered, &expected, seq, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) return;
  if (__atomic_sub_fetch(&g.sync_left, 1, __ATOMIC_ACQ_REL) == 0)
    call(sys::nr_futex, reinterpret_cast<long>(&g.sync_left), sys::futex_wake_private, 1);
}

void run_sync_round(long pid, long uid) {
  __atomic_store_n(&g.sync_left, static_cast<u32>(g.sync_count), __ATOMIC_RELEASE);
  const u32 seq = __atomic_add_fetch(&g.sync_round, 1, __ATOMIC_ACQ_REL);
  for (u64 i = 0; i < g.sync_count; i++) {
    sys::SigInfo si{};
    si.signo = ctl_signal;
    si.code = sys::si_queue;
    si.pid = static_cast<int>(pid);
    si.uid = static_cast<unsigned>(uid);
    si.value = static_cast<unsigned long>(message_value(sync_magic, sync_tag, seq));
    if (call(sys::nr_rt_tgsigqueueinfo, pid, g.sync_slots[i].tid, ctl_signal, reinterpret_cast<long>(&si)) != 0) check_off(i, seq);  // gone already
  }
  const i64 deadline = now_ns() + 1000000000;
  for (;;) {
    const u32 left = __atomic_load_n(&g.sync_left, __ATOMIC_ACQUIRE);
    if (left == 0) return;
    sys::Timespec wait{0, 1000000};
    call(sys::nr_futex, reinterpret_cast<long>(&g.sync_left), sys::futex_wait_private, left, reinterpret_cast<long>(&wait));
    if (__atomic_load_n(&g.sync_left, __ATOMIC_ACQUIRE) == 0) return;
    // Threads that exited meanwhile never answer; past the deadline, nobody else will either.
    const bool late = now_ns() > deadline;
    for (u64 i = 0; i < g.sync_count; i++) {
      if (__atomic_load_n(&g.sync_slots[i].answered, __ATOMIC_ACQUIRE) == seq) continue;
      if (call(sys::nr_tgkill, pid, g.sync_slots[i].tid, 0) == -sys::esrch) check_off(i, seq);
      else if (late) g.stats.sync_timeouts++, check_off(i, seq);
    }
  }
}

void signal_sync() {
  if (!g.sync_slots) {
    void* m = map(sync_slots * sizeof *g.sync_slots, sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1);
    if (!m) return;  // cannot happen short of exhausting memory; membarrier-free and slot-free, nothing more to do
    g.sync_slots = static_cast<State::SyncSlot*>(m);
  }
  const long pid = call(sys::nr_getpid), self = call(sys::nr_gettid), uid = call(sys::nr_geteuid);
  g.sync_count = 0;
  for_each_thread([&](int tid) {
    if (tid == self) return;
    if (g.sync_count == sync_slots) run_sync_round(pid, uid), g.sync_count = 0;
    g.sync_slots[g.sync_count++] = {tid, g.sync_round};  // "answered the round before the next"
  });
  if (g.sync_count) run_sync_round(pid, uid);
  g.sync_count = 0;
}

// A sync request of the round numbered `id` (modulo 2^24) reached this thread: serialize, then check
// this thread off for the running round if it is that one (a late answer to an earlier round checks
// nothing off, see check_off).
void acknowledge_sync(u32 id) {
  sys::serialize_core();
  const u32 seq = __atomic_load_n(&g.sync_round, __ATOMIC_ACQUIRE);
  if ((seq & message_id_mask) != id) return;
  const int self = static_cast<int>(call(sys::nr_gettid));
  for (u64 i = 0; i < g.sync_count; i++)
    if (g.sync_slots[i].tid == self) check_off(i, seq);
}

// membarrier SYNC_CORE failed with `error` (at registration or at a sync): RISC-V syncs with
// riscv_flush_icache from now on, the other ISAs with the signal fallback.
void membarrier_unavailable(long error) {
  g.membarrier_error = error;
  (sys::isa == arch::Isa::riscv64 ? g.use_flush_icache : g.use_signals) = true;
}

// Every thread of the process executes a serializing instruction before any of them runs code this
// thread wrote before the call: membarrier(PRIVATE_EXPEDITED_SYNC_CORE), or the signal fallback.
// RISC-V: where the kernel offers no membarrier SYNC_CORE (before Linux 6.9), riscv_flush_icache with
// no range and no flags has every hart of the process run fence.i before it returns.
void sync_all() {
  g.stats.syncs++;
  if (!g.use_signals && !g.use_flush_icache) {
    long r = call(sys::nr_membarrier, sys::membarrier_private_expedited_sync_core, 0, 0);
    if (r == 0) return;
    membarrier_unavailable(r);
  }
#if defined(__riscv)
  if (g.use_flush_icache) {
    if (call(sys::nr_riscv_flush_icache, 0, 0, 0) == 0) return;
    g.use_flush_icache = false, g.use_signals = true;
  }
#endif
  signal_sync();
}

// ---- the batch ---------------------------------------------------------------------------------

// Writes a batch's bytes: in place, or through the memfd's writable mapping `alias` (PREPATCH_WX=strict).
// Halfword stores (Thumb-2) are flushed from the caches once per phase, over the span they cover
// (sys::flush_code; the sites are in address order), before the sync.
struct TextMemory {
  u8* alias;
  u64 stored_lo = ~u64{0}, stored_hi = 0;  // the halfwords stored since the last sync
  void store(u64 addr, const u8* bytes, unsigned width) {
    auto* at = reinterpret_cast<volatile u8*>(addr);
    for (unsigned k = 0; alias && k < g.text_spans; k++)
      if (addr >= g.text[k].lo && addr < g.text[k].hi) at = alias + g.text[k].off + (addr - g.text[k].lo);
    if (width == 4 && sys::isa != arch::Isa::x86_64) {  // an aligned instruction word: one store
      u32 w;
      memcpy(&w, bytes, 4);
      __atomic_store_n(reinterpret_cast<volatile u32*>(at), w, __ATOMIC_RELAXED);
      sys::sync_icache(const_cast<u8*>(at), reinterpret_cast<void*>(addr));
      return;
    }
    if (width == 2) {  // an aligned halfword (the halfword-trap plan of RISC-V and Thumb-2): one store
      u16 h;
      memcpy(&h, bytes, 2);
      __atomic_store_n(reinterpret_cast<volatile u16*>(at), h, __ATOMIC_RELAXED);
      if (addr < stored_lo) stored_lo = addr;
      if (addr + 2 > stored_hi) stored_hi = addr + 2;
      return;
    }
    for (unsigned i = 0; i < width; i++) at[i] = bytes[i];
  }
  void sync() {
    if (stored_lo < stored_hi) sys::flush_code(stored_lo, stored_hi);
    stored_lo = ~u64{0}, stored_hi = 0;
    sync_all();
  }
};

// The running batch, as run_batch sees it: the sites in g.batch, in address order, each with the bytes
// it ends up as, worked out once when the batch was chosen.
struct BatchSites {
  u64 n;
  u64 count() const { return n; }
  bool changes(u64) const { return true; }
  u64 addr(u64 i) const { return g.batch[i].addr; }
  unsigned len(u64 i) const { return g.batch[i].len; }
  const u8* target(u64 i) const { return g.batch[i].target; }
};

int prot_of(u32 pflags) { return (pflags & 4 ? sys::prot_read : 0) | (pflags & 2 ? sys::prot_write : 0) | (pflags & 1 ? sys::prot_exec : 0); }

// The first of the `phnum` program headers at `phdr` of type `type` whose segment holds link-time
// address `addr` (any of that type when `addr` is ~0); nullptr when there is none.
const u8* find_phdr(const u8* phdr, u64 phnum, u32 type, u64 addr = ~u64{0}) {
  for (u64 p = 0; p < phnum; p++) {
    const u8* ph = phdr + p * elfc::phdr_size;
    const u64 v = load_le(ph + elfc::p_vaddr, elfc::word);
    if (load_le(ph, 4) == type && (addr == ~u64{0} || (addr >= v && addr - v < load_le(ph + elfc::p_memsz, elfc::word)))) return ph;
  }
  return nullptr;
}

// Runs write() with the pages spanning [addr, addr + n) writable, then gives them back `prot`, the
// protection they have; false, and nothing written, when they cannot be made writable. Under
// PREPATCH_WX=strict they are not executable meanwhile (used at start only, while no other thread runs).
template <class F>
bool while_writable(u64 addr, u64 n, int prot, F write) {
  const u64 lo = addr & ~u64{4095}, hi = (addr + n + 4095) & ~u64{4095};
  const int writable = (g.wx_strict ? prot & ~sys::prot_exec : prot) | sys::prot_write;
  if (call(sys::nr_mprotect, static_cast<long>(lo), static_cast<long>(hi - lo), writable) != 0) return false;
  write();
  call(sys::nr_mprotect, static_cast<long>(lo), static_cast<long>(hi - lo), prot);
  return true;
}

// Finds each executable segment's span of sites and marks the sites outside every one; once, when the
// site states are mapped.
void find_text_spans() {
  constexpr unsigned max_spans = sizeof g.text / sizeof g.text[0];
  u64 lo[max_spans], hi[max_spans], first[max_spans], last[max_spans];
  int prot[max_spans];
  unsigned n = 0;
  for (u64 p = 0; p < g.phnum && n < max_spans; p++) {
    const u8* ph = g.phdr + p * elfc::phdr_size;
    const u32 flags = static_cast<u32>(load_le(ph + elfc::p_flags, 4));
    if (load_le(ph, 4) != 1 /* PT_LOAD */ || !(flags & 1 /* PF_X */)) continue;
    lo[n] = load_le(ph + elfc::p_vaddr, elfc::word), hi[n] = lo[n] + load_le(ph + elfc::p_memsz, elfc::word), first[n] = ~u64{0}, last[n] = 0;
    prot[n++] = prot_of(flags);
  }
  for (u64 i = 0; i < g.table.count(); i++) {
    const SiteEntry e = g.table.entry(i);
    unsigned k = 0;
    while (k < n && !(e.addr >= lo[k] && e.addr + e.length <= hi[k])) k++;
    if (k == n) {
      g.site[i] |= site_outside;
      continue;
    }
    if (first[k] == ~u64{0}) first[k] = e.addr;
    last[k] = e.addr + e.length;
  }
  for (unsigned k = 0; k < n; k++)
    if (first[k] != ~u64{0}) g.text[g.text_spans++] = {(first[k] + g.bias) & ~u64{4095}, (last[k] + g.bias + 4095) & ~u64{4095}, prot[k], 0};
}

// Makes the executable segments' spans of sites writable for its lifetime, then restores each
// segment's own protection, whatever happened in between (RAII: an early return cannot leave text
// writable). Under PREPATCH_WX=strict the text itself is never writable: `alias` is a writable mapping
// of its memfd, unmapped at the end.
class TextWritable {
 public:
  TextWritable() {
    if (g.wx_strict) {
      alias = static_cast<u8*>(map(g.wx_size, sys::prot_read | sys::prot_write, sys::map_shared, g.wx_fd));
      ok = alias != nullptr;
      return;
    }
    for (; n_ < g.text_spans; n_++) {
      const State::TextSpan& t = g.text[n_];
      g.stats.protections++;
      if (call(sys::nr_mprotect, static_cast<long>(t.lo), static_cast<long>(t.hi - t.lo), t.prot | sys::prot_write) != 0) {
        ok = false;
        return;
      }
    }
  }
  ~TextWritable() {
    if (alias) call(sys::nr_munmap, reinterpret_cast<long>(alias), static_cast<long>(g.wx_size));
    for (unsigned i = 0; i < n_; i++) {
      const State::TextSpan& t = g.text[i];
      g.stats.protections++;
      call(sys::nr_mprotect, static_cast<long>(t.lo), static_cast<long>(t.hi - t.lo), t.prot);
    }
  }
  bool ok = true;
  u8* alias = nullptr;

 private:
  unsigned n_ = 0;
};

// The "a batch runs" flag (g.busy, with the thread holding it in g.busy_tid).
bool take_batch_lock() {
  if (__atomic_exchange_n(&g.busy, 1, __ATOMIC_ACQUIRE) != 0) return false;
  __atomic_store_n(&g.busy_tid, static_cast<int>(call(sys::nr_gettid)), __ATOMIC_RELAXED);
  return true;
}

void drop_batch_lock() {
  __atomic_store_n(&g.busy_tid, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g.busy, 0, __ATOMIC_RELEASE);
}

// The flag, held for a scope.
class BatchLock {
 public:
  BatchLock() : held(take_batch_lock()) {}
  ~BatchLock() {
    if (held) drop_batch_lock();
  }
  const bool held;
};

void on_sigtrap(int sig, sys::SigInfo* si, void* uc);
void on_message(int sig, sys::SigInfo* si, void* uc);

// The signals the shim handles, by the index its handler tables use: SIGTRAP, ctl_signal, and SIGILL
// where sigill_at_sites.
constexpr int handled_signal[3] = {sys::sigtrap, ctl_signal, sys::sigill};
int handled_index(int sig) { return sig == sys::sigtrap ? 0 : sig == ctl_signal ? 1 : 2; }

// Installs the shim's handler for handled_signal[which], keeping the program's disposition to chain to.
bool install_handler(int which) {
  const int sig = handled_signal[which];
  void* handler = which == 1 ? reinterpret_cast<void*>(&on_message) : reinterpret_cast<void*>(&on_sigtrap);
  // The trap handlers do not block their signal (a traced function that a handler calls may trap in
  // turn); ctl_signal's does: with it unblocked the kernel would deliver every queued request at once,
  // one frame over the other before any ran, and a burst of a few thousand would overflow the signal
  // stack (it did). Blocked, they run one after the other and serve_request drops the excess.
  const u64 flags = sys::sa_siginfo | sys::restorer_flag | sys::sa_restart | sys::sa_onstack | (which == 1 ? 0 : sys::sa_nodefer);
  sys::KernelSigaction ours{handler, static_cast<unsigned long>(flags), restorer(), 0};
  sys::KernelSigaction old{};
  if (call(sys::nr_rt_sigaction, sig, reinterpret_cast<long>(&ours), reinterpret_cast<long>(&old), 8) != 0) return false;
  if (old.handler != handler) g.chained[which] = old;
  return true;
}

// Before a batch: ours must be the SIGTRAP handler, and the SIGILL one where sigill_at_sites (the
// program may have replaced them; theirs become the ones chained to).
void ensure_handler() {
  for (int which : {0, 2}) {  // SIGTRAP, SIGILL
    if (which == 2 && !sigill_at_sites) continue;
    sys::KernelSigaction cur{};
    call(sys::nr_rt_sigaction, handled_signal[which], 0, reinterpret_cast<long>(&cur), 8);
    if (cur.handler != reinterpret_cast<void*>(&on_sigtrap)) install_handler(which);
  }
}

bool ensure_table() {
  if (g.table_state == 0) {
    const char* why = g.table.check(reinterpret_cast<const u8*>(prepatch_config.table_vaddr + g.bias), prepatch_config.table_size, sys::machine);
    g.table_state = why ? -1 : 1;
    if (why) g.disabled = why;
  }
  return g.table_state == 1;
}

// Maps the site states and the batch's entries, and finds the text spans; once.
bool ensure_sites() {
  if (g.site) return true;
  const u64 n = g.table.count();
  void* m = map(n * (1 + sizeof *g.batch) + 64, sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1);
  if (!m) return false;
  g.batch = static_cast<State::BatchEntry*>(m);
  g.site = reinterpret_cast<u8*>(g.batch + n);
  find_text_spans();
  return true;
}

// Whether the file at `path` (a trace or counts file: `magic`, then the writer's pid at offset 24)
// was written by this process: by the program it ran before an exec (or by an earlier process that
// had the same pid). Such a file is never replaced.
// Only a regular file is read: a symbolic link is not followed, and a FIFO or device put there is
// neither waited for (O_NONBLOCK) nor read.
bool written_by_this_process(const char* path, const char* magic) {
  const int fd = static_cast<int>(call(sys::nr_openat, sys::at_fdcwd, reinterpret_cast<long>(path),
                                       sys::o_rdonly | sys::o_nofollow | sys::o_nonblock | sys::o_noctty | sys::o_cloexec));
  if (fd < 0) return false;
  u8 head[32];
  sys::Stat st{};
  const bool regular = call(sys::nr_fstat, fd, reinterpret_cast<long>(&st)) == 0 && (st.mode & 0170000) == 0100000;
  const long n = regular ? call(sys::nr_read, fd, reinterpret_cast<long>(head), sizeof head) : -1;
  call(sys::nr_close, fd);
  return n == sizeof head && memcmp(head, magic, 8) == 0 && load_le(head + 24, 8) == static_cast<u64>(call(sys::nr_getpid));
}

// Puts a name for a new file of this process in `path` (`cap` bytes): what name(Text&) writes, then
// .1, .2, ... while a file of that name is this process's own. nullptr, or why there is none.
template <class F>
const char* fresh_name(char* path, u64 cap, const char* magic, F name) {
  Text p(path, cap - 1);
  name(p);
  path[p.size()] = 0;
  for (u64 k = 1; !p.truncated && written_by_this_process(path, magic); k++) {
    if (k == 1000) return "999 files of this name are this process's already";
    p = Text(path, cap - 1);
    name(p);
    p.ch('.').num(k);
    path[p.size()] = 0;
  }
  return p.truncated ? "its name is too long" : nullptr;
}

// A new file of this process (a trace or counts file), created under a temporary name no one can
// predict (create_temporary) and renamed into place once whole, so a process still using an older file
// of that name keeps a valid mapping, and nothing planted at either name is ever written through.
struct NewFile {
  char path[520], tmp[544];
  int fd;
};

// Names the file (fresh_name: `name` writes the name, `magic` marks this process's own files) and
// creates its temporary; false with the reason in err (`what`: "trace file", "counts file").
template <class F>
bool create_file(NewFile& f, const char* magic, F name, const char* what, Text& err) {
  if (const char* why = fresh_name(f.path, sizeof f.path, magic, name)) return err.str("the ").str(what).str(": ").str(why), false;
  const long fd = create_temporary(sys::at_fdcwd, f.path, f.tmp, sizeof f.tmp, g.file_mode);
  f.fd = static_cast<int>(fd);
  if (fd < 0) return err.str("cannot create the ").str(what).str(" beside ").str(f.path).str(": ").str(errno_text(fd)), false;
  return true;
}

// Gives up a file that could not be completed: closes it and removes the temporary.
void discard(const NewFile& f) {
  call(sys::nr_close, f.fd);
  call(sys::nr_unlinkat, sys::at_fdcwd, reinterpret_cast<long>(f.tmp), 0);
}

// The counts file's name for this process: PREPATCH_COUNTS, or prepatch.PID.counts; a process forked
// from the one that started appends ".PID" to PREPATCH_COUNTS (its parent's file is its parent's).
void counts_name(Text& t) {
  const u64 pid = static_cast<u64>(call(sys::nr_getpid));
  if (!g.counts_env[0]) return void(t.str("prepatch.").num(pid).str(".counts"));
  t.str(g.counts_env);
  if (pid != g.start_pid) t.ch('.').num(pid);
}

// Creates the counts file the way the trace file is (docs/SHIM.md, "The counts file"): under a
// temporary name, renamed into place, so a process still counting into an older file of that name
// keeps a valid mapping; a file this process wrote before an exec keeps its name.
bool ensure_counts(Text& err) {
  if (g.counts) return true;
  NewFile f;
  if (!create_file(f, counts_magic, counts_name, "counts file", err)) return false;
  const u64 n = g.table.count(), size = sizeof(CountsHeader) + 8 * n;
  void* m = call(sys::nr_ftruncate, f.fd, static_cast<long>(size)) == 0 ? map(size, sys::prot_read | sys::prot_write, sys::map_shared, f.fd) : nullptr;
  if (!m) return discard(f), err.str("cannot size or map the counts file ").str(f.tmp), false;
  auto* h = static_cast<CountsHeader*>(m);
  memcpy(h->magic, counts_magic, 8);
  h->version = 1;
  h->header_size = sizeof(CountsHeader);
  h->count = n;
  h->pid = static_cast<u64>(call(sys::nr_getpid));
  h->table_vaddr = prepatch_config.table_vaddr;
  if (const long r = rename(f.tmp, f.path); r != 0) {
    call(sys::nr_munmap, reinterpret_cast<long>(m), static_cast<long>(size));
    return discard(f), err.str("cannot rename the counts file into place: ").str(f.path).str(": ").str(errno_text(r)), false;
  }
  call(sys::nr_close, f.fd);
  memcpy(g.counts_path, f.path, sizeof f.path);
  g.counts = reinterpret_cast<u64*>(h + 1);
  return true;
}

// True, with the reason in err, when a batch must not run now because some thread blocks SIGTRAP (an
// int3 would kill the process: the kernel forces a blocked SIGTRAP to its default action) or, when
// syncing by signals, blocks ctl_signal (it could never acknowledge).
//
// A thread being created or exiting blocks every signal for a moment (glibc's pthread_create and
// thread exit do), and a program that creates threads all the time nearly always has one such thread.
// So only a lasting block refuses: the same thread still blocking (or its mask still unreadable) after
// block_patience_ns, or blocked threads seen without a pause for block_limit_ns.
//
// A thread that also blocks one of glibc's own signals (32, SIGCANCEL; 33, SIGSETXID) is not waited
// for when only SIGTRAP matters: sigprocmask, pthread_sigmask and sigaction's sa_mask never block
// those, so glibc itself set that mask, for a moment in which it runs none of the program's code (a
// thread starting or exiting: fffffffefffbfeff). With 1,000 busy threads on 2 cores such a moment can
// outlast the patience.
constexpr i64 block_patience_ns = 500000000, block_limit_ns = 3000000000;
constexpr u64 glibc_internal_bits = 3ull << 31;

// Whether this process runs under a user-mode emulator such as qemu-user: its /proc/self/exe (which
// qemu answers for the program) differs from this thread's /proc/self/task/TID/exe (which it does not,
// naming qemu). /proc/self/task then lists the emulator's own threads too (qemu's RCU thread blocks
// every signal but the synchronous ones, for good) and shows host signal masks, while the emulator
// delivers the program's SIGTRAP itself: the check below cannot be made and is skipped for SIGTRAP.
// Found out when first asked (a batch or `status`), not at start.
bool emulated() {
  if (g.emulated) return g.emulated == 2;
  char exe[256], task_exe[256], path[64];
  Text p(path, sizeof path - 1);
  p.str("/proc/self/task/").num(static_cast<u64>(call(sys::nr_gettid))).str("/exe");
  path[p.size()] = 0;
  const long n = call(sys::nr_readlinkat, sys::at_fdcwd, reinterpret_cast<long>("/proc/self/exe"), reinterpret_cast<long>(exe), sizeof exe);
  const long m = call(sys::nr_readlinkat, sys::at_fdcwd, reinterpret_cast<long>(path), reinterpret_cast<long>(task_exe), sizeof task_exe);
  const bool yes = n > 0 && m > 0 && (n != m || memcmp(exe, task_exe, static_cast<size_t>(n)) != 0);
  g.emulated = yes ? 2 : 1;
  return yes;
}

bool threads_block_signals(Text& err) {
  const u64 needed = (traps && !emulated() ? sigtrap_bit | (sigill_at_sites ? sigill_bit : 0) : 0) | (g.use_signals ? ctl_bit : 0);
  if (!needed) return false;
  const i64 start = now_ns();
  const int self = static_cast<int>(call(sys::nr_gettid));
  int watched = 0;
  i64 watched_since = start;
  u64 watched_mask = 0;
  bool watched_unreadable = false, waiting = false;
  for (;;) {
    int culprit = 0;
    u64 culprit_mask = 0;
    bool culprit_unreadable = false, watched_still = false;
    const bool listed = for_each_thread([&](int tid) {
      u64 mask = 0;
      bool unreadable = false;
      if (!blocked_mask(tid, mask)) {
        if (call(sys::nr_tgkill, call(sys::nr_getpid), tid, 0) != 0) return;  // gone meanwhile
        unreadable = true;
      } else if (tid == self) {
        mask &= ~ctl_bit;  // never synced by a signal (and it blocks ctl_signal while it serves a request)
      }
      if (!unreadable && (!(mask & needed) || (!g.use_signals && (mask & glibc_internal_bits)))) {
        return;
      }
      if (tid == watched) watched_still = true, watched_mask = mask, watched_unreadable = unreadable;
      if (!culprit) culprit = tid, culprit_mask = mask, culprit_unreadable = unreadable;
    });
    if (!listed) return err.str("cannot list the threads in /proc/self/task"), true;
    const i64 now = now_ns();
    if (culprit && !waiting) waiting = true, g.stats.block_waits++;
    if (waiting && static_cast<u64>(now - start) > g.stats.block_wait_max_ns) g.stats.block_wait_max_ns = static_cast<u64>(now - start);
    if (!culprit) return false;
    if (!watched_still) watched = culprit, watched_mask = culprit_mask, watched_unreadable = culprit_unreadable, watched_since = now;
    if (now - watched_since > block_patience_ns || now - start > block_limit_ns) break;
    sys::Timespec pause{0, 100000};
    call(sys::nr_nanosleep, reinterpret_cast<long>(&pause), 0);
  }
  err.str("thread ").num(static_cast<u64>(watched));
  if (watched_unreadable)
    err.str(": cannot read its signal mask from /proc/self/task, so whether it blocks SIGTRAP is unknown; the batch is refused");
  else if (traps && (watched_mask & sigtrap_bit))
    err.str(" blocks SIGTRAP (SigBlk ").hex(watched_mask).str("): a thread that met a breakpoint mid-batch would be killed, so the batch is refused (docs/SHIM.md)");
  else if (sigill_at_sites && (watched_mask & sigill_bit))
    err.str(" blocks SIGILL (SigBlk ").hex(watched_mask).str("): a thread whose breakpoint the batch replaced as it trapped would be killed, so the batch is refused (docs/SHIM.md)");
  else
    err.str(" blocks signal 62 (SIGRTMAX-2), which the signal fallback needs to sync it; the batch is refused (docs/SHIM.md)");
  return true;
}

// ---- tracers ----------------------------------------------------------------------------------

// The trace file's writer state, in a page the kernel zeroes in a child after fork (MADV_WIPEONFORK):
// a child finds no file and creates its own at its first event.
struct Writer {
  u64 generation;      // of the open file, 0 when none
  TraceHeader* header;
  int fd;              // the file, to allocate its chunks
  bool allocate;       // chunks need fallocate (false: the file was sized whole, sparse)
  int creating;        // a thread is creating the file
};

// A thread known to the tracers, found by its thread pointer (%fs:0). One per thread for the life of
// the process; a dead thread's entry is taken over by the next thread glibc gives its thread block.
struct Thread {
  u64 key;  // the thread pointer, 0 while free
  u32 tid, pid;
  u64 generation;  // the trace file `chunk` lies in
  u8 *pos, *end;  // the next record's place in `chunk`, and the chunk's end
  u64 base;       // the chunk's TSC: graph records store their time as an offset from it
  ChunkHeader* chunk;
  u64 seq;
  ShadowStack shadow;
};
constexpr u64 max_threads = 4096, chunk_bytes = 256 * 1024, shadow_bytes = 1 << 20;
constexpr u64 glibc_tid_offset = 0x2d0;  // struct pthread's tid, where every x86-64 glibc keeps it

using sys::thread_pointer;

// A thread block for the time before the C library sets up its own (a static binary starts with no
// thread pointer, and %fs:0 must be readable by the tracers from the first instruction on).
#if defined(__x86_64__)
alignas(64) u8 early_tcb[0x300];
#endif

// The trace file's name for this process: PREPATCH_OUTPUT with %p replaced by the pid, or
// prepatch.PID.trace; a process forked from the one that started appends ".PID" to a PREPATCH_OUTPUT
// without %p (as for the counts file: its parent's file is its parent's, made now or later).
void trace_path(Text& t) {
  const u64 pid = static_cast<u64>(call(sys::nr_getpid));
  if (!g.output[0]) return void(t.str("prepatch.").num(pid).str(".trace"));
  bool had_pid = false;
  for (const char* p = g.output; *p; p++) {
    if (p[0] == '%' && p[1] == 'p') t.num(pid), p++, had_pid = true;
    else t.ch(*p);
  }
  if (pid != g.start_pid && !had_pid) t.ch('.').num(pid);
}

// Creates the trace file: written under a temporary name, then renamed into place, so a process
// still writing an older file of that name keeps a valid mapping. A file this process wrote before
// an exec keeps its name: this one becomes NAME.1 (or .2, ...). nullptr with the reason in err.
TraceHeader* create_trace(Writer& w, Text& err) {
  const u64 table_off = sizeof(TraceHeader), table_size = prepatch_config.table_size;
  const u64 chunk_off = (table_off + table_size + 4095) & ~u64{4095};
  if (g.buffer_bytes < chunk_off + chunk_bytes) return err.str("PREPATCH_BUFFER is too small to hold one chunk"), nullptr;
  const u64 capacity = (g.buffer_bytes - chunk_off) / chunk_bytes, size = chunk_off + capacity * chunk_bytes;
  NewFile f;
  if (!create_file(f, trace_magic, trace_path, "trace file", err)) return nullptr;
  const int fd = f.fd;
  // Blocks are allocated a chunk at a time (fallocate), so the file is as large as what was written;
  // where fallocate is not supported the file is sized once, sparse.
  w.allocate = call(sys::nr_fallocate, fd, 0, 0, static_cast<long>(chunk_off)) == 0;
  const bool ok = w.allocate || call(sys::nr_ftruncate, fd, static_cast<long>(size)) == 0;
  void* m = ok ? map(size, sys::prot_read | sys::prot_write, sys::map_shared, fd) : nullptr;
  if (!m) return discard(f), err.str("cannot size or map the trace file ").str(f.tmp), nullptr;
  auto* h = static_cast<TraceHeader*>(m);
  h->version = trace_version;
  h->header_size = sizeof(TraceHeader);
  h->tracer = static_cast<u32>(g.tracer);
  h->chunk_size = chunk_bytes;
  h->pid = static_cast<u64>(call(sys::nr_getpid));
  h->table_offset = table_off, h->table_size = table_size;
  h->chunk_offset = chunk_off, h->chunk_capacity = capacity;
  h->load_bias = g.bias;
  memcpy(reinterpret_cast<u8*>(h) + table_off, reinterpret_cast<const u8*>(prepatch_config.table_vaddr + g.bias), table_size);
  // The TSC's rate against CLOCK_MONOTONIC over 2 ms, once per process tree (a child after fork
  // keeps its parent's figure; docs/FORMAT.md).
  const i64 n0 = now_ns();
  const u64 c0 = sys::ticks();
  h->realtime0 = static_cast<u64>(clock_ns(0));
  h->tsc0 = c0, h->monotonic0 = static_cast<u64>(n0);
  if (!g.tsc_hz) {
    i64 n1 = n0;
    u64 c1 = c0;
    while (n1 - n0 < 2000000) n1 = now_ns(), c1 = sys::ticks();
    g.tsc_hz = (c1 - c0) * 1000000000 / static_cast<u64>(n1 - n0);
  }
  h->tsc_hz = g.tsc_hz;
  w.fd = fd;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  memcpy(h->magic, trace_magic, 8);  // last: a file with the magic has a whole header
  if (const long r = rename(f.tmp, f.path); r != 0) {
    call(sys::nr_munmap, reinterpret_cast<long>(m), static_cast<long>(size));
    return discard(f), err.str("cannot rename the trace file into place: ").str(f.path).str(": ").str(errno_text(r)), nullptr;
  }
  return h;
}

// The trace file of this process, created on the first call (in a child after fork, at its first
// event). nullptr when it cannot be, or while another thread creates it.
TraceHeader* trace_file(Text* err) {
  Writer* w = g.writer;
  if (__atomic_load_n(&w->generation, __ATOMIC_ACQUIRE)) return w->header;
  if (__atomic_exchange_n(&w->creating, 1, __ATOMIC_ACQUIRE)) return nullptr;
  char ebuf[256];
  Text local(ebuf, sizeof ebuf - 1);
  TraceHeader* h = create_trace(*w, err ? *err : local);
  if (h) {
    w->header = h;
    __atomic_store_n(&w->generation, ++g.generation, __ATOMIC_RELEASE);
  } else if (!err) {
    ebuf[local.size()] = 0;
    say("tracing: ", ebuf);
  }
  __atomic_store_n(&w->creating, 0, __ATOMIC_RELEASE);
  return h;
}

// The calling thread's entry: looked up by thread pointer; claimed on its first event. A thread whose
// tid differs from the entry's is a new thread in a reused thread block (the old thread's frames are
// dead) or this thread in a child after fork (its frames are alive: the child returns through them).
Thread* this_thread() {
  const u64 tp = thread_pointer();
  u64 i = (tp * site_hash_mult >> 40) & (max_threads - 1);
  for (u64 probes = 0; probes < max_threads; probes++, i = (i + 1) & (max_threads - 1)) {
    Thread* t = &g.threads[i];
    const u64 key = __atomic_load_n(&t->key, __ATOMIC_ACQUIRE);
    if (key == tp) {
      if (g.tid_in_tcb == 1 && *reinterpret_cast<const u32*>(tp + glibc_tid_offset) != t->tid) {
        const u32 pid = static_cast<u32>(call(sys::nr_getpid));
        if (pid == t->pid) {  // a new thread: the old one's frames are dead
          if (TraceHeader* h = g.writer->header) __atomic_fetch_add(&h->unwound, t->shadow.depth, __ATOMIC_RELAXED);
          t->shadow.depth = 0;
        }
        t->tid = static_cast<u32>(call(sys::nr_gettid)), t->pid = pid, t->generation = 0;  // a new chunk, tagged with the tid
      }
      return t;
    }
    if (key != 0) continue;
    u64 expected = 0;
    if (!__atomic_compare_exchange_n(&t->key, &expected, tp, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      if (expected == tp) return t;
      continue;
    }
    t->tid = static_cast<u32>(call(sys::nr_gettid));
    t->pid = static_cast<u32>(call(sys::nr_getpid));
    if (g.tid_in_tcb == 0) g.tid_in_tcb = *reinterpret_cast<const u32*>(tp + glibc_tid_offset) == t->tid ? 1 : -1;
    return t;
  }
  return nullptr;
}

// Moves the thread to a fresh chunk of the current file, based at TSC `now`, its records starting at
// call depth `depth` (graph); false when there is none (the event is lost).
bool next_chunk(Thread* t, u64 now, u64 depth) {
  TraceHeader* h = trace_file(nullptr);
  if (!h) return false;
  const u64 k = __atomic_fetch_add(&h->chunks_claimed, 1, __ATOMIC_RELAXED);
  const u64 off = h->chunk_offset + k * chunk_bytes;
  const Writer* w = g.writer;
  if (k >= h->chunk_capacity || (w->allocate && call(sys::nr_fallocate, w->fd, 0, static_cast<long>(off), chunk_bytes) != 0)) {
    t->generation = 0;  // a full file (or disk): this thread's later events are lost too, and counted
    return false;
  }
  auto* c = reinterpret_cast<ChunkHeader*>(reinterpret_cast<u8*>(h) + off);
  // The chunk's pages, allocated in one call rather than one page fault each (measured: the faults
  // were a third of graph's cost per call). Kernels before 5.14 refuse; the faults then do it.
  call(sys::nr_madvise, reinterpret_cast<long>(c), chunk_bytes, 23 /* MADV_POPULATE_WRITE */);
  c->tid = t->tid;
  c->seq = t->generation == g.writer->generation ? t->seq + 1 : 0;
  c->used = 0;
  c->tsc = now;
  c->depth = depth;
  __atomic_store_n(&c->magic, chunk_magic, __ATOMIC_RELEASE);
  t->seq = c->seq;
  t->chunk = c;
  t->base = now;
  t->pos = reinterpret_cast<u8*>(c + 1);
  t->end = reinterpret_cast<u8*>(c) + chunk_bytes;
  t->generation = g.writer->generation;
  return true;
}

// An event that could not be written, counted in the file (when there is one yet).
void count_lost() {
  if (TraceHeader* h = g.writer->header) __atomic_fetch_add(&h->lost, 1, __ATOMIC_RELAXED);
}

// Appends a record (shim/abi.h: 16 bytes for a call, 8 for graph's entry, exit and unwound, whose `rest`
// is the depth the file does not store); the chunk's `used` covers it once it is whole.
void emit(Thread* t, u64 type, u64 site, u64 rest) {
  const u64 now = sys::ticks();
  const bool graph = type != rec_call;
  const u64 size = graph ? 8 : 16;
  const u64 gen = __atomic_load_n(&g.writer->generation, __ATOMIC_ACQUIRE);
  // No file yet (a child after fork), another file, a full chunk, or a time too far from the chunk's.
  if (gen == 0 || t->generation != gen || static_cast<u64>(t->end - t->pos) < size || (graph && now - t->base >= rec_rest_limit)) {
    if (!next_chunk(t, now, graph ? (type == rec_entry ? rest : rest + 1) : 0)) return count_lost();
  }
  auto* r = reinterpret_cast<u64*>(t->pos);
  if (graph) {
    r[0] = type | site << rec_site_shift | (now - t->base) << rec_rest_shift;
  } else {
    r[0] = now;
    r[1] = type | site << rec_site_shift | rest << rec_rest_shift;
  }
  t->pos += size;
  __atomic_store_n(&t->chunk->used, static_cast<u64>(t->pos - reinterpret_cast<u8*>(t->chunk + 1)), __ATOMIC_RELEASE);
}

// A frame the thread left without returning through it (its top frame, about to be dropped).
void note_unwound(Thread* t, const ShadowFrame& f) {
  emit(t, rec_unwound, f.site, t->shadow.depth - 1);
  if (TraceHeader* h = g.writer->header) __atomic_fetch_add(&h->unwound, 1, __ATOMIC_RELAXED);
}

// Resolves a return through the exit trampoline that has no frame: nothing sane is left to return to.
[[noreturn]] void lost_return() {
  say("graph: a return through the exit trampoline has no shadow frame (did the thread switch stacks?); aborting");
  raise_default(6 /* SIGABRT */);
  for (;;) call(60 /* exit */, 134);  // SIGABRT was blocked
}

// ---- exceptions (graph) ------------------------------------------------------------------------

// A C++ exception's unwinder finds each caller by its return address, and a return address that is the
// exit trampoline has no unwind information: the unwinder would give up and std::terminate. So the
// graph tracer hooks the unwinder's entry points in every loaded object's GOT. When unwinding starts
// (or resumes after a cleanup), the thread's live frames get their real return addresses back; when a
// handler catches, the frames below it are dropped as unwound and the live ones are hooked again.

// The part of an object's PT_GNU_RELRO the dynamic linker made read-only, as page bounds; {0, 0}
// when it has none, and false when its program headers cannot be found.
bool relro_pages(const LinkMap* m, bool main, u64& lo, u64& hi) {
  const u8* phdr = g.phdr;
  u64 phnum = g.phnum;
  if (!main) {  // a shared object maps its ELF header at its bias
    const u8* e = reinterpret_cast<const u8*>(m->addr);
    if (!e || load_le(e, 4) != 0x464c457f || e[4] != elfc::elf_class) return false;
    phdr = e + load_le(e + elfc::e_phoff, elfc::word), phnum = load_le(e + elfc::e_phnum, 2);
  }
  lo = hi = 0;
  if (const u8* ph = find_phdr(phdr, phnum, 0x6474e552 /* PT_GNU_RELRO */)) {
    const u64 start = m->addr + load_le(ph + elfc::p_vaddr, elfc::word);
    lo = start & ~u64{4095}, hi = (start + load_le(ph + elfc::p_memsz, elfc::word)) & ~u64{4095};
  }
  return true;
}

#if defined(__x86_64__)
// The entry points a binary defines itself (static, -static-libgcc, -static-libstdc++) are called
// directly: each one's first instructions (Config::unwinder_len bytes, found movable by the preparer)
// are copied to an executable page, followed by a jump back, and a jump to the hook replaces them; the
// hook goes on to the copy. At start, while no other thread runs. False, with the reason in
// g.unwind_unhooked, when they cannot all be hooked.
bool hook_unwinder_in_place(u8* const* hooks) {
  const Config& c = prepatch_config;
  for (unsigned k = 0; k < 4; k++)
    if (c.unwinder[k] && !c.unwinder_len[k]) return g.unwind_unhooked = "the binary's own unwinder starts with instructions that cannot be moved", false;
  auto* copies = static_cast<u8*>(map(4096, sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1));
  if (!copies) return g.unwind_unhooked = "cannot map a page for the unwinder's hooks", false;
  for (unsigned k = 0; k < 4; k++) {
    if (!c.unwinder[k]) continue;
    const u64 f = c.unwinder[k] + g.bias, n = c.unwinder_len[k];
    const i64 rel = static_cast<i64>(reinterpret_cast<u64>(hooks[k]) - (f + 5));
    if (rel != static_cast<int>(rel)) return g.unwind_unhooked = "the binary's own unwinder is out of a jump's reach of the shim", false;
    u8* copy = copies + 48 * k;  // n <= 19 bytes, then jmp *0(%rip) and the address: at most 33
    memcpy(copy, reinterpret_cast<const u8*>(f), n);
    const u8 jmp[6] = {0xff, 0x25, 0, 0, 0, 0};
    memcpy(copy + n, jmp, 6);
    const u64 back = f + n;
    memcpy(copy + n + 6, &back, 8);
    prepatch_unwind_real[k] = reinterpret_cast<u64>(copy);
  }
  if (call(sys::nr_mprotect, reinterpret_cast<long>(copies), 4096, sys::prot_read | sys::prot_exec) != 0)
    return g.unwind_unhooked = "cannot make the unwinder hooks' page executable", false;
  for (unsigned k = 0; k < 4; k++) {
    if (!c.unwinder[k]) continue;
    const u64 f = c.unwinder[k] + g.bias;
    const u8* load = find_phdr(g.phdr, g.phnum, 1 /* PT_LOAD */, c.unwinder[k]);
    const int prot = load ? prot_of(static_cast<u32>(load_le(load + 4, 4))) : sys::prot_read | sys::prot_exec;
    const int rel = static_cast<int>(reinterpret_cast<u64>(hooks[k]) - (f + 5));
    u8 jump[5] = {0xe9};
    memcpy(jump + 1, &rel, 4);
    if (!while_writable(f, 5, prot, [&] { memcpy(reinterpret_cast<u8*>(f), jump, 5); }))
      return g.unwind_unhooked = "cannot make the binary's own unwinder writable to hook it", false;
    g.unwind_in_place++;
  }
  return true;
}

#endif  // the graph tracer's in-place exception hooks: x86-64 only

// The loader's list of the loaded objects (r_debug, through the program's DT_DEBUG), or nullptr: a
// static or static-pie program, or no DT_DEBUG. `dynamic`: whether the program has a PT_DYNAMIC.
const RDebug* loaded_objects(bool* dynamic = nullptr) {
  const u8* dyn_ph = find_phdr(g.phdr, g.phnum, 2 /* PT_DYNAMIC */);
  if (dynamic) *dynamic = dyn_ph != nullptr;
  const u8* dyn = dyn_ph ? reinterpret_cast<const u8*>(load_le(dyn_ph + elfc::p_vaddr, elfc::word) + g.bias) : nullptr;
  const auto* r = dyn ? reinterpret_cast<const RDebug*>(read_dynamic(g.bias, dyn).debug) : nullptr;
  return r && r->map ? r : nullptr;
}

// Points every GOT slot through which a loaded object calls names[k] (k < n) at hooks[k], RELRO slots
// included, for each k whose real[k] (the definition the hook goes on to) is known; how many.
template <class Names>
u64 hook_imports(const RDebug* r, const Names& names, unsigned n, u8* const* hooks, const u64* real) {
  u64 hooked = 0;
  for (const LinkMap* m = r->map; m; m = m->next) {
    u64 lo, hi;
    const bool known = relro_pages(m, m == r->map, lo, hi);
    for_each_import(read_dynamic(m->addr, m->ld), names, n, [&](uptr* slot, unsigned k) {
      const uptr hook = reinterpret_cast<uptr>(hooks[k]), page = reinterpret_cast<uptr>(slot) & ~uptr{4095};
      if (!real[k] || !known || __atomic_load_n(slot, __ATOMIC_RELAXED) == hook) return;
      const auto store = [&] { __atomic_store_n(slot, hook, __ATOMIC_RELAXED); };
      if (page >= lo && page < hi) {  // RELRO: read-only since start-up
        if (!while_writable(reinterpret_cast<uptr>(slot), sizeof *slot, sys::prot_read, store)) return;
      } else {
        store();
      }
      hooked++;
    });
  }
  return hooked;
}

// The first definition of `name` in the loaded objects, run-time address; 0 when none.
u64 find_loaded(const RDebug* r, const char* name) {
  u64 f = 0;
  for (const LinkMap* m = r ? r->map : nullptr; m && !f; m = m->next) f = find_definition(read_dynamic(m->addr, m->ld), name);
  return f;
}

#if defined(__x86_64__)
// Hooks the entry points the binary defines in place, and points every GOT slot through which a loaded
// object calls one of the others at its hook; once, at start (objects loaded later by dlopen are not
// hooked). Notes in g.unwind_unhooked why exceptions are not followed.
void hook_unwinder() {
  u8* const hooks[4] = {prepatch_hook_raise, prepatch_hook_resume, prepatch_hook_rethrow, prepatch_hook_catch};
  const Config& c = prepatch_config;
  if ((c.unwinder[0] | c.unwinder[1] | c.unwinder[2] | c.unwinder[3]) && !hook_unwinder_in_place(hooks)) return;
  bool dynamic = false;
  const RDebug* r = loaded_objects(&dynamic);
  // Static (or static-pie, whose r_debug lists nothing): with its own unwinder, all of it is hooked.
  if (!r) {
    if (!c.unwinder[0])
      g.unwind_unhooked = dynamic ? "the program has no DT_DEBUG, so its loaded objects cannot be listed" : "a static binary without an unwinder";
    return;
  }
  for (unsigned k = 0; k < 4; k++)  // those hooked in place go on to their copies already
    if (!prepatch_unwind_real[k]) prepatch_unwind_real[k] = find_loaded(r, unwinder_names[k]);
  if (!prepatch_unwind_real[0]) return void(g.unwind_unhooked = "no loaded object defines _Unwind_RaiseException");
  g.unwind_got = hook_imports(r, unwinder_names, 4, hooks, prepatch_unwind_real);
}
#endif  // the graph tracer's exception hooks: x86-64 only

// ---- PREPATCH_WX=strict ------------------------------------------------------------------------
//
// The text spans of the sites are copied into a memfd and mapped from it over themselves (shared, with
// the segment's protection): the same bytes, now also reachable through a second mapping of the memfd,
// which a batch maps writable at an address of the kernel's choosing and unmaps when done. No page is
// ever writable and executable at once. A forked child would share the memfd, and so each other's
// toggles: glibc's fork handlers give both processes their own copy (below, "fork").

// Copies the spans as they are now into a new memfd and maps it over them; nullptr, or why not. A
// failure leaves the text as it was (the kernel's checks run before a MAP_FIXED mapping replaces
// anything, and a probe mapping of the memfd, executable, comes first).
const char* wx_remap() {
  long fd = call(sys::nr_memfd_create, reinterpret_cast<long>("prepatch-text"), sys::mfd_cloexec | sys::mfd_exec);
  if (fd == -sys::einval) fd = call(sys::nr_memfd_create, reinterpret_cast<long>("prepatch-text"), sys::mfd_cloexec);  // before 6.3
  if (fd < 0) return "cannot create a memfd for the text";
  const char* why = call(sys::nr_ftruncate, fd, static_cast<long>(g.wx_size)) != 0 ? "cannot size the text's memfd" : nullptr;
  for (unsigned k = 0; k < g.text_spans && !why; k++) {
    const State::TextSpan& t = g.text[k];
    for (u64 done = 0; done < t.hi - t.lo && !why;) {
      const long w = call(sys::nr_pwrite64, fd, static_cast<long>(t.lo + done), static_cast<long>(t.hi - t.lo - done), static_cast<long>(t.off + done));
      if (w == -sys::eintr) continue;
      if (w <= 0) why = "cannot copy the text into its memfd";
      else done += static_cast<u64>(w);
    }
  }
  if (!why) {
    void* probe = map(g.wx_size, sys::prot_read | sys::prot_exec, sys::map_shared, static_cast<int>(fd));
    if (!probe) why = "the kernel refuses to map a memfd executable (vm.memfd_noexec, a security module)";
    else call(sys::nr_munmap, reinterpret_cast<long>(probe), static_cast<long>(g.wx_size));
  }
  for (unsigned k = 0; k < g.text_spans && !why; k++) {
    const State::TextSpan& t = g.text[k];
    if (call(sys::nr_mmap, static_cast<long>(t.lo), static_cast<long>(t.hi - t.lo), t.prot, sys::map_shared | sys::map_fixed, fd,
             static_cast<long>(t.off)) != static_cast<long>(t.lo))
      why = "cannot map the text's memfd over the text";
  }
  if (why) return call(sys::nr_close, fd), why;
  if (g.wx_mapped) call(sys::nr_close, g.wx_fd);
  g.wx_fd = static_cast<int>(fd), g.wx_mapped = true;
  return nullptr;
}

// PREPATCH_WX=strict, at start (no other thread runs): moves the text onto its memfd. Without the fork
// handlers (a static program), the program must be one that cannot fork through glibc.
void wx_start(bool fork_handlers) {
  if (!fork_handlers && !(prepatch_config.flags & config_forkless))
    return void(g.disabled = "PREPATCH_WX=strict: the program may fork, and its forks cannot be followed (no __register_atfork: a static binary)");
  if (!ensure_table()) return;
  if (!ensure_sites()) return void(g.disabled = "cannot map the site states");
  for (unsigned k = 0; k < g.text_spans; k++) g.text[k].off = g.wx_size, g.wx_size += g.text[k].hi - g.text[k].lo;
  if (!g.wx_size) return;  // no site in an executable segment: no batch will ever write
  if (const char* why = wx_remap()) g.disabled = why;
}

// ---- alternate signal stacks -------------------------------------------------------------------
//
// The trap handler runs on an alternate signal stack (SA_ONSTACK), so a thread whose own stack is
// (nearly) used up still gets its int3 resolved: the kernel needs AT_MINSIGSTKSZ bytes (3 KiB with
// AVX-512) for the signal frame alone. The starting thread gets one at start; in a dynamic program,
// every thread started through pthread_create (the GOT slots of the loaded objects, hooked at start)
// gets one before its start routine runs, freed by a pthread key's destructor when it ends (returns,
// pthread_exit, cancellation). A thread that has one already (the program's own) keeps it.
constexpr u64 altstack_bytes = 64 << 10;  // above a guard page; the top 16 bytes hold the start routine
constexpr u64 altstack_region = 4096 + altstack_bytes;  // a region: the guard page and the stack

struct ThreadStart {
  void* (*start)(void*);
  void* arg;
};

ThreadStart* thread_start(u8* region) { return reinterpret_cast<ThreadStart*>(region + altstack_region) - 1; }

void lock_stacks() {
  while (__atomic_exchange_n(&g.stack_lock, 1, __ATOMIC_ACQUIRE)) sys::cpu_relax();
}
void unlock_stacks() { __atomic_store_n(&g.stack_lock, 0, __ATOMIC_RELEASE); }

// A guard page and an alternate signal stack above it, from the cache or new; nullptr when there is
// no memory.
u8* altstack_map() {
  lock_stacks();
  u8* m = g.stacks_cached ? g.stack_cache[--g.stacks_cached] : nullptr;
  unlock_stacks();
  if (m) return m;
  m = static_cast<u8*>(map(altstack_region, sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1));
  if (m && call(sys::nr_mprotect, reinterpret_cast<long>(m), 4096, 0) != 0)
    call(sys::nr_munmap, reinterpret_cast<long>(m), static_cast<long>(altstack_region)), m = nullptr;
  return m;
}

// Gives a stack no thread uses back: to the cache, or unmapped when the cache is full.
void altstack_unmap(u8* region) {
  lock_stacks();
  const bool cached = g.stacks_cached < sizeof g.stack_cache / sizeof g.stack_cache[0];
  if (cached) g.stack_cache[g.stacks_cached++] = region;
  unlock_stacks();
  if (!cached) call(sys::nr_munmap, reinterpret_cast<long>(region), static_cast<long>(altstack_region));
}

// Makes `region` (altstack_map) the calling thread's alternate signal stack, unless it has one.
bool altstack_install(u8* region) {
  sys::StackT cur{};
  if (call(sys::nr_sigaltstack, 0, reinterpret_cast<long>(&cur)) != 0 || !(cur.flags & sys::ss_disable)) return false;
  sys::StackT ss{region + 4096, 0, altstack_bytes - sizeof(ThreadStart)};
  return call(sys::nr_sigaltstack, reinterpret_cast<long>(&ss), 0) == 0;
}

// The pthread key's destructor, as the thread ends: stops using the region, unless the thread is on it
// (pthread_exit from a handler running there), and gives it back.
void altstack_free(void* p) {
  auto* region = static_cast<u8*>(p);
  sys::StackT cur{};
  call(sys::nr_sigaltstack, 0, reinterpret_cast<long>(&cur));
  if (cur.sp == region + 4096) {
    if (cur.flags & sys::ss_onstack) return;
    sys::StackT off{nullptr, sys::ss_disable, 0};
    call(sys::nr_sigaltstack, reinterpret_cast<long>(&off), 0);
  }
  altstack_unmap(region);
}

// Gives the starting thread its alternate signal stack, and hooks pthread_create where a loaded
// object calls it (with glibc's pthread key functions found); at start. Returns the GOT slots hooked.
u64 give_threads_altstacks() {
  if (u8* region = altstack_map(); region && !altstack_install(region)) altstack_unmap(region);
  const RDebug* r = loaded_objects();
  const auto key_create = reinterpret_cast<int (*)(u32*, void (*)(void*))>(find_loaded(r, "pthread_key_create"));
  g.pthread_setspecific = reinterpret_cast<decltype(g.pthread_setspecific)>(find_loaded(r, "pthread_setspecific"));
  const u64 create = find_loaded(r, "pthread_create");
  if (!create || !key_create || !g.pthread_setspecific || key_create(&g.pthread_key, altstack_free) != 0) return 0;
  g.pthread_create = reinterpret_cast<decltype(g.pthread_create)>(create);
  static constexpr char names[1][15] = {"pthread_create"};
  u8* const hooks[1] = {reinterpret_cast<u8*>(&prepatch_hook_pthread_create)};
  return hook_imports(r, names, 1, hooks, &create);
}

// ---- fork ---------------------------------------------------------------------------------------
//
// glibc's fork handlers, registered at start in a dynamic program: a fork waits for a running batch
// and holds the batch lock across the fork, so the child never starts with half a batch written (and
// its lock held for good); under PREPATCH_WX=strict, neither process writes the shared memfd before
// it has one of its own. (A fork from a signal handler that interrupted this thread's own batch cannot
// wait for it: it goes on without.)

void fork_prepare() {
  const int self = static_cast<int>(call(sys::nr_gettid));
  while (!(g.fork_locked = take_batch_lock()) && __atomic_load_n(&g.busy_tid, __ATOMIC_RELAXED) != self) {
    sys::Timespec pause{0, 100000};
    call(sys::nr_nanosleep, reinterpret_cast<long>(&pause), 0);
  }
  lock_stacks();  // held for a moment only: the cache of signal stacks is whole in the child
}

// After the fork, in each process: under PREPATCH_WX=strict it moves to a memfd of its own (without
// one it must not write its text again: the shim disables itself); then batches may run.
void after_fork(bool child) {
  if (child) g.serving = 0, g.burst = 0;  // a request another thread was serving is the parent's
  if (g.wx_mapped && (child || g.fork_locked) && wx_remap())
    g.disabled = "PREPATCH_WX=strict: after a fork, this process could not get its own copy of the text";
  if (g.fork_locked) g.fork_locked = false, drop_batch_lock();
  unlock_stacks();
}
void fork_parent() { after_fork(false); }
void fork_child() { after_fork(true); }

// Registers the fork handlers with glibc's __register_atfork, found in the loaded objects (libc is up
// by the time the program's entry runs); false in a static program, where it cannot be called.
bool register_fork_handlers() {
  using RegisterAtfork = int (*)(void (*)(), void (*)(), void (*)(), void*);
  const auto register_atfork = reinterpret_cast<RegisterAtfork>(find_loaded(loaded_objects(), "__register_atfork"));
  return register_atfork && register_atfork(fork_prepare, fork_parent, fork_child, nullptr) == 0;
}

bool ensure_tracing(Text& err) {
  const u64 n = g.table.count();
  if (!prepatch_hash) {
    const u64 mask = site_hash_mask(n);
    void* m = map(site_hash_size(mask) * sizeof(SiteHashSlot), sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1);
    if (!m) return err.str("cannot map the site hash"), false;
    prepatch_hash_mask = mask;
    __atomic_store_n(&prepatch_hash, static_cast<SiteHashSlot*>(m), __ATOMIC_RELEASE);
  }
  if (g.tracer == Tracer::count) return ensure_counts(err);
  if (n >= rec_site_limit) return err.str("the function and graph tracers record at most 16777216 sites"), false;
  if (!g.threads) {
    void* t = map(max_threads * sizeof(Thread), sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1);
    void* w = map(4096, sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1);
    if (!t || !w || call(sys::nr_madvise, reinterpret_cast<long>(w), 4096, 18 /* MADV_WIPEONFORK */) != 0)
      return err.str("cannot map the tracer's thread table"), false;
    g.writer = static_cast<Writer*>(w);
    g.threads = static_cast<Thread*>(t);
  }
  return trace_file(&err) != nullptr;
}

struct Outcome {
  u64 matched = 0, changed = 0;
  bool ok = false;
  bool busy = false;  // refused only because another batch runs: the reply says `busy:`, and ctl asks again
};

// Switches every site whose function matches `include` and not `exclude` to `on`. The reason for a
// refusal goes to `err`.
Outcome toggle(GlobList include, GlobList exclude, bool on, Text& err) {
  Outcome o;
  if (g.disabled) return err.str("the shim is disabled: ").str(g.disabled), o;
  BatchLock lock;
  if (!lock.held) return o.busy = true, err.str("busy: another batch is running; try again"), o;
  if (!ensure_table()) return err.str(g.disabled), o;
  const u64 n = g.table.count();
  if (!ensure_sites()) return err.str("cannot map the site states"), o;
  if (on && !ensure_tracing(err)) return o;
  if (threads_block_signals(err)) return g.stats.refused++, o;
  if (traps) ensure_handler();
  const char* outside = nullptr;
  const bool all = include.matches_all() && exclude.empty();  // no name to read
  NameForms names(batch_demangler, batch_names_out, sizeof batch_names_out);
  for (u64 i = 0; i < n; i++) {
    if (!all && (!names.matches(include, g.table.name(i)) || names.matches(exclude, g.table.name(i)))) continue;
    o.matched++;
    if ((g.site[i] & site_on) == on) continue;
    if (g.site[i] & site_outside) {
      outside = g.table.name(i);
      continue;
    }
    const SiteEntry e = g.table.entry(i);
    State::BatchEntry& b = g.batch[o.changed];
    b.addr = e.addr + g.bias, b.len = e.length;
    if (!site_form(sys::machine, on, b.addr, e.length, e.call_form, g.tramp[e.kind - 1], b.target)) continue;
    if (on && !site_hash_insert(prepatch_hash, prepatch_hash_mask, b.addr + e.length,
                                g.tracer == Tracer::count ? reinterpret_cast<u64>(&g.counts[i]) : i))
      continue;  // cannot happen at a load factor of one half short of a pathological address pattern
    g.site[i] = static_cast<u8>(on | site_in_batch);  // the handler emulates site_on from the moment the int3 is there
    o.changed++;
  }
  const auto call_off = [&] {  // the batch will not run: its sites keep their form
    for (u64 i = 0; i < n; i++)
      if (g.site[i] & site_in_batch) g.site[i] = static_cast<u8>(!on);
  };
  if (outside) return call_off(), err.str("the site of ").str(outside).str(" lies outside every executable segment; the batch is refused"), o;
  if (o.changed) {
    TextWritable text;
    if (!text.ok) return call_off(), err.str(g.wx_strict ? "cannot map the text's memfd writable" : "cannot make the sites' text writable (mprotect failed)"), o;
    TextMemory mem{text.alias};
    BatchSites sites{o.changed};
    g.stats.writes += run_batch(sys::isa, sites, mem);
    g.stats.batches++;
  }
  for (u64 i = 0; i < n; i++) g.site[i] &= ~site_in_batch;
  o.ok = true;
  return o;
}

// ---- the control channel -----------------------------------------------------------------------
//
// docs/SHIM.md "The control channel" and SECURITY.md: who may drive a process, what a request file
// must be before it is read, how replies are written, and what a flood of requests costs.

// At most this many requests are answered, one after the other, while more are queued behind them
// (a burst); later ones are dropped unread until the queue has been empty once. One at a time in any
// case: a request arriving while another is served is dropped too. A dropped request's client signals
// again (prepatch ctl does, every 250 ms, until its timeout).
constexpr u32 ctl_burst = 16;

u32 euid() { return static_cast<u32>(call(sys::nr_geteuid)); }

// Whether this process takes requests from root alone: its user ids differ (set-id privileges kept
// in the saved id, or dropped for a while), or it made itself non-dumpable (PR_SET_DUMPABLE 0), which
// keeps even its own user's debuggers out.
bool root_only() {
  u32 ids[3] = {};
  if (call(sys::nr_getresuid, reinterpret_cast<long>(&ids[0]), reinterpret_cast<long>(&ids[1]), reinterpret_cast<long>(&ids[2])) != 0) return true;
  return ids[0] != ids[1] || ids[2] != ids[1] || call(sys::nr_prctl, 3 /* PR_GET_DUMPABLE */) != 1;
}

// "PID.ID" and a suffix: a request's or its reply's name in the channel's directory.
void channel_name(Text& t, u32 id, const char* suffix) {
  t.num(static_cast<u64>(call(sys::nr_getpid))).ch('.').num(id).str(suffix).ch(0);
}

// The channel's directory, /tmp/prepatch-EUID, opened without following a symbolic link; -1 when it is
// missing or not this user's alone (channel_dir_safe). Every request and reply is then opened
// relative to it, so the directory cannot be swapped for another between the check and the use.
int open_channel_dir() {
  char path[64];
  Text p(path, sizeof path);
  p.str(ctl_dir_prefix).num(euid()).ch(0);
  const int fd = static_cast<int>(call(sys::nr_openat, sys::at_fdcwd, reinterpret_cast<long>(path),
                                       sys::o_rdonly | sys::o_directory | sys::o_nofollow | sys::o_cloexec));
  if (fd < 0) return -1;
  sys::Stat st{};
  if (call(sys::nr_fstat, fd, reinterpret_cast<long>(&st)) == 0 && channel_dir_safe(st.mode, st.uid, euid())) return fd;
  call(sys::nr_close, fd);
  return -1;
}

// Reads request `name` in directory `dir` into buf (ctl_max_request bytes) and removes it, so that a
// signal repeating the same id finds nothing to do. Opened without following a symbolic link or
// waiting for a FIFO's writer; read only when request_file_problem finds nothing wrong. Its length,
// -enoent when there is no such request, or -1 with the reason in err.
long read_request(int dir, const char* name, char* buf, Text& err) {
  const long fd = call(sys::nr_openat, dir, reinterpret_cast<long>(name),
                       sys::o_rdonly | sys::o_nofollow | sys::o_nonblock | sys::o_noctty | sys::o_cloexec);
  if (fd == -sys::enoent) return fd;
  long n = -1;
  if (fd < 0) {
    err.str(fd == -sys::eloop ? "the request is a symbolic link" : "cannot open the request file: ").str(fd == -sys::eloop ? "" : errno_text(fd));
  } else {
    sys::Stat st{};
    const char* why = call(sys::nr_fstat, fd, reinterpret_cast<long>(&st)) != 0
                          ? "cannot stat the request file"
                          : request_file_problem(st.mode, st.nlink, st.uid, static_cast<i64>(st.size), euid(), root_only());
    if (why) err.str(why);
    else if ((n = call(sys::nr_read, fd, reinterpret_cast<long>(buf), ctl_max_request)) < 0) err.str("cannot read the request file");
    call(sys::nr_close, fd);
  }
  call(sys::nr_unlinkat, dir, reinterpret_cast<long>(name), 0);
  return n;
}

// A reply written straight to its file, a buffer at a time: created under an unpredictable temporary
// name in the channel's directory (0600, exclusively), renamed to PID.ID.reply when whole.
class Reply {
 public:
  Reply(int dir, u32 id) : dir_(dir), id_(id) {
    char name[64];
    Text n(name, sizeof name);
    channel_name(n, id, ".reply");
    fd_ = static_cast<int>(create_temporary(dir, name, tmp_, sizeof tmp_, 0600));
  }
  Text& line() {
    flush();
    return t_;
  }
  void flush() {
    if (fd_ >= 0 && t_.size()) sys::write_all(fd_, t_.data(), t_.size());
    t_ = Text(buf_, sizeof buf_);
  }
  ~Reply() {
    if (fd_ < 0) return;
    flush();
    call(sys::nr_close, fd_);
    char name[64];
    Text n(name, sizeof name);
    channel_name(n, id_, ".reply");
    if (rename(tmp_, name, dir_) != 0) call(sys::nr_unlinkat, dir_, reinterpret_cast<long>(tmp_), 0);
  }

 private:
  int dir_;
  u32 id_;
  int fd_ = -1;
  char tmp_[96];
  char buf_[4096 + 64];  // a line: `enabled NAME COUNT`, NAME up to 4096 bytes
  Text t_{buf_, sizeof buf_};
};

void reply_status(Reply& r, bool mangled) {
  ensure_table();
  const u64 n = g.table_state == 1 ? g.table.count() : 0;
  u64 enabled = 0;
  for (u64 i = 0; g.site && i < n; i++) enabled += g.site[i] & site_on;
  r.line().str("ok: pid ").num(static_cast<u64>(call(sys::nr_getpid))).str(", ").num(enabled).str(" of ").num(n).str(" sites enabled\n");
  r.line().str("sync: ").str(g.use_signals          ? "signals (membarrier SYNC_CORE unavailable or PREPATCH_SYNC=signal)"
                             : g.use_flush_icache ? "riscv_flush_icache (membarrier SYNC_CORE unavailable or PREPATCH_SYNC=flush_icache)"
                                                  : "membarrier").ch('\n');
  if (g.wx_strict) r.line().str("wx: strict, ").num(g.wx_size >> 10).str(" KiB of text mapped from a memfd, written through a mapping made for each batch\n");
  else r.line().str("wx: default, the sites' text is writable and executable while a batch runs\n");
  const Stats& s = g.stats;
  r.line().str("batches ").num(s.batches).str(", syncs ").num(s.syncs).str(", writes ").num(s.writes).str(", protection changes ").num(s.protections)
      .str(", traps resolved ").num(s.traps).str(", refused ").num(s.refused).str(", sync timeouts ").num(s.sync_timeouts).ch('\n');
  r.line().str("waits for threads blocking signals ").num(s.block_waits).str(", longest ").num(s.block_wait_max_ns / 1000000).str(" ms\n");
  r.line().str("requests: ").num(s.requests).str(" answered before this one, ").num(s.requests_dropped).str(" dropped (one at a time, at most ")
      .num(ctl_burst).str(" of a burst), ").num(s.requests_refused).str(" refused (request file or directory unsafe), longest ")
      .num(s.request_max_ns / 1000).str(" us; from ").str(root_only() ? "root only" : "this user and root").ch('\n');
  if (traps && emulated()) r.line().str("emulated: under a user-mode emulator (qemu-user), threads blocking SIGTRAP are not looked for\n");
  if (g.disabled) r.line().str("disabled: ").str(g.disabled).ch('\n');
  Text& tracer = r.line().str("tracer: ").str(g.tracer == Tracer::graph ? "graph" : g.tracer == Tracer::function ? "function" : "count");
  if (g.tracer == Tracer::graph && g.unwind_unhooked) tracer.str(", exceptions not followed: ").str(g.unwind_unhooked);
  else if (g.tracer == Tracer::graph)
    tracer.str(", exceptions followed: ").num(g.unwind_in_place).str(" entry points of the binary's own unwinder and ").num(g.unwind_got).str(" GOT slots hooked");
  tracer.ch('\n');
  Text& stacks = r.line().str("signal stacks: the starting thread's");
  if (g.pthread_got) stacks.str(", and every thread's started through pthread_create (").num(g.pthread_got).str(" GOT slots hooked)");
  stacks.ch('\n');
  if (g.counts) r.line().str("counts: ").str(g.counts_path).ch('\n');
  NameForms names(status_demangler, status_names_out, sizeof status_names_out);
  for (u64 i = 0; g.site && i < n; i++) {
    if (!(g.site[i] & site_on)) continue;
    size_t len = 0;
    const char* name = mangled ? g.table.name(i) : names.shown(g.table.name(i), len);
    if (mangled) len = str_len(name);
    r.line().str("enabled ").put(name, len).ch(' ').num(g.counts ? __atomic_load_n(&g.counts[i], __ATOMIC_RELAXED) : 0).ch('\n');
  }
}

// Answers request `id`: reads it from the channel's directory and writes the reply beside it. False
// when there is nothing to answer: the directory is unsafe, or the request is gone (answered already).
bool answer_request(u32 id) {
  const int dir = open_channel_dir();
  if (dir < 0) return __atomic_fetch_add(&g.stats.requests_refused, 1, __ATOMIC_RELAXED), false;
  char name[64];
  Text nm(name, sizeof name);
  channel_name(nm, id, ".req");
  char req[ctl_max_request];
  char ebuf[256];
  Text err(ebuf, sizeof ebuf);
  const long n = read_request(dir, name, req, err);
  if (n == -sys::enoent) return call(sys::nr_close, dir), false;
  {
    Reply r(dir, id);
    if (n < 0) {
      __atomic_fetch_add(&g.stats.requests_refused, 1, __ATOMIC_RELAXED);
      r.line().str("error: ").put(err.data(), err.size()).ch('\n');
    } else if (Command c = parse_command(req, static_cast<size_t>(n)); c.verb == Command::invalid) {
      r.line().str("error: ").str(c.error).ch('\n');
    } else if (c.verb == Command::status) {
      reply_status(r, c.mangled);
    } else {
      const bool on = c.verb == Command::enable;
      Outcome o = toggle(c.globs, {}, on, err);
      if (!o.ok) r.line().str(o.busy ? "" : "error: ").put(err.data(), err.size()).ch('\n');
      else if (!o.matched) r.line().str("error: no site's function matches ").put(c.globs.text, c.globs.len).ch('\n');
      else
        r.line().str("ok: ").str(on ? "enabled " : "disabled ").num(o.changed).str(" site").str(o.changed == 1 ? "" : "s").str(" (").num(o.matched)
            .str(" matched)\n");
    }
  }
  call(sys::nr_close, dir);
  return true;
}

// A control request reached this thread (ctl_signal). One is served at a time; one arriving meanwhile,
// and those queued past a burst of ctl_burst, are dropped unread (counted): a flood costs each thread
// it reaches the kernel's signal delivery and a few instructions per request, not a file's reading.
void serve_request(u32 id) {
  if (__atomic_exchange_n(&g.serving, 1, __ATOMIC_ACQUIRE)) return void(__atomic_fetch_add(&g.stats.requests_dropped, 1, __ATOMIC_RELAXED));
  u64 pending = 0;
  call(sys::nr_rt_sigpending, reinterpret_cast<long>(&pending), 8);
  if (!(pending & ctl_bit)) g.burst = 0;
  if ((pending & ctl_bit) && ++g.burst > ctl_burst) {
    __atomic_fetch_add(&g.stats.requests_dropped, 1, __ATOMIC_RELAXED);
  } else {
    const i64 start = now_ns();
    if (answer_request(id)) g.stats.requests++;
    if (const u64 took = static_cast<u64>(now_ns() - start); took > g.stats.request_max_ns) g.stats.request_max_ns = took;
  }
  __atomic_store_n(&g.serving, 0, __ATOMIC_RELEASE);
}

// ---- SIGTRAP -----------------------------------------------------------------------------------

// What a trap looks like on each ISA that lays one: the trap instruction's address, a call emulated
// as the site's call form makes it (return address `ret`), and a jump.
#if defined(__x86_64__)
u64 trap_address(const sys::UContext* uc) { return uc->gregs[sys::reg_rip] - 1; }  // int3 reports the address after it
void emulate_call(sys::UContext* uc, u64 ret, u64 target, u8) {
  uc->gregs[sys::reg_rsp] -= 8;
  *reinterpret_cast<u64*>(uc->gregs[sys::reg_rsp]) = ret;
  uc->gregs[sys::reg_rip] = target;
}
void resume_at(sys::UContext* uc, u64 pc) { uc->gregs[sys::reg_rip] = pc; }
constexpr u8 selftest_form = static_cast<u8>(arch::CallForm::call_rel32);
constexpr unsigned selftest_len = 5;  // prepatch_selftest_site: int3 and 4 bytes, a call's length
#elif defined(__riscv)
u64 trap_address(const sys::UContext* uc) { return uc->gregs[sys::reg_pc]; }  // ebreak reports its own
void emulate_call(sys::UContext* uc, u64 ret, u64 target, u8 form) {
  uc->gregs[form == static_cast<u8>(arch::CallForm::riscv_jalr_t0) ? arch::riscv64::t0 : arch::riscv64::ra] = ret;
  uc->gregs[sys::reg_pc] = target;
}
void resume_at(sys::UContext* uc, u64 pc) { uc->gregs[sys::reg_pc] = pc; }
constexpr u8 selftest_form = static_cast<u8>(arch::CallForm::riscv_jalr_t0);
constexpr unsigned selftest_len = 4;  // prepatch_selftest_site: c.ebreak, c.nop
#elif defined(__arm__)
// Thumb: udf #1 reports its own address. A site's call is `bl` (lr = the return address, with the
// Thumb bit); its off form is `pop {lr}`, which undoes the `push {lr}` before the site, emulated here
// too since a trap over it must not leave the pushed word behind. The trampolines are Thumb code,
// and the trap left the thread in Thumb state.
u64 trap_address(const sys::UContext* uc) { return uc->gregs[sys::reg_pc]; }
void emulate_call(sys::UContext* uc, u64 ret, u64 target, u8) {
  uc->gregs[sys::reg_lr] = static_cast<u32>(ret) | 1;
  uc->gregs[sys::reg_pc] = static_cast<u32>(target) & ~u32{1};  // the self-test's is a Thumb function's address
}
void resume_at(sys::UContext* uc, u64 pc) {
  uc->gregs[sys::reg_lr] = *reinterpret_cast<const u32*>(uc->gregs[sys::reg_sp]);
  uc->gregs[sys::reg_sp] += 4;
  uc->gregs[sys::reg_pc] = static_cast<u32>(pc);
}
constexpr u8 selftest_form = static_cast<u8>(arch::CallForm::thumb_bl);
constexpr unsigned selftest_len = 4;  // prepatch_selftest_site: udf #1, nop, after a push {lr}
#endif
#if defined(__x86_64__) || defined(__riscv) || defined(__arm__)
u8* selftest_trampoline() {
  return sys::isa == arch::Isa::x86_64 ? prepatch_tramp_fentry : sys::isa == arch::Isa::riscv64 ? prepatch_tramp_patchable : prepatch_tramp_mcount;
}
#endif

// The program's own disposition: its handler, or the default action (for a trap the kernel raised,
// SIG_IGN means the default action too: the kernel forces it).
void chain(int sig, sys::SigInfo* si, void* uc) {
  const sys::KernelSigaction prev = g.chained[handled_index(sig)];
  const auto h = reinterpret_cast<u64>(prev.handler);
  if (h == 1 && si->code <= 0) return;
  if (h > 1) {
    if (prev.flags & sys::sa_siginfo) reinterpret_cast<void (*)(int, sys::SigInfo*, void*)>(prev.handler)(sig, si, uc);
    else reinterpret_cast<void (*)(int)>(prev.handler)(sig);
    return;
  }
  raise_default(sig);  // SIGTRAP, SIGILL (SA_NODEFER): not blocked, so it acts now; ctl_signal: when its handler returns
}

// ctl_signal: a sync request from the batch (signal fallback) or a control request from `prepatch ctl`.
void on_message(int sig, sys::SigInfo* si, void* uc) {
  if (const long id = message_id(si->value, sync_magic, sync_tag); si->code == sys::si_queue && id >= 0) return acknowledge_sync(static_cast<u32>(id));
  if (const long id = message_id(si->value, ctl_magic, ctl_tag); si->code == sys::si_queue && id >= 0) return serve_request(static_cast<u32>(id));
  chain(sig, si, uc);
}

void on_sigtrap(int sig, sys::SigInfo* si, void* ucv) {
#if defined(__x86_64__) || defined(__riscv) || defined(__arm__)
  auto* uc = static_cast<sys::UContext*>(ucv);
  if (sig == sys::sigill ? sigill_at_sites : si->code == sys::trap_code) {
    const u64 at = trap_address(uc);
    if (at == reinterpret_cast<u64>(prepatch_selftest_site)) {
      g.selftest_traps++;
      return emulate_call(uc, at + selftest_len, reinterpret_cast<u64>(selftest_trampoline()), selftest_form);
    }
    if (g.site && g.table_state == 1) {
      const u64 i = g.table.find_start(at - g.bias);
      if (i < g.table.count()) {
        __atomic_fetch_add(&g.stats.traps, 1, __ATOMIC_RELAXED);
        SiteEntry e = g.table.entry(i);
        if (__atomic_load_n(&g.site[i], __ATOMIC_ACQUIRE) & site_on) return emulate_call(uc, at + e.length, g.tramp[e.kind - 1], e.call_form);
        return resume_at(uc, at + e.length);  // the off form: skip the site (Thumb-2: and pop lr)
      }
    }
  }
#endif
  chain(sig, si, ucv);
}

// The kernel's int3_selftest, in user space: a breakpoint in the shim's own text must reach the
// handler, which emulates a call to a trampoline (x86-64: fentry's, to prepatch_on_call; RISC-V: the
// patchable one, Thumb-2: the mcount one, to prepatch_count), which must reach the C side and return
// behind the site.
#if defined(__x86_64__) || defined(__riscv) || defined(__arm__)
void selftest() {
  u64 mask = 0;
  if (call(sys::nr_rt_sigprocmask, 0, 0, reinterpret_cast<long>(&mask), 8) != 0 || (mask & sigtrap_bit))
    return void(g.disabled = "SIGTRAP is blocked in the starting thread, so a breakpoint would kill the process");
  prepatch_selftest();
  if (g.selftest_traps != 1 || g.selftest_calls != 1) g.disabled = "the breakpoint self-test failed";
}
#endif

}  // namespace

#if defined(__x86_64__)
// Called by the function and graph tracers' trampolines (shim/entry_x86_64.S) with every caller-saved
// register preserved: the site's end (the return address into the function), the site's kind, the
// stack pointer at the site and the function's %rbp. (The count tracer's trampoline works alone.)
extern "C" void prepatch_on_call(u64 site_end, u64 kind, u64 sp, u64 fp) {
  if (site_end == reinterpret_cast<u64>(prepatch_selftest_site) + selftest_len) return void(g.selftest_calls++);
  const SiteHashSlot* s = prepatch_hash ? site_hash_find(prepatch_hash, prepatch_hash_mask, site_end) : nullptr;
  if (!s || !g.threads) return;
  Thread* t = this_thread();
  if (!t) return count_lost();  // more threads than the table holds
  // The traced function's return address: at the site's stack pointer, or for an mcount site (called
  // after the frame setup, perhaps after more pushes) just above where its frame pointer points.
  u64* slot = reinterpret_cast<u64*>(kind == static_cast<u64>(arch::SiteKind::mcount) ? fp + 8 : sp);
  if (g.tracer == Tracer::function) {
    const u64 caller = *slot - g.bias;
    return emit(t, rec_call, s->value, caller < rec_caller_unknown ? caller : rec_caller_unknown);
  }
  const auto unwound = [&](const ShadowFrame& f) { note_unwound(t, f); };
  if (!t->shadow.frames) {
    void* m = map(shadow_bytes, sys::prot_read | sys::prot_write, sys::map_private | sys::map_anonymous, -1);
    if (!m) return;
    t->shadow.frames = static_cast<ShadowFrame*>(m);
    t->shadow.cap = shadow_bytes / sizeof(ShadowFrame);
  }
  // A frame whose slot a new call reuses was left without a return (longjmp) and is dropped, unless
  // the slot still returns through the trampoline: then a traced function tail-called this one, whose
  // return goes through the trampoline twice (its frame, then the tail-caller's).
  const bool tail_call = *slot == reinterpret_cast<u64>(prepatch_tramp_exit);
  t->shadow.drop_dead(reinterpret_cast<u64>(slot) - (tail_call ? 1 : 0), unwound);
  const u32 depth = t->shadow.depth;
  if (!t->shadow.push({reinterpret_cast<u64>(slot), *slot, s->value})) return;  // too deep: this call is not traced
  emit(t, rec_entry, s->value, depth);
  *slot = reinterpret_cast<u64>(prepatch_tramp_exit);
}

// Called by the exit trampoline with the stack pointer a traced function returned with (just above its
// return address's slot): records the exit and returns the real return address.
extern "C" u64 prepatch_on_exit(u64 sp) {
  Thread* t = this_thread();
  ShadowFrame f{};
  if (!t || !t->shadow.pop(sp - 8, f, [&](const ShadowFrame& d) { note_unwound(t, d); })) lost_return();
  emit(t, rec_exit, f.site, t->shadow.depth);
  return f.ret;
}

// Called by the exception hooks (shim/entry_x86_64.S) with their caller's stack pointer: before the unwinder
// starts or resumes (to_real: the thread's live frames get their real return addresses back), and when
// a handler catches (the frames below the catching function were unwound, the live ones return through
// the exit trampoline again).
extern "C" void prepatch_unwind(u64 sp, u64 to_real) {
  Thread* t = g.threads ? this_thread() : nullptr;
  if (t && t->shadow.depth)
    t->shadow.relink(sp, reinterpret_cast<u64>(prepatch_tramp_exit), to_real != 0, [&](const ShadowFrame& d) { note_unwound(t, d); });
}
#else
// Called by the count trampolines (shim/entry_*.S) with the site's end (the return address of its
// `bl`) and every register the traced function may still need saved: counts the call.
extern "C" void prepatch_count(uptr site_end) {
#if defined(__riscv) || defined(__arm__)
  if (site_end == reinterpret_cast<u64>(prepatch_selftest_site) + selftest_len) return void(g.selftest_calls++);
#endif
  if (const SiteHashSlot* s = prepatch_hash ? site_hash_find(prepatch_hash, prepatch_hash_mask, site_end) : nullptr)
    __atomic_fetch_add(reinterpret_cast<u64*>(s->value), 1, __ATOMIC_RELAXED);
}
#endif

// pthread_create, through the GOT slots of the loaded objects: the new thread starts in
// prepatch_thread_start (shim/entry_x86_64.S), which has prepatch_thread_setup give it its alternate signal
// stack, then jumps to its start routine (so no frame of the shim's stays under the thread's frames).
// Without memory for one, the thread starts as asked, without.
extern "C" int prepatch_hook_pthread_create(void* thread, const void* attr, void* (*start)(void*), void* arg) {
  u8* region = altstack_map();
  if (!region) return g.pthread_create(thread, attr, start, arg);
  *thread_start(region) = {start, arg};
  const int r = g.pthread_create(thread, attr, prepatch_thread_start, region);
  if (r != 0) altstack_unmap(region);
  return r;
}

// In the new thread, before its start routine: installs the alternate signal stack and hands it to
// the pthread key whose destructor frees it. Returns where the start routine and its argument are.
extern "C" const void* prepatch_thread_setup(u8* region) {
  altstack_install(region);
  g.pthread_setspecific(g.pthread_key, region);
  return thread_start(region);
}

// Called once by the start routine (shim/entry_x86_64.S) with the stack pointer the kernel set up: argc,
// argv, envp, auxv. The program's entry runs after it returns, whatever happened here.
extern "C" void prepatch_init(uptr* sp) {
  const uptr argc = sp[0];
  char** envp = reinterpret_cast<char**>(sp + 1 + argc + 1);
  char** e = envp;
  while (*e) e++;
  bool secure = false;
  for (uptr* aux = reinterpret_cast<uptr*>(e + 1); aux[0]; aux += 2) {
    if (aux[0] == 3) g.phdr = reinterpret_cast<const u8*>(aux[1]);  // AT_PHDR
    if (aux[0] == 5) g.phnum = aux[1];                               // AT_PHNUM
    if (aux[0] == 23) secure = aux[1] != 0;                          // AT_SECURE
  }
  // Secure execution (setuid, setgid, file capabilities, an LSM transition): the environment is the
  // caller's, who may not be trusted with this process's rights. The shim does nothing at all: no
  // variable is read, no handler installed, no file created; the program runs as if unprepared, with
  // every site a nop (SECURITY.md).
  if (secure) return;
  g.bias = reinterpret_cast<u64>(__shim_base) - prepatch_config.blob_vaddr;
  // A static binary starts without a thread pointer; the tracers read %fs:0 (and the tid glibc keeps
  // in its thread block) from the first traced call on, so until the C library sets its own, it is ours.
#if defined(__x86_64__)
  u64 fs = 0;
  if (call(sys::nr_arch_prctl, 0x1003 /* ARCH_GET_FS */, reinterpret_cast<long>(&fs)) == 0 && fs == 0) {
    *reinterpret_cast<u64*>(early_tcb) = reinterpret_cast<u64>(early_tcb);
    *reinterpret_cast<u32*>(early_tcb + glibc_tid_offset) = static_cast<u32>(call(sys::nr_gettid));
    call(sys::nr_arch_prctl, 0x1002 /* ARCH_SET_FS */, reinterpret_cast<long>(early_tcb));
  }
#endif
  const Settings set = parse_settings(envp, sys::isa);
  g.disabled = set.error;
  g.tracer = set.tracer;
#if defined(__x86_64__)
  for (int k = 0; k < 3; k++)
    g.tramp[k] = g.tracer == Tracer::count ? reinterpret_cast<u64>(prepatch_tramp_count)
                                           : reinterpret_cast<u64>(k == 0 ? prepatch_tramp_fentry : k == 1 ? prepatch_tramp_mcount : prepatch_tramp_patchable);
#elif defined(__arm__)
  // The count tracer only so far (parse_settings refuses the others here). Thumb-2 has -pg sites only
  // so far. A Thumb function's address has bit 0 set; a `bl` targets the instruction.
  g.tramp[0] = g.tramp[1] = g.tramp[2] = reinterpret_cast<u64>(prepatch_tramp_mcount) & ~u64{1};
#else
  // The count tracer only so far: its trampolines are the kinds' own (no fentry kind here). RISC-V -pg
  // sites keep calling what they called, which the preparer made a jump to the mcount trampoline.
  g.tramp[0] = g.tramp[1] = reinterpret_cast<u64>(prepatch_tramp_mcount);
  if (prepatch_config.mcount_via) g.tramp[1] = prepatch_config.mcount_via + g.bias;
  g.tramp[2] = reinterpret_cast<u64>(prepatch_tramp_patchable);
#endif
  if (set.output) memcpy(g.output, set.output, str_len(set.output) + 1);  // (at most max_path_setting bytes)
  if (set.counts) memcpy(g.counts_env, set.counts, str_len(set.counts) + 1);
  g.buffer_bytes = set.buffer_bytes;
  g.file_mode = set.file_mode;
  g.start_pid = static_cast<u64>(call(sys::nr_getpid));
  g.wx_strict = set.wx_strict;
  g.use_signals = set.sync_signal;
  g.use_flush_icache = set.sync_flush_icache;
  if (!g.use_signals && !g.use_flush_icache) {
    if (long r = call(sys::nr_membarrier, sys::membarrier_register_private_expedited_sync_core, 0, 0)) membarrier_unavailable(r);
  }
  if ((traps && !install_handler(0)) || !install_handler(1) || (sigill_at_sites && !install_handler(2)))
    g.disabled = sigill_at_sites ? "cannot install the SIGTRAP, SIGILL and signal 62 handlers" : "cannot install the SIGTRAP and signal 62 handlers";
#if defined(__x86_64__) || defined(__riscv) || defined(__arm__)
  if (!g.disabled) selftest();
#endif
#if defined(__x86_64__)
  if (!g.disabled && g.tracer == Tracer::graph) hook_unwinder();
#endif
  const bool fork_handlers = !g.disabled && register_fork_handlers();
  if (!g.disabled) g.pthread_got = give_threads_altstacks();
  if (!g.disabled && g.wx_strict) wx_start(fork_handlers);
  const char* trace = set.trace;
  if (!trace || !*trace) return;
  if (g.disabled) return say("tracing is off: ", g.disabled);
  char ebuf[256];
  Text err(ebuf, sizeof ebuf - 1);
  Outcome o = toggle(glob_list(trace), glob_list(set.notrace), true, err);
  ebuf[err.size()] = 0;
  if (!o.ok) say("PREPATCH_TRACE: ", ebuf);
  else if (o.matched == 0) say("PREPATCH_TRACE: no site's function matches ", trace);
}
