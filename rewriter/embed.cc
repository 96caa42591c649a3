#include "rewriter/embed.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "arch/aarch64.h"
#include "arch/island.h"
#include "arch/ppc64le.h"
#include "arch/riscv64.h"
#include "arch/thumb2.h"
#include "rewriter/shim_blob.h"
#include "shim/abi.h"

namespace prepatch {

namespace {

constexpr u64 page = 4096;
u64 align_up(u64 v, u64 a) { return (v + a - 1) / a * a; }

shim::BlobHeader blob_header(std::span<const u8> blob) {
  shim::BlobHeader h;
  if (blob.size() < sizeof h) throw std::logic_error("internal: the shim blob is shorter than its header");
  std::memcpy(&h, blob.data(), sizeof h);
  if (std::memcmp(h.magic, shim::blob_magic, 8) != 0 || h.version != shim::blob_version || h.header_size != sizeof h ||
      h.file_size != blob.size() || h.data_off % page || h.mem_size % page || h.mem_size < h.file_size ||
      h.config + sizeof(shim::Config) > h.file_size || h.config < h.data_off)
    throw std::logic_error("internal: the embedded shim blob is malformed (shim/embed.cmake)");
  return h;
}

// RISC-V: `auipc t1, hi; jr lo(t1)` over the first 8 bytes of what gcc -pg's calls go to (the _mcount
// PLT entry, or _mcount in a static binary), on to the mcount trampoline with ra (the site's end) and
// a0 (the function's return address) as the call left them. t1 is free there: the PLT entry clobbers
// it, and _mcount is called as an ordinary function.
elf::Patch riscv_redirect(const elf::Elf& elf, u64 at, u64 tramp) {
  const auto off = elf.vaddr_to_offset(at, 8);
  const elf::Segment* seg = elf.load_segment_for(at, 8);
  if (!off || !seg || !(seg->flags & PF_X))
    elf.fail(off.value_or(0), "the -pg sites call vaddr " + hex(at) + ", which is not 8 bytes of executable code to redirect to the shim");
  u32 auipc = 0, jalr = 0;
  if (!arch::riscv64::encode_jump(at, tramp, auipc, jalr))
    elf.fail(*off, "the -pg sites' target at vaddr " + hex(at) + " cannot reach the shim at " + hex(tramp) + " with auipc+jalr (+-2 GiB)");
  elf::Patch p;
  p.offset = *off;
  p.len = 8;
  for (unsigned i = 0; i < 4; i++) p.bytes[i] = static_cast<u8>(auipc >> (8 * i)), p.bytes[4 + i] = static_cast<u8>(jalr >> (8 * i));
  return p;
}

// How far a patchable site's call reaches (a bl: AArch64 +-128 MiB, PPC64 +-32 MiB, Thumb +-16 MiB;
// x86-64's call +-2 GiB), on the ISAs whose patchable sites may call an island before a function's
// entry; 0 on the others.
u64 entry_island_reach(u16 machine) {
  return machine == EM_AARCH64 ? u64{128} << 20
         : machine == EM_PPC64 ? u64{32} << 20
         : machine == EM_ARM   ? u64{16} << 20
         : machine == EM_X86_64 ? u64{2} << 30
                                : 0;
}

// At most how many islands before entries runtime_segment chooses among `pre_entry`. Each is chosen
// for a site no earlier island reaches, as far ahead as the site reaches, so the one after next lies
// more than twice the reach beyond it: one per reach of the stretches' span, and two more (and two
// for the reach's few bytes of asymmetry).
u64 max_entry_islands(u16 machine, const std::vector<Discovery::Stretch>& pre_entry) {
  const u64 reach = entry_island_reach(machine);
  if (!reach || pre_entry.empty()) return 0;
  return std::min<u64>(pre_entry.size(), (pre_entry.back().start - pre_entry.front().start) / reach + 4);
}

// The ISA whose branch islands a binary of ELF machine `machine` takes (arch/island.h), or nullopt.
std::optional<arch::Isa> island_isa(u16 machine) {
  if (machine == EM_AARCH64) return arch::Isa::aarch64;
  if (machine == EM_PPC64) return arch::Isa::ppc64le;
  if (machine == EM_ARM) return arch::Isa::thumb2;
  if (machine == EM_X86_64) return arch::Isa::x86_64;
  if (machine == EM_RISCV) return arch::Isa::riscv64;
  return std::nullopt;
}

// Where `size` bytes of branch islands can go, aligned to `align`: right after an executable PT_LOAD's
// bytes, which the segment grows to cover. The bytes there must be zeros that nothing describes (no
// section, no other segment, no header table): the padding ld leaves up to the next segment's file
// offset, which the output copies. Nor may the grown segment's last page reach a page of another
// loaded segment (pages as large as the largest p_align, so that 64 KiB-page kernels map it too).
// Candidates in program header order; `fits` picks one (it checks the sites' reach).
template <class Fits>
std::optional<Island> island_spot(const elf::Elf& elf, u64 size, u64 align, Fits fits) {
  const auto& segs = elf.segments();
  u64 big_page = page;
  for (const elf::Segment& q : segs)
    if (q.type == PT_LOAD) big_page = std::max(big_page, q.align);
  const auto down = [&](u64 v) { return v / big_page * big_page; };
  for (const elf::Segment& s : segs) {
    if (s.type != PT_LOAD || !(s.flags & PF_X) || s.filesz != s.memsz || s.filesz == 0) continue;
    // The segment grows over [from, off + size): the alignment before the islands, then the islands.
    const u64 at = align_up(s.vaddr + s.filesz, align), off = s.offset + (at - s.vaddr), end = at + size, from = s.offset + s.filesz;
    if (s.vaddr + s.filesz < s.vaddr || at < s.vaddr + s.filesz || from < s.offset || off < from || off + size > elf.bytes().size()) continue;
    bool free = true, followed = false;
    const auto overlaps = [&](u64 lo, u64 hi) { return lo < off + size && from < hi; };
    for (const elf::Segment& q : segs) {
      if (q.index == s.index) continue;
      if (q.filesz && overlaps(q.offset, q.offset + q.filesz)) free = false;
      if (q.type == PT_LOAD && q.memsz && down(q.vaddr) < align_up(end, big_page) && down(at) < align_up(q.vaddr + q.memsz, big_page)) free = false;
      followed |= q.type == PT_LOAD && q.filesz && q.offset >= off + size;
    }
    for (const elf::Section& c : elf.sections())
      if (c.has_file_data() && c.size && overlaps(c.offset, c.offset + c.size)) free = false;
    const auto& h = elf.header();
    if (overlaps(h.phoff, h.phoff + u64{h.phnum} * (elf.codec().is64 ? 56 : 32)) || overlaps(h.shoff, h.shoff + u64{h.shnum} * (elf.codec().is64 ? 64 : 40)) ||
        overlaps(0, elf.codec().is64 ? 64 : 52))
      free = false;
    if (!free || !followed) continue;
    const auto bytes = elf.bytes().subspan(from, off + size - from);
    if (std::any_of(bytes.begin(), bytes.end(), [](u8 b) { return b != 0; })) continue;
    Island i{at, off, s.index, end - s.vaddr, {}};
    if (fits(i)) return i;
  }
  return std::nullopt;
}

// ET_DYN that is not an executable: no PT_INTERP (a PIE has one), no DF_1_PIE (a static PIE has
// that), and a dynamic section (an ET_DYN without one is nothing a loader would take as a library).
bool is_shared_object(const elf::Elf& elf) {
  if (elf.header().type != ET_DYN) return false;
  for (const elf::Segment& s : elf.segments())
    if (s.type == PT_INTERP) return false;
  const auto dyn = elf.dynamic();
  for (const elf::Dyn& d : dyn)
    if (d.tag == DT_FLAGS_1 && (d.val & DF_1_PIE)) return false;
  return !dyn.empty();
}

// Where an object's islands of last resort may go first (shim::LowIslands): the 64 KiB page below its
// lowest segment's, which in a PIE or a shared object linked at 0 lies below address 0 (the sum with
// its load bias wraps). Nullopt for an ET_EXEC whose page would lie below 64 KiB (vm.mmap_min_addr:
// an ARM32 one linked at 0x10000, as ld does by default, or a RISC-V64 one).
std::optional<u64> low_islands_page(const elf::Elf& elf) {
  const u16 m = elf.header().machine;
  if (m != EM_X86_64 && m != EM_AARCH64 && m != EM_PPC64 && m != EM_RISCV && m != EM_ARM) return std::nullopt;
  u64 lowest = ~u64{0};
  for (const elf::Segment& s : elf.segments())
    if (s.type == PT_LOAD) lowest = std::min(lowest, s.vaddr);
  constexpr u64 size = shim::low_islands_page;
  if (lowest == ~u64{0} || (elf.header().type == ET_EXEC && lowest < 2 * size)) return std::nullopt;
  return lowest / size * size - size;
}

// Where a shared object's shim starts and ends (docs/SHIM.md, "Shared objects", "Unloading"): its
// DT_INIT, which ld.so calls before the object's constructors, and its DT_FINI, which it calls after
// the object's destructors; or, where there is none (RISC-V: its C library has no _init or _fini),
// the first DT_INIT_ARRAY entry, which runs before the others, and the first DT_FINI_ARRAY entry,
// which runs after the others, through the R_*_RELATIVE relocation that fills it. `original`: the
// link-time address the shim calls; `words`: the file offsets of the words that become the shim's
// entry (a RELA relocation's addend, and its slot too where the linker wrote the value there as well).
struct Hook {
  u64 original = 0;
  u64 words[2] = {};
  unsigned count = 0;
};
struct HookTags {
  i64 function, array, array_size;
};
constexpr HookTags start_tags{DT_INIT, DT_INIT_ARRAY, DT_INIT_ARRAYSZ}, fini_tags{DT_FINI, DT_FINI_ARRAY, DT_FINI_ARRAYSZ};
std::optional<Hook> find_hook(const elf::Elf& elf, HookTags tags) {
  const auto dyn = elf.dynamic();
  const u64 word = elf.codec().word();
  for (const elf::Dyn& d : dyn)
    if (d.tag == tags.function) return Hook{d.val, {d.offset + word}, 1};
  u64 array = 0, size = 0;
  for (const elf::Dyn& d : dyn) {
    if (d.tag == tags.array) array = d.val;
    if (d.tag == tags.array_size) size = d.val;
  }
  const auto slot = array && size >= word ? elf.vaddr_to_offset(array, word) : std::nullopt;
  if (!slot) return std::nullopt;
  const u64 in_slot = elf.codec().get(elf.bytes(), *slot, word);
  for (const elf::Section& s : elf.sections()) {
    if (!(s.flags & SHF_ALLOC) || (s.type != SHT_RELA && s.type != SHT_REL)) continue;
    for (u64 i = 0, n = elf.reloc_count(s); i < n; i++) {
      const elf::Reloc r = elf.reloc(s, i);
      if (r.offset != array) continue;
      if (r.type != elf::relative_reloc(elf.header().machine)) return std::nullopt;
      if (s.type == SHT_REL) return Hook{in_slot, {*slot}, 1};  // the slot holds the addend
      const u64 addend_at = elf.reloc_entry_offset(s, i) + 2 * word;
      const u64 addend = static_cast<u64>(r.addend) & (word == 8 ? ~u64{0} : 0xffffffffu);
      if (in_slot == 0) return Hook{addend, {addend_at}, 1};
      if (in_slot == addend) return Hook{addend, {addend_at, *slot}, 2};
      return std::nullopt;
    }
  }
  return std::nullopt;
}

// The link-time address of a shared object's program headers: inside its first loaded segment.
std::optional<u64> phdr_vaddr(const elf::Elf& elf) {
  const u64 size = elf.header().phnum * elf::layout_for(elf.codec().is64).phdr.size;
  for (const elf::Segment& s : elf.segments())
    if (s.type == PT_LOAD && elf.header().phoff >= s.offset && elf.header().phoff + size <= s.offset + s.filesz)
      return s.vaddr + (elf.header().phoff - s.offset);
  return std::nullopt;
}

// A shared object with text relocations (DT_TEXTREL) can carry the shim when none of them writes code:
// gcc -pg -mrecord-mcount -fPIC leaves absolute addresses in the read-only __mcount_loc, which makes
// the link mark the object so, yet the loader only writes that section (before any constructor, the
// shim's start included). A relocation inside an executable segment (non-PIC code: a -pg site's own
// `call mcount` among them) would have the loader write bytes the shim owns: refused, at the offset
// of that relocation (a REL, RELA or packed RELR entry). Without section headers the relocations
// cannot be listed: refused too.
void check_text_relocations(const elf::Elf& elf, u64 textrel_at) {
  const auto refuse = [&](u64 at, const std::string& why) {
    elf.fail(at, "a shared object with text relocations (DT_TEXTREL) " + why + "; build it with -fPIC");
  };
  if (elf.sections().empty()) refuse(textrel_at, "and no section headers to show which bytes they write");
  const u64 word = elf.codec().word();
  for (const elf::Section& s : elf.sections()) {
    if (!(s.flags & SHF_ALLOC)) continue;
    const auto check = [&](u64 at, u64 entry) {
      for (const elf::Segment& g : elf.segments())
        if (g.type == PT_LOAD && (g.flags & PF_X) && at < g.vaddr + g.memsz && at + word > g.vaddr)
          refuse(entry, "whose relocation in " + std::string(s.name) + " writes code at vaddr " + hex(at) + ": the loader would write bytes the shim owns");
    };
    if (s.type == SHT_RELR) elf.for_each_relr(s, check);
    if (s.type != SHT_RELA && s.type != SHT_REL) continue;
    for (u64 i = 0, n = elf.reloc_count(s); i < n; i++) check(elf.reloc(s, i).offset, elf.reloc_entry_offset(s, i));
  }
}

}  // namespace

std::string cannot_embed(const elf::Elf& elf) {
  if (shim_blob(elf.header().machine).empty())
    elf.fail(18, std::string(elf::machine_name(elf.header().machine)) +
                     ": this prepatch was built without the shim for it (its cross compiler was missing: scripts/install-deps.sh installs it)");
  // Preparing rewrites the ELF header (the entry point) and a program header: a section whose bytes
  // lie over them would change with them, and read back as something else (a symbol table over the
  // header names its symbols by the new entry point).
  const elf::Layout& l = elf::layout_for(elf.codec().is64);
  const u64 ph = elf.header().phoff, ph_end = ph + u64{elf.header().phnum} * l.phdr.size;
  for (const elf::Section& s : elf.sections())
    if (s.has_file_data() && s.size && (s.offset < l.ehdr.size || (s.offset < ph_end && (s.offset >= ph || s.size > ph - s.offset))))
      elf.fail(elf.header().shoff + u64{s.index} * l.shdr.size + l.shdr.offset.off,
               "section " + std::to_string(s.index) + " (" + std::string(s.name) + ") starts at file offset " + hex(s.offset) +
                   ", inside the ELF header or the program headers, which preparing rewrites; expected its bytes elsewhere");
  if (elf.header().type == ET_EXEC) return {};
  if (elf.header().type != ET_DYN) return "expected an executable or a shared object (ET_EXEC or ET_DYN)";
  if (!is_shared_object(elf)) return {};
  const auto dyn = elf.dynamic();
  for (const elf::Dyn& d : dyn)
    if (d.tag == DT_TEXTREL || (d.tag == DT_FLAGS && (d.val & DF_TEXTREL))) check_text_relocations(elf, d.offset);
  if (!find_hook(elf, start_tags))
    elf.fail(dyn.empty() ? 0 : dyn.front().offset,
             "expected a DT_INIT entry in the shared object's dynamic section, or a first DT_INIT_ARRAY entry that a relative "
             "relocation fills, which the shim starts from (gcc's crti.o provides _init, crtbeginS.o an init_array entry; was it "
             "linked with -nostartfiles?); found neither");
  if (!phdr_vaddr(elf)) elf.fail(elf.header().phoff, "expected the shared object's program headers inside a loaded segment");
  return {};
}

// The most bytes an ARM32 sled may take: as many as a landing needs at any distance in the 32-bit
// space (arch/thumb2.h encode_arm_far_island).
constexpr u64 arm_sled_most = 0x1'0000;

// Which of the stubs -pg calls enter on their way to mcount (Discovery::mcount_stubs) code discovery
// did not read may enter too, in a binary without a .symtab: discovery then scanned only the functions
// the FDEs cover (rewriter/sites.cc add_unwind_functions). Every aligned word of the executable
// segments that is a `b` or `bl` (AArch64, PPC64le) into a stub must be a site or lie in a stub itself
// (ld chains them); a stub entered from anywhere else keeps its code. (Data that reads as such a branch
// only costs that stub its island.)
std::vector<bool> stubs_entered_elsewhere(const elf::Elf& elf, const Discovery& d) {
  const auto& stubs = d.mcount_stubs;
  std::vector<bool> out(stubs.size());
  const auto stub_at = [&](u64 a) -> std::optional<size_t> {
    auto it = std::upper_bound(stubs.begin(), stubs.end(), a, [](u64 x, const Discovery::Stretch& t) { return x < t.start; });
    if (it == stubs.begin() || a >= (it - 1)->start + (it - 1)->size) return std::nullopt;
    return static_cast<size_t>(it - 1 - stubs.begin());
  };
  const auto is_site = [&](u64 a) {
    auto it = std::lower_bound(d.sites.begin(), d.sites.end(), a, [](const Site& s, u64 x) { return s.addr < x; });
    return it != d.sites.end() && it->addr == a;
  };
  const bool aarch64 = elf.header().machine == EM_AARCH64;
  for (const elf::Segment& g : elf.segments()) {
    if (g.type != PT_LOAD || !(g.flags & PF_X)) continue;
    const auto b = elf.bytes_at(g.vaddr, g.filesz);
    for (u64 i = (4 - g.vaddr % 4) % 4; i + 4 <= b.size(); i += 4) {
      const u32 w = static_cast<u32>(elf.codec().get(b, i, 4));
      const u64 at = g.vaddr + i;
      const auto target = aarch64 ? arch::aarch64::b_or_bl_target(w, at) : arch::ppc64le::b_or_bl_target(w, at);
      if (!target) continue;
      if (const auto k = stub_at(*target); k && !stub_at(at) && !is_site(at)) out[*k] = true;
    }
  }
  return out;
}

u64 runtime_segment_tail(u16 machine) {
  std::span<const u8> blob = shim_blob(machine);
  return blob.empty() ? 0 : page - 1 + blob_header(blob).mem_size;
}

RuntimeSegment runtime_segment(const elf::Elf& elf, Bytes table, u64 vaddr, const Discovery& d, const Reach& reach) {
  std::span<const u8> blob = shim_blob(elf.header().machine);
  const shim::BlobHeader h = blob_header(blob);
  RuntimeSegment r;
  r.names_at = table.size();
  r.names = std::span<const u8>(reinterpret_cast<const u8*>(d.strings.data()), d.strings.size());
  r.table_size = table.size() + r.names.size();
  // RISC-V -pg: the sites' frames, one u32 per table entry, between the names and the blob.
  std::vector<u32> frames;
  if (!d.mcount_frames.empty()) {
    auto by_addr = d.mcount_frames;
    std::sort(by_addr.begin(), by_addr.end());
    for (const Site& s : d.sites) {
      if (!s.prepared()) continue;
      auto it = std::lower_bound(by_addr.begin(), by_addr.end(), std::pair<u64, u32>{s.addr, 0});
      frames.push_back(it != by_addr.end() && it->first == s.addr ? it->second : 0);
    }
  }
  const u64 frames_at = align_up(r.table_size, 8);
  // Room for the addresses of the islands over stubs (below), at most one per stub.
  r.stub_islands_at = align_up(frames_at + 4 * frames.size(), 8);
  const u64 stub_room = 8 * d.mcount_stubs.size();
  // And for those over the nops before functions' entries (below): as many as their choice can take.
  r.entry_islands_at = r.stub_islands_at + stub_room;
  const u64 entry_room = 8 * max_entry_islands(elf.header().machine, d.pre_entry);
  r.blob_offset = align_up(r.entry_islands_at + entry_room, page);
  // Whether the site's call form reaches `target` (0: no target).
  const auto reaches = [&](const Site& s, arch::CallForm form, u64 target) {
    u8 call[arch::thumb2::arm_site_len];
    return target && arch::encode_call_form(form, s.addr, target, call);
  };
  // Whether a site that `which` picks among the groups' ends may reach neither end of the segment: its
  // start, or the blob's end where it lies now, `more` bytes further.
  const auto some_far = [&](auto which, u64 more) {
    bool far = false;
    reach.for_each_end([&](const Site& s, arch::CallForm form) {
      far |= which(s, form) && (!reaches(s, form, vaddr) || !reaches(s, form, vaddr + r.blob_offset + more + page + h.mem_size));
    });
    return far;
  };
  // And for the islands of last resort (shim::LowIslands), where the object may have a page for them
  // and a site may reach neither end of the segment.
  const bool shared = is_shared_object(elf);
  const std::optional<u64> low_page = low_islands_page(elf);
  u64 before_blob = r.entry_islands_at + entry_room;
  if (low_page) {
    if (some_far([](const Site&, arch::CallForm) { return true; }, 0)) {
      r.low_islands_at = align_up(before_blob, 8);
      before_blob = r.low_islands_at + sizeof(shim::LowIslands);
      r.blob_offset = align_up(before_blob, page);
    }
  }
  // AArch64: a far slot for the 8-byte islands (below) on the page before the blob, where a
  // patchable site may reach neither end of the segment (a 4 KiB page more in the file).
  if (elf.header().machine == EM_AARCH64 && !d.pre_entry.empty()) {
    if (some_far([](const Site& s, arch::CallForm) { return s.kind == SiteKind::patchable; }, 0)) {
      r.far_slot_at = align_up(vaddr + before_blob, 4096) - vaddr;  // (4 KiB: adrp's page)
      r.blob_offset = align_up(r.far_slot_at + arch::aarch64::far_slot_size, page);
    }
  }
  // ARM32 PIE: the sled for the 12-byte islands over stubs that only ARM-state sites enter, where such
  // a site may reach neither end of the segment: as long as the farthest landing of them needs (the
  // stubs' landings computed again below, the same).
  const bool fixed = elf.header().type == ET_EXEC;  // never moved: absolute forms will do
  const auto arm_landing = [&](const Discovery::Stretch& t) {
    return t.arm && t.size >= arch::thumb2::arm_far_island_size && r.arm_sled_at
               ? arch::arm_far_landing(t.start, vaddr + r.arm_sled_at, vaddr + r.arm_sled_at + arm_sled_most)
               : std::nullopt;
  };
  if (elf.header().machine == EM_ARM && !fixed && d.has_symtab &&  // (stub islands need the .symtab: below)
      std::any_of(d.mcount_stubs.begin(), d.mcount_stubs.end(), [](const auto& t) { return t.arm; })) {
    if (some_far([](const Site&, arch::CallForm form) { return form == arch::CallForm::arm_b; }, arm_sled_most)) {
      r.arm_sled_at = align_up(before_blob, 4);
      for (const Discovery::Stretch& t : d.mcount_stubs)
        if (const auto l = arm_landing(t)) r.arm_sled_size = std::max(r.arm_sled_size, l->landing + 4 - (vaddr + r.arm_sled_at));
      if (!r.arm_sled_size) r.arm_sled_at = 0;
      r.blob_offset = align_up(r.arm_sled_at + r.arm_sled_size, page);
    }
  }
  const u64 blob_at = r.blob_offset - r.names.size();  // in data, which lacks the names
  r.data = std::move(table);
  r.data.resize(blob_at + h.mem_size);  // Bytes: not zeroed, so the padding and the .bss are, below
  std::memset(r.data.data() + r.names_at, 0, blob_at - r.names_at);
  for (size_t i = 0; i < frames.size(); i++) elf.codec().put(r.data, frames_at - r.names.size() + 4 * i, 4, frames[i]);
  std::memcpy(r.data.data() + blob_at, blob.data(), blob.size());
  std::memset(r.data.data() + blob_at + blob.size(), 0, h.mem_size - blob.size());
  const u64 blob_vaddr = vaddr + r.blob_offset;
  std::optional<Hook> hook, fini;
  if (shared) hook = find_hook(elf, start_tags), fini = find_hook(elf, fini_tags);
  const u64 flags = (d.has_symtab && !d.defines_fork ? shim::config_forkless : 0) | (shared ? shim::config_shared_object : 0) |
                    (fini ? shim::config_fini_hooked : 0);
  shim::Config config{blob_vaddr, vaddr, r.table_size, hook ? hook->original : elf.header().entry, flags, {}, {}, 0, d.mcount_via,
                      shared ? phdr_vaddr(elf).value_or(0) : 0, shared ? elf.header().phnum : 0u};
  const std::span<const u8> id = elf.build_id();
  config.fini = fini ? fini->original : 0;
  config.mcount_frames = frames.empty() ? 0 : static_cast<u32>(frames_at);
  config.build_id_size = static_cast<u8>(std::min<size_t>(id.size(), shim::build_id_max));
  if (config.build_id_size) std::memcpy(config.build_id, id.data(), config.build_id_size);
  // The binary's own unwinder entry points: the shim hooks them with a jump (x86-64: 5 bytes;
  // AArch64 and PPC64le, at the local entry: a `b`, one word; RISC-V: `auipc t1; jr t1`, 8 bytes;
  // Thumb-2: a `b.w`, 4 bytes) when the whole instructions it displaces can run elsewhere (a site
  // there would be overwritten: not hooked).
  const bool x86 = elf.header().machine == EM_X86_64, a64 = elf.header().machine == EM_AARCH64, rv = elf.header().machine == EM_RISCV,
             ppc = elf.header().machine == EM_PPC64, arm = elf.header().machine == EM_ARM;
  for (int k = 0; k < 4 && (x86 || a64 || rv || ppc || arm); k++) {
    const u64 f = d.unwinder[k];
    if (!f) continue;
    const u64 displaced = x86 ? 5 + arch::X86_64::max_insn : rv ? 8 + 2 : arm ? 4 + 2 : 4;
    const auto site = std::lower_bound(d.sites.begin(), d.sites.end(), f, [](const Site& s, u64 a) { return s.addr + s.len <= a; });
    if (site != d.sites.end() && site->addr < f + displaced) continue;
    config.unwinder[k] = f;
    if (x86) config.unwinder_len[k] = static_cast<u8>(arch::movable_prefix(elf.bytes_at(f, displaced), 5));
    else if (auto w = elf.bytes_at(f, 4); (a64 || ppc) && w.size() == 4 && f % 4 == 0) {
      const u32 insn = static_cast<u32>(elf.codec().get(w, 0, 4));
      config.unwinder_len[k] = (a64 ? arch::aarch64::movable(insn) : arch::ppc64le::movable(insn)) ? 4 : 0;
    }
    else if (auto b = elf.bytes_at(f, displaced); (rv || arm) && b.size() == displaced && f % 2 == 0) {
      // Whole movable instructions of 2 or 4 bytes (RISC-V's C extension, Thumb-2), as many as the
      // jump's bytes or more.
      const u64 jump = rv ? 8 : 4;
      u64 n = 0;
      while (n < jump) {
        const u16 h = static_cast<u16>(elf.codec().get(b, n, 2));
        const bool wide = rv ? arch::riscv64::insn_length(h) == 4 : arch::thumb2::is_32bit(h);
        const u16 h2 = wide ? static_cast<u16>(elf.codec().get(b, n + 2, 2)) : 0;
        const bool ok = rv ? (wide ? arch::riscv64::movable(static_cast<u32>(h | h2 << 16)) : arch::riscv64::movable(h))
                           : (wide ? arch::thumb2::movable(h, h2) : arch::thumb2::movable(h));
        if (!ok) break;
        n += wide ? 4 : 2;
      }
      config.unwinder_len[k] = static_cast<u8>(n >= jump ? n : 0);
    }
  }
  std::memcpy(r.data.data() + blob_at + h.config, &config, sizeof config);
  // ARM32: the header's offsets of Thumb code have bit 0 set, which e_entry keeps (the kernel starts
  // the program in Thumb state) and a `bl` target drops.
  const u16 machine = elf.header().machine;
  r.entry = blob_vaddr + h.start;
  // A shared object starts from its DT_INIT or first init_array entry, and ends with its DT_FINI or
  // first fini_array entry, which now lead to the shim.
  const auto lead_to = [&](const Hook& k, u32 offset) {
    u8 value[8];
    elf.codec().put(value, 0, elf.codec().word(), blob_vaddr + offset);
    for (unsigned w = 0; w < k.count; w++) {
      elf::Patch& p = r.hooks.emplace_back();
      p.offset = k.words[w];
      p.len = static_cast<u8>(elf.codec().word());
      std::memcpy(p.bytes, value, p.len);
    }
  };
  if (hook) r.entry = 0, lead_to(*hook, h.object_start);
  if (fini) lead_to(*fini, h.object_fini);
  for (int k = 0; k < 3; k++) r.tramp[k] = (blob_vaddr + h.trampoline[k]) & ~u64{machine == EM_ARM ? 1u : 0u};
  // The ARM32 sled: every word a `b` to the ARM-state entry (the header's fentry slot) past its push.
  for (u64 w = 0; w < r.arm_sled_size; w += 4) {
    const auto b = arch::thumb2::arm_sled_word(vaddr + r.arm_sled_at + w, r.tramp[0] + 4);
    if (!b) throw std::logic_error("internal: the sled at " + hex(vaddr + r.arm_sled_at) + " does not reach the ARM-state entry");
    elf.codec().put(r.data, r.arm_sled_at - r.names.size() + w, 4, *b);
  }
  // RISC-V -pg sites keep their call (to mcount_via, which jumps on to the trampoline: below). ARM32's
  // ARM-state sites go to their entry, in the header's fentry slot, or beyond a `b`'s reach to its copy
  // as an island (below), never to a Thumb island or stub, which a `b` cannot enter.
  const auto arm_state = [&](const Site& s) { return machine == EM_ARM && s.len == arch::thumb2::arm_site_len; };
  const auto target_of = [&](const Site& s) {
    return machine == EM_RISCV && s.kind == SiteKind::mcount ? d.mcount_via : r.tramp[arm_state(s) ? 0 : static_cast<int>(s.kind) - 1];
  };
  // A site's branch island slot (Config::island): its kind's, or on ARM32 for an ARM-state site the
  // fentry one (no fentry sites there), which holds the ARM-state entry's island.
  const auto island_index = [&](const Site& s) { return arm_state(s) ? 0 : static_cast<int>(s.kind) - 1; };
  // A kind whose sites do not all reach its trampoline gets a branch island where they all reach one
  // (arch/island.h), which jumps on to the trampoline: one island per trampoline, placed together, and
  // after them ARM32's ARM-state entry as an island (thumb2.h encode_arm_entry_island) where an
  // ARM-state site does not reach the shim's.
  bool need[3] = {}, arm_need = false;
  reach.for_each_end([&](const Site& s, arch::CallForm form) {
    (arm_state(s) ? arm_need : need[static_cast<int>(s.kind) - 1]) |= !reaches(s, form, target_of(s));
  });
  // RISC-V -pg: the sites reach what they call (mcount_via); the redirect there must reach the mcount
  // trampoline, or an island.
  const int mk = static_cast<int>(SiteKind::mcount) - 1;
  const auto redirect_reaches = [&](u64 target) {
    u32 hi = 0, lo = 0;
    return target && arch::riscv64::encode_jump(d.mcount_via, target, hi, lo);
  };
  if (d.mcount_via && !redirect_reaches(r.tramp[mk])) need[mk] = true;
  const auto isa = island_isa(machine);
  if (isa && (need[0] || need[1] || need[2] || arm_need)) {
    std::vector<int> kinds;  // the kinds with an island of their own; kinds sharing a trampoline share it
    for (int k = 0; k < 3; k++)
      if (need[k] && std::none_of(kinds.begin(), kinds.end(), [&](int o) { return r.tramp[o] == r.tramp[k]; })) kinds.push_back(k);
    const u64 one = arch::island_size(*isa), arm_entry_at = one * kinds.size();
    const auto place = [&](const Island& at) {
      u64 island[3] = {};
      for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < kinds.size(); i++)
          if (need[k] && r.tramp[kinds[i]] == r.tramp[k]) island[k] = at.vaddr + i * one;
      if (arm_need) island[0] = at.vaddr + arm_entry_at;
      bool all = true;
      reach.for_each_end([&](const Site& s, arch::CallForm form) { all &= reaches(s, form, target_of(s)) || reaches(s, form, island[island_index(s)]); });
      if (d.mcount_via && need[mk]) all &= redirect_reaches(island[mk]);
      return all;
    };
    if (auto spot = island_spot(elf, arm_entry_at + (arm_need ? arch::thumb2::arm_entry_island_size : 0), arch::island_align(*isa), place)) {
      r.island = *spot;
      for (size_t i = 0; i < kinds.size(); i++) {
        const u64 at = spot->vaddr + i * one, target = r.tramp[kinds[i]] | (machine == EM_ARM ? 1u : 0u);  // Thumb code
        const std::vector<u8> bytes = arch::encode_island(*isa, at, target);
        if (std::string why = arch::check_island(*isa, bytes, at, target); !why.empty())
          throw std::logic_error("internal: the branch island at " + hex(at) + " fails its check: " + why);
        r.island.bytes.insert(r.island.bytes.end(), bytes.begin(), bytes.end());
        for (int k = 0; k < 3; k++)
          if (need[k] && r.tramp[kinds[i]] == r.tramp[k]) config.island[k] = at;
      }
      if (arm_need) {
        const u64 at = spot->vaddr + arm_entry_at, target = r.tramp[mk] | 1;  // on to the mcount trampoline, Thumb code
        u8 bytes[arch::thumb2::arm_entry_island_size];
        arch::thumb2::encode_arm_entry_island(at, target, bytes);
        if (std::string why = arch::check_arm_entry_island(bytes, at, target); !why.empty())
          throw std::logic_error("internal: the ARM-state entry island at " + hex(at) + " fails its check: " + why);
        r.island.bytes.insert(r.island.bytes.end(), bytes, bytes + sizeof bytes);
        config.island[0] = at;
      }
      std::memcpy(r.data.data() + blob_at + h.config, &config, sizeof config);
      std::copy(config.island, config.island + 3, r.island_of);
    }
  }
  // ARM32, AArch64 and PPC64le -pg sites that reach neither: the nearest island over code their calls
  // entered on the way to mcount (Discovery::mcount_stubs: a PLT entry, ld's stubs), which ld placed
  // within their reach. Only prepared sites entered it, and none of them does once prepared (on ARM32
  // all in one state: an ARM-state island for ARM-state sites, a Thumb one for Thumb sites). An
  // unprepared call entering an island would find other code (PPC64le's would then restore r2 from a
  // slot its stub no longer wrote), so every caller must be known: with a symbol table (.symtab) every
  // function was scanned; without one (AArch64, PPC64le) only those the FDEs cover, and a stub that a
  // branch from elsewhere enters takes no island (stubs_entered_elsewhere); on ARM32, whose stripped
  // binaries' local functions are not scanned at all, none does.
  const auto& stubs = d.mcount_stubs;
  std::vector<u64> stub_islands, arm_stub_islands;  // (the latter: ARM32's for ARM-state sites)
  bool far = false;
  reach.for_each_end([&](const Site& s, arch::CallForm form) {
    far |= !reaches(s, form, target_of(s)) && !reaches(s, form, config.island[island_index(s)]);
  });
  // PPC64le's, relative to the TOC pointer the stub assumed: the `.TOC.` symbol, else the ELFv2 place
  // (.got + 0x8000), kept only where the stub then loads from _mcount's slot.
  u64 toc = d.toc;
  for (const elf::Section& sec : elf.sections())
    if (machine == EM_PPC64 && far && !toc && sec.name == ".got") toc = sec.addr + arch::ppc64le::toc_past_got;
  if (far && (machine == EM_ARM || machine == EM_AARCH64 || machine == EM_PPC64) && !stubs.empty() && (d.has_symtab || machine != EM_ARM)) {
    const std::vector<bool> elsewhere = d.has_symtab ? std::vector<bool>(stubs.size()) : stubs_entered_elsewhere(elf, d);
    // The island each stub can take, jumping to the mcount trampoline (empty: none fits or reaches).
    std::vector<std::vector<u8>> form(stubs.size());
    for (size_t i = 0; i < stubs.size(); i++) {
      const u64 at = stubs[i].start;
      std::vector<u8>& b = form[i];
      if (at % 4 || elsewhere[i]) continue;
      if (machine == EM_ARM && stubs[i].arm) {  // on to the ARM-state entry: absolute, or through the sled
        if (fixed && stubs[i].size >= arch::thumb2::arm_absolute_island_size) {
          b.resize(arch::thumb2::arm_absolute_island_size);
          arch::thumb2::encode_arm_absolute_island(r.tramp[0], b.data());
        } else if (const auto l = arm_landing(stubs[i])) {
          b.resize(arch::thumb2::arm_far_island_size);
          arch::thumb2::encode_arm_far_island(*l, b.data());
        }
      } else if (machine == EM_ARM && stubs[i].size >= arch::thumb2::ip_island_size)  // (ip is free on the way to mcount)
        b.resize(arch::thumb2::ip_island_size), arch::thumb2::encode_ip_island(at, r.tramp[mk] | 1, b.data());  // Thumb code
      else if (machine == EM_ARM && fixed && stubs[i].size >= arch::thumb2::absolute_island_size)
        b.resize(arch::thumb2::absolute_island_size), arch::thumb2::encode_absolute_island(r.tramp[mk] | 1, b.data());
      else if (machine == EM_AARCH64 && stubs[i].size >= arch::aarch64::island_size && at % arch::aarch64::island_align == 0)
        b.resize(arch::aarch64::island_size), arch::aarch64::encode_island(at, r.tramp[mk], b.data());
      else if (machine == EM_AARCH64 && stubs[i].size >= arch::aarch64::adrp_island_size) {
        b.resize(arch::aarch64::adrp_island_size);
        if (!arch::aarch64::encode_adrp_island(at, r.tramp[mk], b.data())) b.clear();
      } else if (machine == EM_PPC64 && stubs[i].size >= arch::ppc64le::toc_island_size && toc) {
        const auto f = arch::ppc64le::plt_call_stub(at, [&](u64 a, u32& w) {
          auto x = elf.bytes_at(a, 4);
          return x.size() == 4 && (w = static_cast<u32>(elf.codec().get(x, 0, 4)), true);
        });
        const u64 slot = f ? toc + static_cast<u64>(f->toc_offset) : 0;
        const bool loads_mcount = f && std::find(d.mcount_slots.begin(), d.mcount_slots.end(), slot) != d.mcount_slots.end();
        b.resize(arch::ppc64le::toc_island_size);
        if (!loads_mcount || !arch::ppc64le::encode_toc_island(toc, r.tramp[mk], b.data())) b.clear();
      }
    }
    std::vector<bool> used(stubs.size());
    for (const Site& s : d.sites) {
      if (!s.prepared() || s.kind != SiteKind::mcount) continue;
      const arch::CallForm form_of_site = call_form_of(elf, s);
      if (reaches(s, form_of_site, target_of(s)) || reaches(s, form_of_site, config.island[island_index(s)])) continue;
      // The nearest stub with an island for the site's state on either side, if the site reaches it.
      const auto it = std::lower_bound(stubs.begin(), stubs.end(), s.addr, [](const Discovery::Stretch& t, u64 a) { return t.start < a; });
      const auto other = [&](size_t k) { return form[k].empty() || stubs[k].arm != arm_state(s); };
      size_t up = static_cast<size_t>(it - stubs.begin()), down = up;
      while (up < stubs.size() && other(up)) up++;
      while (down > 0 && other(down - 1)) down--;
      if (up < stubs.size() && reaches(s, form_of_site, stubs[up].start)) used[up] = true;
      else if (down > 0 && reaches(s, form_of_site, stubs[down - 1].start)) used[down - 1] = true;
    }
    const auto isa = machine == EM_ARM ? arch::Isa::thumb2 : machine == EM_PPC64 ? arch::Isa::ppc64le : arch::Isa::aarch64;
    // (ARM32's ARM-state islands are checked against the sled and the ARM-state entry's first word)
    const auto sled = std::span<const u8>(r.data).subspan(r.arm_sled_at ? r.arm_sled_at - r.names.size() : 0, r.arm_sled_size);
    const auto entry_word = std::span<const u8>(r.data).subspan(blob_at + (h.trampoline[0] & ~u32{1}), 4);
    for (size_t i = 0; i < stubs.size(); i++) {
      if (!used[i]) continue;
      const u64 at = stubs[i].start, target = r.tramp[mk] | (machine == EM_ARM ? 1u : 0u);
      if (std::string why = stubs[i].arm ? arch::check_arm_far_island(form[i], at, sled, vaddr + r.arm_sled_at, r.tramp[0], entry_word)
                                         : arch::check_island(isa, form[i], at, target, machine == EM_PPC64 ? std::optional<u64>(toc) : std::nullopt);
          !why.empty())
        throw std::logic_error("internal: the branch island over the stub at " + hex(at) + " fails its check: " + why);
      const auto off = elf.vaddr_to_offset(at, form[i].size());
      if (!off) throw std::logic_error("internal: the stub at " + hex(at) + " has no file bytes");
      for (size_t k = 0; k < form[i].size(); k += sizeof elf::Patch::bytes) {  // (AArch64's 24 bytes take two)
        elf::Patch& p = r.stub_islands.emplace_back();
        p.offset = *off + k;
        p.len = static_cast<u8>(std::min(sizeof p.bytes, form[i].size() - k));
        std::memcpy(p.bytes, form[i].data() + k, p.len);
      }
      stub_islands.push_back(at);
      if (stubs[i].arm) arm_stub_islands.push_back(at);
    }
  }
  // AArch64, PPC64le, Thumb-2 and x86-64 patchable sites that reach neither: an island over the nops before a
  // function's entry (Discovery::pre_entry: -fpatchable-function-entry=N,M), which never run. In address
  // order, a site that reaches no island chosen so far takes the farthest stretch ahead within its reach,
  // else the nearest behind it, so that one island serves every site around it (max_entry_islands).
  std::vector<u64> entry_islands;
  const u64 ptramp = r.tramp[static_cast<int>(SiteKind::patchable) - 1];
  const u64 preach = entry_island_reach(machine);
  bool pfar = false;
  reach.for_each_end([&](const Site& s, arch::CallForm form) {
    pfar |= s.kind == SiteKind::patchable && !reaches(s, form, ptramp) && !reaches(s, form, config.island[island_index(s)]);
  });
  // AArch64's far slot, which the 8-byte islands jump to: `bti c; b` the patchable trampoline.
  const u64 far_slot = r.far_slot_at ? vaddr + r.far_slot_at : 0;
  bool far_slot_used = false;
  if (pfar && preach) {
    // The stretches that can hold an island, each with its address and bytes (empty: none fits).
    struct Spot {
      u64 at;
      std::vector<u8> bytes;
    };
    std::vector<Spot> spots;
    for (const Discovery::Stretch& t : d.pre_entry) {
      Spot p{};
      const u64 end = t.start + t.size;
      if (machine == EM_AARCH64 && (p.at = align_up(t.start, 4)) + arch::aarch64::adrp_island_size <= end) {
        p.bytes.resize(arch::aarch64::adrp_island_size);
        if (!arch::aarch64::encode_adrp_island(p.at, ptramp, p.bytes.data())) p.bytes.clear();
      } else if (machine == EM_AARCH64 && r.far_slot_at && (p.at = align_up(t.start, 4)) + arch::aarch64::page_island_size <= end) {
        p.bytes.resize(arch::aarch64::page_island_size);  // to the far slot, which jumps on
        if (!arch::aarch64::encode_page_island(p.at, far_slot, p.bytes.data())) p.bytes.clear();
      } else if (machine == EM_PPC64 && (p.at = align_up(t.start, arch::ppc64le::island_align)) + arch::ppc64le::island_size <= end) {
        p.bytes = arch::encode_island(arch::Isa::ppc64le, p.at, ptramp);
      } else if (machine == EM_ARM && fixed && (p.at = align_up(t.start, 4)) + arch::thumb2::absolute_island_size <= end) {
        // Forms that write no register but pc (ip may be a GNU C nested function's static chain):
        // where the binary is never moved the 8-byte absolute one, else the 16-byte one through the stack.
        p.bytes.resize(arch::thumb2::absolute_island_size);
        arch::thumb2::encode_absolute_island(ptramp | 1, p.bytes.data());
      } else if (machine == EM_ARM && !fixed && (p.at = align_up(t.start, 4)) + arch::thumb2::island_size <= end) {
        p.bytes = arch::encode_island(arch::Isa::thumb2, p.at, ptramp | 1);
      } else if (machine == EM_X86_64 && (p.at = t.start) + arch::x86_64::island_size <= end) {
        p.bytes = arch::encode_island(arch::Isa::x86_64, p.at, ptramp);
      }
      if (!p.bytes.empty()) spots.push_back(std::move(p));
    }
    const u64 room = max_entry_islands(machine, d.pre_entry);
    for (const Site& s : d.sites) {
      if (!s.prepared() || s.kind != SiteKind::patchable || entry_islands.size() == room) continue;
      const arch::CallForm form = call_form_of(elf, s);
      if (reaches(s, form, ptramp) || reaches(s, form, config.island[island_index(s)]) ||
          (!entry_islands.empty() && reaches(s, form, entry_islands.back())))
        continue;
      auto it = std::upper_bound(spots.begin(), spots.end(), s.addr + preach, [](u64 a, const Spot& p) { return a < p.at; });
      for (; it != spots.begin() && std::prev(it)->at + preach >= s.addr; --it)
        if (reaches(s, form, std::prev(it)->at)) break;
      if (it == spots.begin() || std::prev(it)->at + preach < s.addr) continue;  // none: refused below
      const Spot& p = *std::prev(it);
      if (!entry_islands.empty() && p.at <= entry_islands.back()) continue;  // (cannot happen: chosen in address order)
      const bool to_slot = machine == EM_AARCH64 && p.bytes.size() == arch::aarch64::page_island_size;
      if (std::string why = arch::check_island(*isa, p.bytes, p.at, to_slot ? far_slot : ptramp | (machine == EM_ARM ? 1u : 0u)); !why.empty())
        throw std::logic_error("internal: the branch island before the entry at " + hex(p.at) + " fails its check: " + why);
      far_slot_used |= to_slot;
      const auto off = elf.vaddr_to_offset(p.at, p.bytes.size());
      if (!off) throw std::logic_error("internal: the nops at " + hex(p.at) + " have no file bytes");
      for (size_t k = 0; k < p.bytes.size(); k += sizeof elf::Patch::bytes) {
        elf::Patch& q = r.entry_islands.emplace_back();
        q.offset = *off + k;
        q.len = static_cast<u8>(std::min(sizeof q.bytes, p.bytes.size() - k));
        std::memcpy(q.bytes, p.bytes.data() + k, q.len);
      }
      entry_islands.push_back(p.at);
    }
  }
  if (far_slot_used) {
    u8 slot[arch::aarch64::far_slot_size];
    if (!arch::aarch64::encode_far_slot(far_slot, ptramp, slot))
      throw std::logic_error("internal: the far slot at " + hex(far_slot) + " does not reach the trampoline");
    if (std::string why = arch::check_island(*isa, slot, far_slot, ptramp); !why.empty())
      throw std::logic_error("internal: the far slot at " + hex(far_slot) + " fails its check: " + why);
    std::memcpy(r.data.data() + r.far_slot_at - r.names.size(), slot, sizeof slot);
  }
  // Their addresses, sorted, between the frames and the blob (Config::stub_islands, entry_islands).
  const auto publish = [&](const std::vector<u64>& islands, u64 at, u32& offset, u32& count) {
    if (islands.empty()) return;
    offset = static_cast<u32>(at), count = static_cast<u32>(islands.size());
    for (size_t i = 0; i < islands.size(); i++) elf.codec().put(r.data, at - r.names.size() + 8 * i, 8, islands[i]);
    std::memcpy(r.data.data() + blob_at + h.config, &config, sizeof config);
  };
  r.stub_island_addrs = stub_islands, r.entry_island_addrs = entry_islands;
  publish(stub_islands, r.stub_islands_at, config.stub_islands, config.stub_island_count);
  publish(entry_islands, r.entry_islands_at, config.entry_islands, config.entry_island_count);
  // The island of a list the shim picks for the site (listed_island_form): the nearest at or above it
  // if the site reaches it, else the nearest below it if it reaches that; nullopt when neither.
  const auto listed_pick = [&](const std::vector<u64>& islands, const Site& s, arch::CallForm form) -> std::optional<u64> {
    const auto it = std::lower_bound(islands.begin(), islands.end(), s.addr);
    if (it != islands.end() && reaches(s, form, *it)) return *it;
    if (it != islands.begin() && reaches(s, form, *std::prev(it))) return *std::prev(it);
    return std::nullopt;
  };
  const auto listed_reached = [&](const std::vector<u64>& islands, const Site& s, arch::CallForm form) { return listed_pick(islands, s, form).has_value(); };
  // ARM32: that pick must be an island for the site's state (a site of one state may lie nearer an
  // island of the other, in a binary mixing them): refused where it is not, saying so.
  const auto state_picked = [&](const Site& s, arch::CallForm form) {
    if (arm_stub_islands.empty() || s.kind != SiteKind::mcount || reaches(s, form, target_of(s)) || reaches(s, form, config.island[island_index(s)])) return;
    const auto pick = listed_pick(stub_islands, s, form);
    if (pick && std::binary_search(arm_stub_islands.begin(), arm_stub_islands.end(), *pick) != arm_state(s))
      elf.fail(elf.vaddr_to_offset(s.addr, 1).value_or(0), "the site at vaddr " + hex(s.addr) + " cannot reach the shim, and the branch island nearest it, at vaddr " +
                                                             hex(*pick) + ", is for " + (arm_state(s) ? "Thumb" : "ARM-state") + " sites");
  };
  // What the islands of last resort (below) could not do for a site.
  const std::string last_resort = low_page ? (shared ? "; nor any page below the shared object's lowest segment" : "; nor any page below the executable's lowest segment")
                                  : "; nor is there a page for an island of last resort below its lowest segment, above 64 KiB (link it higher)";
  const auto fail_far = [&](const Site& s) {
    const u64 target = target_of(s);
      elf.fail(elf.vaddr_to_offset(s.addr, 1).value_or(0),
               "the site at vaddr " + hex(s.addr) + " cannot reach the shim at " + hex(target) + " with " +
                   (machine == EM_AARCH64 ? "a bl (+-128 MiB)"
                    : machine == EM_PPC64 ? "a bl (+-32 MiB)"
                    : machine == EM_RISCV ? "auipc+jalr (+-2 GiB)"
                    : machine == EM_ARM   ? (arm_state(s) ? "an ARM-state b (+-32 MiB)" : "a Thumb bl (+-16 MiB)")
                                          : "a rel32 call (+-2 GiB)") +
                   ": the binary's segments (.bss included) span more than that, and the shim goes after the last one" +
                   (isa ? "; nor is there room for a branch island within its reach (zero padding after an executable segment's "
                          "bytes, up to the next segment's" +
                              std::string(machine != EM_X86_64 && machine != EM_RISCV && s.kind == SiteKind::mcount ? "; a PLT entry or linker stub its call entered"
                                          : s.kind == SiteKind::patchable && entry_island_reach(machine)
                                              ? std::string("; the nops before a function's entry that its symbol names, -fpatchable-function-entry=N,M with M >= ") +
                                                    (machine == EM_AARCH64 ? "2, or 8 bytes of alignment padding between functions"
                                                     : machine == EM_PPC64  ? "13"
                                                     : machine == EM_X86_64 ? "22"
                                                                            : "5 (-no-pie), else 9") +
                                                    (d.has_symtab ? ""
                                                     : machine == EM_AARCH64
                                                         ? ": this binary has no .symtab, and the FDEs of its .eh_frame show no such padding"
                                                         : ": this binary has no .symtab")
                                              : "") +
                              ")" + last_resort
                        : ""));
  };
  // Whether the site calls its trampoline, its island, an island over a stub or before an entry, or
  // one of last resort.
  shim::LowIslands low{};
  const auto reached = [&](const Site& s, arch::CallForm form) {
    return reaches(s, form, target_of(s)) || reaches(s, form, config.island[island_index(s)]) ||
           (s.kind == SiteKind::mcount && listed_reached(stub_islands, s, form)) ||
           (s.kind == SiteKind::patchable && listed_reached(entry_islands, s, form)) ||
           reaches(s, form, low.island[island_index(s)]);
  };
  // The islands of last resort (shim::LowIslands): for each kind some of whose sites reach none of the
  // above, one on the page below the object's lowest segment, which the shim maps at start, or lower
  // down where that one is taken: as low as every such site still reaches (a RISC-V64 executable's
  // sites' auipc names the first for good; a shared object's shim aims them lower where it must).
  // (A pass over every site, only where a site may reach neither end of the shim's segment.) ARM32's
  // ARM-state sites take a copy of the shim's ARM-state entry, in fentry's place.
  if (r.low_islands_at) {
    bool need_low[3] = {};
    const bool may_move = machine != EM_RISCV || shared;
    std::vector<std::pair<const Site*, arch::CallForm>> low_callers;
    for (const Site& s : d.sites)
      if (const arch::CallForm form = call_form_of(elf, s); s.prepared() && !reached(s, form)) {
        need_low[island_index(s)] = true;
        if (may_move) low_callers.emplace_back(&s, form);
      }
    // (RISC-V -pg: what the sites call must reach the mcount trampoline, its island, or this one)
    if (d.mcount_via && !redirect_reaches(r.tramp[mk]) && !redirect_reaches(config.island[mk])) need_low[mk] = true;
    low.page = *low_page;
    // ARM32 runs its islands at 32-bit addresses, which a PIE's wrapped page is the low half of.
    const u64 mask = machine == EM_ARM ? 0xffff'ffff : ~u64{0}, thumb = machine == EM_ARM ? 1 : 0;
    const unsigned word = elf.codec().word();
    // Kind k's island at `at`, proven (ARM32's for ARM-state sites: the entry's copy, on to the mcount trampoline).
    const auto low_island = [&](int k, u64 at) {
      std::vector<u8> bytes;
      std::string why;
      if (machine == EM_ARM && k == 0) {
        bytes.resize(arch::thumb2::arm_entry_island_size);
        arch::thumb2::encode_arm_entry_island(at & mask, r.tramp[mk] | 1, bytes.data());
        why = arch::check_arm_entry_island(bytes, at & mask, r.tramp[mk] | 1);
      } else {
        bytes = arch::encode_island(*isa, at & mask, r.tramp[k] | thumb);
        if (bytes.empty() || bytes.size() > 64) throw std::logic_error("internal: no branch island of at most 64 bytes for " + hex(at));
        why = arch::check_island(*isa, bytes, at & mask, r.tramp[k] | thumb);
      }
      if (!why.empty()) throw std::logic_error("internal: the branch island at " + hex(at) + " below the lowest segment fails its check: " + why);
      return bytes;
    };
    for (int k = 0; k < 3; k++) {
      if (!need_low[k]) continue;
      const u64 at = low.page + shim::low_islands_page - shim::low_islands_code + 64 * k;
      const std::vector<u8> bytes = low_island(k, at);
      std::memcpy(low.code + 64 * k, bytes.data(), bytes.size());
      low.island[k] = r.low_island_of[k] = at;
      low.literal[k] = static_cast<u16>(64 * k + bytes.size() - word);  // (every ISA's island ends in its literal)
      r.low_island_addrs.push_back(at);
    }
    // How far down the islands may go: the most pages every site that needs one still reaches from (a
    // site lies above the page, so a lower page only lies farther from it), found by halving, not below
    // 64 KiB in an ET_EXEC (vm.mmap_min_addr); then the islands moved there, each literal grown by the
    // distance, proven again.
    low.lowest = low.page;
    if (may_move && !r.low_island_addrs.empty()) {
      const auto all_reach = [&](u64 pages) {
        const u64 by = pages * shim::low_islands_page;
        if (fixed && low.page - by < shim::low_islands_page) return false;
        for (const auto& [s, form] : low_callers)
          if (!reaches(*s, form, low.island[island_index(*s)] - by)) return false;
        return !(d.mcount_via && low.island[mk]) || redirect_reaches(low.island[mk] - by);
      };
      u64 lo = 0, hi = u64{1} << 16;  // (4 GiB: beyond every ISA's call)
      while (lo < hi) {
        const u64 mid = (lo + hi + 1) / 2;
        if (all_reach(mid)) lo = mid;
        else hi = mid - 1;
      }
      const u64 by = lo * shim::low_islands_page;
      low.lowest = low.page - by;
      for (int k = 0; k < 3; k++) {
        if (!low.island[k] || !by) continue;
        std::vector<u8> moved(low.code + 64 * k, low.code + low.literal[k] + word);
        const u64 at = low.island[k] - by, off = low.literal[k] - 64 * k;
        elf.codec().put(moved, off, word, (elf.codec().get(moved, off, word) + by) & mask);
        if (moved != low_island(k, at))  // (proven there)
          throw std::logic_error("internal: the branch island at " + hex(low.island[k]) + " is not the same moved to " + hex(at) + " but for its literal");
      }
    }
    if (!r.low_island_addrs.empty()) {
      const u64 at = r.low_islands_at - r.names.size();
      elf.codec().put(r.data, at, 8, low.page);
      for (int k = 0; k < 3; k++) elf.codec().put(r.data, at + __builtin_offsetof(shim::LowIslands, island) + 8 * k, 8, low.island[k]);
      std::memcpy(r.data.data() + at + __builtin_offsetof(shim::LowIslands, code), low.code, sizeof low.code);
      elf.codec().put(r.data, at + __builtin_offsetof(shim::LowIslands, lowest), 8, low.lowest);
      for (int k = 0; k < 3; k++) elf.codec().put(r.data, at + __builtin_offsetof(shim::LowIslands, literal) + 2 * k, 2, low.literal[k]);
      r.low_islands_lowest = low.lowest;
      config.low_islands = static_cast<u32>(r.low_islands_at);
      config.flags |= shim::config_low_islands;
      std::memcpy(r.data.data() + blob_at + h.config, &config, sizeof config);
    }
  }
  // A site that reaches nothing is enabled as the ISA's trap, which the shim resolves (arch/forms.h
  // trap_form; ARM32's ARM-state sites have none, and are refused). Every site is checked where a
  // group's end reaches nothing, where listed islands lie between its ends (not all within reach of
  // every site), or where islands of last resort lie below the text: its ends may reach them and the
  // shim above it, and a site between them neither (a text over twice the reach).
  // RISC-V -pg sites call what their calls went to, whose redirect must reach the mcount trampoline,
  // its island or the one of last resort; where it reaches none, no redirect is written and every -pg
  // site traps.
  const bool redirected = !d.mcount_via || redirect_reaches(r.tramp[mk]) || redirect_reaches(config.island[mk]) || low.island[mk];
  const auto trap_site = [&](const Site& s, arch::CallForm form) { return !reached(s, form) || (s.kind == SiteKind::mcount && !redirected); };
  bool unreached = false;
  reach.for_each_end([&](const Site& s, arch::CallForm form) {
    state_picked(s, form);
    if (!trap_site(s, form)) return;
    if (!arch::has_trap_form(machine, s.len)) fail_far(s);
    unreached = true;
  });
  if (unreached || !stub_islands.empty() || !entry_islands.empty() || !r.low_island_addrs.empty()) {
    u64 index = 0;  // the site's entry in the table at the start of r.data (prepared sites, in order)
    for (const Site& s : d.sites) {
      if (!s.prepared()) continue;
      const arch::CallForm form = call_form_of(elf, s);
      state_picked(s, form);
      if (trap_site(s, form)) {
        if (!arch::has_trap_form(machine, s.len)) fail_far(s);
        r.trap_sites.push_back(s.addr);
        r.data[shim::table_header_size + index * shim::table_entry_size + 15] |= shim::site_flag_trap;
      }
      index++;
    }
    if (!r.trap_sites.empty()) elf.codec().put(r.data, 20, 4, elf.codec().get(r.data, 20, 4) | shim::table_trap_sites);  // (the header's flags)
  }
  if (!redirected) {  // the trap handler then sends the -pg sites to the mcount trampoline itself
    config.mcount_via = 0;
    std::memcpy(r.data.data() + blob_at + h.config, &config, sizeof config);
  }
  if (d.mcount_via && redirected)
    r.redirect = riscv_redirect(elf, d.mcount_via,
                                redirect_reaches(r.tramp[mk])        ? r.tramp[mk]
                                : redirect_reaches(config.island[mk]) ? config.island[mk]
                                                                      : low.island[mk]);
  return r;
}

}  // namespace prepatch
