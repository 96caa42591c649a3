// A graph thread's calls, matched as its events stream past: every entry opens a call, its exit or
// unwound record closes it. report, replay and export all see calls through this one matcher, which
// holds only the calls open at the moment (the call depth), whatever the trace's length.
#pragma once
#include <vector>

#include "trace/reader.h"

namespace prepatch::trace {

struct Call {
  u64 begin = 0, end = 0;  // ns; end is set when the call closes
  u64 child_ns = 0;    // the durations of its direct callees, once they closed
  u32 site = 0, depth = 0;  // depth: the calls open when it began
  bool finished = false;  // it closed with an exit record
  bool unwound = false;   // it closed with an unwound record (left without returning)
  u8 mark = 0;            // the consumer's own
};

// Handler: void enter(std::vector<Call>& open) once the call is pushed (open.back(); its callers
// below it); void close(const Call& c, std::vector<Call>& open) after c is popped, its end and its
// parent's child_ns set.
template <class Handler>
class CallMatcher {
 public:
  explicit CallMatcher(Handler& h) : h_(h) {}

  void event(const Event& e) {
    if (e.type == signal_event) return;  // no call's entry or exit
    last_ = e.ns;
    if (e.type == shim::rec_entry) {
      // An entry at a depth the open calls do not reach means records were lost: close what is deeper.
      while (open_.size() > e.rest) close_top(e.ns, false, false);
      // Built in place: a Call assembled on the stack and copied in stalled on store forwarding.
      Call& c = open_.emplace_back();
      c.begin = e.ns, c.site = e.site, c.depth = static_cast<u32>(open_.size() - 1);
      h_.enter(open_);
      return;
    }
    // exit or unwound: closes the innermost open call of that site and those it left open; an exit
    // whose entry was lost matches nothing and is skipped.
    size_t k = open_.size();
    while (k > 0 && open_[k - 1].site != e.site) k--;
    if (k == 0) return;
    while (open_.size() > k) close_top(e.ns, false, false);
    close_top(e.ns, e.type == shim::rec_exit, e.type == shim::rec_unwound);
  }

  // The calls open now, the innermost last.
  std::vector<Call>& open() { return open_; }

  // The thread's events ended: what is still open closes at its last event's time, unfinished.
  void finish() {
    while (!open_.empty()) close_top(last_, false, false);
  }

 private:
  void close_top(u64 ns, bool finished, bool unwound) {
    Call c = open_.back();
    open_.pop_back();
    c.end = ns, c.finished = finished, c.unwound = unwound;
    if (!open_.empty()) open_.back().child_ns += c.end - c.begin;
    h_.close(c, open_);
  }

  Handler& h_;
  std::vector<Call> open_;
  u64 last_ = 0;
};

}  // namespace prepatch::trace
