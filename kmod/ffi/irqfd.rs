// SPDX-License-Identifier: GPL-2.0
//! IRQFD bindings (glue.c): an eventfd of userspace whose signal calls a Rust target at
//! once, from the eventfd's wake-up: in the signaller's context (a task, or an interrupt
//! handler), under the eventfd's wait-queue lock, with interrupts off. The C side takes
//! the count there and calls [`IrqFdTarget::fire`]; signals that come together may make
//! one call.

use super::glue;
use core::ptr::NonNull;
use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;

/// What an IRQFD does when its eventfd is signalled: any CPU, any context, interrupts
/// off. It must not sleep, and the locks it takes must keep interrupts off
/// ([`super::irqlock::IrqSpinLock`]).
pub(crate) trait IrqFdTarget: Send + Sync {
    fn fire(&self);
}

/// An eventfd bound to a target.
///
/// # Invariants
///
/// `raw` is a live `yakvm_irqfd` made by `yakvm_irqfd_new` with `owner` = the address of
/// `*_target`, freed only in `drop` (before `_target` is).
pub(crate) struct IrqFd<T: IrqFdTarget> {
    raw: NonNull<c_void>,
    /// Only the C side reads it (as `owner`), until `drop` freed the binding.
    _target: KBox<T>,
}

// SAFETY: the C binding is used only through `is` (which takes no lock of ours and only
// compares) and `drop`; `T` is Send + Sync.
unsafe impl<T: IrqFdTarget> Send for IrqFd<T> {}
// SAFETY: as above: `&IrqFd` gives only `is`, safe from any thread.
unsafe impl<T: IrqFdTarget> Sync for IrqFd<T> {}

unsafe extern "C" fn deliver<T: IrqFdTarget>(owner: *mut c_void) {
    // SAFETY: `owner` is the address of the `KBox<T>` of a live `IrqFd<T>` (type
    // invariant), or of one `new` is making (the call for a count already there):
    // `yakvm_irqfd_free`, called before the box is dropped, takes the
    // binding off the eventfd's wait queue under the queue's lock, which this call runs
    // under, so it waits for this call to end and no other comes.
    let target = unsafe { &*owner.cast::<T>() };
    target.fire();
}

impl<T: IrqFdTarget> IrqFd<T> {
    /// Binds eventfd `fd` of the calling process to `target`. `EBADF` if `fd` is not
    /// open, `EINVAL` if it is not an eventfd.
    pub(crate) fn new(fd: i32, target: T) -> Result<Self> {
        let target = KBox::new(target, GFP_KERNEL)?;
        let owner = core::ptr::from_ref::<T>(&target).cast_mut().cast::<c_void>();
        let mut err: c_int = 0;
        // SAFETY: `deliver::<T>` matches the callback's C type; `owner` stays valid until
        // the binding is freed (it is `target`'s heap address, freed after the binding in
        // `drop`); `err` is a valid place to write.
        let raw = unsafe { glue::yakvm_irqfd_new(fd, Some(deliver::<T>), owner, &mut err) };
        match NonNull::new(raw) {
            // INVARIANT: made with `owner` = `&*target` (now `_target`), freed in `drop`.
            Some(raw) => Ok(Self { raw, _target: target }),
            None => Err(Error::from_errno(if err < 0 { err } else { -(kernel::bindings::EINVAL as c_int) })),
        }
    }

    /// Whether this binding waits on the eventfd of descriptor `fd`.
    pub(crate) fn is(&self, fd: i32) -> bool {
        // SAFETY: `raw` is live (type invariant); any `fd` value is accepted.
        unsafe { glue::yakvm_irqfd_is(self.raw.as_ptr(), fd) != 0 }
    }
}

impl<T: IrqFdTarget> Drop for IrqFd<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live and freed once (type invariant); after this no `deliver`
        // runs, so `_target` (dropped after this body) is no longer referenced.
        unsafe { glue::yakvm_irqfd_free(self.raw.as_ptr()) }
    }
}
