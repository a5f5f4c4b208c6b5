// SPDX-License-Identifier: GPL-2.0
//! The yakvm ABI: ioctl numbers and the `#[repr(C)]` structures they carry.
//!
//! This file is the single source of truth shared by the kernel module (which includes it
//! with `#[path]`) and the emulator (through the `yakvm-abi` crate). It must stay free of
//! dependencies and of `std`/`kernel` items: only `core`.
//!
//! The shape follows KVM: `/dev/yakvm` creates VMs (each a file descriptor), a VM creates
//! vCPUs (each a file descriptor), and `RUN` on a vCPU returns with the exit described in
//! a [`Run`] page that userspace maps from the vCPU descriptor.

#![allow(dead_code)]

/// Version of this ABI; bumped on every incompatible change.
pub const API_VERSION: u32 = 7;

/// The ioctl "type" byte of every yakvm command.
pub const IOCTL_TYPE: u32 = b'Y' as u32;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux's `_IOC(dir, type, nr, size)` for x86.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (IOCTL_TYPE << 8) | nr
}
const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, nr, 0)
}
const fn ior<T>(nr: u32) -> u32 {
    ioc(IOC_READ, nr, core::mem::size_of::<T>())
}
const fn iow<T>(nr: u32) -> u32 {
    ioc(IOC_WRITE, nr, core::mem::size_of::<T>())
}
const fn iowr<T>(nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, core::mem::size_of::<T>())
}

// --- ioctls on /dev/yakvm ---
/// Returns [`API_VERSION`].
pub const GET_API_VERSION: u32 = io(0x00);
/// Creates a VM; returns its file descriptor.
pub const CREATE_VM: u32 = io(0x01);
/// Asks about a capability (the argument is one of [`cap`]); returns its value, 0 if absent.
pub const CHECK_CAPABILITY: u32 = io(0x02);

// --- ioctls on a VM descriptor ---
/// Adds guest RAM backed by userspace memory ([`MemoryRegion`]).
pub const SET_MEMORY_REGION: u32 = iow::<MemoryRegion>(0x10);
/// Creates a vCPU; returns its file descriptor.
pub const CREATE_VCPU: u32 = io(0x11);
/// Gives every vCPU of the VM what a CPU with a local APIC has, for an APIC emulated in
/// userspace (at 0xfee0_0000, as MMIO): CPUID.1:EDX.APIC set, and the MSR
/// IA32_APIC_BASE (0x1b), kept per vCPU by the module. It reads 0xfee0_0000 | EN (bit 11),
/// plus BSP (bit 8) on vCPU 0 (the first created). A write may clear or set EN (BSP
/// keeps its value); it raises #GP in the guest if it sets a reserved bit or EXTD (bit
/// 10: no x2APIC) or moves the base. `EBUSY` once the VM has a vCPU. Without it, the
/// guest sees no APIC (no CPUID bit; the MSR raises #GP).
pub const ENABLE_LAPIC: u32 = io(0x12);
/// Binds an eventfd to guest writes ([`IoEventFd`]), as KVM's `KVM_IOEVENTFD`: a guest
/// write to the port or MMIO address `addr` with `len` bytes (0: any length) and, with
/// [`ioeventfd::DATAMATCH`], the value `datamatch` (the written bytes as a little-endian
/// number) signals the eventfd `fd` (adds 1 to its counter) and the guest goes on without
/// an exit to userspace. A reader of the eventfd gets the sum of the signals since its last
/// read: writes are counted exactly, but one wake-up may stand for several.
///
/// Port writes are `OUT` (not `OUTS`); MMIO writes are the MOV stores the module decodes
/// (`decode.rs`: `mov` from a register or an immediate, with their prefixes): any other
/// instruction writing there exits to userspace as before, as does any write that does not
/// match. Reads never match.
///
/// With [`ioeventfd::DEASSIGN`], removes the registration with the same `fd`, `addr`,
/// `len`, `PIO` flag and datamatch (or its absence); `ENOENT` if there is none. Assigning
/// fails with `EEXIST` where KVM's does: a registration exists in the same space at the same
/// `addr` whose length is 0, or the new one's is 0, or whose length is the same and whose
/// datamatch is absent, or the new one's is, or the two are equal. `EINVAL` for unknown
/// flags, a length other than 0, 1, 2, 4, 8, DATAMATCH with length 0, a port range past
/// 0xffff or an address range that wraps; `EBADF` for an `fd` that is not an eventfd;
/// `ENOSPC` past [`MAX_IOEVENTFDS`]. Registrations end when the VM is closed, and may be
/// changed while vCPUs run.
pub const IOEVENTFD: u32 = iow::<IoEventFd>(0x50);
/// Gives every vCPU a local APIC kept in the module (KVM's "split irqchip": the local
/// APICs in the kernel, the PIC and the I/O APIC in userspace); implies [`ENABLE_LAPIC`]'s
/// CPUID bit and IA32_APIC_BASE, which may now also set EXTD (x2APIC, offered in
/// CPUID.1:ECX bit 21) and clear EN (the APIC is then reset and deaf). The module then
/// handles: the x2APIC MSRs 0x800-0x8ff; the xAPIC page at 0xfee0_0000 when the NPF's
/// instruction can be decoded in the module, else an [`exit::MMIO`] that userspace
/// forwards with [`APIC_ACCESS`]; CR8 (the TPR); the choice and injection of interrupts;
/// HLT (the vCPU sleeps in `RUN` until it has an interrupt it can take, an NMI, INIT, SIPI
/// or a signal); the APIC timer (an hrtimer); IPIs between the VM's vCPUs. Userspace still
/// sends the PIC's interrupt to vCPU 0 with [`INTERRUPT`] (its LINT0, ExtINT), sends the
/// I/O APIC's and MSIs' messages with [`SIGNAL_MSI`], and gets [`exit::IOAPIC_EOI`],
/// [`exit::APIC_INIT`] and [`exit::APIC_SIPI`]. `EBUSY` once the VM has a vCPU.
pub const ENABLE_KERNEL_APIC: u32 = io(0x40);
/// Delivers an interrupt message ([`Msi`], KVM_SIGNAL_MSI's shape: the MSI address and
/// data an I/O APIC or a PCI function would write) to the kernel APICs it names. Returns
/// the number of vCPUs that took it. `ENXIO` without [`ENABLE_KERNEL_APIC`], `EINVAL` for
/// an address outside 0xfee0_0000-0xfeef_ffff.
pub const SIGNAL_MSI: u32 = iow::<Msi>(0x41);
/// With [`ENABLE_KERNEL_APIC`]: binds an eventfd to an interrupt message ([`IrqFd`],
/// KVM_IRQFD with an MSI route): each signal of the eventfd, from any thread, delivers
/// `msi` to the kernel APICs as [`SIGNAL_MSI`] would, without userspace or another thread
/// on the way (the eventfd's wake-up delivers it; signals that come before the vCPU took
/// the vector make one interrupt, as edges merge). [`irqfd::DEASSIGN`] removes the
/// binding of `fd`. `ENXIO` without a kernel APIC; `EINVAL` for unknown flags
/// ([`irqfd::RESAMPLE`], KVM's level-triggered resampling, is not done) or an address
/// outside 0xfee0_0000-0xfeef_ffff; `EBADF` if `fd` is not an eventfd; `EEXIST` if it is
/// bound already; `ENOENT` to deassign one that is not; `ENOSPC` past [`MAX_IRQFDS`].
/// Bindings end when the VM is closed.
pub const IRQFD: u32 = iow::<IrqFd>(0x51);
/// Bindings one VM may hold ([`IRQFD`]).
pub const MAX_IRQFDS: usize = 64;

// --- ioctls on a vCPU descriptor ---
/// Runs the vCPU until an exit needs userspace; the exit is described in the [`Run`] page.
pub const RUN: u32 = io(0x20);
/// Reads the general-purpose registers, RIP and RFLAGS ([`Regs`]).
pub const GET_REGS: u32 = ior::<Regs>(0x21);
/// Writes the general-purpose registers, RIP and RFLAGS ([`Regs`]).
pub const SET_REGS: u32 = iow::<Regs>(0x22);
/// Reads segment, descriptor-table and control registers ([`Sregs`]).
pub const GET_SREGS: u32 = ior::<Sregs>(0x23);
/// Writes segment, descriptor-table and control registers ([`Sregs`]).
pub const SET_SREGS: u32 = iow::<Sregs>(0x24);
/// Copies the vCPU's whole VMCB, read-only, for study ([`VmcbDump`]).
pub const GET_VMCB: u32 = ior::<VmcbDump>(0x25);
/// Reads the vCPU's exit counters ([`ExitStats`]).
pub const GET_STATS: u32 = ior::<ExitStats>(0x26);
/// Queues an external interrupt ([`Interrupt`]), as from an interrupt controller in
/// userspace. It is delivered at the first instruction boundary where the guest can take
/// it (RFLAGS.IF set, no interrupt shadow, no other event being delivered). `EEXIST` if
/// one is already queued, `EINVAL` for a vector above 255.
pub const INTERRUPT: u32 = iow::<Interrupt>(0x27);
/// Reads which MSRs the guest accessed, and how often ([`MsrStats`]).
pub const GET_MSR_STATS: u32 = ior::<MsrStats>(0x28);
/// Sets the vCPU's debug controls for a debugger in userspace ([`GuestDebug`]), as KVM's
/// `KVM_SET_GUEST_DEBUG`: single-stepping and software breakpoints, reported as
/// [`exit::DEBUG`]. `EINVAL` for unknown control bits (hardware breakpoints are not
/// offered: the hardware's DR0-DR3 are never given to a guest).
pub const SET_GUEST_DEBUG: u32 = iow::<GuestDebug>(0x29);
/// Sets the ports whose writes are coalesced ([`CoalescedIo`]; all zones empty: none). An
/// `OUT` (not `OUTS`) of 1, 2 or 4 bytes inside a zone does not exit: the module appends
/// it to the run page's `coalesced` list and the guest runs on. Userspace applies the
/// list, in order, after every return from `RUN` and before handling the exit, then
/// empties it (`coalesced_count = 0`). When the list is full the write exits as usual.
/// As KVM's coalesced PIO, for registers whose writes need no answer at once.
pub const SET_COALESCED_IO: u32 = iow::<CoalescedIo>(0x2a);
/// Queues a non-maskable interrupt (vector 2), as from a local APIC in userspace. It is
/// delivered at the first instruction boundary where no other event is being delivered
/// and NMIs are not blocked: from an NMI's delivery until the IRET that ends its handler
/// has executed, a new one waits (as on hardware). RFLAGS.IF does not hold it back.
/// `EEXIST` if one is already queued.
pub const NMI: u32 = io(0x2b);
/// With [`ENABLE_KERNEL_APIC`]: an access to the vCPU's xAPIC page that userspace got as
/// an [`exit::MMIO`] (the module could not decode it), done on the module's APIC
/// ([`ApicAccess`]; a read returns the value in `value`). Only 4-byte accesses at a
/// register's offset reach a register; others read 0 and are ignored (as the emulator's
/// APIC). `ENXIO` without a kernel APIC.
pub const APIC_ACCESS: u32 = iowr::<ApicAccess>(0x42);
/// With [`ENABLE_KERNEL_APIC`]: the module's APIC accesses by kind ([`ApicStats`]).
pub const GET_APIC_STATS: u32 = ior::<ApicStats>(0x43);
/// With [`ENABLE_KERNEL_APIC`]: how many of the VM's kernel APICs hold something their
/// vCPU must wake for (an interrupt it may take, an NMI, INIT or startup IPI not yet
/// taken). Userspace asks before it concludes that a guest whose vCPUs all halted
/// ([`exit::HLT`]) waits forever: a vCPU woken in the module reports it
/// ([`exit::APIC_WAKE`]) only once it runs again. `ENXIO` without a kernel APIC.
pub const APIC_EVENTS: u32 = io(0x44);

/// Capabilities for [`CHECK_CAPABILITY`].
pub mod cap {
    /// Most vCPUs per VM.
    pub const MAX_VCPUS: u64 = 1;
    /// Most guest RAM per VM, in MiB.
    pub const MAX_RAM_MIB: u64 = 2;
    /// The CPU saves the next RIP on exits (CPUID Fn8000_000A EDX[3]): 1 or 0.
    pub const NRIP_SAVE: u64 = 3;
    /// The CPU gives decode assists (instruction bytes on #NPF): 1 or 0.
    pub const DECODE_ASSISTS: u64 = 4;
    /// Number of ASIDs the CPU has.
    pub const ASIDS: u64 = 5;
    /// SVM revision (CPUID Fn8000_000A EAX[7:0]).
    pub const SVM_REVISION: u64 = 6;
    /// Kernel pages the module holds now (VMCBs, page tables, save areas, ...).
    pub const PAGES_HELD: u64 = 7;
    /// Guest RAM pages the module has pinned now.
    pub const PAGES_PINNED: u64 = 8;
    /// [`IOEVENTFD`] exists: the most registrations a VM may have ([`MAX_IOEVENTFDS`]).
    pub const IOEVENTFDS: u64 = 9;
}

/// Size of the [`Run`] page: `mmap` a vCPU descriptor with this length at offset 0.
pub const RUN_MMAP_SIZE: usize = 4096;

/// Most RAM a VM may have in all, and most regions it may have.
pub const MAX_RAM_BYTES: u64 = 4 << 30;
pub const MAX_MEMORY_REGIONS: u32 = 8;
/// Guest-physical addresses must be below this (the NPT maps 48 bits).
pub const MAX_GUEST_PHYS: u64 = 1 << 48;
/// Most vCPUs per VM.
pub const MAX_VCPUS: u32 = 8;
/// Most [`IOEVENTFD`] registrations per VM (KVM allows 1000 per bus; a virtio device needs
/// one per queue).
pub const MAX_IOEVENTFDS: u32 = 256;

/// Flags of [`IoEventFd`] (KVM's values).
pub mod ioeventfd {
    /// Match only writes of the value `datamatch`.
    pub const DATAMATCH: u32 = 1 << 0;
    /// `addr` is a port, not a guest-physical address.
    pub const PIO: u32 = 1 << 1;
    /// Remove the registration instead of adding it.
    pub const DEASSIGN: u32 = 1 << 2;
    pub const ALL: u32 = DATAMATCH | PIO | DEASSIGN;
}

/// The argument of [`IOEVENTFD`] (the layout of KVM's `kvm_ioeventfd` without its padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoEventFd {
    /// The value a write must have, with [`ioeventfd::DATAMATCH`].
    pub datamatch: u64,
    /// A port (with [`ioeventfd::PIO`]) or a guest-physical address.
    pub addr: u64,
    /// Bytes of the write: 1, 2, 4, 8, or 0 for any.
    pub len: u32,
    /// An eventfd of the calling process.
    pub fd: i32,
    /// [`ioeventfd`] flags.
    pub flags: u32,
    pub _pad: u32,
}

/// Guest RAM: `memory_size` bytes at guest-physical `guest_phys_addr`, backed by the
/// calling process's memory at `userspace_addr` (pinned by the module for the VM's life).
/// All three must be page-aligned; regions must not overlap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

/// General-purpose registers, RIP and RFLAGS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register with its hidden part. `attrib` uses the VMCB's packed form
/// (AMD APM vol. 2, 15.5.1): bits 0-3 type, 4 S, 5-6 DPL, 7 P, 8 AVL, 9 L, 10 D/B, 11 G.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// GDTR or IDTR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescTable {
    pub base: u64,
    pub limit: u32,
    pub _pad: u32,
}

/// Segment, descriptor-table and control registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescTable,
    pub idt: DescTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// Guest EFER as the guest sees it. EFER.SVME is forced on in the VMCB (VMRUN requires
    /// it) and hidden from this view.
    pub efer: u64,
}

/// Why `RUN` returned (`Run::exit_reason`).
pub mod exit {
    /// An SVM exit the module does not handle; `Run::hw` has its code and information.
    pub const UNKNOWN: u32 = 0;
    /// Port I/O: `Run::io`, data in `Run::data`.
    pub const IO: u32 = 1;
    /// The guest executed HLT (RIP is past it) and has nothing queued to wake it.
    /// `Run::if_flag` tells the two meanings: with interrupts enabled the guest waits
    /// for one (userspace waits for its next event, then uses `INTERRUPT`); with them
    /// disabled nothing can wake it (it stopped). With a kernel APIC, HLT with interrupts
    /// enabled sleeps in `RUN` and exits only when its APIC timer is not armed (once per
    /// HLT): nothing of the vCPU's own will wake it, so userspace can tell whether anything
    /// else can; the next `RUN` sleeps until something can be delivered ([`APIC_WAKE`]).
    pub const HLT: u32 = 2;
    /// The guest shut down (triple fault); `Run::hw` has the exit information.
    pub const SHUTDOWN: u32 = 3;
    /// VMRUN refused the guest state (VMEXIT_INVALID); `Run::hw` has the exit information.
    pub const FAIL_ENTRY: u32 = 4;
    /// An access to guest-physical memory that is not RAM: `Run::mmio`. RIP is at the
    /// instruction; userspace emulates it (decoding it from guest memory when
    /// `insn_len` is 0), then sets the registers (`SET_REGS`) past it.
    pub const MMIO: u32 = 5;
    /// The guest executed VMMCALL: `Run::hypercall`. RIP is past it; RAX gets
    /// `hypercall.ret` at the next `RUN`.
    pub const HYPERCALL: u32 = 6;
    /// Userspace set `Run::request_interrupt_window` and the guest can now take an
    /// interrupt: `INTERRUPT` will be delivered before the next instruction.
    pub const IRQ_WINDOW_OPEN: u32 = 7;
    /// A debug event userspace asked for with [`SET_GUEST_DEBUG`](super::SET_GUEST_DEBUG):
    /// `Run::debug` says which.
    pub const DEBUG: u32 = 8;
    /// Kernel APIC: the guest ended level-triggered vector `Run::apic.vector` (an EOI):
    /// the I/O APIC clears its remote IRR (KVM_EXIT_IOAPIC_EOI). The guest runs on.
    pub const IOAPIC_EOI: u32 = 9;
    /// Kernel APIC: an INIT reached the vCPU. Userspace resets what it keeps of the CPU;
    /// the next `RUN` sleeps until a startup IPI ([`APIC_SIPI`]).
    pub const APIC_INIT: u32 = 10;
    /// Kernel APIC: a startup IPI with vector `Run::apic.vector` reached the vCPU, which
    /// waited for one: userspace starts it in real mode at `vector << 12`.
    pub const APIC_SIPI: u32 = 11;
    /// Kernel APIC: the vCPU whose HLT was reported ([`HLT`] with interrupts enabled) has
    /// something to do again; the guest runs at the next `RUN`.
    pub const APIC_WAKE: u32 = 12;
}

/// [`Run::apic_status`] bits, set by the module on every return from `RUN` with a kernel
/// APIC.
pub mod apic_status {
    /// The PIC's INTR reaches this vCPU: its LINT0 is ExtINT and unmasked, or its APIC is
    /// globally disabled. Userspace sends the PIC's interrupts with `INTERRUPT` only then.
    pub const ACCEPTS_PIC: u32 = 1 << 0;
}

/// [`GuestDebug::control`] bits (KVM's `KVM_GUESTDBG_*` values).
pub mod guest_debug {
    /// Debugging on; without it the other bits are ignored and the guest's own INT3, TF
    /// and debug registers work as they do without a debugger.
    pub const ENABLE: u32 = 1 << 0;
    /// Stop after every guest instruction (and after every event delivered: the guest
    /// then stands at the handler's first instruction): `DebugExit::exception` 1, DR6.BS.
    /// The module's TF is hidden from the guest (PUSHF, interrupt and exception frames)
    /// and from `GET_REGS`.
    pub const SINGLESTEP: u32 = 1 << 1;
    /// INT3 in the guest is reported (`DebugExit::exception` 3, RIP at the INT3) instead
    /// of being delivered to the guest.
    pub const SW_BP: u32 = 1 << 16;
    /// Delivers a #BP to the guest now, as the INT3 at RIP would have (RIP moves past it):
    /// for an INT3 reported with `SW_BP` that is the guest's own, not the debugger's.
    pub const INJECT_BP: u32 = 1 << 3;
    /// While single-stepping, external interrupts wait (they are not delivered).
    pub const BLOCK_IRQ: u32 = 1 << 21;
    /// Every bit the module knows.
    pub const ALL: u32 = ENABLE | SINGLESTEP | SW_BP | INJECT_BP | BLOCK_IRQ;
}

/// The argument of [`SET_GUEST_DEBUG`] (KVM's `kvm_guest_debug`). `debugreg` is KVM's
/// place for hardware breakpoints; yakvm offers none (no `HW_BP` control bit) and ignores it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// [`guest_debug`] bits.
    pub control: u32,
    pub _pad: u32,
    pub debugreg: [u64; 8],
}

/// Why the guest stopped for the debugger ([`exit::DEBUG`]), as KVM's `kvm_debug_exit_arch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugExit {
    /// 1 (#DB): a single step completed; 3 (#BP): an INT3, RIP at it.
    pub exception: u32,
    pub _pad: u32,
    /// Linear address of the instruction the guest stands at (CS base + RIP).
    pub pc: u64,
    /// DR6 as the CPU reports it (BS, bit 14, for a single step) and the DR7 the guest ran
    /// with (never a breakpoint armed).
    pub dr6: u64,
    pub dr7: u64,
    /// The event delivered during this step (EVENTINJ format: vector in bits 7:0, type in
    /// 10:8, valid in 31), 0 if none: the guest now stands at its handler.
    pub event: u64,
}

/// The argument of [`INTERRUPT`]: the vector to deliver (0..=255: a PIC in real mode
/// sends vectors 8-15).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupt {
    pub vector: u32,
}

/// Reads and writes of one MSR by the guest (`faults`: the accesses answered with #GP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrCount {
    pub index: u32,
    pub reads: u32,
    pub writes: u32,
    pub faults: u32,
}

/// Most distinct MSRs [`MsrStats`] tells apart; later ones are only counted in `others`.
pub const MSR_STATS_ENTRIES: usize = 64;

/// The MSRs a vCPU's guest accessed, in the order it first touched them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MsrStats {
    /// Entries in use.
    pub count: u32,
    /// Accesses to MSRs beyond the first [`MSR_STATS_ENTRIES`] distinct ones.
    pub others: u32,
    pub entries: [MsrCount; MSR_STATS_ENTRIES],
}

impl Default for MsrStats {
    fn default() -> Self {
        Self { count: 0, others: 0, entries: [MsrCount::default(); MSR_STATS_ENTRIES] }
    }
}

/// Zones of [`CoalescedIo`].
pub const COALESCED_ZONES: usize = 4;

/// Ports `port..port + len` (`len` 0: an unused zone).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoalescedZone {
    pub port: u16,
    pub len: u16,
}

/// The argument of [`SET_COALESCED_IO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoalescedIo {
    pub zones: [CoalescedZone; COALESCED_ZONES],
}

/// Entries of `Run::coalesced`.
pub const COALESCED_ENTRIES: usize = 64;

/// One coalesced `OUT`: `size` (1, 2 or 4) bytes of `value` to `port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoalescedWrite {
    pub port: u16,
    pub size: u8,
    pub _pad: u8,
    pub value: u32,
}

/// Port I/O directions (`IoExit::direction`).
pub const IO_OUT: u8 = 0;
pub const IO_IN: u8 = 1;

/// A port access of `count` elements of `size` bytes (`count` > 1 only for INS/OUTS).
/// For OUT/OUTS, the `count * size` bytes written are in `Run::data`; for IN/INS,
/// userspace puts the `count * size` bytes to read in `Run::data` before the next `RUN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    pub size: u8,
    pub direction: u8,
    pub count: u32,
}

/// The raw SVM exit, for exits that carry no more specific description. `exit_code` is
/// the VMCB's EXITCODE; VMEXIT_INVALID reads 0xffff_ffff under QEMU (a 32-bit -1) and
/// u64::MAX on hardware.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwExit {
    pub exit_code: u64,
    pub exit_info_1: u64,
    pub exit_info_2: u64,
    pub rip: u64,
}

/// An access to guest-physical memory outside RAM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioExit {
    pub gpa: u64,
    /// 1 for a write, 0 for a read (from the #NPF error code).
    pub is_write: u8,
    /// Bytes of the faulting instruction in `insn_bytes` (0 without decode assists).
    pub insn_len: u8,
    pub _pad: [u8; 6],
    pub insn_bytes: [u8; 16],
}

/// A VMMCALL: the number in RAX, arguments in RBX, RCX, RDX, RSI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallExit {
    pub nr: u64,
    pub args: [u64; 4],
    /// Set by userspace: the value RAX gets.
    pub ret: u64,
}

/// A copy of a VMCB (AMD APM vol. 2, appendix B).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VmcbDump {
    pub bytes: [u8; 4096],
}

/// Exits of one vCPU by kind, since it was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitStats {
    /// Every #VMEXIT.
    pub total: u64,
    /// RUN calls that returned to userspace.
    pub to_user: u64,
    pub io: u64,
    pub mmio: u64,
    pub hlt: u64,
    pub cpuid: u64,
    pub msr: u64,
    pub hypercall: u64,
    /// Physical interrupts, NMIs, SMIs, INITs taken by the host.
    pub interrupt: u64,
    pub shutdown: u64,
    /// SVM instructions (and others) answered with #UD.
    pub invalid_opcode: u64,
    pub fail_entry: u64,
    pub other: u64,
    /// Interrupts delivered from `INTERRUPT` (NMIs not included: `nmi`).
    pub injected: u64,
    /// Events re-delivered because an exit interrupted their delivery (EXITINTINFO).
    pub reinjected: u64,
    /// Exits when the guest became able to take an interrupt (VINTR).
    pub irq_window: u64,
    /// Port writes coalesced ([`SET_COALESCED_IO`]) instead of going to userspace.
    pub coalesced: u64,
    /// NMIs delivered from [`NMI`].
    pub nmi: u64,
    /// Port and MMIO writes that signalled an [`IOEVENTFD`] instead of going to userspace
    /// (counted in `io` or `mmio` too).
    pub ioeventfd: u64,
}

/// An interrupt message for [`SIGNAL_MSI`] (Intel SDM 11.11: MSI address and data).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msi {
    /// 0xfee0_0000 | destination ID << 12 | redirection hint << 3 | destination mode << 2.
    pub address: u64,
    /// Vector (7-0), delivery mode (10-8), level (14), trigger mode (15).
    pub data: u32,
    pub _pad: u32,
}

/// [`IrqFd::flags`].
pub mod irqfd {
    /// Remove the binding of `fd` instead of adding one.
    pub const DEASSIGN: u32 = 1 << 0;
    /// KVM's resample eventfd (level-triggered interrupts): not supported (`EINVAL`).
    pub const RESAMPLE: u32 = 1 << 1;
}

/// The argument of [`IRQFD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqFd {
    /// An eventfd of the calling process.
    pub fd: i32,
    /// [`irqfd`] flags.
    pub flags: u32,
    /// The message each signal delivers.
    pub msi: Msi,
}

/// An xAPIC page access for [`APIC_ACCESS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicAccess {
    /// Offset in the page (0-0xfff).
    pub offset: u32,
    /// 1, 2, 4 or 8 bytes.
    pub size: u32,
    pub is_write: u32,
    /// The value written, or (on return) the value read.
    pub value: u32,
}

/// [`ApicStats::by_register`]'s slots: one per xAPIC register (offset / 16, the x2APIC
/// MSR's index - 0x800), then IA32_TSC_DEADLINE.
pub const APIC_STATS_REGISTERS: usize = 65;
/// [`ApicStats::by_register`]'s slot of IA32_TSC_DEADLINE.
pub const APIC_STATS_TSC_DEADLINE: usize = 64;

/// The module's APIC work for one vCPU ([`GET_APIC_STATS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicStats {
    /// Register reads and writes handled in the module (x2APIC MSRs, decoded xAPIC
    /// accesses), not counting the kinds below.
    pub reads: u64,
    pub writes: u64,
    pub eois: u64,
    /// ICR writes (IPIs sent, SELF IPI included).
    pub icr: u64,
    /// Timer register writes, and timer interrupts raised.
    pub timer_writes: u64,
    pub timer_fired: u64,
    /// xAPIC accesses forwarded by userspace ([`APIC_ACCESS`]).
    pub forwarded: u64,
    /// Interrupts the APIC delivered (injected).
    pub delivered: u64,
    /// HLTs that waited in the module, and wake-ups (kicks) seen.
    pub halts: u64,
    pub kicks: u64,
    /// HLTs that ended without sleeping: a kick came before the module slept, or while it
    /// polled for one (halt polling).
    pub halt_polls: u64,
    /// x2APIC MSR accesses refused with #GP.
    pub faults: u64,
    /// Reads and writes handled in the module (forwarded ones included) by register:
    /// slot offset / 16 of the xAPIC page, or MSR - 0x800 in x2APIC mode, and
    /// [`APIC_STATS_TSC_DEADLINE`].
    pub by_register: [u64; APIC_STATS_REGISTERS],
}

impl Default for ApicStats {
    fn default() -> Self {
        let z = 0;
        Self {
            reads: z,
            writes: z,
            eois: z,
            icr: z,
            timer_writes: z,
            timer_fired: z,
            forwarded: z,
            delivered: z,
            halts: z,
            kicks: z,
            halt_polls: z,
            faults: z,
            by_register: [0; APIC_STATS_REGISTERS],
        }
    }
}

/// What [`exit::IOAPIC_EOI`] and [`exit::APIC_SIPI`] carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApicExit {
    pub vector: u32,
    pub _pad: u32,
}

/// Register sets the run page carries (`Run::sync_valid`, `Run::sync_dirty`).
pub mod sync {
    /// `SyncRegs::regs`: as `GET_REGS` / `SET_REGS`.
    pub const REGS: u32 = 1 << 0;
    /// `SyncRegs::sregs`: as `GET_SREGS` / `SET_SREGS`.
    pub const SREGS: u32 = 1 << 1;
    pub const ALL: u32 = REGS | SREGS;
}

/// The vCPU's registers in the run page, as KVM's `kvm_sync_regs`: an exit that needs
/// them (MMIO, which userspace emulates) costs no `GET_*`/`SET_*` ioctls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncRegs {
    pub regs: Regs,
    pub sregs: Sregs,
}

/// Bytes of `Run::data`.
pub const RUN_DATA_SIZE: usize = 2048;

/// The page shared between the module and userspace for each vCPU (see [`RUN_MMAP_SIZE`]).
/// The module writes it only while `RUN` is in progress on the same descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// One of the [`exit`] constants.
    pub exit_reason: u32,
    /// Set by userspace: return from `RUN` with [`exit::IRQ_WINDOW_OPEN`] as soon as the
    /// guest can take an interrupt (and no interrupt is queued).
    pub request_interrupt_window: u8,
    /// Set by userspace (typically by a signal handler that kicks the vCPU thread): the
    /// next `RUN` returns `EINTR` at once, without entering the guest. Closes the race of
    /// a kick that arrives just before `RUN`. Userspace clears it.
    pub immediate_exit: u8,
    /// Set by the module on every return from `RUN`: `INTERRUPT` would be delivered
    /// before the guest's next instruction (RFLAGS.IF set, no interrupt shadow, nothing
    /// queued or being delivered).
    pub ready_for_interrupt_injection: u8,
    /// Set by the module on every return from `RUN`: the guest's RFLAGS.IF.
    pub if_flag: u8,
    pub io: IoExit,
    pub hw: HwExit,
    pub mmio: MmioExit,
    pub hypercall: HypercallExit,
    pub debug: DebugExit,
    /// Set by userspace: the register sets ([`sync`]) the module copies into `sync_regs`
    /// on every return from `RUN`.
    pub sync_valid: u32,
    /// Set by userspace: the register sets it changed in `sync_regs`. The next `RUN` loads
    /// them first (exactly as `SET_REGS` / `SET_SREGS` would) and clears this.
    pub sync_dirty: u32,
    pub sync_regs: SyncRegs,
    /// Writes coalesced since userspace last emptied the list ([`SET_COALESCED_IO`]):
    /// `coalesced[..coalesced_count]`, oldest first. Userspace sets the count back to 0.
    pub coalesced_count: u32,
    pub _pad: u32,
    pub coalesced: [CoalescedWrite; COALESCED_ENTRIES],
    pub data: [u8; RUN_DATA_SIZE],
    /// [`exit::IOAPIC_EOI`], [`exit::APIC_SIPI`].
    pub apic: ApicExit,
    /// Kernel APIC: [`apic_status`] bits, set on every return from `RUN`.
    pub apic_status: u32,
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<Run>() <= RUN_MMAP_SIZE);
const _: () = assert!(core::mem::size_of::<Regs>() == 18 * 8);
const _: () = assert!(core::mem::size_of::<Segment>() == 16);
const _: () = assert!(core::mem::size_of::<Sregs>() == 8 * 16 + 2 * 16 + 5 * 8);
const _: () = assert!(core::mem::size_of::<MemoryRegion>() == 32);
const _: () = assert!(core::mem::size_of::<ExitStats>() == 19 * 8);
const _: () = assert!(core::mem::size_of::<IoEventFd>() == 32);
const _: () = assert!(core::mem::size_of::<MsrStats>() == 8 + 16 * MSR_STATS_ENTRIES);
const _: () = assert!(core::mem::size_of::<MmioExit>() == 32);
const _: () = assert!(core::mem::size_of::<Msi>() == 16);
const _: () = assert!(core::mem::size_of::<IrqFd>() == 24);
const _: () = assert!(core::mem::size_of::<ApicAccess>() == 16);
const _: () = assert!(core::mem::size_of::<ApicStats>() == (12 + APIC_STATS_REGISTERS) * 8);
const _: () = assert!(core::mem::size_of::<GuestDebug>() == 8 + 8 * 8);
const _: () = assert!(core::mem::size_of::<DebugExit>() == 5 * 8);
const _: () = assert!(core::mem::size_of::<SyncRegs>() == 18 * 8 + 8 * 16 + 2 * 16 + 5 * 8);
