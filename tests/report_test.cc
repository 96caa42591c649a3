// `prepatch report`'s options (issue 28, item 3), each checked row by row against what the records
// say. The expected rows are worked out here another way than report.cc does: the trace is read whole
// into a call tree first, and each rule is applied to a call knowing all its callers at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support.h"
#include "trace/trace.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

struct CallNode {
  u32 site;
  u64 begin, end;
  int parent;  // -1: outermost
  u32 depth;
};

struct Want {
  std::vector<u32> tids;
  u32 depth = 0;
  u64 threshold = 0;
  std::string only, skip;  // function names (exact): -F, -N
  int averages = 0;        // 0 none, 1 total, 2 self
};

struct Row {
  u64 calls = 0, total = 0, self = 0, min = ~u64{0}, max = 0, sum = 0;
};

// Every call of every thread (of `tids`, if any), its parent and depth.
std::vector<CallNode> calls_of(const trace::Trace& t, const std::vector<u32>& tids) {
  std::vector<CallNode> calls;
  for (const trace::ThreadTrace& th : t.threads) {
    if (!tids.empty() && std::find(tids.begin(), tids.end(), th.tid) == tids.end()) continue;
    std::vector<int> open;
    for (const trace::Event& e : th.events) {
      if (e.type == shim::rec_entry) {
        calls.push_back({e.site, e.ns, 0, open.empty() ? -1 : open.back(), static_cast<u32>(open.size())});
        open.push_back(static_cast<int>(calls.size() - 1));
      } else if (e.type == shim::rec_exit) {
        calls[open.back()].end = e.ns;
        open.pop_back();
      }
    }
    EXPECT_TRUE(open.empty());
  }
  return calls;
}

std::map<std::string, Row> expected(const trace::Trace& t, const Want& w) {
  const std::vector<CallNode> calls = calls_of(t, w.tids);
  const auto named = [&](int k, const std::string& name) { return !name.empty() && t.names[calls[k].site] == name; };
  std::vector<bool> counted(calls.size());
  for (size_t k = 0; k < calls.size(); k++) {
    bool in_only = w.only.empty(), in_skip = false;
    for (int a = static_cast<int>(k); a >= 0; a = calls[a].parent) in_only |= named(a, w.only), in_skip |= named(a, w.skip);
    counted[k] = in_only && !in_skip && (!w.depth || calls[k].depth < w.depth) && calls[k].end - calls[k].begin >= w.threshold;
  }
  std::vector<u64> counted_inside(calls.size());  // the durations of the counted calls whose nearest counted caller it is
  for (size_t k = 0; k < calls.size(); k++) {
    if (!counted[k]) continue;
    for (int a = calls[k].parent; a >= 0; a = calls[a].parent)
      if (counted[a]) {
        counted_inside[a] += calls[k].end - calls[k].begin;
        break;
      }
  }
  std::map<std::string, Row> rows;
  for (size_t k = 0; k < calls.size(); k++) {
    if (!counted[k]) continue;
    const u64 d = calls[k].end - calls[k].begin, self = d - std::min(d, counted_inside[k]);
    bool outermost = true;
    for (int a = calls[k].parent; a >= 0; a = calls[a].parent) outermost &= calls[a].site != calls[k].site;
    Row& r = rows[t.names[calls[k].site]];
    r.calls++, r.self += self;
    if (outermost) r.total += d;
    const u64 v = w.averages == 2 ? self : d;
    r.min = std::min(r.min, v), r.max = std::max(r.max, v), r.sum += v;
  }
  return rows;
}

// A report's table as text rows (its columns as printed), in order.
std::vector<std::pair<std::string, std::vector<std::string>>> table(const std::string& out, size_t columns) {
  std::vector<std::pair<std::string, std::vector<std::string>>> rows;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(' ') >= 12 || line.find("==") != std::string::npos || line.find("Function") != std::string::npos) continue;  // headings
    if (line.find("calls were left") != std::string::npos) continue;
    std::vector<std::string> cells;
    size_t at = 0;
    for (size_t c = 0; c < columns; c++, at += 12) cells.push_back(line.substr(at, 12).substr(line.substr(at, 12).find_first_not_of(' ')));
    rows.push_back({line.substr(at + 2), cells});
  }
  return rows;
}

class ReportOptions : public ::testing::Test {
 protected:
  static const trace::Trace& t() {
    static const trace::Trace* tr = new trace::Trace(trace::read_trace(calltree_graph_trace()));
    return *tr;
  }
  // Runs report with `args` and checks its rows, in its order (largest `sort` first), against `w`.
  void check(const std::vector<std::string>& args, const Want& w, const char* sort = "total") {
    std::vector<std::string> argv{"report", calltree_graph_trace(), "--sort", sort};
    argv.insert(argv.end(), args.begin(), args.end());
    Proc r = prepatch(argv);
    ASSERT_EQ(r.status, 0) << r.err;
    const std::map<std::string, Row> want = expected(t(), w);
    const auto got = table(r.out, w.averages ? 4 : 3);
    std::map<std::string, std::vector<std::string>> got_rows;
    for (const auto& [name, cells] : got) got_rows[name] = cells;
    std::map<std::string, std::vector<std::string>> want_rows;
    for (const auto& [name, row] : want) {
      if (w.averages) want_rows[name] = {trace::duration(row.sum / row.calls), trace::duration(row.min), trace::duration(row.max), std::to_string(row.calls)};
      else want_rows[name] = {trace::duration(row.total), trace::duration(row.self), std::to_string(row.calls)};
    }
    EXPECT_EQ(got_rows, want_rows) << r.out;
    // In order of the sort column, largest first.
    const auto value = [&](const std::string& name) {
      const Row& row = want.at(name);
      const std::string s = sort;
      return s == "self" ? row.self : s == "calls" ? row.calls : s == "max" ? row.max : s == "min" ? row.min : s == "avg" ? row.sum / row.calls : row.total;
    };
    for (size_t k = 1; k < got.size(); k++) EXPECT_GE(value(got[k - 1].first), value(got[k].first)) << r.out;
  }
};

TEST_F(ReportOptions, EveryCallByDefault) { check({}, {}); }
TEST_F(ReportOptions, Depth) { check({"--depth", "3"}, {.depth = 3}, "self"); }
TEST_F(ReportOptions, Threshold) {
  // The median duration of mid's calls: some pass, some do not.
  std::vector<u64> mids;
  for (const CallNode& c : calls_of(t(), {}))
    if (t().names[c.site] == "mid") mids.push_back(c.end - c.begin);
  ASSERT_FALSE(mids.empty());
  std::nth_element(mids.begin(), mids.begin() + mids.size() / 2, mids.end());
  const u64 median = mids[mids.size() / 2];
  check({"--threshold", std::to_string(median) + "ns"}, {.threshold = median}, "calls");
}
TEST_F(ReportOptions, FunctionSubtrees) { check({"-F", "mid"}, {.only = "mid"}); }
TEST_F(ReportOptions, NotraceSubtrees) { check({"-N", "top"}, {.skip = "top"}, "self"); }
TEST_F(ReportOptions, OneThread) {
  const u32 tid = t().threads.back().tid;
  check({"--tid", std::to_string(tid)}, {.tids = {tid}}, "calls");
}
TEST_F(ReportOptions, AveragesOfTotalAndSelf) {
  check({"--avg-total"}, {.averages = 1}, "avg");
  check({"--avg-self"}, {.averages = 2}, "max");
  check({}, {.averages = 1}, "min");  // sorting by min implies --avg-total
}
TEST_F(ReportOptions, Combined) { check({"-F", "top", "-N", "leaf", "--depth", "4", "--avg-self"}, {.depth = 4, .only = "top", .skip = "leaf", .averages = 2}, "max"); }

// Several files: each function's rows summed by name; --diff: old, new and the change per function.
TEST(Report, SeveralFilesAndDiff) {
  TempDir d;
  Proc p = prepatch({"-q", td + "/calltree-fentry", "-o", d / "calltree"});
  ASSERT_EQ(p.status, 0) << p.err;
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "two.trace", d / "calltree", "threads"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  const trace::Trace a = trace::read_trace(calltree_graph_trace()), b = trace::read_trace(d / "two.trace");
  const std::map<std::string, Row> ra = expected(a, {}), rb = expected(b, {});

  Proc both = prepatch({"report", calltree_graph_trace(), d / "two.trace", "--sort", "name"});
  ASSERT_EQ(both.status, 0) << both.err;
  std::vector<std::string> names;
  for (const auto& [name, cells] : table(both.out, 3)) {
    names.push_back(name);
    const Row &x = ra.at(name), &y = rb.at(name);
    EXPECT_EQ(cells, (std::vector<std::string>{trace::duration(x.total + y.total), trace::duration(x.self + y.self), std::to_string(x.calls + y.calls)}))
        << name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"leaf", "main", "mid", "top", "worker"}));

  Proc diff = prepatch({"report", "--diff", calltree_graph_trace(), d / "two.trace"});
  ASSERT_EQ(diff.status, 0) << diff.err;
  const auto change = [](u64 was, u64 now, bool time) {
    if (was == now) return std::string("0");
    const u64 v = now > was ? now - was : was - now;
    return (now > was ? "+" : "-") + (time ? trace::duration(v) : std::to_string(v));
  };
  names.clear();
  u64 last = ~u64{0};
  for (const auto& [name, cells] : table(diff.out, 9)) {
    names.push_back(name);
    const Row &x = ra.at(name), &y = rb.at(name);
    EXPECT_EQ(cells, (std::vector<std::string>{trace::duration(x.total), trace::duration(y.total), change(x.total, y.total, true), trace::duration(x.self),
                                               trace::duration(y.self), change(x.self, y.self, true), std::to_string(x.calls), std::to_string(y.calls),
                                               change(x.calls, y.calls, false)}))
        << name;
    const u64 moved = x.total > y.total ? x.total - y.total : y.total - x.total;
    EXPECT_LE(moved, last) << "the largest change of total time first:\n" << diff.out;
    last = moved;
  }
  EXPECT_EQ(names.size(), 5u) << diff.out;

  // A function trace: the graph-only options are refused; mixing it with a graph trace is too.
  const std::string fn = d / "function.trace";
  Proc f = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + fn, d / "calltree", "threads"}, d.path());
  ASSERT_EQ(f.status, 0) << f.err;
  Proc deep = prepatch({"report", fn, "--depth", "2"});
  EXPECT_EQ(deep.status, 4);
  EXPECT_NE(deep.err.find(fn + ": offset 0x10: a function trace, which has no durations nor nesting: --depth"), std::string::npos) << deep.err;
  Proc mixed = prepatch({"report", calltree_graph_trace(), fn});
  EXPECT_EQ(mixed.status, 4);
  EXPECT_NE(mixed.err.find(fn + ": offset 0x10: a function trace among graph traces"), std::string::npos) << mixed.err;
  Proc counted = prepatch({"report", fn, "--tid", std::to_string(trace::read_trace(fn).threads.back().tid)});
  EXPECT_EQ(counted.status, 0) << counted.err;
}

}  // namespace
}  // namespace prepatch::test
