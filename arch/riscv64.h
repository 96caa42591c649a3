// RISC-V64 (RV64GC): the instructions a site is made of, freestanding (the shim includes it); the
// project's own text decoder is in arch/riscv64_decode.h (Capstone 4 has no RISC-V; tests cross-check
// it against riscv64-linux-gnu-objdump).
//
// Branch reach: `auipc; jalr` reaches +-2 GiB; the `auipc` is written offline and stays, only the
// `jalr` toggles (jalr <-> nop), as the kernel's riscv ftrace does.
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
inline constexpr unsigned zero = 0, ra = 1, t0 = 5, t1 = 6;
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
constexpr bool is_auipc(u32 w) { return (w & 0x7f) == 0x17; }
constexpr bool is_jal(u32 w) { return (w & 0x7f) == 0x6f; }
constexpr bool is_jalr(u32 w) { return (w & 0x7f) == 0x67 && funct3_of(w) == 0; }
constexpr bool is_ld(u32 w) { return (w & 0x7f) == 0x03 && funct3_of(w) == 3; }
// `jalr link, lo(link)`: the second half of a call pair through `link` (ra for -pg, t0 for patchable).
constexpr bool is_jalr_via(u32 w, unsigned link) { return is_jalr(w) && rd_of(w) == link && rs1_of(w) == link; }
inline constexpr u32 addi_a0_ra = 0x0000'8513;  // addi a0, ra, 0 (mv a0, ra without the C extension)

// `jal link, target` at `at`: +-1 MiB.
constexpr bool encode_jal(u64 at, u64 target, unsigned link, u32& out) {
  const i64 d = static_cast<i64>(target - at);
  if (d % 2 != 0 || d < -(i64{1} << 20) || d >= (i64{1} << 20)) return false;
  const u32 v = static_cast<u32>(d);
  out = 0x6f | (link << 7) | (((v >> 12) & 0xff) << 12) | (((v >> 11) & 1) << 20) | (((v >> 1) & 0x3ff) << 21) | (((v >> 20) & 1) << 31);
  return true;
}

}  // namespace prepatch::arch::riscv64
