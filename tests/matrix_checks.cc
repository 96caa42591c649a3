// Checks both flavor matrices share (tests/matrix_checks.h).
#include "matrix_checks.h"

#include <LIEF/ELF.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "support.h"

namespace prepatch::test {

nlohmann::json sites_json(const std::string& file) {
  Proc r = prepatch({"sites", file, "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  return r.status == 0 ? nlohmann::json::parse(r.out) : nlohmann::json{{"sites", nlohmann::json::array()}};
}

void expect_off_form(const std::map<unsigned long long, Insn>& insns, unsigned long long addr, unsigned len, const std::string& isa) {
  auto it = insns.find(addr);
  ASSERT_NE(it, insns.end()) << "objdump has no instruction starting at the site";
  if (isa == "arm" && len == 8) {
    EXPECT_EQ(it->second.mnemonic, "mov");
    EXPECT_EQ(it->second.length, 4u);
    auto toggled = insns.find(addr + 4);
    ASSERT_NE(toggled, insns.end()) << "objdump has no instruction at the site's second word";
    EXPECT_EQ(toggled->second.mnemonic, "nop");
    return;
  }
  EXPECT_EQ(it->second.length, len);
  if (isa == "arm") {
    EXPECT_EQ(it->second.mnemonic, "ldr.w");
  } else {
    EXPECT_EQ(it->second.mnemonic.substr(0, 3), "nop") << it->second.mnemonic;
  }
}

void expect_same_sites(const nlohmann::json& prepared, const nlohmann::json& input) {
  ASSERT_EQ(prepared["sites"].size(), input["sites"].size());
  for (size_t i = 0; i < prepared["sites"].size(); i++) {
    EXPECT_EQ(prepared["sites"][i]["address"], input["sites"][i]["address"]);
    EXPECT_EQ(prepared["sites"][i]["function"], input["sites"][i]["function"]);
    EXPECT_EQ(prepared["sites"][i]["kind"], input["sites"][i]["kind"]);
  }
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

void expect_sites_are_compiler_records(const std::string& bin, const nlohmann::json& sites) {
  SCOPED_TRACE(bin);
  std::unique_ptr<LIEF::ELF::Binary> lief = LIEF::ELF::Parser::parse(bin);
  ASSERT_TRUE(lief);
  for (const char* record : {"__mcount_loc", "__patchable_function_entries"}) {
    if (!lief->has_section(record)) continue;
    const LIEF::ELF::Section& sec = lief->get_section(record);
    std::vector<uint8_t> content = sec.content();
    std::map<unsigned long long, long long> addends;  // a PIE's record may hold 0, the value in its relocation (RISC-V)
    for (const LIEF::ELF::Relocation& r : lief->dynamic_relocations())
      if (r.address() >= sec.virtual_address() && r.address() < sec.virtual_address() + sec.size()) addends[r.address()] = r.addend();
    std::vector<unsigned long long> addrs;
    const size_t w = static_cast<unsigned>(lief->type()) == ELFCLASS32 ? 4 : 8;  // an address's size (LIEF keeps the ELF values)
    for (size_t i = 0; i + w <= content.size(); i += w) {
      unsigned long long v = 0;
      std::memcpy(&v, content.data() + i, w);
      if (!v && addends.count(sec.virtual_address() + i)) v = static_cast<unsigned long long>(addends[sec.virtual_address() + i]);
      if (v) addrs.push_back(v);
    }
    ASSERT_EQ(addrs.size(), sites.size()) << record;
    std::sort(addrs.begin(), addrs.end());
    for (size_t i = 0; i < addrs.size(); i++) {
      auto site = sites[i]["address"].get<unsigned long long>();
      // mcount records name the call; patchable records the pad, whose entry part may follow
      // M nops and an endbr64.
      EXPECT_LE(addrs[i], site);
      EXPECT_LE(site, addrs[i] + 16);
    }
  }
}

}  // namespace prepatch::test
