//! The PC-compatible machine's devices (`--machine pc`): each one a plain state machine,
//! tested on the host without a VM.

pub mod acpi;
pub mod acpi_pm;
pub mod apic;
pub mod board;
pub mod cmos;
pub mod console;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod mptable;
pub mod pci;
pub mod pci_config;
pub mod pci_msi;
pub mod pci_msix;
pub mod pic;
pub mod pit;
pub mod testdev;
pub mod uart;
pub mod virtio_pci;
pub mod world;
