//! The emulator's only contact with the kernel: `/dev/yakvm` ioctls and shared memory
//! mappings, behind safe types. All of the emulator's `unsafe` is in this file.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

pub use nix::sys::mman::ProtFlags;
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags};
use yakvm_abi as abi;

mod ioctls {
    use yakvm_abi as abi;
    nix::ioctl_none_bad!(get_api_version, abi::GET_API_VERSION);
    nix::ioctl_none_bad!(create_vm, abi::CREATE_VM);
    nix::ioctl_write_int_bad!(check_capability, abi::CHECK_CAPABILITY);
    nix::ioctl_write_ptr_bad!(set_memory_region, abi::SET_MEMORY_REGION, abi::MemoryRegion);
    nix::ioctl_none_bad!(create_vcpu, abi::CREATE_VCPU);
    nix::ioctl_none_bad!(enable_lapic, abi::ENABLE_LAPIC);
    nix::ioctl_none_bad!(run, abi::RUN);
    nix::ioctl_read_bad!(get_regs, abi::GET_REGS, abi::Regs);
    nix::ioctl_write_ptr_bad!(set_regs, abi::SET_REGS, abi::Regs);
    nix::ioctl_read_bad!(get_sregs, abi::GET_SREGS, abi::Sregs);
    nix::ioctl_write_ptr_bad!(set_sregs, abi::SET_SREGS, abi::Sregs);
    nix::ioctl_read_bad!(get_vmcb, abi::GET_VMCB, abi::VmcbDump);
    nix::ioctl_read_bad!(get_stats, abi::GET_STATS, abi::ExitStats);
    nix::ioctl_write_ptr_bad!(interrupt, abi::INTERRUPT, abi::Interrupt);
    nix::ioctl_read_bad!(get_msr_stats, abi::GET_MSR_STATS, abi::MsrStats);
    nix::ioctl_write_ptr_bad!(set_guest_debug, abi::SET_GUEST_DEBUG, abi::GuestDebug);
    nix::ioctl_write_ptr_bad!(set_coalesced_io, abi::SET_COALESCED_IO, abi::CoalescedIo);
    nix::ioctl_none_bad!(nmi, abi::NMI);
}

/// A failed system call: which one and its errno.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {errno}")]
pub struct SysError {
    pub call: &'static str,
    pub errno: nix::errno::Errno,
}

/// Wraps an errno from a call with the name of the call.
fn ctx(call: &'static str) -> impl FnOnce(nix::Error) -> io::Error {
    move |errno| io::Error::new(io::Error::from(errno).kind(), SysError { call, errno })
}

/// The errno behind an error of this module, if it has one.
pub fn errno_of(e: &io::Error) -> Option<nix::errno::Errno> {
    e.raw_os_error()
        .map(nix::errno::Errno::from_raw)
        .or_else(|| e.get_ref()?.downcast_ref::<SysError>().map(|s| s.errno))
}

/// Takes ownership of a descriptor an ioctl returned.
fn owned_fd(fd: i32) -> OwnedFd {
    // SAFETY: the kernel just created `fd` for us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An open `/dev/yakvm`.
pub struct Device(File);

impl Device {
    pub fn open(path: &str) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {path}: {e} (is the yakvm module loaded?)"))
        })?;
        Ok(Self(file))
    }

    /// `CHECK_CAPABILITY`: the value of capability `cap` (`abi::cap`).
    pub fn capability(&self, cap: u64) -> io::Result<u64> {
        // SAFETY: an ioctl whose argument is a plain number, not a pointer.
        let v = unsafe { ioctls::check_capability(self.0.as_raw_fd(), cap as i32) }.map_err(ctx("CHECK_CAPABILITY"))?;
        Ok(v as u64)
    }

    pub fn api_version(&self) -> io::Result<u32> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        let v = unsafe { ioctls::get_api_version(self.0.as_raw_fd()) }.map_err(ctx("GET_API_VERSION"))?;
        Ok(v as u32)
    }

    pub fn create_vm(&self) -> io::Result<Vm> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        let fd = unsafe { ioctls::create_vm(self.0.as_raw_fd()) }.map_err(ctx("CREATE_VM"))?;
        Ok(Vm(owned_fd(fd)))
    }
}

/// A VM descriptor.
pub struct Vm(OwnedFd);

impl Vm {
    /// Makes `mem` guest RAM at guest-physical `gpa`. The kernel pins it; `mem` must stay
    /// mapped while the VM lives, which the caller ensures by keeping both together.
    pub fn add_memory(&self, slot: u32, gpa: u64, mem: &GuestMemory) -> io::Result<()> {
        let region = abi::MemoryRegion {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: mem.len() as u64,
            userspace_addr: mem.host_address(),
        };
        self.set_memory_region(&region)
    }

    /// `SET_MEMORY_REGION` with any contents (for tests of the module's checks): the
    /// module validates every field, including the user address.
    pub fn set_memory_region(&self, region: &abi::MemoryRegion) -> io::Result<()> {
        // SAFETY: `region` is valid for the call; the kernel checks the address it names.
        unsafe { ioctls::set_memory_region(self.0.as_raw_fd(), region) }.map_err(ctx("SET_MEMORY_REGION"))?;
        Ok(())
    }

    /// `ENABLE_LAPIC`: the vCPUs created from now on have local APICs (CPUID, the
    /// IA32_APIC_BASE MSR); `EBUSY` once a vCPU exists.
    pub fn enable_lapic(&self) -> io::Result<()> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        unsafe { ioctls::enable_lapic(self.0.as_raw_fd()) }.map_err(ctx("ENABLE_LAPIC"))?;
        Ok(())
    }

    pub fn create_vcpu(&self) -> io::Result<Vcpu> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        let fd = owned_fd(unsafe { ioctls::create_vcpu(self.0.as_raw_fd()) }.map_err(ctx("CREATE_VCPU"))?);
        let len = NonZeroUsize::new(abi::RUN_MMAP_SIZE).expect("non-zero");
        // SAFETY: maps the vCPU's run page, a fresh mapping that aliases no Rust object.
        let ptr = unsafe {
            mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &fd, 0)
        }
        .map_err(ctx("mmap of the run page"))?;
        Ok(Vcpu { fd, run: ptr.cast() })
    }
}

impl AsFd for Vm {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsFd for Vcpu {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A vCPU descriptor and its mapped run page.
///
/// # Invariants
/// `run` points to the vCPU's mapped run page (`RUN_MMAP_SIZE` bytes, page aligned), which
/// the kernel writes only during `RUN` on this descriptor; `&mut self` on every `run`
/// keeps Rust references to it from living across a `RUN`.
pub struct Vcpu {
    fd: OwnedFd,
    run: NonNull<abi::Run>,
}

// SAFETY: a `Vcpu` owns its descriptor and its run-page mapping; moving both to another
// thread is fine (a vCPU is meant to run on its own thread).
unsafe impl Send for Vcpu {}

impl Vcpu {
    /// Runs until the next exit to userspace. `Ok(false)` when a signal interrupted RUN.
    pub fn run(&mut self) -> io::Result<bool> {
        // SAFETY: an argument-less ioctl on our own descriptor; no reference into the run
        // page is alive (they borrow `self`).
        match unsafe { ioctls::run(self.fd.as_raw_fd()) } {
            Ok(_) => Ok(true),
            Err(nix::Error::EINTR) => Ok(false),
            Err(e) => Err(ctx("RUN")(e)),
        }
    }

    /// The run page, as the last `run` left it, to read.
    pub fn run_page_ref(&self) -> &abi::Run {
        // SAFETY: valid and mapped for our life (type invariant); `abi::Run` is plain data
        // for which any bytes are valid; RUN (the kernel's writer) needs `&mut self`.
        unsafe { self.run.as_ref() }
    }

    /// The run page, as the last `run` left it.
    pub fn run_page(&mut self) -> &mut abi::Run {
        // SAFETY: valid and mapped for our life (type invariant); `abi::Run` is plain data
        // for which any bytes are valid; exclusive through `&mut self`.
        unsafe { self.run.as_mut() }
    }

    pub fn regs(&self) -> io::Result<abi::Regs> {
        let mut regs = abi::Regs::default();
        // SAFETY: `regs` is a valid `Regs` to write into.
        unsafe { ioctls::get_regs(self.fd.as_raw_fd(), &mut regs) }.map_err(ctx("GET_REGS"))?;
        Ok(regs)
    }

    pub fn sregs(&self) -> io::Result<abi::Sregs> {
        let mut sregs = abi::Sregs::default();
        // SAFETY: `sregs` is a valid `Sregs` to write into.
        unsafe { ioctls::get_sregs(self.fd.as_raw_fd(), &mut sregs) }.map_err(ctx("GET_SREGS"))?;
        Ok(sregs)
    }

    pub fn stats(&self) -> io::Result<abi::ExitStats> {
        let mut stats = abi::ExitStats::default();
        // SAFETY: `stats` is a valid `ExitStats` to write into.
        unsafe { ioctls::get_stats(self.fd.as_raw_fd(), &mut stats) }.map_err(ctx("GET_STATS"))?;
        Ok(stats)
    }

    /// `INTERRUPT`: queues external interrupt `vector` (see the ABI for when it lands).
    pub fn interrupt(&self, vector: u8) -> io::Result<()> {
        let irq = abi::Interrupt { vector: vector.into() };
        // SAFETY: `irq` is a valid `Interrupt` for the duration of the call.
        unsafe { ioctls::interrupt(self.fd.as_raw_fd(), &irq) }.map_err(ctx("INTERRUPT"))?;
        Ok(())
    }

    /// `NMI`: queues a non-maskable interrupt (see the ABI for when it lands); `EEXIST`
    /// while one is queued.
    pub fn nmi(&self) -> io::Result<()> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        unsafe { ioctls::nmi(self.fd.as_raw_fd()) }.map_err(ctx("NMI"))?;
        Ok(())
    }

    /// `SET_COALESCED_IO`: OUTs to these ports go to the run page's list (see the ABI).
    pub fn set_coalesced_io(&self, zones: &abi::CoalescedIo) -> io::Result<()> {
        // SAFETY: `zones` is a valid `CoalescedIo` for the duration of the call.
        unsafe { ioctls::set_coalesced_io(self.fd.as_raw_fd(), zones) }.map_err(ctx("SET_COALESCED_IO"))?;
        Ok(())
    }

    pub fn msr_stats(&self) -> io::Result<abi::MsrStats> {
        let mut stats = abi::MsrStats::default();
        // SAFETY: `stats` is a valid `MsrStats` to write into.
        unsafe { ioctls::get_msr_stats(self.fd.as_raw_fd(), &mut stats) }.map_err(ctx("GET_MSR_STATS"))?;
        Ok(stats)
    }

    /// `SET_GUEST_DEBUG`: the debugger's controls (`abi::guest_debug` bits).
    pub fn set_guest_debug(&self, control: u32) -> io::Result<()> {
        let dbg = abi::GuestDebug { control, ..Default::default() };
        // SAFETY: `dbg` is a valid `GuestDebug` for the duration of the call.
        unsafe { ioctls::set_guest_debug(self.fd.as_raw_fd(), &dbg) }.map_err(ctx("SET_GUEST_DEBUG"))?;
        Ok(())
    }

    /// Makes this vCPU's thread kickable: after this, `Kicker::kick` from any thread makes
    /// a `RUN` in progress return promptly (`Ok(false)`), and a `RUN` about to start
    /// return at once, through the run page's `immediate_exit`. Call it on the thread
    /// that runs the vCPU; `clear_kick` before looking for work, then `run`.
    pub fn kickable(&self) -> io::Result<Kicker> {
        // SAFETY: a field of the mapped run page (type invariant), no reference made.
        let flag = unsafe { std::ptr::addr_of_mut!((*self.run.as_ptr()).immediate_exit) };
        kick_through(flag)
    }

    /// Clears `immediate_exit` (set by a kick): call it before checking for work.
    pub fn clear_kick(&mut self) {
        // SAFETY: the run page is mapped (type invariant); a volatile store of one byte
        // of plain data, which the signal handler may also write (both only store).
        unsafe { std::ptr::addr_of_mut!((*self.run.as_ptr()).immediate_exit).write_volatile(0) };
    }

    pub fn vmcb(&self) -> io::Result<Box<abi::VmcbDump>> {
        let mut dump = Box::new(abi::VmcbDump { bytes: [0; 4096] });
        // SAFETY: `dump` is a valid `VmcbDump` to write into.
        unsafe { ioctls::get_vmcb(self.fd.as_raw_fd(), &mut *dump) }.map_err(ctx("GET_VMCB"))?;
        Ok(dump)
    }

    pub fn set_regs(&self, regs: &abi::Regs) -> io::Result<()> {
        // SAFETY: `regs` is a valid `Regs` for the duration of the call.
        unsafe { ioctls::set_regs(self.fd.as_raw_fd(), regs) }.map_err(ctx("SET_REGS"))?;
        Ok(())
    }

    pub fn set_sregs(&self, sregs: &abi::Sregs) -> io::Result<()> {
        // SAFETY: `sregs` is a valid `Sregs` for the duration of the call.
        unsafe { ioctls::set_sregs(self.fd.as_raw_fd(), sregs) }.map_err(ctx("SET_SREGS"))?;
        Ok(())
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // A late kick must not write into the page once it is gone.
        // SAFETY: a field of the still mapped run page, no reference made.
        forget_kick_flag(unsafe { std::ptr::addr_of_mut!((*self.run.as_ptr()).immediate_exit) });
        // SAFETY: unmaps the run page mapped in `create_vcpu`; no reference to it outlives
        // `self`.
        let _ = unsafe { munmap(self.run.cast(), abi::RUN_MMAP_SIZE) };
    }
}

/// KVM (`/dev/kvm`) for `--hypervisor kvm`, through rust-vmm's kvm-ioctls. Only what the
/// emulator's KVM backend needs that kvm-ioctls leaves unsafe or does not have is here.
pub mod kvm {
    use super::{ctx, forget_kick_flag, kick_through, GuestMemory, Kicker};
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
                Ok(VcpuExit::Shutdown) => (Exit::Shutdown, None),
                Ok(VcpuExit::FailEntry(reason, _cpu)) => (Exit::FailEntry { reason }, None),
                Ok(VcpuExit::InternalError) => (Exit::InternalError { suberror: 0 }, None),
                Ok(VcpuExit::Intr) => return Ok(false),
                Ok(_) => (Exit::Other { reason: 0 }, None),
                Err(e) if e.errno() == nix::libc::EINTR => return Ok(false),
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

        /// `KVM_INTERRUPT`: queues external interrupt `vector` (no in-kernel irqchip).
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
}

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

/// The time stamp counter's rate in kHz, measured against the monotonic clock over
/// `over` (guests see the same counter: RDTSC is not intercepted).
pub fn tsc_khz(over: std::time::Duration) -> u64 {
    // SAFETY: RDTSC only reads the counter; user mode may (CR4.TSD is clear on Linux).
    let rdtsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (std::time::Instant::now(), rdtsc());
    std::thread::sleep(over);
    let (t1, c1) = (std::time::Instant::now(), rdtsc());
    let ns = (t1 - t0).as_nanos().max(1) as u64;
    (c1.wrapping_sub(c0) as u128 * 1_000_000 / ns as u128) as u64
}

/// The signal that kicks a vCPU thread out of `RUN`.
const KICK_SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR2;

thread_local! {
    /// The `immediate_exit` byte of the run page of the vCPU this thread runs, yakvm's or
    /// KVM's (each vCPU thread has its own). Const-initialised and without a destructor:
    /// reading it is a plain thread-local load, fine in a signal handler.
    static KICK_FLAG: std::cell::Cell<*mut u8> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Most run pages kickable at once (every vCPU of a machine, with room to spare).
const MAX_KICK_FLAGS: usize = 64;

/// The kick flags whose run pages are mapped: a vCPU may be dropped on another thread
/// than the one it ran on, whose `KICK_FLAG` then still names its page. A kick writes
/// only a flag found here; `forget_kick_flag` takes it out before the unmap.
static LIVE_KICK_FLAGS: [std::sync::atomic::AtomicPtr<u8>; MAX_KICK_FLAGS] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; MAX_KICK_FLAGS];

fn kick_flag_live(flag: *mut u8) -> bool {
    LIVE_KICK_FLAGS.iter().any(|f| f.load(std::sync::atomic::Ordering::SeqCst) == flag)
}

extern "C" fn note_kick(_: nix::libc::c_int) {
    // `try_with`: nothing to do in a thread being torn down.
    let flag = KICK_FLAG.try_with(|f| f.get()).unwrap_or(std::ptr::null_mut());
    if !flag.is_null() && kick_flag_live(flag) {
        // SAFETY: a live flag points into a mapped run page (taken out of
        // `LIVE_KICK_FLAGS` before it is unmapped); a volatile one-byte store of plain data.
        unsafe { flag.write_volatile(1) };
    }
}

/// Makes the calling thread kickable through the `immediate_exit` byte at `flag`, which
/// must stay mapped until `forget_kick_flag(flag)`.
fn kick_through(flag: *mut u8) -> io::Result<Kicker> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    use std::sync::atomic::Ordering::SeqCst;
    if !kick_flag_live(flag) {
        LIVE_KICK_FLAGS
            .iter()
            .find(|f| f.compare_exchange(std::ptr::null_mut(), flag, SeqCst, SeqCst).is_ok())
            .ok_or_else(|| io::Error::other(format!("more than {MAX_KICK_FLAGS} kickable vCPUs")))?;
    }
    KICK_FLAG.with(|f| f.set(flag));
    // No SA_RESTART: the interrupted RUN must return.
    let action = SigAction::new(SigHandler::Handler(note_kick), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only reads a thread-local and atomics and does a volatile byte
    // store into a mapped run page (async-signal-safe); the page stays mapped while its
    // flag is in `LIVE_KICK_FLAGS` (taken out by `forget_kick_flag` before the unmap).
    unsafe { sigaction(KICK_SIGNAL, &action) }.map_err(ctx("sigaction"))?;
    Ok(Kicker(Some(nix::sys::pthread::pthread_self())))
}

/// A run page is about to be unmapped: a late kick must not write into it (from any
/// thread: the one that ran the vCPU may still have it as its `KICK_FLAG`).
fn forget_kick_flag(flag: *mut u8) {
    use std::sync::atomic::Ordering::SeqCst;
    if flag.is_null() {
        return;
    }
    for f in &LIVE_KICK_FLAGS {
        let _ = f.compare_exchange(flag, std::ptr::null_mut(), SeqCst, SeqCst);
    }
    let _ = KICK_FLAG.try_with(|f| {
        if f.get() == flag {
            f.set(std::ptr::null_mut());
        }
    });
}

/// Makes a vCPU thread return from `RUN` (see `Vcpu::kickable`). Any thread may kick.
#[derive(Clone, Copy)]
pub struct Kicker(Option<nix::sys::pthread::Pthread>);

impl Kicker {
    /// A kicker that kicks nobody (tests of the event thread).
    pub fn none() -> Self {
        Self(None)
    }

    pub fn kick(&self) {
        if let Some(thread) = self.0 {
            let _ = nix::sys::pthread::pthread_kill(thread, KICK_SIGNAL);
        }
    }
}

/// The stop signal that arrived (SIGINT or SIGTERM), 0 for none.
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn note_stop_signal(signal: nix::libc::c_int) {
    STOP_SIGNAL.store(signal, std::sync::atomic::Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGALRM (even where the parent ignored them, as shells do
/// for background jobs): a blocked `RUN` then returns `EINTR` and the run can end cleanly,
/// with its output flushed. `stop_signal` tells which arrived.
pub fn catch_stop_signals() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // No SA_RESTART: the interrupted RUN must return instead of being restarted.
    let action = SigAction::new(SigHandler::Handler(note_stop_signal), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGALRM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(ctx("sigaction"))?;
    }
    Ok(())
}

/// Sends this process SIGALRM in `secs` seconds (`--timeout`; caught as a stop signal).
pub fn alarm(secs: u32) {
    nix::unistd::alarm::set(secs);
}

/// The stop signal caught since `catch_stop_signals`, if any.
pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Set when SIGALRM arrives after `interrupt_on_alarm`; cleared by `alarm_after`.
static ALARM_FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_alarm(signal: nix::libc::c_int) {
    if signal == nix::libc::SIGALRM {
        ALARM_FIRED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether the alarm set by `alarm_after` has gone off (it may arrive while the caller
/// is outside `RUN`, so a bounded run loop checks this too).
pub fn alarm_fired() -> bool {
    ALARM_FIRED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Makes SIGALRM and SIGUSR1 interrupt a blocked `RUN` (it returns `EINTR`) without
/// ending the process: for programs that bound each run themselves (the stress tests).
pub fn interrupt_on_alarm() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(note_alarm), SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGALRM, Signal::SIGUSR1] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(ctx("sigaction"))?;
    }
    Ok(())
}

/// Sends this process SIGALRM once, after `after` (zero: cancels a pending one).
pub fn alarm_after(after: std::time::Duration) -> io::Result<()> {
    ALARM_FIRED.store(false, std::sync::atomic::Ordering::SeqCst);
    let value = nix::libc::itimerval {
        it_interval: nix::libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: nix::libc::timeval { tv_sec: after.as_secs() as _, tv_usec: after.subsec_micros() as _ },
    };
    // SAFETY: `value` is a valid itimerval; the old value is not asked for.
    let ret = unsafe { nix::libc::setitimer(nix::libc::ITIMER_REAL, &value, std::ptr::null_mut()) };
    nix::errno::Errno::result(ret).map(drop).map_err(ctx("setitimer"))
}

/// `RUN` on a vCPU descriptor given by number (tests that RUN one vCPU from several
/// threads). `Ok(false)` when interrupted by a signal.
pub fn run_fd(fd: i32) -> io::Result<bool> {
    // SAFETY: an argument-less ioctl; if `fd` is not a vCPU the kernel refuses it.
    match unsafe { ioctls::run(fd) } {
        Ok(_) => Ok(true),
        Err(nix::Error::EINTR) => Ok(false),
        Err(e) => Err(ctx("RUN")(e)),
    }
}

/// The pthread of a spawned thread, to signal it.
pub fn thread_id<T>(handle: &std::thread::JoinHandle<T>) -> nix::sys::pthread::Pthread {
    use std::os::unix::thread::JoinHandleExt;
    handle.as_pthread_t() as _
}

/// Sends SIGUSR1 to a thread (after `interrupt_on_alarm`, it interrupts a blocked RUN).
pub fn signal_thread(thread: nix::sys::pthread::Pthread) {
    let _ = nix::sys::pthread::pthread_kill(thread, nix::sys::signal::Signal::SIGUSR1);
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
