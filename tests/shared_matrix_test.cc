// The flavor matrix for shared objects: each test program built into a library in every site flavor a
// shared object can have (x86-64's, and the other ISAs' under qemu-user), with a small executable in
// the same flavor that calls it (testdata/lib_main.c; tests/CMakeLists.txt builds them). The library and the executable, each
// prepared or not, in all four combinations: they must behave as built, with tracing off and on; the
// library's sites are one nop each (objdump), they are the compiler's own records (LIEF), and the ELF
// reader agrees with LIEF on the prepared library.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "matrix_checks.h"
#include "support.h"

namespace prepatch::test {
namespace {

struct SoBinary {
  std::string prog, flavor, exe, lib, obj, flags, isa;  // isa: empty for the host's (x86-64)
  std::string name() const {
    std::string n = prog + "_" + flavor;
    for (char& c : n)
      if (!isalnum(static_cast<unsigned char>(c))) c = '_';
    return n;
  }
  friend void PrintTo(const SoBinary& b, std::ostream* os) { *os << b.lib; }
  bool has(const std::string& flag) const { return (" " + flags + " ").find(" " + flag) != std::string::npos; }
  std::string soname() const { return lib.substr(lib.rfind('/') + 1); }
  // qemu-user and the binutils for the ISA (support.h's, through a TestBinary of it).
  TestBinary as_test_binary() const { return {prog, flavor, exe, obj, flags, isa}; }
};

std::vector<SoBinary> so_manifest() {
  std::vector<SoBinary> v;
  std::ifstream f(std::string(TESTDATA_DIR) + "/so_manifest.txt");
  for (std::string line; std::getline(f, line);) {
    std::vector<std::string> p(1);
    for (char c : line)
      if (c == '|') p.emplace_back();
      else p.back().push_back(c);
    if (p.size() == 7) v.push_back({p[0], p[1], p[2], p[3], p[4], p[5], p[6]});
  }
  return v;
}

// Each library and executable prepared once per test run.
struct Prepared {
  std::string exe, lib;
  Proc exe_result, lib_result;
  bool lib_unchanged = false;
};

const Prepared& prepared(const SoBinary& b) {
  static TempDir scratch;
  static std::map<std::string, Prepared> cache;
  auto it = cache.find(b.lib);
  if (it != cache.end()) return it->second;
  Prepared p;
  p.exe = scratch / (b.name() + ".exe");
  p.lib = scratch / (b.name() + ".so");
  const std::string before = read_file(b.lib);
  p.lib_result = prepatch({b.lib, "-o", p.lib});
  p.lib_unchanged = read_file(b.lib) == before;
  p.exe_result = prepatch({b.exe, "-o", p.exe});
  return cache.emplace(b.lib, std::move(p)).first->second;
}

// What each program's functions must have been called, by the program's own account (basic prints
// its counters) or by construction (threads: 4 workers of 100,000 steps; many: each of 512 once).
std::map<std::string, unsigned long> expected_calls(const SoBinary& b, const std::string& out) {
  std::map<std::string, unsigned long> want{{"prepatch_program_main", 1}};
  if (b.prog == "basic") {
    static const std::regex calls(R"(([a-z]+)=([0-9]+))");
    const std::string line = out.substr(out.find("calls:"));
    for (std::sregex_iterator m(line.begin(), line.end(), calls), end; m != end; ++m)
      if ((*m)[1] != "main") want[(*m)[1]] = std::stoul((*m)[2]);
  } else if (b.prog == "threads") {
    want["worker"] = 4, want["step"] = 400000, want["mix"] = 400000;
  } else {
    for (int i = 1; i <= 8; i++)
      for (int j = 0; j < 64; j++) want["f" + std::to_string(i) + std::to_string(j / 8) + std::to_string(j % 8)] = 1;
  }
  return want;
}

class SharedMatrix : public ::testing::TestWithParam<SoBinary> {};

TEST_P(SharedMatrix, PreparesWithoutTouchingTheInputAndOnlyOnce) {
  const Prepared& p = prepared(GetParam());
  ASSERT_EQ(p.lib_result.status, 0) << p.lib_result.err;
  EXPECT_EQ(p.lib_result.err, "") << "no site may be skipped in a compiler-made library";
  EXPECT_TRUE(p.lib_unchanged);
  ASSERT_EQ(p.exe_result.status, 0) << p.exe_result.err;
  Proc again = prepatch({p.lib, "-o", p.lib + ".again"});
  EXPECT_EQ(again.status, 3);
  EXPECT_NE(again.err.find("already prepared"), std::string::npos) << again.err;
  EXPECT_FALSE(exists(p.lib + ".again"));
}

// The executable and the library, each as built or prepared: the same output and status, tracing off
// and with every site traced. One runtime serves every prepared object and counts exactly: each
// prepared object's calls, in its own section of the one counts file (the library's runtime with the
// program enrolled, when both are prepared); nothing is said on stderr.
TEST_P(SharedMatrix, AllFourCombinationsBehaveAsBuilt) {
  const SoBinary& b = GetParam();
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.lib_result.status, 0) << p.lib_result.err;
  ASSERT_EQ(p.exe_result.status, 0) << p.exe_result.err;
  TempDir d;
  const std::vector<std::string> args = b.prog == "basic" ? std::vector<std::string>{"12"} : std::vector<std::string>{};
  auto command = [&](const std::string& exe, const std::string& libdir, std::vector<std::string> env) {
    env.insert(env.begin(), "LD_LIBRARY_PATH=" + libdir);
    return with_env(env, b.as_test_binary().exec(exe, args));
  };
  for (const bool lib_prepared : {false, true}) {
    const std::string libdir = d / (lib_prepared ? "prepared" : "built");
    mkdir(libdir.c_str(), 0755);
    write_file(libdir + "/" + b.soname(), read_file(lib_prepared ? p.lib : b.lib), 0755);
  }
  Proc want = run(command(b.exe, d / "built", {}), d.path());
  ASSERT_NE(want.out.find(b.prog == "threads" ? "worker 3:" : b.prog == "many" ? "512 functions" : "calls:"), std::string::npos) << want.out << want.err;
  const auto calls = expected_calls(b, want.out);
  for (const bool exe_prepared : {false, true})
    for (const bool lib_prepared : {false, true}) {
      SCOPED_TRACE(std::string("executable ") + (exe_prepared ? "prepared" : "as built") + ", library " +
                   (lib_prepared ? "prepared" : "as built"));
      const std::string exe = exe_prepared ? p.exe : b.exe, libdir = d / (lib_prepared ? "prepared" : "built");
      Proc off = run(command(exe, libdir, {}), d.path());
      EXPECT_EQ(off.status, want.status);
      EXPECT_EQ(off.out, want.out);
      EXPECT_EQ(off.err, want.err);
      const std::string file = d / "counts";
      unlink(file.c_str());
      Proc on = run(command(exe, libdir, {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + file}), d.path());
      EXPECT_EQ(on.status, want.status);
      EXPECT_EQ(on.out, want.out);
      EXPECT_EQ(on.err, want.err) << "one runtime serves both objects: neither stands down";
      if (exe_prepared || lib_prepared) {  // (the library's binary, when the program's is given, is the one the file names)
        auto got = function_counts(exe_prepared ? p.exe : p.lib, file);
        if (exe_prepared) {
          EXPECT_EQ(got["main"], 1);
        }
        for (const auto& [function, n] : calls) {
          if (lib_prepared) {
            EXPECT_EQ(got[function], static_cast<long>(n)) << function;
          }
        }
      } else {
        EXPECT_FALSE(exists(file)) << "nothing prepared, nothing written";
      }
    }
}

TEST_P(SharedMatrix, EveryLibrarySiteIsOneNop) {
  const SoBinary& b = GetParam();
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.lib_result.status, 0) << p.lib_result.err;
  auto j = sites_json(p.lib);
  ASSERT_FALSE(j["sites"].empty());
  auto insns = objdump_insns(p.lib, b.as_test_binary().tool("objdump"));
  const std::string kind = b.has("-fpatchable-function-entry") ? "patchable" : b.has("-mfentry") ? "fentry" : "mcount";
  for (const auto& s : j["sites"]) {
    SCOPED_TRACE(s.dump());
    EXPECT_EQ(s["state"], "nop");
    EXPECT_EQ(s["kind"], kind);
    expect_off_form(insns, s["address"].get<unsigned long long>(), s["length"].get<unsigned>(), b.isa);
  }
}

TEST_P(SharedMatrix, LibrarySitesAreTheFunctionsTheCompilerInstrumented) {
  const SoBinary& b = GetParam();
  auto j = sites_json(b.lib);
  std::set<std::string> names;
  for (const auto& s : j["sites"]) names.insert(s["function"].get<std::string>());
  EXPECT_EQ(names, nm_functions(b.obj, b.as_test_binary().tool("nm")));
  EXPECT_EQ(names.size(), j["sites"].size()) << "one site per function";
  expect_sites_are_compiler_records(b.lib, j["sites"]);
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.lib_result.status, 0) << p.lib_result.err;
  expect_same_sites(sites_json(p.lib), j);
}

TEST_P(SharedMatrix, ReaderAgreesWithLiefOnTheLibrary) {
  const Prepared& p = prepared(GetParam());
  expect_agrees_with_lief(GetParam().lib);
  ASSERT_EQ(p.lib_result.status, 0) << p.lib_result.err;
  expect_agrees_with_lief(p.lib);
}

INSTANTIATE_TEST_SUITE_P(SoFlavors, SharedMatrix, ::testing::ValuesIn(so_manifest()), [](const auto& info) { return info.param.name(); });

TEST(SoManifest, CoversEveryProgramAndFlavor) { EXPECT_EQ(so_manifest().size(), 3u * (13u + 7u)); }

}  // namespace
}  // namespace prepatch::test
