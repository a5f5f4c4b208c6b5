// SPDX-License-Identifier: GPL-2.0
//! The world switch: from the host into the guest with VMRUN and back (AMD APM vol. 2,
//! 15.5 "VMRUN Instruction" and 15.6 "#VMEXIT"), with the guest's extended (FPU/SSE/AVX)
//! state swapped in around it.
//!
//! VMRUN itself saves and restores only part of the host state (RIP, RSP, RAX, CR0/3/4,
//! EFER, RFLAGS, GDTR/IDTR, ES/CS/SS/DS) in the host save area of VM_HSAVE_PA. The rest is
//! done here: VMSAVE/VMLOAD switch FS, GS, TR, LDTR, KernelGsBase, STAR, LSTAR, CSTAR,
//! SFMASK and the SYSENTER MSRs through a per-CPU host VMCB; the asm block swaps the
//! general-purpose registers; XSAVE/XRSTOR swap the extended state inside a kernel FPU
//! section.

use super::cpu::NoPreempt;
use super::glue;
use super::mem::{Pages, RawPage};
use crate::svm::vmcb::{self, Vmcb};
use core::mem::offset_of;
use kernel::bindings;
use kernel::prelude::*;

/// Guest general-purpose registers that VMRUN does not switch (RAX and RSP live in the
/// VMCB save area).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct GuestGprs {
    pub(crate) rbx: u64,
    pub(crate) rcx: u64,
    pub(crate) rdx: u64,
    pub(crate) rsi: u64,
    pub(crate) rdi: u64,
    pub(crate) rbp: u64,
    pub(crate) r8: u64,
    pub(crate) r9: u64,
    pub(crate) r10: u64,
    pub(crate) r11: u64,
    pub(crate) r12: u64,
    pub(crate) r13: u64,
    pub(crate) r14: u64,
    pub(crate) r15: u64,
}

/// The guest's extended state in XSAVE's standard format.
///
/// # Invariants
/// The area always holds either the initial image built by [`GuestFpu::new`] or what
/// XSAVE stored from the CPU, so XRSTOR of it cannot fault (no reserved MXCSR bits, a
/// valid header). Userspace cannot write it.
pub(crate) struct GuestFpu(Pages<RawPage>);

/// Offset of MXCSR in the XSAVE legacy region.
const XSAVE_MXCSR: usize = 24;
/// MXCSR after reset: all SIMD exceptions masked.
const MXCSR_RESET: u32 = 0x1f80;

impl GuestFpu {
    /// A guest FPU in its reset state.
    pub(crate) fn new() -> Result<Self> {
        let mut area = Pages::<RawPage>::new()?;
        // INVARIANT: zeroed area (XSTATE_BV = 0: every component in its initial state) with
        // the reset MXCSR, which XRSTOR loads whenever SSE or AVX state is requested.
        area.bytes[XSAVE_MXCSR..XSAVE_MXCSR + 4].copy_from_slice(&MXCSR_RESET.to_le_bytes());
        Ok(Self(area))
    }
}

/// Proof that SVM is enabled on the CPU the current thread is pinned to, with a host save
/// area in VM_HSAVE_PA and a page for VMSAVE of the host's state. Made by `svm::cpus`.
pub(crate) struct SvmCpu<'a> {
    pub(crate) pinned: &'a NoPreempt,
    pub(crate) host_save: &'a Pages<RawPage>,
}

/// Intercepts that must be on for any guest to run: without them a guest could block the
/// host's interrupts (CLGI), reach host ports, MSRs or debug registers (every DR access,
/// checked below), or use SVM itself.
const REQUIRED_MISC1: u32 = vmcb::intercept1::INTR
    | vmcb::intercept1::NMI
    | vmcb::intercept1::IOIO_PROT
    | vmcb::intercept1::MSR_PROT
    | vmcb::intercept1::SHUTDOWN;
const REQUIRED_MISC2: u32 = vmcb::intercept2::VMRUN
    | vmcb::intercept2::VMLOAD
    | vmcb::intercept2::VMSAVE
    | vmcb::intercept2::STGI
    | vmcb::intercept2::CLGI
    | vmcb::intercept2::SKINIT
    | vmcb::intercept2::XSETBV;

/// DR7's L0-L3 and G0-G3: no breakpoint may be enabled while a guest runs.
const DR7_ENABLES: u64 = 0xff;

/// Runs the guest of `vmcb` until its next #VMEXIT, on the CPU `cpu` is pinned to.
///
/// The guest's RAX, RSP, RIP and the rest of its architectural state are in `vmcb`; the
/// other general-purpose registers are in `gprs` and its extended state in `fpu`. The
/// exit is described in `vmcb.control`.
///
/// `exit_at_once`: the guest exits (INTR) at its first instruction boundary, after
/// VMRUN delivered the event in EVENTINJ: a self-IPI is pending as VMRUN starts (KVM's
/// "immediate exit"; single-stepping into an event handler, vcpu/debug.rs).
///
/// Refuses (`EPERM`) a VMCB without the intercepts that protect the host, without nested
/// paging, with a breakpoint enabled in the DR7 the guest runs with (the hardware's
/// DR0-DR3 would be the host's), or whose permission maps are not the all-intercepting
/// ones given. `Ok(false)`: a signal is pending, the guest was not entered.
pub(crate) fn run(
    cpu: &SvmCpu<'_>,
    vmcb: &mut Pages<Vmcb>,
    gprs: &mut GuestGprs,
    fpu: &mut GuestFpu,
    permission_maps: (u64, u64),
    exit_at_once: bool,
) -> Result<bool> {
    let c = &vmcb.control;
    if c.intercept_misc1 & REQUIRED_MISC1 != REQUIRED_MISC1
        || c.intercept_dr != u32::MAX
        || vmcb.save.dr7 & DR7_ENABLES != 0
        || c.intercept_misc2 & REQUIRED_MISC2 != REQUIRED_MISC2
        || c.np_control & vmcb::NP_ENABLE == 0
        || c.guest_asid == 0
        || (c.iopm_base_pa, c.msrpm_base_pa) != permission_maps
    {
        pr_err!("refusing to run a VMCB without its protections\n");
        return Err(EPERM);
    }
    let _ = cpu.pinned;
    let vmcb_pa = vmcb.phys();
    let host_pa = cpu.host_save.phys();
    let fpu_area = fpu.0.bytes.as_mut_ptr();

    // SAFETY: preemption is off (`cpu.pinned`), as kernel_fpu_begin requires; the section
    // ends below on every path. Inside it the FPU registers are ours to change.
    unsafe { bindings::kernel_fpu_begin_mask(KFPU_387 | KFPU_MXCSR) };
    // SAFETY: the area is 64-byte aligned (a page) and valid for XRSTOR (invariant of
    // `GuestFpu`); the FPU registers are owned by this kernel FPU section.
    unsafe {
        core::arch::asm!("xrstor64 [{}]", in(reg) fpu_area, in("eax") u32::MAX,
                         in("edx") u32::MAX, options(nostack, preserves_flags))
    };
    // SAFETY: balanced by `yakvm_local_irq_enable` below; tells lockdep and the tracers
    // that interrupts are off while the guest runs.
    unsafe { glue::yakvm_local_irq_disable() };
    // A signal that came since the caller's check, before interrupts went off, would
    // otherwise wait for the guest's next exit: with them off, a later one makes the guest
    // exit at once (its interrupt is pending at VMRUN). As KVM's kvm_vcpu_exit_request.
    if kernel::current!().signal_pending() {
        // SAFETY: balances the disable just above.
        unsafe { glue::yakvm_local_irq_enable() };
        // SAFETY: ends the FPU section begun above, on the same CPU (preemption is off).
        unsafe { bindings::kernel_fpu_end() };
        return Ok(false);
    }
    if exit_at_once {
        // SAFETY: interrupts are off, so the IPI stays pending until VMRUN sets GIF with
        // the INTR intercept on (checked above); the reschedule IPI does nothing harmful
        // to a CPU that takes it (KVM sends the same one to itself for the same purpose).
        unsafe { glue::yakvm_self_ipi() };
    }

    // SAFETY: SVM on with VM_HSAVE_PA set (`SvmCpu`), interrupts off; `host_pa` is the host
    // VMSAVE page; `vmcb_pa`'s protective intercepts, nested paging and ASID were checked
    // above, so the guest reaches only its own memory and exits on all that touches the
    // host; `gprs` is live and exclusive.
    unsafe { yakvm_vmrun(gprs, host_pa, vmcb_pa) };

    // SAFETY: balances `yakvm_local_irq_disable` above; a pending host interrupt that made
    // the guest exit is taken here.
    unsafe { glue::yakvm_local_irq_enable() };
    // SAFETY: same area and FPU section as the XRSTOR above; XSAVE keeps the area valid.
    unsafe {
        core::arch::asm!("xsave64 [{}]", in(reg) fpu_area, in("eax") u32::MAX,
                         in("edx") u32::MAX, options(nostack, preserves_flags))
    };
    // SAFETY: ends the section begun above, still on the same CPU (preemption is off).
    unsafe { bindings::kernel_fpu_end() };
    Ok(true)
}

/// `kernel_fpu_begin_mask` flags (arch/x86/include/asm/fpu/api.h): reset the x87 control
/// word and MXCSR to the kernel's defaults.
const KFPU_387: u32 = 1 << 0;
const KFPU_MXCSR: u32 = 1 << 1;

extern "C" {
    /// The world switch (below): loads `gprs` and the guest state of `vmcb_pa`, runs the
    /// guest until #VMEXIT, stores the guest state back and restores the host's.
    ///
    /// # Safety
    /// Interrupts off, SVM on with VM_HSAVE_PA set, `host_save_pa` a host save page,
    /// `vmcb_pa` a VMCB safe for the host to run (see `run`), `gprs` valid and exclusive.
    fn yakvm_vmrun(gprs: *mut GuestGprs, host_save_pa: u64, vmcb_pa: u64);
}

// The world switch (AMD APM vol. 2, 15.5 and 15.6), in the spirit of KVM's vmenter.S:
// only register moves, no policy. SysV arguments: rdi = &GuestGprs, rsi = host save page,
// rdx = guest VMCB (physical addresses).
// - GIF is clear from CLGI to STGI: no interrupt or NMI can arrive while FS/GS/TR are
//   half switched. IF is set just before VMRUN so that, with V_INTR_MASKING, a physical
//   interrupt during the guest causes an INTR #VMEXIT; the host takes it once the caller
//   re-enables interrupts.
// - VMRUN saves and restores rsp, rax and the rest of the host state it covers; VMSAVE and
//   VMLOAD switch FS/GS/TR/LDTR, KernelGsBase and the syscall/sysenter MSRs.
// - Every register but rsp holds a guest value between the loads and the stores, so the
//   three arguments live on the stack; the callee-saved registers are pushed first.
core::arch::global_asm!(
    ".pushsection .text",
    ".globl yakvm_vmrun",
    ".type yakvm_vmrun, @function",
    ".p2align 4",
    "yakvm_vmrun:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",                 // [rsp + 16]: guest GPRs
    "push rsi",                 // [rsp + 8]:  host save page
    "push rdx",                 // [rsp]:      guest VMCB
    "clgi",
    "mov rax, [rsp + 8]",
    "vmsave rax",               // host FS/GS/TR/LDTR and syscall MSRs out
    "mov rax, [rsp]",
    "vmload rax",               // the guest's in
    "mov rax, [rsp + 16]",
    "mov rbx, [rax + {rbx}]",
    "mov rcx, [rax + {rcx}]",
    "mov rdx, [rax + {rdx}]",
    "mov rsi, [rax + {rsi}]",
    "mov rdi, [rax + {rdi}]",
    "mov rbp, [rax + {rbp}]",
    "mov r8,  [rax + {r8}]",
    "mov r9,  [rax + {r9}]",
    "mov r10, [rax + {r10}]",
    "mov r11, [rax + {r11}]",
    "mov r12, [rax + {r12}]",
    "mov r13, [rax + {r13}]",
    "mov r14, [rax + {r14}]",
    "mov r15, [rax + {r15}]",
    "mov rax, [rsp]",
    "sti",
    "vmrun rax",
    "cli",                      // #VMEXIT: rsp and rax are the host's again, GIF clear
    "mov rax, [rsp + 16]",
    "mov [rax + {rbx}], rbx",
    "mov [rax + {rcx}], rcx",
    "mov [rax + {rdx}], rdx",
    "mov [rax + {rsi}], rsi",
    "mov [rax + {rdi}], rdi",
    "mov [rax + {rbp}], rbp",
    "mov [rax + {r8}],  r8",
    "mov [rax + {r9}],  r9",
    "mov [rax + {r10}], r10",
    "mov [rax + {r11}], r11",
    "mov [rax + {r12}], r12",
    "mov [rax + {r13}], r13",
    "mov [rax + {r14}], r14",
    "mov [rax + {r15}], r15",
    "mov rax, [rsp]",
    "vmsave rax",               // guest FS/GS/TR/LDTR and syscall MSRs out
    "mov rax, [rsp + 8]",
    "vmload rax",               // the host's back
    "stgi",
    "add rsp, 24",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size yakvm_vmrun, . - yakvm_vmrun",
    ".popsection",
    rbx = const offset_of!(GuestGprs, rbx),
    rcx = const offset_of!(GuestGprs, rcx),
    rdx = const offset_of!(GuestGprs, rdx),
    rsi = const offset_of!(GuestGprs, rsi),
    rdi = const offset_of!(GuestGprs, rdi),
    rbp = const offset_of!(GuestGprs, rbp),
    r8 = const offset_of!(GuestGprs, r8),
    r9 = const offset_of!(GuestGprs, r9),
    r10 = const offset_of!(GuestGprs, r10),
    r11 = const offset_of!(GuestGprs, r11),
    r12 = const offset_of!(GuestGprs, r12),
    r13 = const offset_of!(GuestGprs, r13),
    r14 = const offset_of!(GuestGprs, r14),
    r15 = const offset_of!(GuestGprs, r15),
);
