#include "rewriter/names.h"

#include <memory>

#include "shim/names.h"

namespace prepatch {
namespace {

// One demangler per thread (the readers' workers may name functions at once): ~80 KB, on the heap.
struct Names {
  shim::Demangler demangler;
  char out[4096];
};
Names& names() {
  thread_local std::unique_ptr<Names> n = std::make_unique<Names>();
  return *n;
}

}  // namespace

std::string shown_name(std::string_view raw) {
  const std::string s(raw);
  Names& n = names();
  shim::NameForms forms(n.demangler, n.out, sizeof n.out);
  size_t len = 0;
  const char* text = forms.shown(s.c_str(), len);
  return std::string(text, len);
}

bool name_matches(std::string_view globs, std::string_view raw, std::string_view object) {
  const std::string s(raw), o(object);
  Names& n = names();
  shim::NameForms forms(n.demangler, n.out, sizeof n.out, o.empty() ? nullptr : o.c_str());
  return forms.matches(shim::GlobList{globs.data(), globs.size()}, s.c_str());
}

}  // namespace prepatch
