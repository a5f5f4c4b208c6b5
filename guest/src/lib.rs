//! What every yakvm guest program shares: port I/O, the serial port, ending the run, and
//! the entry point. Guests run in 64-bit mode, entered by the emulator with a stack.
#![no_std]

pub mod disk_suite;
pub mod multiboot_entry;
pub mod pc;
pub mod smp;
pub mod tables;
pub mod trap;
pub mod virtio_pci;

use x86_64::registers::model_specific::Msr;

/// Serial port: every byte written goes to the emulator's standard output.
pub const SERIAL_PORT: u16 = 0x10;
/// Exit port: writing V ends the run with exit status V.
pub const EXIT_PORT: u16 = 0xf4;
/// The emulator's default MMIO window (for RAM up to 3 GiB): port P is at MMIO_BASE + P * 8.
pub const MMIO_BASE: u64 = 0xc000_0000;

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: a port write; in a yakvm guest every port access exits to the emulator.
    unsafe { x86_64::instructions::port::Port::new(port).write(value) };
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
        x86_64::instructions::hlt();
    }
}

/// Declares `$main` the guest's entry: `_start` calls it, then halts. The emulator enters
/// with RSP 16-byte aligned (as Linux enters a process); the `call` leaves it 8 below a
/// multiple of 16, which is what the ABI promises a function at entry (SSE spills of the
/// compiler rely on it).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        extern "C" fn yakvm_guest_main() -> ! {
            $main();
            $crate::halt()
        }
        core::arch::global_asm!(
            ".pushsection .text.start, \"ax\"",
            ".globl _start",
            "_start:",
            "call {main}",
            ".popsection",
            main = sym yakvm_guest_main,
        );
    };
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    print("guest panic\n");
    exit(101)
}

/// Writes `n` in decimal to the serial port.
pub fn print_u64(n: u64) {
    put_u64(n, |b| outb(SERIAL_PORT, b));
}

/// Writes `n` in decimal, a byte at a time, with `put` (the serial port, the UART, ...).
pub fn put_u64(mut n: u64, put: impl FnMut(u8)) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[i..].iter().copied().for_each(put);
}

/// Reports one check: prints "ok <what>" or "FAIL <what>", and counts failures.
pub struct Checks {
    failed: u32,
}

impl Checks {
    pub const fn new() -> Self {
        Self { failed: 0 }
    }

    pub fn check(&mut self, what: &str, ok: bool) {
        print(if ok { "ok " } else { "FAIL " });
        print(what);
        print("\n");
        self.failed += u32::from(!ok);
    }

    /// Ends the run: status 0 if every check passed, 1 otherwise.
    pub fn finish(self) -> ! {
        exit(u8::from(self.failed != 0))
    }
}

impl Default for Checks {
    fn default() -> Self {
        Self::new()
    }
}

/// CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u64, u32, u32);
    // SAFETY: CPUID only writes these registers (rbx is saved around it for LLVM).
    unsafe {
        core::arch::asm!("mov {t}, rbx", "cpuid", "xchg {t}, rbx", t = out(reg) b,
            inout("eax") leaf => a, inout("ecx") subleaf => c, out("edx") d, options(nostack))
    };
    [a, b as u32, c, d]
}

/// RDMSR; `None` if it raised #GP (needs `trap::install`).
pub fn rdmsr(msr: u32) -> Option<u64> {
    let mut value = 0;
    // SAFETY: RDMSR (2 bytes) in the guest either works or faults into our #GP handler,
    // which skips it.
    let fault = trap::expect_fault(2, || value = unsafe { Msr::new(msr).read() });
    fault.is_none().then_some(value)
}

/// WRMSR; `false` if it raised #GP (needs `trap::install`).
pub fn wrmsr(msr: u32, value: u64) -> bool {
    // SAFETY: as for `rdmsr` (WRMSR is 2 bytes too).
    trap::expect_fault(2, || unsafe { Msr::new(msr).write(value) }).is_none()
}
