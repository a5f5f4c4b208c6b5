//! A Multiboot v1 kernel that checks what a kernel written for a PC booted by GRUB (xv6
//! first) finds on yakvm's pc machine, then writes to the VGA text screen. Run:
//!
//! ```text
//! yakvm run --kernel build/guests/pcboot.elf --vga
//! ```
//!
//! It is laid out as xv6's kernel is (`pcboot.ld`): an ELF file without the a.out kludge
//! whose first segment is linked at 0x80100000 and loaded at 0x100000, its entry point the
//! physical 0x10000c, which lies in no segment's virtual range. The entry (32-bit, paging
//! off) notes its own address, EAX, EBX, the segment selectors and EFLAGS, and jumps to
//! the second segment (linked where it is loaded, at 2 MiB), which goes to long mode and
//! calls `main`.
//!
//! `main` writes one line per check to COM1, `ok <what>` or `FAIL <what>`:
//! - the boot loader's magic; entered at 0x10000c (the physical entry); CS = 0x08 and
//!   DS = ES = FS = GS = SS = 0x10 (GRUB's selectors, which xv6's traps rely on);
//!   interrupts off; A20 on (1 MiB + x is not x);
//! - the BIOS data area: COM1 at 0x3f8, the EBDA's segment 0x9fc0, 639 KiB of base
//!   memory, the equipment word 0x0222; every real-mode vector points at an `iret`;
//! - the MP floating pointer, found by xv6's search order (`mp.c`: the EBDA's first KiB
//!   if the BDA gives an EBDA, else the last KiB of base memory; then 0xf0000-0xfffff),
//!   its checksum, and its configuration table's signature and checksum;
//! - the CRTC's cursor registers (0x0e, 0x0f) and another (0x0a) read back what was
//!   written (the cursor kept in row 0, which the `--vga` mirror shows nothing of).
//!
//! Then it clears the screen, writes three lines in three colours with the cursor moved
//! after every character (as xv6's `cgaputc`), a fourth without a newline, and ends the
//! run through port 0xf4: status 0 if every check passed. With `--vga` the three lines
//! come after the checks (the fourth is under the cursor: not shown):
//!
//! ```text
//! VGA: white on blue
//! VGA: yellow on red, then green
//! VGA: the end
//! ```
#![no_std]
#![no_main]

use core::arch::global_asm;
use yakvm_guests::{outb, pc};

const MAGIC: u32 = 0x1BAD_B002;
const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// Header flags: memory information (1). No a.out kludge: loaded as an ELF file.
const FLAGS: u32 = 1 << 1;
const CHECKSUM: u32 = 0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS));

/// What the entry saw, filled in by the 32-bit code (see the `pcb_seen` layout below).
#[repr(C)]
struct Seen {
    eax: u32,
    ebx: u32,
    /// The address `call` pushed in the entry: the entry's own physical address + 5.
    return_address: u32,
    eflags: u32,
    cs: u32,
    ds: u32,
    es: u32,
    fs: u32,
    gs: u32,
    ss: u32,
}

unsafe extern "C" {
    static pcb_seen: Seen;
}

global_asm!(
    ".pushsection .multiboot_header, \"a\"",
    ".balign 4",
    "    .long {magic}",
    "    .long {flags}",
    "    .long {checksum}",
    ".popsection",
    // At 0x8010000c by its link address, run at 0x10000c: only relative jumps and the
    // absolute address of the low segment (linked where it is loaded).
    ".pushsection .text.pcboot_entry, \"ax\"",
    ".code32",
    ".globl pcboot_entry",
    "pcboot_entry:",
    "    call 1f",
    "1:  popl %edx",
    "    movl $pcb_low, %ecx",
    "    jmp *%ecx",
    ".popsection",
    ".pushsection .bss.pcboot, \"aw\", @nobits",
    ".balign 4096",
    "pcb_pml4: .skip 4096",
    "pcb_pdpt: .skip 4096",
    "pcb_pd: .skip 4096",
    "pcb_stack: .skip 65536",
    "pcb_stack_top:",
    ".globl pcb_seen",
    "pcb_seen: .skip 40",
    ".popsection",
    ".pushsection .rodata.pcboot_gdt, \"a\"",
    ".balign 8",
    "pcb_gdt:",
    "    .quad 0",
    "    .quad 0x00af9b000000ffff",
    "    .quad 0x00cf93000000ffff",
    "pcb_gdt_end:",
    "pcb_gdtr:",
    "    .word pcb_gdt_end - pcb_gdt - 1",
    "    .long pcb_gdt",
    ".popsection",
    ".pushsection .text.pcboot_low, \"ax\"",
    ".code32",
    "pcb_low:",
    "    movl %eax, pcb_seen",
    "    movl %ebx, pcb_seen + 4",
    "    movl %edx, pcb_seen + 8",
    "    movl $pcb_stack_top, %esp",
    "    pushfl",
    "    popl pcb_seen + 12",
    "    movl %cs, %eax",
    "    movl %eax, pcb_seen + 16",
    "    movl %ds, %eax",
    "    movl %eax, pcb_seen + 20",
    "    movl %es, %eax",
    "    movl %eax, pcb_seen + 24",
    "    movl %fs, %eax",
    "    movl %eax, pcb_seen + 28",
    "    movl %gs, %eax",
    "    movl %eax, pcb_seen + 32",
    "    movl %ss, %eax",
    "    movl %eax, pcb_seen + 36",
    "    cli",
    "    cld",
    // Identity-map the first GiB with 2 MiB pages; PAE, long mode, paging.
    "    movl $(pcb_pdpt + 3), pcb_pml4",
    "    movl $(pcb_pd + 3), pcb_pdpt",
    "    movl $pcb_pd, %ebx",
    "    movl $0x83, %eax",
    "    movl $512, %ecx",
    "2:  movl %eax, (%ebx)",
    "    movl $0, 4(%ebx)",
    "    addl $0x200000, %eax",
    "    addl $8, %ebx",
    "    loop 2b",
    "    movl $pcb_pml4, %eax",
    "    movl %eax, %cr3",
    "    movl %cr4, %eax",
    "    orl $0x620, %eax",
    "    movl %eax, %cr4",
    "    movl $0xc0000080, %ecx",
    "    rdmsr",
    "    orl $0x100, %eax",
    "    wrmsr",
    "    movl %cr0, %eax",
    "    andl $0xfffffff3, %eax",
    "    orl $0x80000022, %eax",
    "    movl %eax, %cr0",
    "    lgdt pcb_gdtr",
    "    ljmp $0x08, $pcb_long_mode",
    ".code64",
    "pcb_long_mode:",
    "    movl $0x10, %eax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    "    movw %ax, %fs",
    "    movw %ax, %gs",
    "    movl $pcb_stack_top, %esp",
    "    call {main}",
    "    ud2",
    ".popsection",
    magic = const MAGIC,
    flags = const FLAGS,
    checksum = const CHECKSUM,
    main = sym main,
    options(att_syntax),
);

/// The entry's physical address (`pcboot.ld` checks it), and what `call` pushes there.
const ENTRY: u32 = 0x10_000c;
const CALL_LEN: u32 = 5;
const RFLAGS_IF: u32 = 1 << 9;

fn read8(addr: u64) -> u8 {
    // SAFETY: the first GiB is identity-mapped; the callers read the PC's low memory and
    // BIOS area, which are RAM on yakvm's pc machine.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn read16(addr: u64) -> u16 {
    u16::from_le_bytes([read8(addr), read8(addr + 1)])
}

fn write8(addr: u64, value: u8) {
    // SAFETY: identity-mapped RAM that nothing else uses (A20 scratch bytes, the screen).
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

fn sum(addr: u64, len: u64) -> u8 {
    (addr..addr + len).fold(0u8, |s, a| s.wrapping_add(read8(a)))
}

/// xv6's `mpsearch1`: a "_MP_" with a zero checksum at a 16-byte step in `[a, a + len)`.
fn mpsearch1(a: u64, len: u64) -> Option<u64> {
    (a..a + len).step_by(16).find(|&p| read8(p) == b'_' && read8(p + 1) == b'M' && read8(p + 2) == b'P' && read8(p + 3) == b'_' && sum(p, 16) == 0)
}

/// xv6's `mpsearch`, step by step.
fn mpsearch() -> Option<u64> {
    let ebda = u64::from(read16(0x40e)) << 4;
    let found = if ebda != 0 {
        mpsearch1(ebda, 1024)
    } else {
        let base = u64::from(read16(0x413)) * 1024;
        mpsearch1(base.checked_sub(1024)?, 1024)
    };
    found.or_else(|| mpsearch1(0xf_0000, 0x1_0000))
}

struct Report {
    failed: bool,
}

impl Report {
    fn check(&mut self, ok: bool, what: &str) {
        pc::print(if ok { "ok " } else { "FAIL " });
        pc::print(what);
        pc::print("\n");
        self.failed |= !ok;
    }

    fn check_eq(&mut self, what: &str, got: u64, want: u64) {
        pc::print(if got == want { "ok " } else { "FAIL " });
        pc::print(what);
        pc::print(" ");
        pc::print_u64(got);
        if got != want {
            pc::print(" (expected ");
            pc::print_u64(want);
            pc::print(")");
        }
        pc::print("\n");
        self.failed |= got != want;
    }
}

const CRTC_INDEX: u16 = 0x3d4;
const CRTC_DATA: u16 = 0x3d5;

fn crtc_write(register: u8, value: u8) {
    outb(CRTC_INDEX, register);
    outb(CRTC_DATA, value);
}

fn crtc_read(register: u8) -> u8 {
    outb(CRTC_INDEX, register);
    pc::inb(CRTC_DATA)
}

/// The text screen, written as xv6's `cgaputc` writes it.
struct Screen {
    pos: u64,
}

const TEXT: u64 = 0xb_8000;
const COLUMNS: u64 = 80;
const ROWS: u64 = 25;

impl Screen {
    fn clear(&mut self) {
        for cell in 0..COLUMNS * ROWS {
            write8(TEXT + cell * 2, b' ');
            write8(TEXT + cell * 2 + 1, 0x07);
        }
        self.pos = 0;
        self.cursor();
    }

    fn cursor(&self) {
        crtc_write(0x0e, (self.pos >> 8) as u8);
        crtc_write(0x0f, self.pos as u8);
    }

    fn put(&mut self, text: &str, attribute: u8) {
        for c in text.bytes() {
            if c == b'\n' {
                self.pos += COLUMNS - self.pos % COLUMNS;
            } else {
                write8(TEXT + self.pos * 2, c);
                write8(TEXT + self.pos * 2 + 1, attribute);
                self.pos += 1;
            }
            self.cursor();
        }
    }
}

extern "C" fn main() -> ! {
    pc::install();
    pc::uart_init(0, pc::MCR_DTR_RTS);
    let mut r = Report { failed: false };
    // SAFETY: written once by the entry code before `main`, only read from here on.
    let seen = unsafe { &pcb_seen };

    r.check(seen.eax == BOOTLOADER_MAGIC, "magic");
    r.check(seen.return_address == ENTRY + CALL_LEN, "entered at the ELF entry 0x10000c as a physical address");
    r.check_eq("CS", seen.cs.into(), 0x08);
    let data = [seen.ds, seen.es, seen.fs, seen.gs, seen.ss];
    r.check(data.iter().all(|&s| s == 0x10), "DS ES FS GS SS 0x10");
    r.check(seen.eflags & RFLAGS_IF == 0, "interrupts off");
    write8(0x08_0000, 0x5a);
    write8(0x18_0000, 0xa5);
    r.check(read8(0x08_0000) == 0x5a && read8(0x18_0000) == 0xa5, "A20 on");

    r.check_eq("BDA COM1", read16(0x400).into(), 0x3f8);
    r.check_eq("BDA EBDA segment", read16(0x40e).into(), 0x9fc0);
    r.check_eq("BDA base memory KiB", read16(0x413).into(), 639);
    r.check_eq("BDA equipment word", read16(0x410).into(), 0x0222);
    let to_iret = (0..256u64).all(|v| {
        let (offset, segment) = (u64::from(read16(v * 4)), u64::from(read16(v * 4 + 2)));
        read8((segment << 4) + offset) == 0xcf
    });
    r.check(to_iret, "every real-mode vector points at an iret");

    match mpsearch() {
        Some(mp) => {
            r.check_eq("MP floating pointer found by xv6's search at", mp, 0xf_0000);
            let conf = u64::from(read16(mp + 4)) | u64::from(read16(mp + 6)) << 16;
            let ok = read8(conf) == b'P' && read8(conf + 1) == b'C' && read8(conf + 2) == b'M' && read8(conf + 3) == b'P';
            r.check(ok && sum(conf, read16(conf + 4).into()) == 0, "MP configuration table PCMP, checksum");
        }
        None => r.check(false, "MP floating pointer found by xv6's search"),
    }

    // The cursor's high byte alone (the screen is read at low-byte writes: a cursor in
    // row 24 would have rows 0-23 shown), then the whole cursor within row 0.
    crtc_write(0x0e, 0x07);
    r.check_eq("CRTC cursor high byte reads back", crtc_read(0x0e).into(), 0x07);
    crtc_write(0x0e, 0x00);
    crtc_write(0x0f, 0x4f);
    crtc_write(0x0a, 0x0d);
    r.check_eq("CRTC cursor reads back", u64::from(crtc_read(0x0e)) << 8 | u64::from(crtc_read(0x0f)), 0x004f);
    r.check_eq("CRTC register 0x0a reads back", crtc_read(0x0a).into(), 0x0d);

    let mut screen = Screen { pos: 0 };
    screen.clear();
    screen.put("VGA: white on blue\n", 0x1f);
    screen.put("VGA: yellow on red, ", 0x4e);
    screen.put("then green\n", 0x02);
    screen.put("VGA: the end\n", 0x07);
    screen.put("under the cursor", 0x07);

    while pc::inb(pc::COM1 + pc::LSR) & pc::LSR_TEMT == 0 {
        core::hint::spin_loop();
    }
    yakvm_guests::exit(u8::from(r.failed))
}
