# Builds the shim blob from shim/ (included by the top-level CMakeLists.txt). The compiler runs by hand
# rather than through a CMake target so that no project-wide option (sanitizers, coverage) reaches code
# that runs before libc exists: the flags below are the whole story.
find_program(PREPATCH_READELF readelf REQUIRED)
# The flags are gcc's: a project configured with another compiler (the clang fuzz build) still builds
# the shim with g++.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(SHIM_CXX ${CMAKE_CXX_COMPILER})
else()
  find_program(SHIM_CXX g++ REQUIRED)
endif()
find_program(PREPATCH_OBJCOPY objcopy REQUIRED)
set(SHIM_DIR ${CMAKE_CURRENT_BINARY_DIR}/shim)
file(MAKE_DIRECTORY ${SHIM_DIR})
set(SHIM_FLAGS -std=c++20 -O2 -g0 -fPIE -ffreestanding -fno-exceptions -fno-rtti -fno-stack-protector
  -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-threadsafe-statics -fvisibility=hidden
  -mgeneral-regs-only -fno-tree-loop-distribute-patterns -fcf-protection=none -fno-jump-tables
  -Wall -Wextra -Werror -I${PROJECT_SOURCE_DIR})
add_custom_command(OUTPUT ${SHIM_DIR}/runtime.o
  COMMAND ${SHIM_CXX} ${SHIM_FLAGS} -MD -MF ${SHIM_DIR}/runtime.o.d -c ${PROJECT_SOURCE_DIR}/shim/runtime.cc -o ${SHIM_DIR}/runtime.o
  DEPENDS ${PROJECT_SOURCE_DIR}/shim/runtime.cc DEPFILE ${SHIM_DIR}/runtime.o.d VERBATIM)
add_custom_command(OUTPUT ${SHIM_DIR}/entry.o
  COMMAND ${SHIM_CXX} -c ${PROJECT_SOURCE_DIR}/shim/entry.S -o ${SHIM_DIR}/entry.o
  DEPENDS ${PROJECT_SOURCE_DIR}/shim/entry.S VERBATIM)
add_custom_command(OUTPUT ${SHIM_DIR}/shim.elf
  COMMAND ${SHIM_CXX} -nostdlib -static -no-pie -Wl,-T,${PROJECT_SOURCE_DIR}/shim/shim.ld -Wl,--build-id=none
    -Wl,-z,noexecstack ${SHIM_DIR}/entry.o ${SHIM_DIR}/runtime.o -o ${SHIM_DIR}/shim.elf
  DEPENDS ${SHIM_DIR}/entry.o ${SHIM_DIR}/runtime.o ${PROJECT_SOURCE_DIR}/shim/shim.ld VERBATIM)
add_custom_command(OUTPUT ${SHIM_DIR}/shim_blob.cc
  COMMAND ${CMAKE_COMMAND} "-DOBJS=${SHIM_DIR}/entry.o\;${SHIM_DIR}/runtime.o" -DSHIM_ELF=${SHIM_DIR}/shim.elf
    -DSHIM_BIN=${SHIM_DIR}/shim.bin -DOUT_CC=${SHIM_DIR}/shim_blob.cc -DREADELF=${PREPATCH_READELF}
    -DOBJCOPY=${PREPATCH_OBJCOPY} -P ${PROJECT_SOURCE_DIR}/shim/embed.cmake
  DEPENDS ${SHIM_DIR}/shim.elf ${PROJECT_SOURCE_DIR}/shim/embed.cmake VERBATIM)
