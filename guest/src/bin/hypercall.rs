//! VMMCALL reaches the emulator with its arguments and returns its answer in RAX.
#![no_std]
#![no_main]

use yakvm_guests::Checks;

yakvm_guests::entry!(main);

fn vmmcall(nr: u64, args: [u64; 4]) -> u64 {
    let ret;
    // SAFETY: VMMCALL exits to the hypervisor, which returns a value in RAX; RBX is
    // saved around it for LLVM.
    unsafe {
        core::arch::asm!(
            "xchg {b}, rbx",
            "vmmcall",
            "xchg {b}, rbx",
            b = inout(reg) args[0] => _,
            inout("rax") nr => ret,
            in("rcx") args[1], in("rdx") args[2], in("rsi") args[3],
            options(nostack),
        )
    };
    ret
}

fn main() {
    let mut t = Checks::new();
    t.check("hypercall ADD returns the sum", vmmcall(1, [1, 20, 300, 4000]) == 4321);
    t.check("unknown hypercall returns -1", vmmcall(0x7777, [0; 4]) == u64::MAX);
    t.finish()
}
