// SPDX-License-Identifier: GPL-2.0
//! The kernel APIC's wake-up machinery for one vCPU (glue.c's `yakvm_apic_hw`): the APIC
//! timer on an hrtimer, the wait of a halted vCPU, and the kick that makes a vCPU look at
//! its APIC again (waking it, or making its guest exit with a reschedule IPI to the CPU it
//! runs on). What the APIC holds is the caller's (svm/apic.rs).

use super::glue;
use kernel::ffi::c_void;
use kernel::prelude::*;

/// The monotonic clock (CLOCK_MONOTONIC), in nanoseconds: the APIC timer's time base.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: `ktime_get_ns` may be called from any context.
    unsafe { glue::yakvm_now_ns() }
}

/// The TSC's rate in kHz, as the kernel calibrated it at boot (0 without one).
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: reads `tsc_khz`, a variable the kernel sets during boot.
    unsafe { glue::yakvm_tsc_khz() }
}

/// One vCPU's timer, wait queue and kick.
///
/// # Invariants
/// `hw` was returned by `yakvm_apic_hw_new` and is freed only by `Drop`.
pub(crate) struct ApicHw {
    hw: *mut c_void,
}

// SAFETY: every glue function on `hw` may be called from any thread (atomics, a wait queue
// and an hrtimer, each with its own locking).
unsafe impl Send for ApicHw {}
// SAFETY: as for `Send`: no method needs exclusive access.
unsafe impl Sync for ApicHw {}

impl ApicHw {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: allocates and initialises the structure; no precondition.
        let hw = unsafe { glue::yakvm_apic_hw_new() };
        if hw.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: `hw` is fresh from `yakvm_apic_hw_new`.
        Ok(Self { hw })
    }

    /// Makes the vCPU look at its APIC: wakes it if it waits, makes its guest exit if it
    /// runs one, or makes its next entry look first. Any context, interrupts included.
    pub(crate) fn kick(&self) {
        // SAFETY: `hw` is valid (type invariant).
        unsafe { glue::yakvm_apic_kick(self.hw) }
    }

    /// Arms the timer to kick the vCPU at `deadline_ns` (`now_ns`'s clock), or stops it.
    pub(crate) fn arm(&self, deadline_ns: Option<u64>) {
        // SAFETY: `hw` is valid (type invariant); the timer's callback only kicks.
        unsafe { glue::yakvm_apic_timer_arm(self.hw, deadline_ns.unwrap_or(u64::MAX)) }
    }

    /// Clears the kick; whether there was one.
    pub(crate) fn take_kick(&self) -> bool {
        // SAFETY: `hw` is valid (type invariant).
        unsafe { glue::yakvm_apic_take_kick(self.hw) != 0 }
    }

    /// Whether a kick came since the last `take_kick`.
    pub(crate) fn kicked(&self) -> bool {
        // SAFETY: `hw` is valid (type invariant).
        unsafe { glue::yakvm_apic_kicked(self.hw) != 0 }
    }

    /// The vCPU is about to enter its guest on `cpu` (`None`: it left): a kick from now on
    /// sends that CPU an IPI.
    pub(crate) fn set_running(&self, cpu: Option<usize>) {
        let cpu = cpu.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1);
        // SAFETY: `hw` is valid (type invariant).
        unsafe { glue::yakvm_apic_set_running(self.hw, cpu) }
    }

    /// Sleeps until a kick; `EINTR` if a signal came first.
    pub(crate) fn wait(&self) -> Result {
        // SAFETY: `hw` is valid (type invariant); called from the vCPU's thread, which may
        // sleep (no lock held: the callers hold only their own sleeping mutex).
        match unsafe { glue::yakvm_apic_wait(self.hw) } {
            0 => Ok(()),
            _ => Err(EINTR),
        }
    }
}

impl Drop for ApicHw {
    fn drop(&mut self) {
        // SAFETY: `hw` is valid and not used again (type invariant); the free cancels the
        // timer and waits for its callback first.
        unsafe { glue::yakvm_apic_hw_free(self.hw) }
    }
}
