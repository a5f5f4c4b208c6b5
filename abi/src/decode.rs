// SPDX-License-Identifier: GPL-2.0
//! A decoder of the MOV forms a driver's MMIO access uses, shared like `paging.rs`: the
//! kernel module includes this file by path to complete MMIO accesses it handles itself
//! (QEMU's software SVM gives no decode assists), and the `yakvm-abi` crate exports it so
//! that host tests check it against iced-x86 (abi/tests/decode.rs). Only `core`.
//!
//! Decoded: `88`/`89` (register to memory), `8A`/`8B` (memory to register), `C6 /0`/`C7 /0`
//! (immediate to memory), `A0`-`A3` (AL/eAX to or from a `moffs`), `0F B6`/`0F B7` (MOVZX)
//! and `0F BE`/`0F BF` (MOVSX) loads — what Linux's `readb/w/l/q`, `writeb/w/l/q` and a
//! compiler's stores of constants compile to. Prefixes: `66` (operand size), `67` (address
//! size), the six segment overrides, and REX (W, R, X, B) in 64-bit mode. ModRM, SIB and
//! displacement forms of 16-, 32- and 64-bit addressing. Anything else (LOCK, REP,
//! register-only forms, other opcodes, more than 15 bytes, too few bytes) is `None`: the
//! caller leaves the instruction to a complete emulator.
//!
//! The effective address is not computed: the caller knows the address from the fault.

/// The CPU mode the instruction runs in (the code segment's default sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode, virtual-8086 mode, 16-bit protected or compatibility mode.
    Bits16,
    /// 32-bit protected or compatibility mode.
    Bits32,
    /// 64-bit mode (long mode with CS.L set).
    Bits64,
}

/// A general-purpose register as an instruction names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// 0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX, 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8-15 = R8-R15.
    pub index: u8,
    /// AH, CH, DH or BH: bits 15:8 of register `index` (0-3).
    pub high_byte: bool,
}

/// How a load widens the value read into its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// MOV: the register has the access's size.
    None,
    /// MOVZX.
    Zero,
    /// MOVSX.
    Sign,
}

/// What the instruction does with memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reads memory into `reg`, whose operand size is `reg_size` bytes (1, 2, 4 or 8).
    Load { reg: Reg, reg_size: u8, extend: Extend },
    /// Writes the low `size` bytes of `reg` (bits 15:8 for a high-byte register).
    StoreReg { reg: Reg },
    /// Writes `value` (already sign-extended as the CPU does, to `size` bytes).
    StoreImm { value: u64 },
}

/// A decoded MOV to or from memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mov {
    /// Length of the instruction in bytes (1-15).
    pub len: u8,
    /// Bytes of memory accessed: 1, 2, 4 or 8.
    pub size: u8,
    pub op: Op,
}

fn mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (8 * u32::from(size))) - 1 }
}

impl Mov {
    /// The instruction writes memory.
    pub fn is_write(&self) -> bool {
        !matches!(self.op, Op::Load { .. })
    }

    /// For a store: the value written, given the current value of the source register
    /// (ignored for an immediate). `None` for a load.
    pub fn store_value(&self, reg_value: u64) -> Option<u64> {
        match self.op {
            Op::StoreReg { reg } => {
                let v = if reg.high_byte { reg_value >> 8 } else { reg_value };
                Some(v & mask(self.size))
            }
            Op::StoreImm { value } => Some(value & mask(self.size)),
            Op::Load { .. } => None,
        }
    }

    /// For a load: the new 64-bit value of the destination register, given its old value
    /// and the `size` bytes read (little-endian, in the low bits of `data`). A 32-bit
    /// result zero-extends into the whole register; 8- and 16-bit results keep the other
    /// bits (a high-byte register takes bits 15:8). `None` for a store.
    pub fn load_result(&self, old: u64, data: u64) -> Option<u64> {
        let Op::Load { reg, reg_size, extend } = self.op else { return None };
        let data = data & mask(self.size);
        let value = match extend {
            Extend::Sign => {
                let shift = 64 - 8 * u32::from(self.size);
                (((data << shift) as i64) >> shift) as u64
            }
            Extend::None | Extend::Zero => data,
        } & mask(reg_size);
        Some(match reg_size {
            1 if reg.high_byte => (old & !0xff00) | (value << 8),
            1 => (old & !0xff) | value,
            2 => (old & !0xffff) | value,
            _ => value,
        })
    }
}

/// Longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// Decodes the instruction at the start of `bytes` (up to 15 bytes; fewer if that is all
/// that could be read) if it is one of the MOV forms this file knows; `None` otherwise.
pub fn decode(bytes: &[u8], mode: Mode) -> Option<Mov> {
    let bytes = &bytes[..bytes.len().min(MAX_LEN)];
    let mut i = 0;
    let mut operand_override = false;
    let mut address_override = false;
    // REX counts only right before the opcode; a legacy prefix after it cancels it.
    let mut rex: Option<u8> = None;
    loop {
        let b = *bytes.get(i)?;
        match b {
            0x66 => operand_override = true,
            0x67 => address_override = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0x40..=0x4f if mode == Mode::Bits64 => {
                rex = Some(b);
                i += 1;
                continue;
            }
            _ => break,
        }
        rex = None;
        i += 1;
    }
    let rex_bits = rex.unwrap_or(0);
    // REX.W (64-bit operand), REX.R (high bit of the reg field); X and B extend the
    // address's registers, which are not needed.
    let (w, r) = (rex_bits & 8 != 0, (rex_bits & 4) << 1);
    let operand_size: u8 = match mode {
        Mode::Bits16 => if operand_override { 4 } else { 2 },
        Mode::Bits32 => if operand_override { 2 } else { 4 },
        Mode::Bits64 => if w { 8 } else if operand_override { 2 } else { 4 },
    };
    let address_size: u8 = match mode {
        Mode::Bits16 => if address_override { 4 } else { 2 },
        Mode::Bits32 => if address_override { 2 } else { 4 },
        Mode::Bits64 => if address_override { 4 } else { 8 },
    };
    // An 8-bit register: with any REX, 4-7 are SPL, BPL, SIL, DIL; without, AH-BH.
    let reg8 = |n: u8| {
        if rex.is_none() && (4..8).contains(&n) {
            Reg { index: n - 4, high_byte: true }
        } else {
            Reg { index: n, high_byte: false }
        }
    };
    let full = |n: u8| Reg { index: n, high_byte: false };
    let opcode = *bytes.get(i)?;
    i += 1;
    let (size, op) = match opcode {
        0x88 | 0x89 | 0x8a | 0x8b | 0xc6 | 0xc7 => {
            let (modrm_len, reg_field) = modrm(bytes.get(i..)?, address_size)?;
            i += modrm_len;
            let n = reg_field | r;
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            let reg = if size == 1 { reg8(n) } else { full(n) };
            let op = match opcode {
                0x88 | 0x89 => Op::StoreReg { reg },
                0x8a | 0x8b => Op::Load { reg, reg_size: size, extend: Extend::None },
                _ => {
                    if reg_field != 0 {
                        return None; // C6 F8 / C7 F8 and the rest: not MOV
                    }
                    let imm_len = usize::from(size.min(4));
                    let imm = le(bytes.get(i..i + imm_len)?);
                    i += imm_len;
                    // A 64-bit store takes a 32-bit immediate, sign-extended.
                    let value = if size == 8 { imm as u32 as i32 as i64 as u64 } else { imm };
                    Op::StoreImm { value }
                }
            };
            (size, op)
        }
        0xa0..=0xa3 => {
            i += usize::from(address_size);
            bytes.get(..i)?;
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            let reg = full(0);
            let op = if opcode & 2 == 0 { Op::Load { reg, reg_size: size, extend: Extend::None } } else { Op::StoreReg { reg } };
            (size, op)
        }
        0x0f => {
            let second = *bytes.get(i)?;
            i += 1;
            let (size, extend) = match second {
                0xb6 => (1, Extend::Zero),
                0xb7 => (2, Extend::Zero),
                0xbe => (1, Extend::Sign),
                0xbf => (2, Extend::Sign),
                _ => return None,
            };
            let (modrm_len, reg_field) = modrm(bytes.get(i..)?, address_size)?;
            i += modrm_len;
            (size, Op::Load { reg: full(reg_field | r), reg_size: operand_size, extend })
        }
        _ => return None,
    };
    if i > MAX_LEN || i > bytes.len() {
        return None;
    }
    Some(Mov { len: i as u8, size, op })
}

/// The length of a memory ModRM operand (ModRM, SIB, displacement) at the start of
/// `bytes` and its reg field; `None` for a register operand (mod 11) or too few bytes.
fn modrm(bytes: &[u8], address_size: u8) -> Option<(usize, u8)> {
    let m = *bytes.first()?;
    let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
    let len = match (md, address_size) {
        (3, _) => return None,
        // 16-bit addressing: no SIB; [disp16] for mod 00 r/m 110.
        (0, 2) => if rm == 6 { 3 } else { 1 },
        (1, 2) => 2,
        (2, 2) => 3,
        _ => {
            let mut len = 1;
            let mut base = rm;
            if rm == 4 {
                base = *bytes.get(1)? & 7;
                len += 1;
            }
            len + match md {
                // [disp32] (RIP-relative in 64-bit mode without a SIB), or a SIB without base.
                0 if base == 5 => 4,
                0 => 0,
                1 => 1,
                _ => 4,
            }
        }
    };
    bytes.get(..len)?;
    Some((len, reg))
}

fn le(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(v)
}
