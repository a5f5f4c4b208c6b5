// SPDX-License-Identifier: GPL-2.0
//! MMIO accesses completed in the module, without a return to userspace: the instruction
//! behind a nested page fault is fetched from the guest (QEMU's software SVM gives no
//! decode assists) and decoded by `decode.rs` (the MOV forms drivers use); a handler of
//! the module's (the IOEVENTFD table, a local APIC) takes the access, and the instruction
//! is completed here as the CPU would have. Anything else goes to userspace as before.

use super::{complete_instruction, gpr, set_gpr, VcpuState, NPF_WRITE};
use crate::decode::{self, Mode, Op};
use crate::ffi::mem::PAGE_SIZE;
use crate::svm::vm::Vm;
use crate::svm::vmcb::SaveArea;
use crate::svm::x86::seg;

/// One access to MMIO space: the bytes a read fills, or the bytes written (1, 2, 4 or 8,
/// little-endian).
pub(super) enum Access<'a> {
    /// (The in-module local APIC reads through it; IOEVENTFD only writes.)
    #[allow(dead_code)]
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// What [`emulate`] did.
pub(super) enum Emulated {
    /// The access was handled and the instruction completed.
    Done,
    /// Nothing changed: the exit goes to userspace as before.
    NotHandled,
}

/// The decoder's mode for the guest's code segment.
fn mode(s: &SaveArea) -> Mode {
    if s.long_mode() {
        Mode::Bits64
    } else if s.cs.attrib & seg::DB != 0 {
        Mode::Bits32
    } else {
        Mode::Bits16
    }
}

/// Reads the bytes of the instruction at CS:RIP (up to 15, through the guest's page
/// tables, across a page boundary) into `out`; returns how many could be read (an
/// instruction may end before an unmapped page). The CS base counts outside 64-bit mode,
/// where linear addresses are 32 bits.
pub(super) fn fetch(vm: &Vm, s: &SaveArea, out: &mut [u8; decode::MAX_LEN]) -> usize {
    let paging = s.paging();
    let (linear, wrap) = if s.long_mode() {
        (s.rip, u64::MAX)
    } else {
        (s.cs.base.wrapping_add(s.rip) & 0xffff_ffff, 0xffff_ffff)
    };
    let page = PAGE_SIZE as u64;
    let first = (out.len() as u64).min(page - linear % page) as usize;
    if vm.read_virt(&paging, linear, &mut out[..first]).is_err() {
        return 0;
    }
    if first < out.len() {
        let next = linear.wrapping_add(first as u64) & wrap;
        if vm.read_virt(&paging, next, &mut out[first..]).is_err() {
            return first;
        }
    }
    out.len()
}

/// Decodes the instruction at the guest's RIP that caused the NPF on `gpa`; if it is a MOV
/// form the module knows, calls `handler(gpa, access)` once; if the handler returns true,
/// completes the instruction (destination register written for reads with the right
/// zero/merge rules, RIP advanced, and the interrupt shadow/single-step handled as the
/// module does for other emulated instructions) and returns Done; otherwise nothing
/// changed and it returns NotHandled (the exit goes to userspace as today).
///
/// With decode assists (KVM nested on AMD hardware) the VMCB's instruction bytes are used
/// instead of a fetch. The decoded direction must agree with the fault's (the code may have
/// changed since), and the access must not cross a page.
pub(super) fn emulate(vm: &Vm, v: &mut VcpuState, gpa: u64, handler: impl FnOnce(u64, Access<'_>) -> bool) -> Emulated {
    let c = &v.vmcb.control;
    let mut bytes = [0u8; decode::MAX_LEN];
    let n = match usize::from(c.insn_len).min(decode::MAX_LEN) {
        0 => fetch(vm, &v.vmcb.save, &mut bytes),
        n => {
            bytes[..n].copy_from_slice(&c.insn_bytes[..n]);
            n
        }
    };
    let Some(mov) = decode::decode(&bytes[..n], mode(&v.vmcb.save)) else {
        return Emulated::NotHandled;
    };
    let size = usize::from(mov.size);
    let fault_is_write = c.exit_info_1 & NPF_WRITE != 0;
    if mov.is_write() != fault_is_write || (gpa % PAGE_SIZE as u64) as usize + size > PAGE_SIZE {
        return Emulated::NotHandled;
    }
    let mut data = [0u8; 8];
    match mov.op {
        Op::Load { reg, .. } => {
            if !handler(gpa, Access::Read(&mut data[..size])) {
                return Emulated::NotHandled;
            }
            let index = usize::from(reg.index);
            let Some(value) = mov.load_result(gpr(v, index), u64::from_le_bytes(data)) else {
                return Emulated::NotHandled;
            };
            set_gpr(v, index, value);
        }
        Op::StoreReg { reg } => {
            let Some(value) = mov.store_value(gpr(v, usize::from(reg.index))) else {
                return Emulated::NotHandled;
            };
            data = value.to_le_bytes();
            if !handler(gpa, Access::Write(&data[..size])) {
                return Emulated::NotHandled;
            }
        }
        Op::StoreImm { .. } => {
            let Some(value) = mov.store_value(0) else { return Emulated::NotHandled };
            data = value.to_le_bytes();
            if !handler(gpa, Access::Write(&data[..size])) {
                return Emulated::NotHandled;
            }
        }
    }
    let next = v.vmcb.save.rip.wrapping_add(u64::from(mov.len));
    complete_instruction(v, next);
    Emulated::Done
}
