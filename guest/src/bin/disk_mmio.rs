//! The DMA disk suite over MMIO, in the seed's layout: `--mem 2M --mmio-base 0x200000`.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use yakvm_guests::disk_suite::{self, Registers};

yakvm_guests::entry!(main);

const MMIO_BASE: u64 = 0x20_0000;

fn reg<T>(port: u16) -> *mut T {
    (MMIO_BASE + u64::from(port) * 8) as *mut T
}

struct Mmio;

impl Registers for Mmio {
    fn out32(&self, port: u16, value: u32) {
        // SAFETY: the MMIO window is identity-mapped; every access exits to the emulator.
        unsafe { write_volatile(reg(port), value) };
    }
    fn out16(&self, port: u16, value: u16) {
        // SAFETY: as above.
        unsafe { write_volatile(reg(port), value) };
    }
    fn out8(&self, port: u16, value: u8) {
        // SAFETY: as above.
        unsafe { write_volatile(reg(port), value) };
    }
    fn in8(&self, port: u16) -> u8 {
        // SAFETY: as above.
        unsafe { read_volatile(reg(port)) }
    }
}

fn main() {
    disk_suite::run(&Mmio, 0x80)
}
