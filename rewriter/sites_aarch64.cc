// AArch64 site discovery (rewriter/sites_word.h): gcc -pg (`mov x0, x30` then `bl _mcount`) and
// -fpatchable-function-entry (`mov x9, x30` then the site, as the kernel's ftrace has them).
#include "arch/aarch64.h"
#include "rewriter/sites_word.h"

namespace prepatch::discovery {
namespace {

struct Aarch64Words {
  static constexpr u32 pg_context = arch::aarch64::mov_x0_x30;
  static bool is_bl(u32 w) { return arch::aarch64::bl_opcode(w); }
  static std::optional<u64> plt_slot(const Discoverer& d, u64 at) { return arch::aarch64_plt_slot(d.code(at, 16), at); }
  static u64 pad_start(Discoverer& d, u64 entry) {
    u32 w = 0;
    return d.word(entry, w) && (w == arch::aarch64::bti_c || w == arch::aarch64::bti_jc) ? entry + 4 : entry;
  }
  static Skip pad_skip(Discoverer&, u64, u64) { return Skip::none; }
  static bool signs_return(Discoverer& d, u64 function) {
    u32 w = 0;
    const u64 first = pad_start(d, function);
    return d.word(first, w) && (w == arch::aarch64::paciasp || w == arch::aarch64::pacibsp);
  }
  static u8 after_call(Discoverer&, u64) { return 0; }
};

class Aarch64Sites final : public WordSites<Aarch64Words> {
 public:
  // 16-byte entries after a 32-byte header, each loading its GOT slot and branching to it.
  void plt(Discoverer& d, const elf::Section& s) const override {
    auto b = d.elf().section_data(s);
    for (u64 at = 0; at + 16 <= b.size(); at += 16)
      if (auto slot = arch::aarch64_plt_slot(b.subspan(at, 16), s.addr + at))
        if (auto k = d.slots().find(*slot)) {
          d.direct().add(s.addr + at, *k);
          d.mcount_region(s.addr + at, s.addr + at, 16, *k);  // its 16 bytes, which a branch island may take over
        }
  }

  Padding padding() const override { return {arch::aarch64::nop, static_cast<u64>(arch::aarch64::bl_reach)}; }

  // ld's AArch64 stubs (arch/aarch64.h linker_stub).
  std::optional<Stub> stub(const Discoverer& d, u64 target, bool) const override {
    return arch::aarch64::linker_stub(target, [&](u64 at, u32& w) { return d.word(at, w); });
  }
};

}  // namespace

const IsaSites& aarch64_sites() {
  static const Aarch64Sites s;
  return s;
}

}  // namespace prepatch::discovery
