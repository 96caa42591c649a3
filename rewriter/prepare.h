// The preparer's passes over one binary: discover, check, normalize, emit the table, write the output.
#pragma once
#include <string>
#include <vector>

#include "elf/elf.h"
#include "rewriter/sites.h"

namespace prepatch {

// One line of `prepatch sites`: a site as found in a file, prepared or input.
struct SiteRow {
  u64 addr = 0;
  std::optional<u64> file_offset;
  std::string function;
  SiteKind kind = SiteKind::fentry;
  unsigned length = 0;
  std::string state;   // "nop", "call", or "other" (the bytes in the file now)
  std::string status;  // "prepared" (in the table), "preparable" (input binary), "skipped"
  std::string reason;  // for skipped sites
  std::string found;   // hex bytes, for skipped sites
  std::string source;  // where it was found: __mcount_loc, __patchable_function_entries, symbols, table
};

// A branch island of a prepared binary (arch/island.h): where the preparer put it, and for which sites.
struct IslandRow {
  u64 addr = 0;
  std::optional<u64> file_offset;
  std::string where;  // "after the text", "over a linker stub or PLT entry", "over the nops before an entry",
                      // "below the lowest segment, mapped at start"
  SiteKind kind = SiteKind::fentry;  // the trampoline it leads to: the kind of the sites that call it
  bool arm_state = false;            // ARM32: the ARM-state sites' entry (Config::island[0])
};

struct Listing {
  bool prepared = false;  // the file carries a __patch_sites table
  std::vector<SiteRow> rows;
  std::vector<IslandRow> islands;  // a prepared binary's, by address
};

// `symbols`: a stripped binary's separate debug file (rewriter/debug_file.h), its .symtab read in place
// of the one the binary lacks, for every function's name and extent.
Listing list_sites(const elf::Elf& elf, const elf::Elf* symbols = nullptr);

enum class PrepareOutcome { written, already_prepared, no_sites };

struct PrepareResult {
  PrepareOutcome outcome = PrepareOutcome::written;
  u64 prepared = 0;
  u64 skipped = 0;
  std::vector<std::string> messages;  // one per skipped site, or why nothing was written
};

// Prepares `elf` into `out_path` (mode `mode`); writes nothing unless at least one site is prepared.
// `source_fd`, when open, is the input file (lets the kernel copy what does not change).
// `symbols` as list_sites'.
PrepareResult prepare(const elf::Elf& elf, const std::string& out_path, unsigned mode, int source_fd = -1, const elf::Elf* symbols = nullptr);

// "file: vaddr 0x... (file 0x..., .text+0x...) in func: " — the location prefix of a site message.
std::string site_location(const elf::Elf& elf, u64 addr, std::string_view func);

}  // namespace prepatch
