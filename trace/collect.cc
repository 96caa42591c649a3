#include "trace/trace.h"

namespace prepatch::trace {
namespace {

Trace collect(TraceFile& f) {
  Trace t;
  const shim::TraceHeader& h = f.header();
  t.file = f.file();
  t.tracer = f.tracer();
  t.pid = h.pid, t.lost = h.lost, t.unwound = h.unwound, t.tsc_hz = h.tsc_hz, t.realtime0 = h.realtime0;
  t.chunk_capacity = h.chunk_capacity;
  t.chunks = f.chunks();
  t.table = f.table();
  for (u32 s = 0; s < f.sites(); s++) t.names.push_back(f.name(s));
  for (size_t k = 0; k < f.threads(); k++) {
    ThreadTrace th{f.tid(k), {}};
    TraceFile::Stream s(f, k);
    Event e;
    while (s.next(e)) th.events.push_back(e);
    t.threads.push_back(std::move(th));
  }
  t.problems = f.problems();
  return t;
}

}  // namespace

Trace read_trace(const std::string& path) {
  TraceFile f(path);
  return collect(f);
}

Trace read_trace(std::span<const u8> bytes, const std::string& path) {
  TraceFile f(bytes, path);
  return collect(f);
}

}  // namespace prepatch::trace
