//! A bare-metal driver's view of a virtio 1.x PCI function (the modern transport,
//! virtio 1.2 4.1), shared by the hostile drivers (`virtio_hostile` for the disk,
//! `net_hostile` for the network): it finds the function by scanning bus 0's
//! configuration space (mechanism #1), places BAR 0, reads the vendor capabilities and
//! gives the common configuration's registers and each queue's notification. No
//! interrupts: the drivers poll.

use core::ptr::{read_volatile, write_volatile};
use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const ENABLE: u32 = 1 << 31;

const COMMAND: u8 = 0x04;
const COMMAND_MEMORY: u32 = 1 << 1;
const COMMAND_BUS_MASTER: u32 = 1 << 2;
const BAR0: u8 = 0x10;
const CAPABILITIES: u8 = 0x34;
const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;

// The common configuration (virtio 1.2, 4.1.4.3).
pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const DEVICE_FEATURE: u64 = 0x04;
pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const DRIVER_FEATURE: u64 = 0x0c;
pub const DEVICE_STATUS: u64 = 0x14;
pub const QUEUE_SELECT: u64 = 0x16;
pub const QUEUE_SIZE: u64 = 0x18;
pub const QUEUE_ENABLE: u64 = 0x1c;
pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub const QUEUE_DESC: u64 = 0x20;
pub const QUEUE_DRIVER: u64 = 0x28;
pub const QUEUE_DEVICE: u64 = 0x30;

pub const ACKNOWLEDGE: u8 = 1;
pub const DRIVER: u8 = 2;
pub const DRIVER_OK: u8 = 4;
pub const FEATURES_OK: u8 = 8;
pub const NEEDS_RESET: u8 = 0x40;

fn mmio_read<T>(addr: u64) -> T {
    // SAFETY: a read of the device's BAR (below 4 GiB, identity-mapped).
    unsafe { read_volatile(addr as *const T) }
}

fn mmio_write<T>(addr: u64, value: T) {
    // SAFETY: a write to the device's BAR, a MOV of T's width.
    unsafe { write_volatile(addr as *mut T, value) }
}

pub fn cfg_read32(devfn: u32, register: u8) -> u32 {
    // SAFETY: configuration mechanism #1; port accesses exit to the emulator.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(ENABLE | devfn << 8 | u32::from(register & 0xfc));
        Port::<u32>::new(CONFIG_DATA).read()
    }
}

pub fn cfg_write32(devfn: u32, register: u8, value: u32) {
    // SAFETY: as `cfg_read32`.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(ENABLE | devfn << 8 | u32::from(register & 0xfc));
        Port::<u32>::new(CONFIG_DATA).write(value);
    }
}

/// The function as found: where its common configuration is and how its queues notify.
pub struct Dev {
    pub devfn: u32,
    pub common: u64,
    /// Queue 0's and queue 1's notification addresses.
    notify: [u64; 2],
}

impl Dev {
    pub fn r8(&self, reg: u64) -> u8 {
        mmio_read(self.common + reg)
    }
    pub fn r16(&self, reg: u64) -> u16 {
        mmio_read(self.common + reg)
    }
    pub fn r32(&self, reg: u64) -> u32 {
        mmio_read(self.common + reg)
    }
    pub fn w8(&self, reg: u64, v: u8) {
        mmio_write(self.common + reg, v)
    }
    pub fn w16(&self, reg: u64, v: u16) {
        mmio_write(self.common + reg, v)
    }
    pub fn w32(&self, reg: u64, v: u32) {
        mmio_write(self.common + reg, v)
    }
    pub fn w64(&self, reg: u64, v: u64) {
        self.w32(reg, v as u32);
        self.w32(reg + 4, (v >> 32) as u32);
    }
    pub fn status(&self) -> u8 {
        self.r8(DEVICE_STATUS)
    }

    /// Queue `queue`'s (0 or 1) notification: its index, a 16-bit MOV (as Linux writes it).
    pub fn notify(&self, queue: u16) {
        mmio_write::<u16>(self.notify[usize::from(queue)], queue);
    }

    /// A reset (status 0): whether it reads back 0.
    pub fn reset(&self) -> bool {
        self.w8(DEVICE_STATUS, 0);
        self.status() == 0
    }

    /// ACKNOWLEDGE, DRIVER, then `features` (all of which the device must offer) and
    /// FEATURES_OK: whether the device kept FEATURES_OK.
    pub fn negotiate(&self, features: u64) -> bool {
        self.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
        self.w32(DEVICE_FEATURE_SELECT, 1);
        let high = self.r32(DEVICE_FEATURE);
        self.w32(DEVICE_FEATURE_SELECT, 0);
        let low = self.r32(DEVICE_FEATURE);
        let offered = u64::from(high) << 32 | u64::from(low);
        if offered & features != features {
            return false;
        }
        self.w32(DRIVER_FEATURE_SELECT, 0);
        self.w32(DRIVER_FEATURE, features as u32);
        self.w32(DRIVER_FEATURE_SELECT, 1);
        self.w32(DRIVER_FEATURE, (features >> 32) as u32);
        self.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.status() & FEATURES_OK != 0
    }

    /// Queue `queue` with `size` entries and its three rings at these addresses, enabled:
    /// whether the size and the enable read back.
    pub fn queue(&self, queue: u16, size: u16, desc: u64, driver: u64, device: u64) -> bool {
        self.w16(QUEUE_SELECT, queue);
        self.w16(QUEUE_SIZE, size);
        self.w64(QUEUE_DESC, desc);
        self.w64(QUEUE_DRIVER, driver);
        self.w64(QUEUE_DEVICE, device);
        self.w16(QUEUE_ENABLE, 1);
        self.r16(QUEUE_SIZE) == size && self.r16(QUEUE_ENABLE) == 1
    }

    pub fn driver_ok(&self) {
        self.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }
}

/// Scans bus 0 for the function whose vendor and device ID register reads `id`, places
/// its BAR 0 at `bar` and enables memory and bus mastering, finds its common
/// configuration and notify capabilities (both in BAR 0) and where queues 0 and 1 notify.
pub fn discover(id: u32, bar: u64) -> Option<Dev> {
    let devfn = (0..32u32).map(|d| d << 3).find(|&df| cfg_read32(df, 0) == id)?;
    cfg_write32(devfn, BAR0, bar as u32);
    cfg_write32(devfn, COMMAND, COMMAND_MEMORY | COMMAND_BUS_MASTER);
    let (mut common, mut notify, mut multiplier) = (None, None, 0);
    let mut cap = cfg_read32(devfn, CAPABILITIES) as u8;
    for _ in 0..48 {
        if cap == 0 {
            break;
        }
        let head = cfg_read32(devfn, cap);
        if head as u8 == CAP_VENDOR {
            let in_bar = cfg_read32(devfn, cap + 4) as u8;
            let offset = u64::from(cfg_read32(devfn, cap + 8));
            match ((head >> 24) as u8, in_bar) {
                (CFG_COMMON, 0) => common = Some(bar + offset),
                (CFG_NOTIFY, 0) => {
                    notify = Some(bar + offset);
                    multiplier = u64::from(cfg_read32(devfn, cap + 16));
                }
                _ => {}
            }
        }
        cap = (head >> 8) as u8;
    }
    let mut dev = Dev { devfn, common: common?, notify: [0; 2] };
    // Queue 1's first, so that queue 0 is the one selected after.
    for queue in [1u16, 0] {
        dev.w16(QUEUE_SELECT, queue);
        dev.notify[usize::from(queue)] = notify? + u64::from(dev.r16(QUEUE_NOTIFY_OFF)) * multiplier;
    }
    Some(dev)
}
