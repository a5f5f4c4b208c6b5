//! virtio 1.x devices (the OASIS "Virtual I/O Device (VIRTIO) Version 1.2" specification),
//! apart from the transport that puts them on a bus (`pc/virtio_pci.rs`: PCI).
//!
//! A device is a worker thread and the queues it shares with the transport:
//!
//! - the transport (on the vCPU threads: the guest's register accesses) configures each
//!   queue ([`QueueSlot`]: rust-vmm's `virtio_queue::Queue`, its size and ring addresses),
//!   negotiates the features and sets the slot `live` at DRIVER_OK; a reset takes the slot's
//!   lock (waiting for the worker to finish the chains it took) and clears it;
//! - the guest's queue notification becomes a write to the queue's [`EventFd`]: today the
//!   transport writes it when the notify register's MMIO exit reaches the emulator; with
//!   an ioeventfd the module will signal it without an exit (the same descriptor);
//! - the worker waits on that EventFd, takes the chains, does the I/O, fills the used ring
//!   and tells the transport through [`Signal`] (which raises the queue's MSI-X vector).
//!
//! So a vCPU thread never does a device's I/O; the worker never touches the transport's
//! registers except through [`Signal`].

pub mod blk;
pub mod blk_request;
pub mod chain;
pub mod net;
pub mod rng;
pub mod vhost_net;
#[cfg(test)]
pub mod testing;

use std::io;
use std::sync::{Arc, Mutex};

use virtio_queue::Queue;
pub use vmm_sys_util::eventfd::EventFd;

use crate::bus::lock;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    use virtio_bindings::virtio_config as c;
    pub const ACKNOWLEDGE: u8 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    pub const DRIVER: u8 = c::VIRTIO_CONFIG_S_DRIVER as u8;
    pub const DRIVER_OK: u8 = c::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    pub const FEATURES_OK: u8 = c::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    pub const NEEDS_RESET: u8 = c::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    pub const FAILED: u8 = c::VIRTIO_CONFIG_S_FAILED as u8;
}

/// Feature bits every device of ours offers (virtio 1.2, 6): the modern interface, the
/// event index (notification suppression, 2.7.10) and indirect descriptors (2.7.5.3).
pub const fn feature(bit: u32) -> u64 {
    1 << bit
}
pub const F_VERSION_1: u64 = feature(virtio_bindings::virtio_config::VIRTIO_F_VERSION_1);
pub const F_EVENT_IDX: u64 = feature(virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX);
pub const F_INDIRECT_DESC: u64 = feature(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC);
pub const TRANSPORT_FEATURES: u64 = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC;

/// A queue as the transport and the worker share it.
pub struct QueueSlot {
    pub queue: Queue,
    /// The driver set DRIVER_OK with this queue enabled (and its rings inside RAM): the
    /// worker may use it. Cleared by a reset, or when the worker found the device broken.
    pub live: bool,
}

pub type SharedQueue = Arc<Mutex<QueueSlot>>;

/// How a worker tells the transport what happened.
pub trait Signal: Send + Sync {
    /// Queue `queue`'s used ring has entries the driver wants to hear about.
    fn used(&self, queue: usize);
    /// The device found an error it cannot recover from (a broken descriptor chain, rings
    /// it cannot reach): DEVICE_NEEDS_RESET and a configuration change notification.
    fn needs_reset(&self);
}

/// A device whose rings something outside the emulator serves (vhost-net: a kernel
/// thread): the transport hands it the queues at DRIVER_OK and takes them back at a reset.
/// Its interrupts come back on each queue's call eventfd, which the transport points at
/// the vector's irqfd or at a relay eventfd of its own (`pc/virtio_pci.rs`).
pub trait Offload: Send {
    /// The driver set DRIVER_OK with `features` and these queues (index, and its ring).
    fn start(&mut self, features: u64, queues: &[OffloadQueue<'_>]) -> io::Result<()>;
    /// Queue `queue`'s used-ring interrupts go to `call` from now on.
    fn set_call(&mut self, queue: usize, call: &EventFd) -> io::Result<()>;
    /// Stops serving the queues (device reset): once it returns, nothing touches them.
    fn stop(&mut self);
}

/// A queue as [`Offload::start`] gets it: guest addresses of its three parts.
pub struct OffloadQueue<'a> {
    pub index: usize,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The driver's notifications (the queue's ioeventfd).
    pub kick: &'a EventFd,
    /// Where used-ring interrupts go first.
    pub call: &'a EventFd,
}

/// What one pass over a queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    pub completed: u64,
    /// The driver asked to be told (the used ring's notification is due).
    pub notify: bool,
    /// The device found the queue or a chain broken: it needs a reset.
    pub needs_reset: bool,
}

/// Runs a one-queue device (virtio-blk, virtio-rng) on a thread of its own: each time
/// `kick` is written, `process` serves the queue if it is live, then `signal` hears what
/// it asked for (the used ring's interrupt; a broken device's queue stops being live and
/// the device needs a reset).
pub fn spawn_queue_worker(
    name: String,
    queue: SharedQueue,
    kick: EventFd,
    mem: Arc<crate::sys::VmMemory>,
    signal: Arc<dyn Signal>,
    mut process: impl FnMut(&mut QueueSlot, &vm_memory::GuestMemoryMmap) -> Processed + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || loop {
        if kick.read().is_err() {
            continue;
        }
        let done = {
            let mut slot = lock(&queue);
            if !slot.live {
                continue;
            }
            let done = process(&mut slot, mem.get());
            if done.needs_reset {
                slot.live = false;
            }
            done
        };
        if done.notify {
            signal.used(0);
        }
        if done.needs_reset {
            signal.needs_reset();
        }
    })
}

/// The devices besides the disks: entropy (`--rng`) and the network interfaces (`--net`,
/// their taps open).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    pub rng: bool,
    pub nets: Vec<Arc<net::NetSpec>>,
}

impl Extra {
    pub fn any(&self) -> bool {
        self.rng || !self.nets.is_empty()
    }
    /// PCI slots they take.
    pub fn count(&self) -> usize {
        usize::from(self.rng) + self.nets.len()
    }
}
