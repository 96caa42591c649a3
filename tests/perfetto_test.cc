// `prepatch export --format perfetto` (issue 28): each exported file decoded against Perfetto's own
// definitions (tests/perfetto.h) and every slice and instant checked against the trace it came from:
// its thread's track, its name, its time to the nanosecond, how it ended. The recorded values are
// checked in tests/filters_test.cc, the size and memory at a large trace's scale in tests/reader_test.cc.
#include <gtest/gtest.h>

#include <map>

#include "tests/perfetto.h"
#include "tests/support.h"
#include "trace/reader.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

struct Expected {
  int type;
  u64 ts;
  std::string name;
  std::string how;  // the end's annotation: unwound, unfinished, cut (or none)
  bool operator==(const Expected&) const = default;
};
std::ostream& operator<<(std::ostream& o, const Expected& e) { return o << e.type << "@" << e.ts << " " << e.name << " " << e.how; }

// What the trace `file` holds, as Perfetto events by tid: graph entries as slice begins, exits and
// unwound records as ends; function calls as instants. Times in CLOCK_MONOTONIC ns.
std::map<u64, std::vector<Expected>> expected(const std::string& file) {
  trace::TraceFile t(file);
  const u64 t0 = t.header().monotonic0;
  std::map<u64, std::vector<Expected>> out;
  for (size_t k = 0; k < t.threads(); k++) {
    trace::TraceFile::Stream s(t, k);
    std::vector<Expected>& v = out[t.tid(k)];
    size_t open = 0;
    u64 last = 0;
    for (trace::Event e; s.next(e); last = e.ns) {
      if (e.type == shim::rec_entry) v.push_back({1, t0 + e.ns, t.name(e.site), ""}), open++;
      else if (e.type == shim::rec_exit) v.push_back({2, t0 + e.ns, "", ""}), open--;
      else if (e.type == shim::rec_unwound) v.push_back({2, t0 + e.ns, "", "unwound"}), open--;
      else if (e.type == shim::rec_call) v.push_back({3, t0 + e.ns, t.name(e.site), ""});
      else ADD_FAILURE() << "record type " << int(e.type);
    }
    // Calls still open where the thread's records end close there.
    for (; open > 0; open--) v.push_back({2, t0 + last, "", "unfinished"});
  }
  return out;
}

// The exported file's events by tid, its tracks checked: each thread's under the process's.
std::map<u64, std::vector<Expected>> exported(const std::string& file, u64 pid, const std::string& process) {
  PerfettoReader r;
  std::vector<PfEvent> events;
  const std::map<u64, PfTrack> tracks = r.read(file, [&](const PfEvent& e) { events.push_back(e); });
  EXPECT_TRUE(r.problems().empty()) << r.problems().front();
  u64 process_uuid = 0;
  for (const auto& [uuid, t] : tracks) {
    if (t.tid != 0) continue;
    EXPECT_EQ(process_uuid, 0u);
    process_uuid = uuid;
    EXPECT_EQ(t.pid, pid);
    EXPECT_EQ(t.process_name, process);
  }
  EXPECT_NE(process_uuid, 0u);
  std::map<u64, std::vector<Expected>> out;
  for (const PfEvent& e : events) {
    const PfTrack& t = tracks.at(e.track);
    EXPECT_EQ(t.parent, process_uuid);
    EXPECT_EQ(t.pid, pid);
    std::string how;
    for (const auto& [k, v] : e.args) {
      EXPECT_EQ(v, "true") << k;
      how += k;
    }
    out[t.tid].push_back({e.type, e.ts, e.name, how});
  }
  return out;
}

struct Recording {
  TempDir d;
  std::string trace = d / "t.trace", out = d / "t.pftrace";
  u64 pid = 0;
};

// calltree prepared, run in `mode` under `tracer`, exported.
void record(Recording& r, const std::string& tracer, const std::string& mode) {
  Proc p = prepatch({"-q", td + "/calltree-fentry", "-o", r.d / "calltree"});
  ASSERT_EQ(p.status, 0) << p.err;
  Proc run_ = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=" + tracer, "PREPATCH_OUTPUT=" + r.trace, r.d / "calltree", mode}, r.d.path());
  ASSERT_EQ(run_.status, 0) << run_.err;
  Proc e = prepatch({"export", r.trace, "--format", "perfetto", "-o", r.out});
  ASSERT_EQ(e.status, 0) << e.err;
  r.pid = trace::TraceFile(r.trace).header().pid;
}

// calltree run in `mode` under `tracer` and exported: the export is the trace, event for event. Returns
// the trace's events by tid.
std::map<u64, std::vector<Expected>> exports_exactly(const std::string& tracer, const std::string& mode) {
  Recording r;
  record(r, tracer, mode);
  const auto want = expected(r.trace);
  EXPECT_EQ(exported(r.out, r.pid, "calltree"), want);
  return want;
}
size_t count(const std::map<u64, std::vector<Expected>>& events, int type, const std::string& how = "") {
  size_t n = 0;
  for (const auto& [tid, v] : events)
    for (const Expected& e : v) n += e.type == type && e.how == how;
  return n;
}

TEST(Perfetto, EverySliceIsATracedCallOnItsThreadsTrackToTheNanosecond) {
  const auto want = exports_exactly("graph", "threads");
  EXPECT_EQ(want.size(), 6u);  // main and five workers
  EXPECT_GT(count(want, 1), 100u);
}

TEST(Perfetto, ACallLeftByLongjmpEndsUnwound) { EXPECT_GT(count(exports_exactly("graph", "longjmp"), 2, "unwound"), 0u); }

TEST(Perfetto, FunctionCallsAreInstants) { EXPECT_GT(count(exports_exactly("function", "threads"), 3), 100u); }

// The process exec'd inside main: the calls it was in end unfinished at its last event.
TEST(Perfetto, CallsStillOpenAtTheEndOfTheRecordsEndUnfinished) {
  EXPECT_GT(count(exports_exactly("graph", "exec"), 2, "unfinished"), 0u);
}

TEST(Perfetto, ABadTraceIsRefusedAndNoOutputAppears) {
  TempDir d;
  write_file(d / "bad.trace", std::string(8192, 'x'));
  Proc e = prepatch({"export", d / "bad.trace", "--format", "perfetto", "-o", d / "out.pftrace"});
  EXPECT_NE(e.status, 0);
  EXPECT_NE(e.err.find(d / "bad.trace"), std::string::npos) << e.err;
  EXPECT_FALSE(exists(d / "out.pftrace"));
}

}  // namespace
}  // namespace prepatch::test
