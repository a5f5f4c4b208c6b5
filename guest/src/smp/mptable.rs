//! The MP table (Intel MultiProcessor Specification 1.4, chapter 4): which CPUs and I/O
//! APIC the machine has.

use super::MAX_CPUS;

/// What the guests need of the MP table.
#[derive(Clone, Copy, Debug)]
pub struct MpInfo {
    /// The enabled processors' APIC ids, in the table's order.
    pub ids: [u8; MAX_CPUS],
    pub cpus: usize,
    /// The boot processor's APIC id.
    pub bsp: u8,
    pub lapic: u32,
    /// The first enabled I/O APIC: id and address.
    pub ioapic: Option<(u8, u32)>,
}

impl MpInfo {
    pub fn ids(&self) -> &[u8] {
        &self.ids[..self.cpus]
    }

    /// The APs' ids.
    pub fn aps(&self) -> impl Iterator<Item = u8> + '_ {
        self.ids().iter().copied().filter(move |&id| id != self.bsp)
    }

    /// The CPUs as a bitmap (bit = APIC id), as a flat logical destination.
    pub fn mask(&self) -> u8 {
        self.ids().iter().fold(0, |m, &id| m | 1 << id)
    }
}

/// `len` bytes of guest-physical memory at `addr`.
fn phys(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: the first 4 GiB are identity-mapped; the callers read the BIOS area and the
    // MP table the emulator wrote into RAM, which nothing writes while the guest runs.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

/// Finds the floating pointer ("_MP_", 16-byte aligned, in 0xf0000-0xfffff) and reads
/// its configuration table: processors, I/O APICs; checksums checked.
pub fn mp_table() -> Result<MpInfo, &'static str> {
    let fp = (0xf_0000u64..0x10_0000)
        .step_by(16)
        .find(|&a| {
            let b = phys(a, 16);
            &b[..4] == b"_MP_" && b[8] == 1 && sums_to_zero(b)
        })
        .ok_or("no MP floating pointer (\"_MP_\" with a good checksum) in 0xf0000-0xfffff")?;
    let config = u64::from(le32(phys(fp, 16), 4));
    if config == 0 {
        return Err("the floating pointer has no configuration table");
    }
    let header = phys(config, 44);
    if &header[..4] != b"PCMP" {
        return Err("no \"PCMP\" configuration table where the floating pointer says");
    }
    let length = usize::from(le16(header, 4));
    if length < 44 || !sums_to_zero(phys(config, length)) {
        return Err("bad configuration table length or checksum");
    }
    let table = phys(config, length);
    let mut info = MpInfo { ids: [0; MAX_CPUS], cpus: 0, bsp: u8::MAX, lapic: le32(header, 36), ioapic: None };
    let mut at = 44;
    for _ in 0..le16(header, 34) {
        let size = match table.get(at) {
            Some(0) => 20,
            Some(1..=4) => 8,
            Some(_) => return Err("unknown configuration table entry type"),
            None => return Err("the configuration table ends before its last entry"),
        };
        let e = table.get(at..at + size).ok_or("the configuration table ends inside an entry")?;
        match e[0] {
            0 if e[3] & 1 != 0 => {
                if usize::from(e[1]) >= MAX_CPUS || info.cpus == MAX_CPUS {
                    return Err("a processor's APIC id is 8 or more, or more than 8 processors");
                }
                info.ids[info.cpus] = e[1];
                info.cpus += 1;
                if e[3] & 2 != 0 {
                    info.bsp = e[1];
                }
            }
            2 if e[3] & 1 != 0 && info.ioapic.is_none() => info.ioapic = Some((e[1], le32(e, 4))),
            _ => {}
        }
        at += size;
    }
    if info.cpus == 0 || usize::from(info.bsp) >= MAX_CPUS {
        return Err("no enabled processor, or none is the boot processor");
    }
    Ok(info)
}
