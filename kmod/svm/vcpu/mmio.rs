// SPDX-License-Identifier: GPL-2.0
//! TEMPORARY STAND-IN (branch `kapic`) for the in-module MMIO instruction decoder that
//! the `kdecode` branch writes in this file, with the same interface. It decodes nothing:
//! every access returns [`Emulated::NotHandled`], so an xAPIC page access still exits to
//! userspace, which forwards it to the kernel APIC with `APIC_ACCESS`. Replace this file
//! with kdecode's when merging.

use super::VcpuState;
use crate::svm::vm::Vm;

/// The access the decoded instruction makes: the bytes to fill (read) or written.
#[allow(dead_code)]
pub(super) enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// Whether the module completed the instruction.
#[allow(dead_code)]
pub(super) enum Emulated {
    Done,
    NotHandled,
}

/// Decodes the instruction at the guest's RIP that caused the NPF on `gpa`; if it is a MOV
/// form the module knows, calls `handler(gpa, access)` once; if the handler returns true,
/// completes the instruction and returns `Done`; otherwise nothing changed and it returns
/// `NotHandled` (exit to userspace). The stand-in knows no form.
pub(super) fn emulate(_vm: &Vm, _v: &mut VcpuState, _gpa: u64, _handler: impl FnOnce(u64, Access<'_>) -> bool) -> Emulated {
    Emulated::NotHandled
}
