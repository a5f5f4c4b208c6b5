//! `make bench`: 100000 reads of the local APIC ID through the xAPIC page (0xfee00020),
//! then the exit port. Each read is a nested page fault: decoded and answered in the
//! hypervisor with the kernel's APICs (yakvm's module, KVM's split irqchip), a round trip
//! to the emulator with `--user-apic`. Per read: run time / 100000 (the row `apicread`;
//! bench_x2apicread.bin is the same through the x2APIC MSR).
#![no_std]
#![no_main]

use yakvm_guests::smp::{APIC_ID, LAPIC_BASE};

yakvm_guests::entry!(main);

const READS: u32 = 100_000;
/// The xAPIC page's ID register (guest-physical = virtual: the first 4 GiB are identity mapped).
const XAPIC_ID: u64 = LAPIC_BASE + APIC_ID as u64;

fn xapic_id() -> u32 {
    let value: u32;
    // SAFETY: a 32-bit load from the xAPIC page's ID register (identity mapped, the local
    // APIC answers it); it changes no memory.
    unsafe {
        core::arch::asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) XAPIC_ID, v = out(reg) value, options(nostack, preserves_flags, readonly))
    };
    value
}

fn main() {
    let first = xapic_id();
    let mut wrong = 0u32;
    for _ in 1..READS {
        wrong += u32::from(xapic_id() != first);
    }
    // Every read gave the same ID: status 0; 1 if one did not.
    yakvm_guests::exit(u8::from(wrong != 0))
}
