// RISC-V64 (RV64GC): the instructions a site is made of, and the project's own decoder for them
// (Capstone 4 has no RISC-V; tests cross-check this decoder against riscv64-linux-gnu-objdump).
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
// Sites (gcc -pg): `mv a0, ra; auipc ra, X; jalr ra, Y(ra)` after saving ra, toggled at the `jalr`.
// -fpatchable-function-entry: `c.nop` halfwords, prepared offline into `auipc t0, X; jalr t0, Y(t0)`.
#pragma once
#include <span>
#include <string>

#include "arch/plan.h"

namespace prepatch::arch::riscv64 {

// clang-format off
inline constexpr u32 nop      = 0x0000'0013;  // nop (addi zero, zero, 0)
inline constexpr u32 auipc    = 0x0000'0017;  // auipc rd, imm20     (rd, imm filled in)
inline constexpr u32 jalr     = 0x0000'0067;  // jalr rd, imm12(rs1) (rd, rs1, imm filled in)
inline constexpr u16 c_mv_a0_ra = 0x8506;     // c.mv a0, ra
inline constexpr u16 c_nop    = 0x0001;       // c.nop
inline constexpr u16 c_ebreak = 0x9002;       // c.ebreak
inline constexpr unsigned ra = 1, t0 = 5;
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

// One decoded instruction. `valid` is false for reserved and illegal encodings (the all-zero halfword,
// c.unimp, included) and for lengths beyond 32 bits, which RV64GC does not have.
struct Insn {
  unsigned len = 0;  // 2 or 4; 0 when fewer bytes than the instruction's length were given
  bool valid = false;
  std::string text;  // objdump -M no-aliases style for the forms sites use, "c.*" names for all of RVC
};
Insn decode(std::span<const u8> b);

}  // namespace prepatch::arch::riscv64
