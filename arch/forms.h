// Site forms, freestanding: what a prepared site holds when off (x86-64: the canonical nop of its
// length; AArch64, PPC64le: the ISA's nop word) and the one call instruction it holds when on. Shared
// by the preparer (arch/, rewriter/) and the shim (shim/), which has no libc: <cstddef> and elf/ints.h
// only, no exceptions, no allocation.
#pragma once
#include <cstddef>

#include "arch/aarch64.h"
#include "arch/ppc64le.h"
#include "elf/ints.h"

namespace prepatch::arch {

enum class CallForm : u8 {
  none = 0,
  call_rel32 = 1,         // e8 rel32                 (5 bytes)
  addr32_call_rel32 = 2,  // 67 e8 rel32              (6 bytes)
  aarch64_bl = 3,         // bl imm26                 (4 bytes, AArch64: +-128 MiB)
  ppc64_bl = 4,           // bl LI                    (4 bytes, PPC64: +-32 MiB)
};

// clang-format off
// Intel SDM vol. 2B, "NOP": the recommended multi-byte sequences, one instruction each.
inline constexpr u8 canonical_nops[][11] = {
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

// The call form of a site of `len` bytes on the ISA of ELF machine `machine` (x86-64's when unknown).
constexpr CallForm call_form_for(u16 machine, unsigned len) {
  if (machine == 183 /* EM_AARCH64 */) return len == 4 ? CallForm::aarch64_bl : CallForm::none;
  if (machine == 21 /* EM_PPC64 */) return len == 4 ? CallForm::ppc64_bl : CallForm::none;
  return call_form_for_length(len);
}

constexpr unsigned call_form_length(CallForm f) {
  switch (f) {
    case CallForm::call_rel32: return 5;
    case CallForm::addr32_call_rel32: return 6;
    case CallForm::aarch64_bl:
    case CallForm::ppc64_bl: return 4;
    default: return 0;
  }
}

// Writes the call form at `site` to `target` into out[0, its length) (little-endian); false when the
// form is unknown or the target is out of its reach.
constexpr bool encode_call_form(CallForm f, u64 site, u64 target, u8* out) {
  const unsigned len = call_form_length(f);
  if (len == 0) return false;
  if (f == CallForm::aarch64_bl || f == CallForm::ppc64_bl) {
    u32 w = 0;
    if (!(f == CallForm::aarch64_bl ? aarch64::encode_bl(site, target, w) : ppc64le::encode_bl(site, target, w))) return false;
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

// A word machine's nop, and the permanent word a patchable site gets before it: what hands the
// trampoline the function's return address (`mov x9, x30`, `mflr r0`; the kernel's layout).
constexpr u32 nop_word(u16 machine) { return machine == 183 ? aarch64::nop : ppc64le::nop; }
constexpr u32 patchable_context_word(u16 machine) { return machine == 183 ? aarch64::mov_x9_x30 : ppc64le::mflr_r0; }

// The off form of a site of `len` bytes on ELF machine `machine` into out[0, len): x86-64's canonical
// nop of that length, or the ISA's nop word; false when there is none.
constexpr bool off_form(u16 machine, unsigned len, u8* out) {
  if (word_machine(machine)) {
    if (len != 4) return false;
    for (unsigned i = 0; i < 4; i++) out[i] = static_cast<u8>(nop_word(machine) >> (8 * i));
    return true;
  }
  if (len == 0 || len > max_canonical_nop) return false;
  for (unsigned i = 0; i < len; i++) out[i] = canonical_nops[len - 1][i];
  return true;
}

}  // namespace prepatch::arch
