#include "rewriter/gprof.h"

#include <cstring>

namespace prepatch {

namespace {

u32 load32(std::span<const u8> b) { return u32{b[0]} | u32{b[1]} << 8 | u32{b[2]} << 16 | u32{b[3]} << 24; }

void put32(elf::Patch& p, unsigned at, u32 w) {
  for (unsigned i = 0; i < 4; i++) p.bytes[at + i] = static_cast<u8>(w >> (8 * i));
}

}  // namespace

std::optional<elf::Patch> gprof_off_patch(const elf::Elf& elf, u64 value, u8 other) {
  const u16 machine = elf.header().machine;
  u64 at = value;
  elf::Patch p;
  switch (machine) {
    case EM_X86_64: {
      constexpr u8 endbr64[4] = {0xf3, 0x0f, 0x1e, 0xfa};  // IBT's landing pad stays: _init calls through a pointer
      if (auto b = elf.bytes_at(at, 4); b.size() == 4 && std::memcmp(b.data(), endbr64, 4) == 0) at += 4;
      p.bytes[0] = 0xc3;  // ret
      p.len = 1;
      break;
    }
    case EM_AARCH64: {
      auto b = elf.bytes_at(at, 4);
      if (b.size() != 4) return std::nullopt;
      const u32 first = load32(b);
      if (first == 0xd503245f) {  // bti c: the landing pad stays
        at += 4;
        put32(p, 0, 0xd65f03c0), p.len = 4;  // ret
      } else if (first == 0xd503233f) {  // paciasp (a landing pad too): authenticate the return address again
        at += 4;
        put32(p, 0, 0xd50323bf), put32(p, 4, 0xd65f03c0), p.len = 8;  // autiasp; ret
      } else {
        put32(p, 0, 0xd65f03c0), p.len = 4;
      }
      break;
    }
    case EM_PPC64:  // ELFv2: calls from inside the binary enter at the local entry point, the others fall into it
      at += ((u64{1} << ((other >> 5) & 7)) >> 2) << 2;
      put32(p, 0, 0x4e800020), p.len = 4;  // blr
      break;
    case EM_RISCV:
      p.bytes[0] = 0x82, p.bytes[1] = 0x80, p.len = 2;  // c.jr ra (ret); RV64GC, as the rest of the binary
      break;
    case EM_ARM:
      if (at & 1) {  // Thumb
        at &= ~u64{1};
        p.bytes[0] = 0x70, p.bytes[1] = 0x47, p.len = 2;  // bx lr
      } else {
        put32(p, 0, 0xe12fff1e), p.len = 4;  // ARM state: bx lr
      }
      break;
    default:
      return std::nullopt;
  }
  auto off = elf.vaddr_to_offset(at, p.len);
  if (!off) return std::nullopt;
  p.offset = *off;
  return p;
}

}  // namespace prepatch
