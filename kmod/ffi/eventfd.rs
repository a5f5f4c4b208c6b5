// SPDX-License-Identifier: GPL-2.0
//! Eventfds of userspace, held by the module (`eventfd_ctx_fdget`, `eventfd_signal`,
//! `eventfd_ctx_put`): what IOEVENTFD signals (and what an IRQFD would wait on).

use super::glue;
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;

/// A reference to an eventfd's context, taken from a descriptor of the calling process.
/// The descriptor may be closed afterwards: the context lives until the last reference
/// goes (this one is dropped with the value).
///
/// # Invariants
///
/// `ctx` is an `eventfd_ctx` on which this value holds one reference.
pub(crate) struct EventFd {
    ctx: NonNull<c_void>,
}

// SAFETY: an eventfd context is reference-counted and its operations take its own lock:
// it may be signalled and released from any thread.
unsafe impl Send for EventFd {}
// SAFETY: as above; `signal` through a shared reference is what eventfds are for.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd of descriptor `fd` of the calling process; `EBADF` if `fd` is not open,
    /// `EINVAL` if it is not an eventfd (as the kernel says).
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid place for the call to write; any `fd` value is accepted
        // (the kernel looks it up in the current task's table).
        let ctx = unsafe { glue::yakvm_eventfd_get(fd, &mut err) };
        match NonNull::new(ctx) {
            // INVARIANT: `eventfd_ctx_fdget` returned a context with a reference for us.
            Some(ctx) => Ok(Self { ctx }),
            None => Err(Error::from_errno(if err < 0 { err } else { -(kernel::bindings::EINVAL as c_int) })),
        }
    }

    /// Adds 1 to the eventfd's counter and wakes its readers.
    pub(crate) fn signal(&self) {
        // SAFETY: `ctx` is a live eventfd context (type invariant).
        unsafe { glue::yakvm_eventfd_signal(self.ctx.as_ptr()) }
    }

    /// Both name the same eventfd (whatever descriptors they came from).
    pub(crate) fn same(&self, other: &EventFd) -> bool {
        self.ctx == other.ctx
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we hold one reference on `ctx` (type invariant) and give it back once.
        unsafe { glue::yakvm_eventfd_put(self.ctx.as_ptr()) }
    }
}
