// `prepatch ctl PID snapshot [-o FILE]`: a consistent copy of a running process's trace file, taken
// from outside while its threads keep recording (docs/SHIM.md, "Snapshots"). Mostly for the flight
// recorder (PREPATCH_BUFFER=ring:SIZE), whose file keeps only each thread's last events.
#pragma once
#include <sys/types.h>

#include <span>
#include <string>

#include "elf/types.h"

namespace prepatch {
namespace elf {
class TempFile;
}

struct Snapshot {
  std::string trace;  // the process's trace file, as /proc/PID/maps names it
  std::string path;   // the snapshot written
  unsigned long long chunks = 0, dropped = 0;  // chunks copied; chunks left out (rewritten while copied)
};

// Finds the trace file process `pid` writes (a file it maps whose header is a trace file's of that
// pid, opened through /proc/PID/map_files or the process's descriptors, never by its path) and copies
// it to `out` (empty: TRACE.snapshot.N, the first N free, written with the process's user's rights
// where root takes it of another user's process): its header, table copy and object records as they
// are; each chunk with the records complete when its header was read, left out when the thread
// rewrote it meanwhile (a ring wrapped onto it). The copy appears whole or not at all. Throws IoError
// (its text printable) when the process is not this user's (nor is the caller root), has no trace
// file (or cannot be read), or the copy cannot be written.
Snapshot snapshot(pid_t pid, const std::string& out);

// A step of snapshot(), apart for its tests: copies the `n` bytes at `off` of the trace file open as
// `from` to the same offset of `to`. From `mapped`, a read-only mapping of the file's first
// `mapped_size` bytes (nullptr: none), where the range lies in it, so the kernel reads them once;
// else, and where the file was cut under the mapping (the copy's read of it fails with EFAULT, and no
// signal is raised), with pread through `spare` (at least `n` bytes). False when the file has no such
// bytes (it is shorter); throws IoError when the copy cannot be written.
bool copy_records(int from, const u8* mapped, u64 mapped_size, elf::TempFile& to, u64 n, u64 off, std::span<u8> spare);

}  // namespace prepatch
