// `prepatch top PID` (issue 28, item 5), used as a person uses it: in a real terminal (tmux, on a
// server of the test's own), its screen read with capture-pane, q pressed to quit. testdata/live.c
// (`wait`: four workers call leaf_add and leaf_mul in tight loops) is the process watched; `ctl
// status` before, during and after shows top leaving it exactly as it found it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <map>
#include <memory>
#include <set>
#include <regex>
#include <sstream>

#include "tests/support.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string status_line(int pid) {
  Proc s = prepatch({"ctl", std::to_string(pid), "status"});
  EXPECT_EQ(s.status, 0) << s.err;
  return first_line(s.out);
}

std::set<std::string> enabled_functions(int pid) {
  Proc s = prepatch({"ctl", std::to_string(pid), "status"});
  std::set<std::string> fs;
  std::istringstream in(s.out);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("enabled ")) fs.insert(line.substr(8, line.rfind(' ') - 8));
  return fs;
}

// A table top drew: CALLS/S and TOTAL by function (rates in calls/s, "7.52M" read back).
struct Table {
  std::string header;
  std::map<std::string, std::pair<double, unsigned long long>> rows;
  std::vector<std::string> order;
};
std::vector<Table> tables(const std::string& text) {
  std::vector<Table> ts;
  std::istringstream in(text);
  const std::regex row(R"(^ *([0-9.]+)([kMG]?) +([0-9]+)  (.+?) *$)");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("prepatch top: ")) {
      ts.push_back({line, {}, {}});
      continue;
    }
    std::smatch m;
    if (ts.empty() || !std::regex_match(line, m, row)) continue;
    const double scale = m[2] == "k" ? 1e3 : m[2] == "M" ? 1e6 : m[2] == "G" ? 1e9 : 1;
    ts.back().rows[m[4]] = {std::stod(m[1]) * scale, std::stoull(m[3])};
    ts.back().order.push_back(m[4]);
  }
  return ts;
}



struct Live {
  TempDir d;
  std::unique_ptr<Background> proc;
  explicit Live(const std::vector<std::string>& env = {}) {
    Proc p = prepatch({"-q", td + "/live-fentry", "-o", d / "live"});
    EXPECT_EQ(p.status, 0) << p.err;
    std::vector<std::string> argv{"env"};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.insert(argv.end(), {d / "live", "wait"});
    proc = std::make_unique<Background>(argv, d.path());
  }
  int pid() const { return proc->target(); }
};

TEST(Top, InATerminalShowsTheHottestFunctionsAndLeavesTheProcessAsItFoundIt) {
  Live live;
  ASSERT_GT(live.pid(), 0);
  const std::string pid = std::to_string(live.pid());
  const std::string before = status_line(live.pid());
  ASSERT_NE(before.find(", 0 of 13 sites enabled"), std::string::npos) << before;

  Tmux term(std::string(PREPATCH_BIN) + " top " + pid + " --trace 'leaf_*,worker'", 120, 24);
  std::vector<Table> seen;
  ASSERT_TRUE(eventually([&] {
    for (const Table& t : tables(term.screen()))
      if (seen.empty() || t.rows != seen.back().rows) seen.push_back(t);
    return seen.size() >= 2;
  })) << term.screen();
  for (const Table& t : seen) {
    EXPECT_NE(t.header.find("pid " + pid + ", 5 of 13 sites counted"), std::string::npos) << t.header;  // four leaf_*, worker
    EXPECT_NE(t.header.find("q quits"), std::string::npos) << t.header;
    ASSERT_GE(t.order.size(), 2u) << t.header;
    // The workers call only the two leaves: they head the view, every one of their refreshes.
    EXPECT_EQ(std::set<std::string>(t.order.begin(), t.order.begin() + 2), (std::set<std::string>{"leaf_add", "leaf_mul"}));
    for (const char* f : {"leaf_add", "leaf_mul"}) EXPECT_GT(t.rows.at(f).first, 1000) << f;
  }
  EXPECT_GT(seen[1].rows.at("leaf_add").second, seen[0].rows.at("leaf_add").second);  // the totals grow
  EXPECT_EQ(enabled_functions(live.pid()), (std::set<std::string>{"leaf_add", "leaf_counts", "leaf_mul", "leaf_spawned", "worker"}));

  term.keys("q");
  ASSERT_TRUE(eventually([&] { return !term.running(); })) << "q did not end top:\n" << term.screen();
  EXPECT_EQ(status_line(live.pid()), before);
  EXPECT_TRUE(enabled_functions(live.pid()).empty());
  auto [status, rest] = live.proc->finish();
  EXPECT_EQ(status, 0) << rest;
}

// Sites enabled before top are shown as they are and stay enabled; --trace is refused then; piped,
// top prints one table per refresh and stops after -n of them.
TEST(Top, ShowsTheSitesEnabledBeforeAndKeepsThem) {
  Live live({"PREPATCH_TRACE=leaf_add"});
  ASSERT_GT(live.pid(), 0);
  const std::string pid = std::to_string(live.pid());
  const std::string before = status_line(live.pid());
  ASSERT_NE(before.find(", 1 of 13 sites enabled"), std::string::npos) << before;
  Proc t = prepatch({"top", pid, "-n", "2", "--interval", "0.5"});
  ASSERT_EQ(t.status, 0) << t.err;
  const std::vector<Table> ts = tables(t.out);
  ASSERT_EQ(ts.size(), 2u) << t.out;
  for (const Table& tb : ts) {
    EXPECT_NE(tb.header.find("1 of 13 sites counted (enabled before top)"), std::string::npos) << tb.header;
    EXPECT_EQ(tb.order, std::vector<std::string>{"leaf_add"}) << t.out;
  }
  EXPECT_EQ(t.out.find('\033'), std::string::npos) << "no terminal codes when piped";
  EXPECT_EQ(status_line(live.pid()), before);
  EXPECT_EQ(enabled_functions(live.pid()), std::set<std::string>{"leaf_add"});

  Proc refused = prepatch({"top", pid, "--trace", "leaf_mul", "-n", "1"});
  EXPECT_EQ(refused.status, 4);
  EXPECT_NE(refused.err.find("has 1 of 13 sites enabled already: top shows those as they are and changes nothing, so it takes no --trace"),
            std::string::npos) << refused.err;
  EXPECT_EQ(enabled_functions(live.pid()), std::set<std::string>{"leaf_add"});
  auto [status, rest] = live.proc->finish();
  EXPECT_EQ(status, 0) << rest;
}

// Ended by a signal instead of q, top still disables what it enabled; a process that traces with
// another tracer is refused and left alone.
TEST(Top, ASignalStillRestoresAndAnotherTracerIsRefused) {
  Live live;
  ASSERT_GT(live.pid(), 0);
  const std::string pid = std::to_string(live.pid());
  TempDir d;
  const int out = open((d / "top.out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(out, 0);
  const int top = spawn({PREPATCH_BIN, "top", pid, "--interval", "0.2"}, "", -1, out, out);
  close(out);
  ASSERT_TRUE(eventually([&] { return tables(read_file(d / "top.out")).size() >= 1; })) << read_file(d / "top.out");
  EXPECT_EQ(enabled_functions(live.pid()).size(), 13u);
  kill(top, SIGTERM);
  int ws = 0;
  ASSERT_EQ(waitpid(top, &ws, 0), top);
  EXPECT_EQ(exit_code(ws), 0) << read_file(d / "top.out");
  EXPECT_TRUE(enabled_functions(live.pid()).empty());
  auto [status, rest] = live.proc->finish();
  EXPECT_EQ(status, 0) << rest;

  Live graph({"PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "g.trace"});
  ASSERT_GT(graph.pid(), 0);
  Proc refused = prepatch({"top", std::to_string(graph.pid()), "-n", "1"});
  EXPECT_EQ(refused.status, 4);
  EXPECT_NE(refused.err.find("runs the graph tracer; top reads the count tracer's counters"), std::string::npos) << refused.err;
  EXPECT_TRUE(enabled_functions(graph.pid()).empty());
  auto [gstatus, grest] = graph.proc->finish();
  EXPECT_EQ(gstatus, 0) << grest;
}

}  // namespace
}  // namespace prepatch::test
