//! Memory the emulator maps: guest RAM and the disk's file, both touched only through
//! bounds-checked byte copies.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::ctx;

/// Anonymous, zeroed memory used as guest RAM, accessed by the emulator only through
/// bounds-checked copies.
///
/// # Invariants
/// `ptr` is a private anonymous mapping of `len` bytes, owned by this value.
pub struct GuestMemory {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: all access goes through bounds-checked byte copies of a mapping this value owns;
// guest RAM is written concurrently by the guest anyway, never referenced by Rust.
unsafe impl Send for GuestMemory {}
// Shared by the vCPU threads, which (like the guest's CPUs) read and write it at once.
// `&self` methods only copy bytes through the raw pointer (`copy_nonoverlapping`), never
// make a Rust reference into the mapping, and never change `ptr` or `len`: a copy racing
// with another (or with the guest) gives mixed bytes, as on the hardware.
// SAFETY: no reference can observe a torn value (see above); the mapping lives until
// `drop`, which needs ownership (no other thread can use it then).
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    pub fn new(len: usize) -> io::Result<Self> {
        Self::with_protection(len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)
    }

    /// Memory with other protections (tests: the module must refuse read-only memory).
    pub fn with_protection(len: usize, prot: ProtFlags) -> io::Result<Self> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("guest RAM size is 0"))?;
        // SAFETY: a fresh anonymous mapping that aliases nothing.
        let ptr = unsafe { mmap_anonymous(None, size, prot, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE) }
        .map_err(ctx("mmap of guest RAM"))?;
        Ok(Self { ptr: ptr.cast(), len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The userspace address of the memory (for `SET_MEMORY_REGION`).
    pub fn host_address(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The byte range `[offset, offset + n)` if it lies inside RAM.
    fn range(&self, offset: u64, n: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        (start.checked_add(n)? <= self.len).then_some(start)
    }

    /// Copies `data` into RAM at `offset`; `None` if it does not fit.
    pub fn write(&self, offset: u64, data: &[u8]) -> Option<()> {
        let start = self.range(offset, data.len())?;
        // SAFETY: the range is inside the mapping (checked). Guest RAM is shared with the
        // guest, never borrowed as a Rust reference, so a byte copy cannot alias one.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(start), data.len()) };
        Some(())
    }

    /// Copies RAM at `offset` into `out`; `None` if the range is outside RAM.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Option<()> {
        let start = self.range(offset, out.len())?;
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(start), out.as_mut_ptr(), out.len()) };
        Some(())
    }
}

impl crate::disk::Dma for GuestMemory {
    fn read(&self, gpa: u64, out: &mut [u8]) -> Option<()> {
        GuestMemory::read(self, gpa, out)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Option<()> {
        GuestMemory::write(self, gpa, data)
    }
}

/// Guest RAM as rust-vmm's `vm-memory` sees it (for `virtio-queue`'s rings and descriptor
/// chains): one region from guest address 0 over the same mapping, which `ram` keeps alive.
///
/// # Invariants
/// `regions` describes `ram`'s mapping (built by `build_raw` over it, not owning it); the
/// fields drop in order, `regions` before `ram`. The regions are only lent out (`get`):
/// a caller must not keep a clone of them longer than this value.
pub struct VmMemory {
    regions: vm_memory::GuestMemoryMmap,
    ram: std::sync::Arc<GuestMemory>,
}

impl VmMemory {
    pub fn new(ram: std::sync::Arc<GuestMemory>) -> io::Result<Self> {
        let prot = (ProtFlags::PROT_READ | ProtFlags::PROT_WRITE).bits();
        let flags = (MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_ANONYMOUS).bits();
        // SAFETY: `ram.ptr` and `ram.len` are a live anonymous mapping made with these
        // protections and flags (GuestMemory's invariant), and `ram` (held in the value
        // built here) keeps it mapped as long as the region exists (our invariant).
        // vm-memory's accesses are volatile copies, like ours: no Rust reference is made.
        let region = unsafe { vm_memory::MmapRegion::build_raw(ram.ptr.as_ptr(), ram.len, prot, flags) }
            .map_err(|e| io::Error::other(format!("guest RAM as a vm-memory region: {e}")))?;
        let region = vm_memory::GuestRegionMmap::new(region, vm_memory::GuestAddress(0))
            .ok_or_else(|| io::Error::other("guest RAM as a vm-memory region: it wraps around"))?;
        let regions = vm_memory::GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| io::Error::other(format!("guest RAM as vm-memory: {e}")))?;
        Ok(Self { regions, ram })
    }

    /// The regions, lent for the time of an access.
    pub fn get(&self) -> &vm_memory::GuestMemoryMmap {
        &self.regions
    }

    /// The RAM behind them.
    pub fn ram(&self) -> &GuestMemory {
        &self.ram
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping (type invariant); the kernel holds its own pins.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// A file mapped shared into memory, for the disk: a sector is a copy, not a system call.
/// Writes land in the file's page cache at once (as `pwrite`'s do); `sync` puts them on
/// stable storage.
///
/// # Invariants
/// `ptr` is a shared read-write mapping of the first `len` bytes of a file, owned by this
/// value. The file must not shrink while it is mapped (the emulator holds its disk for
/// the run; a file truncated by someone else would raise SIGBUS, as for any mapping).
pub struct FileMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: all access goes through bounds-checked byte copies of a mapping this value owns.
unsafe impl Send for FileMapping {}

impl FileMapping {
    /// Maps the first `len` bytes of `file`; fails where the file system cannot (a 9p
    /// share without a page cache maps read-only at best).
    pub fn new(file: &File, len: usize) -> io::Result<Self> {
        let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("empty file"))?;
        // SAFETY: a fresh shared mapping that aliases no Rust object; only byte copies
        // ever touch it.
        let ptr = unsafe { mmap(None, size, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, file, 0) }
            .map_err(ctx("mmap of the disk"))?;
        Ok(Self { ptr: ptr.cast(), len })
    }

    fn range(&self, offset: u64, n: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        (start.checked_add(n)? <= self.len).then_some(start)
    }

    /// Copies `out.len()` bytes at `offset` out of the file; `None` past its end.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Option<()> {
        let start = self.range(offset, out.len())?;
        // SAFETY: the range is inside the mapping (checked); the mapping is never borrowed
        // as a Rust reference, so a byte copy aliases nothing.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(start), out.as_mut_ptr(), out.len()) };
        Some(())
    }

    /// Copies `data` into the file at `offset`; `None` past its end.
    pub fn write(&self, offset: u64, data: &[u8]) -> Option<()> {
        let start = self.range(offset, data.len())?;
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(start), data.len()) };
        Some(())
    }

    /// Writes the mapping's dirty pages back to the file (`msync`).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: our own mapping (type invariant), `len` bytes.
        unsafe { nix::sys::mman::msync(self.ptr.cast(), self.len, nix::sys::mman::MsFlags::MS_SYNC) }.map_err(ctx("msync of the disk"))
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping (type invariant); nothing refers to it.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    /// vm-memory sees the same bytes as our copies, and nothing past the end.
    #[test]
    fn vm_memory_shares_guest_ram() {
        use vm_memory::{Bytes, GuestAddress};
        let ram = std::sync::Arc::new(GuestMemory::new(8192).unwrap());
        ram.write(100, b"yakvm").unwrap();
        let vm = VmMemory::new(ram.clone()).unwrap();
        let mut got = [0u8; 5];
        vm.get().read_slice(&mut got, GuestAddress(100)).unwrap();
        assert_eq!(&got, b"yakvm");
        vm.get().write_slice(b"rings", GuestAddress(8187)).unwrap();
        ram.read(8187, &mut got).unwrap();
        assert_eq!(&got, b"rings");
        assert!(vm.get().write_slice(b"xx", GuestAddress(8191)).is_err());
    }

    #[test]
    fn guest_memory_rejects_out_of_range_copies() {
        let mem = GuestMemory::new(4096).unwrap();
        assert!(mem.write(4090, &[0; 6]).is_some());
        assert!(mem.write(4091, &[0; 6]).is_none());
        assert!(mem.write(u64::MAX, &[0; 1]).is_none());
        let mut buf = [0u8; 2];
        assert!(mem.read(4095, &mut buf).is_none());
    }
}
