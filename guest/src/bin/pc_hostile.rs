//! Guests that try to wear the hypervisor down. One command byte is read from COM1 by
//! polling, `hostile <cmd>` is printed, then:
//! - `p`: PIT channel 0 in mode 2 with divisor 1 (the fastest), IRQ0 unmasked, and a
//!   handler that never sends the EOI; spins forever.
//! - `e`: PIT divisor 2, the handler sends the EOI (an interrupt storm); spins forever.
//! - `u`: floods COM1 with lines of text forever (polling, no interrupts).
//! - `h`: `cli; hlt`, which ends the run with status 0.
//! - `i`: `sti; hlt` forever with every IRQ masked: waits for an interrupt that never comes.
//!
//! Any other byte: `FAIL unknown command`, exit status 1.
//!
//! Run: `printf p | yakvm run --machine pc build/guests/pc_hostile.bin` (and so on).
#![no_std]
#![no_main]

use yakvm_guests::{exit, halt, pc};

yakvm_guests::entry!(main);

fn no_eoi() {}

fn with_eoi() {
    pc::eoi(0);
}

/// IRQ0 from the PIT at `divisor`, handled by `handler`; spins forever.
fn timer_storm(divisor: u32, handler: fn()) -> ! {
    pc::set_handler(0, handler);
    pc::pic_init(1 << 0);
    pc::pit_start(divisor);
    pc::sti();
    loop {
        core::hint::spin_loop();
    }
}

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::install();
    let cmd = pc::getc();
    if !matches!(cmd, b'p' | b'e' | b'u' | b'h' | b'i') {
        pc::print("FAIL unknown command\n");
        exit(1);
    }
    pc::print("hostile ");
    pc::putc(cmd);
    pc::print("\n");
    match cmd {
        b'p' => timer_storm(1, no_eoi),
        b'e' => timer_storm(2, with_eoi),
        b'u' => loop {
            pc::print("yakvm hostile guest flooding the serial port\n");
        },
        b'h' => {
            pc::cli();
            halt()
        }
        _ => {
            pc::pic_init(0);
            loop {
                pc::sti_hlt();
            }
        }
    }
}
