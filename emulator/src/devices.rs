//! The machine's devices on their two buses (`bus.rs`): the seed's registers, which every
//! machine has, and on the pc machine the PC's devices (`pc::board`).
//!
//! The seed's registers are ports, reachable by port I/O and, at the same time, by MMIO at
//! `mmio_base + port * 8`:
//!
//! | port | device | access |
//! |---|---|---|
//! | 0x10 | serial: the bytes written go to the output | OUT 1/2/4 |
//! | 0x20-0x22 | DMA disk (see `disk`) | OUT 4, 4, 1 |
//! | 0xf4 | exit: a write of V ends the run with status V & 0xff | OUT 1/2/4 |
//! | 0xff | scratch: keeps the last value written, reads it back | 1/2/4 (8 by MMIO) |
//!
//! Reads of write-only registers return all ones; bad accesses are counted and the first
//! ones logged, never fatal.
//!
//! On the pc machine the serial port (0x10) and the exit port (0xf4) stay, the disk's ports
//! move to `pc::board::DISK_PORT_BASE` (its seed ports belong to the PIC) and the scratch
//! register is reachable by MMIO only. The MMIO window keeps the seed's register numbers on
//! both machines.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::bus::{le, lock, Bus, BusDevice, BusError, Ctx, Effect, Ignored, SharedDevice, Span};
use crate::disk::{Backing, Disk, COMMAND_PORT, SECTOR_PORT};
use crate::pc::board::DISK_PORT_BASE;
pub use crate::output::Console;

pub const SERIAL_PORT: u16 = 0x10;
pub const EXIT_PORT: u16 = 0xf4;
pub const SCRATCH_PORT: u16 = 0xff;
/// Bytes of MMIO space per port.
pub const MMIO_STRIDE: u64 = 8;
/// Ports reachable through the MMIO window.
pub const MMIO_PORTS: u64 = 0x100;

/// What holds the DMA disk's bytes (a file in a run).
pub type DiskBacking = Box<dyn Backing + Send>;

/// How a seed register names an access in messages.
fn register(base: u64, offset: u64) -> String {
    format!("port {:#x}", base + offset)
}

/// Port 0x10: what is written goes to the console.
struct SerialPort {
    console: Arc<Console>,
    ignored: Ignored,
}

impl BusDevice for SerialPort {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        write_only(&self.ignored, base, offset, data);
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        match data.len() {
            1 | 2 | 4 => self.console.write(data)?,
            _ => bad_write(&self.ignored, base, offset, data),
        }
        Ok(Effect::Continue)
    }
}

/// Port 0xf4: a write ends the run with its low byte as the status.
struct ExitPort {
    ignored: Ignored,
}

impl BusDevice for ExitPort {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        write_only(&self.ignored, base, offset, data);
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        match data.len() {
            1 | 2 | 4 => Ok(Effect::Exit(data[0])),
            _ => {
                bad_write(&self.ignored, base, offset, data);
                Ok(Effect::Continue)
            }
        }
    }
}

/// Port 0xff: keeps what is written.
#[derive(Default)]
struct Scratch(u64);

impl BusDevice for Scratch {
    fn read(&mut self, _: u64, _: u64, data: &mut [u8], _: &Ctx) {
        let n = data.len().min(8);
        data[..n].copy_from_slice(&self.0.to_le_bytes()[..n]);
    }
    fn write(&mut self, _: u64, _: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        self.0 = le(data);
        Ok(Effect::Continue)
    }
}

/// The DMA disk's three ports (sector, DMA address, command), wherever they are.
pub struct DiskPorts {
    pub disk: Disk<DiskBacking>,
    ignored: Ignored,
}

impl BusDevice for DiskPorts {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        write_only(&self.ignored, base, offset, data);
    }
    fn write(&mut self, _: u64, offset: u64, data: &[u8], ctx: &Ctx) -> io::Result<Effect> {
        self.disk.write(SECTOR_PORT + offset as u16, data, ctx.mem);
        Ok(Effect::Continue)
    }
}

fn write_only(ignored: &Ignored, base: u64, offset: u64, data: &mut [u8]) {
    data.fill(0xff);
    ignored.note(format_args!("{}-byte read of {} (write-only: all ones)", data.len(), register(base, offset)));
}

fn bad_write(ignored: &Ignored, base: u64, offset: u64, data: &[u8]) {
    ignored.note(format_args!("{}-byte write of {:#x} to {} (wrong width)", data.len(), le(data), register(base, offset)));
}

/// A seed register seen through the MMIO window: register `n` of the device is at
/// `n * MMIO_STRIDE` of its range; only accesses at a register's first byte reach it.
struct Strided {
    device: SharedDevice,
    /// The register's port, which the device is told as its base.
    port: u64,
    ignored: Ignored,
}

impl BusDevice for Strided {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], ctx: &Ctx) {
        if !offset.is_multiple_of(MMIO_STRIDE) {
            data.fill(0xff);
            self.ignored.note(format_args!("{}-byte MMIO read at {:#x} (all ones)", data.len(), base + offset));
            return;
        }
        lock(&self.device).read(self.port, offset / MMIO_STRIDE, data, ctx);
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], ctx: &Ctx) -> io::Result<Effect> {
        if !offset.is_multiple_of(MMIO_STRIDE) {
            self.ignored.note(format_args!("{}-byte MMIO write of {:#x} at {:#x}", data.len(), le(data), base + offset));
            return Ok(Effect::Continue);
        }
        lock(&self.device).write(self.port, offset / MMIO_STRIDE, data, ctx)
    }
}

/// Every device of a machine, on its buses.
pub struct Devices {
    /// The I/O port space.
    pub ports: Bus,
    /// Guest-physical addresses outside RAM.
    pub mmio: Bus,
    /// The console's output, written by a thread of its own (`output.rs`).
    pub console: Arc<Console>,
    pub disk: Arc<Mutex<DiskPorts>>,
    /// Accesses nothing answered or a device refused (both buses, the seed's registers).
    pub ignored: Ignored,
}

impl Devices {
    /// The seed machine: its registers at their ports and in the MMIO window at
    /// `mmio_base`.
    pub fn seed(out: impl Write + Send + 'static, disk: impl Backing + Send + 'static, mmio_base: u64) -> Result<Self, BusError> {
        let mut devices = Self::bare(out, disk, Span::Whole);
        devices.seed_registers(mmio_base, SECTOR_PORT, true)?;
        Ok(devices)
    }

    /// The pc machine's buses with the seed's registers that have a place on a PC (the
    /// board adds its own devices: `pc::board::PcBoard::install`).
    pub fn pc(out: impl Write + Send + 'static, disk: impl Backing + Send + 'static, mmio_base: u64) -> Result<Self, BusError> {
        // Wide accesses to ports nothing answers go byte by byte, as on the ISA bus.
        let mut devices = Self::bare(out, disk, Span::Bytes);
        devices.seed_registers(mmio_base, DISK_PORT_BASE, false)?;
        Ok(devices)
    }

    fn bare(out: impl Write + Send + 'static, disk: impl Backing + Send + 'static, unclaimed_ports: Span) -> Self {
        let ignored = Ignored::default();
        let disk = DiskPorts { disk: Disk::new(Box::new(disk)), ignored: ignored.clone() };
        Self {
            ports: Bus::new("port", unclaimed_ports, ignored.clone()),
            mmio: Bus::new("MMIO", Span::Whole, ignored.clone()),
            console: Arc::new(Console::new(out)),
            disk: Arc::new(Mutex::new(disk)),
            ignored,
        }
    }

    /// The seed's registers: by port (the disk's at `disk_base`, the scratch register if
    /// `scratch_port`) and by MMIO at `mmio_base`.
    fn seed_registers(&mut self, mmio_base: u64, disk_base: u16, scratch_port: bool) -> Result<(), BusError> {
        let ignored = &self.ignored;
        let serial: SharedDevice = Arc::new(Mutex::new(SerialPort { console: self.console.clone(), ignored: ignored.clone() }));
        let exit: SharedDevice = Arc::new(Mutex::new(ExitPort { ignored: ignored.clone() }));
        let scratch: SharedDevice = Arc::new(Mutex::new(Scratch::default()));
        let disk: SharedDevice = self.disk.clone();
        let disk_len = u64::from(COMMAND_PORT - SECTOR_PORT + 1);
        let registers = [
            ("serial", SERIAL_PORT, Some(SERIAL_PORT), 1, serial),
            ("disk", SECTOR_PORT, Some(disk_base), disk_len, disk),
            ("exit", EXIT_PORT, Some(EXIT_PORT), 1, exit),
            ("scratch", SCRATCH_PORT, scratch_port.then_some(SCRATCH_PORT), 1, scratch),
        ];
        for (name, seed_port, port, len, device) in registers {
            if let Some(port) = port {
                self.ports.insert(name, port.into(), len, Span::Whole, device.clone())?;
            }
            let strided = Strided { device, port: u64::from(seed_port), ignored: ignored.clone() };
            let at = mmio_base + u64::from(seed_port) * MMIO_STRIDE;
            self.mmio.insert(&format!("{name} (mmio)"), at, len * MMIO_STRIDE, Span::Whole, Arc::new(Mutex::new(strided)))?;
        }
        Ok(())
    }

    /// Flushes the output and puts the disk's writes on stable storage: call it however
    /// the run ended.
    pub fn finish(&self) -> io::Result<()> {
        let flushed = self.console.flush();
        lock(&self.disk).disk.sync()?;
        flushed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::tests::CTX;
    use crate::disk::NoDisk;

    /// Console output the test can read back while the machine owns a handle to it.
    #[derive(Clone, Default)]
    pub(crate) struct SharedOut(Arc<Mutex<Vec<u8>>>);
    impl SharedOut {
        pub(crate) fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }
    impl Write for SharedOut {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn seed(base: u64) -> (Devices, SharedOut) {
        let out = SharedOut::default();
        (Devices::seed(out.clone(), NoDisk, base).unwrap(), out)
    }

    #[test]
    fn serial_by_port_and_by_mmio() {
        let (d, out) = seed(0x1000_0000);
        assert_eq!(d.ports.write(SERIAL_PORT.into(), b"hi", &CTX).unwrap(), Effect::Continue);
        d.mmio.write(0x1000_0000 + 0x10 * 8, b"!!!!", &CTX).unwrap();
        d.finish().unwrap();
        assert_eq!(out.bytes(), b"hi!!!!");
        // 8 bytes is not a port width: ignored, counted.
        d.mmio.write(0x1000_0080, b"12345678", &CTX).unwrap();
        d.finish().unwrap();
        assert_eq!(out.bytes(), b"hi!!!!");
        assert_eq!(d.ignored.count(), 1);
    }

    #[test]
    fn exit_port_ends_the_run() {
        let (d, _) = seed(0x10_0000);
        assert_eq!(d.ports.write(EXIT_PORT.into(), &[7, 1], &CTX).unwrap(), Effect::Exit(7));
        assert_eq!(d.mmio.write(0x10_0000 + 0xf4 * 8, &[9], &CTX).unwrap(), Effect::Exit(9));
    }

    #[test]
    fn scratch_reads_back_and_unknown_reads_all_ones() {
        let (d, _) = seed(0x8000);
        d.mmio.write(0x8000 + 0xff * 8, &0x1122_3344_5566_7788u64.to_le_bytes(), &CTX).unwrap();
        let mut b = [0u8; 2];
        d.ports.read(SCRATCH_PORT.into(), &mut b, &CTX);
        assert_eq!(b, [0x88, 0x77]);
        d.mmio.read(0x8000 + 3, &mut b, &CTX); // not a register's first byte
        assert_eq!(b, [0xff, 0xff]);
        d.mmio.read(0x8000 + 0x10 * 8 + 3, &mut b, &CTX); // inside the serial register
        assert_eq!(b, [0xff, 0xff]);
        let mut w = [0u8; 4];
        d.ports.read(0x60, &mut w, &CTX);
        assert_eq!(w, [0xff; 4]);
        assert_eq!(d.ignored.count(), 3);
    }

    #[test]
    fn the_disk_moves_on_the_pc() {
        let (d, _) = seed(0x10_0000);
        assert_eq!(d.ports.range_of("disk"), Some((0x20, 3)));
        let p = Devices::pc(SharedOut::default(), NoDisk, 0x10_0000).unwrap();
        assert_eq!(p.ports.range_of("disk"), Some((DISK_PORT_BASE.into(), 3)));
        assert_eq!(p.ports.range_of("scratch"), None);
        assert_eq!(p.mmio.range_of("disk (mmio)"), Some((0x10_0000 + 0x20 * 8, 24)));
    }
}
