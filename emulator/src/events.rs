//! The machine's outside world, seen from the vCPU threads: the host timer behind the PIT,
//! one host timer per local APIC, and the console's input. One helper thread waits on all
//! of them (poll) and hands what it sees to the board's [`EventSink`], which raises the
//! interrupt lines itself (an `IrqLine` sets the controllers' state and wakes the vCPUs it
//! reaches): no vCPU takes events for the others. An APIC timer wakes its own vCPU, which
//! looks at its APIC.
//!
//! A vCPU is woken by its [`Waker`]: a kick makes its `RUN` return (`sys::Kicker`), and a
//! doorbell ends its wait when it idles (HLT, waiting for a startup IPI).
//!
//! ```text
//!  event thread: poll(timerfds, stdin) -> sink: PIT edges, console bytes -> IrqLine
//!                                              -> controllers + wake the target vCPU
//!                APIC timer i          -> wake vCPU i
//!  vCPU thread:  clear kick, take its interrupt, RUN ...
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::sys::Kicker;

/// What the event thread does with what it sees, on its own thread (the board's devices:
/// the PIT and the console's UART).
pub trait EventSink: Send {
    /// The PIT's edges up to now: the host timer expired (`expired`), or the thread woke
    /// without news (a backstop, so that an expiry that came late cannot stall a guest).
    fn timer(&mut self, expired: bool);
    /// Bytes from standard input.
    fn input(&mut self, bytes: &[u8]);
    /// Standard input reached its end (or failed): no more input.
    fn input_closed(&mut self);
    /// Input read and not yet taken by the guest: the thread stops reading standard input
    /// above [`INPUT_BACKLOG`], so a large file on stdin waits in the file, not in memory.
    fn backlog(&self) -> usize;
}

/// The host timer the PIT programs: a monotonic timerfd, shared with the event thread.
#[derive(Clone)]
pub struct HostTimer(Arc<TimerFd>);

impl HostTimer {
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        Ok(Self(Arc::new(fd)))
    }

    /// Fires after `delay`, then every `period` if there is one; `None` disarms it.
    pub fn arm(&self, delay: Option<Duration>, period: Option<Duration>) -> io::Result<()> {
        let Some(delay) = delay else {
            return Ok(self.0.unset()?);
        };
        // A zero delay would disarm the timer: the smallest real one instead.
        let delay = TimeSpec::from_duration(delay.max(Duration::from_nanos(1)));
        let expiration = match period {
            Some(p) => Expiration::IntervalDelayed(delay, TimeSpec::from_duration(p)),
            None => Expiration::OneShot(delay),
        };
        Ok(self.0.set(expiration, TimerSetTimeFlags::empty())?)
    }

    /// Consumes the expirations so far (so poll stops reporting it).
    fn acknowledge(&self) {
        // Non-blocking: EAGAIN when another reader took them first is fine.
        let _ = self.0.wait();
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// How any thread gets a vCPU's attention: a kick for its `RUN`, and a doorbell for its
/// waits. The vCPU's thread sets the kicker when it starts and takes it away before it
/// ends, so nobody kicks a thread that is gone.
#[derive(Default)]
pub struct Waker {
    kicker: Mutex<Option<Kicker>>,
    doorbell: Mutex<Doorbell>,
    rung: Condvar,
}

#[derive(Default)]
struct Doorbell {
    /// Rings so far: a waiter notes the count, looks for work, then waits for a change.
    rings: u64,
    /// The vCPU is idle (halted, waiting in `wait`), not in or on its way to `RUN`: a ring
    /// is enough, no kick. Under the same lock as `rings`: a ring that saw `idle` comes
    /// before the vCPU's `set_idle(false)`, so the vCPU's next look at its interrupts
    /// (after it) sees what the ringer raised before ringing.
    idle: bool,
}

impl Waker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called on the vCPU's thread: `Some` when it starts, `None` before it ends.
    pub fn set_kicker(&self, kicker: Option<Kicker>) {
        *self.kicker.lock().unwrap_or_else(PoisonError::into_inner) = kicker;
    }

    /// Ends the vCPU's wait, and kicks it out of `RUN` unless it is idle. (A kick is a
    /// signal: to an idle vCPU it costs a second wake-up for nothing; `make bench`'s timer
    /// row, whose interrupts come from the event thread to a halted vCPU, measured it.)
    pub fn wake(&self) {
        let idle = {
            let mut bell = self.doorbell.lock().unwrap_or_else(PoisonError::into_inner);
            bell.rings += 1;
            bell.idle
        };
        self.rung.notify_all();
        if !idle {
            if let Some(kicker) = *self.kicker.lock().unwrap_or_else(PoisonError::into_inner) {
                kicker.kick();
            }
        }
    }

    /// Called on the vCPU's thread: `true` when it starts to idle (it then waits with
    /// `rings` and `wait`), `false` before it looks at its interrupts to enter `RUN`.
    pub fn set_idle(&self, idle: bool) {
        self.doorbell.lock().unwrap_or_else(PoisonError::into_inner).idle = idle;
    }

    /// The rings so far: note them before looking for work, then `wait(rings)`.
    pub fn rings(&self) -> u64 {
        self.doorbell.lock().unwrap_or_else(PoisonError::into_inner).rings
    }

    /// Waits up to `timeout` for a ring after the `seen` ones.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let bell = self.doorbell.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.rung.wait_timeout_while(bell, timeout, |b| b.rings == seen);
    }
}

thread_local! {
    /// The vCPU whose thread this is, if any (`set_current_cpu`).
    static CURRENT_CPU: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the calling thread as vCPU `cpu`'s (`None`: no vCPU's any more).
pub fn set_current_cpu(cpu: Option<usize>) {
    CURRENT_CPU.with(|c| c.set(cpu));
}

/// Wakes the vCPUs of `mask` (bit i: vCPU i), from any thread; the calling thread's own
/// vCPU is awake already (it looks at its interrupts before its next entry) and is not
/// kicked.
pub fn wake_cpus(wakers: &[Waker], mask: u32) {
    let me = CURRENT_CPU.with(|c| c.get());
    for (i, waker) in wakers.iter().enumerate() {
        if Some(i) != me && mask & (1 << i) != 0 {
            waker.wake();
        }
    }
}

/// The event thread. Dropping it ends the thread within `POLL_PERIOD_MS`.
pub struct Events {
    stop: Arc<AtomicBool>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How long the event thread sleeps in poll before checking whether it is still wanted
/// (and taking the PIT's edges by the clock, should a timer expiry be late).
const POLL_PERIOD_MS: u16 = 100;
/// Input the guest has not taken yet beyond which standard input is not read.
pub const INPUT_BACKLOG: usize = 64 * 1024;
/// How often the thread looks again while the backlog is full.
const BACKLOG_POLL_MS: u16 = 10;

impl Events {
    /// Starts the event thread on `timer` and, if there is one, the `input` descriptor
    /// (the console: standard input), handing what they bring to `sink`.
    /// `apic_timers[i]` wakes `wakers[i]`.
    pub fn start(timer: HostTimer, input: Option<OwnedFd>, apic_timers: Vec<HostTimer>, wakers: Arc<[Waker]>, sink: Box<dyn EventSink>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("yakvm-events".into())
            .spawn(move || event_loop(timer, input, &apic_timers, &wakers, sink, &stopped))?;
        Ok(Self { stop })
    }
}

fn event_loop(timer: HostTimer, mut input: Option<OwnedFd>, apic_timers: &[HostTimer], wakers: &[Waker], mut sink: Box<dyn EventSink>, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        // The PIT's timer, the APIC timers, then the input.
        let mut fds = vec![PollFd::new(timer.fd(), PollFlags::POLLIN)];
        fds.extend(apic_timers.iter().map(|t| PollFd::new(t.fd(), PollFlags::POLLIN)));
        let input_at = fds.len();
        let throttled = sink.backlog() >= INPUT_BACKLOG;
        match &input {
            Some(fd) if !throttled => fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            _ => {}
        }
        let period = if throttled { BACKLOG_POLL_MS } else { POLL_PERIOD_MS };
        match poll(&mut fds, PollTimeout::from(period)) {
            Ok(0) => {
                // Nothing came: the PIT's edges by the clock all the same, so that an
                // expiry that came late (or never) cannot stall a tickless guest.
                sink.timer(false);
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            // Acknowledged before the edges are taken: an expiry after this is not lost.
            timer.acknowledge();
            sink.timer(true);
        }
        for (i, apic_timer) in apic_timers.iter().enumerate() {
            if ready(&fds[1 + i]) {
                apic_timer.acknowledge();
                if let Some(waker) = wakers.get(i) {
                    waker.wake();
                }
            }
        }
        // The backlog may have filled while the thread waited in poll: read only below it.
        let input_ready = fds.get(input_at).is_some_and(ready) && sink.backlog() < INPUT_BACKLOG;
        drop(fds);
        if let (true, Some(fd)) = (input_ready, &input) {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => sink.input(&buf[..n]),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                // The end (or a broken descriptor): no more input.
                _ => {
                    input = None;
                    sink.input_closed();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::{self, Receiver, Sender};
    use std::time::Instant;

    /// What the test sink saw.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        /// `timer(expired)`.
        Timer(bool),
        Input(Vec<u8>),
        InputClosed,
    }

    /// A sink that reports what it is handed through a channel, with a backlog the test
    /// sets.
    struct Sink(Sender<Seen>, Arc<AtomicUsize>);

    impl EventSink for Sink {
        fn timer(&mut self, expired: bool) {
            let _ = self.0.send(Seen::Timer(expired));
        }
        fn input(&mut self, bytes: &[u8]) {
            let _ = self.0.send(Seen::Input(bytes.to_vec()));
        }
        fn input_closed(&mut self) {
            let _ = self.0.send(Seen::InputClosed);
        }
        fn backlog(&self) -> usize {
            self.1.load(Ordering::SeqCst)
        }
    }

    fn start(timer: HostTimer, input: Option<OwnedFd>) -> (Events, Receiver<Seen>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let events = Events::start(timer, input, Vec::new(), Arc::new([]), Box::new(Sink(tx, backlog.clone()))).unwrap();
        (events, rx, backlog)
    }

    /// The next thing the sink saw but the backstop's timer calls, within `timeout`.
    fn next_input(rx: &Receiver<Seen>, timeout: Duration) -> Option<Seen> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match rx.recv_timeout(left).ok()? {
                Seen::Timer(_) => continue,
                seen => return Some(seen),
            }
        }
    }

    #[test]
    fn input_and_its_end_arrive_in_order() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let (_events, rx, _) = start(HostTimer::new().unwrap(), Some(read));
        nix::unistd::write(&write, b"hello").unwrap();
        drop(write);
        let mut got = Vec::new();
        while let Some(seen) = next_input(&rx, Duration::from_secs(5)) {
            let end = seen == Seen::InputClosed;
            got.push(seen);
            if end {
                break;
            }
        }
        assert_eq!(got, [Seen::Input(b"hello".to_vec()), Seen::InputClosed]);
    }

    #[test]
    fn a_full_backlog_stops_reading() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let (_events, rx, backlog) = start(HostTimer::new().unwrap(), Some(read));
        backlog.store(INPUT_BACKLOG, Ordering::SeqCst);
        nix::unistd::write(&write, b"later").unwrap();
        assert_eq!(next_input(&rx, Duration::from_millis(300)), None, "read while the backlog was full");
        backlog.store(0, Ordering::SeqCst);
        assert_eq!(next_input(&rx, Duration::from_secs(5)), Some(Seen::Input(b"later".to_vec())));
    }

    #[test]
    fn the_timer_fires() {
        let timer = HostTimer::new().unwrap();
        let (_events, rx, _) = start(timer.clone(), None);
        timer.arm(Some(Duration::from_millis(5)), Some(Duration::from_millis(5))).unwrap();
        let mut expiries = 0;
        while expiries < 3 {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Seen::Timer(true)) => expiries += 1,
                Ok(Seen::Timer(false)) => {} // the backstop
                other => panic!("{other:?} instead of the timer"),
            }
        }
    }
}
