#include "control/counts.h"
#include "rewriter/names.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "rewriter/table.h"
#include "shim/abi.h"
#include "shim/core.h"

namespace prepatch {
namespace {

// A binary given on the command line: its table and build ID (first build_id_max bytes).
struct Given {
  std::string path;
  FoundTable table;
  std::vector<u8> build_id;
  bool used = false;
};

Given load(const std::string& path) {
  MappedFile file(path);
  elf::Elf elf(file.bytes(), path);
  auto t = find_table(elf);
  if (!t) throw InputError(path, 0, "not a prepared binary (no __patch_sites table)");
  std::span<const u8> id = elf.build_id();
  id = id.first(std::min<size_t>(id.size(), shim::build_id_max));
  return {path, std::move(*t), std::vector<u8>(id.begin(), id.end())};
}

// What names an object: its path's base name (as the shim's globs match it).
std::string base_name(const std::string& path) { return shim::base_name(path.c_str()); }

// What a section (or a version 1 header) says of its object: where its build ID lies in the file.
struct Recorded {
  u64 count, table_vaddr;
  std::span<const u8> build_id;
  u64 build_id_at;
};

bool same_layout(const Given& g, const Recorded& r) { return g.table.table.entries.size() == r.count && g.table.vaddr == r.table_vaddr; }
bool same_build(const Given& g, const Recorded& r) {
  return r.build_id.empty() || g.build_id.empty() || std::equal(g.build_id.begin(), g.build_id.end(), r.build_id.begin(), r.build_id.end());
}

void check_build_id_size(const std::string& file, u64 at, u8 size) {
  if (size > shim::build_id_max) throw InputError(file, at, "expected a build ID of at most 20 bytes, found a size of " + std::to_string(size));
}

std::string another_build(const Recorded& r, const Given& g) {
  return "written by another build: build ID " + hex_bytes(r.build_id, "") + "; " + g.path + "'s is " + hex_bytes(g.build_id, "");
}

void add_rows(std::vector<CountRow>& rows, const std::string& object, const Table& table, std::span<const u8> counters) {
  for (size_t i = 0; i < table.entries.size(); i++) {
    u64 n;
    std::memcpy(&n, counters.data() + 8 * i, 8);
    rows.push_back({object, table.entries[i].addr, std::string(table.name(table.entries[i])), n});
  }
}

// Version 1: one object, its counters after the header, named by its one binary.
std::vector<CountRow> read_v1(const std::string& path, std::span<const u8> b, std::vector<Given>& given) {
  if (given.size() != 1) throw InputError(path, 8, "a version 1 counts file (one object, no table copy) is read with exactly one binary, not " + std::to_string(given.size()));
  u64 count, table_vaddr;
  std::memcpy(&count, b.data() + 16, 8);
  std::memcpy(&table_vaddr, b.data() + 32, 8);
  check_build_id_size(path, 40, b[40]);
  const Recorded r{count, table_vaddr, b.subspan(41, b[40]), 40};
  const Given& g = given[0];
  if (!same_layout(g, r))
    throw InputError(path, 16, "written by another binary: " + std::to_string(count) + " sites, table at " + hex(table_vaddr) + "; " + g.path + " has " +
                                   std::to_string(g.table.table.entries.size()) + " at " + hex(g.table.vaddr));
  if (!same_build(g, r)) throw InputError(path, r.build_id_at, another_build(r, g));
  if ((b.size() - sizeof(shim::CountsHeader)) / 8 < count) throw InputError(path, b.size(), "counts file is truncated");
  std::vector<CountRow> rows;
  add_rows(rows, base_name(g.path), g.table.table, b.subspan(sizeof(shim::CountsHeader), 8 * count));
  return rows;
}

}  // namespace

std::vector<CountRow> read_counts(const std::string& path, const std::vector<std::string>& binaries) {
  MappedFile f(path);
  return read_counts(f.bytes(), path, binaries);
}

std::vector<CountRow> read_counts(std::span<const u8> b, const std::string& path, const std::vector<std::string>& binaries) {
  std::vector<Given> given;
  for (const std::string& bin : binaries) given.push_back(load(bin));
  shim::CountsHeader h;
  if (b.size() < sizeof h) throw InputError(path, b.size(), "counts file ends inside its 64-byte header");
  std::memcpy(&h, b.data(), sizeof h);
  if (std::memcmp(h.magic, shim::counts_magic, 8) != 0) throw InputError(path, 0, "expected the counts magic \"PPCOUNT\\1\"");
  if (h.header_size != sizeof h || (h.version != 1 && h.version != shim::counts_version))
    throw InputError(path, 8, "expected version 1 or 2 with a 64-byte header, found version " + std::to_string(h.version));
  if (h.version == 1) return read_v1(path, b, given);
  std::vector<CountRow> rows;
  std::vector<Recorded> recorded;
  std::set<u64> seen;
  u64 link_at = offsetof(shim::CountsHeader, first);
  for (u64 at = h.first; at != 0;) {
    if (at % 4096 || at > b.size() || b.size() - at < sizeof(shim::CountsObject) || !seen.insert(at).second)
      throw InputError(path, link_at, "expected the offset of an object's section (page-aligned, inside the file, not seen before), found " + hex(at));
    shim::CountsObject s;
    std::memcpy(&s, b.data() + at, sizeof s);
    const auto field = [&](size_t offset) { return at + offset; };
    if (std::memcmp(s.magic, shim::counts_object_magic, 8) != 0) throw InputError(path, at, "expected an object section's magic \"PPCOBJ\\0\\1\"");
    check_build_id_size(path, field(offsetof(shim::CountsObject, build_id_size)), s.build_id_size);
    const u64 room = b.size() - at;
    if ((room - sizeof s) / 8 < s.count)
      throw InputError(path, field(offsetof(shim::CountsObject, count)), "the section's " + std::to_string(s.count) + " counters run past the file's end");
    if (s.table_offset < sizeof s + 8 * s.count || s.table_offset > room || s.table_size > room - s.table_offset)
      throw InputError(path, field(offsetof(shim::CountsObject, table_offset)), "expected the table's copy after the counters and inside the file");
    const Table table = decode_table(b.subspan(at + s.table_offset, s.table_size), elf::Codec{}, path, at + s.table_offset);
    if (table.entries.size() != s.count)
      throw InputError(path, field(offsetof(shim::CountsObject, count)), "the section counts " + std::to_string(s.count) + " sites, its table lists " +
                                                                            std::to_string(table.entries.size()));
    const Recorded r{s.count, s.table_vaddr, b.subspan(field(offsetof(shim::CountsObject, build_id)), s.build_id_size),
                     field(offsetof(shim::CountsObject, build_id_size))};
    const std::string object = std::string(s.path, strnlen(s.path, sizeof s.path));
    // A binary given names the section it matches (of the same base name first: two copies of one
    // build loaded from two paths match either), which checks the file against the binary.
    Given* g = nullptr;
    for (Given& c : given)
      if (!g && base_name(c.path) == base_name(object) && same_layout(c, r) && same_build(c, r)) g = &c;
    for (Given& c : given)
      if (!g && !c.used && same_layout(c, r) && same_build(c, r)) g = &c;
    if (g) g->used = true;
    recorded.push_back(r);
    add_rows(rows, object.empty() ? (g ? base_name(g->path) : "?") : base_name(object), table, b.subspan(at + sizeof s, 8 * s.count));
    link_at = field(offsetof(shim::CountsObject, next));
    at = s.next;
  }
  if (recorded.size() < h.objects)  // (one more: the writer stopped between linking a section and counting it)
    throw InputError(path, offsetof(shim::CountsHeader, objects),
                     "the header counts " + std::to_string(h.objects) + " objects, the sections linked are " + std::to_string(recorded.size()));
  for (const Given& g : given) {
    if (g.used) continue;
    for (const Recorded& r : recorded)  // the same layout, another build
      if (same_layout(g, r)) throw InputError(path, r.build_id_at, another_build(r, g));
    throw InputError(path, 0, "no section counts " + g.path + " (" + std::to_string(g.table.table.entries.size()) + " sites, table at " + hex(g.table.vaddr) + ")");
  }
  return rows;
}

std::vector<std::string> qualified_names(const std::vector<CountRow>& rows, const std::vector<std::string>& names) {
  std::map<std::string, std::set<std::string>> objects;  // shown name -> the objects defining it
  for (size_t i = 0; i < rows.size(); i++) objects[names[i]].insert(rows[i].object);
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); i++) out.push_back(objects[names[i]].size() > 1 ? printable_text(rows[i].object) + ":" + names[i] : names[i]);
  return out;
}

}  // namespace prepatch
