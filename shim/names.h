// What a function is called, in every command and every glob (README.md, "Names"): the demangled name
// (shim/demangle.h) where the symbol is a C++ name this demangler knows, else the raw symbol. A glob
// matches a function when it matches the raw symbol, the demangled text, that text from the qualified
// name on (no return type: `ns::f<int>(int)`), or the qualified name alone (`ns::C::f`, for globs
// written without the parameter list). An item OBJECT:FUNCTION matches too where OBJECT matches the
// base name of the object the function is in and FUNCTION matches as above. Freestanding, for the shim
// (PREPATCH_TRACE, `ctl`) and the host (`replay --function`) alike.
#pragma once
#include "shim/core.h"
#include "shim/demangle.h"

namespace prepatch::shim {

// The words the demangler writes that are not the symbol's own.
PREPATCH_CONSTANT char demangler_words[] =
    " void wchar_t bool char signed unsigned short int long __int128 float double __float128 decimal32 decimal64"
    " decimal128 half char32_t char16_t char8_t auto decltype nullptr std allocator basic_string string istream"
    " ostream iostream basic_istream basic_ostream basic_iostream char_traits operator new delete lambda unnamed"
    " type anonymous namespace clone abi const volatile restrict virtual non thunk to literal true false ";

// Whether `r` (n bytes) occurs in `s` (m bytes).
inline bool contains(const char* s, size_t m, const char* r, size_t n) {
  if (n > m) return false;
  for (size_t i = 0; i + n <= m; i++) {
    size_t k = 0;
    while (k < n && s[i + k] == r[k]) k++;
    if (k == n) return true;
  }
  return false;
}

// Whether identifier characters `r` (n) could be a number the demangler computes rather than copies:
// digits, maybe with a literal's suffix (`5ul`, `0u`, `7ll`), as in `{lambda()#2}` or `f<5ul>`.
inline bool computed_number(const char* r, size_t n) {
  size_t k = 0;
  while (k < n && r[k] >= '0' && r[k] <= '9') k++;
  if (k == 0) return false;
  const size_t rest = n - k;
  const char* s = r + k;
  return rest == 0 || (rest == 1 && (*s == 'u' || *s == 'l')) || (rest == 2 && ((s[0] == 'u' && s[1] == 'l') || (s[0] == 'l' && s[1] == 'l'))) ||
         (rest == 3 && s[0] == 'u' && s[1] == 'l' && s[2] == 'l');
}

// Whether glob item `p` could match some demangled form of a symbol at all, decided from the raw
// symbol without demangling: each run of letters, digits and '_' the glob spells out must lie inside
// one such run of the demangled text, which is one of the symbol's own identifiers (a substring of the
// raw symbol), a word the demangler writes, or a number it computes (a lambda's, a literal's). So the
// runs that are neither a word's part nor such a number must all occur in the raw symbol. Most
// symbols are thus never demangled for a glob that names a class or a function, or spells a raw symbol.
struct GlobRuns {
  static constexpr size_t max_runs = 8;  // the longest ones: a subset filters less, never wrongly
  const char* run[max_runs] = {};
  size_t len[max_runs] = {}, count = 0;

  void build(const char* p, size_t plen) {
    const auto ident = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; };
    count = 0;
    for (size_t i = 0; i < plen;) {
      if (!ident(p[i])) {
        i++;
        continue;
      }
      size_t j = i;
      while (j < plen && ident(p[j])) j++;
      const size_t n = j - i;
      if (!contains(demangler_words, sizeof demangler_words - 1, p + i, n) && !computed_number(p + i, n)) {
        size_t at = count < max_runs ? count++ : max_runs - 1;  // longest first; a shorter one falls off the end
        if (at == max_runs - 1 && count == max_runs && len[at] >= n) at = max_runs;
        for (; at < max_runs && at > 0 && len[at - 1] < n; at--) run[at] = run[at - 1], len[at] = len[at - 1];
        if (at < max_runs) run[at] = p + i, len[at] = n;
      }
      i = j;
    }
  }
  bool may_match(const char* raw, size_t rawlen) const {
    for (size_t k = 0; k < count; k++)
      if (!contains(raw, rawlen, run[k], len[k])) return false;
    return true;
  }
};

inline bool may_match_demangled(const char* p, size_t plen, const char* raw, size_t rawlen) {
  GlobRuns r;
  r.build(p, plen);
  return r.may_match(raw, rawlen);
}

// Where glob item `p` (n bytes) parts OBJECT from FUNCTION: its first ':' that is neither half of a
// "::" nor inside (), <> or [] (`*[abi:cxx11]*` is no OBJECT:FUNCTION); n when there is none.
inline size_t object_colon(const char* p, size_t n) {
  int depth = 0;
  for (size_t i = 0; i < n; i++) {
    const char c = p[i];
    if (c == '(' || c == '<' || c == '[') depth++;
    else if ((c == ')' || c == '>' || c == ']') && depth > 0) depth--;
    else if (c == ':' && depth == 0 && i + 1 < n && p[i + 1] == ':') i++;
    else if (c == ':' && depth == 0) return i;
  }
  return n;
}

class NameForms {
 public:
  // `object`: the base name of the object whose functions are matched (nullptr: not known, and no
  // OBJECT:FUNCTION item matches).
  NameForms(Demangler& d, char* out, size_t out_size, const char* object = nullptr)
      : d_(d), out_(out), out_size_(out_size), object_(object) {}

  // The name shown for `raw`: the demangled text, or the raw symbol. Valid until the next call.
  const char* shown(const char* raw, size_t& len) {
    demangle(raw);
    if (!r_.len) return len = str_len(raw), raw;
    return len = r_.len, out_;
  }

  bool matches(const GlobList& globs, const char* raw) {
    const size_t rawlen = str_len(raw);
    for (size_t at = 0; at < globs.len;) {
      const size_t end = globs.item_end(at);
      const char* p = globs.text + at;
      const size_t plen = end - at, colon = object_colon(p, plen);
      if (plen && item_matches(p, plen, raw, rawlen)) return true;
      if (colon < plen && object_ && glob_match(p, colon, object_, str_len(object_)) &&
          item_matches(p + colon + 1, plen - colon - 1, raw, rawlen))
        return true;
      at = end + 1;
    }
    return false;
  }

 private:
  // Whether function glob `p` matches the raw symbol or one of its demangled forms.
  bool item_matches(const char* p, size_t plen, const char* raw, size_t rawlen) {
    if (!plen) return false;
    if (glob_match(p, plen, raw, rawlen)) return true;
    if (rawlen < 3 || raw[0] != '_' || raw[1] != 'Z' || !runs(p, plen).may_match(raw, rawlen)) return false;
    demangle(raw);
    return r_.len && (glob_match(p, plen, out_, r_.len) || (r_.name_begin && glob_match(p, plen, out_ + r_.name_begin, r_.len - r_.name_begin)) ||
                      glob_match(p, plen, out_ + r_.name_begin, r_.name_end - r_.name_begin));
  }

  void demangle(const char* raw) {
    if (raw == for_) return;  // the same symbol as last time (the include and the exclude list)
    for_ = raw;
    r_ = d_.run(raw, str_len(raw), out_, out_size_);
  }

  // A glob item's runs, made once: the same globs are tried on every symbol of the table.
  const GlobRuns& runs(const char* p, size_t plen) {
    for (size_t k = 0; k < max_items && k < items_; k++)
      if (item_[k] == p && item_len_[k] == plen) return runs_[k];
    const size_t k = items_++ % max_items;
    item_[k] = p, item_len_[k] = plen;
    runs_[k].build(p, plen);
    return runs_[k];
  }

  static constexpr size_t max_items = 8;
  Demangler& d_;
  char* out_;
  size_t out_size_;
  const char* object_;
  const char* for_ = nullptr;
  Demangled r_;
  const char* item_[max_items] = {};
  size_t item_len_[max_items] = {}, items_ = 0;
  GlobRuns runs_[max_items];
};

}  // namespace prepatch::shim
