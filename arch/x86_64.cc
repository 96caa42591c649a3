#include "arch/x86_64.h"

#include <Zydis/Zydis.h>

#include <cstring>
#include <string>

namespace prepatch::arch {

namespace {

struct Decoder {
  ZydisDecoder d;
  Decoder() { ZydisDecoderInit(&d, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64); }
};
const ZydisDecoder* decoder() {
  static const Decoder d;  // immutable after construction; safe to share
  return &d.d;
}

bool decode(std::span<const u8> b, ZydisDecodedInstruction& insn) {
  return ZYAN_SUCCESS(ZydisDecoderDecodeInstruction(decoder(), nullptr, b.data(), b.size(), &insn));
}

i64 rel32(std::span<const u8> b, size_t at) {
  std::int32_t v;
  std::memcpy(&v, b.data() + at, 4);  // x86-64 is little endian, like the host this tool runs on
  return v;
}

}  // namespace

bool encode_call(CallForm f, u64 site, u64 target, std::span<u8> out) {
  return out.size() == call_form_length(f) && encode_call_form(f, site, target, out.data());
}

namespace x86_64 {
IslandInsn island_insn(std::span<const u8> b) {
  IslandInsn r;
  ZydisDecodedInstruction insn;
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT];
  if (!ZYAN_SUCCESS(ZydisDecoderDecodeFull(decoder(), b.data(), b.size(), &insn, ops))) return r;
  r.len = insn.length;
  const auto plain_mem = [&](const ZydisDecodedOperand& o) {
    return o.type == ZYDIS_OPERAND_TYPE_MEMORY && o.mem.index == ZYDIS_REGISTER_NONE && o.mem.segment == ZYDIS_REGISTER_DS && o.size == 64;
  };
  const bool reg64 = insn.operand_count_visible >= 1 && ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER && ops[0].size == 64;
  if (insn.mnemonic == ZYDIS_MNEMONIC_LEA && insn.operand_count_visible == 2 && reg64 && ops[1].type == ZYDIS_OPERAND_TYPE_MEMORY &&
      ops[1].mem.base == ZYDIS_REGISTER_RIP && ops[1].mem.index == ZYDIS_REGISTER_NONE)
    r.kind = IslandInsn::rip_lea, r.reg = ops[0].reg.value, r.disp = ops[1].mem.disp.value;
  else if (insn.mnemonic == ZYDIS_MNEMONIC_ADD && insn.operand_count_visible == 2 && reg64 && plain_mem(ops[1]))
    r.kind = IslandInsn::add_load, r.reg = ops[0].reg.value, r.base = ops[1].mem.base, r.disp = ops[1].mem.disp.value;
  else if (insn.mnemonic == ZYDIS_MNEMONIC_JMP && insn.operand_count_visible == 1 && reg64)
    r.kind = IslandInsn::jump, r.reg = ops[0].reg.value, r.notrack = insn.attributes & ZYDIS_ATTRIB_HAS_NOTRACK;
  return r;
}
unsigned zydis_r11() { return ZYDIS_REGISTER_R11; }
}  // namespace x86_64

unsigned nop_length(std::span<const u8> b) {
  ZydisDecodedInstruction insn;
  if (!decode(b, insn) || insn.mnemonic != ZYDIS_MNEMONIC_NOP) return 0;
  return insn.length;
}

std::optional<u64> plt_slot(std::span<const u8> e, u64 addr) {
  size_t at = 0;
  if (is_endbr64(e)) at += 4;
  if (at < e.size() && e[at] == 0xf2) at++;  // bnd
  if (at + 6 > e.size() || e[at] != 0xff || e[at + 1] != 0x25) return std::nullopt;
  return addr + at + 6 + rel32(e, at + 2);
}

std::optional<ScannedCall> scan_prologue_for_call(std::span<const u8> code, u64 addr, unsigned limit) {
  size_t at = 0;
  while (at < code.size() && at < limit) {
    ZydisDecodedInstruction insn;
    if (!decode(code.subspan(at), insn)) return std::nullopt;
    if (insn.meta.category == ZYDIS_CATEGORY_CALL) {
      auto c = match_call(code.subspan(at), addr + at);
      if (!c || c->len != insn.length) return std::nullopt;
      return ScannedCall{addr + at, *c};
    }
    switch (insn.meta.category) {
      case ZYDIS_CATEGORY_COND_BR:
      case ZYDIS_CATEGORY_UNCOND_BR:
      case ZYDIS_CATEGORY_RET:
      case ZYDIS_CATEGORY_SYSCALL:
      case ZYDIS_CATEGORY_INTERRUPT:
        return std::nullopt;
      default:
        break;
    }
    at += insn.length;
  }
  return std::nullopt;
}

unsigned movable_prefix(std::span<const u8> code, unsigned min) {
  unsigned at = 0;
  while (at < min) {
    ZydisDecodedInstruction insn;
    if (!decode(code.subspan(at), insn) || (insn.attributes & ZYDIS_ATTRIB_IS_RELATIVE)) return 0;
    switch (insn.meta.category) {
      case ZYDIS_CATEGORY_CALL:
      case ZYDIS_CATEGORY_COND_BR:
      case ZYDIS_CATEGORY_UNCOND_BR:
      case ZYDIS_CATEGORY_RET:
      case ZYDIS_CATEGORY_SYSCALL:
      case ZYDIS_CATEGORY_INTERRUPT:
        return 0;
      default:
        break;
    }
    at += insn.length;
  }
  return at;
}

std::string disassemble(std::span<const u8> b, u64 addr, unsigned* len) {
  ZydisDisassembledInstruction insn;
  if (!ZYAN_SUCCESS(ZydisDisassembleIntel(ZYDIS_MACHINE_MODE_LONG_64, addr, b.data(), b.size(), &insn))) {
    if (len) *len = 0;
    return "?";
  }
  if (len) *len = insn.info.length;
  return insn.text;
}

}  // namespace prepatch::arch
