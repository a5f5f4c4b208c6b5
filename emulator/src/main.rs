//! `yakvm`: runs a guest program under the yakvm kernel module.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use yakvm::machine::{Config, Machine, Outcome};
use yakvm::{layout, sys};
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
    ///
    /// Port 0x10 is the serial port (stdout), an OUT of V to port 0xf4 ends the run with
    /// exit status V, HLT ends it with status 0. Every port is also reachable by MMIO at
    /// MMIO-BASE + port * 8.
    Run {
        /// The guest program (flat binary).
        guest: PathBuf,
        /// Guest RAM size, in bytes or with a K, M or G suffix.
        #[arg(long, default_value = "16M", value_parser = parse_size)]
        mem: u64,
        /// Guest-physical base of the MMIO window [default: the first GiB boundary above RAM, at least 0xc0000000].
        #[arg(long, value_parser = parse_address)]
        mmio_base: Option<u64>,
        /// At the end, print the exit counters of the vCPU on stderr.
        #[arg(long)]
        stats: bool,
    },
    /// Show what the module and the CPU's SVM offer.
    Info,
}

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

fn parse_address(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not an address (examples: 0x200000, 2097152)"))
}

fn run(device: &str, guest: &PathBuf, config: &Config, stats: bool) -> Result<Outcome, String> {
    let image = std::fs::read(guest).map_err(|e| format!("cannot read guest {}: {e}", guest.display()))?;
    let dev = sys::Device::open(device).map_err(|e| e.to_string())?;
    sys::catch_stop_signals().map_err(|e| e.to_string())?;
    let out = io::LineWriter::new(io::stdout().lock());
    let mut machine = Machine::new(&dev, config, &image, out).map_err(|e| e.to_string())?;
    let outcome = machine.run();
    machine.bus.output().flush().map_err(|e| format!("writing the guest's output: {e}"))?;
    if stats {
        if let Ok(s) = machine.stats() {
            eprintln!("exits: {} in all, {} to userspace; io {} mmio {} hlt {} cpuid {} msr {} hypercall {} interrupt {} #UD {} shutdown {} other {}",
                s.total, s.to_user, s.io, s.mmio, s.hlt, s.cpuid, s.msr, s.hypercall, s.interrupt, s.invalid_opcode, s.shutdown, s.other);
        }
    }
    outcome.map_err(|e| e.to_string())
}

fn info(device: &str) -> Result<(), String> {
    let dev = sys::Device::open(device).map_err(|e| e.to_string())?;
    let cap = |c| dev.capability(c).map_err(|e| e.to_string());
    println!("yakvm module ABI version {}", dev.api_version().map_err(|e| e.to_string())?);
    println!("SVM revision:     {}", cap(abi::cap::SVM_REVISION)?);
    println!("ASIDs:            {}", cap(abi::cap::ASIDS)?);
    println!("nested paging:    yes (required)");
    println!("next-RIP save:    {}", if cap(abi::cap::NRIP_SAVE)? != 0 { "yes" } else { "no" });
    println!("decode assists:   {}", if cap(abi::cap::DECODE_ASSISTS)? != 0 { "yes" } else { "no" });
    println!("vCPUs per VM:     {}", cap(abi::cap::MAX_VCPUS)?);
    println!("RAM per VM:       {} MiB", cap(abi::cap::MAX_RAM_MIB)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { guest, mem, mmio_base, stats } => {
            match run(&cli.device, &guest, &Config { mem, mmio_base }, stats) {
                Ok(Outcome::Exit(status)) => ExitCode::from(status),
                Ok(Outcome::Interrupted(signal)) => {
                    eprintln!("yakvm: stopped by signal {signal}");
                    // The shells' convention for a process ended by a signal.
                    ExitCode::from(128 + signal as u8)
                }
                Err(msg) => {
                    eprintln!("yakvm: error: {msg}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Info => match info(&cli.device) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                eprintln!("yakvm: error: {msg}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_addresses_parse() {
        assert_eq!(parse_size("2M"), Ok(2 * layout::MIB));
        assert_eq!(parse_size("64k"), Ok(64 * layout::KIB));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert_eq!(parse_address("0x200000"), Ok(0x20_0000));
        assert_eq!(parse_address("4096"), Ok(4096));
        assert!(parse_address("0xzz").is_err());
    }

    #[test]
    fn ioctl_numbers_are_linux_encodings() {
        // _IO('Y', 0x01) and _IOW('Y', 0x10, 32 bytes), as the C macros compute them.
        assert_eq!(abi::CREATE_VM, 0x5901);
        assert_eq!(abi::SET_MEMORY_REGION, 0x4020_5910);
        assert_eq!(abi::GET_REGS, 0x8090_5921);
    }
}
