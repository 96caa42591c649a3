// AArch64: the instructions a site is made of, and why one aligned store may swap them.
//
// Branch reach: `bl` takes a signed 26-bit word offset, +-128 MiB from the instruction; the shim's
// trampolines must sit within that (or be reached through veneers: the AArch64 shim issue decides).
//
// What a store can change atomically: every instruction is an aligned 32-bit word, and an aligned
// 32-bit store is single-copy atomic for instruction fetch. ARMv8's rule for concurrent modification
// and execution (CMODX, ARM ARM B2.2.5) goes further than atomicity: another core may execute the word
// while it changes only when both the old and the new instruction are B, BL, NOP, BRK, SVC, HVC, SMC
// or ISB. NOP <-> BL is on that list, so the plan is one store, then cache maintenance (dc cvau; dsb
// ish; ic ivau; dsb ish; isb) and a sync of the other cores (membarrier SYNC_CORE).
//
// Sites (gcc -pg): `mov x0, x30; bl _mcount` after the prologue, toggled at the `bl`; the `mov` stays.
// -fpatchable-function-entry=2: `nop; nop`, prepared offline into `mov x9, x30; nop`, toggled at the
// second slot (the kernel's layout).
#pragma once
#include "arch/plan.h"

namespace prepatch::arch::aarch64 {

// clang-format off
inline constexpr u32 nop        = 0xd503'201f;  // nop
inline constexpr u32 mov_x0_x30 = 0xaa1e'03e0;  // mov x0, x30      (-pg: _mcount's argument)
inline constexpr u32 mov_x9_x30 = 0xaa1e'03e9;  // mov x9, x30      (patchable: the return address, kept)
inline constexpr u32 bl         = 0x9400'0000;  // bl <target>      (imm26 filled in)
inline constexpr u32 bti_c      = 0xd503'245f;  // bti c            (a function's landing pad)
inline constexpr u32 bti_jc     = 0xd503'24df;  // bti jc
inline constexpr u32 br_x17     = 0xd61f'0220;  // br x17           (a PLT entry's jump)
// clang-format on

inline constexpr i64 bl_reach = i64{1} << 27;  // bytes, either way

// `bl target` at `at`; false when out of reach or misaligned.
constexpr bool encode_bl(u64 at, u64 target, u32& out) {
  const i64 d = static_cast<i64>(target - at);
  if (d % 4 != 0 || d < -bl_reach || d >= bl_reach) return false;
  out = bl | (static_cast<u32>(d >> 2) & 0x03ff'ffff);
  return true;
}

// The target of `w` at `at` when it is a `bl`. Bit decoding, cross-checked against Capstone in
// tests/word_isa_test.cc.
constexpr bool decode_bl(u32 w, u64 at, u64& target) {
  if ((w & 0xfc00'0000) != bl) return false;
  target = at + static_cast<u64>(static_cast<i64>(static_cast<i32>(w << 6) >> 6) * 4);  // imm26, signed, in words
  return true;
}

// The pointer slot a GNU ld PLT entry jumps through: `adrp x16, page; ldr x17, [x16, #off];
// add x16, x16, #off; br x17`, the entry at `at`. False for anything else.
constexpr bool plt_slot(const u32 w[4], u64 at, u64& slot) {
  if ((w[0] & 0x9f00'001f) != 0x9000'0010) return false;                         // adrp x16, ...
  if ((w[1] & 0xffc0'03ff) != 0xf940'0211 || w[3] != br_x17) return false;      // ldr x17, [x16, #imm12*8]
  const u64 imm = ((w[0] >> 29) & 3) | (((w[0] >> 5) & 0x7ffff) << 2);         // immlo | immhi << 2, 21 bits
  const i64 pages = static_cast<i64>(imm << 43) >> 43;
  slot = (at & ~u64{0xfff}) + static_cast<u64>(pages * 4096) + ((w[1] >> 10) & 0xfff) * 8;
  return true;
}

}  // namespace prepatch::arch::aarch64
