//! `--irqfd VECTOR:COUNT:COUNTER` (a test aid): binds an eventfd to the interrupt message
//! "fixed, VECTOR, to APIC 0" (`hypervisor::Vm::register_irqfd`), then a thread of its own
//! signals it COUNT times, each time once the guest's count of interrupts taken, a u64 it
//! keeps at guest-physical COUNTER, reached the signals sent so far (at most 5 s each). So
//! every signal is one interrupt (none merge), and none passes through the vCPU threads.
//! The line printed at the end says how many signals were sent and how many the guest had
//! counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use yakvm_abi as abi;

use crate::hypervisor::VmHandle;
use crate::sys::GuestMemory;

/// How long the thread waits for the guest to take one interrupt.
const PATIENCE: Duration = Duration::from_secs(5);

/// One `--irqfd` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub vector: u8,
    pub count: u64,
    pub counter: u64,
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parses `VECTOR:COUNT:COUNTER`.
pub fn parse(text: &str) -> Result<Spec, String> {
    let bad = |why: &str| format!("--irqfd {text}: {why} (VECTOR:COUNT:COUNTER)");
    let parts: Vec<Option<u64>> = text.split(':').map(number).collect();
    let [Some(vector), Some(count), Some(counter)] = parts[..] else {
        return Err(bad("three numbers"));
    };
    let vector = u8::try_from(vector).ok().filter(|&v| v >= 0x10).ok_or_else(|| bad("VECTOR is 0x10 to 0xff"))?;
    Ok(Spec { vector, count, counter })
}

/// The eventfd and the thread signalling it.
pub struct Probe {
    fd: Arc<EventFd>,
    sent: Arc<AtomicU64>,
    counted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn guest_count(mem: &GuestMemory, at: u64) -> u64 {
    let mut b = [0u8; 8];
    mem.read(at, &mut b).map_or(0, |()| u64::from_le_bytes(b))
}

impl Probe {
    /// Binds the eventfd and starts signalling.
    pub fn start(vm: &VmHandle, mem: Arc<GuestMemory>, spec: Spec) -> Result<Self, String> {
        let fd = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?);
        // Fixed delivery, edge, physical destination APIC 0.
        let msi = abi::Msi { address: 0xfee0_0000, data: spec.vector.into(), _pad: 0 };
        vm.register_irqfd(&fd, msi).map_err(|e| format!("--irqfd: {e}"))?;
        let (sent, counted, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (f, s, c, st) = (fd.clone(), sent.clone(), counted.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("yakvm-irqfd".into())
            .spawn(move || {
                for i in 0..spec.count {
                    if f.write(1).is_err() {
                        return;
                    }
                    s.store(i + 1, Ordering::Relaxed);
                    let since = Instant::now();
                    loop {
                        let n = guest_count(&mem, spec.counter);
                        c.store(n, Ordering::Relaxed);
                        if n > i {
                            break;
                        }
                        if st.load(Ordering::Relaxed) || since.elapsed() > PATIENCE {
                            return;
                        }
                        std::thread::yield_now();
                    }
                }
            })
            .map_err(|e| format!("cannot start the irqfd thread: {e}"))?;
        Ok(Self { fd, sent, counted, stop, thread: Some(thread) })
    }

    /// Stops, removes the binding and returns the line to print.
    pub fn finish(mut self, vm: &VmHandle) -> std::io::Result<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        vm.unregister_irqfd(&self.fd)?;
        Ok(format!("irqfd: {} signals sent, the guest counted {}", self.sent.load(Ordering::Relaxed), self.counted.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse("0x2a:10000:0x200000"), Ok(Spec { vector: 0x2a, count: 10000, counter: 0x20_0000 }));
        assert!(parse("0x2a:10000").is_err());
        assert!(parse("0x0f:1:0").is_err());
        assert!(parse("0x100:1:0").is_err());
        assert!(parse("x:1:0").is_err());
    }
}
