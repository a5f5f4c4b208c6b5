//! An IDE (ATA) channel with up to two disks (`--ide FILE`, given once for the master,
//! twice for the master and the slave), as the PC's primary channel: the command block at
//! 0x1f0-0x1f7, the control block at 0x3f6, IRQ14. Programmed I/O only, LBA28 (CHS
//! addresses are taken through a 16-head, 63-sector geometry), what xv6's `ide.c` and
//! most hobby kernels' drivers use:
//!
//! | port | read | write |
//! |---|---|---|
//! | 0x1f0 | data (16 or 32 bits at a time) | data |
//! | 0x1f1 | error (0x04: command aborted) | features (ignored) |
//! | 0x1f2-0x1f5 | sector count, LBA bits 0-7, 8-15, 16-23 | the same |
//! | 0x1f6 | drive/head: bit 4 the drive, bit 6 LBA, bits 0-3 LBA bits 24-27 | the same |
//! | 0x1f7 | status: BSY 0x80 (never), DRDY 0x40, DSC 0x10, DRQ 0x08, ERR 0x01; 0 for a drive that is not there | command |
//! | 0x3f6 | alternate status | device control: bit 1 nIEN (no IRQ14), bit 2 SRST |
//!
//! Commands: IDENTIFY DEVICE (0xec), READ SECTORS (0x20, 0x21), WRITE SECTORS (0x30,
//! 0x31), READ/WRITE MULTIPLE (0xc4, 0xc5: one sector per block), FLUSH CACHE (0xe7),
//! and SET MULTIPLE MODE, SET FEATURES, INITIALIZE DEVICE PARAMETERS, IDLE, STANDBY
//! (0xc6, 0xef, 0x91, 0xe3, 0xe2, accepted and ignored); any other aborts (ERR, error
//! 0x04), as does a sector outside the disk. A sector count of 0 means 256.
//!
//! IRQ14 (an edge, unless nIEN) comes when a sector's data is ready to be read (each
//! sector of a READ, and IDENTIFY's block), after each sector a WRITE took (the last one
//! when it is on the disk), and when a command ends without data (or is aborted).
//! The disks are read and written synchronously, on the vCPU thread that asks: a PIO
//! transfer is the CPU's own work on a PC too.

use std::io;

use crate::disk::Backing;

pub const COMMAND_BASE: u16 = 0x1f0;
pub const COMMAND_LEN: u16 = 8;
pub const CONTROL_PORT: u16 = 0x3f6;
pub const IRQ: u8 = 14;
pub const SECTOR: usize = 512;
/// Most sectors LBA28 addresses.
const LBA28_SECTORS: u64 = 1 << 28;

const REG_DATA: u16 = 0;
const REG_ERROR: u16 = 1;
const REG_COUNT: u16 = 2;
const REG_LBA_LOW: u16 = 3;
const REG_LBA_MID: u16 = 4;
const REG_LBA_HIGH: u16 = 5;
const REG_DRIVE: u16 = 6;
const REG_STATUS: u16 = 7;

const STATUS_ERR: u8 = 0x01;
const STATUS_DRQ: u8 = 0x08;
const STATUS_DSC: u8 = 0x10;
const STATUS_DRDY: u8 = 0x40;
const READY: u8 = STATUS_DRDY | STATUS_DSC;
const ERROR_ABORTED: u8 = 0x04;

const DRIVE_SLAVE: u8 = 1 << 4;
const DRIVE_LBA: u8 = 1 << 6;
const CONTROL_NIEN: u8 = 1 << 1;
const CONTROL_SRST: u8 = 1 << 2;

const CMD_READ: [u8; 3] = [0x20, 0x21, 0xc4];
const CMD_WRITE: [u8; 3] = [0x30, 0x31, 0xc5];
const CMD_IDENTIFY: u8 = 0xec;
const CMD_FLUSH: u8 = 0xe7;
const CMD_ACCEPTED: [u8; 5] = [0xc6, 0xef, 0x91, 0xe3, 0xe2];

/// CHS translation for CHS-addressed commands (and IDENTIFY's default geometry).
const HEADS: u64 = 16;
const SECTORS_PER_TRACK: u64 = 63;

/// A data transfer in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transfer {
    None,
    /// The guest reads the buffer; `left` more sectors after it, from `lba`.
    Read { lba: u64, left: u32 },
    /// The guest fills the buffer for sector `lba`; `left` more after it.
    Write { lba: u64, left: u32 },
    /// IDENTIFY's block.
    Identify,
}

/// One IDE channel. See the [module documentation](self).
pub struct IdeChannel<B: Backing> {
    disks: [Option<B>; 2],
    features: u8,
    count: u8,
    lba: [u8; 3],
    drive: u8,
    status: u8,
    error: u8,
    control: u8,
    buffer: Vec<u8>,
    at: usize,
    transfer: Transfer,
    irq: bool,
    /// Sectors read and written (for `--stats`, and the tests).
    pub sectors_read: u64,
    pub sectors_written: u64,
}

impl<B: Backing> IdeChannel<B> {
    /// A channel with `master` and `slave`.
    pub fn new(master: Option<B>, slave: Option<B>) -> Self {
        Self {
            disks: [master, slave],
            features: 0,
            count: 0,
            lba: [0; 3],
            drive: 0,
            status: READY,
            error: 0,
            control: 0,
            buffer: vec![0; SECTOR],
            at: SECTOR,
            transfer: Transfer::None,
            irq: false,
            sectors_read: 0,
            sectors_written: 0,
        }
    }

    fn selected(&self) -> usize {
        usize::from(self.drive & DRIVE_SLAVE != 0)
    }

    fn present(&self) -> bool {
        self.disks[self.selected()].is_some()
    }

    /// Whether IRQ14 had an edge since the last call.
    pub fn take_irq(&mut self) -> bool {
        std::mem::take(&mut self.irq)
    }

    fn interrupt(&mut self) {
        if self.control & CONTROL_NIEN == 0 {
            self.irq = true;
        }
    }

    /// A read of `data.len()` bytes at `port` (the data port takes 2 or 4 at a time).
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        if port == CONTROL_PORT {
            data.fill(self.status_value());
            return;
        }
        match port.wrapping_sub(COMMAND_BASE) {
            REG_DATA => {
                for byte in data.iter_mut() {
                    *byte = self.read_data_byte();
                }
                self.data_moved();
            }
            other => {
                let value = match other {
                    REG_ERROR => self.error,
                    REG_COUNT => self.count,
                    REG_LBA_LOW => self.lba[0],
                    REG_LBA_MID => self.lba[1],
                    REG_LBA_HIGH => self.lba[2],
                    REG_DRIVE => self.drive,
                    REG_STATUS => self.status_value(),
                    _ => 0xff,
                };
                data.fill(value);
            }
        }
    }

    fn status_value(&self) -> u8 {
        if self.present() { self.status } else { 0 }
    }

    /// A write at `port`: `Err` if the disk failed on the host.
    pub fn write(&mut self, port: u16, data: &[u8]) -> io::Result<()> {
        let Some(&value) = data.first() else {
            return Ok(());
        };
        if port == CONTROL_PORT {
            if value & CONTROL_SRST != 0 && self.control & CONTROL_SRST == 0 {
                self.reset();
            }
            self.control = value;
            return Ok(());
        }
        match port.wrapping_sub(COMMAND_BASE) {
            REG_DATA => {
                for &byte in data {
                    self.write_data_byte(byte);
                }
                self.data_moved_write()?;
            }
            REG_ERROR => self.features = value,
            REG_COUNT => self.count = value,
            REG_LBA_LOW => self.lba[0] = value,
            REG_LBA_MID => self.lba[1] = value,
            REG_LBA_HIGH => self.lba[2] = value,
            REG_DRIVE => self.drive = value,
            REG_STATUS => self.command(value)?,
            _ => {}
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.transfer = Transfer::None;
        self.at = SECTOR;
        self.status = READY;
        self.error = 0x01; // diagnostics passed
        self.count = 1;
        self.lba = [1, 0, 0];
        self.drive = 0;
    }

    fn read_data_byte(&mut self) -> u8 {
        if self.status & STATUS_DRQ == 0 || self.at >= SECTOR {
            return 0xff;
        }
        let b = self.buffer[self.at];
        self.at += 1;
        b
    }

    fn write_data_byte(&mut self, b: u8) {
        if self.status & STATUS_DRQ == 0 || self.at >= SECTOR || !matches!(self.transfer, Transfer::Write { .. }) {
            return;
        }
        self.buffer[self.at] = b;
        self.at += 1;
    }

    /// After data was read: the next sector, or the end.
    fn data_moved(&mut self) {
        if self.at < SECTOR {
            return;
        }
        match self.transfer {
            Transfer::Read { lba, left } if left > 0 => {
                if self.load(lba).is_ok() {
                    self.transfer = Transfer::Read { lba: lba + 1, left: left - 1 };
                    self.interrupt();
                }
            }
            Transfer::Read { .. } | Transfer::Identify => self.finish(),
            _ => {}
        }
    }

    /// After data was written: a full sector goes to the disk.
    fn data_moved_write(&mut self) -> io::Result<()> {
        let Transfer::Write { lba, left } = self.transfer else {
            return Ok(());
        };
        if self.at < SECTOR {
            return Ok(());
        }
        let disk = self.selected();
        let Some(backing) = self.disks[disk].as_mut() else {
            return Ok(());
        };
        backing.write_at(lba * SECTOR as u64, &self.buffer)?;
        self.sectors_written += 1;
        if left > 0 {
            self.transfer = Transfer::Write { lba: lba + 1, left: left - 1 };
            self.at = 0;
        } else {
            self.finish();
        }
        self.interrupt();
        Ok(())
    }

    fn finish(&mut self) {
        self.transfer = Transfer::None;
        self.status = READY;
    }

    fn abort(&mut self) {
        self.transfer = Transfer::None;
        self.status = READY | STATUS_ERR;
        self.error = ERROR_ABORTED;
        self.interrupt();
    }

    /// The command's first sector and count, checked against the disk.
    fn range(&self) -> Option<(u64, u32)> {
        let count = if self.count == 0 { 256 } else { u32::from(self.count) };
        let lba = if self.drive & DRIVE_LBA != 0 {
            u64::from(self.drive & 0x0f) << 24 | u64::from(self.lba[2]) << 16 | u64::from(self.lba[1]) << 8 | u64::from(self.lba[0])
        } else {
            let cylinder = u64::from(self.lba[2]) << 8 | u64::from(self.lba[1]);
            let (head, sector) = (u64::from(self.drive & 0x0f), u64::from(self.lba[0]));
            if sector == 0 {
                return None;
            }
            (cylinder * HEADS + head) * SECTORS_PER_TRACK + sector - 1
        };
        let sectors = self.sectors();
        (lba + u64::from(count) <= sectors).then_some((lba, count))
    }

    fn sectors(&self) -> u64 {
        self.disks[self.selected()].as_ref().map_or(0, |d| d.len() / SECTOR as u64)
    }

    /// Reads sector `lba` into the buffer, ready for the guest (or aborts).
    fn load(&mut self, lba: u64) -> Result<(), ()> {
        let disk = self.selected();
        let result = match self.disks[disk].as_mut() {
            Some(backing) => backing.read_at(lba * SECTOR as u64, &mut self.buffer),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        if result.is_err() {
            self.abort();
            return Err(());
        }
        self.sectors_read += 1;
        self.at = 0;
        self.status = READY | STATUS_DRQ;
        Ok(())
    }

    fn command(&mut self, command: u8) -> io::Result<()> {
        if !self.present() {
            return Ok(());
        }
        self.error = 0;
        match command {
            c if CMD_READ.contains(&c) => match self.range() {
                Some((lba, count)) => {
                    if self.load(lba).is_ok() {
                        self.transfer = Transfer::Read { lba: lba + 1, left: count - 1 };
                        self.interrupt();
                    }
                }
                None => self.abort(),
            },
            c if CMD_WRITE.contains(&c) => match self.range() {
                Some((lba, count)) => {
                    self.transfer = Transfer::Write { lba, left: count - 1 };
                    self.at = 0;
                    self.status = READY | STATUS_DRQ;
                }
                None => self.abort(),
            },
            CMD_IDENTIFY => {
                self.buffer = identify(self.sectors());
                self.at = 0;
                self.transfer = Transfer::Identify;
                self.status = READY | STATUS_DRQ;
                self.interrupt();
            }
            CMD_FLUSH => {
                let disk = self.selected();
                if let Some(backing) = self.disks[disk].as_mut() {
                    backing.sync()?;
                }
                self.finish();
                self.interrupt();
            }
            c if CMD_ACCEPTED.contains(&c) => {
                self.finish();
                self.interrupt();
            }
            _ => self.abort(),
        }
        Ok(())
    }
}

/// IDENTIFY DEVICE's 256 words for a disk of `sectors` sectors (ATA-6 layout): a fixed
/// disk with LBA, its geometry, serial number, firmware and model strings.
fn identify(sectors: u64) -> Vec<u8> {
    let mut words = [0u16; 256];
    let lba28 = sectors.min(LBA28_SECTORS - 1);
    let cylinders = (lba28 / (HEADS * SECTORS_PER_TRACK)).clamp(1, 16383) as u16;
    words[0] = 0x0040; // fixed disk
    words[1] = cylinders;
    words[3] = HEADS as u16;
    words[6] = SECTORS_PER_TRACK as u16;
    let mut put_string = |from: usize, len: usize, s: &str| {
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(len * 2, b' ');
        for i in 0..len {
            // ATA strings: the first character in each word's high byte.
            words[from + i] = u16::from_be_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        }
    };
    put_string(10, 10, "YAKVM-IDE-0");
    put_string(23, 4, "1.0");
    put_string(27, 20, "yakvm IDE disk");
    words[49] = 1 << 9; // LBA
    words[53] = 1; // words 54-58 valid
    words[54] = cylinders;
    words[55] = HEADS as u16;
    words[56] = SECTORS_PER_TRACK as u16;
    let chs = u32::from(cylinders) * (HEADS * SECTORS_PER_TRACK) as u32;
    words[57] = chs as u16;
    words[58] = (chs >> 16) as u16;
    words[60] = lba28 as u16;
    words[61] = (lba28 >> 16) as u16;
    words[80] = 0x007e; // ATA-1 to ATA-6
    words[83] = 1 << 14;
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk in memory.
    struct Mem(Vec<u8>);

    impl Backing for Mem {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            let at = offset as usize;
            out.copy_from_slice(self.0.get(at..at + out.len()).ok_or(io::ErrorKind::UnexpectedEof)?);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            let at = offset as usize;
            self.0.get_mut(at..at + data.len()).ok_or(io::ErrorKind::UnexpectedEof)?.copy_from_slice(data);
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn disk(sectors: usize) -> Mem {
        Mem((0..sectors * SECTOR).map(|i| (i / SECTOR) as u8 ^ (i % 251) as u8).collect())
    }

    fn outb(ide: &mut IdeChannel<Mem>, port: u16, value: u8) {
        ide.write(port, &[value]).unwrap();
    }

    fn inb(ide: &mut IdeChannel<Mem>, port: u16) -> u8 {
        let mut b = [0];
        ide.read(port, &mut b);
        b[0]
    }

    /// xv6's `idestart`: count, LBA, drive, command.
    fn start(ide: &mut IdeChannel<Mem>, drive: u8, lba: u32, count: u8, command: u8) {
        outb(ide, CONTROL_PORT, 0);
        outb(ide, 0x1f2, count);
        outb(ide, 0x1f3, lba as u8);
        outb(ide, 0x1f4, (lba >> 8) as u8);
        outb(ide, 0x1f5, (lba >> 16) as u8);
        outb(ide, 0x1f6, 0xe0 | (drive & 1) << 4 | ((lba >> 24) & 0x0f) as u8);
        outb(ide, 0x1f7, command);
    }

    fn read_sector(ide: &mut IdeChannel<Mem>) -> Vec<u8> {
        let mut out = vec![0; SECTOR];
        for chunk in out.chunks_mut(4) {
            ide.read(0x1f0, chunk); // insl
        }
        out
    }

    #[test]
    fn reads_sectors_with_an_irq_each() {
        let mut ide = IdeChannel::new(Some(disk(8)), None);
        start(&mut ide, 0, 2, 2, 0x20);
        assert!(ide.take_irq());
        assert_eq!(inb(&mut ide, 0x1f7), 0x58, "DRDY DSC DRQ");
        assert_eq!(read_sector(&mut ide), disk(8).0[2 * SECTOR..3 * SECTOR]);
        assert!(ide.take_irq(), "the second sector's");
        assert_eq!(read_sector(&mut ide), disk(8).0[3 * SECTOR..4 * SECTOR]);
        assert!(!ide.take_irq());
        assert_eq!(inb(&mut ide, 0x1f7), 0x50, "done");
        assert_eq!(ide.sectors_read, 2);
    }

    #[test]
    fn writes_sectors_to_the_disk() {
        let mut ide = IdeChannel::new(Some(disk(4)), Some(disk(4)));
        start(&mut ide, 1, 1, 2, 0x30);
        assert_eq!(inb(&mut ide, 0x1f7) & STATUS_DRQ, STATUS_DRQ);
        for sector in 0..2u8 {
            let data = vec![0xa0 | sector; SECTOR];
            for chunk in data.chunks(4) {
                ide.write(0x1f0, chunk).unwrap(); // outsl
            }
            assert!(ide.take_irq());
        }
        assert_eq!(inb(&mut ide, 0x1f7), 0x50);
        let slave = ide.disks[1].as_ref().unwrap();
        assert!(slave.0[SECTOR..2 * SECTOR].iter().all(|&b| b == 0xa0));
        assert!(slave.0[2 * SECTOR..3 * SECTOR].iter().all(|&b| b == 0xa1));
        assert_eq!(ide.disks[0].as_ref().unwrap().0, disk(4).0, "the master untouched");
        assert_eq!(ide.sectors_written, 2);
    }

    #[test]
    fn an_absent_drive_reads_status_0() {
        let mut ide = IdeChannel::new(Some(disk(1)), None);
        outb(&mut ide, 0x1f6, 0xe0 | 1 << 4);
        assert_eq!(inb(&mut ide, 0x1f7), 0, "xv6's test for disk 1");
        start(&mut ide, 1, 0, 1, 0x20);
        assert!(!ide.take_irq());
        outb(&mut ide, 0x1f6, 0xe0);
        assert_eq!(inb(&mut ide, 0x1f7), 0x50);
    }

    #[test]
    fn identify_describes_the_disk() {
        let mut ide = IdeChannel::new(Some(disk(1000)), None);
        outb(&mut ide, 0x1f6, 0xa0);
        outb(&mut ide, 0x1f7, CMD_IDENTIFY);
        assert!(ide.take_irq());
        let block = read_sector(&mut ide);
        let word = |i: usize| u16::from_le_bytes([block[2 * i], block[2 * i + 1]]);
        assert_eq!((word(0), word(49) & 0x200, word(60), word(61)), (0x40, 0x200, 1000, 0));
        let model: Vec<u8> = (27..34).flat_map(|i| word(i).to_be_bytes()).collect();
        assert_eq!(&model, b"yakvm IDE disk", "the model, first character in the high byte");
        assert_eq!(inb(&mut ide, 0x1f7), 0x50);
    }

    #[test]
    fn bad_commands_and_ranges_abort() {
        let mut ide = IdeChannel::new(Some(disk(4)), None);
        start(&mut ide, 0, 3, 2, 0x20);
        assert_eq!((inb(&mut ide, 0x1f7), inb(&mut ide, 0x1f1)), (0x51, 0x04));
        assert!(ide.take_irq());
        start(&mut ide, 0, 0, 1, 0x99);
        assert_eq!(inb(&mut ide, 0x1f7), 0x51);
        outb(&mut ide, CONTROL_PORT, CONTROL_NIEN);
        outb(&mut ide, 0x1f7, 0x99);
        ide.take_irq();
        start(&mut ide, 0, 0, 1, 0xe7);
        assert_eq!(inb(&mut ide, 0x1f7), 0x50);
        // Data with no transfer: floats, dropped.
        assert_eq!(inb(&mut ide, 0x1f0), 0xff);
        ide.write(0x1f0, &[1, 2]).unwrap();
    }

    #[test]
    fn any_input_is_safe() {
        let mut ide = IdeChannel::new(Some(disk(2)), Some(disk(1)));
        let mut seed = 0x1234_5678u32;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let port = [0x1f0, 0x1f1, 0x1f2, 0x1f3, 0x1f4, 0x1f5, 0x1f6, 0x1f7, 0x3f6][(seed % 9) as usize];
            let value = (seed >> 8) as u8;
            if seed & 0x8000_0000 != 0 {
                let _ = ide.write(port, &[value, value]);
            } else {
                let mut b = [0; 2];
                ide.read(port, &mut b);
            }
        }
    }
}
