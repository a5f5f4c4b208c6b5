//! The test device (`--testdev`, pc machine only, off by default): a test aid, not a PC
//! device. It answers where QEMU's `pc-testdev` does, so that the kvm-unit-tests that
//! drive it (`ioapic`, `realmode`, `emulator`: docs/conformance.md) can run on yakvm:
//!
//! | where | what |
//! |---|---|
//! | ports 0xe0-0xe3 | a 32-bit scratch register: an access of any width at any of its bytes reads back what was written there |
//! | ports 0xe8-0xeb | the same register, byte by byte |
//! | ports 0xe4-0xe7 | "flush page": a dword write names a guest page; accepted and counted, nothing to do (below) |
//! | ports 0x2000-0x2017 | interrupt lines: a write of V to 0x2000 + N sets line N high (V ≠ 0) or low; lines 0-15 are the ISA lines (both PICs and the I/O APIC), 16-23 the I/O APIC's other pins, wired as PCI's INTx lines (active low, `ioapic.rs`) |
//! | MMIO 0xff000000-0xff00ffff | 64 KiB of test memory that is not RAM: every access is MMIO, and reads back what was written |
//!
//! A write to an interrupt line's port sets that one line, whatever the access's width
//! (`realmode` raises IRQ 11 with an `outl`). The flush port asks QEMU to drop the host's
//! mapping of a page so that KVM's next access to it faults; yakvm keeps no host-side state
//! of a guest page that such a flush would drop, so the write only counts. Reads of the
//! write-only ports return all ones; bytes of an access past the end of a register or of
//! the memory read as all ones and are dropped on writes, counted as ignored.
//!
//! The device is a plain state machine: its interrupt lines are a [`Lines`], given by the
//! board (`pc::board`), a recording fake in the tests.

use std::io;

use crate::bus::{le, BusDevice, Ctx, Effect, Ignored};

/// The scratch register (any width).
pub const SCRATCH_PORT: u16 = 0xe0;
/// The flush-page port (a dword: a guest-physical address).
pub const FLUSH_PORT: u16 = 0xe4;
/// The scratch register again, byte-wide.
pub const SCRATCH_BYTES_PORT: u16 = 0xe8;
/// The width of the scratch register and of the flush port.
pub const REGISTER_LEN: u16 = 4;
/// Interrupt line N at `IRQ_PORT_BASE + N`.
pub const IRQ_PORT_BASE: u16 = 0x2000;
/// The I/O APIC's pins: lines 0-23.
pub const IRQ_LINES: u16 = 24;
/// The test memory: guest-physical, above the I/O and local APICs and below 4 GiB.
pub const MEMORY_BASE: u64 = 0xff00_0000;
pub const MEMORY_SIZE: u64 = 0x1_0000;

/// The interrupt lines the device drives (the board's wiring).
pub trait Lines: Send {
    /// Line `line` (0 to 23) goes to `high`.
    fn set_level(&mut self, line: u8, high: bool);
}

/// What the device did, for tests and `--stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub flushes: u64,
    pub line_writes: u64,
}

/// The test device: one device at all its ranges, told apart by the range's base.
pub struct TestDev<L> {
    scratch: [u8; REGISTER_LEN as usize],
    memory: Box<[u8]>,
    lines: L,
    ignored: Ignored,
    pub stats: Stats,
}

impl<L: Lines> TestDev<L> {
    pub fn new(lines: L, ignored: Ignored) -> Self {
        Self { scratch: [0; REGISTER_LEN as usize], memory: vec![0; MEMORY_SIZE as usize].into_boxed_slice(), lines, ignored, stats: Stats::default() }
    }

    /// The bytes of `store` that `offset..offset + len` covers (fewer than `len` where the
    /// access runs past its end).
    fn window(store: &mut [u8], offset: u64, len: usize) -> &mut [u8] {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(store.len());
        let end = start.saturating_add(len).min(store.len());
        &mut store[start..end]
    }

    fn store(&mut self, base: u64) -> Option<&mut [u8]> {
        match base {
            MEMORY_BASE => Some(&mut self.memory),
            b if b == u64::from(SCRATCH_PORT) || b == u64::from(SCRATCH_BYTES_PORT) => Some(&mut self.scratch),
            _ => None,
        }
    }

    fn name(base: u64) -> &'static str {
        match base {
            MEMORY_BASE => "test memory",
            b if b == u64::from(FLUSH_PORT) => "testdev flush port",
            b if b == u64::from(IRQ_PORT_BASE) => "testdev irq line",
            _ => "testdev scratch register",
        }
    }
}

impl<L: Lines> BusDevice for TestDev<L> {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        data.fill(0xff);
        let len = data.len();
        let Some(store) = self.store(base) else {
            self.ignored.note(format_args!("{len}-byte read of the write-only {} at {:#x}", Self::name(base), base + offset));
            return;
        };
        let window = Self::window(store, offset, len);
        let inside = window.len();
        data[..inside].copy_from_slice(window);
        if inside < len {
            self.ignored.note(format_args!("{len}-byte read at {:#x} past the end of the {} (all ones)", base + offset, Self::name(base)));
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8], _: &Ctx) -> io::Result<Effect> {
        let len = data.len();
        if base == u64::from(IRQ_PORT_BASE) {
            // `offset` < IRQ_LINES: the range is that long.
            self.lines.set_level(offset as u8, le(data) != 0);
            self.stats.line_writes += 1;
        } else if base == u64::from(FLUSH_PORT) {
            if offset == 0 && len == usize::from(REGISTER_LEN) {
                self.stats.flushes += 1;
            } else {
                self.ignored.note(format_args!("{len}-byte write of {:#x} to the {} at {:#x} (a dword at {FLUSH_PORT:#x} only)", le(data), Self::name(base), base + offset));
            }
        } else if let Some(store) = self.store(base) {
            let window = Self::window(store, offset, len);
            let inside = window.len();
            window.copy_from_slice(&data[..inside]);
            if inside < len {
                self.ignored.note(format_args!("{len}-byte write at {:#x} past the end of the {} (cut short)", base + offset, Self::name(base)));
            }
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::bus::tests::CTX;
    use crate::bus::{Bus, Span};

    /// Records every line change.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(u8, bool)>>>);

    impl Lines for Recorder {
        fn set_level(&mut self, line: u8, high: bool) {
            self.0.lock().unwrap().push((line, high));
        }
    }

    /// The device at its ranges, as the pc board puts it.
    fn buses() -> (Bus, Bus, Recorder, Arc<Mutex<TestDev<Recorder>>>) {
        let ignored = Ignored::default();
        let lines = Recorder::default();
        let dev = Arc::new(Mutex::new(TestDev::new(lines.clone(), ignored.clone())));
        let mut ports = Bus::new("port", Span::Bytes, ignored.clone());
        let mut mmio = Bus::new("MMIO", Span::Whole, ignored);
        ports.insert("scratch", SCRATCH_PORT.into(), 4, Span::Whole, dev.clone()).unwrap();
        ports.insert("flush", FLUSH_PORT.into(), 4, Span::Whole, dev.clone()).unwrap();
        ports.insert("bytes", SCRATCH_BYTES_PORT.into(), 4, Span::Bytes, dev.clone()).unwrap();
        ports.insert("irq", IRQ_PORT_BASE.into(), IRQ_LINES.into(), Span::Whole, dev.clone()).unwrap();
        mmio.insert("memory", MEMORY_BASE, MEMORY_SIZE, Span::Whole, dev.clone()).unwrap();
        (ports, mmio, lines, dev)
    }

    fn read(bus: &mut Bus, addr: u64, len: usize) -> u64 {
        let mut b = vec![0; len];
        bus.read(addr, &mut b, &CTX);
        le(&b)
    }

    fn write(bus: &mut Bus, addr: u64, value: u64, len: usize) {
        assert_eq!(bus.write(addr, &value.to_le_bytes()[..len], &CTX).unwrap(), Effect::Continue);
    }

    /// Each width at each byte of the scratch register reads back its bytes; the byte-wide
    /// copy at 0xe8 is the same register.
    #[test]
    fn the_scratch_register_keeps_what_each_width_wrote() {
        let (mut ports, _, _, _) = buses();
        write(&mut ports, 0xe0, 0x1122_3344, 4);
        assert_eq!(read(&mut ports, 0xe0, 4), 0x1122_3344);
        write(&mut ports, 0xe1, 0xaabb, 2);
        assert_eq!(read(&mut ports, 0xe0, 4), 0x11aa_bb44);
        assert_eq!(read(&mut ports, 0xe2, 1), 0xaa);
        write(&mut ports, 0xe0, 0x99, 1);
        assert_eq!(read(&mut ports, 0xe0, 2), 0xbb99);
        // 0xe8: byte by byte, the same bytes; a dword there is split by the bus.
        assert_eq!(read(&mut ports, 0xe8, 4), 0x11aa_bb99);
        write(&mut ports, 0xe8, 0x0102_0304, 4);
        assert_eq!(read(&mut ports, 0xe0, 4), 0x0102_0304);
        // A word at 0xe3 runs past the register: its second byte reads all ones.
        assert_eq!(read(&mut ports, 0xe3, 2), 0xff01);
    }

    /// `rep insb` from the scratch register, as kvm-unit-tests' emulator test does it
    /// (after an `outw` of 0x9999): every byte is its low byte.
    #[test]
    fn string_reads_repeat_the_low_byte() {
        let (mut ports, _, _, _) = buses();
        write(&mut ports, 0xe0, 0x9999, 2);
        for _ in 0..3 {
            assert_eq!(read(&mut ports, 0xe0, 1), 0x99);
        }
    }

    /// A write to 0x2000 + N sets line N to (value ≠ 0), at any width; the flush port takes
    /// dwords; reads of both are all ones.
    #[test]
    fn line_ports_set_levels_and_flushes_count() {
        let (mut ports, _, lines, dev) = buses();
        write(&mut ports, 0x200e, 1, 1);
        write(&mut ports, 0x200e, 0, 1);
        write(&mut ports, 0x200b, 1, 4);
        write(&mut ports, 0x2017, 0x100, 2);
        assert_eq!(*lines.0.lock().unwrap(), [(14, true), (14, false), (11, true), (23, true)]);
        assert_eq!(read(&mut ports, 0x200e, 1), 0xff);
        write(&mut ports, 0xe4, 0x1234_5000, 4);
        write(&mut ports, 0xe4, 0x12, 1);
        assert_eq!(read(&mut ports, 0xe4, 4), 0xffff_ffff);
        assert_eq!(dev.lock().unwrap().stats, Stats { flushes: 1, line_writes: 4 });
        // Just past the lines: nothing there.
        write(&mut ports, 0x2018, 1, 1);
        assert_eq!(lines.0.lock().unwrap().len(), 4);
        assert_eq!(ports.ignored().count(), 4, "the byte to the flush port, the two reads of write-only ports, 0x2018");
    }

    /// The test memory reads back what was written, at every width and across its pages;
    /// an access past its end is cut short.
    #[test]
    fn the_test_memory_reads_back_what_was_written() {
        let (_, mut mmio, _, _) = buses();
        assert_eq!(read(&mut mmio, MEMORY_BASE, 8), 0, "zero at start");
        write(&mut mmio, MEMORY_BASE, 0x8877_6655_4433_2211, 8);
        assert_eq!(read(&mut mmio, MEMORY_BASE, 8), 0x8877_6655_4433_2211);
        assert_eq!(read(&mut mmio, MEMORY_BASE + 3, 2), 0x5544);
        write(&mut mmio, MEMORY_BASE + 0xfff, 0x88aa, 2);
        assert_eq!(read(&mut mmio, MEMORY_BASE + 0xfff, 2), 0x88aa);
        assert_eq!(read(&mut mmio, MEMORY_BASE + 0x1000, 1), 0x88);
        let last = MEMORY_BASE + MEMORY_SIZE - 2;
        write(&mut mmio, last, 0x4433_2211, 4);
        assert_eq!(read(&mut mmio, last, 4), 0xffff_2211);
        assert_eq!(read(&mut mmio, MEMORY_BASE + MEMORY_SIZE, 1), 0xff, "nothing past it");
    }
}
