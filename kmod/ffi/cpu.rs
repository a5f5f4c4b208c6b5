// SPDX-License-Identifier: GPL-2.0
//! CPU primitives: CPUID, MSRs, control registers, running code on every CPU, and
//! pinning the current thread to its CPU.

use super::glue;
use crate::svm::x86::efer::SVME as EFER_SVME;
use kernel::ffi::c_void;

pub(crate) use crate::guest_cpuid::CpuidResult;

/// Executes CPUID for `leaf`/`subleaf`.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    // SAFETY: CPUID is available on every x86-64 CPU and only writes the four registers
    // named here; `rbx` is reserved by LLVM, so it is saved around the instruction.
    let (eax, rbx, ecx, edx): (u32, u64, u32, u32);
    unsafe {
        core::arch::asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) rbx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags),
        )
    };
    CpuidResult { eax, ebx: rbx as u32, ecx, edx }
}

/// MSRs yakvm uses (AMD APM vol. 2, appendix A).
pub(crate) mod msr {
    pub(crate) const EFER: u32 = 0xc000_0080;
    /// SVM control; bit 4 SVMDIS disables SVM (APM 15.30.1).
    pub(crate) const VM_CR: u32 = 0xc001_0114;
    /// Physical address of the host save area used by VMRUN (APM 15.30.4).
    pub(crate) const VM_HSAVE_PA: u32 = 0xc001_0117;
    /// The value RDTSCP returns in ECX (and RDPID in its register).
    pub(crate) const TSC_AUX: u32 = 0xc000_0103;
}

/// VM_CR.SVMDIS.
pub(crate) const VM_CR_SVMDIS: u64 = 1 << 4;

/// An MSR yakvm may access. Only the MSRs of [`msr`] can be named, and the caller has
/// checked (CPUID Fn8000_0001 ECX.SVM) that the SVM MSRs exist before reading them.
#[derive(Clone, Copy)]
pub(crate) struct Msr(u32);

impl Msr {
    pub(crate) const EFER: Msr = Msr(msr::EFER);
    pub(crate) const VM_CR: Msr = Msr(msr::VM_CR);

    /// Reads the MSR on the current CPU.
    pub(crate) fn read(self) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: the MSR exists (type invariant), so RDMSR does not fault; it only writes
        // edx:eax.
        unsafe {
            core::arch::asm!("rdmsr", in("ecx") self.0, out("eax") lo, out("edx") hi,
                             options(nostack, preserves_flags))
        };
        (u64::from(hi) << 32) | u64::from(lo)
    }
}

/// Sets or clears EFER.SVME on the current CPU; the only EFER bit yakvm changes.
pub(crate) fn set_efer_svme(on: bool) {
    let efer = Msr::EFER.read();
    let efer = if on { efer | EFER_SVME } else { efer & !EFER_SVME };
    // SAFETY: EFER exists on every x86-64 CPU; SVME is a valid bit here (the caller checked
    // CPUID for SVM) and no other bit changes. Turning SVME on or off affects only the SVM
    // instructions, which yakvm alone uses on this CPU.
    unsafe { wrmsr(msr::EFER, efer) };
}

/// Points VM_HSAVE_PA at a host save area (0 to clear it).
pub(crate) fn set_hsave_pa(pa: u64) {
    // SAFETY: the MSR exists (SVM was checked); `pa` is the page-aligned address of a
    // 4 KiB page owned by yakvm for as long as SVM stays enabled on this CPU (or 0).
    unsafe { wrmsr(msr::VM_HSAVE_PA, pa) };
}

/// # Safety
/// `msr` must exist and `value` must be valid for it and harmless to the host.
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
                         in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Proof that this machine's CPUs have the TSC_AUX MSR (CPUID Fn8000_0001 EDX.RDTSCP or
/// Fn0000_0007 ECX.RDPID, APM vol. 3 RDTSCP).
#[derive(Clone, Copy)]
pub(crate) struct TscAux(());

impl TscAux {
    /// `None` on a CPU without TSC_AUX.
    pub(crate) fn probe() -> Option<Self> {
        let rdtscp = cpuid(0x8000_0001, 0).edx & (1 << 27) != 0;
        let rdpid = cpuid(0, 0).eax >= 7 && cpuid(7, 0).ecx & (1 << 22) != 0;
        (rdtscp || rdpid).then_some(Self(()))
    }

    /// Puts the guest's `value` into this CPU's TSC_AUX until the returned guard is
    /// dropped, which puts the host's back. Preemption stays off meanwhile (`pinned`), so
    /// no host task returns to userspace (where RDTSCP and RDPID read it: `getcpu`) on
    /// this CPU with the guest's value; Linux's own code never reads it (its entry code
    /// avoids RDPID for this reason: KVM too keeps a guest's value while in the kernel).
    pub(crate) fn load_guest(self, pinned: &NoPreempt, value: u32) -> GuestTscAux<'_> {
        let host = Msr(msr::TSC_AUX).read();
        let loaded = host != u64::from(value);
        if loaded {
            // SAFETY: the MSR exists (`self`); bits 63:32 are reserved and `value` has
            // none. The host's value is back before preemption is on again (the guard
            // borrows `pinned`).
            unsafe { wrmsr(msr::TSC_AUX, value.into()) };
        }
        GuestTscAux { host: loaded.then_some(host), _pinned: pinned }
    }
}

/// The guest's TSC_AUX is in the MSR of this CPU ([`TscAux::load_guest`]).
pub(crate) struct GuestTscAux<'a> {
    /// The host's value to put back, if it differed from the guest's.
    host: Option<u64>,
    _pinned: &'a NoPreempt,
}

impl Drop for GuestTscAux<'_> {
    fn drop(&mut self) {
        if let Some(host) = self.host {
            // SAFETY: the value read from this same MSR on this CPU (preemption is still
            // off: `_pinned`).
            unsafe { wrmsr(msr::TSC_AUX, host) };
        }
    }
}

/// Reads CR3 (the current task's page-table root, with its PCID bits).
pub(crate) fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects at CPL 0.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nostack, nomem, preserves_flags)) };
    cr3
}

/// Reads CR4.
pub(crate) fn read_cr4() -> u64 {
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects at CPL 0.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nostack, nomem, preserves_flags)) };
    cr4
}

/// Reads XCR0 (the caller has checked CPUID.1:ECX.OSXSAVE).
pub(crate) fn read_xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX=0 is valid when CR4.OSXSAVE is set, which the caller checked.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi,
                         options(nostack, nomem, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Number of possible CPU ids (`nr_cpu_ids`).
pub(crate) fn possible_cpus() -> usize {
    // SAFETY: reads a variable fixed at boot.
    unsafe { glue::yakvm_nr_cpu_ids() as usize }
}

/// Runs `f(cpu)` on every online CPU, one at a time per CPU with interrupts off, and
/// waits for all of them.
pub(crate) fn on_each_cpu<F: Fn(usize) + Sync>(f: &F) {
    unsafe extern "C" fn trampoline<F: Fn(usize) + Sync>(info: *mut c_void) {
        // SAFETY: `info` is the `&F` passed below, alive until `yakvm_on_each_cpu` returns
        // (it waits); `F: Sync` makes calling it from several CPUs at once sound.
        let f = unsafe { &*info.cast::<F>() };
        // SAFETY: we run in an IPI or with preemption off, so the CPU id is stable.
        f(unsafe { glue::yakvm_smp_processor_id() } as usize)
    }
    // SAFETY: `trampoline::<F>` matches the `smp_call_func_t` ABI and `f` outlives the
    // call, which waits for every CPU.
    unsafe { glue::yakvm_on_each_cpu(trampoline::<F>, f as *const F as *mut c_void) };
}

/// The current thread cannot be preempted or migrated while this value lives.
pub(crate) struct NoPreempt(());

impl NoPreempt {
    pub(crate) fn new() -> Self {
        // SAFETY: balanced by `drop`.
        unsafe { glue::yakvm_preempt_disable() };
        Self(())
    }

    /// The CPU this thread runs on (stable while `self` lives).
    pub(crate) fn cpu(&self) -> usize {
        // SAFETY: preemption is off, as `smp_processor_id` requires.
        unsafe { glue::yakvm_smp_processor_id() as usize }
    }
}

impl Drop for NoPreempt {
    fn drop(&mut self) {
        // SAFETY: balances the `preempt_disable` of `new`.
        unsafe { glue::yakvm_preempt_enable() };
    }
}

/// Lets the scheduler run another task if one is due (between guest entries).
pub(crate) fn cond_resched() {
    // SAFETY: called from process context with no locks that forbid sleeping held (the
    // vCPU mutex is a sleeping lock).
    unsafe { kernel::bindings::__cond_resched() };
}

/// Whether another task wants this CPU (it needs rescheduling, or another task is
/// runnable here): a poll should stop and let it in.
pub(crate) fn wanted() -> bool {
    // SAFETY: reads the current task's flags and this CPU's run queue length; no state
    // is required of the caller (a migration in between only makes the answer stale).
    unsafe { glue::yakvm_cpu_wanted() != 0 }
}

/// The module parameter `halt_poll_ns`: the longest a halted vCPU polls before it sleeps.
pub(crate) fn halt_poll_max_ns() -> u64 {
    // SAFETY: reads an unsigned int the kernel's parameter code may write at any time
    // (READ_ONCE in the glue).
    u64::from(unsafe { glue::yakvm_halt_poll_ns() })
}

/// Reads the time stamp counter.
pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects and only writes edx:eax.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}
