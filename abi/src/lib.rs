//! yakvm's userspace ABI as a crate for the emulator. The definitions live in `abi.rs`
//! (and the guest page walk in `paging.rs`, the local APIC in `lapic.rs`), which the kernel module includes by path:
//! one file, two users.
#![no_std]

mod abi;
pub use abi::*;
pub mod paging;
pub mod cpuid;
pub mod decode;
pub mod lapic;
