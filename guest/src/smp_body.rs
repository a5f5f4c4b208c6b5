// The body of guests/smp.bin and guests/smp_x2apic.bin (see src/bin/smp.rs), included by
// both; `X2APIC` is each one's own constant.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, fail, pc, say};

yakvm_guests::entry!(main);

/// IPI vectors: the kind's base plus the sender's APIC id.
const IPI_PHYSICAL: u8 = 0x80;
const IPI_ALL_BUT_SELF: u8 = 0x90;
const IPI_LOGICAL: u8 = 0xa0;
const IPI_KINDS: [u8; 3] = [IPI_PHYSICAL, IPI_ALL_BUT_SELF, IPI_LOGICAL];
/// APIC timer vectors.
const TIMER_PERIODIC: u8 = 0x40;
const TIMER_ONE_SHOT: u8 = 0x41;
/// Periodic ticks wanted, and the initial count for 1 ms: the APIC timer counts at 1 GHz
/// (yakvm's bus clock) with the divider at 1.
const TICKS: u32 = 20;
const ONE_MS: u32 = 1_000_000;
/// The least time 20 ticks of 1 ms may take (20 ms; the alarm's margin covers the time
/// between its start and the timers').
const TICKS_MIN_US: u32 = 18_000;
/// `lock xadd` per CPU.
const XADD_ROUNDS: u64 = 100_000;

/// The phases, in order; `PHASE` holds the current one.
const PHASE_IPI: u32 = 1;
const PHASE_NMI: u32 = 2;
const PHASE_TIMER: u32 = 3;
const PHASE_XADD: u32 = 4;
const PHASE_PARK: u32 = 5;
/// How long the BSP waits for the APs to finish a phase.
const PHASE_TIMEOUT_US: u64 = 60_000_000;
/// How long a CPU waits for what it expects (IPIs, NMIs, ticks).
const WAIT_US: u64 = 10_000_000;
/// How long a CPU waits after that for what should not come (a duplicate, a late tick).
const SETTLE_US: u64 = 10_000;

static PHASE: AtomicU32 = AtomicU32::new(0);
/// APs that finished the current phase.
static DONE: AtomicU32 = AtomicU32::new(0);
/// The CPUs (bit = APIC id) and how many.
static CPU_MASK: AtomicU32 = AtomicU32::new(0);
static CPUS: AtomicU32 = AtomicU32::new(0);

/// Periodic timer ticks per CPU; the clock at the 20th, and whether the alarm had gone
/// off by then.
static PERIODIC: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static TICK_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ALARM_BY_20: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The `lock xadd` phase: CPUs at its start line, the counter.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The CPUs' APIC ids, from `CPU_MASK`.
fn cpus() -> impl Iterator<Item = usize> {
    let mask = CPU_MASK.load(SeqCst);
    (0..MAX_CPUS).filter(move |&c| mask & 1 << c != 0)
}

/// Interrupt hook: the periodic timer stops itself at its 20th tick.
fn hook(cpu: usize, vector: u8) {
    if vector == TIMER_PERIODIC && PERIODIC[cpu].fetch_add(1, SeqCst) + 1 == TICKS {
        stop_timer();
        ALARM_BY_20[cpu].store(alarm_rang(), SeqCst);
        TICK_AT[cpu].store(clock(), SeqCst);
    }
}

/// Masks the timer and writes initial count 0, which stops it.
fn stop_timer() {
    lapic_write(APIC_LVT_TIMER, LVT_MASKED);
    lapic_write(APIC_TIMER_INITIAL, 0);
}

fn main() {
    if X2APIC && !smp::want_x2apic() {
        say!("smp FAIL: x2APIC is not offered (CPUID.1:ECX bit 21)");
        exit(STATUS_FAILED);
    }
    smp::set_hook(hook);
    let (mp, missing) = smp::boot(ap_main, |_| Start::Normal);
    if missing != 0 {
        say!("smp FAIL: {missing} cpus did not answer");
        exit(STATUS_NO_ANSWER);
    }
    let bsp = usize::from(mp.bsp);
    let n = mp.cpus as u32;
    let aps = n - 1;
    CPU_MASK.store(mp.mask().into(), SeqCst);
    CPUS.store(n, SeqCst);
    let mut failed_checks = [""; 5];
    let mut failed = 0;
    let mut summary = |name: &'static str, before: u32, details: core::fmt::Arguments| {
        if FAILURES.load(SeqCst) == before {
            say!("{name} ok: {details}");
        } else {
            say!("{name} FAIL: see above");
            failed_checks[failed] = name;
            failed += 1;
        }
    };

    let before = FAILURES.load(SeqCst);
    run_phase(PHASE_IPI, bsp, aps);
    let each = n * (n - 1);
    summary("ipi", before, format_args!("{each} physical, {each} all-but-self, {each} logical"));

    let before = FAILURES.load(SeqCst);
    run_phase(PHASE_NMI, bsp, aps);
    delay_us(SETTLE_US);
    for cpu in cpus() {
        let (got, want) = (received(cpu, NMI_VECTOR), if cpu == bsp { 0 } else { 2 });
        if got != want {
            fail!("cpu {cpu}: {got} NMIs taken, want {want}");
        }
    }
    summary("nmi", before, format_args!("2 taken by each of {aps} aps"));

    let before = FAILURES.load(SeqCst);
    alarm_start(TICKS_MIN_US);
    run_phase(PHASE_TIMER, bsp, aps);
    summary("apic timer", before, format_args!("{TICKS} periodic ticks and 1 one-shot on each of {n} cpus"));

    let before = FAILURES.load(SeqCst);
    run_phase(PHASE_XADD, bsp, aps);
    let sum = COUNTER.load(SeqCst);
    if sum != u64::from(n) * XADD_ROUNDS {
        fail!("lock xadd: the counter is {sum}, want {n} x {XADD_ROUNDS}");
    }
    summary("lock xadd", before, format_args!("{sum} = {n} cpus x {XADD_ROUNDS}"));

    // The APs park; then nothing may have come anywhere but what the checks sent.
    let before = FAILURES.load(SeqCst);
    run_phase(PHASE_PARK, bsp, aps);
    delay_us(SETTLE_US);
    for cpu in cpus() {
        if smp::starts(cpu) != 1 {
            fail!("cpu {cpu} came through the trampoline {} times", smp::starts(cpu));
        }
        for v in 32..=255u8 {
            let expected = v == TIMER_PERIODIC || v == TIMER_ONE_SHOT || (IPI_PHYSICAL..IPI_LOGICAL + 16).contains(&v);
            let got = received(cpu, v);
            if !expected && got != 0 {
                fail!("cpu {cpu}: vector {v:#x} taken {got} times, want none");
            }
        }
    }
    summary("cpus", before, format_args!("each ap started once, no stray interrupts"));

    if FAILURES.load(SeqCst) == 0 {
        say!("smp ok");
        exit(0);
    }
    smp::console(|w| {
        let _ = core::fmt::Write::write_str(w, "smp FAIL:");
        for name in &failed_checks[..failed] {
            let _ = core::fmt::Write::write_fmt(w, format_args!(" {name};"));
        }
        let _ = core::fmt::Write::write_fmt(w, format_args!(" {} failures\n", FAILURES.load(SeqCst)));
    });
    exit(smp::STATUS_FAILED)
}

/// The BSP starts phase `phase`, does its own part, and waits for the APs'.
fn run_phase(phase: u32, bsp: usize, aps: u32) {
    DONE.store(0, SeqCst);
    PHASE.store(phase, SeqCst);
    if phase != PHASE_PARK {
        work(bsp, phase);
    }
    if !wait_until(PHASE_TIMEOUT_US, || DONE.load(SeqCst) == aps) {
        fail!("phase {phase}: {} of {aps} aps finished in {} s", DONE.load(SeqCst), PHASE_TIMEOUT_US / 1_000_000);
        say!("smp FAIL: phase {phase} did not end");
        exit(smp::STATUS_FAILED);
    }
}

/// The APs: each phase in turn, as the BSP starts them; then park.
fn ap_main(cpu: usize) -> ! {
    let mut phase = 0;
    loop {
        while PHASE.load(SeqCst) == phase {
            core::hint::spin_loop();
        }
        phase = PHASE.load(SeqCst);
        if phase == PHASE_PARK {
            DONE.fetch_add(1, SeqCst);
            smp::park();
        }
        work(cpu, phase);
        DONE.fetch_add(1, SeqCst);
    }
}

fn work(cpu: usize, phase: u32) {
    match phase {
        PHASE_IPI => ipis(cpu),
        PHASE_NMI if cpu == smp::bsp() => send_nmis(),
        PHASE_NMI => await_nmis(cpu),
        PHASE_TIMER => timer(cpu),
        PHASE_XADD => xadd(cpu),
        _ => {}
    }
}

/// Sends this CPU's IPIs, waits for every other CPU's, checks the counts of all the IPI
/// vectors here.
fn ipis(cpu: usize) {
    let me = cpu as u8;
    let mask = CPU_MASK.load(SeqCst) as u8;
    pc::sti();
    let mut sent = true;
    for other in cpus().filter(|&c| c != cpu) {
        sent &= send_ipi(other as u8, ICR_FIXED | u32::from(IPI_PHYSICAL + me));
    }
    sent &= send_ipi(0, ICR_ALL_BUT_SELF | u32::from(IPI_ALL_BUT_SELF + me));
    let others = mask & !(1 << me);
    if others != 0 {
        sent &= send_ipi(others, ICR_LOGICAL | u32::from(IPI_LOGICAL + me));
    }
    if !sent {
        fail!("cpu {cpu}: the ICR stayed busy");
    }
    let all = || cpus().filter(|&s| s != cpu).all(|s| IPI_KINDS.iter().all(|&k| received(cpu, k + s as u8) >= 1));
    wait_until(WAIT_US, all);
    delay_us(SETTLE_US);
    pc::cli();
    for kind in IPI_KINDS {
        for sender in 0..16u8 {
            let want = u32::from(sender != me && mask & 1u8.checked_shl(sender.into()).unwrap_or(0) != 0);
            let got = received(cpu, kind + sender);
            if got != want {
                fail!("cpu {cpu}: vector {:#x} (from cpu {sender}) taken {got} times, want {want}", kind + sender);
            }
        }
    }
}

/// The BSP: two NMIs to each AP, the second once the first was taken.
fn send_nmis() {
    for ap in cpus().filter(|&c| c != smp::bsp()) {
        for k in 1..=2 {
            if !send_ipi(ap as u8, ICR_NMI) {
                fail!("cpu {ap}: the ICR stayed busy");
            }
            if !wait_until(WAIT_US, || received(ap, NMI_VECTOR) >= k) {
                fail!("cpu {ap}: NMI {k} not taken in {} s", WAIT_US / 1_000_000);
                break;
            }
        }
    }
}

/// An AP: waits for its two NMIs with interrupts disabled (NMIs come anyway).
fn await_nmis(cpu: usize) {
    if !wait_until(WAIT_US, || received(cpu, NMI_VECTOR) >= 2) {
        fail!("cpu {cpu}: {} of 2 NMIs taken in {} s", received(cpu, NMI_VECTOR), WAIT_US / 1_000_000);
    }
}

/// The APIC timer on this CPU: periodic at 1 ms for 20 ticks, then one-shot once.
fn timer(cpu: usize) {
    lapic_write(APIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_1);
    lapic_write(APIC_LVT_TIMER, u32::from(TIMER_PERIODIC) | LVT_TIMER_PERIODIC);
    let t0 = clock();
    lapic_write(APIC_TIMER_INITIAL, ONE_MS);
    pc::sti();
    if !wait_until(WAIT_US, || PERIODIC[cpu].load(SeqCst) >= TICKS) {
        pc::cli();
        stop_timer();
        fail!("cpu {cpu}: apic timer: {} of {TICKS} periodic ticks in {} s", PERIODIC[cpu].load(SeqCst), WAIT_US / 1_000_000);
        return;
    }
    let us = ticks_to_us(TICK_AT[cpu].load(SeqCst).saturating_sub(t0));
    say!("  cpu {cpu}: {TICKS} apic timer ticks of 1 ms in {us} us");
    if !ALARM_BY_20[cpu].load(SeqCst) {
        fail!("cpu {cpu}: apic timer: {TICKS} ticks of 1 ms before PIT channel 2 counted {TICKS_MIN_US} us: too fast");
    }
    // Stopped: one more tick may have been pending in the IRR at the stop, no more.
    delay_us(SETTLE_US);
    let ticks = PERIODIC[cpu].load(SeqCst);
    if ticks > TICKS + 1 {
        fail!("cpu {cpu}: apic timer: {ticks} periodic ticks: it did not stop at {TICKS}");
    }
    let current = lapic_read(APIC_TIMER_CURRENT);
    if current != 0 {
        fail!("cpu {cpu}: apic timer: current count {current} once stopped, want 0");
    }

    lapic_write(APIC_LVT_TIMER, u32::from(TIMER_ONE_SHOT));
    lapic_write(APIC_TIMER_INITIAL, ONE_MS);
    wait_until(WAIT_US, || received(cpu, TIMER_ONE_SHOT) >= 1);
    // A one-shot timer that rearmed itself would fire ten more times meanwhile.
    delay_us(SETTLE_US);
    let fired = received(cpu, TIMER_ONE_SHOT);
    let current = lapic_read(APIC_TIMER_CURRENT);
    lapic_write(APIC_LVT_TIMER, LVT_MASKED);
    pc::cli();
    if fired != 1 || current != 0 {
        fail!("cpu {cpu}: one-shot apic timer fired {fired} times (want 1), current count {current} (want 0)");
    }
}

/// `lock xadd` on the shared counter, every CPU at once (they wait for each other first).
fn xadd(cpu: usize) {
    let n = CPUS.load(SeqCst);
    ARRIVED.fetch_add(1, SeqCst);
    if !wait_until(WAIT_US, || ARRIVED.load(SeqCst) == n) {
        fail!("cpu {cpu}: lock xadd: {} of {n} cpus at the start in {} s", ARRIVED.load(SeqCst), WAIT_US / 1_000_000);
    }
    for _ in 0..XADD_ROUNDS {
        let mut value = 1u64;
        // SAFETY: an atomic add to an AtomicU64 through its pointer (what `fetch_add` does;
        // spelled out so that it is LOCK XADD, as asked, not LOCK ADD).
        unsafe { asm!("lock xadd qword ptr [{c}], {v}", c = in(reg) COUNTER.as_ptr(), v = inout(reg) value, options(nostack)) };
        core::hint::black_box(value);
    }
}
