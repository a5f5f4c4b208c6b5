//! Emulating the instruction behind an MMIO exit: decoded with iced-x86 from bytes fetched
//! at the guest's RIP, limited to moves between memory and a register or an immediate:
//! MOV (all forms), MOVZX, MOVSX and MOVSXD, of 1, 2, 4 or 8 bytes.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use yakvm_abi as abi;

/// What a store writes.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Source {
    Register(Register),
    Immediate(u64),
}

/// How a load fills its register.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Extend {
    /// MOV: the value has the register's width.
    None,
    /// MOVZX.
    Zero,
    /// MOVSX, MOVSXD.
    Sign,
}

/// The memory side of the instruction.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Access {
    Write { size: usize, source: Source },
    Read { size: usize, dest: Register, extend: Extend },
}

/// A decoded MMIO instruction of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct MmioInsn {
    pub access: Access,
    pub len: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsnError {
    #[error("cannot decode the instruction bytes {bytes:02x?} at rip {rip:#x}")]
    Undecodable { bytes: Vec<u8>, rip: u64 },
    #[error("cannot emulate '{text}' ({bytes:02x?}) at rip {rip:#x} on MMIO: only moves between memory and a register or an immediate are supported")]
    Unsupported { text: String, bytes: Vec<u8>, rip: u64 },
}

/// Decodes the instruction at the start of `bytes`, fetched at `rip` in `bitness`-bit code.
pub fn decode(bytes: &[u8], bitness: u32, rip: u64) -> Result<MmioInsn, InsnError> {
    let insn = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE).decode();
    if insn.is_invalid() {
        return Err(InsnError::Undecodable { bytes: bytes.to_vec(), rip });
    }
    let unsupported = || InsnError::Unsupported {
        text: insn.to_string(),
        bytes: bytes[..insn.len().min(bytes.len())].to_vec(),
        rip,
    };
    let size = insn.memory_size().size();
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(unsupported());
    }
    let access = match (insn.mnemonic(), insn.op0_kind(), insn.op1_kind()) {
        (Mnemonic::Mov, OpKind::Memory, OpKind::Register) => {
            Access::Write { size, source: Source::Register(insn.op1_register()) }
        }
        (Mnemonic::Mov, OpKind::Memory, kind) if is_immediate(kind) => {
            Access::Write { size, source: Source::Immediate(insn.immediate(1)) }
        }
        (Mnemonic::Mov, OpKind::Register, OpKind::Memory) => {
            Access::Read { size, dest: insn.op0_register(), extend: Extend::None }
        }
        (Mnemonic::Movzx, OpKind::Register, OpKind::Memory) => {
            Access::Read { size, dest: insn.op0_register(), extend: Extend::Zero }
        }
        (Mnemonic::Movsx | Mnemonic::Movsxd, OpKind::Register, OpKind::Memory) => {
            Access::Read { size, dest: insn.op0_register(), extend: Extend::Sign }
        }
        _ => return Err(unsupported()),
    };
    Ok(MmioInsn { access, len: insn.len() as u64 })
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate64
            | OpKind::Immediate8to64 | OpKind::Immediate32to64
    )
}

fn slot(regs: &mut abi::Regs, full: Register) -> Option<&mut u64> {
    Some(match full {
        Register::RAX => &mut regs.rax,
        Register::RBX => &mut regs.rbx,
        Register::RCX => &mut regs.rcx,
        Register::RDX => &mut regs.rdx,
        Register::RSI => &mut regs.rsi,
        Register::RDI => &mut regs.rdi,
        Register::RSP => &mut regs.rsp,
        Register::RBP => &mut regs.rbp,
        Register::R8 => &mut regs.r8,
        Register::R9 => &mut regs.r9,
        Register::R10 => &mut regs.r10,
        Register::R11 => &mut regs.r11,
        Register::R12 => &mut regs.r12,
        Register::R13 => &mut regs.r13,
        Register::R14 => &mut regs.r14,
        Register::R15 => &mut regs.r15,
        _ => return None,
    })
}

fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::BH | Register::CH | Register::DH)
}

fn mask(size: usize) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 }
}

/// The value of general-purpose register `r` (any width), `None` for other registers.
pub fn read_register(regs: &abi::Regs, r: Register) -> Option<u64> {
    let full = *slot(&mut regs.clone(), r.full_register())?;
    let shift = if is_high_byte(r) { 8 } else { 0 };
    Some((full >> shift) & mask(r.size()))
}

/// Writes `value` to register `r` as the CPU does: 8- and 16-bit writes keep the other
/// bits, 32-bit writes clear bits 63:32.
pub fn write_register(regs: &mut abi::Regs, r: Register, value: u64) -> Option<()> {
    let size = r.size();
    let full = slot(regs, r.full_register())?;
    let shift = if is_high_byte(r) { 8 } else { 0 };
    *full = match size {
        4 => value & 0xffff_ffff,
        8 => value,
        _ => (*full & !(mask(size) << shift)) | ((value & mask(size)) << shift),
    };
    Some(())
}

/// The register value a load of `size` bytes of `data` produces, extended per `extend`.
pub fn loaded_value(data: u64, size: usize, extend: Extend) -> u64 {
    let data = data & mask(size);
    match extend {
        Extend::Sign if size < 8 => {
            let shift = 64 - size * 8;
            (((data << shift) as i64) >> shift) as u64
        }
        _ => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> MmioInsn {
        decode(bytes, 64, 0x1000).unwrap()
    }

    #[test]
    fn stores_of_every_width() {
        // mov [rdi], al / ax / eax / rax
        assert_eq!(dec(&[0x88, 0x07]).access, Access::Write { size: 1, source: Source::Register(Register::AL) });
        assert_eq!(dec(&[0x66, 0x89, 0x07]).access, Access::Write { size: 2, source: Source::Register(Register::AX) });
        assert_eq!(dec(&[0x89, 0x07]).access, Access::Write { size: 4, source: Source::Register(Register::EAX) });
        assert_eq!(dec(&[0x48, 0x89, 0x07]).access, Access::Write { size: 8, source: Source::Register(Register::RAX) });
        // mov byte [rdi], 0x41 / mov qword [rdi], -2 (sign-extended imm32)
        assert_eq!(dec(&[0xc6, 0x07, 0x41]).access, Access::Write { size: 1, source: Source::Immediate(0x41) });
        let m = dec(&[0x48, 0xc7, 0x07, 0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(m.access, Access::Write { size: 8, source: Source::Immediate(u64::MAX - 1) });
        assert_eq!(m.len, 7);
    }

    #[test]
    fn loads_and_extensions() {
        // mov ecx, [rsi]; movzx eax, byte [rsi]; movsx rax, word [rsi]; movsxd rdx, [rsi]
        assert_eq!(dec(&[0x8b, 0x0e]).access, Access::Read { size: 4, dest: Register::ECX, extend: Extend::None });
        assert_eq!(dec(&[0x0f, 0xb6, 0x06]).access, Access::Read { size: 1, dest: Register::EAX, extend: Extend::Zero });
        assert_eq!(dec(&[0x48, 0x0f, 0xbf, 0x06]).access, Access::Read { size: 2, dest: Register::RAX, extend: Extend::Sign });
        assert_eq!(dec(&[0x48, 0x63, 0x16]).access, Access::Read { size: 4, dest: Register::RDX, extend: Extend::Sign });
        assert_eq!(loaded_value(0x80, 1, Extend::Sign), u64::MAX - 0x7f);
        assert_eq!(loaded_value(0x1_80, 1, Extend::Zero), 0x80);
    }

    #[test]
    fn other_instructions_are_refused_with_their_bytes() {
        // add [rdi], eax
        let e = decode(&[0x01, 0x07], 64, 0x2000).unwrap_err();
        assert!(matches!(e, InsnError::Unsupported { ref bytes, rip: 0x2000, .. } if bytes == &[0x01, 0x07]));
        assert!(e.to_string().contains("add"));
    }

    #[test]
    fn register_writes_follow_the_cpu() {
        let mut r = abi::Regs { rax: 0x1122_3344_5566_7788, ..Default::default() };
        write_register(&mut r, Register::AL, 0xff).unwrap();
        assert_eq!(r.rax, 0x1122_3344_5566_77ff);
        write_register(&mut r, Register::AH, 0x01).unwrap();
        assert_eq!(r.rax, 0x1122_3344_5566_01ff);
        write_register(&mut r, Register::EAX, 0xdead_beef).unwrap();
        assert_eq!(r.rax, 0xdead_beef);
        assert_eq!(read_register(&r, Register::AH), Some(0xbe));
        assert_eq!(read_register(&r, Register::AX), Some(0xbeef));
    }
}
