//! A machine: guest RAM, its vCPUs, the device bus; `run` runs each vCPU on a thread of
//! its own (`cpu.rs`: the loop that handles the exits the hypervisor returns).

use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::bus::{Bus, Effect};
use crate::cpu::{Cpu, CpuLoop, CpuState, Shared};
use crate::disk::{Backing, Disk};
use crate::events::{Event, Events, HostTimer, Waker};
use crate::hypervisor::{self, Exit};
use crate::insn;
use crate::kernel::{BootImage, KernelEntry};
use crate::loader::{self, LoadError};
use crate::pc::board::Board;
use crate::pc::console::{Escape, Key};
use crate::pc::mptable;
use crate::pc::pit::IrqTimer;
use crate::steptrace::StepTrace;
use crate::{boot, layout, sys};
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
/// guest that programs the PIT faster gets its ticks merged. The local APIC's timer has
/// the same floor (one number for both).
pub const MIN_TIMER_PERIOD: Duration = Duration::from_nanos(crate::pc::lapic::MIN_PERIODIC_NS);
/// Console output without a newline (a prompt) waits at most this long for more.
pub(crate) const CONSOLE_FLUSH_DELAY: Duration = Duration::from_millis(20);
/// The most vCPUs a machine has (`--smp`).
pub const MAX_CPUS: u32 = yakvm_abi::MAX_VCPUS;

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
    #[error("no vCPU can run again: {0}")]
    Stalled(String),
    #[error("--smp {0}: a machine has 1 to {max} vCPUs", max = MAX_CPUS)]
    BadCpus(u32),
    #[error("--smp {0}: several vCPUs need the pc machine (--machine pc), which has local APICs")]
    SmpNeedsPc(u32),
    #[error("cannot start a vCPU thread: {0}")]
    Thread(io::Error),
    /// An error on one vCPU of several.
    #[error("vCPU {cpu}: {source}")]
    OnCpu { cpu: usize, source: Box<Error> },
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
    /// vCPUs (`--smp`): 1 to `MAX_CPUS`; more than one needs the pc machine.
    pub cpus: u32,
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

impl std::ops::AddAssign for ExitCounts {
    fn add_assign(&mut self, o: Self) {
        self.io += o.io;
        self.mmio += o.mmio;
        self.hlt += o.hlt;
        self.irq_window += o.irq_window;
        self.hypercall += o.hypercall;
        self.other += o.other;
    }
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.io + self.mmio + self.hlt + self.irq_window + self.hypercall + self.other
    }

    pub(crate) fn count(&mut self, exit: &Exit<'_>) {
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
    // Field order is drop order: the vCPUs and the VM go before the RAM they use.
    /// The vCPUs; index = APIC id; 0 is the bootstrap processor.
    cpus: Vec<Cpu>,
    _vm: hypervisor::VmHandle,
    mem: sys::GuestMemory,
    pub bus: Bus<W, B>,
    trace: bool,
    /// What each vCPU is doing (kept from one `run` to the next).
    states: Vec<CpuState>,
    /// How other threads wake each vCPU.
    wakers: Arc<[Waker]>,
    /// The pc machine's outside world.
    pc: Option<PcWorld>,
    /// `--step-trace`: every guest instruction (steptrace.rs).
    step_trace: Option<StepTrace>,
    /// A debugger's request to stop the guest (set by its thread, which then kicks us).
    stop_request: Option<Arc<AtomicBool>>,
}

/// What the pc machine needs beyond its devices: the host timers behind the PIT and the
/// local APICs, the event thread, the console's escape keys.
pub(crate) struct PcWorld {
    timer: HostTimer,
    pub(crate) events: Events,
    /// One per local APIC, and the deadline (board clock, ns) each is armed for.
    apic_timers: Vec<(HostTimer, Option<u64>)>,
    /// Ctrl-A commands, when the console is a terminal.
    escape: Option<Escape>,
    /// Standard input has not ended.
    pub(crate) input_open: bool,
    /// The host timer is armed.
    pub(crate) timer_armed: bool,
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
        let n = config.cpus;
        if !(1..=MAX_CPUS).contains(&n) {
            return Err(Error::BadCpus(n));
        }
        let pc = config.machine == MachineKind::Pc;
        if n > 1 && !pc {
            return Err(Error::SmpNeedsPc(n));
        }
        // The pc machine has local APICs (the hypervisor's CPUID says so) and an MP table
        // (written first: a guest's own bytes win where they meet it).
        let (vm, vcpus) = hypervisor::create(config.hypervisor, &config.device, &mem, coalesced, n, pc)?;
        let table = mptable::mp_table(n);
        if pc && mptable::MP_TABLE_ADDR + table.len() as u64 <= layout::boot_area(ram) {
            mem.write(mptable::MP_TABLE_ADDR, &table).expect("checked to fit");
        }
        let mut cpus: Vec<Cpu> = vcpus.into_iter().map(Cpu::new).collect();
        let (regs, sregs) = place(&mem);
        cpus[0].vcpu.set_sregs(&sregs)?;
        cpus[0].vcpu.set_regs(&regs)?;
        let wakers: Arc<[Waker]> = (0..n).map(|_| Waker::new()).collect();
        // The bootstrap processor runs; the others wait for INIT and a startup IPI.
        let states = (0..n).map(|i| if i == 0 { CpuState::Running } else { CpuState::WaitForSipi }).collect();
        let (bus, pc) = match config.machine {
            MachineKind::Seed => (Bus::new(out, Disk::new(disk), mmio_base), None),
            MachineKind::Pc => {
                let timer = HostTimer::new()?;
                let apic_timers = (0..n).map(|_| HostTimer::new()).collect::<io::Result<Vec<_>>>()?;
                // The console's input: standard input, read by the event thread.
                let input = std::io::stdin().as_fd().try_clone_to_owned()?;
                let events = Events::start(timer.clone(), Some(input), apic_timers.clone(), wakers.clone())?;
                let escape = config.console_is_terminal.then(Escape::new);
                let apic_timers = apic_timers.into_iter().map(|t| (t, None)).collect();
                let world = PcWorld { timer, events, apic_timers, escape, input_open: true, timer_armed: false, warned_fast_timer: false };
                (Bus::with_board(out, Disk::new(disk), mmio_base, Board::new(ram, n as usize)), Some(world))
            }
        };
        Ok(Self { _vm: vm, mem, cpus, bus, trace: config.trace, states, wakers, pc, step_trace: None, stop_request: None })
    }

    // --- Hooks for debuggers (gdb.rs, steptrace.rs) ---

    /// Single-steps the guest from now on, writing one line per instruction to `out`.
    pub fn set_step_trace(&mut self, out: Box<dyn Write + Send>) -> io::Result<()> {
        self.vcpu().set_guest_debug(StepTrace::CONTROL)?;
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

    /// vCPU 0 (the debugger's).
    pub fn vcpu(&mut self) -> &mut dyn hypervisor::Vcpu {
        &mut *self.cpus[0].vcpu
    }

    /// The vCPUs, with what was counted for each.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }

    /// The exits that reached the emulator, all vCPUs together.
    pub fn exits(&self) -> ExitCounts {
        let mut all = ExitCounts::default();
        for cpu in &self.cpus {
            all += cpu.exits;
        }
        all
    }

    pub fn memory(&self) -> &sys::GuestMemory {
        &self.mem
    }

    pub fn vcpu_and_memory(&mut self) -> (&mut dyn hypervisor::Vcpu, &sys::GuestMemory) {
        (&mut *self.cpus[0].vcpu, &self.mem)
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

    /// Runs until the guest ends the run, a signal arrives, or something fails: vCPU 0
    /// on this thread, each other vCPU on a thread of its own (`cpu.rs`).
    pub fn run(&mut self) -> Result<Outcome, Error>
    where
        W: Send,
        B: Send,
    {
        let Self { cpus, mem, bus, trace, states, wakers, pc, step_trace, stop_request, .. } = self;
        let shared = Shared::new(bus, pc.as_mut(), states, mem, wakers, *trace);
        let (bsp, aps) = cpus.split_first_mut().expect("a machine has a vCPU");
        let spawned = std::thread::scope(|scope| {
            for (i, cpu) in aps.iter_mut().enumerate() {
                let shared = &shared;
                let run_ap = move || {
                    let mut ap = CpuLoop { index: i + 1, cpu, step_trace: None, stop_request: None };
                    shared.end(ap.run(shared));
                };
                let started = std::thread::Builder::new().name(format!("yakvm-vcpu{}", i + 1)).spawn_scoped(scope, run_ap);
                if let Err(e) = started {
                    shared.end(Err(Error::Thread(e)));
                    return;
                }
            }
            let mut bsp = CpuLoop { index: 0, cpu: bsp, step_trace: step_trace.as_mut(), stop_request: stop_request.as_deref() };
            shared.end(bsp.run(&shared));
        });
        let () = spawned;
        shared.outcome()
    }

    /// The hypervisor's exit counters of vCPU `i` (yakvm only).
    pub fn stats(&self, i: usize) -> Option<abi::ExitStats> {
        self.cpus[i].vcpu.stats()
    }

    /// KVM's own counters by name, of vCPU `i` (KVM only).
    pub fn kvm_stats(&self, i: usize) -> Vec<(String, u64)> {
        self.cpus[i].vcpu.kvm_stats()
    }

    /// The guest's MSR accesses on vCPU `i` (yakvm only).
    pub fn msr_stats(&self, i: usize) -> Option<abi::MsrStats> {
        self.cpus[i].vcpu.msr_stats()
    }
}

/// One exit, as `--trace` and `--step-trace` show it.
pub(crate) fn describe_exit(exit: &Exit<'_>, if_flag: bool) -> String {
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
pub(crate) fn port_io<W: Write, B: Backing>(bus: &mut Bus<W, B>, mem: &sys::GuestMemory, port: u16, size: u8, out: bool, data: &mut [u8]) -> Result<Effect, Error> {
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
    pub(crate) fn handle_event(&mut self, event: Event, board: &mut Board) -> Option<Outcome> {
        match event {
            Event::Timer => self.take_timer_edges(board),
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

    /// The PIT's edges on IRQ0 up to now.
    pub(crate) fn take_timer_edges(&mut self, board: &mut Board) {
        // Not only while the host timer is armed: a one-shot count the guest wrote can run
        // out before this vCPU's next pass arms anything, and its one edge must be taken.
        board.timer_tick();
        // A one-shot count that has run out wakes nobody any more.
        if board.pit.irq0_timer(board.now_ns()).is_none() {
            self.timer_armed = false;
        }
    }

    /// Arms vCPU `cpu`'s host timer for its local APIC's `deadline` (board clock, `now`
    /// is the time now), unless it is armed for it already.
    pub(crate) fn arm_apic_timer(&mut self, cpu: usize, deadline: Option<u64>, now_ns: u64) -> io::Result<()> {
        let (timer, armed) = &mut self.apic_timers[cpu];
        if *armed == deadline {
            return Ok(());
        }
        *armed = deadline;
        timer.arm(deadline.map(|d| Duration::from_nanos(d.saturating_sub(now_ns))), None)
    }

    /// Arms the host timer for channel 0 as the PIT now has it.
    pub(crate) fn arm(&mut self, timer: Option<IrqTimer>, now_ns: u64) -> io::Result<()> {
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
