// SPDX-License-Identifier: GPL-2.0
//! A debugger in userspace (`SET_GUEST_DEBUG`, as KVM's `KVM_SET_GUEST_DEBUG`):
//! single-stepping and software breakpoints, reported as `exit::DEBUG`. No hardware
//! breakpoints: the hardware's DR0-DR3 are never given to a guest (dr.rs).
//!
//! Single-stepping sets RFLAGS.TF for one entry with #DB intercepted: the CPU exits after
//! one instruction (AMD APM vol. 2, 13.1.4). The guest never sees that TF:
//! - it is set just before VMRUN and cleared just after, so `GET_REGS` and every exit
//!   handler see the guest's own RFLAGS;
//! - PUSHF is intercepted; it then runs once with TF, and the flags it pushed lose TF at
//!   its #DB;
//! - no event is delivered with it: the guest's exceptions and INT n are intercepted and
//!   injected again (#UD is intercepted and injected again always: `ALWAYS_EXCEPTIONS`), and an entry that delivers an event (EVENTINJ) runs without TF and
//!   exits before the handler's first instruction (a self-IPI pending at VMRUN,
//!   `world::run`). The delivery is that step.
//!
//! An instruction the module or userspace emulates (port I/O, MMIO, CPUID, ...) is a step
//! too: the next `RUN` reports it without entering the guest (KVM's
//! `kvm_vcpu_do_singlestep`). External interrupts wait while stepping with `BLOCK_IRQ`.
//! A POPF or IRET that sets the guest's own TF while it is being stepped loses it, and
//! the guest's own single-step trap is reported, not delivered (as in KVM).

use super::{to_user_hw, Next, VcpuState};
use crate::abi::{self, guest_debug as ctl};
use crate::svm::vm::Vm;
use crate::svm::vmcb::{event, exit_code, intercept1};
use crate::svm::x86::dr::{DR6_BS, DR6_RESET};
use crate::svm::x86::rflags::{RF as RFLAGS_RF, TF as RFLAGS_TF};
use crate::svm::x86::{seg, vector};
use kernel::prelude::*;

/// Exceptions intercepted while stepping, to be delivered without the module's TF: all
/// but #DB (the step itself), NMI, #BP and #OF (traps of INT3 and INTO, handled as
/// INT n) and #MC (the host's).
const STEP_EXCEPTIONS: u32 = !((1 << vector::DB) | (1 << vector::NMI) | (1 << vector::BP) | (1 << vector::OF) | (1 << vector::MC));
/// Exceptions that push an error code.
const ERROR_CODE_VECTORS: u32 = (1 << 8) | (0x1f << 10) | (1 << 17) | (1 << 21) | (3 << 29);
/// Exceptions of the fault class: the RFLAGS image they push has RF set (APM 8.2, 13.1.6).
/// All but #DB, #BP and #OF (traps), NMI (an interrupt), #DF and #MC (aborts).
const FAULT_VECTORS: u32 = !((1 << vector::DB) | (1 << vector::NMI) | (1 << vector::BP) | (1 << vector::OF) | (1 << vector::DF) | (1 << vector::MC));
/// Exceptions intercepted on every entry and injected again with RF: #UD. QEMU's software
/// CPU delivers a `ud2`'s #UD itself without RF in the pushed RFLAGS; injected, it has it
/// (as on KVM, which intercepts #UD). kvm-unit-tests' idt_test checks it.
const ALWAYS_EXCEPTIONS: u32 = 1 << vector::UD;

/// A vCPU's debugger state.
#[derive(Default)]
pub(super) struct Debugger {
    /// `guest_debug` bits, `INJECT_BP` excepted (it acts once).
    control: u32,
    /// TF is set by the module for the entry in progress.
    tf_ours: bool,
    /// A PUSHF exited; the next entry lets it run with TF.
    pushf: bool,
    /// That entry runs: the #DB corrects what it pushed.
    pushf_running: bool,
    /// The next entry lets the CPU deliver exceptions itself: one came while an event was
    /// delivered, and only the CPU combines the two as it must (#DF, shutdown).
    native: bool,
    /// The event the entry in progress delivers (EVENTINJ), 0 if none.
    delivering: u64,
    /// The step is over (an instruction was emulated, an event delivered): the next
    /// entry is replaced by a DEBUG exit.
    step_done: bool,
    /// The event that step delivered, for `DebugExit::event`.
    event: u64,
    /// The guest's DR6 before the entry in progress: the debugger's step must not change
    /// it (the CPU sets BS in the VMCB's DR6, which is the guest's).
    guest_dr6: u64,
    /// The next entry steps over the IRET that ends an NMI's blocking (events.rs), so a
    /// queued NMI is delivered right after it; `nmi_stepping`: the entry in progress does.
    nmi_step: bool,
    nmi_stepping: bool,
}

impl Debugger {
    fn on(&self, bits: u32) -> bool {
        self.control & (ctl::ENABLE | bits) == ctl::ENABLE | bits
    }

    pub(super) fn stepping(&self) -> bool {
        self.on(ctl::SINGLESTEP)
    }

    /// External interrupts wait (single-stepping with `BLOCK_IRQ`).
    pub(super) fn blocks_irq(&self) -> bool {
        self.on(ctl::SINGLESTEP | ctl::BLOCK_IRQ)
    }

    /// Makes the next entry execute one instruction (the IRET at RIP) and exit, as KVM
    /// does to open the NMI window: not while the debugger steps (it exits after each
    /// instruction anyway) nor when the guest steps itself (its TF: the NMI then waits for
    /// the next exit).
    pub(super) fn step_over_iret(&mut self) {
        self.nmi_step = true;
    }
}

/// `SET_GUEST_DEBUG`.
pub(super) fn set(v: &mut VcpuState, dbg: &abi::GuestDebug) -> Result {
    if dbg.control & !ctl::ALL != 0 {
        return Err(EINVAL);
    }
    // Registers the debugger changed in the run page are loaded now, as RUN would: a RIP
    // it moved is its own doing, not an emulated instruction (no step is reported for it).
    super::sync_in(v)?;
    if dbg.control & (ctl::ENABLE | ctl::INJECT_BP) == ctl::ENABLE | ctl::INJECT_BP {
        if v.vmcb.control.event_inj & event::VALID != 0 {
            return Err(EBUSY);
        }
        // The INT3 at RIP was the guest's own: #BP, returning past it, as the CPU does.
        inject_int(v, vector::BP, 1, event::TYPE_EXCEPTION);
    }
    let d = &mut v.debugger;
    d.control = dbg.control & !ctl::INJECT_BP;
    // A new command from the debugger: what userspace did meanwhile is not a step.
    d.step_done = false;
    Ok(())
}

/// An instruction was emulated (RIP moved past it): while stepping, that was the step.
/// A guest that single-steps itself (its own TF) gets the #DB trap the CPU would have
/// raised after the instruction, DR6.BS set (KVM's `kvm_vcpu_do_singlestep`).
pub(super) fn instruction_done(v: &mut VcpuState) {
    if v.debugger.stepping() {
        v.debugger.step_done = true;
        v.debugger.event = 0;
    } else if v.vmcb.save.rflags & RFLAGS_TF != 0 && v.vmcb.control.event_inj & event::VALID == 0 {
        // B0-B3 describe breakpoints, none of which matched.
        v.vmcb.save.dr6 = (v.vmcb.save.dr6 & !0xf) | DR6_BS;
        v.vmcb.control.event_inj = event::VALID | event::TYPE_EXCEPTION | u64::from(vector::DB);
    }
}

/// Before each entry: a finished step is reported instead (`true`: the run page has it).
pub(super) fn step_reported(v: &mut VcpuState) -> bool {
    if !core::mem::take(&mut v.debugger.step_done) {
        return false;
    }
    let event = core::mem::take(&mut v.debugger.event);
    report(v, vector::DB, DR6_RESET | DR6_BS, event);
    true
}

/// Just before VMRUN: the intercepts and TF of this entry. Returns whether the guest
/// must exit at its first instruction boundary (it is delivering an event while stepping).
pub(super) fn before_entry(v: &mut VcpuState) -> bool {
    let guest_tf = v.vmcb.save.rflags & RFLAGS_TF != 0;
    let d = &mut v.debugger;
    let c = &mut v.vmcb.control;
    let stepping = d.stepping();
    let delivering = stepping && c.event_inj & event::VALID != 0;
    let native = core::mem::take(&mut d.native);
    let nmi_step = core::mem::take(&mut d.nmi_step)
        && !stepping
        && c.event_inj & event::VALID == 0
        && !guest_tf;
    d.nmi_stepping = nmi_step;
    // An entry that lets the CPU deliver exceptions itself intercepts none of the guest's.
    let mut exceptions = if native { 0 } else { ALWAYS_EXCEPTIONS };
    if d.on(ctl::SW_BP) {
        exceptions |= 1 << vector::BP;
    }
    if stepping || nmi_step {
        exceptions |= 1 << vector::DB;
        if !native {
            exceptions |= STEP_EXCEPTIONS;
        }
    }
    c.intercept_exceptions = exceptions;
    set_bit(&mut c.intercept_misc1, intercept1::INTN, stepping || d.on(ctl::SW_BP));
    set_bit(&mut c.intercept_misc1, intercept1::PUSHF, stepping && !d.pushf);
    d.delivering = if delivering { c.event_inj } else { 0 };
    let s = &mut v.vmcb.save;
    d.tf_ours = ((stepping && !delivering) || nmi_step) && s.rflags & RFLAGS_TF == 0;
    d.guest_dr6 = s.dr6;
    d.pushf_running = core::mem::take(&mut d.pushf) && d.tf_ours;
    if d.tf_ours {
        s.rflags |= RFLAGS_TF;
    }
    delivering
}

fn set_bit(word: &mut u32, bit: u32, on: bool) {
    if on {
        *word |= bit;
    } else {
        *word &= !bit;
    }
}

/// Just after VMRUN (or when it did not enter): the guest's RFLAGS again, and whether
/// the event of a delivering entry reached its handler (that step is then over).
pub(super) fn after_exit(v: &mut VcpuState, entered: bool) {
    let d = &mut v.debugger;
    if core::mem::take(&mut d.tf_ours) {
        v.vmcb.save.rflags &= !RFLAGS_TF;
    }
    let c = &v.vmcb.control;
    let delivering = core::mem::take(&mut d.delivering);
    if entered && delivering != 0 && c.exit_code != exit_code::INVALID && c.exit_int_info & event::VALID == 0 {
        d.step_done = true;
        d.event = delivering;
    }
}

/// The #DB intercept (only while stepping, or stepping over an IRET): one instruction
/// ran.
pub(super) fn handle_db(vm: &Vm, v: &mut VcpuState) -> Next {
    let dr6 = core::mem::replace(&mut v.vmcb.save.dr6, v.debugger.guest_dr6);
    if core::mem::take(&mut v.debugger.nmi_stepping) {
        // The IRET ran: events::after_exit saw RIP move and ended the NMI blocking.
        return Next::Resume;
    }
    if core::mem::take(&mut v.debugger.pushf_running) {
        clear_pushed_tf(vm, v);
    }
    report(v, vector::DB, dr6, 0)
}

/// The PUSHF intercept (only while stepping): run it once with TF, then correct it.
pub(super) fn handle_pushf(v: &mut VcpuState) -> Next {
    v.debugger.pushf = true;
    Next::Resume
}

/// Clears the module's TF in the flags a PUSHF just pushed at SS:RSP (bit 8 is in the
/// first two bytes whatever the operand size).
fn clear_pushed_tf(vm: &Vm, v: &mut VcpuState) {
    let s = &v.vmcb.save;
    let at = if s.long_mode() {
        s.rsp
    } else {
        let mask = if s.ss.attrib & seg::DB != 0 { 0xffff_ffff } else { 0xffff };
        s.ss.base.wrapping_add(s.rsp & mask)
    };
    let map = s.paging();
    let mut word = [0u8; 2];
    if vm.read_virt(&map, at, &mut word).is_ok() {
        let flags = u16::from_le_bytes(word) & !(RFLAGS_TF as u16);
        // The stack was just written by the guest: it is RAM, so this cannot fail.
        let _ = vm.write_virt(&map, at, &flags.to_le_bytes());
    }
}

/// An exception intercepted (#UD always, the others while stepping), RIP at the faulting
/// instruction: injected again, so it is delivered without the module's TF and the step
/// ends at its handler, and a fault pushes RFLAGS with RF set as the CPU must.
pub(super) fn handle_exception(v: &mut VcpuState, vector: u8) -> Next {
    if vector == vector::BP {
        // The #BP intercept of a CPU that reports INT3 as an exception (QEMU reports it
        // as INT n); RIP is at the INT3.
        return int3(v, 1);
    }
    let c = &v.vmcb.control;
    if c.exit_int_info & event::VALID != 0 {
        // It came while an event was delivered (re-injected by events::after_exit): let
        // the CPU deliver both itself, once.
        v.debugger.native = true;
        return Next::Resume;
    }
    let error = if ERROR_CODE_VECTORS & (1u32 << vector) != 0 {
        event::ERROR_VALID | (c.exit_info_1 << 32)
    } else {
        0
    };
    if vector == vector::PF {
        // The intercept comes before the CPU writes CR2.
        v.vmcb.save.cr2 = c.exit_info_2;
    }
    if FAULT_VECTORS & (1u32 << vector) != 0 {
        // The CPU clears RF again when it delivers the event (the handler runs without it).
        v.vmcb.save.rflags |= RFLAGS_RF;
    }
    v.vmcb.control.event_inj = event::VALID | event::TYPE_EXCEPTION | u64::from(vector) | error;
    Next::Resume
}

/// INT n, INT3 or INTO (intercepted while stepping or with software breakpoints), RIP at
/// it: the debugger's INT3 is reported; the rest is delivered by injection, returning past
/// the instruction (QEMU gives neither the vector nor the length: both are decoded).
pub(super) fn handle_int(vm: &Vm, v: &mut VcpuState) -> Next {
    let s = &v.vmcb.save;
    let mut bytes = [0u8; 15];
    let at = s.cs.base.wrapping_add(s.rip);
    let n = (1..=bytes.len()).rev().find(|&n| vm.read_virt(&s.paging(), at, &mut bytes[..n]).is_ok()).unwrap_or(0);
    match decode_int(&bytes[..n], s.long_mode()) {
        Some((vector::BP, len, event::TYPE_EXCEPTION)) => int3(v, len),
        Some((vector, len, kind)) => {
            inject_int(v, vector, len, kind);
            Next::Resume
        }
        None => {
            v.stats.other += 1;
            to_user_hw(v, abi::exit::UNKNOWN)
        }
    }
}

/// INT3: the debugger's breakpoint, or the guest's own #BP.
fn int3(v: &mut VcpuState, len: u64) -> Next {
    if v.debugger.on(ctl::SW_BP) {
        return report(v, vector::BP, v.vmcb.save.dr6, 0);
    }
    inject_int(v, vector::BP, len, event::TYPE_EXCEPTION);
    Next::Resume
}

/// Delivers the event of an `len`-byte INT instruction at RIP, returning past it.
fn inject_int(v: &mut VcpuState, vector: u8, len: u64, kind: u64) {
    v.vmcb.save.rip = v.vmcb.save.rip.wrapping_add(len);
    v.vmcb.control.event_inj = event::VALID | kind | u64::from(vector);
}

/// Decodes INT3 (CC), INT n (CD ib) or INTO (CE) after any prefixes: (vector, length,
/// EVENTINJ type).
fn decode_int(bytes: &[u8], long: bool) -> Option<(u8, u64, u64)> {
    let i = bytes.iter().position(|&b| {
        !matches!(b, 0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65)
            && !(long && (0x40..=0x4f).contains(&b))
    })?;
    match bytes[i..] {
        [0xcc, ..] => Some((vector::BP, i as u64 + 1, event::TYPE_EXCEPTION)),
        [0xce, ..] => Some((vector::OF, i as u64 + 1, event::TYPE_EXCEPTION)),
        [0xcd, n, ..] => Some((n, i as u64 + 2, event::TYPE_SOFT_INT)),
        _ => None,
    }
}

/// Fills in the DEBUG exit (KVM's `kvm_debug_exit_arch`).
fn report(v: &mut VcpuState, exception: u8, dr6: u64, event: u64) -> Next {
    let s = &v.vmcb.save;
    v.run.debug = abi::DebugExit {
        exception: exception.into(),
        _pad: 0,
        pc: s.cs.base.wrapping_add(s.rip),
        dr6,
        dr7: s.dr7,
        event,
    };
    v.run.exit_reason = abi::exit::DEBUG;
    Next::ToUser
}
