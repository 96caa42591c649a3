// The plan checker: proves a plan (arch/plan.h) safe at a concrete site, or prints a counter-example.
//
// Model. The plan runs through the same run_step()/phase() the shim uses, against a recording memory.
// Its syncs cut the run into epochs. Within an epoch another core may fetch any mix of the stores
// issued since the last sync (a view), at the ISA's fetch-atomicity granularity (IsaInfo::fetch_atomic:
// a naturally aligned store up to that width is seen whole or not at all, any other store byte by
// byte); after a sync every core sees everything written before it. A thread runs through the site one
// instruction at a time and may be stopped between any two instructions and resume in any later epoch
// (the PowerPC mflr/bl scenario), so each instruction is fetched from a view at least as late as the
// previous one's. Every such run is decoded with the ISA's real decoder, from the site's start and from
// every resume point, and must execute exactly the old form's instructions or exactly the new form's,
// where a trap at the toggled instruction counts as the new instruction (the shim's handler emulates
// it). Anything else is a counter-example: a hybrid or undefined instruction, a resume point inside an
// instruction, a trap the handler cannot resolve, or a mix of old and new instructions (a call whose
// setup never ran). On AArch64 every word a store changes must also be on the CMODX list before and
// after, and so must ARM32's ARM-state words, on ARMv7's list (A3.5.4).
#pragma once
#include <string>
#include <vector>

#include "arch/isa.h"

namespace prepatch::arch {

struct CheckResult {
  bool ok = false;
  u64 views = 0;  // distinct memory views enumerated, over all epochs
  u64 runs = 0;   // thread positions explored (epoch, resume point, form so far)
  std::string counter_example;  // when !ok: what went wrong and the sequence of views that shows it
};

// Checks `plan` switching `site` on (enable) or off.
CheckResult check_plan(Isa isa, const Plan& plan, const SiteForm& site, bool enable);

// Every plan the shim ships (plan_for), for every site kind and length of every ISA, at every
// alignment the ISA allows within a 64-byte line (so sites straddle 8-byte words and lines), with
// trampolines at a spread of distances, in both directions; and for trap sites, where the ISA has them.
struct SweepResult {
  u64 checks = 0, views = 0, runs = 0;
  u64 trap_checks = 0;  // of the checks, those of trap sites (arch/isa.h trap_site_form)
  std::vector<std::string> failures;  // "isa kind len@addr enable: counter-example", at most a few
};
SweepResult check_shipped_plans(Isa isa);
// Whether `isa` has a site of `kind` and `len` bytes at `addr` for the sweep: every kind, length and
// instruction-aligned address, but ARM32's ARM-state sites (8 bytes), which are -pg only and 4-aligned.
bool has_site(Isa isa, SiteKind kind, unsigned len, u64 addr);

// The trampoline distances a sweep tries for `isa`: short and long, both ways, and a spread of low
// bits (RISC-V's and Thumb's call encodings put displacement bits in the halfword a trap replaces).
std::vector<i64> sweep_distances(Isa isa);

}  // namespace prepatch::arch
