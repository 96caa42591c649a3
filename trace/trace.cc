#include "trace/trace.h"

#include <cxxabi.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <ostream>

#include "elf/mapped_file.h"
#include "shim/core.h"

namespace prepatch::trace {
namespace {

using shim::ChunkHeader;
using shim::TraceHeader;

std::string demangle(std::string_view name) {
  std::string s(name);
  if (s.rfind("_Z", 0) != 0) return s;
  int status = 0;
  char* d = abi::__cxa_demangle(s.c_str(), nullptr, nullptr, &status);
  if (status != 0 || !d) return s;
  std::string r(d);
  std::free(d);
  return r;
}

// A damage found past the header, worded as InputError words the fatal ones.
std::string at(const std::string& file, u64 off, const std::string& what) { return InputError(file, off, what).what(); }

}  // namespace

Trace read_trace(const std::string& path) {
  MappedFile file(path);
  return read_trace(file.bytes(), path);
}

Trace read_trace(std::span<const u8> b, const std::string& path) {
  Trace t;
  t.file = path;
  TraceHeader h;
  if (b.size() < sizeof h) throw InputError(path, b.size(), "the file ends inside the trace header (expected 4096 bytes)");
  std::memcpy(&h, b.data(), sizeof h);
  if (std::memcmp(h.magic, shim::trace_magic, 8) != 0) throw InputError(path, 0, "expected the trace magic \"PPTRACE\\1\"");
  if (h.version != shim::trace_version)
    throw InputError(path, 8, "trace version " + std::to_string(h.version) + ", expected " + std::to_string(shim::trace_version) +
                                  (h.version == 1 ? " (written by an older prepatch, whose graph records were 16 bytes)" : ""));
  if (h.header_size != sizeof h) throw InputError(path, 12, "the header size is not 4096");
  if (h.tracer != static_cast<u32>(shim::Tracer::function) && h.tracer != static_cast<u32>(shim::Tracer::graph))
    throw InputError(path, 16, "the tracer is not function (2) or graph (3)");
  if (h.chunk_size < sizeof(ChunkHeader) + sizeof(shim::TraceRecord) || h.chunk_size % 16)
    throw InputError(path, 20, "the chunk size is too small or not a multiple of 16");
  if (h.table_offset < sizeof h || h.table_offset > b.size() || h.table_size > b.size() - h.table_offset)
    throw InputError(path, 32, "the site table's copy lies outside the file");
  if (h.chunk_offset < h.table_offset + h.table_size) throw InputError(path, 48, "the chunks overlap the site table's copy");
  if (h.tsc_hz == 0) throw InputError(path, 104, "the TSC rate is 0");
  elf::Codec codec;  // x86-64: 64-bit little-endian
  t.table = decode_table(b.subspan(h.table_offset, h.table_size), codec, path, h.table_offset);
  for (const TableEntry& e : t.table.entries) t.names.push_back(demangle(t.table.name(e)));
  t.tracer = static_cast<shim::Tracer>(h.tracer);
  t.pid = h.pid, t.lost = h.lost, t.unwound = h.unwound, t.tsc_hz = h.tsc_hz, t.realtime0 = h.realtime0;
  t.chunk_capacity = h.chunk_capacity;
  t.chunks = std::min(h.chunks_claimed, h.chunk_capacity);

  // Chunks, grouped by thread and ordered by the TSC at which each was claimed.
  struct Chunk {
    u64 offset, tsc, seq, used, depth;
  };
  const bool graph = t.tracer == shim::Tracer::graph;
  const u64 size = graph ? 8 : sizeof(shim::TraceRecord);  // bytes per record
  std::map<u32, std::vector<Chunk>> by_tid;
  const auto ns = [&](u64 tsc) -> u64 {
    if (tsc < h.tsc0) return 0;
    return static_cast<u64>(static_cast<unsigned __int128>(tsc - h.tsc0) * 1000000000u / h.tsc_hz);
  };
  for (u64 k = 0; k < t.chunks; k++) {
    const u64 off = h.chunk_offset + k * h.chunk_size;
    if (off > b.size() || b.size() - off < sizeof(ChunkHeader)) {
      t.problems.push_back(at(path, b.size(), "the file ends before chunk " + std::to_string(k) + " of " + std::to_string(t.chunks) +
                                                   " (truncated?): the chunks from there on are missing"));
      break;
    }
    ChunkHeader c;
    std::memcpy(&c, b.data() + off, sizeof c);
    if (c.magic != shim::chunk_magic) continue;  // claimed, but its writer stopped before writing the header
    u64 used = c.used;
    if (used % size || used > h.chunk_size - sizeof c) {
      t.problems.push_back(at(path, off + 16, "chunk " + std::to_string(k) + "'s record count is corrupt; its records are skipped"));
      continue;
    }
    if (used > b.size() - off - sizeof c) {
      const u64 keep = (b.size() - off - sizeof c) / size * size;
      t.problems.push_back(at(path, b.size(), "the file ends inside chunk " + std::to_string(k) + " (truncated?): " +
                                                  std::to_string((used - keep) / size) + " of its records are missing"));
      used = keep;
    }
    by_tid[c.tid].push_back({off, c.tsc, c.seq, used, c.depth});
  }
  const u64 sites = t.table.entries.size();
  for (auto& [tid, chunks] : by_tid) {
    std::stable_sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) { return a.tsc != b.tsc ? a.tsc < b.tsc : a.seq < b.seq; });
    ThreadTrace th;
    th.tid = tid;
    u64 bad = 0, bad_at = 0;
    for (const Chunk& c : chunks) {
      u64 depth = c.depth;  // graph: the depth before the next record
      for (u64 r = 0; r < c.used / size; r++) {
        const u64 off = c.offset + sizeof(ChunkHeader) + r * size;
        u64 word[2] = {};  // function: the TSC and the info; graph: the info alone (its time is in its top bits)
        std::memcpy(word, b.data() + off, size);
        const u64 info = graph ? word[0] : word[1];
        const u64 type = info & 3, site = info >> shim::rec_site_shift & (shim::rec_site_limit - 1), rest = info >> shim::rec_rest_shift;
        const bool leaves = graph && type != shim::rec_entry;  // an exit or unwound record takes a level off
        if (site >= sites || (graph ? type == shim::rec_call : type != shim::rec_call) || (leaves && depth == 0)) {
          if (!bad++) bad_at = off;
          continue;
        }
        if (!graph) {
          th.events.push_back({ns(word[0]), static_cast<u8>(type), static_cast<u32>(site), rest});
          continue;
        }
        if (leaves) depth--;
        th.events.push_back({ns(c.tsc + rest), static_cast<u8>(type), static_cast<u32>(site), depth});
        if (!leaves) depth++;
      }
    }
    if (bad)
      t.problems.push_back(at(path, bad_at, "thread " + std::to_string(tid) + ": " + std::to_string(bad) +
                                                " records name no site of the table, are of the other tracer or leave a depth of 0; skipped"));
    t.threads.push_back(std::move(th));
  }
  return t;
}

namespace {

// A graph thread's calls: for every entry, where it ends (its exit or unwound record, or none).
struct Call {
  u64 begin, end;  // ns
  u32 site;
  u32 depth;
  bool finished;   // it has an exit record
  bool unwound;    // it was left without returning
  u64 child_ns = 0;
};

// Matches entries with their exits in one thread's graph events. Events that match nothing (an exit
// whose entry was lost) are skipped.
std::vector<Call> calls_of(const ThreadTrace& th) {
  std::vector<Call> calls;
  std::vector<size_t> open;
  const u64 last = th.events.empty() ? 0 : th.events.back().ns;
  for (const Event& e : th.events) {
    if (e.type == shim::rec_entry) {
      // An entry at a depth the open calls do not reach means records were lost: close what is deeper.
      while (open.size() > e.rest) {
        calls[open.back()].end = e.ns;
        open.pop_back();
      }
      calls.push_back({e.ns, e.ns, e.site, static_cast<u32>(open.size()), false, false});
      open.push_back(calls.size() - 1);
      continue;
    }
    // exit or unwound: closes the innermost open call of that site
    auto it = std::find_if(open.rbegin(), open.rend(), [&](size_t i) { return calls[i].site == e.site; });
    if (it == open.rend()) continue;
    const size_t keep = static_cast<size_t>(open.rend() - it) - 1;
    while (open.size() > keep + 1) calls[open.back()].end = e.ns, open.pop_back();
    Call& c = calls[open.back()];
    c.end = e.ns;
    c.finished = e.type == shim::rec_exit;
    c.unwound = e.type == shim::rec_unwound;
    open.pop_back();
  }
  for (size_t i : open) calls[i].end = last;
  // Self time: each call's duration less its direct children's.
  std::vector<size_t> stack;
  for (size_t i = 0; i < calls.size(); i++) {
    while (!stack.empty() && calls[stack.back()].depth >= calls[i].depth) stack.pop_back();
    if (!stack.empty()) calls[stack.back()].child_ns += calls[i].end - calls[i].begin;
    stack.push_back(i);
  }
  return calls;
}

std::string duration(u64 ns) {
  char b[32];
  if (ns < 10000) std::snprintf(b, sizeof b, "%.3f us", ns / 1e3);
  else if (ns < 10000000) std::snprintf(b, sizeof b, "%.3f ms", ns / 1e6);
  else std::snprintf(b, sizeof b, "%.3f s", ns / 1e9);
  return b;
}

}  // namespace

void report(const Trace& t, SortBy by, std::ostream& out) {
  struct Row {
    u64 calls = 0, total = 0, self = 0;
  };
  std::vector<Row> rows(t.names.size());
  const bool graph = t.tracer == shim::Tracer::graph;
  for (const ThreadTrace& th : t.threads) {
    if (!graph) {
      for (const Event& e : th.events) rows[e.site].calls++;
      continue;
    }
    const std::vector<Call> calls = calls_of(th);
    // Total time counts a recursive function's outermost call only, as uftrace does.
    std::vector<u32> active(t.names.size());
    std::vector<size_t> stack;
    for (size_t i = 0; i < calls.size(); i++) {
      const Call& c = calls[i];
      while (!stack.empty() && calls[stack.back()].depth >= c.depth) active[calls[stack.back()].site]--, stack.pop_back();
      Row& r = rows[c.site];
      r.calls++;
      if (!active[c.site]) r.total += c.end - c.begin;
      r.self += c.end - c.begin - std::min(c.child_ns, c.end - c.begin);
      active[c.site]++;
      stack.push_back(i);
    }
  }
  std::vector<u32> order;
  for (u32 i = 0; i < rows.size(); i++)
    if (rows[i].calls) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](u32 a, u32 b) {
    const Row &x = rows[a], &y = rows[b];
    if (!graph || by == SortBy::calls) return x.calls > y.calls;
    return by == SortBy::self ? x.self > y.self : x.total > y.total;
  });
  char line[64];
  if (graph) out << "  Total time   Self time       Calls  Function\n  ==========  ==========  ==========  ========\n";
  else out << "       Calls  Function\n  ==========  ========\n";
  for (u32 i : order) {
    if (graph) {
      std::snprintf(line, sizeof line, "%12s%12s%12" PRIu64 "  ", duration(rows[i].total).c_str(), duration(rows[i].self).c_str(), rows[i].calls);
    } else {
      std::snprintf(line, sizeof line, "%12" PRIu64 "  ", rows[i].calls);
    }
    out << line << t.names[i] << "\n";
  }
}

namespace {

// One line of replay output, for the merge across threads.
struct Line {
  u64 ns;
  u32 tid;
  std::string text;
};

// The lines of one thread, in its own order.
std::vector<Line> thread_lines(const Trace& t, const ThreadTrace& th, const ReplayFilter& f) {
  std::vector<Line> lines;
  const shim::GlobList globs = shim::glob_list(f.functions.empty() ? nullptr : f.functions.c_str());
  const auto wanted = [&](u32 site) { return f.functions.empty() || globs.matches(t.table.name(t.table.entries[site]).data()) ||
                                             globs.matches(t.names[site].c_str()); };
  char b[64];
  if (t.tracer == shim::Tracer::function) {
    for (const Event& e : th.events) {
      if (!wanted(e.site)) continue;
      std::string caller = "?";
      if (e.rest != shim::rec_caller_unknown) {
        // The caller: the traced function whose site precedes the return address most closely.
        auto it = std::upper_bound(t.table.entries.begin(), t.table.entries.end(), e.rest, [](u64 a, const TableEntry& x) { return a < x.addr; });
        caller = it == t.table.entries.begin() ? hex(e.rest) : t.names[static_cast<size_t>(it - t.table.entries.begin()) - 1] + " (" + hex(e.rest) + ")";
      }
      lines.push_back({e.ns, th.tid, t.names[e.site] + "() <- " + caller});
    }
    return lines;
  }
  const std::vector<Call> calls = calls_of(th);
  // A call is shown when it or one of its callers matches; indentation is by depth. A call with no
  // callee is one line; others open a brace that closes when a call at its depth or above begins.
  std::vector<size_t> open;   // shown calls whose brace is open, innermost last
  std::vector<bool> inside;   // per depth: the call open at that depth is shown
  const auto close = [&](size_t i) {
    const Call& c = calls[i];
    std::snprintf(b, sizeof b, "%12s", duration(c.end - c.begin).c_str());
    lines.push_back({c.end, th.tid, std::string(b) + " | " + std::string(2 * c.depth, ' ') + "} /* " + t.names[c.site] +
                                        (c.unwound ? " (unwound)" : !c.finished ? " (unfinished)" : "") + " */"});
  };
  for (size_t i = 0; i < calls.size(); i++) {
    const Call& c = calls[i];
    while (!open.empty() && calls[open.back()].depth >= c.depth) close(open.back()), open.pop_back();
    inside.resize(c.depth + 1);
    const bool show = wanted(c.site) || (c.depth > 0 && inside[c.depth - 1]);
    inside[c.depth] = show;
    if (!show) continue;
    const bool leaf = i + 1 == calls.size() || calls[i + 1].depth <= c.depth;
    if (leaf) {
      std::snprintf(b, sizeof b, "%12s", duration(c.end - c.begin).c_str());
      lines.push_back({c.begin, th.tid, std::string(b) + " | " + std::string(2 * c.depth, ' ') + t.names[c.site] + "();" +
                                            (c.unwound ? " /* unwound */" : !c.finished ? " /* unfinished */" : "")});
    } else {
      lines.push_back({c.begin, th.tid, std::string(12, ' ') + " | " + std::string(2 * c.depth, ' ') + t.names[c.site] + "() {"});
      open.push_back(i);
    }
  }
  while (!open.empty()) close(open.back()), open.pop_back();
  return lines;
}

}  // namespace

void replay(const Trace& t, const ReplayFilter& f, std::ostream& out) {
  std::vector<std::vector<Line>> per;
  for (const ThreadTrace& th : t.threads)
    if (f.tids.empty() || std::find(f.tids.begin(), f.tids.end(), th.tid) != f.tids.end()) per.push_back(thread_lines(t, th, f));
  out << (t.tracer == shim::Tracer::graph ? "#     TIME(us)      TID     DURATION | FUNCTION\n" : "#     TIME(us)      TID  FUNCTION <- CALLER\n");
  // Merge by time, each thread's lines kept in their own order.
  std::vector<size_t> next(per.size());
  char b[48];
  for (;;) {
    size_t best = per.size();
    for (size_t k = 0; k < per.size(); k++)
      if (next[k] < per[k].size() && (best == per.size() || per[k][next[k]].ns < per[best][next[best]].ns)) best = k;
    if (best == per.size()) break;
    const Line& l = per[best][next[best]++];
    std::snprintf(b, sizeof b, "%14.3f %8u  ", l.ns / 1e3, l.tid);
    out << b << l.text << "\n";
  }
}

namespace {

void json_string(std::ostream& out, std::string_view s) {
  out << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out << '\\' << c;
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out << b;
    } else out << c;
  }
  out << '"';
}

}  // namespace

void export_chrome(const Trace& t, std::ostream& out) {
  out << "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"tracer\":\"" << (t.tracer == shim::Tracer::graph ? "graph" : "function")
      << "\",\"lost\":" << t.lost << ",\"unwound\":" << t.unwound << "},\"traceEvents\":[";
  bool first = true;
  char ts[48];
  const auto event = [&](const char* ph, u64 ns, u32 tid, u32 site, const char* args) {
    out << (first ? "\n" : ",\n") << "{\"name\":";
    first = false;
    json_string(out, t.names[site]);
    std::snprintf(ts, sizeof ts, "%.3f", ns / 1e3);
    out << ",\"ph\":\"" << ph << "\",\"ts\":" << ts << ",\"pid\":" << t.pid << ",\"tid\":" << tid;
    if (ph[0] == 'i') out << ",\"s\":\"t\"";
    if (args) out << ",\"args\":" << args;
    out << "}";
  };
  for (const ThreadTrace& th : t.threads) {
    if (t.tracer == shim::Tracer::function) {
      for (const Event& e : th.events) event("i", e.ns, th.tid, e.site, nullptr);
      continue;
    }
    // B at each call's start, E at its end, in nesting order: ends are emitted before the next start
    // at the same or a shallower depth.
    const std::vector<Call> calls = calls_of(th);
    std::vector<size_t> open;
    const auto close = [&](size_t i) {
      const Call& c = calls[i];
      event("E", c.end, th.tid, c.site, c.unwound ? "{\"unwound\":true}" : !c.finished ? "{\"unfinished\":true}" : nullptr);
    };
    for (size_t i = 0; i < calls.size(); i++) {
      while (!open.empty() && calls[open.back()].depth >= calls[i].depth) close(open.back()), open.pop_back();
      event("B", calls[i].begin, th.tid, calls[i].site, nullptr);
      open.push_back(i);
    }
    while (!open.empty()) close(open.back()), open.pop_back();
  }
  out << "\n]}\n";
}

}  // namespace prepatch::trace
