//! The local APIC timer's TSC-deadline mode (SDM 11.5.4.1), which yakvm's kernel APIC
//! offers (CPUID.1:ECX bit 24, the IA32_TSC_DEADLINE MSR):
//! - outside the mode the MSR reads 0 and ignores writes;
//! - in the mode the initial count ignores writes and both counts read 0;
//! - `ROUNDS` deadlines a few thousand to a few hundred thousand TSC cycles ahead: each
//!   fires once, never before the guest's TSC reached it (the handler reads the TSC), and
//!   the MSR reads 0 afterwards; a deadline already passed fires at once;
//! - an armed deadline reads back; 0 disarms it, and leaving the mode disarms it: no
//!   interrupt comes once the TSC has passed the deadline.
//!
//! Prints `tsc_deadline: ...` and exits 0, or `tsc_deadline: FAIL ...` and exits 1; exits 2
//! when the mode is not offered (the emulator's APIC, without `--kernel-apic`).
//!
//! Run: `yakvm run --machine pc --kernel-apic build/guests/tsc_deadline.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{cpuid, exit, pc, rdmsr, say, wrmsr};

yakvm_guests::entry!(main);

const TIMER: u8 = 0x61;
const MSR_TSC_DEADLINE: u32 = 0x6e0;
const CPUID_TSC_DEADLINE: u32 = 1 << 24;
/// LVT timer mode bits 18-17 = 10.
const LVT_TSC_DEADLINE: u32 = 2 << 17;
const ROUNDS: u64 = 300;

static TAKEN: AtomicU32 = AtomicU32::new(0);
/// The TSC when the timer's handler ran.
static TAKEN_AT: AtomicU64 = AtomicU64::new(0);

fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads the time stamp counter and nothing else (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn hook(_cpu: usize, vector: u8) {
    if vector == TIMER {
        TAKEN_AT.store(rdtsc(), SeqCst);
        TAKEN.fetch_add(1, SeqCst);
    }
}

fn fail(what: &str, value: u64) -> ! {
    pc::cli();
    say!("tsc_deadline: FAIL {what} ({value:#x})");
    exit(1)
}

fn check(ok: bool, what: &str, value: u64) {
    if !ok {
        fail(what, value);
    }
}

fn deadline_msr() -> u64 {
    rdmsr(MSR_TSC_DEADLINE).unwrap_or_else(|| fail("RDMSR IA32_TSC_DEADLINE raised #GP", 0))
}

fn set_deadline(tsc: u64) {
    check(wrmsr(MSR_TSC_DEADLINE, tsc), "WRMSR IA32_TSC_DEADLINE raised #GP", tsc);
}

/// No timer interrupt in the next 20 ms.
fn quiet(what: &str) {
    let before = TAKEN.load(SeqCst);
    delay_us(20_000);
    let after = TAKEN.load(SeqCst);
    check(after == before, what, u64::from(after - before));
}

/// Arms a deadline, runs `disarm` (interrupts off) and checks that no interrupt comes once
/// the TSC has passed that deadline. A deadline that the TSC passed before `disarm` was
/// done (a slow exit) proves nothing: the next try puts it further ahead.
fn disarmed(what: &str, disarm: impl Fn()) {
    let mut ahead = 2_000_000;
    for _ in 0..6 {
        pc::cli();
        let before = TAKEN.load(SeqCst);
        let deadline = rdtsc() + ahead;
        set_deadline(deadline);
        disarm();
        let done = rdtsc();
        pc::sti();
        if deadline <= done {
            ahead *= 4;
            continue;
        }
        check(wait_until(10_000_000, || rdtsc() > deadline), "the TSC did not reach a deadline in 10 s", deadline);
        delay_us(5_000);
        let after = TAKEN.load(SeqCst);
        check(after == before, what, u64::from(after - before));
        return;
    }
    fail("every deadline passed before it could be disarmed, the last this many cycles ahead", ahead);
}

fn main() {
    smp::set_hook(hook);
    smp::boot(ap_main, |_| Start::Normal);
    if cpuid(1, 0)[2] & CPUID_TSC_DEADLINE == 0 {
        say!("tsc_deadline: not offered (CPUID.1:ECX bit 24 clear)");
        exit(2)
    }
    pc::sti();

    // One-shot mode: the MSR is there but reads 0 and ignores writes.
    lapic_write(APIC_LVT_TIMER, u32::from(TIMER));
    set_deadline(rdtsc() + 1000);
    check(deadline_msr() == 0, "the MSR outside TSC-deadline mode", deadline_msr());
    quiet("an interrupt from a deadline written outside the mode");

    lapic_write(APIC_LVT_TIMER, u32::from(TIMER) | LVT_TSC_DEADLINE);
    let lvt = lapic_read(APIC_LVT_TIMER);
    check(lvt == u32::from(TIMER) | LVT_TSC_DEADLINE, "the LVT timer's mode", lvt.into());
    lapic_write(APIC_TIMER_INITIAL, 1_000_000);
    let counts = (lapic_read(APIC_TIMER_INITIAL), lapic_read(APIC_TIMER_CURRENT));
    check(counts == (0, 0), "the counts in TSC-deadline mode", u64::from(counts.0) << 32 | u64::from(counts.1));
    quiet("an interrupt from an initial count written in TSC-deadline mode");

    // A deadline that has passed fires at once (before the instruction after WRMSR).
    let before = TAKEN.load(SeqCst);
    set_deadline(rdtsc());
    let taken = TAKEN.load(SeqCst);
    check(taken == before + 1, "interrupts from a deadline already passed", u64::from(taken - before));
    check(deadline_msr() == 0, "the MSR after the timer fired", deadline_msr());

    // Deadlines ahead: each fires once, never early.
    let mut latest = 0;
    for round in 0..ROUNDS {
        let before = TAKEN.load(SeqCst);
        let deadline = rdtsc() + 5_000 + round * 997;
        set_deadline(deadline);
        check(wait_until(1_000_000, || TAKEN.load(SeqCst) != before), "no interrupt within 1 s of a deadline", deadline);
        let at = TAKEN_AT.load(SeqCst);
        check(at >= deadline, "an interrupt before its deadline, cycles early", deadline - at.min(deadline));
        latest = latest.max(at - deadline);
        check(TAKEN.load(SeqCst) == before + 1, "interrupts for one deadline", u64::from(TAKEN.load(SeqCst) - before));
        check(deadline_msr() == 0, "the MSR after the timer fired", deadline_msr());
    }

    // Armed far ahead: reads back.
    let far = rdtsc() + (1 << 40);
    set_deadline(far);
    check(deadline_msr() == far, "the MSR of an armed deadline", deadline_msr());
    // 0 disarms; so does leaving the mode (the MSR reads 0 when the mode is back).
    disarmed("an interrupt after the deadline was disarmed by 0", || set_deadline(0));
    check(deadline_msr() == 0, "the MSR after writing 0", deadline_msr());
    disarmed("an interrupt from a deadline disarmed by a mode change", || {
        lapic_write(APIC_LVT_TIMER, u32::from(TIMER));
        check(deadline_msr() == 0, "the MSR after leaving the mode", deadline_msr());
        lapic_write(APIC_LVT_TIMER, u32::from(TIMER) | LVT_TSC_DEADLINE);
    });
    check(deadline_msr() == 0, "the MSR after coming back to the mode", deadline_msr());

    pc::cli();
    lapic_write(APIC_LVT_TIMER, LVT_MASKED);
    say!("tsc_deadline: {ROUNDS} deadlines each fired once and none early (latest {latest} TSC cycles after its deadline); MSR 0 outside the mode, after firing, after 0 and after a mode change");
    exit(0)
}

fn ap_main(_cpu: usize) -> ! {
    smp::park()
}
