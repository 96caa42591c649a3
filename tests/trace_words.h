// Traces as words the tests compare: a graph thread's events, one "E name depth" (entered), "X name
// depth" (left) or "U name depth" (unwound) each.
#pragma once
#include <string>
#include <vector>

#include "shim/abi.h"
#include "trace/trace.h"

namespace prepatch::test {

inline std::vector<std::string> graph_words(const trace::Trace& t, const trace::ThreadTrace& th) {
  std::vector<std::string> w;
  for (const trace::Event& e : th.events)
    w.push_back(std::string(e.type == shim::rec_entry ? "E " : e.type == shim::rec_exit ? "X " : "U ") + t.names[e.site] + " " +
                std::to_string(e.rest));
  return w;
}

}  // namespace prepatch::test
