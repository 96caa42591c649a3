// Site forms, freestanding: what a prepared site holds when off (x86-64: the canonical nop of its
// length; AArch64, PPC64le: the ISA's nop word) and the one call instruction it holds when on. Shared
// by the preparer (arch/, rewriter/) and the shim (shim/), which has no libc: <cstddef> and elf/ints.h
// only, no exceptions, no allocation.
#pragma once
#include <cstddef>

#include "arch/aarch64.h"
#include "arch/plan.h"
#include "arch/ppc64le.h"
#include "arch/riscv64.h"
#include "arch/thumb2.h"
#include "elf/ints.h"

namespace prepatch::arch {

enum class CallForm : u8 {
  none = 0,
  call_rel32 = 1,         // e8 rel32                 (5 bytes)
  addr32_call_rel32 = 2,  // 67 e8 rel32              (6 bytes)
  aarch64_bl = 3,         // bl imm26                 (4 bytes, AArch64: +-128 MiB)
  ppc64_bl = 4,           // bl LI                    (4 bytes, PPC64: +-32 MiB)
  riscv_jal_ra = 5,       // jal ra, imm20            (4 bytes, RISC-V: +-1 MiB; gcc -pg after ld's relaxation)
  riscv_jalr_ra = 6,      // jalr ra, lo(ra)          (4 bytes, after `auipc ra, hi` at -4; gcc -pg unrelaxed)
  riscv_jalr_t0 = 7,      // jalr t0, lo(t0)          (4 bytes, after `auipc t0, hi` at -4; patchable entries)
  thumb_bl = 8,           // bl imm24                 (4 bytes, Thumb-2: +-16 MiB, two halfwords; after `push {lr}`)
  arm_b = 9,              // mov ip, pc; b imm24      (8 bytes, ARM state: +-32 MiB; to the ARM-state entry)
};

// clang-format off
// Intel SDM vol. 2B, "NOP": the recommended multi-byte sequences, one instruction each.
PREPATCH_CONSTANT u8 canonical_nops[][11] = {
  {0x90},                                                        // nop
  {0x66, 0x90},                                                  // xchg %ax,%ax
  {0x0f, 0x1f, 0x00},                                            // nopl (%rax)
  {0x0f, 0x1f, 0x40, 0x00},                                      // nopl 0x0(%rax)
  {0x0f, 0x1f, 0x44, 0x00, 0x00},                                // nopl 0x0(%rax,%rax,1)
  {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},                          // nopw 0x0(%rax,%rax,1)
  {0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00},                    // nopl 0x0(%rax)
  {0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},              // nopl 0x0(%rax,%rax,1)
  {0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},        // nopw 0x0(%rax,%rax,1)
  {0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},  // nopw %cs:0x0(%rax,%rax,1)
  {0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00},  // data16 nopw %cs:0x0(...)
};
// clang-format on
inline constexpr unsigned max_canonical_nop = 11;

constexpr CallForm call_form_for_length(unsigned len) {
  switch (len) {
    case 5: return CallForm::call_rel32;
    case 6: return CallForm::addr32_call_rel32;
    default: return CallForm::none;
  }
}

inline constexpr u16 em_riscv = 243;  // EM_RISCV
inline constexpr u16 em_arm = 40;     // EM_ARM (prepatch: Thumb-2 code)

// RISC-V: the call form of a site of `kind` whose instruction is `insn` as the compiler left it (gcc
// -pg's `jal ra` or `jalr ra`), or none.
constexpr CallForm riscv_call_form(SiteKind kind, u32 insn) {
  if (kind == SiteKind::patchable) return CallForm::riscv_jalr_t0;
  if (riscv64::is_jal(insn) && riscv64::rd_of(insn) == riscv64::ra) return CallForm::riscv_jal_ra;
  if (riscv64::is_jalr_via(insn, riscv64::ra)) return CallForm::riscv_jalr_ra;
  return CallForm::none;
}

// The call form of a site of `len` bytes on the ISA of ELF machine `machine` (x86-64's when unknown;
// RISC-V's depends on the instruction: riscv_call_form).
constexpr CallForm call_form_for(u16 machine, unsigned len) {
  if (machine == 183 /* EM_AARCH64 */) return len == 4 ? CallForm::aarch64_bl : CallForm::none;
  if (machine == 21 /* EM_PPC64 */) return len == 4 ? CallForm::ppc64_bl : CallForm::none;
  if (machine == em_arm) return len == 4 ? CallForm::thumb_bl : len == thumb2::arm_site_len ? CallForm::arm_b : CallForm::none;
  return call_form_for_length(len);
}

constexpr unsigned call_form_length(CallForm f) {
  switch (f) {
    case CallForm::call_rel32: return 5;
    case CallForm::addr32_call_rel32: return 6;
    case CallForm::aarch64_bl:
    case CallForm::ppc64_bl:
    case CallForm::riscv_jal_ra:
    case CallForm::riscv_jalr_ra:
    case CallForm::riscv_jalr_t0:
    case CallForm::thumb_bl: return 4;
    case CallForm::arm_b: return thumb2::arm_site_len;
    default: return 0;
  }
}

// The one word of a 4-byte call form at `site` to `target`; false when out of reach. RISC-V's jalr
// forms are the second half of `auipc link, hi; jalr link, lo(link)` with the auipc at site - 4. A
// Thumb-2 `bl` is its two halfwords, the first in the low half (the one at the lower address).
constexpr bool encode_call_word(CallForm f, u64 site, u64 target, u32& w) {
  u32 auipc = 0;
  u16 bl[2] = {};
  switch (f) {
    case CallForm::thumb_bl:
      if (!thumb2::encode_bl(site, target, bl)) return false;
      w = bl[0] | u32{bl[1]} << 16;
      return true;
    case CallForm::aarch64_bl: return aarch64::encode_bl(site, target, w);
    case CallForm::ppc64_bl: return ppc64le::encode_bl(site, target, w);
    case CallForm::riscv_jal_ra: return riscv64::encode_jal(site, target, riscv64::ra, w);
    case CallForm::riscv_jalr_ra: return riscv64::encode_call(site - 4, target, riscv64::ra, auipc, w);
    case CallForm::riscv_jalr_t0: return riscv64::encode_call(site - 4, target, riscv64::t0, auipc, w);
    default: return false;
  }
}

// Writes the call form at `site` to `target` into out[0, its length) (little-endian); false when the
// form is unknown or the target is out of its reach.
constexpr bool encode_call_form(CallForm f, u64 site, u64 target, u8* out) {
  const unsigned len = call_form_length(f);
  if (len == 0) return false;
  if (f == CallForm::arm_b) {  // the toggled word after `mov ip, pc`
    u32 w = 0;
    if (!thumb2::encode_arm_b(site + 4, target, w)) return false;
    for (unsigned i = 0; i < 4; i++) out[i] = static_cast<u8>(thumb2::arm_mov_ip_pc >> (8 * i)), out[4 + i] = static_cast<u8>(w >> (8 * i));
    return true;
  }
  if (len == 4) {
    u32 w = 0;
    if (!encode_call_word(f, site, target, w)) return false;
    for (unsigned i = 0; i < 4; i++) out[i] = static_cast<u8>(w >> (8 * i));
    return true;
  }
  const i64 rel = static_cast<i64>(target - (site + len));
  if (rel < -(i64{1} << 31) || rel >= (i64{1} << 31)) return false;
  unsigned at = 0;
  if (f == CallForm::addr32_call_rel32) out[at++] = 0x67;  // addr32 prefix: one 6-byte instruction
  out[at++] = 0xe8;                                        // call rel32
  const u32 r = static_cast<u32>(rel);
  for (unsigned i = 0; i < 4; i++) out[at + i] = static_cast<u8>(r >> (8 * i));
  return true;
}

// ELF machines whose sites are one aligned 32-bit word: AArch64 (183) and PPC64 (21).
constexpr bool word_machine(u16 machine) { return machine == 183 /* EM_AARCH64 */ || machine == 21 /* EM_PPC64 */; }

// The 32-bit nop of a word machine or RISC-V, and the permanent word a word machine's patchable site
// gets before it: what hands the trampoline the function's return address (`mov x9, x30`, `mflr r0`;
// the kernel's layout). RISC-V's is an `auipc t0, hi`, which depends on the site (riscv64::encode_call).
// Thumb-2's off form is no nop but `pop {lr}` (thumb2.h: it undoes the `push {lr}` before the site).
constexpr u32 thumb_pop_lr_word = thumb2::pop_lr[0] | u32{thumb2::pop_lr[1]} << 16;
constexpr u32 nop_word(u16 machine) {
  return machine == 183 ? aarch64::nop : machine == em_riscv ? riscv64::nop : machine == em_arm ? thumb_pop_lr_word : ppc64le::nop;
}
constexpr u32 patchable_context_word(u16 machine) { return machine == 183 ? aarch64::mov_x9_x30 : ppc64le::mflr_r0; }

// The off form of a site of `len` bytes on ELF machine `machine` into out[0, len): x86-64's canonical
// nop of that length, or the ISA's 32-bit nop (Thumb-2: `pop {lr}`; an 8-byte ARM-state site: `mov ip,
// pc; nop`); false when there is none.
constexpr bool off_form(u16 machine, unsigned len, u8* out) {
  if (machine == em_arm && len == thumb2::arm_site_len) {
    for (unsigned i = 0; i < 4; i++) out[i] = static_cast<u8>(thumb2::arm_mov_ip_pc >> (8 * i)), out[4 + i] = static_cast<u8>(thumb2::arm_nop >> (8 * i));
    return true;
  }
  if (word_machine(machine) || machine == em_riscv || machine == em_arm) {
    if (len != 4) return false;
    for (unsigned i = 0; i < 4; i++) out[i] = static_cast<u8>(nop_word(machine) >> (8 * i));
    return true;
  }
  if (len == 0 || len > max_canonical_nop) return false;
  for (unsigned i = 0; i < len; i++) out[i] = canonical_nops[len - 1][i];
  return true;
}

// The enabled form of a site that no trampoline or island lies within its call's reach of (rewriter/
// embed.cc marks it site_trap in the table): the ISA's trap over the start of its off form, which the
// shim's trap handler resolves as the call the site would make (shim/runtime/trap.inc), a signal per
// call. x86-64: `int3` over the nop's first byte (the rest of the nop stays, and never runs); RISC-V64:
// `c.ebreak; c.nop`; Thumb-2: `udf #1; nop` (Linux's Thumb breakpoint); AArch64: `brk #0`; PPC64le:
// `trap`. False for ARM32's ARM-state sites (8 bytes), which have none.
constexpr bool has_trap_form(u16 machine, unsigned len) {
  return (machine == 62 /* EM_X86_64 */ && len >= 1 && len <= max_canonical_nop) ||
         ((word_machine(machine) || machine == em_riscv || machine == em_arm) && len == 4);
}
constexpr bool trap_form(u16 machine, unsigned len, u8* out) {
  if (!has_trap_form(machine, len)) return false;
  if (word_machine(machine)) {
    const u8* t = machine == 183 /* EM_AARCH64 */ ? aarch64_brk : ppc_trap;
    for (unsigned i = 0; i < 4; i++) out[i] = t[i];
    return true;
  }
  if (machine == em_riscv) {
    constexpr u8 ebreak_nop[] = {riscv_c_ebreak[0], riscv_c_ebreak[1], 0x01, 0x00};  // c.ebreak; c.nop
    for (unsigned i = 0; i < 4; i++) out[i] = ebreak_nop[i];
    return true;
  }
  if (machine == em_arm) {
    constexpr u8 udf_nop[] = {thumb_trap[0], thumb_trap[1], 0x00, 0xbf};  // udf #1; nop
    for (unsigned i = 0; i < 4; i++) out[i] = udf_nop[i];
    return true;
  }
  if (!off_form(machine, len, out)) return false;
  out[0] = x86_int3[0];
  return true;
}

}  // namespace prepatch::arch
