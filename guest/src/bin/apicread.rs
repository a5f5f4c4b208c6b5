//! The kernel APIC (yakvm `--kernel-apic`): 100000 reads of the APIC ID through the xAPIC
//! page (0xfee00020, each a nested page fault the module decodes and answers), then the
//! x2APIC mode switch and its #GP rules, then 100000 reads of the APIC ID through its MSR
//! (0x802), each a #VMEXIT the module answers. None may reach userspace (the test checks
//! `--stats`). A figures line (two leading spaces) gives the guest TSC cycles per CPUID,
//! per xAPIC read and per x2APIC read (100000 of each).
//!
//! Output on COM1:
//! ```text
//! apicread: x2apic offered, apic base 0xfee00900
//! apicread: 100000 xapic id reads, id 0
//! apicread: x2apic on, apic base 0xfee00d00, id 0, ldr 0x1
//! apicread ok: 100000 x2apic id reads
//!   apicread cycles per op: cpuid C, xapic read X, x2apic read Y
//! ```
//! Exit status 0; 1 with a line `apicread FAIL: ...` when a check fails; 2 when CPUID does
//! not offer x2APIC.
//!
//! Run: `yakvm run --machine pc --kernel-apic --stats build/guests/apicread.bin`
#![no_std]
#![no_main]

use yakvm_guests::{cpuid, exit, print, print_u64, rdmsr, trap, wrmsr};

yakvm_guests::entry!(main);

const READS: u32 = 100_000;
const APIC_BASE: u32 = 0x1b;
const BASE_EXTD: u64 = 1 << 10;
const X2APIC_ID: u32 = 0x802;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_LDR: u32 = 0x80d;
const X2APIC_DFR: u32 = 0x80e;
const X2APIC_SELF_IPI: u32 = 0x83f;
const CPUID1_ECX_X2APIC: u32 = 1 << 21;
/// The xAPIC page's ID register (guest-physical = virtual: the first 4 GiB are identity mapped).
const XAPIC_ID: u64 = 0xfee0_0020;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn xapic_id() -> u32 {
    let value: u32;
    // SAFETY: a 32-bit load from the xAPIC page's ID register (identity mapped, the
    // local APIC answers it); it changes no memory.
    unsafe {
        core::arch::asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) XAPIC_ID, v = out(reg) value, options(nostack, preserves_flags, readonly))
    };
    value
}

fn print_hex(n: u64) {
    print("0x");
    let mut started = false;
    for shift in (0..16).rev() {
        let d = ((n >> (shift * 4)) & 0xf) as u8;
        if d != 0 || started || shift == 0 {
            started = true;
            let c = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            let s = [c];
            print(core::str::from_utf8(&s).unwrap_or("?"));
        }
    }
}

fn fail(what: &str) -> ! {
    print("apicread FAIL: ");
    print(what);
    print("\n");
    exit(1)
}

fn main() {
    trap::install();
    if cpuid(1, 0)[2] & CPUID1_ECX_X2APIC == 0 {
        print("apicread: x2apic not offered\n");
        exit(2);
    }
    let Some(base) = rdmsr(APIC_BASE) else { fail("IA32_APIC_BASE raised #GP") };
    print("apicread: x2apic offered, apic base ");
    print_hex(base);
    print("\n");
    if rdmsr(X2APIC_ID).is_some() {
        fail("the x2APIC ID MSR read in xAPIC mode");
    }
    let t0 = rdtsc();
    let mut sum = 0u32;
    for i in 0..READS {
        sum = sum.wrapping_add(cpuid(i & 1, 0)[0]);
    }
    core::hint::black_box(sum);
    let t1 = rdtsc();
    let xid = xapic_id();
    let mut wrong = 0u32;
    for _ in 0..READS {
        wrong += u32::from(xapic_id() != xid);
    }
    let t2 = rdtsc();
    if wrong != 0 {
        fail("the xAPIC ID changed between reads");
    }
    print("apicread: ");
    print_u64(READS.into());
    print(" xapic id reads, id ");
    print_u64((xid >> 24).into());
    print("\n");
    if !wrmsr(APIC_BASE, base | BASE_EXTD) {
        fail("x2APIC could not be enabled");
    }
    let x2base = rdmsr(APIC_BASE).unwrap_or(0);
    let id = rdmsr(X2APIC_ID).unwrap_or(u64::MAX);
    let ldr = rdmsr(X2APIC_LDR).unwrap_or(u64::MAX);
    print("apicread: x2apic on, apic base ");
    print_hex(x2base);
    print(", id ");
    print_u64(id);
    print(", ldr ");
    print_hex(ldr);
    print("\n");
    // The SDM's #GP rules: back to xAPIC directly, read-only and write-only registers,
    // the DFR (no x2APIC register), reserved SELF IPI bits.
    if wrmsr(APIC_BASE, base) {
        fail("x2APIC to xAPIC did not raise #GP");
    }
    if wrmsr(X2APIC_ID, 5) || rdmsr(X2APIC_EOI).is_some() || rdmsr(X2APIC_DFR).is_some() || wrmsr(X2APIC_SELF_IPI, 0x1_0040) {
        fail("an x2APIC access that must raise #GP did not");
    }
    let mut wrong = 0u32;
    let t2b = rdtsc();
    for _ in 0..READS {
        // SAFETY: x2APIC mode is on: the ID MSR exists, RDMSR only reads it.
        let value = unsafe { x86_64::registers::model_specific::Msr::new(X2APIC_ID).read() };
        wrong += u32::from(value != id);
    }
    if wrong != 0 {
        fail("the x2APIC ID changed between reads");
    }
    let t3 = rdtsc();
    print("apicread ok: ");
    print_u64(READS.into());
    print(" x2apic id reads\n");
    let per = |a: u64, b: u64| b.wrapping_sub(a) / u64::from(READS);
    print("  apicread cycles per op: cpuid ");
    print_u64(per(t0, t1));
    print(", xapic read ");
    print_u64(per(t1, t2));
    print(", x2apic read ");
    print_u64(per(t2b, t3));
    print("\n");
    exit(0)
}
