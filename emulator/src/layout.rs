//! Guest memory layout: where the emulator puts the guest and what it builds for it.
//!
//! ```text
//! 0                                  RAM - 64 KiB                       RAM
//! | guest image at load address ... stack (grows down) | boot area      |
//!                                                      | PML4 PDPT PDs.. GDT
//! ```
//! `[0, RAM - 64 KiB)` belongs to the guest; the top 64 KiB hold the page tables and GDT
//! the emulator builds for long-mode entry.

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Size of the reserved area at the top of RAM.
pub const BOOT_AREA_SIZE: u64 = 64 * KIB;
/// Smallest RAM that leaves the guest some room below the boot area.
pub const MIN_RAM: u64 = 128 * KIB;
/// Largest RAM (the module's limit).
pub const MAX_RAM: u64 = yakvm_abi::MAX_RAM_BYTES;

/// Offsets inside the boot area.
pub const PML4_OFFSET: u64 = 0;
pub const PDPT_OFFSET: u64 = 0x1000;
/// Page directories of 2 MiB pages, one per GiB of the identity map (at least 4).
pub const PD_OFFSET: u64 = 0x2000;
/// The GDT, in the last page of the boot area.
pub const GDT_OFFSET: u64 = BOOT_AREA_SIZE - 0x1000;
/// How far the identity map can reach: one page directory per GiB between the PDPT and
/// the GDT.
pub const MAX_IDENTITY_MAP: u64 = (GDT_OFFSET - PD_OFFSET) / 0x1000 * GIB;

/// Start of the boot area for `ram` bytes of RAM.
pub fn boot_area(ram: u64) -> u64 {
    ram - BOOT_AREA_SIZE
}

/// Initial stack pointer: 16-byte aligned, just below the boot area.
pub fn initial_rsp(ram: u64) -> u64 {
    boot_area(ram) & !0xf
}

/// The pc machine's ACPI tables (`pc::acpi`) go in the E segment of the PC's BIOS area,
/// `[0xe0000, 0xf0000)`: an OS without firmware services finds the RSDP by scanning
/// 0xe0000-0xfffff (ACPI 6.5, 5.2.5.1), and the F segment above holds the MP table
/// (`pc::mptable`). The memory map (`kernel::memory_map`) never gives this range as RAM.
pub const ACPI_START: u64 = 0xe_0000;
pub const ACPI_SIZE: u64 = 0x1_0000;

/// Default MMIO window: the first GiB boundary at or above the end of RAM, and at least
/// 3 GiB (0xc000_0000), so every guest of up to 3 GiB finds its devices at the same place.
pub fn default_mmio_base(ram: u64) -> u64 {
    ram.next_multiple_of(GIB).max(3 * GIB)
}

/// The pc machine's PCI hole: `[PCI_HOLE_START, 4 GiB)` is never RAM. It holds the seed's
/// MMIO registers (at the default `--mmio-base`, 0xc0000000), the window where PCI BARs go,
/// ECAM, the I/O APIC (0xfec00000) and the local APICs (0xfee00000). The pc machine's RAM
/// ends at or below it (RAM above 4 GiB is not supported).
pub const PCI_HOLE_START: u64 = 3 * GIB;
/// The 32-bit memory window for PCI BARs (the host bridge's `_CRS`).
pub const PCI_MMIO_WINDOW_START: u64 = 0xd000_0000;
pub const PCI_MMIO_WINDOW_SIZE: u64 = 256 * MIB;
/// ECAM, bus 0 only (1 MiB: 32 devices of 8 functions of 4 KiB).
pub const PCI_ECAM_BASE: u64 = PCI_MMIO_WINDOW_START + PCI_MMIO_WINDOW_SIZE;
pub const PCI_ECAM_SIZE: u64 = MIB;
