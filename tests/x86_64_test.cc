// Tier 1: x86-64 encodings as tables of {bytes, expected assembly}, round-tripped through Zydis.
#include <gtest/gtest.h>

#include "arch/x86_64.h"

namespace prepatch::test {
namespace {

using arch::CallForm;

TEST(X86_64, CanonicalNopsAreOneNopInstructionEach) {
  // Zydis 4's Intel syntax (it omits the redundant cs: of the 10- and 11-byte forms).
  const char* expected[] = {
      "nop",
      "nop",
      "nop [rax], eax",
      "nop [rax], eax",
      "nop [rax+rax*1], eax",
      "nop [rax+rax*1], ax",
      "nop [rax], eax",
      "nop [rax+rax*1], eax",
      "nop [rax+rax*1], ax",
      "nop [rax+rax*1], ax",
      "nop [rax+rax*1], ax",
  };
  for (unsigned len = 1; len <= 11; len++) {
    auto nop = arch::canonical_nop(len);
    ASSERT_EQ(nop.size(), len);
    unsigned got = 0;
    std::string text = arch::disassemble(nop, 0, &got);
    EXPECT_EQ(got, len) << "nop of " << len << " bytes decodes as " << got << " bytes";
    EXPECT_EQ(arch::nop_length(nop), len);
    EXPECT_EQ(text, expected[len - 1]) << len;
  }
  EXPECT_TRUE(arch::canonical_nop(0).empty());
  EXPECT_TRUE(arch::canonical_nop(12).empty());
}

TEST(X86_64, CallFormsAreOneCallOfTheSiteLength) {
  struct Case {
    unsigned len;
    CallForm form;
    unsigned long long site, target;
    const char* text;
  } cases[] = {
      {5, CallForm::call_rel32, 0x401000, 0x402000, "call 0x0000000000402000"},
      {6, CallForm::addr32_call_rel32, 0x401000, 0x400000, "call 0x0000000000400000"},
      {5, CallForm::call_rel32, 0x10, 0x10, "call 0x0000000000000010"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(arch::call_form_for_length(c.len), c.form);
    std::vector<u8> b(c.len);
    ASSERT_TRUE(arch::encode_call(c.form, c.site, c.target, b));
    unsigned got = 0;
    std::string text = arch::disassemble(b, c.site, &got);
    EXPECT_EQ(got, c.len);
    EXPECT_NE(text.find(c.text), std::string::npos) << text;
    auto m = arch::match_call(b, c.site);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->len, c.len);
    EXPECT_EQ(m->target, c.target);
    EXPECT_FALSE(m->indirect);
  }
  std::vector<u8> b(5);
  EXPECT_FALSE(arch::encode_call(CallForm::call_rel32, 0, 0x100000000ull, b)) << "out of rel32 reach";
  EXPECT_EQ(arch::call_form_for_length(4), CallForm::none);
  EXPECT_EQ(arch::call_form_for_length(7), CallForm::none);
}

TEST(X86_64, MatchesTheCompilersCallForms) {
  // call *0x2dda(%rip) at 0x1200, as gcc -pg -mfentry emits in a PIE: the slot is 0x3fe0.
  const u8 got[] = {0xff, 0x15, 0xda, 0x2d, 0x00, 0x00};
  auto m = arch::match_call(got, 0x1200);
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->indirect);
  EXPECT_EQ(m->target, 0x3fe0u);
  EXPECT_EQ(m->len, 6u);
  const u8 jmp[] = {0xe9, 0, 0, 0, 0};
  EXPECT_FALSE(arch::match_call(jmp, 0));
}

TEST(X86_64, PltSlots) {
  // .plt.sec entry with IBT: endbr64; bnd jmp *0x2fe2(%rip)
  const u8 sec[] = {0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0xe2, 0x2f, 0x00, 0x00, 0x0f, 0x1f, 0x44, 0x00, 0x00};
  EXPECT_EQ(arch::plt_slot(sec, 0x1060), 0x1060u + 11 + 0x2fe2);
  // classic .plt entry: jmp *0x2fb2(%rip); push $0; jmp .plt
  const u8 plt[] = {0xff, 0x25, 0xb2, 0x2f, 0x00, 0x00, 0x68, 0, 0, 0, 0, 0xe9, 0xe0, 0xff, 0xff, 0xff};
  EXPECT_EQ(arch::plt_slot(plt, 0x1030), 0x1030u + 6 + 0x2fb2);
  EXPECT_FALSE(arch::plt_slot(std::span<const u8>(plt + 6, 10), 0));
}

TEST(X86_64, PrologueScanFindsTheMcountCall) {
  // clang -pg: push %rbp; mov %rsp,%rbp; push %rbx; push %rax; mov %edi,%ebx; call mcount@plt
  const u8 code[] = {0x55, 0x48, 0x89, 0xe5, 0x53, 0x50, 0x89, 0xfb, 0xe8, 0x73, 0xfe, 0xff, 0xff, 0xc3};
  auto c = arch::scan_prologue_for_call(code, 0x11e0, sizeof code);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->addr, 0x11e8u);
  EXPECT_EQ(c->call.target, 0x1060u);
  // A branch before any call ends the prologue: no site.
  const u8 branch[] = {0x55, 0x74, 0x05, 0xe8, 0, 0, 0, 0};
  EXPECT_FALSE(arch::scan_prologue_for_call(branch, 0, sizeof branch));
}

TEST(X86_64, MovablePrefixCoversWholeInstructionsThatRunAnywhere) {
  // libgcc's _Unwind_RaiseException: endbr64; push %rbp; mov %rsp,%rbp
  const u8 unwind[] = {0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5};
  EXPECT_EQ(arch::movable_prefix(unwind, 5), 5u);
  EXPECT_EQ(arch::movable_prefix(unwind, 6), 8u);  // whole instructions only
  // push %rbx; mov %rdi,%rbx; call ...: the call must not move
  const u8 catcher[] = {0x53, 0x48, 0x89, 0xfb, 0xe8, 0, 0, 0, 0};
  EXPECT_EQ(arch::movable_prefix(catcher, 4), 4u);
  EXPECT_EQ(arch::movable_prefix(catcher, 5), 0u);
  // lea 0x10(%rip),%rax: RIP-relative; jmp rel32; ret; syscall
  const u8 riprel[] = {0x48, 0x8d, 0x05, 0x10, 0, 0, 0};
  const u8 jump[] = {0xe9, 0, 0, 0, 0};
  const u8 ret[] = {0x55, 0xc3, 0x90, 0x90, 0x90};
  const u8 sys[] = {0x0f, 0x05, 0x90, 0x90, 0x90};
  for (std::span<const u8> b : {std::span<const u8>(riprel), std::span<const u8>(jump), std::span<const u8>(ret), std::span<const u8>(sys)})
    EXPECT_EQ(arch::movable_prefix(b, 5), 0u) << arch::disassemble(b, 0);
  // Cut short: the instructions run out before 5 bytes.
  EXPECT_EQ(arch::movable_prefix(std::span<const u8>(unwind, 3), 5), 0u);
}

}  // namespace
}  // namespace prepatch::test
