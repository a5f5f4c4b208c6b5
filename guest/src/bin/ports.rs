//! Port I/O in every form: OUT and IN of 1, 2 and 4 bytes, OUTS and INS with and without
//! REP, backwards (DF=1), and a REP OUTSB longer than one exit can carry.
#![no_std]
#![no_main]

use yakvm_guests::{print, Checks, SERIAL_PORT};

yakvm_guests::entry!(main);

const SCRATCH: u16 = 0xff;
const UNBACKED: u16 = 0x60;

fn out(port: u16, size: u8, value: u32) {
    // SAFETY: port writes exit to the emulator.
    unsafe {
        match size {
            1 => core::arch::asm!("out dx, al", in("dx") port, in("al") value as u8, options(nostack)),
            2 => core::arch::asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nostack)),
            _ => core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)),
        }
    }
}

/// IN of `size` bytes with RAX preloaded with `rax`; returns the whole RAX.
fn inp(port: u16, size: u8, rax: u64) -> u64 {
    let mut rax = rax;
    // SAFETY: port reads exit to the emulator.
    unsafe {
        match size {
            1 => core::arch::asm!("in al, dx", in("dx") port, inout("rax") rax, options(nostack)),
            2 => core::arch::asm!("in ax, dx", in("dx") port, inout("rax") rax, options(nostack)),
            _ => core::arch::asm!("in eax, dx", in("dx") port, inout("rax") rax, options(nostack)),
        }
    }
    rax
}

/// REP OUTS of `len` elements of `size` bytes from `src`; returns RSI and RCX after.
fn rep_outs(size: u8, src: *const u8, len: usize) -> (u64, u64) {
    let (rsi, rcx): (u64, u64);
    // SAFETY: reads `len * size` bytes at `src`, which the caller owns.
    unsafe {
        match size {
            1 => core::arch::asm!("rep outsb", in("dx") SERIAL_PORT, inout("rsi") src as u64 => rsi, inout("rcx") len as u64 => rcx, options(nostack)),
            2 => core::arch::asm!("rep outsw", in("dx") SERIAL_PORT, inout("rsi") src as u64 => rsi, inout("rcx") len as u64 => rcx, options(nostack)),
            _ => core::arch::asm!("rep outsd", in("dx") SERIAL_PORT, inout("rsi") src as u64 => rsi, inout("rcx") len as u64 => rcx, options(nostack)),
        }
    }
    (rsi, rcx)
}

static mut BIG: [u8; 5000] = [0; 5000];

fn main() {
    let mut t = Checks::new();

    out(SERIAL_PORT, 1, b'A' as u32);
    out(SERIAL_PORT, 2, u16::from_le_bytes(*b"BC") as u32);
    out(SERIAL_PORT, 4, u32::from_le_bytes(*b"DEF\n"));

    out(SCRATCH, 4, 0x1122_3344);
    t.check("in al keeps the rest of rax", inp(SCRATCH, 1, 0xaaaa_aaaa_aaaa_aaaa) == 0xaaaa_aaaa_aaaa_aa44);
    t.check("in ax keeps the rest of rax", inp(SCRATCH, 2, 0xaaaa_aaaa_aaaa_aaaa) == 0xaaaa_aaaa_aaaa_3344);
    t.check("in eax zero-extends", inp(SCRATCH, 4, 0xaaaa_aaaa_aaaa_aaaa) == 0x1122_3344);
    t.check("in from an unbacked port reads all ones", inp(UNBACKED, 1, 0) == 0xff);

    let msg = b"rep outsb works\n";
    let (rsi, rcx) = rep_outs(1, msg.as_ptr(), msg.len());
    t.check("rep outsb moves rsi, clears rcx", rsi == msg.as_ptr() as u64 + msg.len() as u64 && rcx == 0);
    let msg = b"rep outsw works!\n\n";
    rep_outs(2, msg.as_ptr(), msg.len() / 2);
    let msg = b"rep outsd works!\n\n\n\n";
    rep_outs(4, msg.as_ptr(), msg.len() / 4);

    // Backwards, one element without REP each time: prints "back\n".
    let rev = b"\nkcab";
    let mut rsi = rev.as_ptr() as u64 + rev.len() as u64 - 1;
    for _ in 0..rev.len() {
        // SAFETY: reads one byte of `rev` at RSI with DF set, which is cleared after.
        unsafe { core::arch::asm!("std", "outsb", "cld", in("dx") SERIAL_PORT, inout("rsi") rsi, options(nostack)) };
    }
    t.check("outsb with DF=1 walks down", rsi == rev.as_ptr() as u64 - 1);

    // REP INSB / INSD from the scratch register (which reads back 0x11223344).
    let mut bytes = [0u8; 7];
    let mut dwords = [0u32; 3];
    // SAFETY: writes exactly the two local arrays.
    unsafe {
        core::arch::asm!("rep insb", in("dx") SCRATCH, inout("rdi") bytes.as_mut_ptr() => _, inout("rcx") bytes.len() => _, options(nostack));
        core::arch::asm!("rep insd", in("dx") SCRATCH, inout("rdi") dwords.as_mut_ptr() => _, inout("rcx") dwords.len() => _, options(nostack));
    }
    t.check("rep insb fills every byte", bytes == [0x44; 7]);
    t.check("rep insd fills every dword", dwords == [0x1122_3344; 3]);

    // 5000 bytes: more than one exit carries (2048), so the REP resumes in the kernel.
    // SAFETY: single vCPU; BIG is only used here.
    let big = unsafe { &mut *core::ptr::addr_of_mut!(BIG) };
    for (i, b) in big.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    big[4999] = b'\n';
    let (_, rcx) = rep_outs(1, big.as_ptr(), big.len());
    t.check("rep outsb of 5000 bytes completes", rcx == 0);
    print("done\n");
    t.finish()
}
