// The views of a trace file that `prepatch report`, `replay` and `export` print, each streaming the
// file through trace/reader.h in bounded memory, and read_trace, which collects a whole (small) trace
// in memory for tests. A damaged file is read as far as it is sound (TraceFile::problems()).
#pragma once
#include <iosfwd>
#include <span>
#include <string>
#include <vector>

#include "trace/reader.h"
#include "trace/text.h"

namespace prepatch::trace {

struct ThreadTrace {
  u32 tid = 0;
  std::vector<Event> events;  // in the order the thread wrote them
};

// A whole trace in memory: for tests and small files only (the views stream instead).
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

// Throws what TraceFile's constructor throws.
Trace read_trace(const std::string& path);
Trace read_trace(std::span<const u8> bytes, const std::string& path);

// The column a report sorts by, largest first (name: alphabetically). A function trace sorts by calls.
enum class SortBy { total, self, calls, avg, min, max, name };
// What the graph report's duration columns are: total and self time, or a call's average, shortest
// and longest total (--avg-total) or self time (--avg-self).
enum class Averages { none, total, self };
struct ReportOptions {
  SortBy by = SortBy::total;
  Averages averages = Averages::none;
  std::vector<u32> tids;  // empty: every thread
  // Graph only: which calls are counted. A call not counted leaves its time in the self time of the
  // nearest counted call around it.
  u32 depth = 0;          // only calls with fewer callers than this open; 0: all
  u64 threshold = 0;      // only calls lasting at least this (ns)
  std::string functions;  // -F: only calls of these functions (comma-separated globs) and the calls inside them
  std::string notrace;    // -N: not calls of these functions, nor the calls inside them
};
// Per function: calls (and under graph, total and self time or the averages), summed over `files`
// by the function's shown name; each file's threads' streams read by up to `workers` threads at once.
// Throws InputError for files of different tracers, and for graph-only options on a function trace.
void report(const std::vector<TraceFile*>& files, const ReportOptions& o, Output& out, unsigned workers = 2);
// Per function, the rows of `old_files` and of `new_files` side by side, with the change, the
// functions whose sort column moved most first.
void report_diff(const std::vector<TraceFile*>& old_files, const std::vector<TraceFile*>& new_files, const ReportOptions& o, Output& out,
                 unsigned workers = 2);

struct ReplayFilter {
  std::vector<u32> tids;     // empty: every thread
  std::string functions;     // comma-separated globs; a call is shown when it or a caller matches; empty: all
  u32 depth = 0;             // graph: only calls with fewer callers than this open; 0: all
  u64 threshold = 0;         // graph: only calls lasting at least this (ns), each with what it shows inside
  u64 since = 0, until = ~u64{0};  // only lines whose time (ns since the trace began) lies in [since, until]
};
// The events of every thread merged in time order; graph calls nested like ftrace's function_graph,
// each duration marked as ftrace marks it: + over 10 us, ! 100 us, # 1 ms, * 10 ms, @ 100 ms, $ 1 s.
// Throws InputError for a threshold on a function trace (it has no durations).
void replay(TraceFile& t, const ReplayFilter& f, Output& out);

// Chrome Trace Event JSON (Perfetto UI, chrome://tracing): B/E pairs per call for graph, instant
// events for function. Calls still open at the end of a thread's records are closed at its last
// timestamp with args.unfinished = true (args.cut = true in a snapshot, whose calls went on after it);
// the exits of calls entered before a thread's first record kept (a ring, a snapshot) have no event.
void export_chrome(TraceFile& t, Output& out);

// Perfetto's protobuf trace (ui.perfetto.dev, trace_processor): per thread a track (under the
// process's) and a packet sequence of its own, its function names interned and its timestamps deltas
// in ns on CLOCK_MONOTONIC; graph calls as slices (begin and end events), function calls as instant
// events, a fatal signal as an instant event named after it. How a call ended (unwound, cut,
// unfinished, as export_chrome says) and its recorded values are the end event's debug annotations.
void export_perfetto(TraceFile& t, Output& out);

// Collapsed stacks (flamegraph.pl, speedscope, inferno): a line per distinct call stack of a graph
// trace, its functions outermost first separated by `;`, then the ns its innermost one spent itself,
// summed over every thread. Throws InputError for a function trace (it has no durations).
void export_folded(TraceFile& t, Output& out);

// A self-contained interactive SVG flame graph of a graph trace (any browser, no network): outermost
// calls at the bottom, each frame as wide as its call stack's total time (its own and its callees'),
// callees narrower than a pixel merged into one frame per caller; hover shows name, time and share,
// click zooms, Search highlights by regular expression. Throws InputError for a function trace.
void export_svg(TraceFile& t, Output& out);

}  // namespace prepatch::trace
