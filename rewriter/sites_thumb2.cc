// ARM32 site discovery (rewriter/discoverer.h): gcc -pg (`push {lr}` then `bl __gnu_mcount_nc`), in
// Thumb-2 and ARM-state (-marm) functions, and Thumb-2 -fpatchable-function-entry pads of 3 nops or
// more. ARM-state functions' pads are listed as skipped.
#include <algorithm>
#include <optional>

#include "arch/isa.h"
#include "arch/thumb2.h"
#include "rewriter/discoverer.h"

namespace prepatch::discovery {
namespace {

namespace t2 = arch::thumb2;

class Thumb2Sites final : public IsaSites {
 public:
  u64 code_address(u64 value) const override { return value & ~u64{1}; }
  bool other_state(u64 value) const override { return !(value & 1); }  // an ARM-state function

  // ARM-state entries of 3 or 4 words after a 20-byte header: any word may start one. An entry that
  // Thumb code calls with `bl` starts with a Thumb stub, `bx pc` and a halfword, which `bl` targets.
  void plt(Discoverer& d, const elf::Section& s) const override {
    auto b = d.elf().section_data(s);
    for (u64 at = 0; at + 12 <= b.size(); at += 4)
      if (auto slot = arch::arm_plt_slot(b.subspan(at, std::min<u64>(16, b.size() - at)), s.addr + at))
        if (auto k = d.slots().find(*slot)) {
          // Its 12 bytes (and its Thumb stub's 4 before), which a branch island may take over.
          const bool thumb_stub = at >= 4 && (b[at - 4] | b[at - 3] << 8) == t2::bx_pc;
          const u64 start = s.addr + at - (thumb_stub ? 4 : 0);
          d.direct().add(s.addr + at, *k);
          d.mcount_region(s.addr + at, start, thumb_stub ? 16 : 12, *k);
          if (thumb_stub) d.direct().add(start, *k), d.mcount_region(start, start, 16, *k);
        }
  }

  // ld's ARM32 stubs (arch/thumb2.h linker_stub): a call enters one in ARM state after a `blx`.
  std::optional<Stub> stub(const Discoverer& d, u64 target, bool arm) const override {
    return t2::linker_stub(target, arm, [&](u64 at, u32& w) { return d.word(at, w); });
  }

  // -fpatchable-function-entry=N[,M]: M 16-bit `nop`s before the function symbol, N-M after it. As
  // for -pg, the caller's lr must be saved before a `bl` takes its place, so the first nop at the
  // entry becomes `push {lr}` for good and the next two halfwords are the site, toggled between a Thumb
  // `bl` to the shim's trampoline (which pops it, as __gnu_mcount_nc does) and `pop {lr}`: N-M >= 3.
  // Two nops cannot hold a 32-bit call and what keeps lr. ARM-state functions' pads are not prepared
  // (the ARM-state -pg form's `mov ip, pc` would overwrite ip, a nested function's static chain there).
  void patchable(Discoverer& d, u64 addr) const override {
    constexpr u64 pad_reach = 64;
    addr &= ~u64{1};
    Site s(addr, SiteKind::patchable, Source::patchable_entries);
    s.len = 4;
    if (!d.executable(addr, 6)) {
      s.set_skip(Skip::not_in_text);
      return d.push_record_site(s);
    }
    // The M nops before the symbol never run here: gcc 12 has them assembled before its switch to
    // Thumb, as ARM-state nop words where they are aligned (so M = 9 takes 36 bytes: the entry is
    // looked for within 64, M up to 16).
    // Prepared already (`prepatch sites` on an output): `push {lr}`, then the site, `pop {lr}` or `bl`.
    const auto prepared = [&](u64 entry) {
      auto b = d.code(entry + 2, 4);
      return halfword(d, entry) == t2::push_lr && b.size() == 4 &&
             (((b[0] | b[1] << 8) == t2::pop_lr[0] && (b[2] | b[3] << 8) == t2::pop_lr[1]) || arch::bl_target(d.isa(), b, entry + 2));
    };
    auto pad_entry = d.pad_entry(
        addr, pad_reach,
        [&](u64 at, u64) {
          u32 arm = 0;
          return halfword(d, at) == t2::nop ? 2 : at % 4 == 0 && d.word(at, arm) && arm == t2::arm_nop ? 4 : 0;
        },
        6, prepared);
    if (!pad_entry)  // an output whose pre-entry nops hold a branch island (Discovery::pre_entry)
      if (const Func* f = d.func_at(addr) ? nullptr : d.func_at_or_after(addr, pad_reach); f && prepared(f->addr)) pad_entry = f->addr;
    if (!pad_entry) {
      s.set_skip(Skip::unrecognized);
      return d.push_record_site(s);
    }
    const u64 entry = *pad_entry;
    if (const Func* f = d.func_at(entry); f && (f->name & other_bit)) {
      s.set_skip(Skip::unsupported_form);
      return d.push_record_site(s);
    }
    s.addr = entry + 2;
    if (prepared(entry)) return d.push_record_site(s);
    u64 nops = 0;
    while (nops < 3 && halfword(d, entry + 2 * nops) == t2::nop) nops++;
    if (nops < 3) {
      s.addr = entry;
      s.set_skip(nops == 0 ? Skip::unrecognized : Skip::pad_too_short);
    }
    if (s.prepared()) d.note_pre_entry(addr, entry);
    d.push_record_site(s);
  }

  // gcc -pg: after the function's own pushes, `push {lr}` and then the 32-bit `bl __gnu_mcount_nc`
  // (static: a Thumb callee) or `blx` to its ARM-state PLT entry, often on a 2-byte boundary. The site
  // is that call, toggled between a Thumb `bl` to the shim and `pop {lr}` (`ldr.w lr, [sp], #4`:
  // __gnu_mcount_nc pops what was pushed, so the off form must too); the push stays.
  void scan_all(Discoverer& d) const override {
    d.for_each_unscanned([&](const Func& f, std::span<const u8> rest) { scan(d, f, rest); });
  }

 private:
  static u32 halfword(Discoverer& d, u64 at) {
    auto h = d.code(at, 2);
    return h.size() == 2 ? static_cast<u32>(h[0] | h[1] << 8) : ~u32{0};
  }

  // The prologue before the site is followed too (Discovery::mcount_frames), for the graph tracer: its
  // pushes and subtractions from sp, and where it stored lr (arch/thumb2.h prologue_step), up to the
  // site's own `push {lr}`. Any other instruction leaves the site's frame unknown.
  void scan(Discoverer& d, const Func& f, std::span<const u8>) const {
    const u64 end = f.addr + std::min<u64>({f.size ? f.size : word_prologue_scan_bytes, word_prologue_scan_bytes, d.code_size(f.addr)});
    if (f.name & other_bit) return scan_arm_state(d, f, end);
    u16 before = 0;  // the instruction before, when 16-bit
    Prologue frame, until_before;  // (until_before: the frame before the last 16-bit instruction)
    for (u64 at = f.addr; at + 2 <= end;) {
      auto h = d.code(at, 2);
      if (h.size() != 2) return;
      const u16 first = static_cast<u16>(h[0] | h[1] << 8);
      if (!t2::is_32bit(first)) {
        before = first;
        until_before = frame;
        frame.step(t2::prologue_step(first));
        at += 2;
        continue;
      }
      if (at + 4 > end) return;
      auto b = d.code(at, 4);
      if (b.size() != 4) return;
      const u16 second = static_cast<u16>(b[2] | b[3] << 8);
      if (t2::is_bl_or_blx(first, second)) {
        const auto target = arch::bl_target(d.isa(), b, at);  // Capstone
        const bool blx = !(second & 0x1000);                  // into ARM state
        if (!target || !d.mcount_call(*target, blx)) return;  // the first call is an ordinary one: no -pg site
        Site& s = d.add_symbol_site(at, SiteKind::mcount, 4, f);
        if (before != t2::push_lr) s.set_skip(Skip::no_context);
        else d.found().mcount_frames.emplace_back(at, until_before.code());  // (the frame before the site's own push)
        d.note_mcount_call(*target, s);
        return;
      }
      frame.step(t2::prologue_step(first, second));
      before = 0;
      at += 4;
    }
  }

  // ARM-state (-marm) -pg: `push {lr}` (`str lr, [sp, #-4]!`) and then `bl __gnu_mcount_nc` (or `blx`
  // to a Thumb one), whole words, after the function's own prologue. The site is both words, 8 bytes
  // from the push (arch/thumb2.h): `mov ip, pc`, then `nop` or `b` to the shim's ARM-state entry. Its
  // prologue is followed as a Thumb one's (arch/thumb2.h arm_prologue_step), for the graph tracer.
  static void scan_arm_state(Discoverer& d, const Func& f, u64 end) {
    u32 before = 0;
    Prologue frame, until_before;
    for (u64 at = f.addr; at % 4 == 0 && at + 4 <= end; at += 4) {
      u32 w = 0, next = 0;
      if (!d.word(at, w)) return;
      // Prepared already (`prepatch sites` on an output): `mov ip, pc`, then `nop` or a `b`.
      if (w == t2::arm_mov_ip_pc && d.word(at + 4, next) && (next == t2::arm_nop || (next & 0xff00'0000) == 0xea00'0000)) {
        d.add_symbol_site(at, SiteKind::mcount, t2::arm_site_len, f);
        d.found().mcount_frames.emplace_back(at, frame.code());
        return;
      }
      const bool bl = (w & 0xff00'0000) == 0xeb00'0000, blx = (w & 0xfe00'0000) == 0xfa00'0000;
      if (bl || blx) {
        const i64 imm = static_cast<i64>(static_cast<i32>(w << 8) >> 6);  // imm24 * 4, sign-extended
        const u64 target = at + 8 + static_cast<u64>(imm) + (blx ? (w >> 23) & 2 : 0);
        if (!d.mcount_call(target, bl)) return;  // the first call is an ordinary one: no -pg site (bl: stays in ARM state)
        if (before != t2::arm_push_lr) {
          d.add_symbol_site(at, SiteKind::mcount, 4, f).set_skip(Skip::no_context);
          return;
        }
        Site& s = d.add_symbol_site(at - 4, SiteKind::mcount, t2::arm_site_len, f);
        d.found().mcount_frames.emplace_back(at - 4, until_before.code());  // (the frame before the site's own push)
        d.note_mcount_call(target, s, true);
        return;
      }
      if ((w & 0x0e00'0000) == 0x0a00'0000 || (w & 0x0ff0'00f0) == 0x0120'0030) return;  // a branch, a conditional call or blx rm first
      before = w;
      until_before = frame;
      frame.step(t2::arm_prologue_step(w));
    }
  }

  // A prologue followed up to the site: sp and where lr was stored, in bytes relative to the entry's sp.
  struct Prologue {
    i64 sp = 0;
    std::optional<i64> lr;
    bool known = true;
    void step(const t2::PrologueStep& s) {
      known &= s.known;
      sp -= s.down;
      if (s.lr) lr = sp + s.lr_at;
    }
    // shim::thumb_frame's encoding, in words from the word the site's `push {lr}` stores (at sp - 4):
    // bits 0-15 how far above it the entry's sp was, bits 16-31 where lr was stored (0: it was not, lr
    // holds the return address); 0 where unknown.
    u32 code() const {
      const i64 pushed = sp - 4;
      if (!known || (lr && (*lr < sp || *lr >= 0 || *lr % 4))) return 0;
      const i64 entry = -pushed / 4, at = lr ? (*lr - pushed) / 4 : 0;
      if (entry > 0xffff || at > 0xffff) return 0;
      return static_cast<u32>(entry) | static_cast<u32>(at) << 16;
    }
  };
};

}  // namespace

const IsaSites& thumb2_sites() {
  static const Thumb2Sites s;
  return s;
}

}  // namespace prepatch::discovery
