//! A Multiboot 2 kernel that checks the information structure yakvm's loader gives it
//! (Multiboot 2.0). Run, with a module file whose contents start with `MODULE-ONE`:
//!
//! ```text
//! printf 'MODULE-ONE\n' > m1.bin
//! yakvm run --mem 32M --kernel build/guests/multiboot2.elf --append "answer=42" --module m1.bin,"first arg1"
//! ```
//!
//! An x86_64 ELF file linked at 1 MiB (`multiboot.ld`, as the Multiboot 1 test kernel),
//! loaded by its program headers (no address tag). Its header asks, through an
//! information request, for the command line, the memory map, the framebuffer and the
//! new ACPI RSDP, and through a framebuffer tag for text mode. The 32-bit entry goes to
//! long mode as the Multiboot 1 kernel's does and calls `main` with EBX and EAX.
//!
//! `main` walks the tags (8-byte aligned, to the end tag within `total_size`) and prints
//! one line per check, `ok ...` or `FAIL ...`, and `cmdline <...>`: the magic; the
//! structure 8-byte aligned and clear of the kernel; the command line; the boot loader
//! name `yakvm`; one module, `first arg1`, starting with `MODULE-ONE`, page-aligned;
//! basic memory information (639 KiB low); the memory map (entry size 24, version 0, six
//! entries, the first available `[0, 0x9fc00)`); the framebuffer (EGA text, 0xb8000,
//! 80×25, pitch 160, 16 bits); the old and new RSDP tags holding copies of the RSDP the
//! machine has at 0xe0000 (`RSD PTR `, revision 2); the end tag. Exit status 0 if all
//! passed (12 `ok` lines).
#![no_std]
#![no_main]

use core::arch::global_asm;
use yakvm_guests::pc;

const MAGIC: u32 = 0xE852_50D6;
const BOOTLOADER_MAGIC: u32 = 0x36D7_6289;
const HEADER_LEN: u32 = 16 + 24 + 24 + 8;
const CHECKSUM: u32 = 0u32.wrapping_sub(MAGIC.wrapping_add(HEADER_LEN));

unsafe extern "C" {
    static __multiboot_load_start: u8;
    static __multiboot_bss_end: u8;
}

global_asm!(
    ".pushsection .multiboot_header, \"a\"",
    ".balign 8",
    "mb_header:",
    "    .long {magic}",
    "    .long 0",                 // architecture: i386
    "    .long {length}",
    "    .long {checksum}",
    // Information request: command line, memory map, framebuffer, new RSDP (24 bytes).
    "    .short 1, 0",
    "    .long 24",
    "    .long 1, 6, 8, 15",
    // Framebuffer: text mode (depth 0), 80x25 (24 bytes with padding).
    "    .short 5, 0",
    "    .long 20",
    "    .long 80, 25, 0",
    "    .long 0",
    // End.
    "    .short 0, 0",
    "    .long 8",
    ".popsection",
    magic = const MAGIC,
    length = const HEADER_LEN,
    checksum = const CHECKSUM,
    options(att_syntax),
);
yakvm_guests::multiboot_long_mode_entry!(start);

extern "C" fn start(info: u32, eax: u32) -> ! {
    main(u64::from(info), eax)
}

fn read8(addr: u64) -> u8 {
    // SAFETY: the first GiB is identity-mapped; the addresses are those the boot loader
    // gives (the structure, the module, the RSDP), in RAM.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn read32(addr: u64) -> u32 {
    u32::from_le_bytes([read8(addr), read8(addr + 1), read8(addr + 2), read8(addr + 3)])
}

fn read64(addr: u64) -> u64 {
    u64::from(read32(addr)) | u64::from(read32(addr + 4)) << 32
}

/// Whether the bytes at `addr` are `want`.
fn bytes_are(addr: u64, want: &[u8]) -> bool {
    want.iter().enumerate().all(|(i, &b)| read8(addr + i as u64) == b)
}

/// Whether `len` bytes at `a` and at `b` are the same.
fn same_bytes(a: u64, b: u64, len: u64) -> bool {
    (0..len).all(|i| read8(a + i) == read8(b + i))
}

struct Report {
    failed: bool,
    oks: u32,
}

impl Report {
    fn check(&mut self, ok: bool, what: &str) {
        pc::print(if ok { "ok " } else { "FAIL " });
        pc::print(what);
        pc::print("\n");
        self.failed |= !ok;
        self.oks += u32::from(ok);
    }
}

const ACPI_RSDP: u64 = 0xe_0000;

fn main(info: u64, eax: u32) -> ! {
    pc::install();
    pc::uart_init(0, pc::MCR_DTR_RTS);
    let mut r = Report { failed: false, oks: 0 };
    r.check(eax == BOOTLOADER_MAGIC, "magic 0x36d76289");
    let (kernel_start, kernel_end) = ((&raw const __multiboot_load_start) as u64, (&raw const __multiboot_bss_end) as u64);
    let total = u64::from(read32(info));
    r.check(info % 8 == 0 && info != 0 && (info >= kernel_end || info + total <= kernel_start), "structure 8-byte aligned, clear of the kernel");

    let mut at = info + 8;
    let mut seen = [false; 16];
    let mut ended = false;
    while at + 8 <= info + total {
        let (kind, size) = (read32(at), u64::from(read32(at + 4)));
        let body = at + 8;
        if let Some(s) = seen.get_mut(kind as usize) {
            *s = true;
        }
        match kind {
            0 => {
                ended = size == 8 && at + 8 == info + total;
                break;
            }
            1 => {
                pc::print("cmdline ");
                let mut p = body;
                while read8(p) != 0 && p < body + size {
                    pc::putc(read8(p));
                    p += 1;
                }
                pc::print("\n");
            }
            2 => r.check(bytes_are(body, b"yakvm\0"), "boot loader name yakvm"),
            3 => {
                let (start, end) = (u64::from(read32(body)), u64::from(read32(body + 4)));
                r.check(bytes_are(body + 8, b"first arg1\0"), "module string \"first arg1\"");
                r.check(start % 4096 == 0 && end > start + 10 && bytes_are(start, b"MODULE-ONE"), "module page-aligned, contents MODULE-ONE");
            }
            4 => r.check(read32(body) == 639, "basic memory information: mem_lower 639"),
            6 => {
                let entries = (size - 16) / 24;
                let first = body + 8;
                let ok = read32(body) == 24 && read32(body + 4) == 0 && entries == 6
                    && read64(first) == 0 && read64(first + 8) == 0x9_fc00 && read32(first + 16) == 1;
                r.check(ok, "memory map: entry size 24, version 0, 6 entries, [0, 0x9fc00) available");
            }
            8 => {
                let ok = read64(body) == 0xb_8000 && read32(body + 8) == 160 && read32(body + 12) == 80
                    && read32(body + 16) == 25 && read8(body + 20) == 16 && read8(body + 21) == 2;
                r.check(ok, "framebuffer: EGA text at 0xb8000, 80x25, pitch 160");
            }
            14 => r.check(size == 8 + 20 && same_bytes(body, ACPI_RSDP, 20), "old RSDP: the machine's first 20 bytes"),
            15 => r.check(
                size == 8 + 36 && bytes_are(body, b"RSD PTR ") && read8(body + 15) == 2 && same_bytes(body, ACPI_RSDP, 36),
                "new RSDP: a copy of the machine's (revision 2)",
            ),
            _ => {}
        }
        at += size.next_multiple_of(8);
    }
    r.check(ended, "end tag last, at total_size");
    let all = [1, 2, 3, 4, 6, 8, 14, 15].iter().all(|&k| seen[k]);
    r.check(all, "tags 1 2 3 4 6 8 14 15 present");
    while pc::inb(pc::COM1 + pc::LSR) & pc::LSR_TEMT == 0 {
        core::hint::spin_loop();
    }
    yakvm_guests::exit(u8::from(r.failed || r.oks != 12))
}
