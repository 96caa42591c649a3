#include "elf/writer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "elf/layout.h"

namespace prepatch::elf {

namespace {

u64 align_up(u64 v, u64 a) { return (v + a - 1) / a * a; }

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A temporary file beside the target, removed unless commit() renamed it into place.
class TempFile {
 public:
  TempFile(const std::string& target, u64 size) : target_(target) {
    path_ = dir_of(target) + "/." + base_of(target) + ".prepatch-XXXXXX";
    fd_ = ::mkstemp(path_.data());
    if (fd_ < 0) throw IoError(target + ": cannot create a temporary file in " + dir_of(target) + ": " + std::strerror(errno));
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) fail("cannot size the temporary file");
    if (size) {
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
      if (p == MAP_FAILED) fail("cannot map the temporary file");
      map_ = {static_cast<u8*>(p), size};
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    unmap();
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  std::span<u8> bytes() { return map_; }
  void commit(unsigned mode) {
    unmap();
    if (::fchmod(fd_, mode) != 0) fail("cannot set the mode of the temporary file");
    if (::close(fd_) != 0) {
      fd_ = -1;
      fail("cannot write the temporary file");
    }
    fd_ = -1;
    if (::rename(path_.c_str(), target_.c_str()) != 0) fail("cannot rename the temporary file into place");
    committed_ = true;
  }

 private:
  [[noreturn]] void fail(const char* what) {
    throw IoError(target_ + ": " + what + " (" + path_ + "): " + std::strerror(errno));
  }
  void unmap() {
    if (!map_.empty()) ::munmap(map_.data(), map_.size());
    map_ = {};
  }
  std::string target_, path_;
  int fd_ = -1;
  std::span<u8> map_;
  bool committed_ = false;
};

}  // namespace

std::span<u8> Output::at(u64 vaddr, u64 len) {
  for (const NewSegment& s : segs_)
    if (vaddr >= s.vaddr && vaddr - s.vaddr <= s.data.size() && len <= s.data.size() - (vaddr - s.vaddr))
      return bytes_.subspan(s.offset + (vaddr - s.vaddr), len);
  auto off = in_.vaddr_to_offset(vaddr, len);
  if (!off) in_.fail(0, "no file-backed bytes at vaddr " + hex(vaddr) + " (+" + std::to_string(len) + ")");
  return bytes_.subspan(*off, len);
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
  for (const NewSegment& n : segs_) end = std::max(end, n.vaddr + n.data.size());
  return align_up(end, max_load_align());
}

u64 Writer::add_segment(std::string section_name, u32 flags, std::vector<u8> data) {
  auto slots = spare_phdr_slots();
  if (slots.empty())
    in_.fail(in_.header().phoff, "expected a PT_NOTE program header to turn into the PT_LOAD that maps the site table; found none spare");
  NewSegment s{std::move(section_name), flags, std::move(data), next_vaddr(), 0, slots.front()};
  segs_.push_back(std::move(s));
  return segs_.back().vaddr;
}

void Writer::write(const std::string& path, unsigned mode, const std::function<void(Output&)>& edit) {
  const Layout& l = layout_for(in_.codec().is64);
  const u64 align = max_load_align();
  u64 size = in_.bytes().size();
  // Each appended segment's file offset is congruent to its vaddr modulo the page alignment.
  for (NewSegment& s : segs_) {
    u64 off = align_up(size, 16);
    off += ((s.vaddr % align) - (off % align) + align) % align;
    s.offset = off;
    size = off + s.data.size();
  }
  u64 shstr_off = 0, shoff = 0;
  bool sections = in_.header().shnum > 0 && !segs_.empty();
  if (sections) {
    shstr_off = size;
    size += in_.sections()[in_.header().shstrndx].size;
    for (const NewSegment& s : segs_) size += s.section_name.size() + 1;
    shoff = align_up(size, l.shdr.size == 64 ? 8 : 4);
    size = shoff + (in_.header().shnum + segs_.size()) * l.shdr.size;
  }

  TempFile tmp(path, size);
  std::span<u8> out = tmp.bytes();
  std::memcpy(out.data(), in_.bytes().data(), in_.bytes().size());
  for (const NewSegment& s : segs_) std::memcpy(out.data() + s.offset, s.data.data(), s.data.size());
  emit(out, shstr_off, shoff);
  Output o(in_, segs_, out);
  edit(o);
  tmp.commit(mode);
}

void Writer::emit(std::span<u8> out, u64 shstr_off, u64 shoff) const {
  if (segs_.empty()) return;
  emit_phdrs(out);
  if (shoff) emit_shdrs(out, shstr_off, shoff);
}

void Writer::emit_phdrs(std::span<u8> out) const {
  const Codec& c = in_.codec();
  const PhdrLayout& p = layout_for(c.is64).phdr;
  const u64 phoff = in_.header().phoff;
  for (const NewSegment& s : segs_) {
    u64 base = phoff + s.phdr_slot * p.size;
    auto put = [&](Field f, u64 v) { c.put(out, base + f.off, f.width, v); };
    put(p.type, PT_LOAD);
    put(p.flags, s.flags);
    put(p.offset, s.offset);
    put(p.vaddr, s.vaddr);
    put(p.paddr, s.vaddr);
    put(p.filesz, s.data.size());
    put(p.memsz, s.data.size());
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

void Writer::emit_shdrs(std::span<u8> out, u64 shstr_off, u64 shoff) const {
  const Codec& c = in_.codec();
  const Layout& l = layout_for(c.is64);
  const ShdrLayout& sh = l.shdr;
  const Header& h = in_.header();
  const Section& old_str = in_.sections()[h.shstrndx];
  // Section name table: the old one followed by the new names.
  std::memcpy(out.data() + shstr_off, in_.bytes().data() + old_str.offset, old_str.size);
  u64 str_end = old_str.size;
  std::vector<u64> name_offsets;
  for (const NewSegment& s : segs_) {
    name_offsets.push_back(str_end);
    std::memcpy(out.data() + shstr_off + str_end, s.section_name.c_str(), s.section_name.size() + 1);
    str_end += s.section_name.size() + 1;
  }
  std::memcpy(out.data() + shoff, in_.bytes().data() + h.shoff, h.shnum * sh.size);
  auto put = [&](u64 index, Field f, u64 v) { c.put(out, shoff + index * sh.size + f.off, f.width, v); };
  put(h.shstrndx, sh.offset, shstr_off);
  put(h.shstrndx, sh.size_, str_end);
  for (size_t i = 0; i < segs_.size(); i++) {
    const NewSegment& s = segs_[i];
    u64 idx = h.shnum + i;
    std::memset(out.data() + shoff + idx * sh.size, 0, sh.size);
    put(idx, sh.name, name_offsets[i]);
    put(idx, sh.type, SHT_PROGBITS);
    put(idx, sh.flags, SHF_ALLOC | ((s.flags & PF_W) ? SHF_WRITE : 0) | ((s.flags & PF_X) ? SHF_EXECINSTR : 0));
    put(idx, sh.addr, s.vaddr);
    put(idx, sh.offset, s.offset);
    put(idx, sh.size_, s.data.size());
    put(idx, sh.addralign, 8);
  }
  const EhdrLayout& e = l.ehdr;
  u64 total = h.shnum + segs_.size();
  c.put(out, e.shoff.off, e.shoff.width, shoff);
  if (total >= SHN_LORESERVE) {
    c.put(out, e.shnum.off, e.shnum.width, 0);
    put(0, sh.size_, total);
  } else {
    c.put(out, e.shnum.off, e.shnum.width, total);
  }
}

}  // namespace prepatch::elf
