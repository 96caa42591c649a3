// AArch64: the instructions a site is made of, and why one aligned store may swap them.
//
// Branch reach: `bl` takes a signed 26-bit word offset, +-128 MiB from the instruction. A site farther
// from the shim's trampolines calls a branch island within its reach instead (encode_island).
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
#include <optional>

#include "arch/plan.h"

namespace prepatch::arch::aarch64 {

// clang-format off
inline constexpr u32 nop        = 0xd503'201f;  // nop
inline constexpr u32 mov_x0_x30 = 0xaa1e'03e0;  // mov x0, x30      (-pg: _mcount's argument)
inline constexpr u32 mov_x9_x30 = 0xaa1e'03e9;  // mov x9, x30      (patchable: the return address, kept)
inline constexpr u32 bl         = 0x9400'0000;  // bl <target>      (imm26 filled in)
inline constexpr u32 bti_c      = 0xd503'245f;  // bti c            (a function's landing pad)
inline constexpr u32 bti_jc     = 0xd503'24df;  // bti jc
inline constexpr u32 paciasp    = 0xd503'233f;  // paciasp          (signs x30; a landing pad too)
inline constexpr u32 pacibsp    = 0xd503'237f;  // pacibsp          (the same with key B)
inline constexpr u32 autiasp    = 0xd503'23bf;  // autiasp
inline constexpr u32 ret        = 0xd65f'03c0;  // ret
// clang-format on

inline constexpr i64 bl_reach = i64{1} << 27;  // bytes, either way

// `bl target` at `at`; false when out of reach or misaligned.
constexpr bool encode_bl(u64 at, u64 target, u32& out) {
  const i64 d = static_cast<i64>(target - at);
  if (d % 4 != 0 || d < -bl_reach || d >= bl_reach) return false;
  out = bl | (static_cast<u32>(d >> 2) & 0x03ff'ffff);
  return true;
}

// Whether `w` has BL's opcode (bits 31-26 100101): the cheap test before Capstone decodes it.
constexpr bool bl_opcode(u32 w) { return (w & 0xfc00'0000) == bl; }

// Where `b` or `bl` (bits 30-26 00101, imm26 words) at `at` goes, or nullopt for another word.
constexpr std::optional<u64> b_or_bl_target(u32 w, u64 at) {
  if ((w & 0x7c00'0000) != 0x1400'0000) return std::nullopt;
  return at + static_cast<u64>((static_cast<i64>(static_cast<i32>(w << 6)) >> 6) * 4);
}

// `b target` at `at` (the same reach as bl); false when out of reach or misaligned.
constexpr bool encode_b(u64 at, u64 target, u32& out) {
  if (!encode_bl(at, target, out)) return false;
  out &= ~u32{0x8000'0000};
  return true;
}

// Whether the instruction `w` runs the same at another address (the graph tracer moves the first one
// of the binary's own unwinder entry points, shim/runtime/exceptions.inc): not PC-relative (adr, adrp,
// literal loads), not a branch (immediate, conditional, compare or test, register) and not an
// exception-generating one (ARM ARM C4.1's encoding groups).
constexpr bool movable(u32 w) {
  return (w & 0x1f00'0000) != 0x1000'0000     // adr, adrp
         && (w & 0x7c00'0000) != 0x1400'0000  // b, bl
         && (w & 0xfe00'0000) != 0x5400'0000  // b.cond
         && (w & 0x7e00'0000) != 0x3400'0000  // cbz, cbnz
         && (w & 0x7e00'0000) != 0x3600'0000  // tbz, tbnz
         && (w & 0x3b00'0000) != 0x1800'0000  // ldr, ldrsw, prfm (literal), SIMD too
         && (w & 0xfe00'0000) != 0xd600'0000  // br, blr, ret, eret, ...
         && (w & 0xff00'0000) != 0xd400'0000;  // svc, hvc, brk, ...
}

// A branch island (veneer): what a site calls when the trampoline `target` is beyond its bl's reach.
// `ldr x16, 1f; adr x17, 1f; add x16, x16, x17; br x16; 1: .quad target - 1b`: any distance, position-
// independent, and it writes only x16 and x17, which AAPCS64 gives every call's veneers (so they hold
// nothing at a call of _mcount, or at a function's entry). The trampoline starts with `bti c`, which
// `br x16` may enter where the text is BTI-guarded. 8-aligned (the literal); arch/island.h checks it.
inline constexpr unsigned island_size = 24, island_align = 8;
constexpr void encode_island(u64 at, u64 target, u8* out) {
  const u32 words[4] = {0x5800'0090,   // ldr x16, at + 16
                        0x1000'0071,   // adr x17, at + 16
                        0x8b11'0210,   // add x16, x16, x17
                        0xd61f'0200};  // br x16
  const u64 delta = target - (at + 16);
  put_words_le(words, 4, out);
  for (unsigned b = 0; b < 8; b++) out[16 + b] = static_cast<u8>(delta >> (8 * b));
}

// The same in 12 bytes where the trampoline lies within +-4 GiB of `at`: `adrp x16, target; add x16,
// x16, :lo12:target; br x16`, ld's own short stub, written over such a stub or a PLT entry that only
// -pg calls entered. False when out of that reach. 4-aligned; arch/island.h checks it.
inline constexpr unsigned adrp_island_size = 12;
constexpr bool encode_adrp_island(u64 at, u64 target, u8* out) {
  const i64 pages = static_cast<i64>((target >> 12) - (at >> 12));
  if (pages < -(i64{1} << 20) || pages >= (i64{1} << 20)) return false;
  const u32 imm = static_cast<u32>(pages) & 0x1f'ffff;
  const u32 words[3] = {0x9000'0010 | (imm & 3) << 29 | (imm >> 2) << 5,     // adrp x16, target
                        0x9100'0210 | static_cast<u32>(target & 0xfff) << 10,  // add x16, x16, #lo12
                        0xd61f'0200};                                          // br x16
  put_words_le(words, 3, out);
  return true;
}

// The same in 8 bytes, to `slot` on a 4 KiB boundary within +-4 GiB of `at`: `adrp x16, slot; br x16`,
// where the preparer puts a far slot (below) that goes on to the trampoline. It fits the nops
// -fpatchable-function-entry=N,2 leaves before an entry, and the alignment padding between functions.
// False when `slot` is not on a page boundary or is out of reach. 4-aligned; arch/island.h checks it.
inline constexpr unsigned page_island_size = 8;
constexpr bool encode_page_island(u64 at, u64 slot, u8* out) {
  if (slot & 0xfff) return false;
  u8 three[adrp_island_size];
  if (!encode_adrp_island(at, slot, three)) return false;  // (its add is of 0)
  for (unsigned b = 0; b < 4; b++) out[b] = three[b], out[4 + b] = three[8 + b];
  return true;
}

// The far slot the 8-byte islands jump to: `bti c` (their `br x16` may land there where the code is
// BTI-guarded), then `b target` (+-128 MiB). False when out of that reach.
inline constexpr unsigned far_slot_size = 8;
constexpr bool encode_far_slot(u64 at, u64 target, u8* out) {
  const i64 d = static_cast<i64>(target - (at + 4));
  if (d % 4 != 0 || d < -(i64{1} << 27) || d >= (i64{1} << 27)) return false;
  const u32 words[2] = {bti_c, 0x1400'0000u | (static_cast<u32>(d >> 2) & 0x03ff'ffffu)};
  put_words_le(words, 2, out);
  return true;
}

// ld's AArch64 stubs, as GNU ld lays them out:
//   adrp x16, D; add x16, x16, :lo12:D; br x16                               12 bytes, +-4 GiB
//   ldr x16, 1f; adr x17, .; add x16, x16, x17; br x16; 1: .xword D - (at + 4)   24 bytes, any distance
// `word(at, w)` reads the instruction word at `at`, false past the code.
template <class Word>
constexpr std::optional<LinkerStub> linker_stub(u64 at, Word word) {
  u32 w[6] = {};
  if (!read_words(at, 3, word, w)) return std::nullopt;
  if ((w[0] & 0x9f00'001f) == 0x9000'0010 && (w[1] & 0xffc0'03ff) == 0x9100'0210 && w[2] == 0xd61f'0200) {
    const i64 immhi = static_cast<i64>(static_cast<i32>(w[0] << 8) >> 13), immlo = (w[0] >> 29) & 3;  // immhi sign-extended
    const u64 page = (at & ~u64{0xfff}) + (static_cast<u64>(immhi * 4 + immlo) << 12);
    return LinkerStub{at, 12, page + ((w[1] >> 10) & 0xfff)};
  }
  if (w[0] == 0x5800'0090 && w[1] == 0x1000'0011 && w[2] == 0x8b11'0210 && read_words(at, 6, word, w) && w[3] == 0xd61f'0200)
    return LinkerStub{at, 24, at + 4 + (u64{w[4]} | u64{w[5]} << 32)};
  return std::nullopt;
}

}  // namespace prepatch::arch::aarch64
