// x86-64: encodings, site recognition and the call forms the shim will write.
//
// Branch reach: a direct call is `e8 rel32`, +-2 GiB from the end of the instruction, so the shim's
// trampolines must sit within 2 GiB of every site; the ELF writer places appended segments right above
// the binary's last segment for that reason, and where a .bss over 2 GiB puts them beyond, the sites
// call a branch island after the text (encode_island, below).
//
// What a store can change atomically: nothing that helps. Sites are 5 or 6 bytes, gcc does not align
// functions at -O1, so sites straddle 8-byte words and 64-byte lines (both recorded per site). The Intel
// SDM's cross-modifying-code rule lets another core observe a partially written instruction, so the live
// toggle uses the kernel's int3 protocol (breakpoint over the first byte, sync, tail, sync, first byte,
// sync), which needs each site to be exactly ONE instruction in both states: a thread is then either
// before the site or after it, never inside it. Preparing a site therefore makes it one canonical nop
// of the site's length here, offline, while no thread runs (five one-byte nops are five instructions,
// and a thread stopped after the second would resume inside a call written over them).
//
// The call forms are single instructions of the site's length: `e8 rel32` (5 bytes) and `addr32 call
// rel32` = `67 e8 rel32` (6 bytes; the form ld itself relaxes `call *foo@GOTPCREL(%rip)` into, so every
// x86-64 CPU executes it as a plain near call). The 0x66 prefix is NOT usable for padding a call:
// AMD honours it and truncates RIP to 16 bits.
#pragma once
#include <elf.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include "arch/forms.h"
#include "elf/types.h"

namespace prepatch::arch {

struct X86_64 {
  static constexpr std::string_view name = "x86-64";
  static constexpr u16 e_machine = EM_X86_64;
  static constexpr u8 trap[] = {0xcc};  // int3
  static constexpr unsigned max_insn = 15;
  static constexpr std::array<u8, 4> endbr64 = {0xf3, 0x0f, 0x1e, 0xfa};
  static constexpr u8 ret = 0xc3;
  static constexpr std::array<u8, 5> nop5 = {0x0f, 0x1f, 0x44, 0x00, 0x00};  // nopl 0x0(%rax,%rax,1)
};

// The canonical (Intel SDM recommended) nop of `len` bytes, 1..11; empty for other lengths.
// Inline: the preparer asks for one per site.
inline std::span<const u8> canonical_nop(unsigned len) {
  if (len == 0 || len > max_canonical_nop) return {};
  return {canonical_nops[len - 1], len};
}

// call_form_for_length(len): the call form of a site of `len` bytes, or none when no single call
// instruction has that length (arch/forms.h, with call_form_length and the nops).

// Encodes the call form at `site` to `target`; false when out of rel32 reach.
bool encode_call(CallForm f, u64 site, u64 target, std::span<u8> out);

// A call instruction as compilers emit for mcount/__fentry__.
struct Call {
  unsigned len = 0;
  bool indirect = false;  // ff 15: `call *slot(%rip)`
  u64 target = 0;         // direct: the callee; indirect: the address of the pointer slot
};
// Inline: the symbol scan asks at every function's start.
inline std::optional<Call> match_call(std::span<const u8> b, u64 addr) {
  auto rel32 = [&](size_t at) {
    std::int32_t v;
    std::memcpy(&v, b.data() + at, 4);  // x86-64 is little endian, like the host this tool runs on
    return static_cast<i64>(v);
  };
  if (b.size() >= 5 && b[0] == 0xe8) return Call{5, false, addr + 5 + rel32(1)};
  if (b.size() >= 6 && b[0] == 0x67 && b[1] == 0xe8) return Call{6, false, addr + 6 + rel32(2)};
  if (b.size() >= 6 && b[0] == 0xff && b[1] == 0x15) return Call{6, true, addr + 6 + rel32(2)};
  return std::nullopt;
}

inline bool is_endbr64(std::span<const u8> b) {  // inline: asked for every function and site
  return b.size() >= 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && b[3] == 0xfa;
}

// Length of the instruction at `b` when it is a nop of any encoding (Zydis), else 0.
unsigned nop_length(std::span<const u8> b);

// The pointer slot a PLT entry jumps through: [endbr64] [bnd] jmp *disp32(%rip).
std::optional<u64> plt_slot(std::span<const u8> entry, u64 addr);

// Decodes instructions from a function's start looking for a call, as in gcc/clang `-pg` prologues:
// returns the first call found before any branch, return or undecodable byte, within `limit` bytes.
struct ScannedCall {
  u64 addr;
  Call call;
};
std::optional<ScannedCall> scan_prologue_for_call(std::span<const u8> code, u64 addr, unsigned limit);

// The length of the whole instructions at the start of `code` that cover at least `min` bytes and run
// the same at any address (no branch, call, return, system call, interrupt or RIP-relative operand), so
// they can be copied elsewhere and followed by a jump back; 0 when they are not such.
unsigned movable_prefix(std::span<const u8> code, unsigned min);

// Intel-syntax text of the instruction at `b`, for messages and tests ("?" when undecodable).
std::string disassemble(std::span<const u8> b, u64 addr, unsigned* len = nullptr);

namespace x86_64 {
// A branch island (arch/island.h): what a site calls when the trampoline `target` lies beyond its
// call's +-2 GiB (a .bss of more than 2 GiB between the text and the shim, which goes after it).
//   lea 7(%rip), %r11; add (%r11), %r11; notrack jmp *%r11; .quad target - (at + 14)
// Any distance, position-independent (a PIE's islands move with it), and it writes only %r11 and the
// flags: %r11 is free at a function's entry and right after an mcount site's frame setup (no
// argument, not the static chain, clobbered by any PLT call: the count trampoline relies on it too),
// and the flags are dead there. The site's call pushed the return address the trampoline reads; under
// IBT, `notrack` wants no landing pad at the trampoline, as the forwarders' jumps. Any alignment (the
// islands of two kinds go back to back); arch/island.h checks it.
inline constexpr unsigned island_size = 22, island_align = 1;
constexpr void encode_island(u64 at, u64 target, u8* out) {
  const u8 code[14] = {0x4c, 0x8d, 0x1d, 7, 0, 0, 0,  // lea 7(%rip), %r11: the quadword after the jmp
                       0x4d, 0x03, 0x1b,              // add (%r11), %r11
                       0x3e, 0x41, 0xff, 0xe3};       // notrack jmp *%r11
  const u64 delta = target - (at + 14);
  for (unsigned i = 0; i < 14; i++) out[i] = code[i];
  for (unsigned b = 0; b < 8; b++) out[14 + b] = static_cast<u8>(delta >> (8 * b));
}
// One instruction for the checker, decoded with Zydis: its length and, where it is one of the
// island's three forms, what it does (`lea disp(%rip), reg`: rip_lea; `add (reg), reg`: add_load;
// `jmp *reg`: jump), with the register as Zydis numbers it.
struct IslandInsn {
  enum Kind { other, rip_lea, add_load, jump } kind = other;
  unsigned len = 0;
  unsigned reg = 0;       // the destination (rip_lea, add_load) or the target register (jump)
  unsigned base = 0;      // add_load: the register it loads through
  i64 disp = 0;           // rip_lea, add_load
  bool notrack = false;   // jump: with the notrack prefix
};
IslandInsn island_insn(std::span<const u8> b);
unsigned zydis_r11();
}  // namespace x86_64

}  // namespace prepatch::arch
