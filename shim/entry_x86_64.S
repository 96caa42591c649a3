// The shim's assembly: the blob header, the start routine e_entry points at, the trampolines the
// sites' call forms target, the signal restorer and the self-test breakpoint. x86-64, System V ABI.
// Offsets in the header are from __shim_base (the header itself); see shim/abi.h, BlobHeader.

#include "shim/header.inc"
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
        .macro TRAMPOLINE name, kind
        .globl \name
        .type \name, @function
\name:
        push %rbp
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

        TRAMPOLINE prepatch_tramp_fentry, 1
        TRAMPOLINE prepatch_tramp_mcount, 2
        TRAMPOLINE prepatch_tramp_patchable, 3

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
        movabs $0x9E3779B97F4A7C15, %rax                // site_hash_home: ((key * mult) >> 32) & mask
        imul %r11, %rax
        shr $32, %rax
        mov prepatch_hash(%rip), %rdx                   // the SiteHash block: its mask, then its slots
        and (%rdx), %rax
        shl $4, %rax
        lea 16(%rdx,%rax), %rax
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
        push %rax
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

        UNWIND_HOOK prepatch_hook_raise, 0, 1
        UNWIND_HOOK prepatch_hook_resume, 1, 1
        UNWIND_HOOK prepatch_hook_rethrow, 2, 1
        UNWIND_HOOK prepatch_hook_catch, 3, 0

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
