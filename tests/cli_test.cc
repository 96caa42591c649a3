// The command line: help, version, exit codes, in-place preparation, modes, listing, skipped sites.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>

#include "support.h"

namespace prepatch::test {
namespace {

const std::string source = std::string(TESTDATA_DIR) + "/basic-gcc-fentry";

TEST(Cli, HelpAndVersion) {
  Proc r = prepatch({"--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("Exit codes: 0 ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sites"), std::string::npos);
  r = prepatch({"--version"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "prepatch 0.1.0\n");
}

TEST(Cli, UsageErrorsExit2) {
  EXPECT_EQ(prepatch({}).status, 2);
  EXPECT_EQ(prepatch({source}).status, 2);  // no -o
  EXPECT_EQ(prepatch({"--no-such-option"}).status, 2);
  EXPECT_EQ(prepatch({"sites"}).status, 2);
}

unsigned mode_of(const std::string& path) {
  struct stat st;
  stat(path.c_str(), &st);
  return st.st_mode & 07777;
}

TEST(Cli, InPlaceIsAtomicAndKeepsTheMode) {
  TempDir d;
  std::string f = d / "prog";
  write_file(f, read_file(source), 0750);
  Proc r = prepatch({f, "-o", f});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("prepared 6 sites"), std::string::npos) << r.out;
  EXPECT_EQ(mode_of(f), 0750u);
  EXPECT_EQ(list_dir(d.path()), std::vector<std::string>{"prog"}) << "no temporary file left behind";
  EXPECT_NE(read_file(f), read_file(source));
  Proc a = run({source}, d.path()), b = run({f}, d.path());  // (the unprepared -pg program writes gmon.out there)
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(prepatch({f, "-o", f}).status, 3) << "already prepared";
}

TEST(Cli, OutputTakesTheInputsMode) {
  TempDir d;
  write_file(d / "in", read_file(source), 0711);
  ASSERT_EQ(prepatch({"-q", d / "in", "-o", d / "out"}).status, 0);
  EXPECT_EQ(mode_of(d / "out"), 0711u);
}

TEST(Cli, SitesTable) {
  Proc r = prepatch({"sites", source});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("ADDRESS ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find(" fentry "), std::string::npos);
  EXPECT_NE(r.out.find(" preparable "), std::string::npos);
  EXPECT_NE(r.out.find("6 sites (0 skipped); not prepared"), std::string::npos) << r.out;
}

// A recorded site whose bytes are not a tracer call is reported with its location and left alone; the
// other sites are still prepared.
TEST(Cli, MismatchedSiteIsSkippedAndReported) {
  const std::string rec = std::string(TESTDATA_DIR) + "/basic-gcc-fentry-record";
  auto j = nlohmann::json::parse(prepatch({"sites", rec, "--json"}).out);
  ASSERT_GE(j["sites"].size(), 2u);
  auto victim = j["sites"][1];
  size_t off = victim["file_offset"].get<size_t>();
  std::string b = read_file(rec);
  const char jmp[] = "\xe9\x01\x00\x00\x00\x90";  // jmp +1 over a nop: same length, not a tracer call
  b.replace(off, 6, jmp, 6);
  TempDir d;
  write_file(d / "in", b, 0755);
  Proc r = prepatch({d / "in", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("in " + victim["function"].get<std::string>() + ": skipped: expected a call to mcount/__fentry__"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("found e9 01 00 00 00 90"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("skipped 1"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(d / "out").substr(off, 6), std::string(jmp, 6)) << "a skipped site is never rewritten";
  auto out = nlohmann::json::parse(prepatch({"sites", d / "out", "--json"}).out);
  size_t skipped = 0;
  for (const auto& s : out["sites"])
    if (s["status"] == "skipped") {
      skipped++;
      EXPECT_EQ(s["address"], victim["address"]);
    }
  EXPECT_EQ(skipped, 1u);
  // -q: nothing on success, the skipped site's reason included.
  Proc q = prepatch({"-q", d / "in", "-o", d / "quiet"});
  EXPECT_EQ(q.status, 0) << q.err;
  EXPECT_EQ(q.out + q.err, "");
  EXPECT_EQ(read_file(d / "quiet"), read_file(d / "out"));
}

// A local function with a global alias is one function with two symbols, one site: it is listed
// once, under the global name, whether the site comes from the symbol scan (symbol table order, where
// the two symbols are far apart) or from __mcount_loc.
TEST(Cli, AliasIsOneSiteNamedByItsGlobalSymbol) {
  TempDir d;
  write_file(d / "alias.c",
             "static __attribute__((noinline)) int impl(int x) { return x * 3; }\n"
             "int pub(int) __attribute__((alias(\"impl\")));\n"
             "int main(int argc, char** argv) { (void)argv; return pub(argc) == 3 ? 0 : 1; }\n");
  for (const std::string flags : {"-mfentry", "-mrecord-mcount"}) {
    SCOPED_TRACE(flags);
    Proc cc = run({"gcc", "-O1", "-pg", "-mfentry", flags, d / "alias.c", "-o", d / "alias"});
    ASSERT_EQ(cc.status, 0) << cc.err;
    Proc pp = prepatch({d / "alias", "-o", d / "alias.out"});
    ASSERT_EQ(pp.status, 0) << pp.err;
    auto j = nlohmann::json::parse(prepatch({"sites", d / "alias.out", "--json"}).out);
    std::map<std::string, int> names;
    for (const auto& s : j["sites"]) names[s["function"].get<std::string>()]++;
    EXPECT_EQ(names["pub"], 1) << j.dump();
    EXPECT_EQ(names.count("impl"), 0u) << j.dump();
    EXPECT_EQ(run({d / "alias.out"}).status, 0);
  }
}

// A section's file offset and size as readelf shows them (an oracle beside our own reader).
std::pair<unsigned long long, unsigned long long> readelf_section(const std::string& bin, const std::string& name) {
  Proc r = run({"readelf", "-SW", bin});
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const size_t at = line.find("] " + name + " ");
    if (at == std::string::npos) continue;
    std::istringstream f(line.substr(at + 2 + name.size()));
    std::string type, addr, off, size;
    f >> type >> addr >> off >> size;
    return {std::stoull(off, nullptr, 16), std::stoull(size, nullptr, 16)};
  }
  ADD_FAILURE() << bin << " has no section " << name << ":\n" << r.out;
  return {0, 0};
}

// The table carries the symbols' names, a copy of .strtab. Where .strtab ends the input (ld's layout),
// the output holds them once: .strtab's header points at the table's copy, the output stops copying
// the input there. nm reads the symbols there; strip, which drops .strtab, leaves the table's names;
// and bytes after .strtab that no header describes (a payload appended to a program) keep the input
// whole.
TEST(Cli, SymbolNamesAreStoredOnce) {
  TempDir d;
  ASSERT_EQ(prepatch({"-q", source, "-o", d / "out"}).status, 0);
  const auto [in_off, in_size] = readelf_section(source, ".strtab");
  const auto [str_off, str_size] = readelf_section(d / "out", ".strtab");
  const auto [tab_off, tab_size] = readelf_section(d / "out", "__patch_sites");
  EXPECT_EQ(str_size, in_size);
  EXPECT_GT(str_off, tab_off);
  EXPECT_LE(str_off + str_size, tab_off + tab_size) << ".strtab is the table's names";
  EXPECT_EQ(read_file(d / "out").substr(str_off, str_size), read_file(source).substr(in_off, in_size));
  EXPECT_LT(in_off, tab_off);
  EXPECT_EQ(read_file(d / "out").substr(in_off, in_size).find("main"), std::string::npos) << "the input's copy is left out";
  Proc nm_in = run({"nm", source}), nm_out = run({"nm", d / "out"});
  ASSERT_EQ(nm_out.status, 0) << nm_out.err;
  EXPECT_NE(nm_out.out.find(" T main\n"), std::string::npos) << nm_out.out;
  EXPECT_EQ(nm_out.err, "");

  ASSERT_EQ(run({"strip", "-o", d / "stripped", d / "out"}).status, 0);
  EXPECT_NE(run({"nm", d / "stripped"}).err.find("no symbols"), std::string::npos);
  Proc sites = prepatch({"sites", d / "stripped"});
  ASSERT_EQ(sites.status, 0) << sites.err;
  EXPECT_NE(sites.out.find(" main\n"), std::string::npos) << sites.out;
  EXPECT_EQ(prepatch({"sites", d / "out"}).out, sites.out) << "the same sites, names and all";
  Proc a = run({source}, d.path()), b = run({d / "stripped"}, d.path());  // (gmon.out there)
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.status, b.status);

  const std::string payload = "an appended payload, read through /proc/self/exe";
  write_file(d / "payload", read_file(source) + payload, 0755);
  ASSERT_EQ(prepatch({"-q", d / "payload", "-o", d / "payload.out"}).status, 0);
  const std::string out = read_file(d / "payload.out");
  EXPECT_EQ(out.substr(read_file(source).size(), payload.size()), payload);
  EXPECT_EQ(readelf_section(d / "payload.out", ".strtab").first, in_off) << "kept where it was";
  EXPECT_EQ(run({d / "payload.out"}).out, a.out);
}

// A binary stripped before preparing names none of its functions (its sites come from
// __patchable_function_entries): the readers call each by its site's address, as `sites` lists it,
// so that report keeps them apart and replay shows which called which. Before, every one was an empty
// name: replay printed `() {`, report summed them all in one row. A glob selects one by that address.
TEST(Cli, AStrippedBinarysFunctionsAreCalledByTheirSitesAddress) {
  TempDir d;
  write_file(d / "p.c", "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n"
                        "__attribute__((noinline)) int g(int i) { return i * 3 + 1; }\n"
                        "__attribute__((noinline)) int h(int i) { return g(i) + g(i + 1); }\n"
                        "int main(int argc, char** argv) { int n = atoi(argv[1]), s = 0;\n"
                        "  if (argc > 2) { printf(\"ready %d\\n\", getpid()); fflush(stdout); getchar(); }\n"
                        "  for (int i = 0; i < n; i++) s += h(i);\n  printf(\"%d\\n\", s); return 0; }\n");
  Proc c = run({"gcc", "-O2", "-fpatchable-function-entry=5", "-s", d / "p.c", "-o", d / "p"});
  ASSERT_EQ(c.status, 0) << c.err;
  ASSERT_EQ(prepatch({"-q", d / "p", "-o", d / "out"}).status, 0);
  // The sites by address, and which is which: main is called once, h 3 times, g 6.
  std::map<long, std::string> name_of;
  const nlohmann::json sites = nlohmann::json::parse(prepatch({"sites", "--json", d / "out"}).out);
  for (const auto& s : sites["sites"]) {
    EXPECT_EQ(s["symbol"], "") << s.dump();
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%lx", s["address"].get<long>());
    EXPECT_EQ(s["function"], hex) << s.dump();
    name_of[s["address"]] = hex;
  }
  ASSERT_EQ(name_of.size(), 3u) << sites.dump(1);
  Proc r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace", d / "out", "3"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "33\n");
  Proc rep = prepatch({"report", d / "t.trace"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  std::map<long, std::string> by_calls;  // a row's last two columns: calls, function
  std::istringstream rows(rep.out);
  for (std::string line; std::getline(rows, line);) {
    std::istringstream w(line);
    std::vector<std::string> col{std::istream_iterator<std::string>(w), {}};
    if (col.size() >= 2 && col.back().starts_with("0x")) by_calls[std::stol(col[col.size() - 2])] = col.back();
  }
  ASSERT_EQ(by_calls.size(), 3u) << rep.out;
  std::set<std::string> shown;
  for (const auto& [n, f] : by_calls) shown.insert(f);
  std::set<std::string> listed;
  for (const auto& [a, f] : name_of) listed.insert(f);
  EXPECT_EQ(shown, listed) << rep.out;
  const std::string main = by_calls[1], h = by_calls[3], g = by_calls[6];
  Proc replay = prepatch({"replay", d / "t.trace"});
  ASSERT_EQ(replay.status, 0) << replay.err;
  EXPECT_NE(replay.out.find("| " + main + "() {\n"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("|   " + h + "() {\n"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("|     " + g + "();\n"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("|   } /* " + h + " */\n"), std::string::npos) << replay.out;
  // `counts` and `sites` call them so too.
  r = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "out", "3"});
  ASSERT_EQ(r.status, 0) << r.err;
  Proc counts = prepatch({"counts", d / "out", d / "c"});
  ASSERT_EQ(counts.status, 0) << counts.err;
  for (const auto& [calls, f] : by_calls) {
    EXPECT_TRUE(std::regex_search(counts.out, std::regex("\n" + std::to_string(calls) + " +0x0*" + f.substr(2) + " " + f + "\n"))) << counts.out;
  }
  Proc table = prepatch({"sites", d / "out"});
  for (const auto& [a, f] : name_of) {
    EXPECT_NE(table.out.find(" prepared   " + f + "\n"), std::string::npos) << table.out;
  }
  // And the shim's `ctl status`, live.
  Background p({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c2", d / "out", "3", "wait"}, d.path());
  ASSERT_GT(p.target(), 0);
  Proc status = prepatch({"ctl", std::to_string(p.target()), "status"});
  ASSERT_EQ(status.status, 0) << status.err;
  EXPECT_NE(status.out.find("\nenabled " + main + " 1\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("\nenabled " + h + " 0\n"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("\nenabled " + g + " 0\n"), std::string::npos) << status.out;
  // A glob selects one by that address.
  Proc off = prepatch({"ctl", std::to_string(p.target()), "disable", g});
  ASSERT_EQ(off.status, 0) << off.err;
  status = prepatch({"ctl", std::to_string(p.target()), "status"});
  EXPECT_NE(status.out.find("\nenabled " + h + " 0\n"), std::string::npos) << status.out;
  EXPECT_EQ(status.out.find("\nenabled " + g + " "), std::string::npos) << status.out;
  EXPECT_EQ(p.finish().first, 0);
}

}  // namespace
}  // namespace prepatch::test
