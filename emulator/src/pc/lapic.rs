//! One CPU's local APIC: the state machine is shared with the kernel module, which
//! includes the same file by path (`abi/src/lapic.rs`); see its documentation.

pub use yakvm_abi::lapic::*;

/// The name of `abi::ApicStats::by_register`'s slot `slot` (`--stats`): the register at
/// xAPIC offset slot × 16 (x2APIC MSR 0x800 + slot), or IA32_TSC_DEADLINE.
pub fn register_name(slot: usize) -> String {
    let named = match slot {
        yakvm_abi::APIC_STATS_TSC_DEADLINE => "TSC_DEADLINE",
        0x02 => "ID",
        0x03 => "version",
        0x08 => "TPR",
        0x09 => "APR",
        0x0a => "PPR",
        0x0b => "EOI",
        0x0c => "RRD",
        0x0d => "LDR",
        0x0e => "DFR",
        0x0f => "SVR",
        0x10..=0x17 => return format!("ISR{}", slot - 0x10),
        0x18..=0x1f => return format!("TMR{}", slot - 0x18),
        0x20..=0x27 => return format!("IRR{}", slot - 0x20),
        0x28 => "ESR",
        0x2f => "LVT_CMCI",
        0x30 => "ICR",
        0x31 => "ICR_high",
        0x32 => "LVT_timer",
        0x33 => "LVT_thermal",
        0x34 => "LVT_perf",
        0x35 => "LVT_LINT0",
        0x36 => "LVT_LINT1",
        0x37 => "LVT_error",
        0x38 => "timer_initial",
        0x39 => "timer_current",
        0x3e => "timer_divide",
        0x3f => "SELF_IPI",
        _ => return format!("reserved_{:#05x}", slot * 16),
    };
    named.to_string()
}

/// `--stats`' line of registers: those accessed, most accessed first ("ID 200000, EOI 12").
pub fn registers_line(by_register: &[u64]) -> String {
    let mut used: Vec<(usize, u64)> = by_register.iter().copied().enumerate().filter(|&(_, n)| n > 0).collect();
    used.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    used.iter().map(|&(slot, n)| format!("{} {n}", register_name(slot))).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_names_follow_the_page() {
        assert_eq!(register_name(0x020 / 16), "ID");
        assert_eq!(register_name(0x0b0 / 16), "EOI");
        assert_eq!(register_name(0x110 / 16), "ISR1");
        assert_eq!(register_name(0x270 / 16), "IRR7");
        assert_eq!(register_name(0x390 / 16), "timer_current");
        assert_eq!(register_name(0x83f - 0x800), "SELF_IPI");
        assert_eq!(register_name(yakvm_abi::APIC_STATS_TSC_DEADLINE), "TSC_DEADLINE");
        assert_eq!(register_name(0x040 / 16), "reserved_0x040");
    }

    #[test]
    fn registers_line_most_accessed_first() {
        let mut by = [0u64; yakvm_abi::APIC_STATS_REGISTERS];
        by[0x0b] = 12;
        by[0x02] = 200_000;
        by[0x08] = 12;
        assert_eq!(registers_line(&by), "ID 200000, TPR 12, EOI 12");
        assert_eq!(registers_line(&[0; 4]), "");
    }
}
