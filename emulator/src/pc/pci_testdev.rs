//! The PCI test function (`--pci-testdev`, pc machine only, off by default): a test aid,
//! not a PC device. A function whose registers raise and lower its interrupts on the
//! guest's request, so that a guest exercises INTx (through the `_PRT`'s I/O APIC pins),
//! MSI and MSI-X end to end. `--pci-testdev` puts two of them on the root bus, at
//! [`SLOTS`]: both INTA#, which the `_PRT` routes to the same GSI (22), so the guest sees
//! the wired-OR of a shared line.
//!
//! Identity: QEMU's "edu" teaching device's ID (1234:11e8, class 00.ff.00: "other"), and
//! its register layout for what the two share (identification, liveness check, the
//! interrupt status, raise and acknowledge registers), so that a guest written for edu
//! finds its interrupt registers where it expects them; edu's factorial and DMA engines
//! are not here. Linux has no driver for it (edu's is out of tree).
//!
//! BAR 0: 4 KiB of memory (32-bit, not prefetchable), dword registers:
//!
//! | offset | register | |
//! |---|---|---|
//! | 0x00 | identification | read-only 0x010000ed (edu's: version 1.0) |
//! | 0x04 | liveness check | reads back the bitwise inverse of what was written |
//! | 0x24 | interrupt status | read-only: the bits raised and not acknowledged |
//! | 0x60 | raise interrupt | write: sets bits in the status; with MSI on, sends one MSI message, else INTx follows |
//! | 0x64 | acknowledge interrupt | write: clears bits in the status; INTx follows |
//! | 0x80 | raise MSI-X vector (ours) | write n: MSI-X vector n is raised (sent, or pending while masked) |
//! | 0x84 | undelivered (ours) | read-only: raises that sent nothing (MSI-X off, a vector past the table, a message outside the APICs' window) |
//! | 0x800 | MSI-X table, [`MSIX_VECTORS`] vectors | |
//! | 0xc00 | MSI-X PBA | |
//!
//! INTx (INTA#) is asserted while the interrupt status is not 0 and neither MSI nor MSI-X
//! is on (PCI Local Bus 3.0, 6.8: a function with MSI enabled does not use INTx); the
//! command register's Interrupt Disable masks it and the status register's Interrupt
//! Status follows it (`pci_intx.rs`, the root). MSI: one vector, per-vector masking
//! (`pci_msi.rs`): a raise while masked sets the pending bit, unmasking sends it.
//! Other offsets read 0 and drop writes; accesses other than aligned dwords (outside the
//! MSI-X structures, `pci_msix.rs`) are ignored and counted.
//!
//! The function owns its configuration space (the root reads and writes it); the BAR's
//! registers are reached from the root's window while the root is locked, so what both
//! need is shared behind a lock of its own ([`Shared`]): the MSI capability's state as the
//! last configuration write left it (enable, mask, message), its pending bit, the MSI-X
//! state, the INTx pin.

use std::io;
use std::sync::{Arc, Mutex};

use super::board::MsiSender;
use super::ioapic::Message;
use super::pci::{Bdf, PciFunction};
use super::pci_config::{BarKind, ConfigSpace, Identity};
use super::pci_intx::IntxPin;
use super::pci_msi::{Msi, Raised};
use super::pci_msix::{Access, MsiX, Place};
use crate::bus::{le, lock, BusDevice, Ctx, Effect, Ignored, SharedDevice};

/// QEMU edu's vendor and device IDs.
pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
/// Where `--pci-testdev` puts its two functions: devices 22 and 30, INTA# both, which
/// the `_PRT` routes to GSI 16 + (22 + 0) % 8 = 16 + (30 + 0) % 8 = 22.
pub const SLOTS: [Bdf; 2] = [Bdf { bus: 0, device: 22, function: 0 }, Bdf { bus: 0, device: 30, function: 0 }];
pub const BAR_SIZE: u64 = 0x1000;
pub const MSIX_VECTORS: u16 = 4;

pub const IDENT: u64 = 0x00;
pub const LIVENESS: u64 = 0x04;
pub const STATUS: u64 = 0x24;
pub const RAISE: u64 = 0x60;
pub const ACK: u64 = 0x64;
pub const MSIX_RAISE: u64 = 0x80;
pub const UNDELIVERED: u64 = 0x84;
pub const MSIX_TABLE: u32 = 0x800;
pub const MSIX_PBA: u32 = 0xc00;
const IDENT_VALUE: u32 = 0x0100_00ed;

const IDENTITY: Identity = Identity {
    vendor: VENDOR,
    device: DEVICE,
    revision: 0x10,
    class: (0x00, 0xff, 0x00),
    subsystem_vendor: 0x1af4,
    subsystem: 0x1100,
    interrupt_pin: 1,
};

/// What the function and its BAR share.
struct Shared {
    liveness: u32,
    status: u32,
    /// The MSI capability as the last configuration write left it: on, masked, message.
    msi_on: bool,
    msi_masked: bool,
    msi_message: Option<Message>,
    /// MSI's pending bit (raised while masked).
    msi_pending: bool,
    msix: MsiX,
    intx: IntxPin,
    sender: MsiSender,
    undelivered: u32,
    ignored: Ignored,
}

impl Shared {
    /// INTx follows the status while neither MSI nor MSI-X is on.
    fn follow_intx(&self) {
        self.intx.set_level(self.status != 0 && !self.msi_on && !self.msix.enabled());
    }

    fn send(&mut self, raised: Raised) {
        match raised {
            Raised::Send(message) => self.sender.send(message),
            Raised::Pending => {}
            Raised::Disabled | Raised::NotAnInterrupt => self.undelivered += 1,
        }
    }

    /// One MSI message (or its pending bit while masked).
    fn raise_msi(&mut self) {
        if self.msi_masked {
            self.msi_pending = true;
            return;
        }
        let raised = self.msi_message.map_or(Raised::NotAnInterrupt, Raised::Send);
        self.send(raised);
    }

    fn read(&self, offset: u64) -> u32 {
        match offset {
            IDENT => IDENT_VALUE,
            LIVENESS => !self.liveness,
            STATUS => self.status,
            UNDELIVERED => self.undelivered,
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, value: u32) {
        match offset {
            LIVENESS => self.liveness = value,
            RAISE => {
                self.status |= value;
                if self.msi_on && value != 0 {
                    self.raise_msi();
                }
            }
            ACK => self.status &= !value,
            MSIX_RAISE => {
                let raised = self.msix.raise(u16::try_from(value).unwrap_or(u16::MAX));
                self.send(raised);
            }
            _ => {}
        }
        self.follow_intx();
    }
}

/// The function: its configuration space, where its MSI capability is, and what it shares
/// with its BAR.
pub struct PciTestDev {
    space: ConfigSpace,
    msi: Msi,
    intx: IntxPin,
    shared: Arc<Mutex<Shared>>,
}

/// BAR 0's registers.
struct Registers(Arc<Mutex<Shared>>);

impl PciTestDev {
    /// A test function with INTA# on `intx`, its messages sent through `sender`; odd
    /// accesses noted in `ignored`.
    pub fn new(intx: IntxPin, sender: MsiSender, ignored: Ignored) -> Self {
        let mut space = ConfigSpace::new(IDENTITY);
        space.add_bar(0, BarKind::Memory32 { prefetchable: false }, BAR_SIZE).expect("a valid BAR");
        let msi = Msi::add(&mut space).expect("room for MSI");
        let table = Place { bar: 0, offset: MSIX_TABLE };
        let pba = Place { bar: 0, offset: MSIX_PBA };
        let msix = MsiX::add(&mut space, MSIX_VECTORS, table, pba).expect("MSI-X fits in BAR 0");
        let shared = Shared {
            liveness: 0,
            status: 0,
            msi_on: false,
            msi_masked: false,
            msi_message: None,
            msi_pending: false,
            msix,
            intx: intx.clone(),
            sender,
            undelivered: 0,
            ignored,
        };
        Self { space, msi, intx, shared: Arc::new(Mutex::new(shared)) }
    }
}

impl PciFunction for PciTestDev {
    fn config(&self) -> &ConfigSpace {
        &self.space
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.space
    }
    fn bar_device(&self, index: usize) -> Option<SharedDevice> {
        (index == 0).then(|| Arc::new(Mutex::new(Registers(self.shared.clone()))) as SharedDevice)
    }
    fn config_written(&mut self, _: usize, _: usize) {
        let mut s = lock(&self.shared);
        s.msi_on = self.msi.enabled(&self.space);
        s.msi_masked = self.msi.masked(&self.space);
        s.msi_message = self.msi.message(&self.space);
        if s.msi_on && !s.msi_masked && s.msi_pending {
            s.msi_pending = false;
            s.raise_msi();
        }
        self.msi.set_pending(&mut self.space, s.msi_pending);
        for raised in s.msix.config_written(&self.space) {
            s.send(raised);
        }
        s.follow_intx();
    }
    fn before_config_read(&mut self) {
        let pending = lock(&self.shared).msi_pending;
        self.msi.set_pending(&mut self.space, pending);
    }
    fn intx(&self) -> Option<&IntxPin> {
        Some(&self.intx)
    }
}

impl BusDevice for Registers {
    fn read(&mut self, _: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        let s = lock(&self.0);
        match s.msix.read(0, offset, data) {
            Access::NotMine if data.len() == 4 && offset.is_multiple_of(4) => data.copy_from_slice(&s.read(offset).to_le_bytes()),
            Access::NotMine | Access::Ignored => {
                data.fill(0xff);
                s.ignored.note(format_args!("{}-byte read of the PCI test function's BAR at {offset:#x}", data.len()));
            }
            Access::Done(_) => {}
        }
    }

    fn write(&mut self, _: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        let mut s = lock(&self.0);
        match s.msix.write(0, offset, data) {
            Access::NotMine if data.len() == 4 && offset.is_multiple_of(4) => s.write(offset, le(data) as u32),
            Access::NotMine | Access::Ignored => {
                s.ignored.note(format_args!("{}-byte write of {:#x} to the PCI test function's BAR at {offset:#x}", data.len(), le(data)));
            }
            Access::Done(Some(raised)) => s.send(raised),
            Access::Done(None) => {}
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::tests::CTX;
    use crate::devices::Devices;
    use crate::pc::board::tests::pc;
    use crate::pc::board::PcBoard;
    use crate::pc::pci::ECAM_BASE;
    use crate::pc::pci_config::{COMMAND_INTX_DISABLE, COMMAND_MEMORY, STATUS_INTERRUPT};

    const BAR: [u32; 2] = [0xd000_0000, 0xd000_1000];
    const GSI: u8 = 22;

    fn ecam(i: usize, register: u64) -> u64 {
        let bdf = SLOTS[i];
        ECAM_BASE + (u64::from(bdf.device) << 15) + register
    }

    fn read32(d: &mut Devices, at: u64) -> u32 {
        let mut b = [0; 4];
        d.mmio.read(at, &mut b, &CTX);
        u32::from_le_bytes(b)
    }

    fn write32(d: &mut Devices, at: u64, value: u32) {
        d.mmio.write(at, &value.to_le_bytes(), &CTX).unwrap();
    }

    fn reg(i: usize, offset: u64) -> u64 {
        u64::from(BAR[i]) + offset
    }

    /// The pc board with both functions, their BARs programmed and decoding, vCPU 0's
    /// local APIC on and the I/O APIC's pin 22 as the `_PRT` says (level, active low) at
    /// vector 0x40.
    fn machine() -> (Devices, PcBoard) {
        let (mut d, board) = pc();
        board.install_pci_testdev().unwrap();
        for i in 0..2 {
            write32(&mut d, ecam(i, 0x10), BAR[i]);
            write32(&mut d, ecam(i, 0x04), u32::from(COMMAND_MEMORY));
        }
        board.interrupts().apics.lapics[0].write(0xf0, 0x1ff, 0);
        ioapic_entry(&mut d, GSI, 0x40 | 1 << 13 | 1 << 15);
        (d, board)
    }

    fn ioapic_entry(d: &mut Devices, pin: u8, low: u32) {
        write32(d, 0xfec0_0000, 0x11 + 2 * u32::from(pin));
        write32(d, 0xfec0_0010, 0);
        write32(d, 0xfec0_0000, 0x10 + 2 * u32::from(pin));
        write32(d, 0xfec0_0010, low);
    }

    /// The vector vCPU 0 takes now, and its EOI.
    fn take(d: &mut Devices, board: &PcBoard) -> Option<u8> {
        let vector = board.interrupts().acknowledge(0)?;
        write32(d, 0xfee0_00b0, 0);
        Some(vector)
    }

    fn status(d: &mut Devices, i: usize) -> u16 {
        (read32(d, ecam(i, 0x04)) >> 16) as u16
    }

    #[test]
    fn identity_registers_and_the_interrupt_line() {
        let (mut d, _) = machine();
        for i in 0..2 {
            assert_eq!(read32(&mut d, ecam(i, 0)), 0x11e8_1234);
            assert_eq!(read32(&mut d, ecam(i, 0x3c)) & 0xffff, 0x0100 | u32::from(GSI), "INTA#, line 22 (the _PRT's GSI)");
            assert_eq!(read32(&mut d, reg(i, IDENT)), IDENT_VALUE);
            write32(&mut d, reg(i, LIVENESS), 0x1234_5678);
            assert_eq!(read32(&mut d, reg(i, LIVENESS)), !0x1234_5678);
        }
    }

    /// INTx: raised, delivered through the I/O APIC, re-raised at EOI while held, masked
    /// by Interrupt Disable with the status bit still set; two functions on one GSI are
    /// a wired-OR.
    #[test]
    fn intx_is_level_shared_and_masked_by_interrupt_disable() {
        let (mut d, board) = machine();
        assert_eq!(take(&mut d, &board), None);
        write32(&mut d, reg(0, RAISE), 1);
        assert_eq!(status(&mut d, 0) & STATUS_INTERRUPT, STATUS_INTERRUPT);
        assert_eq!(status(&mut d, 1) & STATUS_INTERRUPT, 0);
        assert_eq!(take(&mut d, &board), Some(0x40));
        assert_eq!(take(&mut d, &board), Some(0x40), "still held at EOI: again");
        write32(&mut d, reg(0, ACK), 1);
        assert_eq!(take(&mut d, &board), Some(0x40), "the one sent at the last EOI");
        assert_eq!(take(&mut d, &board), None, "let go");
        assert_eq!(status(&mut d, 0) & STATUS_INTERRUPT, 0);
        // Wired-OR: both hold GSI 22; one lets go, the other still holds it.
        write32(&mut d, reg(0, RAISE), 2);
        write32(&mut d, reg(1, RAISE), 4);
        assert_eq!(take(&mut d, &board), Some(0x40));
        write32(&mut d, reg(0, ACK), 2);
        assert_eq!(take(&mut d, &board), Some(0x40), "function 2 still holds the line");
        write32(&mut d, reg(1, ACK), 4);
        assert_eq!(take(&mut d, &board), Some(0x40));
        assert_eq!(take(&mut d, &board), None);
        // Interrupt Disable: no interrupt, status still set; cleared: delivered.
        write32(&mut d, ecam(0, 0x04), u32::from(COMMAND_MEMORY | COMMAND_INTX_DISABLE));
        write32(&mut d, reg(0, RAISE), 1);
        assert_eq!(take(&mut d, &board), None);
        assert_eq!(status(&mut d, 0) & STATUS_INTERRUPT, STATUS_INTERRUPT);
        write32(&mut d, ecam(0, 0x04), u32::from(COMMAND_MEMORY));
        assert_eq!(take(&mut d, &board), Some(0x40));
        // Disabled again while held: the line goes (the message sent at the last EOI is
        // in the local APIC already), nothing more.
        write32(&mut d, ecam(0, 0x04), u32::from(COMMAND_MEMORY | COMMAND_INTX_DISABLE));
        assert_eq!(take(&mut d, &board), Some(0x40));
        assert_eq!(take(&mut d, &board), None);
    }

    /// MSI: on, a raise sends one message (INTx stays low); masked, the pending bit is
    /// set and unmasking sends it.
    #[test]
    fn msi_is_sent_or_pending_while_masked() {
        let (mut d, board) = machine();
        let cap = u64::from(read32(&mut d, ecam(0, 0x34)) & 0xff);
        assert_eq!(read32(&mut d, ecam(0, cap)) & 0xff, 0x05, "MSI first");
        write32(&mut d, ecam(0, cap + 4), 0xfee0_0000);
        write32(&mut d, ecam(0, cap + 8), 0);
        write32(&mut d, ecam(0, cap + 0xc), 0x51);
        write32(&mut d, ecam(0, cap), 1 << 16);
        write32(&mut d, reg(0, RAISE), 1);
        assert_eq!(take(&mut d, &board), Some(0x51));
        assert_eq!(take(&mut d, &board), None, "one message, no INTx");
        assert_eq!(status(&mut d, 0) & STATUS_INTERRUPT, 0);
        write32(&mut d, ecam(0, cap + 0x10), 1);
        write32(&mut d, reg(0, RAISE), 1);
        assert_eq!(take(&mut d, &board), None, "masked");
        assert_eq!(read32(&mut d, ecam(0, cap + 0x14)), 1, "pending");
        write32(&mut d, ecam(0, cap + 0x10), 0);
        assert_eq!(take(&mut d, &board), Some(0x51));
        assert_eq!(read32(&mut d, ecam(0, cap + 0x14)), 0);
        assert_eq!(read32(&mut d, reg(0, UNDELIVERED)), 0);
    }

    /// MSI-X: each vector its message; a masked vector's PBA bit is set and unmasking
    /// sends it; raises with MSI-X off or past the table count as undelivered.
    #[test]
    fn msix_vectors_masks_and_the_pba() {
        let (mut d, board) = machine();
        write32(&mut d, reg(1, MSIX_RAISE), 0);
        assert_eq!(read32(&mut d, reg(1, UNDELIVERED)), 1, "MSI-X off");
        let msi = u64::from(read32(&mut d, ecam(1, 0x34)) & 0xff);
        let cap = u64::from(read32(&mut d, ecam(1, msi)) >> 8 & 0xff);
        assert_eq!(read32(&mut d, ecam(1, cap)) & 0x07ff_00ff, 0x0003_0011, "MSI-X, 4 vectors");
        assert_eq!(read32(&mut d, ecam(1, cap + 4)), MSIX_TABLE);
        assert_eq!(read32(&mut d, ecam(1, cap + 8)), MSIX_PBA);
        for v in 0..4u64 {
            let entry = reg(1, u64::from(MSIX_TABLE) + 16 * v);
            write32(&mut d, entry, 0xfee0_0000);
            write32(&mut d, entry + 8, 0x60 + v as u32);
            write32(&mut d, entry + 12, 0);
        }
        write32(&mut d, ecam(1, cap), 1 << 31);
        for v in 0..4u32 {
            write32(&mut d, reg(1, MSIX_RAISE), v);
            assert_eq!(take(&mut d, &board), Some(0x60 + v as u8));
        }
        let control = reg(1, u64::from(MSIX_TABLE) + 16 * 2 + 12);
        write32(&mut d, control, 1);
        write32(&mut d, reg(1, MSIX_RAISE), 2);
        assert_eq!(take(&mut d, &board), None);
        assert_eq!(read32(&mut d, reg(1, u64::from(MSIX_PBA))), 0b100);
        write32(&mut d, control, 0);
        assert_eq!(take(&mut d, &board), Some(0x62));
        assert_eq!(read32(&mut d, reg(1, u64::from(MSIX_PBA))), 0);
        write32(&mut d, reg(1, MSIX_RAISE), 4);
        assert_eq!(read32(&mut d, reg(1, UNDELIVERED)), 2, "past the table");
        // With MSI-X on, raising the status does not assert INTx.
        write32(&mut d, reg(1, RAISE), 1);
        assert_eq!(take(&mut d, &board), None);
        assert_eq!(status(&mut d, 1) & STATUS_INTERRUPT, 0);
    }
}
