//! A minute of a busy guest under a 1 kHz local APIC timer: the timer periodic at 1 ms,
//! the vCPU spinning with interrupts enabled (never HLT: its host thread always has work)
//! until 60 000 timer interrupts were taken, each acknowledged with an EOI by MMIO. The
//! test then checks the image's `dmesg` for soft lockup reports: a vCPU thread must leave
//! its CPU to the host's scheduler whatever its guest does.
//!
//! Run: `yakvm run --machine pc build/guests/apic_timer_minute.bin` prints
//! `apic_timer_minute: 60000 ticks` after about a minute.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, pc, say};

yakvm_guests::entry!(main);

const TIMER: u8 = 0x60;
const TICKS: u32 = 60_000;
/// 1 ms at the APIC timer's 1 GHz.
const PERIOD: u32 = 1_000_000;

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
    pc::sti();
    while TAKEN.load(SeqCst) < TICKS {
        core::hint::spin_loop();
    }
    pc::cli();
    lapic_write(APIC_LVT_TIMER, LVT_MASKED);
    lapic_write(APIC_TIMER_INITIAL, 0);
    say!("apic_timer_minute: {TICKS} ticks");
    exit(0)
}

fn ap_main(_cpu: usize) -> ! {
    smp::park()
}
