//! The 16550A UART with interrupts: IRQ4 unmasked, IER = received data | THR empty, MCR
//! OUT2 set. The IRQ4 handler reads IIR until no interrupt is pending, moves received
//! bytes into a receive ring and feeds the transmitter from a transmit ring, one byte per
//! THR-empty interrupt. The main loop sleeps with `sti; hlt` until bytes arrive and echoes
//! each one uppercased through the transmit ring. A newline after `quit` has been seen, or
//! a 0x04 byte, ends it: the ring is drained, then `rx N tx-irqs M` (bytes received,
//! THR-empty interrupts taken) is printed by polling; exit status 0, or 1 (after a FAIL
//! line) if no THR-empty interrupt came.
//!
//! Run: `printf 'hello\nquit\n' | yakvm run --machine pc build/guests/pc_uart.bin`
//! prints `HELLO`, `QUIT`, `rx 11 tx-irqs M`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use yakvm_guests::pc::{self, COM1, Ring};
use yakvm_guests::{exit, outb};

yakvm_guests::entry!(main);

static RX: Ring = Ring::new();
static TX: Ring = Ring::new();
/// A byte sent from `TX` is in the transmitter: the next THR-empty interrupt sends on.
static TX_BUSY: AtomicBool = AtomicBool::new(false);
static RX_BYTES: AtomicU64 = AtomicU64::new(0);
static TX_IRQS: AtomicU64 = AtomicU64::new(0);

fn on_uart() {
    loop {
        let iir = pc::inb(COM1 + pc::IIR);
        if iir & pc::IIR_NONE != 0 {
            break;
        }
        match iir & pc::IIR_ID {
            pc::IIR_RDA | pc::IIR_TIMEOUT => {
                while pc::inb(COM1 + pc::LSR) & pc::LSR_DR != 0 {
                    let b = pc::inb(COM1 + pc::RBR);
                    RX_BYTES.fetch_add(1, Ordering::SeqCst);
                    RX.push(b);
                }
            }
            pc::IIR_THRE => {
                TX_IRQS.fetch_add(1, Ordering::SeqCst);
                // Reading IIR cleared the interrupt; send only if the THR really is empty.
                if pc::inb(COM1 + pc::LSR) & pc::LSR_THRE != 0 {
                    match TX.pop() {
                        Some(b) => outb(COM1 + pc::THR, b),
                        None => TX_BUSY.store(false, Ordering::SeqCst),
                    }
                }
            }
            pc::IIR_LINE => {
                pc::inb(COM1 + pc::LSR);
            }
            _ => {
                pc::inb(COM1 + pc::MSR);
            }
        }
    }
    pc::eoi(4);
}

/// The next received byte; sleeps until there is one. Returns with interrupts enabled.
fn recv() -> u8 {
    loop {
        pc::cli();
        if let Some(b) = RX.pop() {
            pc::sti();
            return b;
        }
        pc::sti_hlt();
    }
}

/// Queues `b` for interrupt-driven transmission, and starts the transmitter if idle.
fn send(b: u8) {
    loop {
        pc::cli();
        if TX.push(b) {
            break;
        }
        pc::sti_hlt(); // full: a THR-empty interrupt will make room
    }
    if !TX_BUSY.load(Ordering::SeqCst)
        && let Some(first) = TX.pop()
    {
        TX_BUSY.store(true, Ordering::SeqCst);
        outb(COM1 + pc::THR, first);
    }
    pc::sti();
}

fn main() {
    pc::install();
    pc::set_handler(4, on_uart);
    pc::pic_init(1 << 4);
    pc::uart_init(pc::IER_RDA | pc::IER_THRE, pc::MCR_DTR_RTS | pc::MCR_OUT2);
    pc::sti();

    let mut last4 = [0u8; 4];
    let mut seen_quit = false;
    loop {
        let b = recv();
        if b == 0x04 {
            break;
        }
        send(b.to_ascii_uppercase());
        if b == b'\n' && seen_quit {
            break;
        }
        last4 = [last4[1], last4[2], last4[3], b];
        seen_quit |= &last4 == b"quit";
    }

    // Drain: the ring empty and the last byte's THR-empty interrupt taken, then the
    // transmitter idle.
    loop {
        pc::cli();
        if TX.is_empty() && !TX_BUSY.load(Ordering::SeqCst) {
            break;
        }
        pc::sti_hlt();
    }
    while pc::inb(COM1 + pc::LSR) & pc::LSR_TEMT == 0 {
        core::hint::spin_loop();
    }
    outb(COM1 + pc::IER, 0);
    pc::mask_irq(4);

    let tx_irqs = TX_IRQS.load(Ordering::SeqCst);
    pc::print("rx ");
    pc::print_u64(RX_BYTES.load(Ordering::SeqCst));
    pc::print(" tx-irqs ");
    pc::print_u64(tx_irqs);
    pc::print("\n");
    if tx_irqs == 0 {
        pc::print("FAIL no THR-empty interrupt\n");
        exit(1);
    }
    exit(0)
}
