// `prepatch report`: per function, calls (and under graph, total and self time, or a call's average,
// shortest and longest), over one trace file or several (a function's rows summed by its name), or
// the change between two sets of them (--diff). The threads' streams are independent, so workers
// take them one at a time, each summing into its own rows.
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <thread>
#include <unordered_map>

#include "trace/calls.h"
#include "trace/trace.h"
#include "trace/wanted.h"

namespace prepatch::trace {
namespace {

struct Row {
  u64 calls = 0, total = 0, self = 0;
  u64 min = ~u64{0}, max = 0, sum = 0;  // of the measure --avg-total or --avg-self names, per call
  void add(const Row& r) {
    calls += r.calls, total += r.total, self += r.self, sum += r.sum;
    min = std::min(min, r.min), max = std::max(max, r.max);
  }
};

// Sums one graph thread's calls that the options count. Total time counts a recursive function's
// outermost call only, as uftrace does: a call is outermost when no call of its function is open
// below it. A call not counted (too deep, too short, outside -F, inside -N) leaves its time in the
// self time of the nearest counted call around it.
struct Sums {
  const ReportOptions& o;
  Wanted &only, &skip;
  std::vector<Row>& rows;
  std::vector<u32> active;  // per site: its calls open now
  struct Open {
    bool candidate;  // counted if it lasts the threshold
    bool only, skip;
    u64 counted_child = 0;  // the durations of the counted calls it holds nearest
  };
  std::vector<Open> open_;  // beside the matcher's open calls
  u32 inside = 0, excluded = 0;

  void enter(std::vector<Call>& open) {
    Call& c = open.back();
    c.mark = active[c.site]++ == 0;
    Open x{false, !o.functions.empty() && only(c.site), !o.notrace.empty() && skip(c.site)};
    inside += x.only, excluded += x.skip;
    x.candidate = (o.functions.empty() || inside) && !excluded && (!o.depth || c.depth < o.depth);
    open_.push_back(x);
  }
  void close(const Call& c, std::vector<Call>&) {
    const Open x = open_.back();
    open_.pop_back();
    active[c.site]--;
    inside -= x.only, excluded -= x.skip;
    const u64 d = c.end - c.begin;
    if (!x.candidate || d < o.threshold) return;
    // The nearest candidate around it lasts at least as long, so it is counted too.
    for (size_t k = open_.size(); k-- > 0;)
      if (open_[k].candidate) {
        open_[k].counted_child += d;
        break;
      }
    Row& r = rows[c.site];
    const u64 self = d - std::min(x.counted_child, d);
    r.calls++;
    if (c.mark) r.total += d;
    r.self += self;
    if (o.averages != Averages::none) {
      const u64 v = o.averages == Averages::self ? self : d;
      r.min = std::min(r.min, v), r.max = std::max(r.max, v), r.sum += v;
    }
  }
};

bool wanted_thread(const ReportOptions& o, u32 tid) { return o.tids.empty() || std::find(o.tids.begin(), o.tids.end(), tid) != o.tids.end(); }

void sum_thread(TraceFile& t, size_t k, const ReportOptions& o, Wanted& only, Wanted& skip, std::vector<Row>& rows) {
  if (!wanted_thread(o, t.tid(k))) return;
  TraceFile::Stream s(t, k);
  Event e;
  if (!t.graph()) {
    while (s.next(e)) rows[e.site].calls++;
    return;
  }
  Sums sums{o, only, skip, rows, std::vector<u32>(rows.size()), {}};
  CallMatcher<Sums> m(sums);
  while (s.next(e)) m.event(e);
  m.finish();
}

// One file's rows, by site.
std::vector<Row> sum_file(TraceFile& t, const ReportOptions& o, unsigned workers) {
  const bool durations = o.depth || o.threshold || !o.functions.empty() || !o.notrace.empty() || o.averages != Averages::none;
  if (!t.graph() && durations)
    throw InputError(t.file(), offsetof(shim::TraceHeader, tracer),
                     "a function trace, which has no durations nor nesting: --depth, --threshold, -F, -N, --avg-total, --avg-self and "
                     "--sort min/avg/max need a graph trace (PREPATCH_TRACER=graph)");
  const size_t n = t.threads();
  workers = static_cast<unsigned>(std::clamp<size_t>(std::min<size_t>(workers, n), 1, 64));
  std::vector<std::vector<Row>> rows(workers, std::vector<Row>(t.sites()));
  Wanted only(t, o.functions), skip(t, o.notrace);
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> failed(workers);
  const auto work = [&](unsigned w) {
    try {
      for (size_t k; (k = next++) < n;) sum_thread(t, k, o, only, skip, rows[w]);
    } catch (...) {
      failed[w] = std::current_exception();
    }
  };
  std::vector<std::thread> helpers;
  for (unsigned w = 1; w < workers; w++) helpers.emplace_back(work, w);
  work(0);
  for (std::thread& h : helpers) h.join();
  for (const std::exception_ptr& e : failed)
    if (e) std::rethrow_exception(e);
  for (unsigned w = 1; w < workers; w++)
    for (size_t i = 0; i < rows[0].size(); i++) rows[0][i].add(rows[w][i]);
  return std::move(rows[0]);
}

// Every file's rows, by the function's name as shown; names in the order first seen.
struct Named {
  std::vector<std::string> names;
  std::unordered_map<std::string, Row> rows;
  bool graph = false;
};
Named sum_files(const std::vector<TraceFile*>& files, const ReportOptions& o, unsigned workers) {
  Named n;
  n.graph = files.at(0)->graph();
  for (TraceFile* t : files) {
    if (t->graph() != n.graph)
      throw InputError(t->file(), offsetof(shim::TraceHeader, tracer),
                       std::string("a ") + (t->graph() ? "graph" : "function") + " trace among " + (n.graph ? "graph" : "function") +
                           " traces (" + files[0]->file() + "): report sums files of one tracer");
    const std::vector<Row> rows = sum_file(*t, o, workers);
    for (u32 i = 0; i < rows.size(); i++) {
      if (!rows[i].calls) continue;
      auto [it, added] = n.rows.try_emplace(t->name(i));
      if (added) n.names.push_back(it->first);
      it->second.add(rows[i]);
    }
  }
  return n;
}

u64 key(const Row& r, SortBy by, bool graph) {
  if (!graph) return r.calls;
  switch (by) {
    case SortBy::self: return r.self;
    case SortBy::calls: return r.calls;
    case SortBy::avg: return r.calls ? r.sum / r.calls : 0;
    case SortBy::min: return r.calls ? r.min : 0;
    case SortBy::max: return r.max;
    default: return r.total;
  }
}

// A change: +1.234 ms, -56.0 us, 0 (a duration), or +3, -1 (a count).
std::string change(u64 was, u64 now, bool time) {
  if (was == now) return "0";
  const u64 d = now > was ? now - was : was - now;
  std::string text = time ? duration(d) : std::to_string(d);
  text.insert(text.begin(), now > was ? '+' : '-');
  return text;
}

}  // namespace

void report(const std::vector<TraceFile*>& files, const ReportOptions& o, Output& out, unsigned workers) {
  const Named n = sum_files(files, o, workers);
  std::vector<const std::string*> order;
  for (const std::string& name : n.names) order.push_back(&name);
  std::stable_sort(order.begin(), order.end(), [&](const std::string* a, const std::string* b) {
    if (o.by == SortBy::name) return *a < *b;
    const u64 x = key(n.rows.at(*a), o.by, n.graph), y = key(n.rows.at(*b), o.by, n.graph);
    return x > y;
  });
  char line[96];
  const bool avg = o.averages != Averages::none;
  const char* what = o.averages == Averages::self ? "self" : "total";
  if (!n.graph) {
    out.put("       Calls  Function\n  ==========  ========\n");
  } else if (avg) {
    std::snprintf(line, sizeof line, "%12s%12s%12s%12s  Function\n", (std::string("Avg ") + what).c_str(), (std::string("Min ") + what).c_str(),
                  (std::string("Max ") + what).c_str(), "Calls");
    out.put(line).put("  ==========  ==========  ==========  ==========  ========\n");
  } else {
    out.put("  Total time   Self time       Calls  Function\n  ==========  ==========  ==========  ========\n");
  }
  for (const std::string* name : order) {
    const Row& r = n.rows.at(*name);
    if (!n.graph) {
      std::snprintf(line, sizeof line, "%12" PRIu64 "  ", r.calls);
    } else if (avg) {
      std::snprintf(line, sizeof line, "%12s%12s%12s%12" PRIu64 "  ", duration(r.sum / r.calls).c_str(), duration(r.min).c_str(), duration(r.max).c_str(),
                    r.calls);
    } else {
      std::snprintf(line, sizeof line, "%12s%12s%12" PRIu64 "  ", duration(r.total).c_str(), duration(r.self).c_str(), r.calls);
    }
    out.put(line).put(*name).put('\n');
  }
}

void report_diff(const std::vector<TraceFile*>& old_files, const std::vector<TraceFile*>& new_files, const ReportOptions& o, Output& out,
                 unsigned workers) {
  const Named was = sum_files(old_files, o, workers), now = sum_files(new_files, o, workers);
  if (was.graph != now.graph)
    throw InputError(new_files[0]->file(), offsetof(shim::TraceHeader, tracer),
                     std::string("a ") + (now.graph ? "graph" : "function") + " trace compared with a " + (was.graph ? "graph" : "function") +
                         " trace (" + old_files[0]->file() + "): --diff compares traces of one tracer");
  std::vector<std::string> names = was.names;
  for (const std::string& name : now.names)
    if (!was.rows.contains(name)) names.push_back(name);
  const Row none;
  const auto row = [&](const Named& n, const std::string& name) -> const Row& {
    const auto it = n.rows.find(name);
    return it == n.rows.end() ? none : it->second;
  };
  const bool graph = now.graph;
  const SortBy by = graph ? o.by : SortBy::calls;
  std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    if (by == SortBy::name) return a < b;
    const auto moved = [&](const std::string& name) {  // how far the sort's column moved
      const u64 x = key(row(was, name), by, graph), y = key(row(now, name), by, graph);
      return x > y ? x - y : y - x;
    };
    return moved(a) > moved(b);
  });
  char line[160];
  if (graph) {
    out.put("                 Total time                            Self time                                 Calls\n"
            "         Old         New      Change         Old         New      Change         Old         New      Change  Function\n"
            "  ==========  ==========  ==========  ==========  ==========  ==========  ==========  ==========  ==========  ========\n");
  } else {
    out.put("                    Calls\n         Old         New      Change  Function\n  ==========  ==========  ==========  ========\n");
  }
  for (const std::string& name : names) {
    const Row &a = row(was, name), &b = row(now, name);
    if (graph) {
      std::snprintf(line, sizeof line, "%12s%12s%12s%12s%12s%12s%12" PRIu64 "%12" PRIu64 "%12s  ", duration(a.total).c_str(), duration(b.total).c_str(),
                    change(a.total, b.total, true).c_str(), duration(a.self).c_str(), duration(b.self).c_str(), change(a.self, b.self, true).c_str(),
                    a.calls, b.calls, change(a.calls, b.calls, false).c_str());
    } else {
      std::snprintf(line, sizeof line, "%12" PRIu64 "%12" PRIu64 "%12s  ", a.calls, b.calls, change(a.calls, b.calls, false).c_str());
    }
    out.put(line).put(name).put('\n');
  }
}

}  // namespace prepatch::trace
