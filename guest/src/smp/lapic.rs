//! The local APIC (xAPIC, memory-mapped; Intel SDM vol. 3A, 11.4; AMD APM vol. 2, 16.3):
//! its registers and bits, reads and writes, IPIs. A guest may ask for x2APIC mode
//! ([`want_x2apic`], SDM 11.12): the same accessors then use the MSRs.

use crate::pc;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use x86_64::registers::model_specific::Msr;

pub const LAPIC_BASE: u64 = 0xfee0_0000;
pub const IOAPIC_BASE: u32 = 0xfec0_0000;
/// IA32_APIC_BASE and its bits.
pub const MSR_APIC_BASE: u32 = 0x1b;
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;

/// Register offsets.
pub const APIC_ID: u32 = 0x20;
pub const APIC_VERSION: u32 = 0x30;
pub const APIC_TPR: u32 = 0x80;
pub const APIC_EOI: u32 = 0xb0;
pub const APIC_LDR: u32 = 0xd0;
pub const APIC_DFR: u32 = 0xe0;
pub const APIC_SVR: u32 = 0xf0;
pub const APIC_ICR_LOW: u32 = 0x300;
pub const APIC_ICR_HIGH: u32 = 0x310;
pub const APIC_LVT_TIMER: u32 = 0x320;
pub const APIC_TIMER_INITIAL: u32 = 0x380;
pub const APIC_TIMER_CURRENT: u32 = 0x390;
pub const APIC_TIMER_DIVIDE: u32 = 0x3e0;

/// SVR: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT: masked; the timer's periodic mode (one-shot when clear).
pub const LVT_MASKED: u32 = 1 << 16;
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Timer divide configuration: divide by 1.
pub const TIMER_DIVIDE_BY_1: u32 = 0b1011;
/// DFR: the flat model (LDR bits 31:24 are a bitmap of CPUs).
pub const DFR_FLAT: u32 = 0xffff_ffff;

/// ICR low word: delivery modes, destination mode, status, level, shorthands.
pub const ICR_FIXED: u32 = 0;
pub const ICR_NMI: u32 = 4 << 8;
pub const ICR_INIT: u32 = 5 << 8;
pub const ICR_STARTUP: u32 = 6 << 8;
pub const ICR_LOGICAL: u32 = 1 << 11;
pub const ICR_BUSY: u32 = 1 << 12;
pub const ICR_ASSERT: u32 = 1 << 14;
pub const ICR_LEVEL: u32 = 1 << 15;
pub const ICR_SELF: u32 = 1 << 18;
pub const ICR_ALL_BUT_SELF: u32 = 3 << 18;

pub const NMI_VECTOR: u8 = 2;
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// IA32_APIC_BASE.EXTD: x2APIC mode.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// The x2APIC registers: MSR 0x800 + offset / 16; the ICR is one 64-bit MSR.
pub const X2APIC_MSR: u32 = 0x800;
/// CPUID.1:ECX: x2APIC offered.
pub const CPUID1_ECX_X2APIC: u32 = 1 << 21;
const X2APIC_ICR: u32 = 0x830;

/// The guest wants x2APIC mode ([`want_x2apic`]): each CPU switches in `enable_lapic`, and
/// the register accessors use the MSRs on a CPU that has switched.
static WANT_X2APIC: AtomicBool = AtomicBool::new(false);
/// In x2APIC mode the ICR's destination written to ICR high waits for the ICR low write
/// (one 64-bit MSR), per CPU (by APIC id).
static ICR_DEST: [AtomicU32; super::MAX_CPUS] = [const { AtomicU32::new(0) }; super::MAX_CPUS];

/// Every CPU of this guest uses its local APIC in x2APIC mode (set before `boot`); false
/// if CPUID does not offer it.
pub fn want_x2apic() -> bool {
    if crate::cpuid(1, 0)[2] & CPUID1_ECX_X2APIC == 0 {
        return false;
    }
    WANT_X2APIC.store(true, SeqCst);
    true
}

/// Whether this CPU's local APIC is in x2APIC mode.
pub fn in_x2apic() -> bool {
    WANT_X2APIC.load(SeqCst) && rdmsr(MSR_APIC_BASE) & APIC_BASE_EXTD != 0
}

/// Switches this CPU's APIC to x2APIC mode if the guest wants it.
pub(super) fn switch_to_x2apic() {
    if WANT_X2APIC.load(SeqCst) {
        let base = rdmsr(MSR_APIC_BASE);
        // SAFETY: EXTD with EN set is the xAPIC to x2APIC switch (CPUID offered x2APIC).
        unsafe { Msr::new(MSR_APIC_BASE).write(base | APIC_BASE_EXTD) };
    }
}

/// x2APIC: a register as its MSR; the ID and the ICR's destination in their xAPIC places
/// (bits 31-24), so that callers need not know the mode.
fn x2apic_read(reg: u32) -> u32 {
    let value = rdmsr(X2APIC_MSR + (reg >> 4));
    match reg {
        APIC_ID => (value as u32) << 24,
        APIC_ICR_HIGH => 0,
        _ => value as u32,
    }
}

fn x2apic_write(reg: u32, value: u32) {
    let id = usize::from((rdmsr(X2APIC_MSR + (APIC_ID >> 4)) as u8) % super::MAX_CPUS as u8);
    let (msr, value) = match reg {
        APIC_ICR_HIGH => {
            ICR_DEST[id].store(value >> 24, SeqCst);
            return;
        }
        APIC_ICR_LOW => {
            let dest = match ICR_DEST[id].load(SeqCst) {
                0xff => u64::from(u32::MAX),
                d => u64::from(d),
            };
            (X2APIC_ICR, dest << 32 | u64::from(value))
        }
        // No DFR in x2APIC mode, and the LDR is derived from the ID (read-only).
        APIC_DFR | APIC_LDR => return,
        _ => (X2APIC_MSR + (reg >> 4), u64::from(value)),
    };
    // SAFETY: an x2APIC register that exists and is writable (the ones above are not
    // written), in x2APIC mode.
    unsafe { Msr::new(msr).write(value) };
}

/// Reads a local APIC register (an exit to the emulator, or to the module).
pub fn lapic_read(reg: u32) -> u32 {
    if in_x2apic() {
        return x2apic_read(reg);
    }
    let value: u32;
    // SAFETY: a 32-bit load from the local APIC page, which the emulator's identity map
    // covers (the first 4 GiB); nothing else is at that address. A plain `mov`, which the
    // emulator decodes.
    unsafe {
        asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) LAPIC_BASE + u64::from(reg), v = out(reg) value, options(nostack, preserves_flags))
    };
    value
}

/// Writes a local APIC register (an exit to the emulator, or to the module).
pub fn lapic_write(reg: u32, value: u32) {
    if in_x2apic() {
        return x2apic_write(reg, value);
    }
    // SAFETY: as for `lapic_read`: a 32-bit store to the local APIC page.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) LAPIC_BASE + u64::from(reg), v = in(reg) value, options(nostack, preserves_flags))
    };
}

/// This CPU's local APIC id.
pub fn apic_id() -> u8 {
    (lapic_read(APIC_ID) >> 24) as u8
}

/// Sends an IPI: `dest` in ICR bits 63:56, then the low word `low` (which sends it); waits
/// until the delivery status is idle again. Interrupts are off meanwhile, so that no
/// handler's own ICR use comes between the two writes. `false` if the ICR stayed busy for
/// 1000 reads.
pub fn send_ipi(dest: u8, low: u32) -> bool {
    pc::without_interrupts(|| {
        lapic_write(APIC_ICR_HIGH, u32::from(dest) << 24);
        lapic_write(APIC_ICR_LOW, low);
        (0..1000).any(|_| lapic_read(APIC_ICR_LOW) & ICR_BUSY == 0)
    })
}

/// RDMSR (a #GP ends the run).
pub fn rdmsr(msr: u32) -> u64 {
    // SAFETY: reads an MSR; the ones asked for exist (a #GP would end the run).
    unsafe { Msr::new(msr).read() }
}
