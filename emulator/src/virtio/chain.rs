//! A descriptor chain walked and checked once, for the devices that move bytes (rng, net):
//! its descriptors as (address, length, writable), every one inside guest RAM.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// One descriptor's buffer, inside guest RAM (checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// Why a chain cannot be used at all (the device then needs a reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("the walk stopped at a descriptor that says NEXT (a loop, a bad index, a nested indirect table, a table outside RAM)")]
    Unended,
    #[error("a buffer outside guest RAM")]
    OutsideRam,
}

/// The chain's head and buffers. `virtio_queue` bounds the walk by the queue's (or the
/// indirect table's) size, so a loop ends there: a last descriptor that still says NEXT.
pub fn walk<M>(chain: DescriptorChain<M>) -> Result<(u16, Vec<Buf>), Broken>
where
    M: Deref + Clone,
    M::Target: GuestMemory,
{
    let head = chain.head_index();
    let mem: &M::Target = chain.memory();
    let mut bufs = Vec::new();
    let mut last_next = false;
    let mut walk = chain.clone();
    for d in walk.by_ref() {
        let len = d.len();
        if len > 0 && !mem.check_range(GuestAddress(d.addr().0), len as usize, Permissions::ReadWrite) {
            return Err(Broken::OutsideRam);
        }
        last_next = d.has_next();
        bufs.push(Buf { addr: d.addr().0, len, writable: d.is_write_only() });
    }
    if last_next {
        return Err(Broken::Unended);
    }
    Ok((head, bufs))
}
