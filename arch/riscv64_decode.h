// Our RISC-V decoder (Capstone 4 has no RISC-V): every RVC encoding and the 32-bit forms sites are made
// of, as text in `objdump -M no-aliases` style; tests/riscv64_test.cc compares it with
// riscv64-linux-gnu-objdump.
#pragma once
#include <span>
#include <string>

#include "arch/riscv64.h"

namespace prepatch::arch::riscv64 {

// One decoded instruction. `valid` is false for reserved and illegal encodings (the all-zero halfword,
// c.unimp, included) and for lengths beyond 32 bits, which RV64GC does not have.
struct Insn {
  unsigned len = 0;  // 2 or 4; 0 when fewer bytes than the instruction's length were given
  bool valid = false;
  std::string text;  // objdump -M no-aliases style for the forms sites use, "c.*" names for all of RVC
};
Insn decode(std::span<const u8> b);

}  // namespace prepatch::arch::riscv64
