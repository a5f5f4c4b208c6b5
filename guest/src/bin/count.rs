//! Writes COUNT bytes to the serial port, one OUT each: 'a'..'z' repeating. The test
//! checks that exactly these bytes arrive, in order.
#![no_std]
#![no_main]

yakvm_guests::entry!(main);

const COUNT: u32 = 5000;

fn main() {
    for i in 0..COUNT {
        yakvm_guests::outb(yakvm_guests::SERIAL_PORT, b'a' + (i % 26) as u8);
    }
}
