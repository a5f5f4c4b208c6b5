// SPDX-License-Identifier: GPL-2.0
//! SVM: checking for it, turning it on and off on every CPU, and what all VMs share (the
//! permission maps and the ASID allocator). Plain Rust: the hardware access is in `ffi`.

pub(crate) mod apic;
pub(crate) mod cpuid;
pub(crate) mod dr;
pub(crate) mod ioeventfd;
pub(crate) mod irqfd;
pub(crate) mod msr;
pub(crate) mod npt;
pub(crate) mod vcpu;
pub(crate) mod vm;
pub(crate) mod vmcb;
pub(crate) mod x86;

use crate::ffi::cpu::{self, Msr, NoPreempt};
use crate::ffi::mem::{Pages, RawPage};
use crate::ffi::world::SvmCpu;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// What the CPU offers, checked once at load (CPUID, APM vol. 3 appendix E).
#[derive(Clone, Copy)]
pub(crate) struct Features {
    /// Number of ASIDs (CPUID Fn8000_000A EBX).
    pub(crate) asids: u32,
    /// SVM revision (Fn8000_000A EAX[7:0]).
    pub(crate) revision: u32,
    /// Next-RIP save and decode assists (Fn8000_000A EDX[3], EDX[7]).
    pub(crate) nrip_save: bool,
    pub(crate) decode_assists: bool,
}

/// Checks that this CPU can run yakvm; the error says exactly why not.
pub(crate) fn check_cpu() -> Result<Features> {
    let ext = cpu::cpuid(0x8000_0000, 0).eax;
    if ext < 0x8000_000a || cpu::cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        pr_err!("this CPU has no SVM (CPUID Fn8000_0001_ECX[SVM] = 0); not loading\n");
        return Err(ENODEV);
    }
    if Msr::VM_CR.read() & cpu::VM_CR_SVMDIS != 0 {
        pr_err!("SVM is disabled by the firmware (VM_CR.SVMDIS = 1); not loading\n");
        return Err(ENODEV);
    }
    let svm = cpu::cpuid(0x8000_000a, 0);
    if svm.edx & 1 == 0 {
        pr_err!("this CPU has no nested paging (CPUID Fn8000_000A_EDX[NP] = 0); not loading\n");
        return Err(ENODEV);
    }
    if cpu::read_cr4() & x86::cr4::LA57 != 0 {
        pr_err!("the host uses 5-level paging, yakvm's nested page tables are 4-level; not loading (boot with no5lvl)\n");
        return Err(ENODEV);
    }
    let leaf1 = cpu::cpuid(1, 0);
    if leaf1.ecx & (1 << 27) == 0 {
        pr_err!("XSAVE is not enabled by the host (CPUID.1:ECX[OSXSAVE] = 0); not loading\n");
        return Err(ENODEV);
    }
    let xsave_size = cpu::cpuid(0xd, 0).ebx;
    if xsave_size as usize > crate::ffi::mem::PAGE_SIZE {
        pr_err!("XSAVE area of {} bytes (XCR0 {:#x}) exceeds one page; not loading\n",
                xsave_size, cpu::read_xcr0());
        return Err(ENODEV);
    }
    if svm.ebx < 2 {
        pr_err!("CPU reports {} ASIDs, need at least 2; not loading\n", svm.ebx);
        return Err(ENODEV);
    }
    Ok(Features {
        asids: svm.ebx,
        revision: svm.eax & 0xff,
        nrip_save: svm.edx & (1 << 3) != 0,
        decode_assists: svm.edx & (1 << 7) != 0,
    })
}

/// SVM state of one CPU.
struct PerCpu {
    /// VM_HSAVE_PA's page: where VMRUN keeps host state.
    hsave: Pages<RawPage>,
    /// Where VMSAVE keeps the host state VMRUN does not (FS/GS/TR/LDTR, syscall MSRs).
    host_save: Pages<RawPage>,
    /// SVM enabled by us on this CPU.
    enabled: AtomicBool,
    /// EFER.SVME was found already set (someone else owns SVM).
    busy: AtomicBool,
}

/// SVM on every online CPU, for the life of the module.
pub(crate) struct Cpus {
    per_cpu: KVec<PerCpu>,
}

impl Cpus {
    /// Enables SVM on every online CPU, or on none (with a message) if any CPU has it on
    /// already: EFER.SVME set means another hypervisor (kvm_amd) owns SVM.
    pub(crate) fn enable() -> Result<Self> {
        let n = cpu::possible_cpus();
        let mut per_cpu = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            per_cpu.push(
                PerCpu {
                    hsave: Pages::new()?,
                    host_save: Pages::new()?,
                    enabled: AtomicBool::new(false),
                    busy: AtomicBool::new(false),
                },
                GFP_KERNEL,
            )?;
        }
        let this = Self { per_cpu };
        cpu::on_each_cpu(&|id: usize| {
            let Some(pc) = this.per_cpu.get(id) else { return };
            if Msr::EFER.read() & x86::efer::SVME != 0 {
                pc.busy.store(true, Ordering::Relaxed);
                return;
            }
            cpu::set_efer_svme(true);
            cpu::set_hsave_pa(pc.hsave.phys());
            pc.enabled.store(true, Ordering::Relaxed);
        });
        if let Some(id) = this.per_cpu.iter().position(|pc| pc.busy.load(Ordering::Relaxed)) {
            pr_err!("SVM is already in use on CPU {} (EFER.SVME = 1): is kvm_amd loaded? not loading\n", id);
            return Err(EBUSY); // `drop` turns SVM off where we turned it on.
        }
        Ok(this)
    }

    /// Pins the current thread to its CPU and proves SVM is on there.
    pub(crate) fn this_cpu<'a>(&'a self, pinned: &'a NoPreempt) -> Result<SvmCpu<'a>> {
        let pc = self.per_cpu.get(pinned.cpu()).ok_or(ENODEV)?;
        if !pc.enabled.load(Ordering::Relaxed) {
            // A CPU brought online after the module loaded.
            return Err(ENODEV);
        }
        Ok(SvmCpu { pinned, host_save: &pc.host_save })
    }
}

impl Drop for Cpus {
    fn drop(&mut self) {
        cpu::on_each_cpu(&|id: usize| {
            let Some(pc) = self.per_cpu.get(id) else { return };
            if pc.enabled.swap(false, Ordering::Relaxed) {
                cpu::set_hsave_pa(0);
                cpu::set_efer_svme(false);
            }
        });
    }
}

/// The I/O and MSR permission maps (APM 15.10.1, 15.11): every bit set, so every port
/// access and every MSR access by any guest exits. Shared by all VMCBs.
pub(crate) struct PermissionMaps {
    iopm: Pages<Iopm>,
    msrpm: Pages<Msrpm>,
}

/// 12 KiB: one bit per port, plus the bits of accesses that wrap past port 0xffff.
#[repr(C, align(4096))]

pub(crate) struct Iopm {
    bits: [u8; 3 * 4096],
}

/// 8 KiB: two bits (read, write) per MSR of the three architectural ranges.
#[repr(C, align(4096))]

pub(crate) struct Msrpm {
    bits: [u8; 2 * 4096],
}

impl PermissionMaps {
    pub(crate) fn new() -> Result<Self> {
        let mut iopm = Pages::<Iopm>::new()?;
        let mut msrpm = Pages::<Msrpm>::new()?;
        iopm.bits.fill(0xff);
        msrpm.bits.fill(0xff);
        Ok(Self { iopm, msrpm })
    }

    /// (IOPM, MSRPM) physical addresses for the VMCB.
    pub(crate) fn addresses(&self) -> (u64, u64) {
        (self.iopm.phys(), self.msrpm.phys())
    }
}

/// Hands out ASIDs 1..count (0 is the host's: VMRUN refuses it), one per vCPU.
pub(crate) struct Asids {
    used: KVec<AtomicU64>,
    count: u32,
}

/// An ASID, returned to its allocator on drop.
pub(crate) struct Asid {
    value: u32,
    owner: Arc<Shared>,
}

impl Asid {
    pub(crate) fn value(&self) -> u32 {
        self.value
    }
}

impl Drop for Asid {
    fn drop(&mut self) {
        let (word, bit) = Asids::slot(self.value);
        self.owner.asids.used[word].fetch_and(!bit, Ordering::Release);
    }
}

impl Asids {
    /// Most ASIDs yakvm tracks, whatever the CPU offers.
    const MAX: u32 = 4096;

    pub(crate) fn new(count: u32) -> Result<Self> {
        let count = count.min(Self::MAX);
        let mut used = KVec::new();
        for _ in 0..count.div_ceil(64) {
            used.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        used[0].fetch_or(1, Ordering::Relaxed); // ASID 0 belongs to the host.
        Ok(Self { used, count })
    }

    fn slot(asid: u32) -> (usize, u64) {
        ((asid / 64) as usize, 1 << (asid % 64))
    }

    /// Takes a free ASID; `ENOSPC` when all are in use.
    pub(crate) fn alloc(shared: &Arc<Shared>) -> Result<Asid> {
        let this = &shared.asids;
        for value in 1..this.count {
            let (word, bit) = Self::slot(value);
            if this.used[word].fetch_or(bit, Ordering::Acquire) & bit == 0 {
                return Ok(Asid { value, owner: shared.clone() });
            }
        }
        Err(ENOSPC)
    }
}

/// What every VM shares: SVM on the CPUs, the permission maps, the ASIDs.
pub(crate) struct Shared {
    pub(crate) features: Features,
    pub(crate) cpus: Cpus,
    pub(crate) maps: PermissionMaps,
    pub(crate) asids: Asids,
}

impl Shared {
    /// Checks the CPU and turns SVM on everywhere.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let features = check_cpu()?;
        let maps = PermissionMaps::new()?;
        let asids = Asids::new(features.asids)?;
        let cpus = Cpus::enable()?;
        Ok(Arc::new(Self { features, cpus, maps, asids }, GFP_KERNEL)?)
    }

    /// `CHECK_CAPABILITY`: the value of capability `cap`, 0 for unknown ones.
    pub(crate) fn capability(&self, cap: u64) -> u64 {
        use crate::abi::cap;
        let f = &self.features;
        match cap {
            cap::MAX_VCPUS => crate::abi::MAX_VCPUS.into(),
            cap::MAX_RAM_MIB => crate::abi::MAX_RAM_BYTES >> 20,
            cap::NRIP_SAVE => f.nrip_save.into(),
            cap::DECODE_ASSISTS => f.decode_assists.into(),
            cap::ASIDS => f.asids.into(),
            cap::SVM_REVISION => f.revision.into(),
            cap::PAGES_HELD => crate::ffi::mem::pages_in_use().0 as u64,
            cap::PAGES_PINNED => crate::ffi::mem::pages_in_use().1 as u64,
            cap::IOEVENTFDS => crate::abi::MAX_IOEVENTFDS.into(),
            _ => 0,
        }
    }
}
