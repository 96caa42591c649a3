// Progress of a long read, on a terminal: one line on stderr ("prepatch export: 42% of 1.10 GB of
// records"), drawn once the work has run half a second (PREPATCH_PROGRESS_DELAY=SECONDS), redrawn at most five times a second, and
// erased when the last record has been read (before a report prints its table). Nothing when
// stderr is not a terminal, or when the output goes to the same terminal.
#pragma once
#include <chrono>
#include <mutex>
#include <string>

#include "trace/reader.h"

namespace prepatch::trace {

class Progress {
 public:
  // `what`: the command, as the line names it; `show`: whether to draw at all.
  Progress(TraceFile& t, std::string what, bool show);
  ~Progress();  // erases the line if it is still there
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  void update(u64 done, u64 total);
  void erase();

  TraceFile& t_;
  std::string what_;
  std::mutex m_;
  std::chrono::steady_clock::time_point start_, last_;
  std::chrono::steady_clock::duration delay_{};
  bool shown_ = false, finished_ = false;
};

}  // namespace prepatch::trace
