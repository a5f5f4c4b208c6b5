//! The virtio PCI transport, modern interface only (virtio 1.2, 4.1): a PCI function
//! (vendor 0x1af4, device 0x1040 + the device type, revision 1) whose registers are all in
//! memory BAR 0, found through vendor-specific capabilities (ID 0x09):
//!
//! | BAR 0 offset | structure | capability |
//! |---|---|---|
//! | 0x0000 | common configuration (0x38 bytes: features, status, queue setup) | COMMON_CFG |
//! | 0x1000 | ISR status (a byte, cleared by reading) | ISR_CFG |
//! | 0x2000 | the device's configuration structure | DEVICE_CFG |
//! | 0x3000 | queue notifications: queue q at 0x3000 + 4 q (notify_off_multiplier 4) | NOTIFY_CFG |
//! | 0x4000 | MSI-X table (a vector for the configuration, one per queue) | MSI-X |
//! | 0x5000 | MSI-X PBA | MSI-X |
//!
//! The function ([`VirtioPci`], on the PCI root) keeps the configuration space; the BAR's
//! registers ([`Transport`]) are a bus device of their own, shared with the device's
//! worker, which signals through it ([`Signal`]: the queue's MSI-X vector, or
//! DEVICE_NEEDS_RESET and the configuration vector). Lock order: the PCI root, the
//! transport, a queue, the interrupt controllers; the worker takes a queue, lets it go,
//! then the transport.
//!
//! Feature negotiation (3.1.1): FEATURES_OK sticks only if the driver took a subset of
//! what the device offers, VERSION_1 among them. DRIVER_OK makes the enabled queues live
//! (their rings checked to be inside RAM; else DEVICE_NEEDS_RESET) and kicks the worker.
//! Writing 0 to the status resets the device: the queues (after the worker lets go of
//! them), features, vectors and ISR.
//!
//! A queue notification is a write to the notify region. With an ioeventfd (the default:
//! the transport is given the VM, `hypervisor::Vm`), each live queue's notify address
//! ([`Transport::notify_address`]) is registered with the queue's EventFd while the
//! device is DRIVER_OK and BAR 0 decodes: the hypervisor signals the worker and the vCPU
//! runs on without an exit. The registrations follow the device: made at DRIVER_OK (or
//! when BAR 0 is placed while the device is running), removed by a reset and when BAR 0
//! moves or stops decoding (then made again at the new address). Without one
//! (`--no-ioeventfd`, or a registration the hypervisor refused), the write is an MMIO
//! exit that reaches [`Transport`], which writes the same EventFd. INTx is not offered
//! (interrupt pin 0): the driver must use MSI-X.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};

use super::apic::msi_of;
use super::board::MsiSender;
use super::irqfd_route::IrqfdRoutes;
use super::pci::PciFunction;
use super::pci_config::{BarKind, ConfigError, ConfigSpace, Identity};
use super::pci_msi::Raised;
use super::pci_msix::{Access, MsiX, MsixError, Place};
use crate::bus::{le, lock, BusDevice, Ctx, Effect, SharedDevice};
use crate::hypervisor::{Datamatch, IoEventAddress, VmHandle};
use crate::sys::VmMemory;
use yakvm_abi as abi;
use crate::virtio::{status, EventFd, Offload, OffloadQueue, QueueSlot, SharedQueue, Signal, F_EVENT_IDX, F_VERSION_1};

/// Red Hat's vendor ID for virtio (virtio 1.2, 4.1.2).
pub const VENDOR: u16 = 0x1af4;
/// Modern devices: 0x1040 + the device type.
pub const DEVICE_BASE: u16 = 0x1040;
/// A subsystem ID of 0x40 or more (non-transitional devices SHOULD).
pub const SUBSYSTEM: u16 = 0x1100;

const BAR: usize = 0;
const BAR_SIZE: u64 = 0x8000;
const COMMON: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR: u64 = 0x1000;
const DEVICE: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE: u32 = 0x4000;
const MSIX_PBA: u32 = 0x5000;
const REGION: u64 = 0x1000;

/// The vendor-specific capability and its configuration types (virtio 1.2, 4.1.4).
const CAP_VENDOR: u8 = 0x09;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;

/// "No MSI-X vector" (4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;
/// ISR bits: a queue interrupt, a configuration change.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

// The common configuration's registers (4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// What a device needs to be put on PCI.
pub struct DeviceInfo {
    /// The device type (virtio 1.2, 5): 2 for a block device.
    pub device_type: u16,
    /// Base class, subclass, programming interface.
    pub class: (u8, u8, u8),
    pub features: u64,
    /// The device's configuration structure (read-only here).
    pub config: Vec<u8>,
    /// Each queue's largest size.
    pub queue_sizes: Vec<u16>,
}

/// What the transport counted.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub notifies: AtomicU64,
    /// Notifications before DRIVER_OK or for a queue that is not there.
    pub notifies_dropped: AtomicU64,
    /// Accesses to no register, or at a width the register does not have.
    pub ignored: AtomicU64,
    pub interrupts: AtomicU64,
    pub resets: AtomicU64,
    /// Interrupts sent through an irqfd (of `interrupts`), and irqfd bindings made.
    pub irqfd_signals: AtomicU64,
    pub irqfd_bindings: AtomicU64,
    /// Ioeventfds registered for queue notifications (each BAR placement and DRIVER_OK).
    pub ioevents_registered: AtomicU64,
    /// Registrations the hypervisor refused (the notification stays an MMIO exit).
    pub ioevents_failed: AtomicU64,
    /// An offloaded device (vhost-net): times a queue's call eventfd was pointed at its
    /// vector's irqfd, and at the transport's relay.
    pub calls_to_irqfd: AtomicU64,
    pub calls_to_relay: AtomicU64,
}

struct QueueRegs {
    shared: SharedQueue,
    vector: u16,
    kick: EventFd,
    /// Where `kick` is registered as an ioeventfd now.
    ioevent: Option<u64>,
    /// An offloaded device's: the eventfd the relay thread turns into this queue's
    /// interrupt, and where the offload's call for this queue points now.
    relay: Option<EventFd>,
    call: Option<CallRoute>,
}

/// Where an offloaded queue's interrupts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallRoute {
    Relay,
    /// The vector's irqfd, bound to this message.
    Irqfd(abi::Msi),
}

/// BAR 0's registers, and what the worker signals through.
pub struct Transport {
    info: DeviceInfo,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_vector: u16,
    queue_select: u16,
    isr: u8,
    queues: Vec<QueueRegs>,
    msix: MsiX,
    msi: MsiSender,
    mem: Arc<VmMemory>,
    needs_reset: Arc<AtomicBool>,
    /// The driver's features for the worker (set at DRIVER_OK, cleared by a reset).
    negotiated: Arc<AtomicU64>,
    /// The VM, to register the queues' notify addresses as ioeventfds (`None`: every
    /// notification is an MMIO exit).
    ioevents: Option<VmHandle>,
    /// Where BAR 0 decodes (the PCI root says: [`PciFunction::bar_placed`]).
    bar_base: Option<u64>,
    /// The vectors' irqfds, when the VM's local APICs are the hypervisor's (`None`: every
    /// interrupt goes through `msi`).
    irqfds: Option<IrqfdRoutes>,
    /// Who serves the queues when it is not the emulator's worker (vhost-net), and
    /// whether it has them now (DRIVER_OK to the reset).
    offload: Option<Box<dyn Offload>>,
    offloaded: bool,
    pub stats: Arc<TransportStats>,
}

/// The PCI function: the configuration space, and the transport behind BAR 0.
pub struct VirtioPci {
    space: ConfigSpace,
    transport: Arc<Mutex<Transport>>,
}

/// Why the function cannot be built (our code is wrong, not the guest).
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Msix(#[from] MsixError),
    #[error("virtio queue: {0}")]
    Queue(String),
    #[error("virtio queue notification: {0}")]
    EventFd(io::Error),
}

/// What the device's worker gets: each queue and the EventFd that kicks it, and the
/// signal back.
pub struct WorkerEnds {
    pub queues: Vec<(SharedQueue, EventFd)>,
    pub signal: Arc<dyn Signal>,
    /// The features the driver took, from DRIVER_OK to the next reset (0 otherwise).
    pub features: Arc<AtomicU64>,
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    // After the ID and next pointer: cap_len, cfg_type, bar, id, padding[2], offset, length.
    let mut body = vec![(2 + 14 + extra.len()) as u8, cfg_type, BAR as u8, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

impl VirtioPci {
    /// The function for `info`, its interrupts sent through `msi` (or through irqfds on
    /// `irqfds`' VM if given), its queues in `mem`, its queue notifications registered as
    /// ioeventfds on `ioevents` if given.
    pub fn new(info: DeviceInfo, msi: MsiSender, mem: Arc<VmMemory>, ioevents: Option<VmHandle>, irqfds: Option<VmHandle>) -> Result<(Self, WorkerEnds), VirtioPciError> {
        let id = Identity {
            vendor: VENDOR,
            device: DEVICE_BASE + info.device_type,
            revision: 1,
            class: info.class,
            subsystem_vendor: VENDOR,
            subsystem: SUBSYSTEM,
            interrupt_pin: 0,
        };
        let mut space = ConfigSpace::new(id);
        space.add_bar(BAR, BarKind::Memory32 { prefetchable: false }, BAR_SIZE)?;
        let n = info.queue_sizes.len() as u64;
        let mut caps = vec![vendor_cap(CAP_COMMON, COMMON, COMMON_LEN, &[]), vendor_cap(CAP_ISR, ISR, 1, &[])];
        // A device without a configuration structure (entropy) has no DEVICE_CFG: Linux
        // refuses a capability of length 0.
        if !info.config.is_empty() {
            caps.push(vendor_cap(CAP_DEVICE, DEVICE, info.config.len() as u64, &[]));
        }
        caps.push(vendor_cap(CAP_NOTIFY, NOTIFY, n * u64::from(NOTIFY_MULTIPLIER), &NOTIFY_MULTIPLIER.to_le_bytes()));
        for body in caps {
            let writable = vec![0; body.len()];
            space.add_capability(CAP_VENDOR, &body, &writable)?;
        }
        let vectors = 1 + info.queue_sizes.len() as u16;
        let msix = MsiX::add(&mut space, vectors, Place { bar: BAR, offset: MSIX_TABLE }, Place { bar: BAR, offset: MSIX_PBA })?;
        let mut queues = Vec::new();
        let mut ends = Vec::new();
        for &size in &info.queue_sizes {
            let queue = Queue::new(size).map_err(|e| VirtioPciError::Queue(e.to_string()))?;
            let shared = Arc::new(Mutex::new(QueueSlot { queue, live: false }));
            let kick = EventFd::new(0).map_err(VirtioPciError::EventFd)?;
            ends.push((shared.clone(), kick.try_clone().map_err(VirtioPciError::EventFd)?));
            queues.push(QueueRegs { shared, vector: NO_VECTOR, kick, ioevent: None, relay: None, call: None });
        }
        let transport = Transport {
            info,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_vector: NO_VECTOR,
            queue_select: 0,
            isr: 0,
            queues,
            msix,
            msi,
            mem,
            needs_reset: Arc::new(AtomicBool::new(false)),
            negotiated: Arc::new(AtomicU64::new(0)),
            ioevents,
            bar_base: None,
            irqfds: irqfds.map(|vm| IrqfdRoutes::new(vm, usize::from(vectors))),
            offload: None,
            offloaded: false,
            stats: Default::default(),
        };
        let transport = Arc::new(Mutex::new(transport));
        let features = lock(&transport).negotiated.clone();
        let signal = Arc::new(TransportSignal(transport.clone()));
        Ok((Self { space, transport }, WorkerEnds { queues: ends, signal, features }))
    }

    pub fn stats(&self) -> Arc<TransportStats> {
        lock(&self.transport).stats.clone()
    }

    /// Hands the queues to `offload` from each DRIVER_OK to the next reset (instead of a
    /// worker taking them). Returns each queue's relay eventfd: a thread of the caller's
    /// waits on them and calls the worker's [`Signal::used`] for the queue.
    pub fn set_offload(&self, offload: Box<dyn Offload>) -> io::Result<Vec<EventFd>> {
        let mut t = lock(&self.transport);
        let mut relays = Vec::new();
        for q in &mut t.queues {
            let relay = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?;
            relays.push(relay.try_clone()?);
            q.relay = Some(relay);
        }
        t.offload = Some(offload);
        Ok(relays)
    }
}

impl PciFunction for VirtioPci {
    fn config(&self) -> &ConfigSpace {
        &self.space
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.space
    }
    fn bar_device(&self, index: usize) -> Option<SharedDevice> {
        (index == BAR).then(|| self.transport.clone() as SharedDevice)
    }
    fn config_written(&mut self, _offset: usize, _len: usize) {
        let mut t = lock(&self.transport);
        for raised in t.msix.config_written(&self.space) {
            t.send(None, raised);
        }
        t.route_calls();
    }
    fn bar_placed(&mut self, index: usize, address: Option<u64>) {
        if index == BAR {
            let mut t = lock(&self.transport);
            t.bar_base = address;
            t.sync_ioevents();
        }
    }
}

/// The worker's way back in.
struct TransportSignal(Arc<Mutex<Transport>>);

impl Signal for TransportSignal {
    fn used(&self, queue: usize) {
        let mut t = lock(&self.0);
        t.isr |= ISR_QUEUE;
        if let Some(vector) = t.queues.get(queue).map(|q| q.vector) {
            t.raise(vector);
        }
    }
    fn needs_reset(&self) {
        let mut t = lock(&self.0);
        t.needs_reset.store(true, Ordering::Relaxed);
        t.isr |= ISR_CONFIG;
        let vector = t.config_vector;
        t.raise(vector);
    }
}

impl Transport {
    fn raise(&mut self, vector: u16) {
        if vector == NO_VECTOR {
            return;
        }
        let raised = self.msix.raise(vector);
        self.send(Some(vector), raised);
    }

    /// Sends what MSI-X let through: by `vector`'s irqfd when there is one, else through
    /// the emulator's interrupt controllers.
    fn send(&mut self, vector: Option<u16>, raised: Raised) {
        let Raised::Send(message) = raised else { return };
        self.stats.interrupts.fetch_add(1, Ordering::Relaxed);
        if let (Some(irqfds), Some(vector)) = (self.irqfds.as_mut(), vector) {
            let (address, data) = msi_of(&message);
            let bound = irqfds.bound;
            let sent = irqfds.signal(usize::from(vector), abi::Msi { address, data, _pad: 0 });
            self.stats.irqfd_bindings.fetch_add(irqfds.bound - bound, Ordering::Relaxed);
            if sent {
                self.stats.irqfd_signals.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.msi.send(message);
    }

    /// The guest address of queue `q`'s notification register with BAR 0 at `bar_base`
    /// (where an ioeventfd for the queue's EventFd goes).
    pub fn notify_address(bar_base: u64, q: u16) -> u64 {
        bar_base + NOTIFY + u64::from(q) * u64::from(NOTIFY_MULTIPLIER)
    }

    /// Makes the ioeventfd registrations match the device: each live queue's notify
    /// address while DRIVER_OK is set and BAR 0 decodes, nothing otherwise. A refused
    /// registration is counted and noted; that queue's notifications stay MMIO exits.
    fn sync_ioevents(&mut self) {
        let Some(vm) = self.ioevents.clone() else { return };
        let running = self.status & status::DRIVER_OK != 0;
        let base = self.bar_base;
        let stats = self.stats.clone();
        for (q, regs) in self.queues.iter_mut().enumerate() {
            let live = running && lock(&regs.shared).live;
            let want = base.filter(|_| live).map(|b| Self::notify_address(b, q as u16));
            if regs.ioevent == want {
                continue;
            }
            if let Some(old) = regs.ioevent.take() {
                if let Err(e) = vm.unregister_ioevent(IoEventAddress::Mmio(old), Datamatch::Any, &regs.kick) {
                    eprintln!("yakvm: virtio queue {q}: removing the ioeventfd at {old:#x}: {e}");
                }
            }
            if let Some(new) = want {
                match vm.register_ioevent(IoEventAddress::Mmio(new), Datamatch::Any, &regs.kick) {
                    Ok(()) => {
                        stats.ioevents_registered.fetch_add(1, Ordering::Relaxed);
                        regs.ioevent = Some(new);
                    }
                    Err(e) => {
                        if stats.ioevents_failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("yakvm: virtio queue {q}: an ioeventfd at {new:#x}: {e} (its notifications stay MMIO exits)");
                        }
                    }
                }
            }
        }
    }

    /// DRIVER_OK of an offloaded device: the live queues go to the offload, their
    /// interrupts first to the relays, then (`route_calls`) to irqfds where they can. A
    /// refusal: one message, and the device needs a reset.
    fn start_offload(&mut self) {
        let Some(offload) = self.offload.as_mut() else { return };
        let slots: Vec<_> = self.queues.iter().map(|q| lock(&q.shared)).collect();
        let queues: Vec<OffloadQueue<'_>> = self
            .queues
            .iter()
            .zip(&slots)
            .enumerate()
            .filter(|(_, (_, slot))| slot.live)
            .filter_map(|(index, (regs, slot))| {
                Some(OffloadQueue {
                    index,
                    size: slot.queue.size(),
                    desc: slot.queue.desc_table(),
                    avail: slot.queue.avail_ring(),
                    used: slot.queue.used_ring(),
                    kick: &regs.kick,
                    call: regs.relay.as_ref()?,
                })
            })
            .collect();
        let r = offload.start(self.driver_features, &queues);
        drop(queues);
        drop(slots);
        match r {
            Ok(()) => {
                self.offloaded = true;
                for q in &mut self.queues {
                    q.call = Some(CallRoute::Relay);
                }
                self.route_calls();
            }
            Err(e) => {
                eprintln!("yakvm: virtio device {:#x}: handing its queues over: {e} (the device needs a reset)", self.info.device_type);
                self.needs_reset.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Points each offloaded queue's interrupts at its vector's irqfd when the VM has
    /// irqfds and the vector can send now (MSI-X on, nothing masked), else at the relay
    /// (which goes through MSI-X: masks, pending bits). Called when any of that changes.
    fn route_calls(&mut self) {
        if !self.offloaded {
            return;
        }
        let Some(offload) = self.offload.as_mut() else { return };
        let bound = self.irqfds.as_ref().map_or(0, |i| i.bound);
        for (q, regs) in self.queues.iter_mut().enumerate() {
            let message = match (regs.vector != NO_VECTOR).then(|| self.msix.deliverable(regs.vector)).flatten() {
                Some(Raised::Send(m)) => Some(m),
                _ => None,
            };
            let mut route = CallRoute::Relay;
            let mut fd = regs.relay.as_ref();
            if let (Some(irqfds), Some(m)) = (self.irqfds.as_mut(), message) {
                let (address, data) = msi_of(&m);
                let msi = abi::Msi { address, data, _pad: 0 };
                if let Some(f) = irqfds.bound_fd(usize::from(regs.vector), msi) {
                    route = CallRoute::Irqfd(msi);
                    fd = Some(f);
                }
            }
            let Some(fd) = fd else { continue };
            if regs.call == Some(route) {
                continue;
            }
            match offload.set_call(q, fd) {
                Ok(()) => {
                    regs.call = Some(route);
                    let counter = if route == CallRoute::Relay { &self.stats.calls_to_relay } else { &self.stats.calls_to_irqfd };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => eprintln!("yakvm: virtio queue {q}: pointing its interrupts elsewhere: {e}"),
            }
        }
        let now = self.irqfds.as_ref().map_or(0, |i| i.bound);
        self.stats.irqfd_bindings.fetch_add(now - bound, Ordering::Relaxed);
    }

    fn status(&self) -> u8 {
        self.status | if self.needs_reset.load(Ordering::Relaxed) { status::NEEDS_RESET } else { 0 }
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// The common configuration as bytes (reads of any width take their slice).
    fn common(&self) -> [u8; COMMON_LEN as usize] {
        let mut c = [0u8; COMMON_LEN as usize];
        let mut put = |at: u64, bytes: &[u8]| c[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        let features = match self.device_feature_select {
            0 => self.info.features as u32,
            1 => (self.info.features >> 32) as u32,
            _ => 0,
        };
        put(DEVICE_FEATURE_SELECT, &self.device_feature_select.to_le_bytes());
        put(DEVICE_FEATURE, &features.to_le_bytes());
        put(DRIVER_FEATURE_SELECT, &self.driver_feature_select.to_le_bytes());
        let driver = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put(DRIVER_FEATURE, &driver.to_le_bytes());
        put(CONFIG_MSIX_VECTOR, &self.config_vector.to_le_bytes());
        put(NUM_QUEUES, &(self.queues.len() as u16).to_le_bytes());
        put(DEVICE_STATUS, &[self.status()]);
        put(CONFIG_GENERATION, &[0]);
        put(QUEUE_SELECT, &self.queue_select.to_le_bytes());
        if let Some(q) = self.selected() {
            let slot = lock(&q.shared);
            put(QUEUE_SIZE, &slot.queue.size().to_le_bytes());
            put(QUEUE_MSIX_VECTOR, &q.vector.to_le_bytes());
            put(QUEUE_ENABLE, &u16::from(slot.queue.ready()).to_le_bytes());
            put(QUEUE_NOTIFY_OFF, &self.queue_select.to_le_bytes());
            put(QUEUE_DESC, &slot.queue.desc_table().to_le_bytes());
            put(QUEUE_DRIVER, &slot.queue.avail_ring().to_le_bytes());
            put(QUEUE_DEVICE, &slot.queue.used_ring().to_le_bytes());
        }
        c
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let value = le(data);
        let (lo, hi) = (Some(value as u32), None);
        let setup_allowed = self.status & status::DRIVER_OK == 0;
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = value as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = value as u32,
            (DRIVER_FEATURE, 4) if self.status & status::FEATURES_OK == 0 => match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | value << 32,
                _ => {}
            },
            (CONFIG_MSIX_VECTOR, 2) => self.config_vector = self.vector_or_none(value as u16),
            (DEVICE_STATUS, 1) => self.set_status(value as u8),
            (QUEUE_SELECT, 2) => self.queue_select = value as u16,
            (QUEUE_MSIX_VECTOR, 2) => {
                let vector = self.vector_or_none(value as u16);
                if let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) {
                    q.vector = vector;
                }
                self.route_calls();
            }
            (QUEUE_SIZE | QUEUE_ENABLE | QUEUE_DESC | QUEUE_DESC_HI | QUEUE_DRIVER | QUEUE_DRIVER_HI | QUEUE_DEVICE | QUEUE_DEVICE_HI, _) if setup_allowed => {
                let Some(q) = self.selected() else { return self.ignore() };
                let mut slot = lock(&q.shared);
                let queue = &mut slot.queue;
                match (offset, data.len()) {
                    (QUEUE_SIZE, 2) => {
                        if queue.try_set_size(value as u16).is_err() {
                            drop(slot);
                            self.ignore();
                        }
                    }
                    (QUEUE_ENABLE, 2) => queue.set_ready(value == 1),
                    (QUEUE_DESC, 4) => queue.set_desc_table_address(lo, hi),
                    (QUEUE_DESC_HI, 4) => queue.set_desc_table_address(None, lo),
                    (QUEUE_DRIVER, 4) => queue.set_avail_ring_address(lo, hi),
                    (QUEUE_DRIVER_HI, 4) => queue.set_avail_ring_address(None, lo),
                    (QUEUE_DEVICE, 4) => queue.set_used_ring_address(lo, hi),
                    (QUEUE_DEVICE_HI, 4) => queue.set_used_ring_address(None, lo),
                    (QUEUE_DESC, 8) => queue.set_desc_table_address(lo, Some((value >> 32) as u32)),
                    (QUEUE_DRIVER, 8) => queue.set_avail_ring_address(lo, Some((value >> 32) as u32)),
                    (QUEUE_DEVICE, 8) => queue.set_used_ring_address(lo, Some((value >> 32) as u32)),
                    _ => {
                        drop(slot);
                        self.ignore();
                    }
                }
            }
            _ => self.ignore(),
        }
    }

    fn ignore(&self) {
        self.stats.ignored.fetch_add(1, Ordering::Relaxed);
    }

    /// A vector the table has, or NO_VECTOR (what the driver reads back: 4.1.5.1.2).
    fn vector_or_none(&self, vector: u16) -> u16 {
        if vector < self.msix.vectors() { vector } else { NO_VECTOR }
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & status::FEATURES_OK != 0 {
            let subset = self.driver_features & !self.info.features == 0;
            if !subset || self.driver_features & F_VERSION_1 == 0 {
                value &= !status::FEATURES_OK;
            }
        }
        if newly & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0 {
            let event_idx = self.driver_features & F_EVENT_IDX != 0;
            self.negotiated.store(self.driver_features, Ordering::Relaxed);
            let mut broken = false;
            for q in &self.queues {
                let mut slot = lock(&q.shared);
                if !slot.queue.ready() {
                    continue;
                }
                slot.queue.set_event_idx(event_idx);
                if slot.queue.is_valid(self.mem.get()) {
                    slot.live = true;
                } else {
                    broken = true;
                }
            }
            self.status = value;
            if broken {
                self.needs_reset.store(true, Ordering::Relaxed);
            }
            self.sync_ioevents();
            if !broken {
                self.start_offload();
            }
            // Buffers the driver made available before DRIVER_OK.
            for q in &self.queues {
                let _ = q.kick.write(1);
            }
            return;
        }
        self.status = value;
    }

    /// Device reset (4.1.4.3.1: writing 0 to device_status): every queue waits for the
    /// worker to let go of it, then goes back to its reset state.
    fn reset(&mut self) {
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        if std::mem::take(&mut self.offloaded) {
            if let Some(offload) = self.offload.as_mut() {
                offload.stop();
            }
            for q in &mut self.queues {
                q.call = None;
            }
        }
        for q in &mut self.queues {
            let mut slot = lock(&q.shared);
            slot.live = false;
            slot.queue.reset();
            q.vector = NO_VECTOR;
        }
        self.status = 0;
        self.driver_features = 0;
        self.negotiated.store(0, Ordering::Relaxed);
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.config_vector = NO_VECTOR;
        self.queue_select = 0;
        self.isr = 0;
        self.needs_reset.store(false, Ordering::Relaxed);
        self.sync_ioevents();
    }

    fn notify(&mut self, offset: u64, len: usize) {
        let q = (offset / u64::from(NOTIFY_MULTIPLIER)) as usize;
        let live = self.status & status::DRIVER_OK != 0 && !self.needs_reset.load(Ordering::Relaxed);
        match self.queues.get(q) {
            Some(queue) if live && matches!(len, 2 | 4) => {
                self.stats.notifies.fetch_add(1, Ordering::Relaxed);
                let _ = queue.kick.write(1);
            }
            _ => {
                self.stats.notifies_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

const QUEUE_DESC_HI: u64 = QUEUE_DESC + 4;
const QUEUE_DRIVER_HI: u64 = QUEUE_DRIVER + 4;
const QUEUE_DEVICE_HI: u64 = QUEUE_DEVICE + 4;

impl BusDevice for Transport {
    fn read(&mut self, _: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        match self.msix.read(BAR, offset, data) {
            Access::NotMine => {}
            Access::Done(_) => return,
            Access::Ignored => return self.ignore(),
        }
        let end = offset + data.len() as u64;
        data.fill(0);
        match offset / REGION * REGION {
            COMMON if end <= COMMON + COMMON_LEN => {
                let c = self.common();
                data.copy_from_slice(&c[offset as usize..end as usize]);
            }
            ISR if offset == ISR => {
                data[0] = std::mem::take(&mut self.isr);
            }
            DEVICE if end - DEVICE <= self.info.config.len() as u64 => {
                let at = (offset - DEVICE) as usize;
                data.copy_from_slice(&self.info.config[at..at + data.len()]);
            }
            _ => self.ignore(),
        }
    }

    fn write(&mut self, _: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        match self.msix.write(BAR, offset, data) {
            Access::NotMine => {}
            Access::Done(raised) => {
                if let Some(raised) = raised {
                    self.send(None, raised);
                }
                self.route_calls();
                return Ok(Effect::Continue);
            }
            Access::Ignored => {
                self.ignore();
                return Ok(Effect::Continue);
            }
        }
        let end = offset + data.len() as u64;
        match offset / REGION * REGION {
            COMMON if end <= COMMON + COMMON_LEN => self.common_write(offset, data),
            NOTIFY => self.notify(offset - NOTIFY, data.len()),
            // The ISR and the device's configuration are read-only.
            _ => self.ignore(),
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::tests::CTX;
    use crate::pc::board::tests::pc;
    use crate::pc::pci::{Bdf, ECAM_BASE};
    use crate::pc::pci_config::{CAPABILITIES_POINTER, COMMAND_MEMORY};
    use crate::virtio::blk;

    const BASE: u64 = 0xd000_0000;

    fn info() -> DeviceInfo {
        DeviceInfo { device_type: blk::DEVICE_ID, class: (1, 0, 0), features: blk::features(false), config: blk::config_space(4096), queue_sizes: vec![blk::QUEUE_SIZE] }
    }

    /// A virtio-blk function at 00:03.0 of the pc board's root, BAR 0 at `BASE`.
    fn setup() -> (crate::devices::Devices, crate::pc::board::PcBoard, WorkerEnds) {
        setup_with(None)
    }

    /// The same, its notifications registered on `ioevents`.
    fn setup_with(ioevents: Option<VmHandle>) -> (crate::devices::Devices, crate::pc::board::PcBoard, WorkerEnds) {
        setup_device(info(), ioevents, None)
    }

    /// The same, its interrupts bound to irqfds on `irqfds` too.
    fn setup_full(ioevents: Option<VmHandle>, irqfds: Option<VmHandle>) -> (crate::devices::Devices, crate::pc::board::PcBoard, WorkerEnds) {
        setup_device(info(), ioevents, irqfds)
    }

    /// The function of `info`, as `setup_full`.
    fn setup_device(info: DeviceInfo, ioevents: Option<VmHandle>, irqfds: Option<VmHandle>) -> (crate::devices::Devices, crate::pc::board::PcBoard, WorkerEnds) {
        let (mut d, board) = pc();
        let ram = Arc::new(crate::sys::GuestMemory::new(16 << 20).unwrap());
        let mem = Arc::new(VmMemory::new(ram).unwrap());
        let (f, ends) = VirtioPci::new(info, board.msi(), mem, ioevents, irqfds).unwrap();
        lock(&board.pci).add(Bdf { bus: 0, device: 3, function: 0 }, Box::new(f)).unwrap();
        let cfg = |d: &mut crate::devices::Devices, reg: u64, v: u32| d.mmio.write(ECAM_BASE + (3 << 15) + reg, &v.to_le_bytes(), &CTX).unwrap();
        cfg(&mut d, 0x10, BASE as u32);
        cfg(&mut d, 0x04, u32::from(COMMAND_MEMORY));
        (d, board, ends)
    }

    fn r(d: &mut crate::devices::Devices, at: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        d.mmio.read(BASE + at, &mut b[..len], &CTX);
        le(&b[..len])
    }

    fn w(d: &mut crate::devices::Devices, at: u64, len: usize, v: u64) {
        d.mmio.write(BASE + at, &v.to_le_bytes()[..len], &CTX).unwrap();
    }

    #[test]
    fn identity_and_capabilities() {
        let (d, board, ends) = setup();
        assert_eq!(capabilities(d, board, ends), (0x1042_1af4, vec![(1, 0, 0x38), (3, 0x1000, 1), (4, 0x2000, 0x40), (2, 0x3000, 4), (0x111, 0, 0)]));
    }

    /// A device without a configuration structure (entropy) has no DEVICE_CFG capability
    /// (Linux refuses one of length 0).
    #[test]
    fn no_device_capability_without_a_configuration() {
        let info = DeviceInfo { device_type: 4, class: (0xff, 0, 0), features: F_VERSION_1, config: Vec::new(), queue_sizes: vec![64] };
        let (d, board, ends) = setup_device(info, None, None);
        assert_eq!(capabilities(d, board, ends), (0x1044_1af4, vec![(1, 0, 0x38), (3, 0x1000, 1), (2, 0x3000, 4), (0x111, 0, 0)]));
    }

    /// The function at 00:03.0: its vendor and device ID, and its capabilities: (type,
    /// offset, length) for the vendor ones, 0x100 | ID for the others.
    fn capabilities(mut d: crate::devices::Devices, _board: crate::pc::board::PcBoard, _ends: WorkerEnds) -> (u32, Vec<(u32, u32, u32)>) {
        let ecam = |d: &mut crate::devices::Devices, reg: u64| {
            let mut b = [0u8; 4];
            d.mmio.read(ECAM_BASE + (3 << 15) + reg, &mut b, &CTX);
            u32::from_le_bytes(b)
        };
        let id = ecam(&mut d, 0);
        assert_eq!(ecam(&mut d, 8) & 0xff, 1, "revision 1");
        assert_eq!(ecam(&mut d, 0x2c), 0x1100_1af4);
        // Walk the capabilities: four vendor ones (common, ISR, device, notify), MSI-X.
        let mut at = ecam(&mut d, CAPABILITIES_POINTER as u64) & 0xff;
        let mut seen = Vec::new();
        while at != 0 {
            let head = ecam(&mut d, u64::from(at));
            let id = head & 0xff;
            if id == u32::from(CAP_VENDOR) {
                let kind = (head >> 24) & 0xff;
                let offset = ecam(&mut d, u64::from(at) + 8);
                let len = ecam(&mut d, u64::from(at) + 12);
                seen.push((kind, offset, len));
                if kind == u32::from(CAP_NOTIFY) {
                    assert_eq!(ecam(&mut d, u64::from(at) + 16), NOTIFY_MULTIPLIER);
                }
            } else {
                seen.push((0x100 | id, 0, 0));
            }
            at = (head >> 8) & 0xff;
        }
        (id, seen)
    }

    /// Feature negotiation, queue setup, DRIVER_OK, notify → the worker's EventFd, the
    /// worker's signal → an MSI-X message, and a reset.
    #[test]
    fn a_driver_brings_the_device_up_and_resets_it() {
        let (mut d, board, ends) = setup();
        assert_eq!(r(&mut d, NUM_QUEUES, 2), 1);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER));
        w(&mut d, DEVICE_FEATURE_SELECT, 4, 1);
        assert_eq!(r(&mut d, DEVICE_FEATURE, 4), 1, "VERSION_1 in the high word");
        w(&mut d, DEVICE_FEATURE_SELECT, 4, 0);
        let low = r(&mut d, DEVICE_FEATURE, 4);
        assert_eq!(low, blk::features(false) & 0xffff_ffff);
        // Without VERSION_1, FEATURES_OK does not stick.
        w(&mut d, DRIVER_FEATURE_SELECT, 4, 0);
        w(&mut d, DRIVER_FEATURE, 4, low);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        assert_eq!(r(&mut d, DEVICE_STATUS, 1) as u8 & status::FEATURES_OK, 0);
        // With a feature the device does not offer, neither.
        w(&mut d, DRIVER_FEATURE_SELECT, 4, 1);
        w(&mut d, DRIVER_FEATURE, 4, 3);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        assert_eq!(r(&mut d, DEVICE_STATUS, 1) as u8 & status::FEATURES_OK, 0);
        w(&mut d, DRIVER_FEATURE, 4, 1);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        assert_ne!(r(&mut d, DEVICE_STATUS, 1) as u8 & status::FEATURES_OK, 0);
        // Queue 0: size, vector, rings, enable.
        w(&mut d, QUEUE_SELECT, 2, 0);
        assert_eq!(r(&mut d, QUEUE_SIZE, 2), 256);
        w(&mut d, QUEUE_SIZE, 2, 100);
        assert_eq!(r(&mut d, QUEUE_SIZE, 2), 256, "not a power of two: kept");
        w(&mut d, QUEUE_SIZE, 2, 64);
        w(&mut d, QUEUE_MSIX_VECTOR, 2, 1);
        assert_eq!(r(&mut d, QUEUE_MSIX_VECTOR, 2), 1);
        w(&mut d, CONFIG_MSIX_VECTOR, 2, 7);
        assert_eq!(r(&mut d, CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR), "no vector 7");
        w(&mut d, QUEUE_DESC, 4, 0x10000);
        w(&mut d, QUEUE_DESC_HI, 4, 0);
        w(&mut d, QUEUE_DRIVER, 4, 0x11000);
        w(&mut d, QUEUE_DRIVER_HI, 4, 0);
        w(&mut d, QUEUE_DEVICE, 8, 0x12000);
        w(&mut d, QUEUE_ENABLE, 2, 1);
        assert_eq!(r(&mut d, QUEUE_DESC, 8), 0x10000);
        // A notification before DRIVER_OK is dropped.
        w(&mut d, NOTIFY, 2, 0);
        let (queue, kick) = &ends.queues[0];
        let t = lock(&board.pci).functions().count();
        assert_eq!(t, 2);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK));
        assert!(lock(queue).live);
        assert_eq!(kick.read().unwrap(), 1, "DRIVER_OK kicks the worker once");
        w(&mut d, NOTIFY, 2, 0);
        assert_eq!(kick.read().unwrap(), 1);
        assert_eq!(r(&mut d, 0x2000, 4), 8, "capacity: 8 sectors");
        // MSI-X on, vector 1 to vCPU 0's vector 0x41: the worker's signal sends it.
        msix_vector(&mut d, &board, 1, 0x41);
        ends.signal.used(0);
        assert_eq!(board.interrupts().apics.lapics[0].pending_interrupt(), Some(0x41));
        assert_eq!(r(&mut d, ISR, 1), 1, "ISR: a queue interrupt");
        assert_eq!(r(&mut d, ISR, 1), 0, "cleared by the read");
        // The worker found the device broken.
        ends.signal.needs_reset();
        assert_ne!(r(&mut d, DEVICE_STATUS, 1) as u8 & status::NEEDS_RESET, 0);
        // Reset.
        w(&mut d, DEVICE_STATUS, 1, 0);
        assert_eq!(r(&mut d, DEVICE_STATUS, 1), 0);
        assert!(!lock(queue).live);
        assert_eq!(r(&mut d, QUEUE_SIZE, 2), 256);
        assert_eq!(r(&mut d, QUEUE_ENABLE, 2), 0);
        assert_eq!(r(&mut d, QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    }

    /// MSI-X on (through the configuration space), and table entry `entry` sends vector
    /// `vector` to vCPU 0, unmasked.
    fn msix_vector(d: &mut crate::devices::Devices, board: &crate::pc::board::PcBoard, entry: u64, vector: u8) {
        let msix_control = {
            let root = lock(&board.pci);
            let f = root.functions().find(|(b, _)| b.device == 3).unwrap().1;
            let mut at = [0u8];
            f.config().read(CAPABILITIES_POINTER, &mut at);
            let mut p = usize::from(at[0]);
            loop {
                let mut h = [0u8; 2];
                f.config().read(p, &mut h);
                if h[0] == 0x11 {
                    break p + 2;
                }
                p = usize::from(h[1]);
            }
        };
        d.mmio.write(ECAM_BASE + (3 << 15) + msix_control as u64, &0x8000u16.to_le_bytes(), &CTX).unwrap();
        let at = u64::from(MSIX_TABLE) + 16 * entry;
        w(d, at, 4, 0xfee0_0000);
        w(d, at + 8, 4, u64::from(vector));
        w(d, at + 12, 4, 0);
    }

    /// A VM that notes each ioeventfd registration (+address) and removal (-address), and
    /// refuses registrations while `refuse` is set; it keeps irqfd bindings (a copy of the
    /// eventfd, the message) unless `refuse_irqfd` is set.
    #[derive(Default)]
    struct FakeVm {
        log: Mutex<Vec<(char, u64)>>,
        refuse: AtomicBool,
        irqfds: Mutex<Vec<(EventFd, abi::Msi)>>,
        refuse_irqfd: AtomicBool,
    }

    impl crate::hypervisor::Vm for FakeVm {
        fn register_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, _: &EventFd) -> io::Result<()> {
            assert_eq!(datamatch, Datamatch::Any);
            let IoEventAddress::Mmio(at) = addr else { panic!("a port ioeventfd") };
            if self.refuse.load(Ordering::Relaxed) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            self.log.lock().unwrap().push(('+', at));
            Ok(())
        }
        fn unregister_ioevent(&self, addr: IoEventAddress, _: Datamatch, _: &EventFd) -> io::Result<()> {
            let IoEventAddress::Mmio(at) = addr else { panic!("a port ioeventfd") };
            self.log.lock().unwrap().push(('-', at));
            Ok(())
        }
        fn register_irqfd(&self, fd: &EventFd, msi: abi::Msi) -> io::Result<()> {
            if self.refuse_irqfd.load(Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(nix::libc::ENXIO));
            }
            self.irqfds.lock().unwrap().push((fd.try_clone()?, msi));
            Ok(())
        }
        fn unregister_irqfd(&self, _: &EventFd) -> io::Result<()> {
            Ok(())
        }
    }

    /// With irqfds, the worker's interrupt is the vector's eventfd, bound to the message
    /// the MSI-X table holds; the emulator's APICs see nothing. A masked vector sends
    /// nothing; a refused binding sends through the APICs as without irqfds.
    #[test]
    fn interrupts_go_through_irqfds_bound_to_the_table_entry() {
        let vm = Arc::new(FakeVm::default());
        let (mut d, board, ends) = setup_full(None, Some(vm.clone() as VmHandle));
        bring_up(&mut d);
        w(&mut d, QUEUE_MSIX_VECTOR, 2, 1);
        msix_vector(&mut d, &board, 1, 0x41);
        ends.signal.used(0);
        ends.signal.used(0);
        {
            let bound = vm.irqfds.lock().unwrap();
            assert_eq!(bound.len(), 1);
            assert_eq!((bound[0].1.address, bound[0].1.data), (0xfee0_0000, 0x41));
            assert_eq!(bound[0].0.read().unwrap(), 2, "two signals");
        }
        assert_eq!(board.interrupts().apics.lapics[0].pending_interrupt(), None, "nothing through the emulator");
        // Masked: the pending bit holds it; nothing is signalled.
        w(&mut d, u64::from(MSIX_TABLE) + 16 + 12, 4, 1);
        ends.signal.used(0);
        assert!(vm.irqfds.lock().unwrap()[0].0.read().is_err(), "no signal while masked");
        // The guest moves the vector, and unmasks: the pending message goes the ordinary
        // way (vector unknown there), the next through a new binding.
        w(&mut d, u64::from(MSIX_TABLE) + 16 + 8, 4, 0x42);
        w(&mut d, u64::from(MSIX_TABLE) + 16 + 12, 4, 0);
        assert_eq!(board.interrupts().apics.lapics[0].pending_interrupt(), Some(0x42));
        ends.signal.used(0);
        let bound = vm.irqfds.lock().unwrap();
        assert_eq!(bound.len(), 2);
        assert_eq!(bound[1].1.data, 0x42);
        assert_eq!(bound[1].0.read().unwrap(), 1);
    }

    #[test]
    fn a_refused_irqfd_leaves_interrupts_to_the_emulator() {
        let vm = Arc::new(FakeVm::default());
        vm.refuse_irqfd.store(true, Ordering::Relaxed);
        let (mut d, board, ends) = setup_full(None, Some(vm.clone() as VmHandle));
        bring_up(&mut d);
        w(&mut d, QUEUE_MSIX_VECTOR, 2, 1);
        msix_vector(&mut d, &board, 1, 0x41);
        ends.signal.used(0);
        assert_eq!(board.interrupts().apics.lapics[0].pending_interrupt(), Some(0x41));
        assert!(vm.irqfds.lock().unwrap().is_empty());
    }

    /// An offload that notes what the transport asks of it: "start F q:size:desc:avail:used
    /// call=relay", "call q relay|other", "stop"; it refuses to start while `refuse`.
    struct FakeOffload {
        log: Arc<Mutex<Vec<String>>>,
        relays: Arc<Mutex<Vec<i32>>>,
        refuse: bool,
    }

    impl FakeOffload {
        fn which(&self, fd: &EventFd) -> &'static str {
            use std::os::fd::AsRawFd;
            if self.relays.lock().unwrap().contains(&fd.as_raw_fd()) { "relay" } else { "other" }
        }
    }

    impl Offload for FakeOffload {
        fn start(&mut self, features: u64, queues: &[OffloadQueue<'_>]) -> io::Result<()> {
            if self.refuse {
                return Err(io::Error::other("refused"));
            }
            for q in queues {
                let line = format!("start {features:#x} {}:{}:{:#x}:{:#x}:{:#x} call={}", q.index, q.size, q.desc, q.avail, q.used, self.which(q.call));
                self.log.lock().unwrap().push(line);
            }
            Ok(())
        }
        fn set_call(&mut self, queue: usize, call: &EventFd) -> io::Result<()> {
            let line = format!("call {queue} {}", self.which(call));
            self.log.lock().unwrap().push(line);
            Ok(())
        }
        fn stop(&mut self) {
            self.log.lock().unwrap().push("stop".into());
        }
    }

    /// The virtio-blk function of `setup_full` with an offload: its log.
    fn setup_offloaded(irqfds: Option<VmHandle>, refuse: bool) -> (crate::devices::Devices, crate::pc::board::PcBoard, WorkerEnds, Arc<Mutex<Vec<String>>>) {
        use std::os::fd::AsRawFd;
        let (mut d, board) = pc();
        let ram = Arc::new(crate::sys::GuestMemory::new(16 << 20).unwrap());
        let mem = Arc::new(VmMemory::new(ram).unwrap());
        let (f, ends) = VirtioPci::new(info(), board.msi(), mem, None, irqfds).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let relays = Arc::new(Mutex::new(Vec::new()));
        let got = f.set_offload(Box::new(FakeOffload { log: log.clone(), relays: relays.clone(), refuse })).unwrap();
        // The transport keeps its own descriptors: note theirs (the returned ones are dups).
        let t = lock(&f.transport);
        *relays.lock().unwrap() = t.queues.iter().map(|q| q.relay.as_ref().unwrap().as_raw_fd()).collect();
        drop(t);
        assert_eq!(got.len(), 1);
        lock(&board.pci).add(Bdf { bus: 0, device: 3, function: 0 }, Box::new(f)).unwrap();
        let cfg = |d: &mut crate::devices::Devices, reg: u64, v: u32| d.mmio.write(ECAM_BASE + (3 << 15) + reg, &v.to_le_bytes(), &CTX).unwrap();
        cfg(&mut d, 0x10, BASE as u32);
        cfg(&mut d, 0x04, u32::from(COMMAND_MEMORY));
        (d, board, ends, log)
    }

    /// DRIVER_OK hands the live queues to the offload (their rings, the relay as call);
    /// a reset takes them back; the next DRIVER_OK hands them over again.
    #[test]
    fn an_offload_gets_the_queues_at_driver_ok_and_gives_them_back_at_reset() {
        let (mut d, _board, _ends, log) = setup_offloaded(None, false);
        let taken = || std::mem::take(&mut *log.lock().unwrap());
        bring_up(&mut d);
        assert_eq!(taken(), ["start 0x100000000 0:256:0x10000:0x11000:0x12000 call=relay"]);
        w(&mut d, DEVICE_STATUS, 1, 0);
        assert_eq!(taken(), ["stop"]);
        w(&mut d, DEVICE_STATUS, 1, 0);
        assert_eq!(taken(), Vec::<String>::new(), "nothing to stop twice");
        bring_up(&mut d);
        assert_eq!(taken().len(), 1);
        // A refused start: the device needs a reset.
        let (mut d, _board, _ends, log) = setup_offloaded(None, true);
        bring_up(&mut d);
        assert!(log.lock().unwrap().is_empty());
        assert_ne!(r(&mut d, DEVICE_STATUS, 1) as u8 & status::NEEDS_RESET, 0);
    }

    /// With irqfds, an offloaded queue's call is its vector's irqfd while the vector can
    /// send, the relay while it is masked; the relay's interrupt then goes through MSI-X
    /// (pending until unmasked).
    #[test]
    fn an_offloaded_queue_calls_the_irqfd_unless_masked() {
        let vm = Arc::new(FakeVm::default());
        let (mut d, board, ends, log) = setup_offloaded(Some(vm.clone() as VmHandle), false);
        let taken = || std::mem::take(&mut *log.lock().unwrap());
        bring_up(&mut d);
        assert_eq!(taken().len(), 1);
        w(&mut d, QUEUE_MSIX_VECTOR, 2, 1);
        msix_vector(&mut d, &board, 1, 0x41);
        assert_eq!(taken(), ["call 0 other"]);
        assert_eq!(vm.irqfds.lock().unwrap().len(), 1, "bound to the vector's message");
        assert_eq!(vm.irqfds.lock().unwrap()[0].1.data, 0x41);
        // Masked: the relay; the relay's interrupt is held pending.
        w(&mut d, u64::from(MSIX_TABLE) + 16 + 12, 4, 1);
        assert_eq!(taken(), ["call 0 relay"]);
        ends.signal.used(0);
        assert!(vm.irqfds.lock().unwrap()[0].0.read().is_err(), "nothing sent while masked");
        // Unmasked: the pending interrupt goes (the ordinary way, as any pending
        // message), the call back to the irqfd.
        w(&mut d, u64::from(MSIX_TABLE) + 16 + 12, 4, 0);
        assert_eq!(taken(), ["call 0 other"]);
        assert_eq!(board.interrupts().apics.lapics[0].pending_interrupt(), Some(0x41));
        w(&mut d, DEVICE_STATUS, 1, 0);
        assert_eq!(taken(), ["stop"]);
    }

    /// Feature negotiation and queue 0 set up with rings in RAM, then DRIVER_OK.
    fn bring_up(d: &mut crate::devices::Devices) {
        w(d, DRIVER_FEATURE_SELECT, 4, 1);
        w(d, DRIVER_FEATURE, 4, 1);
        w(d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        w(d, QUEUE_DESC, 8, 0x10000);
        w(d, QUEUE_DRIVER, 8, 0x11000);
        w(d, QUEUE_DEVICE, 8, 0x12000);
        w(d, QUEUE_ENABLE, 2, 1);
        w(d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK));
    }

    /// The queue's notify address is an ioeventfd from DRIVER_OK to the reset, and follows
    /// BAR 0: removed when it moves or stops decoding, registered again where it decodes.
    /// A refused registration leaves the notification an exit, which still kicks.
    #[test]
    fn notifications_are_ioeventfds_that_follow_the_bar() {
        let vm = Arc::new(FakeVm::default());
        let (mut d, _board, ends) = setup_with(Some(vm.clone() as VmHandle));
        let kick = &ends.queues[0].1;
        let taken = || std::mem::take(&mut *vm.log.lock().unwrap());
        let ecam = |d: &mut crate::devices::Devices, reg: u64, v: u32| d.mmio.write(ECAM_BASE + (3 << 15) + reg, &v.to_le_bytes(), &CTX).unwrap();
        // Enabled but not running: nothing registered.
        w(&mut d, QUEUE_ENABLE, 2, 1);
        assert_eq!(taken(), []);
        bring_up(&mut d);
        let at = BASE + NOTIFY;
        assert_eq!(taken(), [('+', at)]);
        // BAR 0 moves: the old address goes, the new one comes.
        let moved = BASE + 0x10_0000;
        ecam(&mut d, 0x10, moved as u32);
        assert_eq!(taken(), [('-', at), ('+', moved + NOTIFY)]);
        // Memory decoding off: removed; on again: registered again.
        ecam(&mut d, 0x04, 0);
        assert_eq!(taken(), [('-', moved + NOTIFY)]);
        ecam(&mut d, 0x04, u32::from(COMMAND_MEMORY));
        assert_eq!(taken(), [('+', moved + NOTIFY)]);
        // A BAR outside the window does not decode: removed; back in it: registered.
        ecam(&mut d, 0x10, 0x1000_0000);
        assert_eq!(taken(), [('-', moved + NOTIFY)]);
        ecam(&mut d, 0x10, BASE as u32);
        assert_eq!(taken(), [('+', at)]);
        // The device reset removes it.
        w(&mut d, DEVICE_STATUS, 1, 0);
        assert_eq!(taken(), [('-', at)]);
        assert_eq!(kick.read().unwrap(), 1, "DRIVER_OK's kick");
        // A refused registration: counted, and the notification is an exit that kicks.
        vm.refuse.store(true, Ordering::Relaxed);
        bring_up(&mut d);
        assert_eq!(taken(), []);
        assert_eq!(kick.read().unwrap(), 1, "DRIVER_OK's kick");
        w(&mut d, NOTIFY, 2, 0);
        assert_eq!(kick.read().unwrap(), 1, "the exit's kick");
    }

    /// Rings outside RAM at DRIVER_OK: the device needs a reset, the queue never goes live.
    #[test]
    fn rings_outside_ram_need_a_reset() {
        let (mut d, _board, ends) = setup();
        w(&mut d, DRIVER_FEATURE_SELECT, 4, 1);
        w(&mut d, DRIVER_FEATURE, 4, 1);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        w(&mut d, QUEUE_DESC, 8, 0x4000_0000);
        w(&mut d, QUEUE_DRIVER, 8, 0x11000);
        w(&mut d, QUEUE_DEVICE, 8, 0x12000);
        w(&mut d, QUEUE_ENABLE, 2, 1);
        w(&mut d, DEVICE_STATUS, 1, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK));
        assert_ne!(r(&mut d, DEVICE_STATUS, 1) as u8 & status::NEEDS_RESET, 0);
        assert!(!lock(&ends.queues[0].0).live);
    }

    /// Random accesses of every width anywhere in the BAR: nothing panics.
    #[test]
    fn hostile_bar_accesses_hurt_nothing() {
        let (mut d, _board, _ends) = setup();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = [1, 2, 4, 8][(x % 4) as usize];
            let at = (x >> 8) % BAR_SIZE;
            let at = at.min(BAR_SIZE - len as u64);
            if x & (1 << 40) != 0 {
                w(&mut d, at, len, x >> 3);
            } else {
                r(&mut d, at, len);
            }
        }
    }
}
