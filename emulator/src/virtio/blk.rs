//! virtio-blk (virtio 1.2, 5.2): a disk behind one request queue, backed by a raw image
//! file (`--drive FILE[,readonly=on]`), served by a worker thread of its own.
//!
//! - [`Drive`]: the image, opened and locked (`flock`: exclusive for a writable drive,
//!   shared for a read-only one, so two yakvms never write one image) by [`Drive::open`],
//!   which refuses what cannot be a disk with one message naming the problem.
//! - [`features`] and [`config_space`]: what the device offers (VERSION_1, RING_EVENT_IDX,
//!   INDIRECT_DESC, BLK_F_FLUSH, BLK_F_SEG_MAX, BLK_F_BLK_SIZE, and BLK_F_RO for a
//!   read-only drive) and its configuration structure (capacity, seg_max, blk_size).
//! - [`Blk::process`]: takes every available chain of the queue, parses it
//!   (`blk_request.rs`: every rule there), does the I/O through a [`Backend`], writes the
//!   status and fills the used ring. FLUSH is `fdatasync` before its status is written.
//! - Its worker thread is `virtio::spawn_queue_worker`'s: it waits on the queue's EventFd
//!   and runs `process`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use virtio_bindings::virtio_blk as b;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::blk_request::{self, Bad, Kind, Request, ID_BYTES, SECTOR_SIZE};
use super::{feature, Processed, QueueSlot, TRANSPORT_FEATURES};

/// The device type (virtio 1.2, 5).
pub const DEVICE_ID: u16 = 2;
/// The one request queue's size (the most descriptors a chain may have without an
/// indirect table).
pub const QUEUE_SIZE: u16 = 256;
/// Data segments a request may have: the queue's descriptors but the header's and the
/// status's (what Linux reads as `seg_max`).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// The configuration structure's size (virtio_blk_config up to its write-zeroes fields).
pub const CONFIG_LEN: usize = 0x40;

/// Why a `--drive` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("--drive {spec}: unknown option '{option}' (FILE[,readonly=on])")]
    BadOption { spec: String, option: String },
    #[error("--drive: no file name")]
    NoFile,
    #[error("--drive {path}: {error}")]
    Open { path: String, error: io::Error },
    #[error("--drive {path}: not a regular file (a raw disk image)")]
    NotAFile { path: String },
    #[error("--drive {path}: {len} bytes, not a multiple of 512 (a raw disk image is whole sectors)")]
    BadSize { path: String, len: u64 },
    #[error("--drive {path}: empty (0 bytes)")]
    Empty { path: String },
    #[error("--drive {path}: in use by another yakvm (or another --drive): the file is locked")]
    Locked { path: String },
}

/// A `--drive`: the image file, locked for as long as this value lives.
#[derive(Debug)]
pub struct Drive {
    file: Flock<File>,
    pub path: PathBuf,
    /// Bytes (a multiple of 512).
    pub len: u64,
    pub read_only: bool,
}

impl Drive {
    /// Opens `spec` (FILE[,readonly=on|off]): a regular file of whole sectors, not locked
    /// by anyone else. The file is not written.
    pub fn open(spec: &str) -> Result<Self, DriveError> {
        let mut parts = spec.split(',');
        let path = parts.next().filter(|p| !p.is_empty()).ok_or(DriveError::NoFile)?;
        let mut read_only = false;
        for option in parts {
            read_only = match option {
                "readonly=on" | "readonly" => true,
                "readonly=off" => false,
                _ => return Err(DriveError::BadOption { spec: spec.into(), option: option.into() }),
            };
        }
        let name = path.to_string();
        let kind = std::fs::metadata(path).map_err(|error| DriveError::Open { path: name.clone(), error })?.file_type();
        if !kind.is_file() {
            return Err(DriveError::NotAFile { path: name });
        }
        let file = OpenOptions::new().read(true).write(!read_only).open(path).map_err(|error| DriveError::Open { path: name.clone(), error })?;
        let meta = file.metadata().map_err(|error| DriveError::Open { path: name.clone(), error })?;
        if !meta.file_type().is_file() || meta.file_type().is_block_device() {
            return Err(DriveError::NotAFile { path: name });
        }
        let len = meta.len();
        if len == 0 {
            return Err(DriveError::Empty { path: name });
        }
        if len % SECTOR_SIZE != 0 {
            return Err(DriveError::BadSize { path: name, len });
        }
        let how = if read_only { FlockArg::LockSharedNonblock } else { FlockArg::LockExclusiveNonblock };
        let file = Flock::lock(file, how).map_err(|_| DriveError::Locked { path: name.clone() })?;
        Ok(Self { file, path: path.into(), len, read_only })
    }

    /// GET_ID's answer: the file's name, at most 20 bytes (zero-padded).
    pub fn id(&self) -> [u8; ID_BYTES] {
        let mut id = [0u8; ID_BYTES];
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let n = name.len().min(ID_BYTES);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        id
    }
}

/// Where the data lives: the drive's file, or a test's bytes.
pub trait Backend: Send + Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Everything written so far on stable storage (`fdatasync`).
    fn flush(&self) -> io::Result<()>;
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
}

impl Backend for Drive {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The features the device offers.
pub fn features(read_only: bool) -> u64 {
    let mut f = TRANSPORT_FEATURES | feature(b::VIRTIO_BLK_F_FLUSH) | feature(b::VIRTIO_BLK_F_SEG_MAX) | feature(b::VIRTIO_BLK_F_BLK_SIZE);
    if read_only {
        f |= feature(b::VIRTIO_BLK_F_RO);
    }
    f
}

/// The configuration structure (virtio 1.2, 5.2.4): capacity in sectors (+0), size_max
/// (+8, not offered), seg_max (+12), geometry (+16, not offered), blk_size (+20); the rest
/// (topology, writeback, discard and write-zeroes limits) is not offered and reads 0.
pub fn config_space(len: u64) -> Vec<u8> {
    let mut c = vec![0u8; CONFIG_LEN];
    c[0..8].copy_from_slice(&(len / SECTOR_SIZE).to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    c
}

/// What the device counted.
#[derive(Debug, Default)]
pub struct BlkStats {
    pub requests: AtomicU64,
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub flushes: AtomicU64,
    /// Requests answered IOERR or UNSUPP.
    pub errors: AtomicU64,
    /// Chains that could not be answered (the device then needs a reset).
    pub broken: AtomicU64,
}

/// The device's request logic: a disk and its identity.
pub struct Blk<B: Backend> {
    pub backend: B,
    pub capacity: u64,
    pub read_only: bool,
    pub id: [u8; ID_BYTES],
    pub stats: Arc<BlkStats>,
}

impl<B: Backend> Blk<B> {
    /// Does `request`; returns its status and how many bytes it wrote into guest buffers
    /// (not counting the status).
    fn execute<M: GuestMemory>(&self, request: &Request, mem: &M) -> (u8, u32) {
        let ok = b::VIRTIO_BLK_S_OK as u8;
        let ioerr = b::VIRTIO_BLK_S_IOERR as u8;
        let mut buf = Vec::new();
        let mut done = 0u64;
        match request.kind {
            Kind::In { offset } => {
                for s in &request.data {
                    buf.resize(s.len as usize, 0);
                    if self.backend.read_at(&mut buf, offset + done).is_err() || mem.write_slice(&buf, GuestAddress(s.addr)).is_err() {
                        return (ioerr, done as u32);
                    }
                    done += s.len;
                }
                self.stats.read_bytes.fetch_add(done, Ordering::Relaxed);
                (ok, done as u32)
            }
            Kind::Out { offset } => {
                for s in &request.data {
                    buf.resize(s.len as usize, 0);
                    if mem.read_slice(&mut buf, GuestAddress(s.addr)).is_err() || self.backend.write_at(&buf, offset + done).is_err() {
                        return (ioerr, 0);
                    }
                    done += s.len;
                }
                self.stats.written_bytes.fetch_add(done, Ordering::Relaxed);
                (ok, 0)
            }
            Kind::Flush => {
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                (if self.backend.flush().is_ok() { ok } else { ioerr }, 0)
            }
            Kind::GetId => {
                let mut at = 0usize;
                for s in &request.data {
                    let n = s.len as usize;
                    if mem.write_slice(&self.id[at..at + n], GuestAddress(s.addr)).is_err() {
                        return (ioerr, at as u32);
                    }
                    at += n;
                }
                (ok, at as u32)
            }
        }
    }

    /// Serves every chain the driver made available: parse, execute, status, used ring.
    /// Stops at the first error the queue itself has (rings outside RAM, an available
    /// index more than a queue ahead) or at a chain that cannot be answered: the device
    /// then needs a reset.
    pub fn process<M: GuestMemory>(&self, slot: &mut QueueSlot, mem: &M) -> Processed {
        let mut out = Processed::default();
        let q = &mut slot.queue;
        loop {
            if q.disable_notification(mem).is_err() {
                out.needs_reset = true;
                return out;
            }
            loop {
                let chain = match q.iter(mem) {
                    Ok(mut chains) => chains.next(),
                    Err(_) => {
                        out.needs_reset = true;
                        return out;
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let (status_at, status, written) = match blk_request::parse(chain, self.capacity, self.read_only) {
                    Ok(request) => {
                        let (status, written) = self.execute(&request, mem);
                        if status != b::VIRTIO_BLK_S_OK as u8 {
                            self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        (request.status, status, written)
                    }
                    Err(Bad::IoError { status, .. }) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        (status, b::VIRTIO_BLK_S_IOERR as u8, 0)
                    }
                    Err(Bad::Unsupported { status, .. }) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        (status, b::VIRTIO_BLK_S_UNSUPP as u8, 0)
                    }
                    Err(Bad::Broken(_)) => {
                        self.stats.broken.fetch_add(1, Ordering::Relaxed);
                        out.needs_reset = true;
                        return out;
                    }
                };
                // The status byte is checked to be in RAM; its write is the request's last.
                if mem.write_obj(status, GuestAddress(status_at)).is_err() || q.add_used(mem, head, written + 1).is_err() {
                    out.needs_reset = true;
                    return out;
                }
                out.completed += 1;
            }
            match q.needs_notification(mem) {
                Ok(n) => out.notify |= n,
                Err(_) => out.needs_reset = true,
            }
            match q.enable_notification(mem) {
                Ok(true) => continue, // more came while notifications were off
                Ok(false) => return out,
                Err(_) => {
                    out.needs_reset = true;
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use virtio_queue::Queue;
    use vm_memory::GuestMemoryMmap;

    const MEM: usize = 1 << 20;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const F_INDIRECT: u16 = 4;

    /// A disk of bytes that counts its flushes and can fail.
    #[derive(Default)]
    struct MemDisk {
        bytes: Mutex<Vec<u8>>,
        flushes: AtomicU64,
        writes_since_flush: AtomicU64,
        unflushed_at_flush: Mutex<Vec<u64>>,
    }

    impl Backend for MemDisk {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let b = self.bytes.lock().unwrap();
            let at = offset as usize;
            buf.copy_from_slice(b.get(at..at + buf.len()).ok_or_else(|| io::Error::other("past the end"))?);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut b = self.bytes.lock().unwrap();
            let at = offset as usize;
            b.get_mut(at..at + buf.len()).ok_or_else(|| io::Error::other("past the end"))?.copy_from_slice(buf);
            self.writes_since_flush.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.unflushed_at_flush.lock().unwrap().push(self.writes_since_flush.swap(0, Ordering::Relaxed));
            Ok(())
        }
    }

    struct Fixture {
        mem: GuestMemoryMmap,
        slot: QueueSlot,
        blk: Blk<MemDisk>,
        next_desc: u16,
        avail_idx: u16,
    }

    fn fixture(sectors: usize, read_only: bool) -> Fixture {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let mut queue = Queue::new(16).unwrap();
        queue.set_size(16);
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        let bytes: Vec<u8> = (0..sectors * 512).map(|i| (i / 512) as u8 ^ (i % 251) as u8).collect();
        let disk = MemDisk { bytes: Mutex::new(bytes), ..Default::default() };
        let blk = Blk { backend: disk, capacity: (sectors * 512) as u64, read_only, id: *b"yakvm-test-disk\0\0\0\0\0", stats: Default::default() };
        Fixture { mem, slot: QueueSlot { queue, live: true }, blk, next_desc: 0, avail_idx: 0 }
    }

    impl Fixture {
        /// Writes descriptors (addr, len, flags) linked in order into `table` at index
        /// `first` (NEXT added but on the last).
        fn descs(&self, table: u64, first: u16, descs: &[(u64, u32, u16)]) {
            for (i, &(addr, len, flags)) in descs.iter().enumerate() {
                let index = first + i as u16;
                let last = i + 1 == descs.len();
                let flags = if last { flags } else { flags | F_NEXT };
                let at = table + 16 * u64::from(index);
                self.mem.write_obj(addr, GuestAddress(at)).unwrap();
                self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
                self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
                self.mem.write_obj(index + 1, GuestAddress(at + 14)).unwrap();
            }
        }

        /// Posts a chain of `descs` in the ring's table; returns its head.
        fn post(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
            let head = self.next_desc;
            self.descs(DESC, head, descs);
            self.next_desc += descs.len() as u16;
            self.avail(head);
            head
        }

        fn avail(&mut self, head: u16) {
            let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % 16);
            self.mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            self.mem.write_obj(self.avail_idx, GuestAddress(AVAIL + 2)).unwrap();
        }

        fn header(&self, at: u64, kind: u32, sector: u64) {
            self.mem.write_obj(kind, GuestAddress(at)).unwrap();
            self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
            self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
        }

        fn run(&mut self) -> Processed {
            self.blk.process(&mut self.slot, &self.mem)
        }

        fn byte(&self, at: u64) -> u8 {
            self.mem.read_obj(GuestAddress(at)).unwrap()
        }

        /// Used ring entry `i`: (head, len).
        fn used(&self, i: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * u64::from(i);
            (self.mem.read_obj(GuestAddress(at)).unwrap(), self.mem.read_obj(GuestAddress(at + 4)).unwrap())
        }

        fn used_idx(&self) -> u16 {
            self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
        }

        fn disk(&self) -> Vec<u8> {
            self.blk.backend.bytes.lock().unwrap().clone()
        }
    }

    /// What, type, sector, descriptors, the status wanted.
    type BadCase = (&'static str, u32, u64, Vec<(u64, u32, u16)>, u8);
    type BrokenCase = (&'static str, Box<dyn Fn(&mut Fixture)>);

    const HDR: u64 = 0x10000;
    const DATA: u64 = 0x20000;
    const STATUS: u64 = 0x30000;
    const OK: u8 = b::VIRTIO_BLK_S_OK as u8;
    const IOERR: u8 = b::VIRTIO_BLK_S_IOERR as u8;
    const UNSUPP: u8 = b::VIRTIO_BLK_S_UNSUPP as u8;

    #[test]
    fn reads_writes_flushes_and_ids() {
        let mut f = fixture(64, false);
        // Read sectors 3-4 into two buffers.
        f.header(HDR, b::VIRTIO_BLK_T_IN, 3);
        f.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
        let head = f.post(&[(HDR, 16, 0), (DATA, 512, F_WRITE), (DATA + 0x1000, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
        let done = f.run();
        assert_eq!((done.completed, done.needs_reset), (1, false));
        assert_eq!(f.byte(STATUS), OK);
        assert_eq!(f.used(0), (u32::from(head), 1025));
        let disk = f.disk();
        let mut got = vec![0u8; 512];
        f.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, disk[3 * 512..4 * 512]);
        f.mem.read_slice(&mut got, GuestAddress(DATA + 0x1000)).unwrap();
        assert_eq!(got, disk[4 * 512..5 * 512]);
        // Write sector 10 from a buffer that shares the header's descriptor (any layout).
        f.header(HDR, b::VIRTIO_BLK_T_OUT, 10);
        f.mem.write_slice(&[0x5a; 512], GuestAddress(HDR + 16)).unwrap();
        f.post(&[(HDR, 16 + 512, 0), (STATUS, 1, F_WRITE)]);
        // A flush: after the write, before its status.
        f.header(HDR + 0x800, b::VIRTIO_BLK_T_FLUSH, 0);
        f.post(&[(HDR + 0x800, 16, 0), (STATUS + 1, 1, F_WRITE)]);
        // GET_ID into 20 bytes.
        f.header(HDR + 0x900, b::VIRTIO_BLK_T_GET_ID, 0);
        f.post(&[(HDR + 0x900, 16, 0), (DATA + 0x2000, 20, F_WRITE), (STATUS + 2, 1, F_WRITE)]);
        assert_eq!(f.run().completed, 3);
        assert_eq!((f.byte(STATUS), f.byte(STATUS + 1), f.byte(STATUS + 2)), (OK, OK, OK));
        assert_eq!(&f.disk()[10 * 512..11 * 512], &[0x5a; 512]);
        assert_eq!(*f.blk.backend.unflushed_at_flush.lock().unwrap(), vec![1], "the write reached the disk before the flush");
        let mut id = [0u8; 20];
        f.mem.read_slice(&mut id, GuestAddress(DATA + 0x2000)).unwrap();
        assert_eq!(&id, b"yakvm-test-disk\0\0\0\0\0");
        assert_eq!(f.used(3).1, 21);
        assert_eq!(f.used_idx(), 4);
    }

    #[test]
    fn indirect_tables_are_followed() {
        let mut f = fixture(8, false);
        let table = 0x40000;
        f.header(HDR, b::VIRTIO_BLK_T_IN, 1);
        f.descs(table, 0, &[(HDR, 16, 0), (DATA, 1024, F_WRITE), (STATUS, 1, F_WRITE)]);
        f.post(&[(table, 48, F_INDIRECT)]);
        assert_eq!(f.run().completed, 1);
        assert_eq!(f.byte(STATUS), OK);
        let mut got = vec![0u8; 1024];
        f.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, f.disk()[512..1536]);
    }

    /// Requests that break a rule are answered IOERR (or UNSUPP), touch nothing but their
    /// status byte, and leave the disk as it was.
    #[test]
    fn bad_requests_get_an_error_status_and_change_nothing() {
        let cases: Vec<BadCase> = vec![
            ("read past the end", b::VIRTIO_BLK_T_IN, 63, vec![(HDR, 16, 0), (DATA, 1024, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("sector overflow", b::VIRTIO_BLK_T_IN, u64::MAX / 256, vec![(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("write past the end", b::VIRTIO_BLK_T_OUT, 64, vec![(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)], IOERR),
            ("read into a read-only buffer", b::VIRTIO_BLK_T_IN, 0, vec![(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)], IOERR),
            ("write from a writable buffer", b::VIRTIO_BLK_T_OUT, 0, vec![(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("not whole sectors", b::VIRTIO_BLK_T_IN, 0, vec![(HDR, 16, 0), (DATA, 100, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("short header", b::VIRTIO_BLK_T_IN, 0, vec![(HDR, 8, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("readable after writable", b::VIRTIO_BLK_T_OUT, 0, vec![(HDR, 16, 0), (DATA + 0x1000, 4, F_WRITE), (DATA, 512, 0), (STATUS, 1, F_WRITE)], IOERR),
            ("buffer past RAM", b::VIRTIO_BLK_T_IN, 0, vec![(HDR, 16, 0), (MEM as u64 - 256, 512, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("2 GiB buffer", b::VIRTIO_BLK_T_IN, 0, vec![(HDR, 16, 0), (DATA, 1 << 31, F_WRITE), (STATUS, 1, F_WRITE)], IOERR),
            ("unknown type", 77, 0, vec![(HDR, 16, 0), (STATUS, 1, F_WRITE)], UNSUPP),
            ("flush with data", b::VIRTIO_BLK_T_FLUSH, 0, vec![(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)], IOERR),
        ];
        for (what, kind, sector, descs, want) in cases {
            let mut f = fixture(64, false);
            let before = f.disk();
            f.mem.write_slice(&[0xee; 4096], GuestAddress(DATA)).unwrap();
            f.header(HDR, kind, sector);
            f.post(&descs);
            let done = f.run();
            assert_eq!((done.completed, done.needs_reset), (1, false), "{what}");
            assert_eq!(f.byte(STATUS), want, "{what}");
            assert_eq!(f.used(0).1, 1, "{what}: only the status written");
            assert!(f.disk() == before, "{what}: the disk changed");
            let mut data = vec![0u8; 4096];
            f.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
            assert!(data.iter().all(|&b| b == 0xee), "{what}: guest memory changed");
            assert_eq!(f.blk.stats.errors.load(Ordering::Relaxed), 1, "{what}");
        }
    }

    #[test]
    fn a_read_only_disk_refuses_writes() {
        let mut f = fixture(8, true);
        let before = f.disk();
        f.header(HDR, b::VIRTIO_BLK_T_OUT, 0);
        f.post(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)]);
        f.run();
        assert_eq!(f.byte(STATUS), IOERR);
        assert!(f.disk() == before);
        assert!(features(true) & feature(b::VIRTIO_BLK_F_RO) != 0 && features(false) & feature(b::VIRTIO_BLK_F_RO) == 0);
    }

    /// Chains that cannot be answered (nowhere to put a status, or a walk that does not
    /// end) make the device need a reset; nothing is written anywhere.
    #[test]
    fn broken_chains_need_a_reset() {
        let table = 0x40000;
        let cases: Vec<BrokenCase> = vec![
            ("status read-only", Box::new(|f| { f.post(&[(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, 0)]); })),
            ("status past RAM", Box::new(|f| { f.post(&[(HDR, 16, 0), (MEM as u64, 1, F_WRITE)]); })),
            ("a chain over 4 GiB", Box::new(|f| { f.post(&[(HDR, 16, 0), (DATA, u32::MAX, F_WRITE), (STATUS, 1, F_WRITE)]); })),
            ("status of 0 bytes", Box::new(|f| { f.post(&[(HDR, 16, 0), (STATUS, 0, F_WRITE)]); })),
            ("status address wraps", Box::new(|f| { f.post(&[(HDR, 16, 0), (u64::MAX, 2, F_WRITE)]); })),
            (
                "a loop",
                Box::new(|f| {
                    f.post(&[(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
                    // The last descriptor points back at the first.
                    f.mem.write_obj(F_WRITE | F_NEXT, GuestAddress(DESC + 2 * 16 + 12)).unwrap();
                    f.mem.write_obj(0u16, GuestAddress(DESC + 2 * 16 + 14)).unwrap();
                }),
            ),
            ("next past the table", Box::new(|f| {
                f.post(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]);
                f.mem.write_obj(F_NEXT, GuestAddress(DESC + 12)).unwrap();
                f.mem.write_obj(999u16, GuestAddress(DESC + 14)).unwrap();
            })),
            ("indirect inside indirect", Box::new(move |f| {
                f.descs(table, 0, &[(HDR, 16, 0), (table + 0x100, 32, F_INDIRECT)]);
                f.descs(table + 0x100, 0, &[(DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
                f.post(&[(table, 32, F_INDIRECT)]);
            })),
            ("indirect table past RAM", Box::new(|f| { f.post(&[(MEM as u64 - 16, 64, F_INDIRECT)]); })),
            ("head index past the queue", Box::new(|f| f.avail(40))),
        ];
        for (what, build) in cases {
            let mut f = fixture(8, false);
            f.header(HDR, b::VIRTIO_BLK_T_IN, 0);
            f.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
            build(&mut f);
            let before = f.disk();
            let done = f.run();
            assert!(done.needs_reset, "{what}");
            assert_eq!(done.completed, 0, "{what}");
            assert_eq!(f.byte(STATUS), 0xaa, "{what}: status untouched");
            assert_eq!(f.used_idx(), 0, "{what}");
            assert!(f.disk() == before, "{what}");
        }
    }

    /// An available index more than a queue ahead of the device is the driver's error.
    #[test]
    fn a_runaway_available_index_needs_a_reset() {
        let mut f = fixture(8, false);
        f.mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
        assert!(f.run().needs_reset);
    }

    /// With EVENT_IDX the driver is interrupted only when the used index passes its
    /// used_event; without, after every pass that completed something.
    #[test]
    fn event_idx_suppresses_notifications() {
        let mut f = fixture(8, false);
        f.slot.queue.set_event_idx(true);
        // used_event (after the avail ring's 16 entries) = 1: notify once the used index passes 1.
        f.mem.write_obj(1u16, GuestAddress(AVAIL + 4 + 2 * 16)).unwrap();
        f.header(HDR, b::VIRTIO_BLK_T_FLUSH, 0);
        f.post(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]);
        assert!(!f.run().notify, "used index 1 has not passed used_event 1");
        f.post(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]);
        assert!(f.run().notify, "used index 2 passed it");
        let mut g = fixture(8, false);
        g.header(HDR, b::VIRTIO_BLK_T_FLUSH, 0);
        g.post(&[(HDR, 16, 0), (STATUS, 1, F_WRITE)]);
        assert!(g.run().notify);
    }

    #[test]
    fn the_configuration_structure() {
        let c = config_space(10 * 512);
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 10);
        assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), SEG_MAX);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
        let f = features(false);
        for bit in [32, 29, 28, 9, 2, 6] {
            assert!(f & (1 << bit) != 0, "bit {bit}");
        }
    }

    /// `--drive` refuses what cannot be a disk, and never writes the file.
    #[test]
    fn drive_open_refuses_bad_files() {
        let dir = std::env::temp_dir().join(format!("yakvm-drive-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.img");
        std::fs::write(&good, vec![7u8; 1024]).unwrap();
        let odd = dir.join("odd.img");
        std::fs::write(&odd, vec![7u8; 1000]).unwrap();
        let empty = dir.join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let d = Drive::open(&s(&good)).unwrap();
        assert_eq!((d.len, d.read_only), (1024, false));
        assert!(matches!(Drive::open(&s(&good)), Err(DriveError::Locked { .. })), "a second writer");
        assert!(matches!(Drive::open(&format!("{},readonly=on", s(&good))), Err(DriveError::Locked { .. })), "a reader while a writer has it");
        drop(d);
        let r1 = Drive::open(&format!("{},readonly=on", s(&good))).unwrap();
        let r2 = Drive::open(&format!("{},readonly=on", s(&good))).unwrap();
        assert!(r1.read_only && r2.read_only);
        assert!(matches!(Drive::open(&s(&good)), Err(DriveError::Locked { .. })), "a writer while readers have it");
        assert!(matches!(Drive::open(&s(&odd)), Err(DriveError::BadSize { len: 1000, .. })));
        assert!(matches!(Drive::open(&s(&empty)), Err(DriveError::Empty { .. })));
        assert!(matches!(Drive::open(&s(&dir.join("missing.img"))), Err(DriveError::Open { .. })));
        assert!(matches!(Drive::open(&s(&dir)), Err(DriveError::NotAFile { .. })));
        let e = Drive::open(&format!("{},cache=none", s(&good))).unwrap_err();
        assert_eq!(e.to_string(), format!("--drive {},cache=none: unknown option 'cache=none' (FILE[,readonly=on])", s(&good)));
        assert!(matches!(Drive::open(""), Err(DriveError::NoFile)));
        assert_eq!(std::fs::read(&good).unwrap(), vec![7u8; 1024]);
        drop((r1, r2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
