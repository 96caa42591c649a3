#include "rewriter/sites.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <type_traits>
#include <unordered_map>

#include "arch/isa.h"
#include "arch/ppc64le.h"
#include "elf/layout.h"
#include "elf/mapped_file.h"
#include "rewriter/discoverer.h"
#include "rewriter/gprof.h"
#include "shim/abi.h"

namespace prepatch {
namespace discovery {

std::optional<SiteKind> tracer_kind(std::string_view name) {
  name = name.substr(0, name.find('@'));  // strip symbol versions: __fentry__@GLIBC_2.13
  if (name == "__fentry__") return SiteKind::fentry;
  if (name == "mcount" || name == "_mcount" || name == "__mcount" || name == "__gnu_mcount_nc") return SiteKind::mcount;
  return std::nullopt;
}

std::optional<SiteKind> tracer_kind(const char* name) {
  if (name[0] != 'm' && !(name[0] == '_' && (name[1] == '_' || name[1] == 'm'))) return std::nullopt;
  return tracer_kind(std::string_view(name));
}

namespace {

// Which of the unwinder's entry points (shim::unwinder_names) `name` is, or -1; names are measured only
// when they start as one does.
int unwinder_index(const char* name) {
  if (name[0] != '_' || (name[1] != 'U' && !(name[1] == '_' && name[2] == 'c'))) return -1;
  for (int k = 0; k < 4; k++)
    if (std::strcmp(name, shim::unwinder_names[k]) == 0) return k;
  return -1;
}

// Whether `name` is fork or _Fork, compared inline: calling strcmp for every name that starts with
// `f` cost ~0.5 ms with 100k functions named f1, f2, ... Each `&&` stops at the name's NUL.
bool is_fork(const char* n) {
  if (n[0] == '_' && n[1] == 'F') return n[2] == 'o' && n[3] == 'r' && n[4] == 'k' && n[5] == 0;
  return n[0] == 'f' && n[1] == 'o' && n[2] == 'r' && n[3] == 'k' && n[4] == 0;
}

// Stable sort of `v` by key(x) < 2^bits in O(n): an LSD radix sort of at most 12 bits per pass (the
// counts stay in L1), the bits shared evenly between the passes, so keys under 2^24 take two passes.
// One read counts the digits of every pass. Symbol tables are not in address order (ld writes locals
// per file, then globals in hash order), and with 100k functions a comparison sort was the single
// largest cost of preparing. Every pass over 100k sites costs ~0.2-0.4 ms here (1.6 MB, more than L2).
template <class T, class Key>
void radix_sort(std::span<T> v, Key key, unsigned bits) {
  static_assert(std::is_trivially_copyable_v<T>);
  const unsigned passes = std::max(1u, (bits + 11) / 12);
  const unsigned digit_bits = (bits + passes - 1) / passes;
  const size_t buckets = size_t{1} << digit_bits;
  // Scratch space is overwritten before it is read: no need to zero it. Its huge pages go back to
  // BulkAllocator's cache afterwards, for the next large array (the table).
  Bulk<T> tmp(v.size());
  T* from = v.data();
  T* to = tmp.data();
  std::vector<u32> counts(buckets * passes);  // 16 KiB a pass: v has fewer than 2^32 elements (sort_by_address)
  for (size_t i = 0; i < v.size(); i++) {
    const u64 k = key(from[i]);
    for (unsigned p = 0; p < passes; p++) counts[p * buckets + ((k >> (p * digit_bits)) & (buckets - 1))]++;
  }
  for (unsigned p = 0; p < passes; p++) {
    std::span<u32> count(counts.data() + p * buckets, buckets);
    u32 sum = 0;
    for (u32& c : count) sum += std::exchange(c, sum);
    const unsigned shift = p * digit_bits;
    for (size_t i = 0; i < v.size(); i++) to[count[(key(from[i]) >> shift) & (buckets - 1)]++] = from[i];
    std::swap(from, to);
  }
  if (from != v.data()) std::memcpy(v.data(), from, v.size() * sizeof(T));
}

// Sorts by address, then with `local(x)` false before true, unless already in that order.
template <class V, class Local>
void sort_by_address(V& v, Local local) {
  using T = typename V::value_type;
  auto before = [&](const T& a, const T& b) { return a.addr != b.addr ? a.addr < b.addr : local(a) < local(b); };
  if (v.empty()) return;
  u64 lo = UINT64_MAX, hi = 0;
  bool sorted = true;
  for (size_t i = 0; i < v.size(); i++) {  // one read: whether sorted, and the range
    lo = std::min(lo, v[i].addr);
    hi = std::max(hi, v[i].addr);
    sorted &= i == 0 || !before(v[i], v[i - 1]);
  }
  if (sorted) return;
  const unsigned bits = std::bit_width(hi - lo) + 1;
  if (bits > 64 || v.size() >= (u64{1} << 32)) return std::stable_sort(v.begin(), v.end(), before);  // not from a linker
  radix_sort(std::span<T>(v), [lo, &local](const T& x) { return ((x.addr - lo) << 1) | u64{local(x)}; }, bits);
}

}  // namespace

void Targets::seal() {
  std::sort(v_.begin(), v_.end(), [](const Entry& a, const Entry& b) { return a.addr < b.addr; });
  v_.erase(std::unique(v_.begin(), v_.end(), [](const Entry& a, const Entry& b) { return a.addr == b.addr; }), v_.end());
}

std::optional<SiteKind> Targets::find(u64 addr) const {
  if (v_.size() <= 4) {  // the usual one or two: asked once per function
    for (const Entry& e : v_)
      if (e.addr == addr) return e.kind;
    return std::nullopt;
  }
  auto it = std::lower_bound(v_.begin(), v_.end(), addr, [](const Entry& e, u64 a) { return e.addr < a; });
  if (it == v_.end() || it->addr != addr) return std::nullopt;
  return it->kind;
}

// Each ISA's discovery (rewriter/sites_<isa>.cc).
const IsaSites& sites_for(arch::Isa isa) {
  switch (isa) {
    case arch::Isa::x86_64: return x86_64_sites();
    case arch::Isa::aarch64: return aarch64_sites();
    case arch::Isa::ppc64le: return ppc64le_sites();
    case arch::Isa::riscv64: return riscv64_sites();
    case arch::Isa::thumb2: return thumb2_sites();
  }
  return x86_64_sites();
}

Discovery Discoverer::run() {
  const elf::Header& h = elf_.header();
  const bool le64 = elf_.codec().is64 && elf_.codec().little;
  const bool le32 = !elf_.codec().is64 && elf_.codec().little;
  if (h.machine == arch::X86_64::e_machine && le64) isa_ = arch::Isa::x86_64;
  else if (h.machine == EM_AARCH64 && le64) isa_ = arch::Isa::aarch64;
  else if (h.machine == EM_PPC64 && le64) isa_ = arch::Isa::ppc64le;
  else if (h.machine == EM_RISCV && le64) isa_ = arch::Isa::riscv64;
  else if (h.machine == EM_ARM && le32) isa_ = arch::Isa::thumb2;
  else
    elf_.fail(elf::layout_for(elf_.codec().is64).ehdr.machine.off,
              std::string(elf::machine_name(h.machine)) + (h.machine == EM_ARM ? (le32 ? "" : " (not 32-bit little-endian)") : le64 ? "" : " (not 64-bit little-endian)") +
                  " not supported yet (e_machine " + std::to_string(h.machine) +
                  "; supported: EM_X86_64, EM_AARCH64, EM_PPC64, EM_RISCV, 64-bit little-endian; EM_ARM, 32-bit little-endian)");
  if (h.type != ET_EXEC && h.type != ET_DYN)
    elf_.fail(elf::layout_for(elf_.codec().is64).ehdr.type.off, "expected an executable or shared object (ET_EXEC or ET_DYN), found e_type " + std::to_string(h.type));
  sites_ = &sites_for(isa_);
  prepared_input_ = table_place(elf_).has_value();
  functions_ = syms_.symtab() ? syms_.symtab() : elf_.dynsym();
  functions_file_ = syms_.symtab() ? &syms_ : &elf_;
  const FunctionNames names = function_names(elf_, &syms_);
  d_.strings = names.strings;
  d_.strings_section = names.section;
  const elf::Section* mcount_loc = elf_.section("__mcount_loc");
  const elf::Section* patchable = elf_.section("__patchable_function_entries");
  d_.has_records = mcount_loc || patchable;
  read_symbols();
  find_tracer_slots();
  if (mcount_loc && sites_->reads_mcount_loc())
    for (u64 a : record(*mcount_loc)) sites_->mcount_loc(*this, a);
  if (patchable)
    for (u64 a : record(*patchable)) sites_->patchable(*this, a);
  if (!d_.has_symtab && !d_.has_records && isa_ != arch::Isa::thumb2 && !(direct_.empty() && slots_.empty())) add_unwind_functions();
  scan_symbols();
  if (patchable) note_padding(d_.has_symtab ? std::vector<u64>{} : record(*patchable));
  Bulk<Func>().swap(funcs_);  // its huge pages go to BulkAllocator's cache, for the table
  finish();
  return std::move(d_);
}

// Calls f(symbol, name) for each defined STT_FUNC or STT_NOTYPE symbol with a value, `name` pointing
// at its NUL-terminated name. In a string table that ends with a NUL every offset inside it starts a
// terminated string, so names need no search for their end; otherwise each one is checked (and a bad
// one reported, naming the field).
template <class F>
void Discoverer::for_each_code_symbol(const elf::Elf& file, const elf::Section& tab, F f) const {
  auto strings = file.section_data(file.symbol_strings(tab));
  const auto* names = reinterpret_cast<const char*>(strings.data());
  const bool terminated = !strings.empty() && strings.back() == 0;
  const u64 n = file.symbol_count(tab);
  for (u64 i = 0; i < n; i++) {
    elf::Symbol s = file.symbol_fields(tab, i);
    if (s.shndx == SHN_UNDEF || s.value == 0 || (s.type != STT_FUNC && s.type != STT_NOTYPE)) continue;
    if (!terminated || s.name_offset >= strings.size()) file.symbol(tab, i);  // throws
    f(s, names + s.name_offset);
  }
}

// The one read of the symbol tables: the function list (funcs_, sorted), the tracers a symbol
// defines, and what the shim wants to know (the unwinder's entry points, fork). Symbol tables are in
// no address order (ld writes the locals file by file, then the globals in hash order), so the scan
// reads code in the sorted order instead: front to back, not a cache miss per function.
void Discoverer::read_symbols() {
  if (functions_) {
    funcs_.reserve(functions_file_->symbol_count(*functions_));
    prefault(functions_file_->section_data(*functions_));
    prefault(functions_file_->section_data(functions_file_->symbol_strings(*functions_)));
  }
  for (const auto& table : {std::pair{&syms_, syms_.symtab()}, std::pair{&elf_, elf_.dynsym()}}) {
    const elf::Section* tab = table.second;  // (not a structured binding: the lambda below captures it)
    if (!tab) continue;
    for_each_code_symbol(*table.first, *tab, [&](const elf::Symbol& s, const char* name) {
      if (auto k = tracer_kind(name)) direct_.add(sites_->code_address(s.value), *k);
      sites_->symbol(*this, s, name);
      if (tab == functions_ && s.type == STT_FUNC) {
        d_.has_symbols = true;
        const u32 flags = (s.bind == STB_LOCAL ? local_bit : 0) | (sites_->other_state(s.value) ? other_bit : 0);
        funcs_.push_back(Func{sites_->code_address(s.value), static_cast<u32>(std::min<u64>(s.size, UINT32_MAX)),
                              (s.name_offset < other_bit ? s.name_offset : 0) | flags});
      }
      // (PPC64le: its local entry, which calls in the binary take; ARM32: a Thumb function's code, an
      // ARM-state one is not hooked)
      if (const int k = unwinder_index(name); k >= 0 && s.type == STT_FUNC && !sites_->other_state(s.value))
        d_.unwinder[k] = sites_->code_address(s.value) + (elf_.header().machine == EM_PPC64 ? arch::ppc64le::local_entry_offset(s.other) : 0);
      if (is_fork(name)) d_.defines_fork = true;
      if (s.type == STT_FUNC && name[0] == '_' && name[1] == '_' && name[2] == 'g' && std::strcmp(name, gmon_start_name) == 0)
        d_.gmon_start = s.value, d_.gmon_start_other = s.other;
    });
  }
  d_.has_symtab = syms_.symtab() != nullptr;
  direct_.seal();
  sort_by_address(funcs_, [](const Func& f) { return f.local(); });
  if (d_.has_records)  // func_at wants one per address: the global name
    funcs_.erase(std::unique(funcs_.begin(), funcs_.end(), [](const Func& a, const Func& b) { return a.addr == b.addr; }), funcs_.end());
}

// mcount/__fentry__ can be reached three ways: directly (static binaries, where ld may also relax
// `call *GOT` into `addr32 call`), through a PLT stub (non-PIE), or through a GOT slot (PIE, `ff 15`).
// read_symbols found the first; here the GOT slots (dynamic relocations) and the PLT stubs.
void Discoverer::find_tracer_slots() {
  // A PIE's dynamic relocations start with its R_X86_64_RELATIVE ones, DT_RELACOUNT of them (glibc's
  // loader relies on that count too). They matter only when the binary defines a tracer, so otherwise
  // they are not read: a program with a table of 100k function pointers has 100k of them.
  u64 relative_lead = 0, rela_addr = 0;
  for (const elf::Dyn& dyn : elf_.dynamic()) {
    if (dyn.tag == DT_RELACOUNT) relative_lead = dyn.val;
    if (dyn.tag == DT_RELA) rela_addr = dyn.val;
  }
  const u32 relative = elf::relative_reloc(elf_.header().machine);
  for (const elf::Section& rel : elf_.sections()) {
    if (rel.type != SHT_RELA && rel.type != SHT_REL) continue;
    if (!(rel.flags & SHF_ALLOC)) continue;  // only dynamic relocations describe final slots
    const elf::Section& symtab = elf_.sections()[rel.link];
    bool has_syms = symtab.type == SHT_DYNSYM || symtab.type == SHT_SYMTAB;
    const u64 n = elf_.reloc_count(rel);
    const u64 nsyms = has_syms ? elf_.symbol_count(symtab) : 0;
    const bool skip_lead = direct_.empty() && rel.type == SHT_RELA && rel.addr == rela_addr && rela_addr != 0;
    for (u64 i = skip_lead ? std::min(relative_lead, n) : 0; i < n; i++) {
      elf::Reloc r = elf_.reloc(rel, i);
      if (r.type == relative) {  // static-pie: a GOT slot holding a defined tracer's address
        if (direct_.empty()) continue;
        if (auto k = direct_.find(static_cast<u64>(r.addend))) slots_.add(r.offset, *k);
      } else if (r.sym != 0 && r.sym < nsyms) {
        const auto name = elf_.symbol(symtab, r.sym).name;
        if (auto k = tracer_kind(name)) slots_.add(r.offset, *k);
        else if (std::string_view(name) == "__monstartup") monstartup_slots_.push_back(r.offset);
      }
    }
  }
  slots_.seal();
  slots_.for_each([&](u64 slot, SiteKind k) {
    if (k == SiteKind::mcount) d_.mcount_slots.push_back(slot);
  });
  for (const elf::Section& s : elf_.sections()) {
    if (s.name != ".plt" && s.name != ".plt.sec" && s.name != ".plt.got") continue;
    sites_->plt(*this, s);
  }
  direct_.seal();
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
            if (r.type == elf::relative_reloc(elf_.header().machine) && r.offset >= s.addr && r.offset < s.addr + s.size) addends[r.offset] = r.addend;
          }
      if (addends.empty()) addends[0] = 0;  // looked once, found none
    }
    if (v == 0)
      if (auto it = addends.find(s.addr + at); it != addends.end()) v = static_cast<u64>(it->second);
    if (v != 0) out.push_back(v);  // 0: the function was discarded by the linker
  }
  return out;
}

const Func* Discoverer::func_at(u64 addr) const {
  auto it = std::upper_bound(funcs_.begin(), funcs_.end(), addr, [](u64 a, const Func& f) { return a < f.addr; });
  if (it == funcs_.begin()) return nullptr;
  --it;
  if (addr >= it->addr + std::max<u64>(it->size, 1)) return nullptr;
  return &*it;
}

const Func* Discoverer::func_at_or_after(u64 addr, u64 within) const {
  auto it = std::lower_bound(funcs_.begin(), funcs_.end(), addr, [](const Func& f, u64 a) { return f.addr < a; });
  if (it == funcs_.end() || it->addr > addr + within) return nullptr;
  return &*it;
}

namespace {

// The bytes of a DWARF pointer encoding's value (the `DW_EH_PE_*` format in its low bits; absptr: the
// address size `word`), 0 for a format not read here (uleb128, sleb128, omit).
u64 pointer_size(u8 enc, unsigned word) {
  return (enc & 0xf) == 0 ? word : (enc & 7) == 2 ? 2 : (enc & 7) == 3 ? 4 : (enc & 7) == 4 ? 8 : 0;
}

// The code range [start, end) of every FDE in .eh_frame `b` at `vaddr`, sorted by start: CIEs give
// the pointer encoding of their FDEs' first two fields ('R' in a "z" augmentation; else absolute), of
// which the usual ones are read (absolute, PC-relative; 2, 4 or 8 bytes; the second, the range's
// length, never relative). Stops at the terminator or at anything malformed.
std::vector<std::pair<u64, u64>> fde_ranges(const elf::Codec& c, std::span<const u8> b, u64 vaddr) {
  std::vector<std::pair<u64, u64>> ranges;
  std::vector<std::pair<u64, u8>> cies;  // offset -> pointer encoding, in file order
  const u64 n = b.size();
  const auto uleb = [&](u64& p) {
    u64 v = 0;
    for (unsigned shift = 0; p < n && shift < 64; shift += 7) {
      const u8 x = b[p++];
      v |= u64{x & 0x7fu} << shift;
      if (!(x & 0x80)) break;
    }
    return v;
  };
  const auto size = [&](u8 enc) { return pointer_size(enc, c.word()); };
  for (u64 at = 0; at + 4 <= n;) {
    u64 len = c.get(b, at, 4), idsize = 4;
    if (len == 0) break;
    if (len == 0xffff'ffff) {
      if (at + 12 > n) break;
      len = c.get(b, at + 4, 8), idsize = 8;
    }
    const u64 body = at + (idsize == 8 ? 12 : 4);
    if (len < idsize || len > n - body) break;
    const u64 end = body + len, id = c.get(b, body, static_cast<unsigned>(idsize));
    u64 p = body + idsize;
    if (id == 0) {  // a CIE: version, augmentation, alignments, return register, augmentation data
      u8 enc = 0;
      if (p >= end) break;
      const u8 version = b[p++];
      const u64 aug = p;
      while (p < end && b[p]) p++;
      const std::string_view a(reinterpret_cast<const char*>(b.data() + aug), p - aug);
      p++;
      uleb(p), uleb(p);  // code and data alignment (the latter signed: its bytes are skipped alike)
      if (version == 1) p++;
      else uleb(p);
      if (!a.empty() && a[0] == 'z') {
        uleb(p);
        for (char ch : a.substr(1)) {
          if (p >= end) break;
          if (ch == 'R') enc = b[p++];
          else if (ch == 'P') p += 1 + size(b[p]);
          else if (ch == 'L') p++;
          else if (ch != 'S' && ch != 'B') break;
        }
      }
      cies.emplace_back(at, enc);
    } else {  // an FDE: its CIE lies `id` bytes before the id field, then the function's start
      const u64 cie = body - id;
      const auto it = std::lower_bound(cies.begin(), cies.end(), cie, [](const std::pair<u64, u8>& e, u64 o) { return e.first < o; });
      if (id <= body && it != cies.end() && it->first == cie) {
        const u8 enc = it->second;
        const u64 w = size(enc);
        if (w && p + 2 * w <= end && ((enc & 0x70) == 0 || (enc & 0x70) == 0x10)) {
          u64 v = c.get(b, p, static_cast<unsigned>(w));
          if (enc & 8 && w < 8) v = static_cast<u64>(static_cast<i64>(v << (64 - 8 * w)) >> (64 - 8 * w));  // signed
          if ((enc & 0x70) == 0x10) v += vaddr + p;
          const u64 length = c.get(b, p + w, static_cast<unsigned>(w));
          if (v && length <= ~v) ranges.emplace_back(v, v + length);
        }
      }
    }
    at = end;
  }
  std::sort(ranges.begin(), ranges.end());
  return ranges;
}

// The FDEs of the .eh_frame section of `e`, as fde_ranges reads them; none without that section.
std::vector<std::pair<u64, u64>> fde_ranges(const elf::Elf& e) {
  for (const elf::Section& sec : e.sections())
    if (sec.name == ".eh_frame" && sec.has_file_data()) return fde_ranges(e.codec(), e.bytes_at(sec.addr, sec.size), sec.addr);
  return {};
}

}  // namespace

std::optional<u64> Discoverer::unwind_start_at_or_after(u64 addr, u64 within) const {
  if (!unwind_) {
    unwind_.emplace();
    const elf::Codec& c = elf_.codec();
    for (const elf::Segment& g : elf_.segments()) {
      if (g.type == 0x6474e550) {  // PT_GNU_EH_FRAME: version 1, three encodings, the .eh_frame pointer, the count
        const auto h = elf_.bytes_at(g.vaddr, g.filesz);
        // The pointer's and the count's size by their encodings' format (absptr: the address size);
        // only the table GNU ld writes is read: datarel sdata4 pairs (0x3b).
        if (h.size() < 4 || h[0] != 1 || h[3] != 0x3b || h[1] == 0xff || !pointer_size(h[1], c.word()) || !pointer_size(h[2], c.word())) continue;
        const u64 at = 4 + pointer_size(h[1], c.word()), n = pointer_size(h[2], c.word());
        if (h.size() < at + n) continue;
        const u64 count = c.get(h, at, static_cast<unsigned>(n)), room = (h.size() - at - n) / 8;
        unwind_ = UnwindIndex{h.subspan(at + n), std::min(count, room), g.vaddr, false};
        break;
      }
      if (g.type == 0x70000001 && elf_.header().machine == EM_ARM) {  // PT_ARM_EXIDX
        const auto t = elf_.bytes_at(g.vaddr, g.filesz);
        unwind_ = UnwindIndex{t, t.size() / 8, g.vaddr, true};
        break;
      }
    }
    if (!unwind_->count)
      for (const auto& [start, end] : fde_ranges(elf_)) unwind_->fdes.push_back(start);
  }
  const UnwindIndex& u = *unwind_;
  if (!u.count) {
    const auto it = std::lower_bound(u.fdes.begin(), u.fdes.end(), addr);
    if (it == u.fdes.end() || *it - addr > within) return std::nullopt;
    return *it;
  }
  const elf::Codec& c = elf_.codec();
  const auto start = [&](u64 i) -> u64 {
    const u64 w = c.get(u.table, 8 * i, 4);
    if (!u.exidx) return u.base + static_cast<u64>(static_cast<i64>(static_cast<i32>(w)));
    const i64 prel31 = static_cast<i64>(static_cast<i32>(static_cast<u32>(w << 1))) >> 1;  // bits 0-30, signed
    return (u.base + 8 * i + static_cast<u64>(prel31)) & 0xffff'fffe;  // without the Thumb bit
  };
  u64 lo = 0, hi = u.count;  // the first start at or after addr (the table is sorted)
  while (lo < hi) {
    const u64 mid = lo + (hi - lo) / 2;
    if (start(mid) < addr) lo = mid + 1;
    else hi = mid;
  }
  if (lo == u.count || start(lo) - addr > within) return std::nullopt;
  return start(lo);
}

// A stripped binary (no .symtab, its own nor a debug file's) names only the functions it exports
// (.dynsym): the symbol scan would miss every other -pg function. Its unwind table's FDEs (.eh_frame)
// know them all, as unnamed functions to scan (their sites are then called by their address): each
// covers a function from its first byte (gcc's .cfi_startproc; -pg puts no nops before it) or a part of
// one (a `.cold` part, whose first call is no -pg site). Only without records (__mcount_loc,
// __patchable_function_entries), which find their sites themselves. Not on ARM32, whose compilers
// write .ARM.exidx instead, and that not for C by default nor for C++ functions that cannot throw (ld
// merges them into the EXIDX_CANTUNWIND entries between), its entries not telling Thumb from ARM state.
// (RISC-V64's gcc writes FDEs only with -fasynchronous-unwind-tables.)
void Discoverer::add_unwind_functions() {
  const size_t named = funcs_.size();
  const std::vector<std::pair<u64, u64>> fdes = fde_ranges(elf_);
  for (const auto& [start, end] : fdes)
    funcs_.push_back(Func{sites_->code_address(start), static_cast<u32>(std::min<u64>(end - start, UINT32_MAX)), local_bit});
  d_.unwind_functions = funcs_.size() - named;
  sort_by_address(funcs_, [](const Func& f) { return f.local(); });  // a named one first at an address
  find_gmon_start(fdes);
}

// gprof's start-up (rewriter/gprof.h), which the preparer turns off, in a stripped -pg binary: no
// symbol names __gmon_start__, but it is the one function that calls __monstartup, a small one (gcrt1's
// takes 70-90 bytes). Where exactly one FDE of at most 512 bytes covers such a call, its start is
// taken for it (PPC64le: its local entry, after the TOC setup, which calls from inside the binary
// enter). Where no FDE does (RISC-V64's gcrt1 has none), the entries of .preinit_array, which that
// gcrt1 calls it from, are tried instead, each up to the next (128 bytes at most). Else, a program
// calling __monstartup itself too, gprof is left as it was (README, "gprof").
void Discoverer::find_gmon_start(const std::vector<std::pair<u64, u64>>& fdes) {
  if (d_.gmon_start || monstartup_slots_.empty()) return;
  u64 found = 0, callers = 0;
  const auto look = [&](u64 start, u64 end) {
    if (executable(start, end - start) && sites_->calls_through(*this, start, end, monstartup_slots_)) found = start, callers++;
  };
  for (const auto& [start, end] : fdes)
    if (end - start <= 512) look(start, end);
  if (const elf::Section* preinit = elf_.section(".preinit_array"); !callers && preinit) {
    std::vector<u64> entries = record(*preinit);
    std::sort(entries.begin(), entries.end());
    for (size_t i = 0; i < entries.size(); i++) look(entries[i], std::min(entries[i] + 128, i + 1 < entries.size() ? entries[i + 1] : ~u64{0}));
  }
  if (callers != 1) return;
  d_.gmon_start = found;
  if (u32 w = 0; isa_ == arch::Isa::ppc64le && word(found, w) && arch::ppc64le::is_toc_setup(w)) d_.gmon_start_other = 3 << 5;  // 8 bytes
}

// Prepares the symbol scan (for_each_unscanned) and has the ISA's file run it.
void Discoverer::scan_symbols() {
  if (direct_.empty() && slots_.empty()) return;  // nothing to call: no -pg code in this binary
  covered_.reserve(d_.sites.size());
  for (const Site& s : d_.sites) covered_.push_back(s.addr);
  std::sort(covered_.begin(), covered_.end());
  d_.sites.reserve(d_.sites.size() + funcs_.size());
  for (const elf::Segment& s : elf_.segments())
    if (s.type == PT_LOAD && (s.flags & PF_X)) prefault(elf_.bytes().subspan(s.offset, s.filesz));
  sites_->scan_all(*this);
  std::vector<u64>().swap(covered_);
}

// The alignment padding between functions (Discovery::pre_entry), where the ISA's patchable sites
// may call a branch island written over it: from the end of a function (past every function before
// it) to the start of the next, 8 to 256 bytes, every word the padding nop, in an executable segment.
// Nothing runs there: a function ends in a return or a jump, and compilers jump into no padding. Only
// where the segments span more than the call reaches (else no island is needed), and where it is
// known where every function ends:
// - with a .symtab, where every function is named and sized: from a symbol's end to the next symbol;
// - stripped, from the unwind table's FDEs (.eh_frame), each covering one function's code, or one
//   part of it: from an FDE's end to the next FDE's start or the next __patchable_function_entries
//   record `records` names, whichever comes first. gcc starts a function's FDE after the nops at its
//   entry, which run, and a record names the first of them. (With symbols, which name the entries,
//   `records` is empty: the nops before an entry never run.) Code no FDE covers (assembly written
//   without CFI) is not a run of nops, so no stretch takes it in.
void Discoverer::note_padding(std::vector<u64> records) {
  const IsaSites::Padding p = sites_->padding();
  if (!p.nop) return;
  u64 lo = ~u64{0}, hi = 0;
  for (const elf::Segment& g : elf_.segments())
    if (g.type == PT_LOAD) lo = std::min(lo, g.vaddr), hi = std::max(hi, g.vaddr + g.memsz);
  if (hi <= lo || hi - lo + (u64{16} << 20) < p.reach) return;  // (16 MiB: the shim after them)
  std::vector<std::pair<u64, u64>> code;  // [start, end) of each function, sorted by start
  if (d_.has_symtab) {
    code.reserve(funcs_.size());
    for (size_t i = 0; i < funcs_.size(); i++)  // (an unsized symbol: where its code ends is not known)
      code.emplace_back(funcs_[i].addr, funcs_[i].size || i + 1 == funcs_.size() ? funcs_[i].addr + funcs_[i].size : funcs_[i + 1].addr);
  } else {
    code = fde_ranges(elf_);
    std::sort(records.begin(), records.end());
  }
  u64 end = 0;  // the end of the functions so far
  for (size_t i = 0; i + 1 < code.size(); i++) {
    end = std::max(end, code[i].second);
    const u64 start = (end + 3) & ~u64{3};
    u64 next = code[i + 1].first;
    if (const auto r = std::lower_bound(records.begin(), records.end(), end); r != records.end()) next = std::min(next, *r);
    if (next <= start || next - start < 8 || next - start > 256 || !executable(start, next - start)) continue;
    bool nops = true;
    for (u64 at = start; nops && at < next; at += 4) {
      u32 w = 0;
      nops = word(at, w) && w == p.nop;
    }
    if (nops) d_.pre_entry.push_back({start, static_cast<u32>(next - start)});
  }
}

std::optional<u32> Discoverer::region(u64 target) const {
  for (const auto& [t, i] : region_of_)
    if (t == target) return i;
  return std::nullopt;
}

void Discoverer::mcount_region(u64 target, u64 start, u32 size, SiteKind kind) {
  u32 i = 0;
  while (i < regions_.size() && regions_[i].start != start) i++;
  if (i == regions_.size()) regions_.push_back({start, size, kind});
  region_of_.emplace_back(target, i);
}

std::optional<SiteKind> Discoverer::mcount_call(u64 target, bool other_state) {
  if (auto k = direct_.find(target)) return k;
  if (auto i = region(target)) return regions_[*i].kind;
  // A stub ld placed for a call beyond mcount's reach; what it jumps to is mcount, its PLT entry, or
  // (ld chains them) another such stub; for PPC64le's call stub in a stripped binary, the slot it loads
  // mcount's address from. (Reading a few words: asked again for each function whose first call is an
  // ordinary one, no cache is worth keeping.)
  if (auto st = sites_->stub(*this, target, other_state)) {
    const u64 dest = sites_->code_address(st->dest);
    const auto next = region(dest);
    auto k = direct_.find(dest);
    if (!k) k = slots_.find(dest);
    if (k || next) {
      mcount_region(target, st->start, st->size, k ? *k : regions_[*next].kind);
      regions_[region_of_.back().second].next = next.value_or(~u32{0});
      return k ? *k : regions_[*next].kind;
    }
  }
  return std::nullopt;
}

void Discoverer::note_mcount_call(u64 target, const Site& s, bool arm) {
  auto i = region(target);
  for (size_t n = 0; i && *i < regions_.size() && n < regions_.size(); i = regions_[*i].next, n++) {
    (s.prepared() ? regions_[*i].prepared : regions_[*i].skipped)++;
    regions_[*i].arm += s.prepared() && arm && n == 0 && target == regions_[*i].start;
    if (s.prepared()) break;  // a prepared site calls an island over the first; a skipped one runs them all
  }
}

void Discoverer::push_record_site(Site s) {
  const Func* f = func_at(s.addr);
  s.name = f ? name_of(f->name_off()) : 0;
  d_.sites.push_back(s);
}

Site& Discoverer::add_symbol_site(u64 addr, SiteKind kind, unsigned len, const Func& f) {
  Site& s = d_.sites.emplace_back(addr, kind, Source::symbols);
  s.len = static_cast<u8>(len);
  s.set_local(f.local());
  s.name = name_of(f.name_off());
  return s;
}

void Discoverer::finish() {
  auto& v = d_.sites;
  sort_by_address(v, [](const Site& s) { return s.local(); });  // already sorted without records
  // One read: drop the later sites at one address (aliases: the global name sorted first), mark the
  // ones overlapping the site before them, count the prepared ones.
  size_t kept = 0;
  u64 end = 0;
  d_.prepared = 0;
  for (size_t i = 0; i < v.size(); i++) {
    Site& s = v[i];
    if (kept > 0 && s.addr == v[kept - 1].addr) continue;
    if (s.prepared() && s.addr < end) s.set_skip(Skip::overlaps);
    if (s.prepared()) {
      end = s.addr + s.len + s.pad_rest;
      d_.prepared++;
    }
    if (kept++ != i) v[kept - 1] = s;
  }
  v.resize(kept);
  // The nops before entries, sorted; where a pad's lie within the padding before it, one stretch.
  auto& pre = d_.pre_entry;
  std::sort(pre.begin(), pre.end(), [](const Discovery::Stretch& a, const Discovery::Stretch& b) { return a.start < b.start; });
  size_t merged = 0;
  for (size_t i = 0; i < pre.size(); i++) {
    if (merged > 0 && pre[i].start <= pre[merged - 1].start + pre[merged - 1].size) {
      Discovery::Stretch& m = pre[merged - 1];
      m.size = static_cast<u32>(std::max<u64>(m.start + m.size, pre[i].start + pre[i].size) - m.start);
      continue;
    }
    pre[merged++] = pre[i];
  }
  pre.resize(merged);
  // The stretches only prepared sites enter, none overlapping another that a skipped one enters.
  std::sort(regions_.begin(), regions_.end(), [](const Region& a, const Region& b) { return a.start < b.start; });
  for (size_t i = 0; i < regions_.size(); i++) {
    const Region& r = regions_[i];
    const bool clear = (i == 0 || regions_[i - 1].start + regions_[i - 1].size <= r.start) &&
                       (i + 1 == regions_.size() || r.start + r.size <= regions_[i + 1].start);
    if (r.prepared && !r.skipped && clear) d_.mcount_stubs.push_back({r.start, r.size, r.arm == r.prepared});
  }
}

}  // namespace discovery

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
    case Skip::pad_too_short:
      return "patchable pad is shorter than the call it must hold (5 bytes on x86-64, 8 on RISC-V, 2 words on AArch64 and PPC64le, "
             "3 halfword nops on Thumb-2: `push {lr}` and a 32-bit `bl`)";
    case Skip::overlaps: return "overlaps the site before it";
    case Skip::no_context:
      return "expected what hands _mcount its argument before the call: `mov x0, x30` (AArch64), `mflr r0` (PPC64le), `mv a0, ra` (RISC-V), "
             "or `push {lr}` right before it (Thumb-2)";
    case Skip::before_local_entry:
      return "patchable pad before the ELFv2 local entry point, which calls from inside the binary enter at (gcc 12's placement); "
             "build with -pg instead";
    case Skip::unsupported_form: return "ARM-state (-marm) functions' patchable pads are not prepared (ip, which their site would need, may hold a nested "
                                         "function's static chain at the entry); build them as Thumb-2 (-mthumb), or with -pg";
  }
  return "?";
}

std::string_view Discovery::func_name(const Site& s) const {
  if (s.name == 0 || s.name >= strings.size()) return {};
  return {strings.data() + s.name};  // NUL-terminated: strings ends with a NUL
}

arch::CallForm call_form_of(const elf::Elf& elf, const Site& s) {
  const u16 m = elf.header().machine;
  if (m != EM_RISCV) return arch::call_form_for(m, s.len);
  auto b = elf.bytes_at(s.addr, 4);
  return arch::riscv_call_form(s.kind, b.size() == 4 ? static_cast<u32>(elf.codec().get(b, 0, 4)) : 0);
}

Discovery discover(const elf::Elf& elf, const elf::Elf* symbols) { return discovery::Discoverer(elf, symbols).run(); }

// The names' string table is the function symbols' own, up to its last NUL (every name the scan
// accepts ends by then), when it starts with the empty name as the ELF specification has it.
FunctionNames function_names(const elf::Elf& binary, const elf::Elf* symbols) {
  static constexpr char no_names[] = "";
  const elf::Elf& elf = symbols && symbols->symtab() ? *symbols : binary;
  const elf::Section* functions = elf.symtab() ? elf.symtab() : elf.dynsym();
  if (!functions) return {std::span<const char>(no_names, 1), 0};
  const elf::Section& names = elf.symbol_strings(*functions);
  auto b = elf.section_data(names);
  if (b.empty() || b[0] != 0) return {std::span<const char>(no_names, 1), 0};
  // The table's strings_size is 32 bits: names past 4 GiB get none.
  const auto* last = static_cast<const u8*>(::memrchr(b.data(), 0, std::min<u64>(b.size(), UINT32_MAX)));
  return {std::span<const char>(reinterpret_cast<const char*>(b.data()), static_cast<size_t>(last - b.data()) + 1), &elf == &binary ? names.index : 0};
}

}  // namespace prepatch
