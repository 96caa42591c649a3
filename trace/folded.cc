// `prepatch export --format folded`: collapsed stacks, the input of flamegraph.pl, speedscope, inferno
// and Perfetto. One line per distinct call stack, outermost function first, `;` between them, then the
// nanoseconds spent in its innermost function itself (its self time), summed over every thread.
#include <vector>

#include "trace/stacks.h"

namespace prepatch::trace {

void export_folded(TraceFile& t, Output& out) {
  const Stacks stacks(t, "folded");
  const std::vector<Stacks::Node>& nodes = stacks.nodes();
  std::vector<u32> chain;
  for (u32 k = 1; k < nodes.size(); k++) {
    if (!nodes[k].self) continue;
    chain.clear();
    for (u32 n = k; n != Stacks::root; n = nodes[n].parent) chain.push_back(n);
    for (size_t i = chain.size(); i-- > 0;) {
      for (char ch : t.name(nodes[chain[i]].site)) out.put(ch == ';' ? ':' : ch);  // `;` separates frames
      out.put(i ? ';' : ' ');
    }
    out.num(nodes[k].self).put('\n');
  }
}

}  // namespace prepatch::trace
