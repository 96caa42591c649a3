// Compiled with -ffreestanding -nostdlib -fno-exceptions -fno-rtti (tests/CMakeLists.txt): the shim
// includes arch/plan.h, so it must need nothing from a hosted library. Runs the x86 plan on a buffer.
#include "arch/plan.h"

namespace {
struct Memory {
  prepatch::u8* base;
  prepatch::u64 at;
  unsigned syncs = 0;
  void store(prepatch::u64 addr, const prepatch::u8* b, unsigned width) {
    for (unsigned i = 0; i < width; i++) base[addr - at + i] = b[i];
  }
};
}  // namespace

extern "C" int prepatch_freestanding_plan_probe(prepatch::u8* site, const prepatch::u8* target) {
  using namespace prepatch::arch;
  Memory m{site, 0x1000};
  const Plan& p = plan_for(Isa::x86_64, 0x1000, 5);
  for (unsigned n = 0;; n++) {
    Phase ph = phase(p, n);
    if (ph.empty()) break;
    for (const Step* s = ph.begin; s != ph.end; s++) run_step(*s, 0x1000, target, 5, trap_bytes(Isa::x86_64), m);
    if (ph.sync) m.syncs++;
  }
  return static_cast<int>(m.syncs);
}
