//! `--gdb PORT`: a gdb remote stub on localhost:PORT (the `gdbstub` crate, x86-64
//! registers from `gdbstub_arch`). The module stops the guest for it (`SET_GUEST_DEBUG`):
//! single steps and INT3 breakpoints come back as DEBUG exits.
//!
//! - Registers: the general ones, RIP, RFLAGS and the segment selectors (x87/SSE read as
//!   0, writes to them and to selectors are ignored); `monitor sregs` shows the control,
//!   segment and descriptor-table registers.
//! - Memory: linear (guest-virtual) addresses, through the guest's page tables (physical
//!   while paging is off).
//! - Breakpoints: software (INT3 written into guest memory by the stub); no hardware
//!   breakpoints or watchpoints. `stepi` steps one instruction with external interrupts
//!   held back; Ctrl-C stops a running guest; the guest's end is reported to gdb.
//! - One session: after gdb detaches (or goes away), the guest runs on to its end.

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::outputln;
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{SingleThreadBase, SingleThreadResume, SingleThreadSingleStep};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{Breakpoints, SwBreakpoint};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;

use crate::machine::{Error, Machine, Outcome};
use crate::{mmu, sys};
use yakvm_abi::{self as abi, guest_debug as ctl};

const INT3: u8 = 0xcc;
const BP_VECTOR: u32 = 3;

/// Runs `machine` with a gdb stub on localhost:`port`. With `wait` the guest waits for
/// gdb before its first instruction; otherwise it runs, and stops when gdb connects.
pub fn run(machine: &mut Machine, port: u16, wait: bool) -> Result<Outcome, Error> {
    // The hypervisor must be able to stop the guest for gdb (KVM cannot, here).
    machine.vcpu().set_guest_debug(0)?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    eprintln!("yakvm: gdb stub on localhost:{port} (gdb: target remote :{port})");
    let stop = Arc::new(AtomicBool::new(false));
    machine.set_stop_request(stop.clone());
    let kicker = machine.vcpu().kickable()?;
    // The connection is accepted on a thread, so that a running guest stops for it.
    let (conn_tx, conn_rx) = mpsc::channel();
    let accept_stop = stop.clone();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            // The stop first: once the connection is taken the flag is cleared.
            accept_stop.store(true, Ordering::SeqCst);
            kicker.kick();
            let _ = conn_tx.send(stream);
        }
    });
    let conn = if wait {
        conn_rx.recv().map_err(|_| io::Error::other("the gdb listener failed"))?
    } else {
        match machine.run()? {
            Outcome::Debug(None) => conn_rx.recv().map_err(|_| io::Error::other("the gdb listener failed"))?,
            outcome => return Ok(outcome),
        }
    };
    stop.store(false, Ordering::SeqCst);
    eprintln!("yakvm: gdb connected; the guest stopped");
    conn.set_nodelay(true)?;
    let mut target = Debuggee { machine, breakpoints: HashMap::new(), step: false, ended: None, kicker, stop };
    let result = GdbStub::new(conn).run_blocking::<Loop>(&mut target);
    if let Some(ended) = target.ended.take() {
        return ended;
    }
    match result {
        Ok(DisconnectReason::Kill) => return Ok(Outcome::Interrupted(nix::libc::SIGKILL)),
        Ok(_) => eprintln!("yakvm: gdb detached; the guest runs on"),
        Err(e) => eprintln!("yakvm: gdb went away ({e}); the guest runs on"),
    }
    target.detach()?;
    target.machine.run()
}

/// The guest as gdb sees it.
struct Debuggee<'m> {
    machine: &'m mut Machine,
    /// Linear address of each INT3 the stub wrote, and the byte it replaced.
    breakpoints: HashMap<u64, u8>,
    /// The next resume is one step.
    step: bool,
    /// How the run ended, once it has.
    ended: Option<Result<Outcome, Error>>,
    kicker: sys::Kicker,
    stop: Arc<AtomicBool>,
}

impl Debuggee<'_> {
    fn sregs(&mut self) -> io::Result<abi::Sregs> {
        self.machine.vcpu().sregs()
    }

    /// Runs the guest until the module reports a stop gdb must see, gdb sends something
    /// (Ctrl-C), or the run ends.
    fn resume(&mut self, conn: &mut TcpStream) -> Result<run_blocking::Event<SingleThreadStopReason<u64>>, Error> {
        let mut control = ctl::ENABLE | ctl::SW_BP;
        if self.step {
            control |= ctl::SINGLESTEP | ctl::BLOCK_IRQ;
        }
        loop {
            self.machine.vcpu().set_guest_debug(control)?;
            let watcher = Watcher::start(conn, self.kicker, self.stop.clone())?;
            let outcome = self.machine.run();
            watcher.finish();
            self.stop.store(false, Ordering::SeqCst);
            let reason = match outcome {
                Ok(Outcome::Debug(None)) => match conn.peek()? {
                    Some(_) => return Ok(run_blocking::Event::IncomingData(conn.read()?)),
                    None => continue, // nothing came after all: run on
                },
                Ok(Outcome::Debug(Some(d))) if d.exception == BP_VECTOR => {
                    if !self.breakpoints.contains_key(&d.pc) {
                        // The guest's own INT3: it gets its #BP, and runs on.
                        self.machine.vcpu().set_guest_debug(control | ctl::INJECT_BP)?;
                        continue;
                    }
                    SingleThreadStopReason::SwBreak(())
                }
                Ok(Outcome::Debug(Some(_))) => SingleThreadStopReason::DoneStep,
                Ok(Outcome::Exit(status)) => self.end(Ok(Outcome::Exit(status)), SingleThreadStopReason::Exited(status)),
                Ok(Outcome::Interrupted(signal)) => {
                    self.end(Ok(Outcome::Interrupted(signal)), SingleThreadStopReason::Terminated(Signal(signal as u8)))
                }
                Ok(outcome) => self.end(Ok(outcome), SingleThreadStopReason::Exited(0)),
                Err(e) => {
                    eprintln!("yakvm: {e}");
                    self.end(Err(e), SingleThreadStopReason::Terminated(Signal::SIGSEGV))
                }
            };
            return Ok(run_blocking::Event::TargetStopped(reason));
        }
    }

    fn end(&mut self, ended: Result<Outcome, Error>, reason: SingleThreadStopReason<u64>) -> SingleThreadStopReason<u64> {
        self.ended = Some(ended);
        reason
    }

    /// gdb is gone: its breakpoints leave guest memory, the module stops stopping.
    fn detach(&mut self) -> Result<(), Error> {
        let sregs = self.sregs()?;
        for (addr, byte) in self.breakpoints.drain() {
            mmu::write_virt(self.machine.memory(), &sregs, addr, &[byte]);
        }
        self.machine.vcpu().set_guest_debug(0)?;
        Ok(())
    }
}

/// While the guest runs: a thread that stops it when gdb sends something (Ctrl-C, or
/// the end of the connection).
struct Watcher {
    cancel: OwnedFd,
    thread: JoinHandle<()>,
}

impl Watcher {
    fn start(conn: &TcpStream, kicker: sys::Kicker, stop: Arc<AtomicBool>) -> io::Result<Self> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let socket = conn.try_clone()?;
        let (wake, cancel) = nix::unistd::pipe()?;
        let thread = std::thread::spawn(move || {
            let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN), PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::NONE).is_ok() && fds[1].revents().is_none_or(|r| r.is_empty()) {
                stop.store(true, Ordering::SeqCst);
                kicker.kick();
            }
        });
        Ok(Self { cancel, thread })
    }

    /// Stops the thread (it sets nothing afterwards).
    fn finish(self) {
        let _ = nix::unistd::write(&self.cancel, &[0]);
        let _ = self.thread.join();
    }
}

impl Target for Debuggee<'_> {
    type Arch = X86_64_SSE;
    type Error = Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<gdbstub::target::ext::breakpoints::BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<gdbstub::target::ext::monitor_cmd::MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for Debuggee<'_> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let vcpu = self.machine.vcpu();
        let (r, s) = (vcpu.regs()?, vcpu.sregs()?);
        regs.regs = [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15];
        regs.eflags = r.rflags as u32;
        regs.rip = r.rip;
        let seg = &mut regs.segments;
        (seg.cs, seg.ss, seg.ds, seg.es, seg.fs, seg.gs) =
            (s.cs.selector.into(), s.ss.selector.into(), s.ds.selector.into(), s.es.selector.into(), s.fs.selector.into(), s.gs.selector.into());
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        let vcpu = self.machine.vcpu();
        let old = vcpu.regs()?;
        let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15] = regs.regs;
        // The upper half of RFLAGS is reserved (zero).
        let rflags = (old.rflags & !0xffff_ffff) | u64::from(regs.eflags);
        let new = abi::Regs { rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15, rip: regs.rip, rflags };
        vcpu.set_regs(&new)?;
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let sregs = self.sregs()?;
        match mmu::read_virt(self.machine.memory(), &sregs, start, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let sregs = self.sregs()?;
        if mmu::write_virt(self.machine.memory(), &sregs, start, data) != data.len() {
            return Err(TargetError::NonFatal);
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<gdbstub::target::ext::base::singlethread::SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Debuggee<'_> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.step = false;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<gdbstub::target::ext::base::singlethread::SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Debuggee<'_> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.step = true;
        Ok(())
    }
}

impl Breakpoints for Debuggee<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<gdbstub::target::ext::breakpoints::SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Debuggee<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let (sregs, mem) = (self.sregs()?, self.machine.memory());
        let mut byte = [0u8];
        if mmu::read_virt(mem, &sregs, addr, &mut byte) != 1 || mmu::write_virt(mem, &sregs, addr, &[INT3]) != 1 {
            return Ok(false);
        }
        self.breakpoints.insert(addr, byte[0]);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(byte) = self.breakpoints.remove(&addr) else { return Ok(false) };
        let sregs = self.sregs()?;
        Ok(mmu::write_virt(self.machine.memory(), &sregs, addr, &[byte]) == 1)
    }
}

impl MonitorCmd for Debuggee<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), Self::Error> {
        match cmd {
            b"sregs" => {
                let s = self.sregs()?;
                outputln!(out, "cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}", s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
                for (name, g) in [("cs", s.cs), ("ds", s.ds), ("es", s.es), ("fs", s.fs), ("gs", s.gs), ("ss", s.ss), ("tr", s.tr), ("ldt", s.ldt)] {
                    outputln!(out, "{name:<3} {:#06x} base {:#x} limit {:#x} attrib {:#x}", g.selector, g.base, g.limit, g.attrib);
                }
                outputln!(out, "gdt base {:#x} limit {:#x}; idt base {:#x} limit {:#x}", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
            }
            _ if cmd.starts_with(b"disas") => {
                let count = std::str::from_utf8(&cmd[5..]).ok().and_then(|n| n.trim().parse().ok()).unwrap_or(5).min(64);
                let (vcpu, mem) = self.machine.vcpu_and_memory();
                for line in crate::steptrace::disassemble(vcpu, mem, count)? {
                    outputln!(out, "{line}");
                }
            }
            _ => {
                outputln!(out, "yakvm monitor commands:");
                outputln!(out, "  sregs      control, segment and descriptor-table registers");
                outputln!(out, "  disas [N]  N instructions at CS:RIP in the guest's current mode (16, 32 or 64-bit)");
            }
        }
        Ok(())
    }
}

/// gdbstub's blocking event loop over a `Debuggee`.
struct Loop<'m>(PhantomData<&'m mut ()>);

impl<'m> run_blocking::BlockingEventLoop for Loop<'m> {
    type Target = Debuggee<'m>;
    type Connection = TcpStream;
    type StopReason = SingleThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Self::Target,
        conn: &mut Self::Connection,
    ) -> Result<run_blocking::Event<Self::StopReason>, run_blocking::WaitForStopReasonError<Error, io::Error>> {
        target.resume(conn).map_err(|e| match e {
            Error::Io(e) => run_blocking::WaitForStopReasonError::Connection(e),
            e => run_blocking::WaitForStopReasonError::Target(e),
        })
    }

    fn on_interrupt(_target: &mut Self::Target) -> Result<Option<Self::StopReason>, Error> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}
