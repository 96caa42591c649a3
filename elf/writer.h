// Produces an output ELF by copying the input and applying edits:
//   - in-place byte patches at virtual addresses (Writer::patch),
//   - appended loadable segments, each also described by new sections,
//   - a new section header table (and section name table) at the end of the file.
//
// An appended segment reuses a program header slot the loader does not need: a PT_NOTE is turned into
// a PT_LOAD (the technique E9Patch uses; see ../shared/NOTES.md), so the program header table keeps its
// size and place and nothing already in the file moves. PT_LOAD entries are kept in ascending p_vaddr
// order, as the ELF specification and the kernel's total-mapping-size computation expect. The new
// segment is placed above every existing segment's end (including .bss) and, on x86-64, within rel32
// reach of the text of any binary under 2 GiB. One exception to "nothing moves": a non-allocated
// section the new segments carry a whole copy of (Insert::section; the preparer's .strtab) is left out
// of the input's copy when only such sections, the section name table and the section headers follow
// it, and its header then points at the copy.
//
// Output appears atomically: everything is written to a temporary file in the target's directory,
// given the requested mode, and renamed over the target. On any error the temporary file is removed.
// The file is streamed through one fixed-size buffer (copy a chunk of the input, apply the patches that
// fall in it, write it), so memory does not grow with the binary: 24 bytes per patch, nothing per byte.
// The kernel's copy of the input can start early, on a second thread, while the caller still works
// out the edits (begin()).
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "elf/bulk.h"
#include "elf/copier.h"
#include "elf/elf.h"
#include "elf/temp_file.h"

namespace prepatch::elf {

// A section describing part of an appended segment.
struct NewSection {
  std::string name;
  u64 offset = 0, size = 0;  // within the segment's data
  u32 flags = 0;             // SHF_* beyond SHF_ALLOC
};

// Bytes that go into an appended segment at offset `at` of its data, which moves what follows.
// Bytes that are part of the input's mapping are copied from the input file by the kernel.
// `section`, when not 0, says the bytes are the whole of that input section (a non-allocated one, such
// as .strtab): where the sections at the input's end are all copied into the new segments this way,
// the output leaves their old copies out and their headers point at the new ones (Writer::write), so
// the file holds the bytes once.
struct Insert {
  u64 at = 0;
  std::span<const u8> bytes;  // must stay valid until Writer::write returns
  u32 section = 0;
};

struct NewSegment {
  std::vector<NewSection> sections;
  u32 flags = PF_R;  // PF_R/PF_W/PF_X
  Bytes data;
  std::vector<Insert> inserts;  // by ascending `at`
  u64 vaddr = 0;      // assigned by Writer::add_segment
  u64 offset = 0;     // assigned by Writer::layout
  u32 phdr_slot = 0;  // index of the PT_NOTE it replaces
  u64 size() const {
    u64 n = data.size();
    for (const Insert& i : inserts) n += i.bytes.size();
    return n;
  }
};

// A few bytes to write over the copy of the input, at a file offset.
struct Patch {
  u64 offset = 0;
  u8 len = 0;
  u8 bytes[15] = {};
};
static_assert(sizeof(Patch) == 24);

// Fills the span with the next patches, in ascending, non-overlapping file order, and returns how many
// it wrote; 0 when done. Lets a caller with 100k sites describe its edits without a vector of them,
// a batch at a time.
using PatchStream = std::function<size_t(std::span<Patch>)>;

class Writer {
 public:
  explicit Writer(const Elf& in) : in_(in) {}

  // Starts the output early: creates its temporary file beside `path` and has the kernel copy the input
  // into it (copy_file_range) on a second thread while the caller still works out the edits. Copying
  // is most of what `cp` does, and working out a large binary's edits takes about as long; write()
  // then rewrites only the stretches that change. `carried`: the input sections the new segments will
  // hold whole copies of (Insert::section), so the early copy stops where the output's copy of the
  // input is going to end. Best effort, and only worth a thread for inputs of a few MiB: without
  // `source_fd`, for a small input, or when the file cannot be created, it does nothing, and write()
  // does all (and reports any error).
  void begin(const std::string& path, int source_fd, std::span<const u32> carried = {});

  // Appends a loadable segment holding `data` with `inserts` put in, described by `sections` (offsets
  // in the whole segment; one covering it all when empty); returns its virtual address, the one
  // next_segment_vaddr() announced. Throws InputError when the input has no spare program header slot
  // left.
  u64 add_segment(std::string section_name, u32 flags, Bytes data, std::vector<NewSection> sections = {},
                  std::vector<Insert> inserts = {});
  // The virtual address the next add_segment() will use: above every segment, page-aligned.
  u64 next_segment_vaddr() const { return next_vaddr(); }
  // Makes the input's program header `index` (a PT_LOAD) cover `size` bytes of file and memory: it
  // grows over padding the caller has patched with bytes of its own (branch islands).
  void grow_segment(u32 index, u64 size) { grown_.push_back({index, size}); }
  // Points e_entry at `vaddr`.
  void set_entry(u64 vaddr) { entry_ = vaddr; }

  // Queues `bytes` (at most 15) to be written at `vaddr` of one of the input's PT_LOADs. Throws
  // InputError when the range is not file-backed. Patches must not overlap.
  void patch(u64 vaddr, std::span<const u8> bytes);
  // The same, for a patch already at its file offset.
  void add_patch(const Patch& p) { patches_.push_back(p); }

  // Writes the output to `path` with permission bits `mode`. `source_fd`, when open, is the input file:
  // stretches nothing changes are then copied by the kernel (copy_file_range) instead of through memory.
  // `stream`, when given, supplies the patches instead of patch() (which must then not have been used).
  void write(const std::string& path, unsigned mode, int source_fd = -1, PatchStream stream = {});

 private:
  std::vector<u32> spare_phdr_slots() const;
  u64 next_vaddr() const;
  u64 max_load_align() const;
  u64 new_section_count() const;
  void emit_phdrs(std::span<u8> ehdr_phdrs) const;
  u64 copied_end() const;
  u64 copied_end(std::span<const u32> carried) const;
  bool is_copy_of_section(const Insert& i) const;
  u64 segment_offset(u64 end, u64 vaddr) const;
  std::optional<u64> input_offset(std::span<const u8> bytes) const;
  std::vector<u8> section_tail(u64 shstr_off, u64 shoff, u64 copy_end, std::span<u8> ehdr) const;

  const Elf& in_;
  std::vector<NewSegment> segs_;
  std::vector<Patch> patches_;
  std::vector<std::pair<u32, u64>> grown_;  // program header index, new p_filesz and p_memsz
  std::optional<u64> entry_;
  // The output's file, from begin() or write(); begin()'s copy of the input's [0, early_end_) into it,
  // running while the caller works.
  std::unique_ptr<TempFile> file_;
  std::string file_path_;
  u64 early_end_ = 0;
  std::unique_ptr<Copier> early_copy_;  // after file_: stopped before the file is closed and removed
};

// Writes `bytes` to `path` with permission bits `mode` the way Writer::write does: into a temporary file
// beside it, renamed into place, so `path` appears whole or not at all. Throws IoError.
void write_file(const std::string& path, std::span<const u8> bytes, unsigned mode);

}  // namespace prepatch::elf
