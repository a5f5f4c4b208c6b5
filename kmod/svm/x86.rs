// SPDX-License-Identifier: GPL-2.0
//! Architectural constants of x86-64 (AMD APM vol. 2 and 3), named once for the whole
//! module: control register, EFER, RFLAGS and debug register bits, segment attribute
//! bits, and exception vectors. A leaf: it imports nothing. (The kernel module cannot
//! use crates.io, so these are not the `x86_64` crate's types the emulator uses.)

#![allow(dead_code)] // the catalogue, named once

/// CR0 bits (APM 3.1.1).
pub(crate) mod cr0 {
    pub(crate) const PE: u64 = 1 << 0;
    pub(crate) const MP: u64 = 1 << 1;
    pub(crate) const EM: u64 = 1 << 2;
    pub(crate) const TS: u64 = 1 << 3;
    pub(crate) const ET: u64 = 1 << 4;
    pub(crate) const NE: u64 = 1 << 5;
    pub(crate) const WP: u64 = 1 << 16;
    pub(crate) const AM: u64 = 1 << 18;
    pub(crate) const NW: u64 = 1 << 29;
    pub(crate) const CD: u64 = 1 << 30;
    pub(crate) const PG: u64 = 1 << 31;
    /// Bits 63:32 must be zero: a MOV with one set raises #GP.
    pub(crate) const UPPER: u64 = 0xffff_ffff_0000_0000;
    /// The bits that exist; the other bits of the low half are reserved, and a write of
    /// them is dropped (as KVM's `kvm_set_cr0`).
    pub(crate) const DEFINED: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR4 bits (APM 3.1.3).
pub(crate) mod cr4 {
    pub(crate) const VME: u64 = 1 << 0;
    pub(crate) const PVI: u64 = 1 << 1;
    pub(crate) const TSD: u64 = 1 << 2;
    pub(crate) const DE: u64 = 1 << 3;
    pub(crate) const PSE: u64 = 1 << 4;
    pub(crate) const PAE: u64 = 1 << 5;
    pub(crate) const MCE: u64 = 1 << 6;
    pub(crate) const PGE: u64 = 1 << 7;
    pub(crate) const PCE: u64 = 1 << 8;
    pub(crate) const OSFXSR: u64 = 1 << 9;
    pub(crate) const OSXMMEXCPT: u64 = 1 << 10;
    pub(crate) const UMIP: u64 = 1 << 11;
    pub(crate) const LA57: u64 = 1 << 12;
    pub(crate) const VMXE: u64 = 1 << 13;
    pub(crate) const SMXE: u64 = 1 << 14;
    pub(crate) const FSGSBASE: u64 = 1 << 16;
    pub(crate) const PCIDE: u64 = 1 << 17;
    pub(crate) const OSXSAVE: u64 = 1 << 18;
    pub(crate) const SMEP: u64 = 1 << 20;
    pub(crate) const SMAP: u64 = 1 << 21;
    pub(crate) const PKE: u64 = 1 << 22;
    pub(crate) const CET: u64 = 1 << 23;
}

/// EFER bits (APM 3.1.7).
pub(crate) mod efer {
    pub(crate) const SCE: u64 = 1 << 0;
    pub(crate) const LME: u64 = 1 << 8;
    pub(crate) const LMA: u64 = 1 << 10;
    pub(crate) const NXE: u64 = 1 << 11;
    pub(crate) const SVME: u64 = 1 << 12;
    pub(crate) const LMSLE: u64 = 1 << 13;
    pub(crate) const FFXSR: u64 = 1 << 14;
}

/// RFLAGS bits (APM 3.1.6).
pub(crate) mod rflags {
    /// Bit 1 reads as one.
    pub(crate) const FIXED: u64 = 1 << 1;
    pub(crate) const TF: u64 = 1 << 8;
    pub(crate) const IF: u64 = 1 << 9;
    pub(crate) const DF: u64 = 1 << 10;
    /// Resume flag: set in the RFLAGS image a fault pushes (APM 8.2.17 / SDM 17.3.1.1).
    pub(crate) const RF: u64 = 1 << 16;
}

/// DR6 and DR7 (APM 13.1.1).
pub(crate) mod dr {
    /// DR6 and DR7 after reset.
    pub(crate) const DR6_RESET: u64 = 0xffff_0ff0;
    pub(crate) const DR7_RESET: u64 = 0x400;
    /// DR6.BS: the #DB came from a single step.
    pub(crate) const DR6_BS: u64 = 1 << 14;
    /// Bits 63:32 of DR6 and DR7 must be zero (a MOV with one set raises #GP).
    pub(crate) const UPPER: u64 = 0xffff_ffff_0000_0000;
}

/// Segment attribute bits in the VMCB's 12-bit packed form (APM 15.5.1).
pub(crate) mod seg {
    /// CS.L: 64-bit code.
    pub(crate) const L: u16 = 1 << 9;
    /// CS.D / SS.B: 32-bit default operand (stack) size.
    pub(crate) const DB: u16 = 1 << 10;
}

/// Exception vectors (APM 8.2).
pub(crate) mod vector {
    pub(crate) const DB: u8 = 1;
    pub(crate) const NMI: u8 = 2;
    pub(crate) const BP: u8 = 3;
    pub(crate) const OF: u8 = 4;
    pub(crate) const UD: u8 = 6;
    pub(crate) const DF: u8 = 8;
    pub(crate) const GP: u8 = 13;
    pub(crate) const PF: u8 = 14;
    pub(crate) const MC: u8 = 18;
}

/// Whether `v` is a canonical address (bits 63:47 all equal; 48-bit virtual addresses,
/// the guest has no LA57).
pub(crate) fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}
