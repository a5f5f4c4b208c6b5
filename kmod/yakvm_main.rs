// SPDX-License-Identifier: GPL-2.0
//! yakvm: a small AMD-V (SVM) hypervisor. This module checks for SVM, turns it on on every
//! CPU, and exposes `/dev/yakvm`, through which userspace makes VMs and vCPUs and runs
//! them. See docs/module.md for the design; `ffi` holds all the unsafe code.

use kernel::c_str;
use kernel::prelude::*;

// The ABI shared with the emulator: the one definition of the ioctls and their structures.
#[path = "../abi/src/abi.rs"]
#[allow(unreachable_pub)]
mod abi;
// The guest page walk, shared with the emulator the same way.
#[path = "../abi/src/paging.rs"]
#[allow(unreachable_pub)]
mod paging;
// The decoder of MMIO MOV forms, shared with host tests the same way.
#[path = "../abi/src/decode.rs"]
#[allow(unreachable_pub, dead_code)]
mod decode;
// The guest's CPUID table, shared with the emulator's KVM backend the same way.
#[path = "../abi/src/cpuid.rs"]
#[allow(unreachable_pub)]
mod guest_cpuid;
// The local APIC's state machine (the kernel APIC, `ENABLE_KERNEL_APIC`), shared with the
// emulator's pc machine the same way and tested there.
#[path = "../abi/src/lapic.rs"]
#[allow(unreachable_pub, dead_code)]
#[deny(unsafe_code)]
mod lapic;
// The driver logic has no `unsafe`: all of it is in `ffi`, behind safe APIs.
#[deny(unsafe_code)]
mod dev;
mod ffi;
#[deny(unsafe_code)]
mod svm;

module! {
    type: Yakvm,
    name: "yakvm",
    author: "the yakvm developers",
    description: "yakvm: a small AMD-V (SVM) hypervisor",
    license: "GPL",
}

struct Yakvm {
    // Fields drop in order: the device node goes first, then SVM is turned off when the
    // last reference to `Shared` (no file can hold one any more) goes.
    _device: ffi::chardev::MiscDevice<svm::Shared>,
}

impl kernel::Module for Yakvm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let shared = svm::Shared::new()?;
        let device = ffi::chardev::MiscDevice::register::<dev::Control>(c_str!("yakvm"), shared)?;
        pr_info!("SVM enabled on all CPUs, /dev/yakvm ready (ABI {})\n", abi::API_VERSION);
        Ok(Self { _device: device })
    }
}

impl Drop for Yakvm {
    fn drop(&mut self) {
        pr_info!("unloading\n");
    }
}
