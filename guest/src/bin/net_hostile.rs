//! A hostile driver of yakvm's virtio network device (`--net`, docs/net.md): it finds
//! the function by scanning bus 0 (`virtio_pci`, shared with `virtio_hostile`), sets up
//! its two queues (receive 0, transmit 1) through the modern transport and posts
//! malformed chains. No interrupts: the guest polls the used rings and the device status.
//! The image sends frames into the tap (an `arping` once a second) for the receive cases.
//!
//! 1. A good frame (a 12-byte header, 60 bytes of broadcast Ethernet) is sent: used.
//! 2. Transmit chains the device must return unsent, counted as errors, the queue going
//!    on: a header shorter than the virtio-net header (6 bytes in all); a frame shorter
//!    than an Ethernet header; a frame past 64 KiB + 18; a writable descriptor; a header
//!    whose GSO type is no type (the tap refuses it).
//! 3. A transmit descriptor loop: DEVICE_NEEDS_RESET, nothing used.
//! 4. A device-readable receive buffer: DEVICE_NEEDS_RESET once a frame comes, nothing used.
//! 5. A receive buffer too small for any frame (20 bytes, without MRG_RXBUF): frames are
//!    dropped (the image checks the count), the buffer is never used nor written.
//! 6. After a reset, a good receive buffer gets a frame: a used length of the header and
//!    at least an Ethernet header, `num_buffers` 1, nothing written past that length; a
//!    good frame is sent again.
//!
//! 7. The flood: set up again with no receive buffer, `FLOOD-READY`, then nothing until
//!    a byte on COM1 (the image sends 100000 frames into the tap meanwhile, and then the
//!    byte): nothing used or written; then a buffer gets a frame within 2 s.
//!
//! After every case the guest checks its arena: every byte outside the driver's own
//! rings and buffers, the used rings (the device's) and a receive buffer it filled still
//! holds its pattern.
//!
//! Output on COM1: `ok <what>` per check, `FAIL <what>`; status 0 if all passed.
//!
//! Run: `yakvm run --machine pc --mem 64M --net tap=NAME build/guests/net_hostile.bin`
//! (then type a key for the end of the flood).
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, AtomicUsize, Ordering::SeqCst};
use yakvm_guests::smp::{start_clock, wait_until, FAILURES};
use yakvm_guests::virtio_pci::{discover, Dev, NEEDS_RESET};
use yakvm_guests::pc::{self, COM1, LSR, LSR_DR, RBR};
use yakvm_guests::{exit, fail, say};

yakvm_guests::entry!(main);

/// virtio's vendor, and a modern network device (0x1040 + 1).
const VIRTIO_NET_ID: u32 = 0x1041_1af4;
/// Where the guest puts BAR 0 (in the host bridge's window).
const BAR_BASE: u64 = 0xd000_0000;
/// VERSION_1 (bit 32) only: no MRG_RXBUF, so a frame goes into one receive chain.
const FEATURES: u64 = 1 << 32;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

const QSIZE: u16 = 16;
const RXQ: u16 = 0;
const TXQ: u16 = 1;
const HDR: usize = 12;

/// Everything the device may see, at fixed offsets of one page-aligned arena: two queues'
/// rings, the transmit header and frame, the receive buffers. The rest is pattern.
const ARENA: usize = 0x21000;
const RX_DESC: usize = 0x0000;
const RX_AVAIL: usize = 0x1000;
const RX_USED: usize = 0x2000;
const TX_DESC: usize = 0x3000;
const TX_AVAIL: usize = 0x4000;
const TX_USED: usize = 0x5000;
const TX_BUF: usize = 0x6000;
const TX_LEN: usize = HDR + 60;
const RX_BUF: usize = 0x8000;
const RX_LEN: usize = 2048;
const RX_SMALL: usize = 0x9000;
/// A transmit frame past 64 KiB + 18 starts here (and ends past the arena's last
/// pattern byte only if the device read it, which it must not).
const BIG: usize = 0x10000;
const BIG_LEN: u32 = 0x10100;
const RING_LEN: usize = 0x100;
const USED_LEN: usize = 4 + 8 * QSIZE as usize + 2;

#[repr(C, align(4096))]
struct Arena([u8; ARENA]);
static mut MEM: Arena = Arena([0; ARENA]);

fn at(offset: usize) -> u64 {
    addr_of!(MEM) as u64 + offset as u64
}

fn pattern(offset: usize) -> u8 {
    (offset as u8).wrapping_mul(29) ^ 0x5a
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

/// What the driver writes (rings, transmit buffer): may hold anything.
fn driver_owned(offset: usize) -> bool {
    [RX_DESC, RX_AVAIL, TX_DESC, TX_AVAIL].iter().any(|&r| (r..r + RING_LEN).contains(&offset)) || (TX_BUF..TX_BUF + TX_LEN).contains(&offset)
}

fn device_owned(offset: usize) -> bool {
    (RX_USED..RX_USED + USED_LEN).contains(&offset) || (TX_USED..TX_USED + USED_LEN).contains(&offset)
}

fn fill() {
    for offset in 0..ARENA {
        put(offset, pattern(offset));
    }
}

/// How many bytes of the good receive buffer the device said it wrote (0 after a set-up).
static RX_WRITTEN: AtomicUsize = AtomicUsize::new(0);

/// Whether every byte but the driver's and the used rings holds its pattern, except the
/// bytes of the good receive buffer the device said it wrote.
fn arena_intact() -> bool {
    let rx = RX_BUF..RX_BUF + RX_WRITTEN.load(SeqCst);
    (0..ARENA).all(|offset| driver_owned(offset) || device_owned(offset) || rx.contains(&offset) || get::<u8>(offset) == pattern(offset))
}

/// Reset, both queues (fresh rings: every index 0), DRIVER_OK.
fn setup(dev: &Dev) -> bool {
    if !dev.reset() {
        return false;
    }
    fill();
    RX_WRITTEN.store(0, SeqCst);
    for offset in 0..ARENA {
        if driver_owned(offset) || device_owned(offset) {
            put::<u8>(offset, 0);
        }
    }
    if !dev.negotiate(FEATURES) {
        return false;
    }
    let rx = dev.queue(RXQ, QSIZE, at(RX_DESC), at(RX_AVAIL), at(RX_USED));
    let tx = dev.queue(TXQ, QSIZE, at(TX_DESC), at(TX_AVAIL), at(TX_USED));
    dev.driver_ok();
    rx && tx
}

fn desc(table: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let d = table + 16 * usize::from(i);
    put(d, addr);
    put(d + 8, len);
    put(d + 12, flags);
    put(d + 14, next);
}

/// The transmit buffer: a header (`gso_type` as given, the rest 0) and a broadcast frame
/// of 60 bytes, ethertype 0x88b5 (local experimental).
fn tx_frame(gso_type: u8) {
    for i in 0..TX_LEN {
        put::<u8>(TX_BUF + i, 0);
    }
    put::<u8>(TX_BUF + 1, gso_type);
    for i in 0..6 {
        put::<u8>(TX_BUF + HDR + i, 0xff);
    }
    for (i, b) in [0x52u8, 0x54, 0, 0x12, 0x34, 0x99].iter().enumerate() {
        put::<u8>(TX_BUF + HDR + 6 + i, *b);
    }
    put::<u8>(TX_BUF + HDR + 12, 0x88);
    put::<u8>(TX_BUF + HDR + 13, 0xb5);
}

fn used_idx(used: usize) -> u16 {
    get(used + 2)
}

/// Makes chain `head` of queue `q` available (its next avail slot) and notifies.
fn post(dev: &Dev, q: u16, head: u16) {
    let avail = if q == RXQ { RX_AVAIL } else { TX_AVAIL };
    let idx: u16 = get(avail + 2);
    put(avail + 4 + 2 * usize::from(idx % QSIZE), head);
    fence(SeqCst);
    put(avail + 2, idx.wrapping_add(1));
    fence(SeqCst);
    dev.notify(q);
}

/// A transmit chain the device takes: used (length 0) within 2 s, the device still
/// running, the arena intact. `build` writes descriptors from 0 on.
fn tx_used(dev: &Dev, what: &str, build: impl FnOnce()) {
    let before = used_idx(TX_USED);
    build();
    post(dev, TXQ, 0);
    let done = wait_until(2_000_000, || used_idx(TX_USED) == before.wrapping_add(1));
    let len: u32 = get(TX_USED + 4 + 8 * usize::from(before % QSIZE) + 4);
    let running = dev.status() & NEEDS_RESET == 0;
    let untouched = arena_intact();
    if !(done && len == 0 && running && untouched) {
        say!("  {what}: used {done} (length {len}), still running {running}, memory untouched {untouched}");
    }
    check(what, done && len == 0 && running && untouched);
}

/// A chain the device cannot walk or use: DEVICE_NEEDS_RESET (within `us`), nothing used,
/// the arena intact; then a fresh set-up.
fn needs_reset(dev: &Dev, what: &str, q: u16, us: u64, build: impl FnOnce()) {
    if !setup(dev) {
        return check(what, false);
    }
    build();
    post(dev, q, 0);
    let flagged = wait_until(us, || dev.status() & NEEDS_RESET != 0);
    let unused = used_idx(RX_USED) == 0 && used_idx(TX_USED) == 0;
    let untouched = arena_intact();
    if !(flagged && unused && untouched) {
        say!("  {what}: needs reset {flagged}, used rings untouched {unused}, memory untouched {untouched}");
    }
    check(what, flagged && unused && untouched);
}

/// A good frame: header and frame in two descriptors.
fn good_tx(dev: &Dev, what: &str) {
    tx_used(dev, what, || {
        tx_frame(0);
        desc(TX_DESC, 0, at(TX_BUF), HDR as u32, F_NEXT, 1);
        desc(TX_DESC, 1, at(TX_BUF + HDR), (TX_LEN - HDR) as u32, 0, 0);
    });
}

fn main() {
    start_clock();
    let Some(dev) = discover(VIRTIO_NET_ID, BAR_BASE) else {
        fail!("FAIL no virtio-net function with a common configuration and a notify capability");
        exit(1);
    };
    say!("virtio-net at 00:{:02x}.0", dev.devfn >> 3);
    check("set up through the modern transport (VERSION_1, queues 0 and 1, DRIVER_OK)", setup(&dev));
    good_tx(&dev, "a good frame sent: used, length 0");

    tx_used(&dev, "a 6-byte chain (shorter than the 12-byte header): returned unsent", || {
        desc(TX_DESC, 0, at(TX_BUF), 6, 0, 0);
    });
    tx_used(&dev, "a header and 10 bytes (less than an Ethernet header): returned unsent", || {
        tx_frame(0);
        desc(TX_DESC, 0, at(TX_BUF), HDR as u32 + 10, 0, 0);
    });
    tx_used(&dev, "a frame of 64 KiB + 256 bytes: returned unsent", || {
        tx_frame(0);
        desc(TX_DESC, 0, at(TX_BUF), HDR as u32, F_NEXT, 1);
        desc(TX_DESC, 1, at(BIG), BIG_LEN, 0, 0);
    });
    tx_used(&dev, "a writable transmit descriptor: returned unsent", || {
        tx_frame(0);
        desc(TX_DESC, 0, at(TX_BUF), HDR as u32, F_NEXT, 1);
        desc(TX_DESC, 1, at(TX_BUF + HDR), (TX_LEN - HDR) as u32, F_WRITE, 0);
    });
    tx_used(&dev, "a header with GSO type 0x55 (none such): the tap refuses it, returned", || {
        tx_frame(0x55);
        desc(TX_DESC, 0, at(TX_BUF), HDR as u32, F_NEXT, 1);
        desc(TX_DESC, 1, at(TX_BUF + HDR), (TX_LEN - HDR) as u32, 0, 0);
    });
    good_tx(&dev, "a good frame after the bad ones: used");

    needs_reset(&dev, "a transmit descriptor loop: NEEDS_RESET", TXQ, 2_000_000, || {
        tx_frame(0);
        desc(TX_DESC, 0, at(TX_BUF), HDR as u32, F_NEXT, 1);
        desc(TX_DESC, 1, at(TX_BUF + HDR), 30, F_NEXT, 0);
    });
    // Receive cases wait for a frame from the image: one a second.
    needs_reset(&dev, "a device-readable receive buffer: NEEDS_RESET when a frame comes", RXQ, 10_000_000, || {
        desc(RX_DESC, 0, at(RX_BUF), RX_LEN as u32, 0, 0);
    });

    // Too small for any frame (the header and 8 bytes): dropped, the chain never used.
    check("set up again", setup(&dev));
    desc(RX_DESC, 0, at(RX_SMALL), HDR as u32 + 8, F_WRITE, 0);
    post(&dev, RXQ, 0);
    wait_until(4_000_000, || used_idx(RX_USED) != 0);
    let (unused, running, untouched) = (used_idx(RX_USED) == 0, dev.status() & NEEDS_RESET == 0, arena_intact());
    if !(unused && running && untouched) {
        say!("  small buffer: never used {unused}, still running {running}, memory untouched {untouched}");
    }
    check("a 20-byte receive buffer (no MRG_RXBUF) for 4 s: never used nor written", unused && running && untouched);

    // A good buffer after a reset: a frame in it, nothing past its length.
    check("set up again after the hostile chains", setup(&dev));
    desc(RX_DESC, 0, at(RX_BUF), RX_LEN as u32, F_WRITE, 0);
    post(&dev, RXQ, 0);
    let got = wait_until(10_000_000, || used_idx(RX_USED) == 1);
    let len: u32 = get(RX_USED + 4 + 4);
    let len = len as usize;
    let num_buffers: u16 = get(RX_BUF + 10);
    RX_WRITTEN.store(len.min(RX_LEN), SeqCst);
    let sane = got && (HDR + 14..=RX_LEN).contains(&len) && num_buffers == 1 && arena_intact();
    if !sane {
        say!("  good buffer: used {got}, length {len}, num_buffers {num_buffers}");
    }
    check("a 2 KiB receive buffer gets a frame (num_buffers 1, nothing past its length)", sane);
    good_tx(&dev, "a good frame sent after them all");

    // The flood: no receive buffer while the image sends 100000 frames into the tap; it
    // says it is done by a byte on COM1. Nothing used or written meanwhile; then a
    // buffer gets a frame (one the tap kept) at once.
    check("set up for the flood, no receive buffer", setup(&dev));
    say!("FLOOD-READY");
    let signalled = wait_until(600_000_000, || pc::inb(COM1 + LSR) & LSR_DR != 0);
    let _ = pc::inb(COM1 + RBR);
    let (unused, running, untouched) = (used_idx(RX_USED) == 0, dev.status() & NEEDS_RESET == 0, arena_intact());
    if !(signalled && unused && running && untouched) {
        say!("  flood: the image's byte came {signalled}, nothing used {unused}, still running {running}, memory untouched {untouched}");
    }
    check("no receive buffer during the flood: nothing used, nothing written", signalled && unused && running && untouched);
    desc(RX_DESC, 0, at(RX_BUF), RX_LEN as u32, F_WRITE, 0);
    post(&dev, RXQ, 0);
    let got = wait_until(2_000_000, || used_idx(RX_USED) == 1);
    let len = get::<u32>(RX_USED + 4 + 4) as usize;
    RX_WRITTEN.store(len.min(RX_LEN), SeqCst);
    let sane = got && (HDR + 14..=RX_LEN).contains(&len) && dev.status() & NEEDS_RESET == 0 && arena_intact();
    if !sane {
        say!("  after the flood: used {got}, length {len}");
    }
    check("after the flood a receive buffer gets a frame within 2 s", sane);
    exit(u8::from(FAILURES.load(SeqCst) != 0));
}
