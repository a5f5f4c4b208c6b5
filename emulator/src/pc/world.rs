//! What the pc machine needs beyond its devices: the host timers behind the PIT and the
//! local APICs, the event thread, the console's escape keys.

use std::io;
use std::time::Duration;

use super::board::Board;
use crate::bus::lock;
use super::console::{Escape, Key};
use super::pit::IrqTimer;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::events::{Event, Events, HostTimer, Waker};
use crate::run::Outcome;

/// The fastest timer interrupt rate yakvm delivers (KVM's PIT has the same floor): a
/// guest that programs the PIT faster gets its ticks merged. The local APIC's timer has
/// the same floor (one number for both).
pub const MIN_TIMER_PERIOD: Duration = Duration::from_nanos(crate::pc::lapic::MIN_PERIODIC_NS);

/// What the pc machine needs beyond its devices: the host timers behind the PIT and the
/// local APICs, the event thread, the console's escape keys.
pub(crate) struct PcWorld {
    timer: HostTimer,
    pub(crate) events: Events,
    /// One per local APIC, and the deadline (board clock, ns) each is armed for.
    apic_timers: Vec<(HostTimer, Option<u64>)>,
    /// Ctrl-A commands, when the console is a terminal.
    escape: Option<Escape>,
    /// Standard input has not ended.
    pub(crate) input_open: bool,
    /// The host timer is armed.
    pub(crate) timer_armed: bool,
    warned_fast_timer: bool,
}

impl PcWorld {
    /// The host timers of the PIT and of `cpus` local APICs, and the event thread that
    /// watches them and the console's input (standard input), ringing `wakers`.
    pub(crate) fn start(cpus: usize, wakers: Arc<[Waker]>, console_is_terminal: bool) -> io::Result<Self> {
        let timer = HostTimer::new()?;
        let apic_timers = (0..cpus).map(|_| HostTimer::new()).collect::<io::Result<Vec<_>>>()?;
        // The console's input: standard input, read by the event thread.
        let input = std::io::stdin().as_fd().try_clone_to_owned()?;
        let events = Events::start(timer.clone(), Some(input), apic_timers.clone(), wakers)?;
        let escape = console_is_terminal.then(Escape::new);
        let apic_timers = apic_timers.into_iter().map(|t| (t, None)).collect();
        Ok(PcWorld { timer, events, apic_timers, escape, input_open: true, timer_armed: false, warned_fast_timer: false })
    }

    /// One event of the event thread; `Some` when it ends the run.
    pub(crate) fn handle_event(&mut self, event: Event, board: &Board) -> Option<Outcome> {
        match event {
            Event::Timer => self.take_timer_edges(board),
            Event::Input(bytes) => {
                let Some(escape) = self.escape.as_mut() else {
                    lock(&board.uart).console_input(&bytes);
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
                lock(&board.uart).console_input(&to_guest);
            }
            Event::InputClosed => self.input_open = false,
        }
        None
    }

    /// The PIT's edges on IRQ0 up to now.
    pub(crate) fn take_timer_edges(&mut self, board: &Board) {
        // Not only while the host timer is armed: a one-shot count the guest wrote can run
        // out before this vCPU's next pass arms anything, and its one edge must be taken.
        let mut pit = lock(&board.pit);
        pit.timer_tick();
        // A one-shot count that has run out wakes nobody any more.
        if pit.irq0_timer().is_none() {
            self.timer_armed = false;
        }
    }

    /// Arms vCPU `cpu`'s host timer for its local APIC's `deadline` (board clock, `now`
    /// is the time now), unless it is armed for it already.
    pub(crate) fn arm_apic_timer(&mut self, cpu: usize, deadline: Option<u64>, now_ns: u64) -> io::Result<()> {
        let (timer, armed) = &mut self.apic_timers[cpu];
        if *armed == deadline {
            return Ok(());
        }
        *armed = deadline;
        timer.arm(deadline.map(|d| Duration::from_nanos(d.saturating_sub(now_ns))), None)
    }

    /// Arms the host timer for channel 0 as the PIT now has it.
    pub(crate) fn arm(&mut self, timer: Option<IrqTimer>, now_ns: u64) -> io::Result<()> {
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
