// A snapshot of a trace file while its threads keep writing it (docs/SHIM.md, "Snapshots"): the one
// copying algorithm, freestanding, for `prepatch ctl PID snapshot` (control/snapshot.cc, reading the
// file from outside) and for the shim's triggers (shim/runtime/triggers.inc, reading its own mapping).
// No thread waits for it: a chunk is copied up to the records that were whole when its header was
// read, and kept only if its thread did not start it over meanwhile.
#pragma once
#include "shim/abi.h"
#include "shim/core.h"

namespace prepatch::shim {

// A chunk copied: where, its thread and number, its records' bytes in the copy.
struct SnapshotChunk {
  u64 off, seq, used;
  u32 tid;
  bool out;  // left out after all
};

struct SnapshotResult {
  u64 chunks = 0;   // thread chunks in the copy
  u64 dropped = 0;  // chunks started over while copied, or cut off from the rest of their thread's
  u64 end = 0;      // the copy's size
};

// Copies the trace file `src` reads into `dst`. `h` is its header as read, checked by the caller:
// header_size, chunk_size (trace_chunk_bytes) and chunk_offset (page-aligned, within the file); `chunks`
// the chunks to look at (claimed, at most the capacity and what the file holds). `buf` holds a chunk,
// `kept` `chunks` entries. Src: bool read(void* to, u64 n, u64 off), exactly n bytes, false past the
// end (a read of a chunk's records happens after the read of its header, in that order: an in-memory
// source fences in between). Dst: bool write(const void* p, u64 n, u64 off), and int copy(u64 n, u64 off),
// which copies the source's n bytes at `off` to the same offset without passing them through `buf`: 1,
// 0 when the source ends before them, -1 when a write fails. False when a write fails.
template <class Src, class Dst>
bool snapshot_copy(Src& src, Dst& dst, TraceHeader h, u64 chunks, u8* buf, SnapshotChunk* kept, SnapshotResult& r) {
  const u64 cs = h.chunk_size;
  // The header and the table copy as they are (the header's counters as read now), a chunk at a time.
  for (u64 at = 0; at < h.chunk_offset; at += cs) {
    const u64 n = h.chunk_offset - at < cs ? h.chunk_offset - at : cs;
    if (!src.read(buf, n, at) || !dst.write(buf, n, at)) return false;
  }
  r.end = h.chunk_offset;
  u64 nkept = 0;
  const ChunkHeader none{};
  // A chunk's header now, and whether it is still the one copied (not started over by its thread:
  // its magic cleared, or another number, as when a ring wrapped onto it).
  const auto same = [&](const SnapshotChunk& k, ChunkHeader& now) {
    return src.read(&now, sizeof now, k.off) && now.magic == chunk_magic && now.seq == k.seq && now.tid == k.tid && now.used >= k.used &&
           now.used <= cs - sizeof now;
  };
  for (u64 k = 0; k < chunks; k++) {
    const u64 off = h.chunk_offset + k * cs;
    ChunkHeader c;
    if (!src.read(&c, sizeof c, off)) break;  // past the file's end: never written
    if (c.magic == object_magic) {  // an object's record, whole once its magic is there
      const u64 span = reinterpret_cast<const ObjectChunk*>(&c)->chunks;
      const u64 n = span < 1 ? 1 : span < chunks - k ? span : chunks - k;
      for (u64 i = 0; i < n; i++) {
        if (!src.read(buf, cs, off + i * cs)) break;
        if (!dst.write(buf, cs, off + i * cs)) return false;
        r.end = off + (i + 1) * cs;
      }
      k += n - 1;
      continue;
    }
    if (c.magic != chunk_magic || c.used > cs - sizeof c) continue;
    // The records complete when the header was read (its thread only appends to them until it starts
    // the chunk over), kept if it did not meanwhile: copied first, then the header, which makes them a
    // chunk of the copy (one left out has none: no chunk).
    const SnapshotChunk kc{off, c.seq, c.used, c.tid, false};
    ChunkHeader now;
    const int copied = dst.copy(kc.used, off + sizeof c);
    if (copied < 0) return false;
    if (copied == 0 || !same(kc, now)) {  // its header never written: no chunk in the copy
      r.dropped++;
      continue;
    }
    if (!dst.write(&c, sizeof c, off)) return false;
    kept[nkept++] = kc;
    if (off + cs > r.end) r.end = off + cs;
  }
  // Second pass: a chunk whose thread went on to another while the copy ran got more records since;
  // they are copied too (when it has not been started over), so that a thread's chunks join.
  for (u64 i = 0; i < nkept; i++) {
    SnapshotChunk& k = kept[i];
    ChunkHeader now;
    if (!same(k, now)) {
      r.dropped++, k.out = true;
      if (!dst.write(&none, sizeof none, k.off)) return false;  // no chunk in the copy
      continue;
    }
    const u64 more = now.used - k.used;
    if (!more) continue;
    if (!src.read(buf, more, k.off + sizeof now + k.used) || !same({k.off, k.seq, now.used, k.tid, false}, now)) {
      // Started over while its new records were read: kept with what the first pass took, it would
      // join its thread's next chunk with those records missing. Left out, as a gap.
      r.dropped++, k.out = true;
      if (!dst.write(&none, sizeof none, k.off)) return false;
      continue;
    }
    if (!dst.write(buf, more, k.off + sizeof now + k.used)) return false;
    k.used += more;
    if (!dst.write(&k.used, sizeof k.used, k.off + __builtin_offsetof(ChunkHeader, used))) return false;
  }
  // A thread's chunks from its last gap on (one left out between two kept ones): what precedes a gap
  // would join the rest with events missing. By thread, then number (a heap sort: no allocation).
  const auto before = [&](u64 a, u64 b) { return kept[a].tid != kept[b].tid ? kept[a].tid < kept[b].tid : kept[a].seq < kept[b].seq; };
  const auto sift = [&](u64 at, u64 n) {
    for (u64 child; (child = 2 * at + 1) < n; at = child) {
      if (child + 1 < n && before(child, child + 1)) child++;
      if (!before(at, child)) return;
      const SnapshotChunk t = kept[at];
      kept[at] = kept[child], kept[child] = t;
    }
  };
  for (u64 i = nkept / 2; i-- > 0;) sift(i, nkept);
  for (u64 n = nkept; n-- > 1;) {
    const SnapshotChunk t = kept[0];
    kept[0] = kept[n], kept[n] = t;
    sift(0, n);
  }
  u64 last = nkept;  // the last chunk still in, of the thread being walked (from the end)
  for (u64 i = nkept; i-- > 0;) {
    if (kept[i].out) continue;
    if (last < nkept && kept[last].tid == kept[i].tid && kept[i].seq + 1 != kept[last].seq) {
      // A gap: this chunk and every earlier one of its thread go.
      for (u64 j = i + 1; j-- > 0 && kept[j].tid == kept[i].tid;) {
        if (kept[j].out) continue;
        if (!dst.write(&none, sizeof none, kept[j].off)) return false;
        kept[j].out = true, r.dropped++;
      }
      continue;
    }
    last = i;
  }
  for (u64 i = 0; i < nkept; i++) r.chunks += !kept[i].out;
  // The copy claims the chunks it spans: those it left empty read as never written.
  h.chunks_claimed = (r.end - h.chunk_offset) / cs;
  return dst.write(&h, sizeof h, 0);
}

}  // namespace prepatch::shim
