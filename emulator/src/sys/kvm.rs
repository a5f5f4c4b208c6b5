//! KVM (`/dev/kvm`) for `--hypervisor kvm`, through rust-vmm's kvm-ioctls. Only what the
//! emulator's KVM backend needs that kvm-ioctls leaves unsafe or does not have is here.

use super::kick::{forget_kick_flag, kick_through, Kicker};
use super::{ctx, GuestMemory};
use kvm_bindings::{kvm_run, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

nix::ioctl_write_ptr!(kvm_interrupt, kvm_bindings::KVMIO, 0x86, kvm_bindings::kvm_interrupt);
nix::ioctl_none!(kvm_nmi, kvm_bindings::KVMIO, 0x9a);
nix::ioctl_none!(kvm_get_stats_fd, kvm_bindings::KVMIO, 0xce);

/// Makes `mem` guest RAM at guest-physical `gpa` in memory slot `slot`.
pub fn add_memory(vm: &VmFd, slot: u32, gpa: u64, mem: &GuestMemory) -> io::Result<()> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: mem.len() as u64,
        userspace_addr: mem.host_address(),
    };
    // SAFETY: the region is our own anonymous mapping, which the machine keeps mapped
    // while the VM lives; Rust never references guest RAM (only byte copies), so the
    // guest writing it cannot break an aliasing rule.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| io::Error::other(format!("KVM_SET_USER_MEMORY_REGION: {e}")))
}

/// An exit of `KVM_RUN`, with what it carries copied out of `kvm_run` or pointed to
/// inside it (the data of port I/O and of MMIO reads, which userspace fills in).
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    Io { port: u16, size: u8, out: bool },
    MmioRead { gpa: u64 },
    MmioWrite { gpa: u64 },
    Hlt,
    IrqWindowOpen,
    /// Split irqchip: the guest ended level-triggered `vector`, one of the I/O APIC's.
    IoapicEoi { vector: u8 },
    Shutdown,
    FailEntry { reason: u64 },
    InternalError { suberror: u32 },
    Other { reason: u32 },
}

/// A KVM vCPU: its descriptor (with the mapped `kvm_run`) and its last exit.
///
/// # Invariants
/// `data`, when set, points to `data_len` bytes inside this vCPU's `kvm_run` mapping
/// (the port I/O page or the MMIO data), valid until the next `run`.
pub struct Vcpu {
    fd: VcpuFd,
    exit: Exit,
    data: Option<NonNull<u8>>,
    data_len: usize,
    kick_flag: *mut u8,
}

// SAFETY: the vCPU owns its descriptor and mapping; the raw pointers point into that
// mapping, so moving all of them to another thread together is fine.
unsafe impl Send for Vcpu {}

impl Vcpu {
    pub fn new(fd: VcpuFd) -> Self {
        Self { fd, exit: Exit::Other { reason: 0 }, data: None, data_len: 0, kick_flag: std::ptr::null_mut() }
    }

    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// `KVM_RUN` until the next exit to userspace. `Ok(false)` when a signal (or
    /// `immediate_exit`) interrupted it.
    pub fn run(&mut self) -> io::Result<bool> {
        self.data = None;
        self.data_len = 0;
        let (exit, data) = match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => (Exit::Io { port, size: 0, out: false }, Some((data.as_mut_ptr(), data.len()))),
            Ok(VcpuExit::IoOut(port, data)) => (Exit::Io { port, size: 0, out: true }, Some((data.as_ptr().cast_mut(), data.len()))),
            Ok(VcpuExit::MmioRead(gpa, data)) => (Exit::MmioRead { gpa }, Some((data.as_mut_ptr(), data.len()))),
            Ok(VcpuExit::MmioWrite(gpa, data)) => (Exit::MmioWrite { gpa }, Some((data.as_ptr().cast_mut(), data.len()))),
            Ok(VcpuExit::Hlt) => (Exit::Hlt, None),
            Ok(VcpuExit::IrqWindowOpen) => (Exit::IrqWindowOpen, None),
            Ok(VcpuExit::IoapicEoi(vector)) => (Exit::IoapicEoi { vector }, None),
            Ok(VcpuExit::Shutdown) => (Exit::Shutdown, None),
            Ok(VcpuExit::FailEntry(reason, _cpu)) => (Exit::FailEntry { reason }, None),
            Ok(VcpuExit::InternalError) => (Exit::InternalError { suberror: 0 }, None),
            Ok(VcpuExit::Intr) => return Ok(false),
            Ok(_) => (Exit::Other { reason: 0 }, None),
            Err(e) if e.errno() == nix::libc::EINTR => return Ok(false),
            // Split irqchip: an AP waiting for its startup IPI in KVM_RUN got it (or an
            // INIT); KVM wants KVM_RUN again.
            Err(e) if e.errno() == nix::libc::EAGAIN => return Ok(false),
            Err(e) => return Err(io::Error::from_raw_os_error(e.errno())).map_err(|e| io::Error::new(e.kind(), format!("KVM_RUN: {e}"))),
        };
        // The data lives in the `kvm_run` mapping (not in `self`): keep where it is.
        if let Some((ptr, len)) = data {
            self.data = NonNull::new(ptr);
            self.data_len = len;
        }
        let run: &kvm_run = self.fd.get_kvm_run();
        self.exit = match exit {
            Exit::Io { port, out, .. } => {
                // SAFETY: KVM said KVM_EXIT_IO, so `io` is the union's live member.
                let io = unsafe { run.__bindgen_anon_1.io };
                Exit::Io { port, size: io.size, out }
            }
            Exit::InternalError { .. } => {
                // SAFETY: KVM said KVM_EXIT_INTERNAL_ERROR: `internal` is live.
                Exit::InternalError { suberror: unsafe { run.__bindgen_anon_1.internal.suberror } }
            }
            Exit::Other { .. } => Exit::Other { reason: run.exit_reason },
            other => other,
        };
        Ok(true)
    }

    /// The last exit and its data (port I/O bytes, MMIO bytes; empty for the others).
    pub fn exit(&mut self) -> (Exit, &mut [u8]) {
        let data = match self.data {
            // SAFETY: valid until the next `run` (type invariant), which needs `&mut
            // self` as this borrow does; nothing else references those bytes.
            Some(p) => unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), self.data_len) },
            None => &mut [],
        };
        (self.exit, data)
    }

    pub fn run_page(&mut self) -> &mut kvm_run {
        self.fd.get_kvm_run()
    }

    /// Maps KVM's coalesced-write ring (before `coalesced_write`).
    pub fn map_coalesced_ring(&mut self) -> io::Result<()> {
        self.fd.map_coalesced_mmio_ring().map_err(|e| io::Error::other(format!("mapping the coalesced ring: {e}")))
    }

    /// The oldest port write in KVM's coalesced ring: port, data, length.
    pub fn coalesced_write(&mut self) -> Option<(u16, [u8; 8], usize)> {
        let e = self.fd.coalesced_mmio_read().ok()??;
        Some((e.phys_addr as u16, e.data, (e.len as usize).min(8)))
    }

    /// `KVM_INTERRUPT`: queues external interrupt `vector` (without an in-kernel irqchip;
    /// with the split irqchip, the PIC's vector, taken through LINT0 as ExtINT).
    pub fn interrupt(&self, vector: u8) -> io::Result<()> {
        let irq = kvm_bindings::kvm_interrupt { irq: vector.into() };
        // SAFETY: `irq` is a valid `kvm_interrupt` for the duration of the call.
        unsafe { kvm_interrupt(self.fd.as_raw_fd(), &irq) }.map_err(ctx("KVM_INTERRUPT"))?;
        Ok(())
    }

    /// `KVM_NMI`: queues a non-maskable interrupt (no in-kernel irqchip).
    pub fn nmi(&self) -> io::Result<()> {
        // SAFETY: an argument-less ioctl on our own vCPU descriptor.
        unsafe { kvm_nmi(self.fd.as_raw_fd()) }.map_err(ctx("KVM_NMI"))?;
        Ok(())
    }

    /// `KVM_GET_STATS_FD`: the descriptor of the vCPU's binary statistics (see
    /// `hypervisor::kvm_stats`).
    pub fn stats_fd(&self) -> io::Result<std::fs::File> {
        // SAFETY: an argument-less ioctl on our own vCPU descriptor.
        let fd = unsafe { kvm_get_stats_fd(self.fd.as_raw_fd()) }.map_err(ctx("KVM_GET_STATS_FD"))?;
        Ok(super::owned_fd(fd).into())
    }

    /// As `super::Vcpu::kickable`, through `kvm_run.immediate_exit`.
    pub fn kickable(&mut self) -> io::Result<Kicker> {
        self.kick_flag = std::ptr::addr_of_mut!(self.fd.get_kvm_run().immediate_exit);
        kick_through(self.kick_flag)
    }

    pub fn clear_kick(&mut self) {
        let flag = std::ptr::addr_of_mut!(self.fd.get_kvm_run().immediate_exit);
        // SAFETY: a byte of the mapped `kvm_run`; a volatile store, as the signal
        // handler's (both only store).
        unsafe { flag.write_volatile(0) };
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // The mapping goes with `fd` (dropped after this): a late kick must not write.
        forget_kick_flag(self.kick_flag);
    }
}
