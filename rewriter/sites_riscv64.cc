// RISC-V64 site discovery (rewriter/discoverer.h): gcc -pg (`mv a0, ra`, then `call _mcount` as ld
// relaxed it) and -fpatchable-function-entry (c.nop or 4-byte nop pads, as the kernel's ftrace has
// them). Instructions are decoded by arch/riscv64.h, ours, cross-checked against objdump.
#include <algorithm>
#include <optional>

#include "arch/riscv64.h"
#include "rewriter/discoverer.h"

namespace prepatch::discovery {
namespace {

namespace rv = arch::riscv64;

// The GOT slot the PLT entry at `at` loads (`auipc t3; ld t3, lo(t3)`), or nullopt.
std::optional<u64> plt_slot(const Discoverer& d, u64 at) {
  u32 auipc = 0, ld = 0;
  if (!d.word(at, auipc) || !d.word(at + 4, ld) || !rv::is_auipc(auipc) || !rv::is_ld(ld) || rv::rs1_of(ld) != rv::rd_of(auipc)) return std::nullopt;
  return rv::pair_target(at, auipc, ld);
}

class Riscv64Sites final : public IsaSites {
 public:
  // 16-byte entries after a 32-byte header: auipc t3; ld t3; jalr t1, t3; nop.
  void plt(Discoverer& d, const elf::Section& s) const override {
    const u64 size = d.elf().section_data(s).size();  // what the file holds (a header may claim exabytes)
    for (u64 at = 32; at + 16 <= size; at += 16)
      if (const auto slot = plt_slot(d, s.addr + at))
        if (auto k = d.slots().find(*slot)) d.direct().add(s.addr + at, *k);
  }

  // Each call (`jal ra`, or `auipc ra; jalr ra`, looked for at every halfword) to a PLT entry jumping
  // through one of `slots`.
  bool calls_through(const Discoverer& d, u64 start, u64 end, const std::vector<u64>& slots) const override {
    u32 w = 0, next = 0;
    for (u64 at = start & ~u64{1}; at + 4 <= end; at += 2) {
      if (!d.word(at, w)) continue;
      std::optional<u64> target;
      if (rv::is_jal(w) && rv::rd_of(w) == rv::ra) target = at + static_cast<u64>(rv::j_imm(w));
      else if (rv::is_auipc(w) && rv::rd_of(w) == rv::ra && d.word(at + 4, next) && rv::is_jalr_via(next, rv::ra))
        target = rv::pair_target(at, w, next);
      const auto slot = target ? plt_slot(d, *target) : std::nullopt;
      if (slot && std::find(slots.begin(), slots.end(), *slot) != slots.end()) return true;
    }
    return false;
  }

  // -fpatchable-function-entry=N[,M]: N nops (c.nop halfwords with the C extension), M of them before
  // the function symbol. As the kernel does, 8 bytes at the entry become a call: a permanent `auipc
  // t0, hi`, written when preparing, then the site, toggled between nop and `jalr t0, lo(t0)` (t0: the
  // return address, so ra keeps the function's). With the C extension the entry may be only 2-byte
  // aligned; where the pad has 2 bytes to spare the pair moves up by a c.nop so the site is 4-byte
  // aligned, which lets one aligned store switch it (arch/plan.h plan_for). Nops after it stay.
  void patchable(Discoverer& d, u64 addr) const override {
    Site s(addr, SiteKind::patchable, Source::patchable_entries);
    s.len = 4;
    if (addr % 2 != 0 || !d.executable(addr, 8)) {
      s.set_skip(Skip::not_in_text);
      return d.push_record_site(s);
    }
    const auto pad_entry = d.pad_entry(
        addr, 64, [&](u64 at, u64 end) { return nops(d, at, at + 2) ? 2 : at + 4 <= end && nops(d, at, at + 4) ? 4 : 0; }, 8,
        [&](u64 at) {  // a prepared output's `auipc t0`
          u32 w = 0;
          return d.word(at, w) && rv::is_auipc(w) && rv::rd_of(w) == rv::t0;
        });
    if (!pad_entry) {
      s.set_skip(Skip::unrecognized);
      return d.push_record_site(s);
    }
    const u64 entry = *pad_entry;
    // Prepared already (`prepatch sites` on an output): [c.nop,] auipc t0, then the site, nop or jalr t0.
    for (u64 at : {entry, entry + 2}) {
      u32 auipc = 0, site = 0;
      if (at == entry + 2 && !nops(d, entry, at)) break;
      if (d.word(at, auipc) && rv::is_auipc(auipc) && rv::rd_of(auipc) == rv::t0 && d.word(at + 4, site) &&
          (site == rv::nop || rv::is_jalr_via(site, rv::t0))) {
        s.addr = at + 4;
        return d.push_record_site(s);
      }
    }
    u64 pad = 0;  // nop bytes from the entry
    while (pad < 64)
      if (nops(d, entry + pad, entry + pad + 2)) pad += 2;
      else if (nops(d, entry + pad, entry + pad + 4)) pad += 4;
      else break;
    if (pad < 8) {
      s.addr = entry;
      s.set_skip(pad == 0 ? Skip::unrecognized : Skip::pad_too_short);
      return d.push_record_site(s);
    }
    const u64 shift = entry % 4 == 2 && pad >= 10 ? 2 : 0;
    s.addr = entry + shift + 4;
    d.push_record_site(s);
  }

  // gcc -pg: after the frame setup, `mv a0, ra` (the function's return address, _mcount's argument),
  // then `call _mcount`, which ld relaxes to `jal ra, T` where T (the PLT entry, or _mcount in a static
  // binary) is within 1 MiB, else leaves as `auipc ra, hi; jalr ra, lo(ra)`. The site is the jal or the
  // jalr, toggled with a nop; the auipc stays (it only sets ra, which the call clobbers anyway). The
  // call keeps its target T, which the preparer turns into a jump to the shim (Discovery::mcount_via),
  // so no site needs to reach the shim itself.
  // The prologue before the site is followed too (Discovery::mcount_frames): its moves of sp and its
  // save of ra, as gcc emits them (`addi sp,sp,-16; sd ra,8(sp); ...`); anything else that may write sp,
  // and any jump or branch, leaves the site's frame unknown.
  void scan_all(Discoverer& d) const override {
    d.for_each_unscanned([&](const Func& f, std::span<const u8> rest) { scan(d, f, rest); });
  }

 private:
  void scan(Discoverer& d, const Func& f, std::span<const u8>) const {
    const u64 end = f.addr + std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, d.code_size(f.addr)});
    bool context = false;  // seen: mv a0, ra
    u64 auipc_at = 0;
    u32 auipc = 0;
    Prologue frame;
    for (u64 at = f.addr; at + 2 <= end;) {
      auto h = d.code(at, 2);
      if (h.size() != 2) return;
      if (rv::insn_length(static_cast<u16>(h[0] | h[1] << 8)) == 2) {
        const u16 c = static_cast<u16>(h[0] | h[1] << 8);
        context |= c == rv::c_mv_a0_ra;
        if ((c & 0xf07f) == 0x9002 && (c & 0x0f80)) return;  // c.jalr: an indirect call comes first
        frame.step(c);
        at += 2;
        continue;
      }
      u32 w = 0;
      if (at + 4 > end || !d.word(at, w)) return;
      context |= w == rv::addi_a0_ra;
      std::optional<u64> target;
      if (rv::is_jal(w) && rv::rd_of(w) == rv::ra) target = at + static_cast<u64>(rv::j_imm(w));
      else if (rv::is_jalr_via(w, rv::ra) && auipc_at + 4 == at) target = rv::pair_target(auipc_at, auipc, w);
      else if (rv::is_jalr(w) && rv::rd_of(w) == rv::ra) return;  // an indirect call comes first
      if (rv::is_auipc(w) && rv::rd_of(w) == rv::ra) auipc_at = at, auipc = w;
      if (target) {
        if (!d.direct().find(*target)) return;  // the first call is an ordinary one: no -pg site
        Site& s = d.add_symbol_site(at, SiteKind::mcount, 4, f);
        u64& via = d.found().mcount_via;
        if (!context) s.set_skip(Skip::no_context);
        else if (via && via != *target) s.set_skip(Skip::not_tracer_call);  // one entry per binary
        else via = *target, d.found().mcount_frames.emplace_back(at, frame.code());
        return;
      }
      frame.step(w);
      at += 4;
    }
  }

  // A prologue followed up to the site: sp and where ra was saved, relative to the entry's sp.
  struct Prologue {
    i64 sp = 0;
    std::optional<i64> ra;
    bool known = true;
    void step(u16 c) {
      if (rv::is_c_addi16sp(c)) sp += rv::c_addi16sp_imm(c);
      else if (rv::is_c_addi_sp(c)) sp += rv::c_addi_imm(c);
      else if (rv::is_c_sdsp_ra(c)) ra = sp + static_cast<i64>(rv::c_sdsp_uimm(c));
      else known &= !rv::ends_prologue(c);
    }
    void step(u32 w) {
      if (rv::is_addi_sp_sp(w)) sp += rv::i_imm(w);
      else if (rv::is_sd_ra_sp(w)) ra = sp + rv::s_imm(w);
      else known &= !rv::ends_prologue(w);
    }
    // shim::mcount_frame's encoding: 0 where unknown (also a frame that did not move sp, or ra saved
    // outside it, or not saved).
    u32 code() const {
      if (!known || !ra || sp >= 0 || -sp % 8 || *ra % 8 || *ra < sp || *ra >= 0 || -sp / 8 > 0xffff) return 0;
      return static_cast<u32>(-sp / 8) | static_cast<u32>((*ra - sp) / 8) << 16;
    }
  };

  // Whether [from, to) holds only nops: c.nop halfwords, or 4-byte nops (no C extension).
  static bool nops(Discoverer& d, u64 from, u64 to) {
    for (u64 at = from; at < to;) {
      u32 w = 0;
      auto h = d.code(at, 2);
      if (h.size() == 2 && (h[0] | h[1] << 8) == rv::c_nop) at += 2;
      else if (at + 4 <= to && d.word(at, w) && w == rv::nop) at += 4;
      else return false;
    }
    return true;
  }
};

}  // namespace

const IsaSites& riscv64_sites() {
  static const Riscv64Sites s;
  return s;
}

}  // namespace prepatch::discovery
