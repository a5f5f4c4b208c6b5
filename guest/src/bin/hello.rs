//! The demo guest: greets through the serial port, then halts.
#![no_std]
#![no_main]

yakvm_guests::entry!(main);

fn main() {
    yakvm_guests::print("Hello from a yakvm guest!\n");
}
