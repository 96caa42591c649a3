// ARM32 Thumb-2: the instructions a site is made of, and why a 16-bit trap comes first.
//
// Branch reach: the 32-bit `bl` reaches +-16 MiB from the instruction's address + 4. A site farther
// from the shim's trampolines calls a branch island within its reach instead (encode_island).
//
// What a store can change atomically: a 32-bit Thumb instruction is two halfwords and, after a 16-bit
// `push {lr}`, often sits on a 2-byte boundary; instruction fetch is only guaranteed to see aligned
// halfwords whole (ARMv7 ARM A3.5.3; A3.5.4 lists what may be modified while another core executes
// it: B, BL, NOP, BKPT, SVC...). So no single store replaces the instruction, and the plan is the
// seeds': a 16-bit trap over the first halfword, sync, the second halfword, sync, the first halfword,
// sync; a thread that meets the trap gets SIGTRAP and the shim's handler resolves it by a binary
// search. The trap is `udf #1` (0xde01): in Thumb state Linux's ptrace break hook turns it into
// SIGTRAP (TRAP_BRKPT, the pc at the instruction), which gdb's Thumb breakpoints rely on too.
//
// Sites (gcc -pg): `push {lr}; bl __gnu_mcount_nc`. __gnu_mcount_nc pops the pushed lr, so the "off"
// form cannot be a nop: it is `pop {lr}` as the 32-bit `ldr.w lr, [sp], #4`, as the kernel's ARM
// ftrace does, which keeps the stack balanced either way. A -fpatchable-function-entry pad of three
// 16-bit nops or more is given the same shape: its first nop becomes `push {lr}`, the next two the site.
//
// ARM-state (-marm) -pg functions have the same two instructions as whole words, `push {lr}` (`str lr,
// [sp, #-4]!`) and `bl __gnu_mcount_nc`, 4-aligned. There a word store is seen whole (A3.5.3), but
// A3.5.4 lets another core run a word while it is rewritten only when both the old and the new
// instruction are B, BL, NOP, BKPT, SVC, HVC or SMC, and `pop {lr}` is none of them. So an ARM-state
// site is made of two words that never need it: the first becomes `mov ip, pc` for good (ip = the
// site's end: ip is free here, __gnu_mcount_nc and its PLT entry clobber it), and the second is toggled
// between `nop` and `b` to the shim's ARM-state entry (shim/entry_arm.S prepatch_arm_entry, or its
// copy as an island: encode_arm_entry_island), which pushes lr, takes ip as the return address and
// goes on to the mcount trampoline as a Thumb `bl` from the site would have: the same stack, lr the
// site's end. One aligned store swaps two listed instructions: arch/plan.h's second-word plan.
#pragma once
#include <optional>

#include "arch/plan.h"

namespace prepatch::arch::thumb2 {

// clang-format off
inline constexpr u16 nop       = 0xbf00;            // nop (16-bit): a -fpatchable-function-entry pad's
inline constexpr u16 push_lr   = 0xb500;            // push {lr}
inline constexpr u16 pop_lr[2] = {0xf85d, 0xeb04};  // ldr.w lr, [sp], #4   (pop {lr}: the off form)
inline constexpr u16 bx_pc     = 0x4778;            // bx pc: a PLT entry's Thumb stub, into its ARM-state code
inline constexpr u16 bx_lr     = 0x4770;            // bx lr
inline constexpr u16 nop_mov_r8 = 0x46c0;           // mov r8, r8: the 16-bit nop after a stub's `bx pc`
inline constexpr u32 arm_bx_lr = 0xe12f'ff1e;       // bx lr, in ARM state
inline constexpr u32 arm_nop   = 0xe320'f000;       // nop, in ARM state
inline constexpr u32 arm_push_lr = 0xe52d'e004;     // push {lr} (str lr, [sp, #-4]!), in ARM state
inline constexpr u32 arm_mov_ip_pc = 0xe1a0'c00f;   // mov ip, pc (ip = its address + 8), in ARM state
// clang-format on

// An ARM-state site: `mov ip, pc`, then the toggled word, `nop` or `b` to the ARM-state entry.
inline constexpr unsigned arm_site_len = 8;
inline constexpr i64 arm_b_reach = i64{1} << 25;

// `b target` at `at` in ARM state (A1 encoding, +-32 MiB from at + 8); false when out of reach.
constexpr bool encode_arm_b(u64 at, u64 target, u32& w) {
  const i64 d = static_cast<i64>(target - (at + 8));
  if (d % 4 != 0 || d < -arm_b_reach || d >= arm_b_reach) return false;
  w = 0xea00'0000u | (static_cast<u32>(d >> 2) & 0x00ff'ffffu);
  return true;
}

inline constexpr i64 bl_reach = i64{1} << 24;

// A halfword that starts a 32-bit instruction (0b11101, 0b11110, 0b11111 in its top five bits).
constexpr bool is_32bit(u16 first) { return (first >> 11) >= 0x1d; }
// The halfwords of a 32-bit `bl` (to Thumb) or `blx` (to ARM state) with an immediate.
constexpr bool is_bl_or_blx(u16 first, u16 second) { return (first & 0xf800) == 0xf000 && (second & 0xc000) == 0xc000; }

// A prologue's effect on sp, as gcc -pg emits the instructions before its `push {lr}; bl
// __gnu_mcount_nc` (rewriter/sites_thumb2.cc follows them, for the graph tracer): how many bytes it
// pushes or subtracts, and whether lr is stored, at which byte above the new sp. Every other
// instruction is not a prologue's (`known` false), as is a form that writes sp otherwise.
struct PrologueStep {
  bool known = false;
  u32 down = 0;       // bytes sp moves down
  bool lr = false;    // lr is stored,
  u32 lr_at = 0;      // at the new sp + this
};

// ThumbExpandImm (ARMv7 ARM A6.3.2): the 12-bit modified immediate i:imm3:imm8 as a constant.
constexpr u32 thumb_expand_imm(u32 imm12) {
  if ((imm12 >> 10) == 0) {
    const u32 b = imm12 & 0xff;
    switch ((imm12 >> 8) & 3) {
      case 0: return b;
      case 1: return b << 16 | b;
      case 2: return b << 24 | b << 8;
      default: return b << 24 | b << 16 | b << 8 | b;
    }
  }
  const u32 v = 0x80 | (imm12 & 0x7f), rot = imm12 >> 7;
  return v >> rot | v << (32 - rot);
}

// A register list's size, and lr's place in it (registers are stored lowest first, from sp up).
constexpr PrologueStep push_step(u32 list) {
  const u32 n = static_cast<u32>(__builtin_popcount(list));
  return {true, 4 * n, (list & (1u << 14)) != 0, 4 * (n - 1)};
}

// The 16-bit instruction `h`.
constexpr PrologueStep prologue_step(u16 h) {
  if ((h & 0xfe00) == 0xb400) return push_step((h & 0xff) | ((h & 0x100) ? 1u << 14 : 0));  // push {rlist[, lr]}
  if ((h & 0xff80) == 0xb080) return {true, 4u * (h & 0x7f), false, 0};                 // sub sp, #imm7*4
  if ((h & 0xf800) == 0xa800 || h == 0x466f || h == 0xbf00) return {true, 0, false, 0};  // add rd, sp, #imm; mov r7, sp; nop
  return {};
}

// The 32-bit instruction `first`, `second`.
constexpr PrologueStep prologue_step(u16 first, u16 second) {
  if (first == 0xe92d && !(second & 0xa000)) return push_step(second);  // stmdb sp!, {rlist} (push.w; no sp or pc)
  if (first == 0xf84d && (second & 0x0fff) == 0x0d04 && (second >> 12) != 15)  // str.w rt, [sp, #-4]! (push.w {rt})
    return {true, 4, (second >> 12) == 14, 0};
  if (first == 0xed2d && ((second & 0x0e00) == 0x0a00)) return {true, 4u * (second & 0xff), false, 0};  // vpush {s/d regs}
  const u32 imm12 = (first & 0x0400u) << 1 | (second & 0x7000u) >> 4 | (second & 0xffu);
  if ((first & 0xfbff) == 0xf1ad && (second & 0x8f00) == 0x0d00) return {true, thumb_expand_imm(imm12), false, 0};  // sub.w sp, sp, #const
  if ((first & 0xfbff) == 0xf2ad && (second & 0x8f00) == 0x0d00) return {true, imm12, false, 0};                    // subw sp, sp, #imm12
  return {};
}

// The ARM-state word `w`, as the -marm prologues before a site are made (ARMv7 ARM A8): push (stmdb
// sp! without sp or pc), str rt, [sp, #-4]!, sub sp, sp, #const, vpush, and what leaves sp alone
// (add rd, sp, #const, mov rd, sp, nop); anything else is not a prologue's.
constexpr PrologueStep arm_prologue_step(u32 w) {
  if ((w & 0xffff'0000) == 0xe92d'0000 && !(w & 0xa000)) return push_step(w & 0xffff);       // push {rlist}
  const u32 rd = (w >> 12) & 15;  // (rt of the store)
  if ((w & 0xffff'0fff) == 0xe52d'0004 && rd != 13 && rd != 15) return {true, 4, rd == 14, 0};  // str rt, [sp, #-4]!
  if ((w & 0xffff'f000) == 0xe24d'd000) {                                                        // sub sp, sp, #const
    const u32 imm8 = w & 0xff, rot = 2 * ((w >> 8) & 15);
    return {true, rot ? (imm8 >> rot | imm8 << (32 - rot)) : imm8, false, 0};
  }
  if ((w & 0xffbf'0e00) == 0xed2d'0a00) return {true, 4 * (w & 0xff), false, 0};                // vpush {s or d regs}
  if (((w & 0xffff'0000) == 0xe28d'0000 || (w & 0xffff'0fff) == 0xe1a0'000d) && rd != 13 && rd != 15)  // add rd, sp, #; mov rd, sp
    return {true, 0, false, 0};
  if (w == arm_nop || w == 0xe1a0'0000) return {true, 0, false, 0};                             // nop, mov r0, r0
  return {};
}

// `bl target` at `at` as its two halfwords (T1 encoding: S, imm10 | J1, J2, imm11).
constexpr bool encode_bl(u64 at, u64 target, u16 (&out)[2]) {
  const i64 d = static_cast<i64>(target - (at + 4));
  if (d % 2 != 0 || d < -bl_reach || d >= bl_reach) return false;
  const u32 v = static_cast<u32>(d);
  const u32 s = (v >> 24) & 1, i1 = (v >> 23) & 1, i2 = (v >> 22) & 1;
  const u32 j1 = (~i1 ^ s) & 1, j2 = (~i2 ^ s) & 1;
  out[0] = static_cast<u16>(0xf000 | (s << 10) | ((v >> 12) & 0x3ff));
  out[1] = static_cast<u16>(0xd000 | (j1 << 13) | (j2 << 11) | ((v >> 1) & 0x7ff));
  return true;
}

// `b.w target` at `at` (T4 encoding: bl's, with bit 12 of the second halfword set and bit 14 clear),
// +-16 MiB: the jump the shim puts at a static binary's own unwinder entry points (Thumb functions).
constexpr bool encode_b_w(u64 at, u64 target, u16 (&out)[2]) {
  if (!encode_bl(at, target, out)) return false;
  out[1] = static_cast<u16>((out[1] & ~0x4000u) | 0x1000u);
  return true;
}

// Whether an instruction at a function's entry may run elsewhere unchanged (what a hook's jump
// displaces is copied and run there): it neither reads nor writes pc, nor branches, nor starts an IT
// block. A short list of what functions start with, nothing else: 16-bit push, mov (registers, pc
// excluded), movs (immediate, or register), sub sp, add rd, sp, nop; 32-bit push.w (stmdb sp!, pc
// excluded), str.w rt, [sp, #-4]!, mov.w rd, #const.
constexpr bool movable(u16 h) {
  if ((h & 0xff00) == 0x4600) return ((h >> 3) & 0xf) != 15 && ((h & 7) | ((h >> 4) & 8)) != 15;  // mov rd, rm
  return (h & 0xfe00) == 0xb400 || (h & 0xf800) == 0x2000 || (h & 0xffc0) == 0x0000 || (h & 0xff80) == 0xb080 ||
         (h & 0xf800) == 0xa800 || h == nop;
}
constexpr bool movable(u16 first, u16 second) {
  if (first == 0xe92d) return !(second & 0xa000);
  if (first == 0xf84d) return (second & 0x0fff) == 0x0d04 && (second >> 12) != 15;
  if ((first & 0xfbef) == 0xf04f) return !(second & 0x8000) && ((second >> 8) & 0xf) < 13;
  return false;
}

// A branch island (veneer), in Thumb state: what a site calls when the trampoline `target` (a Thumb
// address: bit 0 set) is beyond its bl's reach. It writes no register but pc, and is position-
// independent: `push {r0, r1}; ldr r0, [pc, #8]; add r0, pc; str r0, [sp, #4]; pop {r0, pc}; nop;
// .word target - (at + 8)`. The jump's address goes through the word below the caller's sp, which
// holds nothing live (a signal's frame may land there at any time); `pop {pc}` interworks, so the
// target's bit 0 keeps Thumb state. No register is free at every site: at a patchable site's entry ip
// may be a GNU C nested function's static chain. 4-aligned; arch/island.h checks it.
inline constexpr unsigned island_size = 16, island_align = 4;
constexpr void encode_island(u64 at, u64 target, u8* out) {
  const u16 halves[6] = {0xb403,   // push {r0, r1}
                         0x4802,   // ldr r0, [pc, #8]     (the literal at at + 12)
                         0x4478,   // add r0, pc           (pc reads at + 8)
                         0x9001,   // str r0, [sp, #4]     (over the pushed r1)
                         0xbd01,   // pop {r0, pc}
                         nop};
  const u32 delta = static_cast<u32>(target - (at + 8));
  put_halves_le(halves, 6, out);
  put_words_le(&delta, 1, out + 12);
}

// The same in 12 bytes through ip, where ip is free (an -pg site's call, which entered ld's stub or
// the PLT entry on its way to __gnu_mcount_nc, both of which clobber it, as AAPCS lets every call's
// veneers): `ldr.w ip, [pc, #4]; add ip, pc; bx ip; .word target - (at + 8)`, written over those
// stubs. 4-aligned; arch/island.h checks it.
inline constexpr unsigned ip_island_size = 12;
constexpr void encode_ip_island(u64 at, u64 target, u8* out) {
  const u16 halves[4] = {0xf8df, 0xc004,  // ldr.w ip, [pc, #4]   (the literal at at + 8)
                         0x44fc,          // add ip, pc           (pc reads at + 8)
                         0x4760};         // bx ip
  const u32 delta = static_cast<u32>(target - (at + 8));
  put_halves_le(halves, 4, out);
  put_words_le(&delta, 1, out + 8);
}

// The same in 8 bytes, where the binary is never moved (ET_EXEC): `ldr.w pc, [pc, #0]; .word target`,
// ld's own long branch for Thumb-2. It writes no register but pc. 4-aligned; arch/island.h checks it.
inline constexpr unsigned absolute_island_size = 8;
constexpr void encode_absolute_island(u64 target, u8* out) {
  const u16 halves[2] = {0xf8df, 0xf000};  // ldr.w pc, [pc, #0]   (the literal at at + 4)
  const u32 literal = static_cast<u32>(target);
  put_halves_le(halves, 2, out);
  put_words_le(&literal, 1, out + 4);
}

// The ARM-state sites' entry as a branch island (ARM state), where the shim's (entry_arm.S
// prepatch_arm_entry) is beyond a site's `b`: it does what that entry does, from any distance in the
// 32-bit space: `push {lr}; mov lr, ip; ldr ip, [pc, #4]; add ip, ip, pc; bx ip; .word target - (at +
// 20)`, `target` the mcount trampoline (a Thumb address, bit 0 set). 4-aligned; arch/island.h checks it.
inline constexpr unsigned arm_entry_island_size = 24;
constexpr void encode_arm_entry_island(u64 at, u64 target, u8* out) {
  const u32 words[6] = {arm_push_lr, 0xe1a0'e00c /* mov lr, ip */, 0xe59f'c004 /* ldr ip, [pc, #4] */,
                        0xe08c'c00f /* add ip, ip, pc */, 0xe12f'ff1c /* bx ip */, static_cast<u32>(target - (at + 20))};
  put_words_le(words, 6, out);
}

// ARM-state sites beyond a `b`'s reach of the shim and of the island after the text (a text over 32
// MiB) take an island over the PLT entry or ld's stub their call to mcount went through, where only
// such sites entered it (ARM state), as the Thumb sites do. Where the binary is never moved (ET_EXEC):
// `ldr pc, [pc, #-4]; .word entry`, ld's own long branch, 8 bytes, to the ARM-state entry itself.
inline constexpr unsigned arm_absolute_island_size = 8;
constexpr void encode_arm_absolute_island(u64 entry, u8* out) {
  const u32 words[2] = {0xe51f'f004 /* ldr pc, [pc, #-4] */, static_cast<u32>(entry)};
  put_words_le(words, 2, out);
}

// Else 12 bytes, as a PLT entry and ld's position-independent stub are, which must give the entry ip
// (the site's end) and lr (the function's return address) untouched: `push {lr}` as the entry does
// first, then `add lr, pc, #A; add pc, lr, #B`, lr now free. A and B are ARM modified immediates (8
// bits rotated right by an even amount), whose sums reach far but not every address: they land in the
// ARM sled, words of `b` to the entry past its push (arm_sled_word) that the preparer lays before the
// blob, at the first word of it they reach (arch/island.h arm_far_landing). Landings at random
// distances needed a sled of 1 KiB within 64 MiB, 16 KiB within 1 GiB, 64 KiB (the preparer's
// bound) within 4 GiB.
inline constexpr unsigned arm_far_island_size = 12;
// The 12-bit field of an ARM modified immediate equal to `v`, or nullopt: `v` is imm8 rotated right
// by 2 * rot.
constexpr std::optional<u32> arm_modified_immediate(u32 v) {
  for (u32 rot = 0; rot < 16; rot++) {
    const u32 imm8 = rot ? (v << (2 * rot)) | (v >> (32 - 2 * rot)) : v;
    if (imm8 < 256) return rot << 8 | imm8;
  }
  return std::nullopt;
}
struct ArmFarLanding {
  u64 landing;
  u32 first, second;  // the adds' immediate fields
};
constexpr void encode_arm_far_island(const ArmFarLanding& l, u8* out) {
  const u32 words[3] = {arm_push_lr, 0xe28f'e000 | l.first /* add lr, pc, #A */, 0xe28e'f000 | l.second /* add pc, lr, #B */};
  put_words_le(words, 3, out);
}
// The sled's word at `at`: `b target`, target the ARM-state entry past its push; nullopt beyond reach.
constexpr std::optional<u32> arm_sled_word(u64 at, u64 target) {
  const i64 delta = static_cast<i64>(target) - static_cast<i64>(at + 8);
  if (delta % 4 || delta < -arm_b_reach || delta >= arm_b_reach) return std::nullopt;
  return 0xea00'0000 | (static_cast<u32>(delta >> 2) & 0x00ff'ffff);
}

// A linker stub (veneer): the code ld places within a call's reach when its destination is beyond
// it, as GNU ld's ARM32 stubs are laid out (ARM state unless noted):
//   ldr pc, [pc, #-4]; .word D                          any state to any, absolute      8 bytes
//   ldr ip, [pc]; bx ip; .word D                        absolute                       12 bytes
//   ldr ip, [pc]; add pc, pc, ip; .word D - (at + 12)   position-independent, to ARM   12 bytes
//   ldr ip, [pc, #4]; add ip, ip, pc; bx ip; .word D - (at + 12)   PIC, to Thumb        16 bytes
//   b D                                                 short, to ARM                   4 bytes
//   Thumb `bx pc; nop`, then one of the above           from Thumb into ARM state     + 4 bytes
//   Thumb `ldr.w pc, [pc, #0]; .word D`                 Thumb-2, absolute               8 bytes
// `arm`: the call enters it in ARM state, as a `blx` does. `word(at, w)` reads the instruction word
// at `at`, false past the code.
template <class Word>
constexpr std::optional<LinkerStub> linker_stub(u64 at, bool arm, Word word) {
  u32 w[4] = {};
  const auto read = [&](u64 from, unsigned n) { return read_words(from, n, word, w); };
  if (at % 4) return std::nullopt;
  if (!arm) {
    if (!read(at, 2)) return std::nullopt;
    if ((w[0] & 0xffff) == bx_pc && (w[0] >> 16) == nop_mov_r8) {
      auto s = linker_stub(at + 4, true, word);
      if (s) s->start = at, s->size += 4;
      return s;
    }
    if (w[0] == 0xf000'f8df) return LinkerStub{at, 8, w[1]};  // ldr.w pc, [pc, #0]
    return std::nullopt;
  }
  if (!read(at, 1)) return std::nullopt;
  if ((w[0] & 0xff00'0000) == 0xea00'0000)  // b D: pc reads at + 8
    return LinkerStub{at, 4, (at + 8 + static_cast<u64>(static_cast<i64>(static_cast<i32>(w[0] << 8) >> 6))) & 0xffff'ffffu};
  if (w[0] == 0xe51f'f004 && read(at, 2)) return LinkerStub{at, 8, w[1]};
  if (w[0] == 0xe59f'c000 && read(at, 3)) {
    if (w[1] == 0xe12f'ff1c) return LinkerStub{at, 12, w[2]};
    if (w[1] == 0xe08f'f00c) return LinkerStub{at, 12, (at + 12 + w[2]) & 0xffff'ffffu};
  }
  if (w[0] == 0xe59f'c004 && read(at, 4) && w[1] == 0xe08c'c00f && w[2] == 0xe12f'ff1c)
    return LinkerStub{at, 16, (at + 12 + w[3]) & 0xffff'ffffu};
  return std::nullopt;
}

}  // namespace prepatch::arch::thumb2
