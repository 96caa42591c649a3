// AArch64 and PPC64le site discovery share a shape (rewriter/discoverer.h): every instruction an
// aligned 32-bit word, one word toggled per site. The -pg site is the prologue's first `bl` when it
// calls _mcount, after what hands _mcount its argument; a patchable pad's first nop becomes that
// context and its second the site. Each ISA's file (sites_aarch64.cc, sites_ppc64le.cc) names its own
// words through the hooks below.
#pragma once
#include "rewriter/discoverer.h"

namespace prepatch::discovery {

class WordSites : public IsaSites {
 public:
  void patchable(Discoverer& d, u64 addr) const final;
  void scan(Discoverer& d, const Func& f, std::span<const u8> rest) const final;

 protected:
  // What hands _mcount its argument in -pg code, somewhere before the call: `mov x0, x30`, `mflr r0`.
  virtual u32 pg_context() const = 0;
  virtual bool is_bl(u32 w) const = 0;
  // Where a pad starting at the function's entry begins (AArch64: after a `bti` landing pad).
  virtual u64 pad_start(Discoverer&, u64 entry) const { return entry; }
  // Why a pad of `nops` nops at `entry` cannot be prepared, or Skip::none.
  virtual Skip pad_skip(Discoverer&, u64 /*entry*/, u64 /*nops*/) const { return Skip::none; }
  // Bytes after a -pg call at `at` that must become a nop with it (PPC64le: the TOC reload).
  virtual u8 after_call(Discoverer&, u64 /*at*/) const { return 0; }
};

}  // namespace prepatch::discovery
