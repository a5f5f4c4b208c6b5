//! IOEVENTFD: port and MMIO writes that signal an eventfd instead of exiting to the
//! emulator. Run with (tests/image/emulator.sh, kvm.sh):
//!   --no-coalesced-io --ioeventfd pio:0x60 --ioeventfd pio:0x10:1:0x23
//!   --ioeventfd mmio:0xc0000300 --ioeventfd mmio:0xc00007f8:4:0xcafe
//! It writes N times to port 0x60 (sizes 1, 2, 4), N times '#' to the serial port (the
//! other bytes it prints go to the console as usual), N times to MMIO 0xc0000300 in
//! five MOV forms, and N + 1 times 0xcafe (4 bytes) to the scratch register, whose value
//! then shows that the matching writes never reached it while the others did.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use yakvm_guests::{outb, print, Checks, MMIO_BASE, SERIAL_PORT};

yakvm_guests::entry!(main);

const N: usize = 1000;
const ANY_PORT: u16 = 0x60;
const ANY_MMIO: u64 = MMIO_BASE + 0x60 * 8;
const SCRATCH: u64 = MMIO_BASE + 0xff * 8;

fn out(port: u16, size: usize, value: u32) {
    // SAFETY: port writes, which the hypervisor or the emulator take.
    unsafe {
        match size {
            1 => core::arch::asm!("out dx, al", in("dx") port, in("al") value as u8, options(nostack)),
            2 => core::arch::asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nostack)),
            _ => core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)),
        }
    }
}

fn main() {
    let mut t = Checks::new();
    for i in 0..N {
        out(ANY_PORT, [1, 2, 4][i % 3], i as u32);
    }
    print("port writes done\n");
    for _ in 0..N {
        outb(SERIAL_PORT, b'#');
    }
    print("serial writes done\n");
    // SAFETY: MMIO addresses of the seed machine in the guest's identity map.
    unsafe {
        for i in 0..N / 5 {
            core::arch::asm!(
                "mov dword ptr [rsi], eax",        // 89 /r
                "mov byte ptr [rsi], 0x5a",        // c6 /0 ib
                "mov word ptr [rsi], 0x1234",      // 66 c7 /0 iw
                "mov qword ptr [rsi], r9",         // 4c 89 /r
                "movabs [{addr}], eax",            // a3 moffs64
                addr = const ANY_MMIO,
                in("rsi") ANY_MMIO, in("eax") i as u32, in("r9") i as u64,
                options(nostack),
            );
        }
        print("mmio writes done\n");
        let scratch = SCRATCH as *mut u32;
        write_volatile(scratch, 0x1111);
        for _ in 0..N {
            write_volatile(scratch, 0xcafe);
        }
        t.check("matching mmio writes never reach the device", read_volatile(scratch) == 0x1111);
        write_volatile(scratch, 0xbeef);
        t.check("a write of another value reaches it", read_volatile(scratch) == 0xbeef);
        write_volatile(scratch, 0xcafe);
        t.check("then a matching one does not", read_volatile(scratch) == 0xbeef);
        write_volatile(scratch as *mut u16, 0xcafe);
        t.check("a matching value of another width does", read_volatile(scratch) & 0xffff == 0xcafe);
    }
    t.finish()
}
