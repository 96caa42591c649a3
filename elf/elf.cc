#include "elf/elf.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "elf/layout.h"

namespace prepatch::elf {

u64 Codec::get_slow(std::span<const u8> b, u64 off, unsigned width) const {
  u64 v = 0;
  for (unsigned i = 0; i < width; i++) {
    u64 byte = b[off + (little ? i : width - 1 - i)];
    v |= byte << (8 * i);
  }
  return v;
}

void Codec::put_slow(std::span<u8> b, u64 off, unsigned width, u64 v) const {
  for (unsigned i = 0; i < width; i++) b[off + (little ? i : width - 1 - i)] = static_cast<u8>(v >> (8 * i));
}

u32 relative_reloc(u16 machine) {
  switch (machine) {
    case EM_AARCH64: return R_AARCH64_RELATIVE;
    case EM_PPC64: return R_PPC64_RELATIVE;
    case EM_RISCV: return R_RISCV_RELATIVE;
    case EM_ARM: return R_ARM_RELATIVE;
    default: return R_X86_64_RELATIVE;
  }
}

std::string_view machine_name(u16 machine) {
  switch (machine) {
    case EM_X86_64: return "EM_X86_64";
    case EM_386: return "EM_386";
    case EM_AARCH64: return "EM_AARCH64";
    case EM_ARM: return "EM_ARM";
    case EM_RISCV: return "EM_RISCV";
    case EM_PPC64: return "EM_PPC64";
    case EM_PPC: return "EM_PPC";
    case EM_S390: return "EM_S390";
    case EM_MIPS: return "EM_MIPS";
    default: return "an unknown machine";
  }
}

void Elf::fail(u64 offset, const std::string& what) const { throw InputError(name_, offset, what); }

void Elf::check_range(u64 off, u64 size, u64 field_offset, const std::string& what) const {
  if (off > data_.size() || size > data_.size() - off)
    fail(field_offset, what + " [" + hex(off) + ", +" + hex(size) + ") lies outside the file (size " +
                           hex(data_.size()) + ")");
}

Elf::Elf(std::span<const u8> data, std::string name, bool sections_only) : data_(data), name_(std::move(name)) {
  parse_header();
  if (!sections_only) parse_segments();
  parse_sections();
}

void Elf::parse_header() {
  if (data_.size() < 4 || std::memcmp(data_.data(), ELFMAG, SELFMAG) != 0) {
    const bool cut = !data_.empty() && data_.size() < 4 && std::memcmp(data_.data(), ELFMAG, data_.size()) == 0;
    fail(cut ? data_.size() : 0, "expected the ELF magic 7f 45 4c 46, found " +
                                     (data_.empty() ? std::string("an empty file")
                                      : cut         ? "its first " + std::to_string(data_.size()) + " bytes, then the file's end (truncated?)"
                                                    : "something else: not an ELF file"));
  }
  if (data_.size() < EI_NIDENT) fail(data_.size(), "file ends inside the ELF identification (16 bytes)");
  u8 cls = data_[EI_CLASS], enc = data_[EI_DATA];
  if (cls != ELFCLASS32 && cls != ELFCLASS64) fail(EI_CLASS, "expected ELFCLASS32 or ELFCLASS64, found " + hex(cls));
  if (enc != ELFDATA2LSB && enc != ELFDATA2MSB) fail(EI_DATA, "expected ELFDATA2LSB or ELFDATA2MSB, found " + hex(enc));
  if (data_[EI_VERSION] != EV_CURRENT) fail(EI_VERSION, "expected EV_CURRENT, found " + hex(data_[EI_VERSION]));
  codec_ = {cls == ELFCLASS64, enc == ELFDATA2LSB};
  const EhdrLayout& e = layout_for(codec_.is64).ehdr;
  if (data_.size() < e.size) fail(data_.size(), "file ends inside the ELF header (" + std::to_string(e.size) + " bytes)");
  auto f = [&](Field fl) { return get(fl.off, fl.width); };
  hdr_.type = f(e.type);
  hdr_.machine = f(e.machine);
  hdr_.entry = f(e.entry);
  hdr_.phoff = f(e.phoff);
  hdr_.shoff = f(e.shoff);
  hdr_.flags = f(e.flags);
  hdr_.ehsize = f(e.ehsize);
  hdr_.phentsize = f(e.phentsize);
  hdr_.phnum = f(e.phnum);
  hdr_.shentsize = f(e.shentsize);
  hdr_.shnum = f(e.shnum);
  hdr_.shstrndx = f(e.shstrndx);
  const Layout& l = layout_for(codec_.is64);
  if (hdr_.phnum && hdr_.phentsize != l.phdr.size)
    fail(e.phentsize.off, "expected e_phentsize " + std::to_string(l.phdr.size) + ", found " + std::to_string(hdr_.phentsize));
  if (hdr_.shoff && hdr_.shentsize != l.shdr.size)
    fail(e.shentsize.off, "expected e_shentsize " + std::to_string(l.shdr.size) + ", found " + std::to_string(hdr_.shentsize));
}

void Elf::parse_segments() {
  const PhdrLayout& p = layout_for(codec_.is64).phdr;
  const u64 phoff_field = layout_for(codec_.is64).ehdr.phoff.off;
  if (hdr_.phnum == PN_XNUM) fail(layout_for(codec_.is64).ehdr.phnum.off, "extended program header numbering (PN_XNUM) is not supported");
  check_range(hdr_.phoff, hdr_.phnum * p.size, phoff_field, "program header table");
  segments_.reserve(hdr_.phnum);
  for (u64 i = 0; i < hdr_.phnum; i++) {
    u64 base = hdr_.phoff + i * p.size;
    auto f = [&](Field fl) { return get(base + fl.off, fl.width); };
    Segment s;
    s.index = static_cast<u32>(i);
    s.type = f(p.type);
    s.flags = f(p.flags);
    s.offset = f(p.offset);
    s.vaddr = f(p.vaddr);
    s.paddr = f(p.paddr);
    s.filesz = f(p.filesz);
    s.memsz = f(p.memsz);
    s.align = f(p.align);
    if (s.type == PT_LOAD || s.type == PT_DYNAMIC || s.type == PT_NOTE || s.type == PT_INTERP)
      check_range(s.offset, s.filesz, base + p.offset.off, "segment " + std::to_string(i) + " contents");
    if (s.type == PT_LOAD) {
      const std::string seg = "segment " + std::to_string(i) + ": ";
      if (s.filesz > s.memsz) fail(base + p.filesz.off, seg + "expected p_filesz <= p_memsz");
      if (s.vaddr + s.memsz < s.vaddr || s.vaddr + s.memsz > (codec_.is64 ? ~u64{0} >> 1 : u64{0xffffffff}))
        fail(base + p.memsz.off, seg + "p_vaddr + p_memsz lies outside the address space");
      if (s.align & (s.align - 1)) fail(base + p.align.off, seg + "expected p_align to be a power of two, found " + hex(s.align));
      if (s.align > 1 && s.offset % s.align != s.vaddr % s.align)
        fail(base + p.offset.off, seg + "expected p_offset and p_vaddr congruent modulo p_align");
    }
    segments_.push_back(s);
  }
}

void Elf::parse_sections() {
  const Layout& l = layout_for(codec_.is64);
  const ShdrLayout& sh = l.shdr;
  const u64 shoff_field = l.ehdr.shoff.off;
  if (hdr_.shoff == 0) {
    hdr_.shnum = 0;
    return;
  }
  check_range(hdr_.shoff, sh.size, shoff_field, "section header 0");
  // Extended numbering: the real counts live in section header 0.
  if (hdr_.shnum == 0) hdr_.shnum = get(hdr_.shoff + sh.size_.off, sh.size_.width);
  if (hdr_.shstrndx == SHN_XINDEX) hdr_.shstrndx = get(hdr_.shoff + sh.link.off, sh.link.width);
  if (hdr_.shnum > data_.size() / sh.size) fail(l.ehdr.shnum.off, "section count " + std::to_string(hdr_.shnum) + " cannot fit in the file");
  check_range(hdr_.shoff, hdr_.shnum * sh.size, shoff_field, "section header table");
  if (hdr_.shnum && hdr_.shstrndx >= hdr_.shnum)
    fail(l.ehdr.shstrndx.off, "expected e_shstrndx below the section count " + std::to_string(hdr_.shnum) + ", found " + std::to_string(hdr_.shstrndx));
  sections_.reserve(hdr_.shnum);
  for (u64 i = 0; i < hdr_.shnum; i++) {
    u64 base = hdr_.shoff + i * sh.size;
    auto f = [&](Field fl) { return get(base + fl.off, fl.width); };
    Section s;
    s.index = static_cast<u32>(i);
    s.name_offset = f(sh.name);
    s.type = f(sh.type);
    s.flags = f(sh.flags);
    s.addr = f(sh.addr);
    s.offset = f(sh.offset);
    s.size = f(sh.size_);
    s.link = f(sh.link);
    s.info = f(sh.info);
    s.addralign = f(sh.addralign);
    s.entsize = f(sh.entsize);
    if (i > 0 && s.has_file_data())
      check_range(s.offset, s.size, base + sh.offset.off, "section " + std::to_string(i) + " contents");
    if (s.link >= hdr_.shnum && (s.type == SHT_SYMTAB || s.type == SHT_DYNSYM || s.type == SHT_REL || s.type == SHT_RELA))
      fail(base + sh.link.off, "section " + std::to_string(i) + ": sh_link " + std::to_string(s.link) + " is not a section");
    sections_.push_back(s);
  }
  if (!sections_.empty()) {
    const Section& strtab = sections_[hdr_.shstrndx];
    u64 str_field = hdr_.shoff + hdr_.shstrndx * sh.size + sh.type.off;
    if (strtab.type != SHT_STRTAB) fail(str_field, "expected the section name table (e_shstrndx) to be SHT_STRTAB");
    for (Section& s : sections_)
      s.name = string_at(strtab, s.name_offset, hdr_.shoff + s.index * sh.size + sh.name.off);
  }
}

std::string_view Elf::string_at(const Section& strtab, u64 off, u64 field_offset) const {
  if (off >= strtab.size) fail(field_offset, "name offset " + hex(off) + " lies outside its string table (size " + hex(strtab.size) + ")");
  const char* begin = reinterpret_cast<const char*>(data_.data() + strtab.offset + off);
  const void* nul = std::memchr(begin, 0, strtab.size - off);
  if (!nul) fail(strtab.offset + off, "string is not NUL-terminated inside its string table");
  return {begin, static_cast<size_t>(static_cast<const char*>(nul) - begin)};
}

const Section* Elf::section(std::string_view name) const {
  for (const Section& s : sections_)
    if (s.name == name) return &s;
  return nullptr;
}

const Section* Elf::find_type(u32 type) const {
  for (const Section& s : sections_)
    if (s.type == type) return &s;
  return nullptr;
}

std::span<const u8> Elf::section_data(const Section& s) const {
  if (!s.has_file_data()) return {};
  return data_.subspan(s.offset, s.size);  // range checked at parse
}

u64 Elf::symbol_count(const Section& symtab) const {
  const SymLayout& y = layout_for(codec_.is64).sym;
  if (symtab.entsize != y.size)
    fail(hdr_.shoff + symtab.index * hdr_.shentsize, "section " + std::string(symtab.name) + ": expected sh_entsize " + std::to_string(y.size));
  return symtab.size / y.size;
}

const Section& Elf::symbol_strings(const Section& symtab) const {
  const Section& strtab = sections_[symtab.link];
  if (strtab.type != SHT_STRTAB) fail(hdr_.shoff + symtab.index * hdr_.shentsize, "section " + std::string(symtab.name) + ": sh_link is not a string table");
  return strtab;
}

Symbol Elf::symbol(const Section& symtab, u64 i) const {
  const SymLayout& y = layout_for(codec_.is64).sym;
  Symbol s = symbol_fields(symtab, i);
  s.name = string_at(symbol_strings(symtab), s.name_offset, symtab.offset + i * y.size + y.name.off);
  return s;
}

std::vector<Symbol> Elf::symbols(const Section& symtab) const {
  std::vector<Symbol> out;
  u64 n = symbol_count(symtab);
  out.reserve(n);
  for (u64 i = 0; i < n; i++) out.push_back(symbol(symtab, i));
  return out;
}

u64 Elf::reloc_count(const Section& rel) const {
  const Layout& l = layout_for(codec_.is64);
  u64 want = rel.type == SHT_RELA ? l.rela_size : l.rel_size;
  if (rel.entsize != want)
    fail(hdr_.shoff + rel.index * hdr_.shentsize, "section " + std::string(rel.name) + ": expected sh_entsize " + std::to_string(want));
  return rel.size / want;
}

std::vector<Reloc> Elf::relocations(const Section& rel) const {
  std::vector<Reloc> out;
  u64 n = reloc_count(rel);
  out.reserve(n);
  for (u64 i = 0; i < n; i++) out.push_back(reloc(rel, i));
  return out;
}

std::vector<Dyn> Elf::dynamic() const {
  std::vector<Dyn> out;
  const Layout& l = layout_for(codec_.is64);
  for (const Segment& s : segments_) {
    if (s.type != PT_DYNAMIC) continue;
    unsigned w = codec_.word();
    for (u64 off = 0; off + l.dyn_size <= s.filesz; off += l.dyn_size) {
      Dyn d;
      d.offset = s.offset + off;
      u64 tag = get(s.offset + off, w);
      d.tag = codec_.is64 ? static_cast<i64>(tag) : static_cast<i64>(static_cast<std::int32_t>(tag));
      d.val = get(s.offset + off + w, w);
      out.push_back(d);
      if (d.tag == DT_NULL) break;
    }
  }
  return out;
}

std::span<const u8> Elf::build_id() const {
  // Notes: namesz, descsz, type (4 bytes each), the name and the descriptor, each padded to `align`.
  auto find = [&](u64 off, u64 size, u64 align) -> std::span<const u8> {
    if (off > data_.size() || size > data_.size() - off) return {};
    const u64 a = align == 8 ? 8 : 4;
    for (u64 at = 0; at + 12 <= size;) {
      const u64 namesz = get(off + at, 4), descsz = get(off + at + 4, 4), type = get(off + at + 8, 4);
      const u64 name_at = at + 12, desc_at = name_at + (namesz + a - 1) / a * a;
      if (desc_at > size || descsz > size - desc_at) return {};
      if (type == NT_GNU_BUILD_ID && namesz == 4 && std::memcmp(data_.data() + off + name_at, "GNU", 4) == 0)
        return data_.subspan(off + desc_at, descsz);
      at = desc_at + (descsz + a - 1) / a * a;
    }
    return {};
  };
  for (const Section& s : sections_)
    if (s.type == SHT_NOTE && s.has_file_data())
      if (auto id = find(s.offset, s.size, s.addralign); !id.empty()) return id;
  for (const Segment& s : segments_)
    if (s.type == PT_NOTE)
      if (auto id = find(s.offset, s.filesz, s.align); !id.empty()) return id;
  return {};
}

const Segment* Elf::load_segment_for(u64 vaddr, u64 len) const {
  for (const Segment& s : segments_) {
    if (s.type != PT_LOAD || vaddr < s.vaddr) continue;
    u64 rel = vaddr - s.vaddr;
    if (rel <= s.filesz && len <= s.filesz - rel) return &s;
  }
  return nullptr;
}

std::optional<u64> Elf::vaddr_to_offset(u64 vaddr, u64 len) const {
  const Segment* s = load_segment_for(vaddr, len);
  if (!s) return std::nullopt;
  return s->offset + (vaddr - s->vaddr);
}

std::span<const u8> Elf::bytes_at(u64 vaddr, u64 len) const {
  auto off = vaddr_to_offset(vaddr, len);
  if (!off) return {};
  return data_.subspan(*off, len);
}

}  // namespace prepatch::elf
