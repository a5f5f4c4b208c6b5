//! The hypervisor under the machine: yakvm (`/dev/yakvm`) or KVM (`/dev/kvm`), behind one
//! small trait. The machine, its devices, loaders, `--trace` and `--stats` are the same on
//! both; only what differs in the two APIs is here (how an exit is described, where the
//! registers and run page live, who decodes an MMIO access: KVM in the kernel, yakvm here,
//! in its backend, so that the machine sees one MMIO exit of both). The unsafe parts of
//! both are in `sys`.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

pub use vmm_sys_util::eventfd::EventFd;

use crate::insn;
use crate::sys::{self, GuestMemory, Kicker};
use crate::mmu;
use yakvm_abi::cpuid::{guest_cpuid, CpuidResult, LEAVES};
use yakvm_abi as abi;

/// Which hypervisor runs the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// yakvm's kernel module (`/dev/yakvm`).
    #[default]
    Yakvm,
    /// Linux KVM (`/dev/kvm`, kvm_amd), with the same userspace devices (no in-kernel PIT,
    /// PIC or I/O APIC; the local APICs in the kernel only with `--kernel-apic`, KVM's
    /// split irqchip): for comparisons.
    Kvm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Yakvm => "yakvm",
            Kind::Kvm => "kvm",
        }
    }
}

/// An exit to userspace, as the machine handles it.
pub enum Exit<'a> {
    /// Port I/O of `data.len() / size` elements of `size` bytes: the bytes written (OUT),
    /// or to fill in (IN).
    Io { port: u16, size: u8, out: bool, data: &'a mut [u8] },
    /// An access to guest-physical `gpa` outside RAM, decoded by the hypervisor: the bytes
    /// written, or to fill in for a read (1, 2, 4 or 8). Call `complete_mmio` once it is
    /// handled.
    Mmio { gpa: u64, write: bool, data: &'a mut [u8] },
    /// yakvm: an access to `gpa` outside RAM whose instruction cannot be emulated.
    MmioFailed { gpa: u64, error: &'a MmioError },
    /// yakvm: VMMCALL (KVM answers hypercalls itself).
    Hypercall(&'a mut abi::HypercallExit),
    /// HLT, RIP past it.
    Hlt,
    /// The guest can take the interrupt asked for with `request_interrupt_window`.
    IrqWindowOpen,
    /// Triple fault, at `rip` if the hypervisor still knows it (KVM resets the vCPU).
    Shutdown { rip: Option<u64> },
    /// VMRUN refused the guest state (`reason`: the hardware's code).
    FailEntry { reason: u64 },
    /// yakvm: an exit the module does not handle.
    Unhandled(abi::HwExit),
    /// yakvm: a stop a debugger asked for (`set_guest_debug`): a single step or an INT3.
    Debug(abi::DebugExit),
    /// The kernel's APICs (yakvm's; KVM's `KVM_EXIT_IOAPIC_EOI`): the guest ended
    /// level-triggered `vector` (an EOI) for the I/O APIC.
    IoapicEoi { vector: u8 },
    /// yakvm's kernel APIC: INIT reached the vCPU (the next `run` waits for a SIPI).
    ApicInit,
    /// yakvm's kernel APIC: a startup IPI with `vector` started the vCPU.
    ApicSipi { vector: u8 },
    /// yakvm's kernel APIC: the vCPU whose HLT was reported (`Hlt` with interrupts
    /// enabled: no APIC timer armed) has something to do again.
    ApicWake,
    /// Anything else the hypervisor reports (described).
    Other(String),
}

/// One vCPU of either hypervisor.
pub trait Vcpu: Send {
    /// Runs until the next exit to userspace; `Ok(false)` when a signal or a kick
    /// interrupted it (no exit to handle).
    fn run(&mut self) -> io::Result<bool>;
    /// The exit the last `run` returned with.
    fn exit(&mut self) -> Exit<'_>;
    /// After an `Exit::Mmio` is handled (its data filled in for a read): completes the
    /// instruction. yakvm: the registers as the instruction leaves them, RIP past it (at
    /// once, so that a debugger or the step trace sees the instruction done), or, for an
    /// instruction with another device access to make (a read-modify-write, XCHG, a string
    /// instruction), that access as the exit the next `run` returns without entering the
    /// guest; KVM: nothing here (KVM completes it in the next `run`, as yakvm then does).
    fn complete_mmio(&mut self) -> io::Result<()>;
    fn regs(&self) -> io::Result<abi::Regs>;
    fn set_regs(&mut self, regs: &abi::Regs) -> io::Result<()>;
    fn sregs(&self) -> io::Result<abi::Sregs>;
    fn set_sregs(&mut self, sregs: &abi::Sregs) -> io::Result<()>;
    /// Queues external interrupt `vector` (delivered when the guest can take it).
    fn interrupt(&mut self, vector: u8) -> io::Result<()>;
    /// Queues a non-maskable interrupt (vector 2), delivered when NMIs are not blocked
    /// (after the IRET of the one before); an error with `EEXIST` while one is queued.
    fn nmi(&mut self) -> io::Result<()>;
    /// After `run`: an interrupt queued now is delivered before the next instruction.
    /// False once `interrupt` has queued one, until the next `run` (a second would replace
    /// the first on KVM, and is refused on yakvm).
    fn ready_for_interrupt(&mut self) -> bool;
    /// After `run`: the guest's RFLAGS.IF.
    fn if_flag(&mut self) -> bool;
    /// Asks `run` to return (`Exit::IrqWindowOpen`) once the guest can take an interrupt.
    fn request_interrupt_window(&mut self, on: bool);
    /// Makes the calling thread's `run` interruptible by `Kicker::kick` (see
    /// `sys::Vcpu::kickable`).
    fn kickable(&mut self) -> io::Result<Kicker>;
    /// Clears a kick before looking for work.
    fn clear_kick(&mut self);
    /// The hypervisor's own exit counters (yakvm's module keeps them).
    fn stats(&self) -> Option<abi::ExitStats>;
    /// KVM's own counters by name (its binary statistics; empty on yakvm).
    fn kvm_stats(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// The guest's MSR accesses (yakvm only).
    fn msr_stats(&self) -> Option<abi::MsrStats>;
    /// The debugger's controls (`abi::guest_debug` bits: single-stepping, software
    /// breakpoints); yakvm only.
    fn set_guest_debug(&mut self, control: u32) -> io::Result<()>;
    /// Gives `apply` each port write the hypervisor coalesced (see `create`), oldest first,
    /// and forgets them. Call it after every `run`, before handling the exit. On KVM the
    /// list is the VM's (one ring for all vCPUs): `apply` runs with it locked, so calls on
    /// several vCPU threads keep the writes in order; do not call it while holding a lock
    /// that `apply` takes on another vCPU's thread (take that lock inside `apply`, or
    /// always around `drain_coalesced`).
    fn drain_coalesced(&mut self, apply: &mut dyn FnMut(u16, &[u8]));
    /// yakvm's kernel APIC: an xAPIC page access at `offset` (`data`: what is written, or
    /// the bytes to fill). `Some(vector)`: a write ended level-triggered `vector`.
    fn apic_access(&mut self, offset: u64, write: bool, data: &mut [u8]) -> io::Result<Option<u8>> {
        let _ = (offset, write, data);
        Err(io::Error::other("no kernel APIC"))
    }
    /// yakvm's kernel APIC: its statistics.
    fn apic_stats(&self) -> Option<abi::ApicStats> {
        None
    }
    /// The kernel's APICs: whether the PIC's INTR reaches this vCPU (its LINT0 as the
    /// guest set it), as the last `run` left it; `None` before the first `run`. KVM's
    /// split irqchip: always true on vCPU 0, as KVM looks at LINT0 itself (its
    /// `ready_for_interrupt` stays false while LINT0 does not take ExtINT, and it opens no
    /// interrupt window then: `kvm_cpu_accept_dm_intr`).
    fn apic_accepts_pic(&mut self) -> Option<bool> {
        None
    }
    /// yakvm's kernel APIC: how many of the VM's APICs have something to wake their vCPU
    /// for (a halted vCPU may have been woken in the module and not yet said so).
    fn apic_events(&self) -> io::Result<u32> {
        Err(io::Error::other("no kernel APIC"))
    }
}

/// Where an ioeventfd listens: a port or a guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEventAddress {
    Pio(u16),
    Mmio(u64),
}

/// Which writes an ioeventfd takes: any (any length, any value), or writes of exactly this
/// width and value (KVM's datamatch; the length follows from the type, as in kvm-ioctls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datamatch {
    Any,
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
}

impl Datamatch {
    /// The write's length in bytes (0: any) and the value, if one must match.
    pub fn len_and_value(self) -> (u32, Option<u64>) {
        match self {
            Datamatch::Any => (0, None),
            Datamatch::U8(v) => (1, Some(v.into())),
            Datamatch::U16(v) => (2, Some(v.into())),
            Datamatch::U32(v) => (4, Some(v.into())),
            Datamatch::U64(v) => (8, Some(v)),
        }
    }
}

/// What the machine keeps of its VM: its descriptors (dropped with it) and what is done
/// to the VM as a whole while it runs, from any thread.
pub trait Vm: Send + Sync {
    /// IOEVENTFD (yakvm's `IOEVENTFD`, KVM's `KVM_IOEVENTFD`): a guest write to `addr`
    /// that `datamatch` takes adds 1 to `fd`'s counter and the vCPU goes on without an exit
    /// to this program. A reader of `fd` gets the number of such writes since its last
    /// read (several writes may come as one wake-up). Port writes are OUTs; MMIO writes are
    /// the MOV stores the hypervisor decodes itself (any other instruction writing there,
    /// and writes that do not match, exit as before). `EEXIST` for a registration that
    /// collides with one at the same address (KVM's rule, docs/abi.md).
    fn register_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd) -> io::Result<()>;
    /// Removes the registration made with the same arguments (`ENOENT` if there is none),
    /// as when a device's BAR moves.
    fn unregister_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd) -> io::Result<()>;
    /// IRQFD (yakvm's `IRQFD`; KVM's `KVM_IRQFD` on a GSI routed to `msi`), with the
    /// kernel's APICs: each signal of `fd`, from any thread, delivers the interrupt
    /// message `msi` (MSI address and data) to the local APICs without this program on the
    /// way; signals that come before the delivery merge into one interrupt. An error
    /// without `--kernel-apic`.
    fn register_irqfd(&self, fd: &EventFd, msi: abi::Msi) -> io::Result<()> {
        let _ = (fd, msi);
        Err(io::Error::new(io::ErrorKind::Unsupported, "IRQFD needs yakvm's kernel APICs"))
    }
    /// Removes `fd`'s binding (`ENOENT` if there is none).
    fn unregister_irqfd(&self, fd: &EventFd) -> io::Result<()> {
        let _ = fd;
        Err(io::Error::new(io::ErrorKind::Unsupported, "IRQFD needs yakvm's kernel APICs"))
    }
}

/// A VM, shared by the machine and the devices that register ioeventfds.
pub type VmHandle = Arc<dyn Vm>;

struct YakvmVm(Arc<sys::Vm>);

impl YakvmVm {
    fn ioeventfd(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd, deassign: bool) -> io::Result<()> {
        use abi::ioeventfd::*;
        let (len, value) = datamatch.len_and_value();
        let (addr, pio) = match addr {
            IoEventAddress::Pio(port) => (port.into(), PIO),
            IoEventAddress::Mmio(gpa) => (gpa, 0),
        };
        let flags = pio | if value.is_some() { DATAMATCH } else { 0 } | if deassign { DEASSIGN } else { 0 };
        let arg = abi::IoEventFd { datamatch: value.unwrap_or(0), addr, len, fd: fd.as_raw_fd(), flags, _pad: 0 };
        self.0.ioeventfd(&arg)
    }
}

impl Vm for YakvmVm {
    fn register_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd) -> io::Result<()> {
        self.ioeventfd(addr, datamatch, fd, false)
    }
    fn unregister_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd) -> io::Result<()> {
        self.ioeventfd(addr, datamatch, fd, true)
    }
    fn register_irqfd(&self, fd: &EventFd, msi: abi::Msi) -> io::Result<()> {
        self.0.irqfd(&abi::IrqFd { fd: fd.as_raw_fd(), flags: 0, msi })
    }
    fn unregister_irqfd(&self, fd: &EventFd) -> io::Result<()> {
        self.0.irqfd(&abi::IrqFd { fd: fd.as_raw_fd(), flags: abi::irqfd::DEASSIGN, msi: abi::Msi::default() })
    }
}

/// KVM's VM. With the split irqchip (`--kernel-apic`) it keeps KVM's GSI routing table,
/// which `KVM_SET_GSI_ROUTING` replaces whole: the I/O APIC's pins and the irqfds' routes.
struct KvmVm {
    vm: kvm_ioctls::VmFd,
    _kvm: kvm_ioctls::Kvm,
    /// `KVM_CAP_SPLIT_IRQCHIP` is on: the local APICs are KVM's.
    split_irqchip: bool,
    routes: Mutex<GsiRoutes>,
}

/// The I/O APIC's pins of KVM's split irqchip (`KVM_CAP_SPLIT_IRQCHIP`'s argument): GSIs
/// 0-23, as many as `ioapic::PINS`.
const IOAPIC_GSIS: u32 = crate::pc::ioapic::PINS as u32;

/// What KVM's GSI routing table holds, as MSI routes (a split irqchip has no other kind):
/// GSI n below [`IOAPIC_GSIS`] is I/O APIC pin n's message, only there for KVM to know
/// which vectors' EOIs to report (`kvm_scan_ioapic_routes` in Linux's irq_comm.c: the
/// level-triggered ones, data bit 15); an irqfd's GSI, from [`IOAPIC_GSIS`] up, its
/// message.
#[derive(Debug, Default, PartialEq, Eq)]
struct GsiRoutes {
    /// Pin n's message, if its entry has one.
    ioapic: Vec<Option<(u64, u32)>>,
    /// Each irqfd's descriptor, GSI and message.
    irqfds: Vec<(std::os::fd::RawFd, u32, abi::Msi)>,
}

impl GsiRoutes {
    /// The lowest GSI above the I/O APIC's that no irqfd has.
    fn free_gsi(&self) -> u32 {
        (IOAPIC_GSIS..).find(|gsi| !self.irqfds.iter().any(|&(_, g, _)| g == *gsi)).expect("a free GSI")
    }

    /// The table: (GSI, MSI address, data), GSIs in ascending order.
    fn table(&self) -> Vec<(u32, u64, u32)> {
        let pins = self.ioapic.iter().enumerate().filter_map(|(pin, m)| m.map(|(address, data)| (pin as u32, address, data)));
        let mut table: Vec<_> = pins.chain(self.irqfds.iter().map(|&(_, gsi, msi)| (gsi, msi.address, msi.data))).collect();
        table.sort_by_key(|&(gsi, ..)| gsi);
        table
    }
}

impl KvmVm {
    /// `KVM_SET_GSI_ROUTING` with `routes`' table.
    fn set_routing(&self, routes: &GsiRoutes) -> io::Result<()> {
        let entries: Vec<kvm_bindings::kvm_irq_routing_entry> = routes
            .table()
            .into_iter()
            .map(|(gsi, address, data)| {
                let msi = kvm_bindings::kvm_irq_routing_msi { address_lo: address as u32, address_hi: (address >> 32) as u32, data, ..Default::default() };
                kvm_bindings::kvm_irq_routing_entry {
                    gsi,
                    type_: kvm_bindings::KVM_IRQ_ROUTING_MSI,
                    u: kvm_bindings::kvm_irq_routing_entry__bindgen_ty_1 { msi },
                    ..Default::default()
                }
            })
            .collect();
        let table = kvm_bindings::KvmIrqRouting::from_entries(&entries).map_err(|e| io::Error::other(format!("GSI routing table: {e:?}")))?;
        self.vm.set_gsi_routing(&table).map_err(kvm_error("KVM_SET_GSI_ROUTING"))
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, GsiRoutes> {
        // Changed only after KVM took the table: a panic leaves it as KVM has it.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn kvm_address(addr: IoEventAddress) -> kvm_ioctls::IoEventAddress {
    match addr {
        IoEventAddress::Pio(port) => kvm_ioctls::IoEventAddress::Pio(port.into()),
        IoEventAddress::Mmio(gpa) => kvm_ioctls::IoEventAddress::Mmio(gpa),
    }
}

impl Vm for KvmVm {
    fn register_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd) -> io::Result<()> {
        let a = &kvm_address(addr);
        match datamatch {
            Datamatch::Any => self.vm.register_ioevent(fd, a, kvm_ioctls::NoDatamatch),
            Datamatch::U8(v) => self.vm.register_ioevent(fd, a, v),
            Datamatch::U16(v) => self.vm.register_ioevent(fd, a, v),
            Datamatch::U32(v) => self.vm.register_ioevent(fd, a, v),
            Datamatch::U64(v) => self.vm.register_ioevent(fd, a, v),
        }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
    fn unregister_ioevent(&self, addr: IoEventAddress, datamatch: Datamatch, fd: &EventFd) -> io::Result<()> {
        let a = &kvm_address(addr);
        match datamatch {
            Datamatch::Any => self.vm.unregister_ioevent(fd, a, kvm_ioctls::NoDatamatch),
            Datamatch::U8(v) => self.vm.unregister_ioevent(fd, a, v),
            Datamatch::U16(v) => self.vm.unregister_ioevent(fd, a, v),
            Datamatch::U32(v) => self.vm.unregister_ioevent(fd, a, v),
            Datamatch::U64(v) => self.vm.unregister_ioevent(fd, a, v),
        }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
    /// A GSI of its own routed to `msi` (the whole table set again), then `KVM_IRQFD` on
    /// it. Only with the split irqchip: without it KVM has no local APICs to deliver to.
    fn register_irqfd(&self, fd: &EventFd, msi: abi::Msi) -> io::Result<()> {
        if !self.split_irqchip {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "IRQFD needs the kernel's local APICs (--kernel-apic)"));
        }
        let mut routes = self.lock_routes();
        if routes.irqfds.iter().any(|&(raw, ..)| raw == fd.as_raw_fd()) {
            return Err(io::Error::from_raw_os_error(nix::libc::EEXIST));
        }
        let gsi = routes.free_gsi();
        routes.irqfds.push((fd.as_raw_fd(), gsi, msi));
        let set = self.set_routing(&routes).and_then(|()| self.vm.register_irqfd(fd, gsi).map_err(kvm_error("KVM_IRQFD")));
        if let Err(e) = set {
            routes.irqfds.pop();
            // Back to the table KVM had (best effort: the error is the first one).
            let _ = self.set_routing(&routes);
            return Err(e);
        }
        Ok(())
    }
    /// `KVM_IRQFD` deassigned, then its GSI's route removed.
    fn unregister_irqfd(&self, fd: &EventFd) -> io::Result<()> {
        let mut routes = self.lock_routes();
        let Some(at) = routes.irqfds.iter().position(|&(raw, ..)| raw == fd.as_raw_fd()) else {
            return Err(io::Error::from_raw_os_error(nix::libc::ENOENT));
        };
        let (_, gsi, _) = routes.irqfds[at];
        self.vm.unregister_irqfd(fd, gsi).map_err(kvm_error("KVM_IRQFD (deassign)"))?;
        let binding = routes.irqfds.remove(at);
        // The route goes too; if KVM refuses the smaller table, the GSI stays taken.
        self.set_routing(&routes).inspect_err(|_| routes.irqfds.insert(at, binding))
    }
}

/// The kernel's local APICs, as the userspace I/O APIC and PIC reach them (`--kernel-apic`):
/// yakvm's module, or KVM's split irqchip.
pub trait KernelApics: Send + Sync {
    /// Sends an interrupt message (MSI address, data) to the local APICs, from any thread
    /// (yakvm's `SIGNAL_MSI`, `KVM_SIGNAL_MSI`): how many took it.
    fn signal_msi(&self, address: u64, data: u32) -> io::Result<u32>;
    /// The I/O APIC's messages now, by pin (`None`: the entry has none): KVM reports an
    /// EOI (`Exit::IoapicEoi`) only of the level-triggered vectors it finds there, so it
    /// must be told whenever the guest changes an entry (`KVM_SET_GSI_ROUTING`, GSIs 0-23).
    /// yakvm's module reports every level-triggered EOI: nothing to do.
    fn set_ioapic_routes(&self, routes: &[Option<(u64, u32)>]) -> io::Result<()> {
        let _ = routes;
        Ok(())
    }
}

/// How the machine keeps the kernel's APICs.
pub type KernelApicsHandle = Arc<dyn KernelApics>;

struct YakvmApics(Arc<sys::Vm>);

impl KernelApics for YakvmApics {
    fn signal_msi(&self, address: u64, data: u32) -> io::Result<u32> {
        self.0.signal_msi(&abi::Msi { address, data, _pad: 0 })
    }
}

struct KvmApics(Arc<KvmVm>);

impl KernelApics for KvmApics {
    fn signal_msi(&self, address: u64, data: u32) -> io::Result<u32> {
        let msi = kvm_bindings::kvm_msi { address_lo: address as u32, address_hi: (address >> 32) as u32, data, ..Default::default() };
        let n = self.0.vm.signal_msi(msi).map_err(kvm_error("KVM_SIGNAL_MSI"))?;
        Ok(n.max(0) as u32)
    }
    fn set_ioapic_routes(&self, pins: &[Option<(u64, u32)>]) -> io::Result<()> {
        let mut routes = self.0.lock_routes();
        let old = std::mem::replace(&mut routes.ioapic, pins.iter().take(IOAPIC_GSIS as usize).copied().collect());
        self.0.set_routing(&routes).inspect_err(|_| routes.ioapic = old)
    }
}

/// What `create` makes: the VM, its vCPUs, and the way to its kernel APICs if it has them.
pub type Created = (VmHandle, Vec<Box<dyn Vcpu>>, Option<KernelApicsHandle>);

/// A VM of either hypervisor with `vcpus` vCPUs (1 to `abi::MAX_VCPUS`; index i has
/// APIC id i, 0 is the bootstrap processor) and `mem` as its RAM at address 0. Keep
/// `mem` alive as long as this (the machine owns both). `lapic`: the vCPUs have local
/// APICs, emulated in userspace (CPUID's APIC bit; on yakvm also the IA32_APIC_BASE MSR,
/// `ENABLE_LAPIC`). OUTs to the ports of `coalesced` (`(port, len)` zones) do not exit:
/// the hypervisor lists them for `drain_coalesced` (yakvm's `SET_COALESCED_IO`, KVM's
/// coalesced PIO).
pub fn create(
    kind: Kind,
    yakvm_device: &str,
    mem: &Arc<GuestMemory>,
    coalesced: &[(u16, u16)],
    vcpus: u32,
    lapic: bool,
    kernel_apic: bool,
) -> Result<Created, Error> {
    if coalesced.len() > abi::COALESCED_ZONES {
        return Err(Error::Kvm(format!("at most {} coalesced port zones", abi::COALESCED_ZONES)));
    }
    if !(1..=abi::MAX_VCPUS).contains(&vcpus) {
        return Err(Error::Kvm(format!("{vcpus} vCPUs: 1 to {} are possible", abi::MAX_VCPUS)));
    }
    match kind {
        Kind::Yakvm => {
            let dev = sys::Device::open(yakvm_device)?;
            let version = dev.api_version()?;
            if version != abi::API_VERSION {
                return Err(Error::AbiVersion(version, abi::API_VERSION));
            }
            let vm = Arc::new(dev.create_vm()?);
            vm.add_memory(0, 0, mem)?;
            let kernel_apic = lapic && kernel_apic;
            if kernel_apic {
                vm.enable_kernel_apic()?;
            } else if lapic {
                vm.enable_lapic()?;
            }
            let mut zones = abi::CoalescedIo::default();
            for (zone, &(port, len)) in zones.zones.iter_mut().zip(coalesced) {
                *zone = abi::CoalescedZone { port, len };
            }
            let mut list: Vec<Box<dyn Vcpu>> = Vec::new();
            for _ in 0..vcpus {
                let mut vcpu = vm.create_vcpu()?;
                // The module puts the registers in the run page at every exit: MMIO
                // emulation reads and sets them there, without ioctls.
                vcpu.run_page().sync_valid = abi::sync::ALL;
                vcpu.set_coalesced_io(&zones)?;
                list.push(Box::new(YakvmVcpu { vcpu, synced: false, mem: mem.clone(), mmio: Mmio::None }));
            }
            let apics = kernel_apic.then(|| Arc::new(YakvmApics(vm.clone())) as KernelApicsHandle);
            Ok((Arc::new(YakvmVm(vm)), list, apics))
        }
        Kind::Kvm => {
            let kvm = kvm_ioctls::Kvm::new().map_err(|e| Error::Kvm(format!("cannot open /dev/kvm: {e} (is kvm_amd loaded?)")))?;
            let vm = kvm.create_vm().map_err(|e| Error::Kvm(format!("KVM_CREATE_VM: {e}")))?;
            let split_irqchip = lapic && kernel_apic;
            if split_irqchip {
                enable_split_irqchip(&vm)?;
            }
            sys::kvm::add_memory(&vm, 0, 0, mem)?;
            for &(port, len) in coalesced {
                vm.register_coalesced_mmio(kvm_ioctls::IoEventAddress::Pio(port.into()), len.into())
                    .map_err(|e| Error::Kvm(format!("KVM_REGISTER_COALESCED_MMIO (port {port:#x}): {e}")))?;
            }
            // KVM's coalesced ring is the VM's: its vCPUs take turns to drain it.
            let ring = Arc::new(Mutex::new(()));
            let mut list: Vec<Box<dyn Vcpu>> = Vec::new();
            // KVM's local APICs have TSC-deadline mode where KVM says so (yakvm's have it).
            let tsc_deadline = split_irqchip && vm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
            for i in 0..vcpus {
                let fd = vm.create_vcpu(i.into()).map_err(|e| Error::Kvm(format!("KVM_CREATE_VCPU {i}: {e}")))?;
                fd.set_cpuid2(&kvm_cpuid(i, vcpus, lapic, split_irqchip, tsc_deadline)?).map_err(|e| Error::Kvm(format!("KVM_SET_CPUID2: {e}")))?;
                if split_irqchip && i == 0 {
                    bsp_virtual_wire(&fd)?;
                }
                let mut vcpu = sys::kvm::Vcpu::new(fd);
                if !coalesced.is_empty() {
                    vcpu.map_coalesced_ring()?;
                }
                list.push(Box::new(KvmVcpu { vcpu, ring: ring.clone(), split_irqchip }));
            }
            let vm = Arc::new(KvmVm { vm, _kvm: kvm, split_irqchip, routes: Mutex::new(GsiRoutes::default()) });
            let apics = split_irqchip.then(|| Arc::new(KvmApics(vm.clone())) as KernelApicsHandle);
            Ok((vm, list, apics))
        }
    }
}

/// KVM's split irqchip (`KVM_CAP_SPLIT_IRQCHIP`, Documentation/virt/kvm/api.rst): the
/// local APICs in KVM (with INIT, SIPI, HLT and their timers), the PIC and the I/O APIC
/// here, its [`IOAPIC_GSIS`] pins reserved at the bottom of the GSI routes. Before any
/// vCPU exists (KVM refuses it after).
fn enable_split_irqchip(vm: &kvm_ioctls::VmFd) -> Result<(), Error> {
    let missing = |what: &str| Error::Kvm(format!("--kernel-apic on KVM needs {what}, which this KVM does not have"));
    for (cap, name) in [
        (kvm_ioctls::Cap::SplitIrqchip, "KVM_CAP_SPLIT_IRQCHIP"),
        (kvm_ioctls::Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
        (kvm_ioctls::Cap::Irqfd, "KVM_CAP_IRQFD"),
        (kvm_ioctls::Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
    ] {
        if !vm.check_extension(cap) {
            return Err(missing(name));
        }
    }
    let mut cap = kvm_bindings::kvm_enable_cap { cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
    cap.args[0] = IOAPIC_GSIS.into();
    vm.enable_cap(&cap).map_err(|e| Error::Kvm(format!("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP): {e}")))
}

/// The bootstrap processor's local APIC as yakvm's starts (`abi/src/lapic.rs`, `Lapic::new`:
/// as a BIOS hands it over, in virtual-wire mode): software-enabled (SVR bit 8), LINT0
/// ExtINT and LINT1 NMI, unmasked. KVM's starts software-disabled with LINT0 ExtINT (its
/// `LINT0_REENABLED` quirk), where a guest cannot unmask an LVT again once it masked one
/// (SDM 11.4.7.2); set through `KVM_SET_LAPIC` so that a guest sees the same machine on both.
fn bsp_virtual_wire(fd: &kvm_ioctls::VcpuFd) -> Result<(), Error> {
    const SVR: usize = 0xf0;
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const SVR_ENABLE: u32 = 1 << 8;
    const EXTINT: u32 = 0b111 << 8;
    const NMI: u32 = 0b100 << 8;
    let mut state = fd.get_lapic().map_err(|e| Error::Kvm(format!("KVM_GET_LAPIC: {e}")))?;
    let reg = |state: &kvm_bindings::kvm_lapic_state, at: usize| u32::from_le_bytes(std::array::from_fn(|i| state.regs[at + i] as u8));
    let set = |state: &mut kvm_bindings::kvm_lapic_state, at: usize, value: u32| {
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            state.regs[at + i] = byte as _;
        }
    };
    let svr = reg(&state, SVR) | SVR_ENABLE;
    set(&mut state, SVR, svr);
    set(&mut state, LVT_LINT0, EXTINT);
    set(&mut state, LVT_LINT1, NMI);
    fd.set_lapic(&state).map_err(|e| Error::Kvm(format!("KVM_SET_LAPIC: {e}")))
}

/// yakvm: why an MMIO access could not be emulated.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("MMIO at {gpa:#x}: cannot fetch the instruction at rip {rip:#x} (not mapped in guest RAM)")]
    Fetch { gpa: u64, rip: u64 },
    #[error(transparent)]
    Insn(#[from] insn::InsnError),
    #[error("MMIO at {gpa:#x}: the instruction at rip {rip:#x} made no access outside RAM")]
    NoAccess { gpa: u64, rip: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("module ABI version {0}, this yakvm speaks {1}")]
    AbiVersion(u32, u32),
    #[error("{0}")]
    Kvm(String),
}

/// yakvm's vCPU: the run page is the exit, and holds the registers (`abi::SyncRegs`).
struct YakvmVcpu {
    vcpu: sys::Vcpu,
    /// A RUN has returned: the run page holds the registers (until then, the ioctls).
    synced: bool,
    /// Guest RAM, where an MMIO instruction is fetched from when the CPU did not give
    /// its bytes.
    mem: Arc<GuestMemory>,
    /// The MMIO access of the last exit, decoded.
    mmio: Mmio,
}

/// An MMIO exit's instruction, as yakvm's backend emulates it.
enum Mmio {
    None,
    Pending(Box<PendingMmio>),
    Failed { gpa: u64, error: MmioError },
}

/// One device access an instruction asks of the machine.
struct Access {
    gpa: u64,
    write: bool,
    /// The bytes written, or those the machine fills in for a read.
    data: [u8; 8],
    size: usize,
}

/// An instruction that touched MMIO, carried out by replay (as KVM's emulator does): each
/// time the machine has done one device access, `insn::execute` runs the instruction again
/// from the registers of the exit, the device reads done so far answered from `reads`,
/// the writes done skipped, until it needs an access not yet done (the next exit, handed
/// out by `run` without entering the guest) or has finished. RAM accesses go straight to
/// guest RAM each time (the same values again).
struct PendingMmio {
    insn: insn::MmioInsn,
    /// The faulting guest-physical address (the instruction's memory operand).
    gpa: u64,
    regs: abi::Regs,
    sregs: abi::Sregs,
    /// Device reads done, in order.
    reads: Vec<[u8; 8]>,
    /// Device writes done.
    writes: usize,
    /// The access the machine is asked for now.
    access: Access,
    /// `access` is a further access of an instruction already under way: the next `run`
    /// returns it at once.
    again: bool,
}

/// The memory `insn::execute` sees during a replay.
struct Replay<'a> {
    mem: &'a GuestMemory,
    sregs: &'a abi::Sregs,
    reads: &'a [[u8; 8]],
    writes: usize,
    read_next: usize,
    write_next: usize,
    /// The first device access not done yet: where the replay stopped.
    needed: Option<Access>,
}

/// A replay stops at a device access not done yet.
struct NotYet;

impl insn::Memory for Replay<'_> {
    type Error = NotYet;
    fn read(&mut self, gpa: u64, data: &mut [u8]) -> Result<(), NotYet> {
        if self.mem.read(gpa, data).is_some() {
            return Ok(());
        }
        if let Some(done) = self.reads.get(self.read_next) {
            data.copy_from_slice(&done[..data.len()]);
            self.read_next += 1;
            return Ok(());
        }
        self.needed = Some(Access { gpa, write: false, data: [0; 8], size: data.len() });
        Err(NotYet)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), NotYet> {
        if self.mem.write(gpa, data).is_some() {
            return Ok(());
        }
        if self.write_next < self.writes {
            self.write_next += 1;
            return Ok(());
        }
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        self.needed = Some(Access { gpa, write: true, data: bytes, size: data.len() });
        Err(NotYet)
    }
    fn translate(&mut self, va: u64) -> Option<u64> {
        mmu::translate(self.mem, self.sregs, va)
    }
}

/// Where a replay got to.
enum Step {
    /// The instruction is done: the registers after it.
    Done(abi::Regs),
    /// It needs this device access first.
    Needs(Access),
}

impl PendingMmio {
    /// The machine has done `access` (a read's bytes are in its data): the registers as
    /// the instruction leaves them, or `None` with `access` now the next one it needs.
    fn advance(&mut self, mem: &GuestMemory) -> Result<Option<abi::Regs>, MmioError> {
        if self.access.write {
            self.writes += 1;
        } else {
            self.reads.push(self.access.data);
        }
        match self.replay(mem)? {
            Step::Done(regs) => Ok(Some(regs)),
            Step::Needs(access) => {
                self.access = access;
                self.again = true;
                Ok(None)
            }
        }
    }

    /// Runs the instruction from the exit's registers with the accesses done so far.
    fn replay(&self, mem: &GuestMemory) -> Result<Step, MmioError> {
        let mut regs = self.regs;
        let mut m = Replay { mem, sregs: &self.sregs, reads: &self.reads, writes: self.writes, read_next: 0, write_next: 0, needed: None };
        match insn::execute(&self.insn, &mut regs, &self.sregs, self.gpa, &mut m) {
            Ok(()) => Ok(Step::Done(regs)),
            Err(insn::ExecError::Memory(NotYet)) => Ok(Step::Needs(m.needed.take().expect("a replay stops at an access"))),
            Err(insn::ExecError::Unmapped(va)) => Err(insn::InsnError::Unmapped { text: format!("{:?}", self.insn.op), rip: self.regs.rip, va }.into()),
        }
    }
}

impl YakvmVcpu {
    /// Decodes the instruction behind the MMIO exit in the run page.
    fn decode_mmio(&self) -> Mmio {
        let run = self.vcpu.run_page_ref();
        let given = &run.mmio.insn_bytes[..(run.mmio.insn_len as usize).min(15)];
        decode_mmio(&self.mem, run.mmio.gpa, given, &run.sync_regs.regs, &run.sync_regs.sregs)
    }
}

/// The MMIO access at `gpa` of the instruction at CS:RIP (its bytes `given` by the CPU,
/// else fetched from guest RAM through the guest's page tables): the instruction and the
/// first device access it makes.
fn decode_mmio(mem: &GuestMemory, gpa: u64, given: &[u8], regs: &abi::Regs, sregs: &abi::Sregs) -> Mmio {
    let mut bytes = [0u8; 15];
    let n = if !given.is_empty() {
        bytes[..given.len()].copy_from_slice(given);
        given.len()
    } else {
        mmu::read_virt(mem, sregs, sregs.cs.base.wrapping_add(regs.rip), &mut bytes)
    };
    if n == 0 {
        return Mmio::Failed { gpa, error: MmioError::Fetch { gpa, rip: regs.rip } };
    }
    let bitness = match (sregs.cs.attrib >> 9 & 1, sregs.cs.attrib >> 10 & 1) {
        (1, _) => 64,
        (_, 1) => 32,
        _ => 16,
    };
    let insn = match insn::decode(&bytes[..n], bitness, regs.rip) {
        Ok(insn) => insn,
        Err(e) => return Mmio::Failed { gpa, error: e.into() },
    };
    let mut p = PendingMmio {
        insn,
        gpa,
        regs: *regs,
        sregs: *sregs,
        reads: Vec::new(),
        writes: 0,
        access: Access { gpa, write: false, data: [0; 8], size: 0 },
        again: false,
    };
    match p.replay(mem) {
        Ok(Step::Needs(access)) => {
            p.access = access;
            Mmio::Pending(Box::new(p))
        }
        // The exit's address is outside RAM and is the instruction's memory operand: the
        // first run always reaches it.
        Ok(Step::Done(_)) => Mmio::Failed { gpa, error: MmioError::NoAccess { gpa, rip: regs.rip } },
        Err(error) => Mmio::Failed { gpa, error },
    }
}

impl Vcpu for YakvmVcpu {
    fn run(&mut self) -> io::Result<bool> {
        // An instruction under way needs another device access: that is the exit.
        if matches!(&self.mmio, Mmio::Pending(p) if p.again) {
            return Ok(true);
        }
        self.mmio = Mmio::None;
        let ran = self.vcpu.run();
        // Every return from RUN, interrupted or not, fills the run page's registers.
        self.synced = ran.is_ok();
        if matches!(ran, Ok(true)) && self.vcpu.run_page_ref().exit_reason == abi::exit::MMIO {
            self.mmio = self.decode_mmio();
        }
        ran
    }

    fn complete_mmio(&mut self) -> io::Result<()> {
        let Mmio::Pending(mut p) = std::mem::replace(&mut self.mmio, Mmio::None) else {
            return Ok(());
        };
        match p.advance(&self.mem) {
            Ok(Some(regs)) => self.set_regs(&regs),
            Ok(None) => {
                self.mmio = Mmio::Pending(p);
                Ok(())
            }
            // Part of it is done: the instruction cannot be restarted.
            Err(error) => Err(io::Error::other(error.to_string())),
        }
    }

    fn exit(&mut self) -> Exit<'_> {
        if self.vcpu.run_page_ref().exit_reason == abi::exit::MMIO {
            return match &mut self.mmio {
                Mmio::Pending(p) => Exit::Mmio { gpa: p.access.gpa, write: p.access.write, data: &mut p.access.data[..p.access.size] },
                Mmio::Failed { gpa, error } => Exit::MmioFailed { gpa: *gpa, error },
                Mmio::None => Exit::Other("an MMIO exit with no decoded access".into()),
            };
        }
        let run = self.vcpu.run_page();
        match run.exit_reason {
            abi::exit::IO => {
                let io = run.io;
                let len = io.size as usize * io.count as usize;
                Exit::Io { port: io.port, size: io.size, out: io.direction == abi::IO_OUT, data: &mut run.data[..len] }
            }
            abi::exit::HYPERCALL => Exit::Hypercall(&mut run.hypercall),
            abi::exit::HLT => Exit::Hlt,
            abi::exit::IRQ_WINDOW_OPEN => Exit::IrqWindowOpen,
            abi::exit::SHUTDOWN => Exit::Shutdown { rip: Some(run.hw.rip) },
            abi::exit::FAIL_ENTRY => Exit::FailEntry { reason: run.hw.exit_code },
            abi::exit::UNKNOWN => Exit::Unhandled(run.hw),
            abi::exit::DEBUG => Exit::Debug(run.debug),
            abi::exit::IOAPIC_EOI => Exit::IoapicEoi { vector: run.apic.vector as u8 },
            abi::exit::APIC_INIT => Exit::ApicInit,
            abi::exit::APIC_SIPI => Exit::ApicSipi { vector: run.apic.vector as u8 },
            abi::exit::APIC_WAKE => Exit::ApicWake,
            other => Exit::Other(format!("unknown exit reason {other} from the module")),
        }
    }

    fn regs(&self) -> io::Result<abi::Regs> {
        if self.synced {
            return Ok(self.vcpu.run_page_ref().sync_regs.regs);
        }
        self.vcpu.regs()
    }
    fn set_regs(&mut self, regs: &abi::Regs) -> io::Result<()> {
        if !self.synced {
            return self.vcpu.set_regs(regs);
        }
        let run = self.vcpu.run_page();
        run.sync_regs.regs = *regs;
        run.sync_dirty |= abi::sync::REGS;
        Ok(())
    }
    fn sregs(&self) -> io::Result<abi::Sregs> {
        if self.synced {
            return Ok(self.vcpu.run_page_ref().sync_regs.sregs);
        }
        self.vcpu.sregs()
    }
    fn set_sregs(&mut self, sregs: &abi::Sregs) -> io::Result<()> {
        if !self.synced {
            return self.vcpu.set_sregs(sregs);
        }
        let run = self.vcpu.run_page();
        run.sync_regs.sregs = *sregs;
        run.sync_dirty |= abi::sync::SREGS;
        Ok(())
    }
    fn interrupt(&mut self, vector: u8) -> io::Result<()> {
        self.vcpu.interrupt(vector)?;
        // The run page says what the last exit saw; one is queued now.
        self.vcpu.run_page().ready_for_interrupt_injection = 0;
        Ok(())
    }
    fn nmi(&mut self) -> io::Result<()> {
        self.vcpu.nmi()
    }
    fn ready_for_interrupt(&mut self) -> bool {
        self.vcpu.run_page().ready_for_interrupt_injection != 0
    }
    fn if_flag(&mut self) -> bool {
        self.vcpu.run_page().if_flag != 0
    }
    fn request_interrupt_window(&mut self, on: bool) {
        self.vcpu.run_page().request_interrupt_window = u8::from(on);
    }
    fn kickable(&mut self) -> io::Result<Kicker> {
        self.vcpu.kickable()
    }
    fn clear_kick(&mut self) {
        self.vcpu.clear_kick()
    }
    fn stats(&self) -> Option<abi::ExitStats> {
        self.vcpu.stats().ok()
    }
    fn msr_stats(&self) -> Option<abi::MsrStats> {
        self.vcpu.msr_stats().ok()
    }
    fn set_guest_debug(&mut self, control: u32) -> io::Result<()> {
        self.vcpu.set_guest_debug(control)
    }
    fn apic_access(&mut self, offset: u64, write: bool, data: &mut [u8]) -> io::Result<Option<u8>> {
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let offset = u32::try_from(offset).map_err(io::Error::other)?;
        let mut access = abi::ApicAccess { offset, size: data.len() as u32, is_write: write.into(), value: u32::from_le_bytes(bytes) };
        self.vcpu.apic_access(&mut access)?;
        if write {
            return Ok((access.value & 0x100 != 0).then_some(access.value as u8));
        }
        let value = access.value.to_le_bytes();
        for (k, byte) in data.iter_mut().enumerate() {
            *byte = value.get(k).copied().unwrap_or(0);
        }
        Ok(None)
    }

    fn apic_stats(&self) -> Option<abi::ApicStats> {
        self.vcpu.apic_stats().ok()
    }

    fn apic_events(&self) -> io::Result<u32> {
        self.vcpu.apic_events()
    }

    fn apic_accepts_pic(&mut self) -> Option<bool> {
        // Every return from RUN (a signal's too) fills in the run page's APIC status.
        self.synced.then(|| self.vcpu.run_page_ref().apic_status & abi::apic_status::ACCEPTS_PIC != 0)
    }

    fn drain_coalesced(&mut self, apply: &mut dyn FnMut(u16, &[u8])) {
        let run = self.vcpu.run_page();
        let n = (run.coalesced_count as usize).min(abi::COALESCED_ENTRIES);
        for w in &run.coalesced[..n] {
            let size = usize::from(w.size).clamp(1, 4);
            apply(w.port, &w.value.to_le_bytes()[..size]);
        }
        run.coalesced_count = 0;
    }
}

/// KVM's vCPU: `kvm_run` describes the exit; registers through KVM's own structures.
struct KvmVcpu {
    vcpu: sys::kvm::Vcpu,
    /// Held while draining the VM's coalesced ring (shared by its vCPUs).
    ring: Arc<Mutex<()>>,
    /// The local APIC is KVM's (`--kernel-apic`).
    split_irqchip: bool,
}

fn kvm_error(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> io::Error {
    move |e| io::Error::new(io::Error::from_raw_os_error(e.errno()).kind(), format!("{call}: {e}"))
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> io::Result<bool> {
        self.vcpu.run()
    }

    fn complete_mmio(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn exit(&mut self) -> Exit<'_> {
        use sys::kvm::Exit as K;
        let (exit, data) = self.vcpu.exit();
        match exit {
            K::Io { port, size, out } => Exit::Io { port, size, out, data },
            K::MmioRead { gpa } => Exit::Mmio { gpa, write: false, data },
            K::MmioWrite { gpa } => Exit::Mmio { gpa, write: true, data },
            K::Hlt => Exit::Hlt,
            K::IrqWindowOpen => Exit::IrqWindowOpen,
            K::IoapicEoi { vector } => Exit::IoapicEoi { vector },
            K::Shutdown => Exit::Shutdown { rip: None },
            K::FailEntry { reason } => Exit::FailEntry { reason },
            K::InternalError { suberror } => Exit::Other(format!("KVM internal error (suberror {suberror})")),
            K::Other { reason } => Exit::Other(format!("KVM exit reason {reason}, which yakvm does not handle")),
        }
    }

    fn regs(&self) -> io::Result<abi::Regs> {
        let r = self.vcpu.fd().get_regs().map_err(kvm_error("KVM_GET_REGS"))?;
        Ok(abi::Regs {
            rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi, rsp: r.rsp,
            rbp: r.rbp, r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13,
            r14: r.r14, r15: r.r15, rip: r.rip, rflags: r.rflags,
        })
    }

    fn set_regs(&mut self, r: &abi::Regs) -> io::Result<()> {
        let regs = kvm_bindings::kvm_regs {
            rax: r.rax, rbx: r.rbx, rcx: r.rcx, rdx: r.rdx, rsi: r.rsi, rdi: r.rdi, rsp: r.rsp,
            rbp: r.rbp, r8: r.r8, r9: r.r9, r10: r.r10, r11: r.r11, r12: r.r12, r13: r.r13,
            r14: r.r14, r15: r.r15, rip: r.rip, rflags: r.rflags | 2,
        };
        self.vcpu.fd().set_regs(&regs).map_err(kvm_error("KVM_SET_REGS"))
    }

    fn sregs(&self) -> io::Result<abi::Sregs> {
        let s = self.vcpu.fd().get_sregs().map_err(kvm_error("KVM_GET_SREGS"))?;
        let dt = |d: &kvm_bindings::kvm_dtable| abi::DescTable { base: d.base, limit: d.limit.into(), _pad: 0 };
        Ok(abi::Sregs {
            cs: from_kvm_segment(&s.cs), ds: from_kvm_segment(&s.ds), es: from_kvm_segment(&s.es),
            fs: from_kvm_segment(&s.fs), gs: from_kvm_segment(&s.gs), ss: from_kvm_segment(&s.ss),
            tr: from_kvm_segment(&s.tr), ldt: from_kvm_segment(&s.ldt),
            gdt: dt(&s.gdt), idt: dt(&s.idt),
            cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4, efer: s.efer,
        })
    }

    fn set_sregs(&mut self, r: &abi::Sregs) -> io::Result<()> {
        let mut s = self.vcpu.fd().get_sregs().map_err(kvm_error("KVM_GET_SREGS"))?;
        let dt = |d: &abi::DescTable| kvm_bindings::kvm_dtable { base: d.base, limit: d.limit as u16, padding: [0; 3] };
        s.cs = to_kvm_segment(&r.cs);
        s.ds = to_kvm_segment(&r.ds);
        s.es = to_kvm_segment(&r.es);
        s.fs = to_kvm_segment(&r.fs);
        s.gs = to_kvm_segment(&r.gs);
        s.ss = to_kvm_segment(&r.ss);
        s.tr = to_kvm_segment(&r.tr);
        s.ldt = to_kvm_segment(&r.ldt);
        s.gdt = dt(&r.gdt);
        s.idt = dt(&r.idt);
        (s.cr0, s.cr2, s.cr3, s.cr4, s.efer) = (r.cr0, r.cr2, r.cr3, r.cr4, r.efer);
        self.vcpu.fd().set_sregs(&s).map_err(kvm_error("KVM_SET_SREGS"))
    }

    fn interrupt(&mut self, vector: u8) -> io::Result<()> {
        self.vcpu.interrupt(vector)?;
        // The run page says what the last exit saw; one is queued now.
        self.vcpu.run_page().ready_for_interrupt_injection = 0;
        Ok(())
    }
    fn nmi(&mut self) -> io::Result<()> {
        self.vcpu.nmi()
    }
    fn ready_for_interrupt(&mut self) -> bool {
        self.vcpu.run_page().ready_for_interrupt_injection != 0
    }
    fn if_flag(&mut self) -> bool {
        self.vcpu.run_page().if_flag != 0
    }
    fn request_interrupt_window(&mut self, on: bool) {
        self.vcpu.run_page().request_interrupt_window = u8::from(on);
    }
    fn kickable(&mut self) -> io::Result<Kicker> {
        self.vcpu.kickable()
    }
    fn clear_kick(&mut self) {
        self.vcpu.clear_kick()
    }
    fn stats(&self) -> Option<abi::ExitStats> {
        None
    }
    fn kvm_stats(&self) -> Vec<(String, u64)> {
        self.vcpu.stats_fd().and_then(|f| read_kvm_stats(&f)).unwrap_or_default()
    }
    fn msr_stats(&self) -> Option<abi::MsrStats> {
        None
    }
    fn set_guest_debug(&mut self, _control: u32) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "--gdb and --step-trace are not supported on --hypervisor kvm (yakvm only)"))
    }
    fn apic_accepts_pic(&mut self) -> Option<bool> {
        // KVM decides with LINT0 itself (see the trait).
        self.split_irqchip.then_some(true)
    }
    /// KVM's local APIC handles its own page; an access that reaches here found it
    /// disabled (IA32_APIC_BASE) or moved: nothing is there (reads all ones, writes lost).
    fn apic_access(&mut self, _offset: u64, write: bool, data: &mut [u8]) -> io::Result<Option<u8>> {
        if !self.split_irqchip {
            return Err(io::Error::other("no kernel APIC"));
        }
        if !write {
            data.fill(0xff);
        }
        Ok(None)
    }
    fn drain_coalesced(&mut self, apply: &mut dyn FnMut(u16, &[u8])) {
        // A thread that panicked while draining left the ring consistent (KVM's indices).
        let _ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((port, data, len)) = self.vcpu.coalesced_write() {
            apply(port, &data[..len]);
        }
    }
}

/// Reads KVM's binary statistics (Documentation/virt/kvm/api.rst, `KVM_GET_STATS_FD`): a
/// header, descriptors with names, then the values; the cumulative and instant counters
/// of 64-bit size, by name.
fn read_kvm_stats(file: &std::fs::File) -> io::Result<Vec<(String, u64)>> {
    use std::os::unix::fs::FileExt;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let mut header = [0u8; 24];
    file.read_exact_at(&mut header, 0)?;
    let (name_size, count) = (u32_at(&header, 4) as usize, u32_at(&header, 8) as usize);
    let (desc_offset, data_offset) = (u32_at(&header, 16) as u64, u32_at(&header, 20) as u64);
    // A descriptor: flags, exponent (i16), size (u16), offset, bucket_size, then the name.
    let desc_size = 16 + name_size;
    let mut descs = vec![0u8; desc_size * count.min(1024)];
    file.read_exact_at(&mut descs, desc_offset)?;
    let mut stats = Vec::new();
    for d in descs.chunks_exact(desc_size) {
        let size = u16::from_le_bytes([d[6], d[7]]);
        let unit = u32_at(d, 0) >> 4 & 0xf; // KVM_STATS_UNIT_*: 0 = none (a count)
        if size != 1 || unit != 0 {
            continue;
        }
        let mut value = [0u8; 8];
        file.read_exact_at(&mut value, data_offset + u64::from(u32_at(d, 8)))?;
        let name = &d[16..];
        let name = String::from_utf8_lossy(&name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())]).into_owned();
        stats.push((name, u64::from_le_bytes(value)));
    }
    Ok(stats)
}

/// yakvm's packed attributes (the VMCB's form, see `abi::Segment`) from KVM's fields.
fn from_kvm_segment(s: &kvm_bindings::kvm_segment) -> abi::Segment {
    let attrib = u16::from(s.type_ & 0xf)
        | u16::from(s.s & 1) << 4
        | u16::from(s.dpl & 3) << 5
        | u16::from(s.present & 1) << 7
        | u16::from(s.avl & 1) << 8
        | u16::from(s.l & 1) << 9
        | u16::from(s.db & 1) << 10
        | u16::from(s.g & 1) << 11;
    abi::Segment { selector: s.selector, attrib, limit: s.limit, base: s.base }
}

fn to_kvm_segment(s: &abi::Segment) -> kvm_bindings::kvm_segment {
    let bit = |n: u16| ((s.attrib >> n) & 1) as u8;
    kvm_bindings::kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (s.attrib & 0xf) as u8,
        present: bit(7),
        dpl: ((s.attrib >> 5) & 3) as u8,
        db: bit(10),
        s: bit(4),
        l: bit(9),
        g: bit(11),
        avl: bit(8),
        // A segment that is not present is unusable (as KVM's SVM code reports it).
        unusable: 1 - bit(7),
        padding: 0,
    }
}

/// The CPUID table yakvm's module answers with (`abi::cpuid`), computed from this CPU's
/// answers, for KVM's vCPU `id` (its APIC id) of `vcpus`: a guest sees the same CPU on both
/// (the APIC bit only with `lapic`, no KVM signature). With KVM's local APICs
/// (`kernel_apic`) what yakvm's kernel APIC adds (kmod/svm/vcpu/apic.rs, `cpuid_bits`):
/// x2APIC (CPUID.1:ECX[21]) and the x2APIC topology leaf 0xb (one thread per core, the
/// vCPUs as the cores of one package), the maximum basic leaf at least 0xb; and with
/// `tsc_deadline` (KVM's `KVM_CAP_TSC_DEADLINE_TIMER`) the TSC-deadline timer
/// (CPUID.1:ECX[24]), which yakvm's kernel APIC offers too.
fn kvm_cpuid(id: u32, vcpus: u32, lapic: bool, kernel_apic: bool, tsc_deadline: bool) -> io::Result<kvm_bindings::CpuId> {
    const ECX_X2APIC: u32 = 1 << 21;
    const ECX_TSC_DEADLINE: u32 = 1 << 24;
    const LEAF_TOPOLOGY: u32 = 0xb;
    const LEVEL_SMT: u32 = 1 << 8;
    const LEVEL_CORE: u32 = 2 << 8;
    let mut entries: Vec<kvm_bindings::kvm_cpuid_entry2> = LEAVES
        .iter()
        .map(|&leaf| {
            let host = std::arch::x86_64::__cpuid_count(leaf, 0);
            let host = CpuidResult { eax: host.eax, ebx: host.ebx, ecx: host.ecx, edx: host.edx };
            let mut r = guest_cpuid(leaf, 0, id, lapic, host);
            match leaf {
                0 if kernel_apic => r.eax = r.eax.max(LEAF_TOPOLOGY),
                1 if kernel_apic => {
                    r.ecx |= ECX_X2APIC;
                    if tsc_deadline {
                        r.ecx |= ECX_TSC_DEADLINE;
                    }
                }
                _ => {}
            }
            let flags = if leaf == 7 { kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 };
            kvm_bindings::kvm_cpuid_entry2 { function: leaf, index: 0, flags, eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx, ..Default::default() }
        })
        .collect();
    if kernel_apic {
        let id_bits = abi::MAX_VCPUS.next_power_of_two().trailing_zeros();
        let topology = |index: u32, eax, ebx, ecx| kvm_bindings::kvm_cpuid_entry2 {
            function: LEAF_TOPOLOGY,
            index,
            flags: kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
            eax,
            ebx,
            ecx,
            edx: id,
            ..Default::default()
        };
        entries.push(topology(0, 0, 1, LEVEL_SMT));
        entries.push(topology(1, id_bits, vcpus, 1 | LEVEL_CORE));
        // The first invalid level: only its number in ECX (as yakvm's for any such).
        entries.push(topology(2, 0, 0, 2));
    }
    kvm_bindings::CpuId::from_entries(&entries).map_err(|e| io::Error::other(format!("CPUID table: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64-bit code, flat.
    fn long_mode() -> abi::Sregs {
        abi::Sregs { cs: abi::Segment { attrib: 0xa9b, ..Default::default() }, ..Default::default() }
    }

    fn pending(m: Mmio) -> PendingMmio {
        match m {
            Mmio::Pending(p) => *p,
            Mmio::Failed { error, .. } => panic!("not decoded: {error}"),
            Mmio::None => panic!("nothing"),
        }
    }

    #[test]
    fn an_mmio_store_gives_its_value_and_width_and_moves_rip() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        let regs = abi::Regs { rax: 0x1122_3344_5566_7788, rip: 0x1000, ..Default::default() };
        // mov [rbx], eax
        let mut p = pending(decode_mmio(&mem, 0xc000_0000, &[0x89, 0x03], &regs, &long_mode()));
        let a = &p.access;
        assert_eq!((a.gpa, a.write, &a.data[..a.size]), (0xc000_0000, true, &[0x88, 0x77, 0x66, 0x55][..]));
        assert_eq!(p.advance(&mem).unwrap(), Some(abi::Regs { rip: 0x1002, ..regs }));
    }

    #[test]
    fn an_mmio_load_fills_its_register_once_completed() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        let regs = abi::Regs { rcx: u64::MAX, rip: 0x2000, ..Default::default() };
        // movzx ecx, byte [rbx], fetched from RAM at RIP (the CPU gave no bytes; paging off)
        let sregs = abi::Sregs { cs: abi::Segment { attrib: 0xc9b, ..Default::default() }, ..Default::default() };
        mem.write(0x2000, &[0x0f, 0xb6, 0x0b]).unwrap();
        let mut p = pending(decode_mmio(&mem, 0xfee0_0030, &[], &regs, &sregs));
        assert_eq!((p.access.write, p.access.size), (false, 1));
        p.access.data[0] = 0x9a; // what the bus read
        let after = p.advance(&mem).unwrap().expect("one access");
        assert_eq!((after.rcx, after.rip), (0x9a, 0x2003));
    }

    #[test]
    fn a_read_modify_write_on_mmio_is_a_read_then_a_write() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        let regs = abi::Regs { rax: 0x0f, rip: 0x1000, ..Default::default() };
        // or [rbx], eax
        let mut p = pending(decode_mmio(&mem, 0xc000_0010, &[0x09, 0x03], &regs, &long_mode()));
        assert_eq!((p.access.gpa, p.access.write, p.access.size), (0xc000_0010, false, 4));
        p.access.data[..4].copy_from_slice(&0xf0u32.to_le_bytes());
        assert_eq!(p.advance(&mem).unwrap(), None, "the write is still to come");
        let a = &p.access;
        assert_eq!((a.gpa, a.write, &a.data[..a.size]), (0xc000_0010, true, &0xffu32.to_le_bytes()[..]));
        let after = p.advance(&mem).unwrap().expect("done");
        assert_eq!((after.rax, after.rip), (0x0f, 0x1002));
    }

    #[test]
    fn an_mmio_instruction_that_cannot_be_emulated_is_an_error() {
        let mem = GuestMemory::new(1 << 20).unwrap();
        let regs = abi::Regs { rip: 5, ..Default::default() };
        // cmove eax, [rax]
        let Mmio::Failed { error, .. } = decode_mmio(&mem, 0xc000_0000, &[0x0f, 0x44, 0x00], &regs, &long_mode()) else { panic!("decoded") };
        assert!(error.to_string().starts_with("cannot emulate 'cmove eax,[rax]'"), "{error}");
        // Nothing to fetch outside RAM.
        let regs = abi::Regs { rip: 2 << 20, ..Default::default() };
        let Mmio::Failed { error, .. } = decode_mmio(&mem, 0xc000_0000, &[], &regs, &long_mode()) else { panic!("decoded") };
        assert!(matches!(error, MmioError::Fetch { gpa: 0xc000_0000, rip: 0x20_0000 }), "{error}");
    }

    #[test]
    fn segments_convert_both_ways() {
        for attrib in [0x9b, 0x93, 0xa09b, 0xc093, 0x8b, 0x82, 0, 0x29b, 0xc9b, 0x4f3] {
            let seg = abi::Segment { selector: 0x10, attrib, limit: 0xffff, base: 0x1000 };
            assert_eq!(from_kvm_segment(&to_kvm_segment(&seg)), abi::Segment { attrib: attrib & 0xfff, ..seg });
        }
        assert_eq!(to_kvm_segment(&abi::Segment::default()).unusable, 1);
        assert_eq!(to_kvm_segment(&abi::Segment { attrib: 0x9b, ..Default::default() }).unusable, 0);
    }

    #[test]
    fn kvm_cpuid_has_the_apic_id_and_bit_asked_for() {
        let leaf1 = |id, lapic| {
            let table = kvm_cpuid(id, 4, lapic, false, false).unwrap();
            *table.as_slice().iter().find(|e| e.function == 1).unwrap()
        };
        assert_eq!(leaf1(3, true).ebx >> 24, 3);
        assert_eq!(leaf1(3, true).edx & (1 << 9), 1 << 9);
        assert_eq!(leaf1(0, false).ebx >> 24, 0);
        assert_eq!(leaf1(0, false).edx & (1 << 9), 0);
    }

    #[test]
    fn kvm_cpuid_with_kvms_local_apics_offers_x2apic_and_its_topology() {
        let table = kvm_cpuid(2, 4, true, true, true).unwrap();
        let entry = |function, index| *table.as_slice().iter().find(|e| e.function == function && e.index == index).unwrap();
        assert_eq!(entry(1, 0).ecx & (1 << 21), 1 << 21);
        assert_eq!(entry(1, 0).ecx & (1 << 24), 1 << 24, "TSC deadline timer");
        let no_deadline = kvm_cpuid(2, 4, true, true, false).unwrap();
        assert_eq!(no_deadline.as_slice().iter().find(|e| e.function == 1).unwrap().ecx & (1 << 24), 0);
        assert!(entry(0, 0).eax >= 0xb);
        let (smt, core) = (entry(0xb, 0), entry(0xb, 1));
        assert_eq!((smt.ebx, smt.ecx, smt.edx), (1, 1 << 8, 2));
        assert_eq!((core.ebx, core.ecx, core.edx), (4, 1 | 2 << 8, 2));
        assert_eq!(entry(0xb, 2).ecx, 2);
        let plain = kvm_cpuid(2, 4, true, false, false).unwrap();
        assert_eq!(plain.as_slice().iter().find(|e| e.function == 1).unwrap().ecx & (1 << 21), 0);
        assert!(!plain.as_slice().iter().any(|e| e.function == 0xb));
    }

    #[test]
    fn gsi_routes_put_the_ioapic_pins_first_and_irqfds_above() {
        let msi = |data| abi::Msi { address: 0xfee0_1000, data, _pad: 0 };
        let mut routes = GsiRoutes::default();
        assert_eq!(routes.free_gsi(), 24);
        routes.ioapic = vec![None; 24];
        routes.ioapic[2] = Some((0xfee0_0000, 0x30));
        routes.ioapic[9] = Some((0xfee0_0000, 0x8059 | 0x4000));
        routes.irqfds.push((7, routes.free_gsi(), msi(0x41)));
        routes.irqfds.push((8, routes.free_gsi(), msi(0x42)));
        routes.irqfds.push((9, routes.free_gsi(), msi(0x43)));
        assert_eq!(routes.irqfds.iter().map(|b| b.1).collect::<Vec<_>>(), [24, 25, 26]);
        // A freed GSI is the next one taken.
        routes.irqfds.remove(1);
        assert_eq!(routes.free_gsi(), 25);
        routes.irqfds.push((10, 25, msi(0x44)));
        assert_eq!(
            routes.table(),
            [(2, 0xfee0_0000, 0x30), (9, 0xfee0_0000, 0xc059), (24, 0xfee0_1000, 0x41), (25, 0xfee0_1000, 0x44), (26, 0xfee0_1000, 0x43)]
        );
    }
}
