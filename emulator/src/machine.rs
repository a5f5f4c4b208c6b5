//! A machine: guest RAM, one vCPU, the device bus, and the loop that handles the exits the
//! module returns.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::bus::{Bus, Effect};
use crate::disk::{Backing, Disk};
use crate::events::{Event, Events, HostTimer};
use crate::hypervisor::{self, Exit};
use crate::insn::{self, Access, Source};
use crate::kernel::{BootImage, KernelEntry};
use crate::loader::{self, LoadError};
use crate::pc::board::Board;
use crate::pc::console::{Escape, Key};
use crate::pc::pit::IrqTimer;
use crate::steptrace::StepTrace;
use crate::{boot, layout, mmu, sys};
use yakvm_abi as abi;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HLT (seed: status 0) or a write to the exit port (its value).
    Exit(u8),
    /// A signal interrupted RUN (SIGINT or SIGTERM: its number).
    Interrupted(i32),
    /// pc: the guest halted with interrupts disabled; nothing can wake it (a power-off).
    Halted,
    /// pc: the guest reset the machine (i8042 reset line): a reboot, which ends the run.
    Reset,
    /// pc: the user typed Ctrl-A X at the console.
    Quit,
    /// A debugger's stop (gdb.rs): the hypervisor's DEBUG exit, or `None` when the
    /// debugger asked for the stop (`Machine::set_stop_request`).
    Debug(Option<abi::DebugExit>),
}

/// The board a guest runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MachineKind {
    /// The seed machine: port 0x10 serial, DMA disk at 0x20-0x22, exit port, MMIO window;
    /// HLT ends the run.
    #[default]
    Seed,
    /// A PC: 8259A PICs, 8254 PIT, 16550A UART console, CMOS RTC, i8042 reset; HLT waits
    /// for an interrupt.
    Pc,
}

/// The fastest timer interrupt rate yakvm delivers (KVM's PIT has the same floor): a
/// guest that programs the PIT faster gets its ticks merged.
pub const MIN_TIMER_PERIOD: Duration = Duration::from_micros(200);
/// Console output without a newline (a prompt) waits at most this long for more.
const CONSOLE_FLUSH_DELAY: Duration = Duration::from_millis(20);
/// How long a halted guest's wait lasts before the stop signals are checked again.
const HALT_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Insn(#[from] insn::InsnError),
    #[error("guest image of {size} bytes does not fit below the boot area ({room} bytes with --mem {mem})")]
    TooBig { size: usize, room: u64, mem: u64 },
    #[error("--mem {0}: guest RAM must be a multiple of 4 KiB between 128 KiB and 4 GiB")]
    BadMemSize(u64),
    #[error("--mmio-base {base:#x}: the MMIO window must be 4 KiB aligned, above RAM (which ends at {ram:#x}) and below {max:#x}")]
    BadMmioBase { base: u64, ram: u64, max: u64 },
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
    #[error("guest shut down (triple fault){}", .0.map(|rip| format!(" at rip {rip:#x}")).unwrap_or_default())]
    Shutdown(Option<u64>),
    #[error("VMRUN refused the guest state (VMEXIT_INVALID, reason {reason:#x}) at rip {rip:#x}")]
    FailEntry { rip: u64, reason: u64 },
    #[error("unhandled exit {code:#x} at rip {rip:#x} (exit_info_1 {info1:#x}, exit_info_2 {info2:#x})")]
    Unhandled { code: u64, rip: u64, info1: u64, info2: u64 },
    #[error("MMIO at {gpa:#x}: cannot fetch the instruction at rip {rip:#x} (not mapped in guest RAM)")]
    Fetch { gpa: u64, rip: u64 },
    #[error("{0}")]
    UnknownExit(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the guest's bytes at {start:#x}..{end:#x} do not fit in guest RAM below the boot area ({limit:#x} with --mem {mem})")]
    DoesNotFit { start: u64, end: u64, limit: u64, mem: u64 },
    #[error("--entry real needs a load address below 1 MiB, 16-byte aligned, with its 64 KiB segment in RAM below the boot area (got {0:#x})")]
    RealModeBase(u64),
    #[error("the entry point {entry:#x} is outside the real-mode code segment at {base:#x}")]
    RealModeEntry { entry: u64, base: u64 },
    #[error("the guest waits for an interrupt (HLT at rip {0:#x}) that nothing can send: no timer is running and the console's input has ended")]
    WaitsForever(u64),
}

/// Hypercalls the emulator answers (VMMCALL with the number in RAX).
pub mod hypercall {
    /// Returns the sum of the four arguments (a test of the path).
    pub const ADD: u64 = 1;
    /// What unknown hypercalls return.
    pub const UNKNOWN: u64 = u64::MAX;
}

/// The CPU mode the guest starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EntryMode {
    /// 16-bit real mode, segments based at the load address, IP 0.
    Real,
    /// 32-bit protected mode, flat segments, paging off.
    Protected,
    /// 64-bit long mode, identity-mapped paging.
    Long,
}

#[derive(Clone)]
pub struct Config {
    pub mem: u64,
    pub mmio_base: Option<u64>,
    /// `None`: long, or protected for a 32-bit ELF file.
    pub entry: Option<EntryMode>,
    pub load_addr: u64,
    /// One line per exit on stderr.
    pub trace: bool,
    pub machine: MachineKind,
    /// pc: the console's input is a terminal (Ctrl-A commands are read from it).
    pub console_is_terminal: bool,
    /// The hypervisor that runs the guest.
    pub hypervisor: hypervisor::Kind,
    /// yakvm's device (`--device`).
    pub device: String,
    /// Coalesce the writes to the serial port (off with `--trace`, which shows every
    /// exit).
    pub coalesced_io: bool,
}

/// Where the time went, for `--stats`.
#[derive(Default, Debug, Clone, Copy)]
pub struct Times {
    /// Inside RUN: the guest and the module.
    pub guest: Duration,
    /// Outside RUN: the emulator handling exits (including `halted`).
    pub emulator: Duration,
    /// pc: waiting for an interrupt while the guest is halted (HLT with IF set).
    pub halted: Duration,
}

/// Exits that reached the emulator, by kind (both hypervisors; yakvm's module counts
/// the ones it handles itself too, see `stats`).
#[derive(Default, Debug, Clone, Copy)]
pub struct ExitCounts {
    pub io: u64,
    pub mmio: u64,
    pub hlt: u64,
    pub irq_window: u64,
    pub hypercall: u64,
    pub other: u64,
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.io + self.mmio + self.hlt + self.irq_window + self.hypercall + self.other
    }

    fn count(&mut self, exit: &Exit<'_>) {
        let n = match exit {
            Exit::Io { .. } => &mut self.io,
            Exit::MmioInstruction { .. } | Exit::Mmio { .. } => &mut self.mmio,
            Exit::Hlt => &mut self.hlt,
            Exit::IrqWindowOpen => &mut self.irq_window,
            Exit::Hypercall(_) => &mut self.hypercall,
            _ => &mut self.other,
        };
        *n += 1;
    }
}

pub struct Machine<W: Write, B: Backing> {
    // Field order is drop order: the vCPU and the VM go before the RAM they use.
    vcpu: Box<dyn hypervisor::Vcpu>,
    _vm: hypervisor::VmHandle,
    mem: sys::GuestMemory,
    pub bus: Bus<W, B>,
    trace: bool,
    pub times: Times,
    pub exits: ExitCounts,
    /// The pc machine's outside world.
    pc: Option<PcWorld>,
    /// `--step-trace`: every guest instruction (steptrace.rs).
    step_trace: Option<StepTrace>,
    /// A debugger's request to stop the guest (set by its thread, which then kicks us).
    stop_request: Option<Arc<AtomicBool>>,
}

/// What the pc machine needs beyond its devices: the host timer behind the PIT, the
/// event thread, the console's escape keys.
struct PcWorld {
    timer: HostTimer,
    events: Events,
    /// Ctrl-A commands, when the console is a terminal.
    escape: Option<Escape>,
    /// Standard input has not ended.
    input_open: bool,
    /// The host timer is armed.
    timer_armed: bool,
    warned_fast_timer: bool,
}

impl<W: Write, B: Backing> Machine<W, B> {
    /// Builds a machine running `image` (flat or ELF) with the given disk.
    pub fn new(config: &Config, image: &[u8], out: W, disk: B) -> Result<Self, Error> {
        let ram = config.mem;
        let mmio_top = check_layout(config)?;
        let image = loader::parse(image, config.load_addr)?;
        let limit = layout::boot_area(ram);
        for seg in &image.segments {
            let end = seg.gpa.checked_add(seg.mem_size).filter(|&e| e <= limit);
            if end.is_none() {
                let end = seg.gpa.saturating_add(seg.mem_size);
                return Err(Error::DoesNotFit { start: seg.gpa, end, limit, mem: ram });
            }
        }
        let mode = config.entry.unwrap_or(if image.elf_bits == Some(32) { EntryMode::Protected } else { EntryMode::Long });
        let base = config.load_addr;
        if mode == EntryMode::Real {
            if base % 16 != 0 || base >= 1 << 20 || base + 0x1_0000 > limit {
                return Err(Error::RealModeBase(base));
            }
            if !(base..base + 0x1_0000).contains(&image.entry) {
                return Err(Error::RealModeEntry { entry: image.entry, base });
            }
        }
        Self::build(config, out, disk, |mem| {
            for seg in &image.segments {
                mem.write(seg.gpa, seg.bytes).expect("checked to fit");
            }
            match mode {
                EntryMode::Long => boot::long_mode(mem, image.entry, mmio_top).expect("checked to fit"),
                EntryMode::Protected => boot::protected_mode(mem, image.entry).expect("boot area in RAM"),
                EntryMode::Real => boot::real_mode(base, image.entry),
            }
        })
    }

    /// A machine that boots a kernel (`kernel::linux` or `kernel::multiboot` made
    /// `image`, checked to fit in `config.mem`).
    pub fn with_kernel(config: &Config, image: &BootImage, out: W, disk: B) -> Result<Self, Error> {
        let mmio_top = check_layout(config)?;
        let limit = layout::boot_area(config.mem);
        for (at, bytes) in &image.writes {
            let end = at.saturating_add(bytes.len() as u64);
            if end > limit {
                return Err(Error::DoesNotFit { start: *at, end, limit, mem: config.mem });
            }
        }
        Self::build(config, out, disk, |mem| {
            for (at, bytes) in &image.writes {
                mem.write(*at, bytes).expect("checked to fit");
            }
            match image.entry {
                KernelEntry::Long64 { rip, rsi } => boot::linux_long_mode(mem, rip, rsi, mmio_top).expect("checked to fit"),
                KernelEntry::Protected32 { eip, eax, ebx } => {
                    let (regs, sregs) = boot::protected_mode(mem, eip.into()).expect("boot area in RAM");
                    (abi::Regs { rax: eax.into(), rbx: ebx.into(), ..regs }, sregs)
                }
            }
        })
    }

    /// The VM, its RAM (filled in by `place`, which returns the vCPU's first state), the
    /// vCPU and the board.
    fn build(
        config: &Config,
        out: W,
        disk: B,
        place: impl FnOnce(&sys::GuestMemory) -> (abi::Regs, abi::Sregs),
    ) -> Result<Self, Error> {
        let ram = config.mem;
        let mmio_base = config.mmio_base.unwrap_or_else(|| layout::default_mmio_base(ram));
        let mem = sys::GuestMemory::new(ram as usize)?;
        // Registers whose writes need no answer at once: the serial port's bytes. (Not the
        // disk's sector and address registers: their 4-byte writes cover the next ports,
        // the command's among them, and coalesced zones are byte ranges, as KVM's are.)
        let zones = [(crate::bus::SERIAL_PORT, 1)];
        let coalesced: &[(u16, u16)] = if config.coalesced_io && !config.trace { &zones } else { &[] };
        let (vm, vcpus) = hypervisor::create(config.hypervisor, &config.device, &mem, coalesced, 1, false)?;
        let mut vcpu = vcpus.into_iter().next().expect("create makes the vCPUs asked for");
        let (regs, sregs) = place(&mem);
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(&regs)?;
        let (bus, pc) = match config.machine {
            MachineKind::Seed => (Bus::new(out, Disk::new(disk), mmio_base), None),
            MachineKind::Pc => {
                let timer = HostTimer::new()?;
                // The console's input: standard input, read by the event thread.
                let input = std::io::stdin().as_fd().try_clone_to_owned()?;
                let events = Events::start(timer.clone(), Some(input), vcpu.kickable()?)?;
                let escape = config.console_is_terminal.then(Escape::new);
                let world = PcWorld { timer, events, escape, input_open: true, timer_armed: false, warned_fast_timer: false };
                (Bus::with_board(out, Disk::new(disk), mmio_base, Board::new(ram)), Some(world))
            }
        };
        Ok(Self { _vm: vm, mem, vcpu, bus, trace: config.trace, times: Times::default(), exits: ExitCounts::default(), pc, step_trace: None, stop_request: None })
    }

    // --- Hooks for debuggers (gdb.rs, steptrace.rs) ---

    /// Single-steps the guest from now on, writing one line per instruction to `out`.
    pub fn set_step_trace(&mut self, out: Box<dyn Write + Send>) -> io::Result<()> {
        self.vcpu.set_guest_debug(StepTrace::CONTROL)?;
        self.step_trace = Some(StepTrace::new(out));
        Ok(())
    }

    /// Instructions step-traced so far.
    pub fn steps_traced(&self) -> u64 {
        self.step_trace.as_ref().map_or(0, |t| t.steps)
    }

    /// `run` returns `Outcome::Debug(None)` once `flag` is set (and the vCPU kicked).
    pub fn set_stop_request(&mut self, flag: Arc<AtomicBool>) {
        self.stop_request = Some(flag);
    }

    pub fn vcpu(&mut self) -> &mut dyn hypervisor::Vcpu {
        &mut *self.vcpu
    }

    pub fn memory(&self) -> &sys::GuestMemory {
        &self.mem
    }

    pub fn vcpu_and_memory(&mut self) -> (&mut dyn hypervisor::Vcpu, &sys::GuestMemory) {
        (&mut *self.vcpu, &self.mem)
    }

    /// Flushes the output and puts the disk's writes on stable storage: call it however
    /// the run ended.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(t) = self.step_trace.as_mut() {
            t.finish()?;
        }
        let flushed = self.bus.output().flush();
        self.bus.disk.sync()?;
        flushed
    }

    /// Runs until the guest ends the run, a signal arrives, or something fails.
    pub fn run(&mut self) -> Result<Outcome, Error> {
        let mut mark = Instant::now();
        loop {
            // A stop signal may have come before the first entry (while loading).
            if let Some(signal) = sys::stop_signal() {
                return Ok(Outcome::Interrupted(signal));
            }
            if self.pc.is_some() || self.stop_request.is_some() {
                // Clear the kick first: a kick from here on makes RUN return at once.
                self.vcpu.clear_kick();
            }
            if self.stop_request.as_ref().is_some_and(|f| f.swap(false, Ordering::SeqCst)) {
                return Ok(Outcome::Debug(None));
            }
            if self.pc.is_some() {
                if let Some(outcome) = self.pc_events()? {
                    return Ok(outcome);
                }
                self.deliver_interrupts()?;
            }
            if let Some(t) = self.step_trace.as_mut() {
                t.before_run(&*self.vcpu, &self.mem)?;
            }
            let ran = self.vcpu.run();
            let now = Instant::now();
            self.times.guest += now - mark;
            mark = now;
            let ran = ran?;
            // Writes the hypervisor held back happened before this exit (or this stop).
            let coalesced = self.apply_coalesced();
            if let Some(signal) = sys::stop_signal() {
                return Ok(Outcome::Interrupted(signal));
            }
            if let Some(outcome) = coalesced? {
                return Ok(outcome);
            }
            if !ran {
                continue; // a kick or another signal: run on
            }
            if self.trace {
                self.trace_exit();
            }
            if self.step_trace.is_some() {
                let if_flag = self.vcpu.if_flag();
                let exit = self.vcpu.exit();
                let (debug, what) = match exit {
                    Exit::Debug(d) => (Some(d), String::new()),
                    other => (None, describe_exit(&other, if_flag)),
                };
                if let Some(t) = self.step_trace.as_mut() {
                    t.after_exit(debug, what)?;
                }
            }
            let result = self.handle();
            let now = Instant::now();
            self.times.emulator += now - mark;
            mark = now;
            if let Some(outcome) = result? {
                return Ok(outcome);
            }
        }
    }

    /// Applies the port writes the hypervisor coalesced, in order. `Some` if one of them
    /// ended the run.
    fn apply_coalesced(&mut self) -> Result<Option<Outcome>, Error> {
        let Self { vcpu, bus, mem, .. } = self;
        let mut result = Ok(Effect::Continue);
        vcpu.drain_coalesced(&mut |port, data| {
            if matches!(result, Ok(Effect::Continue)) {
                result = bus.write(port, data, &*mem);
            }
        });
        Ok(match result? {
            Effect::Continue => None,
            Effect::Exit(status) => Some(Outcome::Exit(status)),
            Effect::Reset => Some(Outcome::Reset),
        })
    }

    /// pc: what the event thread saw (timer expiries, console input), and the host timer
    /// following the PIT. `Some` when the user asked to quit.
    fn pc_events(&mut self) -> Result<Option<Outcome>, Error> {
        self.bus.flush_stale(CONSOLE_FLUSH_DELAY)?;
        let (Some(pc), Some(board)) = (self.pc.as_mut(), self.bus.board.as_mut()) else {
            return Ok(None);
        };
        while let Some(event) = pc.events.try_next() {
            if let Some(outcome) = pc.handle_event(event, board) {
                return Ok(Some(outcome));
            }
        }
        pc.events.set_backlog(board.input_backlog());
        if let Some(timer) = board.timer_update() {
            pc.arm(timer, board.now_ns())?;
        }
        Ok(None)
    }

    /// pc: the PIC's request goes to the CPU when it can take it (the module delivers
    /// it); until then the module is asked to report the interrupt window.
    fn deliver_interrupts(&mut self) -> Result<(), Error> {
        let Some(board) = self.bus.board.as_mut() else {
            return Ok(());
        };
        let ready = self.vcpu.ready_for_interrupt();
        if board.pic.has_interrupt() && ready {
            if let Some(vector) = board.acknowledge() {
                if self.trace {
                    eprintln!("[trace] interrupt vector={vector:#x}");
                }
                self.vcpu.interrupt(vector)?;
            }
        }
        // More to deliver (or the CPU was not ready): come back when it can take one.
        let waiting = board.pic.has_interrupt();
        self.vcpu.request_interrupt_window(waiting);
        Ok(())
    }

    /// pc: HLT with interrupts enabled: waits, without spinning, for an event that makes
    /// the PIC request an interrupt (or for the user or a signal to end the run).
    fn wait_for_interrupt(&mut self) -> Result<Option<Outcome>, Error> {
        // The guest idles: what it printed is all there is for now.
        self.bus.flush_stale(Duration::ZERO)?;
        let start = Instant::now();
        let woken = self.wait_for_event();
        self.times.halted += start.elapsed();
        woken
    }

    fn wait_for_event(&mut self) -> Result<Option<Outcome>, Error> {
        loop {
            if let Some(signal) = sys::stop_signal() {
                return Ok(Some(Outcome::Interrupted(signal)));
            }
            if let Some(outcome) = self.pc_events()? {
                return Ok(Some(outcome));
            }
            let (Some(pc), Some(board)) = (self.pc.as_mut(), self.bus.board.as_mut()) else {
                return Ok(None);
            };
            if board.pic.has_interrupt() {
                return Ok(None);
            }
            if !pc.timer_armed && !pc.input_open {
                return Err(Error::WaitsForever(self.vcpu.regs().map_or(0, |r| r.rip)));
            }
            if let Some(event) = pc.events.wait(HALT_POLL) {
                if let Some(outcome) = pc.handle_event(event, board) {
                    return Ok(Some(outcome));
                }
                pc.events.set_backlog(board.input_backlog());
            }
        }
    }

    /// One exit: what the emulator does about it. (The exit's data is read in place:
    /// exits are the hot path.) `None`: the guest runs on; `Some`: the run ends so.
    fn handle(&mut self) -> Result<Option<Outcome>, Error> {
        let if_flag = self.vcpu.if_flag();
        let Self { vcpu, bus, mem, pc, trace, exits, .. } = self;
        let exit = vcpu.exit();
        exits.count(&exit);
        let effect = match exit {
            Exit::Io { port, size, out, data } => port_io(bus, mem, port, size, out, data)?,
            Exit::MmioInstruction { gpa, insn } => {
                let mut bytes = [0u8; 15];
                bytes[..insn.len()].copy_from_slice(insn);
                let n = insn.len();
                self.mmio(gpa, &bytes[..n])?
            }
            Exit::Mmio { gpa, write, data } => {
                if *trace {
                    let dir = if write { "write" } else { "read" };
                    eprintln!("[trace] mmio {dir} gpa={gpa:#x} size={}", data.len());
                }
                if write {
                    bus.mmio_write(gpa, data, &*mem)?
                } else {
                    bus.mmio_read(gpa, data);
                    Effect::Continue
                }
            }
            Exit::Hypercall(h) => {
                h.ret = match h.nr {
                    hypercall::ADD => h.args.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
                    _ => hypercall::UNKNOWN,
                };
                Effect::Continue
            }
            // seed: HLT ends the run. pc: it waits for an interrupt, unless none can come.
            Exit::Hlt if pc.is_none() => Effect::Exit(0),
            Exit::Hlt if !if_flag => return Ok(Some(Outcome::Halted)),
            Exit::Hlt => return self.wait_for_interrupt(),
            // The loop delivers what the PIC has.
            Exit::IrqWindowOpen => Effect::Continue,
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
        Ok(match effect {
            Effect::Continue => None,
            Effect::Exit(status) => Some(Outcome::Exit(status)),
            Effect::Reset => Some(Outcome::Reset),
        })
    }

    /// The guest's RIP, for messages (`u64::MAX` if it cannot be read).
    fn rip(&self) -> u64 {
        self.vcpu.regs().map_or(u64::MAX, |r| r.rip)
    }

    /// `--trace`: one line per exit that reaches userspace (the hypervisor handles CPUID,
    /// MSRs and interrupts itself; `--stats` counts those on yakvm). MMIO exits are traced
    /// with the decoded access.
    fn trace_exit(&mut self) {
        let rip = self.rip();
        let if_flag = self.vcpu.if_flag();
        let exit = self.vcpu.exit();
        // Traced once the access is decoded.
        if let Exit::MmioInstruction { .. } | Exit::Mmio { .. } = exit {
            return;
        }
        eprintln!("[trace] rip={rip:#x} {}", describe_exit(&exit, if_flag));
    }

    /// yakvm: emulates the instruction that touched guest-physical `gpa` outside RAM
    /// (`insn`: its bytes if the CPU gave them).
    fn mmio(&mut self, gpa: u64, insn_bytes: &[u8]) -> Result<Effect, Error> {
        let mut regs = self.vcpu.regs()?;
        let sregs = self.vcpu.sregs()?;
        let mut bytes = [0u8; 15];
        let n = if !insn_bytes.is_empty() {
            bytes[..insn_bytes.len()].copy_from_slice(insn_bytes);
            insn_bytes.len()
        } else {
            mmu::read_virt(&self.mem, &sregs, sregs.cs.base.wrapping_add(regs.rip), &mut bytes)
        };
        if n == 0 {
            return Err(Error::Fetch { gpa, rip: regs.rip });
        }
        let bitness = match (sregs.cs.attrib >> 9 & 1, sregs.cs.attrib >> 10 & 1) {
            (1, _) => 64,
            (_, 1) => 32,
            _ => 16,
        };
        let insn = insn::decode(&bytes[..n], bitness, regs.rip)?;
        let mut effect = Effect::Continue;
        match insn.access {
            Access::Write { size, source } => {
                let value = match source {
                    Source::Immediate(v) => v,
                    Source::Register(r) => insn::read_register(&regs, r).unwrap_or(0),
                };
                if self.trace {
                    eprintln!("[trace] rip={:#x} mmio write gpa={gpa:#x} size={size} value={value:#x}", regs.rip);
                }
                effect = self.bus.mmio_write(gpa, &value.to_le_bytes()[..size], &self.mem)?;
            }
            Access::Read { size, dest, extend } => {
                let mut data = [0u8; 8];
                self.bus.mmio_read(gpa, &mut data[..size]);
                let value = insn::loaded_value(u64::from_le_bytes(data), size, extend);
                if self.trace {
                    eprintln!("[trace] rip={:#x} mmio read gpa={gpa:#x} size={size} value={value:#x} into {dest:?}", regs.rip);
                }
                insn::write_register(&mut regs, dest, value);
            }
        }
        regs.rip += insn.len;
        self.vcpu.set_regs(&regs)?;
        Ok(effect)
    }

    /// The hypervisor's exit counters (yakvm only).
    pub fn stats(&self) -> Option<abi::ExitStats> {
        self.vcpu.stats()
    }

    /// KVM's own counters by name (KVM only).
    pub fn kvm_stats(&self) -> Vec<(String, u64)> {
        self.vcpu.kvm_stats()
    }

    /// The guest's MSR accesses (yakvm only).
    pub fn msr_stats(&self) -> Option<abi::MsrStats> {
        self.vcpu.msr_stats()
    }
}

/// One exit, as `--trace` and `--step-trace` show it.
fn describe_exit(exit: &Exit<'_>, if_flag: bool) -> String {
    match exit {
        &Exit::Io { port, size, out, ref data } => {
            let dir = if out { "out" } else { "in" };
            let hex: String = data[..data.len().min(16)].iter().map(|b| format!("{b:02x}")).collect();
            let more = if data.len() > 16 { "..." } else { "" };
            let count = data.len() / usize::from(size.max(1));
            let shown = if out { format!(" data={hex}{more}") } else { String::new() };
            format!("io {dir} port={port:#x} size={size} count={count}{shown}")
        }
        Exit::MmioInstruction { gpa, .. } => format!("mmio gpa={gpa:#x}"),
        Exit::Mmio { gpa, write, data } => format!("mmio {} gpa={gpa:#x} size={}", if *write { "write" } else { "read" }, data.len()),
        Exit::Hypercall(h) => format!("hypercall nr={:#x} args={:x?}", h.nr, h.args),
        Exit::Hlt if if_flag => "hlt (interrupts enabled)".into(),
        Exit::Hlt => "hlt".into(),
        Exit::IrqWindowOpen => "irq-window-open".into(),
        Exit::Shutdown { .. } => "shutdown".into(),
        &Exit::FailEntry { reason } => format!("fail-entry reason={reason:#x}"),
        Exit::Unhandled(hw) => format!("exit {:#x} info1={:#x} info2={:#x}", hw.exit_code, hw.exit_info_1, hw.exit_info_2),
        Exit::Other(what) => what.clone(),
        Exit::Debug(d) => format!("debug exception={} pc={:#x} dr6={:#x}", d.exception, d.pc, d.dr6),
    }
}

/// Port I/O of `size`-byte elements: OUT's bytes go to the bus in order (stopping at the
/// first that ends the run), IN's are read from it.
fn port_io<W: Write, B: Backing>(bus: &mut Bus<W, B>, mem: &sys::GuestMemory, port: u16, size: u8, out: bool, data: &mut [u8]) -> Result<Effect, Error> {
    let size = usize::from(size.max(1));
    if out {
        for chunk in data.chunks(size) {
            let effect = bus.write(port, chunk, mem)?;
            if effect != Effect::Continue {
                return Ok(effect);
            }
        }
    } else {
        for chunk in data.chunks_mut(size) {
            bus.read(port, chunk);
        }
    }
    Ok(Effect::Continue)
}

/// Checks `--mem` and `--mmio-base`; returns the end of the MMIO window.
fn check_layout(config: &Config) -> Result<u64, Error> {
    let ram = config.mem;
    if ram % 4096 != 0 || !(layout::MIN_RAM..=layout::MAX_RAM).contains(&ram) {
        return Err(Error::BadMemSize(ram));
    }
    let mmio_base = config.mmio_base.unwrap_or_else(|| layout::default_mmio_base(ram));
    let mmio_top = mmio_base.checked_add(crate::bus::MMIO_PORTS * crate::bus::MMIO_STRIDE);
    match mmio_top {
        Some(top) if mmio_base % 4096 == 0 && mmio_base >= ram && top <= layout::MAX_IDENTITY_MAP => Ok(top),
        _ => Err(Error::BadMmioBase { base: mmio_base, ram, max: layout::MAX_IDENTITY_MAP }),
    }
}

impl PcWorld {
    /// One event of the event thread; `Some` when it ends the run.
    fn handle_event(&mut self, event: Event, board: &mut Board) -> Option<Outcome> {
        match event {
            Event::Timer => {
                board.timer_tick();
                // A one-shot count that has run out wakes nobody any more.
                if board.pit.irq0_timer(board.now_ns()).is_none() {
                    self.timer_armed = false;
                }
            }
            Event::Input(bytes) => {
                let Some(escape) = self.escape.as_mut() else {
                    board.console_input(&bytes);
                    return None;
                };
                let mut to_guest = Vec::with_capacity(bytes.len());
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let (key, used) = escape.filter(rest, &mut to_guest);
                    rest = &rest[used..];
                    match key {
                        Some(Key::Quit) => return Some(Outcome::Quit),
                        Some(Key::Help) => eprint!("\r\n{}\r\n", crate::pc::console::HELP.replace('\n', "\r\n")),
                        _ => {}
                    }
                }
                board.console_input(&to_guest);
            }
            Event::InputClosed => self.input_open = false,
        }
        None
    }

    /// Arms the host timer for channel 0 as the PIT now has it.
    fn arm(&mut self, timer: Option<IrqTimer>, now_ns: u64) -> io::Result<()> {
        let Some(t) = timer else {
            self.timer_armed = false;
            return self.timer.arm(None, None);
        };
        let period = t.period_ns.map(Duration::from_nanos);
        if period.is_some_and(|p| p < MIN_TIMER_PERIOD) && !self.warned_fast_timer {
            self.warned_fast_timer = true;
            eprintln!(
                "yakvm: the guest runs the PIT at {:.0} Hz; timer interrupts are delivered at most every {} us (the others merge)",
                1e9 / t.period_ns.unwrap_or(1) as f64,
                MIN_TIMER_PERIOD.as_micros()
            );
        }
        self.timer_armed = true;
        let delay = Duration::from_nanos(t.next_ns.saturating_sub(now_ns));
        self.timer.arm(Some(delay), period.map(|p| p.max(MIN_TIMER_PERIOD)))
    }
}
