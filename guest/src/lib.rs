//! What every yakvm guest program shares: port I/O, the serial port, ending the run, and
//! the entry point. Guests run in 64-bit mode, entered by the emulator with a stack.
#![no_std]

/// Serial port: every byte written goes to the emulator's standard output.
pub const SERIAL_PORT: u16 = 0x10;
/// Exit port: writing V ends the run with exit status V.
pub const EXIT_PORT: u16 = 0xf4;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: a port write; in a yakvm guest every port access exits to the emulator.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a string to the serial port.
pub fn print(s: &str) {
    for b in s.bytes() {
        outb(SERIAL_PORT, b);
    }
}

/// Ends the run with `status` as the emulator's exit status.
pub fn exit(status: u8) -> ! {
    outb(EXIT_PORT, status);
    halt()
}

/// Halts (the emulator ends the run with status 0).
pub fn halt() -> ! {
    loop {
        // SAFETY: HLT only stops this vCPU until the next event.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}

/// Declares `$main` the guest's entry: `_start` calls it, then halts.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = ".text.start")]
        pub extern "C" fn _start() -> ! {
            $main();
            $crate::halt()
        }
    };
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    print("guest panic\n");
    exit(101)
}
