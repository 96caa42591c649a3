#include "control/counts.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "rewriter/table.h"
#include "shim/abi.h"

namespace prepatch {
namespace {

// A binary whose table a section may be: its table and build ID (first build_id_max bytes).
struct Candidate {
  std::string path;
  std::unique_ptr<MappedFile> file;
  std::unique_ptr<elf::Elf> elf;
  FoundTable table;
  std::vector<u8> build_id;
  bool used = false;
};

// A binary given (`must`: what is wrong with it is an error), or one a section names (the file may be
// gone, or another: only a regular file is opened, and one that is no prepared ELF is passed over).
std::optional<Candidate> load(const std::string& path, bool must) {
  if (!must) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    try {
      return load(path, true);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  Candidate c;
  c.path = path;
  c.file = std::make_unique<MappedFile>(path);
  c.elf = std::make_unique<elf::Elf>(c.file->bytes(), path);
  auto t = find_table(*c.elf);
  if (!t) throw InputError(path, 0, "not a prepared binary (no __patch_sites table)");
  c.table = std::move(*t);
  std::span<const u8> id = c.elf->build_id();
  id = id.first(std::min<size_t>(id.size(), shim::build_id_max));
  c.build_id.assign(id.begin(), id.end());
  return c;
}

std::string base_name(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// What a section (or a version 1 header) says of its object.
struct Recorded {
  u64 offset;  // where it starts in the file
  u64 count, table_vaddr;
  std::span<const u8> build_id;
  std::string path;
};

bool matches(const Candidate& c, const Recorded& r) {
  if (c.table.table.entries.size() != r.count || c.table.vaddr != r.table_vaddr) return false;
  return r.build_id.empty() || c.build_id.empty() || std::equal(c.build_id.begin(), c.build_id.end(), r.build_id.begin(), r.build_id.end());
}

void check_build_id_size(const std::string& file, u64 at, u8 size) {
  if (size > shim::build_id_max) throw InputError(file, at, "expected a build ID of at most 20 bytes, found a size of " + std::to_string(size));
}

void add_rows(std::vector<CountRow>& rows, const Candidate& c, const std::string& object, std::span<const u8> counters) {
  const auto& entries = c.table.table.entries;
  for (size_t i = 0; i < entries.size(); i++) {
    u64 n;
    std::memcpy(&n, counters.data() + 8 * i, 8);
    rows.push_back({object, entries[i].addr, std::string(c.table.table.name(entries[i])), n});
  }
}

// Version 1: one object, its counters after the header.
std::vector<CountRow> read_v1(const std::string& path, std::span<const u8> b, std::vector<Candidate>& given) {
  if (given.size() != 1) throw InputError(path, 8, "a version 1 counts file (one object) is read with exactly one binary, not " + std::to_string(given.size()));
  u64 count, table_vaddr;
  std::memcpy(&count, b.data() + 16, 8);
  std::memcpy(&table_vaddr, b.data() + 32, 8);
  check_build_id_size(path, 40, b[40]);
  const Recorded r{0, count, table_vaddr, b.subspan(41, b[40]), ""};
  const Candidate& c = given[0];
  if (c.table.table.entries.size() != count || c.table.vaddr != table_vaddr)
    throw InputError(path, 16, "written by another binary: " + std::to_string(count) + " sites, table at " + hex(table_vaddr) + "; " + c.path + " has " +
                                   std::to_string(c.table.table.entries.size()) + " at " + hex(c.table.vaddr));
  if (!matches(c, r))
    throw InputError(path, 40, "written by another build: build ID " + hex_bytes(r.build_id, "") + "; " + c.path + "'s is " + hex_bytes(c.build_id, ""));
  if ((b.size() - sizeof(shim::CountsHeader)) / 8 < count) throw InputError(path, b.size(), "counts file is truncated");
  std::vector<CountRow> rows;
  add_rows(rows, c, base_name(c.path), b.subspan(sizeof(shim::CountsHeader), 8 * count));
  return rows;
}

}  // namespace

std::vector<CountRow> read_counts(const std::string& path, const std::vector<std::string>& binaries) {
  std::vector<Candidate> given;
  for (const std::string& b : binaries) given.push_back(std::move(*load(b, true)));
  MappedFile f(path);
  auto b = f.bytes();
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
  u64 sections = 0;
  u64 link_at = offsetof(shim::CountsHeader, first);
  for (u64 at = h.first; at != 0; sections++) {
    if (at % 4096 || at > b.size() || b.size() - at < sizeof(shim::CountsObject) || !seen.insert(at).second)
      throw InputError(path, link_at, "expected the offset of an object's section (page-aligned, inside the file, not seen before), found " + hex(at));
    shim::CountsObject s;
    std::memcpy(&s, b.data() + at, sizeof s);
    if (std::memcmp(s.magic, shim::counts_object_magic, 8) != 0) throw InputError(path, at, "expected an object section's magic \"PPCOBJ\\0\\1\"");
    check_build_id_size(path, at + offsetof(shim::CountsObject, build_id_size), s.build_id_size);
    if ((b.size() - at - sizeof s) / 8 < s.count) throw InputError(path, at + offsetof(shim::CountsObject, count), "the section's " + std::to_string(s.count) + " counters run past the file's end");
    Recorded r{at, s.count, s.table_vaddr, std::span<const u8>(b.data() + at + offsetof(shim::CountsObject, build_id), s.build_id_size),
               std::string(s.path, strnlen(s.path, sizeof s.path))};
    // The binary given of that base name, else one given that no section took yet, else the file the
    // section names, else any given (two copies of one build loaded from two paths match either).
    Candidate* c = nullptr;
    for (Candidate& g : given)
      if (!c && base_name(g.path) == base_name(r.path) && matches(g, r)) c = &g;
    for (Candidate& g : given)
      if (!c && !g.used && matches(g, r)) c = &g;
    std::optional<Candidate> named;
    if (!c && !r.path.empty() && (named = load(r.path, false)) && matches(*named, r)) c = &*named;
    for (Candidate& g : given)
      if (!c && matches(g, r)) c = &g;
    if (!c)
      throw InputError(path, at, "no binary given is the object this section counts (" + (r.path.empty() ? std::string("its path not recorded") : r.path) + ", " +
                                     std::to_string(s.count) + " sites, table at " + hex(s.table_vaddr) +
                                     (s.build_id_size ? ", build ID " + hex_bytes(r.build_id, "") : std::string()) + "): name its binary on the command line");
    recorded.push_back(r);
    c->used = true;
    add_rows(rows, *c, r.path.empty() ? base_name(c->path) : base_name(r.path), b.subspan(at + sizeof s, 8 * s.count));
    link_at = at + offsetof(shim::CountsObject, next);
    at = s.next;
  }
  if (sections < h.objects)  // (one more: the writer stopped between linking a section and counting it)
    throw InputError(path, offsetof(shim::CountsHeader, objects), "the header counts " + std::to_string(h.objects) + " objects, the sections linked are " + std::to_string(sections));
  for (const Candidate& c : given) {
    if (c.used) continue;
    for (const Recorded& r : recorded)  // the same layout, another build
      if (c.table.table.entries.size() == r.count && c.table.vaddr == r.table_vaddr && !matches(c, r))
        throw InputError(path, r.offset + offsetof(shim::CountsObject, build_id_size),
                         "written by another build: build ID " + hex_bytes(r.build_id, "") + "; " + c.path + "'s is " + hex_bytes(c.build_id, ""));
    throw InputError(path, 0, "no section counts " + c.path + " (" + std::to_string(c.table.table.entries.size()) + " sites, table at " + hex(c.table.vaddr) + ")");
  }
  return rows;
}

std::vector<std::string> qualified_names(const std::vector<CountRow>& rows, const std::vector<std::string>& names) {
  std::map<std::string, std::set<std::string>> objects;  // shown name -> the objects defining it
  for (size_t i = 0; i < rows.size(); i++) objects[names[i]].insert(rows[i].object);
  std::vector<std::string> out;
  out.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); i++) out.push_back(objects[names[i]].size() > 1 ? rows[i].object + ":" + names[i] : names[i]);
  return out;
}

}  // namespace prepatch
