//! The guest of the gdb tests (tests/image/debug.sh), run as an ELF file so that gdb
//! has its symbols: `answer` to break on, `GREETING` to read, `COUNTER` to write, and
//! `dbg_io`/`dbg_mmio`, an OUT and an MMIO store to single-step across. It prints what
//! `answer` returned and the counter, then checks that PUSHFQ showed no TF and ends
//! through the exit port (status 0, or 1 if TF showed).
#![no_std]
#![no_main]

use yakvm_guests::{exit, print, print_u64};

yakvm_guests::entry!(main);

#[unsafe(no_mangle)]
pub static GREETING: [u8; 16] = *b"hello, debugger\0";

#[unsafe(no_mangle)]
pub static mut COUNTER: u64 = 7;

/// gdb stops here; the test rewrites RDI (41) and sees the output change.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn answer(x: u64) -> u64 {
    x + 1
}

unsafe extern "C" {
    fn dbg_io_and_mmio();
}

// An OUT ("<") then an MMIO store (">") to the serial port, for stepi across both exits.
core::arch::global_asm!(
    ".globl dbg_io_and_mmio, dbg_io, dbg_mmio, dbg_done",
    "dbg_io_and_mmio:",
    "    mov dx, 0x10",
    "    mov al, 0x3c",
    "dbg_io:",
    "    out dx, al",
    "    mov rdx, 0xc0000080",
    "dbg_mmio:",
    "    mov byte ptr [rdx], 0x3e",
    "dbg_done:",
    "    mov al, 0x0a",
    "    mov dx, 0x10",
    "    out dx, al",
    "    ret",
);

fn main() {
    print(core::str::from_utf8(&GREETING[..15]).unwrap_or("?"));
    print("\nanswer=");
    print_u64(answer(core::hint::black_box(41)));
    print("\n");
    // SAFETY: an asm function that clobbers only RAX and RDX, as the asm! below declares.
    unsafe { core::arch::asm!("call {f}", f = sym dbg_io_and_mmio, out("rax") _, out("rdx") _) };
    print("counter=");
    // SAFETY: single vCPU; gdb may have written it meanwhile, hence the volatile read.
    print_u64(unsafe { core::ptr::read_volatile(&raw const COUNTER) });
    print("\n");
    let flags: u64;
    // SAFETY: PUSHFQ/POP only read the flags into a register.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags) };
    exit(u8::from(flags & 0x100 != 0))
}
