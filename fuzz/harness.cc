#include "fuzz/harness.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <ostream>
#include <regex>
#include <sstream>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

#include "control/control.h"
#include "control/counts.h"
#include "elf/mapped_file.h"
#include "rewriter/names.h"
#include "rewriter/prepare.h"
#include "rewriter/table.h"
#include "shim/names.h"
#include "shim/settings.h"
#include "trace/trace.h"

namespace prepatch::fuzz {

namespace {

// A promise the preparer broke: reported, then aborted, so the fuzzer keeps the input.
void expect(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz: broken promise: %s\n", what);
  std::abort();
}

class NullBuf : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

}  // namespace

bool prepare_one(std::span<const u8> data, const std::string& dir) {
  const std::string in = "fuzz-input", out = dir + "/out", again = dir + "/again";
  std::remove(out.c_str());
  PrepareResult r;
  try {
    elf::Elf elf(data, in);
    (void)list_sites(elf);
    try {  // the same bytes read as its own separate debug file (rewriter/debug_file.h), whose .symtab discovery reads
      const elf::Elf symbols(data, in + ".debug", true);
      (void)list_sites(elf, &symbols);
    } catch (const InputError&) {
    }
    r = prepare(elf, out, 0644);
  } catch (const InputError&) {
    return false;
  }
  if (r.outcome != PrepareOutcome::written) return false;
  // What was written is a binary the preparer's own reader accepts, with the sites it promised.
  MappedFile file(out);
  try {
    elf::Elf prepared(file.bytes(), out);
    auto t = find_table(prepared);
    expect(t.has_value(), "the output has no __patch_sites table");
    expect(t->table.entries.size() == r.prepared, "the table does not list every prepared site");
    Listing l = list_sites(prepared);
    expect(l.prepared, "prepatch sites does not see the output as prepared");
    expect(prepare(prepared, again, 0644).outcome == PrepareOutcome::already_prepared, "preparing the output again was not refused");
  } catch (const InputError& e) {
    std::fprintf(stderr, "fuzz: the output does not read back: %s\n", e.what());
    std::abort();
  }
  return true;
}

bool trace_one(std::span<const u8> data) {
  std::optional<trace::TraceFile> t;
  try {
    t.emplace(data, "fuzz-trace");
  } catch (const InputError&) {
    return false;
  }
  NullBuf buf;
  std::ostream null(&buf);
  trace::Output out(null);
  for (trace::SortBy by : {trace::SortBy::total, trace::SortBy::self, trace::SortBy::calls}) trace::report({&*t}, {.by = by}, out, 1);
  if (t->graph()) {
    trace::report({&*t}, {.by = trace::SortBy::max, .averages = trace::Averages::self, .depth = 3, .threshold = 100, .functions = "l*", .notrace = "m*"},
                  out, 1);
    trace::report_diff({&*t}, {&*t}, {}, out, 1);
  }
  trace::replay(*t, {}, out);
  trace::replay(*t, {{t->threads() ? t->tid(0) : 1u}, "l*"}, out);
  trace::export_chrome(*t, out);
  trace::export_perfetto(*t, out);
  if (t->graph()) trace::export_folded(*t, out), trace::export_svg(*t, out);
  expect(trace::read_trace(data, "fuzz-trace").problems == t->problems(), "collecting the trace found other damage than streaming it");
  return true;
}

namespace {
bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }
}  // namespace

bool counts_one(std::span<const u8> data) {
  std::vector<CountRow> rows;
  try {
    rows = read_counts(data, "fuzz-counts", {});
  } catch (const InputError&) {
    return false;
  }
  std::vector<std::string> names;
  for (const CountRow& r : rows) names.push_back(name_text(r.function));
  const std::vector<std::string> shown = qualified_names(rows, names);
  expect(shown.size() == rows.size(), "a row left unnamed");
  for (size_t i = 0; i < rows.size(); i++) {
    // The object comes from the counts file, so it is shown with the same replacements as a name.
    expect(shown[i] == names[i] || shown[i] == printable_text(rows[i].object) + ":" + names[i], "a name shown as neither FUNCTION nor OBJECT:FUNCTION");
    expect(std::none_of(shown[i].begin(), shown[i].end(), [](char c) { return is_control(static_cast<unsigned char>(c)); }),
           "a control character in a shown name");
  }
  return true;
}

namespace {

// The little-endian integer of sizeof(T) bytes at `at` in `d`, bytes past its end read as zero.
template <class T>
T take(std::span<const u8> d, size_t at) {
  u64 v = 0;
  for (size_t i = 0; i < sizeof(T); i++)
    if (at + i < d.size()) v |= u64{d[at + i]} << (8 * i);
  return static_cast<T>(v);
}

// Shell-style glob, `*` any run and `?` any one character, by dynamic programming: the reference the
// shim's backtracking glob_match is compared with.
bool reference_glob(std::string_view p, std::string_view s) {
  std::vector<char> row(s.size() + 1, 0), next(s.size() + 1);
  row[0] = 1;  // the empty pattern matches the empty name
  for (char pc : p) {
    next[0] = pc == '*' && row[0];
    for (size_t j = 1; j <= s.size(); j++)
      next[j] = pc == '*' ? (row[j] || next[j - 1]) : (row[j - 1] && (pc == '?' || pc == s[j - 1]));
    row.swap(next);
  }
  return row[s.size()];
}

// The items of a comma-separated glob list, empty ones included.
// The items of a glob list: split at the commas outside parentheses and angle brackets (an unmatched
// closing one does not count).
std::vector<std::string_view> items_of(std::string_view list) {
  std::vector<std::string_view> items;
  size_t from = 0;
  long open = 0;
  for (size_t i = 0; i <= list.size(); i++) {
    if (i == list.size() || (list[i] == ',' && open == 0)) {
      items.push_back(list.substr(from, i - from));
      from = i + 1;
    } else if (list[i] == '(' || list[i] == '<') {
      open++;
    } else if ((list[i] == ')' || list[i] == '>') && open > 0) {
      open--;
    }
  }
  return items;
}

// GlobList's promises (shim/core.h) on `g`, with `extra` as one more name to match.
void check_globs(const shim::GlobList& g, const std::string& extra) {
  const std::string_view list = g.text ? std::string_view(g.text, g.len) : std::string_view();
  const bool empty = g.empty(), all = g.matches_all();
  const std::vector<std::string_view> items = items_of(list);
  bool any_item = false, star_item = false;
  for (std::string_view item : items) {
    any_item |= !item.empty();
    star_item |= !item.empty() && item.find_first_not_of('*') == std::string_view::npos;
  }
  expect(empty == !any_item, "GlobList::empty() is not 'every item is empty'");
  expect(all == star_item, "GlobList::matches_all() is not 'some item is stars only'");
  std::vector<std::string> names = {"some_name", "main", "leaf_1", "", extra};
  // Every item, as a name, matches itself ('*' and '?' match themselves too); a few of them, so an
  // input of many items stays fast.
  for (size_t i = 0; i < items.size() && names.size() < 13; i++)
    if (!items[i].empty() && items[i].size() <= 256 && items[i].find('\0') == std::string_view::npos) names.emplace_back(items[i]);
  const bool compare = list.size() <= 512;  // the reference is quadratic
  for (const std::string& name : names) {
    const bool m = g.matches(name.c_str());
    if (empty) expect(!m, "an empty glob list matched a name");
    if (all) expect(m, "a glob list with a stars-only item did not match every name");
    if (compare) {
      bool want = false;
      for (std::string_view item : items) want |= !item.empty() && reference_glob(item, name);
      expect(m == want, "GlobList::matches() differs from the reference glob matcher");
    }
  }
  for (size_t i = 5; i < names.size(); i++) expect(g.matches(names[i].c_str()), "a glob item does not match itself");
}

// request_file_problem's rules, independently: nullptr exactly when none is broken.
bool request_file_ok(u32 mode, u64 nlink, u32 uid, i64 size, u32 euid, bool root_only) {
  const bool owner = uid == 0 || (!root_only && uid == euid);
  return (mode & 0170000) == 0100000 && nlink == 1 && owner && !(mode & 022) && size >= 0 && size <= i64{shim::ctl_max_request};
}

bool same_problem(const char* a, const char* b) { return a == b || (a && b && std::strcmp(a, b) == 0); }

void check_channel_files(std::span<const u8> data) {
  const u32 mode = take<u32>(data, 0), uid = take<u32>(data, 12), euid = take<u32>(data, 24);
  const u64 nlink = take<u64>(data, 4);
  const i64 size = take<i64>(data, 16);
  const bool root_only = take<u8>(data, 28) & 1;
  for (u32 m : {mode, (mode & 07777) | 0100000, (mode & 07755) | 0100000})
    for (u64 l : {nlink, u64{1}})
      for (u32 u : {uid, euid, u32{0}})
        for (i64 sz : {size, size & 0x1fff})
          for (bool ro : {root_only, !root_only}) {
            const char* p = shim::request_file_problem(m, l, u, sz, euid, ro);
            expect((p == nullptr) == request_file_ok(m, l, u, sz, euid, ro), "request_file_problem does not follow its rules");
            if (p) expect(*p != 0, "request_file_problem gave an empty reason");
            if ((m & 0170000) != 0100000) expect(p, "a request that is not a regular file was accepted");
            if (l != 1) expect(p, "a request file with several names was accepted");
            if (m & 022) expect(p, "a request file writable by group or others was accepted");
            if (sz < 0 || sz > i64{shim::ctl_max_request}) expect(p, "a request file longer than 4096 bytes was accepted");
            if (u != 0 && ro) expect(p, "a request file not owned by root was accepted from root only");
            if (u != 0 && u != euid) expect(p, "a request file of another user was accepted");
            // A file of root's is never refused for its owner: the answer is the same whoever the
            // process is and whether it takes requests from root only, and the same as for its own file.
            if (u == 0) {
              expect(same_problem(p, shim::request_file_problem(m, l, 0, sz, euid + 1, !ro)), "a request file of root's was refused for its owner");
              expect(same_problem(p, shim::request_file_problem(m, l, euid, sz, euid, false)), "root's file and the process's own are told apart");
            }
          }
  for (u32 m : {mode, (mode & 07777) | 0040000, (mode & 07700) | 0040000})
    for (u32 u : {uid, euid}) {
      const bool safe = shim::channel_dir_safe(m, u, euid);
      expect(safe == ((m & 0170000) == 0040000 && u == euid && !(m & 077)), "channel_dir_safe does not follow its rules");
    }
}

}  // namespace

bool request_one(std::span<const u8> data) {
  check_channel_files(data);
  const char* s = data.empty() ? "" : reinterpret_cast<const char*>(data.data());
  const size_t n = data.size();
  const shim::Command c = shim::parse_command(s, n);
  expect((c.verb == shim::Command::invalid) == (c.error != nullptr), "a command is invalid without a reason, or valid with one");
  if (c.error) expect(*c.error != 0, "an invalid command's reason is empty");
  // The line: trailing newlines and spaces are not part of it.
  size_t len = n;
  while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' ')) len--;
  const std::string_view line(s, len);
  bool control = false;
  for (char ch : line) control |= is_control(static_cast<unsigned char>(ch));
  if (control) expect(c.verb == shim::Command::invalid, "a request with a control character was accepted");
  if (c.verb == shim::Command::status) expect(line == "status" || line == "status mangled", "`status` was accepted with another argument than `mangled`");
  expect(c.mangled == (c.verb == shim::Command::status && line == "status mangled"), "`mangled` set for another request than `status mangled`");
  if (c.verb == shim::Command::enable || c.verb == shim::Command::disable) {
    const std::string_view verb = c.verb == shim::Command::enable ? "enable " : "disable ";
    expect(line.substr(0, verb.size()) == verb, "enable or disable accepted from another word");
    expect(!c.globs.empty(), "enable or disable accepted without a glob");
    size_t arg = verb.size();
    while (arg < len && s[arg] == ' ') arg++;
    expect(c.globs.text == s + arg && c.globs.len == len - arg, "the globs are not the rest of the line");
    for (size_t i = 0; i < c.globs.len; i++) {
      const auto ch = static_cast<unsigned char>(c.globs.text[i]);
      expect(!is_control(ch), "accepted globs hold a control character");
    }
  }
  // One more name to match: the input's last bytes, up to a NUL.
  std::string extra(s + (n > 64 ? n - 64 : 0), s + n);
  extra.resize(std::strlen(extra.c_str()));
  check_globs(c.globs, extra);
  return c.verb != shim::Command::invalid;
}

namespace {

// What the first byte of an environment string (modulo 16) puts before the rest (fuzz/harness.h).
constexpr const char* setting_prefixes[16] = {
    "PREPATCH_TRACE=", "PREPATCH_NOTRACE=", "PREPATCH_TRACER=", "PREPATCH_OUTPUT=", "PREPATCH_COUNTS=", "PREPATCH_BUFFER=",
    "PREPATCH_FILE_MODE=", "PREPATCH_WX=", "PREPATCH_SYNC=", "PREPATCH_", "", "PREPATCH_DEPTH=", "PREPATCH_THRESHOLD=", "PREPATCH_ARGS=",
    "PREPATCH_TRIGGER=", ""};

// The first value of each PREPATCH_* variable in an environment, read independently of the shim's
// env_get (once per input: the ISAs share it).
constexpr std::string_view variable_names[] = {"PREPATCH_TRACE",  "PREPATCH_NOTRACE",   "PREPATCH_TRACER", "PREPATCH_OUTPUT", "PREPATCH_COUNTS",
                                               "PREPATCH_BUFFER", "PREPATCH_FILE_MODE", "PREPATCH_WX",     "PREPATCH_SYNC",
                                               "PREPATCH_DEPTH", "PREPATCH_THRESHOLD", "PREPATCH_GRAPH_FUNCTION", "PREPATCH_GRAPH_NOTRACE",
                                               "PREPATCH_TIDS", "PREPATCH_RETVAL", "PREPATCH_ARGS", "PREPATCH_TRIGGER", "PREPATCH_SNAPSHOTS"};
struct Variables {
  const char* values[std::size(variable_names)] = {};
  explicit Variables(const std::vector<std::string>& env) {
    for (size_t i = 0; i < std::size(variable_names); i++) {
      const std::string_view name = variable_names[i];
      for (const std::string& e : env)
        if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') {
          values[i] = e.c_str() + name.size() + 1;
          break;
        }
    }
  }
  const char* operator[](std::string_view name) const {
    for (size_t i = 0; i < std::size(variable_names); i++)
      if (variable_names[i] == name) return values[i];
    std::abort();
  }
};

// `v` as a number of `base` (8 or 10) made of digits only, below `limit`; false when it is not.
bool number_below(std::string_view v, u64 base, u64 limit, u64& out) {
  if (v.empty()) return false;
  out = 0;
  for (char ch : v) {
    if (ch < '0' || ch >= static_cast<char>('0' + base)) return false;
    out = out * base + static_cast<u64>(ch - '0');
    if (out >= limit) return false;
  }
  return true;
}

// The oracle's patterns, compiled once (a fuzzer runs the oracle a million times).
const std::regex duration_re("([0-9]+)(ns|us|ms|s)?"), ring_re("ring:([0-9]+)([KMG]?)");

// The filter variables (shim/filters.h) against an independent reading of `env`: each right one taken,
// a wrong one an error, and filters the tracer cannot apply refused whole. True when all were taken.
bool check_filters(const shim::Settings& s, const Variables& env) {
  const shim::Filters& f = s.filters;
  bool ok = true, any = false, graph_only = false;
  auto set = [&](const char* name) -> const char* {
    const char* v = env[name];
    return v && *v ? v : nullptr;
  };
  shim::Filters want;
  u64 n = 0;
  if (const char* v = set("PREPATCH_DEPTH")) {
    if (number_below(v, 10, 100000, n)) want.depth = static_cast<u32>(n);
    else ok = false;
  }
  // A duration as THRESHOLD and a trigger take it, in ns.
  const auto duration = [&](const std::string& v, u64& ns) {
    std::smatch m;
    const std::string unit = std::regex_match(v, m, duration_re) ? m[2].str() : "?";
    const u64 mult = unit == "ns" ? 1 : unit == "ms" ? 1000000 : unit == "s" ? 1000000000 : unit == "?" ? 0 : 1000;
    if (!mult || !number_below(m[1].str(), 10, u64{1} << 50, n) || n > u64{3600} * 1000000000 / mult) return false;
    ns = n * mult;
    return true;
  };
  if (const char* v = set("PREPATCH_THRESHOLD")) {
    if (!duration(v, want.threshold_ns)) ok = false;
  }
  if (const char* v = set("PREPATCH_SNAPSHOTS")) {
    if (number_below(v, 10, shim::snapshots_max + 1, n)) want.snapshots = static_cast<u32>(n);
    else ok = false;
  }
  if (const char* v = set("PREPATCH_TRIGGER")) {
    // SPEC[;SPEC...]: GLOB[>DURATION]:ACTION, the action after the last ':', the duration after the
    // glob's last '>' when it reads as one (else the '>' is the glob's).
    const std::string all = v;
    shim::Filters t;
    bool good = all.size() <= shim::filter_globs_max;
    for (size_t at = 0; good && at < all.size();) {
      size_t end = all.find(';', at);
      if (end == std::string::npos) end = all.size();
      const std::string spec = all.substr(at, end - at);
      const size_t colon = spec.rfind(':');
      const u32 k = t.trigger_count;
      const std::string action = colon == std::string::npos ? "" : spec.substr(colon + 1);
      std::string glob = colon == std::string::npos ? "" : spec.substr(0, colon);
      const size_t gt = glob.rfind('>');
      u64 ns = 0;
      const bool timed = gt != std::string::npos && gt > 0 && duration(glob.substr(gt + 1), ns);
      if (timed) glob.resize(gt);
      good = k < shim::triggers_max && colon != std::string::npos && (action == "snapshot" || action == "trace_on" || action == "trace_off") &&
             !(timed && action != "snapshot") && !glob.empty();
      if (good) {
        t.trigger_at[k] = static_cast<u16>(at), t.trigger_len[k] = static_cast<u16>(glob.size()), t.trigger_ns[k] = ns, t.trigger_timed[k] = timed;
        t.trigger_action[k] = action == "snapshot" ? shim::TriggerAction::snapshot : action == "trace_on" ? shim::TriggerAction::trace_on : shim::TriggerAction::trace_off;
        t.trigger_count++;
      }
      at = end + 1;
    }
    if (good) {
      std::strcpy(want.trigger, v);
      want.trigger_count = t.trigger_count;
      std::copy(t.trigger_at, t.trigger_at + t.trigger_count, want.trigger_at);
      std::copy(t.trigger_len, t.trigger_len + t.trigger_count, want.trigger_len);
      std::copy(t.trigger_ns, t.trigger_ns + t.trigger_count, want.trigger_ns);
      std::copy(t.trigger_timed, t.trigger_timed + t.trigger_count, want.trigger_timed);
      std::copy(t.trigger_action, t.trigger_action + t.trigger_count, want.trigger_action);
    } else {
      ok = false;
    }
  }
  const auto globs = [&](const char* name, char* into) {
    if (const char* v = set(name)) {
      if (std::strlen(v) <= shim::filter_globs_max) std::strcpy(into, v);
      else ok = false;
    }
  };
  globs("PREPATCH_GRAPH_FUNCTION", want.graph_function);
  globs("PREPATCH_GRAPH_NOTRACE", want.graph_notrace);
  globs("PREPATCH_RETVAL", want.retval);
  if (const char* v = set("PREPATCH_ARGS")) {
    std::string g = v;
    u32 count = shim::args_max;
    // A count: digits alone after the last ':', which is not the first byte (any byte before it: no
    // regex, whose '.' stops at a carriage return).
    const size_t colon = g.rfind(':');
    if (colon != std::string::npos && colon > 0 && colon + 1 < g.size() && g.find_first_not_of("0123456789", colon + 1) == std::string::npos) {
      const std::string digits = g.substr(colon + 1);
      if (digits.size() == 1 && digits[0] >= '1' && digits[0] <= '6') count = static_cast<u32>(digits[0] - '0'), g.resize(colon);
      else g.clear(), ok = false;
    }
    if (g.size() > shim::filter_globs_max) ok = false;
    else if (!g.empty()) std::strcpy(want.args, g.c_str()), want.arg_count = count;
  }
  if (const char* v = set("PREPATCH_TIDS")) {
    std::vector<u32> tids;
    std::string item;
    std::istringstream in(v);
    bool good = v[std::strlen(v) - 1] != ',';
    while (good && std::getline(in, item, ',')) good = number_below(item, 10, u64{1} << 31, n) && n > 0 && tids.size() < shim::filter_tids_max, tids.push_back(static_cast<u32>(n));
    if (good) std::copy(tids.begin(), tids.end(), want.tids), want.tid_count = static_cast<u32>(tids.size());
    else ok = false;
  }
  bool timed = false;
  for (u32 k = 0; k < want.trigger_count; k++) timed |= want.trigger_timed[k];
  any = want.depth || want.threshold_ns || want.graph_function[0] || want.graph_notrace[0] || want.retval[0] || want.args[0] || want.tid_count ||
        want.trigger_count;
  graph_only = want.depth || want.threshold_ns || want.graph_function[0] || want.graph_notrace[0] || want.retval[0] || timed;
  if ((s.tracer == shim::Tracer::count && any) || (s.tracer == shim::Tracer::function && graph_only)) {
    expect(!f.any(), "filters the tracer cannot apply were kept");
    return false;
  }
  expect(f.depth == want.depth && f.threshold_ns == want.threshold_ns && f.arg_count == want.arg_count && f.tid_count == want.tid_count,
         "a filter was not taken as given");
  expect(!std::strcmp(f.graph_function, want.graph_function) && !std::strcmp(f.graph_notrace, want.graph_notrace) &&
             !std::strcmp(f.retval, want.retval) && !std::strcmp(f.args, want.args) && std::equal(want.tids, want.tids + want.tid_count, f.tids),
         "a glob or thread filter was not taken as given");
  expect(!std::strcmp(f.trigger, want.trigger) && f.trigger_count == want.trigger_count && f.snapshots == want.snapshots &&
             std::equal(want.trigger_at, want.trigger_at + want.trigger_count, f.trigger_at) &&
             std::equal(want.trigger_len, want.trigger_len + want.trigger_count, f.trigger_len) &&
             std::equal(want.trigger_ns, want.trigger_ns + want.trigger_count, f.trigger_ns) &&
             std::equal(want.trigger_timed, want.trigger_timed + want.trigger_count, f.trigger_timed) &&
             std::equal(want.trigger_action, want.trigger_action + want.trigger_count, f.trigger_action),
         "a trigger was not taken as given");
  return ok;
}

// parse_settings's answer for `isa`, against an independent reading of `env`; true when every setting
// was taken.
bool check_settings(char** envp, const Variables& env, arch::Isa isa) {
  const shim::Settings s = shim::parse_settings(envp, isa);
  const shim::Settings d;  // the defaults
  const bool riscv = isa == arch::Isa::riscv64;
  bool ok = true;
  auto set = [&](const char* name) -> const char* {
    const char* v = env[name];
    return v && *v ? v : nullptr;
  };
  const std::string_view none;

  // The promises whatever the input.
  expect((s.file_mode & 0600) == 0600 && !(s.file_mode & ~u32{0666}), "file_mode is not between 0600 and 0666");
  expect(s.buffer_bytes > 0 && s.buffer_bytes % (u64{1} << 20) == 0 && s.buffer_bytes < (u64{1} << 50), "buffer_bytes is not a whole number of MiB below 2^50");
  expect(!s.output || std::strlen(s.output) <= shim::max_path_setting, "output is longer than max_path_setting");
  expect(!s.counts || std::strlen(s.counts) <= shim::max_path_setting, "counts is longer than max_path_setting");
  expect(!s.sync_flush_icache || riscv, "sync_flush_icache on another ISA than RISC-V64");
  expect(s.tracer == shim::Tracer::count || s.tracer == shim::Tracer::function || s.tracer == shim::Tracer::graph, "tracer is not a tracer");

  // Each variable: taken when right, else an error and (but for the tracer, see below) the default.
  if (const char* v = set("PREPATCH_TRACER")) {
    const std::string_view t(v);
    const shim::Tracer want = t == "function" ? shim::Tracer::function : t == "graph" ? shim::Tracer::graph : shim::Tracer::count;
    if (t != "count" && t != "function" && t != "graph") {
      ok = false;
      expect(s.tracer == shim::Tracer::count, "an unknown PREPATCH_TRACER did not leave the count tracer");
    } else {
      expect(s.tracer == want, "PREPATCH_TRACER was not taken");
    }
  } else {
    expect(s.tracer == d.tracer, "the tracer is not count without PREPATCH_TRACER");
  }
  expect(s.trace == env["PREPATCH_TRACE"], "trace is not the first PREPATCH_TRACE");
  expect(s.notrace == env["PREPATCH_NOTRACE"], "notrace is not the first PREPATCH_NOTRACE");
  for (const auto& [name, field] : {std::pair{"PREPATCH_OUTPUT", s.output}, std::pair{"PREPATCH_COUNTS", s.counts}}) {
    const char* v = set(name);
    if (v && std::strlen(v) > shim::max_path_setting) {
      ok = false;
      v = nullptr;
    }
    expect(field == v, "PREPATCH_OUTPUT or PREPATCH_COUNTS was not taken as it is (up to 500 bytes)");
  }
  if (const char* v = set("PREPATCH_BUFFER")) {
    u64 mb = 0;
    std::cmatch ring;
    if (std::regex_match(v, ring, ring_re)) {
      // The flight recorder: a size with its unit (MiB without), 1 GiB at most, in chunks, two at least.
      u64 n = 0;
      const u64 unit = ring[2] == "K" ? 1 << 10 : ring[2] == "G" ? 1 << 30 : 1 << 20;
      if (number_below(ring[1].str(), 10, u64{1} << 30, n) && n > 0 && n * unit <= shim::ring_max_bytes) {
        const u64 chunks = std::max<u64>(2, (n * unit + shim::trace_chunk_bytes - 1) / shim::trace_chunk_bytes);
        expect(s.ring_chunks == chunks, "PREPATCH_BUFFER=ring:SIZE was not taken");
      } else {
        ok = false;
        expect(s.ring_chunks == 0, "a wrong PREPATCH_BUFFER=ring:SIZE made a ring");
      }
      expect(s.buffer_bytes == d.buffer_bytes, "a ring changed the file's buffer");
    } else if (number_below(std::string_view(v), 10, u64{1} << 30, mb) && mb > 0) {
      expect(s.buffer_bytes == mb << 20, "PREPATCH_BUFFER was not taken");
    } else {
      ok = false;
      expect(s.buffer_bytes == d.buffer_bytes, "a wrong PREPATCH_BUFFER changed the buffer");
    }
  } else {
    expect(s.buffer_bytes == d.buffer_bytes, "the buffer changed without PREPATCH_BUFFER");
  }
  if (const char* v = set("PREPATCH_FILE_MODE")) {
    u64 mode = 0;
    if (number_below(std::string_view(v), 8, 010000, mode) && !(mode & ~u64{0666}) && (mode & 0600) == 0600) {
      expect(s.file_mode == mode, "PREPATCH_FILE_MODE was not taken");
    } else {
      ok = false;
      expect(s.file_mode == d.file_mode, "a wrong PREPATCH_FILE_MODE changed the mode");
    }
  } else {
    expect(s.file_mode == d.file_mode, "the file mode changed without PREPATCH_FILE_MODE");
  }
  const char* wx = set("PREPATCH_WX");
  if (wx && std::string_view(wx) != "strict") ok = false;
  expect(s.wx_strict == (wx && std::string_view(wx) == "strict"), "wx_strict is not PREPATCH_WX=strict");
  const std::string_view sync = set("PREPATCH_SYNC") ? std::string_view(set("PREPATCH_SYNC")) : none;
  expect(s.sync_signal == (sync == "signal"), "sync_signal is not PREPATCH_SYNC=signal");
  expect(s.sync_flush_icache == (riscv && sync == "flush_icache"), "sync_flush_icache is not PREPATCH_SYNC=flush_icache on RISC-V64");
  if (!sync.empty() && !s.sync_signal && !s.sync_flush_icache) ok = false;
  if (!check_filters(s, env)) ok = false;

  expect((s.error == nullptr) == ok, ok ? "an error for settings that are all right" : "a wrong setting without an error");
  if (s.error) expect(*s.error != 0, "an empty error");
  return ok;
}

}  // namespace

bool settings_one(std::span<const u8> data) {
  // The strings, then the pointers to them (the vector no longer grows).
  std::vector<std::string> env;
  for (size_t at = 0; at <= data.size();) {
    size_t end = at;
    while (end < data.size() && data[end] != 0 && data[end] != '\n') end++;
    if (end > at) {
      const char* rest = reinterpret_cast<const char*>(data.data()) + at + 1;
      const char* prefix = setting_prefixes[data[at] % 16];
      env.push_back(*prefix ? prefix + std::string(rest, end - at - 1) : std::string(rest, end - at - 1));
    } else if (end < data.size()) {
      env.emplace_back();  // an empty string is a (strange) environment entry too
    }
    at = end + 1;
  }
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const Variables variables(env);
  bool taken = false;
  for (arch::Isa isa : arch::all_isas) taken |= check_settings(envp.data(), variables, isa);
  if (env.empty()) {
    const shim::Settings s = shim::parse_settings(nullptr, arch::Isa::x86_64);
    expect(!s.error && !s.trace && !s.output && s.tracer == shim::Tracer::count, "no environment gave settings other than the defaults");
  }
  return taken;
}

bool reply_one(std::span<const u8> data) {
  const std::string_view in(reinterpret_cast<const char*>(data.data()), data.size());
  const ParsedReply r = parse_reply(in);
  const auto c1_at = [](std::string_view t, size_t i) {  // a C1 control in UTF-8: c2 80..c2 9f
    return i + 1 < t.size() && static_cast<unsigned char>(t[i]) == 0xc2 && static_cast<unsigned char>(t[i + 1]) >= 0x80 &&
           static_cast<unsigned char>(t[i + 1]) <= 0x9f;
  };
  for (size_t i = 0; i < r.text.size(); i++) {
    const auto u = static_cast<unsigned char>(r.text[i]);
    expect(!(is_control(u) && r.text[i] != '\n' && r.text[i] != '\t'), "the reply shown holds a control character");
    expect(!c1_at(r.text, i), "the reply shown holds a C1 control character");
  }
  expect(!r.text.empty() && r.text.back() == '\n', "the reply shown does not end in a newline");
  const auto starts = [&](std::string_view w) { return in.substr(0, w.size()) == w; };
  const ReplyKind want = starts("ok:") ? ReplyKind::ok : starts("error:") ? ReplyKind::error : starts("busy") ? ReplyKind::busy : ReplyKind::malformed;
  expect(r.kind == want, "the reply's kind does not follow its first word");
  if (r.kind != ReplyKind::malformed) {
    // The reply itself, with its control characters (C0, DEL, UTF-8 C1) shown as '?' and a newline added if it had none.
    std::string shown;
    for (size_t i = 0; i < in.size(); i++) {
      if (c1_at(in, i)) shown += "??", i++;
      else shown += is_control(static_cast<unsigned char>(in[i])) && in[i] != '\n' && in[i] != '\t' ? '?' : in[i];
    }
    if (shown.back() != '\n') shown += '\n';
    expect(r.text == shown, "the reply shown is not the reply with its control characters replaced");
  }
  return r.kind != ReplyKind::malformed;
}

bool demangle_one(std::span<const u8> data) {
  static shim::Demangler d;  // ~80 KB: not on the stack
  static char out[4096];
  std::string name(reinterpret_cast<const char*>(data.data()), data.size());
  name.resize(std::strlen(name.c_str()));
  const shim::Demangled r = d.run(name.data(), name.size(), out, sizeof out);
  expect(r.len <= sizeof out && r.name_begin <= r.name_end && r.name_end <= r.len, "the name's span lies outside the text");
  if (r.len) {
    int status = 0;
    char* gnu = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
    if (!gnu || std::string_view(out, r.len) != gnu) {
      std::fprintf(stderr, "fuzz: %s\n  ours: %.*s\n  GNU:  %s\n", name.c_str(), static_cast<int>(r.len), out, gnu ? gnu : "(rejected)");
      std::abort();
    }
    std::free(gnu);
  }
  static char forms_out[4096];
  shim::NameForms forms(d, forms_out, sizeof forms_out, "libfuzz.so.1");  // OBJECT:FUNCTION items matched too
  const std::string globs(reinterpret_cast<const char*>(data.data()), data.size());
  forms.matches(shim::GlobList{globs.data(), globs.size()}, name.c_str());
  size_t len = 0;
  forms.shown(name.c_str(), len);
  return r.len != 0;
}

}  // namespace prepatch::fuzz
