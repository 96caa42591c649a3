#include "control/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "elf/temp_file.h"
#include "elf/types.h"
#include "shim/abi.h"
#include "shim/snapshot.h"

namespace prepatch {
namespace {

// Reads exactly `n` bytes at `off`; false at the file's end or an error.
bool read_at(int fd, void* to, size_t n, u64 off) {
  auto* p = static_cast<u8*>(to);
  while (n) {
    const ssize_t r = pread(fd, p, n, static_cast<off_t>(off));
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r), off += static_cast<u64>(r);
  }
  return true;
}

// The files process `pid` maps shared and writable, as /proc/PID/maps names them.
std::vector<std::string> shared_files(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  if (!maps) throw IoError("prepatch ctl: cannot read /proc/" + std::to_string(pid) + "/maps: " + std::strerror(errno));
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (std::string line; std::getline(maps, line);) {
    // start-end perms offset dev inode path
    const size_t perms = line.find(' ');
    if (perms == std::string::npos || line.compare(perms + 1, 4, "rw-s") != 0) continue;
    const size_t path = line.find('/');
    if (path == std::string::npos || line.ends_with(" (deleted)")) continue;
    if (seen.insert(line.substr(path)).second) out.push_back(line.substr(path));
  }
  return out;
}

}  // namespace

Snapshot snapshot(pid_t pid, const std::string& out) {
  Snapshot s;
  int fd = -1;
  shim::TraceHeader h{};
  for (const std::string& f : shared_files(pid)) {
    const int c = open(f.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (c < 0) continue;
    if (read_at(c, &h, sizeof h, 0) && std::memcmp(h.magic, shim::trace_magic, 8) == 0 && h.pid == static_cast<u64>(pid)) {
      fd = c, s.trace = f;
      break;
    }
    close(c);
  }
  if (fd < 0) throw IoError("prepatch ctl: process " + std::to_string(pid) + " writes no trace file (PREPATCH_TRACER=function or graph, once a site is enabled)");
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  // The file is another process's: nothing in it is trusted beyond what its size bears out.
  struct stat st {};
  if (fstat(fd, &st) != 0) throw IoError("prepatch ctl: " + s.trace + ": " + std::strerror(errno));
  const u64 size = static_cast<u64>(st.st_size);
  if (h.header_size != sizeof h || h.chunk_size != shim::trace_chunk_bytes || h.chunk_offset < sizeof h || h.chunk_offset > size ||
      h.chunk_offset % 4096)
    throw IoError("prepatch ctl: " + s.trace + ": not a trace file of the layout this prepatch writes (its header is damaged, or another version's)");
  s.path = out;
  for (unsigned n = 1; s.path.empty(); n++) {
    const std::string p = s.trace + ".snapshot." + std::to_string(n);
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) s.path = p;
  }
  const u64 chunks = std::min({h.chunks_claimed, h.chunk_capacity, (size - h.chunk_offset) / h.chunk_size});
  // Sized for every chunk up front (TempFile: its blocks allocated at once, where the pwrites would
  // reserve them page by page), cut to what was written at the end.
  elf::TempFile t(s.path, h.chunk_offset + chunks * h.chunk_size);
  struct Source {
    int fd;
    bool read(void* to, u64 n, u64 off) { return read_at(fd, to, n, off); }
  } src{fd};
  // Not zeroed (512 KiB): `spare` is touched only where the mapping fails, `buf` for the header, the
  // table copy and object records.
  const std::unique_ptr<u8[]> buf(new u8[h.chunk_size]), spare(new u8[h.chunk_size]);
  // A chunk's records go from a read-only mapping of the trace file straight into the copy (copy_records):
  // the kernel reads them once, where pread copied them into `spare` first (a quarter of a snapshot's
  // time). copy_file_range measured slower here (bench/snapshot_bench.py, docs/PERFORMANCE.md).
  // Mapped up to the last chunk the copy looks at, and populated (its page table filled in one call,
  // not a fault each 16 pages): no more, since a file sized whole and sparse (where fallocate is not
  // supported) may span gigabytes of holes that nothing claimed.
  const u64 span = std::min(size, h.chunk_offset + chunks * h.chunk_size);
  void* m = span ? mmap(nullptr, span, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0) : MAP_FAILED;
  struct Unmapper {
    void* m;
    u64 size;
    ~Unmapper() {
      if (m != MAP_FAILED) munmap(m, size);
    }
  } unmapper{m, span};
  struct Sink {
    elf::TempFile& t;
    int from;
    std::span<u8> spare;
    const u8* mapped;  // nullptr when not mapped
    u64 size;
    bool write(const void* p, u64 n, u64 off) {
      t.write_at(std::span<const u8>(static_cast<const u8*>(p), n), off);
      return true;
    }
    int copy(u64 n, u64 off) { return copy_records(from, mapped, size, t, n, off, spare) ? 1 : 0; }  // (n is at most a chunk)
  } dst{t, fd, {spare.get(), h.chunk_size}, m == MAP_FAILED ? nullptr : static_cast<const u8*>(m), span};
  std::vector<shim::SnapshotChunk> kept(chunks);
  shim::SnapshotResult r;
  h.snapshot = 1;
  shim::snapshot_copy(src, dst, h, chunks, buf.get(), kept.data(), r);
  s.chunks = r.chunks, s.dropped = r.dropped;
  t.resize(r.end);
  t.commit(0600);
  return s;
}

bool copy_records(int from, const u8* mapped, u64 mapped_size, elf::TempFile& to, u64 n, u64 off, std::span<u8> spare) {
  if (mapped && off <= mapped_size && n <= mapped_size - off) {
    std::atomic_thread_fence(std::memory_order_acquire);  // (after the chunk's header was read)
    if (to.try_write_at({mapped + off, n}, off) == 0) return true;
  }
  if (spare.size() < n || !read_at(from, spare.data(), n, off)) return false;
  to.write_at({spare.data(), n}, off);
  return true;
}

}  // namespace prepatch
