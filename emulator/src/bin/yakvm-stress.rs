//! `yakvm-stress`: the robustness suite's programs, run in the image by
//! tests/image/robust.sh (and `make soak`):
//!
//! - `random-guests COUNT SEED`: COUNT pages of random bytes, each run in real, protected
//!   and long mode in a fresh VM, each run bounded by a timer;
//! - `ioctls ROUNDS SEED`: random ioctls on every kind of descriptor, with null, kernel,
//!   unmapped and valid pointers, plus the hard cases (many descriptors, one vCPU from two
//!   threads, the VM closed while its vCPU runs);
//! - `lifecycle CYCLES GUEST`: create a VM, add memory, run GUEST to HLT, destroy;
//! - `check-disk IMAGE LOG [--killed]`: the writer guest's disk against its log.
//!
//! Each prints its figures and "PASS name" or "FAIL name: why".

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use yakvm::machine::EntryMode;
use yakvm::sys::{self, Device, FuzzArg, GuestMemory, FUZZ_BUFFER};
use yakvm::bare::{bare_vm, BareVm};
use yakvm_abi as abi;

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn report(name: &str, result: Result<(), String>) -> bool {
    match result {
        Ok(()) => println!("PASS {name}"),
        Err(why) => println!("FAIL {name}: {why}"),
    }
    true
}

// ---------------------------------------------------------------- random guests

#[derive(Default, Debug)]
struct Tally {
    runs: u64,
    hlt: u64,
    shutdown: u64,
    fail_entry: u64,
    /// RUN refused the random control registers put in the run page (EINVAL).
    refused: u64,
    unknown: u64,
    mmio: u64,
    timeout: u64,
    exit_limit: u64,
    io: u64,
    hypercall: u64,
    errors: u64,
    /// DEBUG exits (single steps and INT3s) of single-stepped guests.
    steps: u64,
}

const RANDOM_RAM: usize = 256 << 10;
const RANDOM_TIMEOUT: Duration = Duration::from_millis(20);
const RANDOM_EXIT_LIMIT: u32 = 2000;

/// Runs one random page in `mode`; every way it can end is counted; an ioctl error that
/// is not EINTR is an error of the module or the emulator.
/// `debug`: the guest runs under these `SET_GUEST_DEBUG` controls (0: none).
fn run_random(dev: &Device, page: &[u8], mode: EntryMode, debug: u32, rng: &mut Rng, t: &mut Tally) -> Result<(), String> {
    t.runs += 1;
    let BareVm { vm: _vm, mem: _mem, mut vcpus } = bare_vm(dev, RANDOM_RAM, page, mode, 1)?;
    let vcpu = &mut vcpus[0];
    if debug != 0 {
        vcpu.set_guest_debug(debug).map_err(|e| format!("SET_GUEST_DEBUG: {e}"))?;
    }
    // Half the guests have random coalesced port zones: their OUTs may wait in the list.
    if rng.below(2) == 0 {
        let mut io = abi::CoalescedIo::default();
        for z in &mut io.zones {
            let port = rng.next() as u16;
            *z = abi::CoalescedZone { port, len: (rng.below(0x100) as u16).min(u16::MAX - port) };
        }
        vcpu.set_coalesced_io(&io).map_err(|e| format!("SET_COALESCED_IO: {e}"))?;
    }
    sys::alarm_after(RANDOM_TIMEOUT).map_err(|e| e.to_string())?;
    let result = (|| {
        let mut random_sregs = false;
        for _ in 0..RANDOM_EXIT_LIMIT {
            match vcpu.run() {
                Ok(true) if !sys::alarm_fired() => {}
                Ok(_) => {
                    t.timeout += 1;
                    return Ok(());
                }
                Err(e) if random_sregs && sys::errno_of(&e) == Some(Errno::EINVAL) => {
                    t.refused += 1;
                    return Ok(());
                }
                Err(e) => {
                    t.errors += 1;
                    return Err(format!("RUN failed: {e}"));
                }
            }
            let run = vcpu.run_page();
            match run.exit_reason {
                abi::exit::IO => {
                    t.io += 1;
                    let n = run.io.size as usize * run.io.count as usize;
                    rng.fill(&mut run.data[..n]);
                    // The run page's other inputs, at random now and then: registers for
                    // the module to load, a coalesced list of any length.
                    if rng.below(4) == 0 {
                        run.sync_valid = rng.next() as u32;
                        run.sync_dirty = rng.next() as u32;
                        run.coalesced_count = rng.next() as u32;
                        let mut r = [0u64; 18];
                        r.iter_mut().for_each(|x| *x = rng.next());
                        run.sync_regs.regs = abi::Regs {
                            rax: r[0], rbx: r[1], rcx: r[2], rdx: r[3], rsi: r[4], rdi: r[5],
                            rsp: r[6], rbp: r[7], r8: r[8], r9: r[9], r10: r[10], r11: r[11],
                            r12: r[12], r13: r[13], r14: r[14], r15: r[15], rip: r[16], rflags: r[17],
                        };
                        let s = &mut run.sync_regs.sregs;
                        (s.cr0, s.cr3, s.cr4, s.efer) = (rng.next(), rng.next(), rng.next(), rng.next());
                        s.cs.attrib = rng.next() as u16;
                        random_sregs = run.sync_dirty & abi::sync::SREGS != 0;
                    }
                }
                abi::exit::HYPERCALL => {
                    t.hypercall += 1;
                    run.hypercall.ret = rng.next();
                }
                // Random instructions cannot be emulated: the run ends as yakvm's would.
                abi::exit::MMIO => {
                    t.mmio += 1;
                    return Ok(());
                }
                abi::exit::HLT => {
                    t.hlt += 1;
                    return Ok(());
                }
                abi::exit::SHUTDOWN => {
                    t.shutdown += 1;
                    return Ok(());
                }
                abi::exit::FAIL_ENTRY => {
                    t.fail_entry += 1;
                    return Ok(());
                }
                abi::exit::UNKNOWN => {
                    t.unknown += 1;
                    return Ok(());
                }
                abi::exit::DEBUG if debug != 0 => {
                    t.steps += 1;
                    // An INT3: half of them go to the guest as its own #BP.
                    if run.debug.exception == 3 && rng.below(2) == 0 {
                        vcpu.set_guest_debug(debug | abi::guest_debug::INJECT_BP).map_err(|e| format!("SET_GUEST_DEBUG: {e}"))?;
                    }
                }
                other => return Err(format!("unknown exit reason {other}")),
            }
        }
        t.exit_limit += 1;
        Ok(())
    })();
    sys::alarm_after(Duration::ZERO).map_err(|e| e.to_string())?;
    result
}

/// `stepped`: every guest is single-stepped, with software breakpoints reported, and
/// every other one with interrupts held back (`SET_GUEST_DEBUG`).
fn random_guests(dev: &Device, count: u64, seed: u64, stepped: bool) -> bool {
    let (title, command, name) = match stepped {
        true => ("random stepped guests", "random-steps", "random_stepped_guests_all_end"),
        false => ("random guests", "random-guests", "random_guests_all_end"),
    };
    println!("{title}: {count} pages of random bytes, seed {seed:#x} (replay: yakvm-stress {command} {count} {seed:#x})");
    let mut rng = Rng(seed | 1);
    let modes = [EntryMode::Real, EntryMode::Protected, EntryMode::Long];
    let mut tallies: Vec<Tally> = modes.iter().map(|_| Tally::default()).collect();
    let mut failure = None;
    let start = Instant::now();
    for n in 0..count {
        let mut page = [0u8; 4096];
        rng.fill(&mut page);
        let debug = match (stepped, n % 2) {
            (false, _) => 0,
            (true, 0) => abi::guest_debug::ENABLE | abi::guest_debug::SINGLESTEP | abi::guest_debug::SW_BP,
            (true, _) => abi::guest_debug::ENABLE | abi::guest_debug::SINGLESTEP | abi::guest_debug::SW_BP | abi::guest_debug::BLOCK_IRQ,
        };
        for (mode, tally) in modes.iter().zip(tallies.iter_mut()) {
            if let Err(e) = run_random(dev, &page, *mode, debug, &mut rng, tally) {
                failure.get_or_insert(format!("guest {n} in {mode:?} mode: {e}"));
            }
        }
    }
    for (mode, t) in modes.iter().zip(&tallies) {
        println!(
            "  {:<9} {} runs: {} hlt, {} triple fault, {} VMRUN refused, {} registers refused, {} unknown exit, {} mmio, {} timeout, {} exit limit; {} port exits, {} hypercalls, {} debug exits, {} errors",
            format!("{mode:?}:"), t.runs, t.hlt, t.shutdown, t.fail_entry, t.refused, t.unknown, t.mmio, t.timeout, t.exit_limit, t.io, t.hypercall, t.steps, t.errors
        );
    }
    println!("  {:.1} s", start.elapsed().as_secs_f64());
    let ended = tallies.iter().all(|t| t.runs == t.hlt + t.shutdown + t.fail_entry + t.refused + t.unknown + t.mmio + t.timeout + t.exit_limit + t.errors);
    report(name, match failure {
        Some(f) => Err(f),
        None if !ended => Err("a run ended in no known way".into()),
        None => Ok(()),
    })
}

// ---------------------------------------------------------------- ioctl fuzzing

/// The argument kinds the fuzzer tries.
fn fuzz_arg(rng: &mut Rng) -> FuzzArg {
    match rng.below(7) {
        0 => FuzzArg::Value(0),
        1 => FuzzArg::Value(0x1000),                // unmapped
        2 => FuzzArg::Value(0xffff_8880_0000_0000), // the kernel's direct map
        3 => FuzzArg::Value(u64::MAX),
        4 => FuzzArg::Value(rng.next()),
        _ => FuzzArg::Buffer,
    }
}

const KNOWN: &[u32] = &[
    abi::GET_API_VERSION, abi::CREATE_VM, abi::CHECK_CAPABILITY, abi::SET_MEMORY_REGION,
    abi::CREATE_VCPU, abi::RUN, abi::GET_REGS, abi::SET_REGS, abi::GET_SREGS, abi::SET_SREGS,
    abi::GET_VMCB, abi::GET_STATS, abi::INTERRUPT, abi::GET_MSR_STATS, abi::SET_COALESCED_IO, abi::SET_GUEST_DEBUG,
    abi::ENABLE_LAPIC, abi::NMI,
];

fn fuzz_cmd(rng: &mut Rng) -> u32 {
    match rng.below(3) {
        0 => KNOWN[rng.below(KNOWN.len() as u64) as usize],
        // A known number with other direction or size bits.
        1 => KNOWN[rng.below(KNOWN.len() as u64) as usize] ^ ((rng.next() as u32) & 0xffff_0000),
        _ => rng.next() as u32,
    }
}

#[derive(Default)]
struct IoctlTally {
    tried: u64,
    ok: u64,
    refused: u64,
    interrupted: u64,
    fds: u64,
}

fn fuzz_round(fd: std::os::fd::BorrowedFd<'_>, rng: &mut Rng, buf: &mut [u8; FUZZ_BUFFER], t: &mut IoctlTally) -> Result<(), String> {
    let cmd = fuzz_cmd(rng);
    let arg = fuzz_arg(rng);
    rng.fill(&mut buf[..512]);
    // A RUN may start a guest that never stops by itself.
    sys::alarm_after(Duration::from_millis(20)).map_err(|e| e.to_string())?;
    let r = sys::fuzz_ioctl(fd, cmd, arg, buf);
    sys::alarm_after(Duration::ZERO).map_err(|e| e.to_string())?;
    t.tried += 1;
    let full = (cmd & !0xff00) | (abi::IOCTL_TYPE << 8);
    match r {
        Ok(n) => {
            t.ok += 1;
            if full == abi::CREATE_VM || full == abi::CREATE_VCPU {
                // SAFETY (of the module's answer): these return a new descriptor we own.
                t.fds += 1;
                drop(adopt(n));
            }
        }
        Err(Errno::EINTR) => t.interrupted += 1,
        Err(Errno::EINVAL | Errno::ENOTTY | Errno::EFAULT | Errno::EEXIST | Errno::E2BIG
            | Errno::ENOSPC | Errno::EBUSY | Errno::ENOMEM | Errno::EIO | Errno::ENODEV) => t.refused += 1,
        Err(e) => return Err(format!("ioctl {full:#x} ({arg:?}) failed with unexpected {e}")),
    }
    Ok(())
}

/// A descriptor CREATE_VM or CREATE_VCPU returned.
fn adopt(fd: i32) -> OwnedFd {
    // SAFETY: the module just created `fd` for this process and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn ioctls(dev: &Device, rounds: u64, seed: u64, guests: &str) -> bool {
    println!("ioctl fuzzing: {rounds} rounds, seed {seed:#x}");
    let mut rng = Rng(seed | 1);
    let mut buf = Box::new([0u8; FUZZ_BUFFER]);
    let mut t = IoctlTally::default();
    let result = (|| -> Result<(), String> {
        for round in 0..rounds {
            // Fresh objects now and then, with and without memory.
            let vm = dev.create_vm().map_err(|e| e.to_string())?;
            let mem = GuestMemory::new(64 << 10).map_err(|e| e.to_string())?;
            if round % 2 == 0 {
                vm.add_memory(0, 0, &mem).map_err(|e| e.to_string())?;
            }
            let vcpu = vm.create_vcpu().map_err(|e| e.to_string())?;
            for _ in 0..16 {
                let fd = match rng.below(3) {
                    0 => dev.as_fd(),
                    1 => vm.as_fd(),
                    _ => vcpu.as_fd(),
                };
                fuzz_round(fd, &mut rng, &mut buf, &mut t)?;
            }
        }
        Ok(())
    })();
    println!("  {} ioctls tried: {} succeeded, {} refused with an errno, {} interrupted; {} descriptors made and closed", t.tried, t.ok, t.refused, t.interrupted, t.fds);
    report("ioctl_fuzz", result);
    report("many_descriptors", many_descriptors(dev));
    report("one_vcpu_two_threads", one_vcpu_two_threads(dev, guests));
    report("vm_closed_while_vcpu_runs", vm_closed_while_vcpu_runs(dev, guests));
    true
}

/// 64 VMs with a vCPU each: past the ASIDs, CREATE_VCPU fails cleanly; after closing
/// everything, every ASID is back.
fn many_descriptors(dev: &Device) -> Result<(), String> {
    let asids = dev.capability(abi::cap::ASIDS).map_err(|e| e.to_string())?.min(4096) - 1;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..64 {
        let vm = dev.create_vm().map_err(|e| e.to_string())?;
        match vm.create_vcpu() {
            Ok(v) => held.push((vm, Some(v))),
            Err(e) if sys::errno_of(&e) == Some(Errno::ENOSPC) => {
                refused += 1;
                held.push((vm, None));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let made = held.iter().filter(|(_, v)| v.is_some()).count() as u64;
    if made != asids.min(64) || refused != 64 - made {
        return Err(format!("{made} vCPUs made, {refused} refused, with {asids} ASIDs"));
    }
    drop(held);
    let again: Vec<_> = (0..made).map(|_| dev.create_vm().and_then(|vm| vm.create_vcpu().map(|v| (vm, v)))).collect::<Result<_, _>>().map_err(|e| format!("after closing: {e}"))?;
    drop(again);
    Ok(())
}

fn spin_vcpu(dev: &Device, guests: &str) -> Result<(sys::Vm, GuestMemory, sys::Vcpu), String> {
    let image = std::fs::read(format!("{guests}/spin.bin")).map_err(|e| e.to_string())?;
    let BareVm { vm, mem, mut vcpus } = bare_vm(dev, 1 << 20, &image, EntryMode::Long, 1)?;
    Ok((vm, mem, vcpus.remove(0)))
}

/// Keeps `vcpu` running (RUN again after every exit) on a thread until `stop`, counting
/// interrupted RUNs.
fn keep_running(vcpu: Arc<std::sync::Mutex<sys::Vcpu>>, fd: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        let mut interrupted = 0;
        while !stop.load(Ordering::SeqCst) {
            // Each thread RUNs the same vCPU through its own descriptor copy.
            match sys::run_fd(fd) {
                Ok(false) => interrupted += 1,
                Ok(true) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let _ = vcpu;
        Ok(interrupted)
    })
}

/// One vCPU descriptor RUN from two threads at once: the module serializes them; both
/// return when signalled.
fn one_vcpu_two_threads(dev: &Device, guests: &str) -> Result<(), String> {
    let (_vm, _mem, vcpu) = spin_vcpu(dev, guests)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&vcpu.as_fd());
    let vcpu = Arc::new(std::sync::Mutex::new(vcpu));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2).map(|_| keep_running(vcpu.clone(), fd, stop.clone())).collect();
    let ids: Vec<_> = threads.iter().map(|t| sys::thread_id(t)).collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
        for &id in &ids {
            sys::signal_thread(id);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        for &id in &ids {
            sys::signal_thread(id);
        }
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| "thread panicked")??;
    }
    if total == 0 {
        return Err("no RUN was interrupted".into());
    }
    Ok(())
}

/// Closing the VM descriptor (and unmapping its memory) while the vCPU runs: the vCPU
/// keeps its VM and pinned memory alive until it is closed.
fn vm_closed_while_vcpu_runs(dev: &Device, guests: &str) -> Result<(), String> {
    let (vm, mem, vcpu) = spin_vcpu(dev, guests)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&vcpu.as_fd());
    let vcpu = Arc::new(std::sync::Mutex::new(vcpu));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = keep_running(vcpu.clone(), fd, stop.clone());
    let id = sys::thread_id(&thread);
    std::thread::sleep(Duration::from_millis(100));
    drop(vm);
    drop(mem);
    std::thread::sleep(Duration::from_millis(100));
    sys::signal_thread(id);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    for _ in 0..50 {
        sys::signal_thread(id);
        if thread.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    thread.join().map_err(|_| "thread panicked")??;
    Ok(())
}

// ---------------------------------------------------------------- lifecycle

fn lifecycle(dev: &Device, cycles: u64, guest: &str) -> bool {
    let in_use = || -> Result<(u64, u64), String> {
        let cap = |c| dev.capability(c).map_err(|e| e.to_string());
        Ok((cap(abi::cap::PAGES_HELD)?, cap(abi::cap::PAGES_PINNED)?))
    };
    let before = match in_use() {
        Ok(v) => v,
        Err(e) => return report("lifecycle_cycles", Err(e)),
    };
    let result = (|| -> Result<(), String> {
        let image = std::fs::read(guest).map_err(|e| e.to_string())?;
        for n in 0..cycles {
            let BareVm { vm: _vm, mem: _mem, mut vcpus } = bare_vm(dev, 1 << 20, &image, EntryMode::Long, 1)?;
            let vcpu = &mut vcpus[0];
            loop {
                vcpu.run().map_err(|e| e.to_string())?;
                match vcpu.run_page().exit_reason {
                    abi::exit::IO => {}
                    abi::exit::HLT => break,
                    r => return Err(format!("cycle {n}: exit {r}")),
                }
            }
        }
        Ok(())
    })();
    println!("lifecycle: {cycles} cycles of create VM, add memory, run {guest} to HLT, destroy");
    report("lifecycle_cycles", result);
    let after = in_use();
    if let Ok(after) = after {
        println!("  module pages before: {} held, {} pinned; after: {} held, {} pinned", before.0, before.1, after.0, after.1);
    }
    report("lifecycle_memory_returns", match after {
        Ok(after) if after == before => Ok(()),
        Ok(after) => Err(format!("module pages {before:?} before, {after:?} after")),
        Err(e) => Err(e),
    })
}

// ---------------------------------------------------------------- disk check

/// The writer guest's stamp (guest/src/bin/writer.rs).
fn stamp(g: u32, s: u32, i: usize) -> u8 {
    match i {
        0..=3 => g.to_le_bytes()[i],
        4..=7 => s.to_le_bytes()[i - 4],
        _ => (g.wrapping_mul(31).wrapping_add(s * 7).wrapping_add(i as u32)) as u8,
    }
}

fn check_disk(image: &str, log: &str, killed: bool) -> bool {
    let result = (|| -> Result<String, String> {
        let disk = std::fs::read(image).map_err(|e| format!("{image}: {e}"))?;
        let text = std::fs::read_to_string(log).map_err(|e| format!("{log}: {e}"))?;
        let sectors = disk.len() / 512;
        let mut reported = vec![0u32; sectors];
        let mut lines = 0;
        for line in text.lines().filter(|l| l.starts_with("w ")) {
            let mut f = line[2..].split(' ').map(str::parse::<u32>);
            if let (Some(Ok(g)), Some(Ok(s)), None) = (f.next(), f.next(), f.next()) {
                if (s as usize) < sectors {
                    reported[s as usize] = reported[s as usize].max(g);
                    lines += 1;
                }
            }
        }
        if lines == 0 {
            return Err("the writer reported no completed write".into());
        }
        let mut bad = Vec::new();
        for (s, sector) in disk.chunks(512).enumerate() {
            let g = u32::from_le_bytes(sector[..4].try_into().unwrap());
            let whole = if g == 0 { sector.iter().all(|&b| b == 0) } else { (0..512).all(|i| sector[i] == stamp(g, s as u32, i)) };
            // Every reported write is there; at most one more (done, not yet reported).
            let fresh = g >= reported[s] && g <= reported[s] + 1;
            if !whole || !fresh {
                bad.push(format!("sector {s}: stamp g={g}, last reported {}", reported[s]));
            }
        }
        let allowed = if killed { 1 } else { 0 };
        if bad.len() > allowed {
            return Err(format!("{} bad sectors: {}", bad.len(), bad.join("; ")));
        }
        Ok(format!("{lines} completed writes reported, {} sectors checked, {} not as reported", sectors, bad.len()))
    })();
    match result {
        Ok(summary) => {
            println!("  {image}: {summary}");
            report("disk_image_consistent", Ok(()))
        }
        Err(e) => report("disk_image_consistent", Err(e)),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, default: u64| -> u64 {
        args.get(i).map(|a| match a.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap_or(default),
            None => a.parse().unwrap_or(default),
        }).unwrap_or(default)
    };
    let seed_now = || Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64 ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    if args.get(1).map(String::as_str) == Some("check-disk") {
        let (Some(image), Some(log)) = (args.get(2), args.get(3)) else {
            eprintln!("usage: yakvm-stress check-disk IMAGE LOG [--killed]");
            std::process::exit(2);
        };
        check_disk(image, log, args.get(4).map(String::as_str) == Some("--killed"));
        return;
    }
    let dev = match Device::open("/dev/yakvm").and_then(|d| sys::interrupt_on_alarm().map(|()| d)) {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL stress_setup: {e}");
            std::process::exit(1);
        }
    };
    let guests = "/mnt/shares/guests";
    match args.get(1).map(String::as_str) {
        Some("random-guests") => random_guests(&dev, num(2, 1000), num(3, seed_now()), false),
        Some("random-steps") => random_guests(&dev, num(2, 1000), num(3, seed_now()), true),
        Some("ioctls") => ioctls(&dev, num(2, 500), num(3, seed_now()), guests),
        Some("lifecycle") => lifecycle(&dev, num(2, 100), args.get(3).map_or("/mnt/shares/guests/hello.bin", String::as_str)),
        _ => {
            eprintln!("usage: yakvm-stress random-guests [COUNT [SEED]] | random-steps [COUNT [SEED]] | ioctls [ROUNDS [SEED]] | lifecycle [CYCLES [GUEST]] | check-disk IMAGE LOG [--killed]");
            std::process::exit(2);
        }
    };
}
