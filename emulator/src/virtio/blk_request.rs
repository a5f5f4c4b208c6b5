//! One virtio-blk request, parsed from one descriptor chain (virtio 1.2, 5.2.6), with every
//! rule of the specification checked here and nowhere else. What the device then does
//! (`blk.rs`) touches only the byte ranges this returns, each checked to be inside guest
//! RAM.
//!
//! A request is a device-readable header (type, reserved, sector: 16 bytes), the data
//! (device-readable for OUT, device-writable for IN and GET_ID), and a device-writable
//! status byte, last. Framing is not fixed (VIRTIO_F_VERSION_1 implies ANY_LAYOUT, 2.7.4):
//! the header may span descriptors and share one with the data, so the chain is read as
//! a readable byte stream followed by a writable one. The rules, in order:
//!
//! 1. The chain ends (its last descriptor has no NEXT): a loop, a NEXT past the table, an
//!    indirect table inside an indirect table, a descriptor table outside RAM or a chain
//!    over 4 GiB all end the walk early (`virtio_queue` stops there), which shows as a last
//!    descriptor that still says NEXT. Such a chain cannot be answered: [`Bad::Broken`],
//!    the device needs a reset.
//! 2. The last descriptor is device-writable, at least a byte, and inside RAM: the status
//!    byte is its last byte. Else [`Bad::Broken`] too: there is nowhere to say "error".
//! 3. No device-readable descriptor after a device-writable one (2.7.4.2).
//! 4. Every descriptor inside guest RAM.
//! 5. At least 16 readable bytes: the header.
//! 6. Per type: IN has no readable bytes past the header and its data (the writable bytes
//!    before the status) a multiple of 512; OUT has no writable byte but the status, its
//!    data (the readable bytes past the header) a multiple of 512, and the disk is not
//!    read-only; both stay inside the disk (sector and length, without overflow). FLUSH
//!    and GET_ID have no readable data. Another type is [`Bad::Unsupported`].
//!
//! Rules 3-6 broken: [`Bad::IoError`] (VIRTIO_BLK_S_IOERR), type unknown:
//! [`Bad::Unsupported`] (VIRTIO_BLK_S_UNSUPP); both carry where the status byte is.

use std::ops::Deref;

use virtio_bindings::virtio_blk as b;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

pub const SECTOR_SIZE: u64 = 512;
/// The header: type (le32), reserved (le32), sector (le64).
pub const HEADER_LEN: u64 = 16;
/// GET_ID's answer: up to 20 bytes of identification string.
pub const ID_BYTES: usize = b::VIRTIO_BLK_ID_BYTES as usize;

/// A guest buffer: address and length, inside guest RAM (checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Read `data` from the disk at byte `offset`.
    In { offset: u64 },
    /// Write `data` to the disk at byte `offset`.
    Out { offset: u64 },
    Flush,
    GetId,
}

/// A request that follows every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// IN, GET_ID: the buffers to fill (in order); OUT: the buffers to write.
    pub data: Vec<Segment>,
    /// The status byte's guest address.
    pub status: u64,
}

impl Request {
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|s| s.len).sum()
    }
}

/// Why a chain is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bad {
    #[error("a broken chain: {0}")]
    Broken(&'static str),
    #[error("I/O error: {why}")]
    IoError { status: u64, why: &'static str },
    #[error("request type {kind} not supported")]
    Unsupported { status: u64, kind: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u64,
    writable: bool,
}

/// Takes the bytes `[skip, skip + take)` of the stream `descs` as segments.
fn slice(descs: &[Desc], mut skip: u64, mut take: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    for d in descs {
        if take == 0 {
            break;
        }
        if skip >= d.len {
            skip -= d.len;
            continue;
        }
        let len = (d.len - skip).min(take);
        if len > 0 {
            out.push(Segment { addr: d.addr + skip, len });
        }
        take -= len;
        skip = 0;
    }
    out
}

/// Parses the chain (see the module's comment). `capacity` is the disk's size in bytes.
pub fn parse<M>(chain: DescriptorChain<M>, capacity: u64, read_only: bool) -> Result<Request, Bad>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let mem: &M::Target = chain.memory();
    // The walk is bounded by the queue's (or indirect table's) size: a loop ends there.
    let mut raw: Vec<Descriptor> = Vec::new();
    let mut walk = chain.clone();
    for d in walk.by_ref() {
        raw.push(d);
    }
    let last = *raw.last().ok_or(Bad::Broken("no descriptor"))?;
    if last.has_next() {
        return Err(Bad::Broken("the walk stopped at a descriptor that says NEXT (a loop, a bad index, a nested indirect table, a table outside RAM)"));
    }
    let in_ram = |addr: u64, len: u64| len == 0 || usize::try_from(len).is_ok_and(|n| mem.check_range(GuestAddress(addr), n, Permissions::ReadWrite));
    let descs: Vec<Desc> = raw.iter().map(|d| Desc { addr: d.addr().0, len: u64::from(d.len()), writable: d.is_write_only() }).collect();
    let last = descs[descs.len() - 1];
    let status = match last.addr.checked_add(last.len.wrapping_sub(1)) {
        Some(status) if last.writable && last.len > 0 && in_ram(status, 1) => status,
        _ => return Err(Bad::Broken("the last descriptor is not a device-writable byte in RAM (no status byte)")),
    };
    let io_error = |why| Err(Bad::IoError { status, why });
    let first_writable = descs.iter().position(|d| d.writable).expect("the last one is");
    if descs[first_writable..].iter().any(|d| !d.writable) {
        return io_error("a device-readable descriptor after a device-writable one");
    }
    if descs.iter().any(|d| !in_ram(d.addr, d.len)) {
        return io_error("a buffer outside guest RAM");
    }
    let (readable, writable) = descs.split_at(first_writable);
    let readable_len: u64 = readable.iter().map(|d| d.len).sum();
    // Every writable byte but the status.
    let writable_len: u64 = writable.iter().map(|d| d.len).sum::<u64>() - 1;
    if readable_len < HEADER_LEN {
        return io_error("the header is not 16 device-readable bytes");
    }
    let mut header = [0u8; HEADER_LEN as usize];
    let mut at = 0;
    for s in slice(readable, 0, HEADER_LEN) {
        let n = s.len as usize;
        mem.read_slice(&mut header[at..at + n], GuestAddress(s.addr)).map_err(|_| Bad::IoError { status, why: "the header cannot be read" })?;
        at += n;
    }
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let out_data = readable_len - HEADER_LEN;
    let in_range = |len: u64| sector.checked_mul(SECTOR_SIZE).and_then(|o| o.checked_add(len)).is_some_and(|end| end <= capacity);
    match kind {
        b::VIRTIO_BLK_T_IN => {
            if out_data != 0 {
                return io_error("IN with device-readable data");
            }
            if !writable_len.is_multiple_of(SECTOR_SIZE) {
                return io_error("IN data not a multiple of 512 bytes");
            }
            if !in_range(writable_len) {
                return io_error("IN past the end of the disk");
            }
            Ok(Request { kind: Kind::In { offset: sector * SECTOR_SIZE }, data: slice(writable, 0, writable_len), status })
        }
        b::VIRTIO_BLK_T_OUT => {
            if writable_len != 0 {
                return io_error("OUT with device-writable data");
            }
            if !out_data.is_multiple_of(SECTOR_SIZE) {
                return io_error("OUT data not a multiple of 512 bytes");
            }
            if read_only {
                return io_error("OUT to a read-only disk");
            }
            if !in_range(out_data) {
                return io_error("OUT past the end of the disk");
            }
            Ok(Request { kind: Kind::Out { offset: sector * SECTOR_SIZE }, data: slice(readable, HEADER_LEN, out_data), status })
        }
        b::VIRTIO_BLK_T_FLUSH => {
            if out_data != 0 {
                return io_error("FLUSH with device-readable data");
            }
            Ok(Request { kind: Kind::Flush, data: Vec::new(), status })
        }
        b::VIRTIO_BLK_T_GET_ID => {
            if out_data != 0 {
                return io_error("GET_ID with device-readable data");
            }
            Ok(Request { kind: Kind::GetId, data: slice(writable, 0, writable_len.min(ID_BYTES as u64)), status })
        }
        kind => Err(Bad::Unsupported { status, kind }),
    }
}
