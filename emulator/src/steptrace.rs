//! `--step-trace`: one line per instruction the guest executes, for studying what it does
//! between exits. The module single-steps the guest (`SET_GUEST_DEBUG`); before each
//! `RUN` the instruction at RIP is fetched (through the guest's page tables) and decoded
//! with iced-x86; the exits it causes on its way are added to its line, which is written
//! when the step's DEBUG exit comes.
//!
//! ```text
//! 0008:0000000000001004  66 ba 10 00     mov dx,10h
//! 0008:0000000000001008  ee              out dx,al       ; io out port=0x10 size=1 count=1 data=48
//! ```

use std::io::{self, Write};

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

use crate::hypervisor::Vcpu;
use crate::{mmu, sys};
use yakvm_abi as abi;

/// EVENTINJ's type field (`DebugExit::event`).
const EVENT_TYPE_MASK: u64 = 7 << 8;
const EVENT_TYPE_INTR: u64 = 0;
const EVENT_TYPE_EXCEPTION: u64 = 3 << 8;

/// The code size of the guest's current mode: 64 (long mode, CS.L), 32 (CS.D) or 16.
fn bitness(sregs: &abi::Sregs) -> u32 {
    match (sregs.efer >> 10 & 1, sregs.cs.attrib >> 9 & 1, sregs.cs.attrib >> 10 & 1) {
        (1, 1, _) => 64,
        (_, _, 1) => 32,
        _ => 16,
    }
}

/// The `count` instructions at CS:RIP, decoded in the guest's current mode (gdb's
/// `monitor disas`: gdb itself decodes as 64-bit code), one line each.
pub fn disassemble(vcpu: &dyn Vcpu, mem: &sys::GuestMemory, count: usize) -> io::Result<Vec<String>> {
    let (regs, sregs) = (vcpu.regs()?, vcpu.sregs()?);
    let mut bytes = vec![0u8; 15 * count];
    let n = mmu::read_virt(mem, &sregs, sregs.cs.base.wrapping_add(regs.rip), &mut bytes);
    let mut decoder = Decoder::with_ip(bitness(&sregs), &bytes[..n], regs.rip, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut lines = Vec::new();
    while lines.len() < count && decoder.can_decode() {
        let insn = decoder.decode();
        let mut text = String::new();
        formatter.format(&insn, &mut text);
        lines.push(format!("{:04x}:{:016x}  {text}", sregs.cs.selector, insn.ip()));
    }
    Ok(lines)
}

/// The instruction being stepped.
struct Current {
    cs: u16,
    rip: u64,
    bytes: Vec<u8>,
    text: String,
    /// The exits it caused so far.
    exits: Vec<String>,
}

pub struct StepTrace {
    out: Box<dyn Write + Send>,
    current: Option<Current>,
    formatter: IntelFormatter,
    /// Lines written.
    pub steps: u64,
}

impl StepTrace {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        let mut formatter = IntelFormatter::new();
        formatter.options_mut().set_space_after_operand_separator(false);
        Self { out, current: None, formatter, steps: 0 }
    }

    /// The module's controls for a step-traced guest: every instruction, interrupts
    /// delivered (each delivery is a line of its own).
    pub const CONTROL: u32 = abi::guest_debug::ENABLE | abi::guest_debug::SINGLESTEP;

    /// Before `RUN`: notes the instruction at RIP, unless one is still in progress (its
    /// exit is being completed).
    pub fn before_run(&mut self, vcpu: &dyn Vcpu, mem: &sys::GuestMemory) -> io::Result<()> {
        if self.current.is_some() {
            return Ok(());
        }
        let (regs, sregs) = (vcpu.regs()?, vcpu.sregs()?);
        let mut bytes = [0u8; 15];
        let n = mmu::read_virt(mem, &sregs, sregs.cs.base.wrapping_add(regs.rip), &mut bytes);
        let mut decoder = Decoder::with_ip(bitness(&sregs), &bytes[..n], regs.rip, DecoderOptions::NONE);
        let insn = decoder.decode();
        let (len, text) = if insn.is_invalid() {
            (n.min(1), "(undecodable)".to_string())
        } else {
            let mut text = String::new();
            self.formatter.format(&insn, &mut text);
            (insn.len(), text)
        };
        self.current = Some(Current { cs: sregs.cs.selector, rip: regs.rip, bytes: bytes[..len].to_vec(), text, exits: Vec::new() });
        Ok(())
    }

    /// After `RUN` returned with an exit: a DEBUG exit (`debug`) ends the step and writes
    /// its line; any other exit (`what` describes it) belongs to the instruction in
    /// progress.
    pub fn after_exit(&mut self, debug: Option<abi::DebugExit>, what: String) -> io::Result<()> {
        let Some(debug) = debug else {
            if let Some(c) = self.current.as_mut() {
                c.exits.push(what);
            }
            return Ok(());
        };
        let event = debug.event;
        if event != 0 && event & EVENT_TYPE_MASK == EVENT_TYPE_INTR {
            // An external interrupt was delivered before the instruction ran: a line of
            // its own; the instruction is fetched again from the handler.
            self.current = None;
            self.steps += 1;
            return writeln!(self.out, "{:<40}; interrupt {:#x} delivered", "", event & 0xff);
        }
        if let Some(mut c) = self.current.take() {
            if event != 0 {
                let kind = if event & EVENT_TYPE_MASK == EVENT_TYPE_EXCEPTION { "exception" } else { "int" };
                c.exits.push(format!("{kind} {:#x} delivered", event & 0xff));
            }
            self.write(&c)?;
        }
        Ok(())
    }

    /// The run ended: the instruction in progress (HLT, the exit port) gets its line.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(c) = self.current.take() {
            self.write(&c)?;
        }
        self.out.flush()
    }

    fn write(&mut self, c: &Current) -> io::Result<()> {
        self.steps += 1;
        let bytes: Vec<String> = c.bytes.iter().map(|b| format!("{b:02x}")).collect();
        let line = format!("{:04x}:{:016x}  {:<24} {}", c.cs, c.rip, bytes.join(" "), c.text);
        if c.exits.is_empty() {
            writeln!(self.out, "{line}")
        } else {
            writeln!(self.out, "{line:<72}; {}", c.exits.join("; "))
        }
    }
}
