// Site discovery: every function-entry tracing site a compiler left in an x86-64, AArch64, PPC64le,
// RISC-V64 or ARM32 Thumb-2 ELF binary.
//
// Sources, in order of trust:
//   1. __mcount_loc (gcc -mrecord-mcount): the address of every mcount/__fentry__ call or nop;
//   2. __patchable_function_entries (-fpatchable-function-entry=N[,M]): the address of every nop pad;
//   3. function symbols, for functions no record covers: the first instructions are decoded until the
//      call to mcount/__fentry__ (resolved through PLT entries and GOT slots via relocations; on
//      PPC64le through ld's named call stubs; on Thumb-2 and AArch64 through ld's long-branch stubs too).
// On AArch64, PPC64le, RISC-V and Thumb-2 a site is the one 32-bit instruction that toggles
// (docs/FORMAT.md); a patchable site's word before it is its permanent context.
// Every candidate's bytes are compared with named patterns before it becomes a site; a candidate that
// does not match is kept as a skipped site with the reason, so it can be reported, and is never written.
// What every ISA shares is rewriter/sites.cc; each ISA's site forms are its own file,
// rewriter/sites_<isa>.cc, behind one interface (rewriter/discoverer.h).
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "arch/forms.h"
#include "arch/x86_64.h"
#include "elf/bulk.h"
#include "elf/elf.h"
#include "rewriter/table.h"

namespace prepatch {

enum class Source : u8 { mcount_loc, patchable_entries, symbols };
std::string_view source_name(Source s);

enum class Skip : u8 {
  none = 0,
  not_in_text,      // the address is not in an executable, file-backed segment
  unrecognized,     // the bytes are neither a tracer call nor a nop of a site's length
  not_tracer_call,  // a call, but not to mcount/__fentry__
  pad_too_short,    // a patchable pad shorter than a 5-byte call
  overlaps,         // overlaps the site before it
  no_context,       // AArch64/PPC64le/RISC-V/Thumb-2 -pg: the call lacks what hands _mcount its argument
  before_local_entry,  // PPC64le: a patchable pad that calls to the local entry point skip
  unsupported_form,    // ARM32: a patchable pad in an ARM-state function (their -pg sites are prepared)
};
std::string_view skip_reason(Skip s);

// 16 bytes: the preparer holds one per site, and its memory target is 64 bytes per site in all.
struct Site {
  u64 addr = 0;
  u32 name = 0;           // the function's name: its symbol's st_name, an offset into Discovery::strings; 0 for none
  u8 len = 0;             // bytes of the one instruction the site becomes
  u8 pad_rest = 0;        // patchable pads: nop bytes after the site, made one permanent nop
  SiteKind kind = SiteKind::fentry;

  Site() = default;
  Site(u64 a, SiteKind k, Source src) : addr(a), kind(k), bits_(static_cast<u8>(src)) {}
  Source source() const { return static_cast<Source>(bits_ & 3); }
  Skip skip() const { return static_cast<Skip>((bits_ >> 2) & 15); }
  void set_skip(Skip s) { bits_ = static_cast<u8>((bits_ & (3 | local_flag | chain_flag)) | (static_cast<u8>(s) << 2)); }
  bool prepared() const { return skip() == Skip::none; }
  // Found through a local symbol: where a global one names the same address, its site is kept.
  bool local() const { return bits_ & local_flag; }
  void set_local(bool l) { bits_ = static_cast<u8>((bits_ & ~local_flag) | (l ? local_flag : 0)); }
  // x86-64 -mfentry in a GNU C nested function: gcc saved the static chain around the call, `push %r10`
  // before it and `pop %r10` after. Both become 2-byte nops (the trampolines keep %r10 themselves), so
  // that the call finds the function's return address where every fentry site has it.
  bool saves_chain() const { return bits_ & chain_flag; }
  void set_saves_chain() { bits_ |= chain_flag; }

 private:
  static constexpr u8 local_flag = 0x80, chain_flag = 0x40;
  u8 bits_ = 0;  // Source in bits 0-1, Skip in bits 2-5, chain_flag, local_flag
};
static_assert(sizeof(Site) == 16);

struct Discovery {
  Bulk<Site> sites;           // sorted by address
  // The names: the function symbols' string table (.strtab, else .dynstr) as it is in the input, up
  // to its last NUL, or a lone NUL when there is none. It becomes the __patch_sites string table
  // verbatim (the writer has the kernel copy it), so Site::name is the table's name offset, and
  // names nothing refers to (objects', files', skipped sites') come along unreferenced.
  std::span<const char> strings;
  u32 strings_section = 0;    // the section `strings` comes from, 0 when a lone NUL
  size_t prepared = 0;        // sites with Skip::none
  bool has_symbols = false;   // any defined function symbol
  bool has_records = false;   // __mcount_loc or __patchable_function_entries present
  u64 unwinder[4] = {};       // the binary's own definitions of shim::unwinder_names (PPC64le: local entries), 0 when none
  bool has_symtab = false;    // a .symtab (not only .dynsym)
  // Without a .symtab, -pg functions found by the unwind table's entries (Discoverer::add_unwind_functions)
  // rather than by a symbol: they have no name.
  size_t unwind_functions = 0;
  bool defines_fork = false;  // a symbol table defines fork or _Fork (glibc's; shim::config_forkless)
  // RISC-V -pg: what the sites call (the _mcount PLT entry, or _mcount itself), which the preparer
  // makes a jump to the shim; 0 when there is none.
  u64 mcount_via = 0;
  // RISC-V and Thumb-2 -pg: each site's frame as its function's prologue left it (shim/abi.h
  // mcount_frame_entry_sp and mcount_frame_ra: from the site's sp to the entry's and to where ra was
  // saved, in doublewords; thumb_frame_entry_sp and thumb_frame_lr, in words), by site address; 0 where
  // the prologue was not followed. The graph tracer hooks the exits through them.
  std::vector<std::pair<u64, u32>> mcount_frames;
  // ARM32, AArch64 and PPC64le -pg: code the sites' calls enter on their way to mcount (its PLT entries, ld's
  // stubs) that only prepared sites enter, sorted and apart: where a site cannot reach the shim, the
  // preparer may write a branch island over one within its reach (Config::stub_islands).
  struct Stretch {
    u64 start;
    u32 size;
    bool arm = false;  // mcount_stubs: every site entering it is an ARM32 ARM-state one, at its start
  };
  std::vector<Stretch> mcount_stubs;
  // AArch64, PPC64le, Thumb-2 and x86-64 -fpatchable-function-entry=N,M: the M nops before the entry of a
  // function whose site is prepared (from its record to its symbol; at least 8 bytes), and on AArch64
  // the alignment padding between functions (Discoverer::note_padding), sorted, one stretch where
  // they meet. They never run: where a patchable site cannot reach the shim, the preparer may write a
  // branch island over the ones within its reach (Config::entry_islands).
  std::vector<Stretch> pre_entry;
  // PPC64le: the `.TOC.` symbol's value (0: none), and the slots the PLT call stubs to _mcount load
  // from (the islands over those stubs rely on r2 holding the TOC pointer the stubs assumed: the
  // preparer checks that each stub, at this TOC, loads from one of them).
  u64 toc = 0;
  std::vector<u64> mcount_slots;
  // AArch64 -pg: a function with a site signs its return address before it (pac-ret: paciasp or
  // pacibsp first), so the graph tracer cannot replace it (shim::table_signed_returns).
  bool signed_returns = false;
  // glibc's gprof start-up (rewriter/gprof.h), when the binary defines it: its st_value and st_other;
  // 0 when there is none.
  u64 gmon_start = 0;
  u8 gmon_start_other = 0;

  std::string_view func_name(const Site& s) const;  // empty when the site is in no known function
};

// The call form a prepared site's table entry names (docs/FORMAT.md): by ISA and length, on RISC-V by
// the instruction the compiler left (jal or jalr) and the kind.
arch::CallForm call_form_of(const elf::Elf& elf, const Site& s);

// Throws InputError for an unsupported ISA ("EM_S390 not supported yet") or malformed tables.
// `symbols`: a stripped binary's separate debug file (rewriter/debug_file.h), whose .symtab is read in
// place of the one the binary lacks.
Discovery discover(const elf::Elf& elf, const elf::Elf* symbols = nullptr);

// Discovery::strings and strings_section: what the site table's names will be, known before discovery
// (the preparer's writer starts copying the input early and wants to know where its copy may end).
struct FunctionNames {
  std::span<const char> strings;
  u32 section = 0;
};
// (With `symbols`, the debug file's: then `section` is 0, naming no section of the binary.)
FunctionNames function_names(const elf::Elf& elf, const elf::Elf* symbols = nullptr);

}  // namespace prepatch
