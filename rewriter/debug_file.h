// A stripped binary's separate debug file (`objcopy --only-keep-debug`, Debian's -dbgsym packages):
// the .symtab the binary lost, which discovery reads instead, for its functions' names and extents.
// Found as gdb finds one: by the binary's build ID under the debug directory
// (DIR/.build-id/ab/cdef....debug), else by the name its .gnu_debuglink section gives, beside the
// binary, in a .debug directory beside it, or under the debug directory at the binary's own
// directory. A file is taken only when it belongs to the binary: the same build ID (where both have
// one), else the CRC-32 .gnu_debuglink records; and the same machine, with a .symtab.
#pragma once
#include <memory>
#include <string>

#include "elf/elf.h"
#include "elf/mapped_file.h"

namespace prepatch {

struct DebugSymbols {
  explicit DebugSymbols(const std::string& path) : file(path), elf(file.bytes(), path, true) {}
  MappedFile file;
  elf::Elf elf;
};

inline constexpr const char* default_debug_dir = "/usr/lib/debug";

// The debug file of `binary` (read from `path`), or nullptr: none when the binary has a .symtab of its
// own (`note` says so if `given`), else `given` when not empty, else the first found as above that belongs to it. `given` must
// belong to it: an InputError names it and says why not. A file found that does not is passed over,
// and `note` says so (empty otherwise).
std::unique_ptr<DebugSymbols> debug_symbols(const elf::Elf& binary, const std::string& path, const std::string& given, const std::string& debug_dir,
                                            std::string& note);

}  // namespace prepatch
