#include "rewriter/table.h"

#include <cstring>

namespace prepatch {

std::string_view Table::name(const TableEntry& e) const {
  if (e.name >= strings.size()) return {};
  return {strings.data() + e.name};
}

TableBuilder::TableBuilder(const elf::Codec& c, u16 machine, u32 flags, u64 count, u64 strings_size, u64 spare)
    : c_(c), count_(count), str_size_(strings_size) {
  if (strings_size == 0 || strings_size > UINT32_MAX) throw std::logic_error("TableBuilder: the string table must hold 1 byte to 4 GiB");
  const u64 str_off = table_header_size + count * table_entry_size;
  b_.reserve(str_off + spare);
  b_.resize(str_off);  // Bytes: not zeroed; the entries are written by add(), the header here
  std::memset(b_.data(), 0, table_header_size);
  std::memcpy(b_.data(), table_magic, 8);
  c_.put(b_, 8, 2, table_version);
  c_.put(b_, 10, 2, machine);
  c_.put(b_, 12, 2, table_header_size);
  c_.put(b_, 14, 2, table_entry_size);
  c_.put(b_, 16, 4, count);
  c_.put(b_, 20, 4, flags);
  c_.put(b_, 24, 4, str_off);
  c_.put(b_, 28, 4, strings_size);
}

Bytes TableBuilder::finish() {
  if (added_ != count_) throw std::logic_error("TableBuilder: fewer entries than announced");
  return std::move(b_);
}

std::vector<u8> encode_table(const Table& t, const elf::Codec& c) {
  if (t.strings.empty() || t.strings.front() != 0 || t.strings.back() != 0)
    throw std::logic_error("encode_table: the string table must start and end with a NUL");
  TableBuilder b(c, t.machine, t.flags, t.entries.size(), t.strings.size(), t.strings.size());
  for (const TableEntry& e : t.entries) b.add(e);
  Bytes head = b.finish();
  std::vector<u8> out(head.begin(), head.end());
  out.insert(out.end(), t.strings.begin(), t.strings.end());
  return out;
}

Table decode_table(std::span<const u8> b, const elf::Codec& c, const std::string& file, u64 base) {
  auto fail = [&](u64 off, const std::string& what) -> void { throw InputError(file, base + off, "__patch_sites: " + what); };
  if (b.size() < table_header_size) fail(b.size(), "table ends inside its 64-byte header");
  if (std::memcmp(b.data(), table_magic, 8) != 0) fail(0, "expected the magic \"PREPATCH\"");
  if (c.get(b, 8, 2) != table_version) fail(8, "expected version " + std::to_string(table_version) + ", found " + std::to_string(c.get(b, 8, 2)));
  if (c.get(b, 12, 2) != table_header_size) fail(12, "expected header size 64");
  if (c.get(b, 14, 2) != table_entry_size) fail(14, "expected entry size 16");
  Table t;
  t.machine = c.get(b, 10, 2);
  t.flags = c.get(b, 20, 4);
  u64 count = c.get(b, 16, 4), str_off = c.get(b, 24, 4), str_size = c.get(b, 28, 4);
  if (count > (b.size() - table_header_size) / table_entry_size) fail(16, "entry count " + std::to_string(count) + " runs past the end of the table");
  if (str_off < table_header_size + count * table_entry_size || str_off > b.size() || str_size > b.size() - str_off)
    fail(24, "string table [" + hex(str_off) + ", +" + hex(str_size) + ") overlaps the entries or runs past the end");
  if (str_size == 0 || b[str_off + str_size - 1] != 0) fail(str_off, "expected a NUL-terminated string table");
  t.strings.assign(b.begin() + str_off, b.begin() + str_off + str_size);
  t.entries.reserve(count);
  for (u64 i = 0; i < count; i++) {
    u64 at = table_header_size + i * table_entry_size;
    TableEntry e;
    e.addr = c.get(b, at, 8);
    e.name = c.get(b, at + 8, 4);
    u8 kind = b[at + 12];
    if (kind < 1 || kind > 3) fail(at + 12, "expected a site kind 1..3, found " + std::to_string(kind));
    e.kind = static_cast<SiteKind>(kind);
    e.length = b[at + 13];
    e.call_form = static_cast<arch::CallForm>(b[at + 14]);
    e.flags = b[at + 15];
    if (e.length == 0 || e.length > arch::X86_64::max_insn) fail(at + 13, "expected a site length 1..15");
    if (e.name >= str_size) fail(at + 8, "name offset outside the string table");
    if (!t.entries.empty() && e.addr < t.entries.back().addr + t.entries.back().length)
      fail(at, "entries must be sorted by address and must not overlap");
    t.entries.push_back(e);
  }
  return t;
}

std::optional<TablePlace> table_place(const elf::Elf& elf) {
  if (const elf::Section* s = elf.section(table_section)) return TablePlace{elf.section_data(*s), s->addr, s->offset};
  for (const elf::Segment& s : elf.segments()) {
    if (s.type != PT_LOAD || s.filesz < 8) continue;
    auto b = elf.bytes().subspan(s.offset, s.filesz);
    if (std::memcmp(b.data(), table_magic, 8) == 0) return TablePlace{b, s.vaddr, s.offset};
  }
  return std::nullopt;
}

std::optional<FoundTable> find_table(const elf::Elf& elf) {
  const auto p = table_place(elf);
  if (!p) return std::nullopt;
  return FoundTable{decode_table(p->bytes, elf.codec(), elf.name(), p->offset), p->vaddr, p->offset, p->bytes.size()};
}

}  // namespace prepatch
