// SPDX-License-Identifier: GPL-2.0
//! A virtual machine: its guest RAM (pinned userspace memory), its nested page table and
//! its vCPUs.

use super::npt::Npt;
use super::Shared;
use crate::abi;
use crate::ffi::mem::{PinnedPages, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::new_mutex;

/// A RAM region: guest-physical `[gpa, gpa + pages.len() * 4096)`.
struct Region {
    slot: u32,
    gpa: u64,
    pages: PinnedPages,
}

impl Region {
    fn end(&self) -> u64 {
        self.gpa + (self.pages.len() * PAGE_SIZE) as u64
    }
}

struct VmState {
    npt: Npt,
    regions: KVec<Region>,
    ram_bytes: u64,
    vcpus: u32,
    /// A vCPU has run: the memory map is frozen (no TLB shootdown exists to change it).
    started: bool,
}

#[pin_data]
pub(crate) struct Vm {
    pub(crate) shared: Arc<Shared>,
    #[pin]
    state: Mutex<VmState>,
}

impl Vm {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Arc<Self>> {
        let state = VmState { npt: Npt::new()?, regions: KVec::new(), ram_bytes: 0, vcpus: 0, started: false };
        Arc::pin_init(pin_init!(Self { shared, state <- new_mutex!(state, "yakvm_vm") }), GFP_KERNEL)
    }

    /// Adds guest RAM (`SET_MEMORY_REGION`), after checking every field of `r`.
    pub(crate) fn add_region(&self, r: &abi::MemoryRegion) -> Result {
        let page = PAGE_SIZE as u64;
        let aligned = |v: u64| v % page == 0;
        if r.flags != 0 || r.slot >= abi::MAX_MEMORY_REGIONS || r.memory_size == 0 {
            return Err(EINVAL);
        }
        if !aligned(r.guest_phys_addr) || !aligned(r.memory_size) || !aligned(r.userspace_addr) {
            return Err(EINVAL);
        }
        let end = r.guest_phys_addr.checked_add(r.memory_size).ok_or(EINVAL)?;
        if end > abi::MAX_GUEST_PHYS || r.userspace_addr.checked_add(r.memory_size).is_none() {
            return Err(EINVAL);
        }
        // Pin before taking the VM lock: pinning takes mmap_lock, which `mmap` holds while
        // it takes our locks.
        let count = (r.memory_size / page) as usize;
        let pages = PinnedPages::pin(r.userspace_addr as usize, count)?;
        let mut vm = self.state.lock();
        if vm.started {
            return Err(EBUSY);
        }
        if vm.ram_bytes + r.memory_size > abi::MAX_RAM_BYTES {
            return Err(E2BIG);
        }
        for old in vm.regions.iter() {
            if old.slot == r.slot {
                return Err(EEXIST);
            }
            if r.guest_phys_addr < old.end() && old.gpa < end {
                return Err(EEXIST);
            }
        }
        // Room for the new region first: once its pages are mapped, adding it cannot fail.
        vm.regions.reserve(1, GFP_KERNEL)?;
        for i in 0..count {
            let gpa = r.guest_phys_addr + i as u64 * page;
            if let Err(e) = vm.npt.set(gpa, Some(pages.phys(i))) {
                // Take out what was mapped before the pages are unpinned. No vCPU has run
                // (`started` is false), so no TLB holds these translations.
                for j in 0..i {
                    let _ = vm.npt.set(r.guest_phys_addr + j as u64 * page, None);
                }
                return Err(e);
            }
        }
        vm.ram_bytes += r.memory_size;
        vm.regions.push(Region { slot: r.slot, gpa: r.guest_phys_addr, pages }, GFP_KERNEL)?;
        Ok(())
    }

    /// Counts a new vCPU and returns its index; `ENOSPC` past the limit.
    pub(crate) fn reserve_vcpu(&self) -> Result<u32> {
        let mut vm = self.state.lock();
        if vm.vcpus >= abi::MAX_VCPUS {
            return Err(ENOSPC);
        }
        vm.vcpus += 1;
        Ok(vm.vcpus - 1)
    }

    /// N_CR3 for a VMCB, freezing the memory map: called before a vCPU first runs.
    pub(crate) fn start(&self) -> u64 {
        let mut vm = self.state.lock();
        vm.started = true;
        vm.npt.root_pa()
    }
}
