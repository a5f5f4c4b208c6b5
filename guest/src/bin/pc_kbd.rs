//! The PS/2 keyboard on the i8042 (`--vga`): the controller's self test and the
//! keyboard's reset answered by polling, then keys typed into the console read by the
//! IRQ1 handler as scan codes (set 1). The handler reads port 0x60 while the status
//! port says a byte is there and keeps the bytes in a ring; `main` waits for eight of
//! them, prints them and checks them against what `aB` and Enter type. Exit status 0 if
//! all is as expected, 1 otherwise (after a FAIL line).
//!
//! Run: `(sleep 2; printf 'aB\n') | yakvm run --machine pc --vga build/guests/pc_kbd.bin`
//! prints:
//!
//! ```text
//! ok controller self test 0x55
//! ok keyboard reset 0xfa 0xaa
//! keys 1e 9e 2a 30 b0 aa 1c 9c
//! ok aB and Enter as set 1 scan codes, read by the IRQ1 handler
//! ```
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use yakvm_guests::pc::{self, Ring};
use yakvm_guests::{exit, outb};

yakvm_guests::entry!(main);

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
const STATUS_OBF: u8 = 1 << 0;
const KEYBOARD_IRQ: u8 = 1;
/// What typing `a`, `B` and Enter gives: make and break codes, Left Shift around the B.
const EXPECTED: [u8; 8] = [0x1e, 0x9e, 0x2a, 0x30, 0xb0, 0xaa, 0x1c, 0x9c];

static KEYS: Ring = Ring::new();
static READ_BY_IRQ: AtomicU64 = AtomicU64::new(0);

fn on_keyboard() {
    while pc::inb(STATUS) & STATUS_OBF != 0 {
        KEYS.push(pc::inb(DATA));
        READ_BY_IRQ.fetch_add(1, Ordering::SeqCst);
    }
    pc::eoi(KEYBOARD_IRQ);
}

/// The next byte from the controller, by polling (interrupts off).
fn poll() -> u8 {
    while pc::inb(STATUS) & STATUS_OBF == 0 {
        core::hint::spin_loop();
    }
    pc::inb(DATA)
}

fn print_hex(b: u8) {
    pc::putc(b"0123456789abcdef"[usize::from(b >> 4)]);
    pc::putc(b"0123456789abcdef"[usize::from(b & 0xf)]);
}

fn fail(what: &str) -> ! {
    pc::print("FAIL ");
    pc::print(what);
    pc::print("\n");
    exit(1)
}

fn main() {
    pc::install();
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::set_handler(KEYBOARD_IRQ, on_keyboard);
    pc::pic_init(1 << KEYBOARD_IRQ);
    // Interrupts are off: these replies are polled (their IRQ1 edges find nothing left).
    if pc::inb(STATUS) & STATUS_OBF != 0 {
        fail("a byte was waiting before the guest looked (type later)");
    }
    outb(STATUS, 0xaa);
    let reply = poll();
    if reply != 0x55 {
        fail("controller self test");
    }
    pc::print("ok controller self test 0x55\n");
    outb(DATA, 0xff);
    let (ack, done) = (poll(), poll());
    if (ack, done) != (0xfa, 0xaa) {
        fail("keyboard reset");
    }
    pc::print("ok keyboard reset 0xfa 0xaa\n");

    let mut got = [0u8; EXPECTED.len()];
    for slot in got.iter_mut() {
        *slot = loop {
            pc::cli();
            if let Some(b) = KEYS.pop() {
                pc::sti();
                break b;
            }
            pc::sti_hlt();
        };
    }
    pc::print("keys");
    for b in got {
        pc::print(" ");
        print_hex(b);
    }
    pc::print("\n");
    if got != EXPECTED || READ_BY_IRQ.load(Ordering::SeqCst) < EXPECTED.len() as u64 {
        fail("aB and Enter as set 1 scan codes, read by the IRQ1 handler");
    }
    pc::print("ok aB and Enter as set 1 scan codes, read by the IRQ1 handler\n");
    while pc::inb(pc::COM1 + pc::LSR) & pc::LSR_TEMT == 0 {
        core::hint::spin_loop();
    }
    exit(0)
}
