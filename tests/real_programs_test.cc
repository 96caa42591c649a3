// Real programs, end to end: the Lua interpreter and zlib's own test programs, from the Debian source
// packages (tests/real_programs.sh fetches and builds them in three site flavors), prepared, and run
// three ways against the same program built without preparing: tracing off, every function traced by
// the graph tracer, and while `prepatch ctl` switches every site on and off in a loop. Stdout, stderr,
// exit status and the files they write must be identical. The same for zlib and Lua as prepared
// shared libraries under programs built without hooks, and for a prepared C module under Debian's own
// lua5.4 (RealShared). ctest label: realprograms.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <map>
#include <regex>
#include <sstream>

#include "support.h"

namespace prepatch::test {
namespace {

const std::string real = REAL_DIR;
const std::string workload = std::string(SOURCE_DIR) + "/testdata/real/workload.lua";

// Runs `argv` (stdout and stderr to files in `cwd`, stdin a pipe) while enabling and disabling every
// site through `prepatch ctl`: first with one of `pieces` written to its stdin after each enable and each
// disable (a program that reads them waits for each, so the batches land while it runs whatever this
// machine's speed), then, its stdin closed, on until it exits. Returns its output, and how many enables
// the shim carried out.
Proc toggled(const std::vector<std::string>& argv, const std::string& cwd, int& enables, const std::vector<std::string>& pieces = {}) {
  int out = open((cwd + "/stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = open((cwd + "/stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int in[2];
  if (pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  const int pid = spawn(argv, cwd, in[0], out, err);
  close(out), close(err), close(in[0]);
  enables = 0;
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &old);  // (a program that exits early must not take the test with it)
  for (size_t k = 0; k < pieces.size(); k++) {
    Proc c = prepatch({"ctl", std::to_string(pid), k % 2 ? "disable" : "enable", "*"});
    // The first may come before the program is there to answer: the child not exec'd yet, or its
    // prepared library not loaded yet ("not prepared by prepatch"). It waits for it, up to 10 s.
    for (int tries = 0; k == 0 && c.status != 0 && c.err.find("not prepared by prepatch") != std::string::npos && tries < 1000; tries++) {
      usleep(10000);
      c = prepatch({"ctl", std::to_string(pid), "enable", "*"});
    }
    if (c.status == 0) enables += k % 2 == 0;
    else ADD_FAILURE() << "ctl failed while the program waited for its input: " << c.err;
    for (size_t at = 0; at < pieces[k].size();) {
      const ssize_t w = write(in[1], pieces[k].data() + at, pieces[k].size() - at);
      if (w <= 0) break;
      at += static_cast<size_t>(w);
    }
  }
  close(in[1]);
  sigaction(SIGPIPE, &old, nullptr);
  int st = 0;
  const std::string p = std::to_string(pid);
  // A failure is an error unless the program is ending: it then exits within a few seconds.
  auto ended = [&](int ms) {
    for (int i = 0; i <= ms / 10; i++, usleep(10000))
      if (waitpid(pid, &st, WNOHANG) == pid) return true;
    return false;
  };
  for (bool on = true; !ended(0);) {
    Proc c = prepatch({"ctl", p, on ? "enable" : "disable", "*"});
    if (c.status == 0) {
      enables += on, on = !on;
    } else if (enables == 0 && c.err.find("not prepared by prepatch") != std::string::npos) {
      usleep(10000);  // an unprepared program whose prepared library is not loaded yet (a loaded machine starts it late)
    } else if (!ended(3000)) {
      ADD_FAILURE() << "ctl " << (on ? "enable" : "disable") << " failed while the program ran: " << c.err;
    } else {
      break;
    }
  }
  Proc r;
  r.status = exit_code(st);
  r.out = read_file(cwd + "/stdout");
  r.err = read_file(cwd + "/stderr");
  return r;
}

// Text to compress: `mb` MiB of numbered lines.
std::string gzip_data(unsigned mb) {
  std::string data;
  for (int i = 0; data.size() < (mb << 20); i++) data += "line " + std::to_string(i) + " " + std::to_string(i * 2654435761u % 1000003) + "\n";
  return data;
}

// `data` in `n` pieces; `lines(n)`: n lines (the paced workload.lua reads one per round).
std::vector<std::string> pieces(const std::string& data, size_t n) {
  std::vector<std::string> out;
  for (size_t k = 0; k < n; k++) out.push_back(data.substr(data.size() * k / n, data.size() * (k + 1) / n - data.size() * k / n));
  return out;
}
std::vector<std::string> lines(size_t n) { return std::vector<std::string>(n, "\n"); }
constexpr int paced_rounds = 12;

// How a run is started: the program as built (prepared false) or prepared, with `env` set.
using Command = std::function<std::vector<std::string>(bool prepared, const std::vector<std::string>& env)>;

// A fresh working directory in `d` per run, so files a program writes (foo.gz, gmon.out) are its own.
std::string dir(const TempDir& d, const std::string& name) {
  const std::string p = d / name;
  mkdir(p.c_str(), 0755);
  return p;
}

// Runs `command` as built, then prepared with tracing off and under graph, each in its own directory
// in `d`: all three must agree, and the graph trace reads back and names `functions`. Returns the run
// as built.
Proc off_and_graph(const Command& command, const TempDir& d, const std::string& name, const std::vector<std::string>& functions) {
  Proc want = run(command(false, {}), dir(d, name + ".plain"));
  Proc off = run(command(true, {}), dir(d, name + ".off"));
  EXPECT_EQ(off.status, want.status);
  EXPECT_EQ(off.out, want.out);
  EXPECT_EQ(off.err, want.err);
  const std::string g = dir(d, name + ".graph");
  Proc graph = run(command(true, {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + g + "/t.trace"}), g);
  EXPECT_EQ(graph.status, want.status) << graph.err;
  EXPECT_EQ(graph.out, want.out);
  EXPECT_EQ(graph.err, want.err);
  Proc rep = prepatch({"report", g + "/t.trace", "--sort", "calls"});
  EXPECT_EQ(rep.status, 0) << rep.err;
  for (const std::string& f : functions) EXPECT_NE(rep.out.find(" " + f + "\n"), std::string::npos) << f << " in\n" << rep.out.substr(0, 2000);
  return want;
}

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
  std::string dir(const std::string& name) { return test::dir(d_, name); }

  // off_and_graph() of the program with `args`; the trace must name main.
  Proc off_and_graph(const std::string& prog, const std::vector<std::string>& args) {
    return test::off_and_graph(
        [&](bool prep, const std::vector<std::string>& env) {
          std::vector<std::string> argv{prep ? prepared(prog) : plain(prog)};
          argv.insert(argv.end(), args.begin(), args.end());
          return env.empty() ? argv : with_env(env, argv);
        },
        d_, prog, {"main"});
  }

  TempDir d_;
};

TEST_P(Real, LuaRunsTheSameOffTracedAndToggled) {
  Proc want = off_and_graph("lua", {workload, "1"});
  EXPECT_EQ(want.status, 0) << want.err;
  EXPECT_NE(want.out.find("coroutines"), std::string::npos) << want.out;
  // Longer, paced by its input (a line a round), so that many batches land while it runs.
  const std::string rounds = std::to_string(paced_rounds);
  Proc plain_run = run({plain("lua"), workload, rounds}, dir("lua.long"));
  int enables = 0;
  Proc t = toggled({prepared("lua"), workload, rounds, "paced"}, dir("lua.toggled"), enables, lines(paced_rounds));
  EXPECT_EQ(t.status, plain_run.status) << t.err;
  EXPECT_EQ(t.out, plain_run.out);
  EXPECT_EQ(t.err, plain_run.err);
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
}

// Lua as production tracing would run it (issue 27): every site on, the flight recorder, a threshold and
// a trigger. It prints the same; every call the trace holds lasted the threshold; `docall` (which runs
// the whole script, once) triggers exactly one snapshot, said on stderr, which reads back with docall
// whole in it.
TEST_P(Real, LuaUnderARingAThresholdAndATrigger) {
  Proc want = run({plain("lua"), workload, "2"}, dir("lua.prod.plain"));
  const std::string d = dir("lua.prod"), trace = d + "/t.trace";
  Proc r = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_BUFFER=ring:1M", "PREPATCH_THRESHOLD=1ms",
                         "PREPATCH_TRIGGER=docall>1ms:snapshot", "PREPATCH_OUTPUT=" + trace},
                        {prepared("lua"), workload, "2"}),
               d);
  EXPECT_EQ(r.status, want.status);
  EXPECT_EQ(r.out, want.out);
  EXPECT_EQ(r.err, "prepatch: trigger docall>1ms:snapshot: snapshot " + trace + ".snapshot.1\n");
  EXPECT_FALSE(exists(trace + ".snapshot.2"));
  for (const std::string& file : {trace, trace + ".snapshot.1"}) {
    SCOPED_TRACE(file);
    Proc rep = prepatch({"replay", file});
    EXPECT_EQ(rep.status, 0) << rep.err;
    EXPECT_NE(rep.out.find("} /* docall */"), std::string::npos) << rep.out.substr(0, 3000);
    // Every duration shown ("0.191 us |", "1.234 ms |", "0.150 s |") is 1 ms or more.
    size_t calls = 0;
    const std::regex duration("([0-9]+\\.[0-9]+) (us|ms|s) \\|");
    for (auto it = std::sregex_iterator(rep.out.begin(), rep.out.end(), duration); it != std::sregex_iterator(); ++it, calls++) {
      const double v = std::stod((*it)[1]), ms = (*it)[2] == "us" ? v / 1000 : (*it)[2] == "ms" ? v : v * 1000;
      EXPECT_GE(ms, 1.0) << it->str();
    }
    EXPECT_GT(calls, 0u);
  }
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

// minigzip compresses 24 MB from its stdin, fed in pieces, while every site is switched on and off
// between them, then decompresses it.
TEST_P(Real, ZlibMinigzipCompressesTheSameWhileToggled) {
  const std::string data = gzip_data(24);
  const std::string a = dir("gzip.plain"), b = dir("gzip.toggled");
  write_file(a + "/data", data);
  Proc want = run({"sh", "-c", "exec \"$0\" <data >data.gz", plain("minigzip")}, a);
  ASSERT_EQ(want.status, 0) << want.err;
  int enables = 0;
  Proc t = toggled({prepared("minigzip")}, b, enables, pieces(data, 8));
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
  write_file(b + "/data.gz", t.out);
  EXPECT_TRUE(t.out == read_file(a + "/data.gz")) << "the compressed files differ";
  Proc back = run({"env", "PREPATCH_TRACE=*", prepared("minigzip"), "-d", "data.gz"}, b);
  EXPECT_EQ(back.status, 0) << back.err;
  EXPECT_TRUE(read_file(b + "/data") == data) << "the round trip lost data";
}

INSTANTIATE_TEST_SUITE_P(Flavors, Real, ::testing::Values("fentry", "pfe5", "mcount"));

// The Lua interpreter cross-built for AArch64 with -pg, under qemu-aarch64: the same output off and
// with every function graph-traced (its errors are longjmps through traced functions), and the trace
// names the interpreter's own functions.
TEST(RealAarch64, LuaRunsTheSameOffAndGraphTracedUnderQemu) {
  TempDir d;
  const std::string lua = real + "/a64-pg/lua", prepared = d / "lua.prepared";
  Proc p = prepatch({"-q", lua, "-o", prepared});
  ASSERT_EQ(p.status, 0) << p.err;
  const TestBinary b{.isa = "aarch64"};
  Proc want = off_and_graph(
      [&](bool prep, const std::vector<std::string>& env) { return with_env(env, b.exec(prep ? prepared : lua, {workload, "1"})); }, d, "lua",
      {"main", "luaV_execute", "luaD_call", "luaD_throw"});
  EXPECT_EQ(want.status, 0) << want.err;
  EXPECT_NE(want.out.find("coroutines"), std::string::npos) << want.out;
}

// zlib and Lua as shared libraries built -pg -mfentry and prepared, under their own programs built
// without hooks (found through LD_LIBRARY_PATH), or built with hooks and prepared too (one runtime
// serving both objects); and a Lua C module under Debian's own lua5.4.
class RealShared : public ::testing::Test {
 protected:
  const std::string built = real + "/shared/lib";
  TempDir d_;
  const std::string lib = d_ / "lib";  // the prepared copies, under the same file names
  RealShared() {
    mkdir(lib.c_str(), 0755);
    for (const char* so : {"libz.so.1", "liblua5.4.so.0", "ppmod.so"}) {
      Proc p = prepatch({"-q", built + "/" + so, "-o", lib + "/" + so});
      EXPECT_EQ(p.status, 0) << so << ": " << p.err;
    }
  }
  std::string dir(const std::string& name) { return test::dir(d_, name); }
  // `argv` with the libraries of `libdir` first, and more variables.
  static std::vector<std::string> with_libs(const std::string& libdir, std::vector<std::string> argv, std::vector<std::string> env = {}) {
    env.insert(env.begin(), "LD_LIBRARY_PATH=" + libdir);
    return with_env(env, argv);
  }
  // off_and_graph() of `argv` with the built libraries, then the prepared ones; with `hooked`, the
  // prepared program (argv[0] + ".hooks", prepared) runs with them instead of argv[0].
  Proc off_and_graph(const std::string& name, std::vector<std::string> argv, const std::vector<std::string>& functions, bool hooked = false) {
    std::vector<std::string> prepared_argv = argv;
    if (hooked) {
      prepared_argv[0] = d_ / (name + ".prepared");
      Proc p = prepatch({"-q", argv[0] + ".hooks", "-o", prepared_argv[0]});
      EXPECT_EQ(p.status, 0) << p.err;
    }
    return test::off_and_graph(
        [&](bool prep, const std::vector<std::string>& env) { return with_libs(prep ? lib : built, prep ? prepared_argv : argv, env); }, d_,
        name, functions);
  }
};

TEST_F(RealShared, ZlibAsAPreparedLibraryUnderItsOwnProgramsRunsTheSameOffTracedAndToggled) {
  Proc ex = off_and_graph("example", {real + "/shared/example"}, {"deflate", "inflate", "crc32_z", "adler32_z"});
  EXPECT_EQ(ex.status, 0) << ex.err;
  EXPECT_NE(ex.out.find("large_inflate(): OK"), std::string::npos) << ex.out;
  EXPECT_EQ(read_file(d_ / "example.off/foo.gz"), read_file(d_ / "example.plain/foo.gz"));
  EXPECT_EQ(read_file(d_ / "example.graph/foo.gz"), read_file(d_ / "example.plain/foo.gz"));

  const std::string data = gzip_data(16);
  const std::string a = dir("gzip.plain"), b = dir("gzip.toggled");
  const std::string minigzip = real + "/shared/minigzip";
  write_file(a + "/data", data);
  Proc want = run(with_libs(built, {"sh", "-c", "exec \"$0\" <data >data.gz", minigzip}), a);
  ASSERT_EQ(want.status, 0) << want.err;
  int enables = 0;
  Proc t = toggled(with_libs(lib, {minigzip}), b, enables, pieces(data, 8));
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
  write_file(b + "/data.gz", t.out);
  EXPECT_TRUE(t.out == read_file(a + "/data.gz")) << "the compressed files differ";
  Proc back = run(with_libs(lib, {minigzip, "-d", "data.gz"}, {"PREPATCH_TRACE=*"}), b);
  EXPECT_EQ(back.status, 0) << back.err;
  EXPECT_TRUE(read_file(b + "/data") == data) << "the round trip lost data";
}

// The programs built with hooks and prepared too: one runtime (the library's) serves both objects;
// the graph trace names the functions of both, and toggling every site of both while they run
// changes nothing in what they do.
TEST_F(RealShared, ZlibAndLuaPreparedWithTheirProgramsTraceBothObjects) {
  Proc ex = off_and_graph("example.both", {real + "/shared/example"}, {"main", "test_deflate", "test_inflate", "deflate", "inflate", "crc32_z"}, true);
  EXPECT_EQ(ex.status, 0) << ex.err;
  EXPECT_EQ(read_file(d_ / "example.both.graph/foo.gz"), read_file(d_ / "example.both.plain/foo.gz"));
  Proc lua = off_and_graph("lua.both", {real + "/shared/lua", workload, "1"}, {"main", "pmain", "docall", "luaV_execute", "luaD_call"}, true);
  EXPECT_EQ(lua.status, 0) << lua.err;
  EXPECT_NE(lua.out.find("coroutines"), std::string::npos) << lua.out;
  const std::string rounds = std::to_string(paced_rounds);
  Proc plain_run = run(with_libs(built, {real + "/shared/lua", workload, rounds}), dir("lua.both.long"));
  int enables = 0;
  Proc t = toggled(with_libs(lib, {d_ / "lua.both.prepared", workload, rounds, "paced"}), dir("lua.both.toggled"), enables, lines(paced_rounds));
  EXPECT_EQ(t.status, plain_run.status) << t.err;
  EXPECT_EQ(t.out, plain_run.out);
  EXPECT_EQ(t.err, plain_run.err);
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
}

TEST_F(RealShared, LuaAsAPreparedLibraryUnderItsInterpreterRunsTheSameOffTracedAndToggled) {
  const std::string lua = real + "/shared/lua";
  Proc want = off_and_graph("lua", {lua, workload, "1"}, {"luaV_execute", "luaD_call", "luaH_get"});
  EXPECT_EQ(want.status, 0) << want.err;
  EXPECT_NE(want.out.find("coroutines"), std::string::npos) << want.out;
  const std::string rounds = std::to_string(paced_rounds);
  Proc plain_run = run(with_libs(built, {lua, workload, rounds}), dir("lua.long"));
  int enables = 0;
  Proc t = toggled(with_libs(lib, {lua, workload, rounds, "paced"}), dir("lua.toggled"), enables, lines(paced_rounds));
  EXPECT_EQ(t.status, plain_run.status) << t.err;
  EXPECT_EQ(t.out, plain_run.out);
  EXPECT_EQ(t.err, plain_run.err);
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
}

// Debian's own /usr/bin/lua5.4, unprepared, requires the prepared C module: the same results, exact
// counts from the environment (next() runs once per Collatz step, the total the module returns), and
// live toggling while it runs.
TEST_F(RealShared, DebiansLua54RequiresAPreparedCModule) {
  const std::string lua = "/usr/bin/lua5.4";
  ASSERT_TRUE(exists(lua)) << "Debian's lua5.4 (scripts/install-deps.sh installs it)";
  auto script = [](const std::string& libdir, int n, int rounds) {
    return "package.cpath = '" + libdir + "/?.so;' .. package.cpath; local m = require 'ppmod'; local s = 0; for r = 1, " +
           std::to_string(rounds) + " do s = s + m.collatz(" + std::to_string(n) + ") end; print(s)";
  };
  Proc want = run({lua, "-e", script(built, 10000, 1)});
  ASSERT_EQ(want.status, 0) << want.err;
  Proc off = run({lua, "-e", script(lib, 10000, 1)});
  EXPECT_EQ(off.out, want.out);
  EXPECT_EQ(off.err, want.err);
  const std::string file = d_ / "counts";
  Proc on = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + file, lua, "-e", script(lib, 10000, 1)});
  EXPECT_EQ(on.out, want.out);
  EXPECT_EQ(on.err, want.err);
  Proc c = prepatch({"counts", lib + "/ppmod.so", file});
  ASSERT_EQ(c.status, 0) << c.err;
  std::map<std::string, unsigned long> n;
  std::istringstream rows(c.out);
  for (std::string line; std::getline(rows, line);) {
    std::istringstream f(line);
    unsigned long count = 0;
    std::string address, name;
    if (f >> count >> address >> name) n[name] = count;
  }
  EXPECT_EQ(n["luaopen_ppmod"], 1u) << c.out;
  EXPECT_EQ(n["collatz"], 1u) << c.out;
  EXPECT_EQ(n["steps"], 10000u) << c.out;
  EXPECT_EQ(std::to_string(n["next"]) + "\n", want.out) << c.out;

  Proc long_want = run({lua, "-e", script(built, 20000, 300)});
  int enables = 0;
  Proc t = toggled({lua, "-e", script(lib, 20000, 300)}, dir("module.toggled"), enables);
  EXPECT_EQ(t.status, long_want.status) << t.err;
  EXPECT_EQ(t.out, long_want.out);
  EXPECT_GE(enables, 3) << "the program ended before the toggling got going";
}

}  // namespace
}  // namespace prepatch::test
