// SPDX-License-Identifier: GPL-2.0
//! The kernel APIC (`ENABLE_KERNEL_APIC`, KVM's "split irqchip"): each vCPU's local APIC
//! is the shared state machine of `abi/src/lapic.rs` ([`Lapic`]), kept here behind a spin
//! lock so that other vCPUs (IPIs) and userspace (`SIGNAL_MSI`) can deliver to it, with
//! the wake-up machinery of `ffi/apic.rs` (the timer's hrtimer, the halted vCPU's wait,
//! the kick). This file routes messages between the VM's APICs, as the emulator's
//! `pc/apic.rs` does between its own:
//!
//! - destinations: physical or logical (xAPIC flat/cluster, x2APIC cluster) by
//!   [`Lapic::matches`], or an IPI's shorthand; lowest priority goes to one CPU of those
//!   matching, a software-enabled one with the lowest TPR, ties to the lowest index;
//! - INIT level de-assert does nothing; SMI and ExtINT messages reach nobody (the PIC
//!   reaches vCPU 0 through userspace's `INTERRUPT`);
//! - every vCPU that took something is kicked (ffi/apic.rs): woken if it halts, made to
//!   exit if it runs its guest, so it sees its new IRR, NMI, INIT or SIPI at once.
//!
//! Locking: one APIC's lock at a time, never across a kick or another APIC's lock. The
//! locks keep interrupts off (`IrqSpinLock`): an IRQFD delivers from an eventfd's
//! wake-up, which may interrupt a holder on its CPU.

use crate::abi;
use crate::ffi::apic::{tsc_khz, ApicHw};
use crate::ffi::irqlock::{new_irq_spinlock, IrqSpinLock};
use crate::lapic::{xapic_dest, DeliveryMode, Ipi, Lapic, Shorthand};
use kernel::prelude::*;
use kernel::sync::Arc;

/// One vCPU's kernel APIC.
#[pin_data]
pub(crate) struct KApic {
    /// The vCPU's index (its APIC ID).
    pub(crate) id: usize,
    #[pin]
    lapic: IrqSpinLock<Lapic>,
    pub(crate) hw: ApicHw,
}

impl KApic {
    /// The power-on APIC of vCPU `id` (vCPU 0 is the bootstrap processor).
    pub(crate) fn new(id: u32) -> Result<Arc<Self>> {
        let hw = ApicHw::new()?;
        let mut lapic = Lapic::new(u8::try_from(id).map_err(|_| EINVAL)?, id == 0);
        // TSC-deadline mode needs the TSC's rate to turn a deadline into hrtimer time.
        if tsc_khz() != 0 {
            lapic.offer_tsc_deadline();
        }
        Arc::pin_init(
            pin_init!(Self { id: id as usize, lapic <- new_irq_spinlock!(lapic, "yakvm_apic"), hw }),
            GFP_KERNEL,
        )
    }

    /// Runs `f` on the APIC, under its lock (keep `f` short: no sleeping, no other APIC).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Lapic) -> R) -> R {
        let mut lapic = self.lapic.lock();
        f(&mut lapic)
    }
}

/// Bit `i` of a vCPU mask (`MAX_VCPUS` is 8).
fn bit(i: usize) -> u32 {
    1u32.checked_shl(i as u32).unwrap_or(0)
}

/// Delivers a message to the APICs in `targets` (a mask of indices into `apics`), or to
/// one of them for lowest priority; kicks those that took it. Returns how many did.
fn deliver(apics: &[Arc<KApic>], targets: u32, mode: DeliveryMode, vector: u8, level: bool) -> u32 {
    let targets = if mode == DeliveryMode::LowestPriority {
        let chosen = apics
            .iter()
            .enumerate()
            .filter(|(i, _)| targets & bit(*i) != 0)
            .min_by_key(|(i, a)| a.with(|l| (!l.software_enabled(), l.tpr(), *i)));
        chosen.map_or(0, |(i, _)| bit(i))
    } else {
        targets
    };
    let mut took = 0;
    for (i, apic) in apics.iter().enumerate() {
        if targets & bit(i) != 0 && apic.with(|l| l.receive(mode, vector, level)) {
            apic.hw.kick();
            took += 1;
        }
    }
    took
}

/// The APICs (a mask) a message for `dest` reaches.
fn matching(apics: &[Arc<KApic>], dest: u32, logical: bool) -> u32 {
    apics.iter().enumerate().filter(|(_, a)| a.with(|l| l.matches(dest, logical))).fold(0, |m, (i, _)| m | bit(i))
}

/// Delivers an IPI sent by the APIC with index `from`; how many APICs took it.
pub(crate) fn ipi(apics: &[Arc<KApic>], from: usize, ipi: Ipi) -> u32 {
    if ipi.mode == DeliveryMode::Init && ipi.level_triggered && !ipi.assert {
        return 0;
    }
    let all = apics.iter().enumerate().fold(0, |m, (i, _)| m | bit(i));
    let targets = match ipi.shorthand {
        Shorthand::None => matching(apics, ipi.dest, ipi.logical),
        Shorthand::SelfOnly => bit(from) & all,
        Shorthand::AllIncludingSelf => all,
        Shorthand::AllExcludingSelf => all & !bit(from),
    };
    deliver(apics, targets, ipi.mode, ipi.vector, ipi.level_triggered)
}

/// MSI address bits (SDM 11.11.1): the fixed 0xfee prefix, the destination ID, the
/// destination mode (logical).
const MSI_ADDRESS_MASK: u64 = 0xfff0_0000;
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;
const MSI_DEST_SHIFT: u32 = 12;
const MSI_LOGICAL: u64 = 1 << 2;
/// MSI data bits: vector 7-0, delivery mode 10-8, trigger mode 15 (level).
const MSI_LEVEL_TRIGGERED: u32 = 1 << 15;

/// Whether `address` is an MSI's (0xfee0_0000-0xfeef_ffff).
pub(crate) fn msi_address_ok(address: u64) -> bool {
    address & MSI_ADDRESS_MASK == MSI_ADDRESS_BASE && address >> 32 == 0
}

/// `SIGNAL_MSI`: an interrupt message from userspace's I/O APIC or a PCI function; how
/// many APICs took it. `EINVAL` for an address that is not an MSI's.
pub(crate) fn msi(apics: &[Arc<KApic>], m: &abi::Msi) -> Result<u32> {
    if !msi_address_ok(m.address) {
        return Err(EINVAL);
    }
    let Some(mode) = DeliveryMode::from_bits(m.data >> crate::lapic::DELIVERY_MODE_SHIFT) else {
        return Ok(0);
    };
    let dest = xapic_dest((m.address >> MSI_DEST_SHIFT) as u8);
    let logical = m.address & MSI_LOGICAL != 0;
    let targets = matching(apics, dest, logical);
    Ok(deliver(apics, targets, mode, m.data as u8, m.data & MSI_LEVEL_TRIGGERED != 0))
}
