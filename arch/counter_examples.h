// The plans the seeds argue against, as data: each must be rejected by the checker (tests assert it,
// docs/PROTOCOLS.md shows the counter-example the checker prints). None of them is ever executed.
#pragma once
#include <string_view>
#include <vector>

#include "arch/isa.h"

namespace prepatch::arch {

struct CounterExample {
  std::string_view id;     // stable name, used by tests
  std::string_view what;   // the plan, and why the seeds say it breaks
  Isa isa;
  Plan plan;
  SiteForm site;
  bool enable = true;
};
std::vector<CounterExample> seed_counter_examples();

}  // namespace prepatch::arch
