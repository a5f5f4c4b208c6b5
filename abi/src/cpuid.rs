// SPDX-License-Identifier: GPL-2.0
//! CPUID as the guest sees it: the host's answers filtered down to what yakvm really
//! provides (AMD vendor, no SVM, no XSAVE/AVX since XCR0 is not virtualized, no
//! MONITOR/MWAIT, which are intercepted; the APIC only for a VM that has local APICs in
//! userspace), plus the hypervisor bit and our own brand string. Leaves not
//! listed read as zeros.
//!
//! Shared like `abi.rs`: the module answers CPUID exits with it, and the emulator gives the
//! same table to KVM (`--hypervisor kvm`), so a guest sees one CPU on both.

#![allow(dead_code)]

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The leaves (and subleaf 0 of leaf 7) that `guest_cpuid` answers with something else
/// than zeros, for a hypervisor that wants the table up front.
pub const LEAVES: [u32; 10] = [0, 1, 7, 0x8000_0000, 0x8000_0001, 0x8000_0002, 0x8000_0003, 0x8000_0004, 0x8000_0007, 0x8000_0008];

const fn bit(n: u32) -> u32 {
    1 << n
}

/// CPUID.1:ECX bits the guest may see: SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, RDRAND; plus HYPERVISOR (31).
const LEAF1_ECX: u32 = bit(0) | bit(1) | bit(9) | bit(13) | bit(19) | bit(20) | bit(22)
    | bit(23) | bit(25) | bit(30);
/// CPUID.1:EDX: FPU, VME, DE, PSE, TSC, MSR, PAE, CX8, SEP, PGE, CMOV, PAT, PSE36, CLFSH,
/// MMX, FXSR, SSE, SSE2 (no MTRR, MCE/MCA, ACPI, HTT; APIC only with `apic`).
const LEAF1_EDX: u32 = bit(0) | bit(1) | bit(2) | bit(3) | bit(4) | bit(5) | bit(6) | bit(8)
    | bit(11) | bit(13) | bit(15) | bit(16) | bit(17) | bit(19) | bit(23) | bit(24) | bit(25)
    | bit(26);
/// CPUID.7.0:EBX: FSGSBASE, BMI1, BMI2, ERMS, ADX, SMAP, CLFLUSHOPT, SHA. SMAP: CR4.SMAP
/// passes the CR4 checks when offered (kmod/svm/vcpu/cr.rs), STAC/CLAC and the checks
/// themselves are the CPU's (QEMU's EPYC model has them).
const LEAF7_EBX: u32 = bit(0) | bit(3) | bit(8) | bit(9) | bit(19) | bit(20) | bit(23) | bit(29);
/// CPUID.80000001:ECX: LAHF/SAHF, ABM (LZCNT), SSE4A, MISALIGNSSE, 3DNOWPREFETCH.
const EXT1_ECX: u32 = bit(0) | bit(5) | bit(6) | bit(7) | bit(8);
/// CPUID.80000001:EDX: SYSCALL, NX, MMXEXT, FFXSR, PDPE1GB, RDTSCP, LM, and the legacy
/// bits mirrored from leaf 1. RDTSCP: the module loads the guest's TSC_AUX around VMRUN
/// (KVM gives it to the same guest). Not RDPID (CPUID.7.0:ECX[22]): QEMU's EPYC model
/// has none.
const EXT1_EDX: u32 = (LEAF1_EDX & 0x0183_f3ff) | bit(11) | bit(20) | bit(22) | bit(25)
    | bit(26) | bit(27) | bit(29);
/// CPUID.1:EDX.APIC and its mirror CPUID.80000001:EDX.APIC: an on-chip local APIC.
const APIC: u32 = bit(9);

/// "AuthenticAMD" in EBX, EDX, ECX (leaves 0 and 0x8000_0000).
const AUTHENTIC_AMD: CpuidResult = CpuidResult { eax: 0, ebx: 0x6874_7541, ecx: 0x444d_4163, edx: 0x6974_6e65 };

const BRAND: &[u8; 48] = b"yakvm virtual CPU (AMD-V guest)\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn words(bytes: &[u8]) -> [u32; 4] {
    let w = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// The guest's CPUID for `leaf`/`subleaf`, from the host's answer `host` to the same
/// question; `vcpu_id` becomes the initial APIC id; `apic`: the VM has local APICs
/// (emulated in userspace, whatever the host has).
pub fn guest_cpuid(leaf: u32, subleaf: u32, vcpu_id: u32, apic: bool, host: CpuidResult) -> CpuidResult {
    let zero = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 };
    let apic = if apic { APIC } else { 0 };
    match leaf {
        0 => CpuidResult { eax: host.eax.min(7), ..AUTHENTIC_AMD },
        1 => CpuidResult {
            eax: host.eax,
            // Brand index 0, CLFLUSH size from the host, one logical CPU, APIC id = vCPU.
            ebx: (host.ebx & 0x0000_ff00) | (1 << 16) | (vcpu_id << 24),
            ecx: host.ecx & LEAF1_ECX | bit(31),
            edx: host.edx & LEAF1_EDX | apic,
        },
        7 if subleaf == 0 => CpuidResult { eax: 0, ebx: host.ebx & LEAF7_EBX, ecx: 0, edx: 0 },
        0x8000_0000 => CpuidResult { eax: host.eax.min(0x8000_0008), ..AUTHENTIC_AMD },
        0x8000_0001 => CpuidResult {
            eax: host.eax,
            ebx: 0,
            ecx: host.ecx & EXT1_ECX,
            edx: host.edx & EXT1_EDX | apic,
        },
        0x8000_0002..=0x8000_0004 => {
            let i = (leaf - 0x8000_0002) as usize * 16;
            let [eax, ebx, ecx, edx] = words(&BRAND[i..i + 16]);
            CpuidResult { eax, ebx, ecx, edx }
        }
        // The invariant TSC, as the host has it: every vCPU's TSC is the host's plus one
        // offset per VM, so it runs at a constant rate exactly when the host's does (Linux
        // on AMD trusts the TSCs of several CPUs to agree only then).
        0x8000_0007 => CpuidResult { edx: host.edx & bit(8), ..zero },
        // Physical and virtual address sizes; nothing else.
        0x8000_0008 => CpuidResult { eax: host.eax & 0xffff, ..zero },
        _ => zero,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_bit_only_with_apic() {
        let host = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: u32::MAX };
        for leaf in [1, 0x8000_0001] {
            assert_eq!(guest_cpuid(leaf, 0, 3, false, host).edx & APIC, 0);
            assert_eq!(guest_cpuid(leaf, 0, 3, true, host).edx & APIC, APIC);
        }
        assert_eq!(guest_cpuid(1, 0, 3, true, host).ebx >> 24, 3);
        // No x2APIC (CPUID.1:ECX[21]) either way.
        let all = CpuidResult { ecx: u32::MAX, ..host };
        assert_eq!(guest_cpuid(1, 0, 0, true, all).ecx & bit(21), 0);
    }
}
