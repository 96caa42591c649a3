// The shim's assembly on AArch64 (AAPCS64): the blob header, the start routine e_entry points at, the
// count tracer's trampolines and the start routine of threads. Offsets in the header are from
// __shim_base (the header itself); see shim/abi.h, BlobHeader. Sites are `bl` words (arch/aarch64.h):
//   mcount:    gcc -pg, `mov x0, x30; bl <site>` after the prologue: an ordinary call, x30 = the site's
//              end, x0 = the function's return address.
//   patchable: -fpatchable-function-entry, `mov x9, x30; bl <site>` at the entry: x30 = the site's
//              end, x9 = the function's return address; every argument register is live.
// The C side is built with -mgeneral-regs-only, so no SIMD or floating-point register needs saving.

#include "shim/header.inc"
        SHIM_HEADER prepatch_tramp_mcount, prepatch_tramp_mcount, prepatch_tramp_patchable

// The start routine and the count trampolines save the argument registers x0-x8 (x8: the indirect
// result) and x9 above a frame record (x29, x30), which keeps backtraces whole.
        .macro SAVE_ARGS
        stp x0, x1, [sp, #16]
        stp x2, x3, [sp, #32]
        stp x4, x5, [sp, #48]
        stp x6, x7, [sp, #64]
        stp x8, x9, [sp, #80]
        .endm
        .macro RESTORE_ARGS
        ldp x0, x1, [sp, #16]
        ldp x2, x3, [sp, #32]
        ldp x4, x5, [sp, #48]
        ldp x6, x7, [sp, #64]
        ldp x8, x9, [sp, #80]
        .endm

// e_entry. The kernel (or ld.so) left: sp -> argc, argv..., envp..., auxv; x0 = a function for atexit
// (ld.so's _dl_fini) or 0. The argument registers, x29 and x30 are saved, the shim's data page is made
// writable, the shim sets up, and they are restored before the jump to the program's own entry (x16,
// the intra-procedure-call register, carries the target).
        .globl prepatch_start
        .type prepatch_start, %function
prepatch_start:
        mov x9, sp                                      // the kernel's stack pointer (saved at 88)
        stp x29, x30, [sp, #-96]!
        SAVE_ARGS
        adr x0, __shim_data                             // mprotect(data, size, PROT_READ|PROT_WRITE)
        adr x1, __shim_mem_end
        sub x1, x1, x0
        mov x2, #3
        mov x8, #226
        svc #0
        cbnz x0, 1f                                     // no writable data: start the program untraced
        ldr x0, [sp, #88]
        bl prepatch_init
1:      adr x16, __shim_header                          // the entry: config.entry + load bias
        adr x17, prepatch_config
        ldr x9, [x17]                                   //   - config.blob_vaddr
        sub x16, x16, x9
        ldr x9, [x17, #24]                              //   + config.entry
        add x16, x16, x9
        RESTORE_ARGS
        ldp x29, x30, [sp], #96
        br x16
        .size prepatch_start, . - prepatch_start

// -pg: an ordinary call, returned from with `ret`.
        .globl prepatch_tramp_mcount
        .type prepatch_tramp_mcount, %function
prepatch_tramp_mcount:
        stp x29, x30, [sp, #-96]!
        mov x29, sp
        SAVE_ARGS
        mov x0, x30
        bl prepatch_count
        RESTORE_ARGS
        ldp x29, x30, [sp], #96
        ret
        .size prepatch_tramp_mcount, . - prepatch_tramp_mcount

// -fpatchable-function-entry: back to the site's end with x30 = the function's return address (x9),
// as if the call had not happened; x16 carries the site's end.
        .globl prepatch_tramp_patchable
        .type prepatch_tramp_patchable, %function
prepatch_tramp_patchable:
        stp x29, x30, [sp, #-96]!
        mov x29, sp
        SAVE_ARGS
        mov x0, x30
        bl prepatch_count
        RESTORE_ARGS
        ldp x29, x16, [sp], #96
        mov x30, x9
        br x16
        .size prepatch_tramp_patchable, . - prepatch_tramp_patchable

// The start routine of a thread created through prepatch_hook_pthread_create, with x0 its region (an
// alternate signal stack, the real start routine and argument at its top): sets the stack up, then
// jumps to the real start routine with its argument, returning to glibc's start_thread directly.
        .globl prepatch_thread_start
        .type prepatch_thread_start, %function
prepatch_thread_start:
        stp x0, x30, [sp, #-16]!
        bl prepatch_thread_setup                        // x0: {start, arg}
        ldp x9, x30, [sp], #16
        ldr x16, [x0]
        ldr x0, [x0, #8]
        br x16
        .size prepatch_thread_start, . - prepatch_thread_start

        .section .note.GNU-stack, "", %progbits
