//! The PC board (`--machine pc`): which port is which device, and the wires between them
//! (the PIT's OUT0 to IRQ0, the UART to IRQ4, the i8042's reset line). Every ISA line goes
//! to both interrupt controllers, as on a PC: the 8259A PICs (which reach vCPU 0 through
//! its LINT0, virtual-wire mode) and the I/O APIC (which sends messages to the local
//! APICs); a guest uses one and masks the other. The local APICs (one per vCPU, MMIO at
//! 0xfee00000) and the I/O APIC (0xfec00000) are in `apics`.
//!
//! | ports | device |
//! |---|---|
//! | 0x20-0x21, 0xa0-0xa1 | master and slave 8259A PIC (slave on IRQ2) |
//! | 0x40-0x43, 0x61 | 8254 PIT (channel 0 on IRQ0), port B (speaker gate, OUT2) |
//! | 0x60, 0x64 | i8042: 0xfe to 0x64 pulses the reset line (ends the run as a reboot) |
//! | 0x92 | system control port A: bit 0 is a fast reset; bit 1 (A20) reads as set |
//! | 0xcf9 | reset control: a write with bit 2 (reset CPU) set resets |
//! | 0x70-0x71 | CMOS RTC with the host's time |
//! | 0x80 | POST code sink |
//! | 0x3f8-0x3ff | 16550A UART (COM1) on IRQ4: the console |
//!
//! The seed machine's registers stay where a guest finds them on `seed`, except the DMA
//! disk, whose ports 0x20-0x22 belong to the PIC here: the bus puts it at
//! [`DISK_PORT_BASE`]. Reads of ports nothing answers return all ones and writes are
//! dropped, as on a PC: counted, never fatal.
//!
//! Console input is never lost: bytes wait here while the UART's receive FIFO is full, and
//! a guest's FIFO reset (FCR bit 1, which every driver does at start, often after input
//! arrived through a pipe) does not discard what the console already sent.

use std::time::Instant;

use super::apic::Apics;
use super::cmos::Cmos;
use super::i8042::I8042;
use super::pic::Pic;
use super::pit::{IrqTimer, Pit};
use super::uart::{Uart, COM1_IRQ};

/// The seed DMA disk's sector, DMA-address and command ports on the pc machine.
pub const DISK_PORT_BASE: u16 = 0x1020;
/// POST codes (BIOSes and Linux's `io_delay` write here).
pub const POST_PORT: u16 = 0x80;
/// The UART's FIFO control register and its "clear the receive FIFO" bit.
const UART_FCR: u16 = super::uart::COM1_BASE + 2;
const FCR_CLEAR_RX: u8 = 1 << 1;
/// System control port A (fast reset in bit 0, A20 gate in bit 1) and the reset control
/// register of PC chipsets (reset the CPU in bit 2): two more ways a PC reboots.
const PORT_A: u16 = 0x92;
const PORT_A_FAST_RESET: u8 = 1 << 0;
const PORT_A_A20: u8 = 1 << 1;
const RESET_CONTROL: u16 = 0xcf9;
const RESET_CONTROL_CPU: u8 = 1 << 2;
/// Accesses to ports nothing answers that are told on stderr (all are counted).
const LOGGED_UNCLAIMED: u64 = 5;
/// The PIT's channel 0 drives this line.
pub const PIT_IRQ: u8 = 0;

/// What a port write asks of the run.
#[derive(Debug, PartialEq, Eq)]
pub enum PortEffect {
    Continue,
    /// The guest pulsed the reset line (i8042 command 0xfe).
    Reset,
}

/// The devices a port belongs to, for `--stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    Pic,
    Pit,
    I8042,
    Cmos,
    Post,
    Uart,
    /// Port A and the reset control register.
    Reset,
    /// No device: reads all ones, writes dropped.
    Unclaimed,
}

impl Device {
    pub const ALL: [Device; 8] =
        [Device::Pic, Device::Pit, Device::I8042, Device::Cmos, Device::Post, Device::Uart, Device::Reset, Device::Unclaimed];

    pub fn name(self) -> &'static str {
        match self {
            Device::Pic => "pic (0x20-0x21, 0xa0-0xa1)",
            Device::Pit => "pit (0x40-0x43, 0x61)",
            Device::I8042 => "i8042 (0x60, 0x64)",
            Device::Cmos => "cmos (0x70-0x71)",
            Device::Post => "post (0x80)",
            Device::Uart => "uart (0x3f8-0x3ff)",
            Device::Reset => "reset (0x92, 0xcf9)",
            Device::Unclaimed => "unclaimed",
        }
    }

    fn of(port: u16) -> Device {
        match port {
            p if Pic::owns(p) => Device::Pic,
            p if Pit::owns(p) => Device::Pit,
            p if I8042::owns(p) => Device::I8042,
            p if Cmos::owns(p) => Device::Cmos,
            POST_PORT => Device::Post,
            p if Uart::<Vec<u8>>::owns(p) => Device::Uart,
            PORT_A | RESET_CONTROL => Device::Reset,
            _ => Device::Unclaimed,
        }
    }
}

/// Counters for `--stats`.
#[derive(Default, Debug, Clone)]
pub struct BoardStats {
    /// Port accesses (bytes) by device, in `Device::ALL` order.
    pub port_accesses: [u64; Device::ALL.len()],
    /// Interrupts delivered to the CPU, by ISA line.
    pub irqs: [u64; 16],
    /// Timer edges that arrived while the previous one was still pending (merged).
    pub merged_ticks: u64,
}

pub struct Board {
    pub pic: Pic,
    /// The local APICs (index = vCPU = APIC id) and the I/O APIC.
    pub apics: Apics,
    /// vCPUs that something was sent to since the machine last looked (bit i: vCPU i):
    /// the machine wakes them.
    wakes: u32,
    pub pit: Pit,
    /// The UART's output is collected here; the bus moves it to the machine's output.
    pub uart: Uart<Vec<u8>>,
    cmos: Cmos,
    i8042: I8042,
    start: Instant,
    /// Up to when the PIT's IRQ0 edges have been taken into account.
    irq0_seen_ns: u64,
    /// The guest wrote the PIT: the host timer must follow.
    pit_changed: bool,
    /// Console input the UART's receive FIFO had no room for yet.
    input: std::collections::VecDeque<u8>,
    pub stats: BoardStats,
}

impl Board {
    /// A board with `ram_bytes` of RAM and `cpus` vCPUs.
    pub fn new(ram_bytes: u64, cpus: usize) -> Self {
        Self {
            pic: Pic::new(),
            apics: Apics::new(cpus),
            wakes: 0,
            pit: Pit::new(),
            uart: Uart::new(Vec::new()),
            cmos: Cmos::new(ram_bytes),
            i8042: I8042::new(),
            start: Instant::now(),
            irq0_seen_ns: 0,
            pit_changed: false,
            input: Default::default(),
            stats: BoardStats::default(),
        }
    }

    /// Nanoseconds since the board was built: the devices' clock.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn count(&mut self, device: Device, port: u16, what: &str) {
        let i = Device::ALL.iter().position(|&d| d == device).unwrap_or(Device::ALL.len() - 1);
        self.stats.port_accesses[i] += 1;
        let unclaimed = self.stats.port_accesses[Device::ALL.len() - 1];
        if device == Device::Unclaimed && unclaimed <= LOGGED_UNCLAIMED {
            eprintln!("yakvm: pc: nothing at port {port:#x} ({what}){}", if unclaimed == LOGGED_UNCLAIMED { "; not saying it again" } else { "" });
        }
    }

    /// Whether `port` is one of the board's (else the bus tries its own registers).
    pub fn owns(port: u16) -> bool {
        Device::of(port) != Device::Unclaimed
    }

    /// A byte written to `port`.
    pub fn write(&mut self, port: u16, value: u8) -> std::io::Result<PortEffect> {
        let device = Device::of(port);
        self.count(device, port, "write dropped");
        let now = self.now_ns();
        match device {
            Device::Pic => self.pic.write(port, value),
            Device::Pit => {
                self.pit.write(port, value, now);
                self.pit_changed = true;
            }
            Device::I8042 => {
                if self.i8042.write(port, value) {
                    return Ok(PortEffect::Reset);
                }
            }
            Device::Cmos => self.cmos.write(port, value),
            Device::Uart => {
                let value = if port == UART_FCR { value & !FCR_CLEAR_RX } else { value };
                self.uart.write(port, value)?;
                self.wire_uart();
            }
            Device::Reset => {
                let reset = match port {
                    PORT_A => value & PORT_A_FAST_RESET != 0,
                    _ => value & RESET_CONTROL_CPU != 0,
                };
                if reset {
                    return Ok(PortEffect::Reset);
                }
            }
            Device::Post | Device::Unclaimed => {}
        }
        Ok(PortEffect::Continue)
    }

    /// A byte read from `port`.
    pub fn read(&mut self, port: u16) -> u8 {
        let device = Device::of(port);
        self.count(device, port, "read as 0xff");
        let now = self.now_ns();
        match device {
            Device::Pic => self.pic.read(port),
            Device::Pit => self.pit.read(port, now),
            Device::I8042 => self.i8042.read(port),
            Device::Cmos => self.cmos.read(port, unix_now()),
            Device::Uart => {
                let value = self.uart.read(port);
                // The guest may have made room in the receive FIFO.
                self.feed_uart();
                self.wire_uart();
                value
            }
            // A20 is always on; the reset control register reads as idle.
            Device::Reset if port == PORT_A => PORT_A_A20,
            Device::Reset => 0,
            Device::Post | Device::Unclaimed => 0xff,
        }
    }

    /// The UART raised its interrupt: an edge on IRQ4.
    fn wire_uart(&mut self) {
        if self.uart.take_irq() {
            self.isa_edge(COM1_IRQ);
        }
    }

    /// An edge on ISA line `irq`, to both interrupt controllers.
    fn isa_edge(&mut self, irq: u8) {
        self.pic.pulse_irq(irq);
        if self.pic.has_interrupt() {
            self.wakes |= 1;
        }
        self.wakes |= self.apics.isa_irq(irq);
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
        self.apics.lapics[cpu].pending_interrupt().is_some() || (cpu == 0 && self.apics.lapics[0].accepts_pic() && self.pic.has_interrupt())
    }

    /// Bytes typed or piped for the guest's console: queued, then moved into the UART as
    /// its receive FIFO makes room (none is ever dropped).
    pub fn console_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
        self.feed_uart();
        self.wire_uart();
    }

    /// Console input the UART has not taken yet.
    pub fn input_backlog(&self) -> usize {
        self.input.len()
    }

    fn feed_uart(&mut self) {
        while !self.input.is_empty() && self.uart.can_receive() {
            let (front, _) = self.input.as_slices();
            let n = self.uart.receive(front);
            if n == 0 {
                break;
            }
            self.input.drain(..n);
        }
    }

    /// The PIT's edges on IRQ0 up to now: one interrupt request, however many edges came
    /// (the PIC latches one; the others are counted as merged).
    pub fn timer_tick(&mut self) {
        let now = self.now_ns();
        let edges = self.pit.irq0_edges(self.irq0_seen_ns, now);
        self.irq0_seen_ns = now;
        if edges > 0 {
            self.isa_edge(PIT_IRQ);
            self.stats.merged_ticks += edges - 1;
        }
    }

    /// If the guest reprogrammed the PIT since the last call: when channel 0's next edge
    /// is due, as the host timer must be armed (`None`: disarmed).
    pub fn timer_update(&mut self) -> Option<Option<IrqTimer>> {
        if !std::mem::take(&mut self.pit_changed) {
            return None;
        }
        // Edges are counted from the last count taken (`irq0_seen_ns`), not from now: a
        // one-shot count that ran out between the guest's write and this call has its
        // edge still to be taken (resetting to now lost it, and a tickless Linux then
        // halted for good). The old programming's edges need no care: `irq0_edges` counts
        // only the current programming's, none before its start.
        Some(self.pit.irq0_timer(self.now_ns()))
    }

    /// vCPU `cpu`'s interrupt acknowledge: the vector its local APIC delivers (moved to
    /// its in-service register), else, on vCPU 0 in virtual-wire mode, the PIC's request
    /// (counted by line).
    pub fn acknowledge(&mut self, cpu: usize) -> Option<u8> {
        let lapic = &mut self.apics.lapics[cpu];
        if let Some(vector) = lapic.acknowledge() {
            return Some(vector);
        }
        if cpu != 0 || !lapic.accepts_pic() {
            return None;
        }
        let (vector, irq) = self.pic.acknowledge()?;
        self.stats.irqs[usize::from(irq & 15)] += 1;
        Some(vector)
    }
}

/// The host's wall-clock time, for the RTC.
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_input_reaches_the_uart() {
        let mut board = Board::new(16 << 20, 1);
        board.console_input(b"pq");
        // The guest's driver starts: FIFOs on and reset. The console's bytes stay.
        board.write(0x3fa, 0x07).unwrap();
        assert_eq!(board.read(0x3fd) & 1, 1, "data ready");
        assert_eq!(board.read(0x3f8), b'p');
        assert_eq!(board.read(0x3f8), b'q');
        assert_eq!(board.read(0x3fd) & 1, 0, "no more data");
    }

    /// A one-shot count that runs out before vCPU 0's next pass still raises IRQ0 there
    /// (it was lost once: the pass reset the edge count to its own time).
    #[test]
    fn a_short_one_shot_is_not_lost_before_the_next_pass() {
        let mut board = Board::new(16 << 20, 1);
        // The master PIC as Linux sets it up, IRQ0 unmasked.
        for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xfe)] {
            board.write(port, value).unwrap();
        }
        // Channel 0, mode 4 (Linux's one-shot), a count of 2 clocks (under 2 µs).
        for (port, value) in [(0x43, 0x38), (0x40, 2), (0x40, 0)] {
            board.write(port, value).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        // vCPU 0's pass, long after the edge: arm for the new programming, take edges.
        assert!(board.timer_update().is_some(), "the write is seen");
        board.timer_tick();
        assert!(board.interrupt_pending(0), "the one-shot's edge reached the PIC");
        assert_eq!(board.acknowledge(0), Some(0x30));
    }

    #[test]
    fn the_ways_a_pc_resets() {
        let mut board = Board::new(16 << 20, 1);
        assert_eq!(board.write(0x64, 0xfe).unwrap(), PortEffect::Reset);
        assert_eq!(board.write(0x92, PORT_A_A20).unwrap(), PortEffect::Continue);
        assert_eq!(board.write(0x92, PORT_A_A20 | PORT_A_FAST_RESET).unwrap(), PortEffect::Reset);
        assert_eq!(board.write(0xcf9, 0x02).unwrap(), PortEffect::Continue);
        assert_eq!(board.write(0xcf9, 0x06).unwrap(), PortEffect::Reset);
        assert_eq!(board.read(0x92), PORT_A_A20);
    }
}
