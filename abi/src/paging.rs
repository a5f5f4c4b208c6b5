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
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1 << 0;
const HUGE: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Translates linear address `va`. `read(gpa, bytes)` returns the 4- or 8-byte
/// little-endian entry at guest-physical `gpa`, or `None` outside RAM. `None` if an entry
/// is not present or a table is outside RAM. Access rights are not checked.
pub fn translate(r: &PagingRegs, va: u64, mut read: impl FnMut(u64, usize) -> Option<u64>) -> Option<u64> {
    if r.cr0 & CR0_PG == 0 {
        return Some(va);
    }
    if r.efer & EFER_LMA != 0 {
        // Long mode: PML4, PDPT (1 GiB pages), PD (2 MiB pages), PT.
        let mut table = r.cr3 & ADDR;
        for level in (1..=4u32).rev() {
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
