// SPDX-License-Identifier: GPL-2.0
//! The guest's debug registers, virtualized. VMRUN does not switch DR0-DR3, so a guest
//! that wrote them directly would change the host's, and a breakpoint it left armed would
//! fire in the next guest on that CPU. Every MOV to or from a debug register is therefore
//! intercepted and emulated here on the vCPU's own copies; the hardware DR7 the guest runs
//! with always has every breakpoint disabled (guest breakpoints never fire).

use super::x86::dr::{DR6_RESET, DR7_RESET};

/// A decoded `MOV DRn, reg` (0F 23 /r) or `MOV reg, DRn` (0F 21 /r).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MovDr {
    /// 0-15 (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
    pub(crate) gpr: usize,
    pub(crate) dr: usize,
    pub(crate) to_dr: bool,
    pub(crate) len: u64,
}

/// Decodes the instruction at the start of `bytes` (`long`: 64-bit code, where REX
/// prefixes exist). Other prefixes are skipped; the ModRM `mod` field is ignored, as the
/// CPU does for these opcodes.
pub(crate) fn decode(bytes: &[u8], long: bool) -> Option<MovDr> {
    let mut i = 0;
    let mut rex_b = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => i += 1,
            0x40..=0x4f if long => {
                rex_b = usize::from(b & 1) * 8;
                i += 1;
            }
            _ => break,
        }
    }
    let (op, modrm) = match bytes.get(i..i + 3)? {
        [0x0f, op @ (0x21 | 0x23), modrm] => (*op, *modrm),
        _ => return None,
    };
    Some(MovDr {
        gpr: usize::from(modrm & 7) + rex_b,
        dr: usize::from((modrm >> 3) & 7),
        to_dr: op == 0x23,
        len: (i + 3) as u64,
    })
}

/// The guest's view of DR0-DR3 and DR7 (its DR6 is the VMCB's: it cannot arm anything,
/// and the CPU updates it there when it delivers the guest's own #DB).
#[derive(Clone, Copy)]
pub(crate) struct DebugRegs {
    addr: [u64; 4],
    dr7: u64,
}

/// DR6 as a MOV writes it: the reserved bits read as ones (bit 12 as zero).
pub(crate) fn dr6_written(value: u64) -> u64 {
    (value & 0xffff_efff) | DR6_RESET
}


impl Default for DebugRegs {
    fn default() -> Self {
        Self { addr: [0; 4], dr7: DR7_RESET }
    }
}

impl DebugRegs {
    /// DR0-DR3 or DR7 (any other `dr` reads DR7: the caller maps DR4/DR5 and keeps DR6).
    pub(crate) fn read(&self, dr: usize) -> u64 {
        match dr {
            0..=3 => self.addr[dr],
            _ => self.dr7,
        }
    }

    pub(crate) fn write(&mut self, dr: usize, value: u64) {
        match dr {
            0..=3 => self.addr[dr] = value,
            _ => self.dr7 = (value & 0xffff_2fff) | DR7_RESET,
        }
    }
}
