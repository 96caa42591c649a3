// `prepatch record` (issue 25): a program built with hooks, from nothing to a trace in one command;
// the cache of prepared copies (keyed by content, this user's alone); exit statuses passed through.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>

#include "support.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

// prepatch ARGS in `cwd` with the cache in `cache` (XDG_CACHE_HOME), and optionally another PATH.
Proc record(const TempDir& d, const std::vector<std::string>& args, const std::string& path = "") {
  std::vector<std::string> argv = {"env", "XDG_CACHE_HOME=" + d / "cache"};
  if (!path.empty()) argv.push_back("PATH=" + path);
  argv.push_back(PREPATCH_BIN);
  argv.push_back("record");
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, d.path());
}

std::vector<std::string> cached(const TempDir& d) { return exists(d / "cache/prepatch") ? list_dir(d / "cache/prepatch") : std::vector<std::string>{}; }

// The file `record` says it wrote, from its last message.
std::string written(const Proc& p) {
  std::smatch m;
  if (!std::regex_search(p.err, m, std::regex("prepatch record: wrote ([^\\s;]+)"))) return "";
  return m[1];
}

TEST(Record, TracesAProgramAndPassesItsExitStatusThrough) {
  TempDir d;
  Proc plain = run({td + "/basic-gcc-fentry", "12"}, d.path());  // (in d: the unprepared -pg program writes gmon.out)
  Proc r = record(d, {"--", td + "/basic-gcc-fentry", "12"});
  EXPECT_EQ(r.status, 12 % 7) << r.err;  // the program's own status
  EXPECT_EQ(r.out, plain.out);
  const std::string trace = written(r);
  ASSERT_TRUE(std::regex_match(trace, std::regex("prepatch\\.[0-9]+\\.trace"))) << r.err;
  EXPECT_NE(r.err.find("(graph, "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n  prepatch replay " + trace + "\n"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\n  prepatch report " + trace + "\n"), std::string::npos) << r.err;
  // The trace reads back with every call of the program's own count.
  Proc rep = prepatch({"report", d / trace, "--sort", "calls"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(plain.out, m, std::regex("fib=([0-9]+)")));
  EXPECT_TRUE(std::regex_search(rep.out, std::regex("\\s" + std::string(m[1]) + "  fib\n"))) << rep.out;
  // One prepared copy in a directory of this user's alone, mode 0700.
  ASSERT_EQ(cached(d).size(), 1u);
  struct stat dir, copy;
  ASSERT_EQ(::stat((d / "cache/prepatch").c_str(), &dir), 0);
  ASSERT_EQ(::stat((d / "cache/prepatch/" + cached(d)[0]).c_str(), &copy), 0);
  EXPECT_EQ(dir.st_mode & 07777, 0700u);
  EXPECT_EQ(copy.st_mode & 07777, 0700u);
  EXPECT_EQ(cached(d)[0].rfind("basic-gcc-fentry.", 0), 0u) << cached(d)[0];
}

TEST(Record, ReusesTheCachedCopyOfTheSameBytesAndPreparesOtherBytesAnew) {
  TempDir d;
  ASSERT_EQ(record(d, {"--", td + "/basic-gcc-fentry", "5"}).status, 5);
  ASSERT_EQ(cached(d).size(), 1u);
  const std::string copy = d / "cache/prepatch/" + cached(d)[0];
  struct stat before, after;
  ASSERT_EQ(::stat(copy.c_str(), &before), 0);
  // Found through PATH under its own name: the same bytes, the same copy, not written again.
  Proc again = record(d, {"basic-gcc-fentry", "5"}, td);
  EXPECT_EQ(again.status, 5) << again.err;
  ASSERT_EQ(::stat(copy.c_str(), &after), 0);
  EXPECT_EQ(cached(d).size(), 1u);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  // Another program under the same name: another key.
  write_file(d / "basic-gcc-fentry", read_file(td + "/basic-gcc-fentry-nopie"), 0755);
  Proc other = record(d, {"--", d / "basic-gcc-fentry", "5"});
  EXPECT_EQ(other.status, 5) << other.err;
  EXPECT_EQ(cached(d).size(), 2u);
}

TEST(Record, RunsAPreparedProgramAsItIs) {
  TempDir d;
  ASSERT_EQ(prepatch({td + "/basic-gcc-fentry", "-o", d / "prepared"}).status, 0);
  Proc r = record(d, {"--tracer", "function", "-o", "f.trace", "--", d / "prepared", "6"});
  EXPECT_EQ(r.status, 6) << r.err;
  EXPECT_EQ(written(r), "f.trace");
  EXPECT_TRUE(cached(d).empty());
  Proc rep = prepatch({"replay", d / "f.trace"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  EXPECT_NE(rep.out.find("square() <- main"), std::string::npos) << rep.out;
}

TEST(Record, CountTracerWritesACountsFileAndSaysHowToReadIt) {
  TempDir d;
  Proc r = record(d, {"--tracer", "count", "--trace", "fib", "-o", "c.counts", "--", td + "/basic-gcc-fentry", "10"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_EQ(written(r), "c.counts");
  ASSERT_EQ(cached(d).size(), 1u);
  const std::string copy = d / "cache/prepatch/" + cached(d)[0];
  EXPECT_NE(r.err.find("\n  prepatch counts " + copy + " c.counts\n"), std::string::npos) << r.err;
  Proc c = prepatch({"counts", copy, d / "c.counts"});
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_TRUE(std::regex_search(c.out, std::regex("\n177 +0x[0-9a-f]+ fib\n"))) << c.out;  // fib(10) makes 177 calls
  EXPECT_EQ(c.out.find("square"), std::string::npos) << c.out;                             // not traced
}

TEST(Record, RefusesAProgramWithoutHooksAndAnUnsafeCache) {
  TempDir d;
  Proc none = record(d, {"--", td + "/secure-nohooks"});
  EXPECT_EQ(none.status, 3);
  EXPECT_NE(none.err.find("no function-entry sites to trace: build it with -pg -mfentry"), std::string::npos) << none.err;
  EXPECT_TRUE(cached(d).empty());
  Proc missing = record(d, {"--", "no-such-program-anywhere"}, d.path());
  EXPECT_EQ(missing.status, 5);
  EXPECT_NE(missing.err.find("no-such-program-anywhere: not found in PATH"), std::string::npos) << missing.err;
  // A cache others can write into would let them choose what runs: refused, nothing run.
  ASSERT_EQ(::chmod((d / "cache/prepatch").c_str(), 0777), 0);
  Proc unsafe = record(d, {"--", td + "/basic-gcc-fentry", "3"});
  EXPECT_EQ(unsafe.status, 5);
  EXPECT_NE(unsafe.err.find("cache/prepatch: not a directory of this user's alone (owner uid " + std::to_string(::geteuid()) + ", mode 0777)"),
            std::string::npos) << unsafe.err;
  EXPECT_EQ(unsafe.out, "");
}

}  // namespace
}  // namespace prepatch::test
