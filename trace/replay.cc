// `prepatch replay`: every thread's events, merged in time order. Each thread's lines are made as its
// stream is read and held only until the merge writes them, so memory grows with the threads and the
// call depth, not the trace.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <memory>
#include <optional>
#include <queue>

#include "rewriter/names.h"
#include "shim/core.h"
#include "trace/calls.h"
#include "trace/wanted.h"
#include "trace/trace.h"

namespace prepatch::trace {
namespace {


// One thread's lines not yet written: their text, and per line its time and where it ends.
struct Lines {
  Buffer text;
  std::vector<std::pair<u64, size_t>> ends;
  size_t head = 0, from = 0;  // the next line to write, and where its text starts
  bool empty() const { return head == ends.size(); }
  std::string tid;  // " %8u  " of the thread's tid
  // Room for a line of `tail` bytes after its time and thread; returns where the tail goes.
  char* begin(u64 ns, size_t tail) {
    return put(put_micros(text.reserve(tid.size() + tail + 1 + 2 * max_number), ns, 14), tid);
  }
  void end(u64 ns, char* d) {
    if (ns < since || ns > until) return;  // outside --since/--until: its text is not committed
    *d++ = '\n';
    text.commit(d);
    ends.emplace_back(ns, text.size());
  }
  u64 since = 0, until = ~u64{0};
  std::string_view pop() {
    const size_t to = ends[head++].second;
    std::string_view s(text.data() + from, to - from);
    from = to;
    return s;
  }
  void clear() { text.clear(), ends.clear(), head = from = 0; }
  // Drops the lines made since there were `lines` of them in `bytes`.
  void drop_to(size_t lines, size_t bytes) { ends.resize(lines), text.truncate(bytes); }
};

constexpr u8 shown = 1, pending = 2;  // Call::mark: the call is shown; its line waits to learn if it is a leaf

// ftrace's function_graph marks before a duration: + over 10 us, ! 100 us, # 1 ms, * 10 ms, @ 100 ms,
// $ 1 s (Documentation/trace/ftrace.rst, "funcgraph-duration").
char duration_mark(u64 ns) {
  return ns > 1000000000 ? '$' : ns > 100000000 ? '@' : ns > 10000000 ? '*' : ns > 1000000 ? '#' : ns > 100000 ? '!' : ns > 10000 ? '+' : ' ';
}

// `call` (a name as a call: "f()", "ns::f(int)") with the values `v` in place of its parameters:
// "f(1, 0x7ffd5c3a)", "ns::f(1)".
std::string with_args(const std::string& call, const u64* v, u8 n) {
  size_t open = call.size(), close = call.rfind(')');
  if (close != std::string::npos) {  // the parameter list: the last ')' and the '(' it closes
    int depth = 0;
    for (size_t i = close + 1; i-- > 0;) {
      if (call[i] == ')') depth++;
      else if (call[i] == '(' && --depth == 0) {
        open = i;
        break;
      }
    }
  }
  std::string r = call.substr(0, open) + "(";
  for (u8 k = 0; k < n; k++) {
    if (k) r += ", ";
    r += value_text(v[k]);
  }
  return r + ")" + (open < call.size() ? call.substr(close + 1) : "");
}

// A thread's lines, made on demand. Graph: a call is shown when it or one of its callers matches;
// indentation is by depth. A call with no callee is one line; others open a brace that closes with
// the call.
class ThreadLines {
 public:
  ThreadLines(TraceFile& t, size_t k, Wanted& wanted, u64 window, const ReplayFilter& f)
      : t_(t), stream_(t, k, window, true, true), wanted_(wanted), matcher_(*this), depth_(f.depth), threshold_(f.threshold), since_(f.since), until_(f.until) {
    char b[2 * max_number];
    *b = ' ';
    char* d = put_num(b + 1, t.tid(k), 8);
    *d++ = ' ', *d++ = ' ';
    lines.tid.assign(b, d);
  }

  // Makes lines into `lines` until they hold `target` bytes or the thread's events end.
  // A block ends only where no call is undecided (its lines may yet be dropped).
  void make(size_t target) {
    lines.since = since_, lines.until = until_;  // (lines is a block the merge hands over)
    Event e;
    while ((lines.text.size() < target || known_long_ != regions_.size()) && !ended_) {
      if (!stream_.next(e)) {
        if (t_.graph()) matcher_.finish(t_.header().snapshot != 0);
        else flush_call();
        ended_ = true;
      } else if (t_.graph() && e.type != signal_event) {
        if (threshold_) decide(e.ns);
        matcher_.event(e);
      } else if (e.type == value_event) {  // function: an argument of the call before
        held_.value(e);
      } else {
        if (!t_.graph()) flush_call();
        if (e.type == signal_event) signal_line(e);
        else held_.hold(e);  // its line waits for its arguments
      }
    }
  }
  bool ended() const { return ended_; }

  void enter(std::vector<Call>& open) {
    Call& c = open.back();
    if (depth_ && c.depth >= depth_) return;  // deeper than --depth: not a callee the caller shows
    Call* caller = open.size() > 1 ? &open[open.size() - 2] : nullptr;
    if (!(wanted_(c.site) || (caller && (caller->mark & shown)))) return;
    const size_t before_lines = lines.ends.size(), before_bytes = lines.text.size();
    const bool braced = caller && (caller->mark & pending);
    if (braced) brace(*caller);  // the caller has a callee shown
    c.mark = shown | pending;
    // Under --threshold the call's lines, and its callees', wait to learn whether it lasts that long.
    if (threshold_) regions_.push_back({c.depth, c.begin, lines.ends.size(), lines.text.size(), braced, before_lines, before_bytes});
  }

  // The line that opens call `p`, shown once it has a callee (or a signal came inside it).
  void brace(Call& p) {
    p.mark &= ~pending;
    std::string with;
    const std::string& name = p.args ? (with = with_args(t_.call(p.site), matcher_.args(p), p.args)) : t_.call(p.site);
    char* d = lines.begin(p.begin, 12 + 3 + 2 * p.depth + name.size() + 4);
    d = put(static_cast<char*>(std::memset(d, ' ', 12)) + 12, " | ");
    d = static_cast<char*>(std::memset(d, ' ', 2 * p.depth)) + 2 * p.depth;
    d = put(put(d, name), " {");
    lines.end(p.begin, d);
  }

  // The exit of a call entered before the thread's first record kept: `} /* f (cut) */`, its duration
  // not known, outside every call the trace shows.
  void cut_exit(const Event& e) {
    if (!wanted_(e.site)) return;
    const std::string& name = t_.name(e.site);
    char* d = lines.begin(e.ns, 12 + 3 + name.size() + 16);
    d = put(static_cast<char*>(std::memset(d, ' ', 12)) + 12, " | } /* ");
    lines.end(e.ns, put(put(d, name), " (cut) */"));
  }

  // A fatal signal the thread got (the shim marked where): a line inside the calls open then, which
  // are shown whatever their duration.
  void signal_line(const Event& e) {
    known_long_ = regions_.size();
    size_t depth = 0;
    if (t_.graph()) {
      std::vector<Call>& open = matcher_.open();
      if (!open.empty() && (open.back().mark & pending)) brace(open.back());
      depth = open.size();
    }
    const std::string text = "*** " + signal_name(e.rest) + " ***";
    char* d = lines.begin(e.ns, 12 + 3 + 2 * depth + text.size());
    if (t_.graph()) {  // in the duration column's place, blank; indented as a callee of the innermost open call
      d = put(static_cast<char*>(std::memset(d, ' ', 12)) + 12, " | ");
      d = static_cast<char*>(std::memset(d, ' ', 2 * depth)) + 2 * depth;
    }
    lines.end(e.ns, put(d, text));
  }

  void close(const Call& c, std::vector<Call>& open) {
    if (!(c.mark & shown)) return;
    if (threshold_ && !regions_.empty() && regions_.back().depth == c.depth) {
      const Region r = regions_.back();
      regions_.pop_back();
      const bool known = known_long_ > regions_.size();
      if (known) known_long_ = regions_.size();
      if (!known && c.end - c.begin < threshold_) {  // too short: it and its callees go
        if (!r.braced || open.empty()) return lines.drop_to(r.lines, r.bytes);
        open.back().mark |= pending;  // its caller's brace too, which it made: the caller may be a leaf again
        return lines.drop_to(r.brace_lines, r.brace_bytes);
      }
    }
    const bool leaf = c.mark & pending;
    std::string with;
    const std::string& name = leaf && c.args ? (with = with_args(t_.call(c.site), matcher_.args(c), c.args)) : leaf ? t_.call(c.site) : t_.name(c.site);
    const std::string retval = c.has_retval ? value_text(c.retval) : std::string();
    const u64 ns = leaf ? c.begin : c.end;
    char* d = lines.begin(ns, 12 + 3 + 2 * c.depth + name.size() + 24 + retval.size() + 8);
    char* column = d;
    d = put(put_duration(d, c.end - c.begin, 12), " | ");
    if (*column == ' ') *column = duration_mark(c.end - c.begin);
    d = static_cast<char*>(std::memset(d, ' ', 2 * c.depth)) + 2 * c.depth;
    if (leaf) {
      d = put(put(d, name), ";");
      d = put(d, c.unwound ? " /* unwound */" : c.cut ? " /* cut */" : !c.finished ? " /* unfinished */" : "");
      if (c.has_retval) d = put(put(put(d, " /* = "), retval), " */");
    } else {
      d = put(put(d, "} /* "), name);
      if (c.has_retval) d = put(put(d, " = "), retval);
      d = put(d, c.unwound ? " (unwound) */" : c.cut ? " (cut) */" : !c.finished ? " (unfinished) */" : " */");
    }
    lines.end(ns, d);
  }

  Lines lines;

 private:
  // function: one line per call, with its caller: the traced function whose site precedes the return
  // address most closely.
  void flush_call() {
    if (held_.call) call_line(*held_.call);
    held_.reset();
  }
  void call_line(const Event& e) {
    if (!wanted_(e.site)) return;
    std::string with;
    const std::string& name = held_.nargs ? (with = with_args(t_.call(e.site), held_.args, held_.nargs)) : t_.call(e.site);
    const std::string* caller = nullptr;
    u64 link = e.rest;
    if (e.rest != shim::rec_caller_unknown)
      if (const long site = t_.caller(e.rest, link); site >= 0) caller = &t_.name(static_cast<u32>(site));
    char* d = lines.begin(e.ns, name.size() + 6 + (caller ? caller->size() : 0) + 24);
    d = put(put(d, name), " <- ");
    if (e.rest == shim::rec_caller_unknown) {
      *d++ = '?';
    } else {
      if (caller) d = put(put(d, *caller), " (");
      d = put_hex(d, link);
      if (caller) *d++ = ')';
    }
    lines.end(e.ns, d);
  }

  // --threshold: the calls shown and open, outermost first, each with where its lines begin; the first
  // `known_long_` are known to last the threshold (they began that long before an event seen since).
  struct Region {
    u32 depth;
    u64 begin;
    size_t lines, bytes;
    bool braced;  // its entry made its caller's brace line, which began at brace_lines, brace_bytes
    size_t brace_lines, brace_bytes;
  };
  void decide(u64 now) {
    while (known_long_ < regions_.size() && now - regions_[known_long_].begin >= threshold_) known_long_++;
  }

  TraceFile& t_;
  TraceFile::Stream stream_;
  Wanted& wanted_;
  CallMatcher<ThreadLines> matcher_;
  const u32 depth_;
  const u64 threshold_;
  std::vector<Region> regions_;
  size_t known_long_ = 0;
  const u64 since_, until_;
  bool ended_ = false;
  HeldCall held_;  // function: the last call, whose arguments may follow it
};

}  // namespace

namespace {

// The threads' lines as blocks of about `block` bytes, made ahead of the merge by a helper thread (the
// merge's thread makes a block itself when none is ready and none is being made): at most `ahead`
// blocks wait per thread, so memory stays bounded by the threads' count.
class Blocks {
 public:
  Blocks(std::vector<std::unique_ptr<ThreadLines>>& makers, size_t block) : makers_(makers), tracks_(makers.size()), block_(block) {
    for (size_t i = 0; i < makers.size(); i++) tracks_[i].tid = makers[i]->lines.tid;
    if (!makers.empty()) helper_ = std::thread([this] { help(); });
  }
  ~Blocks() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    if (helper_.joinable()) helper_.join();
  }

  // Thread i's next block, into `into` (its lines consumed, its buffers kept for another block):
  // false when the thread has no more.
  bool next(size_t i, Lines& into) {
    std::unique_lock<std::mutex> lock(m_);
    if (spare_.size() < tracks_.size() + 2) {
      into.clear();
      spare_.push_back(std::move(into));
    }
    Track& t = tracks_[i];
    while (t.ready.empty() && !t.ended && !failed_) {
      if (!t.making) {
        make(i, lock);
        continue;
      }
      // The helper is making this one: make another meanwhile rather than wait.
      const size_t j = pick();
      if (j == tracks_.size()) cv_.wait(lock);
      else make(j, lock);
    }
    if (failed_) std::rethrow_exception(failed_);
    if (t.ready.empty()) return false;
    into = std::move(t.ready.front());
    t.ready.pop_front();
    cv_.notify_all();
    return true;
  }

 private:
  struct Track {
    std::deque<Lines> ready;
    std::string tid;
    bool making = false, ended = false;
  };
  static constexpr size_t ahead = 4;

  // Makes one block of thread i, unlocked meanwhile; `lock` is held on entry and on return.
  void make(size_t i, std::unique_lock<std::mutex>& lock) {
    Track& t = tracks_[i];
    t.making = true;
    Lines b;
    if (!spare_.empty()) b = std::move(spare_.back()), spare_.pop_back();
    lock.unlock();
    b.tid = t.tid;
    bool ended = false;
    std::exception_ptr failed;
    try {
      ThreadLines& m = *makers_[i];
      std::swap(m.lines, b);
      m.make(block_);
      std::swap(m.lines, b);
      ended = m.ended();
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    t.making = false;
    if (!b.empty()) t.ready.push_back(std::move(b));
    t.ended = ended || failed;
    if (failed && !failed_) failed_ = failed;
    cv_.notify_all();
  }

  // The thread with the fewest blocks ready that nobody makes and that may have more, or none.
  size_t pick() const {
    size_t best = tracks_.size();
    for (size_t i = 0; i < tracks_.size(); i++) {
      const Track& t = tracks_[i];
      if (!t.making && !t.ended && t.ready.size() < ahead && (best == tracks_.size() || t.ready.size() < tracks_[best].ready.size())) best = i;
    }
    return best;
  }

  void help() {
    std::unique_lock<std::mutex> lock(m_);
    while (!stop_ && !failed_) {
      const size_t i = pick();
      if (i == tracks_.size()) cv_.wait(lock);
      else make(i, lock);
    }
  }

  std::vector<std::unique_ptr<ThreadLines>>& makers_;
  std::vector<Track> tracks_;
  std::vector<Lines> spare_;  // blocks written out, their buffers reused (no allocation per block)
  const size_t block_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::exception_ptr failed_;
  std::thread helper_;
};

}  // namespace

void replay(TraceFile& t, const ReplayFilter& f, Output& out) {
  if (f.threshold && !t.graph())
    throw InputError(t.file(), offsetof(shim::TraceHeader, tracer), "a function trace, which has no durations: --threshold needs a graph trace");
  Wanted wanted(t, f.functions);
  std::vector<size_t> picked;
  for (size_t k = 0; k < t.threads(); k++)
    if (f.tids.empty() || std::find(f.tids.begin(), f.tids.end(), t.tid(k)) != f.tids.end()) picked.push_back(k);
  // Windows and blocks small enough that many threads' together stay within 64 MiB and 96 MiB.
  const size_t n = std::max<size_t>(picked.size(), 1);
  const u64 window = std::clamp<u64>((64 << 20) / n, 4096, 256 * 1024);
  const size_t block = std::clamp<size_t>((24 << 20) / n, 4096, 64 * 1024);
  std::vector<std::unique_ptr<ThreadLines>> makers;
  for (size_t k : picked) makers.push_back(std::make_unique<ThreadLines>(t, k, wanted, window, f));
  out.put(t.graph() ? "#     TIME(us)      TID     DURATION | FUNCTION\n" : "#     TIME(us)      TID  FUNCTION <- CALLER\n");
  {
    Blocks blocks(makers, block);
    std::vector<Lines> current(makers.size());
    const auto has_line = [&](size_t i) { return !current[i].empty() || blocks.next(i, current[i]); };
    // Merge by time, each thread's lines kept in their own order; of equal times, the lower tid first.
    using Head = std::pair<u64, size_t>;  // the next line's time, the thread
    std::priority_queue<Head, std::vector<Head>, std::greater<>> heads;
    for (size_t i = 0; i < makers.size(); i++)
      if (has_line(i)) heads.emplace(current[i].ends[current[i].head].first, i);
    while (!heads.empty()) {
      const size_t i = heads.top().second;
      heads.pop();
      Lines& l = current[i];
      out.put(l.pop());
      // A thread alone (or the earliest by far) writes on without going through the heap.
      while (has_line(i) && (heads.empty() || Head(l.ends[l.head].first, i) < heads.top())) out.put(l.pop());
      if (!l.empty()) heads.emplace(l.ends[l.head].first, i);
    }
  }
  // The threads not shown are still read, so that their damage is named as before.
  for (size_t k = 0; k < t.threads(); k++) {
    if (std::find(picked.begin(), picked.end(), k) != picked.end()) continue;
    TraceFile::Stream s(t, k);
    Event e;
    while (s.next(e)) {
    }
  }
}

}  // namespace prepatch::trace
