//! Emulating the instruction behind an MMIO exit: decoded with iced-x86 from bytes fetched
//! at the guest's RIP, then carried out on the registers and the memory behind the access.
//!
//! What is emulated, in 16-, 32- and 64-bit code, with operands of 1, 2, 4 or 8 bytes:
//! - moves: MOV (all forms between memory and a register or an immediate), MOVZX, MOVSX,
//!   MOVSXD; SMSW to memory;
//! - arithmetic and logic with memory as destination or source: ADD, OR, ADC, SBB, AND,
//!   SUB, XOR, CMP, TEST; INC, DEC, NOT, NEG; their flags as the CPU sets them (the
//!   flags Intel and AMD leave undefined: AF after a logic operation is cleared);
//! - XCHG, XADD; BT, BTS, BTR, BTC (bit offset in an immediate or a register);
//! - BSF, BSR and IMUL (two and three operands) with memory as source; SHLD, SHRD with
//!   memory as destination (count in an immediate or CL);
//! - string instructions MOVS, STOS, LODS, CMPS, SCAS with REP, REPE and REPNE prefixes,
//!   either side in RAM or MMIO: one element per exit (RIP stays on the instruction until
//!   RCX runs out or the REPE/REPNE condition ends it; the CPU runs RAM elements itself and
//!   exits again at the next MMIO one).
//!
//! Everything else on MMIO is refused with its bytes and text (the run ends): among others
//! SSE, MMX and x87 loads and stores (the hypervisor's interface gives no access to a
//! vCPU's XMM, MMX or x87 registers), PUSH/POP/CALL/RET/ENTER/LEAVE with the stack on MMIO,
//! indirect JMP/CALL through MMIO, CMOVcc, MUL, one-operand IMUL, DIV, IDIV, shifts and
//! rotates other than SHLD/SHRD, SETcc, CMPXCHG, MOVBE, INS/OUTS to MMIO, LGDT/LIDT/LTR/LLDT
//! and segment loads from MMIO. An access that crosses into the next page is carried out at
//! the exit's address as one access.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use yakvm_abi as abi;

/// A value an instruction takes: a register's or an immediate.
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

impl Source {
    fn register(self) -> Option<Register> {
        match self {
            Source::Register(r) => Some(r),
            Source::Immediate(_) => None,
        }
    }
}

/// The two-operand arithmetic and logic operations.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum AluOp {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
}

/// The one-operand ones.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum UnaryOp {
    Inc,
    Dec,
    Not,
    Neg,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum BitOp {
    Test,
    Set,
    Reset,
    Complement,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum StringOp {
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Rep {
    None,
    /// REP (MOVS, STOS, LODS) or REPE (CMPS, SCAS).
    RepE,
    /// REPNE (CMPS, SCAS).
    RepNe,
}

/// What the instruction does with its memory operand of `MmioInsn::size` bytes.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Op {
    /// Memory := source (MOV, and SMSW with `source` None: the low 16 bits of CR0).
    Store { source: Option<Source> },
    /// dest := memory, extended.
    Load { dest: Register, extend: Extend },
    /// Memory op= source (`dest` None), or register op= memory (`dest` the register).
    Alu { op: AluOp, source: Source, dest: Option<Register> },
    Unary { op: UnaryOp },
    /// Exchanges memory and the register (XADD: and stores their sum).
    Xchg { reg: Register, add: bool },
    Bit { op: BitOp, offset: Source },
    /// BSF (`reverse` false) or BSR of memory into `dest`.
    BitScan { reverse: bool, dest: Register },
    /// IMUL `dest`, memory (`imm` None: `dest` is the other factor) or `dest`, memory, imm.
    Imul { dest: Register, imm: Option<u64> },
    /// SHLD (`left`) or SHRD of memory, shifting in `fill`'s bits, by `count` (CL or an
    /// immediate).
    DoubleShift { left: bool, fill: Register, count: Source },
    /// `addr_size`: 2, 4 or 8 bytes of RSI, RDI and RCX; `seg`: the source segment.
    String { op: StringOp, rep: Rep, addr_size: usize, seg: Register },
}

/// A decoded MMIO instruction of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct MmioInsn {
    pub op: Op,
    /// The memory operand's size in bytes (a string instruction's element size).
    pub size: usize,
    pub len: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsnError {
    #[error("cannot decode the instruction bytes {bytes:02x?} at rip {rip:#x}")]
    Undecodable { bytes: Vec<u8>, rip: u64 },
    #[error("cannot emulate '{text}' ({bytes:02x?}) at rip {rip:#x} on MMIO: not among the instructions yakvm emulates there")]
    Unsupported { text: String, bytes: Vec<u8>, rip: u64 },
    #[error("'{text}' at rip {rip:#x}: linear address {va:#x} is not mapped")]
    Unmapped { text: String, rip: u64, va: u64 },
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
    let op = decode_op(&insn).ok_or_else(unsupported)?;
    // Only general-purpose registers: a segment or control register as operand (MOV to or
    // from a segment register, say) is not emulated.
    let gpr = |r: Register| r.is_gpr();
    let registers_ok = match op {
        Op::Store { source: Some(Source::Register(r)) } | Op::Alu { source: Source::Register(r), .. } => gpr(r),
        Op::Load { dest: r, .. } | Op::Xchg { reg: r, .. } | Op::Bit { offset: Source::Register(r), .. } => gpr(r),
        Op::BitScan { dest: r, .. } | Op::Imul { dest: r, .. } => gpr(r),
        Op::DoubleShift { fill, count, .. } => gpr(fill) && count.register().is_none_or(gpr),
        _ => true,
    };
    if !registers_ok {
        return Err(unsupported());
    }
    Ok(MmioInsn { op, size, len: insn.len() as u64 })
}

fn decode_op(insn: &Instruction) -> Option<Op> {
    use Mnemonic as M;
    let (k0, k1) = (insn.op0_kind(), insn.op1_kind());
    let mem0 = k0 == OpKind::Memory;
    let operands = insn.op_count();
    // The value of operand 1 (a register or an immediate).
    let source = || match k1 {
        OpKind::Register => Some(Source::Register(insn.op1_register())),
        k if is_immediate(k) => Some(Source::Immediate(insn.immediate(1))),
        _ => None,
    };
    let alu = match insn.mnemonic() {
        M::Add => Some(AluOp::Add),
        M::Or => Some(AluOp::Or),
        M::Adc => Some(AluOp::Adc),
        M::Sbb => Some(AluOp::Sbb),
        M::And => Some(AluOp::And),
        M::Sub => Some(AluOp::Sub),
        M::Xor => Some(AluOp::Xor),
        M::Cmp => Some(AluOp::Cmp),
        M::Test => Some(AluOp::Test),
        _ => None,
    };
    if let Some(op) = alu {
        return match (k0, k1) {
            (OpKind::Memory, _) => Some(Op::Alu { op, source: source()?, dest: None }),
            (OpKind::Register, OpKind::Memory) => {
                let reg = insn.op0_register();
                Some(Op::Alu { op, source: Source::Register(reg), dest: Some(reg) })
            }
            _ => None,
        };
    }
    if let Some(op) = string_op(insn.mnemonic()) {
        let rep = match (insn.has_repne_prefix(), insn.has_rep_prefix() || insn.has_repe_prefix()) {
            (true, _) if matches!(op, StringOp::Cmps | StringOp::Scas) => Rep::RepNe,
            (true, _) | (_, true) => Rep::RepE,
            _ => Rep::None,
        };
        let kinds = [k0, if operands > 1 { k1 } else { k0 }];
        let addr_size = kinds.iter().find_map(|k| string_addr_size(*k))?;
        return Some(Op::String { op, rep, addr_size, seg: insn.memory_segment() });
    }
    Some(match (insn.mnemonic(), k0, k1) {
        (M::Mov, OpKind::Memory, _) => Op::Store { source: Some(source()?) },
        (M::Mov, OpKind::Register, OpKind::Memory) => Op::Load { dest: insn.op0_register(), extend: Extend::None },
        (M::Movzx, OpKind::Register, OpKind::Memory) => Op::Load { dest: insn.op0_register(), extend: Extend::Zero },
        (M::Movsx | M::Movsxd, OpKind::Register, OpKind::Memory) => {
            Op::Load { dest: insn.op0_register(), extend: Extend::Sign }
        }
        (M::Smsw, OpKind::Memory, _) => Op::Store { source: None },
        (M::Inc, OpKind::Memory, _) => Op::Unary { op: UnaryOp::Inc },
        (M::Dec, OpKind::Memory, _) => Op::Unary { op: UnaryOp::Dec },
        (M::Not, OpKind::Memory, _) => Op::Unary { op: UnaryOp::Not },
        (M::Neg, OpKind::Memory, _) => Op::Unary { op: UnaryOp::Neg },
        (M::Xchg, OpKind::Memory, OpKind::Register) => Op::Xchg { reg: insn.op1_register(), add: false },
        (M::Xchg, OpKind::Register, OpKind::Memory) => Op::Xchg { reg: insn.op0_register(), add: false },
        (M::Xadd, OpKind::Memory, OpKind::Register) => Op::Xchg { reg: insn.op1_register(), add: true },
        (M::Bsf | M::Bsr, OpKind::Register, OpKind::Memory) => Op::BitScan { reverse: insn.mnemonic() == M::Bsr, dest: insn.op0_register() },
        (M::Imul, OpKind::Register, OpKind::Memory) => {
            let imm = match insn.op2_kind() {
                k if operands == 3 && is_immediate(k) => Some(insn.immediate(2)),
                _ if operands == 2 => None,
                _ => return None,
            };
            Op::Imul { dest: insn.op0_register(), imm }
        }
        (M::Shld | M::Shrd, OpKind::Memory, OpKind::Register) => {
            let count = match insn.op2_kind() {
                OpKind::Register => Source::Register(insn.op2_register()),
                k if is_immediate(k) => Source::Immediate(insn.immediate(2)),
                _ => return None,
            };
            Op::DoubleShift { left: insn.mnemonic() == M::Shld, fill: insn.op1_register(), count }
        }
        (M::Bt | M::Bts | M::Btr | M::Btc, _, _) if mem0 => {
            let op = match insn.mnemonic() {
                M::Bt => BitOp::Test,
                M::Bts => BitOp::Set,
                M::Btr => BitOp::Reset,
                _ => BitOp::Complement,
            };
            Op::Bit { op, offset: source()? }
        }
        _ => return None,
    })
}

fn string_op(m: Mnemonic) -> Option<StringOp> {
    use Mnemonic as M;
    Some(match m {
        M::Movsb | M::Movsw | M::Movsd | M::Movsq => StringOp::Movs,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => StringOp::Stos,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => StringOp::Lods,
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq => StringOp::Cmps,
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => StringOp::Scas,
        _ => return None,
    })
}

/// The address size of a string operand (None for other operands: SSE's MOVSD and
/// CMPSD share the string instructions' mnemonics).
fn string_addr_size(kind: OpKind) -> Option<usize> {
    match kind {
        OpKind::MemorySegSI | OpKind::MemoryESDI => Some(2),
        OpKind::MemorySegESI | OpKind::MemoryESEDI => Some(4),
        OpKind::MemorySegRSI | OpKind::MemoryESRDI => Some(8),
        _ => None,
    }
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate64
            | OpKind::Immediate8to16 | OpKind::Immediate8to32 | OpKind::Immediate8to64 | OpKind::Immediate32to64
    )
}

/// RFLAGS bits.
pub mod flags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    /// The six status flags arithmetic sets.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// ZF, SF and PF of result `r` of `size` bytes.
fn zsp(r: u64, size: usize) -> u64 {
    let mut f = 0;
    if r & mask(size) == 0 {
        f |= flags::ZF;
    }
    if r >> (size * 8 - 1) & 1 == 1 {
        f |= flags::SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= flags::PF;
    }
    f
}

/// `d op s` on `size` bytes with carry-in `cf`: the result and the six status flags.
pub fn alu(op: AluOp, size: usize, d: u64, s: u64, cf: bool) -> (u64, u64) {
    let m = mask(size);
    let (d, s) = (d & m, s & m);
    let sign = 1u64 << (size * 8 - 1);
    let c = u64::from(cf);
    let (r, carry, overflow) = match op {
        AluOp::Add | AluOp::Adc => {
            let c = if op == AluOp::Adc { c } else { 0 };
            let wide = u128::from(d) + u128::from(s) + u128::from(c);
            let r = wide as u64 & m;
            (r, wide > u128::from(m), (d ^ r) & (s ^ r) & sign != 0)
        }
        AluOp::Sub | AluOp::Sbb | AluOp::Cmp => {
            let c = if op == AluOp::Sbb { c } else { 0 };
            let r = d.wrapping_sub(s).wrapping_sub(c) & m;
            (r, u128::from(d) < u128::from(s) + u128::from(c), (d ^ s) & (d ^ r) & sign != 0)
        }
        AluOp::And | AluOp::Test => (d & s, false, false),
        AluOp::Or => (d | s, false, false),
        AluOp::Xor => (d ^ s, false, false),
    };
    let mut f = zsp(r, size);
    if carry {
        f |= flags::CF;
    }
    if overflow {
        f |= flags::OF;
    }
    if !matches!(op, AluOp::And | AluOp::Test | AluOp::Or | AluOp::Xor) && (d ^ s ^ r) & 0x10 != 0 {
        f |= flags::AF;
    }
    (r, f)
}

/// INC, DEC, NOT, NEG of `d`: the result and the new RFLAGS (INC and DEC keep CF; NOT
/// changes no flag).
pub fn unary(op: UnaryOp, size: usize, d: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let (r, f) = match op {
        UnaryOp::Not => return (!d & m, rflags),
        UnaryOp::Inc => {
            let (r, f) = alu(AluOp::Add, size, d, 1, false);
            (r, (f & !flags::CF) | (rflags & flags::CF))
        }
        UnaryOp::Dec => {
            let (r, f) = alu(AluOp::Sub, size, d, 1, false);
            (r, (f & !flags::CF) | (rflags & flags::CF))
        }
        UnaryOp::Neg => alu(AluOp::Sub, size, 0, d, false),
    };
    (r, (rflags & !flags::STATUS) | f)
}

/// Signed `a * b` on `size` bytes: the truncated product, and CF = OF = the product did
/// not fit (SF, ZF and PF as of the truncated result; AF clear: the four are undefined).
pub fn imul(size: usize, a: u64, b: u64) -> (u64, u64) {
    let sext = |v: u64| loaded_value(v, size, Extend::Sign) as i64;
    let wide = i128::from(sext(a)) * i128::from(sext(b));
    let r = wide as u64 & mask(size);
    let mut f = zsp(r, size);
    if i128::from(sext(r)) != wide {
        f |= flags::CF | flags::OF;
    }
    (r, f)
}

/// SHLD (`left`) or SHRD of `d` by `count` (1 to 63, already masked) with `fill`'s bits
/// shifted in, on `size` bytes: the result and the status flags (CF the last bit shifted
/// out; OF the sign change, defined for a count of 1; AF clear). Counts past the operand's
/// width (16-bit operands) are undefined; this gives the bits of the double-width shift.
pub fn double_shift(left: bool, size: usize, d: u64, fill: u64, count: u64) -> (u64, u64) {
    let bits = size as u32 * 8;
    let m = mask(size);
    let (d, fill) = (u128::from(d & m), u128::from(fill & m));
    let count = (count as u32 % (2 * bits)).max(1);
    let (r, cf) = if left {
        // d:fill shifted left: the result is the top half; CF the last bit out of it.
        let joined = (d << bits) | fill;
        (((joined << count) >> bits) as u64 & m, (joined >> (2 * bits - count)) & 1 == 1)
    } else {
        // fill:d shifted right: the result is the bottom half; CF the last bit out of it.
        let joined = (fill << bits) | d;
        ((joined >> count) as u64 & m, (joined >> (count - 1)) & 1 == 1)
    };
    let mut f = zsp(r, size);
    if cf {
        f |= flags::CF;
    }
    let sign = 1u64 << (bits - 1);
    if (r ^ (d as u64)) & sign != 0 {
        f |= flags::OF;
    }
    (r, f)
}

/// What the emulation reads and writes besides the registers.
pub trait Memory {
    type Error;
    /// Reads guest-physical `gpa`: RAM or a device.
    fn read(&mut self, gpa: u64, data: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes guest-physical `gpa`: RAM or a device.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), Self::Error>;
    /// The guest-physical address of linear address `va` (the guest's paging).
    fn translate(&mut self, va: u64) -> Option<u64>;
}

/// Why an emulation stopped: the memory's own error, or an address the guest's page
/// tables do not map.
#[derive(Debug)]
pub enum ExecError<E> {
    Memory(E),
    Unmapped(u64),
}

impl<E> From<E> for ExecError<E> {
    fn from(e: E) -> Self {
        ExecError::Memory(e)
    }
}

fn load<M: Memory>(m: &mut M, gpa: u64, size: usize) -> Result<u64, M::Error> {
    let mut b = [0u8; 8];
    m.read(gpa, &mut b[..size])?;
    Ok(u64::from_le_bytes(b))
}

fn store<M: Memory>(m: &mut M, gpa: u64, size: usize, value: u64) -> Result<(), M::Error> {
    m.write(gpa, &value.to_le_bytes()[..size])
}

/// Carries out `insn`, whose memory operand the CPU found at guest-physical `gpa`, on
/// `regs` (RIP included: it moves past the instruction unless a repeated string
/// instruction has elements left) and `m`.
pub fn execute<M: Memory>(insn: &MmioInsn, regs: &mut abi::Regs, sregs: &abi::Sregs, gpa: u64, m: &mut M) -> Result<(), ExecError<M::Error>> {
    let size = insn.size;
    let value_of = |regs: &abi::Regs, s: Source| match s {
        Source::Immediate(v) => v & mask(size),
        Source::Register(r) => read_register(regs, r).unwrap_or(0),
    };
    let status = |regs: &mut abi::Regs, f: u64| regs.rflags = (regs.rflags & !flags::STATUS) | f;
    let mut done = true;
    match insn.op {
        Op::Store { source } => {
            let value = match source {
                Some(s) => value_of(regs, s),
                None => sregs.cr0 & 0xffff,
            };
            store(m, gpa, size, value)?;
        }
        Op::Load { dest, extend } => {
            let value = loaded_value(load(m, gpa, size)?, size, extend);
            write_register(regs, dest, value);
        }
        Op::Alu { op, source, dest } => {
            let mem = load(m, gpa, size)?;
            let cf = regs.rflags & flags::CF != 0;
            match dest {
                None => {
                    let (r, f) = alu(op, size, mem, value_of(regs, source), cf);
                    if !matches!(op, AluOp::Cmp | AluOp::Test) {
                        store(m, gpa, size, r)?;
                    }
                    status(regs, f);
                }
                Some(reg) => {
                    let (r, f) = alu(op, size, value_of(regs, source), mem, cf);
                    if !matches!(op, AluOp::Cmp | AluOp::Test) {
                        write_register(regs, reg, r);
                    }
                    status(regs, f);
                }
            }
        }
        Op::Unary { op } => {
            let (r, f) = unary(op, size, load(m, gpa, size)?, regs.rflags);
            store(m, gpa, size, r)?;
            regs.rflags = f;
        }
        Op::Xchg { reg, add } => {
            let mem = load(m, gpa, size)?;
            let r = read_register(regs, reg).unwrap_or(0);
            if add {
                let (sum, f) = alu(AluOp::Add, size, mem, r, false);
                store(m, gpa, size, sum)?;
                status(regs, f);
            } else {
                store(m, gpa, size, r)?;
            }
            write_register(regs, reg, mem);
        }
        Op::Bit { op, offset } => {
            let bit = value_of(regs, offset) % (size as u64 * 8);
            let mem = load(m, gpa, size)?;
            let set = mem >> bit & 1 == 1;
            let r = match op {
                BitOp::Test => mem,
                BitOp::Set => mem | 1 << bit,
                BitOp::Reset => mem & !(1 << bit),
                BitOp::Complement => mem ^ 1 << bit,
            };
            if op != BitOp::Test {
                store(m, gpa, size, r)?;
            }
            regs.rflags = (regs.rflags & !flags::CF) | u64::from(set);
        }
        Op::BitScan { reverse, dest } => {
            let mem = load(m, gpa, size)?;
            // A zero source sets ZF and leaves the destination as it was (AMD documents
            // it; Intel CPUs do it too). The other status flags: as they were.
            if mem == 0 {
                regs.rflags |= flags::ZF;
            } else {
                let index = if reverse { 63 - u64::from(mem.leading_zeros()) } else { u64::from(mem.trailing_zeros()) };
                write_register(regs, dest, index);
                regs.rflags &= !flags::ZF;
            }
        }
        Op::Imul { dest, imm } => {
            let mem = load(m, gpa, size)?;
            let other = match imm {
                Some(v) => v,
                None => read_register(regs, dest).unwrap_or(0),
            };
            let (r, f) = imul(size, mem, other);
            write_register(regs, dest, r);
            status(regs, f);
        }
        Op::DoubleShift { left, fill, count } => {
            // The count is taken modulo 32 (64 for 64-bit operands); 0 changes nothing.
            let count = value_of(regs, count) & if size == 8 { 63 } else { 31 };
            if count != 0 {
                let mem = load(m, gpa, size)?;
                let fill = read_register(regs, fill).unwrap_or(0);
                let (r, f) = double_shift(left, size, mem, fill, count);
                store(m, gpa, size, r)?;
                status(regs, f);
            }
        }
        Op::String { op, rep, addr_size, seg } => done = string(insn, op, rep, addr_size, seg, regs, sregs, m)?,
    }
    if done {
        regs.rip = regs.rip.wrapping_add(insn.len);
    }
    Ok(())
}

/// One element of a string instruction; whether the instruction is done.
#[allow(clippy::too_many_arguments)]
fn string<M: Memory>(insn: &MmioInsn, op: StringOp, rep: Rep, addr_size: usize, seg: Register, regs: &mut abi::Regs, sregs: &abi::Sregs, m: &mut M) -> Result<bool, ExecError<M::Error>> {
    let size = insn.size;
    let (si, di, cx) = match addr_size {
        2 => (Register::SI, Register::DI, Register::CX),
        4 => (Register::ESI, Register::EDI, Register::ECX),
        _ => (Register::RSI, Register::RDI, Register::RCX),
    };
    let reg = |regs: &abi::Regs, r| read_register(regs, r).unwrap_or(0);
    if rep != Rep::None && reg(regs, cx) == 0 {
        return Ok(true);
    }
    let long_mode = sregs.efer & (1 << 10) != 0 && sregs.cs.attrib >> 9 & 1 == 1;
    let base = |s: Register| {
        let seg = match s {
            Register::ES => &sregs.es,
            Register::CS => &sregs.cs,
            Register::SS => &sregs.ss,
            Register::FS => &sregs.fs,
            Register::GS => &sregs.gs,
            _ => &sregs.ds,
        };
        // 64-bit code: only FS and GS have a base.
        if long_mode && !matches!(s, Register::FS | Register::GS) { 0 } else { seg.base }
    };
    let src_va = base(seg).wrapping_add(reg(regs, si));
    let dst_va = base(Register::ES).wrapping_add(reg(regs, di));
    let acc = read_register(regs, accumulator(size)).unwrap_or(0);
    let mut compare = None;
    let (uses_si, uses_di) = match op {
        StringOp::Movs => {
            let (src, dst) = (m_translate(m, src_va)?, m_translate(m, dst_va)?);
            let v = load(m, src, size)?;
            store(m, dst, size, v)?;
            (true, true)
        }
        StringOp::Stos => {
            let dst = m_translate(m, dst_va)?;
            store(m, dst, size, acc)?;
            (false, true)
        }
        StringOp::Lods => {
            let src = m_translate(m, src_va)?;
            let v = load(m, src, size)?;
            write_register(regs, accumulator(size), v);
            (true, false)
        }
        StringOp::Cmps => {
            let (src, dst) = (m_translate(m, src_va)?, m_translate(m, dst_va)?);
            let (a, b) = (load(m, src, size)?, load(m, dst, size)?);
            compare = Some(alu(AluOp::Cmp, size, a, b, false).1);
            (true, true)
        }
        StringOp::Scas => {
            let dst = m_translate(m, dst_va)?;
            let b = load(m, dst, size)?;
            compare = Some(alu(AluOp::Cmp, size, acc, b, false).1);
            (false, true)
        }
    };
    let step = if regs.rflags & flags::DF != 0 { (size as u64).wrapping_neg() } else { size as u64 };
    if uses_si {
        write_register(regs, si, reg(regs, si).wrapping_add(step));
    }
    if uses_di {
        write_register(regs, di, reg(regs, di).wrapping_add(step));
    }
    if let Some(f) = compare {
        regs.rflags = (regs.rflags & !flags::STATUS) | f;
    }
    if rep == Rep::None {
        return Ok(true);
    }
    let left = reg(regs, cx).wrapping_sub(1) & mask(addr_size);
    write_register(regs, cx, left);
    let zf = regs.rflags & flags::ZF != 0;
    let stop = match (op, rep) {
        (StringOp::Cmps | StringOp::Scas, Rep::RepE) => !zf,
        (StringOp::Cmps | StringOp::Scas, Rep::RepNe) => zf,
        _ => false,
    };
    Ok(left == 0 || stop)
}

fn m_translate<M: Memory>(m: &mut M, va: u64) -> Result<u64, ExecError<M::Error>> {
    m.translate(va).ok_or(ExecError::Unmapped(va))
}

/// AL, AX, EAX or RAX.
fn accumulator(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
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
    use std::collections::BTreeMap;

    fn dec(bytes: &[u8]) -> MmioInsn {
        decode(bytes, 64, 0x1000).unwrap()
    }

    /// Guest memory for the tests: bytes by guest-physical address (all ones where never
    /// written, as an absent device reads), identity-mapped except `unmapped`.
    #[derive(Default)]
    struct Mem {
        bytes: BTreeMap<u64, u8>,
        writes: Vec<(u64, Vec<u8>)>,
        unmapped: Option<u64>,
    }
    impl Memory for Mem {
        type Error = ();
        fn read(&mut self, gpa: u64, data: &mut [u8]) -> Result<(), ()> {
            for (i, b) in data.iter_mut().enumerate() {
                *b = *self.bytes.get(&(gpa + i as u64)).unwrap_or(&0xff);
            }
            Ok(())
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), ()> {
            self.writes.push((gpa, data.to_vec()));
            for (i, b) in data.iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
            Ok(())
        }
        fn translate(&mut self, va: u64) -> Option<u64> {
            (Some(va & !0xfff) != self.unmapped).then_some(va)
        }
    }
    impl Mem {
        fn with(gpa: u64, value: u64, size: usize) -> Mem {
            let mut m = Mem::default();
            store(&mut m, gpa, size, value).unwrap();
            m.writes.clear();
            m
        }
        fn get(&mut self, gpa: u64, size: usize) -> u64 {
            load(self, gpa, size).unwrap()
        }
    }

    /// 64-bit code (long mode, CS.L) with flat segments.
    fn sregs64() -> abi::Sregs {
        let mut s = abi::Sregs { efer: 1 << 10 | 1 << 8, cr0: 0x8005_0033, ..Default::default() };
        s.cs.attrib = 1 << 9;
        s
    }

    /// Runs `bytes` (at RIP 0x1000) against memory operand `gpa`.
    fn run(bytes: &[u8], regs: &mut abi::Regs, gpa: u64, m: &mut Mem) {
        regs.rip = 0x1000;
        let insn = dec(bytes);
        execute(&insn, regs, &sregs64(), gpa, m).unwrap();
    }

    #[test]
    fn stores_of_every_width() {
        // mov [rdi], al / ax / eax / rax
        assert_eq!(dec(&[0x88, 0x07]).op, Op::Store { source: Some(Source::Register(Register::AL)) });
        assert_eq!(dec(&[0x66, 0x89, 0x07]).size, 2);
        assert_eq!(dec(&[0x89, 0x07]).size, 4);
        let m = dec(&[0x48, 0x89, 0x07]);
        assert_eq!((m.op, m.size), (Op::Store { source: Some(Source::Register(Register::RAX)) }, 8));
        // mov byte [rdi], 0x41 / mov qword [rdi], -2 (sign-extended imm32)
        assert_eq!(dec(&[0xc6, 0x07, 0x41]).op, Op::Store { source: Some(Source::Immediate(0x41)) });
        let m = dec(&[0x48, 0xc7, 0x07, 0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(m.op, Op::Store { source: Some(Source::Immediate(u64::MAX - 1)) });
        assert_eq!(m.len, 7);
        let mut regs = abi::Regs { rax: 0x1122_3344_5566_7788, ..Default::default() };
        let mut mem = Mem::default();
        run(&[0x66, 0x89, 0x07], &mut regs, 0x5000, &mut mem);
        assert_eq!(mem.writes, vec![(0x5000, vec![0x88, 0x77])]);
        assert_eq!(regs.rip, 0x1003);
    }

    #[test]
    fn loads_and_extensions() {
        // mov ecx, [rsi]; movzx eax, byte [rsi]; movsx rax, word [rsi]; movsxd rdx, [rsi]
        assert_eq!(dec(&[0x8b, 0x0e]).op, Op::Load { dest: Register::ECX, extend: Extend::None });
        let m = dec(&[0x0f, 0xb6, 0x06]);
        assert_eq!((m.op, m.size), (Op::Load { dest: Register::EAX, extend: Extend::Zero }, 1));
        assert_eq!(dec(&[0x48, 0x0f, 0xbf, 0x06]).op, Op::Load { dest: Register::RAX, extend: Extend::Sign });
        assert_eq!(dec(&[0x48, 0x63, 0x16]).op, Op::Load { dest: Register::RDX, extend: Extend::Sign });
        assert_eq!(loaded_value(0x80, 1, Extend::Sign), u64::MAX - 0x7f);
        assert_eq!(loaded_value(0x1_80, 1, Extend::Zero), 0x80);
        // movsx rax, word [rsi] of 0x8001
        let mut regs = abi::Regs::default();
        run(&[0x48, 0x0f, 0xbf, 0x06], &mut regs, 0x5000, &mut Mem::with(0x5000, 0x8001, 2));
        assert_eq!(regs.rax, 0xffff_ffff_ffff_8001);
    }

    #[test]
    fn the_emulator_tests_or_on_mmio() {
        // or [r12+0x1000], eax (the instruction that used to end the run): 41 09 84 24 00 10 00 00
        let bytes = [0x41, 0x09, 0x84, 0x24, 0x00, 0x10, 0x00, 0x00];
        let insn = dec(&bytes);
        assert_eq!(insn.op, Op::Alu { op: AluOp::Or, source: Source::Register(Register::EAX), dest: None });
        let mut regs = abi::Regs { rax: 0x8001, rflags: 0x2 | flags::CF | flags::OF, ..Default::default() };
        let mut mem = Mem::with(0x5000, 0x1234, 4);
        run(&bytes, &mut regs, 0x5000, &mut mem);
        assert_eq!(mem.get(0x5000, 4), 0x9235);
        // 0x9235: not zero, not negative, low byte 0x35 has four ones (PF set); CF, OF clear.
        assert_eq!(regs.rflags, 0x2 | flags::PF);
        assert_eq!(regs.rip, 0x1000 + 8);
    }

    #[test]
    fn simplealu_sequence_of_the_emulator_test() {
        // The memory word goes 0x1234 -> ... -> 0x8400 as x86/emulator.c's test_simplealu
        // expects: or, add, xor, sub, clc; adc, stc; adc, clc; sbb, stc; sbb, and, test
        // (each `op [rdi], esi`, ModRM 0x37).
        let mut mem = Mem::with(0x5000, 0x1234, 4);
        let mut regs = abi::Regs { rflags: 0x2, ..Default::default() };
        let steps: [(u8, u64, bool, u64); 10] = [
            (0x09, 0x8001, false, 0x9235), // or
            (0x01, 2, false, 0x9237),      // add
            (0x31, 0x1111, false, 0x8326), // xor
            (0x29, 0x26, false, 0x8300),   // sub
            (0x11, 0x100, false, 0x8400),  // adc, CF 0
            (0x11, 0x100, true, 0x8501),   // adc, CF 1
            (0x19, 0, false, 0x8501),      // sbb, CF 0
            (0x19, 0, true, 0x8500),       // sbb, CF 1
            (0x21, 0xfe77, false, 0x8400), // and
            (0x85, 0xf000, false, 0x8400), // test: memory unchanged
        ];
        for (opcode, rsi, cf, want) in steps {
            regs.rsi = rsi;
            regs.rflags = (regs.rflags & !flags::CF) | u64::from(cf);
            run(&[opcode, 0x37], &mut regs, 0x5000, &mut mem);
            assert_eq!(mem.get(0x5000, 4), want, "opcode {opcode:#x}");
        }
        // test 0x8400, 0xf000 = 0x8000: not zero, positive in 32 bits, PF of 0x00.
        assert_eq!(regs.rflags & flags::STATUS, flags::PF);
    }

    #[test]
    fn arithmetic_flags() {
        use flags::*;
        // 8-bit add 0x7f + 1 = 0x80: signed overflow, half carry, negative.
        assert_eq!(alu(AluOp::Add, 1, 0x7f, 1, false), (0x80, OF | AF | SF));
        // 8-bit add 0xff + 1 = 0: carry, zero, half carry, even parity.
        assert_eq!(alu(AluOp::Add, 1, 0xff, 1, false), (0, CF | ZF | AF | PF));
        // 32-bit sub 0 - 1 = 0xffffffff: borrow, negative, half borrow, PF of 0xff.
        assert_eq!(alu(AluOp::Sub, 4, 0, 1, false), (0xffff_ffff, CF | SF | AF | PF));
        // 16-bit sub 0x8000 - 1 = 0x7fff: signed overflow, half borrow, PF of 0xff.
        assert_eq!(alu(AluOp::Sub, 2, 0x8000, 1, false), (0x7fff, OF | AF | PF));
        // 64-bit adc: u64::MAX + 0 + CF = 0 with carry.
        assert_eq!(alu(AluOp::Adc, 8, u64::MAX, 0, true), (0, CF | ZF | AF | PF));
        // sbb 5 - 5 - 1 = 0xff (8-bit): borrow.
        assert_eq!(alu(AluOp::Sbb, 1, 5, 5, true), (0xff, CF | SF | AF | PF));
        // cmp 3, 3: equal.
        assert_eq!(alu(AluOp::Cmp, 4, 3, 3, false), (0, ZF | PF));
        // Operands wider than the size are cut to it: 8-bit xor 0x1ff ^ 0x0f = 0xf0.
        assert_eq!(alu(AluOp::Xor, 1, 0x1ff, 0x0f, false), (0xf0, SF | PF));
    }

    #[test]
    fn register_destination_forms() {
        // add ecx, [rsi] (03 0e); cmp ecx, [rsi] (3b 0e) leaves ecx alone
        let mut regs = abi::Regs { rcx: 0xffff_ffff_0000_0005, ..Default::default() };
        let mut mem = Mem::with(0x5000, 7, 4);
        run(&[0x03, 0x0e], &mut regs, 0x5000, &mut mem);
        assert_eq!(regs.rcx, 12, "a 32-bit result clears bits 63:32");
        run(&[0x3b, 0x0e], &mut regs, 0x5000, &mut mem);
        assert_eq!(regs.rcx, 12);
        // 12 - 7 = 5 (0b101: an even number of ones), no borrow, no half borrow (0xc - 7).
        assert_eq!(regs.rflags & flags::STATUS, flags::PF);
        assert_eq!(mem.get(0x5000, 4), 7);
    }

    #[test]
    fn inc_dec_not_neg_as_the_emulator_test_does() {
        let mut mem = Mem::with(0x5000, 0, 8);
        let mut regs = abi::Regs { rflags: 0x2 | flags::CF, ..Default::default() };
        run(&[0xff, 0x07], &mut regs, 0x5000, &mut mem); // incl [rdi]
        assert_eq!(mem.get(0x5000, 8), 1);
        assert_ne!(regs.rflags & flags::CF, 0, "INC keeps CF");
        run(&[0xf0, 0xff, 0x0f], &mut regs, 0x5000, &mut mem); // lock decl [rdi]
        assert_eq!(mem.get(0x5000, 8), 0);
        assert_ne!(regs.rflags & flags::ZF, 0);
        run(&[0xfe, 0x07], &mut regs, 0x5000, &mut mem); // incb [rdi]
        assert_eq!(mem.get(0x5000, 8), 1);
        store(&mut mem, 0x5000, 8, 1234).unwrap();
        run(&[0xf0, 0x48, 0xf7, 0x1f], &mut regs, 0x5000, &mut mem); // lock negq [rdi]
        assert_eq!(mem.get(0x5000, 8), 1234u64.wrapping_neg());
        assert_ne!(regs.rflags & flags::CF, 0, "NEG of a non-zero value sets CF");
        let before = regs.rflags;
        run(&[0xf0, 0x48, 0xf7, 0x17], &mut regs, 0x5000, &mut mem); // lock notq [rdi]
        assert_eq!(mem.get(0x5000, 8), 1233);
        assert_eq!(regs.rflags, before, "NOT changes no flag");
        let mut m = Mem::with(0x5000, 66, 1);
        run(&[0xf0, 0xf6, 0x1f], &mut regs, 0x5000, &mut m); // lock negb [rdi]
        assert_eq!(m.get(0x5000, 1), u64::from(66u8.wrapping_neg()));
        assert_eq!(unary(UnaryOp::Neg, 1, 0x80, 0), (0x80, flags::CF | flags::OF | flags::SF));
    }

    #[test]
    fn xchg_and_xadd_as_the_emulator_test_does() {
        // xchg %al, (%rdi) [86 07]; xchg %ax [66 87 07]; xchg %eax [87 07]; xchg %rax [48 87 07]
        let cases: [(&[u8], u64, u64); 4] = [
            (&[0x86, 0x07], 0xfedcba98765432ef, 0x123456789abcd10),
            (&[0x66, 0x87, 0x07], 0xfedcba987654cdef, 0x123456789ab3210),
            (&[0x87, 0x07], 0x89abcdef, 0x123456776543210),
            (&[0x48, 0x87, 0x07], 0x123456789abcdef, 0xfedcba9876543210),
        ];
        for (bytes, rax, memq) in cases {
            let mut mem = Mem::with(0x5000, 0x123456789abcdef, 8);
            let mut regs = abi::Regs { rax: 0xfedcba9876543210, ..Default::default() };
            run(bytes, &mut regs, 0x5000, &mut mem);
            assert_eq!((regs.rax, mem.get(0x5000, 8)), (rax, memq), "{bytes:02x?}");
        }
        // xadd: the same four widths [0f c0 07], [66 0f c1 07], [0f c1 07], [48 0f c1 07]
        let cases: [(&[u8], u64, u64); 4] = [
            (&[0x0f, 0xc0, 0x07], 0xfedcba98765432ef, 0x123456789abcdff),
            (&[0x66, 0x0f, 0xc1, 0x07], 0xfedcba987654cdef, 0x123456789abffff),
            (&[0x0f, 0xc1, 0x07], 0x89abcdef, 0x1234567ffffffff),
            (&[0x48, 0x0f, 0xc1, 0x07], 0x123456789abcdef, 0xffffffffffffffff),
        ];
        for (bytes, rax, memq) in cases {
            let mut mem = Mem::with(0x5000, 0x123456789abcdef, 8);
            let mut regs = abi::Regs { rax: 0xfedcba9876543210, ..Default::default() };
            run(bytes, &mut regs, 0x5000, &mut mem);
            assert_eq!((regs.rax, mem.get(0x5000, 8)), (rax, memq), "{bytes:02x?}");
        }
    }

    #[test]
    fn bit_tests() {
        // btcl $32, (%rdi) [0f ba 3f 20]: the bit offset wraps to 0.
        let mut mem = Mem::with(0x5000, 0, 4);
        let mut regs = abi::Regs::default();
        run(&[0x0f, 0xba, 0x3f, 0x20], &mut regs, 0x5000, &mut mem);
        assert_eq!(mem.get(0x5000, 4), 1);
        assert_eq!(regs.rflags & flags::CF, 0);
        // btcl %eax, (%rdi) [0f bb 07] with eax = -1: the CPU accessed the dword holding bit
        // 31 of the dword before (the exit's address), bit 31 of it.
        regs.rax = 0xffff_ffff;
        run(&[0x0f, 0xbb, 0x07], &mut regs, 0x5000, &mut mem);
        assert_eq!(mem.get(0x5000, 4), 0x8000_0001);
        // bt $0 sets CF from the bit and writes nothing.
        mem.writes.clear();
        run(&[0x0f, 0xba, 0x27, 0x00], &mut regs, 0x5000, &mut mem);
        assert_eq!(regs.rflags & flags::CF, flags::CF);
        assert!(mem.writes.is_empty());
    }

    #[test]
    fn smsw_stores_the_low_half_of_cr0() {
        // smsw (%rdi) [0f 01 27]: 16 bits
        let mut mem = Mem::with(0x5000, u64::MAX, 8);
        let mut regs = abi::Regs::default();
        run(&[0x0f, 0x01, 0x27], &mut regs, 0x5000, &mut mem);
        assert_eq!(mem.get(0x5000, 8), 0xffff_ffff_ffff_0033);
    }

    #[test]
    fn rep_stos_runs_one_element_per_exit() {
        // rep stosl [f3 ab] of 3 elements, upwards
        let mut mem = Mem::default();
        let mut regs = abi::Regs { rax: 0xaabb_ccdd, rcx: 3, rdi: 0x5000, rflags: 0x2, ..Default::default() };
        run(&[0xf3, 0xab], &mut regs, 0x5000, &mut mem);
        assert_eq!((regs.rcx, regs.rdi, regs.rip), (2, 0x5004, 0x1000), "RIP stays while elements are left");
        regs.rip = 0x1000;
        let insn = dec(&[0xf3, 0xab]);
        execute(&insn, &mut regs, &sregs64(), 0x5004, &mut mem).unwrap();
        execute(&insn, &mut regs, &sregs64(), 0x5008, &mut mem).unwrap();
        assert_eq!((regs.rcx, regs.rdi, regs.rip), (0, 0x500c, 0x1002));
        assert_eq!(mem.get(0x5008, 4), 0xaabb_ccdd);
        // std; stosb: downwards, no REP
        let mut regs = abi::Regs { rax: 0x41, rdi: 0x6000, rflags: 0x2 | flags::DF, ..Default::default() };
        run(&[0xaa], &mut regs, 0x6000, &mut mem);
        assert_eq!((regs.rdi, regs.rip, mem.get(0x6000, 1)), (0x5fff, 0x1001, 0x41));
    }

    #[test]
    fn movs_between_ram_and_mmio_and_lods() {
        // movsq [48 a5]: from RSI to RDI, whichever is MMIO
        let mut mem = Mem::with(0x7000, 0x0102_0304_0506_0708, 8);
        let mut regs = abi::Regs { rsi: 0x7000, rdi: 0x8000, ..Default::default() };
        run(&[0x48, 0xa5], &mut regs, 0x8000, &mut mem);
        assert_eq!(mem.get(0x8000, 8), 0x0102_0304_0506_0708);
        assert_eq!((regs.rsi, regs.rdi), (0x7008, 0x8008));
        // lodsw [66 ad]
        let mut regs = abi::Regs { rax: 0xffff_ffff, rsi: 0x7000, ..Default::default() };
        run(&[0x66, 0xad], &mut regs, 0x7000, &mut mem);
        assert_eq!((regs.rax, regs.rsi), (0xffff_0708, 0x7002));
        // An unmapped side stops the emulation with its address.
        mem.unmapped = Some(0x9000);
        let mut regs = abi::Regs { rsi: 0x7000, rdi: 0x9010, ..Default::default() };
        let insn = dec(&[0x48, 0xa5]);
        assert!(matches!(execute(&insn, &mut regs, &sregs64(), 0x7000, &mut mem), Err(ExecError::Unmapped(0x9010))));
    }

    #[test]
    fn repe_cmps_and_scas_as_the_emulator_test_does() {
        // m1 and m3 hold i for i < 100, then m1 holds i + 1 and m3 holds i: repe cmpsb with
        // RCX = 130 stops after the first difference, at 101 with RCX = 29.
        let mut mem = Mem::default();
        for i in 0..200u64 {
            let v = if i < 100 { i } else { i + 1 };
            store(&mut mem, 0x10000 + i, 1, v).unwrap();
            store(&mut mem, 0x20000 + i, 1, i).unwrap();
        }
        let insn = dec(&[0xf3, 0xa6]);
        assert!(matches!(insn.op, Op::String { op: StringOp::Cmps, rep: Rep::RepE, addr_size: 8, .. }));
        let mut regs = abi::Regs { rsi: 0x10000, rdi: 0x20000, rcx: 130, rip: 0x1000, rflags: 0x2, ..Default::default() };
        while regs.rip == 0x1000 {
            execute(&insn, &mut regs, &sregs64(), 0, &mut mem).unwrap();
        }
        assert_eq!((regs.rcx, regs.rsi, regs.rdi), (29, 0x10000 + 101, 0x20000 + 101));
        // scasb: AL against [rdi]
        let mut mem = Mem::with(0x5000, 0x77665544332211, 8);
        let mut regs = abi::Regs { rax: 0xff11, rdi: 0x5000, ..Default::default() };
        run(&[0xae], &mut regs, 0x5000, &mut mem);
        assert_eq!((regs.rdi, regs.rflags & flags::ZF), (0x5001, flags::ZF));
        let mut regs = abi::Regs { rax: 0x3, rdi: 0x5000, ..Default::default() };
        run(&[0x48, 0xaf], &mut regs, 0x5000, &mut mem); // scasq mismatch
        assert_eq!((regs.rdi, regs.rflags & flags::ZF), (0x5008, 0));
    }

    #[test]
    fn sse_movsd_is_not_a_string_instruction() {
        // movsd [rdi], xmm0 (f2 0f 11 07) shares MOVSD's mnemonic: refused, not a string op.
        let e = decode(&[0xf2, 0x0f, 0x11, 0x07], 64, 0x2000).unwrap_err();
        assert!(matches!(e, InsnError::Unsupported { .. }), "{e}");
    }

    /// BSF and BSR as kvm-unit-tests' emulator test does them: the index of the lowest or
    /// highest set bit; a zero source sets ZF and leaves the destination.
    #[test]
    fn bsf_and_bsr_from_memory() {
        assert_eq!(dec(&[0x66, 0x0f, 0xbc, 0x07]).op, Op::BitScan { reverse: false, dest: Register::AX });
        let mut m = Mem::with(0x5000, 0x4000_0000_0040_0000, 8);
        let mut regs = abi::Regs { rax: 0xffff_ffff_ffff_ffff, rflags: flags::ZF, ..Default::default() };
        run(&[0x66, 0x0f, 0xbc, 0x07], &mut regs, 0x5000, &mut m); // bsf ax, [rdi]: word 0
        assert_eq!((regs.rax, regs.rflags & flags::ZF, regs.rip), (0xffff_ffff_ffff_ffff, flags::ZF, 0x1004), "zero: ax kept, ZF");
        run(&[0x0f, 0xbc, 0x07], &mut regs, 0x5000, &mut m); // bsf eax, [rdi]
        assert_eq!((regs.rax, regs.rflags & flags::ZF), (22, 0));
        run(&[0x48, 0x0f, 0xbd, 0x07], &mut regs, 0x5000, &mut m); // bsr rax, [rdi]
        assert_eq!(regs.rax, 62);
        run(&[0x48, 0x0f, 0xbc, 0x07], &mut regs, 0x5000, &mut m); // bsf rax, [rdi]
        assert_eq!(regs.rax, 22);
    }

    /// IMUL with a memory source, the emulator test's values: the truncated product, the
    /// other bits of a 16-bit destination kept, a 32-bit one zero-extended; CF and OF when
    /// the product does not fit.
    #[test]
    fn imul_from_memory() {
        assert_eq!(dec(&[0x66, 0x6b, 0x07, 0x33]).op, Op::Imul { dest: Register::AX, imm: Some(51) });
        let mut m = Mem::with(0x5000, 51, 8);
        let mut regs = abi::Regs { rax: 0x1234_5678_1234_5678, ..Default::default() };
        run(&[0x66, 0x0f, 0xaf, 0x07], &mut regs, 0x5000, &mut m); // imul ax, [rdi]
        assert_eq!(regs.rax, 0x1234_5678_1234_39e8);
        assert_eq!(regs.rflags & (flags::CF | flags::OF), flags::CF | flags::OF);
        regs.rax = 0x1234_5678_1234_5678;
        run(&[0x0f, 0xaf, 0x07], &mut regs, 0x5000, &mut m); // imul eax, [rdi]
        assert_eq!(regs.rax, 0xa06d_39e8);
        let mut m = Mem::with(0x5000, 0x1234_5678_1234_5678, 8);
        regs.rax = 0x8765_4321_8765_4321;
        run(&[0x66, 0x69, 0x07, 0x37, 0x01], &mut regs, 0x5000, &mut m); // imul ax, [rdi], 311
        assert_eq!(regs.rax, 0x8765_4321_8765_0bc8);
        run(&[0x69, 0x07, 0x37, 0x01, 0x00, 0x00], &mut regs, 0x5000, &mut m); // imul eax, [rdi], 311
        assert_eq!(regs.rax, 0x1d95_0bc8);
        // A product that fits: CF and OF clear. -2 * 3 = -6.
        let mut m = Mem::with(0x5000, (-2i64) as u64, 8);
        regs.rax = 3;
        run(&[0x48, 0x0f, 0xaf, 0x07], &mut regs, 0x5000, &mut m); // imul rax, [rdi]
        assert_eq!((regs.rax as i64, regs.rflags & (flags::CF | flags::OF | flags::SF)), (-6, flags::SF));
    }

    /// SHLD and SHRD on memory, by CL and by an immediate, as the emulator test does them.
    #[test]
    fn shld_and_shrd_on_memory() {
        assert_eq!(dec(&[0x0f, 0xa5, 0x07]).op, Op::DoubleShift { left: true, fill: Register::EAX, count: Source::Register(Register::CL) });
        let mut m = Mem::with(0x5000, 0x1234_5678, 4);
        let mut regs = abi::Regs { rax: 0xaaaa_aaaa, rcx: 3, ..Default::default() };
        run(&[0x0f, 0xa5, 0x07], &mut regs, 0x5000, &mut m); // shld [rdi], eax, cl
        assert_eq!(m.get(0x5000, 4), (0x1234_5678u32 << 3 | 5) as u64);
        assert_eq!(regs.rflags & flags::CF, 0, "the last bit out of 0x12345678 << 3 is 0");
        let mut m = Mem::with(0x5000, 0x1234_5678, 4);
        regs.rax = 0x5555_5555;
        run(&[0x0f, 0xac, 0x07, 0x03], &mut regs, 0x5000, &mut m); // shrd [rdi], eax, 3
        assert_eq!(m.get(0x5000, 4), (0x1234_5678u64 >> 3) | 5 << 29);
        assert_eq!(regs.rflags & flags::CF, 0, "bit 2 of 0x12345678");
        // 64-bit, CF set: shld qword [rdi], rax, 4 with the top nibble 0x9.
        let mut m = Mem::with(0x5000, 0x9000_0000_0000_0001, 8);
        regs.rax = 0xf000_0000_0000_0000;
        run(&[0x48, 0x0f, 0xa4, 0x07, 0x04], &mut regs, 0x5000, &mut m);
        assert_eq!((m.get(0x5000, 8), regs.rflags & flags::CF), (0x0000_0000_0000_001f, flags::CF));
        // A count of 0 (mod 32) changes neither memory nor flags.
        regs.rcx = 32;
        regs.rflags = flags::ZF;
        m.writes.clear();
        run(&[0x0f, 0xa5, 0x07], &mut regs, 0x5000, &mut m);
        assert!(m.writes.is_empty());
        assert_eq!(regs.rflags, flags::ZF);
    }

    #[test]
    fn other_instructions_are_refused_with_their_bytes() {
        // imul dword [rdi] (f7 2f): the one-operand form
        let e = decode(&[0xf7, 0x2f], 64, 0x2000).unwrap_err();
        assert!(matches!(e, InsnError::Unsupported { ref bytes, rip: 0x2000, .. } if bytes == &[0xf7, 0x2f]));
        assert!(e.to_string().contains("imul"));
        // movdqu [rdi], xmm0 (f3 0f 7f 07): 16 bytes
        assert!(decode(&[0xf3, 0x0f, 0x7f, 0x07], 64, 0).is_err());
        // push qword [rdi] (ff 37)
        assert!(decode(&[0xff, 0x37], 64, 0).is_err());
        // mov [rdi], cs (8c 0f) and mov ds, [rdi] (8e 1f): segment registers are not emulated
        assert!(decode(&[0x8c, 0x0f], 64, 0).is_err());
        assert!(decode(&[0x8e, 0x1f], 64, 0).is_err());
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
