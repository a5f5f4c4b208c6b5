//! Multiboot 2 (specification 2.0, <https://www.gnu.org/software/grub/manual/multiboot2/multiboot.html>),
//! GRUB 2's protocol and most hobby kernels' since. The kernel carries a header in the
//! first 32768 bytes of its file, 8-byte aligned: magic, architecture (0: 32-bit
//! protected mode i386), length and checksum, then tags (type, flags, size; each 8-byte
//! aligned; bit 0 of flags: optional), ending with a tag of type 0. yakvm:
//!
//! | header tag | what yakvm does |
//! |---|---|
//! | 1 information request | gives every type it lists that yakvm knows (1, 2, 3, 4, 6, 8, 14, 15: it gives all of them anyway); an unknown type refuses the kernel unless the tag is optional |
//! | 2 address, 3 entry address | loads the file by those addresses, as Multiboot 1's a.out kludge, and enters there |
//! | 4 console flags | accepted: the console is the EGA text screen (`--vga` shows it) |
//! | 5 framebuffer | text mode only: a required tag asking for a graphics mode (depth not 0) refuses the kernel; otherwise the framebuffer tag describes the 80×25 EGA text screen |
//! | 6 module alignment | modules are page-aligned anyway |
//! | 7, 8, 9 EFI | refuses the kernel unless optional: there is no EFI |
//! | 10 relocatable | ignored: the kernel is loaded where it was linked |
//!
//! Without the address tag the kernel must be an ELF file (32- or 64-bit), loaded as
//! Multiboot 1 loads one (by `p_paddr`; the entry translated to physical, see
//! `multiboot`). It is entered as GRUB 2 enters it: 32-bit protected mode, paging off,
//! CS 0x08, data 0x10, interrupts off, EAX = [`BOOTLOADER_MAGIC`], EBX = the information
//! structure (8-byte aligned, on the first page above the kernel; the modules on the
//! pages after it):
//!
//! | info tag | contents |
//! |---|---|
//! | 1 command line, 2 boot loader name (`yakvm`) | NUL-terminated strings |
//! | 3 module (one per `--module`) | `mod_start`, `mod_end` (just past the last byte), the string |
//! | 4 basic memory information | `mem_lower` 639 KiB, `mem_upper` from 1 MiB to the emulator's top, in KiB |
//! | 6 memory map | entry size 24, version 0; the pc machine's map (as Multiboot 1's) |
//! | 8 framebuffer | EGA text: address 0xb8000, pitch 160, 80×25, 16 bits a character, type 2 |
//! | 14 ACPI old RSDP, 15 ACPI new RSDP | copies of the RSDP (its first 20 bytes, and all 36) when the machine has ACPI tables |

use super::multiboot::{aout_layout, elf_kernel, Module, MultibootError, ADDRESS_LIMIT, BOOT_LOADER_NAME, MEM_LOWER_KIB, PAGE};
use super::{memory_map, BootImage, KernelEntry};
use crate::layout::{KIB, MIB};

/// The header's magic value.
pub const MAGIC: u32 = 0xE852_50D6;
/// EAX at the kernel's entry.
pub const BOOTLOADER_MAGIC: u32 = 0x36D7_6289;
const HEADER_SEARCH: usize = 32768;
const ALIGN: usize = 8;
const ARCH_I386: u32 = 0;
const HEADER_FIXED: usize = 16;

// Header tags.
const H_END: u16 = 0;
const H_INFO_REQUEST: u16 = 1;
const H_ADDRESS: u16 = 2;
const H_ENTRY: u16 = 3;
const H_CONSOLE: u16 = 4;
const H_FRAMEBUFFER: u16 = 5;
const H_MODULE_ALIGN: u16 = 6;
const H_EFI: [u16; 3] = [7, 8, 9];
const H_RELOCATABLE: u16 = 10;
const H_OPTIONAL: u16 = 1;

// Information tags.
const I_END: u32 = 0;
const I_CMDLINE: u32 = 1;
const I_BOOT_LOADER_NAME: u32 = 2;
const I_MODULE: u32 = 3;
const I_BASIC_MEMINFO: u32 = 4;
const I_MMAP: u32 = 6;
const I_FRAMEBUFFER: u32 = 8;
const I_ACPI_OLD: u32 = 14;
const I_ACPI_NEW: u32 = 15;
/// What yakvm gives, which an information request may ask for.
const KNOWN_INFO: [u32; 8] = [I_CMDLINE, I_BOOT_LOADER_NAME, I_MODULE, I_BASIC_MEMINFO, I_MMAP, I_FRAMEBUFFER, I_ACPI_OLD, I_ACPI_NEW];
const MMAP_ENTRY_SIZE: u32 = 24;
/// EGA text: the screen yakvm's pc machine has.
const TEXT_ADDRESS: u64 = 0xb_8000;
const TEXT_COLUMNS: u32 = 80;
const TEXT_ROWS: u32 = 25;
const TEXT_BPP: u8 = 16;
const FRAMEBUFFER_EGA_TEXT: u8 = 2;
const RSDP_V1_LEN: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Multiboot2Error {
    #[error("no Multiboot 2 header in the first 32768 bytes")]
    NoHeader,
    #[error("the Multiboot 2 header at file offset {offset:#x} is wrong: {why}")]
    BadHeader { offset: usize, why: String },
    #[error("the kernel's Multiboot 2 header requires {0}, which yakvm does not provide")]
    Unsupported(String),
    #[error(transparent)]
    Load(#[from] MultibootError),
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn search_area(kernel: &[u8]) -> &[u8] {
    &kernel[..kernel.len().min(HEADER_SEARCH)]
}

/// Whether `kernel` carries a Multiboot 2 magic where a header may be.
pub fn detect(kernel: &[u8]) -> bool {
    let area = search_area(kernel);
    (0..area.len()).step_by(ALIGN).any(|at| read_u32(area, at) == Some(MAGIC))
}

/// What the header asks for.
#[derive(Debug, Default)]
struct Header {
    offset: usize,
    /// header_addr, load_addr, load_end_addr, bss_end_addr
    address: Option<[u64; 4]>,
    entry: Option<u64>,
}

fn find_header(kernel: &[u8]) -> Result<Header, Multiboot2Error> {
    let area = search_area(kernel);
    let mut first_problem = None;
    for offset in (0..area.len()).step_by(ALIGN).filter(|&at| read_u32(area, at) == Some(MAGIC)) {
        match parse_header(area, offset) {
            Ok(header) => return Ok(header),
            Err(e) => {
                first_problem.get_or_insert(e);
            }
        }
    }
    Err(first_problem.unwrap_or(Multiboot2Error::NoHeader))
}

fn parse_header(area: &[u8], offset: usize) -> Result<Header, Multiboot2Error> {
    let bad = |why: String| Multiboot2Error::BadHeader { offset, why };
    let field = |at: usize| read_u32(area, offset + at).ok_or_else(|| bad("cut short".into()));
    let (arch, length, checksum) = (field(4)?, field(8)?, field(12)?);
    if MAGIC.wrapping_add(arch).wrapping_add(length).wrapping_add(checksum) != 0 {
        return Err(bad("its checksum does not make magic + architecture + length + checksum 0".into()));
    }
    if arch != ARCH_I386 {
        return Err(Multiboot2Error::Unsupported(format!("architecture {arch} (yakvm enters i386 kernels, architecture 0)")));
    }
    let end = offset.checked_add(length as usize).filter(|&e| e <= area.len() && length as usize >= HEADER_FIXED + 8);
    let Some(end) = end else {
        return Err(bad(format!("its length {length} does not fit in the file's first 32768 bytes")));
    };
    let mut header = Header { offset, ..Header::default() };
    let mut at = offset + HEADER_FIXED;
    loop {
        let (Some(kind), Some(flags), Some(size)) = (read_u16(area, at), read_u16(area, at + 2), read_u32(area, at + 4)) else {
            return Err(bad("a tag runs past its end".into()));
        };
        let size = size as usize;
        if size < 8 || at + size > end {
            return Err(bad(format!("tag {kind} at file offset {at:#x} has size {size}")));
        }
        let optional = flags & H_OPTIONAL != 0;
        let word = |i: usize| read_u32(area, at + 8 + 4 * i).map(u64::from).ok_or_else(|| bad(format!("tag {kind} is cut short")));
        match kind {
            H_END => return Ok(header),
            H_INFO_REQUEST => {
                for i in 0..(size - 8) / 4 {
                    let wanted = word(i)? as u32;
                    if !KNOWN_INFO.contains(&wanted) && !optional {
                        return Err(Multiboot2Error::Unsupported(format!("information of type {wanted}")));
                    }
                }
            }
            H_ADDRESS => header.address = Some([word(0)?, word(1)?, word(2)?, word(3)?]),
            H_ENTRY => header.entry = Some(word(0)?),
            H_FRAMEBUFFER => {
                let depth = word(2)?;
                if depth != 0 && !optional {
                    return Err(Multiboot2Error::Unsupported(format!(
                        "a {}x{}x{depth} graphics framebuffer (yakvm has the 80x25 EGA text screen only)",
                        word(0)?,
                        word(1)?
                    )));
                }
            }
            k if H_EFI.contains(&k) && !optional => return Err(Multiboot2Error::Unsupported(format!("EFI (tag {k})"))),
            H_CONSOLE | H_MODULE_ALIGN | H_RELOCATABLE => {}
            k if !optional && !H_EFI.contains(&k) => return Err(Multiboot2Error::Unsupported(format!("header tag {k}"))),
            _ => {}
        }
        at += size.next_multiple_of(ALIGN);
    }
}

/// The information structure being built.
struct Info {
    bytes: Vec<u8>,
}

impl Info {
    fn tag(&mut self, kind: u32, body: &[u8]) {
        self.bytes.extend(kind.to_le_bytes());
        self.bytes.extend((8 + body.len() as u32).to_le_bytes());
        self.bytes.extend(body);
        self.bytes.resize(self.bytes.len().next_multiple_of(ALIGN), 0);
    }
}

fn cstring(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Loads a Multiboot 2 kernel for a guest with `ram` bytes of RAM whose top
/// `reserved_top` bytes are the emulator's; `rsdp` is the machine's ACPI RSDP (its 36
/// bytes), if it has one. See the module's documentation.
pub fn load(kernel: &[u8], cmdline: &str, modules: &[Module], ram: u64, reserved_top: u64, rsdp: Option<&[u8]>) -> Result<BootImage, Multiboot2Error> {
    let usable_top = ram.checked_sub(reserved_top).filter(|&top| top > MIB).ok_or(MultibootError::RamTooSmall { mem: ram, reserved: reserved_top })?;
    let limit = usable_top.min(ADDRESS_LIMIT - 1);
    let header = find_header(kernel)?;
    let mut image = match header.address {
        Some(addresses) => {
            let entry = header.entry.ok_or_else(|| Multiboot2Error::BadHeader { offset: header.offset, why: "an address tag without an entry address tag".into() })?;
            aout_layout(kernel, header.offset, addresses, entry)?
        }
        None => elf_kernel(kernel)?,
    };
    if let (None, Some(entry)) = (header.address, header.entry) {
        image.entry = entry;
    }
    if cmdline.contains('\0') {
        return Err(MultibootError::NulByte("command line".into()).into());
    }
    if let Some(i) = modules.iter().position(|m| m.string.contains('\0')) {
        return Err(MultibootError::NulByte(format!("string of module {i}")).into());
    }
    let mut writes = Vec::new();
    let mut kernel_end = 0;
    for seg in &image.segments {
        let end = seg.at.saturating_add(seg.size);
        if end > limit {
            return Err(MultibootError::OutsideRam { start: seg.at, end, limit, mem: ram, reserved: reserved_top }.into());
        }
        let mut bytes = seg.bytes.to_vec();
        bytes.resize(seg.size as usize, 0);
        writes.push((seg.at, bytes));
        kernel_end = kernel_end.max(end);
    }
    if image.entry >= ADDRESS_LIMIT {
        return Err(MultibootError::EntryAbove4G(image.entry).into());
    }

    // The structure's size does not depend on where the modules go: lay it out once with
    // their places unknown, then place them after it.
    let info_at = kernel_end.next_multiple_of(PAGE);
    let build = |module_at: &[u64]| {
        let mut info = Info { bytes: vec![0; 8] };
        info.tag(I_CMDLINE, &cstring(cmdline));
        info.tag(I_BOOT_LOADER_NAME, &cstring(BOOT_LOADER_NAME));
        for (m, &start) in modules.iter().zip(module_at) {
            let mut body = (start as u32).to_le_bytes().to_vec();
            body.extend(((start + m.bytes.len() as u64) as u32).to_le_bytes());
            body.extend(cstring(m.string));
            info.tag(I_MODULE, &body);
        }
        let mut meminfo = MEM_LOWER_KIB.to_le_bytes().to_vec();
        meminfo.extend((((usable_top - MIB) / KIB).min(u32::MAX.into()) as u32).to_le_bytes());
        info.tag(I_BASIC_MEMINFO, &meminfo);
        let mut mmap = MMAP_ENTRY_SIZE.to_le_bytes().to_vec();
        mmap.extend(0u32.to_le_bytes());
        for range in memory_map(ram, usable_top) {
            mmap.extend(range.base.to_le_bytes());
            mmap.extend(range.length.to_le_bytes());
            mmap.extend(range.kind.to_le_bytes());
            mmap.extend(0u32.to_le_bytes());
        }
        info.tag(I_MMAP, &mmap);
        let mut fb = TEXT_ADDRESS.to_le_bytes().to_vec();
        for v in [TEXT_COLUMNS * 2, TEXT_COLUMNS, TEXT_ROWS] {
            fb.extend(v.to_le_bytes());
        }
        fb.extend([TEXT_BPP, FRAMEBUFFER_EGA_TEXT, 0, 0]);
        info.tag(I_FRAMEBUFFER, &fb);
        if let Some(rsdp) = rsdp {
            info.tag(I_ACPI_OLD, &rsdp[..RSDP_V1_LEN.min(rsdp.len())]);
            info.tag(I_ACPI_NEW, rsdp);
        }
        info.tag(I_END, &[]);
        let total = info.bytes.len() as u32;
        info.bytes[..4].copy_from_slice(&total.to_le_bytes());
        info.bytes
    };
    let size = build(&vec![0; modules.len()]).len() as u64;
    let mut top = info_at.saturating_add(size);
    let mut module_at = Vec::with_capacity(modules.len());
    for m in modules {
        let start = top.checked_next_multiple_of(PAGE).unwrap_or(u64::MAX);
        module_at.push(start);
        top = start.saturating_add(m.bytes.len() as u64);
    }
    if top > limit {
        return Err(MultibootError::DoesNotFit { start: info_at, need: top - info_at, limit, mem: ram }.into());
    }
    writes.push((info_at, build(&module_at)));
    for (m, &start) in modules.iter().zip(&module_at) {
        if !m.bytes.is_empty() {
            writes.push((start, m.bytes.to_vec()));
        }
    }
    let entry = KernelEntry::Protected32 { eip: image.entry as u32, eax: BOOTLOADER_MAGIC, ebx: info_at as u32 };
    Ok(BootImage { writes, entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 32 * MIB;
    const RESERVED: u64 = 64 * KIB;

    fn tag(kind: u16, flags: u16, body: &[u32]) -> Vec<u8> {
        let mut t = kind.to_le_bytes().to_vec();
        t.extend(flags.to_le_bytes());
        t.extend((8 + 4 * body.len() as u32).to_le_bytes());
        body.iter().for_each(|w| t.extend(w.to_le_bytes()));
        t.resize(t.len().next_multiple_of(8), 0);
        t
    }

    /// A kernel loaded at 1 MiB by address and entry tags: the header, then `code`.
    fn kernel(extra_tags: &[Vec<u8>], code: &[u8]) -> Vec<u8> {
        let mut tags: Vec<u8> = extra_tags.concat();
        let load = 0x10_0000u32;
        let fixed_and_tags = |tags_len: usize| HEADER_FIXED + tags_len + 24 + 16 + 8;
        let header_len = fixed_and_tags(tags.len()) as u32;
        let end = load + header_len + code.len() as u32;
        tags.extend(tag(H_ADDRESS, 0, &[load, load, end, end + 0x100]));
        tags.extend(tag(H_ENTRY, 0, &[load + header_len]));
        tags.extend(tag(H_END, 0, &[]));
        let mut k = Vec::new();
        for v in [MAGIC, ARCH_I386, header_len, 0u32.wrapping_sub(MAGIC.wrapping_add(header_len))] {
            k.extend(v.to_le_bytes());
        }
        k.extend(tags);
        assert_eq!(k.len() as u32, header_len);
        k.extend(code);
        k
    }

    /// The information tags: (type, body).
    fn info_tags(image: &BootImage) -> Vec<(u32, Vec<u8>)> {
        let KernelEntry::Protected32 { ebx, eax, .. } = image.entry else { panic!() };
        assert_eq!(eax, BOOTLOADER_MAGIC);
        let (at, bytes) = image.writes.iter().find(|(at, _)| *at == u64::from(ebx)).unwrap();
        assert_eq!(at % 8, 0);
        assert_eq!(read_u32(bytes, 0).unwrap() as usize, bytes.len());
        let mut tags = Vec::new();
        let mut p = 8;
        loop {
            let (kind, size) = (read_u32(bytes, p).unwrap(), read_u32(bytes, p + 4).unwrap() as usize);
            tags.push((kind, bytes[p + 8..p + size].to_vec()));
            if kind == I_END {
                return tags;
            }
            p += size.next_multiple_of(8);
        }
    }

    #[test]
    fn the_information_structure_has_every_tag() {
        let k = kernel(&[tag(H_INFO_REQUEST, 0, &[1, 4, 6, 8, 15])], &[0xf4]);
        assert!(detect(&k));
        let rsdp: Vec<u8> = (0..36).collect();
        let modules = [Module { bytes: b"MODULE", string: "m one" }];
        let image = load(&k, "answer=42", &modules, RAM, RESERVED, Some(&rsdp)).unwrap();
        let KernelEntry::Protected32 { eip, .. } = image.entry else { panic!() };
        assert_eq!(u64::from(eip), 0x10_0000 + k.len() as u64 - 1);
        let tags = info_tags(&image);
        let kinds: Vec<u32> = tags.iter().map(|t| t.0).collect();
        assert_eq!(kinds, [1, 2, 3, 4, 6, 8, 14, 15, 0]);
        assert_eq!(tags[0].1, b"answer=42\0");
        assert_eq!(tags[1].1, b"yakvm\0");
        let (start, end) = (read_u32(&tags[2].1, 0).unwrap(), read_u32(&tags[2].1, 4).unwrap());
        assert_eq!((start % 4096, end - start), (0, 6));
        assert_eq!(&tags[2].1[8..], b"m one\0");
        assert!(image.writes.iter().any(|(at, b)| *at == u64::from(start) && b == b"MODULE"));
        assert_eq!(read_u32(&tags[3].1, 0), Some(639));
        assert_eq!(read_u32(&tags[3].1, 4), Some(((RAM - RESERVED - MIB) / KIB) as u32));
        assert_eq!((read_u32(&tags[4].1, 0), read_u32(&tags[4].1, 4)), (Some(24), Some(0)));
        assert_eq!((tags[4].1.len() - 8) / 24, memory_map(RAM, RAM - RESERVED).len());
        assert_eq!(read_u32(&tags[5].1, 0), Some(0xb8000));
        assert_eq!((read_u32(&tags[5].1, 8), read_u32(&tags[5].1, 12), read_u32(&tags[5].1, 16)), (Some(160), Some(80), Some(25)));
        assert_eq!((tags[5].1[20], tags[5].1[21]), (16, 2));
        assert_eq!((tags[6].1.as_slice(), tags[7].1.as_slice()), (&rsdp[..20], &rsdp[..]));
        // Without ACPI: no RSDP tags.
        let image = load(&k, "", &[], RAM, RESERVED, None).unwrap();
        assert!(info_tags(&image).iter().all(|t| t.0 != 14 && t.0 != 15));
    }

    #[test]
    fn requirements_yakvm_cannot_meet_refuse_the_kernel() {
        let graphics = kernel(&[tag(H_FRAMEBUFFER, 0, &[1024, 768, 32])], &[0xf4]);
        assert!(matches!(load(&graphics, "", &[], RAM, RESERVED, None), Err(Multiboot2Error::Unsupported(_))));
        let optional = kernel(&[tag(H_FRAMEBUFFER, 1, &[1024, 768, 32])], &[0xf4]);
        assert!(load(&optional, "", &[], RAM, RESERVED, None).is_ok());
        let text = kernel(&[tag(H_FRAMEBUFFER, 0, &[80, 25, 0])], &[0xf4]);
        assert!(load(&text, "", &[], RAM, RESERVED, None).is_ok());
        let efi = kernel(&[tag(7, 0, &[])], &[0xf4]);
        assert!(load(&efi, "", &[], RAM, RESERVED, None).unwrap_err().to_string().contains("EFI"));
        let unknown_info = kernel(&[tag(H_INFO_REQUEST, 0, &[21])], &[0xf4]);
        assert!(matches!(load(&unknown_info, "", &[], RAM, RESERVED, None), Err(Multiboot2Error::Unsupported(_))));
        let mut bad_sum = kernel(&[], &[0xf4]);
        bad_sum[12] ^= 1;
        assert!(matches!(load(&bad_sum, "", &[], RAM, RESERVED, None), Err(Multiboot2Error::BadHeader { .. })));
        assert_eq!(load(&[0u8; 64], "", &[], RAM, RESERVED, None), Err(Multiboot2Error::NoHeader));
    }

    #[test]
    fn random_bytes_never_panic() {
        let base = kernel(&[tag(H_INFO_REQUEST, 0, &[1, 6])], &[0xf4; 32]);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            let mut k = base.clone();
            for _ in 0..1 + seed % 4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed >> 8) as usize % k.len();
                k[i] = (seed >> 40) as u8;
            }
            let _ = load(&k, "x", &[], RAM, RESERVED, Some(&[0; 36]));
        }
    }
}
