//! IRQFD (yakvm `--kernel-apic --irqfd 0x2a:10000:0x200000`): a host thread signals an
//! eventfd bound to the interrupt message "vector 0x2a to APIC 0", 10000 times, each time
//! after the guest took the interrupt before (it waits for the count the guest keeps at
//! 0x200000); the module delivers each without the emulator on the way. The guest counts
//! the interrupts (vector 0x2a: the dispatcher's IRQ 10 slot; the PICs stay masked),
//! stores the count at 0x200000 and sends the local APIC's EOI; it waits with interrupts
//! enabled, spinning (a HLT with no timer would look like a wait for nothing), until
//! 10000 came.
//!
//! Output on COM1: `irqfd: 10000 interrupts`; exit status 0.
//!
//! Run: `yakvm run --machine pc --kernel-apic --irqfd 0x2a:10000:0x200000 build/guests/irqfd.bin`
#![no_std]
#![no_main]

use yakvm_guests::{exit, pc};

yakvm_guests::entry!(main);

const WANT: u64 = 10_000;
/// Where the count is kept for the host (RAM the guest does not otherwise use).
const COUNTER: u64 = 0x20_0000;
/// Vector 0x2a: the dispatcher's slot 10 (0x20 + 10).
const SLOT: u8 = 10;
const XAPIC_SVR: u64 = 0xfee0_00f0;
const XAPIC_EOI: u64 = 0xfee0_00b0;

fn xapic_write(at: u64, value: u32) {
    // SAFETY: a 32-bit store to a local APIC register (identity mapped, not RAM).
    unsafe { core::ptr::write_volatile(at as *mut u32, value) }
}

fn on_message() {
    // SAFETY: COUNTER is guest RAM no Rust object uses; the host only reads it.
    unsafe { core::ptr::write_volatile(COUNTER as *mut u64, pc::irq_count(SLOT)) };
    xapic_write(XAPIC_EOI, 0);
}

fn main() {
    pc::uart_init(0, pc::MCR_DTR_RTS);
    pc::install();
    pc::pic_init(0);
    pc::set_handler(SLOT, on_message);
    // APIC software-enabled, spurious vector 0xff.
    xapic_write(XAPIC_SVR, 0x1ff);
    pc::sti();
    while pc::irq_count(SLOT) < WANT {
        core::hint::spin_loop();
    }
    pc::cli();
    pc::print("irqfd: ");
    pc::print_u64(pc::irq_count(SLOT));
    pc::print(" interrupts\n");
    exit(0)
}
