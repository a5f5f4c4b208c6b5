//! Signals: the stop signals that end a run cleanly, alarms that bound a run, and
//! signals sent to a thread to interrupt its blocked `RUN`.

use std::io;

use super::ctx;

/// The stop signal that arrived (SIGINT or SIGTERM), 0 for none.
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn note_stop_signal(signal: nix::libc::c_int) {
    STOP_SIGNAL.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGALRM (even where the parent ignored them, as shells do
/// for background jobs): a blocked `RUN` then returns `EINTR` and the run can end cleanly,
/// with its output flushed. `stop_signal` tells which arrived.
pub fn catch_stop_signals() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // No SA_RESTART: the interrupted RUN must return instead of being restarted.
    let action = SigAction::new(SigHandler::Handler(note_stop_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGALRM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(ctx("sigaction"))?;
    }
    Ok(())
}

/// Sends this process SIGALRM in `secs` seconds (`--timeout`; caught as a stop signal).
pub fn alarm(secs: u32) {
    nix::unistd::alarm::set(secs);
}

/// The stop signal caught since `catch_stop_signals`, if any.
pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Set when SIGALRM arrives after `interrupt_on_alarm`; cleared by `alarm_after`.
static ALARM_FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_alarm(signal: nix::libc::c_int) {
    if signal == nix::libc::SIGALRM {
        ALARM_FIRED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether the alarm set by `alarm_after` has gone off (it may arrive while the caller
/// is outside `RUN`, so a bounded run loop checks this too).
pub fn alarm_fired() -> bool {
    ALARM_FIRED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Makes SIGALRM and SIGUSR1 interrupt a blocked `RUN` (it returns `EINTR`) without
/// ending the process: for programs that bound each run themselves (the stress tests).
pub fn interrupt_on_alarm() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(note_alarm), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGALRM, Signal::SIGUSR1] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(ctx("sigaction"))?;
    }
    Ok(())
}

/// Sends this process SIGALRM once, after `after` (zero: cancels a pending one).
pub fn alarm_after(after: std::time::Duration) -> io::Result<()> {
    ALARM_FIRED.store(false, std::sync::atomic::Ordering::SeqCst);
    let value = nix::libc::itimerval {
        it_interval: nix::libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: nix::libc::timeval { tv_sec: after.as_secs() as _, tv_usec: after.subsec_micros() as _ },
    };
    // SAFETY: `value` is a valid itimerval; the old value is not asked for.
    let ret = unsafe { nix::libc::setitimer(nix::libc::ITIMER_REAL, &value, std::ptr::null_mut()) };
    nix::errno::Errno::result(ret).map(drop).map_err(ctx("setitimer"))
}

/// The pthread of a spawned thread, to signal it.
pub fn thread_id<T>(handle: &std::thread::JoinHandle<T>) -> nix::sys::pthread::Pthread {
    use std::os::unix::thread::JoinHandleExt;
    handle.as_pthread_t() as _
}

/// Sends SIGUSR1 to a thread (after `interrupt_on_alarm`, it interrupts a blocked RUN).
pub fn signal_thread(thread: nix::sys::pthread::Pthread) {
    let _ = nix::sys::pthread::pthread_kill(thread, nix::sys::signal::Signal::SIGUSR1);
}
