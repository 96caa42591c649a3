// The record-time filters and recorded values (shim/filters.h, docs/SHIM.md "Filters"): PREPATCH_DEPTH,
// THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, TIDS, ARGS and RETVAL at start and through `prepatch ctl PID
// set`, checked call by call against a model of what testdata/filters.c calls, and the values against
// what it computed.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "shim/filters.h"
#include "support.h"
#include "tests/perfetto.h"
#include "trace/calls.h"
#include "trace/reader.h"

namespace prepatch::test {
namespace {

// testdata/filters.c built -pg -mfentry and prepared, once.
struct Program {
  TempDir d;
  std::string exe = d / "filters";
  Program() {
    Proc cc = run({"gcc", "-O2", "-pg", "-mfentry", "-pthread", std::string(SOURCE_DIR) + "/testdata/filters.c", "-o", d / "filters.hooks"});
    EXPECT_EQ(cc.status, 0) << cc.err;
    Proc p = prepatch({"-q", d / "filters.hooks", "-o", exe});
    EXPECT_EQ(p.status, 0) << p.err;
  }
};
const Program& program() {
  static Program p;
  return p;
}
const std::string traced = "PREPATCH_TRACE=work,a,b,c,quiet,slow,mix";

// The calls work() makes (testdata/filters.c), as a tree; `slow`: the call lasts 150 ms (slow(150)
// and work itself), the others a few microseconds.
struct Node {
  std::string name;
  bool slow = false;
  std::vector<Node> kids;
};
Node work_tree() {
  Node w{"work", true, {}};
  for (int i = 0; i < 4; i++) {
    w.kids.push_back({"a", false, {{"b", false, {{"c", false, {}}, {"c", false, {}}}}}});
    w.kids.push_back({"quiet", false, {{"c", false, {}}}});
    w.kids.push_back({"slow", i == 1 || i == 3, {{"c", false, {}}}});
    w.kids.push_back({"mix", false, {}});
  }
  return w;
}

// What the filters record of a tree, as the shim decides it (filters.inc admit): "+name" at entry,
// "-name" at exit.
struct Model {
  unsigned depth = 0;
  bool threshold = false;  // 50 ms: only the slow calls
  std::set<std::string> graph_function, notrace;

  void walk(const Node& n, unsigned at, bool inside, std::vector<std::string>& out) const {
    if (depth && at >= depth) return;  // not traced, nor anything it calls (they are deeper still)
    const bool starts = graph_function.count(n.name) > 0;
    if (!graph_function.empty() && !starts && !inside) {  // not traced, but what it calls may be
      for (const Node& k : n.kids) walk(k, at, inside, out);
      return;
    }
    if (notrace.count(n.name)) return;
    const bool kept = !threshold || n.slow;
    if (kept) out.push_back("+" + n.name);
    for (const Node& k : n.kids) walk(k, at + 1, inside || starts, out);
    if (kept) out.push_back("-" + n.name);
  }
  std::vector<std::string> rounds(int n) const {
    std::vector<std::string> out;
    for (int r = 0; r < n; r++) walk(work_tree(), 0, false, out);
    return out;
  }
};

// An event as the tests compare them: "+name", "-name" (graph) or "name" (function), or "=K:V" for
// a value (K its index: 0-5 an argument, 7 the return value).
std::string event_text(trace::TraceFile& f, const trace::Event& e) {
  if (e.type == trace::value_event) return "=" + std::to_string(e.site) + ":" + std::to_string(static_cast<long long>(e.rest));
  return !f.graph() ? f.name(e.site) : (e.type == shim::rec_entry ? "+" : "-") + f.name(e.site);
}

// Each thread's events (event_text), by tid; values only with `values`.
std::map<u32, std::vector<std::string>> recorded(const std::string& file, bool values = false) {
  trace::TraceFile f(file);
  std::map<u32, std::vector<std::string>> out;
  for (size_t k = 0; k < f.threads(); k++) {
    trace::TraceFile::Stream s(f, k, 4096, false, values);
    std::vector<std::string>& v = out[f.tid(k)];
    for (trace::Event e; s.next(e);) v.push_back(event_text(f, e));
  }
  for (const std::string& p : f.problems()) ADD_FAILURE() << file << ": " << p;
  return out;
}

// What thread `tid` of `file` recorded, compared with `want` under a threshold of `ns`: `want` itself
// where the recorded events are `want` with whole calls added that each lasted `ns` as the trace timed
// them, else the recorded events. A loaded machine can keep a thread off the CPU that long in a call
// that otherwise takes microseconds, and the threshold then rightly keeps it (with the calls around it,
// which last longer still); a call kept that did not last `ns` is never dropped, and fails.
std::vector<std::string> under_threshold(const std::string& file, u32 tid, const std::vector<std::string>& want, u64 ns, bool values = false) {
  trace::TraceFile f(file);
  std::vector<std::string> got;
  std::vector<u64> at;
  for (size_t k = 0; k < f.threads(); k++) {
    if (f.tid(k) != tid) continue;
    trace::TraceFile::Stream s(f, k, 4096, false, values);
    for (trace::Event e; s.next(e); at.push_back(e.ns)) got.push_back(event_text(f, e));
  }
  for (const std::string& p : f.problems()) ADD_FAILURE() << file << ": " << p;
  // Where the call entered at `i` ends (its exit's index; got.size() when it has none).
  const auto end_of = [&](size_t i) {
    size_t j = i + 1;
    for (int depth = 1; j < got.size(); j++) {
      if (got[j][0] == '+') depth++;
      else if (got[j][0] == '-' && --depth == 0) break;
    }
    return j;
  };
  // Whether got[i...] is want[w...] with such calls added (either way where a call could be both).
  const std::function<bool(size_t, size_t)> reduces = [&](size_t i, size_t w) {
    if (i == got.size()) return w == want.size();
    if (w < want.size() && got[i] == want[w] && reduces(i + 1, w + 1)) return true;
    if (got[i][0] != '+') return false;
    const size_t j = end_of(i);
    return j < got.size() && at[j] - at[i] >= ns && reduces(j + 1, w);
  };
  return reduces(0, 0) ? want : got;
}

// The tids testdata/filters.c printed ("... tids T1 T2 ...").
std::vector<u32> tids_of(const std::string& line) {
  std::vector<u32> t;
  std::istringstream in(line.substr(line.find("tids") + 4));
  for (u32 x; in >> x;) t.push_back(x);
  return t;
}

// Runs testdata/filters.c once on `threads` threads with the graph tracer and `env`; its output.
Proc run_once(const std::string& file, std::vector<std::string> env, int threads = 2) {
  env.insert(env.begin(), {"env", "PREPATCH_TRACER=graph", traced, "PREPATCH_OUTPUT=" + file});
  env.insert(env.end(), {program().exe, "once", std::to_string(threads)});
  Proc r = run(env);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  return r;
}

// Each filter at start, alone and combined, also in ring mode: every thread records exactly the
// calls the model keeps, in order (under a threshold, and any call the machine stretched to it).
TEST(Filters, EachFilterKeepsExactlyTheCallsItShould) {
  struct Case {
    std::vector<std::string> env;
    Model model;
  };
  const std::vector<Case> cases = {
      {{}, {}},
      {{"PREPATCH_DEPTH=1"}, {.depth = 1}},
      {{"PREPATCH_DEPTH=2"}, {.depth = 2}},
      {{"PREPATCH_THRESHOLD=50ms"}, {.threshold = true}},
      {{"PREPATCH_GRAPH_FUNCTION=b"}, {.graph_function = {"b"}}},
      {{"PREPATCH_GRAPH_FUNCTION=b,quiet"}, {.graph_function = {"b", "quiet"}}},
      {{"PREPATCH_GRAPH_NOTRACE=quiet,b"}, {.notrace = {"quiet", "b"}}},
      {{"PREPATCH_GRAPH_FUNCTION=a,slow", "PREPATCH_GRAPH_NOTRACE=c", "PREPATCH_DEPTH=2"}, {.depth = 2, .graph_function = {"a", "slow"}, .notrace = {"c"}}},
      {{"PREPATCH_THRESHOLD=50000", "PREPATCH_GRAPH_NOTRACE=quiet"}, {.threshold = true, .notrace = {"quiet"}}},
      {{"PREPATCH_BUFFER=ring:512K", "PREPATCH_THRESHOLD=50ms", "PREPATCH_DEPTH=3"}, {.depth = 3, .threshold = true}},
      {{"PREPATCH_BUFFER=ring:512K", "PREPATCH_GRAPH_FUNCTION=a"}, {.graph_function = {"a"}}},
  };
  for (size_t n = 0; n < cases.size(); n++) {
    const Case& c = cases[n];
    std::string name;
    for (const std::string& e : c.env) name += e + " ";
    SCOPED_TRACE(name);
    const std::string file = program().d / ("start" + std::to_string(n) + ".trace");
    Proc r = run_once(file, c.env);
    const std::vector<u32> tids = tids_of(r.out);
    ASSERT_EQ(tids.size(), 2u) << r.out;
    const auto got = recorded(file);
    const std::vector<std::string> want = c.model.rounds(1);
    for (u32 tid : tids) {
      SCOPED_TRACE("tid " + std::to_string(tid));
      ASSERT_TRUE(got.count(tid) || want.empty());
      EXPECT_EQ(c.model.threshold ? under_threshold(file, tid, want, 50000000) : got.at(tid), want);
    }
  }
}

// The ARGS and RETVAL values, in the file and as replay and export show them, against what
// testdata/filters.c computed (its "mix K R I = V" lines): small, negative, and wider than 34 bits.
// Under a threshold, the arguments of the calls that reach it; under the function tracer, too.
TEST(Filters, ArgumentsAndReturnValuesAreWhatTheProgramComputed) {
  const std::string file = program().d / "values.trace";
  Proc r = run_once(file, {"PREPATCH_ARGS=mix", "PREPATCH_RETVAL=mix,a"}, 1);
  const std::vector<u32> tids = tids_of(r.out);
  ASSERT_EQ(tids.size(), 1u);
  std::map<int, long long> mix;  // by i
  std::smatch m;
  for (std::string rest = r.out; std::regex_search(rest, m, std::regex("mix 0 0 (\\d) = (-?\\d+)")); rest = m.suffix()) mix[std::stoi(m[1])] = std::stoll(m[2]);
  ASSERT_EQ(mix.size(), 4u) << r.out;
  const std::vector<std::string> v = recorded(file, true).at(tids[0]);
  // After each mix entry its six arguments, before its exit its value; before each a exit, 6i + 6.
  int mixes = 0, as = 0;
  long long pointer0 = 0;
  for (size_t k = 0; k < v.size(); k++) {
    if (v[k] == "+mix") {
      const int i = mixes++;
      ASSERT_LT(k + 8, v.size());
      EXPECT_EQ(v[k + 1], "=0:" + std::to_string(i));
      EXPECT_EQ(v[k + 2], "=1:" + std::to_string(-1LL * (i + 1)));
      const long long p = std::stoll(v[k + 3].substr(3));
      if (i == 0) pointer0 = p;
      EXPECT_EQ(p, pointer0 + i);  // buffer + i
      EXPECT_EQ(v[k + 4], "=3:" + std::to_string(static_cast<unsigned>(-i)));  // an int: the register's low half
      EXPECT_EQ(v[k + 5], "=4:" + std::to_string(0x123456789abLL * (i + 1)));
      EXPECT_EQ(v[k + 6], "=5:" + std::to_string(0xffffffffLL - i));
      EXPECT_EQ(v[k + 7], "=7:" + std::to_string(mix[i]));
      EXPECT_EQ(v[k + 8], "-mix");
    }
    if (v[k] == "-a") {
      ASSERT_GT(k, 0u);
      EXPECT_EQ(v[k - 1], "=7:" + std::to_string(6 * as + 6));
      as++;
    }
    if (v[k] == "+a" || v[k] == "+b" || v[k] == "-c") {
      EXPECT_NE(v[k + 1].substr(0, 1), "=");  // no arguments but mix's, no return value but mix's and a's
    }
  }
  EXPECT_EQ(mixes, 4);
  EXPECT_EQ(as, 4);

  Proc replay = prepatch({"replay", file});
  EXPECT_EQ(replay.status, 0) << replay.err;
  EXPECT_NE(replay.out.find("  mix(0, -1, 0x"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("0x123456789ab, 0xffffffff); /* = "), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("} /* a = 6 */"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("} /* a = 24 */"), std::string::npos) << replay.out;
  Proc json = prepatch({"export", file, "-o", program().d / "values.json"});
  EXPECT_EQ(json.status, 0) << json.err;
  const std::string j = read_file(program().d / "values.json");
  EXPECT_NE(j.find("\"args\":{\"retval\":12}"), std::string::npos) << j.substr(0, 2000);
  EXPECT_NE(j.find("\"args\":{\"args\":[3,-4,\"0x"), std::string::npos) << j.substr(0, 2000);
  // The same values in the Perfetto export, decoded against Perfetto's definitions: each mix slice's
  // end carries its six arguments and its value, each a slice's end its value, as the views show them.
  std::vector<std::string> mix_args, mix_values, a_values;
  for (size_t k = 0; k < v.size(); k++) {
    if (v[k] != "+mix") continue;
    std::string args = "[";
    for (size_t n = 1; n <= 6; n++) args += (n > 1 ? "," : "") + trace::value_text(static_cast<u64>(std::stoll(v[k + n].substr(3))));
    mix_args.push_back(args + "]");
  }
  for (const auto& [i, value] : mix) mix_values.push_back(trace::value_text(static_cast<u64>(value)));
  for (int i = 1; i <= 4; i++) a_values.push_back(std::to_string(6 * i));
  Proc pf = prepatch({"export", file, "--format", "perfetto", "-o", program().d / "values.pftrace"});
  ASSERT_EQ(pf.status, 0) << pf.err;
  PerfettoReader reader;
  std::map<u64, std::vector<std::string>> open;  // by track
  std::vector<std::string> got_args, got_values, got_a;
  reader.read(program().d / "values.pftrace", [&](const PfEvent& e) {
    std::vector<std::string>& o = open[e.track];
    if (e.type == 1) return o.push_back(e.name);
    ASSERT_EQ(e.type, 2);
    ASSERT_FALSE(o.empty());
    if (o.back() == "mix") got_args.push_back(e.args.at("args")), got_values.push_back(e.args.at("retval"));
    else if (o.back() == "a") got_a.push_back(e.args.at("retval"));
    else EXPECT_TRUE(e.args.empty()) << o.back();
    o.pop_back();
  });
  EXPECT_TRUE(reader.problems().empty()) << reader.problems().front();
  EXPECT_EQ(got_args, mix_args);
  EXPECT_EQ(got_values, mix_values);
  EXPECT_EQ(got_a, a_values);

  // A threshold: only the slow calls, each with its argument and value; then the function tracer.
  const std::string slow = program().d / "slow.trace";
  Proc s = run_once(slow, {"PREPATCH_THRESHOLD=50ms", "PREPATCH_ARGS=slow:1", "PREPATCH_RETVAL=slow"}, 1);
  const std::vector<std::string> slow_want = {"+work", "+slow", "=0:150", "=7:1", "-slow", "+slow", "=0:150", "=7:1", "-slow", "-work"};
  EXPECT_EQ(under_threshold(slow, tids_of(s.out).at(0), slow_want, 50000000, true), slow_want);
  const std::string fn = program().d / "function.trace";
  Proc f = run({"env", "PREPATCH_TRACER=function", "PREPATCH_TRACE=mix,quiet", "PREPATCH_ARGS=mix:2", "PREPATCH_OUTPUT=" + fn, program().exe, "once", "1"});
  ASSERT_EQ(f.status, 0) << f.err;
  std::vector<std::string> want;
  for (int i = 0; i < 4; i++) want.insert(want.end(), {"quiet", "mix", "=0:" + std::to_string(i), "=1:" + std::to_string(-1LL * (i + 1))});
  EXPECT_EQ(recorded(fn, true).at(tids_of(f.out).at(0)), want);
  Proc freplay = prepatch({"replay", fn});
  EXPECT_NE(freplay.out.find("mix(3, -4) <- work"), std::string::npos) << freplay.out;
  // In Perfetto: an instant per call, mix's with its two arguments.
  Proc fpf = prepatch({"export", fn, "--format", "perfetto", "-o", program().d / "function.pftrace"});
  ASSERT_EQ(fpf.status, 0) << fpf.err;
  std::vector<std::string> instants, want_instants;
  reader.read(program().d / "function.pftrace", [&](const PfEvent& e) {
    EXPECT_EQ(e.type, 3);
    instants.push_back(e.name + (e.args.empty() ? "" : " " + e.args.at("args")));
  });
  EXPECT_TRUE(reader.problems().empty()) << reader.problems().front();
  for (int i = 0; i < 4; i++) want_instants.insert(want_instants.end(), {"quiet", "mix [" + std::to_string(i) + "," + std::to_string(-1 - i) + "]"});
  EXPECT_EQ(instants, want_instants);
}

// The same on AArch64's, RISC-V64's and Thumb-2's patchable sites under qemu-user: the six arguments
// (x0-x5, a0-a5; r0-r3 and two stack words) and mix's value (x0, a0, r0) as the program computed them.
// The ABIs differ on 32-bit values: an int or unsigned is sign-extended in RISC-V64's register (so `s`
// = -i reads -i and `u` = 0xffffffff - i reads -1 - i), and the shim sign-extends Thumb-2's words the
// same way (where `long` is 32 bits, so `t` is its low word), where AArch64's and x86-64's upper half
// is not defined (x86-64's test reads it 0).
TEST(Filters, ArgumentsAndReturnValuesOnAarch64Riscv64AndThumb2) {
  for (const auto& [isa, cc, flag] : std::vector<std::array<std::string, 3>>{{"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=2"},
                                                                          {"riscv64", "riscv64-linux-gnu-gcc", "-fpatchable-function-entry=4"},
                                                                          {"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=3"}}) {
    SCOPED_TRACE(isa);
    TempDir d;
    Proc cc_run = run({cc, "-O2", flag, "-pthread", std::string(SOURCE_DIR) + "/testdata/filters.c", "-o", d / "filters.hooks"});
    ASSERT_EQ(cc_run.status, 0) << cc_run.err;
    ASSERT_EQ(prepatch({"-q", d / "filters.hooks", "-o", d / "filters"}).status, 0);
    std::vector<std::string> argv = qemu_for(isa);
    argv.insert(argv.end(), {d / "filters", "once", "1"});
    const std::string file = d / "values.trace";
    Proc r = run(with_env({"PREPATCH_TRACER=graph", traced, "PREPATCH_ARGS=mix", "PREPATCH_RETVAL=mix", "PREPATCH_OUTPUT=" + file}, argv), d.path());
    ASSERT_EQ(r.status, 0) << r.err;
    std::map<int, long long> mix;  // by i
    std::smatch m;
    for (std::string rest = r.out; std::regex_search(rest, m, std::regex("mix 0 0 (\\d) = (-?\\d+)")); rest = m.suffix()) mix[std::stoi(m[1])] = std::stoll(m[2]);
    ASSERT_EQ(mix.size(), 4u) << r.out;
    const auto got = recorded(file, true);
    ASSERT_EQ(got.size(), 1u);
    const std::vector<std::string>& v = got.begin()->second;
    int mixes = 0;
    for (size_t k = 0; k < v.size(); k++) {
      if (v[k] != "+mix") continue;
      const int i = mixes++;
      ASSERT_LT(k + 8, v.size());
      EXPECT_EQ(v[k + 1], "=0:" + std::to_string(i));
      EXPECT_EQ(v[k + 2], "=1:" + std::to_string(-1LL * (i + 1)));
      if (isa != "aarch64") {
        EXPECT_EQ(v[k + 4], "=3:" + std::to_string(-i));
      }
      const long long t = 0x123456789abLL * (i + 1);
      EXPECT_EQ(v[k + 5], "=4:" + std::to_string(isa == "arm" ? static_cast<long long>(static_cast<int>(static_cast<unsigned>(t))) : t));
      if (isa != "aarch64") {
        EXPECT_EQ(v[k + 6], "=5:" + std::to_string(-1 - i));
      }
      EXPECT_EQ(v[k + 7], "=7:" + std::to_string(mix[i]));
      EXPECT_EQ(v[k + 8], "-mix");
    }
    EXPECT_EQ(mixes, 4);
  }
}

// `prepatch ctl PID set NAME=VALUE`: each change holds from the next round on, on every thread;
// `status` shows the filters; a wrong value or name is refused and changes nothing.
TEST(Filters, SetLiveChangesWhatTheNextCallsRecord) {
  const std::string file = program().d / "live.trace";
  Background b({"env", "PREPATCH_TRACER=graph", traced, "PREPATCH_OUTPUT=" + file, program().exe, "live", "3"}, "");
  ASSERT_GT(b.target(), 0) << b.ready_line();
  const std::vector<u32> tids = tids_of(b.ready_line());
  ASSERT_EQ(tids.size(), 3u);
  const std::string pid = std::to_string(b.target());
  const auto set = [&](const std::string& pair) {
    Proc p = prepatch({"ctl", pid, "set", pair});
    EXPECT_EQ(p.status, 0) << p.err;
    return p.out;
  };
  const auto round = [&](int r) {
    b.say("\n");
    for (std::string l; (l = b.line()) != "done " + std::to_string(r) + "\n";) ASSERT_NE(l, "") << "round " << r;
  };
  EXPECT_EQ(set("DEPTH=1"), "ok: filters: DEPTH=1\n");
  round(0);
  EXPECT_EQ(set("depth="), "ok: filters: none (every call of an enabled site is recorded)\n");
  EXPECT_EQ(set("PREPATCH_GRAPH_FUNCTION=b"), "ok: filters: GRAPH_FUNCTION=b\n");
  round(1);
  set("GRAPH_FUNCTION=");
  EXPECT_EQ(set("TIDS=" + std::to_string(tids[1])), "ok: filters: TIDS=" + std::to_string(tids[1]) + "\n");
  EXPECT_EQ(set("THRESHOLD=50ms"), "ok: filters: THRESHOLD=50ms TIDS=" + std::to_string(tids[1]) + "\n");
  round(2);
  // Refused: the filters stay as they are.
  for (const std::string bad : {"DEPTH=x", "NOPE=1", "THRESHOLD=5 ms", "TIDS=1,,2", "ARGS=mix:7", "DEPTH"}) {
    Proc p = prepatch({"ctl", pid, "set", bad});
    EXPECT_NE(p.status, 0) << bad;
    EXPECT_EQ(p.err.rfind("error: ", 0), 0u) << bad << ": " << p.err;
  }
  Proc st = prepatch({"ctl", pid, "status"});
  EXPECT_NE(st.out.find("\nfilters: THRESHOLD=50ms TIDS=" + std::to_string(tids[1]) + "\n"), std::string::npos) << st.out;
  set("THRESHOLD=");
  set("TIDS=");
  round(3);
  auto [status, out] = b.finish();
  EXPECT_EQ(status, 0) << out;

  const auto got = recorded(file);
  for (size_t k = 0; k < tids.size(); k++) {
    SCOPED_TRACE("thread " + std::to_string(k));
    std::vector<std::string> want = Model{.depth = 1}.rounds(1);
    for (const std::string& e : Model{.graph_function = {"b"}}.rounds(1)) want.push_back(e);
    if (k == 1)
      for (const std::string& e : Model{.threshold = true}.rounds(1)) want.push_back(e);
    for (const std::string& e : Model{}.rounds(1)) want.push_back(e);
    ASSERT_TRUE(got.count(tids[k]));
    EXPECT_EQ(under_threshold(file, tids[k], want, 50000000), want);
  }
}

// Filters that cannot apply are said at start (the shim stays off), and refused live.
TEST(Filters, FiltersTheTracerCannotApplyAreRefused) {
  Proc r = run({"env", "PREPATCH_TRACER=function", traced, "PREPATCH_DEPTH=3", program().exe, "once", "1"}, program().d.path());
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.err.find("tracing is off: DEPTH, THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, RETVAL and a trigger's duration need the graph tracer"), std::string::npos) << r.err;
  Proc c = run({"env", "PREPATCH_TRACE=c", "PREPATCH_TIDS=1", "PREPATCH_COUNTS=" + program().d / "x.counts", program().exe, "once", "1"}, program().d.path());
  EXPECT_NE(c.err.find("tracing is off: the filters"), std::string::npos) << c.err;
  Proc a = run({"env", "PREPATCH_TRACER=graph", traced, "PREPATCH_ARGS=mix:0", program().exe, "once", "1"}, program().d.path());
  EXPECT_NE(a.err.find("ARGS: the count after `:` is not between 1 and 6"), std::string::npos) << a.err;

  Background b({"env", "PREPATCH_TRACE=c", program().exe, "live", "1"}, program().d.path());  // counts
  Proc p = prepatch({"ctl", std::to_string(b.target()), "set", "DEPTH=1"});
  EXPECT_NE(p.status, 0);
  EXPECT_NE(p.err.find("the filters need the function or graph tracer"), std::string::npos) << p.err;
  b.finish();
}

// The values the filters take, parsed as the shim parses them.
TEST(Filters, ValuesParse) {
  shim::Filters f;
  const auto set = [&](const std::string& pair) { return shim::set_filter_pair(f, pair.data(), pair.size()); };
  EXPECT_EQ(set("THRESHOLD=10us"), nullptr);
  EXPECT_EQ(f.threshold_ns, 10000u);
  EXPECT_EQ(set("threshold=3"), nullptr);  // microseconds, as ftrace's tracing_thresh
  EXPECT_EQ(f.threshold_ns, 3000u);
  EXPECT_EQ(set("THRESHOLD=2s"), nullptr);
  EXPECT_EQ(f.threshold_ns, 2000000000u);
  EXPECT_NE(set("THRESHOLD=2h"), nullptr);
  EXPECT_NE(set("THRESHOLD=3601s"), nullptr);
  EXPECT_NE(set("THRESHOLD=ms"), nullptr);
  EXPECT_EQ(f.threshold_ns, 2000000000u);  // unchanged by a wrong value
  EXPECT_EQ(set("ARGS=lib.so:f*,g:2"), nullptr);
  EXPECT_STREQ(f.args, "lib.so:f*,g");
  EXPECT_EQ(f.arg_count, 2u);
  EXPECT_EQ(set("ARGS=lib.so:f"), nullptr);  // OBJECT:FUNCTION, no count: all six
  EXPECT_STREQ(f.args, "lib.so:f");
  EXPECT_EQ(f.arg_count, 6u);
  EXPECT_NE(set("ARGS=f:12"), nullptr);
  EXPECT_EQ(set("TIDS=12,34"), nullptr);
  EXPECT_EQ(f.tid_count, 2u);
  EXPECT_EQ(f.tids[1], 34u);
  EXPECT_NE(set("TIDS=12,"), nullptr);
  EXPECT_NE(set("TIDS=0"), nullptr);
  EXPECT_NE(set("TIDS=" + std::string(2000, '1')), nullptr);
  EXPECT_EQ(set("DEPTH=0"), nullptr);
  EXPECT_EQ(set("GRAPH_FUNCTION=" + std::string(1000, 'x')), nullptr);
  EXPECT_NE(set("GRAPH_FUNCTION=" + std::string(1001, 'x')), nullptr);
  EXPECT_NE(set("=1"), nullptr);
  EXPECT_NE(set("PREPATCH_=1"), nullptr);
  EXPECT_NE(shim::filters_problem(f, shim::Tracer::function), nullptr);  // GRAPH_FUNCTION needs graph
  EXPECT_EQ(shim::filters_problem(f, shim::Tracer::graph), nullptr);
  EXPECT_EQ(set("GRAPH_FUNCTION="), nullptr);
  EXPECT_EQ(set("THRESHOLD="), nullptr);
  EXPECT_EQ(shim::filters_problem(f, shim::Tracer::function), nullptr);  // TIDS and ARGS
  EXPECT_NE(shim::filters_problem(f, shim::Tracer::count), nullptr);
}

}  // namespace
}  // namespace prepatch::test

namespace prepatch::test {
namespace {

// The snapshot files beside `trace`, in order (TRACE.snapshot.1, .2, ...).
std::vector<std::string> snapshots_of(const std::string& trace) {
  std::vector<std::string> out;
  for (int n = 1; exists(trace + ".snapshot." + std::to_string(n)); n++) out.push_back(trace + ".snapshot." + std::to_string(n));
  return out;
}

// How long each call of slow() lasted in graph trace `file`, as the trace timed them (ns), each
// thread's in order. Two of work()'s four calls sleep 150 ms, so at least that long each: checked
// here, which also checks the TSC's rate the shim measured. The other two take microseconds, unless
// a loaded machine keeps the thread off the CPU: a trigger then rightly fires for them too, so the
// tests count the calls that lasted a trigger's duration from the trace, not from the program.
std::vector<std::vector<u64>> slow_calls(const std::string& file) {
  trace::TraceFile f(file);
  std::vector<std::vector<u64>> out;
  for (size_t k = 0; k < f.threads(); k++) {
    trace::TraceFile::Stream st(f, k);
    std::vector<u64>& calls = out.emplace_back();
    u64 entry = 0;
    for (trace::Event e; st.next(e);) {
      if (f.name(e.site) != "slow") continue;
      if (e.type == shim::rec_entry) entry = e.ns;
      else if (e.type == shim::rec_exit) calls.push_back(e.ns - entry);
    }
    for (size_t c = 1; c < calls.size(); c += 2) {
      EXPECT_GE(calls[c], 145000000u) << file << ": thread " << k << "'s slow() call " << c << " slept 150 ms";
    }
  }
  for (const std::string& p : f.problems()) ADD_FAILURE() << file << ": " << p;
  return out;
}
size_t lasting(const std::vector<u64>& calls, size_t from, size_t to, u64 ns) {
  return static_cast<size_t>(std::count_if(calls.begin() + static_cast<long>(from), calls.begin() + static_cast<long>(to), [&](u64 d) { return d >= ns; }));
}

// A duration trigger fires exactly for the calls that last it: two of work()'s four slow() calls
// sleep 150 ms, on each of two threads, so `slow>50ms:snapshot` takes four snapshots (one more for
// each other slow() call the trace shows lasting 50 ms), each said on stderr and each holding the
// slow call that triggered it as its thread's last event. SNAPSHOTS bounds them; an entry trigger
// takes one at each call.
TEST(Triggers, ADurationTriggerSnapshotsExactlyTheSlowCalls) {
  const std::string file = program().d / "slow-trigger.trace";
  Proc r = run({"env", "PREPATCH_TRACER=graph", traced, "PREPATCH_BUFFER=ring:512K", "PREPATCH_OUTPUT=" + file,
                "PREPATCH_TRIGGER=slow>50ms:snapshot", program().exe, "once", "2"});
  ASSERT_EQ(r.status, 0) << r.err;
  size_t slow = 0;
  for (const std::vector<u64>& calls : slow_calls(file)) {
    EXPECT_EQ(calls.size(), 4u);
    slow += lasting(calls, 0, calls.size(), 50000000);
  }
  EXPECT_GE(slow, 4u);
  const std::vector<std::string> snaps = snapshots_of(file);
  ASSERT_EQ(snaps.size(), slow) << r.err;
  for (const std::string& s : snaps) {
    SCOPED_TRACE(s);
    EXPECT_NE(r.err.find("prepatch: trigger slow>50ms:snapshot: snapshot " + s + "\n"), std::string::npos) << r.err;
    // Some thread's last event is the exit of a slow() that lasted 50 ms: its entry is in the copy too.
    trace::TraceFile f(s);
    EXPECT_TRUE(f.problems().empty()) << f.problems().front();
    int slow_last = 0;
    for (size_t k = 0; k < f.threads(); k++) {
      trace::TraceFile::Stream st(f, k);
      trace::Event e, last{}, slow_entry{};
      bool any = false;
      while (st.next(e)) {
        if (e.type == shim::rec_entry && f.name(e.site) == "slow") slow_entry = e;
        last = e, any = true;
      }
      if (any && last.type == shim::rec_exit && f.name(last.site) == "slow" && last.ns - slow_entry.ns >= 50000000) slow_last++;
    }
    EXPECT_GE(slow_last, 1);
    // work() was still running when the copy was made: cut, not unfinished.
    Proc replay = prepatch({"replay", s});
    EXPECT_NE(replay.out.find("| } /* work (cut) */\n"), std::string::npos) << replay.out.substr(replay.out.size() - 800);
    EXPECT_EQ(replay.out.find("unfinished"), std::string::npos);
  }

  const std::string bounded = program().d / "bounded.trace";
  Proc b = run({"env", "PREPATCH_TRACER=graph", traced, "PREPATCH_OUTPUT=" + bounded, "PREPATCH_TRIGGER=slow>50ms:snapshot;mix:snapshot",
                "PREPATCH_SNAPSHOTS=1", program().exe, "once", "2"});
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(snapshots_of(bounded).size(), 2u) << b.err;  // one for each trigger

  const std::string entry = program().d / "entry.trace";
  Proc e = run({"env", "PREPATCH_TRACER=function", traced, "PREPATCH_OUTPUT=" + entry, "PREPATCH_TRIGGER=quiet:snapshot", program().exe, "once", "1"});
  ASSERT_EQ(e.status, 0) << e.err;
  ASSERT_EQ(snapshots_of(entry).size(), 4u) << e.err;
  // The second snapshot: taken at the second quiet() call, whose record is its last.
  trace::TraceFile f(snapshots_of(entry)[1]);
  ASSERT_EQ(f.threads(), 1u);
  std::vector<std::string> calls;
  trace::TraceFile::Stream st(f, 0);
  for (trace::Event ev; st.next(ev);) calls.push_back(f.name(ev.site));
  EXPECT_EQ(calls, (std::vector<std::string>{"work", "a", "b", "c", "c", "quiet", "c", "slow", "c", "mix", "a", "b", "c", "c", "quiet"}));
}

// A snapshot goes beside the trace file also when the program changed its working directory after
// the file was made (a relative PREPATCH_OUTPUT): in the directory the file was created in, named as
// the trace file was, and nothing lands in the new working directory.
TEST(Triggers, SnapshotsStayBesideTheTraceFileAfterTheProgramChangesDirectory) {
  const std::string started = program().d / "chdir-start", moved = program().d / "chdir-moved";
  std::filesystem::create_directories(started);
  std::filesystem::create_directories(moved);
  Proc r = run({"env", "PREPATCH_TRACER=function", traced, "PREPATCH_OUTPUT=rel.trace", "PREPATCH_TRIGGER=quiet:snapshot",
                "PREPATCH_SNAPSHOTS=2", "FILTERS_CHDIR=" + moved, program().exe, "once", "1"},
               started);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(snapshots_of(started + "/rel.trace").size(), 2u) << r.err;
  for (const auto& e : std::filesystem::directory_iterator(moved)) ADD_FAILURE() << "in the new working directory: " << e.path();
  EXPECT_NE(r.err.find("prepatch: trigger quiet:snapshot: snapshot rel.trace.snapshot.1\n"), std::string::npos) << r.err;
  ASSERT_TRUE(std::filesystem::exists(started + "/rel.trace.snapshot.2"));
  trace::TraceFile f(started + "/rel.trace.snapshot.2");
  EXPECT_TRUE(f.problems().empty()) << f.problems().front();
  EXPECT_EQ(f.threads(), 1u);
}

// trace_on and trace_off: recording starts off when a trace_on trigger is set, a call of a() turns
// it on (a is recorded), one of quiet() off (quiet is not).
TEST(Triggers, TraceOnAndOffSwitchRecording) {
  const std::string file = program().d / "onoff.trace";
  Proc r = run_once(file, {"PREPATCH_TRIGGER=a:trace_on;quiet:trace_off"}, 1);
  std::vector<std::string> want;
  for (int i = 0; i < 4; i++) want.insert(want.end(), {"+a", "+b", "+c", "-c", "+c", "-c", "-b", "-a"});
  EXPECT_EQ(recorded(file).at(tids_of(r.out).at(0)), want);
}

// `prepatch ctl PID trigger SPECS` sets the triggers live (and `trigger` alone clears them); `status`
// shows them with the snapshots each took.
TEST(Triggers, SetLive) {
  const std::string file = program().d / "live-trigger.trace";
  Background b({"env", "PREPATCH_TRACER=graph", traced, "PREPATCH_OUTPUT=" + file, program().exe, "live", "1"}, "", true, -1);
  ASSERT_GT(b.target(), 0) << b.ready_line();
  const std::string pid = std::to_string(b.target());
  const auto round = [&](int r) {
    b.say("\n");
    for (std::string l; (l = b.line()) != "done " + std::to_string(r) + "\n";) ASSERT_NE(l, "") << "round " << r;
  };
  round(0);
  EXPECT_TRUE(snapshots_of(file).empty());
  Proc t = prepatch({"ctl", pid, "trigger", "slow>50ms:snapshot"});
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "ok: filters: TRIGGER=slow>50ms:snapshot SNAPSHOTS=10\n");
  round(1);
  const size_t taken = snapshots_of(file).size();
  Proc st = prepatch({"ctl", pid, "status"});
  EXPECT_NE(st.out.find("\ntriggers: slow>50ms:snapshot (" + std::to_string(taken) + " of 10 snapshots taken); recording on\n"), std::string::npos)
      << st.out;
  Proc bad = prepatch({"ctl", pid, "trigger", "slow>5ms:trace_on"});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("only a snapshot takes a duration"), std::string::npos) << bad.err;
  // Set again as it was, the trigger counts its snapshots anew; SNAPSHOTS bounds them, and raised
  // live lets it take more (each round has two slow() calls that last 50 ms, at least).
  EXPECT_EQ(prepatch({"ctl", pid, "trigger", "slow>50ms:snapshot"}).status, 0);
  EXPECT_NE(prepatch({"ctl", pid, "status"}).out.find("\ntriggers: slow>50ms:snapshot (0 of 10 snapshots taken)"), std::string::npos);
  EXPECT_EQ(prepatch({"ctl", pid, "set", "SNAPSHOTS=1"}).out, "ok: filters: TRIGGER=slow>50ms:snapshot SNAPSHOTS=1\n");
  round(2);
  EXPECT_EQ(snapshots_of(file).size(), taken + 1);
  EXPECT_EQ(prepatch({"ctl", pid, "set", "SNAPSHOTS=2"}).status, 0);
  round(3);
  EXPECT_EQ(snapshots_of(file).size(), taken + 2);
  EXPECT_NE(prepatch({"ctl", pid, "status"}).out.find("\ntriggers: slow>50ms:snapshot (2 of 2 snapshots taken)"), std::string::npos);
  EXPECT_EQ(prepatch({"ctl", pid, "trigger"}).out, "ok: filters: none (every call of an enabled site is recorded)\n");
  round(4);
  EXPECT_EQ(snapshots_of(file).size(), taken + 2);
  b.finish();
  // Exactly the second round's slow() calls that lasted 50 ms took one: its two 150 ms ones at least.
  const std::vector<std::vector<u64>> calls = slow_calls(file);
  ASSERT_EQ(calls.size(), 1u);
  ASSERT_EQ(calls[0].size(), 20u);
  EXPECT_EQ(taken, lasting(calls[0], 4, 8, 50000000));
  EXPECT_GE(taken, 2u);
}

}  // namespace
}  // namespace prepatch::test
