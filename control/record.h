// `prepatch record`: from a program to a trace in one command. The program is prepared into a cache
// keyed by its content (and by this prepatch's own), or run as it is when already prepared, with the
// shim's variables set from the options; its exit status is passed through (docs/SHIM.md, "record").
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace prepatch {

struct RecordOptions {
  std::string tracer = "graph";  // count, function or graph
  std::string trace = "*";       // PREPATCH_TRACE
  std::string output;            // PREPATCH_OUTPUT (PREPATCH_COUNTS for count); empty: the shim's default
  std::vector<std::string> argv; // the program and its arguments
};

// The program has no sites to trace (exit code 3, nothing to do).
class NoSites : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The cache directory: $XDG_CACHE_HOME/prepatch, else $HOME/.cache/prepatch.
std::string cache_dir();

// The prepared binary to run for `program` (a path): the program itself when it is already prepared,
// else its copy in the cache, prepared first if not there yet. Throws InputError (not ELF, corrupt),
// NoSites (the message says how to build it with hooks) or IoError (unreadable, an unsafe cache).
std::string prepared_for(const std::string& program);

// Runs the program prepared; returns its exit status (128 + N when killed by signal N). Throws as
// prepared_for does, and IoError when the program is not found.
int record(const RecordOptions& o);

}  // namespace prepatch
