//! virtio-net (virtio 1.2, 5.1; `--net tap=NAME[,ip=A][,mask=M][,mac=MAC][,mtu=N]`): an
//! Ethernet interface behind a receive queue (0) and a transmit queue (1), backed by a
//! host tap (`sys::Tap`, opened with IFF_VNET_HDR and a 12-byte vnet header: the same
//! `virtio_net_hdr_v1` the guest puts in front of each frame), served by a thread of its
//! own that waits on the tap and on both queues' EventFds.
//!
//! - Features: VERSION_1, RING_EVENT_IDX, INDIRECT_DESC (the transport's), MAC, MTU,
//!   STATUS (link up), MRG_RXBUF, and the offloads CSUM, GUEST_CSUM, HOST_TSO4/6 and
//!   GUEST_TSO4/6: the header goes to and comes from the tap as it is, and the tap is
//!   told (TUNSETOFFLOAD) which of the offloads the guest took for what it receives.
//! - Transmit ([`Net::transmit`]): each chain, device-readable only, is a header and a
//!   frame of at most [`MAX_FRAME`] bytes, written to the tap in one write. A chain
//!   that breaks a rule (a writable buffer, too short, too long) or that the tap refuses
//!   (a bad header) is counted and returned unsent; a chain that cannot be walked (a
//!   loop, a buffer outside RAM) makes the device need a reset.
//! - Receive ([`Net::receive`]): a frame is read from the tap only once the queue has a
//!   buffer; it then goes into as many chains as it needs (MRG_RXBUF: `num_buffers` in
//!   the header; without it, one chain, and a frame too big for the chain is dropped and
//!   counted). When the queue runs short in the middle of a frame, the chains go back,
//!   the frame waits in the device (counted as a hold) and the tap is not read again
//!   until the driver adds buffers: the tap keeps the rest (its own queue, then its
//!   drops).

use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use virtio_bindings::virtio_net as n;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::Processed;
use super::chain::{walk, Buf};
use super::{feature, EventFd, QueueSlot, SharedQueue, Signal, TRANSPORT_FEATURES};
use crate::bus::lock;
use crate::sys::{Tap, TapError, TapOptions};

/// The device type (virtio 1.2, 5).
pub const DEVICE_ID: u16 = 1;
pub const QUEUE_SIZE: u16 = 256;
pub const RX: usize = 0;
pub const TX: usize = 1;
/// virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers (VERSION_1: always there).
pub const HDR_LEN: usize = 12;
/// The largest frame either way: a 64 KiB TSO frame and its Ethernet/VLAN header.
pub const MAX_FRAME: usize = 65536 + 18;
/// The configuration structure: mac[6], status, max_virtqueue_pairs, mtu.
pub const CONFIG_LEN: usize = 12;
pub const DEFAULT_MTU: u16 = 1500;

const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;

/// Why a `--net` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("--net {spec}: {why} (tap=NAME[,ip=A.B.C.D][,mask=A.B.C.D][,mac=XX:XX:XX:XX:XX:XX][,mtu=68-65535][,vhost=on|off])")]
    BadOption { spec: String, why: String },
    #[error("--net: {0}")]
    Tap(#[from] TapError),
    #[error("--net tap={tap},vhost=on: {why}")]
    Vhost { tap: String, why: String },
}

/// A `--net` as given: the tap's options and the guest's MAC address and MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: TapOptions,
    pub mac: [u8; 6],
    pub mtu: u16,
    /// The kernel's vhost-net moves the frames (`virtio::vhost_net`).
    pub vhost: bool,
}

/// A stable, locally administered unicast address for the tap `name`: 52:54:00 and three
/// bytes of a hash of the name.
pub fn default_mac(name: &str) -> [u8; 6] {
    // FNV-1a.
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let b = h.to_be_bytes();
    [0x52, 0x54, 0x00, b[1], b[2], b[3]]
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

impl NetConfig {
    /// Parses `tap=NAME[,ip=A][,mask=M][,mac=MAC][,mtu=N][,vhost=on|off]` (mask defaults to
    /// 255.255.255.0 with ip; a mask alone is an error).
    pub fn parse(spec: &str) -> Result<Self, NetError> {
        let bad = |why: String| NetError::BadOption { spec: spec.into(), why };
        let (mut name, mut ip, mut mask, mut mac, mut mtu, mut vhost) = (None, None, None, None, None, None);
        for part in spec.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| bad(format!("'{part}' is not KEY=VALUE")))?;
            let seen = match key {
                "tap" => name.replace(value.to_string()).is_some(),
                "ip" => ip.replace(value.parse::<Ipv4Addr>().map_err(|_| bad(format!("ip '{value}' is not an IPv4 address")))?).is_some(),
                "mask" => {
                    let m = value.parse::<Ipv4Addr>().map_err(|_| bad(format!("mask '{value}' is not an IPv4 netmask")))?;
                    let bits = u32::from(m);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return Err(bad(format!("mask '{value}' is not a netmask (ones, then zeroes)")));
                    }
                    mask.replace(m).is_some()
                }
                "mac" => {
                    let m = parse_mac(value).ok_or_else(|| bad(format!("mac '{value}' is not six hex bytes with ':'")))?;
                    if m[0] & 1 != 0 {
                        return Err(bad(format!("mac '{value}' is a multicast address")));
                    }
                    mac.replace(m).is_some()
                }
                "vhost" => vhost
                    .replace(match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad(format!("vhost '{value}' is not on or off"))),
                    })
                    .is_some(),
                "mtu" => mtu.replace(value.parse::<u16>().ok().filter(|m| *m >= 68).ok_or_else(|| bad(format!("mtu '{value}' is not 68 to 65535")))?).is_some(),
                _ => return Err(bad(format!("unknown option '{key}'"))),
            };
            if seen {
                return Err(bad(format!("'{key}' given twice")));
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or_else(|| bad("no tap=NAME".into()))?;
        if mask.is_some() && ip.is_none() {
            return Err(bad("mask= without ip=".into()));
        }
        let ip = ip.map(|a| (a, mask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0))));
        let mac = mac.unwrap_or_else(|| default_mac(&name));
        let tap = TapOptions { name, ip, mtu: mtu.map(u32::from), vnet_hdr_len: HDR_LEN as i32 };
        Ok(Self { tap, mac, mtu: mtu.unwrap_or(DEFAULT_MTU), vhost: vhost.unwrap_or(false) })
    }
}

/// A `--net` ready for the board: its tap open (and with `vhost=on`, `/dev/vhost-net`
/// open and owned, with the features it handles).
#[derive(Debug)]
pub struct NetSpec {
    pub config: NetConfig,
    pub tap: Tap,
    pub vhost: Option<(crate::sys::VhostNet, u64)>,
}

impl NetSpec {
    pub fn open(spec: &str) -> Result<Self, NetError> {
        let config = NetConfig::parse(spec)?;
        let tap = Tap::open(&config.tap)?;
        let vhost = if config.vhost {
            let why = |why: String| NetError::Vhost { tap: config.tap.name.clone(), why };
            let dev = crate::sys::VhostNet::open().map_err(|e| why(e.to_string()))?;
            let features = dev.features().map_err(|e| why(e.to_string()))?;
            Some((dev, features))
        } else {
            None
        };
        Ok(Self { config, tap, vhost })
    }

    /// The features the device offers: all of [`features`], less the ring features
    /// vhost lacks with `vhost=on`.
    pub fn features(&self) -> u64 {
        match &self.vhost {
            Some((_, vhost)) => super::vhost_net::offer(features(), *vhost),
            None => features(),
        }
    }
}

/// The features the device offers.
pub fn features() -> u64 {
    TRANSPORT_FEATURES
        | [
            n::VIRTIO_NET_F_MAC,
            n::VIRTIO_NET_F_MTU,
            n::VIRTIO_NET_F_STATUS,
            n::VIRTIO_NET_F_MRG_RXBUF,
            n::VIRTIO_NET_F_CSUM,
            n::VIRTIO_NET_F_GUEST_CSUM,
            n::VIRTIO_NET_F_HOST_TSO4,
            n::VIRTIO_NET_F_HOST_TSO6,
            n::VIRTIO_NET_F_GUEST_TSO4,
            n::VIRTIO_NET_F_GUEST_TSO6,
        ]
        .iter()
        .fold(0, |f, &b| f | feature(b))
}

/// The configuration structure (virtio 1.2, 5.1.4): mac, status (LINK_UP), one queue
/// pair, mtu.
pub fn config_space(mac: [u8; 6], mtu: u16) -> Vec<u8> {
    let mut c = vec![0u8; CONFIG_LEN];
    c[0..6].copy_from_slice(&mac);
    c[6..8].copy_from_slice(&(n::VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    c[8..10].copy_from_slice(&1u16.to_le_bytes());
    c[10..12].copy_from_slice(&mtu.to_le_bytes());
    c
}

/// The tap offloads (TUN_F_*) for the guest's features: what it accepts to receive.
pub fn tap_offloads(driver_features: u64) -> u32 {
    let has = |bit| driver_features & feature(bit) != 0;
    if !has(n::VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut f = TUN_F_CSUM;
    if has(n::VIRTIO_NET_F_GUEST_TSO4) {
        f |= TUN_F_TSO4;
    }
    if has(n::VIRTIO_NET_F_GUEST_TSO6) {
        f |= TUN_F_TSO6;
    }
    f
}

#[derive(Debug, Default)]
pub struct NetStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames dropped: bigger than the one chain they had (without MRG_RXBUF).
    pub rx_drops: AtomicU64,
    /// Times a frame waited in the device for the driver's buffers.
    pub rx_holds: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Chains not sent: a rule broken, or the tap refused the frame.
    pub tx_errors: AtomicU64,
    /// Chains that could not be walked (the device then needs a reset).
    pub broken: AtomicU64,
}

impl NetStats {
    pub fn line(&self) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "rx {} packets {} B ({} dropped, {} held for buffers), tx {} packets {} B ({} errors), {} broken chains",
            l(&self.rx_packets),
            l(&self.rx_bytes),
            l(&self.rx_drops),
            l(&self.rx_holds),
            l(&self.tx_packets),
            l(&self.tx_bytes),
            l(&self.tx_errors),
            l(&self.broken)
        )
    }
}

/// The tap `name`'s own count of frames it dropped (`tx_dropped` in sysfs): the frames
/// for the guest that found the tap's queue full while the device waited for receive
/// buffers (the device reads the tap only when it has one). `None` if unreadable.
pub fn tap_drops(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/tx_dropped")).ok()?.trim().parse().ok()
}

/// Where frames go and come from: the tap, or a test's queues.
pub trait Backend: Send {
    /// One frame with its vnet header; `WouldBlock` when there is none.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// One frame with its vnet header.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
}

impl Backend for Arc<NetSpec> {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tap.file().read(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let n = self.tap.file().write(frame)?;
        if n == frame.len() {
            Ok(())
        } else {
            Err(io::Error::other("short write"))
        }
    }
}

/// What a receive pass ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxWait {
    /// The tap has nothing more: wait for it.
    Tap,
    /// The queue has no (or too few) buffers: wait for the driver's notification.
    Buffers,
}

pub struct Net<B: Backend> {
    pub backend: B,
    pub stats: Arc<NetStats>,
    /// The frame read from the backend and not yet delivered (its length), in `rx`.
    pending: Option<usize>,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

/// Copies `data` into the writable buffers `bufs`, in order.
fn scatter<M: GuestMemory>(mem: &M, bufs: &[Buf], mut data: &[u8]) -> bool {
    for b in bufs {
        if data.is_empty() {
            break;
        }
        let k = (b.len as usize).min(data.len());
        if mem.write_slice(&data[..k], GuestAddress(b.addr)).is_err() {
            return false;
        }
        data = &data[k..];
    }
    data.is_empty()
}

/// Puts `entries` (head, length) in the used ring and publishes them with one store of the
/// used index (so a driver never sees a frame's first buffer before its others). Several
/// entries bypass the queue's count of what it added: the caller must interrupt.
fn add_used_all<M: GuestMemory>(q: &mut Queue, mem: &M, entries: &[(u16, u32)]) -> Result<(), ()> {
    if let [(head, len)] = entries {
        return q.add_used(mem, *head, *len).map_err(drop);
    }
    let start = q.next_used();
    let size = q.size();
    for (i, &(head, len)) in entries.iter().enumerate() {
        if head >= size {
            return Err(());
        }
        let slot = u64::from(start.wrapping_add(i as u16) % size);
        let at = q.used_ring().checked_add(4 + 8 * slot).ok_or(())?;
        mem.write_obj(u32::from(head), GuestAddress(at)).map_err(drop)?;
        mem.write_obj(len, GuestAddress(at + 4)).map_err(drop)?;
    }
    let end = start.wrapping_add(entries.len() as u16);
    // A release store: the entries above are visible before the index that covers them.
    mem.store(end.to_le(), GuestAddress(q.used_ring() + 2), Ordering::Release).map_err(drop)?;
    q.set_next_used(end);
    Ok(())
}

impl<B: Backend> Net<B> {
    pub fn new(backend: B, stats: Arc<NetStats>) -> Self {
        Self { backend, stats, pending: None, rx: vec![0; HDR_LEN + MAX_FRAME], tx: Vec::with_capacity(HDR_LEN + MAX_FRAME) }
    }

    /// Sends every chain of the transmit queue.
    pub fn transmit<M: GuestMemory>(&mut self, slot: &mut QueueSlot, mem: &M) -> Processed {
        let mut out = Processed::default();
        let q = &mut slot.queue;
        loop {
            if q.disable_notification(mem).is_err() {
                out.needs_reset = true;
                return out;
            }
            loop {
                let chain = match q.iter(mem) {
                    Ok(mut chains) => chains.next(),
                    Err(_) => {
                        out.needs_reset = true;
                        return out;
                    }
                };
                let Some(chain) = chain else { break };
                let Ok((head, bufs)) = walk(chain) else {
                    self.stats.broken.fetch_add(1, Ordering::Relaxed);
                    out.needs_reset = true;
                    return out;
                };
                let total: u64 = bufs.iter().map(|b| u64::from(b.len)).sum();
                let ok = bufs.iter().all(|b| !b.writable) && total >= HDR_LEN as u64 + 14 && total <= (HDR_LEN + MAX_FRAME) as u64;
                let sent = ok && {
                    self.tx.clear();
                    bufs.iter().all(|b| {
                        let at = self.tx.len();
                        self.tx.resize(at + b.len as usize, 0);
                        mem.read_slice(&mut self.tx[at..], GuestAddress(b.addr)).is_ok()
                    }) && self.backend.send(&self.tx).is_ok()
                };
                if sent {
                    self.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
                    self.stats.tx_bytes.fetch_add(total - HDR_LEN as u64, Ordering::Relaxed);
                } else {
                    self.stats.tx_errors.fetch_add(1, Ordering::Relaxed);
                }
                if q.add_used(mem, head, 0).is_err() {
                    out.needs_reset = true;
                    return out;
                }
                out.completed += 1;
            }
            match q.needs_notification(mem) {
                Ok(n) => out.notify |= n,
                Err(_) => out.needs_reset = true,
            }
            match q.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return out,
                Err(_) => {
                    out.needs_reset = true;
                    return out;
                }
            }
        }
    }

    /// Delivers frames from the backend while the receive queue has buffers. `mergeable`:
    /// the driver took MRG_RXBUF.
    pub fn receive<M: GuestMemory>(&mut self, slot: &mut QueueSlot, mem: &M, mergeable: bool) -> (Processed, RxWait) {
        let mut out = Processed::default();
        let q = &mut slot.queue;
        if q.disable_notification(mem).is_err() {
            out.needs_reset = true;
            return (out, RxWait::Buffers);
        }
        let wait = loop {
            // A buffer first: without one, the frame stays in the tap.
            match q.iter(mem) {
                Ok(mut chains) => {
                    if chains.next().is_none() {
                        match q.enable_notification(mem) {
                            Ok(true) => {
                                let _ = q.disable_notification(mem);
                                continue;
                            }
                            Ok(false) => break RxWait::Buffers,
                            Err(_) => {
                                out.needs_reset = true;
                                break RxWait::Buffers;
                            }
                        }
                    }
                    q.set_next_avail(q.next_avail().wrapping_sub(1));
                }
                Err(_) => {
                    out.needs_reset = true;
                    break RxWait::Buffers;
                }
            }
            let len = match self.pending {
                Some(len) => len,
                None => match self.backend.recv(&mut self.rx) {
                    Ok(len) if len >= HDR_LEN => len,
                    Ok(_) => continue, // nothing a guest could take
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break RxWait::Tap,
                },
            };
            self.pending = Some(len);
            // The chains this frame goes into.
            let mut taken: Vec<(u16, Vec<Buf>, usize)> = Vec::new();
            let mut room = 0usize;
            let mut broken = false;
            while room < len && (mergeable || taken.is_empty()) {
                let chain = match q.iter(mem) {
                    Ok(mut chains) => chains.next(),
                    Err(_) => {
                        broken = true;
                        break;
                    }
                };
                let Some(chain) = chain else { break };
                match walk(chain) {
                    Ok((head, bufs)) if bufs.iter().all(|b| b.writable) => {
                        let cap = bufs.iter().map(|b| b.len as usize).sum::<usize>();
                        room += cap;
                        taken.push((head, bufs, cap));
                    }
                    _ => {
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                self.stats.broken.fetch_add(1, Ordering::Relaxed);
                out.needs_reset = true;
                break RxWait::Buffers;
            }
            if room < len && mergeable {
                // Not enough buffers yet: the frame waits. Notifications go on while the
                // ring is still past the chains taken, so that (with EVENT_IDX) the
                // driver's next buffer, not one already seen, is what notifies us.
                match q.enable_notification(mem) {
                    Ok(more) => {
                        q.set_next_avail(q.next_avail().wrapping_sub(taken.len() as u16));
                        if more {
                            let _ = q.disable_notification(mem);
                            continue;
                        }
                        self.stats.rx_holds.fetch_add(1, Ordering::Relaxed);
                        break RxWait::Buffers;
                    }
                    Err(_) => {
                        out.needs_reset = true;
                        break RxWait::Buffers;
                    }
                }
            }
            self.pending = None;
            if room < len {
                // One chain, too small for the frame: dropped, the chain goes back.
                q.set_next_avail(q.next_avail().wrapping_sub(taken.len() as u16));
                self.stats.rx_drops.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // num_buffers, then the frame across the chains.
            let count = taken.len() as u16;
            self.rx[10..12].copy_from_slice(&count.to_le_bytes());
            let mut data = &self.rx[..len];
            let mut used = Vec::with_capacity(taken.len());
            let mut ok = true;
            for (head, bufs, cap) in &taken {
                let k = (*cap).min(data.len());
                ok &= scatter(mem, bufs, &data[..k]);
                used.push((*head, k as u32));
                data = &data[k..];
            }
            if !ok || add_used_all(q, mem, &used).is_err() {
                out.needs_reset = true;
                break RxWait::Buffers;
            }
            self.stats.rx_packets.fetch_add(1, Ordering::Relaxed);
            self.stats.rx_bytes.fetch_add((len - HDR_LEN) as u64, Ordering::Relaxed);
            out.completed += 1;
            if used.len() > 1 {
                // The batch moved the used index by more than the queue counted: its
                // event-index check would be too narrow, so always interrupt.
                out.notify = true;
            }
        };
        if out.completed > 0 {
            match q.needs_notification(mem) {
                Ok(n) => out.notify |= n,
                Err(_) => out.needs_reset = true,
            }
        }
        (out, wait)
    }
}

/// Runs the device for `spec` on a thread of its own: it waits on the two queues'
/// EventFds and (while the receive queue has buffers) on the tap.
pub fn spawn_worker(
    name: String,
    mut net: Net<Arc<NetSpec>>,
    queues: Vec<(SharedQueue, EventFd)>,
    features: Arc<AtomicU64>,
    mem: Arc<crate::sys::VmMemory>,
    signal: Arc<dyn Signal>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let spec = net.backend.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        let (rxq, rx_kick) = &queues[RX];
        let (txq, tx_kick) = &queues[TX];
        let mut offloads = 0u32;
        let mut wait = RxWait::Buffers;
        loop {
            let want_tap = wait == RxWait::Tap;
            let (rx_ready, tx_ready, tap_ready) = {
                let rx_fd = crate::sys::eventfd_fd(rx_kick);
                let tx_fd = crate::sys::eventfd_fd(tx_kick);
                let mut fds = vec![PollFd::new(rx_fd, PollFlags::POLLIN), PollFd::new(tx_fd, PollFlags::POLLIN)];
                if want_tap {
                    fds.push(PollFd::new(spec.tap.as_fd(), PollFlags::POLLIN));
                }
                if nix::poll::poll(&mut fds, PollTimeout::NONE).is_err() {
                    continue;
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]), want_tap && ready(&fds[2]))
            };
            if rx_ready {
                let _ = rx_kick.read();
            }
            if tx_ready {
                let _ = tx_kick.read();
            }
            let driver = features.load(Ordering::Relaxed);
            let want = tap_offloads(driver);
            if want != offloads && spec.tap.set_offload(want).is_ok() {
                offloads = want;
            }
            if tx_ready {
                let done = {
                    let mut slot = lock(txq);
                    if !slot.live {
                        Processed::default()
                    } else {
                        let done = net.transmit(&mut slot, mem.get());
                        if done.needs_reset {
                            slot.live = false;
                        }
                        done
                    }
                };
                if done.notify {
                    signal.used(TX);
                }
                if done.needs_reset {
                    signal.needs_reset();
                }
            }
            if rx_ready || tap_ready {
                let mergeable = driver & feature(n::VIRTIO_NET_F_MRG_RXBUF) != 0;
                let (done, w) = {
                    let mut slot = lock(rxq);
                    if !slot.live {
                        (Processed::default(), RxWait::Buffers)
                    } else {
                        let r = net.receive(&mut slot, mem.get(), mergeable);
                        if r.0.needs_reset {
                            slot.live = false;
                        }
                        r
                    }
                };
                wait = w;
                if done.notify {
                    signal.used(RX);
                }
                if done.needs_reset {
                    signal.needs_reset();
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{Desc, Ring, F_NEXT, F_WRITE, MEM};
    use std::collections::VecDeque;

    /// Frames to receive, frames sent, and whether sends fail.
    #[derive(Default)]
    struct Fake {
        inbox: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        refuse: bool,
    }

    impl Backend for Fake {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let f = self.inbox.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
            buf[..f.len()].copy_from_slice(&f);
            Ok(f.len())
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<()> {
            if self.refuse {
                return Err(io::Error::from_raw_os_error(22));
            }
            self.sent.push(frame.to_vec());
            Ok(())
        }
    }

    fn net() -> Net<Fake> {
        Net::new(Fake::default(), Default::default())
    }

    /// A frame with a vnet header (flags 0) and `len` bytes of pattern.
    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f = vec![0u8; HDR_LEN];
        f.extend((0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed));
        f
    }

    #[test]
    fn tap_drops_reads_the_interface_counter() {
        // Every Linux has lo; no interface has a name with a slash.
        if std::path::Path::new("/sys/class/net/lo/statistics/tx_dropped").exists() {
            assert!(tap_drops("lo").is_some());
        }
        assert_eq!(tap_drops("no/such"), None);
    }

    #[test]
    fn options_are_parsed_and_checked() {
        let c = NetConfig::parse("tap=yk0,ip=169.254.77.1,mask=255.255.0.0,mac=52:54:00:aa:bb:cc,mtu=9000").unwrap();
        assert_eq!(c.tap.name, "yk0");
        assert_eq!(c.tap.ip, Some((Ipv4Addr::new(169, 254, 77, 1), Ipv4Addr::new(255, 255, 0, 0))));
        assert_eq!((c.mac, c.mtu, c.tap.mtu), ([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc], 9000, Some(9000)));
        let d = NetConfig::parse("tap=yk1,ip=10.0.0.1").unwrap();
        assert_eq!(d.tap.ip.unwrap().1, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!((d.mac, d.mtu, d.tap.mtu, d.vhost), (default_mac("yk1"), DEFAULT_MTU, None, false));
        assert!(NetConfig::parse("tap=yk1,vhost=on").unwrap().vhost);
        assert!(!NetConfig::parse("tap=yk1,vhost=off").unwrap().vhost);
        assert_eq!(default_mac("yk1"), default_mac("yk1"));
        assert_ne!(default_mac("yk1"), default_mac("yk2"));
        assert_eq!(default_mac("yk1")[0] & 3, 2, "locally administered unicast");
        for bad in ["", "ip=1.2.3.4", "tap=", "tap=a,foo=1", "tap=a,ip=1.2.3", "tap=a,mask=255.0.0.0", "tap=a,ip=1.2.3.4,mask=255.0.255.0", "tap=a,mac=01:00:00:00:00:01", "tap=a,mac=52:54:00:00:01", "tap=a,mtu=10", "tap=a,mtu=70000", "tap=a,tap=b", "tap", "tap=a,vhost=yes", "tap=a,vhost=on,vhost=on"] {
            let e = NetConfig::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("--net {bad}: ")), "{bad}: {e}");
        }
    }

    #[test]
    fn the_configuration_and_features() {
        let c = config_space([1, 2, 3, 4, 5, 6], 9000);
        assert_eq!(&c[0..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(u16::from_le_bytes([c[6], c[7]]), 1, "link up");
        assert_eq!(u16::from_le_bytes([c[10], c[11]]), 9000);
        let f = features();
        for bit in [32, 29, 28, 5, 3, 16, 15, 0, 1, 7, 8, 11, 12] {
            assert!(f & (1 << bit) != 0, "bit {bit}");
        }
        assert_eq!(tap_offloads(0), 0);
        assert_eq!(tap_offloads(feature(n::VIRTIO_NET_F_GUEST_TSO4)), 0, "TSO without checksums is nothing");
        assert_eq!(tap_offloads(feature(n::VIRTIO_NET_F_GUEST_CSUM) | feature(n::VIRTIO_NET_F_GUEST_TSO4)), TUN_F_CSUM | TUN_F_TSO4);
    }

    #[test]
    fn transmit_sends_header_and_frame_as_the_guest_wrote_them() {
        let mut r = Ring::new(16);
        let mut net = net();
        let f = frame(100, 1);
        // The header in one buffer, the frame split over two.
        r.write(0x10000, &f[..HDR_LEN]);
        r.write(0x11000, &f[HDR_LEN..HDR_LEN + 40]);
        r.write(0x12000, &f[HDR_LEN + 40..]);
        r.post(&[(0x10000, HDR_LEN as u32, 0), (0x11000, 40, 0), (0x12000, 60, 0)]);
        let done = net.transmit(&mut r.slot, &r.mem);
        assert_eq!((done.completed, done.notify, done.needs_reset), (1, true, false));
        assert_eq!(net.backend.sent, vec![f]);
        assert_eq!(r.used(0), (0, 0));
        assert_eq!(net.stats.tx_bytes.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn bad_transmit_chains_are_counted_and_not_sent() {
        let cases: Vec<(&str, Vec<Desc>)> = vec![
            ("shorter than a header and an Ethernet header", vec![(0x10000, 20, 0)]),
            ("a writable buffer", vec![(0x10000, 12, 0), (0x11000, 64, F_WRITE)]),
            ("past 64 KiB", vec![(0x10000, 12, 0), (0x20000, MAX_FRAME as u32 + 1, 0)]),
        ];
        for (what, descs) in cases {
            let mut r = Ring::new(16);
            let mut net = net();
            r.post(&descs);
            let done = net.transmit(&mut r.slot, &r.mem);
            assert_eq!((done.completed, done.needs_reset), (1, false), "{what}");
            assert!(net.backend.sent.is_empty(), "{what}");
            assert_eq!(net.stats.tx_errors.load(Ordering::Relaxed), 1, "{what}");
            assert_eq!(r.used_idx(), 1, "{what}: returned");
        }
        // A frame the tap refuses (a bad header) is counted; the queue goes on.
        let mut r = Ring::new(16);
        let mut net = net();
        net.backend.refuse = true;
        r.post(&[(0x10000, 100, 0)]);
        assert_eq!(net.transmit(&mut r.slot, &r.mem).completed, 1);
        assert_eq!(net.stats.tx_errors.load(Ordering::Relaxed), 1);
        // Buffers outside RAM or a loop: the device needs a reset.
        let mut r = Ring::new(16);
        r.post(&[(MEM as u64 - 10, 100, 0)]);
        assert!(net.transmit(&mut r.slot, &r.mem).needs_reset);
        let mut r = Ring::new(16);
        r.post(&[(0x10000, 50, 0), (0x11000, 50, 0)]);
        r.desc_raw(1, 0x11000, 50, F_NEXT, 0);
        assert!(net.transmit(&mut r.slot, &r.mem).needs_reset);
    }

    #[test]
    fn receive_merges_buffers_and_sets_num_buffers() {
        let mut r = Ring::new(16);
        let mut net = net();
        let f = frame(3000, 9);
        net.backend.inbox.push_back(f.clone());
        net.backend.inbox.push_back(frame(60, 3));
        for i in 0..4 {
            r.post(&[(0x10000 + 0x1000 * i, 1536, F_WRITE)]);
        }
        let (done, wait) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, done.notify, done.needs_reset, wait), (2, true, false, RxWait::Tap));
        // 3012 bytes: 1536 + 1476 in two buffers, num_buffers 2.
        assert_eq!((r.used(0), r.used(1), r.used(2)), ((0, 1536), (1, 1476), (2, 72)));
        assert_eq!(r.used_idx(), 3);
        let mut got = r.bytes(0x10000, 1536);
        got.extend(r.bytes(0x11000, 1476));
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2);
        assert_eq!(&got[..10], &f[..10]);
        assert_eq!(&got[HDR_LEN..], &f[HDR_LEN..]);
        assert_eq!(u16::from_le_bytes([r.bytes(0x12000 + 10, 2)[0], r.bytes(0x12000 + 11, 1)[0]]), 1);
        assert_eq!(net.stats.rx_packets.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_frame_waits_for_buffers_and_the_tap_keeps_the_rest() {
        let mut r = Ring::new(16);
        let mut net = net();
        for i in 0..3 {
            net.backend.inbox.push_back(frame(2000, i));
        }
        // No buffer: nothing is read from the tap.
        let (done, wait) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, wait, net.backend.inbox.len()), (0, RxWait::Buffers, 3));
        // One buffer, too small for the frame: it is read and held, the buffer unused.
        r.fill(0x10000, 1536, 0xee);
        r.post(&[(0x10000, 1536, F_WRITE)]);
        let (done, wait) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, wait, net.backend.inbox.len(), r.used_idx()), (0, RxWait::Buffers, 2, 0));
        assert_eq!(net.stats.rx_holds.load(Ordering::Relaxed), 1);
        assert_eq!(r.bytes(0x10000, 16), [0xee; 16], "nothing written");
        assert_eq!(r.slot.queue.next_avail(), 0, "the buffer went back");
        // A second buffer: the held frame goes, the next waits in the tap.
        r.post(&[(0x11000, 1536, F_WRITE)]);
        let (done, wait) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, r.used_idx()), (1, 2));
        assert_eq!(wait, RxWait::Buffers);
        assert_eq!(net.backend.inbox.len(), 2, "no buffer left: the next frames stay in the tap");
        assert_eq!(net.stats.rx_drops.load(Ordering::Relaxed), 0);
    }

    /// With EVENT_IDX, a held frame asks to be notified of the driver's next buffer, past
    /// the ones it already saw (avail_event = 1 after one buffer), not of one it has seen.
    #[test]
    fn a_held_frame_waits_for_a_new_buffer_with_event_idx() {
        let mut r = Ring::new(16);
        r.slot.queue.set_event_idx(true);
        let mut net = net();
        net.backend.inbox.push_back(frame(2000, 1));
        r.post(&[(0x10000, 1536, F_WRITE)]);
        let (done, wait) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, wait), (0, RxWait::Buffers));
        let avail_event: u16 = r.mem.read_obj(GuestAddress(crate::virtio::testing::USED + 4 + 8 * 16)).unwrap();
        assert_eq!(avail_event, 1);
        r.post(&[(0x11000, 1536, F_WRITE)]);
        let (done, _) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, r.used_idx()), (1, 2));
    }

    #[test]
    fn without_mrg_rxbuf_a_frame_too_big_for_its_chain_is_dropped() {
        let mut r = Ring::new(16);
        let mut net = net();
        net.backend.inbox.push_back(frame(2000, 1));
        net.backend.inbox.push_back(frame(500, 2));
        r.fill(0x10000, 0x1000, 0xee);
        r.post(&[(0x10000, 1000, F_WRITE)]);
        let (done, _) = net.receive(&mut r.slot, &r.mem, false);
        assert_eq!(done.completed, 1);
        assert_eq!(net.stats.rx_drops.load(Ordering::Relaxed), 1);
        assert_eq!(r.used(0), (0, 512));
        assert_eq!(r.bytes(0x10000 + 512, 16), [0xee; 16], "nothing past the frame");
        assert_eq!(r.bytes(0x10000 + HDR_LEN as u64, 500), frame(500, 2)[HDR_LEN..]);
    }

    #[test]
    fn receive_chains_that_cannot_be_used_need_a_reset() {
        for (what, descs) in [("readable", vec![(0x10000u64, 2000u32, 0u16)]), ("past RAM", vec![(MEM as u64 - 100, 2000, F_WRITE)])] {
            let mut r = Ring::new(16);
            let mut net = net();
            net.backend.inbox.push_back(frame(100, 1));
            r.post(&descs);
            let (done, _) = net.receive(&mut r.slot, &r.mem, true);
            assert!(done.needs_reset, "{what}");
            assert_eq!(r.used_idx(), 0, "{what}");
        }
    }

    #[test]
    fn a_frame_is_published_at_once() {
        // 5 buffers of 100 bytes for a 450-byte frame: one index store covers all.
        let mut r = Ring::new(8);
        let mut net = net();
        net.backend.inbox.push_back(frame(438, 5));
        for i in 0..5 {
            r.post(&[(0x10000 + 0x100 * i, 100, F_WRITE)]);
        }
        let (done, _) = net.receive(&mut r.slot, &r.mem, true);
        assert_eq!((done.completed, done.notify), (1, true));
        assert_eq!(r.used_idx(), 5);
        assert_eq!((0..5).map(|i| r.used(i).1).collect::<Vec<_>>(), [100, 100, 100, 100, 50]);
        assert_eq!(r.slot.queue.next_used(), 5);
    }
}
