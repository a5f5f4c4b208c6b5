//! A small long-mode guest for `--step-trace` and single-stepping (assembly). It prints
//! "L" by port I/O, reads the scratch register by MMIO, checks that PUSHFQ never shows
//! TF, raises #UD (UD2) into its own IDT handler, which checks the frame's RFLAGS and
//! skips it, and halts; "T" and status 1 if TF showed.
#![no_std]
#![no_main]

use yakvm_guests as _;

core::arch::global_asm!(
    ".pushsection .text.start, \"ax\"",
    ".globl _start",
    "_start:",
    "    mov dx, 0x10",
    "    mov al, 0x4c",             // 'L'
    "    out dx, al",
    "    mov rbx, 0xc00007f8",      // scratch register 0xff by MMIO
    "    mov rcx, qword ptr [rbx]",
    "    pushfq",
    "    pop rax",
    "    test eax, 0x100",
    "    jnz 9f",
    "    lea rdi, [rip + step64_idt]",  // IDT entry 6 (#UD) -> ud_handler
    "    lea rax, [rip + step64_ud]",
    "    mov word ptr [rdi + 96], ax",
    "    mov word ptr [rdi + 98], 0x08",
    "    mov word ptr [rdi + 100], 0x8e00",
    "    shr rax, 16",
    "    mov word ptr [rdi + 102], ax",
    "    shr rax, 16",
    "    mov dword ptr [rdi + 104], eax",
    "    mov qword ptr [rip + step64_idtr + 2], rdi",
    "    lidt [rip + step64_idtr]",
    "    ud2",
    "    hlt",
    "step64_ud:",
    "    test qword ptr [rsp + 16], 0x100",   // RFLAGS in the frame
    "    jnz 9f",
    "    add qword ptr [rsp], 2",
    "    iretq",
    "9:  mov al, 0x54",             // 'T'
    "    mov dx, 0x10",
    "    out dx, al",
    "    mov dx, 0xf4",
    "    mov al, 1",
    "    out dx, al",
    "    hlt",
    ".popsection",
    ".pushsection .data",
    ".p2align 4",
    "step64_idt: .fill 14, 8, 0",
    "step64_idtr: .word 7 * 16 - 1",
    "    .quad 0",
    ".popsection",
);
