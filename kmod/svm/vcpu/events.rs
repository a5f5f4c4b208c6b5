// SPDX-License-Identifier: GPL-2.0
//! Events into the guest (AMD APM vol. 2, 15.20 and 15.21): the external interrupt that
//! userspace queued with `INTERRUPT`, the NMI it queued with `NMI`, the event an exit cut
//! short, and the interrupt window. The same design as KVM's `svm.c` with a userspace
//! interrupt controller:
//!
//! - an interrupt is delivered through EVENTINJ, only when the guest can take it
//!   (RFLAGS.IF set, no STI/MOV SS shadow, no other event on its way);
//! - when it cannot, the VINTR intercept with a dummy virtual interrupt (V_IRQ) makes
//!   the CPU exit at the first instruction boundary where it could: the window;
//! - an exit that happens while the CPU delivers an event (EXITINTINFO) re-delivers it on
//!   the next entry, so nothing is lost or delivered twice;
//! - an NMI is delivered through EVENTINJ too, before an external interrupt, whatever
//!   RFLAGS.IF says, but not while NMIs are blocked: from one NMI's delivery until the
//!   guest's next IRET has executed ([`NmiBlocking`]).

use super::VcpuState;
use crate::svm::vmcb::{self, event, intercept1};
use crate::svm::x86::{rflags, vector};

/// Whether NMIs are blocked: from an NMI's delivery until the first IRET after it has
/// executed, as on the CPU (APM 8.2.1: an IRET ends the blocking, whichever handler's).
///
/// The IRET intercept is taken before the IRET executes (RIP at it): that exit cannot end
/// the blocking, or an NMI injected at the next entry would be delivered before the IRET
/// has run, nested in the handler it was meant to follow. So the intercept only notes the
/// IRET's address and is switched off, the guest re-enters and executes it, and the first
/// exit at another RIP shows that it has run. With an NMI queued, that entry single-steps
/// the IRET (as KVM does; debug.rs sets TF and intercepts #DB for it), so the exit comes
/// right after it and the NMI is delivered before the next instruction. While the
/// debugger steps or the guest has its own TF set, the queued NMI waits for any later
/// exit instead (at the latest the host's next timer interrupt): late, never early.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum NmiBlocking {
    /// NMIs can be delivered.
    #[default]
    No,
    /// An NMI was delivered (or is being): blocked, the IRET intercept is on.
    InHandler,
    /// The IRET intercept came for the IRET at this address; still blocked until an exit
    /// shows RIP elsewhere.
    IretAt(u64),
}

/// The NMI state of a vCPU.
#[derive(Default)]
pub(super) struct Nmi {
    /// Userspace queued one (`NMI`), not delivered yet.
    pub(super) queued: bool,
    pub(super) blocking: NmiBlocking,
}

/// Whether an external interrupt injected now would be taken before the guest's next
/// instruction.
pub(super) fn interrupt_allowed(v: &VcpuState) -> bool {
    let c = &v.vmcb.control;
    v.vmcb.save.rflags & rflags::IF != 0
        && c.interrupt_shadow & vmcb::INTERRUPT_SHADOW == 0
        && c.event_inj & event::VALID == 0
}

/// Whether an NMI injected now would be delivered before the guest's next instruction:
/// not blocked by an earlier one, no STI/MOV SS shadow (as KVM: the CPU may hold NMIs
/// there), no other event on its way.
fn nmi_allowed(v: &VcpuState) -> bool {
    let c = &v.vmcb.control;
    v.nmi.blocking == NmiBlocking::No
        && c.interrupt_shadow & vmcb::INTERRUPT_SHADOW == 0
        && c.event_inj & event::VALID == 0
}

/// A queued NMI can be delivered at the next entry (HLT then resumes the guest).
pub(super) fn nmi_deliverable(v: &VcpuState) -> bool {
    v.nmi.queued && nmi_allowed(v) && !v.debugger.blocks_irq()
}

/// What the module reports in the run page on every return from `RUN`.
pub(super) fn ready_for_injection(v: &VcpuState) -> bool {
    v.queued.is_none() && interrupt_allowed(v) && !v.debugger.blocks_irq()
}

/// Before each VMRUN. Delivers the queued NMI if NMIs are not blocked, else the queued
/// interrupt if the guest can take it; an interrupt it cannot take yet opens the window to
/// deliver it as soon as it can. Returns `true` when userspace asked for
/// the window, nothing is queued, and the window is open now: `RUN` returns
/// `IRQ_WINDOW_OPEN` instead of entering the guest.
pub(super) fn prepare_entry(v: &mut VcpuState, window_requested: bool) -> bool {
    close_window(v);
    // A debugger steps with interrupts (and NMIs) held back: no delivery, no window.
    if v.debugger.blocks_irq() {
        rearm_iret(v);
        return false;
    }
    if nmi_deliverable(v) {
        v.vmcb.control.event_inj = event::VALID | event::TYPE_NMI | u64::from(vector::NMI);
        v.nmi.queued = false;
        v.nmi.blocking = NmiBlocking::InHandler;
        v.vmcb.control.intercept_misc1 |= intercept1::IRET;
        v.stats.nmi += 1;
    }
    let report_window = deliver_interrupt(v, window_requested);
    rearm_iret(v);
    // A queued NMI waits for the IRET at RIP: step over it, so the NMI comes right after
    // it, not at whatever exit comes next (a host interrupt, an exit in the middle of the
    // code the handler returned to).
    if let NmiBlocking::IretAt(rip) = v.nmi.blocking {
        if v.nmi.queued && rip == v.vmcb.save.rip && v.vmcb.control.event_inj & event::VALID == 0 {
            v.debugger.step_over_iret();
        }
    }
    report_window
}

/// The external-interrupt half of `prepare_entry`.
fn deliver_interrupt(v: &mut VcpuState, window_requested: bool) -> bool {
    match v.queued {
        Some(vector) if interrupt_allowed(v) => {
            v.vmcb.control.event_inj = event::VALID | event::TYPE_INTR | u64::from(vector);
            v.queued = None;
            v.stats.injected += 1;
            // Userspace may have more: its window opens once the guest re-enables them.
            if window_requested {
                open_window(v);
            }
            false
        }
        Some(_) => {
            open_window(v);
            false
        }
        None if window_requested => {
            if interrupt_allowed(v) {
                return true;
            }
            open_window(v);
            false
        }
        None => false,
    }
}

/// Whether this entry must exit right after its injection (the caller makes a host
/// interrupt pending at VMRUN: the CPU delivers the event, then takes the INTR intercept
/// before the guest's first instruction): while an external interrupt is in EVENTINJ.
///
/// QEMU 7.2's software SVM (the image's CPUs) delivers an injected external interrupt
/// inside VMRUN (`helper_vmrun`: `cs->exception_index = vector`, then
/// `do_interrupt_x86_hardirq`) and leaves that vector as the CPU's pending exception:
/// nothing clears it until the guest's next #VMEXIT overwrites it. If QEMU's execution
/// loop stops before that exit for anything but an interrupt it takes (another QEMU CPU
/// kicks this one: a stop-the-world atomic, a translation-cache flush), it delivers the
/// vector again, through the guest's IDT, at the first instruction of the handler the
/// first delivery entered, interrupts disabled. A guest whose interrupt gate switches to
/// an IST stack then overwrites its own frame with one that returns to that first
/// instruction: the handler runs for ever with interrupts off (seen with
/// guests/apic_hostile.bin: the BSP's EOI at the same RIP and RSP, 100000 times, nothing
/// more delivered). An exit right after the injection replaces the stale exception with
/// the #VMEXIT before any guest instruction runs; it costs one more exit per interrupt.
pub(super) fn exit_after_injection(v: &VcpuState) -> bool {
    let inj = v.vmcb.control.event_inj;
    inj & event::VALID != 0 && inj & event::TYPE_MASK == event::TYPE_INTR
}

/// An event is delivered at this entry while the guest stands at the IRET that is to end
/// the NMI blocking: that event's handler runs first, and the first IRET to execute is
/// its own (which on the CPU ends the blocking too). The intercept goes back on to catch
/// it; otherwise an exit inside that handler (RIP elsewhere) would end the blocking
/// before any IRET has run.
fn rearm_iret(v: &mut VcpuState) {
    if let NmiBlocking::IretAt(rip) = v.nmi.blocking {
        if rip == v.vmcb.save.rip && v.vmcb.control.event_inj & event::VALID != 0 {
            v.nmi.blocking = NmiBlocking::InHandler;
            v.vmcb.control.intercept_misc1 |= intercept1::IRET;
        }
    }
}

/// The IRET intercept (RIP at the IRET, which has not executed): see [`NmiBlocking`].
pub(super) fn iret_intercepted(v: &mut VcpuState) {
    v.vmcb.control.intercept_misc1 &= !intercept1::IRET;
    if v.nmi.blocking == NmiBlocking::InHandler {
        v.nmi.blocking = NmiBlocking::IretAt(v.vmcb.save.rip);
    }
}

/// After each VMRUN: the injected event has been delivered, unless the exit interrupted
/// its delivery (or that of an event of the guest's own, such as a page fault); then
/// EXITINTINFO describes it and it is delivered again on the next entry.
pub(super) fn after_exit(v: &mut VcpuState) {
    // A VMRUN that failed its checks delivered nothing: the event stays for the next one.
    if v.vmcb.control.exit_code == vmcb::exit_code::INVALID {
        return;
    }
    // The guest left the IRET it stood at: it has executed, NMIs are unblocked.
    if let NmiBlocking::IretAt(rip) = v.nmi.blocking {
        if rip != v.vmcb.save.rip {
            v.nmi.blocking = NmiBlocking::No;
        }
    }
    let info = v.vmcb.control.exit_int_info;
    v.vmcb.control.event_inj = 0;
    if info & event::VALID == 0 {
        return;
    }
    // INT3 (#BP) and INTO (#OF) are raised by instructions, like INT n.
    let soft = match info & event::TYPE_MASK {
        event::TYPE_SOFT_INT => true,
        event::TYPE_EXCEPTION => matches!((info & event::VECTOR_MASK) as u8, vector::BP | vector::OF),
        _ => false,
    };
    // INT n, INT3 and INTO: RIP is still at the instruction (no next-RIP on QEMU), which
    // raises the event again when it runs again. Everything else is re-injected as it
    // was, error code included (same format, APM 15.7.2).
    if !soft {
        v.vmcb.control.event_inj = info;
        v.stats.reinjected += 1;
    } else if info & event::TYPE_MASK == event::TYPE_SOFT_INT {
        // The INT n had won its instruction boundary: nothing the hypervisor injects may
        // come before it runs again (its delivery is one step). kvm-unit-tests' eventinj
        // (`sti; int $33` with vector 32 pending, the INT in the STI shadow) once saw 32
        // first, in one run of many: our reading is that an exit came in the middle of
        // the delivery and the re-entry, the shadow gone, injected 32 before the INT ran
        // again. The shadow holds injection back for that one instruction; an interrupt
        // that arrived meanwhile is taken after it, as if it came a moment later.
        v.vmcb.control.interrupt_shadow |= vmcb::INTERRUPT_SHADOW;
    }
}

/// Makes the CPU exit (VINTR) as soon as the guest can take an interrupt.
fn open_window(v: &mut VcpuState) {
    let c = &mut v.vmcb.control;
    c.v_intr |= vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR;
    c.intercept_misc1 |= intercept1::VINTR;
}

/// Withdraws the dummy V_IRQ (it is never delivered) and the VINTR intercept.
fn close_window(v: &mut VcpuState) {
    let c = &mut v.vmcb.control;
    c.v_intr &= !(vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR);
    c.intercept_misc1 &= !intercept1::VINTR;
}

/// The VINTR exit: the window is open; the next entry injects what is queued or
/// reports the window to userspace.
pub(super) fn window_opened(v: &mut VcpuState) {
    close_window(v);
    v.stats.irq_window += 1;
}

/// An instruction the module or userspace emulated is done: an STI or MOV SS shadow
/// covered only that instruction, so it ends (`sti; hlt` then wakes on the next
/// interrupt, as on hardware).
pub(super) fn instruction_done(v: &mut VcpuState) {
    v.vmcb.control.interrupt_shadow &= !vmcb::INTERRUPT_SHADOW;
}
