// RISC-V64 (RV64GC): the instructions a site is made of, freestanding (the shim includes it); the
// project's own text decoder is in arch/riscv64_decode.h (Capstone 4 has no RISC-V; tests cross-check
// it against riscv64-linux-gnu-objdump).
//
// Branch reach: `auipc; jalr` reaches +-2 GiB; the `auipc` is written offline and stays, only the
// `jalr` toggles (jalr <-> nop), as the kernel's riscv ftrace does. A site (or the -pg sites' redirect)
// farther from the shim's trampoline calls a branch island after the text (encode_island, below).
//
// What a store can change atomically: with the C extension, 32-bit instructions sit on 2-byte
// boundaries. The RVA profiles' Ziccif extension makes instruction fetch of a naturally aligned
// 32-bit instruction single-copy atomic; nothing makes a 2-byte aligned one so, and a misaligned
// store may be split (even emulated bytewise by the kernel). Hence two plans (arch/plan.h): one aligned
// 32-bit store where the `jalr` is 4-byte aligned, else the seeds' breakpoint plan with a 16-bit
// `c.ebreak` over the first halfword. The checker decides which plans are safe; the seeds' byte-wise
// nop -> unimp plan is not (a half-written word can read as a valid compressed instruction).
// Sync: membarrier SYNC_CORE where the kernel offers it on riscv, else riscv_flush_icache (nr 259).
//
// Sites (gcc -pg): `mv a0, ra; auipc ra, X; jalr ra, Y(ra)` after saving ra, toggled at the `jalr`;
// where ld relaxed the pair to `jal ra, T` (T within 1 MiB), toggled at the `jal`. Either keeps its
// target T (the _mcount PLT entry, or _mcount), whose start the preparer makes a jump to the shim.
// -fpatchable-function-entry: `c.nop` halfwords, prepared offline into `auipc t0, X; jalr t0, Y(t0)`.
#pragma once

#include "arch/plan.h"

namespace prepatch::arch::riscv64 {

// clang-format off
inline constexpr u32 nop      = 0x0000'0013;  // nop (addi zero, zero, 0)
inline constexpr u32 auipc    = 0x0000'0017;  // auipc rd, imm20     (rd, imm filled in)
inline constexpr u32 jalr     = 0x0000'0067;  // jalr rd, imm12(rs1) (rd, rs1, imm filled in)
inline constexpr u16 c_mv_a0_ra = 0x8506;     // c.mv a0, ra
inline constexpr u16 c_nop    = 0x0001;       // c.nop
inline constexpr u16 c_ebreak = 0x9002;       // c.ebreak
inline constexpr u16 c_ret    = 0x8082;       // c.jr ra (ret)
inline constexpr unsigned zero = 0, ra = 1, t0 = 5, t1 = 6, t3 = 28;
// clang-format on

// `auipc link, hi; jalr link, lo(link)` at `at` calling `target`: the pair, or false out of reach.
constexpr bool encode_call(u64 at, u64 target, unsigned link, u32& auipc_out, u32& jalr_out) {
  const i64 d = static_cast<i64>(target - at);
  const i64 lo = ((d & 0xfff) ^ 0x800) - 0x800;  // sign-extended low 12 bits
  const i64 hi = (d - lo) >> 12;
  if (hi < -(i64{1} << 19) || hi >= (i64{1} << 19)) return false;
  auipc_out = auipc | (link << 7) | (static_cast<u32>(hi) << 12);
  jalr_out = jalr | (link << 7) | (link << 15) | (static_cast<u32>(lo) << 20);
  return true;
}

// `auipc t1, hi; jr lo(t1)` at `at` jumping to `target`, every register but t1 as it was (the -pg
// sites' redirect, where the PLT entry or _mcount clobbers t1 anyway; a hooked unwinder's entry): the
// pair, or false out of reach.
constexpr bool encode_jump(u64 at, u64 target, u32& auipc_out, u32& jr_out) {
  if (!encode_call(at, target, t1, auipc_out, jr_out)) return false;
  jr_out &= ~(u32{31} << 7);  // rd = zero: a jump, not a call
  return true;
}

// A branch island (arch/island.h): what a patchable site, or the -pg sites' redirect, calls when the
// trampoline `target` lies beyond +-2 GiB (a .bss over 2 GiB). `auipc t1, 0; ld t3, 16(t1); add t1,
// t1, t3; jr t1; .dword target - at`: any distance, position-independent, writing only t1 and t3,
// which ld's PLT entries clobber on the way to any function (`jalr t1, t3`), so they are free at every
// site: a patchable one's t0 (its return address) and t2 (a nested function's static chain) are kept.
// 8-aligned (its literal); arch/island.h checks it.
inline constexpr unsigned island_size = 24, island_align = 8;
constexpr void encode_island(u64 at, u64 target, u8* out) {
  const u32 words[4] = {auipc | (t1 << 7),                                           // auipc t1, 0
                        0x03 | (t3 << 7) | (3u << 12) | (t1 << 15) | (16u << 20),    // ld t3, 16(t1)
                        0x33 | (t1 << 7) | (t1 << 15) | (t3 << 20),                  // add t1, t1, t3
                        jalr | (t1 << 15)};                                          // jalr zero, 0(t1)
  put_words_le(words, 4, out);
  const u64 delta = target - at;
  for (unsigned b = 0; b < 8; b++) out[16 + b] = static_cast<u8>(delta >> (8 * b));
}

// The fields of the forms discovery reads (unprivileged ISA manual, "RV32I Base Integer Instruction
// Set": U-, I- and J-type immediates). The text decoder (riscv64_decode.h) names instructions through
// them, and the tests compare that text with riscv64-linux-gnu-objdump's.
constexpr unsigned insn_length(u16 first_halfword) { return (first_halfword & 3) == 3 ? 4 : 2; }
constexpr unsigned rd_of(u32 w) { return (w >> 7) & 31; }
constexpr unsigned rs1_of(u32 w) { return (w >> 15) & 31; }
constexpr unsigned funct3_of(u32 w) { return (w >> 12) & 7; }
constexpr i64 i_imm(u32 w) { return static_cast<i64>(static_cast<i32>(w) >> 20); }
constexpr i64 u_imm(u32 w) { return static_cast<i64>(static_cast<i32>(w & 0xfffff000u)); }
constexpr i64 j_imm(u32 w) {  // imm[20|10:1|11|19:12]
  const u32 imm = ((w >> 31) & 1) << 20 | ((w >> 12) & 0xff) << 12 | ((w >> 20) & 1) << 11 | ((w >> 21) & 0x3ff) << 1;
  return static_cast<i64>(imm ^ 0x100000) - 0x100000;
}
constexpr i64 s_imm(u32 w) { return static_cast<i64>(static_cast<i32>(((w >> 25) << 5 | ((w >> 7) & 31)) << 20) >> 20); }
constexpr bool is_auipc(u32 w) { return (w & 0x7f) == 0x17; }
constexpr bool is_jal(u32 w) { return (w & 0x7f) == 0x6f; }
constexpr bool is_jalr(u32 w) { return (w & 0x7f) == 0x67 && funct3_of(w) == 0; }
constexpr bool is_ld(u32 w) { return (w & 0x7f) == 0x03 && funct3_of(w) == 3; }
// What `auipc rd, hi` at `at`, then an I-type instruction's `lo(rd)` (ld, jalr), address.
constexpr u64 pair_target(u64 at, u32 auipc, u32 lo) { return at + static_cast<u64>(u_imm(auipc) + i_imm(lo)); }
// `jalr link, lo(link)`: the second half of a call pair through `link` (ra for -pg, t0 for patchable).
constexpr bool is_jalr_via(u32 w, unsigned link) { return is_jalr(w) && rd_of(w) == link && rs1_of(w) == link; }
inline constexpr u32 addi_a0_ra = 0x0000'8513;  // addi a0, ra, 0 (mv a0, ra without the C extension)

// A -pg prologue's moves of sp and its save of ra (what the graph tracer needs to know of an mcount
// site: rewriter/sites_riscv64.cc), from the manual's "RVC" chapter and the I-type and S-type forms:
//   addi sp, sp, imm      c.addi16sp imm (nzimm[9|4|6|8:7|5])      c.addi sp, imm (imm[5|4:0])
//   sd ra, imm(sp)        c.sdsp ra, uimm (uimm[5:3|8:6])
constexpr bool is_addi_sp_sp(u32 w) { return (w & 0x000f'ffff) == 0x0001'0113; }
constexpr bool is_sd_ra_sp(u32 w) { return (w & 0x01ff'f07f) == 0x0011'3023; }
constexpr bool is_c_addi16sp(u16 c) { return (c & 0xef83) == 0x6101 && (c & 0x107c); }
constexpr bool is_c_addi_sp(u16 c) { return (c & 0xef83) == 0x0101 && (c & 0x107c); }
constexpr bool is_c_sdsp_ra(u16 c) { return (c & 0xe07f) == 0xe006; }
constexpr i64 c_addi16sp_imm(u16 c) {
  const u32 v = ((c >> 12) & 1) << 9 | ((c >> 6) & 1) << 4 | ((c >> 5) & 1) << 6 | ((c >> 3) & 3) << 7 | ((c >> 2) & 1) << 5;
  return static_cast<i64>(v ^ 0x200) - 0x200;
}
constexpr i64 c_addi_imm(u16 c) { return static_cast<i64>((((c >> 12) & 1) << 5 | ((c >> 2) & 31)) ^ 0x20) - 0x20; }
constexpr u64 c_sdsp_uimm(u16 c) { return ((c >> 10) & 7) << 3 | ((c >> 7) & 7) << 6; }
// Whether an instruction other than those may write sp (rd = sp), or jumps or branches: where a
// prologue is not followed further. Compressed: quadrant 1's c.addi/c.addiw/c.li/c.lui with rd = sp,
// quadrant 2's c.slli/c.lwsp/c.ldsp and c.mv/c.add with rd = sp; c.j, c.beqz, c.bnez, c.jr, c.jalr.
// 32-bit: every opcode with an integer rd (loads, op-imm, auipc, op, lui, the -32 forms, atomics, fp
// moves to integer registers, CSR reads) where rd = sp; branches, jal and jalr whatever their rd.
constexpr bool ends_prologue(u16 c) {
  const unsigned q = c & 3, f3 = c >> 13, rd = (c >> 7) & 31, rs2 = (c >> 2) & 31;
  if (q == 1) return (f3 <= 3 && rd == 2) || f3 >= 5;
  if (q == 2) return ((f3 == 0 || f3 == 2 || f3 == 3) && rd == 2) || (f3 == 4 && ((rd == 2 && rs2 != 0) || (rs2 == 0 && rd != 0)));
  return false;
}
// Whether an instruction runs the same at another address (the graph tracer moves the first ones of
// the binary's own unwinder entry points, shim/runtime/exceptions.inc): not auipc, and no jump,
// branch or system instruction (ecall, ebreak, CSR access), compressed or not.
constexpr bool movable(u16 c) {
  const unsigned q = c & 3, f3 = c >> 13, rd = (c >> 7) & 31, rs2 = (c >> 2) & 31;
  if (c == 0 || (q == 1 && f3 >= 5)) return false;   // c.unimp; c.j, c.beqz, c.bnez
  return !(q == 2 && f3 == 4 && rs2 == 0 && (rd != 0 || (c >> 12) & 1));  // c.jr, c.jalr, c.ebreak
}
constexpr bool movable(u32 w) {
  const unsigned op = w & 0x7f;
  return op != 0x17 && op != 0x63 && op != 0x67 && op != 0x6f && op != 0x73;
}
constexpr bool ends_prologue(u32 w) {
  const unsigned op = w & 0x7f;
  if (op == 0x63 || op == 0x67 || op == 0x6f) return true;
  const bool writes_rd = op == 0x03 || op == 0x13 || op == 0x17 || op == 0x1b || op == 0x2f || op == 0x33 || op == 0x37 || op == 0x3b || op == 0x53 || op == 0x73;
  return writes_rd && rd_of(w) == 2;
}

// `jal link, target` at `at`: +-1 MiB.
constexpr bool encode_jal(u64 at, u64 target, unsigned link, u32& out) {
  const i64 d = static_cast<i64>(target - at);
  if (d % 2 != 0 || d < -(i64{1} << 20) || d >= (i64{1} << 20)) return false;
  const u32 v = static_cast<u32>(d);
  out = 0x6f | (link << 7) | (((v >> 12) & 0xff) << 12) | (((v >> 11) & 1) << 20) | (((v >> 1) & 0x3ff) << 21) | (((v >> 20) & 1) << 31);
  return true;
}

}  // namespace prepatch::arch::riscv64
