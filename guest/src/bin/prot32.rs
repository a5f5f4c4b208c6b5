//! A 32-bit protected-mode guest (assembly). Run with `--entry protected` at load address
//! 0: flat segments, paging off. It checks CR0 (PE set, PG clear), reloads its segments
//! from the emulator's GDT, checks the stack, a 32-bit
//! MMIO store to the serial port at the default MMIO window, then exits with status 0.
#![no_std]
#![no_main]

use yakvm_guests as _;

core::arch::global_asm!(
    ".pushsection .text.start, \"ax\"",
    ".code32",
    ".globl _start",
    "_start:",
    "    movl %cr0, %eax",
    "    andl $0x80000001, %eax",   // PE set, PG clear
    "    cmpl $1, %eax",
    "    jne 9f",
    "    movw $0x10, %ax",          // reload DS and SS from the emulator's GDT
    "    movw %ax, %ds",
    "    movw %ax, %ss",
    "    ljmp $0x18, $5f",          // and CS (32-bit code)
    "5:  pushl $0x89abcdef",
    "    popl %ebx",
    "    cmpl $0x89abcdef, %ebx",
    "    jne 9f",
    "    movl $ok_msg, %esi",
    "    movw $0x10, %dx",
    "1:  lodsb",
    "    testb %al, %al",
    "    jz 2f",
    "    outb %al, %dx",
    "    jmp 1b",
    // MMIO in 32-bit code: 4 bytes to the serial register at 0xc0000000 + 0x10 * 8.
    "2:  movl $0x0a6f696d, 0xc0000080",   // "mio\n"
    "    movw $0xf4, %dx",
    "    xorl %eax, %eax",
    "    outb %al, %dx",
    "9:  movl $bad_msg, %esi",
    "    movw $0x10, %dx",
    "3:  lodsb",
    "    testb %al, %al",
    "    jz 4f",
    "    outb %al, %dx",
    "    jmp 3b",
    "4:  movw $0xf4, %dx",
    "    movb $1, %al",
    "    outb %al, %dx",
    "    hlt",
    "ok_msg: .asciz \"protected mode ok, m\"",
    "bad_msg: .asciz \"protected mode FAIL\\n\"",
    ".code64",
    ".popsection",
    options(att_syntax),
);
