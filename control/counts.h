// `prepatch counts`: reading the counts file a prepared process wrote (docs/SHIM.md, "The counts
// file"): one section per object the process's runtime served, each matched with its binary.
#pragma once
#include <span>
#include <string>
#include <vector>

#include "elf/ints.h"

namespace prepatch {

struct CountRow {
  std::string object;    // the object's base name
  u64 addr = 0;          // the function's link-time address in it
  std::string function;  // the table's (raw) name
  u64 count = 0;
};

// The counts file `path`: one row per site of each object, objects in the order they were served,
// sites in table order, named from the table copy in each object's section. `binaries` are checked
// against the file: each must be the object of some section (same table entries and address, same
// GNU build ID where both have one). Throws InputError (naming the offset) when the file is malformed
// or a binary given is none of its objects; a version 1 file (one object, no table copy) takes exactly
// one binary, which names its counts.
std::vector<CountRow> read_counts(const std::string& path, const std::vector<std::string>& binaries);
// The same for a file's bytes in memory (the fuzzer); `path` names it in messages.
std::vector<CountRow> read_counts(std::span<const u8> bytes, const std::string& path, const std::vector<std::string>& binaries);

// How each row is named where objects may share function names: `names[i]` (row i's function as
// shown), or OBJECT:FUNCTION where another object's row has the same shown name.
std::vector<std::string> qualified_names(const std::vector<CountRow>& rows, const std::vector<std::string>& names);

}  // namespace prepatch
