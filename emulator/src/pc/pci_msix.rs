//! A function's MSI-X capability (PCI Local Bus 3.0, 6.8.2): up to 2048 vectors, each
//! with its own message address, data and mask in a table in one of the function's memory
//! BARs, their pending bits in a pending bit array (PBA) in a memory BAR too, and a
//! function mask over them all. A reusable piece: a device adds it to its configuration
//! space, forwards its BARs' accesses in the table and the PBA to [`MsiX::read`] and
//! [`MsiX::write`], tells it of configuration writes ([`MsiX::config_written`], from
//! `PciFunction::config_written`), raises vectors ([`MsiX::raise`]) and sends what comes
//! back ([`Raised::Send`]) through the board's `MsiSender`.
//!
//! The capability's 12 bytes:
//!
//! | offset | register | guest may write |
//! |---|---|---|
//! | +2 | message control: table size - 1 (10:0), function mask (14), MSI-X enable (15) | bits 14, 15 |
//! | +4 | table offset (31:3) and BIR (2:0, the BAR's index) | none |
//! | +8 | PBA offset (31:3) and BIR (2:0) | none |
//!
//! A table entry's 16 bytes: message address low (bits 1:0 read 0), message address
//! high, message data (32 bits; x86 uses the low 16, as MSI's), vector control (bit 0
//! masks the vector; the rest reads 0). After reset every vector is masked. The PBA has
//! one bit per vector in qwords, read-only: set while a raised vector is masked (by its
//! own bit or the function mask), cleared when the message goes.
//!
//! Accesses: the table and the PBA take aligned dwords and aligned qwords, as the
//! specification says software must use; anything else (a byte, a misaligned access) is
//! ignored ([`Access::Ignored`], reads give all ones) for the device to count. A vector
//! that is raised with MSI-X off does nothing ([`Raised::Disabled`]: the function would
//! use INTx) and leaves no pending bit.

use super::pci_config::{BarKind, ConfigError, ConfigSpace, BARS};
use super::pci_msi::{interrupt_message, Raised};

/// The MSI-X capability's ID.
pub const CAPABILITY_ID: u8 = 0x11;
/// The most vectors a function can have (an 11-bit table size).
pub const MAX_VECTORS: u16 = 2048;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;

const CONTROL: usize = 2;
const TABLE: usize = 4;
const PBA: usize = 8;
const LEN: usize = 12;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const CONTROL_ENABLE: u16 = 1 << 15;

const ADDRESS_LOW: u64 = 0;
const ADDRESS_HIGH: u64 = 4;
const DATA: u64 = 8;
// The vector control is at +12.
const VECTOR_MASKED: u32 = 1;

/// Why the capability cannot be added as asked (the device's code is wrong, not the guest).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsixError {
    #[error("MSI-X: {0} vectors (1 to 2048)")]
    BadVectorCount(u16),
    #[error("MSI-X {what}: BAR {bar} is not a memory BAR of the function")]
    NotAMemoryBar { what: &'static str, bar: usize },
    #[error("MSI-X {what}: offset {offset:#x} is not 8-byte aligned")]
    Misaligned { what: &'static str, offset: u32 },
    #[error("MSI-X {what} ({offset:#x}, {len:#x} bytes) runs past BAR {bar}'s {size:#x} bytes")]
    PastTheBar { what: &'static str, bar: usize, offset: u32, len: u64, size: u64 },
    #[error("MSI-X: the table and the PBA overlap in BAR {0}")]
    Overlap(usize),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where a structure is: BAR index and offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub bar: usize,
    pub offset: u32,
}

/// What an access to a BAR did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Not in the table or the PBA: the device's own registers.
    NotMine,
    /// Done. A write that unmasked a pending vector returns what raising it gave.
    Done(Option<Raised>),
    /// In the table or the PBA, but not an aligned dword or qword (or a write to the
    /// read-only PBA): dropped, reads all ones.
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

/// A function's MSI-X state: where the capability is, the table, the pending bits, and
/// the capability's control bits as the last configuration write left them.
#[derive(Debug, Clone)]
pub struct MsiX {
    at: usize,
    table: Place,
    pba: Place,
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
}

impl MsiX {
    /// Adds the capability to `space` for `vectors` vectors, the table at `table` and the
    /// PBA at `pba`, both in memory BARs the function already has.
    pub fn add(space: &mut ConfigSpace, vectors: u16, table: Place, pba: Place) -> Result<Self, MsixError> {
        if !(1..=MAX_VECTORS).contains(&vectors) {
            return Err(MsixError::BadVectorCount(vectors));
        }
        let table_len = u64::from(vectors) * ENTRY_SIZE;
        let pba_len = u64::from(vectors).div_ceil(64) * 8;
        for (what, place, len) in [("table", table, table_len), ("PBA", pba, pba_len)] {
            let size = match (place.bar < BARS).then(|| space.bar_programmed(place.bar)).flatten() {
                Some((BarKind::Memory32 { .. } | BarKind::Memory64 { .. }, size, _)) => size,
                _ => return Err(MsixError::NotAMemoryBar { what, bar: place.bar }),
            };
            if place.offset % 8 != 0 {
                return Err(MsixError::Misaligned { what, offset: place.offset });
            }
            if u64::from(place.offset) + len > size {
                return Err(MsixError::PastTheBar { what, bar: place.bar, offset: place.offset, len, size });
            }
        }
        let (t, p) = (u64::from(table.offset), u64::from(pba.offset));
        if table.bar == pba.bar && t < p + pba_len && p < t + table_len {
            return Err(MsixError::Overlap(table.bar));
        }
        let mut body = [0u8; LEN - 2];
        let mut writable = [0u8; LEN - 2];
        body[CONTROL - 2..CONTROL].copy_from_slice(&(vectors - 1).to_le_bytes());
        writable[CONTROL - 2..CONTROL].copy_from_slice(&(CONTROL_ENABLE | CONTROL_FUNCTION_MASK).to_le_bytes());
        body[TABLE - 2..TABLE + 2].copy_from_slice(&(table.offset | table.bar as u32).to_le_bytes());
        body[PBA - 2..PBA + 2].copy_from_slice(&(pba.offset | pba.bar as u32).to_le_bytes());
        let at = space.add_capability(CAPABILITY_ID, &body, &writable)?;
        let masked = Entry { address: 0, data: 0, control: VECTOR_MASKED };
        Ok(Self {
            at,
            table,
            pba,
            entries: vec![masked; usize::from(vectors)],
            pending: vec![0; usize::from(vectors).div_ceil(64)],
            enabled: false,
            function_masked: false,
        })
    }

    /// The capability's offset in the configuration space.
    pub fn offset(&self) -> usize {
        self.at
    }

    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Whether `vector` is pending (false for one the function does not have).
    pub fn pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        v < self.entries.len() && self.pending[v / 64] >> (v % 64) & 1 != 0
    }

    fn set_pending(&mut self, vector: usize, on: bool) {
        let bit = 1u64 << (vector % 64);
        if on {
            self.pending[vector / 64] |= bit;
        } else {
            self.pending[vector / 64] &= !bit;
        }
    }

    fn vector_masked(&self, vector: usize) -> bool {
        self.entries[vector].control & VECTOR_MASKED != 0
    }

    fn message(&self, vector: usize) -> Raised {
        let e = &self.entries[vector];
        interrupt_message(e.address, e.data as u16).map_or(Raised::NotAnInterrupt, Raised::Send)
    }

    /// The device raises `vector`: its message if MSI-X is on and neither the function
    /// nor the vector is masked; else the pending bit (masked) or nothing (MSI-X off, or a
    /// vector the function does not have: [`Raised::Disabled`]).
    pub fn raise(&mut self, vector: u16) -> Raised {
        let v = usize::from(vector);
        if !self.enabled || v >= self.entries.len() {
            return Raised::Disabled;
        }
        if self.function_masked || self.vector_masked(v) {
            self.set_pending(v, true);
            return Raised::Pending;
        }
        self.message(v)
    }

    /// The message `vector` would send now (MSI-X on, neither the function nor the vector
    /// masked), without raising it: `None` otherwise.
    pub fn deliverable(&self, vector: u16) -> Option<Raised> {
        let v = usize::from(vector);
        (self.enabled && v < self.entries.len() && !self.function_masked && !self.vector_masked(v)).then(|| self.message(v))
    }

    /// The pending vector `v` goes if nothing masks it any more.
    fn deliver_if_unmasked(&mut self, v: usize) -> Option<Raised> {
        if !self.enabled || self.function_masked || self.vector_masked(v) || !self.pending(v as u16) {
            return None;
        }
        self.set_pending(v, false);
        Some(self.message(v))
    }

    /// After a configuration write to the function: takes the capability's enable and
    /// function mask; if MSI-X is now on and unmasked, every pending vector that its own
    /// mask does not hold goes (in vector order) and its pending bit clears.
    pub fn config_written(&mut self, space: &ConfigSpace) -> Vec<Raised> {
        let mut b = [0; 2];
        space.read(self.at + CONTROL, &mut b);
        let control = u16::from_le_bytes(b);
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        (0..self.entries.len()).filter_map(|v| self.deliver_if_unmasked(v)).collect()
    }

    /// Which structure `offset` of BAR `bar` is in: the table (entry, offset in it) or
    /// the PBA (byte offset in it).
    fn locate(&self, bar: usize, offset: u64, len: usize) -> Option<Structure> {
        let inside = |place: Place, size: u64| {
            let start = u64::from(place.offset);
            (place.bar == bar && offset >= start && offset < start + size).then(|| offset - start)
        };
        let table_len = self.entries.len() as u64 * ENTRY_SIZE;
        let pba_len = self.pending.len() as u64 * 8;
        let (structure, at) = if let Some(at) = inside(self.table, table_len) {
            (Structure::Table(at), at)
        } else if let Some(at) = inside(self.pba, pba_len) {
            (Structure::Pba(at), at)
        } else {
            return None;
        };
        let aligned = matches!(len, 4 | 8) && at % len as u64 == 0;
        Some(if aligned { structure } else { Structure::Bad })
    }

    fn entry_dword(&self, at: u64) -> u32 {
        let e = &self.entries[(at / ENTRY_SIZE) as usize];
        match at % ENTRY_SIZE {
            ADDRESS_LOW => e.address as u32,
            ADDRESS_HIGH => (e.address >> 32) as u32,
            DATA => e.data,
            _ => e.control, // the vector control
        }
    }

    /// A read at `offset` of BAR `bar` (`data` is 4 or 8 bytes for a real one).
    pub fn read(&self, bar: usize, offset: u64, data: &mut [u8]) -> Access {
        match self.locate(bar, offset, data.len()) {
            None => Access::NotMine,
            Some(Structure::Bad) => {
                data.fill(0xff);
                Access::Ignored
            }
            Some(Structure::Table(at)) => {
                for (i, chunk) in data.chunks_mut(4).enumerate() {
                    chunk.copy_from_slice(&self.entry_dword(at + 4 * i as u64).to_le_bytes());
                }
                Access::Done(None)
            }
            Some(Structure::Pba(at)) => {
                let qword = self.pending[(at / 8) as usize].to_le_bytes();
                let start = (at % 8) as usize;
                data.copy_from_slice(&qword[start..start + data.len()]);
                Access::Done(None)
            }
        }
    }

    /// A write at `offset` of BAR `bar`. Unmasking a pending vector sends it (if MSI-X is
    /// on and the function unmasked): what raising it gave is in [`Access::Done`].
    pub fn write(&mut self, bar: usize, offset: u64, data: &[u8]) -> Access {
        let at = match self.locate(bar, offset, data.len()) {
            None => return Access::NotMine,
            Some(Structure::Table(at)) => at,
            Some(Structure::Bad | Structure::Pba(_)) => return Access::Ignored,
        };
        let v = (at / ENTRY_SIZE) as usize;
        for (i, chunk) in data.chunks(4).enumerate() {
            let value = u32::from_le_bytes(chunk.try_into().expect("4-byte chunks of 4 or 8 bytes"));
            let e = &mut self.entries[v];
            match (at + 4 * i as u64) % ENTRY_SIZE {
                ADDRESS_LOW => e.address = (e.address & !0xffff_ffff) | u64::from(value & !3),
                ADDRESS_HIGH => e.address = (e.address & 0xffff_ffff) | u64::from(value) << 32,
                DATA => e.data = value,
                _ => e.control = value & VECTOR_MASKED, // the vector control
            }
        }
        Access::Done(self.deliver_if_unmasked(v))
    }
}

#[derive(Debug, Clone, Copy)]
enum Structure {
    Table(u64),
    Pba(u64),
    Bad,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pc::ioapic::Message;
    use crate::pc::lapic::DeliveryMode;
    use crate::pc::pci::HOST_BRIDGE;
    use crate::bus::tests::CTX;
    use crate::bus::{lock, BusDevice, Ctx, Effect, SharedDevice};
    use crate::devices::Devices;
    use crate::pc::board::tests::pc;
    use crate::pc::board::MsiSender;
    use crate::pc::pci::{Bdf, PciFunction, ECAM_BASE};
    use crate::pc::pci_config::{Identity, CAPABILITIES_POINTER, COMMAND_MEMORY};
    use std::sync::{Arc, Mutex};

    const TABLE_AT: Place = Place { bar: 0, offset: 0 };
    const PBA_AT: Place = Place { bar: 0, offset: 0x800 };

    /// A function with a 4 KiB memory BAR 0 holding a 3-vector table at 0 and the PBA at
    /// 0x800.
    fn function(vectors: u16) -> (ConfigSpace, MsiX) {
        let mut space = ConfigSpace::new(Identity { vendor: 0x1234, device: 0x11, ..HOST_BRIDGE });
        space.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        let msix = MsiX::add(&mut space, vectors, TABLE_AT, PBA_AT).unwrap();
        (space, msix)
    }

    fn control(space: &mut ConfigSpace, msix: &mut MsiX, value: u16) -> Vec<Raised> {
        space.write(msix.offset() + 2, &value.to_le_bytes());
        msix.config_written(space)
    }

    fn read32(msix: &MsiX, offset: u64) -> u32 {
        let mut b = [0; 4];
        assert_eq!(msix.read(0, offset, &mut b), Access::Done(None));
        u32::from_le_bytes(b)
    }

    fn write32(msix: &mut MsiX, offset: u64, value: u32) -> Access {
        msix.write(0, offset, &value.to_le_bytes())
    }

    /// What Linux writes for a vector: address, data, then unmask.
    fn program(msix: &mut MsiX, vector: u64, address: u64, data: u32) {
        let e = vector * ENTRY_SIZE;
        assert_eq!(msix.write(0, e, &address.to_le_bytes()), Access::Done(None), "a qword write");
        assert_eq!(write32(msix, e + 8, data), Access::Done(None));
    }

    fn fixed(vector: u8, dest: u8) -> Message {
        Message { vector, mode: DeliveryMode::Fixed, logical: false, dest, level_triggered: false }
    }

    fn pba(msix: &MsiX) -> u64 {
        let mut b = [0; 8];
        assert_eq!(msix.read(0, 0x800, &mut b), Access::Done(None));
        u64::from_le_bytes(b)
    }

    #[test]
    fn the_capability_has_its_table_size_and_places_read_only() {
        let (mut space, mut msix) = function(3);
        let mut p = [0];
        space.read(CAPABILITIES_POINTER, &mut p);
        assert_eq!(usize::from(p[0]), msix.offset());
        let dword = |space: &ConfigSpace, at: usize| {
            let mut b = [0; 4];
            space.read(msix.offset() + at, &mut b);
            u32::from_le_bytes(b)
        };
        assert_eq!(dword(&space, 0) & 0xffff_00ff, 0x0002_0011, "ID 0x11, table size 3 - 1");
        assert_eq!((dword(&space, 4), dword(&space, 8)), (0, 0x800), "BIR 0 at 0, BIR 0 at 0x800");
        for at in [0, 4, 8] {
            space.write(msix.offset() + at, &u32::MAX.to_le_bytes());
        }
        assert_eq!(dword(&space, 0) >> 16, 0xc002, "enable and function mask stick, the size does not");
        assert_eq!((dword(&space, 4), dword(&space, 8)), (0, 0x800));
        assert_eq!(msix.config_written(&space), vec![]);
        assert!(msix.enabled() && msix.function_masked());
    }

    #[test]
    fn bad_placements_are_refused() {
        let mut space = ConfigSpace::new(Identity { vendor: 0x1234, device: 0x11, ..HOST_BRIDGE });
        space.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        space.add_bar(1, BarKind::Io, 0x100).unwrap();
        let at = |bar, offset| Place { bar, offset };
        assert_eq!(MsiX::add(&mut space, 0, TABLE_AT, PBA_AT).unwrap_err(), MsixError::BadVectorCount(0));
        assert_eq!(MsiX::add(&mut space, 2049, TABLE_AT, PBA_AT).unwrap_err(), MsixError::BadVectorCount(2049));
        assert!(matches!(MsiX::add(&mut space, 1, at(1, 0), PBA_AT), Err(MsixError::NotAMemoryBar { bar: 1, .. })));
        assert!(matches!(MsiX::add(&mut space, 1, at(2, 0), PBA_AT), Err(MsixError::NotAMemoryBar { bar: 2, .. })));
        assert!(matches!(MsiX::add(&mut space, 1, at(9, 0), PBA_AT), Err(MsixError::NotAMemoryBar { bar: 9, .. })));
        assert!(matches!(MsiX::add(&mut space, 1, at(0, 4), PBA_AT), Err(MsixError::Misaligned { .. })));
        assert!(matches!(MsiX::add(&mut space, 129, TABLE_AT, at(0, 0xff8)), Err(MsixError::PastTheBar { .. })));
        assert!(matches!(MsiX::add(&mut space, 1, TABLE_AT, at(0, 0x1000)), Err(MsixError::PastTheBar { .. })));
        assert_eq!(MsiX::add(&mut space, 2, TABLE_AT, at(0, 0x18)).unwrap_err(), MsixError::Overlap(0));
        // Nothing was added to the capability list by the refusals.
        let mut p = [0];
        space.read(CAPABILITIES_POINTER, &mut p);
        assert_eq!(p[0], 0);
        assert!(MsiX::add(&mut space, 2, TABLE_AT, at(0, 0x20)).is_ok());
    }

    #[test]
    fn the_table_starts_masked_and_keeps_what_the_guest_writes() {
        let (_, mut msix) = function(3);
        for v in 0..3 {
            assert_eq!(read32(&msix, v * 16 + 12), 1, "vector {v} masked after reset");
        }
        program(&mut msix, 1, 0x1_fee0_3003, 0xdead_0041);
        assert_eq!(read32(&msix, 16), 0xfee0_3000, "address bits 1:0 read 0");
        assert_eq!(read32(&msix, 20), 1);
        assert_eq!(read32(&msix, 24), 0xdead_0041, "32-bit data");
        assert_eq!(write32(&mut msix, 28, 0xffff_fffe), Access::Done(None));
        assert_eq!(read32(&msix, 28), 0, "only the mask bit of the vector control");
        let mut q = [0; 8];
        assert_eq!(msix.read(0, 16, &mut q), Access::Done(None));
        assert_eq!(u64::from_le_bytes(q), 0x1_fee0_3000);
        // Bytes, words, misaligned dwords: ignored, read all ones; PBA writes ignored.
        let mut b = [0; 2];
        assert_eq!(msix.read(0, 16, &mut b), Access::Ignored);
        assert_eq!(b, [0xff; 2]);
        assert_eq!(msix.write(0, 24, &[0x99]), Access::Ignored);
        assert_eq!(msix.write(0, 26, &[0; 4]), Access::Ignored);
        assert_eq!(msix.write(0, 20, &[0; 8]), Access::Ignored, "a qword must be qword aligned");
        assert_eq!(read32(&msix, 24), 0xdead_0041);
        assert_eq!(msix.write(0, 0x800, &[0xff; 8]), Access::Ignored);
        assert_eq!(pba(&msix), 0);
        // Outside the table and the PBA, or another BAR: the device's.
        assert_eq!(msix.read(0, 0x30, &mut [0; 4]), Access::NotMine);
        assert_eq!(msix.write(0, 0x808, &[0; 4]), Access::NotMine);
        assert_eq!(msix.read(1, 0, &mut [0; 4]), Access::NotMine);
    }

    #[test]
    fn a_masked_vector_is_pending_until_unmasked() {
        let (mut space, mut msix) = function(3);
        assert_eq!(msix.raise(0), Raised::Disabled, "MSI-X off");
        assert!(!msix.pending(0), "no pending bit with MSI-X off");
        assert_eq!(control(&mut space, &mut msix, 0x8000), vec![]);
        program(&mut msix, 2, 0xfee0_1000, 0x0042);
        // Still masked (the reset state): pending, in the PBA.
        assert_eq!(msix.raise(2), Raised::Pending);
        assert_eq!(msix.raise(2), Raised::Pending);
        assert!(msix.pending(2));
        assert_eq!(pba(&msix), 0b100);
        // Unmasking sends it once; the pending bit clears.
        assert_eq!(write32(&mut msix, 2 * 16 + 12, 0), Access::Done(Some(Raised::Send(fixed(0x42, 1)))));
        assert_eq!(pba(&msix), 0);
        assert_eq!(write32(&mut msix, 2 * 16 + 12, 0), Access::Done(None), "sent once");
        // Unmasked: raised, sent at once.
        assert_eq!(msix.raise(2), Raised::Send(fixed(0x42, 1)));
        assert!(!msix.pending(2));
        assert_eq!(msix.raise(3), Raised::Disabled, "no vector 3");
    }

    #[test]
    fn the_function_mask_holds_every_vector_until_cleared() {
        let (mut space, mut msix) = function(3);
        control(&mut space, &mut msix, 0xc000);
        program(&mut msix, 0, 0xfee0_0000, 0x0030);
        program(&mut msix, 2, 0xfee0_1000, 0x0032);
        for v in [0, 2] {
            assert_eq!(write32(&mut msix, v * 16 + 12, 0), Access::Done(None), "unmasked, nothing pending");
        }
        assert_eq!((msix.raise(2), msix.raise(0)), (Raised::Pending, Raised::Pending), "the function mask holds them");
        assert_eq!(msix.raise(1), Raised::Pending, "vector 1's own mask too");
        assert_eq!(pba(&msix), 0b111);
        // A write that leaves the function masked sends nothing.
        assert_eq!(control(&mut space, &mut msix, 0xc000), vec![]);
        // Cleared: 0 and 2 go, in order; 1 stays pending behind its own mask.
        assert_eq!(control(&mut space, &mut msix, 0x8000), vec![Raised::Send(fixed(0x30, 0)), Raised::Send(fixed(0x32, 1))]);
        assert_eq!(pba(&msix), 0b010);
        // Vector 1 programmed outside the APICs' window: unmasking it is not an interrupt.
        program(&mut msix, 1, 0xfed0_0000, 0x0031);
        assert_eq!(write32(&mut msix, 16 + 12, 0), Access::Done(Some(Raised::NotAnInterrupt)));
        assert_eq!(pba(&msix), 0);
        // MSI-X turned off while a vector is pending: nothing goes until it is back on.
        write32(&mut msix, 12, 1);
        assert_eq!(msix.raise(0), Raised::Pending);
        assert_eq!(control(&mut space, &mut msix, 0), vec![]);
        assert_eq!(write32(&mut msix, 12, 0), Access::Done(None), "off");
        assert_eq!(control(&mut space, &mut msix, 0x8000), vec![Raised::Send(fixed(0x30, 0))]);
    }

    /// A PBA over more than one qword, in a BAR of its own.
    #[test]
    fn many_vectors_and_a_pba_in_another_bar() {
        let mut space = ConfigSpace::new(Identity { vendor: 0x1234, device: 0x11, ..HOST_BRIDGE });
        space.add_bar(0, BarKind::Memory64 { prefetchable: false }, 0x4000).unwrap();
        space.add_bar(2, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        let mut msix = MsiX::add(&mut space, 130, Place { bar: 0, offset: 0x2000 }, Place { bar: 2, offset: 0x100 }).unwrap();
        control(&mut space, &mut msix, 0x8000);
        assert_eq!(msix.raise(129), Raised::Pending);
        let mut b = [0; 4];
        assert_eq!(msix.read(2, 0x110, &mut b), Access::Done(None), "the third qword's low half");
        assert_eq!(u32::from_le_bytes(b), 0b10);
        assert_eq!(msix.read(2, 0x118, &mut b), Access::NotMine, "past the PBA");
        msix.write(0, 0x2000 + 129 * 16, &0xfee0_0000u64.to_le_bytes());
        msix.write(0, 0x2000 + 129 * 16 + 8, &0x0077u32.to_le_bytes());
        assert_eq!(msix.write(0, 0x2000 + 129 * 16 + 12, &0u32.to_le_bytes()), Access::Done(Some(Raised::Send(fixed(0x77, 0)))));
    }

    /// Random accesses of every width at every offset of the BAR, random control words:
    /// nothing panics, the PBA only ever holds raised vectors, the read-only registers stay.
    #[test]
    fn hostile_table_and_pba_accesses_hurt_nothing() {
        let (mut space, mut msix) = function(3);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = [1, 2, 4, 8, 3][(x % 5) as usize];
            let offset = (x >> 8) % 0x1000;
            match (x >> 20) % 8 {
                0 => {
                    control(&mut space, &mut msix, (x >> 24) as u16);
                }
                1 => {
                    msix.raise((x >> 24) as u16 % 5);
                }
                2 | 3 => {
                    msix.read(0, offset, &mut vec![0; len]);
                }
                _ => {
                    msix.write(0, offset, &(x >> 3).to_le_bytes()[..len]);
                }
            }
            assert_eq!(pba(&msix) & !0b111, 0);
        }
        let mut b = [0; 4];
        space.read(msix.offset() + 4, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
        space.read(msix.offset() + 8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x800);
    }

    /// A device as one would use the piece: the table and PBA behind its BAR 0 on the
    /// pc board's PCI root, messages sent through the board's `MsiSender`.
    struct Device {
        space: ConfigSpace,
        msix: Arc<Mutex<MsiX>>,
        bar: SharedDevice,
        msi: MsiSender,
    }

    struct Bar0 {
        msix: Arc<Mutex<MsiX>>,
        msi: MsiSender,
    }

    fn send(msi: &MsiSender, raised: Raised) {
        if let Raised::Send(message) = raised {
            msi.send(message);
        }
    }

    impl BusDevice for Bar0 {
        fn read(&mut self, _: u64, offset: u64, data: &mut [u8], _: &Ctx) {
            if lock(&self.msix).read(0, offset, data) == Access::NotMine {
                data.fill(0);
            }
        }
        fn write(&mut self, _: u64, offset: u64, data: &[u8], _: &Ctx) -> std::io::Result<Effect> {
            if let Access::Done(Some(raised)) = lock(&self.msix).write(0, offset, data) {
                send(&self.msi, raised);
            }
            Ok(Effect::Continue)
        }
    }

    impl PciFunction for Device {
        fn config(&self) -> &ConfigSpace {
            &self.space
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.space
        }
        fn bar_device(&self, index: usize) -> Option<SharedDevice> {
            (index == 0).then(|| self.bar.clone())
        }
        fn config_written(&mut self, _: usize, _: usize) {
            for raised in lock(&self.msix).config_written(&self.space) {
                send(&self.msi, raised);
            }
        }
    }

    /// The guest's way in: ECAM for the capability, the BAR for the table; the function
    /// mask cleared by a configuration write sends the held vector to the local APIC.
    #[test]
    fn through_the_pci_root_a_held_vector_goes_when_the_function_is_unmasked() {
        let (mut d, board) = pc();
        let (space, msix) = function(3);
        let cap = msix.offset() as u64;
        let msix = Arc::new(Mutex::new(msix));
        let bar: SharedDevice = Arc::new(Mutex::new(Bar0 { msix: msix.clone(), msi: board.msi() }));
        let device = Device { space, msix: msix.clone(), bar, msi: board.msi() };
        lock(&board.pci).add(Bdf { bus: 0, device: 5, function: 0 }, Box::new(device)).unwrap();
        board.interrupts().apics.lapics[0].write(0xf0, 0x1ff, 0);
        let ecam = |d: &mut Devices, register: u64, value: u32| {
            d.mmio.write(ECAM_BASE + (5 << 15) + register, &value.to_le_bytes(), &CTX).unwrap();
        };
        ecam(&mut d, 0x10, 0xd004_0000);
        ecam(&mut d, 0x04, u32::from(COMMAND_MEMORY));
        // MSI-X on, function masked (a dword write of the capability's first dword, as
        // Linux's word write of the control lands in the same bytes).
        ecam(&mut d, cap, 0xc000_0000);
        // Vector 0: APIC ID 0, vector 0x47, unmasked; through the BAR.
        d.mmio.write(0xd004_0000, &0xfee0_0000u64.to_le_bytes(), &CTX).unwrap();
        d.mmio.write(0xd004_0008, &0x47u32.to_le_bytes(), &CTX).unwrap();
        d.mmio.write(0xd004_000c, &0u32.to_le_bytes(), &CTX).unwrap();
        let mut q = [0u8; 8];
        d.mmio.read(0xd004_0000, &mut q, &CTX);
        assert_eq!(u64::from_le_bytes(q), 0xfee0_0000, "the table through the BAR");
        assert_eq!(lock(&msix).raise(0), Raised::Pending);
        d.mmio.read(0xd004_0800, &mut q, &CTX);
        assert_eq!(u64::from_le_bytes(q), 1, "the PBA through the BAR");
        assert!(!board.interrupts().interrupt_pending(0), "held by the function mask");
        ecam(&mut d, cap, 0x8000_0000);
        assert!(board.interrupts().interrupt_pending(0));
        assert_eq!(board.interrupts().acknowledge(0), Some(0x47));
        d.mmio.read(0xd004_0800, &mut q, &CTX);
        assert_eq!(u64::from_le_bytes(q), 0, "no longer pending");
    }

    /// The message reaches the local APIC it names through the board's `MsiSender`.
    #[test]
    fn an_unmasked_vector_reaches_the_local_apic() {
        use crate::devices::Console;
        use crate::events::Waker;
        use crate::pc::board::PcBoard;
        let wakers: Arc<[Waker]> = (0..2).map(|_| Waker::new()).collect();
        let board = PcBoard::new(16 << 20, wakers, Arc::new(Console::new(Vec::new()))).unwrap();
        board.interrupts().apics.lapics[1].write(0xf0, 0x1ff, 0);
        let (mut space, mut msix) = function(3);
        control(&mut space, &mut msix, 0xc000);
        program(&mut msix, 0, 0xfee0_1000, 0x0046);
        write32(&mut msix, 12, 0);
        assert_eq!(msix.raise(0), Raised::Pending);
        assert!(!board.interrupts().interrupt_pending(1), "held by the function mask");
        for raised in control(&mut space, &mut msix, 0x8000) {
            let Raised::Send(message) = raised else { panic!("not sent: {raised:?}") };
            board.msi().send(message);
        }
        assert!(board.interrupts().interrupt_pending(1));
        assert_eq!(board.interrupts().acknowledge(1), Some(0x46));
    }
}
