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
    /// 32-bit protected mode, paging off, flat 4 GiB code (selector 0x08) and data (0x10)
    /// segments as GRUB leaves them, interrupts off (Multiboot: EAX = 0x2BADB002, EBX =
    /// the information structure).
    Protected32 { eip: u32, eax: u32, ebx: u32 },
    /// 64-bit mode with the first GiBs identity-mapped, interrupts off, a GDT whose
    /// selector 0x10 is flat 64-bit code and 0x18 flat data (Linux's 64-bit boot
    /// protocol: RSI = the boot_params "zero page").
    Long64 { rip: u64, rsi: u64 },
}

/// A range of the pc machine's memory map (the e820 map of Linux and the Multiboot
/// memory map number their types alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub base: u64,
    pub length: u64,
    pub kind: u32,
}

/// Usable RAM, in both maps.
pub const RAM: u32 = 1;
/// Reserved: not for the kernel.
pub const RESERVED: u32 = 2;

/// The PC's extended BIOS data area, VGA hole and BIOS area, reserved on every PC.
pub const EBDA: u64 = 0x9_fc00;
const VGA: u64 = 0xa_0000;
const BIOS: u64 = 0xf_0000;
const MIB: u64 = crate::layout::MIB;

/// The memory map of the pc machine with `ram` bytes of RAM whose top, from `usable_top`
/// on, is the emulator's (its page tables and GDT): RAM but for the PC's EBDA and BIOS
/// holes and that top, then PCI's ECAM window in the PCI hole, reserved (an OS uses ECAM
/// only where the firmware reserved it: Linux checks the MCFG's range against the e820
/// map). RAM ends at or below the PCI hole (`layout::PCI_HOLE_START`; `--mem` is checked).
/// Empty ranges are left out.
pub fn memory_map(ram: u64, usable_top: u64) -> Vec<MemoryRange> {
    use crate::layout::{PCI_ECAM_BASE, PCI_ECAM_SIZE};
    [
        (0, EBDA, RAM),
        (EBDA, VGA - EBDA, RESERVED),
        (BIOS, MIB - BIOS, RESERVED),
        (MIB, usable_top - MIB, RAM),
        (usable_top, ram - usable_top, RESERVED),
        (PCI_ECAM_BASE, PCI_ECAM_SIZE, RESERVED),
    ]
    .into_iter()
    .filter(|&(_, length, _)| length > 0)
    .map(|(base, length, kind)| MemoryRange { base, length, kind })
    .collect()
}

pub mod linux;
pub mod multiboot;
pub mod multiboot2;
