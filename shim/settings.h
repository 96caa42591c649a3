// The PREPATCH_* environment variables, parsed into Settings (docs/SHIM.md, "Using it"). Freestanding,
// like shim/core.h: the shim parses its environment with it at start, gtest and a fuzz target
// (fuzz/settings_fuzz.cc) run it on the host. The shim never calls it in a process the kernel marks
// AT_SECURE (SECURITY.md): there the environment belongs to whoever started the program.
#pragma once
#include "arch/plan.h"
#include "shim/abi.h"
#include "shim/core.h"
#include "shim/filters.h"

namespace prepatch::shim {

// The longest PREPATCH_OUTPUT or PREPATCH_COUNTS the shim takes: its buffers hold 512 bytes, and a
// name gains a pid, `.N` and a temporary suffix.
inline constexpr size_t max_path_setting = 500;
// The mode of the files the shim creates (trace, counts, control replies) unless PREPATCH_FILE_MODE
// says otherwise; the umask applies on top, as for any file.
inline constexpr u32 default_file_mode = 0600;

struct Settings {
  Tracer tracer = Tracer::count;     // PREPATCH_TRACER
  const char* trace = nullptr;       // PREPATCH_TRACE: globs enabled at start (nullptr or empty: none)
  const char* notrace = nullptr;     // PREPATCH_NOTRACE
  const char* output = nullptr;      // PREPATCH_OUTPUT (nullptr: prepatch.PID.trace)
  const char* counts = nullptr;      // PREPATCH_COUNTS (nullptr: prepatch.PID.counts)
  u64 buffer_bytes = u64{1024} << 20;  // PREPATCH_BUFFER, in bytes
  u32 ring_chunks = 0;               // PREPATCH_BUFFER=ring:SIZE: each thread's ring, in chunks (0: no ring)
  u32 file_mode = default_file_mode;   // PREPATCH_FILE_MODE
  bool wx_strict = false;            // PREPATCH_WX=strict
  bool sync_signal = false;          // PREPATCH_SYNC=signal
  bool sync_flush_icache = false;    // PREPATCH_SYNC=flush_icache (RISC-V64)
  Filters filters;                   // PREPATCH_DEPTH, _THRESHOLD, _GRAPH_FUNCTION, _GRAPH_NOTRACE, _TIDS, _RETVAL, _ARGS
  const char* error = nullptr;       // the first variable that is wrong, and how: the shim stays off and says so
};

// Parses the PREPATCH_* variables of `envp` for a shim built for `isa`. Every variable is checked; a
// value that is wrong sets `error` (the first one found) and leaves that setting at its default.
inline Settings parse_settings(char** envp, arch::Isa isa) {
  Settings s;
  const auto fail = [&](const char* why) {
    if (!s.error) s.error = why;
  };
  if (const char* t = env_get(envp, "PREPATCH_TRACER"); t && *t) {
    if (str_eq("function", 8, t)) s.tracer = Tracer::function;
    else if (str_eq("graph", 5, t)) s.tracer = Tracer::graph;
    else if (!str_eq("count", 5, t)) fail("PREPATCH_TRACER is not count, function or graph");
  }
  s.trace = env_get(envp, "PREPATCH_TRACE");
  s.notrace = env_get(envp, "PREPATCH_NOTRACE");
  if (const char* p = env_get(envp, "PREPATCH_OUTPUT"); p && *p) {
    if (str_len(p) > max_path_setting) fail("PREPATCH_OUTPUT is longer than 500 bytes");
    else s.output = p;
  }
  if (const char* p = env_get(envp, "PREPATCH_COUNTS"); p && *p) {
    if (str_len(p) > max_path_setting) fail("PREPATCH_COUNTS is longer than 500 bytes");
    else s.counts = p;
  }
  if (const char* p = env_get(envp, "PREPATCH_BUFFER"); p && *p) {
    const bool ring = p[0] == 'r' && p[1] == 'i' && p[2] == 'n' && p[3] == 'g' && p[4] == ':';
    if (ring) p += 5;
    u64 n = 0;
    for (; *p >= '0' && *p <= '9' && n < (u64{1} << 30); p++) n = n * 10 + static_cast<u64>(*p - '0');
    // A ring's size may name its unit (K, M, G: binary); a number alone is MiB, as for the file.
    u64 unit = u64{1} << 20;
    if (ring && (*p == 'K' || *p == 'M' || *p == 'G')) unit = u64{1} << (*p == 'K' ? 10 : *p == 'M' ? 20 : 30), p++;
    const u64 bytes = n * unit;
    if (!ring && (*p || n == 0 || n >= (u64{1} << 30))) fail("PREPATCH_BUFFER is not a size in MiB (1 or more), or ring:SIZE");
    else if (ring && (*p || n == 0 || n >= (u64{1} << 30) || bytes > ring_max_bytes))
      fail("PREPATCH_BUFFER=ring:SIZE is not a size between 1K and 1G (a number with K, M or G; MiB without)");
    else if (ring) s.ring_chunks = static_cast<u32>(bytes < 2 * trace_chunk_bytes ? 2 : (bytes + trace_chunk_bytes - 1) / trace_chunk_bytes);
    else s.buffer_bytes = n << 20;
  }
  if (const char* p = env_get(envp, "PREPATCH_FILE_MODE"); p && *p) {
    u32 mode = 0;
    const char* q = p;
    for (; *q >= '0' && *q <= '7' && mode <= 07777; q++) mode = mode << 3 | static_cast<u32>(*q - '0');
    // Read and write for the owner (a later exec of the same process reads its files back), at most
    // read and write for the others: never execute, set-id or sticky bits.
    if (*q || (mode & ~u32{0666}) || (mode & 0600) != 0600) fail("PREPATCH_FILE_MODE is not an octal mode between 0600 and 0666 (no execute or set-id bits)");
    else s.file_mode = mode;
  }
  if (const char* wx = env_get(envp, "PREPATCH_WX"); wx && *wx) {
    if (!str_eq("strict", 6, wx)) fail("PREPATCH_WX is not strict");
    else s.wx_strict = true;
  }
  if (const char* sync = env_get(envp, "PREPATCH_SYNC"); sync && *sync) {
    s.sync_signal = str_eq("signal", 6, sync);
    s.sync_flush_icache = isa == arch::Isa::riscv64 && str_eq("flush_icache", 12, sync);
    if (!s.sync_signal && !s.sync_flush_icache)
      fail(isa == arch::Isa::riscv64 ? "PREPATCH_SYNC is not signal or flush_icache" : "PREPATCH_SYNC is not signal");
  }
  if (const char* why = filters_from_env(s.filters, envp)) fail(why);
  if (const char* why = filters_problem(s.filters, s.tracer)) s.filters = {}, fail(why);
  return s;
}

}  // namespace prepatch::shim
