// `prepatch export --format chrome`: Chrome Trace Event JSON, one thread after another, each streamed.
#include <cstdio>

#include "trace/calls.h"
#include "trace/trace.h"

namespace prepatch::trace {
namespace {

std::string json_string(std::string_view s) {
  std::string r = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') r += '\\', r += static_cast<char>(c);
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      r += b;
    } else r += static_cast<char>(c);
  }
  return r + '"';
}

class Events {
 public:
  Events(TraceFile& t, Output& out) : t_(t), out_(out), names_(t.sites()) {
    pid_ = ",\"pid\":" + std::to_string(t.header().pid) + ",\"tid\":";
  }
  void thread(u32 tid) {
    tid_ = std::to_string(tid);
  }
  // `name`: a JSON string instead of the site's name.
  void event(const char* ph, u64 ns, u32 site, const char* args, const std::string* name = nullptr) {
    out_.put(first_ ? "\n{\"name\":" : ",\n{\"name\":");
    first_ = false;
    if (!name && names_[site].empty()) names_[site] = json_string(t_.name(site));
    out_.put(name ? *name : names_[site]).put(",\"ph\":\"").put(ph).put("\",\"ts\":");
    out_.commit(put_micros(out_.reserve(max_number), ns));
    out_.put(pid_).put(tid_);
    if (ph[0] == 'i') out_.put(",\"s\":\"t\"");
    if (args) out_.put(",\"args\":").put(args);
    out_.put('}');
  }
  // Graph: B at each call's start, E at its end.
  void enter(std::vector<Call>& open) { event("B", open.back().begin, open.back().site, nullptr); }
  void close(const Call& c, std::vector<Call>&) {
    event("E", c.end, c.site, c.unwound ? "{\"unwound\":true}" : !c.finished ? "{\"unfinished\":true}" : nullptr);
  }

 private:
  TraceFile& t_;
  Output& out_;
  std::vector<std::string> names_;  // per site, as a JSON string
  std::string pid_, tid_;
  bool first_ = true;
};

}  // namespace

void export_chrome(TraceFile& t, Output& out) {
  const shim::TraceHeader& h = t.header();
  out.put("{\"displayTimeUnit\":\"ns\",\"otherData\":{\"tracer\":\"").put(t.graph() ? "graph" : "function").put("\",\"lost\":").num(h.lost)
      .put(",\"unwound\":").num(h.unwound).put("},\"traceEvents\":[");
  Events ev(t, out);
  for (size_t k = 0; k < t.threads(); k++) {
    ev.thread(t.tid(k));
    TraceFile::Stream s(t, k, 256 * 1024, true);
    Event e;
    CallMatcher<Events> m(ev);
    while (s.next(e)) {
      if (e.type == signal_event) {
        // A fatal signal the thread got: an instant event named after it.
        const std::string name = json_string(signal_name(e.rest));
        ev.event("i", e.ns, 0, "{\"signal\":true}", &name);
      } else if (!t.graph()) {
        ev.event("i", e.ns, e.site, nullptr);
      } else {
        m.event(e);
      }
    }
    if (t.graph()) m.finish();
  }
  out.put("\n]}\n");
}

}  // namespace prepatch::trace
