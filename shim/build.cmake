# Builds the shim blobs from shim/ (included by the top-level CMakeLists.txt): one per ISA, with the
# host's g++ for x86-64 and Debian's cross g++ for AArch64, PPC64le, RISC-V64 and ARM32 (scripts/install-deps.sh installs
# them; an ISA whose cross compiler is missing gets no blob, and prepatch says so when asked to prepare
# such a binary). The compilers run by hand rather than through CMake targets so that no project-wide
# option (sanitizers, coverage) reaches code that runs before libc exists: the flags below are the
# whole story. ${SHIM_DIR}/shim_blob.cc defines shim_blob(machine) over the blobs built.
find_program(PREPATCH_READELF readelf REQUIRED)
# The flags are gcc's: a project configured with another compiler (the clang fuzz build) still builds
# the shim with g++.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(SHIM_CXX_x86_64 ${CMAKE_CXX_COMPILER})
else()
  find_program(SHIM_CXX_x86_64 g++ REQUIRED)
endif()
find_program(SHIM_OBJCOPY_x86_64 objcopy REQUIRED)
find_program(SHIM_CXX_aarch64 aarch64-linux-gnu-g++)
find_program(SHIM_OBJCOPY_aarch64 aarch64-linux-gnu-objcopy)
find_program(SHIM_CXX_ppc64le powerpc64le-linux-gnu-g++)
find_program(SHIM_OBJCOPY_ppc64le powerpc64le-linux-gnu-objcopy)
find_program(SHIM_CXX_riscv64 riscv64-linux-gnu-g++)
find_program(SHIM_OBJCOPY_riscv64 riscv64-linux-gnu-objcopy)
find_program(SHIM_CXX_arm arm-linux-gnueabihf-g++)
find_program(SHIM_OBJCOPY_arm arm-linux-gnueabihf-objcopy)
set(SHIM_DIR ${CMAKE_CURRENT_BINARY_DIR}/shim)
file(MAKE_DIRECTORY ${SHIM_DIR})
set(SHIM_FLAGS -std=c++20 -O2 -g0 -fPIE -ffreestanding -fno-exceptions -fno-rtti -fno-stack-protector
  -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-threadsafe-statics -fvisibility=hidden
  -fno-tree-loop-distribute-patterns -fno-jump-tables -Wall -Wextra -Werror -I${PROJECT_SOURCE_DIR})
# Per ISA: no floating-point or vector register in the C code (the trampolines save general registers
# only), no branch-protection landing pads, AArch64 atomics inline (not libgcc's). The function and
# graph tracers are x86-64's so far; their code is compiled everywhere but driven only there, hence
# -Wno-unused-function on the others. PPC64: -mlong-double-64, or libstdc++'s headers want __ieee128,
# which needs VSX. RISC-V: soft-float, PC-relative addressing, no linker relaxation (no gp-relative
# access), for the assembly too (the objects' float ABIs must agree). ARM32: Thumb-2, no frame pointer
# (r7 carries system call numbers), and the headers' constant arrays local to the one translation
# unit (elf/ints.h PREPATCH_CONSTANT: gcc reaches COMDAT data through a GOT).
set(SHIM_ISA_FLAGS_x86_64 -mgeneral-regs-only -fcf-protection=none)
set(SHIM_ISA_FLAGS_aarch64 -mgeneral-regs-only -mbranch-protection=none -mno-outline-atomics -Wno-unused-function)
set(SHIM_ISA_FLAGS_ppc64le -msoft-float -mno-altivec -mno-vsx -mlong-double-64 -mcmodel=medium -Wno-unused-function)
set(SHIM_ASM_FLAGS_riscv64 -march=rv64imac_zicsr_zifencei -mabi=lp64 -mno-relax)
set(SHIM_ISA_FLAGS_riscv64 ${SHIM_ASM_FLAGS_riscv64} -mcmodel=medany -Wno-unused-function)
set(SHIM_ISA_FLAGS_arm -mthumb -mgeneral-regs-only -fomit-frame-pointer -DPREPATCH_SHIM_LOCAL_CONSTANTS -Wno-unused-function)
# How each blob is linked (its one segment is only objcopy's input, hence no RWX warning): as a
# non-PIE at 0, every reference being PC-relative anyway; PPC64 as a static PIE, since ld turns a
# non-PIE's global entry TOC setup (addis r2, r12, ...) into absolute addresses, and lets its GOT keep
# its one header word.
set(SHIM_LINK_FLAGS_x86_64 -static -no-pie -Wl,--defsym=__shim_got_allowed=0)
set(SHIM_LINK_FLAGS_aarch64 -static -no-pie -Wl,--defsym=__shim_got_allowed=0)
set(SHIM_LINK_FLAGS_ppc64le -static-pie -Wl,--defsym=__shim_got_allowed=8)
set(SHIM_LINK_FLAGS_riscv64 ${SHIM_ASM_FLAGS_riscv64} -static -no-pie -Wl,--no-relax -Wl,--defsym=__shim_got_allowed=0)
set(SHIM_LINK_FLAGS_arm -static -no-pie -Wl,--defsym=__shim_got_allowed=0)
# ELF e_machine per ISA, and the relocations a position-independent blob cannot have (no loader
# relocates it): absolute addresses, GOT entries, dynamic relocations.
set(SHIM_MACHINE_x86_64 62)
set(SHIM_MACHINE_aarch64 183)
set(SHIM_MACHINE_ppc64le 21)
set(SHIM_MACHINE_riscv64 243)
set(SHIM_MACHINE_arm 40)
set(SHIM_BAD_RELOCS_x86_64 "R_X86_64_(64|32S?|GOT[A-Z0-9_]*|COPY|GLOB_DAT|JUMP_SLOT|RELATIVE)[ \t]")
set(SHIM_BAD_RELOCS_aarch64 "R_AARCH64_(ABS[0-9]+|[A-Z0-9_]*GOT[A-Z0-9_]*|COPY|GLOB_DAT|JUMP_SLOT|RELATIVE)[ \t]")
set(SHIM_BAD_RELOCS_ppc64le "R_PPC64_(ADDR[0-9A-Z_]*|GOT[A-Z0-9_]*|TOC|COPY|GLOB_DAT|JMP_SLOT|RELATIVE)[ \t]")
set(SHIM_BAD_RELOCS_riscv64 "R_RISCV_(32|64|HI20|LO12_[IS]|GOT_HI20|COPY|JUMP_SLOT|RELATIVE)[ \t]")
set(SHIM_BAD_RELOCS_arm "R_ARM_(ABS[0-9]+|TARGET1|(THM_)?MOV[WT]_ABS[A-Z_]*|[A-Z0-9_]*GOT[A-Z0-9_]*|BASE_PREL|COPY|GLOB_DAT|JUMP_SLOT|RELATIVE)[ \t]")

set(SHIM_BLOBS)
set(SHIM_DISPATCH "")
set(SHIM_DECLS "")
foreach(isa x86_64 aarch64 ppc64le riscv64 arm)
  if(NOT SHIM_CXX_${isa} OR NOT SHIM_OBJCOPY_${isa})
    message(STATUS "prepatch: no ${isa} cross compiler (g++ and objcopy); prepared ${isa} binaries are refused")
    continue()
  endif()
  set(cxx ${SHIM_CXX_${isa}})
  set(dir ${SHIM_DIR}/${isa})
  file(MAKE_DIRECTORY ${dir})
  if(isa STREQUAL "riscv64")
    # libstdc++'s config headers include glibc's <gnu/stubs.h>, which wants the soft-float ABI's
    # stubs-lp64.h that Debian's hard-float libc6-dev-riscv64-cross lacks. It only lists functions glibc
    # lacks, which the shim never calls: an empty one stands in.
    file(WRITE ${dir}/include/gnu/stubs-lp64.h "/* shim/build.cmake: glibc's unimplemented functions; the shim uses no libc */\n")
    list(APPEND SHIM_ISA_FLAGS_${isa} -isystem ${dir}/include)
  endif()
  add_custom_command(OUTPUT ${dir}/runtime.o
    COMMAND ${cxx} ${SHIM_FLAGS} ${SHIM_ISA_FLAGS_${isa}} -MD -MF ${dir}/runtime.o.d -c ${PROJECT_SOURCE_DIR}/shim/runtime.cc -o ${dir}/runtime.o
    DEPENDS ${PROJECT_SOURCE_DIR}/shim/runtime.cc DEPFILE ${dir}/runtime.o.d VERBATIM)
  add_custom_command(OUTPUT ${dir}/entry.o
    COMMAND ${cxx} ${SHIM_ASM_FLAGS_${isa}} -I${PROJECT_SOURCE_DIR} -c ${PROJECT_SOURCE_DIR}/shim/entry_${isa}.S -o ${dir}/entry.o
    DEPENDS ${PROJECT_SOURCE_DIR}/shim/entry_${isa}.S ${PROJECT_SOURCE_DIR}/shim/header.inc ${PROJECT_SOURCE_DIR}/shim/fast_x86_64.h VERBATIM)
  add_custom_command(OUTPUT ${dir}/shim.elf
    COMMAND ${cxx} -nostdlib ${SHIM_LINK_FLAGS_${isa}} -Wl,-T,${PROJECT_SOURCE_DIR}/shim/shim.ld -Wl,--build-id=none -Wl,--no-warn-rwx-segments
      -Wl,-z,noexecstack ${dir}/entry.o ${dir}/runtime.o -o ${dir}/shim.elf
    DEPENDS ${dir}/entry.o ${dir}/runtime.o ${PROJECT_SOURCE_DIR}/shim/shim.ld VERBATIM)
  add_custom_command(OUTPUT ${dir}/shim_blob.cc
    COMMAND ${CMAKE_COMMAND} "-DOBJS=${dir}/entry.o\;${dir}/runtime.o" -DSHIM_ELF=${dir}/shim.elf
      -DSHIM_BIN=${dir}/shim.bin -DOUT_CC=${dir}/shim_blob.cc -DREADELF=${PREPATCH_READELF}
      -DOBJCOPY=${SHIM_OBJCOPY_${isa}} -DISA=${isa} "-DBAD_RELOCS=${SHIM_BAD_RELOCS_${isa}}"
      -P ${PROJECT_SOURCE_DIR}/shim/embed.cmake
    DEPENDS ${dir}/shim.elf ${PROJECT_SOURCE_DIR}/shim/embed.cmake VERBATIM)
  list(APPEND SHIM_BLOBS ${dir}/shim_blob.cc)
  string(APPEND SHIM_DECLS "std::span<const u8> shim_blob_${isa}();\n")
  string(APPEND SHIM_DISPATCH "  if (machine == ${SHIM_MACHINE_${isa}}) return shim_blob_${isa}();\n")
endforeach()
file(CONFIGURE OUTPUT ${SHIM_DIR}/shim_blob.cc CONTENT "// Generated by shim/build.cmake: the shim blobs this build has.
#include \"rewriter/shim_blob.h\"

namespace prepatch {

${SHIM_DECLS}
std::span<const u8> shim_blob(u16 machine) {
${SHIM_DISPATCH}  return {};
}

}  // namespace prepatch
")
