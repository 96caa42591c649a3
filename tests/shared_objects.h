// What the shared-object tests share (tests/shared_object_test.cc, tests/unload_test.cc): the library
// they build, what its lib_work returns, and the plugin soak's programs.
#pragma once
#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "support.h"

namespace prepatch::test {

// A library: lib_work(n) calls leaf(i) for every i < n.
inline const char* lib_source = R"(
__attribute__((noinline)) int leaf(int x) { return x * 3 + 1; }
__attribute__((noinline)) int lib_work(int n) {
  int s = 0;
  for (int i = 0; i < n; i++) s += leaf(i);
  return s;
}
)";
// lib_work(n): the sum over i < n of 3i + 1.
inline long expected(long n) { return 3 * n * (n - 1) / 2 + n; }

inline void compile(const std::vector<std::string>& argv) {
  Proc cc = run(argv);
  ASSERT_EQ(cc.status, 0) << cc.err;
}

// The plugin soak (testdata/plugin_soak.c): testdata/plugin.c built -pg -mfentry and prepared as
// d/PREPARED; the soak (linked -rdynamic: the plugin calls it as it loads) as d/soak, without hooks
// (the plugin's runtime serves the process), and as d/soak.prepared, built -pg -mfentry and prepared (its own runtime serves, and the plugin
// enrolls with it each time it is loaded).
inline void build_soak(const TempDir& d, const std::string& prepared) {
  const std::string td = std::string(SOURCE_DIR) + "/testdata";
  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", td + "/plugin.c", "-o", d / "plugin.orig.so"});
  compile({"gcc", "-O2", "-rdynamic", "-I" + td, td + "/plugin_soak.c", "-o", d / "soak", "-pthread", "-ldl"});
  compile({"gcc", "-O2", "-pg", "-mfentry", "-rdynamic", "-I" + td, td + "/plugin_soak.c", "-o", d / "soak.hooks", "-pthread", "-ldl"});
  Proc p = prepatch({"-q", d / "plugin.orig.so", "-o", d / prepared});
  ASSERT_EQ(p.status, 0) << p.err;
  Proc h = prepatch({"-q", d / "soak.hooks", "-o", d / "soak.prepared"});
  ASSERT_EQ(h.status, 0) << h.err;
}

// The other ISAs' shared-object flavors, run under qemu-user: ISA, compiler, flags.
inline std::vector<std::vector<std::string>> other_isa_flavors() {
  return {{"aarch64", "aarch64-linux-gnu-gcc", "-pg"},
          {"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=2"},
          {"ppc64le", "powerpc64le-linux-gnu-gcc", "-pg"},
          {"riscv64", "riscv64-linux-gnu-gcc", "-pg"},
          {"riscv64", "riscv64-linux-gnu-gcc", "-fpatchable-function-entry=4"},
          {"arm", "arm-linux-gnueabihf-gcc", "-pg"}};
}
inline std::string other_isa_flavor_name(const ::testing::TestParamInfo<std::vector<std::string>>& info) {
  std::string n = info.param[0] + "_" + info.param[2];
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

}  // namespace prepatch::test
