//! `make bench`: local APIC timer interrupts. The timer periodic at 200 us (5 kHz, the
//! fastest yakvm delivers, as for the PIT), 2000 interrupts waited for with `sti; hlt`,
//! each acknowledged with an EOI by MMIO; ticks the guest was too slow to take merge.
//! Interrupts per second: 2000 / run time.
//!
//! Run: `yakvm run --machine pc build/guests/bench_apictimer.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, pc, say};

yakvm_guests::entry!(main);

const TIMER: u8 = 0x60;
const TICKS: u32 = 2000;
/// 200 us at the APIC timer's 1 GHz.
const PERIOD: u32 = 200_000;

static TAKEN: AtomicU32 = AtomicU32::new(0);

fn hook(_cpu: usize, vector: u8) {
    if vector == TIMER {
        TAKEN.fetch_add(1, SeqCst);
    }
}

fn main() {
    smp::set_hook(hook);
    smp::boot(ap_main, |_| Start::Normal);
    lapic_write(APIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    lapic_write(APIC_LVT_TIMER, u32::from(TIMER) | LVT_TIMER_PERIODIC);
    lapic_write(APIC_TIMER_INITIAL, PERIOD);
    pc::cli();
    while TAKEN.load(SeqCst) < TICKS {
        pc::sti_hlt();
        pc::cli();
    }
    lapic_write(APIC_LVT_TIMER, LVT_MASKED);
    lapic_write(APIC_TIMER_INITIAL, 0);
    say!("bench_apictimer: {TICKS} ticks");
    exit(0)
}

fn ap_main(_cpu: usize) -> ! {
    smp::park()
}
