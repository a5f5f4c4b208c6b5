//! virtio entropy device (virtio 1.2, 5.4; `--rng`): one request queue; each chain's
//! device-writable buffers are filled from the host's getrandom(2), never more than the
//! chain asked for (and at most [`MAX_REQUEST`] bytes a chain), then returned with the
//! number of bytes written. Served by a worker thread of its own, like virtio-blk's.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::chain::walk;
use super::{Processed, QueueSlot, TRANSPORT_FEATURES};

/// The device type (virtio 1.2, 5).
pub const DEVICE_ID: u16 = 4;
pub const QUEUE_SIZE: u16 = 64;
/// The most bytes one chain gets (Linux asks for at most a page at a time).
pub const MAX_REQUEST: usize = 64 << 10;

/// The features the device offers: the transport's only (entropy has none of its own).
pub fn features() -> u64 {
    TRANSPORT_FEATURES
}

/// Where the bytes come from: the host's getrandom, or a test's pattern.
pub trait Entropy: Send {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

/// The host kernel's random pool.
pub struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
        crate::sys::getrandom(buf)
    }
}

#[derive(Debug, Default)]
pub struct RngStats {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Chains that could not be used (the device then needs a reset).
    pub broken: AtomicU64,
}

impl RngStats {
    pub fn line(&self) -> String {
        format!(
            "{} requests, {} B given, {} broken chains",
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.broken.load(Ordering::Relaxed)
        )
    }
}

pub struct Rng<E: Entropy> {
    pub source: E,
    pub stats: Arc<RngStats>,
    buf: Vec<u8>,
}

impl<E: Entropy> Rng<E> {
    pub fn new(source: E, stats: Arc<RngStats>) -> Self {
        Self { source, stats, buf: Vec::new() }
    }

    /// Serves every available chain. A chain with a device-readable buffer, a buffer
    /// outside RAM or a walk that does not end makes the device need a reset.
    pub fn process<M: GuestMemory>(&mut self, slot: &mut QueueSlot, mem: &M) -> Processed {
        let mut out = Processed::default();
        let q = &mut slot.queue;
        loop {
            if q.disable_notification(mem).is_err() {
                out.needs_reset = true;
                return out;
            }
            loop {
                let chain = match q.iter(mem) {
                    Ok(mut chains) => chains.next(),
                    Err(_) => {
                        out.needs_reset = true;
                        return out;
                    }
                };
                let Some(chain) = chain else { break };
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let (head, bufs) = match walk(chain) {
                    Ok(w) if w.1.iter().all(|b| b.writable) => w,
                    _ => {
                        self.stats.broken.fetch_add(1, Ordering::Relaxed);
                        out.needs_reset = true;
                        return out;
                    }
                };
                let mut given = 0usize;
                for b in bufs {
                    let n = (b.len as usize).min(MAX_REQUEST - given);
                    if n == 0 {
                        break;
                    }
                    self.buf.resize(n, 0);
                    if self.source.fill(&mut self.buf).is_err() || mem.write_slice(&self.buf, GuestAddress(b.addr)).is_err() {
                        break;
                    }
                    given += n;
                }
                self.stats.bytes.fetch_add(given as u64, Ordering::Relaxed);
                if q.add_used(mem, head, given as u32).is_err() {
                    out.needs_reset = true;
                    return out;
                }
                out.completed += 1;
            }
            match q.needs_notification(mem) {
                Ok(n) => out.notify |= n,
                Err(_) => out.needs_reset = true,
            }
            match q.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => return out,
                Err(_) => {
                    out.needs_reset = true;
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{Desc, Ring, F_NEXT, F_WRITE, MEM};

    /// Counts up from 1: a test can tell which bytes came from it.
    struct Counter(u8, usize);
    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> io::Result<()> {
            self.1 += buf.len();
            for b in buf {
                self.0 = self.0.wrapping_add(1).max(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    fn rng() -> Rng<Counter> {
        Rng::new(Counter(0, 0), Default::default())
    }

    #[test]
    fn fills_what_the_driver_asked_and_no_more() {
        let mut r = Ring::new(16);
        let mut rng = rng();
        r.fill(0x10000, 0x3000, 0xee);
        // Two buffers of 100 and 28 bytes, then a second chain of 1 byte.
        let h0 = r.post(&[(0x10000, 100, F_WRITE), (0x11000, 28, F_WRITE)]);
        let h1 = r.post(&[(0x12000, 1, F_WRITE)]);
        let done = rng.process(&mut r.slot, &r.mem);
        assert_eq!((done.completed, done.notify, done.needs_reset), (2, true, false));
        assert_eq!(r.used(0), (u32::from(h0), 128));
        assert_eq!(r.used(1), (u32::from(h1), 1));
        assert!(r.bytes(0x10000, 100).iter().all(|&b| b != 0xee));
        assert_eq!(r.bytes(0x10000 + 100, 4), [0xee; 4], "past the first buffer");
        assert!(r.bytes(0x11000, 28).iter().all(|&b| b != 0xee));
        assert_eq!(r.bytes(0x11000 + 28, 4), [0xee; 4]);
        assert_ne!(r.bytes(0x12000, 1)[0], 0xee);
        assert_eq!(r.bytes(0x12001, 4), [0xee; 4]);
        assert_eq!(rng.source.1, 129);
        assert_eq!(rng.stats.bytes.load(Ordering::Relaxed), 129);
    }

    #[test]
    fn a_huge_request_gets_at_most_max_request() {
        let mut r = Ring::new(16);
        let mut rng = rng();
        r.post(&[(0x10000, 0x20000, F_WRITE)]);
        assert_eq!(rng.process(&mut r.slot, &r.mem).completed, 1);
        assert_eq!(r.used(0).1 as usize, MAX_REQUEST);
        assert_eq!(rng.source.1, MAX_REQUEST);
    }

    #[test]
    fn broken_chains_need_a_reset_and_write_nothing() {
        let cases: Vec<(&str, Vec<Desc>)> = vec![
            ("device-readable buffer", vec![(0x10000, 16, 0)]),
            ("past RAM", vec![(MEM as u64 - 8, 16, F_WRITE)]),
            ("address wraps", vec![(u64::MAX - 3, 16, F_WRITE)]),
        ];
        for (what, descs) in cases {
            let mut r = Ring::new(16);
            let mut rng = rng();
            r.fill(0x10000, 0x100, 0xee);
            r.post(&descs);
            let done = rng.process(&mut r.slot, &r.mem);
            assert!(done.needs_reset, "{what}");
            assert_eq!((done.completed, r.used_idx()), (0, 0), "{what}");
            assert_eq!(rng.source.1, 0, "{what}");
            assert!(r.bytes(0x10000, 0x100).iter().all(|&b| b == 0xee), "{what}");
        }
        // A loop: the last descriptor points back at the first.
        let mut r = Ring::new(16);
        let mut rng = rng();
        r.post(&[(0x10000, 16, F_WRITE), (0x11000, 16, F_WRITE)]);
        r.desc_raw(1, 0x11000, 16, F_WRITE | F_NEXT, 0);
        assert!(rng.process(&mut r.slot, &r.mem).needs_reset);
        assert_eq!(rng.source.1, 0);
    }
}
