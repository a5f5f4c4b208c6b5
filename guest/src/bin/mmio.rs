//! MMIO of every width and instruction form the emulator decodes, against the scratch
//! register (reads back what was written) and the serial port, at the default MMIO base.
#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use yakvm_guests::{Checks, MMIO_BASE};

yakvm_guests::entry!(main);

const SCRATCH: u64 = MMIO_BASE + 0xff * 8;
const SERIAL: u64 = MMIO_BASE + 0x10 * 8;
/// Nothing is there: reads give all ones.
const NOWHERE: u64 = MMIO_BASE + 0x7 * 8;

fn main() {
    let mut t = Checks::new();
    let scratch = SCRATCH as *mut u8;
    // SAFETY: MMIO addresses in the guest's identity map; every access exits to the
    // emulator, which emulates the device behind it.
    unsafe {
        write_volatile(scratch, 0xa5u8);
        t.check("mmio write/read 1 byte", read_volatile(scratch) == 0xa5);
        write_volatile(scratch as *mut u16, 0xbeefu16);
        t.check("mmio write/read 2 bytes", read_volatile(scratch as *mut u16) == 0xbeef);
        write_volatile(scratch as *mut u32, 0xdead_beefu32);
        t.check("mmio write/read 4 bytes", read_volatile(scratch as *mut u32) == 0xdead_beef);
        write_volatile(scratch as *mut u64, 0x0123_4567_89ab_cdefu64);
        t.check("mmio write/read 8 bytes", read_volatile(scratch as *mut u64) == 0x0123_4567_89ab_cdef);

        // Immediate stores, MOVZX, MOVSX, a high-byte register, a 32-bit load that must
        // clear the upper half of its register.
        let (mut zx, mut sx, mut hi, mut r32): (u64, u64, u64, u64) = (0, 0, 0x1111, u64::MAX);
        core::arch::asm!(
            "mov byte ptr [rsi], 0x80",
            "movzx {zx}, byte ptr [rsi]",
            "movsx {sx}, byte ptr [rsi]",
            "mov word ptr [rsi], 0x7f42",
            "mov ah, byte ptr [rsi]",
            "mov qword ptr [rsi], -2",
            "mov {r32:e}, dword ptr [rsi]",
            in("rsi") SCRATCH, // rsi needs no REX prefix, so AH can be encoded
            zx = inout(reg) zx, sx = inout(reg) sx, r32 = inout(reg) r32,
            inout("rax") hi,
            options(nostack),
        );
        t.check("mov imm8 + movzx", zx == 0x80);
        t.check("movsx sign-extends", sx == 0xffff_ffff_ffff_ff80);
        t.check("load into ah keeps the rest", hi == 0x4211);
        t.check("32-bit load zero-extends", r32 == 0xffff_fffe);

        // The remaining forms: moffs (A2/A0 with a 64-bit address), imm16 and imm32 stores,
        // MOVZX of a word, MOVSXD, a 16-bit register store.
        let (mut a, mut zw, mut sxd): (u64, u64, u64) = (0x55, 0, 0);
        core::arch::asm!(
            "movabs [{addr}], al",
            "xor eax, eax",
            "movabs al, [{addr}]",
            "mov word ptr [rsi], 0xfedc",
            "movzx {zw:e}, word ptr [rsi]",
            "mov dword ptr [rsi], 0x80000000",
            "movsxd {sxd}, dword ptr [rsi]",
            "mov word ptr [rsi], cx",
            addr = const SCRATCH,
            zw = inout(reg) zw, sxd = inout(reg) sxd,
            inout("rax") a, in("rsi") SCRATCH, in("cx") 0x4242u16,
            options(nostack),
        );
        t.check("moffs store and load", a == 0x55);
        t.check("imm16 store + movzx word", zw == 0xfedc);
        t.check("imm32 store + movsxd", sxd == 0xffff_ffff_8000_0000);
        t.check("16-bit register store", read_volatile(scratch as *const u16) == 0x4242);

        t.check("unbacked mmio reads all ones (4)", read_volatile(NOWHERE as *const u32) == u32::MAX);
        t.check("unbacked mmio reads all ones (1)", read_volatile(NOWHERE as *const u8) == 0xff);

        for &b in b"via mmio\n" {
            write_volatile(SERIAL as *mut u8, b);
        }
        write_volatile(SERIAL as *mut u32, u32::from_le_bytes(*b"4by\n"));
    }
    t.finish()
}
