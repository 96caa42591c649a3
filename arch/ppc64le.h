// PPC64le (ELFv2): the instructions a site is made of, and why only the `bl` may change.
//
// Branch reach: `bl` takes a signed 24-bit word offset, +-32 MiB from the instruction. A site farther
// from the shim's trampolines calls a branch island within its reach instead (encode_island).
//
// What a store can change atomically: instructions are aligned 32-bit words; an aligned word store is
// seen whole by instruction fetch (Power ISA Book II, "Single-copy atomicity", and the kernel's
// patch_instruction relies on it), followed by dcbst; sync; icbi; isync and a sync of the other cores.
//
// Sites (gcc -pg, after the global entry `addis r2,r12; addi r2,r2`): `mflr r0; std r0,16(r1); ...;
// bl _mcount`. Only the `bl` toggles (bl <-> nop). The seeds' counter-example is why: a plan that also
// nops `mflr r0` lets a thread preempted just after the old nop resume at a `bl` whose `mflr` never ran.
#pragma once
#include <cstdint>
#include <optional>

#include "arch/plan.h"

namespace prepatch::arch::ppc64le {

// clang-format off
inline constexpr u32 nop        = 0x6000'0000;  // nop (ori r0,r0,0)
inline constexpr u32 mflr_r0    = 0x7c08'02a6;  // mflr r0
inline constexpr u32 std_r0_16  = 0xf801'0010;  // std r0, 16(r1)
inline constexpr u32 ld_r2_24_r1 = 0xe841'0018; // ld r2, 24(r1)     (after a call through a stub: the TOC pointer back)
inline constexpr u32 bl         = 0x4800'0001;  // bl <target>      (LI filled in)
inline constexpr u32 trap       = 0x7fe0'0008;  // trap (tw 31,0,0)
inline constexpr u32 addis_r2_r12 = 0x3c4c'0000;  // addis r2, r12, hi  (ELFv2 global entry: the TOC from r12)
inline constexpr u32 lis_r2     = 0x3c40'0000;  // lis r2, hi         (the same in a non-PIE binary)
inline constexpr u32 blr        = 0x4e80'0020;  // blr
// clang-format on

// ELFv2: the local entry point's offset from a function's global entry, from its symbol's st_other.
constexpr u64 local_entry_offset(u8 other) { return ((u64{1} << ((other >> 5) & 7)) >> 2) << 2; }

inline constexpr i64 bl_reach = i64{1} << 25;

constexpr bool encode_bl(u64 at, u64 target, u32& out) {
  const i64 d = static_cast<i64>(target - at);
  if (d % 4 != 0 || d < -bl_reach || d >= bl_reach) return false;
  out = bl | (static_cast<u32>(d) & 0x03ff'fffc);
  return true;
}

// Whether `w` has the opcode of a relative `bl` (18, AA = 0, LK = 1): the cheap test before Capstone
// decodes it.
constexpr bool bl_opcode(u32 w) { return (w & 0xfc00'0003) == bl; }

// Where a relative `b` or `bl` (opcode 18, AA = 0; LI the signed word offset in bits 25-2) at `at`
// goes, or nullopt for another word.
constexpr std::optional<u64> b_or_bl_target(u32 w, u64 at) {
  if ((w & 0xfc00'0002) != 0x4800'0000) return std::nullopt;
  return at + static_cast<u64>(static_cast<i64>(static_cast<i32>((w & 0x03ff'fffc) << 6)) >> 6);
}

// `b target` at `at` (the same reach as bl); false when out of reach or misaligned.
constexpr bool encode_b(u64 at, u64 target, u32& out) {
  if (!encode_bl(at, target, out)) return false;
  out &= ~u32{1};
  return true;
}

// Whether the instruction `w` runs the same at another address (the graph tracer moves the first one
// at the local entry of the binary's own unwinder entry points, shim/runtime/exceptions.inc): not a
// branch (primary opcodes 16, 18; 19: to LR or CTR, addpcis, isync, rfid), not sc (17) and not a
// prefixed instruction (1, Power ISA 3.1, PC-relative forms among them).
constexpr bool movable(u32 w) {
  const u32 op = w >> 26;
  return op != 1 && op != 16 && op != 17 && op != 18 && op != 19;
}

// Whether `w` is the first instruction of an ELFv2 global entry's TOC setup (`addis r2, r12, hi` or,
// in a non-PIE binary, `lis r2, hi`), which a local entry point follows.
constexpr bool is_toc_setup(u32 w) { return (w & 0xffff'0000) == addis_r2_r12 || (w & 0xffff'0000) == lis_r2; }

// A branch island (veneer): what a site calls when the trampoline `target` is beyond its bl's reach.
// POWER before 3.1 has no PC-relative load, and LR holds the site's return address, which the
// trampoline reads; so the island saves LR in r12, learns its own address with `bcl 20,31` into r11,
// gives LR back, loads the distance to `target` from its literal and jumps through CTR:
//   std r11,-8(r1); mflr r12; bcl 20,31,1f; 1: mflr r11; mtlr r12; ld r12,28(r11); add r12,r12,r11;
//   ld r11,-8(r1); mtctr r12; bctr; .quad target - 1b
// It leaves r12 and CTR changed, which ELFv2 gives call stubs (ld's own use both); r11, the static
// chain at a nested function's entry, is kept in the red zone below r1 (dead at any call and at any
// function's entry) and given back. Any distance; 8-aligned (the literal); arch/island.h checks it.
inline constexpr unsigned island_size = 48, island_align = 8;
constexpr void encode_island(u64 at, u64 target, u8* out) {
  const u32 words[10] = {0xf961'fff8,   // std r11, -8(r1)
                         0x7d88'02a6,   // mflr r12
                         0x429f'0005,   // bcl 20, 31, at + 12
                         0x7d68'02a6,   // mflr r11          (at + 12)
                         0x7d88'03a6,   // mtlr r12
                         0xe98b'001c,   // ld r12, 28(r11)   (the literal at at + 40)
                         0x7d8c'5a14,   // add r12, r12, r11
                         0xe961'fff8,   // ld r11, -8(r1)
                         0x7d89'03a6,   // mtctr r12
                         0x4e80'0420};  // bctr
  const u64 delta = target - (at + 12);
  put_words_le(words, 10, out);
  for (unsigned b = 0; b < 8; b++) out[40 + b] = static_cast<u8>(delta >> (8 * b));
}

// ld's ELFv2 call stub to a function in a shared object (symbol `NNNNNNNN.plt_call.NAME`), as GNU ld
// lays it out: `std r2,24(r1)`, then `addis r12,r2,hi; ld r12,lo(r12)` or `ld r12,lo(r2)`, then
// `mtctr r12; bctr`. Its size and where it loads the function's address from, relative to the TOC
// pointer r2 it assumes; nullopt for any other form. `word(at, w)` reads the word at `at`.
struct PltCallStub {
  u32 size;
  i64 toc_offset;
};
// Where the ELFv2 ABI puts the TOC pointer: this far past the start of .got (the `.TOC.` symbol, where
// a binary still has it, says the same).
inline constexpr u64 toc_past_got = 0x8000;
template <class Word>
constexpr std::optional<PltCallStub> plt_call_stub(u64 at, Word word) {
  u32 w[5] = {};
  if (!read_words(at, 4, word, w)) return std::nullopt;
  const auto s16 = [](u32 v) { return static_cast<i64>(static_cast<int16_t>(v & 0xffff)); };
  if (w[0] != 0xf841'0018) return std::nullopt;  // std r2, 24(r1)
  if ((w[1] & 0xffff'0003) == 0xe982'0000 && w[2] == 0x7d89'03a6 && w[3] == 0x4e80'0420)  // ld r12, lo(r2)
    return PltCallStub{16, s16(w[1] & 0xfffc)};
  if ((w[1] & 0xffff'0000) == 0x3d82'0000 && (w[2] & 0xffff'0003) == 0xe98c'0000 && w[3] == 0x7d89'03a6 && read_words(at, 5, word, w) &&
      w[4] == 0x4e80'0420)  // addis r12, r2, hi; ld r12, lo(r12)
    return PltCallStub{20, s16(w[1]) * 65536 + s16(w[2] & 0xfffc)};
  return std::nullopt;
}

// A branch island written over such a stub, which only -pg calls to _mcount entered:
// `addis r12,r2,ha; addi r12,r12,lo; mtctr r12; bctr` to `target`, `toc` being the TOC pointer the
// stub assumed (at a -pg site the function's own, which its call through the stub relied on). It
// writes only r12 and CTR, as the stub did. False beyond +-2 GiB of `toc`. 16 bytes; arch/island.h
// checks it, given `toc`.
inline constexpr unsigned toc_island_size = 16;
constexpr bool encode_toc_island(u64 toc, u64 target, u8* out) {
  const i64 delta = static_cast<i64>(target - toc);
  if (delta < -(i64{1} << 31) || delta >= (i64{1} << 31) - 0x8000) return false;
  const u32 ha = static_cast<u32>((delta + 0x8000) >> 16) & 0xffff, lo = static_cast<u32>(delta) & 0xffff;
  const u32 words[4] = {0x3d82'0000 | ha,  // addis r12, r2, ha
                        0x398c'0000 | lo,  // addi r12, r12, lo
                        0x7d89'03a6,       // mtctr r12
                        0x4e80'0420};      // bctr
  put_words_le(words, 4, out);
  return true;
}

}  // namespace prepatch::arch::ppc64le
