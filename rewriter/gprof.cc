#include "rewriter/gprof.h"

#include <algorithm>

#include "arch/aarch64.h"
#include "arch/ppc64le.h"
#include "arch/riscv64.h"
#include "arch/thumb2.h"
#include "arch/x86_64.h"

namespace prepatch {

namespace {

// Puts the little-endian `n`-byte instruction `insn` at byte `at` of the patch, and grows it to cover it.
void put(elf::Patch& p, unsigned at, u32 insn, unsigned n) {
  for (unsigned i = 0; i < n; i++) p.bytes[at + i] = static_cast<u8>(insn >> (8 * i));
  p.len = static_cast<u8>(std::max<unsigned>(p.len, at + n));
}

}  // namespace

std::optional<elf::Patch> gprof_off_patch(const elf::Elf& elf, u64 value, u8 other) {
  u64 at = value;
  elf::Patch p;
  switch (elf.header().machine) {
    case EM_X86_64: {
      constexpr auto endbr64 = arch::X86_64::endbr64;  // IBT's landing pad stays: _init calls through a pointer
      if (auto b = elf.bytes_at(at, 4); b.size() == 4 && std::equal(b.begin(), b.end(), endbr64.begin())) at += 4;
      put(p, 0, arch::X86_64::ret, 1);
      break;
    }
    case EM_AARCH64: {
      auto b = elf.bytes_at(at, 4);
      if (b.size() != 4) return std::nullopt;
      const auto first = static_cast<u32>(elf.codec().get(b, 0, 4));
      if (first == arch::aarch64::bti_c) {  // the landing pad stays
        at += 4;
      } else if (first == arch::aarch64::paciasp) {  // a landing pad too: authenticate the return address again
        at += 4;
        put(p, 0, arch::aarch64::autiasp, 4);
      }
      put(p, p.len, arch::aarch64::ret, 4);
      break;
    }
    case EM_PPC64:  // ELFv2: calls from inside the binary enter at the local entry point, the others fall into it
      at += arch::ppc64le::local_entry_offset(other);
      put(p, 0, arch::ppc64le::blr, 4);
      break;
    case EM_RISCV:  // RV64GC, as the rest of the binary
      put(p, 0, arch::riscv64::c_ret, 2);
      break;
    case EM_ARM:
      if (at & 1) {  // Thumb
        at &= ~u64{1};
        put(p, 0, arch::thumb2::bx_lr, 2);
      } else {
        put(p, 0, arch::thumb2::arm_bx_lr, 4);
      }
      break;
    default:
      return std::nullopt;
  }
  // Only code: a symbol that points anywhere else (the ELF header, the program headers, data) is left
  // alone. A fuzzed __gmon_start__ at the ELF header's e_shnum once turned it into a `ret` byte.
  auto off = elf.vaddr_to_offset(at, p.len);
  const elf::Segment* seg = elf.load_segment_for(at, p.len);
  if (!off || !seg || !(seg->flags & PF_X)) return std::nullopt;
  const u64 headers_end = elf.header().phoff + u64{elf.header().phnum} * elf::layout_for(elf.codec().is64).phdr.size;
  if (*off < elf::layout_for(elf.codec().is64).ehdr.size || (*off + p.len > elf.header().phoff && *off < headers_end)) return std::nullopt;
  p.offset = *off;
  return p;
}

}  // namespace prepatch
