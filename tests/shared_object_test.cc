// Shared objects (x86-64): a prepared library starts its own copy of the shim from DT_INIT, so an
// unprepared program that loads it (linked against it, or by dlopen, or Debian's own python3 importing
// an extension module) gets tracing; one runtime per process; the library's interface unchanged; what
// cannot carry the shim refused with a reason.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>
#include <unistd.h>

#include "rewriter/names.h"
#include "shim/abi.h"
#include "shared_objects.h"
#include "support.h"
#include "trace/trace.h"

namespace prepatch::test {
namespace {

// readelf's view of the dynamic section, one line per entry, without the file name.
std::vector<std::string> dynamic_entries(const std::string& so) {
  std::istringstream lines(run({"readelf", "-dW", so}).out);
  std::vector<std::string> out;
  for (std::string l; std::getline(lines, l);)
    if (l.find("0x") != std::string::npos && l.find("Dynamic section") == std::string::npos) out.push_back(l);
  return out;
}

// Two copies of one prepared plugin (one.so, two.so) and an unprepared host that dlopens them in turn
// and calls each one's lib_work(100).
struct TwoPlugins {
  TempDir d;
  TwoPlugins() {
    write_file(d / "plugin.c", lib_source);
    write_file(d / "host.c", R"(
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  long total = 0;
  for (int i = 1; i < argc; i++) {
    void* h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return printf("dlopen: %s\n", dlerror()), 1;
    total += ((int (*)(int))dlsym(h, "lib_work"))(100);
  }
  printf("%ld\n", total);
  return 0;
}
)");
    for (const char* name : {"one", "two"})
      compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "plugin.c", "-o", d / (std::string(name) + ".orig.so")});
    compile({"gcc", "-O2", d / "host.c", "-o", d / "host", "-ldl"});
    for (const char* name : {"one", "two"})
      EXPECT_EQ(prepatch({"-q", d / (std::string(name) + ".orig.so"), "-o", d / (std::string(name) + ".so")}).status, 0);
  }
  // The host loading one.so then two.so, with `env` set.
  Proc run(std::vector<std::string> env) const {
    env.insert(env.begin(), "env");
    for (const std::string& a : {d / "host", d / "one.so", d / "two.so"}) env.push_back(a);
    return test::run(env);
  }
};

// A library built -pg -mfentry, and a program built without hooks that is linked against it.
struct Linked {
  TempDir d;
  std::string lib = d / "libwork.so", orig = d / "libwork.orig.so", main = d / "main";
  Linked() {
    write_file(d / "lib.c", lib_source);
    write_file(d / "main.c",
               "#include <stdio.h>\n#include <stdlib.h>\nint lib_work(int);\n"
               "int main(int argc, char** argv) { printf(\"%d\\n\", lib_work(atoi(argv[1]))); return 0; }\n");
    compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", "-Wl,-soname,libwork.so", d / "lib.c", "-o", orig});
    compile({"gcc", "-O2", d / "main.c", "-L" + d.path(), "-l:libwork.orig.so", "-Wl,-rpath,$ORIGIN", "-o", main});
    // The program asks for the SONAME, libwork.so: the prepared copy.
    Proc p = prepatch({orig, "-o", lib});
    EXPECT_EQ(p.status, 0) << p.err;
    EXPECT_NE(p.out.find("prepared 2 sites"), std::string::npos) << p.out;
  }
};

TEST(SharedObject, AnUnpreparedProgramGetsTracingFromAPreparedLibrary) {
  Linked t;
  const std::string want = std::to_string(expected(1000)) + "\n";
  Proc plain = run({t.main, "1000"});
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_EQ(plain.out, want);
  EXPECT_EQ(plain.err, "");

  Proc traced = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + t.d / "c", t.main, "1000"});
  ASSERT_EQ(traced.status, 0) << traced.err;
  EXPECT_EQ(traced.out, want);
  auto c = function_counts(t.lib, t.d / "c");
  EXPECT_EQ(c["leaf"], 1000);
  EXPECT_EQ(c["lib_work"], 1);

  Proc one = run({"env", "PREPATCH_TRACE=leaf", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + t.d / "t", t.main, "5"});
  ASSERT_EQ(one.status, 0) << one.err;
  Proc rep = prepatch({"replay", t.d / "t"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  size_t leaves = 0;
  for (size_t at = rep.out.find("leaf() <- lib_work"); at != std::string::npos; at = rep.out.find("leaf()", at + 1)) leaves++;
  EXPECT_EQ(leaves, 5u) << rep.out;
  EXPECT_EQ(rep.out.find("lib_work()"), std::string::npos) << "not selected: " << rep.out;

  // The library's interface is the same: its dynamic symbols, SONAME, needed libraries; only DT_INIT
  // and DT_FINI now lead to the shim.
  EXPECT_EQ(run({"nm", "-D", t.lib}).out, run({"nm", "-D", t.orig}).out);
  Proc abi = run({"abidiff", t.orig, t.lib});  // Debian's abigail-tools: 0 = no ABI change
  EXPECT_EQ(abi.status, 0) << abi.out << abi.err;
  auto a = dynamic_entries(t.orig), b = dynamic_entries(t.lib);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); i++)
    if (a[i].find("(INIT)") == std::string::npos && a[i].find("(FINI)") == std::string::npos) EXPECT_EQ(a[i], b[i]);
    else EXPECT_NE(a[i], b[i]);
  Proc sites = prepatch({"sites", t.lib});
  EXPECT_NE(sites.out.find("2 sites (0 skipped); prepared binary"), std::string::npos) << sites.out;
  // ldd and objdump read it as they read the input: the same libraries, the same functions' code but
  // for the sites.
  const auto libraries = [](const std::string& so) {
    std::string out;
    std::istringstream lines(run({"ldd", so}).out);
    for (std::string l; std::getline(lines, l);) out += l.substr(0, l.find(" (0x")) + "\n";  // without load addresses
    return out;
  };
  EXPECT_EQ(libraries(t.lib), libraries(t.orig));
  Proc dump = run({"objdump", "-d", "--no-show-raw-insn", t.lib});
  EXPECT_EQ(dump.status, 0) << dump.err;
  EXPECT_NE(dump.out.find("<lib_work>:"), std::string::npos) << dump.out.substr(0, 2000);
}

// The graph tracer across objects: an unprepared C++ program calls a prepared library, which calls
// back into the program, which calls into the library again; exceptions thrown in the library pass
// through the program's frames and are caught in either object. Each function's entries equal the
// calls the library counted itself, and the frames unwound equal what a model of the program says;
// also with the library loaded by dlopen.
TEST(SharedObject, GraphTracesExceptionsAndCallbacksAcrossTheProgramAndALibrary) {
  TempDir d;
  write_file(d / "lib.cc", R"(
#include <stdexcept>
unsigned long n_thrower, n_middle, n_top, n_escape;
__attribute__((noinline)) int thrower(int x) { n_thrower++; if (x > 3) throw std::runtime_error("deep"); return x; }
__attribute__((noinline)) int middle(int x, int (*cb)(int)) { n_middle++; return thrower(cb(x)) + 1; }
__attribute__((noinline)) int top(int x, int (*cb)(int)) {
  n_top++;
  try { return middle(x, cb); } catch (const std::exception&) { return -1; }
}
__attribute__((noinline)) int escape(int x, int (*cb)(int)) { n_escape++; return middle(x, cb) * 2; }
)");
  write_file(d / "main.cc", R"(
#include <cstdio>
#include <stdexcept>
extern unsigned long n_thrower, n_middle, n_top, n_escape;
int top(int, int (*)(int));
int escape(int, int (*)(int));
int middle(int, int (*)(int));
__attribute__((noinline)) int cb(int x) { return x + 1; }
__attribute__((noinline)) int cb_reenter(int x) { return middle(x + 1, cb); }
int main() {
  long s = 0;
  for (int i = 0; i < 1000; i++) {
    s += top(i % 6, cb);
    try { s += escape(i % 6, cb); } catch (const std::runtime_error&) { s += 1000; }
    try { s += escape(i % 6, cb_reenter); } catch (const std::runtime_error&) { s += 7; }
  }
  printf("%ld thrower=%lu middle=%lu top=%lu escape=%lu\n", s, n_thrower, n_middle, n_top, n_escape);
}
)");
  compile({"g++", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", "-Wl,-soname,libexc.so", d / "lib.cc", "-o", d / "libexc.orig.so"});
  compile({"g++", "-O2", d / "main.cc", d / "libexc.orig.so", "-o", d / "main"});
  const std::string built = d / "built", prepared = d / "prepared";
  for (const std::string& dir : {built, prepared}) mkdir(dir.c_str(), 0755);
  write_file(built + "/libexc.so", read_file(d / "libexc.orig.so"));
  ASSERT_EQ(prepatch({"-q", d / "libexc.orig.so", "-o", prepared + "/libexc.so"}).status, 0);
  Proc want = run({"env", "LD_LIBRARY_PATH=" + built, d / "main"});
  ASSERT_EQ(want.status, 0) << want.err;
  Proc r = run({"env", "LD_LIBRARY_PATH=" + prepared, "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace", d / "main"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, want.out);
  EXPECT_EQ(r.err, "");

  // The frames each throw leaves (callbacks are the program's, untraced): thrown where x > 3.
  unsigned long unwound = 0;
  for (int i = 0; i < 1000; i++) {
    const int v = i % 6;
    if (v + 1 > 3) unwound += 2 + 3;  // top: thrower, middle (caught in top); escape: those and escape
    if (v + 2 > 3) unwound += 4;      // escape -> middle -> cb_reenter -> middle -> thrower
    else if (v + 3 > 3) unwound += 3;  // the inner middle returns v + 3: the outer thrower throws
  }
  trace::Trace t = trace::read_trace(d / "t.trace");
  ASSERT_TRUE(t.problems.empty()) << t.problems[0];
  EXPECT_EQ(t.lost, 0u);
  EXPECT_EQ(t.unwound, unwound);
  // Entries per function (the demangled name up to its parameters) against the library's counters.
  std::map<std::string, unsigned long> entries, counted;
  for (const auto& th : t.threads)
    for (const auto& e : th.events)
      if (e.type == shim::rec_entry) {
        const std::string shown = shown_name(t.names[e.site]);
        entries[shown.substr(0, shown.find('('))]++;
      }
  std::istringstream words(want.out.substr(want.out.find(' ') + 1));
  for (std::string w; words >> w;) counted[w.substr(0, w.find('='))] = std::stoul(w.substr(w.find('=') + 1));
  EXPECT_EQ(counted.size(), 4u) << want.out;
  EXPECT_EQ(entries, counted);

  // The program prepared too: one runtime (the library's) traces both objects into one file; the
  // callbacks are traced frames now, which the exceptions unwind too, and every function is named.
  compile({"g++", "-O2", "-pg", "-mfentry", d / "main.cc", d / "libexc.orig.so", "-o", d / "main.pg"});
  ASSERT_EQ(prepatch({"-q", d / "main.pg", "-o", d / "main.prepared"}).status, 0);
  Proc both = run({"env", "LD_LIBRARY_PATH=" + prepared, "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "both.trace",
                   d / "main.prepared"});
  ASSERT_EQ(both.status, 0) << both.err;
  EXPECT_EQ(both.out, want.out);
  EXPECT_EQ(both.err, "");
  unsigned long unwound_both = 0;
  for (int i = 0; i < 1000; i++) {
    const int v = i % 6;
    if (v + 1 > 3) unwound_both += 2 + 3;
    if (v + 2 > 3) unwound_both += 5;  // escape -> middle -> cb_reenter (traced now) -> middle -> thrower
    else if (v + 3 > 3) unwound_both += 3;
  }
  trace::Trace tb = trace::read_trace(d / "both.trace");
  ASSERT_TRUE(tb.problems.empty()) << tb.problems[0];
  EXPECT_EQ(tb.lost, 0u);
  EXPECT_EQ(tb.unwound, unwound_both);
  std::map<std::string, unsigned long> entries_both;
  for (const auto& th : tb.threads)
    for (const auto& e : th.events)
      if (e.type == shim::rec_entry) {
        const std::string shown = shown_name(tb.names[e.site]);
        entries_both[shown.substr(0, shown.find('('))]++;
      }
  for (const auto& [f, n] : counted) EXPECT_EQ(entries_both[f], n) << f;
  EXPECT_EQ(entries_both["main"], 1u);
  EXPECT_EQ(entries_both["cb"], 3000u) << "top's, escape's and the inner middle's under cb_reenter";
  EXPECT_GT(entries_both["cb_reenter"], 0u);
  Proc rep = prepatch({"report", d / "both.trace"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  for (const char* f : {" main\n", " cb(int)\n", " thrower(int)\n"}) EXPECT_NE(rep.out.find(f), std::string::npos) << f << rep.out;

  // The same library loaded by dlopen: its runtime starts then, after the C++ runtime it needs, and
  // still follows the exceptions (top catches its own; escape's reach the host).
  write_file(d / "host.cc", R"(
#include <dlfcn.h>
#include <cstdio>
#include <stdexcept>
__attribute__((noinline)) int cb(int x) { return x + 1; }
int main(int argc, char** argv) {
  void* h = dlopen(argv[1], RTLD_NOW);
  if (!h) return printf("%s\n", dlerror()), 1;
  auto top = (int (*)(int, int (*)(int)))dlsym(h, "_Z3topiPFiiE");
  auto escape = (int (*)(int, int (*)(int)))dlsym(h, "_Z6escapeiPFiiE");
  long s = 0;
  for (int i = 0; i < 1000; i++) {
    s += top(i % 6, cb);
    try { s += escape(i % 6, cb); } catch (const std::runtime_error&) { s += 1000; }
  }
  printf("%ld\n", s);
}
)");
  compile({"g++", "-O2", d / "host.cc", "-o", d / "host", "-ldl"});
  Proc want_dl = run({d / "host", built + "/libexc.so"});
  ASSERT_EQ(want_dl.status, 0) << want_dl.out << want_dl.err;
  Proc dl = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "dl.trace", d / "host", prepared + "/libexc.so"});
  ASSERT_EQ(dl.status, 0) << dl.err;
  EXPECT_EQ(dl.out, want_dl.out);
  trace::Trace td = trace::read_trace(d / "dl.trace");
  ASSERT_TRUE(td.problems.empty()) << td.problems[0];
  unsigned long unwound_dl = 0;
  for (int i = 0; i < 1000; i++)
    if (i % 6 + 1 > 3) unwound_dl += 2 + 3;
  EXPECT_EQ(td.unwound, unwound_dl);
}

// An object loaded later that starts threads: the GOT slot through which it calls pthread_create is
// hooked as it enrolls, so its threads get alternate signal stacks too (`ctl status` counts the slot).
TEST(SharedObject, ThreadsOfAnObjectLoadedLaterGetSignalStacks) {
  TempDir d;
  write_file(d / "plain.c", lib_source);
  write_file(d / "threads.c", R"(
#include <pthread.h>
static void* run(void* a) { return a; }
__attribute__((noinline)) int lib_work(int n) { pthread_t t; pthread_create(&t, 0, run, 0); pthread_join(t, 0); return n; }
)");
  write_file(d / "host.c", R"(
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char** argv) {
  for (int i = 2; i < argc; i++) {
    void* h = dlopen(argv[i], RTLD_NOW);
    if (!h) return printf("dlopen: %s\n", dlerror()), 1;
    ((int (*)(int))dlsym(h, "lib_work"))(3);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s ctl %d status | grep '^signal stacks'", argv[1], (int)getpid());
    if (system(cmd) != 0) return 2;
  }
  return 0;
}
)");
  for (const char* name : {"plain", "threads"}) {
    compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / (std::string(name) + ".c"), "-o", d / (std::string(name) + ".orig.so"), "-pthread"});
    ASSERT_EQ(prepatch({"-q", d / (std::string(name) + ".orig.so"), "-o", d / (std::string(name) + ".so")}).status, 0);
  }
  compile({"gcc", "-O2", d / "host.c", "-o", d / "host", "-ldl"});
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "host", PREPATCH_BIN, d / "plain.so", d / "threads.so"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "signal stacks: the starting thread's\n"
                   "signal stacks: the starting thread's, and every thread's started through pthread_create (1 GOT slots hooked)\n");
  EXPECT_EQ(function_counts(d / "threads.so", d / "c")["threads.so:lib_work"], 1);
}

// A small object's runtime serves the process with every site on; a large one (3,000 functions)
// enrolls and follows: the site hash grows to take its sites (a new block, published in one store),
// and every call of either is counted exactly.
TEST(SharedObject, TheSiteHashGrowsAsALargeObjectEnrolls) {
  TempDir d;
  write_file(d / "small.c", lib_source);
  std::string big = "#include <stddef.h>\n";
  for (int i = 0; i < 3000; i++) big += "__attribute__((noinline)) long f" + std::to_string(i) + "(long x) { return x * 3 + " + std::to_string(i) + "; }\n";
  big += "static long (*const table[])(long) = {\n";
  for (int i = 0; i < 3000; i++) big += "f" + std::to_string(i) + ",\n";
  big += "};\nlong big_work(long x) { for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) x = table[i](x) % 1000003; return x; }\n";
  write_file(d / "big.c", big);
  write_file(d / "host.c", R"(
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  void* s = dlopen(argv[1], RTLD_NOW);
  if (!s) return printf("dlopen: %s\n", dlerror()), 1;
  long total = ((int (*)(int))dlsym(s, "lib_work"))(100);
  void* b = dlopen(argv[2], RTLD_NOW);
  if (!b) return printf("dlopen: %s\n", dlerror()), 1;
  long (*work)(long) = (long (*)(long))dlsym(b, "big_work");
  total += work(1) + work(2);
  printf("%ld\n", total);
  return 0;
}
)");
  for (const char* name : {"small", "big"}) {
    compile({"gcc", "-O1", "-pg", "-mfentry", "-fPIC", "-shared", d / (std::string(name) + ".c"), "-o", d / (std::string(name) + ".orig.so")});
    ASSERT_EQ(prepatch({"-q", d / (std::string(name) + ".orig.so"), "-o", d / (std::string(name) + ".so")}).status, 0);
  }
  compile({"gcc", "-O2", d / "host.c", "-o", d / "host", "-ldl"});
  Proc want = run({d / "host", d / "small.orig.so", d / "big.orig.so"});
  ASSERT_EQ(want.status, 0) << want.out;
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "host", d / "small.so", d / "big.so"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, want.out);
  EXPECT_EQ(r.err, "");
  auto c = function_counts(d / "big.so", d / "c");
  EXPECT_EQ(c["leaf"], 100);
  EXPECT_EQ(c["lib_work"], 1);
  EXPECT_EQ(c["big_work"], 2);
  int exact = 0;
  for (int i = 0; i < 3000; i++) exact += c["f" + std::to_string(i)] == 2;
  EXPECT_EQ(exact, 3000);
}

// A site hash in address order is judged again when an object enrolls while it still has room (the
// same 4,096 slots before and after). The program's 1,500 functions lie 256 bytes apart, so the hash
// gives a slot per 128 bytes of its text. A library whose 100 functions lie as far apart keeps address
// order; one whose functions are packed 16 bytes apart would home 8 sites in each of its slots and
// probe far past them, so the hash turns scattered. Every function is counted once either way.
TEST(SharedObject, AnOrderedSiteHashIsJudgedAgainWhenAnObjectEnrolls) {
  TempDir d;
  const auto functions = [](const std::string& prefix, int n, const char* attrs) {
    std::string src;
    for (int i = 0; i < n; i++)
      src += std::string("__attribute__((noinline") + attrs + ")) long " + prefix + std::to_string(i) + "(long x) { return x + " + std::to_string(i) + "; }\n";
    return src;
  };
  std::string host = "#include <dlfcn.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n" + functions("f", 1500, ", aligned(256)");
  host += "int main(int argc, char** argv) {\n  long sum = 0;\n";
  for (int i = 0; i < 1500; i++) host += "  sum += f" + std::to_string(i) + "(1);\n";
  host += R"(  void* lib = dlopen(argv[2], RTLD_NOW);
  if (!lib) return printf("dlopen: %s\n", dlerror()), 1;
  sum += ((long (*)(long))dlsym(lib, "lib_all"))(1);
  fflush(stdout);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s ctl %d status | grep '^site hash'", argv[1], (int)getpid());
  if (system(cmd) != 0) return 2;
  printf("%ld\n", sum);
  return 0;
}
)";
  write_file(d / "host.c", host);
  compile({"gcc", "-O1", "-fpatchable-function-entry=5", d / "host.c", "-o", d / "host.orig", "-ldl"});
  ASSERT_EQ(prepatch({"-q", d / "host.orig", "-o", d / "host"}).status, 0);
  for (const bool packed : {false, true}) {
    std::string lib = functions("g", 100, packed ? "" : ", aligned(256)") + "long lib_all(long x) {\n  long sum = 0;\n";
    for (int i = 0; i < 100; i++) lib += "  sum += g" + std::to_string(i) + "(x);\n";
    lib += "  return sum;\n}\n";
    write_file(d / "lib.c", lib);
    compile({"gcc", "-O1", "-fpatchable-function-entry=5", "-fPIC", "-shared", d / "lib.c", "-o", d / "lib.orig.so"});
    ASSERT_EQ(prepatch({"-q", d / "lib.orig.so", "-o", d / "lib.so"}).status, 0);
    Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "host", PREPATCH_BIN, d / "lib.so"});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    // 1,500 + 1,124,250 (f), 100 + 4,950 (g)
    const std::string sum = "\n1130800\n";
    if (packed) {
      EXPECT_EQ(r.out, "site hash: 1602 of 4096 slots taken, scattered (the sites crowd too closely in places for address order)" + sum);
    } else {
      EXPECT_EQ(r.out, "site hash: 1602 of 4096 slots taken, in address order, a slot per 128 bytes of text" + sum);
    }
    EXPECT_EQ(r.err, "");
    auto c = function_counts(d / "host", d / "c");  // (the file has both objects' sections)
    int once = 0;
    for (int i = 0; i < 1500; i++) once += c["f" + std::to_string(i)] == 1;
    for (int i = 0; i < 100; i++) once += c["g" + std::to_string(i)] == 1;
    EXPECT_EQ(once, 1600) << packed;
  }
}

// A prepared program linked against a prepared library: one runtime serves both (the library's, whose
// DT_INIT runs first; the program enrolls with it at its entry and follows PREPATCH_TRACE), one counts
// file holds both objects' sections with their tables, and `prepatch counts` reads them given no
// binary, the program alone, or both (checked against the file).
TEST(SharedObject, OneRuntimeServesTheProgramAndTheLibrary) {
  Linked t;
  compile({"gcc", "-O2", "-pg", "-mfentry", t.d / "main.c", "-L" + t.d.path(), "-l:libwork.orig.so", "-Wl,-rpath,$ORIGIN", "-o", t.d / "main.pg"});
  ASSERT_EQ(prepatch({"-q", t.d / "main.pg", "-o", t.d / "main.both"}).status, 0);
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + t.d / "c", t.d / "main.both", "10"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(expected(10)) + "\n");
  EXPECT_EQ(r.err, "");
  for (const std::vector<std::string>& binaries : {std::vector<std::string>{t.d / "main.both"}, {t.lib, t.d / "main.both"}, {}}) {
    SCOPED_TRACE(binaries.size());
    std::vector<std::string> args = {"counts", "--json"};
    args.insert(args.end(), binaries.begin(), binaries.end());
    args.push_back(t.d / "c");
    Proc c = prepatch(args);
    ASSERT_EQ(c.status, 0) << c.err;
    std::map<std::string, long> n;
    std::set<std::string> objects;
    for (const auto& row : nlohmann::json::parse(c.out)) n[row["function"]] = row["count"], objects.insert(row["object"]);
    EXPECT_EQ(n["main"], 1);
    EXPECT_EQ(n["lib_work"], 1);
    EXPECT_EQ(n["leaf"], 10);
    EXPECT_EQ(objects, (std::set<std::string>{"libwork.so", "main.both"}));
  }
  Proc plain = run({t.d / "main.both", "10"});
  EXPECT_EQ(plain.out, r.out);
  EXPECT_EQ(plain.err, "") << "a process that asked for no tracing hears nothing of it";
}

// The same with the program's 3 GiB .bss between its text and its shim: its sites call a branch
// island, which leads to the program's own trampolines whichever runtime serves it. They go on to the
// library's runtime (Enrollment::forward_to), which counts them, and under graph traces them.
TEST(SharedObject, AnEnrolledProgramsSitesBeyondItsShimCallOnThroughTheServingRuntime) {
  Linked t;
  write_file(t.d / "big.c", "#include <stdio.h>\n#include <stdlib.h>\nint lib_work(int);\nstatic char big[3UL << 30];\n"
                            "__attribute__((noinline)) int touch(int i) { big[i] += 1; return big[i]; }\n"
                            "int main(int argc, char** argv) { int n = atoi(argv[1]), s = 0;\n"
                            "  for (int i = 0; i < n; i++) s += touch(i);\n  printf(\"%d %d\\n\", s, lib_work(n)); return 0; }\n");
  compile({"gcc", "-O2", "-pg", "-mfentry", "-mcmodel=medium", t.d / "big.c", "-L" + t.d.path(), "-l:libwork.orig.so", "-Wl,-rpath,$ORIGIN",
           "-o", t.d / "big"});
  Proc p = prepatch({t.d / "big", "-o", t.d / "big.out"});
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_NE(p.err.find("call it through a branch island at vaddr"), std::string::npos) << p.err;
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + t.d / "c", t.d / "big.out", "7"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "7 " + std::to_string(expected(7)) + "\n");
  auto c = function_counts(t.d / "big.out", t.d / "c");
  EXPECT_EQ(c, (std::map<std::string, long>{{"main", 1}, {"touch", 7}, {"lib_work", 1}, {"leaf", 7}}));
  Proc g = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + t.d / "t.trace", t.d / "big.out", "3"});
  ASSERT_EQ(g.status, 0) << g.err;
  Proc rep = prepatch({"report", t.d / "t.trace"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  EXPECT_NE(rep.out.find(" 3  touch\n"), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find(" 1  main\n"), std::string::npos) << rep.out;
}

// Two prepared plugins (two copies of one build) dlopen'ed by an unprepared host: the first one's
// runtime claims the process, the second enrolls with it; both count, each in its own section, and
// their functions, named alike, are told apart as OBJECT:FUNCTION.
TEST(SharedObject, TheSecondPreparedPluginEnrollsWithTheFirstsRuntime) {
  TwoPlugins t;
  Proc r = t.run({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + t.d / "c"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(2 * expected(100)) + "\n");
  EXPECT_EQ(r.err, "");
  auto c = function_counts(t.d / "one.so", t.d / "c");
  EXPECT_EQ(c["one.so:leaf"], 100);
  EXPECT_EQ(c["one.so:lib_work"], 1);
  EXPECT_EQ(c["two.so:leaf"], 100);
  EXPECT_EQ(c["two.so:lib_work"], 1);
  Proc quiet = t.run({});
  EXPECT_EQ(quiet.out, r.out);
  EXPECT_EQ(quiet.err, "");
}

// A counts file's sections and a trace file's object records, damaged: each damage is named with its
// offset. A counts file is refused whole (its links cannot be trusted past one); a trace file keeps
// what is intact: the damaged object's functions go unnamed, its records skipped and counted.
TEST(SharedObject, DamagedObjectSectionsAndRecordsAreNamed) {
  TwoPlugins t;
  ASSERT_EQ(t.run({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + t.d / "c"}).status, 0);
  ASSERT_EQ(t.run({"PREPATCH_TRACE=*", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + t.d / "t.trace"}).status, 0);
  const std::string counts = read_file(t.d / "c"), trace = read_file(t.d / "t.trace");
  shim::CountsHeader ch;
  std::memcpy(&ch, counts.data(), sizeof ch);
  ASSERT_EQ(ch.objects, 2u);
  shim::CountsObject first;
  std::memcpy(&first, counts.data() + ch.first, sizeof first);
  const auto put = [](std::string b, size_t at, u64 v) {
    std::memcpy(&b[at], &v, 8);
    return b;
  };
  const u64 f = ch.first;
  struct Case {
    const char* name;
    std::string bytes;
    std::string message;
  };
  const Case cases[] = {
      {"unaligned", put(counts, 32, f + 8), "offset 0x20: expected the offset of an object's section (page-aligned"},
      {"loop", put(counts, f + offsetof(shim::CountsObject, next), f), hex(f + offsetof(shim::CountsObject, next)) + ": expected the offset of an object's section"},
      {"count", put(counts, f + offsetof(shim::CountsObject, count), 1u << 30), hex(f + 8) + ": the section's 1073741824 counters run past the file's end"},
      {"table", put(counts, f + offsetof(shim::CountsObject, table_offset), 8), hex(f + offsetof(shim::CountsObject, table_offset)) + ": expected the table's copy after the counters"},
      {"names", put(counts, f + first.table_offset, 0), hex(f + first.table_offset) + ":"},
      {"objects", put(counts, 16, 3), "offset 0x10: the header counts 3 objects, the sections linked are 2"},
  };
  for (const Case& c : cases) {
    write_file(t.d / c.name, c.bytes);
    Proc r = prepatch({"counts", t.d / c.name});
    EXPECT_EQ(r.status, 4) << c.name;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.name << ": " << r.err;
  }
  Proc other = prepatch({"counts", t.d / "host", t.d / "c"});
  EXPECT_EQ(other.status, 4);
  EXPECT_NE(other.err.find("not a prepared binary"), std::string::npos) << other.err;
  // A version 1 file (before sections: one object, its counters after the header) is still read, with
  // its one binary, which names it.
  std::string v1(64, '\0');
  v1.replace(0, 8, "PPCOUNT\1");
  v1 = put(put(put(put(v1, 8, 1 | u64{64} << 32), 16, first.count), 24, 1234), 32, first.table_vaddr);
  v1[40] = static_cast<char>(first.build_id_size);
  std::memcpy(&v1[41], first.build_id, 20);
  v1 += counts.substr(f + sizeof first, 8 * first.count);
  write_file(t.d / "v1", v1);
  auto c1 = function_counts(t.d / "one.so", t.d / "v1");
  EXPECT_EQ(c1["leaf"], 100);
  EXPECT_EQ(c1["lib_work"], 1);
  Proc alone = prepatch({"counts", t.d / "v1"});
  EXPECT_EQ(alone.status, 4);
  EXPECT_NE(alone.err.find("offset 0x8: a version 1 counts file (one object, no table copy) is read with exactly one binary"), std::string::npos) << alone.err;

  // The trace: two.so's record (the second object) found among the chunks.
  shim::TraceHeader th;
  std::memcpy(&th, trace.data(), sizeof th);
  u64 record = 0;
  for (u64 at = th.chunk_offset; at + 4 <= trace.size() && !record; at += th.chunk_size)
    if (trace.compare(at, 4, "OBJT") == 0) record = at;
  ASSERT_NE(record, 0u) << "no object record";
  Proc whole = prepatch({"report", t.d / "t.trace"});
  ASSERT_EQ(whole.status, 0) << whole.err;
  EXPECT_NE(whole.out.find("two.so:leaf"), std::string::npos) << whole.out;
  // Callers are named in either object (the second's numbered after the first's addresses).
  Proc calls = prepatch({"replay", t.d / "t.trace"});
  ASSERT_EQ(calls.status, 0) << calls.err;
  for (const char* o : {"one.so", "two.so"})
    EXPECT_NE(calls.out.find(std::string(o) + ":leaf() <- " + o + ":lib_work (0x"), std::string::npos) << o << "\n" << calls.out.substr(0, 1500);
  std::string spans = trace;
  const u32 many = 999;
  std::memcpy(&spans[record + 4], &many, 4);
  // (Sites numbered far past the file's would cost the reader memory for numbers no one uses.)
  for (const auto& [name, bytes, message] : {std::tuple<std::string, std::string, std::string>{"spans.trace", spans, hex(record + 4) + ": chunk "},
                                             {"numbers.trace", put(trace, record + 8, 0), "numbers its sites from 0, which another object's use"},
                                             {"far.trace", put(trace, record + 8, 10000000), "from 10000000, which another object's use or past the sites"}}) {
    write_file(t.d / name, bytes);
    Proc r = prepatch({"report", t.d / name});
    EXPECT_EQ(r.status, 4) << name;
    EXPECT_NE(r.err.find(message), std::string::npos) << name << ": " << r.err;
    EXPECT_NE(r.err.find("records name no site of the table"), std::string::npos) << name << ": " << r.err;
    EXPECT_NE(r.out.find(" leaf\n"), std::string::npos) << "one.so's functions, bare now: " << r.out;
    EXPECT_EQ(r.out.find("two.so"), std::string::npos) << r.out;
  }
}

// The rendezvous page holds a runtime of another prepatch version (a number other than this runtime's
// after the magic), or something that is no runtime's page at all (here unreadable): a prepared plugin
// says which, once, leaves its sites off, and runs as built (docs/SHIM.md, "One runtime per process").
TEST(SharedObject, AnotherVersionsRuntimeOrAForeignPageLeavesTheSitesOff) {
  TempDir d;
  write_file(d / "plugin.c", lib_source);
  write_file(d / "host.c", R"(
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
int main(int argc, char** argv) {
  const int other_version = strcmp(argv[2], "version") == 0;
  uint64_t* page = mmap((void*)0x7e5e00000000, 4096, other_version ? PROT_READ | PROT_WRITE : PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (page != (void*)0x7e5e00000000) return printf("cannot map the page\n"), 1;
  if (other_version) page[0] = 0x014d544e55525050, page[1] = 99;
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) return printf("dlopen: %s\n", dlerror()), 1;
  printf("%d\n", ((int (*)(int))dlsym(h, "lib_work"))(100));
  return 0;
}
)");
  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "plugin.c", "-o", d / "plugin.orig.so"});
  compile({"gcc", "-O2", d / "host.c", "-o", d / "host", "-ldl"});
  ASSERT_EQ(prepatch({"-q", d / "plugin.orig.so", "-o", d / "plugin.so"}).status, 0);
  const std::pair<const char*, std::string> cases[] = {
      {"version", "prepatch: this shared object's sites stay off: the runtime serving this process came with an object prepared by another "
                  "prepatch version (runtime ABI 99, this object's " + std::to_string(shim::runtime_abi) + ")\n"},
      {"foreign", "prepatch: this shared object's sites stay off: something other than a prepatch runtime is mapped at 0x00007e5e00000000, where "
                  "the runtimes of prepared objects meet\n"}};
  for (const auto& [page, message] : cases) {
    SCOPED_TRACE(page);
    Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "host", d / "plugin.so", page});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_EQ(r.out, std::to_string(expected(100)) + "\n");
    EXPECT_EQ(r.err, message);
    EXPECT_FALSE(exists(d / "c")) << "no counts: the sites stayed off";
    Proc quiet = run({d / "host", d / "plugin.so", page});
    EXPECT_EQ(quiet.out, r.out);
    EXPECT_EQ(quiet.err, "") << "nothing asked for, nothing said";
  }
}

// Globs that name the object, OBJECT:FUNCTION (README.md, "Names"): OBJECT is the base name of the
// library as loaded, or of the executable as run; a bare glob takes every object; `replay --function`
// reads the object from the trace's header.
TEST(SharedObject, GlobsNameTheObjectAsWellAsTheFunction) {
  Linked t;
  const auto traced = [&](const std::string& globs) {
    const std::string file = t.d / "c";
    unlink(file.c_str());
    Proc r = run({"env", "PREPATCH_TRACE=" + globs, "PREPATCH_COUNTS=" + file, t.main, "1000"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, std::to_string(expected(1000)) + "\n");
    std::map<std::string, long> c = exists(file) ? function_counts(t.lib, file) : std::map<std::string, long>{};
    return std::make_pair(c, r.err);
  };
  auto [only_leaf, err1] = traced("libwork.so:leaf");
  EXPECT_EQ(only_leaf["leaf"], 1000);
  EXPECT_EQ(only_leaf["lib_work"], 0);
  EXPECT_EQ(err1, "");
  auto [both, err2] = traced("libw*.so:*");
  EXPECT_EQ(both["leaf"], 1000);
  EXPECT_EQ(both["lib_work"], 1);
  auto [bare, err3] = traced("lib_work");
  EXPECT_EQ(bare["lib_work"], 1);
  EXPECT_EQ(bare["leaf"], 0);
  auto [other, err4] = traced("libother.so:*,main:leaf");
  EXPECT_EQ(other["leaf"] + other["lib_work"], 0);
  EXPECT_NE(err4.find("no site's function matches libother.so:*,main:leaf"), std::string::npos) << err4;

  // The executable, by the name it was run as.
  compile({"gcc", "-O2", "-pg", "-mfentry", t.d / "main.c", t.d / "lib.c", "-o", t.d / "prog.orig"});
  ASSERT_EQ(prepatch({"-q", t.d / "prog.orig", "-o", t.d / "prog"}).status, 0);
  Proc r = run({"env", "PREPATCH_TRACE=prog:leaf,libwork.so:main", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + t.d / "t.trace", t.d / "prog", "3"});
  ASSERT_EQ(r.status, 0) << r.err;
  Proc all = prepatch({"replay", t.d / "t.trace"});
  ASSERT_EQ(all.status, 0) << all.err;
  const auto calls = [](const std::string& out, const std::string& f) {
    size_t n = 0;
    for (size_t at = out.find(f); at != std::string::npos; at = out.find(f, at + 1)) n++;
    return n;
  };
  EXPECT_EQ(calls(all.out, "leaf()"), 3u) << all.out;
  EXPECT_EQ(calls(all.out, "main()"), 0u) << all.out;
  Proc mine = prepatch({"replay", t.d / "t.trace", "--function", "prog:leaf"});
  EXPECT_EQ(mine.out, all.out);
  Proc other_object = prepatch({"replay", t.d / "t.trace", "--function", "libwork.so:leaf"});
  EXPECT_EQ(other_object.status, 0) << other_object.err;
  EXPECT_EQ(calls(other_object.out, "leaf()"), 0u) << other_object.out;
}

// Debian's own python3 importing a C extension module built -pg -mfentry and prepared: traced from the
// environment, the interpreter unprepared.
TEST(SharedObject, DebiansPython3ImportsAPreparedExtensionModule) {
  const std::string python = "/usr/bin/python3";
  Proc inc = run({python, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"});
  ASSERT_EQ(inc.status, 0) << inc.err;
  std::string include = inc.out.substr(0, inc.out.find('\n'));
  ASSERT_TRUE(exists(include + "/Python.h")) << "python3-dev (scripts/install-deps.sh) provides " << include << "/Python.h";
  TempDir d;
  write_file(d / "work.c", std::string("#include <Python.h>\n") + lib_source + R"(
static PyObject* run_work(PyObject* self, PyObject* args) {
  (void)self;
  int n;
  if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
  return PyLong_FromLong(lib_work(n));
}
static PyMethodDef methods[] = {{"work", run_work, METH_VARARGS, "sum"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "work", NULL, -1, methods};
PyMODINIT_FUNC PyInit_work(void) { return PyModule_Create(&module); }
)");
  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", "-I" + include, d / "work.c", "-o", d / "work.orig.so"});
  ASSERT_EQ(prepatch({"-q", d / "work.orig.so", "-o", d / "work.so"}).status, 0);
  const std::string script = "import sys; sys.path.insert(0, '" + d.path() + "'); import work; print(sum(work.work(50) for _ in range(20)))";
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", python, "-c", script});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(20 * expected(50)) + "\n");
  auto c = function_counts(d / "work.so", d / "c");
  EXPECT_EQ(c["leaf"], 20 * 50);
  EXPECT_EQ(c["lib_work"], 20);
  EXPECT_EQ(c["run_work"], 20);
  EXPECT_EQ(c["PyInit_work"], 1);

  // Toggled live with `prepatch ctl` while four Python threads call into the module: the interpreter
  // itself asks for each batch (a fifth thread), toggling while the workers run, and over 10 windows
  // opened while they wait at a barrier, the counts grow by exactly the calls they made.
  write_file(d / "live.py", R"(
import json, os, subprocess, sys, threading
sys.path.insert(0, os.path.dirname(sys.argv[0]))
import work
prepatch, module, counts_file = sys.argv[1], sys.argv[2], sys.argv[3]
def ctl(*words):
    subprocess.run([prepatch, 'ctl', str(os.getpid()), *words], check=True, stdout=subprocess.DEVNULL)
def counts():
    rows = json.loads(subprocess.run([prepatch, 'counts', '--json', module, counts_file], check=True, capture_output=True).stdout)
    c = {r['function']: r['count'] for r in rows}   # a function never called is not listed
    return lambda f: c.get(f, 0)
paused, resumed = threading.Barrier(5), threading.Barrier(5)
pause = stop = False
calls = [0] * 4
def worker(k):
    while not stop:
        for _ in range(50):
            assert work.work(30) == 3 * 30 * 29 // 2 + 30
        calls[k] += 50
        if pause:                  # between two rounds: wait for the window to open or close
            paused.wait()
            resumed.wait()
def hold():                        # every worker between two rounds
    global pause
    pause = True
    paused.wait()
def release():
    global pause
    pause = False
    resumed.wait()
threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]  # a failure here ends them too
ctl('enable', 'leaf')  # the counts file exists from here on
for t in threads: t.start()
exact = 0
for window in range(10):
    hold()
    before, made = counts(), sum(calls)
    ctl('enable', '*')
    release()
    ctl('disable', 'leaf'); ctl('enable', 'leaf')   # batches while they run
    hold()
    after, done = counts(), sum(calls)
    if after('lib_work') - before('lib_work') == done - made and after('run_work') - before('run_work') == done - made:
        exact += 1
    release()
    ctl('disable', 'lib_work,run_work')            # while they run
stop = True
for t in threads: t.join()
print('windows', exact, 'calls', sum(calls))
)");
  const std::string live_counts = d / "live.counts";
  Proc live = run({"timeout", "120", "env", "PREPATCH_COUNTS=" + live_counts, python, d / "live.py", PREPATCH_BIN, d / "work.so", live_counts});
  ASSERT_EQ(live.status, 0) << live.out << live.err;
  EXPECT_EQ(live.out.substr(0, live.out.find(" calls")), "windows 10") << live.out << live.err;
}

// `prepatch ctl` drives the runtime of a prepared library inside an unprepared program (its executable
// has no table: the runtime's page in /proc/PID/maps says one runs there).
TEST(SharedObject, CtlTogglesALibrarysSitesInAnUnpreparedProgram) {
  Linked t;
  write_file(t.d / "live.c", R"(
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int lib_work(int);
int main(void) {
  printf("ready %d\n", getpid());
  fflush(stdout);
  char line[64];
  long total = 0;
  while (fgets(line, sizeof line, stdin))
    if (!strncmp(line, "run", 3)) total += lib_work(10);
  printf("%ld\n", total);
  return 0;
}
)");
  compile({"gcc", "-O2", t.d / "live.c", "-L" + t.d.path(), "-l:libwork.orig.so", "-Wl,-rpath,$ORIGIN", "-o", t.d / "live"});
  Background p({"env", "PREPATCH_COUNTS=" + t.d / "c", t.d / "live"}, t.d.path());
  ASSERT_GT(p.target(), 0);
  const std::string pid = std::to_string(p.target());
  Proc e = prepatch({"ctl", pid, "enable", "leaf"});
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_EQ(e.out, "ok: enabled 1 site (1 matched)\n");
  Proc s = prepatch({"ctl", pid, "status"});
  ASSERT_EQ(s.status, 0) << s.err;
  EXPECT_NE(s.out.find("enabled leaf"), std::string::npos) << s.out;
  for (int i = 0; i < 3; i++) p.say("run\n");
  auto [status, out] = p.finish();
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(out, std::to_string(3 * expected(10)) + "\n");
  auto c = function_counts(t.lib, t.d / "c");
  EXPECT_EQ(c["leaf"], 30);
  EXPECT_EQ(c.count("lib_work") ? c["lib_work"] : 0, 0);

  Proc plain = run({"sh", "-c", "sleep 5 >/dev/null 2>&1 & echo $!"});
  const std::string other = plain.out.substr(0, plain.out.find('\n'));
  Proc refused = prepatch({"ctl", other, "status"});
  EXPECT_EQ(refused.status, 5);
  EXPECT_NE(refused.err.find("no prepared shared object's runtime runs in it"), std::string::npos) << refused.err;
}

// An object loaded later follows the selection made since start: PREPATCH_TRACE, then every `ctl
// enable` and `disable` in order, globs naming the object included (docs/SHIM.md, "One runtime,
// several objects"); `ctl status` lists each object and names functions OBJECT:FUNCTION; one counts
// file holds a section per object, added as it loads. A request that matched nothing is not kept.
TEST(SharedObject, AnObjectLoadedLaterFollowsTheSelection) {
  TempDir d;
  write_file(d / "plugin.c", lib_source);
  write_file(d / "loader.c", R"(
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
  void* h[8];
  int n = 0;
  long total = 0;
  char line[512];
  printf("ready %d\n", getpid());
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "open ", 5) && n < 8 && !(h[n++] = dlopen(line + 5, RTLD_NOW | RTLD_LOCAL))) return printf("dlopen: %s\n", dlerror()), 1;
    if (!strcmp(line, "run"))
      for (int i = 0; i < n; i++) total += ((int (*)(int))dlsym(h[i], "lib_work"))(10);
    char done[600];
    snprintf(done, sizeof done, "%s.done", strncmp(line, "open ", 5) ? line : strrchr(line, '/') + 1);
    fclose(fopen(done, "w"));
  }
  printf("%ld\n", total);
  return 0;
}
)");
  for (const char* name : {"one", "two"})
    compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "plugin.c", "-o", d / (std::string(name) + ".orig.so")});
  compile({"gcc", "-O2", d / "loader.c", "-o", d / "loader", "-ldl"});
  for (const char* name : {"one", "two"})
    ASSERT_EQ(prepatch({"-q", d / (std::string(name) + ".orig.so"), "-o", d / (std::string(name) + ".so")}).status, 0);
  Background p({"env", "PREPATCH_TRACE=leaf", "PREPATCH_COUNTS=" + d / "c", d / "loader"}, d.path());
  ASSERT_GT(p.target(), 0);
  const auto step = [&](const std::string& line, const std::string& done) {
    p.say(line + "\n");
    for (int i = 0; i < 2000 && !exists(d / done); i++) usleep(5000);
    ASSERT_TRUE(exists(d / done)) << line;
  };
  const std::string pid = std::to_string(p.target());
  step("open " + d / "one.so", "one.so.done");
  Proc e = prepatch({"ctl", pid, "enable", "lib_work"});
  EXPECT_EQ(e.out, "ok: enabled 1 site (1 matched)\n") << e.err;
  Proc off = prepatch({"ctl", pid, "disable", "one.so:leaf"});
  EXPECT_EQ(off.out, "ok: disabled 1 site (1 matched)\n") << off.err;
  Proc none = prepatch({"ctl", pid, "enable", "two.so:*"});
  EXPECT_EQ(none.status, 4) << "two.so is not loaded yet: nothing matches, and nothing is kept";
  step("open " + d / "two.so", "two.so.done");
  Proc s = prepatch({"ctl", pid, "status"});
  ASSERT_EQ(s.status, 0) << s.err;
  EXPECT_NE(s.out.find("ok: pid " + pid + ", 3 of 4 sites enabled\n"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find("object " + d / "one.so" + ": 1 of 2 sites enabled\n"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find("object " + d / "two.so" + ": 2 of 2 sites enabled\n"), std::string::npos) << s.out;
  for (const char* f : {"one.so:lib_work", "two.so:lib_work", "two.so:leaf"}) EXPECT_NE(s.out.find(std::string("enabled ") + f + " 0\n"), std::string::npos) << f << "\n" << s.out;
  EXPECT_EQ(s.out.find("enabled one.so:leaf"), std::string::npos) << s.out;
  step("run", "run.done");
  auto [status, out] = p.finish();
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(out, std::to_string(2 * expected(10)) + "\n");
  auto c = function_counts(d / "one.so", d / "c");
  EXPECT_EQ(c["one.so:lib_work"], 1);
  EXPECT_EQ(c["one.so:leaf"], 0);
  EXPECT_EQ(c["two.so:lib_work"], 1);
  EXPECT_EQ(c["two.so:leaf"], 10);
}

// What cannot carry the shim is refused with the offset and the reason, and nothing is written.
TEST(SharedObject, RefusedWithAReason) {
  TempDir d;
  write_file(d / "lib.c", lib_source);
  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", "-nostartfiles", d / "lib.c", "-o", d / "noinit.so"});
  Proc p = prepatch({d / "noinit.so", "-o", d / "out.so"});
  EXPECT_EQ(p.status, 4);
  EXPECT_NE(p.err.find("expected a DT_INIT entry"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("offset 0x"), std::string::npos) << p.err;
  EXPECT_FALSE(exists(d / "out.so"));

  // Code the loader writes (a text relocation) belongs to the loader, not to the shim.
  write_file(d / "textrel.c", std::string(lib_source) + "__asm__(\".text\\n.globl slot\\nslot: .quad slot\\n\");\n");
  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", "-Wl,-z,notext", d / "textrel.c", "-o", d / "textrel.so"});
  p = prepatch({d / "textrel.so", "-o", d / "out.so"});
  EXPECT_EQ(p.status, 4);
  EXPECT_NE(p.err.find("DT_TEXTREL"), std::string::npos) << p.err;
  EXPECT_NE(p.err.find("writes code at vaddr 0x"), std::string::npos) << p.err;
  EXPECT_FALSE(exists(d / "out.so"));
  // Text relocations that write data only (gcc -pg -mrecord-mcount -fPIC: absolute addresses in the
  // read-only __mcount_loc) are taken; the shared matrix runs such a library (flavor gcc-pg-record).
  compile({"gcc", "-O2", "-pg", "-mrecord-mcount", "-fPIC", "-shared", d / "lib.c", "-o", d / "record.so"});
  ASSERT_NE(run({"readelf", "-d", d / "record.so"}).out.find("TEXTREL"), std::string::npos) << "gcc no longer marks it";
  p = prepatch({d / "record.so", "-o", d / "out.so"});
  EXPECT_EQ(p.status, 0) << p.err;
  unlink((d / "out.so").c_str());
  // The same library with its relative relocations packed (ld -z pack-relative-relocs: SHT_RELR, where
  // before it was refused, telling the user to build with -fPIC as they had): each one read, none in
  // code, prepared; a program using it runs traced and counts every call.
  compile({"gcc", "-O2", "-pg", "-mrecord-mcount", "-fPIC", "-shared", "-Wl,-z,pack-relative-relocs", "-Wl,-soname,libpacked.so", d / "lib.c", "-o",
           d / "libpacked.orig.so"});
  const std::vector<std::string> dyn = dynamic_entries(d / "libpacked.orig.so");
  ASSERT_TRUE(std::any_of(dyn.begin(), dyn.end(), [](const std::string& l) { return l.find("(RELR)") != std::string::npos; })) << "ld packed nothing";
  ASSERT_TRUE(std::any_of(dyn.begin(), dyn.end(), [](const std::string& l) { return l.find("(TEXTREL)") != std::string::npos; })) << "gcc no longer marks it";
  const std::string packed = d / "packed";
  mkdir(packed.c_str(), 0755);
  p = prepatch({d / "libpacked.orig.so", "-o", packed + "/libpacked.so"});
  ASSERT_EQ(p.status, 0) << p.err;
  write_file(d / "main.c", "#include <stdio.h>\nint lib_work(int);\nint main(void) { printf(\"%d\\n\", lib_work(10)); return 0; }\n");
  compile({"gcc", "-O2", d / "main.c", d / "libpacked.orig.so", "-o", d / "main"});
  Proc r = run({"env", "LD_LIBRARY_PATH=" + packed, "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "main"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(expected(10)) + "\n");
  auto counts = function_counts(packed + "/libpacked.so", d / "c");
  EXPECT_EQ(counts["lib_work"], 1);
  EXPECT_EQ(counts["leaf"], 10);

  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "lib.c", "-o", d / "lib.so"});
  ASSERT_EQ(prepatch({"-q", d / "lib.so", "-o", d / "once.so"}).status, 0);
  p = prepatch({d / "once.so", "-o", d / "twice.so"});
  EXPECT_EQ(p.status, 3);
  EXPECT_NE(p.err.find("already prepared"), std::string::npos) << p.err;
  EXPECT_FALSE(exists(d / "twice.so"));

}

// Without DT_INIT (RISC-V's C library has no _init; here an x86-64 library linked -nostartfiles with a
// constructor) the shim starts from the first init_array entry, then runs it: the constructor's work
// is there, and the library is traced.
TEST(SharedObject, WithoutDtInitTheShimStartsFromTheFirstInitArrayEntry) {
  TempDir d;
  write_file(d / "lib.c", std::string(lib_source) + "int ready;\n__attribute__((constructor)) static void init(void) { ready = 42; }\n");
  write_file(d / "main.c", "#include <stdio.h>\nint lib_work(int);\nextern int ready;\n"
                           "int main(void) { printf(\"%d %d\\n\", ready, lib_work(10)); return 0; }\n");
  compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", "-nostartfiles", "-Wl,-soname,libwork.so", d / "lib.c", "-o", d / "libwork.orig.so"});
  ASSERT_EQ(run({"readelf", "-d", d / "libwork.orig.so"}).out.find("(INIT)"), std::string::npos) << "expected no DT_INIT";
  compile({"gcc", "-O2", d / "main.c", d / "libwork.orig.so", "-o", d / "main"});
  const std::string prepared = d / "prepared";
  mkdir(prepared.c_str(), 0755);
  Proc p = prepatch({d / "libwork.orig.so", "-o", prepared + "/libwork.so"});
  ASSERT_EQ(p.status, 0) << p.err;
  Proc r = run({"env", "LD_LIBRARY_PATH=" + prepared, "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "main"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "42 " + std::to_string(expected(10)) + "\n") << "the constructor did not run";
  EXPECT_EQ(r.err, "");
  auto c = function_counts(prepared + "/libwork.so", d / "c");
  EXPECT_EQ(c["leaf"], 10);
  EXPECT_EQ(c["init"], 1) << "the constructor is traced too: the shim started before it";
}

// The other ISAs, under qemu-user: a prepared library in an unprepared program counts exactly; with
// the program prepared too, the library's runtime serves the process and the program enrolls with it
// (the rendezvous page: 64-bit, and ARM32's own; the program's sites forward through its own
// trampolines), counted, and graph-traced. RISC-V's libraries start the shim from their first init_array entry (no
// DT_INIT there).
class OtherIsaSharedObject : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(OtherIsaSharedObject, APreparedLibraryCountsAndServesAPreparedProgramToo) {
  const std::string isa = GetParam()[0], cc = GetParam()[1], flags = GetParam()[2];
  TempDir d;
  write_file(d / "lib.c", lib_source);
  write_file(d / "main.c", "#include <stdio.h>\n#include <stdlib.h>\nint lib_work(int);\n"
                           "int main(int argc, char** argv) { printf(\"%d\\n\", lib_work(atoi(argv[1]))); return 0; }\n");
  const std::string built = d / "built", prepared = d / "prepared";
  for (const std::string& dir : {built, prepared}) mkdir(dir.c_str(), 0755);
  compile({cc, "-O2", flags, "-fPIC", "-shared", "-Wl,-soname,libwork.so", d / "lib.c", "-o", built + "/libwork.so"});
  compile({cc, "-O2", d / "main.c", built + "/libwork.so", "-o", d / "main"});
  compile({cc, "-O2", flags, d / "main.c", built + "/libwork.so", "-o", d / "main.hooks"});
  ASSERT_EQ(prepatch({"-q", built + "/libwork.so", "-o", prepared + "/libwork.so"}).status, 0);
  ASSERT_EQ(prepatch({"-q", d / "main.hooks", "-o", d / "main.prepared"}).status, 0);
  auto in = [&](const std::string& libdir, const std::string& exe, std::vector<std::string> env) {
    env.push_back("LD_LIBRARY_PATH=" + libdir);
    std::vector<std::string> argv = qemu_for(isa);
    argv.push_back(exe);
    argv.push_back("1000");
    return run(with_env(env, argv), d.path());
  };
  const std::string want = std::to_string(expected(1000)) + "\n";
  Proc plain = in(built, d / "main", {});
  ASSERT_EQ(plain.out, want) << plain.err;
  Proc off = in(prepared, d / "main", {});
  EXPECT_EQ(off.out, want);
  EXPECT_EQ(off.err, plain.err);
  Proc on = in(prepared, d / "main", {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"});
  EXPECT_EQ(on.out, want);
  EXPECT_EQ(on.err, plain.err);
  auto c = function_counts(prepared + "/libwork.so", d / "c");
  EXPECT_EQ(c["leaf"], 1000);
  EXPECT_EQ(c["lib_work"], 1);
  Proc both = in(prepared, d / "main.prepared", {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c2"});
  EXPECT_EQ(both.out, want);
  EXPECT_EQ(both.err, plain.err);
  auto c2 = function_counts(d / "main.prepared", d / "c2");
  EXPECT_EQ(c2["main"], 1);
  EXPECT_EQ(c2["leaf"], 1000);
  EXPECT_EQ(c2["lib_work"], 1);
  // The program's calls forwarded to the library's runtime under graph: every call in one trace.
  Proc traced = in(prepared, d / "main.prepared", {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace"});
  EXPECT_EQ(traced.out, want);
  EXPECT_EQ(traced.err, plain.err);
  Proc rep = prepatch({"report", d / "t.trace", "--sort", "calls"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  EXPECT_NE(rep.out.find(" 1000  leaf\n"), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find(" 1  lib_work\n"), std::string::npos) << rep.out;
  EXPECT_NE(rep.out.find(" 1  main\n"), std::string::npos) << rep.out;
}

INSTANTIATE_TEST_SUITE_P(Isas, OtherIsaSharedObject, ::testing::ValuesIn(other_isa_flavors()), other_isa_flavor_name);

}  // namespace
}  // namespace prepatch::test
