// The shim's assembly on PPC64le (ELFv2): the blob header, the start routine e_entry points at, the
// trampolines (every tracer's), the graph tracer's exit trampoline and exception hooks, and the start
// routine of threads. Offsets in the header are from
// __shim_base (the header itself); see shim/abi.h, BlobHeader. Sites are `bl` words (arch/ppc64le.h):
//   mcount:    gcc -pg, `bl <site>` after the frame setup (`mflr r0; std r0, 16(r1); stdu ...` before
//              it): an ordinary call; the word after it is a nop or, where ld routed the call through
//              a stub, `ld r2, 24(r1)`, which reloads the TOC pointer the stub saved there.
//   patchable: -fpatchable-function-entry, `mflr r0; bl <site>` at the entry: r0 = LR = the function's
//              return address before the bl; every argument register is live.
// C functions are entered at their global entry with r12 = their address (they compute their TOC
// pointer, r2, from it); PC-relative addresses come from `bcl 20, 31` (no TOC in assembly). The C side
// is built without floating-point, vector or VSX registers, so only general registers need saving.

#include "shim/header.inc"
        SHIM_HEADER prepatch_tramp_mcount, prepatch_tramp_mcount, prepatch_tramp_patchable

// r12 = the run-time address of `sym`, from the address of local label 9 in r11.
        .macro ADDR reg, sym
        addis \reg, 11, (\sym - 9b)@ha
        addi \reg, \reg, (\sym - 9b)@l
        .endm
// Calls the C function `sym` (global entry, r12 = its address); r11 must hold label 9's address.
        .macro CALL sym
        ADDR 12, \sym
        mtctr 12
        bctrl
        .endm

// The start routine and the trampolines save r3-r12 (arguments, the static chain r11, the global
// entry address r12) and r2 in a frame of their own: back chain, 16 LR, 24 TOC pointer, 32..111 the
// registers.
        .macro SAVE_REGS
        std 3, 32(1)
        std 4, 40(1)
        std 5, 48(1)
        std 6, 56(1)
        std 7, 64(1)
        std 8, 72(1)
        std 9, 80(1)
        std 10, 88(1)
        std 11, 96(1)
        std 12, 104(1)
        std 2, 24(1)
        .endm
        .macro RESTORE_REGS
        ld 3, 32(1)
        ld 4, 40(1)
        ld 5, 48(1)
        ld 6, 56(1)
        ld 7, 64(1)
        ld 8, 72(1)
        ld 9, 80(1)
        ld 10, 88(1)
        ld 11, 96(1)
        ld 12, 104(1)
        ld 2, 24(1)
        .endm

// e_entry. The kernel left r1 -> argc, argv..., envp..., auxv. ld.so leaves r1 -> a frame whose back
// chain is 0 and passes argc, argv, envp, auxv and a function for atexit (its _dl_fini) in r3-r7, argv
// still pointing into the kernel's block (glibc's __libc_start_main tells the two apart the same way).
// r12 = the entry's own address (ELFv2).
// They are saved, the shim's data page is made writable, the shim sets up, and they are restored before
// the jump to the program's own entry with r12 = its address.
        .globl prepatch_start
        .type prepatch_start, @function
prepatch_start:
        mr 9, 1                                         // the kernel's stack pointer (saved at 80)
        stdu 1, -128(1)
        SAVE_REGS
        bcl 20, 31, 9f
9:      mflr 11
        ADDR 3, __shim_data                             // mprotect(data, size, PROT_READ|PROT_WRITE)
        ADDR 4, __shim_mem_end
        subf 4, 3, 4
        li 5, 3
        li 0, 125
        sc
        bso 1f                                          // no writable data: start the program untraced
        ld 3, 80(1)
        ld 9, 0(3)                                      // argc, or 0: ld.so's frame (then r4 = argv)
        cmpdi 9, 0
        bne 2f
        ld 3, 40(1)                                     // argv - 8: where the kernel put argc
        addi 3, 3, -8
2:      bcl 20, 31, 9f
9:      mflr 11
        CALL prepatch_init
1:      bcl 20, 31, 9f
9:      mflr 11
        ADDR 12, __shim_header                          // the entry: config.entry + load bias
        ADDR 10, prepatch_config
        ld 9, 0(10)                                     //   - config.blob_vaddr
        subf 12, 9, 12
        ld 9, 24(10)                                    //   + config.entry
        add 12, 12, 9
        mtctr 12
        RESTORE_REGS
        mfctr 12
        addi 1, 1, 128
        bctr
        .size prepatch_start, . - prepatch_start


// Under the count tracer, in the runtime serving the process (prepatch_count_fast), the trampolines
// count the call themselves and return, with LR the site's end: the counter of the site whose end is LR
// is found in the site hash (shim/core.h site_hash_find, as x86-64's prepatch_tramp_count does it) and
// incremented with an ldarx/stdcx. pair. r3-r6 are used and given back (kept in the red zone below r1,
// free at any call and at a function's entry: a branch island has given its r11 back already); cr0
// and CTR (the site's end, once counted) are written. Otherwise on to `slow`, with every register as
// it came.
        .macro COUNT slow
        std 3, -8(1)
        std 4, -16(1)
        std 5, -24(1)
        std 6, -32(1)
        mflr 3                                          // the key: the site's end
        bcl 20, 31, 8f
8:      mflr 4
        mtlr 3
        addis 5, 4, (prepatch_count_fast - 8b)@ha
        addi 5, 5, (prepatch_count_fast - 8b)@l
        ld 5, 0(5)
        cmpdi 5, 0
        beq 7f
        addis 4, 4, (prepatch_hash - 8b)@ha
        addi 4, 4, (prepatch_hash - 8b)@l
        ld 4, 0(4)                                      // the SiteHash block: mask, mult, base, used, then its slots
        cmpdi 4, 0
        beq 3f
        ld 5, 16(4)                                     // HashShape::home: (((key - base) * mult) >> 32) & mask
        subf 5, 5, 3
        ld 6, 8(4)
        mulld 5, 5, 6
        srdi 5, 5, 32
        ld 6, 0(4)
        and 5, 5, 6
        sldi 5, 5, 4
        add 4, 4, 5
        addi 4, 4, 32
1:      ld 5, 0(4)                                      // a slot: key, value (the counter's address)
        cmpd 5, 3
        beq 2f
        addi 4, 4, 16
        cmpdi 5, 0
        bne 1b                                          // an empty slot: not a site (cannot happen)
        b 3f
2:      ld 5, 8(4)
4:      ldarx 6, 0, 5
        addi 6, 6, 1
        stdcx. 6, 0, 5
        bne- 4b
3:      mtctr 3                                         // the site's end, for the patchable trampoline's way back
        ld 3, -8(1)
        ld 4, -16(1)
        ld 5, -24(1)
        ld 6, -32(1)
        b 6f
7:      ld 3, -8(1)
        ld 4, -16(1)
        ld 5, -24(1)
        ld 6, -32(1)
        b \slow
6:
        .endm

// -pg: an ordinary call. The TOC pointer also goes to the caller's TOC save slot, 24(r1), as ld's
// call stub to _mcount would have put it, for the `ld r2, 24(r1)` after such a call.
        .globl prepatch_tramp_mcount
        .type prepatch_tramp_mcount, @function
prepatch_tramp_mcount:
        std 2, 24(1)
        COUNT 5f
        blr
5:
        mflr 0
        std 0, 16(1)
        stdu 1, -128(1)
        SAVE_REGS
        mr 3, 0                                         // the site's end
        li 4, 2                                         // arch::SiteKind::mcount
        mr 5, 1
        bcl 20, 31, 9f
9:      mflr 11
        CALL prepatch_on_site
        RESTORE_REGS
        addi 1, 1, 128
        ld 0, 16(1)
        mtlr 0
        blr
        .size prepatch_tramp_mcount, . - prepatch_tramp_mcount

// -fpatchable-function-entry: back to the site's end (in CTR) with LR = r0 = the function's return
// address, as if the call had not happened. Nothing of the caller's frame is touched.
        .globl prepatch_tramp_patchable
        .type prepatch_tramp_patchable, @function
prepatch_tramp_patchable:
        COUNT 5f
        mtlr 0                                          // back to the site's end (CTR) with LR = r0
        bctr
5:      stdu 1, -128(1)
        std 0, 112(1)                                   // the function's return address
        mflr 0
        std 0, 120(1)                                   // the site's end
        SAVE_REGS
        mr 3, 0
        li 4, 3                                         // arch::SiteKind::patchable
        mr 5, 1
        bcl 20, 31, 9f
9:      mflr 11
        CALL prepatch_on_site
        RESTORE_REGS
        ld 0, 120(1)
        mtctr 0
        ld 0, 112(1)
        mtlr 0
        addi 1, 1, 128
        bctr
        .size prepatch_tramp_patchable, . - prepatch_tramp_patchable

// The graph tracer's exit trampoline: a traced function whose return address the graph tracer replaced
// returns here, with r1 as it was entered (its return address's slot at 16(r1), in its caller's frame).
// prepatch_on_exit(r1, r3) records the exit and gives back the real return address. The return value's
// registers r3 and r4 are kept, and r2 (the TOC pointer the caller expects back); the C side never
// touches floating-point or vector registers.
        .globl prepatch_tramp_exit
        .type prepatch_tramp_exit, @function
prepatch_tramp_exit:
        stdu 1, -64(1)
        std 3, 32(1)
        std 4, 40(1)
        std 2, 24(1)
        addi 3, 1, 64
        ld 4, 32(1)
        bcl 20, 31, 9f
9:      mflr 11
        CALL prepatch_on_exit
        mtlr 3
        ld 3, 32(1)
        ld 4, 40(1)
        ld 2, 24(1)
        addi 1, 1, 64
        blr
        .size prepatch_tramp_exit, . - prepatch_tramp_exit

// The graph tracer's exception hooks, which GOT slots of the unwinder's entry points lead to
// (shim/runtime/exceptions.inc, hook_unwinder; the caller's PLT stub saved its r2 and put the hook's
// address in r12): prepatch_unwind(caller's r1, to_real), 1 where unwinding starts or resumes, 0 where a
// handler catches; then the real function (r12 = its global entry), with r2, r3-r10 and LR as they
// came (r11 is used on the way), so no frame of the shim is left for the unwinder to see.
        .macro UNWIND_HOOK name, index, to_real
        .globl \name
        .type \name, @function
\name:
        mflr 0
        std 0, 16(1)
        stdu 1, -112(1)
        SAVE_REGS
        addi 3, 1, 112
        li 4, \to_real
        bcl 20, 31, 9f
9:      mflr 11
        CALL prepatch_unwind
        RESTORE_REGS
        bcl 20, 31, 9f
9:      mflr 11
        ADDR 12, prepatch_unwind_real
        ld 12, 8*\index(12)
        mtctr 12
        addi 1, 1, 112
        ld 0, 16(1)
        mtlr 0
        bctr
        .size \name, . - \name
        .endm

        UNWIND_HOOKS

// The start routine of a thread created through prepatch_hook_pthread_create, with r3 its region (an
// alternate signal stack, the real start routine and argument at its top): sets the stack up, then
// jumps to the real start routine (r12 = its global entry) with its argument, returning to glibc's
// start_thread directly.
        .globl prepatch_thread_start
        .type prepatch_thread_start, @function
prepatch_thread_start:
        mflr 0
        std 0, 16(1)
        stdu 1, -48(1)
        std 2, 24(1)
        bcl 20, 31, 9f
9:      mflr 11
        CALL prepatch_thread_setup                      // r3: {start, arg}
        ld 2, 24(1)
        addi 1, 1, 48
        ld 0, 16(1)
        mtlr 0
        ld 12, 0(3)
        ld 3, 8(3)
        mtctr 12
        bctr
        .size prepatch_thread_start, . - prepatch_thread_start

        .section .note.GNU-stack, "", @progbits
