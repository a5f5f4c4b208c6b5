//! A hostile driver of yakvm's virtio disk (`--drive`, docs/virtio.md): it finds the
//! virtio-blk function by scanning bus 0's configuration space, sets it up through the
//! modern transport (its vendor capabilities, BAR 0), and posts malformed descriptor
//! chains. No interrupts: the guest polls the used ring and the device status.
//!
//! 1. A good request (IN, 8 sectors from sector 0) completes with status OK and the
//!    file's bytes (the test's file starts "yakvm-virtio-hostile").
//! 2. A queue size that is not a power of two is not taken (the size reads back as before).
//! 3. A notification before DRIVER_OK does nothing; at DRIVER_OK the buffer made available
//!    before is served.
//! 4. Chains that break rules 1-2 of docs/virtio.md (a descriptor loop; a read-only status
//!    descriptor; an indirect table inside an indirect table; a chain of over 4 GiB): the
//!    device sets DEVICE_NEEDS_RESET and uses nothing; the guest resets it and sets it up
//!    again.
//! 5. Chains that break rules 3-6 (a data buffer past RAM; a data buffer in the device's
//!    own BAR; a header past RAM; a 2 GiB data buffer): each completes with
//!    VIRTIO_BLK_S_IOERR, only its status byte written.
//! 6. After all that, a good request works again.
//!
//! After every case the guest checks its arena: every byte outside the chains' own
//! buffers (and the used ring, which the device writes) still holds its pattern, and the
//! data buffer of a refused request holds its own.
//!
//! Output on COM1: `ok <what>` per check, `FAIL <what>`; status 0 if all passed.
//!
//! Run: `yakvm run --machine pc --mem 64M --drive FILE build/guests/virtio_hostile.bin`
//! (FILE at least 4 KiB; the guest only reads it).
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering::SeqCst};
use yakvm_guests::smp::{start_clock, wait_until, FAILURES};
use yakvm_guests::virtio_pci::{discover, Dev, ACKNOWLEDGE, DEVICE_STATUS, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET, QUEUE_SIZE};
use yakvm_guests::{exit, fail, say};

yakvm_guests::entry!(main);

/// virtio's vendor, and a modern block device (0x1040 + 2).
const VIRTIO_BLK_ID: u32 = 0x1042_1af4;
/// Where the guest puts BAR 0 (in the host bridge's window).
const BAR_BASE: u64 = 0xd000_0000;
/// Guest RAM (`--mem 64M`): an address past it.
const PAST_RAM: u64 = 0x8000_0000;
/// VERSION_1 (bit 32), INDIRECT_DESC (bit 28).
const FEATURES: u64 = 1 << 32 | 1 << 28;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const T_IN: u32 = 0;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;

const QSIZE: u16 = 16;

/// Everything the device may see, at fixed offsets of one page-aligned arena: the rings,
/// two indirect tables, the request's header, data and status. The rest is pattern.
const ARENA: usize = 0x10000;
const DESC: usize = 0x0000;
const AVAIL: usize = 0x1000;
const USED: usize = 0x2000;
const INDIRECT_OUTER: usize = 0x3000;
const INDIRECT_INNER: usize = 0x3100;
const INDIRECT_END: usize = INDIRECT_INNER + 0x100;
const HEADER: usize = 0x4000;
const DATA: usize = 0x5000;
const DATA_LEN: usize = 0x1000;
const STATUS: usize = 0x6000;
const USED_LEN: usize = 4 + 8 * QSIZE as usize + 2;

#[repr(C, align(4096))]
struct Arena([u8; ARENA]);
static mut MEM: Arena = Arena([0; ARENA]);

fn base() -> u64 {
    addr_of!(MEM) as u64
}

fn at(offset: usize) -> u64 {
    base() + offset as u64
}

fn pattern(offset: usize) -> u8 {
    (offset as u8).wrapping_mul(31) ^ 0xa5
}

fn put<T>(offset: usize, value: T) {
    // SAFETY: inside the arena (the offsets are the constants above), aligned for T there;
    // the device reads it, so a volatile write.
    unsafe { write_volatile((addr_of_mut!(MEM) as *mut u8).add(offset) as *mut T, value) }
}

fn get<T>(offset: usize) -> T {
    // SAFETY: as `put`: the device writes there.
    unsafe { read_volatile((addr_of!(MEM) as *const u8).add(offset) as *const T) }
}

fn check(what: &str, ok: bool) {
    if ok {
        say!("ok {what}");
    } else {
        fail!("FAIL {what}");
    }
}

/// Reset, then features and queue 0 (16 entries, the arena's rings); DRIVER_OK if
/// `run`. Fresh rings: the device's and the driver's indexes start at 0.
fn setup(dev: &Dev, run: bool) -> bool {
    if !dev.reset() {
        return false;
    }
    for offset in (DESC..USED + USED_LEN).chain(INDIRECT_OUTER..INDIRECT_END) {
        put::<u8>(offset, 0);
    }
    if !dev.negotiate(FEATURES) {
        return false;
    }
    let queue = dev.queue(0, QSIZE, at(DESC), at(AVAIL), at(USED));
    if run {
        dev.driver_ok();
    }
    queue
}

/// Fills the arena with its pattern (`setup` clears the rings and indirect tables).
fn fill() {
    for offset in 0..ARENA {
        put(offset, pattern(offset));
    }
}

/// Whether the arena holds its pattern everywhere but the rings, the indirect tables, the
/// header and the status byte (the driver's), the used ring (the device's), and the data
/// buffer if `data_may_change`.
fn arena_intact(data_may_change: bool) -> bool {
    (0..ARENA).all(|offset| {
        let driver_owned =
            offset < USED || (INDIRECT_OUTER..INDIRECT_END).contains(&offset) || (HEADER..HEADER + 16).contains(&offset) || offset == STATUS;
        let used = (USED..USED + USED_LEN).contains(&offset);
        let data = data_may_change && (DATA..DATA + DATA_LEN).contains(&offset);
        driver_owned || used || data || get::<u8>(offset) == pattern(offset)
    })
}

fn desc(table: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let d = table + 16 * usize::from(i);
    put(d, addr);
    put(d + 8, len);
    put(d + 12, flags);
    put(d + 14, next);
}

/// The request header (IN from `sector`) and a status byte that says "not answered".
fn header(sector: u64) {
    put(HEADER, T_IN);
    put(HEADER + 4, 0u32);
    put(HEADER + 8, sector);
    put(STATUS, 0xffu8);
}

/// A good read chain at descriptors 0-2: header, 4 KiB of data, status.
fn good_chain() {
    header(0);
    desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
    desc(DESC, 1, at(DATA), DATA_LEN as u32, F_NEXT | F_WRITE, 2);
    desc(DESC, 2, at(STATUS), 1, F_WRITE, 0);
}

fn used_idx() -> u16 {
    get(USED + 2)
}

/// Makes chain `head` available (the next avail slot) and notifies if `notify`.
fn post(dev: &Dev, head: u16, notify: bool) {
    let idx: u16 = get(AVAIL + 2);
    put(AVAIL + 4 + 2 * usize::from(idx % QSIZE), head);
    fence(SeqCst);
    put(AVAIL + 2, idx.wrapping_add(1));
    fence(SeqCst);
    if notify {
        dev.notify(0);
    }
}

/// Waits (up to 2 s) for the used index to reach `n`.
fn wait_used(n: u16) -> bool {
    wait_until(2_000_000, || used_idx() == n)
}

/// A good request on a running device: OK, the file's bytes.
fn good_request(dev: &Dev, what: &str) {
    let before = used_idx();
    good_chain();
    post(dev, 0, true);
    let done = wait_used(before.wrapping_add(1));
    let status: u8 = get(STATUS);
    let text = b"yakvm-virtio-hostile";
    let data_ok = (0..text.len()).all(|i| get::<u8>(DATA + i) == text[i]);
    let len: u32 = get(USED + 4 + 8 * usize::from(before % QSIZE) + 4);
    check(what, done && status == S_OK && data_ok && len == DATA_LEN as u32 + 1 && arena_intact(true));
}

/// A chain that breaks rules 1-2: DEVICE_NEEDS_RESET, nothing used, the arena intact;
/// then a reset and a fresh set-up.
fn needs_reset(dev: &Dev, what: &str, build: fn()) {
    fill();
    if !setup(dev, true) {
        return check(what, false);
    }
    build();
    post(dev, 0, true);
    let flagged = wait_until(2_000_000, || dev.status() & NEEDS_RESET != 0);
    let unused = used_idx() == 0;
    let untouched = arena_intact(false) && get::<u8>(STATUS) == 0xff;
    if !(flagged && unused && untouched) {
        say!("  {what}: needs reset {flagged}, used ring untouched {unused}, memory untouched {untouched}");
    }
    check(what, flagged && unused && untouched);
}

/// A chain that breaks rules 3-6: IOERR, its status byte the only byte written.
fn ioerr(dev: &Dev, what: &str, build: fn()) {
    fill();
    if !setup(dev, true) {
        return check(what, false);
    }
    build();
    post(dev, 0, true);
    let done = wait_used(1);
    let status: u8 = get(STATUS);
    let running = dev.status() & NEEDS_RESET == 0;
    let untouched = arena_intact(false);
    if !(done && status == S_IOERR && running && untouched) {
        say!("  {what}: used {done}, status {status}, still running {running}, memory untouched {untouched}");
    }
    check(what, done && status == S_IOERR && running && untouched);
}

fn main() {
    start_clock();
    let Some(dev) = discover(VIRTIO_BLK_ID, BAR_BASE) else {
        fail!("FAIL no virtio-blk function with a common configuration and a notify capability");
        exit(1);
    };
    say!("virtio-blk at 00:{:02x}.0", dev.devfn >> 3);
    fill();
    check("set up through the modern transport (features, queue 0, DRIVER_OK)", setup(&dev, true));
    good_request(&dev, "a good read: status OK, the file's bytes, used length 4097");

    // A queue size that is not a power of two is not taken.
    setup(&dev, false);
    dev.w16(QUEUE_SIZE, 100);
    check("queue size 100 (not a power of two) refused", dev.r16(QUEUE_SIZE) == QSIZE);

    // Notify before DRIVER_OK: nothing; DRIVER_OK serves the buffer.
    fill();
    setup(&dev, false);
    good_chain();
    post(&dev, 0, true);
    let early = !wait_until(200_000, || used_idx() != 0);
    check("a notification before DRIVER_OK does nothing", early && get::<u8>(STATUS) == 0xff && arena_intact(false));
    dev.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    check("DRIVER_OK serves the buffer made available before", wait_used(1) && get::<u8>(STATUS) == S_OK);

    needs_reset(&dev, "a descriptor loop: NEEDS_RESET", || {
        header(0);
        desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
        desc(DESC, 1, at(DATA), 512, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(DATA + 512), 512, F_NEXT | F_WRITE, 1);
    });
    needs_reset(&dev, "a read-only status descriptor: NEEDS_RESET", || {
        header(0);
        desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
        desc(DESC, 1, at(DATA), 512, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(STATUS), 1, 0, 0);
    });
    needs_reset(&dev, "an indirect table inside an indirect table: NEEDS_RESET", || {
        header(0);
        desc(DESC, 0, at(INDIRECT_OUTER), 32, F_INDIRECT, 0);
        desc(INDIRECT_OUTER, 0, at(HEADER), 16, F_NEXT, 1);
        desc(INDIRECT_OUTER, 1, at(INDIRECT_INNER), 32, F_INDIRECT, 0);
        desc(INDIRECT_INNER, 0, at(DATA), 512, F_NEXT | F_WRITE, 1);
        desc(INDIRECT_INNER, 1, at(STATUS), 1, F_WRITE, 0);
    });
    needs_reset(&dev, "a chain over 4 GiB (a 4 GiB - 1 length): NEEDS_RESET", || {
        header(0);
        desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
        desc(DESC, 1, at(DATA), u32::MAX, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(STATUS), 1, F_WRITE, 0);
    });
    ioerr(&dev, "a data buffer past RAM: IOERR", || {
        header(0);
        desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
        desc(DESC, 1, PAST_RAM, 4096, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(STATUS), 1, F_WRITE, 0);
    });
    ioerr(&dev, "a data buffer in the device's own BAR: IOERR", || {
        header(0);
        desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
        desc(DESC, 1, BAR_BASE, 4096, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(STATUS), 1, F_WRITE, 0);
    });
    ioerr(&dev, "a header past RAM: IOERR", || {
        put(STATUS, 0xffu8);
        desc(DESC, 0, PAST_RAM, 16, F_NEXT, 1);
        desc(DESC, 1, at(DATA), 4096, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(STATUS), 1, F_WRITE, 0);
    });
    ioerr(&dev, "a 2 GiB data buffer: IOERR", || {
        header(0);
        desc(DESC, 0, at(HEADER), 16, F_NEXT, 1);
        desc(DESC, 1, at(DATA), 0x8000_0000, F_NEXT | F_WRITE, 2);
        desc(DESC, 2, at(STATUS), 1, F_WRITE, 0);
    });

    fill();
    check("set up again after the hostile chains", setup(&dev, true));
    good_request(&dev, "a good read after them all");
    exit(u8::from(FAILURES.load(SeqCst) != 0));
}
