//! `make bench`: MMIO round trips to userspace. 10000 32-bit writes to the scratch
//! register in the MMIO window (a nested page fault each: the hypervisor or the emulator
//! decodes the MOV), then the exit port. Per exit: run time / 10000.
#![no_std]
#![no_main]

use yakvm_guests::MMIO_BASE;

yakvm_guests::entry!(main);

const EXITS: u32 = 10_000;
/// The scratch register (port 0xff) in the MMIO window.
const SCRATCH: u64 = MMIO_BASE + 0xff * 8;

fn main() {
    for i in 0..EXITS {
        // SAFETY: the MMIO window is identity-mapped, outside RAM: every access exits.
        unsafe { core::ptr::write_volatile(SCRATCH as *mut u32, i) };
    }
    yakvm_guests::exit(0)
}
