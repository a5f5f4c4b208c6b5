//! The DMA disk suite over port I/O (run with `--mem 2M --disk <8 KiB image>`).
#![no_std]
#![no_main]

use yakvm_guests::disk_suite::{self, Registers};

yakvm_guests::entry!(main);

struct Ports;

impl Registers for Ports {
    fn out32(&self, port: u16, value: u32) {
        // Not the x86_64 crate's `Port`, which tells the compiler that the write touches no
        // memory: this one starts DMA, the emulator reading and writing the buffers.
        // SAFETY: port writes exit to the emulator.
        unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)) };
    }
    fn out16(&self, port: u16, value: u16) {
        // SAFETY: as above.
        unsafe { core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack)) };
    }
    fn out8(&self, port: u16, value: u8) {
        yakvm_guests::outb(port, value);
    }
    fn in8(&self, port: u16) -> u8 {
        let v: u8;
        // SAFETY: port reads exit to the emulator.
        unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nostack)) };
        v
    }
}

fn main() {
    disk_suite::run(&Ports, 0x00)
}
