//! The devices and where the guest finds them: each device register is a port, reachable
//! by port I/O and, at the same time, by MMIO at `mmio_base + port * 8`.
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
//! On the pc machine (`pc::board`), port I/O goes to the PC's devices first; the serial
//! port (0x10) and the exit port (0xf4) stay, and the disk moves to
//! `pc::board::DISK_PORT_BASE` (its seed ports belong to the PIC). The MMIO window keeps
//! the seed's register numbers on both machines.

use std::io::{self, Write};

use crate::disk::{Backing, Disk, Dma, COMMAND_PORT, SECTOR_PORT};
use crate::pc::board::{Board, PortEffect, DISK_PORT_BASE};

pub const SERIAL_PORT: u16 = 0x10;
pub const EXIT_PORT: u16 = 0xf4;
pub const SCRATCH_PORT: u16 = 0xff;
/// Bytes of MMIO space per port.
pub const MMIO_STRIDE: u64 = 8;
/// Ports reachable through the MMIO window.
pub const MMIO_PORTS: u64 = 0x100;

/// What the guest's access asks of the run.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    Continue,
    Exit(u8),
    /// The guest reset the machine (pc: the i8042's reset line).
    Reset,
}

/// Bad accesses reported on stderr before the bus goes quiet about them.
const LOGGED_BAD_ACCESSES: u64 = 10;

/// The console's output (stdout in a run, a buffer in tests).
pub type Output = Box<dyn Write + Send>;
/// What holds the DMA disk's bytes (a file in a run).
pub type DiskBacking = Box<dyn Backing + Send>;

pub struct Bus {
    out: Output,
    pub disk: Disk<DiskBacking>,
    scratch: u64,
    mmio_base: u64,
    /// Accesses nothing answers, or with a width the register does not take.
    pub bad_accesses: u64,
    /// The PC's devices, on the pc machine.
    pub board: Option<Board>,
    /// Since when console output has waited in `out`'s buffer (a line without its end:
    /// a prompt). Flushing every byte costs a system call per byte (a round trip when
    /// the output is a file on a 9p share).
    unflushed_since: Option<std::time::Instant>,
}

impl Bus {
    pub fn new(out: impl Write + Send + 'static, disk: impl Backing + Send + 'static, mmio_base: u64) -> Self {
        Self { out: Box::new(out), disk: Disk::new(Box::new(disk)), scratch: 0, mmio_base, bad_accesses: 0, board: None, unflushed_since: None }
    }

    /// The pc machine's bus: the seed's registers plus `board`.
    pub fn with_board(out: impl Write + Send + 'static, disk: impl Backing + Send + 'static, mmio_base: u64, board: Board) -> Self {
        Self { board: Some(board), ..Self::new(out, disk, mmio_base) }
    }

    pub fn output(&mut self) -> &mut Output {
        &mut self.out
    }

    /// Flushes console output that has waited `age` or longer (the machine calls it
    /// after every exit, and with zero before the guest idles).
    pub fn flush_stale(&mut self, age: std::time::Duration) -> io::Result<()> {
        match self.unflushed_since {
            Some(since) if since.elapsed() >= age => {
                self.unflushed_since = None;
                self.out.flush()
            }
            _ => Ok(()),
        }
    }

    fn bad(&mut self, what: std::fmt::Arguments) {
        self.bad_accesses += 1;
        if self.bad_accesses <= LOGGED_BAD_ACCESSES {
            eprintln!("yakvm: ignored {what}");
        }
    }

    /// A port write (OUT) of `data` (1, 2 or 4 bytes) to `port`; `mem` is guest RAM for
    /// the devices that do DMA.
    pub fn write(&mut self, port: u16, data: &[u8], mem: &impl Dma) -> io::Result<Effect> {
        let Some(board) = self.board.as_mut() else {
            return self.register_write(port, data, mem);
        };
        match port {
            SERIAL_PORT | EXIT_PORT => self.register_write(port, data, mem),
            p if (DISK_PORT_BASE..=DISK_PORT_BASE + (COMMAND_PORT - SECTOR_PORT)).contains(&p) => {
                self.register_write(p - DISK_PORT_BASE + SECTOR_PORT, data, mem)
            }
            _ => {
                // A wide OUT writes consecutive ports, as on the ISA bus.
                let mut effect = Effect::Continue;
                for (i, &byte) in data.iter().enumerate() {
                    if board.write(port.wrapping_add(i as u16), byte)? == PortEffect::Reset {
                        effect = Effect::Reset;
                    }
                }
                let uart_out = board.uart.output();
                if !uart_out.is_empty() {
                    self.out.write_all(uart_out)?;
                    uart_out.clear();
                    self.unflushed_since.get_or_insert_with(std::time::Instant::now);
                }
                Ok(effect)
            }
        }
    }

    /// A port read (IN) of `out.len()` bytes from `port`.
    pub fn read(&mut self, port: u16, out: &mut [u8]) {
        match self.board.as_mut() {
            None => self.register_read(port, out),
            Some(board) => {
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = board.read(port.wrapping_add(i as u16));
                }
            }
        }
    }

    /// A write of `data` (1, 2, 4 or 8 bytes) to the seed's register `port`.
    fn register_write(&mut self, port: u16, data: &[u8], mem: &impl Dma) -> io::Result<Effect> {
        let port_width = matches!(data.len(), 1 | 2 | 4);
        match port {
            SERIAL_PORT if port_width => self.out.write_all(data)?,
            p if Disk::<DiskBacking>::owns(p) => self.disk.write(p, data, mem),
            EXIT_PORT if port_width => return Ok(Effect::Exit(data[0])),
            SCRATCH_PORT => self.scratch = le(data),
            _ => self.bad(format_args!("{}-byte write of {:#x} to port {port:#x}", data.len(), le(data))),
        }
        Ok(Effect::Continue)
    }

    /// A read of `out.len()` bytes from the seed's register `port`.
    fn register_read(&mut self, port: u16, out: &mut [u8]) {
        match port {
            SCRATCH_PORT => out.copy_from_slice(&self.scratch.to_le_bytes()[..out.len()]),
            _ => {
                out.fill(0xff);
                self.bad(format_args!("{}-byte read of port {port:#x} (all ones)", out.len()));
            }
        }
    }

    /// The port behind guest-physical `gpa`, if it is a register's first byte.
    fn mmio_port(&self, gpa: u64) -> Option<u16> {
        let offset = gpa.checked_sub(self.mmio_base)?;
        (offset % MMIO_STRIDE == 0 && offset / MMIO_STRIDE < MMIO_PORTS).then(|| (offset / MMIO_STRIDE) as u16)
    }

    pub fn mmio_write(&mut self, gpa: u64, data: &[u8], mem: &impl Dma) -> io::Result<Effect> {
        match self.mmio_port(gpa) {
            Some(port) => self.register_write(port, data, mem),
            None => {
                self.bad(format_args!("{}-byte MMIO write of {:#x} at {gpa:#x}", data.len(), le(data)));
                Ok(Effect::Continue)
            }
        }
    }

    pub fn mmio_read(&mut self, gpa: u64, out: &mut [u8]) {
        match self.mmio_port(gpa) {
            Some(port) => self.register_read(port, out),
            None => {
                out.fill(0xff);
                self.bad(format_args!("{}-byte MMIO read at {gpa:#x} (all ones)", out.len()));
            }
        }
    }
}

fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..data.len()].copy_from_slice(data);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::NoDisk;

    struct NoRam;
    impl Dma for NoRam {
        fn read(&self, _: u64, _: &mut [u8]) -> Option<()> {
            None
        }
        fn write(&self, _: u64, _: &[u8]) -> Option<()> {
            None
        }
    }

    /// Console output the test can read back while the bus owns a handle to it.
    #[derive(Clone, Default)]
    pub(crate) struct SharedOut(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
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

    fn bus(base: u64) -> (Bus, SharedOut) {
        let out = SharedOut::default();
        (Bus::new(out.clone(), NoDisk, base), out)
    }

    #[test]
    fn serial_by_port_and_by_mmio() {
        let (mut bus, out) = bus(0x1000_0000);
        assert_eq!(bus.write(SERIAL_PORT, b"hi", &NoRam).unwrap(), Effect::Continue);
        bus.mmio_write(0x1000_0000 + 0x10 * 8, b"!!!!", &NoRam).unwrap();
        assert_eq!(out.bytes(), b"hi!!!!");
        // 8 bytes is not a port width: ignored, counted.
        bus.mmio_write(0x1000_0080, b"12345678", &NoRam).unwrap();
        assert_eq!(out.bytes(), b"hi!!!!");
        assert_eq!(bus.bad_accesses, 1);
    }

    #[test]
    fn exit_port_ends_the_run() {
        let (mut bus, _) = bus(0);
        assert_eq!(bus.write(EXIT_PORT, &[7, 1], &NoRam).unwrap(), Effect::Exit(7));
    }

    #[test]
    fn scratch_reads_back_and_unknown_reads_all_ones() {
        let (mut bus, _) = bus(0x8000);
        bus.mmio_write(0x8000 + 0xff * 8, &0x1122_3344_5566_7788u64.to_le_bytes(), &NoRam).unwrap();
        let mut b = [0u8; 2];
        bus.read(SCRATCH_PORT, &mut b);
        assert_eq!(b, [0x88, 0x77]);
        bus.mmio_read(0x8000 + 3, &mut b); // not a register's first byte
        assert_eq!(b, [0xff, 0xff]);
        let mut w = [0u8; 4];
        bus.read(0x60, &mut w);
        assert_eq!(w, [0xff; 4]);
        assert_eq!(bus.bad_accesses, 2);
    }
}
