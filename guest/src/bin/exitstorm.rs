//! Exits that the module handles itself, forever: CPUID, MOV to CR4 (intercepted and
//! checked), RDMSR and WRMSR of a guest MSR; every 10000 rounds a `.` and a read of the
//! scratch port, the only exit to the emulator (which then writes out the serial bytes it
//! was holding: coalesced). For the test that such a guest never keeps its host CPU from
//! the scheduler (no soft lockup) and that Ctrl-C still ends it.
#![no_std]
#![no_main]

use yakvm_guests::{cpuid, print};

yakvm_guests::entry!(main);

/// The seed machine's scratch register: a port the emulator answers without a word.
const SCRATCH_PORT: u16 = 0xff;
/// IA32_SYSENTER_ESP: the guest's own copy in the VMCB.
const SYSENTER_ESP: u32 = 0x175;

fn main() {
    print("exit storm\n");
    // SAFETY: as below: the emulator shows the line now.
    unsafe { core::arch::asm!("in al, dx", in("dx") SCRATCH_PORT, out("al") _, options(nomem, nostack)) };
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nostack)) };
    let mut n: u64 = 0;
    loop {
        let _ = cpuid(0, 0);
        // SAFETY: writes CR4's current value back and a harmless value to the guest's own
        // SYSENTER_ESP; both are handled in the module.
        unsafe {
            core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack));
            core::arch::asm!("wrmsr", in("ecx") SYSENTER_ESP, in("eax") n as u32, in("edx") 0, options(nostack));
            core::arch::asm!("rdmsr", in("ecx") SYSENTER_ESP, out("eax") _, out("edx") _, options(nostack));
        }
        n = n.wrapping_add(1);
        if n % 10_000 == 0 {
            print(".");
            // SAFETY: a port read, which exits to the emulator.
            unsafe { core::arch::asm!("in al, dx", in("dx") SCRATCH_PORT, out("al") _, options(nomem, nostack)) };
        }
    }
}
