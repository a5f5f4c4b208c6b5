//! Reading guest memory by virtual address, walking the guest's own page tables
//! (`yakvm_abi::paging`). Needed to fetch the instruction behind an MMIO exit: the CPU
//! gives us no decode assists under QEMU.

use crate::sys::GuestMemory;
use yakvm_abi::{self as abi, paging};

/// Translates linear address `va` with the paging mode of `sregs`; `None` if a table is
/// outside RAM or an entry is not present.
pub fn translate(mem: &GuestMemory, sregs: &abi::Sregs, va: u64) -> Option<u64> {
    let regs = paging::PagingRegs { cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer };
    paging::translate(&regs, va, |gpa, bytes| {
        let mut b = [0u8; 8];
        mem.read(gpa, &mut b[..bytes])?;
        Some(u64::from_le_bytes(b))
    })
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

/// Writes up to `data.len()` bytes at linear address `va`, page by page (a debugger's
/// memory writes); returns how many bytes were written.
pub fn write_virt(mem: &GuestMemory, sregs: &abi::Sregs, va: u64, data: &[u8]) -> usize {
    let mut done = 0;
    while done < data.len() {
        let addr = va.wrapping_add(done as u64);
        let Some(pa) = translate(mem, sregs, addr) else { break };
        let n = (data.len() - done).min((0x1000 - (addr & 0xfff)) as usize);
        if mem.write(pa, &data[done..done + n]).is_none() {
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

    #[test]
    fn writes_go_through_the_page_tables() {
        let mem = GuestMemory::new(4 << 20).unwrap();
        let (_, sregs) = crate::boot::long_mode(&mem, 0, 0).unwrap();
        assert_eq!(write_virt(&mem, &sregs, 0x1ffe, &[1, 2, 3, 4]), 4);
        let mut b = [0u8; 4];
        mem.read(0x1ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        // Beyond the identity map nothing is written.
        assert_eq!(write_virt(&mem, &sregs, 1 << 39, &[1]), 0);
    }
}
