#include "trace/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "elf/mapped_file.h"
#include "rewriter/names.h"

namespace prepatch::trace {
namespace {

using shim::ChunkHeader;
using shim::TraceHeader;

// A damage found past the header, worded as InputError words the fatal ones.
std::string at(const std::string& file, u64 off, const std::string& what) { return InputError(file, off, what).what(); }

}  // namespace

Clock::Clock(u64 tsc0, u64 hz) : tsc0_(tsc0), hz_(hz) {
  // mul_ = floor(2^shift_ * 1e9 / hz) with the largest shift_ <= 64 that keeps it in 64 bits, so the
  // estimate d * mul_ >> shift_ never exceeds the quotient and is exact or one short for any d that
  // real traces reach; ns() corrects it, and divides when it is further off.
  unsigned __int128 m = (static_cast<unsigned __int128>(1000000000u) << 64) / hz;
  shift_ = 64;
  while (m >> 64) m >>= 1, shift_--;
  mul_ = static_cast<u64>(m);
}

TraceFile::TraceFile(const std::string& path) : path_(path) {
  struct stat st;
  fd_ = open_regular_file(path, st);
  size_ = static_cast<u64>(st.st_size);
  ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  try {
    open();
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

TraceFile::TraceFile(std::span<const u8> bytes, const std::string& path) : path_(path), bytes_(bytes), size_(bytes.size()) { open(); }

TraceFile::~TraceFile() {
  if (fd_ >= 0) ::close(fd_);
}

const u8* TraceFile::fetch(u64 off, u64 len, std::vector<u8>& buf) const {
  if (fd_ < 0) return bytes_.data() + off;  // within the size, checked by the caller
  if (buf.size() < len) buf.resize(len);
  u64 got = 0;
  while (got < len) {
    const ssize_t n = ::pread(fd_, buf.data() + got, len - got, static_cast<off_t>(off + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError(path_ + ": cannot read at offset " + hex(off + got) + ": " + std::strerror(errno));
    if (n == 0) throw IoError(path_ + ": the file shrank while it was read (at offset " + hex(off + got) + ")");
    got += static_cast<u64>(n);
  }
  return buf.data();
}

void TraceFile::open() {
  const std::string& path = path_;
  std::vector<u8> buf;
  if (size_ < sizeof h_) {
    // A file too short to be one: not a trace file at all, unless it starts as one.
    std::vector<u8> start(std::min<u64>(size_, 8));
    const bool magic = !start.empty() && std::memcmp(fetch(0, start.size(), start), shim::trace_magic, start.size()) == 0;
    if (!magic) throw InputError(path, 0, "expected the trace magic \"PPTRACE\\1\", found " + std::string(size_ ? "something else" : "an empty file"));
    throw InputError(path, size_, "the file ends inside the trace header (expected 4096 bytes; truncated?)");
  }
  std::memcpy(&h_, fetch(0, sizeof h_, buf), sizeof h_);
  const TraceHeader& h = h_;
  if (std::memcmp(h.magic, shim::trace_magic, 8) != 0) throw InputError(path, 0, "expected the trace magic \"PPTRACE\\1\"");
  if (h.version > shim::trace_version || h.version < 2)  // 2: no object records, 3: no value records, read the same
    throw InputError(path, 8, "trace version " + std::to_string(h.version) + ", expected 2 to " + std::to_string(shim::trace_version) +
                                  (h.version == 1 ? " (written by an older prepatch, whose graph records were 16 bytes)" : ""));
  if (h.header_size != sizeof h) throw InputError(path, 12, "the header size is not 4096");
  if (h.tracer != static_cast<u32>(shim::Tracer::function) && h.tracer != static_cast<u32>(shim::Tracer::graph))
    throw InputError(path, 16, "the tracer is not function (2) or graph (3)");
  if (h.chunk_size < sizeof(ChunkHeader) + sizeof(shim::TraceRecord) || h.chunk_size % 16)
    throw InputError(path, 20, "the chunk size is too small or not a multiple of 16");
  if (h.table_offset < sizeof h || h.table_offset > size_ || h.table_size > size_ - h.table_offset)
    throw InputError(path, 32, "the site table's copy lies outside the file");
  if (h.chunk_offset < h.table_offset + h.table_size) throw InputError(path, 48, "the chunks overlap the site table's copy");
  if (h.tsc_hz == 0) throw InputError(path, offsetof(shim::TraceHeader, tsc_hz), "the TSC rate is 0");
  elf::Codec codec;  // 64-bit little-endian, as every ISA's shim writes it
  {
    std::vector<u8> table_bytes;
    const u8* t = fetch(h.table_offset, h.table_size, table_bytes);
    objects_.push_back({0, decode_table({t, h.table_size}, codec, path, h.table_offset), std::string(h.object, strnlen(h.object, sizeof h.object))});
  }
  tracer_ = static_cast<shim::Tracer>(h.tracer);
  clock_ = Clock(h.tsc0, h.tsc_hz);
  chunks_ = std::min(h.chunks_claimed, h.chunk_capacity);

  // Chunks, grouped by thread and ordered by the TSC at which each was claimed.
  const u64 size = graph() ? 8 : sizeof(shim::TraceRecord);  // bytes per record
  std::map<u32, std::vector<Chunk>> by_tid;
  for (u64 k = 0; k < chunks_; k++) {
    const u64 off = h.chunk_offset + k * h.chunk_size;
    if (off > size_ || size_ - off < sizeof(ChunkHeader)) {
      // Claimed after the shim could grow the file no more (header `stopped`): never written, their
      // events counted as lost. Otherwise the file was cut.
      if (!h.stopped)
        problems_.push_back(at(path, size_, "the file ends before chunk " + std::to_string(k) + " of " + std::to_string(chunks_) +
                                                " (truncated?): the chunks from there on are missing"));
      break;
    }
    ChunkHeader c;
    std::memcpy(&c, fetch(off, sizeof c, buf), sizeof c);
    if (c.magic == shim::object_magic) {
      k += read_object(off, k, buf) - 1;
      continue;
    }
    if (c.magic != shim::chunk_magic) continue;  // claimed, but its writer stopped before writing the header
    u64 used = c.used;
    if (used % size || used > h.chunk_size - sizeof c) {
      problems_.push_back(at(path, off + 16, "chunk " + std::to_string(k) + "'s record count is corrupt; its records are skipped"));
      continue;
    }
    if (used > size_ - off - sizeof c) {
      const u64 keep = (size_ - off - sizeof c) / size * size;
      problems_.push_back(at(path, size_, "the file ends inside chunk " + std::to_string(k) + " (truncated?): " +
                                              std::to_string((used - keep) / size) + " of its records are missing"));
      used = keep;
    }
    // A signal noted past the records kept (a crash cut short) is shown after the last of them.
    by_tid[c.tid].push_back({off, c.tsc, c.seq, used, c.depth, c.signal, static_cast<u32>(std::min<u64>(c.signal_at / size * size, used))});
    record_bytes_ += used;
  }
  for (auto& [tid, chunks] : by_tid) {
    std::stable_sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) { return a.tsc != b.tsc ? a.tsc < b.tsc : a.seq < b.seq; });
    threads_.push_back({tid, std::move(chunks)});
  }
  number_sites();
}

u64 TraceFile::read_object(u64 off, u64 k, std::vector<u8>& buf) {
  shim::ObjectChunk o;
  const auto bad = [&](u64 where, const std::string& what) {
    problems_.push_back(at(path_, where, "chunk " + std::to_string(k) + ": an object's record " + what + "; its functions cannot be named"));
    return u64{1};
  };
  if (size_ - off < sizeof o) return bad(size_, "is cut short by the file's end (truncated?)");
  std::memcpy(&o, fetch(off, sizeof o, buf), sizeof o);
  const u64 span = u64{o.chunks} * h_.chunk_size;
  if (o.chunks == 0 || o.chunks > chunks_ - k) return bad(off + 4, "spans " + std::to_string(o.chunks) + " chunks, past the chunks claimed");
  if (span < sizeof o || o.table_size > span - sizeof o) return bad(off + 16, "holds a table larger than its chunks");
  if (size_ - off - sizeof o < o.table_size) return bad(size_, "is cut short by the file's end (truncated?)");
  if (o.first_site >= shim::rec_site_value) return bad(off + 8, "numbers its sites from " + std::to_string(o.first_site) + ", past what records can name");
  std::vector<u8> table_bytes;
  const u8* t = fetch(off + sizeof o, o.table_size, table_bytes);
  Object object{o.first_site, {}, std::string(o.path, strnlen(o.path, sizeof o.path)), o.caller_base, o.caller_lo, o.caller_span};
  try {
    object.table = decode_table({t, o.table_size}, elf::Codec{}, path_, off + sizeof o);
  } catch (const InputError& e) {
    problems_.push_back(std::string(e.what()) + "; the functions of that object cannot be named");
    return o.chunks;
  }
  for (const Object& seen : objects_)  // recorded twice (as the file was created and as the object enrolled)
    if (seen.first == object.first && seen.path == object.path && seen.table.entries.size() == object.table.entries.size()) return o.chunks;
  objects_.push_back(std::move(object));
  return o.chunks;
}

// Gives every site number its object, and marks the names more than one object has (shown as
// OBJECT:FUNCTION); objects whose numbers would overlap an earlier one's, or start past the sites of
// every object recorded (a writer numbers them one after the other), are left out: the numbers, and
// the memory they take here, stay within the sites the file holds.
void TraceFile::number_sites() {
  std::stable_sort(objects_.begin() + 1, objects_.end(), [](const Object& a, const Object& b) { return a.first < b.first; });
  u64 total = 0;
  for (const Object& o : objects_) total += o.table.entries.size();
  std::vector<Object> kept;
  for (Object& o : objects_) {
    const u64 n = o.table.entries.size();
    if (!kept.empty() && (o.first < owner_.size() || o.first + n > shim::rec_site_value || o.first > total)) {
      problems_.push_back(path_ + ": an object's record numbers its sites from " + std::to_string(o.first) + ", which another object's use" +
                          " or past the sites of every object recorded; left out");
      continue;
    }
    if (owner_.size() < o.first + n) owner_.resize(o.first + n, no_object);
    for (u64 i = 0; i < n; i++) owner_[o.first + i] = static_cast<u32>(kept.size());
    kept.push_back(std::move(o));
  }
  objects_ = std::move(kept);
  for (size_t k = 1; k < objects_.size(); k++)  // the header's object's callers: below every other's
    if (objects_[k].caller_span) objects_[0].caller_span = std::min(objects_[0].caller_span, objects_[k].caller_base);
  ambiguous_.assign(owner_.size(), false);
  if (objects_.size() > 1) {
    std::unordered_map<std::string_view, u32> first_object;  // raw name -> the first object defining it
    std::unordered_set<std::string_view> shared;
    for (u32 k = 0; k < objects_.size(); k++)
      for (const TableEntry& e : objects_[k].table.entries) {
        auto [it, fresh] = first_object.emplace(objects_[k].table.name(e), k);
        if (!fresh && it->second != k) shared.insert(it->first);
      }
    for (u32 s = 0; s < owner_.size(); s++)
      if (owner_[s] != no_object) ambiguous_[s] = shared.count(mangled(s)) > 0;
  }
  names_.resize(owner_.size());
  calls_.resize(owner_.size());
  named_ = std::make_unique<std::atomic<bool>[]>(owner_.size());
}

long TraceFile::caller(u64 number, u64& link) const {
  for (const Object& o : objects_) {
    if (number - o.caller_base >= o.caller_span) continue;
    link = number - o.caller_base + o.caller_lo;
    const std::vector<TableEntry>& es = o.table.entries;
    auto it = std::upper_bound(es.begin(), es.end(), link, [](u64 a, const TableEntry& x) { return a < x.addr; });
    return it == es.begin() ? -1 : static_cast<long>(o.first + static_cast<u64>(it - es.begin()) - 1);
  }
  link = number;
  return -1;
}

std::string TraceFile::glob_name(u32 site) const {
  if (!known(site)) return {};
  const Object& o = objects_[owner_[site]];
  const std::string_view m = mangled(site);
  return m.empty() ? hex(o.table.entries[site - o.first].addr) : std::string(m);
}

void TraceFile::make_name(u32 site) {
  std::lock_guard<std::mutex> lock(naming_);
  if (named_[site].load(std::memory_order_relaxed)) return;
  if (!known(site)) {
    names_[site] = calls_[site] = "?";
    named_[site].store(true, std::memory_order_release);
    return;
  }
  if (mangled(site).empty()) {  // no symbol named it (a stripped binary): its site's link-time address
    names_[site] = glob_name(site);
    calls_[site] = names_[site] + "()";
  } else {
    const std::string shown = show_mangled_ ? std::string(mangled(site)) : shown_name(mangled(site));
    names_[site] = printable_text(shown);
    calls_[site] = shown == mangled(site) ? names_[site] + "()" : names_[site];
  }
  if (ambiguous_[site]) {
    const std::string prefix = printable_text(object_base(site)) + ":";
    names_[site] = prefix + names_[site], calls_[site] = prefix + calls_[site];
  }
  named_[site].store(true, std::memory_order_release);
}

std::vector<std::string> TraceFile::problems() const {
  std::vector<std::string> p = problems_;
  for (const Thread& t : threads_)
    if (t.bad)
      p.push_back(at(path_, t.bad_at, "thread " + std::to_string(t.tid) + ": " + std::to_string(t.bad) +
                                          " records name no site of the table, are of the other tracer or leave a depth of 0; skipped"));
  return p;
}

std::string signal_name(u64 sig) {
  return sig == 11 ? "SIGSEGV" : sig == 7 ? "SIGBUS" : sig == 6 ? "SIGABRT" : "signal " + std::to_string(sig);
}

TraceFile::Stream::Stream(TraceFile& f, size_t thread, u64 window, bool signals, bool values)
    : f_(f), th_(f.threads_[thread]), clock_(f.clock_), graph_(f.graph()), size_(graph_ ? 8 : sizeof(shim::TraceRecord)),
      sites_(f.sites()), window_(std::max<u64>(window / 16 * 16, 16)), owner_(f.owner_.data()), signals_(signals), values_(values) {}

bool TraceFile::Stream::value(const u8* p, u64 type, u64 rest, Event& e) {
  const bool was_continued = continued_;
  continued_ = false;
  u64 v = 0;
  if (type == shim::rec_entry && (rest & shim::rec_value_continued)) {
    continued_ = true, low_ = rest >> 4, index_ = rest & 7;
    return false;
  }
  if (type == shim::rec_entry) {
    const u64 low = rest >> 4;  // 34 bits, sign-extended
    v = low & (u64{1} << (shim::rec_value_bits - 1)) ? low | ~((u64{1} << shim::rec_value_bits) - 1) : low;
    index_ = rest & 7;
  } else if (type == shim::rec_exit && was_continued) {
    v = low_ | rest << shim::rec_value_bits;
  } else {
    skip(p);  // a value's second half without its first, or a type no value record has
    return false;
  }
  if (!values_) return false;
  e = {last_ns_, value_event, static_cast<u32>(index_), v};
  return true;
}

TraceFile::Stream::~Stream() = default;

bool TraceFile::Stream::refill() {
  while (chunk_ < th_.chunks.size()) {
    const Chunk& c = th_.chunks[chunk_];
    if (done_ == 0) depth_ = c.depth, tsc_ = c.tsc;  // graph: depths count from the chunk's
    // A fatal signal after signal_at bytes: the window stops there, and the signal comes next.
    const bool stop = signals_ && c.signal && !signal_done_;
    if (stop && done_ == c.signal_at) {
      signal_ = c.signal, signal_done_ = true;
      start_ = pos_ = end_ = nullptr;
      return true;
    }
    if (done_ < c.used) {
      const u64 len = std::min(window_, (stop ? c.signal_at : c.used) - done_);
      base_ = c.offset + sizeof(ChunkHeader) + done_;
      start_ = pos_ = f_.fetch(base_, len, buf_);
      end_ = start_ + len;
      done_ += len;
      if (f_.progress_) f_.progress_(f_.fetched_.fetch_add(len, std::memory_order_relaxed) + len, f_.record_bytes_);
      return true;
    }
    chunk_++, done_ = 0, signal_done_ = false;
  }
  th_.bad = bad_, th_.bad_at = bad_at_;
  return false;
}

void TraceFile::Stream::skip(const u8* p) {
  if (!bad_++) bad_at_ = base_ + static_cast<u64>(p - start_);
}

}  // namespace prepatch::trace
