// Reads a Perfetto trace file (`prepatch export --format perfetto`) as Perfetto's own published
// definitions describe it (../shared/perfetto/perfetto_trace.proto, parsed at run time by libprotobuf,
// each packet decoded against TracePacket), and rebuilds what a viewer shows: the tracks, and each
// track event with its absolute time (its sequence's clock snapshot and delta timestamps), its name
// (its sequence's interned names) and its debug annotations. Anything a viewer could not resolve is a
// problem. Streaming: events are handed over one at a time, so a large file is never held.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "elf/types.h"

namespace prepatch::test {

struct PfTrack {
  u64 uuid = 0, parent = 0;
  u64 pid = 0, tid = 0;       // a thread's (tid != 0), or a process's (pid)
  std::string process_name;
};

struct PfEvent {
  int type = 0;  // TrackEvent.Type: 1 slice begin, 2 slice end, 3 instant
  u64 ts = 0;    // ns, CLOCK_MONOTONIC
  u64 track = 0;
  std::string name;  // empty for a slice's end
  // Debug annotations: a bool as "true", an int in decimal, a pointer as 0x..., an array as [a,b,...].
  std::map<std::string, std::string> args;
};

class PerfettoReader {
 public:
  PerfettoReader();
  ~PerfettoReader();
  // Reads `path`: `event` for every track event, in file order. Returns the tracks; problems() says
  // what did not decode or resolve.
  std::map<u64, PfTrack> read(const std::string& path, const std::function<void(const PfEvent&)>& event);
  const std::vector<std::string>& problems() const { return problems_; }
  u64 packets() const { return packets_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> problems_;
  u64 packets_ = 0;
};

}  // namespace prepatch::test
