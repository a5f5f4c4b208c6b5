//! The Intel 8254 programmable interval timer (ports 0x40-0x43) and the PC's system control
//! port B (0x61), as a state machine driven by the machine's clock: every call passes
//! `now_ns`, and counter values and OUT levels are computed from the time elapsed since the
//! count was loaded at [`PIT_HZ`], never from the number of calls.
//!
//! Channel 0's OUT is IRQ0 ([`Pit::irq0_timer`], [`Pit::irq0_edges`]); channel 2's gate and
//! OUT are bits 0 and 5 of port 0x61 (Linux calibrates the TSC with them). Modes 0-5 are
//! emulated (6 and 7 are 2 and 3), in binary or BCD.
//!
//! What happens when the guest does something odd:
//! - **Half-way 16-bit reads** (LSB/MSB access): the read flip-flop stays on the MSB, so the
//!   next read gives the MSB of the count *at that later time*, as on the chip. A latched
//!   count has its own LSB-then-MSB sequence, independent of a half-done live read (as in
//!   QEMU), and is held until fully read; a second latch command meanwhile is ignored. A
//!   latched status is read before a latched count. A control word resets both flip-flops
//!   and drops the latches.
//! - **Half-way 16-bit writes**: in mode 0 the first byte stops the counter (OUT low) until
//!   the second arrives; in the other modes the counter runs on with its old count.
//! - **Counts**: 0 means 65536 (10000 in BCD). 1 is illegal in modes 2 and 3 and counts as
//!   2 there. BCD digits above 9 are taken at face value (modulo 10000).
//! - **A new count without a control word** restarts the count at once in modes 0, 2, 3 and
//!   4 (in modes 2 and 3 the chip would wait for the end of the period; QEMU and KVM do
//!   not either); in modes 1 and 5 it is used from the next gate trigger, as on the chip.
//! - **Counting starts at the write** of the last count byte (the chip waits for the next
//!   input clock): mode 0's OUT rises N clocks later, mode 4's pulses low at N.
//! - **Channel 1** (DRAM refresh on old PCs) is emulated like the others with its gate tied
//!   high, and its OUT goes nowhere. Channel 0's gate is tied high too, so modes 1 and 5
//!   never trigger on channels 0 and 1.
//! - **Very fast rates** (down to one edge every two clocks): `irq0_timer` stays exact and
//!   the machine clamps its host timer to [`MIN_IRQ0_PERIOD_NS`]; [`Pit::irq0_hz`] gives the
//!   programmed rate for its message, and `irq0_edges` counts the edges it could not deliver.
//! - **Port 0x61** reads bits 0-3 as last written (gate 2, speaker, parity and channel check
//!   enables), bit 4 the refresh toggle, derived from time (it flips every 15.085 us), bit 5
//!   channel 2's OUT, bits 6 and 7 as 0 (no parity or I/O channel errors). Writes to bits 4-7
//!   are ignored.
//! - **Elsewhere**: port 0x43 reads as 0xff; a time earlier than a count's start counts as
//!   its start; at power-on every channel is in mode 0 with no count: OUT low, reads 0, no
//!   IRQ0. No guest input panics.

/// The 8254's input clock on a PC, in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Shortest host-timer period the machine should arm for IRQ0 (10 kHz): faster periodic
/// rates come from a hostile or confused guest.
pub const MIN_IRQ0_PERIOD_NS: u64 = 100_000;

const NS_PER_SEC: u128 = 1_000_000_000;
const PORT_COUNTER0: u16 = 0x40;
const PORT_COUNTER2: u16 = 0x42;
const PORT_CONTROL: u16 = 0x43;
const PORT_B: u16 = 0x61;
const CHANNELS: usize = 3;
const IRQ0_CHANNEL: usize = 0;
const SPEAKER_CHANNEL: usize = 2;
/// What reads of the write-only control port return.
const OPEN_BUS: u8 = 0xff;

/// Control word: bits 7-6 select the channel, 5-4 the access mode, 3-1 the mode, 0 BCD.
const CW_SELECT_SHIFT: u8 = 6;
const CW_ACCESS_SHIFT: u8 = 4;
const CW_MODE_SHIFT: u8 = 1;
const CW_MODE_MASK: u8 = 0b111;
const CW_BCD: u8 = 0x01;
/// Access mode, mode and BCD: what a control word sets and the status byte reports.
const CW_SETTINGS: u8 = 0x3f;
const SELECT_READ_BACK: u8 = 3;
const ACCESS_LATCH: u8 = 0;
const ACCESS_LSB: u8 = 1;
const ACCESS_MSB: u8 = 2;
const ACCESS_WORD: u8 = 3;
/// Read-back command: these bits *clear* latch the count / the status; bit 1 + n selects
/// channel n.
const READ_BACK_NO_COUNT: u8 = 0x20;
const READ_BACK_NO_STATUS: u8 = 0x10;
const READ_BACK_CHANNEL0: u8 = 0x02;
const STATUS_OUT: u8 = 0x80;
const STATUS_NULL_COUNT: u8 = 0x40;

const PORT_B_GATE2: u8 = 0x01;
/// Bits of port 0x61 kept as written: gate 2, speaker data, parity and channel check enables.
const PORT_B_WRITABLE: u8 = 0x0f;
const PORT_B_REFRESH: u8 = 0x10;
const PORT_B_OUT2: u8 = 0x20;
/// Time between flips of port 0x61 bit 4: one DRAM refresh period (18 clocks).
const REFRESH_TOGGLE_NS: u64 = 15_085;

const BINARY_MODULUS: u64 = 0x1_0000;
const BCD_MODULUS: u64 = 10_000;
const BCD_DIGITS: u32 = 4;
const NIBBLE: u32 = 4;
const NIBBLE_MASK: u16 = 0xf;
const DECIMAL: u64 = 10;

/// Whole input clocks in `ns` nanoseconds.
fn ticks_in(ns: u64) -> u64 {
    u64::try_from(u128::from(ns) * u128::from(PIT_HZ) / NS_PER_SEC).unwrap_or(u64::MAX)
}

/// Nanoseconds until the `ticks`-th input clock: the first `ns` with `ticks_in(ns) >= ticks`.
fn ns_until(ticks: u64) -> u64 {
    u64::try_from((u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PIT_HZ))).unwrap_or(u64::MAX)
}

fn from_bcd(bcd: u16) -> u64 {
    let digits = (0..BCD_DIGITS).rev().map(|i| u64::from((bcd >> (i * NIBBLE)) & NIBBLE_MASK));
    digits.fold(0, |value, digit| value * DECIMAL + digit) % BCD_MODULUS
}

fn to_bcd(value: u64) -> u16 {
    let mut rest = value % BCD_MODULUS;
    let mut bcd = 0;
    for i in 0..BCD_DIGITS {
        bcd |= u16::try_from(rest % DECIMAL).unwrap_or(0) << (i * NIBBLE);
        rest /= DECIMAL;
    }
    bcd
}

/// How IRQ0 should be timed: the next rising edge of OUT0, and the period if periodic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqTimer {
    pub next_ns: u64,
    pub period_ns: Option<u64>,
}

/// A count loaded into the counting element.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// The initial count N in clocks (1..=65536).
    count: u64,
    /// When the clocks counted since `ticks_before` started.
    origin_ns: u64,
    /// Clocks counted before the gate last stopped the count.
    ticks_before: u64,
    /// False while a low gate suspends counting.
    running: bool,
}

impl Run {
    fn ticks(&self, now_ns: u64) -> u64 {
        let since = if self.running { ticks_in(now_ns.saturating_sub(self.origin_ns)) } else { 0 };
        self.ticks_before.saturating_add(since)
    }

    /// When the `tick`-th clock of this count happens (only meaningful while running).
    fn time_of(&self, tick: u64) -> u64 {
        self.origin_ns.saturating_add(ns_until(tick.saturating_sub(self.ticks_before)))
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// No complete count since the control word: the counter shows `held`.
    NoCount { held: u16 },
    /// Modes 1 and 5: count written, waiting for a rising gate.
    Armed { held: u16 },
    Loaded(Run),
}

/// A latched count and which of its bytes is read next.
#[derive(Clone, Copy, Debug)]
struct Latched {
    value: u16,
    msb_next: bool,
}

#[derive(Clone, Debug)]
struct Channel {
    /// The last control word's access mode, mode and BCD bits.
    settings: u8,
    /// The count register as the guest wrote it.
    reload: u16,
    phase: Phase,
    gate: bool,
    null_count: bool,
    /// First byte of a two-byte count, waiting for the second.
    write_lsb: Option<u8>,
    read_msb_next: bool,
    latch: Option<Latched>,
    status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            settings: ACCESS_WORD << CW_ACCESS_SHIFT,
            reload: 0,
            phase: Phase::NoCount { held: 0 },
            gate,
            null_count: true,
            write_lsb: None,
            read_msb_next: false,
            latch: None,
            status: None,
        }
    }

    fn access(&self) -> u8 {
        self.settings >> CW_ACCESS_SHIFT
    }

    /// 0-5: modes 6 and 7 are 2 and 3.
    fn mode(&self) -> u8 {
        match (self.settings >> CW_MODE_SHIFT) & CW_MODE_MASK {
            6 => 2,
            7 => 3,
            mode => mode,
        }
    }

    fn periodic(&self) -> bool {
        matches!(self.mode(), 2 | 3)
    }

    fn bcd(&self) -> bool {
        self.settings & CW_BCD != 0
    }

    fn modulus(&self) -> u64 {
        if self.bcd() { BCD_MODULUS } else { BINARY_MODULUS }
    }

    /// The initial count N in clocks, from the count register.
    fn initial_count(&self) -> u64 {
        let written = if self.bcd() { from_bcd(self.reload) } else { u64::from(self.reload) };
        match written {
            0 => self.modulus(),
            1 if self.periodic() => 2,
            n => n,
        }
    }

    /// The counter as the guest reads it (BCD-encoded in BCD mode).
    fn value(&self, now_ns: u64) -> u16 {
        let run = match self.phase {
            Phase::NoCount { held } | Phase::Armed { held } => return held,
            Phase::Loaded(run) => run,
        };
        let (t, n, modulus) = (run.ticks(now_ns), run.count, self.modulus());
        let count = match self.mode() {
            2 => n - t % n,
            3 => {
                let (phase, high) = (t % n, n.div_ceil(2));
                let into_half = if phase < high { phase } else { phase - high };
                (n - 2 * into_half) & !1
            }
            // The one-shot modes wrap around and keep counting down.
            _ => (n + modulus - t % modulus) % modulus,
        } % modulus;
        if self.bcd() { to_bcd(count) } else { u16::try_from(count).unwrap_or(0) }
    }

    fn out(&self, now_ns: u64) -> bool {
        let run = match self.phase {
            Phase::NoCount { .. } => return self.mode() != 0,
            Phase::Armed { .. } => return true,
            Phase::Loaded(run) => run,
        };
        let (t, n) = (run.ticks(now_ns), run.count);
        match self.mode() {
            0 | 1 => t >= n,
            2 => !run.running || t % n != n - 1,
            3 => !run.running || t % n < n.div_ceil(2),
            _ => t != n,
        }
    }

    /// The first rising edge of OUT after clock `tick`, as a clock number.
    fn next_edge(&self, run: &Run, tick: u64) -> Option<u64> {
        let n = run.count;
        match self.mode() {
            2 | 3 => Some((tick / n + 1) * n),
            0 | 1 => (tick < n).then_some(n),
            _ => (tick <= n).then_some(n + 1),
        }
    }

    /// Rising edges of OUT at clocks in (from, to].
    fn edges(&self, run: &Run, from: u64, to: u64) -> u64 {
        if to <= from {
            return 0;
        }
        match self.mode() {
            2 | 3 => to / run.count - from / run.count,
            _ => self.next_edge(run, from).map_or(0, |edge| u64::from(edge <= to)),
        }
    }

    /// Loads the count register into the counting element.
    fn start(&mut self, now_ns: u64) {
        let running = self.gate || matches!(self.mode(), 1 | 5);
        let run = Run { count: self.initial_count(), origin_ns: now_ns, ticks_before: 0, running };
        self.phase = Phase::Loaded(run);
        self.null_count = false;
    }

    fn program(&mut self, settings: u8, now_ns: u64) {
        let held = self.value(now_ns);
        *self = Channel { settings, phase: Phase::NoCount { held }, ..Channel::new(self.gate) };
    }

    fn write(&mut self, byte: u8, now_ns: u64) {
        self.reload = match self.access() {
            ACCESS_LSB => u16::from(byte),
            ACCESS_MSB => u16::from(byte) << 8,
            _ => match self.write_lsb.take() {
                Some(lsb) => u16::from_le_bytes([lsb, byte]),
                None => {
                    self.write_lsb = Some(byte);
                    if self.mode() == 0 {
                        self.phase = Phase::NoCount { held: self.value(now_ns) };
                    }
                    return;
                }
            },
        };
        self.null_count = true;
        match (self.mode(), self.phase) {
            (1 | 5, Phase::NoCount { held }) => self.phase = Phase::Armed { held },
            (1 | 5, _) => {}
            _ => self.start(now_ns),
        }
    }

    /// Picks the byte of `value` that `access` and the flip-flop say; true once done.
    fn byte_of(access: u8, value: u16, msb_next: &mut bool) -> (u8, bool) {
        let [lsb, msb] = value.to_le_bytes();
        match access {
            ACCESS_LSB => (lsb, true),
            ACCESS_MSB => (msb, true),
            _ => {
                let msb_now = *msb_next;
                *msb_next = !msb_now;
                if msb_now { (msb, true) } else { (lsb, false) }
            }
        }
    }

    fn read(&mut self, now_ns: u64) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        let access = self.access();
        if let Some(mut latched) = self.latch {
            let (byte, done) = Self::byte_of(access, latched.value, &mut latched.msb_next);
            self.latch = if done { None } else { Some(latched) };
            return byte;
        }
        let value = self.value(now_ns);
        Self::byte_of(access, value, &mut self.read_msb_next).0
    }

    fn latch_count(&mut self, now_ns: u64) {
        if self.latch.is_none() {
            self.latch = Some(Latched { value: self.value(now_ns), msb_next: false });
        }
    }

    fn latch_status(&mut self, now_ns: u64) {
        if self.status.is_none() {
            let out = if self.out(now_ns) { STATUS_OUT } else { 0 };
            let null = if self.null_count { STATUS_NULL_COUNT } else { 0 };
            self.status = Some(out | null | self.settings);
        }
    }

    fn set_gate(&mut self, gate: bool, now_ns: u64) {
        let rising = gate && !self.gate;
        let falling = !gate && self.gate;
        self.gate = gate;
        match (self.mode(), &mut self.phase) {
            (_, Phase::NoCount { .. }) => {}
            (1 | 5, _) | (2 | 3, Phase::Loaded(_)) if rising => self.start(now_ns),
            (0 | 4, Phase::Loaded(run)) if rising => {
                run.origin_ns = now_ns;
                run.running = true;
            }
            (0 | 2 | 3 | 4, Phase::Loaded(run)) if falling => {
                run.ticks_before = run.ticks(now_ns);
                run.running = false;
            }
            _ => {}
        }
    }
}

/// The 8254 PIT and port 0x61.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [Channel; CHANNELS],
    /// Port 0x61's writable bits as last written.
    port_b: u8,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    pub fn new() -> Self {
        // Gates 0 and 1 are tied high; gate 2 is port 0x61 bit 0, 0 at reset.
        Pit { channels: [Channel::new(true), Channel::new(true), Channel::new(false)], port_b: 0 }
    }

    /// Whether `port` is one of the PIT's (0x40-0x43) or port B (0x61).
    pub fn owns(port: u16) -> bool {
        (PORT_COUNTER0..=PORT_CONTROL).contains(&port) || port == PORT_B
    }

    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        match port {
            PORT_COUNTER0..=PORT_COUNTER2 => {
                self.channels[usize::from(port - PORT_COUNTER0)].read(now_ns)
            }
            PORT_B => {
                let toggled = (now_ns / REFRESH_TOGGLE_NS) % 2 == 1;
                let refresh = if toggled { PORT_B_REFRESH } else { 0 };
                let out2 = if self.out(SPEAKER_CHANNEL, now_ns) { PORT_B_OUT2 } else { 0 };
                self.port_b | refresh | out2
            }
            _ => OPEN_BUS,
        }
    }

    pub fn write(&mut self, port: u16, value: u8, now_ns: u64) {
        match port {
            PORT_COUNTER0..=PORT_COUNTER2 => {
                self.channels[usize::from(port - PORT_COUNTER0)].write(value, now_ns)
            }
            PORT_CONTROL => self.write_control(value, now_ns),
            PORT_B => {
                self.port_b = value & PORT_B_WRITABLE;
                self.channels[SPEAKER_CHANNEL].set_gate(value & PORT_B_GATE2 != 0, now_ns);
            }
            _ => {}
        }
    }

    fn write_control(&mut self, value: u8, now_ns: u64) {
        let select = value >> CW_SELECT_SHIFT;
        if select == SELECT_READ_BACK {
            for (i, channel) in self.channels.iter_mut().enumerate() {
                if value & (READ_BACK_CHANNEL0 << i) == 0 {
                    continue;
                }
                if value & READ_BACK_NO_COUNT == 0 {
                    channel.latch_count(now_ns);
                }
                if value & READ_BACK_NO_STATUS == 0 {
                    channel.latch_status(now_ns);
                }
            }
            return;
        }
        let channel = &mut self.channels[usize::from(select)];
        if (value >> CW_ACCESS_SHIFT) & ACCESS_WORD == ACCESS_LATCH {
            channel.latch_count(now_ns);
        } else {
            channel.program(value & CW_SETTINGS, now_ns);
        }
    }

    /// The level of channel `channel`'s OUT (false for a channel that does not exist).
    pub fn out(&self, channel: usize, now_ns: u64) -> bool {
        self.channels.get(channel).is_some_and(|c| c.out(now_ns))
    }

    /// Channel 0's count, if it is loaded and counting.
    fn irq0_run(&self) -> Option<(&Channel, Run)> {
        let channel = &self.channels[IRQ0_CHANNEL];
        match channel.phase {
            Phase::Loaded(run) if run.running => Some((channel, run)),
            _ => None,
        }
    }

    /// Channel 0 drives IRQ0 on the rising edges of its OUT. How the machine should arm its
    /// host timer for channel 0 as currently programmed: None if channel 0 produces no more
    /// edges (not programmed, one-shot already fired); otherwise the time of the next rising
    /// edge of OUT0 at or after `now_ns`, and the period for periodic modes (2 and 3), None
    /// for one-shot modes (0, 4). Exact even for absurd rates: the machine clamps.
    pub fn irq0_timer(&self, now_ns: u64) -> Option<IrqTimer> {
        let (channel, run) = self.irq0_run()?;
        // An edge is at or after now iff its clock comes after the clocks before now.
        let next = channel.next_edge(&run, run.ticks(now_ns.saturating_sub(1)))?;
        let period_ns = channel.periodic().then(|| {
            let hz = u128::from(PIT_HZ);
            let ns = (u128::from(run.count) * NS_PER_SEC + hz / 2) / hz;
            u64::try_from(ns).unwrap_or(u64::MAX)
        });
        Some(IrqTimer { next_ns: run.time_of(next), period_ns })
    }

    /// Rising edges of OUT0 in (since_ns, now_ns] (the machine uses it to count missed
    /// ticks). Only the current programming's edges count.
    pub fn irq0_edges(&self, since_ns: u64, now_ns: u64) -> u64 {
        self.irq0_run().map_or(0, |(channel, run)| {
            channel.edges(&run, run.ticks(since_ns), run.ticks(now_ns))
        })
    }

    /// The rate the guest programmed for periodic IRQ0, in Hz (for messages), or None if
    /// channel 0 is not periodic.
    pub fn irq0_hz(&self) -> Option<f64> {
        let (channel, run) = self.irq0_run()?;
        channel.periodic().then(|| PIT_HZ as f64 / run.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;
    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;
    /// Linux's LATCH for HZ=100 (0x2e9c) and its calibration latch for 10 ms (0x2e9b).
    const LINUX_LATCH: u16 = 11932;
    const CAL_LATCH: u16 = 0x2e9b;

    /// The time of the `k`-th clock after a count written at `T0`.
    fn at(k: u64) -> u64 {
        T0 + ns_until(k)
    }

    fn program(pit: &mut Pit, control: u8, port: u16, count: u16, now: u64) {
        pit.write(PORT_CONTROL, control, now);
        let [lsb, msb] = count.to_le_bytes();
        pit.write(port, lsb, now);
        pit.write(port, msb, now);
    }

    fn read16(pit: &mut Pit, port: u16, now: u64) -> u16 {
        u16::from_le_bytes([pit.read(port, now), pit.read(port, now)])
    }

    #[test]
    fn linux_periodic_100hz() {
        let mut pit = Pit::new();
        assert_eq!(pit.irq0_timer(T0), None, "nothing before the guest programs it");
        program(&mut pit, 0x34, PORT_COUNTER0, LINUX_LATCH, T0);
        let period = 10_000_151; // 11932 clocks
        let timer = IrqTimer { next_ns: T0 + period, period_ns: Some(period) };
        assert_eq!(pit.irq0_timer(T0), Some(timer));
        let hz = pit.irq0_hz().unwrap();
        assert!((hz - 100.0).abs() < 0.01, "{hz}");
        // The 100th edge comes 15 us after the second is over.
        assert_eq!(pit.irq0_edges(T0, T0 + SEC), 99);
        assert_eq!(pit.irq0_edges(T0, T0 + SEC + 20_000), 100);
        assert_eq!(pit.irq0_edges(T0 + SEC / 2, T0 + SEC + 20_000), 51);
        // "At or after": an edge exactly at now is still the next one.
        let edge = at(u64::from(LINUX_LATCH) * 7);
        assert_eq!(pit.irq0_timer(edge).unwrap().next_ns, edge);
        assert_eq!(pit.irq0_timer(edge + 1).unwrap().next_ns, at(u64::from(LINUX_LATCH) * 8));
        assert_eq!(pit.irq0_edges(edge - 1, edge), 1);
        assert_eq!(pit.irq0_edges(edge, edge + 1), 0);
        // OUT is low for the one clock before each edge.
        assert!(pit.out(0, edge - 1_000) && !pit.out(0, edge - 1) && pit.out(0, edge));
    }

    #[test]
    fn mode0_one_shot_fires_once() {
        let mut pit = Pit::new();
        program(&mut pit, 0x30, PORT_COUNTER0, 1193, T0);
        assert_eq!(pit.irq0_timer(T0), Some(IrqTimer { next_ns: at(1193), period_ns: None }));
        assert!(!pit.out(0, T0) && !pit.out(0, at(1193) - 1) && pit.out(0, at(1193)));
        assert_eq!(pit.irq0_edges(T0, T0 + 10 * SEC), 1, "the count wraps without another edge");
        assert_eq!(pit.irq0_timer(at(1193) + 1), None);
        assert!(pit.out(0, T0 + 10 * SEC));
        assert_eq!(pit.irq0_hz(), None);
        // A new count restarts it; the first byte alone stops it with OUT low.
        pit.write(PORT_COUNTER0, 100, T0 + SEC);
        assert!(!pit.out(0, T0 + SEC) && pit.irq0_timer(T0 + SEC).is_none());
        pit.write(PORT_COUNTER0, 0, T0 + SEC);
        assert_eq!(pit.irq0_timer(T0 + SEC).unwrap().next_ns, T0 + SEC + ns_until(100));
    }

    #[test]
    fn mode4_strobes_once() {
        let mut pit = Pit::new();
        program(&mut pit, 0x38, PORT_COUNTER0, 500, T0);
        assert_eq!(pit.irq0_timer(T0), Some(IrqTimer { next_ns: at(501), period_ns: None }));
        assert!(pit.out(0, T0) && !pit.out(0, at(500)) && pit.out(0, at(501)));
        assert_eq!(pit.irq0_edges(0, T0 + SEC), 1);
        assert_eq!(pit.irq0_timer(at(501) + 1), None);
    }

    #[test]
    fn mode3_square_wave() {
        let mut pit = Pit::new();
        program(&mut pit, 0x36, PORT_COUNTER0, 4, T0);
        let levels: Vec<bool> = (0..8).map(|k| pit.out(0, at(k))).collect();
        assert_eq!(levels, [true, true, false, false, true, true, false, false]);
        let values: Vec<u16> = (0..4).map(|k| read16(&mut pit, PORT_COUNTER0, at(k))).collect();
        assert_eq!(values, [4, 2, 4, 2]);
        // Odd counts: high for the larger half.
        program(&mut pit, 0x36, PORT_COUNTER0, 5, T0);
        let levels: Vec<bool> = (0..5).map(|k| pit.out(0, at(k))).collect();
        assert_eq!(levels, [true, true, true, false, false]);
        assert_eq!(pit.irq0_edges(T0, at(50)), 10);
    }

    #[test]
    fn reads_decrease_and_latch_freezes() {
        let mut pit = Pit::new();
        program(&mut pit, 0x34, PORT_COUNTER0, 0x1000, T0);
        assert_eq!(read16(&mut pit, PORT_COUNTER0, at(0)), 0x1000);
        assert_eq!(read16(&mut pit, PORT_COUNTER0, at(0x123)), 0x1000 - 0x123);
        assert_eq!(read16(&mut pit, PORT_COUNTER0, at(0x1001)), 0x1000 - 1);
        // Latch, then read much later: the value at the latch; a second latch is ignored.
        pit.write(PORT_CONTROL, 0x00, at(0x10));
        pit.write(PORT_CONTROL, 0x00, at(0x20));
        assert_eq!(pit.read(PORT_COUNTER0, at(0x800)), 0xf0);
        pit.write(PORT_CONTROL, 0x00, at(0x900));
        assert_eq!(pit.read(PORT_COUNTER0, at(0x900)), 0x0f);
        assert_eq!(read16(&mut pit, PORT_COUNTER0, at(0x30)), 0x1000 - 0x30, "latch released");
        // Half-way live read: the MSB comes from the later count.
        assert_eq!(pit.read(PORT_COUNTER0, at(0x10)), 0xf0);
        assert_eq!(pit.read(PORT_COUNTER0, at(0x300)), 0x0d);
        // LSB-only and MSB-only access modes.
        pit.write(PORT_CONTROL, 0x14, T0);
        pit.write(PORT_COUNTER0, 0x80, T0);
        assert_eq!(pit.read(PORT_COUNTER0, at(0x10)), 0x70);
        pit.write(PORT_CONTROL, 0x24, T0);
        pit.write(PORT_COUNTER0, 0x80, T0);
        assert_eq!(pit.read(PORT_COUNTER0, at(0x10)), 0x7f);
    }

    #[test]
    fn read_back_status_and_count() {
        let mut pit = Pit::new();
        pit.write(PORT_CONTROL, 0x34, T0);
        pit.write(PORT_CONTROL, 0xe2, T0); // status of channel 0 only
        assert_eq!(pit.read(PORT_COUNTER0, T0), STATUS_OUT | STATUS_NULL_COUNT | 0x34);
        pit.write(PORT_COUNTER0, 0x00, T0);
        pit.write(PORT_COUNTER0, 0x10, T0);
        pit.write(PORT_CONTROL, 0xc2, at(0x20)); // count and status
        pit.write(PORT_CONTROL, 0xc2, at(0x40)); // ignored: both still latched
        assert_eq!(pit.read(PORT_COUNTER0, at(0x100)), STATUS_OUT | 0x34);
        assert_eq!(read16(&mut pit, PORT_COUNTER0, at(0x100)), 0x1000 - 0x20);
        // Channel 2, mode 0, BCD, count only.
        program(&mut pit, 0xb1, PORT_COUNTER2, 0x1234, T0);
        pit.write(PORT_B, PORT_B_GATE2, T0);
        pit.write(PORT_CONTROL, 0xd8, at(34));
        assert_eq!(read16(&mut pit, PORT_COUNTER2, at(99)), 0x1200);
        pit.write(PORT_CONTROL, 0xe8, at(99));
        assert_eq!(pit.read(PORT_COUNTER2, at(99)), 0x31, "OUT low, BCD mode 0");
    }

    #[test]
    fn pit_calibrate_tsc_sequence() {
        let mut pit = Pit::new();
        let port_b = pit.read(PORT_B, T0);
        assert_eq!(port_b & PORT_B_OUT2, 0);
        pit.write(PORT_B, (port_b & !0x02) | PORT_B_GATE2, T0);
        program(&mut pit, 0xb0, PORT_COUNTER2, CAL_LATCH, T0);
        let fires = at(u64::from(CAL_LATCH));
        assert!(fires > T0 + 9 * MS && fires < T0 + 10 * MS);
        for now in (T0..fires).step_by(3_000).chain([fires - 1]) {
            assert_eq!(pit.read(PORT_B, now) & PORT_B_OUT2, 0, "at {now}");
        }
        assert_ne!(pit.read(PORT_B, fires) & PORT_B_OUT2, 0);
        assert_eq!(pit.read(PORT_B, fires) & PORT_B_WRITABLE, PORT_B_GATE2);
        assert_eq!(pit.irq0_timer(fires), None, "channel 2 is not IRQ0");
    }

    #[test]
    fn quick_pit_calibrate_msb_decreases() {
        let mut pit = Pit::new();
        let port_b = pit.read(PORT_B, T0);
        pit.write(PORT_B, (port_b & !0x02) | PORT_B_GATE2, T0);
        program(&mut pit, 0xb0, PORT_COUNTER2, 0xffff, T0);
        let mut last = 0xff;
        for now in (T0..T0 + 50 * MS).step_by(7_000) {
            pit.read(PORT_COUNTER2, now); // LSB, ignored
            let msb = pit.read(PORT_COUNTER2, now);
            assert!(msb <= last, "MSB went up at {now}");
            assert_eq!(u64::from(msb), (0xffff - ticks_in(now - T0)) >> 8);
            last = msb;
        }
        assert_eq!(last, 0x16, "50 ms is 59659 clocks");
    }

    #[test]
    fn gate_low_freezes_channel2() {
        let mut pit = Pit::new();
        pit.write(PORT_B, PORT_B_GATE2, T0);
        program(&mut pit, 0xb0, PORT_COUNTER2, 1000, T0);
        pit.write(PORT_B, 0, at(300));
        assert_eq!(read16(&mut pit, PORT_COUNTER2, at(300) + SEC), 700);
        assert_eq!(pit.read(PORT_B, at(300) + SEC) & PORT_B_OUT2, 0, "frozen before the end");
        pit.write(PORT_B, PORT_B_GATE2, T0 + SEC);
        assert_eq!(read16(&mut pit, PORT_COUNTER2, T0 + SEC + ns_until(200)), 500);
        assert!(pit.out(2, T0 + SEC + ns_until(700)));
        // Mode 2: gate low freezes with OUT high, the rising gate reloads.
        program(&mut pit, 0xb4, PORT_COUNTER2, 1000, T0);
        pit.write(PORT_B, 0, at(999));
        assert!(pit.out(2, at(999)) && pit.out(2, at(5000)));
        assert_eq!(read16(&mut pit, PORT_COUNTER2, at(5000)), 1);
        pit.write(PORT_B, PORT_B_GATE2, at(5000));
        assert_eq!(read16(&mut pit, PORT_COUNTER2, at(5000)), 1000);
        // Mode 1: nothing until the gate rises, then a one-shot; a new rise retriggers.
        pit.write(PORT_B, 0, T0);
        program(&mut pit, 0xb2, PORT_COUNTER2, 100, T0);
        assert!(pit.out(2, at(500)));
        let trigger = at(500);
        pit.write(PORT_B, PORT_B_GATE2, trigger);
        assert!(!pit.out(2, trigger) && !pit.out(2, trigger + ns_until(100) - 1));
        assert!(pit.out(2, trigger + ns_until(100)));
    }

    #[test]
    fn count_zero_is_65536() {
        let mut pit = Pit::new();
        program(&mut pit, 0x34, PORT_COUNTER0, 0, T0);
        let timer = pit.irq0_timer(T0).unwrap();
        assert_eq!(timer.next_ns, at(65536));
        assert_eq!(timer.period_ns, Some(54_925_401));
        assert!((pit.irq0_hz().unwrap() - 18.2).abs() < 0.01);
        assert_eq!(read16(&mut pit, PORT_COUNTER0, at(1)), 0xffff);
        // Count 1 in mode 2 counts as 2: an edge every two clocks.
        program(&mut pit, 0x34, PORT_COUNTER0, 1, T0);
        assert_eq!(pit.irq0_edges(T0, at(1000)), 500);
        assert!(pit.irq0_timer(T0).unwrap().period_ns.unwrap() < MIN_IRQ0_PERIOD_NS);
    }

    #[test]
    fn port_b_and_control_port() {
        let mut pit = Pit::new();
        let now = REFRESH_TOGGLE_NS * 100;
        pit.write(PORT_B, 0xff, now);
        assert_eq!(pit.read(PORT_B, now) & !PORT_B_OUT2, PORT_B_WRITABLE);
        let refresh = |pit: &mut Pit, now| pit.read(PORT_B, now) & PORT_B_REFRESH;
        assert_ne!(refresh(&mut pit, now), refresh(&mut pit, now + REFRESH_TOGGLE_NS));
        assert_eq!(refresh(&mut pit, now), refresh(&mut pit, now + 2 * REFRESH_TOGGLE_NS));
        assert_eq!(pit.read(PORT_CONTROL, T0), OPEN_BUS);
        assert!(Pit::owns(0x40) && Pit::owns(0x43) && Pit::owns(0x61));
        assert!(!Pit::owns(0x44) && !Pit::owns(0x60) && !Pit::owns(0x3f));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut pit = Pit::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let ports = [0x40, 0x41, 0x42, 0x43, 0x61, 0x44];
        let mut now = 0u64;
        for i in 0..200_000 {
            let r = next();
            now = match r % 16 {
                0 => now.saturating_add(r >> 8), // huge jumps, up to u64::MAX
                1 => now.saturating_sub(r % 1000), // time going backwards
                _ => now.saturating_add(r % 20_000),
            };
            let port = ports[(r >> 4) as usize % ports.len()];
            let value = (r >> 16) as u8;
            if (r >> 24) % 2 == 0 { pit.write(port, value, now) } else { pit.read(port, now); }
            let since = now.saturating_sub(next() % (2 * SEC));
            if let Some(timer) = pit.irq0_timer(now) {
                assert!(timer.next_ns >= now || timer.next_ns == u64::MAX, "step {i}");
            }
            pit.irq0_edges(since, now);
            pit.irq0_edges(now, since);
            pit.irq0_hz();
            if i % 50_000 == 0 {
                now = 0;
            }
        }
    }
}
