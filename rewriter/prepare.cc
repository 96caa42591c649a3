#include "rewriter/prepare.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "arch/aarch64.h"
#include "arch/ppc64le.h"
#include "arch/riscv64.h"
#include "arch/thumb2.h"
#include "elf/writer.h"
#include "rewriter/embed.h"
#include "rewriter/gprof.h"
#include "shim/abi.h"

namespace prepatch {

namespace {

std::string state_of(const elf::Elf& elf, std::span<const u8> b, u64 addr, unsigned len) {
  if (b.size() < len) return "other";
  const u16 m = elf.header().machine;
  if (m == EM_RISCV) {
    if (len != 4) return "other";
    const u32 w = static_cast<u32>(elf.codec().get(b, 0, 4));
    if (w == arch::riscv64::nop) return "nop";
    const bool call = arch::riscv_call_form(SiteKind::mcount, w) != arch::CallForm::none || arch::riscv64::is_jalr_via(w, arch::riscv64::t0);
    return call ? "call" : "other";
  }
  if (m == EM_ARM && len == arch::thumb2::arm_site_len) {  // an ARM-state site: `mov ip, pc`, then `nop` or `b`
    const u32 first = static_cast<u32>(elf.codec().get(b, 0, 4)), second = static_cast<u32>(elf.codec().get(b, 4, 4));
    const bool bl = (second & 0xff00'0000) == 0xeb00'0000 || (second & 0xfe00'0000) == 0xfa00'0000;
    if (first == arch::thumb2::arm_push_lr && bl) return "call";  // as built: `push {lr}; bl __gnu_mcount_nc`
    if (first != arch::thumb2::arm_mov_ip_pc) return "other";
    return second == arch::thumb2::arm_nop ? "nop" : (second & 0xff00'0000) == 0xea00'0000 ? "call" : "other";
  }
  if (arch::word_machine(m) || m == EM_ARM) {
    if (len != 4) return "other";
    if (elf.codec().get(b, 0, 4) == arch::nop_word(m)) return "nop";  // Thumb-2: `pop {lr}`
    if (m == EM_ARM && elf.codec().get(b, 0, 4) == arch::thumb2::arm_nop) return "nop";  // an ARM-state pad's word (as Thumb: a `blx`)
    if (arch::bl_target(m == EM_AARCH64 ? arch::Isa::aarch64 : m == EM_ARM ? arch::Isa::thumb2 : arch::Isa::ppc64le, b, addr)) return "call";
    return "other";
  }
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

// The bytes each prepared site gets, in site order. x86-64: the site's canonical nop, then, for a
// patchable pad longer than the site, the rest as permanent canonical nops (11 bytes at most each);
// around an -mfentry call that saves a nested function's static chain, 2-byte nops over its `push
// %r10` and `pop %r10` (Site::saves_chain).
// AArch64 and PPC64le, a word each: a patchable site's context word before it (patchable_context_word), the
// site's nop word, then, where pad_rest says so, a permanent nop word after it (PPC64le: the `ld r2,
// 24(r1)` behind a call through ld's stub, which would reload a TOC pointer nobody saved once the call
// is a nop). RISC-V: a patchable site's `auipc t0, hi` before it (hi for the shim's trampoline), the
// site's nop. Thumb-2: a patchable site's `push {lr}` halfword before it, the site's `pop {lr}`; an
// ARM-state site's two words, `mov ip, pc` and `nop`.
// Discovery already matched the old bytes against the named patterns.
class SitePatches {
 public:
  SitePatches(const elf::Elf& elf, std::span<const Site> sites, const RuntimeSegment& rt)
      : elf_(elf), cursor_(elf), sites_(sites), rt_(rt), machine_(elf.header().machine),
        words_(arch::word_machine(machine_) || machine_ == EM_RISCV || machine_ == EM_ARM) {}
  size_t fill(std::span<elf::Patch> out) {
    size_t n = 0;
    while (n < out.size() && next(out[n])) n++;
    return n;
  }

 private:
  // Fills p: its bytes are copied in fixed sizes (4 for a word, the canonical nops' row of 11 for a
  // nop), not with a memcpy call of the length: 100k sites.
  bool next(elf::Patch& p) {
    u64 vaddr;
    unsigned len;
    if (queued_ < queue_len_) {
      vaddr = queue_[queued_].vaddr;
      len = queue_[queued_].len;
      for (unsigned i = 0; i < 4; i++) p.bytes[i] = static_cast<u8>(queue_[queued_].word >> (8 * i));
      queued_++;
    } else if (pad_at_ < pad_end_) {
      vaddr = pad_at_;
      len = static_cast<unsigned>(std::min<u64>(pad_end_ - pad_at_, arch::max_canonical_nop));
      std::memcpy(p.bytes, arch::canonical_nops[len - 1], arch::max_canonical_nop);
      pad_at_ += len;
    } else {
      while (i_ < sites_.size() && !sites_[i_].prepared()) i_++;
      if (i_ == sites_.size()) return false;
      if (sites_[i_].saves_chain() && !chain_done_) {  // x86-64: the `push %r10` before the site, first
        chain_done_ = true;
        vaddr = sites_[i_].addr - 2, len = 2;
        std::memcpy(p.bytes, arch::canonical_nops[len - 1], arch::max_canonical_nop);
        return finish(p, vaddr, len);
      }
      chain_done_ = false;
      const Site& s = sites_[i_++];
      if (words_) {
        const u32 nop = arch::nop_word(machine_);
        queued_ = queue_len_ = 0;
        if (s.kind == SiteKind::patchable && machine_ == EM_ARM) queue_[queue_len_++] = {s.addr - 2, arch::thumb2::push_lr, 2};
        else if (s.kind == SiteKind::patchable) queue_[queue_len_++] = {s.addr - 4, context_word(s)};
        if (machine_ == EM_ARM && s.len == arch::thumb2::arm_site_len) {  // ARM state: both words
          queue_[queue_len_++] = {s.addr, arch::thumb2::arm_mov_ip_pc};
          queue_[queue_len_++] = {s.addr + 4, arch::thumb2::arm_nop};
          return next(p);
        }
        queue_[queue_len_++] = {s.addr, nop};
        if (s.pad_rest) queue_[queue_len_++] = {s.addr + 4, nop};
        return next(p);
      }
      vaddr = s.addr;
      len = s.len;
      if (len == 0 || len > arch::max_canonical_nop) elf_.fail(0, "internal: site at vaddr " + hex(vaddr) + " has no canonical nop");
      std::memcpy(p.bytes, arch::canonical_nops[len - 1], arch::max_canonical_nop);
      pad_at_ = s.addr + s.len;
      pad_end_ = pad_at_ + s.pad_rest + (s.saves_chain() ? 2 : 0);  // (and the `pop %r10` after it)
    }
    return finish(p, vaddr, len);
  }
  bool finish(elf::Patch& p, u64 vaddr, unsigned len) {
    auto off = cursor_.offset(vaddr, len);
    if (!off) elf_.fail(0, "internal: site at vaddr " + hex(vaddr) + " is not file-backed");
    p.offset = *off;
    p.len = static_cast<u8>(len);
    return true;
  }

  u32 context_word(const Site& s) const {
    if (machine_ != EM_RISCV) return arch::patchable_context_word(machine_);
    u32 auipc = 0, jalr = 0;  // in reach of the trampoline or its island: runtime_segment checked every site's call
    const int pk = static_cast<int>(SiteKind::patchable) - 1;
    for (const u64 target : {rt_.tramp[pk], rt_.island_of[pk], rt_.low_island_of[pk]})  // (as the shim tries them)
      if (target && arch::riscv64::encode_call(s.addr - 4, target, arch::riscv64::t0, auipc, jalr)) return auipc;
    return arch::riscv64::auipc | (arch::riscv64::t0 << 7);  // a trap site (none reached): `auipc t0, 0`, harmless
  }

  const elf::Elf& elf_;
  elf::SegmentCursor cursor_;
  std::span<const Site> sites_;
  const RuntimeSegment& rt_;
  const u16 machine_;
  const bool words_;  // AArch64, PPC64le, RISC-V, Thumb-2: 32-bit instructions (Thumb-2's off form: pop {lr})
  size_t i_ = 0;
  u64 pad_at_ = 0, pad_end_ = 0;
  bool chain_done_ = false;  // the current site's `push %r10` is written (Site::saves_chain)
  struct Word {
    u64 vaddr;
    u32 word;
    unsigned len = 4;  // 2: Thumb-2's `push {lr}` before a patchable site
  } queue_[3];  // a word ISA site's patches, in address order
  unsigned queued_ = 0, queue_len_ = 0;
};

// The sites' patches with a few others (`extra`, sorted by file offset) merged in by file offset, so the
// writer still takes one ascending stream. The sites fill each batch directly (100k of them); an extra
// is inserted where it belongs among them, or after the last.
class MergedPatches {
 public:
  MergedPatches(SitePatches& sites, std::span<const elf::Patch> extra) : sites_(sites), extra_(extra) {}
  size_t fill(std::span<elf::Patch> out) {
    if (out.empty()) return 0;
    const size_t left = extra_.size() - next_;
    size_t n = sites_.fill(out.first(out.size() > left ? out.size() - left : 1));
    while (next_ < extra_.size() && n < out.size() && (n == 0 || extra_[next_].offset < out[n - 1].offset)) {
      const elf::Patch& e = extra_[next_++];
      auto at = std::upper_bound(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), e.offset,
                                 [](u64 off, const elf::Patch& p) { return off < p.offset; });
      std::move_backward(at, out.begin() + static_cast<std::ptrdiff_t>(n), out.begin() + static_cast<std::ptrdiff_t>(n + 1));
      *at = e;
      n++;
    }
    return n;
  }

 private:
  SitePatches& sites_;
  std::span<const elf::Patch> extra_;
  size_t next_ = 0;
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

namespace {

// The shim's blob in a prepared binary: its section, or without section headers the page-aligned
// blob header after the table in the table's segment (rewriter/embed.cc lays them out so). Empty when
// not found.
std::span<const u8> find_blob(const elf::Elf& elf, const FoundTable& t) {
  if (const elf::Section* s = elf.section(shim_section)) return elf.section_data(*s);
  const u64 size = elf.bytes().size();
  for (const elf::Segment& seg : elf.segments()) {
    if (seg.type != PT_LOAD || t.offset < seg.offset || t.offset - seg.offset >= seg.filesz) continue;
    const u64 end = seg.filesz > size - seg.offset ? size : seg.offset + seg.filesz;  // (seg.offset <= t.offset, in the file)
    // (t.size is the whole segment where the table was found without sections: from its own end)
    const u64 table_end = t.offset + table_header_size + t.table.entries.size() * table_entry_size + t.table.strings.size();
    for (u64 at = (table_end + 4095) & ~u64{4095}; at < end && end - at >= sizeof(shim::BlobHeader); at += 4096)
      if (std::memcmp(elf.bytes().data() + at, shim::blob_magic, 8) == 0) return elf.bytes().subspan(at, end - at);
  }
  return {};
}

// The branch islands the preparer gave a prepared binary's shim (shim::Config: island, stub_islands,
// entry_islands), by address; none where its blob is not this version's.
std::vector<IslandRow> read_islands(const elf::Elf& elf, const FoundTable& t) {
  std::vector<IslandRow> out;
  const std::span<const u8> blob = find_blob(elf, t);
  const elf::Codec& c = elf.codec();
  if (blob.size() < sizeof(shim::BlobHeader) || std::memcmp(blob.data(), shim::blob_magic, 8) != 0 ||
      c.get(blob, __builtin_offsetof(shim::BlobHeader, version), 4) != shim::blob_version)
    return out;
  const u64 cfg = c.get(blob, __builtin_offsetof(shim::BlobHeader, config), 4);
  if (cfg > blob.size() || blob.size() - cfg < sizeof(shim::Config)) return out;
  const auto field = [&](size_t off, unsigned width) { return c.get(blob, cfg + off, width); };
  const auto add = [&](u64 addr, const char* where, SiteKind kind, bool arm_state) {
    out.push_back({addr, elf.vaddr_to_offset(addr, 1), where, kind, arm_state});
  };
  const bool arm32 = elf.header().machine == EM_ARM;
  for (unsigned k = 0; k < 3; k++)
    if (const u64 a = field(__builtin_offsetof(shim::Config, island) + 8 * k, 8))
      add(a, "after the text", static_cast<SiteKind>(k + 1), arm32 && k == 0);
  // The lists lie at offsets from the table, u64 each (rewriter/embed.cc).
  const auto list = [&](size_t off_field, size_t count_field, const char* where, SiteKind kind) {
    const u64 off = field(off_field, 4), n = field(count_field, 4);
    if (!off || t.offset + off > elf.bytes().size() || n > (elf.bytes().size() - t.offset - off) / 8) return;
    for (u64 i = 0; i < n; i++) add(c.get(elf.bytes(), t.offset + off + 8 * i, 8), where, kind, false);
  };
  list(__builtin_offsetof(shim::Config, stub_islands), __builtin_offsetof(shim::Config, stub_island_count), "over a linker stub or PLT entry",
       SiteKind::mcount);
  list(__builtin_offsetof(shim::Config, entry_islands), __builtin_offsetof(shim::Config, entry_island_count), "over the nops before an entry",
       SiteKind::patchable);
  // The islands of last resort, below the lowest segment (no file offset: the shim writes them, lower
  // down where that page is taken at start).
  if (const u64 off = field(__builtin_offsetof(shim::Config, low_islands), 4); off && t.offset + off <= elf.bytes().size() &&
                                                                                elf.bytes().size() - t.offset - off >= sizeof(shim::LowIslands))
    for (unsigned k = 0; k < 3; k++)
      if (const u64 a = c.get(elf.bytes(), t.offset + off + __builtin_offsetof(shim::LowIslands, island) + 8 * k, 8))
        out.push_back({a, std::nullopt, "below the lowest segment, mapped at start", static_cast<SiteKind>(k + 1), false});
  std::stable_sort(out.begin(), out.end(), [](const IslandRow& a, const IslandRow& b) { return a.addr < b.addr; });
  return out;
}

}  // namespace

Listing list_sites(const elf::Elf& elf, const elf::Elf* symbols) {
  Listing l;
  auto found = find_table(elf);
  Discovery d = discover(elf, symbols);
  auto row_for = [&](u64 addr, unsigned len) {
    SiteRow r;
    r.addr = addr;
    r.file_offset = elf.vaddr_to_offset(addr, 1);
    r.length = len;
    r.state = state_of(elf, elf.bytes_at(addr, len), addr, len);
    return r;
  };
  if (found) {
    l.prepared = true;
    l.islands = read_islands(elf, *found);
    for (const TableEntry& e : found->table.entries) {
      SiteRow r = row_for(e.addr, e.length);
      r.function = found->table.name(e);
      r.kind = e.kind;
      r.status = e.flags & site_flag_trap ? "trap" : "prepared";
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

PrepareResult prepare(const elf::Elf& elf, const std::string& out_path, unsigned mode, int source_fd, const elf::Elf* symbols) {
  PrepareResult res;
  if (auto t = find_table(elf)) {
    res.outcome = PrepareOutcome::already_prepared;
    res.messages.push_back(elf.name() + ": already prepared (" + std::string(table_section) + " at file offset " + hex(t->offset) + " lists " +
                           std::to_string(t->table.entries.size()) + " sites); nothing written");
    return res;
  }
  // The kernel copies the input into the output's file on a second thread while discovery reads it
  // (elf::Writer::begin); where the copy may end depends on the names' section, which the table
  // carries. A broken one is reported by discover(), after what it checks first.
  elf::Writer w(elf);
  u32 names_section = 0;
  try {
    names_section = function_names(elf, symbols).section;
  } catch (const InputError&) {
  }
  w.begin(out_path, source_fd, {&names_section, 1});
  Discovery d = discover(elf, symbols);  // refuses other ISAs first, naming e_machine
  if (std::string why = cannot_embed(elf); !why.empty()) throw InputError(elf.name(), 16, "e_type: " + why);
  res.prepared = d.prepared;
  res.skipped = d.sites.size() - d.prepared;
  for (size_t i = 0; i < d.sites.size() && res.messages.size() < res.skipped; i++) {
    const Site& s = d.sites[i];
    if (s.prepared()) continue;
    auto b = peek(elf, s.addr);
    res.messages.push_back(site_location(elf, s.addr, d.func_name(s)) + ": skipped: " + std::string(skip_reason(s.skip())) +
                           (b.empty() ? "" : ", found " + hex_bytes(b)));
  }
  // RISC-V and Thumb-2 -pg: the functions whose prologue discovery did not follow (Discovery::mcount_frames).
  std::string unfollowed;
  size_t unfollowed_n = 0;
  for (const auto& [addr, frame] : d.mcount_frames)
    if (!frame && unfollowed_n++ < 3) {
      const auto s = std::lower_bound(d.sites.begin(), d.sites.end(), addr, [](const Site& x, u64 a) { return x.addr < a; });
      unfollowed += (unfollowed.empty() ? "" : ", ") + std::string(s != d.sites.end() ? d.func_name(*s) : "?");
    }
  if (unfollowed_n)
    res.messages.push_back(elf.name() + ": " + std::to_string(unfollowed_n) + " -pg function(s) whose prologue moves sp or saves its return address in a way not followed (" +
                           unfollowed + (unfollowed_n > 3 ? ", ..." : "") + "): the graph tracer leaves their calls out; count and function trace them");
  if (d.unwind_functions && res.prepared)
    res.messages.push_back(elf.name() + ": no .symtab: -pg sites looked for in the " + std::to_string(d.unwind_functions) +
                           " functions the FDEs of .eh_frame cover, which have no names: each is called by its site's address "
                           "(the binary's debug file would name them: --debug-file)");
  if (res.prepared == 0) {
    res.outcome = PrepareOutcome::no_sites;
    std::string why;
    if (!d.has_symbols && !d.has_records)
      why = "no sites: no function symbols (stripped?), no __mcount_loc or __patchable_function_entries section to find them by, and no "
            "-pg call found in the functions its unwind table's FDEs cover (a static binary's mcount then has no name; ARM32's and "
            "RISC-V64's gcc write no FDEs by default); give its separate debug file (--debug-file), prepare before stripping, or build with "
            "-mrecord-mcount or -fpatchable-function-entry=N";
    else if (d.sites.empty())
      why = "no sites: no calls to mcount/__fentry__ and no patchable entries found (was it built with -pg, -pg -mfentry or -fpatchable-function-entry=N?)";
    else
      why = "no sites could be prepared (" + std::to_string(res.skipped) + " skipped, see above)";
    res.messages.push_back(elf.name() + ": " + why + "; nothing written");
    return res;
  }

  // The table's string table is the symbols' own (Discovery::strings), which runtime_segment puts
  // behind the entries.
  const u32 table_flags = (elf.header().type == ET_DYN ? table_pie : 0) | (d.signed_returns ? table_signed_returns : 0);
  TableBuilder table(elf.codec(), elf.header().machine, table_flags, res.prepared, d.strings.size(),
                     runtime_segment_tail(elf.header().machine));
  elf::SegmentCursor cursor(elf);
  const u16 machine = elf.header().machine;
  // One read of the sites: their table entries; whether their file offsets ascend as their addresses
  // do (every linker's layout), so the writer can take the patches as a stream; and, for each kind
  // and call form, the lowest and highest site, the ones furthest from the shim (Reach).
  Reach reach;
  bool ascending = true;
  u64 last = 0;
  for (const Site& s : d.sites) {
    if (!s.prepared()) continue;
    auto before = s.addr >= 4 && machine == EM_X86_64 ? cursor.bytes(s.addr - 4, 4) : std::span<const u8>{};
    const arch::CallForm form = machine == EM_RISCV ? call_form_of(elf, s) : arch::call_form_for(machine, s.len);
    table.add({s.addr, s.name, s.kind, s.len, form, site_flags(s.addr, s.len, before)});
    reach.add(s, form);
    if (auto off = cursor.offset(s.addr, 1)) {
      ascending &= *off >= last;
      last = *off;
    }
  }
  // One segment after all others: the table, then the shim, which the entry point now starts.
  RuntimeSegment rt = runtime_segment(elf, table.finish(), w.next_segment_vaddr(), d, reach);
  std::vector<elf::NewSection> sections = {{std::string(table_section), 0, rt.table_size, 0},
                                           {std::string(shim_section), rt.blob_offset, rt.data.size() + rt.names.size() - rt.blob_offset, SHF_EXECINSTR}};
  // The names are the input's .strtab, whole where it ends with its last name: the writer then leaves
  // the input's copy of it out and points .strtab at this one (elf::Insert::section).
  w.add_segment({}, PF_R | PF_X, std::move(rt.data), std::move(sections), {{rt.names_at, rt.names, d.strings_section}});
  if (rt.entry) w.set_entry(rt.entry);

  // Besides the sites: RISC-V's redirect of what the -pg sites call, a shared object's hooks
  // (DT_INIT or its first init_array entry: the shim's start; DT_FINI or its first fini_array entry: its
  // end), the branch islands (in the padding after the text, which its segment grows over; ARM32's
  // over the stubs that -pg calls went through), and gprof's start-up made to return
  // (rewriter/gprof.h), in file order, merged into the sites' stream.
  std::vector<elf::Patch> extra;
  if (rt.redirect.len) extra.push_back(rt.redirect);
  extra.insert(extra.end(), rt.hooks.begin(), rt.hooks.end());
  if (!rt.island.bytes.empty()) {
    w.grow_segment(rt.island.segment, rt.island.grown);
    for (size_t at = 0; at < rt.island.bytes.size(); at += sizeof elf::Patch::bytes) {
      elf::Patch& p = extra.emplace_back();
      p.offset = rt.island.offset + at;
      p.len = static_cast<u8>(std::min(sizeof p.bytes, rt.island.bytes.size() - at));
      std::memcpy(p.bytes, rt.island.bytes.data() + at, p.len);
    }
    res.messages.push_back(elf.name() + ": sites beyond their call's reach of the shim call it through a branch island at vaddr " +
                           hex(rt.island.vaddr) + " (" + std::to_string(rt.island.bytes.size()) + " bytes after the text)");
  }
  // Where the listed islands went: the first eight addresses.
  const auto at_vaddrs = [](const std::vector<u64>& v) {
    std::string s = " at vaddr";
    for (size_t i = 0; i < v.size() && i < 8; i++) s += (i ? ", " : " ") + hex(v[i]);
    return v.size() > 8 ? s + " and " + std::to_string(v.size() - 8) + " more" : s;
  };
  if (!rt.stub_islands.empty()) {
    extra.insert(extra.end(), rt.stub_islands.begin(), rt.stub_islands.end());
    const u64 n = rt.stub_island_addrs.size();
    res.messages.push_back(elf.name() + ": -pg sites beyond their call's reach of the shim call it through " + std::to_string(n) + " branch island" +
                           (n == 1 ? "" : "s") +
                           " over the PLT entries and linker stubs their calls went through," + at_vaddrs(rt.stub_island_addrs));
  }
  if (!rt.entry_islands.empty()) {
    extra.insert(extra.end(), rt.entry_islands.begin(), rt.entry_islands.end());
    const u64 n = rt.entry_island_addrs.size();
    res.messages.push_back(elf.name() + ": patchable sites beyond their call's reach of the shim call it through " + std::to_string(n) +
                           " branch island" + (n == 1 ? "" : "s") + " over the nops before a function's entry," + at_vaddrs(rt.entry_island_addrs));
  }
  if (!rt.low_island_addrs.empty()) {
    const u64 n = rt.low_island_addrs.size();
    const bool wraps = rt.low_island_addrs.front() >> 63;  // a PIE's: below address 0
    const bool is_shared = rt.entry == 0;  // (a shared object keeps its entry)
    const u64 lower = rt.low_island_addrs.front() / shim::low_islands_page * shim::low_islands_page - rt.low_islands_lowest;
    const std::string how_far = lower >= (u64{1} << 20) ? std::to_string(lower >> 20) + " MiB" : std::to_string(lower >> 10) + " KiB";
    const std::string when = is_shared ? "when the object is loaded" : "when the program starts";
    // (the shim's start: those sites trap; ARM32's ARM-state ones, whose island is fentry's slot, stay off)
    const bool arm_state = machine == EM_ARM && rt.low_island_of[0], others = rt.low_island_of[1] || rt.low_island_of[2];
    const std::string none = !arm_state ? "the sites that need it trap when enabled"
                             : others   ? "the sites that need it trap when enabled, its ARM-state ones stay off"
                                        : "its sites stay off";
    res.messages.push_back(elf.name() + ": sites that reach neither the shim nor room for an island in the binary call it through " + std::to_string(n) +
                           " branch island" + (n == 1 ? "" : "s") + " on a page the shim maps below the " +
                           (is_shared ? "shared object's" : "executable's") + " lowest segment at start," + at_vaddrs(rt.low_island_addrs) +
                           (wraps ? " (below address 0, where the load address is added)" : "") +
                           (lower ? "; where that page is taken " + when + ", the first free one up to " + how_far + " lower, and where none is, " + none
                                  : "; where that page is taken " + when + ", " + none));
  }
  if (!rt.trap_sites.empty()) {
    const u64 n = rt.trap_sites.size();
    res.messages.push_back(elf.name() + ": " + std::to_string(n) + (n == 1 ? " site reaches" : " sites reach") +
                           " neither the shim nor room for a branch island: enabled, each holds the ISA's trap, which the shim resolves as "
                           "the call (a signal per call, and a thread that blocks SIGTRAP when it calls one is killed: README, \"Trap sites\"),"
                           + at_vaddrs(rt.trap_sites));
  }
  if (d.gmon_start)
    if (auto p = gprof_off_patch(elf, d.gmon_start, d.gmon_start_other)) extra.push_back(*p);
  std::sort(extra.begin(), extra.end(), [](const elf::Patch& a, const elf::Patch& b) { return a.offset < b.offset; });

  // Sites are in address order; where the file keeps that order (every linker's layout), the writer
  // takes the patches as a stream, else as a list sorted by file offset.
  SitePatches sites(elf, d.sites, rt);
  MergedPatches patches(sites, extra);
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
