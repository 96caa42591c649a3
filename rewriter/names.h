// Function names on the host as the shim names them (shim/names.h; README.md, "Names"): what `sites`,
// `counts`, `report`, `replay` and `export` print unless --mangled, and what `replay --function`
// matches.
#pragma once
#include <string>
#include <string_view>

namespace prepatch {

// The demangled name of a C++ symbol the demangler knows, else `raw` itself.
std::string shown_name(std::string_view raw);

// Whether comma-separated `globs` match `raw` as the shim's PREPATCH_TRACE would.
bool name_matches(std::string_view globs, std::string_view raw, std::string_view object = {});

}  // namespace prepatch
