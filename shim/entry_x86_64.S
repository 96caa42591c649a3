// The shim's assembly: the blob header, the start routine e_entry points at, the trampolines the
// sites' call forms target, the signal restorer and the self-test breakpoint. x86-64, System V ABI.
// Offsets in the header are from __shim_base (the header itself); see shim/abi.h, BlobHeader.

#include "shim/header.inc"
#include "shim/fast_x86_64.h"
        SHIM_HEADER prepatch_tramp_fentry, prepatch_tramp_mcount, prepatch_tramp_patchable

// e_entry. The kernel (or ld.so) left: %rsp -> argc, argv..., envp..., auxv; %rdx = a function for
// atexit (ld.so's _dl_fini) or 0. Everything is saved, the shim's data page is made writable, the shim
// sets up, and everything is restored before jumping to the program's own entry (only %r11, which the
// psABI leaves undefined at entry, carries the jump target).
        .globl prepatch_start
        .type prepatch_start, @function
prepatch_start:
        push %rax
        push %rbx
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %rbp
        push %r8
        push %r9
        push %r10
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, %rbp
        and $-16, %rsp
        lea __shim_data(%rip), %rdi                     // mprotect(data, size, PROT_READ|PROT_WRITE)
        lea __shim_mem_end(%rip), %rsi
        sub %rdi, %rsi
        mov $3, %edx
        mov $10, %eax
        syscall
        test %rax, %rax
        jnz 1f                                          // no writable data: start the program untraced
        lea 14*8(%rbp), %rdi                            // the kernel's stack pointer
        call prepatch_init
1:      lea __shim_header(%rip), %r11                   // the entry: config.entry + load bias
        sub prepatch_config+0(%rip), %r11               //   - config.blob_vaddr
        add prepatch_config+24(%rip), %r11              //   + config.entry
        mov %rbp, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %r10
        pop %r9
        pop %r8
        pop %rbp
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rbx
        pop %rax
        jmp *%r11
        .size prepatch_start, . - prepatch_start

// The graph tracer's fast path, at the top of the fentry and patchable trampolines while
// prepatch_fast.on (shim/runtime.cc): the common call recorded in assembly, as prepatch_on_call would
// record it, without saving the argument registers for a C call. Under the plain graph tracer (on = 1)
// a shadow frame is pushed, the entry record written and the return address swapped; under a duration
// threshold alone (on = 2) the frame is pushed held back (frame_pending, with its time) and nothing is
// written. Anything it does not cover goes on to the trampoline's C path with nothing changed: a site
// not in the hash, a thread not in its home entry of the table or with another tid (a new thread in a
// reused thread block, a child after fork), no file or chunk of it yet, a full chunk or one whose base
// is too old, a shadow stack not mapped or full, a frame this call leaves dead (longjmp), a tail call,
// a thread inside a GRAPH_NOTRACE call. Layout: shim/fast_x86_64.h. Seven pushes: the site's end is at
// 56(%rsp), the traced function's return address at 64(%rsp); bailing out is `9f`.

// The site's number into %esi (as the count trampoline finds the site); clobbers %rax %rcx %rdx %r11.
        .macro FAST_SITE
        mov 56(%rsp), %r11
        mov prepatch_hash(%rip), %rdx
        test %rdx, %rdx
        jz 9f
        mov %r11, %rax
        sub 16(%rdx), %rax
        imul 8(%rdx), %rax
        shr $32, %rax
        and (%rdx), %rax
        shl $4, %rax
        lea 32(%rdx,%rax), %rax
1:      mov (%rax), %rcx
        cmp %rcx, %r11
        je 2f
        test %rcx, %rcx
        jz 9f
        add $16, %rax
        jmp 1b
2:      mov 8(%rax), %esi
        .endm

// The calling thread's entry into \reg: its home entry in the table (this_thread), which must hold its
// thread pointer and its tid; clobbers %r11 and \tid.
        .macro FAST_THREAD reg, tid
        mov %fs:0, %r11
        movabs $0x9E3779B97F4A7C15, \reg
        imul %r11, \reg
        shr $THREAD_HASH_SHIFT, \reg
        and $THREAD_MASK, \reg
        imul $THREAD_SIZE, \reg, \reg
        add prepatch_fast+FAST_THREADS(%rip), \reg
        cmp THREAD_KEY(\reg), %r11
        jne 9f
        mov %fs:GLIBC_TID, \tid
        cmp THREAD_TID(\reg), \tid
        jne 9f
        .endm

// The thread %rax's new shadow frame into %rdx (room, no frame this call leaves dead, not a tail
// call), the return address's slot into %rdi, the real return address into %r11, the exit
// trampoline's address into %r9.
        .macro FAST_FRAME
        mov THREAD_FRAMES(%rax), %rdx
        test %rdx, %rdx
        jz 9f
        mov THREAD_DEPTH(%rax), %r11d
        cmp THREAD_CAP(%rax), %r11d
        jae 9f
        shl $FRAME_SHIFT, %r11
        add %r11, %rdx
        lea 64(%rsp), %rdi
        test %r11, %r11
        jz 3f
        cmp %rdi, FRAME_SLOT-(1<<FRAME_SHIFT)(%rdx)     // the top frame's slot at or below this one:
        jbe 9f                                          //   dead, or a tail call's (drop_dead)
3:      mov (%rdi), %r11
        lea prepatch_tramp_exit(%rip), %r9
        cmp %r9, %r11                                   // a tail call from a traced function
        je 9f
        .endm

// ShadowStack::push of the frame FAST_FRAME found, marked \mark, at time \time: the frame, the depth,
// the frame again (a signal handler's traced calls in between used the same entry).
        .macro FAST_PUSH mark, time
        mov %rdi, FRAME_SLOT(%rdx)
        mov %r11, FRAME_RET(%rdx)
        mov %esi, FRAME_SITE(%rdx)
        movl $\mark, FRAME_MARK(%rdx)
        movq \time, FRAME_TIME(%rdx)
        incl THREAD_DEPTH(%rax)
        mov %rdi, FRAME_SLOT(%rdx)
        mov %r11, FRAME_RET(%rdx)
        mov %esi, FRAME_SITE(%rdx)
        movl $\mark, FRAME_MARK(%rdx)
        movq \time, FRAME_TIME(%rdx)
        .endm

// The thread \t's chunk as reserve() takes it: in the current file, with 8 bytes of room, the time
// \now within reach of its base. Out: \time the time from the base, \pos the record's place, \next
// the place after it.
        .macro FAST_CHUNK t, now, time, pos, next
        mov prepatch_fast+FAST_WRITER(%rip), \time
        mov WRITER_GENERATION(\time), \time
        test \time, \time
        jz 9f
        cmp THREAD_GENERATION(\t), \time
        jne 9f
        mov \now, \time
        sub THREAD_BASE(\t), \time
        mov \time, \next
        shr $REC_TIME_BITS, \next
        jnz 9f
        mov THREAD_POS(\t), \pos
        lea 8(\pos), \next
        cmp THREAD_END(\t), \next
        ja 9f
        .endm

// The record \rec at \pos, then commit(): the thread's place moves to \next and the chunk's `used`
// covers it; clobbers \next and \scratch.
        .macro FAST_COMMIT t, rec, pos, next, scratch
        mov \rec, (\pos)
        mov \next, THREAD_POS(\t)
        mov THREAD_CHUNK(\t), \scratch
        sub \scratch, \next
        sub $CHUNK_HEADER_SIZE, \next
        mov \next, CHUNK_USED(\scratch)
        .endm

        .macro FAST_POPS
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        .endm

        .macro FAST_ENTRY slow
        cmpb $0, prepatch_fast+FAST_ON(%rip)
        je \slow
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        mov %rax, %rdi                                  // %rdi: now
        FAST_SITE
        FAST_THREAD %rax, %ecx
        cmpb $2, prepatch_fast+FAST_ON(%rip)
        je 4f
        FAST_CHUNK %rax, %rdi, %rcx, %r8, %rdx          // %rcx: the time from the chunk's base; %r8: the record's place
        FAST_FRAME
        FAST_PUSH 0, $0
        shl $REC_REST_SHIFT, %rcx                       // the entry record (rec_entry is 0)
        lea (%rcx,%rsi,4), %rcx
        lea 8(%r8), %rdx
        FAST_COMMIT %rax, %rcx, %r8, %rdx, %r11
        jmp 5f
4:      cmpl $0, THREAD_HIDDEN(%rax)                    // a duration threshold alone: admit, enter_marked
        jne 9f
        mov %rdi, %rcx                                  // %rcx: now
        FAST_FRAME
        FAST_PUSH FRAME_PENDING, %rcx
        incl THREAD_PENDING(%rax)
5:      mov %r9, (%rdi)                                 // the function returns through the exit trampoline
        FAST_POPS
        ret
9:      FAST_POPS
        .endm

// The trampolines. A site's call form enters with [%rsp] = the site's end (the return address into
// the function). They save every register the ABI lets a callee clobber and that the traced function
// may still need (arguments %rdi %rsi %rdx %rcx %r8 %r9, %rax for varargs' vector count, %r10 the
// static chain, %r11), align the stack and call prepatch_on_call(site_end, kind, sp_at_site, rbp). The C
// side is built with -mgeneral-regs-only, so no vector or x87 register needs saving; the flags are
// dead at a function's entry and after its frame setup.
//   fentry:    at the function's entry (after endbr64): [sp_at_site] is the caller's return address.
//   mcount:    after `push %rbp; mov %rsp,%rbp` (and maybe more pushes): the caller's return address
//              is at 8(%rbp), %rbp being the function's frame pointer.
//   patchable: at the entry, like fentry (-fpatchable-function-entry pads, M bytes before it untouched).
        .macro TRAMPOLINE name, kind, fast
        .globl \name
        .type \name, @function
\name:
        .if \fast
        FAST_ENTRY 8f
        .endif
8:      push %rbp
        mov %rsp, %rbp
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        mov 8(%rbp), %rdi
        mov $\kind, %esi
        lea 16(%rbp), %rdx
        mov (%rbp), %rcx                                // the function's %rbp (mcount: its frame pointer)
        and $-16, %rsp
        call prepatch_on_call
        lea -72(%rbp), %rsp
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        pop %rbp
        ret
        .size \name, . - \name
        .endm

        TRAMPOLINE prepatch_tramp_fentry, 1, 1
        TRAMPOLINE prepatch_tramp_mcount, 2, 0
        TRAMPOLINE prepatch_tramp_patchable, 3, 1

// The count tracer's trampoline, for every kind of site: the counter of the site that called is found
// in the site hash (shim/core.h site_hash_find, here in assembly) and incremented atomically. %r11 is
// free at a function's entry and right after an mcount site's frame setup (no argument, not the static
// chain, clobbered by any PLT call); %rax (varargs' vector count) and %rdx (an argument) are saved; the
// flags are dead.
        .globl prepatch_tramp_count
        .type prepatch_tramp_count, @function
prepatch_tramp_count:
        push %rax
        push %rdx
        mov 16(%rsp), %r11                              // the key: the site's end
        mov prepatch_hash(%rip), %rdx                   // the SiteHash block: mask, mult, base, used, then its slots
        mov %r11, %rax                                  // HashShape::home: (((key - base) * mult) >> 32) & mask
        sub 16(%rdx), %rax
        imul 8(%rdx), %rax
        shr $32, %rax
        and (%rdx), %rax
        shl $4, %rax
        lea 32(%rdx,%rax), %rax
1:      cmp (%rax), %r11
        jne 2f
        mov 8(%rax), %r11
        lock incq (%r11)
        pop %rdx
        pop %rax
        ret
2:      cmpq $0, (%rax)                                 // an empty slot: not a site (cannot happen)
        je 3f
        add $16, %rax
        jmp 1b
3:      pop %rdx
        pop %rax
        ret
        .size prepatch_tramp_count, . - prepatch_tramp_count

// In an object another runtime serves (shim/runtime/objects.inc): its sites call these, which jump to
// that runtime's trampolines (prepatch_forward_to, filled by it when the object enrolled) with every
// register and the stack as the site left them. `notrack`: the targets need no ENDBR under IBT.
        .macro FORWARDER name, slot
        .globl \name
        .type \name, @function
\name:
        notrack jmp *prepatch_forward_to+8*\slot(%rip)
        .size \name, . - \name
        .endm

        FORWARDER prepatch_fwd_fentry, 0
        FORWARDER prepatch_fwd_mcount, 1
        FORWARDER prepatch_fwd_patchable, 2
        FORWARDER prepatch_fwd_count, 3

// The graph tracer's exit trampoline: a traced function whose return address prepatch_on_call replaced
// returns here, with %rsp just above that address's slot (16-aligned, as at any return).
// prepatch_on_exit records the exit and gives back the real return address, which is jumped to rather
// than returned to: the function's `ret` already took this call's entry off the return stack buffer,
// and a second `ret` would take its caller's too, so every later return would be mispredicted. %r11 is
// free after a return (no value comes back in it, even under clang's preserve_most and preserve_all).
// The return value's registers are kept: %rax and %rdx (the C side never touches vector or x87
// registers, so %xmm0, %xmm1 and %st(0) are kept too); the other caller-saved registers are dead.
        .globl prepatch_tramp_exit
        .type prepatch_tramp_exit, @function
prepatch_tramp_exit:
        // The fast path (as FAST_ENTRY): the thread's top frame is the one returned through. Unmarked:
        // its exit record, in a chunk with room. Held back by the threshold alone: dropped unseen when
        // shorter (FAST_THRESHOLD is 0 unless on = 2, so a longer one, or one under other filters, goes
        // to exit_marked). %rcx %rsi %rdi %r8-%r11 are dead after a return.
        cmpb $0, prepatch_fast+FAST_ON(%rip)
        je 8f
        push %rax
        push %rdx
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        mov %rax, %r9                                   // %r9: now
        lea 8(%rsp), %rdi                               // %rdi: the slot returned through
        FAST_THREAD %rcx, %eax                          // %rcx: the thread
        mov THREAD_DEPTH(%rcx), %r8d
        test %r8d, %r8d
        jz 9f
        shl $FRAME_SHIFT, %r8
        add THREAD_FRAMES(%rcx), %r8
        sub $(1<<FRAME_SHIFT), %r8                      // %r8: the top frame
        cmp FRAME_SLOT(%r8), %rdi
        jne 9f
        mov FRAME_MARK(%r8), %eax
        test %eax, %eax
        jz 4f
        cmp $FRAME_PENDING, %eax
        jne 9f
        mov %r9, %r10
        sub FRAME_TIME(%r8), %r10
        cmp prepatch_fast+FAST_THRESHOLD(%rip), %r10
        jae 9f
        mov FRAME_RET(%r8), %r11                        // shorter than the threshold: popped unseen
        decl THREAD_DEPTH(%rcx)
        decl THREAD_PENDING(%rcx)
        jmp 5f
4:      FAST_CHUNK %rcx, %r9, %r10, %rsi, %rdx          // %r10: the time from the chunk's base; %rsi: the record's place
        mov FRAME_RET(%r8), %r11                        // popped
        mov FRAME_SITE(%r8), %eax
        decl THREAD_DEPTH(%rcx)
        shl $REC_REST_SHIFT, %r10                       // the exit record (rec_exit is 1)
        lea 1(%r10,%rax,4), %r10
        FAST_COMMIT %rcx, %r10, %rsi, %rdx, %rax
5:      pop %rdx
        pop %rax
        notrack jmp *%r11
9:      pop %rdx
        pop %rax
8:      push %rax
        push %rdx
        lea 16(%rsp), %rdi                              // the stack pointer the function returned with
        call prepatch_on_exit
        mov %rax, %r11
        pop %rdx
        pop %rax
        notrack jmp *%r11
        .size prepatch_tramp_exit, . - prepatch_tramp_exit

// The graph tracer's exception hooks, which GOT slots of the unwinder's entry points lead to
// (shim/runtime/exceptions.inc, hook_unwinder): the handler gets the caller's stack pointer, then the
// hook jumps to the real function with the argument registers as they came, so no frame of the shim is left for the
// unwinder to see. 7 pushes after the call's return address: the stack is 16-aligned for the call.
// prepatch_unwind(caller's sp, to_real): 1 where unwinding starts or resumes, 0 where a handler catches.
        .macro UNWIND_HOOK name, index, to_real
        .globl \name
        .type \name, @function
\name:
        push %rdi
        push %rsi
        push %rdx
        push %rcx
        push %r8
        push %r9
        push %rax
        lea 64(%rsp), %rdi                              // the caller's stack pointer, above the return address
        mov $\to_real, %esi
        call prepatch_unwind
        pop %rax
        pop %r9
        pop %r8
        pop %rcx
        pop %rdx
        pop %rsi
        pop %rdi
        jmp *prepatch_unwind_real+8*\index(%rip)
        .size \name, . - \name
        .endm

        UNWIND_HOOKS

// The start routine of a thread created through prepatch_hook_pthread_create, with %rdi its region
// (an alternate signal stack, the real start routine and argument at its top): sets the stack up, then
// jumps to the real start routine with its argument, returning to glibc's start_thread directly.
        .globl prepatch_thread_start
        .type prepatch_thread_start, @function
prepatch_thread_start:
        push %rdi                                       // and the stack is 16-aligned for the call
        call prepatch_thread_setup                      // %rax: {start, arg}
        pop %rdi
        mov 8(%rax), %rdi
        jmp *(%rax)
        .size prepatch_thread_start, . - prepatch_thread_start

// sa_restorer for the shim's own SIGTRAP handler: rt_sigreturn.
        .globl prepatch_restorer
        .type prepatch_restorer, @function
prepatch_restorer:
        mov $15, %eax
        syscall
        .size prepatch_restorer, . - prepatch_restorer

// The self-test: a 5-byte "site" whose first byte is an int3. The handler must emulate a call to the
// fentry trampoline with the return address 5 bytes on, where the `ret` is.
        .globl prepatch_selftest
        .type prepatch_selftest, @function
prepatch_selftest:
        .globl prepatch_selftest_site
prepatch_selftest_site:
        int3
        .byte 0x0f, 0x1f, 0x44, 0x00                    // never executed: the rest of a nop5
        ret
        .size prepatch_selftest, . - prepatch_selftest

        .section .note.GNU-stack, "", @progbits
