// Puts the shim into a prepared binary: one loadable segment, after every other one, holding the
// __patch_sites table, then the shim blob (code and read-only data, then its writable page), with the
// blob's Config filled in; the entry point moves to the shim's start routine (docs/SHIM.md).
#pragma once
#include <stdexcept>
#include <vector>

#include "arch/forms.h"
#include "elf/elf.h"
#include "elf/writer.h"
#include "rewriter/sites.h"

namespace prepatch {

// Branch islands (arch/island.h) after the bytes of an executable segment of the input, which grows
// to cover them; size 0: none.
struct Island {
  u64 vaddr = 0, offset = 0;  // link-time address and file offset of the first
  u32 segment = 0;            // the program header that grows
  u64 grown = 0;              // its p_filesz and p_memsz then
  std::vector<u8> bytes;
};

struct RuntimeSegment {
  // The segment's bytes but the names: table header and entries, padding, blob image, zeroed .bss.
  // The table's string table (`names`, Discovery::strings) goes in at data offset `names_at`.
  Bytes data;
  u64 names_at = 0;
  std::span<const u8> names;
  u64 table_size = 0;    // the table is the segment's first table_size bytes, names included
  u64 blob_offset = 0;   // the blob starts here (page-aligned)
  u64 entry = 0;         // the new e_entry: the shim's start routine (0 in a shared object: unchanged)
  u64 tramp[3] = {};     // link-time addresses of the trampolines, by SiteKind - 1
  // RISC-V -pg: the jump to the mcount trampoline that replaces the start of what the sites call
  // (Discovery::mcount_via); len 0 when there is none.
  elf::Patch redirect;
  // Branch islands for the sites that cannot reach their trampoline (Config::island), and their
  // addresses by SiteKind - 1 (0: none), which RISC-V's patchable sites' `auipc t0, hi` must name.
  Island island;
  u64 island_of[3] = {};
  // ARM32, AArch64 and PPC64le -pg: branch islands over the PLT entries and linker stubs the sites' calls entered
  // (Discovery::mcount_stubs), for sites that reach neither (Config::stub_islands, whose addresses
  // lie at offset stub_islands_at of the segment).
  std::vector<elf::Patch> stub_islands;
  std::vector<u64> stub_island_addrs;  // their addresses, sorted
  u64 stub_islands_at = 0;
  // AArch64, PPC64le, Thumb-2 and x86-64 patchable sites that reach neither: branch islands over the nops
  // before functions' entries (Discovery::pre_entry; Config::entry_islands, at entry_islands_at).
  std::vector<elf::Patch> entry_islands;
  std::vector<u64> entry_island_addrs;
  u64 entry_islands_at = 0;
  // The islands of last resort for sites that reach none of the above, on a page below the lowest
  // segment that the shim maps at start (shim::LowIslands, at low_islands_at of the segment; 0: no
  // room reserved), their addresses (empty: none written), and by SiteKind - 1 (0: none), which
  // RISC-V's patchable sites' auipc may name; the lowest page the shim may take for them instead,
  // where that one is taken.
  u64 low_islands_at = 0;
  std::vector<u64> low_island_addrs;
  // The sites that reach none of the islands either (a text larger than their call's reach with no
  // room for one, or no page for the islands of last resort), sorted: marked site_flag_trap in the
  // table, enabled as the ISA's trap (arch/forms.h trap_form; ARM32's ARM-state sites have none and are
  // refused).
  std::vector<u64> trap_sites;
  u64 low_island_of[3] = {};
  u64 low_islands_lowest = 0;
  // AArch64: where the 8-byte islands among them jump (arch/aarch64.h encode_far_slot), on a 4 KiB
  // boundary of the segment, before the blob: its offset in the segment (0: none reserved).
  u64 far_slot_at = 0;
  // ARM32 PIE: the sled the 12-byte islands for ARM-state sites land in (arch/thumb2.h
  // encode_arm_far_island), before the blob: its offset in the segment and its bytes' count (0: none).
  u64 arm_sled_at = 0, arm_sled_size = 0;
  // A shared object: its DT_INIT's value, or its first init_array entry's, made the shim's object
  // start, and its DT_FINI's, or its first fini_array entry's, the shim's object end (where it has
  // one); none in an executable.
  std::vector<elf::Patch> hooks;
};

// For each site kind and call form, the lowest and the highest prepared site. A call form reaches a
// span of addresses around its site, so when a call reaches the shim from both ends of a group it
// reaches it from every site between them: runtime_segment checks these few rather than every site
// (a pass over 100k sites costs ~0.3 ms).
class Reach {
 public:
  void add(const Site& s, arch::CallForm f) {
    const auto k = static_cast<unsigned>(s.kind), c = static_cast<unsigned>(f);
    if (k >= kinds || c >= forms) throw std::logic_error("Reach: site kind or call form out of range");
    Group& g = groups_[k][c];
    if (!g.any || s.addr < g.lo.addr) g.lo = s;
    if (!g.any || s.addr > g.hi.addr) g.hi = s;
    g.any = true;
  }
  // Calls f(site, call form) for each group's ends.
  template <class F>
  void for_each_end(F f) const {
    for (unsigned k = 0; k < kinds; k++)
      for (unsigned c = 0; c < forms; c++)
        if (const Group& g = groups_[k][c]; g.any) {
          f(g.lo, static_cast<arch::CallForm>(c));
          f(g.hi, static_cast<arch::CallForm>(c));
        }
  }

 private:
  static constexpr unsigned kinds = 4, forms = static_cast<unsigned>(arch::CallForm::arm_b) + 1;
  struct Group {
    Site lo, hi;
    bool any = false;
  };
  Group groups_[kinds][forms];
};

// How many bytes runtime_segment() appends to the table of a binary for ELF machine `machine` at most:
// a table whose vector has this much spare capacity is not copied.
u64 runtime_segment_tail(u16 machine);

// Lays out the runtime segment for `elf` at link-time address `vaddr` around the table's header and
// entries (`table`, TableBuilder::finish) and d.strings, with the Config for discovery `d` (its sites,
// the binary's own unwinder entry points); `reach` holds the ends of its prepared sites. Where sites
// of a kind cannot reach their trampoline with their call form (AArch64 bl: +-128 MiB; PPC64 bl:
// +-32 MiB; Thumb bl: +-16 MiB; ARM-state b: +-32 MiB; x86-64 call, RISC-V auipc+jalr: +-2 GiB), it
// places branch islands within their reach (RuntimeSegment::island), and for RISC-V -pg sites one
// their redirect reaches; ARM32, AArch64 and PPC64le -pg sites may also call islands over the stubs
// their calls went through, and AArch64, PPC64le, Thumb-2 and x86-64 patchable sites islands over the nops
// before functions' entries. Throws InputError when a site reaches none, or RISC-V's redirect cannot
// be written.
RuntimeSegment runtime_segment(const elf::Elf& elf, Bytes table, u64 vaddr, const Discovery& d, const Reach& reach);

// The reason `elf` cannot carry the shim (not an executable or a shared object; a shared object of an
// ISA whose shim cannot start from DT_INIT yet), or empty; throws InputError, naming the offset, when
// this build has no shim for its ISA or a shared object has text relocations, no DT_INIT, or program
// headers outside its loaded segments.
std::string cannot_embed(const elf::Elf& elf);

}  // namespace prepatch
