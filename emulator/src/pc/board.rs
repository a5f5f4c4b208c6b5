//! The PC board (`--machine pc`): which range is which device, and the wires between them
//! (the PIT's OUT0 to IRQ0, the UART to IRQ4, the i8042's reset line). Every ISA line goes
//! to both interrupt controllers, as on a PC: the 8259A PICs (which reach vCPU 0 through
//! its LINT0, virtual-wire mode) and the I/O APIC (which sends messages to the local
//! APICs); a guest uses one and masks the other. The local APICs (one per vCPU, MMIO at
//! 0xfee00000) and the I/O APIC (0xfec00000) are in `apics`. PCI's root bus (`pci.rs`) is
//! at the configuration ports and at its ECAM window (MMIO, [`ECAM_BASE`]).
//!
//! | ports | device |
//! |---|---|
//! | 0x20-0x21, 0xa0-0xa1 | master and slave 8259A PIC (slave on IRQ2) |
//! | 0x40-0x43, 0x61 | 8254 PIT (channel 0 on IRQ0), port B (speaker gate, OUT2) |
//! | 0x60, 0x64 | i8042: 0xfe to 0x64 pulses the reset line (ends the run as a reboot); with `--vga`, a PS/2 keyboard (scan code set 1, IRQ1) that console input is typed on |
//! | 0x92 | system control port A: bit 0 is a fast reset; bit 1 (A20) reads as set |
//! | 0xcf8-0xcfb | PCI configuration address (dword); in it, the reset control at 0xcf9 (byte): a write with bit 2 (reset CPU) set resets |
//! | 0xcfc-0xcff | PCI configuration data (mechanism #1, byte/word/dword), `pci.rs`: the host bridge at 00:00.0 |
//! | 0x70-0x71 | CMOS RTC with the host's time |
//! | 0x80 | POST code sink |
//! | 0x1f0-0x1f7, 0x3f6 | with `--ide` only: an IDE channel (`ide.rs`, PIO, LBA28) with one or two disks, on IRQ14 |
//! | 0x3d4-0x3d5, 0x3da | the VGA's CRT controller (index, data) and input status (`vga.rs`): the cursor of the text screen at 0xb8000 (RAM); with `--vga` the screen is mirrored to the console |
//! | 0x3f8-0x3ff | 16550A UART (COM1) on IRQ4: the console |
//! | 0x600-0x60b | ACPI PM registers (PM1a event and control, PM timer) at their real widths; the SCI on IRQ9 (level); S5 ends the run as a power-off |
//! | MMIO 0xd0000000-0xdfffffff | PCI's memory window: the functions' BARs (`pci.rs`); with `--pci-testdev`, two test functions at 00:16.0 and 00:1e.0 (`pci_testdev.rs`), their INTA# on GSI 22 as the `_PRT` says (`pci_intx.rs`: wired-OR, level, active low) |
//! | 0xe0-0xeb, 0x2000-0x2017 | with `--testdev` only: the test device (`testdev.rs`), its lines wired as the ISA lines 0-15 and the I/O APIC's pins 16-23; its test memory at MMIO 0xff000000 |
//!
//! Each device is on the buses (`bus.rs`) under a lock of its own; the interrupt controllers
//! (the PICs, the local APICs and the I/O APIC) share one ([`Interrupts`]). A device raises
//! its interrupt line through an [`IrqLine`] handle (message-signalled interrupts: an
//! [`MsiSender`]), from any thread: the handle sets the controllers' state and wakes the
//! vCPUs that got something. Lock order: a device, then the interrupt controllers (never
//! the other way round).
//!
//! The seed machine's registers stay where a guest finds them on `seed`, except the DMA
//! disk, whose ports 0x20-0x22 belong to the PIC here: it moves to [`DISK_PORT_BASE`]
//! (`devices.rs`). Reads of ports nothing answers return all ones and writes are
//! dropped, as on a PC: counted, never fatal.
//!
//! Console input is never lost: bytes wait here while the UART's receive FIFO is full, and
//! a guest's FIFO reset (FCR bit 1, which every driver does at start, often after input
//! arrived through a pipe) does not discard what the console already sent.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::acpi::{prt_gsi, PciDesc, INTX_GSI_BASE, INTX_LINES, PM_BASE, SCI_IRQ};
use super::acpi_pm::{self, AcpiPm};
use super::apic::Apics;
use super::ioapic::Message;
use super::cmos::Cmos;
use super::i8042::I8042;
use super::ide::{self, IdeChannel};
use super::ps2kbd::Ps2Keyboard;
use super::ioapic::{IOAPIC_BASE, IOAPIC_SIZE};
use super::lapic::{LAPIC_BASE, LAPIC_SIZE};
use super::pci_intx::{IntxPin, WiredOr, Wire};
use super::pci_testdev::{self, PciTestDev};
use super::pci::{self, Bdf, PciError, PciRoot, PciStats, CONFIG_ADDRESS, CONFIG_DATA, ECAM_BASE, ECAM_SIZE};
use super::pic::Pic;
use super::pit::{IrqTimer, Pit};
use super::testdev::{self, TestDev};
use super::uart::{Uart, COM1_BASE, COM1_IRQ};
use super::vga::{self, Mirror, Vga};
use crate::bus::{lock, Bus, BusDevice, BusError, Ctx, Effect, SharedDevice, Span};
use crate::devices::Console;
use crate::events::{wake_cpus, HostTimer, Waker};

/// The seed DMA disk's sector, DMA-address and command ports on the pc machine.
pub const DISK_PORT_BASE: u16 = 0x1020;
/// POST codes (BIOSes and Linux's `io_delay` write here).
pub const POST_PORT: u16 = 0x80;
/// The UART's FIFO control register and its "clear the receive FIFO" bit.
const UART_FCR: u16 = COM1_BASE + 2;
const FCR_CLEAR_RX: u8 = 1 << 1;
/// System control port A (fast reset in bit 0, A20 gate in bit 1): one more way a PC
/// reboots (the reset control register at 0xcf9 is another, `pci.rs`).
const PORT_A: u16 = 0x92;

bitflags::bitflags! {
    /// System control port A's bits: a write with FAST_RESET resets; A20 reads as set
    /// (the A20 gate is always open); the others read 0 and are dropped.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct PortABits: u8 {
        const FAST_RESET = 1 << 0;
        const A20 = 1 << 1;
        const _ = !0;
    }
}
/// The PIT's channel 0 drives this line.
pub const PIT_IRQ: u8 = 0;
/// The keyboard's line.
pub const KEYBOARD_IRQ: u8 = 1;

/// The devices' clock: nanoseconds since the board was built.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The interrupt controllers, behind one lock: the PICs, the local APICs and the I/O APIC,
/// and the vCPUs something was sent to.
pub struct Interrupts {
    pub pic: Pic,
    /// The local APICs (index = vCPU = APIC id) and the I/O APIC.
    pub apics: Apics,
    /// vCPUs that something was sent to since the machine last looked (bit i: vCPU i):
    /// the machine wakes them.
    wakes: u32,
    /// Interrupts delivered to the CPU, by ISA line (`--stats`).
    pub irqs: [u64; 16],
    /// PCI's INTx lines (the `_PRT`'s GSIs): which functions hold each.
    pci_lines: WiredOr,
    /// The kernel's APICs: whether vCPU 0's LINT0 takes the PIC's INTR, as the guest set
    /// it in the module's APIC (vCPU 0's last `RUN` said; `set_kernel_lint0`). `None`:
    /// the emulator's own local APIC decides.
    kernel_lint0: Option<bool>,
}

impl Interrupts {
    fn new(cpus: usize) -> Self {
        let pci_lines = WiredOr::new(INTX_GSI_BASE, INTX_LINES);
        Self { pic: Pic::new(), apics: Apics::new(cpus), wakes: 0, irqs: [0; 16], pci_lines, kernel_lint0: None }
    }

    /// The kernel's APICs: whether vCPU 0's LINT0 takes the PIC's INTR now (ExtINT and
    /// unmasked, or its APIC disabled), as the module reported it.
    pub fn set_kernel_lint0(&mut self, accepts_pic: bool) {
        self.kernel_lint0 = Some(accepts_pic);
    }

    /// Whether the PIC's INTR reaches vCPU `cpu` (vCPU 0's LINT0 only).
    fn pic_reaches(&self, cpu: usize) -> bool {
        cpu == 0 && self.kernel_lint0.unwrap_or_else(|| self.apics.lapics[0].accepts_pic())
    }

    /// PCI INTx: `source` asserts the shared line `gsi` or lets it go; the I/O APIC sees
    /// the line asserted while any source holds it.
    pub fn pci_intx(&mut self, gsi: u32, source: u32, asserted: bool) {
        if let Some(level) = self.pci_lines.set(gsi, source, asserted) {
            self.wakes |= self.apics.set_pin(gsi as u8, level);
        }
    }

    /// An edge on ISA line `irq`, to both interrupt controllers.
    pub fn isa_edge(&mut self, irq: u8) {
        self.pic.pulse_irq(irq);
        if self.pic.has_interrupt() {
            self.wakes |= 1;
        }
        self.wakes |= self.apics.isa_irq(irq);
    }

    /// The level of ISA line `irq` (a level-triggered source), to both controllers.
    pub fn isa_level(&mut self, irq: u8, high: bool) {
        self.pic.set_irq(irq, high);
        if self.pic.has_interrupt() {
            self.wakes |= 1;
        }
        if let Some(pin) = Apics::isa_pin(irq) {
            self.wakes |= self.apics.set_pin(pin, high);
        }
    }

    /// Notes that something was sent to the vCPUs of `mask`.
    pub fn wake(&mut self, mask: u32) {
        self.wakes |= mask;
    }

    /// The vCPUs something was sent to since the last call (bit i: vCPU i).
    pub fn take_wakes(&mut self) -> u32 {
        std::mem::take(&mut self.wakes)
    }

    /// Whether vCPU `cpu` has an interrupt to take: from its local APIC, or (vCPU 0, LINT0
    /// in virtual-wire mode) from the PIC.
    pub fn interrupt_pending(&self, cpu: usize) -> bool {
        self.apics.lapics[cpu].pending_interrupt().is_some() || (self.pic_reaches(cpu) && self.pic.has_interrupt())
    }

    /// vCPU `cpu`'s interrupt acknowledge: the vector its local APIC delivers (moved to
    /// its in-service register), else, on vCPU 0 in virtual-wire mode, the PIC's request
    /// (counted by line).
    pub fn acknowledge(&mut self, cpu: usize) -> Option<u8> {
        if let Some(vector) = self.apics.lapics[cpu].acknowledge() {
            return Some(vector);
        }
        if !self.pic_reaches(cpu) {
            return None;
        }
        let (vector, irq) = self.pic.acknowledge()?;
        self.irqs[usize::from(irq & 15)] += 1;
        Some(vector)
    }
}

/// An interrupt line into the PICs and the I/O APIC (an ISA IRQ), as a device holds it:
/// raised from any thread, it wakes the vCPUs that got something.
#[derive(Clone)]
pub struct IrqLine {
    controllers: Arc<Mutex<Interrupts>>,
    wakers: Arc<[Waker]>,
    line: u8,
}

impl IrqLine {
    /// One interrupt: an edge (for edge-triggered sources).
    pub fn edge(&self) {
        self.change(|c| c.isa_edge(self.line));
    }

    /// The line's level (for level-triggered sources).
    pub fn set_level(&self, high: bool) {
        self.change(|c| c.isa_level(self.line, high));
    }

    fn change(&self, f: impl FnOnce(&mut Interrupts)) {
        let woken = {
            let mut controllers = lock(&self.controllers);
            f(&mut controllers);
            controllers.take_wakes()
        };
        wake_cpus(&self.wakers, woken);
    }
}

/// A PCI function's INTx pin's line: its GSI (the `_PRT`'s), shared with the other
/// functions routed there (a wired-OR), held by this function as one source.
struct PciLine {
    controllers: Arc<Mutex<Interrupts>>,
    wakers: Arc<[Waker]>,
    gsi: u32,
    source: u32,
}

impl Wire for PciLine {
    fn set(&self, asserted: bool) {
        let woken = {
            let mut controllers = lock(&self.controllers);
            controllers.pci_intx(self.gsi, self.source, asserted);
            controllers.take_wakes()
        };
        wake_cpus(&self.wakers, woken);
    }
    fn gsi(&self) -> u32 {
        self.gsi
    }
}

/// Message-signalled interrupts (a PCI device's MSI) into the local APICs: sent from any
/// thread, they wake the vCPUs that got something.
#[derive(Clone)]
pub struct MsiSender {
    controllers: Arc<Mutex<Interrupts>>,
    wakers: Arc<[Waker]>,
}

impl MsiSender {
    pub fn send(&self, message: Message) {
        let woken = lock(&self.controllers).apics.message(message);
        wake_cpus(&self.wakers, woken);
    }
}

/// A byte-wide ISA device: its bus ranges are `Span::Bytes`, so it gets one byte at a
/// time, at its absolute port.
pub(crate) trait IsaPorts: Send {
    fn read_port(&mut self, port: u16) -> u8;
    fn write_port(&mut self, port: u16, value: u8) -> io::Result<Effect>;
}

impl<T: IsaPorts> BusDevice for T {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_port((base + offset + i as u64) as u16);
        }
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        for (i, &byte) in data.iter().enumerate() {
            let effect = self.write_port((base + offset + i as u64) as u16, byte)?;
            if effect != Effect::Continue {
                return Ok(effect);
            }
        }
        Ok(Effect::Continue)
    }
}

/// The PICs' ports: the PICs live with the other interrupt controllers.
struct PicPorts(Arc<Mutex<Interrupts>>);

impl IsaPorts for PicPorts {
    fn read_port(&mut self, port: u16) -> u8 {
        lock(&self.0).pic.read(port)
    }
    fn write_port(&mut self, port: u16, value: u8) -> io::Result<Effect> {
        lock(&self.0).pic.write(port, value);
        Ok(Effect::Continue)
    }
}

/// The fastest timer interrupt rate yakvm delivers (KVM's PIT has the same floor): a
/// guest that programs the PIT faster gets its ticks merged. The local APIC's timer has
/// the same floor (one number for both).
pub const MIN_TIMER_PERIOD: Duration = Duration::from_nanos(super::lapic::MIN_PERIODIC_NS);

/// The 8254 PIT (and port B), and its channel 0 on IRQ0, timed by a host timer that the
/// event thread watches (`events.rs`): a guest's write arms it, on whichever vCPU; its
/// expiries raise IRQ0 on the event thread.
pub struct PitDevice {
    pub pit: Pit,
    clock: Clock,
    irq0: IrqLine,
    /// Up to when the PIT's IRQ0 edges have been taken into account.
    irq0_seen_ns: u64,
    /// The host timer behind channel 0, and what it is armed for (`None`: disarmed, or a
    /// one-shot whose edge was taken).
    timer: HostTimer,
    armed: Option<IrqTimer>,
    warned_fast_timer: bool,
    /// Timer edges that arrived while the previous one was still pending (merged).
    pub merged_ticks: u64,
}

impl IsaPorts for PitDevice {
    fn read_port(&mut self, port: u16) -> u8 {
        self.pit.read(port, self.clock.now_ns())
    }
    fn write_port(&mut self, port: u16, value: u8) -> io::Result<Effect> {
        self.pit.write(port, value, self.clock.now_ns());
        self.follow()?;
        Ok(Effect::Continue)
    }
}

impl PitDevice {
    fn new(clock: Clock, irq0: IrqLine) -> io::Result<Self> {
        let timer = HostTimer::new()?;
        Ok(Self { pit: Pit::new(), clock, irq0, irq0_seen_ns: 0, timer, armed: None, warned_fast_timer: false, merged_ticks: 0 })
    }

    /// The PIT's edges on IRQ0 up to now: one interrupt request, however many edges came
    /// (the PIC latches one; the others are counted as merged). Called by the event thread
    /// at each expiry of the host timer, and by the clock besides.
    pub fn timer_tick(&mut self) {
        let now = self.clock.now_ns();
        let edges = self.pit.irq0_edges(self.irq0_seen_ns, now);
        self.irq0_seen_ns = now;
        if edges > 0 {
            self.irq0.edge();
            self.merged_ticks += edges - 1;
        }
        // A one-shot count that has run out wakes nobody any more.
        if self.pit.irq0_timer(now).is_none() {
            self.armed = None;
        }
    }

    /// The host timer will raise IRQ0 again (a count runs that has an edge to come, or
    /// one whose edge is not taken yet).
    pub fn timer_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// After the guest wrote the PIT: arms the host timer for channel 0's next edge as the
    /// PIT now has it, unless it is armed for it already.
    ///
    /// Edges are counted from the last count taken (`irq0_seen_ns`), not from now: a
    /// one-shot count that runs out before the host timer's expiry is taken has its edge
    /// still to be taken (resetting to now lost it, and a tickless Linux then halted for
    /// good). The old programming's edges need no care: `irq0_edges` counts only the
    /// current programming's, none before its start.
    fn follow(&mut self) -> io::Result<()> {
        let now = self.clock.now_ns();
        let next = self.pit.irq0_timer(now);
        if next == self.armed {
            return Ok(());
        }
        self.armed = next;
        let Some(t) = next else {
            return self.timer.arm(None, None);
        };
        let period = t.period_ns.map(Duration::from_nanos);
        if period.is_some_and(|p| p < MIN_TIMER_PERIOD) && !self.warned_fast_timer {
            self.warned_fast_timer = true;
            eprintln!(
                "yakvm: the guest runs the PIT at {:.0} Hz; timer interrupts are delivered at most every {} us (the others merge)",
                1e9 / t.period_ns.unwrap_or(1) as f64,
                MIN_TIMER_PERIOD.as_micros()
            );
        }
        let delay = Duration::from_nanos(t.next_ns.saturating_sub(now));
        self.timer.arm(Some(delay), period.map(|p| p.max(MIN_TIMER_PERIOD)))
    }

    /// The host timer, for the event thread to watch.
    pub fn host_timer(&self) -> HostTimer {
        self.timer.clone()
    }
}

/// The 16550A UART on IRQ4: the console. Console input is never lost: bytes wait here
/// while the UART's receive FIFO is full, and a guest's FIFO reset (FCR bit 1, which every
/// driver does at start, often after input arrived through a pipe) does not discard what
/// the console already sent.
pub struct UartDevice {
    uart: Uart<Vec<u8>>,
    /// Console input the UART's receive FIFO had no room for yet.
    input: VecDeque<u8>,
    console: Arc<Console>,
    irq: IrqLine,
}

impl IsaPorts for UartDevice {
    fn read_port(&mut self, port: u16) -> u8 {
        let value = self.uart.read(port);
        // The guest may have made room in the receive FIFO.
        self.feed();
        self.wire();
        value
    }
    fn write_port(&mut self, port: u16, value: u8) -> io::Result<Effect> {
        let value = if port == UART_FCR { value & !FCR_CLEAR_RX } else { value };
        let written = self.uart.write(port, value);
        self.wire();
        let out = self.uart.output();
        if !out.is_empty() {
            let sent = self.console.write(out);
            out.clear();
            sent?;
        }
        written?;
        Ok(Effect::Continue)
    }
}

impl UartDevice {
    /// Bytes typed or piped for the guest's console: queued, then moved into the UART as
    /// its receive FIFO makes room (none is ever dropped).
    pub fn console_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
        self.feed();
        self.wire();
    }

    /// Console input the UART has not taken yet.
    pub fn input_backlog(&self) -> usize {
        self.input.len()
    }

    fn feed(&mut self) {
        while !self.input.is_empty() && self.uart.can_receive() {
            let (front, _) = self.input.as_slices();
            let n = self.uart.receive(front);
            if n == 0 {
                break;
            }
            self.input.drain(..n);
        }
    }

    /// The UART raised its interrupt: an edge on IRQ4.
    fn wire(&mut self) {
        if self.uart.take_irq() {
            self.irq.edge();
        }
    }
}

impl IsaPorts for Cmos {
    fn read_port(&mut self, port: u16) -> u8 {
        self.read(port, unix_now())
    }
    fn write_port(&mut self, port: u16, value: u8) -> io::Result<Effect> {
        self.write(port, value);
        Ok(Effect::Continue)
    }
}

/// A disk image file behind the IDE channel (shared with the machine's configuration).
pub struct IdeFile(pub Arc<std::fs::File>);

impl crate::disk::Backing for IdeFile {
    fn len(&self) -> u64 {
        self.0.metadata().map_or(0, |m| m.len())
    }
    fn read_at(&mut self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&*self.0, out, offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&*self.0, data, offset)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// The IDE channel (`--ide`, `ide.rs`) on IRQ14.
pub struct IdeDevice {
    pub channel: IdeChannel<IdeFile>,
    irq: IrqLine,
}

impl BusDevice for IdeDevice {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        self.channel.read((base + offset) as u16, data);
        self.wire();
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        let written = self.channel.write((base + offset) as u16, data);
        self.wire();
        written?;
        Ok(Effect::Continue)
    }
}

impl IdeDevice {
    fn wire(&mut self) {
        if self.channel.take_irq() {
            self.irq.edge();
        }
    }
}

/// The i8042 at 0x60/0x64: its reset line always (`i8042.rs`); with a keyboard attached
/// (`--vga`: the console is the screen and the keyboard), the PS/2 keyboard
/// (`ps2kbd.rs`) that the console types into, on IRQ1.
pub struct KeyboardController {
    i8042: I8042,
    keyboard: Option<Ps2Keyboard>,
    irq: IrqLine,
}

impl IsaPorts for KeyboardController {
    fn read_port(&mut self, port: u16) -> u8 {
        let Some(keyboard) = self.keyboard.as_mut() else {
            return self.i8042.read(port);
        };
        let value = keyboard.read(port);
        self.wire();
        value
    }
    fn write_port(&mut self, port: u16, value: u8) -> io::Result<Effect> {
        let reset = self.i8042.write(port, value);
        if let Some(keyboard) = self.keyboard.as_mut() {
            keyboard.write(port, value);
            self.wire();
        }
        Ok(if reset { Effect::Reset } else { Effect::Continue })
    }
}

impl KeyboardController {
    /// Whether a keyboard is attached (console input goes to it, not to the UART).
    pub fn has_keyboard(&self) -> bool {
        self.keyboard.is_some()
    }

    /// Console bytes typed on the keyboard (none attached: dropped; the caller checks).
    pub fn console_input(&mut self, bytes: &[u8]) {
        if let Some(keyboard) = self.keyboard.as_mut() {
            keyboard.type_bytes(bytes);
        }
        self.wire();
    }

    /// Scan codes the guest has not read yet.
    pub fn input_backlog(&self) -> usize {
        self.keyboard.as_ref().map_or(0, Ps2Keyboard::backlog)
    }

    /// A byte for the guest with IRQ1 allowed: an edge on IRQ1.
    fn wire(&mut self) {
        if self.keyboard.as_mut().is_some_and(Ps2Keyboard::take_irq) {
            self.irq.edge();
        }
    }
}

/// System control port A: bit 0 resets; A20 is always on.
struct PortA;

impl IsaPorts for PortA {
    fn read_port(&mut self, _: u16) -> u8 {
        PortABits::A20.bits()
    }
    fn write_port(&mut self, _: u16, value: u8) -> io::Result<Effect> {
        let reset = PortABits::from_bits_retain(value).contains(PortABits::FAST_RESET);
        Ok(if reset { Effect::Reset } else { Effect::Continue })
    }
}

/// POST codes: dropped; reads float.
struct Post;

impl IsaPorts for Post {
    fn read_port(&mut self, _: u16) -> u8 {
        0xff
    }
    fn write_port(&mut self, _: u16, _: u8) -> io::Result<Effect> {
        Ok(Effect::Continue)
    }
}

/// The ACPI PM registers (`acpi_pm`), their SCI a level-triggered ISA line. Not byte-wide:
/// the PM timer is read whole (a byte at a time, its bytes would come from different
/// counts).
pub struct PmDevice {
    pub pm: AcpiPm,
    clock: Clock,
    sci: IrqLine,
    /// The SCI's level as last driven.
    sci_high: bool,
}

impl PmDevice {
    /// Drives the SCI from the registers' state after an access.
    fn wire(&mut self, now: u64) {
        let high = self.pm.sci_level(now);
        if high != self.sci_high {
            self.sci_high = high;
            self.sci.set_level(high);
        }
    }
}

impl BusDevice for PmDevice {
    fn read(&mut self, _: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        let now = self.clock.now_ns();
        self.pm.read(offset as u16, data, now);
        self.wire(now);
    }
    fn write(&mut self, _: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        let now = self.clock.now_ns();
        let effect = self.pm.write(offset as u16, data, now);
        self.wire(now);
        Ok(match effect {
            acpi_pm::Effect::Continue => Effect::Continue,
            acpi_pm::Effect::PowerOff => Effect::PowerOff,
        })
    }
}

/// The test device's interrupt lines, by number.
struct TestdevLines(Vec<IrqLine>);

impl testdev::Lines for TestdevLines {
    fn set_level(&mut self, line: u8, high: bool) {
        if let Some(line) = self.0.get(usize::from(line)) {
            line.set_level(high);
        }
    }
}

/// The APICs' MMIO pages: the local APIC page is the accessing CPU's own.
struct ApicPages {
    controllers: Arc<Mutex<Interrupts>>,
    clock: Clock,
}

impl BusDevice for ApicPages {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], ctx: &Ctx) {
        let now = self.clock.now_ns();
        lock(&self.controllers).apics.mmio_read(ctx.cpu, base + offset, data, now);
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], ctx: &Ctx) -> io::Result<Effect> {
        let now = self.clock.now_ns();
        let mut irqs = lock(&self.controllers);
        if let Some(woken) = irqs.apics.mmio_write(ctx.cpu, base + offset, data, now) {
            irqs.wake(woken);
        }
        Ok(Effect::Continue)
    }
}

/// The PC's devices and their wiring; the buses hold the devices, the board keeps what the
/// machine reaches outside the buses.
pub struct PcBoard {
    pub interrupts: Arc<Mutex<Interrupts>>,
    pub pit: Arc<Mutex<PitDevice>>,
    pub uart: Arc<Mutex<UartDevice>>,
    pub pm: Arc<Mutex<PmDevice>>,
    cmos: Arc<Mutex<Cmos>>,
    /// The i8042, and the PS/2 keyboard once attached (`attach_keyboard`).
    pub keyboard: Arc<Mutex<KeyboardController>>,
    /// The VGA's text console (its CRTC; the screen mirrored to the console with `--vga`).
    pub vga: Arc<Mutex<Vga<Arc<Console>>>>,
    /// PCI's root bus (made again, with the buses' count of odd accesses, by `install`).
    pub(crate) pci: Arc<Mutex<PciRoot>>,
    pub clock: Clock,
    /// How the interrupt lines wake the vCPUs (one per vCPU).
    wakers: Arc<[Waker]>,
    /// The virtio disks' counters, by name (`--stats`).
    virtio: Mutex<Vec<VirtioCounters>>,
    /// The other virtio devices' (entropy, network) names, transport counters and a line
    /// of their own counters (`--stats`).
    virtio_others: Mutex<Vec<(String, Arc<super::virtio_pci::TransportStats>, DeviceLine)>>,
}

/// A device's counters as a line.
type DeviceLine = Box<dyn Fn() -> String + Send>;

/// A virtio disk's name and counters.
type VirtioCounters = (String, Arc<super::virtio_pci::TransportStats>, Arc<crate::virtio::blk::BlkStats>);

impl PcBoard {
    /// A board with `ram_bytes` of RAM and a vCPU for each of `wakers`, its UART writing
    /// to `console`.
    pub fn new(ram_bytes: u64, wakers: Arc<[Waker]>, console: Arc<Console>) -> io::Result<Self> {
        let clock = Clock(Instant::now());
        let interrupts = Arc::new(Mutex::new(Interrupts::new(wakers.len())));
        let line = |line| IrqLine { controllers: interrupts.clone(), wakers: wakers.clone(), line };
        let pit = PitDevice::new(clock, line(PIT_IRQ))?;
        let uart = UartDevice { uart: Uart::new(Vec::new()), input: VecDeque::new(), console: console.clone(), irq: line(COM1_IRQ) };
        let pm = PmDevice { pm: AcpiPm::new(), clock, sci: line(SCI_IRQ), sci_high: false };
        let vga = Arc::new(Mutex::new(Vga::new(Mirror::Off, console.clone())));
        let keyboard = KeyboardController { i8042: I8042::new(), keyboard: None, irq: line(KEYBOARD_IRQ) };
        Ok(Self {
            keyboard: Arc::new(Mutex::new(keyboard)),
            vga,
            pm: Arc::new(Mutex::new(pm)),
            pit: Arc::new(Mutex::new(pit)),
            uart: Arc::new(Mutex::new(uart)),
            cmos: Arc::new(Mutex::new(Cmos::new(ram_bytes))),
            pci: Arc::new(Mutex::new(PciRoot::new(Default::default()))),
            interrupts,
            clock,
            wakers,
            virtio: Mutex::new(Vec::new()),
            virtio_others: Mutex::new(Vec::new()),
        })
    }

    /// Puts an IDE channel with `disks` (the master, then the slave) on the buses.
    pub fn install_ide(&self, ports: &mut Bus, disks: &[Arc<std::fs::File>]) -> Result<(), BusError> {
        let disk = |i: usize| disks.get(i).map(|f| IdeFile(f.clone()));
        let device = IdeDevice { channel: IdeChannel::new(disk(0), disk(1)), irq: self.irq_line(ide::IRQ) };
        let device: SharedDevice = Arc::new(Mutex::new(device));
        ports.insert("ide", ide::COMMAND_BASE.into(), ide::COMMAND_LEN.into(), Span::Whole, device.clone())?;
        ports.insert("ide control", ide::CONTROL_PORT.into(), 1, Span::Whole, device)
    }

    /// Attaches the PS/2 keyboard to the i8042: console input is typed on it from now on.
    pub fn attach_keyboard(&self) {
        lock(&self.keyboard).keyboard = Some(Ps2Keyboard::new());
    }

    /// ISA interrupt line `irq`, for a device.
    pub fn irq_line(&self, irq: u8) -> IrqLine {
        IrqLine { controllers: self.interrupts.clone(), wakers: self.wakers.clone(), line: irq }
    }

    /// The INTx pin `pin` (1-4: INTA#-INTD#) of the function at `bdf`, wired as the DSDT's
    /// `_PRT` says (`acpi::prt_gsi`), for the function to hold and give the root
    /// (`PciFunction::intx`).
    pub fn intx_pin(&self, bdf: Bdf, pin: u8) -> IntxPin {
        let gsi = prt_gsi(&PciDesc::pc(), bdf.device, pin.saturating_sub(1) & 3);
        let source = u32::from(bdf.bus) << 16 | u32::from(bdf.device) << 11 | u32::from(bdf.function) << 8 | u32::from(pin);
        let line = PciLine { controllers: self.interrupts.clone(), wakers: self.wakers.clone(), gsi, source };
        IntxPin::new(pin, Box::new(line))
    }

    /// A sender of message-signalled interrupts, for a device.
    pub fn msi(&self) -> MsiSender {
        MsiSender { controllers: self.interrupts.clone(), wakers: self.wakers.clone() }
    }

    /// Puts the board's devices on the machine's buses.
    pub fn install(&self, ports: &mut Bus, mmio: &mut Bus) -> Result<(), BusError> {
        let pic: SharedDevice = Arc::new(Mutex::new(PicPorts(self.interrupts.clone())));
        let i8042: SharedDevice = self.keyboard.clone();
        let isa: [(&str, u16, u64, SharedDevice); 12] = [
            ("pic master", 0x20, 2, pic.clone()),
            ("pit", 0x40, 4, self.pit.clone()),
            ("i8042 data", 0x60, 1, i8042.clone()),
            ("pit port b", 0x61, 1, self.pit.clone()),
            ("i8042 command", 0x64, 1, i8042),
            ("cmos", 0x70, 2, self.cmos.clone()),
            ("post", POST_PORT, 1, Arc::new(Mutex::new(Post))),
            ("port a", PORT_A, 1, Arc::new(Mutex::new(PortA))),
            ("pic slave", 0xa0, 2, pic),
            ("uart", COM1_BASE, 8, self.uart.clone()),
            ("vga crtc", vga::CRTC_INDEX, 2, self.vga.clone()),
            ("vga input status", vga::INPUT_STATUS, 1, self.vga.clone()),
        ];
        for (name, port, len, device) in isa {
            ports.insert(name, port.into(), len, Span::Bytes, device)?;
        }
        // PCI's configuration ports take bytes, words and dwords (with the reset control at
        // 0xcf9); ECAM is in the MMIO space.
        *lock(&self.pci) = PciRoot::new(ports.ignored().clone());
        ports.insert("pci config address, reset control", CONFIG_ADDRESS.into(), 4, Span::Whole, self.pci.clone())?;
        ports.insert("pci config data", CONFIG_DATA.into(), 4, Span::Whole, self.pci.clone())?;
        mmio.insert("pci ecam", ECAM_BASE, ECAM_SIZE, Span::Whole, self.pci.clone())?;
        mmio.insert("pci memory window", pci::WINDOW_START, pci::WINDOW_SIZE, Span::Whole, self.pci.clone())?;
        // The ACPI PM registers take words and dwords (the timer is read whole).
        ports.insert("acpi pm", PM_BASE.into(), acpi_pm::BLOCK_LEN.into(), Span::Whole, self.pm.clone())?;
        let apics: SharedDevice = Arc::new(Mutex::new(ApicPages { controllers: self.interrupts.clone(), clock: self.clock }));
        mmio.insert("io apic", IOAPIC_BASE, IOAPIC_SIZE, Span::Whole, apics.clone())?;
        mmio.insert("local apic", LAPIC_BASE, LAPIC_SIZE, Span::Whole, apics)?;
        Ok(())
    }

    /// Puts the test device (`--testdev`) on the buses: its ports, its lines (0-15 the ISA
    /// lines, to both controllers; 16-23 the I/O APIC's other pins) and its test memory.
    pub fn install_testdev(&self, ports: &mut Bus, mmio: &mut Bus) -> Result<(), BusError> {
        let lines = TestdevLines((0..testdev::IRQ_LINES as u8).map(|line| self.irq_line(line)).collect());
        let dev: SharedDevice = Arc::new(Mutex::new(TestDev::new(lines, ports.ignored().clone())));
        let len = u64::from(testdev::REGISTER_LEN);
        ports.insert("testdev scratch", testdev::SCRATCH_PORT.into(), len, Span::Whole, dev.clone())?;
        ports.insert("testdev flush page", testdev::FLUSH_PORT.into(), len, Span::Whole, dev.clone())?;
        ports.insert("testdev scratch bytes", testdev::SCRATCH_BYTES_PORT.into(), len, Span::Bytes, dev.clone())?;
        ports.insert("testdev irq lines", testdev::IRQ_PORT_BASE.into(), testdev::IRQ_LINES.into(), Span::Whole, dev.clone())?;
        mmio.insert("testdev memory", testdev::MEMORY_BASE, testdev::MEMORY_SIZE, Span::Whole, dev)
    }

    /// Puts the PCI test functions (`--pci-testdev`, `pci_testdev.rs`) on the root bus.
    pub fn install_pci_testdev(&self) -> Result<(), PciError> {
        let mut root = lock(&self.pci);
        let ignored = root.ignored().clone();
        for bdf in pci_testdev::SLOTS {
            let function = PciTestDev::new(self.intx_pin(bdf, 1), self.msi(), ignored.clone());
            root.add(bdf, Box::new(function))?;
        }
        Ok(())
    }

    /// Puts a virtio-blk function for `drive` at 00:`device`.0 and starts its worker
    /// thread (`virtio::blk`), which reaches guest RAM through `mem`; its queue
    /// notifications are ioeventfds on `ioevents` if given (else MMIO exits), its
    /// interrupts irqfds on `irqfds` if given (else messages through the emulator).
    pub fn add_virtio_blk(
        &self,
        device: u8,
        drive: Arc<crate::virtio::blk::Drive>,
        mem: Arc<crate::sys::VmMemory>,
        ioevents: Option<crate::hypervisor::VmHandle>,
        irqfds: Option<crate::hypervisor::VmHandle>,
    ) -> io::Result<()> {
        use crate::virtio::blk;
        use super::virtio_pci::{DeviceInfo, VirtioPci};
        let info = DeviceInfo {
            device_type: blk::DEVICE_ID,
            // Mass storage, "other" (as other virtio disks are listed).
            class: (0x01, 0x80, 0x00),
            features: blk::features(drive.read_only),
            config: blk::config_space(drive.len),
            queue_sizes: vec![blk::QUEUE_SIZE],
        };
        let (function, mut ends) = VirtioPci::new(info, self.msi(), mem.clone(), ioevents, irqfds).map_err(io::Error::other)?;
        let transport_stats = function.stats();
        lock(&self.pci).add(pci::Bdf { bus: 0, device, function: 0 }, Box::new(function)).map_err(io::Error::other)?;
        let (queue, kick) = ends.queues.remove(0);
        let stats = Arc::new(blk::BlkStats::default());
        let name = format!("virtio-blk 00:{device:02x}.0 ({})", drive.path.display());
        lock(&self.virtio).push((name, transport_stats, stats.clone()));
        let worker = blk::Blk { capacity: drive.len, read_only: drive.read_only, id: drive.id(), backend: drive, stats };
        crate::virtio::spawn_queue_worker(format!("yakvm-blk{device}"), queue, kick, mem, ends.signal, move |slot, m| worker.process(slot, m))?;
        Ok(())
    }

    /// Puts a virtio entropy device (`virtio::rng`) at 00:`device`.0 and starts its worker.
    pub fn add_virtio_rng(&self, device: u8, mem: Arc<crate::sys::VmMemory>, ioevents: Option<crate::hypervisor::VmHandle>, irqfds: Option<crate::hypervisor::VmHandle>) -> io::Result<()> {
        use crate::virtio::rng;
        use super::virtio_pci::{DeviceInfo, VirtioPci};
        // "Other" device class, as other virtio entropy devices are listed.
        let info = DeviceInfo { device_type: rng::DEVICE_ID, class: (0xff, 0x00, 0x00), features: rng::features(), config: Vec::new(), queue_sizes: vec![rng::QUEUE_SIZE] };
        let (function, mut ends) = VirtioPci::new(info, self.msi(), mem.clone(), ioevents, irqfds).map_err(io::Error::other)?;
        let transport_stats = function.stats();
        lock(&self.pci).add(pci::Bdf { bus: 0, device, function: 0 }, Box::new(function)).map_err(io::Error::other)?;
        let (queue, kick) = ends.queues.remove(0);
        let stats = Arc::new(rng::RngStats::default());
        let line = stats.clone();
        lock(&self.virtio_others).push((format!("virtio-rng 00:{device:02x}.0"), transport_stats, Box::new(move || line.line())));
        let mut worker = rng::Rng::new(rng::HostEntropy, stats);
        crate::virtio::spawn_queue_worker(format!("yakvm-rng{device}"), queue, kick, mem, ends.signal, move |slot, m| worker.process(slot, m))?;
        Ok(())
    }

    /// Puts a virtio-net function for `spec` (its tap open) at 00:`device`.0 and starts its
    /// worker (`virtio::net`).
    pub fn add_virtio_net(
        &self,
        device: u8,
        index: usize,
        spec: Arc<crate::virtio::net::NetSpec>,
        mem: Arc<crate::sys::VmMemory>,
        ioevents: Option<crate::hypervisor::VmHandle>,
        irqfds: Option<crate::hypervisor::VmHandle>,
    ) -> io::Result<()> {
        use crate::virtio::net;
        use super::virtio_pci::{DeviceInfo, VirtioPci};
        let info = DeviceInfo {
            device_type: net::DEVICE_ID,
            // Network controller, Ethernet.
            class: (0x02, 0x00, 0x00),
            features: spec.features(),
            config: net::config_space(spec.config.mac, spec.config.mtu),
            queue_sizes: vec![net::QUEUE_SIZE, net::QUEUE_SIZE],
        };
        let (function, ends) = VirtioPci::new(info, self.msi(), mem.clone(), ioevents, irqfds).map_err(io::Error::other)?;
        let transport_stats = function.stats();
        // vhost=on: the kernel serves the queues; a relay thread instead of the worker.
        let vhost = match spec.vhost {
            Some(_) => {
                let ram = mem.ram();
                let backend = crate::virtio::vhost_net::VhostBackend::new(spec.clone(), ram.len() as u64, ram.host_address())
                    .map_err(|e| io::Error::other(format!("--net tap={},vhost=on: {e}", spec.tap.name)))?;
                let stats = backend.stats.clone();
                let relays = function.set_offload(Box::new(backend))?;
                Some((stats, relays))
            }
            None => None,
        };
        lock(&self.pci).add(pci::Bdf { bus: 0, device, function: 0 }, Box::new(function)).map_err(io::Error::other)?;
        let stats = Arc::new(net::NetStats::default());
        let line = stats.clone();
        let tap = spec.tap.name.clone();
        let vhost_line = vhost.as_ref().map(|(s, _)| (s.clone(), transport_stats.clone()));
        let line = move || {
            let mut l = line.line();
            if let Some(n) = net::tap_drops(&tap) {
                l = format!("{l}, {n} dropped by the tap");
            }
            if let Some((v, t)) = &vhost_line {
                use std::sync::atomic::Ordering::Relaxed;
                l = format!("{l}; {}", v.line((t.calls_to_irqfd.load(Relaxed), t.calls_to_relay.load(Relaxed))));
            }
            l
        };
        lock(&self.virtio_others).push((format!("virtio-net 00:{device:02x}.0 (tap {})", spec.tap.name), transport_stats, Box::new(line)));
        match vhost {
            Some((stats, relays)) => {
                crate::virtio::vhost_net::spawn_relay(format!("yakvm-vhost{index}"), relays, ends.signal, stats)?;
            }
            None => {
                net::spawn_worker(format!("yakvm-net{index}"), net::Net::new(spec, stats), ends.queues, ends.features, mem, ends.signal)?;
            }
        }
        Ok(())
    }

    /// A line per virtio device: what its transport and its worker counted.
    pub fn virtio_stats(&self) -> Vec<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let others: Vec<String> = lock(&self.virtio_others)
            .iter()
            .map(|(name, t, line)| {
                format!(
                    "{name}: {}; {} notifications by exit ({} dropped), {} ioeventfd registrations ({} refused), {} interrupts ({} by irqfd, {} bindings), {} resets, {} odd accesses",
                    line(),
                    t.notifies.load(Relaxed),
                    t.notifies_dropped.load(Relaxed),
                    t.ioevents_registered.load(Relaxed),
                    t.ioevents_failed.load(Relaxed),
                    t.interrupts.load(Relaxed),
                    t.irqfd_signals.load(Relaxed),
                    t.irqfd_bindings.load(Relaxed),
                    t.resets.load(Relaxed),
                    t.ignored.load(Relaxed),
                )
            })
            .collect();
        let disks: Vec<String> = lock(&self.virtio)
            .iter()
            .map(|(name, t, b)| {
                format!(
                    "{name}: {} requests ({} B read, {} B written, {} flushes, {} errors, {} broken chains); {} notifications by exit ({} dropped), {} ioeventfd registrations ({} refused), {} interrupts ({} by irqfd, {} bindings), {} resets, {} odd accesses",
                    b.requests.load(Relaxed),
                    b.read_bytes.load(Relaxed),
                    b.written_bytes.load(Relaxed),
                    b.flushes.load(Relaxed),
                    b.errors.load(Relaxed),
                    b.broken.load(Relaxed),
                    t.notifies.load(Relaxed),
                    t.notifies_dropped.load(Relaxed),
                    t.ioevents_registered.load(Relaxed),
                    t.ioevents_failed.load(Relaxed),
                    t.interrupts.load(Relaxed),
                    t.irqfd_signals.load(Relaxed),
                    t.irqfd_bindings.load(Relaxed),
                    t.resets.load(Relaxed),
                    t.ignored.load(Relaxed),
                )
            })
            .collect();
        disks.into_iter().chain(others).collect()
    }

    /// Nanoseconds since the board was built: the devices' clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// What PCI's root bus counted.
    pub fn pci_stats(&self) -> PciStats {
        lock(&self.pci).stats
    }

    /// The interrupt controllers, locked.
    pub fn interrupts(&self) -> std::sync::MutexGuard<'_, Interrupts> {
        lock(&self.interrupts)
    }
}

/// The host's wall-clock time, for the RTC.
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::tests::CTX;
    use crate::devices::tests::SharedOut;
    use crate::devices::Devices;
    use crate::disk::NoDisk;

    /// The pc machine's devices on their buses, writing to `console`.
    pub(crate) fn pc_with(console: SharedOut) -> (Devices, PcBoard) {
        let mut d = Devices::pc(console, NoDisk, 0x1000_0000).unwrap();
        let board = PcBoard::new(16 << 20, Arc::from([Waker::new()]), d.console.clone()).unwrap();
        board.install(&mut d.ports, &mut d.mmio).unwrap();
        (d, board)
    }

    pub(crate) fn pc() -> (Devices, PcBoard) {
        pc_with(SharedOut::default())
    }

    fn out(d: &mut Devices, port: u16, value: u8) -> Effect {
        d.ports.write(port.into(), &[value], &CTX).unwrap()
    }

    fn inb(d: &mut Devices, port: u16) -> u8 {
        let mut b = [0];
        d.ports.read(port.into(), &mut b, &CTX);
        b[0]
    }

    #[test]
    fn console_input_reaches_the_uart() {
        let (mut d, board) = pc();
        lock(&board.uart).console_input(b"pq");
        // The guest's driver starts: FIFOs on and reset. The console's bytes stay.
        out(&mut d, 0x3fa, 0x07);
        assert_eq!(inb(&mut d, 0x3fd) & 1, 1, "data ready");
        assert_eq!(inb(&mut d, 0x3f8), b'p');
        assert_eq!(inb(&mut d, 0x3f8), b'q');
        assert_eq!(inb(&mut d, 0x3fd) & 1, 0, "no more data");
    }

    /// A one-shot count that runs out before its edge is taken still raises IRQ0 then (it
    /// was lost once: the host timer's arming reset the edge count to its own time).
    #[test]
    fn a_short_one_shot_is_not_lost_before_the_next_pass() {
        let (mut d, board) = pc();
        // The master PIC as Linux sets it up, IRQ0 unmasked.
        for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfe)] {
            out(&mut d, port, value);
        }
        // Channel 0, mode 4 (Linux's one-shot), a count of 2 clocks (under 2 µs).
        for (port, value) in [(0x43, 0x38), (0x40, 2), (0x40, 0)] {
            out(&mut d, port, value);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        // The host timer's expiry (or the event thread's pass by the clock), long after
        // the edge.
        let mut pit = lock(&board.pit);
        assert!(pit.timer_armed(), "the write armed the host timer");
        pit.timer_tick();
        assert!(!pit.timer_armed(), "the one-shot's edge is taken: nothing more to come");
        drop(pit);
        assert!(board.interrupts().interrupt_pending(0), "the one-shot's edge reached the PIC");
        assert_eq!(board.interrupts().acknowledge(0), Some(0x30));
    }

    /// The kernel's APICs: vCPU 0's LINT0 as the module reports it decides whether the
    /// PIC's request reaches vCPU 0, not the emulator's power-on copy (virtual wire).
    #[test]
    fn the_kernel_apics_lint0_decides_whether_the_pic_reaches_vcpu_0() {
        let (mut d, board) = pc();
        for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfe)] {
            out(&mut d, port, value);
        }
        let mut c = board.interrupts();
        c.isa_edge(0);
        assert!(c.interrupt_pending(0), "virtual wire: the power-on copy takes the PIC");
        c.set_kernel_lint0(false);
        assert!(!c.interrupt_pending(0), "the guest masked LINT0 in the module");
        assert_eq!(c.acknowledge(0), None, "nor is the PIC acknowledged");
        c.set_kernel_lint0(true);
        assert!(c.interrupt_pending(0));
        assert_eq!(c.acknowledge(0), Some(0x30));
    }

    #[test]
    fn the_ways_a_pc_resets() {
        let (mut d, _) = pc();
        assert_eq!(out(&mut d, 0x64, 0xfe), Effect::Reset);
        assert_eq!(out(&mut d, 0x92, PortABits::A20.bits()), Effect::Continue);
        assert_eq!(out(&mut d, 0x92, (PortABits::A20 | PortABits::FAST_RESET).bits()), Effect::Reset);
        assert_eq!(out(&mut d, 0xcf9, 0x02), Effect::Continue);
        assert_eq!(out(&mut d, 0xcf9, 0x06), Effect::Reset);
        assert_eq!(inb(&mut d, 0x92), PortABits::A20.bits());
    }

    /// A device's line raised on a thread that is not a vCPU's wakes the halted vCPU it
    /// reaches; so does an MSI.
    #[test]
    fn irq_lines_and_msis_wake_a_halted_vcpu_from_any_thread() {
        use super::super::lapic::DeliveryMode;
        use std::time::{Duration, Instant};
        let wakers: Arc<[Waker]> = (0..2).map(|_| Waker::new()).collect();
        let board = PcBoard::new(16 << 20, wakers.clone(), Arc::new(Console::new(Vec::new()))).unwrap();
        {
            let mut c = board.interrupts();
            // The master PIC at vector 0x30, IRQ4 unmasked; vCPU 1's local APIC enabled.
            for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xef)] {
                c.pic.write(port, value);
            }
            c.apics.lapics[1].write(0xf0, 0x1ff, 0);
        }
        for (cpu, raise) in [
            (0, Box::new({
                let line = board.irq_line(4);
                move || line.edge()
            }) as Box<dyn FnOnce() + Send>),
            (1, Box::new({
                let msi = board.msi();
                move || msi.send(Message { vector: 0x41, mode: DeliveryMode::Fixed, logical: false, dest: 1, level_triggered: false })
            })),
        ] {
            assert!(!board.interrupts().interrupt_pending(cpu));
            // vCPU `cpu` halts: it notes the rings, finds nothing to do, waits.
            let seen = wakers[cpu].rings();
            let start = Instant::now();
            let raiser = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                raise();
            });
            wakers[cpu].wait(seen, Duration::from_secs(20));
            assert!(start.elapsed() < Duration::from_secs(10), "vCPU {cpu} was not woken");
            raiser.join().unwrap();
            assert!(board.interrupts().interrupt_pending(cpu), "vCPU {cpu} has its interrupt");
        }
        assert_eq!(board.interrupts().acknowledge(0), Some(0x34));
        assert_eq!(board.interrupts().acknowledge(1), Some(0x41));
        // A line's level: high raises IRQ3 (now unmasked).
        board.interrupts().pic.write(0x21, 0xe7);
        board.irq_line(3).set_level(true);
        assert_eq!(board.interrupts().acknowledge(0), Some(0x33));
    }

    /// The ACPI PM block at 0x600: the timer read whole as a dword, the SCI on IRQ9 while
    /// an enabled status bit is set, S5 a power-off.
    #[test]
    fn the_acpi_pm_block_is_wired() {
        let (mut d, board) = pc();
        assert_eq!(d.ports.range_of("acpi pm"), Some((0x600, 12)));
        let timer = |d: &mut Devices| {
            let mut b = [0; 4];
            d.ports.read(0x608, &mut b, &CTX);
            u32::from_le_bytes(b)
        };
        let first = timer(&mut d);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = timer(&mut d);
        // 2 ms is 7159 ticks; a byte-by-byte bus would cut the dword into four reads.
        assert!(second.wrapping_sub(first) >= 7_000, "{first} then {second}");
        assert_eq!(lock(&board.pm).pm.stats.timer_reads, 2, "one access per dword read");
        // The PICs as an OS sets them up: IRQ2 (the cascade) and IRQ9 unmasked.
        for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfb)] {
            out(&mut d, port, value);
        }
        for (port, value) in [(0xa0, 0x11), (0xa1, 0x38), (0xa1, 0x02), (0xa1, 0x01), (0xa1, 0xfd)] {
            out(&mut d, port, value);
        }
        lock(&board.pm).pm.press_power_button();
        assert!(!board.interrupts().interrupt_pending(0), "PWRBTN_EN clear: no SCI");
        d.ports.write(0x602, &acpi_pm::PWRBTN.to_le_bytes(), &CTX).unwrap();
        assert!(board.interrupts().interrupt_pending(0), "the SCI is raised");
        assert_eq!(board.interrupts().acknowledge(0), Some(0x39));
        assert_eq!(board.interrupts().irqs[9], 1);
        // The guest clears the status bit: the line goes low.
        d.ports.write(0x600, &acpi_pm::PWRBTN.to_le_bytes(), &CTX).unwrap();
        assert!(!lock(&board.pm).sci_high);
        // SLP_TYP = S5 without SLP_EN: nothing; with it: the machine powers off.
        let s5 = u16::from(acpi_pm::SLP_TYP_S5) << acpi_pm::SLP_TYP_SHIFT;
        assert_eq!(d.ports.write(0x604, &s5.to_le_bytes(), &CTX).unwrap(), Effect::Continue);
        assert_eq!(d.ports.write(0x604, &(s5 | acpi_pm::SLP_EN).to_le_bytes(), &CTX).unwrap(), Effect::PowerOff);
    }

    /// A word written to the PIC's command port reaches its data port too (ISA), and the
    /// UART's output reaches the console.
    #[test]
    fn wide_accesses_to_isa_devices_go_byte_by_byte() {
        let console = SharedOut::default();
        let (mut d, board) = pc_with(console.clone());
        // ICW1 at 0x20 and ICW2 (vector base 0x40) at 0x21 in one OUT.
        d.ports.write(0x20, &[0x11, 0x40], &CTX).unwrap();
        for value in [0x04, 0x01, 0xfe] {
            out(&mut d, 0x21, value);
        }
        lock(&board.pit).irq0.edge();
        assert_eq!(board.interrupts().acknowledge(0), Some(0x40));
        d.ports.write(0x3f8, b"ok", &CTX).unwrap(); // THR, then IER
        d.finish().unwrap();
        assert_eq!(console.bytes(), b"o");
        let counts: Vec<(&str, u64)> = d.ports.accesses().filter(|a| a.3 > 0).map(|a| (a.0, a.3)).collect();
        assert_eq!(counts, [("pic master", 5), ("uart", 2)]);
    }
}
