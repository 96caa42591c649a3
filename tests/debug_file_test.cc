// A stripped binary's separate debug file (rewriter/debug_file.h): made as Debian's packages make
// them (objcopy --only-keep-debug, then strip, then --add-gnu-debuglink), found beside the binary,
// under a debug directory by build ID, or given; refused when it belongs to another build.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "support.h"

namespace prepatch::test {
namespace {

std::string program() { return read_file(std::string(SOURCE_DIR) + "/testdata/stripped.c"); }

// `cc FLAGS` builds d/NAME.full, which is split into d/NAME.debug (its debug file) and d/NAME (stripped,
// linked to it by .gnu_debuglink unless `link` is false), with the ISA's binutils (`tool`).
void build_split(const TempDir& d, const TestBinary& bin, const std::string& cc, const std::string& flags, const std::string& name, bool link = true) {
  write_file(d / "p.c", program());
  Proc c = run(cc_command(cc, flags + " -g", d / "p.c", d / (name + ".full")));
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({bin.tool("objcopy"), "--only-keep-debug", d / (name + ".full"), d / (name + ".debug")});
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({bin.tool("strip"), "-s", d / (name + ".full"), "-o", d / name});
  ASSERT_EQ(c.status, 0) << c.err;
  if (link) {
    c = run({bin.tool("objcopy"), "--add-gnu-debuglink=" + d / (name + ".debug"), d / name}, d.path());
    ASSERT_EQ(c.status, 0) << c.err;
  }
  ASSERT_EQ(::chmod((d / name).c_str(), 0755), 0);
}

std::map<std::string, long> site_names(const std::string& binary) {
  Proc s = prepatch({"sites", "--json", binary});
  EXPECT_EQ(s.status, 0) << s.err;
  std::map<std::string, long> by_name;  // function -> its site's address
  if (s.status != 0) return by_name;
  const nlohmann::json j = nlohmann::json::parse(s.out);
  for (const auto& site : j["sites"]) by_name[site["function"]] = site["address"];
  return by_name;
}

// x86-64 -pg -mfentry, whose sites only symbols find (no records): stripped, it had none to prepare.
// Its debug file beside it names every function, the static one too, at the unstripped binary's
// addresses: prepared, counted by name. Moved away, the sites are found from the FDEs alone
// (tests/stripped_test.cc), without names, and the message says how to give the file.
TEST(DebugFile, BesideTheBinaryItNamesAStrippedBinarysFunctions) {
  TempDir d;
  const TestBinary bin{};
  build_split(d, bin, "gcc", "-pg -mfentry", "p");
  const std::map<std::string, long> full = site_names(d / "p.full");
  ASSERT_EQ(full.size(), 3u);
  EXPECT_EQ(site_names(d / "p"), full);
  Proc r = prepatch({d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("stripped; function names from its debug file " + d / "p.debug"), std::string::npos) << r.err;
  Proc t = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "out", "3"});
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "33\n");
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"h", 3}, {"g", 6}}));
  // -q says nothing of it.
  std::filesystem::remove(d / "out");
  r = prepatch({"-q", d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::filesystem::rename(d / "p.debug", d / "elsewhere.debug");
  std::filesystem::remove(d / "out");
  r = prepatch({d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("(the binary's debug file would name them: --debug-file)"), std::string::npos) << r.err;
  EXPECT_EQ(site_names(d / "out").size(), 3u);
  EXPECT_EQ(site_names(d / "out").count("main"), 0u);
  std::filesystem::remove(d / "out");
  r = prepatch({"--debug-file", d / "elsewhere.debug", d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(site_names(d / "out"), full);
}

// `prepatch record` finds it too: the stripped program traced, its functions named in the report.
// Its name is in the cache's key: recorded first without it (by address), then with it (by name).
TEST(DebugFile, RecordReadsItToo) {
  TempDir d;
  build_split(d, TestBinary{}, "gcc", "-pg -mfentry", "p");
  std::filesystem::rename(d / "p.debug", d / "away.debug");
  Proc before = run({"env", "XDG_CACHE_HOME=" + d / "cache", PREPATCH_BIN, "record", "-o", d / "t0.trace", "--", d / "p", "3"}, d.path());
  ASSERT_EQ(before.status, 0) << before.err;
  const std::string unnamed = prepatch({"report", d / "t0.trace"}).out;
  EXPECT_EQ(unnamed.find(" main\n"), std::string::npos) << unnamed;
  EXPECT_NE(unnamed.find(" 0x"), std::string::npos) << unnamed;
  std::filesystem::rename(d / "away.debug", d / "p.debug");
  Proc r = run({"env", "XDG_CACHE_HOME=" + d / "cache", PREPATCH_BIN, "record", "-o", d / "t.trace", "--", d / "p", "3"}, d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "33\n");
  Proc rep = prepatch({"report", d / "t.trace", "--sort", "calls"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  for (const char* row : {" 6  g\n", " 3  h\n", " 1  main\n"}) {
    EXPECT_NE(rep.out.find(row), std::string::npos) << row << rep.out;
  }
}

// Found by build ID under --debug-dir (DIR/.build-id/ab/cdef....debug, as Debian's -dbgsym packages
// install them), with no .gnu_debuglink at all.
TEST(DebugFile, FoundByBuildIdUnderTheDebugDirectory) {
  TempDir d;
  const TestBinary bin{};
  build_split(d, bin, "gcc", "-pg -mfentry", "p", false);
  Proc id = run({"readelf", "-n", d / "p"});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(id.out, m, std::regex("Build ID: ([0-9a-f]{2})([0-9a-f]+)"))) << id.out;
  const std::string dir = d / ("debug/.build-id/" + m[1].str());
  std::filesystem::create_directories(dir);
  std::filesystem::rename(d / "p.debug", dir + "/" + m[2].str() + ".debug");
  EXPECT_EQ(site_names(d / "p").count("main"), 0u) << "not under the default directory: no names";
  Proc r = prepatch({"--debug-dir", d / "debug", d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(site_names(d / "out"), site_names(d / "p.full"));
}

// Another build's debug file is not taken: given, refused with both build IDs and nothing written;
// found beside the binary under the name .gnu_debuglink gives, passed over with a note. Without build
// IDs, the CRC-32 .gnu_debuglink records decides.
TEST(DebugFile, AnotherBuildsIsRefused) {
  TempDir d;
  const TestBinary bin{};
  build_split(d, bin, "gcc", "-pg -mfentry", "p");
  build_split(d, bin, "gcc", "-pg -mfentry -O1", "q");
  Proc r = prepatch({"--debug-file", d / "q.debug", d / "p", "-o", d / "out"});
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_NE(r.err.find(d / "q.debug" + ": offset 0x0: not " + d / "p" + "'s debug file: build ID "), std::string::npos) << r.err;
  EXPECT_FALSE(exists(d / "out"));
  std::filesystem::copy_file(d / "q.debug", d / "p.debug", std::filesystem::copy_options::overwrite_existing);
  r = prepatch({d / "p", "-o", d / "out"});  // (prepared without names: from its FDEs)
  EXPECT_NE(r.err.find(d / "p.debug" + " passed over: build ID "), std::string::npos) << r.err;
  EXPECT_EQ(site_names(d / "p").count("main"), 0u);
  std::filesystem::remove(d / "out");
  // No build IDs: the CRC-32.
  build_split(d, bin, "gcc", "-pg -mfentry -Wl,--build-id=none", "n");
  r = prepatch({d / "n", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(site_names(d / "out").size(), 3u);
  std::filesystem::remove(d / "out");
  Proc c = run({"objcopy", "--add-section", ".comment2=" + d / "p.c", d / "n.debug"});  // the same symbols, other bytes
  ASSERT_EQ(c.status, 0) << c.err;
  r = prepatch({d / "n", "-o", d / "out"});
  EXPECT_NE(r.err.find(d / "n.debug" + " passed over: CRC-32 0x"), std::string::npos) << r.err;
  EXPECT_EQ(site_names(d / "n").count("main"), 0u);
}

// AArch64 -pg, under qemu: stripped, its local functions had no symbol to scan; with the debug file
// each is found where the unstripped binary's are, and the graph tracer's replay names them.
TEST(DebugFile, AnAarch64PgBinarysFunctionsAreTracedByName) {
  TempDir d;
  const TestBinary bin{.isa = "aarch64"};
  build_split(d, bin, "aarch64-linux-gnu-gcc", "-pg", "p");
  EXPECT_EQ(site_names(d / "p"), site_names(d / "p.full"));
  Proc r = prepatch({"-q", d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace"}, bin.exec(d / "out", {"2"})));
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "16\n");
  Proc replay = prepatch({"replay", d / "t.trace"});
  ASSERT_EQ(replay.status, 0) << replay.err;
  for (const char* line : {"| main() {\n", "|   h() {\n", "|     g();\n", "|   } /* h */\n", "| } /* main */\n"}) {
    EXPECT_NE(replay.out.find(line), std::string::npos) << line << replay.out;
  }
}

}  // namespace
}  // namespace prepatch::test
