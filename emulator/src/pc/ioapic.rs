//! The I/O APIC (Intel 82093AA datasheet; MP spec 1.4 chapter 3): 24 interrupt input pins,
//! each with a 64-bit redirection entry that turns a pin's edge or level into an interrupt
//! message for the local APICs ([`Message`]; the router in `apic.rs` delivers it).
//!
//! Two registers in the MMIO page at [`IOAPIC_BASE`] reach the others indirectly:
//!
//! | offset | register | |
//! |---|---|---|
//! | 0x00 | IOREGSEL | bits 7-0 select the register IOWIN shows |
//! | 0x10 | IOWIN | the selected register |
//!
//! | index | register | access | |
//! |---|---|---|---|
//! | 0x00 | IOAPICID | r/w | ID in bits 27-24 |
//! | 0x01 | IOAPICVER | r | 0x0017_0011: version 0x11, max redirection entry 23 |
//! | 0x02 | IOAPICARB | r | arbitration ID = ID |
//! | 0x10 + 2n | redirection entry n, bits 31-0 | r/w | see below |
//! | 0x11 + 2n | redirection entry n, bits 63-32 | r/w | destination in bits 63-56 |
//!
//! Redirection entry: vector 7-0, delivery mode 10-8, logical destination 11, delivery status
//! 12 (read-only, always idle: delivery is immediate), polarity 13, remote IRR 14 (read-only),
//! level-triggered 15, masked 16. At reset every entry is masked and 0 otherwise.
//!
//! An edge-triggered pin sends a message on each rising edge while unmasked. A level-triggered
//! pin sends one while its line is high, unmasked and remote IRR is clear, and then sets
//! remote IRR; the local APIC's EOI of that vector ([`IoApic::eoi`]) clears it and, if the
//! line is still high, sends again.
//!
//! What happens when the guest does something odd:
//! - **Polarity**: applied as on the chip, to the pin's electrical level. Sources give
//!   [`IoApic::set_level`] their line as asserted or not; the board's wiring says which pins
//!   have active-low sources ([`ACTIVE_LOW_PINS`]: PCI's INTx lines on GSIs 16-23, level and
//!   active low as the DSDT's `_PRT` says; the ISA pins are active high, as the MADT and the
//!   MP table say), so a pin's level is the source's asserted state, inverted on those
//!   pins, and an idle PCI line is high. An entry's polarity bit says which level is active:
//!   programmed as the tables say, the entry sees the source's asserted state; programmed
//!   the other way, it sees the inverse (an idle line is active: a level-triggered entry
//!   sends at once and again after each EOI, as on hardware). Reprogramming the polarity
//!   of an edge-triggered entry is not an edge.
//! - **Masked pins**: an edge on a masked pin is lost (as the datasheet says, unlike QEMU which
//!   keeps it); a level still high when its pin is unmasked is delivered then.
//! - **Reprogramming**: switching an entry to edge-triggered clears its remote IRR. The
//!   delivery modes 0b011 and 0b110 (StartUp) are reserved for an I/O APIC: such an entry sends
//!   nothing.
//! - **Other registers**: reads of unknown indexes and of offsets other than IOREGSEL and IOWIN
//!   return 0; writes to them, to the version and to the arbitration register are ignored.
//!   Pins above 23 are ignored. No guest input panics.

use super::lapic::{DeliveryMode, DELIVERY_MODE_SHIFT};

pub const IOAPIC_BASE: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Interrupt input pins.
pub const PINS: usize = 24;
/// The pins whose sources are active low (bit n: pin n): PCI's INTx lines, the GSIs the
/// DSDT's `_PRT` routes them to (`acpi::INTX_GSI_BASE`, `acpi::INTX_LINES`).
pub const ACTIVE_LOW_PINS: u32 = ((1 << super::acpi::INTX_LINES) - 1) << super::acpi::INTX_GSI_BASE;

pub const IOREGSEL: u64 = 0x00;
pub const IOWIN: u64 = 0x10;

const REG_ID: u8 = 0x00;
const REG_VERSION: u8 = 0x01;
const REG_ARBITRATION: u8 = 0x02;
const REG_REDIRECTION: u8 = 0x10;
/// Version 0x11 (82093AA), max redirection entry 23 in bits 23-16.
pub const VERSION: u32 = 0x11 | ((PINS as u32 - 1) << 16);
const ID_SHIFT: u32 = 24;
const ID_BITS: u32 = 0xf;

bitflags::bitflags! {
    /// A redirection entry's low half (82093AA datasheet, 3.2.4): its fields and flags.
    /// The guest writes all of them but the delivery status (bit 12, always clear: a
    /// message is delivered at once) and the remote IRR, which the I/O APIC keeps.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Low: u32 {
        const VECTOR = 0xff;
        const DELIVERY_MODE = 0b111 << DELIVERY_MODE_SHIFT;
        /// Destination mode: logical rather than physical.
        const LOGICAL = 1 << 11;
        /// Polarity: the pin is active when its level is low.
        const POLARITY_LOW = 1 << 13;
        /// A level-triggered message was sent and not yet EOIed.
        const REMOTE_IRR = 1 << 14;
        const LEVEL_TRIGGERED = 1 << 15;
        const MASKED = 1 << 16;
    }
}

/// What a guest's write of an entry's low half may change.
const LOW_WRITABLE: Low = Low::all().difference(Low::REMOTE_IRR);
const DEST_SHIFT: u32 = 24;

/// An interrupt message from the I/O APIC to the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub vector: u8,
    pub mode: DeliveryMode,
    pub logical: bool,
    pub dest: u8,
    pub level_triggered: bool,
}

/// One redirection table entry, as its two 32-bit halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    low: Low,
    high: u32,
}

impl Entry {
    const RESET: Entry = Entry { low: Low::MASKED, high: 0 };

    fn masked(&self) -> bool {
        self.low.contains(Low::MASKED)
    }

    fn level_triggered(&self) -> bool {
        self.low.contains(Low::LEVEL_TRIGGERED)
    }

    fn remote_irr(&self) -> bool {
        self.low.contains(Low::REMOTE_IRR)
    }

    fn vector(&self) -> u8 {
        (self.low & Low::VECTOR).bits() as u8
    }

    /// The message this entry sends, if its delivery mode is one an I/O APIC can send.
    fn message(&self) -> Option<Message> {
        let mode = match DeliveryMode::from_bits((self.low & Low::DELIVERY_MODE).bits() >> DELIVERY_MODE_SHIFT)? {
            DeliveryMode::StartUp => return None,
            mode => mode,
        };
        Some(Message {
            vector: self.vector(),
            mode,
            logical: self.low.contains(Low::LOGICAL),
            dest: (self.high >> DEST_SHIFT) as u8,
            level_triggered: self.level_triggered(),
        })
    }
}

/// The I/O APIC.
#[derive(Clone, Debug)]
pub struct IoApic {
    id: u8,
    /// IOREGSEL.
    select: u8,
    entries: [Entry; PINS],
    /// The input lines, asserted by their source or not (the level is this, inverted on
    /// the [`ACTIVE_LOW_PINS`]).
    lines: [bool; PINS],
}

impl IoApic {
    pub fn new(id: u8) -> Self {
        IoApic {
            id: id & ID_BITS as u8,
            select: 0,
            entries: [Entry::RESET; PINS],
            lines: [false; PINS],
        }
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// A 32-bit read of IOREGSEL or IOWIN.
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.select),
            IOWIN => self.read_register(self.select),
            _ => 0,
        }
    }

    /// A 32-bit write of IOREGSEL or IOWIN; the messages an unmasked level sends.
    pub fn write(&mut self, offset: u64, value: u32) -> Vec<Message> {
        match offset {
            IOREGSEL => self.select = value as u8,
            IOWIN => return self.write_register(self.select, value),
            _ => {}
        }
        Vec::new()
    }

    /// The redirection entry and half (high: bits 63-32) that `index` names.
    fn entry_of(index: u8) -> Option<(usize, bool)> {
        let n = usize::from(index.checked_sub(REG_REDIRECTION)?);
        (n / 2 < PINS).then_some((n / 2, n % 2 == 1))
    }

    fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID | REG_ARBITRATION => u32::from(self.id) << ID_SHIFT,
            REG_VERSION => VERSION,
            _ => match Self::entry_of(index) {
                Some((pin, true)) => self.entries[pin].high,
                Some((pin, false)) => self.entries[pin].low.bits(),
                None => 0,
            },
        }
    }

    fn write_register(&mut self, index: u8, value: u32) -> Vec<Message> {
        if index == REG_ID {
            self.id = ((value >> ID_SHIFT) & ID_BITS) as u8;
            return Vec::new();
        }
        let Some((pin, high)) = Self::entry_of(index) else { return Vec::new() };
        let entry = &mut self.entries[pin];
        if high {
            entry.high = value & (0xff << DEST_SHIFT);
            return Vec::new();
        }
        let keep = entry.low & Low::REMOTE_IRR;
        entry.low = (Low::from_bits_truncate(value) & LOW_WRITABLE) | keep;
        if !entry.level_triggered() {
            entry.low.remove(Low::REMOTE_IRR);
        }
        self.service(pin).into_iter().collect()
    }

    /// Whether pin `pin`'s input is active: its level (the source's asserted state, inverted
    /// where the source is active low) as the entry's polarity reads it.
    fn active(&self, pin: usize) -> bool {
        let level = self.lines[pin] != (ACTIVE_LOW_PINS >> pin & 1 != 0);
        level != self.entries[pin].low.contains(Low::POLARITY_LOW)
    }

    /// Sends the message of a level-triggered pin whose input is active, if it may.
    fn service(&mut self, pin: usize) -> Option<Message> {
        let active = self.active(pin);
        let entry = &mut self.entries[pin];
        if !active || !entry.level_triggered() || entry.masked() || entry.remote_irr() {
            return None;
        }
        let message = entry.message()?;
        entry.low.insert(Low::REMOTE_IRR);
        Some(message)
    }

    /// An edge on a line (an ISA interrupt): up and down again. The message it sends, if
    /// any: at its start, or at its end where the entry's polarity inverts the line.
    pub fn pulse(&mut self, pin: u8) -> Option<Message> {
        let message = self.set_level(pin, true);
        let end = self.set_level(pin, false);
        message.or(end)
    }

    /// A line's source asserts it (`high`) or not; the message it sends, if any.
    pub fn set_level(&mut self, pin: u8, high: bool) -> Option<Message> {
        let pin = usize::from(pin);
        if pin >= PINS {
            return None;
        }
        let was_active = self.active(pin);
        self.lines[pin] = high;
        let entry = &self.entries[pin];
        if entry.level_triggered() {
            return self.service(pin);
        }
        if self.active(pin) && !was_active && !entry.masked() {
            return entry.message();
        }
        None
    }

    /// The message each pin's entry sends, masked or not (`None`: a delivery mode an I/O
    /// APIC cannot send). KVM's split irqchip learns from these which vectors' EOIs to
    /// report (`apic.rs`, `Apics::use_kernel`).
    pub fn messages(&self) -> [Option<Message>; PINS] {
        self.entries.map(|e| e.message())
    }

    /// A local APIC's EOI of a level-triggered `vector`: clears remote IRR of the entries with
    /// that vector, and sends again for those whose line is still high.
    pub fn eoi(&mut self, vector: u8) -> Vec<Message> {
        let mut messages = Vec::new();
        for pin in 0..PINS {
            let entry = &mut self.entries[pin];
            if entry.remote_irr() && entry.vector() == vector {
                entry.low.remove(Low::REMOTE_IRR);
                messages.extend(self.service(pin));
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_entry(ioapic: &mut IoApic, pin: u8, low: u32, high: u32) -> Vec<Message> {
        ioapic.write(IOREGSEL, u32::from(REG_REDIRECTION + 2 * pin + 1));
        ioapic.write(IOWIN, high);
        ioapic.write(IOREGSEL, u32::from(REG_REDIRECTION + 2 * pin));
        ioapic.write(IOWIN, low)
    }

    fn read_register(ioapic: &mut IoApic, index: u8) -> u32 {
        ioapic.write(IOREGSEL, u32::from(index));
        ioapic.read(IOWIN)
    }

    fn message(vector: u8, dest: u8, level_triggered: bool) -> Message {
        Message { vector, mode: DeliveryMode::Fixed, logical: false, dest, level_triggered }
    }

    /// The writable bits are the flag set's but remote IRR: the mask written by hand
    /// before (vector, delivery mode, destination mode, polarity, trigger mode, mask).
    #[test]
    fn the_writable_bits() {
        assert_eq!(LOW_WRITABLE.bits(), 0x0001_afff);
    }

    #[test]
    fn reset_values_and_registers() {
        let mut ioapic = IoApic::new(2);
        assert_eq!(read_register(&mut ioapic, REG_ID), 0x0200_0000);
        assert_eq!(read_register(&mut ioapic, REG_VERSION), 0x0017_0011);
        assert_eq!(read_register(&mut ioapic, REG_ARBITRATION), 0x0200_0000);
        for index in REG_REDIRECTION..REG_REDIRECTION + 48 {
            let expect = if index % 2 == 0 { Low::MASKED.bits() } else { 0 };
            assert_eq!(read_register(&mut ioapic, index), expect, "index {index:#x}");
        }
        assert_eq!(read_register(&mut ioapic, REG_REDIRECTION + 48), 0, "no entry 24");
        assert_eq!(ioapic.read(IOREGSEL), u32::from(REG_REDIRECTION + 48));
        ioapic.write(IOREGSEL, REG_ID.into());
        ioapic.write(IOWIN, 0xffff_ffff);
        assert_eq!(ioapic.read(IOWIN), 0x0f00_0000);
        assert_eq!(ioapic.id(), 0xf);
        ioapic.write(IOREGSEL, REG_VERSION.into());
        ioapic.write(IOWIN, 0);
        assert_eq!(ioapic.read(IOWIN), VERSION);
        // Writable bits: remote IRR and delivery status are read-only.
        write_entry(&mut ioapic, 5, 0xffff_ffff, 0xffff_ffff);
        assert_eq!(read_register(&mut ioapic, REG_REDIRECTION + 10), 0x0001_afff);
        assert_eq!(read_register(&mut ioapic, REG_REDIRECTION + 11), 0xff00_0000);
        assert_eq!(ioapic.read(0x20), 0);
    }

    #[test]
    fn edge_triggered_pin() {
        let mut ioapic = IoApic::new(1);
        assert_eq!(ioapic.pulse(4), None, "masked at reset: lost");
        assert!(write_entry(&mut ioapic, 4, 0x34, 0x0100_0000).is_empty());
        assert_eq!(ioapic.pulse(4), Some(message(0x34, 1, false)));
        assert_eq!(ioapic.pulse(4), Some(message(0x34, 1, false)), "no remote IRR for edges");
        assert_eq!(ioapic.set_level(4, true), Some(message(0x34, 1, false)));
        assert_eq!(ioapic.set_level(4, true), None, "no new edge");
        assert_eq!(ioapic.set_level(4, false), None);
        // Delivery mode, logical destination, polarity kept.
        write_entry(&mut ioapic, 4, 0x2935, 0x0300_0000);
        let expect = Message {
            vector: 0x35,
            mode: DeliveryMode::LowestPriority,
            logical: true,
            dest: 3,
            level_triggered: false,
        };
        assert_eq!(ioapic.pulse(4), Some(expect));
        assert_eq!(read_register(&mut ioapic, REG_REDIRECTION + 8), 0x2935);
        // Reserved modes send nothing; pins out of range are ignored.
        write_entry(&mut ioapic, 4, 0x635, 0);
        assert_eq!(ioapic.pulse(4), None);
        assert_eq!(ioapic.pulse(24), None);
        assert_eq!(ioapic.set_level(255, true), None);
    }

    #[test]
    fn level_triggered_pin_with_remote_irr() {
        let mut ioapic = IoApic::new(1);
        let entry = Low::LEVEL_TRIGGERED.bits() | 0x50;
        write_entry(&mut ioapic, 10, entry, 0);
        let low = |ioapic: &mut IoApic| read_register(ioapic, REG_REDIRECTION + 20);
        assert_eq!(ioapic.set_level(10, true), Some(message(0x50, 0, true)));
        assert_eq!(low(&mut ioapic), entry | Low::REMOTE_IRR.bits());
        assert_eq!(ioapic.set_level(10, true), None, "remote IRR set");
        // EOI of another vector does nothing; of this one with the line high: again.
        assert!(ioapic.eoi(0x51).is_empty());
        assert_eq!(ioapic.eoi(0x50), [message(0x50, 0, true)]);
        assert_eq!(low(&mut ioapic), entry | Low::REMOTE_IRR.bits());
        // Line low, then EOI: remote IRR clear, nothing sent.
        assert_eq!(ioapic.set_level(10, false), None);
        assert!(ioapic.eoi(0x50).is_empty());
        assert_eq!(low(&mut ioapic), entry);
        // Masked while high: sent when unmasked.
        write_entry(&mut ioapic, 10, entry | Low::MASKED.bits(), 0);
        assert_eq!(ioapic.set_level(10, true), None);
        assert_eq!(write_entry(&mut ioapic, 10, entry, 0), [message(0x50, 0, true)]);
        // Rewriting the entry keeps remote IRR; switching to edge clears it.
        write_entry(&mut ioapic, 10, entry, 0);
        assert_eq!(low(&mut ioapic), entry | Low::REMOTE_IRR.bits());
        write_entry(&mut ioapic, 10, 0x50, 0);
        assert_eq!(low(&mut ioapic), 0x50);
        // A pulse on a level pin is one message until EOI.
        write_entry(&mut ioapic, 11, entry, 0);
        assert_eq!(ioapic.pulse(11), Some(message(0x50, 0, true)));
        assert_eq!(ioapic.pulse(11), None);
        assert!(ioapic.eoi(0x50).is_empty(), "line low");
        assert_eq!(ioapic.pulse(11), Some(message(0x50, 0, true)));
    }

    /// The polarity bit applies to the pin's level. ISA pins are active high: an entry
    /// programmed active high sees the source; active low, the inverse (an idle line is
    /// active). PCI's pins (16-23) are wired active low: the entry must say active low (as
    /// the `_PRT` does) to see the source, and an idle line is high.
    #[test]
    fn polarity_applies_to_the_level_as_the_board_wires_it() {
        assert_eq!(ACTIVE_LOW_PINS, 0x00ff_0000, "GSIs 16-23");
        let level = Low::LEVEL_TRIGGERED.bits();
        let low = Low::POLARITY_LOW.bits();
        let mut ioapic = IoApic::new(1);
        // A PCI pin programmed as the `_PRT` says (level, active low): idle sends nothing,
        // asserted sends, and again after an EOI while still asserted.
        assert!(write_entry(&mut ioapic, 16, level | low | 0x60, 0).is_empty(), "an idle PCI line is high: inactive");
        assert_eq!(ioapic.set_level(16, true), Some(message(0x60, 0, true)));
        assert_eq!(ioapic.eoi(0x60), [message(0x60, 0, true)]);
        assert_eq!(ioapic.set_level(16, false), None);
        assert!(ioapic.eoi(0x60).is_empty());
        // The same pin programmed active high: the idle (high) line is active at once, the
        // asserted (low) one is not.
        assert_eq!(write_entry(&mut ioapic, 17, level | 0x61, 0), [message(0x61, 0, true)]);
        assert_eq!(ioapic.set_level(17, true), None, "remote IRR");
        assert!(ioapic.eoi(0x61).is_empty(), "asserted = low = inactive for an active-high entry");
        assert_eq!(ioapic.set_level(17, false), Some(message(0x61, 0, true)));
        // An ISA pin programmed active low: inverted too. Edge-triggered: the source's
        // falling edge is the input's rising one; reprogramming is no edge.
        assert!(write_entry(&mut ioapic, 5, low | 0x35, 0).is_empty(), "reprogramming is no edge");
        assert_eq!(ioapic.set_level(5, true), None, "the input falls");
        assert_eq!(ioapic.set_level(5, false), Some(message(0x35, 0, false)));
        assert_eq!(ioapic.pulse(5), Some(message(0x35, 0, false)), "a pulse: the input falls, then rises at its end");
        assert!(write_entry(&mut ioapic, 5, 0x35, 0).is_empty());
        assert_eq!(ioapic.pulse(5), Some(message(0x35, 0, false)), "active high, as the MADT says");
        // A PCI pin edge-triggered active low (not what the tables say, but consistent).
        write_entry(&mut ioapic, 20, low | 0x40, 0);
        assert_eq!(ioapic.set_level(20, true), Some(message(0x40, 0, false)));
        assert_eq!(ioapic.set_level(20, false), None);
    }

    #[test]
    fn random_accesses_never_panic() {
        let mut ioapic = IoApic::new(8);
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let value = (seed >> 32) as u32;
            match seed % 6 {
                0 => drop(ioapic.write((seed >> 8) % 0x20, value)),
                1 => drop(ioapic.read((seed >> 8) % 0x20)),
                2 => drop(ioapic.pulse(value as u8 % 30)),
                3 => drop(ioapic.set_level(value as u8 % 30, seed & 64 != 0)),
                4 => drop(ioapic.eoi(value as u8)),
                _ => drop(ioapic.write(IOREGSEL, value % 0x40)),
            }
        }
    }
}
