//! The MC146818 real-time clock and its CMOS RAM, at ports 0x70 (index) and 0x71 (data).
//!
//! The guest writes a register number to port 0x70 and then reads or writes that register
//! through port 0x71. Bit 7 of the index byte is the PC's NMI-disable bit: it is
//! recorded ([`Cmos::nmi_disabled`]) but has no effect, since this machine raises no NMIs.
//! Port 0x70 itself is write-only on a PC; reading it returns 0xff, as an open bus does.
//!
//! # The clock
//!
//! The clock is not a counter of its own: every read of a time register computes the
//! value from the host's wall-clock time (`now_unix`, passed in by the caller) plus an
//! offset, which starts at 0 and which the guest changes by setting the clock. So the
//! guest sees UTC, the way Linux expects an RTC to be kept.
//!
//! - Registers 0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of the week (1 =
//!   Sunday), 0x07 day of the month, 0x08 month, 0x09 year within the century and 0x32
//!   century are encoded as status register B asks: BCD (the default) or binary (B bit
//!   2), 24-hour (B bit 1, the default) or 12-hour with bit 7 of the hour set after noon.
//! - Setting the clock: the values the guest writes to time registers are held as
//!   written and folded into the offset at the next read of port 0x71 (the first moment
//!   the device learns the host time again), so a guest that sets the clock sees it move
//!   on from the value it set. While the SET bit (B bit 7) is on, the clock is frozen:
//!   the first data read after SET is turned on latches the current time, all time
//!   registers then read back what the guest wrote, and turning SET off again starts the
//!   clock from those values. Held values that do not form a valid date and time (a BCD
//!   digit above 9, a 31st of February, an hour of 25, ...) are discarded when they would
//!   be folded in: the clock keeps its previous offset. The day of the week is always
//!   derived from the date; a value written to it only reads back while it is held.
//! - The alarm registers (0x01, 0x03, 0x05) are stored and read back, nothing more.
//! - Status A (0x0a): the divider and rate bits read back as written (default 0x26). The
//!   update-in-progress bit (bit 7) always reads 0: the registers are computed whole at
//!   each read and never change under the guest's feet within a read.
//! - Status B (0x0b): stored as written (default 0x02: 24-hour mode, BCD).
//! - Status C (0x0c): always reads 0, because this RTC raises no interrupts (no periodic,
//!   alarm or update-ended interrupt: IRQ 8 is never asserted). Writes are ignored.
//! - Status D (0x0d): always reads 0x80 (valid RAM and time). Writes are ignored.
//!
//! # The CMOS RAM
//!
//! Every other index up to 0x7f is a byte of battery-backed RAM, readable and writable.
//! At power-on it holds zeroes, except for the bytes PC BIOSes keep the memory size in
//! (see [`Cmos::new`]) and the standard checksum over 0x10..=0x2d at 0x2e (high byte)
//! and 0x2f (low byte), which the guest's writes do not update (as on real hardware,
//! where only the BIOS setup program does).

/// The index port (write-only): the register number, with bit 7 the NMI-disable bit.
pub const INDEX_PORT: u16 = 0x70;
/// The data port: reads and writes the register the index selects.
pub const DATA_PORT: u16 = 0x71;

/// What a read of the write-only index port returns.
const OPEN_BUS: u8 = 0xff;
/// The register-number bits of the index byte.
const INDEX_MASK: u8 = 0x7f;
/// The NMI-disable bit of the index byte.
const INDEX_NMI_DISABLE: u8 = 0x80;
/// Bytes of CMOS RAM, the RTC registers included.
const RAM_SIZE: usize = 128;

const REG_SECONDS: u8 = 0x00;
const REG_SECONDS_ALARM: u8 = 0x01;
const REG_MINUTES: u8 = 0x02;
const REG_MINUTES_ALARM: u8 = 0x03;
const REG_HOURS: u8 = 0x04;
const REG_HOURS_ALARM: u8 = 0x05;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
pub const REG_CENTURY: u8 = 0x32;

/// Status A: update in progress (read-only; always 0 here).
const STATUS_A_UIP: u8 = 0x80;
/// Status A at power-on: 32.768 kHz time base, 1024 Hz periodic rate.
const STATUS_A_DEFAULT: u8 = 0x26;
bitflags::bitflags! {
    /// Status B's flags that the clock follows (the others are kept as RAM).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct StatusB: u8 {
        /// SET: the clock is stopped while the guest sets it.
        const SET = 0x80;
        /// Data mode binary (clear: BCD).
        const BINARY = 0x04;
        /// 24-hour mode (clear: 12-hour mode).
        const H24 = 0x02;
        const _ = !0;
    }
}
/// Status B at power-on: 24-hour mode, BCD.
const STATUS_B_DEFAULT: StatusB = StatusB::H24;
/// Status C: no interrupt flags, ever.
const STATUS_C_VALUE: u8 = 0x00;
/// Status D: valid RAM and time (the battery is good).
const STATUS_D_VRT: u8 = 0x80;
/// The PM bit of the hour register in 12-hour mode.
const HOUR_PM: u8 = 0x80;

/// Base memory in KiB, low and high bytes.
const REG_BASE_MEM_LOW: u8 = 0x15;
const REG_BASE_MEM_HIGH: u8 = 0x16;
/// Extended memory above 1 MiB in KiB, low and high bytes (the AT's registers).
const REG_EXT_MEM_LOW: u8 = 0x17;
const REG_EXT_MEM_HIGH: u8 = 0x18;
/// Extended memory above 1 MiB in KiB again, as the BIOS's POST found it.
const REG_EXT_MEM2_LOW: u8 = 0x30;
const REG_EXT_MEM2_HIGH: u8 = 0x31;
/// Memory above 16 MiB in 64 KiB blocks, low and high bytes.
const REG_HIGH_MEM_LOW: u8 = 0x34;
const REG_HIGH_MEM_HIGH: u8 = 0x35;
/// The checksummed bytes and where the checksum goes (high byte first).
const CHECKSUM_FIRST: u8 = 0x10;
const CHECKSUM_LAST: u8 = 0x2d;
const REG_CHECKSUM_HIGH: u8 = 0x2e;
const REG_CHECKSUM_LOW: u8 = 0x2f;

/// Conventional memory, in KiB, the way every PC BIOS reports it.
const BASE_MEM_KIB: u64 = 640;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Where extended memory starts.
const EXT_MEM_START: u64 = MIB;
/// Where the 64 KiB-block count of registers 0x34/0x35 starts.
const HIGH_MEM_START: u64 = 16 * MIB;
const HIGH_MEM_BLOCK: u64 = 64 * KIB;
/// The most a 16-bit memory-size field holds.
const MEM_FIELD_MAX: u64 = 0xffff;

const SECS_PER_MINUTE: i64 = 60;
const SECS_PER_HOUR: i64 = 60 * SECS_PER_MINUTE;
const SECS_PER_DAY: i64 = 24 * SECS_PER_HOUR;
/// 1970-01-01 was a Thursday (Sunday = 0).
const EPOCH_WEEKDAY: i64 = 4;

/// The time registers, in the order of their bits in [`Cmos::held`].
const TIME_REGS: [u8; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_WEEKDAY,
    REG_DAY,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];
/// All time registers held.
const ALL_HELD: u8 = u8::MAX;

/// The CMOS RTC and RAM. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Cmos {
    /// The register the data port accesses.
    index: u8,
    /// The NMI-disable bit last written to the index port (kept, without effect).
    nmi_disabled: bool,
    /// The CMOS RAM. For the time registers it holds the guest's values only while their
    /// bits in `held` are set; status C and D are not stored.
    ram: [u8; RAM_SIZE],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// One bit per entry of [`TIME_REGS`]: the register's value is the one in `ram`
    /// (written by the guest, or latched while SET is on) instead of the running clock.
    held: u8,
}

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    /// 1..=12
    month: u8,
    /// 1..=31
    day: u8,
    /// 0..=23
    hour: u8,
    minute: u8,
    second: u8,
    /// 0 = Sunday .. 6 = Saturday
    weekday: u8,
}

impl Cmos {
    /// A CMOS with the clock running at host time and the RAM blank except for the
    /// memory size.
    ///
    /// `ram_bytes`: guest RAM size, reported in the CMOS memory-size bytes as PC BIOSes
    /// do: 0x15/0x16 base memory in KiB (640, or less if the guest has less RAM),
    /// 0x17/0x18 and 0x30/0x31 extended memory above 1 MiB in KiB, capped at 0xffff,
    /// and 0x34/0x35 memory above 16 MiB in 64 KiB blocks, capped at 0xffff. All
    /// little-endian; the checksum at 0x2e/0x2f covers them.
    pub fn new(ram_bytes: u64) -> Self {
        let mut ram = [0; RAM_SIZE];
        ram[usize::from(REG_STATUS_A)] = STATUS_A_DEFAULT;
        ram[usize::from(REG_STATUS_B)] = STATUS_B_DEFAULT.bits();

        let base_kib = (ram_bytes / KIB).min(BASE_MEM_KIB);
        let ext_kib = (ram_bytes.saturating_sub(EXT_MEM_START) / KIB).min(MEM_FIELD_MAX);
        let high_blocks =
            (ram_bytes.saturating_sub(HIGH_MEM_START) / HIGH_MEM_BLOCK).min(MEM_FIELD_MAX);
        for (low, high, value) in [
            (REG_BASE_MEM_LOW, REG_BASE_MEM_HIGH, base_kib),
            (REG_EXT_MEM_LOW, REG_EXT_MEM_HIGH, ext_kib),
            (REG_EXT_MEM2_LOW, REG_EXT_MEM2_HIGH, ext_kib),
            (REG_HIGH_MEM_LOW, REG_HIGH_MEM_HIGH, high_blocks),
        ] {
            let [lo, hi] = u16::try_from(value).unwrap_or(u16::MAX).to_le_bytes();
            ram[usize::from(low)] = lo;
            ram[usize::from(high)] = hi;
        }

        let sum: u16 = ram[usize::from(CHECKSUM_FIRST)..=usize::from(CHECKSUM_LAST)]
            .iter()
            .fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)));
        let [sum_hi, sum_lo] = sum.to_be_bytes();
        ram[usize::from(REG_CHECKSUM_HIGH)] = sum_hi;
        ram[usize::from(REG_CHECKSUM_LOW)] = sum_lo;

        Cmos {
            index: 0,
            nmi_disabled: false,
            ram,
            offset: 0,
            held: 0,
        }
    }

    /// Whether `port` is one of the CMOS's ports (0x70, 0x71).
    pub fn owns(port: u16) -> bool {
        port == INDEX_PORT || port == DATA_PORT
    }

    /// Whether the guest last wrote the index port with the NMI-disable bit set. It has
    /// no effect: the machine raises no NMIs.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// Reads a byte from `port`.
    ///
    /// `now_unix`: the host's wall-clock time in seconds since the epoch (UTC), passed in
    /// so tests can fix it. Ports the CMOS does not own read as 0xff.
    pub fn read(&mut self, port: u16, now_unix: i64) -> u8 {
        if port != DATA_PORT {
            return OPEN_BUS;
        }
        self.settle(now_unix);
        let index = self.index;
        match index {
            REG_STATUS_A => self.ram[usize::from(index)] & !STATUS_A_UIP,
            REG_STATUS_C => STATUS_C_VALUE,
            REG_STATUS_D => STATUS_D_VRT,
            // Stored, never compared with the time: no alarm interrupts.
            REG_SECONDS_ALARM | REG_MINUTES_ALARM | REG_HOURS_ALARM => self.ram[usize::from(index)],
            _ => match time_bit(index) {
                Some(bit) if self.held & bit == 0 => {
                    let now = from_unix(now_unix.saturating_add(self.offset));
                    self.encode_time_reg(index, &now)
                }
                _ => self.ram[usize::from(index)],
            },
        }
    }

    /// Writes a byte to `port`. Writes to ports the CMOS does not own are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            INDEX_PORT => {
                self.index = value & INDEX_MASK;
                self.nmi_disabled = value & INDEX_NMI_DISABLE != 0;
            }
            DATA_PORT => {
                let index = self.index;
                match index {
                    REG_STATUS_A => self.ram[usize::from(index)] = value & !STATUS_A_UIP,
                    REG_STATUS_C | REG_STATUS_D => {}
                    _ => {
                        if let Some(bit) = time_bit(index) {
                            self.held |= bit;
                        }
                        self.ram[usize::from(index)] = value;
                    }
                }
            }
            _ => {}
        }
    }

    fn status_b(&self) -> StatusB {
        StatusB::from_bits_retain(self.ram[usize::from(REG_STATUS_B)])
    }

    /// Brings the held time registers up to date with the host time `now_unix`: while
    /// SET is on, latches the running clock into the registers not yet held (freezing
    /// it); otherwise folds the held registers into the offset.
    fn settle(&mut self, now_unix: i64) {
        if self.status_b().contains(StatusB::SET) {
            if self.held != ALL_HELD {
                let now = from_unix(now_unix.saturating_add(self.offset));
                for (i, &reg) in TIME_REGS.iter().enumerate() {
                    if self.held & (1 << i) == 0 {
                        self.ram[usize::from(reg)] = self.encode_time_reg(reg, &now);
                    }
                }
                self.held = ALL_HELD;
            }
        } else if self.held != 0 {
            let now = from_unix(now_unix.saturating_add(self.offset));
            if let Some(set) = self.decode_held(&now) {
                self.offset = to_unix(&set).saturating_sub(now_unix);
            }
            self.held = 0;
        }
    }

    /// The date and time the held registers say, with the registers not held taken
    /// from `now`; `None` if they do not form a valid one.
    fn decode_held(&self, now: &DateTime) -> Option<DateTime> {
        let b = self.status_b();
        let binary = b.contains(StatusB::BINARY);
        let field = |reg: u8| -> Option<u8> {
            let bit = time_bit(reg)?;
            if self.held & bit == 0 {
                return None;
            }
            Some(self.ram[usize::from(reg)])
        };
        let number = |reg: u8, current: u8, max: u8| -> Option<u8> {
            match field(reg) {
                None => Some(current),
                Some(raw) => decode_number(raw, binary).filter(|&v| v <= max),
            }
        };
        let second = number(REG_SECONDS, now.second, 59)?;
        let minute = number(REG_MINUTES, now.minute, 59)?;
        let hour = match field(REG_HOURS) {
            None => now.hour,
            Some(raw) => decode_hour(raw, binary, b.contains(StatusB::H24))?,
        };
        let month = number(REG_MONTH, now.month, 12)?;
        let year_in_century = number(REG_YEAR, year_in_century(now.year), 99)?;
        let century = number(REG_CENTURY, century(now.year), 99)?;
        let year = i64::from(century) * 100 + i64::from(year_in_century);
        let day = number(REG_DAY, now.day, 31)?;
        if month == 0 || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday: weekday(days),
        })
    }

    /// Time register `reg` as the guest sees it for the time `now`.
    fn encode_time_reg(&self, reg: u8, now: &DateTime) -> u8 {
        let b = self.status_b();
        let binary = b.contains(StatusB::BINARY);
        match reg {
            REG_SECONDS => encode_number(now.second, binary),
            REG_MINUTES => encode_number(now.minute, binary),
            REG_HOURS => encode_hour(now.hour, binary, b.contains(StatusB::H24)),
            REG_WEEKDAY => encode_number(now.weekday + 1, binary),
            REG_DAY => encode_number(now.day, binary),
            REG_MONTH => encode_number(now.month, binary),
            REG_YEAR => encode_number(year_in_century(now.year), binary),
            REG_CENTURY => encode_number(century(now.year), binary),
            _ => self.ram[usize::from(reg)],
        }
    }
}

/// The bit of register `reg` in [`Cmos::held`], if it is a time register.
fn time_bit(reg: u8) -> Option<u8> {
    TIME_REGS.iter().position(|&r| r == reg).map(|i| 1 << i)
}

/// `value` (0..=99) in BCD or binary.
fn encode_number(value: u8, binary: bool) -> u8 {
    if binary {
        value
    } else {
        ((value / 10) << 4) | (value % 10)
    }
}

/// A register value in BCD or binary; `None` for a BCD digit above 9.
fn decode_number(raw: u8, binary: bool) -> Option<u8> {
    if binary {
        return Some(raw);
    }
    let (tens, ones) = (raw >> 4, raw & 0x0f);
    (tens <= 9 && ones <= 9).then_some(tens * 10 + ones)
}

/// The hour register for `hour` (0..=23).
fn encode_hour(hour: u8, binary: bool, h24: bool) -> u8 {
    if h24 {
        return encode_number(hour, binary);
    }
    let pm = if hour >= 12 { HOUR_PM } else { 0 };
    let h12 = match hour % 12 {
        0 => 12,
        h => h,
    };
    encode_number(h12, binary) | pm
}

/// The hour (0..=23) an hour register holds; `None` if it holds no valid hour.
fn decode_hour(raw: u8, binary: bool, h24: bool) -> Option<u8> {
    if h24 {
        return decode_number(raw, binary).filter(|&h| h <= 23);
    }
    let h12 = decode_number(raw & !HOUR_PM, binary).filter(|&h| (1..=12).contains(&h))?;
    let pm = if raw & HOUR_PM != 0 { 12 } else { 0 };
    Some(h12 % 12 + pm)
}

fn year_in_century(year: i64) -> u8 {
    // rem_euclid(100) is in 0..100: the conversion cannot fail.
    u8::try_from(year.rem_euclid(100)).unwrap_or(0)
}

fn century(year: i64) -> u8 {
    u8::try_from(year.div_euclid(100).rem_euclid(100)).unwrap_or(0)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1..=12) of `year`.
fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week (0 = Sunday) of the day `days` after 1970-01-01.
fn weekday(days: i64) -> u8 {
    u8::try_from((days + EPOCH_WEEKDAY).rem_euclid(7)).unwrap_or(0)
}

/// Days from 1970-01-01 to `year`-`month`-`day` of the proleptic Gregorian calendar
/// (negative before it). The days-from-civil algorithm: count in 400-year eras of
/// 146097 days, with years starting on March 1 so that the leap day ends them.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400; // 0..=399
    let march_month = if month > 2 { month - 3 } else { month + 9 }; // March = 0
    let day_of_year = (153 * march_month + 2) / 5 + day - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day) of the day `days` after
/// 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097; // 0..=146096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0..=11, March = 0
    let day = day_of_year - (153 * march_month + 2) / 5 + 1; // 1..=31
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // month is in 1..=12 and day in 1..=31 by construction.
    (
        year,
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// The UTC date and time `unix` seconds after the epoch.
fn from_unix(unix: i64) -> DateTime {
    // Keep days * SECS_PER_DAY and the era arithmetic far from overflowing.
    let days = unix.div_euclid(SECS_PER_DAY);
    let secs = unix.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let narrow = |v: i64| u8::try_from(v).unwrap_or(0);
    DateTime {
        year,
        month,
        day,
        hour: narrow(secs / SECS_PER_HOUR),
        minute: narrow(secs % SECS_PER_HOUR / SECS_PER_MINUTE),
        second: narrow(secs % SECS_PER_MINUTE),
        weekday: weekday(days),
    }
}

/// Seconds since the epoch of `t`.
fn to_unix(t: &DateTime) -> i64 {
    days_from_civil(t.year, t.month, t.day)
        .saturating_mul(SECS_PER_DAY)
        .saturating_add(i64::from(t.hour) * SECS_PER_HOUR)
        .saturating_add(i64::from(t.minute) * SECS_PER_MINUTE)
        .saturating_add(i64::from(t.second))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T_2026: i64 = 1_795_523_696; // 2026-11-24 12:34:56 UTC, a Tuesday
    const T_LEAP: i64 = 951_782_400; // 2000-02-29 00:00:00 UTC, a Tuesday
    const T_2099: i64 = 4_102_444_799; // 2099-12-31 23:59:59 UTC, a Thursday

    fn reg(c: &mut Cmos, index: u8, now: i64) -> u8 {
        c.write(INDEX_PORT, index);
        c.read(DATA_PORT, now)
    }

    fn set(c: &mut Cmos, index: u8, value: u8) {
        c.write(INDEX_PORT, index);
        c.write(DATA_PORT, value);
    }

    /// (century, year, month, day, weekday, hour, minute, second) as read.
    fn clock(c: &mut Cmos, now: i64) -> [u8; 8] {
        [
            REG_CENTURY,
            REG_YEAR,
            REG_MONTH,
            REG_DAY,
            REG_WEEKDAY,
            REG_HOURS,
            REG_MINUTES,
            REG_SECONDS,
        ]
        .map(|r| reg(c, r, now))
    }

    #[test]
    fn civil_conversions_at_known_dates() {
        let cases = [
            (0, (1970, 1, 1, 0, 0, 0), 4),
            (T_LEAP, (2000, 2, 29, 0, 0, 0), 2),
            (T_2026, (2026, 11, 24, 12, 34, 56), 2),
            (T_2099, (2099, 12, 31, 23, 59, 59), 4),
            (-1, (1969, 12, 31, 23, 59, 59), 3),
            (951_868_800, (2000, 3, 1, 0, 0, 0), 3),
        ];
        for (unix, (y, mo, d, h, mi, s), wd) in cases {
            let t = from_unix(unix);
            assert_eq!(
                (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
                (y, mo, d, h, mi, s, wd),
                "{unix}"
            );
            assert_eq!(to_unix(&t), unix);
        }
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        // Every day from 1600 to 2400 round-trips and the dates are consecutive.
        let first = days_from_civil(1600, 1, 1);
        let last = days_from_civil(2400, 12, 31);
        let mut prev = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(d >= 1 && d <= days_in_month(y, m));
            if d == 1 {
                assert!(prev.2 == days_in_month(prev.0, prev.1));
            } else {
                assert_eq!((prev.0, prev.1, prev.2 + 1), (y, m, d));
            }
            prev = (y, m, d);
        }
        // Extreme host times must not panic.
        for t in [i64::MIN, i64::MAX, i64::MIN / 2, i64::MAX / 2] {
            let _ = from_unix(t);
        }
    }

    #[test]
    fn reads_host_time_in_bcd_24h() {
        let mut c = Cmos::new(0);
        assert_eq!(
            clock(&mut c, T_2026),
            [0x20, 0x26, 0x11, 0x24, 0x03, 0x12, 0x34, 0x56]
        );
        assert_eq!(
            clock(&mut c, T_LEAP),
            [0x20, 0x00, 0x02, 0x29, 0x03, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            clock(&mut c, T_2099),
            [0x20, 0x99, 0x12, 0x31, 0x05, 0x23, 0x59, 0x59]
        );
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut c = Cmos::new(0);
        set(&mut c, REG_STATUS_B, (StatusB::H24 | StatusB::BINARY).bits());
        assert_eq!(clock(&mut c, T_2026), [20, 26, 11, 24, 3, 12, 34, 56]);

        set(&mut c, REG_STATUS_B, StatusB::BINARY.bits());
        assert_eq!(reg(&mut c, REG_HOURS, T_2026), 12 | HOUR_PM); // 12:34 PM
        assert_eq!(reg(&mut c, REG_HOURS, T_2026 - 12 * 3600), 12); // 00:34 = 12 AM
        assert_eq!(reg(&mut c, REG_HOURS, T_2099), 11 | HOUR_PM);

        set(&mut c, REG_STATUS_B, 0); // 12-hour BCD
        assert_eq!(reg(&mut c, REG_HOURS, T_2099), 0x11 | HOUR_PM);
        assert_eq!(reg(&mut c, REG_HOURS, T_2026 - 2 * 3600), 0x10); // 10 AM
        assert_eq!(reg(&mut c, REG_HOURS, T_2026), 0x12 | HOUR_PM);
    }

    #[test]
    fn hour_encoding_round_trips() {
        for binary in [false, true] {
            for h24 in [false, true] {
                for hour in 0..24 {
                    let raw = encode_hour(hour, binary, h24);
                    assert_eq!(decode_hour(raw, binary, h24), Some(hour));
                }
            }
        }
        assert_eq!(decode_hour(0x00, false, false), None); // no hour 0 in 12-hour mode
        assert_eq!(decode_hour(0x13, false, false), None);
        assert_eq!(decode_hour(0x24, false, true), None);
        assert_eq!(decode_hour(0x1a, false, true), None); // not BCD
    }

    #[test]
    fn status_registers() {
        let mut c = Cmos::new(0);
        assert_eq!(reg(&mut c, REG_STATUS_A, 0), STATUS_A_DEFAULT);
        assert_eq!(reg(&mut c, REG_STATUS_B, 0), STATUS_B_DEFAULT.bits());
        assert_eq!(reg(&mut c, REG_STATUS_C, 0), 0);
        assert_eq!(reg(&mut c, REG_STATUS_D, 0), STATUS_D_VRT);

        set(&mut c, REG_STATUS_A, 0xff); // UIP is read-only
        assert_eq!(reg(&mut c, REG_STATUS_A, 0), 0x7f);
        set(&mut c, REG_STATUS_C, 0xff);
        set(&mut c, REG_STATUS_D, 0x00);
        assert_eq!(reg(&mut c, REG_STATUS_C, 0), 0);
        assert_eq!(reg(&mut c, REG_STATUS_D, 0), STATUS_D_VRT);
    }

    #[test]
    fn alarms_and_ram_are_stored_and_nmi_bit_is_ignored() {
        let mut c = Cmos::new(0);
        let registers = [REG_SECONDS_ALARM, REG_MINUTES_ALARM, REG_HOURS_ALARM, 0x40, 0x7f];
        for (i, r) in registers.into_iter().enumerate()
        {
            set(&mut c, r, 0xa0 + i as u8);
        }
        // With the NMI-disable bit set, the same registers are reached.
        for (i, r) in registers.into_iter().enumerate()
        {
            c.write(INDEX_PORT, r | INDEX_NMI_DISABLE);
            assert!(c.nmi_disabled());
            assert_eq!(c.read(DATA_PORT, T_2026), 0xa0 + i as u8);
        }
        c.write(INDEX_PORT, 0x40);
        assert!(!c.nmi_disabled());
        assert_eq!(c.read(INDEX_PORT, T_2026), OPEN_BUS);
        // The clock still runs.
        assert_eq!(reg(&mut c, REG_SECONDS, T_2026), 0x56);
        // Ports it does not own.
        c.write(0x72, 0x12);
        assert_eq!(c.read(0x72, 0), OPEN_BUS);
        assert!(Cmos::owns(0x70) && Cmos::owns(0x71));
        assert!(!Cmos::owns(0x72) && !Cmos::owns(0x6f));
    }

    #[test]
    fn memory_size_bytes() {
        let word = |c: &mut Cmos, low: u8| u16::from_le_bytes([reg(c, low, 0), reg(c, low + 1, 0)]);
        let mut c = Cmos::new(32 * MIB);
        assert_eq!(word(&mut c, REG_BASE_MEM_LOW), 640);
        assert_eq!(word(&mut c, REG_EXT_MEM_LOW), 31 * 1024);
        assert_eq!(word(&mut c, REG_EXT_MEM2_LOW), 31 * 1024);
        assert_eq!(word(&mut c, REG_HIGH_MEM_LOW), 16 * 16);
        let sum: u16 = (CHECKSUM_FIRST..=CHECKSUM_LAST)
            .map(|r| u16::from(reg(&mut c, r, 0)))
            .sum();
        assert_eq!(
            u16::from_be_bytes([
                reg(&mut c, REG_CHECKSUM_HIGH, 0),
                reg(&mut c, REG_CHECKSUM_LOW, 0)
            ]),
            sum
        );

        let mut c = Cmos::new(128 * MIB);
        assert_eq!(word(&mut c, REG_EXT_MEM_LOW), 0xffff);
        assert_eq!(word(&mut c, REG_EXT_MEM2_LOW), 0xffff);
        assert_eq!(word(&mut c, REG_HIGH_MEM_LOW), 112 * 16);
        let mut c = Cmos::new(3 * 1024 * MIB);
        assert_eq!(word(&mut c, REG_EXT_MEM_LOW), 0xffff);
        assert_eq!(
            word(&mut c, REG_HIGH_MEM_LOW),
            ((3 * 1024 - 16) * 16) as u16
        );
        let mut c = Cmos::new(u64::MAX);
        assert_eq!(word(&mut c, REG_HIGH_MEM_LOW), 0xffff);

        let mut c = Cmos::new(512 * KIB);
        assert_eq!(word(&mut c, REG_BASE_MEM_LOW), 512);
        assert_eq!(word(&mut c, REG_EXT_MEM_LOW), 0);
        assert_eq!(word(&mut c, REG_HIGH_MEM_LOW), 0);
    }

    #[test]
    fn setting_the_clock_with_set_bit() {
        let mut c = Cmos::new(0);
        let now = T_2026;
        // The Linux sequence: SET on, write the fields, SET off.
        let b = reg(&mut c, REG_STATUS_B, now);
        set(&mut c, REG_STATUS_B, b | StatusB::SET.bits());
        // Frozen: the first read latches the time; it does not move on.
        assert_eq!(reg(&mut c, REG_SECONDS, now), 0x56);
        assert_eq!(reg(&mut c, REG_SECONDS, now + 5), 0x56);
        for (r, v) in [
            (REG_SECONDS, 0x59),
            (REG_MINUTES, 0x59),
            (REG_HOURS, 0x23),
            (REG_DAY, 0x31),
            (REG_MONTH, 0x12),
            (REG_YEAR, 0x99),
            (REG_CENTURY, 0x20),
        ] {
            set(&mut c, r, v);
        }
        assert_eq!(reg(&mut c, REG_MINUTES, now + 7), 0x59);
        set(&mut c, REG_STATUS_B, b);
        // The clock runs on from what was set.
        assert_eq!(
            clock(&mut c, now + 10),
            [0x20, 0x99, 0x12, 0x31, 0x05, 0x23, 0x59, 0x59]
        );
        assert_eq!(
            clock(&mut c, now + 11),
            [0x21, 0x00, 0x01, 0x01, 0x06, 0x00, 0x00, 0x00]
        );
        assert_eq!(c.offset, T_2099 - (now + 10));
    }

    #[test]
    fn setting_the_clock_without_set_bit() {
        let mut c = Cmos::new(0);
        let now = T_2026;
        // A date that is only valid once both fields are in: Nov 24 -> Feb 29 2000 ...
        set(&mut c, REG_DAY, 0x29);
        set(&mut c, REG_MONTH, 0x02);
        set(&mut c, REG_YEAR, 0x00);
        assert_eq!(
            clock(&mut c, now),
            [0x20, 0x00, 0x02, 0x29, 0x03, 0x12, 0x34, 0x56]
        );
        assert_eq!(reg(&mut c, REG_SECONDS, now + 4), 0x00);
        assert_eq!(reg(&mut c, REG_MINUTES, now + 4), 0x35);

        // Binary mode writes are decoded in binary.
        set(&mut c, REG_STATUS_B, (StatusB::H24 | StatusB::BINARY).bits());
        set(&mut c, REG_HOURS, 7);
        assert_eq!(reg(&mut c, REG_HOURS, now + 4), 7);
        assert_eq!(reg(&mut c, REG_DAY, now + 4), 29);
    }

    #[test]
    fn invalid_settings_are_discarded() {
        let mut c = Cmos::new(0);
        let now = T_2026;
        for (r, v) in [
            (REG_DAY, 0x31),     // 31 November
            (REG_MONTH, 0x13),   // month 13
            (REG_HOURS, 0x24),   // hour 24
            (REG_SECONDS, 0x5a), // not BCD
            (REG_MINUTES, 0xff),
            (REG_YEAR, 0xa0),
            (REG_DAY, 0x00),
            (REG_MONTH, 0x00),
        ] {
            set(&mut c, r, v);
            assert_eq!(
                clock(&mut c, now),
                [0x20, 0x26, 0x11, 0x24, 0x03, 0x12, 0x34, 0x56],
                "register {r:#x} = {v:#x}"
            );
        }
        // 29 February of a year that is not a leap year.
        set(&mut c, REG_STATUS_B, (STATUS_B_DEFAULT | StatusB::SET).bits());
        set(&mut c, REG_MONTH, 0x02);
        set(&mut c, REG_DAY, 0x29);
        set(&mut c, REG_YEAR, 0x23);
        set(&mut c, REG_STATUS_B, STATUS_B_DEFAULT.bits());
        assert_eq!(reg(&mut c, REG_YEAR, now), 0x26);
        // The weekday is derived from the date; a write only shows while SET holds it.
        set(&mut c, REG_WEEKDAY, 0x07);
        assert_eq!(reg(&mut c, REG_WEEKDAY, now), 0x03);
        set(&mut c, REG_STATUS_B, (STATUS_B_DEFAULT | StatusB::SET).bits());
        set(&mut c, REG_WEEKDAY, 0x07);
        assert_eq!(reg(&mut c, REG_WEEKDAY, now), 0x07);
        set(&mut c, REG_STATUS_B, STATUS_B_DEFAULT.bits());
        assert_eq!(reg(&mut c, REG_WEEKDAY, now), 0x03);
    }

    #[test]
    fn every_register_and_value_is_safe() {
        for b in [0x00, 0x02, 0x04, 0x06, 0x80, 0x86, 0xff] {
            let mut c = Cmos::new(64 * MIB);
            set(&mut c, REG_STATUS_B, b);
            for index in 0..=u8::MAX {
                for value in [0x00, 0x09, 0x12, 0x59, 0x7f, 0x80, 0x99, 0xff] {
                    c.write(INDEX_PORT, index);
                    c.write(DATA_PORT, value);
                    let _ = c.read(DATA_PORT, T_2026);
                    let _ = c.read(DATA_PORT, i64::MAX);
                    let _ = c.read(DATA_PORT, i64::MIN);
                }
            }
        }
    }
}
