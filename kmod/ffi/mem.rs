// SPDX-License-Identifier: GPL-2.0
//! Memory the hardware reads by physical address: zeroed, physically contiguous kernel
//! pages (VMCBs, host save areas, permission maps, nested page tables) and pinned
//! userspace pages (guest RAM).

use super::glue;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::bindings;
use kernel::init::Zeroable;
use kernel::prelude::*;

/// Size of a page.
pub(crate) const PAGE_SIZE: usize = 4096;

/// Kernel pages held by `Pages` values, and user pages pinned by `PinnedPages` values,
/// module-wide: both return to zero when every VM is gone (the leak tests read them).
static PAGES_HELD: AtomicUsize = AtomicUsize::new(0);
static PAGES_PINNED: AtomicUsize = AtomicUsize::new(0);

/// (kernel pages held, user pages pinned) right now.
pub(crate) fn pages_in_use() -> (usize, usize) {
    (PAGES_HELD.load(Ordering::Relaxed), PAGES_PINNED.load(Ordering::Relaxed))
}

/// `1 << order` zeroed, physically contiguous pages, viewed as a `T`.
///
/// # Invariants
/// `virt` is the direct-map address of a live allocation of `1 << order` pages made by
/// `yakvm_pages_alloc(order)`, at least `size_of::<T>()` bytes, page aligned, owned by this
/// value and accessed only through it (so `&self`/`&mut self` borrows rule the aliasing).
pub(crate) struct Pages<T: Zeroable> {
    virt: *mut T,
    order: u32,
    _owns: PhantomData<T>,
}

// SAFETY: `Pages` owns its memory exclusively (type invariant); moving it to another thread
// moves that ownership, which is sound when `T` itself may be sent.
unsafe impl<T: Zeroable + Send> Send for Pages<T> {}
// SAFETY: shared references only give `&T`, sound to share when `T: Sync`.
unsafe impl<T: Zeroable + Sync> Sync for Pages<T> {}

impl<T: Zeroable> Pages<T> {
    /// Allocates zeroed pages to hold a `T` whose all-zero bit pattern is valid.
    pub(crate) fn new() -> Result<Self> {
        let size = core::mem::size_of::<T>().max(1);
        let order = size.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros();
        // SAFETY: plain allocator call; a null return is handled below.
        let virt = unsafe { glue::yakvm_pages_alloc(order) }.cast::<T>();
        if virt.is_null() {
            return Err(ENOMEM);
        }
        PAGES_HELD.fetch_add(1 << order, Ordering::Relaxed);
        // INVARIANT: a fresh, zeroed allocation of `1 << order` pages, large enough for `T`;
        // zeroed memory is a valid `T` because `T: Zeroable`.
        Ok(Self { virt, order, _owns: PhantomData })
    }

    /// Physical address of the first byte, for the hardware.
    pub(crate) fn phys(&self) -> u64 {
        // SAFETY: `virt` is a direct-map address (type invariant), which `virt_to_phys` takes.
        unsafe { glue::yakvm_virt_to_phys(self.virt.cast()) }
    }

    /// A counted reference to the (single) page, for mapping it into userspace without
    /// borrowing `self`. `None` if `T` spans more than one page.
    pub(crate) fn page_ref(&self) -> Option<PageRef> {
        if self.order != 0 {
            return None;
        }
        // SAFETY: `virt` is a direct-map address of a live order-0 allocation (type
        // invariant), so it has a `struct page`, on which we take a reference.
        let page = unsafe { glue::yakvm_virt_to_page(self.virt.cast()) };
        // SAFETY: `page` is live (see above); the reference is dropped by `PageRef::drop`.
        unsafe { glue::yakvm_get_page(page) };
        // INVARIANT: we hold the reference taken above.
        Some(PageRef(page))
    }
}

/// A reference on a kernel page, which keeps it allocated until dropped.
///
/// # Invariants
/// We hold one reference (`get_page`) on the order-0 page `self.0`.
pub(crate) struct PageRef(*mut bindings::page);

// SAFETY: page references are atomic counts, valid to drop from any thread.
unsafe impl Send for PageRef {}
// SAFETY: `&PageRef` only hands out the pointer for mapping.
unsafe impl Sync for PageRef {}

impl PageRef {
    pub(crate) fn as_ptr(&self) -> *mut bindings::page {
        self.0
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        // SAFETY: releases the reference we hold (type invariant).
        unsafe { glue::yakvm_put_page(self.0) };
    }
}

impl<T: Zeroable> core::ops::Deref for Pages<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: valid, initialised and owned by `self` (type invariant).
        unsafe { &*self.virt }
    }
}

impl<T: Zeroable> core::ops::DerefMut for Pages<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: valid, initialised and exclusively borrowed through `self` (type invariant).
        unsafe { &mut *self.virt }
    }
}

impl<T: Zeroable> Drop for Pages<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by `yakvm_pages_alloc(self.order)` and not freed before (type
        // invariant); nothing refers to it once its owner is dropped.
        unsafe { glue::yakvm_pages_free(self.virt.cast(), self.order) };
        PAGES_HELD.fetch_sub(1 << self.order, Ordering::Relaxed);
    }
}

/// A page-sized byte array, for pages whose content is not a Rust structure.
#[repr(C, align(4096))]

pub(crate) struct RawPage {
    pub(crate) bytes: [u8; PAGE_SIZE],
}

/// A page of 512 64-bit entries (page tables).
#[repr(C, align(4096))]

pub(crate) struct Table {
    pub(crate) entries: [u64; 512],
}

/// Userspace pages pinned for the life of this value (guest RAM).
///
/// # Invariants
/// `pages` holds `pages.len()` pages pinned by `pin_user_pages_fast` with `FOLL_LONGTERM`,
/// each released exactly once, in `drop`.
pub(crate) struct PinnedPages {
    /// One pointer per page: 8 MiB for 4 GiB of RAM, hence `KVVec` (vmalloc when large).
    pages: KVVec<*mut bindings::page>,
}

// SAFETY: the pins are references counted by the kernel; any thread may drop them.
unsafe impl Send for PinnedPages {}
// SAFETY: shared access only reads the page pointers.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// Pins `count` writable pages of the calling process starting at `addr` (page aligned).
    pub(crate) fn pin(addr: usize, count: usize) -> Result<Self> {
        let mut pages: KVVec<*mut bindings::page> = KVVec::with_capacity(count, GFP_KERNEL)?;
        let mut this = Self { pages: KVVec::new() };
        while pages.len() < count {
            let done = pages.len();
            let want = (count - done).min(512);
            let start = addr + done * PAGE_SIZE;
            // SAFETY: `pages` has capacity for `count` entries, so `want` entries past `done`
            // are writable; `pin_user_pages_fast` validates the user range itself.
            let got = unsafe {
                bindings::pin_user_pages_fast(
                    start as _,
                    want as _,
                    (bindings::FOLL_WRITE | bindings::FOLL_LONGTERM) as _,
                    pages.as_mut_ptr().add(done),
                )
            };
            if got <= 0 {
                // Hand what was pinned so far to `this`, whose drop unpins it.
                this.pages = pages;
                return Err(if got < 0 { Error::from_errno(got as _) } else { EFAULT });
            }
            // SAFETY: the call initialised `got` more entries (`got <= want`).
            unsafe { pages.set_len(done + got as usize) };
            PAGES_PINNED.fetch_add(got as usize, Ordering::Relaxed);
            super::cpu::cond_resched();
        }
        // INVARIANT: every entry was pinned by the calls above.
        this.pages = pages;
        Ok(this)
    }

    /// Physical address of the `index`-th page.
    pub(crate) fn phys(&self, index: usize) -> u64 {
        // SAFETY: the page is pinned (type invariant), so its `struct page` is live.
        unsafe { glue::yakvm_page_to_phys(self.pages[index]) }
    }

    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }

    /// Kernel address of byte `offset` of page `index`, with room for `len` bytes.
    fn byte_ptr(&self, index: usize, offset: usize, len: usize) -> Result<*mut u8> {
        let page = *self.pages.get(index).ok_or(EFAULT)?;
        if offset.checked_add(len).is_none_or(|end| end > PAGE_SIZE) {
            return Err(EFAULT);
        }
        // SAFETY: the page is pinned (type invariant) and, on x86-64, in the direct map.
        let base = unsafe { glue::yakvm_page_address(page) }.cast::<u8>();
        // SAFETY: `offset + len <= PAGE_SIZE`, inside the page.
        Ok(unsafe { base.add(offset) })
    }

    /// Copies bytes of page `index` from `offset` into `out` (within one page).
    pub(crate) fn read(&self, index: usize, offset: usize, out: &mut [u8]) -> Result {
        let src = self.byte_ptr(index, offset, out.len())?;
        // SAFETY: `src` has `out.len()` readable bytes (checked). Guest RAM is never
        // referenced by Rust; the guest and userspace may write it concurrently, so this is
        // a plain byte copy, like `copy_from_user`.
        unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into page `index` at `offset` (within one page).
    pub(crate) fn write(&self, index: usize, offset: usize, data: &[u8]) -> Result {
        let dst = self.byte_ptr(index, offset, data.len())?;
        // SAFETY: as in `read`; the page is pinned writable (FOLL_WRITE).
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        // In chunks, letting the scheduler in between: up to a million pages.
        for chunk in self.pages.chunks_mut(512) {
            // SAFETY: each entry was pinned once (type invariant) and is released once,
            // here; the guest may have written them, so they are marked dirty.
            unsafe { bindings::unpin_user_pages_dirty_lock(chunk.as_mut_ptr(), chunk.len() as _, true) };
            super::cpu::cond_resched();
        }
        PAGES_PINNED.fetch_sub(self.pages.len(), Ordering::Relaxed);
    }
}
