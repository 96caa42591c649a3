#include "trace/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

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
  if (size_ < sizeof h_) throw InputError(path, size_, "the file ends inside the trace header (expected 4096 bytes)");
  std::memcpy(&h_, fetch(0, sizeof h_, buf), sizeof h_);
  const TraceHeader& h = h_;
  if (std::memcmp(h.magic, shim::trace_magic, 8) != 0) throw InputError(path, 0, "expected the trace magic \"PPTRACE\\1\"");
  if (h.version != shim::trace_version)
    throw InputError(path, 8, "trace version " + std::to_string(h.version) + ", expected " + std::to_string(shim::trace_version) +
                                  (h.version == 1 ? " (written by an older prepatch, whose graph records were 16 bytes)" : ""));
  if (h.header_size != sizeof h) throw InputError(path, 12, "the header size is not 4096");
  if (h.tracer != static_cast<u32>(shim::Tracer::function) && h.tracer != static_cast<u32>(shim::Tracer::graph))
    throw InputError(path, 16, "the tracer is not function (2) or graph (3)");
  if (h.chunk_size < sizeof(ChunkHeader) + sizeof(shim::TraceRecord) || h.chunk_size % 16)
    throw InputError(path, 20, "the chunk size is too small or not a multiple of 16");
  if (h.table_offset < sizeof h || h.table_offset > size_ || h.table_size > size_ - h.table_offset)
    throw InputError(path, 32, "the site table's copy lies outside the file");
  if (h.chunk_offset < h.table_offset + h.table_size) throw InputError(path, 48, "the chunks overlap the site table's copy");
  if (h.tsc_hz == 0) throw InputError(path, 104, "the TSC rate is 0");
  elf::Codec codec;  // x86-64: 64-bit little-endian
  {
    std::vector<u8> table_bytes;
    const u8* t = fetch(h.table_offset, h.table_size, table_bytes);
    table_ = decode_table({t, h.table_size}, codec, path, h.table_offset);
  }
  names_.resize(table_.entries.size());
  calls_.resize(table_.entries.size());
  named_ = std::make_unique<std::atomic<bool>[]>(table_.entries.size());
  tracer_ = static_cast<shim::Tracer>(h.tracer);
  clock_ = Clock(h.tsc0, h.tsc_hz);
  chunks_ = std::min(h.chunks_claimed, h.chunk_capacity);

  // Chunks, grouped by thread and ordered by the TSC at which each was claimed.
  const u64 size = graph() ? 8 : sizeof(shim::TraceRecord);  // bytes per record
  std::map<u32, std::vector<Chunk>> by_tid;
  for (u64 k = 0; k < chunks_; k++) {
    const u64 off = h.chunk_offset + k * h.chunk_size;
    if (off > size_ || size_ - off < sizeof(ChunkHeader)) {
      problems_.push_back(at(path, size_, "the file ends before chunk " + std::to_string(k) + " of " + std::to_string(chunks_) +
                                              " (truncated?): the chunks from there on are missing"));
      break;
    }
    ChunkHeader c;
    std::memcpy(&c, fetch(off, sizeof c, buf), sizeof c);
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
    by_tid[c.tid].push_back({off, c.tsc, c.seq, used, c.depth});
  }
  for (auto& [tid, chunks] : by_tid) {
    std::stable_sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) { return a.tsc != b.tsc ? a.tsc < b.tsc : a.seq < b.seq; });
    threads_.push_back({tid, std::move(chunks)});
  }
}

void TraceFile::make_name(u32 site) {
  std::lock_guard<std::mutex> lock(naming_);
  if (named_[site].load(std::memory_order_relaxed)) return;
  names_[site] = show_mangled_ ? std::string(mangled(site)) : shown_name(mangled(site));
  calls_[site] = names_[site] == mangled(site) ? names_[site] + "()" : names_[site];
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

TraceFile::Stream::Stream(TraceFile& f, size_t thread, u64 window)
    : f_(f), th_(f.threads_[thread]), clock_(f.clock_), graph_(f.graph()), size_(graph_ ? 8 : sizeof(shim::TraceRecord)),
      sites_(f.sites()), window_(std::max<u64>(window / 16 * 16, 16)) {}

TraceFile::Stream::~Stream() = default;

bool TraceFile::Stream::refill() {
  while (chunk_ < th_.chunks.size()) {
    const Chunk& c = th_.chunks[chunk_];
    if (done_ == 0) depth_ = c.depth, tsc_ = c.tsc;  // graph: depths count from the chunk's
    if (done_ < c.used) {
      const u64 len = std::min(window_, c.used - done_);
      base_ = c.offset + sizeof(ChunkHeader) + done_;
      start_ = pos_ = f_.fetch(base_, len, buf_);
      end_ = start_ + len;
      done_ += len;
      return true;
    }
    chunk_++, done_ = 0;
  }
  th_.bad = bad_, th_.bad_at = bad_at_;
  return false;
}

void TraceFile::Stream::skip(const u8* p) {
  if (!bad_++) bad_at_ = base_ + static_cast<u64>(p - start_);
}

}  // namespace prepatch::trace
