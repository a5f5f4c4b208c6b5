//! The pc machine's ACPI, found and used the way an OS does: the RSDP by a scan of
//! 0xe0000-0xfffff (its checksums checked), the XSDT, then the FADT, the MADT and the DSDT
//! through it (each table's checksum checked). The MADT's enabled local APICs are counted
//! and compared with the processors of the MP table (a source of its own); the PM timer's
//! port comes from the FADT: its count must advance, at about 3.58 MHz against the PIT's
//! 100 Hz (loose bounds: the host is loaded). Last, the `\_S5` package's SLP_TYP from the
//! DSDT's AML is written with SLP_EN to PM1a_CNT: the machine powers off. Output on COM1:
//!
//! ```text
//! ok rsdp at 0xe0000          (the address in decimal)
//! ok xsdt ...                 (one line per check)
//! madt local apics N
//! pm timer ticks per pit tick N
//! s5 slp_typ N
//! powering off
//! ```
//!
//! A failed check prints `FAIL ...` and ends the run with status 1 (no power-off); a
//! power-off write that returns prints `FAIL still running after S5` and ends with 1.
//!
//! Run: `yakvm run --machine pc [--smp N] build/guests/pc_acpi.bin`
#![no_std]
#![no_main]

use core::ptr::read_volatile;
use x86_64::instructions::port::Port;
use yakvm_guests::{exit, pc};

yakvm_guests::entry!(main);

/// Where an OS scans for the RSDP on a PC (ACPI 6.5, 5.2.5.1): the BIOS area.
const SCAN_START: u64 = 0xe_0000;
const SCAN_END: u64 = 0x10_0000;
/// The MP floating pointer's search area used here: the BIOS area too.
const MP_SCAN_START: u64 = 0xf_0000;
/// PM1_CNT's SLP_TYP field and SLP_EN bit (ACPI 6.5, 4.8.3.2.1).
const SLP_TYP_SHIFT: u16 = 10;
const SLP_EN: u16 = 1 << 13;
/// PIT ticks (at 100 Hz) the PM timer is measured over.
const PIT_TICKS: u64 = 25;
/// The PM timer's ticks in one 10 ms PIT tick at 3.579545 MHz.
const PM_PER_PIT_TICK: u64 = 35_795;

fn byte(addr: u64) -> u8 {
    // SAFETY: a read of guest RAM below 1 MiB (or of a table the firmware points at, which
    // is checked to lie in RAM below 1 MiB first); the identity map covers RAM.
    unsafe { read_volatile(addr as *const u8) }
}

fn u16_at(addr: u64) -> u16 {
    u16::from_le_bytes([byte(addr), byte(addr + 1)])
}

fn u32_at(addr: u64) -> u32 {
    u32::from(u16_at(addr)) | u32::from(u16_at(addr + 2)) << 16
}

fn u64_at(addr: u64) -> u64 {
    u64::from(u32_at(addr)) | u64::from(u32_at(addr + 4)) << 32
}

fn bytes_are(addr: u64, what: &[u8]) -> bool {
    what.iter().enumerate().all(|(i, &b)| byte(addr + i as u64) == b)
}

fn sum(addr: u64, len: u64) -> u8 {
    (0..len).fold(0u8, |s, i| s.wrapping_add(byte(addr + i)))
}

fn inl(port: u16) -> u32 {
    // SAFETY: a port read; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::<u32>::new(port).read() }
}

fn outw(port: u16, value: u16) {
    // SAFETY: a port write; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::<u16>::new(port).write(value) };
}

fn line(what: &str, n: u64) {
    pc::print(what);
    pc::print(" ");
    pc::print_u64(n);
    pc::print("\n");
}

/// Prints the check; a failed one ends the run with status 1.
fn check(what: &str, ok: bool) {
    pc::print(if ok { "ok " } else { "FAIL " });
    pc::print(what);
    pc::print("\n");
    if !ok {
        exit(1);
    }
}

/// Whether `addr` is a plausible table address: in RAM below 1 MiB (where yakvm puts them;
/// a wild pointer must not make this guest read outside RAM).
fn low(addr: u64) -> bool {
    (SCAN_START..SCAN_END).contains(&addr)
}

/// The table at `addr` with `signature`, its length within the BIOS area and its checksum
/// right: its length.
fn table(addr: u64, signature: &[u8; 4]) -> Option<u64> {
    if !low(addr) || !bytes_are(addr, signature) {
        return None;
    }
    let len = u64::from(u32_at(addr + 4));
    (len >= 36 && addr + len <= SCAN_END && sum(addr, len) == 0).then_some(len)
}

/// The first XSDT entry with `signature`.
fn find(xsdt: u64, xsdt_len: u64, signature: &[u8; 4]) -> Option<u64> {
    (36..xsdt_len).step_by(8).map(|at| u64_at(xsdt + at)).find(|&t| low(t) && bytes_are(t, signature))
}

/// The processor entries of the MP table (type 0, 20 bytes; the others are 8).
fn mp_processors() -> Option<u64> {
    let fps = (MP_SCAN_START..SCAN_END).step_by(16).find(|&a| bytes_are(a, b"_MP_") && sum(a, 16) == 0)?;
    let cfg = u64::from(u32_at(fps + 4));
    if !low(cfg) || !bytes_are(cfg, b"PCMP") {
        return None;
    }
    let (mut at, mut n) = (cfg + 44, 0);
    for _ in 0..u16_at(cfg + 34) {
        let kind = byte(at);
        n += u64::from(kind == 0);
        at += if kind == 0 { 20 } else { 8 };
    }
    Some(n)
}

/// Enabled processor local APIC entries of the MADT (type 0, flags bit 0).
fn madt_local_apics(madt: u64, len: u64) -> u64 {
    let (mut at, mut n) = (madt + 44, 0);
    while at + 2 <= madt + len {
        let (kind, entry_len) = (byte(at), u64::from(byte(at + 1)));
        if entry_len < 2 {
            break;
        }
        n += u64::from(kind == 0 && entry_len == 8 && u32_at(at + 4) & 1 != 0);
        at += entry_len;
    }
    n
}

/// The first element of the `\_S5` package in the DSDT's AML: `Name (_S5_, Package () {
/// SLP_TYPa, ...})`, found by a byte scan for `_S5_` then a PackageOp (0x12). A byte scan
/// is enough for our own DSDT.
fn s5_slp_typ(dsdt: u64, len: u64) -> Option<u8> {
    let name = (36..len.saturating_sub(4)).map(|i| dsdt + i).find(|&a| bytes_are(a, b"_S5_"))?;
    let mut at = name + 4;
    if byte(at) != 0x12 {
        return None;
    }
    // PkgLength: bits 7-6 of the lead byte count the bytes that follow it.
    at += 1 + u64::from(byte(at + 1) >> 6) + 1;
    // NumElements, then the first element: a ByteConst, Zero, One or Ones.
    at += 1;
    match byte(at) {
        0x0a => Some(byte(at + 1)),
        0x00 => Some(0),
        0x01 => Some(1),
        _ => None,
    }
}

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);

    let rsdp = (SCAN_START..SCAN_END).step_by(16).find(|&a| bytes_are(a, b"RSD PTR ") && sum(a, 20) == 0);
    check("rsdp found by the scan, its checksum right", rsdp.is_some());
    let rsdp = rsdp.unwrap_or(0);
    line("rsdp at", rsdp);
    let revision = byte(rsdp + 15);
    check("rsdp revision 2 with its extended checksum right", revision >= 2 && sum(rsdp, u64::from(u32_at(rsdp + 20))) == 0);

    let xsdt = u64_at(rsdp + 24);
    let xsdt_len = table(xsdt, b"XSDT");
    check("xsdt checksum", xsdt_len.is_some());
    let xsdt_len = xsdt_len.unwrap_or(0);

    let fadt = find(xsdt, xsdt_len, b"FACP").unwrap_or(0);
    let fadt_len = table(fadt, b"FACP").unwrap_or(0);
    check("fadt through the xsdt, checksum", fadt_len >= 244);
    let madt = find(xsdt, xsdt_len, b"APIC").unwrap_or(0);
    let madt_len = table(madt, b"APIC").unwrap_or(0);
    check("madt through the xsdt, checksum", madt_len >= 44);
    let dsdt = match u64_at(fadt + 140) {
        0 => u64::from(u32_at(fadt + 40)),
        x => x,
    };
    let dsdt_len = table(dsdt, b"DSDT").unwrap_or(0);
    check("dsdt through the fadt, checksum", dsdt_len > 36);

    let cpus = madt_local_apics(madt, madt_len);
    line("madt local apics", cpus);
    let mp = mp_processors();
    check("madt local apics = mp table processors", cpus >= 1 && mp == Some(cpus));

    // The PM timer: the FADT's PM_TMR_BLK (a port), TMR_VAL_EXT for 32 bits.
    let tmr = u32_at(fadt + 76) as u16;
    let cnt = u32_at(fadt + 64) as u16;
    line("pm timer port", tmr.into());
    line("pm1a control port", cnt.into());
    check("fadt: pm timer 4 bytes, pm1a control 2 bytes", byte(fadt + 91) == 4 && byte(fadt + 89) == 2 && tmr != 0 && cnt != 0);
    let ext = u32_at(fadt + 112) & (1 << 8) != 0;
    let elapsed = |from: u32, to: u32| if ext { to.wrapping_sub(from) } else { to.wrapping_sub(from) & 0xff_ffff };
    let t0 = inl(tmr);
    for _ in 0..200 {
        pc::io_wait();
    }
    let t1 = inl(tmr);
    check("pm timer advances", elapsed(t0, t1) > 0);

    // Its rate against the PIT's 100 Hz: from one tick to PIT_TICKS later.
    pc::start_tick_counter(100);
    pc::wait_for_ticks(1);
    let start = inl(tmr);
    pc::wait_for_ticks(1 + PIT_TICKS);
    let per_tick = u64::from(elapsed(start, inl(tmr))) / PIT_TICKS;
    pc::mask_irq(0);
    line("pm timer ticks per pit tick", per_tick);
    // 35795 expected; a timer at the PIT's 1.19 MHz (a third) or twice too fast fails.
    check("pm timer at about 3.58 MHz against the pit", (PM_PER_PIT_TICK / 2..PM_PER_PIT_TICK * 2).contains(&per_tick));

    let slp_typ = s5_slp_typ(dsdt, dsdt_len);
    check("dsdt: \\_S5 package found", slp_typ.is_some());
    let slp_typ = slp_typ.unwrap_or(0);
    line("s5 slp_typ", slp_typ.into());

    pc::print("powering off\n");
    outw(cnt, u16::from(slp_typ & 7) << SLP_TYP_SHIFT | SLP_EN);
    pc::print("FAIL still running after S5\n");
    exit(1)
}
