// The shim's assembly on ARM32 (Thumb-2, EABI hard-float): the blob header, the start routine e_entry
// points at, the trampolines (every tracer's), the graph tracer's exit trampoline and exception hooks,
// the thread start routine and the breakpoint self-test, all Thumb code. Offsets in the header are
// from __shim_base (the header itself); see shim/abi.h, BlobHeader (a Thumb function's offset has bit 0
// set, its interworking address). Sites (arch/thumb2.h):
//   mcount:    gcc -pg, `push {lr}; bl __gnu_mcount_nc` after the function's own pushes: lr = the
//              site's end (Thumb bit set), [sp] = the function's own return address, which the callee
//              pops (glibc's __gnu_mcount_nc does); every argument register is live.
//   patchable: -fpatchable-function-entry (3 nops or more), made `push {lr}; bl <site>` at the entry:
//              the same, before the function has saved anything.
//   ARM state: -marm -pg, made `mov ip, pc; b prepatch_arm_entry` (the header's fentry slot: ARM32 has
//              no fentry sites): lr = the function's return address, ip = the site's end; the entry
//              makes it the mcount one (ARM code, the only here).
// The C side is built with -mgeneral-regs-only, so no VFP register (hard-float arguments and results)
// needs saving; the site trampolines give ip back (a nested function's static chain), the rest may
// clobber it, as __gnu_mcount_nc does. Addresses are PC-relative: a literal
// holding `symbol - (the add's address + 4)`, added to pc.

        .syntax unified
        .thumb
#include "shim/header.inc"
        SHIM_HEADER prepatch_arm_entry, prepatch_tramp_mcount, prepatch_tramp_patchable
        .syntax unified
        .thumb

// Loads the run-time address of `sym` into `reg`.
        .macro ADDR reg, sym
        ldr \reg, 8f
9:      add \reg, pc
        b 7f
        .p2align 2
8:      .long \sym - (9b + 4)
7:
        .endm

// e_entry. The kernel (or ld.so) left: sp -> argc, argv..., envp..., auxv; r0 = a function for atexit
// (ld.so's _dl_fini) or 0. The registers are saved, the shim's data page is made writable, the shim
// sets up, and they are restored before the jump to the program's own entry (ip carries the target).
        .globl prepatch_start
        .type prepatch_start, %function
        .thumb_func
prepatch_start:
        push {r0-r5, r7, lr}                            // 8 words: sp stays 8-byte aligned
        add r4, sp, #32                                 // the kernel's stack pointer
        ADDR r0, __shim_data                            // mprotect(data, size, PROT_READ|PROT_WRITE)
        ADDR r1, __shim_mem_end
        subs r1, r1, r0
        movs r2, #3
        movs r7, #125
        svc #0
        cmp r0, #0
        bne 1f                                          // no writable data: start the program untraced
        mov r0, r4
        bl prepatch_init
1:      ADDR r0, __shim_header                          // the entry: config.entry + load bias
        ADDR r1, prepatch_config
        ldr r2, [r1]                                    //   - config.blob_vaddr (its low word)
        subs r0, r0, r2
        ldr r2, [r1, #24]                               //   + config.entry (Thumb bit and all)
        add ip, r0, r2
        pop {r0-r5, r7, lr}
        bx ip
        .size prepatch_start, . - prepatch_start

// Under the count tracer, in the runtime serving the process (prepatch_count_fast), the trampolines
// count the call themselves and return as they do (below): the counter of the site whose end is lr
// (bit 0 cleared) is found in the site hash (shim/core.h site_hash_find, as x86-64's
// prepatch_tramp_count does it, the 64-bit home computed in 32-bit halves) and incremented with an
// ldrexd/strexd pair. r0-r6 are used and given back, ip is not touched. Otherwise on to `slow`, with
// every register and the stack as they came.
        .macro COUNT slow
        push {r0-r6}
        ADDR r0, prepatch_count_fast
        ldr r0, [r0]
        cmp r0, #0
        beq 5f
        ADDR r0, prepatch_hash
        ldr r0, [r0]                                    // the SiteHash block: mask, mult, base, used, then its slots
        cmp r0, #0
        beq 3f
        bic r1, lr, #1                                  // the key: the site's end
        ldr r2, [r0, #16]                               // HashShape::home: (((key - base) * mult) >> 32) & mask,
        subs r2, r1, r2                                 //   key - base in r3:r2
        ldr r4, [r0, #20]
        mov r3, #0
        sbc r3, r3, r4
        ldr r4, [r0, #8]                                //   mult in r5:r4; bits 32-63 of the product:
        ldr r5, [r0, #12]
        mul r3, r3, r4                                  //   lo(d_hi * m_lo) + lo(d_lo * m_hi) + hi(d_lo * m_lo)
        mla r3, r2, r5, r3
        umull r4, r5, r2, r4
        add r3, r3, r5
        ldr r4, [r0]
        and r3, r3, r4
        add r0, r0, #32
        add r0, r0, r3, lsl #4
1:      ldr r2, [r0]                                    // a slot: key, value (the counter's address); 64-bit
        cmp r2, r1                                      //   words whose high halves hold 0 here
        beq 2f
        add r0, r0, #16
        cmp r2, #0
        bne 1b                                          // an empty slot: not a site (cannot happen)
        b 3f
2:      ldr r0, [r0, #8]
4:      ldrexd r2, r3, [r0]
        adds r2, r2, #1
        adc r3, r3, #0
        strexd r4, r2, r3, [r0]
        cmp r4, #0
        bne 4b
3:      mov r0, lr                                      // the site's end, where the last pop takes it
        ldr lr, [sp, #28]                               // the function's own return address
        str r0, [sp, #28]
        pop {r0-r6}
        pop {pc}                                        // back into the function (interworking)
5:      pop {r0-r6}
        b \slow
        .endm

// The trampolines call prepatch_on_site(site's end, kind, saved): `saved` is their frame, r0-r4 and
// lr (the site's end) as they pushed them, followed by the word the site pushed (the function's return
// address), just below the stack pointer of the site. The graph tracer may replace that word. Back to
// the site's end, with the word popped into lr, as __gnu_mcount_nc does, and ip as the function had
// it: at a patchable site's entry it may be a GNU C nested function's static chain (kept below the
// frame across the C call, which may clobber it).
        .macro SITE_TRAMPOLINE name, kind
        .globl \name
        .type \name, %function
        .thumb_func
\name:
        COUNT 6f
6:      push {r0-r4, lr}
        mov r4, sp                                      // callee-saved: the frame to return to
        str ip, [sp, #-4]!
        mov r0, sp
        bic r0, r0, #7
        mov sp, r0                                      // the C side wants an 8-byte aligned stack
        bic r0, lr, #1                                  // the site's end
        movs r1, #\kind
        mov r2, r4
        bl prepatch_on_site
        ldr ip, [r4, #-4]
        mov sp, r4
        ldr lr, [sp, #24]                               // the function's own return address
        ldr r0, [sp, #20]                               // the site's end, where the last pop takes it
        str r0, [sp, #24]
        pop {r0-r4}
        add sp, #4
        pop {pc}                                        // back into the function (interworking)
        .size \name, . - \name
        .endm

        SITE_TRAMPOLINE prepatch_tramp_mcount, 2        // arch::SiteKind::mcount
        SITE_TRAMPOLINE prepatch_tramp_patchable, 3     // arch::SiteKind::patchable

// ARM-state -pg sites (arch/thumb2.h): `mov ip, pc` left ip the site's end, and the toggled `b` came
// here with lr still the function's return address and sp the site's. What the site's `push {lr}; bl`
// did before preparing, then the mcount trampoline, which sees what a Thumb site gives it (the pushed
// word, lr the site's end) and returns to lr in ARM state. Writes only ip besides, as __gnu_mcount_nc.
        .arm
        .p2align 2
        .globl prepatch_arm_entry
        .type prepatch_arm_entry, %function
prepatch_arm_entry:
        str lr, [sp, #-4]!                              // push {lr}
        mov lr, ip                                      // the site's end
        ldr ip, 1f
0:      add ip, ip, pc                                  // (pc reads 0b + 8)
        orr ip, ip, #1                                  // into Thumb state
        bx ip
1:      .long prepatch_tramp_mcount - (0b + 8)
        .size prepatch_arm_entry, . - prepatch_arm_entry
        .thumb

// The graph tracer's exit trampoline: a traced function whose return address the graph tracer replaced
// returns here, with the stack pointer it was entered with. prepatch_on_exit(sp, r0) records the exit
// and gives back the real return address (Thumb bit and all), returned to through ip (free at a
// return). The return value's registers r0-r3 are kept (the C side never touches the VFP ones).
        .globl prepatch_tramp_exit
        .type prepatch_tramp_exit, %function
        .thumb_func
prepatch_tramp_exit:
        push {r0-r3}                                    // 16 bytes: sp stays 8-byte aligned
        add r0, sp, #16
        ldr r2, [sp]                                    // the value (r0, sign-extended), a 64-bit
        asr r3, r2, #31                                 // argument in r2:r3
        bl prepatch_on_exit
        mov ip, r0
        pop {r0-r3}
        bx ip
        .size prepatch_tramp_exit, . - prepatch_tramp_exit

// The graph tracer's exception hooks, which GOT slots of the unwinder's entry points lead to
// (shim/runtime/exceptions.inc, hook_unwinder): prepatch_unwind(caller's sp, to_real), 1 where
// unwinding starts or resumes, 0 where a handler catches; then the real function, with the argument
// registers and lr as they came, so no frame of the shim is left for the unwinder to see (ARM's
// _Unwind_RaiseException takes the registers it is called with as the thrower's).
        .macro UNWIND_HOOK name, index, to_real
        .globl \name
        .type \name, %function
        .thumb_func
\name:
        push {r0-r4, lr}
        mov r4, sp
        add r0, sp, #24                                 // the caller's sp
        bic r1, r4, #7
        mov sp, r1
        movs r1, #\to_real
        bl prepatch_unwind
        mov sp, r4
        ADDR ip, prepatch_unwind_real
        ldr ip, [ip, #8*\index]                         // (a u64: its low word)
        pop {r0-r4, lr}
        bx ip
        .size \name, . - \name
        .endm

        UNWIND_HOOKS

// The start routine of a thread created through prepatch_hook_pthread_create, with r0 its region (an
// alternate signal stack, the real start routine and argument at its top): sets the stack up, then
// jumps to the real start routine with its argument, returning to glibc's start_thread directly.
        .globl prepatch_thread_start
        .type prepatch_thread_start, %function
        .thumb_func
prepatch_thread_start:
        push {r4, lr}
        bl prepatch_thread_setup                        // r0: {start, arg}
        pop {r4, lr}
        ldr ip, [r0]
        ldr r0, [r0, #4]
        bx ip
        .size prepatch_thread_start, . - prepatch_thread_start

// The self-test: a 4-byte "site" after a `push {lr}`, as gcc -pg lays it out, whose first halfword is
// the trap (arch/plan.h thumb_trap). The handler must emulate a `bl` to the mcount trampoline with lr
// 4 bytes on; the trampoline pops the pushed lr and returns there.
        .globl prepatch_selftest
        .type prepatch_selftest, %function
        .thumb_func
prepatch_selftest:
        push {r4, lr}
        push {lr}
        .globl prepatch_selftest_site
prepatch_selftest_site:
        udf #1
        nop                                             // never executed: the rest of the site
        pop {r4, pc}
        .size prepatch_selftest, . - prepatch_selftest

// Reads the generic timer's virtual count (CNTVCT) into r0:r1, once at start: where user space may
// not (no generic timer, or qemu-arm), the mrrc raises SIGILL, and the handler (shim/runtime/trap.inc)
// returns 0 from here instead.
        .globl prepatch_read_cntvct
        .type prepatch_read_cntvct, %function
        .thumb_func
prepatch_read_cntvct:
        .globl prepatch_cntvct_probe
prepatch_cntvct_probe:
        mrrc p15, 1, r0, r1, c14
        bx lr
        .size prepatch_read_cntvct, . - prepatch_read_cntvct

// The run-time ABI's unsigned 64-bit division (ARM IHI 0043): n in r0:r1, d in r2:r3; the quotient
// in r0:r1 and the remainder in r2:r3. prepatch_udivmod64 (shim/runtime.cc) takes the remainder's
// address as its fifth argument word, on the stack.
        .globl __aeabi_uldivmod
        .hidden __aeabi_uldivmod
        .type __aeabi_uldivmod, %function
        .thumb_func
__aeabi_uldivmod:
        push {r4, lr}
        sub sp, sp, #16
        add r4, sp, #8
        str r4, [sp]
        bl prepatch_udivmod64
        ldrd r2, r3, [sp, #8]
        add sp, sp, #16
        pop {r4, pc}
        .size __aeabi_uldivmod, . - __aeabi_uldivmod

        .section .note.GNU-stack, "", %progbits
