//! Descriptor tables for the guests' interrupt code (`trap`, `pc`, `smp`), on the `x86_64`
//! crate's types: one place that points an IDT gate at an entry stub, and one that loads a
//! GDT of ours and its TSS.
//!
//! The entry stubs are assembly (the crate's typed handlers need the x86-interrupt ABI,
//! which stable Rust lacks), so gates are set by address.

use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::idt::{EntryOptions, InterruptDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

/// The flat 64-bit code selector: entry 1 of the emulator's GDT, which our own GDTs keep.
pub const CODE_SELECTOR: SegmentSelector = SegmentSelector::new(1, PrivilegeLevel::Ring0);
/// The flat data selector: entry 2, as in the emulator's GDT.
pub const DATA_SELECTOR: SegmentSelector = SegmentSelector::new(2, PrivilegeLevel::Ring0);

/// Points IDT entry `vector` at the entry stub at `addr`: a present 64-bit interrupt gate,
/// DPL 0, code selector `CODE_SELECTOR`, no IST (set one on the options returned).
///
/// `None` for the vectors the architecture reserves (15, 22-27, 31): the crate keeps them
/// not present. The CPU raises none of them; a software INT to one raises #NP instead.
///
/// # Safety
/// `addr` is an entry stub fit for what the CPU pushes for `vector` (an error code or not).
pub unsafe fn set_gate(idt: &mut InterruptDescriptorTable, vector: u8, addr: u64) -> Option<&mut EntryOptions> {
    let addr = VirtAddr::new(addr);
    // SAFETY: the caller's promise. The crate types the exceptions' entries by what they
    // push; those with an error code (and #MC) are fields of their own.
    let options = unsafe {
        match vector {
            8 => idt.double_fault.set_handler_addr(addr),
            10 => idt.invalid_tss.set_handler_addr(addr),
            11 => idt.segment_not_present.set_handler_addr(addr),
            12 => idt.stack_segment_fault.set_handler_addr(addr),
            13 => idt.general_protection_fault.set_handler_addr(addr),
            14 => idt.page_fault.set_handler_addr(addr),
            17 => idt.alignment_check.set_handler_addr(addr),
            18 => idt.machine_check.set_handler_addr(addr),
            21 => idt.cp_protection_exception.set_handler_addr(addr),
            29 => idt.vmm_communication_exception.set_handler_addr(addr),
            30 => idt.security_exception.set_handler_addr(addr),
            15 | 22..=27 | 31 => return None,
            v => idt[v].set_handler_addr(addr),
        }
    };
    // SAFETY: CODE_SELECTOR is a 64-bit code segment in every GDT the guests run on (the
    // emulator's and ours).
    unsafe { options.set_code_selector(CODE_SELECTOR) };
    Some(options)
}

/// A GDT of ours: null, 64-bit code (0x08) and data (0x10) as in the emulator's GDT, then
/// room for `N - 3` entries (a TSS takes two).
pub const fn gdt<const N: usize>() -> GlobalDescriptorTable<N> {
    let mut gdt = GlobalDescriptorTable::empty();
    gdt.append(Descriptor::kernel_code_segment());
    gdt.append(Descriptor::kernel_data_segment());
    gdt
}

/// Appends the descriptor of `tss` to `gdt`; its selector.
///
/// # Safety
/// `tss` outlives every use of the descriptor (a static).
pub unsafe fn append_tss<const N: usize>(gdt: &mut GlobalDescriptorTable<N>, tss: *const TaskStateSegment) -> SegmentSelector {
    // SAFETY: the caller's promise.
    gdt.append(unsafe { Descriptor::tss_segment_unchecked(tss) })
}

/// Loads `gdt` (built by `gdt`), reloads CS, DS, ES and SS from it (the same flat segments
/// as before, so nothing else changes) and loads the TSS `tss` (LTR marks its descriptor
/// busy, in the GDT's writable memory).
///
/// # Safety
/// `gdt` is not written while loaded but for that busy bit; `tss` is one of its TSSs.
pub unsafe fn load_gdt<const N: usize>(gdt: &'static GlobalDescriptorTable<N>, tss: SegmentSelector) {
    gdt.load();
    // SAFETY: entries 1 and 2 are flat 64-bit code and data (`gdt`), as the ones the CPU
    // runs on; `tss` is a TSS descriptor of this GDT (the caller's promise).
    unsafe {
        CS::set_reg(CODE_SELECTOR);
        DS::set_reg(DATA_SELECTOR);
        ES::set_reg(DATA_SELECTOR);
        SS::set_reg(DATA_SELECTOR);
        load_tss(tss);
    }
}
