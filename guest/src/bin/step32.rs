//! A small 32-bit protected-mode guest for `--step-trace` (assembly). Run with
//! `--entry protected`. It prints "P" by port I/O and "m" by an MMIO store (the serial
//! register in the default MMIO window), checks that PUSHFD never shows TF, counts a loop
//! down and ends through the exit port with status 0 (1 if TF showed).
#![no_std]
#![no_main]

use yakvm_guests as _;

core::arch::global_asm!(
    ".pushsection .text.start, \"ax\"",
    ".code32",
    ".globl _start",
    "_start:",
    "    movw $0x10, %dx",
    "    movb $0x50, %al",          // 'P'
    "    outb %al, %dx",
    "    movl $0x6d, 0xc0000080",   // 'm' by MMIO
    "    pushfl",
    "    popl %eax",
    "    testl $0x100, %eax",
    "    jnz 9f",
    "    movl $2, %ecx",
    "1:  loop 1b",
    "    movw $0xf4, %dx",
    "    xorl %eax, %eax",
    "    outb %al, %dx",
    "9:  movw $0xf4, %dx",
    "    movb $1, %al",
    "    outb %al, %dx",
    "    hlt",
    ".code64",
    ".popsection",
    options(att_syntax),
);
