//! A function's MSI capability (PCI Local Bus 3.0, 6.8.1): one vector, a 64-bit message
//! address, per-vector masking, and how a raised interrupt becomes a message to the
//! local APICs (Intel SDM vol. 3, 11.11; AMD's APM vol. 2, 16.9, the same layout).
//!
//! The capability's 24 bytes:
//!
//! | offset | register | guest may write |
//! |---|---|---|
//! | +2 | message control: enable (bit 0), multiple message capable 0 (one vector), multiple message enable (6:4, anything above 0 still means one vector), 64-bit capable (7), per-vector masking capable (8) | bit 0, bits 6:4 |
//! | +4 | message address, low (bits 1:0 are 0) | bits 31:2 |
//! | +8 | message address, high | all |
//! | +0xc | message data (16 bits) | all |
//! | +0x10 | mask bits: bit 0 masks the vector | bit 0 |
//! | +0x14 | pending bits: bit 0 set while a masked vector was raised | none |
//!
//! x86's message address is 0xfee0_0000 with the destination APIC ID in bits 19:12 and
//! destination mode (logical) in bit 2; the data holds the vector (7:0), the delivery
//! mode (10:8) and the trigger mode (15). A message whose address is not in that range
//! (an OS that programmed nothing, or a hostile one) is an ordinary memory write on a PC;
//! here it is dropped and counted by the caller ([`Raised::NotAnInterrupt`]), never sent.

use super::ioapic::Message;
use super::lapic::DeliveryMode;
use super::pci_config::{ConfigError, ConfigSpace};

/// The MSI capability's ID.
pub const CAPABILITY_ID: u8 = 0x05;
const CONTROL: usize = 2;
const ADDRESS_LOW: usize = 4;
const ADDRESS_HIGH: usize = 8;
const DATA: usize = 0xc;
const MASK: usize = 0x10;
const PENDING: usize = 0x14;
const LEN: usize = 0x18;

const CONTROL_ENABLE: u16 = 1 << 0;
const CONTROL_64BIT: u16 = 1 << 7;
const CONTROL_PER_VECTOR_MASK: u16 = 1 << 8;
const CONTROL_WRITABLE: u16 = CONTROL_ENABLE | 0b111 << 4;

/// x86's interrupt message address window.
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;
const MSI_ADDRESS_MASK: u64 = 0xfff0_0000;
const MSI_DEST_SHIFT: u32 = 12;
const MSI_DEST_LOGICAL: u64 = 1 << 2;
const MSI_DATA_LEVEL: u16 = 1 << 15;
const MSI_DATA_MODE_SHIFT: u32 = 8;

/// The interrupt an MSI or MSI-X message (`address`, the low 16 bits of its `data`) is
/// on x86, or `None` if it is not one (outside the local APICs' window, or a reserved
/// delivery mode).
pub fn interrupt_message(address: u64, data: u16) -> Option<Message> {
    if address >> 32 != 0 || address & MSI_ADDRESS_MASK != MSI_ADDRESS_BASE {
        return None;
    }
    let mode = DeliveryMode::from_bits(u32::from(data >> MSI_DATA_MODE_SHIFT))?;
    Some(Message {
        vector: data as u8,
        mode,
        logical: address & MSI_DEST_LOGICAL != 0,
        dest: (address >> MSI_DEST_SHIFT) as u8,
        level_triggered: data & MSI_DATA_LEVEL != 0,
    })
}

/// What raising the vector did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// MSI is off (the function would use INTx).
    Disabled,
    /// Masked: the pending bit is set; the message goes when the guest unmasks.
    Pending,
    /// Send this message.
    Send(Message),
    /// The address is not the local APICs' window, or the delivery mode is reserved:
    /// nothing is sent (counted by the caller).
    NotAnInterrupt,
}

/// Where a function's MSI capability is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msi {
    at: usize,
}

impl Msi {
    /// Adds the capability to `space`.
    pub fn add(space: &mut ConfigSpace) -> Result<Self, ConfigError> {
        let mut body = [0u8; LEN - 2];
        let mut writable = [0u8; LEN - 2];
        let control = CONTROL_64BIT | CONTROL_PER_VECTOR_MASK;
        body[CONTROL - 2..CONTROL].copy_from_slice(&control.to_le_bytes());
        writable[CONTROL - 2..CONTROL].copy_from_slice(&CONTROL_WRITABLE.to_le_bytes());
        writable[ADDRESS_LOW - 2..ADDRESS_LOW + 2].copy_from_slice(&0xffff_fffcu32.to_le_bytes());
        writable[ADDRESS_HIGH - 2..ADDRESS_HIGH + 2].fill(0xff);
        writable[DATA - 2..DATA].fill(0xff);
        writable[MASK - 2] = 1;
        let at = space.add_capability(CAPABILITY_ID, &body, &writable)?;
        Ok(Self { at })
    }

    /// The capability's offset in the configuration space.
    pub fn offset(&self) -> usize {
        self.at
    }

    fn bytes<const N: usize>(&self, space: &ConfigSpace, reg: usize) -> [u8; N] {
        let mut b = [0; N];
        space.read(self.at + reg, &mut b);
        b
    }

    pub fn enabled(&self, space: &ConfigSpace) -> bool {
        u16::from_le_bytes(self.bytes(space, CONTROL)) & CONTROL_ENABLE != 0
    }

    pub fn masked(&self, space: &ConfigSpace) -> bool {
        self.bytes::<1>(space, MASK)[0] & 1 != 0
    }

    pub fn pending(&self, space: &ConfigSpace) -> bool {
        self.bytes::<1>(space, PENDING)[0] & 1 != 0
    }

    /// Sets or clears the pending bit (for a device that raises its vector outside a
    /// configuration access and keeps the bit's state itself).
    pub fn set_pending(&self, space: &mut ConfigSpace, on: bool) {
        space.set(self.at + PENDING, &[u8::from(on), 0, 0, 0]);
    }

    /// The message the guest programmed, if it is an interrupt message.
    pub fn message(&self, space: &ConfigSpace) -> Option<Message> {
        let low = u64::from(u32::from_le_bytes(self.bytes(space, ADDRESS_LOW)));
        let high = u64::from(u32::from_le_bytes(self.bytes(space, ADDRESS_HIGH)));
        interrupt_message(high << 32 | low, u16::from_le_bytes(self.bytes(space, DATA)))
    }

    /// The device raises its vector.
    pub fn raise(&self, space: &mut ConfigSpace) -> Raised {
        if !self.enabled(space) {
            return Raised::Disabled;
        }
        if self.masked(space) {
            self.set_pending(space, true);
            return Raised::Pending;
        }
        self.message(space).map_or(Raised::NotAnInterrupt, Raised::Send)
    }

    /// After a configuration write: a pending vector the guest has just unmasked goes now
    /// (the pending bit clears).
    pub fn after_write(&self, space: &mut ConfigSpace) -> Option<Raised> {
        if !self.pending(space) || self.masked(space) || !self.enabled(space) {
            return None;
        }
        self.set_pending(space, false);
        Some(self.message(space).map_or(Raised::NotAnInterrupt, Raised::Send))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pc::pci::HOST_BRIDGE;
    use crate::pc::pci_config::{Identity, CAPABILITIES_POINTER};

    fn function() -> (ConfigSpace, Msi) {
        let mut space = ConfigSpace::new(Identity { vendor: 0x1234, device: 9, ..HOST_BRIDGE });
        let msi = Msi::add(&mut space).unwrap();
        (space, msi)
    }

    fn write32(space: &mut ConfigSpace, at: usize, value: u32) {
        space.write(at, &value.to_le_bytes());
    }

    fn read32(space: &ConfigSpace, at: usize) -> u32 {
        let mut b = [0; 4];
        space.read(at, &mut b);
        u32::from_le_bytes(b)
    }

    /// What Linux's MSI setup writes: the address, the data, then enable.
    fn program(space: &mut ConfigSpace, msi: &Msi, address: u64, data: u16) {
        write32(space, msi.offset() + 4, address as u32);
        write32(space, msi.offset() + 8, (address >> 32) as u32);
        space.write(msi.offset() + 0xc, &data.to_le_bytes());
        space.write(msi.offset() + 2, &1u16.to_le_bytes());
    }

    #[test]
    fn the_capability_is_in_the_list_with_its_read_only_bits() {
        let (mut space, msi) = function();
        let mut p = [0];
        space.read(CAPABILITIES_POINTER, &mut p);
        assert_eq!(usize::from(p[0]), msi.offset());
        assert_eq!(read32(&space, msi.offset()) & 0xffff_00ff, 0x0180_0005, "ID 5, 64-bit, per-vector masking");
        // All ones: only the writable bits stick.
        for reg in (0..LEN).step_by(4) {
            write32(&mut space, msi.offset() + reg, 0xffff_ffff);
        }
        assert_eq!(read32(&space, msi.offset()) >> 16, 0x0180 | 0x71, "enable, MME; 64-bit and masking capable stay");
        assert_eq!(read32(&space, msi.offset() + 4), 0xffff_fffc);
        assert_eq!(read32(&space, msi.offset() + 0xc), 0x0000_ffff, "16-bit data");
        assert_eq!(read32(&space, msi.offset() + 0x10), 1, "one mask bit");
        assert_eq!(read32(&space, msi.offset() + 0x14), 0, "pending is the device's");
    }

    #[test]
    fn a_raised_vector_is_the_message_the_guest_programmed() {
        let (mut space, msi) = function();
        assert_eq!(msi.raise(&mut space), Raised::Disabled);
        // APIC ID 3, physical; vector 0x41, fixed, edge.
        program(&mut space, &msi, 0xfee0_3000, 0x0041);
        let fixed = Message { vector: 0x41, mode: DeliveryMode::Fixed, logical: false, dest: 3, level_triggered: false };
        assert_eq!(msi.raise(&mut space), Raised::Send(fixed));
        // Logical destination 0x0f, lowest priority, level.
        program(&mut space, &msi, 0xfee0_f004, 0x8152);
        let lowest = Message { vector: 0x52, mode: DeliveryMode::LowestPriority, logical: true, dest: 0x0f, level_triggered: true };
        assert_eq!(msi.raise(&mut space), Raised::Send(lowest));
    }

    #[test]
    fn a_masked_vector_is_pending_until_unmasked() {
        let (mut space, msi) = function();
        program(&mut space, &msi, 0xfee0_0000, 0x0030);
        write32(&mut space, msi.offset() + 0x10, 1);
        assert_eq!(msi.raise(&mut space), Raised::Pending);
        assert!(msi.pending(&space));
        assert_eq!(msi.after_write(&mut space), None, "still masked");
        write32(&mut space, msi.offset() + 0x10, 0);
        let message = Message { vector: 0x30, mode: DeliveryMode::Fixed, logical: false, dest: 0, level_triggered: false };
        assert_eq!(msi.after_write(&mut space), Some(Raised::Send(message)));
        assert!(!msi.pending(&space));
        assert_eq!(msi.after_write(&mut space), None, "sent once");
    }

    #[test]
    fn messages_outside_the_apic_window_are_not_sent() {
        let (mut space, msi) = function();
        for (address, data) in [(0u64, 0x30u16), (0x1000, 0x30), (0xfed0_0000, 0x30), (0x1_fee0_0000, 0x30), (0xfee0_0000, 0x0330)] {
            program(&mut space, &msi, address, data);
            assert_eq!(msi.raise(&mut space), Raised::NotAnInterrupt, "{address:#x} {data:#x}");
        }
    }

    /// The message reaches the local APIC it names through the board's `MsiSender`.
    #[test]
    fn a_raised_vector_reaches_the_local_apic() {
        use crate::devices::Console;
        use crate::events::Waker;
        use crate::pc::board::PcBoard;
        use std::sync::Arc;
        let wakers: Arc<[Waker]> = (0..2).map(|_| Waker::new()).collect();
        let board = PcBoard::new(16 << 20, wakers, Arc::new(Console::new(Vec::new()))).unwrap();
        board.interrupts().apics.lapics[1].write(0xf0, 0x1ff, 0);
        let (mut space, msi) = function();
        program(&mut space, &msi, 0xfee0_1000, 0x0045);
        let Raised::Send(message) = msi.raise(&mut space) else { panic!("not sent") };
        assert!(!board.interrupts().interrupt_pending(1));
        board.msi().send(message);
        assert!(board.interrupts().interrupt_pending(1));
        assert_eq!(board.interrupts().acknowledge(1), Some(0x45));
    }
}
