// SPDX-License-Identifier: GPL-2.0
//! IOEVENTFD (KVM's semantics, abi.rs `IOEVENTFD`): eventfds bound to guest writes in port
//! or MMIO space. A matching write signals its eventfd and the guest runs on; the vCPU's
//! exit handlers (ioio.rs for OUT, vcpu/mmio.rs for the decoded MOV stores) ask
//! [`IoEvents::signal`].

use crate::abi;
use crate::ffi::eventfd::EventFd;
use kernel::prelude::*;

/// What a registration matches.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    pio: bool,
    addr: u64,
    /// 0: any length.
    len: u32,
    datamatch: Option<u64>,
}

impl Key {
    fn of(a: &abi::IoEventFd) -> Result<Self> {
        use abi::ioeventfd::*;
        if a.flags & !ALL != 0 || !matches!(a.len, 0 | 1 | 2 | 4 | 8) {
            return Err(EINVAL);
        }
        let datamatch = (a.flags & DATAMATCH != 0).then_some(a.datamatch);
        if a.len == 0 && datamatch.is_some() {
            return Err(EINVAL);
        }
        let pio = a.flags & PIO != 0;
        let end = a.addr.checked_add(u64::from(a.len)).ok_or(EINVAL)?;
        if pio && end > 0x1_0000 {
            return Err(EINVAL);
        }
        Ok(Self { pio, addr: a.addr, len: a.len, datamatch })
    }

    /// KVM's collision rule: the same space and address, and either length 0, or the same
    /// length with either datamatch absent or both equal.
    fn collides(&self, o: &Key) -> bool {
        self.pio == o.pio
            && self.addr == o.addr
            && (self.len == 0
                || o.len == 0
                || (self.len == o.len
                    && (self.datamatch.is_none() || o.datamatch.is_none() || self.datamatch == o.datamatch)))
    }

    /// A write of `data` (little-endian) at `addr` matches.
    fn matches(&self, pio: bool, addr: u64, data: &[u8]) -> bool {
        if self.pio != pio || self.addr != addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if self.len as usize != data.len() {
            return false;
        }
        self.datamatch.map_or(true, |want| {
            let mut bytes = [0u8; 8];
            bytes[..data.len()].copy_from_slice(data);
            u64::from_le_bytes(bytes) == want
        })
    }
}

struct IoEvent {
    key: Key,
    fd: EventFd,
}

/// A VM's registrations: slots, `None` once deassigned (and reused).
#[derive(Default)]
pub(crate) struct IoEvents {
    slots: KVec<Option<IoEvent>>,
}

impl IoEvents {
    /// `IOEVENTFD`: adds or (with DEASSIGN) removes a registration.
    pub(crate) fn update(&mut self, a: &abi::IoEventFd) -> Result {
        let key = Key::of(a)?;
        let fd = EventFd::from_fd(a.fd)?;
        if a.flags & abi::ioeventfd::DEASSIGN != 0 {
            let slot = self
                .slots
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|e| e.key == key && e.fd.same(&fd)))
                .ok_or(ENOENT)?;
            *slot = None;
            return Ok(());
        }
        if self.iter().any(|e| e.key.collides(&key)) {
            return Err(EEXIST);
        }
        let event = Some(IoEvent { key, fd });
        if let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) {
            *free = event;
        } else if self.slots.len() < abi::MAX_IOEVENTFDS as usize {
            self.slots.push(event, GFP_KERNEL)?;
        } else {
            return Err(ENOSPC);
        }
        Ok(())
    }

    fn iter(&self) -> impl Iterator<Item = &IoEvent> {
        self.slots.iter().flatten()
    }

    /// Registrations now.
    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }

    /// Signals the eventfd a guest write of `data` to port or guest-physical `addr`
    /// matches; `false` if none does (the write goes to userspace).
    pub(crate) fn signal(&self, pio: bool, addr: u64, data: &[u8]) -> bool {
        match self.iter().find(|e| e.key.matches(pio, addr, data)) {
            Some(e) => {
                e.fd.signal();
                true
            }
            None => false,
        }
    }
}
