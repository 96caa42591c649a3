// Branch islands: encoding by ISA, and the checker that proves one (arch/island.h).
#include "arch/island.h"

#include <capstone/capstone.h>

#include <algorithm>
#include <map>
#include <vector>

#include "arch/aarch64.h"
#include "arch/isa.h"
#include "arch/ppc64le.h"
#include "arch/riscv64_decode.h"
#include "arch/thumb2.h"
#include "arch/x86_64.h"

namespace prepatch::arch {

std::vector<u8> encode_island(Isa isa, u64 at, u64 target) {
  std::vector<u8> out(island_size(isa));
  switch (isa) {
    case Isa::aarch64: aarch64::encode_island(at, target, out.data()); break;
    case Isa::ppc64le: ppc64le::encode_island(at, target, out.data()); break;
    case Isa::thumb2: thumb2::encode_island(at, target, out.data()); break;
    case Isa::x86_64: x86_64::encode_island(at, target, out.data()); break;
    case Isa::riscv64: riscv64::encode_island(at, target, out.data()); break;
    default: break;
  }
  return out;
}

unsigned island_size(Isa isa) {
  switch (isa) {
    case Isa::aarch64: return aarch64::island_size;
    case Isa::ppc64le: return ppc64le::island_size;
    case Isa::thumb2: return thumb2::island_size;
    case Isa::x86_64: return x86_64::island_size;
    case Isa::riscv64: return riscv64::island_size;
    default: return 0;
  }
}

unsigned island_align(Isa isa) {
  switch (isa) {
    case Isa::aarch64: return aarch64::island_align;
    case Isa::ppc64le: return ppc64le::island_align;
    case Isa::thumb2: return thumb2::island_align;
    case Isa::x86_64: return x86_64::island_align;
    case Isa::riscv64: return riscv64::island_align;
    default: return 0;
  }
}

namespace {

csh detailed(Isa isa) { return capstone_detailed(isa); }  // arch/isa.cc's handles

// A value: the entry value of register `base` (a Capstone register id) plus `off`, or the constant
// `off` (base 0, Capstone's "no register" on every ISA here).
struct Val {
  unsigned base = 0;
  u64 off = 0;
  bool constant() const { return base == 0; }
  bool operator==(const Val&) const = default;
};

// The island run on symbolic registers, one instruction at a time.
class Run {
 public:
  Run(Isa isa, std::span<const u8> bytes, u64 at, std::optional<u64> toc) : isa_(isa), bytes_(bytes), at_(at), toc_(toc) {}

  std::string prove(u64 target) {
    const u64 mask = isa_ == Isa::thumb2 ? 0xffff'ffffu : ~u64{0};
    u64 pc = at_;
    for (int step = 0; step < 16; step++) {
      if (pc < at_ || pc - at_ >= bytes_.size()) return "runs off its bytes at " + hex(pc);
      std::optional<Val> jump;
      if (std::string e = execute(pc, jump); !e.empty()) return e;
      if (!jump) continue;
      if (!jump->constant() || (jump->off & mask) != (target & mask))
        return "jumps to " + show(*jump) + ", not to the trampoline at " + hex(target);
      for (const auto& [r, v] : regs_)
        if (v != Val{r, 0} && !free(r)) return std::string("leaves ") + name(r) + " changed (" + show(v) + ")";
      return {};
    }
    return "takes more than 16 instructions";
  }

 private:
  static std::string hex(u64 v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
  }
  const char* name(unsigned r) const { return cs_reg_name(detailed(isa_), r); }
  std::string show(const Val& v) const { return v.constant() ? hex(v.off) : std::string(name(v.base)) + "+" + hex(v.off); }
  // The registers every ISA's ABI leaves to a call's veneers.
  bool free(unsigned r) const {
    switch (isa_) {
      case Isa::aarch64: return r == ARM64_REG_X16 || r == ARM64_REG_X17;
      case Isa::ppc64le: return r == PPC_REG_R12 || r == PPC_REG_CTR;
      // Thumb-2: ip, but not in the 16-byte form, which patchable sites call (their ip may be a
      // nested function's static chain): it must keep every register (thumb2.h encode_island).
      default: return r == ARM_REG_IP && bytes_.size() != thumb2::island_size;
    }
  }
  Val get(unsigned r) const {
    auto it = regs_.find(r);
    if (it == regs_.end() && toc_ && r == PPC_REG_R2) return Val{0, *toc_};  // what the island may assume r2 holds
    return it == regs_.end() ? Val{r, 0} : it->second;
  }
  // `n` bytes of the island's own at `addr` (its literal), or nullopt.
  std::optional<u64> literal(u64 addr, unsigned n) const {
    if (addr < at_ || addr - at_ + n > bytes_.size()) return std::nullopt;
    u64 v = 0;
    for (unsigned i = 0; i < n; i++) v |= u64{bytes_[addr - at_ + i]} << (8 * i);
    if (n == 4 && isa_ != Isa::thumb2) v = static_cast<u64>(static_cast<i64>(static_cast<int32_t>(v)));
    return v;
  }
  static std::optional<Val> add(Val a, Val b) {
    if (!a.constant() && !b.constant()) return std::nullopt;
    return Val{a.base | b.base, a.off + b.off};
  }

  // Runs the instruction at `pc` (advancing pc); sets `jump` when it is the island's final jump.
  std::string execute(u64& pc, std::optional<Val>& jump) {
    const std::span<const u8> rest = bytes_.subspan(pc - at_);
    const u32 word = rest.size() >= 4 ? static_cast<u32>(rest[0] | rest[1] << 8 | rest[2] << 16 | u32{rest[3]} << 24) : 0;
    // `bcl 20,31,$+4`, which Capstone 4 reads as bdnzl: LR = the next instruction's address.
    if (isa_ == Isa::ppc64le && word == 0x429f'0005) {
      regs_[PPC_REG_LR] = Val{0, pc + 4};
      pc += 4;
      return {};
    }
    cs_insn* insn = nullptr;
    if (cs_disasm(detailed(isa_), rest.data(), rest.size(), pc, 1, &insn) != 1) return "holds no instruction at " + hex(pc);
    const std::string text = hex(pc) + " " + insn->mnemonic + " " + insn->op_str;
    std::string e;
    switch (isa_) {
      case Isa::aarch64: e = aarch64(*insn, word, jump); break;
      case Isa::ppc64le: e = ppc64le(*insn, jump); break;
      default: e = thumb2(*insn, pc, jump); break;
    }
    pc += insn->size;
    cs_free(insn, 1);
    return e.empty() ? e : text + ": " + e;
  }

  std::string aarch64(const cs_insn& i, u32 word, std::optional<Val>& jump) {
    const cs_arm64& d = i.detail->arm64;
    if (word == aarch64::bti_c) return {};  // a landing pad: a hint, changes nothing
    if ((word & 0xfc00'0000) == 0x1400'0000)  // b imm26: the jump (by its word: Capstone 4 calls it a few names)
      return jump = Val{0, i.address + static_cast<u64>(static_cast<i64>(static_cast<i32>(word << 6) >> 4))}, std::string();
    auto reg = [&](int k) { return d.operands[k].type == ARM64_OP_REG ? static_cast<unsigned>(d.operands[k].reg) : 0u; };
    if (i.id == ARM64_INS_LDR && (word & 0xff00'0000) == 0x5800'0000 && d.op_count == 2 && d.operands[1].type == ARM64_OP_IMM) {
      auto v = literal(static_cast<u64>(d.operands[1].imm), 8);  // a 64-bit literal load
      if (!v) return "loads from outside the island";
      regs_[reg(0)] = Val{0, *v};
      return {};
    }
    if (i.id == ARM64_INS_ADRP && d.op_count == 2 && d.operands[1].type == ARM64_OP_IMM) {  // Capstone: the page's address
      regs_[reg(0)] = Val{0, static_cast<u64>(d.operands[1].imm)};
      return {};
    }
    if (i.id == ARM64_INS_ADD && (word & 0xffc0'0000) == 0x9100'0000 && d.op_count == 3 && reg(1) && d.operands[2].type == ARM64_OP_IMM) {
      auto v = add(get(reg(1)), Val{0, static_cast<u64>(d.operands[2].imm)});  // 64-bit, an unshifted immediate
      regs_[reg(0)] = *v;
      return {};
    }
    if (i.id == ARM64_INS_ADR && d.op_count == 2 && d.operands[1].type == ARM64_OP_IMM) {
      regs_[reg(0)] = Val{0, static_cast<u64>(d.operands[1].imm)};
      return {};
    }
    if (i.id == ARM64_INS_ADD && (word & 0xffe0'fc00) == 0x8b00'0000 && d.op_count == 3 && reg(1) && reg(2)) {
      auto v = add(get(reg(1)), get(reg(2)));  // 64-bit, unshifted registers
      if (!v) return "adds two unknown values";
      regs_[reg(0)] = *v;
      return {};
    }
    if (i.id == ARM64_INS_BR && d.op_count == 1 && reg(0)) return jump = get(reg(0)), std::string();
    return "not an instruction an island uses";
  }

  std::string ppc64le(const cs_insn& i, std::optional<Val>& jump) {
    const cs_ppc& d = i.detail->ppc;
    auto reg = [&](int k) { return d.operands[k].type == PPC_OP_REG ? static_cast<unsigned>(d.operands[k].reg) : 0u; };
    switch (i.id) {
      case PPC_INS_MFLR: regs_[reg(0)] = get(PPC_REG_LR); return {};
      case PPC_INS_MTLR: regs_[PPC_REG_LR] = get(reg(0)); return {};
      case PPC_INS_MTCTR: regs_[PPC_REG_CTR] = get(reg(0)); return {};
      case PPC_INS_ADDIS:
      case PPC_INS_ADDI: {
        if (d.op_count != 3 || !reg(1) || d.operands[2].type != PPC_OP_IMM) return "not a register plus an immediate";
        const i64 imm = static_cast<int16_t>(d.operands[2].imm & 0xffff);
        auto v = add(get(reg(1)), Val{0, static_cast<u64>(i.id == PPC_INS_ADDIS ? imm * 65536 : imm)});
        if (!v) return "adds two unknown values";
        regs_[reg(0)] = *v;
        return {};
      }
      case PPC_INS_BCTR: jump = get(PPC_REG_CTR); return {};
      case PPC_INS_ADD: {
        auto v = add(get(reg(1)), get(reg(2)));
        if (!v) return "adds two unknown values";
        regs_[reg(0)] = *v;
        return {};
      }
      case PPC_INS_STD:
      case PPC_INS_LD: {
        if (d.op_count != 2 || d.operands[1].type != PPC_OP_MEM) return "not a plain displacement form";
        const Val base = get(d.operands[1].mem.base);
        const u64 addr = base.off + static_cast<u64>(static_cast<i64>(d.operands[1].mem.disp));
        if (i.id == PPC_INS_STD) {
          // Only into the red zone below the entry's r1, which no one holds at a call or an entry.
          const i64 below = static_cast<i64>(addr);
          if (base.base != PPC_REG_R1 || below >= 0 || below < -288) return "stores outside the red zone below r1";
          stack_[addr] = get(reg(0));
          return {};
        }
        if (base.constant()) {
          auto v = literal(addr, 8);
          if (!v) return "loads from outside the island";
          regs_[reg(0)] = Val{0, *v};
        } else if (auto it = stack_.find(addr); base.base == PPC_REG_R1 && it != stack_.end()) {
          regs_[reg(0)] = it->second;
        } else {
          return "loads what it did not store";
        }
        return {};
      }
      default: return "not an instruction an island uses";
    }
  }

  std::string thumb2(const cs_insn& i, u64 pc, std::optional<Val>& jump) {
    const cs_arm& d = i.detail->arm;
    auto reg = [&](int k) { return d.operands[k].type == ARM_OP_REG ? static_cast<unsigned>(d.operands[k].reg) : 0u; };
    // Reading pc gives the instruction's address + 4.
    auto read = [&](unsigned r) { return r == ARM_REG_PC ? Val{0, pc + 4} : get(r); };
    if (i.id == ARM_INS_LDR && d.op_count == 2 && d.operands[1].type == ARM_OP_MEM && d.operands[1].mem.base == ARM_REG_PC &&
        d.operands[1].mem.index == ARM_REG_INVALID && !d.writeback) {
      auto v = literal(((pc + 4) & ~u64{3}) + static_cast<u64>(static_cast<i64>(d.operands[1].mem.disp)), 4);
      if (!v) return "loads from outside the island";
      if (reg(0) == ARM_REG_PC) return jump = Val{0, *v}, std::string();  // ldr.w pc: the jump (interworking by bit 0)
      regs_[reg(0)] = Val{0, *v};
      return {};
    }
    if (i.id == ARM_INS_ADD && (d.op_count == 2 || d.op_count == 3) && reg(0) && reg(1) && !d.update_flags) {
      const unsigned a = d.op_count == 2 ? reg(0) : reg(1), b = d.op_count == 2 ? reg(1) : reg(2);
      if (!b || d.operands[d.op_count - 1].shift.type != ARM_SFT_INVALID) return "not a plain register add";
      auto v = add(read(a), read(b));
      if (!v) return "adds two unknown values";
      regs_[reg(0)] = Val{v->base, v->off & 0xffff'ffffu};
      return {};
    }
    if (i.id == ARM_INS_BX && d.op_count == 1 && reg(0)) return jump = read(reg(0)), std::string();
    // The stack: push and pop of registers (lowest first, from sp up), and a word stored at sp plus
    // an offset, only below the entry's sp, which holds nothing live; pop loads only what was stored.
    if ((i.id == ARM_INS_PUSH || i.id == ARM_INS_POP) && d.op_count >= 1) {
      const Val sp = get(ARM_REG_SP);
      if (sp.base != ARM_REG_SP) return "moves sp to an unknown place";
      const u64 n = d.op_count;
      u64 at = i.id == ARM_INS_PUSH ? sp.off - 4 * n : sp.off;
      for (unsigned k = 0; k < n; k++, at += 4) {
        if (!reg(k)) return "pushes or pops what is not a register";
        if (i.id == ARM_INS_PUSH) {
          if (static_cast<i64>(at) < -64) return "pushes more than 64 bytes below the entry's sp";
          stack_[at] = read(reg(k));
          continue;
        }
        auto it = stack_.find(at);
        if (it == stack_.end()) return "pops what it did not push or store";
        if (reg(k) == ARM_REG_PC) {
          if (k + 1 != n) return "pops pc before another register";
          jump = it->second;
        } else {
          regs_[reg(k)] = it->second;
        }
      }
      regs_[ARM_REG_SP] = Val{ARM_REG_SP, i.id == ARM_INS_PUSH ? sp.off - 4 * n : sp.off + 4 * n};
      return {};
    }
    if (i.id == ARM_INS_STR && d.op_count == 2 && reg(0) && d.operands[1].type == ARM_OP_MEM && d.operands[1].mem.base == ARM_REG_SP &&
        d.operands[1].mem.index == ARM_REG_INVALID && !d.writeback && !d.operands[1].subtracted) {
      const Val sp = get(ARM_REG_SP);
      const u64 at = sp.off + static_cast<u64>(static_cast<i64>(d.operands[1].mem.disp));
      if (sp.base != ARM_REG_SP || static_cast<i64>(at) >= 0 || static_cast<i64>(at) < -64) return "stores outside the 64 bytes below the entry's sp";
      stack_[at] = read(reg(0));
      return {};
    }
    return "not an instruction an island uses";
  }

  Isa isa_;
  std::span<const u8> bytes_;
  u64 at_;
  std::map<unsigned, Val> regs_;  // the registers written so far
  std::map<u64, Val> stack_;      // stores, by offset from the entry's r1 (PPC64le) or sp (Thumb-2)
  std::optional<u64> toc_;        // PPC64le: r2's value at the island's entry, when it may rely on it
};

}  // namespace

// x86-64, decoded with Zydis (three instructions, so run here rather than on symbolic registers):
// %r11 gets an address within the island, then the quadword there added, then the jump through %r11,
// with notrack; nothing else is written but the flags.
std::string check_x86_64_island(std::span<const u8> bytes, u64 at, u64 target) {
  const auto hex = [](u64 x) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(x));
    return std::string(b);
  };
  using X = x86_64::IslandInsn;
  const unsigned r11 = x86_64::zydis_r11();
  u64 pc = at, value = 0;
  const auto next = [&]() { return pc - at < bytes.size() ? x86_64::island_insn(bytes.subspan(pc - at)) : X{}; };
  const X lea = next();
  if (lea.kind != X::rip_lea || lea.reg != r11) return hex(pc) + ": expected lea disp(%rip), %r11";
  pc += lea.len;
  value = pc + static_cast<u64>(lea.disp);
  const X add = next();
  if (add.kind != X::add_load || add.reg != r11 || add.base != r11) return hex(pc) + ": expected add disp(%r11), %r11";
  pc += add.len;
  const u64 slot = value + static_cast<u64>(add.disp);
  if (slot < at || slot + 8 > at + bytes.size() || slot < pc) return "adds a quadword from outside the island's literal";
  u64 q = 0;
  for (unsigned i = 0; i < 8; i++) q |= u64{bytes[slot - at + i]} << (8 * i);
  value += q;
  const X jmp = next();
  if (jmp.kind != X::jump || jmp.reg != r11 || !jmp.notrack) return hex(pc) + ": expected notrack jmp *%r11";
  if (slot < pc + jmp.len) return "its literal overlaps its code";
  if (value != target) return "jumps to " + hex(value) + ", not to the trampoline at " + hex(target);
  return {};
}

// Empty when `bytes` holds, a word each from its start, the instructions `expected` as `decode(word,
// its address)` reads them; else which one differs.
template <size_t N, class Decode>
std::string holds_words(std::span<const u8> bytes, u64 at, const char* const (&expected)[N], Decode decode) {
  for (unsigned i = 0; i < N; i++) {
    const Decoded d = decode(bytes.subspan(4 * i), at + 4 * i);
    if (!d.valid || d.len != 4 || d.text != expected[i])
      return "holds `" + (d.text.empty() ? std::string("(undefined)") : d.text) + "` at +" + std::to_string(4 * i) + ", not `" + expected[i] + "`";
  }
  return {};
}

// RISC-V64's, by our decoder (Capstone 4 has none; tests/riscv64_test.cc holds it to objdump's
// reading of these very instructions): the four instructions of riscv64.h encode_island, in order,
// and the doubleword they load, which must lead to `target`.
std::string check_riscv64_island(std::span<const u8> bytes, u64 at, u64 target) {
  if (bytes.size() != riscv64::island_size) return "is " + std::to_string(bytes.size()) + " bytes, not 24";
  static constexpr const char* expected[] = {"auipc\tt1,0x0", "ld\tt3,16(t1)", "add\tt1,t1,t3", "jalr\tzero,0(t1)"};
  if (std::string why = holds_words(bytes, at, expected, [](std::span<const u8> b, u64) {
        const riscv64::Insn i = riscv64::decode(b);
        return Decoded{i.len, i.valid, false, false, i.text};
      });
      !why.empty())
    return why;
  u64 delta = 0;  // ld t3, 16(t1): t1 = at (auipc t1, 0)
  for (unsigned b = 0; b < 8; b++) delta |= u64{bytes[16 + b]} << (8 * b);
  if (at + delta != target) return "jumps to " + hex(at + delta) + ", not to the trampoline at " + hex(target);
  return {};
}

std::string check_arm_entry_island(std::span<const u8> bytes, u64 at, u64 target) {
  if (at % 4) return "misaligned";
  if (bytes.size() != thumb2::arm_entry_island_size) return "is " + std::to_string(bytes.size()) + " bytes, not 24";
  static constexpr const char* expected[] = {"str lr, [sp, #-4]!", "mov lr, ip", "ldr ip, [pc, #4]", "add ip, ip, pc", "bx ip"};
  if (std::string why = holds_words(bytes, at, expected, decode_arm_state); !why.empty()) return why;
  // ldr ip, [pc, #4] at +8 reads +20 (pc = +16); add ip, ip, pc at +12 adds +20.
  u32 literal = 0;
  for (unsigned b = 0; b < 4; b++) literal |= u32{bytes[20 + b]} << (8 * b);
  const u64 ip = (at + 20 + literal) & 0xffff'ffffu;
  if (ip != (target & 0xffff'ffffu) || !(ip & 1)) return "jumps to " + hex(ip) + ", not to the Thumb trampoline at " + hex(target);
  return {};
}

std::optional<thumb2::ArmFarLanding> arm_far_landing(u64 at, u64 lo, u64 hi) {
  static const std::vector<u32> values = [] {  // every modified immediate's value, ascending
    std::vector<u32> v;
    for (u32 rot = 0; rot < 16; rot++)
      for (u32 imm8 = 0; imm8 < 256; imm8++) v.push_back(rot ? (imm8 >> (2 * rot)) | (imm8 << (32 - 2 * rot)) : imm8);
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  }();
  const u64 pc = at + 12;  // the first add's pc (its address + 8)
  if (at % 4 || lo < pc || hi > u64{1} << 32) return std::nullopt;
  std::optional<thumb2::ArmFarLanding> best;
  for (const u32 a : values) {
    if (pc + a >= hi || (best && pc + a >= best->landing)) break;
    const u64 need = lo > pc + a ? lo - pc - a : 0;
    for (auto it = std::lower_bound(values.begin(), values.end(), need); it != values.end() && pc + a + *it < hi; ++it)
      if ((pc + a + *it) % 4 == 0) {
        if (!best || pc + a + *it < best->landing)
          best = thumb2::ArmFarLanding{pc + a + *it, *thumb2::arm_modified_immediate(a), *thumb2::arm_modified_immediate(*it)};
        break;
      }
  }
  return best;
}

std::string check_arm_far_island(std::span<const u8> bytes, u64 at, std::span<const u8> sled, u64 sled_at, u64 entry, std::span<const u8> entry_word) {
  if (at % 4) return "misaligned";
  const auto word = [](std::span<const u8> b, u64 i) {
    u32 w = 0;
    for (unsigned k = 0; k < 4; k++) w |= u32{b[4 * i + k]} << (8 * k);
    return w;
  };
  if (bytes.size() == thumb2::arm_absolute_island_size) {
    static constexpr const char* expected[] = {"ldr pc, [pc, #-4]"};
    if (std::string why = holds_words(bytes, at, expected, decode_arm_state); !why.empty()) return why;
    if (word(bytes, 1) != (entry & 0xffff'ffffu) || entry % 4) return "jumps to " + hex(word(bytes, 1)) + ", not to the ARM-state entry at " + hex(entry);
    return {};
  }
  if (bytes.size() != thumb2::arm_far_island_size) return "is " + std::to_string(bytes.size()) + " bytes, not 8 or 12";
  static constexpr const char* push[] = {"str lr, [sp, #-4]!"};
  if (std::string why = holds_words(bytes, at, push, decode_arm_state); !why.empty()) return why;
  if (entry_word.size() != 4 || decode_arm_state(entry_word, entry).text != push[0]) return "the ARM-state entry does not begin with `push {lr}`";
  // `add lr, pc, #A` (pc: its address + 8), then `add pc, lr, #B`: the immediates as Capstone prints them.
  u64 to = at + 12;
  for (unsigned i = 1; i < 3; i++) {
    const Decoded d = decode_arm_state(bytes.subspan(4 * i), at + 4 * i);
    const std::string form = i == 1 ? "add lr, pc, #" : "add pc, lr, #";
    if (!d.valid || d.len != 4 || d.text.rfind(form, 0) != 0 || d.text.size() == form.size())
      return "holds `" + d.text + "` at +" + std::to_string(4 * i) + ", not `" + form + "...`";
    size_t used = 0;
    const u64 imm = std::stoull(d.text.substr(form.size()), &used, 0);
    if (used != d.text.size() - form.size()) return "holds `" + d.text + "` at +" + std::to_string(4 * i) + ": its immediate is not read";
    to = (to + imm) & 0xffff'ffffu;
  }
  if (to % 4 || to < sled_at || to + 4 > sled_at + sled.size()) return "jumps to " + hex(to) + ", outside the sled at " + hex(sled_at);
  const Decoded b = decode_arm_state(sled.subspan(to - sled_at, 4), to);
  if (!b.valid || b.text != "b #" + hex(entry + 4)) return "lands at " + hex(to) + " on `" + b.text + "`, not `b #" + hex(entry + 4) + "`";
  return {};
}

std::string check_island(Isa isa, std::span<const u8> bytes, u64 at, u64 target, std::optional<u64> toc) {
  if (!island_size(isa)) return "this ISA has no branch islands";
  if (isa == Isa::x86_64) return at % island_align(isa) ? "misaligned" : check_x86_64_island(bytes, at, target);
  if (isa == Isa::riscv64) return at % island_align(isa) ? "misaligned" : check_riscv64_island(bytes, at, target);
  // The islands over ld's stubs (thumb2.h encode_absolute_island, aarch64.h encode_adrp_island) read
  // no 8-byte literal: instruction alignment.
  if (at % (bytes.size() == island_size(isa) ? island_align(isa) : 4)) return "misaligned";
  return Run(isa, bytes, at, toc).prove(target);
}

}  // namespace prepatch::arch
