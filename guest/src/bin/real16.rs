//! A 16-bit real-mode guest (assembly: Rust does not emit 16-bit code). Run with
//! `--entry real --load-addr 0x10000`: every segment is based at the load address, so the
//! link-time offsets below are segment offsets. It checks CR0.PE is clear, that the stack
//! works, and prints through the serial port; HLT ends it.
#![no_std]
#![no_main]

use yakvm_guests as _;

core::arch::global_asm!(
    ".pushsection .text.start, \"ax\"",
    ".code16",
    ".globl _start",
    "_start:",
    "    smsw %ax",
    "    testb $1, %al",            // CR0.PE must be clear
    "    jnz 9f",
    "    movw $0x1234, %ax",
    "    pushw %ax",
    "    popw %bx",
    "    cmpw $0x1234, %bx",
    "    jne 9f",
    "    movw %cs, %ax",            // CS = load address / 16
    "    movw %ax, %cx",
    "    movw $ok_msg, %si",
    "    call print",
    "    movw $0x10, %dx",          // CS in hex, 4 digits, to show the segment
    "    movw $4, %di",
    "1:  rolw $4, %cx",
    "    movb %cl, %al",
    "    andb $0xf, %al",
    "    addb $0x30, %al",
    "    cmpb $0x39, %al",
    "    jbe 2f",
    "    addb $7, %al",
    "2:  outb %al, %dx",
    "    decw %di",
    "    jnz 1b",
    "    movb $0x0a, %al",
    "    outb %al, %dx",
    "    hlt",
    "9:  movw $bad_msg, %si",
    "    call print",
    "    movw $0xf4, %dx",
    "    movb $1, %al",
    "    outb %al, %dx",
    "    hlt",
    // print: the NUL-terminated string at DS:SI to port 0x10.
    "print:",
    "    movw $0x10, %dx",
    "3:  lodsb",
    "    testb %al, %al",
    "    jz 4f",
    "    outb %al, %dx",
    "    jmp 3b",
    "4:  ret",
    "ok_msg: .asciz \"real mode ok, cs=\"",
    "bad_msg: .asciz \"real mode FAIL\\n\"",
    ".code64",
    ".popsection",
    options(att_syntax),
);
