//! The module's MOV decoder (abi/src/decode.rs) checked against iced-x86: every encoding
//! it accepts must agree with iced-x86 on length, access size, direction, register and
//! immediate; every MOV/MOVZX/MOVSX with a memory operand and only the prefixes it knows
//! must be accepted; and the register rules of `load_result` follow the architecture.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use yakvm_abi::decode::{decode, Extend, Mode, Mov, Op, Reg};

const MODES: [(Mode, u32); 3] = [(Mode::Bits16, 16), (Mode::Bits32, 32), (Mode::Bits64, 64)];

/// A small deterministic generator (xorshift64*): the cases are the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next() >> 33) as usize % from.len()]
    }
}

fn iced(bytes: &[u8], bitness: u32) -> Instruction {
    Decoder::with_ip(bitness, bytes, 0x1000, DecoderOptions::NONE).decode()
}

fn reg_of(r: Register) -> Reg {
    let high = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
    Reg { index: (r.full_register() as u32 - Register::RAX as u32) as u8, high_byte: high }
}

/// Checks one encoding; returns whether our decoder accepted it.
fn check(bytes: &[u8], mode: Mode, bitness: u32) -> bool {
    let ours = decode(bytes, mode);
    let theirs = iced(bytes, bitness);
    let Some(mov) = ours else {
        // Must we have accepted it? A MOV-family instruction with a memory operand, made of
        // prefixes we know (no LOCK, REP, REPNE, which iced may ignore or reject).
        let known_prefixes = bytes[..theirs.len().min(bytes.len())]
            .iter()
            .take_while(|b| matches!(b, 0x66 | 0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65) || (bitness == 64 && (0x40..=0x4f).contains(*b)))
            .count();
        let opcode = bytes.get(known_prefixes).copied();
        let ours_opcode = matches!(opcode, Some(0x88..=0x8b | 0xa0..=0xa3 | 0xc6 | 0xc7))
            || (opcode == Some(0x0f) && matches!(bytes.get(known_prefixes + 1), Some(0xb6 | 0xb7 | 0xbe | 0xbf)));
        let memory = (0..theirs.op_count()).any(|i| theirs.op_kind(i) == OpKind::Memory);
        assert!(
            theirs.is_invalid()
                || !ours_opcode
                || !memory
                || !matches!(theirs.mnemonic(), Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx),
            "{bitness}-bit {bytes:02x?}: iced decodes {theirs} ({:?}), we refused it",
            theirs.code()
        );
        return false;
    };
    let ctx = || format!("{bitness}-bit {bytes:02x?}: ours {mov:?}, iced {theirs} ({:?})", theirs.code());
    assert!(!theirs.is_invalid(), "{}", ctx());
    assert_eq!(theirs.len(), usize::from(mov.len), "length: {}", ctx());
    assert!(!theirs.has_lock_prefix() && !theirs.has_rep_prefix() && !theirs.has_repne_prefix(), "{}", ctx());
    assert_eq!(theirs.memory_size().size(), usize::from(mov.size), "size: {}", ctx());
    match mov.op {
        Op::Load { reg, reg_size, extend } => {
            let mnemonic = match extend {
                Extend::None => Mnemonic::Mov,
                Extend::Zero => Mnemonic::Movzx,
                Extend::Sign => Mnemonic::Movsx,
            };
            assert_eq!(theirs.mnemonic(), mnemonic, "{}", ctx());
            assert_eq!(theirs.op_count(), 2, "{}", ctx());
            assert_eq!(theirs.op0_kind(), OpKind::Register, "{}", ctx());
            assert_eq!(theirs.op1_kind(), OpKind::Memory, "{}", ctx());
            assert_eq!(reg_of(theirs.op0_register()), reg, "register: {}", ctx());
            assert_eq!(theirs.op0_register().size(), usize::from(reg_size), "register size: {}", ctx());
        }
        Op::StoreReg { reg } => {
            assert_eq!(theirs.mnemonic(), Mnemonic::Mov, "{}", ctx());
            assert_eq!(theirs.op0_kind(), OpKind::Memory, "{}", ctx());
            assert_eq!(theirs.op1_kind(), OpKind::Register, "{}", ctx());
            assert_eq!(reg_of(theirs.op1_register()), reg, "register: {}", ctx());
            assert_eq!(theirs.op1_register().size(), usize::from(mov.size), "register size: {}", ctx());
        }
        Op::StoreImm { value } => {
            assert_eq!(theirs.mnemonic(), Mnemonic::Mov, "{}", ctx());
            assert_eq!(theirs.op0_kind(), OpKind::Memory, "{}", ctx());
            let mask = if mov.size == 8 { u64::MAX } else { (1u64 << (8 * mov.size)) - 1 };
            assert_eq!(theirs.immediate(1) & mask, value, "immediate: {}", ctx());
            assert_eq!(mov.store_value(0), Some(value), "{}", ctx());
        }
    }
    assert_eq!(mov.is_write(), theirs.op0_kind() == OpKind::Memory, "direction: {}", ctx());
    // One byte short is never accepted; more bytes after the instruction change nothing.
    assert_eq!(decode(&bytes[..usize::from(mov.len) - 1], mode), None, "truncated: {}", ctx());
    true
}

const OPCODES: [&[u8]; 14] = [
    &[0x88], &[0x89], &[0x8a], &[0x8b], &[0xc6], &[0xc7], &[0xa0], &[0xa1], &[0xa2], &[0xa3],
    &[0x0f, 0xb6], &[0x0f, 0xb7], &[0x0f, 0xbe], &[0x0f, 0xbf],
];

fn encoding(prefixes: &[u8], opcode: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut v = prefixes.to_vec();
    v.extend_from_slice(opcode);
    v.extend_from_slice(rest);
    v
}

#[test]
fn every_modrm_and_sib_with_every_opcode_agrees_with_iced() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut accepted = 0;
    for (mode, bitness) in MODES {
        let mut prefix_sets: Vec<Vec<u8>> = vec![vec![], vec![0x66], vec![0x67], vec![0x66, 0x67]];
        if mode == Mode::Bits64 {
            prefix_sets.extend([vec![0x48], vec![0x4f], vec![0x40], vec![0x66, 0x48], vec![0x44], vec![0x41], vec![0x42]]);
        }
        for prefixes in &prefix_sets {
            for opcode in OPCODES {
                for modrm in 0..=255u8 {
                    // Every SIB for the forms that have one; a random tail for the rest.
                    let sibs: Vec<u8> = if modrm & 7 == 4 && modrm >> 6 != 3 { (0..=255).collect() } else { vec![rng.byte()] };
                    for sib in sibs {
                        let mut rest = vec![modrm, sib];
                        rest.extend((0..12).map(|_| rng.byte()));
                        if check(&encoding(prefixes, opcode, &rest), mode, bitness) {
                            accepted += 1;
                        }
                    }
                }
            }
        }
    }
    // Not a test that passes by refusing everything.
    assert!(accepted > 500_000, "only {accepted} accepted");
}

#[test]
fn random_prefixes_and_bytes_agree_with_iced() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let legacy = [0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0, 0xf2, 0xf3];
    let mut accepted = 0;
    for _ in 0..200_000 {
        let (mode, bitness) = rng.pick(&MODES);
        let mut bytes = Vec::new();
        for _ in 0..rng.next() % 6 {
            let p = if mode == Mode::Bits64 && rng.next() % 3 == 0 { 0x40 | (rng.byte() & 15) } else { rng.pick(&legacy) };
            bytes.push(p);
        }
        if rng.next() % 4 != 0 {
            bytes.extend_from_slice(rng.pick(&OPCODES));
        }
        while bytes.len() < 20 {
            bytes.push(rng.byte());
        }
        // Sometimes fewer bytes than the instruction needs (a fetch cut by a page).
        let len = if rng.next() % 8 == 0 { (rng.next() % 16) as usize } else { 15 };
        if check(&bytes[..len], mode, bitness) {
            accepted += 1;
        }
    }
    assert!(accepted > 10_000, "only {accepted} accepted");
}

#[test]
fn fifteen_bytes_is_the_limit() {
    // 14 prefixes + 89 00 is 16 bytes: refused, as by the CPU (#GP) and iced.
    let mut long = vec![0x3e; 14];
    long.extend([0x89, 0x00]);
    assert_eq!(decode(&long, Mode::Bits32), None);
    assert!(iced(&long, 32).is_invalid());
    let ok = &long[1..];
    assert_eq!(decode(ok, Mode::Bits32).map(|m| m.len), Some(15));
}

#[test]
fn linux_accessors_decode() {
    // readl: mov eax,[rdi]; writel: mov [rdi],esi; writew (virtio notify): mov [rdx],ax;
    // movl $imm,(%rip+disp); readb into AH; writeq with r9.
    let cases: [(&[u8], Mode, Mov); 6] = [
        (&[0x8b, 0x07], Mode::Bits64, Mov { len: 2, size: 4, op: Op::Load { reg: Reg { index: 0, high_byte: false }, reg_size: 4, extend: Extend::None } }),
        (&[0x89, 0x37], Mode::Bits64, Mov { len: 2, size: 4, op: Op::StoreReg { reg: Reg { index: 6, high_byte: false } } }),
        (&[0x66, 0x89, 0x02], Mode::Bits64, Mov { len: 3, size: 2, op: Op::StoreReg { reg: Reg { index: 0, high_byte: false } } }),
        (&[0xc7, 0x05, 1, 0, 0, 0, 0x78, 0x56, 0x34, 0x12], Mode::Bits64, Mov { len: 10, size: 4, op: Op::StoreImm { value: 0x1234_5678 } }),
        (&[0x8a, 0x20], Mode::Bits32, Mov { len: 2, size: 1, op: Op::Load { reg: Reg { index: 0, high_byte: true }, reg_size: 1, extend: Extend::None } }),
        (&[0x4c, 0x89, 0x08], Mode::Bits64, Mov { len: 3, size: 8, op: Op::StoreReg { reg: Reg { index: 9, high_byte: false } } }),
    ];
    for (bytes, mode, want) in cases {
        assert_eq!(decode(bytes, mode), Some(want), "{bytes:02x?}");
    }
}

#[test]
fn loads_write_their_register_as_the_cpu_does() {
    let old = 0x1111_2222_3333_4444;
    let d = |bytes: &[u8]| decode(bytes, Mode::Bits64).unwrap();
    // mov eax,[rdi]: zero-extends.
    assert_eq!(d(&[0x8b, 0x07]).load_result(old, 0xdead_beef), Some(0xdead_beef));
    // mov ax,[rdi]: merges 16 bits.
    assert_eq!(d(&[0x66, 0x8b, 0x07]).load_result(old, 0xbeef), Some(0x1111_2222_3333_beef));
    // mov al,[rdi] / mov ah,[rdi] (no REX): merge their byte.
    assert_eq!(d(&[0x8a, 0x07]).load_result(old, 0xef), Some(0x1111_2222_3333_44ef));
    assert_eq!(d(&[0x8a, 0x27]).load_result(old, 0xef), Some(0x1111_2222_3333_ef44));
    // mov rax,[rdi]: all of it.
    assert_eq!(d(&[0x48, 0x8b, 0x07]).load_result(old, u64::MAX), Some(u64::MAX));
    // movzx eax, byte [rdi]; movsx eax, word [rdi]; movsx rax, byte [rdi].
    assert_eq!(d(&[0x0f, 0xb6, 0x07]).load_result(old, 0x80), Some(0x80));
    assert_eq!(d(&[0x0f, 0xbf, 0x07]).load_result(old, 0x8000), Some(0xffff_8000));
    assert_eq!(d(&[0x48, 0x0f, 0xbe, 0x07]).load_result(old, 0x80), Some(0xffff_ffff_ffff_ff80));
    // movzx ax, byte [rdi]: a 16-bit destination merges.
    assert_eq!(d(&[0x66, 0x0f, 0xb6, 0x07]).load_result(old, 0x80), Some(0x1111_2222_3333_0080));
    // Stores: mov [rdi],ah takes bits 15:8; mov qword [rdi],-1 sign-extends its imm32.
    assert_eq!(d(&[0x88, 0x27]).store_value(0xabcd), Some(0xab));
    assert_eq!(d(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff]).store_value(0), Some(u64::MAX));
}
