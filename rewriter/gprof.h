// gprof's run-time part, which a `-pg` link brings and a prepared binary must not run: glibc's gcrt1.o
// defines __gmon_start__, which _init calls before main; it starts the profiler (__monstartup: a
// SIGPROF interval timer, whose signals cut short system calls) and registers _mcleanup, which writes
// gmon.out into the working directory at exit. The preparer makes __gmon_start__ return at once, so
// neither happens (README, "gprof"). The sites themselves no longer call mcount once prepared.
#pragma once
#include <optional>

#include "elf/elf.h"
#include "elf/writer.h"

namespace prepatch {

inline constexpr char gmon_start_name[] = "__gmon_start__";

// The patch that makes the function at `value` (st_value of __gmon_start__, `other` its st_other)
// return at once, for the binary's ISA: a return instruction at its entry (x86-64: after an endbr64;
// AArch64: after a `bti c`, or `autiasp; ret` after a `paciasp`; PPC64le: at the local entry point;
// Thumb-2: `bx lr`). nullopt when its bytes are not in the file.
std::optional<elf::Patch> gprof_off_patch(const elf::Elf& elf, u64 value, u8 other);

}  // namespace prepatch
