// A stripped -pg binary with no debug file at hand: no .symtab names its functions, no record lists its
// sites. Its unwind table's FDEs (.eh_frame) cover every function, so discovery scans each from where
// its FDE starts (rewriter/sites.cc add_unwind_functions): every site is found where the unstripped
// binary has it, and each function is called by its site's address.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "support.h"

namespace prepatch::test {
namespace {

std::string program() { return read_file(std::string(SOURCE_DIR) + "/testdata/stripped.c"); }

std::string hex(long v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%lx", v);
  return b;
}

// `prepatch sites --json`: each site's function -> its address.
std::map<std::string, long> sites_by_function(const std::string& binary) {
  Proc s = prepatch({"sites", "--json", binary});
  EXPECT_EQ(s.status, 0) << s.err;
  std::map<std::string, long> out;
  if (s.status != 0) return out;
  const nlohmann::json j = nlohmann::json::parse(s.out);
  for (const auto& site : j["sites"]) out[site["function"]] = site["address"];
  return out;
}

class StrippedPg : public ::testing::TestWithParam<CrossBuild> {};

// Stripped with `strip -s` (the same code, at the same addresses), without its debug file: the sites
// are the unstripped binary's, each function named by its site's address in `sites`, the counts, and
// the graph tracer's replay, which nests them as they called each other; the preparer says where the
// functions came from and how to name them; gprof is off, as in any prepared binary. Before, such a binary had no site at all (x86-64, AArch64,
// PPC64le: no function symbol but the exported ones, and PPC64le's call stubs to _mcount unnamed).
TEST_P(StrippedPg, ItsFunctionsAreFoundByTheirFdesAndCalledByTheirSitesAddress) {
  const CrossBuild& p = GetParam();
  const TestBinary bin{.isa = p.isa};
  TempDir d;
  write_file(d / "p.c", program());
  Proc c = run(cc_command(p.cc, p.flags, d / "p.c", d / "full"));
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({bin.tool("strip"), "-s", d / "full", "-o", d / "p"});
  ASSERT_EQ(c.status, 0) << c.err;
  ASSERT_EQ(::chmod((d / "p").c_str(), 0755), 0);
  const std::map<std::string, long> full = sites_by_function(d / "full");
  ASSERT_EQ(full.size(), 3u);
  // The stripped binary's: each function by its site's address, but for those .dynsym still names
  // (RISC-V64's gcc exports main).
  Proc dynsym = run({bin.tool("nm"), "-D", "--defined-only", d / "p"});
  ASSERT_EQ(dynsym.status, 0) << dynsym.err;
  std::map<std::string, std::string> name;  // the unstripped name -> the stripped one
  std::map<std::string, long> expected;
  for (const auto& [f, addr] : full) {
    name[f] = dynsym.out.find(" T " + f + "\n") != std::string::npos ? f : hex(addr);
    expected[name[f]] = addr;
  }
  EXPECT_EQ(sites_by_function(d / "p"), expected);

  Proc r = prepatch({d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find(d / "p" + ": no .symtab: -pg sites looked for in the "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(the binary's debug file would name them: --debug-file)"), std::string::npos) << r.err;
  const std::string main = name["main"], h = name["h"], g = name["g"];
  EXPECT_EQ(g, hex(full.at("g"))) << "static: in no symbol table";

  // gprof's start-up is found too (the one small function calling __monstartup; RISC-V64's, which has
  // no FDE, among the .preinit_array entries) and turned off: run in d, the prepared program writes no
  // gmon.out, where the stripped one does.
  Proc t = run(bin.exec(d / "p", {"2"}), d.path());
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_TRUE(std::filesystem::exists(d / "gmon.out"));
  std::filesystem::remove(d / "gmon.out");
  t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace"}, bin.exec(d / "out", {"2"})), d.path());
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "16\n");
  EXPECT_FALSE(std::filesystem::exists(d / "gmon.out"));
  Proc replay = prepatch({"replay", d / "t.trace"});
  ASSERT_EQ(replay.status, 0) << replay.err;
  for (const std::string& line : {"| " + main + "() {\n", "|   " + h + "() {\n", "|     " + g + "();\n", "|   } /* " + h + " */\n", "| } /* " + main + " */\n"}) {
    EXPECT_NE(replay.out.find(line), std::string::npos) << line << replay.out;
  }
  t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"3"})), d.path());
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "33\n");
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{main, 1}, {h, 3}, {g, 6}}));
  // Globs select an unnamed function by that address: at start, and in the readers.
  std::filesystem::remove(d / "c");
  t = run(with_env({"PREPATCH_TRACE=" + g, "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"3"})), d.path());
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{g, 6}}));
  Proc only_h = prepatch({"replay", "--function", h, d / "t.trace"});
  ASSERT_EQ(only_h.status, 0) << only_h.err;
  EXPECT_NE(only_h.out.find("|   " + h + "() {\n"), std::string::npos) << only_h.out;  // (at its depth)
  EXPECT_NE(only_h.out.find("|     " + g + "();\n"), std::string::npos) << only_h.out;
  EXPECT_EQ(only_h.out.find(main + "()"), std::string::npos) << only_h.out;
}

INSTANTIATE_TEST_SUITE_P(Isas, StrippedPg,
                         ::testing::Values(CrossBuild{"", "gcc", "-pg"}, CrossBuild{"", "gcc", "-pg -mfentry -no-pie"},
                                           CrossBuild{"aarch64", "aarch64-linux-gnu-gcc", "-pg"},
                                           CrossBuild{"ppc64le", "powerpc64le-linux-gnu-gcc", "-pg"},
                                           CrossBuild{"riscv64", "riscv64-linux-gnu-gcc", "-pg -fasynchronous-unwind-tables"}),
                         [](const auto& i) { return i.param.name(); });

// A stripped -pg shared library (`-fPIC -shared -s`), used by a program built without -pg: its
// exported function keeps the name .dynsym gives it, its static one is called by its site's address,
// the sites are the unstripped library's, and every call is counted exactly in the library's section of
// the counts file; the program behaves as with the library as built.
class StrippedPgLibrary : public ::testing::TestWithParam<CrossBuild> {};

TEST_P(StrippedPgLibrary, ItsExportsKeepTheirNamesAndItsStaticFunctionsAreCountedByAddress) {
  const CrossBuild& p = GetParam();
  const TestBinary bin{.isa = p.isa};
  TempDir d;
  write_file(d / "lib.c", R"(__attribute__((noinline)) static int twice(int x) { __asm__ volatile("" ::: "memory"); return 2 * x; }
int api(int n) { int s = 0; for (int i = 0; i < n; i++) s += twice(i); return s; }
)");
  write_file(d / "main.c", R"(#include <stdio.h>
#include <stdlib.h>
int api(int);
int main(int argc, char** argv) { printf("%d\n", api(argc > 1 ? atoi(argv[1]) : 1)); return 0; }
)");
  for (const std::string dir : {"built", "prepared"}) std::filesystem::create_directory(d / dir);
  Proc c = run(cc_command(p.cc, p.flags + " -fPIC -shared", d / "lib.c", d / "libs.so"));
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({bin.tool("strip"), "-s", d / "libs.so", "-o", d / "built/libs.so"});
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({p.cc, "-O2", d / "main.c", "-L" + d / "built", "-ls", "-o", d / "main"});
  ASSERT_EQ(c.status, 0) << c.err;
  const std::map<std::string, long> full = sites_by_function(d / "libs.so");
  ASSERT_EQ(full.size(), 2u);
  const std::string twice = hex(full.at("twice"));
  EXPECT_EQ(sites_by_function(d / "built/libs.so"), (std::map<std::string, long>{{"api", full.at("api")}, {twice, full.at("twice")}}));

  Proc r = prepatch({d / "built/libs.so", "-o", d / "prepared/libs.so"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("no .symtab: -pg sites looked for in the "), std::string::npos) << r.err;
  const auto command = [&](const std::string& libdir, std::vector<std::string> env) {
    env.insert(env.begin(), "LD_LIBRARY_PATH=" + d / libdir);
    return with_env(env, bin.exec(d / "main", {"5"}));
  };
  Proc want = run(command("built", {}), d.path());
  ASSERT_EQ(want.status, 0) << want.err;
  EXPECT_EQ(want.out, "20\n");
  Proc off = run(command("prepared", {}), d.path());
  EXPECT_EQ(off.status, 0) << off.err;
  EXPECT_EQ(off.out, want.out);
  Proc on = run(command("prepared", {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}), d.path());
  EXPECT_EQ(on.status, 0) << on.err;
  EXPECT_EQ(on.out, want.out);
  EXPECT_EQ(function_counts(d / "prepared/libs.so", d / "c"), (std::map<std::string, long>{{"api", 1}, {twice, 5}}));
}

INSTANTIATE_TEST_SUITE_P(Isas, StrippedPgLibrary,
                         ::testing::Values(CrossBuild{"", "gcc", "-pg"}, CrossBuild{"aarch64", "aarch64-linux-gnu-gcc", "-pg"},
                                           CrossBuild{"ppc64le", "powerpc64le-linux-gnu-gcc", "-pg"},
                                           CrossBuild{"riscv64", "riscv64-linux-gnu-gcc", "-pg -fasynchronous-unwind-tables"}),
                         [](const auto& i) { return i.param.name(); });

// A program that calls __monstartup itself as well as gcrt1's __gmon_start__: which is which is not
// known without symbols, so neither is touched. Its own function still runs (it prints), and gprof
// writes gmon.out as it did unprepared.
TEST(Stripped, AProgramCallingMonstartupItselfKeepsGprof) {
  TempDir d;
  write_file(d / "p.c", R"(#include <stdio.h>
#include <sys/gmon.h>
extern char __executable_start, etext;
__attribute__((noinline)) void start(void) { __monstartup((unsigned long)&__executable_start, (unsigned long)&etext); puts("started"); }
int main(void) { start(); return 0; }
)");
  Proc c = run(cc_command("gcc", "-pg -s", d / "p.c", d / "p"));
  ASSERT_EQ(c.status, 0) << c.err;
  Proc r = prepatch({d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, {d / "out"}), d.path());
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "started\n");
  EXPECT_TRUE(std::filesystem::exists(d / "gmon.out"));
  EXPECT_EQ(function_counts(d / "out", d / "c").size(), 2u);  // main and start, by their sites' addresses
}

// Where nothing finds them, nothing is written, and the message names what was looked for and the ways
// out: a static binary (its mcount has no name left), ARM32 (gcc writes no unwind table for C), and a
// binary whose .eh_frame was removed too.
TEST(Stripped, PgBinaryWithNothingToFindItsSitesByIsRefusedSayingWhy) {
  TempDir d;
  write_file(d / "p.c", program());
  struct Case {
    std::string isa, cc, flags;
    bool no_eh_frame = false;
  };
  for (const Case& k : {Case{"", "gcc", "-pg -mfentry -static"}, Case{"arm", "arm-linux-gnueabihf-gcc", "-pg"}, Case{"", "gcc", "-pg", true}}) {
    SCOPED_TRACE(k.cc + " " + k.flags + (k.no_eh_frame ? " without .eh_frame" : ""));
    const TestBinary bin{.isa = k.isa};
    Proc c = run(cc_command(k.cc, k.flags + " -s", d / "p.c", d / "p"));
    ASSERT_EQ(c.status, 0) << c.err;
    if (k.no_eh_frame) {
      c = run({"objcopy", "-R", ".eh_frame", "-R", ".eh_frame_hdr", d / "p"});
      ASSERT_EQ(c.status, 0) << c.err;
    }
    std::filesystem::remove(d / "out");
    Proc r = prepatch({d / "p", "-o", d / "out"});
    EXPECT_EQ(r.status, 3) << r.err;
    EXPECT_NE(r.err.find("no function symbols (stripped?)"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("no -pg call found in the functions its unwind table's FDEs cover"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("--debug-file"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(d / "out"));
  }
}

}  // namespace
}  // namespace prepatch::test
