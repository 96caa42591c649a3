// C++ names as users see them: an Itanium C++ ABI demangler, freestanding (no libc, no allocation),
// so that one rule names functions everywhere: the shim matches PREPATCH_TRACE and `ctl` globs
// against these names and prints them in `ctl status`; sites, counts, report, replay and export print
// them. Its text equals GNU's (__cxa_demangle, c++filt) for every name it accepts, which
// tests/demangle_test.cc checks on every symbol of real C++ libraries; a name it does not know (array
// and member-pointer types, expressions, decltype, vendor extensions) is declined, and its raw symbol
// is then what every command shows and matches.
#pragma once
#include <cstddef>

#include "elf/ints.h"

namespace prepatch::shim {

struct Demangled {
  size_t len = 0;                      // of the text written; 0: declined (show the raw symbol)
  size_t name_begin = 0, name_end = 0;  // the qualified name within it: no return type, no parameters
};

// The demangler's tables: arrays of characters, no pointers (the shim has no relocations), at
// namespace scope (ARM32's shim reaches a function's static data only through a GOT).
struct DemangleOp {
  char code[3], text[9];
};
PREPATCH_CONSTANT DemangleOp demangle_ops[] = {
    {"nw", "new"}, {"na", "new[]"}, {"dl", "delete"}, {"da", "delete[]"}, {"ps", "+"},   {"ng", "-"},   {"ad", "&"},  {"de", "*"},
    {"co", "~"},   {"pl", "+"},     {"mi", "-"},      {"ml", "*"},        {"dv", "/"},   {"rm", "%"},   {"an", "&"},  {"or", "|"},
    {"eo", "^"},   {"aS", "="},     {"pL", "+="},     {"mI", "-="},       {"mL", "*="},  {"dV", "/="},  {"rM", "%="}, {"aN", "&="},
    {"oR", "|="},  {"eO", "^="},    {"ls", "<<"},     {"rs", ">>"},       {"lS", "<<="}, {"rS", ">>="}, {"eq", "=="}, {"ne", "!="},
    {"lt", "<"},   {"gt", ">"},     {"le", "<="},     {"ge", ">="},       {"ss", "<=>"}, {"nt", "!"},   {"aa", "&&"}, {"oo", "||"},
    {"pp", "++"},  {"mm", "--"},    {"cm", ","},      {"pm", "->*"},      {"pt", "->"},  {"cl", "()"},  {"ix", "[]"}, {"qu", "?"}};
struct DemangleStd {
  char c, simple[20], full[72], last[16];
};
PREPATCH_CONSTANT DemangleStd demangle_std[] = {
    {'t', "std", "std", ""},
    {'a', "std::allocator", "std::allocator", "allocator"},
    {'b', "std::basic_string", "std::basic_string", "basic_string"},
    {'s', "std::string", "std::basic_string<char, std::char_traits<char>, std::allocator<char> >", "basic_string"},
    {'i', "std::istream", "std::basic_istream<char, std::char_traits<char> >", "basic_istream"},
    {'o', "std::ostream", "std::basic_ostream<char, std::char_traits<char> >", "basic_ostream"},
    {'d', "std::iostream", "std::basic_iostream<char, std::char_traits<char> >", "basic_iostream"}};
struct DemangleWord {
  char c, text[20];
};
PREPATCH_CONSTANT DemangleWord demangle_builtins[] = {
    {'v', "void"},  {'w', "wchar_t"},       {'b', "bool"},     {'c', "char"},     {'a', "signed char"}, {'h', "unsigned char"},
    {'s', "short"}, {'t', "unsigned short"}, {'i', "int"},      {'j', "unsigned int"}, {'l', "long"},     {'m', "unsigned long"},
    {'x', "long long"}, {'y', "unsigned long long"}, {'n', "__int128"}, {'o', "unsigned __int128"}, {'f', "float"}, {'d', "double"},
    {'e', "long double"}, {'g', "__float128"}, {'z', "..."}};
PREPATCH_CONSTANT DemangleWord demangle_d_builtins[] = {  // D<c>
    {'d', "decimal64"}, {'e', "decimal128"}, {'f', "decimal32"}, {'h', "half"}, {'i', "char32_t"}, {'s', "char16_t"},
    {'u', "char8_t"},   {'a', "auto"},       {'c', "decltype(auto)"}, {'n', "decltype(nullptr)"}};
PREPATCH_CONSTANT DemangleWord demangle_literal_suffixes[] = {{'i', ""}, {'j', "u"}, {'l', "l"}, {'m', "ul"}, {'x', "ll"}, {'y', "ull"}};

class Demangler {
 public:
  constexpr Demangler() = default;

  // Writes the demangled form of `s` (n bytes, "_Z...") to `out` (at most `out_size` bytes, no NUL).
  Demangled run(const char* s, size_t n, char* out, size_t out_size) {
    s_ = s, n_ = n, i_ = 0, used_ = 0, bad_ = false, nsubs_ = 0, nargs_ = 0, nelems_ = 0, in_pack_ = false;
    scope_ = 0, tparams_ = scope_tparams_ = 0, pack_ = nullptr, last_source_ = {};
    str_top_ = arg_top_ = ty_top_ = 0, depth_ = 0;
    Demangled d;
    if (n < 3 || s[0] != '_' || s[1] != 'Z') return d;
    i_ = 2;
    Enc e = encoding(true);
    Str clones = clone_suffixes();
    if (bad_ || i_ != n_) return d;
    Str all = cat(e.text, clones);
    if (bad_ || all.len > out_size) return d;
    for (size_t k = 0; k < all.len; k++) out[k] = a_[all.off + k];
    d.len = all.len, d.name_begin = e.name_begin, d.name_end = e.name_end;
    return d;
  }

 private:
  struct Str {
    size_t off = 0, len = 0;
  };
  struct Ty {
    Str l, r;        // printed as l, then a declarator, then r
    bool fn = false;  // a bare function type: a pointer to it is l "(*" ... ")" r
    u8 ref = 0;       // a reference: 1 for &, 2 for && (a reference to it collapses, as GNU prints)
    bool tp = false;  // a template parameter's argument: only there does GNU collapse references
    u8 cv = 0;        // its own qualifiers: 1 restrict, 2 volatile, 4 const
  };
  struct Sub {
    Ty t;
    int param = -1;        // a bare T_: resolved when referred to, in the template then current (GNU's)
    int scope = 0;         // the local-type nesting it was read in
    bool tainted = false;  // read in a local type after a T_ there: its T_ mean other arguments outside
  };
  struct Arg {
    Ty t;
    size_t first = 0, count = 0;  // a pack: its elements in elems_
    bool pack = false;
  };
  struct Name {
    Str text;
    bool targs = false;        // ends with template arguments: a function's return type comes first
    bool ctor_dtor_conv = false;
    Str quals;                 // " const", " &&": a member function's qualifiers
  };
  struct Enc {
    Str text;
    size_t name_begin = 0, name_end = 0;
  };

  // Arrays a level of the name needs, taken from the object (the shim may run this on a 64 KiB signal
  // stack): `p` is null, and the name declined, when the pool is used up.
  template <class T>
  struct Pool {
    template <size_t cap>
    Pool(Demangler& d, T (&pool)[cap], size_t& top, size_t n) : top_(top), at_(top) {
      if (top + n > cap) d.fail();
      else p = pool + top, top += n;
    }
    ~Pool() { top_ = at_; }
    T* p = nullptr;
    size_t& top_;
    size_t at_;
  };
  // Nesting: each type, name and encoding inside another; deeper names are declined.
  struct Depth {
    explicit Depth(Demangler& d) : d_(d) {
      if (++d.depth_ > max_depth) d.fail();
    }
    ~Depth() { d_.depth_--; }
    Demangler& d_;
  };

  char peek(size_t k = 0) const { return i_ + k < n_ ? s_[i_ + k] : 0; }
  bool eat(char c) {
    if (peek() != c) return false;
    i_++;
    return true;
  }
  bool fail() { return bad_ = true, false; }
  static size_t len_of(const char* p) {
    size_t k = 0;
    while (p[k]) k++;
    return k;
  }
  Str put(const char* p, size_t k) {
    if (bad_ || cap_ - used_ < k) return fail(), Str{};
    for (size_t j = 0; j < k; j++) a_[used_ + j] = p[j];
    Str r{used_, k};
    used_ += k;
    return r;
  }
  Str lit(const char* p) { return put(p, len_of(p)); }
  Str cat(Str a, Str b) {
    if (bad_) return {};
    if (a.off + a.len == used_) {  // a is the newest: extend it in place
      Str r = put(a_ + b.off, b.len);
      return bad_ ? Str{} : Str{a.off, a.len + r.len};
    }
    Str r = put(a_ + a.off, a.len);
    put(a_ + b.off, b.len);
    return bad_ ? Str{} : Str{r.off, a.len + b.len};
  }
  Str cat(Str a, const char* b) { return cat(a, lit(b)); }
  Str cat(const char* a, Str b) { return cat(lit(a), b); }
  Str cat(const char* a, const char* b) { return cat(lit(a), lit(b)); }
  char last_char(Str a) const { return a.len ? a_[a.off + a.len - 1] : 0; }
  Str flat(const Ty& t) { return cat(t.l, t.r); }
  static Ty as_param(Ty t) {
    t.tp = true;
    return t;
  }
  bool same(Str a, Str b) const {
    if (a.len != b.len) return false;
    for (size_t k = 0; k < a.len; k++)
      if (a_[a.off + k] != a_[b.off + k]) return false;
    return true;
  }
  void add_sub(const Ty& t, int param = -1) {
    if (nsubs_ == max_subs) return void(fail());
    subs_[nsubs_++] = {t, param, scope_, scope_ > 0 && tparams_ != scope_tparams_};
  }

  bool number(size_t& v) {
    if (peek() < '0' || peek() > '9') return fail();
    v = 0;
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + static_cast<size_t>(s_[i_++] - '0');
      if (v > 1000000) return fail();
    }
    return true;
  }

  // <source-name>: a length, then that many characters; GCC's anonymous namespace by its GNU name.
  Str source_name() {
    size_t k = 0;
    if (!number(k) || k == 0 || n_ - i_ < k) return fail(), Str{};
    const char* p = s_ + i_;
    i_ += k;
    last_source_ = Str{};  // set below, to the name as read (GNU names constructors after it)
    if (k >= 10 && p[0] == '_' && p[1] == 'G' && p[2] == 'L' && p[3] == 'O' && p[4] == 'B' && p[5] == 'A' && p[6] == 'L' && p[7] == '_' &&
        (p[8] == '.' || p[8] == '_' || p[8] == '$') && p[9] == 'N')
      return last_source_ = lit("(anonymous namespace)");
    return last_source_ = put(p, k);
  }

  Str abi_tags(Str name) {
    const Str last_source = last_source_;
    while (!bad_ && peek() == 'B') {
      i_++;
      name = cat(cat(cat(name, "[abi:"), source_name()), "]");
    }
    last_source_ = last_source;
    return name;
  }

  // <operator-name>; `conv` is set for a conversion operator ("operator int").
  Str operator_name(bool& conv) {
    const char a = peek(), b = peek(1);
    if (a == 'c' && b == 'v') {
      i_ += 2;
      if (peek() == 'T') return fail(), Str{};  // its T_ names the template arguments after it
      conv = true;
      return cat("operator ", flat(type()));
    }
    if (a == 'l' && b == 'i') {
      i_ += 2;
      return cat("operator\"\" ", source_name());
    }
    for (const DemangleOp& op : demangle_ops)
      if (op.code[0] == a && op.code[1] == b) {
        i_ += 2;
        return cat(op.text[0] >= 'a' && op.text[0] <= 'z' ? "operator " : "operator", op.text);
      }
    return fail(), Str{};
  }

  // <unqualified-name>.
  Str unqualified_name(Name& n) {
    const char c = peek();
    if (c >= '0' && c <= '9') {
      return abi_tags(source_name());
    }
    if (c == 'L') {  // internal linkage (GCC), then an optional discriminator
      i_++;
      Str s = source_name();
      discriminator();
      return abi_tags(s);
    }
    // A constructor or destructor is named after the last source name read, wherever it was (GNU's
    // rule; the enclosing class's name but after a substitution).
    if (c == 'C' && peek(1) >= '1' && peek(1) <= '5') {
      i_ += 2;
      n.ctor_dtor_conv = true;
      return abi_tags(last_source_.len ? cat(Str{}, last_source_) : (fail(), Str{}));
    }
    if (c == 'D' && (peek(1) == '0' || peek(1) == '1' || peek(1) == '2' || peek(1) == '4' || peek(1) == '5')) {
      i_ += 2;
      n.ctor_dtor_conv = true;
      return abi_tags(last_source_.len ? cat("~", last_source_) : (fail(), Str{}));
    }
    if (c == 'U' && peek(1) == 't') {  // an unnamed type: {unnamed type#N}
      i_ += 2;
      size_t k = 0;
      const bool numbered = peek() != '_' && number(k);
      if (!eat('_')) return fail(), Str{};
      return counted("{unnamed type#", numbered ? k + 2 : 1, "}");
    }
    if (c == 'U' && peek(1) == 'l') {  // a closure: {lambda(PARAMS)#N}
      i_ += 2;
      Str params = parameters('E');
      if (!eat('E')) return fail(), Str{};
      size_t k = 0;
      bool numbered = false;
      if (peek() != '_') numbered = number(k);
      if (!eat('_')) return fail(), Str{};
      return counted(cat(cat("{lambda", params), "#"), numbered ? k + 2 : 1, "}");
    }
    if (c >= 'a' && c <= 'z') {
      bool conv = false;
      Str op = operator_name(conv);
      n.ctor_dtor_conv |= conv;
      return abi_tags(op);
    }
    return fail(), Str{};
  }

  Str counted(const char* head, size_t v, const char* tail) { return counted(lit(head), v, tail); }
  Str counted(Str head, size_t v, const char* tail) {
    char b[24];
    size_t k = sizeof b;
    do b[--k] = static_cast<char>('0' + v % 10), v /= 10;
    while (v);
    return cat(cat(head, put(b + k, sizeof b - k)), tail);
  }

  // <discriminator>, not printed.
  void discriminator() {
    if (peek() != '_') return;
    i_++;
    size_t k = 0;
    if (eat('_')) {
      number(k);
      eat('_');
    } else {
      number(k);
    }
  }

  // <substitution>: a component or type seen before, or a std:: abbreviation. `prefix`: it begins a
  // qualified name, where a constructor or destructor after std::string and the streams names the
  // full template (GNU's choice).
  Sub substitution(bool prefix) {
    i_++;  // 'S'
    const char c = peek();
    if (c == '_' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')) {
      size_t k = 0;
      while (peek() != '_') {
        const char d = peek();
        if (d >= '0' && d <= '9') k = k * 36 + static_cast<size_t>(d - '0');
        else if (d >= 'A' && d <= 'Z') k = k * 36 + static_cast<size_t>(d - 'A' + 10);
        else return fail(), Sub{};
        i_++;
        if (k > max_subs) return fail(), Sub{};
      }
      i_++;
      if (c != '_') k++;
      if (k >= static_cast<size_t>(nsubs_)) return fail(), Sub{};
      Sub sub = subs_[k];
      if (sub.scope != scope_ && (sub.tainted || sub.param >= 0)) fail();  // GNU's choice of arguments there is its own
      else if (sub.param >= 0) sub.t = sub.param < nargs_ ? param_type(&args_[sub.param]) : (fail(), Ty{});
      return sub;
    }
    i_++;
    const char next = peek();
    const bool full = prefix && (next == 'C' || next == 'D');
    for (const DemangleStd& st : demangle_std)
      if (st.c == c) {
        if (*st.last) last_source_ = lit(st.last);
        return {{lit(full ? st.full : st.simple), {}, false}};
      }
    return fail(), Sub{};
  }

  // <template-param>: T_ is the first of the encoding's template arguments.
  const Arg* template_param() {
    i_++;  // 'T'
    size_t k = 0;
    if (peek() != '_') {
      if (!number(k)) return nullptr;
      k++;
    }
    if (!eat('_') || k >= static_cast<size_t>(nargs_)) return fail(), nullptr;
    return &args_[k];
  }

  Ty param_type(const Arg* a) {
    if (!a) return {};
    tparams_++;
    if (!a->pack) return as_param(a->t);
    if (in_pack_) {  // the element the expansion is at
      if (pack_ && pack_ != a) return fail(), Ty{};
      pack_ = a;
      return pack_elem_ < a->count ? as_param(elems_[a->first + pack_elem_]) : Ty{};
    }
    return fail(), Ty{};  // a pack outside an expansion: GNU's own reading
  }

  // <template-args>; `record`: the encoding's own, which T_ refers to (kept on the stack only then).
  Str template_args(bool record) {
    if (!record) return template_args(nullptr);
    Pool<Arg> list(*this, arg_pool_, arg_top_, max_args);
    return list.p ? template_args(list.p) : Str{};
  }
  Str template_args(Arg* list) {
    const bool record = list;
    const Str last_source = last_source_;  // names read in the arguments name no constructor
    if (record) nargs_ = 0;  // a T_ in the name's own arguments names none yet (GNU rejects it, even in A<int>::f<T_>)
    i_++;  // 'I'
    int count = 0;
    Pool<Str> pool(*this, str_pool_, str_top_, max_args);
    Str* shown = pool.p;
    if (!shown) return {};
    while (!bad_ && peek() != 'E') {
      if (!peek() || count == max_args) return fail(), Str{};
      Arg a = template_arg();
      if (record) list[count] = a;
      if (a.pack) {
        for (size_t k = 0; k < a.count; k++) shown[count] = cat(k ? cat(shown[count], ", ") : Str{}, flat(elems_[a.first + k]));
        if (!a.count) shown[count] = {};
      } else {
        shown[count] = flat(a.t);
      }
      count++;
    }
    i_++;  // 'E'
    last_source_ = last_source;
    bool dropped = false;
    Str text = cat("<", join(shown, count, dropped));
    text = cat(text, last_char(text) == '>' && !dropped ? " >" : ">");
    if (record) {
      for (int k = 0; k < count; k++) args_[k] = list[k];
      nargs_ = count;
    }
    return text;
  }

  // Items joined by ", " as GNU joins a list: an empty item (an empty pack) keeps its comma unless
  // nothing follows it; a comma dropped at the end leaves GNU's "last character" at the space, so a
  // closing '>' then gets no space before it (`dropped`).
  Str join(const Str* items, int count, bool& dropped) {
    int last = count - 1;
    while (last >= 0 && !items[last].len) last--;
    Str text;
    for (int k = 0; k <= last; k++) text = k ? cat(cat(text, ", "), items[k]) : cat(Str{}, items[k]);
    dropped = count >= 2 && last < count - 1;
    return text;
  }

  Arg template_arg() {
    Arg a;
    const char c = peek();
    if (c == 'L') {
      a.t.l = literal();
      return a;
    }
    if (c == 'J') {  // an argument pack: its elements kept together, after any pack inside them
      i_++;
      a.pack = true;
      Pool<Ty> pool(*this, ty_pool_, ty_top_, max_pack);
      Ty* list = pool.p;
      if (!list) return a;
      while (!bad_ && peek() != 'E') {
        if (!peek() || a.count == max_pack) return fail(), a;
        Arg e = template_arg();
        if (e.pack) return fail(), a;
        list[a.count++] = e.t;
      }
      i_++;
      if (max_elems - nelems_ < a.count) return fail(), a;
      a.first = nelems_;
      for (size_t k = 0; k < a.count; k++) elems_[nelems_++] = list[k];
      return a;
    }
    if (c == 'X') return fail(), a;  // an expression
    a.t = type();
    return a;
  }

  // <expr-primary> as a template argument: L <type> <value> E, or L <mangled-name> E.
  Str literal() {
    i_++;  // 'L'
    if (peek() == '_' && peek(1) == 'Z') {
      i_ += 2;
      Enc e = encoding(false);
      if (!eat('E')) return fail(), Str{};
      return e.text;
    }
    const char t = peek();
    Str value_prefix;
    const char* tail = nullptr;
    for (const DemangleWord& sfx : demangle_literal_suffixes)
      if (sfx.c == t) tail = sfx.text;
    if (t == 'b') {
      i_++;
      const char v = peek();
      if ((v != '0' && v != '1') || peek(1) != 'E') return fail(), Str{};
      i_ += 2;
      return lit(v == '1' ? "true" : "false");
    }
    if (tail) {
      i_++;
    } else if (const char* name = builtin(t)) {
      if (t == 'v' || t == 'z' || t == 'f' || t == 'd' || t == 'e' || t == 'g') return fail(), Str{};
      value_prefix = cat(cat("(", name), ")");
      i_++;
    } else {  // an enumeration's value: "(ns::Kind)2"
      Ty ty = type();
      if (ty.r.len) return fail(), Str{};
      value_prefix = cat(cat("(", ty.l), ")");
    }
    Str v = value_prefix;
    if (eat('n')) v = cat(v, "-");
    const size_t from = i_;
    while (peek() >= '0' && peek() <= '9') i_++;
    if (i_ == from || !eat('E')) return fail(), Str{};
    v = cat(v, put(s_ + from, i_ - 1 - from));
    return tail ? cat(v, tail) : v;
  }

  static const char* builtin(char c) {
    for (const DemangleWord& w : demangle_builtins)
      if (w.c == c) return w.text;
    return nullptr;
  }

  // <type>. Candidates for substitution are added as GNU's demangler adds them.
  Ty type() {
    Depth depth(*this);
    if (bad_) return {};
    const char c = peek();
    if (const char* b = builtin(c)) {
      i_++;
      return {lit(b), {}, false};
    }
    if (c == 'D') {
      for (const DemangleWord& d : demangle_d_builtins)
        if (d.c == peek(1)) {
          i_ += 2;
          return {lit(d.text), {}, false};
        }
      if (peek(1) == 'p') {  // a pack expansion: the pattern once per element of the pack it names
        i_ += 2;
        Ty t = pack_expansion();
        add_sub(t);
        return t;
      }
      return fail(), Ty{};
    }
    if (c == 'r' || c == 'V' || c == 'K') {
      u8 cv = 0;
      const Str q = cv_qualifiers(&cv);
      if (peek() == 'F') return fail(), Ty{};  // a member function's type
      Ty t = type();
      if (t.fn || t.ref) return fail(), Ty{};  // printed inside the declarator by GNU: not taken
      // Qualifiers on a qualified type: GNU prints a template argument's own once ("T_ const" of "X
      // const" is "X const"); the rest is its own reading, not taken.
      if (t.cv && (!t.tp || (cv & ~t.cv))) return fail(), Ty{};
      Ty r{t.cv ? t.l : cat(t.l, q), t.r, false};
      r.cv = cv;
      add_sub(r);
      return r;
    }
    if (c == 'P' || c == 'R' || c == 'O') {
      i_++;
      const char* d = c == 'P' ? "*" : c == 'R' ? "&" : "&&";
      Ty t = type();
      Ty r;
      if (t.ref && c != 'P' && !t.tp) return fail(), Ty{};  // a reference to a reference, spelled out: GNU's own reading
      if (t.ref && c != 'P') {  // & & is &, && & is &, & && is &, && && is &&
        const u8 ref = c == 'R' || t.ref == 1 ? 1 : 2;
        r = {cat(Str{t.l.off, t.l.len - t.ref}, ref == 1 ? "&" : "&&"), t.r, false, ref};
      } else if (t.fn) {
        r = {cat(cat(t.l, "("), d), cat(")", t.r), false};
      } else {
        r = {cat(t.l, d), t.r, false};
      }
      if (c != 'P' && !r.ref) r.ref = c == 'R' ? 1 : 2;
      add_sub(r);
      return r;
    }
    if (c == 'F') {
      i_++;
      eat('Y');
      Ty ret = type();
      if (ret.r.len) return fail(), Ty{};
      Str params = parameters('E');
      if (peek() == 'R' || peek() == 'O') return fail(), Ty{};
      if (!eat('E')) return fail(), Ty{};
      Ty r{cat(ret.l, " "), params, true};
      add_sub(r);
      return r;
    }
    if (c == 'T') {
      const Arg* a = template_param();
      Ty t = param_type(a);
      add_sub(t, a && !a->pack ? static_cast<int>(a - args_) : -1);
      if (peek() == 'I') {
        t = {template_join(t.l, template_args(false)), {}, false};
        add_sub(t);
      }
      return t;
    }
    if (c == 'S' && peek(1) != 't') {
      Sub s = substitution(false);
      if (peek() != 'I') return s.t;
      Ty t{template_join(flat(s.t), template_args(false)), {}, false};
      add_sub(t);
      return t;
    }
    if (c == 'Z') {  // a local type (a lambda's closure): its function's T_ are its own
      Pool<Arg> pool(*this, arg_pool_, arg_top_, max_args);
      Arg* saved = pool.p;
      if (!saved) return {};
      const int nsaved = nargs_;
      for (int k = 0; k < nargs_; k++) saved[k] = args_[k];
      const size_t outer_tparams = scope_tparams_;
      scope_++, scope_tparams_ = tparams_;
      Name n = name(false);
      if (n.quals.len) fail();  // a member's qualifiers on a type: GNU's own reading
      scope_--, scope_tparams_ = outer_tparams;
      for (int k = 0; k < nsaved; k++) args_[k] = saved[k];
      nargs_ = nsaved;
      Ty t{n.text, {}, false};
      add_sub(t);
      return t;
    }
    if (c == 'N' || (c >= '0' && c <= '9') || c == 'S') {
      Name n = name(false);
      if (n.quals.len) return fail(), Ty{};  // a member's qualifiers on a type: GNU's own reading
      Ty t{n.text, {}, false};
      add_sub(t);
      return t;
    }
    return fail(), Ty{};
  }

  // Dp <pattern>: the pattern once per element of the pack its T_ names, read again for each (the
  // element may be a reference that collapses with the pattern's); its candidates are the first's.
  Ty pack_expansion() {
    if (in_pack_) return fail(), Ty{};
    const size_t from = i_;
    in_pack_ = true, pack_ = nullptr, pack_elem_ = 0;
    Str all = flat(type());
    const Arg* pack = pack_;
    if (!pack) return in_pack_ = false, fail(), Ty{};
    if (!pack->count) all = {};
    const size_t to = i_;
    const int subs = nsubs_;
    for (size_t e = 1; e < pack->count && !bad_; e++) {
      i_ = from, pack_elem_ = e;
      all = cat(cat(all, ", "), flat(type()));
      nsubs_ = subs;
    }
    i_ = to, in_pack_ = false;
    return {all, {}, false};
  }

  // Parameter types until `end` (or the end of the name, or a clone suffix): "(int, char*)", "()" for v.
  Str parameters(char end) {
    if (peek() == 'v' && (peek(1) == end || peek(1) == 0 || peek(1) == '.')) {
      i_++;
      return lit("()");
    }
    Pool<Str> pool(*this, str_pool_, str_top_, max_params);
    Str* items = pool.p;
    if (!items) return {};
    int count = 0;
    while (!bad_ && peek() != end && peek() != 0 && peek() != '.') {
      if (count == max_params) return fail(), Str{};
      items[count++] = flat(type());
    }
    if (!count) return fail(), Str{};  // no parameter types at all ("()" is spelled v)
    bool dropped = false;
    return cat(cat("(", join(items, count, dropped)), ")");
  }

  // <name>: nested, unscoped (maybe a template), local, or std::. `record`: the encoding's name, whose
  // template arguments T_ refers to.
  Name name(bool record, bool local = false) {
    Depth depth(*this);
    Name n;
    if (bad_) return n;
    const char c = peek();
    if (c == 'N') return nested_name(record);
    if (c == 'Z') return local_name();
    if (c == 'S' && peek(1) == 't') {
      i_ += 2;
      n.text = cat("std::", unqualified_name(n));
    } else if (c == 'S') {
      Sub s = substitution(false);
      if (peek() != 'I') return fail(), n;
      n.text = template_join(flat(s.t), template_args(record));  // a substitution is no new candidate
      n.targs = true;
      return n;
    } else {
      if (c == 'U' && !local) return fail(), n;  // a closure or unnamed type outside any scope
      n.text = unqualified_name(n);
    }
    if (peek() == 'I') {
      add_sub({n.text, {}, false});
      n.text = template_join(n.text, template_args(record));
      n.targs = true;
    }
    return n;
  }

  Str template_join(Str name, Str args) { return cat(last_char(name) == '<' ? cat(name, " ") : name, args); }

  // <CV-qualifiers>: r, V, K, each at most once and in that order; GNU prints them innermost first
  // ("int const volatile").
  Str cv_qualifiers(u8* bits = nullptr) {
    Str q;
    u8 b = 0;
    for (const char* k = "rVK"; *k; k++)
      if (eat(*k)) q = cat(*k == 'r' ? " restrict" : *k == 'V' ? " volatile" : " const", q), b |= *k == 'r' ? 1 : *k == 'V' ? 2 : 4;
    if (bits) *bits = b;
    return q;
  }

  Name nested_name(bool record) {
    Name n;
    i_++;  // 'N'
    Str q = cv_qualifiers();
    if (peek() == 'R' || peek() == 'O') q = cat(q, s_[i_++] == 'R' ? " &" : " &&");
    n.quals = q;
    Str acc;
    bool have = false;
    while (!bad_ && peek() != 'E') {
      const char c = peek();
      if (!c) return fail(), n;
      // Arguments right after arguments (A::A<int><long>): GNU no longer sees the constructor,
      // destructor or conversion in the name, so it wants a return type.
      if (c == 'I' && n.targs) n.ctor_dtor_conv = false;
      n.targs = false;
      if (c == 'I') {
        if (!have) return fail(), n;
        acc = template_join(acc, template_args(record));
        n.targs = true;
      } else {
        Str comp;
        if (c == 'S') {
          if (have) return fail(), n;  // a substitution begins a prefix or is none
          const bool std_scope = peek(1) == 't';
          Sub s = substitution(true);
          if (std_scope && (peek() == 'I' || peek() == 'E')) return fail(), n;  // std is a namespace, not a name
          comp = flat(s.t);
        } else if (c == 'T') {
          return fail(), n;  // a template parameter as a scope: dependent names, GNU's own reading
        } else {
          const char first = c;
          comp = unqualified_name(n);
          // An operator, constructor or destructor ends the name (template arguments aside): GNU
          // reads nothing after one as a scope.
          if (((first >= 'a' && first <= 'z') || first == 'C' || first == 'D') && peek() != 'E' && peek() != 'I') return fail(), n;
        }
        acc = have ? cat(cat(acc, "::"), comp) : comp;
        have = true;
      }
      if (c != 'S' && peek() != 'E') add_sub({acc, {}, false});
    }
    if (!have) return fail(), n;
    i_++;  // 'E'
    n.text = acc;
    return n;
  }

  // <local-name>: an entity inside a function, named after the function's whole encoding.
  Name local_name() {
    Name n;
    i_++;  // 'Z'
    Enc outer = encoding(false);
    if (!eat('E')) return fail(), n;
    if (outer.name_end == outer.text.len && peek() == 'S') return fail(), n;  // no function around it, std:: inside: GNU's own
    const Str scope{outer.text.off + outer.name_begin, outer.text.len - outer.name_begin};  // GNU leaves out its return type
    if (eat('s')) {
      discriminator();
      n.text = cat(scope, "::string literal");
      return n;
    }
    if (peek() == 'd') return fail(), n;  // a default argument's scope
    Name inner = name(true, true);
    discriminator();
    n = inner;
    n.text = cat(cat(scope, "::"), inner.text);
    return n;
  }

  Enc encoding(bool top) {
    Depth depth(*this);
    Enc e;
    if (bad_) return e;
    if (peek() == 'T' && (peek(1) == 'h' || peek(1) == 'v') && top) {
      const bool virt = peek(1) == 'v';
      i_ += 2;
      size_t k = 0;
      eat('n');
      number(k);
      if (!eat('_')) return fail(), e;
      if (virt) {
        eat('n');
        number(k);
        if (!eat('_')) return fail(), e;
      }
      Str head = lit(virt ? "virtual thunk to " : "non-virtual thunk to ");
      Enc inner = encoding(false);
      e.text = cat(head, inner.text);
      e.name_begin = head.len + inner.name_begin, e.name_end = head.len + inner.name_end;
      return e;
    }
    if (peek() == 'T' || peek() == 'G') return fail(), e;  // vtables, typeinfo, guards: not functions
    Name n = name(true);
    if (bad_) return e;
    // T_ names the arguments of the function's own template only: a member of a class template that
    // is no template itself has none (its class's arguments were recorded on the way).
    if (!n.targs) nargs_ = 0;
    if (peek() == '.') return fail(), e;  // a clone of a name without a function type: GNU reads none
    if (peek() == 0 || peek() == 'E') {
      if (n.quals.len) return fail(), e;  // a member's qualifiers without its type
      e.text = n.text, e.name_end = n.text.len;
      return e;
    }
    Str ret;
    if (n.targs && !n.ctor_dtor_conv) {
      const size_t resolved = tparams_;
      Ty r = type();
      if (r.r.len) return fail(), e;
      // The function of a local type read as a type (a parameter's, say) whose return type names a T_:
      // GNU reads that T_ as an argument of the template around the local type, not of this function.
      if (scope_ > 0 && tparams_ != resolved) return fail(), e;
      ret = cat(r.l, " ");
      if (peek() == 0 || peek() == 'E' || peek() == '.') return fail(), e;  // a return type, then no parameters
    }
    Str params = parameters(top ? 0 : 'E');
    e.name_begin = ret.len, e.name_end = ret.len + n.text.len;
    e.text = cat(cat(cat(ret, n.text), params), n.quals);
    return e;
  }

  // GCC's clone suffixes: ".isra.0" -> " [clone .isra.0]"; each is '.' and [a-z0-9_]+, then any
  // number of '.' and digits (GNU's reading).
  Str clone_suffixes() {
    const auto lower_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; };
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    Str all;
    while (!bad_ && peek() == '.' && lower_digit(peek(1))) {
      const size_t from = i_;
      i_ += 2;
      while (lower_digit(peek())) i_++;
      while (peek() == '.' && digit(peek(1))) {
        i_ += 2;
        while (digit(peek())) i_++;
      }
      all = cat(cat(cat(all, " [clone "), put(s_ + from, i_ - from)), "]");
    }
    return all;
  }

  static constexpr int max_subs = 256, max_args = 32, max_params = 64, max_depth = 24;
  static constexpr size_t max_elems = 128, max_pack = 32, pool_size = 512;
  Str str_pool_[pool_size];
  Arg arg_pool_[pool_size / 4];
  Ty ty_pool_[pool_size / 4];
  size_t str_top_ = 0, arg_top_ = 0, ty_top_ = 0;
  int depth_ = 0;
  const char* s_ = nullptr;
  size_t n_ = 0, i_ = 0;
  static constexpr size_t cap_ = 32 << 10;  // the parts of a name (a few times the longest accepted)
  char a_[cap_] = {};
  size_t used_ = 0;
  bool bad_ = false, in_pack_ = false;
  const Arg* pack_ = nullptr;  // the pack a pattern expands (Dp), and its element being read
  size_t pack_elem_ = 0;
  Str last_source_;
  int scope_ = 0;                               // local types being read (lambdas' closures in template arguments)
  size_t tparams_ = 0, scope_tparams_ = 0;      // T_ resolved so far, and when the innermost local type began
  Sub subs_[max_subs];
  int nsubs_ = 0;
  Arg args_[max_args];
  int nargs_ = 0;
  Ty elems_[max_elems];
  size_t nelems_ = 0;
};

}  // namespace prepatch::shim
