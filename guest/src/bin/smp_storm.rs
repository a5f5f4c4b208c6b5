//! A hostile SMP guest: an IPI storm. Once every AP is online, each fires IPIs as fast as
//! it can (interrupts enabled, its handler sends the EOI): a self-IPI by shorthand and a
//! fixed IPI to the next AP (APs in a ring; with one AP, itself), back to back, with no
//! wait for the delivery status. The BSP, which no IPI targets, lets it run for 2 s (by
//! the PIT), tells the APs to stop, waits for them (they park: `cli; hlt`) and ends the run.
//!
//! Output on COM1 (figures on lines that start with two spaces), with `--smp 4`:
//! ```text
//! mp table: 4 cpus (apic ids 0 1 2 3), bsp 0, local apic at 0xfee00000, io apic 4 at 0xfec00000
//! cpu 0 online
//! cpu 1 online
//! cpu 2 online
//! cpu 3 online
//! storm: 3 aps fire IPIs for 2 s
//! storm ok: the aps stopped when told, every IPI taken at most once
//! ```
//! Exit status 0; 1 if the APs did not stop within 10 s, took an IPI more often than it
//! was sent, or took none, or the BSP took one; 2 if an AP did not answer. When an AP does
//! not stop, each AP's figures are printed twice, 1 s apart (whether it stopped, its loops
//! and the IPIs it took): they tell an AP that runs on without seeing STOP from one stuck
//! in its handler or not running at all.
//!
//! Run: `yakvm run --machine pc --smp 4 build/guests/smp_storm.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, fail, pc, say};

yakvm_guests::entry!(main);

const SELF_VECTOR: u8 = 0x50;
const PEER_VECTOR: u8 = 0x51;
const STORM_US: u64 = 2_000_000;
const STOP_TIMEOUT_US: u64 = 10_000_000;

/// Set once every AP is online (their peers exist), and when the storm ends.
static GO: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
/// The APs (bit = APIC id), APs stopped (a count and a mask), IPIs each AP sent (of each
/// vector; kept up to date while it loops).
static AP_MASK: AtomicU32 = AtomicU32::new(0);
static STOPPED: AtomicU32 = AtomicU32::new(0);
static STOPPED_MASK: AtomicU32 = AtomicU32::new(0);
static SENT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn main() {
    let (mp, missing) = smp::boot(ap_main, |_| Start::Normal);
    if missing != 0 {
        say!("smp FAIL: {missing} cpus did not answer");
        exit(STATUS_NO_ANSWER);
    }
    let aps = mp.aps().count() as u32;
    AP_MASK.store(mp.aps().fold(0, |m, id| m | 1 << id), SeqCst);
    say!("storm: {aps} aps fire IPIs for {} s", STORM_US / 1_000_000);
    GO.store(true, SeqCst);
    delay_us(STORM_US);
    STOP.store(true, SeqCst);
    if !wait_until(STOP_TIMEOUT_US, || STOPPED.load(SeqCst) == aps) {
        say!("storm FAIL: {} of {aps} aps stopped in {} s", STOPPED.load(SeqCst), STOP_TIMEOUT_US / 1_000_000);
        for _ in 0..2 {
            for id in mp.aps() {
                let cpu = usize::from(id);
                let (stopped, loops) = (STOPPED_MASK.load(SeqCst) & 1 << cpu != 0, SENT[cpu].load(SeqCst));
                let (own, peer) = (received(cpu, SELF_VECTOR), received(cpu, PEER_VECTOR));
                say!("  cpu {cpu}: stopped {stopped}, {loops} loops, took {own} self and {peer} peer IPIs");
            }
            delay_us(1_000_000);
        }
        exit(STATUS_FAILED);
    }
    // What was sent, what was taken: an IRR bit merges IPIs of one vector, never makes more.
    let (mut sent, mut taken) = (0, 0);
    for id in mp.aps() {
        let cpu = usize::from(id);
        let own = u64::from(received(cpu, SELF_VECTOR));
        if own > SENT[cpu].load(SeqCst) || own == 0 {
            fail!("cpu {cpu}: took its self-IPI {own} times, sent {}", SENT[cpu].load(SeqCst));
        }
        sent += 2 * SENT[cpu].load(SeqCst);
        taken += own + u64::from(received(cpu, PEER_VECTOR));
    }
    let bsp = usize::from(mp.bsp);
    if received(bsp, SELF_VECTOR) + received(bsp, PEER_VECTOR) != 0 {
        fail!("cpu {bsp}: took storm IPIs meant for the aps");
    }
    if taken > sent {
        fail!("the aps took {taken} IPIs, {sent} were sent");
    }
    say!("  storm: {sent} IPIs sent, {taken} taken");
    if FAILURES.load(SeqCst) != 0 {
        say!("storm FAIL: see above");
        exit(STATUS_FAILED);
    }
    say!("storm ok: the aps stopped when told, every IPI taken at most once");
    exit(0)
}

fn ap_main(cpu: usize) -> ! {
    while !GO.load(SeqCst) {
        core::hint::spin_loop();
    }
    let aps = AP_MASK.load(SeqCst);
    let peer = (1..=MAX_CPUS).map(|i| (cpu + i) % MAX_CPUS).find(|&c| aps & 1 << c != 0).unwrap_or(cpu) as u32;
    pc::sti();
    let mut sent = 0;
    while !STOP.load(SeqCst) {
        lapic_write(APIC_ICR_LOW, ICR_SELF | u32::from(SELF_VECTOR));
        // The two writes must not be split by a handler using the ICR: ours do not.
        lapic_write(APIC_ICR_HIGH, peer << 24);
        lapic_write(APIC_ICR_LOW, ICR_FIXED | u32::from(PEER_VECTOR));
        sent += 1;
        SENT[cpu].store(sent, SeqCst);
    }
    pc::cli();
    STOPPED_MASK.fetch_or(1 << cpu, SeqCst);
    STOPPED.fetch_add(1, SeqCst);
    smp::park()
}
