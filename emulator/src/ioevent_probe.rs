//! `--ioeventfd SPEC` (a test aid): registers an ioeventfd for each SPEC and counts, on a
//! thread of its own, the signals the hypervisor sends while the guest runs; the counts
//! are printed when the run ends. It shows that matching guest writes reach an eventfd
//! without an exit to this program (`--stats`), on yakvm and on KVM alike.
//!
//! SPEC is `pio:PORT` or `mmio:ADDRESS` (any write there), or with `:LEN:VALUE` (writes of
//! LEN bytes, 1, 2, 4 or 8, of that value only: KVM's datamatch).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::hypervisor::{Datamatch, IoEventAddress, VmHandle};

/// One `--ioeventfd` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub text: String,
    pub addr: IoEventAddress,
    pub datamatch: Datamatch,
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `pio:PORT[:LEN:VALUE]` or `mmio:ADDRESS[:LEN:VALUE]`.
pub fn parse(text: &str) -> Result<Spec, String> {
    let bad = |why: &str| format!("--ioeventfd {text}: {why} (pio:PORT or mmio:ADDRESS, optionally :LEN:VALUE)");
    let parts: Vec<&str> = text.split(':').collect();
    let (space, rest) = parts.split_first().ok_or_else(|| bad("empty"))?;
    let at = rest.first().and_then(|a| number(a)).ok_or_else(|| bad("no address"))?;
    let addr = match *space {
        "pio" => IoEventAddress::Pio(u16::try_from(at).map_err(|_| bad("a port is 0 to 0xffff"))?),
        "mmio" => IoEventAddress::Mmio(at),
        _ => return Err(bad("unknown space")),
    };
    let datamatch = match rest[1..] {
        [] => Datamatch::Any,
        [len, value] => {
            let v = number(value).ok_or_else(|| bad("bad value"))?;
            let fits = |bits: u32| bits == 64 || v >> bits == 0;
            match len {
                "1" if fits(8) => Datamatch::U8(v as u8),
                "2" if fits(16) => Datamatch::U16(v as u16),
                "4" if fits(32) => Datamatch::U32(v as u32),
                "8" => Datamatch::U64(v),
                _ => return Err(bad("LEN is 1, 2, 4 or 8 and VALUE must fit it")),
            }
        }
        _ => return Err(bad("LEN and VALUE go together")),
    };
    Ok(Spec { text: text.to_string(), addr, datamatch })
}

struct Counted {
    fd: EventFd,
    /// The sum of the values read: the number of signals.
    signals: AtomicU64,
    /// Reads that returned something: wake-ups (one may stand for several signals).
    wakeups: AtomicU64,
}

impl Counted {
    /// Reads what the counter holds now (non-blocking), adding it up.
    fn drain(&self) {
        if let Ok(n) = self.fd.read() {
            self.signals.fetch_add(n, Ordering::Relaxed);
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The registered eventfds and the thread counting their signals.
pub struct Probe {
    specs: Vec<Spec>,
    counted: Arc<Vec<Counted>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Probe {
    /// Registers every spec with `vm` and starts counting.
    pub fn start(vm: &VmHandle, specs: &[Spec]) -> Result<Self, String> {
        let mut counted = Vec::new();
        for spec in specs {
            let fd = EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
            vm.register_ioevent(spec.addr, spec.datamatch, &fd).map_err(|e| format!("--ioeventfd {}: {e}", spec.text))?;
            counted.push(Counted { fd, signals: AtomicU64::new(0), wakeups: AtomicU64::new(0) });
        }
        let counted = Arc::new(counted);
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counted.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("yakvm-ioeventfd".into())
            .spawn(move || count(&c, &s))
            .map_err(|e| format!("cannot start the ioeventfd thread: {e}"))?;
        Ok(Self { specs: specs.to_vec(), counted, stop, thread: Some(thread) })
    }

    /// Stops counting, takes what is left, removes the registrations (as a device whose
    /// BAR moves would) and returns one line per spec.
    pub fn finish(mut self, vm: &VmHandle) -> io::Result<Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut lines = Vec::new();
        for (spec, c) in self.specs.iter().zip(self.counted.iter()) {
            c.drain();
            vm.unregister_ioevent(spec.addr, spec.datamatch, &c.fd)?;
            lines.push(format!(
                "ioeventfd {}: {} signals in {} wake-ups",
                spec.text,
                c.signals.load(Ordering::Relaxed),
                c.wakeups.load(Ordering::Relaxed)
            ));
        }
        Ok(lines)
    }
}

/// The counting thread: waits for any of the eventfds (epoll), reads the ready ones.
fn count(counted: &[Counted], stop: &AtomicBool) {
    use std::os::fd::AsRawFd;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    let epoll = Epoll::new().and_then(|ep| {
        for (i, c) in counted.iter().enumerate() {
            ep.ctl(ControlOperation::Add, c.fd.as_raw_fd(), EpollEvent::new(EventSet::IN, i as u64))?;
        }
        Ok(ep)
    });
    let mut events = vec![EpollEvent::default(); counted.len().max(1)];
    while !stop.load(Ordering::Relaxed) {
        let ready = match &epoll {
            Ok(ep) => ep.wait(20, &mut events).unwrap_or(0),
            // No epoll: look every 20 ms instead.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                counted.iter().for_each(Counted::drain);
                0
            }
        };
        for e in &events[..ready] {
            if let Some(c) = counted.get(e.data() as usize) {
                c.drain();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse("pio:0x10").map(|s| (s.addr, s.datamatch)), Ok((IoEventAddress::Pio(0x10), Datamatch::Any)));
        assert_eq!(parse("mmio:0xc0000080:4:0x1234").map(|s| (s.addr, s.datamatch)), Ok((IoEventAddress::Mmio(0xc000_0080), Datamatch::U32(0x1234))));
        assert_eq!(parse("pio:16:1:35").map(|s| s.datamatch), Ok(Datamatch::U8(35)));
        for bad in ["", "pio", "pio:0x10000", "mmio:1:3:0", "mmio:1:1:256", "pio:1:1", "port:1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
