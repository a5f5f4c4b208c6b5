//! Timer interrupts arriving during MMIO exits: IRQ0 at 1000 Hz while the guest writes
//! and reads back the emulator's 8-byte scratch register as fast as it can, until 300
//! ticks were handled. Then IRQ0 is masked (OCW1), interrupts are enabled for 16 port
//! writes (an IRQ0 the hypervisor had already accepted is delivered then) and disabled.
//! Prints `ticks N mmio M` (N handler invocations, M scratch round trips); the test
//! compares N with the hypervisor's count of IRQ0 injections. Exit status 0, or 1 after
//! `FAIL scratch` if a read-back differed.
//!
//! Run: `yakvm run --machine pc build/guests/pc_mmio_ticks.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use yakvm_guests::{exit, outb, pc, MMIO_BASE};

yakvm_guests::entry!(main);

/// The scratch register (0xff) in the MMIO window.
const SCRATCH: *mut u64 = (MMIO_BASE + 0xff * 8) as *mut u64;
const TICKS_WANTED: u64 = 300;
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Exactly one count and one EOI per invocation.
fn on_tick() {
    TICKS.fetch_add(1, Ordering::SeqCst);
    pc::eoi(0);
}

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::install();
    pc::set_handler(0, on_tick);
    pc::pic_init(1 << 0);
    pc::pit_init(1000);
    pc::sti();

    let mut round_trips = 0u64;
    let mut mismatches = 0u64;
    while TICKS.load(Ordering::SeqCst) < TICKS_WANTED {
        // Round trip i writes a value that spreads i over all 8 bytes.
        let value = round_trips.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // SAFETY: the scratch register's MMIO address, in the identity map; each access
        // exits to the emulator. Plain MOVs (the emulator decodes moves only; a volatile
        // read may otherwise be folded into a CMP with a memory operand).
        let back: u64;
        unsafe {
            core::arch::asm!("mov [{p}], {v}", "mov {b}, [{p}]", p = in(reg) SCRATCH, v = in(reg) value,
                b = lateout(reg) back, options(nostack));
        }
        mismatches += u64::from(back != value);
        round_trips += 1;
    }

    pc::mask_irq(0);
    pc::sti();
    for _ in 0..16 {
        outb(0x80, 0);
    }
    pc::cli();

    pc::print("ticks ");
    pc::print_u64(TICKS.load(Ordering::SeqCst));
    pc::print(" mmio ");
    pc::print_u64(round_trips);
    pc::print("\n");
    if mismatches != 0 {
        pc::print("FAIL scratch\n");
        exit(1);
    }
    exit(0)
}
