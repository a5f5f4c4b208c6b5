//! What a run is made of and how it ends, shared by the machine (`machine.rs`) and its
//! vCPU threads (`cpu.rs`): the outcome, the errors, the counters for `--stats`.

use std::io;
use std::time::Duration;

use crate::hypervisor::{self, Exit};
use crate::loader::LoadError;
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
    /// pc: the guest powered the machine off (SLP_TYP S5 with SLP_EN in ACPI's PM1_CNT).
    PowerOff,
    /// pc: the user typed Ctrl-A X at the console.
    Quit,
    /// A debugger's stop (gdb.rs): the hypervisor's DEBUG exit, or `None` when the
    /// debugger asked for the stop (`Machine::set_stop_request`).
    Debug(Option<abi::DebugExit>),
}

/// The most vCPUs a machine has (`--smp`).
pub const MAX_CPUS: u32 = yakvm_abi::MAX_VCPUS;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("guest image of {size} bytes does not fit below the boot area ({room} bytes with --mem {mem})")]
    TooBig { size: usize, room: u64, mem: u64 },
    #[error("--mem {0}: guest RAM must be a multiple of 4 KiB between 128 KiB and 4 GiB")]
    BadMemSize(u64),
    #[error("--mem {0}: the pc machine's RAM ends where its PCI hole starts, at 3 GiB (0xc0000000); RAM above 4 GiB is not supported: give --mem 3G or less")]
    RamOverPciHole(u64),
    #[error("--mmio-base {base:#x}: the MMIO window must be 4 KiB aligned, above RAM (which ends at {ram:#x}) and below {max:#x}")]
    BadMmioBase { base: u64, ram: u64, max: u64 },
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Acpi(#[from] crate::pc::acpi::AcpiError),
    #[error("guest shut down (triple fault){}", .0.map(|rip| format!(" at rip {rip:#x}")).unwrap_or_default())]
    Shutdown(Option<u64>),
    #[error("VMRUN refused the guest state (VMEXIT_INVALID, reason {reason:#x}) at rip {rip:#x}")]
    FailEntry { rip: u64, reason: u64 },
    #[error("unhandled exit {code:#x} at rip {rip:#x} (exit_info_1 {info1:#x}, exit_info_2 {info2:#x})")]
    Unhandled { code: u64, rip: u64, info1: u64, info2: u64 },
    /// An MMIO access the hypervisor could not emulate (`hypervisor::MmioError`).
    #[error("{0}")]
    Mmio(String),
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
    #[error("--kernel-apic: the kernel's local APICs are for the pc machine (--machine pc)")]
    KernelApicNeedsPc,
    #[error("--testdev: the test device is a pc machine's (--machine pc)")]
    TestdevNeedsPc,
    #[error("--pci-testdev: the PCI test functions are a pc machine's (--machine pc)")]
    PciTestdevNeedsPc,
    #[error("--pci-testdev: {0}")]
    PciTestdev(#[from] crate::pc::pci::PciError),
    #[error("--vga: the VGA text screen is a pc machine's (--machine pc)")]
    VgaNeedsPc,
    #[error("--ide: the IDE channel is a pc machine's (--machine pc)")]
    IdeNeedsPc,
    #[error("--drive: virtio disks are on the pc machine's PCI bus (--machine pc, or --kernel)")]
    DriveNeedsPc,
    #[error("--drive: {0} drives, at most {1}")]
    TooManyDrives(usize, usize),
    #[error("--rng, --net: virtio devices are on the pc machine's PCI bus (--machine pc, or --kernel)")]
    VirtioNeedsPc,
    #[error("--drive, --rng, --net: {0} virtio devices, at most {1}")]
    TooManyVirtio(usize, usize),
    #[error("--testdev: its test memory at {base:#x} would be inside RAM (--mem {mem}); give at most {base:#x} bytes of RAM")]
    TestdevInRam { base: u64, mem: u64 },
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
    /// EOIs of the I/O APIC's level-triggered vectors the kernel's APICs reported.
    pub ioapic_eoi: u64,
    pub other: u64,
}

impl std::ops::AddAssign for ExitCounts {
    fn add_assign(&mut self, o: Self) {
        self.io += o.io;
        self.mmio += o.mmio;
        self.hlt += o.hlt;
        self.irq_window += o.irq_window;
        self.hypercall += o.hypercall;
        self.ioapic_eoi += o.ioapic_eoi;
        self.other += o.other;
    }
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.io + self.mmio + self.hlt + self.irq_window + self.hypercall + self.ioapic_eoi + self.other
    }

    pub(crate) fn count(&mut self, exit: &Exit<'_>) {
        let n = match exit {
            Exit::Io { .. } => &mut self.io,
            Exit::Mmio { .. } | Exit::MmioFailed { .. } => &mut self.mmio,
            Exit::Hlt => &mut self.hlt,
            Exit::IrqWindowOpen => &mut self.irq_window,
            Exit::Hypercall(_) => &mut self.hypercall,
            Exit::IoapicEoi { .. } => &mut self.ioapic_eoi,
            _ => &mut self.other,
        };
        *n += 1;
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
        Exit::Mmio { gpa, .. } | Exit::MmioFailed { gpa, .. } => format!("mmio gpa={gpa:#x}"),
        Exit::Hypercall(h) => format!("hypercall nr={:#x} args={:x?}", h.nr, h.args),
        Exit::Hlt if if_flag => "hlt (interrupts enabled)".into(),
        Exit::Hlt => "hlt".into(),
        Exit::IrqWindowOpen => "irq-window-open".into(),
        Exit::Shutdown { .. } => "shutdown".into(),
        &Exit::FailEntry { reason } => format!("fail-entry reason={reason:#x}"),
        Exit::Unhandled(hw) => format!("exit {:#x} info1={:#x} info2={:#x}", hw.exit_code, hw.exit_info_1, hw.exit_info_2),
        Exit::Other(what) => what.clone(),
        Exit::Debug(d) => format!("debug exception={} pc={:#x} dr6={:#x}", d.exception, d.pc, d.dr6),
        Exit::IoapicEoi { vector } => format!("ioapic-eoi vector={vector:#x}"),
        Exit::ApicInit => "apic-init".into(),
        Exit::ApicSipi { vector } => format!("apic-sipi vector={vector:#x}"),
        Exit::ApicWake => "apic-wake".into(),
    }
}
