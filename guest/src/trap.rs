//! Catching the exceptions a test provokes on purpose (#UD, #GP): `expect_fault` runs one
//! instruction of known length; if it faults, the handler records the vector and resumes
//! after it. Any other exception ends the run with a message.

use crate::tables;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::structures::idt::InterruptDescriptorTable;

/// Vector of the last caught exception, or NONE.
static FAULT: AtomicU64 = AtomicU64::new(NONE);
/// The RFLAGS image the last caught exception pushed.
static RFLAGS: AtomicU64 = AtomicU64::new(0);
/// Bytes to skip when the instruction under test faults.
static SKIP: AtomicU64 = AtomicU64::new(0);
const NONE: u64 = u64::MAX;

pub const UD: u64 = 6;
pub const GP: u64 = 13;

static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

unsafe extern "C" {
    fn yakvm_guest_ud();
    fn yakvm_guest_gp();
    fn yakvm_guest_other();
}

// Handlers: #UD has no error code, #GP has one. Both record the vector and the pushed
// RFLAGS, move the saved RIP past the instruction under test (SKIP bytes) and return.
core::arch::global_asm!(
    ".globl yakvm_guest_ud",
    "yakvm_guest_ud:",
    "push rax",
    "mov rax, 6",
    "jmp 2f",
    ".globl yakvm_guest_gp",
    "yakvm_guest_gp:",
    "add rsp, 8",
    "push rax",
    "mov rax, 13",
    "2:",
    "mov [rip + {fault}], rax",
    "mov rax, [rsp + 24]", // RFLAGS, above the saved RAX, RIP and CS
    "mov [rip + {rflags}], rax",
    "mov rax, [rip + {skip}]",
    "add [rsp + 8], rax",
    "pop rax",
    "iretq",
    ".globl yakvm_guest_other",
    "yakvm_guest_other:",
    "mov dx, 0x10",
    "mov al, 0x21", // '!'
    "out dx, al",
    "mov dx, 0xf4",
    "mov al, 99",
    "out dx, al",
    "3: hlt",
    "jmp 3b",
    fault = sym FAULT,
    skip = sym SKIP,
    rflags = sym RFLAGS,
);

/// Installs the IDT: #UD and #GP are caught, every other exception ends the run with
/// status 99 (the reserved vectors, which the CPU never raises, are not present).
pub fn install() {
    // SAFETY: single vCPU, called before any exception can occur; the IDT is static. Each
    // stub fits its vector: #GP's drops the error code, the others never return.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for v in 0..32u8 {
            let h: unsafe extern "C" fn() = match u64::from(v) {
                UD => yakvm_guest_ud,
                GP => yakvm_guest_gp,
                _ => yakvm_guest_other,
            };
            tables::set_gate(idt, v, h as usize as u64);
        }
        idt.load_unsafe();
    }
}

/// Runs `f`, which executes one instruction of `len` bytes that may fault; returns the
/// vector it raised, if any.
pub fn expect_fault(len: u64, f: impl FnOnce()) -> Option<u64> {
    FAULT.store(NONE, Ordering::SeqCst);
    SKIP.store(len, Ordering::SeqCst);
    f();
    match FAULT.swap(NONE, Ordering::SeqCst) {
        NONE => None,
        v => Some(v),
    }
}

/// The RFLAGS image the last exception `expect_fault` caught pushed (a fault's has RF).
pub fn fault_rflags() -> u64 {
    RFLAGS.load(Ordering::SeqCst)
}
