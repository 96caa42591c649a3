// A zero-copy, bounds-checked ELF reader over a read-only byte span.
//
// ELF32 and ELF64, little and big endian. Headers are decoded into small native structs on parse
// (sections and segments are few); section contents, symbols and relocations stay in the mapping and
// are decoded on access, so a binary with 100k symbols costs no per-symbol allocation unless the caller
// asks for a vector. Every offset, size and count taken from the file is checked against the file size
// before use; a violation throws InputError naming the file offset of the field that was wrong.
#pragma once
#include <elf.h>

#include <bit>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "elf/layout.h"
#include "elf/types.h"

namespace prepatch::elf {

// Reads and writes fields in the file's byte order and class.
struct Codec {
  bool is64 = true;
  bool little = true;

  u64 get(std::span<const u8> b, u64 off, unsigned width) const {
    if (little && std::endian::native == std::endian::little) {  // the common case, inline, without a byte loop
      switch (width) {
        case 1: return b[off];
        case 2: { u16 v; std::memcpy(&v, &b[off], 2); return v; }
        case 4: { u32 v; std::memcpy(&v, &b[off], 4); return v; }
        case 8: { u64 v; std::memcpy(&v, &b[off], 8); return v; }
      }
    }
    return get_slow(b, off, width);
  }
  u64 get_slow(std::span<const u8> b, u64 off, unsigned width) const;
  void put(std::span<u8> b, u64 off, unsigned width, u64 v) const {
    if (little && std::endian::native == std::endian::little && (width == 2 || width == 4 || width == 8)) {
      std::memcpy(&b[off], &v, width);  // little-endian host: the low `width` bytes, in order
      return;
    }
    put_slow(b, off, width, v);
  }
  void put_slow(std::span<u8> b, u64 off, unsigned width, u64 v) const;
  unsigned word() const { return is64 ? 8 : 4; }
};

struct Header {
  u16 type = 0, machine = 0;
  u64 entry = 0, phoff = 0, shoff = 0;
  u32 flags = 0;
  u16 ehsize = 0, phentsize = 0, shentsize = 0;
  u64 phnum = 0, shnum = 0, shstrndx = 0;  // extended numbering already resolved
};

struct Section {
  u32 index = 0;
  std::string_view name;
  u32 name_offset = 0;
  u32 type = 0;
  u64 flags = 0, addr = 0, offset = 0, size = 0;
  u32 link = 0, info = 0;
  u64 addralign = 0, entsize = 0;
  bool has_file_data() const { return type != SHT_NOBITS && type != SHT_NULL; }
};

struct Segment {
  u32 index = 0;
  u32 type = 0, flags = 0;
  u64 offset = 0, vaddr = 0, paddr = 0, filesz = 0, memsz = 0, align = 0;
};

struct Symbol {
  std::string_view name;  // empty from Elf::symbol_fields
  u32 name_offset = 0;    // st_name
  u64 value = 0, size = 0;
  u8 type = 0, bind = 0, other = 0;
  u16 shndx = 0;
};

struct Reloc {
  u64 offset = 0;
  u32 type = 0;
  u32 sym = 0;
  i64 addend = 0;
};

struct Dyn {
  i64 tag = 0;
  u64 val = 0;
  u64 offset = 0;  // the entry's file offset
};

std::string_view machine_name(u16 machine);  // "EM_X86_64", "EM_AARCH64", ...
// R_*_RELATIVE of `machine`: a word the loader sets to the load bias plus the addend.
u32 relative_reloc(u16 machine);

class Elf {
 public:
  // Throws InputError when `data` is not a well-formed ELF file. `sections_only`: its program headers
  // are not read (segments() is empty), as a separate debug file's describe its binary's contents,
  // which it does not hold.
  Elf(std::span<const u8> data, std::string name, bool sections_only = false);

  const std::string& name() const { return name_; }
  std::span<const u8> bytes() const { return data_; }
  const Codec& codec() const { return codec_; }
  const Header& header() const { return hdr_; }
  const std::vector<Section>& sections() const { return sections_; }
  const std::vector<Segment>& segments() const { return segments_; }

  const Section* section(std::string_view name) const;
  std::span<const u8> section_data(const Section& s) const;

  // Symbols of a SHT_SYMTAB/SHT_DYNSYM section, decoded one at a time.
  u64 symbol_count(const Section& symtab) const;
  Symbol symbol(const Section& symtab, u64 i) const;
  // Every field but `name` (name_offset is set, unchecked): for scans of many symbols that look at few
  // names. Call symbol_strings() once to check the table's link first.
  Symbol symbol_fields(const Section& symtab, u64 i) const;
  // The string table a symbol table links to, checked to be one.
  const Section& symbol_strings(const Section& symtab) const;
  std::vector<Symbol> symbols(const Section& symtab) const;
  const Section* symtab() const { return find_type(SHT_SYMTAB); }
  const Section* dynsym() const { return find_type(SHT_DYNSYM); }

  // Entries of a SHT_REL/SHT_RELA section.
  u64 reloc_count(const Section& rel) const;
  Reloc reloc(const Section& rel, u64 i) const;
  // The file offset of entry `i` (its r_offset; a RELA entry's addend is two words further).
  u64 reloc_entry_offset(const Section& rel, u64 i) const {
    const Layout& l = layout_for(codec_.is64);
    return rel.offset + i * (rel.type == SHT_RELA ? l.rela_size : l.rel_size);
  }
  std::vector<Reloc> relocations(const Section& rel) const;
  // Calls f(address, entry's file offset) for each address a SHT_RELR section (packed relative
  // relocations) relocates: an even entry is an address (the next one a word past it), an odd one a
  // bitmap of the 8w - 1 words from there on (bit 1 the first), after which the next address is that
  // many words further (w the word's bytes). sh_entsize must be the word.
  template <class F>
  void for_each_relr(const Section& relr, F f) const;

  std::vector<Dyn> dynamic() const;
  // The GNU build ID (NT_GNU_BUILD_ID) from the SHT_NOTE sections, else the PT_NOTE segments; empty when
  // there is none or the notes are malformed (it names the file; nothing depends on it).
  std::span<const u8> build_id() const;

  // The file range that holds `len` bytes at virtual address `vaddr`, when one PT_LOAD covers all of them
  // with file-backed bytes.
  std::optional<u64> vaddr_to_offset(u64 vaddr, u64 len) const;
  // The PT_LOAD that covers [vaddr, vaddr+len) with file bytes, if any.
  const Segment* load_segment_for(u64 vaddr, u64 len) const;
  std::span<const u8> bytes_at(u64 vaddr, u64 len) const;  // empty when not file-backed

  [[noreturn]] void fail(u64 offset, const std::string& what) const;

 private:
  void parse_header();
  void parse_segments();
  void parse_sections();
  void check_range(u64 off, u64 size, u64 field_offset, const std::string& what) const;
  std::string_view string_at(const Section& strtab, u64 off, u64 field_offset) const;
  const Section* find_type(u32 type) const;
  u64 get(u64 off, unsigned width) const { return codec_.get(data_, off, width); }

  std::span<const u8> data_;
  std::string name_;
  Codec codec_;
  Header hdr_;
  std::vector<Segment> segments_;
  std::vector<Section> sections_;
};

// Inline: discovery decodes every symbol and dynamic relocation of a binary, 100k and more.
inline Symbol Elf::symbol_fields(const Section& symtab, u64 i) const {
  const SymLayout& y = layout_for(codec_.is64).sym;
  u64 base = symtab.offset + i * y.size;
  auto f = [&](Field fl) { return get(base + fl.off, fl.width); };
  Symbol s;
  u8 info = f(y.info);
  s.type = info & 0xf;
  s.bind = info >> 4;
  s.other = f(y.other);
  s.shndx = f(y.shndx);
  s.value = f(y.value);
  s.size = f(y.size_);
  s.name_offset = f(y.name);
  return s;
}

template <class F>
void Elf::for_each_relr(const Section& relr, F f) const {
  const unsigned w = codec_.word();
  if (relr.entsize != w) fail(hdr_.shoff + relr.index * hdr_.shentsize, "section " + std::string(relr.name) + ": expected sh_entsize " + std::to_string(w));
  const auto b = section_data(relr);
  u64 next = 0;
  for (u64 at = 0; at + w <= b.size(); at += w) {
    const u64 e = codec_.get(b, at, w);
    if (!(e & 1)) {
      f(e, relr.offset + at);
      next = e + w;
      continue;
    }
    for (unsigned bit = 1; bit < 8 * w; bit++)
      if (e >> bit & 1) f(next + (bit - 1) * w, relr.offset + at);
    next += (8 * w - 1) * w;
  }
}

inline Reloc Elf::reloc(const Section& rel, u64 i) const {
  bool rela = rel.type == SHT_RELA;
  unsigned w = codec_.word();
  u64 base = reloc_entry_offset(rel, i);
  Reloc r;
  r.offset = get(base, w);
  u64 info = get(base + w, w);
  if (codec_.is64) {
    r.sym = static_cast<u32>(info >> 32);
    r.type = static_cast<u32>(info);
  } else {
    r.sym = static_cast<u32>(info >> 8);
    r.type = static_cast<u32>(info & 0xff);
  }
  if (rela) {
    u64 a = get(base + 2 * w, w);
    r.addend = codec_.is64 ? static_cast<i64>(a) : static_cast<i64>(static_cast<std::int32_t>(a));
  }
  return r;
}

// vaddr -> file lookups for many addresses that cluster in one segment (sites in the text): remembers
// the segment of the last hit and tries it first.
class SegmentCursor {
 public:
  explicit SegmentCursor(const Elf& elf) : elf_(elf) {}
  // The PT_LOAD holding [vaddr, vaddr+len) with file bytes, as Elf::load_segment_for.
  const Segment* find(u64 vaddr, u64 len) {
    if (last_ && vaddr >= last_->vaddr && vaddr - last_->vaddr <= last_->filesz && len <= last_->filesz - (vaddr - last_->vaddr)) return last_;
    const Segment* s = elf_.load_segment_for(vaddr, len);
    if (s) last_ = s;
    return s;
  }
  std::optional<u64> offset(u64 vaddr, u64 len) {
    const Segment* s = find(vaddr, len);
    if (!s) return std::nullopt;
    return s->offset + (vaddr - s->vaddr);
  }
  std::span<const u8> bytes(u64 vaddr, u64 len) {
    auto off = offset(vaddr, len);
    return off ? elf_.bytes().subspan(*off, len) : std::span<const u8>{};
  }

 private:
  const Elf& elf_;
  const Segment* last_ = nullptr;
};

}  // namespace prepatch::elf
