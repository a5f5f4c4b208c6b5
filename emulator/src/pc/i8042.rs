//! The i8042 keyboard controller at ports 0x60 (data) and 0x64 (status on reads,
//! command on writes): just enough of it for the guest to reboot the machine.
//!
//! It wraps [`vm_superio::I8042Device`], which knows the one command that matters: 0xfe
//! written to port 0x64 pulses the CPU reset line, the way Linux (`reboot=k`, its
//! default fallback) and BIOSes reboot a PC. Its [`Trigger`] is a latch here, which
//! [`I8042::write`] turns into its return value.
//!
//! The wrapper adds the two other ways an 8042 drives the reset line, which QEMU's
//! emulation also honours and vm-superio does not know:
//! - the "pulse output port" commands 0xf0..=0xff: a clear bit in the low nibble pulses
//!   that output-port line, and bit 0 is the reset line, so every even command in that
//!   range (0xfe included) resets, and the odd ones do nothing;
//! - command 0xd1 (write output port) followed by a data byte on port 0x60 with bit 0
//!   (the reset line, active low) clear. Bit 1 of that byte, the A20 gate, is ignored:
//!   A20 is always enabled here.
//!
//! Everything else is what vm-superio does: both ports read 0, which the guest sees as a
//! status of "output buffer empty, input buffer empty", so it never waits for the
//! controller and never finds a byte to read; no keyboard or mouse is attached and no
//! command produces a reply (Linux's i8042 driver then gives up with "Can't read CTR
//! while initializing i8042", harmlessly). All other commands and data bytes are ignored.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};

use vm_superio::{I8042Device, Trigger};

/// The data port (keyboard data; the output-port byte after command 0xd1).
pub const DATA_PORT: u16 = 0x60;
/// The status (read) and command (write) port.
pub const COMMAND_PORT: u16 = 0x64;

/// What a read of a port the controller does not own returns.
const OPEN_BUS: u8 = 0xff;
/// Command: write the next data byte to the output port.
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
/// Commands 0xf0..=0xff pulse the output-port lines whose bits are clear in the low
/// nibble.
const CMD_PULSE_OUTPUT_FIRST: u8 = 0xf0;
/// The output-port bit of the CPU reset line (active low).
const OUTPUT_PORT_RESET: u8 = 0x01;

/// The reset line as vm-superio's trigger: set when it fires.
#[derive(Debug, Default)]
struct ResetLatch(AtomicBool);

impl Trigger for ResetLatch {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The keyboard controller. See the [module documentation](self).
#[derive(Debug)]
pub struct I8042 {
    device: I8042Device<ResetLatch>,
    /// The last command was 0xd1: the next data byte is the output port.
    output_port_next: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// A controller with no reset pending.
    pub fn new() -> Self {
        I8042 {
            device: I8042Device::new(ResetLatch::default()),
            output_port_next: false,
        }
    }

    /// Whether `port` is one of the controller's ports (0x60, 0x64).
    pub fn owns(port: u16) -> bool {
        port == DATA_PORT || port == COMMAND_PORT
    }

    /// Reads the data or status port: always 0 (nothing to read, ready for commands).
    /// Ports the controller does not own read as 0xff.
    pub fn read(&mut self, port: u16) -> u8 {
        match offset(port) {
            Some(offset) => self.device.read(offset),
            None => OPEN_BUS,
        }
    }

    /// Writes a command (port 0x64) or a data byte (port 0x60).
    ///
    /// Returns true when the guest pulsed the CPU reset line (0xfe written to 0x64, the
    /// way Linux and BIOSes reboot; or one of the other ways in the
    /// [module documentation](self)). Writes to ports it does not own are ignored.
    pub fn write(&mut self, port: u16, value: u8) -> bool {
        let Some(offset) = offset(port) else {
            return false;
        };
        let mut reset = false;
        if port == COMMAND_PORT {
            self.output_port_next = value == CMD_WRITE_OUTPUT_PORT;
            reset = value >= CMD_PULSE_OUTPUT_FIRST && value & OUTPUT_PORT_RESET == 0;
        } else if std::mem::take(&mut self.output_port_next) {
            reset = value & OUTPUT_PORT_RESET == 0;
        }
        let Ok(()) = self.device.write(offset, value);
        // vm-superio fires on 0xfe, which is also a pulse command: one reset either way.
        let fired = self.device.reset_evt().0.swap(false, Ordering::Relaxed);
        reset || fired
    }
}

/// The vm-superio offset of `port`.
fn offset(port: u16) -> Option<u8> {
    match port {
        DATA_PORT | COMMAND_PORT => u8::try_from(port - DATA_PORT).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output-buffer-full bit of the status register.
    const STATUS_OBF: u8 = 0x01;
    /// Input-buffer-full bit of the status register.
    const STATUS_IBF: u8 = 0x02;

    #[test]
    fn fe_resets() {
        let mut k = I8042::new();
        assert!(k.write(COMMAND_PORT, 0xfe));
        // The request is reported once.
        assert!(!k.write(COMMAND_PORT, 0xff));
        assert!(k.write(COMMAND_PORT, 0xfe));
    }

    #[test]
    fn other_commands_do_not_reset() {
        let mut k = I8042::new();
        for cmd in [
            0x20, 0x60, 0xa7, 0xa8, 0xaa, 0xab, 0xad, 0xae, 0xd0, 0xd4, 0xdd, 0xdf, 0xff,
        ] {
            assert!(!k.write(COMMAND_PORT, cmd), "command {cmd:#x}");
        }
        // 0xfe on the data port is a keyboard byte, not a command.
        assert!(!k.write(DATA_PORT, 0xfe));
        // Nor on a port it does not own.
        assert!(!k.write(0x61, 0xfe));
        assert!(!k.write(0x65, 0xfe));
    }

    #[test]
    fn every_even_pulse_command_resets() {
        let mut k = I8042::new();
        for cmd in CMD_PULSE_OUTPUT_FIRST..=0xff {
            assert_eq!(k.write(COMMAND_PORT, cmd), cmd & 1 == 0, "command {cmd:#x}");
        }
    }

    #[test]
    fn write_output_port() {
        let mut k = I8042::new();
        // A20 on, reset line high: no reset.
        assert!(!k.write(COMMAND_PORT, CMD_WRITE_OUTPUT_PORT));
        assert!(!k.write(DATA_PORT, 0xdf));
        // Only the byte right after 0xd1 is the output port.
        assert!(!k.write(DATA_PORT, 0x00));
        // Reset line low: reset.
        assert!(!k.write(COMMAND_PORT, CMD_WRITE_OUTPUT_PORT));
        assert!(k.write(DATA_PORT, 0xde));
        // Another command in between cancels the 0xd1.
        assert!(!k.write(COMMAND_PORT, CMD_WRITE_OUTPUT_PORT));
        assert!(!k.write(COMMAND_PORT, 0xad));
        assert!(!k.write(DATA_PORT, 0x00));
    }

    #[test]
    fn reads_report_nothing_queued() {
        let mut k = I8042::new();
        let status = k.read(COMMAND_PORT);
        assert_eq!(status & (STATUS_OBF | STATUS_IBF), 0);
        let _ = k.read(DATA_PORT);
        // After commands that would have a reply on a real 8042, still nothing queued.
        for cmd in [0x20, 0xaa, 0xab, 0xd0] {
            k.write(COMMAND_PORT, cmd);
            assert_eq!(k.read(COMMAND_PORT) & STATUS_OBF, 0);
        }
        assert_eq!(k.read(0x62), OPEN_BUS);
    }

    #[test]
    fn owns_its_two_ports() {
        assert!(I8042::owns(0x60) && I8042::owns(0x64));
        for port in [0x5f, 0x61, 0x62, 0x63, 0x65, 0x70] {
            assert!(!I8042::owns(port));
        }
    }

    #[test]
    fn any_input_is_safe() {
        let mut k = I8042::default();
        for port in 0x5e..0x68 {
            for value in 0..=u8::MAX {
                let _ = k.write(port, value);
                let _ = k.read(port);
            }
        }
    }
}
