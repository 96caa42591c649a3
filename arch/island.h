// Branch islands (veneers): a few instructions the preparer places within a site's reach when the
// shim's trampoline for it lies beyond what the site's call form reaches (a large .bss between the
// text and the shim, which goes after every segment). The site then calls the island, which jumps on
// to the trampoline. Each ISA's island is encoded in its own header (aarch64.h, ppc64le.h, riscv64.h,
// thumb2.h, x86_64.h).
//
// The checker here proves an island before it is written, as arch/check.h proves plans: it decodes
// every instruction with Capstone and runs them on symbolic registers (each one's value at the
// island's entry, plus a constant; x86-64's three instructions are decoded by Zydis and RISC-V64's four
// by our decoder, and checked form by form), and requires that the island ends in a jump to exactly
// `target`, that it reads no memory but its own literal and what it saved itself, and that every
// register but the ones the ABI gives call veneers (x86-64: %r11, free at every site; RISC-V64: t1
// and t3, which ld's PLT entries clobber) holds its entry value again by then (LR included: the
// trampoline reads the site's return address from it).
#pragma once
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "arch/plan.h"
#include "arch/thumb2.h"

namespace prepatch::arch {

// The island of `isa` at `at` jumping to `target` (Thumb-2: a Thumb address, bit 0 set); empty when
// the ISA has none.
std::vector<u8> encode_island(Isa isa, u64 at, u64 target);
// Its size and alignment (0 when the ISA has none).
unsigned island_size(Isa isa);
unsigned island_align(Isa isa);

// Empty when `bytes` at `at` provably jump to `target` as above; else what breaks that. Also proves
// the shorter forms written over ld's stubs (thumb2.h encode_absolute_island, aarch64.h
// encode_adrp_island, ppc64le.h encode_toc_island), Thumb-2's 12-byte one through ip (thumb2.h
// encode_ip_island), and AArch64's 8-byte one and the far slot it jumps to (aarch64.h
// encode_page_island, encode_far_slot).
// `toc`: PPC64le's r2 at the island's entry, for the islands over ld's call stubs, which rely on it
// as the stubs did (ppc64le.h encode_toc_island); without it r2 is unknown.
std::string check_island(Isa isa, std::span<const u8> bytes, u64 at, u64 target, std::optional<u64> toc = std::nullopt);

// Empty when `bytes` at `at` are ARM32's ARM-state entry island (thumb2.h encode_arm_entry_island),
// each instruction as Capstone decodes it in ARM state, its literal leading to `target` (the mcount
// trampoline, Thumb); else what breaks that. Not a veneer: it pushes lr and sets lr from ip, as the
// shim's ARM-state entry does.
std::string check_arm_entry_island(std::span<const u8> bytes, u64 at, u64 target);

// Where ARM32's 12-byte island for ARM-state sites at `at` lands (thumb2.h encode_arm_far_island):
// the first 4-aligned word in [lo, hi) that its two adds reach; nullopt when none does.
std::optional<thumb2::ArmFarLanding> arm_far_landing(u64 at, u64 lo, u64 hi);

// Empty when `bytes` at `at` are ARM32's island for ARM-state sites over a stub (thumb2.h
// encode_arm_far_island) and lead, each instruction as Capstone decodes it in ARM state, to a word of
// the sled `sled` at `sled_at` that branches to `entry` + 4, where `entry_word` (the ARM-state entry's
// first word) is the `push {lr}` the island did instead; else what breaks that. Or, given 8 bytes,
// the absolute form (encode_arm_absolute_island), whose literal must be `entry` itself.
std::string check_arm_far_island(std::span<const u8> bytes, u64 at, std::span<const u8> sled, u64 sled_at, u64 entry, std::span<const u8> entry_word);

}  // namespace prepatch::arch
