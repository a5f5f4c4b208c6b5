//! The guest of the gdb tests (tests/image/debug.sh), run as an ELF file so that gdb
//! has its symbols: `answer` to break on, `GREETING` to read, `COUNTER` to write, and
//! `dbg_io`/`dbg_mmio`, an OUT and an MMIO store to single-step across. It prints what
//! `answer` returned and the counter; then it single-steps itself (its own TF: three #DB
//! traps into its own handler) and executes its own INT3 (into its own #BP handler), which
//! must work as without a debugger, prints both counts, checks that PUSHFQ showed no TF
//! and ends through the exit port (status 0, or 1 if TF showed).
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

/// The guest's own #DB and #BP handlers count here.
#[unsafe(no_mangle)]
static mut DB_COUNT: u64 = 0;
#[unsafe(no_mangle)]
static mut BP_COUNT: u64 = 0;

unsafe extern "C" {
    fn dbg_db_handler();
    fn dbg_bp_handler();
}

// #DB: counts; the third clears TF in the frame. #BP (a trap: RIP is past the INT3): counts.
core::arch::global_asm!(
    "dbg_db_handler:",
    "    inc qword ptr [rip + DB_COUNT]",
    "    cmp qword ptr [rip + DB_COUNT], 3",
    "    jb 1f",
    "    and qword ptr [rsp + 16], -0x101",
    "1:  iretq",
    "dbg_bp_handler:",
    "    inc qword ptr [rip + BP_COUNT]",
    "    iretq",
);

#[repr(C, align(16))]
struct Idt([u64; 8]);
static mut IDT: Idt = Idt([0; 8]);

/// An IDT with the guest's own #DB (1) and #BP (3) handlers.
fn install_idt() {
    let gate = |h: unsafe extern "C" fn()| {
        let a = h as usize as u64;
        [(a & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((a >> 16) & 0xffff) << 48, a >> 32]
    };
    // SAFETY: single vCPU, before any exception; the IDT is static.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        [idt.0[2], idt.0[3]] = gate(dbg_db_handler);
        [idt.0[6], idt.0[7]] = gate(dbg_bp_handler);
        let base = idt as *const Idt as u64;
        let desc: [u16; 5] = [63, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16];
        core::arch::asm!("lidt [{}]", in(reg) &desc, options(nostack));
    }
}

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
    install_idt();
    // SAFETY: sets TF; the #DB handler clears it after three traps (the NOPs).
    unsafe { core::arch::asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "nop", "nop", "nop", "nop") };
    // SAFETY: INT3 into the #BP handler, which only counts.
    unsafe { core::arch::asm!("int3") };
    print("own tf traps=");
    // SAFETY: single vCPU; written by the handlers, hence the volatile reads.
    print_u64(unsafe { core::ptr::read_volatile(&raw const DB_COUNT) });
    print(" own int3=");
    // SAFETY: as above.
    print_u64(unsafe { core::ptr::read_volatile(&raw const BP_COUNT) });
    print("\n");
    let flags: u64;
    // SAFETY: PUSHFQ/POP only read the flags into a register.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags) };
    exit(u8::from(flags & 0x100 != 0))
}
