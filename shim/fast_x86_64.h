// The x86-64 graph tracer's fast path (shim/entry_x86_64.S): the layout of what its assembly reads and
// writes. Plain #defines, as the assembler includes this too; shim/runtime/tracers.inc checks each
// against the C++ structures with static_assert, so a change there that forgets this file fails to build.
#ifndef PREPATCH_SHIM_FAST_X86_64_H
#define PREPATCH_SHIM_FAST_X86_64_H

// prepatch_fast (shim/runtime.cc): whether the fast path may run (1: the plain graph tracer, 2: a
// duration threshold alone), the thread table, the writer, the threshold in ticks (0 unless on = 2).
#define FAST_ON 0
#define FAST_THREADS 8
#define FAST_WRITER 16
#define FAST_THRESHOLD 24

// Thread (shim/runtime/tracers.inc), its ShadowStack, and the table of max_threads of them.
#define THREAD_KEY 0
#define THREAD_TID 8
#define THREAD_GENERATION 16
#define THREAD_POS 24
#define THREAD_END 32
#define THREAD_BASE 40
#define THREAD_CHUNK 48
#define THREAD_FRAMES 64
#define THREAD_DEPTH 72
#define THREAD_CAP 76
#define THREAD_PENDING 88
#define THREAD_HIDDEN 92
#define THREAD_SIZE 136
#define THREAD_MASK 4095
#define THREAD_HASH_SHIFT 40

// ShadowFrame (shim/core.h): 32 bytes.
#define FRAME_SLOT 0
#define FRAME_RET 8
#define FRAME_SITE 16
#define FRAME_MARK 20
#define FRAME_TIME 24
#define FRAME_SHIFT 5
#define FRAME_PENDING 1

// Writer (tracers.inc), ChunkHeader (shim/abi.h), glibc's thread block.
#define WRITER_GENERATION 0
#define CHUNK_USED 16
#define CHUNK_HEADER_SIZE 64
#define GLIBC_TID 0x2d0

// A graph record (shim/abi.h): type in bits 0-1, the site from bit 2, the time offset from bit 26,
// which must be below 2^38.
#define REC_REST_SHIFT 26
#define REC_TIME_BITS 38

#endif
