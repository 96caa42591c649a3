// The objects of a dynamically linked process as the dynamic linker left them, read in place: the
// list r_debug heads (the one debuggers walk), each object's dynamic section, a symbol's definition by
// its GNU hash, and the GOT slots through which an object calls a symbol. The graph tracer's exception
// hooks need nothing more (shim/runtime/exceptions.inc). Freestanding, like core.h; tests/shim_core_test.cc runs it
// on the test process itself.
#pragma once
#include "shim/core.h"

namespace prepatch::shim {

// glibc's struct link_map and struct r_debug, the parts <link.h> makes public.
struct LinkMap {
  uptr addr;  // load bias
  const char* name;
  const u8* ld;  // the dynamic section
  LinkMap *next, *prev;
};
struct RDebug {
  int version;
  LinkMap* map;
};

// One object's dynamic section, with its addresses made run-time ones.
struct DynamicInfo {
  u64 bias = 0;
  const u8* symtab = nullptr;
  const char* strtab = nullptr;
  const u32* gnu_hash = nullptr;
  const u16* versym = nullptr;
  const u8* rela = nullptr;  // DT_RELA, DT_RELASZ (ARM32: DT_REL, DT_RELSZ)
  u64 rela_size = 0;
  u64 relative = 0;  // DT_RELACOUNT (ARM32: DT_RELCOUNT): how many of them, first, are *_RELATIVE
  const u8* jmprel = nullptr;  // DT_JMPREL, DT_PLTRELSZ (when DT_PLTREL is DT_RELA, or DT_REL on ARM32)
  u64 jmprel_size = 0;
  u64 debug = 0;  // DT_DEBUG's value: the r_debug the dynamic linker fills in (executables)
};

// Reads a dynamic section. An address may be a link-time one or one the dynamic linker already
// relocated in place (glibc does for writable dynamic sections): one below the bias is link-time.
inline DynamicInfo read_dynamic(u64 bias, const u8* dyn) {
  DynamicInfo d;
  d.bias = bias;
  const auto addr = [&](u64 v) { return v < bias ? v + bias : v; };
  bool pltrel_rela = true;
  for (const u8* e = dyn; load_le(e, elfc::word) != 0 /* DT_NULL */; e += 2 * elfc::word) {
    const u64 tag = load_le(e, elfc::word), v = load_le(e + elfc::word, elfc::word);
    if (tag == elfc::dt_rel) d.rela = reinterpret_cast<const u8*>(addr(v));  // DT_RELA (ARM32: DT_REL)
    if (tag == elfc::dt_relsz) d.rela_size = v;                              // DT_RELASZ (ARM32: DT_RELSZ)
    if (tag == elfc::dt_relcount) d.relative = v;                            // DT_RELACOUNT (ARM32: DT_RELCOUNT)
    switch (tag) {
      case 2: d.jmprel_size = v; break;                                         // DT_PLTRELSZ
      case 5: d.strtab = reinterpret_cast<const char*>(addr(v)); break;         // DT_STRTAB
      case 6: d.symtab = reinterpret_cast<const u8*>(addr(v)); break;           // DT_SYMTAB
      case 20: pltrel_rela = v == elfc::dt_rel; break;                          // DT_PLTREL
      case 21: d.debug = v; break;                                              // DT_DEBUG
      case 23: d.jmprel = reinterpret_cast<const u8*>(addr(v)); break;          // DT_JMPREL
      case 0x6ffffef5: d.gnu_hash = reinterpret_cast<const u32*>(addr(v)); break;  // DT_GNU_HASH
      case 0x6ffffff0: d.versym = reinterpret_cast<const u16*>(addr(v)); break;    // DT_VERSYM
      default: break;
    }
  }
  if (!pltrel_rela) d.jmprel = nullptr, d.jmprel_size = 0;
  if (!d.symtab || !d.strtab) d.gnu_hash = nullptr, d.rela = d.jmprel = nullptr;
  return d;
}

// The run-time address of the function `name` defines, found through its GNU hash table; 0 when it
// defines none (or only a hidden version, or an indirect function, whose address needs its resolver).
inline u64 find_definition(const DynamicInfo& d, const char* name) {
  if (!d.gnu_hash) return 0;
  const u32 buckets = d.gnu_hash[0], first = d.gnu_hash[1], bloom_words = d.gnu_hash[2];
  if (buckets == 0) return 0;
  const u32* bucket = d.gnu_hash + 4 + elfc::word / 4 * bloom_words;  // after the header and the address-wide bloom words
  const u32* chain = bucket + buckets;
  u32 h = 5381;
  for (const char* c = name; *c; c++) h = h * 33 + static_cast<u8>(*c);
  const size_t len = str_len(name);
  for (u32 i = bucket[h % buckets]; i >= first && i != 0; i++) {
    const u32 ch = chain[i - first];
    if ((ch | 1) == (h | 1)) {
      const u8* s = d.symtab + elfc::sym_size * u64{i};
      const bool defined = load_le(s + elfc::st_shndx, 2) != 0 && load_le(s + elfc::st_value, elfc::word) != 0;
      const bool function = (s[elfc::st_info] & 0xf) == 2;  // STT_FUNC
      if (defined && function && !(d.versym && (d.versym[i] & 0x8000)) && str_eq(name, len, d.strtab + load_le(s, 4)))
        return d.bias + load_le(s + elfc::st_value, elfc::word);
    }
    if (ch & 1) break;
  }
  return 0;
}

// The relocation types of a GOT slot holding a function's address: *_GLOB_DAT (-fno-plt, function
// pointers) and *_JUMP_SLOT (PLT), on the ISA this is compiled for.
#if defined(__aarch64__)
inline constexpr u64 glob_dat = 1025, jump_slot = 1026;  // R_AARCH64_GLOB_DAT, R_AARCH64_JUMP_SLOT
#elif defined(__powerpc64__)
inline constexpr u64 glob_dat = 20, jump_slot = 21;  // R_PPC64_GLOB_DAT, R_PPC64_JMP_SLOT
#elif defined(__arm__)
inline constexpr u64 glob_dat = 21, jump_slot = 22;  // R_ARM_GLOB_DAT, R_ARM_JUMP_SLOT
#elif defined(__riscv)
inline constexpr u64 glob_dat = 2, jump_slot = 5;  // R_RISCV_64 (RISC-V has no GLOB_DAT), R_RISCV_JUMP_SLOT
#else
inline constexpr u64 glob_dat = 6, jump_slot = 7;  // R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT
#endif

// Calls f(slot, k) for every GOT slot through which the object calls names[k] (k < n; a name is a
// C string): its JUMP_SLOT and GLOB_DAT relocations of that symbol. The *_RELATIVE relocations that
// DT_RELACOUNT says come first are skipped unread, as the dynamic linker applies them: a position-
// independent executable has one per pointer in its data (200,000 in bench/gen_many.py's program,
// 4.8 MB that every start read for nothing).
template <class Names, class F>
void for_each_import(const DynamicInfo& d, const Names& names, unsigned n, F f) {
  const auto scan = [&](const u8* rel, u64 size, u64 skip) {
    if (!rel) return;
    for (u64 at = skip < size / elfc::rel_size ? skip * elfc::rel_size : size; at + elfc::rel_size <= size; at += elfc::rel_size) {
      const u64 info = load_le(rel + at + elfc::word, elfc::word), type = elfc::rel_type(info), sym = elfc::rel_sym(info);
      if ((type != glob_dat && type != jump_slot) || sym == 0) continue;
      const char* s = d.strtab + load_le(d.symtab + elfc::sym_size * sym, 4);
      for (unsigned k = 0; k < n; k++)
        if (str_eq(names[k], str_len(names[k]), s)) f(reinterpret_cast<uptr*>(d.bias + load_le(rel + at, elfc::word)), k);
    }
  };
  scan(d.rela, d.rela_size, d.relative);
  scan(d.jmprel, d.jmprel_size, 0);
}

}  // namespace prepatch::shim
