// The shim, compiled from shim/ at build time into a position-independent blob (shim/embed.cmake).
#pragma once
#include <span>

#include "elf/ints.h"

namespace prepatch {

// The shim for ELF machine `machine` (EM_X86_64, EM_AARCH64, EM_PPC64); empty when this build has
// none (a cross compiler was missing when it was built).
std::span<const u8> shim_blob(u16 machine);

}  // namespace prepatch
