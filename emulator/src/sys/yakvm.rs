//! `/dev/yakvm`: the device, its VM and vCPU descriptors, and the vCPU's mapped run page.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use yakvm_abi as abi;

use super::kick::{forget_kick_flag, kick_through, Kicker};
use super::{ctx, owned_fd, GuestMemory};

mod ioctls {
    use yakvm_abi as abi;
    nix::ioctl_none_bad!(get_api_version, abi::GET_API_VERSION);
    nix::ioctl_none_bad!(create_vm, abi::CREATE_VM);
    nix::ioctl_write_int_bad!(check_capability, abi::CHECK_CAPABILITY);
    nix::ioctl_write_ptr_bad!(set_memory_region, abi::SET_MEMORY_REGION, abi::MemoryRegion);
    nix::ioctl_none_bad!(create_vcpu, abi::CREATE_VCPU);
    nix::ioctl_none_bad!(enable_lapic, abi::ENABLE_LAPIC);
    nix::ioctl_write_ptr_bad!(ioeventfd, abi::IOEVENTFD, abi::IoEventFd);
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
    nix::ioctl_none_bad!(enable_kernel_apic, abi::ENABLE_KERNEL_APIC);
    nix::ioctl_write_ptr_bad!(signal_msi, abi::SIGNAL_MSI, abi::Msi);
    nix::ioctl_write_ptr_bad!(irqfd, abi::IRQFD, abi::IrqFd);
    nix::ioctl_readwrite_bad!(apic_access, abi::APIC_ACCESS, abi::ApicAccess);
    nix::ioctl_read_bad!(get_apic_stats, abi::GET_APIC_STATS, abi::ApicStats);
    nix::ioctl_none_bad!(apic_events, abi::APIC_EVENTS);
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

    /// `IOEVENTFD`: adds or removes an eventfd bound to guest writes (abi.rs).
    pub fn ioeventfd(&self, arg: &abi::IoEventFd) -> io::Result<()> {
        // SAFETY: `arg` is valid for the call; the module reads it and checks every field.
        unsafe { ioctls::ioeventfd(self.0.as_raw_fd(), arg) }.map_err(ctx("IOEVENTFD"))?;
        Ok(())
    }

    /// `IRQFD`: binds (or with `irqfd::DEASSIGN` unbinds) an eventfd to an interrupt
    /// message.
    pub fn irqfd(&self, arg: &abi::IrqFd) -> io::Result<()> {
        // SAFETY: `arg` is valid for the call; the module reads it and checks every field.
        unsafe { ioctls::irqfd(self.0.as_raw_fd(), arg) }.map_err(ctx("IRQFD"))?;
        Ok(())
    }

    /// `ENABLE_KERNEL_APIC`: the vCPUs created from now on have local APICs in the module
    /// (see the ABI); `EBUSY` once a vCPU exists.
    pub fn enable_kernel_apic(&self) -> io::Result<()> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        unsafe { ioctls::enable_kernel_apic(self.0.as_raw_fd()) }.map_err(ctx("ENABLE_KERNEL_APIC"))?;
        Ok(())
    }

    /// `SIGNAL_MSI`: an interrupt message to the kernel APICs; how many took it.
    pub fn signal_msi(&self, msi: &abi::Msi) -> io::Result<u32> {
        // SAFETY: `msi` is a valid `Msi` for the duration of the call.
        let took = unsafe { ioctls::signal_msi(self.0.as_raw_fd(), msi) }.map_err(ctx("SIGNAL_MSI"))?;
        Ok(took as u32)
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

    /// `APIC_ACCESS`: an xAPIC page access done on the vCPU's kernel APIC (see the ABI).
    pub fn apic_access(&self, access: &mut abi::ApicAccess) -> io::Result<()> {
        // SAFETY: `access` is a valid `ApicAccess` to read and write for the call.
        unsafe { ioctls::apic_access(self.fd.as_raw_fd(), access) }.map_err(ctx("APIC_ACCESS"))?;
        Ok(())
    }

    /// `GET_APIC_STATS`: the kernel APIC's work.
    pub fn apic_stats(&self) -> io::Result<abi::ApicStats> {
        let mut stats = abi::ApicStats::default();
        // SAFETY: `stats` is a valid `ApicStats` to write into.
        unsafe { ioctls::get_apic_stats(self.fd.as_raw_fd(), &mut stats) }.map_err(ctx("GET_APIC_STATS"))?;
        Ok(stats)
    }

    /// `APIC_EVENTS`: how many of the VM's kernel APICs have something to wake their vCPU
    /// for.
    pub fn apic_events(&self) -> io::Result<u32> {
        // SAFETY: an argument-less ioctl on our own descriptor.
        let n = unsafe { ioctls::apic_events(self.fd.as_raw_fd()) }.map_err(ctx("APIC_EVENTS"))?;
        Ok(n as u32)
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
