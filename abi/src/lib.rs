//! yakvm's userspace ABI as a crate for the emulator. The definitions live in `abi.rs`,
//! which the kernel module includes by path: one file, two users.
#![no_std]

mod abi;
pub use abi::*;
