//! `make bench`: IPIs between two CPUs (`--smp 2`). Once the AP is online, the BSP sends
//! it a fixed IPI and waits with `sti; hlt` for the answer, an IPI the AP's handler sends
//! back, 1000 times; the AP waits with `sti; hlt` too. Each round trip is two IPIs, each an
//! ICR write and an EOI by MMIO, a delivery to a halted vCPU and its wake-up. Round trips
//! per second: 1000 / run time (the AP's start, a few milliseconds, included).
//!
//! Run: `yakvm run --machine pc --smp 2 build/guests/bench_ipi.bin`
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, pc, say};

yakvm_guests::entry!(main);

const PING: u8 = 0x40;
const PONG: u8 = 0x41;
const ROUND_TRIPS: u32 = 1000;

/// Answers the AP has taken (the BSP's handler counts them).
static PONGS: AtomicU32 = AtomicU32::new(0);

/// The AP answers each ping; the BSP counts the answers.
fn hook(_cpu: usize, vector: u8) {
    match vector {
        PING => {
            send_ipi(smp::bsp() as u8, ICR_FIXED | u32::from(PONG));
        }
        PONG => {
            PONGS.fetch_add(1, SeqCst);
        }
        _ => {}
    }
}

fn main() {
    smp::set_hook(hook);
    let (mp, missing) = smp::boot(ap_main, |_| Start::Normal);
    let Some(ap) = mp.aps().next().filter(|_| missing == 0) else {
        say!("bench_ipi FAIL: it needs two CPUs (--smp 2)");
        exit(STATUS_FAILED);
    };
    for n in 1..=ROUND_TRIPS {
        pc::cli();
        send_ipi(ap, ICR_FIXED | u32::from(PING));
        // `sti; hlt` with the check made with interrupts off: the answer cannot be missed.
        while PONGS.load(SeqCst) < n {
            pc::sti_hlt();
            pc::cli();
        }
    }
    say!("bench_ipi: {ROUND_TRIPS} round trips");
    exit(0)
}

fn ap_main(_cpu: usize) -> ! {
    loop {
        pc::sti_hlt();
    }
}
