// The ELF reader against LIEF 0.9 (Debian's), used read-only as an independent oracle.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace prepatch::test {

// Our reader and LIEF must agree on the sections, segments, function symbols, dynamic section and
// dynamic relocations of `path` (gtest expectations).
void expect_agrees_with_lief(const std::string& path);

// Where the compiler recorded its sites (__mcount_loc, __patchable_function_entries, as LIEF reads
// them, with a PIE's or a library's relocation addends), `sites` (`prepatch sites --json`'s, in address
// order) must be that record: one site per entry, at the entry or up to 16 bytes after it (an mcount
// record names the call; a patchable one the pad, whose entry part may follow nops and an endbr64).
void expect_sites_are_compiler_records(const std::string& bin, const nlohmann::json& sites);

}  // namespace prepatch::test
