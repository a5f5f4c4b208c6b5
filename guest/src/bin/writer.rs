//! Writes the disk over and over until it is killed: generation g = 1, 2, ...; in each,
//! every sector s gets the stamp of (g, s), then the line "w g s" goes to the serial port
//! (so a line means that write completed). The host checks the image against the lines.
//! Run with --mem 2M and a disk of 64 sectors.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile};
use yakvm_guests::{exit, outb, print, print_u64};

yakvm_guests::entry!(main);

const SECTORS: u32 = 64;

#[repr(C, align(4096))]
struct Buffers {
    status: [u8; 16],
    _pad: [u8; 496],
    sector: [u8; 512],
}
static mut B: Buffers = Buffers { status: [0; 16], _pad: [0; 496], sector: [0; 512] };

fn out32(port: u16, value: u32) {
    // Not the x86_64 crate's `Port`, which tells the compiler that the write touches no
    // memory: this one starts DMA, the emulator reading and writing the buffers.
    // SAFETY: port writes exit to the emulator.
    unsafe { core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)) };
}

/// Byte `i` of the stamp of (g, s): g and s as u32 at the start, then a pattern of both.
pub fn stamp(g: u32, s: u32, i: usize) -> u8 {
    match i {
        0..=3 => g.to_le_bytes()[i],
        4..=7 => s.to_le_bytes()[i - 4],
        _ => (g.wrapping_mul(31).wrapping_add(s * 7).wrapping_add(i as u32)) as u8,
    }
}

fn main() {
    // SAFETY: single vCPU; `B` is ours alone (the host writes the status by DMA).
    let b = unsafe { &mut *addr_of_mut!(B) };
    out32(0x21, addr_of!(b.status) as u32);
    outb(0x22, 2);
    let mut g = 1u32;
    loop {
        for s in 0..SECTORS {
            for i in 0..512 {
                b.sector[i] = stamp(g, s, i);
            }
            out32(0x20, s);
            out32(0x21, addr_of!(b.sector) as u32);
            outb(0x22, 1);
            // SAFETY: reads the status the host just updated.
            let error = unsafe { read_volatile(addr_of!(b.status[8])) };
            if error != 0 {
                print("write failed\n");
                exit(1);
            }
            print("w ");
            print_u64(g.into());
            print(" ");
            print_u64(s.into());
            print("\n");
        }
        g += 1;
    }
}
