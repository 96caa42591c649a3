// What the shim and the tools outside it agree on: the site table's constants, the blob's header (written by shim/entry_x86_64.S, read by
// the preparer), the configuration the preparer fills in, the counts file, and the control channel.
// Freestanding (the shim includes it): elf/ints.h only. Documented in docs/SHIM.md.
#pragma once
#include "elf/ints.h"

namespace prepatch::shim {

// The __patch_sites table (docs/FORMAT.md): written by rewriter/table.cc, read in place by the shim
// (shim/core.h TableView) and from files by `prepatch sites`.
PREPATCH_CONSTANT char table_magic[8] = {'P', 'R', 'E', 'P', 'A', 'T', 'C', 'H'};
inline constexpr u16 table_version = 1;
inline constexpr u16 table_header_size = 64;
inline constexpr u16 table_entry_size = 16;
// TableHeader flags bit 1: AArch64 -pg functions with sites sign their return address before the site
// (pac-ret), so the graph tracer cannot replace it (bit 0, pie, is the preparer's: rewriter/table.h).
inline constexpr u32 table_signed_returns = 2;
// TableHeader flags bit 2: some entry has site_flag_trap (below), so a batch enabling sites on AArch64
// or PPC64le, which lay no trap otherwise, needs the SIGTRAP handler and no thread blocking SIGTRAP.
inline constexpr u32 table_trap_sites = 4;
// TableEntry flags bit 3: no trampoline or branch island lies within the site's call's reach, so its
// enabled form is the ISA's trap (arch/forms.h trap_form), which the shim's handler resolves as the
// call (bits 0-2 are the preparer's: rewriter/table.h).
inline constexpr u8 site_flag_trap = 8;

// At offset 0 of the blob. Offsets are from the blob's start; the blob's data (.data/.bss) starts at
// `data_off` (page-aligned) and runs to `mem_size`; everything before it is code and read-only data.
struct BlobHeader {
  char magic[8];        // "PPSHIM\0\1"
  u32 version;          // blob_version
  u32 header_size;      // sizeof(BlobHeader)
  u32 start;            // the start routine e_entry points at
  u32 trampoline[3];    // by SiteKind - 1: fentry, mcount, patchable (ARM32: fentry's is the ARM-state sites' entry)
  u32 config;           // the Config the preparer fills in (inside the data)
  u32 data_off;         // page-aligned start of the writable part
  u32 file_size;        // bytes of the blob image (code, rodata, data)
  u32 mem_size;         // the same plus .bss, page-aligned
  u32 object_start;     // what a prepared shared object's DT_INIT (or first init_array entry) points at
  u32 object_fini;      // what its DT_FINI (or first fini_array entry, the last to run) points at
};
static_assert(sizeof(BlobHeader) == 56);
PREPATCH_CONSTANT char blob_magic[8] = {'P', 'P', 'S', 'H', 'I', 'M', 0, 1};
inline constexpr u32 blob_version = 8;  // 7: LowIslands had no `lowest` or `literal` (one page, below 64-bit executables only); 6: no Config::low_islands; 5: no Config::entry_islands; 4: no Config::stub_islands; 3: no Config::island

// Filled in by the preparer. Addresses are link-time; the shim adds the load bias, which it learns by
// comparing where it runs with `blob_vaddr`.
struct Config {
  u64 blob_vaddr;   // link-time address of the blob's first byte
  u64 table_vaddr;  // link-time address of the __patch_sites table
  u64 table_size;
  u64 entry;        // the program's own entry point (e_entry before preparing); in a shared object,
                    // its own DT_INIT before preparing (0: none)
  u64 flags;        // config_* bits
  // The binary's own definitions of the unwinder's entry points (a static binary, -static-libgcc,
  // -static-libstdc++), which the graph tracer hooks in place (docs/SHIM.md, "Exceptions"), in
  // unwinder_names' order: link-time addresses (0: not defined here) and how many bytes of whole
  // position-independent instructions at each the hook's jump displaces (0: it cannot be hooked).
  u64 unwinder[4];
  u8 unwinder_len[4];
  // RISC-V and Thumb-2 -pg: where the sites' frames (mcount_frame_entry_sp and mcount_frame_ra, or
  // thumb_frame_entry_sp and thumb_frame_lr) lie, one u32 per table
  // entry in its order, as an offset from table_vaddr; 0: none (another ISA, or no mcount sites).
  u32 mcount_frames;
  // RISC-V -pg: the link-time address the sites' calls keep (the _mcount PLT entry, or _mcount), which
  // the preparer made a jump to the mcount trampoline; the shim's call form for those sites targets it.
  // 0 elsewhere.
  u64 mcount_via;
  // A shared object: the link-time address of its program headers (the ELF header's e_phoff inside
  // its first loaded segment) and their number; 0 in an executable, whose headers the kernel reports.
  u64 phdr_vaddr;
  u64 phnum;
  // The binary's GNU build ID (its first build_id_max bytes; size 0: none), which the shim writes into
  // the trace and counts files so that readers can tell which build wrote them.
  u8 build_id_size;
  u8 build_id[20];
  u8 reserved2[3];
  // A shared object whose finalizer leads to the shim (config_fini_hooked): the link-time address of
  // its own DT_FINI or first fini_array entry before preparing, which the shim calls first (0: none).
  u64 fini;
  // Branch islands (arch/island.h), by SiteKind - 1: the link-time address of the one a site of that
  // kind calls when its call form does not reach the kind's trampoline (0: every site reaches it).
  // Each jumps on to the trampoline, writing only registers the ABI gives call veneers. ARM32: [0]
  // (no fentry sites there) is the ARM-state sites' entry as an island (arch/thumb2.h).
  u64 island[3];
  // ARM32, AArch64 and PPC64le -pg sites that reach neither their trampoline nor island[1] (ARM32's
  // ARM-state ones: island[0]): branch islands over the PLT entries and linker stubs their calls
  // entered before preparing, each jumping on to the mcount trampoline (ARM32's ARM-state ones: to
  // their entry). Their link-time addresses, u64 each, sorted, lie at offset stub_islands from
  // table_vaddr (0: none); a site calls the nearest it reaches.
  u32 stub_islands;
  u32 stub_island_count;
  // AArch64, PPC64le, Thumb-2 and x86-64 patchable sites that reach neither their trampoline nor island[2]:
  // branch islands over the nops before a function's entry (-fpatchable-function-entry=N,M), each
  // jumping on to the patchable trampoline; laid out as stub_islands are, after them.
  u32 entry_islands;
  u32 entry_island_count;
  // Sites that reach none of those (no room for an island within their reach: a .bss beyond it and no
  // zero padding after the text, nor nops enough before the entries): the branch islands on a page
  // below the object's lowest segment, which the shim maps at start (LowIslands, at offset
  // low_islands from table_vaddr; 0: none).
  u32 low_islands;
  u32 reserved3;
};
static_assert(sizeof(Config) == 184);
// A RISC-V -pg site's frame (Config::mcount_frames), as the preparer read its function's prologue:
// bits 0-15 how far above the site's sp the entry's was, bits 16-31 where ra was saved, each in
// doublewords from the site's sp; 0 where the prologue was not followed (rewriter/sites_riscv64.cc).
inline constexpr u64 mcount_frame_entry_sp(u32 frame) { return u64{frame & 0xffff} * 8; }
inline constexpr u64 mcount_frame_ra(u32 frame) { return u64{frame >> 16} * 8; }
// A Thumb-2 -pg site's frame (Config::mcount_frames too), in words from the word its `push {lr}`
// stored: bits 0-15 how far above that word the entry's sp was, bits 16-31 where the prologue stored
// lr (0: it did not, and the pushed word is the one the function returns through); 0 where the
// prologue was not followed (rewriter/sites_thumb2.cc).
inline constexpr u64 thumb_frame_entry_sp(u32 frame) { return u64{frame & 0xffff} * 4; }
inline constexpr u64 thumb_frame_lr(u32 frame) { return u64{frame >> 16} * 4; }
inline constexpr unsigned build_id_max = 20;
// Config::flags: the binary has a symbol table and defines neither fork nor _Fork, so it cannot fork
// through glibc (what PREPATCH_WX=strict needs of a static binary, whose forks it cannot follow).
inline constexpr u64 config_forkless = 1;
// Config::flags: a shared object, started from its DT_INIT (BlobHeader::object_start), not e_entry.
inline constexpr u64 config_shared_object = 2;
// Config::flags: the shared object's DT_FINI or first fini_array entry leads to the shim, which then
// hands the object back (Registry::leave) before the loader unmaps it; without, the shim keeps the
// object loaded (docs/SHIM.md, "Unloading").
inline constexpr u64 config_fini_hooked = 4;
// Config::flags: an object with islands of last resort (Config::low_islands), whose page its own
// start maps before anything else (LowIslands, below).
inline constexpr u64 config_low_islands = 8;

// The branch islands of last resort (Config::low_islands), below an object's lowest segment. The shim
// maps `low_islands_page` bytes at `page` (+ the load bias; a PIE's or a shared object's sum wraps
// below its first segment) with MAP_FIXED_NOREPLACE; where that is taken (below an executable,
// something mapped there first; below a shared object, what the loader placed there), each 64 KiB
// below it down to `lowest`, the lowest page every site that needs an island still reaches (a
// RISC-V64 executable's: `page`, which its sites' auipc names for good; a RISC-V64 shared object's
// shim aims its sites' auipc, and the -pg sites' redirect, at the page it took), and takes the first
// that is free. Before anything else, it copies `code` to the page's last `low_islands_code` bytes,
// adds to each island's literal (at `literal`, within `code`: a word of the object's width, the
// distance from a point in the island to its trampoline) how far below `page` it went, and makes the
// page read-only and executable; where it cannot, the object's sites stay off, and it says why where
// a PREPATCH_ variable is set. Each island jumps on to its kind's trampoline as every other island
// does (arch/island.h, proven by the preparer at `page` and at `lowest`), position-independent but
// for that literal, which the preparer checks too.
inline constexpr u64 low_islands_page = 0x10000;  // (a 64 KiB page: kernels of 4 and 64 KiB pages map it)
inline constexpr u64 low_islands_code = 192;     // three islands of at most 64 bytes, by SiteKind - 1
struct LowIslands {
  u64 page;       // link-time address, 64 KiB-aligned: the lowest segment's 64 KiB page, less 64 KiB
  u64 island[3];  // by SiteKind - 1, each island's link-time address in the page's last bytes (0: none)
  u8 code[low_islands_code];
  u64 lowest;         // the lowest link-time page the islands may go on (a RISC-V64 executable's: `page`)
  u16 literal[3];     // by SiteKind - 1, where the island's literal lies in `code`
  u16 reserved;
};
static_assert(sizeof(LowIslands) == 240);

// One runtime per process (docs/SHIM.md, "Shared objects"): the first prepared object whose shim
// starts maps this page with MAP_FIXED_NOREPLACE and serves the process; `prepatch ctl` takes the page
// in /proc/PID/maps as the sign that a prepared shared object's runtime runs there. One address for
// 64-bit processes, another below 2 GiB for 32-bit ones (ARM32).
inline constexpr u64 rendezvous_page_64 = 0x7e5e00000000, rendezvous_page_32 = 0x7e5e0000;
inline constexpr u64 rendezvous_page = sizeof(void*) == 8 ? rendezvous_page_64 : rendezvous_page_32;
// What the page begins with: the magic (written last, so a reader that sees it sees the rest), and the
// version of what the page means to the runtimes that meet there. Objects whose runtimes hold other
// versions cannot share one runtime: the one that finds the page says so and leaves its sites off.
// Version 0 is the page of the runtimes that wrote only the magic (before 2026-12-04).
struct RendezvousHeader {
  u64 magic;
  u32 abi;
  u32 reserved;
};
inline constexpr u64 rendezvous_magic = 0x014d544e55525050;  // "PPRUNTM\1", as a little-endian number
// Any change to Registry or Enrollment (their layout or meaning) takes a new number: objects meet only
// when theirs is the same.
inline constexpr u32 runtime_abi = 10;  // 1: the page held no registry (each object's own runtime or none);
                                       // 2: no Registry::leave (every object kept loaded);
                                       // 3: Enrollment::config had no `island` (Config before blob_version 4)
                                       // 4: ... no `stub_islands` (Config before blob_version 5), and
                                       //    Enrollment::forward_to had 4 words (x86-64: no prepatch_on_call)
                                       // 5: ARM32's Enrollment::tramp[0] was the mcount trampoline (no ARM-state sites)
                                       // 6: ... no `entry_islands` (Config before blob_version 6)
                                       // 7: ... no `low_islands` (Config before blob_version 7)
                                       // 8: no Enrollment::low_page (Config before blob_version 8)
                                       // 9: no trap sites (table flag trap), and an object whose islands of
                                       //    last resort found no page stood down instead of enrolling

// What a runtime of this object's ABI finds on the page after the header: where the runtime serving the
// process enrolls another prepared object (written before the magic).
struct Registry {
  RendezvousHeader header;
  // bool enroll(const Enrollment*, char* why, u32 why_size): the object is served from now on (true),
  // or its sites stay off for the reason put in `why` (false). Called from the object's start, with
  // the loader's lock held (its DT_INIT): objects enroll one at a time.
  u64 enroll;
  // void leave(u64 forward_to): the object enrolled with that `forward_to` is about to be unmapped
  // (called from its finalizer, the loader's lock held): its sites are switched off and the runtime
  // keeps no pointer into it once this returns.
  u64 leave;
};

// What a prepared object's runtime hands the serving runtime when it enrolls (run-time addresses): its
// table and text, and the trampolines in it that its sites are to call (within their reach), which go
// on to the serving runtime's through `forward_to` (u64[5], which the serving runtime fills): on
// x86-64 they are forwarders, one indirect jump each to the serving runtime's fentry, mcount,
// patchable and count trampolines, and [4] is its prepatch_on_call, which the object's own
// trampolines call on (its branch islands lead there); elsewhere the object's own trampolines, whose
// prepatch_count calls the serving runtime's (forward_to[0]), and on ARM32 tramp[0] is its ARM-state
// sites' entry (shim/entry_arm.S prepatch_arm_entry).
struct Enrollment {
  u64 size;                    // sizeof(Enrollment)
  u64 bias;                    // run-time minus link-time addresses
  u64 phdr, phnum;             // the object's program headers
  u64 path;                    // const char*: the object's file as the loader found it (0: not known)
  u64 config;                  // const Config*: the object's own (table, build ID, mcount_via)
  u64 tramp[4];                // its trampolines to call, as the serving runtime's own: fentry, mcount, patchable, count
  u64 forward_to;              // u64[5]*: where they go on to
  u64 low_page;                // where its shim mapped its islands of last resort (LowIslands; 0: none)
};

// The unwinder's entry points the graph tracer hooks: where an exception starts or resumes unwinding,
// and where a handler catches it. Arrays of characters, not pointers: the shim has no loader to
// relocate a table of pointers.
PREPATCH_CONSTANT char unwinder_names[4][26] = {"_Unwind_RaiseException", "_Unwind_Resume", "_Unwind_Resume_or_Rethrow",
                                               "__cxa_begin_catch"};

// The counts file (PREPATCH_COUNTS, default prepatch.PID.counts in the working directory): a header,
// then one section per object the runtime serves, in the order they enrolled, each page-aligned: its
// CountsObject, one little-endian u64 per table entry, in table order, updated atomically while the
// program runs (a shared file mapping, so the counts survive the process), then its table's copy. A
// section is complete before the previous one's `next` (or the header's `first`) names it.
struct CountsHeader {
  char magic[8];     // "PPCOUNT\1"
  u32 version;       // counts_version
  u32 header_size;   // 64
  u64 objects;       // sections linked so far
  u64 pid;           // the process that created the file (at offset 24 in every version)
  u64 first;         // offset of the first section (page-aligned), 0 while there is none
  u8 reserved[24];
};
static_assert(sizeof(CountsHeader) == 64);
PREPATCH_CONSTANT char counts_magic[8] = {'P', 'P', 'C', 'O', 'U', 'N', 'T', 1};
// Version 1 (before 2026-12-04): one object, no sections: after the 64-byte header, `count` (offset 16)
// counters; `table_vaddr` at offset 32, `build_id_size` and `build_id` at 40.
inline constexpr u32 counts_version = 2;

// At the start of an object's section, 512 bytes; its counters follow, then a copy of its
// __patch_sites table (so the counts are named without the binary).
struct CountsObject {
  char magic[8];     // "PPCOBJ\0\1"
  u64 count;         // counters: the object's table entries
  u64 table_vaddr;   // link-time address of its table, to match the section with its binary
  u64 load_bias;     // run-time minus link-time addresses of the object
  u64 next;          // offset of the next section, 0 while there is none
  u8 build_id_size;  // the object's GNU build ID, its first 20 bytes (Config::build_id); 0: none
  u8 build_id[20];
  u8 reserved[3];
  char path[256];    // the object's file as it was loaded, NUL-terminated ("": not known)
  u64 table_offset;  // the table copy, from the section's start (after the counters)
  u64 table_size;
  u8 reserved2[176];
};
static_assert(sizeof(CountsObject) == 512);
PREPATCH_CONSTANT char counts_object_magic[8] = {'P', 'P', 'C', 'O', 'B', 'J', 0, 1};

// The tracer a prepared process runs when a site is enabled (PREPATCH_TRACER, chosen at start).
enum class Tracer : u32 { count = 1, function = 2, graph = 3 };

// The trace file of the `function` and `graph` tracers (PREPATCH_OUTPUT, default prepatch.PID.trace in
// the working directory; docs/FORMAT.md). A shared file mapping the shim writes while the program runs,
// so whatever was written survives a crash or SIGKILL. Layout: this header (one page), a copy of the
// binary's __patch_sites table at table_offset (the names), then chunks of chunk_size bytes from
// chunk_offset. A thread claims a chunk (chunks_claimed, atomically), writes records into it (16 bytes
// under `function`, 8 under `graph`) and publishes how many bytes are complete in the chunk's `used`
// after each one. The file grows a chunk at
// a time; when chunk_capacity chunks are claimed, later events are dropped and counted in `lost`.
struct TraceHeader {
  char magic[8];          // "PPTRACE\1"
  u32 version;            // trace_version
  u32 header_size;        // sizeof(TraceHeader)
  u32 tracer;             // Tracer
  u32 chunk_size;         // bytes per chunk, its ChunkHeader included
  u64 pid;                // the process that writes the file
  u64 table_offset;       // the copy of __patch_sites
  u64 table_size;
  u64 chunk_offset;       // the first chunk (page-aligned)
  u64 chunk_capacity;     // chunks the file may hold (PREPATCH_BUFFER)
  u64 chunks_claimed;     // atomic; may exceed chunk_capacity by the failed claims
  u64 lost;               // atomic: events dropped because every chunk was claimed
  u64 unwound;            // atomic (graph): frames left without their return (longjmp, exception, thread exit)
  u64 tsc_hz;             // TSC ticks per second, measured when the file was created
  u64 tsc0;               // the TSC when the file was created
  u64 monotonic0;         // CLOCK_MONOTONIC (ns) at the same moment
  u64 realtime0;          // CLOCK_REALTIME (ns) at the same moment
  u64 load_bias;          // run-time minus link-time addresses of the binary
  char object[256];       // the traced object's file as it was loaded, NUL-terminated ("": not known)
  u8 build_id_size;       // the object's GNU build ID, its first 20 bytes (Config::build_id); 0: none
  u8 build_id[20];
  u8 reserved0[3];
  // PREPATCH_BUFFER=ring:SIZE: the chunks of each thread's ring (0: no rings, in files before them too).
  // A thread claims them at once and writes them in turn, overwriting its oldest.
  u64 ring_chunks;
  // A snapshot (docs/SHIM.md, "Snapshots"): 1 made by `prepatch ctl PID snapshot`, 2 by a trigger; 0 the
  // file the process writes (and in files before this field). Calls open at a snapshot's end were cut
  // by it, not left unfinished.
  u64 snapshot;
  // Why chunks claimed since lie past the file's end or hold nothing: trace_stopped_* (0: nothing went
  // wrong, and in files before this field). The events they would have held are counted in `lost`.
  u32 stopped;
  u8 reserved[4096 - 428];
};
static_assert(sizeof(TraceHeader) == 4096 && __builtin_offsetof(TraceHeader, ring_chunks) == 408 && __builtin_offsetof(TraceHeader, snapshot) == 416 &&
              __builtin_offsetof(TraceHeader, stopped) == 424);
// TraceHeader::stopped: the program closed the file's descriptor or put another file under it (the
// file grows no more: for good), or the disk had no room for a chunk (fallocate, or writing it, failed).
inline constexpr u32 trace_stopped_descriptor = 1, trace_stopped_disk = 2;
// Bytes per chunk of a trace file the shim writes; the most PREPATCH_BUFFER=ring:SIZE takes per thread,
// and for all threads' rings together (the file's span: threads past it record nothing, and lose
// their events, counted).
inline constexpr u64 trace_chunk_bytes = 256 * 1024, ring_max_bytes = u64{1} << 30, rings_max_bytes = u64{64} << 30;
PREPATCH_CONSTANT char trace_magic[8] = {'P', 'P', 'T', 'R', 'A', 'C', 'E', 1};
inline constexpr u32 trace_version = 4;  // 1: graph records were 16 bytes; 2: no object records; 3: no value records

// At the start of every chunk. `used` is stored (release) after each complete record, so a reader never
// counts a half-written one.
struct ChunkHeader {
  u32 magic;        // chunk_magic once the chunk is claimed and its header written
  u32 tid;          // the thread writing it
  u64 seq;          // this thread's chunk number: 0, 1, 2...
  u64 used;         // bytes of complete records after this header
  u64 tsc;          // the TSC when the chunk was claimed: graph records' times are offsets from it
  u64 depth;        // graph: the thread's call depth before the chunk's first record
  // A fatal signal (SIGSEGV, SIGBUS, SIGABRT) the thread got while this was its chunk, and where its
  // records then stood (`used` at that moment); 0: none (or the program's own handler took it and
  // returned). In files before it: 0.
  u32 signal, signal_at;
  u64 reserved[2];
};
static_assert(sizeof(ChunkHeader) == 64 && __builtin_offsetof(ChunkHeader, signal) == 40);
inline constexpr u32 chunk_magic = 0x4b4e4843;  // "CHNK"

// An object the runtime serves beside the one the header describes (version 3): its record takes
// `chunks` consecutive chunks, claimed as a thread claims one, the first starting with this header,
// then a copy of the object's __patch_sites table. Records name its sites first_site, first_site + 1,
// ... (the header's object's sites are 0, 1, ...). `magic` is stored last.
struct ObjectChunk {
  u32 magic;          // object_magic
  u32 chunks;         // consecutive chunks the record spans
  u64 first_site;     // the number its first site has in records
  u64 table_size;     // bytes of the table copy after this header
  u64 load_bias;      // run-time minus link-time addresses of the object
  u8 build_id_size;   // its GNU build ID, its first 20 bytes (Config::build_id); 0: none
  u8 build_id[20];
  u8 reserved[3];
  char path[256];     // the object's file as it was loaded, NUL-terminated ("": not known)
  // A `function` record's caller in this object is caller_base + (its link-time address - caller_lo),
  // for addresses in [caller_lo, caller_lo + caller_span) (span 0: its callers are not recorded).
  // The header's object's callers are their link-time addresses, below the first object's base.
  u64 caller_base, caller_lo, caller_span;
  u64 reserved2[2];
};
static_assert(sizeof(ObjectChunk) == 352);
inline constexpr u32 object_magic = 0x544a424f;  // "OBJT"

// A `function` record: 16 bytes, two little-endian u64. `time` is the TSC. `info`: bits 0-1 the type
// (rec_call), bits 2-25 the site's index in the table, bits 26-63 the caller.
struct TraceRecord {
  u64 time;
  u64 info;
};
static_assert(sizeof(TraceRecord) == 16);
// A `graph` record: one little-endian u64, bits 0-1 the type (entry, exit, unwound), bits 2-25 the
// site's index, bits 26-63 the TSC minus the chunk's `tsc`. The depth is not stored: an entry is at the
// depth before it and adds one, an exit or unwound record takes one off and is at the depth after it,
// counting from the chunk's `depth`. A thread starts a new chunk before an offset would not fit.
enum RecordType : u64 {
  rec_entry = 0,    // graph: the function was entered
  rec_exit = 1,     // graph: it returned
  rec_call = 2,     // function: it was called; the rest is the caller's link-time return address
  rec_unwound = 3,  // graph: it was left without returning (longjmp, exception, thread exit); time = when noticed
};
inline constexpr unsigned rec_site_shift = 2, rec_rest_shift = 26;
inline constexpr u64 rec_site_limit = u64{1} << 24, rec_rest_limit = u64{1} << 38;  // rest: caller or TSC offset
inline constexpr u64 rec_caller_unknown = rec_rest_limit - 1;  // the caller lies outside the binary's first 256 GiB
// A value record (version 4; PREPATCH_ARGS, PREPATCH_RETVAL): its site is rec_site_value, and it
// carries a value of a record in the same chunk: the arguments of an entry or call record follow it,
// the return value of an exit record precedes it. Its `rest`: bits 0-2 the value's index (0-5:
// argument 1-6, 7: the return value), then
// - function (16 bytes): bits 3-37 zero; the record's first word is the value;
// - graph (8 bytes): type 0, bit 3 set when the value continues in the next record, bits 4-37 the value
//   (34 bits, sign-extended to 64 unless it continues: then they are its low bits); the next record,
//   type 1, holds its bits 34-63 in its `rest`.
inline constexpr u64 rec_site_value = rec_site_limit - 1;
inline constexpr u64 rec_value_retval = 7, rec_value_continued = 8;
inline constexpr unsigned rec_value_bits = 34;

// The control channel (prepatch ctl). A request is a file `<dir>/<pid>.<id>.req` (dir =
// /tmp/prepatch-<uid>, mode 0700) holding one command line; the client then sends ctl_signal to one
// thread with rt_tgsigqueueinfo, si_code SI_QUEUE and si_value = message_value(ctl_magic, ctl_tag, id).
// The shim answers
// in `<dir>/<pid>.<id>.reply`, written to a temporary name and renamed, so the client never reads half.
// SIGTRAP is kept for breakpoints alone, so a program that takes SIGTRAP over does not cut the channel
// (and the next batch takes it back).
// SIGRTMAX-2 (62): glibc reserves the lowest real-time signals, not the top ones; qemu-user, where the
// AArch64 and PPC64le shims are tested, keeps the top two (63, 64) for itself.
inline constexpr int ctl_signal = 62;
inline constexpr u64 ctl_magic = 0x50524550;   // "PREP": a control request
inline constexpr u64 sync_magic = 0x50535943;  // "PSYC": the signal fallback's sync request (shim to itself, ctl_signal)
// A 32-bit process (ARM32, natively, as a compat process or under qemu-user) receives only the low 32
// bits of si_value: there a tag byte marks the message, and the id has 24 bits (a request's id is the
// client's pid, below PID_MAX_LIMIT = 2^22; a sync round's number is taken modulo 2^24).
inline constexpr u64 ctl_tag = 0xc7, sync_tag = 0xc8;
inline constexpr u32 message_id_mask = 0xffffff;
constexpr u64 message_value(u64 magic, u64 tag, u32 id) { return magic << 32 | tag << 24 | (id & message_id_mask); }
// The id of a message received as `value` (what fits in an unsigned long), or -1 when it is not one
// of `magic` and `tag`.
constexpr long message_id(unsigned long value, u64 magic, u64 tag) {
  const u64 want = sizeof value == 8 ? magic << 8 | tag : tag;
  return u64{value} >> 24 == want ? static_cast<long>(value & message_id_mask) : -1;
}
inline constexpr u32 ctl_max_request = 4096;
PREPATCH_CONSTANT char ctl_dir_prefix[] = "/tmp/prepatch-";

}  // namespace prepatch::shim
