//! Starting the CPUs: the BSP's `boot` (console, clock, MP table, tables, local APIC),
//! then each AP by INIT, SIPI, SIPI into a real-mode trampoline that goes to long mode.

use super::clock::{clock, delay_us, start_clock, us_since, wait_until};
use super::console::console;
use super::lapic::*;
use super::mptable::{mp_table, MpInfo};
use super::tables::{build_tables, load_tables};
use super::{MAX_CPUS, STATUS_LAYOUT, STATUS_NO_MP_TABLE};
use crate::{fail, pc, say};
use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};

/// The trampoline's page (SIPI vector 0x70) and a page that only halts (vector 0x71).
pub const TRAMPOLINE: u64 = 0x7_0000;
pub const DEAD_PAGE: u64 = 0x7_1000;

/// The APs' own stacks (the BSP keeps the emulator's).
#[repr(C, align(16))]
struct Stack([u8; 16384]);
static mut AP_STACKS: [Stack; MAX_CPUS] = [const { Stack([0; 16384]) }; MAX_CPUS];

/// What the trampoline reads, at `yakvm_smp_tr_data` in its copy: written by the BSP
/// before each AP's INIT.
#[repr(C)]
struct TrampolineData {
    /// CR0, CR3 and CR4 as the BSP has them (CR3 below 4 GiB).
    cr0: u64,
    cr3: u64,
    cr4: u64,
    /// The AP's stack top, its entry point and its argument (its CPU number).
    stack: u64,
    entry: u64,
    arg: u64,
    mxcsr: u32,
    _pad: u32,
}

// SAFETY: defined by the global_asm below (read only here: they are copied).
unsafe extern "C" {
    static yakvm_smp_trampoline: u8;
    static yakvm_smp_tr_data: u8;
    static yakvm_smp_trampoline_end: u8;
    /// The linker's end of the image (link.ld).
    static _end: u8;
}

// The AP trampoline, copied to TRAMPOLINE and entered there in real mode by the SIPI
// (CS = TRAMPOLINE >> 4, IP = 0). Its own GDT (flat 32-bit code 0x08, data 0x10, 64-bit
// code 0x18) takes it to protected mode, then with the BSP's CR4 (PAE) and CR3, EFER.LME
// and the BSP's CR0 (PG) to long mode; it loads the AP's stack and calls its entry with
// RDI = its argument. Addresses are TRAMPOLINE plus offsets in the copy, absolute.
global_asm!(
    ".pushsection .text.yakvm_smp_trampoline, \"ax\"",
    ".balign 16",
    ".globl yakvm_smp_trampoline",
    "yakvm_smp_trampoline:",
    ".code16",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    "lgdtl (yakvm_smp_tr_gdtr - yakvm_smp_trampoline)",
    "movl %cr0, %eax",
    "orl $1, %eax", // PE
    "movl %eax, %cr0",
    "ljmpl $0x08, $({base} + yakvm_smp_tr_32 - yakvm_smp_trampoline)",
    ".code32",
    "yakvm_smp_tr_32:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movl ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {cr4}), %eax",
    "movl %eax, %cr4",
    "movl ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {cr3}), %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx", // EFER
    "rdmsr",
    "orl $0x100, %eax", // LME
    "wrmsr",
    "movl ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {cr0}), %eax",
    "movl %eax, %cr0", // PG: long mode (compatibility mode until the far jump)
    "ljmpl $0x18, $({base} + yakvm_smp_tr_64 - yakvm_smp_trampoline)",
    ".code64",
    "yakvm_smp_tr_64:",
    "movq ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {stack}), %rsp",
    "fninit",
    "ldmxcsr ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {mxcsr})",
    "movq ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {arg}), %rdi",
    "movq ({base} + yakvm_smp_tr_data - yakvm_smp_trampoline + {entry}), %rax",
    "call *%rax",
    "ud2",
    ".balign 8",
    "yakvm_smp_tr_gdt:",
    ".quad 0",
    ".quad 0x00cf9b000000ffff", // 0x08: 32-bit code
    ".quad 0x00cf93000000ffff", // 0x10: data
    ".quad 0x00af9b000000ffff", // 0x18: 64-bit code
    "yakvm_smp_tr_gdtr:",
    ".word 31",
    ".long {base} + yakvm_smp_tr_gdt - yakvm_smp_trampoline",
    ".balign 8",
    ".globl yakvm_smp_tr_data",
    "yakvm_smp_tr_data:",
    ".skip {data_size}",
    ".globl yakvm_smp_trampoline_end",
    "yakvm_smp_trampoline_end:",
    ".popsection",
    base = const TRAMPOLINE,
    cr0 = const core::mem::offset_of!(TrampolineData, cr0),
    cr3 = const core::mem::offset_of!(TrampolineData, cr3),
    cr4 = const core::mem::offset_of!(TrampolineData, cr4),
    stack = const core::mem::offset_of!(TrampolineData, stack),
    entry = const core::mem::offset_of!(TrampolineData, entry),
    arg = const core::mem::offset_of!(TrampolineData, arg),
    mxcsr = const core::mem::offset_of!(TrampolineData, mxcsr),
    data_size = const size_of::<TrampolineData>(),
    options(att_syntax),
);

/// How an AP is started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// INIT, SIPI, SIPI into the trampoline.
    Normal,
    /// INIT, SIPI, SIPI into `DEAD_PAGE`: `cli; hlt` forever.
    Dead,
    /// INIT only: it waits for a SIPI that never comes.
    Never,
}

/// Per CPU: how many times it entered `ap_entry`, and whether it said it is online.
static STARTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The BSP's APIC id.
static BSP: AtomicUsize = AtomicUsize::new(0);
/// What the APs run once online (a `fn(usize) -> !` as usize; 0 until set).
static AP_MAIN: AtomicUsize = AtomicUsize::new(0);

/// How many times CPU `cpu` came through the trampoline (1 for every started AP: a second
/// SIPI to a running CPU is ignored).
pub fn starts(cpu: usize) -> u32 {
    STARTS[cpu].load(SeqCst)
}

/// The BSP's APIC id.
pub fn bsp() -> usize {
    BSP.load(SeqCst)
}

pub fn online(cpu: usize) -> bool {
    ONLINE[cpu].load(SeqCst)
}

/// Enables this CPU's local APIC and checks what the CPU says of itself. Flat logical
/// mode with LDR = 1 << cpu, TPR 0, spurious vector 0xff.
fn enable_lapic(cpu: usize) {
    let bsp = cpu == BSP.load(SeqCst);
    let id = apic_id();
    if usize::from(id) != cpu {
        fail!("cpu {cpu}: its local APIC id register says {id}");
    }
    let [_, ebx, _, edx] = crate::cpuid(1, 0);
    if (ebx >> 24) as usize != cpu || edx & (1 << 9) == 0 {
        fail!("cpu {cpu}: CPUID.1 says initial APIC id {}, APIC bit {}", ebx >> 24, (edx >> 9) & 1);
    }
    let base = rdmsr(MSR_APIC_BASE);
    let want = LAPIC_BASE | APIC_BASE_ENABLE | if bsp { APIC_BASE_BSP } else { 0 };
    if base != want {
        fail!("cpu {cpu}: IA32_APIC_BASE is {base:#x}, want {want:#x}");
    }
    switch_to_x2apic();
    lapic_write(APIC_TPR, 0);
    // (Dropped in x2APIC mode, whose logical IDs are derived: cluster 0, bit `cpu`, the
    // same destination bits for CPUs 0-7.)
    lapic_write(APIC_DFR, DFR_FLAT);
    lapic_write(APIC_LDR, 1 << (24 + cpu));
    lapic_write(APIC_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
}

/// Where an AP arrives from the trampoline, on its own stack, interrupts disabled.
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    STARTS[cpu].fetch_add(1, SeqCst);
    load_tables(cpu);
    enable_lapic(cpu);
    say!("cpu {cpu} online");
    ONLINE[cpu].store(true, SeqCst);
    let main = AP_MAIN.load(SeqCst);
    // SAFETY: `boot` stored a `fn(usize) -> !` there before starting any AP.
    let main: fn(usize) -> ! = unsafe { core::mem::transmute(main) };
    main(cpu)
}

/// How long the BSP waits for an AP to say it is online; for one it started to stay
/// silent (`Start::Dead`, `Start::Never`), which will not.
pub const AP_TIMEOUT_US: u64 = 10_000_000;
pub const SILENT_AP_TIMEOUT_US: u64 = 3_000_000;
/// The local APIC version register's bit 24: EOI-broadcast suppression is supported.
const EOI_BROADCAST_SUPPRESSION: u32 = 1 << 24;

/// The BSP's start: COM1, the clock, the MP table (printed), descriptor tables and
/// the local APIC of every CPU; then every AP in the table's order, each started as `how`
/// says and waited for in turn (so the "online" lines come in order), running `ap_main`
/// once online. A check that fails is printed and counted in `FAILURES`; what leaves
/// nothing to test ends the run (no MP table, an image too large). Returns
/// the MP table and how many APs did not answer (each said so).
pub fn boot(ap_main: fn(usize) -> !, how: impl Fn(u8) -> Start) -> (MpInfo, u32) {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    let end = (&raw const _end) as u64;
    if end > TRAMPOLINE {
        say!("smp FAIL: the image ends at {end:#x}, above the trampoline at {TRAMPOLINE:#x}");
        crate::exit(STATUS_LAYOUT);
    }
    start_clock();
    let mp = match mp_table() {
        Ok(mp) => mp,
        Err(why) => {
            say!("smp FAIL: MP table: {why}");
            crate::exit(STATUS_NO_MP_TABLE);
        }
    };
    let _ = console(|w| {
        let _ = write!(w, "mp table: {} cpus (apic ids", mp.cpus);
        for id in mp.ids() {
            let _ = write!(w, " {id}");
        }
        let _ = write!(w, "), bsp {}, local apic at {:#x}", mp.bsp, mp.lapic);
        match mp.ioapic {
            Some((id, addr)) => writeln!(w, ", io apic {id} at {addr:#x}"),
            None => writeln!(w, ", no io apic"),
        }
    });
    if mp.lapic != LAPIC_BASE as u32 {
        fail!("mp table: local APIC at {:#x}, want {LAPIC_BASE:#x}", mp.lapic);
    }

    let bsp = usize::from(mp.bsp);
    BSP.store(bsp, SeqCst);
    AP_MAIN.store(ap_main as usize, SeqCst);
    build_tables();
    load_tables(bsp);
    enable_lapic(bsp);
    // An integrated APIC (0x14) with 6 LVT entries; bit 24 (EOI-broadcast suppression) may
    // be offered too: KVM's split irqchip does with x2APIC (docs/kvm.md).
    let version = lapic_read(APIC_VERSION);
    if version & !EOI_BROADCAST_SUPPRESSION != 0x0005_0014 {
        fail!("cpu {bsp}: local APIC version register {version:#x}, want 0x50014");
    }
    STARTS[bsp].store(1, SeqCst);
    say!("cpu {bsp} online");
    ONLINE[bsp].store(true, SeqCst);

    copy_trampoline();
    let mut missing = 0;
    for id in mp.aps() {
        let start = clock();
        let how = how(id);
        let timeout = if how == Start::Normal { AP_TIMEOUT_US } else { SILENT_AP_TIMEOUT_US };
        if !start_ap(id, how) || !wait_until(timeout, || online(usize::from(id))) {
            say!("cpu {id} did not answer");
            missing += 1;
            continue;
        }
        say!("  cpu {id}: online {} us after its INIT", us_since(start));
    }
    (mp, missing)
}

/// Copies the trampoline to `TRAMPOLINE` and the halting loop to `DEAD_PAGE`.
fn copy_trampoline() {
    // SAFETY: both pages are RAM below 1 MiB that the image does not reach (checked in
    // `boot` against `_end`) and nothing else uses; the source is the trampoline's bytes
    // in the image, between two symbols of its section.
    unsafe {
        let start = &raw const yakvm_smp_trampoline;
        let len = (&raw const yakvm_smp_trampoline_end as usize) - start as usize;
        // Byte by byte (volatile, so that it does not become a call to memcpy, which the
        // guests do not have).
        for i in 0..len {
            ((TRAMPOLINE as usize + i) as *mut u8).write_volatile(start.add(i).read());
        }
        // cli; 1: hlt; jmp 1b
        for (i, b) in [0xfa, 0xf4, 0xeb, 0xfd].into_iter().enumerate() {
            ((DEAD_PAGE as usize + i) as *mut u8).write_volatile(b);
        }
    }
}

/// Writes AP `id`'s trampoline data (the BSP's control registers, the AP's stack and
/// entry), then INIT (assert, de-assert), 1 ms, SIPI, 200 us, SIPI, as the MP
/// specification's start-up sequence (B.4), with shorter delays (the CPUs are emulated).
fn start_ap(id: u8, how: Start) -> bool {
    let cpu = usize::from(id);
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: reads control registers only.
    unsafe { asm!("mov {}, cr0", "mov {}, cr3", "mov {}, cr4", out(reg) cr0, out(reg) cr3, out(reg) cr4, options(nomem, nostack, preserves_flags)) };
    if cr3 >> 32 != 0 {
        fail!("the BSP's CR3 {cr3:#x} is above 4 GiB: the trampoline cannot load it");
        return false;
    }
    let stack = (&raw const AP_STACKS) as u64 + ((cpu + 1) * size_of::<Stack>()) as u64;
    let entry = ap_entry as *const () as u64;
    // SAFETY: the copy's data block is inside the trampoline page (`copy_trampoline`);
    // no AP runs the trampoline now (they start one at a time, each waited for). Field
    // by field: the guests have no memcpy.
    unsafe {
        let offset = (&raw const yakvm_smp_tr_data as usize) - (&raw const yakvm_smp_trampoline as usize);
        let data = (TRAMPOLINE as usize + offset) as *mut TrampolineData;
        (&raw mut (*data).cr0).write_volatile(cr0);
        (&raw mut (*data).cr3).write_volatile(cr3);
        (&raw mut (*data).cr4).write_volatile(cr4);
        (&raw mut (*data).stack).write_volatile(stack);
        (&raw mut (*data).entry).write_volatile(entry);
        (&raw mut (*data).arg).write_volatile(id.into());
        (&raw mut (*data).mxcsr).write_volatile(0x1f80);
    }
    let page = if how == Start::Dead { DEAD_PAGE } else { TRAMPOLINE };
    let sipi = ICR_STARTUP | (page >> 12) as u32;
    let mut sent = send_ipi(id, ICR_INIT | ICR_LEVEL | ICR_ASSERT) && send_ipi(id, ICR_INIT | ICR_LEVEL);
    delay_us(1000);
    if how != Start::Never {
        sent = sent && send_ipi(id, sipi);
        delay_us(200);
        sent = sent && send_ipi(id, sipi);
    }
    if !sent {
        fail!("cpu {id}: the ICR stayed busy");
    }
    sent
}
