// SPDX-License-Identifier: GPL-2.0
//! Plain-data markers: the types that may live in zeroed pages (`Zeroable`) and be copied
//! to and from userspace (`FromBytes`, `AsBytes`). Each is a `#[repr(C)]` struct made only
//! of integers and arrays of integers (or of other types listed here), with every padding
//! byte spelled out as a named field, so every bit pattern, all-zero included, is valid
//! and no byte is uninitialised. (The kernel's `derive(Zeroable)` of 6.12 does not accept
//! `pub` fields, hence this list.)

use crate::abi;
use crate::ffi::mem::{RawPage, Table};
use crate::ffi::world::GuestGprs;
use crate::svm::vmcb;
use kernel::init::Zeroable;
use kernel::types::{AsBytes, FromBytes};

macro_rules! zeroable {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: plain data as described in the module documentation.
        unsafe impl Zeroable for $t {}
    )*};
}

macro_rules! user_copyable {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: plain data as described in the module documentation.
        unsafe impl FromBytes for $t {}
        // SAFETY: as above.
        unsafe impl AsBytes for $t {}
    )*};
}

zeroable!(RawPage, Table, GuestGprs, crate::svm::Iopm, crate::svm::Msrpm, vmcb::Vmcb, vmcb::ControlArea, vmcb::SaveArea, vmcb::Segment);
zeroable!(abi::Run, abi::IoExit, abi::HwExit, abi::MmioExit, abi::HypercallExit, abi::SyncRegs, abi::CoalescedWrite, abi::DebugExit, abi::ApicExit);
// The VMCB is copied out whole for study (GET_VMCB); its reserved areas are named fields.
// SAFETY: plain data as described in the module documentation.
unsafe impl AsBytes for vmcb::Vmcb {}
user_copyable!(abi::MemoryRegion, abi::Regs, abi::Sregs, abi::VmcbDump, abi::ExitStats);
user_copyable!(abi::IoEventFd);
user_copyable!(abi::Interrupt, abi::MsrStats, abi::MsrCount, abi::CoalescedIo, abi::CoalescedZone, abi::GuestDebug);
user_copyable!(abi::Msi, abi::IrqFd, abi::ApicAccess, abi::ApicStats);

/// Reads a value that another party (userspace, through a shared page) may write at any
/// time: one read the compiler may not repeat, merge or tear into a second one.
pub(crate) fn read_once<T: Copy>(place: &T) -> T {
    // SAFETY: `place` is a valid, aligned reference to initialised plain data.
    unsafe { core::ptr::read_volatile(place) }
}
