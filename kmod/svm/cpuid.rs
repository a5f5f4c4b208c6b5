// SPDX-License-Identifier: GPL-2.0
//! CPUID exits: the guest's answer is the shared table (`abi/src/cpuid.rs`, also given to
//! KVM by the emulator) applied to this CPU's own answer.

use crate::ffi::cpu::cpuid;
use crate::guest_cpuid::{self, CpuidResult};

/// The guest's CPUID for `leaf`/`subleaf`; `vcpu_id` becomes the initial APIC id; `apic`:
/// the VM has local APICs.
pub(crate) fn guest_cpuid(leaf: u32, subleaf: u32, vcpu_id: u32, apic: bool) -> CpuidResult {
    guest_cpuid::guest_cpuid(leaf, subleaf, vcpu_id, apic, cpuid(leaf, subleaf))
}
