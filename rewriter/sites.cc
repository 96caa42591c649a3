#include "rewriter/sites.h"

#include <algorithm>
#include <unordered_map>

#include "elf/layout.h"

namespace prepatch {

namespace {

using arch::X86_64;

// How far into a function the symbol scan looks for a -pg call: clang puts it after the whole
// prologue (register saves, argument moves), gcc right after push %rbp; mov %rsp,%rbp.
constexpr unsigned prologue_scan_bytes = 96;

std::optional<SiteKind> tracer_kind(std::string_view name) {
  name = name.substr(0, name.find('@'));  // strip symbol versions: __fentry__@GLIBC_2.13
  if (name == "__fentry__") return SiteKind::fentry;
  if (name == "mcount" || name == "_mcount" || name == "__mcount") return SiteKind::mcount;
  return std::nullopt;
}

// Sorts functions by address, globals before locals at equal addresses (a local's `name` carries
// `local_bit` until the sort is done), in O(n): an LSD radix sort, stable, one pass per key byte that
// varies. Symbol tables are not in address order (ld writes locals per file, then globals), and with
// 100k functions a comparison sort was the single largest cost of preparing.
constexpr u32 local_bit = 1u << 31;

void sort_funcs(std::vector<Func>& fs) {
  std::vector<Func> tmp(fs.size());
  auto pass = [&](auto digit, size_t buckets) {
    std::vector<size_t> count(buckets + 1);
    for (const Func& f : fs) count[digit(f) + 1]++;
    for (size_t i = 0; i < buckets; i++) count[i + 1] += count[i];
    for (const Func& f : fs) tmp[count[digit(f)]++] = f;
    fs.swap(tmp);
  };
  pass([](const Func& f) { return size_t{(f.name & local_bit) != 0}; }, 2);
  u64 varying = 0;
  for (const Func& f : fs) varying |= f.addr ^ fs.front().addr;
  for (unsigned shift = 0; shift < 64; shift += 8)
    if ((varying >> shift) & 0xff) pass([shift](const Func& f) { return size_t((f.addr >> shift) & 0xff); }, 256);
}

class Discoverer {
 public:
  explicit Discoverer(const elf::Elf& elf) : elf_(elf) {}
  Discovery run();

 private:
  void load_funcs();
  void find_tracer_entries();
  std::vector<u64> record(const elf::Section& s) const;
  void add_mcount_loc(u64 addr);
  void add_patchable(u64 addr);
  void scan_symbols();
  void finish();
  const elf::Segment* segment(u64 addr, u64 len) const;
  bool executable(u64 addr, u64 len) const;
  std::span<const u8> code(u64 addr, u64 len) const;
  u64 code_size(u64 addr) const;
  std::optional<SiteKind> classify_call(const arch::Call& c) const;
  const Func* func_at_or_after(u64 addr, u64 within) const;

  const elf::Elf& elf_;
  Discovery d_;
  std::unordered_map<u64, SiteKind> direct_;  // callee address -> kind (symbols and PLT stubs)
  std::unordered_map<u64, SiteKind> slots_;   // pointer slot address -> kind (GOT)
  const elf::Section* loaded_ = nullptr;       // the symbol table funcs came from
  mutable const elf::Segment* last_ = nullptr;  // segment() cache
};

Discovery Discoverer::run() {
  const elf::Header& h = elf_.header();
  if (h.machine != X86_64::e_machine)
    elf_.fail(elf::layout_for(elf_.codec().is64).ehdr.machine.off,
              std::string(elf::machine_name(h.machine)) + " not supported yet (e_machine " + std::to_string(h.machine) + "; supported: EM_X86_64)");
  if (h.type != ET_EXEC && h.type != ET_DYN)
    elf_.fail(elf::layout_for(elf_.codec().is64).ehdr.type.off, "expected an executable or shared object (ET_EXEC or ET_DYN), found e_type " + std::to_string(h.type));
  load_funcs();
  find_tracer_entries();
  if (const elf::Section* s = elf_.section("__mcount_loc")) {
    d_.has_records = true;
    for (u64 a : record(*s)) add_mcount_loc(a);
  }
  if (const elf::Section* s = elf_.section("__patchable_function_entries")) {
    d_.has_records = true;
    for (u64 a : record(*s)) add_patchable(a);
  }
  scan_symbols();
  finish();
  return std::move(d_);
}

void Discoverer::load_funcs() {
  const elf::Section* tab = elf_.symtab();
  if (!tab) tab = elf_.dynsym();
  loaded_ = tab;
  if (!tab) return;
  d_.names = elf_.section_data(elf_.sections()[tab->link]);
  const u64 n = elf_.symbol_count(*tab);
  std::vector<Func>& fs = d_.funcs;
  fs.reserve(n);
  for (u64 i = 0; i < n; i++) {
    elf::Symbol s = elf_.symbol(*tab, i);
    if (s.shndx == SHN_UNDEF || s.value == 0) continue;
    if (s.type == STT_FUNC || s.type == STT_NOTYPE)
      if (auto k = tracer_kind(s.name)) direct_[s.value] = *k;
    if (s.type != STT_FUNC) continue;
    auto name_off = static_cast<u32>(s.name.data() - reinterpret_cast<const char*>(d_.names.data()));
    if (name_off & local_bit) continue;  // a 2 GiB string table: not from a real linker
    auto size = static_cast<u32>(std::min<u64>(s.size, UINT32_MAX));
    fs.push_back(Func{s.value, size, name_off | (s.bind == STB_LOCAL ? local_bit : 0)});
  }
  auto before = [](const Func& a, const Func& b) { return a.addr != b.addr ? a.addr < b.addr : (a.name & local_bit) < (b.name & local_bit); };
  if (!std::is_sorted(fs.begin(), fs.end(), before)) sort_funcs(fs);
  // One function per address, the global name first; then drop the sort key.
  fs.erase(std::unique(fs.begin(), fs.end(), [](const Func& a, const Func& b) { return a.addr == b.addr; }), fs.end());
  for (Func& f : fs) f.name &= ~local_bit;
  d_.has_symbols = !d_.funcs.empty();
}

// mcount/__fentry__ can be reached three ways: directly (static binaries, where ld may also relax
// `call *GOT` into `addr32 call`), through a PLT stub (non-PIE), or through a GOT slot (PIE, `ff 15`).
void Discoverer::find_tracer_entries() {
  for (const elf::Section* tab : {elf_.symtab(), elf_.dynsym()}) {
    if (!tab || tab == loaded_) continue;  // load_funcs() has seen that table's tracer symbols
    const u64 n = elf_.symbol_count(*tab);
    for (u64 i = 0; i < n; i++) {
      elf::Symbol s = elf_.symbol(*tab, i);
      if (s.shndx == SHN_UNDEF || s.value == 0 || (s.type != STT_FUNC && s.type != STT_NOTYPE)) continue;
      if (auto k = tracer_kind(s.name)) direct_[s.value] = *k;
    }
  }
  for (const elf::Section& rel : elf_.sections()) {
    if (rel.type != SHT_RELA && rel.type != SHT_REL) continue;
    if (!(rel.flags & SHF_ALLOC)) continue;  // only dynamic relocations describe final slots
    const elf::Section& symtab = elf_.sections()[rel.link];
    bool has_syms = symtab.type == SHT_DYNSYM || symtab.type == SHT_SYMTAB;
    const u64 n = elf_.reloc_count(rel);
    for (u64 i = 0; i < n; i++) {
      elf::Reloc r = elf_.reloc(rel, i);
      if (r.type == R_X86_64_RELATIVE) {  // static-pie: a GOT slot holding a defined tracer's address
        if (direct_.empty()) continue;
        if (auto it = direct_.find(static_cast<u64>(r.addend)); it != direct_.end()) slots_[r.offset] = it->second;
      } else if (has_syms && r.sym != 0 && r.sym < elf_.symbol_count(symtab)) {
        if (auto k = tracer_kind(elf_.symbol(symtab, r.sym).name)) slots_[r.offset] = *k;
      }
    }
  }
  for (const elf::Section& s : elf_.sections()) {
    if (s.name != ".plt" && s.name != ".plt.sec" && s.name != ".plt.got") continue;
    auto b = elf_.section_data(s);
    for (u64 at = 0; at + 6 <= b.size(); at += 8)
      if (auto slot = arch::plt_slot(b.subspan(at, std::min<u64>(16, b.size() - at)), s.addr + at))
        if (auto it = slots_.find(*slot); it != slots_.end()) direct_[s.addr + at] = it->second;
  }
}

// A record section holds one pointer per site. In a PIE the linker also emits an R_X86_64_RELATIVE
// for each; ld writes the value into the section as well, but where a value is 0 the addend is used.
std::vector<u64> Discoverer::record(const elf::Section& s) const {
  const unsigned w = elf_.codec().word();
  auto b = elf_.section_data(s);
  std::vector<u64> out;
  out.reserve(b.size() / w);
  std::unordered_map<u64, i64> addends;
  for (u64 at = 0; at + w <= b.size(); at += w) {
    u64 v = elf_.codec().get(b, at, w);
    if (v == 0 && addends.empty()) {
      for (const elf::Section& rel : elf_.sections())
        if (rel.type == SHT_RELA && (rel.flags & SHF_ALLOC))
          for (u64 i = 0, n = elf_.reloc_count(rel); i < n; i++) {
            elf::Reloc r = elf_.reloc(rel, i);
            if (r.type == R_X86_64_RELATIVE && r.offset >= s.addr && r.offset < s.addr + s.size) addends[r.offset] = r.addend;
          }
      if (addends.empty()) addends[0] = 0;  // looked once, found none
    }
    if (v == 0)
      if (auto it = addends.find(s.addr + at); it != addends.end()) v = static_cast<u64>(it->second);
    if (v != 0) out.push_back(v);  // 0: the function was discarded by the linker
  }
  return out;
}

const elf::Segment* Discoverer::segment(u64 addr, u64 len) const {
  // Sites cluster in one text segment: try the last hit before searching.
  if (last_ && addr >= last_->vaddr && addr - last_->vaddr <= last_->filesz && len <= last_->filesz - (addr - last_->vaddr)) return last_;
  const elf::Segment* s = elf_.load_segment_for(addr, len);
  if (s) last_ = s;
  return s;
}

bool Discoverer::executable(u64 addr, u64 len) const {
  const elf::Segment* s = segment(addr, len);
  return s && (s->flags & PF_X);
}

u64 Discoverer::code_size(u64 addr) const {
  const elf::Segment* s = segment(addr, 1);
  return s ? s->vaddr + s->filesz - addr : 0;
}

std::span<const u8> Discoverer::code(u64 addr, u64 len) const {
  const elf::Segment* s = segment(addr, len);
  if (!s) return {};
  return elf_.bytes().subspan(s->offset + (addr - s->vaddr), len);
}

std::optional<SiteKind> Discoverer::classify_call(const arch::Call& c) const {
  const auto& m = c.indirect ? slots_ : direct_;
  if (auto it = m.find(c.target); it != m.end()) return it->second;
  return std::nullopt;
}

const Func* Discoverer::func_at_or_after(u64 addr, u64 within) const {
  auto it = std::lower_bound(d_.funcs.begin(), d_.funcs.end(), addr, [](const Func& f, u64 a) { return f.addr < a; });
  if (it == d_.funcs.end() || it->addr > addr + within) return nullptr;
  return &*it;
}

void Discoverer::add_mcount_loc(u64 addr) {
  Site s(addr, SiteKind::fentry, Source::mcount_loc);
  if (!executable(addr, 1)) {
    s.set_skip(Skip::not_in_text);
    d_.sites.push_back(s);
    return;
  }
  auto b = code(addr, std::min<u64>(X86_64::max_insn, code_size(addr)));
  if (auto c = arch::match_call(b, addr)) {
    s.len = c->len;
    if (auto k = classify_call(*c)) s.kind = *k;
    else s.set_skip(Skip::not_tracer_call);
  } else if (unsigned n = arch::nop_length(b); n == 5 || n == 6) {
    // -mnop-mcount: the site is a nop already; at the entry (or after endbr64) it is an fentry site.
    s.len = n;
    const Func* f = d_.func_at(addr);
    bool entry = f && (f->addr == addr || (f->addr + 4 == addr && arch::is_endbr64(code(f->addr, 4))));
    s.kind = entry ? SiteKind::fentry : SiteKind::mcount;
  } else {
    s.set_skip(Skip::unrecognized);
  }
  d_.sites.push_back(s);
}

// A pad is M nops before the function symbol and N-M after it (after endbr64 when there is one); gcc
// emits one-byte nops, clang multi-byte ones. The site is the part that runs on entry.
void Discoverer::add_patchable(u64 addr) {
  Site s(addr, SiteKind::patchable, Source::patchable_entries);
  if (!executable(addr, 1)) {
    s.set_skip(Skip::not_in_text);
    d_.sites.push_back(s);
    return;
  }
  auto pad_code = code(addr, std::min<u64>(64, code_size(addr)));
  u64 entry = addr;
  const Func* inside = d_.func_at(addr);
  if (const Func* f = inside ? nullptr : func_at_or_after(addr, 32); f && f->addr > addr) {
    for (u64 at = 0; at < f->addr - addr;) {  // the M bytes before the symbol must be nops
      unsigned n = arch::nop_length(pad_code.subspan(at));
      if (n == 0 || at + n > f->addr - addr) {
        s.set_skip(Skip::unrecognized);
        d_.sites.push_back(s);
        return;
      }
      at += n;
    }
    entry = f->addr;
  }
  if (arch::is_endbr64(pad_code.subspan(entry - addr))) entry += 4;
  auto pad = pad_code.subspan(entry - addr);
  u64 len = 0;
  if (!pad.empty() && pad[0] == 0x90) {
    while (len < pad.size() && pad[len] == 0x90) len++;
  } else {
    while (len < 5)  // multi-byte nops: as many as make up one call's length
      if (unsigned n = arch::nop_length(pad.subspan(len))) len += n;
      else break;
  }
  s.addr = entry;
  if (len < 5) {
    s.len = static_cast<u8>(len);
    s.set_skip(len == 0 ? Skip::unrecognized : Skip::pad_too_short);
  } else {
    s.len = len == 6 ? 6 : 5;
    s.pad_rest = static_cast<u8>(len - s.len);
  }
  d_.sites.push_back(s);
}

void Discoverer::scan_symbols() {
  if (direct_.empty() && slots_.empty()) return;  // nothing to call: no -pg code in this binary
  std::vector<u64> covered;  // sites from records, which the scan must not find again
  covered.reserve(d_.sites.size());
  for (const Site& s : d_.sites) covered.push_back(s.addr);
  std::sort(covered.begin(), covered.end());
  d_.sites.reserve(d_.sites.size() + d_.funcs.size());
  for (const Func& f : d_.funcs) {
    u64 end = f.addr + std::max<u64>(f.size, 1);
    auto it = std::lower_bound(covered.begin(), covered.end(), f.addr);
    if (it != covered.end() && *it < end) continue;  // a record already names this function's site
    if (!executable(f.addr, 1)) continue;
    u64 limit = std::min<u64>({f.size ? f.size : prologue_scan_bytes, prologue_scan_bytes, code_size(f.addr)});
    auto fcode = code(f.addr, limit);
    std::optional<arch::ScannedCall> sc;
    if (auto c = arch::match_call(fcode, f.addr)) sc = arch::ScannedCall{f.addr, *c};  // fast path: -mfentry
    else if (arch::is_endbr64(fcode) && (c = arch::match_call(fcode.subspan(4), f.addr + 4))) sc = arch::ScannedCall{f.addr + 4, *c};
    else sc = arch::scan_prologue_for_call(fcode, f.addr, limit);
    if (!sc) continue;
    auto k = classify_call(sc->call);
    if (!k) continue;  // an ordinary call early in the function: not a site
    Site& s = d_.sites.emplace_back(sc->addr, *k, Source::symbols);
    s.func = static_cast<u32>(&f - d_.funcs.data());
    s.len = static_cast<u8>(sc->call.len);
  }
}

void Discoverer::finish() {
  auto& v = d_.sites;
  auto by_addr = [](const Site& a, const Site& b) { return a.addr < b.addr; };
  if (!std::is_sorted(v.begin(), v.end(), by_addr)) std::stable_sort(v.begin(), v.end(), by_addr);
  v.erase(std::unique(v.begin(), v.end(), [](const Site& a, const Site& b) { return a.addr == b.addr; }), v.end());
  u64 end = 0;
  for (Site& s : v) {
    if (s.source() != Source::symbols) {  // the scan knows its function already
      const Func* f = d_.func_at(s.addr);
      s.func = f ? static_cast<u32>(f - d_.funcs.data()) : UINT32_MAX;
    }
    if (!s.prepared()) continue;
    if (s.addr < end) {
      s.set_skip(Skip::overlaps);
      continue;
    }
    end = s.addr + s.len + s.pad_rest;
  }
}

}  // namespace

std::string_view source_name(Source s) {
  switch (s) {
    case Source::mcount_loc: return "__mcount_loc";
    case Source::patchable_entries: return "__patchable_function_entries";
    case Source::symbols: return "symbols";
  }
  return "?";
}

std::string_view skip_reason(Skip s) {
  switch (s) {
    case Skip::none: return "";
    case Skip::not_in_text: return "address is not in an executable, file-backed segment";
    case Skip::unrecognized: return "expected a call to mcount/__fentry__ or a nop of 5 or 6 bytes";
    case Skip::not_tracer_call: return "expected a call to mcount/__fentry__, found a call elsewhere";
    case Skip::pad_too_short: return "patchable pad is shorter than a 5-byte call";
    case Skip::overlaps: return "overlaps the site before it";
  }
  return "?";
}

std::string_view Discovery::func_name(const Site& s) const {
  if (s.func >= funcs.size()) return {};
  return {reinterpret_cast<const char*>(names.data()) + funcs[s.func].name};
}

const Func* Discovery::func_at(u64 addr) const {
  auto it = std::upper_bound(funcs.begin(), funcs.end(), addr, [](u64 a, const Func& f) { return a < f.addr; });
  if (it == funcs.begin()) return nullptr;
  --it;
  if (addr >= it->addr + std::max<u64>(it->size, 1)) return nullptr;
  return &*it;
}

Discovery discover(const elf::Elf& elf) { return Discoverer(elf).run(); }

}  // namespace prepatch
