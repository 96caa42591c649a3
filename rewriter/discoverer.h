// Inside site discovery (rewriter/sites.h): the discoverer every ISA shares (rewriter/sites.cc: the
// symbol tables, the tracers' GOT slots, the record sections, the scan in address order, the final
// sort) and the interface each ISA's file implements (rewriter/sites_<isa>.cc: what a site looks like
// there). Adding an ISA means adding its file and naming it in sites_for.
#pragma once
#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "arch/isa.h"
#include "elf/bulk.h"
#include "elf/elf.h"
#include "rewriter/sites.h"

namespace prepatch::discovery {

// How far into a function the symbol scan looks for a -pg call: clang puts it after the whole
// prologue (register saves, argument moves), gcc right after push %rbp; mov %rsp,%rbp. AArch64 and
// PPC64le gcc put it after the frame setup and the moves of arguments to callee-saved registers.
constexpr unsigned prologue_scan_bytes = 96;
constexpr unsigned word_prologue_scan_bytes = 128;

// mcount/__fentry__ by name (a symbol version stripped: __fentry__@GLIBC_2.13), or none.
std::optional<SiteKind> tracer_kind(std::string_view name);
// The same for a NUL-terminated name, without measuring names that cannot match (most C++ names
// start with _Z): with 100k symbols, measuring every name was a visible cost.
std::optional<SiteKind> tracer_kind(const char* name);

// A function symbol, 16 bytes: one per STT_FUNC symbol, sorted by address, for the scan (which reads
// the code in address order) and for naming record sites (func_at).
constexpr u32 local_bit = 1u << 31;  // STB_LOCAL: where a global symbol shares the address, it sorts first
constexpr u32 other_bit = 1u << 30;  // in an instruction set the scan skips (ARM32: ARM state, no Thumb bit)
struct Func {
  u64 addr;  // the code's address (IsaSites::code_address)
  u32 size;  // st_size, at most 4 GiB - 1
  u32 name;  // st_name (0 where it is past 1 GiB), with local_bit and other_bit
  u32 name_off() const { return name & ~(local_bit | other_bit); }
  bool local() const { return name & local_bit; }
};

// Where mcount/__fentry__ can be called: callee addresses (direct calls) or pointer slots (GOT),
// each with the kind of site calling it means. Few entries; sorted for binary search.
class Targets {
 public:
  void add(u64 addr, SiteKind k) { v_.push_back({addr, k}); }
  void seal();
  std::optional<SiteKind> find(u64 addr) const;
  bool empty() const { return v_.empty(); }
  template <class F>
  void for_each(F f) const {
    for (const Entry& e : v_) f(e.addr, e.kind);
  }

 private:
  struct Entry {
    u64 addr;
    SiteKind kind;
  };
  std::vector<Entry> v_;
};

class Discoverer;

// The unwind tables' sorted function starts (Discoverer::pad_entry reads them on first use):
// .eh_frame_hdr's search table (GNU ld's form: pairs of 32-bit offsets from the header), or ARM32's
// .ARM.exidx (pairs of prel31 words), else (a static binary whose linker wrote no .eh_frame_hdr) the
// FDEs of .eh_frame, read into `fdes`.
struct UnwindIndex {
  std::span<const u8> table;  // count entries of 8 bytes
  u64 count = 0;
  u64 base = 0;  // .eh_frame_hdr: its vaddr, which the starts are relative to; .ARM.exidx: the table's
  bool exidx = false;
  std::vector<u64> fdes;  // sorted; used when count is 0
};

using Stub = arch::LinkerStub;  // (arch/plan.h)

// What discovery does differently on one ISA; one implementation per file, rewriter/sites_<isa>.cc.
class IsaSites {
 public:
  virtual ~IsaSites() = default;
  // The address of a code symbol's first instruction (ARM32: without the Thumb bit).
  virtual u64 code_address(u64 value) const { return value; }
  // Whether a function at symbol value `value` is in an instruction set this ISA's scan skips.
  virtual bool other_state(u64) const { return false; }
  // A defined code symbol, for what only this ISA names (PPC64le: local entry points, ld's call stubs).
  virtual void symbol(Discoverer&, const elf::Symbol&, const char* /*name*/) const {}
  // A PLT section's entries that jump through a tracer's GOT slot (Discoverer::slots) become call
  // targets (Discoverer::direct).
  virtual void plt(Discoverer&, const elf::Section&) const {}
  // The linker stub a call to `target` enters (`other_state`: in the instruction set other_state()
  // names, ARM32's ARM state, as a Thumb `blx` enters it), or nullopt when none is there.
  virtual std::optional<Stub> stub(const Discoverer&, u64 /*target*/, bool /*other_state*/) const { return std::nullopt; }
  // Whether code in [start, end) calls through one of the GOT slots `slots` (the PLT entry or, on
  // PPC64le, ld's call stub loading it), for finding gprof's start-up in a stripped binary
  // (Discoverer::find_gmon_start); false where this ISA does not look.
  virtual bool calls_through(const Discoverer&, u64 /*start*/, u64 /*end*/, const std::vector<u64>& /*slots*/) const { return false; }
  // Whether __mcount_loc records are read (gcc -mrecord-mcount is x86-64's), and one such record.
  virtual bool reads_mcount_loc() const { return false; }
  virtual void mcount_loc(Discoverer&, u64) const {}
  // A __patchable_function_entries record: the site it describes, or one skipped with the reason.
  virtual void patchable(Discoverer& d, u64 addr) const = 0;
  // The word assemblers and ld fill the alignment padding between functions with, where the ISA's
  // patchable sites may call a branch island written over it (Discoverer::note_padding), and how far
  // their call reaches; nop 0: none.
  struct Padding {
    u32 nop = 0;
    u64 reach = 0;
  };
  virtual Padding padding() const { return {}; }
  // The symbol scan: each function no record covers (Discoverer::for_each_unscanned, called here so
  // that the ISA's scan of one function is inlined into the loop), its -pg site if it has one.
  virtual void scan_all(Discoverer& d) const = 0;
};

const IsaSites& x86_64_sites();
const IsaSites& aarch64_sites();
const IsaSites& ppc64le_sites();
const IsaSites& riscv64_sites();
const IsaSites& thumb2_sites();

class Discoverer {
 public:
  explicit Discoverer(const elf::Elf& elf, const elf::Elf* symbols = nullptr) : elf_(elf), syms_(symbols ? *symbols : elf) {}
  Discovery run();

  // For the ISAs' files: the input, the machine, and what discovery found so far.
  const elf::Elf& elf() const { return elf_; }
  arch::Isa isa() const { return isa_; }
  Discovery& found() { return d_; }
  Targets& direct() { return direct_; }  // callee address -> kind (tracer symbols and PLT stubs)
  Targets& slots() { return slots_; }    // pointer slot address -> kind (GOT)

  // -pg calls and the code they enter on their way to mcount (Discovery::mcount_stubs). The ISA's
  // scan asks mcount_call whether a call to `target` is a -pg call: it is when `target` is mcount or
  // its PLT entry (direct), or a linker stub jumping there (IsaSites::stub).
  // It then tells note_mcount_call whether the site it made of that call is prepared (and on ARM32
  // whether it is an ARM-state one, `arm`). The ISA's plt()
  // names the bytes of a PLT entry with mcount_region, under each address a call may enter it by.
  std::optional<SiteKind> mcount_call(u64 target, bool other_state = false);
  void note_mcount_call(u64 target, const Site& s, bool arm = false);
  void mcount_region(u64 target, u64 start, u32 size, SiteKind kind);

  bool executable(u64 addr, u64 len) const {
    const elf::Segment* s = segment(addr, len);
    return s && (s->flags & PF_X);
  }
  std::span<const u8> code(u64 addr, u64 len) const { return cursor_.bytes(addr, len); }
  u64 code_size(u64 addr) const {  // bytes from addr to the end of its segment's file image
    const elf::Segment* s = segment(addr, 1);
    return s ? s->vaddr + s->filesz - addr : 0;
  }
  bool word(u64 addr, u32& w) const {  // the 32-bit instruction word at addr
    auto b = code(addr, 4);
    if (b.size() != 4) return false;
    w = static_cast<u32>(elf_.codec().get(b, 0, 4));
    return true;
  }
  std::optional<SiteKind> classify_call(const arch::Call& c) const { return (c.indirect ? slots_ : direct_).find(c.target); }
  const Func* func_at(u64 addr) const;  // the function containing addr
  const Func* func_at_or_after(u64 addr, u64 within) const;
  bool prepared_input() const { return prepared_input_; }  // a prepared output, read back (a __patch_sites table)
  void push_record_site(Site s);  // a site from a record, named after the function containing it
  // The nops from a patchable record at `start` to its function's `entry`, when the site there is
  // prepared (Discovery::pre_entry): only where a function symbol names the entry, which is then sure.
  void note_pre_entry(u64 start, u64 entry) {
    const Func* f = func_at(entry);
    if (f && f->addr == entry && entry >= start + 8 && entry - start <= UINT32_MAX) d_.pre_entry.push_back({start, static_cast<u32>(entry - start)});
  }
  // The entry a __patchable_function_entries record at `addr` describes: `addr` itself when it lies in
  // a function, else the start of the function within `within` bytes after it, whose M pad bytes
  // before it must all be nops: `nop(at, end)` is the length of the nop at `at` (0: none), which must
  // not run past `end`. nullopt when something else lies there.
  // The function's start is its symbol's. Where no symbol names it (a stripped binary):
  // - x86-64 (`tail` 0): the unwind table's start of the function, which is its entry;
  // - the others (`tail`: the bytes of nops the site needs): the unwind table's start where nops follow
  //   it (clang, and ARM32's .fnstart, start at the entry), else the last `tail` bytes of the nops,
  //   which run whatever M was: gcc 12 starts AArch64's and PPC64le's CFI after the entry's nops, and
  //   writes no unwind table for RISC-V or ARM32 by default. In a prepared output (one with a
  //   __patch_sites table), where the nops end at `context(at)`, the site's prepared form at an entry,
  //   that is the entry (only there: an input's function could begin so).
  template <class Nop, class Context>
  std::optional<u64> pad_entry(u64 addr, u64 within, Nop nop, u64 tail, Context context) const {
    if (func_at(addr)) return addr;
    const Func* f = func_at_or_after(addr, within);
    std::optional<u64> entry = f ? std::optional<u64>(f->addr) : std::nullopt;
    if (!f) {
      const auto u = unwind_start_at_or_after(addr, within);
      if (!tail || (u && nop(*u, *u + tail))) {
        entry = u;
      } else {
        u64 end = addr;  // where the nops end
        while (end < addr + within)
          if (const u64 n = nop(end, addr + within)) end += n;
          else break;
        entry = prepared_input_ && context(end) ? end : end >= addr + tail ? end - tail : addr;
      }
    }
    if (!entry || *entry <= addr) return addr;
    for (u64 at = addr; at < *entry;) {
      const u64 n = nop(at, *entry);
      if (n == 0 || at + n > *entry) return std::nullopt;
      at += n;
    }
    return *entry;
  }
  template <class Nop>
  std::optional<u64> pad_entry(u64 addr, u64 within, Nop nop) const {
    return pad_entry(addr, within, nop, 0, [](u64) { return false; });
  }

  Site& add_symbol_site(u64 addr, SiteKind kind, unsigned len, const Func& f);

  // Calls scan(f, rest) for each function no record covers, in address order (funcs_), so that code is
  // read front to back and sites come out sorted; `rest`: the file bytes from the function's start
  // to the end of its segment. Of two symbols at one address (aliases) the global one, sorted first,
  // is scanned. A function without a size (st_size 0: crtstuff's frame_dummy, hand-written assembly)
  // is scanned up to the next function, whose site it would otherwise claim.
  template <class Scan>
  void for_each_unscanned(Scan scan) const {
    for (size_t i = 0, next = 0; i < funcs_.size(); i++) {
      if (i > 0 && funcs_[i].addr == funcs_[i - 1].addr) continue;
      Func f = funcs_[i];
      if (f.size == 0) {
        while (next < funcs_.size() && funcs_[next].addr <= f.addr) next++;
        if (next < funcs_.size()) f.size = static_cast<u32>(std::min<u64>(funcs_[next].addr - f.addr, UINT32_MAX));
      }
      if (!covered_.empty()) {
        u64 end = f.addr + std::max<u64>(f.size, 1);
        auto it = std::lower_bound(covered_.begin(), covered_.end(), f.addr);
        if (it != covered_.end() && *it < end) continue;  // a record already names this function's site
      }
      const elf::Segment* seg = segment(f.addr, 1);
      if (!seg || !(seg->flags & PF_X)) continue;
      scan(f, elf_.bytes().subspan(seg->offset + (f.addr - seg->vaddr), seg->vaddr + seg->filesz - f.addr));
    }
  }

 private:
  template <class F>
  void for_each_code_symbol(const elf::Elf& file, const elf::Section& tab, F f) const;
  void read_symbols();
  void find_tracer_slots();
  std::vector<u64> record(const elf::Section& s) const;
  void add_unwind_functions();
  void find_gmon_start(const std::vector<std::pair<u64, u64>>& fdes);
  void scan_symbols();
  void note_padding(std::vector<u64> records);
  void finish();
  // A site's name: the symbol's own name offset (Discovery::strings is its string table), or 0 where
  // the name lies past the table's last NUL.
  u32 name_of(u32 name_offset) const { return name_offset < d_.strings.size() ? name_offset : 0; }
  const elf::Segment* segment(u64 addr, u64 len) const { return cursor_.find(addr, len); }

  const elf::Elf& elf_;
  const elf::Elf& syms_;  // where .symtab is read: the binary, or its separate debug file (discover's `symbols`)
  arch::Isa isa_ = arch::Isa::x86_64;
  const IsaSites* sites_ = nullptr;
  Discovery d_;
  const elf::Section* functions_ = nullptr;  // the symbol table functions come from: .symtab, else .dynsym
  const elf::Elf* functions_file_ = nullptr;  // the file holding it (syms_ or elf_)
  Bulk<Func> funcs_;                         // sorted by address, the global one first at an address;
                                             // with record sections one per address (func_at)
  Targets direct_;
  Targets slots_;
  std::vector<u64> monstartup_slots_;  // the GOT slots of gprof's __monstartup (find_gmon_start)
  // The code -pg calls enter (PLT entries, linker stubs): how many prepared and skipped sites enter
  // each, and the region a stub jumps into (a call through the stub enters that one too).
  struct Region {
    u64 start;
    u32 size;
    SiteKind kind;
    u32 prepared = 0, skipped = 0;
    u32 arm = 0;  // of the prepared ones, ARM32 ARM-state sites entering at `start`
    u32 next = ~u32{0};
  };
  std::vector<Region> regions_;
  std::vector<std::pair<u64, u32>> region_of_;  // call target -> regions_ index (few: a linear search)
  std::optional<u32> region(u64 target) const;
  std::vector<u64> covered_;  // while scanning: the sites from records, sorted, which the scan must not find again
  mutable std::optional<UnwindIndex> unwind_;
  bool prepared_input_ = false;  // the input carries a __patch_sites table (pad_entry)
  // The first function start the unwind tables give at or after `addr`, within `within` bytes.
  std::optional<u64> unwind_start_at_or_after(u64 addr, u64 within) const;
  mutable elf::SegmentCursor cursor_{elf_};
};

}  // namespace prepatch::discovery
