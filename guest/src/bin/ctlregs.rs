//! Control registers and MSRs the guest must not be able to load, each checked to raise
//! #GP as on a CPU of the guest's CPUID (and not to end the run: under QEMU's software SVM
//! an unchecked one makes the next VMRUN fail), then legal writes, checked to take
//! effect: CR4 reserved and unoffered bits (LA57, PKE, OSXSAVE without XSAVE, PCIDE
//! without PCID, SMEP; SMAP is offered and sets), CR0 reserved and invalid combinations, CR3 reserved bits, EFER.LME
//! while paging; CLTS, LMSW; DR4 (#UD with CR4.DE), DR7's upper half; IA32_MISC_ENABLE
//! (0x1a0) as KVM emulates it.
#![no_std]
#![no_main]

use yakvm_guests::trap::{self, GP};
use yakvm_guests::{cpuid, rdmsr, wrmsr, Checks};

yakvm_guests::entry!(main);

const CR0_TS: u64 = 1 << 3;
const CR0_WP: u64 = 1 << 16;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_PGE: u64 = 1 << 7;
const CR4_LA57: u64 = 1 << 12;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;
const EFER: u32 = 0xc000_0080;
const EFER_LME: u64 = 1 << 8;
const MISC_ENABLE: u32 = 0x1a0;
const MISC_BTS_UNAVAIL: u64 = 1 << 11;
const MISC_PEBS_UNAVAIL: u64 = 1 << 12;

fn cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr0", out(reg) v, options(nostack)) };
    v
}

fn cr3() -> u64 {
    let v: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nostack)) };
    v
}

fn cr4() -> u64 {
    let v: u64;
    // SAFETY: as above.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) v, options(nostack)) };
    v
}

// Each write is `mov crN, rax` (0F 22 /r, 3 bytes): a #GP skips it.

/// MOV CR0; the vector it raised, if any.
fn write_cr0(v: u64) -> Option<u64> {
    // SAFETY: the guest changes its own CR0; the values tried keep PE and PG (or fault).
    trap::expect_fault(3, || unsafe { core::arch::asm!("mov cr0, rax", in("rax") v, options(nostack)) })
}

fn write_cr3(v: u64) -> Option<u64> {
    // SAFETY: the values tried are the current CR3 or fault.
    trap::expect_fault(3, || unsafe { core::arch::asm!("mov cr3, rax", in("rax") v, options(nostack)) })
}

fn write_cr4(v: u64) -> Option<u64> {
    // SAFETY: the values tried keep PAE (long mode) or fault.
    trap::expect_fault(3, || unsafe { core::arch::asm!("mov cr4, rax", in("rax") v, options(nostack)) })
}

fn main() {
    trap::install();
    let mut t = Checks::new();
    let (c0, c3, c4) = (cr0(), cr3(), cr4());
    let [_, _, ecx1, _] = cpuid(1, 0);
    let [_, ebx7, ecx7, _] = cpuid(7, 0);

    // CR4: reserved bits, and bits for features the guest's CPUID does not offer.
    t.check("CR4 = 0xffffffff raises #GP", write_cr4(0xffff_ffff) == Some(GP));
    t.check("CR4 bit 63 raises #GP", write_cr4(c4 | 1 << 63) == Some(GP));
    t.check("CR4.LA57 raises #GP", ecx7 & (1 << 16) == 0 && write_cr4(c4 | CR4_LA57) == Some(GP));
    t.check("CR4.PKE without PKU raises #GP", ecx7 & (1 << 3) == 0 && write_cr4(c4 | CR4_PKE) == Some(GP));
    t.check("CR4.OSXSAVE without XSAVE raises #GP", ecx1 & (1 << 26) == 0 && write_cr4(c4 | CR4_OSXSAVE) == Some(GP));
    t.check("CR4.PCIDE without PCID raises #GP", ecx1 & (1 << 17) == 0 && write_cr4(c4 | CR4_PCIDE) == Some(GP));
    t.check("CR4.SMEP without SMEP raises #GP", ebx7 & (1 << 7) == 0 && write_cr4(c4 | CR4_SMEP) == Some(GP));
    t.check("CR4.PAE cleared in long mode raises #GP", write_cr4(c4 & !CR4_PAE) == Some(GP));
    t.check("CR4 unchanged by the refused writes", cr4() == c4);
    // A legal write takes effect (PGE, which CPUID offers), and is undone.
    let pge = write_cr4(c4 ^ CR4_PGE).is_none() && cr4() == c4 ^ CR4_PGE;
    t.check("CR4.PGE toggles", pge && write_cr4(c4).is_none() && cr4() == c4);
    // SMAP is offered (our pages are supervisor pages: nothing here faults with it on).
    let smap = ebx7 & (1 << 20) != 0 && write_cr4(c4 | CR4_SMAP).is_none() && cr4() == c4 | CR4_SMAP;
    t.check("CR4.SMAP sets and clears (SMAP offered)", smap && write_cr4(c4).is_none() && cr4() == c4);

    // CR0: the upper half, NW without CD, paging off in 64-bit code.
    t.check("CR0 bit 32 raises #GP", write_cr0(c0 | 1 << 32) == Some(GP));
    t.check("CR0.NW without CD raises #GP", write_cr0((c0 & !CR0_CD) | CR0_NW) == Some(GP));
    t.check("CR0.PG cleared in 64-bit mode raises #GP", write_cr0(c0 & !CR0_PG) == Some(GP));
    t.check("CR0 unchanged by the refused writes", cr0() == c0);
    let wp = write_cr0(c0 ^ CR0_WP).is_none() && cr0() == c0 ^ CR0_WP;
    t.check("CR0.WP toggles", wp && write_cr0(c0).is_none() && cr0() == c0);
    // TS: set by MOV, cleared by CLTS; set by LMSW (which cannot clear PE).
    let set = write_cr0(c0 | CR0_TS).is_none() && cr0() == c0 | CR0_TS;
    // SAFETY: CLTS only clears CR0.TS.
    unsafe { core::arch::asm!("clts", options(nostack)) };
    t.check("CR0.TS set by MOV, cleared by CLTS", set && cr0() == c0 & !CR0_TS);
    // SAFETY: LMSW loads CR0's low four bits: PE stays (LMSW cannot clear it), MP and EM
    // as they are, TS set.
    unsafe { core::arch::asm!("lmsw ax", in("rax") (c0 & 0xe) | CR0_TS, options(nostack)) };
    let lmsw = cr0() == c0 | CR0_TS;
    // SAFETY: as above.
    unsafe { core::arch::asm!("clts", options(nostack)) };
    t.check("LMSW sets CR0.TS and keeps PE", lmsw && cr0() == c0 & !CR0_TS);

    // CR3: reserved bits above the physical address width; a reload works.
    t.check("CR3 bit 62 raises #GP", write_cr3(c3 | 1 << 62) == Some(GP));
    t.check("CR3 reload", write_cr3(c3).is_none() && cr3() == c3);

    // EFER.LME cannot change while paging is on.
    let efer = rdmsr(EFER).unwrap_or(0);
    t.check("EFER.LME cleared while paging raises #GP", !wrmsr(EFER, efer & !EFER_LME) && rdmsr(EFER) == Some(efer));

    // Debug registers: DR4 is DR6 with CR4.DE clear and raises #UD with it set; the upper
    // half of DR7 raises #GP.
    const CR4_DE: u64 = 1 << 3;
    let (mut dr4, mut dr6) = (0u64, 1u64);
    // SAFETY: MOV from DR4/DR6 is intercepted and emulated; it only writes the registers.
    let alias = trap::expect_fault(3, || unsafe {
        core::arch::asm!("mov rax, dr4", "mov rcx, dr6", out("rax") dr4, out("rcx") dr6, options(nostack))
    });
    t.check("DR4 reads DR6 with CR4.DE clear", alias.is_none() && dr4 == dr6);
    let de = write_cr4(c4 | CR4_DE).is_none();
    // SAFETY: as above; it faults (3 bytes: 0F 21 E0).
    let ud = trap::expect_fault(3, || unsafe { core::arch::asm!("mov rax, dr4", out("rax") _, options(nostack)) });
    t.check("DR4 raises #UD with CR4.DE set", de && ud == Some(trap::UD) && write_cr4(c4).is_none());
    // SAFETY: MOV to DR7 is emulated; the value faults (3 bytes: 0F 23 F8).
    let gp = trap::expect_fault(3, || unsafe { core::arch::asm!("mov dr7, rax", in("rax") 1u64 << 32 | 0x400, options(nostack)) });
    t.check("DR7 bit 32 raises #GP", gp == Some(GP));

    // IA32_MISC_ENABLE: readable, BTS and PEBS unavailable and read-only, the rest kept.
    let misc = rdmsr(MISC_ENABLE);
    let ro = MISC_BTS_UNAVAIL | MISC_PEBS_UNAVAIL;
    t.check("MISC_ENABLE reads, BTS and PEBS unavailable", misc.is_some_and(|m| m & ro == ro));
    let misc = misc.unwrap_or(0);
    let fast_strings = misc ^ 1;
    t.check("MISC_ENABLE keeps a write", wrmsr(MISC_ENABLE, fast_strings) && rdmsr(MISC_ENABLE) == Some(fast_strings));
    t.check("MISC_ENABLE read-only bits raise #GP", !wrmsr(MISC_ENABLE, misc & !MISC_BTS_UNAVAIL));
    t.finish()
}
