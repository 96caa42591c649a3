// The fuzz targets' harness (fuzz/harness.h) in the test suite: every input a fuzzer ever crashed,
// kept in tests/fuzz-crashes/TARGET/, must now be handled; and the promises the harness checks must
// hold on real programs and trace files, so that a fuzz run that finds nothing means something.
#include <gtest/gtest.h>

#include <span>
#include <string>
#include <string_view>

#include "fuzz/harness.h"
#include "support.h"

namespace prepatch::test {
namespace {

std::vector<u8> bytes_of(const std::string& path) {
  std::string s = read_file(path);
  return {s.begin(), s.end()};
}

std::span<const u8> span_of(std::string_view s) { return {reinterpret_cast<const u8*>(s.data()), s.size()}; }

TEST(FuzzCrashes, EveryInputAFuzzerCrashedIsNowHandled) {
  TempDir d;
  int inputs = 0;
  for (const std::string target : {"prepare", "trace", "counts", "request", "settings", "reply", "demangle"}) {
    const std::string dir = std::string(SOURCE_DIR) + "/tests/fuzz-crashes/" + target;
    for (const std::string& name : list_dir(dir)) {
      SCOPED_TRACE(dir + "/" + name);
      std::vector<u8> b = bytes_of(dir + "/" + name);
      if (target == "prepare") fuzz::prepare_one(b, d.path());
      else if (target == "trace") fuzz::trace_one(b);
      else if (target == "counts") fuzz::counts_one(b);
      else if (target == "request") fuzz::request_one(b);
      else if (target == "settings") fuzz::settings_one(b);
      else if (target == "reply") fuzz::reply_one(b);
      else fuzz::demangle_one(b);
      inputs++;
    }
  }
  if (inputs == 0) GTEST_SKIP() << "no fuzzer has crashed prepatch yet: tests/fuzz-crashes/ is empty";
}

TEST(FuzzHarness, PreparesEveryTestProgramAndReadsItBack) {
  TempDir d;
  for (const TestBinary& b : manifest()) {
    SCOPED_TRACE(b.bin);
    EXPECT_TRUE(fuzz::prepare_one(bytes_of(b.bin), d.path()));
  }
}

TEST(FuzzHarness, ReadsTheTraceFilesOfARealRun) {
  TempDir d;
  const std::string bin = std::string(TESTDATA_DIR) + "/calltree-fentry";
  ASSERT_EQ(prepatch({bin, "-o", d / "calltree"}).status, 0);
  for (const char* tracer : {"function", "graph"}) {
    Proc r = run({"env", "PREPATCH_TRACE=*", std::string("PREPATCH_TRACER=") + tracer, "PREPATCH_OUTPUT=" + d / tracer, d / "calltree",
                  "threads"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(fuzz::trace_one(bytes_of(d / tracer))) << tracer;
  }
  EXPECT_FALSE(fuzz::trace_one(bytes_of(bin))) << "an ELF file is not a trace file";
}

// The counts files of a real run: a prepared program alone, and with a prepared library it loads
// (two sections); damage is refused.
TEST(FuzzHarness, ReadsTheCountsFilesOfARealRun) {
  TempDir d;
  const std::string bin = std::string(TESTDATA_DIR) + "/calltree-fentry";
  ASSERT_EQ(prepatch({bin, "-o", d / "calltree"}).status, 0);
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "calltree", "threads"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fuzz::counts_one(bytes_of(d / "c")));
  write_file(d / "lib.c", "__attribute__((noinline)) int lib_f(int x) { return x + 1; }\n");
  ASSERT_EQ(run({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "lib.c", "-o", d / "lib.orig.so"}).status, 0);
  ASSERT_EQ(prepatch({"-q", d / "lib.orig.so", "-o", d / "lib.so"}).status, 0);
  r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c2", "LD_PRELOAD=" + d / "lib.so", d / "calltree", "threads"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fuzz::counts_one(bytes_of(d / "c2")));
  std::vector<u8> cut = bytes_of(d / "c2");
  cut.resize(cut.size() / 2);
  EXPECT_FALSE(fuzz::counts_one(cut));
  EXPECT_FALSE(fuzz::counts_one(bytes_of(bin))) << "an ELF file is not a counts file";
}

// Each function returns whether the input was taken; the invariants it checks abort when broken.
TEST(FuzzHarness, ChecksControlRequests) {
  using namespace std::string_view_literals;
  for (std::string_view ok : {"enable main,leaf_*\n"sv, "status"sv, "status\n"sv, "status mangled\n"sv, "disable *\n"sv, "enable  a?c,,x*,\n"sv,
                              "disable ,*,"sv, "enable a b\n"sv, "enable ns::f(int, char),(anonymous namespace)::g\n"sv})
    EXPECT_TRUE(fuzz::request_one(span_of(ok))) << ok;
  for (std::string_view bad : {""sv, "\n"sv, "status now\n"sv, "status mangled now\n"sv, "enable\n"sv, "enable ,,\n"sv, "enable a\tb\n"sv,
                               "enable a\0b\n"sv, "disable a\x7f\n"sv, "stop\n"sv, "Enable main\n"sv, " status\n"sv})
    EXPECT_FALSE(fuzz::request_one(span_of(bad))) << bad;
}

TEST(FuzzHarness, ChecksSettings) {
  using namespace std::string_view_literals;
  // The first byte of each string names the variable (fuzz/harness.h): '@' PREPATCH_TRACE=, 'B'
  // PREPATCH_TRACER=, 'C' OUTPUT, 'D' COUNTS, 'E' BUFFER, 'F' FILE_MODE, 'G' WX, 'H' SYNC, 'J' none.
  for (std::string_view ok : {""sv, "@main,leaf_*\nAleaf_2\nBcount\nC/tmp/out.trace\nDcounts\nE64\nF0644\nHsignal\nJPATH=/bin\n"sv,
                              "Bgraph\0Gstrict\0F600\0E0001"sv, "Hflush_icache\n"sv, "JPREPATCH_TRACER=function\nBbogus\n"sv,
                              "IWX=strict\n"sv, "F0666\n@\nC\n"sv})
    EXPECT_TRUE(fuzz::settings_one(span_of(ok))) << ok;
  for (std::string_view bad : {"Bbogus\n"sv, "E0\n"sv, "E1073741824\n"sv, "E12x\n"sv, "F0755\n"sv, "F0400\n"sv, "F4644\n"sv,
                               "Glax\n"sv, "Hnever\n"sv, "@main\nBcount\nF0700\nF0600\n"sv})
    EXPECT_FALSE(fuzz::settings_one(span_of(bad))) << bad;
  EXPECT_FALSE(fuzz::settings_one(span_of("C" + std::string(501, 'x')))) << "an output name of 501 bytes";
  EXPECT_TRUE(fuzz::settings_one(span_of("D" + std::string(500, 'x')))) << "a counts name of 500 bytes";
}

TEST(FuzzHarness, ChecksReplies) {
  using namespace std::string_view_literals;
  for (std::string_view ok : {"ok: enabled 3 sites (3 matched)\n"sv, "error: unknown command\n"sv, "busy"sv, "busy: a batch runs\n"sv,
                              "ok: status\n\x1b[2J\tmain\r\n\0"sv, "error:"sv})
    EXPECT_TRUE(fuzz::reply_one(span_of(ok))) << ok;
  for (std::string_view bad : {""sv, "\n"sv, "ok\n"sv, "OK: yes\n"sv, " ok: x\n"sv, "bus"sv, "\x1b]0;owned\x07\n"sv, std::string_view("x\0", 2)})
    EXPECT_FALSE(fuzz::reply_one(span_of(bad))) << bad;
}

}  // namespace
}  // namespace prepatch::test
