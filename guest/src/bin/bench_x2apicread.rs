//! `make bench`: the local APIC switched to x2APIC mode (IA32_APIC_BASE.EXTD), then 100000
//! reads of the APIC ID through its MSR (0x802), then the exit port. Each read is an MSR
//! exit answered in the hypervisor, with no instruction to decode (the row `apicread-x2`,
//! set against `cpuid` and `apicread`). Status 2 when CPUID offers no x2APIC (the
//! emulator's APIC, `--user-apic`), 1 if the switch or a read fails.
#![no_std]
#![no_main]

use yakvm_guests::smp::{APIC_BASE_EXTD, APIC_ID, CPUID1_ECX_X2APIC, MSR_APIC_BASE, X2APIC_MSR};
use yakvm_guests::{cpuid, exit, rdmsr, trap, wrmsr};

yakvm_guests::entry!(main);

const READS: u32 = 100_000;

fn main() {
    trap::install();
    if cpuid(1, 0)[2] & CPUID1_ECX_X2APIC == 0 {
        exit(2);
    }
    let id_msr = X2APIC_MSR + APIC_ID / 16;
    let Some(base) = rdmsr(MSR_APIC_BASE) else { exit(1) };
    if !wrmsr(MSR_APIC_BASE, base | APIC_BASE_EXTD) {
        exit(1);
    }
    let Some(first) = rdmsr(id_msr) else { exit(1) };
    let mut wrong = 0u32;
    for _ in 1..READS {
        wrong += u32::from(rdmsr(id_msr) != Some(first));
    }
    exit(u8::from(wrong != 0))
}
