// `prepatch counts`: reading the counts file a prepared process wrote (docs/SHIM.md, "The counts
// file"): one section per object the process's runtime served, each matched with its binary.
#pragma once
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
// sites in table order. Each object's binary is the one of `binaries` whose table (address, size) and
// GNU build ID match its section, else the file the section names, when that one matches. Throws
// InputError (naming the offset) when the file is malformed, or when an object's binary is not found
// (a given one that matches no section, a section no binary matches); a version 1 file (one object,
// before sections) takes exactly one binary.
std::vector<CountRow> read_counts(const std::string& path, const std::vector<std::string>& binaries);

// How `row` is named where objects may share function names: FUNCTION, or OBJECT:FUNCTION when
// another object's row has the same shown name. `shown` is the function's name as shown (demangled
// or raw); `rows` all rows, `names` their shown names in the same order.
std::vector<std::string> qualified_names(const std::vector<CountRow>& rows, const std::vector<std::string>& names);

}  // namespace prepatch
