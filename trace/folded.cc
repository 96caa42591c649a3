// `prepatch export --format folded`: collapsed stacks, the input of flamegraph.pl, speedscope, inferno
// and Perfetto. One line per distinct call stack, outermost function first, `;` between them, then the
// nanoseconds spent in its innermost function itself (its self time), summed over every thread.
#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "trace/calls.h"
#include "trace/trace.h"

namespace prepatch::trace {
namespace {

// The stacks seen, as a tree: a node per (caller's node, site). Its memory grows with the number of
// distinct stacks, not with the trace's length.
class Stacks {
 public:
  Stacks() : nodes_{{no_node, 0, 0}} {}  // the root: no function
  void enter(std::vector<Call>& open) {
    const u32 parent = path_.empty() ? 0 : path_.back();
    const u64 key = u64{parent} << 32 | open.back().site;
    auto [it, added] = child_.try_emplace(key, static_cast<u32>(nodes_.size()));
    if (added) nodes_.push_back({parent, open.back().site, 0});
    path_.push_back(it->second);
  }
  void close(const Call& c, std::vector<Call>&) {
    nodes_[path_.back()].self += c.end - c.begin - c.child_ns;
    path_.pop_back();
  }
  // Every stack with self time, as a line.
  void write(TraceFile& t, Output& out) const {
    std::vector<u32> chain;
    for (u32 k = 1; k < nodes_.size(); k++) {
      if (!nodes_[k].self) continue;
      chain.clear();
      for (u32 n = k; n != 0; n = nodes_[n].parent) chain.push_back(n);
      for (size_t i = chain.size(); i-- > 0;) {
        for (char ch : t.name(nodes_[chain[i]].site)) out.put(ch == ';' ? ':' : ch);  // `;` separates frames
        out.put(i ? ';' : ' ');
      }
      out.num(nodes_[k].self).put('\n');
    }
  }

 private:
  static constexpr u32 no_node = ~u32{0};
  struct Node {
    u32 parent, site;
    u64 self;
  };
  std::vector<Node> nodes_;
  std::map<u64, u32> child_;  // (parent << 32 | site) -> node
  std::vector<u32> path_;    // the nodes of the calls open now
};

}  // namespace

void export_folded(TraceFile& t, Output& out) {
  if (!t.graph())
    throw InputError(t.file(), offsetof(shim::TraceHeader, tracer),
                     "a function trace, which has no durations: --format folded needs a graph trace (PREPATCH_TRACER=graph)");
  Stacks stacks;
  for (size_t k = 0; k < t.threads(); k++) {
    CallMatcher<Stacks> m(stacks);
    stream_thread(t, k, m, [](const Event&, const u64*, u8) {}, [](const Event&) {});
  }
  stacks.write(t, out);
}

}  // namespace prepatch::trace
