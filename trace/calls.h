// A graph thread's calls, matched as its events stream past: every entry opens a call, its exit or
// unwound record closes it. report, replay and export all see calls through this one matcher, which
// holds only the calls open at the moment (the call depth), whatever the trace's length.
#pragma once
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "trace/reader.h"

namespace prepatch::trace {

struct Call {
  u64 begin = 0, end = 0;  // ns; end is set when the call closes
  u64 child_ns = 0;    // the durations of its direct callees, once they closed
  u32 site = 0, depth = 0;  // depth: the calls open when it began
  bool finished = false;  // it closed with an exit record
  bool unwound = false;   // it closed with an unwound record (left without returning)
  bool cut = false;       // still open where a snapshot's copy ends
  u8 mark = 0;            // the consumer's own
  u8 args = 0;            // arguments recorded (PREPATCH_ARGS): CallMatcher::args() holds them
  bool has_retval = false;  // a return value was recorded (PREPATCH_RETVAL)
  u64 retval = 0;
};

// A recorded value as the views print it: small integers in decimal, the rest (pointers, most
// likely) in hex.
inline std::string value_text(u64 v) {
  const auto s = static_cast<long long>(v);
  if (s > -65536 && s < 65536) return std::to_string(s);
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// A `function` trace's last call, held until the next event: its arguments (value events) follow it.
struct HeldCall {
  std::optional<Event> call;
  u64 args[6] = {};
  u8 nargs = 0;
  void hold(const Event& e) { call = e, nargs = 0; }
  void value(const Event& e) {
    if (call && e.site < 6) args[e.site] = e.rest, nargs = std::max<u8>(nargs, static_cast<u8>(e.site + 1));
  }
  void reset() { call.reset(), nargs = 0; }
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
    if (e.type == value_event) return value(e);
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
    const bool had_retval = retval_pending_;
    retval_pending_ = false;
    while (k > 0 && open_[k - 1].site != e.site) k--;
    if (k == 0) {
      // A call entered before the thread's first record kept (a ring overwrote its entry, or a
      // snapshot's copy starts inside it): a handler that shows such exits gets it.
      if constexpr (requires { h_.cut_exit(e); }) h_.cut_exit(e);
      return;
    }
    while (open_.size() > k) close_top(e.ns, false, false);
    if (had_retval && e.type == shim::rec_exit) open_.back().has_retval = true, open_.back().retval = retval_;
    close_top(e.ns, e.type == shim::rec_exit, e.type == shim::rec_unwound);
  }

  // The arguments recorded of call `c` (c.args of them), until another call at its depth begins.
  const u64* args(const Call& c) const { return args_.data() + size_t{c.depth} * 6; }

  // The calls open now, the innermost last.
  std::vector<Call>& open() { return open_; }

  // The thread's events ended: what is still open closes at its last event's time, unfinished, or
  // `cut` (the file is a snapshot: the calls went on after it).
  void finish(bool cut = false) {
    while (!open_.empty()) open_.back().cut = cut, close_top(last_, false, false);
  }

 private:
  void close_top(u64 ns, bool finished, bool unwound) {
    Call c = open_.back();
    open_.pop_back();
    c.end = ns, c.finished = finished, c.unwound = unwound;
    if (!open_.empty()) open_.back().child_ns += c.end - c.begin;
    h_.close(c, open_);
  }

  // A value: an argument of the call entered last (the innermost open one, before any callee of it),
  // or the return value of the exit next.
  void value(const Event& e) {
    if (e.site == shim::rec_value_retval) return void((retval_pending_ = true, retval_ = e.rest));
    if (e.site >= 6 || open_.empty()) return;
    Call& c = open_.back();
    if (args_.size() < (open_.size()) * 6) args_.resize(open_.size() * 6);
    args_[size_t{c.depth} * 6 + e.site] = e.rest;
    if (e.site + 1u > c.args) c.args = static_cast<u8>(e.site + 1);
  }

  Handler& h_;
  std::vector<Call> open_;
  std::vector<u64> args_;  // per depth, the arguments of the call open there
  u64 last_ = 0;
  bool retval_pending_ = false;
  u64 retval_ = 0;
};

// Thread `k`'s events as the exports show them: a graph trace's records through `m` (its handler gets
// each call; a snapshot's calls still open at its end are cut), a function trace's calls with the
// arguments that follow each (`call(const Event&, const u64* args, u8 n)`), and a fatal signal the
// thread got (`signal(const Event&)`).
template <class Handler, class OnCall, class OnSignal>
void stream_thread(TraceFile& t, size_t k, CallMatcher<Handler>& m, OnCall call, OnSignal signal) {
  TraceFile::Stream s(t, k, 256 * 1024, true, true);
  HeldCall held;  // a function call waits for its arguments
  const auto flush = [&] {
    if (held.call) call(*held.call, held.args, held.nargs);
    held.reset();
  };
  for (Event e; s.next(e);) {
    if (t.graph() && e.type != signal_event) m.event(e);
    else if (e.type == value_event) held.value(e);
    else if (flush(), e.type == signal_event) signal(e);
    else held.hold(e);
  }
  flush();
  if (t.graph()) m.finish(t.header().snapshot != 0);
}

}  // namespace prepatch::trace
