//! Escape attempts, each checked to have failed: writes to the host's SVM and platform
//! MSRs, EFER games, and reads and writes of guest-physical memory that is not RAM (just
//! past RAM, at 4 GiB, at the top of the physical address space) through mappings the
//! guest builds itself. Run with the default --mem 16M.
#![no_std]
#![no_main]

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use yakvm_guests::{cpuid, rdmsr, trap, wrmsr, Checks};

yakvm_guests::entry!(main);

const RAM: u64 = 16 << 20;
const GIB: u64 = 1 << 30;
const EFER: u32 = 0xc000_0080;
const EFER_SVME: u64 = 1 << 12;

/// MSRs that belong to the host or the platform: every write and read must raise #GP.
/// (SYSCFG, HWCR and TSC_AUX are the guest's own copies, SPEC_CTRL and PRED_CMD #GP: checked
/// below and in `cpu`.)
const HOST_MSRS: &[(u32, &str)] = &[
    (0xc001_0117, "VM_HSAVE_PA"),
    (0xc001_0114, "VM_CR"),
    (0xc001_001a, "TOP_MEM"),
    (0xc001_001d, "TOP_MEM2"),
    (0xc001_0020, "PATCH_LOADER"),
    (0xc001_0111, "SMM_BASE"),
    (0xc001_0113, "SMM_MASK"),
    (0x0000_001b, "APIC_BASE"),
    (0x0000_02ff, "MTRR_DEF_TYPE"),
    (0x0000_01d9, "DEBUGCTL"),
];

const SYSCFG: u32 = 0xc001_0010;
const HWCR: u32 = 0xc001_0015;
const SPEC_CTRL: u32 = 0x48;
const TSC_AUX: u32 = 0xc000_0103;

#[repr(C, align(4096))]
struct Pdpt([u64; 512]);
static mut HIGH: Pdpt = Pdpt([0; 512]);

/// Maps 1 GiB guest-physical pages at virtual 512 GiB + i GiB (PML4 entry 1), and returns
/// the virtual address of `gpa` through them.
fn map_high(pages: &[u64]) {
    // SAFETY: single vCPU; the guest edits its own page tables (PML4 at CR3, in RAM),
    // then reloads CR3 to drop stale translations.
    unsafe {
        let pdpt = &mut *addr_of_mut!(HIGH);
        for (i, &gpa) in pages.iter().enumerate() {
            pdpt.0[i] = (gpa & !(GIB - 1)) | 0x83; // present, writable, 1 GiB page
        }
        let cr3: u64;
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nostack));
        let pml4 = (cr3 & !0xfff) as *mut u64;
        write_volatile(pml4.add(1), pdpt as *const Pdpt as u64 | 0x3);
        core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack));
    }
}

fn virt(slot: u64, gpa: u64) -> *mut u64 {
    ((512 * GIB) + slot * GIB + (gpa & (GIB - 1))) as *mut u64
}

/// Reading, writing, reading again at a non-RAM address gives all ones both times.
fn probe(p: *mut u64) -> bool {
    // SAFETY: the address is mapped (identity map or `map_high`); it is not RAM, so every
    // access exits to the emulator, which has nothing there.
    unsafe {
        let before = read_volatile(p);
        write_volatile(p, 0x1234_5678_9abc_def0);
        before == u64::MAX && read_volatile(p) == u64::MAX
    }
}

fn main() {
    trap::install();
    let mut t = Checks::new();
    for &(msr, name) in HOST_MSRS {
        let ok = !wrmsr(msr, 0) && !wrmsr(msr, u64::MAX) && rdmsr(msr).is_none();
        t.check(name, ok);
    }
    // The emulated platform MSRs: a write lands in the guest's copy, or is refused.
    t.check("SYSCFG write is dropped", wrmsr(SYSCFG, u64::MAX) && rdmsr(SYSCFG) == Some(0));
    t.check("HWCR reserved bits raise #GP", !wrmsr(HWCR, u64::MAX) && !wrmsr(HWCR, 1));
    t.check("SPEC_CTRL reserved bits raise #GP", !wrmsr(SPEC_CTRL, u64::MAX));
    t.check("TSC_AUX upper half raises #GP", !wrmsr(TSC_AUX, 1 << 32));
    let efer = rdmsr(EFER).unwrap_or(0);
    t.check("EFER write without SVME keeps the guest running", wrmsr(EFER, efer & !EFER_SVME) && rdmsr(EFER) == Some(efer));
    t.check("EFER.SVME set raises #GP", !wrmsr(EFER, efer | EFER_SVME));
    t.check("EFER.LMSLE raises #GP", !wrmsr(EFER, efer | (1 << 13)));
    t.check("EFER reserved bit raises #GP", !wrmsr(EFER, efer | (1 << 20)));

    // Debug registers are the vCPU's own: what is written reads back, and a breakpoint
    // armed at linear 0 (where every guest starts) must not reach the hardware (the test
    // runs other guests after this one).
    let (mut d0, mut d7, mut d3): (u64, u64, u64);
    // SAFETY: MOV DR is intercepted and emulated; no breakpoint ever fires.
    unsafe {
        core::arch::asm!(
            "xor eax, eax", "mov dr0, rax",
            "mov r9, 0x401", "mov dr7, r9",      // L0: execute breakpoint at DR0 = 0
            "mov r10, 0x12345678", "mov dr3, r10",
            "mov {d0}, dr0", "mov {d7}, dr7", "mov {d3}, dr3",
            d0 = out(reg) d0, d7 = out(reg) d7, d3 = out(reg) d3,
            out("rax") _, out("r9") _, out("r10") _, options(nostack),
        );
    }
    t.check("debug registers are virtual", d0 == 0 && d7 == 0x401 && d3 == 0x1234_5678);

    // RAM works, the byte after it is not RAM. (RAM - 8 KiB is in the boot area, which a
    // guest may use once it runs; the emulator's GDT is in its last page, left alone.)
    let last = (RAM - 0x2000) as *mut u64;
    // SAFETY: inside RAM, mapped; nothing of ours lives there.
    unsafe { write_volatile(last, 0x55aa) };
    // SAFETY: as above.
    t.check("RAM holds what is written", unsafe { read_volatile(last) } == 0x55aa);
    t.check("just past RAM reads all ones", probe(RAM as *mut u64));
    t.check("past RAM + 1 MiB reads all ones", probe((RAM + (1 << 20)) as *mut u64));

    let phys_bits = cpuid(0x8000_0008, 0)[0] & 0xff;
    let top = (1u64 << phys_bits) - 8;
    map_high(&[4 * GIB, top]);
    t.check("4 GiB reads all ones", probe(virt(0, 4 * GIB)));
    t.check("top of the physical address space reads all ones", probe(virt(1, top)));
    t.finish()
}
