// Which sites a list of globs selects (`replay --function`, `report -F/-N`), decided once per site,
// lazily, as the shim decides PREPATCH_TRACE (rewriter/names.h).
#pragma once
#include <atomic>
#include <memory>
#include <string>

#include "rewriter/names.h"
#include "trace/reader.h"

namespace prepatch::trace {

// Empty globs select every site.
class Wanted {
 public:
  Wanted(TraceFile& t, const std::string& globs)
      : t_(t), globs_(globs), known_(std::make_unique<std::atomic<u8>[]>(t.sites())) {}
  // Threads may ask at once: an answer found twice is the same answer.
  bool operator()(u32 site) {
    if (globs_.empty()) return true;
    u8 k = known_[site].load(std::memory_order_relaxed);
    if (!k) known_[site].store(k = name_matches(globs_, t_.glob_name(site), t_.object_base(site)) ? 2 : 1, std::memory_order_relaxed);
    return k == 2;
  }

 private:
  TraceFile& t_;
  std::string globs_;
  std::unique_ptr<std::atomic<u8>[]> known_;  // 0 not yet known, 1 no, 2 yes
};

}  // namespace prepatch::trace
