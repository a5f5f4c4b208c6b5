// SPDX-License-Identifier: GPL-2.0
//! A virtual machine: its guest RAM (pinned userspace memory), its nested page table,
//! its vCPUs and what they share (local APICs or not, the TSC).

use super::ioeventfd::IoEvents;
use super::irqfd::{ApicList, IrqFds};
use super::apic::{self, KApic};
use super::npt::{Npt, PrivateView};
use super::Shared;
use crate::abi;
use crate::ffi::irqlock::new_irq_spinlock;
use crate::ffi::mem::{PinnedPages, PAGE_SIZE};
use crate::paging::PagingRegs;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::new_mutex;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// `ENABLE_LAPIC`: the vCPUs have local APICs (in userspace).
    lapic: bool,
    /// `ENABLE_KERNEL_APIC`: their local APICs are the module's.
    kernel_apic: bool,
    /// A vCPU has run: the memory map is frozen (no TLB shootdown exists to change it).
    started: bool,
}

/// What a new vCPU learns from its VM.
pub(crate) struct VcpuSlot {
    /// Its index (its APIC id; 0 is the bootstrap processor).
    pub(crate) id: u32,
    /// It has a local APIC (`ENABLE_LAPIC`).
    pub(crate) lapic: bool,
    /// Its local APIC is the module's (`ENABLE_KERNEL_APIC`).
    pub(crate) kernel_apic: bool,
}

#[pin_data]
pub(crate) struct Vm {
    pub(crate) shared: Arc<Shared>,
    /// The guest's TSC minus the host's (the VMCB's TSC_OFFSET), one for all vCPUs: their
    /// counters agree, as Linux checks across CPUs. 0 until the guest writes the TSC.
    tsc_offset: AtomicU64,
    #[pin]
    state: Mutex<VmState>,
    /// `IOEVENTFD` registrations; `ioevent_count` mirrors their number so that exits of a
    /// VM without any take no lock.
    #[pin]
    ioevents: Mutex<IoEvents>,
    ioevent_count: AtomicUsize,
    /// The vCPUs' kernel APICs, by vCPU index (`ENABLE_KERNEL_APIC`), for IPIs,
    /// `SIGNAL_MSI` and the IRQFD bindings (which share it). Apart from `state`:
    /// delivering never waits for guest memory work.
    apics: Arc<ApicList>,
    /// `IRQFD` bindings (irqfd.rs); dropped with the VM, each waiting for its delivery.
    #[pin]
    irqfds: Mutex<IrqFds>,
}

impl Vm {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Arc<Self>> {
        let state = VmState {
            npt: Npt::new()?,
            regions: KVec::new(),
            ram_bytes: 0,
            vcpus: 0,
            lapic: false,
            kernel_apic: false,
            started: false,
        };
        let apics = KVec::with_capacity(abi::MAX_VCPUS as usize, GFP_KERNEL)?;
        let apics = Arc::pin_init(new_irq_spinlock!(apics, "yakvm_vm_apics"), GFP_KERNEL)?;
        Arc::pin_init(
            pin_init!(Self {
                shared,
                tsc_offset: AtomicU64::new(0),
                state <- new_mutex!(state, "yakvm_vm"),
                ioevents <- new_mutex!(IoEvents::default(), "yakvm_ioevents"),
                ioevent_count: AtomicUsize::new(0),
                apics,
                irqfds <- new_mutex!(IrqFds::default(), "yakvm_irqfds"),
            }),
            GFP_KERNEL,
        )
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
        // The limit first: pinning allocates in proportion to the size.
        if r.memory_size > abi::MAX_RAM_BYTES {
            return Err(E2BIG);
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
            // Up to a million pages: let the scheduler in now and then (the kernel is not
            // preemptible, and under QEMU's software CPU this loop is slow).
            if i % 512 == 511 {
                crate::ffi::cpu::cond_resched();
            }
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

    /// `ENABLE_LAPIC`: every vCPU gets a local APIC (CPUID, IA32_APIC_BASE); `EBUSY` once
    /// one exists (they must all agree).
    pub(crate) fn enable_lapic(&self) -> Result {
        let mut vm = self.state.lock();
        if vm.vcpus > 0 {
            return Err(EBUSY);
        }
        vm.lapic = true;
        Ok(())
    }

    /// `IOEVENTFD`: adds or removes a registration (ioeventfd.rs).
    pub(crate) fn ioeventfd(&self, a: &abi::IoEventFd) -> Result {
        let mut events = self.ioevents.lock();
        let done = events.update(a);
        self.ioevent_count.store(events.len(), Ordering::Relaxed);
        done
    }

    /// A guest write of `data` to port (`pio`) or guest-physical address `addr`: signals
    /// the eventfd it matches; `false` if none does.
    pub(crate) fn signal_ioeventfd(&self, pio: bool, addr: u64, data: &[u8]) -> bool {
        self.has_ioeventfds() && self.ioevents.lock().signal(pio, addr, data)
    }

    /// The VM has `IOEVENTFD` registrations (a hint: they may change meanwhile).
    pub(crate) fn has_ioeventfds(&self) -> bool {
        self.ioevent_count.load(Ordering::Relaxed) != 0
    }

    /// `ENABLE_KERNEL_APIC`: every vCPU gets a local APIC in the module (svm/apic.rs);
    /// `EBUSY` once one exists.
    pub(crate) fn enable_kernel_apic(&self) -> Result {
        let mut vm = self.state.lock();
        if vm.vcpus > 0 {
            return Err(EBUSY);
        }
        vm.lapic = true;
        vm.kernel_apic = true;
        Ok(())
    }

    /// Counts a new vCPU and returns its index; `ENOSPC` past the limit.
    pub(crate) fn reserve_vcpu(&self) -> Result<VcpuSlot> {
        let mut vm = self.state.lock();
        if vm.vcpus >= abi::MAX_VCPUS {
            return Err(ENOSPC);
        }
        vm.vcpus += 1;
        Ok(VcpuSlot { id: vm.vcpus - 1, lapic: vm.lapic, kernel_apic: vm.kernel_apic })
    }

    /// A new vCPU's kernel APIC joins the VM's (in index order: vCPUs are made one at a
    /// time, each after its `reserve_vcpu`).
    pub(crate) fn add_apic(&self, apic: Arc<KApic>) -> Result {
        // Within the capacity made with the list: no allocation under the lock.
        self.apics.lock().push(apic, GFP_ATOMIC)?;
        Ok(())
    }

    /// Runs `f` on the VM's kernel APICs.
    pub(crate) fn with_apics<R>(&self, f: impl FnOnce(&[Arc<KApic>]) -> R) -> R {
        let apics = self.apics.lock();
        f(&apics)
    }

    /// `IRQFD`: binds or unbinds an eventfd (irqfd.rs); `ENXIO` without kernel APICs.
    pub(crate) fn irqfd(&self, a: &abi::IrqFd) -> Result {
        if !self.state.lock().kernel_apic {
            return Err(ENXIO);
        }
        self.irqfds.lock().change(&self.apics, a)
    }

    /// `SIGNAL_MSI`: how many vCPUs took the message; `ENXIO` without kernel APICs.
    pub(crate) fn signal_msi(&self, m: &abi::Msi) -> Result<u32> {
        if !self.state.lock().kernel_apic {
            return Err(ENXIO);
        }
        self.with_apics(|apics| apic::msi(apics, m))
    }

    /// The guest's TSC offset, for every vCPU's VMCB before it runs.
    pub(crate) fn tsc_offset(&self) -> u64 {
        self.tsc_offset.load(Ordering::Relaxed)
    }

    /// A guest wrote the TSC (on any vCPU): all the VM's vCPUs take the new offset at
    /// their next entry.
    pub(crate) fn set_tsc_offset(&self, offset: u64) {
        self.tsc_offset.store(offset, Ordering::Relaxed);
    }

    /// Copies guest-physical memory at `gpa` into `out`; `EFAULT` if any of it is not RAM.
    pub(crate) fn read_guest(&self, gpa: u64, out: &mut [u8]) -> Result {
        self.each_page(gpa, out.len(), |pages, index, offset, range| pages.read(index, offset, &mut out[range]))
    }

    /// Copies `data` into guest-physical memory at `gpa`; `EFAULT` if any of it is not RAM.
    pub(crate) fn write_guest(&self, gpa: u64, data: &[u8]) -> Result {
        self.each_page(gpa, data.len(), |pages, index, offset, range| pages.write(index, offset, &data[range]))
    }

    /// Copies guest memory at linear address `va` (translated by the guest's page tables)
    /// into `out`; `EFAULT` if a page is not mapped or not RAM.
    pub(crate) fn read_virt(&self, paging: &PagingRegs, va: u64, out: &mut [u8]) -> Result {
        self.each_virt_page(paging, va, out.len(), |gpa, range| self.read_guest(gpa, &mut out[range]))
    }

    /// Copies `data` into guest memory at linear address `va`.
    pub(crate) fn write_virt(&self, paging: &PagingRegs, va: u64, data: &[u8]) -> Result {
        self.each_virt_page(paging, va, data.len(), |gpa, range| self.write_guest(gpa, &data[range]))
    }

    fn each_virt_page(
        &self,
        paging: &PagingRegs,
        va: u64,
        len: usize,
        mut f: impl FnMut(u64, core::ops::Range<usize>) -> Result,
    ) -> Result {
        let mut done = 0;
        while done < len {
            let addr = va.wrapping_add(done as u64);
            let gpa = crate::paging::translate(paging, addr, |gpa, bytes| {
                let mut entry = [0u8; 8];
                self.read_guest(gpa, &mut entry[..bytes]).ok()?;
                Some(u64::from_le_bytes(entry))
            })
            .ok_or(EFAULT)?;
            let n = (len - done).min(PAGE_SIZE - (addr % PAGE_SIZE as u64) as usize);
            f(gpa, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    /// Calls `f(pages, page index, offset in page, range of the caller's buffer)` for each
    /// page-sized piece of `[gpa, gpa + len)`.
    fn each_page(
        &self,
        gpa: u64,
        len: usize,
        mut f: impl FnMut(&PinnedPages, usize, usize, core::ops::Range<usize>) -> Result,
    ) -> Result {
        let vm = self.state.lock();
        let mut done = 0;
        while done < len {
            let addr = gpa.checked_add(done as u64).ok_or(EFAULT)?;
            let region = vm.regions.iter().find(|r| r.gpa <= addr && addr < r.end()).ok_or(EFAULT)?;
            let index = ((addr - region.gpa) / PAGE_SIZE as u64) as usize;
            let offset = (addr % PAGE_SIZE as u64) as usize;
            let n = (len - done).min(PAGE_SIZE - offset);
            f(&region.pages, index, offset, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    /// N_CR3 for a VMCB, freezing the memory map: called before a vCPU first runs.
    pub(crate) fn start(&self) -> u64 {
        let mut vm = self.state.lock();
        vm.started = true;
        vm.npt.root_pa()
    }

    /// A vCPU's own view of the frozen memory map, in which `gpa` may show host page `hpa`
    /// read-only (npt.rs). Called after [`Self::start`].
    pub(crate) fn private_view(&self, gpa: u64, hpa: u64) -> Result<PrivateView> {
        let vm = self.state.lock();
        if !vm.started {
            return Err(EINVAL);
        }
        vm.npt.private_view(gpa, hpa)
    }
}
