//! `make bench`: timer interrupts delivered. The PIT at 5 kHz (yakvm's fastest delivered
//! rate, as KVM's PIT), 2000 interrupts waited for with `sti; hlt`, each acknowledged
//! with an EOI; the ticks the guest was too slow to take merge. Interrupts per second:
//! 2000 / run time.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use yakvm_guests::{exit, pc};

yakvm_guests::entry!(main);

const TICKS_WANTED: u64 = 2000;
static TICKS: AtomicU64 = AtomicU64::new(0);

fn on_tick() {
    TICKS.fetch_add(1, Ordering::SeqCst);
    pc::eoi(0);
}

fn main() {
    pc::install();
    pc::set_handler(0, on_tick);
    pc::pic_init(1 << 0);
    pc::pit_init(5000);
    loop {
        pc::cli();
        if TICKS.load(Ordering::SeqCst) >= TICKS_WANTED {
            break;
        }
        pc::sti_hlt();
    }
    pc::mask_irq(0);
    exit(0)
}
