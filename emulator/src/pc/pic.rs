//! The PC's two cascaded Intel 8259A interrupt controllers: the master at ports 0x20/0x21 takes
//! IRQ 0-7, the slave at 0xa0/0xa1 takes IRQ 8-15 and drives the master's IRQ 2. Devices move
//! their lines with [`Pic::set_irq`] / [`Pic::pulse_irq`]; the vCPU loop looks at the INTR output
//! with [`Pic::has_interrupt`] and runs the interrupt-acknowledge cycle with [`Pic::acknowledge`].
//!
//! | port | write | read |
//! |---|---|---|
//! | 0x20 / 0xa0 | ICW1 if bit 4, else OCW3 if bit 3, else OCW2 | IRR or ISR (OCW3 chooses; IRR after ICW1) |
//! | 0x21 / 0xa1 | ICW2-ICW4 while initialising, else OCW1 (the IMR) | IMR |
//!
//! After an OCW3 poll command, the next read of either port of that chip is the poll word.
//!
//! Each chip latches a request in IRR on a rising edge of its line and delivers it when it is
//! unmasked and of higher priority than everything in service (ISR); priority is fixed, level 0
//! first, until an OCW2 rotates it. Implemented: ICW1's single and ICW4-needed bits, ICW2's vector
//! base, ICW3 (a master cascades through IR2 only if its ICW3 says a slave is there; the slave's
//! identity is not checked), ICW4's auto-EOI, all OCW2 commands, OCW3's register select, poll and
//! special mask mode. Ignored, the chips behaving as a PC programs them: level-triggered mode
//! (ICW1 LTIM; the ELCR ports 0x4d0/0x4d1 are not emulated), MCS-80 mode (vectors are always
//! 8086-style), buffered mode and special fully nested mode (a slave interrupt in service blocks
//! the slave's others until the master's EOI, as in fully nested mode; Linux EOIs both chips at
//! once and never notices).
//!
//! What happens when the guest does something odd:
//! - **EOI with nothing in service**: a non-specific EOI does nothing; a specific EOI clears a bit
//!   that is already clear (its rotating form still makes that level the lowest).
//! - **Masking**: IMR only hides requests, IRR keeps them. Unmasking a pending request delivers it
//!   at once; several edges while masked are one request, as IRR holds one bit per line.
//! - **A request that goes away between INTR and INTA** (masked, or cleared by ICW1 or a poll):
//!   the INTA gets the spurious level 7 (vector base|7) and sets no ISR bit. Through the slave the
//!   master has already taken IR2 into service, so the guest sees IRQ 15 and must EOI the master
//!   only, as Linux does. A line that falls again before INTA does not withdraw its request
//!   (unlike the real chip, like QEMU): [`Pic::pulse_irq`] is one interrupt.
//! - **ICW sequence interrupted**: a new ICW1 restarts it at any time; OCW2 and OCW3 still work
//!   in the middle; the data port takes the expected ICWs before it is the IMR again.
//! - **ICW1** clears IMR, ISR, IRR, rotation, special mask, poll, auto-EOI (ICW4 comes again) and
//!   reselects IRR; lines already high must fall and rise again to request. The vector base and
//!   ICW3 stay until the ICWs that follow rewrite them.
//! - **Vector base with low bits set**: the low three bits are ignored.
//! - **Never EOIing**: the level stays in service, so it and every lower level stay blocked (their
//!   requests wait in IRR); higher levels, such as the slave's behind IR2 while the master has one
//!   of 3-7 in service (unrotated), are still delivered.
//! - Before any ICW1 (power-on, like QEMU's reset): nothing masked, vector base 0.
//! - `set_irq` of IRQ 2 (the cascade input, driven by the slave only) or above 15 is ignored;
//!   reads of other ports return 0xff and writes to them are ignored. No input panics.

pub const MASTER_COMMAND: u16 = 0x20;
pub const MASTER_DATA: u16 = 0x21;
pub const SLAVE_COMMAND: u16 = 0xa0;
pub const SLAVE_DATA: u16 = 0xa1;

/// The master's input driven by the slave's INT output.
pub const CASCADE_IRQ: u8 = 2;
/// Lines per chip: IRQ n >= 8 is the slave's level n - 8.
const LINES: u8 = 8;
const IRQS: u8 = 2 * LINES;
/// Bits of a level number.
const LEVEL: u8 = LINES - 1;
/// The level a chip answers an INTA with when no request is left.
const SPURIOUS_LEVEL: u8 = 7;
/// What a read of a port nobody drives returns.
const FLOATING_BUS: u8 = 0xff;

const ICW1: u8 = 0x10;
const ICW1_SINGLE: u8 = 0x02;
const ICW1_NEEDS_ICW4: u8 = 0x01;
/// ICW2: the vector of level 0; the level fills the low three bits.
const ICW2_VECTOR_BASE: u8 = !LEVEL;
const ICW4_AUTO_EOI: u8 = 0x02;

/// OCW2: the command in bits 7-5, a level in bits 2-0. 0x40 is a no-op.
const OCW2_COMMAND: u8 = 0xe0;
const OCW2_ROTATE_AUTO_EOI_CLEAR: u8 = 0x00;
const OCW2_NON_SPECIFIC_EOI: u8 = 0x20;
const OCW2_SPECIFIC_EOI: u8 = 0x60;
const OCW2_ROTATE_AUTO_EOI_SET: u8 = 0x80;
const OCW2_ROTATE_NON_SPECIFIC_EOI: u8 = 0xa0;
const OCW2_SET_PRIORITY: u8 = 0xc0;
const OCW2_ROTATE_SPECIFIC_EOI: u8 = 0xe0;

const OCW3: u8 = 0x08;
const OCW3_POLL: u8 = 0x04;
const OCW3_READ: u8 = 0x03;
const OCW3_READ_IRR: u8 = 0x02;
const OCW3_READ_ISR: u8 = 0x03;
const OCW3_SPECIAL_MASK: u8 = 0x60;
const OCW3_SPECIAL_MASK_SET: u8 = 0x60;
const OCW3_SPECIAL_MASK_CLEAR: u8 = 0x40;
/// Poll word: a request was pending, its level in bits 2-0.
const POLL_REQUEST: u8 = 0x80;

fn bit(level: u8) -> u8 {
    1 << (level & LEVEL)
}

/// What the data port expects next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Init {
    #[default]
    Done,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Chip {
    /// Input levels, to see rising edges: the wires' state, which ICW1 does not change.
    lines: u8,
    irr: u8,
    isr: u8,
    imr: u8,
    /// ICW2: the vector of level 0.
    base: u8,
    /// ICW3: on a master, the inputs with a slave; on a slave, its identity.
    icw3: u8,
    /// The level with the highest priority: 0 until rotated.
    top: u8,
    init: Init,
    single: bool,
    needs_icw4: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_mask: bool,
    read_isr: bool,
    poll: bool,
}

impl Chip {
    fn vector(&self, level: u8) -> u8 {
        self.base | (level & LEVEL)
    }

    /// A master whose IR2 goes through the slave.
    fn cascaded(&self) -> bool {
        !self.single && self.icw3 & bit(CASCADE_IRQ) != 0
    }

    fn set_line(&mut self, level: u8, high: bool) {
        if high && self.lines & bit(level) == 0 {
            self.irr |= bit(level);
        }
        self.lines = if high { self.lines | bit(level) } else { self.lines & !bit(level) };
    }

    /// Position in the current priority order, 0 first.
    fn rank(&self, level: u8) -> u8 {
        level.wrapping_sub(self.top) & LEVEL
    }

    /// The level of highest priority among `bits`.
    fn highest(&self, bits: u8) -> Option<u8> {
        (0..LINES).map(|i| (self.top + i) & LEVEL).find(|&level| bits & bit(level) != 0)
    }

    /// The in-service levels that hold back their own and lower priorities: in special mask
    /// mode, the masked ones do not.
    fn blocking(&self) -> u8 {
        if self.special_mask {
            self.isr & !self.imr
        } else {
            self.isr
        }
    }

    /// The level INT asks the CPU for, if any.
    fn request(&self) -> Option<u8> {
        let level = self.highest(self.irr & !self.imr)?;
        match self.highest(self.blocking()) {
            Some(busy) if self.rank(busy) <= self.rank(level) => None,
            _ => Some(level),
        }
    }

    /// Takes `level` from IRR into service.
    fn intack(&mut self, level: u8) {
        self.irr &= !bit(level);
        if !self.auto_eoi {
            self.isr |= bit(level);
        } else if self.rotate_on_auto_eoi {
            self.top = (level + 1) & LEVEL;
        }
    }

    fn eoi(&mut self, level: Option<u8>, rotate: bool) {
        if let Some(level) = level.or_else(|| self.highest(self.blocking())) {
            self.isr &= !bit(level);
            if rotate {
                self.top = (level + 1) & LEVEL;
            }
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1 != 0 {
            *self = Self {
                lines: self.lines,
                base: self.base,
                icw3: self.icw3,
                single: value & ICW1_SINGLE != 0,
                needs_icw4: value & ICW1_NEEDS_ICW4 != 0,
                init: Init::Icw2,
                ..Self::default()
            };
        } else if value & OCW3 != 0 {
            self.poll |= value & OCW3_POLL != 0;
            match value & OCW3_READ {
                OCW3_READ_IRR => self.read_isr = false,
                OCW3_READ_ISR => self.read_isr = true,
                _ => {}
            }
            match value & OCW3_SPECIAL_MASK {
                OCW3_SPECIAL_MASK_SET => self.special_mask = true,
                OCW3_SPECIAL_MASK_CLEAR => self.special_mask = false,
                _ => {}
            }
        } else {
            let level = value & LEVEL;
            match value & OCW2_COMMAND {
                OCW2_NON_SPECIFIC_EOI => self.eoi(None, false),
                OCW2_SPECIFIC_EOI => self.eoi(Some(level), false),
                OCW2_ROTATE_NON_SPECIFIC_EOI => self.eoi(None, true),
                OCW2_ROTATE_SPECIFIC_EOI => self.eoi(Some(level), true),
                OCW2_SET_PRIORITY => self.top = (level + 1) & LEVEL,
                OCW2_ROTATE_AUTO_EOI_SET => self.rotate_on_auto_eoi = true,
                OCW2_ROTATE_AUTO_EOI_CLEAR => self.rotate_on_auto_eoi = false,
                _ => {}
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        let after_icw3 = if self.needs_icw4 { Init::Icw4 } else { Init::Done };
        self.init = match self.init {
            Init::Done => {
                self.imr = value;
                Init::Done
            }
            Init::Icw2 => {
                self.base = value & ICW2_VECTOR_BASE;
                if self.single { after_icw3 } else { Init::Icw3 }
            }
            Init::Icw3 => {
                self.icw3 = value;
                after_icw3
            }
            Init::Icw4 => {
                self.auto_eoi = value & ICW4_AUTO_EOI != 0;
                Init::Done
            }
        };
    }

    /// A read: the poll word if a poll command is waiting (which acknowledges the request),
    /// else the IMR from the data port, IRR or ISR from the command port.
    fn read(&mut self, data_port: bool) -> u8 {
        if std::mem::take(&mut self.poll) {
            return match self.request() {
                Some(level) => {
                    self.intack(level);
                    POLL_REQUEST | level
                }
                None => 0,
            };
        }
        match (data_port, self.read_isr) {
            (true, _) => self.imr,
            (false, true) => self.isr,
            (false, false) => self.irr,
        }
    }
}

/// The master and slave 8259A.
#[derive(Clone, Debug)]
pub struct Pic {
    master: Chip,
    slave: Chip,
    /// INTR has been high since the last acknowledge: the CPU may have seen it, so its INTA
    /// cycle gets an answer even if the request went away since.
    intr_since_ack: bool,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// Power-on state, like QEMU's reset: nothing masked or pending, vector base 0, the master
    /// cascading through IR2. Guests must initialise the chips themselves (there is no BIOS).
    pub fn new() -> Self {
        let chip = |icw3| Chip { icw3, ..Chip::default() };
        Self { master: chip(bit(CASCADE_IRQ)), slave: chip(CASCADE_IRQ), intr_since_ack: false }
    }

    pub fn owns(port: u16) -> bool {
        matches!(port, MASTER_COMMAND | MASTER_DATA | SLAVE_COMMAND | SLAVE_DATA)
    }

    pub fn read(&mut self, port: u16) -> u8 {
        let value = match port {
            MASTER_COMMAND | MASTER_DATA => self.master.read(port == MASTER_DATA),
            SLAVE_COMMAND | SLAVE_DATA => {
                if self.slave.poll {
                    // A poll is an acknowledge: the slave's INT drops during it.
                    self.master.set_line(CASCADE_IRQ, false);
                }
                self.slave.read(port == SLAVE_DATA)
            }
            _ => FLOATING_BUS,
        };
        self.settle();
        value
    }

    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            MASTER_COMMAND => self.master.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_COMMAND => self.slave.write_command(value),
            SLAVE_DATA => self.slave.write_data(value),
            _ => {}
        }
        self.settle();
    }

    /// Sets the level of ISA interrupt line `irq` (0..=15). Edge-triggered: a rising
    /// edge (low->high) latches the request in IRR; keeping it high does not re-latch.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            CASCADE_IRQ => {}
            0..LINES => self.master.set_line(irq, level),
            LINES..IRQS => self.slave.set_line(irq - LINES, level),
            _ => {}
        }
        self.settle();
    }

    /// A rising then falling edge on `irq` (how the machine signals one interrupt of a PIT
    /// tick or a UART event).
    pub fn pulse_irq(&mut self, irq: u8) {
        self.set_irq(irq, true);
        self.set_irq(irq, false);
    }

    /// The INTR output to the CPU: an unmasked request of higher priority than any in service.
    pub fn has_interrupt(&self) -> bool {
        self.master.request().is_some()
    }

    /// The CPU's interrupt-acknowledge cycle: returns (vector, irq) of the highest-priority
    /// request and moves it from IRR to ISR (not in auto-EOI mode). When nothing is pending
    /// any more (the request went away), returns the spurious IRQ 7 (or 15 through the slave)
    /// with its vector and sets no ISR bit, as the real chip does. None only if
    /// has_interrupt() is false: when INTR has not been high since the last acknowledge.
    pub fn acknowledge(&mut self) -> Option<(u8, u8)> {
        if !self.intr_since_ack && !self.has_interrupt() {
            return None;
        }
        self.intr_since_ack = false;
        let answer = match self.master.request() {
            Some(CASCADE_IRQ) if self.master.cascaded() => {
                self.master.intack(CASCADE_IRQ);
                // The slave's INT drops during the cycle, and rises again if it has more.
                self.master.set_line(CASCADE_IRQ, false);
                let level = match self.slave.request() {
                    Some(level) => {
                        self.slave.intack(level);
                        level
                    }
                    None => SPURIOUS_LEVEL,
                };
                (self.slave.vector(level), LINES + level)
            }
            Some(irq) => {
                self.master.intack(irq);
                (self.master.vector(irq), irq)
            }
            None => (self.master.vector(SPURIOUS_LEVEL), SPURIOUS_LEVEL),
        };
        self.settle();
        Some(answer)
    }

    /// Follows a change: the slave's INT drives the master's IR2, then INTR is noted.
    fn settle(&mut self) {
        let slave_int = self.slave.request().is_some();
        self.master.set_line(CASCADE_IRQ, slave_int);
        self.intr_since_ack |= self.has_interrupt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOI: u8 = OCW2_NON_SPECIFIC_EOI;
    const READ_IRR: u8 = OCW3 | OCW3_READ_IRR;
    const READ_ISR: u8 = OCW3 | OCW3_READ_ISR;
    const POLL: u8 = OCW3 | OCW3_POLL;
    /// Linux's init_8259A (vector bases 0x20/0x28), leaving only the cascade unmasked.
    const LINUX_INIT: [(u16, u8); 12] = [
        (MASTER_DATA, 0xff),
        (SLAVE_DATA, 0xff),
        (MASTER_COMMAND, 0x11),
        (MASTER_DATA, 0x20),
        (MASTER_DATA, 0x04),
        (MASTER_DATA, 0x01),
        (SLAVE_COMMAND, 0x11),
        (SLAVE_DATA, 0x28),
        (SLAVE_DATA, 0x02),
        (SLAVE_DATA, 0x01),
        (MASTER_DATA, 0xfb),
        (SLAVE_DATA, 0xff),
    ];

    /// Linux's master init with auto-EOI.
    const MASTER_AUTO_EOI: [(u16, u8); 4] =
        [(MASTER_COMMAND, 0x11), (MASTER_DATA, 0x20), (MASTER_DATA, 0x04), (MASTER_DATA, 0x03)];

    fn out(pic: &mut Pic, writes: &[(u16, u8)]) {
        for &(port, value) in writes {
            pic.write(port, value);
        }
    }

    /// Initialised as Linux does, nothing masked.
    fn open() -> Pic {
        let mut pic = Pic::new();
        out(&mut pic, &LINUX_INIT);
        out(&mut pic, &[(MASTER_DATA, 0), (SLAVE_DATA, 0)]);
        pic
    }

    /// A pulse on `irq`, then the INTA cycle if INTR rose.
    fn raise(pic: &mut Pic, irq: u8) -> Option<(u8, u8)> {
        pic.pulse_irq(irq);
        pic.has_interrupt().then(|| pic.acknowledge().expect("INTR is high"))
    }

    /// Reads ISR the way Linux's i8259A_irq_real does, leaving IRR selected.
    fn isr(pic: &mut Pic, command: u16) -> u8 {
        pic.write(command, READ_ISR);
        let isr = pic.read(command);
        pic.write(command, READ_IRR);
        isr
    }

    #[test]
    fn linux_init_and_cascade() {
        let mut pic = Pic::new();
        out(&mut pic, &LINUX_INIT);
        assert_eq!(pic.read(MASTER_DATA), 0xfb);
        assert_eq!(raise(&mut pic, 0), None); // masked
        pic.write(MASTER_DATA, 0xfa);
        assert_eq!(pic.acknowledge(), Some((0x20, 0)));
        pic.write(MASTER_COMMAND, OCW2_SPECIFIC_EOI);
        assert_eq!(raise(&mut pic, 12), None);
        pic.write(SLAVE_DATA, 0);
        for irq in 8..IRQS {
            assert_eq!(raise(&mut pic, irq), Some((0x28 + irq - LINES, irq)));
            assert_eq!((isr(&mut pic, MASTER_COMMAND), isr(&mut pic, SLAVE_COMMAND)), (0x04, bit(irq)));
            // mask_and_ack_8259A: specific EOI to the slave, then to the master's cascade input.
            out(&mut pic, &[(SLAVE_COMMAND, OCW2_SPECIFIC_EOI | (irq - LINES)), (MASTER_COMMAND, 0x62)]);
            assert_eq!((isr(&mut pic, MASTER_COMMAND), isr(&mut pic, SLAVE_COMMAND)), (0, 0));
        }
        assert_eq!(pic.acknowledge(), None);
    }

    #[test]
    fn higher_priority_preempts_lower_waits() {
        let mut pic = open();
        assert_eq!(raise(&mut pic, 3), Some((0x23, 3)));
        assert_eq!(raise(&mut pic, 5), None); // waits behind 3
        assert_eq!(raise(&mut pic, 0), Some((0x20, 0))); // nests inside 3
        assert_eq!(isr(&mut pic, MASTER_COMMAND), bit(0) | bit(3));
        pic.write(MASTER_COMMAND, EOI); // the highest in service: 0
        assert_eq!(isr(&mut pic, MASTER_COMMAND), bit(3));
        assert!(!pic.has_interrupt());
        pic.write(MASTER_COMMAND, EOI);
        assert_eq!(pic.acknowledge(), Some((0x25, 5)));
    }

    #[test]
    fn specific_and_non_specific_eoi() {
        let mut pic = open();
        assert_eq!(raise(&mut pic, 4), Some((0x24, 4)));
        assert_eq!(raise(&mut pic, 1), Some((0x21, 1)));
        pic.write(MASTER_COMMAND, OCW2_SPECIFIC_EOI | 4);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), bit(1));
        pic.write(MASTER_COMMAND, OCW2_SPECIFIC_EOI | 6); // not in service: nothing to clear
        assert_eq!(isr(&mut pic, MASTER_COMMAND), bit(1));
        out(&mut pic, &[(MASTER_COMMAND, EOI), (MASTER_COMMAND, EOI)]); // the second: nothing in service
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
        assert_eq!(pic.acknowledge(), None);
    }

    #[test]
    fn auto_eoi_leaves_nothing_in_service() {
        let mut pic = open();
        out(&mut pic, &MASTER_AUTO_EOI);
        for _ in 0..2 {
            assert_eq!(raise(&mut pic, 5), Some((0x25, 5)));
            assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
        }
        // The slave is not in auto-EOI mode: only its bit is left.
        assert_eq!(raise(&mut pic, 9), Some((0x29, 9)));
        assert_eq!((isr(&mut pic, MASTER_COMMAND), isr(&mut pic, SLAVE_COMMAND)), (0, bit(1)));
        // Now it is: its INT drops during each INTA, so the master sees its next request.
        out(&mut pic, &[(SLAVE_COMMAND, 0x11), (SLAVE_DATA, 0x28), (SLAVE_DATA, 0x02), (SLAVE_DATA, 0x03)]);
        pic.pulse_irq(11);
        assert_eq!(raise(&mut pic, 10), Some((0x2a, 10)));
        assert_eq!(pic.acknowledge(), Some((0x2b, 11)));
        assert_eq!(isr(&mut pic, SLAVE_COMMAND), 0);
    }

    #[test]
    fn masked_requests_wait_in_irr() {
        let mut pic = open();
        pic.write(MASTER_DATA, bit(4));
        assert_eq!(raise(&mut pic, 4), None);
        assert_eq!(raise(&mut pic, 4), None);
        assert_eq!(pic.read(MASTER_COMMAND), bit(4)); // IRR, selected by default
        pic.write(MASTER_DATA, 0);
        assert_eq!(pic.acknowledge(), Some((0x24, 4)));
        pic.write(MASTER_COMMAND, EOI);
        assert!(!pic.has_interrupt()); // two edges, one request
    }

    #[test]
    fn ocw3_selects_irr_or_isr() {
        let mut pic = open();
        assert_eq!(raise(&mut pic, 6), Some((0x26, 6)));
        assert_eq!((raise(&mut pic, 6), raise(&mut pic, 7)), (None, None));
        assert_eq!(pic.read(MASTER_COMMAND), bit(6) | bit(7));
        pic.write(MASTER_COMMAND, READ_ISR);
        assert_eq!(pic.read(MASTER_COMMAND), bit(6));
        pic.write(MASTER_COMMAND, OCW3); // neither: the choice sticks
        assert_eq!(pic.read(MASTER_COMMAND), bit(6));
        assert_eq!(pic.read(MASTER_DATA), 0); // the IMR
        pic.write(MASTER_COMMAND, READ_IRR);
        assert_eq!(pic.read(MASTER_COMMAND), bit(6) | bit(7));
    }

    #[test]
    fn poll_mode() {
        let mut pic = open();
        pic.write(MASTER_COMMAND, POLL);
        assert_eq!(pic.read(MASTER_COMMAND), 0); // nothing pending
        pic.pulse_irq(5);
        pic.pulse_irq(3);
        pic.write(MASTER_COMMAND, POLL);
        assert_eq!(pic.read(MASTER_DATA), POLL_REQUEST | 3);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), bit(3)); // the poll acknowledged it
        assert_eq!(pic.read(MASTER_DATA), 0); // one read only, then the IMR again
        pic.pulse_irq(13);
        pic.write(SLAVE_COMMAND, POLL);
        assert_eq!(pic.read(SLAVE_COMMAND), POLL_REQUEST | 5);
        assert_eq!(isr(&mut pic, SLAVE_COMMAND), bit(5));
    }

    #[test]
    fn request_gone_before_inta_is_spurious() {
        let mut pic = open();
        pic.pulse_irq(3);
        assert!(pic.has_interrupt());
        pic.write(MASTER_DATA, bit(3)); // masked between INTR and INTA
        assert!(!pic.has_interrupt());
        assert_eq!(pic.acknowledge(), Some((0x27, 7)));
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0); // Linux: not a real IRQ 7
        assert_eq!(pic.acknowledge(), None);
        // Through the slave: the master takes IR2 into service, the slave answers level 7.
        pic.pulse_irq(10);
        pic.write(SLAVE_DATA, bit(2));
        assert_eq!(pic.acknowledge(), Some((0x2f, 15)));
        assert_eq!((isr(&mut pic, MASTER_COMMAND), isr(&mut pic, SLAVE_COMMAND)), (bit(CASCADE_IRQ), 0));
        out(&mut pic, &[(MASTER_COMMAND, EOI), (MASTER_DATA, 0)]);
        assert_eq!(pic.acknowledge(), Some((0x23, 3))); // the masked request was kept
    }

    #[test]
    fn edges_latch_held_levels_do_not() {
        let mut pic = open();
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), Some((0x24, 4)));
        pic.write(MASTER_COMMAND, EOI);
        pic.set_irq(4, true);
        assert!(!pic.has_interrupt()); // held high: no new edge
        pic.set_irq(4, false);
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), Some((0x24, 4)));
        pic.set_irq(4, false);
        assert_eq!(raise(&mut pic, 4), None); // an edge while in service waits for the EOI
        pic.write(MASTER_COMMAND, EOI);
        assert_eq!(pic.acknowledge(), Some((0x24, 4)));
    }

    #[test]
    fn never_eoi_blocks_equal_and_lower() {
        let mut pic = open();
        assert_eq!(raise(&mut pic, 3), Some((0x23, 3)));
        assert_eq!([3, 5, 7].map(|irq| raise(&mut pic, irq)), [None; 3]);
        assert_eq!(raise(&mut pic, 15), Some((0x2f, 15))); // IR2 is above 3
        assert_eq!(raise(&mut pic, 1), Some((0x21, 1)));
        assert_eq!(raise(&mut pic, 12), None); // the slave waits for both chips' EOIs
        out(&mut pic, &[(SLAVE_COMMAND, EOI), (MASTER_COMMAND, EOI)]); // the master's for IRQ 1
        assert!(!pic.has_interrupt());
        pic.write(MASTER_COMMAND, EOI); // and for IR2
        assert_eq!(pic.acknowledge(), Some((0x2c, 12)));
        assert_eq!(pic.read(MASTER_COMMAND), bit(3) | bit(5) | bit(7));
    }

    #[test]
    fn rotation() {
        let mut pic = open();
        // Rotating EOIs make the level served the lowest.
        assert_eq!(raise(&mut pic, 0), Some((0x20, 0)));
        pic.write(MASTER_COMMAND, OCW2_ROTATE_NON_SPECIFIC_EOI);
        pic.pulse_irq(0);
        assert_eq!(raise(&mut pic, 7), Some((0x27, 7)));
        pic.write(MASTER_COMMAND, OCW2_ROTATE_SPECIFIC_EOI | 7);
        assert_eq!(pic.acknowledge(), Some((0x20, 0)));
        // Set priority: 4 the lowest, so 5 the highest.
        out(&mut pic, &[(MASTER_COMMAND, EOI), (MASTER_COMMAND, OCW2_SET_PRIORITY | 4)]);
        pic.pulse_irq(3);
        assert_eq!(raise(&mut pic, 6), Some((0x26, 6)));
        assert!(!pic.has_interrupt()); // 3 is below 6 now
        pic.write(MASTER_COMMAND, EOI);
        assert_eq!(pic.acknowledge(), Some((0x23, 3)));
        // Rotate in auto-EOI mode.
        out(&mut pic, &MASTER_AUTO_EOI);
        pic.write(MASTER_COMMAND, OCW2_ROTATE_AUTO_EOI_SET);
        assert_eq!(raise(&mut pic, 1), Some((0x21, 1)));
        pic.pulse_irq(1);
        assert_eq!(raise(&mut pic, 0), Some((0x20, 0)));
        assert_eq!(pic.acknowledge(), Some((0x21, 1)));
    }

    #[test]
    fn special_mask_mode_lets_lower_levels_in() {
        let mut pic = open();
        assert_eq!(raise(&mut pic, 3), Some((0x23, 3)));
        pic.write(MASTER_DATA, bit(3));
        assert_eq!(raise(&mut pic, 5), None);
        pic.write(MASTER_COMMAND, OCW3 | OCW3_SPECIAL_MASK_SET);
        assert_eq!(pic.acknowledge(), Some((0x25, 5)));
        pic.write(MASTER_COMMAND, EOI); // clears 5, not the masked 3
        assert_eq!(isr(&mut pic, MASTER_COMMAND), bit(3));
        out(&mut pic, &[(MASTER_COMMAND, OCW3 | OCW3_SPECIAL_MASK_CLEAR), (MASTER_COMMAND, EOI)]);
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
    }

    #[test]
    fn icw1_restarts_at_any_time() {
        let mut pic = open();
        pic.write(MASTER_DATA, bit(7));
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), Some((0x25, 5)));
        pic.pulse_irq(6);
        out(&mut pic, &[(MASTER_COMMAND, READ_ISR), (MASTER_COMMAND, 0x11)]);
        assert_eq!(pic.read(MASTER_DATA), 0); // IMR cleared
        assert_eq!(pic.read(MASTER_COMMAND), 0); // IRR selected, 6's edge forgotten
        assert_eq!(isr(&mut pic, MASTER_COMMAND), 0);
        // Interrupted after ICW2 by an ICW1 for single mode (no ICW3); ICW2's low bits ignored.
        out(&mut pic, &[(MASTER_DATA, 0x40), (MASTER_COMMAND, 0x13)]);
        out(&mut pic, &[(MASTER_DATA, 0x57), (MASTER_DATA, 0x01)]);
        pic.write(MASTER_DATA, 0xff); // the IMR again
        assert_eq!(pic.read(MASTER_DATA), 0xff);
        pic.write(MASTER_DATA, 0);
        pic.set_irq(5, true);
        assert!(!pic.has_interrupt()); // line 5 was high all along: it needs a new edge
        pic.set_irq(5, false);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), Some((0x55, 5)));
        pic.write(MASTER_COMMAND, EOI);
        assert_eq!(raise(&mut pic, 9), Some((0x52, 2))); // single: the master answers for IR2
        assert_eq!(isr(&mut pic, SLAVE_COMMAND), 0);
    }

    #[test]
    fn any_guest_input_is_safe() {
        const PORTS: [u16; 6] = [MASTER_COMMAND, MASTER_DATA, SLAVE_COMMAND, SLAVE_DATA, 0x22, 0x4d0];
        let mut pic = Pic::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (mut delivered, mut spurious) = (0, 0);
        for _ in 0..200_000 {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let port = PORTS[(state >> 8) as usize % PORTS.len()];
            let byte = (state >> 16) as u8;
            match state % 8 {
                0 | 1 => pic.write(port, byte),
                2 => _ = pic.read(port),
                3 => pic.set_irq(byte % 20, byte & 0x80 != 0),
                4 | 5 => pic.pulse_irq(byte % 20),
                _ => {
                    let intr = pic.has_interrupt();
                    match pic.acknowledge() {
                        Some((vector, irq)) => {
                            let chip = if irq < LINES { &pic.master } else { &pic.slave };
                            assert!(irq < IRQS);
                            assert_eq!(vector, chip.base | (irq & LEVEL));
                            delivered += 1;
                            spurious += u32::from(!intr);
                        }
                        None => assert!(!intr),
                    }
                }
            }
        }
        assert!(delivered > 1000 && spurious > 0, "{delivered} {spurious}");
    }
}
