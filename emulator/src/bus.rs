//! An address space of registered ranges (the I/O ports, or guest-physical MMIO): each range
//! has a name and a device, and an access goes to the device of the range that holds its
//! first byte, at its offset in that range and with its real width (1, 2, 4 or 8 bytes).
//! A device is any [`BusDevice`]; it is shared (`Arc<Mutex<..>>`, a lock of its own), so
//! that one device may sit at several ranges and its owner may reach it outside the bus.
//! Accesses take the bus by `&self`: the vCPU threads use it at once, each access locking
//! only its device.
//!
//! Ranges are inserted at a base and a length (an overlap is refused with an error naming
//! both ranges), and can be moved or removed while the machine runs (a PCI BAR the guest
//! reprograms moves its range).
//!
//! ISA devices are byte-wide: on a PC a wide port access to them becomes byte accesses to
//! consecutive ports, which may belong to another device. A range inserted as
//! [`Span::Bytes`] gets that: the bus splits an access that starts in it into bytes, and
//! each byte goes to the byte-wide range that holds it (a byte that falls nowhere, or in a
//! range of whole accesses, is unclaimed). [`Span::Whole`] ranges get the access as it is,
//! even one that runs past their end (the seed's DMA disk takes a 4-byte write at each of
//! its byte-spaced ports).
//!
//! Accesses nothing answers read all ones and writes are dropped: counted, the first ones
//! logged, never fatal. Each range counts the accesses that reached it (`--stats`).
//!
//! Why not rust-vmm's `vm-device` (its `Bus` and `IoManager`), which has the same shape?
//! Its devices' writes return nothing, where ours must say that the run ends (the exit
//! port, a reset) and the DMA disk needs guest memory and the local APIC the CPU that
//! made the access; its overlap error does not name the ranges, it has no move, and an
//! ISA access split into bytes would still be ours to write.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::disk::Dma;

/// What the guest's access asks of the run.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    Continue,
    Exit(u8),
    /// The guest reset the machine (pc: the i8042's reset line, port A, 0xcf9).
    Reset,
    /// The guest powered the machine off (pc: ACPI sleep state S5).
    PowerOff,
}

/// What a device may need to know about an access besides its address and data.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Guest RAM, for devices that do DMA.
    pub mem: &'a dyn Dma,
    /// The vCPU that made the access (the local APIC page is each CPU's own).
    pub cpu: usize,
}

/// A device on a bus. `base` is the start of the range the access came through (a device
/// at several ranges tells them apart by it), `offset` the access's place in that range.
pub trait BusDevice: Send {
    /// A read of `data.len()` bytes; the device fills `data`.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], ctx: &Ctx);
    /// A write of `data`. An error is the host's (the console's output failed).
    fn write(&mut self, base: u64, offset: u64, data: &[u8], ctx: &Ctx) -> io::Result<Effect>;
}

/// A device as the bus holds it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Locks a device (a panic on another thread while it held the lock leaves the device as
/// it was: a guest access never panics, so the state is whole).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How accesses reach a range's device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Whole, at their real width.
    Whole,
    /// One byte at a time, each to the range that holds it (ISA).
    Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("{space} range {name} at {base:#x}..{end:#x} overlaps {other} at {other_base:#x}..{other_end:#x}")]
    Overlap { space: &'static str, name: String, base: u64, end: u64, other: String, other_base: u64, other_end: u64 },
    #[error("{space} range {name} at {base:#x} with length {len:#x} is empty or wraps around")]
    BadRange { space: &'static str, name: String, base: u64, len: u64 },
    #[error("{space} range {name} is already on the bus")]
    Duplicate { space: &'static str, name: String },
    #[error("no {space} range named {name}")]
    NoSuchRange { space: &'static str, name: String },
}

/// Accesses that nothing answers or that a device refuses: counted, the first ones logged.
/// Shared by the buses and the devices that refuse accesses (one count for `--stats`).
#[derive(Clone, Default)]
pub struct Ignored(Arc<AtomicU64>);

/// Ignored accesses told on stderr before the machine goes quiet about them.
const LOGGED_IGNORED: u64 = 10;

impl Ignored {
    pub fn note(&self, what: fmt::Arguments) {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= LOGGED_IGNORED {
            eprintln!("yakvm: ignored {what}{}", if n == LOGGED_IGNORED { " (not saying it again)" } else { "" });
        }
    }

    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Range {
    name: String,
    len: u64,
    span: Span,
    device: SharedDevice,
    /// Accesses that reached the range (`--stats`): counted by whichever vCPU made one,
    /// without a lock (the bus is shared by the vCPU threads).
    accesses: AtomicU64,
}

/// One address space.
pub struct Bus {
    /// "port" or "MMIO", for messages.
    space: &'static str,
    /// By base address.
    ranges: BTreeMap<u64, Range>,
    /// How an access that starts where no range is travels: `Bytes` on the PC's port
    /// space (each of its bytes may reach a device), `Whole` elsewhere.
    unclaimed: Span,
    ignored: Ignored,
}

impl Bus {
    pub fn new(space: &'static str, unclaimed: Span, ignored: Ignored) -> Self {
        Self { space, ranges: BTreeMap::new(), unclaimed, ignored }
    }

    /// Puts `device` at `base..base + len` under `name` (unique on this bus).
    pub fn insert(&mut self, name: &str, base: u64, len: u64, span: Span, device: SharedDevice) -> Result<(), BusError> {
        let space = self.space;
        if self.ranges.values().any(|r| r.name == name) {
            return Err(BusError::Duplicate { space, name: name.into() });
        }
        self.check_free(name, base, len, None)?;
        self.ranges.insert(base, Range { name: name.into(), len, span, device, accesses: AtomicU64::new(0) });
        Ok(())
    }

    /// Takes the range `name` off the bus; returns its device.
    pub fn remove(&mut self, name: &str) -> Result<SharedDevice, BusError> {
        let base = self.base_of(name)?;
        Ok(self.ranges.remove(&base).expect("found").device)
    }

    /// Moves the range `name` to `new_base` (same length, device and counts).
    pub fn relocate(&mut self, name: &str, new_base: u64) -> Result<(), BusError> {
        let base = self.base_of(name)?;
        let len = self.ranges[&base].len;
        self.check_free(name, new_base, len, Some(base))?;
        let range = self.ranges.remove(&base).expect("found");
        self.ranges.insert(new_base, range);
        Ok(())
    }

    /// Where the range `name` starts and how long it is.
    pub fn range_of(&self, name: &str) -> Option<(u64, u64)> {
        self.ranges.iter().find(|(_, r)| r.name == name).map(|(&b, r)| (b, r.len))
    }

    /// The accesses that reached each range so far, by name, in address order.
    pub fn accesses(&self) -> impl Iterator<Item = (&str, u64, u64, u64)> {
        self.ranges.iter().map(|(&base, r)| (r.name.as_str(), base, r.len, r.accesses.load(Ordering::Relaxed)))
    }

    /// Accesses nothing answered or a device refused (shared count).
    pub fn ignored(&self) -> &Ignored {
        &self.ignored
    }

    fn base_of(&self, name: &str) -> Result<u64, BusError> {
        let found = self.ranges.iter().find(|(_, r)| r.name == name).map(|(&b, _)| b);
        found.ok_or_else(|| BusError::NoSuchRange { space: self.space, name: name.into() })
    }

    /// `base..base + len` is a real range and meets no range but `except` (a base).
    fn check_free(&self, name: &str, base: u64, len: u64, except: Option<u64>) -> Result<(), BusError> {
        let space = self.space;
        let Some(end) = base.checked_add(len).filter(|_| len > 0) else {
            return Err(BusError::BadRange { space, name: name.into(), base, len });
        };
        let other = self.ranges.range(..end).rev().find(|&(&b, r)| Some(b) != except && b + r.len > base);
        match other {
            Some((&b, r)) => Err(BusError::Overlap {
                space,
                name: name.into(),
                base,
                end,
                other: r.name.clone(),
                other_base: b,
                other_end: b + r.len,
            }),
            None => Ok(()),
        }
    }

    /// The range holding `addr`: its base.
    fn find(&self, addr: u64) -> Option<u64> {
        let (&base, r) = self.ranges.range(..=addr).next_back()?;
        (addr - base < r.len).then_some(base)
    }

    /// How an access starting at `addr` travels.
    fn span_at(&self, addr: u64) -> Span {
        self.find(addr).map_or(self.unclaimed, |b| self.ranges[&b].span)
    }

    /// A write of `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8], ctx: &Ctx) -> io::Result<Effect> {
        if self.span_at(addr) == Span::Whole || data.len() == 1 {
            return self.write_whole(addr, data, ctx, Span::Whole);
        }
        // Bytes, as the ISA bus does it. The first byte that ends the run ends the access.
        for (i, &byte) in data.iter().enumerate() {
            let effect = self.write_whole(addr.wrapping_add(i as u64), &[byte], ctx, Span::Bytes)?;
            if effect != Effect::Continue {
                return Ok(effect);
            }
        }
        Ok(Effect::Continue)
    }

    /// A read of `data.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8], ctx: &Ctx) {
        if self.span_at(addr) == Span::Whole || data.len() == 1 {
            return self.read_whole(addr, data, ctx, Span::Whole);
        }
        for (i, byte) in data.iter_mut().enumerate() {
            self.read_whole(addr.wrapping_add(i as u64), std::slice::from_mut(byte), ctx, Span::Bytes);
        }
    }

    /// The range at `addr` if an access made of `part`s may reach it (a byte of a split
    /// access reaches byte-wide ranges only).
    fn target(&self, addr: u64, part: Span) -> Option<(u64, &Range)> {
        let base = self.find(addr)?;
        let range = &self.ranges[&base];
        (part == Span::Whole || range.span == Span::Bytes).then_some((base, range))
    }

    fn write_whole(&self, addr: u64, data: &[u8], ctx: &Ctx, part: Span) -> io::Result<Effect> {
        let Some((base, range)) = self.target(addr, part) else {
            self.ignored.note(format_args!("{}-byte write of {:#x} to {} {addr:#x} (nothing there)", data.len(), le(data), self.space));
            return Ok(Effect::Continue);
        };
        range.accesses.fetch_add(1, Ordering::Relaxed);
        lock(&range.device).write(base, addr - base, data, ctx)
    }

    fn read_whole(&self, addr: u64, data: &mut [u8], ctx: &Ctx, part: Span) {
        let Some((base, range)) = self.target(addr, part) else {
            data.fill(0xff);
            self.ignored.note(format_args!("{}-byte read of {} {addr:#x} (nothing there: all ones)", data.len(), self.space));
            return;
        };
        range.accesses.fetch_add(1, Ordering::Relaxed);
        lock(&range.device).read(base, addr - base, data, ctx);
    }
}

/// `data` as a little-endian number (up to 8 bytes).
pub fn le(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Guest memory that has no RAM.
    pub(crate) struct NoRam;
    impl Dma for NoRam {
        fn read(&self, _: u64, _: &mut [u8]) -> Option<()> {
            None
        }
        fn write(&self, _: u64, _: &[u8]) -> Option<()> {
            None
        }
    }

    pub(crate) const CTX: Ctx<'static> = Ctx { mem: &NoRam, cpu: 0 };

    /// Records every access it gets: (base, offset, width, value); reads return `offset`.
    #[derive(Default)]
    struct Recorder(Vec<(u64, u64, usize, u64)>);
    impl BusDevice for Recorder {
        fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
            self.0.push((base, offset, data.len(), 0));
            data.copy_from_slice(&offset.to_le_bytes()[..data.len()]);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
            self.0.push((base, offset, data.len(), le(data)));
            Ok(if le(data) == 0xdead { Effect::Reset } else { Effect::Continue })
        }
    }

    fn recorder() -> (Arc<Mutex<Recorder>>, SharedDevice) {
        let r = Arc::new(Mutex::new(Recorder::default()));
        let d: SharedDevice = r.clone();
        (r, d)
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset_and_width() {
        let mut bus = Bus::new("MMIO", Span::Whole, Ignored::default());
        let (rec, dev) = recorder();
        bus.insert("dev", 0x1000, 0x100, Span::Whole, dev).unwrap();
        for (width, value) in [(1, 0x11u64), (2, 0x2222), (4, 0x4444_4444), (8, 0x8888_8888_8888_8888)] {
            bus.write(0x1010, &value.to_le_bytes()[..width], &CTX).unwrap();
        }
        let mut q = [0u8; 8];
        bus.read(0x1008, &mut q, &CTX);
        assert_eq!(u64::from_le_bytes(q), 8);
        let seen = &rec.lock().unwrap().0;
        assert_eq!(
            seen[..],
            [
                (0x1000, 0x10, 1, 0x11),
                (0x1000, 0x10, 2, 0x2222),
                (0x1000, 0x10, 4, 0x4444_4444),
                (0x1000, 0x10, 8, 0x8888_8888_8888_8888),
                (0x1000, 8, 8, 0)
            ]
        );
        assert_eq!(bus.accesses().collect::<Vec<_>>(), [("dev", 0x1000, 0x100, 5)]);
        assert_eq!(bus.ignored().count(), 0);
    }

    #[test]
    fn an_overlap_is_refused_naming_both_ranges() {
        let mut bus = Bus::new("port", Span::Whole, Ignored::default());
        bus.insert("uart", 0x3f8, 8, Span::Bytes, recorder().1).unwrap();
        for (base, len) in [(0x3f0, 9), (0x3ff, 1), (0x3fa, 2), (0x3f0, 0x20)] {
            let err = bus.insert("intruder", base, len, Span::Whole, recorder().1).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("intruder") && text.contains("uart"), "{text}");
        }
        // Touching is not overlapping.
        bus.insert("below", 0x3f0, 8, Span::Whole, recorder().1).unwrap();
        bus.insert("above", 0x400, 1, Span::Whole, recorder().1).unwrap();
        assert!(matches!(bus.insert("uart", 0x500, 1, Span::Whole, recorder().1), Err(BusError::Duplicate { .. })));
        assert!(matches!(bus.insert("empty", 0x600, 0, Span::Whole, recorder().1), Err(BusError::BadRange { .. })));
        assert!(matches!(bus.insert("wraps", u64::MAX, 2, Span::Whole, recorder().1), Err(BusError::BadRange { .. })));
    }

    #[test]
    fn a_range_moves_and_is_removed() {
        let mut bus = Bus::new("MMIO", Span::Whole, Ignored::default());
        let (rec, dev) = recorder();
        bus.insert("bar0", 0xe000_0000, 0x1000, Span::Whole, dev).unwrap();
        bus.insert("other", 0xf000_0000, 0x1000, Span::Whole, recorder().1).unwrap();
        // Onto another range: refused, the range stays where it was.
        let err = bus.relocate("bar0", 0xefff_f800).unwrap_err();
        assert!(err.to_string().contains("bar0") && err.to_string().contains("other"), "{err}");
        assert_eq!(bus.range_of("bar0"), Some((0xe000_0000, 0x1000)));
        // Over part of itself: fine.
        bus.relocate("bar0", 0xe000_0800).unwrap();
        bus.write(0xe000_0800, &[1], &CTX).unwrap();
        bus.write(0xe000_0000, &[2], &CTX).unwrap(); // nothing there now
        assert_eq!(rec.lock().unwrap().0, [(0xe000_0800, 0, 1, 1)]);
        assert_eq!(bus.ignored().count(), 1);
        bus.remove("bar0").unwrap();
        let mut b = [0u8; 4];
        bus.read(0xe000_0800, &mut b, &CTX);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(bus.ignored().count(), 2);
        assert!(matches!(bus.remove("bar0"), Err(BusError::NoSuchRange { .. })));
        assert!(matches!(bus.relocate("bar0", 0), Err(BusError::NoSuchRange { .. })));
    }

    #[test]
    fn byte_wide_ranges_get_a_wide_access_byte_by_byte() {
        let mut bus = Bus::new("port", Span::Bytes, Ignored::default());
        let (a, da) = recorder();
        let (b, db) = recorder();
        let (w, dw) = recorder();
        bus.insert("a", 0x20, 2, Span::Bytes, da).unwrap();
        bus.insert("b", 0x22, 1, Span::Bytes, db).unwrap();
        bus.insert("wide", 0x24, 4, Span::Whole, dw).unwrap();
        // 0x21 (a), 0x22 (b), 0x23 (nothing), 0x24 (a whole-access range: not for a byte).
        bus.write(0x21, &[1, 2, 3, 4], &CTX).unwrap();
        assert_eq!(a.lock().unwrap().0, [(0x20, 1, 1, 1)]);
        assert_eq!(b.lock().unwrap().0, [(0x22, 0, 1, 2)]);
        assert!(w.lock().unwrap().0.is_empty());
        assert_eq!(bus.ignored().count(), 2);
        // An unclaimed start on a byte-wise space: its bytes may still reach a device.
        let mut d = [0u8; 2];
        bus.read(0x1f, &mut d, &CTX);
        assert_eq!(d, [0xff, 0]);
        // A whole range gets all of it, even past its end.
        bus.write(0x27, &[9, 9, 9, 9], &CTX).unwrap();
        assert_eq!(w.lock().unwrap().0, [(0x24, 3, 4, 0x0909_0909)]);
        // The byte that ends the run ends the access.
        assert_eq!(bus.write(0x20, &[0xad, 0xde], &CTX).unwrap(), Effect::Continue);
        assert_eq!(bus.write(0x24, &[0xad, 0xde], &CTX).unwrap(), Effect::Reset);
    }
}
