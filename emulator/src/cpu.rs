//! The vCPU threads of a running machine: each runs its vCPU, handles the exits it gets,
//! and takes its own interrupts, startup IPIs and NMIs. vCPU 0 runs on the calling thread.
//! No vCPU takes events for the others: the event thread raises the PIT's and the
//! console's lines itself (`events.rs`, `pc/world.rs`).
//!
//! Locks by concern: each device has its own (`bus.rs`), the interrupt controllers theirs
//! (`pc/board.rs`); a port or MMIO exit takes only the device's (and the controllers', if
//! it raises a line), so vCPUs reach different devices at once. The vCPUs' states and the
//! board's timers are behind one more lock, which a vCPU needs to enter the guest: it is
//! taken between two `RUN`s and at HLT, never around a device's access, so no device's
//! I/O (the console's output, the disk's file) holds up another vCPU's entry:
//!
//! ```text
//!  vCPU i:  lock { quit?, APIC timer, INIT/SIPI/NMI, interrupt } RUN
//!           coalesced writes, the exit (the device's lock; HLT: lock { state })
//!           wake the vCPUs that were sent something
//!  idle:    HLT, a stop (HLT with IF=0) or waiting for a startup IPI: sleeps on its
//!           doorbell (events::Waker) until someone sends it something
//! ```
//!
//! The run ends at the first vCPU that ends it (the exit port, a reset, a fault, a
//! signal), or when no vCPU can ever run again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::bus::{le, lock, Ctx, Effect};
use crate::devices::Devices;
use crate::events::{set_current_cpu, Waker};
use crate::hypervisor::{Exit, Vcpu};
use crate::board::Board;
use crate::pc::board::Interrupts;
use crate::pc::lapic::{LAPIC_BASE, LAPIC_SIZE};
use crate::run::{describe_exit, hypercall, Error, ExitCounts, Outcome, Times};
use crate::steptrace::StepTrace;
use crate::{boot, sys};

/// How long an idle vCPU sleeps before it looks at the stop signals again.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// What a vCPU is doing, as the other vCPUs see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuState {
    Running,
    /// HLT with interrupts enabled: waits for an interrupt.
    Halted,
    /// HLT with interrupts disabled: only an NMI or INIT can wake it.
    Stopped,
    /// After INIT (and from the start, for the APs): waits for a startup IPI.
    WaitForSipi,
}

/// One vCPU and what is counted for it.
pub struct Cpu {
    pub vcpu: Box<dyn Vcpu>,
    pub times: Times,
    pub exits: ExitCounts,
    /// Interrupts (and NMIs) the emulator queued for it.
    pub interrupts: u64,
    pub nmis: u64,
}

impl Cpu {
    pub fn new(vcpu: Box<dyn Vcpu>) -> Self {
        Self { vcpu, times: Times::default(), exits: ExitCounts::default(), interrupts: 0, nmis: 0 }
    }
}

/// What the vCPU threads share.
pub(crate) struct Shared<'m> {
    /// The buses (each device behind its own lock): outside `locked`.
    devices: &'m Devices,
    /// The interrupt controllers (behind their own lock), if the board has any.
    irqs: Option<Arc<Mutex<Interrupts>>>,
    /// HLT ends the run (the seed board).
    hlt_ends_run: bool,
    locked: Mutex<Locked<'m>>,
    mem: &'m sys::GuestMemory,
    wakers: &'m [Waker],
    /// The run has ended: every vCPU thread returns.
    done: AtomicBool,
    trace: bool,
    /// The local APICs are the kernel's (`--kernel-apic`: yakvm's module, or KVM's split
    /// irqchip).
    kernel_apic: bool,
}

/// The board's timers and events and the vCPUs' states, behind the lock.
pub(crate) struct Locked<'m> {
    board: &'m mut dyn Board,
    states: &'m mut [CpuState],
    /// How the run ended (the first vCPU to end it wins).
    outcome: Option<Result<Outcome, Error>>,
    /// The kernel's APICs (as `Shared::kernel_apic`).
    kernel_apic: bool,
}

impl<'m> Shared<'m> {
    pub fn new(devices: &'m Devices, board: &'m mut dyn Board, states: &'m mut [CpuState], mem: &'m sys::GuestMemory, wakers: &'m [Waker], trace: bool) -> Self {
        let (irqs, hlt_ends_run) = (board.interrupts(), board.hlt_ends_run());
        let kernel_apic = irqs.as_ref().is_some_and(|irqs| lock(irqs).apics.kernel());
        let locked = Locked { board, states, outcome: None, kernel_apic };
        Self { devices, irqs, hlt_ends_run, locked: Mutex::new(locked), mem, wakers, done: AtomicBool::new(false), trace, kernel_apic }
    }

    fn lock(&self) -> MutexGuard<'_, Locked<'m>> {
        self.locked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A vCPU thread ended with `result` (`Ok(None)`: because another one ended the
    /// run): the first real end is the run's; every vCPU is told.
    pub fn end(&self, result: Result<Option<Outcome>, Error>) {
        let mut locked = self.lock();
        let result = match result {
            Ok(None) => return,
            Ok(Some(outcome)) => Ok(outcome),
            Err(e) => Err(e),
        };
        locked.outcome.get_or_insert(result);
        self.done.store(true, Ordering::SeqCst);
        drop(locked);
        for waker in self.wakers {
            waker.wake();
        }
    }

    /// How the run ended.
    pub fn outcome(self) -> Result<Outcome, Error> {
        let locked = self.locked.into_inner().unwrap_or_else(PoisonError::into_inner);
        locked.outcome.unwrap_or(Ok(Outcome::Halted))
    }

    /// Wakes the vCPUs of `mask` but `me`.
    fn wake(&self, mask: u32, me: usize) {
        for (i, waker) in self.wakers.iter().enumerate() {
            if i != me && mask & (1 << i) != 0 {
                waker.wake();
            }
        }
    }
}

/// A vCPU thread's own things.
pub(crate) struct CpuLoop<'a> {
    pub index: usize,
    pub cpu: &'a mut Cpu,
    /// `--step-trace` (one vCPU only).
    pub step_trace: Option<&'a mut StepTrace>,
    /// A debugger's request to stop (one vCPU only).
    pub stop_request: Option<&'a AtomicBool>,
}

impl CpuLoop<'_> {
    /// Runs this vCPU until the run ends. `Ok(None)`: another vCPU ended it.
    pub fn run(&mut self, sh: &Shared<'_>) -> Result<Option<Outcome>, Error> {
        let waker = &sh.wakers[self.index];
        waker.set_kicker(Some(self.cpu.vcpu.kickable()?));
        set_current_cpu(Some(self.index));
        let result = self.run_loop(sh);
        set_current_cpu(None);
        waker.set_kicker(None);
        // With several vCPUs, an error says whose it is.
        result.map_err(|e| match e {
            e if sh.wakers.len() == 1 => e,
            e @ (Error::Stalled(_) | Error::WaitsForever(_)) => e,
            e => Error::OnCpu { cpu: self.index, source: Box::new(e) },
        })
    }

    fn run_loop(&mut self, sh: &Shared<'_>) -> Result<Option<Outcome>, Error> {
        let mut mark = Instant::now();
        loop {
            // A stop signal may have come before the first entry (while loading).
            if let Some(signal) = sys::stop_signal() {
                return Ok(Some(Outcome::Interrupted(signal)));
            }
            if sh.done.load(Ordering::SeqCst) {
                return Ok(None);
            }
            // Clear the kick first: a kick from here on makes RUN return at once.
            self.cpu.vcpu.clear_kick();
            if self.stop_request.is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
                return Ok(Some(Outcome::Debug(None)));
            }
            let running = {
                let mut l = sh.lock();
                if let Some(outcome) = self.between_runs(&mut l, sh)? {
                    return Ok(Some(outcome));
                }
                // With the kernel's APICs a vCPU waiting for a startup IPI, or halted with
                // interrupts enabled, waits in RUN, where the module wakes it (exits
                // APIC_SIPI, APIC_WAKE). KVM's split irqchip never reports INIT, SIPI nor
                // HLT: its APs stay `WaitForSipi` here and simply run (KVM_RUN waits for
                // their SIPI), and no vCPU is ever seen halted, so `stalled` never runs
                // there (a guest that ends in CLI; HLT runs until `--timeout`).
                let state = l.states[self.index];
                // Halted there with no APIC timer armed (the module reported the HLT):
                // the run ends if nothing else can wake any vCPU either (looked at again
                // after each kick, such as the console's input ending).
                if sh.kernel_apic && state == CpuState::Halted {
                    if let Some(end) = l.stalled(&*self.cpu.vcpu)? {
                        return Ok(Some(end));
                    }
                }
                state == CpuState::Running || (sh.kernel_apic && matches!(state, CpuState::WaitForSipi | CpuState::Halted))
            };
            if !running {
                let start = Instant::now();
                let idled = self.idle(sh);
                self.cpu.times.halted += start.elapsed();
                match idled? {
                    Some(end) => return Ok(end),
                    None => continue,
                }
            }
            if let Some(t) = self.step_trace.as_deref_mut() {
                t.before_run(&*self.cpu.vcpu, sh.mem)?;
            }
            // Time in RUN is the guest's (and the hypervisor's); the rest, idling
            // included, the emulator's.
            let entered = Instant::now();
            self.cpu.times.emulator += entered - mark;
            let ran = self.cpu.vcpu.run();
            mark = Instant::now();
            self.cpu.times.guest += mark - entered;
            let ran = ran?;
            // Writes the hypervisor held back happened before this exit (or this stop).
            let coalesced = self.apply_coalesced(sh);
            if let Some(signal) = sys::stop_signal() {
                return Ok(Some(Outcome::Interrupted(signal)));
            }
            if let Some(outcome) = coalesced? {
                return Ok(Some(outcome));
            }
            if !ran {
                continue; // a kick or another signal: run on
            }
            if sh.trace {
                self.trace_exit();
            }
            if self.step_trace.is_some() {
                let if_flag = self.cpu.vcpu.if_flag();
                let exit = self.cpu.vcpu.exit();
                let (debug, what) = match exit {
                    Exit::Debug(d) => (Some(d), String::new()),
                    other => (None, describe_exit(&other, if_flag)),
                };
                if let Some(t) = self.step_trace.as_deref_mut() {
                    t.after_exit(debug, what)?;
                }
            }
            let result = self.handle(sh);
            if let Some(irqs) = &sh.irqs {
                sh.wake(lock(irqs).take_wakes(), self.index);
            }
            if let Some(outcome) = result? {
                return Ok(Some(outcome));
            }
        }
    }

    /// Between two RUNs, with the lock: this vCPU sees whether the board's events end the
    /// run, and takes what was sent to it (INIT, a startup IPI, an NMI, an interrupt) and changes
    /// state accordingly. `Some` when the run ends.
    fn between_runs(&mut self, l: &mut Locked<'_>, sh: &Shared<'_>) -> Result<Option<Outcome>, Error> {
        let me = self.index;
        if let Some(outcome) = l.board.poll_events()? {
            return Ok(Some(outcome));
        }
        let Some(irqs) = &sh.irqs else {
            return Ok(None);
        };
        let now = l.board.now_ns();
        let mut irqs = lock(irqs);
        // The kernel's APICs: vCPU 0's LINT0 as the guest set it decides whether the PIC
        // reaches it.
        if sh.kernel_apic && me == 0 {
            if let Some(accepts) = self.cpu.vcpu.apic_accepts_pic() {
                irqs.set_kernel_lint0(accepts);
            }
        }
        let lapic = &mut irqs.apics.lapics[me];
        lapic.timer_expired(now);
        let deadline = lapic.timer_deadline();
        l.board.arm_apic_timer(me, deadline, now)?;
        let state = &mut l.states[me];
        let vcpu = &mut *self.cpu.vcpu;
        if lapic.take_init() {
            // INIT: the vCPU stops where it is and waits for a startup IPI.
            vcpu.request_interrupt_window(false);
            *state = CpuState::WaitForSipi;
        }
        if let Some(vector) = lapic.take_sipi() {
            if *state == CpuState::WaitForSipi {
                // Real mode at the vector's page: CS = vector << 8, IP = 0.
                let page = u64::from(vector) << 12;
                let (regs, sregs) = boot::real_mode(page, page);
                vcpu.set_sregs(&sregs)?;
                vcpu.set_regs(&regs)?;
                *state = CpuState::Running;
            }
        }
        if *state == CpuState::WaitForSipi {
            return Ok(None);
        }
        if lapic.take_nmi() {
            self.cpu.nmis += 1;
            match vcpu.nmi() {
                Ok(()) => {}
                // One is queued already: NMIs that meet merge, as on hardware. (The
                // errno is inside the error sys::ctx made: raw_os_error() is None.)
                Err(e) if crate::sys::errno_of(&e) == Some(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            *state = CpuState::Running;
        }
        if *state == CpuState::Halted && irqs.interrupt_pending(me) {
            *state = CpuState::Running;
        }
        if *state == CpuState::Running {
            // The interrupt goes to the CPU when it can take it (the hypervisor delivers
            // it); until then the hypervisor is asked to report the interrupt window.
            if irqs.interrupt_pending(me) && vcpu.ready_for_interrupt() {
                if let Some(vector) = irqs.acknowledge(me) {
                    if sh.trace {
                        eprintln!("[trace] {}interrupt vector={vector:#x}", cpu_name(me));
                    }
                    vcpu.interrupt(vector)?;
                    self.cpu.interrupts += 1;
                }
            }
            vcpu.request_interrupt_window(irqs.interrupt_pending(me));
        }
        sh.wake(irqs.take_wakes(), me);
        Ok(None)
    }

    /// Waits, without spinning, until this vCPU has something to do. `Some(end)` when the
    /// run ends (`end`: as `run` returns it).
    #[allow(clippy::type_complexity)]
    fn idle(&mut self, sh: &Shared<'_>) -> Result<Option<Option<Outcome>>, Error> {
        // Idle: wakers ring without kicking (events.rs, `Waker::wake`), until the vCPU
        // goes back to its loop, which looks at its interrupts again before `RUN`.
        let waker = &sh.wakers[self.index];
        waker.set_idle(true);
        let idled = self.idle_until_work(sh);
        waker.set_idle(false);
        idled
    }

    #[allow(clippy::type_complexity)]
    fn idle_until_work(&mut self, sh: &Shared<'_>) -> Result<Option<Option<Outcome>>, Error> {
        let waker = &sh.wakers[self.index];
        loop {
            let seen = waker.rings();
            if sh.done.load(Ordering::SeqCst) {
                return Ok(Some(None));
            }
            if let Some(signal) = sys::stop_signal() {
                return Ok(Some(Some(Outcome::Interrupted(signal))));
            }
            {
                let mut l = sh.lock();
                if let Some(outcome) = self.between_runs(&mut l, sh)? {
                    return Ok(Some(Some(outcome)));
                }
                if l.states[self.index] == CpuState::Running {
                    return Ok(None);
                }
                if let Some(end) = l.stalled(&*self.cpu.vcpu)? {
                    return Ok(Some(Some(end)));
                }
            }
            waker.wait(seen, IDLE_POLL);
        }
    }

    /// Applies the port writes the hypervisor coalesced, in order. `Some` if one of them
    /// ended the run.
    fn apply_coalesced(&mut self, sh: &Shared<'_>) -> Result<Option<Outcome>, Error> {
        let ports = &sh.devices.ports;
        let ctx = Ctx { mem: sh.mem, cpu: self.index };
        let mut result = Ok(Effect::Continue);
        self.cpu.vcpu.drain_coalesced(&mut |port, data| {
            if matches!(result, Ok(Effect::Continue)) {
                result = ports.write(port.into(), data, &ctx);
            }
        });
        Ok(outcome_of(result?))
    }

    /// One exit: what the emulator does about it. (The exit's data is read in place:
    /// exits are the hot path.) `None`: the guest runs on; `Some`: the run ends so.
    fn handle(&mut self, sh: &Shared<'_>) -> Result<Option<Outcome>, Error> {
        let me = self.index;
        let if_flag = self.cpu.vcpu.if_flag();
        let cpus = sh.wakers.len();
        // --trace shows where an MMIO access came from.
        let rip = if sh.trace { self.rip() } else { 0 };
        let mut mmio_done = false;
        let mut apic_access = None;
        let exit = self.cpu.vcpu.exit();
        self.cpu.exits.count(&exit);
        let effect = match exit {
            Exit::Io { port, size, out, data } => port_io(sh.devices, &Ctx { mem: sh.mem, cpu: me }, port, size, out, data)?,
            // The kernel's APIC page: its state is the module's (APIC_ACCESS).
            Exit::Mmio { gpa, write, data } if sh.kernel_apic && gpa.wrapping_sub(LAPIC_BASE) < LAPIC_SIZE => {
                let mut bytes = [0u8; 8];
                let len = data.len().min(8);
                bytes[..len].copy_from_slice(&data[..len]);
                apic_access = Some((gpa - LAPIC_BASE, write, bytes, len));
                Effect::Continue
            }
            Exit::Mmio { gpa, write, data } => {
                let ctx = Ctx { mem: sh.mem, cpu: me };
                let trace = |dir, data: &[u8]| eprintln!("[trace] {}rip={rip:#x} mmio {dir} gpa={gpa:#x} size={} value={:#x}", cpu_name(me), data.len(), le(data));
                mmio_done = true;
                if write {
                    if sh.trace {
                        trace("write", data);
                    }
                    sh.devices.mmio.write(gpa, data, &ctx)?
                } else {
                    sh.devices.mmio.read(gpa, data, &ctx);
                    if sh.trace {
                        trace("read", data);
                    }
                    Effect::Continue
                }
            }
            Exit::MmioFailed { error, .. } => return Err(Error::Mmio(error.to_string())),
            Exit::Hypercall(h) => {
                h.ret = match h.nr {
                    hypercall::ADD => h.args.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
                    _ => hypercall::UNKNOWN,
                };
                Effect::Continue
            }
            // seed: HLT ends the run. pc: it waits for an interrupt; with interrupts off
            // the vCPU stops (one vCPU: nothing can wake it, the run ends).
            Exit::Hlt if sh.hlt_ends_run => Effect::Exit(0),
            Exit::Hlt if !if_flag && cpus == 1 => return Ok(Some(Outcome::Halted)),
            Exit::Hlt => {
                // The kernel's APICs: the module reports a HLT with interrupts enabled
                // only when no APIC timer of the vCPU's will wake it (the loop then looks
                // whether anything else can, before it sleeps in RUN).
                sh.lock().states[me] = if if_flag { CpuState::Halted } else { CpuState::Stopped };
                Effect::Continue
            }
            // The loop delivers what the interrupt controllers have.
            Exit::IrqWindowOpen => Effect::Continue,
            // The kernel's APICs: the I/O APIC hears a level-triggered EOI (and may send
            // again); INIT and SIPI start the vCPU over (the module waits for the SIPI).
            Exit::IoapicEoi { vector } => {
                if let Some(irqs) = &sh.irqs {
                    lock(irqs).apics.eoi(me, vector, true);
                }
                Effect::Continue
            }
            // The reported HLT ended in the module: the vCPU runs.
            Exit::ApicWake => {
                sh.lock().states[me] = CpuState::Running;
                Effect::Continue
            }
            Exit::ApicInit => {
                self.cpu.vcpu.request_interrupt_window(false);
                sh.lock().states[me] = CpuState::WaitForSipi;
                Effect::Continue
            }
            Exit::ApicSipi { vector } => {
                // Real mode at the vector's page: CS = vector << 8, IP = 0.
                let page = u64::from(vector) << 12;
                let (regs, sregs) = boot::real_mode(page, page);
                self.cpu.vcpu.set_sregs(&sregs)?;
                self.cpu.vcpu.set_regs(&regs)?;
                sh.lock().states[me] = CpuState::Running;
                Effect::Continue
            }
            Exit::Shutdown { rip } => return Err(Error::Shutdown(rip)),
            Exit::FailEntry { reason } => return Err(Error::FailEntry { rip: self.rip(), reason }),
            Exit::Unhandled(hw) => {
                return Err(Error::Unhandled { code: hw.exit_code, rip: hw.rip, info1: hw.exit_info_1, info2: hw.exit_info_2 });
            }
            Exit::Other(what) => return Err(Error::UnknownExit(what)),
            // A step of --step-trace (written by it), or a debugger's stop.
            Exit::Debug(_) if self.step_trace.is_some() => Effect::Continue,
            Exit::Debug(d) => return Ok(Some(Outcome::Debug(Some(d)))),
        };
        if let Some((offset, write, mut bytes, len)) = apic_access {
            self.forward_apic_access(sh, offset, write, &mut bytes[..len])?;
            mmio_done = true;
        }
        if mmio_done {
            self.cpu.vcpu.complete_mmio()?;
        }
        Ok(outcome_of(effect))
    }

    /// An MMIO exit on the kernel APIC's page: done by the module (`APIC_ACCESS`), whose
    /// state it is; a read's bytes go back into the exit, an EOI of a level-triggered
    /// vector to the I/O APIC.
    fn forward_apic_access(&mut self, sh: &Shared<'_>, offset: u64, write: bool, bytes: &mut [u8]) -> Result<(), Error> {
        let eoi = self.cpu.vcpu.apic_access(offset, write, bytes)?;
        if !write {
            if let Exit::Mmio { data, .. } = self.cpu.vcpu.exit() {
                let n = data.len().min(bytes.len());
                data[..n].copy_from_slice(&bytes[..n]);
            }
        }
        if let (Some(vector), Some(irqs)) = (eoi, &sh.irqs) {
            lock(irqs).apics.eoi(self.index, vector, true);
        }
        Ok(())
    }

    /// The guest's RIP, for messages (`u64::MAX` if it cannot be read).
    fn rip(&self) -> u64 {
        self.cpu.vcpu.regs().map_or(u64::MAX, |r| r.rip)
    }

    /// `--trace`: one line per exit that reaches userspace (the hypervisor handles CPUID,
    /// MSRs and interrupts itself; `--stats` counts those on yakvm). MMIO exits are traced
    /// with the decoded access.
    fn trace_exit(&mut self) {
        let rip = self.rip();
        let if_flag = self.cpu.vcpu.if_flag();
        let exit = self.cpu.vcpu.exit();
        // Traced with the access's value when it is handled.
        if let Exit::Mmio { .. } = exit {
            return;
        }
        eprintln!("[trace] {}rip={rip:#x} {}", cpu_name(self.index), describe_exit(&exit, if_flag));
    }
}

/// How `--trace` names vCPU `i` (vCPU 0 goes unnamed, as when it was the only one).
fn cpu_name(i: usize) -> String {
    if i == 0 { String::new() } else { format!("cpu{i} ") }
}

/// Port I/O of `size`-byte elements: OUT's bytes go to the bus in order (stopping at the
/// first that ends the run), IN's are read from it.
fn port_io(devices: &Devices, ctx: &Ctx, port: u16, size: u8, out: bool, data: &mut [u8]) -> Result<Effect, Error> {
    let size = usize::from(size.max(1));
    if out {
        for chunk in data.chunks(size) {
            let effect = devices.ports.write(port.into(), chunk, ctx)?;
            if effect != Effect::Continue {
                return Ok(effect);
            }
        }
    } else {
        for chunk in data.chunks_mut(size) {
            devices.ports.read(port.into(), chunk, ctx);
        }
    }
    Ok(Effect::Continue)
}

fn outcome_of(effect: Effect) -> Option<Outcome> {
    match effect {
        Effect::Continue => None,
        Effect::Exit(status) => Some(Outcome::Exit(status)),
        Effect::Reset => Some(Outcome::Reset),
        Effect::PowerOff => Some(Outcome::PowerOff),
    }
}

impl Locked<'_> {
    /// Called by an idle vCPU: whether no vCPU can ever run again. vCPU 0 stopped (HLT
    /// with interrupts off) and the others stopped or never started (waiting for a
    /// startup IPI nobody can send now): the guest powered off. vCPU 0 waiting for a
    /// startup IPI (a guest sent it INIT) and nobody left to send one: an error saying so.
    /// Idle with nothing that can interrupt them (no timer armed, the console's input
    /// ended): an error too.
    fn stalled(&self, vcpu: &dyn Vcpu) -> Result<Option<Outcome>, Error> {
        let states = &*self.states;
        if states.iter().all(|&s| matches!(s, CpuState::Stopped | CpuState::WaitForSipi)) {
            if states[0] == CpuState::Stopped {
                return Ok(Some(Outcome::Halted));
            }
            let what: Vec<String> = states
                .iter()
                .enumerate()
                .map(|(i, s)| format!("vCPU {i} {}", if *s == CpuState::Stopped { "halted with interrupts off" } else { "waits for a startup IPI" }))
                .collect();
            return Err(Error::Stalled(what.join(", ")));
        }
        if states.contains(&CpuState::Running) {
            return Ok(None);
        }
        if self.board.idle_forever() {
            // The kernel's APICs: a halted vCPU woken in the module says so only once it
            // runs (exit APIC_WAKE); until then its APIC holds what woke it.
            if self.kernel_apic && vcpu.apic_events()? > 0 {
                return Ok(None);
            }
            return Err(Error::WaitsForever(vcpu.regs().map_or(0, |r| r.rip)));
        }
        Ok(None)
    }
}
