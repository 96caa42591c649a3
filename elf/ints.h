// Fixed-width integer aliases, freestanding (<cstdint> only): the shim includes them through
// arch/plan.h, where no hosted library exists.
#pragma once
#include <cstdint>

namespace prepatch {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
using i8 = std::int8_t;
using i32 = std::int32_t;
using i64 = std::int64_t;

}  // namespace prepatch

// A header's constant array: one copy program-wide (inline), except in the ARM32 shim, a single
// translation unit whose gcc reaches COMDAT data only through a GOT, which the position-independent
// blob cannot have (shim/build.cmake defines PREPATCH_SHIM_LOCAL_CONSTANTS there).
#if defined(PREPATCH_SHIM_LOCAL_CONSTANTS)
#define PREPATCH_CONSTANT constexpr
#else
#define PREPATCH_CONSTANT inline constexpr
#endif
