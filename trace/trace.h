// Trace files (shim/abi.h TraceHeader, docs/FORMAT.md): reading them, and the three views `prepatch
// report`, `replay` and `export` print. A damaged file is read as far as it is sound: what is intact is
// returned, what is not is listed in Trace::problems, naming the offset.
#pragma once
#include <iosfwd>
#include <span>
#include <string>
#include <vector>

#include "rewriter/table.h"
#include "shim/abi.h"

namespace prepatch::trace {

struct Event {
  u64 ns;       // since the trace file was created
  u8 type;      // shim::RecordType
  u32 site;     // index into the table
  u64 rest;     // depth (entry, exit, unwound) or the caller's link-time address (call)
};

struct ThreadTrace {
  u32 tid = 0;
  std::vector<Event> events;  // in the order the thread wrote them
};

struct Trace {
  std::string file;
  shim::Tracer tracer = shim::Tracer::function;
  u64 pid = 0, lost = 0, unwound = 0, tsc_hz = 0, realtime0 = 0;
  u64 chunks = 0, chunk_capacity = 0;
  Table table;
  std::vector<std::string> names;     // per site, demangled
  std::vector<ThreadTrace> threads;   // by tid
  std::vector<std::string> problems;  // damage found, each naming the file and offset
};

// Throws InputError when the header or the table copy is unusable (nothing can be read); damage past
// them is collected in problems.
Trace read_trace(const std::string& path);
// The same, for a file's bytes already in memory; `path` names it in messages.
Trace read_trace(std::span<const u8> bytes, const std::string& path);

enum class SortBy { total, self, calls };
void report(const Trace& t, SortBy by, std::ostream& out);

struct ReplayFilter {
  std::vector<u32> tids;     // empty: every thread
  std::string functions;     // comma-separated globs; a call is shown when it or a caller matches; empty: all
};
void replay(const Trace& t, const ReplayFilter& f, std::ostream& out);

// Chrome Trace Event JSON (Perfetto UI, chrome://tracing): B/E pairs per call for graph, instant
// events for function. Calls still open at the end of a thread's records are closed at its last
// timestamp with args.unfinished = true.
void export_chrome(const Trace& t, std::ostream& out);

}  // namespace prepatch::trace
