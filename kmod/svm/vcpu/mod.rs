// SPDX-License-Identifier: GPL-2.0
//! A virtual CPU: its VMCB, the registers VMRUN does not switch, its FPU state, its run
//! page, and the exit handlers. Each handler answers one question: resume the guest, or
//! return to userspace with this exit.

mod apic;
mod cr;
mod debug;
mod events;
mod ioio;
pub(super) mod mmio;

use super::dr::{self, DebugRegs};
use super::vm::Vm;
use super::vmcb::{self, event, exit_code, intercept1 as i1, intercept2 as i2, Vmcb};
use super::x86::{self, efer, rflags, vector};
use super::apic::KApic;
use super::{cpuid, msr, Asid, Asids};
use ioio::{complete_ins, handle_ioio, merge_in, StringIo};
use crate::abi;
use crate::ffi::cpu::{self, NoPreempt};
use crate::ffi::mem::{PageRef, Pages};
use crate::ffi::plain::read_once;
use crate::ffi::world::{self, GuestFpu, GuestGprs};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::new_mutex;

/// What an exit handler decided.
enum Next {
    /// Re-enter the guest.
    Resume,
    /// HLT with a kernel APIC: sleep in `RUN` until there is something to deliver.
    Halt,
    /// Return from RUN; the exit is described in the run page.
    ToUser,
}

/// Work userspace completes before the next RUN.
#[derive(Clone, Copy)]
enum Pending {
    /// A port IN: the data userspace wrote into the run page goes into RAX.
    In { size: u8 },
    /// A hypercall: its return value goes into RAX.
    Hypercall,
    /// INS: the data userspace wrote goes to ES:RDI.
    Ins(StringIo),
}

struct VcpuState {
    vmcb: Pages<Vmcb>,
    gprs: GuestGprs,
    fpu: GuestFpu,
    run: Pages<abi::Run>,
    /// Held for the vCPU's life (in the VMCB); freed on drop.
    _asid: Asid,
    /// CPU of the last VMRUN; another CPU's TLB may hold stale entries for our ASID.
    last_cpu: Option<usize>,
    pending: Option<Pending>,
    /// Index of this vCPU in its VM (its APIC id in CPUID).
    id: u32,
    /// It has a local APIC (`ENABLE_LAPIC`): CPUID says so.
    lapic: bool,
    /// Its local APIC is the module's (`ENABLE_KERNEL_APIC`), and what the run loop keeps
    /// of it (vcpu/apic.rs).
    kapic: Option<Arc<KApic>>,
    apic: apic::ApicState,
    /// The guest's debug registers (the hardware ones are never the guest's).
    debug: DebugRegs,
    stats: abi::ExitStats,
    /// The MSRs the guest has that are not in the VMCB, and its MSR accesses by index.
    msrs: msr::GuestMsrs,
    msr_stats: abi::MsrStats,
    /// The external interrupt userspace queued (`INTERRUPT`), not delivered yet.
    queued: Option<u8>,
    /// The NMI userspace queued (`NMI`) and whether NMIs are blocked.
    nmi: events::Nmi,
    /// Ports whose OUTs go to the run page's list instead of exiting (`SET_COALESCED_IO`).
    coalesced: abi::CoalescedIo,
    /// The guest shut down; its state is undefined and it may not run again.
    dead: bool,
    /// A debugger in userspace (`SET_GUEST_DEBUG`).
    debugger: debug::Debugger,
    /// What the guest may load into its control registers (its CPUID's features).
    cr_limits: cr::CrLimits,
    /// The guest's TLB must be flushed at the next VMRUN (an emulated CR write).
    flush_tlb: bool,
    /// The CPU has TSC_AUX: the guest's is loaded around each VMRUN, for RDTSCP (not
    /// intercepted: QEMU's software SVM keeps no TSC_AUX of the guest's).
    tsc_aux: Option<cpu::TscAux>,
}

#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    /// The run page, for `mmap` (which must not take `state`: it runs under mmap_lock).
    run_page: PageRef,
    #[pin]
    state: Mutex<VcpuState>,
}

impl Vcpu {
    pub(crate) fn new(vm: Arc<Vm>) -> Result<Arc<Self>> {
        let slot = vm.reserve_vcpu()?;
        let asid = Asids::alloc(&vm.shared)?;
        let mut vmcb = Pages::<Vmcb>::new()?;
        init_vmcb(&mut vmcb, asid.value(), vm.shared.maps.addresses());
        let run = Pages::<abi::Run>::new()?;
        let run_page = run.page_ref().ok_or(EINVAL)?;
        let kapic = if slot.kernel_apic {
            let kapic = KApic::new(slot.id)?;
            vm.add_apic(kapic.clone())?;
            Some(kapic)
        } else {
            None
        };
        let state = VcpuState {
            vmcb,
            gprs: GuestGprs::default(),
            fpu: GuestFpu::new()?,
            run,
            _asid: asid,
            last_cpu: None,
            pending: None,
            id: slot.id,
            lapic: slot.lapic,
            kapic,
            apic: apic::ApicState::default(),
            debug: DebugRegs::default(),
            stats: abi::ExitStats::default(),
            msrs: if slot.lapic { msr::GuestMsrs::with_apic(slot.id == 0) } else { msr::GuestMsrs::default() },
            msr_stats: abi::MsrStats::default(),
            queued: None,
            nmi: events::Nmi::default(),
            coalesced: abi::CoalescedIo::default(),
            dead: false,
            debugger: debug::Debugger::default(),
            cr_limits: cr::CrLimits::new(|leaf| cpuid::guest_cpuid(leaf, 0, slot.id, slot.lapic)),
            flush_tlb: false,
            tsc_aux: cpu::TscAux::probe(),
        };
        Arc::pin_init(pin_init!(Self { vm, run_page, state <- new_mutex!(state, "yakvm_vcpu") }), GFP_KERNEL)
    }

    /// Maps the run page into userspace.
    pub(crate) fn map_run(&self, vma: &mut crate::ffi::chardev::Vma) -> Result {
        if vma.len() != abi::RUN_MMAP_SIZE || vma.pgoff() != 0 {
            return Err(EINVAL);
        }
        vma.map_page(&self.run_page)
    }

    /// `RUN`: runs the guest until an exit needs userspace, a signal arrives (`EINTR`)
    /// or the guest cannot run.
    ///
    /// Making a running vCPU return (a "kick" from another thread): send its thread a
    /// signal that has a handler; RUN returns `EINTR` promptly: the check is repeated
    /// with interrupts off just before VMRUN, and a signal sent while the guest runs
    /// makes it exit (the host interrupt that delivers the signal). A kick that arrives just before RUN, while the thread is
    /// still in userspace, is not lost if the handler sets `Run::immediate_exit`: RUN
    /// then returns `EINTR` at once.
    pub(crate) fn run(&self) -> Result {
        let mut v = self.state.lock();
        if v.dead {
            return Err(EIO);
        }
        if v.vmcb.control.n_cr3 == 0 {
            // The VM's tables, or with a kernel APIC the vCPU's own view of them.
            let root = self.vm.start();
            apic::start(&self.vm, &mut v)?;
            if v.vmcb.control.n_cr3 == 0 {
                v.vmcb.control.n_cr3 = root;
            }
        }
        // Registers userspace changed in the run page come first (they may end `pending`,
        // as SET_REGS does).
        sync_in(&mut v)?;
        match v.pending.take() {
            Some(Pending::In { size }) => {
                let data = v.run.data;
                v.vmcb.save.rax = merge_in(v.vmcb.save.rax, &data[..size as usize]);
            }
            Some(Pending::Hypercall) => v.vmcb.save.rax = v.run.hypercall.ret,
            Some(Pending::Ins(io)) => {
                let data = v.run.data;
                if complete_ins(&self.vm, &mut v, io, &data).is_err() {
                    // The destination is not guest RAM: as the CPU would for a bad address.
                    inject(&mut v, vector::GP, Some(0));
                }
            }
            None => {}
        }
        // Userspace's requests, read once: it may write the page while we run.
        let window_requested = read_once(&v.run.request_interrupt_window) != 0;
        if read_once(&v.run.immediate_exit) != 0 {
            report_events(&mut v);
            return Err(EINTR);
        }
        // The guest's FPU state is the task's for the rest of RUN: exits handled here
        // neither save nor restore it.
        v.fpu.enter()?;
        let ran = self.run_guest(&mut v, window_requested);
        v.fpu.leave();
        ran
    }

    /// Enters the guest until an exit needs userspace (or a signal comes); the guest's
    /// FPU is entered.
    fn run_guest(&self, v: &mut VcpuState, window_requested: bool) -> Result {
        let maps = self.vm.shared.maps.addresses();
        loop {
            if kernel::current!().signal_pending() {
                report_events(v);
                return Err(EINTR);
            }
            if debug::step_reported(v) {
                v.stats.to_user += 1;
                report_events(v);
                return Ok(());
            }
            match apic::before_entry(v) {
                Ok(false) => {}
                Ok(true) => {
                    v.stats.to_user += 1;
                    report_events(v);
                    return Ok(());
                }
                Err(e) => {
                    report_events(v);
                    return Err(e);
                }
            }
            if events::prepare_entry(v, window_requested || v.apic.window) {
                v.run.exit_reason = abi::exit::IRQ_WINDOW_OPEN;
                v.stats.to_user += 1;
                report_events(v);
                return Ok(());
            }
            apic::watch_tpr(v);
            cpu::cond_resched();
            {
                let pinned = NoPreempt::new();
                let svm = self.vm.shared.cpus.this_cpu(&pinned)?;
                let here = pinned.cpu();
                let flush = core::mem::take(&mut v.flush_tlb);
                v.vmcb.control.tlb_control = if v.last_cpu == Some(here) && !flush {
                    0
                } else {
                    vmcb::TLB_CONTROL_FLUSH_ALL
                };
                v.last_cpu = Some(here);
                // The VM's one TSC (another vCPU may have written it).
                v.vmcb.control.tsc_offset = self.vm.tsc_offset();
                let stepping = debug::before_entry(v);
                let exit_at_once = stepping || events::exit_after_injection(v);
                let _tsc_aux = v.tsc_aux.map(|aux| aux.load_guest(&pinned, v.msrs.tsc_aux()));
                // A kick from now on interrupts this CPU; world::run checks for one that
                // came before, with interrupts off.
                let hw = v.kapic.as_ref().map(|a| &a.hw);
                if let Some(hw) = hw {
                    hw.set_running(Some(here));
                }
                let entered = world::run(&svm, &mut v.vmcb, &mut v.gprs, &v.fpu, maps, exit_at_once, hw);
                if let Some(hw) = hw {
                    hw.set_running(None);
                }
                if matches!(entered, Err(e) if e == EIO) {
                    // The host's state came back as the guest's (world::run said why).
                    v.dead = true;
                }
                debug::after_exit(v, matches!(entered, Ok(true)));
                if !entered? {
                    // A kick came: look at the APIC again.
                    if !kernel::current!().signal_pending() {
                        continue;
                    }
                    // A signal came after the check above: not entered.
                    report_events(v);
                    return Err(EINTR);
                }
            }
            // The injected event was delivered, or its delivery is redone next time.
            events::after_exit(v);
            apic::after_exit(v);
            match handle_exit(&self.vm, v) {
                Next::Resume => {}
                // The next loop's `apic::before_entry` sleeps.
                Next::Halt => v.apic.halted = true,
                Next::ToUser => {
                    v.stats.to_user += 1;
                    report_events(v);
                    return Ok(());
                }
            }
        }
    }

    /// `INTERRUPT`: queues external interrupt `vector` (any of 0-255: a PIC in real mode
    /// uses vectors 8-15). It is delivered by a later `RUN` when the guest can take it.
    pub(crate) fn interrupt(&self, irq: &abi::Interrupt) -> Result {
        let vector = u8::try_from(irq.vector).map_err(|_| EINVAL)?;
        let mut v = self.state.lock();
        if v.queued.is_some() {
            return Err(EEXIST);
        }
        v.queued = Some(vector);
        Ok(())
    }

    /// `NMI`: queues a non-maskable interrupt, delivered by a later `RUN` once NMIs are not
    /// blocked (events.rs); `EEXIST` while one is queued.
    pub(crate) fn nmi(&self) -> Result {
        let mut v = self.state.lock();
        if v.nmi.queued {
            return Err(EEXIST);
        }
        v.nmi.queued = true;
        Ok(())
    }

    /// `SET_GUEST_DEBUG`: single-stepping and software breakpoints (debug.rs).
    pub(crate) fn set_guest_debug(&self, dbg: &abi::GuestDebug) -> Result {
        debug::set(&mut self.state.lock(), dbg)
    }

    /// `SET_COALESCED_IO`: zones must lie inside the port space.
    pub(crate) fn set_coalesced_io(&self, io: &abi::CoalescedIo) -> Result {
        if io.zones.iter().any(|z| u32::from(z.port) + u32::from(z.len) > 0x1_0000) {
            return Err(EINVAL);
        }
        self.state.lock().coalesced = *io;
        Ok(())
    }

    /// `APIC_ACCESS`: an xAPIC page access forwarded by userspace (vcpu/apic.rs).
    pub(crate) fn apic_access(&self, access: &mut abi::ApicAccess) -> Result {
        apic::forwarded(&self.vm, &mut self.state.lock(), access)
    }

    /// `GET_APIC_STATS`; `ENXIO` without a kernel APIC.
    pub(crate) fn apic_stats(&self) -> Result<abi::ApicStats> {
        let v = self.state.lock();
        v.kapic.as_ref().ok_or(ENXIO)?;
        Ok(v.apic.stats)
    }

    /// `APIC_EVENTS`: how many of the VM's kernel APICs have something to wake their
    /// vCPU for.
    pub(crate) fn apic_events(&self) -> Result<u32> {
        self.state.lock().kapic.as_ref().ok_or(ENXIO)?;
        let n = self.vm.with_apics(|apics| apics.iter().filter(|a| a.with(|l| l.pending_interrupt().is_some() || l.has_event())).count());
        Ok(n as u32)
    }

    pub(crate) fn msr_stats(&self) -> abi::MsrStats {
        self.state.lock().msr_stats
    }

    pub(crate) fn get_regs(&self) -> abi::Regs {
        regs_of(&self.state.lock())
    }

    pub(crate) fn set_regs(&self, r: &abi::Regs) {
        load_regs(&mut self.state.lock(), r)
    }

    pub(crate) fn stats(&self) -> abi::ExitStats {
        self.state.lock().stats
    }

    /// Copies the VMCB to userspace (`GET_VMCB`).
    pub(crate) fn dump_vmcb(&self, out: &mut kernel::uaccess::UserSliceWriter) -> Result {
        let v = self.state.lock();
        out.write::<Vmcb>(&v.vmcb)
    }

    pub(crate) fn get_sregs(&self) -> abi::Sregs {
        sregs_of(&self.state.lock())
    }

    /// Loads segment and control registers; `EINVAL` for control registers no CPU of the
    /// guest's kind can be in (cr.rs). VMRUN checks the rest (a bad segment ends RUN with
    /// `FAIL_ENTRY`); none of them reaches the host.
    pub(crate) fn set_sregs(&self, r: &abi::Sregs) -> Result {
        load_sregs(&mut self.state.lock(), r)
    }
}

fn regs_of(v: &VcpuState) -> abi::Regs {
    let (g, s) = (&v.gprs, &v.vmcb.save);
    abi::Regs {
        rax: s.rax, rbx: g.rbx, rcx: g.rcx, rdx: g.rdx, rsi: g.rsi, rdi: g.rdi,
        rsp: s.rsp, rbp: g.rbp, r8: g.r8, r9: g.r9, r10: g.r10, r11: g.r11,
        r12: g.r12, r13: g.r13, r14: g.r14, r15: g.r15, rip: s.rip, rflags: s.rflags,
    }
}

fn load_regs(v: &mut VcpuState, r: &abi::Regs) {
    v.gprs = GuestGprs {
        rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi, rbp: r.rbp,
        r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13,
        r14: r.r14, r15: r.r15,
    };
    // Userspace emulated an instruction (MMIO) if it moved RIP: its shadow ends.
    complete_instruction(v, r.rip);
    let s = &mut v.vmcb.save;
    s.rax = r.rax;
    s.rsp = r.rsp;
    // Bit 1 is always set; VMRUN checks nothing else here, the guest gets what it asks.
    s.rflags = r.rflags | 2;
    // Userspace set the registers itself: nothing is left to complete.
    v.pending = None;
}

fn sregs_of(v: &VcpuState) -> abi::Sregs {
    let s = &v.vmcb.save;
    let seg = |x: &vmcb::Segment| abi::Segment { selector: x.selector, attrib: x.attrib, limit: x.limit, base: x.base };
    let dt = |x: &vmcb::Segment| abi::DescTable { base: x.base, limit: x.limit, _pad: 0 };
    abi::Sregs {
        cs: seg(&s.cs), ds: seg(&s.ds), es: seg(&s.es), fs: seg(&s.fs), gs: seg(&s.gs),
        ss: seg(&s.ss), tr: seg(&s.tr), ldt: seg(&s.ldtr), gdt: dt(&s.gdtr), idt: dt(&s.idtr),
        cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4,
        efer: s.efer & !efer::SVME,
    }
}

fn load_sregs(v: &mut VcpuState, r: &abi::Sregs) -> Result {
    if !cr::valid_sregs(&v.cr_limits, r.cr0, r.cr3, r.cr4, r.efer, r.cs.attrib) {
        return Err(EINVAL);
    }
    let s = &mut v.vmcb.save;
    let seg = |x: &abi::Segment| vmcb::Segment { selector: x.selector, attrib: x.attrib, limit: x.limit, base: x.base };
    let dt = |x: &abi::DescTable| vmcb::Segment { selector: 0, attrib: 0, limit: x.limit, base: x.base };
    s.cs = seg(&r.cs);
    s.ds = seg(&r.ds);
    s.es = seg(&r.es);
    s.fs = seg(&r.fs);
    s.gs = seg(&r.gs);
    s.ss = seg(&r.ss);
    s.tr = seg(&r.tr);
    s.ldtr = seg(&r.ldt);
    s.gdtr = dt(&r.gdt);
    s.idtr = dt(&r.idt);
    s.cr0 = r.cr0;
    s.cr2 = r.cr2;
    s.cr3 = r.cr3;
    s.cr4 = r.cr4;
    // VMRUN requires EFER.SVME in the guest's EFER; the guest never sees it.
    s.efer = r.efer | efer::SVME;
    // The CPL is the DPL of SS (APM 15.5.1).
    s.cpl = ((r.ss.attrib >> 5) & 3) as u8;
    // The paging mode may have changed.
    v.flush_tlb = true;
    Ok(())
}

/// Loads the register sets userspace changed in the run page (`Run::sync_dirty`), as
/// `SET_REGS` / `SET_SREGS` would, at the start of `RUN`. Each is read once: userspace
/// may write the page meanwhile, and any values are only the guest's problem. Control
/// registers `SET_SREGS` would refuse make RUN fail with `EINVAL` (as KVM's).
fn sync_in(v: &mut VcpuState) -> Result {
    let dirty = read_once(&v.run.sync_dirty);
    if dirty == 0 {
        return Ok(());
    }
    v.run.sync_dirty = 0;
    if dirty & abi::sync::SREGS != 0 {
        let sregs = v.run.sync_regs.sregs;
        load_sregs(v, &sregs)?;
    }
    if dirty & abi::sync::REGS != 0 {
        let regs = v.run.sync_regs.regs;
        load_regs(v, &regs);
    }
    Ok(())
}

/// Copies the register sets userspace asked for (`Run::sync_valid`) into the run page.
fn sync_out(v: &mut VcpuState) {
    let valid = read_once(&v.run.sync_valid);
    if valid & abi::sync::REGS != 0 {
        v.run.sync_regs.regs = regs_of(v);
    }
    if valid & abi::sync::SREGS != 0 {
        v.run.sync_regs.sregs = sregs_of(v);
    }
}

/// A fresh VMCB: every intercept the host needs, nested paging, and a real-mode CPU at
/// address 0 (userspace sets the real starting state).
fn init_vmcb(vmcb: &mut Vmcb, asid: u32, (iopm, msrpm): (u64, u64)) {
    let c = &mut vmcb.control;
    c.intercept_dr = 0xffff_ffff;         // every DR read and write (dr.rs)
    c.intercept_cr = vmcb::intercept_cr_write(0) // CR0, CR3, CR4 writes, checked (cr.rs)
        | vmcb::intercept_cr_write(3)
        | vmcb::intercept_cr_write(4);
    c.intercept_exceptions = 0;
    c.intercept_misc1 = i1::INTR       // host interrupts exit and are taken by the host
        | i1::NMI
        | i1::SMI
        | i1::INIT
        | i1::CPUID
        | i1::INVD                     // would discard host cache lines
        | i1::HLT
        | i1::INVLPGA
        | i1::IOIO_PROT                // every port, through the all-ones IOPM
        | i1::MSR_PROT                 // every MSR, through the all-ones MSRPM
        | i1::SHUTDOWN;
    c.intercept_misc2 = i2::VMRUN      // required by VMRUN itself
        | i2::VMMCALL
        | i2::VMLOAD
        | i2::VMSAVE
        | i2::STGI
        | i2::CLGI                     // a guest CLGI would block host interrupts
        | i2::SKINIT
        | i2::ICEBP
        | i2::WBINVD
        | i2::MONITOR
        | i2::MWAIT
        | i2::MWAIT_COND
        | i2::XSETBV;                  // XCR0 is the host's
    c.iopm_base_pa = iopm;
    c.msrpm_base_pa = msrpm;
    c.guest_asid = asid;
    c.tlb_control = vmcb::TLB_CONTROL_FLUSH_ALL;
    c.v_intr = vmcb::V_INTR_MASKING;
    c.np_control = vmcb::NP_ENABLE;

    let s = &mut vmcb.save;
    let code = vmcb::Segment { selector: 0, attrib: 0x9b, limit: 0xffff, base: 0 };
    let data = vmcb::Segment { selector: 0, attrib: 0x93, limit: 0xffff, base: 0 };
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.gdtr = vmcb::Segment { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
    s.idtr = s.gdtr;
    s.ldtr = vmcb::Segment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 };
    s.tr = vmcb::Segment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 };
    s.cr0 = 0x10; // ET
    s.efer = efer::SVME;
    s.rflags = rflags::FIXED;
    // The hardware's DR6/DR7 while the guest runs: no breakpoint armed, ever (dr.rs).
    s.dr6 = x86::dr::DR6_RESET;
    s.dr7 = x86::dr::DR7_RESET;
    s.g_pat = vmcb::PAT_DEFAULT;
}

/// Dispatches on the exit code: one handler per exit, each deciding to resume the guest
/// or to return to userspace.
fn handle_exit(vm: &Vm, v: &mut VcpuState) -> Next {
    v.stats.total += 1;
    match v.vmcb.control.exit_code {
        // The host already took the interrupt (when it re-enabled interrupts).
        exit_code::INTR | exit_code::NMI | exit_code::SMI | exit_code::INIT => {
            v.stats.interrupt += 1;
            Next::Resume
        }
        exit_code::VINTR => {
            events::window_opened(v);
            Next::Resume
        }
        exit_code::IRET => {
            events::iret_intercepted(v);
            Next::Resume
        }
        exit_code::IOIO => handle_ioio(vm, v),
        exit_code::HLT => handle_hlt(v),
        exit_code::WBINVD => handle_wbinvd(v),
        exit_code::CPUID => handle_cpuid(vm, v),
        exit_code::MSR => handle_msr(vm, v),
        exit_code::VMMCALL => handle_vmmcall(v),
        exit_code::NPF => handle_npf(vm, v),
        exit_code::PUSHF => debug::handle_pushf(v),
        exit_code::SWINT => debug::handle_int(vm, v),
        code if code == exit_code::EXCP_BASE + 1 => debug::handle_db(vm, v),
        code @ exit_code::EXCP_BASE..=0x5f => debug::handle_exception(v, (code - exit_code::EXCP_BASE) as u8),
        code @ (exit_code::WRITE_CR0 | exit_code::WRITE_CR3 | exit_code::WRITE_CR4 | exit_code::WRITE_CR8) => {
            cr::handle_cr_write(vm, v, (code - exit_code::WRITE_CR0) as usize)
        }
        code @ exit_code::READ_DR0..=0x3f => handle_dr(vm, v, code),
        exit_code::SHUTDOWN => {
            v.stats.shutdown += 1;
            v.dead = true;
            to_user_hw(v, abi::exit::SHUTDOWN)
        }
        exit_code::INVALID => {
            v.stats.fail_entry += 1;
            to_user_hw(v, abi::exit::FAIL_ENTRY)
        }
        code if is_refused_instruction(code) => inject(v, vector::UD, None),
        _ => {
            v.stats.other += 1;
            to_user_hw(v, abi::exit::UNKNOWN)
        }
    }
}

/// SVM and the intercepted extras are not offered to the guest (CPUID says so), so they
/// raise #UD as on a CPU without them. (XSETBV too: CPUID offers no XSAVE.) ICEBP and INVD
/// are not listed: they end the run. (RDTSCP is offered and runs in the guest, with its
/// TSC_AUX loaded around VMRUN.)
fn is_refused_instruction(code: u32) -> bool {
    use exit_code::*;
    matches!(
        code,
        VMRUN | VMLOAD | VMSAVE | STGI | CLGI | SKINIT | INVLPGA | MONITOR | MWAIT
            | MWAIT_COND | XSETBV
    )
}

/// Injects exception `vector` (with `error_code` if it has one); RIP stays at the
/// faulting instruction. The module injects only faults (#UD, #GP): the RFLAGS image the
/// CPU pushes for a fault has RF set (as KVM sets it before injecting one), so a debugger
/// of the guest's own does not break again at the instruction.
fn inject(v: &mut VcpuState, vector: u8, error_code: Option<u32>) -> Next {
    v.stats.invalid_opcode += u64::from(vector == vector::UD);
    v.vmcb.save.rflags |= rflags::RF;
    v.vmcb.control.event_inj = event::VALID
        | event::TYPE_EXCEPTION
        | u64::from(vector)
        | error_code.map_or(0, |e| event::ERROR_VALID | (u64::from(e) << 32));
    Next::Resume
}

/// Moves RIP past the `len` bytes of the instruction the module emulated.
fn skip(v: &mut VcpuState, len: u64) {
    let next = v.vmcb.save.rip.wrapping_add(len);
    complete_instruction(v, next);
}

/// Moves RIP to `next_rip` after an instruction the module or userspace emulated: its
/// interrupt shadow ends (events.rs) and, while single-stepping, it was the step
/// (debug.rs).
fn complete_instruction(v: &mut VcpuState, next_rip: u64) {
    if next_rip != v.vmcb.save.rip {
        events::instruction_done(v);
        debug::instruction_done(v);
    }
    v.vmcb.save.rip = next_rip;
}

/// Fills in the run page's view of the guest's interrupt state and the registers userspace
/// asked for (every return from RUN).
fn report_events(v: &mut VcpuState) {
    v.run.ready_for_interrupt_injection = u8::from(events::ready_for_injection(v));
    v.run.if_flag = u8::from(v.vmcb.save.rflags & rflags::IF != 0);
    v.run.apic_status = apic::status(v);
    sync_out(v);
}

/// HLT waits for an interrupt. With one queued and interrupts enabled, it is delivered
/// at once; otherwise userspace decides (`Run::if_flag` tells it whether anything could
/// ever wake the guest).
fn handle_hlt(v: &mut VcpuState) -> Next {
    v.stats.hlt += 1;
    // HLT is one byte; QEMU gives no next-RIP.
    skip(v, 1);
    // (A guest stepping itself has its #DB trap to take: debug::instruction_done.)
    if (v.queued.is_some() && v.vmcb.save.rflags & rflags::IF != 0)
        || events::nmi_deliverable(v)
        || v.vmcb.control.event_inj & event::VALID != 0
    {
        return Next::Resume;
    }
    // A kernel APIC wakes the vCPU in the module (vcpu/apic.rs); with interrupts off only
    // an NMI, INIT or SIPI could, and userspace decides, as without one.
    if v.kapic.is_some() && v.vmcb.save.rflags & rflags::IF != 0 {
        v.apic.stats.halts += 1;
        return Next::Halt;
    }
    v.run.exit_reason = abi::exit::HLT;
    Next::ToUser
}

/// WBINVD (Linux's AP trampoline runs it) does nothing: guest RAM is the host's ordinary,
/// coherent memory and no device of ours bypasses the caches, so there is nothing to write
/// back; a guest must not make the host flush its caches either.
fn handle_wbinvd(v: &mut VcpuState) -> Next {
    skip(v, 2); // 0f 09
    Next::Resume
}

fn handle_cpuid(vm: &Vm, v: &mut VcpuState) -> Next {
    v.stats.cpuid += 1;
    // The APIC bit follows IA32_APIC_BASE.EN, as on a CPU whose APIC was disabled.
    let apic = v.lapic && v.msrs.apic_enabled();
    let leaf = v.vmcb.save.rax as u32;
    let subleaf = v.gprs.rcx as u32;
    let mut r = cpuid::guest_cpuid(leaf, subleaf, v.id, apic);
    apic::cpuid_bits(vm, v, leaf, subleaf, &mut r);
    v.vmcb.save.rax = r.eax.into();
    v.gprs.rbx = r.ebx.into();
    v.gprs.rcx = r.ecx.into();
    v.gprs.rdx = r.edx.into();
    skip(v, 2); // 0f a2
    Next::Resume
}

fn handle_msr(vm: &Vm, v: &mut VcpuState) -> Next {
    v.stats.msr += 1;
    let index = v.gprs.rcx as u32;
    let is_write = v.vmcb.control.exit_info_1 != 0;
    if apic::owns_msr(v, index) {
        let value = is_write.then(|| (v.vmcb.save.rax & 0xffff_ffff) | (v.gprs.rdx << 32));
        let done = apic::msr(vm, v, index, value);
        msr::count(&mut v.msr_stats, index, is_write, done.is_err());
        return match done {
            Ok(eoi) => {
                skip(v, 2); // 0f 32 / 0f 30
                match eoi {
                    Some(vector) => {
                        v.run.apic = abi::ApicExit { vector: vector.into(), _pad: 0 };
                        v.run.exit_reason = abi::exit::IOAPIC_EOI;
                        Next::ToUser
                    }
                    None => Next::Resume,
                }
            }
            Err(()) => inject(v, vector::GP, Some(0)),
        };
    }
    let tsc = cpu::rdtsc();
    let done = if !is_write {
        msr::read(&v.vmcb.save, v.vmcb.control.tsc_offset, &v.msrs, index, tsc).map(|value| {
            v.vmcb.save.rax = value & 0xffff_ffff;
            v.gprs.rdx = value >> 32;
        })
    } else {
        let value = (v.vmcb.save.rax & 0xffff_ffff) | (v.gprs.rdx << 32);
        let vmcb: &mut Vmcb = &mut v.vmcb;
        let offset = vmcb.control.tsc_offset;
        let done = msr::write(&mut vmcb.save, &mut vmcb.control.tsc_offset, &mut v.msrs, index, value, tsc);
        // The TSC is the VM's: a write moves every vCPU's.
        if vmcb.control.tsc_offset != offset {
            vm.set_tsc_offset(vmcb.control.tsc_offset);
        }
        done
    };
    msr::count(&mut v.msr_stats, index, is_write, done.is_err());
    match done {
        Ok(()) => {
            skip(v, 2); // 0f 32 / 0f 30
            Next::Resume
        }
        Err(msr::Fault) => inject(v, vector::GP, Some(0)),
    }
}

fn handle_vmmcall(v: &mut VcpuState) -> Next {
    v.stats.hypercall += 1;
    let g = &v.gprs;
    v.run.hypercall = abi::HypercallExit {
        nr: v.vmcb.save.rax,
        args: [g.rbx, g.rcx, g.rdx, g.rsi],
        ret: 0,
    };
    v.run.exit_reason = abi::exit::HYPERCALL;
    skip(v, 3); // 0f 01 d9
    v.pending = Some(Pending::Hypercall);
    Next::ToUser
}

/// The general-purpose register `n` (0 = RAX ... 15 = R15).
fn gpr(v: &VcpuState, n: usize) -> u64 {
    let g = &v.gprs;
    [v.vmcb.save.rax, g.rcx, g.rdx, g.rbx, v.vmcb.save.rsp, g.rbp, g.rsi, g.rdi, g.r8, g.r9, g.r10, g.r11, g.r12, g.r13, g.r14, g.r15][n & 15]
}

fn set_gpr(v: &mut VcpuState, n: usize, value: u64) {
    let g = &mut v.gprs;
    let slot = match n & 15 {
        0 => &mut v.vmcb.save.rax,
        1 => &mut g.rcx,
        2 => &mut g.rdx,
        3 => &mut g.rbx,
        4 => &mut v.vmcb.save.rsp,
        5 => &mut g.rbp,
        6 => &mut g.rsi,
        7 => &mut g.rdi,
        8 => &mut g.r8,
        9 => &mut g.r9,
        10 => &mut g.r10,
        11 => &mut g.r11,
        12 => &mut g.r12,
        13 => &mut g.r13,
        14 => &mut g.r14,
        _ => &mut g.r15,
    };
    *slot = value;
}

/// MOV to or from a debug register: emulated on the vCPU's copies (dr.rs); DR6 is the
/// VMCB's, where the CPU sets its status bits (BS, B0-B3) when it delivers the guest's
/// own #DB. QEMU gives no decode assists, so the instruction is read from guest memory at
/// RIP.
fn handle_dr(vm: &Vm, v: &mut VcpuState, code: u32) -> Next {
    let s = &v.vmcb.save;
    let long = s.long_mode();
    let at = s.cs.base.wrapping_add(s.rip);
    let mut bytes = [0u8; 15];
    // The instruction may end before an unmapped page: take what can be read.
    let n = (1..=bytes.len()).rev().find(|&n| vm.read_virt(&s.paging(), at, &mut bytes[..n]).is_ok()).unwrap_or(0);
    let Some(mov) = dr::decode(&bytes[..n], long) else {
        v.stats.other += 1;
        return to_user_hw(v, abi::exit::UNKNOWN);
    };
    let expected = if mov.to_dr { exit_code::WRITE_DR0 } else { exit_code::READ_DR0 } + mov.dr as u32;
    if code != expected {
        v.stats.other += 1;
        return to_user_hw(v, abi::exit::UNKNOWN);
    }
    // DR4 and DR5 are aliases of DR6 and DR7 with CR4.DE clear, and raise #UD with it set
    // (APM 13.1.1.5; QEMU's SVM intercepts before checking).
    let dr = match mov.dr {
        4 | 5 if s.cr4 & x86::cr4::DE != 0 => return inject(v, vector::UD, None),
        4 => 6,
        5 => 7,
        n => n,
    };
    // Outside 64-bit mode the operand is 32 bits.
    let mask = if long { u64::MAX } else { 0xffff_ffff };
    if mov.to_dr {
        let value = gpr(v, mov.gpr) & mask;
        // The upper halves of DR6 and DR7 must be zero (VMRUN refuses them too).
        if dr >= 6 && value & x86::dr::UPPER != 0 {
            return inject(v, vector::GP, Some(0));
        }
        if dr == 6 {
            v.vmcb.save.dr6 = dr::dr6_written(value);
        } else {
            v.debug.write(dr, value);
        }
    } else {
        let value = if dr == 6 { v.vmcb.save.dr6 } else { v.debug.read(dr) } & mask;
        set_gpr(v, mov.gpr, value);
    }
    skip(v, mov.len);
    Next::Resume
}

/// #NPF error code bits (APM 15.25.6): the page was present, the access was a write.
const NPF_PRESENT: u64 = 1 << 0;
const NPF_WRITE: u64 = 1 << 1;

/// A nested page fault: only RAM is mapped, so a fault on a non-present page is an access
/// to something else, which userspace emulates (MMIO). A fault on a present page is a
/// write to the kernel APIC's read page (vcpu/apic.rs), handled as the page's other
/// accesses were before it; any other cannot come from our tables and is reported as it
/// is.
fn handle_npf(vm: &Vm, v: &mut VcpuState) -> Next {
    let c = &v.vmcb.control;
    // The fault came while the CPU delivered an event (its IDT or stack is not RAM): the
    // instruction at RIP is not the one that touched memory, so there is nothing to
    // emulate. Reported as it is (KVM: a delivery-event internal error).
    if c.exit_int_info & event::VALID != 0 {
        v.stats.other += 1;
        return to_user_hw(v, abi::exit::UNKNOWN);
    }
    let gpa = c.exit_info_2;
    if c.exit_info_1 & NPF_PRESENT != 0 && !apic::read_page_holds(v, gpa) {
        v.stats.other += 1;
        return to_user_hw(v, abi::exit::UNKNOWN);
    }
    if apic::owns_gpa(v, gpa) {
        if let Some(next) = apic::npf(vm, v, gpa) {
            return next;
        }
    }
    let c = &v.vmcb.control;
    v.stats.mmio += 1;
    if c.exit_info_1 & NPF_WRITE != 0 && vm.has_ioeventfds() {
        let signal = |gpa, access: mmio::Access<'_>| match access {
            mmio::Access::Write(data) => vm.signal_ioeventfd(false, gpa, data),
            mmio::Access::Read(_) => false,
        };
        if let mmio::Emulated::Done = mmio::emulate(vm, v, gpa, signal) {
            v.stats.ioeventfd += 1;
            return Next::Resume;
        }
    }
    let c = &v.vmcb.control;
    let len = c.insn_len.min(15);
    let mut insn_bytes = [0u8; 16];
    insn_bytes[..len as usize].copy_from_slice(&c.insn_bytes[..len as usize]);
    v.run.mmio = abi::MmioExit {
        gpa,
        is_write: u8::from(c.exit_info_1 & NPF_WRITE != 0),
        insn_len: len,
        _pad: [0; 6],
        insn_bytes,
    };
    v.run.exit_reason = abi::exit::MMIO;
    Next::ToUser
}

fn to_user_hw(v: &mut VcpuState, reason: u32) -> Next {
    let c = &v.vmcb.control;
    v.run.hw = abi::HwExit {
        exit_code: (u64::from(c.exit_code_hi) << 32) | u64::from(c.exit_code),
        exit_info_1: c.exit_info_1,
        exit_info_2: c.exit_info_2,
        rip: v.vmcb.save.rip,
    };
    v.run.exit_reason = reason;
    Next::ToUser
}
