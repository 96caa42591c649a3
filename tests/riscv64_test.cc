// Our RISC-V decoder (Capstone 4 has none) against riscv64-linux-gnu-objdump: every 16-bit encoding,
// the 32-bit forms sites are made of, and the fields discovery reads from real binaries.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "arch/riscv64_decode.h"
#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "support.h"

namespace prepatch::test {
namespace {

using arch::riscv64::decode;

// objdump -D of raw little-endian bytes: offset -> (mnemonic, operands without comments).
std::map<unsigned, std::pair<std::string, std::string>> objdump_raw(const std::string& bytes) {
  TempDir d;
  write_file(d / "code.bin", bytes);
  Proc p = run({RISCV_OBJDUMP, "-D", "-b", "binary", "-m", "riscv:rv64", "-M", "no-aliases", d / "code.bin"});
  EXPECT_EQ(p.status, 0) << p.err;
  std::map<unsigned, std::pair<std::string, std::string>> out;
  std::istringstream in(p.out);
  std::string line;
  while (std::getline(in, line)) {
    // "   1a:\t0001                \tc.addi\tzero,0"
    auto colon = line.find(":\t");
    if (colon == std::string::npos) continue;
    unsigned off = std::stoul(line.substr(0, colon), nullptr, 16);
    std::vector<std::string> f;
    std::istringstream fs(line.substr(colon + 2));
    std::string part;
    while (std::getline(fs, part, '\t')) f.push_back(part);
    if (f.size() < 2) continue;
    std::string ops = f.size() > 2 ? f[2] : "";
    if (auto hash = ops.find(" #"); hash != std::string::npos) ops.resize(hash);
    out[off] = {f[1], ops};
  }
  return out;
}

std::string mnemonic(const std::string& text) { return text.substr(0, text.find('\t')); }

TEST(Riscv64Decoder, EveryCompressedEncodingAgreesWithObjdump) {
  std::string bytes;
  std::vector<u16> hws;
  for (u32 h = 0; h < 0x10000; h++)
    if ((h & 3) != 3) {
      hws.push_back(static_cast<u16>(h));
      bytes += static_cast<char>(h & 0xff);
      bytes += static_cast<char>(h >> 8);
    }
  auto od = objdump_raw(bytes);
  ASSERT_EQ(od.size(), hws.size());
  unsigned mismatches = 0;
  for (size_t i = 0; i < hws.size(); i++) {
    const u16 h = hws[i];
    const u8 b[2] = {static_cast<u8>(h), static_cast<u8>(h >> 8)};
    arch::riscv64::Insn ours = decode(b);
    const auto& [m, ops] = od.at(static_cast<unsigned>(2 * i));
    ASSERT_EQ(ours.len, 2u);
    // Where the manual and binutils 2.40 differ, the manual wins, each case named:
    std::string theirs = m;
    bool their_valid = m != ".2byte";
    if (h == 0) their_valid = false;                              // c.unimp: defined illegal, it traps
    if (h == 0x0001) theirs = "c.nop";                          // binutils shows the canonical nop as c.addi zero,0
    if (m == "c.addi16sp" && (h & 0x107c) == 0) their_valid = false, theirs = ".2byte";  // nzimm = 0 is reserved
    if (ours.valid != their_valid || (ours.valid && mnemonic(ours.text) != theirs)) {
      if (++mismatches <= 20) ADD_FAILURE() << std::hex << "0x" << h << ": ours `" << ours.text << "` (valid " << ours.valid << "), objdump `" << m << " " << ops << "`";
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(Riscv64Decoder, SiteFormsAgreeWithObjdump) {
  std::vector<u32> words = {arch::riscv64::nop, 0x0010'0073 /* ebreak */, 0xff85'3503 /* ld a0, -8(a0) */, 0x00c5'8533 /* add a0, a1, a2 */};
  // The branch island's four instructions (arch/island.h checks islands through this decoder).
  for (u64 target : {u64{0x1000}, u64{0x7'0000'1000}}) {
    u8 island[arch::riscv64::island_size];
    arch::riscv64::encode_island(0x1000, target, island);
    for (unsigned i = 0; i < 4; i++) words.push_back(island[4 * i] | island[4 * i + 1] << 8 | island[4 * i + 2] << 16 | u32{island[4 * i + 3]} << 24);
  }
  for (i64 d : {0LL, 4LL, -4LL, 0x7f0LL, -0x800LL, 0x12345678LL, -0x1000LL}) {
    u32 auipc, jalr;
    for (unsigned link : {arch::riscv64::ra, arch::riscv64::t0}) {
      ASSERT_TRUE(arch::riscv64::encode_call(0x1000, 0x1000 + static_cast<u64>(d), link, auipc, jalr));
      words.push_back(auipc);
      words.push_back(jalr);
    }
  }
  std::string bytes;
  for (u32 w : words)
    for (int i = 0; i < 4; i++) bytes += static_cast<char>(w >> (8 * i));
  auto od = objdump_raw(bytes);
  ASSERT_EQ(od.size(), words.size());
  for (size_t i = 0; i < words.size(); i++) {
    const u8* b = reinterpret_cast<const u8*>(bytes.data()) + 4 * i;
    arch::riscv64::Insn ours = decode({b, 4});
    const auto& [m, ops] = od.at(static_cast<unsigned>(4 * i));
    EXPECT_TRUE(ours.valid);
    EXPECT_EQ(ours.text, ops.empty() ? m : m + "\t" + ops) << std::hex << words[i];
  }
}

// The prologue forms discovery follows at -pg sites (arch/riscv64.h: the moves of sp and the save of
// ra): every encoding of the compressed ones, and 32-bit ones over the whole immediate range, read as
// objdump reads them.
TEST(Riscv64Decoder, PrologueFormsAgreeWithObjdump) {
  namespace rv = arch::riscv64;
  std::vector<std::pair<u32, unsigned>> insns;  // (encoding, length)
  for (u32 h = 0; h < 0x10000; h++)
    if (rv::is_c_addi16sp(static_cast<u16>(h)) || rv::is_c_addi_sp(static_cast<u16>(h)) || rv::is_c_sdsp_ra(static_cast<u16>(h))) insns.push_back({h, 2});
  for (i64 imm = -2048; imm < 2048; imm += 8) {
    const u32 i = static_cast<u32>(imm) & 0xfff;
    insns.push_back({0x0001'0113 | i << 20, 4});                                   // addi sp, sp, imm
    insns.push_back({0x0011'3023 | (i >> 5) << 25 | (i & 31) << 7, 4});            // sd ra, imm(sp)
  }
  std::string bytes;
  std::vector<unsigned> at;
  for (auto [w, len] : insns) {
    at.push_back(static_cast<unsigned>(bytes.size()));
    for (unsigned k = 0; k < len; k++) bytes += static_cast<char>(w >> (8 * k));
  }
  auto od = objdump_raw(bytes);
  ASSERT_EQ(od.size(), insns.size());
  size_t checked[3] = {};
  for (size_t i = 0; i < insns.size(); i++) {
    const auto [w, len] = insns[i];
    const auto& [m, ops] = od.at(at[i]);
    std::string ours;
    if (len == 2 && rv::is_c_addi16sp(static_cast<u16>(w))) ours = "c.addi16sp sp," + std::to_string(rv::c_addi16sp_imm(static_cast<u16>(w))), checked[0]++;
    else if (len == 2 && rv::is_c_addi_sp(static_cast<u16>(w))) ours = "c.addi sp," + std::to_string(rv::c_addi_imm(static_cast<u16>(w))), checked[0]++;
    else if (len == 2) ours = "c.sdsp ra," + std::to_string(rv::c_sdsp_uimm(static_cast<u16>(w))) + "(sp)", checked[1]++;
    else if (rv::is_addi_sp_sp(w)) ours = "addi sp,sp," + std::to_string(rv::i_imm(w)), checked[2]++;
    else if (rv::is_sd_ra_sp(w)) ours = "sd ra," + std::to_string(rv::s_imm(w)) + "(sp)", checked[2]++;
    EXPECT_EQ(ours, m + " " + ops) << std::hex << "0x" << w;
  }
  EXPECT_EQ(checked[0], 63u + 63u);  // c.addi16sp's nonzero immediates (6 bits, x16) and c.addi sp's (6 bits)
  EXPECT_EQ(checked[1], 64u);        // c.sdsp ra: 6 bits (x8)
  EXPECT_EQ(checked[2], 1024u);
  // What may write sp (or jump) ends the prologue; what a prologue does besides does not.
  EXPECT_TRUE(rv::ends_prologue(u16{0x911a}));   // c.add sp, t1
  EXPECT_TRUE(rv::ends_prologue(u16{0x8116}));   // c.mv sp, t0
  EXPECT_TRUE(rv::ends_prologue(u16{0xa001}));   // c.j .
  EXPECT_TRUE(rv::ends_prologue(u32{0x0000'0063}));  // beq zero, zero, .
  EXPECT_TRUE(rv::ends_prologue(u32{0x4051'0133}));  // sub sp, sp, t0
  EXPECT_FALSE(rv::ends_prologue(u16{0xe022}));  // c.sdsp s0, 0(sp)
  EXPECT_FALSE(rv::ends_prologue(u16{0x842a}));  // c.mv s0, a0
  EXPECT_FALSE(rv::ends_prologue(u16{0x8506}));  // c.mv a0, ra
  EXPECT_FALSE(rv::ends_prologue(u32{0x0081'3823}));  // sd s0, 16(sp)
}

// arch::riscv64::movable (whether the graph tracer may run a static unwinder's first instructions
// elsewhere) on every instruction of a static program's .text, against objdump's reading: false
// exactly for auipc, jumps, branches and system instructions, compressed or not.
TEST(Riscv64Decoder, MovableAgreesWithObjdump) {
  Proc p = run({RISCV_OBJDUMP, "-d", "-M", "no-aliases", std::string(TESTDATA_DIR) + "/basic-rv-pg-static"});
  ASSERT_EQ(p.status, 0) << p.err;
  const std::set<std::string> fixed{"auipc", "jal", "jalr", "beq", "bne", "blt", "bge", "bltu", "bgeu", "ecall", "ebreak", "c.j", "c.jal",
                                    "c.jr", "c.jalr", "c.beqz", "c.bnez", "c.ebreak", "c.unimp", "mret", "sret", "wfi"};
  size_t insns = 0, unmovable = 0;
  for (const std::vector<std::string>& f : objdump_fields(p.out)) {  // "   1042a:", "00068717          ", "auipc", "a4,0x68"
    if (f[2].starts_with(".")) continue;
    const std::string hex = f[1].substr(0, f[1].find(' '));
    const u32 w = static_cast<u32>(std::stoul(hex, nullptr, 16));
    const std::string& m = f[2];
    const bool want = !(fixed.count(m) || m.starts_with("csrr"));
    EXPECT_EQ(hex.size() == 4 ? arch::riscv64::movable(static_cast<u16>(w)) : arch::riscv64::movable(w), want) << f[0] << " " << m;
    insns++, unmovable += !want;
  }
  EXPECT_GT(insns, 10000u);
  EXPECT_GT(unmovable, 1000u);
}

TEST(Riscv64Decoder, CallPairReachesItsTarget) {
  // auipc+jalr must add up to the distance, including where the low part is negative.
  for (i64 d : {0LL, 0x7ffLL, 0x800LL, -0x800LL, -0x801LL, 0x7fff'f7ffLL, -0x8000'0000LL}) {
    u32 auipc, jalr;
    ASSERT_TRUE(arch::riscv64::encode_call(0x10000, 0x10000 + static_cast<u64>(d), 1, auipc, jalr)) << d;
    const i64 hi = static_cast<i64>(static_cast<std::int32_t>(auipc & 0xfffff000));
    const i64 lo = static_cast<i64>(static_cast<std::int32_t>(jalr) >> 20);
    EXPECT_EQ(hi + lo, d);
  }
  u32 a, j;
  EXPECT_FALSE(arch::riscv64::encode_call(0, 0x8000'0000ULL, 1, a, j));  // past +2 GiB - 2 KiB
}


// ---- discovery on real binaries ---------------------------------------------------------------

const std::string td = TESTDATA_DIR;

// `riscv64-linux-gnu-objdump -d` of a linked binary's section: address -> instruction (aliases on, as
// people read it: "  87a:\tef7ff0ef          \tjal\t770 <_mcount@plt>"), operands without comments.
std::map<unsigned long long, ObjdumpLine> objdump_section(const std::string& bin, const std::string& section) {
  auto insns = test::objdump_section(RISCV_OBJDUMP, bin, section).insns;
  for (auto& [at, l] : insns)
    if (auto hash = l.ops.find(" #"); hash != std::string::npos) l.ops.resize(hash);
  return insns;
}

std::set<u64> site_addresses(const std::string& bin) {
  Proc r = prepatch({"sites", bin, "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  std::set<u64> out;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  for (const auto& s : j["sites"]) out.insert(s["address"].get<u64>());
  return out;
}

// The decoded fields discovery uses (jal's target, auipc's immediate) against objdump, on every such
// instruction of .text; and the -pg sites are exactly the calls to _mcount objdump shows, found
// through the PLT entry (dynamic) or directly (static).
void expect_calls_agree(const std::string& bin) {
  SCOPED_TRACE(bin);
  MappedFile f(bin);
  elf::Elf e(f.bytes(), bin);
  std::set<u64> mcount_calls;
  unsigned jals = 0, auipcs = 0;
  for (const auto& [at, l] : objdump_section(bin, ".text")) {
    auto b = e.bytes_at(at, 4);
    if (b.size() < 4) continue;
    const u32 w = static_cast<u32>(e.codec().get(b, 0, 4));
    if (l.mnemonic == "jal") {  // "jal\t770 <_mcount@plt>": rd = ra; "jal\tt0,..." otherwise
      jals++;
      ASSERT_TRUE(arch::riscv64::is_jal(w)) << std::hex << at;
      const std::string target = l.ops.find(',') == std::string::npos ? l.ops : l.ops.substr(l.ops.find(',') + 1);
      EXPECT_EQ(at + static_cast<u64>(arch::riscv64::j_imm(w)), std::stoull(target, nullptr, 16)) << std::hex << at;
      if (l.ops.find('<') != std::string::npos && (l.ops.find("<_mcount@plt>") != std::string::npos || l.ops.find("<_mcount>") != std::string::npos))
        mcount_calls.insert(at);
    } else if (l.mnemonic == "auipc") {  // "auipc\ta3,0x4d"
      auipcs++;
      ASSERT_TRUE(arch::riscv64::is_auipc(w)) << std::hex << at;
      EXPECT_EQ(static_cast<u64>(arch::riscv64::u_imm(w) >> 12) & 0xfffff, std::stoull(l.ops.substr(l.ops.find(',') + 1), nullptr, 16)) << std::hex << at;
    }
  }
  EXPECT_GT(jals, 10u);
  EXPECT_GT(auipcs, 2u);
  EXPECT_EQ(site_addresses(bin), mcount_calls);
}

TEST(Riscv64Discovery, MinusPgSitesAreTheCallsToMcountObjdumpShows) {
  expect_calls_agree(td + "/basic-rv-pg");
  expect_calls_agree(td + "/many-rv-pg");
  expect_calls_agree(td + "/threads-rv-pg-static");
}

// The prepared -pg binary: the _mcount PLT entry starts with `auipc t1; jr lo(t1)` into the shim, and
// every site is a nop that objdump agrees starts an instruction.
TEST(Riscv64Discovery, ThePltEntryOfMcountJumpsIntoTheShim) {
  TempDir d;
  ASSERT_EQ(prepatch({td + "/basic-rv-pg", "-o", d / "out"}).status, 0);
  MappedFile f(d / "out");
  elf::Elf e(f.bytes(), d / "out");
  const elf::Section* shim = e.section("__prepatch_shim");
  ASSERT_NE(shim, nullptr);
  auto plt = objdump_section(d / "out", ".plt");
  Proc syms = run({"riscv64-linux-gnu-objdump", "-d", "-j", ".plt", d / "out"});
  auto at = syms.out.find("<_mcount@plt>:");
  ASSERT_NE(at, std::string::npos) << syms.out;
  const u64 entry = std::stoull(syms.out.substr(syms.out.rfind('\n', at) + 1), nullptr, 16);
  ASSERT_TRUE(plt.count(entry) && plt.count(entry + 4));
  EXPECT_EQ(plt[entry].mnemonic, "auipc");
  EXPECT_EQ(plt[entry].ops.substr(0, 3), "t1,");
  EXPECT_EQ(plt[entry + 4].mnemonic, "jr");  // jalr zero, lo(t1)
  const i64 hi = static_cast<i64>(std::stoll(plt[entry].ops.substr(3), nullptr, 16));
  const std::string& jr = plt[entry + 4].ops;  // "-1234(t1)"
  ASSERT_NE(jr.find("(t1)"), std::string::npos) << jr;
  const u64 target = entry + static_cast<u64>(((hi ^ 0x80000) - 0x80000) << 12) + static_cast<u64>(std::stoll(jr.substr(0, jr.find('('))));
  EXPECT_GE(target, shim->addr);
  EXPECT_LT(target, shim->addr + shim->size);
}

}  // namespace
}  // namespace prepatch::test
