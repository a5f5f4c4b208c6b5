// SPDX-License-Identifier: GPL-2.0
//! The world switch: from the host into the guest with VMRUN and back (AMD APM vol. 2,
//! 15.5 "VMRUN Instruction" and 15.6 "#VMEXIT"), and the guest's extended (FPU/SSE/AVX)
//! state, which is loaded for a whole RUN.
//!
//! VMRUN itself saves and restores only part of the host state (RIP, RSP, RAX, CR0/3/4,
//! EFER, RFLAGS, GDTR/IDTR, ES/CS/SS/DS) in the host save area of VM_HSAVE_PA. The rest is
//! done here: VMSAVE/VMLOAD switch FS, GS, TR, LDTR, KernelGsBase, STAR, LSTAR, CSTAR,
//! SFMASK and the SYSENTER MSRs through a per-CPU host VMCB; the asm block swaps the
//! general-purpose registers. The extended state is the kernel's business, as for KVM:
//! during RUN the guest's state is the task's FPU state (`GuestFpu::enter`), so exits
//! handled in the module neither save nor restore it, and a context switch in between
//! saves and restores the guest's registers, never mixing them with the host's.

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

/// The guest's extended state, kept by the kernel's FPU code (`struct fpu_guest`, as KVM's).
///
/// # Invariants
/// `guest` was set up by `fpu_alloc_guest_fpstate` and is freed on drop. `entered` tells
/// whether the current task's FPU state is the guest's: `enter` and `leave` are paired
/// inside one RUN, on its task (`Vcpu::run` calls both, in order, under the vCPU's lock).
pub(crate) struct GuestFpu {
    guest: KBox<bindings::fpu_guest>,
    entered: bool,
}

// SAFETY: the guest state is plain memory owned by this value; it is only swapped in by
// the task that runs the vCPU, under its lock.
unsafe impl Send for GuestFpu {}

impl GuestFpu {
    /// A guest FPU in its reset state (the kernel's initial FPU state: MXCSR 0x1f80,
    /// x87 control word 0x37f).
    pub(crate) fn new() -> Result<Self> {
        let mut guest = KBox::new(bindings::fpu_guest::default(), GFP_KERNEL)?;
        // SAFETY: `guest` is a zeroed `fpu_guest`, which this call fills in (and which
        // `Drop` frees).
        if !unsafe { bindings::fpu_alloc_guest_fpstate(&mut *guest) } {
            return Err(ENOMEM);
        }
        Ok(Self { guest, entered: false })
    }

    /// Makes the guest's state the current task's FPU state (the host task's is saved)
    /// until `leave`.
    pub(crate) fn enter(&mut self) -> Result {
        if self.entered {
            return Err(EBUSY);
        }
        // SAFETY: process context (an ioctl); `guest` is a live guest FPU (invariant) not
        // entered on any task; `leave` swaps back before RUN returns.
        let err = unsafe { bindings::fpu_swap_kvm_fpstate(&mut *self.guest, true) };
        if err != 0 {
            return Err(Error::from_errno(err));
        }
        self.entered = true;
        Ok(())
    }

    /// Gives the task its own FPU state back (the guest's is saved).
    pub(crate) fn leave(&mut self) {
        if !self.entered {
            return;
        }
        // SAFETY: the task entered the guest FPU with `enter` in this same RUN (invariant).
        unsafe { bindings::fpu_swap_kvm_fpstate(&mut *self.guest, false) };
        self.entered = false;
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        self.leave();
        // SAFETY: allocated in `new`, no longer the state of any task (left above).
        unsafe { bindings::fpu_free_guest_fpstate(&mut *self.guest) };
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
/// other general-purpose registers are in `gprs`; its extended state must be the task's
/// (`fpu` entered). The exit is described in `vmcb.control`.
///
/// `exit_at_once`: the guest exits (INTR) at its first instruction boundary, after
/// VMRUN delivered the event in EVENTINJ: a self-IPI is pending as VMRUN starts (KVM's
/// "immediate exit"; single-stepping into an event handler, vcpu/debug.rs).
///
/// Refuses (`EPERM`) a VMCB without the intercepts that protect the host, without nested
/// paging, with a breakpoint enabled in the DR7 the guest runs with (the hardware's
/// DR0-DR3 would be the host's), or whose permission maps are not the all-intercepting
/// ones given, and a guest FPU not entered (the guest would see the host's registers).
/// `Ok(false)`: a signal is pending or `apic` was kicked, the guest was not entered. `EIO`: the guest state came
/// back as the host's own (`host_state_returned`); it is wiped and the vCPU must not run
/// again (after a failed VMRUN it is wiped too, and the failure reported as usual).
pub(crate) fn run(
    cpu: &SvmCpu<'_>,
    vmcb: &mut Pages<Vmcb>,
    gprs: &mut GuestGprs,
    fpu: &GuestFpu,
    permission_maps: (u64, u64),
    exit_at_once: bool,
    apic: Option<&super::apic::ApicHw>,
) -> Result<bool> {
    if !fpu.entered {
        pr_err!("refusing to run a guest without its FPU state\n");
        return Err(EPERM);
    }
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

    // SAFETY: balanced by `yakvm_local_irq_enable` below; tells lockdep and the tracers
    // that interrupts are off while the guest runs.
    unsafe { glue::yakvm_local_irq_disable() };
    // A signal that came since the caller's check, before interrupts went off, would
    // otherwise wait for the guest's next exit: with them off, a later one makes the guest
    // exit at once (its interrupt is pending at VMRUN). As KVM's kvm_vcpu_exit_request.
    // So would a kick of the kernel APIC (ffi/apic.rs: the vCPU published its CPU before
    // this check, the kicker sets the flag before it reads the CPU).
    if kernel::current!().signal_pending() || apic.is_some_and(|hw| hw.kicked()) {
        // SAFETY: balances the disable just above.
        unsafe { glue::yakvm_local_irq_enable() };
        return Ok(false);
    }
    // SAFETY: interrupts are off and the task's FPU state is the guest's (`fpu` entered):
    // after a context switch since `enter`, this loads the guest's registers.
    unsafe { glue::yakvm_fpu_load_current() };
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
    let leaked = host_state_returned(vmcb, vmcb_pa);
    if leaked {
        // The host's kernel addresses must not reach userspace (GET_REGS, GET_VMCB). QEMU
        // also leaves the host's state there when VMRUN fails its checks (VMEXIT_INVALID).
        // SAFETY: `SaveArea` is plain data, valid all-zero (ffi/plain.rs); `vmcb` is ours.
        unsafe { core::ptr::write_bytes(core::ptr::addr_of_mut!(vmcb.save), 0, 1) };
    }

    // SAFETY: balances `yakvm_local_irq_disable` above; a pending host interrupt that made
    // the guest exit is taken here.
    unsafe { glue::yakvm_local_irq_enable() };
    if leaked && vmcb.control.exit_code != vmcb::exit_code::INVALID {
        pr_err!("VMRUN came back with the host's own state as the guest's (its CR3 and RAX): \
                 QEMU 7.2's multi-threaded TCG does this when SVM runs on its CPU 0 (docs/qemu-tcg.md); \
                 the vCPU is stopped\n");
        return Err(EIO);
    }
    Ok(true)
}

/// Whether the guest state after #VMEXIT is the host's own, as it was at VMRUN: the host's
/// CR3 and, in RAX, the VMCB's address (VMRUN's operand). No hardware does this; QEMU
/// 7.2's multi-threaded TCG does when another CPU's thread rewrites CPU 0's nested-paging
/// flag between a #VMEXIT and the host's next instruction (docs/qemu-tcg.md). A guest
/// cannot know both values to fake it; if it did, only its own vCPU would stop.
fn host_state_returned(vmcb: &Vmcb, vmcb_pa: u64) -> bool {
    vmcb.save.rax == vmcb_pa && vmcb.save.cr3 == super::cpu::read_cr3()
}

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
//   half switched. IF is set (under GIF = 0, so nothing arrives yet) so that, with
//   V_INTR_MASKING, a physical interrupt during the guest causes an INTR #VMEXIT; the host
//   takes it once the caller re-enables interrupts. IF is set right after CLGI, not just
//   before VMRUN: an STI's one-instruction shadow would cover VMRUN itself, and QEMU's SVM
//   carries it into the guest (its first instruction runs in a shadow the guest never set,
//   and a #VMEXIT there reports one); AMD CPUs do the same when an event's delivery during
//   VMRUN exits (KVM's svm_vcpu_enter_exit says so and avoids STI+VMRUN too). IF is
//   cleared again before STGI.
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
    "sti",                      // no effect while GIF is clear; see above
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
    "vmrun rax",                // #VMEXIT: rsp and rax are the host's again, GIF clear
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
    "cli",
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
