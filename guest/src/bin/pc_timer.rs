//! The PC timer: the PICs initialised with only IRQ0 unmasked, PIT channel 0 at 100 Hz,
//! 100 timer interrupts waited for with `sti; hlt` (the handler counts and sends the EOI).
//! Then IRQ0 is masked and the count printed; last, the channel-0 counter, latched and
//! read twice a little apart, must have moved. Output on COM1:
//! `ticks 100` then `ok pit counter moves`; exit status 0 (1 if a check failed).
//!
//! Run: `yakvm run --machine pc build/guests/pc_timer.bin`
#![no_std]
#![no_main]

use yakvm_guests::{exit, outb, pc};

yakvm_guests::entry!(main);

const TICKS_WANTED: u64 = 100;

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::start_tick_counter(100);
    pc::wait_for_ticks(TICKS_WANTED);
    pc::mask_irq(0);
    let ticks = pc::ticks();
    pc::print("ticks ");
    pc::print_u64(ticks);
    pc::print("\n");

    let before = pc::pit_read();
    for _ in 0..200 {
        outb(0x80, 0); // each port write exits to the emulator: some microseconds
    }
    let after = pc::pit_read();
    let moves = before != after;
    pc::print(if moves { "ok pit counter moves\n" } else { "FAIL pit counter moves\n" });
    exit(u8::from(ticks != TICKS_WANTED || !moves))
}
