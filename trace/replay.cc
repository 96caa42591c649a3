// `prepatch replay`: every thread's events, merged in time order. Each thread's lines are made as its
// stream is read and held only until the merge writes them, so memory grows with the threads and the
// call depth, not the trace.
#include <algorithm>
#include <memory>
#include <queue>

#include "shim/core.h"
#include "trace/calls.h"
#include "trace/trace.h"

namespace prepatch::trace {
namespace {

// Which sites the --function globs select, decided once per site, on the raw and the demangled name.
class Wanted {
 public:
  Wanted(TraceFile& t, const std::string& globs)
      : t_(t), all_(globs.empty()), text_(globs), globs_(shim::glob_list(all_ ? nullptr : text_.c_str())), known_(t.sites(), -1) {}
  bool operator()(u32 site) {
    if (all_) return true;
    if (known_[site] < 0) known_[site] = globs_.matches(std::string(t_.mangled(site)).c_str()) || globs_.matches(t_.name(site).c_str());
    return known_[site];
  }

 private:
  TraceFile& t_;
  bool all_;
  std::string text_;
  shim::GlobList globs_;
  std::vector<signed char> known_;
};

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
    *d++ = '\n';
    text.commit(d);
    ends.emplace_back(ns, text.size());
  }
  std::string_view pop() {
    const size_t to = ends[head++].second;
    std::string_view s(text.data() + from, to - from);
    from = to;
    return s;
  }
  void clear() { text.clear(), ends.clear(), head = from = 0; }
};

constexpr u8 shown = 1, pending = 2;  // Call::mark: the call is shown; its line waits to learn if it is a leaf

// A thread's lines, made on demand. Graph: a call is shown when it or one of its callers matches;
// indentation is by depth. A call with no callee is one line; others open a brace that closes with
// the call.
class ThreadLines {
 public:
  ThreadLines(TraceFile& t, size_t k, Wanted& wanted, u64 window)
      : t_(t), stream_(t, k, window), wanted_(wanted), matcher_(*this) {
    char b[2 * max_number];
    *b = ' ';
    char* d = put_num(b + 1, t.tid(k), 8);
    *d++ = ' ', *d++ = ' ';
    lines.tid.assign(b, d);
  }

  // Reads until a line is ready or the thread's events end; false when no line is left.
  bool fill() {
    if (!lines.empty()) return true;
    lines.clear();
    Event e;
    while (lines.empty() && !ended_) {
      if (!stream_.next(e)) {
        if (t_.graph()) matcher_.finish();
        ended_ = true;
      } else if (t_.graph()) {
        matcher_.event(e);
      } else {
        call_line(e);
      }
    }
    return !lines.empty();
  }

  void enter(std::vector<Call>& open) {
    Call& c = open.back();
    Call* caller = open.size() > 1 ? &open[open.size() - 2] : nullptr;
    if (caller && (caller->mark & pending)) {  // the caller has a callee: a brace
      Call& p = *caller;
      p.mark &= ~pending;
      const std::string& name = t_.call(p.site);
      char* d = lines.begin(p.begin, 12 + 3 + 2 * p.depth + name.size() + 4);
      d = put(static_cast<char*>(std::memset(d, ' ', 12)) + 12, " | ");
      d = static_cast<char*>(std::memset(d, ' ', 2 * p.depth)) + 2 * p.depth;
      d = put(put(d, name), " {");
      lines.end(p.begin, d);
    }
    if (wanted_(c.site) || (caller && (caller->mark & shown))) c.mark = shown | pending;
  }

  void close(const Call& c, std::vector<Call>&) {
    if (!(c.mark & shown)) return;
    const bool leaf = c.mark & pending;
    const std::string& name = leaf ? t_.call(c.site) : t_.name(c.site);
    const u64 ns = leaf ? c.begin : c.end;
    char* d = lines.begin(ns, 12 + 3 + 2 * c.depth + name.size() + 24);
    d = put(put_duration(d, c.end - c.begin, 12), " | ");
    d = static_cast<char*>(std::memset(d, ' ', 2 * c.depth)) + 2 * c.depth;
    if (leaf) {
      d = put(put(d, name), ";");
      d = put(d, c.unwound ? " /* unwound */" : !c.finished ? " /* unfinished */" : "");
    } else {
      d = put(put(d, "} /* "), name);
      d = put(d, c.unwound ? " (unwound) */" : !c.finished ? " (unfinished) */" : " */");
    }
    lines.end(ns, d);
  }

  Lines lines;

 private:
  // function: one line per call, with its caller: the traced function whose site precedes the return
  // address most closely.
  void call_line(const Event& e) {
    if (!wanted_(e.site)) return;
    const std::string& name = t_.call(e.site);
    const std::string* caller = nullptr;
    if (e.rest != shim::rec_caller_unknown) {
      const std::vector<TableEntry>& es = t_.table().entries;
      auto it = std::upper_bound(es.begin(), es.end(), e.rest, [](u64 a, const TableEntry& x) { return a < x.addr; });
      if (it != es.begin()) caller = &t_.name(static_cast<u32>(it - es.begin()) - 1);
    }
    char* d = lines.begin(e.ns, name.size() + 6 + (caller ? caller->size() : 0) + 24);
    d = put(put(d, name), " <- ");
    if (e.rest == shim::rec_caller_unknown) {
      *d++ = '?';
    } else {
      if (caller) d = put(put(d, *caller), " (");
      d = put_hex(d, e.rest);
      if (caller) *d++ = ')';
    }
    lines.end(e.ns, d);
  }

  TraceFile& t_;
  TraceFile::Stream stream_;
  Wanted& wanted_;
  CallMatcher<ThreadLines> matcher_;
  bool ended_ = false;
};

}  // namespace

void replay(TraceFile& t, const ReplayFilter& f, Output& out) {
  Wanted wanted(t, f.functions);
  std::vector<size_t> picked;
  for (size_t k = 0; k < t.threads(); k++)
    if (f.tids.empty() || std::find(f.tids.begin(), f.tids.end(), t.tid(k)) != f.tids.end()) picked.push_back(k);
  // Windows small enough that many threads' together stay within 64 MiB.
  const u64 window = std::clamp<u64>((64 << 20) / std::max<size_t>(picked.size(), 1), 4096, 256 * 1024);
  std::vector<std::unique_ptr<ThreadLines>> threads;
  for (size_t k : picked) threads.push_back(std::make_unique<ThreadLines>(t, k, wanted, window));
  out.put(t.graph() ? "#     TIME(us)      TID     DURATION | FUNCTION\n" : "#     TIME(us)      TID  FUNCTION <- CALLER\n");
  // Merge by time, each thread's lines kept in their own order; of equal times, the lower tid first.
  using Head = std::pair<u64, size_t>;  // the next line's time, the thread
  std::priority_queue<Head, std::vector<Head>, std::greater<>> heads;
  for (size_t i = 0; i < threads.size(); i++)
    if (threads[i]->fill()) heads.emplace(threads[i]->lines.ends[threads[i]->lines.head].first, i);
  while (!heads.empty()) {
    const size_t i = heads.top().second;
    heads.pop();
    Lines& l = threads[i]->lines;
    out.put(l.pop());
    // A thread alone (or the earliest by far) writes on without going through the heap.
    while (threads[i]->fill() && (heads.empty() || Head(l.ends[l.head].first, i) < heads.top())) out.put(l.pop());
    if (!l.empty()) heads.emplace(l.ends[l.head].first, i);
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
