// SPDX-License-Identifier: GPL-2.0
//! RDMSR and WRMSR from the guest. Every MSR access exits (the MSR permission map is all
//! ones). The few MSRs a 64-bit guest needs are emulated on the guest's own copies in the
//! VMCB; everything else, above all the host's SVM MSRs (VM_HSAVE_PA, VM_CR) and
//! EFER.SVME, raises #GP in the guest. No guest value ever reaches a host MSR.

use super::vmcb::{SaveArea, EFER_SVME};

/// MSR numbers (AMD APM vol. 2, appendix A).
mod nr {
    pub(super) const TSC: u32 = 0x10;
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
}

/// EFER bits a guest may set: SCE, LME, LMA, NXE, FFXSR. SVME (SVM is not offered),
/// LMSLE and the rest are refused.
const EFER_GUEST_BITS: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 14);

/// The guest's MSR access failed: inject #GP(0).
pub(crate) struct Fault;

fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// PAT entries must be valid memory types (0, 1, 4, 5, 6, 7).
fn valid_pat(v: u64) -> bool {
    v.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// RDMSR of `msr`. `host_tsc` is the host's time stamp counter now.
pub(crate) fn read(s: &SaveArea, tsc_offset: u64, msr: u32, host_tsc: u64) -> Result<u64, Fault> {
    Ok(match msr {
        nr::TSC => host_tsc.wrapping_add(tsc_offset),
        nr::SYSENTER_CS => s.sysenter_cs,
        nr::SYSENTER_ESP => s.sysenter_esp,
        nr::SYSENTER_EIP => s.sysenter_eip,
        nr::PAT => s.g_pat,
        nr::EFER => s.efer & !EFER_SVME,
        nr::STAR => s.star,
        nr::LSTAR => s.lstar,
        nr::CSTAR => s.cstar,
        nr::SFMASK => s.sfmask,
        nr::FS_BASE => s.fs.base,
        nr::GS_BASE => s.gs.base,
        nr::KERNEL_GS_BASE => s.kernel_gs_base,
        _ => return Err(Fault),
    })
}

/// WRMSR of `value` to `msr`. A TSC write moves the guest's TSC offset.
pub(crate) fn write(s: &mut SaveArea, tsc_offset: &mut u64, msr: u32, value: u64, host_tsc: u64) -> Result<(), Fault> {
    let base = |v: u64| if canonical(v) { Ok(v) } else { Err(Fault) };
    match msr {
        nr::TSC => *tsc_offset = value.wrapping_sub(host_tsc),
        nr::SYSENTER_CS => s.sysenter_cs = value & 0xffff,
        nr::SYSENTER_ESP => s.sysenter_esp = base(value)?,
        nr::SYSENTER_EIP => s.sysenter_eip = base(value)?,
        nr::PAT if valid_pat(value) => s.g_pat = value,
        nr::EFER if value & !EFER_GUEST_BITS == 0 => {
            // LMA is set by the CPU, not by WRMSR: keep the current one.
            let lma = s.efer & (1 << 10);
            s.efer = (value & !(1 << 10)) | lma | EFER_SVME;
        }
        nr::STAR => s.star = value,
        nr::LSTAR => s.lstar = base(value)?,
        nr::CSTAR => s.cstar = base(value)?,
        nr::SFMASK => s.sfmask = value & 0xffff_ffff,
        nr::FS_BASE => s.fs.base = base(value)?,
        nr::GS_BASE => s.gs.base = base(value)?,
        nr::KERNEL_GS_BASE => s.kernel_gs_base = base(value)?,
        _ => return Err(Fault),
    }
    Ok(())
}
