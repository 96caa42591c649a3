// The five ISAs side by side, as the plan checker and `prepatch plan` see them: facts (alignment,
// fetch atomicity, the architectural rule), a decoder per ISA (Zydis for x86-64, Capstone for AArch64,
// PPC64le and Thumb-2, our own for RISC-V), and each site kind's two forms at a concrete address.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "arch/plan.h"
#include "elf/types.h"

namespace prepatch::arch {

struct IsaInfo {
  Isa isa;
  std::string_view name;         // as `prepatch plan --arch` takes it
  unsigned insn_align;           // every instruction address is a multiple of this
  // The widest naturally aligned store that instruction fetch on another core sees whole; any other
  // store may be seen byte by byte. 1 means bytes: nothing is atomic for fetch.
  unsigned fetch_atomic;
  bool cmodx;                    // a store may swap only listed instructions under a running core
  std::span<const SiteKind> kinds;
  std::string_view atomicity;    // the assumption behind fetch_atomic, with its source
  std::string_view rule;         // the rule the shipped plans rely on
};
const IsaInfo& isa_info(Isa isa);
std::optional<Isa> isa_by_name(std::string_view name);  // also accepts x86_64, arm64, ppc64el, riscv, thumb
std::string_view isa_name(Isa isa);

std::string_view kind_name(SiteKind k);
std::optional<SiteKind> kind_by_name(std::string_view name);

// Appends `v` in little-endian byte order: how every ISA here stores its instruction words.
template <class T>
void put_le(std::vector<u8>& out, T v) {
  for (unsigned i = 0; i < sizeof(T); i++) out.push_back(static_cast<u8>(v >> (8 * i)));
}

struct Decoded {
  unsigned len = 0;    // 0: no complete instruction in the bytes given
  bool valid = false;  // false: undefined or reserved; executing it raises SIGILL
  bool trap = false;   // the ISA's trap instruction that plans lay down (int3, c.ebreak, udf #1)
  bool cmodx = false;  // AArch64: on the CMODX list (B, BL, NOP, BRK, SVC, HVC, SMC, ISB)
  std::string text;
};
Decoded decode(Isa isa, std::span<const u8> b, u64 addr);
// ARM32's ARM state (an ARM-state site), by Capstone; `cmodx`: on ARMv7's list (ARM ARM A3.5.4) of
// instructions another core may run while they are swapped (B, BL, NOP, BKPT, SVC, HVC, SMC).
Decoded decode_arm_state(std::span<const u8> b, u64 addr);

// Capstone's handle (a csh) for AArch64, PPC64le or Thumb-2 with operand details, opened once and
// shared (arch/island.cc runs islands on it).
size_t capstone_detailed(Isa isa);

// AArch64, PPC64le and Thumb-2, decoded by Capstone: the target of the instruction at `addr` (its first
// 4 bytes in `b`) when it is a relative `bl` (Thumb-2: a 32-bit `bl`, or `blx` to ARM state); nullopt
// otherwise (any other instruction, another ISA).
std::optional<u64> bl_target(Isa isa, std::span<const u8> b, u64 addr);
// AArch64, decoded by Capstone: the pointer slot a GNU ld PLT entry at `addr` jumps through (`adrp
// x16, page; ldr x17, [x16, #off]; add x16, x16, #off; br x17`: page + off); nullopt for anything else.
std::optional<u64> aarch64_plt_slot(std::span<const u8> entry, u64 addr);
// ARM32, decoded by Capstone in ARM state: the pointer slot a GNU ld PLT entry at `addr` jumps through
// (`add ip, pc, #a; add ip, ip, #b; [add ip, ip, #c;] ldr pc, [ip, #d]!`: addr + 8 + a + b + c + d);
// nullopt for anything else.
std::optional<u64> arm_plt_slot(std::span<const u8> entry, u64 addr);

// One site as a plan sees it: the toggled instruction at `addr` in its two forms, after the context
// instructions that stay as they are.
struct SiteForm {
  u64 addr = 0;
  std::vector<u8> context;  // ends at addr
  std::vector<u8> context_off;  // the context in the off state, where it differs (only rejected plans)
  std::vector<u8> off, on;  // the toggled instruction disabled (nop-like) and enabled (calls `target`)
  std::string context_text; // what the context is, for people
  bool arm_state = false;   // ARM32: ARM-state words (a -marm site), not Thumb code
  bool trap = false;        // `on` is the site's trap form (forms.h trap_form): the handler resolves it as the call
};
// The site of `kind` whose toggled instruction is at `addr`, calling a trampoline at `target`; `len`
// selects x86-64's 5- or 6-byte form, and ARM32's ARM-state site (8: `mov ip, pc` and the toggled
// word, -pg only, 4-aligned) over its Thumb one. nullopt when the ISA has no such kind, `addr` is misaligned,
// or `target` is out of reach.
std::optional<SiteForm> site_form(Isa isa, SiteKind kind, u64 addr, u64 target, unsigned len = 0);
// The same site as a trap site (no trampoline within reach): `on` is its trap form, the ISA's trap over
// the start of its off form; nullopt on the ISAs without one (forms.h has_trap_form) and for ARM32's
// ARM-state sites.
std::optional<SiteForm> trap_site_form(Isa isa, SiteKind kind, u64 addr, unsigned len = 0);
// x86-64 sites come in two lengths, ARM32's in two (Thumb, ARM state); every other ISA's has one.
std::span<const unsigned> site_lengths(Isa isa);

}  // namespace prepatch::arch
