//! CPUID, MSRs and the SVM instructions as a guest sees them under yakvm.
#![no_std]
#![no_main]

use yakvm_guests::{cpuid, rdmsr, trap, wrmsr, Checks};

yakvm_guests::entry!(main);

const EFER: u32 = 0xc000_0080;
const LSTAR: u32 = 0xc000_0082;
const VM_CR: u32 = 0xc001_0114;
const VM_HSAVE_PA: u32 = 0xc001_0117;
const EFER_SVME: u64 = 1 << 12;
const SPEC_CTRL: u32 = 0x48;
const PRED_CMD: u32 = 0x49;
const VIRT_SPEC_CTRL: u32 = 0xc001_011f;
const PATCH_LEVEL: u32 = 0x8b;
const MCG_CAP: u32 = 0x179;
const MCG_STATUS: u32 = 0x17a;
const MC0_CTL: u32 = 0x400;
const MC0_STATUS: u32 = 0x401;
const PERF_CTL0: u32 = 0xc001_0000;
const PERF_CTR0: u32 = 0xc001_0004;
const F15H_PERF_CTR5: u32 = 0xc001_020b;
const HWCR: u32 = 0xc001_0015;
const TSC_AUX: u32 = 0xc000_0103;
const EFER_LMSLE: u64 = 1 << 13;
const RFLAGS_RF: u64 = 1 << 16;

/// Runs one 3-byte SVM instruction and says whether it raised #UD.
macro_rules! ud3 {
    ($insn:literal) => {
        // SAFETY: the instruction is intercepted by the hypervisor, which injects #UD;
        // our handler skips its 3 bytes.
        trap::expect_fault(3, || unsafe { core::arch::asm!($insn, in("rax") 0u64, in("ecx") 0u32, options(nostack)) })
            == Some(trap::UD)
    };
}

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only writes EDX:EAX.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// RDTSCP: (TSC, TSC_AUX).
fn rdtscp() -> (u64, u32) {
    let (lo, hi, aux): (u32, u32, u32);
    // SAFETY: RDTSCP (offered by CPUID, checked before) only writes EDX:EAX and ECX.
    unsafe { core::arch::asm!("rdtscp", out("eax") lo, out("edx") hi, out("ecx") aux, options(nostack, nomem)) };
    ((u64::from(hi) << 32) | u64::from(lo), aux)
}

fn main() {
    trap::install();
    let mut t = Checks::new();

    let v = cpuid(0, 0);
    t.check("cpuid vendor is AuthenticAMD", [v[1], v[3], v[2]] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]);
    t.check("cpuid hypervisor bit", cpuid(1, 0)[2] & (1 << 31) != 0);
    t.check("cpuid hides SVM", cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0);
    t.check("cpuid hides XSAVE", cpuid(1, 0)[2] & (1 << 26) == 0);
    let brand = cpuid(0x8000_0002, 0);
    t.check("cpuid brand string", brand[0].to_le_bytes() == *b"yakv");

    let efer = rdmsr(EFER);
    t.check("EFER reads LME|LMA, without SVME", efer.is_some_and(|e| e & 0x500 == 0x500 && e & EFER_SVME == 0));
    let efer = efer.unwrap_or(0);
    t.check("EFER.SVME write raises #GP", !wrmsr(EFER, efer | EFER_SVME));
    t.check("EFER.LMSLE write raises #GP", !wrmsr(EFER, efer | EFER_LMSLE));
    t.check("EFER.NXE write works", wrmsr(EFER, efer | (1 << 11)) && rdmsr(EFER) == Some(efer | (1 << 11)));
    t.check("LSTAR write reads back", wrmsr(LSTAR, 0xffff_8000_1234_5678) && rdmsr(LSTAR) == Some(0xffff_8000_1234_5678));
    t.check("non-canonical LSTAR raises #GP", !wrmsr(LSTAR, 0x8000_0000_0000_0000));
    t.check("VM_HSAVE_PA write raises #GP", !wrmsr(VM_HSAVE_PA, 0x1000));
    t.check("VM_HSAVE_PA read raises #GP", rdmsr(VM_HSAVE_PA).is_none());
    t.check("VM_CR write raises #GP", !wrmsr(VM_CR, 0));

    // The MSRs an OS touches at boot, answered as KVM answers an AMD guest.
    t.check("PMU event selects and counters read 0, ignore writes",
        wrmsr(PERF_CTL0, 0x53_0076) && rdmsr(PERF_CTL0) == Some(0) && rdmsr(PERF_CTR0) == Some(0)
            && wrmsr(F15H_PERF_CTR5, 5) && rdmsr(F15H_PERF_CTR5) == Some(0));
    t.check("HWCR reads TscFreqSel, keeps McStatusWrEn",
        rdmsr(HWCR) == Some(1 << 24) && wrmsr(HWCR, (1 << 24) | (1 << 18)) && rdmsr(HWCR) == Some((1 << 24) | (1 << 18)));
    t.check("patch level reads, writes ignored", rdmsr(PATCH_LEVEL).is_some_and(|v| v != 0) && wrmsr(PATCH_LEVEL, 0));
    t.check("MCG_CAP has 4 banks, MCG_STATUS keeps its value",
        rdmsr(MCG_CAP) == Some(4) && wrmsr(MCG_STATUS, 0) && rdmsr(MCG_STATUS) == Some(0));
    t.check("MC0_CTL all ones or nothing", rdmsr(MC0_CTL) == Some(u64::MAX) && !wrmsr(MC0_CTL, 1) && wrmsr(MC0_CTL, 0));
    t.check("MC0_STATUS takes 0 always, others with McStatusWrEn",
        wrmsr(MC0_STATUS, 0) && wrmsr(MC0_STATUS, 7) && wrmsr(HWCR, 1 << 24) && !wrmsr(MC0_STATUS, 7));
    t.check("no bank 4", rdmsr(MC0_CTL + 16).is_none());
    t.check("TSC_AUX reads back", wrmsr(TSC_AUX, 3) && rdmsr(TSC_AUX) == Some(3));
    t.check("TSC_AUX bits 63:32 raise #GP", !wrmsr(TSC_AUX, 1 << 32));
    // RDTSCP is offered and returns the guest's TSC_AUX (not the host's: Linux keeps its
    // CPU number there) with the guest's TSC, after an exit (the WRMSR) as well.
    t.check("cpuid offers RDTSCP", cpuid(0x8000_0001, 0)[3] & (1 << 27) != 0);
    let before = rdtsc();
    let first = wrmsr(TSC_AUX, 0x5a5a) && rdtscp().1 == 0x5a5a;
    let (tsc, aux) = rdtscp();
    t.check("RDTSCP returns TSC_AUX and the guest's TSC", first && aux == 0x5a5a && tsc > before && tsc - before < 1 << 40);
    t.check("SPEC_CTRL, PRED_CMD, VIRT_SPEC_CTRL raise #GP (CPUID offers none of them)",
        rdmsr(SPEC_CTRL).is_none() && !wrmsr(SPEC_CTRL, 0) && !wrmsr(PRED_CMD, 1) && rdmsr(VIRT_SPEC_CTRL).is_none());
    t.check("an unknown MSR raises #GP", rdmsr(0xc001_1234).is_none() && !wrmsr(0x1234_5678, 0));

    t.check("VMRUN raises #UD", ud3!("vmrun rax"));
    t.check("VMLOAD raises #UD", ud3!("vmload rax"));
    t.check("VMSAVE raises #UD", ud3!("vmsave rax"));
    t.check("CLGI raises #UD", ud3!("clgi"));
    t.check("STGI raises #UD", ud3!("stgi"));
    t.check("SKINIT raises #UD", ud3!("skinit eax"));
    t.check("INVLPGA raises #UD", ud3!("invlpga rax, ecx"));
    // A fault pushes RFLAGS with RF set, whether the module raises it or the CPU does
    // (yakvm intercepts #UD: QEMU's software CPU leaves RF out).
    t.check("VMRUN's #UD pushes RF", ud3!("vmrun rax") && trap::fault_rflags() & RFLAGS_RF != 0);
    // SAFETY: UD2 raises #UD; our handler skips its 2 bytes.
    let ud2 = trap::expect_fault(2, || unsafe { core::arch::asm!("ud2", options(nostack)) });
    t.check("UD2 raises #UD with RF pushed", ud2 == Some(trap::UD) && trap::fault_rflags() & RFLAGS_RF != 0);
    t.finish()
}
