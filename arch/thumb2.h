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
#pragma once
#include "arch/plan.h"

namespace prepatch::arch::thumb2 {

// clang-format off
inline constexpr u16 nop       = 0xbf00;            // nop (16-bit): a -fpatchable-function-entry pad's
inline constexpr u16 push_lr   = 0xb500;            // push {lr}
inline constexpr u16 pop_lr[2] = {0xf85d, 0xeb04};  // ldr.w lr, [sp], #4   (pop {lr}: the off form)
inline constexpr u16 bx_pc     = 0x4778;            // bx pc: a PLT entry's Thumb stub, into its ARM-state code
inline constexpr u16 bx_lr     = 0x4770;            // bx lr
inline constexpr u32 arm_bx_lr = 0xe12f'ff1e;       // bx lr, in ARM state
inline constexpr u32 arm_nop   = 0xe320'f000;       // nop, in ARM state
// clang-format on

inline constexpr i64 bl_reach = i64{1} << 24;

// A halfword that starts a 32-bit instruction (0b11101, 0b11110, 0b11111 in its top five bits).
constexpr bool is_32bit(u16 first) { return (first >> 11) >= 0x1d; }
// The halfwords of a 32-bit `bl` (to Thumb) or `blx` (to ARM state) with an immediate.
constexpr bool is_bl_or_blx(u16 first, u16 second) { return (first & 0xf800) == 0xf000 && (second & 0xc000) == 0xc000; }

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

// A branch island (veneer), in Thumb state: what a site calls when the trampoline `target` (a Thumb
// address: bit 0 set) is beyond its bl's reach. `ldr.w ip, [pc, #4]; add ip, pc; bx ip; .word target
// - (at + 8)`: any distance in the 32-bit space, position-independent, writing only ip, which AAPCS
// gives every call's veneers (__gnu_mcount_nc clobbers it too). 4-aligned; arch/island.h checks it.
inline constexpr unsigned island_size = 12, island_align = 4;
constexpr void encode_island(u64 at, u64 target, u8* out) {
  const u16 halves[4] = {0xf8df, 0xc004,  // ldr.w ip, [pc, #4]   (the literal at at + 8)
                         0x44fc,          // add ip, pc           (pc reads at + 8)
                         0x4760};         // bx ip
  const u32 delta = static_cast<u32>(target - (at + 8));
  for (unsigned i = 0; i < 4; i++) out[2 * i] = static_cast<u8>(halves[i]), out[2 * i + 1] = static_cast<u8>(halves[i] >> 8);
  for (unsigned b = 0; b < 4; b++) out[8 + b] = static_cast<u8>(delta >> (8 * b));
}

}  // namespace prepatch::arch::thumb2
