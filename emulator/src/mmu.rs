//! Guest virtual to guest physical translation, by walking the guest's own page tables
//! in guest RAM (AMD APM vol. 2, 5.3). Needed to fetch the instruction behind an MMIO
//! exit: the CPU gives us no decode assists under QEMU.

use crate::sys::GuestMemory;
use yakvm_abi as abi;

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1 << 0;
const HUGE: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

fn read_u64(mem: &GuestMemory, gpa: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(gpa, &mut b)?;
    Some(u64::from_le_bytes(b))
}

fn read_u32(mem: &GuestMemory, gpa: u64) -> Option<u64> {
    let mut b = [0u8; 4];
    mem.read(gpa, &mut b)?;
    Some(u32::from_le_bytes(b).into())
}

/// Translates linear address `va` with the paging mode of `sregs`; `None` if a table is
/// outside RAM or an entry is not present.
pub fn translate(mem: &GuestMemory, sregs: &abi::Sregs, va: u64) -> Option<u64> {
    if sregs.cr0 & CR0_PG == 0 {
        return Some(va);
    }
    if sregs.efer & EFER_LMA != 0 {
        // 4-level long mode: PML4, PDPT (1 GiB pages), PD (2 MiB pages), PT.
        let mut table = sregs.cr3 & ADDR;
        for level in (1..=4u32).rev() {
            let shift = 12 + 9 * (level - 1);
            let entry = read_u64(mem, table + ((va >> shift) & 0x1ff) * 8)?;
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
    } else if sregs.cr4 & CR4_PAE != 0 {
        // 3-level PAE: PDPT of 4 entries, PD (2 MiB pages), PT.
        let pdpte = read_u64(mem, (sregs.cr3 & 0xffff_ffe0) + ((va >> 30) & 3) * 8)?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = read_u64(mem, (pdpte & ADDR) + ((va >> 21) & 0x1ff) * 8)?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some((pde & ADDR & !0x1f_ffff) | (va & 0x1f_ffff));
        }
        let pte = read_u64(mem, (pde & ADDR) + ((va >> 12) & 0x1ff) * 8)?;
        (pte & PRESENT != 0).then_some((pte & ADDR) | (va & 0xfff))
    } else {
        // 2-level 32-bit: PD (4 MiB pages), PT.
        let pde = read_u32(mem, (sregs.cr3 & 0xffff_f000) + ((va >> 22) & 0x3ff) * 4)?;
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some((pde & 0xffc0_0000) | (va & 0x3f_ffff));
        }
        let pte = read_u32(mem, (pde & 0xffff_f000) + ((va >> 12) & 0x3ff) * 4)?;
        (pte & PRESENT != 0).then_some((pte & 0xffff_f000) | (va & 0xfff))
    }
}

/// Reads up to `out.len()` bytes at linear address `va`, page by page; returns how many
/// bytes could be read (an instruction may end before an unmapped page).
pub fn read_virt(mem: &GuestMemory, sregs: &abi::Sregs, va: u64, out: &mut [u8]) -> usize {
    let mut done = 0;
    while done < out.len() {
        let addr = va.wrapping_add(done as u64);
        let Some(pa) = translate(mem, sregs, addr) else { break };
        let n = (out.len() - done).min((0x1000 - (addr & 0xfff)) as usize);
        if mem.read(pa, &mut out[done..done + n]).is_none() {
            break;
        }
        done += n;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_walk_follows_the_boot_tables() {
        let mem = GuestMemory::new(4 << 20).unwrap();
        let (_, sregs) = crate::boot::long_mode(&mem, 0, 0).unwrap();
        assert_eq!(translate(&mem, &sregs, 0x12_3456), Some(0x12_3456));
        assert_eq!(translate(&mem, &sregs, 0xfee0_0000), Some(0xfee0_0000));
        // Beyond the identity map: PML4 entry 1 is not present.
        assert_eq!(translate(&mem, &sregs, 1 << 39), None);
    }

    #[test]
    fn paging_off_is_identity() {
        let mem = GuestMemory::new(8192).unwrap();
        let sregs = abi::Sregs::default();
        assert_eq!(translate(&mem, &sregs, 0x1234), Some(0x1234));
        let mut b = [0u8; 4];
        assert_eq!(read_virt(&mem, &sregs, 8190, &mut b), 2);
    }
}
