#include "arch/isa.h"

#include <capstone/capstone.h>

#include <array>
#include <bit>
#include <cstring>
#include <stdexcept>

#include "arch/aarch64.h"
#include "arch/forms.h"
#include "arch/ppc64le.h"
#include "arch/riscv64_decode.h"
#include "arch/thumb2.h"
#include "arch/x86_64.h"

namespace prepatch::arch {

namespace {

constexpr SiteKind x86_kinds[] = {SiteKind::fentry, SiteKind::mcount, SiteKind::patchable};
constexpr SiteKind other_kinds[] = {SiteKind::mcount, SiteKind::patchable};

// clang-format off
const IsaInfo isas[] = {
  {Isa::x86_64, "x86-64", 1, 1, false, x86_kinds,
   "bytes: the Intel SDM (vol. 3A, 9.1.3 \"Handling Self- and Cross-Modifying Code\") promises nothing "
   "about a fetch that races a store, so another core may see any mix of old and new bytes, even within "
   "one aligned word",
   "Intel SDM cross-modifying code: the writer must serialize every core that may execute the code "
   "(membarrier SYNC_CORE) before it relies on new bytes; a one-byte int3 cannot be seen half written"},
  {Isa::aarch64, "aarch64", 4, 4, true, other_kinds,
   "an aligned 32-bit store is single-copy atomic for instruction fetch (ARM ARM B2.2.1)",
   "ARMv8 CMODX (ARM ARM B2.2.5): B, BL, NOP, BRK, SVC, HVC, SMC and ISB may be swapped while another "
   "core executes them; then dc cvau, dsb ish, ic ivau, dsb ish, isb, and a sync of the other cores"},
  {Isa::ppc64le, "ppc64le", 4, 4, false, other_kinds,
   "an aligned 32-bit store is seen whole by instruction fetch (Power ISA Book II, single-copy "
   "atomicity; the kernel's patch_instruction relies on it)",
   "Power ISA Book II instruction storage: store, dcbst, sync, icbi, isync, then a sync of the other "
   "cores; only the bl toggles, so a thread stopped anywhere in the sequence resumes in a valid one"},
  {Isa::riscv64, "riscv64", 2, 4, false, other_kinds,
   "naturally aligned 32-bit instructions are fetched atomically (Ziccif, RVA20/RVA22 profiles); a "
   "store that is not naturally aligned may be split, even byte by byte by a trap handler",
   "RISC-V Zifencei/Ziccif: a naturally aligned 32-bit store, then fence.i on every hart "
   "(membarrier SYNC_CORE or riscv_flush_icache); a 2-byte aligned site goes through c.ebreak"},
  {Isa::thumb2, "thumb2", 2, 2, false, other_kinds,
   "aligned halfwords: a 32-bit Thumb instruction is fetched as two halfwords (ARMv7 ARM A3.5.3), "
   "so another core may see one half old and the other new",
   "ARMv7 ARM A3.5.3/A3.5.4: a core fetches the first halfword old or as the 16-bit trap (udf #1, which "
   "Linux turns into SIGTRAP; A3.5.4's list of concurrently modifiable instructions names BKPT, not UDF); "
   "the rest is written while every core that reaches the site traps, with a cacheflush and a sync after each step"},
};
constexpr unsigned x86_lengths[] = {5, 6};
constexpr unsigned word_length[] = {4};
constexpr unsigned arm32_lengths[] = {4, thumb2::arm_site_len};  // Thumb sites; ARM-state ones
// clang-format on

// Capstone handles, one per ISA and detail setting, opened once: without details (cs_disasm on a shared
// handle is safe) for text, with them (operands) for what discovery asks of a word.
csh capstone(Isa isa, bool detail = false) {
  static const auto handles = [] {
    std::array<std::array<csh, 6>, 2> h{};
    auto open = [&](Isa i, cs_arch a, int mode) {
      for (int d = 0; d < 2; d++) {
        if (cs_open(a, static_cast<cs_mode>(mode), &h[d][static_cast<size_t>(i)]) != CS_ERR_OK)
          throw std::runtime_error("capstone: cannot open a decoder for " + std::string(isa_name(i)));
        cs_option(h[d][static_cast<size_t>(i)], CS_OPT_DETAIL, d ? CS_OPT_ON : CS_OPT_OFF);
      }
    };
    open(Isa::aarch64, CS_ARCH_ARM64, CS_MODE_LITTLE_ENDIAN);
    open(Isa::ppc64le, CS_ARCH_PPC, CS_MODE_64 | CS_MODE_LITTLE_ENDIAN);
    open(Isa::thumb2, CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_LITTLE_ENDIAN);
    return h;
  }();
  return handles[detail ? 1 : 0][static_cast<size_t>(isa)];
}

// ARM state (a PLT entry's code in a Thumb-2 binary), with details.
csh capstone_arm_state() {
  static const csh h = [] {
    csh a = 0;
    if (cs_open(CS_ARCH_ARM, static_cast<cs_mode>(CS_MODE_ARM | CS_MODE_LITTLE_ENDIAN), &a) != CS_ERR_OK)
      throw std::runtime_error("capstone: cannot open a decoder for ARM state");
    cs_option(a, CS_OPT_DETAIL, CS_OPT_ON);
    return a;
  }();
  return h;
}

// One instruction decoded with details, freed at the end of the scope; empty when undecodable.
class DetailedInsn {
 public:
  DetailedInsn(csh handle, std::span<const u8> b, u64 addr) {
    if (b.size() >= 4 && cs_disasm(handle, b.data(), 4, addr, 1, &insn_) != 1) insn_ = nullptr;
  }
  DetailedInsn(Isa isa, std::span<const u8> b, u64 addr) : DetailedInsn(capstone(isa, true), b, addr) {}
  ~DetailedInsn() {
    if (insn_) cs_free(insn_, 1);
  }
  DetailedInsn(const DetailedInsn&) = delete;
  DetailedInsn& operator=(const DetailedInsn&) = delete;
  const cs_insn* operator->() const { return insn_; }
  explicit operator bool() const { return insn_ != nullptr; }

 private:
  cs_insn* insn_ = nullptr;
};

Decoded decode_capstone(Isa isa, std::span<const u8> b, u64 addr) {
  Decoded d;
  cs_insn* insn = nullptr;
  if (cs_disasm(capstone(isa), b.data(), b.size(), addr, 1, &insn) != 1) return d;
  d.len = insn->size;
  d.valid = true;
  d.text = std::string(insn->mnemonic) + (insn->op_str[0] ? std::string("\t") + insn->op_str : "");
  const unsigned id = insn->id;
  cs_free(insn, 1);
  switch (isa) {
    case Isa::aarch64:
      d.trap = false;  // no shipped AArch64 plan lays a trap; a BRK at a site is not the shim's
      d.cmodx = id == ARM64_INS_B || id == ARM64_INS_BL || id == ARM64_INS_NOP || id == ARM64_INS_BRK || id == ARM64_INS_SVC ||
                id == ARM64_INS_HVC || id == ARM64_INS_SMC || id == ARM64_INS_ISB;
      break;
    case Isa::thumb2: d.trap = id == ARM_INS_UDF && d.len == 2 && std::memcmp(b.data(), thumb_trap, 2) == 0; break;
    default: break;
  }
  return d;
}

}  // namespace

const IsaInfo& isa_info(Isa isa) {
  for (const IsaInfo& i : isas)
    if (i.isa == isa) return i;
  throw std::logic_error("isa_info: unknown ISA");
}

std::string_view isa_name(Isa isa) { return isa_info(isa).name; }

std::optional<Isa> isa_by_name(std::string_view n) {
  if (n == "x86-64" || n == "x86_64" || n == "amd64") return Isa::x86_64;
  if (n == "aarch64" || n == "arm64") return Isa::aarch64;
  if (n == "ppc64le" || n == "ppc64el") return Isa::ppc64le;
  if (n == "riscv64" || n == "riscv") return Isa::riscv64;
  if (n == "thumb2" || n == "thumb" || n == "arm") return Isa::thumb2;
  return std::nullopt;
}

std::string_view kind_name(SiteKind k) {
  switch (k) {
    case SiteKind::fentry: return "fentry";
    case SiteKind::mcount: return "mcount";
    case SiteKind::patchable: return "patchable";
  }
  return "?";
}

std::optional<SiteKind> kind_by_name(std::string_view n) {
  for (SiteKind k : x86_kinds)
    if (kind_name(k) == n) return k;
  return std::nullopt;
}

std::span<const unsigned> site_lengths(Isa isa) {
  if (isa == Isa::x86_64) return x86_lengths;
  if (isa == Isa::thumb2) return arm32_lengths;
  return word_length;
}

namespace {
Decoded decode_any(Isa isa, std::span<const u8> b, u64 addr) {
  switch (isa) {
    case Isa::x86_64: {
      Decoded d;
      d.text = disassemble(b, addr, &d.len);
      d.valid = d.len != 0;
      d.trap = d.len == 1 && b[0] == x86_int3[0];
      return d;
    }
    case Isa::riscv64: {
      riscv64::Insn i = riscv64::decode(b);
      Decoded d{i.len, i.valid, false, false, i.text};
      d.trap = i.len == 2 && std::memcmp(b.data(), riscv_c_ebreak, 2) == 0;
      return d;
    }
    default: return decode_capstone(isa, b, addr);
  }
}
}  // namespace

size_t capstone_detailed(Isa isa) { return capstone(isa, true); }

std::optional<u64> bl_target(Isa isa, std::span<const u8> b, u64 addr) {
  if (isa == Isa::x86_64 || isa == Isa::riscv64) return std::nullopt;
  DetailedInsn i(isa, b, addr);
  if (!i) return std::nullopt;
  if (isa == Isa::thumb2) {  // bl (to Thumb code) or blx (to ARM code, from the word-aligned pc)
    const cs_arm& d = i->detail->arm;
    if (i->size == 4 && (i->id == ARM_INS_BL || i->id == ARM_INS_BLX) && d.op_count == 1 && d.operands[0].type == ARM_OP_IMM)
      return static_cast<u64>(static_cast<u32>(d.operands[0].imm));
  } else if (isa == Isa::aarch64) {
    const cs_arm64& d = i->detail->arm64;
    if (i->id == ARM64_INS_BL && d.op_count == 1 && d.operands[0].type == ARM64_OP_IMM) return static_cast<u64>(d.operands[0].imm);
  } else {
    const cs_ppc& d = i->detail->ppc;
    if (i->id == PPC_INS_BL && d.op_count == 1 && d.operands[0].type == PPC_OP_IMM) return static_cast<u64>(d.operands[0].imm);
  }
  return std::nullopt;
}

std::optional<u64> aarch64_plt_slot(std::span<const u8> entry, u64 addr) {
  if (entry.size() < 16) return std::nullopt;
  DetailedInsn adrp(Isa::aarch64, entry, addr), ldr(Isa::aarch64, entry.subspan(4), addr + 4), br(Isa::aarch64, entry.subspan(12), addr + 12);
  if (!adrp || !ldr || !br || adrp->id != ARM64_INS_ADRP || ldr->id != ARM64_INS_LDR || br->id != ARM64_INS_BR) return std::nullopt;
  const cs_arm64& a = adrp->detail->arm64;
  const cs_arm64& l = ldr->detail->arm64;
  const cs_arm64& b = br->detail->arm64;
  if (a.op_count != 2 || a.operands[0].type != ARM64_OP_REG || a.operands[0].reg != ARM64_REG_X16 || a.operands[1].type != ARM64_OP_IMM)
    return std::nullopt;
  if (l.op_count != 2 || l.operands[0].type != ARM64_OP_REG || l.operands[0].reg != ARM64_REG_X17 || l.operands[1].type != ARM64_OP_MEM ||
      l.operands[1].mem.base != ARM64_REG_X16 || l.operands[1].mem.index != ARM64_REG_INVALID)
    return std::nullopt;
  if (b.op_count != 1 || b.operands[0].type != ARM64_OP_REG || b.operands[0].reg != ARM64_REG_X17) return std::nullopt;
  return static_cast<u64>(a.operands[1].imm) + static_cast<u64>(static_cast<i64>(l.operands[1].mem.disp));
}

std::optional<u64> arm_plt_slot(std::span<const u8> entry, u64 addr) {
  u64 at = 0, ip = 0;
  for (int n = 0; n < 4 && at + 4 <= entry.size(); n++, at += 4) {
    DetailedInsn insn(capstone_arm_state(), entry.subspan(at), addr + at);
    if (!insn) return std::nullopt;
    const cs_arm& d = insn->detail->arm;
    const unsigned id = insn->id;
    const bool ip_first = d.op_count >= 1 && d.operands[0].type == ARM_OP_REG && d.operands[0].reg == ARM_REG_R12;
    // Capstone 4 shows an immediate it cannot print as a plain one as `#imm, #rotation` (two operands).
    const bool rotated = d.op_count == 4 && d.operands[3].type == ARM_OP_IMM;
    const bool add = id == ARM_INS_ADD && (d.op_count == 3 || rotated) && ip_first && d.operands[1].type == ARM_OP_REG &&
                     d.operands[2].type == ARM_OP_IMM && d.operands[1].reg == (n == 0 ? ARM_REG_PC : ARM_REG_R12);
    const bool ldr = n > 0 && id == ARM_INS_LDR && d.op_count == 2 && d.operands[0].type == ARM_OP_REG && d.operands[0].reg == ARM_REG_PC &&
                     d.operands[1].type == ARM_OP_MEM && d.operands[1].mem.base == ARM_REG_R12 && d.operands[1].mem.index == ARM_REG_INVALID;
    u64 imm = ldr ? static_cast<u64>(static_cast<i64>(d.operands[1].mem.disp)) : 0;
    if (add) imm = std::rotr(static_cast<u32>(d.operands[2].imm), rotated ? static_cast<int>(d.operands[3].imm) : 0);
    if (add) ip = (n == 0 ? addr + 8 : ip) + imm;  // pc reads as the instruction's address + 8
    else if (ldr) return static_cast<u32>(ip + imm);
    else return std::nullopt;
  }
  return std::nullopt;
}

Decoded decode(Isa isa, std::span<const u8> b, u64 addr) {
  Decoded d = decode_any(isa, b, addr);
  for (char& c : d.text)
    if (c == '\t') c = ' ';
  return d;
}

Decoded decode_arm_state(std::span<const u8> b, u64 addr) {
  Decoded d;
  cs_insn* insn = nullptr;
  if (b.size() < 4 || cs_disasm(capstone_arm_state(), b.data(), 4, addr, 1, &insn) != 1) return d;
  d.len = insn->size;
  d.valid = true;
  d.text = std::string(insn->mnemonic) + (insn->op_str[0] ? std::string(" ") + insn->op_str : "");
  const unsigned id = insn->id;
  // ARMv7 ARM A3.5.4: what may be swapped while another core runs it (unconditional, as these are).
  d.cmodx = insn->detail->arm.cc == ARM_CC_AL && (id == ARM_INS_B || id == ARM_INS_BL || id == ARM_INS_NOP || id == ARM_INS_BKPT ||
                                                  id == ARM_INS_SVC || id == ARM_INS_HVC || id == ARM_INS_SMC);
  cs_free(insn, 1);
  return d;
}

std::optional<SiteForm> site_form(Isa isa, SiteKind kind, u64 addr, u64 target, unsigned len) {
  const IsaInfo& info = isa_info(isa);
  if (addr % info.insn_align != 0) return std::nullopt;
  bool known = false;
  for (SiteKind k : info.kinds) known |= k == kind;
  if (!known) return std::nullopt;
  SiteForm f;
  f.addr = addr;
  switch (isa) {
    case Isa::x86_64: {
      CallForm form = call_form_for_length(len);
      if (form == CallForm::none) return std::nullopt;
      auto nop = canonical_nop(len);
      f.off.assign(nop.begin(), nop.end());
      f.on.resize(len);
      if (!encode_call(form, addr, target, f.on)) return std::nullopt;
      f.context_text = kind == SiteKind::mcount ? "(after push %rbp; mov %rsp,%rbp: not written)" : "";
      return f;
    }
    case Isa::aarch64: {
      u32 bl;
      if (!aarch64::encode_bl(addr, target, bl)) return std::nullopt;
      put_le(f.context, kind == SiteKind::mcount ? aarch64::mov_x0_x30 : aarch64::mov_x9_x30);
      f.context_text = kind == SiteKind::mcount ? "mov x0, x30" : "mov x9, x30 (written when preparing)";
      put_le(f.off, aarch64::nop);
      put_le(f.on, bl);
      return f;
    }
    case Isa::ppc64le: {
      u32 bl;
      if (!ppc64le::encode_bl(addr, target, bl)) return std::nullopt;
      if (kind == SiteKind::mcount) {
        put_le(f.context, ppc64le::mflr_r0);
        put_le(f.context, ppc64le::std_r0_16);
        f.context_text = "mflr r0; std r0, 16(r1)";
      } else {
        put_le(f.context, ppc64le::mflr_r0);
        f.context_text = "mflr r0 (written when preparing)";
      }
      put_le(f.off, ppc64le::nop);
      put_le(f.on, bl);
      return f;
    }
    case Isa::riscv64: {
      const unsigned link = kind == SiteKind::mcount ? riscv64::ra : riscv64::t0;
      u32 auipc, jalr;
      if (!riscv64::encode_call(addr - 4, target, link, auipc, jalr)) return std::nullopt;
      if (kind == SiteKind::mcount) put_le(f.context, riscv64::c_mv_a0_ra);
      put_le(f.context, auipc);
      f.context_text = kind == SiteKind::mcount ? "c.mv a0, ra; auipc ra, hi" : "auipc t0, hi (written when preparing)";
      put_le(f.off, riscv64::nop);
      put_le(f.on, jalr);
      return f;
    }
    case Isa::thumb2: {
      if (len == thumb2::arm_site_len) {  // an ARM-state -pg site: `mov ip, pc`, then `nop` or `b` to the ARM-state entry
        u32 b = 0;
        if (kind != SiteKind::mcount || addr % 4 != 0 || !thumb2::encode_arm_b(addr + 4, target, b)) return std::nullopt;
        f.arm_state = true;
        f.context_text = "none (the site is both words, where `push {lr}` and the call were before preparing)";
        put_le(f.off, thumb2::arm_mov_ip_pc);
        put_le(f.off, thumb2::arm_nop);
        put_le(f.on, thumb2::arm_mov_ip_pc);
        put_le(f.on, b);
        return f;
      }
      u16 bl[2];
      if (!thumb2::encode_bl(addr, target, bl)) return std::nullopt;
      put_le(f.context, thumb2::push_lr);
      f.context_text = kind == SiteKind::mcount ? "push {lr}" : "push {lr} (written when preparing)";
      put_le(f.off, thumb2::pop_lr[0]);
      put_le(f.off, thumb2::pop_lr[1]);
      put_le(f.on, bl[0]);
      put_le(f.on, bl[1]);
      return f;
    }
  }
  return std::nullopt;
}

std::optional<SiteForm> trap_site_form(Isa isa, SiteKind kind, u64 addr, unsigned len) {
  const u16 machine = isa == Isa::x86_64 ? 62 : isa == Isa::riscv64 ? em_riscv : isa == Isa::thumb2 ? em_arm : isa == Isa::aarch64 ? 183 : 21;
  std::optional<SiteForm> f = site_form(isa, kind, addr, addr + 0x1000, len);  // (its context and off form)
  if (!f || f->arm_state || !has_trap_form(machine, static_cast<unsigned>(f->off.size()))) return std::nullopt;
  if (!trap_form(machine, static_cast<unsigned>(f->off.size()), f->on.data())) return std::nullopt;
  f->trap = true;
  return f;
}

}  // namespace prepatch::arch
