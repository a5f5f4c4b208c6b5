//! `make bench`: timer interrupts delivered. The PIT at 5 kHz (yakvm's fastest delivered
//! rate, as KVM's PIT), 2000 interrupts waited for with `sti; hlt`, each acknowledged
//! with an EOI; the ticks the guest was too slow to take merge. Interrupts per second:
//! 2000 / run time.
#![no_std]
#![no_main]

use yakvm_guests::{exit, pc};

yakvm_guests::entry!(main);

fn main() {
    pc::start_tick_counter(5000);
    pc::wait_for_ticks(2000);
    pc::mask_irq(0);
    exit(0)
}
