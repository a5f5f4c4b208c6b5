//! What a PC's BIOS leaves in low memory before it starts an OS, for the kernels yakvm
//! enters directly (no BIOS runs): many read it, as they would on a PC booted by GRUB.
//! xv6 finds its MP table through the BIOS data area's EBDA segment and base memory size;
//! kernels find the COM ports and the text console there; a real-mode caller of `int n`
//! finds a handler that returns.
//!
//! | address | what |
//! |---|---|
//! | 0x0-0x3ff | the real-mode interrupt vector table: all 256 vectors point at [`IRET_ADDR`] (F000:FF53) |
//! | 0x400 | COM1-COM4 base ports: 0x3f8, 0, 0, 0 |
//! | 0x408 | LPT1-LPT3 base ports: 0 (none); 0x40e: the EBDA's segment, 0x9fc0 |
//! | 0x410 | the equipment word: x87 present, 80×25 colour text, one serial port |
//! | 0x413 | base memory in KiB below the EBDA: 639 |
//! | 0x449 | video mode 3 (80×25 colour text), 0x44a: 80 columns, 0x463: the CRTC at 0x3d4, 0x484: 24 (rows - 1) |
//! | 0x9fc00 | the EBDA (1 KiB, reserved in the memory maps): its first byte its size in KiB, 1 |
//! | 0xfff53 | `iret`, where IBM's BIOS kept its dummy interrupt handler |
//!
//! The MP table (`mptable`, 0xf0000) and the ACPI RSDP (`acpi`, 0xe0000) are in the BIOS
//! area, the last place both searches look (MP 1.4, 4.1: the EBDA's first KiB, else the
//! last KiB of base memory, then 0xf0000-0xfffff; ACPI 6.5, 5.2.5.1: the EBDA's first
//! KiB, then 0xe0000-0xfffff). The EBDA holds no table: both searches go on past it.

use super::uart::COM1_BASE;

/// The real-mode interrupt vector table: 256 far pointers (offset, segment).
pub const IVT_ADDR: u64 = 0;
const IVT_VECTORS: usize = 256;
/// The BIOS data area.
pub const BDA_ADDR: u64 = 0x400;
/// The extended BIOS data area: 1 KiB just below 640 KiB.
pub const EBDA_ADDR: u64 = crate::kernel::EBDA;
const EBDA_KIB: u8 = ((0xa_0000 - EBDA_ADDR) / 1024) as u8;
/// An `iret` for every vector of the IVT: F000:FF53.
pub const IRET_ADDR: u64 = 0xf_ff53;
const IRET_SEGMENT: u16 = 0xf000;
const IRET: u8 = 0xcf;

// The BIOS data area's fields (offsets from 0x400).
const BDA_COM_PORTS: usize = 0x00;
const BDA_EBDA_SEGMENT: usize = 0x0e;
const BDA_EQUIPMENT: usize = 0x10;
const BDA_BASE_MEMORY_KIB: usize = 0x13;
const BDA_VIDEO_MODE: usize = 0x49;
const BDA_COLUMNS: usize = 0x4a;
const BDA_CRTC_PORT: usize = 0x63;
const BDA_ROWS_MINUS_ONE: usize = 0x84;
/// Up to the last field written.
const BDA_LEN: usize = 0x85;

bitflags::bitflags! {
    /// The equipment word (what INT 11h returns).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Equipment: u16 {
        const X87 = 1 << 1;
        /// Bits 4-5 = 2: the initial video mode is 80×25 colour.
        const VIDEO_80X25_COLOUR = 2 << 4;
        /// Bits 9-11: the number of serial ports, 1.
        const ONE_SERIAL_PORT = 1 << 9;
        const _ = !0;
    }
}

/// Text mode 3: 80×25, 16 colours, at 0xb8000.
const VIDEO_MODE_TEXT80: u8 = 3;
const TEXT_COLUMNS: u16 = 80;
const TEXT_ROWS: u8 = 25;
/// The colour CRTC's index port.
pub const CRTC_PORT: u16 = 0x3d4;

/// The bytes a BIOS leaves in low memory: (guest-physical address, bytes), in address
/// order, none overlapping another or the MP and ACPI tables.
pub fn low_memory() -> Vec<(u64, Vec<u8>)> {
    let vector = (u32::from(IRET_SEGMENT) << 16) | (IRET_ADDR - (u64::from(IRET_SEGMENT) << 4)) as u32;
    let ivt: Vec<u8> = (0..IVT_VECTORS).flat_map(|_| vector.to_le_bytes()).collect();

    let mut bda = vec![0u8; BDA_LEN];
    let mut put16 = |at: usize, value: u16| bda[at..at + 2].copy_from_slice(&value.to_le_bytes());
    put16(BDA_COM_PORTS, COM1_BASE);
    put16(BDA_EBDA_SEGMENT, (EBDA_ADDR >> 4) as u16);
    put16(BDA_EQUIPMENT, (Equipment::X87 | Equipment::VIDEO_80X25_COLOUR | Equipment::ONE_SERIAL_PORT).bits());
    put16(BDA_BASE_MEMORY_KIB, (EBDA_ADDR / 1024) as u16);
    put16(BDA_COLUMNS, TEXT_COLUMNS);
    put16(BDA_CRTC_PORT, CRTC_PORT);
    bda[BDA_VIDEO_MODE] = VIDEO_MODE_TEXT80;
    bda[BDA_ROWS_MINUS_ONE] = TEXT_ROWS - 1;

    vec![(IVT_ADDR, ivt), (BDA_ADDR, bda), (EBDA_ADDR, vec![EBDA_KIB]), (IRET_ADDR, vec![IRET])]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{ACPI_SIZE, ACPI_START};
    use crate::pc::mptable::{mp_table, MP_TABLE_ADDR};

    fn flat() -> Vec<u8> {
        let mut mem = vec![0u8; 0x10_0000];
        for (at, bytes) in low_memory() {
            mem[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        mem
    }

    fn u16_at(mem: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([mem[at], mem[at + 1]])
    }

    #[test]
    fn the_bda_says_what_a_pc_bios_says() {
        let mem = flat();
        assert_eq!(u16_at(&mem, 0x400), 0x3f8, "COM1");
        assert_eq!((u16_at(&mem, 0x402), u16_at(&mem, 0x408)), (0, 0), "no COM2, no LPT1");
        assert_eq!(u16_at(&mem, 0x40e), 0x9fc0, "EBDA segment");
        assert_eq!(u16_at(&mem, 0x410), 0x0222, "equipment: x87, 80x25 colour, 1 serial port");
        assert_eq!(u16_at(&mem, 0x413), 639, "base memory KiB");
        assert_eq!((mem[0x449], u16_at(&mem, 0x44a), u16_at(&mem, 0x463), mem[0x484]), (3, 80, 0x3d4, 24));
        assert_eq!(mem[0x9fc00], 1, "the EBDA's size in KiB");
    }

    #[test]
    fn every_vector_points_at_an_iret() {
        let mem = flat();
        for v in 0..256 {
            let (offset, segment) = (u16_at(&mem, v * 4), u16_at(&mem, v * 4 + 2));
            assert_eq!((segment, offset), (0xf000, 0xff53));
            assert_eq!(mem[(usize::from(segment) << 4) + usize::from(offset)], 0xcf);
        }
    }

    /// xv6's search (mp.c's `mpsearch`), on the BDA and the MP table where the board puts
    /// them: the EBDA's first KiB, else the last KiB of base memory; then the BIOS area.
    #[test]
    fn xv6s_search_order_finds_the_mp_table() {
        let mut mem = flat();
        let table = mp_table(2);
        mem[MP_TABLE_ADDR as usize..MP_TABLE_ADDR as usize + table.len()].copy_from_slice(&table);
        let search = |mem: &[u8], from: usize, len: usize| {
            (from..from + len).step_by(16).find(|&p| &mem[p..p + 4] == b"_MP_" && mem[p..p + 16].iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0)
        };
        let ebda = usize::from(u16_at(&mem, 0x40e)) << 4;
        assert_ne!(ebda, 0, "xv6 takes the EBDA branch");
        let found = search(&mem, ebda, 1024).or_else(|| search(&mem, 0xf0000, 0x10000));
        assert_eq!(found, Some(MP_TABLE_ADDR as usize));
    }

    #[test]
    fn nothing_overlaps_the_tables() {
        let pieces = low_memory();
        for w in pieces.windows(2) {
            assert!(w[0].0 + w[0].1.len() as u64 <= w[1].0, "in order, apart");
        }
        let mp_end = MP_TABLE_ADDR + mp_table(8).len() as u64;
        for (at, bytes) in &pieces {
            let end = at + bytes.len() as u64;
            assert!(end <= ACPI_START || *at >= ACPI_START + ACPI_SIZE, "clear of ACPI");
            assert!(end <= MP_TABLE_ADDR || *at >= mp_end, "clear of the MP table");
        }
    }
}
