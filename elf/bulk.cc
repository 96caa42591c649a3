#include "elf/bulk.h"

#include <sys/mman.h>

#include <utility>

namespace prepatch {

namespace {

constexpr size_t huge = size_t{2} << 20;
constexpr size_t bulk_min = size_t{1} << 20;

size_t huge_round(size_t bytes) { return (bytes + huge - 1) / huge * huge; }

// The block freed last, kept for the next allocation of its size: the preparer's large arrays follow
// one another (the sort's scratch, then the sites; the function list, then the table), and a kept
// block's pages are already in place, where a fresh one's must be cleared by the kernel again.
struct Kept {
  void* p = nullptr;
  size_t size = 0;
  ~Kept() {
    if (p) ::munmap(p, size);
  }
};
thread_local Kept kept;

}  // namespace

void* bulk_allocate(size_t bytes) {
  if (bytes < bulk_min) return ::operator new(bytes);
  if (bytes > std::numeric_limits<size_t>::max() - 2 * huge) throw std::bad_alloc();
  const size_t size = huge_round(bytes);
  if (kept.p && kept.size == size) return std::exchange(kept.p, nullptr);
  // Linux 6.7 and later place anonymous mappings of whole huge pages on a huge page boundary; where
  // this one is not, map a huge page more than needed and give back what lies outside the aligned
  // stretch.
  void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  if (reinterpret_cast<uintptr_t>(m) % huge == 0) {
    ::madvise(m, size, MADV_HUGEPAGE);
    return m;
  }
  ::munmap(m, size);
  m = ::mmap(nullptr, size + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) throw std::bad_alloc();
  const auto base = reinterpret_cast<uintptr_t>(m), start = (base + huge - 1) / huge * huge;
  if (start > base) ::munmap(m, start - base);
  if (const uintptr_t end = base + size + huge; end > start + size) ::munmap(reinterpret_cast<void*>(start + size), end - start - size);
  ::madvise(reinterpret_cast<void*>(start), size, MADV_HUGEPAGE);  // advice: without it, 4 KiB pages
  return reinterpret_cast<void*>(start);
}

void bulk_deallocate(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes < bulk_min) return ::operator delete(p);
  if (kept.p) ::munmap(kept.p, kept.size);
  kept.p = p;  // (not `kept = Kept{...}`: the temporary's destructor would unmap p)
  kept.size = huge_round(bytes);
}

}  // namespace prepatch
