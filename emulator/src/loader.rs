//! Guest images: a flat binary copied to the load address, or an ELF file loaded by its
//! program headers (PT_LOAD at their physical addresses, entered at the ELF entry point).

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// A piece of the image and where it goes in guest-physical memory.
pub struct Segment<'a> {
    pub gpa: u64,
    pub bytes: &'a [u8],
    /// Bytes it occupies (ELF `p_memsz`: the rest past `bytes` stays zero).
    pub mem_size: u64,
}

pub struct Image<'a> {
    pub segments: Vec<Segment<'a>>,
    pub entry: u64,
    /// For ELF files: 32 or 64 (the class), which picks the default entry mode.
    pub elf_bits: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the guest is empty")]
    Empty,
    #[error("bad ELF file: {0}")]
    Elf(#[from] object::read::Error),
    #[error("the ELF file has no loadable segment")]
    NoSegments,
    #[error("ELF segment at {0:#x}: its bytes lie outside the file")]
    SegmentData(u64),
    #[error("ELF segment at {gpa:#x} has a file size ({file}) larger than its memory size ({mem})")]
    SegmentSizes { gpa: u64, file: u64, mem: u64 },
}

/// Reads `bytes` as an ELF file if it starts with the ELF magic, else as a flat binary
/// for `load_addr`.
pub fn parse(bytes: &[u8], load_addr: u64) -> Result<Image<'_>, LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Empty);
    }
    match bytes.get(..5) {
        Some([0x7f, b'E', b'L', b'F', c]) if *c == elf::ELFCLASS64 => parse_elf::<elf::FileHeader64<Endianness>>(bytes, 64),
        Some([0x7f, b'E', b'L', b'F', _]) => parse_elf::<elf::FileHeader32<Endianness>>(bytes, 32),
        _ => Ok(Image {
            segments: vec![Segment { gpa: load_addr, bytes, mem_size: bytes.len() as u64 }],
            entry: load_addr,
            elf_bits: None,
        }),
    }
}

fn parse_elf<H: FileHeader<Endian = Endianness>>(bytes: &[u8], bits: u32) -> Result<Image<'_>, LoadError> {
    let header = H::parse(bytes)?;
    let endian = header.endian()?;
    let mut segments = Vec::new();
    for ph in header.program_headers(endian, bytes)? {
        if ph.p_type(endian) != elf::PT_LOAD {
            continue;
        }
        let gpa: u64 = ph.p_paddr(endian).into();
        let (file, mem): (u64, u64) = (ph.p_filesz(endian).into(), ph.p_memsz(endian).into());
        if file > mem {
            return Err(LoadError::SegmentSizes { gpa, file, mem });
        }
        let data = ph.data(endian, bytes).map_err(|()| LoadError::SegmentData(gpa))?;
        segments.push(Segment { gpa, bytes: data, mem_size: mem });
    }
    if segments.is_empty() {
        return Err(LoadError::NoSegments);
    }
    Ok(Image { segments, entry: header.e_entry(endian).into(), elf_bits: Some(bits) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_binaries_go_to_the_load_address() {
        let img = parse(&[0xf4], 0x7c00).unwrap();
        assert_eq!((img.entry, img.segments[0].gpa, img.elf_bits), (0x7c00, 0x7c00, None));
        assert!(matches!(parse(&[], 0), Err(LoadError::Empty)));
    }

    #[test]
    fn elf_files_follow_their_program_headers() {
        // A minimal ELF64: header, one PT_LOAD of 1 byte (HLT) at paddr 0x2000, memsz 16.
        let mut f = vec![0u8; 0x79];
        f[..16].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x2000u64.to_le_bytes()); // entry
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f[ph + 8..ph + 16].copy_from_slice(&0x78u64.to_le_bytes()); // offset
        f[ph + 16..ph + 24].copy_from_slice(&0x2000u64.to_le_bytes()); // vaddr
        f[ph + 24..ph + 32].copy_from_slice(&0x2000u64.to_le_bytes()); // paddr
        f[ph + 32..ph + 40].copy_from_slice(&1u64.to_le_bytes()); // filesz
        f[ph + 40..ph + 48].copy_from_slice(&16u64.to_le_bytes()); // memsz
        f[0x78] = 0xf4;
        let img = parse(&f, 0).unwrap();
        assert_eq!((img.entry, img.elf_bits, img.segments.len()), (0x2000, Some(64), 1));
        let s = &img.segments[0];
        assert_eq!((s.gpa, s.bytes, s.mem_size), (0x2000, &[0xf4][..], 16));
    }
}
