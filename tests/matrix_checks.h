// What the flavor matrices of executables and of shared objects (tests/matrix_test.cc,
// tests/shared_matrix_test.cc) both check: `prepatch sites`' view, and the ELF reader and the sites
// against LIEF 0.9 (Debian's), used read-only as an independent oracle.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "support.h"

namespace prepatch::test {

// `prepatch sites FILE --json` (an expectation that it succeeds; no sites when it fails).
nlohmann::json sites_json(const std::string& file);

// A prepared binary's sites (`prepared`, sites_json's) are its input's (`input`): the same addresses,
// functions and kinds, in the same order.
void expect_same_sites(const nlohmann::json& prepared, const nlohmann::json& input);

// A prepared site's off form as objdump shows it (`insns`) at `addr`, `len` bytes (the table's), on
// `isa` (TestBinary::isa): one nop of that length on x86-64 and the word ISAs; Thumb-2's `pop {lr}`
// (ldr.w lr, [sp], #4), which undoes the push before the site; an ARM-state site's 8 bytes, `mov ip,
// pc` and the toggled word's `nop`.
void expect_off_form(const std::map<unsigned long long, Insn>& insns, unsigned long long addr, unsigned len, const std::string& isa);

// Our reader and LIEF must agree on the sections, segments, function symbols, dynamic section and
// dynamic relocations of `path` (gtest expectations).
void expect_agrees_with_lief(const std::string& path);

// Where the compiler recorded its sites (__mcount_loc, __patchable_function_entries, as LIEF reads
// them, with a PIE's or a library's relocation addends), `sites` (`prepatch sites --json`'s, in address
// order) must be that record: one site per entry, at the entry or up to 16 bytes after it (an mcount
// record names the call; a patchable one the pad, whose entry part may follow nops and an endbr64).
void expect_sites_are_compiler_records(const std::string& bin, const nlohmann::json& sites);

}  // namespace prepatch::test
