//! Reads every sector of the DMA disk four times over the seed protocol (three OUTs per
//! sector), then prints how many sectors it read: a workload for timing the disk path
//! (`yakvm run --disk <1 MiB file> --stats diskread.bin`).
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile};
use yakvm_guests::{print, print_u64};

yakvm_guests::entry!(main);

const SECTOR: u16 = 0x20;
const DMA: u16 = 0x21;
const COMMAND: u16 = 0x22;
const READ: u8 = 0;
const SETUP: u8 = 2;
const PASSES: u64 = 4;

#[repr(C, align(4096))]
struct Buffers {
    status: [u8; 16],
    _pad: [u8; 4096 - 16],
    sector: [u8; 512],
}

static mut B: Buffers = Buffers { status: [0; 16], _pad: [0; 4096 - 16], sector: [0; 512] };

fn out32(port: u16, value: u32) {
    // Not the x86_64 crate's `Port`, which tells the compiler that the write touches no
    // memory: this one starts DMA, the emulator reading and writing the buffers.
    // SAFETY: port writes exit to the emulator.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)) };
}

fn main() {
    // SAFETY: one vCPU; `B` is only read through volatile loads after the host wrote it.
    let (status, sector) = unsafe { (addr_of!(B.status), addr_of_mut!(B.sector)) };
    out32(DMA, status as usize as u32);
    yakvm_guests::outb(COMMAND, SETUP);
    // SAFETY: `status` points into `B`; the host filled it during the OUT above.
    let s = unsafe { read_volatile(status) };
    let size = u64::from_le_bytes(s[..8].try_into().unwrap());
    let mut read = 0u64;
    out32(DMA, sector as usize as u32);
    for _ in 0..PASSES {
        for n in 0..size / 512 {
            out32(SECTOR, n as u32);
            yakvm_guests::outb(COMMAND, READ);
            read += 1;
        }
    }
    // SAFETY: as above.
    let error = i32::from_le_bytes(unsafe { read_volatile(status) }[8..12].try_into().unwrap());
    print("read ");
    print_u64(read);
    print(if error == 0 { " sectors\n" } else { " sectors, last status not 0\n" });
    yakvm_guests::exit(u8::from(error != 0));
}
