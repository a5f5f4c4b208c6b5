//! A Multiboot v1 kernel that checks what yakvm's Multiboot loader gives it against the
//! specification (0.6.96) and the command line it is run with. Run, with two module
//! files whose contents start with `MODULE-ONE` and `MODULE-TWO`:
//!
//! ```text
//! printf 'MODULE-ONE\n' > m1.bin; printf 'MODULE-TWO\n' > m2.bin
//! yakvm run --machine pc --mem 32M --kernel build/guests/multiboot.elf --append "mem=32M answer=42" --module m1.bin,"first arg1" --module m2.bin,second
//! ```
//!
//! It is an x86_64 ELF file linked at 1 MiB (`multiboot.ld`) whose Multiboot header sets
//! flag 0 (modules page-aligned), flag 1 (memory information) and flag 16 (the a.out
//! kludge: the header says where the file goes, as GRUB wants for anything but a 32-bit
//! ELF file). The entry, `multiboot_entry`, is 32-bit code: it keeps EAX and EBX, builds
//! page tables identity-mapping the first GiB with 2 MiB pages, enables PAE, long mode
//! (EFER.LME) and paging, loads a GDT with a 64-bit code segment, jumps to it, sets up
//! its stack and calls `main` with EBX (the information structure) and whether EAX was
//! the boot loader's magic.
//!
//! `main` writes to COM1 (polling) one line per check, `ok <what>` or `FAIL <what>`, and
//! some information lines (`cmdline <...>`, `mmap <base> <length> <type>`); then it ends
//! the run through port 0xf4: status 0 if every check passed, 1 otherwise. The checks:
//! EAX; the information flags 0, 2, 3, 6 and 9; `mem_lower` = 639; the command line's
//! `mem=` (K, M or G suffix) against `mem_upper` = (mem - 1 MiB - 64 KiB) / 1 KiB (the
//! top 64 KiB are the emulator's) and against the memory map (yakvm's six entries:
//! available `[0, 0x9fc00)`, reserved `[0x9fc00, 0xa0000)` and `[0xf0000, 1 MiB)`,
//! available `[1 MiB, mem - 64 KiB)`, reserved `[mem - 64 KiB, mem)` and PCI's ECAM
//! `[0xe0000000, +1 MiB)`, each of `size` 20;
//! the available ones add up to 639 KiB + mem - 1 MiB - 64 KiB); the boot loader name
//! `yakvm`; two modules, `first arg1` starting with `MODULE-ONE` and `second` starting
//! with `MODULE-TWO`, page-aligned and clear of the kernel and of each other. With the
//! command above, it prints:
//!
//! ```text
//! ok magic
//! ok info flag 0 (mem_lower, mem_upper)
//! ok info flag 2 (cmdline)
//! ok info flag 3 (mods)
//! ok info flag 6 (mmap)
//! ok info flag 9 (boot_loader_name)
//! ok info clear of the kernel
//! ok mem_lower 639
//! cmdline mem=32M answer=42
//! ok cmdline gives mem=33554432
//! ok mem_upper 31680
//! mmap 0x0 0x9fc00 1
//! mmap 0x9fc00 0x400 2
//! mmap 0xf0000 0x10000 2
//! mmap 0x100000 0x1ef0000 1
//! mmap 0x1ff0000 0x10000 2
//! mmap 0xe0000000 0x100000 2
//! ok mmap entries as yakvm lays them out
//! ok mmap available bytes 33094656
//! ok boot_loader_name yakvm
//! ok mods_count 2
//! ok module 0 string "first arg1"
//! ok module 0 contents start with MODULE-ONE
//! ok module 1 string "second"
//! ok module 1 contents start with MODULE-TWO
//! ok modules page-aligned
//! ok modules clear of the kernel and of each other
//! ```
#![no_std]
#![no_main]

use core::arch::global_asm;
use yakvm_guests::pc;

/// The header's magic value, and EAX at entry.
const MAGIC: u32 = 0x1BAD_B002;
const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// Header flags: modules page-aligned (0), memory information (1), a.out kludge (16).
const FLAGS: u32 = 1 << 0 | 1 << 1 | 1 << 16;
const CHECKSUM: u32 = 0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS));

// The kernel's extent, from `multiboot.ld`.
unsafe extern "C" {
    static __multiboot_load_start: u8;
    static __multiboot_bss_end: u8;
}

global_asm!(
    // The header: magic, flags, checksum, then the a.out kludge's addresses.
    ".pushsection .multiboot_header, \"a\"",
    ".balign 4",
    "mb_header:",
    "    .long {magic}",
    "    .long {flags}",
    "    .long {checksum}",
    "    .long mb_header",              // header_addr
    "    .long __multiboot_load_start", // load_addr
    "    .long __multiboot_load_end",   // load_end_addr
    "    .long __multiboot_bss_end",    // bss_end_addr
    "    .long multiboot_entry",        // entry_addr
    ".popsection",
    magic = const MAGIC,
    flags = const FLAGS,
    checksum = const CHECKSUM,
    options(att_syntax),
);
yakvm_guests::multiboot_long_mode_entry!(start);

/// Called by the entry in 64-bit mode with EBX and EAX as the boot loader left them.
extern "C" fn start(info: u32, eax: u32) -> ! {
    main(info, eax == BOOTLOADER_MAGIC, eax)
}

// The information structure's fields, its flags, and the entries it points to.
const I_FLAGS: u32 = 0;
const I_MEM_LOWER: u32 = 4;
const I_MEM_UPPER: u32 = 8;
const I_CMDLINE: u32 = 16;
const I_MODS_COUNT: u32 = 20;
const I_MODS_ADDR: u32 = 24;
const I_MMAP_LENGTH: u32 = 44;
const I_MMAP_ADDR: u32 = 48;
const I_BOOT_LOADER_NAME: u32 = 64;
const INFO_LEN: u64 = 88;
const MOD_START: u32 = 0;
const MOD_END: u32 = 4;
const MOD_STRING: u32 = 8;
const MOD_ENTRY_LEN: u32 = 16;
const MMAP_AVAILABLE: u32 = 1;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The emulator's part of the top of RAM.
const EMULATOR_TOP: u64 = 64 * KIB;
/// Longest string read from the structure.
const MAX_STRING: usize = 4096;
/// PCI's ECAM window, reserved in the memory map (yakvm's `layout::PCI_ECAM_BASE`).
const PCI_ECAM: u64 = 0xe000_0000;
/// Most memory map entries looked at.
const MAX_MMAP_ENTRIES: usize = 32;

/// Reads a 32-bit value at a physical address (identity-mapped).
fn read32(addr: u64) -> u32 {
    // SAFETY: the first GiB is identity-mapped and the callers read what the boot loader
    // describes, in RAM; unaligned reads are allowed, in case it does not align them.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

fn read64(addr: u64) -> u64 {
    u64::from(read32(addr)) | u64::from(read32(addr + 4)) << 32
}

/// The NUL-terminated string at `addr` (at most `MAX_STRING` bytes of it).
fn cstr(addr: u32) -> &'static [u8] {
    if addr == 0 {
        return &[];
    }
    let start = u64::from(addr);
    let mut len = 0;
    while len < MAX_STRING && read_byte(start + len as u64) != 0 {
        len += 1;
    }
    // SAFETY: these `len` bytes were just read at the identity-mapped `addr`; nothing
    // writes them while the kernel runs.
    unsafe { core::slice::from_raw_parts(start as *const u8, len) }
}

fn read_byte(addr: u64) -> u8 {
    // SAFETY: as for `read32`.
    unsafe { core::ptr::read(addr as *const u8) }
}

/// Prints `n` in hexadecimal, with 0x.
fn print_hex(n: u64) {
    pc::print("0x");
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        pc::putc(b"0123456789abcdef"[(n >> (i * 4)) as usize & 0xf]);
    }
}

/// Byte-wise equality (slice `==` would call `bcmp`, which freestanding guests lack).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn print_bytes(bytes: &[u8]) {
    bytes.iter().copied().for_each(pc::putc);
}

/// The check lines, and whether all passed.
struct Report {
    failed: bool,
}

impl Report {
    /// Starts a line: `ok ` or `FAIL `, then the caller's words and `end`.
    fn start(&mut self, ok: bool) {
        pc::print(if ok { "ok " } else { "FAIL " });
        self.failed |= !ok;
    }

    fn check(&mut self, ok: bool, what: &str) {
        self.start(ok);
        pc::print(what);
        pc::print("\n");
    }

    /// `ok <what> <got>`, or `FAIL <what> <got> (expected <want>)`.
    fn check_eq(&mut self, what: &str, got: u64, want: u64) {
        self.start(got == want);
        pc::print(what);
        pc::print(" ");
        pc::print_u64(got);
        if got != want {
            pc::print(" (expected ");
            pc::print_u64(want);
            pc::print(")");
        }
        pc::print("\n");
    }

    /// Ends the run: status 0 if all passed, 1 otherwise.
    fn finish(&self) -> ! {
        while pc::inb(pc::COM1 + pc::LSR) & pc::LSR_TEMT == 0 {
            core::hint::spin_loop();
        }
        yakvm_guests::exit(u8::from(self.failed))
    }
}

/// `mem=N[K|M|G]` in the command line, in bytes.
fn mem_from_cmdline(cmdline: &[u8]) -> Option<u64> {
    let value = cmdline.split(|&b| b == b' ').find_map(|word| word.strip_prefix(b"mem="))?;
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &value[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let shift = match &value[digits..] {
        b"" => 0,
        b"K" | b"k" => 10,
        b"M" | b"m" => 20,
        b"G" | b"g" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// Whether `[a, a + a_len)` and `[b, b + b_len)` overlap.
fn overlap(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b + b_len && b < a + a_len
}

fn main(info: u32, magic_ok: bool, eax: u32) -> ! {
    pc::install();
    pc::uart_init(0, pc::MCR_DTR_RTS);
    let mut r = Report { failed: false };
    if !magic_ok {
        pc::print("FAIL magic: EAX ");
        print_hex(eax.into());
        pc::print(", not 0x2badb002\n");
        r.failed = true;
        r.finish();
    }
    r.check(true, "magic");
    if info == 0 {
        r.check(false, "information structure address (EBX is 0)");
        r.finish();
    }
    let info = u64::from(info);
    let (kernel_start, kernel_end) = ((&raw const __multiboot_load_start) as u64, (&raw const __multiboot_bss_end) as u64);
    let kernel_len = kernel_end - kernel_start;

    let flags = read32(info + u64::from(I_FLAGS));
    let flag = |bit: u32| flags & (1 << bit) != 0;
    let has_mem = flag(0);
    let has_cmdline = flag(2);
    let has_mods = flag(3);
    let has_mmap = flag(6);
    let has_name = flag(9);
    r.check(has_mem, "info flag 0 (mem_lower, mem_upper)");
    r.check(has_cmdline, "info flag 2 (cmdline)");
    r.check(has_mods, "info flag 3 (mods)");
    r.check(has_mmap, "info flag 6 (mmap)");
    r.check(has_name, "info flag 9 (boot_loader_name)");
    r.check(!overlap(info, INFO_LEN, kernel_start, kernel_len), "info clear of the kernel");

    if has_mem {
        r.check_eq("mem_lower", read32(info + u64::from(I_MEM_LOWER)).into(), 639);
    }
    let mut mem = None;
    if has_cmdline {
        let cmdline = cstr(read32(info + u64::from(I_CMDLINE)));
        pc::print("cmdline ");
        print_bytes(cmdline);
        pc::print("\n");
        mem = mem_from_cmdline(cmdline);
        r.start(mem.is_some());
        pc::print("cmdline gives mem=");
        if let Some(m) = mem {
            pc::print_u64(m);
        }
        pc::print("\n");
    }
    // What yakvm leaves the kernel above 1 MiB.
    let upper = mem.map(|m| m.saturating_sub(MIB + EMULATOR_TOP));
    if let (true, Some(upper)) = (has_mem, upper) {
        r.check_eq("mem_upper", read32(info + u64::from(I_MEM_UPPER)).into(), upper / KIB);
    }

    if has_mmap {
        let start = u64::from(read32(info + u64::from(I_MMAP_ADDR)));
        let end = start + u64::from(read32(info + u64::from(I_MMAP_LENGTH)));
        let expected = mem.map(|m| {
            [
                (0, 0x9_fc00, 1),
                (0x9_fc00, 0x400, 2),
                (0xf_0000, 0x1_0000, 2),
                (MIB, m.saturating_sub(MIB + EMULATOR_TOP), 1),
                (m.saturating_sub(EMULATOR_TOP), EMULATOR_TOP, 2),
                (PCI_ECAM, MIB, 2),
            ]
        });
        let (mut entry, mut count, mut as_expected, mut available) = (start, 0, true, 0);
        while entry < end && count < MAX_MMAP_ENTRIES {
            let size = read32(entry);
            let (base, length, kind) = (read64(entry + 4), read64(entry + 12), read32(entry + 20));
            pc::print("mmap ");
            print_hex(base);
            pc::print(" ");
            print_hex(length);
            pc::print(" ");
            pc::print_u64(kind.into());
            pc::print("\n");
            if kind == MMAP_AVAILABLE {
                available += length;
            }
            as_expected &= size == 20 && expected.is_some_and(|e| e.get(count) == Some(&(base, length, kind)));
            count += 1;
            entry += u64::from(size) + 4;
        }
        if let Some(e) = expected {
            r.check(as_expected && count == e.len(), "mmap entries as yakvm lays them out");
            let want = 639 * KIB + upper.unwrap_or(0);
            r.check_eq("mmap available bytes", available, want);
        }
    }

    if has_name {
        let name = cstr(read32(info + u64::from(I_BOOT_LOADER_NAME)));
        r.start(same(name, b"yakvm"));
        pc::print("boot_loader_name ");
        print_bytes(name);
        pc::print("\n");
    }

    if has_mods {
        let count = read32(info + u64::from(I_MODS_COUNT));
        let list = u64::from(read32(info + u64::from(I_MODS_ADDR)));
        r.check_eq("mods_count", count.into(), 2);
        let expected: [(&[u8], &[u8]); 2] = [(b"first arg1", b"MODULE-ONE"), (b"second", b"MODULE-TWO")];
        let (mut aligned, mut clear) = (true, true);
        let mut ranges = [(0u64, 0u64); 2];
        for (i, &(want_string, want_start)) in expected.iter().enumerate().take(count as usize) {
            let entry = list + u64::from(MOD_ENTRY_LEN) * i as u64;
            let start = u64::from(read32(entry + u64::from(MOD_START)));
            let end = u64::from(read32(entry + u64::from(MOD_END)));
            let string = cstr(read32(entry + u64::from(MOD_STRING)));
            r.start(same(string, want_string));
            pc::print("module ");
            pc::print_u64(i as u64);
            pc::print(" string \"");
            print_bytes(string);
            pc::print("\"\n");
            let len = end.saturating_sub(start);
            let starts_well = len >= want_start.len() as u64
                && want_start.iter().enumerate().all(|(j, &b)| read_byte(start + j as u64) == b);
            r.start(starts_well);
            pc::print("module ");
            pc::print_u64(i as u64);
            pc::print(" contents start with ");
            print_bytes(want_start);
            pc::print("\n");
            aligned &= start % 4096 == 0;
            clear &= end >= start && !overlap(start, len, kernel_start, kernel_len);
            ranges[i] = (start, len);
        }
        if count >= 2 {
            clear &= !overlap(ranges[0].0, ranges[0].1, ranges[1].0, ranges[1].1);
        }
        r.check(aligned, "modules page-aligned");
        r.check(clear, "modules clear of the kernel and of each other");
    }
    r.finish()
}
