//! Kicking a vCPU thread out of `RUN`: a signal whose handler sets the run page's
//! `immediate_exit` byte, for yakvm's and KVM's run pages alike.

use std::io;

use super::ctx;

/// The signal that kicks a vCPU thread out of `RUN`.
const KICK_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR2;

thread_local! {
    /// The `immediate_exit` byte of the run page of the vCPU this thread runs, yakvm's or
    /// KVM's (each vCPU thread has its own). Const-initialised and without a destructor:
    /// reading it is a plain thread-local load, fine in a signal handler.
    static KICK_FLAG: std::cell::Cell<*mut u8> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Most run pages kickable at once (every vCPU of a machine, with room to spare).
const MAX_KICK_FLAGS: usize = 64;

/// The kick flags whose run pages are mapped: a vCPU may be dropped on another thread
/// than the one it ran on, whose `KICK_FLAG` then still names its page. A kick writes
/// only a flag found here; `forget_kick_flag` takes it out before the unmap.
static LIVE_KICK_FLAGS: [std::sync::atomic::AtomicPtr<u8>; MAX_KICK_FLAGS] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; MAX_KICK_FLAGS];

fn kick_flag_live(flag: *mut u8) -> bool {
    LIVE_KICK_FLAGS.iter().any(|f| f.load(std::sync::atomic::Ordering::SeqCst) == flag)
}

extern "C" fn note_kick(_: nix::libc::c_int) {
    // `try_with`: nothing to do in a thread being torn down.
    let flag = KICK_FLAG.try_with(|f| f.get()).unwrap_or(std::ptr::null_mut());
    if !flag.is_null() && kick_flag_live(flag) {
        // SAFETY: a live flag points into a mapped run page (taken out of
        // `LIVE_KICK_FLAGS` before it is unmapped); a volatile one-byte store of plain data.
        unsafe { flag.write_volatile(1) };
    }
}

/// Makes the calling thread kickable through the `immediate_exit` byte at `flag`, which
/// must stay mapped until `forget_kick_flag(flag)`.
pub(super) fn kick_through(flag: *mut u8) -> io::Result<Kicker> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    use std::sync::atomic::Ordering::SeqCst;
    if !kick_flag_live(flag) {
        LIVE_KICK_FLAGS
            .iter()
            .find(|f| f.compare_exchange(std::ptr::null_mut(), flag, SeqCst, SeqCst).is_ok())
            .ok_or_else(|| io::Error::other(format!("more than {MAX_KICK_FLAGS} kickable vCPUs")))?;
    }
    KICK_FLAG.with(|f| f.set(flag));
    // No SA_RESTART: the interrupted RUN must return.
    let action = SigAction::new(SigHandler::Handler(note_kick), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only reads a thread-local and atomics and does a volatile byte
    // store into a mapped run page (async-signal-safe); the page stays mapped while its
    // flag is in `LIVE_KICK_FLAGS` (taken out by `forget_kick_flag` before the unmap).
    unsafe { sigaction(KICK_SIGNAL, &action) }.map_err(ctx("sigaction"))?;
    Ok(Kicker(Some(nix::sys::pthread::pthread_self())))
}

/// A run page is about to be unmapped: a late kick must not write into it (from any
/// thread: the one that ran the vCPU may still have it as its `KICK_FLAG`).
pub(super) fn forget_kick_flag(flag: *mut u8) {
    use std::sync::atomic::Ordering::SeqCst;
    if flag.is_null() {
        return;
    }
    for f in &LIVE_KICK_FLAGS {
        let _ = f.compare_exchange(flag, std::ptr::null_mut(), SeqCst, SeqCst);
    }
    let _ = KICK_FLAG.try_with(|f| {
        if f.get() == flag {
            f.set(std::ptr::null_mut());
        }
    });
}

/// Makes a vCPU thread return from `RUN` (see `Vcpu::kickable`). Any thread may kick.
#[derive(Clone, Copy)]
pub struct Kicker(Option<nix::sys::pthread::Pthread>);

impl Kicker {
    /// A kicker that kicks nobody (tests of the event thread).
    pub fn none() -> Self {
        Self(None)
    }

    pub fn kick(&self) {
        if let Some(thread) = self.0 {
            let _ = nix::sys::pthread::pthread_kill(thread, KICK_SIGNAL);
        }
    }
}
