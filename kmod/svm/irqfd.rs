// SPDX-License-Identifier: GPL-2.0
//! `IRQFD`: eventfds bound to interrupt messages (KVM_IRQFD with an MSI route). A signal
//! of the eventfd, from any thread of any process, delivers the message to the VM's
//! kernel APICs (`apic::msi`, as `SIGNAL_MSI`) in the eventfd's wake-up itself
//! (ffi/irqfd.rs), as KVM delivers an MSI irqfd: no other thread is woken on the way, only
//! the target vCPU is kicked. The wake-up may run with interrupts off or in an interrupt
//! handler, so the APIC list and each APIC are behind locks that keep interrupts off
//! (`IrqSpinLock`). The target holds the APIC list, not the VM, so the VM's bindings end
//! with it.

use crate::abi;
use crate::ffi::irqfd::{IrqFd, IrqFdTarget};
use crate::svm::apic::{self, KApic};
use kernel::prelude::*;
use crate::ffi::irqlock::IrqSpinLock;
use kernel::sync::Arc;

/// The VM's kernel APICs, by vCPU index (shared with the bindings). Its capacity is
/// `MAX_VCPUS` from the start: a vCPU joins without allocating under the lock.
pub(crate) type ApicList = IrqSpinLock<KVec<Arc<KApic>>>;

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
            // A delivery under way ends before the drop returns.
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
