// dlopen and dlclose while tracing (x86-64): an object whose runtime serves the process is kept
// loaded; any other prepared object enrolls each time it is loaded and leaves as it is unloaded (its
// finalizer), keeping its entry: its site numbers, counters and object record, which an object loaded
// again from the same file takes back (docs/SHIM.md, "Unloading").
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

#include "shared_objects.h"
#include "support.h"
#include "trace/reader.h"

namespace prepatch::test {
namespace {

// Lines of `text` holding `what`.
int count_lines(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

// A host that loads PLUGIN ROUNDS times, calls its lib_work(100), unloads it, and asks the loader
// whether it is still loaded (RTLD_NOLOAD). Prints the total and how many rounds unmapped it.
const char* dl_host = R"(
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  long total = 0;
  int unloaded = 0;
  for (int round = 0; round < atoi(argv[2]); round++) {
    void* h = dlopen(argv[1], RTLD_NOW);
    if (!h) return printf("dlopen: %s\n", dlerror()), 1;
    int (*work)(int) = (int (*)(int))dlsym(h, "lib_work");
    total += work(100);
    if (dlclose(h) != 0) return 2;
    void* still = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
    if (still) dlclose(still);
    else unloaded++;
  }
  printf("%ld unloaded %d\n", total, unloaded);
  return 0;
}
)";

// The plugin's destructor, which calls into it as the loader unloads it; a note of its own, which the
// preparer turns into the shim's segment when the link writes no build ID.
const char* bye = "__attribute__((destructor)) static void bye(void) { leaf(7); }\n";
const char* note = R"(__asm__(".section .note.test,\"a\",@note\n.balign 4\n.long 4, 4, 1\n.asciz \"TST\"\n.long 7\n.previous\n");
)";

// The plugin: the library, its destructor and note; and the host, unprepared and prepared.
struct Plugin {
  TempDir d;
  Plugin(const std::vector<std::string>& flags = {}) {
    write_file(d / "plugin.c", std::string(lib_source) + bye + note);
    write_file(d / "host.c", dl_host);
    std::vector<std::string> cc = {"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", d / "plugin.c", "-o", d / "plugin.orig.so"};
    cc.insert(cc.end(), flags.begin(), flags.end());
    compile(cc);
    compile({"gcc", "-O2", d / "host.c", "-o", d / "host", "-ldl"});
    compile({"gcc", "-O2", "-pg", "-mfentry", d / "host.c", "-o", d / "host.hooks", "-ldl"});
    EXPECT_EQ(prepatch({"-q", d / "plugin.orig.so", "-o", d / "plugin.so"}).status, 0);
    EXPECT_EQ(prepatch({"-q", d / "host.hooks", "-o", d / "host.prepared"}).status, 0);
  }
  // d/HOST loading the plugin 50 times, with PREPATCH_TRACE=* and `env`: its output, checked.
  Proc traced(const std::string& host, std::vector<std::string> env) const {
    env.insert(env.begin(), {"env", "PREPATCH_TRACE=*"});
    for (const std::string& a : {d / host, d / "plugin.so", std::string("50")}) env.push_back(a);
    Proc r = run(env);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, std::to_string(50 * expected(100)) + (host == "host" ? " unloaded 0\n" : " unloaded 50\n"));
    return r;
  }
};

// Each row of `prepatch counts --json FILE` as OBJECT:FUNCTION -> count, and how many rows name each.
std::map<std::string, long> counts_by_object(const std::string& file, std::map<std::string, int>* rows = nullptr) {
  Proc c = prepatch({"counts", "--all", "--json", file});
  EXPECT_EQ(c.status, 0) << c.err;
  std::map<std::string, long> n;
  for (const auto& row : nlohmann::json::parse(c.out)) {
    const std::string key = std::string(row["object"]) + ":" + std::string(row["function"]);
    n[key] += static_cast<long>(row["count"]);
    if (rows) (*rows)[key]++;
  }
  return n;
}

// A plugin whose runtime serves the process (an unprepared host) is kept loaded across dlclose: its
// handlers and trampolines are in it. Every call is counted; its destructor runs once, at exit.
TEST(Unload, APluginWhoseRuntimeServesIsKeptLoaded) {
  Plugin t;
  t.traced("host", {"PREPATCH_COUNTS=" + t.d / "c"});
  auto c = function_counts(t.d / "plugin.so", t.d / "c");
  EXPECT_EQ(c["leaf"], 50 * 100 + 1);
  EXPECT_EQ(c["lib_work"], 50);
  EXPECT_EQ(c["bye"], 1);
  Proc plain = run({t.d / "host", t.d / "plugin.orig.so", "50"});
  EXPECT_EQ(plain.out, std::to_string(50 * expected(100)) + " unloaded 50\n") << "unprepared, the loader unmaps it";
}

// With the host prepared (its runtime serves), the plugin is unloaded by every dlclose, as unprepared:
// it enrolls each time it is loaded and follows PREPATCH_TRACE, and its destructor's calls are counted
// as it leaves. One section of the counts file holds all 50 loads' counts; the function and graph
// tracers' files hold one object record for it and name its functions; the graph tracer's exits
// match its entries across the loads.
TEST(Unload, APluginUnloadedByDlcloseIsTracedEachTimeItIsLoaded) {
  Plugin t;
  t.traced("host.prepared", {"PREPATCH_COUNTS=" + t.d / "c"});
  std::map<std::string, int> rows;
  auto c = counts_by_object(t.d / "c", &rows);
  EXPECT_EQ(c["plugin.so:leaf"], 50 * 100 + 50) << "every load's calls and every destructor's";
  EXPECT_EQ(c["plugin.so:lib_work"], 50);
  EXPECT_EQ(c["plugin.so:bye"], 50);
  EXPECT_EQ(c["host.prepared:main"], 1);
  EXPECT_EQ(rows["plugin.so:leaf"], 1) << "one section, however often it was loaded";

  for (const char* tracer : {"function", "graph"}) {
    SCOPED_TRACE(tracer);
    const std::string file = t.d / (std::string(tracer) + ".trace");
    t.traced("host.prepared", {std::string("PREPATCH_TRACER=") + tracer, "PREPATCH_OUTPUT=" + file});
    trace::TraceFile f(file);
    EXPECT_EQ(f.objects(), 2u) << "the host, and one record of the plugin";
    Proc rep = prepatch({"report", file});
    ASSERT_EQ(rep.status, 0) << rep.err;
    for (const char* fn : {"leaf", "lib_work", "bye"}) EXPECT_NE(rep.out.find(std::string(" ") + fn + "\n"), std::string::npos) << fn << " in\n" << rep.out;
    EXPECT_EQ(rep.out.find("damage"), std::string::npos) << rep.out;
    EXPECT_EQ(rep.err, "");
  }
  Proc replay = prepatch({"replay", t.d / "graph.trace"});
  ASSERT_EQ(replay.status, 0) << replay.err;
  EXPECT_EQ(count_lines(replay.out, "lib_work() {"), 50) << replay.out.substr(0, 3000);
  EXPECT_EQ(count_lines(replay.out, "bye() {"), 50);
}

// An object is given its old entry back only when it is loaded from the same file: a plugin rebuilt
// at the same path between two loads is a new object, with a section of its own. Without a build ID,
// the table's bytes decide (the rebuild here differs in one function's name only: a table of the
// same size, which the test checks).
TEST(Unload, APluginRebuiltBetweenLoadsIsANewObject) {
  for (const char* build_id : {"--build-id=sha1", "--build-id=none"}) {
    SCOPED_TRACE(build_id);
    Plugin t({std::string("-Wl,") + build_id});
    std::string v2 = std::string(lib_source) + bye + note;
    for (size_t at; (at = v2.find("leaf")) != std::string::npos;) v2.replace(at, 4, "lefa");
    mkdir((t.d / "v2").c_str(), 0755);
    write_file(t.d / "v2/plugin.c", v2);  // (the source file's name is in the table's names)
    compile({"gcc", "-O2", "-pg", "-mfentry", "-fPIC", "-shared", std::string("-Wl,") + build_id, t.d / "v2/plugin.c", "-o", t.d / "v2.orig.so"});
    ASSERT_EQ(prepatch({"-q", t.d / "v2.orig.so", "-o", t.d / "v2.so"}).status, 0);
    const auto table_size = [&](const std::string& so) { return run({"sh", "-c", "readelf -SW " + so + " | grep __patch_sites"}).out; };
    EXPECT_EQ(table_size(t.d / "v2.so"), table_size(t.d / "plugin.so"));
    // The host loads plugin.so three times, renames v2.so over it, and loads it three times more.
    write_file(t.d / "swap.c", R"(
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  (void)argc;
  long total = 0;
  for (int round = 0; round < 6; round++) {
    if (round == 3 && rename(argv[2], argv[1]) != 0) return 3;
    void* h = dlopen(argv[1], RTLD_NOW);
    if (!h) return printf("dlopen: %s\n", dlerror()), 1;
    total += ((int (*)(int))dlsym(h, "lib_work"))(10);
    if (dlclose(h) != 0) return 2;
  }
  printf("%ld\n", total);
  return 0;
}
)");
    compile({"gcc", "-O2", "-pg", "-mfentry", t.d / "swap.c", "-o", t.d / "swap.hooks", "-ldl"});
    ASSERT_EQ(prepatch({"-q", t.d / "swap.hooks", "-o", t.d / "swap"}).status, 0);
    Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + t.d / "c", t.d / "swap", t.d / "plugin.so", t.d / "v2.so"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, std::to_string(6 * expected(10)) + "\n");
    EXPECT_EQ(r.err, "");
    std::map<std::string, int> rows;
    auto c = counts_by_object(t.d / "c", &rows);
    EXPECT_EQ(rows["plugin.so:lib_work"], 2) << "two sections: the first build's and the second's";
    EXPECT_EQ(c["plugin.so:lib_work"], 6);
    EXPECT_EQ(rows["plugin.so:leaf"], 1) << "the first build's three loads: one section";
    EXPECT_EQ(c["plugin.so:leaf"], 30 + 3);
    EXPECT_EQ(c["plugin.so:lefa"], 30 + 3);
    EXPECT_EQ(rows["plugin.so:bye"], 2);
  }
}

// Eight copies of the plugin loaded by the four soak threads in turn, while the fifth thread's batches
// run. With an unprepared host, seven enroll with the first one's runtime (and follow the selection as
// it is then) and leave as they are unloaded; with the host prepared, all eight come and go. No crash,
// no wrong result, every object in the counts file, once.
TEST(Unload, ObjectsEnrollAndLeaveWhileBatchesRun) {
  TempDir d;
  build_soak(d, "p0.so");
  std::string list = d / "p0.so";
  for (int k = 1; k < 8; k++) {
    write_file(d / ("p" + std::to_string(k) + ".so"), read_file(d / "p0.so"), 0755);
    list += ":" + d / ("p" + std::to_string(k) + ".so");
  }
  for (int round = 0; round < 5; round++) {
    SCOPED_TRACE(round);
    unlink((d / "c").c_str());
    Proc r = run({"env", "PREPATCH_COUNTS=" + d / "c", d / (round % 2 ? "soak.prepared" : "soak"), list, "2000"});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_EQ(r.err, "");
    Proc c = prepatch({"counts", "--all", "--json", d / "c"});
    ASSERT_EQ(c.status, 0) << c.err;
    std::set<std::string> objects;
    std::map<std::string, long> n;
    for (const auto& row : nlohmann::json::parse(c.out))
      if (row["object"] != "soak.prepared") objects.insert(row["object"]), n[row["function"]] = row["count"];
    EXPECT_EQ(objects.size(), 8u) << c.out.substr(0, 2000);
    EXPECT_EQ(count_lines(c.out, "\"symbol\": \"plugin_work\""), 8) << "one section for each plugin, however often it was loaded";
    EXPECT_GE(n["p" + std::to_string(2000 % 8) + ".so:plugin_work"], 1) << "the last cycle ran with every site on";
  }
}

// The soak (testdata/plugin_soak.c checks every result and that each request is carried out): a
// prepared plugin dlopen'ed, called and dlclose'd 100,000 times by four threads, then 10,000 times by
// one alone, while a fifth thread enables and disables every site through the control channel. No
// crash, no wrong result, anonymous memory flat from the first tenth of the cycles to the end (a leak
// of 12 bytes a cycle would show), every function counted (the last cycle runs with every site on); a
// shorter run under the function tracer names every plugin function in its trace. With an unprepared
// host the plugin's runtime serves and it is loaded once; with the host prepared, the loader unmaps it
// whenever no thread holds it: at least each time the one thread alone closes it.
TEST(Unload, PluginSoakLoadUnloadAndToggleFromFiveThreads) {
  TempDir d;
  build_soak(d, "plugin.so");
  for (const char* host : {"soak", "soak.prepared"}) {
    SCOPED_TRACE(host);
    const bool prepared = std::string(host) == "soak.prepared";
    unlink((d / "c").c_str());
    Proc r = run({"env", "PREPATCH_COUNTS=" + d / "c", d / host, d / "plugin.so", "100000"});
    ASSERT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_EQ(r.err, "");
    long cycles = 0, toggles = 0, early = 0, late = 0, loads = 0;
    ASSERT_EQ(std::sscanf(r.out.c_str(), "cycles %ld toggles %ld rss_anon_kib %ld %ld loads %ld", &cycles, &toggles, &early, &late, &loads), 5) << r.out;
    EXPECT_EQ(cycles, 100000);
    EXPECT_GE(toggles, 10) << "the batches hardly overlapped the cycles";
    EXPECT_GT(early, 0);
    EXPECT_LE(late - early, 1024) << "anonymous memory grew by " << late - early << " KiB over 100,000 cycles";
    if (prepared) EXPECT_GT(loads, 10000) << "the plugin was not unloaded each time the thread alone closed it";
    else EXPECT_EQ(loads, 1) << "the plugin whose runtime serves is kept loaded";
    std::map<std::string, int> rows;
    auto c = counts_by_object(d / "c", &rows);
    // (Not equal to each other: a batch may land between a call of plugin_work and its call of sum.)
    for (const char* f : {"plugin_work", "sum", "mix"}) {
      EXPECT_GT(c[std::string("plugin.so:") + f], 0) << f;
      EXPECT_EQ(rows[std::string("plugin.so:") + f], 1) << f;
    }

    Proc f = run({"env", "PREPATCH_TRACER=function", "PREPATCH_OUTPUT=" + d / "t.trace", d / host, d / "plugin.so", "3000"});
    ASSERT_EQ(f.status, 0) << f.out << f.err;
    Proc rep = prepatch({"report", d / "t.trace"});
    ASSERT_EQ(rep.status, 0) << rep.err;
    for (const char* fn : {"plugin_work", "sum", "mix"}) EXPECT_NE(rep.out.find(std::string(" ") + fn + "\n"), std::string::npos) << fn << " in\n" << rep.out;
  }
}

// The other ISAs (count tracer), under qemu-user: a prepared host loads a prepared library 20 times
// and unloads it each time (its runtime serves, the library enrolls and leaves); every call counts,
// in one section.
class OtherIsaUnload : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(OtherIsaUnload, ALibraryUnloadedByDlcloseIsCountedEachTimeItIsLoaded) {
  const std::string isa = GetParam()[0], cc = GetParam()[1], flags = GetParam()[2];
  TempDir d;
  write_file(d / "plugin.c", std::string(lib_source) + bye);
  write_file(d / "host.c", dl_host);
  compile({cc, "-O2", flags, "-fPIC", "-shared", d / "plugin.c", "-o", d / "plugin.orig.so"});
  compile({cc, "-O2", flags, d / "host.c", "-o", d / "host.hooks", "-ldl"});
  ASSERT_EQ(prepatch({"-q", d / "plugin.orig.so", "-o", d / "plugin.so"}).status, 0);
  ASSERT_EQ(prepatch({"-q", d / "host.hooks", "-o", d / "host"}).status, 0);
  std::vector<std::string> argv = qemu_for(isa);
  for (const std::string& a : {d / "host", d / "plugin.so", std::string("20")}) argv.push_back(a);
  Proc r = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, argv), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, std::to_string(20 * expected(100)) + " unloaded 20\n");
  std::map<std::string, int> rows;
  auto c = counts_by_object(d / "c", &rows);
  EXPECT_EQ(c["plugin.so:leaf"], 20 * 100 + 20);
  EXPECT_EQ(c["plugin.so:lib_work"], 20);
  EXPECT_EQ(c["plugin.so:bye"], 20);
  EXPECT_EQ(c["host:main"], 1);
  EXPECT_EQ(rows["plugin.so:leaf"], 1);
}

INSTANTIATE_TEST_SUITE_P(Isas, OtherIsaUnload, ::testing::ValuesIn(other_isa_flavors()), other_isa_flavor_name);

}  // namespace
}  // namespace prepatch::test
