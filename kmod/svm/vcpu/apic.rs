// SPDX-License-Identifier: GPL-2.0
//! A vCPU with a kernel APIC (`ENABLE_KERNEL_APIC`, svm/apic.rs): what its run loop does
//! with it.
//!
//! - **Before each entry** ([`before_entry`]): the kick is cleared, then the APIC is
//!   looked at: the timer fires if due (and its hrtimer is re-armed when the deadline
//!   moved), an NMI becomes the vCPU's queued NMI (the APIC keeps a second one
//!   until that is delivered, as the CPU latches one while another is in service), INIT and SIPI end `RUN` (exits
//!   `APIC_INIT`, `APIC_SIPI`: userspace sets the registers), a vCPU waiting for a SIPI or
//!   halted sleeps until a kick or a signal, and the highest pending interrupt is
//!   acknowledged (IRR to ISR) and injected once the guest can take it; until then the
//!   interrupt window is opened (events.rs). While an interrupt is held back by the TPR
//!   alone, CR8 writes exit ([`watch_tpr`]), so the guest's lowering of CR8 delivers it.
//! - **CR8 is the TPR**: with V_INTR_MASKING the guest's CR8 is the VMCB's V_TPR; it is
//!   written from the APIC before each entry and read back after each exit.
//! - **HLT** with interrupts enabled waits in `RUN` (the `halted` state survives a
//!   signal's `EINTR`, as KVM's mp_state); with them disabled it exits to userspace as
//!   without a kernel APIC. The wait first polls for a kick, up to the vCPU's poll time,
//!   then sleeps ([`HaltPoll`], KVM's halt polling): a wake-up that comes soon costs no
//!   sleep and no wake-up of the thread.
//! - **x2APIC MSRs and IA32_APIC_BASE** ([`msr`]); **xAPIC page** accesses the module
//!   decodes (vcpu/mmio.rs) or userspace forwards (`APIC_ACCESS`, [`forwarded`]).
//! - **xAPIC reads without an exit** ([`ReadPage`]): in xAPIC mode at the default base,
//!   the vCPU's own nested page tables (npt.rs `PrivateView`) map the APIC's page
//!   read-only to a page of the module's that holds every register as the APIC has it
//!   at the entry (rewritten before each one). Reads take no exit; writes fault and are
//!   decoded as before. The price: a register that changes while the guest runs without
//!   an exit reads as it was at the entry: the timer's current count (it moves at every
//!   exit, at least at each of the host's ticks). MOV to CR8 exits while the page is
//!   mapped ([`watch_tpr`]), so the TPR and PPR follow it. Everything else changes only at
//!   an exit or a kick, which ends the guest's run. (AVIC's backing page does this in
//!   hardware, with the current count trapped; QEMU's software SVM has no AVIC.)
//! - A kick racing with the entry is not lost: `world::run` checks it with interrupts
//!   off, after the vCPU published the CPU it runs on (ffi/apic.rs).

use super::events::NmiBlocking;
use super::{mmio, Next, VcpuState};
use crate::abi;
use crate::ffi::apic::{now_ns, tsc_khz, ApicHw};
use crate::ffi::cpu;
use crate::ffi::mem::{Pages, RawPage, PAGE_SIZE};
use crate::guest_cpuid::CpuidResult;
use crate::lapic::{tsc_deadline_ns, ApicMode, Lapic, LapicEffect, LAPIC_BASE, LAPIC_SIZE, MAX_PENDING_NMIS};
use crate::svm::apic as route;
use crate::svm::npt::PrivateView;
use crate::svm::vm::Vm;
use crate::svm::vmcb;
use crate::svm::x86::rflags;
use kernel::prelude::*;

/// IA32_APIC_BASE (SDM 11.4.4, 11.12.1): BSP (8), EXTD (10), EN (11), the base.
pub(super) const MSR_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_DEADLINE (SDM 11.5.4.1): the timer's deadline in TSC-deadline mode.
const MSR_TSC_DEADLINE: u32 = 0x6e0;
const BASE_BSP: u64 = 1 << 8;
const BASE_EXTD: u64 = 1 << 10;
const BASE_EN: u64 = 1 << 11;
/// Bits 7-0 and 9 are reserved (the base is in bits 12 and up).
const BASE_RESERVED: u64 = 0x2ff;
/// The V_TPR field of the VMCB's `v_intr` (bits 3-0): CR8 while the guest runs.
const V_TPR_MASK: u64 = 0xf;
/// Registers are 32 bits at the start of each 16-byte slot (as the emulator's pc/apic.rs).
const REG_SIZE: usize = 4;
const SLOT: u64 = 0x10;

/// The kernel APIC's per-vCPU state in the run loop.
#[derive(Default)]
pub(super) struct ApicState {
    /// IA32_APIC_BASE's base when the guest moved it from `LAPIC_BASE`: where the xAPIC
    /// page is.
    relocated: Option<u64>,
    /// The deadline the hrtimer is armed for.
    armed: Option<u64>,
    /// The V_TPR written at the last entry.
    v_tpr: u64,
    /// HLT with interrupts on: wait until something can be delivered.
    pub(super) halted: bool,
    /// How long a halt waits spinning before it sleeps.
    poll: HaltPoll,
    /// This HLT was reported to userspace (`exit::HLT`: no APIC timer armed); its end is
    /// reported too (`exit::APIC_WAKE`).
    idle_reported: bool,
    /// The APIC has an interrupt the guest cannot take yet: open the window.
    pub(super) window: bool,
    /// The APIC's highest request, held back by the TPR alone (`watch_tpr`).
    tpr_window: Option<u8>,
    /// The page the guest reads the APIC's registers from (made at the first entry).
    read_page: Option<ReadPage>,
    pub(super) stats: abi::ApicStats,
}

/// Halt polling (KVM's `halt_poll_ns`, virt/kvm/kvm_main.c `kvm_vcpu_halt`): a halted
/// vCPU spins for a kick for up to `ns` before it sleeps. Putting the thread to sleep and
/// waking it costs two trips through the scheduler, and a wake-up IPI when the waker runs on
/// another CPU; a guest that halts between a request and its answer is often woken soon.
/// The time adapts to the guest, as KVM's: a halt that ended after the poll but within the
/// limit (the module parameter `halt_poll_ns`, 200 µs by default) doubles the poll (from
/// 10 µs); a longer halt turns polling off until short halts come back, so an idle guest
/// costs no CPU. The poll stops early when another task wants the CPU.
#[derive(Default)]
struct HaltPoll {
    /// The current poll time (0: sleep at once).
    ns: u64,
    /// When the current halt began (`None`: not halted).
    began: Option<u64>,
    /// The current halt slept.
    slept: bool,
}

impl HaltPoll {
    /// KVM's `halt_poll_ns_grow_start`.
    const GROW_START_NS: u64 = 10_000;

    /// The halt that began at `began` ended at `now`: the next poll time. Whether the poll
    /// caught its wake-up (it never slept).
    fn ended(&mut self, now: u64) -> bool {
        let Some(began) = self.began.take() else { return false };
        let waited = now.saturating_sub(began);
        let max = cpu::halt_poll_max_ns();
        self.ns = if waited <= self.ns {
            // The poll caught the wake-up.
            self.ns.min(max)
        } else if waited > max {
            // A long halt: polling would only have burnt the CPU.
            0
        } else {
            (self.ns * 2).max(Self::GROW_START_NS).min(max)
        };
        !core::mem::take(&mut self.slept)
    }
}

/// The xAPIC page as the guest reads it without an exit (the module documentation).
pub(super) struct ReadPage {
    view: PrivateView,
    page: Pages<RawPage>,
    /// Whether `view` maps the page (xAPIC mode, at the default base).
    mapped: bool,
}

/// At the vCPU's first entry, after `Vm::start`: its own nested page tables with the
/// APIC's read page, whose root becomes N_CR3. Without a kernel APIC: nothing.
pub(super) fn start(vm: &Vm, v: &mut VcpuState) -> Result {
    if v.kapic.is_none() {
        return Ok(());
    }
    let page = Pages::<RawPage>::new()?;
    let view = vm.private_view(LAPIC_BASE, page.phys())?;
    v.vmcb.control.n_cr3 = view.root_pa();
    v.apic.read_page = Some(ReadPage { view, page, mapped: false });
    Ok(())
}

/// Spins until a kick comes (true), the clock reaches `until`, or another task wants the
/// CPU or a signal came (false).
fn poll_for_kick(hw: &ApicHw, until: u64) -> bool {
    loop {
        if hw.kicked() {
            return true;
        }
        if now_ns() >= until || cpu::wanted() || kernel::current!().signal_pending() {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// Before an entry: the read page is mapped while the page is the APIC's (xAPIC mode, at
/// the default base) and holds the registers as they are now.
fn refresh_read_page(v: &mut VcpuState, apic: &route::KApic) {
    let relocated = v.apic.relocated.is_some();
    let Some(rp) = v.apic.read_page.as_mut() else { return };
    let now = now_ns();
    let wanted = apic.with(|l| {
        let wanted = l.mode() == ApicMode::XApic && !relocated;
        if wanted {
            for slot in (0..LAPIC_SIZE).step_by(SLOT as usize) {
                let value = l.read(slot, now).to_le_bytes();
                let at = slot as usize;
                rp.page.bytes[at..at + REG_SIZE].copy_from_slice(&value);
            }
        }
        wanted
    });
    if wanted != rp.mapped {
        rp.view.map(wanted);
        rp.mapped = wanted;
        v.flush_tlb = true;
    }
}

/// Counts an access to register `slot` (`abi::ApicStats::by_register`).
fn count_register(v: &mut VcpuState, slot: usize) {
    if let Some(n) = v.apic.stats.by_register.get_mut(slot) {
        *n += 1;
    }
}

/// The `by_register` slot of the xAPIC register at `offset` in the page.
fn page_slot(offset: u64) -> usize {
    (offset / SLOT) as usize
}

/// When the guest's TSC (the host's plus `tsc_offset`) reaches `deadline`, in `now`'s
/// clock (`now_ns`); `None` without a TSC rate.
fn tsc_deadline_at(deadline: u64, tsc_offset: u64, now: u64) -> Option<u64> {
    tsc_deadline_ns(deadline, cpu::rdtsc().wrapping_add(tsc_offset), now, tsc_khz())
}

/// After each exit: the guest's CR8 writes reach the TPR.
pub(super) fn after_exit(v: &mut VcpuState) {
    let Some(apic) = v.kapic.clone() else { return };
    let v_tpr = v.vmcb.control.v_intr & V_TPR_MASK;
    if v_tpr != v.apic.v_tpr {
        v.apic.v_tpr = v_tpr;
        apic.with(|l| l.set_tpr((v_tpr << 4) as u8));
    }
}

/// `Run::apic_status` (on every return from `RUN`).
pub(super) fn status(v: &VcpuState) -> u32 {
    let Some(apic) = v.kapic.as_ref() else { return 0 };
    if apic.with(|l| l.accepts_pic()) {
        abi::apic_status::ACCEPTS_PIC
    } else {
        0
    }
}

/// Whether the halted vCPU has something to do.
fn wakes(v: &VcpuState, pending: bool) -> bool {
    ((pending || v.queued.is_some()) && v.vmcb.save.rflags & rflags::IF != 0)
        || super::events::nmi_deliverable(v)
        || v.vmcb.control.event_inj & vmcb::event::VALID != 0
}

/// Before each entry (see the module documentation). `Ok(true)`: `RUN` returns with the
/// exit in the run page; `EINTR`: a signal came while the vCPU slept.
pub(super) fn before_entry(v: &mut VcpuState) -> Result<bool> {
    let Some(apic) = v.kapic.clone() else { return Ok(false) };
    loop {
        if apic.hw.take_kick() {
            v.apic.stats.kicks += 1;
        }
        let now = now_ns();
        let tsc_offset = v.vmcb.control.tsc_offset;
        // The NMIs the vCPU can still hold: one in service (or being delivered) and one
        // latched; the queued one counts as latched.
        let queued = v.nmi.queued;
        let room = if v.nmi.blocking == NmiBlocking::No { MAX_PENDING_NMIS } else { 1 };
        let (fired, deadline, nmi, init, sipi, waiting, pending) = apic.with(|l| {
            // A TSC deadline fires when the guest's TSC has reached it, whatever the
            // hrtimer's clock says.
            if let Some(ns) = l.armed_tsc_deadline().and_then(|tsc| tsc_deadline_at(tsc, tsc_offset, now)) {
                l.retime_tsc_deadline(ns);
            }
            let fired = l.timer_expired(now);
            l.limit_nmis(room - u8::from(queued));
            let nmi = !queued && l.take_nmi();
            // One of INIT and SIPI at a time, INIT first: a SIPI that came right after it
            // (Linux sends them back to back) stays for the entry after userspace heard
            // of the INIT; taken now, it would be lost with the INIT's exit.
            let init = l.take_init();
            let sipi = if init { None } else { l.take_sipi() };
            (fired, l.timer_deadline(), nmi, init, sipi, l.waiting_for_sipi(), l.pending_interrupt())
        });
        if deadline != v.apic.armed {
            v.apic.armed = deadline;
            apic.hw.arm(deadline);
        }
        v.apic.stats.timer_fired += u64::from(fired);
        if nmi {
            v.nmi.queued = true;
        }
        if init {
            v.apic.halted = false;
            v.apic.poll.began = None;
            v.apic.idle_reported = false;
            v.queued = None;
            v.run.exit_reason = abi::exit::APIC_INIT;
            return Ok(true);
        }
        if let Some(vector) = sipi {
            v.run.apic = abi::ApicExit { vector: vector.into(), _pad: 0 };
            v.run.exit_reason = abi::exit::APIC_SIPI;
            return Ok(true);
        }
        let halted = v.apic.halted && !wakes(v, pending.is_some());
        if !waiting && !halted {
            v.apic.halted = false;
            if v.apic.poll.ended(now) {
                v.apic.stats.halt_polls += 1;
            }
            if core::mem::take(&mut v.apic.idle_reported) {
                v.run.exit_reason = abi::exit::APIC_WAKE;
                return Ok(true);
            }
            break;
        }
        // Halted with no timer of its own to wake it: userspace hears of it (once per
        // HLT), to tell whether anything else ever can (a guest that waits forever).
        if halted && deadline.is_none() && !v.apic.idle_reported {
            v.apic.idle_reported = true;
            v.run.exit_reason = abi::exit::HLT;
            return Ok(true);
        }
        if kernel::current!().signal_pending() {
            return Err(EINTR);
        }
        if halted {
            let began = *v.apic.poll.began.get_or_insert(now);
            if poll_for_kick(&apic.hw, began + v.apic.poll.ns) {
                continue;
            }
            v.apic.poll.slept = true;
        }
        apic.hw.wait()?;
    }
    // The interrupt to inject: acknowledged only when the guest takes it at this entry.
    if v.queued.is_none() && super::events::interrupt_allowed(v) && !v.debugger.blocks_irq() {
        if let Some(vector) = apic.with(Lapic::acknowledge) {
            v.queued = Some(vector);
            v.apic.stats.delivered += 1;
        }
    }
    let (pending, tpr, blocked) = apic.with(|l| (l.pending_interrupt().is_some(), l.tpr(), l.blocked_by_tpr()));
    v.apic.v_tpr = u64::from(tpr >> 4);
    let c = &mut v.vmcb.control;
    c.v_intr = (c.v_intr & !V_TPR_MASK) | v.apic.v_tpr;
    v.apic.window = pending;
    v.apic.tpr_window = blocked;
    refresh_read_page(v, &apic);
    Ok(false)
}

/// Before each entry: while an interrupt is held back by the TPR alone, the guest's CR8
/// writes exit (KVM's `update_cr8_intercept`), so that the one lowering the TPR below it
/// ends the wait ([`cr8_write`]); otherwise CR8 writes reach V_TPR without an exit. The
/// other ways to lower the TPR (the xAPIC page, the x2APIC MSR) are exits already.
///
/// Not a virtual interrupt of the vector's class (V_IRQ with V_IGN_TPR clear): AMD's
/// processors take it when V_INTR_PRIO > V_TPR, QEMU 7.2's software SVM when
/// V_INTR_PRIO >= V_TPR (`ctl_has_irq`), so under QEMU a TPR equal to the class made the
/// CPU exit (VINTR) at once, every entry: 30000 exits a second in the module, each through
/// QEMU's big lock, which starved the image's timers for a minute (the image's kernel
/// then reported a soft lockup of the CPU running yakvm; kvm-unit-tests' eventinj).
///
/// While the read page is mapped, CR8 writes always exit: the page's TPR and PPR must
/// follow them (kvm-unit-tests' `apic_disable` reads the TPR through the page right after
/// a MOV to CR8).
pub(super) fn watch_tpr(v: &mut VcpuState) {
    let write_cr8 = vmcb::intercept_cr_write(8);
    let page_mapped = v.apic.read_page.as_ref().is_some_and(|rp| rp.mapped);
    let c = &mut v.vmcb.control;
    if v.apic.tpr_window.take().is_some() || page_mapped {
        c.intercept_cr |= write_cr8;
    } else {
        c.intercept_cr &= !write_cr8;
    }
}

/// A MOV to CR8 while [`watch_tpr`] intercepts it (bits 63:4 were checked to be clear):
/// the TPR takes it as the CPU would have, and the next entry delivers what it unblocks.
pub(super) fn cr8_write(v: &mut VcpuState, value: u64) {
    let c = &mut v.vmcb.control;
    c.v_intr = (c.v_intr & !V_TPR_MASK) | (value & V_TPR_MASK);
    // A TPR write, as through the page or the MSR.
    v.apic.stats.writes += 1;
    after_exit(v);
}

/// What a register write of the guest asks of the machine: IPIs go to the VM's APICs;
/// an EOI of a level-triggered vector is returned (userspace's I/O APIC must hear it).
fn apply(vm: &Vm, v: &mut VcpuState, effect: LapicEffect) -> Option<u8> {
    match effect {
        LapicEffect::None => {}
        LapicEffect::Ipi(ipi) => {
            v.apic.stats.icr += 1;
            let from = v.id as usize;
            vm.with_apics(|apics| route::ipi(apics, from, ipi));
        }
        LapicEffect::Eoi { vector, level_triggered } => {
            v.apic.stats.eois += 1;
            if level_triggered {
                return Some(vector);
            }
        }
        // The next entry re-arms the hrtimer (`before_entry`).
        LapicEffect::TimerChanged => v.apic.stats.timer_writes += 1,
    }
    None
}

/// Reports an EOI of level-triggered `vector` to userspace (the instruction is complete).
fn eoi_exit(v: &mut VcpuState, vector: Option<u8>) -> Next {
    match vector {
        Some(vector) => {
            v.run.apic = abi::ApicExit { vector: vector.into(), _pad: 0 };
            v.run.exit_reason = abi::exit::IOAPIC_EOI;
            Next::ToUser
        }
        None => Next::Resume,
    }
}

/// Where the xAPIC page is: IA32_APIC_BASE's base.
fn page_base(v: &VcpuState) -> u64 {
    v.apic.relocated.unwrap_or(LAPIC_BASE)
}

/// IA32_APIC_BASE's value for this APIC, its page at `base`.
fn apic_base(l: &Lapic, base: u64) -> u64 {
    let bsp = if l.is_bsp() { BASE_BSP } else { 0 };
    let mode = match l.mode() {
        ApicMode::Disabled => 0,
        ApicMode::XApic => BASE_EN,
        ApicMode::X2Apic => BASE_EN | BASE_EXTD,
    };
    base | bsp | mode
}

/// Whether `index` is an MSR the kernel APIC owns.
pub(super) fn owns_msr(v: &VcpuState, index: u32) -> bool {
    let Some(apic) = &v.kapic else { return false };
    index == MSR_APIC_BASE
        || (crate::lapic::X2APIC_MSR_FIRST..=crate::lapic::X2APIC_MSR_LAST).contains(&index)
        || (index == MSR_TSC_DEADLINE && apic.with(|l| l.tsc_deadline_offered()))
}

/// RDMSR/WRMSR of IA32_APIC_BASE or an x2APIC register (`owns_msr`): `Ok(Some(vector))`
/// when a write ended a level-triggered vector, `Err` for #GP. The caller completes the
/// instruction.
pub(super) fn msr(vm: &Vm, v: &mut VcpuState, index: u32, write: Option<u64>) -> core::result::Result<Option<u8>, ()> {
    let Some(apic) = v.kapic.clone() else { return Err(()) };
    let now = now_ns();
    match (index, write) {
        (MSR_APIC_BASE, None) => {
            let base = page_base(v);
            let value = apic.with(|l| apic_base(l, base));
            set_edx_eax(v, value);
        }
        (MSR_APIC_BASE, Some(value)) => {
            // BSP is read-only (writes of it are ignored); bits 7-0 and 9 and those above
            // the physical address width are reserved. The page moves to the new base
            // (seen there where nothing else is: an address the NPT does not map).
            let base = value & !(BASE_BSP | BASE_EXTD | BASE_EN);
            if base & (BASE_RESERVED | v.cr_limits.phys_reserved()) != 0 {
                return Err(());
            }
            let mode = match (value & BASE_EN != 0, value & BASE_EXTD != 0) {
                (false, false) => ApicMode::Disabled,
                (true, false) => ApicMode::XApic,
                (true, true) => ApicMode::X2Apic,
                (false, true) => return Err(()),
            };
            if !apic.with(|l| l.set_mode(mode)) {
                return Err(());
            }
            v.apic.relocated = (base != LAPIC_BASE).then_some(base);
        }
        (MSR_TSC_DEADLINE, None) => {
            count_register(v, abi::APIC_STATS_TSC_DEADLINE);
            let value = apic.with(|l| l.read_tsc_deadline());
            set_edx_eax(v, value);
        }
        (MSR_TSC_DEADLINE, Some(value)) => {
            count_register(v, abi::APIC_STATS_TSC_DEADLINE);
            let Some(deadline) = tsc_deadline_at(value, v.vmcb.control.tsc_offset, now) else { return Err(()) };
            let effect = apic.with(|l| l.write_tsc_deadline(value, deadline));
            if matches!(effect, LapicEffect::None) {
                v.apic.stats.writes += 1;
            }
            return Ok(apply(vm, v, effect));
        }
        (_, None) => match apic.with(|l| l.msr_read(index, now)) {
            Ok(value) => {
                v.apic.stats.reads += 1;
                count_register(v, (index - crate::lapic::X2APIC_MSR_FIRST) as usize);
                set_edx_eax(v, value);
            }
            Err(_) => {
                v.apic.stats.faults += 1;
                return Err(());
            }
        },
        (_, Some(value)) => match apic.with(|l| l.msr_write(index, value, now)) {
            Ok(effect) => {
                count_register(v, (index - crate::lapic::X2APIC_MSR_FIRST) as usize);
                if matches!(effect, LapicEffect::None) {
                    v.apic.stats.writes += 1;
                }
                return Ok(apply(vm, v, effect));
            }
            Err(_) => {
                v.apic.stats.faults += 1;
                return Err(());
            }
        },
    }
    Ok(None)
}

fn set_edx_eax(v: &mut VcpuState, value: u64) {
    v.vmcb.save.rax = value & 0xffff_ffff;
    v.gprs.rdx = value >> 32;
}

/// The CPUID the kernel APIC decides: the APIC (CPUID.1:EDX bit 9) while it is not
/// globally disabled, x2APIC (CPUID.1:ECX bit 21) always, and with it the x2APIC topology
/// leaf 0xb (the maximum basic leaf becomes at least 0xb): level 0 one thread per core,
/// level 1 the VM's vCPUs as the cores of one package (x2APIC IDs below `MAX_VCPUS`, so 3
/// bits), EDX the x2APIC ID at every level (SDM vol. 2A, CPUID leaf 0BH). Linux on an AMD
/// CPU reads leaf 0xb only with TOPOEXT (CPUID.80000001:ECX bit 22), which is not offered.
pub(super) fn cpuid_bits(vm: &Vm, v: &VcpuState, leaf: u32, subleaf: u32, r: &mut CpuidResult) {
    let Some(apic) = &v.kapic else { return };
    const EDX_APIC: u32 = 1 << 9;
    const ECX_X2APIC: u32 = 1 << 21;
    const ECX_TSC_DEADLINE: u32 = 1 << 24;
    const LEAF_TOPOLOGY: u32 = 0xb;
    const LEVEL_SMT: u32 = 1 << 8;
    const LEVEL_CORE: u32 = 2 << 8;
    let id_bits = abi::MAX_VCPUS.next_power_of_two().trailing_zeros();
    match (leaf, subleaf) {
        (0, _) => r.eax = r.eax.max(LEAF_TOPOLOGY),
        (1, _) => {
            r.ecx |= ECX_X2APIC;
            if apic.with(|l| l.tsc_deadline_offered()) {
                r.ecx |= ECX_TSC_DEADLINE;
            }
            if apic.with(|l| l.mode()) == ApicMode::Disabled {
                r.edx &= !EDX_APIC;
            } else {
                r.edx |= EDX_APIC;
            }
        }
        (LEAF_TOPOLOGY, 0) => *r = CpuidResult { eax: 0, ebx: 1, ecx: LEVEL_SMT, edx: apic.with(|l| l.x2apic_id()) },
        (LEAF_TOPOLOGY, 1) => {
            let vcpus = vm.with_apics(|apics| apics.len()) as u32;
            *r = CpuidResult { eax: id_bits, ebx: vcpus, ecx: 1 | LEVEL_CORE, edx: apic.with(|l| l.x2apic_id()) }
        }
        // Invalid levels: only the subleaf in ECX[7:0], and the x2APIC ID.
        (LEAF_TOPOLOGY, n) => *r = CpuidResult { eax: 0, ebx: 0, ecx: n & 0xff, edx: apic.with(|l| l.x2apic_id()) },
        _ => {}
    }
}

/// Whether `gpa` is on the read page while it is mapped (a write to it faults).
pub(super) fn read_page_holds(v: &VcpuState, gpa: u64) -> bool {
    let page = PAGE_SIZE as u64;
    v.apic.read_page.as_ref().is_some_and(|rp| rp.mapped) && gpa / page == LAPIC_BASE / page
}

/// Whether the APIC holds `gpa`: its xAPIC page, in xAPIC mode.
pub(super) fn owns_gpa(v: &VcpuState, gpa: u64) -> bool {
    let base = page_base(v);
    v.kapic.as_ref().is_some_and(|a| gpa.wrapping_sub(base) < LAPIC_SIZE && a.with(|l| l.mode()) == ApicMode::XApic)
}

/// A read of the xAPIC page at `offset` into `data`: each byte of a slot's first four is
/// that byte of its register, the other twelve read 0.
fn page_read(l: &mut Lapic, offset: u64, data: &mut [u8], now: u64) {
    for (k, byte) in data.iter_mut().enumerate() {
        let at = offset + k as u64;
        let in_register = (at % SLOT) as usize;
        *byte = if at >= LAPIC_SIZE || in_register >= REG_SIZE { 0 } else { l.read(at - at % SLOT, now).to_le_bytes()[in_register] };
    }
}

/// A write to the xAPIC page: only 4-byte writes at a slot's start reach a register.
fn page_write(l: &mut Lapic, offset: u64, data: &[u8], now: u64) -> LapicEffect {
    match <[u8; REG_SIZE]>::try_from(data) {
        Ok(bytes) if offset % SLOT == 0 && offset < LAPIC_SIZE => l.write(offset, u32::from_le_bytes(bytes), now),
        _ => LapicEffect::None,
    }
}

/// An NPF on the xAPIC page (`owns_gpa`): done in the module when vcpu/mmio.rs can decode
/// the instruction, else `None` (userspace gets the MMIO exit and forwards it).
pub(super) fn npf(vm: &Vm, v: &mut VcpuState, gpa: u64) -> Option<Next> {
    let apic = v.kapic.clone()?;
    let mut effect = LapicEffect::None;
    let mut wrote = false;
    let mut slot = None;
    let now = now_ns();
    let base = page_base(v);
    let done = mmio::emulate(vm, v, gpa, |gpa, access| {
        let offset = gpa.wrapping_sub(base);
        slot = Some(page_slot(offset));
        apic.with(|l| match access {
            mmio::Access::Read(data) => page_read(l, offset, data, now),
            mmio::Access::Write(data) => {
                wrote = true;
                effect = page_write(l, offset, data, now);
            }
        });
        true
    });
    match done {
        mmio::Emulated::NotHandled => None,
        mmio::Emulated::Done => {
            if wrote {
                if matches!(effect, LapicEffect::None) {
                    v.apic.stats.writes += 1;
                }
            } else {
                v.apic.stats.reads += 1;
            }
            if let Some(slot) = slot {
                count_register(v, slot);
            }
            let eoi = apply(vm, v, effect);
            Some(eoi_exit(v, eoi))
        }
    }
}

/// `APIC_ACCESS`: an xAPIC page access userspace got as an MMIO exit (outside xAPIC mode
/// the page is not the APIC: reads give all ones, writes go nowhere). A write's `value`
/// comes back as 0x100 | vector when it ended a level-triggered vector (userspace's I/O
/// APIC must hear that EOI), else 0.
pub(super) fn forwarded(vm: &Vm, v: &mut VcpuState, a: &mut abi::ApicAccess) -> Result {
    let apic = v.kapic.clone().ok_or(ENXIO)?;
    let size = a.size as usize;
    if !matches!(size, 1 | 2 | 4 | 8) || u64::from(a.offset) >= LAPIC_SIZE {
        return Err(EINVAL);
    }
    v.apic.stats.forwarded += 1;
    let offset = u64::from(a.offset);
    count_register(v, page_slot(offset));
    let now = now_ns();
    if a.is_write == 0 {
        // Outside xAPIC mode nothing answers at the page: all ones, as an unclaimed address.
        let mut data = [0xffu8; 8];
        apic.with(|l| if l.mode() == ApicMode::XApic { page_read(l, offset, &mut data[..size], now) });
        a.value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        return Ok(());
    }
    let bytes = u64::from(a.value).to_le_bytes();
    let effect = apic.with(|l| if l.mode() == ApicMode::XApic { page_write(l, offset, &bytes[..size], now) } else { LapicEffect::None });
    a.value = apply(vm, v, effect).map_or(0, |vector| 0x100 | u32::from(vector));
    Ok(())
}
