// SPDX-License-Identifier: GPL-2.0
//! `IRQFD`: eventfds bound to interrupt messages (KVM_IRQFD with an MSI route). A signal
//! of the eventfd, from any thread of any process, delivers the message to the VM's
//! kernel APICs (`apic::msi`, as `SIGNAL_MSI`), from the kernel's workqueue (ffi/irqfd.rs:
//! the eventfd's wake-up runs in atomic context and the APIC list is behind a sleeping
//! mutex, so the wake-up only queues the delivery). The target holds the APIC list, not
//! the VM, so the VM's bindings end with it.

use crate::abi;
use crate::ffi::irqfd::{IrqFd, IrqFdTarget};
use crate::svm::apic::{self, KApic};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// The VM's kernel APICs, by vCPU index (shared with the bindings).
pub(crate) type ApicList = Mutex<KVec<Arc<KApic>>>;

/// One binding's message.
pub(crate) struct MsiTarget {
    apics: Arc<ApicList>,
    msi: abi::Msi,
}

impl IrqFdTarget for MsiTarget {
    fn fire(&self) {
        let apics = self.apics.lock();
        // The message was checked when it was bound: it cannot fail.
        let _ = apic::msi(&apics, &self.msi);
    }
}

/// A VM's bindings (a freed slot is reused).
#[derive(Default)]
pub(crate) struct IrqFds {
    slots: KVec<Option<IrqFd<MsiTarget>>>,
}

impl IrqFds {
    /// `IRQFD`: adds or removes a binding (see the ABI for the errors).
    pub(crate) fn change(&mut self, apics: &Arc<ApicList>, a: &abi::IrqFd) -> Result {
        if a.flags & !abi::irqfd::DEASSIGN != 0 {
            return Err(EINVAL);
        }
        if a.flags & abi::irqfd::DEASSIGN != 0 {
            let slot = self.slots.iter_mut().find(|s| s.as_ref().is_some_and(|b| b.is(a.fd))).ok_or(ENOENT)?;
            // Its delivery, if queued, is cancelled or waited for by the drop.
            *slot = None;
            return Ok(());
        }
        if !apic::msi_address_ok(a.msi.address) {
            return Err(EINVAL);
        }
        if self.slots.iter().flatten().any(|b| b.is(a.fd)) {
            return Err(EEXIST);
        }
        let free = self.slots.iter().position(Option::is_none);
        if free.is_none() && self.slots.len() >= abi::MAX_IRQFDS {
            return Err(ENOSPC);
        }
        let binding = IrqFd::new(a.fd, MsiTarget { apics: apics.clone(), msi: a.msi })?;
        match free {
            Some(i) => self.slots[i] = Some(binding),
            None => self.slots.push(Some(binding), GFP_KERNEL)?,
        }
        Ok(())
    }
}
