//! The DMA disk test suite, run over port I/O (`disk`) or MMIO (`disk_mmio`). It needs an
//! 8 KiB disk (16 sectors, `make disk`) and `--mem 2M`. It ends by writing every sector
//! with `pattern(sector, i) ^ marker`, which the host checks in the disk file.

use crate::{print, Checks};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

/// How the suite reaches the disk's registers.
pub trait Registers {
    fn out32(&self, port: u16, value: u32);
    fn out16(&self, port: u16, value: u16);
    fn out8(&self, port: u16, value: u8);
    fn in8(&self, port: u16) -> u8;
}

const SECTOR: u16 = 0x20;
const DMA: u16 = 0x21;
const COMMAND: u16 = 0x22;
const READ: u8 = 0;
const WRITE: u8 = 1;
const SETUP: u8 = 2;

const SECTORS: u32 = 16;
const RAM: u32 = 2 << 20;
const EFAULT: i32 = 14;
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;

#[repr(C, align(4096))]
struct Buffers {
    status: [u8; 16],
    other_status: [u8; 16],
    _pad: [u8; 4096 - 32],
    /// Three pages: aligned sectors at the start, an unaligned one across a page boundary.
    data: [u8; 3 * 4096],
    back: [u8; 512],
}

static mut B: Buffers = Buffers { status: [0; 16], other_status: [0; 16], _pad: [0; 4096 - 32], data: [0; 3 * 4096], back: [0; 512] };

fn bufs() -> &'static mut Buffers {
    // SAFETY: one vCPU, and the suite is the only user of `B`.
    unsafe { &mut *addr_of_mut!(B) }
}

/// The value of byte `i` of sector `s` in the final image.
pub fn pattern(s: u32, i: usize) -> u8 {
    (s as usize * 16 + i) as u8
}

/// Reads the status the host keeps at `at` (volatile: the host writes it behind our back).
fn status(at: *const [u8; 16]) -> (u64, i32) {
    // SAFETY: `at` points into `B`, readable.
    let s = unsafe { read_volatile(at) };
    (u64::from_le_bytes(s[..8].try_into().unwrap()), i32::from_le_bytes(s[8..12].try_into().unwrap()))
}

fn addr<T>(p: *const T) -> u32 {
    p as usize as u32
}

fn command<R: Registers>(r: &R, sector: u32, dma: u32, cmd: u8) -> i32 {
    r.out32(SECTOR, sector);
    r.out32(DMA, dma);
    r.out8(COMMAND, cmd);
    status(addr_of!(bufs().status)).1
}

fn fill(at: *mut u8, f: impl Fn(usize) -> u8) {
    for i in 0..512 {
        // SAFETY: `at` is the start of 512 bytes inside `B`.
        unsafe { write_volatile(at.add(i), f(i)) };
    }
}

fn same(a: *const u8, f: impl Fn(usize) -> u8) -> bool {
    // SAFETY: as in `fill`.
    (0..512).all(|i| unsafe { read_volatile(a.add(i)) } == f(i))
}

pub fn run<R: Registers>(r: &R, marker: u8) -> ! {
    let mut t = Checks::new();
    let b = bufs();
    let st = addr_of!(b.status);
    let data = addr_of_mut!(b.data) as *mut u8;
    let back = addr_of_mut!(b.back) as *mut u8;

    // Before setup: nowhere to report, so nothing happens.
    r.out32(SECTOR, 0);
    r.out32(DMA, addr(data));
    r.out8(COMMAND, READ);
    t.check("command before setup is ignored", status(st) == (0, 0));

    r.out32(DMA, addr(st));
    r.out8(COMMAND, SETUP);
    t.check("setup reports size 8192, error 0", status(st) == (8192, 0));
    r.out32(DMA, addr(addr_of!(b.other_status)));
    r.out8(COMMAND, SETUP);
    t.check("second setup: EBUSY, status stays", status(st).1 == EBUSY && status(addr_of!(b.other_status)) == (0, 0));

    fill(data, |i| i as u8 ^ 0x5a);
    t.check("aligned write", command(r, 0, addr(data), WRITE) == 0);
    // SAFETY: 4090 + 512 is inside `data` (3 pages).
    let odd = unsafe { data.add(4090) };
    fill(odd, |i| (i * 3) as u8);
    t.check("unaligned DMA across a page boundary", command(r, 1, addr(odd), WRITE) == 0);
    t.check("read it back", command(r, 1, addr(back), READ) == 0 && same(back, |i| (i * 3) as u8));
    let mut multi = true;
    for s in 2..6 {
        fill(data, |i| (s as usize + i) as u8);
        multi &= command(r, s, addr(data), WRITE) == 0;
    }
    for s in 2..6 {
        multi &= command(r, s, addr(back), READ) == 0 && same(back, |i| (s as usize + i) as u8);
    }
    t.check("multi-sector write and read back", multi);
    t.check("first sector survived", command(r, 0, addr(back), READ) == 0 && same(back, |i| i as u8 ^ 0x5a));
    t.check("last sector", command(r, SECTORS - 1, addr(data), WRITE) == 0);
    t.check("sector past the end: EINVAL", command(r, SECTORS, addr(data), WRITE) == EINVAL);
    t.check("huge sector: EINVAL", command(r, u32::MAX, addr(data), READ) == EINVAL);
    t.check("DMA across the end of RAM: EFAULT", command(r, 0, RAM - 256, READ) == EFAULT);
    t.check("DMA past the end of RAM: EFAULT", command(r, 0, RAM, WRITE) == EFAULT);
    t.check("unknown command: EINVAL", command(r, 0, addr(data), 7) == EINVAL);
    t.check("status still reports the size", status(st).0 == 8192);

    // A 2-byte write to the sector register is the wrong width: ignored.
    command(r, 2, addr(back), READ);
    r.out16(SECTOR, 9);
    r.out8(COMMAND, READ);
    t.check("wrong-width write is ignored", status(st).1 == 0 && same(back, |i| (2 + i) as u8));
    t.check("IN from a write-only port reads all ones", r.in8(COMMAND) == 0xff);

    let mut all = true;
    for s in 0..SECTORS {
        fill(data, |i| pattern(s, i) ^ marker);
        all &= command(r, s, addr(data), WRITE) == 0;
    }
    t.check("every sector written with the final pattern", all);
    print("disk suite done\n");
    t.finish()
}
