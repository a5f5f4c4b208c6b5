//! Several CPUs, for the guests of `yakvm run --machine pc --smp N`: the MP table, the
//! local APIC, starting the APs (INIT, SIPI, SIPI into a real-mode trampoline that goes to
//! long mode), descriptor tables and interrupt stacks for each CPU, a clock (the PIT's) and
//! a console shared under a lock.
//!
//! CPU `i` is the one whose local APIC id is `i` (the MP table's ids must be below
//! `MAX_CPUS`, as yakvm numbers them 0..N-1): per-CPU data is indexed by APIC id.
//!
//! Memory: the guest image is linked at 0 and must end below `TRAMPOLINE` (checked at run
//! time against the linker's `_end`); the trampoline page is at `TRAMPOLINE` (SIPI vector
//! 0x70), a page that only halts at `DEAD_PAGE` (vector 0x71, for the guest that starts a
//! CPU which never answers); the MP table is at 0xf0000 (read only); the BSP's stack is
//! the emulator's, at the top of RAM; the APs' stacks are statics here.
//!
//! Interrupts: every vector from 32 to 255, and the NMI, is counted per CPU
//! (`received`); then the hook set with `set_hook` runs (not for the NMI and the spurious
//! vector), then the EOI is sent (not for those two either). Handlers run with interrupts
//! disabled on IST1 of the CPU's own TSS, the NMI on IST2 (it may come while IST1 is in
//! use). Exceptions end the run (status 99).

use crate::pc;
use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};

/// How many CPUs the guests handle (yakvm's `--smp` limit).
pub const MAX_CPUS: usize = 8;

// ---------------------------------------------------------------------------------------
// Local APIC (xAPIC, memory-mapped; Intel SDM vol. 3A, 11.4; AMD APM vol. 2, 16.3)

pub const LAPIC_BASE: u64 = 0xfee0_0000;
pub const IOAPIC_BASE: u32 = 0xfec0_0000;
/// IA32_APIC_BASE and its bits.
pub const MSR_APIC_BASE: u32 = 0x1b;
pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_ENABLE: u64 = 1 << 11;

/// Register offsets.
pub const APIC_ID: u32 = 0x20;
pub const APIC_VERSION: u32 = 0x30;
pub const APIC_TPR: u32 = 0x80;
pub const APIC_EOI: u32 = 0xb0;
pub const APIC_LDR: u32 = 0xd0;
pub const APIC_DFR: u32 = 0xe0;
pub const APIC_SVR: u32 = 0xf0;
pub const APIC_ICR_LOW: u32 = 0x300;
pub const APIC_ICR_HIGH: u32 = 0x310;
pub const APIC_LVT_TIMER: u32 = 0x320;
pub const APIC_TIMER_INITIAL: u32 = 0x380;
pub const APIC_TIMER_CURRENT: u32 = 0x390;
pub const APIC_TIMER_DIVIDE: u32 = 0x3e0;

/// SVR: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT: masked; the timer's periodic mode (one-shot when clear).
pub const LVT_MASKED: u32 = 1 << 16;
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Timer divide configuration: divide by 1.
pub const TIMER_DIVIDE_BY_1: u32 = 0b1011;
/// DFR: the flat model (LDR bits 31:24 are a bitmap of CPUs).
pub const DFR_FLAT: u32 = 0xffff_ffff;

/// ICR low word: delivery modes, destination mode, status, level, shorthands.
pub const ICR_FIXED: u32 = 0;
pub const ICR_NMI: u32 = 4 << 8;
pub const ICR_INIT: u32 = 5 << 8;
pub const ICR_STARTUP: u32 = 6 << 8;
pub const ICR_LOGICAL: u32 = 1 << 11;
pub const ICR_BUSY: u32 = 1 << 12;
pub const ICR_ASSERT: u32 = 1 << 14;
pub const ICR_LEVEL: u32 = 1 << 15;
pub const ICR_SELF: u32 = 1 << 18;
pub const ICR_ALL_BUT_SELF: u32 = 3 << 18;

pub const NMI_VECTOR: u8 = 2;
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Reads a local APIC register (an exit to the emulator).
pub fn lapic_read(reg: u32) -> u32 {
    let value: u32;
    // SAFETY: a 32-bit load from the local APIC page, which the emulator's identity map
    // covers (the first 4 GiB); nothing else is at that address. A plain `mov`, which the
    // emulator decodes.
    unsafe {
        asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) LAPIC_BASE + u64::from(reg), v = out(reg) value, options(nostack, preserves_flags))
    };
    value
}

/// Writes a local APIC register (an exit to the emulator).
pub fn lapic_write(reg: u32, value: u32) {
    // SAFETY: as for `lapic_read`: a 32-bit store to the local APIC page.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) LAPIC_BASE + u64::from(reg), v = in(reg) value, options(nostack, preserves_flags))
    };
}

/// This CPU's local APIC id.
pub fn apic_id() -> u8 {
    (lapic_read(APIC_ID) >> 24) as u8
}

/// Sends an IPI: `dest` in ICR bits 63:56, then the low word `low` (which sends it); waits
/// until the delivery status is idle again. Interrupts are off meanwhile, so that no
/// handler's own ICR use comes between the two writes. `false` if the ICR stayed busy for
/// 1000 reads.
pub fn send_ipi(dest: u8, low: u32) -> bool {
    pc::without_interrupts(|| {
        lapic_write(APIC_ICR_HIGH, u32::from(dest) << 24);
        lapic_write(APIC_ICR_LOW, low);
        (0..1000).any(|_| lapic_read(APIC_ICR_LOW) & ICR_BUSY == 0)
    })
}

/// RDMSR (a #GP ends the run).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads an MSR; the ones asked for exist (a #GP would end the run).
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    u64::from(hi) << 32 | u64::from(lo)
}

// ---------------------------------------------------------------------------------------
// Console: COM1 under a lock

/// Held while a CPU writes a line.
static CONSOLE: AtomicBool = AtomicBool::new(false);

/// COM1 through `core::fmt`.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        pc::print(s);
        Ok(())
    }
}

/// Runs `f` with the console to itself (interrupts off meanwhile).
pub fn console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    pc::without_interrupts(|| {
        while CONSOLE.compare_exchange_weak(false, true, SeqCst, SeqCst).is_err() {
            core::hint::spin_loop();
        }
        let r = f(&mut Console);
        CONSOLE.store(false, SeqCst);
        r
    })
}

/// Prints one line on COM1, under the console lock: `say!("cpu {} online", n)`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::smp::console(|w| {
            let _ = core::fmt::Write::write_fmt(w, format_args!($($arg)*));
            let _ = core::fmt::Write::write_str(w, "\n");
        })
    };
}

/// Checks that failed (each printed its own line).
pub static FAILURES: AtomicU32 = AtomicU32::new(0);

/// Prints a line saying what failed and counts it: `fail!("cpu {} ...", n)`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {{
        $crate::say!($($arg)*);
        $crate::smp::FAILURES.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }};
}

/// Exit statuses: a check failed, a CPU did not answer, no usable MP table, the layout
/// does not fit (exceptions end with 99, panics with 101).
pub const STATUS_FAILED: u8 = 1;
pub const STATUS_NO_ANSWER: u8 = 2;
pub const STATUS_NO_MP_TABLE: u8 = 3;
pub const STATUS_LAYOUT: u8 = 4;

// ---------------------------------------------------------------------------------------
// Clock: PIT channel 0, shared by the CPUs; an alarm on channel 2
//
// Not the TSC: in the nested setups yakvm is tested in (yakvm or KVM inside QEMU), the
// TSC seen by a guest is not a steady measure of time (calibrated against the PIT, it
// came out anywhere from 70 to 2460 MHz in runs of one image), and a timeout that ends
// early makes a check fail for nothing. The PIT counts the emulator's clock.

/// Channel 0 counts down from 65536 in mode 2 (54.9 ms a turn); whichever CPU reads it
/// adds the ticks since the last read to `CLOCK_TICKS`. Reads more than a turn apart lose
/// whole turns: the clock may run slow (a timeout lasts longer), never fast.
static CLOCK_LOCK: AtomicBool = AtomicBool::new(false);
static CLOCK_LAST: AtomicU32 = AtomicU32::new(0);
static CLOCK_TICKS: AtomicU64 = AtomicU64::new(0);

/// Spin iterations between two reads of the clock in `wait_until` (a millisecond or so:
/// a read is three exits).
const POLL_SPINS: u32 = 1 << 16;

/// Starts the clock: the PICs initialised with every IRQ masked, channel 0 in mode 2
/// with 65536. The BSP calls it first (`boot` does).
pub fn start_clock() {
    pc::pic_init(0);
    pc::pit_start(0x1_0000);
    CLOCK_LAST.store(pc::pit_read().into(), SeqCst);
}

/// PIT ticks since `start_clock` (reads the counter). The lock is only held with
/// interrupts off, so a handler may read the clock too: the CPU that holds the lock is
/// another one.
pub fn clock() -> u64 {
    pc::without_interrupts(|| {
        while CLOCK_LOCK.compare_exchange_weak(false, true, SeqCst, SeqCst).is_err() {
            core::hint::spin_loop();
        }
        let now = pc::pit_read();
        let last = CLOCK_LAST.swap(now.into(), SeqCst) as u16;
        let ticks = CLOCK_TICKS.fetch_add(last.wrapping_sub(now).into(), SeqCst) + u64::from(last.wrapping_sub(now));
        CLOCK_LOCK.store(false, SeqCst);
        ticks
    })
}

/// Microseconds in `ticks` PIT ticks.
pub fn ticks_to_us(ticks: u64) -> u64 {
    ticks * 1_000_000 / u64::from(pc::PIT_HZ)
}

/// Microseconds since `clock()` was `since`.
pub fn us_since(since: u64) -> u64 {
    ticks_to_us(clock().saturating_sub(since))
}

/// Spins until `cond` holds (`true`) or `timeout_us` passed (`false`; `cond` is asked once
/// more at the end). `cond` is asked at every turn; the clock, every `POLL_SPINS` turns.
pub fn wait_until(timeout_us: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = clock();
    let mut spins = 0u32;
    loop {
        if cond() {
            return true;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(POLL_SPINS) && us_since(start) >= timeout_us {
            return cond();
        }
        core::hint::spin_loop();
    }
}

/// Spins for at least `us` microseconds (up to a millisecond or so more).
pub fn delay_us(us: u64) {
    wait_until(us, || false);
}

const PORT_B: u16 = 0x61;
const PORT_B_GATE2: u8 = 0x01;
const PORT_B_SPEAKER: u8 = 0x02;
const PORT_B_OUT2: u8 = 0x20;

/// Starts an alarm on PIT channel 2 (mode 0, gate on, speaker off): its OUT, port 0x61
/// bit 5, rises `us` microseconds from now (at most 54 ms) and stays high. A check that
/// needs a lower bound of time uses it: it cannot lose turns as the clock can.
pub fn alarm_start(us: u32) {
    let count = (u64::from(pc::PIT_HZ) * u64::from(us) / 1_000_000).min(0xffff) as u16;
    crate::outb(PORT_B, (pc::inb(PORT_B) & !PORT_B_SPEAKER) | PORT_B_GATE2);
    crate::outb(0x43, 0xb0); // channel 2, low then high byte, mode 0, binary
    crate::outb(0x42, count as u8);
    crate::outb(0x42, (count >> 8) as u8);
}

/// Whether the alarm went off.
pub fn alarm_rang() -> bool {
    pc::inb(PORT_B) & PORT_B_OUT2 != 0
}

// ---------------------------------------------------------------------------------------
// MP table (Intel MultiProcessor Specification 1.4, chapter 4)

/// What the guests need of the MP table.
#[derive(Clone, Copy, Debug)]
pub struct MpInfo {
    /// The enabled processors' APIC ids, in the table's order.
    pub ids: [u8; MAX_CPUS],
    pub cpus: usize,
    /// The boot processor's APIC id.
    pub bsp: u8,
    pub lapic: u32,
    /// The first enabled I/O APIC: id and address.
    pub ioapic: Option<(u8, u32)>,
}

impl MpInfo {
    pub fn ids(&self) -> &[u8] {
        &self.ids[..self.cpus]
    }

    /// The APs' ids.
    pub fn aps(&self) -> impl Iterator<Item = u8> + '_ {
        self.ids().iter().copied().filter(move |&id| id != self.bsp)
    }

    /// The CPUs as a bitmap (bit = APIC id), as a flat logical destination.
    pub fn mask(&self) -> u8 {
        self.ids().iter().fold(0, |m, &id| m | 1 << id)
    }
}

/// `len` bytes of guest-physical memory at `addr`.
fn phys(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: the first 4 GiB are identity-mapped; the callers read the BIOS area and the
    // MP table the emulator wrote into RAM, which nothing writes while the guest runs.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

/// Finds the floating pointer ("_MP_", 16-byte aligned, in 0xf0000-0xfffff) and reads
/// its configuration table: processors, I/O APICs; checksums checked.
pub fn mp_table() -> Result<MpInfo, &'static str> {
    let fp = (0xf_0000u64..0x10_0000)
        .step_by(16)
        .find(|&a| {
            let b = phys(a, 16);
            &b[..4] == b"_MP_" && b[8] == 1 && sums_to_zero(b)
        })
        .ok_or("no MP floating pointer (\"_MP_\" with a good checksum) in 0xf0000-0xfffff")?;
    let config = u64::from(le32(phys(fp, 16), 4));
    if config == 0 {
        return Err("the floating pointer has no configuration table");
    }
    let header = phys(config, 44);
    if &header[..4] != b"PCMP" {
        return Err("no \"PCMP\" configuration table where the floating pointer says");
    }
    let length = usize::from(le16(header, 4));
    if length < 44 || !sums_to_zero(phys(config, length)) {
        return Err("bad configuration table length or checksum");
    }
    let table = phys(config, length);
    let mut info = MpInfo { ids: [0; MAX_CPUS], cpus: 0, bsp: u8::MAX, lapic: le32(header, 36), ioapic: None };
    let mut at = 44;
    for _ in 0..le16(header, 34) {
        let size = match table.get(at) {
            Some(0) => 20,
            Some(1..=4) => 8,
            Some(_) => return Err("unknown configuration table entry type"),
            None => return Err("the configuration table ends before its last entry"),
        };
        let e = table.get(at..at + size).ok_or("the configuration table ends inside an entry")?;
        match e[0] {
            0 if e[3] & 1 != 0 => {
                if usize::from(e[1]) >= MAX_CPUS || info.cpus == MAX_CPUS {
                    return Err("a processor's APIC id is 8 or more, or more than 8 processors");
                }
                info.ids[info.cpus] = e[1];
                info.cpus += 1;
                if e[3] & 2 != 0 {
                    info.bsp = e[1];
                }
            }
            2 if e[3] & 1 != 0 && info.ioapic.is_none() => info.ioapic = Some((e[1], le32(e, 4))),
            _ => {}
        }
        at += size;
    }
    if info.cpus == 0 || usize::from(info.bsp) >= MAX_CPUS {
        return Err("no enabled processor, or none is the boot processor");
    }
    Ok(info)
}

// ---------------------------------------------------------------------------------------
// GDT, TSSs, IDT, stacks

const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
/// CPU i's TSS descriptor (two entries) is at TSS_SELECTOR + 16 * i.
const TSS_SELECTOR: u16 = 0x18;
const GDT_ENTRIES: usize = 3 + 2 * MAX_CPUS;

/// Null, 64-bit code (0x08), data (0x10), then one TSS per CPU (filled in by `tables`).
static mut GDT: [u64; GDT_ENTRIES] = {
    let mut g = [0; GDT_ENTRIES];
    g[1] = 0x00af_9b00_0000_ffff;
    g[2] = 0x00cf_9300_0000_ffff;
    g
};

/// A 64-bit TSS (104 bytes, its 8-byte fields at 4-byte offsets): IST1 and IST2.
#[repr(C, align(16))]
struct Tss([u32; 26]);
static mut TSSS: [Tss; MAX_CPUS] = [const { Tss([0; 26]) }; MAX_CPUS];

/// A CPU's interrupt stacks: IST1 (interrupts, exceptions), IST2 (the NMI).
#[repr(C, align(16))]
struct IntStacks {
    ist1: [u8; 8192],
    ist2: [u8; 4096],
}
static mut INT_STACKS: [IntStacks; MAX_CPUS] = [const { IntStacks { ist1: [0; 8192], ist2: [0; 4096] } }; MAX_CPUS];

/// The APs' own stacks (the BSP keeps the emulator's).
#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACKS: [Stack; MAX_CPUS] = [const { Stack([0; 16384]) }; MAX_CPUS];

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

/// Interrupts taken, by CPU and vector (the NMI as vector 2).
static RECEIVED: [[AtomicU32; 256]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 256] }; MAX_CPUS];

/// How many times CPU `cpu` took `vector`.
pub fn received(cpu: usize, vector: u8) -> u32 {
    RECEIVED[cpu][usize::from(vector)].load(SeqCst)
}

/// The guest's handler, run for every vector but the NMI and the spurious one, before the
/// EOI: (CPU, vector). Set by the BSP before interrupts are enabled anywhere.
static mut HOOK: Option<fn(usize, u8)> = None;

/// Sets the hook (see `HOOK`). Call it on the BSP before `boot`.
pub fn set_hook(hook: fn(usize, u8)) {
    // SAFETY: see `HOOK`: only the BSP writes it, before any CPU enables interrupts or
    // any AP runs; afterwards it is only read.
    unsafe { HOOK = Some(hook) };
}

// SAFETY: defined by the global_asm below: 256 stubs, 16 bytes apart (read only).
unsafe extern "C" {
    static yakvm_smp_stubs: [u8; 256 * 16];
}

global_asm!(
    // One 16-byte stub per vector: push the vector, join a common path. Exceptions (every
    // vector below 32 but the NMI) end the run; the others return.
    ".pushsection .text.yakvm_smp_stubs, \"ax\"",
    ".balign 16",
    ".globl yakvm_smp_stubs",
    "yakvm_smp_stubs:",
    ".set yakvm_smp_vector, 0",
    ".rept 256",
    ".balign 16",
    "pushq $yakvm_smp_vector",
    ".if yakvm_smp_vector == 2 || yakvm_smp_vector >= 32",
    "jmp yakvm_smp_interrupt",
    ".else",
    "jmp yakvm_smp_exception",
    ".endif",
    ".set yakvm_smp_vector, yakvm_smp_vector + 1",
    ".endr",
    // Exceptions: the vector, then where the frame is (an error code may be under the
    // RIP: the handler knows which vectors push one).
    "yakvm_smp_exception:",
    "popq %rdi",
    "movq %rsp, %rsi",
    "andq $-16, %rsp",
    "call {exception}",
    "ud2",
    // Interrupts: save the caller-saved registers (the SSE ones with FXSAVE: Rust code
    // uses them). Alignment: the CPU aligns RSP to 16 before its 40-byte frame, the stub
    // pushed 8, we push 72: RSP is 8 mod 16, and 520 more make it 0 for FXSAVE and the
    // call.
    "yakvm_smp_interrupt:",
    "pushq %rax",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    "movq 72(%rsp), %rdi", // the vector
    "movq %rsp, %rsi",     // on which CPU's stack
    "subq $520, %rsp",
    "fxsave (%rsp)",
    "cld",
    "call {interrupt}",
    "fxrstor (%rsp)",
    "addq $520, %rsp",
    "popq %r11",
    "popq %r10",
    "popq %r9",
    "popq %r8",
    "popq %rdi",
    "popq %rsi",
    "popq %rdx",
    "popq %rcx",
    "popq %rax",
    "addq $8, %rsp", // the vector
    "iretq",
    ".popsection",
    exception = sym exception,
    interrupt = sym interrupt,
    options(att_syntax),
);

/// The CPU whose interrupt stacks hold `rsp`.
fn cpu_of_stack(rsp: u64) -> usize {
    let base = (&raw const INT_STACKS) as u64;
    let cpu = (rsp.wrapping_sub(base) / size_of::<IntStacks>() as u64) as usize;
    if cpu >= MAX_CPUS {
        crate::print("guest interrupt on a stack that is no CPU's\n");
        crate::exit(98);
    }
    cpu
}

/// Any exception ends the run: a line on COM1 (without waiting long for the console lock:
/// the exception may have come while this CPU held it), status 99.
extern "C" fn exception(vector: u64, frame: u64) -> ! {
    let cpu = cpu_of_stack(frame);
    let error_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
    // SAFETY: `frame` points at the CPU's interrupt frame (after the error code, if any).
    let rip = unsafe { *((frame + if error_code { 8 } else { 0 }) as *const u64) };
    for _ in 0..1_000_000 {
        if CONSOLE.compare_exchange_weak(false, true, SeqCst, SeqCst).is_ok() {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = writeln!(Console, "cpu {cpu}: exception {vector} at rip {rip:#x}");
    crate::exit(99)
}

/// The interrupt dispatcher, on the CPU's IST (interrupts disabled): counts, runs the
/// hook, sends the EOI (not for the NMI or the spurious vector, which have none).
extern "C" fn interrupt(vector: u64, rsp: u64) {
    let cpu = cpu_of_stack(rsp);
    let vector = vector as u8;
    RECEIVED[cpu][usize::from(vector)].fetch_add(1, SeqCst);
    if vector == NMI_VECTOR || vector == SPURIOUS_VECTOR {
        return;
    }
    // SAFETY: see `HOOK`: no longer written once interrupts are on.
    if let Some(hook) = unsafe { HOOK } {
        hook(cpu, vector);
    }
    lapic_write(APIC_EOI, 0);
}

/// A present 64-bit interrupt gate, DPL 0, on IST `ist`.
fn gate(handler: u64, ist: u64) -> [u64; 2] {
    let lo = (handler & 0xffff)
        | u64::from(CODE_SELECTOR) << 16
        | ist << 32
        | 0x8e << 40 // present, DPL 0, 64-bit interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    [lo, handler >> 32]
}

/// The operand of `lgdt` and `lidt`: the limit (`size` - 1), then the 64-bit base.
fn table_descriptor(base: u64, size: usize) -> [u16; 5] {
    [(size - 1) as u16, base as u16, (base >> 16) as u16, (base >> 32) as u16, (base >> 48) as u16]
}

/// Fills the GDT (every CPU's TSS descriptor), the TSSs and the IDT. The BSP calls it
/// once, first; afterwards the CPUs only load them (`load_tables`).
fn build_tables() {
    // SAFETY: only the BSP runs, with interrupts disabled, and no CPU uses these tables
    // yet; they are statics, so they outlive every use by the CPUs.
    unsafe {
        for cpu in 0..MAX_CPUS {
            let stacks = (&raw const INT_STACKS[cpu]) as u64;
            let ist1 = stacks + size_of::<[u8; 8192]>() as u64;
            let ist2 = stacks + size_of::<IntStacks>() as u64;
            let tss = &raw mut TSSS[cpu];
            (*tss).0[9] = ist1 as u32; // IST1 at 0x24
            (*tss).0[10] = (ist1 >> 32) as u32;
            (*tss).0[11] = ist2 as u32; // IST2 at 0x2c
            (*tss).0[12] = (ist2 >> 32) as u32;
            (*tss).0[25] = (size_of::<Tss>() as u32) << 16; // no I/O permission bitmap
            let base = tss as u64;
            let limit = (size_of::<Tss>() - 1) as u64;
            let gdt = &raw mut GDT;
            (*gdt)[3 + 2 * cpu] = limit | (base & 0xff_ffff) << 16 | 0x89 << 40 | ((base >> 24) & 0xff) << 56;
            (*gdt)[4 + 2 * cpu] = base >> 32;
        }
        let idt = &raw mut IDT;
        let stubs = (&raw const yakvm_smp_stubs) as u64;
        for v in 0..256 {
            (*idt).0[v] = gate(stubs + 16 * v as u64, if v == usize::from(NMI_VECTOR) { 2 } else { 1 });
        }
    }
}

/// Loads the GDT (reloading every segment register), CPU `cpu`'s TSS and the IDT.
fn load_tables(cpu: usize) {
    let gdtr = table_descriptor((&raw const GDT) as u64, size_of::<[u64; GDT_ENTRIES]>());
    let idtr = table_descriptor((&raw const IDT) as u64, size_of::<Idt>());
    // SAFETY: the tables were built by `build_tables` before any CPU gets here and are not
    // written afterwards (but for the busy bit LTR sets in this CPU's own TSS descriptor).
    // Code and data selectors are flat, as the ones the CPU runs on now, so the reload
    // changes nothing else.
    unsafe {
        asm!(
            "lgdt [{gdtr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, {data}",
            "mov ds, {tmp:x}",
            "mov es, {tmp:x}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "mov ss, {tmp:x}",
            "mov {tmp:e}, {tss:e}",
            "ltr {tmp:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            tss = in(reg) u32::from(TSS_SELECTOR) + 16 * cpu as u32,
            tmp = out(reg) _,
            code = const CODE_SELECTOR,
            data = const DATA_SELECTOR,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Starting the APs

/// The trampoline's page (SIPI vector 0x70) and a page that only halts (vector 0x71).
pub const TRAMPOLINE: u64 = 0x7_0000;
pub const DEAD_PAGE: u64 = 0x7_1000;

/// What the trampoline reads, at `yakvm_smp_tr_data` in its copy: written by the BSP
/// before each AP's INIT.
#[repr(C)]
struct TrampolineData {
    /// CR0, CR3 and CR4 as the BSP has them (CR3 below 4 GiB).
    cr0: u64,
    cr3: u64,
    cr4: u64,
    /// The AP's stack top, its entry point and its argument (its CPU number).
    stack: u64,
    entry: u64,
    arg: u64,
    mxcsr: u32,
    _pad: u32,
}

// SAFETY: defined by the global_asm below (read only here: they are copied).
unsafe extern "C" {
    static yakvm_smp_trampoline: u8;
    static yakvm_smp_tr_data: u8;
    static yakvm_smp_trampoline_end: u8;
    /// The linker's end of the image (link.ld).
    static _end: u8;
}

// The AP trampoline, copied to TRAMPOLINE and entered there in real mode by the SIPI
// (CS = TRAMPOLINE >> 4, IP = 0). Its own GDT (flat 32-bit code 0x08, data 0x10, 64-bit
// code 0x18) takes it to protected mode, then with the BSP's CR4 (PAE) and CR3, EFER.LME
// and the BSP's CR0 (PG) to long mode; it loads the AP's stack and calls its entry with
// RDI = its argument. Addresses are TRAMPOLINE plus offsets in the copy, absolute.
global_asm!(
    ".pushsection .text.yakvm_smp_trampoline, \"ax\"",
    ".balign 16",
    ".globl yakvm_smp_trampoline",
    "yakvm_smp_trampoline:",
    ".code16",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    "lgdtl (yakvm_smp_tr_gdtr - yakvm_smp_trampoline)",
    "movl %cr0, %eax",
    "orl $1, %eax", // PE
    "movl %eax, %cr0",
    "ljmpl $0x08, $({base} + yakvm_smp_tr_32 - yakvm_smp_trampoline)",
    ".code32",
    "yakvm_smp_tr_32:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movl ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {cr4}), %eax",
    "movl %eax, %cr4",
    "movl ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {cr3}), %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx", // EFER
    "rdmsr",
    "orl $0x100, %eax", // LME
    "wrmsr",
    "movl ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {cr0}), %eax",
    "movl %eax, %cr0", // PG: long mode (compatibility mode until the far jump)
    "ljmpl $0x18, $({base} + yakvm_smp_tr_64 - yakvm_smp_trampoline)",
    ".code64",
    "yakvm_smp_tr_64:",
    "movq ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {stack}), %rsp",
    "fninit",
    "ldmxcsr ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {mxcsr})",
    "movq ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {arg}), %rdi",
    "movq ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {entry}), %rax",
    "call *%rax",
    "ud2",
    ".balign 8",
    "yakvm_smp_tr_gdt:",
    ".quad 0",
    ".quad 0x00cf9b000000ffff", // 0x08: 32-bit code
    ".quad 0x00cf93000000ffff", // 0x10: data
    ".quad 0x00af9b000000ffff", // 0x18: 64-bit code
    "yakvm_smp_tr_gdtr:",
    ".word 31",
    ".long {base} + yakvm_smp_tr_gdt - yakvm_smp_trampoline",
    ".balign 8",
    ".globl yakvm_smp_tr_data",
    "yakvm_smp_tr_data:",
    ".skip {data_size}",
    ".globl yakvm_smp_trampoline_end",
    "yakvm_smp_trampoline_end:",
    ".popsection",
    base = const TRAMPOLINE,
    cr0 = const core::mem::offset_of!(TrampolineData, cr0),
    cr3 = const core::mem::offset_of!(TrampolineData, cr3),
    cr4 = const core::mem::offset_of!(TrampolineData, cr4),
    stack = const core::mem::offset_of!(TrampolineData, stack),
    entry = const core::mem::offset_of!(TrampolineData, entry),
    arg = const core::mem::offset_of!(TrampolineData, arg),
    mxcsr = const core::mem::offset_of!(TrampolineData, mxcsr),
    data_size = const size_of::<TrampolineData>(),
    options(att_syntax),
);

/// How an AP is started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// INIT, SIPI, SIPI into the trampoline.
    Normal,
    /// INIT, SIPI, SIPI into `DEAD_PAGE`: `cli; hlt` forever.
    Dead,
    /// INIT only: it waits for a SIPI that never comes.
    Never,
}

/// Per CPU: how many times it entered `ap_entry`, and whether it said it is online.
static STARTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The BSP's APIC id.
static BSP: AtomicUsize = AtomicUsize::new(0);
/// What the APs run once online (a `fn(usize) -> !` as usize; 0 until set).
static AP_MAIN: AtomicUsize = AtomicUsize::new(0);

/// How many times CPU `cpu` came through the trampoline (1 for every started AP: a second
/// SIPI to a running CPU is ignored).
pub fn starts(cpu: usize) -> u32 {
    STARTS[cpu].load(SeqCst)
}

/// The BSP's APIC id.
pub fn bsp() -> usize {
    BSP.load(SeqCst)
}

pub fn online(cpu: usize) -> bool {
    ONLINE[cpu].load(SeqCst)
}

/// Enables this CPU's local APIC and checks what the CPU says of itself. Flat logical
/// mode with LDR = 1 << cpu, TPR 0, spurious vector 0xff.
fn enable_lapic(cpu: usize) {
    let bsp = cpu == BSP.load(SeqCst);
    let id = apic_id();
    if usize::from(id) != cpu {
        fail!("cpu {cpu}: its local APIC id register says {id}");
    }
    let [_, ebx, _, edx] = crate::cpuid(1, 0);
    if (ebx >> 24) as usize != cpu || edx & (1 << 9) == 0 {
        fail!("cpu {cpu}: CPUID.1 says initial APIC id {}, APIC bit {}", ebx >> 24, (edx >> 9) & 1);
    }
    let base = rdmsr(MSR_APIC_BASE);
    let want = LAPIC_BASE | APIC_BASE_ENABLE | if bsp { APIC_BASE_BSP } else { 0 };
    if base != want {
        fail!("cpu {cpu}: IA32_APIC_BASE is {base:#x}, want {want:#x}");
    }
    lapic_write(APIC_TPR, 0);
    lapic_write(APIC_DFR, DFR_FLAT);
    lapic_write(APIC_LDR, 1 << (24 + cpu));
    lapic_write(APIC_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
}

/// Where an AP arrives from the trampoline, on its own stack, interrupts disabled.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    STARTS[cpu].fetch_add(1, SeqCst);
    load_tables(cpu);
    enable_lapic(cpu);
    say!("cpu {cpu} online");
    ONLINE[cpu].store(true, SeqCst);
    let main = AP_MAIN.load(SeqCst);
    // SAFETY: `boot` stored a `fn(usize) -> !` there before starting any AP.
    let main: fn(usize) -> ! = unsafe { core::mem::transmute(main) };
    main(cpu)
}

/// How long the BSP waits for an AP to say it is online; for one it started to stay
/// silent (`Start::Dead`, `Start::Never`), which will not.
pub const AP_TIMEOUT_US: u64 = 10_000_000;
pub const SILENT_AP_TIMEOUT_US: u64 = 3_000_000;

/// The BSP's start: COM1, the clock, the MP table (printed), descriptor tables and
/// the local APIC of every CPU; then every AP in the table's order, each started as `how`
/// says and waited for in turn (so the "online" lines come in order), running `ap_main`
/// once online. A check that fails is printed and counted in `FAILURES`; what leaves
/// nothing to test ends the run (no MP table, an image too large). Returns
/// the MP table and how many APs did not answer (each said so).
pub fn boot(ap_main: fn(usize) -> !, how: impl Fn(u8) -> Start) -> (MpInfo, u32) {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    let end = (&raw const _end) as u64;
    if end > TRAMPOLINE {
        say!("smp FAIL: the image ends at {end:#x}, above the trampoline at {TRAMPOLINE:#x}");
        crate::exit(STATUS_LAYOUT);
    }
    start_clock();
    let mp = match mp_table() {
        Ok(mp) => mp,
        Err(why) => {
            say!("smp FAIL: MP table: {why}");
            crate::exit(STATUS_NO_MP_TABLE);
        }
    };
    let _ = console(|w| {
        let _ = write!(w, "mp table: {} cpus (apic ids", mp.cpus);
        for id in mp.ids() {
            let _ = write!(w, " {id}");
        }
        let _ = write!(w, "), bsp {}, local apic at {:#x}", mp.bsp, mp.lapic);
        match mp.ioapic {
            Some((id, addr)) => writeln!(w, ", io apic {id} at {addr:#x}"),
            None => writeln!(w, ", no io apic"),
        }
    });
    if mp.lapic != LAPIC_BASE as u32 {
        fail!("mp table: local APIC at {:#x}, want {LAPIC_BASE:#x}", mp.lapic);
    }

    let bsp = usize::from(mp.bsp);
    BSP.store(bsp, SeqCst);
    AP_MAIN.store(ap_main as usize, SeqCst);
    build_tables();
    load_tables(bsp);
    enable_lapic(bsp);
    let version = lapic_read(APIC_VERSION);
    if version != 0x0005_0014 {
        fail!("cpu {bsp}: local APIC version register {version:#x}, want 0x50014");
    }
    STARTS[bsp].store(1, SeqCst);
    say!("cpu {bsp} online");
    ONLINE[bsp].store(true, SeqCst);

    copy_trampoline();
    let mut missing = 0;
    for id in mp.aps() {
        let start = clock();
        let how = how(id);
        let timeout = if how == Start::Normal { AP_TIMEOUT_US } else { SILENT_AP_TIMEOUT_US };
        if !start_ap(id, how) || !wait_until(timeout, || online(usize::from(id))) {
            say!("cpu {id} did not answer");
            missing += 1;
            continue;
        }
        say!("  cpu {id}: online {} us after its INIT", us_since(start));
    }
    (mp, missing)
}

/// Copies the trampoline to `TRAMPOLINE` and the halting loop to `DEAD_PAGE`.
fn copy_trampoline() {
    // SAFETY: both pages are RAM below 1 MiB that the image does not reach (checked in
    // `boot` against `_end`) and nothing else uses; the source is the trampoline's bytes
    // in the image, between two symbols of its section.
    unsafe {
        let start = &raw const yakvm_smp_trampoline;
        let len = (&raw const yakvm_smp_trampoline_end as usize) - start as usize;
        // Byte by byte (volatile, so that it does not become a call to memcpy, which the
        // guests do not have).
        for i in 0..len {
            ((TRAMPOLINE as usize + i) as *mut u8).write_volatile(start.add(i).read());
        }
        // cli; 1: hlt; jmp 1b
        for (i, b) in [0xfa, 0xf4, 0xeb, 0xfd].into_iter().enumerate() {
            ((DEAD_PAGE as usize + i) as *mut u8).write_volatile(b);
        }
    }
}

/// Writes AP `id`'s trampoline data (the BSP's control registers, the AP's stack and
/// entry), then INIT (assert, de-assert), 1 ms, SIPI, 200 us, SIPI, as the MP
/// specification's start-up sequence (B.4), with shorter delays (the CPUs are emulated).
fn start_ap(id: u8, how: Start) -> bool {
    let cpu = usize::from(id);
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: reads control registers only.
    unsafe { asm!("mov {}, cr0", "mov {}, cr3", "mov {}, cr4", out(reg) cr0, out(reg) cr3, out(reg) cr4, options(nomem, nostack, preserves_flags)) };
    if cr3 >> 32 != 0 {
        fail!("the BSP's CR3 {cr3:#x} is above 4 GiB: the trampoline cannot load it");
        return false;
    }
    let stack = (&raw const AP_STACKS) as u64 + ((cpu + 1) * size_of::<Stack>()) as u64;
    let entry = ap_entry as *const () as u64;
    // SAFETY: the copy's data block is inside the trampoline page (`copy_trampoline`);
    // no AP runs the trampoline now (they start one at a time, each waited for). Field
    // by field: the guests have no memcpy.
    unsafe {
        let offset = (&raw const yakvm_smp_tr_data as usize) - (&raw const yakvm_smp_trampoline as usize);
        let data = (TRAMPOLINE as usize + offset) as *mut TrampolineData;
        (&raw mut (*data).cr0).write_volatile(cr0);
        (&raw mut (*data).cr3).write_volatile(cr3);
        (&raw mut (*data).cr4).write_volatile(cr4);
        (&raw mut (*data).stack).write_volatile(stack);
        (&raw mut (*data).entry).write_volatile(entry);
        (&raw mut (*data).arg).write_volatile(id.into());
        (&raw mut (*data).mxcsr).write_volatile(0x1f80);
    }
    let page = if how == Start::Dead { DEAD_PAGE } else { TRAMPOLINE };
    let sipi = ICR_STARTUP | (page >> 12) as u32;
    let mut sent = send_ipi(id, ICR_INIT | ICR_LEVEL | ICR_ASSERT) && send_ipi(id, ICR_INIT | ICR_LEVEL);
    delay_us(1000);
    if how != Start::Never {
        sent = sent && send_ipi(id, sipi);
        delay_us(200);
        sent = sent && send_ipi(id, sipi);
    }
    if !sent {
        fail!("cpu {id}: the ICR stayed busy");
    }
    sent
}

// ---------------------------------------------------------------------------------------
// Miscellany

/// `cli; hlt` forever: a CPU with nothing more to do.
pub fn park() -> ! {
    pc::cli();
    crate::halt()
}
