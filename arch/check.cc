#include "arch/check.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>

#include "arch/thumb2.h"

namespace prepatch::arch {

namespace {

using ByteVec = std::vector<u8>;

// A store as another core may see it: all of it or none of it.
struct Unit {
  unsigned off;  // in the window
  ByteVec bytes;
};

struct Epoch {
  std::vector<ByteVec> views;  // distinct; the first is the state at the epoch's start
  std::string label;          // which steps led here
};

// One instruction of a form: where it starts in the window and its bytes.
struct Insn {
  unsigned off;
  ByteVec bytes;
  std::string text;
};

class Checker {
 public:
  Checker(Isa isa, const Plan& plan, const SiteForm& site, bool enable)
      : isa_(isa), info_(isa_info(isa)), plan_(plan), site_(site), arm_(site.arm_state),
        fetch_atomic_(arm_ ? 4 : info_.fetch_atomic), insn_align_(arm_ ? 4 : info_.insn_align), cmodx_(info_.cmodx || arm_) {
    base_ = site.addr - site.context.size();
    toggle_ = static_cast<unsigned>(site.context.size());
    len_ = static_cast<unsigned>(site.on.size());
    const ByteVec& ctx_off = site.context_off.empty() ? site.context : site.context_off;
    old_ = enable ? ctx_off : site.context;
    new_ = enable ? site.context : ctx_off;
    const ByteVec& from = enable ? site.off : site.on;
    const ByteVec& to = enable ? site.on : site.off;
    old_.insert(old_.end(), from.begin(), from.end());
    new_.insert(new_.end(), to.begin(), to.end());
    const Bytes t = trap_bytes(isa, &plan);
    trap_.assign(t.data, t.data + t.size);
    trap_illegal_ = !trap_.empty() && !dec(trap_, 0).valid;
  }

  CheckResult run() {
    if (!decode_form(old_, old_insns_, "old") || !decode_form(new_, new_insns_, "new")) return result_;
    if (!record_epochs()) return result_;
    for (const Epoch& e : epochs_) result_.views += e.views.size();
    std::vector<Step_> path;
    result_.ok = explore(0, 0, true, true, path);
    return result_;
  }

 private:
  struct Step_ {
    size_t epoch, view;
    unsigned off;
    std::string what;
  };

  bool fail(const std::string& why) {
    result_.ok = false;
    result_.counter_example = why;
    return false;
  }

  bool decode_form(const ByteVec& w, std::vector<Insn>& out, const char* which) {
    for (unsigned o = 0; o < w.size();) {
      if (o == toggle_ && site_.trap && w.size() >= o + len_ && !trap_.empty() && std::equal(trap_.begin(), trap_.end(), w.begin() + o)) {
        out.push_back({o, ByteVec(w.begin() + o, w.begin() + o + len_), "trap (the call, emulated by the handler)"});  // (its tail never runs)
        o += len_;
        continue;
      }
      Decoded d = dec(std::span(w).subspan(o), base_ + o);
      if (d.len == 0 || !d.valid) return fail(std::string("the ") + which + " form does not decode at +" + std::to_string(o) + ": " + hex_bytes(w));
      out.push_back({o, ByteVec(w.begin() + o, w.begin() + o + d.len), d.text});
      o += d.len;
    }
    return true;
  }

  // Runs the plan as the shim does (phase by phase through run_step) and turns its stores into epochs.
  bool record_epochs() {
    struct Recorder {
      Checker& c;
      std::vector<Unit> units;
      bool outside = false;
      void store(u64 addr, const u8* b, unsigned width) {
        if (addr < c.base_ || addr + width > c.base_ + c.old_.size()) {
          outside = true;
          return;
        }
        const unsigned off = static_cast<unsigned>(addr - c.base_);
        if (width <= c.fetch_atomic_ && addr % width == 0) {
          units.push_back({off, ByteVec(b, b + width)});
        } else {
          for (unsigned i = 0; i < width; i++) units.push_back({off + i, ByteVec{b[i]}});
        }
      }
    };
    const Bytes trap = trap_bytes(isa_, &plan_);
    ByteVec state = old_;
    epochs_.push_back({{state}, "before the plan"});
    unsigned first_step = 0;
    for (unsigned n = 0;; n++) {
      Phase ph = phase(plan_, n);
      if (ph.empty()) break;
      Recorder rec{*this, {}, false};
      for (const Step* s = ph.begin; s != ph.end; s++) {
        const unsigned len = s->len ? s->len : len_ - static_cast<unsigned>(s->offset);
        if (s->width == 0 || len % s->width != 0) return fail("step " + std::to_string(s - plan_.steps + 1) + ": length is not a multiple of the store width");
        if (s->from == From::trap && (s->offset < 0 || s->offset + len > trap.size))
          return fail("step " + std::to_string(s - plan_.steps + 1) + ": writes past the " + std::to_string(trap.size) + "-byte trap of " + std::string(info_.name));
        run_step(*s, site_.addr, new_.data() + toggle_, len_, trap, rec);
      }
      if (rec.outside) return fail("the plan writes outside the site");
      if (rec.units.size() > 20) return fail("too many stores between two syncs to enumerate");
      // AArch64 CMODX, ARMv7's list in ARM state: each store must swap listed instructions (the state
      // before it, then after).
      if (cmodx_) {
        ByteVec s = state;
        for (const Unit& u : rec.units) {
          ByteVec t = s;
          std::copy(u.bytes.begin(), u.bytes.end(), t.begin() + u.off);
          const unsigned at = u.off / insn_align_ * insn_align_;
          Decoded before = dec(std::span(s).subspan(at), base_ + at);
          Decoded after = dec(std::span(t).subspan(at), base_ + at);
          if (s != t && !(before.cmodx && after.cmodx))
            return fail("a store swaps `" + before.text + "` for `" + after.text + "` at +" + std::to_string(at) +
                        " while other cores may execute it: not both on the " + (arm_ ? "ARMv7 A3.5.4 list" : "ARMv8 CMODX list"));
          s = std::move(t);
        }
      }
      Epoch e;
      const unsigned last_step = static_cast<unsigned>(ph.end - plan_.steps);
      e.label = first_step + 1 == last_step ? "during step " + std::to_string(last_step) : "during steps " + std::to_string(first_step + 1) + "-" + std::to_string(last_step);
      for (u64 mask = 0; mask < (u64{1} << rec.units.size()); mask++) {
        ByteVec v = state;
        for (size_t i = 0; i < rec.units.size(); i++)
          if (mask >> i & 1) std::copy(rec.units[i].bytes.begin(), rec.units[i].bytes.end(), v.begin() + rec.units[i].off);
        if (std::find(e.views.begin(), e.views.end(), v) == e.views.end()) e.views.push_back(std::move(v));
      }
      for (const Unit& u : rec.units) std::copy(u.bytes.begin(), u.bytes.end(), state.begin() + u.off);
      epochs_.push_back(std::move(e));
      if (!ph.sync) break;  // nothing after an unsynchronized tail: its views stay possible for ever
      epochs_.push_back({{state}, "after the sync ending step " + std::to_string(last_step + 1)});
      first_step = last_step + 1;
    }
    if (state != new_) return fail("after the plan the site holds " + hex_bytes(state) + ", not the target form " + hex_bytes(new_));
    return true;
  }

  const Insn* insn_at(const std::vector<Insn>& form, unsigned off) const {
    for (const Insn& i : form)
      if (i.off == off) return &i;
    return nullptr;
  }
  const Insn* insn_over(const std::vector<Insn>& form, unsigned off) const {
    for (const Insn& i : form)
      if (i.off <= off && off < i.off + i.bytes.size()) return &i;
    return nullptr;
  }

  // A thread at window offset `o`, fetching from epoch `e` or later, having run a prefix of the old
  // form (old_ok) and/or of the new form (new_ok). True when every continuation is safe.
  bool explore(size_t e, unsigned o, bool old_ok, bool new_ok, std::vector<Step_>& path) {
    if (!visited_.insert({e, o, old_ok, new_ok}).second) return true;
    result_.runs++;
    // Latest epochs first: a counter-example then shows the classic story (a thread that ran part
    // of the old form and resumes in the finished new one) before the torn views that also break it.
    for (size_t e2 = epochs_.size(); e2-- > e;) {
      for (size_t vi = 0; vi < epochs_[e2].views.size(); vi++) {
        const ByteVec& v = epochs_[e2].views[vi];
        Decoded d = dec(std::span(v).subspan(o), base_ + o);
        Step_ st{e2, vi, o, ""};
        unsigned next;
        bool o2 = old_ok, n2 = new_ok;
        if (is_plan_trap(v, o, d)) {
          st.what = "`" + d.text + "`: trap, the handler runs the new instruction";
          o2 = false;  // the handler emulates the new form's toggled instruction
          if (!new_ok) {
            st.what += ", after instructions of the old form: a mix of the two forms";
            return counter(path, st);
          }
          next = toggle_ + len_;
        } else if (d.len != 0 && d.valid && d.trap) {
          st.what = "`" + d.text + "`: a trap the shim's handler does not resolve (not the plan's, or not at the toggled instruction)";
          return counter(path, st);
        } else if (d.len == 0 || !d.valid) {
          st.what = d.len == 0 ? "no complete instruction (" + hex_bytes(ByteVec(v.begin() + o, v.end())) + ")" : "`" + d.text + "`: undefined instruction";
          if (!insn_at(old_insns_, o) && !insn_at(new_insns_, o)) st.what += explain(o, {}, nullptr, nullptr);
          return counter(path, st);
        } else {
          ByteVec b(v.begin() + o, v.begin() + o + d.len);
          const Insn* oi = insn_at(old_insns_, o);
          const Insn* ni = insn_at(new_insns_, o);
          o2 = old_ok && oi && oi->bytes == b;
          n2 = new_ok && ni && ni->bytes == b;
          st.what = "`" + d.text + "`";
          if (!o2 && !n2) {
            st.what += explain(o, b, oi, ni);
            return counter(path, st);
          }
          next = o + d.len;
        }
        if (next >= old_.size()) continue;  // left the site: this run is complete and safe
        path.push_back(st);
        bool ok = explore(e2, next, o2, n2, path);
        path.pop_back();
        if (!ok) return false;
      }
    }
    return true;
  }

  // The plan's trap at the toggled instruction: the handler resolves it. A plan whose trap is an
  // illegal instruction has a SIGILL handler, which resolves any illegal instruction there.
  bool is_plan_trap(const ByteVec& v, unsigned o, const Decoded& d) const {
    if (!(plan_.leaves_trap || site_.trap) || o != toggle_ || trap_.empty()) return false;
    if (v.size() - o >= trap_.size() && std::equal(trap_.begin(), trap_.end(), v.begin() + o)) return true;
    return trap_illegal_ && d.len != 0 && !d.valid;
  }

  std::string explain(unsigned o, const ByteVec& b, const Insn* oi, const Insn* ni) const {
    if (ni && ni->bytes == b)  // a new-form instruction after old-form ones
      return ": a mix of the two forms: the instructions before it ran from the old form, so the new form's "
             "earlier instructions never ran (a call whose setup never ran)";
    if (oi && oi->bytes == b) return ": a mix of the two forms: the instructions before it ran from the new form, this one is the old form's";
    if (o > 0) {  // no instruction of a form starts here: the thread resumed inside one
      if (const Insn* in = ni ? nullptr : insn_over(new_insns_, o))
        return ": the thread resumes at +" + std::to_string(o) + ", inside the new form's `" + in->text + "`";
      if (const Insn* in = oi ? nullptr : insn_over(old_insns_, o))
        return ": the thread resumes at +" + std::to_string(o) + ", inside the old form's `" + in->text + "`";
    }
    return ": a hybrid of the old and new bytes, neither `" + (oi ? oi->text : std::string("-")) + "` nor `" + (ni ? ni->text : std::string("-")) + "`";
  }

  bool counter(const std::vector<Step_>& path, const Step_& last) {
    std::string s = "counter-example (" + std::string(info_.name) + ", site at " + hex(site_.addr) + "):";
    auto line = [&](const Step_& st) {
      const Epoch& ep = epochs_[st.epoch];
      s += "\n  " + ep.label + ", view [" + hex_bytes(ep.views[st.view]) + "]: at +" + std::to_string(st.off) + " " + st.what;
    };
    for (const Step_& st : path) line(st);
    line(last);
    return fail(s);
  }

  // The ISA's decoder, or ARM state's for an ARM32 ARM-state site.
  Decoded dec(std::span<const u8> b, u64 addr) const { return arm_ ? decode_arm_state(b, addr) : decode(isa_, b, addr); }

  Isa isa_;
  const IsaInfo& info_;
  const Plan& plan_;
  const SiteForm& site_;
  const bool arm_;
  const unsigned fetch_atomic_, insn_align_;
  const bool cmodx_;
  u64 base_ = 0;
  unsigned toggle_ = 0, len_ = 0;
  ByteVec old_, new_, trap_;
  bool trap_illegal_ = false;
  std::vector<Insn> old_insns_, new_insns_;
  std::vector<Epoch> epochs_;
  std::set<std::tuple<size_t, unsigned, bool, bool>> visited_;
  CheckResult result_;
};

}  // namespace

CheckResult check_plan(Isa isa, const Plan& plan, const SiteForm& site, bool enable) {
  return Checker(isa, plan, site, enable).run();
}

std::vector<i64> sweep_distances(Isa isa) {
  const IsaInfo& info = isa_info(isa);
  std::vector<i64> d = {0x40, -0x40, 0x1000, -0x1000, 0x7ff0, 0x12340, -0x54320, 0xfe000};
  // A spread of low bits, at the ISA's alignment.
  for (i64 k = 0; k < 32; k++) d.push_back((0x10000 + k * 0x1234 + (k << 12)) * (k % 2 ? 1 : -1));
  for (i64& x : d) x -= x % static_cast<i64>(std::max(info.insn_align, 2u));
  return d;
}

bool has_site(Isa isa, SiteKind kind, unsigned len, u64 addr) {
  return !(isa == Isa::thumb2 && len == thumb2::arm_site_len && (kind != SiteKind::mcount || addr % 4 != 0));
}

SweepResult check_shipped_plans(Isa isa) {
  const IsaInfo& info = isa_info(isa);
  SweepResult r;
  const u64 line = 0x10000;  // any 64-byte aligned address; the site's offset in the line varies
  for (SiteKind kind : info.kinds)
    for (unsigned len : site_lengths(isa))
      for (u64 off = 0; off < 64; off += info.insn_align)
        for (i64 dist : sweep_distances(isa))
          for (bool enable : {true, false}) {
            const u64 addr = line * 64 + off;
            if (!has_site(isa, kind, len, addr)) continue;
            auto site = site_form(isa, kind, addr, addr + static_cast<u64>(dist), len);
            if (!site) {
              if (r.failures.size() < 5) r.failures.push_back(std::string(info.name) + " " + std::string(kind_name(kind)) + ": no site form at " + hex(addr));
              continue;
            }
            CheckResult c = check_plan(isa, plan_for(isa, addr, len), *site, enable);
            r.checks++;
            r.views += c.views;
            r.runs += c.runs;
            if (!c.ok && r.failures.size() < 5)
              r.failures.push_back(std::string(info.name) + " " + std::string(kind_name(kind)) + " len " + std::to_string(len) + " at " + hex(addr) +
                                   (enable ? " on: " : " off: ") + c.counter_example);
          }
  // Trap sites (no trampoline within reach), where the ISA has them: every kind, length and alignment, both ways.
  for (SiteKind kind : info.kinds)
    for (unsigned len : site_lengths(isa))
      for (u64 off = 0; off < 64; off += info.insn_align)
        for (bool enable : {true, false}) {
          const u64 addr = line * 64 + off;
          auto site = has_site(isa, kind, len, addr) ? trap_site_form(isa, kind, addr, len) : std::nullopt;
          if (!site) continue;
          CheckResult c = check_plan(isa, plan_for(isa, addr, len), *site, enable);
          r.checks++, r.trap_checks++;
          r.views += c.views;
          r.runs += c.runs;
          if (!c.ok && r.failures.size() < 5)
            r.failures.push_back(std::string(info.name) + " " + std::string(kind_name(kind)) + " trap site len " + std::to_string(len) + " at " + hex(addr) +
                                 (enable ? " on: " : " off: ") + c.counter_example);
        }
  return r;
}

}  // namespace prepatch::arch
