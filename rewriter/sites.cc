#include "rewriter/sites.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <type_traits>
#include <unordered_map>

#include "arch/aarch64.h"
#include "arch/isa.h"
#include "arch/ppc64le.h"
#include "arch/riscv64.h"
#include "arch/thumb2.h"
#include "elf/layout.h"
#include "elf/mapped_file.h"
#include "rewriter/gprof.h"
#include "shim/abi.h"

namespace prepatch {

namespace {

using arch::X86_64;

// How far into a function the symbol scan looks for a -pg call: clang puts it after the whole
// prologue (register saves, argument moves), gcc right after push %rbp; mov %rsp,%rbp. AArch64 and
// PPC64le gcc put it after the frame setup and the moves of arguments to callee-saved registers.
constexpr unsigned prologue_scan_bytes = 96;
constexpr unsigned word_prologue_scan_bytes = 128;

std::optional<SiteKind> tracer_kind(std::string_view name) {
  name = name.substr(0, name.find('@'));  // strip symbol versions: __fentry__@GLIBC_2.13
  if (name == "__fentry__") return SiteKind::fentry;
  if (name == "mcount" || name == "_mcount" || name == "__mcount" || name == "__gnu_mcount_nc") return SiteKind::mcount;
  return std::nullopt;
}

// The same for a NUL-terminated name, without measuring names that cannot match (most C++ names
// start with _Z): with 100k symbols, measuring every name was a visible cost.
std::optional<SiteKind> tracer_kind(const char* name) {
  if (name[0] != 'm' && !(name[0] == '_' && (name[1] == '_' || name[1] == 'm'))) return std::nullopt;
  return tracer_kind(std::string_view(name));
}

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

// A function symbol, 16 bytes: one per STT_FUNC symbol, sorted by address, for the scan (which reads
// the code in address order) and for naming record sites (func_at).
constexpr u32 local_bit = 1u << 31;  // STB_LOCAL: where a global symbol shares the address, it sorts first
constexpr u32 arm_bit = 1u << 30;    // ARM32: an ARM-state function (no Thumb bit), which the scan skips
struct Func {
  u64 addr;  // without the Thumb bit
  u32 size;  // st_size, at most 4 GiB - 1
  u32 name;  // st_name (0 where it is past 1 GiB), with local_bit and arm_bit
  u32 name_off() const { return name & ~(local_bit | arm_bit); }
  bool local() const { return name & local_bit; }
};

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

// Where mcount/__fentry__ can be called: callee addresses (direct calls) or pointer slots (GOT),
// each with the kind of site calling it means. Few entries; sorted for binary search.
class Targets {
 public:
  void add(u64 addr, SiteKind k) { v_.push_back({addr, k}); }
  void seal() {
    std::sort(v_.begin(), v_.end(), [](const Entry& a, const Entry& b) { return a.addr < b.addr; });
    v_.erase(std::unique(v_.begin(), v_.end(), [](const Entry& a, const Entry& b) { return a.addr == b.addr; }), v_.end());
  }
  std::optional<SiteKind> find(u64 addr) const {
    if (v_.size() <= 4) {  // the usual one or two: asked once per function
      for (const Entry& e : v_)
        if (e.addr == addr) return e.kind;
      return std::nullopt;
    }
    auto it = std::lower_bound(v_.begin(), v_.end(), addr, [](const Entry& e, u64 a) { return e.addr < a; });
    if (it == v_.end() || it->addr != addr) return std::nullopt;
    return it->kind;
  }
  bool empty() const { return v_.empty(); }

 private:
  struct Entry {
    u64 addr;
    SiteKind kind;
  };
  std::vector<Entry> v_;
};

class Discoverer {
 public:
  explicit Discoverer(const elf::Elf& elf) : elf_(elf) {}
  // AArch64 and PPC64le: every instruction an aligned 32-bit word, one word toggled per site.
  bool word_isa() const { return isa_ == arch::Isa::aarch64 || isa_ == arch::Isa::ppc64le; }
  bool riscv() const { return isa_ == arch::Isa::riscv64; }
  bool thumb() const { return isa_ == arch::Isa::thumb2; }
  // ARM32: a code symbol's address without its Thumb bit.
  u64 code_addr(u64 value) const { return thumb() ? value & ~u64{1} : value; }
  Discovery run();

 private:
  template <class F>
  void for_each_code_symbol(const elf::Section& tab, F f) const;
  void read_symbols();
  void find_tracer_slots();
  std::vector<u64> record(const elf::Section& s) const;
  void add_mcount_loc(u64 addr);
  void add_patchable(u64 addr);
  void add_patchable_word(u64 addr);
  void add_patchable_riscv(u64 addr);
  bool riscv_nops(u64 from, u64 to) const;
  void scan_symbols();
  void scan_x86_function(const Func& f, std::span<const u8> rest);
  void scan_word_function(const Func& f);
  void scan_riscv_function(const Func& f);
  void scan_thumb_function(const Func& f);
  Site& add_symbol_site(u64 addr, SiteKind kind, unsigned len, const Func& f);
  bool word(u64 addr, u32& w) const;
  void finish();
  // A site's name: the symbol's own name offset (Discovery::strings is its string table), or 0 where
  // the name lies past the table's last NUL.
  u32 name_of(u32 name_offset) const { return name_offset < d_.strings.size() ? name_offset : 0; }
  void push_record_site(Site s) {  // named after the function containing it
    const Func* f = func_at(s.addr);
    s.name = f ? name_of(f->name_off()) : 0;
    d_.sites.push_back(s);
  }
  const elf::Segment* segment(u64 addr, u64 len) const { return cursor_.find(addr, len); }
  bool executable(u64 addr, u64 len) const;
  std::span<const u8> code(u64 addr, u64 len) const;
  u64 code_size(u64 addr) const;
  std::optional<SiteKind> classify_call(const arch::Call& c) const;
  const Func* func_at(u64 addr) const;  // the function containing addr
  const Func* func_at_or_after(u64 addr, u64 within) const;

  const elf::Elf& elf_;
  arch::Isa isa_ = arch::Isa::x86_64;
  Discovery d_;
  const elf::Section* functions_ = nullptr;  // the symbol table functions come from: .symtab, else .dynsym
  Bulk<Func> funcs_;                         // sorted by address, the global one first at an address;
                                             // with record sections one per address (func_at)
  Targets direct_;                           // callee address -> kind (tracer symbols and PLT stubs)
  Targets slots_;                            // pointer slot address -> kind (GOT)
  mutable elf::SegmentCursor cursor_{elf_};
};

Discovery Discoverer::run() {
  const elf::Header& h = elf_.header();
  const bool le64 = elf_.codec().is64 && elf_.codec().little;
  const bool le32 = !elf_.codec().is64 && elf_.codec().little;
  if (h.machine == X86_64::e_machine && le64) isa_ = arch::Isa::x86_64;
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
  functions_ = elf_.symtab() ? elf_.symtab() : elf_.dynsym();
  const FunctionNames names = function_names(elf_);
  d_.strings = names.strings;
  d_.strings_section = names.section;
  const elf::Section* mcount_loc = elf_.section("__mcount_loc");
  const elf::Section* patchable = elf_.section("__patchable_function_entries");
  d_.has_records = mcount_loc || patchable;
  read_symbols();
  find_tracer_slots();
  if (mcount_loc && isa_ == arch::Isa::x86_64)  // gcc's -mrecord-mcount is x86's
    for (u64 a : record(*mcount_loc)) add_mcount_loc(a);
  if (patchable)
    for (u64 a : record(*patchable)) {
      if (thumb()) {  // not supported yet: listed, skipped
        Site s(a & ~u64{1}, SiteKind::patchable, Source::patchable_entries);
        s.len = 4;
        s.set_skip(Skip::unsupported_form);
        push_record_site(s);
      } else {
        word_isa() ? add_patchable_word(a) : riscv() ? add_patchable_riscv(a) : add_patchable(a);
      }
    }
  scan_symbols();
  Bulk<Func>().swap(funcs_);  // its huge pages go to BulkAllocator's cache, for the table
  finish();
  return std::move(d_);
}

// Calls f(symbol, name) for each defined STT_FUNC or STT_NOTYPE symbol with a value, `name` pointing
// at its NUL-terminated name. In a string table that ends with a NUL every offset inside it starts a
// terminated string, so names need no search for their end; otherwise each one is checked (and a bad
// one reported, naming the field).
template <class F>
void Discoverer::for_each_code_symbol(const elf::Section& tab, F f) const {
  auto strings = elf_.section_data(elf_.symbol_strings(tab));
  const auto* names = reinterpret_cast<const char*>(strings.data());
  const bool terminated = !strings.empty() && strings.back() == 0;
  const u64 n = elf_.symbol_count(tab);
  for (u64 i = 0; i < n; i++) {
    elf::Symbol s = elf_.symbol_fields(tab, i);
    if (s.shndx == SHN_UNDEF || s.value == 0 || (s.type != STT_FUNC && s.type != STT_NOTYPE)) continue;
    if (!terminated || s.name_offset >= strings.size()) elf_.symbol(tab, i);  // throws
    f(s, names + s.name_offset);
  }
}

// The one read of the symbol tables: the function list (funcs_, sorted), the tracers a symbol
// defines, and what the shim wants to know (the unwinder's entry points, fork). Symbol tables are in
// no address order (ld writes the locals file by file, then the globals in hash order), so the scan
// reads code in the sorted order instead: front to back, not a cache miss per function.
void Discoverer::read_symbols() {
  if (functions_) {
    funcs_.reserve(elf_.symbol_count(*functions_));
    prefault(elf_.section_data(*functions_));
    prefault(elf_.section_data(elf_.symbol_strings(*functions_)));
  }
  for (const elf::Section* tab : {elf_.symtab(), elf_.dynsym()}) {
    if (!tab) continue;
    for_each_code_symbol(*tab, [&](const elf::Symbol& s, const char* name) {
      if (auto k = tracer_kind(name)) {
        direct_.add(code_addr(s.value), *k);
        // PPC64 ELFv2: a direct call enters at the local entry point, after the TOC setup.
        if (isa_ == arch::Isa::ppc64le) direct_.add(s.value + arch::ppc64le::local_entry_offset(s.other), *k);
      }
      // PPC64: ld's call stubs to shared objects are symbols `NNNNNNNN.plt_call.NAME` (NOTYPE).
      if (isa_ == arch::Isa::ppc64le && s.type == STT_NOTYPE && name[0] >= '0' && name[0] <= '9')
        if (const char* stub = std::strstr(name, ".plt_call.")) {
          if (auto k = tracer_kind(std::string_view(stub + 10))) direct_.add(s.value, *k);
        }
      if (tab == functions_ && s.type == STT_FUNC) {
        d_.has_symbols = true;
        const u32 flags = (s.bind == STB_LOCAL ? local_bit : 0) | (thumb() && !(s.value & 1) ? arm_bit : 0);
        funcs_.push_back(Func{code_addr(s.value), static_cast<u32>(std::min<u64>(s.size, UINT32_MAX)),
                              (s.name_offset < arm_bit ? s.name_offset : 0) | flags});
      }
      if (const int k = unwinder_index(name); k >= 0 && s.type == STT_FUNC) d_.unwinder[k] = s.value;
      if (is_fork(name)) d_.defines_fork = true;
      if (s.type == STT_FUNC && name[0] == '_' && name[1] == '_' && name[2] == 'g' && std::strcmp(name, gmon_start_name) == 0)
        d_.gmon_start = s.value, d_.gmon_start_other = s.other;
    });
  }
  d_.has_symtab = elf_.symtab() != nullptr;
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
        if (auto k = tracer_kind(elf_.symbol(symtab, r.sym).name)) slots_.add(r.offset, *k);
      }
    }
  }
  slots_.seal();
  for (const elf::Section& s : elf_.sections()) {
    if (s.name != ".plt" && s.name != ".plt.sec" && s.name != ".plt.got") continue;
    auto b = elf_.section_data(s);
    if (isa_ == arch::Isa::aarch64) {  // 16-byte entries after a 32-byte header
      for (u64 at = 0; at + 16 <= b.size(); at += 16)
        if (auto slot = arch::aarch64_plt_slot(b.subspan(at, 16), s.addr + at))
          if (auto k = slots_.find(*slot)) direct_.add(s.addr + at, *k);
      continue;
    }
    // ARM-state entries of 3 or 4 words after a 20-byte header: any word may start one. An entry that
    // Thumb code calls with `bl` starts with a Thumb stub, `bx pc` and a halfword, which `bl` targets.
    if (thumb()) {
      for (u64 at = 0; at + 12 <= b.size(); at += 4)
        if (auto slot = arch::arm_plt_slot(b.subspan(at, std::min<u64>(16, b.size() - at)), s.addr + at))
          if (auto k = slots_.find(*slot)) {
            direct_.add(s.addr + at, *k);
            if (at >= 4 && (b[at - 4] | b[at - 3] << 8) == arch::thumb2::bx_pc) direct_.add(s.addr + at - 4, *k);
          }
      continue;
    }
    if (riscv()) {  // 16-byte entries after a 32-byte header: auipc t3; ld t3; jalr t1, t3; nop
      for (u64 at = 32; at + 16 <= b.size(); at += 16) {
        const u32 auipc = static_cast<u32>(elf_.codec().get(b, at, 4)), ld = static_cast<u32>(elf_.codec().get(b, at + 4, 4));
        if (!arch::riscv64::is_auipc(auipc) || !arch::riscv64::is_ld(ld) || arch::riscv64::rs1_of(ld) != arch::riscv64::rd_of(auipc)) continue;
        const u64 slot = s.addr + at + static_cast<u64>(arch::riscv64::u_imm(auipc) + arch::riscv64::i_imm(ld));
        if (auto k = slots_.find(slot)) direct_.add(s.addr + at, *k);
      }
      continue;
    }
    if (word_isa()) continue;  // PPC64's call stubs are named by symbols (above)
    for (u64 at = 0; at + 6 <= b.size(); at += 8)
      if (auto slot = arch::plt_slot(b.subspan(at, std::min<u64>(16, b.size() - at)), s.addr + at))
        if (auto k = slots_.find(*slot)) direct_.add(s.addr + at, *k);
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

bool Discoverer::executable(u64 addr, u64 len) const {
  const elf::Segment* s = segment(addr, len);
  return s && (s->flags & PF_X);
}

u64 Discoverer::code_size(u64 addr) const {
  const elf::Segment* s = segment(addr, 1);
  return s ? s->vaddr + s->filesz - addr : 0;
}

std::span<const u8> Discoverer::code(u64 addr, u64 len) const { return cursor_.bytes(addr, len); }

std::optional<SiteKind> Discoverer::classify_call(const arch::Call& c) const { return (c.indirect ? slots_ : direct_).find(c.target); }

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

void Discoverer::add_mcount_loc(u64 addr) {
  Site s(addr, SiteKind::fentry, Source::mcount_loc);
  if (!executable(addr, 1)) {
    s.set_skip(Skip::not_in_text);
    push_record_site(s);
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
    const Func* f = func_at(addr);
    bool entry = f && (f->addr == addr || (f->addr + 4 == addr && arch::is_endbr64(code(f->addr, 4))));
    s.kind = entry ? SiteKind::fentry : SiteKind::mcount;
  } else {
    s.set_skip(Skip::unrecognized);
  }
  push_record_site(s);
}

bool Discoverer::word(u64 addr, u32& w) const {
  auto b = code(addr, 4);
  if (b.size() != 4) return false;
  w = static_cast<u32>(elf_.codec().get(b, 0, 4));
  return true;
}

// AArch64 and PPC64le: a pad is M nop words before the function symbol and N-M after it (after a
// `bti` landing pad on AArch64). As the kernel does, the first nop at the entry becomes the context
// that hands the trampoline the return address (`mov x9, x30`; `mflr r0`), permanently, and the second
// is the site, toggled between nop and `bl`. gcc 12 for PPC64le puts the pad at the global entry,
// before the TOC setup, so calls from inside the binary (to the local entry point) never run it: such
// sites are skipped, saying so.
void Discoverer::add_patchable_word(u64 addr) {
  Site s(addr, SiteKind::patchable, Source::patchable_entries);
  s.len = 4;
  u32 w = 0;
  if (addr % 4 != 0 || !executable(addr, 8)) {
    s.set_skip(Skip::not_in_text);
    return push_record_site(s);
  }
  const u32 nop = arch::nop_word(elf_.header().machine);
  u64 entry = addr;
  const Func* inside = func_at(addr);
  if (const Func* f = inside ? nullptr : func_at_or_after(addr, 64); f && f->addr > addr) {
    for (u64 at = addr; at < f->addr; at += 4)  // the M words before the symbol must be nops
      if (!word(at, w) || w != nop) {
        s.set_skip(Skip::unrecognized);
        return push_record_site(s);
      }
    entry = f->addr;
  }
  if (isa_ == arch::Isa::aarch64 && word(entry, w) && (w == arch::aarch64::bti_c || w == arch::aarch64::bti_jc)) entry += 4;
  s.addr = entry + 4;
  // Prepared already (`prepatch sites` on an output): the context word, then the site, nop or `bl`.
  if (u32 site = 0; word(entry, w) && w == arch::patchable_context_word(elf_.header().machine) && word(entry + 4, site) && (site == nop || arch::bl_target(isa_, code(entry + 4, 4), entry + 4)))
    return push_record_site(s);
  u64 nops = 0;
  while (nops < 16 && word(entry + 4 * nops, w) && w == nop) nops++;
  if (nops < 2) {
    s.addr = entry;
    s.set_skip(nops == 0 ? Skip::unrecognized : Skip::pad_too_short);
    return push_record_site(s);
  }
  const Func* f = func_at(entry);
  if (isa_ == arch::Isa::ppc64le && f && f->addr == entry && word(entry + 4 * nops, w) && arch::ppc64le::is_toc_setup(w))
    s.set_skip(Skip::before_local_entry);
  push_record_site(s);
}

// Whether [from, to) holds only RISC-V nops: c.nop halfwords, or 4-byte nops (no C extension).
bool Discoverer::riscv_nops(u64 from, u64 to) const {
  for (u64 at = from; at < to;) {
    u32 w = 0;
    auto h = code(at, 2);
    if (h.size() == 2 && (h[0] | h[1] << 8) == arch::riscv64::c_nop) at += 2;
    else if (at + 4 <= to && word(at, w) && w == arch::riscv64::nop) at += 4;
    else return false;
  }
  return true;
}

// RISC-V -fpatchable-function-entry=N[,M]: N nops (c.nop halfwords with the C extension), M of them
// before the function symbol. As the kernel does, 8 bytes at the entry become a call: a permanent
// `auipc t0, hi`, written when preparing, then the site, toggled between nop and `jalr t0, lo(t0)`
// (t0: the return address, so ra keeps the function's). With the C extension the entry may be only
// 2-byte aligned; where the pad has 2 bytes to spare the pair moves up by a c.nop so the site is
// 4-byte aligned, which lets one aligned store switch it (arch/plan.h plan_for). Nops after it stay.
void Discoverer::add_patchable_riscv(u64 addr) {
  namespace rv = arch::riscv64;
  Site s(addr, SiteKind::patchable, Source::patchable_entries);
  s.len = 4;
  if (addr % 2 != 0 || !executable(addr, 8)) {
    s.set_skip(Skip::not_in_text);
    return push_record_site(s);
  }
  u64 entry = addr;
  if (const Func* f = func_at(addr) ? nullptr : func_at_or_after(addr, 64); f && f->addr > addr) {
    if (!riscv_nops(addr, f->addr)) {
      s.set_skip(Skip::unrecognized);
      return push_record_site(s);
    }
    entry = f->addr;
  }
  // Prepared already (`prepatch sites` on an output): [c.nop,] auipc t0, then the site, nop or jalr t0.
  for (u64 at : {entry, entry + 2}) {
    u32 auipc = 0, site = 0;
    if (at == entry + 2 && !riscv_nops(entry, at)) break;
    if (word(at, auipc) && rv::is_auipc(auipc) && rv::rd_of(auipc) == rv::t0 && word(at + 4, site) &&
        (site == rv::nop || rv::is_jalr_via(site, rv::t0))) {
      s.addr = at + 4;
      return push_record_site(s);
    }
  }
  u64 pad = 0;  // nop bytes from the entry
  while (pad < 64)
    if (riscv_nops(entry + pad, entry + pad + 2)) pad += 2;
    else if (riscv_nops(entry + pad, entry + pad + 4)) pad += 4;
    else break;
  if (pad < 8) {
    s.addr = entry;
    s.set_skip(pad == 0 ? Skip::unrecognized : Skip::pad_too_short);
    return push_record_site(s);
  }
  const u64 shift = entry % 4 == 2 && pad >= 10 ? 2 : 0;
  s.addr = entry + shift + 4;
  push_record_site(s);
}

// A pad is M nops before the function symbol and N-M after it (after endbr64 when there is one); gcc
// emits one-byte nops, clang multi-byte ones. The site is the part that runs on entry.
void Discoverer::add_patchable(u64 addr) {
  Site s(addr, SiteKind::patchable, Source::patchable_entries);
  if (!executable(addr, 1)) {
    s.set_skip(Skip::not_in_text);
    push_record_site(s);
    return;
  }
  auto pad_code = code(addr, std::min<u64>(64, code_size(addr)));
  u64 entry = addr;
  const Func* inside = func_at(addr);
  if (const Func* f = inside ? nullptr : func_at_or_after(addr, 32); f && f->addr > addr) {
    for (u64 at = 0; at < f->addr - addr;) {  // the M bytes before the symbol must be nops
      unsigned n = arch::nop_length(pad_code.subspan(at));
      if (n == 0 || at + n > f->addr - addr) {
        s.set_skip(Skip::unrecognized);
        push_record_site(s);
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
  push_record_site(s);
}

// Functions are scanned in address order (funcs_), so their code is read front to back and their
// sites come out sorted. Of two symbols at one address (aliases) the global one, sorted first, is
// scanned. A function without a size (st_size 0: crtstuff's frame_dummy, hand-written assembly) is
// scanned up to the next function, whose site it would otherwise claim.
void Discoverer::scan_symbols() {
  if (direct_.empty() && slots_.empty()) return;  // nothing to call: no -pg code in this binary
  std::vector<u64> covered;  // sites from records, which the scan must not find again
  covered.reserve(d_.sites.size());
  for (const Site& s : d_.sites) covered.push_back(s.addr);
  std::sort(covered.begin(), covered.end());
  d_.sites.reserve(d_.sites.size() + funcs_.size());
  for (const elf::Segment& s : elf_.segments())
    if (s.type == PT_LOAD && (s.flags & PF_X)) prefault(elf_.bytes().subspan(s.offset, s.filesz));
  for (size_t i = 0, next = 0; i < funcs_.size(); i++) {
    if (i > 0 && funcs_[i].addr == funcs_[i - 1].addr) continue;
    Func f = funcs_[i];
    if (f.size == 0) {
      while (next < funcs_.size() && funcs_[next].addr <= f.addr) next++;
      if (next < funcs_.size()) f.size = static_cast<u32>(std::min<u64>(funcs_[next].addr - f.addr, UINT32_MAX));
    }
    if (!covered.empty()) {
      u64 end = f.addr + std::max<u64>(f.size, 1);
      auto it = std::lower_bound(covered.begin(), covered.end(), f.addr);
      if (it != covered.end() && *it < end) continue;  // a record already names this function's site
    }
    const elf::Segment* seg = segment(f.addr, 1);
    if (!seg || !(seg->flags & PF_X)) continue;
    if (thumb()) scan_thumb_function(f);
    else if (word_isa()) scan_word_function(f);
    else if (riscv()) scan_riscv_function(f);
    else scan_x86_function(f, elf_.bytes().subspan(seg->offset + (f.addr - seg->vaddr), seg->vaddr + seg->filesz - f.addr));
  }
}

// x86-64: the call to mcount/__fentry__ at the entry (-mfentry), after an endbr64, or after the
// frame setup (-pg): the first call of the prologue. `rest`: the file bytes from the function's
// start to the end of its segment.
void Discoverer::scan_x86_function(const Func& f, std::span<const u8> rest) {
  const u64 limit = std::min<u64>({f.size ? f.size : prologue_scan_bytes, prologue_scan_bytes, rest.size()});
  auto fcode = rest.first(limit);
  std::optional<arch::ScannedCall> sc;
  if (auto c = arch::match_call(fcode, f.addr)) sc = arch::ScannedCall{f.addr, *c};  // fast path: -mfentry
  else if (arch::is_endbr64(fcode) && (c = arch::match_call(fcode.subspan(4), f.addr + 4))) sc = arch::ScannedCall{f.addr + 4, *c};
  else sc = arch::scan_prologue_for_call(fcode, f.addr, limit);
  if (!sc) return;
  auto k = classify_call(sc->call);
  if (!k) return;  // an ordinary call early in the function: not a site
  add_symbol_site(sc->addr, *k, sc->call.len, f);
}

// AArch64 and PPC64le gcc -pg: the first `bl` of the prologue, when it calls _mcount, is the site
// (toggled between `bl` and nop). What hands _mcount its argument stays: AArch64's `mov x0, x30` before
// it (the scheduler may move other instructions in between), PPC64le's `mflr r0` (and `std r0,
// 16(r1)`) earlier in the prologue. Without it the call is not the form gcc emits, and is skipped.
void Discoverer::scan_word_function(const Func& f) {
  const u64 limit = std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, code_size(f.addr)});
  bool context = false;  // seen: AArch64 `mov x0, x30`, PPC64le `mflr r0`
  u32 w = 0;
  for (u64 at = f.addr; at + 4 <= f.addr + limit && word(at, w); at += 4) {
    context |= w == (isa_ == arch::Isa::aarch64 ? arch::aarch64::mov_x0_x30 : arch::ppc64le::mflr_r0);
    if (!(isa_ == arch::Isa::aarch64 ? arch::aarch64::bl_opcode(w) : arch::ppc64le::bl_opcode(w))) continue;
    const auto target = arch::bl_target(isa_, code(at, 4), at);  // Capstone
    if (!target) continue;
    auto k = direct_.find(*target);
    if (!k) return;  // the first call is an ordinary one: no -pg site
    Site& s = add_symbol_site(at, SiteKind::mcount, 4, f);
    if (!context) s.set_skip(Skip::no_context);
    // PPC64le: a call through ld's stub is followed by `ld r2, 24(r1)`, reloading the TOC pointer the
    // stub saved; it becomes a nop with the call (the trampoline keeps r2 itself).
    if (u32 next = 0; isa_ == arch::Isa::ppc64le && word(at + 4, next) && next == arch::ppc64le::ld_r2_24_r1) s.pad_rest = 4;
    return;
  }
}

Site& Discoverer::add_symbol_site(u64 addr, SiteKind kind, unsigned len, const Func& f) {
  Site& s = d_.sites.emplace_back(addr, kind, Source::symbols);
  s.len = static_cast<u8>(len);
  s.set_local(f.local());
  s.name = name_of(f.name_off());
  return s;
}

// RISC-V gcc -pg: after the frame setup, `mv a0, ra` (the function's return address, _mcount's
// argument), then `call _mcount`, which ld relaxes to `jal ra, T` where T (the PLT entry, or _mcount
// in a static binary) is within 1 MiB, else leaves as `auipc ra, hi; jalr ra, lo(ra)`. The site is the
// jal or the jalr, toggled with a nop; the auipc stays (it only sets ra, which the call clobbers
// anyway). The call keeps its target T, which the preparer turns into a jump to the shim
// (Discovery::mcount_via), so no site needs to reach the shim itself.
void Discoverer::scan_riscv_function(const Func& f) {
  namespace rv = arch::riscv64;
  const u64 end = f.addr + std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, code_size(f.addr)});
  bool context = false;  // seen: mv a0, ra
  u64 auipc_at = 0, auipc_value = 0;
  for (u64 at = f.addr; at + 2 <= end;) {
    auto h = code(at, 2);
    if (h.size() != 2) return;
    if (rv::insn_length(static_cast<u16>(h[0] | h[1] << 8)) == 2) {
      const u16 c = static_cast<u16>(h[0] | h[1] << 8);
      context |= c == rv::c_mv_a0_ra;
      if ((c & 0xf07f) == 0x9002 && (c & 0x0f80)) return;  // c.jalr: an indirect call comes first
      at += 2;
      continue;
    }
    u32 w = 0;
    if (at + 4 > end || !word(at, w)) return;
    context |= w == rv::addi_a0_ra;
    std::optional<u64> target;
    if (rv::is_jal(w) && rv::rd_of(w) == rv::ra) target = at + static_cast<u64>(rv::j_imm(w));
    else if (rv::is_jalr_via(w, rv::ra) && auipc_at + 4 == at) target = auipc_value + static_cast<u64>(rv::i_imm(w));
    else if (rv::is_jalr(w) && rv::rd_of(w) == rv::ra) return;  // an indirect call comes first
    if (rv::is_auipc(w) && rv::rd_of(w) == rv::ra) auipc_at = at, auipc_value = at + static_cast<u64>(rv::u_imm(w));
    if (target) {
      if (!direct_.find(*target)) return;  // the first call is an ordinary one: no -pg site
      Site& s = add_symbol_site(at, SiteKind::mcount, 4, f);
      if (!context) s.set_skip(Skip::no_context);
      else if (d_.mcount_via && d_.mcount_via != *target) s.set_skip(Skip::not_tracer_call);  // one entry per binary
      else d_.mcount_via = *target;
      return;
    }
    at += 4;
  }
}

// ARM32 Thumb-2 gcc -pg: after the function's own pushes, `push {lr}` and then the 32-bit `bl
// __gnu_mcount_nc` (static: a Thumb callee) or `blx` to its ARM-state PLT entry, often on a 2-byte
// boundary. The site is that call, toggled between a Thumb `bl` to the shim and `pop {lr}` (`ldr.w lr,
// [sp], #4`: __gnu_mcount_nc pops what was pushed, so the off form must too); the push stays. ARM-state
// functions (symbol without the Thumb bit: -marm) are not scanned.
void Discoverer::scan_thumb_function(const Func& f) {
  namespace t2 = arch::thumb2;
  if (f.name & arm_bit) return;
  const u64 start = f.addr;
  const u64 end = start + std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, code_size(start)});
  u16 before = 0;  // the instruction before, when 16-bit
  for (u64 at = start; at + 2 <= end;) {
    auto h = code(at, 2);
    if (h.size() != 2) return;
    const u16 first = static_cast<u16>(h[0] | h[1] << 8);
    if (!t2::is_32bit(first)) {
      before = first;
      at += 2;
      continue;
    }
    if (at + 4 > end) return;
    auto b = code(at, 4);
    if (b.size() != 4) return;
    if (t2::is_bl_or_blx(first, static_cast<u16>(b[2] | b[3] << 8))) {
      const auto target = arch::bl_target(isa_, b, at);  // Capstone
      if (!target || !direct_.find(*target)) return;    // the first call is an ordinary one: no -pg site
      Site& s = add_symbol_site(at, SiteKind::mcount, 4, f);
      if (before != t2::push_lr) s.set_skip(Skip::no_context);
      return;
    }
    before = 0;
    at += 4;
  }
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
    case Skip::pad_too_short: return "patchable pad is shorter than the call it must hold (5 bytes on x86-64, 8 on RISC-V)";
    case Skip::overlaps: return "overlaps the site before it";
    case Skip::no_context:
      return "expected what hands _mcount its argument before the call: `mov x0, x30` (AArch64), `mflr r0` (PPC64le), `mv a0, ra` (RISC-V), "
             "or `push {lr}` right before it (Thumb-2)";
    case Skip::before_local_entry:
      return "patchable pad before the ELFv2 local entry point, which calls from inside the binary enter at (gcc 12's placement); "
             "build with -pg instead";
    case Skip::unsupported_form: return "Thumb-2 -fpatchable-function-entry pads are not supported yet; build with -pg instead";
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

Discovery discover(const elf::Elf& elf) { return Discoverer(elf).run(); }

// The names' string table is the function symbols' own, up to its last NUL (every name the scan
// accepts ends by then), when it starts with the empty name as the ELF specification has it.
FunctionNames function_names(const elf::Elf& elf) {
  static constexpr char no_names[] = "";
  const elf::Section* functions = elf.symtab() ? elf.symtab() : elf.dynsym();
  if (!functions) return {std::span<const char>(no_names, 1), 0};
  const elf::Section& names = elf.symbol_strings(*functions);
  auto b = elf.section_data(names);
  if (b.empty() || b[0] != 0) return {std::span<const char>(no_names, 1), 0};
  // The table's strings_size is 32 bits: names past 4 GiB get none.
  const auto* last = static_cast<const u8*>(::memrchr(b.data(), 0, std::min<u64>(b.size(), UINT32_MAX)));
  return {std::span<const char>(reinterpret_cast<const char*>(b.data()), static_cast<size_t>(last - b.data()) + 1), names.index};
}

}  // namespace prepatch
