//! A hostile SMP guest: an AP sends INIT to the BSP. Once every AP is online, the BSP says
//! so and spins for ever; the first AP then sends it INIT (which leaves the BSP waiting for
//! a SIPI that never comes), says so and parks (`cli; hlt`) like every other AP. No vCPU
//! can run again: the emulator must end the run, with a message, and a non-zero status.
//!
//! Output on COM1 (figures on lines that start with two spaces), with `--smp 2`:
//! ```text
//! mp table: 2 cpus (apic ids 0 1), bsp 0, local apic at 0xfee00000, io apic 2 at 0xfec00000
//! cpu 0 online
//! cpu 1 online
//! initbsp: cpu 0 spins; cpu 1 sends it INIT
//! cpu 1 sent INIT to cpu 0
//! ```
//! then nothing: the end of the run is the emulator's. If the BSP still runs 10 s after
//! the INIT: `initbsp FAIL: cpu 0 still runs after INIT`, exit status 1; 2 if an AP did
//! not answer, 1 without an AP.
//!
//! Run: `yakvm run --machine pc --smp 2 build/guests/smp_initbsp.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, say};

yakvm_guests::entry!(main);

/// Set once the BSP said it spins; and by the AP once its INIT was sent.
static READY: AtomicBool = AtomicBool::new(false);
static SENT: AtomicBool = AtomicBool::new(false);
/// The AP that sends the INIT.
static SENDER: AtomicU32 = AtomicU32::new(u32::MAX);

const AFTER_INIT_US: u64 = 10_000_000;

fn main() {
    let (mp, missing) = smp::boot(ap_main, |_| Start::Normal);
    if missing != 0 {
        say!("smp FAIL: {missing} cpus did not answer");
        exit(STATUS_NO_ANSWER);
    }
    let Some(sender) = mp.aps().next() else {
        say!("initbsp FAIL: needs an ap (--smp 2 or more)");
        exit(STATUS_FAILED);
    };
    SENDER.store(sender.into(), SeqCst);
    say!("initbsp: cpu {} spins; cpu {sender} sends it INIT", mp.bsp);
    READY.store(true, SeqCst);
    // From here the INIT may come at any instruction.
    while !SENT.load(SeqCst) {
        core::hint::spin_loop();
    }
    delay_us(AFTER_INIT_US);
    say!("initbsp FAIL: cpu {} still runs after INIT", mp.bsp);
    exit(STATUS_FAILED)
}

fn ap_main(cpu: usize) -> ! {
    // READY comes after SENDER is set.
    while !READY.load(SeqCst) {
        core::hint::spin_loop();
    }
    if cpu as u32 == SENDER.load(SeqCst) {
        let bsp = smp::bsp();
        send_ipi(bsp as u8, ICR_INIT | ICR_LEVEL | ICR_ASSERT);
        say!("cpu {cpu} sent INIT to cpu {bsp}");
        SENT.store(true, SeqCst);
    }
    smp::park()
}
