// SPDX-License-Identifier: GPL-2.0
//! RDMSR and WRMSR from the guest. Every MSR access exits (the MSR permission map is all
//! ones). The MSRs a 64-bit guest needs are emulated on the guest's own copies in the
//! VMCB; those a real OS touches at boot (PMU, HWCR, the patch level, machine-check banks,
//! TSC_AUX) are answered as KVM answers an AMD guest, on copies in [`GuestMsrs`], and so
//! is IA32_APIC_BASE in a VM with local APICs (`ENABLE_LAPIC`); everything else, above all
//! the host's SVM MSRs (VM_HSAVE_PA, VM_CR) and EFER.SVME, raises #GP in the guest. So do
//! SPEC_CTRL, PRED_CMD and VIRT_SPEC_CTRL: the guest's CPUID offers none of IBRS, STIBP,
//! SSBD, IBPB or VIRT_SSBD, and KVM refuses them to such a guest too (kvm-unit-tests'
//! msr test checks it). No guest value ever reaches a host MSR.

use super::vmcb::SaveArea;
use super::x86::{canonical, cr0, efer};
use crate::abi;

/// MSR numbers (AMD APM vol. 2, appendix A).
mod nr {
    pub(super) const TSC: u32 = 0x10;
    pub(super) const APIC_BASE: u32 = 0x1b;
    pub(super) const SYSENTER_CS: u32 = 0x174;
    pub(super) const SYSENTER_ESP: u32 = 0x175;
    pub(super) const SYSENTER_EIP: u32 = 0x176;
    pub(super) const PAT: u32 = 0x277;
    pub(super) const EFER: u32 = 0xc000_0080;
    pub(super) const STAR: u32 = 0xc000_0081;
    pub(super) const LSTAR: u32 = 0xc000_0082;
    pub(super) const CSTAR: u32 = 0xc000_0083;
    pub(super) const SFMASK: u32 = 0xc000_0084;
    pub(super) const FS_BASE: u32 = 0xc000_0100;
    pub(super) const GS_BASE: u32 = 0xc000_0101;
    pub(super) const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub(super) const TSC_AUX: u32 = 0xc000_0103;
    pub(super) const PATCH_LEVEL: u32 = 0x8b;
    pub(super) const MCG_CAP: u32 = 0x179;
    pub(super) const MISC_ENABLE: u32 = 0x1a0;
    pub(super) const MCG_STATUS: u32 = 0x17a;
    /// MCi_CTL, MCi_STATUS, MCi_ADDR, MCi_MISC of bank i at MC0_CTL + 4 * i.
    pub(super) const MC0_CTL: u32 = 0x400;
    /// Legacy AMD performance counters: PERF_CTL0-3, then PERF_CTR0-3.
    pub(super) const K7_PERF_CTL0: u32 = 0xc001_0000;
    pub(super) const K7_PERF_CTR3: u32 = 0xc001_0007;
    /// Family 15h core counters: PERF_CTL0, PERF_CTR0, ... PERF_CTR5, interleaved.
    pub(super) const F15H_PERF_CTL0: u32 = 0xc001_0200;
    pub(super) const F15H_PERF_CTR5: u32 = 0xc001_020b;
    pub(super) const SYSCFG: u32 = 0xc001_0010;
    pub(super) const HWCR: u32 = 0xc001_0015;
    pub(super) const NB_CFG: u32 = 0xc001_001f;
    pub(super) const DE_CFG: u32 = 0xc001_1029;
}

/// Machine-check banks the guest has (MCG_CAP's count; no MCG_CTL).
const MC_BANKS: u32 = 4;
/// What the patch level reads (KVM's default for AMD guests).
const PATCH_LEVEL: u64 = 0x0100_0065;
/// HWCR bits: TscFreqSel (24, read as set: the TSC runs at a fixed rate), McStatusWrEn
/// (18, lets the guest write MCi_STATUS); the guest may set or clear these.
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;
const HWCR_MC_STATUS_WR_EN: u64 = 1 << 18;
/// HWCR bits writes may carry and that are ignored, as KVM does: TLB cache disable (3),
/// flush filter disable (6), IGNNE emulation (8).
const HWCR_IGNORED: u64 = (1 << 3) | (1 << 6) | (1 << 8);
/// DE_CFG bit 1: LFENCE is dispatch-serialising (reads as set, as on current CPUs).
const DE_CFG_LFENCE_SERIALIZE: u64 = 1 << 1;

/// IA32_MISC_ENABLE (Intel's, which KVM answers for every guest and Linux and the
/// kvm-unit-tests read on any vendor): BTS and PEBS unavailable (11, 12), read-only;
/// EMON (7, performance monitoring available) reads as it was, writes of it are ignored;
/// the other bits keep what the guest writes, as in KVM.
const MISC_ENABLE_EMON: u64 = 1 << 7;
const MISC_ENABLE_RO: u64 = (1 << 11) | (1 << 12);

/// IA32_APIC_BASE (APM vol. 2, 16.3.1): the local APIC's page, always at its power-on
/// address (the emulator's APIC does not move), BSP (8) and EN (11: the APIC is
/// enabled). EXTD (10, x2APIC mode) is not offered: writing it raises #GP.
const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_EN: u64 = 1 << 11;

/// The guest's MSRs that do not live in the VMCB.
pub(crate) struct GuestMsrs {
    /// IA32_APIC_BASE; `None` without local APICs (the MSR raises #GP).
    apic_base: Option<u64>,
    hwcr: u64,
    mcg_status: u64,
    /// CTL, STATUS, ADDR, MISC of each bank.
    mc_banks: [[u64; 4]; MC_BANKS as usize],
    tsc_aux: u64,
    misc_enable: u64,
}

impl Default for GuestMsrs {
    fn default() -> Self {
        Self {
            apic_base: None,
            hwcr: HWCR_TSC_FREQ_SEL,
            mcg_status: 0,
            // MCi_CTL reset to all ones (every error reporting enabled).
            mc_banks: [[u64::MAX, 0, 0, 0]; MC_BANKS as usize],
            tsc_aux: 0,
            misc_enable: MISC_ENABLE_RO,
        }
    }
}

impl GuestMsrs {
    /// The MSRs of a vCPU with a local APIC: IA32_APIC_BASE at its reset value, BSP set
    /// on the bootstrap processor only.
    pub(crate) fn with_apic(bsp: bool) -> Self {
        let bsp = if bsp { APIC_BASE_BSP } else { 0 };
        Self { apic_base: Some(APIC_DEFAULT_BASE | APIC_BASE_EN | bsp), ..Self::default() }
    }
}

impl GuestMsrs {
    /// The local APIC exists and IA32_APIC_BASE.EN is set.
    /// The guest's TSC_AUX (32 bits: writes of more raise #GP).
    pub(crate) fn tsc_aux(&self) -> u32 {
        self.tsc_aux as u32
    }

    pub(crate) fn apic_enabled(&self) -> bool {
        self.apic_base.is_some_and(|b| b & APIC_BASE_EN != 0)
    }
}

/// The machine-check bank register `msr` names: (bank, register 0-3).
fn mc_bank(msr: u32) -> Option<(usize, usize)> {
    let offset = msr.checked_sub(nr::MC0_CTL)?;
    (offset < 4 * MC_BANKS).then_some(((offset / 4) as usize, (offset % 4) as usize))
}

fn is_pmu(msr: u32) -> bool {
    (nr::K7_PERF_CTL0..=nr::K7_PERF_CTR3).contains(&msr) || (nr::F15H_PERF_CTL0..=nr::F15H_PERF_CTR5).contains(&msr)
}

/// Counts one access in the guest's MSR statistics.
pub(crate) fn count(stats: &mut abi::MsrStats, msr: u32, is_write: bool, fault: bool) {
    let used = stats.count as usize;
    let entry = match stats.entries[..used].iter().position(|e| e.index == msr) {
        Some(i) => &mut stats.entries[i],
        None if used < stats.entries.len() => {
            stats.count += 1;
            stats.entries[used] = abi::MsrCount { index: msr, ..Default::default() };
            &mut stats.entries[used]
        }
        None => {
            stats.others = stats.others.saturating_add(1);
            return;
        }
    };
    let n = if is_write { &mut entry.writes } else { &mut entry.reads };
    *n = n.saturating_add(1);
    entry.faults = entry.faults.saturating_add(u32::from(fault));
}

/// EFER bits a guest may set: SCE, LME, LMA, NXE, FFXSR. SVME (SVM is not offered),
/// LMSLE and the rest are refused.
pub(crate) const EFER_GUEST_BITS: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::FFXSR;

/// The guest's MSR access failed: inject #GP(0).
pub(crate) struct Fault;

/// PAT entries must be valid memory types (0, 1, 4, 5, 6, 7).
fn valid_pat(v: u64) -> bool {
    v.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// RDMSR of `msr`. `host_tsc` is the host's time stamp counter now.
pub(crate) fn read(s: &SaveArea, tsc_offset: u64, m: &GuestMsrs, msr: u32, host_tsc: u64) -> Result<u64, Fault> {
    Ok(match msr {
        nr::TSC => host_tsc.wrapping_add(tsc_offset),
        nr::APIC_BASE => m.apic_base.ok_or(Fault)?,
        nr::SYSENTER_CS => s.sysenter_cs,
        nr::SYSENTER_ESP => s.sysenter_esp,
        nr::SYSENTER_EIP => s.sysenter_eip,
        nr::PAT => s.g_pat,
        nr::EFER => s.efer & !efer::SVME,
        nr::STAR => s.star,
        nr::LSTAR => s.lstar,
        nr::CSTAR => s.cstar,
        nr::SFMASK => s.sfmask,
        nr::FS_BASE => s.fs.base,
        nr::GS_BASE => s.gs.base,
        nr::KERNEL_GS_BASE => s.kernel_gs_base,
        nr::TSC_AUX => m.tsc_aux,
        nr::PATCH_LEVEL => PATCH_LEVEL,
        nr::MCG_CAP => u64::from(MC_BANKS),
        nr::MCG_STATUS => m.mcg_status,
        nr::MISC_ENABLE => m.misc_enable,
        nr::HWCR => m.hwcr,
        nr::DE_CFG => DE_CFG_LFENCE_SERIALIZE,
        // No counters: they read zero (KVM without a guest PMU).
        x if is_pmu(x) => 0,
        // Northbridge and system configuration: nothing to report.
        nr::SYSCFG | nr::NB_CFG => 0,
        x => match mc_bank(x) {
            Some((bank, reg)) => m.mc_banks[bank][reg],
            None => return Err(Fault),
        },
    })
}

/// WRMSR of `value` to `msr`. A TSC write moves the guest's TSC offset (the VM's: one
/// counter for all its vCPUs).
pub(crate) fn write(
    s: &mut SaveArea,
    tsc_offset: &mut u64,
    m: &mut GuestMsrs,
    msr: u32,
    value: u64,
    host_tsc: u64,
) -> Result<(), Fault> {
    let base = |v: u64| if canonical(v) { Ok(v) } else { Err(Fault) };
    match msr {
        nr::TSC => *tsc_offset = value.wrapping_sub(host_tsc),
        // Only EN may change: a new base, EXTD or a reserved bit is refused; BSP keeps
        // its value whatever is written (vCPU 0 is the bootstrap processor for good).
        nr::APIC_BASE => match m.apic_base.as_mut() {
            Some(apic_base) if value & !(APIC_BASE_BSP | APIC_BASE_EN) == APIC_DEFAULT_BASE => {
                *apic_base = (*apic_base & !APIC_BASE_EN) | (value & APIC_BASE_EN);
            }
            _ => return Err(Fault),
        },
        nr::SYSENTER_CS => s.sysenter_cs = value & 0xffff,
        nr::SYSENTER_ESP => s.sysenter_esp = base(value)?,
        nr::SYSENTER_EIP => s.sysenter_eip = base(value)?,
        nr::PAT if valid_pat(value) => s.g_pat = value,
        // LME cannot change while paging is on (APM 14.6.1).
        nr::EFER if value & !EFER_GUEST_BITS == 0 && (s.cr0 & cr0::PG == 0 || (value ^ s.efer) & efer::LME == 0) => {
            // LMA is set by the CPU, not by WRMSR: keep the current one.
            let lma = s.efer & efer::LMA;
            s.efer = (value & !efer::LMA) | lma | efer::SVME;
        }
        nr::STAR => s.star = value,
        nr::LSTAR => s.lstar = base(value)?,
        nr::CSTAR => s.cstar = base(value)?,
        nr::SFMASK => s.sfmask = value & 0xffff_ffff,
        nr::FS_BASE => s.fs.base = base(value)?,
        nr::GS_BASE => s.gs.base = base(value)?,
        nr::KERNEL_GS_BASE => s.kernel_gs_base = base(value)?,
        nr::TSC_AUX if value >> 32 == 0 => m.tsc_aux = value,
        // Writing the patch level is how a microcode update starts: ignored.
        nr::PATCH_LEVEL => {}
        nr::MCG_STATUS => m.mcg_status = value,
        nr::MISC_ENABLE if (value ^ m.misc_enable) & MISC_ENABLE_RO == 0 => {
            m.misc_enable = (value & !MISC_ENABLE_EMON) | (m.misc_enable & MISC_ENABLE_EMON);
        }
        nr::HWCR if value & !(HWCR_TSC_FREQ_SEL | HWCR_MC_STATUS_WR_EN | HWCR_IGNORED) == 0 => {
            m.hwcr = value & !HWCR_IGNORED;
        }
        nr::DE_CFG | nr::SYSCFG | nr::NB_CFG => {}
        x if is_pmu(x) => {}
        x => match mc_bank(x) {
            // MCi_CTL: all or nothing (as KVM); MCi_STATUS: only clearing, unless HWCR
            // allows writes; ADDR and MISC: anything.
            Some((bank, 0)) if value == 0 || value == u64::MAX => m.mc_banks[bank][0] = value,
            Some((bank, 1)) if value == 0 || m.hwcr & HWCR_MC_STATUS_WR_EN != 0 => m.mc_banks[bank][1] = value,
            Some((bank, reg @ (2 | 3))) => m.mc_banks[bank][reg] = value,
            _ => return Err(Fault),
        },
    }
    Ok(())
}
