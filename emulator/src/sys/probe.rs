//! Raw ioctls and mappings for the module's tests (the fuzzer, the self-test): calls the
//! safe types cannot express, each bounded so the kernel is the only one at risk.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use super::ctx;

/// What an ioctl of the fuzzer passes as its argument.
#[derive(Clone, Copy, Debug)]
pub enum FuzzArg {
    /// A number (also: NULL, unmapped and kernel addresses, which the kernel must refuse).
    Value(u64),
    /// A pointer to the caller's buffer.
    Buffer,
}

/// Bytes of the buffer `fuzz_ioctl` lends: more than any ioctl number can say (14 bits).
pub const FUZZ_BUFFER: usize = 1 << 14;

/// Issues ioctl `cmd` of yakvm's type on `fd` with `arg` (the fuzzer). The type byte is
/// forced to yakvm's, which the VFS never interprets itself: only the module sees it, and
/// it reads or writes at most the size the number encodes, which `buffer` covers.
pub fn fuzz_ioctl(fd: BorrowedFd<'_>, cmd: u32, arg: FuzzArg, buffer: &mut [u8; FUZZ_BUFFER]) -> Result<i32, nix::errno::Errno> {
    let cmd = (cmd & !0xff00) | (yakvm_abi::IOCTL_TYPE << 8);
    let arg = match arg {
        FuzzArg::Value(v) => v,
        FuzzArg::Buffer => buffer.as_mut_ptr() as u64,
    };
    // SAFETY: see above: the kernel can only write into `buffer` (when `arg` points to it)
    // or refuse the address; numbers and foreign addresses are checked by the kernel.
    let ret = unsafe { nix::libc::ioctl(fd.as_raw_fd(), cmd as _, arg) };
    nix::errno::Errno::result(ret)
}

/// Issues `_IO('Y', nr)` on `fd` (tests: numbers the module does not know must fail with
/// ENOTTY). Only our own ioctl type is allowed, which the VFS never interprets itself.
pub fn io_command(fd: BorrowedFd<'_>, nr: u8) -> io::Result<i32> {
    let cmd = (yakvm_abi::IOCTL_TYPE << 8) | u32::from(nr);
    // SAFETY: an `_IO` command (no argument) of yakvm's type: the VFS passes it to the
    // module, which reads no memory for it.
    let ret = unsafe { nix::libc::ioctl(fd.as_raw_fd(), cmd as _, 0) };
    nix::errno::Errno::result(ret).map_err(ctx("ioctl"))
}

/// Maps `len` bytes of `fd` at `offset` and unmaps them again (tests of `mmap` checks).
pub fn try_map(fd: BorrowedFd<'_>, len: usize, offset: i64) -> io::Result<()> {
    let size = NonZeroUsize::new(len).ok_or_else(|| io::Error::other("zero length"))?;
    // SAFETY: a fresh shared mapping that aliases nothing; unmapped right below.
    let ptr = unsafe { mmap(None, size, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, fd, offset) }.map_err(ctx("mmap"))?;
    // SAFETY: the mapping made just above, used by nothing.
    unsafe { munmap(ptr, len) }.map_err(ctx("munmap"))?;
    Ok(())
}
