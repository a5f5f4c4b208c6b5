//! A machine: guest RAM, one vCPU, the device bus, and the loop that handles the exits the
//! module returns.

use std::io::{self, Write};

use crate::bus::{Bus, Effect};
use crate::insn::{self, Access, Source};
use crate::{boot, layout, mmu, sys};
use yakvm_abi as abi;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HLT (status 0) or a write to the exit port (its value).
    Exit(u8),
    /// A signal interrupted RUN (SIGINT or SIGTERM: its number).
    Interrupted(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Insn(#[from] insn::InsnError),
    #[error("guest image of {size} bytes does not fit below the boot area ({room} bytes with --mem {mem})")]
    TooBig { size: usize, room: u64, mem: u64 },
    #[error("--mem {0}: guest RAM must be a multiple of 4 KiB between 128 KiB and 4 GiB")]
    BadMemSize(u64),
    #[error("--mmio-base {base:#x}: the MMIO window must be 4 KiB aligned, above RAM (which ends at {ram:#x}) and below {max:#x}")]
    BadMmioBase { base: u64, ram: u64, max: u64 },
    #[error("module ABI version {0}, this yakvm speaks {1}")]
    AbiVersion(u32, u32),
    #[error("guest shut down (triple fault) at rip {0:#x}")]
    Shutdown(u64),
    #[error("VMRUN refused the guest state (VMEXIT_INVALID) at rip {0:#x}")]
    FailEntry(u64),
    #[error("unhandled exit {code:#x} at rip {rip:#x} (exit_info_1 {info1:#x}, exit_info_2 {info2:#x})")]
    Unhandled { code: u64, rip: u64, info1: u64, info2: u64 },
    #[error("MMIO at {gpa:#x}: cannot fetch the instruction at rip {rip:#x} (not mapped in guest RAM)")]
    Fetch { gpa: u64, rip: u64 },
    #[error("unknown exit reason {0} from the module")]
    UnknownReason(u32),
}

/// Hypercalls the emulator answers (VMMCALL with the number in RAX).
pub mod hypercall {
    /// Returns the sum of the four arguments (a test of the path).
    pub const ADD: u64 = 1;
    /// What unknown hypercalls return.
    pub const UNKNOWN: u64 = u64::MAX;
}

pub struct Config {
    pub mem: u64,
    pub mmio_base: Option<u64>,
}

pub struct Machine<W: Write> {
    _vm: sys::Vm,
    mem: sys::GuestMemory,
    vcpu: sys::Vcpu,
    pub bus: Bus<W>,
}

impl<W: Write> Machine<W> {
    /// Builds a machine running `image` (loaded at 0, entered in 64-bit mode).
    pub fn new(dev: &sys::Device, config: &Config, image: &[u8], out: W) -> Result<Self, Error> {
        let ram = config.mem;
        if ram % 4096 != 0 || !(layout::MIN_RAM..=layout::MAX_RAM).contains(&ram) {
            return Err(Error::BadMemSize(ram));
        }
        let mmio_base = config.mmio_base.unwrap_or_else(|| layout::default_mmio_base(ram));
        let mmio_top = mmio_base.checked_add(crate::bus::MMIO_PORTS * crate::bus::MMIO_STRIDE);
        if mmio_base % 4096 != 0 || mmio_base < ram || mmio_top.is_none_or(|t| t > layout::MAX_IDENTITY_MAP) {
            return Err(Error::BadMmioBase { base: mmio_base, ram, max: layout::MAX_IDENTITY_MAP });
        }
        let room = layout::boot_area(ram);
        if image.len() as u64 > room {
            return Err(Error::TooBig { size: image.len(), room, mem: ram });
        }
        let version = dev.api_version()?;
        if version != abi::API_VERSION {
            return Err(Error::AbiVersion(version, abi::API_VERSION));
        }
        let vm = dev.create_vm()?;
        let mem = sys::GuestMemory::new(ram as usize)?;
        vm.add_memory(0, 0, &mem)?;
        mem.write(0, image).expect("checked to fit");
        let (regs, sregs) = boot::long_mode(&mem, 0, mmio_top.unwrap_or(0)).expect("checked to fit");
        let vcpu = vm.create_vcpu()?;
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(&regs)?;
        Ok(Self { _vm: vm, mem, vcpu, bus: Bus::new(out, mmio_base) })
    }

    /// Runs until the guest ends the run, a signal arrives, or something fails.
    pub fn run(&mut self) -> Result<Outcome, Error> {
        loop {
            let ran = self.vcpu.run()?;
            if let Some(signal) = sys::stop_signal() {
                return Ok(Outcome::Interrupted(signal));
            }
            if !ran {
                continue; // another signal: run on
            }
            let run = *self.vcpu.run_page();
            let effect = match run.exit_reason {
                abi::exit::IO => self.port_io(&run)?,
                abi::exit::MMIO => self.mmio(&run.mmio)?,
                abi::exit::HYPERCALL => {
                    let h = run.hypercall;
                    self.vcpu.run_page().hypercall.ret = match h.nr {
                        hypercall::ADD => h.args.iter().fold(0u64, |a, &b| a.wrapping_add(b)),
                        _ => hypercall::UNKNOWN,
                    };
                    Effect::Continue
                }
                abi::exit::HLT => Effect::Exit(0),
                abi::exit::SHUTDOWN => return Err(Error::Shutdown(run.hw.rip)),
                abi::exit::FAIL_ENTRY => return Err(Error::FailEntry(run.hw.rip)),
                abi::exit::UNKNOWN => {
                    let hw = run.hw;
                    return Err(Error::Unhandled { code: hw.exit_code, rip: hw.rip, info1: hw.exit_info_1, info2: hw.exit_info_2 });
                }
                other => return Err(Error::UnknownReason(other)),
            };
            if let Effect::Exit(status) = effect {
                return Ok(Outcome::Exit(status));
            }
        }
    }

    fn port_io(&mut self, run: &abi::Run) -> Result<Effect, Error> {
        let io = run.io;
        let len = io.size as usize * io.count as usize;
        if io.direction == abi::IO_OUT {
            let mut effect = Effect::Continue;
            for chunk in run.data[..len].chunks(io.size as usize) {
                effect = self.bus.write(io.port, chunk)?;
                if effect != Effect::Continue {
                    break;
                }
            }
            Ok(effect)
        } else {
            let data = &mut self.vcpu.run_page().data;
            for chunk in data[..len].chunks_mut(io.size as usize) {
                self.bus.read(io.port, chunk);
            }
            Ok(Effect::Continue)
        }
    }

    /// Emulates the instruction that touched guest-physical `m.gpa` outside RAM.
    fn mmio(&mut self, m: &abi::MmioExit) -> Result<Effect, Error> {
        let mut regs = self.vcpu.regs()?;
        let sregs = self.vcpu.sregs()?;
        let mut bytes = [0u8; 15];
        let n = if m.insn_len > 0 {
            let n = m.insn_len as usize;
            bytes[..n].copy_from_slice(&m.insn_bytes[..n]);
            n
        } else {
            mmu::read_virt(&self.mem, &sregs, sregs.cs.base.wrapping_add(regs.rip), &mut bytes)
        };
        if n == 0 {
            return Err(Error::Fetch { gpa: m.gpa, rip: regs.rip });
        }
        let bitness = match (sregs.cs.attrib >> 9 & 1, sregs.cs.attrib >> 10 & 1) {
            (1, _) => 64,
            (_, 1) => 32,
            _ => 16,
        };
        let insn = insn::decode(&bytes[..n], bitness, regs.rip)?;
        let mut effect = Effect::Continue;
        match insn.access {
            Access::Write { size, source } => {
                let value = match source {
                    Source::Immediate(v) => v,
                    Source::Register(r) => insn::read_register(&regs, r).unwrap_or(0),
                };
                effect = self.bus.mmio_write(m.gpa, &value.to_le_bytes()[..size])?;
            }
            Access::Read { size, dest, extend } => {
                let mut data = [0u8; 8];
                self.bus.mmio_read(m.gpa, &mut data[..size]);
                let value = insn::loaded_value(u64::from_le_bytes(data), size, extend);
                insn::write_register(&mut regs, dest, value);
            }
        }
        regs.rip += insn.len;
        self.vcpu.set_regs(&regs)?;
        Ok(effect)
    }

    pub fn stats(&self) -> io::Result<abi::ExitStats> {
        self.vcpu.stats()
    }
}
