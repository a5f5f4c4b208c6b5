//! Several CPUs, for the guests of `yakvm run --machine pc --smp N`: the MP table, the
//! local APIC, starting the APs (INIT, SIPI, SIPI into a real-mode trampoline that goes to
//! long mode), descriptor tables and interrupt stacks for each CPU, a clock (the PIT's) and
//! a console shared under a lock.
//!
//! CPU `i` is the one whose local APIC id is `i` (the MP table's ids must be below
//! `MAX_CPUS`, as yakvm numbers them 0..N-1): per-CPU data is indexed by APIC id.
//!
//! Memory: the guest image is linked at 0 and must end below `TRAMPOLINE` (checked at run
//! time against the linker's `_end`); the trampoline page is at `TRAMPOLINE` (SIPI vector
//! 0x70), a page that only halts at `DEAD_PAGE` (vector 0x71, for the guest that starts a
//! CPU which never answers); the MP table is at 0xf0000 (read only); the BSP's stack is
//! the emulator's, at the top of RAM; the APs' stacks are statics here.
//!
//! Interrupts: every vector from 32 to 255, and the NMI, is counted per CPU
//! (`received`); then the hook set with `set_hook` runs (not for the NMI and the spurious
//! vector), then the EOI is sent (not for those two either). Handlers run with interrupts
//! disabled on IST1 of the CPU's own TSS, the NMI on IST2 (it may come while IST1 is in
//! use). Exceptions end the run (status 99).
//!
//! One file per job: `lapic` (registers, IPIs), `console` (`say!`, `fail!`), `clock` (the
//! PIT), `mptable`, `tables` (GDT, TSSs, IDT, interrupt dispatch) and `start` (`boot`,
//! the trampoline). Guests name everything as `smp::X`.

mod clock;
mod console;
mod lapic;
mod mptable;
mod start;
mod tables;

pub use clock::*;
pub use console::*;
pub use lapic::*;
pub use mptable::*;
pub use start::*;
pub use tables::*;

use crate::pc;

/// How many CPUs the guests handle (yakvm's `--smp` limit).
pub const MAX_CPUS: usize = 8;

/// Exit statuses: a check failed, a CPU did not answer, no usable MP table, the layout
/// does not fit (exceptions end with 99, panics with 101).
pub const STATUS_FAILED: u8 = 1;
pub const STATUS_NO_ANSWER: u8 = 2;
pub const STATUS_NO_MP_TABLE: u8 = 3;
pub const STATUS_LAYOUT: u8 = 4;

/// `cli; hlt` forever: a CPU with nothing more to do.
pub fn park() -> ! {
    pc::cli();
    crate::halt()
}
