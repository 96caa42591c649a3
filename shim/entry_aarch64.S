// The shim's assembly on AArch64 (AAPCS64): the blob header, the start routine e_entry points at, the
// trampolines (every tracer's), the graph tracer's exit trampoline and exception hooks, and the start
// routine of threads. Offsets in the header are from
// __shim_base (the header itself); see shim/abi.h, BlobHeader. Sites are `bl` words (arch/aarch64.h):
//   mcount:    gcc -pg, `mov x0, x30; bl <site>` after the prologue: an ordinary call, x30 = the site's
//              end, x0 = the function's return address.
//   patchable: -fpatchable-function-entry, `mov x9, x30; bl <site>` at the entry: x30 = the site's
//              end, x9 = the function's return address; every argument register is live.
// The C side is built with -mgeneral-regs-only, so no SIMD or floating-point register needs saving.

#include "shim/header.inc"
        SHIM_HEADER prepatch_tramp_mcount, prepatch_tramp_mcount, prepatch_tramp_patchable

// The start routine and the trampolines save the argument registers x0-x8 (x8: the indirect
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

// Under the count tracer, in the runtime serving the process (prepatch_count_fast), the trampolines
// count the call themselves and return: the counter of the site whose end is x30 is found in the site
// hash (shim/core.h site_hash_find, as x86-64's prepatch_tramp_count does it) and incremented
// atomically (an exclusive pair: ARMv8.0 has no ldadd). x16, x17 and the flags are written, free at both
// kinds of site (a call's veneer may clobber them; a branch island has); x0 and x1 are saved.
// Otherwise on to `slow`.
        .macro COUNT slow
        adrp x16, prepatch_count_fast
        ldr x16, [x16, #:lo12:prepatch_count_fast]
        cbz x16, \slow
        adrp x16, prepatch_hash
        ldr x16, [x16, #:lo12:prepatch_hash]            // the SiteHash block: mask, mult, base, used, then its slots
        cbz x16, 3f
        stp x0, x1, [sp, #-16]!
        ldp x17, x0, [x16]                              // HashShape::home: (((key - base) * mult) >> 32) & mask
        ldr x1, [x16, #16]
        sub x1, x30, x1
        mul x1, x1, x0
        lsr x1, x1, #32
        and x1, x1, x17
        add x16, x16, #32
        add x16, x16, x1, lsl #4
1:      ldp x17, x0, [x16], #16                         // a slot: key, value (the counter's address)
        cmp x17, x30
        b.eq 2f
        cbnz x17, 1b                                    // an empty slot: not a site (cannot happen)
        b 4f
2:      ldxr x17, [x0]
        add x17, x17, #1
        stxr w1, x17, [x0]
        cbnz w1, 2b
4:      ldp x0, x1, [sp], #16
3:
        .endm

// The trampolines call prepatch_on_site(site's end, kind, saved): `saved` is their frame, where x29
// and x30 as the site left them lie first (x29: the function's frame pointer at an mcount site, its
// caller's at a patchable one), then x0-x9. The graph tracer may replace the saved x9 of a patchable
// site (its return address) or the slot of an mcount site's frame record with prepatch_tramp_exit.
// Each starts with `bti c`: a site out of a bl's reach enters through a branch island's `br x16`
// (arch/aarch64.h encode_island), which a BTI-guarded page allows only onto a landing pad.
// -pg: an ordinary call, returned from with `ret`.
        .globl prepatch_tramp_mcount
        .type prepatch_tramp_mcount, %function
prepatch_tramp_mcount:
        hint #34                                        // bti c
        COUNT 5f
        ret
5:      stp x29, x30, [sp, #-96]!
        mov x29, sp
        SAVE_ARGS
        mov x0, x30
        mov x1, #2                                      // arch::SiteKind::mcount
        mov x2, sp
        bl prepatch_on_site
        RESTORE_ARGS
        ldp x29, x30, [sp], #96
        ret
        .size prepatch_tramp_mcount, . - prepatch_tramp_mcount

// -fpatchable-function-entry: back to the site's end with x30 = the function's return address (x9),
// as if the call had not happened; x16 carries the site's end.
        .globl prepatch_tramp_patchable
        .type prepatch_tramp_patchable, %function
prepatch_tramp_patchable:
        hint #34                                        // bti c
        COUNT 5f
        mov x16, x30
        mov x30, x9
        br x16
5:      stp x29, x30, [sp, #-96]!
        mov x29, sp
        SAVE_ARGS
        mov x0, x30
        mov x1, #3                                      // arch::SiteKind::patchable
        mov x2, sp
        bl prepatch_on_site
        RESTORE_ARGS
        ldp x29, x16, [sp], #96
        mov x30, x9
        br x16
        .size prepatch_tramp_patchable, . - prepatch_tramp_patchable

// The graph tracer's exit trampoline: a traced function whose return address the graph tracer replaced
// returns here, with the stack pointer and x29 it was entered with. prepatch_on_exit(sp, x29, x0)
// records the exit and gives back the real return address, returned to through x16 (free at a return,
// as x17 and x30 are). The return value's registers are kept: x0-x7 and x8 (the C side never touches
// the SIMD and floating-point ones).
        .globl prepatch_tramp_exit
        .type prepatch_tramp_exit, %function
prepatch_tramp_exit:
        stp x0, x1, [sp, #-80]!
        stp x2, x3, [sp, #16]
        stp x4, x5, [sp, #32]
        stp x6, x7, [sp, #48]
        stp x8, x29, [sp, #64]
        add x0, sp, #80
        mov x1, x29
        ldr x2, [sp]
        bl prepatch_on_exit
        mov x16, x0
        ldp x2, x3, [sp, #16]
        ldp x4, x5, [sp, #32]
        ldp x6, x7, [sp, #48]
        ldp x8, x29, [sp, #64]
        ldp x0, x1, [sp], #80
        ret x16
        .size prepatch_tramp_exit, . - prepatch_tramp_exit

// The graph tracer's exception hooks, which GOT slots of the unwinder's entry points lead to
// (shim/runtime/exceptions.inc, hook_unwinder): prepatch_unwind(caller's sp, caller's x29, to_real),
// 1 where unwinding starts or resumes, 0 where a handler catches; then the real function, with the
// argument registers and x29/x30 as they came, so no frame of the shim is left for the unwinder to see.
        .macro UNWIND_HOOK name, index, to_real
        .globl \name
        .type \name, %function
\name:
        stp x29, x30, [sp, #-80]!
        mov x29, sp
        stp x0, x1, [sp, #16]
        stp x2, x3, [sp, #32]
        stp x4, x5, [sp, #48]
        stp x6, x7, [sp, #64]
        add x0, sp, #80
        ldr x1, [sp]
        mov x2, #\to_real
        bl prepatch_unwind
        ldp x2, x3, [sp, #32]
        ldp x4, x5, [sp, #48]
        ldp x6, x7, [sp, #64]
        ldp x0, x1, [sp, #16]
        ldp x29, x30, [sp], #80
        adr x16, prepatch_unwind_real
        ldr x16, [x16, #8*\index]
        br x16
        .size \name, . - \name
        .endm

        UNWIND_HOOKS

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
