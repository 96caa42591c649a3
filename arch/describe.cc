#include "arch/describe.h"

#include <algorithm>
#include <cstdio>

#include "arch/counter_examples.h"

namespace prepatch::arch {

namespace {

// The instructions `b` holds from its start, "; "-separated; undecodable bytes shown as such. What
// follows the plan's trap is never fetched, so it is not shown.
std::string instructions(Isa isa, const std::vector<u8>& b, u64 addr, Bytes trap, bool arm_state) {
  const auto decode = [&](std::span<const u8> at, u64 a) { return arm_state ? decode_arm_state(at, a) : arch::decode(isa, at, a); };
  std::string s;
  if (trap.size && b.size() >= trap.size && std::equal(trap.data, trap.data + trap.size, b.begin()))
    return decode(b, addr).text + " (trap: the shim's handler resolves it)";
  for (size_t o = 0; o < b.size();) {
    Decoded d = decode(std::span(b).subspan(o), addr + o);
    if (!s.empty()) s += "; ";
    if (d.len == 0) {
      s += "(incomplete)";
      break;
    }
    s += d.text + (d.valid ? "" : " (undefined)");
    o += d.len;
  }
  return s;
}

std::string pad(std::string s, size_t n) {
  if (s.size() < n) s.append(n - s.size(), ' ');
  return s;
}

std::string step_text(const Step& s, unsigned insn_len) {
  if (s.op == Step::sync) return "sync";
  const unsigned len = s.len ? s.len : insn_len - static_cast<unsigned>(s.offset);
  std::string what = s.from == From::trap ? "trap" : "new";
  std::string range = len == 1 ? "byte " + std::to_string(s.offset) : "bytes " + std::to_string(s.offset) + ".." + std::to_string(s.offset + static_cast<int>(len) - 1);
  return "write " + what + " " + range + " (" + std::to_string(len / s.width) + " x " + std::to_string(s.width) + "-byte store" + (len / s.width == 1 ? "" : "s") + ")";
}

}  // namespace

u64 example_site_address(Isa isa, unsigned length) {
  if (isa == Isa::thumb2 && length == 8) return 0x401008;
  switch (isa) {
    case Isa::x86_64: return 0x401006;  // 5 or 6 bytes from here cross 0x401008
    case Isa::aarch64:
    case Isa::ppc64le: return 0x401004;
    case Isa::riscv64:
    case Isa::thumb2: return 0x401006;  // 2-byte aligned: the 32-bit instruction crosses 0x401008
  }
  return 0x401000;
}

std::string describe_plan(Isa isa, SiteKind kind, const Plan& plan, const SiteForm& site, bool enable, bool with_rule) {
  const IsaInfo& info = isa_info(isa);
  std::string s;
  s += std::string(info.name) + (site.arm_state ? " ARM-state " : " ") + std::string(kind_name(kind)) + " site, toggled instruction at " + hex(site.addr) + " (" +
       std::to_string(site.on.size()) + " bytes), switched " + (enable ? "on" : "off") + "\n";
  s += "plan \"" + std::string(plan.name) + "\": " + plan.summary + " (the same plan switches it " + (enable ? "off" : "on") + ")\n";
  if (!site.context_text.empty()) s += "context before it, never written: " + site.context_text + "\n";
  if (with_rule && site.arm_state) {
    s += "rule: ARMv7 ARM A3.5.4: another core may run an ARM-state word while it is swapped only between B, BL, NOP, BKPT, "
         "SVC, HVC and SMC (the checker holds every store to that list); then a cacheflush and a sync of the other cores\n";
    s += "fetch atomicity assumed: an aligned 32-bit ARM-state instruction is fetched whole (ARMv7 ARM A3.5.3)\n";
  } else if (with_rule) {
    s += "rule: " + std::string(info.rule) + "\n";
    s += "fetch atomicity assumed: " + std::string(info.atomicity) + "\n";
  }
  s += "\n";

  std::vector<u8> state = enable ? site.off : site.on;
  const std::vector<u8>& target = enable ? site.on : site.off;
  const Bytes trap = plan.leaves_trap ? trap_bytes(isa, &plan) : Bytes{nullptr, 0};
  const size_t width = std::max<size_t>(20, 3 * state.size() + 1);
  auto row = [&](const std::string& label) {
    return "  " + pad(label, 47) + pad(hex_bytes(state), width) + instructions(isa, state, site.addr, trap, site.arm_state) + "\n";
  };
  s += "  " + pad("step", 47) + pad("bytes at " + hex(site.addr), width) + "instruction(s)\n";
  s += row("   before");
  struct Apply {
    std::vector<u8>& state;
    u64 at;
    void store(u64 addr, const u8* b, unsigned width) {
      for (unsigned i = 0; i < width; i++)
        if (addr + i >= at && addr + i < at + state.size()) state[addr + i - at] = b[i];
    }
  } mem{state, site.addr};
  for (unsigned i = 0; i < plan.count; i++) {
    const Step& st = plan.steps[i];
    char num[8];
    std::snprintf(num, sizeof num, "%2u. ", i + 1);
    std::string label = num + step_text(st, static_cast<unsigned>(target.size()));
    if (st.op == Step::sync) {
      s += "  " + label + "\n";
      continue;
    }
    run_step(st, site.addr, target.data(), static_cast<unsigned>(target.size()), trap_bytes(isa, &plan), mem);
    s += row(label);
  }
  CheckResult c = check_plan(isa, plan, site, enable);
  s += "\n";
  if (c.ok)
    s += "checker: safe at this site: " + std::to_string(c.views) + " views, " + std::to_string(c.runs) +
         " thread positions (a thread may stop and resume at every instruction boundary)\n";
  else
    s += "checker: REJECTED\n" + c.counter_example + "\n";
  return s;
}

std::string protocols_markdown() {
  std::string s;
  s += "<!-- generated by `prepatch plan --markdown` from arch/plan.h and the checker; do not edit by hand:\n"
       "     scripts/gen-protocols.sh rewrites it, and a test fails when it is stale -->\n";
  for (Isa isa : all_isas) {
    const IsaInfo& info = isa_info(isa);
    s += "\n## " + std::string(info.name) + "\n\n";
    s += "- **Rule relied on:** " + std::string(info.rule) + ".\n";
    s += "- **Fetch atomicity assumed:** " + std::string(info.atomicity) + ".\n";
    s += "- **Plans shipped:** ";
    if (isa == Isa::riscv64)
      s += "`word` where the toggled instruction is 4-byte aligned, `halfword-trap` where it is only 2-byte aligned.\n";
    else if (isa == Isa::thumb2)
      s += "`halfword-trap` for Thumb sites, `second-word` for ARM-state (`-marm`) `-pg` sites, whose two words swap only "
           "`nop` and `b`, both on ARMv7's list (A3.5.4), which the checker enforces for them.\n";
    else
      s += "`" + std::string(plan_for(isa, 0, 0).name) + "` for every site.\n";
    SweepResult r = check_shipped_plans(isa);
    std::string kinds;
    for (SiteKind k : info.kinds) kinds += (kinds.empty() ? "" : ", ") + std::string(kind_name(k));
    s += "- **Proved:** " + std::to_string(r.checks) + " checks (site kinds " + kinds + "; every " + std::to_string(info.insn_align) +
         "-byte alignment in a 64-byte line; " + (isa == Isa::thumb2 ? "ARM-state mcount sites at every 4-byte alignment; " : "") + std::to_string(sweep_distances(isa).size()) +
         " trampoline distances; on and off" + (r.trap_checks ? "; and " + std::to_string(r.trap_checks) + " of them as trap sites" : std::string()) +
         "): " + std::to_string(r.views) + " views, " + std::to_string(r.runs) + " thread positions, " +
         (r.failures.empty() ? "no counter-example" : std::to_string(r.failures.size()) + " FAILURES") + ".\n";
    // RISC-V ships two plans, by alignment: show a 2-byte aligned site and a 4-byte aligned one;
    // ARM32 two, by state: a Thumb site and an ARM-state one.
    std::vector<std::pair<u64, unsigned>> shown = {{example_site_address(isa), site_lengths(isa).front()}};
    if (isa == Isa::riscv64) shown.emplace_back(example_site_address(isa) + 2, site_lengths(isa).front());
    if (isa == Isa::thumb2) shown.emplace_back(example_site_address(isa, site_lengths(isa).back()), site_lengths(isa).back());
    for (const auto& [addr, len] : shown) {
      const SiteKind kind = info.kinds.front();
      auto site = site_form(isa, kind, addr, addr + 0x1000, len);
      if (!site) continue;
      s += "\n```\n" + describe_plan(isa, kind, plan_for(isa, addr, len), *site, true, false) + "```\n";
    }
    // A trap site (no trampoline within reach): the same plan writes the ISA's trap, which stays.
    if (auto trap = trap_site_form(isa, info.kinds.front(), example_site_address(isa), site_lengths(isa).front()))
      s += "\nAs a trap site (README, \"Trap sites\"):\n\n```\n" +
           describe_plan(isa, info.kinds.front(), plan_for(isa, trap->addr, static_cast<unsigned>(trap->off.size())), *trap, true, false) + "```\n";
  }
  s += "\n## Rejected: the seeds' counter-examples\n\nEach is a test (tests/plan_test.cc); the checker's output:\n";
  for (const CounterExample& c : seed_counter_examples()) {
    CheckResult r = check_plan(c.isa, c.plan, c.site, c.enable);
    s += "\n### " + std::string(c.id) + "\n\n" + std::string(c.what) + ".\n\n```\n" + (r.ok ? "NOT REJECTED" : r.counter_example) + "\n```\n";
  }
  return s;
}

}  // namespace prepatch::arch
