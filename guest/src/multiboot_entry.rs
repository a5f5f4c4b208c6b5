//! The entry shared by our Multiboot 1 and 2 test kernels (`guests/multiboot.elf`,
//! `guests/multiboot2.elf`): from the 32-bit protected mode a Multiboot loader leaves
//! (paging off, EAX = magic, EBX = information) to 64-bit mode on an identity map of the
//! first GiB, then a call of the kernel's `start(info: u32, eax: u32)`. Each kernel keeps
//! its own header; the header's entry address is `multiboot_entry`.

/// Emits the entry `multiboot_entry`, its page tables, stack and GDT, calling `$start`
/// (an `extern "C" fn(u32, u32) -> !`) in 64-bit mode with EBX and EAX as the loader left
/// them. Once per kernel.
#[macro_export]
macro_rules! multiboot_long_mode_entry {
    ($start:path) => {
        ::core::arch::global_asm!(
            // Page tables and the stack, zeroed by the boot loader (bss).
            ".pushsection .bss.multiboot, \"aw\", @nobits",
            ".balign 4096",
            "mb_pml4: .skip 4096",
            "mb_pdpt: .skip 4096",
            "mb_pd: .skip 4096",
            "mb_stack: .skip 65536",
            "mb_stack_top:",
            ".popsection",
            // The GDT: null, 64-bit code (0x08), data (0x10); the operand of LGDT in 32-bit mode.
            ".pushsection .rodata.multiboot_gdt, \"a\"",
            ".balign 8",
            "mb_gdt:",
            "    .quad 0",
            "    .quad 0x00af9b000000ffff",
            "    .quad 0x00cf93000000ffff",
            "mb_gdt_end:",
            "mb_gdtr:",
            "    .word mb_gdt_end - mb_gdt - 1",
            "    .long mb_gdt",
            ".popsection",
            // The entry: 32-bit protected mode, paging off, EAX = magic, EBX = information. ESI
            // and EDI keep EAX and EBX: nothing below changes them, nor does the mode switch.
            ".pushsection .text.multiboot_entry, \"ax\"",
            ".code32",
            ".globl multiboot_entry",
            "multiboot_entry:",
            "    cli",
            "    cld",
            "    movl %eax, %esi",
            "    movl %ebx, %edi",
            "    movl $mb_stack_top, %esp",
            // PML4[0] -> PDPT, PDPT[0] -> PD (present, writable); the rest is zero (bss).
            "    movl $(mb_pdpt + 3), mb_pml4",
            "    movl $(mb_pd + 3), mb_pdpt",
            // PD: 512 entries of 2 MiB (present, writable, large page): the first GiB.
            "    movl $mb_pd, %ebx",
            "    movl $0x83, %eax",
            "    movl $512, %ecx",
            "1:  movl %eax, (%ebx)",
            "    movl $0, 4(%ebx)",
            "    addl $0x200000, %eax",
            "    addl $8, %ebx",
            "    loop 1b",
            "    movl $mb_pml4, %eax",
            "    movl %eax, %cr3",
            // CR4: PAE, and OSFXSR and OSXMMEXCPT for the SSE code the compiler emits.
            "    movl %cr4, %eax",
            "    orl $0x620, %eax",
            "    movl %eax, %cr4",
            // EFER.LME.
            "    movl $0xc0000080, %ecx",
            "    rdmsr",
            "    orl $0x100, %eax",
            "    wrmsr",
            // CR0: paging on (long mode becomes active), MP and NE set, EM and TS clear.
            "    movl %cr0, %eax",
            "    andl $0xfffffff3, %eax",
            "    orl $0x80000022, %eax",
            "    movl %eax, %cr0",
            "    lgdt mb_gdtr",
            "    ljmp $0x08, $mb_long_mode",
            ".code64",
            "mb_long_mode:",
            "    movl $0x10, %eax",
            "    movw %ax, %ds",
            "    movw %ax, %es",
            "    movw %ax, %ss",
            "    movw %ax, %fs",
            "    movw %ax, %gs",
            "    movl $mb_stack_top, %esp", // zero-extended into RSP; 16-byte aligned
            "    movl %edi, %edi",          // the upper halves are undefined after the switch
            "    movl %esi, %esi",
            "    call {start}",
            "    ud2",
            ".popsection",
            start = sym $start,
            options(att_syntax),
        );
    };
}
