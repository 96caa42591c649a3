// What the shim and the tools outside it agree on: the site table's constants, the blob's header (written by shim/entry.S, read by
// the preparer), the configuration the preparer fills in, the counts file, and the control channel.
// Freestanding (the shim includes it): elf/ints.h only. Documented in docs/SHIM.md.
#pragma once
#include "elf/ints.h"

namespace prepatch::shim {

// The __patch_sites table (docs/FORMAT.md): written by rewriter/table.cc, read in place by the shim
// (shim/core.h TableView) and from files by `prepatch sites`.
inline constexpr char table_magic[8] = {'P', 'R', 'E', 'P', 'A', 'T', 'C', 'H'};
inline constexpr u16 table_version = 1;
inline constexpr u16 table_header_size = 64;
inline constexpr u16 table_entry_size = 16;

// At offset 0 of the blob. Offsets are from the blob's start; the blob's data (.data/.bss) starts at
// `data_off` (page-aligned) and runs to `mem_size`; everything before it is code and read-only data.
struct BlobHeader {
  char magic[8];        // "PPSHIM\0\1"
  u32 version;          // blob_version
  u32 header_size;      // sizeof(BlobHeader)
  u32 start;            // the start routine e_entry points at
  u32 trampoline[3];    // by SiteKind - 1: fentry, mcount, patchable
  u32 config;           // the Config the preparer fills in (inside the data)
  u32 data_off;         // page-aligned start of the writable part
  u32 file_size;        // bytes of the blob image (code, rodata, data)
  u32 mem_size;         // the same plus .bss, page-aligned
};
static_assert(sizeof(BlobHeader) == 48);
inline constexpr char blob_magic[8] = {'P', 'P', 'S', 'H', 'I', 'M', 0, 1};
inline constexpr u32 blob_version = 1;

// Filled in by the preparer. Addresses are link-time; the shim adds the load bias, which it learns by
// comparing where it runs with `blob_vaddr`.
struct Config {
  u64 blob_vaddr;   // link-time address of the blob's first byte
  u64 table_vaddr;  // link-time address of the __patch_sites table
  u64 table_size;
  u64 entry;        // the program's own entry point (e_entry before preparing)
  u64 flags;        // reserved, 0
};
static_assert(sizeof(Config) == 40);

// The counts file (PREPATCH_COUNTS, default prepatch.PID.counts in the working directory): a header,
// then one little-endian u64 per table entry, in table order, updated atomically while the program
// runs (a shared file mapping, so the counts survive the process).
struct CountsHeader {
  char magic[8];     // "PPCOUNT\1"
  u32 version;       // 1
  u32 header_size;   // 64
  u64 count;         // entries, = the table's count
  u64 pid;           // the process that created the file
  u64 table_vaddr;   // link-time address of the table, to match the file with its binary
  u8 reserved[24];
};
static_assert(sizeof(CountsHeader) == 64);
inline constexpr char counts_magic[8] = {'P', 'P', 'C', 'O', 'U', 'N', 'T', 1};

// The control channel (prepatch ctl). A request is a file `<dir>/<pid>.<id>.req` (dir =
// /tmp/prepatch-<uid>, mode 0700) holding one command line; the client then sends ctl_signal to one
// thread with rt_tgsigqueueinfo, si_code SI_QUEUE and si_value = ctl_magic << 32 | id. The shim answers
// in `<dir>/<pid>.<id>.reply`, written to a temporary name and renamed, so the client never reads half.
// SIGTRAP is kept for breakpoints alone, so a program that takes SIGTRAP over does not cut the channel
// (and the next batch takes it back).
inline constexpr int ctl_signal = 64;  // SIGRTMAX: glibc reserves the lowest real-time signals, not it
inline constexpr u64 ctl_magic = 0x50524550;   // "PREP": a control request
inline constexpr u64 sync_magic = 0x50535943;  // "PSYC": the signal fallback's sync request (shim to itself, ctl_signal)
inline constexpr u32 ctl_max_request = 4096;
inline constexpr char ctl_dir_prefix[] = "/tmp/prepatch-";

}  // namespace prepatch::shim
