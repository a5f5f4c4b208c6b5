//! Each CPU's descriptor tables and interrupt stacks: the GDT (with one TSS per CPU), the
//! IDT with its 256 entry stubs, and the dispatch of interrupts (counted, then the hook,
//! then the EOI) and exceptions (the run ends).

use super::console::{Console, CONSOLE};
use super::lapic::{lapic_write, APIC_EOI, NMI_VECTOR, SPURIOUS_VECTOR};
use super::MAX_CPUS;
use crate::tables;
use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
use x86_64::instructions::segmentation::{Segment, FS, GS};
use x86_64::structures::gdt::{GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

const GDT_ENTRIES: usize = 3 + 2 * MAX_CPUS;

/// Null, 64-bit code (0x08), data (0x10), then one TSS per CPU (appended by
/// `build_tables`; CPU i's at `tss_selector(i)`).
static mut GDT: GlobalDescriptorTable<GDT_ENTRIES> = tables::gdt();

/// CPU i's TSS descriptor (two entries) is at 0x18 + 16 * i.
fn tss_selector(cpu: usize) -> SegmentSelector {
    SegmentSelector::new(3 + 2 * cpu as u16, PrivilegeLevel::Ring0)
}

/// Each CPU's TSS: IST1 and IST2.
static mut TSSS: [TaskStateSegment; MAX_CPUS] = [const { TaskStateSegment::new() }; MAX_CPUS];

/// A CPU's interrupt stacks: IST1 (interrupts, exceptions), IST2 (the NMI).
#[repr(C, align(16))]
struct IntStacks {
    ist1: [u8; 8192],
    ist2: [u8; 4096],
}
static mut INT_STACKS: [IntStacks; MAX_CPUS] = [const { IntStacks { ist1: [0; 8192], ist2: [0; 4096] } }; MAX_CPUS];

static mut IDT: InterruptDescriptorTable = InterruptDescriptorTable::new();

/// Interrupts taken, by CPU and vector (the NMI as vector 2).
static RECEIVED: [[AtomicU32; 256]; MAX_CPUS] = [const { [const { AtomicU32::new(0) }; 256] }; MAX_CPUS];

/// How many times CPU `cpu` took `vector`.
pub fn received(cpu: usize, vector: u8) -> u32 {
    RECEIVED[cpu][usize::from(vector)].load(SeqCst)
}

/// The guest's handler, run for every vector but the NMI and the spurious one, before the
/// EOI: (CPU, vector). Set by the BSP before interrupts are enabled anywhere.
static mut HOOK: Option<fn(usize, u8)> = None;

/// Sets the hook (see `HOOK`). Call it on the BSP before `boot`.
pub fn set_hook(hook: fn(usize, u8)) {
    // SAFETY: see `HOOK`: only the BSP writes it, before any CPU enables interrupts or
    // any AP runs; afterwards it is only read.
    unsafe { HOOK = Some(hook) };
}

// SAFETY: defined by the global_asm below: 256 stubs, 16 bytes apart (read only).
unsafe extern "C" {
    static yakvm_smp_stubs: [u8; 256 * 16];
}

global_asm!(
    // One 16-byte stub per vector: push the vector, join a common path. Exceptions (every
    // vector below 32 but the NMI) end the run; the others return.
    ".pushsection .text.yakvm_smp_stubs, \"ax\"",
    ".balign 16",
    ".globl yakvm_smp_stubs",
    "yakvm_smp_stubs:",
    ".set yakvm_smp_vector, 0",
    ".rept 256",
    ".balign 16",
    "pushq $yakvm_smp_vector",
    ".if yakvm_smp_vector == 2 || yakvm_smp_vector >= 32",
    "jmp yakvm_smp_interrupt",
    ".else",
    "jmp yakvm_smp_exception",
    ".endif",
    ".set yakvm_smp_vector, yakvm_smp_vector + 1",
    ".endr",
    // Exceptions: the vector, then where the frame is (an error code may be under the
    // RIP: the handler knows which vectors push one).
    "yakvm_smp_exception:",
    "popq %rdi",
    "movq %rsp, %rsi",
    "andq $-16, %rsp",
    "call {exception}",
    "ud2",
    // Interrupts: save the caller-saved registers (the SSE ones with FXSAVE: Rust code
    // uses them). Alignment: the CPU aligns RSP to 16 before its 40-byte frame, the stub
    // pushed 8, we push 72: RSP is 8 mod 16, and 520 more make it 0 for FXSAVE and the
    // call.
    "yakvm_smp_interrupt:",
    "pushq %rax",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    "movq 72(%rsp), %rdi", // the vector
    "movq %rsp, %rsi",     // on which CPU's stack
    "subq $520, %rsp",
    "fxsave (%rsp)",
    "cld",
    "call {interrupt}",
    "fxrstor (%rsp)",
    "addq $520, %rsp",
    "popq %r11",
    "popq %r10",
    "popq %r9",
    "popq %r8",
    "popq %rdi",
    "popq %rsi",
    "popq %rdx",
    "popq %rcx",
    "popq %rax",
    "addq $8, %rsp", // the vector
    "iretq",
    ".popsection",
    exception = sym exception,
    interrupt = sym interrupt,
    options(att_syntax),
);

/// The CPU whose interrupt stacks hold `rsp`.
fn cpu_of_stack(rsp: u64) -> usize {
    let base = (&raw const INT_STACKS) as u64;
    let cpu = (rsp.wrapping_sub(base) / size_of::<IntStacks>() as u64) as usize;
    if cpu >= MAX_CPUS {
        crate::print("guest interrupt on a stack that is no CPU's\n");
        crate::exit(98);
    }
    cpu
}

/// Any exception ends the run: a line on COM1 (without waiting long for the console lock:
/// the exception may have come while this CPU held it), status 99.
extern "C" fn exception(vector: u64, frame: u64) -> ! {
    let cpu = cpu_of_stack(frame);
    let error_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
    // SAFETY: `frame` points at the CPU's interrupt frame (after the error code, if any).
    let rip = unsafe { *((frame + if error_code { 8 } else { 0 }) as *const u64) };
    for _ in 0..1_000_000 {
        if CONSOLE.compare_exchange_weak(false, true, SeqCst, SeqCst).is_ok() {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = writeln!(Console, "cpu {cpu}: exception {vector} at rip {rip:#x}");
    crate::exit(99)
}

/// The interrupt dispatcher, on the CPU's IST (interrupts disabled): counts, runs the
/// hook, sends the EOI (not for the NMI or the spurious vector, which have none).
extern "C" fn interrupt(vector: u64, rsp: u64) {
    let cpu = cpu_of_stack(rsp);
    let vector = vector as u8;
    RECEIVED[cpu][usize::from(vector)].fetch_add(1, SeqCst);
    if vector == NMI_VECTOR || vector == SPURIOUS_VECTOR {
        return;
    }
    // SAFETY: see `HOOK`: no longer written once interrupts are on.
    if let Some(hook) = unsafe { HOOK } {
        hook(cpu, vector);
    }
    lapic_write(APIC_EOI, 0);
}

/// Fills the GDT (every CPU's TSS descriptor), the TSSs and the IDT. The BSP calls it
/// once, first; afterwards the CPUs only load them (`load_tables`).
pub(super) fn build_tables() {
    // SAFETY: only the BSP runs, with interrupts disabled, and no CPU uses these tables
    // yet; they are statics, so they outlive every use by the CPUs. Each stub fits its
    // vector (see the stubs), and runs on an IST every CPU's TSS sets.
    unsafe {
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        for cpu in 0..MAX_CPUS {
            let stacks = (&raw const INT_STACKS[cpu]) as u64;
            let ist1 = stacks + size_of::<[u8; 8192]>() as u64;
            let ist2 = stacks + size_of::<IntStacks>() as u64;
            let tss = &raw mut TSSS[cpu];
            (*tss).interrupt_stack_table[0] = VirtAddr::new(ist1);
            (*tss).interrupt_stack_table[1] = VirtAddr::new(ist2);
            let selector = tables::append_tss(gdt, tss);
            assert!(selector == tss_selector(cpu));
        }
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        let stubs = (&raw const yakvm_smp_stubs) as u64;
        for v in 0..=255u8 {
            if let Some(gate) = tables::set_gate(idt, v, stubs + 16 * u64::from(v)) {
                // IST1, the NMI IST2 (`set_stack_index` counts from 0).
                gate.set_stack_index(if v == NMI_VECTOR { 1 } else { 0 });
            }
        }
    }
}

/// Loads the GDT (reloading every segment register), CPU `cpu`'s TSS and the IDT.
pub(super) fn load_tables(cpu: usize) {
    // SAFETY: the tables were built by `build_tables` before any CPU gets here and are not
    // written afterwards (but for the busy bit LTR sets in this CPU's own TSS descriptor).
    // Code and data selectors are flat, as the ones the CPU runs on now, so the reload
    // changes nothing else.
    unsafe {
        tables::load_gdt(&*core::ptr::addr_of!(GDT), tss_selector(cpu));
        FS::set_reg(tables::DATA_SELECTOR);
        GS::set_reg(tables::DATA_SELECTOR);
        (*core::ptr::addr_of!(IDT)).load_unsafe();
    }
}
