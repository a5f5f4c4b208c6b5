// SPDX-License-Identifier: GPL-2.0
//! Nested page tables (AMD APM vol. 2, 15.25): the guest-physical to host-physical map.
//! Four levels of 4 KiB pages; only the pages of guest RAM are ever present, so every
//! other guest-physical access faults (#NPF) and becomes an MMIO exit.

use crate::ffi::mem::{Pages, Table};
use kernel::prelude::*;

/// Present, writable, user (QEMU walks nested tables as user accesses).
const PRESENT_RW_USER: u64 = 0b111;
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
