// SPDX-License-Identifier: GPL-2.0
//! A spin lock that keeps the local CPU's interrupts off while it is held
//! (`spin_lock_irqsave`, glue.c), for the locks an eventfd's wake-up takes: an IRQFD
//! delivers its message from there (svm/irqfd.rs), in whatever context the eventfd was
//! signalled in, a hard interrupt included (a device's interrupt handler may signal it).
//! With interrupts on while such a lock is held, that interrupt could arrive on the CPU
//! that holds it and spin forever. Rust-for-Linux 6.12 offers only `spin_lock`
//! (`SpinLock`); this is its backend with the flags kept in the guard.

use super::glue;
use kernel::bindings;
use kernel::ffi::{c_char, c_ulong};
use kernel::sync::lock::{Backend, Lock};

/// A `spinlock_t` taken with `spin_lock_irqsave`.
pub(crate) type IrqSpinLock<T> = Lock<T, IrqSaveBackend>;

/// Makes an [`IrqSpinLock`] initialiser with its own lock class (as `new_spinlock!`).
macro_rules! new_irq_spinlock {
    ($inner:expr, $name:literal) => {
        kernel::sync::lock::Lock::<_, $crate::ffi::irqlock::IrqSaveBackend>::new(
            $inner,
            kernel::c_str!($name),
            kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_irq_spinlock;

/// The backend of [`IrqSpinLock`]: the guard keeps the interrupt flags of the lock.
pub(crate) struct IrqSaveBackend;

// SAFETY: a `spinlock_t` gives mutual exclusion; `lock` returns the flags that `unlock`
// restores, so a guard gives the interrupt state back as it found it. `relock` (the
// default) takes the lock the same way again and replaces the flags.
unsafe impl Backend for IrqSaveBackend {
    type State = bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(ptr: *mut Self::State, name: *const c_char, key: *mut bindings::lock_class_key) {
        // SAFETY: the caller gives a `ptr` valid for writes and a `name` and `key` valid
        // for ever (the trait's contract), which is what `__spin_lock_init` needs.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: `ptr` points to a lock that `init` initialised (the trait's contract).
        unsafe { glue::yakvm_spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: the caller holds the lock at `ptr` (the trait's contract), and `flags`
        // are those its `lock` returned.
        unsafe { glue::yakvm_spin_unlock_irqrestore(ptr, *flags) }
    }
}
