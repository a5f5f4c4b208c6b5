//! Several CPUs on the pc machine: the BSP reads the MP table, starts every AP (INIT, SIPI,
//! SIPI; each comes to long mode through a trampoline and says "cpu N online"), then all
//! CPUs run four checks in turn, each ended by a summary line from the BSP:
//! - `ipi`: every CPU sends every other one a fixed IPI by physical destination, one to all
//!   but itself by shorthand, one by flat logical destination (a vector per kind and
//!   sender, so that no two ever merge in an IRR); each count is checked exactly;
//! - `nmi`: two NMI IPIs to each AP (the second once the first was taken; the APs spin
//!   with interrupts disabled meanwhile), each taken exactly once;
//! - `apic timer`: on every CPU at once, the timer periodic at 1 ms for 20 ticks (the
//!   handler stops it at the 20th, when an 18-ms alarm on PIT channel 2, started before
//!   any of the timers, must have gone off), then one-shot once;
//! - `lock xadd`: 100000 `lock xadd` on one counter from every CPU at once (no exits), the
//!   sum exact.
//!
//! Then the APs park (`cli; hlt`) and the BSP checks that each AP came through the
//! trampoline once (the second SIPI is ignored) and no other vector came anywhere.
//!
//! Output on COM1, deterministic but for the lines that start with two spaces (figures:
//! times, by the PIT). With `--smp 2`:
//! ```text
//! mp table: 2 cpus (apic ids 0 1), bsp 0, local apic at 0xfee00000, io apic 2 at 0xfec00000
//! cpu 0 online
//! cpu 1 online
//! ipi ok: 2 physical, 2 all-but-self, 2 logical
//! nmi ok: 2 taken by each of 1 aps
//! apic timer ok: 20 periodic ticks and 1 one-shot on each of 2 cpus
//! lock xadd ok: 200000 = 2 cpus x 100000
//! cpus ok: each ap started once, no stray interrupts
//! smp ok
//! ```
//! Exit status 0; 1 if a check failed (a line says which, the summary says FAIL, the last
//! line is `smp FAIL: ...`); 2 if an AP did not answer (`cpu N did not answer`); 3 without
//! a usable MP table; 4 if the image reaches the trampoline's page; 99 on an exception.
//!
//! Run: `yakvm run --machine pc --smp 4 build/guests/smp.bin`
#![no_std]
#![no_main]

/// This guest uses its local APICs in xAPIC mode (the MMIO page).
const X2APIC: bool = false;

include!("../smp_body.rs");
