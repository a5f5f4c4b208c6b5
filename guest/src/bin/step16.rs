//! A small real-mode guest for `--step-trace` and single-stepping (assembly). Run with
//! `--entry real --load-addr 0x10000`. It prints "A" by port I/O, checks that PUSHF and
//! an interrupt frame never show TF (single-stepping must hide it), counts a loop down,
//! takes INT 0x30 through the IVT, prints "ok" and halts; "T" and status 1 if TF showed.
#![no_std]
#![no_main]

use yakvm_guests as _;

core::arch::global_asm!(
    ".pushsection .text.start, \"ax\"",
    ".code16",
    ".globl _start",
    "_start:",
    "    movw $0x10, %dx",
    "    movb $0x41, %al",          // 'A'
    "    outb %al, %dx",
    "    pushfw",
    "    popw %ax",
    "    testw $0x100, %ax",        // TF must not show
    "    jnz 9f",
    "    movw $3, %cx",
    "1:  decw %cx",
    "    jnz 1b",
    "    xorw %ax, %ax",            // IVT entry 0x30 -> handler (CS:handler)
    "    movw %ax, %es",
    "    movw $handler, %es:0xc0",
    "    movw %cs, %es:0xc2",
    "    int $0x30",
    "    movb $0x6f, %al",          // 'o'
    "    outb %al, %dx",
    "    movb $0x6b, %al",          // 'k'
    "    outb %al, %dx",
    "    hlt",
    "handler:",
    "    movw %sp, %bp",
    "    testw $0x100, 4(%bp)",     // FLAGS in the frame: no TF either
    "    jnz 9f",
    "    iret",
    "9:  movb $0x54, %al",          // 'T'
    "    outb %al, %dx",
    "    movw $0xf4, %dx",
    "    movb $1, %al",
    "    outb %al, %dx",
    "    hlt",
    ".code64",
    ".popsection",
    options(att_syntax),
);
