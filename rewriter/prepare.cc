#include "rewriter/prepare.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "elf/writer.h"
#include "rewriter/embed.h"

namespace prepatch {

namespace {

std::string state_of(std::span<const u8> b, unsigned len) {
  if (b.size() < len) return "other";
  if (arch::nop_length(b) == len) return "nop";
  if (auto c = arch::match_call(b, 0); c && c->len == len) return "call";
  return "other";
}

// Up to 6 bytes at addr, fewer near the end of a segment: what a skipped site's message shows.
std::span<const u8> peek(const elf::Elf& elf, u64 addr) {
  for (u64 n = 6; n > 0; n--)
    if (auto b = elf.bytes_at(addr, n); !b.empty()) return b;
  return {};
}

bool already_in(const std::vector<SiteRow>& rows, u64 addr) {
  auto it = std::lower_bound(rows.begin(), rows.end(), addr, [](const SiteRow& r, u64 a) { return r.addr < a; });
  return it != rows.end() && it->addr == addr;
}

// The bytes each prepared site gets, in site order: the site's canonical nop, then, for a patchable pad
// longer than the site, the rest as permanent canonical nops (11 bytes at most each). Discovery already
// matched the old bytes against the named patterns.
class SitePatches {
 public:
  SitePatches(const elf::Elf& elf, const std::vector<Site>& sites) : elf_(elf), cursor_(elf), sites_(sites) {}
  size_t fill(std::span<elf::Patch> out) {
    size_t n = 0;
    while (n < out.size() && next(out[n])) n++;
    return n;
  }

 private:
  bool next(elf::Patch& p) {
    u64 vaddr;
    std::span<const u8> bytes;
    if (pad_at_ < pad_end_) {
      vaddr = pad_at_;
      bytes = arch::canonical_nop(static_cast<unsigned>(std::min<u64>(pad_end_ - pad_at_, 11)));
      pad_at_ += bytes.size();
    } else {
      while (i_ < sites_.size() && !sites_[i_].prepared()) i_++;
      if (i_ == sites_.size()) return false;
      const Site& s = sites_[i_++];
      vaddr = s.addr;
      bytes = arch::canonical_nop(s.len);
      pad_at_ = s.addr + s.len;
      pad_end_ = pad_at_ + s.pad_rest;
    }
    auto off = cursor_.offset(vaddr, bytes.size());
    if (!off || bytes.empty()) elf_.fail(0, "internal: site at vaddr " + hex(vaddr) + " is not file-backed or has no canonical nop");
    p.offset = *off;
    p.len = static_cast<u8>(bytes.size());
    std::memcpy(p.bytes, bytes.data(), bytes.size());
    return true;
  }

  const elf::Elf& elf_;
  elf::SegmentCursor cursor_;
  const std::vector<Site>& sites_;
  size_t i_ = 0;
  u64 pad_at_ = 0, pad_end_ = 0;
};

}  // namespace

std::string site_location(const elf::Elf& elf, u64 addr, std::string_view func) {
  std::string s = elf.name() + ": vaddr " + hex(addr);
  if (auto off = elf.vaddr_to_offset(addr, 1)) {
    s += " (file " + hex(*off);
    for (const elf::Section& sec : elf.sections())
      if ((sec.flags & SHF_ALLOC) && addr >= sec.addr && addr < sec.addr + sec.size && !sec.name.empty()) {
        s += ", " + std::string(sec.name) + "+" + hex(addr - sec.addr);
        break;
      }
    s += ")";
  }
  if (!func.empty()) s += " in " + std::string(func);
  return s;
}

Listing list_sites(const elf::Elf& elf) {
  Listing l;
  auto found = find_table(elf);
  Discovery d = discover(elf);
  auto row_for = [&](u64 addr, unsigned len) {
    SiteRow r;
    r.addr = addr;
    r.file_offset = elf.vaddr_to_offset(addr, 1);
    r.length = len;
    r.state = state_of(elf.bytes_at(addr, len), len);
    return r;
  };
  if (found) {
    l.prepared = true;
    for (const TableEntry& e : found->table.entries) {
      SiteRow r = row_for(e.addr, e.length);
      r.function = found->table.name(e);
      r.kind = e.kind;
      r.status = "prepared";
      r.source = "table";
      l.rows.push_back(std::move(r));
    }
  }
  std::vector<SiteRow> extra;
  for (const Site& s : d.sites) {
    if (found && s.prepared()) continue;  // the table is the record of what was prepared
    if (found && already_in(l.rows, s.addr)) continue;
    SiteRow r = row_for(s.addr, s.len);
    r.function = d.func_name(s);
    r.kind = s.kind;
    r.source = source_name(s.source());
    r.status = s.prepared() ? "preparable" : "skipped";
    if (!s.prepared()) {
      r.reason = skip_reason(s.skip());
      r.found = hex_bytes(peek(elf, s.addr));
    }
    extra.push_back(std::move(r));
  }
  l.rows.insert(l.rows.end(), extra.begin(), extra.end());
  std::stable_sort(l.rows.begin(), l.rows.end(), [](const SiteRow& a, const SiteRow& b) { return a.addr < b.addr; });
  return l;
}

PrepareResult prepare(const elf::Elf& elf, const std::string& out_path, unsigned mode, int source_fd) {
  PrepareResult res;
  if (auto t = find_table(elf)) {
    res.outcome = PrepareOutcome::already_prepared;
    res.messages.push_back(elf.name() + ": already prepared (" + std::string(table_section) + " at file offset " + hex(t->offset) + " lists " +
                           std::to_string(t->table.entries.size()) + " sites); nothing written");
    return res;
  }
  Discovery d = discover(elf, runtime_segment_tail());  // refuses other ISAs first, naming e_machine
  if (std::string why = cannot_embed(elf); !why.empty()) throw InputError(elf.name(), 16, "e_type: " + why);
  for (const Site& s : d.sites) {
    if (!s.prepared()) {
      res.skipped++;
      auto b = peek(elf, s.addr);
      res.messages.push_back(site_location(elf, s.addr, d.func_name(s)) + ": skipped: " + std::string(skip_reason(s.skip())) +
                             (b.empty() ? "" : ", found " + hex_bytes(b)));
      continue;
    }
    res.prepared++;
  }
  if (res.prepared == 0) {
    res.outcome = PrepareOutcome::no_sites;
    std::string why;
    if (!d.has_symbols && !d.has_records)
      why = "no sites: no function symbols (stripped?) and no __mcount_loc or __patchable_function_entries section to find them by; "
            "prepare before stripping, or build with -mrecord-mcount or -fpatchable-function-entry=N";
    else if (d.sites.empty())
      why = "no sites: no calls to mcount/__fentry__ and no patchable entries found (was it built with -pg, -pg -mfentry or -fpatchable-function-entry=N?)";
    else
      why = "no sites could be prepared (" + std::to_string(res.skipped) + " skipped, see above)";
    res.messages.push_back(elf.name() + ": " + why + "; nothing written");
    return res;
  }

  // Discovery laid the names out as the table's string table (names of skipped sites included).
  TableBuilder table(elf.codec(), elf.header().machine, elf.header().type == ET_DYN ? table_pie : 0, res.prepared, d.strings,
                     runtime_segment_tail(), std::move(d.table_memory));
  elf::SegmentCursor cursor(elf);
  for (const Site& s : d.sites) {
    if (!s.prepared()) continue;
    auto before = s.addr >= 4 ? cursor.bytes(s.addr - 4, 4) : std::span<const u8>{};
    table.add({s.addr, s.name, s.kind, s.len, arch::call_form_for_length(s.len), site_flags(s.addr, s.len, before)});
  }
  // One segment after all others: the table, then the shim, which the entry point now starts.
  elf::Writer w(elf);
  RuntimeSegment rt = runtime_segment(elf, table.finish(), w.next_segment_vaddr(), d);
  std::vector<elf::NewSection> sections = {{std::string(table_section), 0, rt.table_size, 0},
                                           {std::string(shim_section), rt.blob_offset, rt.data.size() - rt.blob_offset, SHF_EXECINSTR}};
  w.add_segment({}, PF_R | PF_X, std::move(rt.data), std::move(sections));
  w.set_entry(rt.entry);
  std::vector<char>().swap(d.strings);  // the table holds its copy

  // Sites are in address order; where the file keeps that order (every linker's layout), the writer
  // takes the patches as a stream, else as a list sorted by file offset.
  SitePatches patches(elf, d.sites);
  bool ascending = true;
  u64 last = 0;
  for (const Site& s : d.sites)
    if (auto off = cursor.offset(s.addr, 1); off && s.prepared()) {
      ascending &= *off >= last;
      last = *off;
    }
  if (ascending) {
    w.write(out_path, mode, source_fd, [&](std::span<elf::Patch> out) { return patches.fill(out); });
  } else {
    std::array<elf::Patch, 64> batch;
    while (size_t n = patches.fill(batch))  // the writer sorts its own list
      for (size_t i = 0; i < n; i++) w.add_patch(batch[i]);
    w.write(out_path, mode, source_fd);
  }
  return res;
}

}  // namespace prepatch
