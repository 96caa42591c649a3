// Patch plans and the checker: every shipped plan is proved at every alignment, the seeds'
// counter-examples are rejected, and the checker is shown to be sensitive (a shipped plan with a sync
// removed, or used at an alignment it is not meant for, is rejected).
#include <gtest/gtest.h>

#include "arch/check.h"
#include "arch/counter_examples.h"
#include "arch/describe.h"
#include "support.h"

namespace prepatch::test {
namespace {

using namespace arch;

class ShippedPlans : public ::testing::TestWithParam<Isa> {};

TEST_P(ShippedPlans, AreSafeForEveryKindAlignmentAndDistance) {
  SweepResult r = check_shipped_plans(GetParam());
  for (const std::string& f : r.failures) ADD_FAILURE() << f;
  const IsaInfo& info = isa_info(GetParam());
  // kinds x lengths x alignments in a line x distances x {on, off}: nothing was skipped but what
  // has_site rules out (ARM32's ARM-state sites: mcount, 4-aligned).
  u64 sites = 0;
  for (SiteKind kind : info.kinds)
    for (unsigned len : site_lengths(GetParam()))
      for (u64 off = 0; off < 64; off += info.insn_align) sites += has_site(GetParam(), kind, len, 0x10000 * 64 + off);
  EXPECT_EQ(sites, info.kinds.size() * site_lengths(GetParam()).size() * (64 / info.insn_align) - (GetParam() == Isa::thumb2 ? 48 : 0));
  // And as trap sites, both ways: every site but ARM32's ARM-state ones.
  const u64 traps = GetParam() == Isa::thumb2 ? info.kinds.size() * (64 / info.insn_align) : sites;
  EXPECT_EQ(r.trap_checks, traps * 2);
  EXPECT_EQ(r.checks, sites * sweep_distances(GetParam()).size() * 2 + traps * 2);
  EXPECT_GT(r.views, r.checks);  // every check saw more than the two end states
}

INSTANTIATE_TEST_SUITE_P(Isa, ShippedPlans, ::testing::ValuesIn(all_isas),
                         [](const auto& p) { return std::string(isa_name(p.param) == "x86-64" ? "x86_64" : isa_name(p.param)); });

// What each counter-example must be rejected for, in the checker's words.
const std::map<std::string, std::string> expected_reason = {
    {"x86-tail-before-int3", "a hybrid of the old and new bytes"},
    {"x86-one-store", "a hybrid of the old and new bytes"},
    {"x86-five-nops", "resumes at +"},
    {"ppc-mflr-and-bl", "a call whose setup never ran"},
    {"ppc-mflr-sync-bl", "a mix of the two forms"},
    {"riscv-nop-unimp", "`c.lw`"},
    {"thumb2-two-halfwords", "a hybrid of the old and new bytes"},
};

TEST(SeedCounterExamples, AreAllRejectedWithTheirReason) {
  auto all = seed_counter_examples();
  EXPECT_EQ(all.size(), expected_reason.size());
  for (const CounterExample& c : all) {
    SCOPED_TRACE(std::string(c.id));
    CheckResult r = check_plan(c.isa, c.plan, c.site, c.enable);
    EXPECT_FALSE(r.ok);
    ASSERT_TRUE(expected_reason.count(std::string(c.id)));
    EXPECT_NE(r.counter_example.find(expected_reason.at(std::string(c.id))), std::string::npos) << r.counter_example;
    EXPECT_NE(r.counter_example.find("view ["), std::string::npos) << "printed as a sequence of views";
  }
}

TEST(SeedCounterExamples, PpcPreemptedAfterTheOldNopResumesAtBl) {
  // The seeds' exact story, whichever path the checker reports first: it must be among the runs.
  for (const CounterExample& c : seed_counter_examples()) {
    if (c.id != "ppc-mflr-and-bl") continue;
    CheckResult r = check_plan(c.isa, c.plan, c.site, c.enable);
    EXPECT_NE(r.counter_example.find("at +0 `nop`"), std::string::npos) << r.counter_example;
    EXPECT_NE(r.counter_example.find("at +8 `bl"), std::string::npos) << r.counter_example;
  }
}

TEST(SeedCounterExamples, FiveNopsAreSafeOnlyOnceFusedIntoOneNop) {
  // The same site, prepared (one canonical nop5): the int3 plan is fine; with five 1-byte nops it is not.
  auto site = *site_form(Isa::x86_64, SiteKind::patchable, 0x401006, 0x402000, 5);
  EXPECT_TRUE(check_plan(Isa::x86_64, int3_plan, site, true).ok);
  site.off.assign(5, 0x90);
  EXPECT_FALSE(check_plan(Isa::x86_64, int3_plan, site, true).ok);
}

// A shipped plan with any one of its syncs removed must fail somewhere in the sweep's sites: the
// checker is not satisfied by anything that merely reaches the right final bytes.
TEST(Checker, RejectsEveryShippedPlanWithASyncRemoved) {
  for (Isa isa : all_isas) {
    const IsaInfo& info = isa_info(isa);
    for (const Plan* p : {&int3_plan, &halfword_trap_plan}) {
      if (!(&plan_for(isa, 0, 4) == p || &plan_for(isa, 2, 4) == p)) continue;
      for (unsigned drop = 0; drop + 1 < p->count; drop++) {  // the last sync only ends the batch
        if (p->steps[drop].op != Step::sync) continue;
        std::vector<Step> steps;
        for (unsigned i = 0; i < p->count; i++)
          if (i != drop) steps.push_back(p->steps[i]);
        Plan cut = *p;
        cut.steps = steps.data();
        cut.count = static_cast<u8>(steps.size());
        bool rejected = false;
        for (u64 off = 0; off < 16 && !rejected; off += info.insn_align)
          for (bool enable : {true, false}) {
            auto site = site_form(isa, info.kinds.front(), 0x400000 + off, 0x400000 + off + 0x1230, site_lengths(isa).front());
            if (site && &plan_for(isa, site->addr, site_lengths(isa).front()) == p) rejected |= !check_plan(isa, cut, *site, enable).ok;
          }
        EXPECT_TRUE(rejected) << isa_name(isa) << " " << p->name << " without the sync at step " << drop + 1;
      }
    }
  }
}

TEST(Checker, WordPlanIsRejectedWhereTheInstructionIsOnlyHalfwordAligned) {
  // RISC-V: why plan_for picks the trap plan at 2 mod 4; Thumb-2: why it never uses one store.
  auto rv = *site_form(Isa::riscv64, SiteKind::mcount, 0x10006, 0x20000);
  EXPECT_FALSE(check_plan(Isa::riscv64, word_plan, rv, true).ok);
  auto rv_aligned = *site_form(Isa::riscv64, SiteKind::mcount, 0x10008, 0x20000);
  EXPECT_TRUE(check_plan(Isa::riscv64, word_plan, rv_aligned, true).ok);
  auto thumb = *site_form(Isa::thumb2, SiteKind::mcount, 0x10008, 0x20000);
  EXPECT_FALSE(check_plan(Isa::thumb2, word_plan, thumb, true).ok);
}

// A trap site's trap stands for the call only where the site's own form puts it, and only whole: the
// word plan tears it at 2 mod 4 (a thread fetches a hybrid of the nop and `c.ebreak; c.nop`); a trap
// site whose trap is another ISA's trap, or a trap at a call site, is the handler's no more than before.
TEST(Checker, TrapSitesAreSafeOnlyAsTheirPlansWriteThem) {
  auto rv = *trap_site_form(Isa::riscv64, SiteKind::patchable, 0x10006);
  EXPECT_TRUE(check_plan(Isa::riscv64, halfword_trap_plan, rv, true).ok);
  EXPECT_TRUE(check_plan(Isa::riscv64, halfword_trap_plan, rv, false).ok);
  const CheckResult torn = check_plan(Isa::riscv64, word_plan, rv, true);
  EXPECT_FALSE(torn.ok);
  EXPECT_NE(torn.counter_example.find("hybrid"), std::string::npos) << torn.counter_example;
  auto x86 = *trap_site_form(Isa::x86_64, SiteKind::fentry, 0x10003, 5);
  EXPECT_TRUE(check_plan(Isa::x86_64, int3_plan, x86, true).ok);
  EXPECT_TRUE(check_plan(Isa::x86_64, int3_plan, x86, false).ok);
  x86.on[0] = 0xf4;  // hlt, not the trap: no longer one the handler resolves
  EXPECT_FALSE(check_plan(Isa::x86_64, int3_plan, x86, true).ok);
  auto call = *site_form(Isa::x86_64, SiteKind::fentry, 0x10003, 0x20000, 5);
  call.on[0] = 0xcc;  // a trap where a call site's call belongs: garbage after it, rejected as before
  EXPECT_FALSE(check_plan(Isa::x86_64, int3_plan, call, true).ok);
  auto a64 = *trap_site_form(Isa::aarch64, SiteKind::patchable, 0x10000);  // brk: on the CMODX list, one store
  EXPECT_TRUE(check_plan(Isa::aarch64, word_plan, a64, true).ok);
  a64.on = {0x00, 0x00, 0x00, 0x00};  // udf #0: no trap site's, nor on the CMODX list
  EXPECT_FALSE(check_plan(Isa::aarch64, word_plan, a64, true).ok);
  EXPECT_FALSE(trap_site_form(Isa::thumb2, SiteKind::mcount, 0x10000, 8));  // (ARM-state sites: none)
}

TEST(Checker, Aarch64StoresMustSwapCmodxInstructions) {
  // `mov x0, x30` is not on the CMODX list: swapping it for a nop under a running core is rejected
  // even though the store is atomic.
  auto site = *site_form(Isa::aarch64, SiteKind::mcount, 0x10004, 0x20000);
  site.on = site.context;  // toggle between nop and `mov x0, x30`
  CheckResult r = check_plan(Isa::aarch64, word_plan, site, true);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.counter_example.find("CMODX"), std::string::npos) << r.counter_example;
}

// ARM32's ARM-state sites: one store swaps `nop` and `b`, both on ARMv7's list. The Thumb plan's
// 16-bit trap would tear the word; toggling the original `pop {lr}` instead of a `nop` is refused for
// the list, though the store is atomic; and a plan writing both words lets a thread run the old
// `push {lr}`-less first word with the new call.
TEST(Checker, ArmStateSitesSwapOnlyListedInstructions) {
  auto site = *site_form(Isa::thumb2, SiteKind::mcount, 0x10008, 0x20000, 8);
  EXPECT_TRUE(site.arm_state);
  EXPECT_EQ(&plan_for(Isa::thumb2, 0x10008, 8), &second_word_plan);
  for (bool enable : {true, false}) {
    CheckResult ok = check_plan(Isa::thumb2, second_word_plan, site, enable);
    EXPECT_TRUE(ok.ok) << ok.counter_example;
    EXPECT_FALSE(check_plan(Isa::thumb2, halfword_trap_plan, site, enable).ok);
  }
  EXPECT_FALSE(site_form(Isa::thumb2, SiteKind::mcount, 0x1000a, 0x20000, 8)) << "ARM-state words are 4-aligned";
  EXPECT_FALSE(site_form(Isa::thumb2, SiteKind::patchable, 0x10008, 0x20000, 8)) << "-pg only";
  SiteForm pop = site;  // the kernel's off form, `pop {lr}` (ldr lr, [sp], #4), behind the original push
  pop.off = {0x04, 0xe0, 0x2d, 0xe5, 0x04, 0xe0, 0x9d, 0xe4};
  pop.on = {0x04, 0xe0, 0x2d, 0xe5, site.on[4], site.on[5], site.on[6], site.on[7]};
  CheckResult r = check_plan(Isa::thumb2, second_word_plan, pop, true);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.counter_example.find("ARMv7 A3.5.4 list"), std::string::npos) << r.counter_example;
}

TEST(Plans, NeverMoreThanThreeSyncsAndOffsetsStayInTheSite) {
  for (Isa isa : all_isas)
    for (const auto& [addr, len] : {std::pair<u64, unsigned>{0, 4}, {2, 4}, {4, 4}, {0, 8}}) {
      const Plan& p = plan_for(isa, addr, len);
      unsigned syncs = 0;
      for (unsigned i = 0; i < p.count; i++) {
        if (p.steps[i].op == Step::sync) {
          syncs++;
          continue;
        }
        EXPECT_GE(p.steps[i].offset, 0) << p.name;  // the shim writes the toggled instruction only
        if (p.steps[i].from == From::trap) {
          EXPECT_TRUE(p.leaves_trap) << p.name << " lays a trap it does not declare";
        }
      }
      EXPECT_LE(syncs, 3u) << p.name;
      EXPECT_EQ(p.steps[p.count - 1].op, Step::sync) << p.name << " ends with a sync";
      if (p.leaves_trap) {
        EXPECT_GT(trap_bytes(isa).size, 0) << isa_name(isa);
      }
    }
}

TEST(Plans, PhasesSplitAtSyncs) {
  Phase a = phase(int3_plan, 0), b = phase(int3_plan, 1), c = phase(int3_plan, 2), d = phase(int3_plan, 3);
  EXPECT_EQ(a.end - a.begin, 1);
  EXPECT_EQ(a.begin->from, From::trap);
  EXPECT_TRUE(a.sync && b.sync && c.sync);
  EXPECT_EQ(b.begin->offset, 1);
  EXPECT_EQ(c.begin->offset, 0);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(phase_count(int3_plan), 3u);
  for (Isa isa : all_isas)
    for (const auto& [addr, len] : {std::pair<u64, unsigned>{0x1000, 4}, {0x1002, 4}, {0x1000, 8}}) {
      const Plan& p = plan_for(isa, addr, len);
      EXPECT_FALSE(phase(p, phase_count(p) - 1).empty()) << p.name;
      EXPECT_TRUE(phase(p, phase_count(p)).empty()) << p.name;
    }
}

TEST(PlanCommand, PrintsStepsStatesAndVerdict) {
  Proc r = prepatch({"plan", "--arch", "ppc64le", "--site-kind", "mcount"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("mflr r0; std r0, 16(r1)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bl 0x402004"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checker: safe"), std::string::npos) << r.out;
  r = prepatch({"plan", "--arch", "x86-64", "--site-kind", "fentry", "--length", "6", "--at", "0x401007", "--off"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("switched off"), std::string::npos);
  EXPECT_NE(r.out.find("int3 (trap"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("67 e8"), std::string::npos) << r.out;
  // Thumb-2's ARM-state -pg site (length 8) by default at a 4-aligned address, as it must be.
  r = prepatch({"plan", "--arch", "thumb2", "--site-kind", "mcount", "--length", "8"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("thumb2 ARM-state mcount site, toggled instruction at 0x401008"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checker: safe"), std::string::npos) << r.out;
}

TEST(PlanCommand, RejectsUnknownArchKindAndAddress) {
  EXPECT_EQ(prepatch({"plan", "--arch", "mips", "--site-kind", "mcount"}).status, 2);
  EXPECT_EQ(prepatch({"plan", "--arch", "aarch64", "--site-kind", "fentry"}).status, 2);  // no fentry on AArch64
  EXPECT_EQ(prepatch({"plan", "--arch", "aarch64", "--site-kind", "mcount", "--at", "0x401002"}).status, 2);  // misaligned
  Proc r = prepatch({"plan", "--arch", "aarch64", "--site-kind", "mcount", "--at", "zz"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("zz"), std::string::npos) << r.err;
}

// docs/PROTOCOLS.md carries the generated text verbatim; regenerate with scripts/gen-protocols.sh.
TEST(PlanCommand, ProtocolsDocIsCurrent) {
  Proc r = prepatch({"plan", "--markdown"});
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string doc = read_file(std::string(SOURCE_DIR) + "/docs/PROTOCOLS.md");
  const std::string marker = "<!-- generated by `prepatch plan --markdown`";
  auto at = doc.find(marker);
  ASSERT_NE(at, std::string::npos) << "docs/PROTOCOLS.md lacks the generated section";
  EXPECT_EQ(doc.substr(at), r.out) << "docs/PROTOCOLS.md is stale: run scripts/gen-protocols.sh";
  EXPECT_EQ(r.out.find("FAILURES"), std::string::npos);
  EXPECT_EQ(r.out.find("NOT REJECTED"), std::string::npos);
}

}  // namespace
}  // namespace prepatch::test
