//! PCI configuration mechanism #1's ports, with no PCI device behind them yet: the
//! configuration address register at 0xcf8 (a dword; it keeps what is written) and the
//! data window at 0xcfc-0xcff, which reads all ones (no device answers, so a kernel that
//! probes PCI finds none). The reset control register at 0xcf9 shares the address
//! register's dword: a byte access there is the reset control's, a dword access at 0xcf8
//! the address register's, as on PC chipsets. (A dword written to 0xcf8 once reached
//! 0xcf9 as its second byte, and 0x80000400, function 4, reset the machine.)

use std::io;

use crate::bus::{le, BusDevice, Ctx, Effect, Ignored};

/// The configuration address register (a dword), with the reset control register in it.
pub const CONFIG_ADDRESS: u16 = 0xcf8;
/// The configuration data window (a dword).
pub const CONFIG_DATA: u16 = 0xcfc;
/// The reset control register of PC chipsets (a byte): bit 2 resets the CPU.
pub const RESET_CONTROL: u16 = 0xcf9;
pub const RESET_CONTROL_CPU: u8 = 1 << 2;
/// Bits 1:0 of the configuration address are reserved and read as 0.
const ADDRESS_RESERVED: u32 = 0b11;

/// 0xcf8-0xcfb: the configuration address (dword at 0xcf8) and the reset control (byte at
/// 0xcf9). Other accesses are ignored (reads all ones).
pub struct ConfigAddress {
    address: u32,
    ignored: Ignored,
}

impl ConfigAddress {
    pub fn new(ignored: Ignored) -> Self {
        Self { address: 0, ignored }
    }
}

const RESET_OFFSET: u64 = (RESET_CONTROL - CONFIG_ADDRESS) as u64;

impl BusDevice for ConfigAddress {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            // The reset control reads as idle.
            (RESET_OFFSET, 1) => data[0] = 0,
            _ => {
                data.fill(0xff);
                self.ignored.note(format_args!("{}-byte read of port {:#x} (all ones)", data.len(), base + offset));
            }
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        match (offset, data.len()) {
            (0, 4) => self.address = le(data) as u32 & !ADDRESS_RESERVED,
            (RESET_OFFSET, 1) if data[0] & RESET_CONTROL_CPU != 0 => return Ok(Effect::Reset),
            (RESET_OFFSET, 1) => {}
            _ => self.ignored.note(format_args!("{}-byte write of {:#x} to port {:#x}", data.len(), le(data), base + offset)),
        }
        Ok(Effect::Continue)
    }
}

/// 0xcfc-0xcff: the configuration data window. No device is behind it: reads are all
/// ones (a vendor ID of 0xffff: nothing there), writes go nowhere.
pub struct ConfigData;

impl BusDevice for ConfigData {
    fn read(&mut self, _: u64, _: u64, data: &mut [u8], _: &Ctx) {
        data.fill(0xff);
    }

    fn write(&mut self, _: u64, _: u64, _: &[u8], _: &Ctx) -> io::Result<Effect> {
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use crate::bus::tests::CTX;
    use crate::bus::Effect;
    use crate::pc::board::tests::pc;

    /// Linux's probe of mechanism #1, and a configuration read of function 4 (0x80000400,
    /// whose second byte has the reset bit).
    #[test]
    fn a_dword_at_0xcf8_is_the_config_address_and_does_not_reset() {
        let (mut d, _) = pc();
        for address in [0x8000_0000u32, 0x8000_0400, 0x8000_fc04] {
            assert_eq!(d.ports.write(0xcf8, &address.to_le_bytes(), &CTX).unwrap(), Effect::Continue);
            let mut back = [0u8; 4];
            d.ports.read(0xcf8, &mut back, &CTX);
            assert_eq!(u32::from_le_bytes(back), address, "the address register keeps its value");
            let mut data = [0u8; 4];
            d.ports.read(0xcfc, &mut data, &CTX);
            assert_eq!(data, [0xff; 4], "no device: all ones");
        }
        // Low two bits are reserved; a word there is neither register; data writes vanish.
        d.ports.write(0xcf8, &0x8000_0403u32.to_le_bytes(), &CTX).unwrap();
        let mut back = [0u8; 4];
        d.ports.read(0xcf8, &mut back, &CTX);
        assert_eq!(u32::from_le_bytes(back), 0x8000_0400);
        assert_eq!(d.ports.write(0xcf8, &[0x04, 0x04], &CTX).unwrap(), Effect::Continue);
        assert_eq!(d.ports.write(0xcfc, &[0x04; 4], &CTX).unwrap(), Effect::Continue);
        let mut b = [0u8; 1];
        d.ports.read(0xcfe, &mut b, &CTX);
        assert_eq!(b, [0xff]);
    }

    #[test]
    fn a_byte_at_0xcf9_is_still_the_reset_control() {
        let (mut d, _) = pc();
        assert_eq!(d.ports.write(0xcf9, &[0x02], &CTX).unwrap(), Effect::Continue);
        let mut b = [0xaau8];
        d.ports.read(0xcf9, &mut b, &CTX);
        assert_eq!(b, [0], "reads as idle");
        assert_eq!(d.ports.write(0xcf9, &[0x06], &CTX).unwrap(), Effect::Reset);
    }
}
