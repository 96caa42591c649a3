// Real programs, end to end: the Lua interpreter and zlib's own test programs, from the Debian source
// packages (tests/real_programs.sh fetches and builds them in three site flavors), prepared, and run
// three ways against the same program built without preparing: tracing off, every function traced by
// the graph tracer, and while `prepatch ctl` switches every site on and off in a loop. Stdout, stderr,
// exit status and the files they write must be identical. ctest label: realprograms.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

namespace prepatch::test {
namespace {

const std::string real = REAL_DIR;
const std::string workload = std::string(SOURCE_DIR) + "/testdata/real/workload.lua";

class Real : public ::testing::TestWithParam<std::string> {
 protected:
  // The program as built (the oracle) and prepared.
  std::string plain(const std::string& prog) const { return real + "/" + GetParam() + "/" + prog; }
  std::string prepared(const std::string& prog) {
    const std::string out = d_ / (prog + ".prepared");
    if (!exists(out)) {
      Proc p = prepatch({"-q", plain(prog), "-o", out});
      EXPECT_EQ(p.status, 0) << p.err;
    }
    return out;
  }
  // A fresh working directory per run, so files a program writes (foo.gz, gmon.out) are its own.
  std::string dir(const std::string& name) {
    const std::string p = d_ / name;
    mkdir(p.c_str(), 0755);
    return p;
  }

  // Runs the plain build, then the prepared one off and under graph: all three must agree. Returns
  // the plain run.
  Proc off_and_graph(const std::string& prog, const std::vector<std::string>& args) {
    auto with = [&](std::vector<std::string> argv) {
      argv.insert(argv.end(), args.begin(), args.end());
      return argv;
    };
    Proc want = run(with({plain(prog)}), dir(prog + ".plain"));
    Proc off = run(with({prepared(prog)}), dir(prog + ".off"));
    EXPECT_EQ(off.status, want.status);
    EXPECT_EQ(off.out, want.out);
    EXPECT_EQ(off.err, want.err);
    const std::string gdir = dir(prog + ".graph");
    Proc graph = run(with({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + gdir + "/t.trace", prepared(prog)}), gdir);
    EXPECT_EQ(graph.status, want.status) << graph.err;
    EXPECT_EQ(graph.out, want.out);
    EXPECT_EQ(graph.err, want.err);
    // The trace reads back whole, with every function's calls in it.
    Proc rep = prepatch({"report", gdir + "/t.trace", "--sort", "calls"});
    EXPECT_EQ(rep.status, 0) << rep.err;
    EXPECT_NE(rep.out.find(" main\n"), std::string::npos) << rep.out.substr(0, 2000);
    return want;
  }

  // Runs the prepared program (stdout and stderr to files in its own directory) while enabling and
  // disabling every site through `prepatch ctl` until it exits; returns its output, and how many
  // enables the shim carried out.
  Proc toggled(const std::string& prog, const std::vector<std::string>& args, const std::string& cwd, int& enables) {
    std::vector<std::string> argv{prepared(prog)};
    argv.insert(argv.end(), args.begin(), args.end());
    int out = open((cwd + "/stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = open((cwd + "/stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int pid = spawn(argv, cwd, -1, out, err);
    close(out), close(err);
    enables = 0;
    int st = 0;
    const std::string p = std::to_string(pid);
    // A failure is an error unless the program is ending: it then exits within a few seconds.
    auto ended = [&](int ms) {
      for (int i = 0; i <= ms / 10; i++, usleep(10000))
        if (waitpid(pid, &st, WNOHANG) == pid) return true;
      return false;
    };
    for (bool on = true; !ended(0); on = !on) {
      Proc c = prepatch({"ctl", p, on ? "enable" : "disable", "*"});
      if (c.status == 0) enables += on;
      else if (!ended(3000)) ADD_FAILURE() << "ctl " << (on ? "enable" : "disable") << " failed while the program ran: " << c.err;
      else break;
    }
    Proc r;
    r.status = exit_code(st);
    r.out = read_file(cwd + "/stdout");
    r.err = read_file(cwd + "/stderr");
    return r;
  }

  TempDir d_;
};

TEST_P(Real, LuaRunsTheSameOffTracedAndToggled) {
  Proc want = off_and_graph("lua", {workload, "1"});
  EXPECT_EQ(want.status, 0) << want.err;
  EXPECT_NE(want.out.find("coroutines"), std::string::npos) << want.out;
  // Longer, so that many batches land while it runs.
  const std::vector<std::string> args{workload, "40"};
  Proc plain_run = run({plain("lua"), workload, "40"}, dir("lua.long"));
  int enables = 0;
  Proc t = toggled("lua", args, dir("lua.toggled"), enables);
  EXPECT_EQ(t.status, plain_run.status) << t.err;
  EXPECT_EQ(t.out, plain_run.out);
  EXPECT_EQ(t.err, plain_run.err);
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
}

TEST_P(Real, ZlibExampleAndInfcoverRunTheSameOffAndTraced) {
  Proc ex = off_and_graph("example", {});
  EXPECT_EQ(ex.status, 0) << ex.err;
  EXPECT_NE(ex.out.find("large_inflate(): OK"), std::string::npos) << ex.out;
  Proc cover = off_and_graph("infcover", {});
  EXPECT_EQ(cover.status, 0) << cover.err;
  // The gzip file example writes is the same too.
  EXPECT_EQ(read_file(d_ / "example.off/foo.gz"), read_file(d_ / "example.plain/foo.gz"));
  EXPECT_EQ(read_file(d_ / "example.graph/foo.gz"), read_file(d_ / "example.plain/foo.gz"));
}

// minigzip compresses a 24 MB file while every site is switched on and off, then decompresses it.
TEST_P(Real, ZlibMinigzipCompressesTheSameWhileToggled) {
  std::string data;
  for (int i = 0; data.size() < (24u << 20); i++) data += "line " + std::to_string(i) + " " + std::to_string(i * 2654435761u % 1000003) + "\n";
  const std::string a = dir("gzip.plain"), b = dir("gzip.toggled");
  write_file(a + "/data", data);
  write_file(b + "/data", data);
  Proc want = run({plain("minigzip"), "data"}, a);
  ASSERT_EQ(want.status, 0) << want.err;
  int enables = 0;
  Proc t = toggled("minigzip", {"data"}, b, enables);
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
  const std::string gz = read_file(b + "/data.gz");
  EXPECT_TRUE(gz == read_file(a + "/data.gz")) << "the compressed files differ";
  Proc back = run({"env", "PREPATCH_TRACE=*", prepared("minigzip"), "-d", "data.gz"}, b);
  EXPECT_EQ(back.status, 0) << back.err;
  EXPECT_TRUE(read_file(b + "/data") == data) << "the round trip lost data";
}

INSTANTIATE_TEST_SUITE_P(Flavors, Real, ::testing::Values("fentry", "pfe5", "mcount"));

}  // namespace
}  // namespace prepatch::test
