// Branch islands (arch/island.h): the checker proves every ISA's island at a spread of distances and
// catches broken ones; sites a 1 GiB .bss puts beyond their call's reach of the shim call it
// through an island, on x86-64, AArch64, PPC64le and Thumb-2, and -pg sites in a text larger than the
// reach through islands over ld's stubs and PLT entries (Thumb-2, AArch64, PPC64le), traced under qemu
// call by call.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "arch/aarch64.h"
#include "arch/island.h"
#include "arch/isa.h"
#include "arch/ppc64le.h"
#include "arch/thumb2.h"
#include "elf/elf.h"
#include "support.h"

namespace prepatch::test {
namespace {

using arch::Isa;

constexpr Isa island_isas[] = {Isa::aarch64, Isa::ppc64le, Isa::riscv64, Isa::thumb2, Isa::x86_64};

// Islands near and far from their trampoline, both ways, at the ends of the address space (Thumb-2:
// the 32-bit one, its targets with the Thumb bit).
TEST(Island, EveryIsasIslandIsProvenAtEveryDistance) {
  for (Isa isa : island_isas) {
    SCOPED_TRACE(std::string(arch::isa_name(isa)));
    const bool t32 = isa == Isa::thumb2;
    const u64 top = t32 ? 0xffff'f000u : 0x7fff'ffff'f000u;
    const u64 ats[] = {0x1000, 0x10'0000, 0x7e5'0000 + 8 * arch::island_align(isa), top - 0x100};
    const i64 distances[] = {16, -16, 1 << 20, -(1 << 20), i64{200} << 20, -(i64{200} << 20), i64{3} << 30, -(i64{3} << 30), i64{5} << 30};
    for (u64 at : ats)
      for (i64 d : distances) {
        u64 target = at + static_cast<u64>(d);
        if (t32) target = (target & 0xffff'fffeu) | 1;
        const std::vector<u8> b = arch::encode_island(isa, at, target);
        ASSERT_EQ(b.size(), arch::island_size(isa));
        EXPECT_EQ(arch::check_island(isa, b, at, target), "") << "at 0x" << std::hex << at << " to 0x" << target;
        // And it goes there only: the same bytes do not prove a jump anywhere else.
        EXPECT_NE(arch::check_island(isa, b, at, target + 4), "");
      }
    if (arch::island_align(isa) > 1) {  // (x86-64's may start anywhere: two kinds' go back to back)
      EXPECT_EQ(arch::check_island(isa, arch::encode_island(isa, 0x1000, 0x2001), 0x1001, 0x2001), "misaligned");
    }
  }
  // Thumb-2's 12-byte form through ip, which the preparer writes over ld's stubs (ip is free there).
  for (u64 target : {u64{0x2001}, u64{0xffff'f001}, u64{0x0140'0001}}) {
    u8 b[arch::thumb2::ip_island_size];
    arch::thumb2::encode_ip_island(0x1000, target, b);
    EXPECT_EQ(arch::check_island(Isa::thumb2, b, 0x1000, target), "");
    EXPECT_NE(arch::check_island(Isa::thumb2, b, 0x1000, target + 4), "");
  }
  // Thumb-2's 8-byte absolute form (ET_EXEC only), which the preparer writes over ld's 8-byte stubs.
  for (u64 target : {u64{0x2001}, u64{0xffff'f001}, u64{0x0140'0001}}) {
    u8 b[arch::thumb2::absolute_island_size];
    arch::thumb2::encode_absolute_island(target, b);
    EXPECT_EQ(arch::check_island(Isa::thumb2, b, 0x1000, target), "");
    EXPECT_NE(arch::check_island(Isa::thumb2, b, 0x1000, target + 4), "");
  }
  // ARM32's ARM-state entry as an island: anywhere in the 32-bit space, to the Thumb trampoline only,
  // and each of its instructions as Capstone reads it (a `push` whose register is not lr, a literal
  // one word off, a Thumb target without its bit, are caught).
  for (u64 target : {u64{0x2001}, u64{0xffff'f001}, u64{0x4000'1001}}) {
    u8 b[arch::thumb2::arm_entry_island_size];
    arch::thumb2::encode_arm_entry_island(0x1000, target, b);
    EXPECT_EQ(arch::check_arm_entry_island(b, 0x1000, target), "");
    EXPECT_NE(arch::check_arm_entry_island(b, 0x1000, target + 4), "");
    EXPECT_NE(arch::check_arm_entry_island(b, 0x1004, target), "");
    u8 bad[sizeof b];
    std::memcpy(bad, b, sizeof b);
    bad[1] = 0xc0;  // str ip, [sp, #-4]!
    EXPECT_NE(arch::check_arm_entry_island(bad, 0x1000, target).find("holds `str ip, [sp, #-4]!`"), std::string::npos);
    arch::thumb2::encode_arm_entry_island(0x1000, target & ~u64{1}, b);
    EXPECT_NE(arch::check_arm_entry_island(b, 0x1000, target & ~u64{1}), "");
  }
  // ARM32's islands for ARM-state sites over stubs. The 12-byte one lands, at every distance in the
  // 32-bit space, on the first word of the sled it reaches, which must be within the 64 KiB the
  // preparer allows, and branches to the entry past its push; the checker reads the adds' immediates
  // as Capstone decodes them, and catches a landing off the sled or on a word that is not that branch.
  {
    const u8 entry_word[4] = {0x04, 0xe0, 0x2d, 0xe5};  // str lr, [sp, #-4]!
    for (u64 at : {u64{0x1000}, u64{0x2'0004}, u64{0x1234'5678}, u64{0x7fff'fff0}})
      for (u64 sled_at : {at + 16, at + (u64{33} << 20) + 0x1234, at + (u64{1} << 30) + 0x40, u64{0xf000'0000} + 0x800}) {
        SCOPED_TRACE("island at 0x" + std::to_string(at) + ", sled at " + std::to_string(sled_at));
        const u64 entry = sled_at + 0x1'0100;  // (the blob after the sled, as the preparer lays them out)
        const auto l = arch::arm_far_landing(at, sled_at, sled_at + 0x1'0000);
        ASSERT_TRUE(l);
        std::vector<u8> sled(l->landing + 4 - sled_at);  // (up to the landing: one word on is off it)
        for (u64 w = sled_at; w + 4 <= sled_at + sled.size(); w += 4) {
          const auto b = arch::thumb2::arm_sled_word(w, entry + 4);
          ASSERT_TRUE(b);
          for (unsigned k = 0; k < 4; k++) sled[w - sled_at + k] = static_cast<u8>(*b >> (8 * k));
        }
        u8 b[arch::thumb2::arm_far_island_size];
        arch::thumb2::encode_arm_far_island(*l, b);
        EXPECT_EQ(arch::check_arm_far_island(b, at, sled, sled_at, entry, entry_word), "");
        EXPECT_NE(arch::check_arm_far_island(b, at, sled, sled_at, entry + 4, entry_word), "");
        EXPECT_NE(arch::check_arm_far_island(b, at, std::span<const u8>(sled).first(l->landing - sled_at), sled_at, entry, entry_word).find("outside the sled"),
                  std::string::npos);
        EXPECT_NE(arch::check_arm_far_island(b, at + 4, sled, sled_at, entry, entry_word), "");
        u8 bad[sizeof b];
        std::memcpy(bad, b, sizeof b);
        bad[6] ^= 0x01 << 4;  // Rn's low bit: add lr, pc becomes add lr, lr
        EXPECT_NE(arch::check_arm_far_island(bad, at, sled, sled_at, entry, entry_word), "");
        EXPECT_NE(arch::check_arm_far_island(b, at, sled, sled_at, entry, std::span<const u8>(b + 4, 4)).find("does not begin with"), std::string::npos);
      }
    // Never below the island's pc, nor in an empty sled.
    EXPECT_FALSE(arch::arm_far_landing(0x1000, 0x1008, 0x2000));
    EXPECT_FALSE(arch::arm_far_landing(0x1000, 0x9000, 0x9000));
    // The absolute form: its literal is the entry itself, in ARM state.
    const u64 entry = 0xf000'0100;
    u8 a[arch::thumb2::arm_absolute_island_size];
    arch::thumb2::encode_arm_absolute_island(entry, a);
    EXPECT_EQ(arch::check_arm_far_island(a, 0x1000, {}, 0, entry, entry_word), "");
    EXPECT_NE(arch::check_arm_far_island(a, 0x1000, {}, 0, entry + 4, entry_word), "");
    arch::thumb2::encode_arm_absolute_island(entry | 1, a);
    EXPECT_NE(arch::check_arm_far_island(a, 0x1000, {}, 0, entry | 1, entry_word), "");
  }
  // AArch64's 12-byte adrp form, over ld's stubs and PLT entries: +-4 GiB of pages, no farther.
  for (i64 dist : {i64{16}, -i64{16}, i64{1} << 31, -(i64{1} << 31), (i64{4} << 30) - 0x2000, -(i64{4} << 30) + 0x2000}) {
    const u64 at = u64{0x5'0000'1234} & ~u64{3}, target = at + static_cast<u64>(dist);
    u8 b[arch::aarch64::adrp_island_size];
    ASSERT_TRUE(arch::aarch64::encode_adrp_island(at, target, b)) << dist;
    EXPECT_EQ(arch::check_island(Isa::aarch64, b, at, target), "") << dist;
    EXPECT_NE(arch::check_island(Isa::aarch64, b, at, target + 4), "") << dist;
  }
  // AArch64's 8-byte form, `adrp x16; br x16`, to a far slot on a 4 KiB boundary (+-4 GiB), and the
  // slot, `bti c; b` the trampoline (+-128 MiB).
  for (i64 dist : {i64{0x1000}, -i64{0x1000}, i64{1} << 31, -(i64{1} << 31), (i64{4} << 30) - 0x2000}) {
    const u64 at = u64{0x5'0000'1234} & ~u64{3}, slot = ((at + static_cast<u64>(dist)) & ~u64{0xfff});
    u8 b[arch::aarch64::page_island_size];
    ASSERT_TRUE(arch::aarch64::encode_page_island(at, slot, b)) << dist;
    EXPECT_EQ(arch::check_island(Isa::aarch64, b, at, slot), "") << dist;
    EXPECT_NE(arch::check_island(Isa::aarch64, b, at, slot + 0x1000), "") << dist;
    EXPECT_FALSE(arch::aarch64::encode_page_island(at, slot + 4, b));  // not on a page boundary
  }
  for (i64 dist : {i64{8}, -i64{8}, (i64{128} << 20) - 4, -(i64{128} << 20) + 4}) {
    const u64 at = 0x800'0000, target = at + 4 + static_cast<u64>(dist);
    u8 b[arch::aarch64::far_slot_size];
    ASSERT_TRUE(arch::aarch64::encode_far_slot(at, target, b)) << dist;
    EXPECT_EQ(arch::check_island(Isa::aarch64, b, at, target), "") << dist;
    EXPECT_NE(arch::check_island(Isa::aarch64, b, at, target + 4), "") << dist;
  }
  u8 slot8[arch::aarch64::far_slot_size];
  EXPECT_FALSE(arch::aarch64::encode_far_slot(0x800'0000, 0x800'0004 + (u64{128} << 20), slot8));
  // PPC64le's 16-byte form over ld's call stubs, relative to the TOC pointer r2 is known to hold:
  // proven given that TOC, and not without it (r2 is then unknown) nor given another.
  for (i64 dist : {i64{16}, -i64{0x9000}, (i64{1} << 31) - 0x9000, -(i64{1} << 31)}) {
    const u64 toc = 0x1'0000'8000, target = toc + static_cast<u64>(dist);
    u8 b[arch::ppc64le::toc_island_size];
    ASSERT_TRUE(arch::ppc64le::encode_toc_island(toc, target, b)) << dist;
    EXPECT_EQ(arch::check_island(Isa::ppc64le, b, 0x2000, target, toc), "") << dist;
    EXPECT_NE(arch::check_island(Isa::ppc64le, b, 0x2000, target), "") << dist;
    EXPECT_NE(arch::check_island(Isa::ppc64le, b, 0x2000, target, toc + 0x10000), "") << dist;
  }
  u8 b16[arch::ppc64le::toc_island_size];
  EXPECT_FALSE(arch::ppc64le::encode_toc_island(0x1000'0000, 0x1000'0000 + (u64{2} << 30), b16));
  u8 b12[arch::aarch64::adrp_island_size];
  EXPECT_FALSE(arch::aarch64::encode_adrp_island(0x1000, 0x1000 + (u64{4} << 30) + 0x1000, b12));
}

// One instruction word of an island replaced.
std::vector<u8> with_word(std::vector<u8> b, size_t at, u32 w, unsigned len = 4) {
  for (unsigned i = 0; i < len; i++) b[at + i] = static_cast<u8>(w >> (8 * i));
  return b;
}

// Islands that would jump right but break the ABI, or jump wrong, are each refused with the reason.
TEST(Island, TheCheckerCatchesABrokenIsland) {
  const u64 at = 0x1000, far = 0x4000'1000;
  const auto a64 = arch::encode_island(Isa::aarch64, at, far), ppc = arch::encode_island(Isa::ppc64le, at, far),
             t2 = arch::encode_island(Isa::thumb2, at, far | 1), x86 = arch::encode_island(Isa::x86_64, at, far),
             rv = arch::encode_island(Isa::riscv64, at, far);
  struct Case {
    Isa isa;
    std::vector<u8> bytes;
    u64 target;
    std::string expect;
  };
  const Case cases[] = {
      // AArch64: the literal's address in x0 (an argument register), the jump through x17 (that
      // address), a literal beyond the island.
      {Isa::aarch64, with_word(with_word(a64, 4, 0x1000'0060), 8, 0x8b00'0210), far, "leaves x0 changed"},
      {Isa::aarch64, with_word(a64, 12, 0xd61f'0220), far, "jumps to 0x1010"},
      {Isa::aarch64, with_word(a64, 0, 0x5800'0110), far, "loads from outside the island"},
      // AArch64's far slot with `bl` for its `b` (x30, the site's return address, lost).
      {Isa::aarch64, with_word(with_word(a64, 0, arch::aarch64::bti_c), 4, 0x9400'0010), at + 4 + 64, "not an instruction an island uses"},
      // PPC64le: LR given back from the wrong register, r11 reloaded from where it was not saved, the
      // save outside the red zone, and no `mtlr` at all (the trampoline would see the island's LR).
      {Isa::ppc64le, with_word(ppc, 16, 0x7d68'03a6), far, "leaves lr changed"},
      {Isa::ppc64le, with_word(ppc, 28, 0xe961'fff0), far, "loads what it did not store"},
      {Isa::ppc64le, with_word(ppc, 0, 0xf961'0008), far, "stores outside the red zone below r1"},
      {Isa::ppc64le, with_word(ppc, 16, 0x6000'0000), far, "not an instruction an island uses"},
      // x86-64: the jump without notrack (it would want a landing pad under IBT), through %rax (not
      // loaded), the lea into %rax (varargs' vector count), the quadword read from the code.
      {Isa::x86_64, with_word(x86, 10, 0x90e3'ff41), far, "expected notrack jmp *%r11"},
      {Isa::x86_64, with_word(x86, 10, 0x90e0'ff3e), far, "expected notrack jmp *%r11"},
      {Isa::x86_64, with_word(x86, 0, 0x058d48, 3), far, "expected lea disp(%rip), %r11"},
      {Isa::x86_64, with_word(x86, 3, 0, 4), far, "adds a quadword from outside the island's literal"},
      // Thumb-2 (the 16-byte form, which must keep every register): the address built in r2, the
      // stored word over the pushed r0 (the pop then jumps to the entry's r1), a store above the
      // entry's sp (the caller's frame), a literal one halfword off, and the 12-byte form through ip
      // (proven over ld's stubs, where ip is free) in its place.
      {Isa::thumb2, with_word(with_word(with_word(t2, 2, 0x4a02, 2), 4, 0x447a, 2), 6, 0x9201, 2), far | 1, "leaves r2 changed"},
      {Isa::thumb2, with_word(t2, 6, 0x9000, 2), far | 1, "jumps to r1+0x0"},
      {Isa::thumb2, with_word(t2, 6, 0x9003, 2), far | 1, "stores outside the 64 bytes below the entry's sp"},
      {Isa::thumb2, with_word(t2, 12, static_cast<u32>(far | 1) - (at + 8) + 2), far | 1, "jumps to 0x40001003"},
      {Isa::thumb2, [&] {
         std::vector<u8> b(arch::thumb2::island_size);
         arch::thumb2::encode_ip_island(at, far | 1, b.data());
         return b;
       }(), far | 1, "leaves ip changed"},
      // RISC-V64: the delta loaded into t2 (a nested function's static chain), a call (`jalr ra`, the
      // site's return address lost), a literal one doubleword off.
      {Isa::riscv64, with_word(with_word(rv, 4, 0x0103'3383), 8, 0x0073'0333), far, "holds `ld\tt2,16(t1)` at +4"},
      {Isa::riscv64, with_word(rv, 12, 0x0003'00e7), far, "holds `jalr\tra,0(t1)` at +12"},
      {Isa::riscv64, with_word(rv, 16, static_cast<u32>(far - at + 8)), far, "jumps to 0x40001008"},
  };
  for (const Case& c : cases) {
    const std::string why = arch::check_island(c.isa, c.bytes, at, c.target);
    EXPECT_NE(why.find(c.expect), std::string::npos) << arch::isa_name(c.isa) << ": " << why;
  }
}

// `prepatch sites` on a prepared binary lists the branch islands the preparer said it placed (its
// messages give each list's first eight addresses, and where the islands after the text begin), in
// the text and in --json, and no others.
void expect_islands_listed(const std::string& out, const std::string& prepare_err) {
  std::map<u64, std::string> said;  // address -> where
  u64 after = 0, after_bytes = 0;
  std::smatch m;
  if (std::regex_search(prepare_err, m, std::regex("through a branch island at vaddr 0x([0-9a-f]+) \\((\\d+) bytes after the text\\)")))
    after = std::stoull(m[1].str(), nullptr, 16), after_bytes = std::stoull(m[2].str());
  for (const auto& [list, where] : {std::pair{"over the PLT entries and linker stubs their calls went through,", "over a linker stub or PLT entry"},
                                    std::pair{"over the nops before a function's entry,", "over the nops before an entry"},
                                    std::pair{"on a page the shim maps below the executable's lowest segment at start,",
                                              "below the lowest segment, mapped at start"},
                                    std::pair{"on a page the shim maps below the shared object's lowest segment at start,",
                                              "below the lowest segment, mapped at start"}}) {
    const size_t at = prepare_err.find(list);
    if (at == std::string::npos) continue;
    const std::string rest = prepare_err.substr(at, prepare_err.find('\n', at) - at);
    for (std::string r = rest; std::regex_search(r, m, std::regex("0x([0-9a-f]+)")); r = m.suffix()) said[std::stoull(m[1].str(), nullptr, 16)] = where;
  }
  Proc json = prepatch({"sites", "--json", out}), text = prepatch({"sites", out});
  ASSERT_EQ(json.status, 0) << json.err;
  std::map<u64, std::string> listed;
  u64 after_listed = 0;
  const nlohmann::json j = nlohmann::json::parse(json.out);
  for (const auto& i : j["islands"]) {
    const u64 a = i["address"];
    const std::string where = i["where"];
    EXPECT_NE(text.out.find(hex(a).substr(2) + " "), std::string::npos) << text.out;  // (the text pads it to 16 digits)
    if (where == "after the text") {
      EXPECT_TRUE(a >= after && a < after + after_bytes) << hex(a) << " is not in the " << after_bytes << " bytes after the text at " << hex(after);
      after_listed++;
      continue;
    }
    listed[a] = where;
  }
  EXPECT_EQ(after_listed > 0, after != 0) << json.out;
  for (const auto& [a, where] : said) {
    EXPECT_EQ(listed[a], where) << hex(a) << " in\n" << json.out;
  }
  if (said.size() < 8) {  // (past eight, the message names the first eight)
    EXPECT_EQ(listed.size(), said.size()) << json.out;
  }
  const size_t n = after_listed + listed.size();
  EXPECT_NE(text.out.find(", " + std::to_string(n) + " branch island" + (n == 1 ? "\n" : "s\n")), std::string::npos) << text.out;
  // Without section headers (e_shoff, e_shnum and e_shstrndx zeroed), found all the same: the table at
  // its segment's start, the shim's blob on a page after it.
  if (std::filesystem::file_size(out) > (64u << 20)) return;  // (AArch64's 136 MiB texts: not copied)
  std::string bytes = read_file(out);
  const bool is64 = bytes[4] == 2;
  std::memset(bytes.data() + (is64 ? 0x28 : 0x20), 0, is64 ? 8 : 4);
  std::memset(bytes.data() + (is64 ? 0x3c : 0x30), 0, 4);
  write_file(out + ".noshdr", bytes);
  Proc bare = prepatch({"sites", "--json", out + ".noshdr"});
  ASSERT_EQ(bare.status, 0) << bare.err;
  EXPECT_EQ(nlohmann::json::parse(bare.out)["islands"], j["islands"]) << bare.out;
  std::filesystem::remove(out + ".noshdr");
}

// A program whose 1 GiB .bss (`gib`: x86-64's 3 GiB, past its calls' +-2 GiB) lies between its text
// and the shim, which goes after every segment: leaf() is called 2n times from mid(), n times from main.
// Each site's count in the counts file `file` a process wrote for `binary`, by the site's address
// (for a stripped binary, whose sites have no names); empty, with a failure recorded, where prepatch
// cannot read it.
std::map<u64, long> site_counts(const std::string& binary, const std::string& file) {
  Proc c = prepatch({"counts", "--json", binary, file});
  EXPECT_EQ(c.status, 0) << c.err;
  std::map<u64, long> out;
  if (c.status == 0)
    for (const auto& row : nlohmann::json::parse(c.out)) out[row["address"]] = row["count"];
  return out;
}

std::multiset<long> count_values(const std::map<u64, long>& counts) {
  std::multiset<long> v;
  for (const auto& [site, n] : counts) v.insert(n);
  return v;
}

std::string big_bss_program(unsigned gib = 1) {
  return "#include <stdio.h>\n#include <stdlib.h>\nstatic char big[" + std::to_string(gib) + "UL << 30];\n" + R"(__attribute__((noinline)) int leaf(int i) { big[i] += (char)i; return big[i]; }
__attribute__((noinline)) int mid(int i) { return leaf(i) + leaf(i + (1 << 29)); }
int main(int argc, char** argv) {
  int n = atoi(argv[1]), s = 0;
  for (int i = 0; i < n; i++) s += mid(i);
  printf("%d\n", s);
  return argc - 2;
}
)";
}

// `out`'s trap sites as the preparer said them (`N sites reach neither ...`): `n` of them where given,
// each listed as `trap` by `prepatch sites`, at the addresses the message names (its first eight),
// and counted on the summary line.
void expect_trap_sites_listed(const std::string& out, const std::string& prepare_err, std::optional<size_t> want = std::nullopt) {
  std::set<u64> said, listed;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(prepare_err, m, std::regex(": (\\d+) (?:site reaches|sites reach) neither the shim nor room for a branch island: "
                                                           "enabled, each holds the ISA's trap[^\n]*")))
      << prepare_err;
  const size_t n = std::stoul(m[1].str());
  if (want) {
    EXPECT_EQ(n, *want) << prepare_err;
  }
  const std::string line = m[0].str();
  for (std::string r = line.substr(line.find(" at vaddr ")); std::regex_search(r, m, std::regex("0x([0-9a-f]+)")); r = m.suffix())
    said.insert(std::stoull(m[1].str(), nullptr, 16));
  Proc text = prepatch({"sites", out});
  ASSERT_EQ(text.status, 0) << text.err;
  for (std::string r = text.out; std::regex_search(r, m, std::regex("\n0x([0-9a-f]+) .* trap +\\w+")); r = m.suffix())
    listed.insert(std::stoull(m[1].str(), nullptr, 16));
  EXPECT_EQ(listed.size(), n) << text.out;
  EXPECT_EQ(said.size(), std::min<size_t>(n, 8)) << prepare_err;
  for (u64 a : said) {
    EXPECT_TRUE(listed.count(a)) << hex(a) << "\n" << text.out;
  }
  EXPECT_NE(text.out.find(", " + std::to_string(n) + " trap" + (n == 1 ? "" : "s") + "); prepared binary"), std::string::npos) << text.out;
}

// A graph replay's calls, one per line: the depth, then `f() {`, `f();` or `} /* f */`.
std::string call_shape(const std::string& replay) {
  std::string shape;
  std::smatch m;
  for (std::string rest = replay; std::regex_search(rest, m, std::regex("\\| ( *)(\\w+\\(\\) \\{|\\w+\\(\\);|\\} /\\* \\w+ \\*/)")); rest = m.suffix())
    shape += std::to_string(m[1].length() / 2) + m[2].str() + "\n";
  return shape;
}

// `out`, the prepared build of `plain` in `d`, run with `n` counted and under graph: its output and
// status as plain's, nothing said, the calls counted exactly as `counts`, and replayed as main() {
// then n times mid() { `inner` } /* mid */, then } /* main */ (`inner`: call_shape's lines at depth 2).
void expect_traced_as_called(const TestBinary& bin, const TempDir& d, const std::string& plain, int n, const std::map<std::string, long>& counts,
                             const std::string& inner);
// The same, replayed as `shape` (call_shape's lines).
// (`said`: what the shim says on stderr, where the program runs as built otherwise.)
void expect_traced_as_shaped(const TestBinary& bin, const TempDir& d, const std::string& plain, int n, const std::map<std::string, long>& counts,
                             const std::string& shape, const std::string& said = "") {
  const std::string out = d / "out";
  Proc o = run(bin.exec(plain, {std::to_string(n)}), d.path());  // (in d: the -pg program writes gmon.out, 35 MB for the large texts)
  ASSERT_EQ(o.status, 0) << o.err;
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(out, {std::to_string(n)})), d.path());
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, o.out);
  EXPECT_EQ(t.err, said);
  EXPECT_EQ(function_counts(out, d / "c"), counts);
  Proc g = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t.trace"}, bin.exec(out, {std::to_string(n)})), d.path());
  EXPECT_EQ(g.status, 0) << g.err;
  EXPECT_EQ(g.out, o.out);
  Proc replay = prepatch({"replay", d / "t.trace"});
  ASSERT_EQ(replay.status, 0) << replay.err;
  EXPECT_EQ(call_shape(replay.out), shape) << replay.out;
}

void expect_traced_as_called(const TestBinary& bin, const TempDir& d, const std::string& plain, int n, const std::map<std::string, long>& counts,
                             const std::string& inner) {
  std::string shape = "0main() {\n";
  for (int i = 0; i < n; i++) shape += "1mid() {\n" + inner + "1} /* mid */\n";
  shape += "0} /* main */\n";
  expect_traced_as_shaped(bin, d, plain, n, counts, shape);
}

struct BigBss : CrossBuild {  // isa "": x86-64, its 3 GiB .bss addressed with -mcmodel=medium
  // RISC-V64's auipc reaches +-2 GiB: 3 GiB of .bss (its code model, medany, addresses it from the
  // text, which comes first); the others' calls reach less than 1 GiB.
  unsigned gib() const { return isa.empty() || isa == "riscv64" ? 3 : 1; }
};

class IslandBigBss : public ::testing::TestWithParam<BigBss> {};

// Every site is out of its call's reach of the shim (+-128 MiB, +-32 MiB, +-16 MiB, +-2 GiB), so each call
// goes through the island: counted exactly, and under graph nested as called. RISC-V64's -pg sites
// call what they called, whose redirect then jumps to the island.
// Thumb-2's PIE, which qemu-arm loads at 0x40000000, also puts its shim above 2 GiB (where addresses
// must not be sign-extended: shim/core.h addr_of), and covers the address where the runtimes of
// prepared objects meet: its runtime serves alone (docs/SHIM.md).
TEST_P(IslandBigBss, EveryCallGoesThroughTheIsland) {
  const BigBss& p = GetParam();
  TempDir d;
  write_file(d / "big.c", big_bss_program(p.gib()));
  Proc c = run(cc_command(p.cc, p.flags, d / "big.c", d / "big"));
  ASSERT_EQ(c.status, 0) << c.err;
  Proc r = prepatch({d / "big", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through a branch island at vaddr"), std::string::npos) << r.err;
  expect_islands_listed(d / "out", r.err);
  // main() { then n times: mid() { leaf(); leaf(); } /* mid */, then } /* main */.
  const int n = 5;
  expect_traced_as_called(TestBinary{.isa = p.isa}, d, d / "big", n, {{"main", 1}, {"mid", n}, {"leaf", 2 * n}}, "2leaf();\n2leaf();\n");
}

// PPC64le -fpatchable-function-entry: only functions without a TOC setup have their pads prepared
// (tests/word_isa_test.cc), and their site is at the function's entry, where the island keeps r11
// (a nested function's static chain) in the red zone below r1 and gives it back. `pure` uses no
// global data; main, which touches the 1 GiB .bss, is skipped. Static, as in word_isa_test.cc: built
// dynamic, this program crashes unprepared under qemu (gcc 12 puts main's pad before its TOC setup).
TEST(Island, Ppc64lePatchableSitesCallThroughTheIsland) {
  TempDir d;
  const CountedRun r = build_prepare_and_count(d, "ppc64le", {"powerpc64le-linux-gnu-gcc", "-O2", "-fpatchable-function-entry=2", "-static"},
                                               "#include <stdio.h>\n#include <stdlib.h>\nstatic char big[1 << 30];\n"
                                               "__attribute__((noinline)) double pure(double a, int b) { return a * b; }\n"
                                               "int main(int argc, char** argv) { int n = atoi(argv[1]); double s = 0;\n"
                                               "  for (int i = 0; i < n; i++) s += pure(1.5, i);\n"
                                               "  big[n] = (char)n; printf(\"%.1f %d\\n\", s, big[n / 2]); return argc - 2; }\n",
                                               {"7"});
  ASSERT_EQ(r.prepare.status, 0) << r.prepare.err;
  EXPECT_NE(r.prepare.err.find("call it through a branch island at vaddr"), std::string::npos) << r.prepare.err;
  EXPECT_EQ(r.plain.out, "31.5 0\n");
  EXPECT_EQ(r.counted.out, r.plain.out);
  EXPECT_EQ(r.counted.status, 0) << r.counted.err;
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"pure", 7}}));
}

// A -pg program whose text is larger than a `bl` reaches: MiB of filler after main and near(), then
// far() and mid(), then (`second`) as much again, then the shim. ld sends the calls to mcount that
// its PLT entry is beyond through a stub of its own near them; discovery follows it (before, those
// sites were missed without a word). A site that reaches neither the shim nor the island after the
// text calls an island the preparer wrote over the stub or PLT entry its call went through.
std::string large_text_program(unsigned mib, bool second) {
  const std::string filler = "__asm__(\".section .text.filler%, \\\"ax\\\", %progbits\\n.p2align 2\\n.skip " + std::to_string(mib) + " << 20\\n.previous\\n\");\n";
  const auto nth = [&](char n) { std::string f = filler; f[f.find('%')] = n; return f; };
  return "#include <stdio.h>\n#include <stdlib.h>\n"
         "__attribute__((noinline)) int near(int i) { return i * 3 + 1; }\n" + nth('1') +
         "__attribute__((noinline)) int far(int i) { return i * 5 + 1; }\n"
         "__attribute__((noinline)) int mid(int i) { return near(i) + far(i); }\n" + (second ? nth('2') : "") +
         "int main(int argc, char** argv) {\n  int n = atoi(argv[1]), s = 0;\n  for (int i = 0; i < n; i++) s += mid(i);\n"
         "  printf(\"%d\\n\", s);\n  return argc - 2;\n}\n";
}

struct LargeText {
  std::string isa, cc;
  unsigned mib;
  bool second;
  std::vector<std::string> links;  // -pie, -no-pie
  std::string islands;             // what the preparer says it wrote
  std::string flags = "";          // -marm
};

class IslandLargeText : public ::testing::TestWithParam<LargeText> {};

// Thumb-2 (+-16 MiB): 20 MiB twice, so main's and near()'s calls take an island over the PLT entry
// (12 bytes, position-independent) and far()'s and mid()'s one over ld's stub (in a PIE its 12-byte
// PIC form; without -pie its 8-byte absolute one, which takes the 8-byte `ldr.w pc` island).
// Stripped, refused; with its debug file beside it, prepared and counted (ARM32 only). AArch64's and
// PPC64le's stripped builds take the same islands without one.
// AArch64 (+-128 MiB): 130 MiB once, so main and near() take an island over the PLT entry (the 12-byte
// adrp form), and far() and mid(), whose calls went through ld's stub, reach the shim. PPC64le (+-32
// MiB): 34 MiB twice; ld gives each stretch of text a `plt_call` stub of its own, and each takes the
// 16-byte island relative to the TOC pointer. ARM32 ARM state (-marm, +-32 MiB): 34 MiB twice, the
// PLT entry and ld's stub ARM code that only ARM-state sites enter: in a PIE each takes the 12-byte
// island that pushes lr and lands in the sled before the blob, without -pie the 8-byte absolute one.
TEST_P(IslandLargeText, EverySiteIsFoundAndCallsThroughAnIslandOverAStub) {
  const LargeText& p = GetParam();
  TempDir d;
  write_file(d / "large.c", large_text_program(p.mib, p.second));
  const TestBinary bin{.isa = p.isa};
  for (const std::string& link : p.links) {
    SCOPED_TRACE(link);
    // In this order, each function and filler a section of its own: ld places its stubs between them.
    std::vector<std::string> cc = {p.cc, "-O2", "-pg", "-fno-toplevel-reorder", "-ffunction-sections", link, d / "large.c", "-o", d / "large"};
    if (!p.flags.empty()) cc.insert(cc.begin() + 1, p.flags);
    Proc c = run(cc);
    ASSERT_EQ(c.status, 0) << c.err;
    Proc sites = prepatch({"sites", d / "large"});
    EXPECT_EQ(sites.status, 0) << sites.err;
    for (const std::string f : {"main", "near", "far", "mid"}) {
      EXPECT_TRUE(std::regex_search(sites.out, std::regex("mcount +call +preparable " + f + "\n"))) << sites.out;
    }
    EXPECT_NE(sites.out.find("4 sites (0 skipped)"), std::string::npos) << sites.out;
    Proc r = prepatch({d / "large", "-o", d / "out"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("call it through " + p.islands + " over the PLT entries and linker stubs"), std::string::npos) << r.err;
    expect_islands_listed(d / "out", r.err);
    const int n = 6;
    expect_traced_as_called(bin, d, d / "large", n, {{"main", 1}, {"mid", n}, {"near", n}, {"far", n}}, "2near();\n2far();\n");
    if (p.isa != "arm") {
      // Stripped, without its debug file: discovery finds the functions by their FDEs, and each stub's
      // callers by a sweep of the text's branches; the same islands, each site counted as unstripped.
      std::map<u64, long> expected;  // by site address
      const std::map<std::string, long> calls = {{"main", 1}, {"mid", n}, {"near", n}, {"far", n}};
      const nlohmann::json j = nlohmann::json::parse(prepatch({"sites", "--json", d / "large"}).out);
      for (const auto& site : j["sites"]) expected[site["address"]] = calls.at(site["function"]);
      ASSERT_EQ(expected.size(), 4u);
      c = run({bin.tool("strip"), "-s", d / "large", "-o", d / "stripped"});
      ASSERT_EQ(c.status, 0) << c.err;
      std::filesystem::remove(d / "out");
      r = prepatch({d / "stripped", "-o", d / "out"});
      ASSERT_EQ(r.status, 0) << r.err;
      EXPECT_NE(r.err.find("call it through " + p.islands + " over the PLT entries and linker stubs"), std::string::npos) << r.err;
      Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "cs"}, bin.exec(d / "out", {std::to_string(n)})), d.path());
      EXPECT_EQ(t.status, 0) << t.err;
      EXPECT_EQ(site_counts(d / "out", d / "cs"), expected);
      std::filesystem::remove(d / "stripped");
    }
    std::filesystem::remove(d / "large"), std::filesystem::remove(d / "out");  // (136 MiB each on AArch64)
  }
  // Stripped (the functions in .dynsym, -rdynamic): the stubs' other callers could not all be known,
  // so no island goes over them and the far sites trap, counted exactly (ARM-state ones are refused).
  if (p.isa != "arm") return;
  std::vector<std::string> cc = {p.cc, "-O2", "-pg", "-fno-toplevel-reorder", "-ffunction-sections", "-rdynamic", "-s", d / "large.c", "-o", d / "stripped"};
  if (!p.flags.empty()) cc.insert(cc.begin() + 1, p.flags);
  Proc c = run(cc);
  ASSERT_EQ(c.status, 0) << c.err;
  Proc sites = prepatch({"sites", d / "stripped"});
  EXPECT_NE(sites.out.find("4 sites (0 skipped)"), std::string::npos) << sites.out;
  Proc r = prepatch({d / "stripped", "-o", d / "out"});
  if (!p.flags.empty()) {  // ARM-state sites (-marm), which no trap serves: refused
    EXPECT_EQ(r.status, 4) << r.err;
    EXPECT_NE(r.err.find("cannot reach the shim at"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("; a PLT entry or linker stub its call entered)"), std::string::npos) << r.err;
    EXPECT_FALSE(exists(d / "out"));
  } else {
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err.find("over the PLT entries and linker stubs"), std::string::npos) << r.err;
    expect_trap_sites_listed(d / "out", r.err);
    ASSERT_EQ(::chmod((d / "out").c_str(), 0755), 0);
    Proc traps = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"6"})));
    EXPECT_EQ(traps.status, 0) << traps.err;
    EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"mid", 6}, {"near", 6}, {"far", 6}}));
    std::filesystem::remove(d / "out"), std::filesystem::remove(d / "c");
  }
  // The same binary with its separate debug file beside it (objcopy --only-keep-debug, then
  // --add-gnu-debuglink): its .symtab names every caller, and the far sites take their islands.
  cc.erase(std::find(cc.begin(), cc.end(), "-s"));
  cc.back() = d / "full";
  c = run(cc);
  ASSERT_EQ(c.status, 0) << c.err;
  for (const std::vector<std::string>& step : {std::vector<std::string>{bin.tool("objcopy"), "--only-keep-debug", d / "full", d / "full.debug"},
                                               {bin.tool("strip"), "-s", d / "full", "-o", d / "stripped"},
                                               {bin.tool("objcopy"), "--add-gnu-debuglink=" + d / "full.debug", d / "stripped"}}) {
    c = run(step, d.path());
    ASSERT_EQ(c.status, 0) << c.err;
  }
  r = prepatch({d / "stripped", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through " + p.islands + " over the PLT entries and linker stubs"), std::string::npos) << r.err;
  ASSERT_EQ(::chmod((d / "out").c_str(), 0755), 0);
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"6"})));
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"mid", 6}, {"near", 6}, {"far", 6}}));
}

INSTANTIATE_TEST_SUITE_P(Isas, IslandLargeText,
                         ::testing::Values(LargeText{"arm", "arm-linux-gnueabihf-gcc", 20, true, {"-pie", "-no-pie"}, "2 branch islands"},
                                           LargeText{"aarch64", "aarch64-linux-gnu-gcc", 130, false, {"-pie"}, "1 branch island"},
                                           LargeText{"ppc64le", "powerpc64le-linux-gnu-gcc", 34, true, {"-pie", "-no-pie"}, "2 branch islands"},
                                           LargeText{"arm", "arm-linux-gnueabihf-gcc", 34, true, {"-pie", "-no-pie"}, "2 branch islands", "-marm"}),
                         [](const ::testing::TestParamInfo<LargeText>& i) { return i.param.isa + (i.param.flags.empty() ? "" : "_marm"); });

// Stripped, the stubs' callers are known by a sweep of the text's branches (rewriter/embed.cc
// stubs_entered_elsewhere): hand-written code that no FDE covers calls _mcount through the PLT entry
// near main, so that entry keeps its code, and main's and near()'s sites, which reach nothing else in
// the binary, call the island of last resort on the page below the executable: counted exactly.
TEST(Island, AStrippedStubEnteredFromCodeNoFdeCoversKeepsItsCode) {
  TempDir d;
  write_file(d / "large.c", large_text_program(130, false) + "__asm__(\".text\\n.globl odd\\n.type odd, %function\\nodd: bl _mcount\\n ret\\n\");\n");
  Proc c = run({"aarch64-linux-gnu-gcc", "-O2", "-pg", "-fno-toplevel-reorder", "-ffunction-sections", d / "large.c", "-o", d / "large"});
  ASSERT_EQ(c.status, 0) << c.err;
  c = run({"aarch64-linux-gnu-strip", "-s", d / "large", "-o", d / "stripped"});
  ASSERT_EQ(c.status, 0) << c.err;
  std::filesystem::remove(d / "large");
  Proc r = prepatch({d / "stripped", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("over the PLT entries and linker stubs"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the executable's lowest segment at start"), std::string::npos)
      << r.err;
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, TestBinary{.isa = "aarch64"}.exec(d / "out", {"6"})), d.path());
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(count_values(site_counts(d / "out", d / "c")), (std::multiset<long>{1, 6, 6, 6}));
}

// -fpatchable-function-entry=N,M in a text larger than a `bl` reaches: the M nops before a function's
// entry never run, so a site that reaches neither the shim nor the island after the text calls an
// island the preparer wrote over them, as few as reach every site. AArch64 (+-128 MiB): M = 3 takes
// the 12-byte adrp form; main and near() call the one before near(). PPC64le (+-32 MiB): M = 12 takes
// the 48-byte position-independent form (static, as in Ppc64lePatchableSitesCallThroughTheIsland:
// main's and mid()'s pads lie before their TOC setup, and only near() and far() are prepared).
// Thumb-2 (+-16 MiB): M = 5 takes the 8-byte absolute form, in a binary that is never moved; in a
// PIE M = 9 takes the 16-byte one, which keeps every register through the stack (ip, which ld's
// stubs may clobber, may be a nested function's static chain here); with M = 3 in a PIE, and on
// PPC64le with M = 2, too few nops hold no island: the far sites trap (README "Trap sites"), traced
// the same. AArch64 M = 2 (8 bytes) takes `adrp x16; br x16` to the far slot the preparer
// puts on a page of its own; stripped, where no symbol names an entry, the sites take an island over
// the padding between two functions that the FDEs of .eh_frame show (refused without them).
struct LargePads {
  std::string isa, cc, flags, link;
  unsigned mib;
  bool second;
  std::string islands;                // what the preparer says it wrote
  std::map<std::string, long> counts;  // n = 6
  std::string shape;
};

class IslandLargeTextPads : public ::testing::TestWithParam<LargePads> {};

TEST_P(IslandLargeTextPads, FarPatchableSitesCallAnIslandBeforeAnEntry) {
  const LargePads& p = GetParam();
  TempDir d;
  write_file(d / "large.c", large_text_program(p.mib, p.second));
  Proc c = run({p.cc, "-O2", p.flags, "-fno-toplevel-reorder", "-ffunction-sections", p.link, d / "large.c", "-o", d / "large"});
  ASSERT_EQ(c.status, 0) << c.err;
  Proc r = prepatch({d / "large", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through " + p.islands + " over the nops before a function's entry"), std::string::npos) << r.err;
  // An island sits where the nops were, and the prepared output reads back with every site.
  Proc before = prepatch({"sites", d / "large"}), after = prepatch({"sites", d / "out"});
  EXPECT_EQ(after.status, 0) << after.err;
  const auto listed = [](const std::string& out) {  // each site's address, whether skipped, and function
    std::string l;
    std::smatch m;
    for (std::string rest = out; std::regex_search(rest, m, std::regex("\n(0x[0-9a-f]+) .* (prepar\\w+|skipped) +(\\w+)")); rest = m.suffix())
      l += m[1].str() + (m[2] == "skipped" ? " skipped " : " ") + m[3].str() + "\n";
    return l;
  };
  EXPECT_EQ(listed(before.out), listed(after.out)) << after.out;
  const auto lines = [](const std::string& out) {  // (the islands' lines apart: an input has none)
    const size_t islands = out.find("\nISLAND ");
    const std::string sites = islands == std::string::npos ? out : out.substr(0, islands + 1);
    return std::count(sites.begin(), sites.end(), '\n');
  };
  EXPECT_EQ(lines(after.out) + 1, lines(before.out)) << after.out;  // (the input's summary line counts)
  expect_islands_listed(d / "out", r.err);
  expect_traced_as_shaped(TestBinary{.isa = p.isa}, d, d / "large", 6, p.counts, p.shape);
  if ((p.isa == "arm" && p.link == "-pie") || p.isa == "ppc64le") {  // M = 3 in a PIE, or 2: no room for the 16-byte (48-byte) island, so the far sites trap
    std::filesystem::remove(d / "out");
    c = run({p.cc, "-O2", p.isa == "arm" ? "-fpatchable-function-entry=6,3" : "-fpatchable-function-entry=4,2", "-fno-toplevel-reorder", "-ffunction-sections",
             p.link, d / "large.c", "-o", d / "large"});
    ASSERT_EQ(c.status, 0) << c.err;
    r = prepatch({d / "large", "-o", d / "out"});
    ASSERT_EQ(r.status, 0) << r.err;
    expect_trap_sites_listed(d / "out", r.err);
    // ARM32: the others call the island of last resort below the PIE, where qemu-arm's guest stack
    // lies, and none lower reaches them all: they trap too.
    expect_traced_as_shaped(TestBinary{.isa = p.isa}, d, d / "large", 6, p.counts, p.shape,
                            p.isa != "arm" ? ""
                                           : "prepatch: this program's sites that need its islands of last resort trap when enabled (a signal per call): the "
                                             "64 KiB at 0x3fff0000 below it, where its far sites' branch islands go, are taken\n");
    std::filesystem::remove(d / "out");
    return;
  }
  if (p.flags != "-fpatchable-function-entry=4,2") {
    std::filesystem::remove(d / "out");
    return;
  }
  // M = 2: the 8-byte `adrp x16; br x16` to the far slot, before near()'s entry.
  const std::string out = read_file(d / "out");
  std::filesystem::remove(d / "out");
  std::optional<size_t> page_island;
  for (size_t at = 0; at + 8 <= out.size() && !page_island; at += 4) {
    u32 w[2];
    std::memcpy(w, out.data() + at, 8);
    if ((w[0] & 0x9f00'001f) == 0x9000'0010 && w[1] == 0xd61f'0200) page_island = at;
  }
  ASSERT_TRUE(page_island);
  // Where prepatch said it put it (the text's file offsets are its addresses).
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex("before a function's entry, at vaddr 0x([0-9a-f]+)\n"))) << r.err;
  EXPECT_EQ(std::stoull(m[1].str(), nullptr, 16), *page_island);
  // Stripped, no symbol names an entry or a function's end, but the FDEs of .eh_frame show where the
  // functions end: the far sites call an island written over the alignment padding between two of
  // them (the C runtime's), and each site counts its calls. Without .eh_frame too, nothing says where
  // a function ends: main's and near()'s sites call the island of last resort on the page below the
  // executable (far() reaches the shim), counted the same.
  c = run({p.cc, "-O2", p.flags, "-fno-toplevel-reorder", "-ffunction-sections", p.link, "-s", d / "large.c", "-o", d / "large"});
  ASSERT_EQ(c.status, 0) << c.err;
  r = prepatch({d / "large", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through 1 branch island over the nops before a function's entry"), std::string::npos) << r.err;
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, TestBinary{.isa = p.isa}.exec(d / "out", {"6"})));
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(count_values(site_counts(d / "out", d / "c")), (std::multiset<long>{1, 6, 6, 6}));
  std::filesystem::remove(d / "out");
  c = run({"aarch64-linux-gnu-objcopy", "-R", ".eh_frame", "-R", ".eh_frame_hdr", d / "large"});
  ASSERT_EQ(c.status, 0) << c.err;
  r = prepatch({d / "large", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the executable's lowest segment at start"), std::string::npos)
      << r.err;
  std::filesystem::remove(d / "c");
  t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, TestBinary{.isa = p.isa}.exec(d / "out", {"6"})));
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(count_values(site_counts(d / "out", d / "c")), (std::multiset<long>{1, 6, 6, 6}));
  std::filesystem::remove(d / "out");
}

std::string repeated(int n, const std::string& s) {
  std::string r;
  for (int i = 0; i < n; i++) r += s;
  return r;
}

INSTANTIATE_TEST_SUITE_P(
    Isas, IslandLargeTextPads,
    ::testing::Values(LargePads{"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=5,3", "-pie", 130, false, "1 branch island",
                                {{"main", 1}, {"mid", 6}, {"near", 6}, {"far", 6}},
                                "0main() {\n" + repeated(6, "1mid() {\n2near();\n2far();\n1} /* mid */\n") + "0} /* main */\n"},
                      LargePads{"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=4,2", "-pie", 130, false, "1 branch island",
                                {{"main", 1}, {"mid", 6}, {"near", 6}, {"far", 6}},
                                "0main() {\n" + repeated(6, "1mid() {\n2near();\n2far();\n1} /* mid */\n") + "0} /* main */\n"},
                      LargePads{"ppc64le", "powerpc64le-linux-gnu-gcc", "-fpatchable-function-entry=14,12", "-static", 34, true, "2 branch islands",
                                {{"near", 6}, {"far", 6}}, repeated(6, "0near();\n0far();\n")},
                      LargePads{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=8,5", "-no-pie", 20, true, "2 branch islands",
                                {{"main", 1}, {"mid", 6}, {"near", 6}, {"far", 6}},
                                "0main() {\n" + repeated(6, "1mid() {\n2near();\n2far();\n1} /* mid */\n") + "0} /* main */\n"},
                      LargePads{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=12,9", "-pie", 20, true, "2 branch islands",
                                {{"main", 1}, {"mid", 6}, {"near", 6}, {"far", 6}},
                                "0main() {\n" + repeated(6, "1mid() {\n2near();\n2far();\n1} /* mid */\n") + "0} /* main */\n"}),
    [](const ::testing::TestParamInfo<LargePads>& i) { return test_name(i.param.isa + i.param.link + i.param.flags.substr(i.param.flags.find('='))); });

// d/big.c built by `cc` with `flags` into d/big (its .eh_frame then removed by `objcopy`, where one is
// given), then d/nopad: that binary without room after its text (above), prepared into d/out: the
// preparer's result.
Proc prepare_without_room(const TempDir& d, const std::string& cc, const std::string& flags, const std::string& objcopy = "") {
  Proc c = run(cc_command(cc, flags, d / "big.c", d / "big"));
  EXPECT_EQ(c.status, 0) << c.err;
  if (!objcopy.empty()) {
    c = run({objcopy, "-R", ".eh_frame", "-R", ".eh_frame_hdr", d / "big"});
    EXPECT_EQ(c.status, 0) << c.err;
  }
  const std::string bytes = without_room_after_the_text(read_file(d / "big"));
  EXPECT_FALSE(bytes.empty());
  write_file(d / "nopad", bytes, 0755);
  std::filesystem::remove(d / "out");
  return prepatch({d / "nopad", "-o", d / "out"});
}

// With the padding after the text not zeros (bytes no header describes, which the preparer leaves
// alone), there is no room for an island there. -pg sites then call one over their PLT entry (+-4 GiB
// of the shim: the adrp form), counted exactly; patchable sites with nops before their entry
// (-fpatchable-function-entry=5,3) call one written there; those without (=2) one written over the
// alignment padding between two functions (the C runtime's, in this small program), found from the
// symbols, or in a stripped binary from the FDEs of .eh_frame (at the same place; also where only the
// C runtime's functions have one). Stripped and without .eh_frame, where nothing says where a function
// ends, they call the island of last resort on a page below the executable, counted the same.
TEST(Island, NoRoomAfterTheTextLeavesSitesTheirPltEntryTheNopsBeforeTheirEntryOrAPageBelowTheExecutable) {
  TempDir d;
  write_file(d / "big.c", big_bss_program());
  std::string padding_island;           // where the symbols put the island over the padding
  std::map<u64, long> unstripped_counts;  // and each site's count there, by its address
  for (const std::string flag : {"-pg", "-fpatchable-function-entry=5,3", "-fpatchable-function-entry=2", "-fpatchable-function-entry=2 -s",
                                 "-fpatchable-function-entry=2 -fno-asynchronous-unwind-tables -fno-unwind-tables -s", "no .eh_frame"}) {
    SCOPED_TRACE(flag);
    Proc r = flag == "no .eh_frame" ? prepare_without_room(d, "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=2 -s", "aarch64-linux-gnu-objcopy")
                                    : prepare_without_room(d, "aarch64-linux-gnu-gcc", flag);
    if (flag != "no .eh_frame") {
      ASSERT_EQ(r.status, 0) << r.err;
      std::smatch m;
      if (flag.starts_with("-fpatchable-function-entry=2")) {
        ASSERT_TRUE(std::regex_search(r.err, m, std::regex("over the nops before a function's entry, at vaddr (0x[0-9a-f]+)\n"))) << r.err;
        if (flag == "-fpatchable-function-entry=2") padding_island = m[1];
        if (flag == "-fpatchable-function-entry=2 -s") {
          EXPECT_EQ(m[1], padding_island) << r.err;
        }
      }
      EXPECT_NE(r.err.find(flag == "-pg" ? "call it through 1 branch island over the PLT entries and linker stubs"
                                         : "call it through 1 branch island over the nops before a function's entry"),
                std::string::npos)
          << r.err;
      const TestBinary bin{.isa = "aarch64"};
      Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"4"})));
      EXPECT_EQ(t.status, 0) << t.err;
      if (!flag.ends_with(" -s")) {
        EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"mid", 4}, {"leaf", 8}}));
      } else {  // no names: each site's count by its address (-s alone: the same as unstripped)
        const std::map<u64, long> by_site = site_counts(d / "out", d / "c");
        EXPECT_EQ(count_values(by_site), (std::multiset<long>{1, 4, 8}));
        if (flag == "-fpatchable-function-entry=2 -s") {
          EXPECT_EQ(by_site, unstripped_counts);
        }
      }
      if (flag == "-fpatchable-function-entry=2") unstripped_counts = site_counts(d / "out", d / "c");
      std::filesystem::remove(d / "out");
      continue;
    }
    // Nothing says where a function ends: the island of last resort, on the page the shim maps below
    // the executable at start (shim/abi.h LowIslands), and each site counts its calls.
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the executable's lowest segment at start, at vaddr 0x"),
              std::string::npos)
        << r.err;
    expect_islands_listed(d / "out", r.err);
    Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, TestBinary{.isa = "aarch64"}.exec(d / "out", {"4"})));
    EXPECT_EQ(t.status, 0) << t.err;
    EXPECT_EQ(site_counts(d / "out", d / "c"), unstripped_counts);
  }
}

// A preloaded library whose constructor maps the TAKE bytes right below the executable's first
// segment's 64 KiB (MAP_FIXED_NOREPLACE), before the executable's shim starts: its islands of last
// resort find that page taken.
constexpr const char* take_below_executable = R"(#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
static int first(struct dl_phdr_info* i, size_t n, void* out) { (void)n; *(ElfW(Addr)*)out = i->dlpi_addr; return 1; }
__attribute__((constructor)) static void take(void) {  /* the TAKE bytes below the executable's first segment's 64 KiB */
  ElfW(Addr) bias = 0, lowest = ~(ElfW(Addr))0;
  const unsigned long length = strtoul(getenv("TAKE"), 0, 0);
  dl_iterate_phdr(first, &bias);
  const ElfW(Phdr)* ph = (const ElfW(Phdr)*)getauxval(AT_PHDR);
  for (unsigned long k = 0; k < getauxval(AT_PHNUM); k++)
    if (ph[k].p_type == PT_LOAD && ph[k].p_vaddr < lowest) lowest = ph[k].p_vaddr;
  void* want = (void*)(bias + (lowest & ~(ElfW(Addr))0xffff) - length);
  if (mmap(want, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0) != want) fputs("take: not taken\n", stderr);
}
)";

// The same on x86-64 past a 3 GiB .bss (-mcmodel=medium): a site with 22 nops before its entry
// (-fpatchable-function-entry=27,22) calls the 22-byte island written over them; with none (=5), and
// for -pg -mfentry and -pg sites, which never have any, the island of last resort on the page the shim
// maps below the executable at start (shim/abi.h LowIslands), in a PIE and at a fixed address alike.
// Each counted and graph-traced call by call. Where that page is taken when the program starts (here
// by a preloaded library's constructor), the shim takes the first free one lower down, and the calls
// are counted the same; where every page its sites reach is taken, they trap when enabled (README,
// "Trap sites"), saying so where tracing was asked for, and are counted the same.
TEST(Island, X86NoRoomAfterTheTextLeavesSitesTheNopsBeforeTheirEntryOrAPageBelowTheExecutable) {
  TempDir d;
  write_file(d / "big.c", big_bss_program(3));
  write_file(d / "take.c", take_below_executable);
  Proc c = run({"gcc", "-O2", "-Wall", "-Werror", "-fPIC", "-shared", d / "take.c", "-o", d / "take.so"});
  ASSERT_EQ(c.status, 0) << c.err;
  for (const std::string flag : {"-fpatchable-function-entry=27,22", "-fpatchable-function-entry=5", "-fpatchable-function-entry=5 -no-pie",
                                 "-pg -mfentry", "-pg"}) {
    SCOPED_TRACE(flag);
    Proc r = prepare_without_room(d, "gcc", flag + " -mcmodel=medium");
    ASSERT_EQ(r.status, 0) << r.err;
    const bool pads = flag == "-fpatchable-function-entry=27,22";
    EXPECT_NE(r.err.find(pads ? "call it through 1 branch island over the nops before a function's entry, at vaddr 0x"
                              : "call it through 1 branch island on a page the shim maps below the executable's lowest segment at start, at vaddr 0x"),
              std::string::npos)
        << r.err;
    if (flag.ends_with("-no-pie")) {  // (at a fixed address: the 64 KiB below 0x400000)
      EXPECT_NE(r.err.find("at vaddr 0x3fff"), std::string::npos) << r.err;
    }
    expect_islands_listed(d / "out", r.err);
    // Read back, the island's record leads to its function's site, as before.
    Proc sites = prepatch({"sites", d / "out"});
    EXPECT_NE(sites.out.find("3 sites (0 skipped); prepared binary"), std::string::npos) << sites.out;
    expect_traced_as_called(TestBinary{}, d, d / "nopad", 4, {{"main", 1}, {"mid", 4}, {"leaf", 8}}, "2leaf();\n2leaf();\n");
    if (pads || flag.ends_with("-no-pie")) continue;
    const Proc plain = run({d / "nopad", "4"}, d.path());
    std::filesystem::remove(d / "c");
    Proc lower = run({"env", "LD_PRELOAD=" + d / "take.so", "TAKE=0x20000", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "out", "4"}, d.path());
    EXPECT_EQ(lower.status, plain.status);
    EXPECT_EQ(lower.out, plain.out);
    EXPECT_EQ(lower.err, "");
    EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"mid", 4}, {"leaf", 8}}));
    std::filesystem::remove(d / "c");
    const std::string all = "TAKE=0x80000000";  // (2 GiB: every page a rel32 call reaches)
    Proc taken = run({"env", "LD_PRELOAD=" + d / "take.so", all, "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", d / "out", "4"}, d.path());
    EXPECT_EQ(taken.status, plain.status);
    EXPECT_EQ(taken.out, plain.out);
    EXPECT_TRUE(std::regex_search(taken.err, std::regex("^prepatch: this program's sites that need its islands of last resort trap when enabled \\(a signal "
                                                        "per call\\): no 64 KiB from 0x[0-9a-f]+ down to 0x[0-9a-f]+, below it within its sites' reach, "
                                                        "where its far sites' branch islands go, is free\n$")))
        << taken.err;
    EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"mid", 4}, {"leaf", 8}}));  // (each call a trap)
    Proc quiet = run({"env", "LD_PRELOAD=" + d / "take.so", all, d / "out", "4"}, d.path());  // (nothing asked: nothing said)
    EXPECT_EQ(quiet.out, plain.out);
    EXPECT_EQ(quiet.err, "");
  }
}

// A library past a 3 GiB .bss (leaf writes it) with no room after its text, and a program that loads it
// (dlopen), calls touch(i) for i < N and closes it, twice, then says how many 64 KiB anonymous
// executable mappings it has left (a page of islands of last resort: the program's own has none).
const char* far_library = R"(static char big[3UL << 30];
__attribute__((noinline)) int leaf(int i) { ((volatile char*)big)[i] = 1; return i * 3 + ((volatile char*)big)[i]; }
int touch(int i) { return leaf(i) + leaf(i + 1); }
)";
const char* far_library_host = R"(#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  long s = 0;
  for (int round = 0; round < 2; round++) {
    void* h = dlopen(argv[1], RTLD_NOW);
    if (!h) return printf("dlopen: %s\n", dlerror()), 1;
    int (*touch)(int) = (int (*)(int))dlsym(h, "touch");
    for (int i = 0; i < atoi(argv[2]); i++) s += touch(i);
    dlclose(h);
  }
  FILE* maps = fopen("/proc/self/maps", "r");
  char line[512];
  int pages = 0;
  while (maps && fgets(line, sizeof line, maps)) {
    unsigned long lo, hi, off, inode;
    char perms[8], dev[16];
    if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &lo, &hi, perms, &off, dev, &inode) == 6 && !strcmp(perms, "r-xp") && inode == 0 && hi - lo == 0x10000) pages++;
  }
  printf("%ld\npages %d\n", s, pages);
  return 0;
}
)";
// An auditor (LD_AUDIT) that takes TAKE_BELOW bytes of address space right below the object TAKE_OF as
// the loader maps it, before its initializers run, and gives them back as it is unloaded.
const char* take_below_auditor = R"(#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
unsigned la_version(unsigned v) { (void)v; return LAV_CURRENT; }
unsigned la_objopen(struct link_map* m, Lmid_t id, uintptr_t* cookie) {
  (void)id;
  *cookie = 0;
  if (strcmp(m->l_name, getenv("TAKE_OF"))) return 0;
  const size_t length = strtoul(getenv("TAKE_BELOW"), 0, 0);
  void* at = (void*)(m->l_addr - length);
  if (mmap(at, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0) != at)
    fprintf(stderr, "audit: the %#zx bytes below %s are not taken\n", length, m->l_name);
  else *cookie = (uintptr_t)at;
  return 0;
}
unsigned la_objclose(uintptr_t* cookie) {
  if (*cookie) munmap((void*)*cookie, strtoul(getenv("TAKE_BELOW"), 0, 0));
  return 0;
}
)";

// What lies below a shared object is the loader's choice, so its shim looks for a free page: the one
// right below it, else the first free one lower down that every far site still reaches (here 2 GiB).
// A library past a 3 GiB .bss with no room after its text (far_library): its sites call the island
// of last resort on that page, counted call by call and graph-traced:
//   - in an unprepared program, whose runtime the library's is (the library kept loaded, its page
//     with it), and in a prepared program whose runtime it enrolls with, which unloads it (its page
//     unmapped with it) and loads it again;
//   - with the page below it free, and with 128 KiB below it taken (by an auditor, as the loader maps
//     it, before its initializers run).
// With the 2 GiB below it taken, its sites trap, saying so, counted exactly.
TEST(Island, X86SharedObjectWithNoRoomTakesAFreePageBelowIt) {
  TempDir d;
  write_file(d / "big.c", far_library);
  write_file(d / "host.c", far_library_host);
  write_file(d / "audit.c", take_below_auditor);
  Proc r = prepare_without_room(d, "gcc", "-fpatchable-function-entry=5 -mcmodel=medium -fPIC -shared");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the shared object's lowest segment at start, at vaddr "
                       "0xffffffffffffffc0 (below address 0, where the load address is added); where that page is taken when the object "
                       "is loaded, the first free one up to 2047 MiB lower, and where none is, the sites that need it trap when enabled\n"),
            std::string::npos)
      << r.err;
  expect_islands_listed(d / "out", r.err);
  for (const auto& [what, cmd] : {std::pair{"host", cc_command("gcc", "-ldl", d / "host.c", d / "host")},
                                  std::pair{"host.pg", cc_command("gcc", "-fpatchable-function-entry=5 -ldl", d / "host.c", d / "host.pg")},
                                  std::pair{"audit", std::vector<std::string>{"gcc", "-O2", "-Wall", "-Werror", "-fPIC", "-shared", d / "audit.c", "-o", d / "audit.so"}}}) {
    Proc c = run(cmd);
    ASSERT_EQ(c.status, 0) << what << ": " << c.err;
  }
  ASSERT_EQ(prepatch({"-q", d / "host.pg", "-o", d / "host.prepared"}).status, 0);
  const Proc plain = run({d / "host", d / "nopad", "5"});
  ASSERT_EQ(plain.status, 0) << plain.err;
  ASSERT_EQ(plain.out, "170\npages 0\n");
  for (const std::string host : {"host", "host.prepared"}) {
    for (const std::string below : {"0", "0x20000"}) {
      SCOPED_TRACE(host + ", " + below + " bytes below it taken");
      const std::vector<std::string> audit =
          below == "0" ? std::vector<std::string>{} : std::vector<std::string>{"LD_AUDIT=" + d / "audit.so", "TAKE_OF=" + d / "out", "TAKE_BELOW=" + below};
      std::vector<std::string> env = audit;
      env.insert(env.end(), {"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"});
      std::filesystem::remove(d / "c");
      Proc t = run(with_env(env, {d / host, d / "out", "5"}), d.path());
      EXPECT_EQ(t.status, 0) << t.err;
      EXPECT_EQ(t.err, "");
      EXPECT_EQ(t.out, host == "host" ? "170\npages 1\n" : "170\npages 0\n");  // (the first kept loaded; the second's unmapped)
      std::map<std::string, long> counts = {{"leaf", 20}, {"touch", 10}};
      if (host != "host") counts["main"] = 1;  // (the prepared program's own)
      EXPECT_EQ(function_counts(d / "out", d / "c"), counts);
      env = audit;
      env.insert(env.end(), {"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t"});
      t = run(with_env(env, {d / host, d / "out", "5"}), d.path());
      EXPECT_EQ(t.status, 0) << t.err;
      Proc replay = prepatch({"replay", d / "t"});
      EXPECT_EQ(replay.status, 0) << replay.err;
      EXPECT_EQ(call_shape(replay.out), host == "host" ? repeated(10, "0touch() {\n1leaf();\n1leaf();\n0} /* touch */\n")
                                                       : "0main() {\n" + repeated(10, "1touch() {\n2leaf();\n2leaf();\n1} /* touch */\n") +
                                                             "0} /* main */\n")  // (the prepared program's main traced too)
          << replay.out;
    }
  }
  // No page within reach free: the sites trap, saying so, counted exactly.
  std::filesystem::remove(d / "c");
  Proc off = run({"env", "LD_AUDIT=" + d / "audit.so", "TAKE_OF=" + d / "out", "TAKE_BELOW=0x80010000", "PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c",
                  d / "host", d / "out", "5"},
                 d.path());
  EXPECT_EQ(off.status, 0) << off.err;
  EXPECT_EQ(off.out, plain.out);
  EXPECT_TRUE(std::regex_search(off.err, std::regex("^prepatch: this shared object's sites that need its islands of last resort trap when enabled "
                                                    "\\(a signal per call\\): no 64 KiB from 0x[0-9a-f]+ down to 0x[0-9a-f]+, below it within its "
                                                    "sites' reach, where its far sites' branch islands go, is free\n$")))  // (once: its runtime serves, kept loaded)
      << off.err;
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"leaf", 20}, {"touch", 10}}));
}

// The same under qemu on AArch64, PPC64le, ARM32 and RISC-V64:
//   - AArch64: far_library stripped without .eh_frame (nothing shows where its functions end, so no
//     padding between them serves), -fpatchable-function-entry=2;
//   - PPC64le: a library past a 64 MiB .bss (beyond a bl's +-32 MiB) whose leaf() alone is built with
//     -fpatchable-function-entry=2 (gcc 12 puts the nops of a function with a TOC setup before it, and
//     the library would not run; its site would be skipped anyway, README);
//   - ARM32 (Thumb-2): far_library past a 1 GiB .bss, -fpatchable-function-entry=3 (too few nops for
//     an island before the entry);
//   - RISC-V64: far_library, -fpatchable-function-entry=4 and -pg. The preparer aims the sites'
//     auipc (and the -pg sites' redirect) at the first page; under qemu-user, which places mappings
//     upwards, that page is taken by what was mapped before the library, so the shim maps a lower one
//     and aims them there as the library starts.
// Its sites call the island of last resort below the library, counted call by call in an unprepared
// program and a prepared one, which unloads the library and loads it again, and graph-traced in the
// first. (A library loaded after a runtime's trace buffers finds them right below it under qemu-user;
// on a kernel, which places mappings downwards, it lies below them.)
TEST(Island, SharedObjectsWithNoRoomTakeAPageBelowThemOnEveryIsaUnderQemu) {
  struct Case {
    std::string isa, cc, source, flags, host_flags, lower;
    std::map<std::string, long> counts;
    std::string shape;
  };
  const Case cases[] = {
      {"aarch64", "aarch64-linux-gnu-gcc", far_library, "-fpatchable-function-entry=2 -fPIC -shared -s", "-fpatchable-function-entry=2", "127",
       {{"leaf", 20}, {"touch", 10}}, repeated(10, "0touch() {\n1leaf();\n1leaf();\n0} /* touch */\n")},
      {"ppc64le", "powerpc64le-linux-gnu-gcc", R"(static char big[64UL << 20];
__attribute__((noinline, patchable_function_entry(2, 0))) int leaf(int i) { return i * 3 + 1; }
int touch(int i) { ((volatile char*)big)[i] = 1; return leaf(i) + leaf(i + 1) + ((volatile char*)big)[i] - 1; }
)",
       "-fPIC -shared", "-pg", "31", {{"leaf", 20}}, repeated(20, "0leaf();\n")},
      {"arm", "arm-linux-gnueabihf-gcc", std::regex_replace(far_library, std::regex("3UL << 30"), "1UL << 30"), "-fpatchable-function-entry=3 -fPIC -shared",
       "-fpatchable-function-entry=3", "15", {{"leaf", 20}, {"touch", 10}}, repeated(10, "0touch() {\n1leaf();\n1leaf();\n0} /* touch */\n")},
      {"riscv64", "riscv64-linux-gnu-gcc", far_library, "-fpatchable-function-entry=4 -fPIC -shared", "-fpatchable-function-entry=4", "2048",
       {{"leaf", 20}, {"touch", 10}}, repeated(10, "0touch() {\n1leaf();\n1leaf();\n0} /* touch */\n")},
      {"riscv64", "riscv64-linux-gnu-gcc", far_library, "-pg -fPIC -shared", "-fpatchable-function-entry=4", "2048",
       {{"leaf", 20}, {"touch", 10}}, repeated(10, "0touch() {\n1leaf();\n1leaf();\n0} /* touch */\n")},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.isa + " " + c.flags);
    TempDir d;
    write_file(d / "big.c", c.source);
    write_file(d / "host.c", far_library_host);
    Proc r = prepare_without_room(d, c.cc, c.flags, c.isa == "aarch64" ? "aarch64-linux-gnu-objcopy" : "");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the shared object's lowest segment at start, at vaddr " +
                         std::string(c.flags.starts_with("-pg") ? "0xffffffffffffff80" : "0xffffffffffffffc0") +  // (-pg: mcount's slot)
                         " (below address 0, where the load address is added); where that page is taken when the object is loaded, the first "
                         "free one up to " + c.lower + " MiB lower, and where none is, the sites that need it trap when enabled\n"),
              std::string::npos)
        << r.err;
    expect_islands_listed(d / "out", r.err);
    for (const auto& [name, flags] : {std::pair{"host", std::string()}, std::pair{"host.pg", c.host_flags}}) {
      Proc h = run(cc_command(c.cc, flags, d / "host.c", d / name));
      ASSERT_EQ(h.status, 0) << h.err;
    }
    ASSERT_EQ(prepatch({"-q", d / "host.pg", "-o", d / "host.prepared"}).status, 0);
    const TestBinary bin{.isa = c.isa};
    for (const std::string host : {"host", "host.prepared"}) {
      SCOPED_TRACE(host);
      std::filesystem::remove(d / "c");
      Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / host, {d / "out", "5"})), d.path());
      EXPECT_EQ(t.status, 0) << t.err;
      EXPECT_EQ(t.err, "");
      EXPECT_EQ(t.out, host == "host" ? "170\npages 1\n" : "170\npages 0\n");  // (the first kept loaded; the second's unmapped)
      std::map<std::string, long> counts = c.counts;
      if (host != "host") counts["main"] = 1;  // (the prepared program's own)
      EXPECT_EQ(function_counts(d / "out", d / "c"), counts);
    }
    Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t"}, bin.exec(d / "host", {d / "out", "5"})), d.path());
    EXPECT_EQ(t.status, 0) << t.err;
    Proc replay = prepatch({"replay", d / "t"});
    EXPECT_EQ(replay.status, 0) << replay.err;
    EXPECT_EQ(call_shape(replay.out), c.shape) << replay.out;
  }
}

// PPC64le, static (at a fixed address, 0x10000000) past a 1 GiB .bss with no room after the text:
// leaf(), the only function without a TOC setup (whose sites are skipped, README), has neither nops
// before its entry nor a stub, and calls the island of last resort on the page below the executable
// (0x0fff0000), counted and graph-traced call by call. (qemu-ppc64le cannot run such a PIE at all.)
TEST(Island, Ppc64leNoRoomAfterTheTextTakesAPageBelowTheExecutable) {
  TempDir d;
  write_file(d / "big.c", R"(#include <stdio.h>
#include <stdlib.h>
static char big[1UL << 30];
__attribute__((noinline)) int leaf(int i) { __asm__ volatile("" ::: "memory"); return i * 3; }
__attribute__((noinline)) int mid(int i) { return leaf(i) + leaf(i + 1); }
int main(int argc, char** argv) {
  int n = atoi(argv[1]), s = 0;
  for (int i = 0; i < n; i++) s += mid(i);
  ((volatile char*)big)[n] = 1;
  printf("%d\n", s + ((volatile char*)big)[n]);
  return argc - 2;
}
)");
  Proc r = prepare_without_room(d, "powerpc64le-linux-gnu-gcc", "-fpatchable-function-entry=2 -static");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the executable's lowest segment at start, at vaddr 0xfffffc0;"),
            std::string::npos)
      << r.err;
  expect_islands_listed(d / "out", r.err);
  const TestBinary bin{.isa = "ppc64le"};
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, bin.exec(d / "out", {"5"})), d.path());
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "76\n");
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"leaf", 10}}));
  t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t"}, bin.exec(d / "out", {"5"})), d.path());
  EXPECT_EQ(t.status, 0) << t.err;
  Proc replay = prepatch({"replay", d / "t"});
  EXPECT_EQ(replay.status, 0) << replay.err;
  EXPECT_EQ(call_shape(replay.out), repeated(10, "0leaf();\n")) << replay.out;
}

// PPC64le, static, a text over twice a bl's reach: f1, 40 MiB, f2, 40 MiB, f3, patchable sites with no
// nops before them (=2). f1 reaches the island of last resort on the page below the executable, f3 the
// shim above the text, and f2, between them, neither: a trap site, though both ends of the text reach
// something. Counted exactly (an unflagged trap there would kill the process: no SIGTRAP handler).
TEST(Island, Ppc64leASiteBetweenTwoReachedEndsTraps) {
  TempDir d;
  write_file(d / "mid.c", R"(#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) int f1(int i) { __asm__ volatile("" ::: "memory"); return i * 3; }
__asm__(".text\n.skip 40 << 20\n");
__attribute__((noinline)) int f2(int i) { __asm__ volatile("" ::: "memory"); return i * 5; }
__asm__(".text\n.skip 40 << 20\n");
__attribute__((noinline)) int f3(int i) { __asm__ volatile("" ::: "memory"); return i * 7; }
int main(int argc, char** argv) {
  int n = atoi(argv[1]), s = 0;
  for (int i = 0; i < n; i++) s += f1(i) + f2(i) + f3(i);
  printf("%d\n", s);
  return argc - 2;
}
)");
  Proc c = run({"powerpc64le-linux-gnu-gcc", "-O2", "-fpatchable-function-entry=2", "-static", "-fno-toplevel-reorder", d / "mid.c", "-o", d / "mid"});
  ASSERT_EQ(c.status, 0) << c.err;
  Proc r = prepatch({d / "mid", "-o", d / "out"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find(": 1 site reaches neither the shim nor room for a branch island: enabled, each holds the ISA's trap"), std::string::npos) << r.err;
  expect_trap_sites_listed(d / "out", r.err, 1);
  EXPECT_TRUE(std::regex_search(prepatch({"sites", d / "out"}).out, std::regex(" trap +f2\n")));
  Proc t = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, TestBinary{.isa = "ppc64le"}.exec(d / "out", {"3"})), d.path());
  EXPECT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(t.out, "45\n");
  EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"f1", 3}, {"f2", 3}, {"f3", 3}}));
  std::filesystem::remove(d / "mid"), std::filesystem::remove(d / "out");  // (80 MiB each)
}

// RISC-V64 past a 3 GiB .bss with no room after the text: patchable sites (their auipc, written when
// prepared, names the island) and the -pg sites' redirect (what they call jumps on to it) take the
// island of last resort on the page below the PIE, counted and graph-traced call by call; with that
// page taken, they trap.
TEST(Island, Riscv64NoRoomAfterTheTextTakesAPageBelowTheExecutable) {
  TempDir d;
  write_file(d / "big.c", big_bss_program(3));
  write_file(d / "take.c", take_below_executable);
  Proc c = run({"riscv64-linux-gnu-gcc", "-O2", "-Wall", "-Werror", "-fPIC", "-shared", d / "take.c", "-o", d / "take.so"});
  ASSERT_EQ(c.status, 0) << c.err;
  for (const std::string flag : {"-fpatchable-function-entry=4", "-pg"}) {
    SCOPED_TRACE(flag);
    Proc r = prepare_without_room(d, "riscv64-linux-gnu-gcc", flag);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the executable's lowest segment at start, at vaddr 0x"),
              std::string::npos)
        << r.err;
    expect_islands_listed(d / "out", r.err);
    expect_traced_as_called(TestBinary{.isa = "riscv64"}, d, d / "nopad", 4, {{"main", 1}, {"mid", 4}, {"leaf", 8}}, "2leaf();\n2leaf();\n");
    // That page taken (by a library preloaded into the guest, qemu's -E): an executable's islands
    // cannot move, so its sites trap when enabled (-pg ones no longer calling their redirect, which
    // jumps there), counted exactly.
    std::vector<std::string> cmd = TestBinary{.isa = "riscv64"}.exec(d / "out", {"4"});
    cmd.insert(cmd.begin() + 3, {"-E", "LD_PRELOAD=" + d / "take.so"});
    std::filesystem::remove(d / "c");
    Proc taken = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c", "TAKE=0x10000"}, cmd), d.path());
    EXPECT_EQ(taken.status, 0) << taken.err;
    EXPECT_EQ(taken.out, run(TestBinary{.isa = "riscv64"}.exec(d / "nopad", {"4"}), d.path()).out);
    EXPECT_TRUE(std::regex_search(taken.err, std::regex("^prepatch: this program's sites that need its islands of last resort trap when enabled \\(a "
                                                        "signal per call\\): the 64 KiB at 0x[0-9a-f]+ below it, where its far sites' branch "
                                                        "islands go, are taken\n$")))
        << taken.err;
    EXPECT_EQ(function_counts(d / "out", d / "c"), (std::map<std::string, long>{{"main", 1}, {"mid", 4}, {"leaf", 8}}));
  }
}

// ARM32 past a 1 GiB .bss with no room after the text: patchable Thumb sites with too few nops before
// their entry for an island there (-fpatchable-function-entry=3) call the island of last resort below
// the executable, counted and graph-traced call by call: linked at 0x400000, on the page below it; as
// a PIE, under qemu-arm, whose guest stack lies right below it, on the first free page below that
// stack, the island moved there (its literal a 32-bit word). Linked at ld's default 0x10000, no page
// above 64 KiB lies below it: refused, saying so. Static -pg sites, whose calls entered no stub, take
// one too: Thumb ones the Thumb island, ARM-state ones (-marm) a copy of the shim's ARM-state entry.
TEST(Island, Arm32NoRoomAfterTheTextTakesAPageBelowTheExecutable) {
  TempDir d;
  write_file(d / "big.c", big_bss_program(1));
  for (const std::string link :
       {"-fpatchable-function-entry=3 -no-pie -Wl,-Ttext-segment=0x400000", "-fpatchable-function-entry=3 -pie", "-fpatchable-function-entry=3 -no-pie",
        "-pg -static -Wl,-Ttext-segment=0x400000", "-marm -pg -static -Wl,-Ttext-segment=0x400000"}) {
    SCOPED_TRACE(link);
    Proc r = prepare_without_room(d, "arm-linux-gnueabihf-gcc", link);
    if (link.ends_with("-no-pie")) {  // no page for the islands: every site traps, resolved as its call
      ASSERT_EQ(r.status, 0) << r.err;
      EXPECT_NE(r.err.find(": 3 sites reach neither the shim nor room for a branch island: enabled, each holds the ISA's trap, which the shim resolves as "
                           "the call (a signal per call, and a thread that blocks SIGTRAP when it calls one is killed: README, \"Trap sites\"), at vaddr 0x"),
                std::string::npos)
          << r.err;
      expect_trap_sites_listed(d / "out", r.err, 3);
      expect_traced_as_called(TestBinary{.isa = "arm"}, d, d / "nopad", 4, {{"main", 1}, {"mid", 4}, {"leaf", 8}}, "2leaf();\n2leaf();\n");
      continue;
    }
    ASSERT_EQ(r.status, 0) << r.err;
    const std::string at = link.ends_with("-pie")                ? "0xffffffffffffffc0 (below address 0, where the load address is added)"
                           : link.starts_with("-fpatchable") ? "0x3fffc0"
                           : link.starts_with("-pg")         ? "0x3fff80"   // (mcount's slot)
                                                             : "0x3fff40";  // (fentry's: the ARM-state entry's copy)
    EXPECT_NE(r.err.find("call it through 1 branch island on a page the shim maps below the executable's lowest segment at start, at vaddr " + at +
                         "; where that page is taken when the program starts, the first free one up to " + (link.starts_with("-marm") ? "31" : "15") +
                         " MiB lower, and where none is, " + (link.starts_with("-marm") ? "its sites stay off\n" : "the sites that need it trap when enabled\n")),
              std::string::npos)
        << r.err;
    expect_islands_listed(d / "out", r.err);
    expect_traced_as_called(TestBinary{.isa = "arm"}, d, d / "nopad", 4, {{"main", 1}, {"mid", 4}, {"leaf", 8}}, "2leaf();\n2leaf();\n");
  }
}

// Sites that reach nothing: an executable linked at 64 KiB (ld's default on RISC-V64; no page above 64
// KiB below it for the islands of last resort) whose .bss puts the shim beyond every call's reach, with
// no room after the text. AArch64 and PPC64le -pg static: their calls entered no stub that could take
// an island. (Patchable AArch64 sites would take one over the padding between functions; PPC64le's,
// in a text larger than the reach: IslandLargeTextPads.) Every site is prepared as a trap site (the ISA's trap when enabled, resolved by the shim's
// handler as the call, README "Trap sites"), listed as such, counted exactly and under graph nested as
// called. RISC-V64's -pg sites then have no redirect: the handler sends them to the trampoline itself.
// (ARM32's: Arm32NoRoomAfterTheTextTakesAPageBelowTheExecutable.)
class IslandTrapSites : public ::testing::TestWithParam<BigBss> {};

TEST_P(IslandTrapSites, SitesThatReachNothingTrapAndAreTracedAsCalled) {
  const BigBss& p = GetParam();
  TempDir d;
  write_file(d / "big.c", big_bss_program(p.gib()));
  Proc r = prepare_without_room(d, p.cc, p.flags);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find(": 3 sites reach neither the shim nor room for a branch island: enabled, each holds the ISA's trap"), std::string::npos) << r.err;
  expect_trap_sites_listed(d / "out", r.err, 3);
  expect_traced_as_called(TestBinary{.isa = p.isa}, d, d / "nopad", 4, {{"main", 1}, {"mid", 4}, {"leaf", 8}}, "2leaf();\n2leaf();\n");
}

INSTANTIATE_TEST_SUITE_P(Isas, IslandTrapSites,
                         ::testing::Values(BigBss{"", "gcc", "-pg -mfentry -mcmodel=medium -no-pie -Wl,-Ttext-segment=0x10000"},
                                           BigBss{"", "gcc", "-pg -mcmodel=medium -no-pie -Wl,-Ttext-segment=0x10000"},
                                           BigBss{"", "gcc", "-fpatchable-function-entry=5 -mcmodel=medium -fcf-protection -no-pie -Wl,-Ttext-segment=0x10000"},
                                           BigBss{"riscv64", "riscv64-linux-gnu-gcc", "-pg -no-pie"},
                                           BigBss{"riscv64", "riscv64-linux-gnu-gcc", "-fpatchable-function-entry=4 -no-pie"},
                                           BigBss{"aarch64", "aarch64-linux-gnu-gcc", "-pg -static -Wl,-Ttext-segment=0x10000"},
                                           BigBss{"ppc64le", "powerpc64le-linux-gnu-gcc", "-pg -static -Wl,-Ttext-segment=0x10000"}),
                         [](const auto& i) { return i.param.name(); });

INSTANTIATE_TEST_SUITE_P(Isas, IslandBigBss,
                         ::testing::Values(BigBss{"", "gcc", "-pg -mfentry -mcmodel=medium"}, BigBss{"", "gcc", "-pg -mcmodel=medium"},
                                           BigBss{"", "gcc", "-fpatchable-function-entry=5 -mcmodel=medium -fcf-protection"},
                                           BigBss{"aarch64", "aarch64-linux-gnu-gcc", "-pg"},
                                           BigBss{"aarch64", "aarch64-linux-gnu-gcc", "-fpatchable-function-entry=2"},
                                           BigBss{"ppc64le", "powerpc64le-linux-gnu-gcc", "-pg"},
                                           BigBss{"riscv64", "riscv64-linux-gnu-gcc", "-pg"},
                                           BigBss{"riscv64", "riscv64-linux-gnu-gcc", "-fpatchable-function-entry=4"},
                                           BigBss{"arm", "arm-linux-gnueabihf-gcc", "-pg"}, BigBss{"arm", "arm-linux-gnueabihf-gcc", "-marm -pg"},
                                           BigBss{"arm", "arm-linux-gnueabihf-gcc", "-fpatchable-function-entry=3 -no-pie"}),
                         [](const auto& i) { return i.param.name(); });

}  // namespace

std::string without_room_after_the_text(std::string bytes) {
  u64 text_end = 0;  // the executable PT_LOAD's file end
  {
    elf::Elf e(std::span<const u8>(reinterpret_cast<const u8*>(bytes.data()), bytes.size()), "big");
    for (const elf::Segment& s : e.segments())
      if (s.type == PT_LOAD && (s.flags & PF_X)) text_end = s.offset + s.filesz;
  }
  if (!text_end || bytes.substr(text_end, 64) != std::string(64, '\0')) return {};
  return bytes.replace(text_end, 64, std::string(64, '\xff'));
}

}  // namespace prepatch::test
