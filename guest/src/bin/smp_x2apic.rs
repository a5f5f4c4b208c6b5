//! guests/smp.bin (see src/bin/smp.rs) with every local APIC in x2APIC mode: each CPU
//! sets IA32_APIC_BASE.EXTD as it enables its APIC and reaches its registers through the
//! MSRs 0x800-0x8ff (the ICR as one 64-bit MSR; logical destinations are the x2APIC
//! cluster IDs, which give CPUs 0-7 the same destination bits as the flat model). Needs
//! yakvm's kernel APIC, which offers x2APIC: the same output as smp.bin.
//!
//! Run: `yakvm run --machine pc --smp 4 --kernel-apic build/guests/smp_x2apic.bin`
#![no_std]
#![no_main]

/// This guest uses its local APICs in x2APIC mode.
const X2APIC: bool = true;

include!("../smp_body.rs");
