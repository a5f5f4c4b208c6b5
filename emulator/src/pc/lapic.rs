//! One CPU's local APIC: the state machine is shared with the kernel module, which
//! includes the same file by path (`abi/src/lapic.rs`); see its documentation.

pub use yakvm_abi::lapic::*;
