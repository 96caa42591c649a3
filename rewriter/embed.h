// Puts the shim into a prepared binary: one loadable segment, after every other one, holding the
// __patch_sites table, then the shim blob (code and read-only data, then its writable page), with the
// blob's Config filled in; the entry point moves to the shim's start routine (docs/SHIM.md).
#pragma once
#include <vector>

#include "elf/elf.h"
#include "elf/writer.h"
#include "rewriter/sites.h"

namespace prepatch {

struct RuntimeSegment {
  std::vector<u8> data;  // the segment's bytes: table, padding, blob image, zeroed .bss
  u64 table_size = 0;    // the table is data[0, table_size)
  u64 blob_offset = 0;   // the blob starts here (page-aligned)
  u64 entry = 0;         // the new e_entry: the shim's start routine
  u64 tramp[3] = {};     // link-time addresses of the trampolines, by SiteKind - 1
  // RISC-V -pg: the jump to the mcount trampoline that replaces the start of what the sites call
  // (Discovery::mcount_via); len 0 when there is none.
  elf::Patch redirect;
};

// How many bytes runtime_segment() appends to the table of a binary for ELF machine `machine` at most:
// a table whose vector has this much spare capacity is not copied.
u64 runtime_segment_tail(u16 machine);

// Lays out the runtime segment for `elf` at link-time address `vaddr` around the table's bytes, with
// the Config for discovery `d` (its sites, the binary's own unwinder entry points).
// Throws InputError when a prepared site could not reach its trampoline with its call form (rel32:
// +-2 GiB; AArch64 bl: +-128 MiB; PPC64 bl: +-32 MiB; RISC-V auipc+jalr: +-2 GiB), or RISC-V's
// redirect cannot be written.
RuntimeSegment runtime_segment(const elf::Elf& elf, std::vector<u8> table, u64 vaddr, const Discovery& d);

// The reason `elf` cannot carry the shim (a shared object), or empty; throws InputError, naming
// e_machine, when this build has no shim for its ISA.
std::string cannot_embed(const elf::Elf& elf);

}  // namespace prepatch
