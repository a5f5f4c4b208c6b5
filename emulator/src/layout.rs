//! Guest memory layout: where the emulator puts the guest and what it builds for it.
//!
//! ```text
//! 0                                  RAM - 64 KiB                       RAM
//! | guest image at load address ... stack (grows down) | boot area      |
//!                                                      | PML4 PDPT PD×4 GDT
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
/// Four page directories of 2 MiB pages: an identity map of the first 4 GiB.
pub const PD_OFFSET: u64 = 0x2000;
pub const PD_COUNT: u64 = 4;
pub const GDT_OFFSET: u64 = PD_OFFSET + PD_COUNT * 0x1000;

/// Start of the boot area for `ram` bytes of RAM.
pub fn boot_area(ram: u64) -> u64 {
    ram - BOOT_AREA_SIZE
}

/// Initial stack pointer: 16-byte aligned, just below the boot area.
pub fn initial_rsp(ram: u64) -> u64 {
    boot_area(ram) & !0xf
}
