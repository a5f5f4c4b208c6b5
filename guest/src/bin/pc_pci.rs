//! The pc machine's PCI, as an OS probes it, then attacked. Through configuration
//! mechanism #1 (0xcf8/0xcfc) every function of bus 0 is probed: only 00:00.0 answers,
//! the host bridge (vendor 0x1b36, device 0x0008, class 06.00.00, header type 0). The
//! MCFG's ECAM window (0xe0000000, taken from the ACPI tables as an OS does) gives the
//! same bytes as mechanism #1 for every dword of the first 256 bytes of 00:00.0 and of an
//! absent function, at byte, word and dword width. Then 20 000 random configuration writes
//! of random widths (1, 2, 4 bytes) at random offsets of random functions and buses,
//! through both mechanisms, and random values in the address register; the host bridge's
//! identity is unchanged, absent functions still read all ones, and the machine still runs
//! (this line printed, the PIT still ticking). Output on COM1: `ok <what>` per check;
//! `FAIL <what>` ends the run with status 1; status 0 at the end.
//!
//! Run: `yakvm run --machine pc build/guests/pc_pci.bin`
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use x86_64::instructions::port::Port;
use yakvm_guests::{exit, pc};

yakvm_guests::entry!(main);

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const ENABLE: u32 = 1 << 31;
/// The host bridge's vendor and device, class and revision dwords.
const HOST_BRIDGE_ID: u32 = 0x0008_1b36;
const HOST_BRIDGE_CLASS: u32 = 0x0600_0000;
/// The MCFG's ECAM window as yakvm gives it (checked against the table below).
const ECAM: u64 = 0xe000_0000;
const WRITES: u32 = 20_000;

fn port_in<T: x86_64::instructions::port::PortRead>(port: u16) -> T {
    // SAFETY: a port read; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::<T>::new(port).read() }
}

fn port_out<T: x86_64::instructions::port::PortWrite>(port: u16, value: T) {
    // SAFETY: a port write; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::<T>::new(port).write(value) };
}

/// Mechanism #1: the dword at `register` of bus:device.function `bdf` (16 bits).
fn address(bdf: u16, register: u8) -> u32 {
    ENABLE | u32::from(bdf) << 8 | u32::from(register & 0xfc)
}

fn cf8_read32(bdf: u16, register: u8) -> u32 {
    port_out(CONFIG_ADDRESS, address(bdf, register));
    port_in::<u32>(CONFIG_DATA)
}

fn cf8_read16(bdf: u16, register: u8) -> u16 {
    port_out(CONFIG_ADDRESS, address(bdf, register));
    port_in::<u16>(CONFIG_DATA + u16::from(register & 2))
}

fn cf8_read8(bdf: u16, register: u8) -> u8 {
    port_out(CONFIG_ADDRESS, address(bdf, register));
    port_in::<u8>(CONFIG_DATA + u16::from(register & 3))
}

fn ecam(bdf: u16, register: u64) -> u64 {
    ECAM + (u64::from(bdf) << 12) + register
}

fn ecam_read<T: Copy>(bdf: u16, register: u64) -> T {
    // SAFETY: ECAM is MMIO below 4 GiB, in the identity map yakvm builds; every access
    // there exits to the emulator (no RAM behind it).
    unsafe { read_volatile(ecam(bdf, register) as *const T) }
}

fn ecam_write<T: Copy>(at: u64, value: T) {
    // SAFETY: as `ecam_read`; `at` is inside the ECAM window.
    unsafe { write_volatile(at as *mut T, value) }
}

fn check(what: &str, ok: bool) {
    pc::print(if ok { "ok " } else { "FAIL " });
    pc::print(what);
    pc::print("\n");
    if !ok {
        exit(1);
    }
}

fn byte(addr: u64) -> u8 {
    // SAFETY: a read of the ACPI tables in RAM below 1 MiB (addresses checked first).
    unsafe { read_volatile(addr as *const u8) }
}

fn u32_at(addr: u64) -> u32 {
    u32::from_le_bytes([byte(addr), byte(addr + 1), byte(addr + 2), byte(addr + 3)])
}

fn u64_at(addr: u64) -> u64 {
    u64::from(u32_at(addr)) | u64::from(u32_at(addr + 4)) << 32
}

fn is(addr: u64, what: &[u8]) -> bool {
    what.iter().enumerate().all(|(i, &b)| byte(addr + i as u64) == b)
}

/// The MCFG's first allocation (base, first bus, last bus), found as an OS finds it:
/// the RSDP at 16-byte steps of 0xe0000-0xfffff, the XSDT, the MCFG.
fn mcfg() -> Option<(u64, u8, u8)> {
    let low = |a: u64| (0xe_0000..0x10_0000).contains(&a);
    let rsdp = (0xe_0000..0x10_0000u64).step_by(16).find(|&a| is(a, b"RSD PTR "))?;
    let xsdt = u64_at(rsdp + 24);
    if !low(xsdt) || !is(xsdt, b"XSDT") {
        return None;
    }
    let entries = (u64::from(u32_at(xsdt + 4)).saturating_sub(36) / 8).min(16);
    let mcfg = (0..entries).map(|i| u64_at(xsdt + 36 + 8 * i)).find(|&t| low(t) && is(t, b"MCFG"))?;
    Some((u64_at(mcfg + 44), byte(mcfg + 44 + 10), byte(mcfg + 44 + 11)))
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

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::start_tick_counter(100);
    pc::sti();

    // Linux's probe of mechanism #1: the address register keeps a dword.
    port_out(CONFIG_ADDRESS, ENABLE);
    check("the address register keeps 0x80000000", port_in::<u32>(CONFIG_ADDRESS) == ENABLE);

    // Every function of bus 0: only 00:00.0 is there.
    let mut present = 0;
    for bdf in 0..256u16 {
        if cf8_read16(bdf, 0) != 0xffff {
            present += 1;
        }
    }
    check("one function on bus 0", present == 1);
    check("00:00.0 is 1b36:0008", cf8_read32(0, 0) == HOST_BRIDGE_ID);
    check("00:00.0 is a host bridge (class 06.00.00)", cf8_read32(0, 8) == HOST_BRIDGE_CLASS);
    check("00:00.0 has header type 0", cf8_read8(0, 0x0e) == 0);
    check("bus 1 is empty", cf8_read32(0x100, 0) == u32::MAX);

    check("the MCFG gives ECAM at 0xe0000000 for bus 0", mcfg() == Some((ECAM, 0, 0)));
    // ECAM and mechanism #1: the same bytes at every width.
    let mut same = true;
    for bdf in [0u16, 8, 1] {
        for register in (0..=252u8).step_by(4) {
            let r = u64::from(register);
            same &= ecam_read::<u32>(bdf, r) == cf8_read32(bdf, register);
            same &= ecam_read::<u16>(bdf, r + 2) == cf8_read16(bdf, register + 2);
            same &= ecam_read::<u8>(bdf, r + 3) == cf8_read8(bdf, register + 3);
        }
    }
    check("ECAM and 0xcf8/0xcfc give the same bytes", same);

    // The attack.
    let mut rng = Random(0x9e37_79b9_7f4a_7c15);
    for i in 0..WRITES {
        let r = rng.next();
        let value = (r >> 11) as u32;
        let width = [1u64, 2, 4][(r % 3) as usize];
        if i % 2 == 0 {
            port_out(CONFIG_ADDRESS, (r >> 24) as u32 | ENABLE);
            let port = CONFIG_DATA + ((r >> 56) & 3) as u16;
            match width {
                1 => port_out(port, value as u8),
                2 => port_out(port, value as u16),
                _ => port_out(port, value),
            }
        } else {
            let at = ECAM + ((r >> 20) & 0xf_ffff & !(width - 1));
            match width {
                1 => ecam_write(at, value as u8),
                2 => ecam_write(at, value as u16),
                _ => ecam_write(at, value),
            }
        }
    }
    port_out(CONFIG_ADDRESS, 0x8000_0000u32);
    check("20000 random configuration writes taken", true);
    check("00:00.0 is still 1b36:0008", cf8_read32(0, 0) == HOST_BRIDGE_ID && ecam_read::<u32>(0, 0) == HOST_BRIDGE_ID);
    check("00:00.0 is still a host bridge", cf8_read32(0, 8) == HOST_BRIDGE_CLASS);
    check("absent functions still read all ones", cf8_read32(8, 0) == u32::MAX && ecam_read::<u32>(0xff, 0) == u32::MAX);
    let t = pc::ticks();
    pc::wait_for_ticks(t + 5);
    check("the PIT still ticks", pc::ticks() >= t + 5);
    exit(0);
}
