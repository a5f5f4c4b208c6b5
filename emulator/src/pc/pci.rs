//! The pc machine's PCI: one root bus (segment 0, bus 0) with a host bridge at 00:00.0,
//! reached the two ways a PC offers (PCI Local Bus 3.0, 3.2.2.3.2; PCI Express 6.0,
//! 7.2.2):
//!
//! - configuration mechanism #1: the configuration address register at 0xcf8 (a dword:
//!   enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2) and the data
//!   window at 0xcfc-0xcff, taken at its real widths: a byte, word or dword at offset 0-3
//!   reaches the same bytes of the addressed dword (an access that runs past 0xcff is
//!   ignored). The first 256 bytes of each function.
//! - ECAM (enhanced configuration access): [`ECAM_BASE`] in the MMIO space, 4 KiB per
//!   function (bus 20+, device 19:15, function 14:12, register 11:0), byte, word and
//!   dword accesses at their natural alignment. Only bus 0 exists, so the window is
//!   bus 0's 1 MiB (the MCFG table says bus 0 to 0).
//!
//! Both reach one [`ConfigSpace`] per function, so they give the same bytes.
//!
//! BARs: the host bridge forwards one 32-bit memory window to the bus
//! ([`WINDOW_START`], 256 MiB, the `_CRS` says the same). The root is on the MMIO bus over
//! the whole window and keeps the BARs on a bus of its own (`bus.rs`'s [`Bus`]): when a
//! configuration write changes where a memory BAR decodes (its address, or the command
//! register's memory enable), the root moves, adds or removes that BAR's range there. A
//! BAR programmed outside the window (over RAM, the APIC pages, ECAM, anywhere else) or
//! over another BAR does not decode, as a BAR the host bridge does not forward to; the
//! refusal is counted ([`PciStats::bars_refused`]) and noted. So a guest can never shadow
//! RAM, the APICs or another device with a BAR. I/O BARs are not decoded yet (no function
//! has one; one would be refused and counted). A function
//! that is not there (any device but 0, any bus but 0) reads all ones (a vendor ID of
//! 0xffff: "nothing here") and drops writes, as a PC's master abort does; those accesses
//! are counted, not logged (probing every slot is how an OS finds devices).
//!
//! Interrupts: a function with an INTx pin gives the root its [`IntxPin`]
//! ([`PciFunction::intx`], `pci_intx.rs`): the root passes it the command register's
//! Interrupt Disable after each configuration write, shows its request in the status
//! register's Interrupt Status before each read, and fills the Interrupt Line with its GSI
//! when the function is added (as a firmware would). MSI and MSI-X are the functions' own
//! (`pci_msi.rs`, `pci_msix.rs`).
//!
//! The reset control register at 0xcf9 shares the address register's dword: a byte
//! access there is the reset control's, a dword access at 0xcf8 the address register's,
//! as on PC chipsets. (A dword written to 0xcf8 once reached 0xcf9 as its second byte, and
//! 0x80000400, function 4, reset the machine.) A byte written to 0xcfb is old chipsets'
//! configuration mechanism select (Linux's probe of mechanism #1 writes 1 there): there is
//! only mechanism #1, the write is taken and does nothing.
//!
//! # The host bridge's identity
//!
//! 00:00.0 is vendor 0x1b36, device 0x0008, class 06.00.00 (host bridge), revision 0: the
//! ID the PCI ID database lists as "QEMU PCIe Host bridge", Red Hat's ID for a generic
//! host bridge that has no chipset registers, which is what this one is (the header, no
//! BAR, no capability). yakvm has no vendor ID of its own (PCI-SIG assigns them to
//! members; a made-up one could be a real vendor's), and an Intel chipset's ID (the
//! 440FX's 8086:1237, Q35's 8086:29c0) would promise registers we do not have (PAM,
//! SMRAM, PCIEXBAR) and bring that chipset's quirks in OSes. Linux's check of mechanism #1
//! (`pci_sanity_check`) accepts a host bridge of any vendor by its class.
//!
//! Why not a rust-vmm crate: rust-vmm has no PCI crate (`vm-device` has a bus and
//! interrupt traits, no configuration space); Cloud Hypervisor's `pci` crate is not on
//! crates.io as a library apart from its VMM and brings its own device and bus traits
//! (`vm-device`'s), where ours are `bus.rs`'s. The design follows it: a configuration
//! space with masks (`pci_config.rs`), a root that decodes the two mechanisms and
//! dispatches to functions (here).

use std::collections::BTreeMap;
use std::io;

use super::pci_config::{
    BarKind, ConfigSpace, Identity, BAR0, BARS, COMMAND, COMMAND_INTX_DISABLE, CONVENTIONAL_SIZE, INTERRUPT_LINE, SPACE_SIZE,
};
use super::pci_intx::IntxPin;
use crate::bus::{le, Bus, BusDevice, BusError, Ctx, Effect, Ignored, SharedDevice, Span};

/// The configuration address register (a dword), with the reset control register in it.
pub const CONFIG_ADDRESS: u16 = 0xcf8;
/// The configuration data window (a dword).
pub const CONFIG_DATA: u16 = 0xcfc;
/// The reset control register of PC chipsets (a byte): bit 2 resets the CPU.
pub const RESET_CONTROL: u16 = 0xcf9;
pub const RESET_CONTROL_CPU: u8 = 1 << 2;
/// Old chipsets' configuration mechanism select (a byte).
const MECHANISM_SELECT: u16 = 0xcfb;
/// Bits 1:0 of the configuration address are reserved and read as 0.
const ADDRESS_RESERVED: u32 = 0b11;
const ADDRESS_ENABLE: u32 = 1 << 31;

/// ECAM: bus 0's 1 MiB, in the PCI hole below 4 GiB (`layout.rs`).
pub const ECAM_BASE: u64 = crate::layout::PCI_ECAM_BASE;
pub const ECAM_SIZE: u64 = crate::layout::PCI_ECAM_SIZE;
/// The memory window the host bridge forwards to PCI (BARs go here).
pub const WINDOW_START: u64 = crate::layout::PCI_MMIO_WINDOW_START;
pub const WINDOW_SIZE: u64 = crate::layout::PCI_MMIO_WINDOW_SIZE;
/// The bus numbers ECAM (and the host bridge's `_CRS`) covers.
pub const BUS_FIRST: u8 = 0;
pub const BUS_LAST: u8 = ((ECAM_SIZE >> 20) - 1) as u8;
/// A PCI segment's configuration space per function, per device (8 functions), per bus.
const ECAM_FUNCTION_SHIFT: u32 = 12;

/// The host bridge's identity (see the module's comment).
pub const HOST_BRIDGE: Identity = Identity {
    vendor: 0x1b36,
    device: 0x0008,
    revision: 0,
    class: (0x06, 0x00, 0x00),
    subsystem_vendor: 0,
    subsystem: 0,
    interrupt_pin: 0,
};

/// A function's place: bus, device (0-31), function (0-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    pub const HOST_BRIDGE: Bdf = Bdf { bus: 0, device: 0, function: 0 };

    /// From the 16 bits bus:device:function as both mechanisms put them.
    fn from_bits(bits: u16) -> Self {
        Self { bus: (bits >> 8) as u8, device: ((bits >> 3) & 0x1f) as u8, function: (bits & 7) as u8 }
    }
}

impl std::fmt::Display for Bdf {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A PCI function: its configuration space (the host bridge is nothing more), and the
/// registers behind its memory BARs.
pub trait PciFunction: Send {
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// The device that answers at memory BAR `index` (at offsets from the BAR's base).
    /// It must never lock the PCI root (the root's lock is held when it is called).
    fn bar_device(&self, _index: usize) -> Option<SharedDevice> {
        None
    }
    /// After the guest wrote `len` bytes at `offset` of the configuration space (an MSI
    /// or MSI-X capability's enable or mask may have changed: a pending vector may go).
    /// It must never lock the PCI root.
    fn config_written(&mut self, _offset: usize, _len: usize) {}
    /// Memory BAR `index` now decodes at `address` in the window, or (`None`) nowhere: it
    /// moved, was placed, was refused or its memory decoding went off. Called after each
    /// such change (a device that registered addresses in its BAR with the hypervisor
    /// moves them). It must never lock the PCI root.
    fn bar_placed(&mut self, _index: usize, _address: Option<u64>) {}
    /// Before the guest reads the configuration space (a device-set bit that the device
    /// keeps elsewhere, such as a pending bit, goes into the space). It must never lock
    /// the PCI root.
    fn before_config_read(&mut self) {}
    /// The function's INTx pin (`pci_intx.rs`), if its Interrupt Pin register names one:
    /// the root gives it the command register's Interrupt Disable after each configuration
    /// write and shows its request in the status register's Interrupt Status.
    fn intx(&self) -> Option<&IntxPin> {
        None
    }
}

/// The host bridge: a header and nothing else.
pub struct HostBridge(ConfigSpace);

impl HostBridge {
    pub fn new() -> Self {
        Self(ConfigSpace::new(HOST_BRIDGE))
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.0
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.0
    }
}

/// What the root counted (`--stats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PciStats {
    pub config_reads: u64,
    pub config_writes: u64,
    /// Accesses to functions that are not there (all ones, writes dropped).
    pub absent: u64,
    /// BARs placed where they cannot decode: outside the window, over another BAR, or
    /// I/O BARs.
    pub bars_refused: u64,
    /// BAR ranges added, moved or removed in the window.
    pub bar_moves: u64,
}

/// Why a function cannot be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("PCI function {0} is not on the root bus (bus 0, device 0-31, function 0-7)")]
    BadPlace(Bdf),
    #[error("PCI function {0} is already there")]
    Taken(Bdf),
}

/// The root bus: its functions, the configuration address register, and both ways in.
/// On the port bus at 0xcf8 (4 bytes) and 0xcfc (4 bytes), and on the MMIO bus at
/// [`ECAM_BASE`]; the range's base tells them apart.
pub struct PciRoot {
    address: u32,
    functions: BTreeMap<Bdf, Box<dyn PciFunction>>,
    /// The memory window's BARs, by their addresses.
    window: Bus,
    ignored: Ignored,
    pub stats: PciStats,
}

/// Where a function's BARs decode (kind, size, address), by index.
type Decoded = [Option<(BarKind, u64, u64)>; BARS];

impl PciRoot {
    /// A root bus with the host bridge at 00:00.0; odd accesses are noted in `ignored`.
    pub fn new(ignored: Ignored) -> Self {
        let window = Bus::new("PCI memory window", Span::Whole, ignored.clone());
        let mut root = Self { address: 0, functions: BTreeMap::new(), window, ignored, stats: PciStats::default() };
        root.add(Bdf::HOST_BRIDGE, Box::new(HostBridge::new())).expect("an empty bus");
        root
    }

    /// Puts `function` at `bdf`.
    pub fn add(&mut self, bdf: Bdf, mut function: Box<dyn PciFunction>) -> Result<(), PciError> {
        if bdf.bus != 0 || bdf.device > 31 || bdf.function > 7 {
            return Err(PciError::BadPlace(bdf));
        }
        if self.functions.contains_key(&bdf) {
            return Err(PciError::Taken(bdf));
        }
        // What a firmware does for an OS without `_PRT` to read: the Interrupt Line holds
        // where the pin goes (the GSI; an OS may write it, nothing here reads it back).
        if let Some(gsi) = function.intx().map(IntxPin::gsi) {
            function.config_mut().write(INTERRUPT_LINE, &[gsi as u8]);
        }
        self.functions.insert(bdf, function);
        Ok(())
    }

    /// Where odd accesses are noted (for the functions' own).
    pub fn ignored(&self) -> &Ignored {
        &self.ignored
    }

    /// The functions, in order.
    pub fn functions(&self) -> impl Iterator<Item = (Bdf, &dyn PciFunction)> {
        self.functions.iter().map(|(&bdf, f)| (bdf, &**f))
    }

    /// Reads `data.len()` bytes at `offset` of `bdf`'s space (all ones if it is absent).
    fn config_read(&mut self, bdf: Bdf, offset: usize, data: &mut [u8]) {
        self.stats.config_reads += 1;
        match self.functions.get_mut(&bdf) {
            Some(f) => {
                f.before_config_read();
                if let Some(status) = f.intx().map(IntxPin::status) {
                    f.config_mut().set_interrupt_status(status);
                }
                f.config().read(offset, data)
            }
            None => {
                self.stats.absent += 1;
                data.fill(0xff);
            }
        }
    }

    fn config_write(&mut self, bdf: Bdf, offset: usize, data: &[u8]) {
        self.stats.config_writes += 1;
        let Some(f) = self.functions.get_mut(&bdf) else {
            self.stats.absent += 1;
            return;
        };
        let decoded = |f: &dyn PciFunction| -> Decoded { std::array::from_fn(|i| f.config().bar(i)) };
        let before = decoded(&**f);
        f.config_mut().write(offset, data);
        f.config_written(offset, data.len());
        let touches = |start: usize, len: usize| offset < start + len && start < offset + data.len();
        if let Some(pin) = f.intx().filter(|_| touches(COMMAND, 2)) {
            pin.set_disabled(f.config().command() & COMMAND_INTX_DISABLE != 0);
        }
        if touches(COMMAND, 2) || touches(BAR0, 4 * BARS) {
            let after = decoded(&**f);
            self.remap(bdf, &before, &after);
        }
    }

    /// Moves `bdf`'s BARs on the window from where they decoded `before` to `after`.
    fn remap(&mut self, bdf: Bdf, before: &Decoded, after: &Decoded) {
        for (index, (old, new)) in before.iter().zip(after).enumerate() {
            if old == new {
                continue;
            }
            let name = format!("{bdf} BAR{index}");
            if self.window.remove(&name).is_ok() {
                self.stats.bar_moves += 1;
            }
            let Some((kind, size, address)) = *new else {
                self.tell_placed(bdf, index, None);
                continue;
            };
            let device = self.functions.get(&bdf).and_then(|f| f.bar_device(index));
            let refused = match (kind, device) {
                (BarKind::Io, _) => Some("an I/O BAR (not decoded yet)".to_string()),
                (_, None) => None,
                _ if address < WINDOW_START || address.saturating_add(size) > WINDOW_START + WINDOW_SIZE => {
                    Some(format!("outside the host bridge's window {WINDOW_START:#x}..{:#x}", WINDOW_START + WINDOW_SIZE))
                }
                (_, Some(device)) => match self.window.insert(&name, address, size, Span::Whole, device) {
                    Ok(()) => {
                        self.stats.bar_moves += 1;
                        None
                    }
                    Err(BusError::Overlap { other, .. }) => Some(format!("over {other}")),
                    Err(e) => Some(e.to_string()),
                },
            };
            if let Some(why) = refused {
                self.stats.bars_refused += 1;
                self.ignored.note(format_args!("PCI {name} at {address:#x} (size {size:#x}): {why}; it does not decode"));
            }
            let placed = self.window.range_of(&name).map(|(start, _)| start);
            self.tell_placed(bdf, index, placed);
        }
    }

    fn tell_placed(&mut self, bdf: Bdf, index: usize, address: Option<u64>) {
        if let Some(f) = self.functions.get_mut(&bdf) {
            f.bar_placed(index, address);
        }
    }

    /// Where BAR `index` of `bdf` decodes in the window now.
    pub fn bar_range(&self, bdf: Bdf, index: usize) -> Option<(u64, u64)> {
        self.window.range_of(&format!("{bdf} BAR{index}"))
    }

    /// Mechanism #1: the function and offset a data-window access at `offset` (0-3) of
    /// `len` bytes reaches, if the address register is enabled and the access stays in
    /// the dword.
    fn mechanism1_target(&self, offset: u64, len: usize) -> Option<(Bdf, usize)> {
        let fits = offset as usize + len <= 4;
        let enabled = self.address & ADDRESS_ENABLE != 0;
        let register = (self.address & 0xfc) as usize + offset as usize;
        (fits && enabled).then_some((Bdf::from_bits((self.address >> 8) as u16), register))
    }

    /// ECAM: the function and offset of an access at `offset` in the window, if it is a
    /// byte, word or dword at its natural alignment.
    fn ecam_target(offset: u64, len: usize) -> Option<(Bdf, usize)> {
        let aligned = matches!(len, 1 | 2 | 4) && offset.is_multiple_of(len as u64) && offset < ECAM_SIZE;
        let register = (offset as usize) & (SPACE_SIZE - 1);
        aligned.then_some((Bdf::from_bits((offset >> ECAM_FUNCTION_SHIFT) as u16), register))
    }

    fn target(&self, base: u64, offset: u64, len: usize) -> Option<(Bdf, usize)> {
        if base == u64::from(CONFIG_DATA) {
            self.mechanism1_target(offset, len).filter(|&(_, reg)| reg + len <= CONVENTIONAL_SIZE)
        } else {
            Self::ecam_target(offset, len)
        }
    }

    fn note(&self, what: &str, len: usize, base: u64, offset: u64, value: Option<u64>) {
        let value = value.map(|v| format!(" of {v:#x}")).unwrap_or_default();
        self.ignored.note(format_args!("{len}-byte PCI {what}{value} at {:#x} (all ones / dropped)", base + offset));
    }
}

const RESET_OFFSET: u64 = (RESET_CONTROL - CONFIG_ADDRESS) as u64;
const MECHANISM_SELECT_OFFSET: u64 = (MECHANISM_SELECT - CONFIG_ADDRESS) as u64;

impl BusDevice for PciRoot {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], ctx: &Ctx) {
        if base == WINDOW_START {
            return self.window.read(base + offset, data, ctx);
        }
        if base == u64::from(CONFIG_ADDRESS) {
            match (offset, data.len()) {
                (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
                // The reset control reads as idle.
                (RESET_OFFSET, 1) => data[0] = 0,
                _ => {
                    data.fill(0xff);
                    self.note("port read", data.len(), base, offset, None);
                }
            }
            return;
        }
        match self.target(base, offset, data.len()) {
            Some((bdf, register)) => self.config_read(bdf, register, data),
            None => {
                data.fill(0xff);
                // The data window with the enable bit clear is the PC's plain I/O space:
                // nothing there, no note.
                if base != u64::from(CONFIG_DATA) || self.address & ADDRESS_ENABLE != 0 {
                    self.note("configuration read", data.len(), base, offset, None);
                }
            }
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], ctx: &Ctx) -> io::Result<Effect> {
        if base == WINDOW_START {
            return self.window.write(base + offset, data, ctx);
        }
        if base == u64::from(CONFIG_ADDRESS) {
            match (offset, data.len()) {
                (0, 4) => self.address = le(data) as u32 & !ADDRESS_RESERVED,
                (RESET_OFFSET, 1) if data[0] & RESET_CONTROL_CPU != 0 => return Ok(Effect::Reset),
                (RESET_OFFSET, 1) | (MECHANISM_SELECT_OFFSET, 1) => {}
                _ => self.note("port write", data.len(), base, offset, Some(le(data))),
            }
            return Ok(Effect::Continue);
        }
        match self.target(base, offset, data.len()) {
            Some((bdf, register)) => self.config_write(bdf, register, data),
            None if base != u64::from(CONFIG_DATA) || self.address & ADDRESS_ENABLE != 0 => {
                self.note("configuration write", data.len(), base, offset, Some(le(data)))
            }
            None => {}
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::tests::CTX;
    use crate::bus::Effect;
    use crate::devices::Devices;
    use crate::pc::board::tests::pc;
    use crate::pc::pci_config::{BarKind, COMMAND_MEMORY};
    use crate::bus::{lock, SharedDevice};
    use crate::pc::board::PcBoard;
    use std::sync::{Arc, Mutex};

    fn cf8(d: &mut Devices, address: u32) {
        assert_eq!(d.ports.write(0xcf8, &address.to_le_bytes(), &CTX).unwrap(), Effect::Continue);
    }

    /// Mechanism #1: a read of `len` bytes at 0xcfc + `offset` of the dword `address`.
    fn cfc_read(d: &mut Devices, address: u32, offset: u64, len: usize) -> u64 {
        cf8(d, address);
        let mut data = [0u8; 8];
        d.ports.read(0xcfc + offset, &mut data[..len], &CTX);
        u64::from_le_bytes(data)
    }

    fn ecam_read(d: &mut Devices, offset: u64, len: usize) -> u64 {
        let mut data = [0u8; 8];
        d.mmio.read(ECAM_BASE + offset, &mut data[..len], &CTX);
        u64::from_le_bytes(data)
    }

    const HB: u32 = 0x8000_0000;

    /// Linux's probe of mechanism #1, and a configuration read of function 4 (0x80000400,
    /// whose second byte has the reset bit).
    #[test]
    fn a_dword_at_0xcf8_is_the_config_address_and_does_not_reset() {
        let (mut d, _) = pc();
        // Linux's pci_check_type1: a byte of 1 to 0xcfb, then the address register.
        assert_eq!(d.ports.write(0xcfb, &[1], &CTX).unwrap(), Effect::Continue);
        for address in [0x8000_0000u32, 0x8000_0400, 0x8000_fc04] {
            cf8(&mut d, address);
            let mut back = [0u8; 4];
            d.ports.read(0xcf8, &mut back, &CTX);
            assert_eq!(u32::from_le_bytes(back), address, "the address register keeps its value");
        }
        // Low two bits are reserved; a word there is neither register.
        cf8(&mut d, 0x8000_0403);
        let mut back = [0u8; 4];
        d.ports.read(0xcf8, &mut back, &CTX);
        assert_eq!(u32::from_le_bytes(back), 0x8000_0400);
        assert_eq!(d.ports.write(0xcf8, &[0x04, 0x04], &CTX).unwrap(), Effect::Continue);
        assert_eq!(d.ignored.count(), 1, "the word only");
    }

    #[test]
    fn a_byte_at_0xcf9_is_still_the_reset_control() {
        let (d, _) = pc();
        assert_eq!(d.ports.write(0xcf9, &[0x02], &CTX).unwrap(), Effect::Continue);
        let mut b = [0xaau8];
        d.ports.read(0xcf9, &mut b, &CTX);
        assert_eq!(b, [0], "reads as idle");
        assert_eq!(d.ports.write(0xcf9, &[0x06], &CTX).unwrap(), Effect::Reset);
    }

    #[test]
    fn the_host_bridge_answers_at_00_00_0_at_every_width() {
        let (mut d, _) = pc();
        assert_eq!(cfc_read(&mut d, HB, 0, 4), 0x0008_1b36, "vendor and device");
        assert_eq!(cfc_read(&mut d, HB, 0, 2), 0x1b36);
        assert_eq!(cfc_read(&mut d, HB, 2, 2), 0x0008);
        assert_eq!(cfc_read(&mut d, HB, 1, 1), 0x1b);
        assert_eq!(cfc_read(&mut d, HB, 3, 1), 0x00);
        assert_eq!(cfc_read(&mut d, HB | 0x08, 0, 4), 0x0600_0000, "class 06.00.00, revision 0");
        assert_eq!(cfc_read(&mut d, HB | 0x08, 3, 1), 0x06);
        assert_eq!(cfc_read(&mut d, HB | 0x0c, 2, 1), 0, "header type 0, single function");
        // A word at 0xcfe reaches bytes 2-3 of the dword: the status.
        assert_eq!(cfc_read(&mut d, HB | 0x04, 2, 2), 0);
        // A word at 0xcff would run past the window: ignored.
        assert_eq!(cfc_read(&mut d, HB, 3, 2), 0xffff);
        // Writes at byte offsets: the interrupt line (0x3c) is writable, the pin is not.
        cf8(&mut d, HB | 0x3c);
        d.ports.write(0xcfc, &[0x0b], &CTX).unwrap();
        d.ports.write(0xcfd, &[0x04], &CTX).unwrap();
        assert_eq!(cfc_read(&mut d, HB | 0x3c, 0, 4), 0x0000_000b);
        // Command: memory and I/O enable stick; the vendor ID does not change.
        cf8(&mut d, HB | 0x04);
        d.ports.write(0xcfc, &[0x07, 0x00], &CTX).unwrap();
        assert_eq!(cfc_read(&mut d, HB | 0x04, 0, 2), 0x07);
        cf8(&mut d, HB);
        d.ports.write(0xcfc, &0xdead_beefu32.to_le_bytes(), &CTX).unwrap();
        assert_eq!(cfc_read(&mut d, HB, 0, 4), 0x0008_1b36);
    }

    #[test]
    fn absent_functions_and_disabled_addresses_read_all_ones() {
        let (mut d, board) = pc();
        for (address, what) in [
            (0x8000_0800, "device 1"),
            (0x8000_0100, "function 1 of device 0"),
            (0x8000_0400, "function 4"),
            (0x8001_0000, "bus 1"),
            (0x80ff_ff00, "bus 255 device 31 function 7"),
            (0x0000_0000, "enable bit clear"),
        ] {
            for (offset, len, all_ones) in [(0, 4, 0xffff_ffffu64), (2, 2, 0xffff), (1, 1, 0xff)] {
                assert_eq!(cfc_read(&mut d, address, offset, len), all_ones, "{what}");
            }
            cf8(&mut d, address);
            assert_eq!(d.ports.write(0xcfc, &[0; 4], &CTX).unwrap(), Effect::Continue);
        }
        assert_eq!(cfc_read(&mut d, HB, 0, 2), 0x1b36, "still there");
        let stats = board.pci_stats();
        assert_eq!(stats.absent, 5 * 4, "three reads and a write per absent function");
        assert_eq!(d.ignored.count(), 0, "probing is not an odd access");
    }

    #[test]
    fn ecam_and_mechanism_1_give_the_same_bytes() {
        let (mut d, _) = pc();
        assert_eq!(d.mmio.range_of("pci ecam"), Some((ECAM_BASE, ECAM_SIZE)));
        // A write through each, seen through the other.
        cf8(&mut d, HB | 0x3c);
        d.ports.write(0xcfc, &[0x05], &CTX).unwrap();
        assert_eq!(ecam_read(&mut d, 0x3c, 1), 0x05);
        d.mmio.write(ECAM_BASE + 0x0c, &[0x10, 0x20], &CTX).unwrap();
        assert_eq!(cfc_read(&mut d, HB | 0x0c, 0, 2), 0x2010);
        for function in 0..256u64 {
            for offset in (0..256u64).step_by(4) {
                let address = HB | (function as u32) << 8 | offset as u32;
                let ecam = ecam_read(&mut d, function << 12 | offset, 4);
                assert_eq!(ecam, cfc_read(&mut d, address, 0, 4), "devfn {function:#x} offset {offset:#x}");
                for (sub, len) in [(0, 1), (1, 1), (2, 2), (3, 1), (0, 2)] {
                    let by_ecam = ecam_read(&mut d, function << 12 | offset | sub, len);
                    assert_eq!(by_ecam, cfc_read(&mut d, address, sub, len));
                }
            }
        }
        // Past 256 bytes: only ECAM reaches it, zeros for the host bridge (no extended
        // capability) and all ones for an absent function.
        assert_eq!(ecam_read(&mut d, 0x100, 4), 0);
        assert_eq!(ecam_read(&mut d, 0xffc, 4), 0);
        assert_eq!(ecam_read(&mut d, 1 << 15 | 0x100, 4), 0xffff_ffff);
        // Misaligned or 8-byte ECAM accesses are not configuration accesses.
        assert_eq!(ecam_read(&mut d, 1, 2), 0xffff);
        assert_eq!(ecam_read(&mut d, 0, 8), u64::MAX);
    }

    /// A test function with a BAR, to see BAR sizing through both mechanisms.
    struct WithBar(ConfigSpace);

    impl PciFunction for WithBar {
        fn config(&self) -> &ConfigSpace {
            &self.0
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.0
        }
    }

    #[test]
    fn a_bar_is_sized_through_0xcfc_and_ecam() {
        let mut root = PciRoot::new(Ignored::default());
        let mut space = ConfigSpace::new(Identity { vendor: 0x1234, device: 1, interrupt_pin: 1, ..HOST_BRIDGE });
        space.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x4000).unwrap();
        let slot = Bdf { bus: 0, device: 3, function: 0 };
        root.add(slot, Box::new(WithBar(space))).unwrap();
        assert_eq!(root.add(slot, Box::new(HostBridge::new())), Err(PciError::Taken(slot)));
        assert_eq!(root.add(Bdf { bus: 1, ..slot }, Box::new(HostBridge::new())), Err(PciError::BadPlace(Bdf { bus: 1, ..slot })));
        root.write(CONFIG_ADDRESS.into(), 0, &(HB | 3 << 11 | 0x10).to_le_bytes(), &CTX).unwrap();
        root.write(CONFIG_DATA.into(), 0, &[0xff; 4], &CTX).unwrap();
        let mut b = [0; 4];
        root.read(ECAM_BASE, 3 << 15 | 0x10, &mut b, &CTX);
        assert_eq!(u32::from_le_bytes(b), 0xffff_c000);
        root.write(ECAM_BASE, 3 << 15 | 0x10, &0xd000_0000u32.to_le_bytes(), &CTX).unwrap();
        root.write(ECAM_BASE, 3 << 15 | 0x04, &u16::to_le_bytes(COMMAND_MEMORY), &CTX).unwrap();
        let f = root.functions().find(|(bdf, _)| *bdf == slot).unwrap().1;
        assert_eq!(f.config().bar(0), Some((BarKind::Memory32 { prefetchable: false }, 0x4000, 0xd000_0000)));
    }

    /// A function with a 4 KiB memory BAR 0 whose registers are a page of bytes.
    struct Page(ConfigSpace, SharedDevice);

    struct Bytes(Vec<u8>);

    impl BusDevice for Bytes {
        fn read(&mut self, _: u64, offset: u64, data: &mut [u8], _: &Ctx) {
            let at = offset as usize;
            data.copy_from_slice(&self.0[at..at + data.len()]);
        }
        fn write(&mut self, _: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
            let at = offset as usize;
            self.0[at..at + data.len()].copy_from_slice(data);
            Ok(Effect::Continue)
        }
    }

    impl PciFunction for Page {
        fn config(&self) -> &ConfigSpace {
            &self.0
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.0
        }
        fn bar_device(&self, index: usize) -> Option<SharedDevice> {
            (index == 0).then(|| self.1.clone())
        }
    }

    fn page(fill: u8) -> Box<Page> {
        let mut space = ConfigSpace::new(Identity { vendor: 0x1234, device: 2, ..HOST_BRIDGE });
        space.add_bar(0, BarKind::Memory32 { prefetchable: false }, 0x1000).unwrap();
        Box::new(Page(space, Arc::new(Mutex::new(Bytes(vec![fill; 0x1000])))))
    }

    fn ecam_write32(d: &mut Devices, device: u64, register: u64, value: u32) {
        d.mmio.write(ECAM_BASE + (device << 15) + register, &value.to_le_bytes(), &CTX).unwrap();
    }

    fn mmio_byte(d: &mut Devices, address: u64) -> u8 {
        let mut b = [0];
        d.mmio.read(address, &mut b, &CTX);
        b[0]
    }

    /// BARs decode where the guest puts them inside the window, move when reprogrammed,
    /// stop decoding when memory decoding is off; over RAM, the APIC pages, ECAM or each
    /// other they are refused and counted, and nothing is shadowed.
    #[test]
    fn bars_move_on_the_bus_and_never_shadow_ram_the_apics_or_each_other() {
        let (mut d, board) = pc();
        {
            let mut root = lock(&board.pci);
            root.add(Bdf { bus: 0, device: 3, function: 0 }, page(0x33)).unwrap();
            root.add(Bdf { bus: 0, device: 4, function: 0 }, page(0x44)).unwrap();
        }
        let bar = |board: &PcBoard, device| lock(&board.pci).bar_range(Bdf { bus: 0, device, function: 0 }, 0);
        // Sizing with decoding off: nothing decodes.
        ecam_write32(&mut d, 3, 0x10, 0xffff_ffff);
        assert_eq!(bar(&board, 3), None);
        // Programmed and enabled: the page answers there.
        ecam_write32(&mut d, 3, 0x10, 0xd000_0000);
        ecam_write32(&mut d, 3, 0x04, u32::from(COMMAND_MEMORY));
        assert_eq!(bar(&board, 3), Some((0xd000_0000, 0x1000)));
        assert_eq!(mmio_byte(&mut d, 0xd000_0010), 0x33);
        // Moved while decoding: the old place is empty, the new one answers.
        ecam_write32(&mut d, 3, 0x10, 0xd123_4000);
        assert_eq!(bar(&board, 3), Some((0xd123_4000, 0x1000)));
        assert_eq!(mmio_byte(&mut d, 0xd000_0010), 0xff);
        assert_eq!(mmio_byte(&mut d, 0xd123_4fff), 0x33);
        d.mmio.write(0xd123_4000, &[0x99], &CTX).unwrap();
        assert_eq!(mmio_byte(&mut d, 0xd123_4000), 0x99);
        // Device 4 at the same place: refused (counted), device 3 still answers.
        ecam_write32(&mut d, 4, 0x04, u32::from(COMMAND_MEMORY));
        let refused = board.pci_stats().bars_refused;
        ecam_write32(&mut d, 4, 0x10, 0xd123_4000);
        assert_eq!(bar(&board, 4), None);
        assert_eq!(board.pci_stats().bars_refused, refused + 1);
        assert_eq!(mmio_byte(&mut d, 0xd123_4000), 0x99);
        // Over RAM, the I/O APIC, the local APICs, ECAM, the seed's registers: refused.
        // The APICs and ECAM still answer as themselves.
        for address in [0x1000u32, 0x0010_0000, 0xfec0_0000, 0xfee0_0000, ECAM_BASE as u32, 0xc000_0000, 0xdfff_f000 + 0x1000] {
            let refused = board.pci_stats().bars_refused;
            ecam_write32(&mut d, 3, 0x10, address);
            assert_eq!(bar(&board, 3), None, "{address:#x}");
            assert_eq!(board.pci_stats().bars_refused, refused + 1, "{address:#x}");
        }
        let mut version = [0u8; 4];
        d.mmio.write(0xfec0_0000, &1u32.to_le_bytes(), &CTX).unwrap();
        d.mmio.read(0xfec0_0010, &mut version, &CTX);
        assert_eq!(u32::from_le_bytes(version) & 0xff, 0x11, "the I/O APIC's version register");
        assert_eq!(ecam_read_via(&mut d, 0), 0x0008_1b36, "ECAM is still ECAM");
        // Back in the window, next to device 4 once it found its own place.
        ecam_write32(&mut d, 4, 0x10, 0xd000_1000);
        ecam_write32(&mut d, 3, 0x10, 0xd000_0000);
        assert_eq!((bar(&board, 3), bar(&board, 4)), (Some((0xd000_0000, 0x1000)), Some((0xd000_1000, 0x1000))));
        assert_eq!((mmio_byte(&mut d, 0xd000_0000), mmio_byte(&mut d, 0xd000_0fff), mmio_byte(&mut d, 0xd000_1000)), (0x99, 0x33, 0x44));
        // Decoding off: gone.
        ecam_write32(&mut d, 3, 0x04, 0);
        assert_eq!(bar(&board, 3), None);
        assert_eq!(mmio_byte(&mut d, 0xd000_0000), 0xff);
    }

    /// 20 000 random BAR and command writes to two functions, the addresses drawn from
    /// RAM, the APIC pages, ECAM, the seed's registers, the window's edges and anywhere:
    /// after each, every BAR that decodes is inside the window and over no other, and a
    /// BAR moved outside the window while decoding is on is refused and counted.
    #[test]
    fn random_bar_moves_never_leave_the_window_or_overlap() {
        let (mut d, board) = pc();
        {
            let mut root = lock(&board.pci);
            root.add(Bdf { bus: 0, device: 3, function: 0 }, page(0x33)).unwrap();
            root.add(Bdf { bus: 0, device: 4, function: 0 }, page(0x44)).unwrap();
        }
        let bar = |board: &PcBoard, device| lock(&board.pci).bar_range(Bdf { bus: 0, device, function: 0 }, 0);
        let end = WINDOW_START + WINDOW_SIZE;
        let places = [0x1000u64, 0x0010_0000, 0x0800_0000, 0xfec0_0000, 0xfee0_0000, ECAM_BASE, ECAM_BASE + 0x8000, 0xc000_0000, WINDOW_START - 0x1000, end - 0x1000, end, 0xffff_f000];
        let mut enabled = [false; 2];
        let mut programmed = [0u64; 2];
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut outside = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x & 1) as usize;
            let device = 3 + i as u64;
            if x & 0x30 == 0 {
                // Turning decoding on at an address outside the window is a refusal too.
                let refused = board.pci_stats().bars_refused;
                let was = enabled[i];
                enabled[i] = x & 0x40 != 0;
                ecam_write32(&mut d, device, 0x04, if enabled[i] { u32::from(COMMAND_MEMORY) } else { 0 });
                let out = programmed[i] < WINDOW_START || programmed[i] + 0x1000 > end;
                if enabled[i] && !was && out {
                    assert_eq!(board.pci_stats().bars_refused, refused + 1, "{:#x}", programmed[i]);
                }
            } else {
                let address = match (x >> 8) % 3 {
                    0 => places[((x >> 16) % places.len() as u64) as usize],
                    1 => WINDOW_START + ((x >> 16) % 64) * 0x1000,
                    _ => (x >> 32) & 0xffff_f000,
                };
                let refused = board.pci_stats().bars_refused;
                ecam_write32(&mut d, device, 0x10, address as u32);
                // A move (the programmed address changes while decoding) out of the window.
                let out = address < WINDOW_START || address + 0x1000 > end;
                if enabled[i] && out && programmed[i] != address {
                    assert_eq!(board.pci_stats().bars_refused, refused + 1, "{address:#x}");
                    assert_eq!(bar(&board, device as u8), None, "{address:#x}");
                    outside += 1;
                }
                programmed[i] = address;
            }
            let (a, b) = (bar(&board, 3), bar(&board, 4));
            for (start, size) in [a, b].into_iter().flatten() {
                assert!(start >= WINDOW_START && start + size <= end, "{start:#x}");
            }
            if let (Some((s3, z3)), Some((s4, z4))) = (a, b) {
                assert!(s3 + z3 <= s4 || s4 + z4 <= s3, "{s3:#x} and {s4:#x} overlap");
            }
        }
        assert!(outside > 1000, "{outside} moves outside the window");
        let mut version = [0u8; 4];
        d.mmio.write(0xfec0_0000, &1u32.to_le_bytes(), &CTX).unwrap();
        d.mmio.read(0xfec0_0010, &mut version, &CTX);
        assert_eq!(u32::from_le_bytes(version) & 0xff, 0x11, "the I/O APIC's version register");
        assert_eq!(ecam_read_via(&mut d, 0), 0x0008_1b36, "ECAM is still ECAM");
    }

    fn ecam_read_via(d: &mut Devices, offset: u64) -> u64 {
        ecam_read(d, offset, 4)
    }

    /// Every register of every function of bus 0 (and more buses) written with random
    /// values of random widths, both ways: nothing panics, the host bridge's identity
    /// stays, absent functions stay absent.
    #[test]
    fn hostile_configuration_writes_hurt_nothing() {
        let (mut d, board) = pc();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = [1, 2, 4, 8, 3][(x % 5) as usize];
            let value = (x >> 3).to_le_bytes();
            if x & (1 << 40) != 0 {
                cf8(&mut d, (x >> 16) as u32 | 0x8000_0000);
                let port = 0xcfc + (x >> 50) % 4;
                d.ports.write(port, &value[..len], &CTX).unwrap();
            } else {
                let offset = (x >> 20) % (ECAM_SIZE + 0x100);
                d.mmio.write(ECAM_BASE + offset, &value[..len], &CTX).unwrap();
            }
        }
        assert_eq!(cfc_read(&mut d, HB, 0, 4), 0x0008_1b36);
        assert_eq!(cfc_read(&mut d, HB | 0x08, 0, 4), 0x0600_0000);
        assert_eq!(cfc_read(&mut d, HB | 0x800, 0, 4), 0xffff_ffff);
        assert!(board.pci_stats().config_writes > 10_000);
    }
}
