// Tier 2: every testdata program in every site flavor, built at test-build time with gcc and clang,
// is prepared, run, and compared with the original and with independent oracles (nm, objdump, LIEF).
#include <LIEF/ELF.hpp>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "matrix_checks.h"
#include "support.h"

namespace prepatch::test {
namespace {

// Each binary is prepared once per test run; the tests below share the result.
struct Prepared {
  std::string out;
  Proc result;
  bool input_unchanged = false;
};

const TempDir& scratch() {
  static TempDir d;
  return d;
}

const Prepared& prepared(const TestBinary& b) {
  static std::map<std::string, Prepared> cache;
  auto it = cache.find(b.bin);
  if (it != cache.end()) return it->second;
  Prepared p;
  p.out = scratch() / b.name();
  std::string before = read_file(b.bin);
  p.result = prepatch({b.bin, "-o", p.out});
  p.input_unchanged = read_file(b.bin) == before;
  return cache.emplace(b.bin, std::move(p)).first->second;
}

class Matrix : public ::testing::TestWithParam<TestBinary> {};

TEST_P(Matrix, PreparesWithoutTouchingTheInput) {
  const Prepared& p = prepared(GetParam());
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  EXPECT_EQ(p.result.err, "") << "no site may be skipped in a compiler-made binary";
  EXPECT_TRUE(p.input_unchanged);
}

TEST_P(Matrix, PreparedBinaryBehavesTheSame) {
  const TestBinary& b = GetParam();
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  TempDir cwd;  // -pg binaries write gmon.out into their working directory
  Proc orig = run(b.exec(b.bin), cwd.path());
  Proc prep = run(b.exec(p.out), cwd.path());
  if (b.prog == "tablecheck") {
    // The one program that looks for the table: it must find it mapped, with every site in it.
    EXPECT_EQ(orig.out, "no table\n");
    size_t n = sites_json(p.out)["sites"].size();
    EXPECT_EQ(prep.out, "table: " + std::to_string(n) + " sites\n");
  } else {
    EXPECT_EQ(prep.out, orig.out);
  }
  EXPECT_EQ(prep.status, orig.status) << prep.err;
  EXPECT_EQ(prep.err, orig.err);
}

TEST_P(Matrix, EverySiteIsOneNopOfItsLength) {
  const TestBinary& b = GetParam();
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  auto j = sites_json(p.out);
  EXPECT_TRUE(j["prepared"].get<bool>());
  auto insns = objdump_insns(p.out, b.tool("objdump"));
  ASSERT_FALSE(j["sites"].empty());
  for (const auto& s : j["sites"]) {
    auto addr = s["address"].get<unsigned long long>();
    SCOPED_TRACE(s.dump());
    EXPECT_EQ(s["status"], "prepared");
    EXPECT_EQ(s["state"], "nop");
    unsigned len = s["length"];
    expect_off_form(insns, addr, len, b.isa);
    if (b.insn_len()) {
      EXPECT_EQ(len, b.insn_len());
    } else {
      EXPECT_TRUE(len == 5 || len == 6);
    }
    if (!b.isa.empty() && b.has("-pg")) {
      EXPECT_EQ(s["kind"], "mcount");
    }
    if (b.has("-mfentry")) {
      EXPECT_EQ(s["kind"], "fentry");
    }
    if (b.has("-fpatchable-function-entry")) {
      EXPECT_EQ(s["kind"], "patchable");
      // AArch64: the pad's first nop is now the permanent `mov x9, x30` that hands the trampoline the
      // return address (the kernel's layout).
      if (b.isa == "aarch64") {
        auto ctx = insns.find(addr - 4);
        ASSERT_NE(ctx, insns.end());
        EXPECT_EQ(ctx->second.mnemonic, "mov");
      }
      // Thumb-2: the pad's first nop is now the permanent `push {lr}` that the trampoline (or the off
      // form, `pop {lr}`) undoes, as at a -pg site; the site follows it.
      if (b.isa == "arm") {
        auto ctx = insns.find(addr - 2);
        ASSERT_NE(ctx, insns.end());
        EXPECT_EQ(ctx->second.mnemonic, "push");
        EXPECT_EQ(ctx->second.length, 2u);
      }
      // RISC-V: the permanent `auipc t0, hi` of the call pair, 4 bytes before the site.
      if (b.isa == "riscv64") {
        auto ctx = insns.find(addr - 4);
        ASSERT_NE(ctx, insns.end());
        EXPECT_EQ(ctx->second.mnemonic, "auipc");
        // =5 leaves 2 spare bytes: the site moves to a 4-byte boundary.
        if (b.has("-fpatchable-function-entry=5")) {
          EXPECT_EQ(addr % 4, 0u);
        }
      }
      // The rest of a long pad is one permanent nop, not a run of one-byte nops.
      auto next = insns.find(addr + len);
      if (b.has("-fpatchable-function-entry=9")) {
        ASSERT_NE(next, insns.end());
        EXPECT_EQ(next->second.length, 4u);
        EXPECT_EQ(next->second.mnemonic.substr(0, 3), "nop");
      }
    }
  }
}

TEST_P(Matrix, SitesAreTheFunctionsTheCompilerInstrumented) {
  const TestBinary& b = GetParam();
  auto j = sites_json(b.bin);
  std::set<std::string> names;
  for (const auto& s : j["sites"]) {
    EXPECT_EQ(s["status"], "preparable") << s.dump();
    names.insert(s["function"].get<std::string>());
  }
  EXPECT_EQ(names, nm_functions(b.obj, b.tool("nm")));
  EXPECT_EQ(names.size(), j["sites"].size()) << "one site per function";

  // Where the compiler recorded its sites, the list must be that record (read by LIEF, not by us).
  expect_sites_are_compiler_records(b.bin, j["sites"]);

  // The prepared binary lists the same sites.
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  expect_same_sites(sites_json(p.out), j);
}

TEST_P(Matrix, PreparingTwiceIsRefused) {
  const Prepared& p = prepared(GetParam());
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  std::string again = p.out + ".again";
  Proc r = prepatch({p.out, "-o", again});
  EXPECT_EQ(r.status, 3);
  EXPECT_NE(r.err.find("already prepared"), std::string::npos) << r.err;
  EXPECT_FALSE(exists(again));
}

TEST_P(Matrix, ReaderAgreesWithLief) {
  const Prepared& p = prepared(GetParam());
  expect_agrees_with_lief(GetParam().bin);
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  expect_agrees_with_lief(p.out);
}

INSTANTIATE_TEST_SUITE_P(AllFlavors, Matrix, ::testing::ValuesIn(manifest()),
                         [](const auto& info) { return info.param.name(); });

// -fpatchable-function-entry=N,M with M > 0, stripped: the record names the first of the M nops
// before the entry, and no symbol says where the entry is, so discovery reads it from the unwind
// tables' search table (.eh_frame_hdr; ARM32's .ARM.exidx). Before, the site went at the record: into
// nops that never run (AArch64, Thumb-2: nothing counted), or across the entry (x86-64: the prepared
// program crashed). The stripped build's sites are the unstripped one's, and are counted exactly:
// through .eh_frame_hdr (x86-64; clang's AArch64 CFI, which starts at the entry), .eh_frame itself
// (linked without .eh_frame_hdr), .ARM.exidx (-funwind-tables), and the end of the nops where gcc's
// CFI starts after them (AArch64, PPC64le) or there is none (ARM32 and RISC-V64 by default). Where
// the entry is followed by more nops than the site needs (N - M = 4), those two ways would put it apart.
class StrippedPad : public ::testing::TestWithParam<CrossBuild> {};

TEST_P(StrippedPad, TheEntryComesFromTheUnwindTable) {
  const CrossBuild& p = GetParam();
  const TestBinary bin{.isa = p.isa};
  TempDir d;
  write_file(d / "p.c", "#include <stdio.h>\n#include <stdlib.h>\n"
                        "__attribute__((noinline)) int g(int i) { return i * 3 + 1; }\n"
                        "__attribute__((noinline)) int h(int i) { return g(i) + 2; }\n"
                        "int main(int argc, char** argv) { int n = atoi(argv[1]), s = 0;\n"
                        "  for (int i = 0; i < n; i++) s += h(i);\n  printf(\"%d\\n\", s); return 0; }\n");
  Proc c = run(cc_command(p.cc, p.flags, d / "p.c", d / "p"));
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({bin.tool("strip"), "-o", d / "s", d / "p"});
  ASSERT_EQ(c.status, 0) << c.err;
  const nlohmann::json named = nlohmann::json::parse(prepatch({"sites", "--json", d / "p"}).out)["sites"];
  const nlohmann::json bare = nlohmann::json::parse(prepatch({"sites", "--json", d / "s"}).out)["sites"];
  ASSERT_EQ(bare.size(), named.size()) << bare.dump(1);
  std::map<long, long> expect;  // address -> count
  for (size_t i = 0; i < named.size(); i++) {
    EXPECT_EQ(bare[i]["address"], named[i]["address"]) << named[i].dump();
    EXPECT_EQ(bare[i]["status"], named[i]["status"]) << named[i].dump();
    const std::string f = named[i]["function"];
    if (named[i]["status"] == "preparable") expect[named[i]["address"]] = f == "main" ? 1 : f == "g" || f == "h" ? 5 : 0;
  }
  EXPECT_NE(expect.size(), 0u) << named.dump(1);
  Proc r = prepatch({d / "s", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  // The prepared output reads back with the same sites (its entries now begin with the site's form).
  const nlohmann::json again = nlohmann::json::parse(prepatch({"sites", "--json", d / "out"}).out)["sites"];
  ASSERT_EQ(again.size(), bare.size()) << again.dump(1);
  for (size_t i = 0; i < again.size(); i++) {
    EXPECT_EQ(again[i]["address"], bare[i]["address"]) << again[i].dump();
  }
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"5"})));
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "45\n");
  Proc counts = prepatch({"counts", "--json", d / "out", d / "c"});
  ASSERT_EQ(counts.status, 0) << counts.err;
  std::map<long, long> got;
  for (const auto& row : nlohmann::json::parse(counts.out)) got[row["address"]] = row["count"];
  for (auto& [addr, n] : expect) {
    if (!got.count(addr)) got[addr] = 0;  // (a site never called is not listed)
  }
  EXPECT_EQ(got, expect) << counts.out;
}

INSTANTIATE_TEST_SUITE_P(Isas, StrippedPad,
                         ::testing::Values(CrossBuild{"", "gcc", "-fpatchable-function-entry=8,3"},
                                           CrossBuild{"", "clang", "-fpatchable-function-entry=8,3"},
                                           CrossBuild{"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=5,3"},
                                           CrossBuild{"aarch64", "clang", "--target=aarch64-linux-gnu -fpatchable-function-entry=6,2"},
                                           CrossBuild{"aarch64", "clang", "--target=aarch64-linux-gnu -fpatchable-function-entry=6,2 -Wl,--no-eh-frame-hdr"},
                                           CrossBuild{"ppc64le", "powerpc64le-linux-gnu-gcc", "-fpatchable-function-entry=4,2 -static"},
                                           CrossBuild{"riscv64", "riscv64-linux-gnu-gcc", "-fpatchable-function-entry=6,2"},
                                           CrossBuild{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=5,2"},
                                           CrossBuild{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=6,2 -funwind-tables"}),
                         [](const auto& i) { return test_name(i.param.name() + "_" + i.param.cc); });

// A GNU C nested function reads its parent's variables through the static chain register (x86-64
// %r10, AArch64 x18, PPC64le r11, RISC-V64 t2, ARM32 ip), live at its entry, where the site is. Each
// tracer must leave it as it was: the program computes the same traced. Before, two did not:
// - x86-64 -mfentry: gcc saves %r10 around the call (`push %r10; call __fentry__; pop %r10`), so the
//   graph tracer replaced the saved %r10 instead of the return address (now both become nops:
//   Site::saves_chain, and the trampolines keep %r10);
// - Thumb-2 patchable sites: the trampoline returned through ip (now it keeps ip and returns by `pop {pc}`);
//   beyond a bl's reach of it (-DFAR: a 32 MiB .bss), the branch island after the text wrote ip too
//   (now it goes through the stack: thumb2.h encode_island).
class NestedFunction : public ::testing::TestWithParam<CrossBuild> {};

TEST_P(NestedFunction, TheStaticChainSurvivesEveryTracer) {
  const CrossBuild& p = GetParam();
  const TestBinary bin{.isa = p.isa};
  TempDir d;
  write_file(d / "n.c", "#include <stdio.h>\n#include <stdlib.h>\n"
                        "__attribute__((noinline)) int outer(int n) {\n  int base = n * 10;\n"
                        "  __attribute__((noinline)) int inner(int k) { return base + k; }\n"
                        "  int s = 0;\n  for (int i = 0; i < n; i++) s += inner(i);\n  return s;\n}\n"
                        "#ifdef FAR\nchar big[32 << 20];  /* between the text and the shim */\n#endif\n"
                        "int main(int argc, char** argv) { printf(\"%d\\n\", outer(atoi(argv[1]))); return 0; }\n");
  Proc c = run(cc_command(p.cc, p.flags, d / "n.c", d / "n"));
  ASSERT_EQ(c.status, 0) << c.err;
  Proc r = prepatch({d / "n", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  if (p.flags.find("-DFAR") != std::string::npos) {
    EXPECT_NE(r.err.find("call it through a branch island at vaddr"), std::string::npos) << r.err;
  }
  EXPECT_NE(prepatch({"sites", d / "out"}).out.find("prepared   inner"), std::string::npos);
  for (const std::string tracer : {"count", "function", "graph"}) {
    SCOPED_TRACE(tracer);
    Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=" + tracer, "PREPATCH_COUNTS=" + d / "c", "PREPATCH_OUTPUT=" + d / "t"},
                          bin.exec(d / "out", {"5"})));
    EXPECT_EQ(t.status, 0) << t.err;
    EXPECT_EQ(t.out, "260\n");  // 5 * 50 + 0 + 1 + 2 + 3 + 4
  }
  Proc g = prepatch({"report", d / "t"});  // the graph trace: inner() called 5 times
  EXPECT_TRUE(std::regex_search(g.out, std::regex(" 5 +inner"))) << g.out;
}

INSTANTIATE_TEST_SUITE_P(Isas, NestedFunction,
                         ::testing::Values(CrossBuild{"", "gcc", "-pg -mfentry"}, CrossBuild{"", "gcc", "-pg -mfentry -mnop-mcount -mrecord-mcount -fno-pie -no-pie"},
                                           CrossBuild{"", "gcc", "-fpatchable-function-entry=5"},
                                           CrossBuild{"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=2"},
                                           CrossBuild{"ppc64le", "powerpc64le-linux-gnu-gcc", "-pg"},
                                           CrossBuild{"riscv64", "riscv64-linux-gnu-gcc", "-fpatchable-function-entry=4"},
                                           CrossBuild{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=3"},
                                           CrossBuild{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=3 -DFAR"},
                                           CrossBuild{"arm", "arm-linux-gnueabihf-gcc", "-pg"}),
                         [](const auto& i) { return i.param.name(); });

TEST(Manifest, CoversEveryProgramAndFlavor) {
  // A typo in tests/CMakeLists.txt must not silently shrink the matrix to nothing.
  EXPECT_GE(manifest().size(), 4u * 20u);
}

}  // namespace
}  // namespace prepatch::test
