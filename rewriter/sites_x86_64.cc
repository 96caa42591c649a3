// x86-64 site discovery (rewriter/discoverer.h): gcc -pg, -pg -mfentry, -mnop-mcount, -mrecord-mcount
// and -fpatchable-function-entry; clang -pg and -fpatchable-function-entry. A site is the 5-byte call
// (or nop) itself, toggled whole.
#include <algorithm>

#include "arch/x86_64.h"
#include "rewriter/discoverer.h"

namespace prepatch::discovery {
namespace {

using arch::X86_64;

class X86_64Sites final : public IsaSites {
 public:
  // PLT entries of 16 bytes (.plt, .plt.sec) or 8 (.plt.got), each a jump through its GOT slot:
  // every 8-byte boundary is tried.
  void plt(Discoverer& d, const elf::Section& s) const override {
    auto b = d.elf().section_data(s);
    for (u64 at = 0; at + 6 <= b.size(); at += 8)
      if (auto slot = arch::plt_slot(b.subspan(at, std::min<u64>(16, b.size() - at)), s.addr + at))
        if (auto k = d.slots().find(*slot)) d.direct().add(s.addr + at, *k);
  }

  // Each `call rel32` (e8, looked for at every byte: a false one inside another instruction would have
  // to land on such a PLT entry exactly) to a PLT entry jumping through one of `slots`.
  bool calls_through(const Discoverer& d, u64 start, u64 end, const std::vector<u64>& slots) const override {
    const auto b = d.code(start, end - start);
    for (u64 i = 0; i < b.size(); i++) {
      const auto c = b[i] == 0xe8 ? arch::match_call(b.subspan(i), start + i) : std::nullopt;
      if (!c) continue;
      const auto slot = arch::plt_slot(d.code(c->target, std::min<u64>(16, d.code_size(c->target))), c->target);
      if (slot && std::find(slots.begin(), slots.end(), *slot) != slots.end()) return true;
    }
    return false;
  }

  bool reads_mcount_loc() const override { return true; }
  void mcount_loc(Discoverer& d, u64 addr) const override {
    Site s(addr, SiteKind::fentry, Source::mcount_loc);
    if (!d.executable(addr, 1)) {
      s.set_skip(Skip::not_in_text);
      return d.push_record_site(s);
    }
    auto b = d.code(addr, std::min<u64>(X86_64::max_insn, d.code_size(addr)));
    if (auto c = arch::match_call(b, addr)) {
      s.len = c->len;
      if (auto k = d.classify_call(*c)) s.kind = *k;
      else s.set_skip(Skip::not_tracer_call);
    } else if (unsigned n = arch::nop_length(b); n == 5 || n == 6) {
      // -mnop-mcount: the site is a nop already; at the entry (or after endbr64, or after a nested
      // function's `push %r10`: saves_chain) it is an fentry site.
      s.len = n;
      const Func* f = d.func_at(addr);
      const bool entry = f && (f->addr == addr || (f->addr + 4 == addr && arch::is_endbr64(d.code(f->addr, 4))));
      s.kind = SiteKind::fentry;
      if (!entry && (saves_chain(d, s), !s.saves_chain())) s.kind = SiteKind::mcount;
    } else {
      s.set_skip(Skip::unrecognized);
    }
    saves_chain(d, s);
    d.push_record_site(s);
  }

  // A pad is M nops before the function symbol and N-M after it (after endbr64 when there is one); gcc
  // emits one-byte nops, clang multi-byte ones. The site is the part that runs on entry.
  void patchable(Discoverer& d, u64 addr) const override {
    Site s(addr, SiteKind::patchable, Source::patchable_entries);
    if (!d.executable(addr, 1)) {
      s.set_skip(Skip::not_in_text);
      return d.push_record_site(s);
    }
    auto pad_code = d.code(addr, std::min<u64>(128, d.code_size(addr)));
    auto pad_entry = d.pad_entry(addr, 64, [&](u64 at, u64) { return arch::nop_length(pad_code.subspan(at - addr)); });
    if (!pad_entry && d.prepared_input())  // an output whose pre-entry nops hold a branch island (Discovery::pre_entry)
      if (const Func* f = d.func_at(addr) ? nullptr : d.func_at_or_after(addr, 64)) pad_entry = f->addr;
    if (!pad_entry) {
      s.set_skip(Skip::unrecognized);
      return d.push_record_site(s);
    }
    u64 entry = *pad_entry;
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
    if (s.prepared()) d.note_pre_entry(addr, *pad_entry);
    d.push_record_site(s);
  }

  // The call to mcount/__fentry__ at the entry (-mfentry), after an endbr64, or after the frame setup
  // (-pg): the first call of the prologue.
  void scan_all(Discoverer& d) const override {
    d.for_each_unscanned([&](const Func& f, std::span<const u8> rest) { scan(d, f, rest); });
  }

 private:
  void scan(Discoverer& d, const Func& f, std::span<const u8> rest) const {
    const u64 limit = std::min<u64>({f.size ? f.size : prologue_scan_bytes, prologue_scan_bytes, rest.size()});
    auto fcode = rest.first(limit);
    std::optional<arch::ScannedCall> sc;
    if (auto c = arch::match_call(fcode, f.addr)) sc = arch::ScannedCall{f.addr, *c};  // fast path: -mfentry
    else if (arch::is_endbr64(fcode) && (c = arch::match_call(fcode.subspan(4), f.addr + 4))) sc = arch::ScannedCall{f.addr + 4, *c};
    else sc = arch::scan_prologue_for_call(fcode, f.addr, limit);
    if (!sc) return;
    auto k = d.classify_call(sc->call);
    if (!k) return;  // an ordinary call early in the function: not a site
    saves_chain(d, d.add_symbol_site(sc->addr, *k, sc->call.len, f));
  }

  // gcc -mfentry in a nested function: `push %r10; call __fentry__; pop %r10` at the entry (after
  // endbr64), the static chain saved around the call (Site::saves_chain).
  static void saves_chain(Discoverer& d, Site& s) {
    if (!s.prepared() || s.kind != SiteKind::fentry || s.addr < 2) return;
    const Func* f = d.func_at(s.addr);
    if (!f || (f->addr + 2 != s.addr && !(f->addr + 6 == s.addr && arch::is_endbr64(d.code(f->addr, 4))))) return;
    const auto before = d.code(s.addr - 2, 2), after = d.code(s.addr + s.len, 2);
    if (before.size() == 2 && before[0] == 0x41 && before[1] == 0x52 && after.size() == 2 && after[0] == 0x41 && after[1] == 0x5a)
      s.set_saves_chain();
  }
};

}  // namespace

const IsaSites& x86_64_sites() {
  static const X86_64Sites s;
  return s;
}

}  // namespace prepatch::discovery
