// SPDX-License-Identifier: GPL-2.0
//! The unsafe boundary of yakvm. Everything that touches raw kernel interfaces, privileged
//! instructions or raw memory lives under this module, behind safe APIs; the rest of the
//! module (`svm`, `dev`) contains no `unsafe`.

pub(crate) mod plain;
pub(crate) mod apic;
pub(crate) mod chardev;
pub(crate) mod cpu;
pub(crate) mod eventfd;
pub(crate) mod irqfd;
pub(crate) mod irqlock;
pub(crate) mod mem;
pub(crate) mod world;

/// Functions of `glue.c`: thin C wrappers of the kernel's static inline helpers.
mod glue {
    use kernel::bindings;
    use kernel::ffi::{c_int, c_uint, c_ulong, c_void};

    // Pointers to kernel structs are opaque handles here; the lint trips over the
    // zero-sized fields bindgen gives some of them.
    #[allow(improper_ctypes)]
    extern "C" {
        pub(super) fn yakvm_pages_alloc(order: c_uint) -> *mut c_void;
        pub(super) fn yakvm_pages_free(addr: *mut c_void, order: c_uint);
        pub(super) fn yakvm_virt_to_phys(addr: *mut c_void) -> u64;
        pub(super) fn yakvm_virt_to_page(addr: *mut c_void) -> *mut bindings::page;
        pub(super) fn yakvm_page_to_phys(page: *mut bindings::page) -> u64;
        pub(super) fn yakvm_get_page(page: *mut bindings::page);
        pub(super) fn yakvm_put_page(page: *mut bindings::page);
        pub(super) fn yakvm_page_address(page: *mut bindings::page) -> *mut c_void;
        pub(super) fn yakvm_on_each_cpu(func: unsafe extern "C" fn(*mut c_void), info: *mut c_void);
        pub(super) fn yakvm_nr_cpu_ids() -> c_uint;
        pub(super) fn yakvm_smp_processor_id() -> c_int;
        pub(super) fn yakvm_preempt_disable();
        pub(super) fn yakvm_preempt_enable();
        pub(super) fn yakvm_local_irq_disable();
        pub(super) fn yakvm_local_irq_enable();
        pub(super) fn yakvm_self_ipi();
        pub(super) fn yakvm_fpu_load_current();
        pub(super) fn yakvm_file_private(file: *mut bindings::file) -> *mut c_void;
        pub(super) fn yakvm_file_set_private(file: *mut bindings::file, data: *mut c_void);
        pub(super) fn yakvm_vma_range(
            vma: *mut bindings::vm_area_struct,
            start: *mut c_ulong,
            end: *mut c_ulong,
            pgoff: *mut c_ulong,
        );
        pub(super) fn yakvm_vma_set_dontcopy(vma: *mut bindings::vm_area_struct);
        pub(super) fn yakvm_eventfd_get(fd: c_int, err: *mut c_int) -> *mut c_void;
        pub(super) fn yakvm_eventfd_signal(ctx: *mut c_void);
        pub(super) fn yakvm_eventfd_put(ctx: *mut c_void);
        pub(super) fn yakvm_spin_lock_irqsave(lock: *mut bindings::spinlock_t) -> c_ulong;
        pub(super) fn yakvm_spin_unlock_irqrestore(lock: *mut bindings::spinlock_t, flags: c_ulong);
        pub(super) fn yakvm_apic_hw_new() -> *mut c_void;
        pub(super) fn yakvm_apic_hw_free(hw: *mut c_void);
        pub(super) fn yakvm_apic_kick(hw: *mut c_void);
        pub(super) fn yakvm_apic_timer_arm(hw: *mut c_void, deadline_ns: u64);
        pub(super) fn yakvm_now_ns() -> u64;
        pub(super) fn yakvm_tsc_khz() -> c_uint;
        pub(super) fn yakvm_apic_take_kick(hw: *mut c_void) -> c_int;
        pub(super) fn yakvm_apic_kicked(hw: *mut c_void) -> c_int;
        pub(super) fn yakvm_apic_set_running(hw: *mut c_void, cpu: c_int);
        pub(super) fn yakvm_apic_wait(hw: *mut c_void) -> c_int;
        pub(super) fn yakvm_cpu_wanted() -> c_int;
        pub(super) fn yakvm_halt_poll_ns() -> c_uint;
        pub(super) fn yakvm_irqfd_new(
            fd: c_int,
            deliver: Option<unsafe extern "C" fn(owner: *mut c_void)>,
            owner: *mut c_void,
            err: *mut c_int,
        ) -> *mut c_void;
        pub(super) fn yakvm_irqfd_is(irqfd: *mut c_void, fd: c_int) -> c_int;
        pub(super) fn yakvm_irqfd_free(irqfd: *mut c_void);
    }
}
