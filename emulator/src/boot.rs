//! The state a guest starts in, for each entry mode:
//! - long: 64-bit mode, identity-mapped page tables and a GDT in the boot area (see
//!   `layout`), flat segments;
//! - protected: 32-bit flat segments, paging off;
//! - real: 16-bit real mode with every segment based at the load address.

use crate::layout::*;
use crate::sys::GuestMemory;
use x86_64::registers::control::{Cr0Flags, Cr4Flags};
use x86_64::registers::model_specific::EferFlags;
use x86_64::structures::gdt::DescriptorFlags;
use x86_64::structures::paging::PageTableFlags;
use yakvm_abi as abi;

/// GDT selectors.
const CODE64_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const CODE32_SELECTOR: u16 = 0x18;
/// Flat 4 GiB descriptors, DPL 0.
const CODE64_DESC: DescriptorFlags = DescriptorFlags::KERNEL_CODE64;
const DATA_DESC: DescriptorFlags = DescriptorFlags::KERNEL_DATA;
const CODE32_DESC: DescriptorFlags = DescriptorFlags::KERNEL_CODE32;
/// GDT entries: null, 64-bit code, data, 32-bit code.
const GDT: [u64; 4] = [0, CODE64_DESC.bits(), DATA_DESC.bits(), CODE32_DESC.bits()];
/// Linux's 64-bit boot protocol wants `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18.
const LINUX_CODE_SELECTOR: u16 = 0x10;
const LINUX_DATA_SELECTOR: u16 = 0x18;
const LINUX_GDT: [u64; 4] = [0, 0, CODE64_DESC.bits(), DATA_DESC.bits()];
/// Multiboot kernels are entered as GRUB (legacy and 2) and QEMU's `-kernel` enter them:
/// CS = 0x08 flat 32-bit code, the data segments 0x10 flat data. The specification
/// leaves the selectors undefined, but kernels written against GRUB rely on them: xv6
/// loads its own GDT (code at 0x08, data at 0x10) without reloading CS or DS, and its
/// traps push and restore those selectors, which then must mean the same in its GDT.
const MULTIBOOT_CODE_SELECTOR: u16 = 0x08;
const MULTIBOOT_DATA_SELECTOR: u16 = 0x10;
const MULTIBOOT_GDT: [u64; 3] = [0, CODE32_DESC.bits(), DATA_DESC.bits()];

/// A segment's attributes in the VMCB's packed form: the descriptor's bits 40-47 (type,
/// S, DPL, P) and 52-55 (AVL, L, D/B, G) (AMD APM vol. 2, 15.5.1).
const fn attrib(desc: DescriptorFlags) -> u16 {
    let d = desc.bits();
    (((d >> 40) & 0xff) | ((d >> 44) & 0xf00)) as u16
}

const CODE64_ATTRIB: u16 = attrib(CODE64_DESC);
const CODE32_ATTRIB: u16 = attrib(CODE32_DESC);
const DATA_ATTRIB: u16 = attrib(DATA_DESC);
/// Real mode: present, accessed, read/write code and data (no G, D/B or L).
const CODE16_ATTRIB: u16 = attrib(DescriptorFlags::PRESENT
    .union(DescriptorFlags::USER_SEGMENT)
    .union(DescriptorFlags::EXECUTABLE)
    .union(DescriptorFlags::WRITABLE)
    .union(DescriptorFlags::ACCESSED));
const DATA16_ATTRIB: u16 = attrib(DescriptorFlags::PRESENT
    .union(DescriptorFlags::USER_SEGMENT)
    .union(DescriptorFlags::WRITABLE)
    .union(DescriptorFlags::ACCESSED));
/// System segments (the crate names no system types): present, type 0xb (busy 64-bit
/// TSS) and type 0x2 (LDT).
const TSS_BUSY_ATTRIB: u16 = 0x08b;
const LDT_ATTRIB: u16 = 0x082;

/// Page-directory entries: present, writable; a 2 MiB page in the PD.
const TABLE: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);
const LARGE_PAGE: PageTableFlags = TABLE.union(PageTableFlags::HUGE_PAGE);

fn put_u64s(mem: &GuestMemory, at: u64, values: impl IntoIterator<Item = u64>) -> Option<()> {
    let bytes: Vec<u8> = values.into_iter().flat_map(u64::to_le_bytes).collect();
    mem.write(at, &bytes)
}

/// Builds the boot area of `mem` and returns the registers of a long-mode CPU about to
/// execute `entry` with the stack below the boot area. The identity map covers RAM, the
/// first 4 GiB and everything up to `map_top` (the end of the MMIO window), at most
/// `MAX_IDENTITY_MAP`; `None` if that is not enough.
pub fn long_mode(mem: &GuestMemory, entry: u64, map_top: u64) -> Option<(abi::Regs, abi::Sregs)> {
    let segments = flat_segments(mem, &GDT, CODE64_SELECTOR, CODE64_ATTRIB, DATA_SELECTOR)?;
    paged_long_mode(mem, entry, map_top, segments)
}

/// Long mode as Linux's 64-bit boot protocol asks: as `long_mode`, with the kernel's own
/// selectors, interrupts off, and RSI = `boot_params`.
pub fn linux_long_mode(mem: &GuestMemory, entry: u64, boot_params: u64, map_top: u64) -> Option<(abi::Regs, abi::Sregs)> {
    let segments = flat_segments(mem, &LINUX_GDT, LINUX_CODE_SELECTOR, CODE64_ATTRIB, LINUX_DATA_SELECTOR)?;
    let (regs, sregs) = paged_long_mode(mem, entry, map_top, segments)?;
    Some((abi::Regs { rsi: boot_params, ..regs }, sregs))
}

/// The identity-mapped page tables in the boot area, and a 64-bit CPU on `segments`.
fn paged_long_mode(mem: &GuestMemory, entry: u64, map_top: u64, segments: abi::Sregs) -> Option<(abi::Regs, abi::Sregs)> {
    let ram = mem.len() as u64;
    let top = map_top.max(ram).max(4 * GIB);
    if top > MAX_IDENTITY_MAP {
        return None;
    }
    let pds = top.div_ceil(GIB);
    let base = boot_area(ram);
    let (pml4, pdpt, pd) = (base + PML4_OFFSET, base + PDPT_OFFSET, base + PD_OFFSET);

    put_u64s(mem, pml4, [pdpt | TABLE.bits()])?;
    put_u64s(mem, pdpt, (0..pds).map(|i| (pd + i * 0x1000) | TABLE.bits()))?;
    put_u64s(mem, pd, (0..pds * 512).map(|i| (i * 2 * MIB) | LARGE_PAGE.bits()))?;
    let sregs = abi::Sregs {
        cr0: (Cr0Flags::PROTECTED_MODE_ENABLE
            | Cr0Flags::MONITOR_COPROCESSOR
            | Cr0Flags::EXTENSION_TYPE
            | Cr0Flags::NUMERIC_ERROR
            | Cr0Flags::WRITE_PROTECT
            | Cr0Flags::PAGING)
            .bits(),
        cr2: 0,
        cr3: pml4,
        cr4: (Cr4Flags::PHYSICAL_ADDRESS_EXTENSION | Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE).bits(),
        efer: (EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE).bits(),
        ..segments
    };
    let regs = abi::Regs { rip: entry, rsp: initial_rsp(ram), rflags: 2, ..Default::default() };
    Some((regs, sregs))
}

/// Writes `gdt` into the boot area and returns flat 4 GiB code (`code_selector`,
/// `code_attrib`) and data (`data_selector`) segments from it, a busy TSS and an LDT, as
/// both protected and long mode start with them.
fn flat_segments(mem: &GuestMemory, gdt_entries: &[u64], code_selector: u16, code_attrib: u16, data_selector: u16) -> Option<abi::Sregs> {
    let gdt = boot_area(mem.len() as u64) + GDT_OFFSET;
    put_u64s(mem, gdt, gdt_entries.iter().copied())?;
    let code = abi::Segment { selector: code_selector, attrib: code_attrib, limit: u32::MAX, base: 0 };
    let data = abi::Segment { selector: data_selector, attrib: DATA_ATTRIB, limit: u32::MAX, base: 0 };
    Some(abi::Sregs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: abi::Segment { selector: 0, attrib: TSS_BUSY_ATTRIB, limit: 0x67, base: 0 },
        ldt: abi::Segment { selector: 0, attrib: LDT_ATTRIB, limit: 0xffff, base: 0 },
        gdt: abi::DescTable { base: gdt, limit: (gdt_entries.len() * 8 - 1) as u32, _pad: 0 },
        ..Default::default()
    })
}

/// A CPU in 32-bit protected mode with flat 4 GiB segments and paging off, about to
/// execute `entry`, ESP just below the boot area.
pub fn protected_mode(mem: &GuestMemory, entry: u64) -> Option<(abi::Regs, abi::Sregs)> {
    let segments = flat_segments(mem, &GDT, CODE32_SELECTOR, CODE32_ATTRIB, DATA_SELECTOR)?;
    let sregs = abi::Sregs { cr0: (Cr0Flags::PROTECTED_MODE_ENABLE | Cr0Flags::EXTENSION_TYPE).bits(), ..segments };
    let rsp = initial_rsp(mem.len() as u64);
    Some((abi::Regs { rip: entry, rsp, rflags: 2, ..Default::default() }, sregs))
}

/// A CPU as a Multiboot boot loader leaves it (Multiboot 0.6.96, 3.2, and GRUB's
/// selectors, see [`MULTIBOOT_GDT`]): 32-bit protected mode, paging off, flat 4 GiB
/// segments CS = 0x08 and DS = ES = FS = GS = SS = 0x10, interrupts off (the A20 gate is
/// always open on yakvm), about to execute `entry`, ESP just below the boot area (the
/// kernel must set its own), EAX = `eax` (the boot loader's magic) and EBX = `ebx` (the
/// information structure).
pub fn multiboot_protected_mode(mem: &GuestMemory, entry: u64, eax: u32, ebx: u32) -> Option<(abi::Regs, abi::Sregs)> {
    let segments = flat_segments(mem, &MULTIBOOT_GDT, MULTIBOOT_CODE_SELECTOR, CODE32_ATTRIB, MULTIBOOT_DATA_SELECTOR)?;
    let sregs = abi::Sregs { cr0: (Cr0Flags::PROTECTED_MODE_ENABLE | Cr0Flags::EXTENSION_TYPE).bits(), ..segments };
    let rsp = initial_rsp(mem.len() as u64);
    let regs = abi::Regs { rip: entry, rsp, rflags: 2, rax: eax.into(), rbx: ebx.into(), ..Default::default() };
    Some((regs, sregs))
}

/// A CPU in real mode with CS, DS, ES, FS, GS and SS all at `base` (16-byte aligned,
/// below 1 MiB), IP = `entry - base`, SP at the top of the 64 KiB segment.
pub fn real_mode(base: u64, entry: u64) -> (abi::Regs, abi::Sregs) {
    let seg = |attrib| abi::Segment { selector: (base >> 4) as u16, attrib, limit: 0xffff, base };
    let data = seg(DATA16_ATTRIB);
    let sregs = abi::Sregs {
        cs: seg(CODE16_ATTRIB),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: abi::Segment { selector: 0, attrib: TSS_BUSY_ATTRIB, limit: 0xffff, base: 0 },
        ldt: abi::Segment { selector: 0, attrib: LDT_ATTRIB, limit: 0xffff, base: 0 },
        gdt: abi::DescTable { base: 0, limit: 0xffff, _pad: 0 },
        idt: abi::DescTable { base: 0, limit: 0x3ff, _pad: 0 },
        cr0: Cr0Flags::EXTENSION_TYPE.bits(),
        ..Default::default()
    };
    (abi::Regs { rip: entry - base, rsp: 0xfff0, rflags: 2, ..Default::default() }, sregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_area_maps_ram_and_sits_at_the_top() {
        let mem = GuestMemory::new(2 * MIB as usize).unwrap();
        let (regs, sregs) = long_mode(&mem, 0x1000, 0).unwrap();
        let base = boot_area(2 * MIB);
        assert_eq!(sregs.cr3, base);
        assert_eq!(regs.rip, 0x1000);
        assert_eq!(regs.rsp % 16, 0);
        assert!(regs.rsp <= base);
        // PML4[0] -> PDPT, PDPT[0] -> first PD, PD[1] maps 2 MiB..4 MiB as a large page.
        let mut e = [0u8; 8];
        mem.read(base, &mut e).unwrap();
        assert_eq!(u64::from_le_bytes(e) & !0xfff, base + PDPT_OFFSET);
        mem.read(base + PD_OFFSET + 8, &mut e).unwrap();
        assert_eq!(u64::from_le_bytes(e), 2 * MIB | 0x83);
    }

    #[test]
    fn boot_state_has_the_architectural_values() {
        assert_eq!(GDT, [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00cf_9b00_0000_ffff]);
        let attribs = [CODE64_ATTRIB, CODE32_ATTRIB, DATA_ATTRIB, CODE16_ATTRIB, DATA16_ATTRIB];
        assert_eq!(attribs, [0xa9b, 0xc9b, 0xc93, 0x09b, 0x093]);
        let mem = GuestMemory::new(2 * MIB as usize).unwrap();
        let (_, sregs) = long_mode(&mem, 0, 0).unwrap();
        // CR0: PE, MP, ET, NE, WP, PG; CR4: PAE, OSFXSR, OSXMMEXCPT; EFER: LME, LMA.
        assert_eq!((sregs.cr0, sregs.cr4, sregs.efer), (0x8001_0033, 0x620, 0x500));
        assert_eq!(protected_mode(&mem, 0).unwrap().1.cr0, 0x11);
        assert_eq!(real_mode(0, 0).1.cr0, 0x10);
        assert_eq!((TABLE.bits(), LARGE_PAGE.bits()), (0x3, 0x83));
    }

    /// GRUB's and QEMU's selectors: CS 0x08 (32-bit code), data 0x10, from a GDT in RAM
    /// that says the same; interrupts off; EAX and EBX as given.
    #[test]
    fn multiboot_entry_has_grubs_selectors() {
        let mem = GuestMemory::new(2 * MIB as usize).unwrap();
        let (regs, sregs) = multiboot_protected_mode(&mem, 0x10_000c, 0x2bad_b002, 0x1_0000).unwrap();
        assert_eq!((regs.rip, regs.rax, regs.rbx, regs.rflags), (0x10_000c, 0x2bad_b002, 0x1_0000, 2));
        assert_eq!((sregs.cs.selector, sregs.cs.attrib), (0x08, 0xc9b));
        for s in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
            assert_eq!((s.selector, s.attrib, s.base, s.limit), (0x10, 0xc93, 0, u32::MAX));
        }
        assert_eq!((sregs.cr0, sregs.efer), (0x11, 0));
        let mut gdt = [0u8; 24];
        mem.read(sregs.gdt.base, &mut gdt).unwrap();
        assert_eq!(u64::from_le_bytes(gdt[8..16].try_into().unwrap()), 0x00cf_9b00_0000_ffff);
        assert_eq!(u64::from_le_bytes(gdt[16..24].try_into().unwrap()), 0x00cf_9300_0000_ffff);
        assert_eq!(sregs.gdt.limit, 23);
    }

    #[test]
    fn identity_map_reaches_the_mmio_window_or_refuses() {
        let mem = GuestMemory::new(MIB as usize).unwrap();
        assert!(long_mode(&mem, 0, 9 * GIB).is_some());
        assert!(long_mode(&mem, 0, MAX_IDENTITY_MAP + 1).is_none());
    }
}
