//! The PC devices of `yakvm run --machine pc`, for guests that take interrupts: an IDT
//! (exceptions end the run, vectors 0x20-0x2f are the 16 PIC IRQs), the two 8259A PICs,
//! the 8254 PIT's channel 0, the 16550A UART COM1, and interrupt-flag helpers.
//!
//! Interrupts: `install` loads the IDT; an IRQ's entry stub saves the caller-saved
//! registers and calls `irq`, which counts the IRQ (`irq_count`) and calls the handler
//! registered with `set_handler`, or sends the EOI itself when there is none. The stubs run
//! on a stack of their own (IST1 of a TSS in our own GDT): the interrupted code may keep
//! data in the 128-byte red zone below its RSP (the guests are built for the x86_64 SysV
//! ABI), which the CPU's interrupt frame would otherwise overwrite.
//!
//! `irq` does not look for spurious IRQ7/IRQ15 (ISR bit clear): the emulated PIC is taken
//! to raise none.

use crate::{outb, tables};
use core::arch::{asm, global_asm};
use x86_64::instructions::port::Port;
use x86_64::structures::gdt::GlobalDescriptorTable;
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, AtomicUsize, Ordering};

/// Reads one byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    // SAFETY: a port read; in a yakvm guest every port access exits to the emulator.
    unsafe { Port::new(port).read() }
}

/// A short delay between PIC initialisation words: a write to port 0x80, which is a sink.
pub fn io_wait() {
    outb(0x80, 0);
}

// ---------------------------------------------------------------------------------------
// Interrupt flag

// The `x86_64` crate's, under the names the guests use: `sti` (STI; NOP, so that the
// interrupt shadow ends inside it), `cli`, `interrupts_enabled` (RFLAGS.IF),
// `without_interrupts` (runs `f` with interrupts disabled, then restores IF as it was), and
// `sti_hlt`: `sti; hlt`, which enables interrupts and waits for one. STI delays interrupts
// by one instruction, so none can be taken between the two: called with IF = 0 after
// checking a condition that a handler changes, it cannot miss the interrupt that changes
// it.
pub use x86_64::instructions::interrupts::{
    are_enabled as interrupts_enabled, disable as cli, enable as sti, enable_and_hlt as sti_hlt, without_interrupts,
};

/// HLT: with interrupts enabled, waits for the next one; with them disabled, the emulator
/// ends the run. Not the crate's `hlt`, which tells the compiler that it touches no
/// memory: the interrupt handlers that run meanwhile do.
pub fn hlt() {
    // SAFETY: stops this vCPU until the next interrupt, whose handler may change memory.
    unsafe { asm!("hlt", options(nostack)) };
}

// ---------------------------------------------------------------------------------------
// GDT, TSS and IDT

/// First vector of the PIC IRQs (master 0x20-0x27, slave 0x28-0x2f).
pub const IRQ_BASE: u8 = 0x20;

/// Null, 64-bit code (0x08) and data (0x10) as in the emulator's GDT, then the TSS
/// descriptor (0x18, two entries, appended by `install`).
static mut GDT: GlobalDescriptorTable<5> = tables::gdt();

/// The 64-bit TSS: only IST1 is used.
static mut TSS: TaskStateSegment = TaskStateSegment::new();

/// The stack exceptions and IRQs run on (IST1).
#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);
static mut IST_STACK: Stack = Stack([0; 16 * 1024]);

static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

/// Handlers of the 16 IRQs (`set_handler`). Written only with interrupts disabled and read
/// only by `irq`, which runs with interrupts disabled (interrupt gates clear IF), on the
/// one vCPU: the two never overlap.
static mut HANDLERS: [Option<fn()>; 16] = [None; 16];

/// How many times each IRQ was taken.
static COUNTS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];

// SAFETY: `yakvm_pc_stubs` is defined by the global_asm below: 48 addresses (read only).
unsafe extern "C" {
    /// Entry stubs: vectors 0-31 (exceptions), then IRQs 0-15 (vectors 0x20-0x2f).
    static yakvm_pc_stubs: [u64; 48];
}

global_asm!(
    // Exceptions: push the vector and end the run in `exception` (an error code, if the
    // CPU pushed one, stays below it, unused).
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "yakvm_pc_exc_\\v:",
    "push \\v",
    "jmp yakvm_pc_exception",
    ".endr",
    "yakvm_pc_exception:",
    "pop rdi",
    "and rsp, -16",
    "call {exception}",
    "ud2",
    // IRQs: save rax, put the IRQ number in it, join the common path.
    ".irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    "yakvm_pc_irq_\\i:",
    "push rax",
    "mov eax, \\i",
    "jmp yakvm_pc_irq_common",
    ".endr",
    "yakvm_pc_irq_common:",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    // Alignment: in 64-bit mode the CPU aligns RSP down to 16 before pushing its frame
    // (SS, RSP, RFLAGS, CS, RIP: 40 bytes), so RSP is 8 mod 16 at the stub; our 9 pushes
    // (72 bytes) make 112 bytes below the aligned point: RSP is 0 mod 16, as the call
    // needs. The 512-byte FXSAVE area keeps it so (and FXSAVE needs 16-byte alignment):
    // the SSE registers are caller-saved too, and Rust code uses them.
    "sub rsp, 512",
    "fxsave [rsp]",
    "cld",
    "mov edi, eax",
    "call {irq}",
    "fxrstor [rsp]",
    "add rsp, 512",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    // The stubs' addresses, for `install`.
    ".pushsection .rodata.yakvm_pc_stubs, \"a\"",
    ".balign 8",
    ".globl yakvm_pc_stubs",
    "yakvm_pc_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".quad yakvm_pc_exc_\\v",
    ".endr",
    ".irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    ".quad yakvm_pc_irq_\\i",
    ".endr",
    ".popsection",
    exception = sym exception,
    irq = sym irq,
);

/// Any exception ends the run: a message on the seed serial port (0x10), exit status 99.
extern "C" fn exception(vector: u64) -> ! {
    crate::print("guest exception ");
    crate::print_u64(vector);
    crate::print("\n");
    crate::exit(99)
}

/// The IRQ dispatcher, called by the entry stubs with interrupts disabled: counts IRQ `n`,
/// then calls its handler, which must send the EOI itself; without a handler, sends it.
extern "C" fn irq(n: u64) {
    let n = n as usize;
    COUNTS[n].fetch_add(1, Ordering::SeqCst);
    // SAFETY: see `HANDLERS`: interrupts are disabled here, so nothing writes it now.
    let handler = unsafe { HANDLERS[n] };
    match handler {
        Some(f) => f(),
        None => eoi(n as u8),
    }
}

/// Loads our GDT (the emulator's selectors plus a TSS whose IST1 is `IST_STACK`) and the
/// IDT: every exception ends the run, vectors 0x20-0x2f go to `irq`. Call it once, first,
/// with interrupts disabled (as the emulator starts the guest).
pub fn install() {
    // SAFETY: one vCPU, interrupts disabled, called before any interrupt or exception can
    // use these tables; they are statics, so they outlive every use by the CPU. The GDT
    // keeps 0x08 and 0x10 as the emulator had them, so reloading CS, DS, ES and SS
    // changes nothing else. Every gate runs on IST1, which the TSS sets; each stub fits
    // its vector (the exceptions' never return, the IRQs' push no error code).
    unsafe {
        let stack_top = (&raw const IST_STACK) as u64 + size_of::<Stack>() as u64;
        let tss = &raw mut TSS;
        (*tss).interrupt_stack_table[0] = VirtAddr::new(stack_top);
        let tss_selector = tables::append_tss(&mut *core::ptr::addr_of_mut!(GDT), tss);
        tables::load_gdt(&*core::ptr::addr_of!(GDT), tss_selector);

        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let stubs = &*core::ptr::addr_of!(yakvm_pc_stubs);
        for v in 0..32u8 {
            if let Some(gate) = tables::set_gate(idt, v, stubs[usize::from(v)]) {
                gate.set_stack_index(0);
            }
        }
        for i in 0..16u8 {
            if let Some(gate) = tables::set_gate(idt, IRQ_BASE + i, stubs[32 + usize::from(i)]) {
                gate.set_stack_index(0);
            }
        }
        idt.load_unsafe();
    }
}

/// Registers `handler` for IRQ `irq` (0-15), replacing any earlier one. It runs with
/// interrupts disabled and must send the EOI (`eoi`) unless it means to leave the IRQ in
/// service.
pub fn set_handler(irq: u8, handler: fn()) {
    let n = usize::from(irq);
    assert!(n < 16);
    without_interrupts(|| {
        // SAFETY: see `HANDLERS`: interrupts are disabled, so `irq` cannot run meanwhile.
        unsafe { HANDLERS[n] = Some(handler) };
    });
}

/// How many times IRQ `irq` was taken (counted by the dispatcher, whatever the handler).
pub fn irq_count(irq: u8) -> u64 {
    COUNTS[usize::from(irq)].load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------
// 8259A PICs

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xa0;
const PIC2_DATA: u16 = 0xa1;
/// OCW2 non-specific EOI.
const EOI: u8 = 0x20;

/// The interrupt masks last written (bit n masks IRQ n): OCW1 of the master in the low
/// byte, of the slave in the high byte.
static PIC_MASK: AtomicU16 = AtomicU16::new(0xffff);

/// Initialises both PICs (ICW1-4): edge triggered, cascaded (slave on IRQ2), 8086 mode,
/// master at vectors 0x20-0x27, slave at 0x28-0x2f; then masks every IRQ but those whose
/// bit is set in `unmasked` (IRQ2, the cascade, is unmasked with any slave IRQ).
pub fn pic_init(unmasked: u16) {
    outb(PIC1_CMD, 0x11); // ICW1: edge, cascade, ICW4 follows
    io_wait();
    outb(PIC2_CMD, 0x11);
    io_wait();
    outb(PIC1_DATA, IRQ_BASE); // ICW2: vector base
    io_wait();
    outb(PIC2_DATA, IRQ_BASE + 8);
    io_wait();
    outb(PIC1_DATA, 1 << 2); // ICW3 master: a slave on IRQ2
    io_wait();
    outb(PIC2_DATA, 2); // ICW3 slave: its cascade identity
    io_wait();
    outb(PIC1_DATA, 0x01); // ICW4: 8086 mode, normal EOI
    io_wait();
    outb(PIC2_DATA, 0x01);
    io_wait();
    let mut mask = !unmasked;
    if unmasked & 0xff00 != 0 {
        mask &= !(1 << 2);
    }
    without_interrupts(|| {
        PIC_MASK.store(mask, Ordering::SeqCst);
        outb(PIC1_DATA, mask as u8);
        outb(PIC2_DATA, (mask >> 8) as u8);
    });
}

/// Sets (`masked`) or clears IRQ `irq`'s bit in its PIC's mask (OCW1).
fn set_masked(irq: u8, masked: bool) {
    assert!(irq < 16);
    without_interrupts(|| {
        let old = PIC_MASK.load(Ordering::SeqCst);
        let mask = if masked { old | 1 << irq } else { old & !(1 << irq) };
        PIC_MASK.store(mask, Ordering::SeqCst);
        if irq < 8 {
            outb(PIC1_DATA, mask as u8);
        } else {
            outb(PIC2_DATA, (mask >> 8) as u8);
        }
    });
}

/// Masks IRQ `irq` in its PIC.
pub fn mask_irq(irq: u8) {
    set_masked(irq, true);
}

/// Unmasks IRQ `irq` in its PIC (for a slave IRQ, IRQ2 must be unmasked too).
pub fn unmask_irq(irq: u8) {
    set_masked(irq, false);
}

/// Ends IRQ `irq`'s service: a non-specific EOI to the slave for IRQs 8-15, then to the
/// master.
pub fn eoi(irq: u8) {
    if irq >= 8 {
        outb(PIC2_CMD, EOI);
    }
    outb(PIC1_CMD, EOI);
}

// ---------------------------------------------------------------------------------------
// 8254 PIT, channel 0 (IRQ0)

/// The PIT's input clock, Hz.
pub const PIT_HZ: u32 = 1_193_182;
const PIT_CH0: u16 = 0x40;
const PIT_CMD: u16 = 0x43;

/// The channel-0 divisor closest to `hz` (1 to 65536).
pub fn pit_divisor(hz: u32) -> u32 {
    let hz = hz.max(1);
    ((PIT_HZ + hz / 2) / hz).clamp(1, 0x1_0000)
}

/// Programs channel 0 as a rate generator (mode 2, binary) with `divisor` (1 to 65536;
/// 65536 is written as 0): IRQ0 fires PIT_HZ / divisor times a second.
pub fn pit_start(divisor: u32) {
    outb(PIT_CMD, 0x34); // channel 0, low then high byte, mode 2, binary
    outb(PIT_CH0, divisor as u8);
    outb(PIT_CH0, (divisor >> 8) as u8);
}

/// Programs channel 0 to interrupt `hz` times a second (mode 2, divisor rounded).
pub fn pit_init(hz: u32) {
    pit_start(pit_divisor(hz));
}

/// Timer interrupts counted by `start_tick_counter`'s handler.
static TICKS: AtomicU64 = AtomicU64::new(0);

fn count_tick() {
    TICKS.fetch_add(1, Ordering::SeqCst);
    eoi(0);
}

/// The IDT, the PICs with only IRQ0 unmasked, and the PIT at `hz`, with a handler that
/// counts each timer interrupt once (`ticks`) and sends its EOI.
pub fn start_tick_counter(hz: u32) {
    install();
    set_handler(0, count_tick);
    pic_init(1 << 0);
    pit_init(hz);
}

/// The timer interrupts counted since `start_tick_counter`.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::SeqCst)
}

/// Waits with `sti; hlt` until `n` ticks were counted, checking with interrupts off so
/// that no tick is missed in between; returns with interrupts off.
pub fn wait_for_ticks(n: u64) {
    loop {
        cli();
        if ticks() >= n {
            return;
        }
        sti_hlt();
    }
}

/// Channel 0's current count, latched (counter latch command), then read low and high.
pub fn pit_read() -> u16 {
    outb(PIT_CMD, 0x00);
    let lo = inb(PIT_CH0);
    let hi = inb(PIT_CH0);
    u16::from_le_bytes([lo, hi])
}

// ---------------------------------------------------------------------------------------
// 16550A UART, COM1 (IRQ4)

/// COM1's base port.
pub const COM1: u16 = 0x3f8;
/// Register offsets from the base port (DLAB = 0 unless said).
pub const RBR: u16 = 0; // read: receive buffer
pub const THR: u16 = 0; // write: transmit holding
pub const DLL: u16 = 0; // DLAB = 1: divisor latch, low byte
pub const IER: u16 = 1;
pub const DLM: u16 = 1; // DLAB = 1: divisor latch, high byte
pub const IIR: u16 = 2; // read: interrupt identification
pub const FCR: u16 = 2; // write: FIFO control
pub const LCR: u16 = 3;
pub const MCR: u16 = 4;
pub const LSR: u16 = 5;
pub const MSR: u16 = 6;

/// IER: received data available, THR empty.
pub const IER_RDA: u8 = 0x01;
pub const IER_THRE: u8 = 0x02;
/// MCR: DTR, RTS, and OUT2, which on a PC gates the UART's IRQ line.
pub const MCR_DTR_RTS: u8 = 0x03;
pub const MCR_OUT2: u8 = 0x08;
/// LSR: data ready, THR empty, transmitter empty.
pub const LSR_DR: u8 = 0x01;
pub const LSR_THRE: u8 = 0x20;
pub const LSR_TEMT: u8 = 0x40;
/// IIR: bit 0 set when no interrupt is pending; bits 1-3 identify the pending one.
pub const IIR_NONE: u8 = 0x01;
pub const IIR_ID: u8 = 0x0e;
pub const IIR_MODEM: u8 = 0x00;
pub const IIR_THRE: u8 = 0x02;
pub const IIR_RDA: u8 = 0x04;
pub const IIR_LINE: u8 = 0x06;
pub const IIR_TIMEOUT: u8 = 0x0c;

/// Initialises COM1: 115200 baud, 8N1, FIFOs on and cleared with a receive trigger of one
/// byte, then MCR = `mcr` and IER = `ier` (0 and `MCR_DTR_RTS` for polling).
pub fn uart_init(ier: u8, mcr: u8) {
    outb(COM1 + IER, 0);
    outb(COM1 + LCR, 0x80); // DLAB
    outb(COM1 + DLL, 1); // divisor 1: 115200 baud
    outb(COM1 + DLM, 0);
    outb(COM1 + LCR, 0x03); // 8 data bits, no parity, 1 stop bit, DLAB off
    outb(COM1 + FCR, 0x07);
    outb(COM1 + MCR, mcr);
    outb(COM1 + IER, ier);
}

/// Sends one byte by polling: waits until the THR is empty, then writes it.
pub fn putc(b: u8) {
    while inb(COM1 + LSR) & LSR_THRE == 0 {
        core::hint::spin_loop();
    }
    outb(COM1 + THR, b);
}

/// Receives one byte by polling: waits until data is ready, then reads it.
pub fn getc() -> u8 {
    while inb(COM1 + LSR) & LSR_DR == 0 {
        core::hint::spin_loop();
    }
    inb(COM1 + RBR)
}

/// Writes a string to COM1 (polling).
pub fn print(s: &str) {
    s.bytes().for_each(putc);
}

/// Writes `n` in decimal to COM1 (polling).
pub fn print_u64(n: u64) {
    crate::put_u64(n, putc);
}

// ---------------------------------------------------------------------------------------
// Ring buffer

const RING_SIZE: usize = 256;

/// A byte queue between one producer and one consumer on the one vCPU, one of which may be
/// an interrupt handler: `push` only moves `head`, `pop` only moves `tail`, each after
/// the byte it hands over is stored or read.
pub struct Ring {
    buf: [AtomicU8; RING_SIZE],
    /// Bytes pushed so far (wrapping); the next one goes to `head % RING_SIZE`.
    head: AtomicUsize,
    /// Bytes popped so far (wrapping).
    tail: AtomicUsize,
}

impl Ring {
    pub const fn new() -> Self {
        Self { buf: [const { AtomicU8::new(0) }; RING_SIZE], head: AtomicUsize::new(0), tail: AtomicUsize::new(0) }
    }

    /// Appends `b`; `false` (and drops it) if the ring is full.
    pub fn push(&self, b: u8) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        if head.wrapping_sub(self.tail.load(Ordering::Acquire)) == RING_SIZE {
            return false;
        }
        self.buf[head % RING_SIZE].store(b, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes the oldest byte, if any.
    pub fn pop(&self) -> Option<u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        let b = self.buf[tail % RING_SIZE].load(Ordering::Relaxed);
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Some(b)
    }

    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Acquire)
    }
}

impl Default for Ring {
    fn default() -> Self {
        Self::new()
    }
}
