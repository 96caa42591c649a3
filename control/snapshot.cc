#include "control/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <set>
#include <vector>

#include "elf/temp_file.h"
#include "elf/types.h"
#include "shim/abi.h"

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
  elf::TempFile t(s.path, 0);
  // The header and the table copy as they are (the header's counters as read now), then every chunk.
  std::vector<u8> buf(h.chunk_offset);
  if (!read_at(fd, buf.data(), buf.size(), 0)) throw IoError("prepatch ctl: " + s.trace + ": cannot read its header and table");
  t.write_at(buf, 0);
  buf.resize(h.chunk_size);
  u64 end = h.chunk_offset;
  struct Kept {
    u64 off, seq, used;
    u32 tid;
    bool out = false;  // left out after all
  };
  std::vector<Kept> kept;
  // A chunk's header now, and whether it is still the one copied (not started over by its thread:
  // its magic cleared, or another number, as when a ring wrapped onto it).
  const auto same = [&](u64 off, const Kept& k, shim::ChunkHeader& now) {
    return read_at(fd, &now, sizeof now, off) && now.magic == shim::chunk_magic && now.seq == k.seq && now.tid == k.tid &&
           now.used >= k.used && now.used <= h.chunk_size - sizeof now;
  };
  for (u64 k = 0; k < chunks; k++) {
    const u64 off = h.chunk_offset + k * h.chunk_size;
    shim::ChunkHeader c;
    if (!read_at(fd, &c, sizeof c, off)) break;  // past the file's end: never written
    if (c.magic == shim::object_magic) {  // an object's record, whole once its magic is there
      const auto* o = reinterpret_cast<const shim::ObjectChunk*>(&c);
      const u64 n = std::max<u64>(1, std::min<u64>(o->chunks, chunks - k));
      for (u64 i = 0; i < n; i++)
        if (read_at(fd, buf.data(), buf.size(), off + i * h.chunk_size)) t.write_at(buf, off + i * h.chunk_size), end = off + (i + 1) * h.chunk_size;
      k += n - 1;
      continue;
    }
    if (c.magic != shim::chunk_magic || c.used > h.chunk_size - sizeof c) continue;
    // The records complete when the header was read (its thread only appends to them until it
    // starts the chunk over), kept if it did not meanwhile.
    const Kept kc{off, c.seq, c.used, c.tid};
    shim::ChunkHeader now;
    if (!read_at(fd, buf.data() + sizeof c, kc.used, off + sizeof c) || !same(off, kc, now)) {
      s.dropped++;
      continue;
    }
    c.used = kc.used;
    std::memcpy(buf.data(), &c, sizeof c);
    t.write_at(std::span<const u8>(buf.data(), sizeof c + kc.used), off);
    kept.push_back(kc);
    end = std::max(end, off + h.chunk_size);
  }
  // Second pass: a chunk whose thread went on to another while the copy ran got more records since;
  // they are copied too (when it has not been started over), so that a thread's chunks join.
  std::vector<Kept> whole;
  for (Kept k : kept) {
    shim::ChunkHeader now;
    if (!same(k.off, k, now)) {
      s.dropped++;
      t.write_at(std::vector<u8>(sizeof now), k.off);  // no chunk in the copy
      continue;
    }
    const u64 more = now.used - k.used;
    if (more && read_at(fd, buf.data(), more, k.off + sizeof now + k.used) && same(k.off, {k.off, k.seq, now.used, k.tid}, now)) {
      t.write_at(std::span<const u8>(buf.data(), more), k.off + sizeof now + k.used);
      k.used += more;
      t.write_at(std::span<const u8>(reinterpret_cast<const u8*>(&k.used), sizeof k.used), k.off + offsetof(shim::ChunkHeader, used));
    }
    whole.push_back(k);
  }
  // A thread's chunks from its last gap on (one left out between two kept ones): what precedes a gap
  // would join the rest with events missing.
  std::sort(whole.begin(), whole.end(), [](const Kept& a, const Kept& b) { return a.tid != b.tid ? a.tid < b.tid : a.seq < b.seq; });
  const std::vector<u8> no_chunk(sizeof(shim::ChunkHeader));
  for (size_t i = whole.size(); i-- > 1;) {
    if (whole[i].out || whole[i - 1].tid != whole[i].tid || whole[i - 1].seq + 1 == whole[i].seq) continue;
    for (size_t j = i; j-- > 0 && whole[j].tid == whole[i].tid;) {
      t.write_at(no_chunk, whole[j].off);
      whole[j].out = true, s.dropped++;
    }
  }
  s.chunks = 0;
  for (const Kept& k : whole) s.chunks += !k.out;
  // The copy claims the chunks it spans: those it left empty read as never written.
  h.chunks_claimed = (end - h.chunk_offset) / h.chunk_size;
  t.write_at(std::span<const u8>(reinterpret_cast<const u8*>(&h), sizeof h), 0);
  t.resize(end);
  t.commit(0600);
  return s;
}

}  // namespace prepatch
