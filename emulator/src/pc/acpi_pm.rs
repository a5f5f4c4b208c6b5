//! The ACPI power-management registers of a PC chipset (ACPI 6.5, 4.8 "ACPI Hardware
//! Model": the fixed hardware registers): the PM1a event and control blocks and the PM
//! timer, in one block of I/O ports whose base the FADT gives (`pc::acpi`, 0x600 on the pc
//! machine, where PIIX4 and ICH9 boards put it).
//!
//! | offset | register | width | |
//! |---|---|---|---|
//! | 0x0 | PM1_STS | 16 | status: write 1 to clear |
//! | 0x2 | PM1_EN | 16 | enables: which status bits raise the SCI |
//! | 0x4 | PM1_CNT | 16 | SCI_EN (always 1), SLP_TYP, SLP_EN |
//! | 0x6 | reserved | 16 | reads 0, writes ignored |
//! | 0x8 | PM_TMR | 32 | the PM timer, read-only |
//!
//! The device is a plain state machine: [`AcpiPm::read`] and [`AcpiPm::write`] take an
//! offset into the block and the bytes of one access at its real width (1, 2 or 4 bytes;
//! an access may span two registers), plus the time. It knows no bus and no interrupt
//! controller: the machine asks [`AcpiPm::sci_level`] after each access (and when
//! [`AcpiPm::next_timer_event`] is due) and drives the SCI line, a level-triggered ISA
//! line, from it.
//!
//! # The clock
//!
//! Every method that needs the time takes `now_ns`: nanoseconds of the host's monotonic
//! clock since a fixed origin (the board's `Board::now_ns`, `CLOCK_MONOTONIC` through
//! `std::time::Instant`). The PM timer is that time at [`TIMER_HZ`] (3.579545 MHz),
//! counting from 0 at the origin, and is [`TIMER_BITS`] wide (32: the FADT's TMR_VAL_EXT
//! flag says so). TMR_STS is set each time the timer's top bit changes (every 2^31 ticks,
//! 10 minutes), computed from the time when read, never by a host timer.
//!
//! # Sleep states
//!
//! Writing PM1_CNT with SLP_EN set enters the sleep state SLP_TYP names. The DSDT's `\_S5`
//! package gives [`SLP_TYP_S5`]: that write powers the machine off ([`Effect::PowerOff`]).
//! `\_S0` gives [`SLP_TYP_S0`], the working state: nothing happens. The DSDT offers no
//! other state (no S1-S4), so an OS never asks for one; a guest that does anyway wakes at
//! once (WAK_STS set, counted), so that it never waits forever for a wake event.
//!
//! # What is not there
//!
//! No PM1b blocks, no PM2 control block, no GPE blocks (the FADT says so: their lengths are
//! 0), no SMI command port (SMI_CMD is 0 in the FADT: the machine is always in ACPI mode,
//! which is why SCI_EN always reads 1), no bus-master, global-lock, sleep-button, RTC or
//! PCIe wake status: those status bits read 0 and their enables are only stored. The
//! power button is the fixed-feature one: [`AcpiPm::press_power_button`] sets PWRBTN_STS.

/// Offsets of the registers in the block.
pub const PM1_STS: u16 = 0x0;
pub const PM1_EN: u16 = 0x2;
pub const PM1_CNT: u16 = 0x4;
pub const PM_TMR: u16 = 0x8;
/// Bytes of the block: the machine maps ports `[base, base + BLOCK_LEN)` here.
pub const BLOCK_LEN: u16 = 0xc;
/// The FADT's PM1_EVT_LEN (status and enable), PM1_CNT_LEN and PM_TMR_LEN.
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1_CNT_LEN: u8 = 2;
pub const PM_TMR_LEN: u8 = 4;

/// The PM timer's frequency (ACPI 6.5, 4.8.3.3).
pub const TIMER_HZ: u64 = 3_579_545;
/// The PM timer's width: 32 bits (the FADT sets TMR_VAL_EXT), not 24.
pub const TIMER_BITS: u32 = 32;
const TIMER_MASK: u64 = (1 << TIMER_BITS) - 1;
const NS_PER_S: u64 = 1_000_000_000;

/// PM1_STS and PM1_EN bits (ACPI 6.5, 4.8.3.1.1 and 4.8.3.1.2).
pub const TMR: u16 = 1 << 0;
pub const BM_STS: u16 = 1 << 4;
pub const GBL: u16 = 1 << 5;
pub const PWRBTN: u16 = 1 << 8;
pub const SLPBTN: u16 = 1 << 9;
pub const RTC: u16 = 1 << 10;
pub const PCIEXP_WAKE: u16 = 1 << 14;
pub const WAK_STS: u16 = 1 << 15;
/// Status bits this device can set.
const STATUS_BITS: u16 = TMR | PWRBTN | WAK_STS;
/// Enable bits that are stored (and read back).
const ENABLE_BITS: u16 = TMR | GBL | PWRBTN | SLPBTN | RTC | PCIEXP_WAKE;
/// Status bits that raise the SCI when enabled.
const SCI_SOURCES: u16 = TMR | PWRBTN;

/// PM1_CNT bits (ACPI 6.5, 4.8.3.2.1).
pub const SCI_EN: u16 = 1 << 0;
pub const BM_RLD: u16 = 1 << 1;
pub const GBL_RLS: u16 = 1 << 2;
pub const SLP_TYP_SHIFT: u16 = 10;
pub const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
pub const SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that are stored (SCI_EN is always set, GBL_RLS and SLP_EN are write-only).
const CONTROL_BITS: u16 = BM_RLD | SLP_TYP_MASK;

/// The SLP_TYP values the DSDT's `\_S0` and `\_S5` packages give.
pub const SLP_TYP_S0: u8 = 0;
pub const SLP_TYP_S5: u8 = 5;

/// What a write asks of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Continue,
    /// SLP_TYP = S5 with SLP_EN: soft off. The run ends as a power-off.
    PowerOff,
}

/// Counters for `--stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PmStats {
    /// Reads of the PM timer.
    pub timer_reads: u64,
    /// Sleep requests for a state other than S0 and S5 (woken at once).
    pub unsupported_sleeps: u64,
    /// Accesses outside the block, or of a width other than 1, 2 or 4 (ignored).
    pub bad_accesses: u64,
}

/// The PM1a event and control registers and the PM timer.
#[derive(Debug, Clone, Default)]
pub struct AcpiPm {
    /// PM1_STS bits other than TMR_STS, which is computed (see `timer_epoch`).
    status: u16,
    enable: u16,
    /// PM1_CNT's stored bits (SLP_TYP, BM_RLD).
    control: u16,
    /// The timer's top-bit period count when TMR_STS was last cleared: TMR_STS is set
    /// while the current count differs.
    timer_epoch: u64,
    pub stats: PmStats,
}

/// PM timer ticks since the clock's origin (not wrapped).
fn ticks(now_ns: u64) -> u64 {
    (u128::from(now_ns) * u128::from(TIMER_HZ) / u128::from(NS_PER_S)) as u64
}

/// How many times the timer's top bit has changed by tick count `ticks`.
fn epoch(ticks: u64) -> u64 {
    ticks >> (TIMER_BITS - 1)
}

impl AcpiPm {
    /// The power-on state: nothing pending, nothing enabled, SCI_EN set, the timer at 0 at
    /// the clock's origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// The PM timer's value at `now_ns`.
    pub fn timer(&self, now_ns: u64) -> u32 {
        (ticks(now_ns) & TIMER_MASK) as u32
    }

    fn status(&self, now_ns: u64) -> u16 {
        let tmr = if epoch(ticks(now_ns)) != self.timer_epoch { TMR } else { 0 };
        self.status | tmr
    }

    /// The 16-bit register at `offset` (one of the four).
    fn register(&self, offset: u16, now_ns: u64) -> u16 {
        match offset {
            PM1_STS => self.status(now_ns),
            PM1_EN => self.enable,
            PM1_CNT => self.control | SCI_EN,
            _ => 0,
        }
    }

    /// Reads `data.len()` bytes (1, 2 or 4) at `offset` into the block. Bytes outside the
    /// block read 0xff, as an unclaimed port does; a bad width reads all ones and is
    /// counted.
    pub fn read(&mut self, offset: u16, data: &mut [u8], now_ns: u64) {
        if !matches!(data.len(), 1 | 2 | 4) || offset >= BLOCK_LEN {
            self.stats.bad_accesses += 1;
            data.fill(0xff);
            return;
        }
        // One snapshot of the timer for the whole access.
        let timer = self.timer(now_ns).to_le_bytes();
        if offset < PM_TMR + 4 && offset + data.len() as u16 > PM_TMR {
            self.stats.timer_reads += 1;
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i as u16;
            *byte = match at {
                _ if at >= BLOCK_LEN => 0xff,
                _ if at >= PM_TMR => timer[usize::from(at - PM_TMR)],
                _ => self.register(at & !1, now_ns).to_le_bytes()[usize::from(at & 1)],
            };
        }
    }

    /// Writes `data` (1, 2 or 4 bytes) at `offset` into the block, byte by byte (SLP_TYP
    /// and SLP_EN share PM1_CNT's high byte, so a sleep request is always whole).
    pub fn write(&mut self, offset: u16, data: &[u8], now_ns: u64) -> Effect {
        if !matches!(data.len(), 1 | 2 | 4) || offset >= BLOCK_LEN {
            self.stats.bad_accesses += 1;
            return Effect::Continue;
        }
        let mut effect = Effect::Continue;
        for (i, &byte) in data.iter().enumerate() {
            let at = offset + i as u16;
            let shift = 8 * (at & 1);
            let value = u16::from(byte) << shift;
            let lane = 0xffu16 << shift;
            match at & !1 {
                PM1_STS => self.clear_status(value & lane, now_ns),
                PM1_EN => self.enable = (self.enable & !lane) | (value & lane & ENABLE_BITS),
                PM1_CNT => {
                    self.control = (self.control & !lane) | (value & lane & CONTROL_BITS);
                    if value & SLP_EN != 0 && self.sleep() == Effect::PowerOff {
                        effect = Effect::PowerOff;
                    }
                }
                // The reserved word and the read-only timer.
                _ => {}
            }
        }
        effect
    }

    /// Write-1-to-clear of PM1_STS `bits`.
    fn clear_status(&mut self, bits: u16, now_ns: u64) {
        if bits & TMR != 0 {
            self.timer_epoch = epoch(ticks(now_ns));
        }
        self.status &= !(bits & STATUS_BITS);
    }

    /// SLP_EN was written: enter the state SLP_TYP names.
    fn sleep(&mut self) -> Effect {
        let slp_typ = ((self.control & SLP_TYP_MASK) >> SLP_TYP_SHIFT) as u8;
        match slp_typ {
            SLP_TYP_S5 => Effect::PowerOff,
            SLP_TYP_S0 => Effect::Continue,
            _ => {
                self.stats.unsupported_sleeps += 1;
                self.status |= WAK_STS;
                Effect::Continue
            }
        }
    }

    /// The power button was pressed (ACPI 6.5, 4.8.2.2.1.1, the fixed-feature button):
    /// PWRBTN_STS is set, and the SCI raised if PWRBTN_EN is.
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
    }

    /// Whether the SCI is asserted at `now_ns`: an enabled status bit is set (SCI_EN is
    /// always set). The SCI is level-triggered: it stays asserted until the guest clears
    /// the status bit or the enable.
    pub fn sci_level(&self, now_ns: u64) -> bool {
        self.status(now_ns) & self.enable & SCI_SOURCES != 0
    }

    /// When (in the clock's nanoseconds) the SCI will next rise without an access: with
    /// TMR_EN set and TMR_STS clear, when the timer's top bit next changes. `None` when
    /// nothing is due (the machine then needs no host timer for this device).
    pub fn next_timer_event(&self, now_ns: u64) -> Option<u64> {
        if self.enable & TMR == 0 || self.status(now_ns) & TMR != 0 {
            return None;
        }
        let next_epoch_tick = (self.timer_epoch + 1) << (TIMER_BITS - 1);
        // The first nanosecond at which ticks() reaches that count.
        let ns = (u128::from(next_epoch_tick) * u128::from(NS_PER_S)).div_ceil(u128::from(TIMER_HZ));
        Some(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = NS_PER_S;

    fn read16(pm: &mut AcpiPm, offset: u16, now: u64) -> u16 {
        let mut b = [0; 2];
        pm.read(offset, &mut b, now);
        u16::from_le_bytes(b)
    }

    fn read32(pm: &mut AcpiPm, offset: u16, now: u64) -> u32 {
        let mut b = [0; 4];
        pm.read(offset, &mut b, now);
        u32::from_le_bytes(b)
    }

    fn write16(pm: &mut AcpiPm, offset: u16, value: u16, now: u64) -> Effect {
        pm.write(offset, &value.to_le_bytes(), now)
    }

    #[test]
    fn the_timer_counts_at_3_579545_mhz_and_wraps_at_32_bits() {
        let mut pm = AcpiPm::new();
        assert_eq!(read32(&mut pm, PM_TMR, 0), 0);
        assert_eq!(read32(&mut pm, PM_TMR, SECOND), 3_579_545);
        assert_eq!(read32(&mut pm, PM_TMR, 1_000), 3, "3.58 ticks in a microsecond");
        // 2^32 ticks is 1199.86 s: a little later the count has wrapped.
        let wrap_ns = (1u128 << 32) * 1_000_000_000 / 3_579_545 + 1;
        let after = read32(&mut pm, PM_TMR, wrap_ns as u64 + SECOND);
        assert!((3_579_544..=3_579_546).contains(&after), "{after}");
        // The timer is read-only.
        pm.write(PM_TMR, &0u32.to_le_bytes(), SECOND);
        assert_eq!(read32(&mut pm, PM_TMR, SECOND), 3_579_545);
        assert_eq!(pm.stats.timer_reads, 5);
    }

    #[test]
    fn the_timer_is_monotonic_in_every_width() {
        let mut pm = AcpiPm::new();
        let (mut now, mut last) = (0u64, 0u32);
        for step in 0..10_000u64 {
            now += 1 + (step * 7_919) % 1_000_003;
            let v = read32(&mut pm, PM_TMR, now);
            assert!(v >= last, "{v} after {last} at {now} ns");
            last = v;
        }
        // Byte and word reads give the pieces of the same value.
        let now = 123_456_789_012;
        let whole = read32(&mut pm, PM_TMR, now);
        let lo = read16(&mut pm, PM_TMR, now);
        let hi = read16(&mut pm, PM_TMR + 2, now);
        assert_eq!(u32::from(lo) | u32::from(hi) << 16, whole);
        let mut b = [0];
        pm.read(PM_TMR + 3, &mut b, now);
        assert_eq!(b[0], (whole >> 24) as u8);
    }

    #[test]
    fn status_is_write_one_to_clear_and_enable_reads_back() {
        let mut pm = AcpiPm::new();
        assert_eq!(read16(&mut pm, PM1_STS, 0), 0);
        pm.press_power_button();
        assert_eq!(read16(&mut pm, PM1_STS, 0), PWRBTN);
        // Writing 0s, or 1s to other bits, clears nothing.
        write16(&mut pm, PM1_STS, 0, 0);
        write16(&mut pm, PM1_STS, WAK_STS | TMR, 0);
        assert_eq!(read16(&mut pm, PM1_STS, 0), PWRBTN);
        // A byte write of the high byte clears it.
        pm.write(PM1_STS + 1, &[(PWRBTN >> 8) as u8], 0);
        assert_eq!(read16(&mut pm, PM1_STS, 0), 0);

        write16(&mut pm, PM1_EN, 0xffff, 0);
        assert_eq!(read16(&mut pm, PM1_EN, 0), TMR | GBL | PWRBTN | SLPBTN | RTC | PCIEXP_WAKE);
        pm.write(PM1_EN, &[0], 0);
        assert_eq!(read16(&mut pm, PM1_EN, 0), PWRBTN | SLPBTN | RTC | PCIEXP_WAKE);
        // A 32-bit access covers status and enable at once, as ACPICA's PM1 event block.
        assert_eq!(read32(&mut pm, PM1_STS, 0), u32::from(PWRBTN | SLPBTN | RTC | PCIEXP_WAKE) << 16);
    }

    #[test]
    fn the_sci_follows_enabled_status() {
        let mut pm = AcpiPm::new();
        pm.press_power_button();
        assert!(!pm.sci_level(0), "not enabled");
        write16(&mut pm, PM1_EN, PWRBTN, 0);
        assert!(pm.sci_level(0));
        write16(&mut pm, PM1_STS, PWRBTN, 0);
        assert!(!pm.sci_level(0), "cleared");
        pm.press_power_button();
        write16(&mut pm, PM1_EN, 0, 0);
        assert!(!pm.sci_level(0), "disabled");
    }

    #[test]
    fn tmr_sts_sets_when_the_top_bit_changes() {
        let mut pm = AcpiPm::new();
        let half = 1u64 << 31; // ticks per top-bit change
        let at = |t: u64| (u128::from(t) * 1_000_000_000).div_ceil(u128::from(TIMER_HZ)) as u64;
        assert_eq!(read16(&mut pm, PM1_STS, at(half) - 1) & TMR, 0);
        assert_eq!(read16(&mut pm, PM1_STS, at(half)) & TMR, TMR);
        assert!(!pm.sci_level(at(half)), "TMR_EN clear");
        write16(&mut pm, PM1_EN, TMR, at(half));
        assert!(pm.sci_level(at(half)));
        assert_eq!(pm.next_timer_event(at(half)), None, "already pending");
        write16(&mut pm, PM1_STS, TMR, at(half) + 5);
        assert_eq!(read16(&mut pm, PM1_STS, at(half) + 5) & TMR, 0);
        assert!(!pm.sci_level(at(half) + 5));
        assert_eq!(pm.next_timer_event(at(half) + 5), Some(at(2 * half)));
        assert!(pm.sci_level(at(2 * half)));
        write16(&mut pm, PM1_EN, 0, 0);
        assert_eq!(pm.next_timer_event(0), None, "TMR_EN clear");
    }

    #[test]
    fn control_keeps_sci_en_and_slp_typ() {
        let mut pm = AcpiPm::new();
        assert_eq!(read16(&mut pm, PM1_CNT, 0), SCI_EN, "always in ACPI mode");
        // OSPM preserves SCI_EN; writing 0 there changes nothing.
        write16(&mut pm, PM1_CNT, 0, 0);
        assert_eq!(read16(&mut pm, PM1_CNT, 0), SCI_EN);
        // SLP_TYP is stored; SLP_EN and GBL_RLS read 0.
        let s5 = u16::from(SLP_TYP_S5) << SLP_TYP_SHIFT;
        assert_eq!(write16(&mut pm, PM1_CNT, s5 | GBL_RLS, 0), Effect::Continue);
        assert_eq!(read16(&mut pm, PM1_CNT, 0), SCI_EN | s5);
    }

    /// ACPICA's `acpi_hw_legacy_sleep` for S5: clear the status bits, write SLP_TYP, then
    /// SLP_TYP with SLP_EN (16-bit writes).
    #[test]
    fn s5_with_slp_en_powers_off() {
        let mut pm = AcpiPm::new();
        write16(&mut pm, PM1_STS, 0xffff, 0);
        let control = read16(&mut pm, PM1_CNT, 0) & !(SLP_TYP_MASK | SLP_EN);
        let s5 = control | u16::from(SLP_TYP_S5) << SLP_TYP_SHIFT;
        assert_eq!(write16(&mut pm, PM1_CNT, s5, 0), Effect::Continue);
        assert_eq!(write16(&mut pm, PM1_CNT, s5 | SLP_EN, 0), Effect::PowerOff);
        // The same request as a byte write of the high byte.
        let mut pm = AcpiPm::new();
        assert_eq!(pm.write(PM1_CNT + 1, &[((s5 | SLP_EN) >> 8) as u8], 0), Effect::PowerOff);
        // Or within a 32-bit write starting at PM1_EN.
        let mut pm = AcpiPm::new();
        let both = u32::from(s5 | SLP_EN) << 16;
        assert_eq!(pm.write(PM1_EN, &both.to_le_bytes(), 0), Effect::PowerOff);
    }

    #[test]
    fn other_sleep_states_wake_at_once() {
        let mut pm = AcpiPm::new();
        assert_eq!(write16(&mut pm, PM1_CNT, SLP_EN, 0), Effect::Continue, "S0 is the working state");
        assert_eq!(read16(&mut pm, PM1_STS, 0), 0);
        for slp_typ in [1u16, 2, 3, 4, 6, 7] {
            assert_eq!(write16(&mut pm, PM1_CNT, slp_typ << SLP_TYP_SHIFT | SLP_EN, 0), Effect::Continue);
            assert_eq!(read16(&mut pm, PM1_STS, 0) & WAK_STS, WAK_STS, "SLP_TYP {slp_typ}");
            write16(&mut pm, PM1_STS, WAK_STS, 0);
        }
        assert_eq!(pm.stats.unsupported_sleeps, 6);
    }

    #[test]
    fn bad_accesses_are_counted_never_fatal() {
        let mut pm = AcpiPm::new();
        let mut three = [0; 3];
        pm.read(PM1_STS, &mut three, 0);
        assert_eq!(three, [0xff; 3]);
        let mut b = [0; 2];
        pm.read(BLOCK_LEN, &mut b, 0);
        assert_eq!(b, [0xff; 2]);
        assert_eq!(pm.write(BLOCK_LEN + 1, &[0xff], 0), Effect::Continue);
        assert_eq!(pm.write(PM1_CNT, &[0xff; 8], 0), Effect::Continue);
        assert_eq!(pm.stats.bad_accesses, 4);
        // A 4-byte read at the block's last bytes: what is past the end reads 0xff.
        let mut four = [0; 4];
        pm.read(PM_TMR + 2, &mut four, SECOND);
        assert_eq!(&four[2..], &[0xff, 0xff]);
        // The reserved word.
        pm.read(0x6, &mut b, 0);
        assert_eq!(b, [0, 0]);
        // Every value at every offset and width: no panic.
        for offset in 0..BLOCK_LEN + 2 {
            for width in [1usize, 2, 4] {
                for value in [0u32, 0xffff_ffff, 0x2000_2000, 0x1400] {
                    let _ = pm.write(offset, &value.to_le_bytes()[..width], 0);
                    let mut data = vec![0; width];
                    pm.read(offset, &mut data, 0);
                }
            }
        }
    }
}
