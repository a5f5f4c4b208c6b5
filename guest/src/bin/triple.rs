//! Triple-faults on purpose: an empty IDT, then an exception. The hypervisor must report a
//! shutdown, and the host must not notice anything else.
#![no_std]
#![no_main]

yakvm_guests::entry!(main);

fn main() {
    yakvm_guests::print("about to triple fault\n");
    let empty: [u16; 5] = [0; 5];
    // SAFETY: deliberately fatal for the guest: with a zero-limit IDT, INT3 raises #GP,
    // which raises #DF, which shuts the vCPU down.
    unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &empty, options(nostack)) };
    yakvm_guests::print("still alive?\n");
}
