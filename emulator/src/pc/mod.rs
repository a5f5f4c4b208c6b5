//! The PC-compatible machine's devices (`--machine pc`): each one a plain state machine,
//! tested on the host without a VM.

pub mod acpi;
pub mod acpi_pm;
pub mod apic;
pub mod bios;
pub mod board;
pub mod cmos;
pub mod console;
pub mod i8042;
pub mod ide;
pub mod ioapic;
pub mod irqfd_route;
pub mod lapic;
pub mod mptable;
pub mod pci;
pub mod pci_config;
pub mod pci_intx;
pub mod pci_msi;
pub mod pci_msix;
pub mod pci_testdev;
pub mod pic;
pub mod pit;
pub mod ps2kbd;
pub mod testdev;
pub mod uart;
pub mod vga;
pub mod virtio_pci;
pub mod world;
