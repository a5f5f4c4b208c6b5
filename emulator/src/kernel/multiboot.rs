//! Multiboot v1 (specification 0.6.96,
//! <https://www.gnu.org/software/grub/manual/multiboot/multiboot.html>), the protocol of
//! GRUB legacy that QEMU's `-kernel` speaks too. The kernel carries a header in the first
//! 8192 bytes of its file; the boot loader loads it (at the addresses of the header's
//! "a.out kludge", or else as an ELF file), loads its modules, builds the Multiboot
//! information structure and enters the kernel in 32-bit protected mode, paging off,
//! with EAX = [`BOOTLOADER_MAGIC`] and EBX = the structure's address.
//!
//! The header's flags: bits 0-15 are requirements (a loader that cannot meet one must
//! refuse the kernel), bits 16-31 optional features. yakvm:
//! - bit 0 (modules page-aligned): always does it;
//! - bit 1 (memory information): always gives it (`mem_lower`/`mem_upper` and a map);
//! - bit 2 (video mode information): refuses the kernel ([`MultibootError::VideoMode`]):
//!   yakvm has no framebuffer and no VBE, so it cannot meet the requirement. A kernel
//!   that can do without video does not set the bit;
//! - bits 3-15 (undefined by 0.6.96): refuses the kernel, as the specification asks;
//! - bit 16 (a.out kludge): loads the file by the header's addresses (`header_addr`,
//!   `load_addr`, `load_end_addr`, `bss_end_addr`, `entry_addr`) whatever its format;
//!   without it the kernel must be an ELF file (32- or 64-bit): its PT_LOAD segments go
//!   to their physical addresses (`p_paddr`), and its entry point is translated from
//!   virtual to physical if it lies in a segment's virtual range (as GRUB 2 does), else
//!   taken as a physical address if it lies in a segment's physical range (as GRUB legacy
//!   and QEMU enter it: xv6's entry 0x10000c lies in its kernel's segment linked at
//!   0x80100000 and loaded at 0x100000). The entry must be below 4 GiB;
//! - bits 17-31: ignored.
//!
//! Layout in guest RAM (everything below `ram - reserved_top`, the emulator's, and
//! below 4 GiB, as the structure's fields are 32-bit):
//!
//! | address | what |
//! |---|---|
//! | where the kernel says | the kernel, its bss zeroed (written as zeros) |
//! | first page boundary above the kernel | the information structure (88 bytes), the memory map (24 bytes an entry), the module list (16 bytes a module), then the NUL-terminated command line, boot loader name (`"yakvm"`) and module strings |
//! | the next page boundaries | each module, page-aligned, in order |
//!
//! The information structure gives `mem_lower` = 639 KiB (below the EBDA the memory map reserves, as GRUB and QEMU say), `mem_upper` = RAM from 1 MiB
//! to the emulator's area, and the memory map of the pc machine:
//! `[0, 0x9fc00)` available, `[0x9fc00, 0xa0000)` reserved (the EBDA),
//! `[0xf0000, 0x100000)` reserved (the BIOS), `[1 MiB, ram - reserved_top)` available,
//! `[ram - reserved_top, ram)` reserved. A module's `mod_end` is the address just past
//! its last byte, as GRUB and QEMU give it.

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endian, Endianness};

use super::{memory_map, BootImage, KernelEntry};
use crate::layout::{GIB, KIB, MIB};

/// The header's magic value.
pub const MAGIC: u32 = 0x1BAD_B002;
/// EAX at the kernel's entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// The header lies in this many first bytes of the file, 4-byte aligned.
const HEADER_SEARCH: usize = 8192;
const HEADER_ALIGN: usize = 4;

// The header's fields (offsets from the magic).
const H_FLAGS: usize = 4;
const H_CHECKSUM: usize = 8;
const H_HEADER_ADDR: usize = 12;
const H_LOAD_ADDR: usize = 16;
const H_LOAD_END_ADDR: usize = 20;
const H_BSS_END_ADDR: usize = 24;
const H_ENTRY_ADDR: usize = 28;
/// Magic, flags and checksum.
const HEADER_LEN: usize = 12;
/// With the a.out kludge's address fields.
const HEADER_AOUT_LEN: usize = 32;

bitflags::bitflags! {
    /// The header's flags (see the module's documentation for what yakvm does with each).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct HeaderFlags: u32 {
        const MODS_ALIGNED = 1 << 0;
        const MEMORY_INFO = 1 << 1;
        const VIDEO_MODE = 1 << 2;
        /// Bits 0-15: requirements.
        const REQUIRED = 0xffff;
        const AOUT_KLUDGE = 1 << 16;
        /// Bits no version of the specification names, kept to be refused or ignored.
        const _ = !0;
    }

    /// The information structure's flags: which fields are valid.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct InfoFlags: u32 {
        const MEMORY = 1 << 0;
        const CMDLINE = 1 << 2;
        const MODS = 1 << 3;
        const MMAP = 1 << 6;
        const BOOT_LOADER_NAME = 1 << 9;
    }
}

// The information structure's fields.
const I_FLAGS: usize = 0;
const I_MEM_LOWER: usize = 4;
const I_MEM_UPPER: usize = 8;
const I_CMDLINE: usize = 16;
const I_MODS_COUNT: usize = 20;
const I_MODS_ADDR: usize = 24;
const I_MMAP_LENGTH: usize = 44;
const I_MMAP_ADDR: usize = 48;
const I_BOOT_LOADER_NAME: usize = 64;
/// Its size in 0.6.96 (up to the VBE fields, which stay zero).
const INFO_LEN: usize = 88;

// A module list entry.
const MOD_START: usize = 0;
const MOD_END: usize = 4;
const MOD_STRING: usize = 8;
const MOD_ENTRY_LEN: usize = 16;

// A memory map entry: `size` (of the rest of the entry, 20), base, length, type.
const MMAP_SIZE: usize = 0;
const MMAP_BASE: usize = 4;
const MMAP_LENGTH: usize = 12;
const MMAP_TYPE: usize = 20;
const MMAP_ENTRY_LEN: usize = 24;
const MMAP_SIZE_VALUE: u32 = 20;

/// `mem_lower`, in KiB.
pub(super) const MEM_LOWER_KIB: u32 = 639;
pub(super) const PAGE: u64 = 4096;
/// The structure's addresses are 32-bit.
pub(super) const ADDRESS_LIMIT: u64 = 4 * GIB;

pub const BOOT_LOADER_NAME: &str = "yakvm";

/// A boot module: its contents and its string (by convention its file name and
/// arguments).
pub struct Module<'a> {
    pub bytes: &'a [u8],
    pub string: &'a str,
}

/// Why a file cannot be booted as a Multiboot kernel.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultibootError {
    #[error("no Multiboot header in the first 8192 bytes")]
    NoHeader,
    #[error(
        "the Multiboot header at file offset {offset:#x} is cut short: its {need} bytes must lie in the file and in its first 8192 bytes"
    )]
    HeaderTruncated { offset: usize, need: usize },
    #[error("Multiboot header checksum is wrong (magic + flags + checksum = {sum:#x}, not 0) at file offset {offset:#x}")]
    BadChecksum { offset: usize, sum: u32 },
    #[error("the kernel asks for video mode information (flag 2), which yakvm does not provide: it has no framebuffer")]
    VideoMode,
    #[error("the kernel's Multiboot header requires what yakvm does not know (flags {0:#x}: bits 3-15 are undefined in Multiboot 0.6.96)")]
    UnknownRequirement(u32),
    #[error("a.out kludge addresses are inconsistent: {0}")]
    Aout(String),
    #[error("the kernel is not an ELF file, and its Multiboot header does not set flag 16 (the a.out kludge) to say where it goes")]
    NotElf,
    #[error("bad ELF: {0}")]
    Elf(String),
    #[error("the kernel's entry point {0:#x} is not below 4 GiB (a Multiboot kernel starts in 32-bit mode)")]
    EntryAbove4G(u64),
    #[error("the kernel's segment at {start:#x}-{end:#x} is outside RAM (--mem {}: a kernel may use 0x0-{limit:#x}, below the emulator's top {} and below 4 GiB)", size(.mem), size(.reserved))]
    OutsideRam { start: u64, end: u64, limit: u64, mem: u64, reserved: u64 },
    #[error("--mem {} is too small for a Multiboot kernel: it must leave more than 1 MiB below the emulator's top {}", size(.mem), size(.reserved))]
    RamTooSmall { mem: u64, reserved: u64 },
    #[error("the {0} contains a NUL byte, which would end it early")]
    NulByte(String),
    #[error("the boot information and modules need {need:#x} bytes from {start:#x} (the first page above the kernel), but the kernel's RAM ends at {limit:#x} (--mem {})", size(.mem))]
    DoesNotFit { start: u64, need: u64, limit: u64, mem: u64 },
}

/// `bytes` as `--mem` takes it: `32M`, `1G`, `64K`, or a number of bytes.
fn size(bytes: &u64) -> String {
    match *bytes {
        0 => "0".to_string(),
        b if b % GIB == 0 => format!("{}G", b / GIB),
        b if b % MIB == 0 => format!("{}M", b / MIB),
        b if b % KIB == 0 => format!("{}K", b / KIB),
        b => b.to_string(),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// The part of the file the header must lie in.
fn search_area(kernel: &[u8]) -> &[u8] {
    &kernel[..kernel.len().min(HEADER_SEARCH)]
}

/// File offsets of the header magic, 4-byte aligned, in the first 8192 bytes.
fn magic_offsets(kernel: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let area = search_area(kernel);
    (0..area.len()).step_by(HEADER_ALIGN).filter(move |&at| read_u32(area, at) == Some(MAGIC))
}

/// Whether `kernel` carries a Multiboot v1 header (in its first 8192 bytes, 4-byte
/// aligned, checksum valid or not: `load` tells what is wrong with it).
pub fn detect(kernel: &[u8]) -> bool {
    magic_offsets(kernel).next().is_some()
}

/// The header: the first magic whose checksum is right (as GRUB looks for it: the magic
/// value may also appear in the kernel's code before it).
struct Header {
    offset: usize,
    flags: HeaderFlags,
}

fn find_header(kernel: &[u8]) -> Result<Header, MultibootError> {
    let area = search_area(kernel);
    let mut first_problem = None;
    for offset in magic_offsets(kernel) {
        let (Some(flags), Some(checksum)) = (read_u32(area, offset + H_FLAGS), read_u32(area, offset + H_CHECKSUM)) else {
            first_problem.get_or_insert(MultibootError::HeaderTruncated { offset, need: HEADER_LEN });
            continue;
        };
        let sum = MAGIC.wrapping_add(flags).wrapping_add(checksum);
        if sum == 0 {
            return Ok(Header { offset, flags: HeaderFlags::from_bits_retain(flags) });
        }
        first_problem.get_or_insert(MultibootError::BadChecksum { offset, sum });
    }
    Err(first_problem.unwrap_or(MultibootError::NoHeader))
}

/// Refuses the requirements yakvm cannot meet.
fn check_flags(flags: HeaderFlags) -> Result<(), MultibootError> {
    if flags.contains(HeaderFlags::VIDEO_MODE) {
        return Err(MultibootError::VideoMode);
    }
    let known = HeaderFlags::MODS_ALIGNED | HeaderFlags::MEMORY_INFO | HeaderFlags::VIDEO_MODE;
    let unknown = flags & HeaderFlags::REQUIRED & !known;
    if !unknown.is_empty() {
        return Err(MultibootError::UnknownRequirement(unknown.bits()));
    }
    Ok(())
}

/// A piece of the kernel: `bytes` at `at`, then zeros up to `size` bytes.
pub(super) struct Segment<'a> {
    pub(super) at: u64,
    pub(super) bytes: &'a [u8],
    pub(super) size: u64,
}

/// The kernel's pieces and its physical entry point.
pub(super) struct Kernel<'a> {
    pub(super) segments: Vec<Segment<'a>>,
    pub(super) entry: u64,
}

/// The kernel as the a.out kludge's addresses say.
fn aout_kernel<'a>(kernel: &'a [u8], header: &Header) -> Result<Kernel<'a>, MultibootError> {
    let area = search_area(kernel);
    let field = |f| read_u32(area, header.offset + f).map(u64::from);
    let (Some(header_addr), Some(load_addr), Some(load_end_addr), Some(bss_end_addr), Some(entry)) =
        (field(H_HEADER_ADDR), field(H_LOAD_ADDR), field(H_LOAD_END_ADDR), field(H_BSS_END_ADDR), field(H_ENTRY_ADDR))
    else {
        return Err(MultibootError::HeaderTruncated { offset: header.offset, need: HEADER_AOUT_LEN });
    };
    aout_layout(kernel, header.offset, [header_addr, load_addr, load_end_addr, bss_end_addr], entry)
}

/// The kernel laid out by a header at file offset `header_offset` that gives its
/// `[header_addr, load_addr, load_end_addr, bss_end_addr]` and entry (Multiboot 1's a.out
/// kludge, Multiboot 2's address and entry tags).
pub(super) fn aout_layout(kernel: &[u8], header_offset: usize, addresses: [u64; 4], entry: u64) -> Result<Kernel<'_>, MultibootError> {
    let [header_addr, load_addr, load_end_addr, bss_end_addr] = addresses;
    let bad = |why: String| Err(MultibootError::Aout(why));
    if load_addr > header_addr {
        return bad(format!("load_addr {load_addr:#x} is above header_addr {header_addr:#x}"));
    }
    let header_offset = header_offset as u64;
    let Some(file_start) = header_offset.checked_sub(header_addr - load_addr) else {
        return bad(format!(
            "load_addr {load_addr:#x} is {:#x} bytes below header_addr {header_addr:#x}, but the header is at file offset {header_offset:#x}",
            header_addr - load_addr
        ));
    };
    let file_len = kernel.len() as u64;
    let load_len = if load_end_addr == 0 {
        file_len - file_start
    } else if load_end_addr < load_addr {
        return bad(format!("load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}"));
    } else {
        load_end_addr - load_addr
    };
    if file_start + load_len > file_len {
        return bad(format!(
            "load_addr {load_addr:#x}-load_end_addr {load_end_addr:#x} asks for {load_len:#x} bytes from file offset {file_start:#x}, but the file has {file_len:#x} bytes"
        ));
    }
    let load_end = load_addr + load_len;
    let end = if bss_end_addr == 0 {
        load_end
    } else if bss_end_addr < load_end {
        return bad(format!("bss_end_addr {bss_end_addr:#x} is below the end of the loaded part, {load_end:#x}"));
    } else {
        bss_end_addr
    };
    if !(load_addr..load_end).contains(&entry) {
        return bad(format!("entry_addr {entry:#x} is outside the loaded part, {load_addr:#x}-{load_end:#x}"));
    }
    // In range: checked above.
    let bytes = &kernel[file_start as usize..(file_start + load_len) as usize];
    Ok(Kernel { segments: vec![Segment { at: load_addr, bytes, size: end - load_addr }], entry })
}

/// The kernel as its ELF program headers say.
pub(super) fn elf_kernel(kernel: &[u8]) -> Result<Kernel<'_>, MultibootError> {
    match kernel.get(..5) {
        Some([0x7f, b'E', b'L', b'F', class]) if *class == elf::ELFCLASS32 => {
            elf_segments::<elf::FileHeader32<Endianness>>(kernel, elf::EM_386, "EM_386")
        }
        Some([0x7f, b'E', b'L', b'F', class]) if *class == elf::ELFCLASS64 => {
            elf_segments::<elf::FileHeader64<Endianness>>(kernel, elf::EM_X86_64, "EM_X86_64")
        }
        Some([0x7f, b'E', b'L', b'F', class]) => Err(MultibootError::Elf(format!("unknown ELF class {class}"))),
        _ => Err(MultibootError::NotElf),
    }
}

fn elf_segments<'a, H: FileHeader<Endian = Endianness>>(
    kernel: &'a [u8],
    machine: u16,
    machine_name: &str,
) -> Result<Kernel<'a>, MultibootError> {
    let bad = |why: String| MultibootError::Elf(why);
    let header = H::parse(kernel).map_err(|e| bad(e.to_string()))?;
    let endian = header.endian().map_err(|e| bad(e.to_string()))?;
    if !endian.is_little_endian() {
        return Err(bad("the file is big-endian".into()));
    }
    let found = header.e_machine(endian);
    if found != machine {
        return Err(bad(format!("the file is for machine {found}, not x86 ({machine_name}, {machine})")));
    }
    let virtual_entry: u64 = header.e_entry(endian).into();
    let mut entry = None;
    let mut physical_entry = None;
    let mut segments = Vec::new();
    for ph in header.program_headers(endian, kernel).map_err(|e| bad(e.to_string()))? {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let paddr: u64 = ph.p_paddr(endian).into();
        let vaddr: u64 = ph.p_vaddr(endian).into();
        let (file_size, size): (u64, u64) = (ph.p_filesz(endian).into(), ph.p_memsz(endian).into());
        if file_size > size {
            return Err(bad(format!("the segment at {paddr:#x} has a file size ({file_size:#x}) larger than its memory size ({size:#x})")));
        }
        let bytes = ph.data(endian, kernel).map_err(|()| bad(format!("the segment at {paddr:#x}: its bytes lie outside the file")))?;
        if size == 0 {
            continue;
        }
        if entry.is_none() && virtual_entry.wrapping_sub(vaddr) < size {
            entry = paddr.checked_add(virtual_entry - vaddr);
        }
        if virtual_entry.wrapping_sub(paddr) < size {
            physical_entry = Some(virtual_entry);
        }
        segments.push(Segment { at: paddr, bytes, size });
    }
    if segments.is_empty() {
        return Err(bad("the file has no loadable segment".into()));
    }
    let Some(entry) = entry.or(physical_entry) else {
        return Err(bad(format!(
            "the entry point {virtual_entry:#x} lies in no loadable segment, neither in its virtual nor in its physical range"
        )));
    };
    if entry >= ADDRESS_LIMIT {
        return Err(MultibootError::EntryAbove4G(entry));
    }
    Ok(Kernel { segments, entry })
}

/// The boot information block being built: the bytes that go to `base`.
struct Block {
    base: u64,
    bytes: Vec<u8>,
}

impl Block {
    fn put_u32(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u64(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// The guest address of `at` in the block (below 4 GiB: checked before it is used).
    fn address(&self, at: usize) -> u32 {
        (self.base + at as u64) as u32
    }

    /// Appends `s` and its NUL; returns its address.
    fn push_str(&mut self, s: &str) -> u32 {
        let at = self.address(self.bytes.len());
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        at
    }
}

/// Loads a Multiboot v1 kernel for a guest with `ram` bytes of RAM, of which the top
/// `reserved_top` bytes belong to the emulator (its GDT lives there): nothing is
/// written there. `cmdline` is the kernel's whole command line; `modules` are loaded in
/// order. See the module's documentation for the layout.
pub fn load(kernel: &[u8], cmdline: &str, modules: &[Module], ram: u64, reserved_top: u64) -> Result<BootImage, MultibootError> {
    let usable_top =
        ram.checked_sub(reserved_top).filter(|&top| top > MIB).ok_or(MultibootError::RamTooSmall { mem: ram, reserved: reserved_top })?;
    let limit = usable_top.min(ADDRESS_LIMIT);
    let header = find_header(kernel)?;
    check_flags(header.flags)?;
    let image = if header.flags.contains(HeaderFlags::AOUT_KLUDGE) { aout_kernel(kernel, &header)? } else { elf_kernel(kernel)? };
    if cmdline.contains('\0') {
        return Err(MultibootError::NulByte("command line".into()));
    }
    if let Some(i) = modules.iter().position(|m| m.string.contains('\0')) {
        return Err(MultibootError::NulByte(format!("string of module {i}")));
    }

    let mut writes = Vec::new();
    let mut kernel_end = 0;
    for seg in &image.segments {
        let end = seg.at.saturating_add(seg.size);
        if end > limit {
            return Err(MultibootError::OutsideRam { start: seg.at, end, limit, mem: ram, reserved: reserved_top });
        }
        // Below 4 GiB: the size fits in usize.
        let mut bytes = Vec::with_capacity(seg.size as usize);
        bytes.extend_from_slice(seg.bytes);
        bytes.resize(seg.size as usize, 0);
        writes.push((seg.at, bytes));
        kernel_end = kernel_end.max(end);
    }

    // The information block, on the first page above the kernel (below 4 GiB: the kernel
    // ends below `limit`).
    let info = kernel_end.next_multiple_of(PAGE);
    let map = memory_map(ram, usable_top);
    let mmap_at = INFO_LEN;
    let mods_at = mmap_at + map.len() * MMAP_ENTRY_LEN;
    let strings_at = mods_at + modules.len() * MOD_ENTRY_LEN;
    let strings_len = cmdline.len() + BOOT_LOADER_NAME.len() + modules.iter().map(|m| m.string.len() + 1).sum::<usize>() + 2;
    let block_end = info.saturating_add((strings_at + strings_len) as u64);

    // Then the modules, page-aligned; everything must fit below `limit`.
    let mut top = block_end;
    let mut module_at = Vec::with_capacity(modules.len());
    for m in modules {
        let start = top.checked_next_multiple_of(PAGE).unwrap_or(u64::MAX);
        module_at.push(start);
        top = start.saturating_add(m.bytes.len() as u64);
    }
    // The last module's `mod_end` is `top`: a 32-bit field.
    let info_limit = limit.min(ADDRESS_LIMIT - 1);
    if top > info_limit {
        return Err(MultibootError::DoesNotFit { start: info, need: top - info, limit: info_limit, mem: ram });
    }

    let mut block = Block { base: info, bytes: vec![0; strings_at] };
    let valid = InfoFlags::MEMORY | InfoFlags::CMDLINE | InfoFlags::MODS | InfoFlags::MMAP | InfoFlags::BOOT_LOADER_NAME;
    block.put_u32(I_FLAGS, valid.bits());
    block.put_u32(I_MEM_LOWER, MEM_LOWER_KIB);
    block.put_u32(I_MEM_UPPER, ((usable_top - MIB) / KIB).min(u32::MAX.into()) as u32);
    for (i, &super::MemoryRange { base, length, kind }) in map.iter().enumerate() {
        let at = mmap_at + i * MMAP_ENTRY_LEN;
        block.put_u32(at + MMAP_SIZE, MMAP_SIZE_VALUE);
        block.put_u64(at + MMAP_BASE, base);
        block.put_u64(at + MMAP_LENGTH, length);
        block.put_u32(at + MMAP_TYPE, kind);
    }
    block.put_u32(I_MMAP_LENGTH, (map.len() * MMAP_ENTRY_LEN) as u32);
    block.put_u32(I_MMAP_ADDR, block.address(mmap_at));
    let cmdline_addr = block.push_str(cmdline);
    block.put_u32(I_CMDLINE, cmdline_addr);
    let name_addr = block.push_str(BOOT_LOADER_NAME);
    block.put_u32(I_BOOT_LOADER_NAME, name_addr);
    block.put_u32(I_MODS_COUNT, modules.len() as u32);
    block.put_u32(I_MODS_ADDR, block.address(mods_at));
    for (i, (m, &start)) in modules.iter().zip(&module_at).enumerate() {
        let at = mods_at + i * MOD_ENTRY_LEN;
        let string_addr = block.push_str(m.string);
        // Below `limit`, so below 4 GiB: checked above.
        block.put_u32(at + MOD_START, start as u32);
        block.put_u32(at + MOD_END, (start + m.bytes.len() as u64) as u32);
        block.put_u32(at + MOD_STRING, string_addr);
    }
    debug_assert_eq!(info + block.bytes.len() as u64, block_end);
    writes.push((info, block.bytes));
    for (m, &start) in modules.iter().zip(&module_at) {
        if !m.bytes.is_empty() {
            writes.push((start, m.bytes.to_vec()));
        }
    }

    // The entry lies in the kernel's loaded part (checked), so below 4 GiB.
    let entry = KernelEntry::Protected32 { eip: image.entry as u32, eax: BOOTLOADER_MAGIC, ebx: info as u32 };
    Ok(BootImage { writes, entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 32 * MIB;
    const RESERVED: u64 = 64 * KIB;

    /// A Multiboot header with `flags` (and a valid checksum), then the a.out fields.
    fn header(flags: u32, aout: [u32; 5]) -> Vec<u8> {
        let mut h = Vec::new();
        for v in [MAGIC, flags, 0u32.wrapping_sub(MAGIC.wrapping_add(flags))].into_iter().chain(aout) {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// An a.out-kludge kernel loaded at `load`: the header at the start, then `code`,
    /// then `bss` bytes of bss; it enters at the code.
    fn aout(load: u32, code: &[u8], bss: u32) -> Vec<u8> {
        let load_end = load + HEADER_AOUT_LEN as u32 + code.len() as u32;
        let fields = [load, load, load_end, load_end + bss, load + HEADER_AOUT_LEN as u32];
        let mut file = header(HeaderFlags::MODS_ALIGNED.bits() | HeaderFlags::MEMORY_INFO.bits() | HeaderFlags::AOUT_KLUDGE.bits(), fields);
        file.extend_from_slice(code);
        file
    }

    /// A 32-bit ELF file: one PT_LOAD of `code` (then the header at its start)
    /// at physical `paddr`, virtual `vaddr`, `memsz` bytes; the entry at `entry` (virtual).
    fn elf32(paddr: u32, vaddr: u32, entry: u32, code: &[u8], memsz: u32, flags: u32) -> Vec<u8> {
        const PH: usize = 52;
        const DATA: usize = PH + 32;
        let mut seg = header(flags, [0; 5])[..HEADER_LEN].to_vec();
        seg.extend_from_slice(code);
        let mut f = vec![0u8; DATA];
        f[..16].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..28].copy_from_slice(&entry.to_le_bytes());
        f[28..32].copy_from_slice(&(PH as u32).to_le_bytes()); // phoff
        f[40..42].copy_from_slice(&52u16.to_le_bytes()); // ehsize
        f[42..44].copy_from_slice(&32u16.to_le_bytes()); // phentsize
        f[44..46].copy_from_slice(&1u16.to_le_bytes()); // phnum
        for (i, v) in [1, DATA as u32, vaddr, paddr, seg.len() as u32, memsz, 7, 4].into_iter().enumerate() {
            f[PH + 4 * i..PH + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&seg);
        f
    }

    /// A 64-bit ELF file, as `elf32`.
    fn elf64(paddr: u64, vaddr: u64, entry: u64, code: &[u8], memsz: u64) -> Vec<u8> {
        const PH: usize = 64;
        const DATA: usize = PH + 56;
        let mut seg = header(HeaderFlags::MEMORY_INFO.bits(), [0; 5])[..HEADER_LEN].to_vec();
        seg.extend_from_slice(code);
        let mut f = vec![0u8; DATA];
        f[..16].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(PH as u64).to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        f[PH..PH + 4].copy_from_slice(&1u32.to_le_bytes());
        f[PH + 4..PH + 8].copy_from_slice(&7u32.to_le_bytes());
        for (i, v) in [DATA as u64, vaddr, paddr, seg.len() as u64, memsz, 8].into_iter().enumerate() {
            f[PH + 8 + 8 * i..PH + 16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&seg);
        f
    }

    /// Guest RAM after the image's writes, checking they stay below the reserved top.
    fn ram_of(image: &BootImage) -> Vec<u8> {
        let mut ram = vec![0u8; RAM as usize];
        for (at, bytes) in &image.writes {
            assert!(at + bytes.len() as u64 <= RAM - RESERVED, "write at {at:#x} reaches the reserved top");
            ram[*at as usize..*at as usize + bytes.len()].copy_from_slice(bytes);
        }
        ram
    }

    fn u32_at(ram: &[u8], at: u32) -> u32 {
        read_u32(ram, at as usize).unwrap()
    }

    fn u64_at(ram: &[u8], at: u32) -> u64 {
        u64::from(u32_at(ram, at)) | u64::from(u32_at(ram, at + 4)) << 32
    }

    fn cstr_at(ram: &[u8], at: u32) -> &str {
        let tail = &ram[at as usize..];
        std::str::from_utf8(&tail[..tail.iter().position(|&b| b == 0).unwrap()]).unwrap()
    }

    /// The entry registers.
    fn entry_of(image: &BootImage) -> (u32, u32, u32) {
        let KernelEntry::Protected32 { eip, eax, ebx } = image.entry else { panic!("not 32-bit") };
        (eip, eax, ebx)
    }

    #[test]
    fn the_header_is_found_in_the_first_8192_bytes_aligned() {
        let h = header(HeaderFlags::MEMORY_INFO.bits(), [0; 5]);
        let at = |offset: usize| {
            let mut f = vec![0u8; offset];
            f.extend_from_slice(&h);
            f.resize(f.len().max(9000), 0);
            f
        };
        assert!(detect(&at(0)));
        assert!(detect(&at(8188)));
        assert!(!detect(&at(8192)));
        assert!(!detect(&at(6)));
        assert!(!detect(&[]));
        assert!(!detect(b"\x02\xb0\xad"));
        assert_eq!(find_header(&at(8188)).err(), Some(MultibootError::HeaderTruncated { offset: 8188, need: 12 }));
        assert_eq!(find_header(&at(0x40)).unwrap().offset, 0x40);
        assert!(matches!(load(&at(6), "", &[], RAM, RESERVED), Err(MultibootError::NoHeader)));
        assert_eq!(MultibootError::NoHeader.to_string(), "no Multiboot header in the first 8192 bytes");
    }

    #[test]
    fn a_bad_checksum_is_refused_but_a_later_good_header_is_used() {
        let mut f = aout(0x10_0000, &[0xf4], 0);
        f[H_CHECKSUM] ^= 1;
        assert!(detect(&f));
        let err = load(&f, "", &[], RAM, RESERVED).unwrap_err();
        assert_eq!(err, MultibootError::BadChecksum { offset: 0, sum: 0xffff_ffff });
        assert_eq!(err.to_string(), "Multiboot header checksum is wrong (magic + flags + checksum = 0xffffffff, not 0) at file offset 0x0");
        // The magic as a stray value before the real header.
        let mut g = MAGIC.to_le_bytes().to_vec();
        g.extend_from_slice(&[0; 12]);
        g.extend_from_slice(&header(HeaderFlags::MEMORY_INFO.bits(), [0; 5]));
        assert_eq!(find_header(&g).unwrap().offset, 16);
    }

    #[test]
    fn video_and_unknown_requirements_are_refused_optional_bits_ignored() {
        let mut f = aout(0x10_0000, &[0xf4], 0);
        f[..HEADER_LEN].copy_from_slice(&header(HeaderFlags::AOUT_KLUDGE.bits() | HeaderFlags::VIDEO_MODE.bits(), [0; 5])[..HEADER_LEN]);
        let err = load(&f, "", &[], RAM, RESERVED).unwrap_err();
        assert_eq!(err, MultibootError::VideoMode);
        assert!(err.to_string().contains("video mode information (flag 2)"));
        f[..HEADER_LEN].copy_from_slice(&header(HeaderFlags::AOUT_KLUDGE.bits() | 1 << 5, [0; 5])[..HEADER_LEN]);
        assert_eq!(load(&f, "", &[], RAM, RESERVED).unwrap_err(), MultibootError::UnknownRequirement(1 << 5));
        f[..HEADER_LEN].copy_from_slice(&header(HeaderFlags::AOUT_KLUDGE.bits() | 1 << 20, [0; 5])[..HEADER_LEN]);
        assert!(load(&f, "", &[], RAM, RESERVED).is_ok());
    }

    #[test]
    fn aout_kludge_kernels_load_at_their_address_with_the_bss_zeroed() {
        let code = [0xb8, 1, 2, 3, 4, 0xf4];
        let f = aout(0x20_0000, &code, 0x3000);
        let image = load(&f, "", &[], RAM, RESERVED).unwrap();
        let (at, bytes) = &image.writes[0];
        assert_eq!(*at, 0x20_0000);
        assert_eq!(bytes.len(), f.len() + 0x3000);
        assert_eq!(&bytes[..f.len()], &f[..]);
        assert!(bytes[f.len()..].iter().all(|&b| b == 0));
        let (eip, eax, ebx) = entry_of(&image);
        assert_eq!((eip, eax), (0x20_0000 + 32, BOOTLOADER_MAGIC));
        // The information on the first page above the bss.
        assert_eq!(u64::from(ebx), (0x20_0000 + f.len() as u64 + 0x3000).next_multiple_of(PAGE));
        let ram = ram_of(&image);
        assert_eq!(&ram[0x20_0000..0x20_0000 + f.len()], &f[..]);

        // The header later in the file than the loaded part's start: header_addr says
        // where the header goes, the file is loaded from header offset - (header_addr -
        // load_addr).
        let mut g = vec![0x90u8; 0x100];
        let fields = [0x10_0100, 0x10_0080, 0x10_0200, 0x10_1000, 0x10_0080];
        g.extend_from_slice(&header(HeaderFlags::AOUT_KLUDGE.bits(), fields));
        g.resize(0x300, 0xcc);
        let image = load(&g, "", &[], RAM, RESERVED).unwrap();
        let (at, bytes) = &image.writes[0];
        assert_eq!((*at, bytes.len()), (0x10_0080, 0xf80));
        assert_eq!(&bytes[..0x180], &g[0x80..0x200]);
        assert!(bytes[0x180..].iter().all(|&b| b == 0));
        assert_eq!(entry_of(&image).0, 0x10_0080);

        // load_end_addr 0: the whole file from the start offset; bss_end_addr 0: no bss.
        let mut h = header(HeaderFlags::AOUT_KLUDGE.bits(), [0x10_0000, 0x10_0000, 0, 0, 0x10_0000]);
        h.resize(100, 0xf4);
        let image = load(&h, "", &[], RAM, RESERVED).unwrap();
        assert_eq!(image.writes[0], (0x10_0000, h.clone()));
    }

    #[test]
    fn inconsistent_aout_addresses_are_named() {
        let fields = |f: [u32; 5]| {
            let mut g = vec![0u8; 0x40];
            g.extend_from_slice(&header(HeaderFlags::AOUT_KLUDGE.bits(), f));
            g.resize(0x200, 0);
            match load(&g, "", &[], RAM, RESERVED) {
                Err(MultibootError::Aout(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(fields([0x10_0000, 0x10_0010, 0, 0, 0x10_0010]).contains("load_addr 0x100010 is above header_addr 0x100000"));
        assert!(fields([0x10_0100, 0x10_0000, 0, 0, 0x10_0000]).contains("header is at file offset 0x40"));
        assert!(fields([0x10_0040, 0x10_0000, 0x0f_0000, 0, 0x10_0000]).contains("load_end_addr 0xf0000 is below"));
        assert!(fields([0x10_0040, 0x10_0000, 0x10_0400, 0, 0x10_0000]).contains("the file has 0x200 bytes"));
        assert!(fields([0x10_0040, 0x10_0000, 0x10_0100, 0x10_0080, 0x10_0000]).contains("bss_end_addr 0x100080 is below"));
        assert!(fields([0x10_0040, 0x10_0000, 0x10_0100, 0, 0x10_0100]).contains("entry_addr 0x100100 is outside"));
        let e = MultibootError::Aout("x".into());
        assert_eq!(e.to_string(), "a.out kludge addresses are inconsistent: x");
        // A header too close to the end of the search area for its address fields.
        let mut g = vec![0u8; 8192 - 16];
        g.extend_from_slice(&header(HeaderFlags::AOUT_KLUDGE.bits(), [0; 5]));
        assert_eq!(load(&g, "", &[], RAM, RESERVED).unwrap_err(), MultibootError::HeaderTruncated { offset: 8176, need: 32 });
    }

    #[test]
    fn elf32_kernels_load_by_physical_address_and_enter_at_the_physical_entry() {
        let code = [0xf4; 20];
        // Linked at 3 GiB + 1 MiB, loaded at 1 MiB, entry 8 bytes into the code.
        let f = elf32(0x10_0000, 0xc010_0000, 0xc010_0000 + 12 + 8, &code, 0x2000, HeaderFlags::MEMORY_INFO.bits());
        let image = load(&f, "", &[], RAM, RESERVED).unwrap();
        let (at, bytes) = &image.writes[0];
        assert_eq!((*at, bytes.len()), (0x10_0000, 0x2000));
        assert_eq!(&bytes[12..32], &code);
        assert!(bytes[32..].iter().all(|&b| b == 0));
        let (eip, eax, ebx) = entry_of(&image);
        assert_eq!((eip, eax, ebx), (0x10_0000 + 20, BOOTLOADER_MAGIC, 0x10_2000));

        let f = elf32(0x10_0000, 0x10_0000, 0x20_0000, &code, 0x100, HeaderFlags::MEMORY_INFO.bits());
        assert!(matches!(load(&f, "", &[], RAM, RESERVED), Err(MultibootError::Elf(why)) if why.contains("no loadable segment")));
        let f = elf32(0x10_0000, 0x8010_0000, 0x10_0000 - 1, &code, 0x100, HeaderFlags::MEMORY_INFO.bits());
        assert!(matches!(load(&f, "", &[], RAM, RESERVED), Err(MultibootError::Elf(why)) if why.contains("no loadable segment")));
        let f = elf32(0x10_0000, 0x10_0000, 0x10_0000, &code, 4, HeaderFlags::MEMORY_INFO.bits());
        assert!(matches!(load(&f, "", &[], RAM, RESERVED), Err(MultibootError::Elf(why)) if why.contains("larger than its memory size")));
        let mut f = elf32(0x10_0000, 0x10_0000, 0x10_0000, &code, 0x100, HeaderFlags::MEMORY_INFO.bits());
        f[18] = 40; // EM_ARM
        assert!(matches!(load(&f, "", &[], RAM, RESERVED), Err(MultibootError::Elf(why)) if why.contains("machine 40")));
        let mut g = vec![0u8; 64];
        g.extend_from_slice(&header(HeaderFlags::MEMORY_INFO.bits(), [0; 5]));
        assert_eq!(load(&g, "", &[], RAM, RESERVED).unwrap_err(), MultibootError::NotElf);
    }

    #[test]
    fn an_entry_in_no_virtual_range_is_taken_as_physical_as_grub_legacy_does() {
        // As xv6: linked at 0x80100000, loaded at 1 MiB, e_entry = 0x10000c (physical).
        let code = [0xf4; 20];
        let f = elf32(0x10_0000, 0x8010_0000, 0x10_0000 + 12, &code, 0x1000, HeaderFlags::MEMORY_INFO.bits());
        let image = load(&f, "", &[], RAM, RESERVED).unwrap();
        let (at, bytes) = &image.writes[0];
        assert_eq!((*at, &bytes[12..32]), (0x10_0000, &code[..]));
        assert_eq!(entry_of(&image).0, 0x10_000c);
        // An entry in a virtual range wins (GRUB 2): 0x8010000c -> 0x10000c too.
        let f = elf32(0x10_0000, 0x8010_0000, 0x8010_0000 + 12, &code, 0x1000, HeaderFlags::MEMORY_INFO.bits());
        assert_eq!(entry_of(&load(&f, "", &[], RAM, RESERVED).unwrap()).0, 0x10_000c);
    }

    #[test]
    fn elf64_kernels_load_below_4_gib_only() {
        let f = elf64(0x40_0000, 0xffff_ffff_8040_0000, 0xffff_ffff_8040_0000 + 12, &[0xf4], 0x1000);
        let image = load(&f, "", &[], RAM, RESERVED).unwrap();
        assert_eq!(image.writes[0].0, 0x40_0000);
        assert_eq!(entry_of(&image).0, 0x40_000c);
        let f = elf64(0x1_0000_0000, 0x1_0000_0000, 0x1_0000_0000, &[0xf4], 0x1000);
        assert_eq!(load(&f, "", &[], RAM, RESERVED).unwrap_err(), MultibootError::EntryAbove4G(0x1_0000_0000));
    }

    #[test]
    fn the_information_structure_and_memory_map() {
        let f = aout(0x10_0000, &[0xf4], 0x100);
        let image = load(&f, "mem=32M answer=42", &[], RAM, RESERVED).unwrap();
        let ram = ram_of(&image);
        let info = entry_of(&image).2;
        assert_eq!(info, 0x10_1000);
        assert_eq!(u32_at(&ram, info + I_FLAGS as u32), 1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9);
        assert_eq!(u32_at(&ram, info + I_MEM_LOWER as u32), 639);
        assert_eq!(u32_at(&ram, info + I_MEM_UPPER as u32), (32 * 1024 - 1024 - 64));
        assert_eq!(u32_at(&ram, info + 12), 0, "no boot_device");
        assert_eq!(cstr_at(&ram, u32_at(&ram, info + I_CMDLINE as u32)), "mem=32M answer=42");
        assert_eq!(cstr_at(&ram, u32_at(&ram, info + I_BOOT_LOADER_NAME as u32)), "yakvm");
        assert_eq!(u32_at(&ram, info + I_MODS_COUNT as u32), 0);

        let mmap = u32_at(&ram, info + I_MMAP_ADDR as u32);
        assert_eq!(mmap, info + 88);
        assert_eq!(u32_at(&ram, info + I_MMAP_LENGTH as u32), 6 * 24);
        let expected: [(u64, u64, u32); 6] = [
            (0, 0x9_fc00, 1),
            (0x9_fc00, 0x400, 2),
            (0xf_0000, 0x1_0000, 2),
            (0x10_0000, RAM - RESERVED - MIB, 1),
            (RAM - RESERVED, RESERVED, 2),
            (0xe000_0000, MIB, 2),
        ];
        for (i, (base, length, kind)) in expected.into_iter().enumerate() {
            let e = mmap + 24 * i as u32;
            assert_eq!(u32_at(&ram, e), 20, "entry {i}: size");
            assert_eq!((u64_at(&ram, e + 4), u64_at(&ram, e + 12), u32_at(&ram, e + 20)), (base, length, kind), "entry {i}");
        }
        // The bytes of the first entry, as the specification lays them out.
        let first: Vec<u8> = [20u32, 0, 0, 0x9_fc00, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&ram[mmap as usize..mmap as usize + 24], &first[..]);

        // Without a reserved top: no empty last entry.
        let image = load(&f, "", &[], RAM, 0).unwrap();
        let ram = ram_of(&image);
        assert_eq!(u32_at(&ram, entry_of(&image).2 + I_MMAP_LENGTH as u32), 5 * 24);
    }

    #[test]
    fn modules_are_page_aligned_above_the_kernel_with_their_strings() {
        let f = aout(0x10_0000, &[0xf4; 100], 0x1800);
        let one = b"MODULE-ONE and some more".to_vec();
        let two = vec![0x5a; 5000];
        let modules = [Module { bytes: &one, string: "first arg1" }, Module { bytes: &two, string: "second" }];
        let image = load(&f, "x", &modules, RAM, RESERVED).unwrap();
        let ram = ram_of(&image);
        let info = entry_of(&image).2;
        let kernel_end = 0x10_0000 + f.len() as u32 + 0x1800;
        assert!(info >= kernel_end && info.is_multiple_of(4096));
        assert_eq!(u32_at(&ram, info + I_MODS_COUNT as u32), 2);
        let list = u32_at(&ram, info + I_MODS_ADDR as u32);
        let mut last_end = info;
        for (i, (bytes, string)) in [(&one, "first arg1"), (&two, "second")].into_iter().enumerate() {
            let entry = list + 16 * i as u32;
            let (start, end) = (u32_at(&ram, entry), u32_at(&ram, entry + 4));
            assert_eq!(start % 4096, 0, "module {i} page-aligned");
            assert!(start >= last_end, "module {i} above what comes before it");
            assert_eq!(end - start, bytes.len() as u32);
            assert_eq!(&ram[start as usize..end as usize], &bytes[..]);
            assert_eq!(cstr_at(&ram, u32_at(&ram, entry + 8)), string);
            assert_eq!(u32_at(&ram, entry + 12), 0);
            last_end = end;
        }
        assert!(u64::from(last_end) <= RAM - RESERVED);
        let e = load(&f, "", &[Module { bytes: &one, string: "a\0b" }], RAM, RESERVED).unwrap_err();
        assert_eq!(e, MultibootError::NulByte("string of module 0".into()));
    }

    #[test]
    fn a_kernel_outside_ram_is_refused() {
        let f = aout(0x1ff_0000, &[0xf4], 0);
        let err = load(&f, "", &[], RAM, RESERVED).unwrap_err();
        assert!(matches!(err, MultibootError::OutsideRam { start: 0x1ff_0000, limit: 0x1ff_0000, .. }));
        assert_eq!(
            err.to_string(),
            "the kernel's segment at 0x1ff0000-0x1ff0021 is outside RAM (--mem 32M: a kernel may use 0x0-0x1ff0000, below the emulator's top 64K and below 4 GiB)"
        );
        let f = aout(0x1fe_fff0, &[0xf4], 0x100);
        assert!(matches!(load(&f, "", &[], RAM, RESERVED), Err(MultibootError::OutsideRam { .. })));
        let f = elf32(0x4000_0000, 0x4000_0000, 0x4000_0000, &[0xf4], 0x10, HeaderFlags::MEMORY_INFO.bits());
        assert!(matches!(load(&f, "", &[], RAM, RESERVED), Err(MultibootError::OutsideRam { .. })));
        assert!(matches!(load(&f, "", &[], 512 * KIB, RESERVED), Err(MultibootError::RamTooSmall { .. })));
        assert!(matches!(load(&f, "", &[], 16 * KIB, RESERVED), Err(MultibootError::RamTooSmall { .. })));
    }

    #[test]
    fn information_that_does_not_fit_is_refused() {
        // The kernel ends 100 bytes below the reserved top: no page is left for the block.
        let f = aout(0x1fe_f000, &[0xf4; 100], 0xf00);
        let err = load(&f, "", &[], RAM, RESERVED).unwrap_err();
        assert!(matches!(err, MultibootError::DoesNotFit { start: 0x1ff_0000, .. }), "{err}");
        // A module too large for what is left.
        let f = aout(0x10_0000, &[0xf4], 0);
        let big = vec![0u8; (RAM - RESERVED - 0x10_1000 - 0x1000 + 1) as usize];
        let err = load(&f, "", &[Module { bytes: &big, string: "big" }], RAM, RESERVED).unwrap_err();
        assert!(err.to_string().contains("but the kernel's RAM ends at 0x1ff0000 (--mem 32M)"), "{err}");
        // One byte less fits exactly.
        let fits = &big[..big.len() - 1];
        let image = load(&f, "", &[Module { bytes: fits, string: "big" }], RAM, RESERVED).unwrap();
        let (at, bytes) = image.writes.last().unwrap();
        assert_eq!(at + bytes.len() as u64, RAM - RESERVED);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let module = [Module { bytes: b"abc", string: "m" }];
        let bases = [
            aout(0x10_0000, &[0xf4; 64], 0x100),
            elf32(0x10_0000, 0xc010_0000, 0xc010_0000, &[0xf4; 64], 0x100, 3),
            elf64(0x10_0000, 0x10_0000, 0x10_0000, &[0xf4; 64], 0x100),
        ];
        for round in 0..3000 {
            let mut file = bases[round % bases.len()].clone();
            for _ in 0..1 + next() % 6 {
                let r = next();
                let i = (r >> 8) as usize % file.len();
                file[i] = (r >> 40) as u8;
            }
            let _ = detect(&file);
            let _ = load(&file, "x", &module, RAM, RESERVED);
            // Wholly random files, with a header planted sometimes.
            let len = next() as usize % 300;
            let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 12 && next() % 2 == 0 {
                let at = (next() as usize % (len - 11)) & !3;
                let flags = next() as u32 & (HeaderFlags::AOUT_KLUDGE.bits() | 3);
                junk[at..at + 12].copy_from_slice(&header(flags, [0; 5])[..12]);
            }
            let _ = detect(&junk);
            let _ = load(&junk, "", &module, next() % (64 * MIB), next() % (2 * MIB));
        }
    }
}
