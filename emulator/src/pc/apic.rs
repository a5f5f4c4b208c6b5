//! The wires between the local APICs and the I/O APIC: who gets an IPI or an I/O APIC
//! message, where a level-triggered EOI goes, and the MMIO pages through which each CPU sees
//! its own local APIC ([`LAPIC_BASE`]) and the shared I/O APIC ([`IOAPIC_BASE`]).
//!
//! Every method that delivers returns the set of CPUs that got something new (an interrupt
//! in IRR, an NMI, INIT or SIPI) as a bit mask, bit n for CPU n: the machine wakes or kicks
//! those vCPUs. CPU n has APIC ID n at reset; the masks hold CPUs 0-31.
//!
//! Routing:
//! - **Destinations**: physical (APIC ID, 0xff for all) or logical (flat or cluster model, by
//!   each CPU's LDR and DFR; 0xff for all), see [`Lapic::matches`]; or an IPI's shorthand
//!   (self, all including self, all excluding self), which ignores the destination field.
//! - **Lowest priority**: one CPU of those matching: a software-enabled one with the lowest
//!   TPR; ties go to the lowest CPU index (no rotation, no focus processor).
//! - **INIT level de-assert** (an ICR INIT with level 0, trigger level) does nothing: it only
//!   synchronised arbitration IDs on the old APIC bus.
//! - **EOI**: a local APIC's EOI of a level-triggered vector goes to the I/O APIC, which may
//!   send again (the line is still high).
//! - **SMI and ExtINT messages** reach nobody: SMM is not emulated, and the PIC reaches CPU 0
//!   through its LINT0 only ([`Lapic::accepts_pic`]), never through an I/O APIC pin.
//! - **ISA IRQs**: IRQ 0 is I/O APIC pin 2 (the PIT, as on every PC chipset and as the MP table
//!   says), IRQ 2 (the PICs' cascade) is none, the others are the pin of their number.
//!
//! MMIO access rules (SDM 11.4.1: registers are 32 bits wide on 16-byte boundaries):
//! - **Writes**: only 4-byte writes at the start of a 16-byte slot reach a register. Anything
//!   else (narrower, wider, unaligned) is ignored and counted in [`Apics::bad_accesses`].
//! - **Reads** of any size are served byte by byte: a byte in the first four of a slot is that
//!   byte of the slot's register, the other twelve read 0. A read other than a 4-byte aligned
//!   one is counted too. Reads have no side effects on these devices, so this is harmless.

use super::ioapic::{IoApic, Message, IOAPIC_BASE, IOAPIC_SIZE};
use super::lapic::{xapic_dest, DeliveryMode, Ipi, Lapic, LapicEffect, Shorthand, DELIVERY_MODE_SHIFT, LAPIC_BASE, LAPIC_SIZE};
use crate::hypervisor::KernelApicsHandle;

/// The I/O APIC pin of the PIT's IRQ 0.
pub const IRQ0_PIN: u8 = 2;
/// The PICs' cascade line, which has no I/O APIC pin.
const CASCADE_IRQ: u8 = 2;
/// Registers are 32 bits wide, each at the start of a 16-byte slot.
const REG_SIZE: usize = 4;
const SLOT: u64 = 0x10;

/// Bit `cpu` of a CPU mask (none for CPUs above 31).
fn bit(cpu: usize) -> u32 {
    u32::try_from(cpu).ok().and_then(|cpu| 1u32.checked_shl(cpu)).unwrap_or(0)
}

/// All local APICs and the I/O APIC of a machine.
#[derive(Clone)]
pub struct Apics {
    /// CPU n's local APIC, APIC ID n; CPU 0 is the BSP. With the kernel's APICs (`kernel`)
    /// these stay in their power-on state, unused but for vCPU 0's LINT0 (the PIC).
    pub lapics: Vec<Lapic>,
    pub ioapic: IoApic,
    bad_accesses: u64,
    /// The kernel's APICs (`--kernel-apic`, yakvm's module or KVM's split irqchip):
    /// every message goes to them.
    kernel: Option<KernelApicsHandle>,
    /// The I/O APIC's messages as the kernel was last told (`ioapic_routes`).
    kernel_routes: Vec<Option<(u64, u32)>>,
    /// Messages or routes the kernel refused (an error of SIGNAL_MSI or of setting the
    /// routes, counted, never fatal).
    pub kernel_errors: u64,
}

impl std::fmt::Debug for Apics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apics").field("lapics", &self.lapics).field("ioapic", &self.ioapic).field("kernel", &self.kernel.is_some()).finish()
    }
}

/// The MSI address and data of each pin's message (masked or not; `None` for a delivery mode
/// an I/O APIC cannot send): level-triggered entries have the trigger-mode bit (data bit 15).
pub fn ioapic_routes(ioapic: &IoApic) -> Vec<Option<(u64, u32)>> {
    ioapic.messages().iter().map(|m| m.as_ref().map(msi_of)).collect()
}

/// The MSI address and data of message `m` (SDM 11.11): what `SIGNAL_MSI` takes.
pub fn msi_of(m: &Message) -> (u64, u32) {
    const MSI_BASE: u64 = 0xfee0_0000;
    let address = MSI_BASE | (u64::from(m.dest) << 12) | if m.logical { 1 << 2 } else { 0 };
    let level = if m.level_triggered { (1 << 15) | (1 << 14) } else { 0 };
    (address, u32::from(m.vector) | (m.mode.code() << DELIVERY_MODE_SHIFT) | level)
}

impl Apics {
    /// `cpus` local APICs with IDs 0..cpus, and an I/O APIC with ID `cpus`.
    pub fn new(cpus: usize) -> Self {
        let lapics = (0..cpus).map(|i| Lapic::new(i as u8, i == 0)).collect();
        Apics { lapics, ioapic: IoApic::new(cpus as u8), bad_accesses: 0, kernel: None, kernel_routes: Vec::new(), kernel_errors: 0 }
    }

    /// From now on every message goes to the kernel's APICs, which are told the I/O APIC's
    /// messages now and whenever the guest changes them.
    pub fn use_kernel(&mut self, kernel: KernelApicsHandle) {
        self.kernel = Some(kernel);
        self.kernel_routes.clear();
        self.update_kernel_routes();
    }

    /// Tells the kernel's APICs the I/O APIC's messages if they changed since it was
    /// last told (KVM's split irqchip reports the EOIs of the level-triggered vectors among
    /// them: `hypervisor::KernelApics::set_ioapic_routes`).
    fn update_kernel_routes(&mut self) {
        let Some(kernel) = &self.kernel else { return };
        let routes = ioapic_routes(&self.ioapic);
        if routes == self.kernel_routes {
            return;
        }
        match kernel.set_ioapic_routes(&routes) {
            Ok(()) => self.kernel_routes = routes,
            Err(_) => self.kernel_errors += 1,
        }
    }

    /// The local APICs are the kernel's.
    pub fn kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// MMIO accesses that did not follow the rules (see the module documentation).
    pub fn bad_accesses(&self) -> u64 {
        self.bad_accesses
    }

    /// The CPUs an IPI or message for `dest` reaches, as a mask.
    fn matching(&self, dest: u32, logical: bool) -> u32 {
        let cpus = self.lapics.iter().enumerate();
        cpus.filter(|(_, lapic)| lapic.matches(dest, logical)).fold(0, |mask, (i, _)| mask | bit(i))
    }

    /// Of the CPUs in `mask`, the one taking a lowest-priority interrupt.
    fn lowest_priority(&self, mask: u32) -> u32 {
        let cpus = self.lapics.iter().enumerate().filter(|(i, _)| mask & bit(*i) != 0);
        let chosen = cpus.min_by_key(|(i, lapic)| (!lapic.software_enabled(), lapic.tpr(), *i));
        chosen.map_or(0, |(i, _)| bit(i))
    }

    /// Delivers a message to the CPUs in `targets`; those that took it.
    fn deliver(&mut self, targets: u32, mode: DeliveryMode, vector: u8, level: bool) -> u32 {
        let targets = if mode == DeliveryMode::LowestPriority {
            self.lowest_priority(targets)
        } else {
            targets
        };
        let mut got = 0;
        for (i, lapic) in self.lapics.iter_mut().enumerate() {
            if targets & bit(i) != 0 && lapic.receive(mode, vector, level) {
                got |= bit(i);
            }
        }
        got
    }

    /// Delivers an IPI sent by CPU `from`; the CPUs that got something.
    pub fn ipi(&mut self, from: usize, ipi: Ipi) -> u32 {
        if ipi.mode == DeliveryMode::Init && ipi.level_triggered && !ipi.assert {
            return 0;
        }
        let all = self.lapics.iter().enumerate().fold(0, |mask, (i, _)| mask | bit(i));
        let targets = match ipi.shorthand {
            Shorthand::None => self.matching(ipi.dest, ipi.logical),
            Shorthand::SelfOnly => bit(from) & all,
            Shorthand::AllIncludingSelf => all,
            Shorthand::AllExcludingSelf => all & !bit(from),
        };
        self.deliver(targets, ipi.mode, ipi.vector, ipi.level_triggered)
    }

    /// Delivers a message of the I/O APIC; the CPUs that got something (with the kernel's
    /// APICs: none here, the module wakes its vCPUs itself).
    pub fn message(&mut self, m: Message) -> u32 {
        if let Some(kernel) = &self.kernel {
            let (address, data) = msi_of(&m);
            if kernel.signal_msi(address, data).is_err() {
                self.kernel_errors += 1;
            }
            return 0;
        }
        let targets = self.matching(xapic_dest(m.dest), m.logical);
        self.deliver(targets, m.mode, m.vector, m.level_triggered)
    }

    fn messages(&mut self, messages: Vec<Message>) -> u32 {
        messages.into_iter().fold(0, |mask, m| mask | self.message(m))
    }

    /// The I/O APIC pin of ISA IRQ `irq` (none for the PICs' cascade).
    pub fn isa_pin(irq: u8) -> Option<u8> {
        match irq {
            0 => Some(IRQ0_PIN),
            CASCADE_IRQ => None,
            irq => Some(irq),
        }
    }

    /// An edge on ISA IRQ `irq` reaches the I/O APIC.
    pub fn isa_irq(&mut self, irq: u8) -> u32 {
        let Some(pin) = Self::isa_pin(irq) else { return 0 };
        self.ioapic.pulse(pin).map_or(0, |m| self.message(m))
    }

    /// A level change on I/O APIC pin `pin` (for level-triggered sources).
    pub fn set_pin(&mut self, pin: u8, high: bool) -> u32 {
        self.ioapic.set_level(pin, high).map_or(0, |m| self.message(m))
    }

    /// CPU `cpu` ended `vector`: a level-triggered one reaches the I/O APIC.
    pub fn eoi(&mut self, cpu: usize, vector: u8, level_triggered: bool) -> u32 {
        let _ = cpu; // Every I/O APIC hears every EOI; the sender does not matter.
        if !level_triggered {
            return 0;
        }
        let messages = self.ioapic.eoi(vector);
        self.messages(messages)
    }

    /// A read by CPU `cpu` at `gpa`; false if `gpa` is not an APIC's.
    pub fn mmio_read(&mut self, cpu: usize, gpa: u64, data: &mut [u8], now_ns: u64) -> bool {
        let lapic_offset = gpa.wrapping_sub(LAPIC_BASE);
        let ioapic_offset = gpa.wrapping_sub(IOAPIC_BASE);
        let (offset, size) = if lapic_offset < LAPIC_SIZE {
            (lapic_offset, LAPIC_SIZE)
        } else if ioapic_offset < IOAPIC_SIZE {
            (ioapic_offset, IOAPIC_SIZE)
        } else {
            return false;
        };
        if data.len() != REG_SIZE || offset % SLOT != 0 {
            self.bad_accesses += 1;
        }
        for (k, byte) in data.iter_mut().enumerate() {
            let at = offset + k as u64;
            let in_register = (at % SLOT) as usize;
            *byte = if at >= size || in_register >= REG_SIZE {
                0
            } else {
                let slot = at - at % SLOT;
                let value = if lapic_offset < LAPIC_SIZE {
                    self.lapics.get_mut(cpu).map_or(0, |lapic| lapic.read(slot, now_ns))
                } else {
                    self.ioapic.read(slot)
                };
                value.to_le_bytes()[in_register]
            };
        }
        true
    }

    /// A write by CPU `cpu` at `gpa`: None if `gpa` is not an APIC's, else the CPUs with
    /// something new. CPU `cpu` itself is in the mask when its timer changed (so the machine
    /// re-arms it) or an IPI reached it; after any APIC write the writing CPU should look at
    /// its pending interrupt again anyway (a TPR or an EOI may unblock one).
    pub fn mmio_write(&mut self, cpu: usize, gpa: u64, data: &[u8], now_ns: u64) -> Option<u32> {
        let lapic_offset = gpa.wrapping_sub(LAPIC_BASE);
        let ioapic_offset = gpa.wrapping_sub(IOAPIC_BASE);
        let lapic = lapic_offset < LAPIC_SIZE;
        if !lapic && ioapic_offset >= IOAPIC_SIZE {
            return None;
        }
        let offset = if lapic { lapic_offset } else { ioapic_offset };
        let value = match <[u8; REG_SIZE]>::try_from(data) {
            Ok(bytes) if offset % SLOT == 0 => u32::from_le_bytes(bytes),
            _ => {
                self.bad_accesses += 1;
                return Some(0);
            }
        };
        if !lapic {
            let messages = self.ioapic.write(offset, value);
            self.update_kernel_routes();
            return Some(self.messages(messages));
        }
        let Some(lapic) = self.lapics.get_mut(cpu) else { return Some(0) };
        Some(match lapic.write(offset, value, now_ns) {
            LapicEffect::None => 0,
            LapicEffect::Ipi(ipi) => self.ipi(cpu, ipi),
            LapicEffect::Eoi { vector, level_triggered } => self.eoi(cpu, vector, level_triggered),
            LapicEffect::TimerChanged => bit(cpu),
        })
    }

    /// The earliest time a local APIC timer fires.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        self.lapics.iter().filter_map(Lapic::timer_deadline).min()
    }

    /// Fires the timers that are due; the CPUs with a new interrupt.
    pub fn timers_expired(&mut self, now_ns: u64) -> u32 {
        let cpus = self.lapics.iter_mut().enumerate();
        cpus.fold(
            0,
            |mask, (i, lapic)| if lapic.timer_expired(now_ns) { mask | bit(i) } else { mask },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000_000;
    const SVR: u64 = LAPIC_BASE + 0xf0;
    const ICR_LOW: u64 = LAPIC_BASE + 0x300;
    const ICR_HIGH: u64 = LAPIC_BASE + 0x310;
    const EOI: u64 = LAPIC_BASE + 0xb0;
    const LDR: u64 = LAPIC_BASE + 0xd0;
    const DFR: u64 = LAPIC_BASE + 0xe0;
    const TPR: u64 = LAPIC_BASE + 0x80;

    fn write(apics: &mut Apics, cpu: usize, gpa: u64, value: u32) -> u32 {
        apics.mmio_write(cpu, gpa, &value.to_le_bytes(), T0).expect("an APIC address")
    }

    fn read(apics: &mut Apics, cpu: usize, gpa: u64) -> u32 {
        let mut data = [0; 4];
        assert!(apics.mmio_read(cpu, gpa, &mut data, T0));
        u32::from_le_bytes(data)
    }

    /// `cpus` CPUs, every APIC software-enabled.
    fn machine(cpus: usize) -> Apics {
        let mut apics = Apics::new(cpus);
        for cpu in 0..cpus {
            write(&mut apics, cpu, SVR, 0x1ff);
        }
        apics
    }

    fn send(apics: &mut Apics, from: usize, dest: u8, low: u32) -> u32 {
        write(apics, from, ICR_HIGH, u32::from(dest) << 24);
        write(apics, from, ICR_LOW, low)
    }

    fn pending(apics: &Apics) -> Vec<Option<u8>> {
        apics.lapics.iter().map(Lapic::pending_interrupt).collect()
    }

    #[test]
    fn each_cpu_sees_its_own_lapic() {
        let mut apics = Apics::new(3);
        for cpu in 0..3 {
            assert_eq!(read(&mut apics, cpu, LAPIC_BASE + 0x20), (cpu as u32) << 24);
            assert_eq!(read(&mut apics, cpu, LAPIC_BASE + 0x30), 0x0005_0014);
        }
        assert_eq!(apics.ioapic.id(), 3);
        let mut data = [0; 4];
        assert!(!apics.mmio_read(0, LAPIC_BASE - 4, &mut data, T0));
        assert!(!apics.mmio_read(0, LAPIC_BASE + LAPIC_SIZE, &mut data, T0));
        assert!(apics.mmio_read(0, LAPIC_BASE + LAPIC_SIZE - 0x10, &mut data, T0));
        assert_eq!(apics.mmio_write(0, IOAPIC_BASE + IOAPIC_SIZE, &data, T0), None);
        assert_eq!(apics.mmio_write(0, 0xfee0_1000, &data, T0), None);
        assert_eq!(apics.bad_accesses(), 0);
    }

    #[test]
    fn access_sizes() {
        let mut apics = machine(1);
        write(&mut apics, 0, TPR, 0x1234_5678);
        // Bytes and words of the first four bytes of a slot; the other twelve read 0.
        let mut byte = [0xaa; 1];
        assert!(apics.mmio_read(0, LAPIC_BASE + 0x32, &mut byte, T0));
        assert_eq!(byte, [0x05]);
        let mut wide = [0xaa; 8];
        assert!(apics.mmio_read(0, LAPIC_BASE + 0x80, &mut wide, T0));
        assert_eq!(wide, [0x78, 0, 0, 0, 0, 0, 0, 0]);
        let mut word = [0xaa; 2];
        assert!(apics.mmio_read(0, LAPIC_BASE + 0x36, &mut word, T0));
        assert_eq!(word, [0, 0]);
        assert_eq!(read(&mut apics, 0, LAPIC_BASE + 0x34), 0);
        assert_eq!(apics.bad_accesses(), 4);
        // Only aligned 32-bit writes take effect.
        assert_eq!(apics.mmio_write(0, TPR, &[0x11], T0), Some(0));
        assert_eq!(apics.mmio_write(0, TPR, &[0x11, 0, 0, 0, 0, 0, 0, 0], T0), Some(0));
        assert_eq!(apics.mmio_write(0, TPR + 4, &[0x11, 0, 0, 0], T0), Some(0));
        assert_eq!(read(&mut apics, 0, TPR), 0x78);
        assert_eq!(apics.bad_accesses(), 7);
        // The I/O APIC follows the same rules.
        write(&mut apics, 0, IOAPIC_BASE, 1);
        assert_eq!(read(&mut apics, 0, IOAPIC_BASE + 0x10), 0x0017_0011);
        assert_eq!(apics.mmio_write(0, IOAPIC_BASE, &[0], T0), Some(0));
        assert_eq!(read(&mut apics, 0, IOAPIC_BASE), 1);
        let mut byte = [0; 1];
        assert!(apics.mmio_read(0, IOAPIC_BASE + 0x12, &mut byte, T0));
        assert_eq!(byte, [0x17]);
    }

    #[test]
    fn fixed_ipi_physical_and_broadcast() {
        let mut apics = machine(4);
        assert_eq!(send(&mut apics, 0, 2, 0x4041), 0b0100);
        assert_eq!(pending(&apics), [None, None, Some(0x41), None]);
        assert_eq!(send(&mut apics, 1, 9, 0x4042), 0, "no such APIC");
        assert_eq!(send(&mut apics, 1, 0xff, 0x4043), 0b1111, "physical broadcast");
        assert_eq!(pending(&apics), [Some(0x43), Some(0x43), Some(0x43), Some(0x43)]);
        // A software-disabled APIC drops fixed interrupts.
        write(&mut apics, 3, SVR, 0xff);
        assert_eq!(send(&mut apics, 1, 3, 0x4050), 0);
    }

    #[test]
    fn shorthands() {
        let mut apics = machine(3);
        // The destination field is ignored with a shorthand.
        assert_eq!(send(&mut apics, 1, 0, 0x4_4031), 0b010, "self");
        assert_eq!(send(&mut apics, 1, 0, 0x8_4032), 0b111, "all including self");
        assert_eq!(send(&mut apics, 1, 1, 0xc_4033), 0b101, "all excluding self");
        assert_eq!(pending(&apics), [Some(0x33), Some(0x32), Some(0x33)]);
    }

    #[test]
    fn logical_flat_and_cluster() {
        let mut apics = machine(4);
        for cpu in 0..4 {
            write(&mut apics, cpu, LDR, 1 << (24 + cpu));
        }
        assert_eq!(send(&mut apics, 0, 0b0110, 0x4831), 0b0110);
        assert_eq!(send(&mut apics, 0, 0xff, 0x4832), 0b1111);
        // Cluster model: CPUs 0, 1 in cluster 1, CPUs 2, 3 in cluster 2.
        for (cpu, ldr) in [0x11, 0x12, 0x21, 0x22].into_iter().enumerate() {
            write(&mut apics, cpu, DFR, 0x0fff_ffff);
            write(&mut apics, cpu, LDR, ldr << 24);
        }
        assert_eq!(send(&mut apics, 0, 0x23, 0x4833), 0b1100);
        assert_eq!(send(&mut apics, 0, 0x12, 0x4834), 0b0010);
        assert_eq!(send(&mut apics, 0, 0x31, 0x4835), 0);
        assert_eq!(send(&mut apics, 0, 0xff, 0x4836), 0b1111);
    }

    #[test]
    fn lowest_priority_picks_lowest_tpr() {
        let mut apics = machine(3);
        for cpu in 0..3 {
            write(&mut apics, cpu, LDR, 0x0100_0000);
        }
        assert_eq!(send(&mut apics, 0, 0x01, 0x4931), 0b001, "tie: lowest index");
        write(&mut apics, 0, TPR, 0x30);
        write(&mut apics, 1, TPR, 0x20);
        write(&mut apics, 2, TPR, 0x10);
        assert_eq!(send(&mut apics, 0, 0x01, 0x4932), 0b100);
        write(&mut apics, 2, SVR, 0xff);
        assert_eq!(send(&mut apics, 0, 0x01, 0x4933), 0b010, "disabled APICs last");
        assert_eq!(send(&mut apics, 0, 0xff, 0x0_4134), 0b010, "physical broadcast: one");
    }

    #[test]
    fn nmi_init_sipi() {
        let mut apics = machine(3);
        assert_eq!(send(&mut apics, 0, 1, 0x4200), 0, "SMI: not emulated");
        assert_eq!(send(&mut apics, 0, 1, 0x4400), 0b010);
        assert!(apics.lapics[1].take_nmi() && !apics.lapics[1].take_nmi());
        assert!(!apics.lapics[0].take_nmi());
        // Linux: INIT assert, INIT de-assert (ignored), two SIPIs (the second ignored).
        assert_eq!(send(&mut apics, 0, 2, 0xc500), 0b100);
        assert!(apics.lapics[2].take_init());
        assert_eq!(send(&mut apics, 0, 2, 0x8500), 0, "de-assert");
        assert!(!apics.lapics[2].take_init());
        assert_eq!(send(&mut apics, 0, 2, 0x4698), 0b100);
        assert_eq!(send(&mut apics, 0, 2, 0x4698), 0);
        assert_eq!(apics.lapics[2].take_sipi(), Some(0x98));
        assert_eq!(apics.lapics[2].take_sipi(), None);
        // An AP never INITed waits for its SIPI from power-on; the BSP does not take one.
        assert_eq!(send(&mut apics, 0, 0, 0xc_4610), 0b010, "all but self");
        assert_eq!(apics.lapics[1].take_sipi(), Some(0x10));
        assert_eq!(apics.lapics[0].take_sipi(), None);
        // INIT to all but self.
        assert_eq!(send(&mut apics, 0, 0, 0xc_4500), 0b110);
        assert_eq!(read(&mut apics, 1, SVR), 0xff, "INIT state");
    }

    #[test]
    fn ioapic_edge_to_cpu() {
        let mut apics = machine(2);
        // Pin 2 (IRQ 0) to CPU 1, vector 0x30; pin 4 masked.
        write(&mut apics, 0, IOAPIC_BASE, 0x15);
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x0100_0000);
        write(&mut apics, 0, IOAPIC_BASE, 0x14);
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x30);
        assert_eq!(apics.isa_irq(0), 0b10);
        assert_eq!(pending(&apics), [None, Some(0x30)]);
        assert_eq!(apics.isa_irq(4), 0);
        assert_eq!(apics.isa_irq(2), 0, "the cascade has no pin");
        assert_eq!(apics.isa_irq(200), 0);
        assert_eq!(apics.lapics[1].acknowledge(), Some(0x30));
        assert_eq!(write(&mut apics, 1, EOI, 0), 0, "edge: nothing for the I/O APIC");
    }

    #[test]
    fn ioapic_level_with_eoi() {
        let mut apics = machine(2);
        write(&mut apics, 0, IOAPIC_BASE, 0x10 + 2 * 9);
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x8000 | 0x59);
        assert_eq!(apics.set_pin(9, true), 0b01);
        assert_eq!(apics.set_pin(9, true), 0, "remote IRR");
        assert_eq!(apics.lapics[0].acknowledge(), Some(0x59));
        assert_eq!(read(&mut apics, 0, LAPIC_BASE + 0x180 + 0x20), 1 << 0x19, "TMR");
        // The EOI reaches the I/O APIC; the line is still high: sent again.
        assert_eq!(write(&mut apics, 0, EOI, 0), 0b01);
        assert_eq!(apics.lapics[0].acknowledge(), Some(0x59));
        apics.set_pin(9, false);
        assert_eq!(write(&mut apics, 0, EOI, 0), 0);
        write(&mut apics, 0, IOAPIC_BASE, 0x10 + 2 * 9);
        assert_eq!(read(&mut apics, 0, IOAPIC_BASE + 0x10), 0x8059, "remote IRR clear");
        // Unmasking a pin whose line is high delivers at once.
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x1_8059);
        apics.set_pin(9, true);
        assert_eq!(write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x8059), 0b01);
    }

    /// The I/O APIC's messages by pin, as the kernel is told them.
    type Routes = Vec<Option<(u64, u32)>>;

    /// What a fake kernel APIC was told.
    #[derive(Default)]
    struct Told {
        msis: std::sync::Mutex<Vec<(u64, u32)>>,
        routes: std::sync::Mutex<Vec<Routes>>,
    }

    impl crate::hypervisor::KernelApics for Told {
        fn signal_msi(&self, address: u64, data: u32) -> std::io::Result<u32> {
            self.msis.lock().unwrap().push((address, data));
            Ok(1)
        }
        fn set_ioapic_routes(&self, routes: &[Option<(u64, u32)>]) -> std::io::Result<()> {
            self.routes.lock().unwrap().push(routes.to_vec());
            Ok(())
        }
    }

    #[test]
    fn the_kernel_is_told_each_change_of_the_ioapics_messages() {
        let told = std::sync::Arc::new(Told::default());
        let mut apics = Apics::new(2);
        apics.use_kernel(told.clone());
        let reset = Some((0xfee0_0000, 0));
        assert_eq!(*told.routes.lock().unwrap(), [vec![reset; 24]], "the reset entries, once");
        // Pin 9: level-triggered vector 0x59, logical destination 0x03, masked at first.
        write(&mut apics, 0, IOAPIC_BASE, 0x10 + 2 * 9 + 1);
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x0300_0000);
        write(&mut apics, 0, IOAPIC_BASE, 0x10 + 2 * 9);
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x1_8859);
        let routes = told.routes.lock().unwrap().clone();
        assert_eq!(routes.len(), 3, "each half written");
        assert_eq!(routes[2][9], Some((0xfee0_3004, 0xc059)), "the trigger-mode bit of a level entry");
        assert_eq!(routes[2].iter().filter(|r| **r != reset).count(), 1);
        // Unmasking, a select write, remote IRR: the same messages, nothing told.
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x8859);
        write(&mut apics, 0, IOAPIC_BASE, 0x10 + 2 * 9);
        assert_eq!(apics.set_pin(9, true), 0, "the kernel's APICs wake their own vCPUs");
        assert_eq!(*told.msis.lock().unwrap(), [(0xfee0_3004, 0xc059)]);
        assert_eq!(read(&mut apics, 0, IOAPIC_BASE + 0x10) & 0x4000, 0x4000, "remote IRR");
        assert_eq!(told.routes.lock().unwrap().len(), 3);
        // The EOI clears remote IRR and sends again: the line is still high.
        apics.eoi(0, 0x59, true);
        assert_eq!(told.msis.lock().unwrap().len(), 2);
        // Edge-triggered now: no trigger-mode bit; a StartUp entry has no message.
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x0859);
        assert_eq!(told.routes.lock().unwrap().last().unwrap()[9], Some((0xfee0_3004, 0x0059)));
        write(&mut apics, 0, IOAPIC_BASE + 0x10, 0x0e59);
        assert_eq!(told.routes.lock().unwrap().last().unwrap()[9], None);
        assert_eq!(apics.kernel_errors, 0);
    }

    #[test]
    fn timers() {
        let mut apics = machine(3);
        assert_eq!(apics.next_timer_deadline(), None);
        for (cpu, count) in [(1, 5000), (2, 3000)] {
            write(&mut apics, cpu, LAPIC_BASE + 0x3e0, 0xb); // divide by 1
            write(&mut apics, cpu, LAPIC_BASE + 0x320, 0x40);
            assert_eq!(write(&mut apics, cpu, LAPIC_BASE + 0x380, count), bit(cpu));
        }
        assert_eq!(apics.next_timer_deadline(), Some(T0 + 3000));
        assert_eq!(apics.timers_expired(T0 + 2999), 0);
        assert_eq!(apics.timers_expired(T0 + 3000), 0b100);
        assert_eq!(apics.next_timer_deadline(), Some(T0 + 5000));
        assert_eq!(apics.timers_expired(T0 + 9000), 0b010);
        assert_eq!(apics.next_timer_deadline(), None);
        assert_eq!(pending(&apics), [None, Some(0x40), Some(0x40)]);
    }

    #[test]
    fn random_mmio_never_panics() {
        let mut apics = Apics::new(4);
        let mut seed: u64 = 0x0123_4567_89ab_cdef;
        let mut now = 0u64;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            now = now.saturating_add(seed % 3000);
            let cpu = (seed >> 60) as usize % 5;
            let base = if seed & 1 == 0 { LAPIC_BASE } else { IOAPIC_BASE };
            let gpa = base + (seed >> 8) % 0x1008;
            let len = [1, 2, 4, 4, 4, 8][(seed >> 20) as usize % 6];
            let data = (seed >> 24).to_le_bytes();
            if seed & 2 == 0 {
                apics.mmio_write(cpu, gpa, &data[..len], now);
            } else {
                apics.mmio_read(cpu, gpa, &mut [0; 8][..len], now);
            }
            apics.isa_irq((seed >> 40) as u8 % 20);
            apics.timers_expired(now);
            for lapic in &mut apics.lapics {
                if let Some(vector) = lapic.acknowledge() {
                    let _ = vector;
                }
            }
        }
    }
}
