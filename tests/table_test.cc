// The __patch_sites format: round trip, and every malformed table refused with its offset.
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "rewriter/embed.h"
#include "rewriter/table.h"

namespace prepatch::test {
namespace {

Table sample() {
  Table t;
  t.machine = EM_X86_64;
  t.flags = table_pie;
  t.strings = {'\0', 'f', '\0', 'g', '\0'};
  t.entries = {{0x1000, 1, SiteKind::fentry, 5, arch::CallForm::call_rel32, site_crosses_word},
               {0x1010, 3, SiteKind::mcount, 6, arch::CallForm::addr32_call_rel32, 0}};
  return t;
}

TEST(Table, RoundTripsInBothByteOrders) {
  for (bool little : {true, false}) {
    elf::Codec c{true, little};
    auto b = encode_table(sample(), c);
    EXPECT_EQ(b.size(), 64u + 2 * 16 + 5);
    Table t = decode_table(b, c, "f", 0);
    EXPECT_EQ(t.machine, EM_X86_64);
    EXPECT_EQ(t.flags, table_pie);
    ASSERT_EQ(t.entries.size(), 2u);
    EXPECT_EQ(t.entries[1].addr, 0x1010u);
    EXPECT_EQ(t.entries[1].length, 6);
    EXPECT_EQ(t.entries[1].call_form, arch::CallForm::addr32_call_rel32);
    EXPECT_EQ(t.name(t.entries[0]), "f");
    EXPECT_EQ(t.name(t.entries[1]), "g");
    EXPECT_EQ(t.entries[0].flags, site_crosses_word);
  }
}

void expect_rejected(std::vector<u8> b, u64 offset, const std::string& what) {
  try {
    decode_table(b, elf::Codec{true, true}, "f", 0x100);
    FAIL() << "accepted a table with " << what;
  } catch (const InputError& e) {
    EXPECT_EQ(e.offset(), 0x100 + offset) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Table, RejectsMalformedTables) {
  elf::Codec c{true, true};
  auto good = encode_table(sample(), c);
  auto b = good;
  b[0] = 'X';
  expect_rejected(b, 0, "magic");
  b = good;
  c.put(b, 8, 2, 99);
  expect_rejected(b, 8, "version");
  b = good;
  c.put(b, 16, 4, 1000);
  expect_rejected(b, 16, "runs past the end");
  b = good;
  c.put(b, 64 + 16, 8, 0x1002);  // second entry overlaps the first
  expect_rejected(b, 64 + 16, "sorted");
  b = good;
  c.put(b, 64 + 8, 4, 99);
  expect_rejected(b, 64 + 8, "name offset");
  b = good;
  b[64 + 12] = 9;
  expect_rejected(b, 64 + 12, "kind");
  expect_rejected(std::vector<u8>(good.begin(), good.begin() + 40), 40, "header");
}

// The preparer checks a call's reach from the shim only at the lowest and the highest site of each
// kind and call form (embed.h Reach): those must be the ones it keeps, whatever order sites come in.
TEST(Reach, KeepsTheLowestAndHighestSiteOfEachKindAndCallForm) {
  Reach r;
  auto site = [](u64 addr, SiteKind k) { return Site(addr, k, Source::symbols); };
  r.add(site(0x5000, SiteKind::fentry), arch::CallForm::call_rel32);
  r.add(site(0x1000, SiteKind::fentry), arch::CallForm::call_rel32);
  r.add(site(0x9000, SiteKind::fentry), arch::CallForm::call_rel32);
  r.add(site(0x3000, SiteKind::fentry), arch::CallForm::call_rel32);
  r.add(site(0x7000, SiteKind::fentry), arch::CallForm::addr32_call_rel32);
  r.add(site(0x2000, SiteKind::patchable), arch::CallForm::call_rel32);
  std::vector<std::tuple<u64, SiteKind, arch::CallForm>> ends;
  r.for_each_end([&](const Site& s, arch::CallForm f) { ends.emplace_back(s.addr, s.kind, f); });
  std::sort(ends.begin(), ends.end());
  using K = SiteKind;
  using F = arch::CallForm;
  EXPECT_EQ(ends, (std::vector<std::tuple<u64, SiteKind, arch::CallForm>>{{0x1000, K::fentry, F::call_rel32},
                                                                        {0x2000, K::patchable, F::call_rel32},
                                                                        {0x2000, K::patchable, F::call_rel32},
                                                                        {0x7000, K::fentry, F::addr32_call_rel32},
                                                                        {0x7000, K::fentry, F::addr32_call_rel32},
                                                                        {0x9000, K::fentry, F::call_rel32}}));
}

}  // namespace
}  // namespace prepatch::test
