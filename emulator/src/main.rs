//! `yakvm`: runs a guest program under the yakvm kernel module.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use yakvm::disk::SECTOR_SIZE;
use yakvm::virtio::blk::Drive;
use yakvm::machine::{Config, EntryMode, Machine, MachineKind, Outcome};
use yakvm::kernel::{linux, multiboot, multiboot2, BootImage};
use yakvm::pc::console::RawMode;
use yakvm::{hypervisor, layout, sys};
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
    /// Run a guest program.
    ///
    /// A flat binary is copied to --load-addr and entered there; an ELF file is loaded by
    /// its program headers and entered at its entry point. The top 64 KiB of RAM hold the
    /// page tables and GDT the emulator builds.
    ///
    /// --machine seed: port 0x10 is the serial port (stdout); ports 0x20-0x22 drive the DMA
    /// disk; an OUT of V to port 0xf4 ends the run with exit status V; HLT ends it with
    /// status 0. Every register R is also reachable by MMIO at MMIO-BASE + R * 8.
    ///
    /// --machine pc: a PC with 8259A PICs (0x20, 0xa0), an 8254 PIT (0x40-0x43, 0x61), a
    /// 16550A UART at 0x3f8 on IRQ4 as the console (stdin and stdout), a CMOS RTC (0x70),
    /// the i8042 reset line (0xfe to port 0x64 ends the run, status 0), port 0x80 as a
    /// sink, the exit port 0xf4, the seed serial port 0x10, the DMA disk at 0x1020-0x1022
    /// and the MMIO window; a local APIC per vCPU (0xfee00000), an I/O APIC (0xfec00000)
    /// and an MP table (0xf0000) describing them. HLT waits for an interrupt; with
    /// interrupts disabled it stops the vCPU, and the run ends (status 0) once every vCPU
    /// has stopped. On a terminal the console is raw: Ctrl-A X quits, Ctrl-A H
    /// helps, Ctrl-A Ctrl-A sends Ctrl-A.
    ///
    /// --kernel boots a kernel instead of a guest program, as QEMU's -kernel does: a Linux
    /// bzImage (64-bit boot protocol; --initrd, --append adds to yakvm's default command
    /// line) or a Multiboot v1 kernel (--append is its whole command line; --module
    /// FILE[,STRING], repeatable). A kernel that powers off (HLT with interrupts off) or
    /// reboots (the i8042 reset) ends the run with status 0.
    Run(RunOpts),
    /// Show what the CPU's SVM and the module offer.
    Info,
}

/// `yakvm run`'s options, in the groups its help shows.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["guest", "kernel"]))]
struct RunOpts {
    #[command(flatten)]
    boot: Boot,
    #[command(flatten)]
    machine: MachineOpts,
    #[command(flatten)]
    devices: Devices,
    #[command(flatten)]
    debugging: Debugging,
    #[command(flatten)]
    test_aids: TestAids,
}

/// What the guest is and how it starts.
#[derive(Args)]
struct Boot {
    /// The guest program (flat binary or ELF).
    guest: Option<PathBuf>,
    /// Boot this kernel (a Linux bzImage or a Multiboot v1 kernel) instead of GUEST.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The initial ramdisk of a Linux kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Linux: added to yakvm's default command line; Multiboot: the command line.
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// A Multiboot module: FILE, or FILE,STRING (STRING defaults to FILE). Repeatable.
    #[arg(long = "module", requires = "kernel")]
    modules: Vec<String>,
    /// CPU mode at entry [default: long; protected for a 32-bit ELF file].
    #[arg(long, value_enum)]
    entry: Option<EntryMode>,
    /// Where a flat binary goes (for real mode: the segment base, below 1 MiB).
    #[arg(long, default_value = "0", value_parser = parse_address)]
    load_addr: u64,
}

/// The machine.
#[derive(Args)]
#[command(next_help_heading = "Machine")]
struct MachineOpts {
    /// The board: seed (the simple machine) or pc [default: seed; pc with --kernel].
    #[arg(long, value_enum)]
    machine: Option<MachineKind>,
    /// vCPUs, 1 to 8 (more than one needs --machine pc). vCPU 0 starts the guest; the
    /// others wait for INIT and a startup IPI from it through their local APICs.
    #[arg(long, default_value = "1", value_name = "N")]
    smp: u32,
    /// Guest RAM size, in bytes or with a K, M or G suffix [default: 16M; 256M with --kernel].
    #[arg(long, value_parser = parse_size)]
    mem: Option<u64>,
    /// pc: build the machine without ACPI tables, for guests that want only the MP
    /// table (Linux is given no RSDP; the PM registers stay on their ports).
    #[arg(long)]
    no_acpi: bool,
    /// Guest-physical base of the MMIO window [default: the first GiB boundary above RAM, at least 0xc0000000].
    #[arg(long, value_parser = parse_address)]
    mmio_base: Option<u64>,
    /// The hypervisor: yakvm's module or Linux KVM (kvm_amd loaded, yakvm not), with the
    /// same machine and devices in this program, for comparisons.
    #[arg(long, value_enum, default_value = "yakvm")]
    hypervisor: hypervisor::Kind,
    /// pc: the local APICs in the hypervisor (yakvm's module: ENABLE_KERNEL_APIC; KVM:
    /// its split irqchip): x2APIC, timer, IPIs, EOIs and HLT without exits to this
    /// program; the PIC and I/O APIC stay here. The pc machine's default.
    #[arg(long, conflicts_with = "user_apic")]
    kernel_apic: bool,
    /// pc: the local APICs in this program instead (every access an exit to it), as
    /// before the module had them: slower, for comparisons and for reading pc/lapic.rs.
    #[arg(long)]
    user_apic: bool,
}

/// Disks, the screen, and how devices are reached.
#[derive(Args)]
#[command(next_help_heading = "Devices")]
struct Devices {
    /// Disk image behind the DMA disk (a multiple of 512 bytes) [default: a disk of size 0].
    #[arg(long)]
    disk: Option<PathBuf>,
    /// pc: an IDE disk image (a multiple of 512 bytes) on the primary IDE channel
    /// (ports 0x1f0-0x1f7, 0x3f6, IRQ14; PIO, LBA28): given once, the master; twice,
    /// the master then the slave (as QEMU's -drive index=0 and index=1).
    #[arg(long = "ide", value_name = "FILE")]
    ide: Vec<PathBuf>,
    /// A virtio disk on the pc machine's PCI bus (virtio-blk over virtio-pci): a raw
    /// image FILE (whole 512-byte sectors), written in place unless `readonly=on`.
    /// Repeatable: the first is Linux's /dev/vda (PCI 00:04.0), the next /dev/vdb, ...
    /// The file is locked while yakvm runs (a second yakvm cannot open it for writing).
    #[arg(long = "drive", value_name = "FILE[,readonly=on]")]
    drives: Vec<String>,
    /// pc: the console is the PC's screen and keyboard: the VGA text screen (80x25 at
    /// 0xb8000) is mirrored to standard output, a line once the guest's cursor leaves
    /// it (in colour to a terminal, as plain text otherwise), and standard input is
    /// typed on a PS/2 keyboard (scan code set 1, IRQ1) instead of reaching the UART.
    /// Off by default: most kernels also write their console to the UART, whose lines
    /// would then come twice.
    #[arg(long)]
    vga: bool,
    /// pc: the virtio disks' queue notifications exit to this program (an MMIO write
    /// it hands to the disk's thread) instead of going straight from the hypervisor to
    /// that thread through an ioeventfd (the default, on yakvm and on KVM).
    #[arg(long)]
    no_ioeventfd: bool,
    /// pc with --kernel-apic: the virtio disks' interrupts go through this program's
    /// interrupt controllers (SIGNAL_MSI) instead of from the disk's thread straight into
    /// the module's local APICs through an irqfd per vector (the default).
    #[arg(long)]
    no_irqfd: bool,
    /// pc: a virtio entropy device fed from the host's getrandom (Linux's
    /// /dev/hwrng, virtio_rng).
    #[arg(long)]
    rng: bool,
    /// pc: a virtio network interface on the host tap NAME (created if missing and
    /// removed at exit; needs CAP_NET_ADMIN). ip=/mask= give the host side an IPv4
    /// address (mask 255.255.255.0 by default); mac= the guest's address (default: a
    /// stable 52:54:00:xx:xx:xx from NAME); mtu= both sides' MTU (default 1500).
    /// Repeatable: eth0, eth1, ... (docs/net.md).
    #[arg(long = "net", value_name = "tap=NAME[,ip=A,mask=M][,mac=MAC][,mtu=N]")]
    nets: Vec<String>,
    /// Let every write to the serial port exit to the emulator (they are coalesced by
    /// default; --trace and --step-trace imply this).
    #[arg(long)]
    no_coalesced_io: bool,
}

/// Watching and bounding the run.
#[derive(Args)]
#[command(next_help_heading = "Running and debugging")]
struct Debugging {
    /// End the run after this many seconds (exit status 124).
    #[arg(long)]
    timeout: Option<u32>,
    /// Print every exit that reaches the emulator on stderr.
    #[arg(long)]
    trace: bool,
    /// At the end, print exit counts by reason and where the time went on stderr.
    #[arg(long)]
    stats: bool,
    /// Serve gdb on localhost:PORT (gdb: target remote :PORT): registers, memory at
    /// guest-virtual addresses, software breakpoints, stepi, Ctrl-C. The guest stops
    /// when gdb connects.
    #[arg(long, value_name = "PORT")]
    gdb: Option<u16>,
    /// With --gdb: wait for gdb before the guest's first instruction.
    #[arg(long, requires = "gdb")]
    gdb_wait: bool,
    /// Single-step the guest and write one line per executed instruction to FILE: its
    /// CS:RIP, bytes, the instruction (Intel syntax) and the exits it caused. Slow: a
    /// few thousand instructions per second under QEMU.
    #[arg(long, value_name = "FILE", conflicts_with = "gdb")]
    step_trace: Option<PathBuf>,
}

/// Devices that exist only for tests.
#[derive(Args)]
#[command(next_help_heading = "Test aids")]
struct TestAids {
    /// A test aid, not a PC device (pc machine only): QEMU's pc-testdev, which
    /// kvm-unit-tests drives: a scratch register at ports 0xe0-0xe3 (and 0xe8-0xeb),
    /// interrupt lines 0-23 at ports 0x2000-0x2017, 64 KiB of test memory (MMIO) at
    /// 0xff000000 (docs/conformance.md).
    #[arg(long)]
    testdev: bool,
    /// A test aid (pc machine only): two PCI test functions (1234:11e8, QEMU edu's ID) at
    /// 00:16.0 and 00:1e.0 whose registers raise INTx (both on GSI 22), MSI and MSI-X
    /// (docs/pci.md).
    #[arg(long)]
    pci_testdev: bool,
    /// A test aid: an ioeventfd on pio:PORT or mmio:ADDRESS (any write there), or with
    /// :LEN:VALUE (writes of LEN bytes and that value only). A thread counts its
    /// signals; the counts are printed on stderr at the end. Repeatable.
    #[arg(long = "ioeventfd", value_name = "SPEC", value_parser = yakvm::ioevent_probe::parse)]
    ioeventfds: Vec<yakvm::ioevent_probe::Spec>,
    /// A test aid (with --kernel-apic): an IRQFD bound to "vector VECTOR to APIC 0",
    /// which a thread signals COUNT times, each once the u64 the guest keeps at
    /// guest-physical COUNTER (its count of those interrupts) caught up. The counts are
    /// printed on stderr at the end.
    #[arg(long = "irqfd", value_name = "VECTOR:COUNT:COUNTER", value_parser = yakvm::irqfd_probe::parse)]
    irqfd: Option<yakvm::irqfd_probe::Spec>,
}

/// Exit status of a run ended by --timeout (as timeout(1)).
const TIMEOUT_STATUS: u8 = 124;

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

/// What a run boots.
enum Payload {
    Program(PathBuf),
    Kernel { path: PathBuf, initrd: Option<PathBuf>, append: Option<String>, modules: Vec<String> },
}

struct RunArgs {
    payload: Payload,
    config: Config,
    disk: Option<PathBuf>,
    timeout: Option<u32>,
    stats: bool,
    gdb: Option<u16>,
    gdb_wait: bool,
    step_trace: Option<PathBuf>,
    ioeventfds: Vec<yakvm::ioevent_probe::Spec>,
    irqfd: Option<yakvm::irqfd_probe::Spec>,
    /// `--drive` arguments, opened by `run`.
    drives: Vec<String>,
    /// `--net` arguments, their taps opened by `run`.
    nets: Vec<String>,
}

/// What `run` needs, from the command line: defaults that depend on the payload, the
/// IDE disks opened. `Err`: a message naming the problem.
fn run_args(opts: RunOpts, device: String) -> Result<RunArgs, String> {
    let RunOpts { boot, machine: m, devices: d, debugging: g, test_aids: t } = opts;
    let is_kernel = boot.kernel.is_some();
    let payload = match (boot.guest, boot.kernel) {
        (_, Some(path)) => Payload::Kernel { path, initrd: boot.initrd, append: boot.append, modules: boot.modules },
        (Some(path), None) => Payload::Program(path),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let machine = m.machine.unwrap_or(if is_kernel { MachineKind::Pc } else { MachineKind::Seed });
    let mem = m.mem.unwrap_or(if is_kernel { 256 * layout::MIB } else { 16 * layout::MIB });
    // --trace and --step-trace show every port write as an exit.
    let coalesced_io = !d.no_coalesced_io && g.step_trace.is_none();
    if d.ide.len() > 2 {
        return Err(format!("--ide given {} times: an IDE channel has two drives (the master, then the slave)", d.ide.len()));
    }
    let ide = d.ide.iter().map(open_disk).collect::<Result<Vec<_>, _>>().map_err(|e| format!("--ide: {e}"))?;
    let config = Config {
        mem,
        mmio_base: m.mmio_base,
        entry: boot.entry,
        load_addr: boot.load_addr,
        trace: g.trace,
        machine,
        console_is_terminal: false,
        hypervisor: m.hypervisor,
        device,
        coalesced_io,
        cpus: m.smp,
        testdev: t.testdev,
        pci_testdev: t.pci_testdev,
        acpi: !m.no_acpi,
        vga: d.vga,
        ide: ide.into_iter().map(Arc::new).collect(),
        drives: Vec::new(),
        kernel_apic: m.kernel_apic || (machine == MachineKind::Pc && !m.user_apic),
        ioeventfd: !d.no_ioeventfd,
        irqfd: !d.no_irqfd,
        extra: yakvm::virtio::Extra { rng: d.rng, nets: Vec::new() },
    };
    Ok(RunArgs {
        payload,
        config,
        disk: d.disk,
        timeout: g.timeout,
        stats: g.stats,
        gdb: g.gdb,
        gdb_wait: g.gdb_wait,
        step_trace: g.step_trace,
        ioeventfds: t.ioeventfds,
        irqfd: t.irqfd,
        drives: d.drives,
        nets: d.nets,
    })
}

fn open_disk(path: &PathBuf) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open disk {}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| format!("disk {}: {e}", path.display()))?.len();
    if len % SECTOR_SIZE as u64 != 0 {
        return Err(format!("disk {} is {len} bytes, not a multiple of {SECTOR_SIZE}", path.display()));
    }
    Ok(file)
}

fn read_file(what: &str, path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Reads and checks a kernel and what goes with it: what the machine will write.
fn load_kernel(path: &PathBuf, initrd: &Option<PathBuf>, append: &Option<String>, modules: &[String], config: &Config) -> Result<BootImage, String> {
    let mem = config.mem;
    let kernel = read_file("kernel", path)?;
    let name = path.display();
    if linux::detect(&kernel) {
        if !modules.is_empty() {
            return Err(format!("{name} is a Linux bzImage: --module is for Multiboot kernels"));
        }
        let initrd = initrd.as_ref().map(|p| read_file("initrd", p)).transpose()?;
        let apics = config.cpus > 1 || !config.drives.is_empty() || config.extra.any();
        let mut cmdline = linux::default_cmdline(Some(sys::tsc_khz(std::time::Duration::from_millis(50))), apics);
        if let Some(extra) = append {
            cmdline.push(' ');
            cmdline.push_str(extra);
        }
        let rsdp = config.machine.acpi_rsdp(mem, config.acpi);
        return linux::load_with_acpi(&kernel, initrd.as_deref(), &cmdline, mem, rsdp).map_err(|e| format!("{name}: {e}"));
    }
    if multiboot2::detect(&kernel) || multiboot::detect(&kernel) {
        if initrd.is_some() {
            return Err(format!("{name} is a Multiboot kernel: give its files as --module, not --initrd"));
        }
        let files: Vec<(Vec<u8>, String)> = modules
            .iter()
            .map(|m| {
                let (file, string) = m.split_once(',').unwrap_or((m.as_str(), m.as_str()));
                read_file("module", &PathBuf::from(file)).map(|bytes| (bytes, string.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let modules: Vec<multiboot::Module> = files.iter().map(|(bytes, string)| multiboot::Module { bytes, string }).collect();
        let cmdline = append.as_deref().unwrap_or("");
        if multiboot2::detect(&kernel) {
            // The RSDP as the board will write it (its 36 bytes at the tables' start).
            let rsdp = match config.machine.acpi_rsdp(mem, config.acpi) {
                Some(_) => {
                    let tables = yakvm::pc::acpi::build(&yakvm::pc::acpi::AcpiDesc::pc(config.cpus, mem)).map_err(|e| format!("{name}: {e}"))?;
                    Some(tables.bytes[..36].to_vec())
                }
                None => None,
            };
            return multiboot2::load(&kernel, cmdline, &modules, mem, layout::BOOT_AREA_SIZE, rsdp.as_deref()).map_err(|e| format!("{name}: {e}"));
        }
        return multiboot::load(&kernel, cmdline, &modules, mem, layout::BOOT_AREA_SIZE).map_err(|e| format!("{name}: {e}"));
    }
    Err(format!(
        "{name} is neither a Linux bzImage (no \"HdrS\" setup header at offset 0x202) nor a Multiboot kernel (no Multiboot 2 header in its first 32768 bytes, no Multiboot v1 header in its first 8192)"
    ))
}

fn run(args: &RunArgs) -> Result<Outcome, String> {
    // Everything read and checked before the VM exists; the drives first (their files are
    // locked from here to the end of the run).
    if !args.drives.is_empty() && args.config.machine != MachineKind::Pc {
        return Err(yakvm::machine::Error::DriveNeedsPc.to_string());
    }
    let drives = args.drives.iter().map(|spec| Drive::open(spec).map(Arc::new)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if (!args.nets.is_empty() || args.config.extra.rng) && args.config.machine != MachineKind::Pc {
        return Err(yakvm::machine::Error::VirtioNeedsPc.to_string());
    }
    let nets = args.nets.iter().map(|spec| yakvm::virtio::net::NetSpec::open(spec).map(Arc::new)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let extra = yakvm::virtio::Extra { nets, ..args.config.extra.clone() };
    let config = Config { drives, extra, ..args.config.clone() };
    let payload = match &args.payload {
        Payload::Program(path) => Err(read_file("guest", path)?),
        Payload::Kernel { path, initrd, append, modules } => Ok(load_kernel(path, initrd, append, modules, &config)?),
    };
    if args.config.cpus > 1 && (args.gdb.is_some() || args.step_trace.is_some()) {
        return Err(format!("--smp {}: --gdb and --step-trace follow one vCPU; run the guest with --smp 1", args.config.cpus));
    }
    let disk = args.disk.as_ref().map(open_disk).transpose()?.map(yakvm::disk::DiskFile::new);
    // The console's writer thread writes to it (`output.rs`).
    let out = io::LineWriter::new(io::stdout());
    // pc: a terminal on stdin becomes the guest's raw console until the run ends (the
    // guard restores it on every path out of this function).
    let raw = match args.config.machine {
        MachineKind::Pc => RawMode::enable().map_err(|e| format!("cannot put the terminal in raw mode: {e}"))?,
        MachineKind::Seed => None,
    };
    let config = Config { console_is_terminal: raw.is_some(), ..config };
    let machine = match &payload {
        Err(program) => Machine::new(&config, program, out, disk),
        Ok(kernel) => Machine::with_kernel(&config, kernel, out, disk),
    };
    let mut machine = machine.map_err(|e| e.to_string())?;
    if let Some(path) = &args.step_trace {
        let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        machine.set_step_trace(Box::new(io::BufWriter::new(file))).map_err(|e| e.to_string())?;
    }
    let probe = match args.ioeventfds.as_slice() {
        [] => None,
        specs => Some(yakvm::ioevent_probe::Probe::start(machine.vm(), specs)?),
    };
    let irqfd = match args.irqfd {
        Some(spec) => Some(yakvm::irqfd_probe::Probe::start(machine.vm(), machine.shared_memory(), spec)?),
        None => None,
    };
    if let Some(secs) = args.timeout {
        sys::alarm(secs);
    }
    let outcome = match args.gdb {
        Some(port) => yakvm::gdb::run(&mut machine, port, args.gdb_wait),
        None => machine.run(),
    };
    // Whatever happened: the output flushed, the disk's writes on stable storage.
    machine.finish().map_err(|e| format!("flushing the output or the disk: {e}"))?;
    drop(raw);
    if let Some(probe) = probe {
        for line in probe.finish(machine.vm()).map_err(|e| format!("removing an ioeventfd: {e}"))? {
            eprintln!("{line}");
        }
    }
    if let Some(irqfd) = irqfd {
        eprintln!("{}", irqfd.finish(machine.vm()).map_err(|e| format!("removing the irqfd: {e}"))?);
    }
    if args.stats {
        print_stats(&machine);
    }
    if args.step_trace.is_some() {
        eprintln!("yakvm: {} instructions traced", machine.steps_traced());
    }
    outcome.map_err(|e| e.to_string())
}

fn print_stats(machine: &Machine) {
    // The run's time is vCPU 0's: it runs from the first entry to the end (the others
    // start later, and their lines below say where their time went).
    let t = machine.cpus()[0].times;
    let c = machine.exits();
    eprintln!(
        "exits handled by the emulator: {} (io {}, mmio {}, hlt {}, irq-window {}, hypercall {}, ioapic-eoi {})",
        c.total(), c.io, c.mmio, c.hlt, c.irq_window, c.hypercall, c.ioapic_eoi
    );
    let cpus = machine.cpus();
    for (i, cpu) in cpus.iter().enumerate() {
        // One vCPU: its figures are the machine's; several: each under its name.
        let indent = if cpus.len() > 1 {
            let (c, t) = (&cpu.exits, &cpu.times);
            eprintln!(
                "vCPU {i}: {} exits handled by the emulator (io {}, mmio {}, hlt {}), {} interrupts and {} NMIs queued, {:.3} s in the guest, {:.3} s idle",
                c.total(), c.io, c.mmio, c.hlt, cpu.interrupts, cpu.nmis, t.guest.as_secs_f64(), t.halted.as_secs_f64()
            );
            "  "
        } else {
            ""
        };
        print_hypervisor_stats(machine, i, indent);
    }
    let devices = &machine.devices;
    for line in machine.board().stats() {
        eprintln!("{line}");
    }
    // Accesses by range: a byte-wide (ISA) device's counts are bytes.
    let ranges: Vec<String> = [("port", &devices.ports), ("mmio", &devices.mmio)]
        .into_iter()
        .flat_map(|(space, bus)| bus.accesses().map(move |(name, base, len, n)| (space, name, base, len, n)))
        .filter(|r| r.4 > 0)
        .map(|(space, name, base, len, n)| format!("  {:<36} {n}", format!("{space} {name} ({base:#x}-{:#x})", base + len - 1)))
        .collect();
    if !ranges.is_empty() {
        eprintln!("accesses by range:\n{}", ranges.join("\n"));
    }
    eprint!("time: {:.3} s in the guest (and module), {:.3} s in the emulator", t.guest.as_secs_f64(), t.emulator.as_secs_f64());
    if t.halted > std::time::Duration::ZERO {
        eprint!(" ({:.3} s of it waiting for interrupts while the guest halted)", t.halted.as_secs_f64());
    }
    eprintln!();
    let disk_ignored = yakvm::bus::lock(&devices.disk).disk.ignored;
    if devices.ignored.count() + disk_ignored > 0 {
        eprintln!("ignored accesses: {} bus, {} disk", devices.ignored.count(), disk_ignored);
    }
}

/// The hypervisor's own counters of vCPU `i`, each line after `indent`.
fn print_hypervisor_stats(machine: &Machine, i: usize, indent: &str) {
    if let Some(s) = machine.stats(i) {
        eprintln!("{indent}exits: {} in all, {} reached the emulator", s.total, s.to_user);
        for (name, n) in [
            ("io", s.io), ("mmio", s.mmio), ("hlt", s.hlt), ("cpuid", s.cpuid), ("msr", s.msr),
            ("hypercall", s.hypercall), ("interrupt", s.interrupt), ("#UD", s.invalid_opcode),
            ("shutdown", s.shutdown), ("fail-entry", s.fail_entry), ("other", s.other),
            ("irq-window", s.irq_window), ("coalesced", s.coalesced), ("nmi", s.nmi),
            ("ioeventfd", s.ioeventfd),
        ] {
            if n > 0 {
                eprintln!("{indent}  {name:<10} {n}");
            }
        }
        if s.injected + s.reinjected > 0 {
            eprintln!("{indent}interrupts: {} injected, {} re-injected after an exit cut their delivery", s.injected, s.reinjected);
        }
    }
    let kvm: Vec<String> = machine.kvm_stats(i).iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name} {n}")).collect();
    if !kvm.is_empty() {
        eprintln!("{indent}KVM's counters: {}", kvm.join(", "));
    }
    if let Some(a) = machine.apic_stats(i) {
        eprintln!(
            "{indent}kernel APIC: {} reads, {} writes, {} EOIs, {} ICR, {} timer writes, {} timer interrupts, {} forwarded by the emulator, {} #GP; {} interrupts delivered, {} HLTs waited in the module ({} ended without sleeping), {} kicks",
            a.reads, a.writes, a.eois, a.icr, a.timer_writes, a.timer_fired, a.forwarded, a.faults, a.delivered, a.halts, a.halt_polls, a.kicks
        );
        let registers = yakvm::pc::lapic::registers_line(&a.by_register);
        if !registers.is_empty() {
            eprintln!("{indent}kernel APIC registers: {registers}");
        }
    }
    if let Some(m) = machine.msr_stats(i) {
        if m.count > 0 {
            eprintln!("{indent}MSRs: index reads writes #GP");
            for e in &m.entries[..m.count as usize] {
                eprintln!("{indent}  {:#010x} {} {} {}", e.index, e.reads, e.writes, e.faults);
            }
            if m.others > 0 {
                eprintln!("{indent}  and {} accesses to other MSRs", m.others);
            }
        }
    }
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
    println!("pages in use:     {} held, {} pinned", cap(abi::cap::PAGES_HELD)?, cap(abi::cap::PAGES_PINNED)?);
    Ok(())
}

fn main() -> ExitCode {
    // First of all: a SIGINT or SIGTERM that arrives while the guest is being loaded must
    // end the run too (a shell's background job starts with SIGINT ignored, and a signal
    // ignored then would be lost). The run loop looks at it before entering the guest.
    if let Err(e) = sys::catch_stop_signals() {
        eprintln!("yakvm: error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(opts) => {
            let timeout = opts.debugging.timeout;
            let args = match run_args(opts, cli.device) {
                Ok(args) => args,
                Err(msg) => {
                    eprintln!("yakvm: error: {msg}");
                    return ExitCode::FAILURE;
                }
            };
            match run(&args) {
                Ok(Outcome::Exit(status)) => ExitCode::from(status),
                Ok(Outcome::Halted) => {
                    eprintln!("yakvm: the guest halted with interrupts disabled");
                    ExitCode::SUCCESS
                }
                Ok(Outcome::Reset) => {
                    eprintln!("yakvm: the guest reset the machine");
                    ExitCode::SUCCESS
                }
                Ok(Outcome::PowerOff) => {
                    eprintln!("yakvm: the guest powered off (ACPI S5)");
                    ExitCode::SUCCESS
                }
                Ok(Outcome::Quit) => {
                    eprintln!("yakvm: quit (Ctrl-A X)");
                    ExitCode::SUCCESS
                }
                Ok(Outcome::Interrupted(signal)) if signal == nix::libc::SIGALRM => {
                    eprintln!("yakvm: timed out after {} s", timeout.unwrap_or(0));
                    ExitCode::from(TIMEOUT_STATUS)
                }
                Ok(Outcome::Interrupted(signal)) => {
                    eprintln!("yakvm: stopped by signal {signal}");
                    // The shells' convention for a process ended by a signal.
                    ExitCode::from(128 + signal as u8)
                }
                Ok(Outcome::Debug(_)) => {
                    eprintln!("yakvm: error: a debug stop without a debugger");
                    ExitCode::FAILURE
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

    /// `yakvm run ARGS guest.bin`'s machine configuration.
    fn config_of(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(["yakvm", "run"].iter().chain(args).chain(&["guest.bin"])).map_err(|e| e.to_string())?;
        let Command::Run(opts) = cli.command else { unreachable!() };
        run_args(opts, cli.device).map(|a| a.config)
    }

    #[test]
    fn the_kernel_apic_is_the_pc_machines_default() {
        assert!(config_of(&["--machine", "pc"]).unwrap().kernel_apic);
        assert!(config_of(&["--machine", "pc", "--kernel-apic"]).unwrap().kernel_apic);
        assert!(!config_of(&["--machine", "pc", "--user-apic"]).unwrap().kernel_apic);
        assert!(config_of(&["--machine", "pc", "--hypervisor", "kvm"]).unwrap().kernel_apic);
        // The seed machine has no local APICs; --kernel-apic there is Machine's error.
        assert!(!config_of(&[]).unwrap().kernel_apic);
        assert!(!config_of(&["--user-apic"]).unwrap().kernel_apic);
        let Err(both) = config_of(&["--machine", "pc", "--kernel-apic", "--user-apic"]) else { panic!("both accepted") };
        assert!(both.contains("--user-apic") && both.contains("cannot be used with"), "{both}");
    }

    #[test]
    fn ioctl_numbers_are_linux_encodings() {
        // _IO('Y', 0x01) and _IOW('Y', 0x10, 32 bytes), as the C macros compute them.
        assert_eq!(abi::CREATE_VM, 0x5901);
        assert_eq!(abi::SET_MEMORY_REGION, 0x4020_5910);
        assert_eq!(abi::GET_REGS, 0x8090_5921);
    }
}
