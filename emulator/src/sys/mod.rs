//! The emulator's only contact with the kernel: `/dev/yakvm` ioctls and shared memory
//! mappings, behind safe types. All of the emulator's `unsafe` is in this folder, one
//! file per job:
//! - `yakvm`: `/dev/yakvm` and its VM and vCPU descriptors (the module's ioctls);
//! - `kvm`: what the KVM backend needs beyond rust-vmm's kvm-ioctls;
//! - `memory`: guest RAM and the disk's file mapping (bounds-checked byte copies);
//! - `kick`: making a vCPU thread leave `RUN` from another thread;
//! - `signals`: stop signals, alarms and signals to threads;
//! - `probe`: raw ioctls and mappings for the module's tests (fuzzer, self-test);
//! - `tsc`: the time stamp counter's rate;
//! - `entropy`: the host's getrandom(2), for the virtio entropy device;
//! - `tap`: tap network interfaces (TUNSETIFF and the interface ioctls), for virtio-net;
//! - `vhost`: `/dev/vhost-net`'s ioctls, for virtio-net with `vhost=on`.
//!
//! Callers name everything as `crate::sys::X`: the files are an inner detail.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub mod kvm;
mod entropy;
mod kick;
mod memory;
mod probe;
mod signals;
mod tap;
mod tsc;
mod vhost;
mod yakvm;

pub use entropy::getrandom;
pub use kick::Kicker;
pub use memory::{FileMapping, GuestMemory, VmMemory};
pub use nix::sys::mman::ProtFlags;
pub use probe::{fuzz_ioctl, io_command, try_map, FuzzArg, FUZZ_BUFFER};
pub use tap::{Tap, TapError, TapOptions};
pub use signals::{alarm, alarm_after, alarm_fired, catch_stop_signals, interrupt_on_alarm, signal_thread, stop_signal, thread_id};
pub use tsc::tsc_khz;
pub use vhost::{MemRegion, VhostError, VhostNet, VringAddr, MAX_REGIONS as VHOST_MAX_REGIONS};
pub use yakvm::{run_fd, Device, Vcpu, Vm};

/// A failed system call: which one and its errno.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct SysError {
    pub call: &'static str,
    pub errno: nix::errno::Errno,
}

/// Wraps an errno from a call with the name of the call.
fn ctx(call: &'static str) -> impl FnOnce(nix::Error) -> io::Error {
    move |errno| io::Error::new(io::Error::from(errno).kind(), SysError { call, errno })
}

/// The errno behind an error of this module, if it has one.
pub fn errno_of(e: &io::Error) -> Option<nix::errno::Errno> {
    e.raw_os_error()
        .map(nix::errno::Errno::from_raw)
        .or_else(|| e.get_ref()?.downcast_ref::<SysError>().map(|s| s.errno))
}

/// An EventFd's descriptor, borrowed for as long as the EventFd is (to poll it).
pub fn eventfd_fd(e: &vmm_sys_util::eventfd::EventFd) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: the EventFd owns its descriptor and closes it only when dropped, which the
    // borrow of `e` prevents for the BorrowedFd's whole life.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(e.as_raw_fd()) }
}

/// Takes ownership of a descriptor an ioctl returned.
fn owned_fd(fd: i32) -> OwnedFd {
    // SAFETY: the kernel just created `fd` for us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
