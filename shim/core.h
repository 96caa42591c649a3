// The shim's logic, freestanding, so the shim runs it inside a prepared process and gtest runs it on
// the host (tests/shim_core_test.cc): the site table as the shim sees it, name globs, the control
// command grammar, a small text builder for replies, and the batch executor that runs arch/plan.h's
// plans. No libc, no allocation, no exceptions, no static constructors.
#pragma once
#include <cstddef>
#include <type_traits>
#include <utility>

#include "arch/plan.h"
#include "arch/forms.h"
#include "elf/ints.h"
#include "shim/abi.h"

namespace prepatch::shim {

inline u64 load_le(const u8* p, unsigned n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  // One load, not n: the batch and the trap handler read table entries in their inner loops.
  if (n == 8) {
    u64 v;
    __builtin_memcpy(&v, p, 8);
    return v;
  }
  if (n == 4) {
    u32 v;
    __builtin_memcpy(&v, p, 4);
    return v;
  }
#endif
  u64 v = 0;
  for (unsigned i = 0; i < n; i++) v |= u64{p[i]} << (8 * i);
  return v;
}

// The process's own ELF structures, read in place (program headers, the dynamic section, symbols,
// relocations): ELF64's on the 64-bit ISAs, ELF32's on ARM32, where an address is 4 bytes. Offsets
// and sizes from the ELF specification; ELF64 ISAs relocate with Rela, ARM with Rel.
using uptr = unsigned long;  // an address, as wide as a pointer
// A pointer's address as a u64, zero-extended: gcc sign-extends a 32-bit pointer cast straight to u64,
// so on ARM32 an address above 2 GiB would match no address read from a register or a table.
template <class T>
inline u64 addr_of(T* p) {
  return reinterpret_cast<uptr>(p);
}
namespace elfc {
inline constexpr bool is64 = sizeof(uptr) == 8;
inline constexpr unsigned word = sizeof(uptr);                             // Elf_Addr, Elf_Off; a Dyn is two
inline constexpr u8 elf_class = is64 ? 2 : 1;                              // e_ident[EI_CLASS]
inline constexpr unsigned e_phoff = is64 ? 32 : 28, e_phnum = is64 ? 56 : 44;
inline constexpr unsigned phdr_size = is64 ? 56 : 32, p_flags = is64 ? 4 : 24, p_vaddr = is64 ? 16 : 8, p_filesz = is64 ? 32 : 16,
                       p_memsz = is64 ? 40 : 20;
inline constexpr unsigned sym_size = is64 ? 24 : 16, st_info = is64 ? 4 : 12, st_shndx = is64 ? 6 : 14, st_value = is64 ? 8 : 4;
inline constexpr unsigned rel_size = is64 ? 24 : 8;                        // Elf64_Rela, Elf32_Rel
inline constexpr u64 dt_rel = is64 ? 7 : 17, dt_relsz = is64 ? 8 : 18;     // DT_RELA/DT_RELASZ, DT_REL/DT_RELSZ
inline constexpr u64 dt_relcount = is64 ? 0x6ffffff9 : 0x6ffffffa;         // DT_RELACOUNT, DT_RELCOUNT
inline u64 rel_type(u64 info) { return is64 ? info & 0xffffffff : info & 0xff; }
inline u64 rel_sym(u64 info) { return is64 ? info >> 32 : info >> 8; }
}  // namespace elfc

inline size_t str_len(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

inline bool str_eq(const char* a, size_t alen, const char* b) {
  size_t i = 0;
  for (; i < alen; i++)
    if (b[i] != a[i]) return false;
  return b[i] == 0;
}

// Whether `s` begins with the `n` bytes of `prefix`.
inline bool begins_with(const char* s, const char* prefix, size_t n) {
  size_t i = 0;
  while (i < n && s[i] == prefix[i]) i++;
  return i == n;
}

// The base name of `path` (after its last '/'); nullptr stays nullptr.
inline const char* base_name(const char* path) {
  const char* b = path;
  for (const char* c = path; c && *c; c++)
    if (*c == '/') b = c + 1;
  return b;
}

// The value of environment variable `name` in a NULL-terminated `envp`, or nullptr.
inline const char* env_get(char** envp, const char* name) {
  const size_t n = str_len(name);
  for (; envp && *envp; envp++)
    if (begins_with(*envp, name, n) && (*envp)[n] == '=') return *envp + n + 1;
  return nullptr;
}

// Whether some variable of a NULL-terminated `envp` begins with `prefix` ("PREPATCH_").
inline bool env_any(char** envp, const char* prefix) {
  const size_t n = str_len(prefix);
  for (; envp && *envp; envp++)
    if (begins_with(*envp, prefix, n)) return true;
  return false;
}

// The hex mask after `key` (e.g. "SigBlk:") at the start of a line of a /proc status text of `n`
// bytes; false when no line has it.
inline bool status_mask(const char* text, size_t n, const char* key, u64& mask) {
  const size_t k = str_len(key);
  for (size_t at = 0; at + k <= n;) {
    size_t i = 0;
    while (i < k && text[at + i] == key[i]) i++;
    if (i == k) {
      size_t h = at + k;
      while (h < n && (text[h] == ' ' || text[h] == '\t')) h++;
      mask = 0;
      for (; h < n && ((text[h] >= '0' && text[h] <= '9') || (text[h] >= 'a' && text[h] <= 'f')); h++)
        mask = mask << 4 | static_cast<u64>(text[h] <= '9' ? text[h] - '0' : text[h] - 'a' + 10);
      return true;
    }
    while (at < n && text[at] != '\n') at++;
    at++;
  }
  return false;
}

// One entry of the __patch_sites table (docs/FORMAT.md), decoded.
struct SiteEntry {
  u64 addr;  // link-time
  u32 name;
  u8 kind, length, call_form, flags;
};

// An address as the readers show it: 0x and its hex digits from the first that is not 0 (`0x11b0`),
// written to `out` (at most 18 characters); their count.
inline size_t format_addr(u64 v, char* out) {
  int shift = 60;
  while (shift > 0 && !((v >> shift) & 15)) shift -= 4;
  size_t n = 0;
  out[n++] = '0', out[n++] = 'x';
  for (; shift >= 0; shift -= 4) out[n++] = "0123456789abcdef"[(v >> shift) & 15];
  return n;
}

// The __patch_sites table of the running binary, read in place. check() validates what the handler
// and the batches rely on (docs/FORMAT.md, "Readers must check"); nothing is used before it passed.
class TableView {
 public:
  static constexpr u64 header_size = table_header_size, entry_size = table_entry_size;

  // nullptr when the table is sound, else what is wrong with it.
  const char* check(const u8* base, u64 size, u16 machine) {
    base_ = base;
    if (size < header_size) return "the site table is shorter than its header";
    for (unsigned i = 0; i < 8; i++)
      if (base[i] != static_cast<u8>(table_magic[i])) return "the site table has no PREPATCH magic";
    if (load_le(base + 8, 2) != table_version) return "the site table's version is not 1";
    if (load_le(base + 10, 2) != machine) return "the site table is for another machine";
    if (load_le(base + 12, 2) != header_size || load_le(base + 14, 2) != entry_size) return "the site table's header or entry size is wrong";
    count_ = load_le(base + 16, 4);
    strings_ = load_le(base + 24, 4);
    strings_size_ = load_le(base + 28, 4);
    if (count_ > (size - header_size) / entry_size) return "the site table's count runs past its end";
    if (strings_ < header_size + count_ * entry_size || strings_ > size || strings_size_ == 0 || strings_size_ > size - strings_ ||
        base[strings_ + strings_size_ - 1] != 0)
      return "the site table's string table is out of bounds or not NUL-terminated";
    u64 end = 0;
    for (u64 i = 0; i < count_; i++) {
      SiteEntry e = entry(i);
      if (i > 0 && e.addr < end) return "the site table is not sorted by address";
      if (e.kind < 1 || e.kind > 3 || e.name >= strings_size_ || e.length == 0 || e.length > 15) return "a site table entry is malformed";
      end = e.addr + e.length;
    }
    return nullptr;
  }

  u64 count() const { return count_; }
  u32 flags() const { return static_cast<u32>(load_le(base_ + 20, 4)); }
  SiteEntry entry(u64 i) const {
    const u8* p = base_ + header_size + i * entry_size;
    return {load_le(p, 8), static_cast<u32>(load_le(p + 8, 4)), p[12], p[13], p[14], p[15]};
  }
  u64 addr(u64 i) const { return load_le(base_ + header_size + i * entry_size, 8); }
  const char* name(u64 i) const { return reinterpret_cast<const char*>(base_ + strings_) + entry(i).name; }
  // The name a glob matches for site i: its symbol, or where no symbol names its function (a stripped
  // binary) its site's address as the readers call it (`0x11b0`), written into `buf`.
  static constexpr size_t addr_name_size = 19;
  const char* glob_name(u64 i, char (&buf)[addr_name_size]) const {
    const char* n = name(i);
    if (*n) return n;
    buf[format_addr(addr(i), buf)] = 0;
    return buf;
  }

  // The index of the site whose first byte is at link-time address `a`, or count() when none.
  u64 find_start(u64 a) const {
    u64 i = upper(a);
    return i > 0 && addr(i - 1) == a ? i - 1 : count_;
  }
  // The index of the site whose bytes contain `a`, or count() when none.
  u64 find_containing(u64 a) const {
    u64 i = upper(a);
    if (i == 0) return count_;
    SiteEntry e = entry(i - 1);
    return a < e.addr + e.length ? i - 1 : count_;
  }

 private:
  // The number of sites that start at or below `a` (binary search).
  u64 upper(u64 a) const {
    u64 lo = 0, hi = count_;
    while (lo < hi) {
      u64 mid = lo + (hi - lo) / 2;
      if (addr(mid) <= a) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  const u8* base_ = nullptr;
  u64 count_ = 0, strings_ = 0, strings_size_ = 0;
};

// Shell-style glob: `*` any run, `?` any one character; everything else literal. `s` is `slen` bytes.
inline bool glob_match(const char* p, size_t plen, const char* s, size_t slen) {
  size_t pi = 0, si = 0, star_p = ~size_t{0}, star_s = 0;
  while (si < slen) {
    // A star first: compared as a letter, a star in the pattern would be used up by a star in the name
    // (found by fuzz/request_fuzz.cc: `*` did not match the name `*x`).
    if (pi < plen && p[pi] == '*') {
      star_p = pi++, star_s = si;
      while (pi < plen && p[pi] == '*') pi++;
      if (pi == plen) return true;  // a trailing star matches the rest, whatever it is
    } else if (pi < plen && (p[pi] == '?' || p[pi] == s[si])) {
      pi++, si++;
    } else if (star_p != ~size_t{0}) {
      pi = star_p + 1, si = ++star_s;
    } else {
      return false;
    }
  }
  while (pi < plen && p[pi] == '*') pi++;
  return pi == plen;
}
inline bool glob_match(const char* p, size_t plen, const char* s) { return glob_match(p, plen, s, str_len(s)); }

// A comma-separated list of globs (PREPATCH_TRACE, PREPATCH_NOTRACE, `prepatch ctl PID enable GLOBS`).
// A comma inside parentheses or angle brackets belongs to the glob (`ns::f(int, char)`, `g<a, b>`);
// empty items are ignored; an empty list matches nothing.
struct GlobList {
  const char* text = nullptr;
  size_t len = 0;
  // The end of the item that starts at `at`.
  size_t item_end(size_t at) const {
    int depth = 0;
    for (; at < len; at++) {
      const char c = text[at];
      if (c == '(' || c == '<') depth++;
      else if ((c == ')' || c == '>') && depth > 0) depth--;
      else if (c == ',' && depth == 0) break;
    }
    return at;
  }
  bool matches(const char* name, size_t n) const {
    for (size_t at = 0; at < len;) {
      const size_t end = item_end(at);
      if (end > at && glob_match(text + at, end - at, name, n)) return true;
      at = end + 1;
    }
    return false;
  }
  bool matches(const char* name) const { return matches(name, str_len(name)); }
  bool empty() const {
    for (size_t i = 0; i < len; i++)
      if (text[i] != ',') return false;
    return true;
  }
  // Whether some item is stars only, so every name matches (and no name need be read).
  bool matches_all() const {
    for (size_t at = 0; at < len;) {
      const size_t end = item_end(at);
      size_t k = at;
      while (k < end && text[k] == '*') k++;
      if (end > at && k == end) return true;
      at = end + 1;
    }
    return false;
  }
};

inline GlobList glob_list(const char* s) { return {s, s ? str_len(s) : 0}; }

// A control request: one line, `enable GLOBS`, `disable GLOBS`, `status` or `status mangled`.
struct Command {
  enum Verb { invalid, enable, disable, status, set, trigger } verb = invalid;
  GlobList globs;  // enable, disable: the globs; set: NAME=VALUE; trigger: the triggers
  bool mangled = false;         // status: raw symbols, not demangled names
  const char* error = nullptr;  // why it is invalid
};

inline Command parse_command(const char* s, size_t n) {
  Command c;
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;  // one trailing newline, spaces
  for (size_t i = 0; i < n; i++)
    if (static_cast<unsigned char>(s[i]) < 0x20 || static_cast<unsigned char>(s[i]) == 0x7f)
      return c.error = "a control character in the request (one line expected)", c;
  size_t verb = 0;
  while (verb < n && s[verb] != ' ') verb++;
  size_t arg = verb;
  while (arg < n && s[arg] == ' ') arg++;
  auto is = [&](const char* w) {
    if (str_len(w) != verb) return false;
    for (size_t i = 0; i < verb; i++)
      if (s[i] != w[i]) return false;
    return true;
  };
  if (is("status")) {
    c.mangled = n - arg == 7 && str_eq(s + arg, 7, "mangled");
    if (arg != n && !c.mangled) return c.error = "`status` takes no argument but `mangled` (raw symbols)", c;
    c.verb = Command::status;
    return c;
  }
  if (is("enable") || is("disable")) {
    c.globs = {s + arg, n - arg};
    if (c.globs.empty()) return c.error = "expected a comma-separated list of globs after the verb", c;
    c.verb = s[0] == 'e' ? Command::enable : Command::disable;
    return c;
  }
  if (is("set")) {
    c.globs = {s + arg, n - arg};
    if (c.globs.empty()) return c.error = "expected NAME=VALUE after `set`", c;
    c.verb = Command::set;
    return c;
  }
  if (is("trigger")) {  // `set TRIGGER=...`, shorter; nothing after it: none
    c.globs = {s + arg, n - arg};
    c.verb = Command::trigger;
    return c;
  }
  c.error = "unknown command (expected `enable GLOBS`, `disable GLOBS`, `set NAME=VALUE`, `trigger SPECS` or `status`)";
  return c;
}

// The temporary names behind every file the shim and `prepatch ctl` create (SECURITY.md): NAME.tmp-
// and temp_random_chars characters of temp_name_chars, each from 5 random bits (60 bits in all), created
// exclusively; a name someone took is drawn again, temp_tries times at most.
PREPATCH_CONSTANT char temp_name_chars[33] = "abcdefghijklmnopqrstuvwxyz234567";
inline constexpr unsigned temp_random_chars = 12, temp_tries = 16;

// The control channel's rules on its files (docs/SHIM.md, SECURITY.md), on what fstat reports.
// The directory /tmp/prepatch-EUID: a directory of the process's effective user that no one else may
// enter or write.
inline bool channel_dir_safe(u32 mode, u32 uid, u32 euid) { return (mode & 0170000) == 0040000 && uid == euid && !(mode & 077); }

// Why a request file must not be read, or nullptr. It must be a regular file (not a FIFO or device,
// which could block or be endless; symbolic links are refused when opening), have one name (not a hard
// link to a file of someone else's choosing), belong to the process's effective user or to root
// (`root_only`: to root alone), be writable by its owner only, and hold at most ctl_max_request bytes.
inline const char* request_file_problem(u32 mode, u64 nlink, u32 uid, i64 size, u32 euid, bool root_only) {
  if ((mode & 0170000) != 0100000) return "the request is not a regular file";
  if (nlink != 1) return "the request file has more than one name (a hard link)";
  if (uid != 0 && root_only) return "this process takes requests from root only (its user or group ids differ, it is not dumpable, or it holds capabilities)";
  if (uid != 0 && uid != euid) return "the request file belongs to another user";
  if (mode & 022) return "the request file is writable by group or others";
  if (size < 0 || size > static_cast<i64>(ctl_max_request)) return "the request is longer than 4096 bytes";
  return nullptr;
}

// Builds text into a fixed buffer; what does not fit is dropped and `truncated` set.
class Text {
 public:
  Text(char* buf, size_t cap) : buf_(buf), cap_(cap) {}
  Text& str(const char* s) { return put(s, str_len(s)); }
  Text& put(const char* s, size_t n) {
    for (size_t i = 0; i < n; i++) ch(s[i]);
    return *this;
  }
  Text& ch(char c) {
    if (len_ < cap_) buf_[len_++] = c;
    else truncated = true;
    return *this;
  }
  Text& num(u64 v) {
    char d[20];
    unsigned n = 0;
    do d[n++] = static_cast<char>('0' + v % 10);
    while (v /= 10);
    while (n) ch(d[--n]);
    return *this;
  }
  Text& hex(u64 v) {  // 16 digits, as /proc shows a signal mask
    for (int shift = 60; shift >= 0; shift -= 4) ch("0123456789abcdef"[(v >> shift) & 15]);
    return *this;
  }
  Text& addr(u64 v) {  // as the readers show an address (format_addr)
    char b[TableView::addr_name_size];
    return put(b, format_addr(v, b));
  }
  const char* data() const { return buf_; }
  size_t size() const { return len_; }
  bool truncated = false;

 private:
  char* buf_;
  size_t cap_, len_ = 0;
};

// The batch executor: switches a set of sites between their forms by running each site's plan
// (arch/plan.h) phase by phase across the whole batch, so a batch costs as many syncs as its plans
// have phases (three on x86-64), whatever its size. Sites are visited in table (= address) order.
//
// Sites is a view of the batch: count(), changes(i) (whether site i is in the batch), addr(i) (its
// run-time address), len(i), and target(i) (the bytes it must end up as). Memory performs the
// stores (store(addr, bytes, width)) and the syncs (sync()). Returns the number of stores.
template <class Sites, class Memory>
u64 run_batch_any(arch::Isa isa, Sites& sites, Memory& mem) {
  u64 stores = 0;  // counted here, in a register: a counter in Memory would be reloaded after every byte store
  unsigned phases = 1;  // grows to the most any site's plan has, as phase 0 meets the plans
  for (unsigned ph = 0; ph < phases; ph++) {
    bool sync = false;
    const arch::Step* last = nullptr;  // sites mostly share a plan: its phase is looked up once per run of them
    arch::Phase step;
    arch::Bytes trap;
    bool from_target = false;
    for (u64 i = 0, n = sites.count(); i < n; i++) {
      if (!sites.changes(i)) continue;
      const u64 addr = sites.addr(i);
      const arch::Plan& plan = arch::plan_for(isa, addr, sites.len(i));
      if (plan.steps != last) {  // (not &plan: the shim must not hold the plan's address, an absolute relocation)
        step = arch::phase(plan, ph), last = plan.steps, trap = arch::trap_bytes(isa, &plan), from_target = false;
        for (const arch::Step* s = step.begin; s != step.end; s++) from_target |= s->from == arch::From::target;
        if (ph == 0 && arch::phase_count(plan) > phases) phases = arch::phase_count(plan);
      }
      if (step.empty()) continue;
      sync |= step.sync;
      const u8* target = from_target ? sites.target(i) : nullptr;
      const unsigned len = sites.len(i);
      for (const arch::Step* s = step.begin; s != step.end; s++) stores += arch::run_step(*s, addr, target, len, trap, mem);
    }
    if (sync) mem.sync();
  }
  return stores;
}

// One site's writes of phase Ph of plan K of ISA I (arch::isa_plan), the plan a compile-time constant,
// so each step's fields fold into the code and its loops unroll: 3-4x faster on 100k sites than reading
// the steps at run time. Returns whether the phase ends with a sync.
template <arch::Isa I, unsigned K, unsigned Ph, class Sites, class Memory>
bool run_site_phase(Sites& sites, u64 i, u64 addr, Memory& mem, u64& stores) {
  constexpr const arch::Plan& plan = *arch::isa_plan(I, K);
  constexpr arch::Phase step = arch::phase(plan, Ph);
  constexpr unsigned steps = static_cast<unsigned>(step.end - step.begin);
  constexpr bool from_target = [] {
    for (const arch::Step* s = step.begin; s != step.end; s++)
      if (s->from == arch::From::target) return true;
    return false;
  }();
  // (not trap_bytes(I, &plan): GCC's sanitizers make &plan != nullptr no constant expression)
  constexpr arch::Bytes trap = plan.trap ? arch::Bytes{plan.trap, plan.trap_size} : arch::trap_bytes(I);
  if constexpr (steps > 0) {
    const unsigned len = sites.len(i);
    const u8* target = from_target ? sites.target(i) : nullptr;
    [&]<unsigned... S>(std::integer_sequence<unsigned, S...>) {
      ((stores += arch::run_step(step.begin[S], addr, target, len, trap, mem)), ...);
    }(std::make_integer_sequence<unsigned, steps>{});
  }
  return step.sync;
}

// run_batch_any with ISA I's plans (one, or RISC-V's two chosen by alignment) compiled in: the same
// phase() and run_step() over the same steps, sites in the same order, the same syncs. The shim holds no
// Plan object this way (their pointers would need relocating).
//
// with_site_plan calls f(std::integral_constant<unsigned, K>{}) with K the index of ISA I's plan for the
// site of `len` bytes at `addr` (arch::plan_index), a compile-time constant in f.
template <arch::Isa I, class F>
void with_site_plan(u64 addr, unsigned len, F f) {
  if constexpr (arch::plan_count(I) > 1) {
    if (arch::plan_index(I, addr, len) == 1) return f(std::integral_constant<unsigned, 1>{});
  }
  f(std::integral_constant<unsigned, 0>{});
}
template <arch::Isa I, unsigned Ph, class Sites, class Memory>
u64 run_phase_of(Sites& sites, Memory& mem) {
  u64 stores = 0;
  bool sync = false;
  for (u64 i = 0, n = sites.count(); i < n; i++) {
    if (!sites.changes(i)) continue;
    const u64 addr = sites.addr(i);
    with_site_plan<I>(addr, sites.len(i), [&](auto k) { sync |= run_site_phase<I, decltype(k)::value, Ph>(sites, i, addr, mem, stores); });
  }
  if (sync) mem.sync();
  return stores;
}
// The most phases any of ISA I's plans has.
template <arch::Isa I>
constexpr unsigned isa_phases() {
  unsigned n = 0;
  for (unsigned k = 0; k < arch::plan_count(I); k++)
    if (arch::phase_count(*arch::isa_plan(I, k)) > n) n = arch::phase_count(*arch::isa_plan(I, k));
  return n;
}
template <arch::Isa I, class Sites, class Memory>
u64 run_batch_of(Sites& sites, Memory& mem) {
  return [&]<unsigned... Ph>(std::integer_sequence<unsigned, Ph...>) {
    return (u64{0} + ... + run_phase_of<I, Ph>(sites, mem));
  }(std::make_integer_sequence<unsigned, isa_phases<I>()>{});
}

// The same plans run site by site instead of phase by phase: each site through all of its phases'
// stores before the next, one sync at the end. Only for a batch that no other thread can see
// (shim/runtime/toggle.inc: at start, the process's one thread, its signals blocked), where a sync
// between phases would order nothing: each site goes through the same states with the same stores,
// and the batch walks the sites (and their text) once instead of once per phase.
template <arch::Isa I, class Sites, class Memory>
u64 run_batch_alone_of(Sites& sites, Memory& mem) {
  u64 stores = 0;
  bool sync = false;
  for (u64 i = 0, n = sites.count(); i < n; i++) {
    if (!sites.changes(i)) continue;
    const u64 addr = sites.addr(i);
    with_site_plan<I>(addr, sites.len(i), [&](auto k) {
      constexpr unsigned K = decltype(k)::value;
      [&]<unsigned... Ph>(std::integer_sequence<unsigned, Ph...>) {
        ((sync |= run_site_phase<I, K, Ph>(sites, i, addr, mem, stores)), ...);
      }(std::make_integer_sequence<unsigned, arch::phase_count(*arch::isa_plan(I, K))>{});
    });
  }
  if (sync) mem.sync();
  return stores;
}

// Runs a batch through the executor compiled for the ISA's plans.
template <class Sites, class Memory>
u64 run_batch(arch::Isa isa, Sites& sites, Memory& mem) {
  switch (isa) {
    case arch::Isa::x86_64: return run_batch_of<arch::Isa::x86_64>(sites, mem);
    case arch::Isa::aarch64: return run_batch_of<arch::Isa::aarch64>(sites, mem);
    case arch::Isa::ppc64le: return run_batch_of<arch::Isa::ppc64le>(sites, mem);
    case arch::Isa::riscv64: return run_batch_of<arch::Isa::riscv64>(sites, mem);
    case arch::Isa::thumb2: return run_batch_of<arch::Isa::thumb2>(sites, mem);
  }
  return 0;  // (no other Isa; run_batch_any here would make the shim hold Plan objects)
}

// The bytes of a site's two forms on ELF machine `machine`: off, x86-64's canonical nop of its length
// or the ISA's nop word; on, its call form to `trampoline`. False when the call cannot be encoded
// (unknown form, out of reach).
inline bool site_form(u16 machine, bool on, u64 addr, u8 len, u8 call_form, u64 trampoline, u8* out) {
  if (!on) return arch::off_form(machine, len, out);
  auto f = static_cast<arch::CallForm>(call_form);
  return arch::call_form_length(f) == len && arch::encode_call_form(f, addr, trampoline, out);
}

// ---- tracing -----------------------------------------------------------------------------------

// The site hash: a site's run-time end (the return address its call pushes) -> a value (the site's
// index, or for the count tracer the address of its counter). Open addressing with linear probing and
// no wrap-around: `site_hash_slack` slots follow the mask's range and the last of them always stays
// empty, so every lookup ends. Filled while sites are enabled, before any becomes a call; an entry is
// never removed (one of a disabled site is harmless, and one of an object unloaded since is replaced
// when a site loaded at its address is enabled). shim/entry_x86_64.S's count trampoline repeats find()
// in assembly.
//
// A key's home slot is bits 32 and up of (key - base) * mult, masked (HashShape). Two kinds of
// multiplier:
// - in address order (site_hash_ordered(shift): (key - base) >> shift, base the first site of the
//   largest object), where the sites' ends spread over the slots with short probes (site_hash_probes
//   says): calls and inserts that walk the text in order walk the slots in order, a cache line
//   serving four sites, instead of a cache miss each, and the sites' slots start at the first;
// - scattered (site_hash_mult, Fibonacci hashing, base 0) otherwise.
struct SiteHashSlot {
  u64 key, value;
};
inline constexpr u64 site_hash_mult = 0x9E3779B97F4A7C15, site_hash_slack = 64;
inline constexpr u64 site_hash_ordered(unsigned shift) { return u64{1} << (32 - shift); }
inline u64 site_hash_home(u64 key, u64 mask, u64 mult) { return ((key * mult) >> 32) & mask; }
struct HashShape {
  u64 mask, mult, base;
  u64 home(u64 key) const { return site_hash_home(key - base, mask, mult); }
};
// The mask for `sites` entries: a load factor of at most one half.
inline u64 site_hash_mask(u64 sites) {
  u64 n = 64;
  while (n < 2 * sites) n *= 2;
  return n - 1;
}
inline u64 site_hash_size(u64 mask) { return mask + 1 + site_hash_slack; }

// What site_hash_insert did: no room on the key's probe path, replaced the value of the key's entry
// (no thread calls that site while it is enabled), or added an entry.
enum class HashInsert { full, replaced, added };
inline HashInsert site_hash_insert(SiteHashSlot* t, const HashShape& s, u64 key, u64 value) {
  for (u64 i = s.home(key); i < s.mask + site_hash_slack; i++) {  // never the last slot
    if (t[i].key == key) return __atomic_store_n(&t[i].value, value, __ATOMIC_RELAXED), HashInsert::replaced;
    if (t[i].key == 0) {
      t[i].value = value;
      __atomic_store_n(&t[i].key, key, __ATOMIC_RELEASE);
      return HashInsert::added;
    }
  }
  return HashInsert::full;
}

inline const SiteHashSlot* site_hash_find(const SiteHashSlot* t, const HashShape& s, u64 key) {
  for (u64 i = s.home(key);; i++) {
    const u64 k = __atomic_load_n(&t[i].key, __ATOMIC_ACQUIRE);
    if (k == key) return &t[i];
    if (k == 0) return nullptr;
  }
}

// How far from home the keys `each` gives may lie in a hash of shape `s`, inserted in any
// order, all of them or any subset: `farthest`, the most slots any is probed past its home, and
// `total`, that summed over the keys; fits = false when some would be probed past `most` or into
// the last slot. A key homed at h lies at or before the first slot s >= h past which no key homed
// at or before s spills: were it past s, the slots from the start of its run to s would hold more
// keys homed there than there are slots. So only homes shared by several keys (or reached by a
// spill) cost probes, in any order. (A key never inserted is probed to the end of its home's run of
// taken slots, which in address order may be long: the trampolines look up only enabled sites.)
// `count` is scratch, a byte per slot (cleared here): how many keys are homed there (up to 127),
// and bit 7 whether keys spill past it. `each(f)` calls f(key) for every key.
struct HashProbes {
  u64 farthest = 0, total = 0;
  bool fits = true;
};
template <class Each>
HashProbes site_hash_probes(const HashShape& s, u64 most, u8* count, Each each) {
  const u64 end = site_hash_size(s.mask), spills = 0x80;
  for (u64 i = 0; i < end; i++) count[i] = 0;
  each([&](u64 key) {
    u8& c = count[s.home(key)];
    c = static_cast<u8>(c + (c < 127));
  });
  // Eight slots at a time where nothing can spill: none holds two keys and none spills into them (end
  // is a multiple of 8). A slot holding two or more keys always spills past itself.
  const auto eight = [count](u64 i) {
    u64 w;
    __builtin_memcpy(&w, count + i, 8);
    return w;
  };
  constexpr u64 ones = 0x0101010101010101;
  HashProbes p;
  u64 spill = 0;  // keys homed at or before slot i that lie past it
  for (u64 i = 0; i < end; i++) {
    if (!spill && i % 8 == 0 && !(eight(i) & ~ones)) {
      i += 7;
      continue;
    }
    spill = spill + (count[i] & 0x7f) > 0 ? spill + (count[i] & 0x7f) - 1 : 0;
    if (spill) count[i] |= spills;
  }
  if (count[end - 2] & spills) return p.fits = false, p;
  for (u64 i = end, run = 0; i-- > 0;) {  // run: slots from i to the first at or after it that nothing spills past
    if (!run && i % 8 == 7 && !(eight(i - 7) & spills * ones)) {  // every key there at home
      i -= 7;
      continue;
    }
    run = count[i] & spills ? run + 1 : 0;
    const u64 keys = count[i] & 0x7f;
    if (keys && (run > most || keys == 127)) return p.fits = false, p;
    if (keys) p.farthest = run > p.farthest ? run : p.farthest, p.total += keys * run;
  }
  return p;
}

// site_hash_probes for keys that `each` gives with their homes in non-decreasing order (one object's
// sites in address order, in a hash in address order whose slots they do not wrap around): the same
// answer from one pass, with no scratch. Placed in that order, a key lies at its home or just past the
// key before it; a key placed at its home starts a run, and every key of a run may lie as far as its
// last (a key homed at h lies no further than the first slot s >= h past which no key spills, and the
// slots of a run all spill into the next but the last). False, and `p` unspecified, when a home is
// lower than the one before: then ask site_hash_probes.
template <class Each>
bool site_hash_probes_sorted(const HashShape& s, u64 most, Each each, HashProbes& p) {
  p = {};
  bool sorted = true, any = false;
  u64 last_home = 0, at = 0, same = 0;            // the last key's home and slot, and the keys homed there
  u64 run_home = 0, run_keys = 0, run_homes = 0;  // the run's first home, its keys and their homes' sum
  const auto end_run = [&] {
    if (at - run_home > most) p.fits = false;
    if (at - run_home > p.farthest) p.farthest = at - run_home;
    p.total += run_keys * at - run_homes;
    run_keys = run_homes = 0;
  };
  each([&](u64 key) {
    const u64 h = s.home(key);
    if (!sorted || (any && h < last_home)) return void(sorted = false);
    same = any && h == last_home ? same + 1 : 1;
    if (same >= 127) p.fits = false;  // (as site_hash_probes, whose count stops there)
    const u64 slot = any && at + 1 > h ? at + 1 : h;
    if (any && slot == h) end_run();
    if (slot == h) run_home = h;
    run_keys++, run_homes += h, at = slot, last_home = h, any = true;
  });
  if (!sorted) return false;
  if (any) end_run();
  if (any && at >= site_hash_size(s.mask) - 1) p.fits = false;  // the last slot must stay empty
  return true;
}

// The process's site hash as the trampolines find it: one block, its shape (mask, multiplier, base)
// and count, then its slots, published through a single pointer (prepatch_hash), so a reader never
// pairs one block's shape with another's slots. It is replaced by a new block that takes the old
// one's entries still wanted and is published in its place; the old one stays mapped (a thread may
// still be reading it; its entries stay true). shim/entry_x86_64.S's trampolines read it at these
// offsets.
struct SiteHash {
  HashShape shape;
  u64 used;  // slots holding an entry
  SiteHashSlot* slots() { return reinterpret_cast<SiteHashSlot*>(this + 1); }
  const SiteHashSlot* slots() const { return reinterpret_cast<const SiteHashSlot*>(this + 1); }
  static u64 bytes(u64 mask) { return sizeof(SiteHash) + site_hash_size(mask) * sizeof(SiteHashSlot); }
  bool insert(u64 key, u64 value) {
    const HashInsert r = site_hash_insert(slots(), shape, key, value);
    used += r == HashInsert::added;
    return r != HashInsert::full;
  }
  const SiteHashSlot* find(u64 key) const { return site_hash_find(slots(), shape, key); }
  // Takes every entry of `from` whose key `keep(key)` wants; false when one does not fit (cannot happen
  // at a load factor of one half short of a pathological address pattern).
  template <class Keep>
  bool take(const SiteHash& from, Keep keep) {
    const SiteHashSlot* s = from.slots();
    for (u64 i = 0; i < site_hash_size(from.shape.mask); i++)
      if (s[i].key && keep(s[i].key) && !insert(s[i].key, s[i].value)) return false;
    return true;
  }
};
static_assert(sizeof(SiteHash) == 32);  // entry_x86_64.S: the mask at 0, the multiplier at 8, the base at 16
static_assert(__builtin_offsetof(SiteHash, shape.mult) == 8 && __builtin_offsetof(SiteHash, shape.base) == 16);

// The graph tracer's per-thread shadow stack: for every traced function the thread is in, where its
// return address lives on the stack (`slot`), the real return address the exit trampoline took the
// place of, and the site. Stacks grow down, so a frame whose slot lies at or below the slot of a new
// call, or below the slot being returned through, belongs to a function that was left without
// returning (longjmp, an exception, a stack switch): such frames are dropped, and `unwound` is told.
// `mark` and `time` serve the record-time filters (shim/runtime/filters.inc): how the call is recorded,
// and when it was entered where its entry is not written yet.
//
// AArch64 keeps a function's return address in x30, not on the stack, and what a traced function
// returns with tells only its stack pointer and x29 (AAPCS64: callee-saved). A frame there is keyed by
// the stack pointer the function was entered with (patchable sites, at the entry) or by the slot of its
// frame record where x30 was saved (-pg's mcount sites, after the prologue), and tagged with x29 as the
// function was entered (`tag`): a return is resolved to the topmost frame with its tag whose key is not
// above the stack pointer returned with (pop_returned). `at` is where its return address is kept on
// the stack once known: an mcount frame's key itself (its record's x30 slot, which `at == slot` tells),
// a patchable frame's record found when an exception passes (relink_records), else 0; bit 0 set: a
// patchable frame whose function signs its return address (pac-ret: relink_records).
struct ShadowFrame {
  u64 slot, ret;
  u32 site, mark;
  u64 time;
#if !defined(__x86_64__)
  u64 tag;
  u64 at;
#endif
};

struct ShadowStack {
  ShadowFrame* frames = nullptr;
  u32 depth = 0, cap = 0;

  template <class F>
  void drop_dead(u64 slot, F unwound) {
    while (depth > 0 && frames[depth - 1].slot <= slot) unwound(frames[depth - 1]), depth--;
  }
  // Copies a frame field by field: a whole-struct copy of a frame just built reads its two 32-bit
  // fields back as one 64-bit word, which the store buffer cannot forward (perf put a sixth of the
  // graph tracer's samples on that load, x86-64).
  static void put(ShadowFrame& to, const ShadowFrame& f) {
    to.slot = f.slot, to.ret = f.ret, to.site = f.site, to.mark = f.mark, to.time = f.time;
#if !defined(__x86_64__)
    to.tag = f.tag, to.at = f.at;
#endif
  }
  // False when full. The frame is written, published by the depth, and written again: a signal
  // handler that ran traced code in between used the same entry and left it stale.
  bool push(const ShadowFrame& f) {
    if (depth == cap) return false;
    const u32 d = depth;
    put(frames[d], f);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    depth = d + 1;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    put(frames[d], f);
    return true;
  }
  // The frame returned through `slot`, popped with every dead frame above it; false when no frame has
  // that slot (the return cannot be resolved).
  template <class F>
  bool pop(u64 slot, ShadowFrame& out, F unwound) {
    while (depth > 0) {
      const ShadowFrame& f = frames[depth - 1];
      if (f.slot == slot) {
        put(out, f);
        depth--;
        return true;
      }
      if (f.slot > slot) return false;
      unwound(f);
      depth--;
    }
    return false;
  }
#if !defined(__x86_64__)
  // AArch64's dead frames at a new call keyed `slot` and tagged `tag`: those keyed at or below it, and
  // one keyed by a frame record with the new call's tag (a sibling left without returning, whose record
  // may lie above the new one's). A tail call (`tail`: entered returning to the exit trampoline) keeps
  // the frame with its tag, its tail caller, whose own record the tail call may have reused.
  template <class F>
  void drop_dead_tagged(u64 slot, u64 tag, bool tail, F unwound) {
    while (depth > 0) {
      const ShadowFrame& f = frames[depth - 1];
      const bool dead = tail ? f.tag != tag && f.slot <= slot : f.slot <= slot || (f.at == f.slot && f.tag == tag);
      if (!dead) return;
      unwound(f), depth--;
    }
  }
  // AArch64: the frame a function returned through with stack pointer `sp` and x29 `tag`, popped with
  // every dead frame above it; false when none (a frame keyed above `sp` belongs to a live caller).
  template <class F>
  bool pop_returned(u64 sp, u64 tag, ShadowFrame& out, F unwound) {
    while (depth > 0) {
      const ShadowFrame& f = frames[depth - 1];
      if (f.slot > sp) return false;
      if (f.tag == tag) {
        put(out, f);
        depth--;
        return true;
      }
      unwound(f);
      depth--;
    }
    return false;
  }
  // AArch64's relink (below): an exception passes, with the stack pointer `sp` and x29 `fp` of the
  // function calling the unwinder (to_real) or catching. Frames keyed at or below `sp` are dead. A
  // live frame's return address is where `at` says; a patchable frame's is first found by walking the
  // frame records from `fp` up to the outermost frame's key (Linux AArch64 code keeps x29 as a frame
  // chain: each record is the caller's x29, then x30): the next record holding `tramp` above the last
  // one taken. A tail callee's frame (its return address the trampoline) shares its caller's. A
  // patchable function built with pac-ret saved its return address signed with its entry stack
  // pointer, the frame's key (`sign(address, key)`, as sys::pac_sign): its record holds the trampoline
  // signed, and gets the real address signed (`at` bit 0 remembers it). Where the signature is 0
  // (signed and unsigned are the same word, 1 in 2^7 or so), bit 0 as pushed decides: whether a paciasp
  // follows the site closely (prepatch_on_site). (An mcount frame's was signed before the site, and
  // is never replaced: prepatch_on_site.)
  template <class F, class Sign>
  void relink_records(u64 sp, u64 fp, u64 tramp, bool to_real, F unwound, Sign sign) {
    drop_dead(sp, unwound);
    if (!depth) return;
    const u64 top = frames[0].slot;
    const auto up = [](u64 rec) {  // the caller's record, or 0 where the chain does not lead up
      const u64 next = *reinterpret_cast<const u64*>(rec);
      return next > rec ? next : 0;
    };
    u64 r = fp;
    for (u32 i = depth; i-- > 0;) {
      ShadowFrame& f = frames[i];
      if (f.ret == tramp) continue;
      const bool mcount = f.at == f.slot;
      const u64 signed_tramp = mcount ? tramp : sign(tramp, f.slot);
      if (!(f.at & ~u64{1}) && to_real)
        for (; r >= sp && r < top && !(r & 7); r = up(r))
          if (const u64 v = *reinterpret_cast<const u64*>(r + 8); v == tramp || v == signed_tramp) {
            if (tramp != signed_tramp) f.at = v == signed_tramp;
            f.at |= r + 8, r = up(r);
            break;
          }
      auto* s = reinterpret_cast<u64*>(f.at & ~u64{1});
      if (!s) continue;
      const bool pac = !mcount && (f.at & 1);
      const u64 hooked = pac ? signed_tramp : tramp, real = pac ? sign(f.ret, f.slot) : f.ret;
      if (*s == (to_real ? hooked : real)) *s = to_real ? real : hooked;
    }
  }
  // RISC-V64's relink (below), its frames keyed by the stack pointer each function was entered with:
  // an exception passes, with the stack pointer `sp` of the function calling the unwinder (to_real) or
  // catching; frames keyed at or below it are dead. A live function saved its return address in its
  // own frame, where its prologue chose (gcc: the frame's top doubleword), and keeps no frame chain: so
  // the slot holding `tramp` nearest below its key, above the next live frame's key (or `sp`), is
  // taken (looked for down from the key, so a stale copy deeper in the stack is not reached first) and
  // kept in `at` for the catch to hook again. A tail callee's frame (its return address the
  // trampoline) shares its tail caller's slot.
  // The same on ARM32 (Thumb-2), where a return address is a word (uptr: the stack is scanned a
  // pointer's width at a time).
  template <class F>
  void relink_scan(u64 sp, u64 tramp, bool to_real, F unwound) {
    drop_dead(sp, unwound);
    constexpr u64 w = sizeof(uptr);
    u64 lo = sp;
    for (u32 i = depth; i-- > 0;) {
      ShadowFrame& f = frames[i];
      if (f.ret == tramp) continue;
      const auto at = [](u64 a) { return u64{*reinterpret_cast<const uptr*>(a)}; };
      if (to_real && (!f.at || (at(f.at) != tramp && at(f.at) != f.ret))) {
        f.at = 0;
        for (u64 a = (f.slot - w) & ~(w - 1); a >= lo && a < f.slot; a -= w)
          if (at(a) == tramp) {
            f.at = a;
            break;
          }
      }
      lo = f.slot;
      if (auto* s = reinterpret_cast<uptr*>(f.at); s && *s == (to_real ? tramp : f.ret)) *s = static_cast<uptr>(to_real ? f.ret : tramp);
    }
  }
#endif
  // An exception passes: `to_real` before the unwinder starts or resumes, with its caller's stack
  // pointer `sp`; else when a handler catches, in the frame whose stack pointer is `sp`. Frames whose
  // slot lies below `sp` are dead and dropped. Then every live frame's slot that returns through `tramp`
  // gets its real return address back, so the unwinder walks the real stack (to_real), or every live
  // slot holding its real return address returns through `tramp` again.
  template <class F>
  void relink(u64 sp, u64 tramp, bool to_real, F unwound) {
    drop_dead(sp - 1, unwound);
    for (u32 i = 0; i < depth; i++) {
      auto* s = reinterpret_cast<u64*>(frames[i].slot);
      const u64 from = to_real ? tramp : frames[i].ret, to = to_real ? frames[i].ret : tramp;
      if (*s == from) *s = to;
    }
  }
};

}  // namespace prepatch::shim
