//! One CPU's local APIC in xAPIC mode (Intel SDM vol. 3A chapter 11 "Advanced Programmable
//! Interrupt Controller", chapter 10 in older editions; AMD APM vol. 2 chapter 16): a page
//! of 32-bit registers at [`LAPIC_BASE`], each at a 16-byte aligned offset. The vCPU loop
//! asks it for the interrupt to inject ([`Lapic::pending_interrupt`],
//! [`Lapic::acknowledge`]) and for NMI, INIT and SIPI events ([`Lapic::take_nmi`],
//! [`Lapic::take_init`], [`Lapic::take_sipi`]); the router in `apic.rs` carries interrupt
//! messages between CPUs ([`Lapic::accept`]) and what a register write starts
//! ([`LapicEffect`]).
//!
//! | offset | register | access | notes |
//! |---|---|---|---|
//! | 0x020 | ID | r/w | bits 31-24; INIT keeps it, a global disable and x2APIC mode restore the initial ID |
//! | 0x030 | version | r | 0x0005_0014: integrated APIC, 6 LVT entries |
//! | 0x080 | TPR | r/w | bits 7-0 |
//! | 0x090 | APR | r | 0 (no arbitration on a virtual bus) |
//! | 0x0a0 | PPR | r | TPR, or ISRV & 0xf0 when that class is higher |
//! | 0x0b0 | EOI | w | any value: ends the highest interrupt in service |
//! | 0x0c0 | RRD | r | 0 (remote read is not supported) |
//! | 0x0d0 | LDR | r/w | bits 31-24 |
//! | 0x0e0 | DFR | r/w | bits 31-28 (1111 flat, 0000 cluster), bits 27-0 read as 1 |
//! | 0x0f0 | SVR | r/w | spurious vector 7-0, APIC software enable 8, focus check 9 |
//! | 0x100-0x170 | ISR | r | vectors 32n..32n+31 at 0x100 + 0x10 n |
//! | 0x180-0x1f0 | TMR | r | set for level-triggered interrupts accepted |
//! | 0x200-0x270 | IRR | r | |
//! | 0x280 | ESR | r/w | a write latches the errors seen since the last write |
//! | 0x300 | ICR low | r/w | a write sends the IPI; delivery status always idle |
//! | 0x310 | ICR high | r/w | destination in bits 31-24 |
//! | 0x320 | LVT timer | r/w | vector, mask 16, mode 18-17 (one-shot 00, periodic 01, TSC-deadline 10 where offered) |
//! | 0x330 | LVT thermal | r/w | kept, never fires |
//! | 0x340 | LVT perf. counters | r/w | kept, never fires |
//! | 0x350 | LVT LINT0 | r/w | ExtINT unmasked: the PIC's INTR reaches this CPU |
//! | 0x360 | LVT LINT1 | r/w | kept (nothing drives LINT1) |
//! | 0x370 | LVT error | r/w | fires when an illegal vector is sent or received |
//! | 0x380 | timer initial count | r/w | a write (re)starts the timer, 0 stops it |
//! | 0x390 | timer current count | r | computed from the time |
//! | 0x3e0 | timer divide configuration | r/w | bits 0, 1, 3 |
//!
//! The timer counts a 1 GHz bus clock ([`BUS_NS_PER_TICK`]) divided by 1 to 128. In one-shot
//! mode it fires once when the count reaches 0 and then reads 0; in periodic mode it reloads.
//! All counts and deadlines are computed from `now_ns`, never from the number of calls.
//!
//! **TSC-deadline mode** (SDM 11.5.4.1), only where the APIC's owner offers it
//! ([`Lapic::offer_tsc_deadline`]: the kernel module's APIC, which owns the IA32_TSC_DEADLINE
//! MSR and CPUID.1:ECX bit 24): the timer fires once when the guest's TSC reaches the value
//! written to the MSR ([`Lapic::write_tsc_deadline`], with the owner's conversion of that
//! TSC value into `now_ns`'s clock, [`tsc_deadline_ns`]), then the MSR reads 0. Writing 0
//! disarms it; in the other modes the MSR reads 0 and writes are ignored. In this mode the
//! initial count ignores writes and the current count reads 0. Switching the LVT into or out
//! of TSC-deadline mode disarms the timer (count and deadline 0). Mode 11 (reserved) is
//! taken as TSC-deadline.
//!
//! What happens when the guest does something odd:
//! - **Software disabled** (SVR bit 8 clear, the power-on state): every LVT is masked and
//!   writes cannot unmask them (SDM 11.4.7.2); fixed and lowest-priority messages are dropped
//!   (as KVM does), NMI, INIT and SIPI are still taken, IRR and ISR keep what they hold and
//!   nothing is delivered until the APIC is enabled again. IPIs can still be sent.
//! - **Illegal vectors** (0-15) in a fixed or lowest-priority IPI: not sent, ESR bit 5; in a
//!   message received: dropped, ESR bit 6. Either raises the LVT error interrupt if it is
//!   unmasked (with a legal vector).
//! - **ICR**: reserved delivery modes (3, and 7 = ExtINT, which only an I/O APIC may send) are
//!   not sent. INIT level de-assert is passed on to the router, which ignores it.
//! - **SIPI**: only taken while the CPU waits for one (after INIT, or at power-on for an AP),
//!   so Linux's second SIPI does nothing.
//! - **EOI with nothing in service**: nothing. Reserved registers read 0, writes to them and to
//!   read-only registers are ignored (no "illegal register address" error).
//! - **Timer**: a periodic rate faster than [`MIN_PERIODIC_NS`] fires every
//!   [`MIN_PERIODIC_NS`] (the current count still counts at the programmed rate); ticks missed
//!   because the machine was late are merged into one interrupt. Changing the divider while
//!   counting keeps the ticks already counted. A one-shot that expires while the timer LVT is
//!   masked is lost, as on hardware: unmasking later does not fire it.
//! - **Interrupt withdrawn** between [`Lapic::pending_interrupt`] and
//!   [`Lapic::acknowledge`] (by a TPR raise): `acknowledge` returns None, the spurious vector
//!   is not used. No guest input panics.
//!
//! **x2APIC** (SDM 11.12), for the kernel module's APIC, which owns IA32_APIC_BASE
//! ([`Lapic::set_mode`]): the registers are MSRs 0x800 + offset / 16 ([`Lapic::msr_read`],
//! [`Lapic::msr_write`]); the ID is 32 bits and read-only (the APIC ID), the LDR is derived
//! from it (cluster ID >> 4, member bit ID & 0xf) and read-only, there is no DFR, APR or
//! RRD, the ICR is one 64-bit MSR (32-bit destination, [`BROADCAST`] for all), SELF IPI
//! (0x83f) sends a fixed edge interrupt to this CPU. An access the SDM refuses is
//! [`MsrFault`] (#GP): read-only and missing registers, reads of EOI and SELF IPI, values
//! above 32 bits (but the ICR's), reserved bits of TPR, SVR, ICR and SELF IPI, non-zero
//! EOI and ESR writes. IA32_APIC_BASE.EN clear ([`ApicMode::Disabled`]) resets the APIC and
//! makes it deaf: no messages, no interrupts, the page reads 0; the PIC then reaches the
//! CPU directly. An 8-bit destination (I/O APIC, MSI) of 0xff reaches every CPU in either
//! mode ([`xapic_dest`]); others are x2APIC IDs below 256.
//!
//! Not emulated: the page's base (IA32_APIC_BASE bits 12 and up: the owner of the MSR moves
//! the page; the kernel module does, the emulator keeps 0xfee00000), TSC-deadline
//! mode, SMI, focus processor checking, remote read, CMCI, directed EOI.

/// Where the local APIC page is (each CPU sees its own APIC there).
pub const LAPIC_BASE: u64 = 0xfee0_0000;
pub const LAPIC_SIZE: u64 = 0x1000;
/// The timer's bus clock: 1 GHz, one nanosecond per tick before the divider.
pub const BUS_NS_PER_TICK: u64 = 1;
/// Shortest period of the periodic timer (5 kHz): faster rates are merged ticks.
pub const MIN_PERIODIC_NS: u64 = 200_000;

const REG_ID: u64 = 0x020;
const REG_VERSION: u64 = 0x030;
const REG_TPR: u64 = 0x080;
const REG_APR: u64 = 0x090;
const REG_PPR: u64 = 0x0a0;
const REG_EOI: u64 = 0x0b0;
const REG_RRD: u64 = 0x0c0;
const REG_LDR: u64 = 0x0d0;
const REG_DFR: u64 = 0x0e0;
const REG_SVR: u64 = 0x0f0;
const REG_ISR: u64 = 0x100;
const REG_TMR: u64 = 0x180;
const REG_IRR: u64 = 0x200;
const REG_ESR: u64 = 0x280;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_LVT_ERROR: u64 = 0x370;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3e0;
/// Registers are 16 bytes apart (the 8 of a 256-bit vector set too: ISR, TMR, IRR).
const REG_STRIDE: u64 = 0x10;
/// Offsets name registers by their 16-byte slot.
const REG_MASK: u64 = 0xff0;

/// Integrated APIC version 0x14, max LVT entry 5 (timer, thermal, perf, LINT0, LINT1, error).
pub const VERSION: u32 = 0x0005_0014;
/// 8-bit fields in bits 31-24: ID, LDR, ICR high's destination.
const HIGH_BYTE_SHIFT: u32 = 24;
const DFR_MODEL_SHIFT: u32 = 28;
const DFR_MODEL_FLAT: u32 = 0xf;
const DFR_RESERVED_ONES: u32 = 0x0fff_ffff;

/// A set of bit flags in a `u32` register: the few operations this file needs of the
/// `bitflags` crate, written out so the file also builds in the kernel module (no crates).
macro_rules! flags {
    ($($(#[$outer:meta])* struct $name:ident: u32 {
        $($(#[$inner:meta])* const $flag:ident = $value:expr;)*
    })*) => {$(
        $(#[$outer])*
        struct $name(u32);

        #[allow(dead_code)]
        impl $name {
            $($(#[$inner])* const $flag: Self = Self($value);)*

            const fn empty() -> Self {
                Self(0)
            }

            const fn bits(self) -> u32 {
                self.0
            }

            /// Every named flag.
            const fn all() -> Self {
                Self(0 $(| $value)*)
            }

            /// `bits` without the bits no flag names.
            const fn from_bits_truncate(bits: u32) -> Self {
                Self(bits & Self::all().0)
            }

            const fn from_bits_retain(bits: u32) -> Self {
                Self(bits)
            }

            const fn union(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }
        }

        impl core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }

        impl core::ops::BitAnd for $name {
            type Output = Self;
            fn bitand(self, other: Self) -> Self {
                Self(self.0 & other.0)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, other: Self) {
                self.0 |= other.0;
            }
        }
    )*};
}

flags! {
    /// The spurious-interrupt vector register (SDM 11.9): its vector and two flags; the
    /// other bits are reserved (a write drops them).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Svr: u32 {
        const VECTOR = 0xff;
        /// APIC software enable.
        const ENABLE = 1 << 8;
        const FOCUS_CHECK_DISABLE = 1 << 9;
    }

    /// The errors the emulator records in the error status register (SDM 11.5.3).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct Esr: u32 {
        const SEND_ILLEGAL_VECTOR = 1 << 5;
        const RECEIVE_ILLEGAL_VECTOR = 1 << 6;
    }

    /// ICR low (SDM 11.6.1): its writable fields and flags. The delivery status (bit 12)
    /// is read-only and always clear: an IPI is delivered at once.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct IcrLow: u32 {
        const VECTOR = 0xff;
        const DELIVERY_MODE = DELIVERY_MODE_BITS << DELIVERY_MODE_SHIFT;
        /// Destination mode: logical (LDR/DFR) rather than physical (APIC ID).
        const LOGICAL = 1 << 11;
        /// Level: assert (only INIT de-assert clears it).
        const LEVEL_ASSERT = 1 << 14;
        const LEVEL_TRIGGERED = 1 << 15;
        const SHORTHAND = 0b11 << ICR_SHORTHAND_SHIFT;
    }

    /// An LVT entry (SDM 11.5.1): the fields and flags of all entries; which ones each
    /// entry has is in `LVT_WRITABLE`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Lvt: u32 {
        const VECTOR = 0xff;
        const DELIVERY_MODE = DELIVERY_MODE_BITS << DELIVERY_MODE_SHIFT;
        const POLARITY_LOW = 1 << 13;
        const LEVEL_TRIGGERED = 1 << 15;
        const MASKED = 1 << 16;
        /// The timer's entry: periodic rather than one-shot.
        const TIMER_PERIODIC = 1 << 17;
        /// The timer's entry: TSC-deadline mode (where offered, `Lapic::offer_tsc_deadline`).
        const TIMER_TSC_DEADLINE = 1 << 18;
    }
}

impl Lvt {
    /// An unmasked entry delivering in `mode`.
    fn delivering(mode: DeliveryMode) -> Self {
        Lvt::from_bits_retain(mode.code() << DELIVERY_MODE_SHIFT)
    }

    fn vector(self) -> u8 {
        (self & Lvt::VECTOR).bits() as u8
    }

    fn mode(self) -> Option<DeliveryMode> {
        DeliveryMode::from_bits((self & Lvt::DELIVERY_MODE).bits() >> DELIVERY_MODE_SHIFT)
    }
}

/// NMIs an APIC keeps for its CPU: two that arrive together are both delivered, the second
/// after the first's handler (one taken at once, one latched: SDM 6.7.1).
pub const MAX_PENDING_NMIS: u8 = 2;

/// Priority classes: the high nibble of a vector, TPR or PPR.
const CLASS: u8 = 0xf0;
/// Vectors 0-15 are exceptions: illegal in fixed and lowest-priority messages.
const FIRST_LEGAL_VECTOR: u8 = 16;

/// The delivery mode field of ICR low, the LVT entries and the I/O APIC's redirection
/// entries: bits 10-8.
pub const DELIVERY_MODE_SHIFT: u32 = 8;
const DELIVERY_MODE_BITS: u32 = 0b111;
const ICR_SHORTHAND_SHIFT: u32 = 18;

/// The LVT entries, in register order from 0x320, and what each may hold.
const LVT_COUNT: usize = 6;
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_LINT1: usize = 4;
const LVT_ERROR: usize = 5;
const LVT_WRITABLE: [Lvt; LVT_COUNT] = {
    let vector_masked = Lvt::VECTOR.union(Lvt::MASKED);
    let with_mode = vector_masked.union(Lvt::DELIVERY_MODE);
    let lint = with_mode.union(Lvt::POLARITY_LOW).union(Lvt::LEVEL_TRIGGERED);
    [
        vector_masked.union(Lvt::TIMER_PERIODIC), // timer (bit 18, TSC-deadline, where offered)
        with_mode,                                // thermal
        with_mode,                                // performance counters
        lint,                                     // LINT0
        lint,                                     // LINT1
        vector_masked,                            // error
    ]
};

/// Divide configuration: bits 0, 1 and 3 choose 2, 4, ..., 128, or 1 for 0b1011.
const DIVIDE_WRITABLE: u32 = 0b1011;

/// How a message is to be delivered (ICR, LVT, I/O APIC redirection entry bits 10-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    ExtInt,
}

impl DeliveryMode {
    /// Decodes the 3-bit field; 0b011 is reserved.
    pub fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits & DELIVERY_MODE_BITS {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => return None,
        })
    }

    /// The 3-bit field's value.
    pub fn code(self) -> u32 {
        match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::StartUp => 6,
            DeliveryMode::ExtInt => 7,
        }
    }

    /// Fixed and lowest priority carry a vector that must be 16 or above.
    fn has_vector(self) -> bool {
        matches!(self, DeliveryMode::Fixed | DeliveryMode::LowestPriority)
    }
}

/// ICR bits 19-18: who gets an IPI without looking at the destination field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// An inter-processor interrupt, as the ICR describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub vector: u8,
    pub mode: DeliveryMode,
    /// Destination mode: logical (LDR/DFR) rather than physical (APIC ID).
    pub logical: bool,
    /// The destination: 8 bits from an xAPIC's ICR (0xff becomes [`BROADCAST`]), 32 bits
    /// from an x2APIC's.
    pub dest: u32,
    pub shorthand: Shorthand,
    pub level_triggered: bool,
    /// Level: assert (1) or de-assert (0); only INIT de-assert uses 0.
    pub assert: bool,
}

/// The destination that reaches every CPU, in xAPIC and x2APIC mode alike.
pub const BROADCAST: u32 = u32::MAX;

/// An xAPIC-format 8-bit destination (ICR high, an I/O APIC entry, an MSI address) as a
/// 32-bit one: 0xff, "all", becomes [`BROADCAST`].
pub fn xapic_dest(dest: u8) -> u32 {
    if dest == 0xff {
        BROADCAST
    } else {
        u32::from(dest)
    }
}

/// The x2APIC registers are MSRs 0x800-0x8ff: MSR 0x800 + n is the xAPIC register at
/// offset 0x10 n (SDM 11.12.1.2).
pub const X2APIC_MSR_FIRST: u32 = 0x800;
pub const X2APIC_MSR_LAST: u32 = 0x8ff;
/// The x2APIC-only SELF IPI register (MSR 0x83f).
const REG_SELF_IPI: u64 = 0x3f0;

/// The state IA32_APIC_BASE's EN (bit 11) and EXTD (bit 10) select (SDM 11.12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// EN clear: globally disabled; the CPU behaves as one without an APIC (LINT0 is the
    /// INTR pin: the PIC reaches it directly).
    Disabled,
    /// EN set, EXTD clear: the MMIO page.
    XApic,
    /// EN and EXTD set: the MSRs, no MMIO page.
    X2Apic,
}

/// An x2APIC MSR access the CPU refuses: the WRMSR or RDMSR raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

/// What a register write asks of the rest of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicEffect {
    None,
    /// ICR low was written: deliver this IPI.
    Ipi(Ipi),
    /// An interrupt left service; a level-triggered one must reach the I/O APIC.
    Eoi {
        vector: u8,
        level_triggered: bool,
    },
    /// The timer's deadline may have moved (or an interrupt became pending by it).
    TimerChanged,
}

/// A set of the 256 vectors, as the ISR, TMR and IRR registers hold them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Vectors([u32; 8]);

impl Vectors {
    fn set(&mut self, vector: u8) {
        self.0[usize::from(vector / 32)] |= 1 << (vector % 32);
    }

    fn clear(&mut self, vector: u8) {
        self.0[usize::from(vector / 32)] &= !(1 << (vector % 32));
    }

    fn contains(&self, vector: u8) -> bool {
        self.0[usize::from(vector / 32)] & (1 << (vector % 32)) != 0
    }

    /// The highest vector in the set.
    fn highest(&self) -> Option<u8> {
        let (word, bits) = self.0.iter().enumerate().rev().find(|(_, bits)| **bits != 0)?;
        u8::try_from(word * 32 + 31 - bits.leading_zeros() as usize).ok()
    }

    /// The register holding vectors 32 i..32 i + 31.
    fn register(&self, i: u64) -> u32 {
        self.0[usize::try_from(i).unwrap_or(0) % 8]
    }
}

/// The timer's counting element.
#[derive(Clone, Copy, Debug, Default)]
struct Timer {
    /// The initial count register; 0 stops the timer.
    initial: u32,
    /// The divide configuration register.
    divide_config: u32,
    /// When the current count was (re)loaded with `initial`.
    base_ns: u64,
    /// False once a one-shot has reached 0 (or with no count).
    running: bool,
    /// TSC-deadline mode: IA32_TSC_DEADLINE as written (0: disarmed, and once fired) and
    /// that guest TSC value in `now_ns`'s clock.
    tsc_deadline: u64,
    tsc_deadline_ns: u64,
}

/// The timer's mode, LVT timer bits 18-17.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// When a guest TSC value `deadline_tsc` comes in `now_ns`'s clock, given both clocks read
/// at the same moment (`now_tsc`, `now_ns`) and the TSC's rate: rounded up, so that the
/// guest's TSC has reached the deadline when the timer fires; `now_ns` for a deadline that
/// has passed. `None` without a rate.
pub fn tsc_deadline_ns(deadline_tsc: u64, now_tsc: u64, now_ns: u64, tsc_khz: u32) -> Option<u64> {
    if tsc_khz == 0 {
        return None;
    }
    // Whole milliseconds, then the rest (below 1 ms of ticks, so no overflow): no 128-bit
    // division, which the kernel does not have.
    let ticks = deadline_tsc.saturating_sub(now_tsc);
    let khz = u64::from(tsc_khz);
    let ms = ticks / khz;
    let rest_ns = ((ticks % khz) * 1_000_000).div_ceil(khz);
    Some(now_ns.saturating_add(ms.saturating_mul(1_000_000)).saturating_add(rest_ns))
}

impl Timer {
    /// Bus clocks per timer tick: 2, 4, ..., 128, or 1.
    fn divisor(&self) -> u64 {
        let code = (self.divide_config & 0b11) | ((self.divide_config & 0b1000) >> 1);
        if code == 0b111 {
            1
        } else {
            2 << code
        }
    }

    fn tick_ns(&self) -> u64 {
        self.divisor() * BUS_NS_PER_TICK
    }

    /// Time from a load to the count reaching 0.
    fn count_ns(&self) -> u64 {
        u64::from(self.initial).saturating_mul(self.tick_ns())
    }

    /// Time between interrupts: the count, at least `MIN_PERIODIC_NS` when periodic.
    fn period_ns(&self, periodic: bool) -> u64 {
        if periodic {
            self.count_ns().max(MIN_PERIODIC_NS)
        } else {
            self.count_ns()
        }
    }

    fn current(&self, periodic: bool, now_ns: u64) -> u32 {
        if !self.running || self.initial == 0 {
            return 0;
        }
        let ticks = now_ns.saturating_sub(self.base_ns) / self.tick_ns();
        let initial = u64::from(self.initial);
        let left = if periodic { initial - ticks % initial } else { initial.saturating_sub(ticks) };
        u32::try_from(left).unwrap_or(u32::MAX)
    }

    fn deadline(&self, periodic: bool) -> Option<u64> {
        (self.running && self.initial != 0)
            .then(|| self.base_ns.saturating_add(self.period_ns(periodic)))
    }

    fn load(&mut self, initial: u32, now_ns: u64) {
        self.initial = initial;
        self.base_ns = now_ns;
        self.running = initial != 0;
    }

    /// A new divider, keeping the ticks counted so far.
    fn set_divide(&mut self, value: u32, now_ns: u64) {
        let ticks = now_ns.saturating_sub(self.base_ns) / self.tick_ns();
        self.divide_config = value & DIVIDE_WRITABLE;
        self.base_ns = now_ns.saturating_sub(ticks.saturating_mul(self.tick_ns()));
    }

    /// Moves past every expiry up to `now_ns`; true if at least one happened.
    fn expire(&mut self, periodic: bool, now_ns: u64) -> bool {
        let Some(deadline) = self.deadline(periodic) else { return false };
        if now_ns < deadline {
            return false;
        }
        if periodic {
            let period = self.period_ns(true);
            let periods = (now_ns - self.base_ns) / period;
            self.base_ns += periods * period;
        } else {
            self.running = false;
        }
        true
    }
}

/// One CPU's local APIC.
#[derive(Clone, Debug)]
pub struct Lapic {
    id: u8,
    /// The ID the CPU was given (its initial APIC ID): the x2APIC ID, and the xAPIC ID
    /// again after a global disable.
    initial_id: u8,
    bsp: bool,
    tpr: u8,
    /// LDR bits 31-24: this CPU's logical ID.
    ldr: u8,
    /// DFR bits 31-28: the model, flat (0xf) or cluster (0).
    dfr_model: u32,
    svr: Svr,
    isr: Vectors,
    tmr: Vectors,
    irr: Vectors,
    /// The error status register as last latched, and the errors since.
    esr: Esr,
    errors: Esr,
    icr_low: IcrLow,
    icr_high: u32,
    lvt: [Lvt; LVT_COUNT],
    timer: Timer,
    /// NMIs received and not taken yet: at most [`MAX_PENDING_NMIS`].
    nmi: u8,
    init: bool,
    sipi: Option<u8>,
    /// In the wait-for-SIPI state: a SIPI starts the CPU.
    waiting_for_sipi: bool,
    /// IA32_APIC_BASE's EN and EXTD, as the MSR's owner set them ([`Lapic::set_mode`]).
    mode: ApicMode,
    /// The timer has TSC-deadline mode ([`Lapic::offer_tsc_deadline`]).
    tsc_deadline_offered: bool,
}

impl Lapic {
    /// IA32_APIC_BASE's EN and EXTD.
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// A write of IA32_APIC_BASE's EN and EXTD; false for the transitions the SDM refuses
    /// with #GP (11.12.5: x2APIC to xAPIC, disabled to x2APIC). Disabling resets every
    /// register to its power-up value, the ID to the initial APIC ID (SDM 11.4.3: enabled
    /// again, the APIC is in its power-up state); from xAPIC to x2APIC everything is kept
    /// but the ID, which becomes the initial APIC ID (read-only in x2APIC mode: an xAPIC
    /// ID the guest wrote is gone), and the LDR, derived from it.
    pub fn set_mode(&mut self, mode: ApicMode) -> bool {
        match (self.mode, mode) {
            (old, new) if old == new => {}
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => return false,
            (_, ApicMode::Disabled) => {
                self.init();
                self.id = self.initial_id;
                self.mode = ApicMode::Disabled;
            }
            (_, ApicMode::X2Apic) => {
                self.id = self.initial_id;
                self.mode = ApicMode::X2Apic;
            }
            (_, new) => self.mode = new,
        }
        true
    }

    /// The x2APIC ID: the initial APIC ID (CPU n has ID n).
    pub fn x2apic_id(&self) -> u32 {
        u32::from(self.id)
    }

    /// The x2APIC logical destination, derived from the ID (SDM 11.12.10.2): cluster
    /// ID >> 4 in bits 31-16, bit ID & 0xf of the 16 member bits.
    pub fn x2apic_ldr(&self) -> u32 {
        let id = self.x2apic_id();
        ((id >> 4) << 16) | (1 << (id & 0xf))
    }

    /// RDMSR of x2APIC register `msr` (0x800-0x8ff) in x2APIC mode. #GP outside x2APIC
    /// mode, for the write-only EOI and SELF IPI, and for the registers x2APIC does not
    /// have (APR, RRD, DFR, ICR high, CMCI, reserved).
    pub fn msr_read(&mut self, msr: u32, now_ns: u64) -> Result<u64, MsrFault> {
        let offset = Self::msr_offset(msr, self.mode)?;
        Ok(match offset {
            REG_ID => u64::from(self.x2apic_id()),
            REG_LDR => u64::from(self.x2apic_ldr()),
            REG_ICR_LOW => (u64::from(self.icr_high) << 32) | u64::from(self.icr_low.bits()),
            REG_VERSION | REG_TPR | REG_PPR | REG_SVR | REG_ESR | REG_TIMER_INITIAL | REG_TIMER_CURRENT
            | REG_TIMER_DIVIDE => u64::from(self.read(offset, now_ns)),
            REG_ISR..REG_ESR | REG_LVT_TIMER..=REG_LVT_ERROR => u64::from(self.read(offset, now_ns)),
            _ => return Err(MsrFault),
        })
    }

    /// WRMSR of `value` to x2APIC register `msr` in x2APIC mode. #GP outside x2APIC mode,
    /// for read-only and missing registers, for a value above 32 bits (but the ICR's), a
    /// non-zero EOI or ESR write, TPR bits 31-8, SVR bits the APIC does not have, ICR bits
    /// that are reserved in x2APIC mode (12, 13, 16, 17, 20-31 of the low half) and SELF
    /// IPI bits 31-8. LVT and divide bits the APIC does not keep are dropped, as in xAPIC
    /// mode.
    pub fn msr_write(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<LapicEffect, MsrFault> {
        let offset = Self::msr_offset(msr, self.mode)?;
        if offset == REG_ICR_LOW {
            let low = value as u32;
            if low & !IcrLow::all().bits() != 0 {
                return Err(MsrFault);
            }
            self.icr_high = (value >> 32) as u32;
            return Ok(self.write(offset, low, now_ns));
        }
        let value = u32::try_from(value).map_err(|_| MsrFault)?;
        match offset {
            REG_TPR if value > 0xff => return Err(MsrFault),
            REG_EOI | REG_ESR if value != 0 => return Err(MsrFault),
            REG_SVR if value & !Svr::all().bits() != 0 => return Err(MsrFault),
            REG_SELF_IPI => {
                if value > 0xff {
                    return Err(MsrFault);
                }
                self.icr_low = IcrLow::from_bits_truncate(value);
                let effect = self.send_ipi();
                return Ok(match effect {
                    LapicEffect::Ipi(ipi) => LapicEffect::Ipi(Ipi { shorthand: Shorthand::SelfOnly, ..ipi }),
                    other => other,
                });
            }
            REG_TPR | REG_EOI | REG_ESR | REG_SVR | REG_TIMER_INITIAL | REG_TIMER_DIVIDE => {}
            REG_LVT_TIMER..=REG_LVT_ERROR => {}
            _ => return Err(MsrFault),
        }
        Ok(self.write(offset, value, now_ns))
    }

    /// The xAPIC offset of x2APIC register `msr`, in x2APIC mode.
    fn msr_offset(msr: u32, mode: ApicMode) -> Result<u64, MsrFault> {
        if mode != ApicMode::X2Apic || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(MsrFault);
        }
        Ok(u64::from(msr - X2APIC_MSR_FIRST) << 4)
    }

    /// The power-on state. The BSP's is what a BIOS leaves behind: APIC software-enabled,
    /// LINT0 ExtINT (the PIC, virtual wire mode) and LINT1 NMI, unmasked. An AP waits for
    /// a SIPI.
    pub fn new(id: u8, bsp: bool) -> Self {
        let mut lapic = Lapic {
            id,
            initial_id: id,
            bsp,
            tpr: 0,
            ldr: 0,
            dfr_model: DFR_MODEL_FLAT,
            svr: Svr::VECTOR,
            isr: Vectors::default(),
            tmr: Vectors::default(),
            irr: Vectors::default(),
            esr: Esr::empty(),
            errors: Esr::empty(),
            icr_low: IcrLow::empty(),
            icr_high: 0,
            lvt: [Lvt::MASKED; LVT_COUNT],
            timer: Timer::default(),
            nmi: 0,
            init: false,
            sipi: None,
            waiting_for_sipi: !bsp,
            mode: ApicMode::XApic,
            tsc_deadline_offered: false,
        };
        if bsp {
            lapic.svr |= Svr::ENABLE;
            lapic.lvt[LVT_LINT0] = Lvt::delivering(DeliveryMode::ExtInt);
            lapic.lvt[LVT_LINT1] = Lvt::delivering(DeliveryMode::Nmi);
        }
        lapic
    }

    /// INIT: every register to its power-on value (SDM 11.4.7.3: software disabled, LVTs
    /// masked, no count), except the APIC ID. Pending NMI/INIT/SIPI events are kept: the
    /// caller of [`Lapic::take_init`] decides.
    pub fn init(&mut self) {
        let events = (self.nmi, self.init, self.sipi, self.waiting_for_sipi);
        *self = Lapic {
            bsp: self.bsp,
            mode: self.mode,
            initial_id: self.initial_id,
            tsc_deadline_offered: self.tsc_deadline_offered,
            ..Lapic::new(self.id, false)
        };
        (self.nmi, self.init, self.sipi, self.waiting_for_sipi) = events;
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    pub fn is_bsp(&self) -> bool {
        self.bsp
    }

    /// SVR bit 8.
    pub fn software_enabled(&self) -> bool {
        self.svr.contains(Svr::ENABLE)
    }

    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    /// A MOV to CR8 (the TPR's class, `tpr` = CR8 << 4): sets the TPR in every mode, the
    /// globally disabled one too (CR8 is the CPU's register and keeps what is written, as
    /// under KVM), where a write to the page or the MSR goes nowhere.
    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// The processor priority: the TPR, or the class of the highest interrupt in service if
    /// that is higher (SDM 11.8.3.1).
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if self.tpr & CLASS >= isrv & CLASS {
            self.tpr
        } else {
            isrv & CLASS
        }
    }

    /// Whether the CPU waits for a SIPI (after INIT, or an AP from power-on).
    pub fn waiting_for_sipi(&self) -> bool {
        self.waiting_for_sipi
    }

    fn timer_mode(&self) -> TimerMode {
        let lvt = self.lvt[LVT_TIMER];
        if lvt.contains(Lvt::TIMER_TSC_DEADLINE) {
            TimerMode::TscDeadline
        } else if lvt.contains(Lvt::TIMER_PERIODIC) {
            TimerMode::Periodic
        } else {
            TimerMode::OneShot
        }
    }

    fn timer_periodic(&self) -> bool {
        self.timer_mode() == TimerMode::Periodic
    }

    /// Gives the timer its TSC-deadline mode (LVT timer bit 18 becomes writable). For the
    /// owner of IA32_TSC_DEADLINE, who also sets CPUID.1:ECX bit 24.
    pub fn offer_tsc_deadline(&mut self) {
        self.tsc_deadline_offered = true;
    }

    pub fn tsc_deadline_offered(&self) -> bool {
        self.tsc_deadline_offered
    }

    /// RDMSR IA32_TSC_DEADLINE: the armed deadline in TSC-deadline mode, else 0.
    pub fn read_tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.timer.tsc_deadline
        } else {
            0
        }
    }

    /// The guest TSC value the timer waits for, while armed in TSC-deadline mode.
    pub fn armed_tsc_deadline(&self) -> Option<u64> {
        (self.timer_mode() == TimerMode::TscDeadline && self.timer.tsc_deadline != 0).then_some(self.timer.tsc_deadline)
    }

    /// Moves the armed TSC deadline to `deadline_ns` (`now_ns`'s clock). The owner
    /// computes it again from the TSC before it looks at the timer, so a clock that drifts
    /// from the TSC can make the timer late by a moment but never early.
    pub fn retime_tsc_deadline(&mut self, deadline_ns: u64) {
        if self.armed_tsc_deadline().is_some() {
            self.timer.tsc_deadline_ns = deadline_ns;
        }
    }

    /// WRMSR IA32_TSC_DEADLINE: in TSC-deadline mode, arms the timer for the guest TSC
    /// value `tsc` (0 disarms), which comes at `deadline_ns` in `now_ns`'s clock
    /// ([`tsc_deadline_ns`]); ignored in the other modes.
    pub fn write_tsc_deadline(&mut self, tsc: u64, deadline_ns: u64) -> LapicEffect {
        if self.timer_mode() != TimerMode::TscDeadline {
            return LapicEffect::None;
        }
        self.timer.tsc_deadline = tsc;
        self.timer.tsc_deadline_ns = deadline_ns;
        LapicEffect::TimerChanged
    }

    /// The 32-bit register at `offset & 0xff0`.
    /// Reads 0 unless the APIC is in xAPIC mode (the page is gone otherwise).
    pub fn read(&mut self, offset: u64, now_ns: u64) -> u32 {
        let offset = offset & REG_MASK;
        if self.mode == ApicMode::Disabled {
            return 0;
        }
        match offset {
            REG_ID => u32::from(self.id) << HIGH_BYTE_SHIFT,
            REG_VERSION => VERSION,
            REG_TPR => u32::from(self.tpr),
            REG_APR | REG_EOI | REG_RRD => 0,
            REG_PPR => u32::from(self.ppr()),
            REG_LDR => u32::from(self.ldr) << HIGH_BYTE_SHIFT,
            REG_DFR => (self.dfr_model << DFR_MODEL_SHIFT) | DFR_RESERVED_ONES,
            REG_SVR => self.svr.bits(),
            REG_ISR..REG_TMR => self.isr.register((offset - REG_ISR) / REG_STRIDE),
            REG_TMR..REG_IRR => self.tmr.register((offset - REG_TMR) / REG_STRIDE),
            REG_IRR..REG_ESR => self.irr.register((offset - REG_IRR) / REG_STRIDE),
            REG_ESR => self.esr.bits(),
            REG_ICR_LOW => self.icr_low.bits(),
            REG_ICR_HIGH => self.icr_high,
            REG_LVT_TIMER..=REG_LVT_ERROR => self.lvt[Self::lvt_index(offset)].bits(),
            REG_TIMER_INITIAL => self.timer.initial,
            REG_TIMER_CURRENT if self.timer_mode() == TimerMode::TscDeadline => 0,
            REG_TIMER_CURRENT => self.timer.current(self.timer_periodic(), now_ns),
            REG_TIMER_DIVIDE => self.timer.divide_config,
            _ => 0,
        }
    }

    fn lvt_index(offset: u64) -> usize {
        usize::try_from((offset - REG_LVT_TIMER) / REG_STRIDE).unwrap_or(0) % LVT_COUNT
    }

    /// A 32-bit write to the register at `offset & 0xff0`; ignored while the APIC is
    /// globally disabled.
    pub fn write(&mut self, offset: u64, value: u32, now_ns: u64) -> LapicEffect {
        let offset = offset & REG_MASK;
        if self.mode == ApicMode::Disabled {
            return LapicEffect::None;
        }
        match offset {
            REG_ID => self.id = (value >> HIGH_BYTE_SHIFT) as u8,
            REG_TPR => self.tpr = value as u8,
            REG_EOI => return self.eoi(),
            REG_LDR => self.ldr = (value >> HIGH_BYTE_SHIFT) as u8,
            REG_DFR => self.dfr_model = value >> DFR_MODEL_SHIFT,
            REG_SVR => {
                self.timer_expired(now_ns);
                self.svr = Svr::from_bits_truncate(value);
                if !self.software_enabled() {
                    self.lvt.iter_mut().for_each(|lvt| lvt.insert(Lvt::MASKED));
                }
                return LapicEffect::TimerChanged;
            }
            REG_ESR => self.esr = core::mem::take(&mut self.errors),
            REG_ICR_LOW => {
                self.icr_low = IcrLow::from_bits_truncate(value);
                return self.send_ipi();
            }
            REG_ICR_HIGH => self.icr_high = value & (0xff << HIGH_BYTE_SHIFT),
            REG_LVT_TIMER..=REG_LVT_ERROR => {
                let index = Self::lvt_index(offset);
                let timer = index == LVT_TIMER;
                if timer {
                    // What happened under the old mask and mode stays as it was.
                    self.timer_expired(now_ns);
                }
                let forced = if self.software_enabled() { Lvt::empty() } else { Lvt::MASKED };
                let mut writable = LVT_WRITABLE[index];
                if timer && self.tsc_deadline_offered {
                    writable |= Lvt::TIMER_TSC_DEADLINE;
                }
                let old_mode = self.timer_mode();
                self.lvt[index] = (Lvt::from_bits_truncate(value) & writable) | forced;
                if timer {
                    // Into or out of TSC-deadline mode: the timer is disarmed.
                    if (old_mode == TimerMode::TscDeadline) != (self.timer_mode() == TimerMode::TscDeadline) {
                        self.timer.load(0, now_ns);
                        self.timer.tsc_deadline = 0;
                    }
                    return LapicEffect::TimerChanged;
                }
            }
            REG_TIMER_INITIAL if self.timer_mode() == TimerMode::TscDeadline => {}
            REG_TIMER_INITIAL => {
                self.timer.load(value, now_ns);
                return LapicEffect::TimerChanged;
            }
            REG_TIMER_DIVIDE => {
                self.timer_expired(now_ns);
                self.timer.set_divide(value, now_ns);
                return LapicEffect::TimerChanged;
            }
            _ => {}
        }
        LapicEffect::None
    }

    /// EOI: the highest vector in service leaves it.
    fn eoi(&mut self) -> LapicEffect {
        let Some(vector) = self.isr.highest() else { return LapicEffect::None };
        self.isr.clear(vector);
        LapicEffect::Eoi { vector, level_triggered: self.tmr.contains(vector) }
    }

    /// ICR low was written: the IPI it describes, if it is one that can be sent.
    fn send_ipi(&mut self) -> LapicEffect {
        let icr = self.icr_low;
        let mode = match DeliveryMode::from_bits((icr & IcrLow::DELIVERY_MODE).bits() >> DELIVERY_MODE_SHIFT) {
            Some(DeliveryMode::ExtInt) | None => return LapicEffect::None,
            Some(mode) => mode,
        };
        let vector = (icr & IcrLow::VECTOR).bits() as u8;
        if mode.has_vector() && vector < FIRST_LEGAL_VECTOR {
            self.error(Esr::SEND_ILLEGAL_VECTOR);
            return LapicEffect::None;
        }
        let shorthand = match (icr & IcrLow::SHORTHAND).bits() >> ICR_SHORTHAND_SHIFT {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        LapicEffect::Ipi(Ipi {
            vector,
            mode,
            logical: icr.contains(IcrLow::LOGICAL),
            dest: if self.mode == ApicMode::X2Apic {
                self.icr_high
            } else {
                xapic_dest((self.icr_high >> HIGH_BYTE_SHIFT) as u8)
            },
            shorthand,
            level_triggered: icr.contains(IcrLow::LEVEL_TRIGGERED),
            assert: icr.contains(IcrLow::LEVEL_ASSERT),
        })
    }

    /// Records an error; raises the LVT error interrupt if it is unmasked.
    fn error(&mut self, error: Esr) {
        self.errors |= error;
        let lvt = self.lvt[LVT_ERROR];
        let vector = lvt.vector();
        if !lvt.contains(Lvt::MASKED) && vector >= FIRST_LEGAL_VECTOR {
            self.irr.set(vector);
            self.tmr.clear(vector);
        }
    }

    /// An interrupt message for this CPU (from an IPI, the I/O APIC or its own LVT).
    pub fn accept(&mut self, mode: DeliveryMode, vector: u8, level_triggered: bool) {
        self.receive(mode, vector, level_triggered);
    }

    /// [`Lapic::accept`]; true if the CPU has something new to do.
    /// A globally disabled APIC takes nothing.
    pub fn receive(&mut self, mode: DeliveryMode, vector: u8, level_triggered: bool) -> bool {
        if self.mode == ApicMode::Disabled {
            return false;
        }
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if !self.software_enabled() {
                    return false;
                }
                if vector < FIRST_LEGAL_VECTOR {
                    self.error(Esr::RECEIVE_ILLEGAL_VECTOR);
                    return !self.lvt[LVT_ERROR].contains(Lvt::MASKED);
                }
                self.irr.set(vector);
                if level_triggered {
                    self.tmr.set(vector)
                } else {
                    self.tmr.clear(vector)
                }
            }
            DeliveryMode::Nmi => self.nmi = (self.nmi + 1).min(MAX_PENDING_NMIS),
            DeliveryMode::Init => {
                self.init();
                self.init = true;
                self.sipi = None;
                self.waiting_for_sipi = true;
            }
            DeliveryMode::StartUp => {
                if !self.waiting_for_sipi {
                    return false;
                }
                self.waiting_for_sipi = false;
                self.sipi = Some(vector);
            }
            // SMI is not emulated; ExtINT is the PIC's business (see `accepts_pic`).
            DeliveryMode::Smi | DeliveryMode::ExtInt => return false,
        }
        true
    }

    /// The highest requested vector if the CPU may take it now: its class is above the
    /// processor priority and the APIC is software-enabled.
    pub fn pending_interrupt(&self) -> Option<u8> {
        if self.mode == ApicMode::Disabled {
            return None;
        }
        let vector = self.irr.highest()?;
        (self.software_enabled() && vector & CLASS > self.ppr() & CLASS).then_some(vector)
    }

    /// The highest requested vector when only the TPR holds it back (its class is above
    /// the class in service, at or below the TPR's): it becomes deliverable when the TPR
    /// falls below its class.
    pub fn blocked_by_tpr(&self) -> Option<u8> {
        if self.mode == ApicMode::Disabled || !self.software_enabled() {
            return None;
        }
        let vector = self.irr.highest()?;
        let isrv = self.isr.highest().unwrap_or(0);
        (vector & CLASS > isrv & CLASS && vector & CLASS <= self.tpr & CLASS).then_some(vector)
    }

    /// The CPU takes the pending interrupt: it moves from IRR to ISR.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = self.pending_interrupt()?;
        self.irr.clear(vector);
        self.isr.set(vector);
        Some(vector)
    }

    /// An NMI is pending: takes one of them.
    pub fn take_nmi(&mut self) -> bool {
        let pending = self.nmi > 0;
        self.nmi = self.nmi.saturating_sub(1);
        pending
    }

    /// Drops the pending NMIs beyond `max`: the CPU that owns the APIC holds one NMI in
    /// service and one latched at most (SDM 6.7.1), so NMIs that arrive while it has one
    /// of each merge. The owner calls this with what it can still hold before it takes
    /// one ([`Lapic::take_nmi`]).
    pub fn limit_nmis(&mut self, max: u8) {
        self.nmi = self.nmi.min(max);
    }

    /// An INIT arrived since the last call: the APIC is already in its INIT state; the CPU
    /// must reset and wait for a SIPI. Check it before [`Lapic::take_sipi`].
    pub fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.init)
    }

    /// The vector of a SIPI that arrived while the CPU waited for one: start in real mode
    /// at `vector << 12`.
    pub fn take_sipi(&mut self) -> Option<u8> {
        self.sipi.take()
    }

    /// Whether an NMI, INIT or SIPI waits to be taken (a halted CPU must wake for it).
    pub fn has_event(&self) -> bool {
        self.nmi > 0 || self.init || self.sipi.is_some()
    }

    /// Whether the PIC's INTR reaches this CPU: LINT0 is ExtINT and unmasked, or the APIC
    /// is globally disabled (LINT0 is then the CPU's INTR pin).
    pub fn accepts_pic(&self) -> bool {
        if self.mode == ApicMode::Disabled {
            return true;
        }
        let lint0 = self.lvt[LVT_LINT0];
        !lint0.contains(Lvt::MASKED) && lint0.mode() == Some(DeliveryMode::ExtInt)
    }

    /// Whether a message for `dest` is for this CPU. Physical: the APIC ID, or 0xff for all.
    /// Logical: 0xff is all; flat model: any common bit with the LDR; cluster model: the
    /// same cluster (high nibble) and a common bit in the low nibble.
    ///
    /// In x2APIC mode `dest` is 32 bits: physical, the x2APIC ID; logical, the cluster
    /// (bits 31-16) and a common bit with the LDR's member bits (15-0). [`BROADCAST`] reaches
    /// every CPU in either mode; an xAPIC-format 0xff is turned into it by [`xapic_dest`].
    /// A globally disabled APIC (IA32_APIC_BASE.EN clear) takes no messages.
    pub fn matches(&self, dest: u32, logical: bool) -> bool {
        if self.mode == ApicMode::Disabled {
            return false;
        }
        if dest == BROADCAST {
            return true;
        }
        if self.mode == ApicMode::X2Apic {
            return if logical {
                let ldr = self.x2apic_ldr();
                dest >> 16 == ldr >> 16 && dest & ldr & 0xffff != 0
            } else {
                dest == self.x2apic_id()
            };
        }
        let Ok(dest) = u8::try_from(dest) else { return false };
        if dest == 0xff {
            return true;
        }
        if !logical {
            return dest == self.id;
        }
        if self.dfr_model == DFR_MODEL_FLAT {
            dest & self.ldr != 0
        } else {
            dest >> 4 == self.ldr >> 4 && dest & self.ldr & 0xf != 0
        }
    }

    /// When the timer next fires, if it is counting and its LVT entry is unmasked.
    pub fn timer_deadline(&self) -> Option<u64> {
        if self.lvt[LVT_TIMER].contains(Lvt::MASKED) {
            None
        } else if self.timer_mode() == TimerMode::TscDeadline {
            (self.timer.tsc_deadline != 0).then_some(self.timer.tsc_deadline_ns)
        } else {
            self.timer.deadline(self.timer_periodic())
        }
    }

    /// Fires the timer if it is due: its vector goes into IRR (if the LVT entry is unmasked),
    /// a periodic timer reloads. True if an interrupt became pending.
    pub fn timer_expired(&mut self, now_ns: u64) -> bool {
        if self.timer_mode() == TimerMode::TscDeadline {
            if self.timer.tsc_deadline == 0 || now_ns < self.timer.tsc_deadline_ns {
                return false;
            }
            self.timer.tsc_deadline = 0;
        } else if !self.timer.expire(self.timer_periodic(), now_ns) {
            return false;
        }
        let lvt = self.lvt[LVT_TIMER];
        if lvt.contains(Lvt::MASKED) {
            return false;
        }
        self.receive(DeliveryMode::Fixed, lvt.vector(), false)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const T0: u64 = 1_000_000_000;
    const US: u64 = 1_000;

    /// The flag sets give the writable bits the SDM lists (hand-written masks before).
    #[test]
    fn the_flag_sets_are_the_writable_bits() {
        assert_eq!(IcrLow::all().bits(), 0x000c_cfff);
        assert_eq!(Svr::all().bits(), 0x3ff);
        assert_eq!(LVT_WRITABLE.map(|l| l.bits()), [0x300ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff]);
        assert_eq!(Lvt::delivering(DeliveryMode::ExtInt).bits(), 0x700);
    }

    fn enabled(id: u8) -> Lapic {
        let mut lapic = Lapic::new(id, false);
        lapic.write(REG_SVR, Svr::ENABLE.bits() | 0xff, T0);
        lapic
    }

    fn fixed(lapic: &mut Lapic, vector: u8) {
        lapic.accept(DeliveryMode::Fixed, vector, false);
    }

    fn icr(lapic: &mut Lapic, high: u32, low: u32) -> LapicEffect {
        lapic.write(REG_ICR_HIGH, high, T0);
        lapic.write(REG_ICR_LOW, low, T0)
    }

    fn ipi(effect: LapicEffect) -> Ipi {
        match effect {
            LapicEffect::Ipi(ipi) => ipi,
            other => panic!("no IPI: {other:?}"),
        }
    }

    #[test]
    fn reset_values() {
        let mut ap = Lapic::new(3, false);
        let expect = [
            (REG_ID, 0x0300_0000),
            (REG_VERSION, VERSION),
            (REG_TPR, 0),
            (REG_APR, 0),
            (REG_PPR, 0),
            (REG_LDR, 0),
            (REG_DFR, 0xffff_ffff),
            (REG_SVR, 0xff),
            (REG_ESR, 0),
            (REG_ICR_LOW, 0),
            (REG_ICR_HIGH, 0),
            (0x320, 0x10000),
            (0x330, 0x10000),
            (0x340, 0x10000),
            (0x350, 0x10000),
            (0x360, 0x10000),
            (0x370, 0x10000),
            (REG_TIMER_INITIAL, 0),
            (REG_TIMER_CURRENT, 0),
            (REG_TIMER_DIVIDE, 0),
        ];
        for (offset, value) in expect {
            assert_eq!(ap.read(offset, T0), value, "register {offset:#x}");
        }
        for i in 0..8 {
            assert_eq!(ap.read(REG_ISR + i * 0x10, T0), 0);
            assert_eq!(ap.read(REG_TMR + i * 0x10, T0), 0);
            assert_eq!(ap.read(REG_IRR + i * 0x10, T0), 0);
        }
        assert!(ap.waiting_for_sipi() && !ap.accepts_pic() && !ap.software_enabled());
        let mut bsp = Lapic::new(0, true);
        assert_eq!(bsp.read(REG_SVR, T0), 0x1ff);
        assert_eq!(bsp.read(0x350, T0), 0x700);
        assert_eq!(bsp.read(0x360, T0), 0x400);
        assert!(bsp.accepts_pic() && !bsp.waiting_for_sipi());
        // Reserved registers and the high 12 bytes of a slot read 0; writes do nothing.
        bsp.write(0x2f0, 0xffff_ffff, T0);
        assert_eq!(bsp.read(0x2f0, T0), 0);
        assert_eq!(bsp.read(REG_VERSION + 4, T0), VERSION, "offset & 0xff0");
        bsp.write(REG_VERSION, 0, T0);
        assert_eq!(bsp.read(REG_VERSION, T0), VERSION);
    }

    #[test]
    fn registers_keep_their_writable_bits() {
        let mut lapic = enabled(1);
        lapic.write(REG_ID, 0xffff_ffff, T0);
        assert_eq!(lapic.read(REG_ID, T0), 0xff00_0000);
        lapic.write(REG_ID, 0x0100_0000, T0);
        lapic.write(REG_TPR, 0x1234, T0);
        assert_eq!(lapic.read(REG_TPR, T0), 0x34);
        lapic.write(REG_LDR, 0x1234_5678, T0);
        assert_eq!(lapic.read(REG_LDR, T0), 0x1200_0000);
        lapic.write(REG_DFR, 0x0000_0000, T0);
        assert_eq!(lapic.read(REG_DFR, T0), 0x0fff_ffff);
        lapic.write(REG_SVR, 0xffff_ffff, T0);
        assert_eq!(lapic.read(REG_SVR, T0), 0x3ff);
        lapic.write(REG_ICR_LOW, 0xffff_ffff, T0);
        assert_eq!(lapic.read(REG_ICR_LOW, T0), 0x000c_cfff, "delivery status idle");
        lapic.write(REG_ICR_HIGH, 0xffff_ffff, T0);
        assert_eq!(lapic.read(REG_ICR_HIGH, T0), 0xff00_0000);
        let lvts = [0x0003_00ff, 0x0001_07ff, 0x0001_07ff, 0x0001_a7ff, 0x0001_a7ff, 0x0001_00ff];
        for (i, writable) in lvts.into_iter().enumerate() {
            let offset = REG_LVT_TIMER + 0x10 * i as u64;
            lapic.write(offset, 0xffff_ffff, T0);
            assert_eq!(lapic.read(offset, T0), writable, "LVT {offset:#x}");
        }
        lapic.write(REG_TIMER_DIVIDE, 0xffff_ffff, T0);
        assert_eq!(lapic.read(REG_TIMER_DIVIDE, T0), 0xb);
    }

    #[test]
    fn tpr_and_ppr_mask_interrupts() {
        let mut lapic = enabled(0);
        fixed(&mut lapic, 0x45);
        lapic.write(REG_TPR, 0x45, T0);
        assert_eq!(lapic.pending_interrupt(), None, "same class as TPR: blocked");
        assert_eq!(lapic.acknowledge(), None);
        lapic.write(REG_TPR, 0x3f, T0);
        assert_eq!(lapic.read(REG_PPR, T0), 0x3f);
        assert_eq!(lapic.pending_interrupt(), Some(0x45));
        assert_eq!(lapic.acknowledge(), Some(0x45));
        // In service: PPR is its class, which blocks the same class and below.
        assert_eq!(lapic.read(REG_PPR, T0), 0x40);
        fixed(&mut lapic, 0x4f);
        fixed(&mut lapic, 0x30);
        assert_eq!(lapic.pending_interrupt(), None);
        fixed(&mut lapic, 0x50);
        assert_eq!(lapic.pending_interrupt(), Some(0x50));
        // TPR above the ISR class wins.
        lapic.write(REG_TPR, 0x60, T0);
        assert_eq!(lapic.read(REG_PPR, T0), 0x60);
        assert_eq!(lapic.pending_interrupt(), None);
        assert_eq!(lapic.blocked_by_tpr(), Some(0x50), "the TPR alone holds 0x50 back");
        lapic.write(REG_TPR, 0x40, T0);
        assert_eq!(lapic.blocked_by_tpr(), None, "deliverable");
        lapic.write(REG_TPR, 0, T0);
        lapic.write(REG_EOI, 0, T0);
        lapic.acknowledge();
        assert_eq!(lapic.blocked_by_tpr(), None, "held back by the class in service");
    }

    #[test]
    fn highest_vector_first_and_nested_eoi() {
        let mut lapic = enabled(0);
        for vector in [0x31, 0x81, 0x80, 0xfe, 0x20] {
            fixed(&mut lapic, vector);
        }
        assert_eq!(lapic.read(REG_IRR + 0x10, T0), 1 << 0x11 | 1);
        assert_eq!(lapic.read(REG_IRR + 0x40, T0), 0b11);
        assert_eq!(lapic.acknowledge(), Some(0xfe));
        assert_eq!(lapic.acknowledge(), None, "0x81 is below 0xfe in service");
        assert_eq!(lapic.read(REG_ISR + 0x70, T0), 1 << 30);
        assert_eq!(
            lapic.write(REG_EOI, 0, T0),
            LapicEffect::Eoi { vector: 0xfe, level_triggered: false }
        );
        assert_eq!(lapic.acknowledge(), Some(0x81));
        // A higher interrupt nests over one in service; EOIs end the highest first.
        fixed(&mut lapic, 0x90);
        assert_eq!(lapic.acknowledge(), Some(0x90));
        assert_eq!(lapic.acknowledge(), None);
        assert!(matches!(lapic.write(REG_EOI, 0, T0), LapicEffect::Eoi { vector: 0x90, .. }));
        assert!(matches!(lapic.write(REG_EOI, 0, T0), LapicEffect::Eoi { vector: 0x81, .. }));
        let order: Vec<u8> = core::iter::from_fn(|| {
            let vector = lapic.acknowledge()?;
            lapic.write(REG_EOI, 0, T0);
            Some(vector)
        })
        .collect();
        assert_eq!(order, [0x80, 0x31, 0x20]);
        assert_eq!(lapic.write(REG_EOI, 0, T0), LapicEffect::None, "nothing in service");
    }

    #[test]
    fn level_triggered_sets_tmr_and_reports_eoi() {
        let mut lapic = enabled(0);
        lapic.accept(DeliveryMode::Fixed, 0x61, true);
        assert_eq!(lapic.read(REG_TMR + 0x30, T0), 1 << 1);
        assert_eq!(lapic.acknowledge(), Some(0x61));
        let eoi = lapic.write(REG_EOI, 0, T0);
        assert_eq!(eoi, LapicEffect::Eoi { vector: 0x61, level_triggered: true });
        lapic.accept(DeliveryMode::Fixed, 0x61, false);
        assert_eq!(lapic.read(REG_TMR + 0x30, T0), 0);
    }

    #[test]
    fn software_disable_masks_lvts() {
        let mut lapic = Lapic::new(0, true);
        lapic.write(REG_LVT_TIMER, 0x30, T0);
        lapic.write(REG_SVR, 0xff, T0);
        assert!(!lapic.accepts_pic());
        assert_eq!(lapic.read(REG_LVT_TIMER, T0), 0x10030);
        assert_eq!(lapic.read(0x350, T0), 0x10700);
        lapic.write(0x350, 0x700, T0);
        assert_eq!(lapic.read(0x350, T0), 0x10700, "cannot unmask while disabled");
        // Fixed interrupts are dropped, NMIs taken.
        fixed(&mut lapic, 0x40);
        lapic.accept(DeliveryMode::Nmi, 0, false);
        assert_eq!(lapic.read(REG_IRR + 0x20, T0), 0);
        assert!(lapic.take_nmi() && !lapic.take_nmi());
        // Enabled again: the LVTs stay masked until written.
        lapic.write(REG_SVR, 0x1ff, T0);
        assert!(!lapic.accepts_pic());
        lapic.write(0x350, 0x700, T0);
        assert!(lapic.accepts_pic());
        // IRR is held while disabled, delivered when enabled.
        fixed(&mut lapic, 0x40);
        lapic.write(REG_SVR, 0xff, T0);
        assert_eq!(lapic.pending_interrupt(), None);
        lapic.write(REG_SVR, 0x1ff, T0);
        assert_eq!(lapic.pending_interrupt(), Some(0x40));
    }

    #[test]
    fn illegal_vectors_set_esr() {
        let mut lapic = enabled(0);
        assert_eq!(icr(&mut lapic, 0, 0x0000_000f), LapicEffect::None);
        fixed(&mut lapic, 3);
        assert_eq!(lapic.read(REG_ESR, T0), 0, "ESR shows errors after a write");
        lapic.write(REG_ESR, 0, T0);
        assert_eq!(lapic.read(REG_ESR, T0), 0x60);
        lapic.write(REG_ESR, 0, T0);
        assert_eq!(lapic.read(REG_ESR, T0), 0);
        // The error LVT raises its vector.
        lapic.write(REG_LVT_ERROR, 0xe0, T0);
        fixed(&mut lapic, 5);
        assert_eq!(lapic.pending_interrupt(), Some(0xe0));
        assert_eq!(lapic.read(REG_IRR, T0), 0);
    }

    #[test]
    fn icr_decodes_ipis() {
        let mut lapic = enabled(0);
        let sent = ipi(icr(&mut lapic, 0x0300_0000, 0x0000_4031));
        let expect = Ipi {
            vector: 0x31,
            mode: DeliveryMode::Fixed,
            logical: false,
            dest: 3,
            shorthand: Shorthand::None,
            level_triggered: false,
            assert: true,
        };
        assert_eq!(sent, expect);
        let cases = [
            (0x0000_4931, DeliveryMode::LowestPriority, true, Shorthand::None),
            (0x0004_4400, DeliveryMode::Nmi, false, Shorthand::SelfOnly),
            (0x0008_4500, DeliveryMode::Init, false, Shorthand::AllIncludingSelf),
            (0x000c_4608, DeliveryMode::StartUp, false, Shorthand::AllExcludingSelf),
            (0x0000_4200, DeliveryMode::Smi, false, Shorthand::None),
        ];
        for (low, mode, logical, shorthand) in cases {
            let sent = ipi(icr(&mut lapic, 0x0f00_0000, low));
            assert_eq!(
                (sent.mode, sent.logical, sent.shorthand, sent.dest),
                (mode, logical, shorthand, 0xf)
            );
        }
        // INIT level de-assert is decoded as such; the router ignores it.
        let deassert = ipi(icr(&mut lapic, 0, 0x0008_8500));
        assert!(deassert.level_triggered && !deassert.assert);
        // Reserved modes are not sent.
        assert_eq!(icr(&mut lapic, 0, 0x0000_4330), LapicEffect::None);
        assert_eq!(icr(&mut lapic, 0, 0x0000_4730), LapicEffect::None);
    }

    /// Two NMIs that meet are both kept (one for the CPU to take, one latched); a third
    /// merges, and the owner drops what its CPU cannot hold.
    #[test]
    fn nmis_are_counted_up_to_two() {
        let mut lapic = enabled(0);
        for _ in 0..3 {
            lapic.accept(DeliveryMode::Nmi, 0, false);
        }
        assert!(lapic.has_event());
        assert!(lapic.take_nmi() && lapic.take_nmi() && !lapic.take_nmi());
        assert!(!lapic.has_event());
        // Sent by ICR (to itself, physical): one each.
        let nmi = ipi(icr(&mut lapic, 0, 0x400));
        assert_eq!((nmi.mode, nmi.dest, nmi.logical), (DeliveryMode::Nmi, 0, false));
        lapic.accept(nmi.mode, nmi.vector, false);
        lapic.accept(nmi.mode, nmi.vector, false);
        // The CPU is in its NMI handler with one latched: nothing more fits.
        lapic.limit_nmis(0);
        assert!(!lapic.take_nmi());
        lapic.accept(DeliveryMode::Nmi, 0, false);
        lapic.accept(DeliveryMode::Nmi, 0, false);
        lapic.limit_nmis(1);
        assert!(lapic.take_nmi() && !lapic.take_nmi());
    }

    #[test]
    fn init_and_sipi() {
        let mut ap = Lapic::new(1, false);
        assert_eq!(ap.take_sipi(), None);
        ap.accept(DeliveryMode::StartUp, 0x9a, false);
        assert!(!ap.waiting_for_sipi());
        assert_eq!(ap.take_sipi(), Some(0x9a));
        ap.accept(DeliveryMode::StartUp, 0x9b, false);
        assert_eq!(ap.take_sipi(), None, "a second SIPI is ignored");
        // INIT resets the registers but the ID, and waits for a SIPI again.
        ap.write(REG_SVR, 0x1ff, T0);
        ap.write(REG_TPR, 0x20, T0);
        ap.write(REG_LDR, 0x0200_0000, T0);
        ap.write(REG_TIMER_INITIAL, 1000, T0);
        fixed(&mut ap, 0x40);
        ap.accept(DeliveryMode::Init, 0, false);
        assert!(ap.has_event());
        assert!(ap.take_init() && !ap.take_init());
        assert!(!ap.has_event());
        assert!(ap.waiting_for_sipi());
        assert_eq!(ap.id(), 1);
        assert_eq!(ap.read(REG_SVR, T0), 0xff);
        assert_eq!(ap.read(REG_TPR, T0), 0);
        assert_eq!(ap.read(REG_LDR, T0), 0);
        assert_eq!(ap.read(REG_IRR + 0x20, T0), 0);
        assert_eq!(ap.timer_deadline(), None);
        assert_eq!(ap.read(REG_TIMER_CURRENT, T0), 0);
        ap.accept(DeliveryMode::StartUp, 0x10, false);
        assert_eq!(ap.take_sipi(), Some(0x10));
    }

    /// INIT and SIPI back to back (Linux's AP start), before the CPU looks: taking the INIT
    /// leaves the SIPI to be taken next (the kernel APIC reports them one exit each); the
    /// second SIPI of the pair is ignored, the CPU no longer waits.
    #[test]
    fn a_sipi_right_after_init_waits_for_the_init_to_be_taken() {
        let mut ap = Lapic::new(1, false);
        assert_eq!(ap.take_sipi(), None);
        ap.accept(DeliveryMode::Init, 0, false);
        ap.accept(DeliveryMode::StartUp, 0x9a, false);
        ap.accept(DeliveryMode::StartUp, 0x9a, false);
        assert!(ap.take_init());
        assert!(ap.has_event(), "the SIPI is still there");
        assert_eq!(ap.take_sipi(), Some(0x9a));
        assert!(!ap.has_event() && !ap.waiting_for_sipi());
    }

    #[test]
    fn logical_destinations() {
        let mut lapic = enabled(2);
        assert!(lapic.matches(2, false) && lapic.matches(0xff, false));
        assert!(!lapic.matches(3, false));
        lapic.write(REG_LDR, 0x0400_0000, T0);
        assert!(
            lapic.matches(0x04, true) && lapic.matches(0x0c, true) && lapic.matches(0xff, true)
        );
        assert!(!lapic.matches(0x03, true) && !lapic.matches(0x04, false));
        // Cluster 1, member bit 1.
        lapic.write(REG_DFR, 0x0fff_ffff, T0);
        lapic.write(REG_LDR, 0x1200_0000, T0);
        assert!(
            lapic.matches(0x12, true) && lapic.matches(0x1f, true) && lapic.matches(0xff, true)
        );
        assert!(!lapic.matches(0x11, true), "other member");
        assert!(!lapic.matches(0x22, true), "other cluster");
        assert!(!lapic.matches(0x02, true));
    }

    #[test]
    fn one_shot_timer() {
        let mut lapic = enabled(0);
        lapic.write(REG_TIMER_DIVIDE, 0b0000, T0); // divide by 2
        lapic.write(REG_LVT_TIMER, 0x30, T0);
        assert_eq!(lapic.write(REG_TIMER_INITIAL, 1000, T0), LapicEffect::TimerChanged);
        assert_eq!(lapic.timer_deadline(), Some(T0 + 2000));
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 1), 1000);
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 2), 999);
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 1999), 1);
        assert!(!lapic.timer_expired(T0 + 1999));
        assert_eq!(lapic.pending_interrupt(), None);
        assert!(lapic.timer_expired(T0 + 2500));
        assert_eq!(lapic.pending_interrupt(), Some(0x30));
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 2500), 0);
        assert_eq!(lapic.timer_deadline(), None);
        assert!(!lapic.timer_expired(T0 + 10_000));
        // A new count restarts it; 0 stops it.
        lapic.write(REG_TIMER_INITIAL, 10, T0 + 3000);
        assert_eq!(lapic.timer_deadline(), Some(T0 + 3020));
        lapic.write(REG_TIMER_INITIAL, 0, T0 + 3010);
        assert_eq!(lapic.timer_deadline(), None);
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 3010), 0);
    }

    #[test]
    fn tsc_deadline_timer() {
        const TSC_DEADLINE: u32 = 2 << 17;
        let mut lapic = enabled(0);
        // Not offered: bit 18 is dropped, the mode stays one-shot, the MSR reads 0.
        lapic.write(REG_LVT_TIMER, TSC_DEADLINE | 0x40, T0);
        assert_eq!(lapic.read(REG_LVT_TIMER, T0), 0x40);
        assert_eq!(lapic.write_tsc_deadline(5000, T0 + 100), LapicEffect::None);
        assert_eq!(lapic.read_tsc_deadline(), 0);
        assert_eq!(lapic.timer_deadline(), None);

        lapic.offer_tsc_deadline();
        // A count running in one-shot mode is disarmed by the switch.
        lapic.write(REG_TIMER_INITIAL, 1000, T0);
        assert_eq!(lapic.write(REG_LVT_TIMER, TSC_DEADLINE | 0x40, T0), LapicEffect::TimerChanged);
        assert_eq!(lapic.read(REG_LVT_TIMER, T0), TSC_DEADLINE | 0x40);
        assert_eq!(lapic.timer_deadline(), None);
        assert_eq!((lapic.read(REG_TIMER_INITIAL, T0), lapic.read(REG_TIMER_CURRENT, T0)), (0, 0));
        // The initial count ignores writes in this mode.
        assert_eq!(lapic.write(REG_TIMER_INITIAL, 1000, T0), LapicEffect::None);
        assert_eq!(lapic.timer_deadline(), None);
        // Armed: fires once at its time, then the MSR reads 0.
        assert_eq!(lapic.write_tsc_deadline(5000, T0 + 100), LapicEffect::TimerChanged);
        assert_eq!(lapic.read_tsc_deadline(), 5000);
        assert_eq!(lapic.timer_deadline(), Some(T0 + 100));
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 50), 0);
        assert!(!lapic.timer_expired(T0 + 99));
        assert!(lapic.timer_expired(T0 + 100));
        assert_eq!(lapic.pending_interrupt(), Some(0x40));
        assert_eq!(lapic.read_tsc_deadline(), 0);
        assert_eq!(lapic.timer_deadline(), None);
        assert!(!lapic.timer_expired(T0 + 1000));
        // 0 disarms.
        lapic.write_tsc_deadline(6000, T0 + 200);
        lapic.write_tsc_deadline(0, T0 + 300);
        assert_eq!(lapic.timer_deadline(), None);
        assert!(!lapic.timer_expired(T0 + 1000));
        // Masked: no deadline to arm; a deadline that passes while masked is gone.
        lapic.write(REG_LVT_TIMER, TSC_DEADLINE | 0x40 | (1 << 16), T0);
        lapic.write_tsc_deadline(7000, T0 + 400);
        assert_eq!(lapic.timer_deadline(), None);
        assert!(!lapic.timer_expired(T0 + 500));
        assert_eq!(lapic.read_tsc_deadline(), 0);
        // Back to one-shot: the deadline is disarmed and the MSR reads 0 again.
        lapic.write(REG_LVT_TIMER, TSC_DEADLINE | 0x40, T0);
        lapic.write_tsc_deadline(8000, T0 + 600);
        lapic.write(REG_LVT_TIMER, 0x40, T0 + 10);
        assert_eq!(lapic.read_tsc_deadline(), 0);
        assert_eq!(lapic.timer_deadline(), None);
        lapic.write(REG_LVT_TIMER, TSC_DEADLINE | 0x40, T0 + 20);
        assert_eq!(lapic.read_tsc_deadline(), 0, "switching back does not re-arm the old deadline");
        // Retimed from the TSC: a clock that ran ahead does not fire it early.
        lapic.write_tsc_deadline(9000, T0 + 700);
        assert_eq!(lapic.armed_tsc_deadline(), Some(9000));
        lapic.retime_tsc_deadline(T0 + 900);
        assert!(!lapic.timer_expired(T0 + 800));
        assert_eq!(lapic.timer_deadline(), Some(T0 + 900));
        assert!(lapic.timer_expired(T0 + 900));
        assert_eq!(lapic.armed_tsc_deadline(), None);
        lapic.retime_tsc_deadline(T0 + 2000);
        assert_eq!(lapic.timer_deadline(), None, "nothing to retime once fired");
        // INIT keeps the offer (the APIC's owner made it once).
        lapic.init();
        assert!(lapic.tsc_deadline_offered());
    }

    #[test]
    fn tsc_deadline_in_ns() {
        // 2 GHz: 2 ticks per ns, rounded up.
        assert_eq!(tsc_deadline_ns(1_000 + 2_000, 1_000, T0, 2_000_000), Some(T0 + 1_000));
        assert_eq!(tsc_deadline_ns(1_000 + 3, 1_000, T0, 2_000_000), Some(T0 + 2));
        // Passed or now: at once.
        assert_eq!(tsc_deadline_ns(500, 1_000, T0, 2_000_000), Some(T0));
        assert_eq!(tsc_deadline_ns(1_000, 1_000, T0, 2_000_000), Some(T0));
        // Far away: saturates, never wraps.
        assert_eq!(tsc_deadline_ns(u64::MAX, 0, T0, 1), Some(u64::MAX));
        assert_eq!(tsc_deadline_ns(5, 0, T0, 0), None);
    }

    #[test]
    fn divider_values() {
        let mut lapic = enabled(0);
        lapic.write(REG_LVT_TIMER, 0x30, T0);
        let divisors = [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ];
        for (config, divisor) in divisors {
            lapic.write(REG_TIMER_DIVIDE, config, T0);
            lapic.write(REG_TIMER_INITIAL, 100, T0);
            assert_eq!(lapic.timer_deadline(), Some(T0 + 100 * divisor), "config {config:#b}");
            assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 10 * divisor), 90);
        }
        // A new divider keeps the ticks counted: 10 ticks by 1, then by 16.
        lapic.write(REG_TIMER_DIVIDE, 0b0011, T0 + 10);
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 10), 90);
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 10 + 16 * 5), 85);
        assert_eq!(lapic.timer_deadline(), Some(T0 + 10 + 16 * 90));
    }

    #[test]
    fn periodic_timer() {
        let mut lapic = enabled(0);
        lapic.write(REG_TIMER_DIVIDE, 0b1011, T0); // by 1
        lapic.write(REG_LVT_TIMER, Lvt::TIMER_PERIODIC.bits() | 0x40, T0);
        lapic.write(REG_TIMER_INITIAL, 1_000_000, T0); // 1 ms
        assert_eq!(lapic.timer_deadline(), Some(T0 + 1_000_000));
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 1_250_000), 750_000, "reloaded");
        assert!(lapic.timer_expired(T0 + 1_000_000));
        assert_eq!(lapic.timer_deadline(), Some(T0 + 2_000_000));
        assert_eq!(lapic.acknowledge(), Some(0x40));
        // Late by 3.5 periods: one interrupt, the next deadline stays on the grid.
        assert!(lapic.timer_expired(T0 + 5_500_000));
        assert_eq!(lapic.timer_deadline(), Some(T0 + 6_000_000));
        assert!(!lapic.timer_expired(T0 + 5_999_999));
        // Faster than 200 us: fires every 200 us, counts at the programmed rate.
        lapic.write(REG_TIMER_INITIAL, 1000, T0);
        assert_eq!(lapic.timer_deadline(), Some(T0 + MIN_PERIODIC_NS));
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 2_300), 700);
        assert!(lapic.timer_expired(T0 + MIN_PERIODIC_NS));
        assert_eq!(lapic.timer_deadline(), Some(T0 + 2 * MIN_PERIODIC_NS));
        // Switching to one-shot: stops after the current count.
        lapic.write(REG_LVT_TIMER, 0x40, T0 + 250 * US);
        lapic.write(REG_TIMER_INITIAL, 1000, T0 + 250 * US);
        assert!(lapic.timer_expired(T0 + 260 * US));
        assert_eq!(lapic.timer_deadline(), None);
    }

    #[test]
    fn masked_timer_counts_without_interrupts() {
        let mut lapic = enabled(0);
        lapic.write(REG_TIMER_DIVIDE, 0b1011, T0);
        lapic.write(REG_LVT_TIMER, Lvt::MASKED.bits() | 0x30, T0);
        lapic.write(REG_TIMER_INITIAL, 1000, T0);
        assert_eq!(lapic.timer_deadline(), None, "no need to wake for it");
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 400), 600);
        assert!(!lapic.timer_expired(T0 + 2000));
        assert_eq!(lapic.read(REG_TIMER_CURRENT, T0 + 2000), 0);
        // Unmasking after the expiry does not fire the lost one-shot.
        lapic.write(REG_LVT_TIMER, 0x30, T0 + 3000);
        assert_eq!(lapic.timer_deadline(), None);
        assert!(!lapic.timer_expired(T0 + 4000));
        assert_eq!(lapic.pending_interrupt(), None);
        // Masked periodic: unmasking fires from the next period on.
        lapic.write(REG_LVT_TIMER, (Lvt::MASKED | Lvt::TIMER_PERIODIC).bits() | 0x30, T0);
        lapic.write(REG_TIMER_INITIAL, 1_000_000, T0);
        lapic.write(REG_LVT_TIMER, Lvt::TIMER_PERIODIC.bits() | 0x30, T0 + 2_500_000);
        assert_eq!(lapic.timer_deadline(), Some(T0 + 3_000_000));
        assert_eq!(lapic.pending_interrupt(), None);
    }

    #[test]
    fn random_writes_never_panic() {
        let mut lapic = Lapic::new(0, true);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = 0u64;
        for _ in 0..200_000 {
            let r = next();
            now = match r % 8 {
                0 => now.saturating_add(r >> 8),
                1 => now.saturating_sub(r % 1000),
                _ => now.saturating_add(r % 5000),
            };
            let offset = (r >> 8) % 0x1000;
            let value = (next() >> 16) as u32;
            if r % 3 == 0 {
                lapic.read(offset, now);
            } else {
                lapic.write(offset, value, now);
            }
            let mode = DeliveryMode::from_bits(value).unwrap_or(DeliveryMode::Fixed);
            lapic.accept(mode, value as u8, r % 5 == 0);
            lapic.acknowledge();
            lapic.timer_expired(now);
            lapic.timer_deadline();
            lapic.matches(value, r % 2 == 0);
            let msr = X2APIC_MSR_FIRST + (r >> 20) as u32 % 0x100;
            if r % 7 == 0 {
                let _ = lapic.msr_read(msr, now);
            } else {
                let _ = lapic.msr_write(msr, next(), now);
            }
            if r % 1000 == 0 {
                let mode = [ApicMode::Disabled, ApicMode::XApic, ApicMode::X2Apic][(r >> 12) as usize % 3];
                lapic.set_mode(mode);
            }
        }
    }

    const X2_ID: u32 = 0x802;
    const X2_VERSION: u32 = 0x803;
    const X2_TPR: u32 = 0x808;
    const X2_PPR: u32 = 0x80a;
    const X2_EOI: u32 = 0x80b;
    const X2_LDR: u32 = 0x80d;
    const X2_DFR: u32 = 0x80e;
    const X2_SVR: u32 = 0x80f;
    const X2_ESR: u32 = 0x828;
    const X2_ICR: u32 = 0x830;
    const X2_ICR_HIGH: u32 = 0x831;
    const X2_LVT_TIMER: u32 = 0x832;
    const X2_TIMER_INITIAL: u32 = 0x838;
    const X2_TIMER_CURRENT: u32 = 0x839;
    const X2_SELF_IPI: u32 = 0x83f;

    fn x2apic(id: u8) -> Lapic {
        let mut lapic = enabled(id);
        assert!(lapic.set_mode(ApicMode::X2Apic));
        lapic
    }

    /// The xAPIC ID is writable, the x2APIC ID is the initial APIC ID: x2APIC mode and a
    /// global disable (power-up state when enabled again) bring the initial ID back.
    #[test]
    fn x2apic_and_disable_restore_the_initial_id() {
        let mut lapic = enabled(1);
        lapic.write(REG_ID, 0x0200_0000, T0);
        assert_eq!(lapic.read(REG_ID, T0), 0x0200_0000);
        assert!(lapic.matches(2, false) && !lapic.matches(1, false));
        assert!(lapic.set_mode(ApicMode::X2Apic));
        assert_eq!(lapic.msr_read(X2_ID, T0), Ok(1));
        assert_eq!(lapic.msr_read(X2_LDR, T0), Ok(0b10));
        assert!(lapic.matches(1, false) && !lapic.matches(2, false));
        // INIT keeps the ID; a global disable brings the initial one back.
        let mut xapic = enabled(1);
        xapic.write(REG_ID, 0x0500_0000, T0);
        xapic.init();
        assert_eq!(xapic.id(), 5);
        assert!(xapic.set_mode(ApicMode::Disabled) && xapic.set_mode(ApicMode::XApic));
        assert_eq!(xapic.read(REG_ID, T0), 0x0100_0000);
    }

    #[test]
    fn apic_base_mode_transitions() {
        let mut lapic = enabled(0);
        assert_eq!(lapic.mode(), ApicMode::XApic);
        assert_eq!(lapic.msr_read(X2_ID, T0), Err(MsrFault), "no MSRs in xAPIC mode");
        lapic.write(REG_TPR, 0x20, T0);
        assert!(lapic.set_mode(ApicMode::X2Apic));
        assert_eq!(lapic.msr_read(X2_TPR, T0), Ok(0x20), "xAPIC to x2APIC keeps the state");
        assert!(!lapic.set_mode(ApicMode::XApic), "x2APIC to xAPIC: #GP");
        assert_eq!(lapic.mode(), ApicMode::X2Apic);
        // Globally disabled: reset, deaf, the PIC reaches the CPU directly.
        fixed(&mut lapic, 0x40);
        assert!(lapic.set_mode(ApicMode::Disabled));
        assert_eq!(lapic.pending_interrupt(), None);
        assert!(lapic.accepts_pic());
        assert!(!lapic.matches(0, false) && !lapic.matches(BROADCAST, false));
        assert!(!lapic.receive(DeliveryMode::Nmi, 0, false));
        assert_eq!(lapic.read(REG_VERSION, T0), 0);
        assert_eq!(lapic.write(REG_SVR, 0x1ff, T0), LapicEffect::None);
        assert!(!lapic.set_mode(ApicMode::X2Apic), "disabled to x2APIC: #GP");
        assert!(lapic.set_mode(ApicMode::XApic));
        assert_eq!(lapic.read(REG_SVR, T0), 0xff, "reset: software disabled");
        assert_eq!(lapic.read(REG_TPR, T0), 0);
        assert_eq!(lapic.read(REG_IRR + 0x20, T0), 0);
        assert_eq!(lapic.id(), 0);
    }

    /// CR8 keeps what the guest writes while IA32_APIC_BASE.EN is clear (the page and
    /// the MSRs are gone); enabling the APIC again keeps it as the TPR.
    #[test]
    fn cr8_works_while_globally_disabled() {
        let mut lapic = enabled(0);
        assert!(lapic.set_mode(ApicMode::Disabled));
        lapic.write(REG_TPR, 0x20, T0);
        assert_eq!(lapic.tpr(), 0, "the page is gone");
        lapic.set_tpr(0xf0);
        assert_eq!((lapic.tpr(), lapic.read(REG_TPR, T0)), (0xf0, 0));
        lapic.set_tpr(0);
        assert!(lapic.set_mode(ApicMode::XApic));
        lapic.set_tpr(0x30);
        assert_eq!(lapic.read(REG_TPR, T0), 0x30);
    }

    #[test]
    fn x2apic_registers() {
        let mut lapic = x2apic(0x23);
        assert_eq!(lapic.msr_read(X2_ID, T0), Ok(0x23));
        assert_eq!(lapic.msr_read(X2_VERSION, T0), Ok(u64::from(VERSION)));
        assert_eq!(lapic.msr_read(X2_LDR, T0), Ok(2 << 16 | 1 << 3), "cluster 2, member 3");
        assert_eq!(lapic.msr_read(X2_SVR, T0), Ok(0x1ff));
        // Read-only, write-only and missing registers.
        assert_eq!(lapic.msr_write(X2_ID, 5, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_LDR, 5, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_PPR, 0, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_TIMER_CURRENT, 0, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(0x810, 0, T0), Err(MsrFault), "ISR");
        assert_eq!(lapic.msr_read(X2_EOI, T0), Err(MsrFault));
        assert_eq!(lapic.msr_read(X2_SELF_IPI, T0), Err(MsrFault));
        for msr in [X2_DFR, X2_ICR_HIGH, 0x809, 0x80c, 0x82f, 0x800, 0x8ff] {
            assert_eq!(lapic.msr_read(msr, T0), Err(MsrFault), "{msr:#x}");
            assert_eq!(lapic.msr_write(msr, 0, T0), Err(MsrFault), "{msr:#x}");
        }
        assert_eq!(lapic.msr_read(0x7ff, T0), Err(MsrFault));
        // Reserved bits.
        assert_eq!(lapic.msr_write(X2_TPR, 0x100, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_TPR, 1 << 32, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_EOI, 1, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_ESR, 1, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_SVR, 0x1000, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_TPR, 0x30, T0), Ok(LapicEffect::None));
        assert_eq!(lapic.msr_read(X2_TPR, T0), Ok(0x30));
        // EOI ends the highest vector in service.
        fixed(&mut lapic, 0x61);
        assert_eq!(lapic.acknowledge(), Some(0x61));
        assert_eq!(lapic.msr_read(X2_PPR, T0), Ok(0x60));
        assert_eq!(lapic.msr_read(0x813, T0), Ok(1 << 1), "ISR 0x60-0x7f");
        assert_eq!(
            lapic.msr_write(X2_EOI, 0, T0),
            Ok(LapicEffect::Eoi { vector: 0x61, level_triggered: false })
        );
        // The timer works as in xAPIC mode.
        lapic.msr_write(0x83e, 0xb, T0).unwrap();
        lapic.msr_write(X2_LVT_TIMER, 0x40, T0).unwrap();
        assert_eq!(lapic.msr_write(X2_TIMER_INITIAL, 500, T0), Ok(LapicEffect::TimerChanged));
        assert_eq!(lapic.msr_read(X2_TIMER_CURRENT, T0 + 100), Ok(400));
        assert!(lapic.timer_expired(T0 + 500));
        assert_eq!(lapic.pending_interrupt(), Some(0x40));
    }

    #[test]
    fn x2apic_icr_and_self_ipi() {
        let mut lapic = x2apic(1);
        let sent = lapic.msr_write(X2_ICR, 0x0000_0102_0000_4031, T0);
        let expect = Ipi {
            vector: 0x31,
            mode: DeliveryMode::Fixed,
            logical: false,
            dest: 0x102,
            shorthand: Shorthand::None,
            level_triggered: false,
            assert: true,
        };
        assert_eq!(sent, Ok(LapicEffect::Ipi(expect)));
        assert_eq!(lapic.msr_read(X2_ICR, T0), Ok(0x0000_0102_0000_4031));
        let all = ipi(lapic.msr_write(X2_ICR, 0xffff_ffff_0000_0832, T0).unwrap());
        assert_eq!((all.dest, all.logical), (BROADCAST, true));
        // Delivery status (12) and the other reserved bits raise #GP.
        for bad in [1 << 12, 1 << 13, 1 << 16, 1 << 20] {
            assert_eq!(lapic.msr_write(X2_ICR, bad | 0x31, T0), Err(MsrFault), "{bad:#x}");
        }
        let own = ipi(lapic.msr_write(X2_SELF_IPI, 0x45, T0).unwrap());
        assert_eq!((own.vector, own.mode, own.shorthand), (0x45, DeliveryMode::Fixed, Shorthand::SelfOnly));
        assert_eq!(lapic.msr_write(X2_SELF_IPI, 0x145, T0), Err(MsrFault));
        assert_eq!(lapic.msr_write(X2_SELF_IPI, 0x05, T0), Ok(LapicEffect::None), "illegal vector");
    }

    #[test]
    fn x2apic_destinations() {
        let lapic = x2apic(0x13);
        assert!(lapic.matches(0x13, false) && !lapic.matches(0x03, false));
        assert!(lapic.matches(BROADCAST, false) && lapic.matches(BROADCAST, true));
        assert!(lapic.matches(1 << 16 | 1 << 3, true), "cluster 1, member 3");
        assert!(lapic.matches(1 << 16 | 0xffff, true));
        assert!(!lapic.matches(1 << 16 | 1 << 4, true), "other member");
        assert!(!lapic.matches(1 << 3, true), "other cluster");
        // xAPIC receivers: 8-bit destinations only.
        let xapic = enabled(3);
        assert!(xapic.matches(3, false) && !xapic.matches(0x103, false));
        assert!(xapic.matches(xapic_dest(0xff), false));
        assert_eq!(xapic_dest(0xfe), 0xfe);
    }
}
