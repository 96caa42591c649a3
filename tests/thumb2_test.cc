// ARM32 Thumb-2 discovery against arm-linux-gnueabihf-objdump: the calls Capstone decodes, the PLT
// entries it follows to their GOT slots, the site list, the forms a site toggles between, the
// patchable pads of two nops (skipped), and the ELF writer on a 32-bit binary. Preparing and running them is
// tests/matrix_test.cc's and tests/shim_test.cc's, as on the other ISAs.
#include <gtest/gtest.h>

#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "arch/forms.h"
#include "arch/isa.h"
#include "arch/thumb2.h"
#include "elf/elf.h"
#include "elf/mapped_file.h"
#include "elf/writer.h"
#include "rewriter/sites.h"
#include "support.h"
#include "trace/trace.h"
#include "trace_words.h"

namespace prepatch::test {
namespace {

const std::string td = TESTDATA_DIR;

// objdump shows Thumb code as halfwords ("f7ff efee"), ARM-state code (glibc's, in a static binary)
// as words ("ebfff725").
bool thumb(const ObjdumpLine& l) { return l.hex.size() == 4 || l.hex.size() == 9; }
Disassembly objdump_section(const std::string& bin, const std::string& section) { return test::objdump_section(ARM_OBJDUMP, bin, section); }

nlohmann::json sites_json(const std::string& bin) {
  Proc r = prepatch({"sites", bin, "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  return nlohmann::json::parse(r.out.empty() ? "{}" : r.out);
}

// Every 32-bit bl/blx in .text: Capstone's target (arch::bl_target) is objdump's. The -pg sites are
// exactly the calls objdump shows to __gnu_mcount_nc (its PLT entry, or itself in a static binary),
// each right after `push {lr}`, each in the state "call" and preparable.
void expect_calls_agree(const std::string& bin, unsigned min_sites) {
  SCOPED_TRACE(bin);
  MappedFile f(bin);
  elf::Elf e(f.bytes(), bin);
  const Disassembly text = objdump_section(bin, ".text");
  std::set<u64> mcount_calls;
  unsigned calls = 0;
  for (const auto& [at, l] : text.insns) {
    if ((l.mnemonic != "bl" && l.mnemonic != "blx") || !thumb(l)) continue;  // glibc's ARM-state code: not ours
    auto b = e.bytes_at(at, 4);
    if (l.ops.find('<') == std::string::npos || b.size() < 4) continue;  // blx through a register
    calls++;
    const auto target = arch::bl_target(arch::Isa::thumb2, b, at);
    ASSERT_TRUE(target) << std::hex << at << " " << l.mnemonic << " " << l.ops;
    EXPECT_EQ(*target, std::stoull(l.ops, nullptr, 16)) << std::hex << at << " " << l.ops;
    if (l.ops.find("<__gnu_mcount_nc@plt>") != std::string::npos || l.ops.find("<__gnu_mcount_nc>") != std::string::npos) {
      mcount_calls.insert(at);
      auto push = e.bytes_at(at - 2, 2);
      ASSERT_EQ(push.size(), 2u);
      EXPECT_EQ(push[0] | push[1] << 8, arch::thumb2::push_lr) << std::hex << at;
    }
  }
  EXPECT_GT(calls, 10u);
  EXPECT_GE(mcount_calls.size(), min_sites);
  std::set<u64> sites;
  const nlohmann::json j = sites_json(bin);
  for (const auto& s : j["sites"]) {
    sites.insert(s["address"].get<u64>());
    EXPECT_EQ(s["kind"], "mcount");
    EXPECT_EQ(s["length"], 4);
    EXPECT_EQ(s["state"], "call");
    EXPECT_EQ(s["status"], "preparable") << s.dump();
  }
  EXPECT_EQ(sites, mcount_calls);
}

TEST(Thumb2Discovery, MinusPgSitesAreTheCallsToGnuMcountObjdumpShows) {
  expect_calls_agree(td + "/basic-arm-pg", 6);
  expect_calls_agree(td + "/many-arm-pg", 512);
  expect_calls_agree(td + "/threads-arm-pg", 3);
  expect_calls_agree(td + "/basic-arm-pg-static", 6);
  expect_calls_agree(td + "/threads-arm-pg-static", 3);
}

// Every PLT entry objdump names (`<sym@plt>`) leads, decoded by Capstone in ARM state, to the GOT slot
// whose R_ARM_JUMP_SLOT relocation names `sym`.
TEST(Thumb2Discovery, PltEntriesLeadToTheirSymbolsGotSlots) {
  for (const std::string& bin : {td + "/basic-arm-pg", td + "/threads-arm-pg"}) {
    SCOPED_TRACE(bin);
    MappedFile f(bin);
    elf::Elf e(f.bytes(), bin);
    std::map<u64, std::string> slot_names;
    for (const elf::Section& rel : e.sections()) {
      if (rel.type != SHT_REL || !(rel.flags & SHF_ALLOC)) continue;
      const elf::Section& syms = e.sections()[rel.link];
      for (u64 i = 0; i < e.reloc_count(rel); i++) {
        elf::Reloc r = e.reloc(rel, i);
        if (r.type == R_ARM_JUMP_SLOT) slot_names[r.offset] = std::string(e.symbol(syms, r.sym).name);
      }
    }
    const Disassembly plt = objdump_section(bin, ".plt");
    unsigned entries = 0;
    for (const auto& [label, addr] : plt.labels) {
      if (label.size() < 4 || label.substr(label.size() - 4) != "@plt") continue;
      entries++;
      auto b = e.bytes_at(addr, 2);
      const u64 arm = b.size() == 2 && (b[0] | b[1] << 8) == arch::thumb2::bx_pc ? addr + 4 : addr;  // after a Thumb stub
      const auto slot = arch::arm_plt_slot(e.bytes_at(arm, 12), arm);
      ASSERT_TRUE(slot) << label;
      ASSERT_TRUE(slot_names.count(*slot)) << label << " " << std::hex << *slot;
      EXPECT_EQ(slot_names[*slot], label.substr(0, label.size() - 4));
    }
    EXPECT_GE(entries, 3u);
    EXPECT_TRUE(plt.labels.count("__gnu_mcount_nc@plt"));
  }
}

// The two forms a site toggles between: `bl` as encode_call_word makes it is what the static binary's
// linker wrote for every Thumb `bl` (same address, same target), and the off form decodes as the pop
// of lr that undoes the `push {lr}`.
TEST(Thumb2Forms, TheCallFormIsTheLinkersBlAndTheOffFormPopsLr) {
  const std::string bin = td + "/threads-arm-pg-static";
  MappedFile f(bin);
  elf::Elf e(f.bytes(), bin);
  unsigned bls = 0;
  for (const auto& [at, l] : objdump_section(bin, ".text").insns) {
    if (l.mnemonic != "bl" || !thumb(l)) continue;
    auto b = e.bytes_at(at, 4);
    ASSERT_EQ(b.size(), 4u);
    u32 w = 0;
    ASSERT_TRUE(arch::encode_call_word(arch::CallForm::thumb_bl, at, std::stoull(l.ops, nullptr, 16), w)) << std::hex << at;
    EXPECT_EQ(w, static_cast<u32>(e.codec().get(b, 0, 4))) << std::hex << at << " " << l.ops;
    bls++;
  }
  EXPECT_GT(bls, 1000u);
  u32 out = 0;
  EXPECT_FALSE(arch::encode_call_word(arch::CallForm::thumb_bl, 0x10000, 0x10000 + (u64{1} << 24) + 4, out));  // past +16 MiB
  u8 off[4];
  ASSERT_TRUE(arch::off_form(arch::em_arm, 4, off));
  const arch::Decoded d = arch::decode(arch::Isa::thumb2, off, 0x1000);
  EXPECT_EQ(d.len, 4u);
  EXPECT_EQ(d.text, "ldr lr, [sp], #4") << d.text;  // Capstone's spelling of `ldr.w lr, [sp], #4`
}

// -fpatchable-function-entry=2 pads are listed, each skipped with the reason (two nops cannot hold
// `push {lr}` and a 32-bit `bl`: 3 or more are prepared, as the flavors arm-pfe3 and arm-pfe4-1 of
// the manifest show); preparing a binary that has no other site says so per site and in total (exit
// code 3) and writes nothing.
TEST(Thumb2Discovery, PadsOfTwoNopsAreSkippedSayingWhy) {
  const nlohmann::json j = sites_json(td + "/basic-arm-pfe2");
  ASSERT_GE(j["sites"].size(), 6u);
  const std::string why = "patchable pad is shorter than the call it must hold (5 bytes on x86-64, 8 on RISC-V, 2 words on AArch64 and PPC64le, "
                          "3 halfword nops on Thumb-2: `push {lr}` and a 32-bit `bl`)";
  for (const auto& s : j["sites"]) {
    EXPECT_EQ(s["kind"], "patchable");
    EXPECT_EQ(s["status"], "skipped");
    EXPECT_NE(s["reason"].get<std::string>().find(why), std::string::npos) << s.dump();
  }
  TempDir d;
  Proc r = prepatch({td + "/basic-arm-pfe2", "-o", d / "out"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_NE(r.err.find(" in fib: skipped: " + why), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("basic-arm-pfe2: no sites could be prepared (" + std::to_string(j["sites"].size()) + " skipped, see above); nothing written"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(exists(d / "out"));
}

// A binary mixing ARM-state (-marm) and Thumb-2 -pg functions: every site is prepared, the ARM-state
// ones as 8 bytes over `push {lr}; bl __gnu_mcount_nc` (`mov ip, pc; nop`, objdump's words), and the
// prepared program runs as built under qemu-arm, counts exactly every function's calls and graph-traces
// the calls between the two states (ARM arm_work calling its ARM leaf, Thumb main calling both). A
// binary of ARM-state functions only is prepared too. Their patchable pads stay skipped, saying why.
TEST(Thumb2Discovery, ArmStateMinusPgSitesArePreparedBesideThumbOnes) {
  TempDir d;
  write_file(d / "arm.c", "__attribute__((noinline)) int arm_leaf(int x) { return x * 3 + 1; }\n"
                          "int arm_work(int n) { int s = 0; for (int i = 0; i < n; i++) s += arm_leaf(i); return s; }\n");
  write_file(d / "thumb.c", "#include <stdio.h>\n#include <stdlib.h>\nint arm_work(int);\n"
                            "__attribute__((noinline)) int thumb_leaf(int x) { return x + 2; }\n"
                            "int main(int argc, char** argv) { int s = arm_work(10); for (int i = 0; i < 7; i++) s += thumb_leaf(i);"
                            " printf(\"%d\\n\", s); return argc > 5; }\n");
  for (const auto& [src, state] : {std::pair{"arm", "-marm"}, std::pair{"thumb", "-mthumb"}}) {
    Proc c = run({"arm-linux-gnueabihf-gcc", "-O2", "-pg", state, "-c", d / (std::string(src) + ".c"), "-o", d / (std::string(src) + ".o")});
    ASSERT_EQ(c.status, 0) << c.err;
  }
  Proc link = run({"arm-linux-gnueabihf-gcc", "-pg", d / "arm.o", d / "thumb.o", "-o", d / "mixed"});
  ASSERT_EQ(link.status, 0) << link.err;
  const nlohmann::json j = sites_json(d / "mixed");
  std::map<std::string, std::pair<std::string, int>> status;
  for (const auto& s : j["sites"]) status[s["function"].get<std::string>()] = {s["status"].get<std::string>(), s["length"].get<int>()};
  using P = std::pair<std::string, int>;
  EXPECT_EQ(status, (std::map<std::string, P>{{"arm_leaf", P{"preparable", 8}}, {"arm_work", P{"preparable", 8}},
                                              {"thumb_leaf", P{"preparable", 4}}, {"main", P{"preparable", 4}}}));
  Proc p = prepatch({d / "mixed", "-o", d / "mixed.prepared"});
  ASSERT_EQ(p.status, 0) << p.err;
  EXPECT_EQ(p.err.find("skipped"), std::string::npos) << p.err;
  const nlohmann::json prepared_sites = sites_json(d / "mixed.prepared");
  for (const auto& s : prepared_sites["sites"]) {
    EXPECT_EQ(s["state"], "nop") << s.dump();
  }
  Proc dump = run({"arm-linux-gnueabihf-objdump", "-d", d / "mixed.prepared"});
  const size_t leaf = dump.out.find("<arm_leaf>:\n");
  ASSERT_NE(leaf, std::string::npos) << dump.out;
  const std::string first = dump.out.substr(leaf, 120);
  EXPECT_NE(first.find("e1a0c00f \tmov\tip, pc"), std::string::npos) << first;
  EXPECT_NE(first.find("e320f000 \tnop"), std::string::npos) << first;

  const TestBinary arm{.isa = "arm"};
  Proc plain = run(arm.exec(d / "mixed", {}), d.path());
  Proc r = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_COUNTS=" + d / "c"}, arm.exec(d / "mixed.prepared", {})), d.path());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, plain.out);
  EXPECT_EQ(r.out, "180\n");  // arm_leaf(0..9): 145; thumb_leaf(0..6): 35
  EXPECT_EQ(function_counts(d / "mixed.prepared", d / "c"),
            (std::map<std::string, long>{{"main", 1}, {"arm_work", 1}, {"arm_leaf", 10}, {"thumb_leaf", 7}}));
  Proc g = run(with_env({"PREPATCH_TRACE=*", "PREPATCH_TRACER=graph", "PREPATCH_OUTPUT=" + d / "t"}, arm.exec(d / "mixed.prepared", {})), d.path());
  ASSERT_EQ(g.status, 0) << g.err;
  EXPECT_EQ(g.out, "180\n");
  const trace::Trace t = trace::read_trace(d / "t");
  EXPECT_TRUE(t.problems.empty()) << t.problems[0];
  ASSERT_EQ(t.threads.size(), 1u);
  std::vector<std::string> want{"E main 0", "E arm_work 1"};
  for (int i = 0; i < 10; i++) want.insert(want.end(), {"E arm_leaf 2", "X arm_leaf 2"});
  want.push_back("X arm_work 1");
  for (int i = 0; i < 7; i++) want.insert(want.end(), {"E thumb_leaf 1", "X thumb_leaf 1"});
  want.push_back("X main 0");
  EXPECT_EQ(graph_words(t, t.threads[0]), want);

  Proc link_arm = run({"arm-linux-gnueabihf-gcc", "-pg", d / "arm.o", "-x", "c", "/dev/null", "-o", d / "armonly", "-nostartfiles", "-Wl,-e,arm_work"});
  ASSERT_EQ(link_arm.status, 0) << link_arm.err;
  Proc only = prepatch({d / "armonly", "-o", d / "armonly.prepared"});
  EXPECT_EQ(only.status, 0) << only.err;
  EXPECT_NE((only.out + only.err).find("prepared 2 sites"), std::string::npos) << only.out << only.err;

  // -fpatchable-function-entry in ARM state: skipped, saying why.
  Proc pfe = run({"arm-linux-gnueabihf-gcc", "-O2", "-marm", "-fpatchable-function-entry=3", "-c", d / "arm.c", "-o", d / "arm-pfe.o"});
  ASSERT_EQ(pfe.status, 0) << pfe.err;
  Proc link_pfe = run({"arm-linux-gnueabihf-gcc", d / "arm-pfe.o", d / "thumb.o", "-pg", "-o", d / "mixed-pfe"});
  ASSERT_EQ(link_pfe.status, 0) << link_pfe.err;
  const nlohmann::json pfe_sites = sites_json(d / "mixed-pfe");
  int arm_pads = 0;
  for (const auto& s : pfe_sites["sites"]) {
    if (s["function"] == "arm_leaf" || s["function"] == "arm_work") {
      arm_pads++;
      EXPECT_EQ(s["status"], "skipped") << s.dump();
      EXPECT_EQ(s["state"], "nop") << s.dump();  // ARM `nop` words (which read as a Thumb `blx`)
      EXPECT_NE(s["reason"].get<std::string>().find("ARM-state (-marm) functions' patchable pads are not prepared"), std::string::npos) << s.dump();
    }
  }
  EXPECT_EQ(arm_pads, 2) << pfe_sites.dump();
}

// The ELF writer alone on a 32-bit binary (the preparer is the Matrix tests'), run for real under
// qemu-arm (PIE and static): a PT_NOTE turned into an appended PT_LOAD (the shim's segment, here 5,000
// bytes of data), and every -pg site written in its off form, `pop {lr}` behind the `push {lr}`. The
// program prints the same and exits the same (a wrong off form unbalances the stack), the segment is
// where readelf says and holds the data, and objdump shows each site as the pop.
TEST(Thumb2Elf, AnAppendedSegmentAndOffFormSitesRunTheSame) {
  const TestBinary arm{.isa = "arm"};
  for (const std::string prog : {"basic-arm-pg", "threads-arm-pg", "basic-arm-pg-static"}) {
    SCOPED_TRACE(prog);
    TempDir d;
    const std::string bin = td + "/" + prog;
    MappedFile f(bin);
    elf::Elf e(f.bytes(), bin);
    const Discovery found = discover(e);
    ASSERT_GE(found.sites.size(), 3u);
    elf::Writer w(e);
    std::vector<u8> payload(5000);
    for (size_t i = 0; i < payload.size(); i++) payload[i] = static_cast<u8>(i * 7);
    const u64 vaddr = w.add_segment("__extra", PF_R, Bytes(payload.begin(), payload.end()));
    u8 off[4];
    ASSERT_TRUE(arch::off_form(arch::em_arm, 4, off));
    for (const Site& s : found.sites) w.patch(s.addr, off);
    w.write(d / "out", 0755);

    Proc orig = run(arm.exec(bin, {"3"}), d.path());
    Proc out = run(arm.exec(d / "out", {"3"}), d.path());
    EXPECT_EQ(out.status, orig.status) << out.err;
    EXPECT_EQ(out.out, orig.out);
    EXPECT_FALSE(orig.out.empty());

    MappedFile g(d / "out");
    elf::Elf o(g.bytes(), d / "out");
    auto data = o.bytes_at(vaddr, payload.size());
    EXPECT_EQ(std::vector<u8>(data.begin(), data.end()), payload);
    Proc segs = run({"readelf", "-lW", d / "out"});
    std::ostringstream want;
    want << "0x" << std::hex << std::setw(8) << std::setfill('0') << vaddr;
    EXPECT_TRUE(std::regex_search(segs.out, std::regex("\n  LOAD +0x[0-9a-f]+ " + want.str() + " "))) << segs.out;
    const Disassembly text = objdump_section(d / "out", ".text");
    for (const Site& s : found.sites) {
      ASSERT_TRUE(text.insns.count(s.addr)) << std::hex << s.addr;
      EXPECT_EQ(text.insns.at(s.addr).mnemonic, "ldr.w") << std::hex << s.addr;
      EXPECT_EQ(text.insns.at(s.addr).ops, "lr, [sp], #4") << std::hex << s.addr;
    }
  }
}

// The prologue steps the preparer follows to a -pg site (arch::thumb2::prologue_step) and the
// instructions an in-place unwinder hook may displace (arch::thumb2::movable), on encodings the GNU
// assembler makes of each form: how far each moves sp down and where it stores lr, or that it is
// none of them.
// The .text bytes GNU as makes of `src` (ARMv7-A), assembled in `d`; empty (and a failure) when it
// does not assemble.
std::string assembled_text(const TempDir& d, const std::string& src) {
  write_file(d / "p.s", src);
  Proc as = run({"arm-linux-gnueabihf-as", "-march=armv7-a", d / "p.s", "-o", d / "p.o"});
  EXPECT_EQ(as.status, 0) << as.err;
  Proc cp = run({"arm-linux-gnueabihf-objcopy", "-O", "binary", "--only-section=.text", d / "p.o", d / "p.bin"});
  EXPECT_EQ(cp.status, 0) << cp.err;
  return as.status == 0 && cp.status == 0 ? read_file(d / "p.bin") : std::string();
}

// A prologue instruction and what its step must be read as.
struct PrologueCase {
  const char* insn;
  bool known;
  u32 down;
  int lr_at;  // -1: lr not stored
  bool movable = false;  // (Thumb only)
};
void expect_step(const arch::thumb2::PrologueStep& step, const PrologueCase& c) {
  EXPECT_EQ(step.known, c.known);
  if (c.known) {
    EXPECT_EQ(step.down, c.down);
    EXPECT_EQ(step.lr, c.lr_at >= 0);
    if (c.lr_at >= 0) {
      EXPECT_EQ(step.lr_at, static_cast<u32>(c.lr_at));
    }
  }
}

TEST(Thumb2Prologue, EachFormIsReadAsTheAssemblerEncodesIt) {
  using Case = PrologueCase;
  const std::vector<Case> cases{
      {"push {r4, lr}", true, 8, 4, true},           {"push {r4-r7}", true, 16, -1, true},
      {"push {lr}", true, 4, 0, true},               {"push.w {r4-r11, lr}", true, 36, 32, true},
      {"stmdb sp!, {r4, r5}", true, 8, -1, true},    {"str lr, [sp, #-4]!", true, 4, 0, true},
      {"str r4, [sp, #-4]!", true, 4, -1, true},     {"sub sp, #376", true, 376, -1, true},
      {"sub sp, sp, #4", true, 4, -1, true},         {"sub.w sp, sp, #69632", true, 69632, -1, false},
      {"sub.w sp, sp, #0x1380", true, 0x1380, -1, false}, {"subw sp, sp, #4095", true, 4095, -1, false},
      {"vpush {d8-d15}", true, 64, -1, false},       {"vpush {s16-s17}", true, 8, -1, false},
      {"add r7, sp, #8", true, 0, -1, true},         {"mov r7, sp", true, 0, -1, true},
      {"nop", true, 0, -1, true},                    {"mov ip, sp", false, 0, -1, true},
      {"mov r4, r0", false, 0, -1, true},            {"movs r3, #0", false, 0, -1, true},
      {"mov.w r3, #0", false, 0, -1, true},          {"mov sp, r4", false, 0, -1, true},
      {"add sp, #8", false, 0, -1, false},           {"add sp, r4", false, 0, -1, false},
      {"sub.w r4, sp, #8", false, 0, -1, false},     {"subs.w sp, sp, #8", false, 0, -1, false},
      {".inst.w 0xe92d8010", false, 0, -1, false},  // push.w {r4, pc}      {"pop {r4, pc}", false, 0, -1, false},
      {"ldr r3, [pc, #4]", false, 0, -1, false},     {"add r3, pc", false, 0, -1, false},
      {"mov r4, pc", false, 0, -1, false},           {"bx lr", false, 0, -1, false},
      {"ite eq", false, 0, -1, false},               {"b.w .", false, 0, -1, false},
      {"bl .", false, 0, -1, false},                 {"cbz r0, .+4", false, 0, -1, false},
      {"ldr.w lr, [sp], #4", false, 0, -1, false},   {".inst.w 0xf84dfd04", false, 0, -1, false},  // str.w pc, [sp, #-4]!
  };
  TempDir d;
  std::string src = ".syntax unified\n.thumb\n.fpu vfpv3-d16\n.text\n.p2align 2\n";
  for (const Case& c : cases) src += std::string(c.insn) + (std::string(c.insn) == "ite eq" ? "\nmoveq r0, r0\nmovne r0, r0" : "") + "\n";
  const std::string b = assembled_text(d, src);
  ASSERT_FALSE(b.empty());
  const auto half = [&](size_t at) { return static_cast<u16>(static_cast<u8>(b.at(at)) | static_cast<u8>(b.at(at + 1)) << 8); };
  size_t at = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.insn);
    const u16 first = half(at);
    const bool wide = arch::thumb2::is_32bit(first);
    const u16 second = wide ? half(at + 2) : 0;
    expect_step(wide ? arch::thumb2::prologue_step(first, second) : arch::thumb2::prologue_step(first), c);
    EXPECT_EQ(wide ? arch::thumb2::movable(first, second) : arch::thumb2::movable(first), c.movable);
    at += wide ? 4 : 2;
    if (std::string(c.insn) == "ite eq") at += 4;  // (the two 16-bit instructions it conditions)
  }
  EXPECT_EQ(at, b.size());
}

// The same for ARM-state (-marm) prologues (arch::thumb2::arm_prologue_step), one word each.
TEST(Thumb2Prologue, EachArmStateFormIsReadAsTheAssemblerEncodesIt) {
  using Case = PrologueCase;
  const std::vector<Case> cases{
      {"push {r4, fp, lr}", true, 12, 8},     {"push {r4-r11}", true, 32, -1},   {"str lr, [sp, #-4]!", true, 4, 0},
      {"str fp, [sp, #-4]!", true, 4, -1},    {"sub sp, sp, #12", true, 12, -1}, {"sub sp, sp, #69632", true, 69632, -1},
      {"vpush {d8-d9}", true, 16, -1},        {"vpush {s16}", true, 4, -1},      {"add fp, sp, #8", true, 0, -1},
      {"mov fp, sp", true, 0, -1},            {"nop", true, 0, -1},              {"mov r0, r0", true, 0, -1},
      {"mov ip, sp", true, 0, -1},            {"push {fp, pc}", false, 0, -1},   {"str pc, [sp, #-4]!", false, 0, -1},
      {"sub sp, sp, r4", false, 0, -1},       {"add sp, sp, #8", false, 0, -1},  {"subs sp, sp, #8", false, 0, -1},
      {"subeq sp, sp, #8", false, 0, -1},     {"mov sp, fp", false, 0, -1},      {"sub fp, ip, #4", false, 0, -1},
      {"bl .", false, 0, -1},                 {"ldr ip, [pc, #4]", false, 0, -1}, {"mov r4, r0", false, 0, -1},
  };
  TempDir d;
  std::string src = ".syntax unified\n.arm\n.fpu vfpv3-d16\n.text\n.p2align 2\n";
  for (const Case& c : cases) src += std::string(c.insn) + "\n";
  const std::string b = assembled_text(d, src);
  ASSERT_EQ(b.size(), 4 * cases.size());
  for (size_t i = 0; i < cases.size(); i++) {
    const Case& c = cases[i];
    SCOPED_TRACE(c.insn);
    u32 w = 0;
    for (unsigned k = 0; k < 4; k++) w |= u32{static_cast<u8>(b[4 * i + k])} << (8 * k);
    expect_step(arch::thumb2::arm_prologue_step(w), c);
  }
}

// Each form of ld's ARM32 long-branch stubs that arch::thumb2::linker_stub reads, as the assembler
// encodes it (each 16-byte aligned, its destination a label after them: `.word` of a label in the
// same section holds its offset in the object's .text), is followed to its destination with its
// size; what only looks like one (a function's start, a `ldr ip` not followed by a jump) is none.
TEST(Thumb2Stubs, EachOfLdsStubFormsIsFollowedToItsDestination) {
  struct Case {
    bool arm;           // entered in ARM state (as a blx enters it)
    const char* code;   // at label sN; dN is its destination
    u32 size;           // 0: not a stub
    bool thumb_dest;    // dN + 1
  };
  const std::vector<Case> cases{
      {true, ".arm\nldr pc, [pc, #-4]\n.word d0", 8, false},
      {true, ".arm\nldr ip, [pc]\nbx ip\n.word d1 + 1", 12, true},
      {true, ".arm\nldr ip, [pc]\nadd pc, pc, ip\n.word d2 - (s2 + 12)", 12, false},
      {true, ".arm\nldr ip, [pc, #4]\nadd ip, ip, pc\nbx ip\n.word d3 + 1 - (s3 + 12)", 16, true},
      {true, ".arm\nb d4", 4, false},
      {false, ".thumb\nbx pc\nmov r8, r8\n.arm\nldr pc, [pc, #-4]\n.word d5", 12, false},
      {false, ".thumb\nldr.w pc, [pc, #0]\n.word d6 + 1", 8, true},
      {false, ".thumb\npush {r4, lr}\nldr r4, [pc, #4]", 0, false},
      {true, ".arm\nldr ip, [pc]\nbx lr\n.word d8", 0, false},
      {true, ".arm\npush {r4, lr}\nldr pc, [pc, #-4]", 0, false},
  };
  TempDir d;
  std::string src = ".syntax unified\n.text\n";
  for (size_t i = 0; i < cases.size(); i++) src += ".p2align 4\ns" + std::to_string(i) + ":\n" + cases[i].code + "\n";
  src += ".arm\n.p2align 4\n";
  for (size_t i = 0; i < cases.size(); i++) src += 'd' + std::to_string(i) + ": nop\n";  // (a char: "d" + std::string sets off gcc 12's -Wrestrict at -O3)
  const std::string b = assembled_text(d, src);
  ASSERT_FALSE(b.empty());
  const u64 dests = (cases.size() * 16 + 15) / 16 * 16;  // where d0 is: after the stubs, 16-aligned
  const auto word = [&](u64 at, u32& w) {
    if (at + 4 > b.size()) return false;
    w = 0;
    for (unsigned i = 0; i < 4; i++) w |= u32{static_cast<u8>(b[at + i])} << (8 * i);
    return true;
  };
  for (size_t i = 0; i < cases.size(); i++) {
    const Case& c = cases[i];
    SCOPED_TRACE(c.code);
    const auto st = arch::thumb2::linker_stub(16 * i, c.arm, word);
    if (!c.size) {
      EXPECT_FALSE(st.has_value());
      continue;
    }
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->start, 16 * i);
    EXPECT_EQ(st->size, c.size);
    EXPECT_EQ(st->dest, dests + 4 * i + (c.thumb_dest ? 1 : 0)) << std::hex << st->dest;
  }
  // A Thumb call does not enter an ARM-state stub, nor a blx a Thumb one; nothing is read off-word.
  EXPECT_FALSE(arch::thumb2::linker_stub(0, false, word).has_value());
  EXPECT_FALSE(arch::thumb2::linker_stub(16 * 6, true, word).has_value());
  EXPECT_FALSE(arch::thumb2::linker_stub(2, true, word).has_value());
}

// `b.w` as the shim writes it over an unwinder entry point (arch::thumb2::encode_b_w) is the
// assembler's, forwards and backwards, and refused beyond +-16 MiB.
TEST(Thumb2Forms, TheHooksBranchIsTheAssemblers) {
  TempDir d;
  write_file(d / "b.s", ".syntax unified\n.thumb\n.text\nb.w .+0x123456\nb.w .-0x8000\nb.w .+4\n");
  Proc as = run({"arm-linux-gnueabihf-as", "-march=armv7-a", d / "b.s", "-o", d / "b.o"});
  ASSERT_EQ(as.status, 0) << as.err;
  ASSERT_EQ(run({"arm-linux-gnueabihf-objcopy", "-O", "binary", "--only-section=.text", d / "b.o", d / "b.bin"}).status, 0);
  const std::string b = read_file(d / "b.bin");
  ASSERT_EQ(b.size(), 12u);
  const i64 offsets[3] = {0x123456, -0x8000, 4};
  for (int k = 0; k < 3; k++) {
    const u64 at = 0x10000 + 4 * k;
    u16 out[2];
    ASSERT_TRUE(arch::thumb2::encode_b_w(at, static_cast<u64>(static_cast<i64>(at) + offsets[k]), out));
    EXPECT_EQ(out[0], static_cast<u8>(b[4 * k]) | static_cast<u8>(b[4 * k + 1]) << 8) << k;
    EXPECT_EQ(out[1], static_cast<u8>(b[4 * k + 2]) | static_cast<u8>(b[4 * k + 3]) << 8) << k;
  }
  u16 out[2];
  EXPECT_TRUE(arch::thumb2::encode_b_w(0x2000000, 0x2000000 + 4 + (u64{1} << 24) - 2, out));
  EXPECT_FALSE(arch::thumb2::encode_b_w(0x2000000, 0x2000000 + 4 + (u64{1} << 24), out));
  EXPECT_FALSE(arch::thumb2::encode_b_w(0x2000000, 0x2000000 + 4 - (u64{1} << 24) - 2, out));
}

}  // namespace
}  // namespace prepatch::test
