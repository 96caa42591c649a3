// Plans for people: `prepatch plan` and the generated part of docs/PROTOCOLS.md, both rendered from
// the plan data and the checker's results, so neither can drift from what the shim runs.
#pragma once
#include <string>

#include "arch/check.h"

namespace prepatch::arch {

// The plan, step by step, with the bytes and instructions the site holds after each step, the rule
// and assumption it rests on, and the checker's verdict for this site.
// `with_rule`: also state the rule and the fetch-atomicity assumption (the generated doc states them
// once per ISA instead).
std::string describe_plan(Isa isa, SiteKind kind, const Plan& plan, const SiteForm& site, bool enable, bool with_rule = true);

// The generated section of docs/PROTOCOLS.md: every ISA's plans and the sweep's results, then the
// seeds' counter-examples as the checker prints them. Runs the full sweep (a few seconds).
std::string protocols_markdown();

// A site to show when the user gives no address: one that straddles an 8-byte word where the ISA
// allows it, so the interesting case is the default. A Thumb-2 site of `length` 8 (ARM-state -pg),
// whose word is 4-aligned and so straddles nothing, is shown at the next 4-aligned address.
u64 example_site_address(Isa isa, unsigned length = 0);

}  // namespace prepatch::arch
