//! The Intel MultiProcessor Specification 1.4 table (chapter 4) that tells a guest without
//! ACPI how many CPUs there are and how interrupts are wired: the MP floating pointer
//! structure at [`MP_TABLE_ADDR`] (in the BIOS area 0xf0000-0xfffff, where Linux looks for
//! it), the MP configuration table right after it.
//!
//! | entry | count | what |
//! |---|---|---|
//! | processor | one per CPU | APIC ID i, version 0x14, enabled, CPU 0 the bootstrap processor |
//! | bus | 1 | bus 0, "ISA   " |
//! | I/O APIC | 1 | ID = number of CPUs, version 0x11, usable, at 0xfec00000 |
//! | I/O interrupt | 15 | ISA IRQ 0 -> pin 2, IRQ n -> pin n for 1, 3..15 (IRQ 2 is the cascade) |
//! | local interrupt | 2 | ExtINT -> LINT0 and NMI -> LINT1 of every CPU (destination 0xff) |
//!
//! Interrupt entries have flags 0 (polarity and trigger "conform to the bus": ISA is edge
//! triggered, active high). The floating pointer says "configuration table present" (feature
//! byte 1 = 0) and virtual wire mode (IMCRP clear: the PIC reaches the BSP through LINT0, no
//! IMCR to switch). No OEM table, no extended table. Both structures' checksums make their
//! bytes sum to 0.

use super::apic::IRQ0_PIN;
use super::ioapic::{IOAPIC_BASE, VERSION as IOAPIC_VERSION};
use super::lapic::{LAPIC_BASE, VERSION as LAPIC_VERSION};

/// Where the floating pointer goes; the configuration table follows it.
pub const MP_TABLE_ADDR: u64 = 0xf_0000;

const FLOATING_SIGNATURE: &[u8; 4] = b"_MP_";
const FLOATING_SIZE: usize = 16;
const TABLE_SIGNATURE: &[u8; 4] = b"PCMP";
const HEADER_SIZE: usize = 44;
/// MP spec 1.4.
const SPEC_REVISION: u8 = 4;
const OEM_ID: &[u8; 8] = b"YAKVM   ";
const PRODUCT_ID: &[u8; 12] = b"PC          ";

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const PROCESSOR_SIZE: usize = 20;
const ENTRY_SIZE: usize = 8;

const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOTSTRAP: u8 = 1 << 1;
/// CPUID signature: family 15 (the base family of every AMD64 CPU), model 0, stepping 0.
const CPU_SIGNATURE: u32 = 0x0f00;
/// CPUID.1:EDX: FPU, TSC, MSR, PAE, CX8, APIC.
const CPU_FEATURES: u32 = 0x0000_0371;
const IOAPIC_USABLE: u8 = 1 << 0;

const BUS_ISA: u8 = 0;
const BUS_ISA_NAME: &[u8; 6] = b"ISA   ";
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// Polarity and trigger mode as the bus says.
const CONFORMS: u16 = 0;
const ISA_IRQS: u8 = 16;
const CASCADE_IRQ: u8 = 2;
const ALL_LAPICS: u8 = 0xff;
const LINT0: u8 = 0;
const LINT1: u8 = 1;

/// The value that makes `bytes` sum to 0 (mod 256) with it.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)).wrapping_neg()
}

/// An interrupt assignment entry (I/O or local).
fn interrupt(kind: u8, int_type: u8, bus_irq: u8, dest: u8, pin: u8) -> [u8; ENTRY_SIZE] {
    let [flags0, flags1] = CONFORMS.to_le_bytes();
    [kind, int_type, flags0, flags1, BUS_ISA, bus_irq, dest, pin]
}

/// The floating pointer at [`MP_TABLE_ADDR`] followed by the configuration table, for
/// `cpus` CPUs with APIC IDs 0..cpus (an I/O APIC ID of `cpus`).
pub fn mp_table(cpus: u32) -> Vec<u8> {
    let ioapic_id = cpus as u8;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpus {
        let flags = if cpu == 0 { CPU_ENABLED | CPU_BOOTSTRAP } else { CPU_ENABLED };
        let mut entry = [0; PROCESSOR_SIZE]; // bytes 12-19 reserved
        entry[..4].copy_from_slice(&[ENTRY_PROCESSOR, cpu as u8, LAPIC_VERSION as u8, flags]);
        entry[4..8].copy_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entry[8..12].copy_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend(entry);
        count += 1;
    }
    entries.extend([ENTRY_BUS, BUS_ISA]);
    entries.extend(BUS_ISA_NAME);
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION as u8, IOAPIC_USABLE]);
    entries.extend((IOAPIC_BASE as u32).to_le_bytes());
    count += 2;
    for irq in (0..ISA_IRQS).filter(|irq| *irq != CASCADE_IRQ) {
        let pin = if irq == 0 { IRQ0_PIN } else { irq };
        entries.extend(interrupt(ENTRY_IO_INTERRUPT, INT_VECTORED, irq, ioapic_id, pin));
        count += 1;
    }
    entries.extend(interrupt(ENTRY_LOCAL_INTERRUPT, INT_EXTINT, 0, ALL_LAPICS, LINT0));
    entries.extend(interrupt(ENTRY_LOCAL_INTERRUPT, INT_NMI, 0, ALL_LAPICS, LINT1));
    count += 2;

    let length = u16::try_from(HEADER_SIZE + entries.len()).unwrap_or(u16::MAX);
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend(TABLE_SIGNATURE);
    table.extend(length.to_le_bytes());
    table.extend([SPEC_REVISION, 0]); // checksum below
    table.extend(OEM_ID);
    table.extend(PRODUCT_ID);
    table.extend(0u32.to_le_bytes()); // OEM table pointer
    table.extend(0u16.to_le_bytes()); // OEM table size
    table.extend(count.to_le_bytes());
    table.extend((LAPIC_BASE as u32).to_le_bytes());
    table.extend(0u16.to_le_bytes()); // extended table length
    table.extend([0, 0]); // extended table checksum, reserved
    table.extend(entries);
    table[7] = checksum(&table);

    let table_addr = (MP_TABLE_ADDR + FLOATING_SIZE as u64) as u32;
    let mut floating = Vec::with_capacity(FLOATING_SIZE + table.len());
    floating.extend(FLOATING_SIGNATURE);
    floating.extend(table_addr.to_le_bytes());
    floating.extend([1, SPEC_REVISION, 0]); // length in 16-byte units, revision, checksum
    floating.extend([0; 5]); // feature bytes 1-5: table present, virtual wire mode
    floating[10] = checksum(&floating);
    floating.extend(table);
    floating
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    /// What a guest learns from the table, parsed as Linux's mpparse.c would.
    #[derive(Debug, Default)]
    struct Parsed {
        /// (APIC ID, version, flags)
        cpus: Vec<(u8, u8, u8)>,
        buses: Vec<(u8, [u8; 6])>,
        /// (ID, version, flags, address)
        ioapics: Vec<(u8, u8, u8, u32)>,
        /// (type, flags, bus, IRQ, destination, pin)
        io_interrupts: Vec<(u8, u16, u8, u8, u8, u8)>,
        local_interrupts: Vec<(u8, u16, u8, u8, u8, u8)>,
    }

    fn parse(image: &[u8]) -> Parsed {
        // The floating pointer, found by its signature at a 16-byte boundary.
        let fp = image.chunks(16).position(|c| c.starts_with(b"_MP_")).unwrap() * 16;
        let floating = &image[fp..fp + 16];
        assert_eq!(sum(floating), 0, "floating pointer checksum");
        assert_eq!((floating[8], floating[9], floating[11], floating[12]), (1, 4, 0, 0));
        let at = usize::try_from(u64::from(u32_at(floating, 4)) - MP_TABLE_ADDR).unwrap();
        let length = usize::from(u16_at(image, at + 4));
        let table = &image[at..at + length];
        assert_eq!(&table[0..4], b"PCMP");
        assert_eq!(sum(table), 0, "configuration table checksum");
        assert_eq!(table[6], 4);
        assert_eq!(u32_at(table, 36), 0xfee0_0000);
        assert_eq!((u16_at(table, 40), table[42]), (0, 0), "no extended table");
        let mut parsed = Parsed::default();
        let mut rest = &table[HEADER_SIZE..];
        let mut last_type = 0;
        for _ in 0..u16_at(table, 34) {
            assert!(rest[0] >= last_type, "entries sorted by type");
            last_type = rest[0];
            let size = if rest[0] == ENTRY_PROCESSOR { PROCESSOR_SIZE } else { ENTRY_SIZE };
            let e = &rest[..size];
            let interrupt = (e[1], u16_at(e, 2), e[4], e[5], e[6], e[7]);
            match e[0] {
                ENTRY_PROCESSOR => parsed.cpus.push((e[1], e[2], e[3])),
                ENTRY_BUS => parsed.buses.push((e[1], e[2..8].try_into().unwrap())),
                ENTRY_IOAPIC => parsed.ioapics.push((e[1], e[2], e[3], u32_at(e, 4))),
                ENTRY_IO_INTERRUPT => parsed.io_interrupts.push(interrupt),
                ENTRY_LOCAL_INTERRUPT => parsed.local_interrupts.push(interrupt),
                other => panic!("entry type {other}"),
            }
            rest = &rest[size..];
        }
        assert!(rest.is_empty(), "length covers exactly the entries");
        parsed
    }

    #[test]
    fn floating_pointer_then_table() {
        let image = mp_table(2);
        assert_eq!(&image[0..4], b"_MP_");
        assert_eq!(u32_at(&image, 4), 0xf_0010);
        assert_eq!(&image[16..20], b"PCMP");
        assert_eq!(image.len(), 16 + 44 + 2 * 20 + 19 * 8);
        assert!(MP_TABLE_ADDR as usize + image.len() <= 0x10_0000, "inside the BIOS area");
    }

    #[test]
    fn entries_for_each_cpu_count() {
        for cpus in 1..=8 {
            let parsed = parse(&mp_table(cpus));
            let expect: Vec<_> =
                (0..cpus as u8).map(|i| (i, 0x14, if i == 0 { 3 } else { 1 })).collect();
            assert_eq!(parsed.cpus, expect);
            assert_eq!(parsed.buses, [(0, *b"ISA   ")]);
            assert_eq!(parsed.ioapics, [(cpus as u8, 0x11, 1, 0xfec0_0000)]);
            assert_eq!(parsed.io_interrupts.len(), 15);
            for (irq, pin) in [(0, 2), (1, 1), (3, 3), (8, 8), (15, 15)] {
                let entry = (INT_VECTORED, 0, 0, irq, cpus as u8, pin);
                assert!(parsed.io_interrupts.contains(&entry), "IRQ {irq}");
            }
            assert!(parsed.io_interrupts.iter().all(|e| e.3 != 2), "no IRQ 2");
            assert_eq!(
                parsed.local_interrupts,
                [(INT_EXTINT, 0, 0, 0, 0xff, 0), (INT_NMI, 0, 0, 0, 0xff, 1)]
            );
        }
    }
}
