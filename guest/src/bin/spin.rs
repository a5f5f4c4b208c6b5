//! Loops forever without exiting: for Ctrl-C and timeout tests.
#![no_std]
#![no_main]

yakvm_guests::entry!(main);

fn main() {
    yakvm_guests::print("spinning\n");
    loop {
        core::hint::spin_loop();
    }
}
