//! A guest that tries to wear the kernel APIC down (yakvm `--kernel-apic`, best with
//! `--smp 8`): once every AP is online, for 3 s of the guest's time,
//! - the even CPUs take interrupts (`sti`): their APIC timers periodic at the fastest
//!   rate (initial count 1, divider 1), and they send fixed IPIs to all but themselves as
//!   fast as they can (an IPI storm across every vCPU);
//! - the odd CPUs never take an interrupt, so never send an EOI (`cli`: their IRRs fill),
//!   run their timers at the fastest rate too, and write pseudo-random values to every
//!   register of their APIC page (0x000-0x3f0), the ICR included, whose delivery mode is
//!   forced to fixed (an INIT, SIPI or NMI would restart or stop the guest's own CPUs and
//!   end the test early) and whose vector is kept at 0x20 or above (vectors 16-31 are legal
//!   in a fixed IPI, and the CPU that takes one runs the exception handler of that vector,
//!   which ends this guest), and the ID register excepted (the guest finds its per-CPU
//!   data by APIC ID).
//! Then the BSP says so and ends the run, status 0. The host must stay healthy meanwhile
//! (the test runs a shell loop beside it and checks the kernel log).
//!
//! Output on COM1 (with `--smp 8`): the MP table line, `cpu N online` lines, then
//! ```text
//! apic_hostile: 8 cpus for 3 s
//! apic_hostile: done
//! ```
//!
//! Run: `yakvm run --machine pc --smp 8 --kernel-apic build/guests/apic_hostile.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, pc, say};

yakvm_guests::entry!(main);

const STORM_VECTOR: u8 = 0x60;
const TIMER_VECTOR: u8 = 0x61;
const HOSTILE_US: u64 = 3_000_000;
/// ICR low's delivery mode field (10-8), and the first vector that is not an exception's.
const ICR_MODE: u32 = 7 << 8;
const FIRST_INTERRUPT_VECTOR: u32 = 0x20;

static GO: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

fn main() {
    let (mp, missing) = smp::boot(ap_main, |_| Start::Normal);
    if missing != 0 {
        say!("apic_hostile FAIL: {missing} cpus did not answer");
        exit(STATUS_NO_ANSWER);
    }
    say!("apic_hostile: {} cpus for {} s", mp.aps().count() + 1, HOSTILE_US / 1_000_000);
    GO.store(true, SeqCst);
    // The BSP (CPU 0, even) only keeps time: its interrupts come from the storm.
    fastest_timer();
    pc::sti();
    // Starved by the storm, this CPU reads the PIT too seldom for its clock to keep its
    // turns: the CMOS clock bounds the phase in wall-clock seconds too.
    delay_us_bounded(HOSTILE_US);
    pc::cli();
    STOP.store(true, SeqCst);
    lapic_write(APIC_LVT_TIMER, LVT_MASKED);
    say!("apic_hostile: done");
    exit(0)
}

fn fastest_timer() {
    lapic_write(APIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    lapic_write(APIC_LVT_TIMER, u32::from(TIMER_VECTOR) | LVT_TIMER_PERIODIC);
    lapic_write(APIC_TIMER_INITIAL, 1);
}

fn ap_main(cpu: usize) -> ! {
    while !GO.load(SeqCst) {
        core::hint::spin_loop();
    }
    fastest_timer();
    if cpu % 2 == 0 {
        pc::sti();
        while !STOP.load(SeqCst) {
            lapic_write(APIC_ICR_LOW, ICR_ALL_BUT_SELF | u32::from(STORM_VECTOR));
        }
        pc::cli();
        smp::park()
    }
    // xorshift: a different sequence on each CPU.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (cpu as u64) << 32;
    while !STOP.load(SeqCst) {
        for reg in (0..0x400u32).step_by(0x10) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let value = seed as u32;
            match reg {
                APIC_ID => {}
                APIC_ICR_LOW => lapic_write(reg, (value & !ICR_MODE) | FIRST_INTERRUPT_VECTOR.max(value & 0xff)),
                _ => lapic_write(reg, value),
            }
        }
    }
    smp::park()
}
