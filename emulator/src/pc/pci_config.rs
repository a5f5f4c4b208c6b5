//! One PCI function's configuration space (PCI Local Bus 3.0, chapter 6; PCI Express 6.0,
//! 7.5 for the extended part): 4096 bytes, of which a conventional function uses the
//! first 256 (the rest reads as zeros: an extended capability header of 0, "none"). What
//! a guest may change is said per bit by masks, set up once when the function is built:
//!
//! - `writable`: bits a write sets to the written value (the command register's enables,
//!   the interrupt line, a BAR's address bits);
//! - `clear_on_one`: bits a written 1 clears (the status register's error bits, RW1C);
//! - every other bit is read-only (IDs, class, header type, the capability pointer).
//!
//! A BAR is sized the PCI way: its low address bits are not writable, so after a guest
//! writes all ones it reads back `!(size - 1)` with the type bits, and the guest takes
//! the size from it; the same masks make any write a valid address. [`ConfigSpace::bar`]
//! gives a BAR's decoded address (or none while its decoding is off in the command
//! register), which the root compares before and after a write to see a BAR move.
//!
//! Capabilities are chained from the capability pointer (0x34) in the order added, each
//! dword-aligned after the header; the status register's capability-list bit says there
//! are some.
//!
//! Nothing here trusts the guest: any offset and width are taken (the caller has checked
//! they lie inside the space), and a write can only reach the bits the masks allow.

/// The whole configuration space of a function (ECAM's view); mechanism #1 reaches the
/// first [`CONVENTIONAL_SIZE`] bytes.
pub const SPACE_SIZE: usize = 4096;
pub const CONVENTIONAL_SIZE: usize = 256;

/// Type 0 header registers (PCI Local Bus 3.0, 6.1).
pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION_ID: usize = 0x08;
/// Programming interface, subclass, base class (bytes 0x09, 0x0a, 0x0b).
pub const CLASS_CODE: usize = 0x09;
pub const CACHE_LINE_SIZE: usize = 0x0c;
pub const LATENCY_TIMER: usize = 0x0d;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const SUBSYSTEM_ID: usize = 0x2e;
pub const CAPABILITIES_POINTER: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;
/// The first byte past the type 0 header: capabilities go from here.
const HEADER_END: usize = 0x40;
pub const BARS: usize = 6;

/// Command register bits a guest may set (the others are hard-wired to 0 here: no special
/// cycles, no memory write and invalidate, no VGA palette snoop, no stepping, no fast
/// back-to-back).
pub const COMMAND_IO: u16 = 1 << 0;
pub const COMMAND_MEMORY: u16 = 1 << 1;
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
pub const COMMAND_PARITY_ERROR: u16 = 1 << 6;
pub const COMMAND_SERR: u16 = 1 << 8;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_PARITY_ERROR | COMMAND_SERR | COMMAND_INTX_DISABLE;
/// Status register: the capability list is there (read-only); the error bits a device
/// sets and software clears by writing 1 (master data parity error, signaled target
/// abort, received target abort, received master abort, signaled system error, detected
/// parity error).
pub const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Status register: the function's INTx is asserted, or would be but for the command
/// register's Interrupt Disable (read-only; `pci_intx.rs`).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
const STATUS_CLEAR_ON_ONE: u16 = (1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15);

/// BAR type bits (PCI Local Bus 3.0, 6.2.5.1).
const BAR_IO: u32 = 1 << 0;
const BAR_MEM_64: u32 = 0b10 << 1;
const BAR_PREFETCHABLE: u32 = 1 << 3;
const BAR_IO_FLAGS: u32 = 0b11;
const BAR_MEM_FLAGS: u32 = 0b1111;

/// What a function is (the identity registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Base class, subclass, programming interface.
    pub class: (u8, u8, u8),
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// 0 (none) or INTA# to INTD# (1 to 4).
    pub interrupt_pin: u8,
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Memory32 { prefetchable: bool },
    /// Takes two BAR slots (the second holds the high dword).
    Memory64 { prefetchable: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bar {
    kind: BarKind,
    size: u64,
}

/// Why a BAR or capability cannot be added (the device's code is wrong, not the guest).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("PCI BAR {index}: {why}")]
    BadBar { index: usize, why: &'static str },
    #[error("PCI capability {id:#x} of {len} bytes does not fit in the configuration space")]
    NoRoomForCapability { id: u8, len: usize },
}

/// One function's configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    regs: Vec<u8>,
    writable: Vec<u8>,
    clear_on_one: Vec<u8>,
    bars: [Option<Bar>; BARS],
    /// The last capability's offset (its next pointer is the chain's end).
    last_capability: Option<usize>,
    /// Where the next capability may go.
    capability_free: usize,
}

impl ConfigSpace {
    /// A type 0 header (an endpoint, single function) for `id`, with no BAR or capability.
    pub fn new(id: Identity) -> Self {
        let mut space = Self {
            regs: vec![0; SPACE_SIZE],
            writable: vec![0; SPACE_SIZE],
            clear_on_one: vec![0; SPACE_SIZE],
            bars: [None; BARS],
            last_capability: None,
            capability_free: HEADER_END,
        };
        space.put(VENDOR_ID, &id.vendor.to_le_bytes());
        space.put(DEVICE_ID, &id.device.to_le_bytes());
        space.put(REVISION_ID, &[id.revision]);
        let (base, sub, interface) = id.class;
        space.put(CLASS_CODE, &[interface, sub, base]);
        space.put(SUBSYSTEM_VENDOR_ID, &id.subsystem_vendor.to_le_bytes());
        space.put(SUBSYSTEM_ID, &id.subsystem.to_le_bytes());
        space.put(INTERRUPT_PIN, &[id.interrupt_pin]);
        space.writable[COMMAND..COMMAND + 2].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        space.clear_on_one[STATUS..STATUS + 2].copy_from_slice(&STATUS_CLEAR_ON_ONE.to_le_bytes());
        // Scratch registers software may use: cache line size, latency timer, the
        // interrupt line (the OS's note of where INTx goes; nothing here reads it).
        for reg in [CACHE_LINE_SIZE, LATENCY_TIMER, INTERRUPT_LINE] {
            space.writable[reg] = 0xff;
        }
        space
    }

    /// Sets bytes as the device's own (no mask applies).
    fn put(&mut self, offset: usize, bytes: &[u8]) {
        self.regs[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.regs[offset], self.regs[offset + 1]])
    }

    fn u32_at(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.regs[offset..offset + 4].try_into().expect("4 bytes"))
    }

    /// Adds BAR `index` of `size` bytes (a power of two: at least 4 for I/O, 16 for
    /// memory; I/O at most 256, 32-bit memory at most 2 GiB).
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64) -> Result<(), ConfigError> {
        let bad = |why| Err(ConfigError::BadBar { index, why });
        let slots = if matches!(kind, BarKind::Memory64 { .. }) { 2 } else { 1 };
        if index + slots > BARS {
            return bad("past the last BAR");
        }
        if (index..index + slots).any(|i| self.bars[i].is_some() || self.is_high_half(i)) {
            return bad("already in use");
        }
        let (min, max) = match kind {
            BarKind::Io => (4, 256),
            BarKind::Memory32 { .. } => (16, 1 << 31),
            BarKind::Memory64 { .. } => (16, 1 << 63),
        };
        if !size.is_power_of_two() || !(min..=max).contains(&size) {
            return bad("size not a power of two in the range its kind allows");
        }
        let (flags, mask_low) = match kind {
            BarKind::Io => (BAR_IO, BAR_IO_FLAGS),
            BarKind::Memory32 { prefetchable } => (if prefetchable { BAR_PREFETCHABLE } else { 0 }, BAR_MEM_FLAGS),
            BarKind::Memory64 { prefetchable } => (BAR_MEM_64 | if prefetchable { BAR_PREFETCHABLE } else { 0 }, BAR_MEM_FLAGS),
        };
        let address_mask = !(size - 1);
        let reg = BAR0 + 4 * index;
        self.put(reg, &flags.to_le_bytes());
        self.writable[reg..reg + 4].copy_from_slice(&(address_mask as u32 & !mask_low).to_le_bytes());
        if slots == 2 {
            self.writable[reg + 4..reg + 8].copy_from_slice(&((address_mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(Bar { kind, size });
        Ok(())
    }

    /// Whether slot `i` is the high dword of a 64-bit BAR.
    fn is_high_half(&self, i: usize) -> bool {
        i > 0 && matches!(self.bars[i - 1], Some(Bar { kind: BarKind::Memory64 { .. }, .. }))
    }

    /// Adds a capability: `id`, then `body` (the bytes after the ID and next pointer),
    /// with `writable` the guest-writable bits of the body (same length). Returns its
    /// offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> Result<usize, ConfigError> {
        assert_eq!(body.len(), writable.len(), "a mask per byte of the body");
        let len = 2 + body.len();
        let at = self.capability_free;
        if at + len > CONVENTIONAL_SIZE {
            return Err(ConfigError::NoRoomForCapability { id, len });
        }
        self.put(at, &[id, 0]);
        self.put(at + 2, body);
        self.writable[at + 2..at + len].copy_from_slice(writable);
        match self.last_capability {
            None => {
                self.put(CAPABILITIES_POINTER, &[at as u8]);
                let status = self.u16_at(STATUS) | STATUS_CAPABILITIES;
                self.put(STATUS, &status.to_le_bytes());
            }
            Some(last) => self.regs[last + 1] = at as u8,
        }
        self.last_capability = Some(at);
        self.capability_free = (at + len).next_multiple_of(4);
        Ok(at)
    }

    /// The device sets its own bytes (a capability's status, a pending bit), whatever the
    /// masks say.
    pub fn set(&mut self, offset: usize, bytes: &[u8]) {
        self.put(offset, bytes);
    }

    /// Reads `data.len()` bytes at `offset` (inside the space).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        data.copy_from_slice(&self.regs[offset..offset + data.len()]);
    }

    /// Writes `data` at `offset` (inside the space), through the masks.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let at = offset + i;
            let (w, c) = (self.writable[at], self.clear_on_one[at]);
            self.regs[at] = (self.regs[at] & !w & !(c & value)) | (value & w);
        }
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// The device sets status bits (an error it saw); the guest clears them.
    pub fn set_status(&mut self, bits: u16) {
        let status = self.u16_at(STATUS) | (bits & STATUS_CLEAR_ON_ONE);
        self.put(STATUS, &status.to_le_bytes());
    }

    /// The status register's Interrupt Status (the function's INTx request).
    pub fn set_interrupt_status(&mut self, on: bool) {
        let status = self.u16_at(STATUS) & !STATUS_INTERRUPT | if on { STATUS_INTERRUPT } else { 0 };
        self.put(STATUS, &status.to_le_bytes());
    }

    /// BAR `index`'s kind, size and programmed address (whether or not it decodes).
    pub fn bar_programmed(&self, index: usize) -> Option<(BarKind, u64, u64)> {
        let bar = (*self.bars.get(index)?)?;
        let reg = BAR0 + 4 * index;
        let low = u64::from(self.u32_at(reg));
        let address = match bar.kind {
            BarKind::Io => low & !u64::from(BAR_IO_FLAGS),
            BarKind::Memory32 { .. } => low & !u64::from(BAR_MEM_FLAGS),
            BarKind::Memory64 { .. } => (low & !u64::from(BAR_MEM_FLAGS)) | u64::from(self.u32_at(reg + 4)) << 32,
        };
        Some((bar.kind, bar.size, address))
    }

    /// BAR `index`'s decoded range (address, size): none while the command register has
    /// its kind's decoding off.
    pub fn bar(&self, index: usize) -> Option<(BarKind, u64, u64)> {
        let (kind, size, address) = self.bar_programmed(index)?;
        let enable = if kind == BarKind::Io { COMMAND_IO } else { COMMAND_MEMORY };
        (self.command() & enable != 0).then_some((kind, size, address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Identity = Identity {
        vendor: 0x1234,
        device: 0x5678,
        revision: 2,
        class: (0x02, 0x00, 0x00),
        subsystem_vendor: 0x1234,
        subsystem: 0x0001,
        interrupt_pin: 1,
    };

    fn dword(s: &ConfigSpace, at: usize) -> u32 {
        let mut b = [0; 4];
        s.read(at, &mut b);
        u32::from_le_bytes(b)
    }

    fn put32(s: &mut ConfigSpace, at: usize, v: u32) {
        s.write(at, &v.to_le_bytes());
    }

    #[test]
    fn identity_registers_are_read_only() {
        let mut s = ConfigSpace::new(ID);
        let before: Vec<u32> = [0, 8, 0x0c, 0x2c, 0x34].iter().map(|&r| dword(&s, r)).collect();
        assert_eq!(before[0], 0x5678_1234);
        assert_eq!(before[1], 0x0200_0002, "class 02.00.00, revision 2");
        for reg in (0..0x40).step_by(4) {
            put32(&mut s, reg, 0xffff_ffff);
        }
        assert_eq!(dword(&s, 0), 0x5678_1234);
        assert_eq!(dword(&s, 8), 0x0200_0002);
        assert_eq!(dword(&s, 0x2c), 0x0001_1234);
        assert_eq!(dword(&s, 0x34), 0, "no capabilities");
        assert_eq!(dword(&s, 0x30), 0, "no expansion ROM");
        // Cache line size and latency timer take writes; header type and BIST do not.
        assert_eq!(dword(&s, 0x0c), 0x0000_ffff);
        // Interrupt line writable, pin read-only.
        assert_eq!(dword(&s, 0x3c), 0x0000_01ff);
        assert_eq!(s.command(), COMMAND_WRITABLE, "only the implemented command bits stick");
        // No BARs: all six read zero after all ones.
        for i in 0..BARS {
            assert_eq!(dword(&s, BAR0 + 4 * i), 0);
        }
        // The extended space is zeros and stays so.
        put32(&mut s, 0x100, 0xffff_ffff);
        assert_eq!(dword(&s, 0x100), 0);
    }

    #[test]
    fn status_error_bits_clear_on_one() {
        let mut s = ConfigSpace::new(ID);
        s.set_status(1 << 13 | 1 << 8);
        assert_eq!(s.u16_at(STATUS), 1 << 13 | 1 << 8);
        // Writing 0 leaves them; writing 1 to one clears only it; the command register in
        // the same dword is written as given.
        put32(&mut s, COMMAND, u32::from(COMMAND_MEMORY));
        assert_eq!(s.u16_at(STATUS), 1 << 13 | 1 << 8);
        put32(&mut s, COMMAND, (1 << 13) << 16 | u32::from(COMMAND_IO));
        assert_eq!(s.u16_at(STATUS), 1 << 8);
        assert_eq!(s.command(), COMMAND_IO);
    }

    #[test]
    fn bars_are_sized_by_writing_all_ones() {
        let mut s = ConfigSpace::new(ID);
        s.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        s.add_bar(1, BarKind::Io, 0x20).unwrap();
        s.add_bar(2, BarKind::Memory64 { prefetchable: true }, 0x1_0000_0000).unwrap();
        s.add_bar(4, BarKind::Memory32 { prefetchable: true }, 16).unwrap();
        for i in 0..BARS {
            put32(&mut s, BAR0 + 4 * i, 0xffff_ffff);
        }
        assert_eq!(dword(&s, 0x10), 0xffff_f000, "4 KiB, memory, 32-bit");
        assert_eq!(dword(&s, 0x14), 0xffff_ffe1, "32 ports, I/O");
        assert_eq!(dword(&s, 0x18), 0x0000_000c, "64-bit prefetchable, low dword: size above 4 GiB");
        assert_eq!(dword(&s, 0x1c), 0xffff_ffff, "high dword of a 4 GiB BAR");
        assert_eq!(dword(&s, 0x20), 0xffff_fff8, "16 bytes, prefetchable");
        assert_eq!(dword(&s, 0x24), 0, "no BAR 5");
        // The size an OS computes from the low dword of BAR 0.
        assert_eq!((!(dword(&s, 0x10) & !0xf)).wrapping_add(1), 0x1000);
        // Programmed addresses, aligned down to the size; decoding follows the command.
        put32(&mut s, 0x10, 0xd000_1234);
        put32(&mut s, 0x14, 0x0000_c03f);
        put32(&mut s, 0x18, 0x0000_0000);
        put32(&mut s, 0x1c, 0x0000_0001);
        assert_eq!(s.bar(0), None, "memory decoding off");
        assert_eq!(s.bar_programmed(0), Some((BarKind::Memory32 { prefetchable: false }, 0x1000, 0xd000_1000)));
        put32(&mut s, COMMAND, u32::from(COMMAND_MEMORY));
        assert_eq!(s.bar(0), Some((BarKind::Memory32 { prefetchable: false }, 0x1000, 0xd000_1000)));
        assert_eq!(s.bar(1), None, "I/O decoding off");
        assert_eq!(s.bar(2), Some((BarKind::Memory64 { prefetchable: true }, 0x1_0000_0000, 0x1_0000_0000)));
        assert_eq!(s.bar(3), None, "the high half is not a BAR of its own");
        put32(&mut s, COMMAND, u32::from(COMMAND_IO));
        assert_eq!(s.bar(1), Some((BarKind::Io, 0x20, 0xc020)));
        // Byte writes reach a BAR too (the type bits stay).
        s.write(0x11, &[0x56]);
        assert_eq!(dword(&s, 0x10), 0xd000_5000);
    }

    #[test]
    fn bad_bars_are_refused() {
        let mut s = ConfigSpace::new(ID);
        let mem32 = BarKind::Memory32 { prefetchable: false };
        let err = |index, why| Err(ConfigError::BadBar { index, why });
        assert_eq!(s.add_bar(6, mem32, 0x1000), err(6, "past the last BAR"));
        assert_eq!(s.add_bar(5, BarKind::Memory64 { prefetchable: false }, 0x1000), err(5, "past the last BAR"));
        assert_eq!(s.add_bar(0, mem32, 0x1800), err(0, "size not a power of two in the range its kind allows"));
        assert_eq!(s.add_bar(0, BarKind::Io, 512), err(0, "size not a power of two in the range its kind allows"));
        assert_eq!(s.add_bar(0, mem32, 8), err(0, "size not a power of two in the range its kind allows"));
        s.add_bar(0, BarKind::Memory64 { prefetchable: false }, 0x1000).unwrap();
        assert_eq!(s.add_bar(1, mem32, 0x1000), err(1, "already in use"));
        assert_eq!(s.add_bar(0, mem32, 0x1000), err(0, "already in use"));
    }

    /// An OS's walk of the list: from the pointer, each next pointer, until 0.
    fn walk(s: &ConfigSpace) -> Vec<(usize, u8)> {
        let mut found = Vec::new();
        let mut b = [0; 1];
        s.read(CAPABILITIES_POINTER, &mut b);
        let mut at = usize::from(b[0] & !3);
        while at != 0 && found.len() < 48 {
            let mut head = [0; 2];
            s.read(at, &mut head);
            found.push((at, head[0]));
            at = usize::from(head[1] & !3);
        }
        found
    }

    #[test]
    fn capabilities_form_a_list() {
        let mut s = ConfigSpace::new(ID);
        assert_eq!(s.u16_at(STATUS) & STATUS_CAPABILITIES, 0);
        assert_eq!(walk(&s), []);
        // An MSI capability (32-bit address, no masking): message control's enable bit and
        // the address and data are writable.
        let msi = s.add_capability(0x05, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[0x71, 0, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]).unwrap();
        let vendor = s.add_capability(0x09, &[3], &[0]).unwrap();
        let pm = s.add_capability(0x01, &[0x03, 0x00, 0, 0, 0, 0], &[0, 0, 0x03, 0, 0, 0]).unwrap();
        assert_eq!((msi, vendor, pm), (0x40, 0x4c, 0x50));
        assert_eq!(walk(&s), [(0x40, 0x05), (0x4c, 0x09), (0x50, 0x01)]);
        assert_ne!(s.u16_at(STATUS) & STATUS_CAPABILITIES, 0);
        // The guest cannot change the chain, only the writable bits.
        put32(&mut s, 0x40, 0xffff_ffff);
        assert_eq!(dword(&s, 0x40), 0x0071_4c05);
        put32(&mut s, 0x44, 0xffff_ffff);
        assert_eq!(dword(&s, 0x44), 0xffff_fffc);
        s.write(CAPABILITIES_POINTER, &[0x80]);
        assert_eq!(walk(&s).len(), 3);
        // A capability that would run past 256 bytes is refused.
        let big = vec![0; 200];
        assert_eq!(s.add_capability(0x10, &big, &big), Err(ConfigError::NoRoomForCapability { id: 0x10, len: 202 }));
    }

    /// Random writes of every width at every offset: nothing read-only changes, nothing
    /// panics.
    #[test]
    fn hostile_writes_leave_the_read_only_bits() {
        let mut s = ConfigSpace::new(ID);
        s.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        s.add_capability(0x09, &[2, 0], &[0, 0]).unwrap();
        let fixed = |s: &ConfigSpace| (dword(s, 0), dword(s, 8), dword(s, 0x2c), dword(s, 0x34), s.regs[0x0e], s.regs[0x3d]);
        let before = fixed(&s);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let width = [1, 2, 4][(x % 3) as usize];
            let offset = ((x >> 8) as usize % SPACE_SIZE) & !(width - 1);
            s.write(offset, &(x >> 20).to_le_bytes()[..width]);
        }
        assert_eq!(fixed(&s), before);
        assert_eq!(dword(&s, 0x10) & 0xfff, 0, "BAR 0's size bits");
        assert!(s.regs[CONVENTIONAL_SIZE..].iter().all(|&b| b == 0));
    }
}
