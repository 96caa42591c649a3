#include "rewriter/prepare.h"

#include <algorithm>
#include <cstring>

#include "elf/writer.h"

namespace prepatch {

namespace {

std::string hex_bytes(std::span<const u8> b) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (u8 x : b) {
    if (!s.empty()) s += ' ';
    s += digits[x >> 4];
    s += digits[x & 15];
  }
  return s;
}

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
    r.source = source_name(s.source);
    r.status = s.prepared() ? "preparable" : "skipped";
    if (!s.prepared()) {
      r.reason = skip_reason(s.skip);
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
  Discovery d = discover(elf);
  Table t;
  t.machine = elf.header().machine;
  t.flags = elf.header().type == ET_DYN ? table_pie : 0;
  t.strings.push_back('\0');
  u64 prepared = std::count_if(d.sites.begin(), d.sites.end(), [](const Site& s) { return s.prepared(); });
  t.entries.reserve(prepared);
  for (const Site& s : d.sites) {
    std::string_view name = d.func_name(s);
    if (!s.prepared()) {
      res.skipped++;
      auto b = peek(elf, s.addr);
      res.messages.push_back(site_location(elf, s.addr, name) + ": skipped: " + std::string(skip_reason(s.skip)) +
                             (b.empty() ? "" : ", found " + hex_bytes(b)));
      continue;
    }
    TableEntry e{s.addr, 0, s.kind, s.len, s.call_form, s.flags};
    if (!name.empty()) {
      e.name = static_cast<u32>(t.strings.size());
      t.strings.insert(t.strings.end(), name.begin(), name.end());
      t.strings.push_back('\0');
    }
    t.entries.push_back(e);
  }
  res.prepared = t.entries.size();
  if (t.entries.empty()) {
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

  elf::Writer w(elf);
  w.add_segment(std::string(table_section), PF_R, encode_table(t, elf.codec()));
  w.reserve_patches(t.entries.size());
  for (const Site& s : d.sites) {
    if (!s.prepared()) continue;
    // Discovery matched these bytes against the named patterns; the nop must have the site's length.
    std::span<const u8> nop = arch::canonical_nop(s.len);
    if (nop.size() != s.len) elf.fail(0, "internal: no canonical nop of " + std::to_string(s.len) + " bytes");
    w.patch(s.addr, nop);
    for (u64 at = s.addr + s.len, end = at + s.pad_rest; at < end;) {  // the rest of a long pad: permanent nops
      unsigned n = static_cast<unsigned>(std::min<u64>(end - at, 11));
      w.patch(at, arch::canonical_nop(n));
      at += n;
    }
  }
  w.write(out_path, mode, source_fd);
  return res;
}

}  // namespace prepatch
