#include "control/snapshot.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <span>
#include <vector>

#include "control/control.h"
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

// A file process `pid` maps shared and writable: the range, device and inode /proc/PID/maps gives,
// and the path it shows. The path is for messages and the default snapshot name alone: the process
// may rename or replace what it names at any moment, so the file is never opened by it.
struct SharedMapping {
  std::string range, path;
  dev_t dev;
  ino_t ino;
};

std::vector<SharedMapping> shared_mappings(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  if (!maps) throw IoError("cannot read /proc/" + std::to_string(pid) + "/maps: " + std::strerror(errno));
  std::vector<SharedMapping> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (std::string line; std::getline(maps, line);) {
    // start-end perms offset dev inode path
    std::istringstream in(line);
    std::string range, perms, offset, dev;
    unsigned long long inode = 0;
    if (!(in >> range >> perms >> offset >> dev >> inode) || perms != "rw-s" || !inode) continue;
    const size_t path = line.find('/'), colon = dev.find(':');
    if (path == std::string::npos || colon == std::string::npos || line.ends_with(" (deleted)")) continue;
    const dev_t d = makedev(std::strtoul(dev.substr(0, colon).c_str(), nullptr, 16), std::strtoul(dev.substr(colon + 1).c_str(), nullptr, 16));
    if (seen.insert({d, static_cast<ino_t>(inode)}).second) out.push_back({range, line.substr(path), d, static_cast<ino_t>(inode)});
  }
  return out;
}

// The file of mapping `m`, opened for reading without its path: through /proc/PID/map_files (root),
// else through one of the process's own descriptors (/proc/PID/fd: the shim keeps its trace file's
// open). Each is opened O_PATH first (nothing is opened yet, so no device or FIFO acts on it) and must
// be that regular file before it is opened for reading through this handle. -1 where none is.
int open_mapped(pid_t pid, const SharedMapping& m) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::vector<std::string> ways = {proc + "/map_files/" + m.range};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(proc + "/fd", ec)) ways.push_back(e.path());
  for (const std::string& way : ways) {
    const int handle = open(way.c_str(), O_PATH | O_CLOEXEC);
    if (handle < 0) continue;
    struct stat st {};
    int fd = -1;
    if (fstat(handle, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == m.dev && st.st_ino == m.ino)
      fd = open(("/proc/self/fd/" + std::to_string(handle)).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    close(handle);
    if (fd >= 0) return fd;
  }
  return -1;
}

// Runs `copy` in a child process that has become user `uid` (group `gid`, no other groups), and
// returns what it made: the snapshot root takes of another user's process beside its trace file is
// made with that user's rights, so that the path, which that user chooses, cannot make root create a
// file where the user could not.
template <class Copy>
Snapshot as_user(uid_t uid, gid_t gid, Copy copy) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) throw IoError(std::string("pipe: ") + std::strerror(errno));
  const pid_t child = fork();
  if (child < 0) throw IoError(std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    close(p[0]);
    std::string said;
    int code = 0;
    try {
      if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0)
        throw IoError("cannot take the process's user (uid " + std::to_string(uid) + ") to write its snapshot: " + std::strerror(errno));
      const Snapshot s = copy();
      said = s.path + '\0' + std::to_string(s.chunks) + '\0' + std::to_string(s.dropped);
    } catch (const std::exception& e) {
      said = e.what(), code = 1;
    }
    for (size_t at = 0; at < said.size();) {
      const ssize_t w = write(p[1], said.data() + at, said.size() - at);
      if (w <= 0) break;
      at += static_cast<size_t>(w);
    }
    _exit(code);
  }
  close(p[1]);
  std::string said;
  char b[4096];
  for (ssize_t n; (n = read(p[0], b, sizeof b)) != 0;) {
    if (n > 0) said.append(b, static_cast<size_t>(n));
    else if (errno != EINTR) break;
  }
  close(p[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw IoError(said.empty() ? "the snapshot's writer failed" : said);
  Snapshot s;
  std::istringstream in(said);
  std::string chunks, dropped;
  std::getline(in, s.path, '\0'), std::getline(in, chunks, '\0'), std::getline(in, dropped, '\0');
  s.chunks = std::strtoull(chunks.c_str(), nullptr, 10), s.dropped = std::strtoull(dropped.c_str(), nullptr, 10);
  return s;
}

// Copies the trace file open as `fd` (`trace` its path as the process's maps show it), whose header
// `h` was read, to `out` (empty: TRACE.snapshot.N).
Snapshot copy_trace(int fd, shim::TraceHeader h, const std::string& trace, const std::string& out);

Snapshot snapshot_of(pid_t pid, const std::string& out) {
  const uid_t owner = channel_owner(pid);  // this user's process, or any as root (as for requests)
  int fd = -1;
  std::string trace;
  shim::TraceHeader h{};
  for (const SharedMapping& m : shared_mappings(pid)) {
    const int c = open_mapped(pid, m);
    if (c < 0) continue;
    if (read_at(c, &h, sizeof h, 0) && std::memcmp(h.magic, shim::trace_magic, 8) == 0 && h.pid == static_cast<u64>(pid)) {
      fd = c, trace = m.path;
      break;
    }
    close(c);
  }
  if (fd < 0)
    throw IoError("process " + std::to_string(pid) +
                  " writes no trace file (PREPATCH_TRACER=function or graph, once a site is enabled), or none that can be opened without "
                  "its path: through /proc/PID/map_files (root) or a descriptor the process still holds (it may have closed the shim's)");
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (!out.empty() || ::geteuid() != 0 || owner == 0) return copy_trace(fd, h, trace, out);
  const auto gid = process_effective_id(pid, "Gid:");
  if (!gid) throw IoError("process " + std::to_string(pid) + ": cannot read its group from /proc/" + std::to_string(pid) + "/status");
  Snapshot s = as_user(owner, *gid, [&] { return copy_trace(fd, h, trace, out); });
  s.trace = trace;
  return s;
}

Snapshot copy_trace(int fd, shim::TraceHeader h, const std::string& trace, const std::string& out) {
  Snapshot s;
  s.trace = trace;
  // The file is another process's: nothing in it is trusted beyond what its size bears out.
  struct stat st {};
  if (fstat(fd, &st) != 0) throw IoError(s.trace + ": " + std::strerror(errno));
  const u64 size = static_cast<u64>(st.st_size);
  if (h.header_size != sizeof h || h.chunk_size != shim::trace_chunk_bytes || h.chunk_offset < sizeof h || h.chunk_offset > size ||
      h.chunk_offset % 4096)
    throw IoError(s.trace + ": not a trace file of the layout this prepatch writes (its header is damaged, or another version's)");
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

}  // namespace

Snapshot snapshot(pid_t pid, const std::string& out) {
  try {
    return snapshot_of(pid, out);
  } catch (const IoError& e) {
    throw IoError(printable(e.what()));  // (paths the process chose: no control characters reach a terminal)
  }
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
