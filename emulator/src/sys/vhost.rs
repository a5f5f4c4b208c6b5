//! The kernel's vhost-net (`/dev/vhost-net`, linux/vhost.h): the ioctls that hand a
//! virtio-net device's rings to a kernel thread of this process, which then moves the
//! frames between guest RAM and a tap itself. Each ioctl is one safe method.
//!
//! (rust-vmm's `vhost` crate has these too, but its kernel backend wants to own a
//! vm-memory address space to translate ring addresses, which `VmMemory` only lends; the
//! eleven calls are written here.)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::libc;

use super::ctx;

const VHOST_NET_PATH: &str = "/dev/vhost-net";
/// linux/vhost.h's ioctl type.
const VHOST: u8 = 0xaf;
/// The most regions [`VhostNet::set_mem_table`] takes (guest RAM is one).
pub const MAX_REGIONS: usize = 4;

/// A region of guest physical memory and where this process maps it
/// (`struct vhost_memory_region`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemRegion {
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub flags_padding: u64,
}

/// `struct vhost_memory` with room for [`MAX_REGIONS`] regions (the kernel reads
/// `nregions` of them).
#[repr(C)]
struct MemTable {
    nregions: u32,
    padding: u32,
    regions: [MemRegion; MAX_REGIONS],
}

/// The header the ioctl number is sized by.
#[repr(C)]
struct MemHeader {
    nregions: u32,
    padding: u32,
}

#[repr(C)]
struct VringState {
    index: u32,
    num: u32,
}

#[repr(C)]
struct VringFile {
    index: u32,
    fd: i32,
}

/// A ring's three parts as addresses in this process (`struct vhost_vring_addr`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VringAddr {
    pub index: u32,
    pub flags: u32,
    pub desc_user_addr: u64,
    pub used_user_addr: u64,
    pub avail_user_addr: u64,
    pub log_guest_addr: u64,
}

nix::ioctl_read!(vhost_get_features, VHOST, 0x00, u64);
nix::ioctl_write_ptr!(vhost_set_features, VHOST, 0x00, u64);
nix::ioctl_none!(vhost_set_owner, VHOST, 0x01);
nix::ioctl_write_ptr!(vhost_set_mem_table, VHOST, 0x03, MemHeader);
nix::ioctl_write_ptr!(vhost_set_vring_num, VHOST, 0x10, VringState);
nix::ioctl_write_ptr!(vhost_set_vring_addr, VHOST, 0x11, VringAddr);
nix::ioctl_write_ptr!(vhost_set_vring_base, VHOST, 0x12, VringState);
nix::ioctl_readwrite!(vhost_get_vring_base, VHOST, 0x12, VringState);
nix::ioctl_write_ptr!(vhost_set_vring_kick, VHOST, 0x20, VringFile);
nix::ioctl_write_ptr!(vhost_set_vring_call, VHOST, 0x21, VringFile);
nix::ioctl_write_ptr!(vhost_net_set_backend, VHOST, 0x30, VringFile);

/// Why `/dev/vhost-net` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("{VHOST_NET_PATH} is missing (a kernel without CONFIG_VHOST_NET, or the vhost_net module not loaded)")]
    Missing,
    #[error("{VHOST_NET_PATH}: not permitted (run as root)")]
    NotPermitted,
    #[error("{VHOST_NET_PATH}: {0}")]
    Call(io::Error),
}

/// An open `/dev/vhost-net` this process owns (`VHOST_SET_OWNER` done: the kernel's
/// worker thread for it runs in this process's memory).
#[derive(Debug)]
pub struct VhostNet {
    file: File,
}

impl VhostNet {
    pub fn open() -> Result<Self, VhostError> {
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(VHOST_NET_PATH).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => VhostError::Missing,
            io::ErrorKind::PermissionDenied => VhostError::NotPermitted,
            _ => VhostError::Call(e),
        })?;
        // SAFETY: VHOST_SET_OWNER takes no argument; the descriptor is ours.
        unsafe { vhost_set_owner(file.as_raw_fd()) }.map_err(|e| VhostError::Call(ctx("VHOST_SET_OWNER")(e)))?;
        Ok(Self { file })
    }

    /// VHOST_GET_FEATURES: the virtio and vhost feature bits the kernel handles.
    pub fn features(&self) -> io::Result<u64> {
        let mut f = 0u64;
        // SAFETY: the kernel writes one u64 into `f`, a live local.
        unsafe { vhost_get_features(self.file.as_raw_fd(), &mut f) }.map_err(ctx("VHOST_GET_FEATURES"))?;
        Ok(f)
    }

    /// VHOST_SET_FEATURES: what the rings and headers follow (a subset of `features`).
    pub fn set_features(&self, features: u64) -> io::Result<()> {
        // SAFETY: the kernel reads one u64 from a live local.
        unsafe { vhost_set_features(self.file.as_raw_fd(), &features) }.map(drop).map_err(ctx("VHOST_SET_FEATURES"))
    }

    /// VHOST_SET_MEM_TABLE: guest physical memory and where this process maps it (the
    /// kernel copies the table). At most [`MAX_REGIONS`] regions.
    pub fn set_mem_table(&self, regions: &[MemRegion]) -> io::Result<()> {
        if regions.is_empty() || regions.len() > MAX_REGIONS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("VHOST_SET_MEM_TABLE: {} regions (1 to {MAX_REGIONS})", regions.len())));
        }
        let mut table = MemTable { nregions: regions.len() as u32, padding: 0, regions: [MemRegion::default(); MAX_REGIONS] };
        table.regions[..regions.len()].copy_from_slice(regions);
        let header = (&table as *const MemTable).cast::<MemHeader>();
        // SAFETY: `table` is a live `struct vhost_memory` (its header, then `nregions`
        // regions, repr(C) as linux/vhost_types.h lays them out); the kernel reads the
        // header and then that many regions during the call.
        unsafe { vhost_set_mem_table(self.file.as_raw_fd(), header) }.map(drop).map_err(ctx("VHOST_SET_MEM_TABLE"))
    }

    /// VHOST_SET_VRING_NUM: ring `index`'s size.
    pub fn set_vring_num(&self, index: u32, num: u16) -> io::Result<()> {
        let s = VringState { index, num: num.into() };
        // SAFETY: the kernel reads the struct, a live local.
        unsafe { vhost_set_vring_num(self.file.as_raw_fd(), &s) }.map(drop).map_err(ctx("VHOST_SET_VRING_NUM"))
    }

    /// VHOST_SET_VRING_BASE: the next available index ring `index` starts from.
    pub fn set_vring_base(&self, index: u32, base: u16) -> io::Result<()> {
        let s = VringState { index, num: base.into() };
        // SAFETY: as above.
        unsafe { vhost_set_vring_base(self.file.as_raw_fd(), &s) }.map(drop).map_err(ctx("VHOST_SET_VRING_BASE"))
    }

    /// VHOST_GET_VRING_BASE: where ring `index` stopped (the kernel also stops it).
    pub fn vring_base(&self, index: u32) -> io::Result<u16> {
        let mut s = VringState { index, num: 0 };
        // SAFETY: the kernel reads and writes the struct, a live local.
        unsafe { vhost_get_vring_base(self.file.as_raw_fd(), &mut s) }.map_err(ctx("VHOST_GET_VRING_BASE"))?;
        Ok(s.num as u16)
    }

    /// VHOST_SET_VRING_ADDR: ring `addr.index`'s parts, as addresses in this process.
    pub fn set_vring_addr(&self, addr: &VringAddr) -> io::Result<()> {
        // SAFETY: the kernel reads the struct during the call.
        unsafe { vhost_set_vring_addr(self.file.as_raw_fd(), addr) }.map(drop).map_err(ctx("VHOST_SET_VRING_ADDR"))
    }

    /// VHOST_SET_VRING_KICK: the eventfd the guest's notifications of ring `index` signal.
    pub fn set_vring_kick(&self, index: u32, fd: BorrowedFd<'_>) -> io::Result<()> {
        let f = VringFile { index, fd: fd.as_raw_fd() };
        // SAFETY: the kernel reads the struct and takes its own reference to the eventfd.
        unsafe { vhost_set_vring_kick(self.file.as_raw_fd(), &f) }.map(drop).map_err(ctx("VHOST_SET_VRING_KICK"))
    }

    /// VHOST_SET_VRING_CALL: the eventfd the kernel signals when ring `index` has used
    /// entries the driver wants to hear about (it may change while the ring runs).
    pub fn set_vring_call(&self, index: u32, fd: BorrowedFd<'_>) -> io::Result<()> {
        let f = VringFile { index, fd: fd.as_raw_fd() };
        // SAFETY: as above.
        unsafe { vhost_set_vring_call(self.file.as_raw_fd(), &f) }.map(drop).map_err(ctx("VHOST_SET_VRING_CALL"))
    }

    /// VHOST_NET_SET_BACKEND: ring `index` runs on the tap `fd`, or stops (`None`).
    pub fn set_backend(&self, index: u32, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let f = VringFile { index, fd: fd.map_or(-1 as RawFd, |f| f.as_raw_fd()) };
        // SAFETY: as above (the kernel takes its own reference to the tap's socket).
        unsafe { vhost_net_set_backend(self.file.as_raw_fd(), &f) }.map(drop).map_err(ctx("VHOST_NET_SET_BACKEND"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structures have linux/vhost_types.h's sizes (the ioctl numbers encode them).
    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<MemHeader>(), 8);
        assert_eq!(std::mem::size_of::<MemRegion>(), 32);
        assert_eq!(std::mem::offset_of!(MemTable, regions), 8);
        assert_eq!(std::mem::size_of::<VringState>(), 8);
        assert_eq!(std::mem::size_of::<VringFile>(), 8);
        assert_eq!(std::mem::size_of::<VringAddr>(), 40);
        assert_eq!(std::mem::offset_of!(VringAddr, used_user_addr), 16);
        // _IOW(0xaf, 0x30, struct vhost_vring_file) = 0x4008af30.
        assert_eq!(nix::request_code_write!(VHOST, 0x30, 8), 0x4008_af30);
        assert_eq!(nix::request_code_readwrite!(VHOST, 0x12, 8), 0xc008_af12);
    }
}
