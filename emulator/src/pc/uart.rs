//! The 16550A UART of COM1, at ports 0x3f8..=0x3ff and IRQ 4: the guest's console.
//!
//! It wraps [`vm_superio::Serial`], which keeps the registers, the 64-byte receive FIFO
//! and the interrupt identification, and writes each transmitted byte to the output at
//! once (so the transmitter is always empty: LSR THRE and TEMT always read 1). Its
//! [`Trigger`] is called when an interrupt condition arises; the PIC's inputs are
//! edge-triggered, so the wrapper latches each call as one pending pulse that the machine
//! collects with [`Uart::take_irq`] and delivers to IRQ 4.
//!
//! # Where the wrapper corrects vm-superio 0.8
//!
//! - **IIR priority and clearing.** vm-superio ORs the pending interrupt bits into IIR
//!   (both receive and transmit pending read as 0x06, "receiver line status") and any IIR
//!   read clears every pending interrupt. A 16550 reports the one highest-priority source,
//!   and reading IIR clears only a reported THR-empty interrupt; received data stays
//!   pending until the FIFO is read empty. The wrapper therefore answers IIR reads
//!   itself when data is waiting and the receive interrupt is enabled (0xc4, leaving the
//!   THR-empty interrupt pending for a later IIR read), and otherwise lets vm-superio
//!   answer and clear, masking out sources that IER does not enable (vm-superio keeps a
//!   pending bit after IER disables it).
//! - **Receive interrupt while data remains.** vm-superio drops the pending receive
//!   interrupt at the first RBR read even when more bytes wait; the IIR answer above keeps
//!   reporting it while LSR DR is set, so a driver that reads one byte per IIR read still
//!   drains the FIFO.
//! - **A pulse per transmitted byte.** vm-superio raises the THR-empty interrupt only when
//!   it was not already pending, so a guest writing THR without having read IIR gets no
//!   new interrupt. On a 16550 each write makes the THR full (dropping the THR-empty
//!   interrupt) and then empty again (raising it): a new rising edge of the interrupt line,
//!   unless a pending receive interrupt holds the line high. The wrapper adds that pulse.
//! - **FCR.** vm-superio ignores writes to FCR. The wrapper honours "clear receive FIFO"
//!   (bit 1) by draining the FIFO, as Linux expects when it opens the port; the FIFOs are
//!   otherwise always on (IIR bits 7:6 read 0b11, so the guest detects a 16550A) and the
//!   trigger level is 1 byte.
//!
//! # Other behaviour on odd guest input
//!
//! - The receive FIFO never overflows: [`Uart::receive`] accepts only what fits and the
//!   caller keeps the rest. In loopback mode (MCR bit 4) the receiver is disconnected from
//!   the console: `receive` accepts nothing and bytes the guest transmits go to its own
//!   receive FIFO (dropped when it is full, as an overrun would), not to the output.
//! - MCR OUT2 does not gate the interrupt (a PC's COM port wires it to the IRQ line's
//!   enable); the machine delivers the pulse either way, as QEMU does.
//! - Line-status and modem-status interrupts are never raised: there are no line errors and
//!   the modem lines (CTS, DSR, DCD up) never change.
//! - The divisor latch, LCR, MCR and scratch register read back as written; baud rate,
//!   word length, parity and stop bits have no effect.
//! - Ports outside 0x3f8..=0x3ff read 0xff and ignore writes.

use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use vm_superio::serial::{Error as SerialError, NoEvents};
use vm_superio::{Serial, Trigger};

/// COM1's first port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1's interrupt line on the PIC.
pub const COM1_IRQ: u8 = 4;

/// The UART's eight ports.
const PORT_COUNT: u16 = 8;
/// What a read of a port the UART does not own returns.
const OPEN_BUS: u8 = 0xff;

/// Register offsets from the base port.
const RBR_THR: u8 = 0; // DLL when DLAB is set; IER, or DLM, is at 1
const IIR_FCR: u8 = 2;
const LCR: u8 = 3;
const MCR: u8 = 4;
const LSR: u8 = 5;

/// IER: received-data-available interrupt enable.
const IER_RDA: u8 = 0x01;
/// IER: transmitter-holding-register-empty interrupt enable.
const IER_THRE: u8 = 0x02;
/// IIR: no interrupt pending.
const IIR_NONE: u8 = 0x01;
/// IIR: the THR is empty.
const IIR_THRE: u8 = 0x02;
/// IIR: received data available.
const IIR_RDA: u8 = 0x04;
/// IIR: FIFOs enabled (bits 7:6).
const IIR_FIFO_ENABLED: u8 = 0xc0;
/// FCR: clear the receive FIFO.
const FCR_CLEAR_RX: u8 = 0x02;
/// LCR: divisor latch access.
const LCR_DLAB: u8 = 0x80;
/// MCR: loopback mode.
const MCR_LOOP: u8 = 0x10;
/// LSR: data ready.
const LSR_DR: u8 = 0x01;

/// The interrupt line as vm-superio's trigger: set when it fires, taken by the machine.
#[derive(Debug, Default)]
struct IrqLatch(AtomicBool);

impl Trigger for IrqLatch {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The UART, writing what the guest transmits to `W`. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Uart<W: Write> {
    serial: Serial<IrqLatch, NoEvents, W>,
    /// The size of the receive FIFO.
    fifo_size: usize,
    /// Copies of LCR and MCR (vm-superio has no side-effect-free way to read them).
    lcr: u8,
    mcr: u8,
}

impl<W: Write> Uart<W> {
    /// A UART in its power-on state, transmitting to `out`.
    pub fn new(out: W) -> Self {
        let serial = Serial::new(IrqLatch::default(), out);
        let state = serial.state();
        Uart {
            fifo_size: serial.fifo_capacity(),
            lcr: state.line_control,
            mcr: state.modem_control,
            serial,
        }
    }

    /// Whether `port` is one of the UART's ports (0x3f8..=0x3ff).
    pub fn owns(port: u16) -> bool {
        offset(port).is_some()
    }

    /// Reads a register.
    pub fn read(&mut self, port: u16) -> u8 {
        let Some(offset) = offset(port) else {
            return OPEN_BUS;
        };
        if offset == IIR_FCR {
            return self.read_iir();
        }
        self.serial.read(offset)
    }

    /// Writes a register. Errors writing a transmitted byte to the output (a closed
    /// stdout) are returned; the byte is lost, and the UART behaves as if it had been
    /// sent.
    pub fn write(&mut self, port: u16, value: u8) -> io::Result<()> {
        let Some(offset) = offset(port) else {
            return Ok(());
        };
        match offset {
            IIR_FCR => {
                if value & FCR_CLEAR_RX != 0 {
                    self.clear_rx_fifo();
                }
                return Ok(());
            }
            LCR => self.lcr = value,
            MCR => self.mcr = value,
            RBR_THR if self.lcr & LCR_DLAB == 0 && self.mcr & MCR_LOOP == 0 => {
                return self.transmit(value);
            }
            _ => {}
        }
        self.serial.write(offset, value).map_err(into_io)
    }

    /// Queues received bytes (the console's input); returns how many fit in the receive
    /// FIFO (the rest stay with the caller, who offers them again later: no byte is ever
    /// dropped). Raises the receive interrupt if it is enabled.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        if bytes.is_empty() || !self.can_receive() {
            return 0;
        }
        self.serial.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Whether the receive FIFO has room now (never in loopback mode).
    pub fn can_receive(&self) -> bool {
        self.mcr & MCR_LOOP == 0 && self.serial.fifo_capacity() > 0
    }

    /// Takes the pending interrupt request, if the UART raised one since the last call
    /// (the machine pulses IRQ 4).
    pub fn take_irq(&mut self) -> bool {
        self.serial.interrupt_evt().0.swap(false, Ordering::Relaxed)
    }

    /// Where transmitted bytes go.
    pub fn output(&mut self) -> &mut W {
        self.serial.writer_mut()
    }

    /// Whether the guest enabled the receive interrupt and data is waiting: the 16550's
    /// receive interrupt condition at a trigger level of 1.
    fn rda_pending(ier: u8, lsr: u8) -> bool {
        ier & IER_RDA != 0 && lsr & LSR_DR != 0
    }

    fn read_iir(&mut self) -> u8 {
        let state = self.serial.state();
        let ier = state.interrupt_enable;
        if Self::rda_pending(ier, state.line_status) {
            // Highest priority, and not cleared by reading IIR.
            return IIR_FIFO_ENABLED | IIR_RDA;
        }
        // Clears vm-superio's pending bits: the THR-empty interrupt, rightly, since it is
        // the one reported; and any stale receive bit, since no receive condition holds.
        let inner = self.serial.read(IIR_FCR);
        if inner & IIR_THRE != 0 && ier & IER_THRE != 0 {
            IIR_FIFO_ENABLED | IIR_THRE
        } else {
            IIR_FIFO_ENABLED | IIR_NONE
        }
    }

    fn transmit(&mut self, value: u8) -> io::Result<()> {
        let before = self.serial.state();
        let result = self.serial.write(RBR_THR, value).map_err(into_io);
        // The THR filled and emptied again: a new edge unless a receive interrupt keeps
        // the line up. vm-superio has raised it if THR-empty was not pending already.
        if before.interrupt_enable & IER_THRE != 0
            && before.interrupt_identification & IIR_THRE != 0
            && !Self::rda_pending(before.interrupt_enable, before.line_status)
        {
            let _ = self.serial.interrupt_evt().trigger();
        }
        result
    }

    fn clear_rx_fifo(&mut self) {
        // RBR is only reachable with DLAB clear.
        let dlab = self.lcr & LCR_DLAB != 0;
        if dlab {
            let _ = self.serial.write(LCR, self.lcr & !LCR_DLAB);
        }
        for _ in 0..self.fifo_size {
            if self.serial.read(LSR) & LSR_DR == 0 {
                break;
            }
            let _ = self.serial.read(RBR_THR);
        }
        if dlab {
            let _ = self.serial.write(LCR, self.lcr);
        }
    }
}

/// The register offset of `port`, if the UART owns it.
fn offset(port: u16) -> Option<u8> {
    let offset = port.checked_sub(COM1_BASE)?;
    if offset < PORT_COUNT {
        u8::try_from(offset).ok()
    } else {
        None
    }
}

fn into_io(e: SerialError<Infallible>) -> io::Error {
    match e {
        SerialError::IOError(e) => e,
        SerialError::Trigger(never) => match never {},
        SerialError::FullFifo => io::Error::other("serial receive FIFO full"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u16 = COM1_BASE;
    const RBR: u16 = COM1_BASE;
    const DLL: u16 = COM1_BASE;
    const DLM: u16 = COM1_BASE + 1;
    const IER_PORT: u16 = COM1_BASE + 1;
    const IIR_PORT: u16 = COM1_BASE + 2;
    const FCR_PORT: u16 = COM1_BASE + 2;
    const LCR_PORT: u16 = COM1_BASE + 3;
    const MCR_PORT: u16 = COM1_BASE + 4;
    const LSR_PORT: u16 = COM1_BASE + 5;
    const SCR_PORT: u16 = COM1_BASE + 7;
    const LSR_THRE: u8 = 0x20;
    const IIR_ID_MASK: u8 = 0x0f;

    fn uart() -> Uart<Vec<u8>> {
        Uart::new(Vec::new())
    }

    fn iir(u: &mut Uart<Vec<u8>>) -> u8 {
        u.read(IIR_PORT) & IIR_ID_MASK
    }

    #[test]
    fn transmit_by_polling() {
        let mut u = uart();
        for &b in b"hello\r\n" {
            while u.read(LSR_PORT) & LSR_THRE == 0 {}
            u.write(THR, b).unwrap();
        }
        assert_eq!(u.output().as_slice(), b"hello\r\n");
        // No interrupts were enabled.
        assert!(!u.take_irq());
        assert_eq!(iir(&mut u), IIR_NONE);
    }

    #[test]
    fn thr_empty_interrupt() {
        let mut u = uart();
        u.write(IER_PORT, IER_THRE).unwrap();
        assert!(u.take_irq());
        assert!(!u.take_irq());
        assert_eq!(u.read(IIR_PORT), IIR_FIFO_ENABLED | IIR_THRE);
        // Reading IIR cleared it.
        assert_eq!(iir(&mut u), IIR_NONE);
        // Each byte written raises another.
        u.write(THR, b'a').unwrap();
        assert!(u.take_irq());
        assert_eq!(iir(&mut u), IIR_THRE);
        assert_eq!(iir(&mut u), IIR_NONE);
        // Even when the guest did not read IIR between bytes.
        u.write(THR, b'b').unwrap();
        assert!(u.take_irq());
        u.write(THR, b'c').unwrap();
        assert!(u.take_irq());
        assert_eq!(iir(&mut u), IIR_THRE);
        assert_eq!(u.output().as_slice(), b"abc");
        // Disabling the interrupt hides a pending one; no pulses any more.
        u.write(THR, b'd').unwrap();
        assert!(u.take_irq());
        u.write(IER_PORT, 0).unwrap();
        assert_eq!(iir(&mut u), IIR_NONE);
        u.write(THR, b'e').unwrap();
        assert!(!u.take_irq());
    }

    #[test]
    fn receive_interrupt_and_data() {
        let mut u = uart();
        u.write(IER_PORT, IER_RDA).unwrap();
        assert!(!u.take_irq());
        assert_eq!(u.read(LSR_PORT) & LSR_DR, 0);
        assert_eq!(u.receive(b"xyz"), 3);
        assert!(u.take_irq());
        assert_eq!(u.read(IIR_PORT), IIR_FIFO_ENABLED | IIR_RDA);
        // Reading IIR does not clear it: data is still waiting.
        assert_eq!(iir(&mut u), IIR_RDA);
        assert_eq!(u.read(LSR_PORT) & LSR_DR, LSR_DR);
        assert_eq!(u.read(RBR), b'x');
        // Still pending while bytes remain.
        assert_eq!(iir(&mut u), IIR_RDA);
        assert_eq!(u.read(RBR), b'y');
        assert_eq!(u.read(RBR), b'z');
        assert_eq!(u.read(LSR_PORT) & LSR_DR, 0);
        assert_eq!(iir(&mut u), IIR_NONE);
        // Reading an empty FIFO is harmless.
        assert_eq!(u.read(RBR), 0);
        // New data, new interrupt.
        assert_eq!(u.receive(b"!"), 1);
        assert!(u.take_irq());
        assert_eq!(u.read(RBR), b'!');
    }

    #[test]
    fn receive_priority_over_thr_empty() {
        let mut u = uart();
        u.write(IER_PORT, IER_RDA | IER_THRE).unwrap();
        assert!(u.take_irq());
        u.receive(b"k");
        assert_eq!(iir(&mut u), IIR_RDA);
        assert_eq!(u.read(RBR), b'k');
        // The THR-empty interrupt waited its turn.
        assert_eq!(iir(&mut u), IIR_THRE);
        assert_eq!(iir(&mut u), IIR_NONE);
    }

    #[test]
    fn enabling_receive_interrupt_with_data_waiting() {
        let mut u = uart();
        assert_eq!(u.receive(b"q"), 1);
        assert!(!u.take_irq());
        assert_eq!(iir(&mut u), IIR_NONE);
        u.write(IER_PORT, IER_RDA).unwrap();
        assert!(u.take_irq());
        assert_eq!(iir(&mut u), IIR_RDA);
    }

    #[test]
    fn receive_never_drops_bytes() {
        let mut u = uart();
        let input: Vec<u8> = (0..200u8).collect();
        let mut offered = 0;
        let mut got = Vec::new();
        while got.len() < input.len() {
            if u.can_receive() {
                offered += u.receive(&input[offered..]);
            }
            assert!(offered <= input.len());
            // The FIFO holds 64 bytes: a full one takes nothing more.
            if !u.can_receive() {
                assert_eq!(u.receive(&input[offered..]), 0);
            }
            // The guest reads a few bytes.
            for _ in 0..10 {
                if u.read(LSR_PORT) & LSR_DR != 0 {
                    got.push(u.read(RBR));
                }
            }
        }
        assert_eq!(got, input);
        assert_eq!(u.receive(&[]), 0);
    }

    #[test]
    fn fifo_capacity_is_64() {
        let mut u = uart();
        assert_eq!(u.receive(&[0x55; 100]), 64);
        assert!(!u.can_receive());
        assert_eq!(u.receive(b"a"), 0);
        u.read(RBR);
        assert!(u.can_receive());
        assert_eq!(u.receive(b"ab"), 1);
    }

    #[test]
    fn fcr_clears_receive_fifo() {
        let mut u = uart();
        u.write(IER_PORT, IER_RDA).unwrap();
        u.receive(b"stale");
        assert!(u.take_irq());
        // FIFO enable alone keeps the data.
        u.write(FCR_PORT, 0x01).unwrap();
        assert_eq!(u.read(LSR_PORT) & LSR_DR, LSR_DR);
        // Clearing with DLAB set, as some drivers do.
        u.write(LCR_PORT, 0x83).unwrap();
        u.write(FCR_PORT, 0x07).unwrap();
        assert_eq!(u.read(LCR_PORT), 0x83);
        u.write(LCR_PORT, 0x03).unwrap();
        assert_eq!(u.read(LSR_PORT) & LSR_DR, 0);
        assert_eq!(iir(&mut u), IIR_NONE);
        assert_eq!(u.receive(b"new"), 3);
        assert_eq!(u.read(RBR), b'n');
    }

    #[test]
    fn divisor_latch() {
        let mut u = uart();
        u.write(IER_PORT, IER_RDA).unwrap();
        u.write(LCR_PORT, LCR_DLAB | 0x03).unwrap();
        u.write(DLL, 0x01).unwrap(); // 115200 baud
        u.write(DLM, 0x00).unwrap();
        assert_eq!(u.read(DLL), 0x01);
        assert_eq!(u.read(DLM), 0x00);
        // Nothing was transmitted and IER is untouched.
        assert!(u.output().is_empty());
        u.write(LCR_PORT, 0x03).unwrap();
        assert_eq!(u.read(LCR_PORT), 0x03);
        assert_eq!(u.read(IER_PORT), IER_RDA);
        u.write(THR, b'z').unwrap();
        assert_eq!(u.output().as_slice(), b"z");
        // And the latch kept its value.
        u.write(LCR_PORT, LCR_DLAB | 0x03).unwrap();
        assert_eq!(u.read(DLL), 0x01);
        assert_eq!(u.read(DLM), 0x00);
    }

    #[test]
    fn scratch_register() {
        let mut u = uart();
        for v in [0x00, 0x5a, 0xa5, 0xff] {
            u.write(SCR_PORT, v).unwrap();
            assert_eq!(u.read(SCR_PORT), v);
        }
    }

    #[test]
    fn loopback() {
        let mut u = uart();
        u.write(MCR_PORT, MCR_LOOP).unwrap();
        assert!(!u.can_receive());
        assert_eq!(u.receive(b"x"), 0);
        u.write(THR, b'L').unwrap();
        assert!(u.output().is_empty());
        assert_eq!(u.read(RBR), b'L');
        u.write(MCR_PORT, 0x0b).unwrap();
        assert!(u.can_receive());
        assert_eq!(u.receive(b"x"), 1);
    }

    #[test]
    fn output_errors_are_returned() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut u = Uart::new(Closed);
        u.write(IER_PORT, IER_THRE).unwrap();
        assert!(u.take_irq());
        u.read(IIR_PORT);
        let e = u.write(THR, b'a').unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        // The UART carries on as if the byte was sent.
        assert!(u.take_irq());
        assert_ne!(u.read(LSR_PORT) & LSR_THRE, 0);
    }

    #[test]
    fn ports() {
        assert!((0x3f8..=0x3ff).all(Uart::<Vec<u8>>::owns));
        assert!(!Uart::<Vec<u8>>::owns(0x3f7));
        assert!(!Uart::<Vec<u8>>::owns(0x400));
        assert!(!Uart::<Vec<u8>>::owns(0));
        let mut u = uart();
        assert_eq!(u.read(0x2f8), OPEN_BUS);
        u.write(0x2f8, b'a').unwrap();
        assert!(u.output().is_empty());
    }

    #[test]
    fn any_input_is_safe() {
        let mut u = uart();
        for port in COM1_BASE - 2..COM1_BASE + 10 {
            for value in 0..=u8::MAX {
                let _ = u.write(port, value);
                let _ = u.read(port);
                let _ = u.receive(&[value; 3]);
                let _ = u.take_irq();
            }
        }
    }
}
