//! PCI's INTx interrupts (PCI Local Bus 3.0, 2.2.6 and 6.2.2): a function's interrupt pin
//! (INTA# to INTD#, its configuration space's Interrupt Pin register), routed by the
//! board to the I/O APIC pin the DSDT's `_PRT` gives (`acpi::prt_gsi`).
//!
//! - **Level-triggered and shared.** A pin is asserted while the function has an interrupt
//!   to report; several pins may share a line (on a PC, open-drain outputs tied together:
//!   a wired-OR). [`WiredOr`] keeps the set of sources holding each line: the line is
//!   asserted while any holds it, so one function's deassertion does not hide another's
//!   interrupt, and the I/O APIC's remote IRR and EOI re-raise the shared line for as long
//!   as one still holds it.
//! - **The function's side** ([`IntxPin`], one per function, shared by the function, its
//!   registers and its worker threads): the device's request (`set_level`), the command
//!   register's Interrupt Disable (bit 10), which the PCI root gives it after each
//!   configuration write (`set_disabled`), and the status register's Interrupt Status
//!   (bit 3), which follows the request whatever Interrupt Disable says (the root sets it
//!   before each configuration read). The pin drives its line while requested and not
//!   disabled.
//! - **Active low.** PCI's INTx# lines are active low; the I/O APIC applies the polarity
//!   (`ioapic.rs`, `ACTIVE_LOW_PINS`), so sources here speak of asserted, not of levels.
//!
//! Lock order: an [`IntxPin`]'s lock, then the interrupt controllers' (its [`Wire`] takes
//! those): the pin never locks the PCI root, so the root may call it with its lock held.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::bus::lock;

/// Where an INTx pin goes: the board's line (a GSI), as one source among those sharing it.
pub trait Wire: Send {
    /// This source asserts the line (`true`) or lets it go.
    fn set(&self, asserted: bool);
    /// The GSI (I/O APIC pin) of the line.
    fn gsi(&self) -> u32;
}

/// Which sources hold each of a set of shared lines (GSIs `first..first + lines`).
#[derive(Debug, Clone)]
pub struct WiredOr {
    first: u32,
    holders: Vec<BTreeSet<u32>>,
}

impl WiredOr {
    pub fn new(first: u32, lines: u32) -> Self {
        Self { first, holders: vec![BTreeSet::new(); lines as usize] }
    }

    /// Source `source` asserts line `gsi` or lets it go: the line's new state if it
    /// changed (`None`: it did not, or `gsi` is not one of these lines).
    pub fn set(&mut self, gsi: u32, source: u32, asserted: bool) -> Option<bool> {
        let holders = self.holders.get_mut(gsi.checked_sub(self.first)? as usize)?;
        let was = !holders.is_empty();
        if asserted {
            holders.insert(source);
        } else {
            holders.remove(&source);
        }
        let now = !holders.is_empty();
        (now != was).then_some(now)
    }

    /// Whether line `gsi` is asserted.
    pub fn asserted(&self, gsi: u32) -> bool {
        gsi.checked_sub(self.first).and_then(|i| self.holders.get(i as usize)).is_some_and(|h| !h.is_empty())
    }
}

struct PinState {
    /// The function has an interrupt to report (Interrupt Status).
    requested: bool,
    /// The command register's Interrupt Disable.
    disabled: bool,
    /// What the pin drives its line to (requested and not disabled).
    driving: bool,
    wire: Box<dyn Wire>,
}

impl PinState {
    fn update(&mut self) {
        let drive = self.requested && !self.disabled;
        if drive != self.driving {
            self.driving = drive;
            self.wire.set(drive);
        }
    }
}

/// A function's INTx pin (cheap to clone: the clones are the same pin).
#[derive(Clone)]
pub struct IntxPin {
    state: Arc<Mutex<PinState>>,
    /// INTA# = 1 to INTD# = 4 (the Interrupt Pin register's value).
    pin: u8,
}

impl IntxPin {
    /// Pin `pin` (1-4: INTA#-INTD#) on `wire`; not requested, not disabled (the command
    /// register's reset value).
    pub fn new(pin: u8, wire: Box<dyn Wire>) -> Self {
        let state = PinState { requested: false, disabled: false, driving: false, wire };
        Self { state: Arc::new(Mutex::new(state)), pin }
    }

    /// INTA# = 1 to INTD# = 4.
    pub fn pin(&self) -> u8 {
        self.pin
    }

    /// The GSI the pin's line goes to.
    pub fn gsi(&self) -> u32 {
        lock(&self.state).wire.gsi()
    }

    /// The function has an interrupt to report (`true`) or no longer.
    pub fn set_level(&self, requested: bool) {
        let mut s = lock(&self.state);
        s.requested = requested;
        s.update();
    }

    /// The command register's Interrupt Disable (the root, after a configuration write).
    pub fn set_disabled(&self, disabled: bool) {
        let mut s = lock(&self.state);
        s.disabled = disabled;
        s.update();
    }

    /// The status register's Interrupt Status: the function's request, disabled or not.
    pub fn status(&self) -> bool {
        lock(&self.state).requested
    }

    /// Whether the pin drives its line now.
    pub fn driving(&self) -> bool {
        lock(&self.state).driving
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A wire that records what the pin drives.
    #[derive(Clone, Default)]
    pub(crate) struct Recorder(pub Arc<Mutex<Vec<bool>>>);

    impl Wire for Recorder {
        fn set(&self, asserted: bool) {
            self.0.lock().unwrap().push(asserted);
        }
        fn gsi(&self) -> u32 {
            17
        }
    }

    #[test]
    fn a_line_is_asserted_while_any_source_holds_it() {
        let mut lines = WiredOr::new(16, 8);
        assert_eq!(lines.set(18, 1, true), Some(true));
        assert_eq!(lines.set(18, 2, true), None, "already asserted");
        assert_eq!(lines.set(18, 1, true), None, "a source holds a line once");
        assert_eq!(lines.set(18, 1, false), None, "source 2 still holds it");
        assert!(lines.asserted(18));
        assert_eq!(lines.set(18, 1, false), None, "letting go twice");
        assert_eq!(lines.set(18, 2, false), Some(false));
        assert!(!lines.asserted(18));
        assert_eq!(lines.set(19, 2, false), None, "never held");
        // Lines apart are apart; GSIs outside the set are nobody's.
        assert_eq!(lines.set(16, 1, true), Some(true));
        assert_eq!(lines.set(23, 1, true), Some(true));
        assert!(!lines.asserted(17));
        assert_eq!(lines.set(24, 1, true), None);
        assert_eq!(lines.set(15, 1, true), None);
        assert!(!lines.asserted(15) && !lines.asserted(u32::MAX));
    }

    /// The pin drives its line while requested and not disabled; the status follows the
    /// request; only changes reach the wire.
    #[test]
    fn interrupt_disable_masks_the_pin_and_status_follows_the_request() {
        let wire = Recorder::default();
        let pin = IntxPin::new(1, Box::new(wire.clone()));
        assert_eq!((pin.pin(), pin.gsi(), pin.status(), pin.driving()), (1, 17, false, false));
        pin.set_level(true);
        pin.set_level(true);
        assert!(pin.status() && pin.driving());
        pin.set_disabled(true);
        assert!(pin.status() && !pin.driving(), "status set, line let go");
        pin.set_level(false);
        pin.set_level(true);
        pin.set_disabled(false);
        assert!(pin.driving(), "enabled again while requested: asserted again");
        pin.clone().set_level(false);
        assert!(!pin.status() && !pin.driving(), "a clone is the same pin");
        pin.set_disabled(true);
        pin.set_disabled(false);
        assert_eq!(*wire.0.lock().unwrap(), [true, false, true, false]);
    }
}
