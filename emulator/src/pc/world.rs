//! The pc board as the vCPU loop sees it (`board::Board`): its devices (`PcBoard`) and
//! what it needs beyond them: the host timers of the local APICs, and the event thread,
//! which raises the PIT's and the console's interrupt lines itself ([`PcEvents`]) and
//! reads the console's escape keys.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::board::{Interrupts, KeyboardController, PcBoard, PitDevice, UartDevice};
use super::console::{Escape, Key};
use crate::board::Board;
use crate::bus::lock;
use crate::events::{EventSink, Events, HostTimer, Waker};
use crate::run::{Error, Outcome};

/// The pc board: its devices, and what it needs beyond them.
pub(crate) struct PcWorld {
    board: PcBoard,
    _events: Events,
    /// One per local APIC, and the deadline (board clock, ns) each is armed for.
    apic_timers: Vec<(HostTimer, Option<u64>)>,
    /// The user typed Ctrl-A X (set by the event thread).
    quit: Arc<AtomicBool>,
    /// Standard input has not ended (cleared by the event thread).
    input_open: Arc<AtomicBool>,
}

impl PcWorld {
    /// `board` with the host timers of `cpus` local APICs, and the event thread that
    /// watches them, the PIT's host timer and the console's `input` (standard input),
    /// ringing `wakers`.
    pub(crate) fn start(board: PcBoard, cpus: usize, wakers: Arc<[Waker]>, input: Option<OwnedFd>, console_is_terminal: bool) -> io::Result<Self> {
        let apic_timers = (0..cpus).map(|_| HostTimer::new()).collect::<io::Result<Vec<_>>>()?;
        let quit = Arc::new(AtomicBool::new(false));
        let input_open = Arc::new(AtomicBool::new(input.is_some()));
        let input_to = if lock(&board.keyboard).has_keyboard() { Input::Keyboard(board.keyboard.clone()) } else { Input::Uart(board.uart.clone()) };
        let sink = PcEvents {
            pit: board.pit.clone(),
            input: input_to,
            escape: console_is_terminal.then(Escape::new),
            quit: quit.clone(),
            input_open: input_open.clone(),
            wakers: wakers.clone(),
        };
        let pit_timer = lock(&board.pit).host_timer();
        let events = Events::start(pit_timer, input, apic_timers.clone(), wakers, Box::new(sink))?;
        let apic_timers = apic_timers.into_iter().map(|t| (t, None)).collect();
        Ok(PcWorld { board, _events: events, apic_timers, quit, input_open })
    }
}

/// Where console input goes: the UART, or (`--vga`) the PS/2 keyboard.
enum Input {
    Uart(Arc<Mutex<UartDevice>>),
    Keyboard(Arc<Mutex<KeyboardController>>),
}

impl Input {
    fn console_input(&self, bytes: &[u8]) {
        match self {
            Input::Uart(uart) => lock(uart).console_input(bytes),
            Input::Keyboard(keyboard) => lock(keyboard).console_input(bytes),
        }
    }

    fn input_backlog(&self) -> usize {
        match self {
            Input::Uart(uart) => lock(uart).input_backlog(),
            Input::Keyboard(keyboard) => lock(keyboard).input_backlog(),
        }
    }
}

/// What the event thread does with the pc board's events, on its own thread: the PIT's
/// edges and the console's bytes raise IRQ0 and IRQ4 (IRQ1 with `--vga`'s keyboard) through the devices' `IrqLine`s
/// (which wake the vCPU they reach); Ctrl-A X ends the run (every vCPU is woken to see it).
struct PcEvents {
    pit: Arc<Mutex<PitDevice>>,
    /// The console's input: the UART or the keyboard.
    input: Input,
    /// Ctrl-A commands, when the console is a terminal.
    escape: Option<Escape>,
    quit: Arc<AtomicBool>,
    input_open: Arc<AtomicBool>,
    wakers: Arc<[Waker]>,
}

impl PcEvents {
    fn wake_all(&self) {
        for waker in self.wakers.iter() {
            waker.wake();
        }
    }
}

impl EventSink for PcEvents {
    fn timer(&mut self, _expired: bool) {
        // By the clock either way.
        lock(&self.pit).timer_tick();
    }

    fn input(&mut self, bytes: &[u8]) {
        if self.quit.load(Ordering::SeqCst) {
            return;
        }
        let Some(escape) = self.escape.as_mut() else {
            self.input.console_input(bytes);
            return;
        };
        let mut to_guest = Vec::with_capacity(bytes.len());
        let mut rest = bytes;
        while !rest.is_empty() {
            let (key, used) = escape.filter(rest, &mut to_guest);
            rest = &rest[used..];
            match key {
                Some(Key::Quit) => {
                    // What came before the command reaches the guest; nothing after it.
                    self.input.console_input(&to_guest);
                    self.quit.store(true, Ordering::SeqCst);
                    self.wake_all();
                    return;
                }
                Some(Key::Help) => eprint!("\r\n{}\r\n", crate::pc::console::HELP.replace('\n', "\r\n")),
                _ => {}
            }
        }
        self.input.console_input(&to_guest);
    }

    fn input_closed(&mut self) {
        self.input_open.store(false, Ordering::SeqCst);
        // An idle vCPU looks again whether anything can still wake it.
        self.wake_all();
    }

    fn backlog(&self) -> usize {
        self.input.input_backlog()
    }
}

impl Board for PcWorld {
    fn hlt_ends_run(&self) -> bool {
        false
    }

    fn interrupts(&self) -> Option<Arc<Mutex<Interrupts>>> {
        Some(self.board.interrupts.clone())
    }

    fn now_ns(&self) -> u64 {
        self.board.now_ns()
    }

    /// The user's Ctrl-A X (the event thread handles the rest itself).
    fn poll_events(&mut self) -> Result<Option<Outcome>, Error> {
        Ok(self.quit.load(Ordering::SeqCst).then_some(Outcome::Quit))
    }

    /// Arms vCPU `cpu`'s host timer for its local APIC's `deadline`, unless it is armed
    /// for it already.
    fn arm_apic_timer(&mut self, cpu: usize, deadline: Option<u64>, now_ns: u64) -> io::Result<()> {
        let (timer, armed) = &mut self.apic_timers[cpu];
        if *armed == deadline {
            return Ok(());
        }
        *armed = deadline;
        timer.arm(deadline.map(|d| Duration::from_nanos(d.saturating_sub(now_ns))), None)
    }

    fn idle_forever(&self) -> bool {
        let apic_timer = self.board.interrupts().apics.next_timer_deadline().is_some();
        let pit_timer = lock(&self.board.pit).timer_armed();
        !pit_timer && !apic_timer && !self.input_open.load(Ordering::SeqCst)
    }

    fn stats(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let irqs = self.board.interrupts().irqs;
        let irqs: Vec<String> = irqs.iter().enumerate().filter(|(_, &n)| n > 0).map(|(i, n)| format!("irq{i} {n}")).collect();
        if !irqs.is_empty() {
            lines.push(format!("interrupts by line: {}", irqs.join(", ")));
        }
        let pci = self.board.pci_stats();
        if pci.bars_refused > 0 || pci.bar_moves > 0 {
            lines.push(format!("pci bars: moved {}, refused {}", pci.bar_moves, pci.bars_refused));
        }
        let merged = lock(&self.board.pit).merged_ticks;
        if merged > 0 {
            lines.push(format!("timer ticks merged (the guest was not taking them fast enough): {merged}"));
        }
        lines.extend(self.board.virtio_stats());
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::tests::CTX;
    use crate::devices::tests::SharedOut;
    use crate::devices::Devices;
    use crate::disk::NoDisk;
    use std::time::Instant;

    /// The event thread, not a vCPU, raises IRQ0 when the PIT's count runs out and IRQ4
    /// when console bytes come, and wakes vCPU 0 halted on its doorbell each time.
    #[test]
    fn the_event_thread_raises_irq0_and_irq4_and_wakes_a_halted_vcpu() {
        let wakers: Arc<[Waker]> = Arc::from([Waker::new()]);
        let mut d = Devices::pc(SharedOut::default(), NoDisk, 0x1000_0000).unwrap();
        let board = PcBoard::new(16 << 20, wakers.clone(), d.console.clone()).unwrap();
        board.install(&mut d.ports, &mut d.mmio).unwrap();
        let controllers = board.interrupts.clone();
        let (read, write) = nix::unistd::pipe().unwrap();
        let world = PcWorld::start(board, 1, wakers.clone(), Some(read), false).unwrap();
        let out = |d: &mut Devices, port: u16, value: u8| d.ports.write(port.into(), &[value], &CTX).unwrap();
        // The master PIC as Linux sets it up (vector 0x30), IRQ0 and IRQ4 unmasked; the
        // UART's receive interrupt on (IER bit 0, OUT2 in MCR).
        for (port, value) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xee), (0x3f9, 0x01), (0x3fc, 0x08)] {
            out(&mut d, port, value);
        }
        // vCPU 0 halts: it notes the rings, finds nothing to do, and waits; a one-shot of
        // 20 ms (mode 0) runs out meanwhile.
        let halt_until = |what: &str, raise: &mut dyn FnMut()| {
            assert!(!lock(&controllers).interrupt_pending(0), "{what}: nothing pending before");
            let seen = wakers[0].rings();
            let start = Instant::now();
            raise();
            wakers[0].wait(seen, Duration::from_secs(20));
            assert!(start.elapsed() < Duration::from_secs(10), "{what}: vCPU 0 was not woken");
            // The doorbell rings after the line is raised.
            lock(&controllers).acknowledge(0)
        };
        let count = 23_864u16.to_le_bytes(); // 20 ms of 1.193182 MHz clocks
        let pit = &mut || {
            for (port, value) in [(0x43, 0x30), (0x40, count[0]), (0x40, count[1])] {
                out(&mut d, port, value);
            }
        };
        assert_eq!(halt_until("the PIT", pit), Some(0x30));
        out(&mut d, 0x20, 0x20); // EOI
        assert!(!world.idle_forever(), "standard input is open");
        let mut typed = || {
            nix::unistd::write(&write, b"k").unwrap();
        };
        assert_eq!(halt_until("console input", &mut typed), Some(0x34));
        assert_eq!(lock(&world.board.uart).input_backlog(), 0, "the byte is in the UART");
        // The end of the input: nothing can wake an idle guest any more.
        drop(write);
        let start = Instant::now();
        while !world.idle_forever() {
            assert!(start.elapsed() < Duration::from_secs(10), "the end of input was not seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
