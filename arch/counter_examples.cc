#include "arch/counter_examples.h"

#include "arch/ppc64le.h"
#include "arch/riscv64.h"
#include "arch/thumb2.h"

namespace prepatch::arch {

namespace {

// clang-format off
constexpr Step tail_first_steps[] = {
  {Step::write, 1, 0, 1, From::target},  // the tail, no int3 in front of it
  {Step::write, 0, 1, 1, From::trap},    // then the int3, with no sync in between
  {Step::sync},
  {Step::write, 0, 1, 1, From::target},
  {Step::sync},
};
constexpr Step one_store_steps[] = {
  {Step::write, 0, 5, 5, From::target},  // all five bytes in one store
  {Step::sync},
};
constexpr Step mflr_and_bl_steps[] = {
  {Step::write, -8, 4, 4, From::target},  // mflr r0 over its nop
  {Step::write, 0, 4, 4, From::target},   // bl over its nop
  {Step::sync},
};
constexpr Step mflr_sync_bl_steps[] = {
  {Step::write, -8, 4, 4, From::target},  // mflr r0 over its nop
  {Step::sync},
  {Step::write, 0, 4, 4, From::target},   // then bl, after a sync
  {Step::sync},
};
constexpr u8 c_unimp[] = {0x00, 0x00};
constexpr Step riscv_unimp_steps[] = {
  {Step::write, 0, 1, 1, From::trap},    // one byte: nop (13 00 00 00) becomes 00 00 00 00, c.unimp
  {Step::sync},
  {Step::write, 1, 3, 1, From::target},  // the other three bytes
  {Step::sync},
  {Step::write, 0, 1, 1, From::target},  // the first byte
  {Step::sync},
};
constexpr Step two_halfwords_steps[] = {
  {Step::write, 0, 4, 2, From::target},  // both halfwords of the bl, no sync between them
  {Step::sync},
};
// clang-format on

}  // namespace

std::vector<CounterExample> seed_counter_examples() {
  std::vector<CounterExample> v;
  const u64 x86_site = 0x401006;  // straddles the 8-byte word at 0x401008
  auto x86 = *site_form(Isa::x86_64, SiteKind::fentry, x86_site, 0x402000, 5);

  v.push_back({"x86-tail-before-int3",
               "x86-64: the tail written before the int3, with no sync between them (Mathieu Desnoyers' \"buggy\" "
               "sequence): another core can fetch the old first byte with new tail bytes",
               Isa::x86_64, {"tail-first", "tail, int3, sync, first byte, sync", tail_first_steps, 5, true}, x86});

  v.push_back({"x86-one-store",
               "x86-64: a 5-byte site written with one store and no breakpoint, where it straddles an 8-byte word: "
               "the store tears and another core fetches a hybrid",
               Isa::x86_64, {"one-store", "all bytes in one store, sync", one_store_steps, 2, false}, x86});

  SiteForm nops = x86;
  nops.off.assign(5, 0x90);
  v.push_back({"x86-five-nops",
               "x86-64: five one-byte nops turned into a call at run time with the int3 plan: a thread stopped "
               "after the second nop resumes inside the call",
               Isa::x86_64, int3_plan, nops});

  SiteForm ppc = *site_form(Isa::ppc64le, SiteKind::mcount, 0x10001008, 0x10002000);
  put_le(ppc.context_off, ppc64le::nop);
  put_le(ppc.context_off, ppc64le::std_r0_16);
  v.push_back({"ppc-mflr-and-bl",
               "PPC64le: `mflr r0` and `bl` patched in together: a thread preempted just after the old nop "
               "resumes at a `bl` whose `mflr` never ran",
               Isa::ppc64le, {"mflr+bl", "mflr and bl in one batch, sync", mflr_and_bl_steps, 3, false}, ppc});
  v.push_back({"ppc-mflr-sync-bl",
               "PPC64le: `mflr r0`, a sync, then `bl`: the sync does not help a thread that was preempted "
               "before the mflr was written",
               Isa::ppc64le, {"mflr,sync,bl", "mflr, sync, bl, sync", mflr_sync_bl_steps, 4, false}, ppc});

  SiteForm rv;
  rv.addr = 0x10000;
  put_le(rv.off, riscv64::nop);
  put_le(rv.on, u32{0x0000'40ef});  // jal ra, +0x4000: its second byte is 0x40
  v.push_back({"riscv-nop-unimp",
               "RISC-V: nop turned into unimp by a one-byte write, then the rest: the half-written word's first "
               "halfword, 0x4000, is a valid compressed instruction (c.lw), not a trap",
               Isa::riscv64, {"nop-unimp", "one byte to c.unimp, sync, the rest, sync, the first byte, sync",
                              riscv_unimp_steps, 6, true, c_unimp, 2}, rv});

  v.push_back({"thumb2-two-halfwords",
               "Thumb-2: the 32-bit bl written as two halfword stores without a sync between them: another "
               "core fetches one half old and the other new",
               Isa::thumb2, {"two-halfwords", "both halfwords, sync", two_halfwords_steps, 2, false},
               *site_form(Isa::thumb2, SiteKind::mcount, 0x10006, 0x20000)});
  return v;
}

}  // namespace prepatch::arch
