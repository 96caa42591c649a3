// The __patch_sites table: what prepatch leaves in a prepared binary for the shim and for `prepatch
// sites`. Its byte layout is documented in docs/FORMAT.md; its constants are in shim/abi.h.
// Multi-byte fields are in the ELF file's byte order.
#pragma once
#include <optional>
#include <stdexcept>
#include <span>
#include <string_view>
#include <vector>

#include "arch/isa.h"
#include "arch/x86_64.h"
#include "elf/bulk.h"
#include "elf/elf.h"
#include "shim/abi.h"

namespace prepatch {

// The layout's constants live in shim/abi.h, which the freestanding shim reads too.
using shim::table_entry_size;
using shim::table_header_size;
using shim::table_magic;
using shim::table_version;
inline constexpr std::string_view table_section = "__patch_sites";
inline constexpr std::string_view shim_section = "__prepatch_shim";  // the shim, after the table, same segment

using arch::SiteKind;  // fentry = 1, mcount = 2, patchable = 3: the table stores these values
using arch::kind_name;

// Per-site flags (TableEntry::flags).
inline constexpr u8 site_crosses_word = 1;   // the site's bytes span two aligned 8-byte words
inline constexpr u8 site_crosses_line = 2;   // ... two aligned 64-byte cache lines
inline constexpr u8 site_after_endbr = 4;    // an endbr64 directly precedes the site
using shim::site_flag_trap;                   // = 8: enabled, the site holds a trap the shim resolves as its call
// Table flags (TableHeader::flags).
inline constexpr u32 table_pie = 1;  // addresses are link-time: add the load bias at run time
using shim::table_signed_returns;    // AArch64 -pg: some functions sign their return address before the site

struct TableEntry {
  u64 addr = 0;
  u32 name = 0;  // offset into the string table; 0 is the empty name
  SiteKind kind = SiteKind::fentry;
  u8 length = 0;
  arch::CallForm call_form = arch::CallForm::none;
  u8 flags = 0;
};

struct Table {
  u16 machine = 0;
  u32 flags = 0;
  std::vector<TableEntry> entries;  // sorted by addr, unique, non-overlapping
  std::vector<char> strings;        // starts with a NUL
  std::string_view name(const TableEntry& e) const;
};

// Writes a table's header and entries straight into their final bytes, one entry at a time (the
// preparer's path: no intermediate copy of 100k entries). The string table, `strings_size` bytes that
// start and end with a NUL, follows the entries; the caller puts it there (the preparer has the kernel
// copy it from the input), and entries' `name` fields are offsets into it. Entries must come in
// address order.
class TableBuilder {
 public:
  // `spare`: capacity for bytes the caller appends to the header and entries (the runtime segment's
  // shim), so appending them copies nothing.
  TableBuilder(const elf::Codec& c, u16 machine, u32 flags, u64 count, u64 strings_size, u64 spare = 0);
  // Throws std::logic_error past `count` or for a name outside `strings`. Inline: called per site.
  void add(const TableEntry& e) {
    if (added_ == count_ || e.name >= str_size_) throw std::logic_error("TableBuilder: more entries than announced, or a name outside the strings");
    std::span<u8> entry(b_.data() + table_header_size + added_++ * table_entry_size, table_entry_size);
    c_.put(entry, 0, 8, e.addr);
    c_.put(entry, 8, 4, e.name);
    entry[12] = static_cast<u8>(e.kind);
    entry[13] = e.length;
    entry[14] = static_cast<u8>(e.call_form);
    entry[15] = e.flags;
  }
  // The header and entries; the string table goes right behind them. Throws std::logic_error if
  // fewer than `count` were added.
  Bytes finish();

 private:
  elf::Codec c_;
  Bytes b_;
  u64 count_, added_ = 0, str_size_;
};

// Flags of the site at `addr` of `len` bytes: word/line crossings; `after_endbr` from `preceding`,
// the 4 bytes before it (empty when there are none).
inline u8 site_flags(u64 addr, unsigned len, std::span<const u8> preceding) {  // inline: once per site
  u8 f = 0;
  if ((addr % 8) + len > 8) f |= site_crosses_word;
  if ((addr % 64) + len > 64) f |= site_crosses_line;
  if (arch::is_endbr64(preceding)) f |= site_after_endbr;
  return f;
}

std::vector<u8> encode_table(const Table& t, const elf::Codec& c);  // the whole table, strings included

// Decodes a table from its bytes; throws InputError (naming `file_offset` + the field) when malformed:
// bad magic/version/sizes, counts past the end, unsorted or overlapping entries, names outside the strings.
Table decode_table(std::span<const u8> b, const elf::Codec& c, const std::string& file, u64 file_offset);

// The table of a prepared binary: the __patch_sites section, or, where section headers were stripped,
// a PT_LOAD whose contents start with the magic. nullopt when the binary is not prepared.
struct FoundTable {
  Table table;
  u64 vaddr = 0;
  u64 offset = 0;
  u64 size = 0;
};
std::optional<FoundTable> find_table(const elf::Elf& elf);
// Where find_table looks, without decoding what it finds: the table's bytes, link-time address and
// file offset (discovery asks only whether the binary is prepared). nullopt when not prepared.
struct TablePlace {
  std::span<const u8> bytes;
  u64 vaddr = 0, offset = 0;
};
std::optional<TablePlace> table_place(const elf::Elf& elf);

}  // namespace prepatch
