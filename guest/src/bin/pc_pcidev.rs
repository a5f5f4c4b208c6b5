//! PCI interrupts end to end, with yakvm's PCI test functions (`--pci-testdev`,
//! docs/pci.md), then a hostile guest moving their BARs and writing every configuration
//! register.
//!
//! 1. Bus 0 is scanned through mechanism #1: two test functions (1234:11e8), INTA#. Their
//!    GSI is the `_PRT`'s, 16 + (device + pin - 1) mod 8 (docs/pci.md: a guest without an
//!    AML interpreter uses the formula); the Interrupt Line register, which yakvm fills in
//!    as a firmware would, says the same. Both share GSI 22.
//! 2. INTx: the I/O APIC's pin programmed as the `_PRT` says (level, active low). A raise
//!    is delivered; the status register's Interrupt Status is set while it is held and
//!    clears when the handler acknowledges; with the command register's Interrupt Disable
//!    set, a raise is not delivered (the status bit is set) until it is cleared; both
//!    functions raised at once with a handler that acknowledges one per interrupt: two
//!    interrupts, the second for the function still holding the shared line (wired-OR).
//! 3. MSI on the first function: delivered at its vector (no INTx); masked, its pending
//!    bit is set and nothing comes; unmasked, delivered.
//! 4. MSI-X on the second: four vectors, each delivered at its own; a masked vector's PBA
//!    bit is set and it comes on unmask; the function mask holds a vector the same way.
//! 5. Hostile BARs: the first function's BAR moved over a page of the guest's RAM, over
//!    the local APIC, over the I/O APIC, over the second function's BAR: each refused (the
//!    RAM page keeps its bytes, the APICs answer as themselves, the second function keeps
//!    its registers, the first decodes nowhere). `--stats` counts the refusals.
//! 6. 20 000 random configuration writes (every register of the three functions, random
//!    widths and values, both mechanisms, a quarter of them BARs aimed at RAM, the APICs,
//!    each other), checking the RAM page and the APICs every 1000; then both functions
//!    programmed again and working.
//!
//! Output on COM1: `ok <what>` per check, `FAIL <what>` for a failed one; status 0 if all
//! passed, 1 otherwise.
//!
//! Run: `yakvm run --machine pc --pci-testdev build/guests/pc_pcidev.bin`
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use x86_64::instructions::port::Port;
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, pc, say};

yakvm_guests::entry!(main);

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const ENABLE: u32 = 1 << 31;
const ECAM: u64 = 0xe000_0000;
const TESTDEV_ID: u32 = 0x11e8_1234;
/// The `_PRT`'s GSIs (docs/pci.md).
const INTX_GSI_BASE: u32 = 16;
const INTX_LINES: u32 = 8;
/// Where the guest puts the two BARs (in the host bridge's window).
const BARS: [u32; 2] = [0xd000_0000, 0xd000_1000];
const IOAPIC: u64 = 0xfec0_0000;

const INTX_VECTOR: u8 = 0x40;
const MSI_VECTOR: u8 = 0x41;
const MSIX_VECTOR: u8 = 0x50;

/// Registers of the test function's BAR 0.
const IDENT: u64 = 0x00;
const LIVENESS: u64 = 0x04;
const STATUS: u64 = 0x24;
const RAISE: u64 = 0x60;
const ACK: u64 = 0x64;
const MSIX_RAISE: u64 = 0x80;
const IDENT_VALUE: u32 = 0x0100_00ed;

/// Configuration registers.
const COMMAND: u8 = 0x04;
const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;
const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const STATUS_INTERRUPT: u16 = 1 << 3;
const BAR0: u8 = 0x10;
const CAPABILITIES: u8 = 0x34;
const INTERRUPT_LINE: u8 = 0x3c;

/// A page of RAM the hostile part aims a BAR at.
#[repr(C, align(4096))]
struct Page([u32; 1024]);
static mut CANARY: Page = Page([0; 1024]);

/// The devfn (device << 3) of each test function, found by the scan.
static DEVFN: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
/// What the INTx handler saw at each interrupt (bit i: function i's status was not 0),
/// one nibble per interrupt.
static SEEN: AtomicU32 = AtomicU32::new(0);

fn port_in<T: x86_64::instructions::port::PortRead>(port: u16) -> T {
    // SAFETY: a port read; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::<T>::new(port).read() }
}

fn port_out<T: x86_64::instructions::port::PortWrite>(port: u16, value: T) {
    // SAFETY: a port write; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::<T>::new(port).write(value) };
}

fn mmio_read(at: u64) -> u32 {
    // SAFETY: a dword read of MMIO below 4 GiB (a BAR in the window, an APIC page) or of
    // the guest's own RAM page; the identity map covers the first 4 GiB.
    unsafe { read_volatile(at as *const u32) }
}

fn mmio_write(at: u64, value: u32) {
    // SAFETY: as `mmio_read`: a dword write there.
    unsafe { write_volatile(at as *mut u32, value) }
}

fn cfg_read32(devfn: u32, register: u8) -> u32 {
    port_out(CONFIG_ADDRESS, ENABLE | devfn << 8 | u32::from(register & 0xfc));
    port_in::<u32>(CONFIG_DATA)
}

fn cfg_write32(devfn: u32, register: u8, value: u32) {
    port_out(CONFIG_ADDRESS, ENABLE | devfn << 8 | u32::from(register & 0xfc));
    port_out(CONFIG_DATA, value);
}

fn cfg_write16(devfn: u32, register: u8, value: u16) {
    port_out(CONFIG_ADDRESS, ENABLE | devfn << 8 | u32::from(register & 0xfc));
    port_out(CONFIG_DATA + u16::from(register & 2), value);
}

fn status_register(devfn: u32) -> u16 {
    (cfg_read32(devfn, COMMAND) >> 16) as u16
}

fn devfn(i: usize) -> u32 {
    DEVFN[i].load(SeqCst)
}

fn reg(i: usize, offset: u64) -> u64 {
    u64::from(BARS[i]) + offset
}

fn check(what: &str, ok: bool) {
    check_fmt(format_args!("{what}"), ok);
}

fn check_fmt(what: core::fmt::Arguments, ok: bool) {
    if ok {
        say!("ok {what}");
    } else {
        yakvm_guests::fail!("FAIL {what}");
    }
}

/// The capability `id`'s offset in `devfn`'s list (0 if none).
fn capability(devfn: u32, id: u8) -> u8 {
    let mut at = cfg_read32(devfn, CAPABILITIES) as u8;
    for _ in 0..48 {
        if at == 0 {
            break;
        }
        let header = cfg_read32(devfn, at);
        if header as u8 == id {
            return at;
        }
        at = (header >> 8) as u8;
    }
    0
}

fn ioapic_write(index: u32, value: u32) {
    mmio_write(IOAPIC, index);
    mmio_write(IOAPIC + 0x10, value);
}

fn ioapic_read(index: u32) -> u32 {
    mmio_write(IOAPIC, index);
    mmio_read(IOAPIC + 0x10)
}

/// Interrupts: INTx acknowledges the first function whose status is set (one per
/// interrupt, so that a shared line held by the other comes again) and notes what it saw.
fn hook(_: usize, vector: u8) {
    if vector != INTX_VECTOR {
        return;
    }
    let held: [bool; 2] = core::array::from_fn(|i| mmio_read(reg(i, STATUS)) != 0);
    let seen = u32::from(held[0]) | u32::from(held[1]) << 1;
    let _ = SEEN.fetch_update(SeqCst, SeqCst, |s| Some(s << 4 | seen));
    if let Some(i) = held.iter().position(|&h| h) {
        mmio_write(reg(i, ACK), u32::MAX);
    }
}

fn ap_main(_: usize) -> ! {
    park()
}

fn taken(vector: u8) -> u32 {
    received(bsp(), vector)
}

/// Waits up to a second for `vector` to have been taken `n` times.
fn wait_taken(vector: u8, n: u32) -> bool {
    wait_until(1_000_000, || taken(vector) >= n) && taken(vector) == n
}

/// Whether `vector` is still taken `n` times after 20 ms.
fn still_taken(vector: u8, n: u32) -> bool {
    delay_us(20_000);
    taken(vector) == n
}

fn discover() -> bool {
    let mut found = 0;
    for d in 0..256u32 {
        if cfg_read32(d, 0) == TESTDEV_ID && found < 2 {
            DEVFN[found].store(d, SeqCst);
            found += 1;
        }
    }
    check("two PCI test functions on bus 0", found == 2);
    if found != 2 {
        return false;
    }
    let mut same = true;
    for i in 0..2 {
        let line_pin = cfg_read32(devfn(i), INTERRUPT_LINE);
        let (line, pin) = (line_pin & 0xff, (line_pin >> 8) & 0xff);
        let gsi = INTX_GSI_BASE + ((devfn(i) >> 3) + pin.wrapping_sub(1)) % INTX_LINES;
        say!("  00:{:02x}.{}: INT{}# -> GSI {gsi} (interrupt line {line})", devfn(i) >> 3, devfn(i) & 7, (b'@' + pin as u8) as char);
        same &= pin == 1 && line == gsi && gsi == 22;
    }
    check("both INTA#, on GSI 22 by the _PRT's formula and the interrupt line", same);
    for i in 0..2 {
        cfg_write32(devfn(i), BAR0, BARS[i]);
        cfg_write16(devfn(i), COMMAND, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    }
    check("BAR 0 registers answer (identification, liveness)", (0..2).all(|i| {
        mmio_write(reg(i, LIVENESS), 0x1234_0000 + i as u32);
        mmio_read(reg(i, IDENT)) == IDENT_VALUE && mmio_read(reg(i, LIVENESS)) == !(0x1234_0000 + i as u32)
    }));
    true
}

fn intx() {
    let gsi = 22;
    // Level-triggered, active low (as the _PRT says), to CPU 0.
    ioapic_write(0x11 + 2 * gsi, 0);
    ioapic_write(0x10 + 2 * gsi, u32::from(INTX_VECTOR) | 1 << 13 | 1 << 15);
    pc::cli();
    mmio_write(reg(0, RAISE), 1);
    check("INTx: Interrupt Status set while the pin is held", status_register(devfn(0)) & STATUS_INTERRUPT != 0 && status_register(devfn(1)) & STATUS_INTERRUPT == 0);
    pc::sti();
    check("INTx: delivered through the I/O APIC", wait_taken(INTX_VECTOR, 1) && still_taken(INTX_VECTOR, 1));
    check("INTx: Interrupt Status clear once acknowledged", status_register(devfn(0)) & STATUS_INTERRUPT == 0);

    cfg_write16(devfn(0), COMMAND, COMMAND_MEMORY | COMMAND_INTX_DISABLE);
    mmio_write(reg(0, RAISE), 1);
    check("INTx: Interrupt Disable masks it", still_taken(INTX_VECTOR, 1));
    check("INTx: Interrupt Status set while disabled", status_register(devfn(0)) & STATUS_INTERRUPT != 0);
    cfg_write16(devfn(0), COMMAND, COMMAND_MEMORY);
    check("INTx: delivered once Interrupt Disable is cleared", wait_taken(INTX_VECTOR, 2) && still_taken(INTX_VECTOR, 2));

    SEEN.store(0, SeqCst);
    pc::cli();
    mmio_write(reg(0, RAISE), 1);
    mmio_write(reg(1, RAISE), 1);
    pc::sti();
    let shared = wait_taken(INTX_VECTOR, 4) && still_taken(INTX_VECTOR, 4);
    let seen = SEEN.load(SeqCst);
    say!("  shared line: the handler saw {:#x} (nibbles: first interrupt, second; bit i: function i)", seen);
    check("INTx: two functions on GSI 22 are a wired-OR (two interrupts, the second for the one still holding it)", shared && seen == 0x32);
}

fn msi() {
    let d = devfn(0);
    let cap = capability(d, 0x05);
    check("MSI capability found", cap != 0);
    if cap == 0 {
        return;
    }
    cfg_write32(d, cap + 4, 0xfee0_0000);
    cfg_write32(d, cap + 8, 0);
    cfg_write32(d, cap + 0xc, u32::from(MSI_VECTOR));
    cfg_write32(d, cap, 1 << 16);
    mmio_write(reg(0, RAISE), 1);
    let no_intx = taken(INTX_VECTOR) == 4 && status_register(d) & STATUS_INTERRUPT == 0;
    check("MSI: delivered at its vector, no INTx", wait_taken(MSI_VECTOR, 1) && still_taken(MSI_VECTOR, 1) && no_intx);
    mmio_write(reg(0, ACK), u32::MAX);
    cfg_write32(d, cap + 0x10, 1);
    mmio_write(reg(0, RAISE), 1);
    check("MSI: masked, not delivered", still_taken(MSI_VECTOR, 1));
    check("MSI: masked, its pending bit set", cfg_read32(d, cap + 0x14) & 1 == 1);
    cfg_write32(d, cap + 0x10, 0);
    check("MSI: delivered on unmask, pending bit clear", wait_taken(MSI_VECTOR, 2) && cfg_read32(d, cap + 0x14) & 1 == 0);
    mmio_write(reg(0, ACK), u32::MAX);
    cfg_write32(d, cap, 0);
}

fn msix() {
    let d = devfn(1);
    let cap = capability(d, 0x11);
    check("MSI-X capability found", cap != 0);
    if cap == 0 {
        return;
    }
    let vectors = (cfg_read32(d, cap) >> 16 & 0x7ff) + 1;
    let (table, pba) = (cfg_read32(d, cap + 4), cfg_read32(d, cap + 8));
    check("MSI-X: 4 vectors, table and PBA in BAR 0", vectors == 4 && table & 7 == 0 && pba & 7 == 0);
    let entry = |v: u32| reg(1, u64::from(table & !7) + 16 * u64::from(v));
    let pba_bits = || mmio_read(reg(1, u64::from(pba & !7)));
    for v in 0..4 {
        mmio_write(entry(v), 0xfee0_0000);
        mmio_write(entry(v) + 4, 0);
        mmio_write(entry(v) + 8, u32::from(MSIX_VECTOR) + v);
        mmio_write(entry(v) + 12, 0);
    }
    cfg_write32(d, cap, 1 << 31);
    let mut each = true;
    for v in 0..4u8 {
        mmio_write(reg(1, MSIX_RAISE), u32::from(v));
        each &= wait_taken(MSIX_VECTOR + v, 1);
    }
    check("MSI-X: each of 4 vectors delivered at its own", each && (0..4).all(|v| still_taken(MSIX_VECTOR + v, 1)));
    mmio_write(entry(1) + 12, 1);
    mmio_write(reg(1, MSIX_RAISE), 1);
    check("MSI-X: a masked vector is not delivered", still_taken(MSIX_VECTOR + 1, 1));
    check("MSI-X: its PBA bit is set", pba_bits() == 0b10);
    mmio_write(entry(1) + 12, 0);
    check("MSI-X: delivered on unmask, PBA clear", wait_taken(MSIX_VECTOR + 1, 2) && pba_bits() == 0);
    cfg_write32(d, cap, 1 << 31 | 1 << 30);
    mmio_write(reg(1, MSIX_RAISE), 3);
    check("MSI-X: the function mask holds a vector pending", still_taken(MSIX_VECTOR + 3, 1) && pba_bits() == 0b1000);
    cfg_write32(d, cap, 1 << 31);
    check("MSI-X: delivered when the function mask clears", wait_taken(MSIX_VECTOR + 3, 2) && pba_bits() == 0);
    cfg_write32(d, cap, 0);
}

fn canary() -> u64 {
    (&raw const CANARY) as u64
}

/// The RAM page keeps its pattern, the local and I/O APICs answer as themselves.
fn healthy() -> bool {
    let ram = (0..1024u64).all(|i| mmio_read(canary() + 4 * i) == 0x5a5a_0000 + i as u32);
    // The local APIC's version without bit 24 (EOI-broadcast suppression, which KVM's split
    // irqchip offers: smp/start.rs).
    ram && lapic_read(APIC_VERSION) & !(1 << 24) == 0x0005_0014 && ioapic_read(1) == 0x0017_0011
}

/// xorshift64.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn hostile() {
    pc::cli();
    for i in 0..1024u64 {
        mmio_write(canary() + 4 * i, 0x5a5a_0000 + i as u32);
    }
    mmio_write(reg(1, LIVENESS), 0x0bad_cafe);
    let d = devfn(0);
    for (what, place) in [("a page of RAM", canary() as u32), ("the local APIC", 0xfee0_0000), ("the I/O APIC", IOAPIC as u32), ("the other function's BAR", BARS[1])] {
        cfg_write32(d, BAR0, place);
        let other = mmio_read(reg(1, LIVENESS)) == !0x0bad_cafe;
        let gone = mmio_read(reg(0, IDENT)) == u32::MAX;
        check_fmt(format_args!("BAR moved over {what}: refused, nothing shadowed"), healthy() && other && gone);
    }
    let functions = [0u32, devfn(0), devfn(1)];
    let places = [canary() as u32, 0xfee0_0000, IOAPIC as u32, BARS[0], BARS[1], 0xe000_0000, 0xc000_0000, 0];
    let mut rng = Random(0x2545_f491_4f6c_dd1d);
    let mut healthy_all = true;
    for n in 0..20_000u32 {
        let r = rng.next();
        let f = functions[(r % 3) as usize];
        let value = (r >> 32) as u32;
        let (register, value, width) = if r & 0x30 == 0 {
            (BAR0, places[((r >> 8) % places.len() as u64) as usize], 4)
        } else if r & 0x30 == 0x10 {
            (COMMAND, value & u32::from(COMMAND_MEMORY | COMMAND_INTX_DISABLE), 2)
        } else {
            ((r >> 8) as u8, value, [1u8, 2, 4][((r >> 16) % 3) as usize])
        };
        let register = register & !(width - 1);
        if r & 0x40 != 0 {
            port_out(CONFIG_ADDRESS, ENABLE | f << 8 | u32::from(register & 0xfc));
            let port = CONFIG_DATA + u16::from(register & 3);
            match width {
                1 => port_out(port, value as u8),
                2 => port_out(port, value as u16),
                _ => port_out(port, value),
            }
        } else {
            let at = ECAM + (u64::from(f) << 12) + u64::from(register);
            // SAFETY: a write inside the ECAM window (MMIO, identity-mapped).
            unsafe {
                match width {
                    1 => write_volatile(at as *mut u8, value as u8),
                    2 => write_volatile(at as *mut u16, value as u16),
                    _ => write_volatile(at as *mut u32, value),
                }
            }
        }
        if n % 1000 == 999 {
            healthy_all &= healthy();
        }
    }
    check("20000 random configuration writes: RAM and the APICs never shadowed", healthy_all && healthy());
    for i in 0..2 {
        cfg_write16(devfn(i), COMMAND, 0);
        cfg_write32(devfn(i), BAR0, BARS[i]);
        cfg_write16(devfn(i), COMMAND, COMMAND_MEMORY);
    }
    check("both functions work again once programmed", (0..2).all(|i| {
        mmio_write(reg(i, LIVENESS), 7);
        mmio_read(reg(i, IDENT)) == IDENT_VALUE && mmio_read(reg(i, LIVENESS)) == !7
    }));
    check("the host bridge is still 1b36:0008", cfg_read32(0, 0) == 0x0008_1b36);
}

fn main() {
    set_hook(hook);
    let _ = smp::boot(ap_main, |_| Start::Normal);
    pc::sti();
    if discover() {
        intx();
        msi();
        msix();
        hostile();
    }
    exit(u8::from(FAILURES.load(SeqCst) != 0));
}
