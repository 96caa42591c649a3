// The fuzz targets' harness (fuzz/harness.h) in the test suite: every input a fuzzer ever crashed,
// kept in tests/fuzz-crashes/TARGET/, must now be handled; and the promises the harness checks must
// hold on real programs and trace files, so that a fuzz run that finds nothing means something.
#include <gtest/gtest.h>

#include "fuzz/harness.h"
#include "support.h"

namespace prepatch::test {
namespace {

std::vector<u8> bytes_of(const std::string& path) {
  std::string s = read_file(path);
  return {s.begin(), s.end()};
}

TEST(FuzzCrashes, EveryInputAFuzzerCrashedIsNowHandled) {
  TempDir d;
  int inputs = 0;
  for (const char* target : {"prepare", "trace"}) {
    const std::string dir = std::string(SOURCE_DIR) + "/tests/fuzz-crashes/" + target;
    for (const std::string& name : list_dir(dir)) {
      SCOPED_TRACE(dir + "/" + name);
      std::vector<u8> b = bytes_of(dir + "/" + name);
      if (std::string(target) == "prepare") fuzz::prepare_one(b, d.path());
      else fuzz::trace_one(b);
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

}  // namespace
}  // namespace prepatch::test
