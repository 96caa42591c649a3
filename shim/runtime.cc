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
#include "shim/fast_x86_64.h"
#include "shim/names.h"
#include "shim/settings.h"
#include "shim/snapshot.h"
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
extern u8 prepatch_arm_entry[];  // ARM32 only
extern u8 prepatch_tramp_exit[];
extern u8 prepatch_fwd_fentry[];
extern u8 prepatch_fwd_mcount[];
extern u8 prepatch_fwd_patchable[];
extern u8 prepatch_fwd_count[];
extern u8 prepatch_selftest_site[];
extern u8 prepatch_cntvct_probe[];
u64 prepatch_read_cntvct();
unsigned prepatch_ticks_from_clock;
extern u8 prepatch_hook_raise[];
extern u8 prepatch_hook_resume[];
extern u8 prepatch_hook_rethrow[];
extern u8 prepatch_hook_catch[];
void prepatch_object_init(int argc, char** argv, char** envp);
void prepatch_object_fini();
void prepatch_count(uptr site_end);  // the other ISAs' count tracer
void prepatch_on_call(u64 site_end, u64 kind, u64 sp, u64 fp);  // x86-64's trampolines
#if defined(__arm__)
void prepatch_on_site(uptr site_end, uptr kind, uptr* saved);  // Thumb-2's trampolines
#else
void prepatch_on_site(uptr site_end, uptr kind, u64* saved);  // AArch64's, PPC64le's, RISC-V64's trampolines
#endif
void prepatch_selftest();
void prepatch_restorer();
void* prepatch_thread_start(void* region);
int prepatch_hook_pthread_create(void* thread, const void* attr, void* (*start)(void*), void* arg);

// What the compiler may call even in freestanding code. On x86-64 memcpy and memset are the string
// instructions, which every CPU since Ivy Bridge runs a cache line at a time (ERMS): the shim copies
// megabytes at a time (a site table into the counts file), which the byte loop below (the shim has no
// vector registers) does a byte at a time.
void* memcpy(void* d, const void* s, size_t n) {
#if defined(__x86_64__)
  void* to = d;
  asm volatile("rep movsb" : "+D"(to), "+S"(s), "+c"(n) : : "memory");
#else
  auto* dd = static_cast<u8*>(d);
  auto* ss = static_cast<const u8*>(s);
  for (size_t i = 0; i < n; i++) dd[i] = ss[i];
#endif
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
#if defined(__x86_64__)
  void* to = d;
  asm volatile("rep stosb" : "+D"(to), "+c"(n) : "a"(c) : "memory");
#else
  auto* dd = static_cast<u8*>(d);
  for (size_t i = 0; i < n; i++) dd[i] = static_cast<u8>(c);
#endif
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

// The site hash (shim/core.h), read by the count trampoline in shim/entry_x86_64.S. Unused in an object
// another runtime serves: its trampolines go on to that runtime's.
SiteHash* prepatch_hash;

// The graph tracer's fast path in the x86-64 trampolines (shim/entry_x86_64.S, layout in
// shim/fast_x86_64.h): `on` while they may record a call's entry and return themselves (1: the graph
// tracer with no record-time filter or trigger; 2: with a duration threshold and nothing else, whose
// calls they hold back and drop when shorter), with glibc's tid in the thread block; the thread table,
// writer and threshold they read. They leave every call they do not cover to prepatch_on_call and
// prepatch_on_exit.
struct FastPath {
  u64 on;
  void* threads;
  void* writer;
  u64 threshold_ticks;
} prepatch_fast;

// Whether the trampolines of AArch64, PPC64le, RISC-V64 and Thumb-2 count a call themselves
// (shim/entry_<isa>.S; x86-64's sites call a count trampoline of their own instead): set by the runtime
// serving the process, under the count tracer, once its self-test has run (an object another runtime
// serves keeps 0: its calls go on to that runtime).
u64 prepatch_count_fast;

// In an object another runtime serves: where its trampolines go on to (Enrollment::forward_to, set by
// that runtime when it enrolled the object): on x86-64 the serving runtime's fentry, mcount, patchable
// and count trampolines, which shim/entry_x86_64.S's forwarders jump to, and [4] its prepatch_on_call,
// which this object's own trampolines call on (reached through a branch island); on AArch64, PPC64le,
// RISC-V64 and Thumb-2 [0] is its prepatch_on_site. All 0 otherwise.
u64 prepatch_forward_to[5];

// The functions the exception hooks in shim/entry_x86_64.S go on to, in hook_unwinder's order.
u64 prepatch_unwind_real[4];
}

namespace {

// The parts, in the order they are included below (each may use what the ones before it define):
//   os.inc          threads, clocks and new files: what the parts ask of the kernel beyond shim/sys.h
//   sync.inc        every thread serializes before running written code (membarrier, or signals)
//   batch.inc       a batch over the sites: text writable for the batch, the lock, the site states
//   files.inc       the trace and counts files created safely; the counts file
//   blocked.inc     threads that block SIGTRAP (a batch waits or is refused); qemu-user detected
//   tracers.inc     the function and graph tracers' buffers and trace file
//   exceptions.inc  the unwinder hooked, so the graph tracer follows exceptions
//   wx.inc          PREPATCH_WX=strict: text written through a second mapping of a memfd
//   altstacks.inc   an alternate signal stack for every thread
//   fork.inc        fork waits for a batch; the child drops the parent's
//   toggle.inc      switching the sites a selection names, the tracer made ready first
//   objects.inc     the objects a runtime serves beyond its own: enrolling, the selection they follow,
//                   leaving as they are unloaded
//   control.inc     `prepatch ctl`: requests, replies, status
//   trap.inc        the SIGTRAP (and Thumb-2 SIGILL) handler; the self-test
// This file keeps the state, the entry points the trampolines and hooks call, and start-up.

using sys::call;

// A descriptor the shim keeps open for the process's life (the counts file, the trace file's
// directory), moved to a number a program is unlikely to pick (F_DUPFD_CLOEXEC from 900), with the
// device and inode it must still have when used: the program may close that number and open another
// file under it. Zeroed (as in a child's wiped writer page), it holds nothing.
struct KeptFd {
  bool held;
  int fd;
  u64 dev, ino;
  // Takes `fd` (moved high when it can be); false, with `fd` closed, when fstat fails on it.
  bool keep(long from) {
    const long high = call(sys::nr_fcntl, from, 1030 /* F_DUPFD_CLOEXEC */, 900);
    if (high >= 0) call(sys::nr_close, from);
    fd = static_cast<int>(high >= 0 ? high : from);
    sys::Stat st{};
    if (call(sys::nr_fstat, fd, reinterpret_cast<long>(&st)) != 0) return call(sys::nr_close, fd), held = false;
    dev = st.dev, ino = st.ino;
    return held = true;
  }
  // Whether it is still the descriptor taken.
  bool still() const {
    sys::Stat st{};
    return held && call(sys::nr_fstat, fd, reinterpret_cast<long>(&st)) == 0 && st.dev == dev && st.ino == ino;
  }
};

struct Stats {
  u64 batches, syncs, writes, protections, traps, refused, sync_timeouts;
  u64 alone;  // batches run site by site by the process's one thread (toggle.inc enable_alone)
  u64 block_waits, block_wait_max_ns;  // batches that waited for threads blocking signals, longest wait
  // Control requests: answered (a reply written, refusals included), dropped unread (one was being
  // served, or a burst past ctl_burst), refused for what their file or directory is, and the longest
  // time one took in its handler.
  u64 requests, requests_dropped, requests_refused, request_max_ns;
};

// One prepared object the runtime serves: its table and sites, where its text is, its batch. The one
// whose runtime this is (g.obj), and those enrolled since (objects.inc). Each part in shim/runtime/
// says at its top which state it owns.
struct Object {
  const Config* config;  // the object's own (its table's link-time address, build ID, mcount_via)
  u64 bias;        // run-time address minus link-time address
  u64 lo, span;    // the run-time span of its loaded segments (the function tracer's callers are found in it)
  u64 tramp[3];    // run-time trampoline addresses, by SiteKind - 1 (ARM32: [0] the ARM-state sites' entry)
  const u8* phdr;  // the program headers, as the kernel reported them (AT_PHDR)
  u64 phnum;
  u64 table_addr, table_size;  // the __patch_sites table, at run time
  TableView table;
  int table_state;  // 0 unchecked, 1 sound, -1 malformed, 2 unloaded (objects.inc leave: nothing of it may be read)
  const char* table_error;  // why it is malformed
  u8* site;         // per site: site_on, site_in_batch, site_outside, site_hashed bits
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
  bool wx_mapped;
  int wx_fd;
  u64 wx_size;
  // One site of a batch: its run-time address, length and the bytes it must end up as (the kernel's
  // text_poke_loc). Mapped with the site states, one per table entry; a batch touches what it uses.
  struct BatchEntry {
    u64 addr;
    u8 len;
    u8 target[15];
  } * batch;
  u64 batch_size;  // entries of the batch being chosen or run, 0 otherwise
  u64* counts;  // per site call counts, in the counts file's shared mapping (its section there)
  const char* path;  // the object's file as it was loaded (AT_EXECFN, the loader's l_name); may be nullptr
  u64 first_site;       // the number its first site has in the trace file's records (its own object's: 0)
  u64 caller_base;      // where its callers' numbers start in function records (ObjectChunk::caller_base)
  u64 caller_room;      // how many it holds: its span when it first enrolled (0 where they did not fit)
  u64 hashed;           // its sites with an entry in the site hash for where it is loaded now (site_hashed)
  u64 recorded;         // the generation of the trace file that holds its object record (0: none)
  // An enrolled object (objects.inc): its Enrollment::forward_to, which Registry::leave names it by;
  // and what an object loaded again must match to be given this entry back once it was unloaded.
  u64 forward_to;
  u64 identity;     // the hash of its path, build ID and table size
  u64 table_hash;   // without a build ID: the hash of its table too
  u64 low_page;     // where its islands of last resort are mapped (LowIslands; 0: none)
};

// Whether `o` has islands of last resort but no page was free for them (start): the sites that need
// them trap when enabled (README "Trap sites").
bool islands_page_taken(const Object& o) { return o.config->low_islands && !o.low_page; }

// Where the loaded segments of `o` lie at run time (its program headers and bias known); an empty
// span where a link-time address in it would not fit a function record's caller.
void find_extent(Object& o) {
  u64 lo = ~u64{0}, hi = 0;
  for (u64 p = 0; p < o.phnum; p++) {
    const u8* ph = o.phdr + p * elfc::phdr_size;
    if (load_le(ph, 4) != 1 /* PT_LOAD */) continue;
    const u64 v = load_le(ph + elfc::p_vaddr, elfc::word) + o.bias, end = v + load_le(ph + elfc::p_memsz, elfc::word);
    if (v < lo) lo = v;
    if (end > hi) hi = end;
  }
  o.lo = lo, o.span = lo < hi && hi - o.bias < rec_caller_unknown ? hi - lo : 0;
}

// Whether one of the loaded segments of `o` covers the run-time address `a` (its pages included),
// computed in the address width.
bool covers(const Object& o, uptr a) {
  for (u64 p = 0; p < o.phnum; p++) {
    const u8* ph = o.phdr + p * elfc::phdr_size;
    if (load_le(ph, 4) != 1 /* PT_LOAD */) continue;
    const uptr start = static_cast<uptr>(load_le(ph + elfc::p_vaddr, elfc::word) + o.bias), v = start & ~uptr{4095};
    if (a - v < start + static_cast<uptr>(load_le(ph + elfc::p_memsz, elfc::word)) - v) return true;
  }
  return false;
}

// The process's state: one object in .bss, zero at start. One control channel, one trap handler, one
// sync, one trace file, however many objects.
struct State {
  Object obj;      // the prepared object this runtime came with
  // The objects enrolled since (objects.inc): `more` is mapped at the first, `objects` counts obj and
  // those, published (release) once an entry is whole, so the trap handler reads whole entries only.
  Object* more;
  u32 objects;
  u64 sites_numbered;  // sites numbered for the trace file so far (objects.inc)
  u64 callers_numbered;  // function records' caller numbers given out so far (objects.inc)
  // Threads reading some object's table or path outside the batch lock (the trap handler, a `status`
  // reply): an object leaving waits for none to be left (objects.inc leave).
  u32 readers;
  u64 leave;  // this object enrolled with another runtime: that runtime's Registry::leave (0 otherwise)
  // The executable's program headers and load bias: where the loaded objects are listed (its DT_DEBUG).
  // The prepared object's own, unless that is a shared object.
  struct Program {
    const u8* phdr;
    u64 phnum, bias;
  } main;
  bool wx_strict;  // PREPATCH_WX=strict (docs/SHIM.md, "W^X")
  u32 file_mode;          // PREPATCH_FILE_MODE: the trace and counts files' mode
  int serving;            // a control request is being served
  u32 burst;              // control requests served while more were queued, since the queue was last empty
  char counts_env[512];   // PREPATCH_COUNTS
  char counts_path[520];  // the counts file, once created
  // The counts file's header mapped, its descriptor (kept open: each object enrolled later gets a
  // section appended), its size, and its last section.
  CountsHeader* counts_header;
  KeptFd counts_file;
  u64 counts_end;
  CountsObject* counts_last;
  // The selection since start (objects.inc), which an object enrolled later follows: every batch's
  // globs in order, from PREPATCH_TRACE on.
  u8* selection;
  u64 selection_used;
  bool selection_lost;  // it outgrew its mapping: later objects follow its first part only
  bool asked;           // the environment holds some PREPATCH_ variable: standing down is said
  bool registry;        // this runtime mapped the rendezvous page (its magic comes once it has started)
  u64 start_pid;          // the process that started (a forked child has another pid)
  sys::KernelSigaction chained[6];  // the program's dispositions of handled_signal's (batch.inc), to chain to
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
  u32 ring_chunks;   // PREPATCH_BUFFER=ring:SIZE: each thread's ring of chunks (tracers.inc; 0: none)
  Filters filters, filters_next;  // the record-time filters (filters.inc), and a `set` request's scratch copy
  bool filtering;                 // some filter is set: the tracers ask admit()
  u8* site_marks;                 // per site number: what the glob filters say of its function
  u64 threshold_ticks;            // PREPATCH_THRESHOLD in TSC ticks (0: none, or the TSC's rate is not known yet)
  u32 filters_version;            // counts the filters' changes
  // Triggers (triggers.inc): recording on (1) or off (0: a trace_off trigger fired, or a trace_on one
  // waits); per site number, the triggers naming its function (a bit each); each trigger's duration in
  // ticks and snapshots taken; the snapshot being written (a lock, its thread), the last N written.
  int recording;
  u8* site_triggers;
  u64 trigger_ticks[triggers_max];
  u32 trigger_taken[triggers_max];
  int snapshot_lock, snapshot_tid;
  u32 snapshots_written;
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

// Sets prepatch_fast from the state it depends on; called wherever that changes (the tracer's tables,
// the filters, the threshold's ticks, whether glibc keeps the tid in the thread block), from any thread
// and from signal handlers. One caller at a time writes it, from the state as it is then; a caller that
// finds another writing leaves it a request to look again (no lock to wait for, so no deadlock with a
// handler that interrupted the writer), so the last change is always what it ends up showing.
void update_fast_path() {
  static int writing, again;
  __atomic_store_n(&again, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&again, __ATOMIC_SEQ_CST) && !__atomic_exchange_n(&writing, 1, __ATOMIC_ACQUIRE)) {
    while (__atomic_exchange_n(&again, 0, __ATOMIC_SEQ_CST)) {
      const Filters& f = g.filters;
      const bool base = sys::isa == arch::Isa::x86_64 && g.tracer == Tracer::graph && g.threads && g.writer && g.tid_in_tcb == 1;
      const bool plain = !__atomic_load_n(&g.filtering, __ATOMIC_ACQUIRE);
      const bool threshold = f.threshold_ns && g.threshold_ticks && !f.depth && !*f.graph_function && !*f.graph_notrace && !*f.retval &&
                             !*f.args && !f.tid_count && !f.trigger_count && __atomic_load_n(&g.recording, __ATOMIC_ACQUIRE);
      const u64 on = !base ? 0 : plain ? 1 : threshold ? 2 : 0;
      __atomic_store_n(&prepatch_fast.on, 0, __ATOMIC_RELEASE);  // (never a new threshold under the old mode)
      prepatch_fast.threads = g.threads, prepatch_fast.writer = g.writer;
      prepatch_fast.threshold_ticks = on == 2 ? g.threshold_ticks : 0;
      __atomic_store_n(&prepatch_fast.on, on, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&writing, 0, __ATOMIC_RELEASE);
  }
}

constexpr u32 max_objects = 4096;  // served at once: the executable's own and those enrolled (objects.inc)

// Object k of those the runtime serves: 0 its own, then those enrolled, in order.
Object& object(u32 k) { return k == 0 ? g.obj : g.more[k - 1]; }
u32 objects() { return __atomic_load_n(&g.objects, __ATOMIC_ACQUIRE); }

// Reading objects' tables or paths outside the batch lock (the trap handler, a `status` reply): while
// one lives, no object it finds loaded() is unmapped (objects.inc leave waits for State::readers).
struct ObjectReader {
  ObjectReader() { __atomic_fetch_add(&g.readers, 1, __ATOMIC_SEQ_CST); }
  ~ObjectReader() { __atomic_fetch_sub(&g.readers, 1, __ATOMIC_RELEASE); }
  ObjectReader(const ObjectReader&) = delete;
  static bool loaded(const Object& o) { return __atomic_load_n(&o.table_state, __ATOMIC_SEQ_CST) == 1; }
};

// Function names as users write them (shim/names.h): one demangler for batches, which run under the
// batch lock, one for `status`, which requests run one at a time. Their text is here, not on the
// (signal) stack, which holds only the demangler's frames (~20 KiB at its deepest).
char batch_names_out[4096], status_names_out[4096];
constinit Demangler batch_demangler, status_demangler;

// g.obj.site bits: the form a site is (or is being switched to) is the call, the site is in the running
// batch, the site lies outside every executable segment (never switched).
constexpr u8 site_on = 1, site_in_batch = 2, site_outside = 4, site_hashed = 8;

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
// SIGTRAP exist for it. AArch64 and PPC64le swap one word in one store and lay a trap only as an
// enabled trap site's form: their handler is installed, and blocked SIGTRAP looked for, by the batches
// that enable such sites (toggle.inc ready_for_batch), and they run no self-test.
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

#include "shim/runtime/os.inc"
#include "shim/runtime/sync.inc"
#include "shim/runtime/batch.inc"
#include "shim/runtime/files.inc"
#include "shim/runtime/blocked.inc"
void set_threshold_ticks();
#include "shim/runtime/tracers.inc"
#include "shim/runtime/triggers.inc"
#include "shim/runtime/filters.inc"
#include "shim/runtime/exceptions.inc"
#include "shim/runtime/wx.inc"
#include "shim/runtime/altstacks.inc"
#include "shim/runtime/fork.inc"
#include "shim/runtime/toggle.inc"
#include "shim/runtime/objects.inc"
#include "shim/runtime/control.inc"
#include "shim/runtime/trap.inc"
#include "shim/runtime/calls.inc"

}  // namespace

#if defined(__x86_64__)
#include "shim/runtime/calls_x86_64.inc"
#else
#include "shim/runtime/calls_other.inc"
#endif
#if defined(__aarch64__)
#include "shim/runtime/calls_aarch64.inc"
#elif defined(__powerpc64__)
#include "shim/runtime/calls_ppc64le.inc"
#elif defined(__riscv)
#include "shim/runtime/calls_riscv64.inc"
#elif defined(__arm__)
#include "shim/runtime/calls_arm.inc"
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
// the pthread key whose destructor frees it, and renews the thread's tracer entry where its thread
// block may have been another thread's (renew_this_thread). Returns where the start routine and its
// argument are.
extern "C" const void* prepatch_thread_setup(u8* region) {
  altstack_install(region);
  renew_this_thread(true);
  g.pthread_setspecific(g.pthread_key, region);
  return thread_start(region);
}

namespace {
#include "shim/runtime/claim.inc"

// One entry of an auxiliary vector (type, value): the program headers (AT_PHDR, AT_PHNUM) and secure
// execution (AT_SECURE), as the executable's start and a shared object's read them.
void take_aux(const uptr* aux, const u8*& phdr, u64& phnum, bool& secure) {
  if (aux[0] == 3) phdr = reinterpret_cast<const u8*>(aux[1]);
  if (aux[0] == 5) phnum = aux[1];
  if (aux[0] == 23) secure = aux[1] != 0;
}

// What an executable's start and a shared object's share, once they know the object's program headers
// and the executable's and that execution is not secure: the process claimed (or this object enrolled
// with the runtime that claimed it), the settings, the handlers, the hooks, and the sites
// PREPATCH_TRACE names.
void serve(char** envp);
bool pin_object();

#if defined(__riscv)
// RISC-V64: the patchable sites' `auipc t0` before them, and the -pg sites' redirect (`auipc t1; jr`
// at Config::mcount_via), which the preparer aimed at the islands of last resort on the first page
// `first`, aimed at the page `moved` bytes below it where a shared object's shim mapped them (its sites
// are off: their jalr is a nop; nothing of the object has run yet: this is its DT_INIT). Each
// executable segment's pages are writable, and not executable, meanwhile. False, with nothing
// aimed, when the table is malformed or the text cannot be made writable.
bool aim_at_moved_islands(const Object& o, const LowIslands& low, u64 moved) {
  TableView table;
  if (table.check(reinterpret_cast<const u8*>(o.table_addr), o.table_size, sys::machine)) return false;
  namespace rv = arch::riscv64;
  const int pk = static_cast<int>(arch::SiteKind::patchable) - 1, mk = static_cast<int>(arch::SiteKind::mcount) - 1;
  // A patchable site's auipc at `at` (link-time), or the redirect's two words there, aimed lower where
  // they name `island` (not another target).
  const auto aim = [&](u64 at, u64 island, bool redirect) {
    u32 hi = 0, lo = 0, new_hi = 0, new_lo = 0;
    u32* word = reinterpret_cast<u32*>(at + o.bias);
    const auto encode = [&](u64 target, u32& a, u32& b) {
      return redirect ? rv::encode_jump(at + o.bias, target, a, b) : rv::encode_call(at + o.bias, target, rv::t0, a, b);
    };
    if (!encode(island + o.bias, hi, lo) || !encode(island + o.bias - moved, new_hi, new_lo)) return;
    if (word[0] != hi || (redirect && word[1] != lo)) return;
    word[0] = new_hi;
    if (redirect) word[1] = new_lo;
  };
  for (u64 p = 0; p < o.phnum; p++) {
    const u8* ph = o.phdr + p * elfc::phdr_size;
    const u32 flags = static_cast<u32>(load_le(ph + elfc::p_flags, 4));
    if (load_le(ph, 4) != 1 /* PT_LOAD */ || !(flags & 1 /* PF_X */)) continue;
    const u64 vaddr = load_le(ph + elfc::p_vaddr, elfc::word), end = vaddr + load_le(ph + elfc::p_memsz, elfc::word);
    const u64 lo = (vaddr + o.bias) & ~u64{4095}, hi = (end + o.bias + 4095) & ~u64{4095};
    if (addr_of(__shim_base) >= lo && addr_of(__shim_base) < hi) continue;  // (the shim's own, running now)
    if (call(sys::nr_mprotect, static_cast<long>(lo), static_cast<long>(hi - lo), sys::prot_read | sys::prot_write) != 0) return false;
    for (u64 i = 0; low.island[pk] && i < table.count(); i++)
      if (const SiteEntry e = table.entry(i); e.kind == static_cast<u8>(arch::SiteKind::patchable) && e.addr >= vaddr + 4 && e.addr + e.length <= end)
        aim(e.addr - 4, low.island[pk], false);
    if (const u64 via = o.config->mcount_via; via && low.island[mk] && via >= vaddr && via + 8 <= end) aim(via, low.island[mk], true);
    call(sys::nr_mprotect, static_cast<long>(lo), static_cast<long>(hi - lo), prot_of(flags));
    call(sys::nr_riscv_flush_icache, static_cast<long>(lo), static_cast<long>(hi), 0);  // (every hart)
  }
  return true;
}
#endif

// The object's branch islands of last resort (shim/abi.h LowIslands), on a page of their own below
// its lowest segment (or lower down, where that one is taken), mapped before any site can call them
// and kept while the object is loaded; where, in o.low_page. False, with why in `why`, where no page
// is free (or the kernel, before 4.17, placed it elsewhere): the sites that need them then trap when
// enabled (start; ARM32's ARM-state ones stay off).
bool map_low_islands(Object& o, char* why, u64 why_size) {
  const auto* low = reinterpret_cast<const LowIslands*>(o.table_addr + o.config->low_islands);
  const u64 first = low->page + o.bias, pages = (low->page - low->lowest) / low_islands_page;  // (pages below the first)
  // Why: none free within reach (`at` 0), or what went wrong with the page at `at`.
  const auto fail = [&](u64 at, const char* what) {
    Text t(why, why_size - 1);
    if (!at && pages) t.str("no 64 KiB from ").addr(first).str(" down to ").addr(first - pages * low_islands_page).str(", below it within its sites' reach, ");
    else t.str("the 64 KiB at ").addr(at ? at : first).str(" below it, ");
    t.str("where its far sites' branch islands go, ").str(what);
    why[t.size()] = 0;
    return false;
  };
  u64 at = first;
  for (u64 k = 0;; k++, at -= low_islands_page) {
    if (map_exactly(at, low_islands_page, sys::prot_read | sys::prot_write) == static_cast<long>(at)) break;
    if (k == pages) return fail(0, pages ? "is free" : "are taken");
  }
  u8* code = reinterpret_cast<u8*>(at + low_islands_page - low_islands_code);
  memcpy(code, low->code, low_islands_code);
  for (int k = 0; k < 3; k++) {  // (moved down by first - at: each literal, a distance up to the trampoline, grows by that)
    if (!low->island[k] || at == first) continue;
    uptr literal;  // (ARM32's is a word)
    memcpy(&literal, code + low->literal[k], sizeof literal);
    literal += static_cast<uptr>(first - at);
    memcpy(code + low->literal[k], &literal, sizeof literal);
  }
  if (call(sys::nr_mprotect, static_cast<long>(at), low_islands_page, sys::prot_read | sys::prot_exec) != 0) {
    call(sys::nr_munmap, static_cast<long>(at), low_islands_page);
    return fail(at, "cannot be made executable");
  }
#if defined(__riscv)
  if (at != first && !aim_at_moved_islands(o, *low, first - at)) {
    call(sys::nr_munmap, static_cast<long>(at), low_islands_page);
    return fail(at, "cannot be aimed at: its text cannot be made writable");
  }
#endif
  for (u64 k = 0; k < low_islands_code; k += 16) sys::sync_icache(code + k, code + k);
  sys::flush_code(addr_of(code), addr_of(code) + low_islands_code);  // (ARM32's cacheflush)
  o.low_page = at;
  return true;
}

// Unmaps this object's islands of last resort, where it mapped them: its sites stay off, or go with
// its text.
void unmap_low_islands() {
  if (g.obj.low_page) call(sys::nr_munmap, static_cast<long>(g.obj.low_page), low_islands_page), g.obj.low_page = 0;
}

void start(char** envp) {
  g.obj.config = &prepatch_config;
  find_extent(g.obj);
  g.obj.table_addr = prepatch_config.table_vaddr + g.obj.bias, g.obj.table_size = prepatch_config.table_size;
  char why[192];
  // Where the page for the islands of last resort is taken, the sites that need them trap when enabled
  // (toggle.inc choose_sites: the trap form, README "Trap sites"; ARM32's ARM-state sites stay off),
  // which a runtime that serves or enrolls the object says where tracing was asked for (one that stands
  // down says why itself).
  const bool page_taken = (prepatch_config.flags & config_low_islands) && !map_low_islands(g.obj, why, sizeof why);
  const Claim claim = claim_process(envp);
  if (page_taken && claim != Claim::off && env_any(envp, "PREPATCH_")) {
    const bool arm_state = sys::isa == arch::Isa::thumb2 && reinterpret_cast<const LowIslands*>(g.obj.table_addr + prepatch_config.low_islands)->island[0];
    say(prepatch_config.flags & config_shared_object ? "this shared object's " : "this program's ",
        arm_state ? "sites that need its islands of last resort trap when enabled (a signal per call), its ARM-state ones stay off: "
                  : "sites that need its islands of last resort trap when enabled (a signal per call): ",
        why);
  }
  if (claim == Claim::off) unmap_low_islands();
  if (claim != Claim::serve) return;
  g.objects = 1;
  serve(envp);
  // The registry is whole and this runtime ready: objects enrolling meanwhile waited for the magic
  // (read_registry). Where the page was not granted (a kernel before 4.17), there is none to write.
  // Nothing writes the page again: read-only from now on, so that a stray or hostile write in the
  // program cannot aim the runtime's calls through its pointers at a known address elsewhere.
  if (auto* page = reinterpret_cast<Registry*>(rendezvous_page); g.registry) {
    __atomic_store_n(&page->header.magic, rendezvous_magic, __ATOMIC_RELEASE);
    call(sys::nr_mprotect, static_cast<long>(rendezvous_page), 4096, sys::prot_read);
  }
}

// This runtime serving the process: the settings, the handlers, the hooks, and the sites
// PREPATCH_TRACE names.
void serve(char** envp) {
  const Settings set = parse_settings(envp, sys::isa);
  g.disabled = set.error;
  // A shared object whose runtime serves the process is never unmapped: every object enrolled later
  // calls into it. (One whose finalizer does not lead to the shim was kept loaded already.)
  if (constexpr u64 both = config_shared_object | config_fini_hooked; !g.disabled && (prepatch_config.flags & both) == both && !pin_object())
    g.disabled = "this shared object's runtime serves the process but it cannot be kept loaded (no dlopen found, or it is not in the loaded objects' list)";
  g.tracer = set.tracer;
  u64 own[4];
  own_trampolines(own);
  set_trampolines(g.obj, own);
  if (set.output) memcpy(g.output, set.output, str_len(set.output) + 1);  // (at most max_path_setting bytes)
  if (set.counts) memcpy(g.counts_env, set.counts, str_len(set.counts) + 1);
  g.buffer_bytes = set.buffer_bytes;
  g.ring_chunks = set.ring_chunks;
  g.file_mode = set.file_mode;
  g.start_pid = static_cast<u64>(call(sys::nr_getpid));
  g.wx_strict = set.wx_strict;
  g.use_signals = set.sync_signal;
  g.use_flush_icache = set.sync_flush_icache;
  if (!g.use_signals && !g.use_flush_icache) {
    if (long r = call(sys::nr_membarrier, sys::membarrier_register_private_expedited_sync_core, 0, 0)) membarrier_unavailable(r);
  }
  if ((traps && !install_handler(0)) || !install_handler(1) || (sigill_at_sites && !install_handler(2)))  // (AArch64, PPC64le: SIGTRAP's at a trap site's batch)
    g.disabled = sigill_at_sites ? "cannot install the SIGTRAP, SIGILL and signal 62 handlers" : "cannot install the SIGTRAP and signal 62 handlers";
  // The fatal signals, whose thread's last event the trace file marks (without, it is not marked).
  for (int which = first_fatal; !g.disabled && g.tracer != Tracer::count && which < 6; which++) install_handler(which);
#if defined(__x86_64__) || defined(__riscv) || defined(__arm__)
  if (!g.disabled) selftest();
#endif
#if defined(__arm__)
  if (!g.disabled) probe_counter();
#endif
  if (!g.disabled && g.tracer == Tracer::graph) hook_unwinder();
  const bool fork_handlers = !g.disabled && register_fork_handlers();
  if (!g.disabled) g.pthread_got = give_threads_altstacks();
  if (!g.disabled && g.wx_strict) wx_start(g.obj, fork_handlers);
  if (!g.disabled && g.tracer == Tracer::count) prepatch_count_fast = 1;
  g.filters = set.filters;
  g.recording = 1;
  reset_triggers();
  if (!g.disabled && g.filters.any()) {
    BatchLock lock;  // (no other thread runs yet; a library's runtime may be starting in a dlopen)
    if (!apply_filters(true)) say("the filters' site marks cannot be mapped: GRAPH_FUNCTION, GRAPH_NOTRACE, RETVAL and ARGS match nothing");
  }
  // Why tracing is off, said wherever a PREPATCH_ variable asked for something (a wrong
  // PREPATCH_TRACER alone, say, before a `ctl enable`).
  const char* trace = set.trace;
  if (g.disabled && ((trace && *trace) || g.asked)) return say("tracing is off: ", g.disabled);
  if (!trace || !*trace) return;
  char ebuf[256];
  Text err(ebuf, sizeof ebuf - 1);
  Outcome o = toggle(glob_list(trace), glob_list(set.notrace), true, err, true);
  ebuf[err.size()] = 0;
  if (!o.ok) say("PREPATCH_TRACE: ", ebuf);
  else if (o.matched == 0 && (prepatch_config.flags & config_shared_object))  // the executable may enroll next
    say("PREPATCH_TRACE: no site's function matches ", trace, " in the objects loaded so far (those loaded later follow it)");
  else if (o.matched == 0) say("PREPATCH_TRACE: no site's function matches ", trace);
}

}  // namespace

// Called once by the start routine (shim/entry_x86_64.S) with the stack pointer the kernel set up: argc,
// argv, envp, auxv. The program's entry runs after it returns, whatever happened here.
extern "C" void prepatch_init(uptr* sp) {
  const uptr argc = sp[0];
  char** envp = reinterpret_cast<char**>(sp + 1 + argc + 1);
  char** e = envp;
  while (*e) e++;
  bool secure = false;
  for (uptr* aux = reinterpret_cast<uptr*>(e + 1); aux[0]; aux += 2) {
    take_aux(aux, g.obj.phdr, g.obj.phnum, secure);
    if (aux[0] == 31 /* AT_EXECFN */) g.obj.path = reinterpret_cast<const char*>(aux[1]);
  }
  // Secure execution (setuid, setgid, file capabilities, an LSM transition): the environment is the
  // caller's, who may not be trusted with this process's rights. The shim does nothing at all: no
  // variable is read, no handler installed, no file created; the program runs as if unprepared, with
  // every site a nop (SECURITY.md).
  if (secure) return;
  g.obj.bias = addr_of(__shim_base) - prepatch_config.blob_vaddr;
  g.main = {g.obj.phdr, g.obj.phnum, g.obj.bias};
  // A static binary starts without a thread pointer; the tracers read %fs:0 (and the tid glibc keeps
  // in its thread block) from the first traced call on, so until the C library sets its own, it is ours.
#if defined(__x86_64__)
  u64 fs = 0;
  if (call(sys::nr_arch_prctl, 0x1003 /* ARCH_GET_FS */, reinterpret_cast<long>(&fs)) == 0 && fs == 0) {
    *reinterpret_cast<u64*>(early_tcb) = addr_of(early_tcb);
    *reinterpret_cast<u32*>(early_tcb + glibc_tid_offset) = static_cast<u32>(call(sys::nr_gettid));
    call(sys::nr_arch_prctl, 0x1002 /* ARCH_SET_FS */, reinterpret_cast<long>(early_tcb));
  }
#endif
  start(envp);
}

namespace {

// The kernel's copy of the auxiliary vector (/proc/self/auxv): the executable's program headers and
// whether execution is secure. False when it cannot be read: the caller then treats it as secure.
bool read_auxv(State::Program& main, bool& secure) {
  const int fd = static_cast<int>(call(sys::nr_openat, sys::at_fdcwd, reinterpret_cast<long>("/proc/self/auxv"), sys::o_rdonly | sys::o_cloexec));
  if (fd < 0) return false;
  uptr aux[2 * 64];
  long n = 0;
  for (long r; n < static_cast<long>(sizeof aux); n += r)
    if ((r = call(sys::nr_read, fd, reinterpret_cast<long>(aux) + n, static_cast<long>(sizeof aux) - n)) <= 0) break;
  call(sys::nr_close, fd);
  bool ended = false;
  main = {};
  secure = true;
  for (long i = 0; i + 1 < n / static_cast<long>(sizeof(uptr)) && !ended; i += 2) {
    ended = aux[i] == 0;  // AT_NULL
    take_aux(aux + i, main.phdr, main.phnum, secure);
  }
  if (!ended || !main.phdr) return false;
  // The executable's bias: where its PT_PHDR ended up against where it was linked (0 without one: a
  // static executable, which lists no loaded objects anyway).
  if (const u8* ph = find_phdr(main.phdr, main.phnum, 6 /* PT_PHDR */))
    main.bias = addr_of(main.phdr) - load_le(ph + elfc::p_vaddr, elfc::word);
  return true;
}

// This shared object's entry in the loaded objects' list (nullptr when it is not found there).
const LinkMap* own_link_map() {
  const RDebug* r = loaded_objects();
  for (const LinkMap* m = r ? r->map : nullptr; m; m = m->next)
    if (m->addr == g.obj.bias && m->name && *m->name) return m;
  return nullptr;
}

// Keeps this shared object loaded for the rest of the process (RTLD_NODELETE, through the C library's
// own dlopen of it, already loaded): as the object whose runtime serves the process, or one whose
// finalizer does not lead to the shim, its handlers, hooks and trampolines must outlive any dlclose.
bool pin_object() {
  using Dlopen = void* (*)(const char*, int);
  const auto dlopen = reinterpret_cast<Dlopen>(find_loaded(loaded_objects(), "dlopen"));
  const LinkMap* m = own_link_map();
  return m && dlopen && dlopen(m->name, 0x1 | 0x4 | 0x1000) != nullptr;  // RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE
}

}  // namespace

// A prepared shared object's DT_INIT, which the preparer pointed here: ld.so calls it with
// the process's argc, argv and environment when it loads the object, at start or by dlopen, before the
// object's constructors. The shim starts as in an executable, its program headers those the preparer
// recorded; then the object's own DT_INIT runs, whatever happened here.
extern "C" void prepatch_object_init(int argc, char** argv, char** envp) {
  const u64 bias = addr_of(__shim_base) - prepatch_config.blob_vaddr;
  const long data = reinterpret_cast<long>(__shim_data);
  if (call(sys::nr_mprotect, data, reinterpret_cast<long>(__shim_mem_end) - data, sys::prot_read | sys::prot_write) == 0) {
    bool secure = true;
    g.obj.bias = bias;
    g.obj.phdr = reinterpret_cast<const u8*>(prepatch_config.phdr_vaddr + bias);
    g.obj.phnum = prepatch_config.phnum;
    // Secure execution, or not known: nothing at all, as in an executable (SECURITY.md).
    if (read_auxv(g.main, secure) && !secure) {
      if (const LinkMap* m = own_link_map()) g.obj.path = m->name;  // the loader's copy, valid while the object is loaded
      if ((prepatch_config.flags & config_fini_hooked) || pin_object()) start(envp);  // (serving, it is kept loaded: serve())
      else say("this shared object's sites stay off: it cannot be kept loaded (no dlopen found, or it is not in the loaded objects' list)");
    }
  }
  if (prepatch_config.entry) reinterpret_cast<void (*)(int, char**, char**)>(prepatch_config.entry + bias)(argc, argv, envp);
}

// A prepared shared object's DT_FINI (or first fini_array entry, the last to run), which the preparer
// pointed here (config_fini_hooked): ld.so calls it when it unloads the object (dlclose), or at exit,
// after the object's destructors. The object's own finalizer runs first; then, when another object's
// runtime serves this one, this one is handed back (Registry::leave) before the loader unmaps it. An
// object whose runtime serves the process is kept loaded (serve()): this runs at exit only, and leaves
// everything as it is for the finalizers still to run.
extern "C" void prepatch_object_fini() {
  const u64 bias = addr_of(__shim_base) - prepatch_config.blob_vaddr;
  if (prepatch_config.fini) reinterpret_cast<void (*)()>(prepatch_config.fini + bias)();
  if (const u64 leave = g.leave) {
    g.leave = 0;
    reinterpret_cast<void (*)(u64)>(leave)(addr_of(prepatch_forward_to));
    unmap_low_islands();
  }
}
