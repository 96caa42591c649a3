// PPC64le (ELFv2) site discovery (rewriter/sites_word.h): gcc -pg (`mflr r0` early in the prologue,
// then `bl _mcount`, directly or through ld's call stub) and -fpatchable-function-entry.
#include <cstring>
#include <utility>

#include "arch/ppc64le.h"
#include "rewriter/sites_word.h"

namespace prepatch::discovery {
namespace {

struct Ppc64leWords {
  static constexpr u32 pg_context = arch::ppc64le::mflr_r0;
  static bool is_bl(u32 w) { return arch::ppc64le::bl_opcode(w); }
  // ld's call stub at `at` (arch/ppc64le.h plt_call_stub) and the slot it loads, relative to the TOC
  // pointer at its ELFv2 place.
  static std::optional<std::pair<arch::ppc64le::PltCallStub, u64>> call_stub(const Discoverer& d, u64 at) {
    const auto f = arch::ppc64le::plt_call_stub(at, [&](u64 a, u32& w) { return d.word(a, w); });
    const elf::Section* got = d.elf().section(".got");
    if (!f || !got) return std::nullopt;
    return std::pair{*f, got->addr + arch::ppc64le::toc_past_got + static_cast<u64>(f->toc_offset)};
  }
  static std::optional<u64> plt_slot(const Discoverer& d, u64 at) {
    const auto s = call_stub(d, at);
    return s ? std::optional<u64>(s->second) : std::nullopt;
  }
  static u64 pad_start(Discoverer&, u64 entry) { return entry; }
  // gcc 12 puts the pad at the global entry, before the TOC setup, so calls from inside the binary (to
  // the local entry point) never run it: such sites are skipped, saying so (also where no symbol
  // names the function: a stripped binary).
  static Skip pad_skip(Discoverer& d, u64 entry, u64 nops) {
    const Func* f = d.func_at(entry);
    u32 w = 0;
    return (!f || f->addr == entry) && d.word(entry + 4 * nops, w) && arch::ppc64le::is_toc_setup(w) ? Skip::before_local_entry : Skip::none;
  }
  static bool signs_return(Discoverer&, u64) { return false; }  // no pointer authentication on POWER
  // A call through ld's stub is followed by `ld r2, 24(r1)`, reloading the TOC pointer the stub saved;
  // it becomes a nop with the call (the trampoline keeps r2 itself).
  static u8 after_call(Discoverer& d, u64 at) {
    u32 next = 0;
    return d.word(at + 4, next) && next == arch::ppc64le::ld_r2_24_r1 ? 4 : 0;
  }
};

class Ppc64leSites final : public WordSites<Ppc64leWords> {
 public:
  void symbol(Discoverer& d, const elf::Symbol& s, const char* name) const override {
    // A direct call enters at the local entry point, after the TOC setup.
    if (auto k = tracer_kind(name)) d.direct().add(s.value + arch::ppc64le::local_entry_offset(s.other), *k);
    // ld's call stubs to shared objects are symbols `NNNNNNNN.plt_call.NAME` (NOTYPE).
    // Its bytes, in ld's form (arch/ppc64le.h plt_call_stub), are code a branch island may take over.
    if (s.type == STT_NOTYPE && name[0] >= '0' && name[0] <= '9')
      if (const char* stub = std::strstr(name, ".plt_call.")) {
        if (auto k = tracer_kind(std::string_view(stub + 10))) {
          d.direct().add(s.value, *k);
          if (auto f = arch::ppc64le::plt_call_stub(s.value, [&](u64 at, u32& w) { return d.word(at, w); }))
            d.mcount_region(s.value, s.value, f->size, *k);
        }
      }
    // The TOC pointer's value, which those stubs and the functions calling them rely on r2 holding.
    if (!std::strcmp(name, ".TOC.")) d.found().toc = s.value;
  }
  // No PLT entries to read: the call stubs are named by symbols (above). A stripped binary's are not:
  // there a call enters a stub in ld's form whose slot holds mcount's address (Discoverer::mcount_call
  // takes that slot for the `dest`).
  std::optional<Stub> stub(const Discoverer& d, u64 target, bool) const override {
    const auto s = Ppc64leWords::call_stub(d, target);
    if (!s) return std::nullopt;
    return Stub{target, s->first.size, s->second};
  }
};

}  // namespace

const IsaSites& ppc64le_sites() {
  static const Ppc64leSites s;
  return s;
}

}  // namespace prepatch::discovery
