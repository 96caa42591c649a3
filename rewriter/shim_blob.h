// The shim, compiled from shim/ at build time into a position-independent blob (shim/embed.cmake).
#pragma once
#include <span>

#include "elf/ints.h"

namespace prepatch {

std::span<const u8> shim_blob_x86_64();

}  // namespace prepatch
