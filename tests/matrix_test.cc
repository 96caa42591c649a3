// Tier 2: every testdata program in every site flavor, built at test-build time with gcc and clang,
// is prepared, run, and compared with the original and with independent oracles (nm, objdump, LIEF).
#include <LIEF/ELF.hpp>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "elf/elf.h"
#include "elf/mapped_file.h"
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

nlohmann::json sites_json(const std::string& file) {
  Proc r = prepatch({"sites", file, "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  return nlohmann::json::parse(r.out);
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
    auto it = insns.find(addr);
    ASSERT_NE(it, insns.end()) << "objdump has no instruction starting at the site";
    EXPECT_EQ(it->second.length, s["length"].get<unsigned>());
    // Thumb-2's off form is no nop but `pop {lr}` (ldr.w lr, [sp], #4): it undoes the push {lr} before the site.
    if (b.isa == "arm") {
      EXPECT_EQ(it->second.mnemonic, "ldr.w");
    } else {
      EXPECT_EQ(it->second.mnemonic.substr(0, 3), "nop") << it->second.mnemonic;
    }
    unsigned len = s["length"];
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
  for (const char* record : {"__mcount_loc", "__patchable_function_entries"}) {
    std::unique_ptr<LIEF::ELF::Binary> lief = LIEF::ELF::Parser::parse(b.bin);
    if (!lief->has_section(record)) continue;
    const LIEF::ELF::Section& sec = lief->get_section(record);
    std::vector<uint8_t> content = sec.content();
    std::map<unsigned long long, long long> addends;  // a PIE's record may hold 0, the value in its relocation (RISC-V)
    for (const LIEF::ELF::Relocation& r : lief->dynamic_relocations())
      if (r.address() >= sec.virtual_address() && r.address() < sec.virtual_address() + sec.size()) addends[r.address()] = r.addend();
    std::vector<unsigned long long> addrs;
    for (size_t i = 0; i + 8 <= content.size(); i += 8) {
      unsigned long long v;
      std::memcpy(&v, content.data() + i, 8);
      if (!v && addends.count(sec.virtual_address() + i)) v = static_cast<unsigned long long>(addends[sec.virtual_address() + i]);
      if (v) addrs.push_back(v);
    }
    ASSERT_EQ(addrs.size(), j["sites"].size()) << record;
    std::sort(addrs.begin(), addrs.end());
    for (size_t i = 0; i < addrs.size(); i++) {
      auto site = j["sites"][i]["address"].get<unsigned long long>();
      // mcount records name the call; patchable records the pad, whose entry part may follow
      // M nops and an endbr64.
      EXPECT_LE(addrs[i], site);
      EXPECT_LE(site, addrs[i] + 16);
    }
  }

  // The prepared binary lists the same sites.
  const Prepared& p = prepared(b);
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  auto pj = sites_json(p.out);
  ASSERT_EQ(pj["sites"].size(), j["sites"].size());
  for (size_t i = 0; i < pj["sites"].size(); i++) {
    EXPECT_EQ(pj["sites"][i]["address"], j["sites"][i]["address"]);
    EXPECT_EQ(pj["sites"][i]["function"], j["sites"][i]["function"]);
    EXPECT_EQ(pj["sites"][i]["kind"], j["sites"][i]["kind"]);
  }
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

// Our reader and LIEF 0.9 must agree on sections, segments and function symbols, before and after.
void expect_agrees_with_lief(const std::string& path) {
  SCOPED_TRACE(path);
  MappedFile f(path);
  elf::Elf ours(f.bytes(), path);
  std::unique_ptr<LIEF::ELF::Binary> lief = LIEF::ELF::Parser::parse(path);
  ASSERT_TRUE(lief);

  std::vector<std::tuple<std::string, unsigned long long, unsigned long long, unsigned long long, unsigned>> a, b;
  for (const elf::Section& s : ours.sections())
    a.emplace_back(std::string(s.name), s.offset, s.size, s.addr, s.type);
  for (const LIEF::ELF::Section& s : lief->sections())
    b.emplace_back(s.name(), s.offset(), s.size(), s.virtual_address(), static_cast<unsigned>(s.type()));
  EXPECT_EQ(a, b) << "sections";

  std::vector<std::tuple<unsigned, unsigned long long, unsigned long long, unsigned long long, unsigned long long, unsigned>> c, d;
  for (const elf::Segment& s : ours.segments()) c.emplace_back(s.type, s.offset, s.vaddr, s.filesz, s.memsz, s.flags);
  for (const LIEF::ELF::Segment& s : lief->segments())
    d.emplace_back(static_cast<unsigned>(s.type()), s.file_offset(), s.virtual_address(), s.physical_size(), s.virtual_size(),
                   static_cast<unsigned>(s.flags()));
  EXPECT_EQ(c, d) << "segments";

  std::multiset<std::tuple<std::string, unsigned long long, unsigned long long>> e, g;
  if (const elf::Section* st = ours.symtab())
    for (const elf::Symbol& s : ours.symbols(*st))
      if (s.type == STT_FUNC) e.emplace(std::string(s.name), s.value, s.size);
  for (const LIEF::ELF::Symbol& s : lief->static_symbols())
    if (static_cast<unsigned>(s.type()) == STT_FUNC) g.emplace(s.name(), s.value(), s.size());
  EXPECT_EQ(e, g) << "function symbols";
  EXPECT_FALSE(e.empty());

  std::vector<std::pair<long long, unsigned long long>> dyn_ours, dyn_lief;
  for (const elf::Dyn& x : ours.dynamic())
    if (x.tag != DT_NULL) dyn_ours.emplace_back(x.tag, x.val);
  for (const LIEF::ELF::DynamicEntry& x : lief->dynamic_entries())
    if (static_cast<long long>(x.tag()) != DT_NULL) dyn_lief.emplace_back(static_cast<long long>(x.tag()), x.value());
  EXPECT_EQ(dyn_ours, dyn_lief) << "dynamic section";

  // LIEF finds relocations through the dynamic section; a static non-PIE binary has none (its
  // .rela.plt IRELATIVEs are applied by libc's start-up code), so compare where there is one.
  if (dyn_ours.empty()) return;
  std::multiset<std::tuple<unsigned long long, unsigned, long long>> rel_ours, rel_lief;
  for (const elf::Section& sec : ours.sections())
    if ((sec.type == SHT_RELA || sec.type == SHT_REL) && (sec.flags & SHF_ALLOC))
      for (const elf::Reloc& r : ours.relocations(sec)) rel_ours.emplace(r.offset, r.type, r.addend);
  for (const LIEF::ELF::Relocation& r : lief->dynamic_relocations()) rel_lief.emplace(r.address(), r.type(), r.addend());
  // RISC-V's ld counts .rela.plt inside DT_RELASZ too, so LIEF lists those relocations twice.
  for (const LIEF::ELF::Relocation& r : lief->pltgot_relocations())
    if (!rel_lief.count({r.address(), r.type(), r.addend()})) rel_lief.emplace(r.address(), r.type(), r.addend());
  EXPECT_EQ(rel_ours, rel_lief) << "dynamic relocations";
}

TEST_P(Matrix, ReaderAgreesWithLief) {
  const Prepared& p = prepared(GetParam());
  expect_agrees_with_lief(GetParam().bin);
  ASSERT_EQ(p.result.status, 0) << p.result.err;
  expect_agrees_with_lief(p.out);
}

INSTANTIATE_TEST_SUITE_P(AllFlavors, Matrix, ::testing::ValuesIn(manifest()),
                         [](const auto& info) { return info.param.name(); });

TEST(Manifest, CoversEveryProgramAndFlavor) {
  // A typo in tests/CMakeLists.txt must not silently shrink the matrix to nothing.
  EXPECT_GE(manifest().size(), 4u * 20u);
}

}  // namespace
}  // namespace prepatch::test
