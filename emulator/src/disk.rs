//! The DMA disk of the simple-kvm-io spec: 512-byte sectors moved between a backing file
//! and guest memory, driven by three write-only ports.
//!
//! | port | width | meaning |
//! |---|---|---|
//! | 0x20 | 4 | sector number |
//! | 0x21 | 4 | guest-physical DMA address |
//! | 0x22 | 1 | command: 0 read, 1 write, 2 setup |
//!
//! `setup` places the status structure at the DMA address: `u64` disk size in bytes at
//! offset 0, `i32` last error at offset 8, 16 bytes in all. After every later command the
//! status is updated in place, before the guest's OUT completes. Errors: EINVAL (22) for a
//! sector past the end or an unknown command, EFAULT (14) for a DMA range not entirely in
//! RAM, EBUSY (16) for a second setup (the status stays where it was), EIO (5) when the
//! backing file fails. A command before setup, or a setup whose structure is outside RAM,
//! has nowhere to report: it is ignored and logged.

use std::io;
use std::os::unix::fs::FileExt;

pub const SECTOR_PORT: u16 = 0x20;
pub const DMA_PORT: u16 = 0x21;
pub const COMMAND_PORT: u16 = 0x22;

pub const SECTOR_SIZE: usize = 512;
const STATUS_SIZE: usize = 16;

const CMD_READ: u8 = 0;
const CMD_WRITE: u8 = 1;
const CMD_SETUP: u8 = 2;

pub const EIO: i32 = 5;
pub const EFAULT: i32 = 14;
pub const EBUSY: i32 = 16;
pub const EINVAL: i32 = 22;

/// Guest memory as a DMA engine sees it: `None` when the range is not entirely RAM.
pub trait Dma {
    fn read(&self, gpa: u64, out: &mut [u8]) -> Option<()>;
    fn write(&self, gpa: u64, data: &[u8]) -> Option<()>;
}

/// What holds the disk's bytes.
pub trait Backing {
    fn len(&self) -> u64;
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Puts every write on stable storage.
    fn sync(&mut self) -> io::Result<()>;
}

impl Backing for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(out, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// No `--disk`: a disk of size 0.
pub struct NoDisk;

/// A boxed backing (the machine's: one type, whatever holds the bytes).
impl<B: Backing + ?Sized> Backing for Box<B> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, out)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

impl Backing for NoDisk {
    fn len(&self) -> u64 {
        0
    }
    fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A disk image file (`--disk`): memory-mapped where the file system allows it (a sector is
/// then a copy), read and written with `pread`/`pwrite` otherwise (a 9p share without a
/// page cache).
pub struct DiskFile {
    file: std::fs::File,
    map: Option<crate::sys::FileMapping>,
}

impl DiskFile {
    pub fn new(file: std::fs::File) -> Self {
        let len = Backing::len(&file);
        let map = usize::try_from(len).ok().and_then(|len| crate::sys::FileMapping::new(&file, len).ok());
        Self { file, map }
    }

    /// Whether the file is memory-mapped.
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

impl Backing for DiskFile {
    fn len(&self) -> u64 {
        Backing::len(&self.file)
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        match &self.map {
            Some(map) => map.read(offset, out).ok_or_else(|| io::ErrorKind::UnexpectedEof.into()),
            None => Backing::read_at(&mut self.file, offset, out),
        }
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match &self.map {
            Some(map) => map.write(offset, data).ok_or_else(|| io::ErrorKind::UnexpectedEof.into()),
            None => Backing::write_at(&mut self.file, offset, data),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        if let Some(map) = &self.map {
            map.sync()?;
        }
        self.file.sync_data()
    }
}

/// `--disk FILE` or none (a disk of size 0).
impl Backing for Option<DiskFile> {
    fn len(&self) -> u64 {
        self.as_ref().map_or(0, Backing::len)
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        match self {
            Some(f) => Backing::read_at(f, offset, out),
            None => NoDisk.read_at(offset, out),
        }
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Some(f) => Backing::write_at(f, offset, data),
            None => NoDisk.write_at(offset, data),
        }
    }
    fn sync(&mut self) -> io::Result<()> {
        self.as_mut().map_or(Ok(()), Backing::sync)
    }
}

/// An in-memory disk (tests).
impl Backing for Vec<u8> {
    fn len(&self) -> u64 {
        Vec::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let start = offset as usize;
        out.copy_from_slice(self.get(start..start + out.len()).ok_or(io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = offset as usize;
        self.get_mut(start..start + data.len()).ok_or(io::ErrorKind::UnexpectedEof)?.copy_from_slice(data);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Disk<B: Backing> {
    backing: B,
    /// The backing's size, read once: the disk is ours for the run, and asking the file
    /// on every command cost two `fstat`s per sector (each a round trip on a 9p share).
    size: u64,
    sector: u32,
    dma: u32,
    /// Where the status structure lives, once set up.
    status: Option<u64>,
    /// Commands that could not be reported (before setup), and bad accesses.
    pub ignored: u64,
}

impl<B: Backing> Disk<B> {
    pub fn new(backing: B) -> Self {
        let size = backing.len();
        Self { backing, size, sector: 0, dma: 0, status: None, ignored: 0 }
    }

    pub fn owns(port: u16) -> bool {
        (SECTOR_PORT..=COMMAND_PORT).contains(&port)
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.backing.sync()
    }

    fn ignore(&mut self, what: std::fmt::Arguments) {
        self.ignored += 1;
        if self.ignored <= 10 {
            eprintln!("yakvm: disk: ignored {what}");
        }
    }

    /// An OUT of `data` to one of the disk's ports.
    pub fn write(&mut self, port: u16, data: &[u8], mem: &(impl Dma + ?Sized)) {
        let value = data.iter().rev().fold(0u32, |a, &b| (a << 8) | u32::from(b));
        match (port, data.len()) {
            (SECTOR_PORT, 4) => self.sector = value,
            (DMA_PORT, 4) => self.dma = value,
            (COMMAND_PORT, 1) => self.command(data[0], mem),
            _ => self.ignore(format_args!("{}-byte write to port {port:#x} (wrong width)", data.len())),
        }
    }

    fn command(&mut self, command: u8, mem: &(impl Dma + ?Sized)) {
        let Some(status) = self.status else {
            if command == CMD_SETUP {
                self.setup(mem);
            } else {
                self.ignore(format_args!("command {command} before setup"));
            }
            return;
        };
        let error = match command {
            CMD_SETUP => EBUSY,
            CMD_READ | CMD_WRITE => self.transfer(command == CMD_WRITE, mem),
            _ => EINVAL,
        };
        self.report(status, error, mem);
    }

    fn setup(&mut self, mem: &(impl Dma + ?Sized)) {
        let at = u64::from(self.dma);
        if mem.read(at, &mut [0u8; STATUS_SIZE]).is_none() {
            self.ignore(format_args!("setup with the status at {at:#x}, outside RAM"));
            return;
        }
        self.status = Some(at);
        self.report(at, 0, mem);
    }

    /// Moves one sector; returns the error code (0 on success).
    fn transfer(&mut self, to_disk: bool, mem: &(impl Dma + ?Sized)) -> i32 {
        let offset = u64::from(self.sector) * SECTOR_SIZE as u64;
        if offset + SECTOR_SIZE as u64 > self.size {
            return EINVAL;
        }
        let dma = u64::from(self.dma);
        let mut buf = [0u8; SECTOR_SIZE];
        if to_disk {
            if mem.read(dma, &mut buf).is_none() {
                return EFAULT;
            }
            if self.backing.write_at(offset, &buf).is_err() {
                return EIO;
            }
        } else {
            // Check the destination before touching the file.
            if mem.read(dma, &mut [0u8; SECTOR_SIZE]).is_none() {
                return EFAULT;
            }
            if self.backing.read_at(offset, &mut buf).is_err() {
                return EIO;
            }
            mem.write(dma, &buf).expect("checked above");
        }
        0
    }

    fn report(&mut self, at: u64, error: i32, mem: &(impl Dma + ?Sized)) {
        let mut status = [0u8; STATUS_SIZE];
        status[..8].copy_from_slice(&self.size.to_le_bytes());
        status[8..12].copy_from_slice(&error.to_le_bytes());
        // Inside RAM: checked at setup, and RAM does not move.
        let _ = mem.write(at, &status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Guest RAM of the tests.
    struct Ram(RefCell<Vec<u8>>);

    impl Dma for Ram {
        fn read(&self, gpa: u64, out: &mut [u8]) -> Option<()> {
            let s = gpa as usize;
            out.copy_from_slice(self.0.borrow().get(s..s.checked_add(out.len())?)?);
            Some(())
        }
        fn write(&self, gpa: u64, data: &[u8]) -> Option<()> {
            let s = gpa as usize;
            self.0.borrow_mut().get_mut(s..s.checked_add(data.len())?)?.copy_from_slice(data);
            Some(())
        }
    }

    fn status(ram: &Ram, at: usize) -> (u64, i32) {
        let r = ram.0.borrow();
        (u64::from_le_bytes(r[at..at + 8].try_into().unwrap()), i32::from_le_bytes(r[at + 8..at + 12].try_into().unwrap()))
    }

    fn out(disk: &mut Disk<Vec<u8>>, ram: &Ram, port: u16, value: u32) {
        let bytes = value.to_le_bytes();
        let data = if port == COMMAND_PORT { &bytes[..1] } else { &bytes[..] };
        disk.write(port, data, ram);
    }

    fn setup() -> (Disk<Vec<u8>>, Ram) {
        let mut disk = Disk::new(vec![0u8; 8192]);
        let ram = Ram(RefCell::new(vec![0u8; 4096]));
        out(&mut disk, &ram, DMA_PORT, 0x100);
        out(&mut disk, &ram, COMMAND_PORT, 2);
        (disk, ram)
    }

    #[test]
    fn setup_reports_the_size() {
        let (_, ram) = setup();
        assert_eq!(status(&ram, 0x100), (8192, 0));
    }

    #[test]
    fn write_then_read_back() {
        let (mut disk, ram) = setup();
        ram.0.borrow_mut()[0x200..0x400].fill(0xab);
        out(&mut disk, &ram, SECTOR_PORT, 15);
        out(&mut disk, &ram, DMA_PORT, 0x200);
        out(&mut disk, &ram, COMMAND_PORT, 1);
        assert_eq!(status(&ram, 0x100), (8192, 0));
        assert_eq!(&disk.backing[15 * 512..16 * 512], &[0xab; 512]);
        out(&mut disk, &ram, DMA_PORT, 0x600);
        out(&mut disk, &ram, COMMAND_PORT, 0);
        assert_eq!(&ram.0.borrow()[0x600..0x800], &[0xab; 512]);
    }

    #[test]
    fn errors_land_in_the_status() {
        let (mut disk, ram) = setup();
        out(&mut disk, &ram, SECTOR_PORT, 16); // one past the last sector
        out(&mut disk, &ram, COMMAND_PORT, 0);
        assert_eq!(status(&ram, 0x100).1, EINVAL);
        out(&mut disk, &ram, SECTOR_PORT, 0);
        out(&mut disk, &ram, DMA_PORT, 4096 - 511); // crosses the end of RAM
        out(&mut disk, &ram, COMMAND_PORT, 1);
        assert_eq!(status(&ram, 0x100).1, EFAULT);
        out(&mut disk, &ram, COMMAND_PORT, 7);
        assert_eq!(status(&ram, 0x100).1, EINVAL);
        out(&mut disk, &ram, DMA_PORT, 0x300);
        out(&mut disk, &ram, COMMAND_PORT, 2); // second setup: EBUSY where it was
        assert_eq!(status(&ram, 0x100).1, EBUSY);
        assert_eq!(status(&ram, 0x300), (0, 0));
        assert!(disk.backing.iter().all(|&b| b == 0), "no failed command touched the disk");
    }

    #[test]
    fn commands_before_setup_and_bad_widths_are_ignored() {
        let mut disk = Disk::new(vec![0u8; 1024]);
        let ram = Ram(RefCell::new(vec![0u8; 4096]));
        out(&mut disk, &ram, COMMAND_PORT, 0);
        disk.write(SECTOR_PORT, &[1, 0], &ram);
        out(&mut disk, &ram, DMA_PORT, 0x10_0000); // status outside RAM
        out(&mut disk, &ram, COMMAND_PORT, 2);
        assert_eq!(disk.ignored, 3);
        assert!(disk.status.is_none());
        assert!(ram.0.borrow().iter().all(|&b| b == 0));
    }

    /// A backing store that counts the calls made to it.
    #[derive(Default)]
    struct Counting {
        bytes: Vec<u8>,
        lens: std::cell::Cell<u32>,
        reads: u32,
        writes: u32,
    }

    impl Backing for Counting {
        fn len(&self) -> u64 {
            self.lens.set(self.lens.get() + 1);
            self.bytes.len() as u64
        }
        fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            self.reads += 1;
            self.bytes.read_at(offset, out)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.writes += 1;
            self.bytes.write_at(offset, data)
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Each sector moved is one call to the backing file and nothing else: on a 9p share
    /// every call is a round trip to the host (the size was asked twice per sector once,
    /// which made the disk 2.35 times slower than on KVM).
    #[test]
    fn one_backing_call_per_sector() {
        let mut disk = Disk::new(Counting { bytes: vec![0u8; 64 * 512], ..Default::default() });
        let ram = Ram(RefCell::new(vec![0u8; 4096]));
        let out = |disk: &mut Disk<Counting>, port: u16, value: u32| {
            let bytes = value.to_le_bytes();
            disk.write(port, if port == COMMAND_PORT { &bytes[..1] } else { &bytes[..] }, &ram);
        };
        out(&mut disk, DMA_PORT, 0x100);
        out(&mut disk, COMMAND_PORT, u32::from(CMD_SETUP));
        out(&mut disk, DMA_PORT, 0x200);
        for pass in 0..4 {
            for s in 0..64 {
                out(&mut disk, SECTOR_PORT, s);
                out(&mut disk, COMMAND_PORT, u32::from(if pass == 3 { CMD_WRITE } else { CMD_READ }));
            }
        }
        out(&mut disk, SECTOR_PORT, 64); // past the end: refused without asking the file
        out(&mut disk, COMMAND_PORT, u32::from(CMD_READ));
        assert_eq!(status(&ram, 0x100), (64 * 512, EINVAL));
        let b = &disk.backing;
        assert_eq!((b.lens.get(), b.reads, b.writes), (1, 3 * 64, 64));
    }

    #[test]
    fn no_disk_has_size_zero() {
        let mut disk = Disk::new(NoDisk);
        let ram = Ram(RefCell::new(vec![0u8; 1024]));
        disk.write(DMA_PORT, &0u32.to_le_bytes(), &ram);
        disk.write(COMMAND_PORT, &[2], &ram);
        disk.write(COMMAND_PORT, &[0], &ram);
        let r = ram.0.borrow();
        assert_eq!(u64::from_le_bytes(r[0..8].try_into().unwrap()), 0);
        assert_eq!(i32::from_le_bytes(r[8..12].try_into().unwrap()), EINVAL);
    }

    #[test]
    fn a_mapped_disk_file_reads_writes_and_syncs_like_the_file() {
        let path = std::env::temp_dir().join(format!("yakvm-disk-test-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 4 * SECTOR_SIZE]).unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut disk = DiskFile::new(file);
        assert!(disk.is_mapped(), "a file in the temporary directory can be mapped");
        assert_eq!(Backing::len(&disk), 4 * SECTOR_SIZE as u64);
        disk.write_at(SECTOR_SIZE as u64, &[1u8; SECTOR_SIZE]).unwrap();
        let mut back = [0u8; SECTOR_SIZE];
        disk.read_at(SECTOR_SIZE as u64, &mut back).unwrap();
        assert_eq!(back, [1u8; SECTOR_SIZE]);
        assert!(disk.read_at(4 * SECTOR_SIZE as u64, &mut back).is_err(), "past the end");
        assert!(disk.write_at(u64::MAX, &[0]).is_err());
        disk.sync().unwrap();
        // The file itself has the write (another reader sees it).
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[SECTOR_SIZE..2 * SECTOR_SIZE], &[1u8; SECTOR_SIZE][..]);
        assert_eq!(bytes[0], 7);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_empty_disk_file_is_not_mapped() {
        let path = std::env::temp_dir().join(format!("yakvm-disk-empty-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut disk = DiskFile::new(file);
        assert!(!disk.is_mapped());
        assert!(disk.read_at(0, &mut [0u8; SECTOR_SIZE]).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
