//! Booting kernels straight into memory, as QEMU's `-kernel` does: a Linux bzImage
//! (`linux`) or a Multiboot v1 kernel (`multiboot`), told apart by their headers. Each
//! loader checks its file and produces a [`BootImage`]: the bytes to place in guest RAM
//! and the CPU state at entry, which the machine applies.

/// What a kernel loader produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    /// Bytes to copy into guest RAM: (guest-physical address, bytes). Checked by the
    /// loader to lie inside RAM and to leave the emulator's boot area alone.
    pub writes: Vec<(u64, Vec<u8>)>,
    pub entry: KernelEntry,
}

/// The CPU state a kernel is entered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelEntry {
    /// 32-bit protected mode, paging off, flat 4 GiB code and data segments, interrupts
    /// off (Multiboot: EAX = 0x2BADB002, EBX = the information structure).
    Protected32 { eip: u32, eax: u32, ebx: u32 },
    /// 64-bit mode with the first GiBs identity-mapped, interrupts off, a GDT whose
    /// selector 0x10 is flat 64-bit code and 0x18 flat data (Linux's 64-bit boot
    /// protocol: RSI = the boot_params "zero page").
    Long64 { rip: u64, rsi: u64 },
}

pub mod linux;
pub mod multiboot;
