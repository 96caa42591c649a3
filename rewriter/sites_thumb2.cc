// ARM32 Thumb-2 site discovery (rewriter/discoverer.h): gcc -pg (`push {lr}` then `bl
// __gnu_mcount_nc`). ARM-state (-marm) functions and -fpatchable-function-entry pads are not prepared
// yet: the first are not scanned, the second are listed as skipped.
#include <algorithm>

#include "arch/isa.h"
#include "arch/thumb2.h"
#include "rewriter/discoverer.h"

namespace prepatch::discovery {
namespace {

namespace t2 = arch::thumb2;

class Thumb2Sites final : public IsaSites {
 public:
  u64 code_address(u64 value) const override { return value & ~u64{1}; }
  bool other_state(u64 value) const override { return !(value & 1); }  // an ARM-state function

  // ARM-state entries of 3 or 4 words after a 20-byte header: any word may start one. An entry that
  // Thumb code calls with `bl` starts with a Thumb stub, `bx pc` and a halfword, which `bl` targets.
  void plt(Discoverer& d, const elf::Section& s) const override {
    auto b = d.elf().section_data(s);
    for (u64 at = 0; at + 12 <= b.size(); at += 4)
      if (auto slot = arch::arm_plt_slot(b.subspan(at, std::min<u64>(16, b.size() - at)), s.addr + at))
        if (auto k = d.slots().find(*slot)) {
          d.direct().add(s.addr + at, *k);
          if (at >= 4 && (b[at - 4] | b[at - 3] << 8) == t2::bx_pc) d.direct().add(s.addr + at - 4, *k);
        }
  }

  void patchable(Discoverer& d, u64 addr) const override {  // not supported yet: listed, skipped
    Site s(addr & ~u64{1}, SiteKind::patchable, Source::patchable_entries);
    s.len = 4;
    s.set_skip(Skip::unsupported_form);
    d.push_record_site(s);
  }

  // gcc -pg: after the function's own pushes, `push {lr}` and then the 32-bit `bl __gnu_mcount_nc`
  // (static: a Thumb callee) or `blx` to its ARM-state PLT entry, often on a 2-byte boundary. The site
  // is that call, toggled between a Thumb `bl` to the shim and `pop {lr}` (`ldr.w lr, [sp], #4`:
  // __gnu_mcount_nc pops what was pushed, so the off form must too); the push stays.
  void scan_all(Discoverer& d) const override {
    d.for_each_unscanned([&](const Func& f, std::span<const u8> rest) { scan(d, f, rest); });
  }

 private:
  void scan(Discoverer& d, const Func& f, std::span<const u8>) const {
    if (f.name & other_bit) return;
    const u64 end = f.addr + std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, d.code_size(f.addr)});
    u16 before = 0;  // the instruction before, when 16-bit
    for (u64 at = f.addr; at + 2 <= end;) {
      auto h = d.code(at, 2);
      if (h.size() != 2) return;
      const u16 first = static_cast<u16>(h[0] | h[1] << 8);
      if (!t2::is_32bit(first)) {
        before = first;
        at += 2;
        continue;
      }
      if (at + 4 > end) return;
      auto b = d.code(at, 4);
      if (b.size() != 4) return;
      if (t2::is_bl_or_blx(first, static_cast<u16>(b[2] | b[3] << 8))) {
        const auto target = arch::bl_target(d.isa(), b, at);  // Capstone
        if (!target || !d.direct().find(*target)) return;    // the first call is an ordinary one: no -pg site
        Site& s = d.add_symbol_site(at, SiteKind::mcount, 4, f);
        if (before != t2::push_lr) s.set_skip(Skip::no_context);
        return;
      }
      before = 0;
      at += 4;
    }
  }
};

}  // namespace

const IsaSites& thumb2_sites() {
  static const Thumb2Sites s;
  return s;
}

}  // namespace prepatch::discovery
