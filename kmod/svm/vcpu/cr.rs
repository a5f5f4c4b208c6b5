// SPDX-License-Identifier: GPL-2.0
//! Writes to CR0, CR3 and CR4 (AMD APM vol. 2, 15.9), intercepted and emulated here so
//! that every value the guest loads is checked first against the architecture and against
//! the CPU its CPUID describes, as KVM's `kvm_set_cr0`/`kvm_set_cr3`/`kvm_set_cr4` do. A
//! bad value raises #GP(0) in the guest, as the CPU would. CR8 (the TPR) is intercepted
//! only while the kernel APIC waits for it to fall or its read page is mapped (apic.rs,
//! `watch_tpr`).
//!
//! Why: the hardware does not know the guest's CPUID (a guest could turn on a CR4 feature
//! the host has and the guest was told does not exist), and QEMU's software SVM turns a
//! guest's write of a reserved CR3 or CR4 bit into a failed VMRUN (VMEXIT_INVALID) instead
//! of #GP: without the intercepts a guest could end its own vCPU with one MOV.
//!
//! The instruction is read from guest memory at RIP (QEMU gives no decode assists):
//! MOV CRn, reg (0F 22 /r), CLTS (0F 06) and LMSW with a register operand (0F 01 /6) are
//! emulated; LMSW with a memory operand is reported to userspace as an unknown exit.

use super::{gpr, inject, skip, to_user_hw, Next, VcpuState};
use crate::abi;
use crate::guest_cpuid::CpuidResult;
use crate::svm::msr;
use crate::svm::vm::Vm;
use crate::svm::vmcb::SaveArea;
use crate::svm::x86::{cr0, cr4, efer, seg, vector};
use kernel::prelude::*;

/// What a guest may write to its control registers: fixed when the vCPU is made, from
/// the CPUID it sees.
#[derive(Clone, Copy)]
pub(super) struct CrLimits {
    /// CR4 bits the guest may set.
    cr4: u64,
    /// Physical address width: CR3 bits above it are reserved in long mode.
    phys_bits: u32,
}

/// CR4 bits that exist on every x86-64 CPU yakvm runs on, whatever CPUID says (as KVM's
/// `CR4_RESERVED_BITS`).
const CR4_ALWAYS: u64 = cr4::VME | cr4::PVI | cr4::TSD | cr4::DE | cr4::PSE | cr4::PAE | cr4::MCE
    | cr4::PGE | cr4::PCE | cr4::OSFXSR | cr4::OSXMMEXCPT;

impl CrLimits {
    /// The limits of a guest whose CPUID answers `cpuid(leaf)` (subleaf 0).
    pub(super) fn new(cpuid: impl Fn(u32) -> CpuidResult) -> Self {
        let (l1, l7) = (cpuid(1), cpuid(7));
        let has = |reg: u32, bit: u32| reg & (1 << bit) != 0;
        let mut cr4 = CR4_ALWAYS;
        let offered = [
            (has(l1.ecx, 17), cr4::PCIDE),
            (has(l1.ecx, 26), cr4::OSXSAVE),
            (has(l7.ebx, 0), cr4::FSGSBASE),
            (has(l7.ebx, 7), cr4::SMEP),
            (has(l7.ebx, 20), cr4::SMAP),
            (has(l7.ecx, 2), cr4::UMIP),
            (has(l7.ecx, 3), cr4::PKE),
            (has(l7.ecx, 7), cr4::CET),
            (has(l7.ecx, 16), cr4::LA57),
        ];
        for (on, bit) in offered {
            if on {
                cr4 |= bit;
            }
        }
        let phys_bits = match cpuid(0x8000_0008).eax & 0xff {
            0 => 36,
            n => n.min(52),
        };
        Self { cr4, phys_bits }
    }

    /// The bits of a physical address above the guest's physical address width.
    pub(super) fn phys_reserved(&self) -> u64 {
        !0u64 << self.phys_bits
    }

    fn cr3_reserved(&self, long: bool) -> u64 {
        // Long mode: the bits above the physical address width (no PCID: bit 63 too).
        // Legacy modes: nothing is checked on writes (bits 63:32 are ignored).
        if long { !0u64 << self.phys_bits } else { 0 }
    }
}

/// The guest may not load these control register values.
pub(super) struct Invalid;

/// CR0 as `MOV CR0` would load it from `value`, with the EFER it implies, or `Invalid`
/// (#GP). `s` holds the current CR0, CR4, EFER and CS.
fn new_cr0(s: &SaveArea, value: u64) -> Result<(u64, u64), Invalid> {
    if value & cr0::UPPER != 0 {
        return Err(Invalid);
    }
    // ET is fixed to 1; the other undefined bits of the low half are dropped.
    let new = (value & cr0::DEFINED) | cr0::ET;
    if (new & cr0::NW != 0 && new & cr0::CD == 0) || (new & cr0::PG != 0 && new & cr0::PE == 0) {
        return Err(Invalid);
    }
    let old = s.cr0;
    let mut e = s.efer;
    if old & cr0::PG == 0 && new & cr0::PG != 0 && e & efer::LME != 0 {
        // Activating long mode: needs PAE and a CS that is not a 64-bit one yet.
        if s.cr4 & cr4::PAE == 0 || s.cs.attrib & seg::L != 0 {
            return Err(Invalid);
        }
        e |= efer::LMA;
    }
    if old & cr0::PG != 0 && new & cr0::PG == 0 {
        // Paging cannot be turned off by 64-bit code.
        if s.long_mode() {
            return Err(Invalid);
        }
        e &= !efer::LMA;
    }
    Ok((new, e))
}

fn check_cr4(s: &SaveArea, limits: &CrLimits, new: u64) -> Result<(), Invalid> {
    if new & !limits.cr4 != 0 {
        return Err(Invalid);
    }
    // Long mode needs PAE; LA57 does not change in it; PCID needs long mode and a CR3
    // with PCID 0 to be turned on.
    if s.efer & efer::LMA != 0 && (new & cr4::PAE == 0 || (new ^ s.cr4) & cr4::LA57 != 0) {
        return Err(Invalid);
    }
    if new & cr4::PCIDE != 0 && s.cr4 & cr4::PCIDE == 0 && (s.efer & efer::LMA == 0 || s.cr3 & 0xfff != 0) {
        return Err(Invalid);
    }
    Ok(())
}

fn check_cr3(s: &SaveArea, limits: &CrLimits, new: u64) -> Result<(), Invalid> {
    if new & limits.cr3_reserved(s.efer & efer::LMA != 0) != 0 {
        return Err(Invalid);
    }
    Ok(())
}

/// Whether userspace's control registers (`SET_SREGS`, or the run page's) could be loaded
/// by VMRUN and are what a CPU of this guest's CPUID can be in (KVM's
/// `kvm_is_valid_sregs`); CS attributes as the VMCB packs them.
pub(super) fn valid_sregs(limits: &CrLimits, cr0: u64, cr3: u64, cr4: u64, e: u64, cs_attrib: u16) -> bool {
    let paging_long = e & efer::LME != 0 && cr0 & cr0::PG != 0;
    let modes = if paging_long {
        cr4 & cr4::PAE != 0
            && e & efer::LMA != 0
            && cr3 & limits.cr3_reserved(true) == 0
            && !(cs_attrib & seg::L != 0 && cs_attrib & seg::DB != 0)
            && cr0 & cr0::PE != 0
    } else {
        e & efer::LMA == 0 && cs_attrib & seg::L == 0
    };
    modes
        && e & !msr::EFER_GUEST_BITS == 0
        && cr4 & !limits.cr4 == 0
        && cr0 & cr0::UPPER == 0
        && !(cr0 & cr0::NW != 0 && cr0 & cr0::CD == 0)
        && !(cr0 & cr0::PG != 0 && cr0 & cr0::PE == 0)
}

/// A decoded control register write.
#[derive(Debug, PartialEq, Eq)]
enum CrWrite {
    /// MOV CRn, reg.
    Mov { cr: usize, gpr: usize },
    Clts,
    /// LMSW reg.
    Lmsw { gpr: usize },
}

/// Decodes the instruction at the start of `bytes` (`long`: 64-bit code, where REX
/// exists): (instruction, length). `None`: something else (or LMSW from memory).
fn decode(bytes: &[u8], long: bool) -> Option<(CrWrite, u64)> {
    let (mut i, mut rex_r, mut rex_b, mut lock) = (0, 0, 0, false);
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => {}
            0xf0 => lock = true,
            0x40..=0x4f if long => {
                rex_r = usize::from((b >> 2) & 1) * 8;
                rex_b = usize::from(b & 1) * 8;
            }
            _ => break,
        }
        i += 1;
    }
    match bytes.get(i..)? {
        [0x0f, 0x06, ..] => Some((CrWrite::Clts, i as u64 + 2)),
        // The ModRM `mod` field is ignored, as the CPU does for MOV CR. LOCK MOV CR0 is
        // AMD's alternative encoding of CR8.
        [0x0f, 0x22, modrm, ..] => {
            let cr = usize::from((modrm >> 3) & 7) + rex_r;
            let cr = if lock && cr == 0 { 8 } else { cr };
            Some((CrWrite::Mov { cr, gpr: usize::from(modrm & 7) + rex_b }, i as u64 + 3))
        }
        [0x0f, 0x01, modrm, ..] if (modrm >> 3) & 7 == 6 && modrm >> 6 == 3 => {
            Some((CrWrite::Lmsw { gpr: usize::from(modrm & 7) + rex_b }, i as u64 + 3))
        }
        _ => None,
    }
}

/// The CR0/CR3/CR4/CR8 write intercept (`cr` from the exit code), RIP at the instruction.
pub(super) fn handle_cr_write(vm: &Vm, v: &mut VcpuState, cr: usize) -> Next {
    let s = &v.vmcb.save;
    let long = s.long_mode();
    let at = s.cs.base.wrapping_add(s.rip);
    let mut bytes = [0u8; 15];
    // The instruction may end before an unmapped page: take what can be read.
    let n = (1..=bytes.len()).rev().find(|&n| vm.read_virt(&s.paging(), at, &mut bytes[..n]).is_ok()).unwrap_or(0);
    // Outside 64-bit mode the operand is 32 bits.
    let mask = if long { u64::MAX } else { 0xffff_ffff };
    let value = match decode(&bytes[..n], long) {
        Some((CrWrite::Mov { cr: c, gpr: g }, len)) if c == cr => (gpr(v, g) & mask, len),
        // CLTS clears TS; LMSW loads PE, MP, EM and TS but cannot clear PE.
        Some((CrWrite::Clts, len)) if cr == 0 => (s.cr0 & !cr0::TS, len),
        Some((CrWrite::Lmsw { gpr: g }, len)) if cr == 0 => {
            let low = cr0::PE | cr0::MP | cr0::EM | cr0::TS;
            ((s.cr0 & !low) | (gpr(v, g) & low) | (s.cr0 & cr0::PE), len)
        }
        _ => {
            v.stats.other += 1;
            return to_user_hw(v, abi::exit::UNKNOWN);
        }
    };
    let (value, len) = value;
    let limits = v.cr_limits;
    let s = &mut v.vmcb.save;
    let done = match cr {
        0 => new_cr0(s, value).map(|(c, e)| {
            s.cr0 = c;
            s.efer = e;
        }),
        3 => check_cr3(s, &limits, value).map(|()| s.cr3 = value),
        4 => check_cr4(s, &limits, value).map(|()| s.cr4 = value),
        // Only while the kernel APIC waits for the TPR to fall or its read page is mapped
        // (apic.rs, `watch_tpr`); bits 63:4 are reserved.
        _ if value & !0xf != 0 => Err(Invalid),
        _ => {
            skip(v, len);
            super::apic::cr8_write(v, value);
            return Next::Resume;
        }
    };
    match done {
        Ok(()) => {
            // The CPU flushes the guest's TLB on these writes; the intercepted write did
            // not run, so the next VMRUN does it.
            v.flush_tlb = true;
            skip(v, len);
            Next::Resume
        }
        Err(Invalid) => inject(v, vector::GP, Some(0)),
    }
}
