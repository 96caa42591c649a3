// Field offsets and widths of the ELF structures, per class. The reader and the writer both go through
// these tables, so there is one description of ELF32 vs ELF64, not two.
#pragma once
#include "elf/types.h"

namespace prepatch::elf {

struct Field {
  u8 off, width;
};

struct EhdrLayout {
  u16 size;
  Field type, machine, version, entry, phoff, shoff, flags, ehsize, phentsize, phnum, shentsize, shnum,
      shstrndx;
};
struct PhdrLayout {
  u16 size;
  Field type, flags, offset, vaddr, paddr, filesz, memsz, align;
};
struct ShdrLayout {
  u16 size;
  Field name, type, flags, addr, offset, size_, link, info, addralign, entsize;
};
struct SymLayout {
  u16 size;
  Field name, info, other, shndx, value, size_;
};

struct Layout {
  EhdrLayout ehdr;
  PhdrLayout phdr;
  ShdrLayout shdr;
  SymLayout sym;
  u16 rel_size, rela_size, dyn_size;
};

// clang-format off
inline constexpr Layout layout64 = {
  {64, {16,2},{18,2},{20,4},{24,8},{32,8},{40,8},{48,4},{52,2},{54,2},{56,2},{58,2},{60,2},{62,2}},
  {56, {0,4},{4,4},{8,8},{16,8},{24,8},{32,8},{40,8},{48,8}},
  {64, {0,4},{4,4},{8,8},{16,8},{24,8},{32,8},{40,4},{44,4},{48,8},{56,8}},
  {24, {0,4},{4,1},{5,1},{6,2},{8,8},{16,8}},
  16, 24, 16,
};
inline constexpr Layout layout32 = {
  {52, {16,2},{18,2},{20,4},{24,4},{28,4},{32,4},{36,4},{40,2},{42,2},{44,2},{46,2},{48,2},{50,2}},
  {32, {0,4},{24,4},{4,4},{8,4},{12,4},{16,4},{20,4},{28,4}},
  {40, {0,4},{4,4},{8,4},{12,4},{16,4},{20,4},{24,4},{28,4},{32,4},{36,4}},
  {16, {0,4},{12,1},{13,1},{14,2},{4,4},{8,4}},
  8, 12, 8,
};
// clang-format on

inline const Layout& layout_for(bool is64) { return is64 ? layout64 : layout32; }

}  // namespace prepatch::elf
