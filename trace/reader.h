// Reading a trace file (shim/abi.h TraceHeader, docs/FORMAT.md) as streams, one per thread, in memory
// bounded by the number of threads and sites, whatever the file's length: the header, the site table
// and the chunk headers are read up front; a thread's records are read a window at a time as its
// stream is consumed. A damaged file is read as far as it is sound: what is intact is returned, what
// is not is listed by problems(), naming the offset.
#pragma once
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "rewriter/table.h"
#include "shim/abi.h"
#include "shim/core.h"

namespace prepatch::trace {

struct Event {
  u64 ns;    // since the trace file was created
  u8 type;   // shim::RecordType, or signal_event
  u32 site;  // index into the table
  u64 rest;  // depth (entry, exit, unwound), the caller's number (call: TraceFile::caller), or the signal
};
// Not a record: where the thread got a fatal signal (ChunkHeader::signal), `rest` its number, `ns`
// its last event's time, `site` 0. Only a Stream made with `signals` yields it.
inline constexpr u8 signal_event = 4;
// Not a record of its own: a value recorded with the record before it (shim/abi.h rec_site_value):
// `site` its index (0-5: argument 1-6 of an entry or call, 7: an exit's return value), `rest` the
// value, `ns` the record's time. Only a Stream made with `values` yields it.
inline constexpr u8 value_event = 5;
// The name of signal `sig` as the shim marks them: SIGSEGV, SIGBUS, SIGABRT, or "signal N".
std::string signal_name(u64 sig);

// TSC ticks to nanoseconds since the file's tsc0, exactly floor((tsc - tsc0) * 1e9 / hz) (0 before
// tsc0), by a reciprocal multiplication corrected to the exact quotient: no 128-bit division per event.
class Clock {
 public:
  Clock() = default;
  Clock(u64 tsc0, u64 hz);
  u64 ns(u64 tsc) const {
    if (tsc < tsc0_) return 0;
    const u64 d = tsc - tsc0_;
    const unsigned __int128 num = static_cast<unsigned __int128>(d) * 1000000000u;
    u64 q = static_cast<u64>((static_cast<unsigned __int128>(d) * mul_) >> shift_);  // never above the quotient
    const unsigned __int128 rem = num - static_cast<unsigned __int128>(q) * hz_;
    if (rem < hz_) return q;
    if (rem < 2 * static_cast<unsigned __int128>(hz_)) return q + 1;
    return static_cast<u64>(num / hz_);
  }

 private:
  u64 tsc0_ = 0, hz_ = 1, mul_ = 0;
  unsigned shift_ = 0;
};

class TraceFile {
 public:
  // Reads the header, the table copy and every chunk's header. Throws IoError when the file cannot be
  // read, InputError when the header or the table copy is unusable (nothing can be read).
  explicit TraceFile(const std::string& path);
  // The same, for a file's bytes in memory (the fuzzer); `path` names it in messages.
  TraceFile(std::span<const u8> bytes, const std::string& path);
  TraceFile(const TraceFile&) = delete;
  TraceFile& operator=(const TraceFile&) = delete;
  ~TraceFile();

  const std::string& file() const { return path_; }
  shim::Tracer tracer() const { return tracer_; }
  bool graph() const { return tracer_ == shim::Tracer::graph; }
  const shim::TraceHeader& header() const { return h_; }
  u64 chunks() const { return chunks_; }  // claimed, at most the capacity
  // The table of the object the header describes (the one whose runtime wrote the file).
  const Table& table() const { return objects_[0].table; }
  // Sites of every object recorded: numbers in records run from 0 to sites() - 1 (a number no object
  // recorded claims, where a record was lost, names no site).
  u32 sites() const { return static_cast<u32>(owner_.size()); }
  // Names as raw symbols (--mangled) instead of demangled: before the first name().
  void show_mangled(bool raw) { show_mangled_ = raw; }
  // As README.md's "Names" says, made on first use; threads may ask at once (a lock only then).
  const std::string& name(u32 site) {
    if (!named_[site].load(std::memory_order_acquire)) make_name(site);
    return names_[site];
  }
  // The name as a call: "f()" for a C name, the demangled name as it is (it has its parameters).
  const std::string& call(u32 site) {
    if (!named_[site].load(std::memory_order_acquire)) make_name(site);
    return calls_[site];
  }
  std::string_view mangled(u32 site) const {
    const Object& o = objects_[owner_[site]];
    return o.table.name(o.table.entries[site - o.first]);
  }
  // What globs match (trace/wanted.h): the raw symbol, or where no symbol named the function (a
  // stripped binary) its site's address as name() shows it, as the shim's globs do.
  std::string glob_name(u32 site) const;
  // The file of the object a site is in, as the process loaded it (the header's `object` for its own;
  // empty in files written before it was recorded), and its base name, which OBJECT:FUNCTION globs
  // match; which objects were recorded.
  const std::string& object(u32 site) const { return objects_[owner_[site]].path; }
  std::string object_base(u32 site) const { return shim::base_name(object(site).c_str()); }
  bool known(u32 site) const { return site < owner_.size() && owner_[site] != no_object; }
  // A function record's caller number (Event::rest): the site of the traced function it lies in (the
  // one whose site precedes it most closely in its object), or -1; `link` gets its link-time address
  // in that object.
  long caller(u64 number, u64& link) const;
  size_t objects() const { return objects_.size(); }
  const Clock& clock() const { return clock_; }
  // Called as streams read records: the bytes of records read so far by every stream, and the file's
  // (a reader that reads a thread twice passes the total). From the streams' threads, maybe at once.
  void on_progress(std::function<void(u64 done, u64 total)> f) { progress_ = std::move(f); }

  size_t threads() const { return threads_.size(); }  // by tid
  u32 tid(size_t k) const { return threads_[k].tid; }
  // The damage found: the header walk's, then each thread's bad records once a stream of it ended.
  std::vector<std::string> problems() const;

  class Stream;

 private:
  friend class Stream;
  struct Chunk {
    u64 offset, tsc, seq, used, depth;
    u32 signal = 0, signal_at = 0;  // a fatal signal the thread got in it, after signal_at bytes of records
  };
  struct Thread {
    u32 tid;
    std::vector<Chunk> chunks;  // in the order written (by TSC, then number)
    u64 bad = 0, bad_at = 0;    // records skipped, the first one's offset
  };
  // An object recorded: the header's (first 0), then those of ObjectChunk records, by first site.
  struct Object {
    u64 first;
    Table table;
    std::string path;
    u64 caller_base = 0, caller_lo = 0, caller_span = ~u64{0};  // shim::ObjectChunk's; the header's object: all below the others'
  };
  static constexpr u32 no_object = ~u32{0};
  void open();
  // Reads the object record (shim/abi.h ObjectChunk) at `off`, chunk `k`; how many chunks it spans
  // (1 when it is unusable: that is a problem, and the next chunk is read as usual).
  u64 read_object(u64 off, u64 k, std::vector<u8>& buf);
  void number_sites();
  void make_name(u32 site);
  // Reads [off, off + len) into `buf` (or points into the bytes in memory); returns the bytes' start.
  const u8* fetch(u64 off, u64 len, std::vector<u8>& buf) const;

  std::string path_;
  int fd_ = -1;
  std::span<const u8> bytes_;  // when read from memory
  u64 size_ = 0;
  shim::TraceHeader h_{};
  shim::Tracer tracer_ = shim::Tracer::function;
  u64 chunks_ = 0;
  std::vector<Object> objects_;
  std::vector<u32> owner_;              // per site number: its object's index in objects_, or no_object
  std::vector<bool> ambiguous_;         // per site number: another object has a function of its name
  std::vector<std::string> names_, calls_;
  std::unique_ptr<std::atomic<bool>[]> named_;  // names_[site] and calls_[site] are made
  std::mutex naming_;
  bool show_mangled_ = false;
  Clock clock_;
  std::vector<Thread> threads_;
  std::vector<std::string> problems_;
  u64 record_bytes_ = 0;  // every thread's records
  std::atomic<u64> fetched_{0};
  std::function<void(u64, u64)> progress_;
};

// One thread's events in the order the thread wrote them; records that name no site, are of the
// other tracer or leave a depth of 0 are skipped and counted (problems()). Reads `window` bytes at a
// time. With `signals`, a signal_event where the thread got a fatal signal; with `values`, a
// value_event for each value recorded (after the event it belongs to). Streams of different
// threads may run at once, on different threads.
class TraceFile::Stream {
 public:
  Stream(TraceFile& f, size_t thread, u64 window = 256 * 1024, bool signals = false, bool values = false);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  bool next(Event& e) {
    for (;;) {
      if (pos_ == end_) {
        if (!refill()) return false;
        if (signal_) return e = {last_ns_, signal_event, 0, signal_}, signal_ = 0, true;
      }
      const u8* p = pos_;
      pos_ += size_;
      u64 word[2];
      if (graph_) {
        std::memcpy(word, p, 8);
        const u64 info = word[0], type = info & 3, site = info >> shim::rec_site_shift & (shim::rec_site_limit - 1);
        if (site == shim::rec_site_value) {
          if (value(p, type, info >> shim::rec_rest_shift, e)) return true;
          continue;
        }
        const bool leaves = type != shim::rec_entry;
        if (site >= sites_ || owner_[site] == no_object || type == shim::rec_call || (leaves && depth_ == 0)) {
          skip(p);
          continue;
        }
        if (leaves) depth_--;
        e = {last_ns_ = clock_.ns(tsc_ + (info >> shim::rec_rest_shift)), static_cast<u8>(type), static_cast<u32>(site), depth_};
        if (!leaves) depth_++;
        return true;
      }
      std::memcpy(word, p, 16);
      const u64 info = word[1], type = info & 3, site = info >> shim::rec_site_shift & (shim::rec_site_limit - 1);
      if (site == shim::rec_site_value && type == shim::rec_entry && (info >> shim::rec_rest_shift) < 8) {
        if (!values_) continue;
        e = {last_ns_, value_event, static_cast<u32>(info >> shim::rec_rest_shift), word[0]};
        return true;
      }
      if (site >= sites_ || owner_[site] == no_object || type != shim::rec_call) {
        skip(p);
        continue;
      }
      e = {last_ns_ = clock_.ns(word[0]), static_cast<u8>(type), static_cast<u32>(site), info >> shim::rec_rest_shift};
      return true;
    }
  }

 private:
  bool refill();
  void skip(const u8* p);
  // A graph value record at `p` (type, rest): true with the value in `e` when it completes one.
  bool value(const u8* p, u64 type, u64 rest, Event& e);
  TraceFile& f_;
  TraceFile::Thread& th_;
  const Clock clock_;
  const bool graph_;
  const u64 size_, sites_, window_;
  const u32* owner_;
  std::vector<u8> buf_;
  size_t chunk_ = 0;          // the next chunk to read from
  u64 done_ = 0;              // bytes of records of chunk_ - 1 already read
  u64 base_ = 0;              // the file offset of the window's first byte
  const u8 *start_ = nullptr, *pos_ = nullptr, *end_ = nullptr;
  u64 depth_ = 0, tsc_ = 0;   // graph: the depth before the next record; the current chunk's TSC
  u64 bad_ = 0, bad_at_ = 0;
  const bool signals_;
  u64 last_ns_ = 0;           // the last event's time
  u32 signal_ = 0;            // a signal_event to yield next
  bool signal_done_ = false;  // chunk_'s signal was yielded
  const bool values_;
  bool continued_ = false;    // graph: a value's low bits were read, its high bits come next
  u64 low_ = 0, index_ = 0;
};

}  // namespace prepatch::trace
