// SPDX-License-Identifier: GPL-2.0
//! The Virtual Machine Control Block (AMD APM vol. 2, appendix B): a 4 KiB page with the
//! control area at 0x000 and the state-save area at 0x400. Every field carries its offset;
//! the offsets are asserted at compile time.

use super::x86::{efer, seg};
use crate::paging::PagingRegs;
use core::mem::{offset_of, size_of};

/// Control area (APM table B-1).
#[repr(C)]

pub(crate) struct ControlArea {
    pub(crate) intercept_cr: u32,         // +0x000 reads in 15:0, writes in 31:16
    pub(crate) intercept_dr: u32,         // +0x004
    pub(crate) intercept_exceptions: u32, // +0x008 one bit per vector
    pub(crate) intercept_misc1: u32,      // +0x00c see `intercept1`
    pub(crate) intercept_misc2: u32,      // +0x010 see `intercept2`
    pub(crate) intercept_misc3: u32,      // +0x014
    _reserved_018: [u8; 0x24],            // +0x018
    pub(crate) pause_filter_thresh: u16,  // +0x03c
    pub(crate) pause_filter_count: u16,   // +0x03e
    pub(crate) iopm_base_pa: u64,         // +0x040
    pub(crate) msrpm_base_pa: u64,        // +0x048
    pub(crate) tsc_offset: u64,           // +0x050
    pub(crate) guest_asid: u32,           // +0x058
    pub(crate) tlb_control: u8,           // +0x05c
    _reserved_05d: [u8; 3],               // +0x05d
    pub(crate) v_intr: u64,               // +0x060 V_TPR, V_IRQ, V_INTR_MASKING, ...
    pub(crate) interrupt_shadow: u64,     // +0x068
    pub(crate) exit_code: u32,            // +0x070 (QEMU writes VMEXIT_INVALID as 32-bit -1)
    pub(crate) exit_code_hi: u32,         // +0x074
    pub(crate) exit_info_1: u64,          // +0x078
    pub(crate) exit_info_2: u64,          // +0x080
    pub(crate) exit_int_info: u64,        // +0x088
    pub(crate) np_control: u64,           // +0x090 bit 0: nested paging
    pub(crate) avic_apic_bar: u64,        // +0x098
    pub(crate) ghcb_pa: u64,              // +0x0a0
    pub(crate) event_inj: u64,            // +0x0a8
    pub(crate) n_cr3: u64,                // +0x0b0 nested page table root
    pub(crate) virt_ext: u64,             // +0x0b8
    pub(crate) clean_bits: u32,           // +0x0c0
    _reserved_0c4: u32,                   // +0x0c4
    pub(crate) next_rip: u64,             // +0x0c8
    pub(crate) insn_len: u8,              // +0x0d0
    pub(crate) insn_bytes: [u8; 15],      // +0x0d1
    _reserved_0e0: [u8; 0x320],           // +0x0e0
}

/// A segment register as the VMCB stores it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Segment {
    pub(crate) selector: u16, // +0x0
    pub(crate) attrib: u16,   // +0x2
    pub(crate) limit: u32,    // +0x4
    pub(crate) base: u64,     // +0x8
}

/// State-save area (APM table B-2); offsets are from the start of the VMCB.
#[repr(C)]

pub(crate) struct SaveArea {
    pub(crate) es: Segment,            // +0x400
    pub(crate) cs: Segment,            // +0x410
    pub(crate) ss: Segment,            // +0x420
    pub(crate) ds: Segment,            // +0x430
    pub(crate) fs: Segment,            // +0x440
    pub(crate) gs: Segment,            // +0x450
    pub(crate) gdtr: Segment,          // +0x460
    pub(crate) ldtr: Segment,          // +0x470
    pub(crate) idtr: Segment,          // +0x480
    pub(crate) tr: Segment,            // +0x490
    _reserved_4a0: [u8; 0x2b],         // +0x4a0
    pub(crate) cpl: u8,                // +0x4cb
    _reserved_4cc: u32,                // +0x4cc
    pub(crate) efer: u64,              // +0x4d0
    _reserved_4d8: [u8; 0x70],         // +0x4d8
    pub(crate) cr4: u64,               // +0x548
    pub(crate) cr3: u64,               // +0x550
    pub(crate) cr0: u64,               // +0x558
    pub(crate) dr7: u64,               // +0x560
    pub(crate) dr6: u64,               // +0x568
    pub(crate) rflags: u64,            // +0x570
    pub(crate) rip: u64,               // +0x578
    _reserved_580: [u8; 0x58],         // +0x580
    pub(crate) rsp: u64,               // +0x5d8
    pub(crate) s_cet: u64,             // +0x5e0
    pub(crate) ssp: u64,               // +0x5e8
    pub(crate) isst_addr: u64,         // +0x5f0
    pub(crate) rax: u64,               // +0x5f8
    pub(crate) star: u64,              // +0x600
    pub(crate) lstar: u64,             // +0x608
    pub(crate) cstar: u64,             // +0x610
    pub(crate) sfmask: u64,            // +0x618
    pub(crate) kernel_gs_base: u64,    // +0x620
    pub(crate) sysenter_cs: u64,       // +0x628
    pub(crate) sysenter_esp: u64,      // +0x630
    pub(crate) sysenter_eip: u64,      // +0x638
    pub(crate) cr2: u64,               // +0x640
    _reserved_648: [u8; 0x20],         // +0x648
    pub(crate) g_pat: u64,             // +0x668
    pub(crate) dbgctl: u64,            // +0x670
    pub(crate) br_from: u64,           // +0x678
    pub(crate) br_to: u64,             // +0x680
    pub(crate) last_excp_from: u64,    // +0x688
    pub(crate) last_excp_to: u64,      // +0x690
    _reserved_698: [u8; 0x968],        // +0x698 .. 0x1000
}

/// The whole VMCB page.
#[repr(C, align(4096))]

pub(crate) struct Vmcb {
    pub(crate) control: ControlArea, // +0x000
    pub(crate) save: SaveArea,       // +0x400
}

const _: () = assert!(size_of::<ControlArea>() == 0x400);
const _: () = assert!(size_of::<Vmcb>() == 0x1000);
const _: () = assert!(offset_of!(ControlArea, iopm_base_pa) == 0x040);
const _: () = assert!(offset_of!(ControlArea, guest_asid) == 0x058);
const _: () = assert!(offset_of!(ControlArea, exit_code) == 0x070);
const _: () = assert!(offset_of!(ControlArea, np_control) == 0x090);
const _: () = assert!(offset_of!(ControlArea, n_cr3) == 0x0b0);
const _: () = assert!(offset_of!(ControlArea, next_rip) == 0x0c8);
const _: () = assert!(offset_of!(ControlArea, insn_bytes) == 0x0d1);
const _: () = assert!(0x400 + offset_of!(SaveArea, cpl) == 0x4cb);
const _: () = assert!(0x400 + offset_of!(SaveArea, efer) == 0x4d0);
const _: () = assert!(0x400 + offset_of!(SaveArea, cr4) == 0x548);
const _: () = assert!(0x400 + offset_of!(SaveArea, rip) == 0x578);
const _: () = assert!(0x400 + offset_of!(SaveArea, rsp) == 0x5d8);
const _: () = assert!(0x400 + offset_of!(SaveArea, rax) == 0x5f8);
const _: () = assert!(0x400 + offset_of!(SaveArea, cr2) == 0x640);
const _: () = assert!(0x400 + offset_of!(SaveArea, g_pat) == 0x668);
const _: () = assert!(0x400 + offset_of!(SaveArea, last_excp_to) == 0x690);

/// Intercept bits of the VMCB word at +0x00c (APM table B-1).
#[allow(dead_code)] // the full catalogue, named once
pub(crate) mod intercept1 {
    pub(crate) const INTR: u32 = 1 << 0;
    pub(crate) const NMI: u32 = 1 << 1;
    pub(crate) const SMI: u32 = 1 << 2;
    pub(crate) const INIT: u32 = 1 << 3;
    pub(crate) const VINTR: u32 = 1 << 4;
    pub(crate) const PUSHF: u32 = 1 << 16;
    pub(crate) const IRET: u32 = 1 << 20;
    pub(crate) const INTN: u32 = 1 << 21;
    pub(crate) const CPUID: u32 = 1 << 18;
    pub(crate) const INVD: u32 = 1 << 22;
    pub(crate) const HLT: u32 = 1 << 24;
    pub(crate) const INVLPGA: u32 = 1 << 26;
    pub(crate) const IOIO_PROT: u32 = 1 << 27;
    pub(crate) const MSR_PROT: u32 = 1 << 28;
    pub(crate) const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of the VMCB word at +0x010 (APM table B-1).
#[allow(dead_code)] // the full catalogue, named once
pub(crate) mod intercept2 {
    pub(crate) const VMRUN: u32 = 1 << 0;
    pub(crate) const VMMCALL: u32 = 1 << 1;
    pub(crate) const VMLOAD: u32 = 1 << 2;
    pub(crate) const VMSAVE: u32 = 1 << 3;
    pub(crate) const STGI: u32 = 1 << 4;
    pub(crate) const CLGI: u32 = 1 << 5;
    pub(crate) const SKINIT: u32 = 1 << 6;
    pub(crate) const RDTSCP: u32 = 1 << 7;
    pub(crate) const ICEBP: u32 = 1 << 8;
    pub(crate) const WBINVD: u32 = 1 << 9;
    pub(crate) const MONITOR: u32 = 1 << 10;
    pub(crate) const MWAIT: u32 = 1 << 11;
    pub(crate) const MWAIT_COND: u32 = 1 << 12;
    pub(crate) const XSETBV: u32 = 1 << 13;
}

/// `intercept_cr`: the write intercept of CRn is bit 16 + n (reads are bits 15:0).
pub(crate) const fn intercept_cr_write(n: u32) -> u32 {
    1 << (16 + n)
}

/// `np_control` bit 0: nested paging on.
pub(crate) const NP_ENABLE: u64 = 1 << 0;
/// `v_intr` bit 24: V_INTR_MASKING (guest RFLAGS.IF masks only virtual interrupts).
pub(crate) const V_INTR_MASKING: u64 = 1 << 24;
/// `v_intr` bit 8: V_IRQ, a virtual interrupt is pending (APM 15.21.4). With the VINTR
/// intercept it only tells when the guest can take an interrupt: never delivered.
pub(crate) const V_IRQ: u64 = 1 << 8;
/// `v_intr` bits 19:16: V_INTR_PRIO; bit 20: V_IGN_TPR (the guest's TPR does not mask it).
pub(crate) const V_INTR_PRIO_MAX: u64 = 0xf << 16;
pub(crate) const V_IGN_TPR: u64 = 1 << 20;
/// `interrupt_shadow` bit 0: the guest is in an STI or MOV SS shadow (APM 15.21.5).
pub(crate) const INTERRUPT_SHADOW: u64 = 1 << 0;

/// EVENTINJ and EXITINTINFO share one format (APM 15.20, 15.7.2): vector in 7:0, type in
/// 10:8, error code valid in 11, valid in 31, the error code in 63:32.
#[allow(dead_code)] // the full catalogue, named once
pub(crate) mod event {
    pub(crate) const VECTOR_MASK: u64 = 0xff;
    pub(crate) const TYPE_MASK: u64 = 7 << 8;
    pub(crate) const TYPE_INTR: u64 = 0 << 8;
    pub(crate) const TYPE_NMI: u64 = 2 << 8;
    pub(crate) const TYPE_EXCEPTION: u64 = 3 << 8;
    pub(crate) const TYPE_SOFT_INT: u64 = 4 << 8;
    pub(crate) const ERROR_VALID: u64 = 1 << 11;
    pub(crate) const VALID: u64 = 1 << 31;
}
/// `tlb_control`: flush every ASID's TLB entries on VMRUN (the only value QEMU honours).
pub(crate) const TLB_CONTROL_FLUSH_ALL: u8 = 1;
/// Power-on value of the PAT, used as the guest PAT (VMRUN rejects invalid types).
pub(crate) const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// Exit codes (APM appendix C).
#[allow(dead_code)] // the full catalogue, named once
pub(crate) mod exit_code {
    // Dispatched on the low 32 bits of EXITCODE, as KVM does.
    /// MOV from DRn: READ_DR0 + n; MOV to DRn: WRITE_DR0 + n.
    /// MOV to CRn (and CLTS, LMSW for CR0): WRITE_CR0 + n.
    pub(crate) const WRITE_CR0: u32 = 0x10;
    pub(crate) const WRITE_CR3: u32 = 0x13;
    pub(crate) const WRITE_CR4: u32 = 0x14;
    pub(crate) const WRITE_CR8: u32 = 0x18;
    pub(crate) const READ_DR0: u32 = 0x20;
    pub(crate) const WRITE_DR0: u32 = 0x30;
    pub(crate) const EXCP_BASE: u32 = 0x40;
    pub(crate) const INTR: u32 = 0x60;
    pub(crate) const NMI: u32 = 0x61;
    pub(crate) const SMI: u32 = 0x62;
    pub(crate) const INIT: u32 = 0x63;
    pub(crate) const VINTR: u32 = 0x64;
    pub(crate) const PUSHF: u32 = 0x70;
    /// IRET, taken before the instruction executes (RIP at it).
    pub(crate) const IRET: u32 = 0x74;
    /// INT n; QEMU also reports INT3 and INTO here, not as #BP/#OF exception intercepts.
    pub(crate) const SWINT: u32 = 0x75;
    pub(crate) const CPUID: u32 = 0x72;
    pub(crate) const HLT: u32 = 0x78;
    pub(crate) const IOIO: u32 = 0x7b;
    pub(crate) const MSR: u32 = 0x7c;
    pub(crate) const SHUTDOWN: u32 = 0x7f;
    pub(crate) const INVLPGA: u32 = 0x7a;
    pub(crate) const VMRUN: u32 = 0x80;
    pub(crate) const VMMCALL: u32 = 0x81;
    pub(crate) const VMLOAD: u32 = 0x82;
    pub(crate) const VMSAVE: u32 = 0x83;
    pub(crate) const STGI: u32 = 0x84;
    pub(crate) const CLGI: u32 = 0x85;
    pub(crate) const SKINIT: u32 = 0x86;
    pub(crate) const RDTSCP: u32 = 0x87;
    pub(crate) const WBINVD: u32 = 0x89;
    pub(crate) const MONITOR: u32 = 0x8a;
    pub(crate) const MWAIT: u32 = 0x8b;
    pub(crate) const MWAIT_COND: u32 = 0x8c;
    pub(crate) const XSETBV: u32 = 0x8d;
    pub(crate) const NPF: u32 = 0x400;
    pub(crate) const INVALID: u32 = u32::MAX;
}

/// EXITINFO1 of an IOIO exit (APM 15.10.2, figure 15-2).
#[allow(dead_code)] // the full catalogue, named once
pub(crate) mod ioio {
    /// 1 = IN, 0 = OUT.
    pub(crate) const TYPE_IN: u64 = 1 << 0;
    /// String instruction (INS/OUTS).
    pub(crate) const STR: u64 = 1 << 2;
    /// REP prefix.
    pub(crate) const REP: u64 = 1 << 3;
    /// Operand size: one-hot 8/16/32 bits in bits 4..6.
    pub(crate) const SIZE_SHIFT: u32 = 4;
    pub(crate) const SIZE_MASK: u64 = 0b111 << SIZE_SHIFT;
    pub(crate) const PORT_SHIFT: u32 = 16;
}

impl SaveArea {
    /// The registers that decide the paging mode, for the guest page walk.
    pub(crate) fn paging(&self) -> PagingRegs {
        PagingRegs { cr0: self.cr0, cr3: self.cr3, cr4: self.cr4, efer: self.efer }
    }

    /// The guest runs 64-bit code (EFER.LMA and CS.L).
    pub(crate) fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0 && self.cs.attrib & seg::L != 0
    }
}
