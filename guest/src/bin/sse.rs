//! Keeps values in all 16 XMM registers across many exits and checks they survive: the
//! hypervisor must keep the guest's SSE state whatever the host does in between.
#![no_std]
#![no_main]

use yakvm_guests::{exit, print, SERIAL_PORT};

yakvm_guests::entry!(main);

const ROUNDS: u32 = 2000;

fn main() {
    let mut bad: u64 = 0;
    // SAFETY: only registers are touched (the port writes exit to the emulator). XMM
    // registers are loaded with i * 0x0101..., then after every OUT all 16 are compared
    // with what they held; mismatches are counted in `bad`.
    unsafe {
        core::arch::asm!(
            "mov rax, 0x0101010101010101",
            "movq xmm0, rax", "add rax, rax",
            "movq xmm1, rax", "add rax, rax",
            "movq xmm2, rax", "add rax, rax",
            "movq xmm3, rax", "add rax, rax",
            "movq xmm4, rax", "add rax, rax",
            "movq xmm5, rax", "add rax, rax",
            "movq xmm6, rax", "add rax, rax",
            "movq xmm7, rax", "add rax, rax",
            "movq xmm8, rax", "add rax, rax",
            "movq xmm9, rax", "add rax, rax",
            "movq xmm10, rax", "add rax, rax",
            "movq xmm11, rax", "add rax, rax",
            "movq xmm12, rax", "add rax, rax",
            "movq xmm13, rax", "add rax, rax",
            "movq xmm14, rax", "add rax, rax",
            "movq xmm15, rax",
            "2:",
            "mov al, 0x2e",        // '.'
            "out dx, al",
            "mov rax, 0x0101010101010101",
            "movq rcx, xmm0", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm1", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm2", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm3", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm4", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm5", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm6", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm7", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm8", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm9", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm10", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm11", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm12", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm13", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm14", "cmp rcx, rax", "jne 3f", "add rax, rax",
            "movq rcx, xmm15", "cmp rcx, rax", "jne 3f",
            "jmp 4f",
            "3:",
            "inc {bad}",
            "4:",
            "dec {n:e}",
            "jnz 2b",
            bad = inout(reg) bad,
            n = inout(reg) ROUNDS => _,
            in("dx") SERIAL_PORT,
            out("rax") _, out("rcx") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
    if bad == 0 {
        print("\nsse ok\n");
        exit(0)
    }
    print("\nsse state lost\n");
    exit(1)
}
