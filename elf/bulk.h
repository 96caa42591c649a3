// Memory for the preparer's few large arrays (the sites, the table it builds), in huge pages.
//
// A fresh 4 KiB page costs a page fault on first touch, ~2 us on a VM: with 100k sites, the ~800
// pages of those two arrays took ~1.5 ms, a tenth of preparing. Blocks of 1 MiB and more are therefore
// mapped 2 MiB-aligned with transparent huge pages requested (MADV_HUGEPAGE: the kernel's default
// `madvise` mode honours it), so the kernel fills one 2 MiB page per fault. Where huge pages are off or
// unavailable, the block is ordinary anonymous memory. The block freed last is kept for the next
// allocation of its size (per thread). Smaller blocks come from operator new.
#pragma once
#include <cstddef>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "elf/types.h"

namespace prepatch {

void* bulk_allocate(size_t bytes);                // throws std::bad_alloc
void bulk_deallocate(void* p, size_t bytes) noexcept;

// An allocator over bulk_allocate that default-initializes: resize() leaves bytes that are about to
// be overwritten unzeroed (zeroing 1.6 MB of table entries cost ~0.1 ms).
template <class T>
struct BulkAllocator {
  using value_type = T;
  BulkAllocator() = default;
  template <class U>
  BulkAllocator(const BulkAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(bulk_allocate(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { bulk_deallocate(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  template <class U>
  bool operator==(const BulkAllocator<U>&) const noexcept { return true; }
};

template <class T>
using Bulk = std::vector<T, BulkAllocator<T>>;
using Bytes = Bulk<u8>;

}  // namespace prepatch
