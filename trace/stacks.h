// A graph trace's call stacks as a tree: a node per distinct stack (caller's node, site), with the
// nanoseconds its innermost function spent itself, summed over every thread. Its memory grows with
// the number of distinct stacks, not with the trace's length. `export --format folded` writes it as
// lines, `--format svg` draws it.
#pragma once
#include <cstddef>
#include <map>
#include <vector>

#include "trace/calls.h"
#include "trace/trace.h"

namespace prepatch::trace {

class Stacks {
 public:
  struct Node {
    u32 parent, site;
    u64 self;  // ns
  };
  static constexpr u32 root = 0;  // no function: every thread's outermost calls are its children

  // Every graph call of `t`; throws InputError for a function trace (`format` names the export).
  Stacks(TraceFile& t, const char* format) : nodes_{{~u32{0}, 0, 0}} {
    if (!t.graph())
      throw InputError(t.file(), offsetof(shim::TraceHeader, tracer),
                       std::string("a function trace, which has no durations: --format ") + format +
                           " needs a graph trace (PREPATCH_TRACER=graph)");
    for (size_t k = 0; k < t.threads(); k++) {
      CallMatcher<Stacks> m(*this);
      stream_thread(t, k, m, [](const Event&, const u64*, u8) {}, [](const Event&) {});
      path_.clear();
    }
  }
  const std::vector<Node>& nodes() const { return nodes_; }  // a node's parent comes before it

  // CallMatcher's handler.
  void enter(std::vector<Call>& open) {
    const u32 parent = path_.empty() ? root : path_.back();
    const u64 key = u64{parent} << 32 | open.back().site;
    auto [it, added] = child_.try_emplace(key, static_cast<u32>(nodes_.size()));
    if (added) nodes_.push_back({parent, open.back().site, 0});
    path_.push_back(it->second);
  }
  void close(const Call& c, std::vector<Call>&) {
    nodes_[path_.back()].self += c.end - c.begin - c.child_ns;
    path_.pop_back();
  }

 private:
  std::vector<Node> nodes_;
  std::map<u64, u32> child_;  // (parent << 32 | site) -> node
  std::vector<u32> path_;     // the nodes of the calls open now
};

}  // namespace prepatch::trace
