//! virtio-net with `vhost=on`: the kernel's vhost-net moves the frames. The emulator keeps
//! the PCI function, the feature negotiation and the configuration (MAC, status, MTU);
//! at DRIVER_OK the transport hands the two rings to `/dev/vhost-net` ([`VhostBackend`],
//! an [`Offload`]): the kernel thread (`vhost-PID`, in yakvm's process) reads the
//! transmit ring and writes the tap, reads the tap and fills the receive ring.
//!
//! - Kick: the queue's ioeventfd, the one the transport registered at the notify address
//!   (without one, `--no-ioeventfd`, the transport writes it on the MMIO exit).
//! - Call: the vector's irqfd when the VM has them (`--kernel-apic`) and the vector can
//!   send (MSI-X on, nothing masked): the kernel thread interrupts the guest with no
//!   emulator thread on the way. Otherwise a relay eventfd per queue, which a small
//!   emulator thread ([`spawn_relay`]) turns into the vector's MSI through the usual
//!   path (MSI-X masks and pending bits, the emulator's APICs or an irqfd). The
//!   transport moves a queue between the two as the guest masks, unmasks or rewrites
//!   its vector.
//! - The vnet header: the tap keeps giving and taking the 12-byte `virtio_net_hdr_v1`
//!   (TUNSETVNETHDRSZ 12, as for the userspace device), so vhost is not asked for
//!   VHOST_NET_F_VIRTIO_NET_HDR: with VERSION_1 it then copies the header between ring
//!   and tap as it is and writes `num_buffers` itself (drivers/vhost/net.c: sock_hlen).
//! - Features: the device offers only the ring features vhost handles ([`offer`]);
//!   vhost is told the negotiated ring features ([`acked`]); the offloads go to the
//!   tap (TUNSETOFFLOAD) as for the userspace device.
//! - Reset: VHOST_NET_SET_BACKEND -1 on both rings (vhost flushes its work), then
//!   VHOST_GET_VRING_BASE; the next DRIVER_OK sets everything up again.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use virtio_bindings::virtio_net as n;

use super::net::{tap_offloads, NetSpec};
use super::{feature, EventFd, Offload, OffloadQueue, Signal, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1};
use crate::sys::{MemRegion, VhostNet, VringAddr};

/// The features that change how the rings and headers are laid out: vhost must handle
/// every one the guest takes.
pub const RING_FEATURES: u64 = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC | feature(n::VIRTIO_NET_F_MRG_RXBUF);
/// vhost builds the vnet header itself (the tap then has none): not used here.
const VHOST_NET_F_VIRTIO_NET_HDR: u64 = feature(27);
/// Dirty page logging for migration: not used.
const VHOST_F_LOG_ALL: u64 = feature(26);

/// What the device offers the guest with vhost's features `vhost`: `device`'s, less the
/// ring features vhost lacks.
pub fn offer(device: u64, vhost: u64) -> u64 {
    device & !(RING_FEATURES & !vhost)
}

/// What vhost is told (VHOST_SET_FEATURES) for the guest's `negotiated` features: those
/// of them vhost knows (the device's own, MAC or CSUM, are the emulator's and the tap's).
pub fn acked(negotiated: u64, vhost: u64) -> u64 {
    negotiated & vhost & !(VHOST_NET_F_VIRTIO_NET_HDR | VHOST_F_LOG_ALL)
}

/// Guest RAM for VHOST_SET_MEM_TABLE: one region from guest address 0 (the pc machine's
/// RAM is below the PCI hole, one mapping).
pub fn mem_table(ram_len: u64, host_address: u64) -> Vec<MemRegion> {
    vec![MemRegion { guest_phys_addr: 0, memory_size: ram_len, userspace_addr: host_address, flags_padding: 0 }]
}

/// Queue `q`'s rings as addresses in this process, each part inside RAM (`None` if one
/// is not: virtio 1.2, 2.7 gives the sizes).
pub fn ring_addr(q: &OffloadQueue<'_>, ram_len: u64, host_address: u64) -> Option<VringAddr> {
    let size = u64::from(q.size);
    let host = |gpa: u64, len: u64| (gpa.checked_add(len)? <= ram_len).then(|| host_address + gpa);
    Some(VringAddr {
        index: q.index as u32,
        flags: 0,
        desc_user_addr: host(q.desc, 16 * size)?,
        avail_user_addr: host(q.avail, 6 + 2 * size)?,
        used_user_addr: host(q.used, 6 + 8 * size)?,
        log_guest_addr: 0,
    })
}

#[derive(Debug, Default)]
pub struct VhostStats {
    /// Times the rings were handed to vhost (DRIVER_OK) and taken back (reset).
    pub starts: AtomicU64,
    pub stops: AtomicU64,
    /// Interrupts that came through the relay eventfds (an emulator thread on the way).
    pub relayed: AtomicU64,
    /// Where the rings stood when vhost last gave them back (VHOST_GET_VRING_BASE): the
    /// receive ring's next available index in bits 0-15, the transmit ring's in 16-31.
    pub last_bases: AtomicU64,
}

impl VhostStats {
    /// The counters; `calls` = (times a call was pointed at an irqfd, at the relay).
    pub fn line(&self, calls: (u64, u64)) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let bases = l(&self.last_bases);
        format!(
            "vhost-net: {} starts, {} stops (rings given back at rx {} tx {}), calls pointed {} times at an irqfd and {} at the relay, {} interrupts relayed",
            l(&self.starts),
            l(&self.stops),
            bases & 0xffff,
            bases >> 16 & 0xffff,
            calls.0,
            calls.1,
            l(&self.relayed)
        )
    }
}

/// The [`Offload`] of a `--net tap=NAME,vhost=on`.
pub struct VhostBackend {
    spec: Arc<NetSpec>,
    ram_len: u64,
    host_address: u64,
    /// Queues handed over (their indexes) until the next stop.
    running: Vec<u32>,
    pub stats: Arc<VhostStats>,
}

impl VhostBackend {
    /// Tells vhost where guest RAM is (once: it does not move). `spec` must have vhost.
    pub fn new(spec: Arc<NetSpec>, ram_len: u64, host_address: u64) -> io::Result<Self> {
        let dev = Self::dev(&spec)?;
        dev.set_mem_table(&mem_table(ram_len, host_address))?;
        Ok(Self { spec, ram_len, host_address, running: Vec::new(), stats: Default::default() })
    }

    fn dev(spec: &NetSpec) -> io::Result<&VhostNet> {
        spec.vhost.as_ref().map(|v| &v.0).ok_or_else(|| io::Error::other("vhost=on without /dev/vhost-net"))
    }

    fn try_start(&mut self, features: u64, queues: &[OffloadQueue<'_>]) -> io::Result<()> {
        let spec = self.spec.clone();
        let (dev, vhost_features) = spec.vhost.as_ref().map(|(d, f)| (d, *f)).ok_or_else(|| io::Error::other("no vhost"))?;
        let missing = features & RING_FEATURES & !vhost_features;
        if missing != 0 {
            return Err(io::Error::other(format!("the guest took ring features {missing:#x} vhost does not handle")));
        }
        dev.set_features(acked(features, vhost_features))?;
        spec.tap.set_offload(tap_offloads(features))?;
        for q in queues {
            let index = q.index as u32;
            let addr = ring_addr(q, self.ram_len, self.host_address)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("queue {index}: a ring outside RAM")))?;
            dev.set_vring_num(index, q.size)?;
            dev.set_vring_base(index, 0)?;
            dev.set_vring_addr(&addr)?;
            dev.set_vring_kick(index, crate::sys::eventfd_fd(q.kick))?;
            dev.set_vring_call(index, crate::sys::eventfd_fd(q.call))?;
        }
        for q in queues {
            dev.set_backend(q.index as u32, Some(spec.tap.as_fd()))?;
            self.running.push(q.index as u32);
        }
        Ok(())
    }
}

impl Offload for VhostBackend {
    fn start(&mut self, features: u64, queues: &[OffloadQueue<'_>]) -> io::Result<()> {
        self.stop();
        let r = self.try_start(features, queues);
        if r.is_err() {
            self.stop();
        } else {
            self.stats.starts.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn set_call(&mut self, queue: usize, call: &EventFd) -> io::Result<()> {
        Self::dev(&self.spec)?.set_vring_call(queue as u32, crate::sys::eventfd_fd(call))
    }

    fn stop(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let Ok(dev) = Self::dev(&self.spec) else { return };
        let mut bases = 0u64;
        for index in std::mem::take(&mut self.running) {
            if let Err(e) = dev.set_backend(index, None) {
                eprintln!("yakvm: tap {}: vhost-net: stopping queue {index}: {e}", self.spec.tap.name);
            }
            match dev.vring_base(index) {
                Ok(base) => bases |= u64::from(base) << (16 * index.min(3)),
                Err(e) => eprintln!("yakvm: tap {}: vhost-net: queue {index}'s position: {e}", self.spec.tap.name),
            }
        }
        self.stats.last_bases.store(bases, Ordering::Relaxed);
        self.stats.stops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Turns the relay eventfds' signals into each queue's interrupt through `signal` (the
/// transport's MSI-X path), on a thread of its own.
pub fn spawn_relay(name: String, relays: Vec<EventFd>, signal: Arc<dyn Signal>, stats: Arc<VhostStats>) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || loop {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = relays.iter().map(|r| PollFd::new(crate::sys::eventfd_fd(r), PollFlags::POLLIN)).collect();
            if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
                continue;
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        for (q, relay) in relays.iter().enumerate() {
            if ready[q] && relay.read().is_ok() {
                stats.relayed.fetch_add(1, Ordering::Relaxed);
                signal.used(q);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VHOST_KERNEL: u64 = (1 << 24) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 32) | (1 << 15) | (1 << 33) | (1 << 40);

    #[test]
    fn features_offered_and_acked() {
        let device = super::super::net::features();
        // vhost-net of Linux 6.12 handles every ring feature: the offer is unchanged.
        assert_eq!(offer(device, VHOST_KERNEL), device);
        // A vhost without EVENT_IDX and MRG_RXBUF: they are not offered.
        let less = VHOST_KERNEL & !F_EVENT_IDX & !feature(n::VIRTIO_NET_F_MRG_RXBUF);
        assert_eq!(offer(device, less), device & !F_EVENT_IDX & !feature(n::VIRTIO_NET_F_MRG_RXBUF));
        // vhost hears only the ring features; never VIRTIO_NET_HDR (the tap keeps the
        // header) nor LOG_ALL, even if asked.
        let negotiated = F_VERSION_1 | F_EVENT_IDX | feature(n::VIRTIO_NET_F_MRG_RXBUF) | feature(n::VIRTIO_NET_F_MAC) | feature(n::VIRTIO_NET_F_CSUM);
        assert_eq!(acked(negotiated, VHOST_KERNEL), F_VERSION_1 | F_EVENT_IDX | feature(n::VIRTIO_NET_F_MRG_RXBUF));
        assert_eq!(acked(negotiated | VHOST_NET_F_VIRTIO_NET_HDR | VHOST_F_LOG_ALL, VHOST_KERNEL) & (VHOST_NET_F_VIRTIO_NET_HDR | VHOST_F_LOG_ALL), 0);
    }

    #[test]
    fn guest_ram_is_one_region_and_rings_translate_inside_it() {
        let ram = 512u64 << 20;
        let host = 0x7f00_0000_0000;
        assert_eq!(mem_table(ram, host), [MemRegion { guest_phys_addr: 0, memory_size: ram, userspace_addr: host, flags_padding: 0 }]);
        let (k, c) = (EventFd::new(0).unwrap(), EventFd::new(0).unwrap());
        let q = OffloadQueue { index: 1, size: 256, desc: 0x10000, avail: 0x11000, used: 0x12000, kick: &k, call: &c };
        let a = ring_addr(&q, ram, host).unwrap();
        assert_eq!((a.index, a.desc_user_addr, a.avail_user_addr, a.used_user_addr), (1, host + 0x10000, host + 0x11000, host + 0x12000));
        // The used ring's last byte just inside RAM, then one past.
        let end = ram - (6 + 8 * 256);
        assert!(ring_addr(&OffloadQueue { used: end, ..q }, ram, host).is_some());
        assert!(ring_addr(&OffloadQueue { used: end + 1, ..q }, ram, host).is_none());
        assert!(ring_addr(&OffloadQueue { desc: u64::MAX - 8, ..q }, ram, host).is_none(), "no wrap-around");
    }
}
