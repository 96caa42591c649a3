// `prepatch report`: per function, calls (and under graph, total and self time). The threads' streams
// are independent, so workers take them one at a time, each summing into its own rows.
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <exception>
#include <thread>

#include "trace/calls.h"
#include "trace/trace.h"

namespace prepatch::trace {
namespace {

struct Row {
  u64 calls = 0, total = 0, self = 0;
};

// Sums one graph thread's calls. Total time counts a recursive function's outermost call only, as
// uftrace does: a call is outermost when no call of its function is open below it.
struct Sums {
  std::vector<Row>& rows;
  std::vector<u32> active;  // per site: its calls open now
  void enter(std::vector<Call>& open) {
    Call& c = open.back();
    c.mark = active[c.site]++ == 0;
  }
  void close(const Call& c, std::vector<Call>&) {
    active[c.site]--;
    Row& r = rows[c.site];
    const u64 d = c.end - c.begin;
    r.calls++;
    if (c.mark) r.total += d;
    r.self += d - std::min(c.child_ns, d);
  }
};

void sum_thread(TraceFile& t, size_t k, std::vector<Row>& rows) {
  TraceFile::Stream s(t, k);
  Event e;
  if (!t.graph()) {
    while (s.next(e)) rows[e.site].calls++;
    return;
  }
  Sums sums{rows, std::vector<u32>(rows.size())};
  CallMatcher<Sums> m(sums);
  while (s.next(e)) m.event(e);
  m.finish();
}

}  // namespace

void report(TraceFile& t, SortBy by, Output& out, unsigned workers) {
  const size_t n = t.threads();
  workers = static_cast<unsigned>(std::clamp<size_t>(std::min<size_t>(workers, n), 1, 64));
  std::vector<std::vector<Row>> rows(workers, std::vector<Row>(t.sites()));
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> failed(workers);
  const auto work = [&](unsigned w) {
    try {
      for (size_t k; (k = next++) < n;) sum_thread(t, k, rows[w]);
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
  std::vector<Row>& sum = rows[0];
  for (unsigned w = 1; w < workers; w++)
    for (size_t i = 0; i < sum.size(); i++) sum[i].calls += rows[w][i].calls, sum[i].total += rows[w][i].total, sum[i].self += rows[w][i].self;

  const bool graph = t.graph();
  std::vector<u32> order;
  for (u32 i = 0; i < sum.size(); i++)
    if (sum[i].calls) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](u32 a, u32 b) {
    const Row &x = sum[a], &y = sum[b];
    if (!graph || by == SortBy::calls) return x.calls > y.calls;
    return by == SortBy::self ? x.self > y.self : x.total > y.total;
  });
  char line[64];
  if (graph) out.put("  Total time   Self time       Calls  Function\n  ==========  ==========  ==========  ========\n");
  else out.put("       Calls  Function\n  ==========  ========\n");
  for (u32 i : order) {
    if (graph) {
      std::snprintf(line, sizeof line, "%12s%12s%12" PRIu64 "  ", duration(sum[i].total).c_str(), duration(sum[i].self).c_str(), sum[i].calls);
    } else {
      std::snprintf(line, sizeof line, "%12" PRIu64 "  ", sum[i].calls);
    }
    out.put(line).put(t.name(i)).put('\n');
  }
}

}  // namespace prepatch::trace
