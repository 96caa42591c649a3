// AArch64 and PPC64le site discovery share a shape (rewriter/discoverer.h): every instruction an
// aligned 32-bit word, one word toggled per site. The -pg site is the prologue's first `bl` when it
// calls _mcount, after what hands _mcount its argument; a patchable pad's first nop becomes that
// context and its second the site. Each ISA's file (sites_aarch64.cc, sites_ppc64le.cc) names its own
// words in a class W of static members:
//   u32 pg_context: what hands _mcount its argument in -pg code, somewhere before the call
//                   (`mov x0, x30`, `mflr r0`);
//   bool signs_return(Discoverer&, u64 function): whether a -pg function signs its return address in
//     its prologue, before the site (Discovery::signed_returns);
//   bool is_bl(u32 w);
//   u64 pad_start(Discoverer&, u64 entry): where a pad at the function's entry begins (AArch64: after
//                   a `bti` landing pad);
//   Skip pad_skip(Discoverer&, u64 entry, u64 nops): why such a pad cannot be prepared, or Skip::none;
//   u8 after_call(Discoverer&, u64 at): bytes after a -pg call at `at` that become a nop with it;
//   std::optional<u64> plt_slot(const Discoverer&, u64 at): the GOT slot the PLT entry or call stub at
//     `at` jumps through.
#pragma once
#include <algorithm>

#include "arch/forms.h"
#include "rewriter/discoverer.h"

namespace prepatch::discovery {

template <class W>
class WordSites : public IsaSites {
 public:
  // A pad is M nop words before the function symbol and N-M after it. As the kernel does, the first
  // nop at the entry becomes the context that hands the trampoline the return address (`mov x9,
  // x30`; `mflr r0`), permanently, and the second is the site, toggled between nop and `bl`.
  void patchable(Discoverer& d, u64 addr) const final {
    const u16 machine = d.elf().header().machine;
    Site s(addr, SiteKind::patchable, Source::patchable_entries);
    s.len = 4;
    u32 w = 0;
    if (addr % 4 != 0 || !d.executable(addr, 8)) {
      s.set_skip(Skip::not_in_text);
      return d.push_record_site(s);
    }
    const u32 nop = arch::nop_word(machine);
    // Prepared already (`prepatch sites` on an output): the context word, then the site, nop or `bl`.
    const auto prepared = [&](u64 entry) {
      u32 site = 0;
      return d.word(entry, w) && w == arch::patchable_context_word(machine) && d.word(entry + 4, site) &&
             (site == nop || arch::bl_target(d.isa(), d.code(entry + 4, 4), entry + 4));
    };
    auto pad_entry = d.pad_entry(addr, 64, [&](u64 at, u64) { return d.word(at, w) && w == nop ? 4 : 0; }, 8, prepared);
    if (!pad_entry)  // an output whose pre-entry nops hold a branch island (Discovery::pre_entry)
      if (const Func* f = d.func_at(addr) ? nullptr : d.func_at_or_after(addr, 64); f && prepared(W::pad_start(d, f->addr))) pad_entry = f->addr;
    if (!pad_entry) {
      s.set_skip(Skip::unrecognized);
      return d.push_record_site(s);
    }
    const u64 entry = W::pad_start(d, *pad_entry);
    s.addr = entry + 4;
    if (prepared(entry)) return d.push_record_site(s);
    u64 nops = 0;
    while (nops < 16 && d.word(entry + 4 * nops, w) && w == nop) nops++;
    if (nops < 2) {
      s.addr = entry;
      s.set_skip(nops == 0 ? Skip::unrecognized : Skip::pad_too_short);
      return d.push_record_site(s);
    }
    s.set_skip(W::pad_skip(d, entry, nops));
    if (s.prepared()) d.note_pre_entry(addr, *pad_entry);
    d.push_record_site(s);
  }

  bool calls_through(const Discoverer& d, u64 start, u64 end, const std::vector<u64>& slots) const final {
    u32 w = 0;
    for (u64 at = (start + 3) & ~u64{3}; at + 4 <= end; at += 4) {
      if (!d.word(at, w) || !W::is_bl(w)) continue;
      const auto target = arch::bl_target(d.isa(), d.code(at, 4), at);
      const auto slot = target ? W::plt_slot(d, *target) : std::nullopt;
      if (slot && std::find(slots.begin(), slots.end(), *slot) != slots.end()) return true;
    }
    return false;
  }

  void scan_all(Discoverer& d) const final {
    d.for_each_unscanned([&](const Func& f, std::span<const u8>) { scan(d, f); });
  }

 private:
  // gcc -pg: the first `bl` of the prologue, when it calls _mcount, is the site (toggled between `bl`
  // and nop). What hands _mcount its argument stays (the scheduler may move other instructions in
  // between). Without it the call is not the form gcc emits, and is skipped.
  static void scan(Discoverer& d, const Func& f) {
    const u64 limit = std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, d.code_size(f.addr)});
    bool context = false;
    u32 w = 0;
    for (u64 at = f.addr; at + 4 <= f.addr + limit && d.word(at, w); at += 4) {
      context |= w == W::pg_context;
      if (!W::is_bl(w)) continue;
      const auto target = arch::bl_target(d.isa(), d.code(at, 4), at);  // Capstone
      if (!target) continue;
      if (!d.mcount_call(*target)) return;  // the first call is an ordinary one: no -pg site
      Site& s = d.add_symbol_site(at, SiteKind::mcount, 4, f);
      if (!context) s.set_skip(Skip::no_context);
      s.pad_rest = W::after_call(d, at);
      if (s.prepared() && W::signs_return(d, f.addr)) d.found().signed_returns = true;
      d.note_mcount_call(*target, s);
      return;
    }
  }
};

}  // namespace prepatch::discovery
