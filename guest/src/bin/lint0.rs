//! LINT0 decides whether the PIC reaches the CPU (virtual-wire mode; SDM 11.5.1): the PIT
//! at 1000 Hz through the PIC, IRQ0 unmasked. A spin of 2000 port writes (each an exit:
//! several milliseconds) with interrupts enabled takes timer ticks; the same spin with the
//! local APIC's LVT LINT0 masked (xAPIC page, offset 0x350) takes none, though the PIC
//! still holds IRQ0; LINT0 unmasked again, the ticks come back. With yakvm's kernel APIC
//! the mask is the module's, which the emulator must follow.
//!
//! Output on COM1:
//! ```text
//! lint0: ticks with LINT0 unmasked
//! lint0: no tick with LINT0 masked
//! lint0 ok: ticks again with LINT0 unmasked
//! ```
//! Exit status 0; 1 with a line `lint0 FAIL: ...`.
//!
//! Run: `yakvm run --machine pc build/guests/lint0.bin` (and with `--kernel-apic`)
#![no_std]
#![no_main]

use yakvm_guests::{exit, outb, pc};

yakvm_guests::entry!(main);

/// LVT LINT0 in the xAPIC page (identity mapped) and its mask bit.
const LVT_LINT0: u64 = 0xfee0_0350;
const LVT_MASKED: u32 = 1 << 16;
const SPIN: u32 = 2000;

fn lint0_read() -> u32 {
    // SAFETY: a 32-bit load from the local APIC's LVT LINT0 register; no memory changes.
    unsafe { core::ptr::read_volatile(LVT_LINT0 as *const u32) }
}

fn lint0_write(value: u32) {
    // SAFETY: a 32-bit store to the local APIC's LVT LINT0 register (not RAM).
    unsafe { core::ptr::write_volatile(LVT_LINT0 as *mut u32, value) }
}

/// The ticks counted during a spin with interrupts enabled.
fn ticks_in_spin() -> u64 {
    let before = pc::ticks();
    x86_64::instructions::interrupts::enable();
    for _ in 0..SPIN {
        outb(0x80, 0);
    }
    x86_64::instructions::interrupts::disable();
    pc::ticks() - before
}

fn fail(what: &str) -> ! {
    pc::print("lint0 FAIL: ");
    pc::print(what);
    pc::print("\n");
    exit(1)
}

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::start_tick_counter(1000);
    if ticks_in_spin() == 0 {
        fail("no tick in the spin with LINT0 unmasked");
    }
    pc::print("lint0: ticks with LINT0 unmasked\n");
    let lint0 = lint0_read();
    lint0_write(lint0 | LVT_MASKED);
    if lint0_read() & LVT_MASKED == 0 {
        fail("LINT0 did not keep its mask");
    }
    let masked = ticks_in_spin();
    if masked != 0 {
        pc::print("  lint0: ticks with LINT0 masked: ");
        pc::print_u64(masked);
        pc::print("\n");
        fail("ticks came with LINT0 masked");
    }
    pc::print("lint0: no tick with LINT0 masked\n");
    lint0_write(lint0);
    let now = pc::ticks();
    pc::wait_for_ticks(now + 3);
    pc::print("lint0 ok: ticks again with LINT0 unmasked\n");
    exit(0)
}
