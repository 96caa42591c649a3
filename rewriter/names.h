// Function names on the host as the shim names them (shim/names.h; README.md, "Names"): what `sites`,
// `counts`, `report`, `replay` and `export` print unless --mangled, and what `replay --function`
// matches.
#pragma once
#include <string>
#include <string_view>

namespace prepatch {

// The demangled name of a C++ symbol the demangler knows, else `raw` itself.
std::string shown_name(std::string_view raw);

// A name as the tools print it: shown_name(raw), or `raw` itself with `mangled`, with every control
// character (C0, DEL, C1) and every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD.
// A symbol comes from a binary or a file someone else may have made: printed raw, it could drive the
// terminal (escape sequences) or make JSON, XML or Perfetto's strings unreadable.
std::string name_text(std::string_view raw, bool mangled = false);

// Text with the same replacements.
std::string printable_text(std::string_view s);

// Whether comma-separated `globs` match `raw` as the shim's PREPATCH_TRACE would.
bool name_matches(std::string_view globs, std::string_view raw, std::string_view object = {});

}  // namespace prepatch
