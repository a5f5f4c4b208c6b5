// SPDX-License-Identifier: GPL-2.0
//! Nested page tables (AMD APM vol. 2, 15.25): the guest-physical to host-physical map.
//! Four levels of 4 KiB pages; only the pages of guest RAM are ever present, so every
//! other guest-physical access faults (#NPF) and becomes an MMIO exit.

use crate::ffi::mem::{Pages, Table};
use kernel::prelude::*;

/// Present, writable, user (QEMU walks nested tables as user accesses).
const PRESENT_RW_USER: u64 = 0b111;
/// Present, read-only, user, not executable: a page the guest may only read.
const PRESENT_RO_USER_NX: u64 = 0b101 | 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A table and, for upper levels, the tables below it (the hardware sees only `table`).
struct Node {
    table: Pages<Table>,
    children: KVec<Option<KBox<Node>>>,
}

impl Node {
    fn new(leaf: bool) -> Result<Self> {
        let mut children = KVec::new();
        if !leaf {
            children.reserve(512, GFP_KERNEL)?;
            for _ in 0..512 {
                children.push(None, GFP_KERNEL)?;
            }
        }
        Ok(Self { table: Pages::new()?, children })
    }
}

pub(crate) struct Npt {
    root: Node,
}

fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

impl Npt {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self { root: Node::new(false)? })
    }

    /// Physical address of the top table (the VMCB's N_CR3).
    pub(crate) fn root_pa(&self) -> u64 {
        self.root.table.phys()
    }

    /// A view of these tables in which the guest page at `gpa` can be mapped, read-only,
    /// to `hpa` ([`PrivateView`]). The tables must no longer change: the view copies the
    /// four on the path to `gpa` and shares the others.
    pub(crate) fn private_view(&self, gpa: u64, hpa: u64) -> Result<PrivateView> {
        let mut tables = [Pages::<Table>::new()?, Pages::new()?, Pages::new()?, Pages::new()?];
        let mut node = Some(&self.root);
        for (k, level) in (1..=4).rev().enumerate() {
            if let Some(n) = node {
                tables[k].entries = n.table.entries;
            }
            node = node.and_then(|n| n.children.get(index(gpa, level)).and_then(|c| c.as_deref()));
        }
        for k in 0..3 {
            let below = tables[k + 1].phys();
            tables[k].entries[index(gpa, 4 - k as u32)] = below | PRESENT_RW_USER;
        }
        let vms = tables[3].entries[index(gpa, 1)];
        Ok(PrivateView { tables, gpa, hpa, vms })
    }

    /// Maps the 4 KiB guest page at `gpa` to host page `hpa`, or unmaps it (`None`).
    pub(crate) fn set(&mut self, gpa: u64, hpa: Option<u64>) -> Result {
        let mut node = &mut self.root;
        for level in (2..=4).rev() {
            let i = index(gpa, level);
            if node.children[i].is_none() {
                if hpa.is_none() {
                    return Ok(());
                }
                let child = KBox::new(Node::new(level == 2)?, GFP_KERNEL)?;
                node.table.entries[i] = child.table.phys() | PRESENT_RW_USER;
                node.children[i] = Some(child);
            }
            node = node.children[i].as_deref_mut().ok_or(EINVAL)?;
        }
        node.table.entries[index(gpa, 1)] = match hpa {
            Some(hpa) => (hpa & ADDR_MASK) | PRESENT_RW_USER,
            None => 0,
        };
        Ok(())
    }
}

/// A vCPU's own nested page tables: the VM's with one guest page, `gpa`, that it may map
/// read-only to a page of its own (the kernel APIC's register page, vcpu/apic.rs). The
/// four tables on the path to `gpa` are copies, every other table is the VM's, which is
/// sound because the VM's tables no longer change once a vCPU runs (`Vm::start`).
pub(crate) struct PrivateView {
    /// The copies, top level first: each points to the next at `gpa`'s index.
    tables: [Pages<Table>; 4],
    gpa: u64,
    hpa: u64,
    /// The VM's own entry for `gpa` (0 where it maps nothing, as at the APIC's page).
    vms: u64,
}

impl PrivateView {
    /// The top table (the vCPU's N_CR3).
    pub(crate) fn root_pa(&self) -> u64 {
        self.tables[0].phys()
    }

    /// Maps `gpa` to the private page (read-only, not executable), or gives it the VM's
    /// entry again. A page the VM maps (guest RAM there) is never hidden. The caller
    /// flushes the vCPU's TLB.
    pub(crate) fn map(&mut self, mapped: bool) {
        let private = (self.hpa & ADDR_MASK) | PRESENT_RO_USER_NX;
        self.tables[3].entries[index(self.gpa, 1)] = if mapped && self.vms == 0 { private } else { self.vms };
    }
}
