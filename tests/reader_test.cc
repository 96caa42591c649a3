// The readers at the sizes users reach (issue 25): a trace of several threads with wide and deep call
// trees (testdata/bigtrace.c), recorded by a prepared binary, read by report, replay and export under
// a memory limit of 256 MiB, their output streamed through checks of every call. The default size
// (64 MB) is already past what the readers before streaming could read in that limit (their report
// needed 606 MB for an 80 MB trace, their replay 1.15 GB: docs/PERFORMANCE.md);
// PREPATCH_TEST_TRACE_MB=1100 runs the same at 1.1 GB (about fifteen minutes under ASan).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>

#include "tests/perfetto.h"
#include "tests/support.h"
#include "trace/reader.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;
constexpr long threads = 4;
constexpr unsigned limit_mb = 256;

// Calls per round of testdata/bigtrace.c, by function.
const std::map<std::string, long> per_round = {{"round_of", 1}, {"level0", 1}, {"level1", 4}, {"level2", 16},
                                               {"level3", 64},  {"dive", 61},  {"leaf", 257}};

struct Big {
  TempDir dir;
  std::string trace;
  long rounds = 0;
  long calls(const std::string& f) const {
    if (f == "main") return 1;
    if (f == "worker") return threads;
    return per_round.at(f) * threads * rounds;
  }
};

// Recorded once per run (the test process's: ctest runs each test in one of its own), and removed at its
// end: PREPATCH_TEST_TRACE_MB of graph records (16 bytes per call).
const Big& big() {
  static const std::unique_ptr<Big> b = [] {
    auto b = std::make_unique<Big>();
    const char* mb_text = std::getenv("PREPATCH_TEST_TRACE_MB");
    const long mb = mb_text ? std::atol(mb_text) : 64;
    b->rounds = mb * 1000000 / (threads * 404 * 16);
    Proc p = prepatch({td + "/bigtrace-fentry", "-o", b->dir / "big"});
    EXPECT_EQ(p.status, 0) << p.err;
    b->trace = b->dir / "big.trace";
    Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_BUFFER=" + std::to_string(mb + mb / 8 + 16), "PREPATCH_OUTPUT=" + b->trace,
                  b->dir / "big", std::to_string(threads), std::to_string(b->rounds)});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");  // nothing lost
    EXPECT_EQ(r.out.substr(0, r.out.find(' ', 6)), "calls " + std::to_string(threads * b->rounds * 404));
    return b;
  }();
  return *b;
}

// Runs prepatch ARGS within the memory limit, its standard output handed to `line` a line at a time
// (the output of a 1 GB trace is many GB: it is never held whole). Returns the exit status; stderr
// goes to `err`. Under AddressSanitizer the address space is the sanitizer's, so its own resident
// limit stands in for prlimit --as.
int limited(const std::vector<std::string>& args, const std::function<void(std::string_view)>& line, std::string& err) {
  std::vector<std::string> argv;
#if defined(__SANITIZE_ADDRESS__)
  const char* asan = std::getenv("ASAN_OPTIONS");
  // Its quarantine keeps freed memory resident (256 MB by default): held to 16 MB, so what is measured
  // is what the reader keeps.
  argv = {"env", "ASAN_OPTIONS=" + std::string(asan ? asan : "") + (asan && *asan ? ":" : "") + "quarantine_size_mb=16:hard_rss_limit_mb=" +
                     std::to_string(limit_mb)};
#else
  argv = {"prlimit", "--as=" + std::to_string(limit_mb << 20), "--"};
#endif
  argv.push_back(PREPATCH_BIN);
  argv.insert(argv.end(), args.begin(), args.end());
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  TempDir d;
  const int errfd = ::open((d / "err").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  const int pid = spawn(argv, "", -1, out[1], errfd);
  ::close(out[1]);
  ::close(errfd);
  std::string pending;
  char buf[1 << 16];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) {
    pending.append(buf, static_cast<size_t>(n));
    size_t from = 0;
    for (size_t nl; (nl = pending.find('\n', from)) != std::string::npos; from = nl + 1) line(std::string_view(pending).substr(from, nl - from));
    pending.erase(0, from);
  }
  ::close(out[0]);
  if (!pending.empty()) line(pending);
  int status = 0;
  ::waitpid(pid, &status, 0);
  err = read_file(d / "err");
  return exit_code(status);
}

TEST(BigTrace, ReportCountsEveryCallWithinTheMemoryLimit) {
  const Big& b = big();
  std::map<std::string, long> calls;
  std::string err;
  const int status = limited({"report", b.trace, "--sort", "calls"}, [&](std::string_view l) {
    std::istringstream in{std::string(l)};
    std::string total, tu, self, su, n, name;
    if (in >> total >> tu >> self >> su >> n >> name && std::isdigit(static_cast<unsigned char>(n[0]))) calls[name] = std::stol(n);
  }, err);
  ASSERT_EQ(status, 0) << err;
  EXPECT_EQ(err, "");
  for (const auto& [f, n] : per_round) EXPECT_EQ(calls[f], b.calls(f)) << f;
  EXPECT_EQ(calls["worker"], b.calls("worker"));
  EXPECT_EQ(calls["main"], 1);
}

TEST(BigTrace, ReplayShowsEveryCallNestedInTimeOrderWithinTheMemoryLimit) {
  const Big& b = big();
  std::map<std::string, long> leaves, opens, closes;
  double last = 0;
  long unordered = 0, other = 0;
  std::string err;
  const int status = limited({"replay", b.trace}, [&](std::string_view l) {
    if (l.starts_with("#")) return;
    const double t = std::strtod(std::string(l.substr(0, 14)).c_str(), nullptr);
    unordered += t < last;
    last = t;
    const size_t bar = l.find(" | ");
    std::string_view f = l.substr(bar + 3);
    f.remove_prefix(std::min(f.find_first_not_of(' '), f.size()));
    if (f.ends_with("();")) leaves[std::string(f.substr(0, f.size() - 3))]++;
    else if (f.ends_with("() {")) opens[std::string(f.substr(0, f.size() - 4))]++;
    else if (f.starts_with("} /* ") && f.ends_with(" */")) closes[std::string(f.substr(5, f.size() - 8))]++;
    else other++;
  }, err);
  ASSERT_EQ(status, 0) << err;
  EXPECT_EQ(err, "");
  EXPECT_EQ(unordered, 0);
  EXPECT_EQ(other, 0);
  // Every leaf call is one line; every call with callees opens and closes a brace.
  EXPECT_EQ(leaves, (std::map<std::string, long>{{"leaf", b.calls("leaf")}, {"main", 1}}));
  std::map<std::string, long> braced;
  for (const char* f : {"worker", "round_of", "level0", "level1", "level2", "level3", "dive"}) braced[f] = b.calls(f);
  EXPECT_EQ(opens, braced);
  EXPECT_EQ(closes, braced);
}

TEST(BigTrace, ReplayOfOneThreadAndFunctionShowsItsCallsAndCallees) {
  const Big& b = big();
  trace::TraceFile f(b.trace);
  ASSERT_EQ(f.threads(), 1u + threads);  // main's and the workers'
  const std::string tid = std::to_string(f.tid(f.tid(0) == f.header().pid ? 1 : 0));  // a worker's
  std::map<std::string, long> lines;
  std::string err;
  const int status = limited({"replay", b.trace, "--tid", tid, "--function", "dive"}, [&](std::string_view l) {
    if (l.starts_with("#")) return;
    EXPECT_EQ(std::to_string(std::stol(std::string(l.substr(15, 8)))), tid);
    const size_t bar = l.find(" | ");
    std::string_view f = l.substr(bar + 3);
    f.remove_prefix(std::min(f.find_first_not_of(' '), f.size()));
    lines[std::string(f)]++;
  }, err);
  ASSERT_EQ(status, 0) << err;
  EXPECT_EQ(lines, (std::map<std::string, long>{{"dive() {", 61 * b.rounds}, {"} /* dive */", 61 * b.rounds}, {"leaf();", b.rounds}}));
}

TEST(BigTrace, ExportPairsEveryCallPerThreadWithinTheMemoryLimit) {
  const Big& b = big();
  std::map<std::string, long> begins, ends;
  std::map<std::string, std::vector<std::string>> open;  // per tid
  long mismatched = 0;
  std::string err;
  const int status = limited({"export", b.trace, "-o", "-"}, [&](std::string_view l) {
    if (!l.starts_with("{\"name\":\"")) return;
    const std::string name(l.substr(9, l.find('"', 9) - 9));
    const size_t tid_at = l.find("\"tid\":") + 6;
    const std::string tid(l.substr(tid_at, l.find_first_of(",}", tid_at) - tid_at));
    if (l.find("\"ph\":\"B\"") != std::string_view::npos) {
      begins[name]++;
      open[tid].push_back(name);
    } else if (l.find("\"ph\":\"E\"") != std::string_view::npos) {
      ends[name]++;
      mismatched += open[tid].empty() || open[tid].back() != name;
      if (!open[tid].empty()) open[tid].pop_back();
    }
  }, err);
  ASSERT_EQ(status, 0) << err;
  EXPECT_EQ(mismatched, 0);
  for (const auto& [tid, s] : open) EXPECT_TRUE(s.empty()) << tid;
  std::map<std::string, long> want;
  for (const char* f : {"main", "worker", "round_of", "level0", "level1", "level2", "level3", "dive", "leaf"}) want[f] = b.calls(f);
  EXPECT_EQ(begins, want);
  EXPECT_EQ(ends, want);
}

// Collapsed stacks (issue 28): within the limit, one line per distinct stack of the program's call
// trees (bigtrace.c's: dive recurses 60 deep, so its stacks are many but bounded), none twice.
TEST(BigTrace, FoldedStacksWithinTheMemoryLimit) {
  const Big& b = big();
  std::set<std::string> stacks;
  long repeated = 0, deepest = 0;
  std::string err;
  const int status = limited({"export", b.trace, "--format", "folded", "-o", "-"}, [&](std::string_view l) {
    const std::string stack(l.substr(0, l.rfind(' ')));
    repeated += !stacks.insert(stack).second;
    deepest = std::max<long>(deepest, std::count(stack.begin(), stack.end(), ';') + 1);
  }, err);
  ASSERT_EQ(status, 0) << err;
  EXPECT_EQ(repeated, 0);
  EXPECT_TRUE(stacks.contains("worker;round_of;level0;level1;level2;level3;leaf"));
  EXPECT_EQ(deepest, 2 + 61 + 1);  // worker, round_of, dive(60) down to dive(0), leaf
}

// Progress (issue 28, item 6): in a real terminal (tmux), export and report of the 64 MB trace draw a
// line of growing percentages on stderr (PREPATCH_PROGRESS_DELAY=0: from the start, so whatever this
// machine's speed; `script` keeps every byte the terminal got) and erase it before anything else is
// shown (the screen keeps no such line, and report's table starts its own line); piped, neither prints
// a byte on stderr.
TEST(BigTrace, ProgressOnATerminalOnly) {
  const Big& b = big();
  TempDir d;
  const std::string pp = PREPATCH_BIN, typescript = d / "typescript";
  const std::string commands = "PREPATCH_PROGRESS_DELAY=0 " + pp + " export " + b.trace + " --format folded -o " + d / "out.folded" +
                               "; echo export=$?; PREPATCH_PROGRESS_DELAY=0 " + pp + " report " + b.trace + " --sort calls; echo report=$?";
  Tmux term("script -qfec '" + commands + "' " + typescript + "; sleep 600", 120, 40);
  std::string screen;
  ASSERT_TRUE(eventually([&] {
    screen = term.screen();
    return screen.find("report=") != std::string::npos;
  }, 600)) << screen;
  EXPECT_NE(screen.find("export=0\n"), std::string::npos) << screen;
  EXPECT_NE(screen.find("report=0\n"), std::string::npos) << screen;
  EXPECT_EQ(screen.find("% of"), std::string::npos) << "a progress line was left:\n" << screen;
  EXPECT_NE(screen.find("\n  Total time   Self time       Calls  Function\n"), std::string::npos) << screen;
  // What the terminal got: each command's lines, each drawn over the last ("\r\033[K"), then erased.
  const std::string bytes = read_file(typescript);
  for (const char* what : {"export", "report"}) {
    SCOPED_TRACE(what);
    std::vector<int> seen;
    const std::regex line(std::string("\r\033\\[Kprepatch ") + what + ": ([0-9]+)% of [0-9.]+ [MG]B of records");  // (GB from 1 GB: PREPATCH_TEST_TRACE_MB=1100)
    for (auto it = std::sregex_iterator(bytes.begin(), bytes.end(), line); it != std::sregex_iterator(); ++it) seen.push_back(std::stoi((*it)[1]));
    ASSERT_FALSE(seen.empty()) << "no progress drawn:\n" << bytes.substr(0, 2000);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    EXPECT_LT(seen.back(), 100);
    const size_t last = bytes.rfind(std::string("prepatch ") + what + ": ");
    EXPECT_EQ(bytes.substr(bytes.find("records", last) + 7, 4), "\r\033[K") << "the last line drawn is not erased next";
  }

  std::string err;
  EXPECT_EQ(limited({"export", b.trace, "--format", "folded", "-o", d / "piped.folded"}, [](std::string_view) {}, err), 0);
  EXPECT_EQ(err, "");
  EXPECT_EQ(limited({"report", b.trace}, [](std::string_view) {}, err), 0);
  EXPECT_EQ(err, "");
}

// Perfetto's format (issue 28): written within the limit, at most twice the trace's size (interned
// names, delta timestamps), and decoded against Perfetto's definitions, every call a slice on its
// thread's track, nested.
TEST(BigTrace, PerfettoExportIsEveryCallWithinTheMemoryLimitAndAtMostTwiceTheTrace) {
  const Big& b = big();
  TempDir d;
  const std::string out = d / "big.pftrace";
  std::string err;
  const int status = limited({"export", b.trace, "--format", "perfetto", "-o", out}, [](std::string_view) {}, err);
  ASSERT_EQ(status, 0) << err;
  const u64 trace_bytes = std::filesystem::file_size(b.trace), pf_bytes = std::filesystem::file_size(out);
  EXPECT_LE(pf_bytes, 2 * trace_bytes) << pf_bytes << " bytes from a trace of " << trace_bytes;
  std::map<std::string, long> begins;
  std::map<u64, std::vector<std::string>> open;  // per track
  long ends = 0, unmatched = 0;
  PerfettoReader r;
  r.read(out, [&](const PfEvent& e) {
    std::vector<std::string>& o = open[e.track];
    if (e.type == 1) return begins[e.name]++, o.push_back(e.name);
    ends++;
    unmatched += e.type != 2 || o.empty() || !e.args.empty();
    if (!o.empty()) o.pop_back();
  });
  EXPECT_TRUE(r.problems().empty()) << r.problems().front();
  EXPECT_EQ(unmatched, 0);
  for (const auto& [track, s] : open) EXPECT_TRUE(s.empty()) << track;
  std::map<std::string, long> want;
  long calls = 0;
  for (const char* f : {"main", "worker", "round_of", "level0", "level1", "level2", "level3", "dive", "leaf"}) calls += want[f] = b.calls(f);
  EXPECT_EQ(begins, want);
  EXPECT_EQ(ends, calls);
}

}  // namespace
}  // namespace prepatch::test
