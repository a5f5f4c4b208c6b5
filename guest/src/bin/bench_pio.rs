//! `make bench`: port I/O round trips to userspace. 20000 OUTs to the scratch port (0xff),
//! each an exit the emulator handles, then the exit port. Per exit: run time / 20000.
#![no_std]
#![no_main]

yakvm_guests::entry!(main);

const EXITS: u32 = 20_000;

fn main() {
    for i in 0..EXITS {
        yakvm_guests::outb(0xff, i as u8);
    }
    yakvm_guests::exit(0)
}
