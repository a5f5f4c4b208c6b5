//! The pc board as the vCPU loop sees it (`board::Board`): its devices (`PcBoard`) and
//! what it needs beyond them: the host timers behind the PIT and the local APICs, the
//! event thread, the console's escape keys.

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::board::{Interrupts, PcBoard};
use super::console::{Escape, Key};
use super::pit::IrqTimer;
use crate::board::Board;
use crate::bus::lock;
use crate::events::{Event, Events, HostTimer, Waker};
use crate::run::{Error, Outcome};

/// The fastest timer interrupt rate yakvm delivers (KVM's PIT has the same floor): a
/// guest that programs the PIT faster gets its ticks merged. The local APIC's timer has
/// the same floor (one number for both).
pub const MIN_TIMER_PERIOD: Duration = Duration::from_nanos(crate::pc::lapic::MIN_PERIODIC_NS);

/// The pc board: its devices, and what it needs beyond them.
pub(crate) struct PcWorld {
    board: PcBoard,
    timer: HostTimer,
    events: Events,
    /// One per local APIC, and the deadline (board clock, ns) each is armed for.
    apic_timers: Vec<(HostTimer, Option<u64>)>,
    /// Ctrl-A commands, when the console is a terminal.
    escape: Option<Escape>,
    /// Standard input has not ended.
    input_open: bool,
    /// The host timer is armed.
    timer_armed: bool,
    warned_fast_timer: bool,
}

impl PcWorld {
    /// `board` with the host timers of the PIT and of `cpus` local APICs, and the event
    /// thread that watches them and the console's input (standard input), ringing `wakers`.
    pub(crate) fn start(board: PcBoard, cpus: usize, wakers: Arc<[Waker]>, console_is_terminal: bool) -> io::Result<Self> {
        let timer = HostTimer::new()?;
        let apic_timers = (0..cpus).map(|_| HostTimer::new()).collect::<io::Result<Vec<_>>>()?;
        // The console's input: standard input, read by the event thread.
        let input = std::io::stdin().as_fd().try_clone_to_owned()?;
        let events = Events::start(timer.clone(), Some(input), apic_timers.clone(), wakers)?;
        let escape = console_is_terminal.then(Escape::new);
        let apic_timers = apic_timers.into_iter().map(|t| (t, None)).collect();
        Ok(PcWorld { board, timer, events, apic_timers, escape, input_open: true, timer_armed: false, warned_fast_timer: false })
    }

    /// One event of the event thread; `Some` when it ends the run.
    fn handle_event(&mut self, event: Event) -> Option<Outcome> {
        match event {
            Event::Timer => self.take_timer_edges(),
            Event::Input(bytes) => {
                let Some(escape) = self.escape.as_mut() else {
                    lock(&self.board.uart).console_input(&bytes);
                    return None;
                };
                let mut to_guest = Vec::with_capacity(bytes.len());
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let (key, used) = escape.filter(rest, &mut to_guest);
                    rest = &rest[used..];
                    match key {
                        Some(Key::Quit) => return Some(Outcome::Quit),
                        Some(Key::Help) => eprint!("\r\n{}\r\n", crate::pc::console::HELP.replace('\n', "\r\n")),
                        _ => {}
                    }
                }
                lock(&self.board.uart).console_input(&to_guest);
            }
            Event::InputClosed => self.input_open = false,
        }
        None
    }

    /// The PIT's edges on IRQ0 up to now.
    fn take_timer_edges(&mut self) {
        // Not only while the host timer is armed: a one-shot count the guest wrote can run
        // out before this vCPU's next pass arms anything, and its one edge must be taken.
        let mut pit = lock(&self.board.pit);
        pit.timer_tick();
        // A one-shot count that has run out wakes nobody any more.
        if pit.irq0_timer().is_none() {
            self.timer_armed = false;
        }
    }

    /// Arms the host timer for channel 0 as the PIT now has it.
    fn arm(&mut self, timer: Option<IrqTimer>, now_ns: u64) -> io::Result<()> {
        let Some(t) = timer else {
            self.timer_armed = false;
            return self.timer.arm(None, None);
        };
        let period = t.period_ns.map(Duration::from_nanos);
        if period.is_some_and(|p| p < MIN_TIMER_PERIOD) && !self.warned_fast_timer {
            self.warned_fast_timer = true;
            eprintln!(
                "yakvm: the guest runs the PIT at {:.0} Hz; timer interrupts are delivered at most every {} us (the others merge)",
                1e9 / t.period_ns.unwrap_or(1) as f64,
                MIN_TIMER_PERIOD.as_micros()
            );
        }
        self.timer_armed = true;
        let delay = Duration::from_nanos(t.next_ns.saturating_sub(now_ns));
        self.timer.arm(Some(delay), period.map(|p| p.max(MIN_TIMER_PERIOD)))
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

    /// What the event thread saw (timer expiries, console input), and the host timer
    /// following the PIT.
    fn poll_events(&mut self) -> Result<Option<Outcome>, Error> {
        while let Some(event) = self.events.try_next() {
            if let Some(outcome) = self.handle_event(event) {
                return Ok(Some(outcome));
            }
        }
        // The PIT's edges by the clock, at every pass: a timer event only wakes vCPU 0
        // sooner, and one that came late (or never) cannot stall a tickless guest (an
        // idle vCPU 0 passes here at least every `IDLE_POLL`).
        self.take_timer_edges();
        self.events.set_backlog(lock(&self.board.uart).input_backlog());
        let update = lock(&self.board.pit).timer_update();
        if let Some(timer) = update {
            self.arm(timer, self.board.now_ns())?;
        }
        Ok(None)
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
        !self.timer_armed && !apic_timer && !self.input_open
    }

    fn stats(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let irqs = self.board.interrupts().irqs;
        let irqs: Vec<String> = irqs.iter().enumerate().filter(|(_, &n)| n > 0).map(|(i, n)| format!("irq{i} {n}")).collect();
        if !irqs.is_empty() {
            lines.push(format!("interrupts by line: {}", irqs.join(", ")));
        }
        let merged = lock(&self.board.pit).merged_ticks;
        if merged > 0 {
            lines.push(format!("timer ticks merged (the guest was not taking them fast enough): {merged}"));
        }
        lines
    }
}
