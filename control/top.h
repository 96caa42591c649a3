// `prepatch top PID`: a live view of a running prepared process's hottest functions, like `perf top`.
// It reads the count tracer's counters (the counts file the shim keeps) once per interval and shows
// calls per second. When no site was enabled, it enables the functions asked for (every one by
// default) and disables them again when it quits, so the process is left as it was found; when some
// were enabled already, it shows those and changes nothing.
#pragma once
#include <sys/types.h>

#include <string>

namespace prepatch {

struct TopOptions {
  pid_t pid = 0;
  std::string trace;       // globs to enable for the view (only when none is enabled); empty: `*`
  double interval = 1;     // seconds between refreshes
  unsigned iterations = 0; // refreshes before quitting; 0: until `q` (a terminal) or a signal
  bool mangled = false;    // raw symbols
  unsigned timeout_ms = 10000;  // for each control request
};

// Runs the view on standard output: full screen on a terminal (q quits), one table per refresh when
// piped. Returns the exit code: 0, 4 (the shim refused, the tracer is not `count`, --trace while sites
// are enabled), 5 (the process cannot be reached). Throws IoError / InputError as `control` and
// `read_counts` do.
int top(const TopOptions& o);

}  // namespace prepatch
