// SPDX-License-Identifier: GPL-2.0
//! Guest virtual to guest physical translation (AMD APM vol. 2, 5.3), shared like `abi.rs`
//! by the module (string port I/O) and the emulator (fetching MMIO instructions). Only
//! `core`; guest memory is read through a closure.

/// The registers that decide the paging mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

// Hand-written, not the `x86_64` crate's flags (as the emulator's `boot.rs` uses): the
// kernel module includes this file, and a module cannot use crates.io.
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1 << 0;
const HUGE: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Translates linear address `va` in any paging mode: none (CR0.PG clear), 32-bit (4 MiB
/// pages with PSE bit 7), PAE, 4-level and 5-level (CR4.LA57) long mode. `read(gpa, bytes)` returns the 4- or 8-byte
/// little-endian entry at guest-physical `gpa`, or `None` outside RAM. `None` if an entry
/// is not present or a table is outside RAM. Access rights are not checked.
pub fn translate(r: &PagingRegs, va: u64, mut read: impl FnMut(u64, usize) -> Option<u64>) -> Option<u64> {
    if r.cr0 & CR0_PG == 0 {
        return Some(va);
    }
    if r.efer & EFER_LMA != 0 {
        // Long mode: PML5 with CR4.LA57, PML4, PDPT (1 GiB pages), PD (2 MiB pages), PT.
        let levels = if r.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        let mut table = r.cr3 & ADDR;
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let entry = read(table + ((va >> shift) & 0x1ff) * 8, 8)?;
            if entry & PRESENT == 0 {
                return None;
            }
            if level == 1 || (level <= 3 && entry & HUGE != 0) {
                let mask = (1u64 << shift) - 1;
                return Some((entry & ADDR & !mask) | (va & mask));
            }
            table = entry & ADDR;
        }
        None
    } else if r.cr4 & CR4_PAE != 0 {
        // PAE: a PDPT of 4 entries, PD (2 MiB pages), PT.
        let pdpte = read((r.cr3 & 0xffff_ffe0) + ((va >> 30) & 3) * 8, 8)?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = read((pdpte & ADDR) + ((va >> 21) & 0x1ff) * 8, 8)?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some((pde & ADDR & !0x1f_ffff) | (va & 0x1f_ffff));
        }
        let pte = read((pde & ADDR) + ((va >> 12) & 0x1ff) * 8, 8)?;
        (pte & PRESENT != 0).then_some((pte & ADDR) | (va & 0xfff))
    } else {
        // 32-bit: PD (4 MiB pages), PT.
        let va = va & 0xffff_ffff;
        let pde = read((r.cr3 & 0xffff_f000) + ((va >> 22) & 0x3ff) * 4, 4)?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some((pde & 0xffc0_0000) | (va & 0x3f_ffff));
        }
        let pte = read((pde & 0xffff_f000) + ((va >> 12) & 0x3ff) * 4, 4)?;
        (pte & PRESENT != 0).then_some((pte & 0xffff_f000) | (va & 0xfff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory as a list of (gpa, entry) pairs; everything else reads as absent.
    struct Fake(&'static [(u64, u64)]);
    impl Fake {
        fn read(&self, gpa: u64, bytes: usize) -> Option<u64> {
            let e = self.0.iter().find(|(a, _)| *a == gpa)?.1;
            Some(if bytes == 4 { e & 0xffff_ffff } else { e })
        }
    }
    const LONG: u64 = EFER_LMA;

    #[test]
    fn no_paging_is_the_identity() {
        let r = PagingRegs::default();
        assert_eq!(translate(&r, 0x1234_5678_9abc, |_, _| None), Some(0x1234_5678_9abc));
    }

    #[test]
    fn thirty_two_bit_walks_4k_and_4m_pages() {
        // PD at 0x1000: entry 1 (va 0x40_0000) a 4 MiB page at 0x80_0000; entry 2 a PT at
        // 0x2000 whose entry 3 maps 0x5000.
        const MEM: &[(u64, u64)] = &[(0x1004, 0x80_0000 | HUGE | PRESENT), (0x1008, 0x2000 | PRESENT), (0x200c, 0x5000 | PRESENT)];
        let r = PagingRegs { cr0: CR0_PG, cr3: 0x1000, ..Default::default() };
        let m = Fake(MEM);
        assert_eq!(translate(&r, 0x41_2345, |a, b| m.read(a, b)), Some(0x81_2345));
        assert_eq!(translate(&r, 0x80_3abc, |a, b| m.read(a, b)), Some(0x5abc));
        assert_eq!(translate(&r, 0x80_4000, |a, b| m.read(a, b)), None);
    }

    #[test]
    fn pae_walks_its_four_entry_pdpt() {
        const MEM: &[(u64, u64)] = &[(0x1018, 0x2000 | PRESENT), (0x2008, 0x3000 | PRESENT), (0x3010, 0x7000 | PRESENT), (0x2010, 0x60_0000 | HUGE | PRESENT)];
        let r = PagingRegs { cr0: CR0_PG, cr3: 0x1000, cr4: CR4_PAE, ..Default::default() };
        let m = Fake(MEM);
        assert_eq!(translate(&r, 0xc020_2123, |a, b| m.read(a, b)), Some(0x7123));
        assert_eq!(translate(&r, 0xc041_0000, |a, b| m.read(a, b)), Some(0x61_0000));
    }

    #[test]
    fn long_mode_walks_four_or_five_levels() {
        // va = PML5 index 1, PML4 index 2, PDPT 3, PD 4, PT 5, offset 0x678.
        let va = (1u64 << 48) | (2 << 39) | (3 << 30) | (4 << 21) | (5 << 12) | 0x678;
        const MEM: &[(u64, u64)] = &[
            (0x1008, 0x2000 | PRESENT),
            (0x2010, 0x3000 | PRESENT),
            (0x3018, 0x4000 | PRESENT),
            (0x4020, 0x5000 | PRESENT),
            (0x5028, 0xabc000 | PRESENT),
        ];
        let m = Fake(MEM);
        let five = PagingRegs { cr0: CR0_PG, cr3: 0x1000, cr4: CR4_PAE | CR4_LA57, efer: LONG };
        assert_eq!(translate(&five, va, |a, b| m.read(a, b)), Some(0xabc678));
        // The same tables from the PML4 with 4 levels (bits 56:48 of va are ignored).
        let four = PagingRegs { cr3: 0x2000, cr4: CR4_PAE, ..five };
        assert_eq!(translate(&four, va, |a, b| m.read(a, b)), Some(0xabc678));
        // A 1 GiB page at the PDPT level.
        const HUGE1G: &[(u64, u64)] = &[(0x2010, 0x3000 | PRESENT), (0x3018, 0x4000_0000 | HUGE | PRESENT)];
        let m = Fake(HUGE1G);
        assert_eq!(translate(&four, va, |a, b| m.read(a, b)), Some(0x4000_0000 | (va & 0x3fff_ffff)));
    }
}
