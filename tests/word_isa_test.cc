// AArch64 and PPC64le: what discovery decodes with Capstone (a `bl` and its target, an AArch64 PLT
// entry's slot) against the cross objdump over real cross-compiled binaries, what the preparer says of
// PPC64le's -fpatchable-function-entry (gcc 12 puts the pad before the local entry point). Sites out of
// a `bl`'s reach: tests/island_test.cc.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "arch/aarch64.h"
#include "arch/isa.h"
#include "arch/ppc64le.h"
#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "support.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

// The cross objdump's `bl`s in .text: address -> target ("  99c:\t97ffff69 \tbl\t740 <_mcount@plt>",
// "  9e4:\tbd fc ff 4b \tbl      6a0 <...>").
std::map<u64, u64> objdump_bls(const std::string& objdump, const std::string& bin) {
  Proc p = run({objdump, "-d", "-j", ".text", bin});
  EXPECT_EQ(p.status, 0) << p.err;
  std::map<u64, u64> out;
  std::istringstream in(p.out);
  std::string line;
  while (std::getline(in, line)) {  // by hand: std::regex per line took minutes on a static binary
    const size_t colon = line.find(":\t"), tab = colon == std::string::npos ? colon : line.find('\t', colon + 2);
    if (tab == std::string::npos) continue;
    std::istringstream insn(line.substr(tab + 1));
    std::string mnemonic, target;
    if (!(insn >> mnemonic >> target) || mnemonic != "bl" || target.find_first_not_of("0123456789abcdef") != std::string::npos) continue;
    out[std::stoull(line.substr(0, colon), nullptr, 16)] = std::stoull(target, nullptr, 16);
  }
  return out;
}

// Discovery's `bl` decoding (the opcode test, then Capstone) against the cross objdump, on every word
// of .text: the same calls, to the same targets.
void expect_bl_agrees(const std::string& path, arch::Isa isa, const std::string& objdump) {
  SCOPED_TRACE(path);
  MappedFile f(path);
  elf::Elf e(f.bytes(), path);
  const elf::Section* text = e.section(".text");
  ASSERT_NE(text, nullptr);
  auto b = e.section_data(*text);
  std::map<u64, u64> ours;
  for (u64 at = 0; at + 4 <= b.size(); at += 4) {
    const u32 w = static_cast<u32>(e.codec().get(b, at, 4));
    if (!(isa == arch::Isa::aarch64 ? arch::aarch64::bl_opcode(w) : arch::ppc64le::bl_opcode(w))) continue;
    if (auto t = arch::bl_target(isa, b.subspan(at, 4), text->addr + at)) ours[text->addr + at] = *t;
  }
  EXPECT_GT(ours.size(), 10u) << "the binary has calls";
  EXPECT_EQ(ours, objdump_bls(objdump, path));
}

TEST(WordIsa, Aarch64BlDecodesAsObjdumpDoes) {
  expect_bl_agrees(td + "/basic-a64-pg", arch::Isa::aarch64, "aarch64-linux-gnu-objdump");
  expect_bl_agrees(td + "/threads-a64-pg-static", arch::Isa::aarch64, "aarch64-linux-gnu-objdump");
}

TEST(WordIsa, Ppc64leBlDecodesAsObjdumpDoes) {
  expect_bl_agrees(td + "/basic-ppc-pg", arch::Isa::ppc64le, "powerpc64le-linux-gnu-objdump");
  expect_bl_agrees(td + "/threads-ppc-pg-static", arch::Isa::ppc64le, "powerpc64le-linux-gnu-objdump");
}

// arch::aarch64::movable (whether the graph tracer may run a static unwinder's first instruction
// elsewhere) on every word of a static program's .text, against the cross objdump's reading: false
// exactly for the PC-relative ones (adr, adrp, a literal load: an operand without brackets), branches
// and exception-generating instructions.
TEST(WordIsa, Aarch64MovableAgreesWithObjdump) {
  const std::string path = td + "/threads-a64-pg-static";
  Proc p = run({"aarch64-linux-gnu-objdump", "-d", path});
  ASSERT_EQ(p.status, 0) << p.err;
  const std::set<std::string> fixed{"adr", "adrp", "b", "bl", "cbz", "cbnz", "tbz", "tbnz", "br", "blr", "ret", "eret", "svc", "hvc", "smc", "brk", "hlt"};
  size_t words = 0, unmovable = 0;
  for (const std::vector<std::string>& f : objdump_fields(p.out)) {  // "  400200:", "f9400260 ", "ldr", "x0, [x19]"
    if (f[1].size() < 8 || f[2] == ".inst") continue;
    const u32 w = static_cast<u32>(std::stoul(f[1].substr(0, 8), nullptr, 16));
    const std::string& m = f[2];
    const std::string ops = f.size() > 3 ? f[3] : "";
    const bool literal = (m == "ldr" || m == "ldrsw" || m == "prfm") && ops.find('[') == std::string::npos;
    const bool want = !(fixed.count(m) || m.starts_with("b.") || m.starts_with("ret") || m.starts_with("br") || m.starts_with("blr") ||
                        m.starts_with("eret") || m.starts_with("dcps") || literal);
    EXPECT_EQ(arch::aarch64::movable(w), want) << f[0] << " " << m << " " << ops;
    words++, unmovable += !want;
  }
  EXPECT_GT(words, 10000u);
  EXPECT_GT(unmovable, 1000u);
}

// The same for arch::ppc64le::movable, on a static program's .text: false exactly for branches (every
// `b...` mnemonic but bpermd), sc and opcode 19's others (cr logic, mcrf, isync, rfid: conservative,
// though they would run anywhere).
TEST(WordIsa, Ppc64leMovableAgreesWithObjdump) {
  Proc p = run({"powerpc64le-linux-gnu-objdump", "-d", td + "/threads-ppc-pg-static"});
  ASSERT_EQ(p.status, 0) << p.err;
  size_t words = 0, unmovable = 0;
  for (const std::vector<std::string>& f : objdump_fields(p.out)) {  // "10000200:", "a6 02 08 7c ", "mflr", "r0"
    std::istringstream bytes(f[1]);
    u32 w = 0;
    unsigned n = 0;
    for (std::string b; bytes >> b; n++) w |= static_cast<u32>(std::stoul(b, nullptr, 16)) << (8 * n);
    if (n != 4 || f[2] == ".long") continue;
    const std::string m = f[2].substr(0, f[2].find(' '));
    const bool want =
        !((m.starts_with("b") && m != "bpermd") || m == "sc" || m == "scv" || m.starts_with("cr") || m == "mcrf" || m == "isync" || m == "rfid");
    EXPECT_EQ(arch::ppc64le::movable(w), want) << f[0] << " " << m;
    words++, unmovable += !want;
  }
  EXPECT_GT(words, 10000u);
  EXPECT_GT(unmovable, 1000u);
}

// Every entry of a PIE's .plt after its header leads to the slot a JUMP_SLOT relocation fills for the
// symbol the cross objdump names the entry after (`<printf@plt>:`).
// ld's two AArch64 stub forms that arch::aarch64::linker_stub reads, as the assembler encodes them
// (each 8-aligned, 32 bytes apart; a destination behind them and one far before, so that adrp's page
// and the 64-bit literal are both exercised both ways), followed to their destinations with their
// sizes; what only starts like one is none.
TEST(WordIsa, Aarch64LinkerStubsAreFollowedToTheirDestinations) {
  TempDir d;
  write_file(d / "s.s", ".text\nd0: nop\n.skip 0x3000\n"
                        ".p2align 5\ns0: adrp x16, d0\nadd x16, x16, :lo12:d0\nbr x16\n"
                        ".p2align 5\ns1: adrp x16, d1\nadd x16, x16, :lo12:d1\nbr x16\n"
                        ".p2align 5\ns2: ldr x16, 1f\nadr x17, .\nadd x16, x16, x17\nbr x16\n1: .xword d0 - (s2 + 4)\n"
                        ".p2align 5\ns3: ldr x16, 2f\nadr x17, .\nadd x16, x16, x17\nbr x16\n2: .xword d1 - (s3 + 4)\n"
                        ".p2align 5\ns4: adrp x16, d1\nadd x17, x16, :lo12:d1\nbr x16\n"
                        ".p2align 5\ns5: ldr x16, 3f\nadr x17, .\nadd x16, x16, x17\nbr x17\n3: .xword 0\n"
                        ".p2align 5\n.skip 0x5000\nd1: nop\n");
  // Linked, so that adrp's page offset is final (the object keeps it for a relocation); the labels'
  // addresses from nm.
  Proc ld = run({"aarch64-linux-gnu-gcc", "-nostdlib", "-static", "-Wl,-e,0", d / "s.s", "-o", d / "s"});
  ASSERT_EQ(ld.status, 0) << ld.err;
  Proc nm = run({"aarch64-linux-gnu-nm", d / "s"});
  ASSERT_EQ(nm.status, 0) << nm.err;
  std::map<std::string, u64> sym;
  std::istringstream lines(nm.out);
  for (std::string addr, type, name; lines >> addr >> type >> name;) sym[name] = std::stoull(addr, nullptr, 16);
  MappedFile f(d / "s");
  elf::Elf e(f.bytes(), d / "s");
  const auto word = [&](u64 at, u32& w) {
    auto b = e.bytes_at(at, 4);
    if (b.size() != 4) return false;
    w = static_cast<u32>(e.codec().get(b, 0, 4));
    return true;
  };
  const u64 d0 = sym["d0"], s0 = sym["s0"], d1 = sym["d1"];
  ASSERT_EQ(sym["s5"], s0 + 5 * 32);
  const struct {
    u64 dest;
    u32 size;
  } cases[] = {{d0, 12}, {d1, 12}, {d0, 24}, {d1, 24}, {0, 0}, {0, 0}};
  for (unsigned i = 0; i < 6; i++) {
    SCOPED_TRACE(i);
    const auto st = arch::aarch64::linker_stub(s0 + 32 * i, word);
    if (!cases[i].size) {
      EXPECT_FALSE(st.has_value());
      continue;
    }
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->start, s0 + 32 * i);
    EXPECT_EQ(st->size, cases[i].size);
    EXPECT_EQ(st->dest, cases[i].dest) << std::hex << st->dest;
  }
  EXPECT_FALSE(arch::aarch64::linker_stub(s0 + 2, word).has_value());  // off-word
}

// ld's two ELFv2 `plt_call` stub forms that arch::ppc64le::plt_call_stub reads, as the assembler
// encodes them, with their sizes and TOC offsets (one within 16 bits, one needing addis); what only
// starts like one is none.
TEST(WordIsa, Ppc64lePltCallStubsAreReadWithTheirTocOffsets) {
  TempDir d;
  write_file(d / "s.s", ".text\n"
                        ".p2align 5\nstd 2,24(1)\nld 12,-32464(2)\nmtctr 12\nbctr\n"
                        ".p2align 5\nstd 2,24(1)\naddis 12,2,3\nld 12,-8(12)\nmtctr 12\nbctr\n"
                        ".p2align 5\nstd 2,24(1)\nld 12,-32464(2)\nmtlr 12\nblr\n");
  Proc as = run({"powerpc64le-linux-gnu-as", d / "s.s", "-o", d / "s.o"});
  ASSERT_EQ(as.status, 0) << as.err;
  Proc cp = run({"powerpc64le-linux-gnu-objcopy", "-O", "binary", "--only-section=.text", d / "s.o", d / "s.bin"});
  ASSERT_EQ(cp.status, 0) << cp.err;
  const std::string b = read_file(d / "s.bin");
  const auto word = [&](u64 at, u32& w) {
    if (at + 4 > b.size()) return false;
    w = 0;
    for (unsigned i = 0; i < 4; i++) w |= u32{static_cast<u8>(b[at + i])} << (8 * i);
    return true;
  };
  const auto a = arch::ppc64le::plt_call_stub(0, word), c = arch::ppc64le::plt_call_stub(32, word);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->size, 16u);
  EXPECT_EQ(a->toc_offset, -32464);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->size, 20u);
  EXPECT_EQ(c->toc_offset, 3 * 65536 - 8);
  EXPECT_FALSE(arch::ppc64le::plt_call_stub(64, word).has_value());
  EXPECT_FALSE(arch::ppc64le::plt_call_stub(2, word).has_value());
}

TEST(WordIsa, Aarch64PltEntriesLeadToTheirSlots) {
  const std::string path = td + "/basic-a64-pg";
  MappedFile f(path);
  elf::Elf e(f.bytes(), path);
  const elf::Section* plt = e.section(".plt");
  ASSERT_NE(plt, nullptr);
  std::map<u64, std::string> jump_slots;  // slot -> symbol
  for (const elf::Section& sec : e.sections())
    if (sec.type == SHT_RELA && (sec.flags & SHF_ALLOC))
      for (const elf::Reloc& r : e.relocations(sec))
        if (r.type == R_AARCH64_JUMP_SLOT) jump_slots[r.offset] = std::string(e.symbol(e.sections()[sec.link], r.sym).name);
  ASSERT_FALSE(jump_slots.empty());
  std::map<u64, std::string> named;  // entry -> symbol, from objdump
  Proc od = run({"aarch64-linux-gnu-objdump", "-d", "-j", ".plt", path});
  std::smatch m;
  for (std::string out = od.out; std::regex_search(out, m, std::regex("\n([0-9a-f]+) <([^@>]+)@plt>:")); out = m.suffix())
    named[std::stoull(m[1], nullptr, 16)] = m[2];
  ASSERT_EQ(named.size(), jump_slots.size()) << od.out;
  auto b = e.section_data(*plt);
  for (const auto& [entry, symbol] : named) {
    auto slot = arch::aarch64_plt_slot(b.subspan(entry - plt->addr, 16), entry);
    ASSERT_TRUE(slot) << std::hex << entry;
    EXPECT_EQ(jump_slots[*slot], symbol) << std::hex << "0x" << entry;
  }
  EXPECT_FALSE(arch::aarch64_plt_slot(b.subspan(0, 16), plt->addr)) << "the PLT header is no entry";
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
  const CountedRun r = build_prepare_and_count(d, "ppc64le", {"powerpc64le-linux-gnu-gcc", "-O2", "-fpatchable-function-entry=2", "-static"},
                                               "#include <stdio.h>\n#include <stdlib.h>\nint g;\n"
                                               "__attribute__((noinline)) double pure(double a, int b) { return a * b; }\n"
                                               "__attribute__((noinline)) int global(int a) { return a + g; }\n"
                                               "int main(int argc, char** argv) { int n = atoi(argv[1]); double s = 0;\n"
                                               "  for (int i = 0; i < n; i++) s += pure(1.5, i) + global(i);\n"
                                               "  printf(\"%.1f\\n\", s); return argc - 2; }\n",
                                               {"7"});
  ASSERT_EQ(r.prepare.status, 0) << r.prepare.err;
  EXPECT_NE(r.prepare.err.find("in global: skipped: patchable pad before the ELFv2 local entry point"), std::string::npos) << r.prepare.err;
  EXPECT_EQ(r.prepare.err.find("in pure: skipped"), std::string::npos) << r.prepare.err;
  EXPECT_EQ(r.plain.out, "52.5\n");
  EXPECT_EQ(r.counted.out, r.plain.out);
  EXPECT_EQ(r.counted.status, 0) << r.counted.err;
  Proc c = prepatch({"counts", d / "out", d / "c", "--all", "--json"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::map<std::string, unsigned long long> counts;
  for (const auto& row : nlohmann::json::parse(c.out)) counts[row["function"]] = row["count"];
  EXPECT_EQ(counts, (std::map<std::string, unsigned long long>{{"pure", 7}})) << c.out;
}

}  // namespace
}  // namespace prepatch::test
