#include "elf/writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>

#include "elf/layout.h"
#include "elf/temp_file.h"

namespace prepatch::elf {

namespace {

u64 align_up(u64 v, u64 a) { return (v + a - 1) / a * a; }

// Copies a patch's n <= 15 bytes (`src` holds 15) with fixed-size moves, not a memcpy call: the
// preparer applies one patch per site.
void small_copy(u8* dst, const u8* src, unsigned n) {
  if (n >= 8) {
    std::memcpy(dst, src, 8);
    std::memcpy(dst + n - 8, src + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(dst, src, 4);
    std::memcpy(dst + n - 4, src + n - 4, 4);
  } else {
    for (unsigned i = 0; i < n; i++) dst[i] = src[i];
  }
}

// Copies the part of `src` (placed at file offset `src_off`) that falls in the chunk at `chunk_off`.
void overlay(std::span<u8> chunk, u64 chunk_off, std::span<const u8> src, u64 src_off) {
  u64 lo = std::max(chunk_off, src_off), hi = std::min(chunk_off + chunk.size(), src_off + src.size());
  if (lo < hi) std::memcpy(chunk.data() + (lo - chunk_off), src.data() + (lo - src_off), hi - lo);
}

}  // namespace

void Writer::patch(u64 vaddr, std::span<const u8> bytes) {
  auto off = in_.vaddr_to_offset(vaddr, bytes.size());
  if (!off || bytes.size() > sizeof(Patch::bytes))
    in_.fail(0, "internal: cannot patch " + std::to_string(bytes.size()) + " bytes at vaddr " + hex(vaddr) + ": not file-backed");
  Patch p{*off, static_cast<u8>(bytes.size()), {}};
  std::memcpy(p.bytes, bytes.data(), bytes.size());
  add_patch(p);
}

// Which PT_NOTE headers can become PT_LOADs, best first. A PT_NOTE that covers exactly what
// PT_GNU_PROPERTY covers is redundant (glibc reads PT_GNU_PROPERTY first); after that, later notes
// first, so the build-id note (usually first) survives longest.
std::vector<u32> Writer::spare_phdr_slots() const {
  std::vector<u32> redundant, other;
  const auto& segs = in_.segments();
  for (const Segment& s : segs) {
    if (s.type != PT_NOTE) continue;
    bool dup = std::any_of(segs.begin(), segs.end(), [&](const Segment& p) {
      return p.type == PT_GNU_PROPERTY && p.offset == s.offset && p.filesz == s.filesz;
    });
    (dup ? redundant : other).push_back(s.index);
  }
  std::reverse(other.begin(), other.end());
  redundant.insert(redundant.end(), other.begin(), other.end());
  std::erase_if(redundant, [&](u32 slot) {
    return std::any_of(segs_.begin(), segs_.end(), [&](const NewSegment& n) { return n.phdr_slot == slot; });
  });
  return redundant;
}

// The alignment an appended segment's offset and vaddr must be congruent under: the largest page size
// a loader may use (4 KiB on x86-64, up to 64 KiB on AArch64/PPC64), not a PT_LOAD's p_align, which can
// be 2 MiB for huge-page-friendly links and would only pad the file.
u64 Writer::max_load_align() const {
  u64 a = 0x1000;
  for (const Segment& s : in_.segments())
    if (s.type == PT_LOAD) a = std::max(a, s.align);
  return std::min<u64>(a, 0x10000);
}

u64 Writer::next_vaddr() const {
  u64 end = 0;
  for (const Segment& s : in_.segments())
    if (s.type == PT_LOAD) end = std::max(end, s.vaddr + s.memsz);
  for (const NewSegment& n : segs_) end = std::max(end, n.vaddr + n.size());
  return align_up(end, max_load_align());
}

u64 Writer::add_segment(std::string section_name, u32 flags, Bytes data, std::vector<NewSection> sections,
                        std::vector<Insert> inserts) {
  auto slots = spare_phdr_slots();
  if (slots.empty())
    in_.fail(in_.header().phoff, "expected a PT_NOTE program header to turn into the PT_LOAD that maps the site table and the shim; found none spare");
  for (size_t i = 0; i < inserts.size(); i++)
    if (inserts[i].at > data.size() || (i > 0 && inserts[i].at < inserts[i - 1].at)) in_.fail(0, "internal: inserts out of order or past the segment's data");
  NewSegment s{std::move(sections), flags, std::move(data), std::move(inserts), next_vaddr(), 0, slots.front()};
  if (s.sections.empty()) s.sections.push_back({std::move(section_name), 0, s.size(), 0});
  for (const NewSection& n : s.sections)
    if (n.offset > s.size() || n.size > s.size() - n.offset) in_.fail(0, "internal: a new section outside its segment");
  segs_.push_back(std::move(s));
  return segs_.back().vaddr;
}

u64 Writer::copied_end() const {
  if (segs_.empty()) return in_.bytes().size();
  std::vector<u32> carried;
  for (const NewSegment& s : segs_)
    for (const Insert& i : s.inserts)
      if (is_copy_of_section(i)) carried.push_back(i.section);
  return copied_end(carried);
}

// Where the input's copy ends, given segments appended that carry the sections `carried` whole: at the
// input's end, unless everything from some offset on is those sections, the section name table and
// the section header table (both written anew behind the segments), or zero padding between them;
// then at that offset. ld puts .symtab's strings there, so a table that carries them (the preparer's)
// does not make the file hold them twice. Anything else there (another section, a segment's bytes,
// data that no header describes) keeps the whole input.
u64 Writer::copied_end(std::span<const u32> carried) const {
  const Header& h = in_.header();
  const u64 in_size = in_.bytes().size();
  if (h.shnum == 0) return in_size;
  struct Span {
    u64 lo, hi;
  };
  std::vector<Span> renewed = {{h.shoff, h.shoff + h.shnum * layout_for(in_.codec().is64).shdr.size}};
  const auto& secs = in_.sections();
  if (secs[h.shstrndx].has_file_data()) renewed.push_back({secs[h.shstrndx].offset, secs[h.shstrndx].offset + secs[h.shstrndx].size});
  for (u32 i : carried) renewed.push_back({secs[i].offset, secs[i].offset + secs[i].size});
  std::sort(renewed.begin(), renewed.end(), [](const Span& a, const Span& b) { return a.hi > b.hi; });
  u64 end = in_size;
  for (const Span& r : renewed) {
    if (r.hi > in_size) return in_size;
    if (r.hi < end && std::any_of(in_.bytes().begin() + r.hi, in_.bytes().begin() + end, [](u8 b) { return b != 0; })) break;
    end = std::min(end, r.lo);
  }
  if (end == in_size) return in_size;
  const bool kept = h.phoff + h.phnum * layout_for(in_.codec().is64).phdr.size <= end &&
                    std::all_of(in_.segments().begin(), in_.segments().end(), [&](const Segment& s) { return s.filesz == 0 || s.offset + s.filesz <= end; });
  const bool rest = std::all_of(secs.begin(), secs.end(), [&](const Section& s) {
    const bool moved = s.offset >= end && std::find(carried.begin(), carried.end(), s.index) != carried.end();
    return !s.has_file_data() || s.size == 0 || s.offset + s.size <= end || s.index == h.shstrndx || moved;
  });
  return kept && rest ? end : in_size;
}

// Whether `i` carries the whole of the input section it names.
bool Writer::is_copy_of_section(const Insert& i) const {
  if (i.section == 0 || i.section >= in_.sections().size()) return false;
  const Section& s = in_.sections()[i.section];
  return s.has_file_data() && !(s.flags & SHF_ALLOC) && i.bytes.data() == in_.bytes().data() + s.offset && i.bytes.size() == s.size;
}

void Writer::begin(const std::string& path, int source_fd, std::span<const u32> carried) {
  constexpr u64 worth_a_thread = 4 << 20;  // a thread's start costs ~0.1 ms; copying 4 MiB ~1 ms
  const u64 in_size = in_.bytes().size();
  if (source_fd < 0 || in_size < worth_a_thread || file_) return;
  std::vector<u32> whole;  // those the new segments can carry: non-allocated ones with file data
  for (u32 i : carried)
    if (i != 0 && i < in_.sections().size() && in_.sections()[i].has_file_data() && !(in_.sections()[i].flags & SHF_ALLOC)) whole.push_back(i);
  early_end_ = copied_end(whole);
  try {
    file_ = std::make_unique<TempFile>(path, in_size);
    early_copy_ = std::make_unique<Copier>(source_fd, file_->fd(), 0, 0, early_end_);
  } catch (const std::exception&) {  // no file (write() tries again and reports why), or no thread
    file_.reset();
    return;
  }
  file_path_ = path;
}

// Where a segment's data goes when the file so far ends at `end`: 16-byte aligned, its offset congruent
// to its vaddr modulo the largest page alignment.
u64 Writer::segment_offset(u64 end, u64 vaddr) const {
  const u64 align = max_load_align();
  const u64 off = align_up(end, 16);
  return off + ((vaddr % align) - (off % align) + align) % align;
}

// The offset in the input of `bytes` when they are part of its mapping.
std::optional<u64> Writer::input_offset(std::span<const u8> bytes) const {
  const u64 in_size = in_.bytes().size();
  const auto in = reinterpret_cast<uintptr_t>(in_.bytes().data()), at = reinterpret_cast<uintptr_t>(bytes.data());
  if (at >= in && at - in <= in_size && bytes.size() <= in_size - (at - in)) return at - in;
  return std::nullopt;
}

void Writer::write(const std::string& path, unsigned mode, int source_fd, PatchStream stream) {
  const Layout& l = layout_for(in_.codec().is64);
  const Header& h = in_.header();
  const u64 copy_end = copied_end();  // the input's bytes that are copied: [0, copy_end)
  u64 size = copy_end;
  for (NewSegment& s : segs_) {
    s.offset = segment_offset(size, s.vaddr);
    size = s.offset + s.size();
  }
  u64 shstr_off = 0, shoff = 0;
  if (h.shnum > 0 && !segs_.empty()) {
    shstr_off = size;
    size += in_.sections()[h.shstrndx].size;
    for (const NewSegment& s : segs_)
      for (const NewSection& n : s.sections) size += n.name.size() + 1;
    shoff = align_up(size, l.shdr.size == 64 ? 8 : 4);
    size = shoff + (h.shnum + new_section_count()) * l.shdr.size;
  }

  // What replaces input bytes: the ELF header, the program header table, and the patches.
  std::vector<u8> ehdr(in_.bytes().begin(), in_.bytes().begin() + l.ehdr.size);
  std::vector<u8> phdrs(in_.bytes().begin() + h.phoff, in_.bytes().begin() + h.phoff + h.phnum * l.phdr.size);
  std::vector<u8> tail;
  if (!segs_.empty() || !grown_.empty()) emit_phdrs(phdrs);
  if (entry_) in_.codec().put(ehdr, l.ehdr.entry.off, l.ehdr.entry.width, *entry_);
  if (shoff) tail = section_tail(shstr_off, shoff, copy_end, ehdr);
  if (!stream) {
    auto by_offset = [](const Patch& a, const Patch& b) { return a.offset < b.offset; };
    if (!std::is_sorted(patches_.begin(), patches_.end(), by_offset)) std::sort(patches_.begin(), patches_.end(), by_offset);
    stream = [this, i = size_t{0}](std::span<Patch> out) mutable {
      size_t n = std::min(out.size(), patches_.size() - i);
      std::copy_n(patches_.begin() + i, n, out.begin());
      i += n;
      return n;
    };
  } else if (!patches_.empty()) {
    in_.fail(0, "internal: both patch() and a patch stream");
  }
  // The next patch not yet applied (from a batch the stream filled), and one that straddles the
  // current chunk's end.
  std::array<Patch, 512> batch;
  size_t batch_at = 0, batch_size = 0;
  const Patch* head = nullptr;
  std::optional<Patch> carry;
  u64 last_end = 0;
  auto pull = [&] {
    if (batch_at == batch_size) {
      batch_at = 0;
      batch_size = stream(batch);
      if (batch_size > batch.size()) in_.fail(0, "internal: a patch stream overfilled its batch");
      if (batch_size == 0) return void(head = nullptr);
    }
    const Patch& p = batch[batch_at++];
    if (p.offset < last_end || p.len > sizeof p.bytes || p.offset + p.len > copy_end)
      in_.fail(p.offset, "internal: patches out of order, overlapping or past the end of the file");
    last_end = p.offset + p.len;
    head = &p;
  };
  pull();

  // The file: begin()'s, with [0, early) of the input in it already, or a new one.
  if (file_ && path != file_path_) {
    early_copy_.reset();
    file_.reset();
  }
  const u64 early = early_copy_ ? early_copy_->wait() : 0;
  if (file_)
    file_->resize(size);
  else
    file_ = std::make_unique<TempFile>(path, size);
  TempFile& tmp = *file_;
  auto copy_input = [&](u64 lo, u64 hi) {
    lo = std::max(lo, early);
    if (lo < hi) tmp.copy_from(source_fd, lo, lo, hi - lo, in_.bytes());
  };
  constexpr u64 chunk_size = 256 << 10;
  std::vector<u8> chunk(std::min(chunk_size, copy_end));
  u64 clean_from = 0;  // start of a run of chunks nothing changes, to copy in the kernel
  auto touched = [&](u64 lo, u64 hi) {
    auto hits = [&](u64 off, u64 len) { return off < hi && off + len > lo; };
    return hits(0, ehdr.size()) || hits(h.phoff, phdrs.size()) || carry || (head && head->offset < hi);
  };
  for (u64 lo = 0; lo < copy_end; lo += chunk_size) {
    std::span<u8> c(chunk.data(), std::min(chunk_size, copy_end - lo));
    const u64 hi = lo + c.size();
    if (!touched(lo, hi)) {
      if (hi < copy_end) continue;  // extend the clean run
      copy_input(clean_from, copy_end);
      clean_from = copy_end;
      break;
    }
    copy_input(clean_from, lo);
    clean_from = hi;
    std::memcpy(c.data(), in_.bytes().data() + lo, c.size());
    overlay(c, lo, phdrs, h.phoff);
    overlay(c, lo, ehdr, 0);
    if (carry) overlay(c, lo, {carry->bytes, carry->len}, carry->offset);
    carry.reset();
    for (; head && head->offset < hi; pull()) {
      if (head->offset >= lo && head->offset + head->len <= hi) {
        small_copy(c.data() + (head->offset - lo), head->bytes, head->len);
        continue;
      }
      overlay(c, lo, {head->bytes, head->len}, head->offset);
      if (head->offset + head->len > hi) carry = *head;
    }
    tmp.write_at(c, lo);
  }
  // What the early copy put beyond the input's copy and nothing below overwrites (the padding before
  // each segment) becomes zeros again.
  static constexpr u8 zeros[4096] = {};
  for (u64 at = copy_end; const NewSegment& s : segs_) {
    for (u64 hi = std::min(s.offset, early); at < hi; at += std::min<u64>(hi - at, sizeof zeros))
      tmp.write_at(std::span<const u8>(zeros, std::min<u64>(hi - at, sizeof zeros)), at);
    at = s.offset + s.size();
  }
  for (const NewSegment& s : segs_) {  // its data, with the inserts put in
    u64 from = 0, to = s.offset;
    for (const Insert& i : s.inserts) {
      tmp.write_at(std::span<const u8>(s.data).subspan(from, i.at - from), to);
      to += i.at - from;
      from = i.at;
      if (auto off = input_offset(i.bytes))  // part of the input's mapping
        tmp.copy_from(source_fd, *off, to, i.bytes.size(), in_.bytes());
      else
        tmp.write_at(i.bytes, to);
      to += i.bytes.size();
    }
    tmp.write_at(std::span<const u8>(s.data).subspan(from), to);
  }
  if (!tail.empty()) tmp.write_at(tail, shstr_off);
  tmp.commit(mode);
}

void Writer::emit_phdrs(std::span<u8> out) const {
  const Codec& c = in_.codec();
  const PhdrLayout& p = layout_for(c.is64).phdr;
  const u64 phoff = 0;  // `out` is the program header table itself
  for (const auto& [index, size] : grown_) {
    if (index >= in_.header().phnum || c.get(out, index * p.size + p.type.off, p.type.width) != PT_LOAD)
      in_.fail(in_.header().phoff, "internal: growing a program header that is not a PT_LOAD");
    c.put(out, index * p.size + p.filesz.off, p.filesz.width, size);
    c.put(out, index * p.size + p.memsz.off, p.memsz.width, size);
  }
  for (const NewSegment& s : segs_) {
    u64 base = phoff + s.phdr_slot * p.size;
    auto put = [&](Field f, u64 v) { c.put(out, base + f.off, f.width, v); };
    put(p.type, PT_LOAD);
    put(p.flags, s.flags);
    put(p.offset, s.offset);
    put(p.vaddr, s.vaddr);
    put(p.paddr, s.vaddr);
    put(p.filesz, s.size());
    put(p.memsz, s.size());
    put(p.align, max_load_align());
  }
  // Keep PT_LOAD records in ascending p_vaddr order, in the slots PT_LOAD records occupy.
  std::vector<u64> slots;
  std::vector<std::vector<u8>> recs;
  for (u64 i = 0; i < in_.header().phnum; i++) {
    u64 base = phoff + i * p.size;
    if (c.get(out, base + p.type.off, p.type.width) != PT_LOAD) continue;
    slots.push_back(base);
    recs.emplace_back(out.begin() + base, out.begin() + base + p.size);
  }
  std::stable_sort(recs.begin(), recs.end(), [&](const auto& a, const auto& b) {
    return c.get(a, p.vaddr.off, p.vaddr.width) < c.get(b, p.vaddr.off, p.vaddr.width);
  });
  for (size_t i = 0; i < slots.size(); i++) std::memcpy(out.data() + slots[i], recs[i].data(), p.size);
}

// The section name table (the old names, then the new ones) and the section header table (the old
// headers, then one per appended segment), laid out from `shstr_off`, the headers of sections left
// out of the input's copy (which ends at `copy_end`) pointing at their copies; also points `ehdr` at
// them.
std::vector<u8> Writer::section_tail(u64 shstr_off, u64 shoff, u64 copy_end, std::span<u8> ehdr) const {
  const Codec& c = in_.codec();
  const Layout& l = layout_for(c.is64);
  const ShdrLayout& sh = l.shdr;
  const Header& h = in_.header();
  const Section& old_str = in_.sections()[h.shstrndx];
  const u64 added = new_section_count();
  std::vector<u8> tail(shoff - shstr_off + (h.shnum + added) * sh.size);
  std::span<u8> strs(tail.data(), shoff - shstr_off), shdrs(tail.data() + (shoff - shstr_off), tail.size() - (shoff - shstr_off));
  std::memcpy(strs.data(), in_.bytes().data() + old_str.offset, old_str.size);
  std::memcpy(shdrs.data(), in_.bytes().data() + h.shoff, h.shnum * sh.size);
  auto put = [&](u64 index, Field f, u64 v) { c.put(shdrs, index * sh.size + f.off, f.width, v); };
  u64 str_end = old_str.size, idx = h.shnum;
  for (const NewSegment& s : segs_) {
    u64 inserted = 0;  // the inserts' bytes before this one
    for (const Insert& i : s.inserts) {
      if (is_copy_of_section(i) && in_.sections()[i.section].offset >= copy_end) put(i.section, sh.offset, s.offset + i.at + inserted);  // left out of the copy
      inserted += i.bytes.size();
    }
    for (const NewSection& n : s.sections) {
      std::memcpy(strs.data() + str_end, n.name.c_str(), n.name.size() + 1);
      put(idx, sh.name, str_end);
      str_end += n.name.size() + 1;
      put(idx, sh.type, SHT_PROGBITS);
      put(idx, sh.flags, SHF_ALLOC | n.flags);
      put(idx, sh.addr, s.vaddr + n.offset);
      put(idx, sh.offset, s.offset + n.offset);
      put(idx, sh.size_, n.size);
      put(idx, sh.addralign, 8);
      idx++;
    }
  }
  put(h.shstrndx, sh.offset, shstr_off);
  put(h.shstrndx, sh.size_, str_end);
  const EhdrLayout& e = l.ehdr;
  u64 total = h.shnum + added;
  c.put(ehdr, e.shoff.off, e.shoff.width, shoff);
  if (total >= SHN_LORESERVE) {
    c.put(ehdr, e.shnum.off, e.shnum.width, 0);
    put(0, sh.size_, total);
  } else {
    c.put(ehdr, e.shnum.off, e.shnum.width, total);
  }
  return tail;
}

u64 Writer::new_section_count() const {
  u64 n = 0;
  for (const NewSegment& s : segs_) n += s.sections.size();
  return n;
}

void write_file(const std::string& path, std::span<const u8> bytes, unsigned mode) {
  TempFile tmp(path, bytes.size());
  tmp.write_at(bytes, 0);
  tmp.commit(mode);
}

}  // namespace prepatch::elf
