//! The ACPI tables of the pc machine (ACPI 6.5, chapter 5), built from a small description
//! of the board ([`AcpiDesc`]) with rust-vmm's `acpi_tables` (each table a typed value, the
//! DSDT's AML composed from typed pieces, every checksum computed by the crate), and placed
//! in the E segment of the BIOS area ([`crate::layout::ACPI_START`], 64 KiB):
//!
//! | offset | table | what it says |
//! |---|---|---|
//! | 0x00 | RSDP | revision 2, the XSDT's address; at a 16-byte boundary in 0xe0000-0xfffff, where an OS scans for it (and Linux's `boot_params.acpi_rsdp_addr`) |
//! | 0x40 | FACS | 64 bytes, 64-byte aligned (needed when HW_REDUCED_ACPI is clear); no waking vector |
//! | then | DSDT | `\_S0`, `\_S5` (SLP_TYP 0 and 5), and under `\_SB`: a processor device (ACPI0007) per vCPU, the PCI host bridge `PCI0` (below), COM1 (PNP0501), the RTC (PNP0B00), the i8042's keyboard (PNP0303) and mouse (PNP0F13) ports |
//! | then | FADT | revision 6.5; PM1a event block, PM1a control block, PM timer (32-bit) at [`acpi_pm`](super::acpi_pm)'s ports; the SCI on an ISA line; no SMI command port (always in ACPI mode); the reset register; fixed power button; IA-PC boot flags "legacy devices", "8042", "no VGA" |
//! | then | MADT | the local APICs' address, PCAT_COMPAT (8259 PICs present), a local APIC per vCPU, the I/O APIC, interrupt source overrides IRQ0 -> GSI 2 (edge, high) and SCI -> same GSI (level, active high), LINT1 of every processor as NMI |
//! | then | MCFG | ECAM: segment 0, buses 0 to 0, at [`pci::ECAM_BASE`] |
//! | then | XSDT | the FADT, the MADT and the MCFG (the FADT points at the FACS by its 32-bit FIRMWARE_CTRL, at the DSDT by its 64-bit X_DSDT) |
//!
//! Every table is 16-byte aligned (the FACS 64). The bytes are one image ([`AcpiImage`]):
//! [`write`] copies it into guest RAM. Nothing of it is RAM in the memory map the kernel
//! loaders give (`kernel::memory_map` has a hole at 0xa0000-0xf0000 and reserves
//! 0xf0000-0xfffff), so no guest allocates over the tables.
//!
//! The DSDT's ISA devices have the resources the board gives them (ports, and ISA IRQs as
//! extended interrupt descriptors: edge-triggered, active high, exclusive); an OS finds
//! these devices through them (Linux's PNP layer: without PNP0303 it would not probe the
//! i8042 under ACPI).
//!
//! # PCI
//!
//! The host bridge `\_SB.PCI0` (ACPI 6.5, 6.1.5 and PCI Firmware 3.3, 4.3): `_HID`
//! PNP0A08 (a PCI Express root bridge: it has ECAM) with PNP0A03 (PCI) as `_CID`, `_SEG` 0,
//! `_BBN` 0, `_UID` 0, and a `_CRS` of what it decodes: the bus numbers ECAM covers (0 to
//! 0), the configuration ports 0xcf8-0xcff (consumed), the I/O ports on either side of
//! them (0-0xcf7, 0xd00-0xffff: the ISA devices' ports are under it, as on a PC), and the
//! 32-bit memory window for BARs (`layout::PCI_MMIO_WINDOW_START`, 256 MiB in the PCI
//! hole). Its `_PRT` routes INTA#-INTD# of every device 1-31 to I/O APIC GSIs 16-23
//! ([`prt_gsi`], the usual swizzle so that neighbouring slots spread over the lines;
//! level-triggered and active low, as PCI interrupts are). The MCFG gives ECAM's base
//! (segment 0, buses 0 to 0). No `_OSC`: the OS keeps nothing from the firmware, and
//! Linux says the platform does not support `_OSC` and goes on.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::{aml, facs::FACS, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml, AmlSink};

use acpi_tables::mcfg::MCFG;

use super::acpi_pm::{self, SLP_TYP_S0, SLP_TYP_S5};
use super::{cmos, i8042, ioapic, lapic, pci, uart};
use crate::disk::Dma;
use crate::layout;

/// Who made the tables (OEM ID and OEM table ID in every header).
pub const OEM_ID: [u8; 6] = *b"YAKVM ";
pub const OEM_TABLE_ID: [u8; 8] = *b"YAKVMPC ";
const OEM_REVISION: u32 = 1;

/// The pc machine's ACPI PM block (PM1a event at +0, PM1a control at +4, PM timer at +8),
/// where PIIX4 and ICH9 boards put it.
pub const PM_BASE: u16 = 0x600;
/// The SCI's ISA line (as on PIIX4 and ICH9 boards). Level-triggered, active high.
pub const SCI_IRQ: u8 = 9;
/// The reset register: the PC chipsets' reset control register, and the value that
/// resets (bit 2 "reset CPU" with bit 1 "system reset", as coreboot's Intel boards give
/// it; the board resets on bit 2).
pub const RESET_PORT: u16 = 0xcf9;
pub const RESET_VALUE: u8 = 0x06;

/// Where the RSDP must lie for an OS's scan to find it.
const RSDP_SCAN: std::ops::Range<u64> = 0xe_0000..0x10_0000;
const RSDP_LEN: u64 = 36;
const FACS_ALIGN: u64 = 64;
const TABLE_ALIGN: u64 = 16;
/// The ISA IRQs a device of the board may have (IRQ 2 is the PICs' cascade).
const ISA_IRQS: u8 = 16;
const CASCADE_IRQ: u8 = 2;
/// The PIT's IRQ 0 arrives on the I/O APIC's pin 2 (the MP table says the same).
const IRQ0_GSI: u32 = super::apic::IRQ0_PIN as u32;

/// DSDT revision 2: integers are 64 bits.
const DSDT_REVISION: u8 = 2;
/// MADT revision 5 (ACPI 6.3-6.4; nothing past revision 1's structures is used).
const MADT_REVISION: u8 = 5;
const MADT_HEADER_LEN: u32 = 44;
/// MADT flags: the PC's dual 8259 PICs are present (ACPI 6.5, table 5.20).
const MADT_PCAT_COMPAT: u32 = 1 << 0;
/// MADT structure types (ACPI 6.5, table 5.21).
const MADT_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;
/// MPS INTI flags (ACPI 6.5, table 5.26).
const INTI_CONFORMS: u16 = 0;
const INTI_ACTIVE_HIGH: u16 = 0b01;
const INTI_LEVEL: u16 = 0b11 << 2;
/// A local APIC NMI structure's "every processor".
const ALL_PROCESSORS: u8 = 0xff;
const LINT1: u8 = 1;

/// FADT IA-PC boot architecture flags (ACPI 6.5, table 5.11).
const BOOT_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_8042: u16 = 1 << 1;
const BOOT_VGA_NOT_PRESENT: u16 = 1 << 2;
/// FADT P_LVL2_LAT and P_LVL3_LAT values that say "no C2", "no C3".
const NO_C2: u16 = 101;
const NO_C3: u16 = 1001;

/// The I/O APIC as the MADT gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicDesc {
    pub id: u8,
    pub address: u32,
    /// The GSI of its pin 0.
    pub gsi_base: u32,
}

/// What the tables describe: the board's CPUs, interrupt controllers, ACPI registers and
/// where the tables go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiDesc {
    /// The APIC ID of each vCPU (index = vCPU = ACPI processor UID).
    pub apic_ids: Vec<u8>,
    pub lapic_address: u32,
    pub ioapic: IoApicDesc,
    /// The SCI's ISA IRQ (1 to 15, not 2); its GSI is the same number.
    pub sci_irq: u8,
    /// The ACPI PM block's first port (`acpi_pm`'s offsets from there).
    pub pm_base: u16,
    /// The reset register (an I/O port) and the value that resets.
    pub reset_port: u16,
    pub reset_value: u8,
    /// Where the tables go: `[area_start, area_start + area_size)`, the RSDP at the start.
    pub area_start: u64,
    pub area_size: u64,
    /// Guest RAM (from 0): the area must lie inside it.
    pub ram: u64,
    pub pci: PciDesc,
}

/// The PCI root bus as the tables give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciDesc {
    /// ECAM's base and the buses it covers (from `bus_first`).
    pub ecam_base: u64,
    pub bus_first: u8,
    pub bus_last: u8,
    /// The 32-bit memory window for BARs: `[mmio_start, mmio_start + mmio_size)`.
    pub mmio_start: u32,
    pub mmio_size: u32,
    /// The GSI of the first of the I/O APIC pins PCI's INTx lines go to (8 of them).
    pub intx_gsi_base: u32,
}

/// The I/O APIC pins the `_PRT` uses: 8 lines from `intx_gsi_base`.
pub const INTX_LINES: u32 = 8;
/// GSIs 16-23: the I/O APIC pins past the 16 ISA ones.
pub const INTX_GSI_BASE: u32 = 16;

/// The GSI INTx `pin` (0 = INTA#) of `device` is routed to: the swizzle a PCI-to-PCI
/// bridge does (device + pin), over the 8 lines.
pub fn prt_gsi(desc: &PciDesc, device: u8, pin: u8) -> u32 {
    desc.intx_gsi_base + (u32::from(device) + u32::from(pin)) % INTX_LINES
}

impl AcpiDesc {
    /// The pc machine with `cpus` vCPUs (APIC IDs 0..cpus, the I/O APIC's ID `cpus`, as the
    /// MP table says) and `ram` bytes of RAM.
    pub fn pc(cpus: u32, ram: u64) -> Self {
        Self {
            apic_ids: (0..cpus).map(|i| i as u8).collect(),
            lapic_address: lapic::LAPIC_BASE as u32,
            ioapic: IoApicDesc { id: cpus as u8, address: ioapic::IOAPIC_BASE as u32, gsi_base: 0 },
            sci_irq: SCI_IRQ,
            pm_base: PM_BASE,
            reset_port: RESET_PORT,
            reset_value: RESET_VALUE,
            area_start: layout::ACPI_START,
            area_size: layout::ACPI_SIZE,
            ram,
            pci: PciDesc::pc(),
        }
    }
}

impl PciDesc {
    /// The pc machine's PCI root bus.
    pub fn pc() -> Self {
        Self {
            ecam_base: pci::ECAM_BASE,
            bus_first: pci::BUS_FIRST,
            bus_last: pci::BUS_LAST,
            mmio_start: layout::PCI_MMIO_WINDOW_START as u32,
            mmio_size: layout::PCI_MMIO_WINDOW_SIZE as u32,
            intx_gsi_base: INTX_GSI_BASE,
        }
    }
}

/// Why the tables cannot be built or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error("ACPI: {0} vCPUs: the tables describe 1 to 255")]
    BadCpuCount(usize),
    #[error("ACPI: APIC ID {0} given twice, or 0xff (the broadcast ID)")]
    BadApicId(u8),
    #[error("ACPI: the SCI on ISA IRQ {0}: it must be 1 to 15 and not 2 (the cascade)")]
    BadSciIrq(u8),
    #[error("ACPI: the tables' area at {start:#x} is not where a scan finds the RSDP (16-byte aligned, in 0xe0000-0xfffff)")]
    RsdpNotScannable { start: u64 },
    #[error("ACPI: the tables need {need} bytes at {start:#x}; the area has {size}")]
    TooLarge { start: u64, need: u64, size: u64 },
    #[error("ACPI: the tables' area ends at {end:#x}, past the end of RAM at {ram:#x} (--mem too small for ACPI)")]
    OutsideRam { end: u64, ram: u64 },
    #[error("ACPI: PCI's INTx lines at GSIs {0}..{1} are not all I/O APIC pins")]
    BadIntxGsi(u32, u32),
    #[error("ACPI: PCI's memory window at {start:#x} with size {size:#x} is empty or passes 4 GiB")]
    BadPciWindow { start: u32, size: u32 },
    #[error("ACPI: writing the tables to guest RAM at {0:#x} failed")]
    Write(u64),
}

/// One table of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub signature: [u8; 4],
    pub address: u64,
    pub length: usize,
}

/// The tables as bytes for guest RAM at `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiImage {
    pub base: u64,
    pub bytes: Vec<u8>,
    /// The RSDP's guest-physical address (for `boot_params.acpi_rsdp_addr`).
    pub rsdp: u64,
    /// Every table but the RSDP, in the order placed.
    pub tables: Vec<Placed>,
}

impl AcpiImage {
    fn place(&mut self, signature: [u8; 4], align: u64, table: &dyn Aml) -> u64 {
        let offset = (self.bytes.len() as u64).next_multiple_of(align);
        self.bytes.resize(offset as usize, 0);
        table.to_aml_bytes(&mut self.bytes);
        let address = self.base + offset;
        self.tables.push(Placed { signature, address, length: self.bytes.len() - offset as usize });
        address
    }
}

/// AML bytes made elsewhere, as a piece of a larger AML object.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

fn aml_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// `Name(_S<n>_, Package () { SLP_TYPa, SLP_TYPb, 0, 0 })`: the PM1a and PM1b SLP_TYP
/// values of a sleep state (ACPI 6.5, 7.4.2).
fn sleep_state(name: &str, slp_typ: u8) -> aml::Name {
    aml::Name::new(name.into(), &aml::Package::new(vec![&slp_typ, &slp_typ, &0u8, &0u8]))
}

/// `Device(<name>) { _HID, _CRS }` of an ISA device with fixed resources.
fn isa_device(name: &str, eisa_id: &str, resources: Vec<&dyn Aml>) -> Raw {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new(eisa_id));
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(resources));
    Raw(aml_bytes(&aml::Device::new(name.into(), vec![&hid, &crs])))
}

/// An ISA IRQ as an interrupt resource: consumer, edge-triggered, active high, exclusive.
fn isa_irq(irq: u8) -> aml::Interrupt {
    aml::Interrupt::new(true, true, false, false, u32::from(irq))
}

/// One fixed I/O range of `len` ports.
fn ports(base: u16, len: u8) -> aml::IO {
    aml::IO::new(base, base, 1, len)
}

/// The DSDT's AML (after the table header).
fn dsdt_aml(desc: &AcpiDesc) -> Vec<u8> {
    let mut aml = Vec::new();
    sleep_state("_S0_", SLP_TYP_S0).to_aml_bytes(&mut aml);
    sleep_state("_S5_", SLP_TYP_S5).to_aml_bytes(&mut aml);

    let mut sb = Vec::new();
    // Processor devices (ACPI 6.5, 8.4): _UID is the MADT's processor UID.
    for uid in 0..desc.apic_ids.len() {
        let hid = aml::Name::new("_HID".into(), &"ACPI0007");
        let uid_name = aml::Name::new("_UID".into(), &(uid as u32));
        aml::Device::new(format!("C{uid:03X}").as_str().into(), vec![&hid, &uid_name]).to_aml_bytes(&mut sb);
    }
    sb.extend(pci_host_bridge(&desc.pci));
    let (com1_ports, com1_irq) = (ports(uart::COM1_BASE, 8), isa_irq(uart::COM1_IRQ));
    let (rtc_ports, rtc_irq) = (ports(cmos::INDEX_PORT, 2), isa_irq(RTC_IRQ));
    let (kbd_data, kbd_command, kbd_irq) = (ports(i8042::DATA_PORT, 1), ports(i8042::COMMAND_PORT, 1), isa_irq(KEYBOARD_IRQ));
    let mouse_irq = isa_irq(MOUSE_IRQ);
    for device in [
        isa_device("COM1", "PNP0501", vec![&com1_ports, &com1_irq]),
        isa_device("RTC_", "PNP0B00", vec![&rtc_ports, &rtc_irq]),
        isa_device("KBD_", "PNP0303", vec![&kbd_data, &kbd_command, &kbd_irq]),
        isa_device("MOU_", "PNP0F13", vec![&mouse_irq]),
    ] {
        sb.extend(device.0);
    }
    aml.extend(aml::Scope::raw("\\_SB_".into(), sb));
    aml
}

/// `\_SB.PCI0`, the host bridge (see the module's comment).
fn pci_host_bridge(pci: &PciDesc) -> Vec<u8> {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"));
    let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
    let seg = aml::Name::new("_SEG".into(), &0u8);
    let bbn = aml::Name::new("_BBN".into(), &pci.bus_first);
    let uid = aml::Name::new("_UID".into(), &0u8);
    let buses = aml::AddressSpace::new_bus_number(u16::from(pci.bus_first), u16::from(pci.bus_last));
    let config_ports = ports(pci::CONFIG_ADDRESS, 8);
    let io_below = aml::AddressSpace::new_io(0u16, pci::CONFIG_ADDRESS - 1, None);
    let io_above = aml::AddressSpace::new_io(pci::CONFIG_ADDRESS + 8, u16::MAX, None);
    let memory = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        pci.mmio_start,
        pci.mmio_start + (pci.mmio_size - 1),
        None,
    );
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&buses, &config_ports, &io_below, &io_above, &memory]));
    // _PRT entries (ACPI 6.5, 6.2.13): { address (device << 16 | 0xffff: any function),
    // pin (0 = INTA#), source (0: the fourth field is a GSI), GSI }.
    let entries: Vec<(u32, u8, u32)> = (1..32u8)
        .flat_map(|device| (0..4u8).map(move |pin| (device, pin)))
        .map(|(device, pin)| (u32::from(device) << 16 | 0xffff, pin, prt_gsi(pci, device, pin)))
        .collect();
    let packages: Vec<aml::Package> = entries.iter().map(|(address, pin, gsi)| aml::Package::new(vec![address, pin, &0u8, gsi])).collect();
    let prt = aml::Package::new(packages.iter().map(|p| p as &dyn Aml).collect());
    let prt = aml::Name::new("_PRT".into(), &prt);
    aml_bytes(&aml::Device::new("PCI0".into(), vec![&hid, &cid, &seg, &bbn, &uid, &crs, &prt]))
}

fn mcfg(pci: &PciDesc) -> MCFG {
    let mut table = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.add_ecam(pci.ecam_base, 0, pci.bus_first, pci.bus_last);
    table
}

/// The RTC's, the keyboard's and the PS/2 mouse's ISA IRQs.
const RTC_IRQ: u8 = 8;
const KEYBOARD_IRQ: u8 = 1;
const MOUSE_IRQ: u8 = 12;

fn dsdt(desc: &AcpiDesc) -> Sdt {
    let mut table = Sdt::new(*b"DSDT", 36, DSDT_REVISION, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&dsdt_aml(desc));
    table
}

fn io_register(bits: u8, access: AccessSize, port: u16) -> GAS {
    GAS::new(AddressSpace::SystemIo, bits, 0, access, u64::from(port))
}

fn fadt(desc: &AcpiDesc, facs: u64, dsdt: u64) -> acpi_tables::fadt::FADT {
    let evt = desc.pm_base + acpi_pm::PM1_STS;
    let cnt = desc.pm_base + acpi_pm::PM1_CNT;
    let tmr = desc.pm_base + acpi_pm::PM_TMR;
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        // The FACS by its 32-bit address, X_FIRMWARE_CTRL 0 (ACPI 6.5, 5.2.9: the 64-bit
        // field is for a FACS above 4 GiB, and then FIRMWARE_CTRL must be 0): OSes read
        // either, and kvm-unit-tests' `s3` reads FIRMWARE_CTRL only.
        .firmware_ctrl_32(u32::try_from(facs).expect("the E segment is below 4 GiB"))
        .dsdt_64(dsdt)
        // WBINVD works; every CPU has C1 (HLT); the sleep button, if any, is not a fixed
        // feature (the power button is: PWR_BUTTON clear); no RTC wake status in PM1.
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::ResetRegSup);
    if acpi_pm::TIMER_BITS == 32 {
        f = f.flag(Flags::TmrValExt);
    }
    f.sci_int = u16::from(desc.sci_irq).into();
    // SMI_CMD, ACPI_ENABLE and ACPI_DISABLE stay 0: no SMM, always in ACPI mode.
    f.pm1a_evt_blk = u32::from(evt).into();
    f.pm1a_cnt_blk = u32::from(cnt).into();
    f.pm_tmr_blk = u32::from(tmr).into();
    f.pm1_evt_len = acpi_pm::PM1_EVT_LEN;
    f.pm1_cnt_len = acpi_pm::PM1_CNT_LEN;
    f.pm_tmr_len = acpi_pm::PM_TMR_LEN;
    f.x_pm1a_evt_blk = io_register(8 * acpi_pm::PM1_EVT_LEN, AccessSize::Undefined, evt);
    f.x_pm1a_cnt_blk = io_register(8 * acpi_pm::PM1_CNT_LEN, AccessSize::WordAccess, cnt);
    f.x_pm_tmr_blk = io_register(8 * acpi_pm::PM_TMR_LEN, AccessSize::DwordAccess, tmr);
    f.p_lvl2_lat = NO_C2.into();
    f.p_lvl3_lat = NO_C3.into();
    f.century = cmos::REG_CENTURY;
    f.iapc_boot_arch = (BOOT_LEGACY_DEVICES | BOOT_8042 | BOOT_VGA_NOT_PRESENT).into();
    f.reset_reg = io_register(8, AccessSize::ByteAccess, desc.reset_port);
    f.reset_value = desc.reset_value;
    f.finalize()
}

/// MADT interrupt source override (ACPI 6.5, 5.2.12.5), for an ISA IRQ.
struct InterruptSourceOverride {
    source: u8,
    gsi: u32,
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(MADT_INTERRUPT_SOURCE_OVERRIDE);
        sink.byte(10);
        sink.byte(0); // bus: ISA
        sink.byte(self.source);
        sink.dword(self.gsi);
        sink.word(self.flags);
    }
}

/// MADT local APIC NMI (ACPI 6.5, 5.2.12.7).
struct LocalApicNmi {
    processor_uid: u8,
    flags: u16,
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(MADT_LOCAL_APIC_NMI);
        sink.byte(6);
        sink.byte(self.processor_uid);
        sink.word(self.flags);
        sink.byte(self.lint);
    }
}

/// The MADT. Built as a generic table (`Sdt`, checksummed by the crate at each append)
/// because the crate's `MADT` cannot set the PCAT_COMPAT flag.
fn madt(desc: &AcpiDesc) -> Sdt {
    let mut table = Sdt::new(*b"APIC", MADT_HEADER_LEN, MADT_REVISION, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.write_u32(36, desc.lapic_address);
    table.write_u32(40, MADT_PCAT_COMPAT);
    for (uid, &apic_id) in desc.apic_ids.iter().enumerate() {
        table.append_slice(&aml_bytes(&ProcessorLocalApic::new(uid as u8, apic_id, EnabledStatus::Enabled)));
    }
    let io = desc.ioapic;
    table.append_slice(&aml_bytes(&IoApic::new(io.id, io.address, io.gsi_base)));
    let overrides = [
        InterruptSourceOverride { source: 0, gsi: io.gsi_base + IRQ0_GSI, flags: INTI_CONFORMS },
        InterruptSourceOverride { source: desc.sci_irq, gsi: io.gsi_base + u32::from(desc.sci_irq), flags: INTI_ACTIVE_HIGH | INTI_LEVEL },
    ];
    for o in &overrides {
        table.append_slice(&aml_bytes(o));
    }
    table.append_slice(&aml_bytes(&LocalApicNmi { processor_uid: ALL_PROCESSORS, flags: INTI_CONFORMS, lint: LINT1 }));
    table
}

fn check(desc: &AcpiDesc) -> Result<(), AcpiError> {
    let n = desc.apic_ids.len();
    if !(1..=255).contains(&n) {
        return Err(AcpiError::BadCpuCount(n));
    }
    for (i, &id) in desc.apic_ids.iter().enumerate() {
        if id == 0xff || desc.apic_ids[..i].contains(&id) {
            return Err(AcpiError::BadApicId(id));
        }
    }
    if !(1..ISA_IRQS).contains(&desc.sci_irq) || desc.sci_irq == CASCADE_IRQ {
        return Err(AcpiError::BadSciIrq(desc.sci_irq));
    }
    let start = desc.area_start;
    if !start.is_multiple_of(TABLE_ALIGN) || !RSDP_SCAN.contains(&start) || start + RSDP_LEN > RSDP_SCAN.end {
        return Err(AcpiError::RsdpNotScannable { start });
    }
    let intx = (desc.pci.intx_gsi_base, desc.pci.intx_gsi_base + INTX_LINES);
    if intx.0 < desc.ioapic.gsi_base + u32::from(ISA_IRQS) || intx.1 > desc.ioapic.gsi_base + ioapic::PINS as u32 {
        return Err(AcpiError::BadIntxGsi(intx.0, intx.1));
    }
    let (start_w, size_w) = (desc.pci.mmio_start, desc.pci.mmio_size);
    if size_w == 0 || start_w.checked_add(size_w - 1).is_none() {
        return Err(AcpiError::BadPciWindow { start: start_w, size: size_w });
    }
    let end = start + desc.area_size;
    if end > desc.ram {
        return Err(AcpiError::OutsideRam { end, ram: desc.ram });
    }
    Ok(())
}

/// The tables for `desc`, as an image for its area.
pub fn build(desc: &AcpiDesc) -> Result<AcpiImage, AcpiError> {
    check(desc)?;
    let mut image = AcpiImage { base: desc.area_start, bytes: vec![0; RSDP_LEN as usize], rsdp: desc.area_start, tables: Vec::new() };
    let facs = image.place(*b"FACS", FACS_ALIGN, &FACS::new());
    let dsdt = image.place(*b"DSDT", TABLE_ALIGN, &dsdt(desc));
    let fadt = image.place(*b"FACP", TABLE_ALIGN, &fadt(desc, facs, dsdt));
    let madt = image.place(*b"APIC", TABLE_ALIGN, &madt(desc));
    let mcfg = image.place(*b"MCFG", TABLE_ALIGN, &mcfg(&desc.pci));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in [fadt, madt, mcfg] {
        xsdt.add_entry(table);
    }
    let xsdt = image.place(*b"XSDT", TABLE_ALIGN, &xsdt);
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt));
    image.bytes[..rsdp.len()].copy_from_slice(&rsdp);
    let need = image.bytes.len() as u64;
    if need > desc.area_size {
        return Err(AcpiError::TooLarge { start: desc.area_start, need, size: desc.area_size });
    }
    Ok(image)
}

/// Builds the tables for `desc` and writes them into guest RAM; returns the RSDP's address.
pub fn write(desc: &AcpiDesc, mem: &impl Dma) -> Result<u64, AcpiError> {
    let image = build(desc)?;
    mem.write(image.base, &image.bytes).ok_or(AcpiError::Write(image.base))?;
    Ok(image.rsdp)
}

#[cfg(test)]
mod tests {
    //! The tables parsed back from guest memory the way an OS reads them (RSDP scan, XSDT,
    //! fixed offsets of ACPI 6.5's tables, a small AML decoder for the DSDT), written from
    //! the specification, not from `acpi_tables`.

    use std::collections::BTreeMap;

    use super::*;
    use crate::pc::mptable;
    use crate::sys::GuestMemory;

    const RAM: u64 = 2 * layout::MIB;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Guest RAM with the MP table and the ACPI tables written as the machine does.
    fn machine(desc: &AcpiDesc) -> (GuestMemory, u64) {
        let mem = GuestMemory::new(desc.ram as usize).unwrap();
        mem.write(mptable::MP_TABLE_ADDR, &mptable::mp_table(desc.apic_ids.len() as u32)).unwrap();
        let rsdp = write(desc, &mem).unwrap();
        (mem, rsdp)
    }

    fn read(mem: &GuestMemory, at: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        mem.read(at, &mut out).unwrap();
        out
    }

    /// A whole table at `at`: its length from the header, its checksum checked.
    fn table(mem: &GuestMemory, at: u64, signature: &[u8; 4]) -> Vec<u8> {
        let header = read(mem, at, 36);
        assert_eq!(&header[0..4], signature, "signature at {at:#x}");
        let table = read(mem, at, u32_at(&header, 4) as usize);
        assert_eq!(sum(&table), 0, "{} checksum", String::from_utf8_lossy(signature));
        assert_eq!(&table[10..16], b"YAKVM ");
        table
    }

    /// The RSDP as an OS's scan of 0xe0000-0xfffff finds it: "RSD PTR " at a 16-byte
    /// boundary, with both checksums right.
    fn scan_for_rsdp(mem: &GuestMemory) -> u64 {
        let area = read(mem, 0xe_0000, 0x2_0000);
        let at = (0..area.len())
            .step_by(16)
            .find(|&i| area[i..].starts_with(b"RSD PTR ") && sum(&area[i..i + 20]) == 0)
            .expect("an RSDP in 0xe0000-0xfffff");
        let rsdp = &area[at..at + 36];
        assert_eq!(rsdp[15], 2, "revision 2 (XSDT)");
        assert_eq!(u32_at(rsdp, 20), 36, "length");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        0xe_0000 + at as u64
    }

    /// Every table the XSDT lists, by signature.
    fn xsdt_tables(mem: &GuestMemory, rsdp: u64) -> BTreeMap<[u8; 4], u64> {
        let xsdt = table(mem, u64_at(&read(mem, rsdp, 36), 24), b"XSDT");
        assert_eq!((xsdt.len() - 36) % 8, 0);
        let mut tables = BTreeMap::new();
        for entry in xsdt[36..].chunks(8) {
            let at = u64_at(entry, 0);
            let signature: [u8; 4] = read(mem, at, 4).try_into().unwrap();
            assert!(tables.insert(signature, at).is_none(), "one of each");
        }
        tables
    }

    #[test]
    fn the_rsdp_is_found_by_a_scan_and_leads_to_every_table() {
        for cpus in [1, 2, 4, 8] {
            let desc = AcpiDesc::pc(cpus, RAM);
            let (mem, rsdp) = machine(&desc);
            assert_eq!(scan_for_rsdp(&mem), rsdp);
            assert_eq!(rsdp, layout::ACPI_START);
            let tables = xsdt_tables(&mem, rsdp);
            assert_eq!(tables.keys().collect::<Vec<_>>(), [b"APIC", b"FACP", b"MCFG"]);
            let fadt = table(&mem, tables[b"FACP"], b"FACP");
            let dsdt = table(&mem, u64_at(&fadt, 140), b"DSDT");
            assert_eq!(dsdt[8], 2, "DSDT revision 2: 64-bit integers");
            let facs_at = u64::from(u32_at(&fadt, 36));
            assert_eq!(facs_at % 64, 0, "FACS 64-byte aligned");
            let facs = read(&mem, facs_at, 64);
            assert_eq!((&facs[0..4], u32_at(&facs, 4)), (&b"FACS"[..], 64));
            table(&mem, tables[b"APIC"], b"APIC");
            // Everything inside the area, below the MP table.
            let image = build(&desc).unwrap();
            assert!(image.base + image.bytes.len() as u64 <= mptable::MP_TABLE_ADDR);
            for t in &image.tables {
                assert!(t.address % 16 == 0 && t.address + t.length as u64 <= layout::ACPI_START + layout::ACPI_SIZE);
            }
            assert_eq!(&read(&mem, mptable::MP_TABLE_ADDR, 4), b"_MP_", "the MP table is intact");
        }
    }

    /// A FADT field: the byte offsets of ACPI 6.5, table 5.9.
    #[test]
    fn the_fadt_gives_the_pm_registers_the_sci_and_the_reset_register() {
        let desc = AcpiDesc::pc(2, RAM);
        let (mem, rsdp) = machine(&desc);
        let fadt = table(&mem, xsdt_tables(&mem, rsdp)[b"FACP"], b"FACP");
        assert_eq!(fadt.len(), 276, "an ACPI 6 FADT");
        assert_eq!((fadt[8], fadt[131]), (6, 5), "revision 6.5");
        assert_eq!(u16_at(&fadt, 46), 9, "SCI_INT");
        assert_eq!(u32_at(&fadt, 48), 0, "SMI_CMD: always in ACPI mode");
        assert_eq!(u32_at(&fadt, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(&fadt, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(&fadt, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(&fadt, 68), 0, "PM1b_CNT_BLK");
        assert_eq!(u32_at(&fadt, 72), 0, "PM2_CNT_BLK");
        assert_eq!(u32_at(&fadt, 76), 0x608, "PM_TMR_BLK");
        assert_eq!((u32_at(&fadt, 80), u32_at(&fadt, 84)), (0, 0), "no GPE blocks");
        assert_eq!(&fadt[88..94], &[4, 2, 0, 4, 0, 0], "PM1_EVT_LEN .. GPE1_BLK_LEN");
        assert!(u16_at(&fadt, 96) > 100 && u16_at(&fadt, 98) > 1000, "no C2, no C3");
        assert_eq!(fadt[108], 0x32, "CENTURY");
        assert_eq!(u16_at(&fadt, 109), 0b111, "IA-PC boot: legacy devices, 8042, no VGA");
        let flags = u32_at(&fadt, 112);
        let has = |bit: u32| flags & (1 << bit) != 0;
        assert!(has(0) && has(2), "WBINVD, PROC_C1");
        assert!(!has(4) && has(5), "fixed power button, no fixed sleep button");
        assert_eq!(has(8), acpi_pm::TIMER_BITS == 32, "TMR_VAL_EXT as the PM timer is");
        assert!(has(8), "the PM timer is 32 bits");
        assert!(has(10), "RESET_REG_SUP");
        assert!(!has(20), "not HW_REDUCED_ACPI: the PM blocks are there");
        // The reset register: system I/O, 8 bits at 0xcf9, value 6.
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!((u64_at(&fadt, 120), fadt[128]), (0xcf9, 0x06));
        // The 64-bit blocks agree with the 32-bit ones (ACPICA compares them).
        let gas = |at: usize| (fadt[at], fadt[at + 1], fadt[at + 2], u64_at(&fadt, at + 4));
        assert_eq!(gas(148), (1, 32, 0, 0x600), "X_PM1a_EVT_BLK");
        assert_eq!(gas(172), (1, 16, 0, 0x604), "X_PM1a_CNT_BLK");
        assert_eq!(gas(208), (1, 32, 0, 0x608), "X_PM_TMR_BLK");
        for (at, what) in [(160, "X_PM1b_EVT"), (184, "X_PM1b_CNT"), (196, "X_PM2_CNT"), (220, "X_GPE0"), (232, "X_GPE1"), (244, "SLEEP_CONTROL"), (256, "SLEEP_STATUS")] {
            assert_eq!(gas(at), (0, 0, 0, 0), "{what}");
        }
        // The FACS by its 32-bit address only (FIRMWARE_CTRL, checked above), the DSDT by
        // its 64-bit one only.
        assert_eq!((u64_at(&fadt, 132), u32_at(&fadt, 40)), (0, 0), "X_FIRMWARE_CTRL, DSDT");
    }

    /// (type, bytes) of each MADT structure.
    fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, len) = (madt[at], usize::from(madt[at + 1]));
            assert!(len >= 2 && at + len <= madt.len(), "structure at {at} fits");
            entries.push((kind, madt[at..at + len].to_vec()));
            at += len;
        }
        entries
    }

    #[test]
    fn the_madt_has_a_local_apic_per_vcpu_the_io_apic_and_the_overrides() {
        for cpus in 1..=8u32 {
            let desc = AcpiDesc::pc(cpus, RAM);
            let (mem, rsdp) = machine(&desc);
            let madt = table(&mem, xsdt_tables(&mem, rsdp)[b"APIC"], b"APIC");
            assert_eq!(u32_at(&madt, 36), 0xfee0_0000, "local APIC address");
            assert_eq!(u32_at(&madt, 40), 1, "PCAT_COMPAT");
            let entries = madt_entries(&madt);
            let of = |kind: u8| entries.iter().filter(move |e| e.0 == kind).map(|e| e.1.clone());
            // (UID, APIC ID, enabled) per vCPU, in order.
            let lapics: Vec<_> = of(0).map(|e| (e.len(), e[2], e[3], u32_at(&e, 4))).collect();
            let expect: Vec<_> = (0..cpus as u8).map(|i| (8, i, i, 1)).collect();
            assert_eq!(lapics, expect);
            // The I/O APIC: ID = the number of CPUs (as in the MP table), GSI base 0.
            let ioapics: Vec<_> = of(1).map(|e| (e.len(), e[2], u32_at(&e, 4), u32_at(&e, 8))).collect();
            assert_eq!(ioapics, [(12, cpus as u8, 0xfec0_0000, 0)]);
            // Overrides: (bus, source, GSI, flags).
            let overrides: Vec<_> = of(2).map(|e| (e.len(), e[2], e[3], u32_at(&e, 4), u16_at(&e, 8))).collect();
            assert_eq!(overrides, [(10, 0, 0, 2, 0), (10, 0, 9, 9, 0b1101)], "IRQ0 -> GSI 2; SCI level, active high");
            // LINT1 of every processor is the NMI.
            let nmis: Vec<_> = of(4).map(|e| (e.len(), e[2], u16_at(&e, 3), e[5])).collect();
            assert_eq!(nmis, [(6, 0xff, 0, 1)]);
            assert_eq!(entries.len(), cpus as usize + 4, "nothing else");
        }
    }

    // --- A small AML decoder (ACPI 6.5, 20.2): the DSDT's objects by their full path. ---

    #[derive(Debug, Clone, PartialEq)]
    enum Obj {
        Int(u64),
        Str(String),
        Pkg(Vec<Obj>),
        Buf(Vec<u8>),
        Device,
    }

    struct Aml<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl Aml<'_> {
        fn byte(&mut self) -> u8 {
            let v = self.b[self.at];
            self.at += 1;
            v
        }

        fn le(&mut self, n: usize) -> u64 {
            let v = (0..n).fold(0u64, |v, i| v | u64::from(self.b[self.at + i]) << (8 * i));
            self.at += n;
            v
        }

        /// PkgLength: the end (exclusive) of what it measures, from its first byte.
        fn pkg_end(&mut self) -> usize {
            let start = self.at;
            let lead = self.byte();
            let follow = usize::from(lead >> 6);
            let len = if follow == 0 {
                usize::from(lead & 0x3f)
            } else {
                (0..follow).fold(usize::from(lead & 0x0f), |len, i| len | usize::from(self.byte()) << (4 + 8 * i))
            };
            start + len
        }

        /// A NameString, resolved against `scope` into a full path like `\_SB_.COM1`.
        fn name(&mut self, scope: &str) -> String {
            let mut path = String::from(scope);
            let mut segs = 1;
            match self.b[self.at] {
                b'\\' => {
                    self.at += 1;
                    path.clear();
                }
                b'^' => panic!("parent prefixes are not used"),
                _ => {}
            }
            match self.b[self.at] {
                0x2e => {
                    self.at += 1;
                    segs = 2;
                }
                0x2f => {
                    self.at += 1;
                    segs = usize::from(self.byte());
                }
                0x00 => {
                    self.at += 1;
                    segs = 0;
                }
                _ => {}
            }
            for _ in 0..segs {
                let seg = std::str::from_utf8(&self.b[self.at..self.at + 4]).unwrap().to_string();
                assert!(seg.bytes().all(|c| c == b'_' || c.is_ascii_uppercase() || c.is_ascii_digit()), "NameSeg {seg:?}");
                self.at += 4;
                if !path.is_empty() && path != "\\" {
                    path.push('.');
                }
                path.push_str(&seg);
            }
            if path.starts_with('\\') { path } else { format!("\\{path}") }
        }

        fn data(&mut self) -> Obj {
            match self.byte() {
                0x00 => Obj::Int(0),
                0x01 => Obj::Int(1),
                0xff => Obj::Int(u64::MAX),
                0x0a => Obj::Int(self.le(1)),
                0x0b => Obj::Int(self.le(2)),
                0x0c => Obj::Int(self.le(4)),
                0x0e => Obj::Int(self.le(8)),
                0x0d => {
                    let end = self.at + self.b[self.at..].iter().position(|&c| c == 0).unwrap();
                    let s = String::from_utf8(self.b[self.at..end].to_vec()).unwrap();
                    self.at = end + 1;
                    Obj::Str(s)
                }
                0x12 => {
                    let end = self.pkg_end();
                    let count = self.byte();
                    let items: Vec<_> = (0..count).map(|_| self.data()).collect();
                    assert_eq!(self.at, end, "package length");
                    Obj::Pkg(items)
                }
                0x11 => {
                    let end = self.pkg_end();
                    let Obj::Int(size) = self.data() else { panic!("buffer size") };
                    let bytes = self.b[self.at..end].to_vec();
                    assert_eq!(bytes.len() as u64, size, "buffer size");
                    self.at = end;
                    Obj::Buf(bytes)
                }
                op => panic!("data object opcode {op:#x} at {}", self.at - 1),
            }
        }

        /// A TermList up to `end` in `scope`, into `ns`.
        fn terms(&mut self, end: usize, scope: &str, ns: &mut BTreeMap<String, Obj>) {
            while self.at < end {
                match self.byte() {
                    0x08 => {
                        let name = self.name(scope);
                        let value = self.data();
                        assert!(ns.insert(name.clone(), value).is_none(), "{name} defined twice");
                    }
                    0x10 => {
                        let body_end = self.pkg_end();
                        let name = self.name(scope);
                        self.terms(body_end, &name, ns);
                    }
                    0x5b if self.b[self.at] == 0x82 => {
                        self.at += 1;
                        let body_end = self.pkg_end();
                        let name = self.name(scope);
                        assert!(ns.insert(name.clone(), Obj::Device).is_none(), "{name} defined twice");
                        self.terms(body_end, &name, ns);
                    }
                    op => panic!("unexpected opcode {op:#x} at {}", self.at - 1),
                }
            }
            assert_eq!(self.at, end, "the TermList ends where its package does");
        }
    }

    fn namespace(dsdt: &[u8]) -> BTreeMap<String, Obj> {
        let mut ns = BTreeMap::new();
        Aml { b: dsdt, at: 36 }.terms(dsdt.len(), "\\", &mut ns);
        ns
    }

    /// A compressed EISA ID (as AML stores it) as its 7 characters.
    fn eisa_id(obj: &Obj) -> String {
        let Obj::Int(v) = obj else { panic!("_HID {obj:?}") };
        let v = (*v as u32).swap_bytes();
        let letter = |shift: u32| char::from(b'@' + ((v >> shift) & 0x1f) as u8);
        format!("{}{}{}{:04X}", letter(26), letter(21), letter(16), v & 0xffff)
    }

    #[derive(Debug, PartialEq)]
    enum Resource {
        /// min, max, alignment, length
        Io(u16, u16, u8, u8),
        /// consumer, edge, active low, shared, IRQs
        Irq(bool, bool, bool, bool, Vec<u32>),
        /// An address space descriptor (word or dword): resource type (0 memory, 1 I/O,
        /// 2 bus numbers), producer, min, max, length.
        Window(u8, bool, u64, u64, u64),
    }

    /// The resource descriptors of a `_CRS` buffer (ACPI 6.5, 6.4), up to the end tag.
    fn resources(obj: &Obj) -> Vec<Resource> {
        let Obj::Buf(b) = obj else { panic!("_CRS {obj:?}") };
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let tag = b[at];
            if tag & 0x80 == 0 {
                let len = usize::from(tag & 7);
                match tag >> 3 {
                    0x08 => {
                        assert_eq!((len, b[at + 1]), (7, 1), "16-bit decode");
                        out.push(Resource::Io(u16_at(b, at + 2), u16_at(b, at + 4), b[at + 6], b[at + 7]));
                    }
                    0x0f => {
                        assert_eq!(at + 2, b.len(), "the end tag ends the buffer");
                        return out;
                    }
                    other => panic!("small resource {other:#x}"),
                }
                at += 1 + len;
            } else {
                let len = usize::from(u16_at(b, at + 1));
                match tag {
                    0x89 => {
                        let flags = b[at + 3];
                        let irqs = (0..usize::from(b[at + 4])).map(|i| u32_at(b, at + 5 + 4 * i)).collect();
                        out.push(Resource::Irq(flags & 1 != 0, flags & 2 != 0, flags & 4 != 0, flags & 8 != 0, irqs));
                    }
                    // Word (0x88) and dword (0x87) address space descriptors (ACPI 6.5,
                    // 6.4.3.5): type, general flags (bit 0 consumer; min and max fixed),
                    // type flags, then granularity, min, max, translation, length.
                    0x88 | 0x87 => {
                        let w = if tag == 0x88 { 2 } else { 4 };
                        let field = |i: usize| -> u64 {
                            let f = at + 6 + i * w;
                            if w == 2 { u64::from(u16_at(b, f)) } else { u64::from(u32_at(b, f)) }
                        };
                        assert_eq!(len, 3 + 5 * w);
                        assert_eq!(b[at + 4] & 0b1100, 0b1100, "min and max fixed");
                        assert_eq!((field(0), field(3)), (0, 0), "granularity and translation 0");
                        out.push(Resource::Window(b[at + 3], b[at + 4] & 1 == 0, field(1), field(2), field(4)));
                    }
                    other => panic!("large resource {other:#x}"),
                }
                at += 3 + len;
            }
        }
    }

    fn dsdt_of(desc: &AcpiDesc) -> Vec<u8> {
        let (mem, rsdp) = machine(desc);
        let fadt = table(&mem, xsdt_tables(&mem, rsdp)[b"FACP"], b"FACP");
        table(&mem, u64_at(&fadt, 140), b"DSDT")
    }

    #[test]
    fn the_dsdt_has_s5_for_power_off() {
        let ns = namespace(&dsdt_of(&AcpiDesc::pc(1, RAM)));
        let s5 = u64::from(acpi_pm::SLP_TYP_S5);
        assert_eq!(s5, 5);
        assert_eq!(ns["\\_S5_"], Obj::Pkg(vec![Obj::Int(s5), Obj::Int(s5), Obj::Int(0), Obj::Int(0)]));
        assert_eq!(ns["\\_S0_"], Obj::Pkg(vec![Obj::Int(0); 4]));
        assert!(!ns.keys().any(|k| ["\\_S1_", "\\_S2_", "\\_S3_", "\\_S4_"].contains(&k.as_str())), "no other sleep state");
    }

    #[test]
    fn the_dsdt_describes_the_cpus_and_the_isa_devices() {
        for cpus in [1, 3, 8] {
            let ns = namespace(&dsdt_of(&AcpiDesc::pc(cpus, RAM)));
            for uid in 0..cpus {
                let cpu = format!("\\_SB_.C{uid:03X}");
                assert_eq!(ns[&cpu], Obj::Device);
                assert_eq!(ns[&format!("{cpu}._HID")], Obj::Str("ACPI0007".into()));
                assert_eq!(ns[&format!("{cpu}._UID")], Obj::Int(u64::from(uid)), "the MADT's processor UID");
            }
            let edge_high = |irq| Resource::Irq(true, true, false, false, vec![irq]);
            let devices = [
                ("COM1", "PNP0501", vec![Resource::Io(0x3f8, 0x3f8, 1, 8), edge_high(4)]),
                ("RTC_", "PNP0B00", vec![Resource::Io(0x70, 0x70, 1, 2), edge_high(8)]),
                ("KBD_", "PNP0303", vec![Resource::Io(0x60, 0x60, 1, 1), Resource::Io(0x64, 0x64, 1, 1), edge_high(1)]),
                ("MOU_", "PNP0F13", vec![edge_high(12)]),
            ];
            for (name, hid, crs) in devices {
                let path = format!("\\_SB_.{name}");
                assert_eq!(ns[&path], Obj::Device);
                assert_eq!(eisa_id(&ns[&format!("{path}._HID")]), hid);
                assert_eq!(resources(&ns[&format!("{path}._CRS")]), crs, "{name}");
            }
            // The two sleep states, and each device with its names: nothing else.
            assert_eq!(ns.len(), 2 + 3 * cpus as usize + 4 * 3 + 8, "{:?}", ns.keys().collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_dsdt_has_the_pci_host_bridge_with_its_windows_and_routing() {
        let ns = namespace(&dsdt_of(&AcpiDesc::pc(2, RAM)));
        assert_eq!(ns["\\_SB_.PCI0"], Obj::Device);
        assert_eq!(eisa_id(&ns["\\_SB_.PCI0._HID"]), "PNP0A08");
        assert_eq!(eisa_id(&ns["\\_SB_.PCI0._CID"]), "PNP0A03");
        for name in ["_SEG", "_BBN", "_UID"] {
            assert_eq!(ns[&format!("\\_SB_.PCI0.{name}")], Obj::Int(0), "{name}");
        }
        let crs = resources(&ns["\\_SB_.PCI0._CRS"]);
        assert_eq!(
            crs,
            [
                Resource::Window(2, true, 0, 0, 1),
                Resource::Io(0xcf8, 0xcf8, 1, 8),
                Resource::Window(1, true, 0, 0xcf7, 0xcf8),
                Resource::Window(1, true, 0xd00, 0xffff, 0xf300),
                Resource::Window(0, true, 0xd000_0000, 0xdfff_ffff, 0x1000_0000),
            ],
            "bus 0, the config ports, I/O around them, the memory window"
        );
        // The memory window is in the PCI hole, clear of ECAM and the APICs.
        let (start, end) = (layout::PCI_MMIO_WINDOW_START, layout::PCI_MMIO_WINDOW_START + layout::PCI_MMIO_WINDOW_SIZE);
        assert!(start >= layout::PCI_HOLE_START && end <= pci::ECAM_BASE && end <= ioapic::IOAPIC_BASE);
        // _PRT: every pin of every device 1-31, to GSIs 16-23, each line used alike.
        let Obj::Pkg(prt) = &ns["\\_SB_.PCI0._PRT"] else { panic!("_PRT") };
        assert_eq!(prt.len(), 31 * 4);
        let mut per_gsi = BTreeMap::new();
        for (i, entry) in prt.iter().enumerate() {
            let (device, pin) = (i as u64 / 4 + 1, i as u64 % 4);
            let Obj::Pkg(fields) = entry else { panic!("_PRT entry") };
            assert_eq!(fields[..3], [Obj::Int(device << 16 | 0xffff), Obj::Int(pin), Obj::Int(0)]);
            let Obj::Int(gsi) = fields[3] else { panic!("GSI") };
            assert_eq!(gsi, 16 + (device + pin) % 8);
            *per_gsi.entry(gsi).or_insert(0) += 1;
        }
        assert_eq!(per_gsi.keys().copied().collect::<Vec<_>>(), (16..24).collect::<Vec<_>>());
        assert!(per_gsi.values().all(|&n| n == 15 || n == 16), "{per_gsi:?}");
    }

    #[test]
    fn the_mcfg_gives_ecam_for_bus_0() {
        let (mem, rsdp) = machine(&AcpiDesc::pc(1, RAM));
        let mcfg = table(&mem, xsdt_tables(&mem, rsdp)[b"MCFG"], b"MCFG");
        assert_eq!(mcfg.len(), 44 + 16, "the header, 8 reserved bytes, one allocation");
        assert_eq!(mcfg[8], 1, "revision");
        let entry = &mcfg[44..];
        assert_eq!((u64_at(entry, 0), u16_at(entry, 8), entry[10], entry[11]), (0xe000_0000, 0, 0, 0));
        assert_eq!(u64_at(entry, 0), pci::ECAM_BASE);
        // The window the bus numbers say is the window the board decodes.
        assert_eq!((u64::from(entry[11]) + 1) << 20, pci::ECAM_SIZE);
    }

    #[test]
    fn bad_descriptions_are_refused() {
        let good = AcpiDesc::pc(2, RAM);
        let with = |f: &dyn Fn(&mut AcpiDesc)| {
            let mut d = good.clone();
            f(&mut d);
            build(&d).err()
        };
        assert_eq!(with(&|d| d.apic_ids.clear()), Some(AcpiError::BadCpuCount(0)));
        assert_eq!(with(&|d| d.apic_ids = (0..=255).collect()), Some(AcpiError::BadCpuCount(256)));
        assert_eq!(with(&|d| d.apic_ids = vec![0, 1, 0]), Some(AcpiError::BadApicId(0)));
        assert_eq!(with(&|d| d.apic_ids = vec![0, 0xff]), Some(AcpiError::BadApicId(0xff)));
        for irq in [0, 2, 16] {
            assert_eq!(with(&|d| d.sci_irq = irq), Some(AcpiError::BadSciIrq(irq)));
        }
        assert_eq!(with(&|d| d.area_start = 0xd_0000), Some(AcpiError::RsdpNotScannable { start: 0xd_0000 }));
        assert_eq!(with(&|d| d.area_start = 0xe_0008), Some(AcpiError::RsdpNotScannable { start: 0xe_0008 }));
        assert_eq!(with(&|d| d.pci.intx_gsi_base = 8), Some(AcpiError::BadIntxGsi(8, 16)));
        assert_eq!(with(&|d| d.pci.intx_gsi_base = 17), Some(AcpiError::BadIntxGsi(17, 25)));
        assert_eq!(with(&|d| d.pci.mmio_size = 0), Some(AcpiError::BadPciWindow { start: 0xd000_0000, size: 0 }));
        assert_eq!(with(&|d| d.pci.mmio_start = 0xf800_0000), Some(AcpiError::BadPciWindow { start: 0xf800_0000, size: 0x1000_0000 }));
        assert_eq!(with(&|d| d.area_size = 0x100), Some(AcpiError::TooLarge { start: 0xe_0000, need: build(&good).unwrap().bytes.len() as u64, size: 0x100 }));
        // 512 KiB of RAM ends below the BIOS area.
        assert_eq!(with(&|d| d.ram = 512 * layout::KIB), Some(AcpiError::OutsideRam { end: 0xf_0000, ram: 512 * layout::KIB }));
        // The most CPUs the tables can describe still fit in the area.
        let many = AcpiDesc { apic_ids: (0..255).collect(), ..good.clone() };
        let image = build(&many).unwrap();
        assert!(image.bytes.len() as u64 <= layout::ACPI_SIZE);
    }

    #[test]
    fn apic_ids_need_not_be_the_vcpu_numbers() {
        let desc = AcpiDesc { apic_ids: vec![0, 2, 4, 6], ..AcpiDesc::pc(4, RAM) };
        let (mem, rsdp) = machine(&desc);
        let madt = table(&mem, xsdt_tables(&mem, rsdp)[b"APIC"], b"APIC");
        let lapics: Vec<_> = madt_entries(&madt).into_iter().filter(|e| e.0 == 0).map(|e| (e.1[2], e.1[3])).collect();
        assert_eq!(lapics, [(0, 0), (1, 2), (2, 4), (3, 6)]);
    }
}
