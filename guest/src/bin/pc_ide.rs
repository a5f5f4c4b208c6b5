//! The IDE disk (`--ide FILE`): PIO transfers that end in IRQ14, as xv6's `ide.c` does
//! them. With the disk prepared by the test (sector 1 starts with `SECTOR-ONE`, sector 2
//! with `SECTOR-TWO`, 64 sectors in all):
//! - IDENTIFY DEVICE: an IRQ14, then 256 words: LBA supported, 64 sectors (words 60-61);
//! - READ SECTORS of sectors 1-2: an IRQ14 before each sector, read with `insl`;
//! - WRITE SECTORS of sectors 3-4 with `outsl`: an IRQ14 after each; sector 3 holds
//!   `yakvm-ide-write-3` then zeros, sector 4 `yakvm-ide-write-4`, which the test finds in
//!   the host file;
//! - READ SECTORS of sector 3 again: what was written;
//! - an absent slave's status reads 0 (xv6's test for its disk 1).
//!
//! One line per check, `ok ...` or `FAIL ...`; exit status 0 if all passed. Interrupts are
//! waited for with `sti; hlt`, so a missing IRQ14 ends the run ("waits for an interrupt
//! that nothing can send") rather than passing.
#![no_std]
#![no_main]

use core::arch::asm;
use yakvm_guests::pc;
use yakvm_guests::{exit, outb};

yakvm_guests::entry!(main);

const BASE: u16 = 0x1f0;
const STATUS: u16 = BASE + 7;
const CONTROL: u16 = 0x3f6;
const IDE_IRQ: u8 = 14;
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;
const SECTOR: usize = 512;

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: a port read; every port access exits to the emulator.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack)) };
    value
}

fn outl(port: u16, value: u32) {
    // SAFETY: a port write to the IDE data port.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}

/// Waits for IRQ14's next interrupt (counted by the PIC handler).
fn wait_irq(before: u64) {
    loop {
        pc::cli();
        if pc::irq_count(IDE_IRQ) > before {
            pc::sti();
            return;
        }
        pc::sti_hlt();
    }
}

fn start(lba: u32, count: u8, command: u8) {
    outb(CONTROL, 0); // interrupts on
    outb(BASE + 2, count);
    outb(BASE + 3, lba as u8);
    outb(BASE + 4, (lba >> 8) as u8);
    outb(BASE + 5, (lba >> 16) as u8);
    outb(BASE + 6, 0xe0 | ((lba >> 24) & 0x0f) as u8);
    outb(STATUS, command);
}

/// Reads one sector's 512 bytes with `insl`, handing each byte to `f` with its offset
/// (no buffer: freestanding guests have no `memcpy` or `memset`).
fn read_sector(mut f: impl FnMut(usize, u8)) {
    for dword in 0..SECTOR / 4 {
        for (i, b) in inl(BASE).to_le_bytes().into_iter().enumerate() {
            f(dword * 4 + i, b);
        }
    }
}

/// Whether the sector being read starts with `prefix` and is zero after `zeros_from`
/// (`SECTOR`: no zero check).
fn read_matches(prefix: &[u8], zeros_from: usize) -> bool {
    let mut ok = true;
    read_sector(|at, b| {
        let want = if at < prefix.len() { Some(prefix[at]) } else if at >= zeros_from { Some(0) } else { None };
        ok &= want.is_none_or(|w| w == b);
    });
    ok
}

fn ready() -> bool {
    pc::inb(STATUS) & (BSY | DRDY | ERR) == DRDY
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
}

fn sector_text(n: u8) -> [u8; 17] {
    let mut text = *b"yakvm-ide-write-0";
    text[16] = b'0' + n;
    text
}

fn main() {
    pc::install();
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::pic_init(1 << IDE_IRQ);
    pc::sti();
    let mut r = Report { failed: false };

    let irqs = pc::irq_count(IDE_IRQ);
    outb(BASE + 6, 0xa0);
    outb(STATUS, 0xec);
    wait_irq(irqs);
    let drq = pc::inb(STATUS) & DRQ != 0;
    let mut words = [0u32; 3]; // 49, 60, 61
    read_sector(|at, b| {
        let slot = match at / 2 {
            49 => 0,
            60 => 1,
            61 => 2,
            _ => return,
        };
        words[slot] |= u32::from(b) << (8 * (at % 2));
    });
    r.check(drq && words[0] & 0x200 != 0 && (words[1] | words[2] << 16) == 64, "identify: LBA, 64 sectors, after IRQ14");

    let irqs = pc::irq_count(IDE_IRQ);
    start(1, 2, 0x20);
    wait_irq(irqs);
    let first = read_matches(b"SECTOR-ONE", SECTOR);
    wait_irq(irqs + 1);
    r.check(first && read_matches(b"SECTOR-TWO", SECTOR) && ready(), "read sectors 1-2, an IRQ14 each");

    let irqs = pc::irq_count(IDE_IRQ);
    start(3, 2, 0x30);
    for n in 3..=4u8 {
        while pc::inb(STATUS) & DRQ == 0 {
            core::hint::spin_loop();
        }
        let text = sector_text(n);
        let byte = |at: usize| text.get(at).copied().unwrap_or(0);
        for dword in 0..SECTOR / 4 {
            let at = dword * 4;
            outl(BASE, u32::from_le_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)]));
        }
        wait_irq(irqs + u64::from(n - 3));
    }
    r.check(ready(), "wrote sectors 3-4, an IRQ14 each");

    let irqs = pc::irq_count(IDE_IRQ);
    start(3, 1, 0x20);
    wait_irq(irqs);
    r.check(read_matches(&sector_text(3), 17), "sector 3 reads back");

    outb(BASE + 6, 0xe0 | 1 << 4);
    r.check(pc::inb(STATUS) == 0, "no slave: its status reads 0");

    while pc::inb(pc::COM1 + pc::LSR) & pc::LSR_TEMT == 0 {
        core::hint::spin_loop();
    }
    exit(u8::from(r.failed))
}
