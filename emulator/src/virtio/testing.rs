//! A split ring in a small guest memory, for the devices' unit tests: the driver's side
//! (descriptors, the available ring) written by hand, the device's answers read back.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::QueueSlot;

pub const MEM: usize = 1 << 20;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// A descriptor as a test writes it: address, length, flags.
pub type Desc = (u64, u32, u16);

pub struct Ring {
    pub mem: GuestMemoryMmap,
    pub slot: QueueSlot,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    pub fn new(size: u16) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let mut queue = Queue::new(size).unwrap();
        queue.set_size(size);
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        Self { mem, slot: QueueSlot { queue, live: true }, size, next_desc: 0, avail_idx: 0 }
    }

    /// Writes descriptor `index` as given.
    pub fn desc_raw(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = DESC + 16 * u64::from(index);
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Posts a chain of (addr, len, flags) linked in order (NEXT added but on the last),
    /// descriptors taken round the table; returns its head.
    pub fn post(&mut self, descs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = self.next_desc;
            let next = (index + 1) % self.size;
            let flags = if i + 1 == descs.len() { flags } else { flags | F_NEXT };
            self.desc_raw(index, addr, len, flags, next);
            self.next_desc = next;
        }
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_obj(self.avail_idx, GuestAddress(AVAIL + 2)).unwrap();
        head
    }

    pub fn fill(&self, at: u64, len: usize, byte: u8) {
        self.mem.write_slice(&vec![byte; len], GuestAddress(at)).unwrap();
    }

    pub fn write(&self, at: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(at)).unwrap();
    }

    pub fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    /// Used ring entry `i`: (head, len).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(i % self.size);
        (self.mem.read_obj(GuestAddress(at)).unwrap(), self.mem.read_obj(GuestAddress(at + 4)).unwrap())
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
}
