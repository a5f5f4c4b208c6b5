//! A machine: guest RAM, its vCPUs, the device bus; `run` runs each vCPU on a thread of
//! its own (`cpu.rs`: the loop that handles the exits the hypervisor returns).

use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cpu::{Cpu, CpuLoop, CpuState, Shared};
use crate::board::{self, Board, BoardConfig};
use crate::devices::Devices;
use crate::disk::Backing;
use crate::events::Waker;
use crate::hypervisor;
use crate::kernel::{BootImage, KernelEntry};
use crate::loader;
use crate::steptrace::StepTrace;
use crate::{boot, layout, sys};
use yakvm_abi as abi;

// What a run ends with and counts (run.rs), where users of the machine have found them.
pub use crate::pc::board::MIN_TIMER_PERIOD;
pub use crate::run::{hypercall, Error, ExitCounts, Outcome, Times, MAX_CPUS};
pub use crate::board::MachineKind;

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
    /// The test device (`--testdev`, pc machine only).
    pub testdev: bool,
    /// The PCI test functions (`--pci-testdev`, pc machine only).
    pub pci_testdev: bool,
    /// pc: write the ACPI tables (false with `--no-acpi`: the MP table alone).
    pub acpi: bool,
    /// pc: the console is the VGA text screen and the PS/2 keyboard (`--vga`).
    pub vga: bool,
    /// pc: the IDE channel's disks (`--ide`, at most two: the master, then the slave).
    pub ide: Vec<Arc<std::fs::File>>,
    /// pc: the virtio disks (`--drive`), opened and locked.
    pub drives: Vec<Arc<crate::virtio::blk::Drive>>,
    /// pc on yakvm: the local APICs are the module's (`--kernel-apic`).
    pub kernel_apic: bool,
    /// pc: the virtio disks' queue notifications are ioeventfds (off with
    /// `--no-ioeventfd`: MMIO exits to this program).
    pub ioeventfd: bool,
    /// pc with `kernel_apic`: the virtio devices' interrupts are irqfds (off with
    /// `--no-irqfd`: messages through this program's interrupt controllers).
    pub irqfd: bool,
    /// pc: the virtio entropy and network devices (`--rng`, `--net`).
    pub extra: crate::virtio::Extra,
}

pub struct Machine {
    // Field order is drop order: the vCPUs and the VM go before the RAM they use.
    /// The vCPUs; index = APIC id; 0 is the bootstrap processor.
    cpus: Vec<Cpu>,
    vm: hypervisor::VmHandle,
    mem: Arc<sys::GuestMemory>,
    pub devices: Devices,
    trace: bool,
    /// What each vCPU is doing (kept from one `run` to the next).
    states: Vec<CpuState>,
    /// How other threads wake each vCPU.
    wakers: Arc<[Waker]>,
    /// What the board does beyond its buses (pc: interrupts, timers, console input).
    board: Box<dyn Board>,
    /// `--step-trace`: every guest instruction (steptrace.rs).
    step_trace: Option<StepTrace>,
    /// A debugger's request to stop the guest (set by its thread, which then kicks us).
    stop_request: Option<Arc<AtomicBool>>,
}

impl Machine {
    /// Builds a machine running `image` (flat or ELF) with the given disk.
    pub fn new(config: &Config, image: &[u8], out: impl Write + Send + 'static, disk: impl Backing + Send + 'static) -> Result<Self, Error> {
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
    pub fn with_kernel(config: &Config, image: &BootImage, out: impl Write + Send + 'static, disk: impl Backing + Send + 'static) -> Result<Self, Error> {
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
                    boot::multiboot_protected_mode(mem, eip.into(), eax, ebx).expect("boot area in RAM")
                }
            }
        })
    }

    /// The VM, its RAM (filled in by `place`, which returns the vCPU's first state), the
    /// vCPU and the board.
    fn build(
        config: &Config,
        out: impl Write + Send + 'static,
        disk: impl Backing + Send + 'static,
        place: impl FnOnce(&sys::GuestMemory) -> (abi::Regs, abi::Sregs),
    ) -> Result<Self, Error> {
        let ram = config.mem;
        let mmio_base = config.mmio_base.unwrap_or_else(|| layout::default_mmio_base(ram));
        let mem = Arc::new(sys::GuestMemory::new(ram as usize)?);
        // Registers whose writes need no answer at once: the serial port's bytes. (Not the
        // disk's sector and address registers: their 4-byte writes cover the next ports,
        // the command's among them, and coalesced zones are byte ranges, as KVM's are.)
        let zones = [(crate::devices::SERIAL_PORT, 1)];
        let coalesced: &[(u16, u16)] = if config.coalesced_io && !config.trace { &zones } else { &[] };
        let n = config.cpus;
        if !(1..=MAX_CPUS).contains(&n) {
            return Err(Error::BadCpus(n));
        }
        let kind = config.machine;
        if n > 1 && !kind.has_lapics() {
            return Err(Error::SmpNeedsPc(n));
        }
        if config.kernel_apic && !kind.has_lapics() {
            return Err(Error::KernelApicNeedsPc);
        }
        let (vm, vcpus, kernel_apics) = hypervisor::create(config.hypervisor, &config.device, &mem, coalesced, n, kind.has_lapics(), config.kernel_apic)?;
        kind.write_tables(&mem, ram, n, config.acpi)?;
        let mut cpus: Vec<Cpu> = vcpus.into_iter().map(Cpu::new).collect();
        let (regs, sregs) = place(&mem);
        cpus[0].vcpu.set_sregs(&sregs)?;
        cpus[0].vcpu.set_regs(&regs)?;
        let wakers: Arc<[Waker]> = (0..n).map(|_| Waker::new()).collect();
        // The bootstrap processor runs; the others wait for INIT and a startup IPI (with
        // the kernel's APICs they wait in RUN, in the module: cpu.rs).
        let states = (0..n).map(|i| if i == 0 { CpuState::Running } else { CpuState::WaitForSipi }).collect();
        let board_config = BoardConfig { kind, ram, mmio_base, cpus: n, console_is_terminal: config.console_is_terminal, testdev: config.testdev, pci_testdev: config.pci_testdev, vga: config.vga, ide: config.ide.clone(), drives: config.drives.clone(), ioevents: config.ioeventfd.then(|| vm.clone()), irqfds: (config.kernel_apic && config.irqfd).then(|| vm.clone()), extra: config.extra.clone() };
        let (devices, board) = board::build(&board_config, out, disk, wakers.clone(), &mem)?;
        if let (Some(kernel), Some(irqs)) = (kernel_apics, board.interrupts()) {
            crate::bus::lock(&irqs).apics.use_kernel(kernel);
        }
        Ok(Self { vm, mem, cpus, devices, trace: config.trace, states, wakers, board, step_trace: None, stop_request: None })
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

    /// The VM, for what is done to it as a whole (ioeventfds: `hypervisor::Vm`).
    pub fn vm(&self) -> &hypervisor::VmHandle {
        &self.vm
    }

    /// vCPU 0 (the debugger's).
    pub fn vcpu(&mut self) -> &mut dyn hypervisor::Vcpu {
        &mut *self.cpus[0].vcpu
    }

    /// The vCPUs, with what was counted for each.
    pub fn cpus(&self) -> &[Cpu] {
        &self.cpus
    }

    /// What the board does beyond its buses.
    pub fn board(&self) -> &dyn Board {
        &*self.board
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

    /// Guest RAM, for a thread of its own (`--irqfd`).
    pub fn shared_memory(&self) -> Arc<sys::GuestMemory> {
        self.mem.clone()
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
        self.devices.finish()
    }

    /// Runs until the guest ends the run, a signal arrives, or something fails: vCPU 0
    /// on this thread, each other vCPU on a thread of its own (`cpu.rs`).
    pub fn run(&mut self) -> Result<Outcome, Error> {
        let Self { cpus, mem, devices, trace, states, wakers, board, step_trace, stop_request, .. } = self;
        let shared = Shared::new(&*devices, &mut **board, states, mem, wakers, *trace);
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

    /// The kernel APIC's work on vCPU `i` (yakvm with `--kernel-apic` only).
    pub fn apic_stats(&self, i: usize) -> Option<abi::ApicStats> {
        self.cpus[i].vcpu.apic_stats()
    }

    /// The guest's MSR accesses on vCPU `i` (yakvm only).
    pub fn msr_stats(&self, i: usize) -> Option<abi::MsrStats> {
        self.cpus[i].vcpu.msr_stats()
    }
}

/// Checks `--mem` and `--mmio-base`; returns the end of the MMIO window.
fn check_layout(config: &Config) -> Result<u64, Error> {
    let ram = config.mem;
    if ram % 4096 != 0 || !(layout::MIN_RAM..=layout::MAX_RAM).contains(&ram) {
        return Err(Error::BadMemSize(ram));
    }
    if config.machine == MachineKind::Pc && ram > layout::PCI_HOLE_START {
        return Err(Error::RamOverPciHole(ram));
    }
    let mmio_base = config.mmio_base.unwrap_or_else(|| layout::default_mmio_base(ram));
    let mmio_top = mmio_base.checked_add(crate::devices::MMIO_PORTS * crate::devices::MMIO_STRIDE);
    match mmio_top {
        Some(top) if mmio_base % 4096 == 0 && mmio_base >= ram && top <= layout::MAX_IDENTITY_MAP => Ok(top),
        _ => Err(Error::BadMmioBase { base: mmio_base, ram, max: layout::MAX_IDENTITY_MAP }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(machine: MachineKind, mem: u64) -> Config {
        Config {
            mem,
            mmio_base: None,
            entry: None,
            load_addr: 0,
            trace: false,
            machine,
            console_is_terminal: false,
            hypervisor: hypervisor::Kind::Yakvm,
            device: String::new(),
            coalesced_io: false,
            cpus: 1,
            testdev: false,
            pci_testdev: false,
            acpi: true,
            vga: false,
            ide: Vec::new(),
            drives: Vec::new(),
            kernel_apic: false,
            ioeventfd: true,
            irqfd: true,
            extra: Default::default(),
        }
    }

    /// `--kernel-apic` is refused, before any VM exists, on the seed machine (on yakvm
    /// and on KVM).
    #[test]
    fn kernel_apic_needs_pc() {
        let place = |_: &sys::GuestMemory| (abi::Regs::default(), abi::Sregs::default());
        for hypervisor in [hypervisor::Kind::Yakvm, hypervisor::Kind::Kvm] {
            let seed = Config { kernel_apic: true, hypervisor, ..config(MachineKind::Seed, 1 << 20) };
            let err = Machine::build(&seed, Vec::new(), crate::disk::NoDisk, place).err().expect("refused");
            assert!(matches!(err, Error::KernelApicNeedsPc), "{err}");
        }
    }

    /// The pc machine's RAM ends at its PCI hole (3 GiB); the seed machine's may reach
    /// the module's 4 GiB.
    #[test]
    fn pc_ram_stops_at_the_pci_hole() {
        assert_eq!(check_layout(&config(MachineKind::Pc, 3 * layout::GIB)).unwrap(), 3 * layout::GIB + 0x800);
        let err = check_layout(&config(MachineKind::Pc, 3 * layout::GIB + 4096)).unwrap_err();
        assert!(matches!(err, Error::RamOverPciHole(_)));
        assert!(err.to_string().contains("PCI hole starts, at 3 GiB"), "{err}");
        assert!(check_layout(&config(MachineKind::Seed, 4 * layout::GIB)).is_ok());
    }
}
