//! Linux's x86 boot protocol (`Documentation/arch/x86/boot.rst`), entered through its
//! 64-bit entry point, as QEMU's and Firecracker's `-kernel` do without firmware.
//!
//! 64-bit rather than 32-bit: the kernel then starts with paging as we set it up and
//! never runs its real-mode or 32-bit setup code; it needs boot protocol 2.12 and
//! `XLF_KERNEL_64`, which every x86-64 kernel since 3.8 has.
//!
//! The layout in guest RAM:
//!
//! | address | what |
//! |---|---|
//! | 0x7000 | the zero page (`struct boot_params`), with the setup header copied from the file |
//! | 0x20000 | the command line |
//! | 0x100000 | the protected-mode kernel (the file past its setup sectors); entry at +0x200 |
//! | `pref_address` (16 MiB by default) | where it decompresses itself: `init_size` bytes |
//! | top of RAM below `initrd_addr_max` and the emulator's 64 KiB | the initrd, page-aligned |
//!
//! The structures come from rust-vmm's `linux-loader` (`bootparam`, generated from the
//! kernel's own headers). Its `BzImage::load` and `LinuxBootConfigurator` write into a
//! `vm-memory` guest memory, which our loaders do not have (they describe what to write,
//! for the machine to apply, so they can be tested as plain functions): the copying they
//! do is the few lines below.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::ByteValued;

use super::{memory_map, BootImage, KernelEntry};
use crate::layout::{MIB, BOOT_AREA_SIZE};

/// "HdrS" at 0x202.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Where the setup header starts in the file and in the zero page.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// The setup header's length is 0x202 plus the byte at 0x201, minus its start.
const SETUP_HEADER_JUMP_LEN: usize = 0x201;
/// Oldest protocol with a 64-bit entry point (2.12).
const MIN_PROTOCOL: u16 = 0x020c;
/// Protocols we know: 2.x.
const MAX_PROTOCOL_MAJOR: u16 = 2;
const ENTRY_64_OFFSET: u64 = 0x200;

bitflags::bitflags! {
    /// The setup header's `xloadflags`: what the kernel can do.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct XLoadFlags: u16 {
        /// The kernel has the 64-bit entry point at `load address + 0x200`.
        const KERNEL_64 = 1 << 0;
        /// The kernel's other bits, which we do not read.
        const _ = !0;
    }

    /// The setup header's `loadflags`: what the loader did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct LoadFlags: u8 {
        /// Loaded at 1 MiB (a bzImage).
        const LOADED_HIGH = 1 << 0;
        /// The heap end pointer is valid.
        const CAN_USE_HEAP = 1 << 7;
        /// The kernel's other bits, kept as they are.
        const _ = !0;
    }
}
/// `type_of_loader`: a loader without an assigned id.
const LOADER_UNDEFINED: u8 = 0xff;
/// `vid_mode`: "normal".
const VID_MODE_NORMAL: u16 = 0xffff;
/// `heap_end_ptr`: the end of the setup heap, relative to the real-mode code (unused
/// with the 64-bit entry, but the protocol asks for it with `CAN_USE_HEAP`).
const HEAP_END: u16 = 0xfe00;

pub const ZERO_PAGE: u64 = 0x7000;
pub const CMDLINE: u64 = 0x2_0000;
pub const KERNEL_LOAD: u64 = MIB;
const PAGE: u64 = 4096;

/// Why a file cannot be booted as Linux.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinuxError {
    #[error("the bzImage is truncated: {0}")]
    Truncated(String),
    #[error("not a bzImage: no \"HdrS\" setup header at offset 0x202")]
    NotBzImage,
    #[error("the bzImage speaks boot protocol {0}.{1:02}; yakvm boots 2.12 and newer 2.x (the 64-bit entry point)")]
    Protocol(u16, u16),
    #[error("the kernel has no 64-bit entry point (xloadflags bit 0): a 32-bit kernel?")]
    No64BitEntry,
    #[error("the kernel needs {need:#x} bytes from {at:#x} (init_size) but RAM ends at {end:#x} (--mem {mem})")]
    KernelDoesNotFit { at: u64, need: u64, end: u64, mem: u64 },
    #[error("the initrd of {size} bytes does not fit in RAM above the kernel (it ends at {kernel_end:#x}, RAM usable up to {limit:#x}; --mem {mem})")]
    InitrdDoesNotFit { size: u64, kernel_end: u64, limit: u64, mem: u64 },
    #[error("the command line is {len} bytes; this kernel takes at most {max}")]
    CmdlineTooLong { len: usize, max: u32 },
}

/// Whether `file` is a bzImage (the setup header's magic).
pub fn detect(file: &[u8]) -> bool {
    file.get(0x202..0x206).is_some_and(|m| u32::from_le_bytes(m.try_into().unwrap()) == HDRS_MAGIC)
}

/// The default command line for yakvm's pc machine: the console on the UART and the TSC
/// frequency `tsc_khz` so the kernel does not calibrate it (unreliable under nested
/// virtualization), and `tsc=reliable`: the VM's TSC runs at one rate with one offset for
/// every vCPU, and without it Linux's clocksource watchdog, which early in boot compares
/// the TSC with jiffies whose ticks come late under nested virtualization, may mark the
/// TSC unstable and move to the ACPI PM timer, a port exit per clock read (a 16 MiB TCP
/// receive: 7.0 s with it, 2.3 s on the TSC; docs/net.md).
///
/// Without `apics` (one vCPU, no device that needs message-signalled interrupts) the kernel uses the PIC and PIT only (`noapic nolapic`: every APIC access
/// is an exit, and one CPU needs no IPIs); with them (several vCPUs, or virtio disks,
/// whose MSI-X messages go to a local APIC), the local APICs and the I/O APIC. ACPI is not turned off: a kernel built with it reads the machine's
/// tables (the RSDP's address is in the zero page); one without it reads the MP table.
/// PCI is not turned off either: a kernel built with it finds the host bridge through
/// mechanism #1 and the MCFG's ECAM (`pc::pci`).
pub fn default_cmdline(tsc_khz: Option<u64>, apics: bool) -> String {
    let apics = if apics { "" } else { " noapic nolapic" };
    let mut line = format!("console=ttyS0 earlyprintk=serial,ttyS0,115200{apics}");
    if let Some(khz) = tsc_khz {
        line.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    line
}

/// Loads bzImage `file` with `initrd` and `cmdline` for a guest of `ram` bytes, whose top
/// `BOOT_AREA_SIZE` bytes are the emulator's, on a machine without ACPI tables.
pub fn load(file: &[u8], initrd: Option<&[u8]>, cmdline: &str, ram: u64) -> Result<BootImage, LinuxError> {
    load_with_acpi(file, initrd, cmdline, ram, None)
}

/// [`load`] for a machine whose ACPI tables have their RSDP at `acpi_rsdp`: the zero page's
/// `acpi_rsdp_addr` (boot protocol 2.14) says where, so the kernel need not scan for it
/// (older kernels ignore the field and find it by their scan of 0xe0000-0xfffff).
pub fn load_with_acpi(file: &[u8], initrd: Option<&[u8]>, cmdline: &str, ram: u64, acpi_rsdp: Option<u64>) -> Result<BootImage, LinuxError> {
    if file.len() < 0x202 + 4 {
        return Err(LinuxError::Truncated(format!("{} bytes, shorter than the setup header", file.len())));
    }
    if !detect(file) {
        return Err(LinuxError::NotBzImage);
    }
    let header_end = (0x202 + usize::from(file[SETUP_HEADER_JUMP_LEN])).min(SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>());
    let mut hdr = setup_header::default();
    let n = header_end - SETUP_HEADER_OFFSET;
    hdr.as_mut_slice()[..n].copy_from_slice(&file[SETUP_HEADER_OFFSET..header_end]);

    let version = hdr.version;
    if version >> 8 > MAX_PROTOCOL_MAJOR || version < MIN_PROTOCOL {
        return Err(LinuxError::Protocol(version >> 8, version & 0xff));
    }
    if !XLoadFlags::from_bits_retain(hdr.xloadflags).contains(XLoadFlags::KERNEL_64) {
        return Err(LinuxError::No64BitEntry);
    }
    let setup_sects = if hdr.setup_sects == 0 { 4 } else { u64::from(hdr.setup_sects) };
    let kernel_start = (setup_sects + 1) * 512;
    // syssize: the protected-mode code's size in 16-byte paragraphs.
    let kernel_len = u64::from(hdr.syssize) * 16;
    let file_len = file.len() as u64;
    if kernel_start + kernel_len > file_len {
        return Err(LinuxError::Truncated(format!(
            "the header says {} bytes (setup {kernel_start} + kernel {kernel_len}), the file has {file_len}",
            kernel_start + kernel_len
        )));
    }
    let usable_end = ram.saturating_sub(BOOT_AREA_SIZE);
    // The compressed kernel at 1 MiB decompresses itself to its preferred address
    // (protocol 2.10 and newer say it; LOAD_PHYSICAL_ADDR, 16 MiB, by default) and needs
    // init_size bytes there.
    let init_size = u64::from(hdr.init_size).max(kernel_len);
    let run_at = if version >= 0x020a { hdr.pref_address.max(KERNEL_LOAD) } else { KERNEL_LOAD };
    let kernel_end = (run_at + init_size).max(KERNEL_LOAD + kernel_len);
    if kernel_end > usable_end {
        return Err(LinuxError::KernelDoesNotFit { at: run_at, need: init_size, end: usable_end, mem: ram });
    }
    let max_cmdline = if version >= 0x0206 { hdr.cmdline_size } else { 255 };
    if cmdline.len() > max_cmdline as usize {
        return Err(LinuxError::CmdlineTooLong { len: cmdline.len(), max: max_cmdline });
    }

    let mut writes = vec![(KERNEL_LOAD, file[kernel_start as usize..].to_vec())];
    let mut cmdline_bytes = cmdline.as_bytes().to_vec();
    cmdline_bytes.push(0);
    writes.push((CMDLINE, cmdline_bytes));

    hdr.type_of_loader = LOADER_UNDEFINED;
    hdr.loadflags = (LoadFlags::from_bits_retain(hdr.loadflags) | LoadFlags::LOADED_HIGH | LoadFlags::CAN_USE_HEAP).bits();
    hdr.heap_end_ptr = HEAP_END;
    hdr.vid_mode = VID_MODE_NORMAL;
    hdr.code32_start = KERNEL_LOAD as u32;
    hdr.cmd_line_ptr = CMDLINE as u32;
    let mut params = boot_params { hdr, ..Default::default() };
    params.ext_cmd_line_ptr = (CMDLINE >> 32) as u32;
    params.acpi_rsdp_addr = acpi_rsdp.unwrap_or(0);

    if let Some(initrd) = initrd {
        let size = initrd.len() as u64;
        // As high as allowed, below the emulator's area, page-aligned, above the kernel.
        let limit = usable_end.min(u64::from(hdr.initrd_addr_max) + 1);
        let at = limit.checked_sub(size).map(|a| a & !(PAGE - 1)).filter(|&a| a >= kernel_end);
        let Some(at) = at else {
            return Err(LinuxError::InitrdDoesNotFit { size, kernel_end, limit, mem: ram });
        };
        params.hdr.ramdisk_image = at as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (at >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
        writes.push((at, initrd.to_vec()));
    }

    let map = memory_map(ram, usable_end);
    for (slot, r) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr: r.base, size: r.length, r#type: r.kind };
    }
    params.e820_entries = map.len() as u8;
    writes.push((ZERO_PAGE, params.as_slice().to_vec()));

    Ok(BootImage { writes, entry: KernelEntry::Long64 { rip: KERNEL_LOAD + ENTRY_64_OFFSET, rsi: ZERO_PAGE } })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic bzImage: `setup_sects` setup sectors, then `kernel` bytes.
    fn bzimage(version: u16, xloadflags: u16, kernel: usize) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut file = vec![0u8; (usize::from(setup_sects) + 1) * 512 + kernel];
        let mut hdr = setup_header { setup_sects, version, xloadflags, ..Default::default() };
        hdr.header = HDRS_MAGIC;
        hdr.syssize = (kernel / 16) as u32;
        hdr.init_size = (kernel * 4) as u32;
        hdr.pref_address = 0x100_0000;
        hdr.cmdline_size = 2047;
        hdr.initrd_addr_max = 0x7fff_ffff;
        hdr.loadflags = LoadFlags::LOADED_HIGH.bits();
        let bytes = hdr.as_slice();
        file[SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + bytes.len()].copy_from_slice(bytes);
        file[SETUP_HEADER_JUMP_LEN] = (SETUP_HEADER_OFFSET + bytes.len() - 0x202) as u8;
        for (i, b) in file[5 * 512..].iter_mut().enumerate() {
            *b = i as u8;
        }
        file
    }

    fn params_of(image: &BootImage) -> boot_params {
        let (_, bytes) = image.writes.iter().find(|(at, _)| *at == ZERO_PAGE).unwrap();
        let mut p = boot_params::default();
        p.as_mut_slice().copy_from_slice(bytes);
        p
    }

    #[test]
    fn loads_kernel_cmdline_initrd_and_zero_page() {
        let file = bzimage(0x020f, XLoadFlags::KERNEL_64.bits(), 64 * 1024);
        let image = load(&file, Some(&[7u8; 10_000]), "console=ttyS0", 64 * MIB).unwrap();
        assert_eq!(image.entry, KernelEntry::Long64 { rip: MIB + 0x200, rsi: ZERO_PAGE });
        assert_eq!(image.writes[0], (MIB, file[5 * 512..].to_vec()));
        assert_eq!(image.writes[1], (CMDLINE, b"console=ttyS0\0".to_vec()));
        let p = params_of(&image);
        let (initrd_at, size) = (p.hdr.ramdisk_image, p.hdr.ramdisk_size);
        assert_eq!(size, 10_000);
        assert_eq!(u64::from(initrd_at) % PAGE, 0);
        assert!(u64::from(initrd_at) + 10_000 <= 64 * MIB - BOOT_AREA_SIZE);
        assert!(image.writes.contains(&(u64::from(initrd_at), vec![7u8; 10_000])));
        let (loader, flags, cmd) = (p.hdr.type_of_loader, p.hdr.loadflags, p.hdr.cmd_line_ptr);
        let heap = LoadFlags::CAN_USE_HEAP.bits();
        assert_eq!((loader, flags & heap, cmd), (0xff, heap, CMDLINE as u32));
        assert_eq!(p.e820_entries, 6);
        let top = p.e820_table[4];
        let (addr, len, kind) = (top.addr, top.size, top.r#type);
        assert_eq!((addr, len, kind), (64 * MIB - BOOT_AREA_SIZE, BOOT_AREA_SIZE, crate::kernel::RESERVED));
        // ECAM, reserved, so that Linux takes the MCFG's window.
        let ecam = p.e820_table[5];
        let (addr, len, kind) = (ecam.addr, ecam.size, ecam.r#type);
        assert_eq!((addr, len, kind), (0xe000_0000, MIB, crate::kernel::RESERVED));
    }

    #[test]
    fn the_rsdp_address_is_in_the_zero_page_when_the_machine_has_acpi() {
        let file = bzimage(0x020f, XLoadFlags::KERNEL_64.bits(), 64 * 1024);
        let rsdp = |image: &BootImage| params_of(image).acpi_rsdp_addr;
        assert_eq!(rsdp(&load(&file, None, "", 64 * MIB).unwrap()), 0);
        assert_eq!(rsdp(&load_with_acpi(&file, None, "", 64 * MIB, Some(0xe_0000)).unwrap()), 0xe_0000);
        // boot_params offset 0x070 (Documentation/arch/x86/zero-page.rst).
        let image = load_with_acpi(&file, None, "", 64 * MIB, Some(0xe_0000)).unwrap();
        let (_, zero_page) = image.writes.iter().find(|(at, _)| *at == ZERO_PAGE).unwrap();
        assert_eq!(zero_page[0x70..0x78], 0xe_0000u64.to_le_bytes());
    }

    #[test]
    fn bad_files_are_named() {
        assert!(matches!(load(&[0u8; 100], None, "", 64 * MIB), Err(LinuxError::Truncated(_))));
        assert_eq!(load(&vec![0u8; 8192], None, "", 64 * MIB), Err(LinuxError::NotBzImage));
        let file = bzimage(0x020f, XLoadFlags::KERNEL_64.bits(), 64 * 1024);
        assert!(matches!(load(&file[..file.len() - 1], None, "", 64 * MIB), Err(LinuxError::Truncated(_))));
        assert_eq!(load(&bzimage(0x0204, XLoadFlags::KERNEL_64.bits(), 4096), None, "", 64 * MIB), Err(LinuxError::Protocol(2, 4)));
        assert_eq!(load(&bzimage(0x0300, XLoadFlags::KERNEL_64.bits(), 4096), None, "", 64 * MIB), Err(LinuxError::Protocol(3, 0)));
        assert_eq!(load(&bzimage(0x020f, 0, 4096), None, "", 64 * MIB), Err(LinuxError::No64BitEntry));
        // It runs at 16 MiB (pref_address), 256 KiB of it: 16 MiB of RAM is not enough.
        assert!(matches!(load(&file, None, "", 16 * MIB), Err(LinuxError::KernelDoesNotFit { .. })));
        assert!(load(&file, None, "", 18 * MIB).is_ok());
        assert!(matches!(load(&file, Some(&vec![0u8; 50 * MIB as usize]), "", 64 * MIB), Err(LinuxError::InitrdDoesNotFit { .. })));
        assert!(matches!(load(&file, None, &"x".repeat(3000), 64 * MIB), Err(LinuxError::CmdlineTooLong { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut file = bzimage(0x020f, XLoadFlags::KERNEL_64.bits(), 4096);
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = 0x1f0 + (seed as usize % 0x80);
                file[i] = (seed >> 32) as u8;
            }
            let _ = load(&file, Some(&[1, 2, 3]), "x", 64 * MIB);
        }
    }
}
