// The tracers end to end: testdata/calltree.c (a known call tree on several threads) prepared in each
// kind of site and a static build, run under count, function and graph; the trace file read back
// (trace/trace.h, the same reader `prepatch report` uses) and checked call by call. Also: a program
// killed with SIGKILL, longjmp out of traced functions, fork, a full trace file, damaged trace files,
// and the reading commands' output (report, replay, Chrome JSON).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <regex>
#include <cmath>
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "shim/core.h"
#include "support.h"
#include "trace/trace.h"
#include "trace_words.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;
constexpr int rounds = 1000;  // calltree.c's ROUNDS

std::string prepare(const TempDir& d, const std::string& flavor) {
  Proc p = prepatch({td + "/calltree-" + flavor, "-o", d / "calltree"});
  EXPECT_EQ(p.status, 0) << p.err;
  return d / "calltree";
}

// `env VARS... BIN [MODE]`, for a build of `flavor`: run by qemu-user for AArch64's ("a64-..."),
// PPC64le's ("ppc-..."), RISC-V64's ("rv-...") and Thumb-2's ("arm-...").
std::vector<std::string> calltree(const std::string& flavor, const std::string& bin, const std::vector<std::string>& vars, const std::string& mode) {
  const TestBinary b{.isa = flavor.starts_with("a64-")   ? "aarch64"  // (qemu-aarch64's CPU has pointer authentication)
                            : flavor.starts_with("ppc-") ? "ppc64le"
                            : flavor.starts_with("rv-")  ? "riscv64"
                            : flavor.starts_with("arm-") ? "arm"
                                                         : ""};
  return with_env(vars, b.exec(bin, mode.empty() ? std::vector<std::string>{} : std::vector<std::string>{mode}));
}

// The one trace file a run left in `dir` (its name is prepatch.PID.trace).
std::vector<std::string> traces_in(const std::string& dir) {
  std::vector<std::string> v;
  for (const std::string& f : list_dir(dir))
    if (f.starts_with("prepatch.") && f.ends_with(".trace")) v.push_back(dir + "/" + f);
  std::sort(v.begin(), v.end());
  return v;
}

std::string name(const trace::Trace& t, const trace::Event& e) { return t.names[e.site]; }

// What one worker thread of calltree.c writes under graph: worker { (top { mid { leaf leaf } }) x rounds }.
std::vector<std::string> worker_words() {
  std::vector<std::string> w{"E worker 0"};
  for (int i = 0; i < rounds; i++)
    for (const char* s : {"E top 1", "E mid 2", "E leaf 3", "X leaf 3", "E leaf 3", "X leaf 3", "X mid 2", "X top 1"}) w.push_back(s);
  w.push_back("X worker 0");
  return w;
}

// The function whose site most closely precedes link-time address `a` (where a caller lies).
std::string function_at(const trace::Trace& t, u64 a) {
  if (a == shim::rec_caller_unknown) return "?";
  auto it = std::upper_bound(t.table.entries.begin(), t.table.entries.end(), a, [](u64 x, const TableEntry& e) { return x < e.addr; });
  return it == t.table.entries.begin() ? "?" : t.names[static_cast<size_t>(it - t.table.entries.begin()) - 1];
}

// Runs calltree's `threads` mode prepared from `flavor` under `tracer` and reads the one trace file it
// leaves (its path in `file`), which must be whole, with nothing lost, and hold main and five workers.
trace::Trace traced_threads(const TempDir& d, const std::string& flavor, const std::string& tracer, std::string& file) {
  const std::string bin = prepare(d, flavor);
  Proc r = run(calltree(flavor, bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=" + tracer}, "threads"), d.path());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 12562500\n");
  const std::vector<std::string> files = traces_in(d.path());
  EXPECT_EQ(files.size(), 1u);
  if (files.empty()) return {};
  file = files[0];
  trace::Trace t = trace::read_trace(file);
  EXPECT_TRUE(t.problems.empty()) << t.problems[0];
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.threads.size(), 6u);  // main and five workers, each its own tid
  return t;
}

class CallTree : public ::testing::TestWithParam<std::string> {};

TEST_P(CallTree, CountTracerCountsEveryCall) {
  TempDir d;
  const std::string bin = prepare(d, GetParam());
  Proc r = run(calltree(GetParam(), bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=count", "PREPATCH_COUNTS=" + d / "c"}, "threads"), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 12562500\n");
  Proc c = prepatch({"counts", bin, d / "c", "--json"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::map<std::string, unsigned long long> m;
  for (const auto& row : nlohmann::json::parse(c.out)) m[row["function"]] = row["count"];
  EXPECT_EQ(m, (std::map<std::string, unsigned long long>{{"main", 1}, {"worker", 5}, {"top", 5 * rounds}, {"mid", 5 * rounds},
                                                         {"leaf", 10 * rounds}}));
}

TEST_P(CallTree, FunctionTracerRecordsEveryCallWithItsCallerPerThreadInOrder) {
  TempDir d;
  std::string file;
  trace::Trace t = traced_threads(d, GetParam(), "function", file);
  int workers = 0;
  for (const trace::ThreadTrace& th : t.threads) {
    std::vector<std::string> got;
    for (const trace::Event& e : th.events) got.push_back(name(t, e) + "<-" + function_at(t, e.rest));
    if (got.size() == 1) {
      EXPECT_EQ(got[0].substr(0, 6), "main<-");
      continue;
    }
    workers++;
    // worker is called by glibc's thread start, in libc (or, linked statically, in no traced function).
    EXPECT_EQ(got[0].substr(0, 8), "worker<-");
    got[0] = "worker<-libc";
    std::vector<std::string> want{"worker<-libc"};
    for (int i = 0; i < rounds; i++)
      for (const char* s : {"top<-worker", "mid<-top", "leaf<-mid", "leaf<-mid"}) want.push_back(s);
    EXPECT_EQ(got, want) << "thread " << th.tid;
  }
  EXPECT_EQ(workers, 5);
}

TEST_P(CallTree, GraphTracerNestsEveryCallPerThread) {
  TempDir d;
  std::string file;
  trace::Trace t = traced_threads(d, GetParam(), "graph", file);
  EXPECT_EQ(t.unwound, 0u);
  int workers = 0;
  for (const trace::ThreadTrace& th : t.threads) {
    const std::vector<std::string> w = graph_words(t, th);
    if (w.size() == 2) {
      EXPECT_EQ(w, (std::vector<std::string>{"E main 0", "X main 0"}));
      continue;
    }
    workers++;
    EXPECT_EQ(w, worker_words()) << "thread " << th.tid;
    for (size_t i = 1; i < th.events.size(); i++) ASSERT_LE(th.events[i - 1].ns, th.events[i].ns) << "thread " << th.tid << " event " << i;
  }
  EXPECT_EQ(workers, 5);

  // The report: calls, and times that add up (self <= total; worker's total covers its calls).
  Proc rep = prepatch({"report", file, "--sort", "calls"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  std::istringstream in(rep.out);
  std::string line;
  std::map<std::string, std::string> calls;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string tot, tu, self, su, n, fn;
    if (l >> tot >> tu >> self >> su >> n >> fn && fn != "Function") calls[fn] = n;
  }
  EXPECT_EQ(calls, (std::map<std::string, std::string>{{"main", "1"}, {"worker", "5"}, {"top", "5000"}, {"mid", "5000"}, {"leaf", "10000"}}))
      << rep.out;
}

// A tail call (a jump, not a call) enters the callee with the return address the caller was entered
// with: under graph, the exit trampoline. Each function is still recorded as returning, innermost first.
TEST_P(CallTree, GraphTracerFollowsTailCalls) {
  TempDir d;
  const std::string bin = prepare(d, GetParam());
  Proc r = run(calltree(GetParam(), bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, "tailcall"), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 30\n");  // leaf(1) + leaf(3) + leaf(5)
  trace::Trace t = trace::read_trace(traces_in(d.path()).at(0));
  ASSERT_EQ(t.threads.size(), 1u);
  std::vector<std::string> want{"E main 0"};
  for (int i = 0; i < 3; i++)
    for (const char* s : {"E chain 1", "E relay 2", "E leaf 3", "X leaf 3", "X relay 2", "X chain 1"}) want.push_back(s);
  want.push_back("X main 0");
  EXPECT_EQ(graph_words(t, t.threads[0]), want);
  EXPECT_EQ(t.unwound, 0u);
}

// x86-64's kinds and a static build; AArch64's -pg (mcount: x30 saved in the frame record) and
// patchable (at the entry: x30 in a register) sites, PPC64le's -pg (LR saved in the caller's frame),
// RISC-V64's -pg (ra saved where the prologue the preparer followed put it) and patchable (ra in a
// register) sites, both keyed by the entry sp, and Thumb-2's the same way (-pg: lr stored by the
// prologue's push, or not at all in a leaf; patchable: the word the site pushed), as are ARM-state
// (-marm) -pg sites, whose entry pushes that word, under qemu-user.
INSTANTIATE_TEST_SUITE_P(Sites, CallTree,
                         ::testing::Values("fentry", "mcount", "pfe5", "static", "a64-pg", "a64-pfe2", "ppc-pg", "rv-pg", "rv-pfe4", "arm-pg", "arm-pfe3",
                                           "arm-marm-pg"));

// The graph tracer's process-level cases, on x86-64, AArch64's, RISC-V64's and Thumb-2's two kinds of
// site and PPC64le's -pg.
class Graph : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Sites, Graph, ::testing::Values("fentry", "a64-pg", "a64-pfe2", "ppc-pg", "rv-pg", "rv-pfe4", "arm-pg", "arm-pfe3", "arm-marm-pg"));

TEST_P(Graph, LongjmpOutOfTracedFunctionsIsRecoveredAndCounted) {
  TempDir d;
  const std::string bin = prepare(d, GetParam());
  Proc r = run(calltree(GetParam(), bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, "longjmp"), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 12\n");  // leaf(0) + leaf(1) + leaf(2): 1 + 4 + 7
  trace::Trace t = trace::read_trace(traces_in(d.path()).at(0));
  ASSERT_EQ(t.threads.size(), 1u);
  std::vector<std::string> want{"E main 0"};
  for (int i = 0; i < 3; i++)  // jumper and deep are left by the longjmp: noticed when leaf is entered
    for (const char* s : {"E catcher 1", "E deep 2", "E jumper 3", "U jumper 3", "U deep 2", "E leaf 2", "X leaf 2", "X catcher 1"})
      want.push_back(s);
  want.push_back("X main 0");
  EXPECT_EQ(graph_words(t, t.threads[0]), want);
  EXPECT_EQ(t.unwound, 6u);
  Proc rep = prepatch({"replay", traces_in(d.path()).at(0)});
  ASSERT_EQ(rep.status, 0) << rep.err;
  EXPECT_NE(rep.out.find("jumper(); /* unwound */"), std::string::npos) << rep.out;
}

// One round of throwtree.cc under graph, with round_trip at depth `d`: each exception leaves the frames
// it passes as unwound (noticed when the next traced call or the handler's catch meets them).
std::vector<std::string> throw_round(int d) {
  std::vector<std::string> w;
  const auto at = [&](const char* s, int k) { w.push_back(std::string(s) + " " + std::to_string(d + k)); };
  at("E round_trip", 0);
  // catcher -> middle -> thrower throws; middle's guard calls cleanup; catcher catches and calls leaf.
  at("E catcher", 1), at("E middle", 2), at("E thrower", 3), at("U thrower", 3), at("E cleanup", 3), at("E leaf", 4),
      at("X leaf", 4), at("X cleanup", 3), at("U middle", 2), at("E leaf", 2), at("X leaf", 2), at("X catcher", 1);
  // relay -> rethrower catches thrower's exception, calls leaf and rethrows; relay catches.
  at("E relay", 1), at("E rethrower", 2), at("E thrower", 3), at("U thrower", 3), at("E leaf", 3), at("X leaf", 3),
      at("U rethrower", 2), at("X relay", 1);
  // nested -> middle2, whose guard calls inner while thrower's exception passes; inner throws and
  // catches its own.
  at("E nested", 1), at("E middle2", 2), at("E thrower", 3), at("U thrower", 3), at("E inner", 3), at("X inner", 3),
      at("U middle2", 2), at("X nested", 1);
  at("E checked", 1), at("X checked", 1);  // std::vector::at throws inside libstdc++
  at("X round_trip", 0);
  return w;
}

class Exceptions : public ::testing::TestWithParam<std::string> {};

// Runs the prepared throwtree (of `flavor`) in `d` with every function graph-traced and checks the trace.
void check_throwtree(const TempDir& d, const std::string& flavor, const std::string& wx) {
  constexpr int throw_rounds = 200;  // throwtree.cc's ROUNDS
  for (const std::string& f : traces_in(d.path())) std::filesystem::remove(f);
  Proc r = run(calltree(flavor, d / "throwtree", {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_WX=" + wx}, ""), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 305700\n");
  EXPECT_EQ(r.err, "");
  const std::vector<std::string> files = traces_in(d.path());
  ASSERT_EQ(files.size(), 1u);
  trace::Trace t = trace::read_trace(files[0]);
  EXPECT_TRUE(t.problems.empty()) << t.problems[0];
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.unwound, 3u * throw_rounds * 6);  // per round: thrower 3 times, middle, rethrower, middle2
  ASSERT_EQ(t.threads.size(), 3u);              // main, then two workers at once
  for (const trace::ThreadTrace& th : t.threads) {
    // The static vector's constructor and destructor are traced too, in some builds: not part of the tree.
    std::vector<std::string> got;
    for (std::string& s : graph_words(t, th))
      if (!s.substr(2).starts_with("std::")) got.push_back(std::move(s));
    const bool main = !got.empty() && got[0] == "E main 0";
    std::vector<std::string> want;
    if (main) want = {"E main 0"};
    want.push_back(main ? "E worker 1" : "E worker 0");
    for (int i = 0; i < throw_rounds; i++)
      for (std::string& s : throw_round(main ? 2 : 1)) want.push_back(std::move(s));
    want.push_back(main ? "X worker 1" : "X worker 0");
    if (main) want.push_back("X main 0");
    ASSERT_EQ(got.size(), want.size()) << "thread " << th.tid;
    for (size_t i = 0; i < want.size(); i++) ASSERT_EQ(got[i], want[i]) << "thread " << th.tid << " event " << i;
  }
}

TEST_P(Exceptions, ThrownThroughGraphTracedFunctionsAreCaughtAndTheirFramesCountedAsUnwound) {
  TempDir d;
  Proc p = prepatch({td + "/throwtree-" + GetParam(), "-o", d / "throwtree"});
  ASSERT_EQ(p.status, 0) << p.err;
  check_throwtree(d, GetParam(), "");
  // Under PREPATCH_WX=strict the in-place hooks are written while their page is not executable, and
  // the sites through the text's memfd.
  SCOPED_TRACE("PREPATCH_WX=strict");
  check_throwtree(d, GetParam(), "strict");
}

// The static and static-pie builds carry the whole unwinder, hooked in place; staticcxx
// (-static-libstdc++) carries __cxa_begin_catch, hooked in place, and calls libgcc_s's unwinder through
// GOT slots; the others call libstdc++ and libgcc_s through GOT slots only. The other ISAs, under
// qemu-user, hook GOT slots too, and in place in their static builds (AArch64 and PPC64le a `b`,
// PPC64le's at the local entry points; RISC-V64 `auipc t1; jr t1`). AArch64: a -pg frame's return
// address is found in its frame record, a patchable one's by walking the frame records up from the
// unwinder's caller; built with pac-ret (qemu's CPU authenticates pointers), a patchable one's record
// holds it signed with the function's entry stack pointer, and gets it back signed. PPC64le -pg: the
// return address's slot is in the caller's frame, as on x86-64. RISC-V64: a -pg frame's return
// address is where the preparer found its prologue saved it, a patchable one's is found in its
// function's own frame, below the stack pointer it was entered with. Thumb-2 -pg: the same as RISC-V64's,
// a word at a time, hooked in place with a `b.w` in its static build; ARM-state (-marm) -pg the same, in
// a static build beside glibc's Thumb code. (Thumb-2's patchable builds are
// left out: gcc 12's -fpatchable-function-entry breaks ARM's unwind tables, and such a program
// terminates at its first exception unprepared: README, "Thumb-2".)
INSTANTIATE_TEST_SUITE_P(Sites, Exceptions,
                         ::testing::Values("fentry", "mcount", "pfe5", "static", "staticpie", "staticcxx", "a64-pg", "a64-pg-static", "a64-pfe2", "a64-pfe2-pac",
                                           "ppc-pg", "ppc-pg-static", "rv-pg", "rv-pg-static", "rv-pfe4", "arm-pg", "arm-pg-static", "arm-marm-pg",
                                           "arm-marm-pg-static"));

// PPC64le -fpatchable-function-entry: gcc 12 puts the pad before the TOC setup in every function that
// has one, and those sites are skipped; leaf has none. Its calls are graph-traced through the patchable
// trampoline (the return address in r0, given back as LR): every one nested on its thread.
TEST(PatchablePpc64le, GraphTracesTheFunctionsWithoutATocSetup) {
  TempDir d;
  const std::string bin = prepare(d, "ppc-pfe2-static");
  Proc r = run(calltree("ppc-pfe2-static", bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, "threads"), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 12562500\n");
  const trace::Trace t = trace::read_trace(traces_in(d.path()).at(0));
  EXPECT_TRUE(t.problems.empty());
  EXPECT_EQ(t.unwound, 0u);
  size_t leaves = 0;
  for (const trace::ThreadTrace& th : t.threads) {
    const std::vector<std::string> w = graph_words(t, th);
    ASSERT_EQ(w.size() % 2, 0u) << "thread " << th.tid;
    for (size_t i = 0; i < w.size(); i += 2) {
      EXPECT_EQ(w[i], "E leaf 0") << "thread " << th.tid;
      EXPECT_EQ(w[i + 1], "X leaf 0") << "thread " << th.tid;
    }
    leaves += w.size() / 2;
  }
  EXPECT_EQ(leaves, 10u * rounds);
}

// AArch64 -pg with pac-ret: each function signs its return address before the site, where the graph
// tracer would replace it (and the function's autiasp would then fault). The preparer marks the table,
// and the graph tracer refuses the binary, saying so, and the program runs untraced; the function
// tracer records every call, with its caller (the site's x0, unsigned; worker's and main's are in libc).
TEST(PacRet, MinusPgIsRefusedByGraphAndRecordedByFunction) {
  TempDir d;
  const std::string bin = prepare(d, "a64-pg-pac");
  Proc g = run(calltree("a64-pg-pac", bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, "tailcall"), d.path());
  EXPECT_EQ(g.status, 0) << g.err;
  EXPECT_EQ(g.out, "sum 30\n");
  EXPECT_NE(g.err.find("its -pg functions sign their return addresses (pac-ret), which the graph tracer would replace"), std::string::npos) << g.err;
  EXPECT_TRUE(traces_in(d.path()).empty());
  std::string file;
  const trace::Trace t = traced_threads(d, "a64-pg-pac", "function", file);
  std::map<std::string, int> calls;
  for (const trace::ThreadTrace& th : t.threads)
    for (const trace::Event& e : th.events) calls[name(t, e) == "worker" || name(t, e) == "main" ? name(t, e) : name(t, e) + "<-" + function_at(t, e.rest)]++;
  EXPECT_EQ(calls, (std::map<std::string, int>{{"top<-worker", 5 * rounds}, {"mid<-top", 5 * rounds}, {"leaf<-mid", 10 * rounds}, {"worker", 5}, {"main", 1}}));
}

// Builds `source` with `cc` -O2 -pg, prepares it (its function `big` has a prologue the preparer does
// not follow: named when preparing), runs it under graph with qemu for `flavor_prefix`, and checks its
// output and its one thread's records, `big` left out.
void expect_big_left_out_of_graph(const std::string& flavor_prefix, const std::string& cc, const std::string& source, const std::string& out,
                                  const std::vector<std::string>& want) {
  TempDir d;
  write_file(d / "big.c", "#include <stdio.h>\n#include <string.h>\n__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }\n" + source);
  Proc c = run({cc, "-O2", "-pg", d / "big.c", "-o", d / "big.hooks"});
  ASSERT_EQ(c.status, 0) << c.err;
  Proc p = prepatch({d / "big.hooks", "-o", d / "big"});
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_NE(p.err.find("1 -pg function(s) whose prologue moves sp or saves its return address in a way not followed (big): the graph tracer leaves their calls out"),
            std::string::npos)
      << p.err;
  Proc r = run(calltree(flavor_prefix, d / "big", {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, ""), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, out);
  const std::vector<std::string> files = traces_in(d.path());
  ASSERT_EQ(files.size(), 1u);
  const trace::Trace t = trace::read_trace(files[0]);
  ASSERT_EQ(t.threads.size(), 1u);
  EXPECT_EQ(graph_words(t, t.threads[0]), want);
  EXPECT_EQ(t.unwound, 0u);
}

// RISC-V64 -pg under graph: the preparer follows each function's prologue to its site (gcc keeps no
// frame pointer there); one it does not follow (a frame over 2 KiB, which `add sp, sp, t0` moves) is
// named when preparing and left out of the trace, while its callers and callees are traced and the
// program runs as built.
TEST(RiscvMinusPg, AFunctionWhosePrologueIsNotFollowedIsLeftOutOfGraph) {
  std::vector<std::string> want{"E main 0"};
  for (int i = 0; i < 3; i++) want.insert(want.end(), {"E leaf 1", "X leaf 1"});
  want.push_back("X main 0");
  expect_big_left_out_of_graph(
      "rv-", "riscv64-linux-gnu-gcc",
      "__attribute__((noinline)) int big(int n) { volatile char buf[8192]; memset((char*)buf, n, sizeof buf); return buf[n] + leaf(n); }\n"
      "int main(int argc, char** argv) { int s = 0; for (int i = 0; i < 3; i++) s += big(i + argc); printf(\"sum %d\\n\", s); return 0; }\n",
      "sum 27\n", want);
}

// Thumb-2 -pg under graph, the same: the preparer follows each prologue to its site (pushes, `sub sp`,
// `sub.w sp` with a modified immediate: `wide`'s 70 KB frame); one whose frame is over 256 KiB (more
// words than the frame word holds) is named and left out, while its callers and callees are traced.
TEST(Thumb2MinusPg, AFunctionWhosePrologueIsNotFollowedIsLeftOutOfGraph) {
  std::vector<std::string> want{"E main 0"};
  for (int i = 0; i < 3; i++) want.insert(want.end(), {"E leaf 1", "X leaf 1", "E wide 1", "E leaf 2", "X leaf 2", "X wide 1"});
  want.push_back("X main 0");
  expect_big_left_out_of_graph(
      "arm-", "arm-linux-gnueabihf-gcc",
      "__attribute__((noinline)) int big(int n) { volatile char buf[300000]; memset((char*)buf, n, sizeof buf); return buf[n] + leaf(n); }\n"
      "__attribute__((noinline)) int wide(int n) { volatile char buf[70001]; memset((char*)buf, n, sizeof buf); return buf[n] + leaf(n); }\n"
      "int main(int argc, char** argv) { int s = 0; for (int i = 0; i < 3; i++) s += big(i + argc) + wide(i); printf(\"sum %d\\n\", s); return 0; }\n",
      "sum 42\n", want);  // big: 4n + 1 for n = 1, 2, 3; wide: 4i + 1 for i = 0, 1, 2
}

// (x86-64 with -pg's mcount sites.)
TEST_P(Graph, ForkedChildReturnsThroughItsParentsFramesAndWritesItsOwnFile) {
  const std::string flavor = GetParam() == "fentry" ? "mcount" : GetParam();
  for (const char* tracer : {"graph", "function"}) {
    TempDir d;
    const std::string bin = prepare(d, flavor);
    Proc r = run(calltree(flavor, bin, {"PREPATCH_TRACE=*", std::string("PREPATCH_TRACER=") + tracer}, "fork"), d.path());
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "child 25\nparent 30 child exit 0\n");
    const std::vector<std::string> files = traces_in(d.path());
    ASSERT_EQ(files.size(), 2u) << tracer;
    std::map<std::string, int> tops;  // per file: how many times top was entered
    for (const std::string& f : files) {
      trace::Trace t = trace::read_trace(f);
      EXPECT_TRUE(t.problems.empty()) << f;
      int n = 0;
      for (const auto& th : t.threads)
        for (const auto& e : th.events) n += name(t, e) == "top" && e.type != shim::rec_exit;
      tops[t.names.empty() ? "" : std::to_string(t.pid)] = n;
    }
    std::vector<int> counts;
    for (auto& [pid, n] : tops) counts.push_back(n);
    std::sort(counts.begin(), counts.end());
    EXPECT_EQ(counts, (std::vector<int>{1, 2})) << tracer << ": the child calls top once, the parent twice";
  }
  // With a PREPATCH_OUTPUT without %p, the child writes PATH.CHILDPID and the parent PATH.
  TempDir d;
  const std::string bin = prepare(d, flavor);
  Proc r = run(calltree(flavor, bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t"}, "fork"), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> files;
  for (const std::string& f : list_dir(d.path()))
    if (f.starts_with("t")) files.push_back(f);
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0], "t");
  EXPECT_EQ(files[1], "t." + std::to_string(trace::read_trace(d / files[1]).pid));
  EXPECT_NE(trace::read_trace(d / "t").pid, trace::read_trace(d / files[1]).pid);
}

// The child closes the descriptors its parent's writer kept open (the trace file, its directory): its
// writer is wiped at the fork and it creates a file of its own, so those would stay open in it unused.
// In a dynamic program at the fork (glibc's fork handlers); in a static one, where none runs, before
// the child creates its file.
TEST(GraphFork, AForkedChildKeepsNoneOfItsParentsTraceFileDescriptors) {
  for (const std::string flavor : {"fentry", "static"}) {
    SCOPED_TRACE(flavor);
    TempDir d;
    const std::string bin = prepare(d, flavor);
    Proc r = run(calltree(flavor, bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, "forkfds"), d.path());
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<std::string> files = traces_in(d.path());
    ASSERT_EQ(files.size(), 2u);
    std::map<std::string, int> open;  // what the child's descriptors from 3 on lead to, and how many do
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);)
      if (line.starts_with("fd ")) open[line.substr(line.find(' ', 3) + 1)]++;
    const std::string dir = std::filesystem::canonical(d.path());
    const std::string a = std::filesystem::canonical(files[0]), b = std::filesystem::canonical(files[1]);
    EXPECT_EQ(open[a] + open[b], 1) << r.out << "(the child's own file, kept open; not its parent's)";
    EXPECT_EQ(open[dir], 1) << r.out << "(the directory its own file was created in)";
    EXPECT_EQ(r.out.substr(0, r.out.find('\n')), "child 25");
    EXPECT_TRUE(r.out.ends_with("parent 30 child exit 0\n")) << r.out;
  }
}

// x86-64 only: qemu-user cannot exec a binary of another ISA without binfmt_misc, which the tests do not
// assume. (What an exec does to the trace is the kernel's and the new image's shim's: no ISA's own.)
TEST(GraphExec, AProgramExecdByATracedProcessWritesItsOwnFileAndKeepsTheFirst) {
  TempDir d;
  const std::string bin = prepare(d, "fentry");
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", bin, "exec"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "before 10\nafter 15\n");  // top(x) = 5x + 5
  // The same pid before and after the exec: the first file keeps its name, the second gets ".1".
  const std::vector<std::string> files = traces_in(d.path());
  ASSERT_EQ(files.size(), 1u);
  ASSERT_TRUE(exists(files[0] + ".1"));
  const auto words = [&](const std::string& f) {
    trace::Trace t = trace::read_trace(f);
    EXPECT_TRUE(t.problems.empty()) << f;
    return t.threads.size() == 1 ? graph_words(t, t.threads[0]) : std::vector<std::string>{};
  };
  const std::vector<std::string> call{"E top 1", "E mid 2", "E leaf 3", "X leaf 3", "E leaf 3", "X leaf 3", "X mid 2", "X top 1"};
  std::vector<std::string> before{"E main 0"}, after{"E main 0"};
  before.insert(before.end(), call.begin(), call.end());  // main never returns: it exec'd
  after.insert(after.end(), call.begin(), call.end());
  after.push_back("X main 0");
  EXPECT_EQ(words(files[0]), before);
  EXPECT_EQ(words(files[0] + ".1"), after);
}

TEST_P(Graph, TraceOfAProcessKilledWithSigkillIsReadable) {
  TempDir d;
  const std::string bin = prepare(d, GetParam());
  int in[2], out[2];
  ASSERT_EQ(pipe2(in, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  const int pid = spawn(calltree(GetParam(), bin, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph"}, "wait"), d.path(), in[0], out[1], -1);
  close(in[0]), close(out[1]);
  FILE* f = fdopen(out[0], "r");
  char line[128] = {};
  std::string text;
  while (text.find("ready") == std::string::npos && fgets(line, sizeof line, f)) text += line;
  ASSERT_NE(text.find("ready"), std::string::npos) << text;
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  fclose(f), close(in[1]);
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  trace::Trace t = trace::read_trace(traces_in(d.path()).at(0));
  EXPECT_TRUE(t.problems.empty());
  ASSERT_EQ(t.threads.size(), 1u);
  std::vector<std::string> want = worker_words();
  for (std::string& w : want) w.back() = static_cast<char>(w.back() + 1);  // under main
  want.insert(want.begin(), "E main 0");
  EXPECT_EQ(graph_words(t, t.threads[0]), want);  // main never returned
  Proc rep = prepatch({"replay", traces_in(d.path()).at(0), "--function", "main"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  EXPECT_NE(rep.out.find("} /* main (unfinished) */"), std::string::npos) << rep.out.substr(rep.out.size() - 300);
}

TEST(Tracers, AFullTraceFileDropsAndCountsEventsAndKeepsTheRest) {
  TempDir d;
  const std::string bin = prepare(d, "fentry");
  // 1 MiB: the header, the table, three 256 KiB chunks; five workers write 9,002 records (16 bytes) each.
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_BUFFER=1", bin, "threads"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "sum 12562500\n");
  trace::Trace t = trace::read_trace(traces_in(d.path()).at(0));
  EXPECT_TRUE(t.problems.empty());
  EXPECT_EQ(t.chunks, 3u);
  EXPECT_GT(t.lost, 0u);
  u64 kept = 0;
  for (const auto& th : t.threads) kept += th.events.size();
  EXPECT_EQ(kept + t.lost, 2u + 5u * (2 + 8 * rounds));  // nothing lost that is not counted
  Proc rep = prepatch({"report", traces_in(d.path()).at(0)});
  EXPECT_EQ(rep.status, 0);
  EXPECT_NE(rep.err.find(std::to_string(t.lost) + " events were lost"), std::string::npos) << rep.err;
}

// The shim keeps the trace file's descriptor at 900 or above and writes each fresh chunk's zeros
// through it: a program that puts a file of its own under every number from 900 (dup2) after its first
// traced calls gets nothing written into that file. The trace keeps what was recorded before, every
// later event is counted as lost, and the run says why once.
TEST(Tracers, AFileTheProgramPutsUnderTheTraceFilesDescriptorIsNeverWritten) {
  TempDir d;
  write_file(d / "p.c",
             "#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n"
             "__attribute__((noinline)) int leaf(int x) { __asm__ volatile(\"\"); return x + 1; }\n"
             "int main(int argc, char** argv) {\n  int s = 0;\n  for (int i = 0; i < 1000; i++) s = leaf(s);\n"
             "  int fd = open(argv[1], O_RDWR);\n  for (int k = 900; k < 1000; k++) dup2(fd, k);\n"
             "  for (int i = 0; i < 1000000; i++) s = leaf(s);\n  printf(\"%d\\n\", s);\n  return 0;\n}\n");
  const Proc cc = run({"gcc", "-O2", "-pg", "-mfentry", d / "p.c", "-o", d / "p"});
  ASSERT_EQ(cc.status, 0) << cc.err;
  const Proc prep = prepatch({d / "p", "-o", d / "out", "-q"});
  ASSERT_EQ(prep.status, 0) << prep.err;
  const std::string mine(4096, 'm');
  write_file(d / "mine", mine);
  // A file grown chunk by chunk grows no more; a ring, in place since the first call, goes on.
  for (const std::string buffer : {"", "ring:1M"}) {
    const std::string trace = d / ("t" + buffer + ".trace");
    const Proc r = run({"env", "PREPATCH_TRACE=leaf", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + trace, "PREPATCH_BUFFER=" + buffer, d / "out", d / "mine"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, "1001000\n");
    EXPECT_NE(r.err.find("the program closed or reused the trace file's descriptor; "), std::string::npos) << r.err;
    EXPECT_EQ(read_file(d / "mine"), mine);
    const trace::Trace t = trace::read_trace(trace);
    EXPECT_TRUE(t.problems.empty()) << buffer << ": " << (t.problems.empty() ? "" : t.problems[0]);
    u64 kept = 0;
    for (const auto& th : t.threads) kept += th.events.size();
    // The readers say why events were lost, and find no damage: the chunks claimed past the file's end
    // were never written.
    const Proc report = prepatch({"report", trace});
    EXPECT_EQ(report.status, 0) << report.err;
    if (buffer.empty()) {
      EXPECT_GE(kept, 2000u);  // the first 1,000 calls' entries and exits, at least
      EXPECT_EQ(kept + t.lost, 2002000u);
      EXPECT_NE(report.err.find(" events were lost (the program closed or reused the trace file's descriptor, and the file grew no more)"),
                std::string::npos)
          << report.err;
    } else {
      EXPECT_EQ(t.lost, 0u);
      EXPECT_GT(kept, 20000u) << "the ring went on recording after the descriptor was lost";
      EXPECT_EQ(report.err, "");
    }
  }
}

TEST(Tracers, AnUnknownTracerLeavesTheProgramUntracedAndSaysSo) {
  TempDir d;
  const std::string bin = prepare(d, "fentry");
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graf", bin, "threads"}, d.path());
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "sum 12562500\n");
  EXPECT_NE(r.err.find("PREPATCH_TRACER is not count, function or graph"), std::string::npos) << r.err;
  EXPECT_TRUE(traces_in(d.path()).empty());
  // Said also where nothing is enabled at start (sites to be enabled later through `ctl`).
  Proc alone = run({"env", "PREPATCH_TRACER=graf", bin, "threads"}, d.path());
  EXPECT_EQ(alone.status, 0);
  EXPECT_EQ(alone.out, "sum 12562500\n");
  EXPECT_EQ(alone.err, "prepatch: tracing is off: PREPATCH_TRACER is not count, function or graph\n");
}

// One graph trace of the threads run, made once for the reading tests.
const std::string& graph_trace() { return calltree_graph_trace(); }

TEST(Export, ChromeJsonParsesAndBeginEndPairsNestPerThread) {
  TempDir d;
  Proc e = prepatch({"export", graph_trace(), "--format", "chrome", "-o", d / "out.json"});
  ASSERT_EQ(e.status, 0) << e.err;
  nlohmann::json j = nlohmann::json::parse(read_file(d / "out.json"));
  std::map<int, std::vector<std::string>> open;
  std::map<int, double> last;
  size_t events = 0;
  for (const auto& ev : j["traceEvents"]) {
    const int tid = ev["tid"];
    const std::string ph = ev["ph"], nm = ev["name"];
    const double ts = ev["ts"];
    ASSERT_GE(ts, last[tid]) << "tid " << tid;
    last[tid] = ts;
    if (ph == "B") open[tid].push_back(nm);
    else {
      ASSERT_EQ(ph, "E");
      ASSERT_FALSE(open[tid].empty());
      ASSERT_EQ(open[tid].back(), nm);
      open[tid].pop_back();
    }
    events++;
  }
  for (auto& [tid, s] : open) EXPECT_TRUE(s.empty()) << tid;
  EXPECT_EQ(events, 2u * (1 + 5 * (1 + 4 * rounds)));
}

// Collapsed stacks: every stack of the trace with the self time its calls spent, to the nanosecond
// (computed here from the records), summed over the threads; a function trace is refused.
TEST(Export, FoldedStacksAreEachStacksSelfTime) {
  TempDir d;
  Proc e = prepatch({"export", graph_trace(), "--format", "folded", "-o", d / "out.folded"});
  ASSERT_EQ(e.status, 0) << e.err;
  std::map<std::string, u64> got, want;
  std::istringstream in(read_file(d / "out.folded"));
  for (std::string line; std::getline(in, line);) {
    const size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    ASSERT_TRUE(got.emplace(line.substr(0, sp), std::stoull(line.substr(sp + 1))).second) << "twice: " << line;
  }
  trace::Trace t = trace::read_trace(graph_trace());
  for (const trace::ThreadTrace& th : t.threads) {
    struct Open {
      std::string stack;
      u64 begin, child;
    };
    std::vector<Open> open;
    for (const trace::Event& ev : th.events) {
      if (ev.type == shim::rec_entry) {
        open.push_back({(open.empty() ? "" : open.back().stack + ";") + t.names[ev.site], ev.ns, 0});
        continue;
      }
      ASSERT_EQ(ev.type, shim::rec_exit);
      const Open o = open.back();
      open.pop_back();
      want[o.stack] += ev.ns - o.begin - o.child;
      if (!open.empty()) open.back().child += ev.ns - o.begin;
    }
    EXPECT_TRUE(open.empty());
  }
  std::erase_if(want, [](const auto& kv) { return kv.second == 0; });
  EXPECT_EQ(got, want);
  EXPECT_TRUE(got.contains("worker;top;mid;leaf")) << read_file(d / "out.folded");

  const std::string& fn = calltree_function_trace();
  Proc refused = prepatch({"export", fn, "--format", "folded", "-o", d / "f.folded"});
  EXPECT_EQ(refused.status, 4);
  EXPECT_NE(refused.err.find(fn + ": offset 0x10: a function trace, which has no durations"), std::string::npos) << refused.err;
  EXPECT_FALSE(exists(d / "f.folded"));
}

TEST(Replay, NestsLikeFunctionGraphAndFilters) {
  Proc r = prepatch({"replay", graph_trace(), "--function", "mid"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::istringstream in(r.out);
  std::string line;
  std::map<std::string, int> kinds;
  std::getline(in, line);  // the heading
  while (std::getline(in, line)) {
    if (line.find(" |     mid() {") != std::string::npos) kinds["mid"]++;  // at depth 2
    else if (line.find(" |       leaf();") != std::string::npos) kinds["leaf"]++;
    else if (line.find(" |     } /* mid */") != std::string::npos) kinds["close"]++;
    else ADD_FAILURE() << "unexpected line: " << line;
  }
  EXPECT_EQ(kinds, (std::map<std::string, int>{{"mid", 5 * rounds}, {"leaf", 10 * rounds}, {"close", 5 * rounds}}));
  trace::Trace t = trace::read_trace(graph_trace());
  Proc one = prepatch({"replay", graph_trace(), "--tid", std::to_string(t.threads[1].tid)});
  ASSERT_EQ(one.status, 0);
  // The heading, worker's two lines, and per round top's and mid's two lines each and two leaves.
  EXPECT_EQ(std::count(one.out.begin(), one.out.end(), '\n'), 1 + 2 + 6 * rounds) << one.out.substr(0, 500);
}

// --depth, --threshold, --since and --until, and ftrace's duration marks (+ 10 us, ! 100 us, # 1 ms, * 10 ms, @ 100 ms,
// $ 1 s) in the duration column.
TEST(Replay, DepthThresholdTimeWindowAndDurationMarks) {
  Proc all = prepatch({"replay", graph_trace()});
  ASSERT_EQ(all.status, 0) << all.err;
  std::vector<std::string> lines;
  std::istringstream in(all.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_GT(lines.size(), 100u);
  // Every duration's mark, against its value (skipping values printed at a boundary).
  const std::regex dur("^ *[0-9.]+ +[0-9]+  (.) *([0-9.]+) (us|ms|s) \\|");
  size_t marked = 0, durations = 0;
  for (const std::string& l : lines) {
    std::smatch m;
    if (!std::regex_search(l, m, dur)) continue;
    durations++;
    const double ns = std::stod(m[2]) * (m[3] == "us" ? 1e3 : m[3] == "ms" ? 1e6 : 1e9);
    const double bounds[] = {1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    if (std::any_of(std::begin(bounds), std::end(bounds), [&](double b) { return std::abs(ns - b) < 1; })) continue;
    const char want = ns > 1e9 ? '$' : ns > 1e8 ? '@' : ns > 1e7 ? '*' : ns > 1e6 ? '#' : ns > 1e5 ? '!' : ns > 1e4 ? '+' : ' ';
    EXPECT_EQ(m[1].str()[0], want) << l;
    marked += want != ' ';
  }
  EXPECT_GT(durations, 100u);
  EXPECT_GT(marked, 0u);  // main at least: it waits for its threads

  // --depth 2: main and the workers, whose top() calls show as leaves.
  Proc d2 = prepatch({"replay", graph_trace(), "--depth", "2"});
  ASSERT_EQ(d2.status, 0) << d2.err;
  std::map<std::string, int> kinds;
  std::istringstream d2in(d2.out);
  std::string line;
  std::getline(d2in, line);  // the heading
  while (std::getline(d2in, line)) {
    const std::string f = line.substr(line.find(" | ") + 3);
    kinds[f]++;
  }
  EXPECT_EQ(kinds, (std::map<std::string, int>{{"main();", 1}, {"worker() {", 5}, {"} /* worker */", 5}, {"  top();", 5 * rounds}})) << d2.out.substr(0, 800);

  // --since and --until between two lines' times: exactly the lines between, in the same order.
  const auto time_of = [](const std::string& l) { return static_cast<u64>(std::llround(std::stod(l) * 1000)); };
  size_t a = lines.size() / 3, b = 2 * lines.size() / 3;
  while (a + 1 < lines.size() && time_of(lines[a + 1]) - time_of(lines[a]) < 2) a++;
  while (b + 1 < lines.size() && time_of(lines[b + 1]) - time_of(lines[b]) < 2) b++;
  ASSERT_LT(b + 1, lines.size());
  const u64 since = (time_of(lines[a]) + time_of(lines[a + 1])) / 2, until = (time_of(lines[b]) + time_of(lines[b + 1])) / 2;
  Proc w = prepatch({"replay", graph_trace(), "--since", std::to_string(since) + "ns", "--until", std::to_string(until / 1000.0) + "us"});
  ASSERT_EQ(w.status, 0) << w.err;
  std::string want = lines[0] + "\n";
  for (size_t k = a + 1; k <= b; k++) want += lines[k] + "\n";
  EXPECT_EQ(w.out, want);
  // --threshold at the median duration: exactly the calls lasting that long, each once (a leaf line, or
  // an opening and a closing one), every duration shown at least that.
  trace::Trace t = trace::read_trace(graph_trace());
  std::vector<u64> lasted;
  for (const trace::ThreadTrace& th : t.threads) {
    std::vector<u64> open;
    for (const trace::Event& ev : th.events) {
      if (ev.type == shim::rec_entry) open.push_back(ev.ns);
      else lasted.push_back(ev.ns - open.back()), open.pop_back();
    }
  }
  std::vector<u64> sorted = lasted;
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  const u64 median = sorted[sorted.size() / 2];
  const long long_enough = std::count_if(lasted.begin(), lasted.end(), [&](u64 d) { return d >= median; });
  ASSERT_GT(long_enough, 0);
  ASSERT_LT(static_cast<size_t>(long_enough), lasted.size());
  Proc th = prepatch({"replay", graph_trace(), "--threshold", std::to_string(median) + "ns"});
  ASSERT_EQ(th.status, 0) << th.err;
  long shown = 0;
  std::istringstream thin(th.out);
  std::getline(thin, line);
  while (std::getline(thin, line)) {
    std::smatch m;
    if (std::regex_search(line, m, dur)) {
      const double ns = std::stod(m[2]) * (m[3] == "us" ? 1e3 : m[3] == "ms" ? 1e6 : 1e9);
      EXPECT_GE(ns + 0.5, static_cast<double>(median)) << line;  // (printed to the ns)
    }
    shown += line.ends_with("{") || line.ends_with(");");
  }
  EXPECT_EQ(shown, long_enough) << th.out.substr(0, 1500);
  Proc bad_threshold = prepatch({"replay", graph_trace(), "--threshold", "abc"});
  EXPECT_EQ(bad_threshold.status, 2);

  Proc bad = prepatch({"replay", graph_trace(), "--since", "5 minutes"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("'5 minutes' is not a time"), std::string::npos) << bad.err;
}

TEST(DamagedTrace, EachDamageIsNamedAndTheIntactRecordsAreStillShown) {
  TempDir d;
  const std::string good = read_file(graph_trace());
  trace::Trace t = trace::read_trace(graph_trace());
  const auto with = [&](const std::string& name, std::string bytes) {
    write_file(d / name, bytes);
    return d / name;
  };
  // Cut in the middle of the last chunk: what comes before is reported, the cut is named.
  {
    const std::string f = with("cut.trace", good.substr(0, good.size() / 2 + 1000));  // inside a full chunk
    Proc r = prepatch({"report", f});
    EXPECT_EQ(r.status, 4);
    EXPECT_NE(r.err.find(f + ": offset 0x"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("(truncated?)"), std::string::npos) << r.err;
    EXPECT_NE(r.out.find("worker"), std::string::npos) << r.out;
  }
  // A TSC rate of 0 in the header: refused, naming that field's offset (88).
  {
    std::string bytes = good;
    std::memset(&bytes[offsetof(shim::TraceHeader, tsc_hz)], 0, 8);
    const std::string f = with("tsc.trace", bytes);
    Proc r = prepatch({"report", f});
    EXPECT_EQ(r.status, 4);
    EXPECT_NE(r.err.find(f + ": offset 0x58: the TSC rate is 0"), std::string::npos) << r.err;
  }
  // A chunk's record count corrupted: that chunk is skipped, the others are kept.
  {
    std::string bytes = good;
    shim::TraceHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    const u64 used_at = h.chunk_offset + 16;
    const u64 bad = 12345;  // not a multiple of 8
    std::memcpy(&bytes[used_at], &bad, 8);
    const std::string f = with("used.trace", bytes);
    trace::Trace c = trace::read_trace(f);
    ASSERT_EQ(c.problems.size(), 1u);
    EXPECT_NE(c.problems[0].find("offset 0x" + [&] { std::ostringstream o; o << std::hex << used_at; return o.str(); }()), std::string::npos) << c.problems[0];
    size_t events = 0;
    for (const auto& th : c.threads) events += th.events.size();
    EXPECT_GT(events, 0u);
    Proc r = prepatch({"replay", f});
    EXPECT_EQ(r.status, 4);
    EXPECT_GT(std::count(r.out.begin(), r.out.end(), '\n'), 100);
  }
  // The first record (main's entry) turned into an exit: at depth 0 it leaves nothing, so it is skipped
  // and named, and so is main's exit, which then has no entry; the other threads are whole.
  {
    std::string bytes = good;
    shim::TraceHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    const u64 rec_at = h.chunk_offset + sizeof(shim::ChunkHeader);
    bytes[rec_at] = static_cast<char>((bytes[rec_at] & ~3) | shim::rec_exit);
    trace::Trace c = trace::read_trace(with("depth.trace", bytes));
    ASSERT_EQ(c.problems.size(), 1u);
    EXPECT_NE(c.problems[0].find(hex(rec_at) + ": thread "), std::string::npos) << c.problems[0];
    EXPECT_NE(c.problems[0].find(": 2 records"), std::string::npos) << c.problems[0];
    EXPECT_NE(c.problems[0].find("leave a depth of 0"), std::string::npos) << c.problems[0];
    size_t events = 0, whole = 0;
    for (const auto& th : c.threads) events += th.events.size();
    for (const auto& th : t.threads) whole += th.events.size();
    EXPECT_EQ(events, whole - 2);
  }
  // Damage to the header or the table copy: nothing can be read; one line names the file and offset.
  struct Case {
    const char* name;
    std::string bytes;
    const char* message;
  };
  std::string magic = good, version = good, version1 = good, table = good;
  magic[0] = 'X';
  version[8] = 9;
  version1[8] = 1;
  table[4096 + 2] = 'X';
  for (const Case& c : {Case{"short", good.substr(0, 100), "offset 0x64: the file ends inside the trace header"},
                        Case{"magic", magic, "offset 0x0: expected the trace magic"},
                        Case{"version", version, "offset 0x8: trace version 9, expected 2"},
                        Case{"version1", version1, "offset 0x8: trace version 1, expected 2 to 4 (written by an older prepatch"},
                        Case{"table", table, "offset 0x1000"},
                        Case{"empty", "", "offset 0x0: expected the trace magic \"PPTRACE\\1\", found an empty file"},
                        Case{"text", "hello\n", "offset 0x0: expected the trace magic \"PPTRACE\\1\", found something else"},
                        Case{"cut magic", good.substr(0, 5), "offset 0x5: the file ends inside the trace header"}}) {
    const std::string f = with(std::string(c.name) + ".trace", c.bytes);
    for (const char* cmd : {"report", "replay"}) {
      Proc r = prepatch({cmd, f});
      EXPECT_EQ(r.status, 4) << c.name;
      EXPECT_NE(r.err.find(f + ": " + c.message), std::string::npos) << c.name << ": " << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
  }
  Proc missing = prepatch({"report", d / "nonexistent.trace"});
  EXPECT_EQ(missing.status, 5);
  Proc out = prepatch({"export", graph_trace(), "-o", d / "no/such/dir/out.json"});
  EXPECT_EQ(out.status, 5);
  EXPECT_FALSE(exists(d / "no/such/dir/out.json"));
}


// The GNU build ID as readelf shows it ("" when there is none).
std::string readelf_build_id(const std::string& bin) {
  const std::string out = run({"readelf", "-n", bin}).out;
  const auto at = out.find("Build ID: ");
  return at == std::string::npos ? "" : out.substr(at + 10, out.find('\n', at) - at - 10);
}

// `size` bytes at `off` of `file`, as hex digits.
std::string hex_at(const std::string& file, size_t off, size_t size) {
  const std::string b = read_file(file);
  if (off > b.size()) return "";
  return hex_bytes({reinterpret_cast<const u8*>(b.data()) + off, std::min(size, b.size() - off)}, "");
}

// The trace and counts files carry the build ID of the binary that wrote them (docs/FORMAT.md), as
// readelf reads it; `prepatch counts` refuses a counts file from another build of the same layout
// (same sites at the same addresses: only a constant string differs), naming both IDs.
TEST(Files, RecordTheBuildIdOfTheBinary) {
  TempDir d;
  const std::string bin = prepare(d, "fentry");
  const std::string id = readelf_build_id(bin);
  ASSERT_EQ(id.size(), 40u) << "gcc's default build ID is 20 bytes";
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + d / "t.trace", bin, "threads"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(hex_at(d / "t.trace", offsetof(shim::TraceHeader, build_id_size), 1), "14");
  EXPECT_EQ(hex_at(d / "t.trace", offsetof(shim::TraceHeader, build_id), 20), id);
  r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", bin, "threads"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  constexpr size_t section = 4096;  // the binary's, the first
  EXPECT_EQ(hex_at(d / "c", section + offsetof(shim::CountsObject, build_id_size), 1), "14");
  EXPECT_EQ(hex_at(d / "c", section + offsetof(shim::CountsObject, build_id), 20), id);

  for (const char* word : {"apple", "mango"}) {
    write_file(d / (std::string(word) + ".c"), std::string("#include <stdio.h>\n__attribute__((noinline)) void say(const char* s) { puts(s); }\n"
                                                           "int main(void) { say(\"") + word + "\"); return 0; }\n");
    Proc cc = run({"gcc", "-O1", "-pg", "-mfentry", d / (std::string(word) + ".c"), "-o", d / (std::string(word) + ".orig")});
    ASSERT_EQ(cc.status, 0) << cc.err;
    ASSERT_EQ(prepatch({"-q", d / (std::string(word) + ".orig"), "-o", d / word}).status, 0);
  }
  ASSERT_NE(readelf_build_id(d / "apple"), readelf_build_id(d / "mango"));
  r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "apple.counts", d / "apple"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(prepatch({"counts", d / "apple", d / "apple.counts"}).status, 0);
  Proc other = prepatch({"counts", d / "mango", d / "apple.counts"});
  EXPECT_EQ(other.status, 4) << other.out << other.err;
  EXPECT_NE(other.err.find("written by another build: build ID " + readelf_build_id(d / "apple") + "; " + d / "mango" + "'s is " +
                           readelf_build_id(d / "mango")),
            std::string::npos)
      << other.err;
  std::string damaged = read_file(d / "apple.counts");
  damaged[section + offsetof(shim::CountsObject, build_id_size)] = 99;
  write_file(d / "damaged.counts", damaged);
  Proc bad = prepatch({"counts", d / "apple", d / "damaged.counts"});
  EXPECT_EQ(bad.status, 4);
  EXPECT_NE(bad.err.find("offset 0x1028: expected a build ID of at most 20 bytes, found a size of 99"), std::string::npos) << bad.err;
}
}  // namespace
}  // namespace prepatch::test
