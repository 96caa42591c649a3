// Patch plans: how a prepared site is switched between its two forms in a running process, as data.
//
// A site is ONE toggled instruction (prepared offline: see each ISA's header), possibly preceded by
// context instructions that never change (PowerPC's `mflr r0; std r0,16(r1)`, AArch64's `mov x0, x30`).
// A plan is an ordered list of writes and syncs that turns the toggled instruction from its current form
// into its target form (nop -> call to enable, call -> nop to disable: the same plan both ways).
//
// One source of truth: the shim (shim/core.h run_batch, freestanding) runs these steps through run_step()
// and phase(); the checker (arch/check.h) runs the very same functions against a recording memory and
// proves that no view another CPU can fetch, and no thread stopped between two instructions, ever
// executes anything but the complete old form, the complete new form, or a trap the shim's handler
// resolves. docs/PROTOCOLS.md is generated from these tables and the checker's results.
//
// This header is freestanding (the shim has no libc): <cstddef> and elf/ints.h only, no exceptions,
// no allocation, nothing that needs a static constructor.
#pragma once
#include <cstddef>

#include "elf/ints.h"

namespace prepatch::arch {

enum class Isa : u8 { x86_64 = 1, aarch64, ppc64le, riscv64, thumb2 };
inline constexpr Isa all_isas[] = {Isa::x86_64, Isa::aarch64, Isa::ppc64le, Isa::riscv64, Isa::thumb2};

// What a site was compiled as: where it sits and which trampoline its call form targets.
enum class SiteKind : u8 { fentry = 1, mcount = 2, patchable = 3 };

// A linker stub (veneer): code ld placed within a call's reach when the call's destination lies
// beyond it, as an ISA header's linker_stub reads it (thumb2.h, aarch64.h). `start`: the address a
// call to it names; `size`: its bytes from there; `dest`: where it jumps (ARM32: bit 0 set for Thumb).
struct LinkerStub {
  u64 start = 0;
  u32 size = 0;
  u64 dest = 0;
};

// Reads `n` instruction words from `at` on into `out` through `word(addr, w)` (false past the code),
// as the ISA headers' linker_stub readers do; false where one cannot be read or `at` is misaligned.
template <class Word>
constexpr bool read_words(u64 at, unsigned n, Word& word, u32* out) {
  if (at % 4) return false;
  for (unsigned i = 0; i < n; i++)
    if (!word(at + 4 * i, out[i])) return false;
  return true;
}

// Instruction words as the little-endian bytes the ISA headers' island encoders write.
constexpr void put_words_le(const u32* words, unsigned n, u8* out) {
  for (unsigned i = 0; i < n; i++)
    for (unsigned b = 0; b < 4; b++) out[4 * i + b] = static_cast<u8>(words[i] >> (8 * b));
}
// The same for halfwords (Thumb-2's instructions).
constexpr void put_halves_le(const u16* halves, unsigned n, u8* out) {
  for (unsigned i = 0; i < n; i++) out[2 * i] = static_cast<u8>(halves[i]), out[2 * i + 1] = static_cast<u8>(halves[i] >> 8);
}

// Where a write's bytes come from.
enum class From : u8 {
  trap,    // the ISA's trap instruction, laid over the toggled instruction from its first byte
  target,  // the target form (the context, then the toggled instruction as it must end up)
};

struct Step {
  enum Op : u8 { write, sync } op;
  i8 offset = 0;  // from the toggled instruction's first byte; negative reaches into the context
  u8 len = 0;     // bytes written; 0: up to the end of the toggled instruction
  u8 width = 0;   // bytes per store: len/width stores of `width` bytes each, in ascending address order
  From from = From::target;
};

struct Plan {
  const char* name;
  const char* summary;
  const Step* steps;
  u8 count;
  bool leaves_trap;  // a trap stands at the site between syncs: the shim's handler must resolve it
  // The trap instruction, when not the ISA's (trap_bytes): From::trap writes copy from it. An illegal
  // instruction here means the handler resolves any SIGILL at the site by its address.
  const u8* trap = nullptr;
  u8 trap_size = 0;
};

// Trap instructions the shim's handler resolves by a binary search of the sorted site table.
PREPATCH_CONSTANT u8 x86_int3[] = {0xcc};              // int3 -> SIGTRAP
PREPATCH_CONSTANT u8 riscv_c_ebreak[] = {0x02, 0x90};  // c.ebreak (0x9002) -> SIGTRAP
PREPATCH_CONSTANT u8 thumb_trap[] = {0x01, 0xde};      // udf #1 (0xde01), Linux's Thumb breakpoint -> SIGTRAP
// No shipped AArch64 or PPC64le plan lays a trap mid-batch; a trap site's on form is theirs (forms.h trap_form).
PREPATCH_CONSTANT u8 aarch64_brk[] = {0x00, 0x00, 0x20, 0xd4};  // brk #0 (0xd4200000) -> SIGTRAP (TRAP_BRKPT)
PREPATCH_CONSTANT u8 ppc_trap[] = {0x08, 0x00, 0xe0, 0x7f};     // trap = tw 31,0,0 (0x7fe00008) -> SIGTRAP (TRAP_BRKPT)

// clang-format off
// x86-64, the kernel's text_poke_bp_batch: the site is one instruction of 5 or 6 bytes at any byte
// alignment, and the SDM lets another core fetch a partly written one, so nothing but a one-byte
// instruction can be replaced in one go.
inline constexpr Step int3_steps[] = {
  {Step::write, 0, 1, 1, From::trap},    // 1. int3 over the first byte: a fetch now traps or sees the old form
  {Step::sync},
  {Step::write, 1, 0, 1, From::target},  // 2. the rest of the new form, behind the int3
  {Step::sync},
  {Step::write, 0, 1, 1, From::target},  // 3. the first byte: int3 gives way to the new form
  {Step::sync},
};
inline constexpr Plan int3_plan = {"int3", "breakpoint over the first byte, the tail, the first byte; a sync after each",
                                   int3_steps, 6, true};

// AArch64 and PPC64le: the toggled instruction is an aligned 32-bit word, swapped by one store.
inline constexpr Step word_steps[] = {
  {Step::write, 0, 4, 4, From::target},  // 1. the whole instruction, one aligned 32-bit store
  {Step::sync},
};
inline constexpr Plan word_plan = {"word", "one aligned 32-bit store, then a sync", word_steps, 2, false};

// ARM32's ARM-state sites (thumb2.h): `mov ip, pc`, which never changes, then the toggled word, `nop`
// or `b`, both on ARMv7's list of instructions another core may run while they are swapped.
inline constexpr Step second_word_steps[] = {
  {Step::write, 4, 4, 4, From::target},  // 1. the second word, one aligned 32-bit store
  {Step::sync},
};
inline constexpr Plan second_word_plan = {"second-word", "one aligned 32-bit store of the second word, then a sync",
                                          second_word_steps, 2, false};

// RISC-V with compressed instructions and Thumb-2: a 32-bit instruction that may sit on a 2-byte
// boundary, where no single store replaces it; a 16-bit trap goes in its first halfword.
inline constexpr Step halfword_trap_steps[] = {
  {Step::write, 0, 2, 2, From::trap},    // 1. a 16-bit trap over the first halfword
  {Step::sync},
  {Step::write, 2, 2, 2, From::target},  // 2. the second halfword of the new form
  {Step::sync},
  {Step::write, 0, 2, 2, From::target},  // 3. the first halfword: the trap gives way to the new form
  {Step::sync},
};
inline constexpr Plan halfword_trap_plan = {"halfword-trap", "16-bit trap over the first halfword, the second halfword, "
                                            "the first halfword; a sync after each", halfword_trap_steps, 6, true};
// clang-format on

// The trap a plan lays down on `isa`, and a trap site's (forms.h trap_form).
struct Bytes {
  const u8* data;
  u8 size;
};
constexpr Bytes trap_bytes(Isa isa, const Plan* p = nullptr) {
  if (p && p->trap) return {p->trap, p->trap_size};
  switch (isa) {
    case Isa::x86_64: return {x86_int3, sizeof x86_int3};
    case Isa::riscv64: return {riscv_c_ebreak, sizeof riscv_c_ebreak};
    case Isa::thumb2: return {thumb_trap, sizeof thumb_trap};
    case Isa::aarch64: return {aarch64_brk, sizeof aarch64_brk};
    case Isa::ppc64le: return {ppc_trap, sizeof ppc_trap};
  }
  return {nullptr, 0};
}

// The plans sites of `isa` use, by index: one per ISA, two on RISC-V (aligned and 2-byte aligned
// sites) and ARM32 (Thumb and ARM-state sites); nullptr past them. The shim compiles its batch executor
// for these (shim/core.h).
constexpr const Plan* isa_plan(Isa isa, unsigned index) {
  switch (isa) {
    case Isa::x86_64: return index == 0 ? &int3_plan : nullptr;
    case Isa::aarch64:
    case Isa::ppc64le: return index == 0 ? &word_plan : nullptr;
    case Isa::riscv64: return index == 0 ? &word_plan : index == 1 ? &halfword_trap_plan : nullptr;
    case Isa::thumb2: return index == 0 ? &halfword_trap_plan : index == 1 ? &second_word_plan : nullptr;
  }
  return nullptr;
}
// (Not `isa_plan(isa, 1) != nullptr`: GCC's sanitizers make a constant's address no constant expression.)
constexpr unsigned plan_count(Isa isa) { return isa == Isa::riscv64 || isa == Isa::thumb2 ? 2 : 1; }

// Which of isa_plan(isa, ...) the site of `len` bytes at `addr` uses (in either form: the same plan
// enables and disables): on RISC-V the alignment selects, on ARM32 the length (8 bytes: ARM state).
constexpr unsigned plan_index(Isa isa, u64 addr, unsigned len) {
  return (isa == Isa::riscv64 && addr % 4 != 0) || (isa == Isa::thumb2 && len == 8) ? 1 : 0;
}
constexpr const Plan& plan_for(Isa isa, u64 addr, unsigned len) { return *isa_plan(isa, plan_index(isa, addr, len)); }

// Whether a plan of `isa` may leave a trap at a site between syncs (the shim then needs its handler).
constexpr bool may_trap(Isa isa) {
  for (unsigned k = 0; k < plan_count(isa); k++)
    if (isa_plan(isa, k)->leaves_trap) return true;
  return false;
}

// The steps of phase `n` (0-based: the steps after the n-th sync, up to and including the next sync),
// so a batch of sites can run phase by phase: every site's writes, then ONE sync for all of them.
struct Phase {
  const Step* begin = nullptr;
  const Step* end = nullptr;  // one past the last write of the phase
  bool sync = false;          // the phase ends with a sync
  constexpr bool empty() const { return begin == end && !sync; }
};
constexpr Phase phase(const Plan& p, unsigned n) {
  unsigned at = 0;
  for (unsigned seen = 0; seen < n && at < p.count; at++)
    if (p.steps[at].op == Step::sync) seen++;
  Phase ph{p.steps + at, p.steps + at, false};
  while (ph.end < p.steps + p.count && ph.end->op == Step::write) ph.end++;
  ph.sync = ph.end < p.steps + p.count;
  return ph;
}

// How many phases plan `p` has: phase(p, n) is empty from n = phase_count(p) on.
constexpr unsigned phase_count(const Plan& p) {
  unsigned n = 0;
  while (!phase(p, n).empty()) n++;
  return n;
}

// Executes one write step at a site: `insn` is the toggled instruction's address, `target` its target
// form (`insn_len` bytes; negative offsets read the context before it, which the caller provides).
// Memory::store(addr, bytes, width) performs one store of `width` bytes. Returns the number of stores.
template <class Memory>
constexpr unsigned run_step(const Step& s, u64 insn, const u8* target, unsigned insn_len, Bytes trap, Memory& mem) {
  // Locals, not s.*: a byte store may alias the step as far as the compiler knows, which would reload
  // every field after every store.
  const unsigned width = s.width, len = s.len ? s.len : insn_len - static_cast<unsigned>(s.offset);
  const u8* src = s.from == From::trap ? trap.data + s.offset : target + s.offset;
  const u64 at0 = insn + static_cast<u64>(s.offset);
  unsigned stores = 0;
  for (unsigned at = 0; at < len; at += width, stores++) mem.store(at0 + at, src + at, width);
  return stores;
}

}  // namespace prepatch::arch
