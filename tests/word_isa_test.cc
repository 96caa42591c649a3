// AArch64 and PPC64le: the preparer's own bit decoders (a `bl` and its target, an AArch64 PLT entry's
// slot) against Capstone over every word of real cross-compiled binaries, and what the preparer says of
// PPC64le's -fpatchable-function-entry, whose pad gcc 12 puts before the local entry point.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "arch/aarch64.h"
#include "arch/isa.h"
#include "arch/ppc64le.h"
#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "support.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

// The target in Capstone's text of a branch: "bl #0x740" (AArch64), "bl 0x6a0" (PPC).
std::optional<u64> capstone_target(const std::string& text) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("0x([0-9a-f]+)"))) return std::nullopt;
  return std::stoull(m[1], nullptr, 16);
}

void expect_bl_agrees(const std::string& path, arch::Isa isa) {
  SCOPED_TRACE(path);
  MappedFile f(path);
  elf::Elf e(f.bytes(), path);
  const elf::Section* text = e.section(".text");
  ASSERT_NE(text, nullptr);
  auto b = e.section_data(*text);
  unsigned bls = 0, mismatches = 0;
  for (u64 at = 0; at + 4 <= b.size(); at += 4) {
    const u64 addr = text->addr + at;
    const u32 w = static_cast<u32>(e.codec().get(b, at, 4));
    u64 ours = 0;
    const bool is_bl = isa == arch::Isa::aarch64 ? arch::aarch64::decode_bl(w, addr, ours) : arch::ppc64le::decode_bl(w, addr, ours);
    const arch::Decoded d = arch::decode(isa, b.subspan(at, 4), addr);
    const bool capstone_bl = d.valid && d.text.rfind("bl ", 0) == 0;
    bls += is_bl;
    if (is_bl != capstone_bl || (is_bl && capstone_target(d.text) != ours))
      if (++mismatches <= 10) ADD_FAILURE() << std::hex << "0x" << addr << ": " << w << " ours bl " << is_bl << " -> 0x" << ours << ", Capstone `" << d.text << "`";
  }
  EXPECT_GT(bls, 10u) << "the binary has calls";
  EXPECT_EQ(mismatches, 0u);
}

TEST(WordIsa, Aarch64BlDecodesAsCapstoneDoes) {
  expect_bl_agrees(td + "/basic-a64-pg", arch::Isa::aarch64);
  expect_bl_agrees(td + "/threads-a64-pg-static", arch::Isa::aarch64);
}

TEST(WordIsa, Ppc64leBlDecodesAsCapstoneDoes) {
  expect_bl_agrees(td + "/basic-ppc-pg", arch::Isa::ppc64le);
  expect_bl_agrees(td + "/threads-ppc-pg-static", arch::Isa::ppc64le);
}

// Every entry of a PIE's .plt after its header: our slot against Capstone's adrp page plus ldr offset,
// and the slot is one a JUMP_SLOT relocation fills.
TEST(WordIsa, Aarch64PltEntriesLeadToTheirSlots) {
  const std::string path = td + "/basic-a64-pg";
  MappedFile f(path);
  elf::Elf e(f.bytes(), path);
  const elf::Section* plt = e.section(".plt");
  ASSERT_NE(plt, nullptr);
  std::set<u64> jump_slots;
  for (const elf::Section& sec : e.sections())
    if (sec.type == SHT_RELA && (sec.flags & SHF_ALLOC))
      for (const elf::Reloc& r : e.relocations(sec))
        if (r.type == R_AARCH64_JUMP_SLOT) jump_slots.insert(r.offset);
  ASSERT_FALSE(jump_slots.empty());
  auto b = e.section_data(*plt);
  unsigned entries = 0;
  for (u64 at = 32; at + 16 <= b.size(); at += 16) {
    const u64 addr = plt->addr + at;
    u32 w[4];
    for (unsigned i = 0; i < 4; i++) w[i] = static_cast<u32>(e.codec().get(b, at + 4 * i, 4));
    u64 slot = 0;
    ASSERT_TRUE(arch::aarch64::plt_slot(w, addr, slot)) << std::hex << addr;
    const std::string adrp = arch::decode(arch::Isa::aarch64, b.subspan(at, 4), addr).text;
    const std::string ldr = arch::decode(arch::Isa::aarch64, b.subspan(at + 4, 4), addr + 4).text;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(adrp, m, std::regex("^adrp x16, #0x([0-9a-f]+)$"))) << adrp;
    const u64 page = std::stoull(m[1], nullptr, 16);
    ASSERT_TRUE(std::regex_search(ldr, m, std::regex("^ldr x17, \\[x16(, #(0x[0-9a-f]+|[0-9]+))?\\]$"))) << ldr;
    const u64 off = m[2].matched ? std::stoull(m[2], nullptr, 0) : 0;
    EXPECT_EQ(slot, page + off) << adrp << "; " << ldr;
    EXPECT_TRUE(jump_slots.count(slot)) << std::hex << "0x" << slot << " is no JUMP_SLOT";
    entries++;
  }
  EXPECT_EQ(entries, jump_slots.size());
}

// gcc 12 puts a PPC64le function's pad at its global entry, before the TOC setup; calls from inside
// the binary enter at the local entry point after it (readelf's [<localentry>: N]) and would never run
// the site. Every such site is skipped, saying why, and with no site left nothing is written.
TEST(WordIsa, Ppc64lePadsBeforeTheLocalEntryAreSkippedSayingWhy) {
  TempDir d;
  const std::string bin = td + "/basic-ppc-pfe2-static";
  Proc r = prepatch({bin, "-o", d / "out"});
  EXPECT_EQ(r.status, 3) << r.err;  // nothing to do
  EXPECT_FALSE(exists(d / "out"));
  Proc re = run({"powerpc64le-linux-gnu-readelf", "-sW", bin});
  std::set<std::string> with_local_entry;
  std::smatch m;
  for (std::string s = re.out; std::regex_search(s, m, std::regex("FUNC +\\w+ +DEFAULT +\\[<localentry>: (\\d+)\\] +\\d+ (\\w+)")); s = m.suffix())
    if (std::stoul(m[1]) > 0) with_local_entry.insert(m[2]);
  std::set<std::string> skipped;
  for (std::string s = r.err; std::regex_search(s, m, std::regex(" in (\\w+): skipped: patchable pad before the ELFv2 local entry point")); s = m.suffix())
    skipped.insert(m[1]);
  EXPECT_FALSE(skipped.empty()) << r.err;
  for (const std::string& f : skipped) EXPECT_TRUE(with_local_entry.count(f)) << f << " has no local entry point after its pad";
  EXPECT_NE(r.err.find("no sites could be prepared"), std::string::npos) << r.err;
}

// Where no TOC setup follows the pad (a function using no global data), the local and the global entry
// are one, and the site is prepared: `mflr r0` before it, and the trampoline returns with LR set back.
TEST(WordIsa, Ppc64lePadsOfFunctionsWithoutATocSetupAreCounted) {
  TempDir d;
  write_file(d / "p.c", "#include <stdio.h>\n#include <stdlib.h>\nint g;\n"
                        "__attribute__((noinline)) double pure(double a, int b) { return a * b; }\n"
                        "__attribute__((noinline)) int global(int a) { return a + g; }\n"
                        "int main(int argc, char** argv) { int n = atoi(argv[1]); double s = 0;\n"
                        "  for (int i = 0; i < n; i++) s += pure(1.5, i) + global(i);\n"
                        "  printf(\"%.1f\\n\", s); return argc - 2; }\n");
  Proc cc = run({"powerpc64le-linux-gnu-gcc", "-O2", "-fpatchable-function-entry=2", "-static", d / "p.c", "-o", d / "p"});
  ASSERT_EQ(cc.status, 0) << cc.err;
  Proc r = prepatch({d / "p", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("in global: skipped: patchable pad before the ELFv2 local entry point"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("in pure: skipped"), std::string::npos) << r.err;
  const std::vector<std::string> qemu = qemu_for("ppc64le");
  std::vector<std::string> orig = qemu, on = {"env", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"};
  orig.insert(orig.end(), {d / "p", "7"});
  on.insert(on.end(), qemu.begin(), qemu.end());
  on.insert(on.end(), {d / "out", "7"});
  Proc o = run(orig), t = run(on);
  EXPECT_EQ(o.out, "52.5\n");
  EXPECT_EQ(t.out, o.out);
  EXPECT_EQ(t.status, 0) << t.err;
  Proc c = prepatch({"counts", d / "out", d / "c", "--all", "--json"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::map<std::string, unsigned long long> counts;
  for (const auto& row : nlohmann::json::parse(c.out)) counts[row["function"]] = row["count"];
  EXPECT_EQ(counts, (std::map<std::string, unsigned long long>{{"pure", 7}})) << c.out;
}

// A `bl` reaches +-128 MiB and the shim goes after the last segment: a 200 MiB .bss puts it out of
// reach of every site, and the preparer refuses, naming the site, rather than write a broken binary.
TEST(WordIsa, SitesOutOfBlReachAreRefused) {
  TempDir d;
  write_file(d / "big.c", "static char big[200 << 20];\nint touch(int i) { big[i] = 1; return big[i / 2]; }\n"
                          "int main(int argc, char** argv) { (void)argv; return touch(argc) - 1; }\n");
  Proc cc = run({"aarch64-linux-gnu-gcc", "-O2", "-pg", d / "big.c", "-o", d / "big"});
  ASSERT_EQ(cc.status, 0) << cc.err;
  Proc r = prepatch({d / "big", "-o", d / "out"});
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_NE(r.err.find("cannot reach the shim at"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("with a bl (+-128 MiB)"), std::string::npos) << r.err;
  EXPECT_FALSE(exists(d / "out"));
}

}  // namespace
}  // namespace prepatch::test
