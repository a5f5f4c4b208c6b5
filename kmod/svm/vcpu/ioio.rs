// SPDX-License-Identifier: GPL-2.0
//! Port I/O exits (IOIO, AMD APM vol. 2, 15.10.2): IN and OUT go to userspace with their
//! data in the run page; INS and OUTS, with REP and the direction flag, move their data
//! between guest memory and the run page here, up to a run page's worth per exit.

use super::{complete_instruction, inject, Next, Pending, VcpuState};
use crate::abi;
use crate::svm::vm::Vm;
use crate::svm::vmcb;
use crate::svm::x86::{rflags, seg, vector};
use crate::ffi::plain::read_once;
use kernel::prelude::*;

/// A string port instruction being completed.
#[derive(Clone, Copy)]
pub(super) struct StringIo {
    size: usize,
    count: usize,
    /// RIP once the instruction is done (a REP with elements left re-executes instead).
    next_rip: u64,
}

/// Puts the bytes of a port IN into RAX as the CPU would: 1 and 2 bytes keep the rest of
/// RAX, 4 bytes zero-extend into RAX.
pub(super) fn merge_in(rax: u64, data: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..data.len()].copy_from_slice(data);
    let value = u64::from_le_bytes(bytes);
    match data.len() {
        1 => (rax & !0xff) | value,
        2 => (rax & !0xffff) | value,
        _ => value,
    }
}

pub(super) fn handle_ioio(vm: &Vm, v: &mut VcpuState) -> Next {
    use vmcb::ioio;
    v.stats.io += 1;
    let info = v.vmcb.control.exit_info_1;
    let size = ((info & ioio::SIZE_MASK) >> ioio::SIZE_SHIFT) as u8; // 1, 2 or 4
    let port = (info >> ioio::PORT_SHIFT) as u16;
    let is_in = info & ioio::TYPE_IN != 0;
    let direction = if is_in { abi::IO_IN } else { abi::IO_OUT };
    if info & ioio::STR != 0 {
        return handle_string_io(vm, v, port, size, direction);
    }
    if !is_in && vm.signal_ioeventfd(true, port.into(), &v.vmcb.save.rax.to_le_bytes()[..size as usize]) {
        v.stats.ioeventfd += 1;
        complete_instruction(v, v.vmcb.control.exit_info_2);
        return Next::Resume;
    }
    if !is_in && coalesce(v, port, size) {
        complete_instruction(v, v.vmcb.control.exit_info_2);
        return Next::Resume;
    }
    v.run.exit_reason = abi::exit::IO;
    v.run.io = abi::IoExit { port, size, direction, count: 1 };
    if is_in {
        v.run.data[..size as usize].fill(0xff);
        v.pending = Some(Pending::In { size });
    } else {
        let rax = v.vmcb.save.rax.to_le_bytes();
        v.run.data[..size as usize].copy_from_slice(&rax[..size as usize]);
    }
    // EXITINFO2 holds the RIP after the instruction.
    complete_instruction(v, v.vmcb.control.exit_info_2);
    Next::ToUser
}

/// Appends an OUT to a coalesced port to the run page's list; `false` if the port is not
/// coalesced or the list is full (then the OUT exits as usual).
fn coalesce(v: &mut VcpuState, port: u16, size: u8) -> bool {
    let inside = |z: &abi::CoalescedZone| {
        port >= z.port && u32::from(port) + u32::from(size) <= u32::from(z.port) + u32::from(z.len)
    };
    if !v.coalesced.zones.iter().any(inside) {
        return false;
    }
    // Userspace empties the list; it may write anything there: read once, check.
    let n = read_once(&v.run.coalesced_count) as usize;
    if n >= abi::COALESCED_ENTRIES {
        return false;
    }
    let value = v.vmcb.save.rax as u32 & (u32::MAX >> (32 - 8 * u32::from(size)));
    v.run.coalesced[n] = abi::CoalescedWrite { port, size, _pad: 0, value };
    v.run.coalesced_count = n as u32 + 1;
    v.stats.coalesced += 1;
    true
}

/// Mask of the address size of string instructions: EXITINFO1 says it on hardware
/// (bits 7-9); QEMU leaves those bits clear, so then it follows from the code segment.
fn address_mask(info: u64, s: &vmcb::SaveArea) -> u64 {
    match (info >> 7) & 0b111 {
        0b001 => 0xffff,
        0b010 => 0xffff_ffff,
        0b100 => u64::MAX,
        _ if s.long_mode() => u64::MAX,
        _ if s.cs.attrib & seg::DB != 0 => 0xffff_ffff,
        _ => 0xffff,
    }
}

/// Writes `value` into the `mask`-sized part of `reg` (a 32-bit address size clears the
/// upper half in 64-bit mode, a 16-bit one keeps it).
fn set_masked(reg: &mut u64, value: u64, mask: u64) {
    *reg = if mask == 0xffff { (*reg & !0xffff) | (value & 0xffff) } else { value & mask };
}

/// Element `i`'s address from `start`, walking up, or down when RFLAGS.DF is set.
fn element(start: u64, i: usize, size: usize, down: bool, mask: u64) -> u64 {
    let step = (i * size) as u64;
    (if down { start.wrapping_sub(step) } else { start.wrapping_add(step) }) & mask
}

/// INS and OUTS, with or without REP: as many elements as fit the run page go to or come
/// from userspace per exit; a REP with elements left is executed again (RIP stays).
/// Segment overrides are not seen (QEMU does not report them): DS for OUTS, ES for INS.
fn handle_string_io(vm: &Vm, v: &mut VcpuState, port: u16, size: u8, direction: u8) -> Next {
    let info = v.vmcb.control.exit_info_1;
    let mask = address_mask(info, &v.vmcb.save);
    let rep = info & vmcb::ioio::REP != 0;
    let size_bytes = size as usize;
    let wanted = if rep { v.gprs.rcx & mask } else { 1 };
    if wanted == 0 {
        complete_instruction(v, v.vmcb.control.exit_info_2);
        return Next::Resume;
    }
    let count = (wanted as usize).min(abi::RUN_DATA_SIZE / size_bytes);
    let done_rip = if wanted as usize > count { v.vmcb.save.rip } else { v.vmcb.control.exit_info_2 };
    let io = StringIo { size: size_bytes, count, next_rip: done_rip };
    v.run.io = abi::IoExit { port, size, direction, count: count as u32 };
    v.run.exit_reason = abi::exit::IO;
    if direction == abi::IO_IN {
        v.run.data[..count * size_bytes].fill(0xff);
        v.pending = Some(Pending::Ins(io));
        return Next::ToUser;
    }
    let s = &v.vmcb.save;
    let (down, map, base, rsi) = (s.rflags & rflags::DF != 0, s.paging(), s.ds.base, v.gprs.rsi);
    for i in 0..count {
        let va = base.wrapping_add(element(rsi, i, size_bytes, down, mask));
        let out = &mut v.run.data[i * size_bytes..(i + 1) * size_bytes];
        if vm.read_virt(&map, va, out).is_err() {
            // The source is not guest RAM: as the CPU would for a bad address.
            return inject(v, vector::GP, Some(0));
        }
    }
    set_masked(&mut v.gprs.rsi, element(rsi, count, size_bytes, down, mask), mask);
    if rep {
        let left = (v.gprs.rcx & mask) - count as u64;
        set_masked(&mut v.gprs.rcx, left, mask);
    }
    complete_instruction(v, io.next_rip);
    Next::ToUser
}

/// Stores the data of an INS that userspace completed, and moves RDI, RCX and RIP on.
pub(super) fn complete_ins(vm: &Vm, v: &mut VcpuState, io: StringIo, data: &[u8]) -> Result {
    let info = v.vmcb.control.exit_info_1;
    let mask = address_mask(info, &v.vmcb.save);
    let s = &v.vmcb.save;
    let (down, map, base, rdi) = (s.rflags & rflags::DF != 0, s.paging(), s.es.base, v.gprs.rdi);
    for i in 0..io.count {
        let va = base.wrapping_add(element(rdi, i, io.size, down, mask));
        vm.write_virt(&map, va, &data[i * io.size..(i + 1) * io.size])?;
    }
    set_masked(&mut v.gprs.rdi, element(rdi, io.count, io.size, down, mask), mask);
    if info & vmcb::ioio::REP != 0 {
        let left = (v.gprs.rcx & mask) - io.count as u64;
        set_masked(&mut v.gprs.rcx, left, mask);
    }
    complete_instruction(v, io.next_rip);
    Ok(())
}
