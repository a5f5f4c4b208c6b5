//! The time stamp counter.

/// The time stamp counter's rate in kHz, measured against the monotonic clock over
/// `over` (guests see the same counter: RDTSC is not intercepted).
pub fn tsc_khz(over: std::time::Duration) -> u64 {
    // SAFETY: RDTSC only reads the counter; user mode may (CR4.TSD is clear on Linux).
    let rdtsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (std::time::Instant::now(), rdtsc());
    std::thread::sleep(over);
    let (t1, c1) = (std::time::Instant::now(), rdtsc());
    let ns = (t1 - t0).as_nanos().max(1) as u64;
    (c1.wrapping_sub(c0) as u128 * 1_000_000 / ns as u128) as u64
}
