//! `yakvm`: runs a guest program under the yakvm kernel module.
//!
//! It loads a flat binary into guest RAM, enters it in 64-bit long mode, and handles the
//! exits the module returns: port 0x10 is the serial port (bytes go to stdout), an OUT to
//! port 0xf4 ends the run with that exit status, HLT ends it with status 0.

mod boot;
mod layout;
mod sys;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use yakvm_abi as abi;

#[derive(Parser)]
#[command(name = "yakvm", version, about = "Run guest programs under the yakvm AMD-V hypervisor")]
struct Cli {
    /// The yakvm device.
    #[arg(long, default_value = "/dev/yakvm", global = true)]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest: a flat binary loaded at address 0 and entered in 64-bit mode.
    Run {
        /// The guest program (flat binary).
        guest: PathBuf,
        /// Guest RAM size, in bytes or with a K, M or G suffix.
        #[arg(long, default_value = "16M", value_parser = parse_size)]
        mem: u64,
    },
    /// Print the module's ABI version.
    Info,
}

/// Serial port: an OUT writes its bytes to the output.
const SERIAL_PORT: u16 = 0x10;
/// Test convention: an OUT of V ends the run with exit status V & 0xff.
const EXIT_PORT: u16 = 0xf4;

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], layout::KIB),
        Some(b'M' | b'm') => (&s[..s.len() - 1], layout::MIB),
        Some(b'G' | b'g') => (&s[..s.len() - 1], layout::GIB),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size (examples: 2M, 65536)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

/// How a run ended.
enum Outcome {
    /// The guest halted or wrote to the exit port: the process exit status.
    Exit(u8),
    /// Interrupted by a signal.
    Interrupted,
}

fn run_guest(device: &str, guest: &PathBuf, mem_size: u64) -> Result<Outcome, String> {
    if mem_size % 4096 != 0 || !(layout::MIN_RAM..=layout::MAX_RAM).contains(&mem_size) {
        return Err(format!(
            "--mem {mem_size}: guest RAM must be a multiple of 4 KiB between {} KiB and {} GiB",
            layout::MIN_RAM / layout::KIB,
            layout::MAX_RAM / layout::GIB
        ));
    }
    let image = std::fs::read(guest).map_err(|e| format!("cannot read guest {}: {e}", guest.display()))?;
    let room = layout::boot_area(mem_size);
    if image.len() as u64 > room {
        return Err(format!(
            "guest {} is {} bytes; it does not fit below the boot area ({} bytes with --mem {})",
            guest.display(), image.len(), room, mem_size
        ));
    }

    let dev = sys::Device::open(device).map_err(|e| e.to_string())?;
    let version = dev.api_version().map_err(|e| e.to_string())?;
    if version != abi::API_VERSION {
        return Err(format!("module ABI version {version}, this yakvm speaks {}", abi::API_VERSION));
    }
    let vm = dev.create_vm().map_err(|e| e.to_string())?;
    let mem = sys::GuestMemory::new(mem_size as usize).map_err(|e| e.to_string())?;
    vm.add_memory(0, 0, &mem).map_err(|e| e.to_string())?;
    mem.write(0, &image).ok_or("guest image does not fit")?;
    let (regs, sregs) = boot::long_mode(&mem, 0).ok_or("guest RAM too small for the boot area")?;

    let mut vcpu = vm.create_vcpu().map_err(|e| e.to_string())?;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    vcpu.set_regs(&regs).map_err(|e| e.to_string())?;

    let stdout = io::stdout();
    let mut out = io::LineWriter::new(stdout.lock());
    let result = exit_loop(&mut vcpu, &mut out);
    out.flush().map_err(|e| format!("writing the guest's output: {e}"))?;
    result
}

fn exit_loop(vcpu: &mut sys::Vcpu, out: &mut impl Write) -> Result<Outcome, String> {
    loop {
        if !vcpu.run().map_err(|e| e.to_string())? {
            return Ok(Outcome::Interrupted);
        }
        let run = vcpu.run_page();
        match run.exit_reason {
            abi::exit::IO => {
                let io = run.io;
                let data = &run.data[..io.size as usize];
                match (io.port, io.direction) {
                    (SERIAL_PORT, abi::IO_OUT) => {
                        out.write_all(data).map_err(|e| format!("writing the guest's output: {e}"))?
                    }
                    (EXIT_PORT, abi::IO_OUT) => return Ok(Outcome::Exit(data[0])),
                    (_, abi::IO_IN) => {
                        // Nothing is behind other ports: reads return all ones.
                        run.data[..io.size as usize].fill(0xff);
                    }
                    _ => {} // Writes to other ports are ignored.
                }
            }
            abi::exit::HLT => return Ok(Outcome::Exit(0)),
            abi::exit::SHUTDOWN => {
                return Err(format!("guest shut down (triple fault) at rip {:#x}", run.hw.rip))
            }
            abi::exit::FAIL_ENTRY => {
                return Err(format!(
                    "VMRUN refused the guest state (VMEXIT_INVALID), rip {:#x}",
                    run.hw.rip
                ))
            }
            abi::exit::UNKNOWN => {
                let hw = run.hw;
                return Err(format!(
                    "unhandled exit {:#x} at rip {:#x} (exit_info_1 {:#x}, exit_info_2 {:#x})",
                    hw.exit_code, hw.rip, hw.exit_info_1, hw.exit_info_2
                ));
            }
            other => return Err(format!("unknown exit reason {other} from the module")),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { guest, mem } => match run_guest(&cli.device, &guest, mem) {
            Ok(Outcome::Exit(status)) => ExitCode::from(status),
            Ok(Outcome::Interrupted) => {
                eprintln!("yakvm: interrupted");
                ExitCode::from(130)
            }
            Err(msg) => {
                eprintln!("yakvm: error: {msg}");
                ExitCode::FAILURE
            }
        },
        Command::Info => match sys::Device::open(&cli.device).and_then(|d| d.api_version()) {
            Ok(v) => {
                println!("yakvm module ABI version {v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("yakvm: error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("2M"), Ok(2 * layout::MIB));
        assert_eq!(parse_size("64k"), Ok(64 * layout::KIB));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn ioctl_numbers_are_linux_encodings() {
        // _IO('Y', 0x01) and _IOW('Y', 0x10, 32 bytes), as the C macros compute them.
        assert_eq!(abi::CREATE_VM, 0x5901);
        assert_eq!(abi::SET_MEMORY_REGION, 0x4020_5910);
        assert_eq!(abi::GET_REGS, 0x8090_5921);
    }

    #[test]
    fn long_mode_boot_area_maps_ram_and_sits_at_the_top() {
        let mem = sys::GuestMemory::new(2 * layout::MIB as usize).unwrap();
        let (regs, sregs) = boot::long_mode(&mem, 0x1000).unwrap();
        let base = layout::boot_area(2 * layout::MIB);
        assert_eq!(sregs.cr3, base);
        assert_eq!(regs.rip, 0x1000);
        assert_eq!(regs.rsp % 16, 0);
        assert!(regs.rsp <= base);
        // PML4[0] -> PDPT, PDPT[0] -> first PD, PD[1] maps 2 MiB..4 MiB as a large page.
        let mut e = [0u8; 8];
        mem.read(base, &mut e).unwrap();
        assert_eq!(u64::from_le_bytes(e) & !0xfff, base + layout::PDPT_OFFSET);
        mem.read(base + layout::PD_OFFSET + 8, &mut e).unwrap();
        assert_eq!(u64::from_le_bytes(e), 2 * layout::MIB | 0x83);
    }

    #[test]
    fn guest_memory_rejects_out_of_range_copies() {
        let mem = sys::GuestMemory::new(4096).unwrap();
        assert!(mem.write(4090, &[0; 6]).is_some());
        assert!(mem.write(4091, &[0; 6]).is_none());
        assert!(mem.write(u64::MAX, &[0; 1]).is_none());
        let mut buf = [0u8; 2];
        assert!(mem.read(4095, &mut buf).is_none());
    }
}
