//! The clock: PIT channel 0, shared by the CPUs; an alarm on channel 2.
//!
//! Not the TSC: in the nested setups yakvm is tested in (yakvm or KVM inside QEMU), the
//! TSC seen by a guest is not a steady measure of time (calibrated against the PIT, it
//! came out anywhere from 70 to 2460 MHz in runs of one image), and a timeout that ends
//! early makes a check fail for nothing. The PIT counts the emulator's clock.

use crate::pc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};

/// adds the ticks since the last read to `CLOCK_TICKS`. Reads more than a turn apart lose
/// whole turns: the clock may run slow (a timeout lasts longer), never fast.
static CLOCK_LOCK: AtomicBool = AtomicBool::new(false);
static CLOCK_LAST: AtomicU32 = AtomicU32::new(0);
static CLOCK_TICKS: AtomicU64 = AtomicU64::new(0);

/// Spin iterations between two reads of the clock in `wait_until` (a millisecond or so:
/// a read is three exits).
const POLL_SPINS: u32 = 1 << 16;

/// Starts the clock: the PICs initialised with every IRQ masked, channel 0 in mode 2
/// with 65536. The BSP calls it first (`boot` does).
pub fn start_clock() {
    pc::pic_init(0);
    pc::pit_start(0x1_0000);
    CLOCK_LAST.store(pc::pit_read().into(), SeqCst);
}

/// PIT ticks since `start_clock` (reads the counter). The lock is only held with
/// interrupts off, so a handler may read the clock too: the CPU that holds the lock is
/// another one.
pub fn clock() -> u64 {
    pc::without_interrupts(|| {
        while CLOCK_LOCK.compare_exchange_weak(false, true, SeqCst, SeqCst).is_err() {
            core::hint::spin_loop();
        }
        let now = pc::pit_read();
        let last = CLOCK_LAST.swap(now.into(), SeqCst) as u16;
        let ticks = CLOCK_TICKS.fetch_add(last.wrapping_sub(now).into(), SeqCst) + u64::from(last.wrapping_sub(now));
        CLOCK_LOCK.store(false, SeqCst);
        ticks
    })
}

/// Microseconds in `ticks` PIT ticks.
pub fn ticks_to_us(ticks: u64) -> u64 {
    ticks * 1_000_000 / u64::from(pc::PIT_HZ)
}

/// Microseconds since `clock()` was `since`.
pub fn us_since(since: u64) -> u64 {
    ticks_to_us(clock().saturating_sub(since))
}

/// Spins until `cond` holds (`true`) or `timeout_us` passed (`false`; `cond` is asked once
/// more at the end). `cond` is asked at every turn; the clock, every `POLL_SPINS` turns.
pub fn wait_until(timeout_us: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = clock();
    let mut spins = 0u32;
    loop {
        if cond() {
            return true;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(POLL_SPINS) && us_since(start) >= timeout_us {
            return cond();
        }
        core::hint::spin_loop();
    }
}

/// The CMOS clock's seconds (0-59; the register read through ports 0x70/0x71, in BCD as
/// the pc machine's CMOS keeps it).
pub fn rtc_seconds() -> u8 {
    crate::outb(0x70, 0x00);
    let bcd = pc::inb(0x71);
    (bcd >> 4) * 10 + (bcd & 0x0f)
}

/// Spins for at least `us` microseconds or until the CMOS clock's seconds changed more
/// than `us` / 1 000 000 times (at least as many whole seconds went by), whichever comes
/// first. For a CPU that may be starved of its turns for long (a storm of interrupts,
/// a loaded host): the PIT clock loses its turns then and may run many times slow, the
/// CMOS clock cannot for less than a minute.
pub fn delay_us_bounded(us: u64) {
    let seconds = us / 1_000_000;
    let start = clock();
    let mut last = rtc_seconds();
    let mut changes = 0;
    // Both clocks every `POLL_SPINS` turns, as `wait_until` reads the PIT.
    while us_since(start) < us && changes <= seconds {
        for _ in 0..POLL_SPINS {
            core::hint::spin_loop();
        }
        let now = rtc_seconds();
        if now != last {
            last = now;
            changes += 1;
        }
    }
}

/// Spins for at least `us` microseconds (up to a millisecond or so more).
pub fn delay_us(us: u64) {
    wait_until(us, || false);
}

const PORT_B: u16 = 0x61;
const PORT_B_GATE2: u8 = 0x01;
const PORT_B_SPEAKER: u8 = 0x02;
const PORT_B_OUT2: u8 = 0x20;

/// Starts an alarm on PIT channel 2 (mode 0, gate on, speaker off): its OUT, port 0x61
/// bit 5, rises `us` microseconds from now (at most 54 ms) and stays high. A check that
/// needs a lower bound of time uses it: it cannot lose turns as the clock can.
pub fn alarm_start(us: u32) {
    let count = (u64::from(pc::PIT_HZ) * u64::from(us) / 1_000_000).min(0xffff) as u16;
    crate::outb(PORT_B, (pc::inb(PORT_B) & !PORT_B_SPEAKER) | PORT_B_GATE2);
    crate::outb(0x43, 0xb0); // channel 2, low then high byte, mode 0, binary
    crate::outb(0x42, count as u8);
    crate::outb(0x42, (count >> 8) as u8);
}

/// Whether the alarm went off.
pub fn alarm_rang() -> bool {
    pc::inb(PORT_B) & PORT_B_OUT2 != 0
}
