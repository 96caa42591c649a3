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

std::string printable_text(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    // A UTF-8 sequence's length from its lead byte; its continuation bytes, overlong forms, surrogates
    // and code points past U+10FFFF checked.
    const size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    bool ok = n && i + n <= s.size();
    for (size_t k = 1; ok && k < n; k++) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    if (ok && n >= 2) {
      const auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0) && !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90) &&
           !(c == 0xc2 && c1 <= 0x9f);  // C1 controls
    }
    if (ok && n == 1) ok = c >= 0x20 && c != 0x7f;
    if (!ok) {
      out += "\xef\xbf\xbd";  // U+FFFD
      i++;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string name_text(std::string_view raw, bool mangled) { return printable_text(mangled ? std::string(raw) : shown_name(raw)); }

bool name_matches(std::string_view globs, std::string_view raw, std::string_view object) {
  const std::string s(raw), o(object);
  Names& n = names();
  shim::NameForms forms(n.demangler, n.out, sizeof n.out, o.empty() ? nullptr : o.c_str());
  return forms.matches(shim::GlobList{globs.data(), globs.size()}, s.c_str());
}

}  // namespace prepatch
