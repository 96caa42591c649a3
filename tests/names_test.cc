// One naming rule (issue 25; README.md, "Names"): the demangler against GNU's on every C++ symbol of
// real libraries, and testdata/names.cc (namespaces, templates, overloads, operators, a lambda, an
// anonymous namespace) through every command: sites, counts, report, replay, export and ctl print
// demangled names (raw ones with --mangled), and globs in the demangled form select exactly the
// functions GNU's demangler says they name, at start (PREPATCH_TRACE, PREPATCH_NOTRACE) and live.
#include <cxxabi.h>
#include <fnmatch.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "shim/names.h"
#include "support.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;
const std::string program = td + "/names-fentry";

std::string gnu(const std::string& raw) {
  int status = 0;
  char* d = abi::__cxa_demangle(raw.c_str(), nullptr, nullptr, &status);
  std::string r = d ? d : raw;
  std::free(d);
  return r;
}

// Defined symbols of `file` (nm; -D for a shared library's exported ones).
std::vector<std::string> symbols(const std::string& file, bool dynamic) {
  std::vector<std::string> argv = {"nm", "--defined-only"};
  if (dynamic) argv.push_back("-D");
  argv.push_back(file);
  Proc p = run(argv);
  EXPECT_EQ(p.status, 0) << p.err;
  std::vector<std::string> out;
  std::istringstream in(p.out);
  for (std::string line; std::getline(in, line);) {
    std::string name = line.substr(line.rfind(' ') + 1);
    name = name.substr(0, name.find('@'));
    if (name.rfind("_Z", 0) == 0) out.push_back(name);
  }
  return out;
}

TEST(Demangler, ReadsEveryNameItTakesAsGnuDoesAndTakesNearlyEveryFunction) {
  static shim::Demangler d;
  static char out[4096];
  Proc cxx = run({"g++", "-print-file-name=libstdc++.so"});
  const std::string libstdcxx = cxx.out.substr(0, cxx.out.find('\n'));
  // The library, prepatch itself (CLI11, nlohmann::json, gtest-free but template-heavy), names.cc; the
  // share of functions read that each must reach.
  struct Corpus {
    std::string file;
    bool dynamic;
    size_t percent;
  };
  for (const auto& [file, dynamic, percent] : {Corpus{libstdcxx, true, 99}, Corpus{PREPATCH_BIN, false, 85}, Corpus{program, false, 100}}) {
    SCOPED_TRACE(file);
    size_t taken = 0, functions = 0, functions_taken = 0, mismatched = 0;
    for (const std::string& raw : symbols(file, dynamic)) {
      const shim::Demangled r = d.run(raw.data(), raw.size(), out, sizeof out);
      // Not functions: vtables, typeinfo, guard variables, TLS wrappers (T and G special names).
      const bool function = raw.rfind("_ZT", 0) != 0 && raw.rfind("_ZG", 0) != 0;
      functions += function;
      if (!r.len) continue;
      taken++;
      functions_taken += function;
      const std::string ours(out, r.len);
      if (ours != gnu(raw) && mismatched++ < 10) ADD_FAILURE() << raw << "\n  ours " << ours << "\n  GNU  " << gnu(raw);
    }
    EXPECT_EQ(mismatched, 0u);
    EXPECT_GE(functions, 15u);
    // Declined: array and member-pointer types, decltype, expressions, transaction clones.
    EXPECT_GE(functions_taken * 100, functions * percent) << functions_taken << " of " << functions;
    std::cout << file << ": " << taken << " names read, " << functions_taken << " of " << functions << " functions\n";
  }
}

// The filter that spares the shim most demangling must never turn away a name a glob matches: every
// piece of every name read is tried as a glob against the raw symbol.
TEST(Demangler, ThePrefilterNeverRejectsANameItsGlobMatches) {
  static shim::Demangler d;
  static char out[4096];
  Proc cxx = run({"g++", "-print-file-name=libstdc++.so"});
  size_t tried = 0;
  for (const std::string& raw : symbols(cxx.out.substr(0, cxx.out.find('\n')), true)) {
    const shim::Demangled r = d.run(raw.data(), raw.size(), out, sizeof out);
    if (!r.len) continue;
    const std::string text(out, r.len);
    for (size_t from = 0; from < text.size(); from += 7) {
      const std::string glob = "*" + text.substr(from, 11) + "*";
      ASSERT_TRUE(shim::may_match_demangled(glob.data(), glob.size(), raw.data(), raw.size())) << raw << " " << glob;
      tried++;
    }
    const std::string name = text.substr(r.name_begin, r.name_end - r.name_begin);
    ASSERT_TRUE(shim::may_match_demangled(name.data(), name.size(), raw.data(), raw.size())) << raw << " " << name;
  }
  EXPECT_GT(tried, 10000u);
  // And it does turn names away: another class, another function, another raw symbol; words the
  // demangler writes itself (`operator new`) and numbers it computes cannot tell.
  const std::string raw = "_ZN4YAML7Scanner4scanEv";
  for (const char* g : {"YAML::Scanner::scan*", "*Scanner*", "YAML::*", "*::scan()", "operator new*", "*{lambda()#2}*", "*<5ul>*"})
    EXPECT_TRUE(shim::may_match_demangled(g, std::strlen(g), raw.data(), raw.size())) << g;
  for (const char* g : {"YAML::Parser::*", "*::parse()", "_ZN4YAML6Parser*", "Scanner2::*"})
    EXPECT_FALSE(shim::may_match_demangled(g, std::strlen(g), raw.data(), raw.size())) << g;
}

// The functions a glob should select, by GNU's demangled name: the glob matches the whole name, the
// name without its return type, or the qualified name (the text before the parameter list).
std::set<std::string> gnu_selection(const std::string& glob, const std::vector<std::string>& raws) {
  std::set<std::string> want;
  for (const std::string& raw : raws) {
    const std::string full = gnu(raw);
    std::vector<std::string> forms = {raw, full};
    // The return type ends at the space before the qualified name, which starts no template argument
    // list: for names.cc's functions, the last space outside <> and () before the first '('.
    size_t depth = 0, name_at = 0, paren = full.size();
    for (size_t i = 0; i < full.size(); i++) {
      const char c = full[i];
      if ((c == '(' ) && depth == 0 && !(i >= 9 && full.compare(i - 8, 8, "operator") == 0) && full.compare(i, 10, "(anonymous") != 0) {
        paren = i;
        break;
      }
      if (c == '<' || c == '(') depth++;
      else if ((c == '>' || c == ')') && depth) depth--;
      else if (c == ' ' && depth == 0) name_at = i + 1;
    }
    if (raw.rfind("_Z", 0) == 0) {
      forms.push_back(full.substr(name_at));
      forms.push_back(full.substr(name_at, paren - name_at));
    }
    for (const std::string& f : forms)
      if (fnmatch(glob.c_str(), f.c_str(), 0) == 0) want.insert(full);
  }
  return want;
}

std::vector<std::string> site_symbols() {
  Proc s = prepatch({"sites", "--json", program});
  EXPECT_EQ(s.status, 0) << s.err;
  std::vector<std::string> raws;
  const nlohmann::json j = nlohmann::json::parse(s.out);
  for (const auto& site : j["sites"]) raws.push_back(site["symbol"]);
  return raws;
}

// Functions called, by shown name, from a counts file.
std::set<std::string> counted(const TempDir& d, const std::string& prepared, const std::string& counts) {
  Proc c = prepatch({"counts", "--json", prepared, counts});
  EXPECT_EQ(c.status, 0) << c.err;
  std::set<std::string> names;
  const nlohmann::json j = nlohmann::json::parse(c.out);
  for (const auto& row : j) names.insert(row["function"]);
  (void)d;
  return names;
}

TEST(Names, GlobsInDemangledFormSelectExactlyTheFunctionsTheyName) {
  TempDir d;
  ASSERT_EQ(prepatch({program, "-o", d / "names"}).status, 0);
  const std::vector<std::string> raws = site_symbols();
  for (const std::string glob : {"shapes::Circle::*", "shapes::area", "shapes::area(shapes::Square const&)", "util::twice<int>*",
                                 "*util::twice<double>(double)", "*{lambda(int)#1}*", "shapes::Vec::operator+*", "shapes::Vec::operator==(*",
                                 "(anonymous namespace)::hidden", "shapes::Circle::~Circle()", "*::Inner::depth", "_ZN6shapes6Circle*",
                                 "round_trip(int)", "main"}) {
    SCOPED_TRACE(glob);
    const std::set<std::string> want = gnu_selection(glob, raws);
    EXPECT_FALSE(want.empty());
    Proc r = run({"env", "PREPATCH_TRACE=" + glob, "PREPATCH_COUNTS=" + d / "c", d / "names"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(counted(d, d / "names", d / "c"), want);
  }
  // PREPATCH_NOTRACE takes the same forms: every shapes:: function but Circle's.
  Proc r = run({"env", "PREPATCH_TRACE=shapes::*", "PREPATCH_NOTRACE=shapes::Circle::*", "PREPATCH_COUNTS=" + d / "c", d / "names"});
  ASSERT_EQ(r.status, 0) << r.err;
  std::set<std::string> want = gnu_selection("shapes::*", raws);
  for (const std::string& c : gnu_selection("shapes::Circle::*", raws)) want.erase(c);
  EXPECT_EQ(counted(d, d / "names", d / "c"), want);
  // A glob that names nothing: a warning, and the program runs untraced.
  Proc none = run({"env", "PREPATCH_TRACE=nowhere::*", "PREPATCH_COUNTS=" + d / "none", d / "names"});
  EXPECT_EQ(none.status, 0);
  EXPECT_NE(none.err.find("PREPATCH_TRACE: no site's function matches nowhere::*"), std::string::npos) << none.err;
}

TEST(Names, EveryCommandShowsDemangledNamesAndRawOnesWithMangled) {
  TempDir d;
  ASSERT_EQ(prepatch({program, "-o", d / "names"}).status, 0);
  const std::vector<std::string> raws = site_symbols();
  std::set<std::string> shown, raw_set(raws.begin(), raws.end());
  for (const std::string& r : raws) shown.insert(gnu(r));
  // sites: the table's last column.
  const auto last_column = [](const std::string& out, size_t skip) {
    std::set<std::string> names;
    std::istringstream in(out);
    std::string line;
    for (size_t i = 0; i < skip; i++) std::getline(in, line);
    while (std::getline(in, line))
      if (line.rfind("0x", 0) == 0) names.insert(line.substr(line.find("prepared") + 11));
    return names;
  };
  Proc s = prepatch({"sites", d / "names"});
  ASSERT_EQ(s.status, 0);
  EXPECT_EQ(last_column(s.out, 1), shown);
  Proc sm = prepatch({"sites", "--mangled", d / "names"});
  EXPECT_EQ(last_column(sm.out, 1), raw_set);
  // counts, and a graph trace read by report, replay and export.
  ASSERT_EQ(run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "names"}).status, 0);
  EXPECT_EQ(counted(d, d / "names", d / "c"), shown);
  Proc cm = prepatch({"counts", "--mangled", d / "names", d / "c"});
  for (const std::string& r : raws) EXPECT_NE(cm.out.find(" " + r + "\n"), std::string::npos) << r;
  ASSERT_EQ(run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t", d / "names"}).status, 0);
  Proc rep = prepatch({"report", d / "t"});
  ASSERT_EQ(rep.status, 0) << rep.err;
  for (const std::string& n : shown) EXPECT_NE(rep.out.find("  " + n + "\n"), std::string::npos) << n;
  Proc repm = prepatch({"report", "--mangled", d / "t"});
  for (const std::string& r : raws) EXPECT_NE(repm.out.find("  " + r + "\n"), std::string::npos) << r;
  // replay: a demangled name already has its parameters: no "()" added; C names get theirs.
  Proc rp = prepatch({"replay", d / "t"});
  ASSERT_EQ(rp.status, 0);
  EXPECT_NE(rp.out.find("| main() {\n"), std::string::npos);
  EXPECT_NE(rp.out.find("|   round_trip(int) {\n"), std::string::npos) << rp.out.substr(0, 2000);
  EXPECT_NE(rp.out.find("|     shapes::Circle::scale(int);\n"), std::string::npos);
  EXPECT_NE(rp.out.find("|     shapes::Circle::~Circle();\n"), std::string::npos);
  EXPECT_EQ(rp.out.find(")()"), std::string::npos);
  Proc rpf = prepatch({"replay", d / "t", "--function", "shapes::area"});
  EXPECT_NE(rpf.out.find("|     shapes::area(shapes::Square const&) {\n"), std::string::npos) << rpf.out;
  EXPECT_EQ(rpf.out.find("round_trip"), std::string::npos);
  Proc rpm = prepatch({"replay", "--mangled", d / "t"});
  EXPECT_NE(rpm.out.find("|   _Z10round_tripi() {\n"), std::string::npos) << rpm.out.substr(0, 2000);
  ASSERT_EQ(prepatch({"export", d / "t", "-o", d / "t.json"}).status, 0);
  std::set<std::string> exported;
  const nlohmann::json j = nlohmann::json::parse(read_file(d / "t.json"));
  for (const auto& e : j["traceEvents"]) exported.insert(e["name"]);
  EXPECT_EQ(exported, shown);
}

TEST(Names, CtlEnablesByDemangledNamesReportsThemAndRefusesAGlobThatNamesNothing) {
  TempDir d;
  ASSERT_EQ(prepatch({program, "-o", d / "names"}).status, 0);
  const std::vector<std::string> raws = site_symbols();
  Background p({"env", "PREPATCH_COUNTS=" + d / "c", d / "names", "wait"}, d.path());
  ASSERT_GT(p.target(), 0);
  const std::string pid = std::to_string(p.target());
  std::set<std::string> want = gnu_selection("shapes::Square::*", raws);
  want.merge(gnu_selection("shapes::area(shapes::Square const&)", raws));
  Proc e = prepatch({"ctl", pid, "enable", "shapes::Square::*,shapes::area(shapes::Square const&)"});
  ASSERT_EQ(e.status, 0) << e.err;
  EXPECT_EQ(e.out, "ok: enabled " + std::to_string(want.size()) + " sites (" + std::to_string(want.size()) + " matched)\n");
  p.say("round");
  Proc s = prepatch({"ctl", pid, "status"});
  ASSERT_EQ(s.status, 0) << s.err;
  std::set<std::string> enabled, enabled_raw;
  std::istringstream in(s.out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("enabled ", 0) == 0) enabled.insert(line.substr(8, line.rfind(' ') - 8));
  EXPECT_EQ(enabled, want) << s.out;
  Proc sm = prepatch({"ctl", pid, "status", "--mangled"});
  std::istringstream inm(sm.out);
  for (std::string line; std::getline(inm, line);)
    if (line.rfind("enabled ", 0) == 0) enabled_raw.insert(gnu(line.substr(8, line.rfind(' ') - 8)));
  EXPECT_EQ(enabled_raw, want) << sm.out;
  Proc none = prepatch({"ctl", pid, "enable", "nowhere::*"});
  EXPECT_EQ(none.status, 4);
  EXPECT_EQ(none.err, "error: no site's function matches nowhere::*\n");
  Proc off = prepatch({"ctl", pid, "disable", "nowhere::*"});
  EXPECT_EQ(off.status, 4);
  auto [status, rest] = p.finish();
  EXPECT_EQ(status, 0) << rest;
}

// Symbols someone else made: one with a byte that is not UTF-8, one with a terminal escape sequence
// (objcopy renames them in a real program). Every view prints them with U+FFFD in place of each bad
// byte: nothing reaches a terminal raw, and the JSON (sites, counts, export) parses as strict UTF-8.
TEST(Names, BytesThatAreNotUtf8AndControlCharactersArePrintedAsReplacements) {
  TempDir d;
  write_file(d / "a.c", "__attribute__((noinline)) int leaf(int x) { return x * 3; }\n"
                         "__attribute__((noinline)) int esc(int x) { return leaf(x) + 1; }\n"
                         "int main(void) { return esc(1) - 4; }\n");
  ASSERT_EQ(run({"gcc", "-O1", "-pg", "-mfentry", d / "a.c", "-o", d / "a"}).status, 0);
  Proc oc = run({"objcopy", "--redefine-sym", "leaf=le\xff" "af", "--redefine-sym", "esc=esc\x1b[2Jx", d / "a", d / "b"});
  ASSERT_EQ(oc.status, 0) << oc.err;
  ASSERT_EQ(prepatch({"-q", d / "b", "-o", d / "b.p"}).status, 0);
  const std::string leaf = "le\xef\xbf\xbd" "af", esc = "esc\xef\xbf\xbd[2Jx";
  const auto clean = [](const std::string& out) { return out.find('\x1b') == std::string::npos && out.find('\xff') == std::string::npos; };

  Proc sites = prepatch({"sites", d / "b.p", "--json"});
  ASSERT_EQ(sites.status, 0) << sites.err;
  std::set<std::string> functions, symbols;
  const nlohmann::json sj = nlohmann::json::parse(sites.out);
  for (const auto& s : sj["sites"]) functions.insert(s["function"]), symbols.insert(s["symbol"]);
  EXPECT_EQ(functions, (std::set<std::string>{leaf, esc, "main"}));
  EXPECT_EQ(symbols, (std::set<std::string>{leaf, "esc\x1b[2Jx", "main"}));  // the raw symbol, its escape written as \u001b
  EXPECT_TRUE(clean(sites.out)) << sites.out;
  Proc plain = prepatch({"sites", d / "b.p"});
  EXPECT_TRUE(clean(plain.out)) << plain.out;

  Proc g = run({"env", "PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace", d / "b.p"}, d.path());
  ASSERT_EQ(g.status, 0) << g.err;
  for (const std::vector<std::string>& view : std::vector<std::vector<std::string>>{
           {"report", d / "t.trace"}, {"report", d / "t.trace", "--mangled"}, {"replay", d / "t.trace"},
           {"export", d / "t.trace", "--format", "folded", "-o", "-"}, {"export", d / "t.trace", "--format", "svg", "-o", "-"}}) {
    Proc v = prepatch(view);
    ASSERT_EQ(v.status, 0) << view[0] << ": " << v.err;
    EXPECT_TRUE(clean(v.out)) << view[0] << ": " << v.out;
    if (view.back() == "-" && view[3] == "svg") continue;  // its frames narrower than a pixel are merged, unnamed
    EXPECT_NE(v.out.find(leaf), std::string::npos) << view[0] << ": " << v.out;
    EXPECT_NE(v.out.find(esc), std::string::npos) << view[0] << ": " << v.out;
  }
  Proc chrome = prepatch({"export", d / "t.trace", "-o", "-"});
  ASSERT_EQ(chrome.status, 0) << chrome.err;
  std::set<std::string> exported;
  const nlohmann::json cjs = nlohmann::json::parse(chrome.out);  // throws on bytes that are not UTF-8
  for (const auto& e : cjs["traceEvents"]) exported.insert(e["name"]);
  EXPECT_EQ(exported, (std::set<std::string>{leaf, esc, "main"}));

  Proc c = run({"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "b.p"}, d.path());
  ASSERT_EQ(c.status, 0) << c.err;
  Proc counts = prepatch({"counts", d / "c"});
  ASSERT_EQ(counts.status, 0) << counts.err;
  EXPECT_TRUE(clean(counts.out)) << counts.out;
  EXPECT_NE(counts.out.find(esc), std::string::npos) << counts.out;
  Proc cj = prepatch({"counts", d / "c", "--json"});
  ASSERT_EQ(cj.status, 0) << cj.err;
  std::set<std::string> counted;
  const nlohmann::json cjson = nlohmann::json::parse(cj.out);
  for (const auto& r : cjson) counted.insert(r["function"]);
  EXPECT_EQ(counted, (std::set<std::string>{leaf, esc, "main"}));
}

}  // namespace
}  // namespace prepatch::test
