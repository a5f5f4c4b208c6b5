//! The board a machine is built on, described in one place: which devices are on the
//! buses, how their interrupts are wired, what the board writes in guest memory, and
//! what HLT means. [`build`] makes a board of each kind (`--machine seed` or `pc`); the
//! vCPU loop (`cpu.rs`) sees the buses (`Devices`) and, through [`Board`], the interrupt
//! controllers and the board's own events.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use crate::devices::Devices;
use crate::disk::Backing;
use crate::events::Waker;
use crate::pc::board::{Interrupts, PcBoard};
use crate::pc::acpi::{self, AcpiDesc, AcpiError};
use crate::pc::{bios, mptable};
use crate::pc::vga::Mirror;
use crate::pc::testdev;
use crate::pc::world::PcWorld;
use crate::run::{Error, Outcome};
use crate::{layout, sys};

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

impl MachineKind {
    /// The vCPUs have local APICs (the hypervisor's CPUID says so).
    pub fn has_lapics(self) -> bool {
        self == MachineKind::Pc
    }

    /// Writes the board's tables into guest RAM of `ram` bytes for `cpus` vCPUs (pc: what a
    /// BIOS leaves in low memory, `pc::bios`: the interrupt vector table, the BIOS data
    /// area, the EBDA; the ACPI tables in the E segment and the MP table in the F
    /// segment), before the guest's
    /// own bytes (which win where they meet). A table that does not fit below the boot
    /// area (a tiny `--mem`) is left out, as on a machine without it; `acpi` false
    /// (`--no-acpi`) leaves the ACPI tables out, the MP table then being the only one.
    /// Returns where the ACPI tables' RSDP is, if they were written.
    pub fn write_tables(self, mem: &sys::GuestMemory, ram: u64, cpus: u32, acpi: bool) -> Result<Option<u64>, AcpiError> {
        if self != MachineKind::Pc {
            return Ok(None);
        }
        for (at, bytes) in bios::low_memory() {
            if at + bytes.len() as u64 <= layout::boot_area(ram) {
                mem.write(at, &bytes).expect("checked to fit");
            }
        }
        let table = mptable::mp_table(cpus);
        if mptable::MP_TABLE_ADDR + table.len() as u64 <= layout::boot_area(ram) {
            mem.write(mptable::MP_TABLE_ADDR, &table).expect("checked to fit");
        }
        self.acpi_rsdp(ram, acpi).map(|_| acpi::write(&AcpiDesc::pc(cpus, ram), mem)).transpose()
    }

    /// Where the board's ACPI tables put the RSDP with `ram` bytes of RAM (`None`: the
    /// board has none, `acpi` is false, or they would not fit below the boot area).
    pub fn acpi_rsdp(self, ram: u64, acpi: bool) -> Option<u64> {
        let fits = layout::ACPI_START + layout::ACPI_SIZE <= layout::boot_area(ram);
        (self == MachineKind::Pc && acpi && fits).then_some(layout::ACPI_START)
    }
}

/// What a board does beyond its buses, as the vCPU loop sees it.
pub trait Board: Send {
    /// HLT ends the run (the seed), else it waits for an interrupt.
    fn hlt_ends_run(&self) -> bool;
    /// The interrupt controllers, if the board has any.
    fn interrupts(&self) -> Option<Arc<Mutex<Interrupts>>>;
    /// The board's clock (ns), which the interrupt controllers' timers count in.
    fn now_ns(&self) -> u64;
    /// Any vCPU, between two runs: whether the board's events (the console's escape
    /// keys) end the run.
    fn poll_events(&mut self) -> Result<Option<Outcome>, Error>;
    /// vCPU `cpu`'s local APIC timer fires at `deadline` (board clock, `now_ns` now; `None`:
    /// never).
    fn arm_apic_timer(&mut self, cpu: usize, deadline: Option<u64>, now_ns: u64) -> io::Result<()>;
    /// Nothing outside the vCPUs can ever interrupt them (no timer armed, the console's
    /// input ended): idle vCPUs would wait forever.
    fn idle_forever(&self) -> bool;
    /// Lines for `--stats` (interrupts by line, merged timer ticks).
    fn stats(&self) -> Vec<String>;
}

/// The seed board: its registers are all on the buses; no interrupts; HLT ends the run.
struct Seed;

impl Board for Seed {
    fn hlt_ends_run(&self) -> bool {
        true
    }
    fn interrupts(&self) -> Option<Arc<Mutex<Interrupts>>> {
        None
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn poll_events(&mut self) -> Result<Option<Outcome>, Error> {
        Ok(None)
    }
    fn arm_apic_timer(&mut self, _: usize, _: Option<u64>, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn idle_forever(&self) -> bool {
        false
    }
    fn stats(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What `build` needs to know. The default: a seed machine, 16 MiB of RAM, the MMIO
/// window at 3 GiB, one vCPU, nothing optional.
pub struct BoardConfig {
    pub kind: MachineKind,
    pub ram: u64,
    pub mmio_base: u64,
    pub cpus: u32,
    /// pc: the console's input is a terminal (Ctrl-A commands are read from it).
    pub console_is_terminal: bool,
    /// pc: the test device (`--testdev`, `pc::testdev`) is on the buses.
    pub testdev: bool,
    /// pc: the PCI test functions (`--pci-testdev`, `pc::pci_testdev`) are on the root bus.
    pub pci_testdev: bool,
    /// pc: the console is the screen and the keyboard (`--vga`): the VGA text screen is
    /// mirrored to it (with colours when standard output is a terminal, as plain text
    /// otherwise) and its input is typed on the PS/2 keyboard.
    pub vga: bool,
    /// pc: the IDE channel's disks (`--ide`): none, the master, or the master and the slave.
    pub ide: Vec<Arc<std::fs::File>>,
    /// pc: the virtio disks (`--drive`), at 00:04.0, 00:05.0, ... in order.
    pub drives: Vec<Arc<crate::virtio::blk::Drive>>,
    /// pc: the VM, where the virtio disks register their queue notifications as
    /// ioeventfds (`None`: `--no-ioeventfd`, they stay MMIO exits).
    pub ioevents: Option<crate::hypervisor::VmHandle>,
    /// pc: the VM, where the virtio devices bind their interrupt vectors to irqfds (with
    /// the kernel's local APICs; `None`: `--no-irqfd`, or the APICs are the emulator's).
    pub irqfds: Option<crate::hypervisor::VmHandle>,
    /// pc: the virtio entropy device (`--rng`) and network devices (`--net`), in the
    /// slots after the disks'.
    pub extra: crate::virtio::Extra,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            kind: MachineKind::Seed,
            ram: 16 << 20,
            mmio_base: 0xc000_0000,
            cpus: 1,
            console_is_terminal: false,
            testdev: false,
            pci_testdev: false,
            vga: false,
            ide: Vec::new(),
            drives: Vec::new(),
            ioevents: None,
            irqfds: None,
            extra: Default::default(),
        }
    }
}

/// The PCI slot of the first `--drive` (vda); the next ones follow.
pub const FIRST_DRIVE_SLOT: u8 = 4;
/// How many `--drive`s fit on the root bus after it.
pub const MAX_DRIVES: usize = 32 - FIRST_DRIVE_SLOT as usize;

/// The board `config.kind`: its devices on their buses, the interrupt wiring, and (pc)
/// the host timers and the event thread, which ring `wakers` (one per vCPU).
pub fn build(
    config: &BoardConfig,
    out: impl Write + Send + 'static,
    disk: impl Backing + Send + 'static,
    wakers: Arc<[Waker]>,
    ram: &Arc<sys::GuestMemory>,
) -> Result<(Devices, Box<dyn Board>), Error> {
    match config.kind {
        MachineKind::Seed if config.testdev => Err(Error::TestdevNeedsPc),
        MachineKind::Seed if config.pci_testdev => Err(Error::PciTestdevNeedsPc),
        MachineKind::Seed if config.vga => Err(Error::VgaNeedsPc),
        MachineKind::Seed if !config.ide.is_empty() => Err(Error::IdeNeedsPc),
        MachineKind::Seed if !config.drives.is_empty() => Err(Error::DriveNeedsPc),
        MachineKind::Seed if config.extra.any() => Err(Error::VirtioNeedsPc),
        MachineKind::Pc if config.drives.len() > MAX_DRIVES => Err(Error::TooManyDrives(config.drives.len(), MAX_DRIVES)),
        MachineKind::Pc if config.drives.len() + config.extra.count() > MAX_DRIVES => Err(Error::TooManyVirtio(config.drives.len() + config.extra.count(), MAX_DRIVES)),
        MachineKind::Seed => Ok((Devices::seed(out, disk, config.mmio_base)?, Box::new(Seed))),
        MachineKind::Pc => {
            let mut devices = Devices::pc(out, disk, config.mmio_base)?;
            let board = PcBoard::new(config.ram, wakers.clone(), devices.console.clone())?;
            board.install(&mut devices.ports, &mut devices.mmio)?;
            if config.vga {
                let mirror = if io::stdout().is_terminal() { Mirror::Ansi } else { Mirror::Text };
                crate::bus::lock(&board.vga).set_mirror(mirror);
                board.attach_keyboard();
            }
            if !config.ide.is_empty() {
                board.install_ide(&mut devices.ports, &config.ide)?;
            }
            if config.testdev {
                if config.ram > testdev::MEMORY_BASE {
                    return Err(Error::TestdevInRam { base: testdev::MEMORY_BASE, mem: config.ram });
                }
                board.install_testdev(&mut devices.ports, &mut devices.mmio)?;
            }
            if config.pci_testdev {
                board.install_pci_testdev()?;
            }
            if !config.drives.is_empty() {
                let mem = Arc::new(sys::VmMemory::new(ram.clone())?);
                for (i, drive) in config.drives.iter().enumerate() {
                    board.add_virtio_blk(FIRST_DRIVE_SLOT + i as u8, drive.clone(), mem.clone(), config.ioevents.clone(), config.irqfds.clone())?;
                }
            }
            if config.extra.any() {
                let mem = Arc::new(sys::VmMemory::new(ram.clone())?);
                let mut slot = FIRST_DRIVE_SLOT + config.drives.len() as u8;
                if config.extra.rng {
                    board.add_virtio_rng(slot, mem.clone(), config.ioevents.clone(), config.irqfds.clone())?;
                    slot += 1;
                }
                for (i, tap) in config.extra.nets.iter().enumerate() {
                    board.add_virtio_net(slot, i, tap.clone(), mem.clone(), config.ioevents.clone(), config.irqfds.clone())?;
                    slot += 1;
                }
            }
            // The console's input: standard input, read by the event thread.
            let input = io::stdin().as_fd().try_clone_to_owned()?;
            let world = PcWorld::start(board, config.cpus as usize, wakers, Some(input), config.console_is_terminal)?;
            Ok((devices, Box::new(world)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::tests::SharedOut;
    use crate::disk::NoDisk;

    #[test]
    fn the_seed_board_has_no_interrupts_and_hlt_ends_its_run() {
        let config = BoardConfig::default();
        let (devices, mut board) = build(&config, SharedOut::default(), NoDisk, Arc::from([Waker::new()]), &Arc::new(sys::GuestMemory::new(1 << 20).unwrap())).unwrap();
        assert!(board.hlt_ends_run());
        assert!(board.interrupts().is_none());
        assert!(!board.idle_forever());
        assert_eq!(board.poll_events().unwrap(), None);
        assert_eq!(devices.ports.range_of("serial"), Some((0x10, 1)));
        assert_eq!(devices.mmio.range_of("exit (mmio)"), Some((0xc000_0000 + 0xf4 * 8, 8)));
        assert!(!MachineKind::Seed.has_lapics() && MachineKind::Pc.has_lapics());
    }

    /// `--testdev` puts the test device on the pc machine's buses; the seed machine, or RAM
    /// reaching its test memory, is a clear error; without it, nothing answers there.
    #[test]
    fn the_test_device_is_opt_in_and_pc_only() {
        let build_with = |kind, ram, testdev| {
            let config = BoardConfig { kind, ram, testdev, ..Default::default() };
            build(&config, SharedOut::default(), NoDisk, Arc::from([Waker::new()]), &Arc::new(sys::GuestMemory::new(1 << 20).unwrap())).map(|(devices, _)| devices)
        };
        let err = build_with(MachineKind::Seed, 16 << 20, true).err().expect("refused");
        assert_eq!(err.to_string(), "--testdev: the test device is a pc machine's (--machine pc)");
        let err = build_with(MachineKind::Pc, 4 << 30, true).err().expect("refused");
        assert!(matches!(err, Error::TestdevInRam { base: testdev::MEMORY_BASE, .. }), "{err}");
        let plain = build_with(MachineKind::Pc, 16 << 20, false).unwrap();
        assert_eq!(plain.mmio.range_of("testdev memory"), None);
        assert_eq!(plain.ports.range_of("testdev irq lines"), None);
        let with = build_with(MachineKind::Pc, 16 << 20, true).unwrap();
        assert_eq!(with.mmio.range_of("testdev memory"), Some((testdev::MEMORY_BASE, testdev::MEMORY_SIZE)));
        assert_eq!(with.ports.range_of("testdev irq lines"), Some((0x2000, 24)));
        assert_eq!(with.ports.range_of("testdev scratch"), Some((0xe0, 4)));
    }

    /// `--pci-testdev` puts the two test functions on the pc machine's PCI root (ECAM
    /// finds them); the seed machine is a clear error; without it, the slots are empty.
    #[test]
    fn the_pci_test_functions_are_opt_in_and_pc_only() {
        let build_with = |kind, pci_testdev| {
            let config = BoardConfig { kind, pci_testdev, ..Default::default() };
            build(&config, SharedOut::default(), NoDisk, Arc::from([Waker::new()]), &Arc::new(sys::GuestMemory::new(1 << 20).unwrap())).map(|(devices, _)| devices)
        };
        let err = build_with(MachineKind::Seed, true).err().expect("refused");
        assert_eq!(err.to_string(), "--pci-testdev: the PCI test functions are a pc machine's (--machine pc)");
        let id = |d: &mut Devices, device: u64| {
            let mut b = [0; 4];
            d.mmio.read(crate::pc::pci::ECAM_BASE + (device << 15), &mut b, &crate::bus::tests::CTX);
            u32::from_le_bytes(b)
        };
        let mut plain = build_with(MachineKind::Pc, false).unwrap();
        assert_eq!((id(&mut plain, 22), id(&mut plain, 30)), (u32::MAX, u32::MAX));
        let mut with = build_with(MachineKind::Pc, true).unwrap();
        assert_eq!((id(&mut with, 22), id(&mut with, 30)), (0x11e8_1234, 0x11e8_1234));
    }

    #[test]
    fn the_pc_board_writes_its_mp_and_acpi_tables() {
        let mem = sys::GuestMemory::new(16 << 20).unwrap();
        MachineKind::Seed.write_tables(&mem, 16 << 20, 1, true).unwrap();
        let mut sig = [0u8; 4];
        mem.read(mptable::MP_TABLE_ADDR, &mut sig).unwrap();
        assert_eq!(sig, [0; 4]);
        let mut rsdp = [0u8; 8];
        assert_eq!(MachineKind::Seed.write_tables(&mem, 16 << 20, 1, true), Ok(None));
        assert_eq!(MachineKind::Seed.acpi_rsdp(16 << 20, true), None);
        mem.read(layout::ACPI_START, &mut rsdp).unwrap();
        assert_eq!(rsdp, [0; 8], "the seed board has no ACPI tables");
        assert_eq!(MachineKind::Pc.write_tables(&mem, 16 << 20, 2, true), Ok(Some(layout::ACPI_START)));
        assert_eq!(MachineKind::Pc.acpi_rsdp(16 << 20, true), Some(layout::ACPI_START));
        mem.read(mptable::MP_TABLE_ADDR, &mut sig).unwrap();
        assert_eq!(&sig, b"_MP_");
        mem.read(layout::ACPI_START, &mut rsdp).unwrap();
        assert_eq!(&rsdp, b"RSD PTR ");
        let mut bda = [0u8; 0x15];
        mem.read(bios::BDA_ADDR, &mut bda).unwrap();
        assert_eq!((bda[0x0e], bda[0x0f], bda[0x13], bda[0x14]), (0xc0, 0x9f, 0x7f, 0x02), "EBDA segment 0x9fc0, 639 KiB");
    }

    /// With RAM too small for the E segment below the boot area, the pc board leaves its
    /// ACPI tables out (as its MP table), and says so to the kernel loader.
    #[test]
    fn a_tiny_pc_has_no_acpi_tables() {
        let ram = 512 << 10;
        let mem = sys::GuestMemory::new(ram as usize).unwrap();
        assert_eq!(MachineKind::Pc.write_tables(&mem, ram, 1, true), Ok(None));
        assert_eq!(MachineKind::Pc.acpi_rsdp(ram, true), None);
    }

    /// `--no-acpi`: the MP table alone, no RSDP for the kernel loader.
    #[test]
    fn a_pc_without_acpi_has_only_its_mp_table() {
        let ram = 16 << 20;
        let mem = sys::GuestMemory::new(ram as usize).unwrap();
        assert_eq!(MachineKind::Pc.write_tables(&mem, ram, 2, false), Ok(None));
        assert_eq!(MachineKind::Pc.acpi_rsdp(ram, false), None);
        let (mut sig, mut rsdp) = ([0u8; 4], [0u8; 8]);
        mem.read(mptable::MP_TABLE_ADDR, &mut sig).unwrap();
        assert_eq!(&sig, b"_MP_");
        mem.read(layout::ACPI_START, &mut rsdp).unwrap();
        assert_eq!(rsdp, [0; 8], "no RSDP");
    }
}
