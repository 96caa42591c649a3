// `prepatch export --format chrome`: Chrome Trace Event JSON, one thread after another, each streamed.
#include <algorithm>
#include <cstdio>
#include <optional>

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
  // The call's recorded values go with its end (Perfetto and Chrome merge an E event's args into the
  // slice's).
  void close(const Call& c, std::vector<Call>&) {
    std::string args;
    if (c.unwound) args = "\"unwound\":true";
    else if (c.cut) args = "\"cut\":true";
    else if (!c.finished) args = "\"unfinished\":true";
    if (c.args) (args += args.empty() ? "" : ",") += values(matcher_->args(c), c.args);
    if (c.has_retval) (args += args.empty() ? "" : ",") += "\"retval\":" + json_value(c.retval);
    if (!args.empty()) args.insert(args.begin(), '{'), args += '}';
    event("E", c.end, c.site, args.empty() ? nullptr : args.c_str());
  }
  // "args":[...] of `n` values.
  static std::string values(const u64* v, u8 n) {
    std::string r = "\"args\":[";
    for (u8 k = 0; k < n; k++) {
      if (k) r += ',';
      r += json_value(v[k]);
    }
    return r + "]";
  }
  // A value as the views print it: small integers as JSON numbers, the rest as hex strings.
  static std::string json_value(u64 v) {
    const std::string s = value_text(v);
    return s[0] == '0' && s.size() > 1 ? "\"" + s + "\"" : s;
  }
  CallMatcher<Events>* matcher_ = nullptr;

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
    CallMatcher<Events> m(ev);
    ev.matcher_ = &m;
    stream_thread(t, k, m, [&](const Event& e, const u64* args, u8 n) {
      std::string a;
      if (n) a.append(1, '{').append(Events::values(args, n)).append(1, '}');
      ev.event("i", e.ns, e.site, n ? a.c_str() : nullptr);
    }, [&](const Event& e) {  // a fatal signal: an instant event named after it
      const std::string name = json_string(signal_name(e.rest));
      ev.event("i", e.ns, 0, "{\"signal\":true}", &name);
    });
  }
  out.put("\n]}\n");
}

}  // namespace prepatch::trace
