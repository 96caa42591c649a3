// The shim's assembly on RISC-V64 (LP64): the blob header, the start routine e_entry points at, the
// trampolines (every tracer's), the graph tracer's exit trampoline and exception hooks, the thread
// start routine and the breakpoint self-test. Offsets in the
// header are from __shim_base (the header itself); see shim/abi.h, BlobHeader. Sites (arch/riscv64.h):
//   mcount:    gcc -pg, `mv a0, ra; jal ra, T` (or `auipc ra; jalr ra`) after the prologue, where T
//              (the _mcount PLT entry, or _mcount) starts with the preparer's jump here: an ordinary
//              call, ra = the site's end, a0 = the function's return address.
//   patchable: -fpatchable-function-entry, `auipc t0, hi; jalr t0, lo(t0)` at the entry: t0 = the
//              site's end, ra = the function's return address; every argument register is live.
// The C side is built soft-float (-mabi=lp64), so no floating-point register needs saving, and without
// linker relaxation, so nothing is addressed through gp (the program's, not ours).

#include "shim/header.inc"
        SHIM_HEADER prepatch_tramp_mcount, prepatch_tramp_mcount, prepatch_tramp_patchable
        .option norelax

// The argument registers a0-a7, ra and t0 in an 80-byte frame (a multiple of 16, as the ABI keeps sp).
        .macro SAVE_REGS
        addi sp, sp, -80
        sd a0, 0(sp)
        sd a1, 8(sp)
        sd a2, 16(sp)
        sd a3, 24(sp)
        sd a4, 32(sp)
        sd a5, 40(sp)
        sd a6, 48(sp)
        sd a7, 56(sp)
        sd ra, 64(sp)
        sd t0, 72(sp)
        .endm
        .macro RESTORE_REGS
        ld a0, 0(sp)
        ld a1, 8(sp)
        ld a2, 16(sp)
        ld a3, 24(sp)
        ld a4, 32(sp)
        ld a5, 40(sp)
        ld a6, 48(sp)
        ld a7, 56(sp)
        ld ra, 64(sp)
        ld t0, 72(sp)
        addi sp, sp, 80
        .endm

// e_entry. The kernel (or ld.so) left: sp -> argc, argv..., envp..., auxv; a0 = a function for atexit
// (ld.so's _dl_fini) or 0. The registers are saved, the shim's data page is made writable, the shim
// sets up, and they are restored before the jump to the program's own entry (t1 carries the target).
        .globl prepatch_start
        .type prepatch_start, %function
prepatch_start:
        mv t1, sp                                       // the kernel's stack pointer
        SAVE_REGS
        mv s1, t1                                       // callee-saved: the program's _start ignores s1
        lla a0, __shim_data                             // mprotect(data, size, PROT_READ|PROT_WRITE)
        lla a1, __shim_mem_end
        sub a1, a1, a0
        li a2, 3
        li a7, 226
        ecall
        bnez a0, 1f                                     // no writable data: start the program untraced
        mv a0, s1
        call prepatch_init
1:      lla t1, __shim_header                           // the entry: config.entry + load bias
        lla t2, prepatch_config
        ld t3, 0(t2)                                    //   - config.blob_vaddr
        sub t1, t1, t3
        ld t3, 24(t2)                                   //   + config.entry
        add t1, t1, t3
        li s1, 0
        RESTORE_REGS
        jr t1
        .size prepatch_start, . - prepatch_start

// Under the count tracer, in the runtime serving the process (prepatch_count_fast), the trampolines
// count the call themselves and return: the counter of the site whose end is `key` is found in the site
// hash (shim/core.h site_hash_find, as x86-64's prepatch_tramp_count does it) and incremented with an
// amoadd. Only t1 and t3-t6 are written: free at an mcount site (an ordinary call) and at a patchable
// site's entry, where t2 may be a nested function's static chain. Otherwise on to `slow`.
        .macro COUNT key, slow
        lla t1, prepatch_count_fast
        ld t1, 0(t1)
        beqz t1, \slow
        lla t1, prepatch_hash
        ld t1, 0(t1)                                    // the SiteHash block: mask, mult, base, used, then its slots
        beqz t1, 3f
        ld t3, 16(t1)                                   // HashShape::home: (((key - base) * mult) >> 32) & mask
        sub t3, \key, t3
        ld t4, 8(t1)
        mul t3, t3, t4
        srli t3, t3, 32
        ld t4, 0(t1)
        and t3, t3, t4
        slli t3, t3, 4
        add t1, t1, t3
        addi t1, t1, 32
1:      ld t3, 0(t1)                                    // a slot: key, value (the counter's address)
        beq t3, \key, 2f
        addi t1, t1, 16
        bnez t3, 1b                                     // an empty slot: not a site (cannot happen)
        j 3f
2:      ld t4, 8(t1)
        li t5, 1
        amoadd.d zero, t5, (t4)
3:
        .endm

// The trampolines call prepatch_on_site(site's end, kind, saved): `saved` is their frame, a0-a7, ra
// and t0 as the site left them (SAVE_REGS), 80 bytes below the stack pointer of the call. The graph
// tracer may replace the saved ra of a patchable site (the function's return address) with
// prepatch_tramp_exit.
// -pg: an ordinary call, returned from with `ret`; a0 holds the function's return address.
        .globl prepatch_tramp_mcount
        .type prepatch_tramp_mcount, %function
prepatch_tramp_mcount:
        COUNT ra, 5f
        ret
5:      SAVE_REGS
        mv a0, ra
        li a1, 2                                        // arch::SiteKind::mcount
        mv a2, sp
        call prepatch_on_site
        RESTORE_REGS
        ret
        .size prepatch_tramp_mcount, . - prepatch_tramp_mcount

// -fpatchable-function-entry: back to the site's end (t0) with ra (the function's return address) as
// the C side left it in the frame, as if the call had not happened.
        .globl prepatch_tramp_patchable
        .type prepatch_tramp_patchable, %function
prepatch_tramp_patchable:
        COUNT t0, 5f
        jr t0
5:      SAVE_REGS
        mv a0, t0
        li a1, 3                                        // arch::SiteKind::patchable
        mv a2, sp
        call prepatch_on_site
        RESTORE_REGS
        jr t0
        .size prepatch_tramp_patchable, . - prepatch_tramp_patchable

// The graph tracer's exit trampoline: a traced function whose return address the graph tracer replaced
// returns here, with the stack pointer it was entered with. prepatch_on_exit(sp, a0) records the exit
// and gives back the real return address, returned to through t1 (free at a return). The return
// value's registers a0 and a1 are kept (the C side never touches the floating-point ones).
        .globl prepatch_tramp_exit
        .type prepatch_tramp_exit, %function
prepatch_tramp_exit:
        addi sp, sp, -16
        sd a0, 0(sp)
        sd a1, 8(sp)
        addi a0, sp, 16
        ld a1, 0(sp)
        call prepatch_on_exit
        mv t1, a0
        ld a0, 0(sp)
        ld a1, 8(sp)
        addi sp, sp, 16
        jr t1
        .size prepatch_tramp_exit, . - prepatch_tramp_exit

// The graph tracer's exception hooks, which GOT slots of the unwinder's entry points lead to
// (shim/runtime/exceptions.inc, hook_unwinder): prepatch_unwind(caller's sp, to_real), 1 where
// unwinding starts or resumes, 0 where a handler catches; then the real function, with the argument
// registers and ra as they came, so no frame of the shim is left for the unwinder to see.
        .macro UNWIND_HOOK name, index, to_real
        .globl \name
        .type \name, %function
\name:
        SAVE_REGS
        addi a0, sp, 80
        li a1, \to_real
        call prepatch_unwind
        RESTORE_REGS
        lla t1, prepatch_unwind_real
        ld t1, 8*\index(t1)
        jr t1
        .size \name, . - \name
        .endm

        UNWIND_HOOKS

// The start routine of a thread created through prepatch_hook_pthread_create, with a0 its region (an
// alternate signal stack, the real start routine and argument at its top): sets the stack up, then
// jumps to the real start routine with its argument, returning to glibc's start_thread directly.
        .globl prepatch_thread_start
        .type prepatch_thread_start, %function
prepatch_thread_start:
        addi sp, sp, -16
        sd ra, 8(sp)
        call prepatch_thread_setup                      // a0: {start, arg}
        ld ra, 8(sp)
        addi sp, sp, 16
        ld t1, 0(a0)
        ld a0, 8(a0)
        jr t1
        .size prepatch_thread_start, . - prepatch_thread_start

// The self-test: a 4-byte "site" whose first halfword is a c.ebreak. The handler must emulate a
// `jalr t0` to the patchable trampoline with t0 4 bytes on, where the `ret` is.
        .globl prepatch_selftest
        .type prepatch_selftest, %function
prepatch_selftest:
        .globl prepatch_selftest_site
prepatch_selftest_site:
        c.ebreak
        c.nop                                           // never executed: the rest of the site
        ret
        .size prepatch_selftest, . - prepatch_selftest

        .section .note.GNU-stack, "", %progbits
