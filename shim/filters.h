// The record-time filters, the values recorded with calls and the triggers (docs/SHIM.md, "Filters" and
// "Triggers"): set at start by PREPATCH_DEPTH, PREPATCH_THRESHOLD, PREPATCH_GRAPH_FUNCTION,
// PREPATCH_GRAPH_NOTRACE, PREPATCH_TIDS, PREPATCH_RETVAL, PREPATCH_ARGS, PREPATCH_TRIGGER and
// PREPATCH_SNAPSHOTS, and live by `prepatch ctl PID set NAME=VALUE`, both parsed here.
// Freestanding, like shim/settings.h: the shim, gtest and the settings fuzzer run it.
#pragma once
#include "shim/core.h"

namespace prepatch::shim {

// The most bytes a glob setting holds, threads PREPATCH_TIDS names, and arguments recorded (x86-64
// passes the first six integer arguments in registers).
inline constexpr size_t filter_globs_max = 1000;
inline constexpr u32 filter_tids_max = 64, args_max = 6;
// Triggers (PREPATCH_TRIGGER): at most this many, each taking at most `snapshots` snapshots (default 10).
inline constexpr u32 triggers_max = 8, snapshots_default = 10, snapshots_max = 1000000;

// What a trigger does when a call of its functions begins (or, with a duration, ends having lasted it).
enum class TriggerAction : u8 { snapshot, trace_on, trace_off };

struct Filters {
  u32 depth = 0;           // DEPTH: calls deeper than this are not recorded (0: no limit)
  u64 threshold_ns = 0;    // THRESHOLD: only calls lasting this long are recorded (0: every call)
  // Globs ("": none). GRAPH_FUNCTION: only inside calls of these; GRAPH_NOTRACE: nothing inside calls
  // of these, nor they; RETVAL, ARGS: whose return value, whose first `args` arguments are recorded.
  char graph_function[filter_globs_max + 1] = {};
  char graph_notrace[filter_globs_max + 1] = {};
  char retval[filter_globs_max + 1] = {};
  char args[filter_globs_max + 1] = {};
  u32 arg_count = 0;
  u32 tids[filter_tids_max] = {};  // TIDS: only these threads record (tid_count 0: every thread)
  u32 tid_count = 0;
  // TRIGGER: its text ("": none), and each trigger parsed from it: its glob (a part of the text), its
  // duration (`timed`: the call must last trigger_ns, checked at its exit) and action. SNAPSHOTS: the most
  // snapshots each takes.
  char trigger[filter_globs_max + 1] = {};
  u32 trigger_count = 0;
  u16 trigger_at[triggers_max] = {}, trigger_len[triggers_max] = {};
  u64 trigger_ns[triggers_max] = {};
  bool trigger_timed[triggers_max] = {};
  TriggerAction trigger_action[triggers_max] = {};
  u32 snapshots = snapshots_default;

  // Whether any filter or value applies: the tracers' fast path asks this alone.
  bool any() const { return depth || threshold_ns || *graph_function || *graph_notrace || *retval || *args || tid_count || trigger_count; }
  // Whether only the graph tracer can apply the filters set (DEPTH, THRESHOLD, GRAPH_FUNCTION,
  // GRAPH_NOTRACE, RETVAL and a trigger's duration need its shadow stack; TIDS, ARGS and the other
  // triggers work under function too).
  bool need_graph() const {
    bool timed = false;
    for (u32 k = 0; k < trigger_count; k++) timed |= trigger_timed[k];
    return depth || threshold_ns || *graph_function || *graph_notrace || *retval || timed;
  }
  // Whether a trigger turns recording on (recording then starts off when the triggers are set).
  bool starts_off() const {
    for (u32 k = 0; k < trigger_count; k++)
      if (trigger_action[k] == TriggerAction::trace_on) return true;
    return false;
  }
};

// The names `set` takes, without the PREPATCH_ prefix.
enum class Filter { depth, threshold, graph_function, graph_notrace, tids, retval, args, trigger, snapshots, none };
inline constexpr int filter_kinds = 9;
// (Characters, not pointers: the shim has no relocations.)
PREPATCH_CONSTANT char filter_names[filter_kinds][16] = {"DEPTH", "THRESHOLD", "GRAPH_FUNCTION", "GRAPH_NOTRACE", "TIDS",
                                                         "RETVAL", "ARGS", "TRIGGER", "SNAPSHOTS"};

// The filter named by `name` (`len` bytes), with or without the PREPATCH_ prefix, in any case.
inline Filter filter_named(const char* name, size_t len) {
  if (len > 9 && str_eq(name, 9, "PREPATCH_")) name += 9, len -= 9;
  for (int k = 0; k < filter_kinds; k++) {
    const char* f = filter_names[k];
    if (str_len(f) != len) continue;
    size_t i = 0;
    while (i < len && (name[i] == f[i] || (name[i] >= 'a' && name[i] <= 'z' && name[i] - 32 == f[i]))) i++;
    if (i == len) return static_cast<Filter>(k);
  }
  return Filter::none;
}

// A duration: a number and its unit (ns, us, ms, s; microseconds without one, as ftrace's
// tracing_thresh), in ns; false when it is not one or exceeds an hour.
inline bool parse_duration(const char* s, size_t n, u64& ns) {
  size_t i = 0;
  u64 v = 0;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
    if (v > (u64{1} << 50)) return false;  // (far past an hour in any unit; no overflow below)
    v = v * 10 + static_cast<u64>(s[i] - '0');
  }
  if (i == 0) return false;
  const size_t unit = n - i;
  u64 mult = 0;
  if (unit == 0 || (unit == 2 && str_eq(s + i, 2, "us"))) mult = 1000;
  else if (unit == 2 && str_eq(s + i, 2, "ns")) mult = 1;
  else if (unit == 2 && str_eq(s + i, 2, "ms")) mult = 1000000;
  else if (unit == 1 && s[i] == 's') mult = 1000000000;
  else return false;
  if (v > u64{3600} * 1000000000 / mult) return false;
  ns = v * mult;
  return true;
}

// TRIGGER=SPEC[;SPEC...] (`n` bytes), SPEC = GLOB[>DURATION]:ACTION, ACTION snapshot, trace_on or
// trace_off: the triggers of `f` replaced; nullptr, or why not (`f` unchanged then).
inline const char* set_triggers(Filters& f, const char* v, size_t n) {
  if (n > filter_globs_max) return "TRIGGER is longer than 1000 bytes";
  Filters t;
  for (size_t at = 0; at < n;) {
    size_t end = at;
    while (end < n && v[end] != ';') end++;
    if (t.trigger_count == triggers_max) return "TRIGGER: more than 8 triggers";
    size_t colon = end;
    while (colon > at && v[colon - 1] != ':') colon--;
    if (colon == at) return "TRIGGER: a trigger is not GLOB[>DURATION]:ACTION";
    const char* action = v + colon;
    const size_t alen = end - colon;
    const u32 k = t.trigger_count;
    if (alen == 8 && str_eq(action, 8, "snapshot")) t.trigger_action[k] = TriggerAction::snapshot;
    else if (alen == 8 && str_eq(action, 8, "trace_on")) t.trigger_action[k] = TriggerAction::trace_on;
    else if (alen == 9 && str_eq(action, 9, "trace_off")) t.trigger_action[k] = TriggerAction::trace_off;
    else return "TRIGGER: the action is not snapshot, trace_on or trace_off";
    size_t glob_end = colon - 1, gt = glob_end;  // a duration: after the last '>', when it reads as one
    while (gt > at && v[gt - 1] != '>') gt--;
    if (gt > at + 1 && parse_duration(v + gt, glob_end - gt, t.trigger_ns[k])) {
      if (t.trigger_action[k] != TriggerAction::snapshot) return "TRIGGER: only a snapshot takes a duration (GLOB>DURATION:snapshot)";
      t.trigger_timed[k] = true, glob_end = gt - 1;
    }
    if (glob_end == at) return "TRIGGER: a trigger names no function";
    t.trigger_at[k] = static_cast<u16>(at), t.trigger_len[k] = static_cast<u16>(glob_end - at);
    t.trigger_count++;
    at = end + 1;
  }
  __builtin_memcpy(f.trigger, v, n);
  f.trigger[n] = 0;
  f.trigger_count = t.trigger_count;
  __builtin_memcpy(f.trigger_at, t.trigger_at, sizeof t.trigger_at);
  __builtin_memcpy(f.trigger_len, t.trigger_len, sizeof t.trigger_len);
  __builtin_memcpy(f.trigger_ns, t.trigger_ns, sizeof t.trigger_ns);
  __builtin_memcpy(f.trigger_timed, t.trigger_timed, sizeof t.trigger_timed);
  __builtin_memcpy(f.trigger_action, t.trigger_action, sizeof t.trigger_action);
  return nullptr;
}

// Sets filter `which` of `f` to VALUE (`n` bytes; empty: off). nullptr, or why the value is wrong
// (`f` is then unchanged).
inline const char* set_filter(Filters& f, Filter which, const char* v, size_t n) {
  const auto globs = [&](char* to) -> const char* {
    if (n > filter_globs_max) return "the globs are longer than 1000 bytes";
    __builtin_memcpy(to, v, n);
    to[n] = 0;
    return nullptr;
  };
  switch (which) {
    case Filter::depth: {
      u64 d = 0;
      size_t i = 0;
      for (; i < n && v[i] >= '0' && v[i] <= '9' && d < 100000; i++) d = d * 10 + static_cast<u64>(v[i] - '0');
      if (i != n || d >= 100000) return "DEPTH is not a depth (a number below 100000; 0 or empty: no limit)";
      f.depth = static_cast<u32>(d);
      return nullptr;
    }
    case Filter::threshold: {
      u64 ns = 0;
      if (n && !parse_duration(v, n, ns)) return "THRESHOLD is not a duration (a number with ns, us, ms or s, up to an hour; microseconds without)";
      f.threshold_ns = ns;
      return nullptr;
    }
    case Filter::graph_function: return globs(f.graph_function);
    case Filter::graph_notrace: return globs(f.graph_notrace);
    case Filter::retval: return globs(f.retval);
    case Filter::args: {
      // GLOBS[:N]: a last part of digits alone, after some globs, is the count (no function's name is a
      // number).
      size_t end = n, colon = n;
      while (colon > 0 && v[colon - 1] >= '0' && v[colon - 1] <= '9') colon--;
      u32 count = args_max;
      if (colon > 1 && colon < n && v[colon - 1] == ':') {
        if (n - colon > 1 || v[colon] < '1' || v[colon] > '6') return "ARGS: the count after `:` is not between 1 and 6";
        count = static_cast<u32>(v[colon] - '0'), end = colon - 1;
      }
      if (end > filter_globs_max) return "the globs are longer than 1000 bytes";
      __builtin_memcpy(f.args, v, end);
      f.args[end] = 0;
      f.arg_count = end ? count : 0;
      return nullptr;
    }
    case Filter::tids: {
      u32 tids[filter_tids_max], k = 0;
      for (size_t i = 0; i < n;) {
        u64 t = 0;
        const size_t from = i;
        for (; i < n && v[i] >= '0' && v[i] <= '9' && t <= 0xffffffff; i++) t = t * 10 + static_cast<u64>(v[i] - '0');
        if (i == from || t == 0 || t > 0x7fffffff || (i < n && v[i] != ',') || k == filter_tids_max)
          return "TIDS is not a comma-separated list of thread ids (at most 64)";
        tids[k++] = static_cast<u32>(t);
        if (i < n) i++;
        if (i == n && v[n - 1] == ',') return "TIDS is not a comma-separated list of thread ids (at most 64)";
      }
      __builtin_memcpy(f.tids, tids, k * sizeof *tids);
      f.tid_count = k;
      return nullptr;
    }
    case Filter::trigger: return set_triggers(f, v, n);
    case Filter::snapshots: {
      u64 k = 0;
      size_t i = 0;
      for (; i < n && v[i] >= '0' && v[i] <= '9' && k <= snapshots_max; i++) k = k * 10 + static_cast<u64>(v[i] - '0');
      if (i != n || k > snapshots_max) return "SNAPSHOTS is not a number of snapshots (up to 1000000; empty: 10)";
      f.snapshots = n ? static_cast<u32>(k) : snapshots_default;
      return nullptr;
    }
    case Filter::none: break;
  }
  return "unknown filter (expected DEPTH, THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, TIDS, RETVAL, ARGS, TRIGGER or SNAPSHOTS)";
}

// The filter the pair `NAME=VALUE` (`n` bytes) sets in `f`: nullptr, or why not.
inline const char* set_filter_pair(Filters& f, const char* s, size_t n) {
  size_t eq = 0;
  while (eq < n && s[eq] != '=') eq++;
  if (eq == n) return "expected NAME=VALUE (NAME one of DEPTH, THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, TIDS, RETVAL, ARGS, TRIGGER, SNAPSHOTS)";
  return set_filter(f, filter_named(s, eq), s + eq + 1, n - eq - 1);
}

// Sets every filter PREPATCH_* of `envp` names; the first error (with its variable) or nullptr.
inline const char* filters_from_env(Filters& f, char** envp) {
  const char* error = nullptr;
  for (int k = 0; k < filter_kinds; k++) {
    char name[32] = "PREPATCH_";
    __builtin_memcpy(name + 9, filter_names[k], str_len(filter_names[k]) + 1);
    if (const char* v = env_get(envp, name); v && *v)
      if (const char* why = set_filter(f, static_cast<Filter>(k), v, str_len(v)); why && !error) error = why;
  }
  return error;
}

// Why the filters set cannot apply under `tracer`, or nullptr.
inline const char* filters_problem(const Filters& f, Tracer tracer) {
  if (tracer == Tracer::count && f.any()) return "the filters and triggers (PREPATCH_DEPTH, THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, TIDS, RETVAL, ARGS, TRIGGER) need the function or graph tracer";
  if (tracer == Tracer::function && f.need_graph())
    return "DEPTH, THRESHOLD, GRAPH_FUNCTION, GRAPH_NOTRACE, RETVAL and a trigger's duration need the graph tracer (function takes TIDS, ARGS and the other triggers)";
  return nullptr;
}

}  // namespace prepatch::shim
