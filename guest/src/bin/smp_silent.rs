//! A hostile SMP guest: APs that never answer. The BSP starts the APs in the MP table's
//! order, but the last AP gets INIT and no SIPI (it waits for one for ever), and the one
//! before it is sent into a page that holds only `cli; hlt`. The BSP waits 3 s (PIT) for
//! each, says it did not answer and ends the run with status 2; the run must end although
//! those two vCPUs never will.
//!
//! Output on COM1 (figures on lines that start with two spaces), with `--smp 4`:
//! ```text
//! silent: cpu 2 is started into cli; hlt, cpu 3 gets no SIPI
//! mp table: 4 cpus (apic ids 0 1 2 3), bsp 0, local apic at 0xfee00000, io apic 4 at 0xfec00000
//! cpu 0 online
//! cpu 1 online
//! cpu 2 did not answer
//! cpu 3 did not answer
//! smp FAIL: 2 cpus did not answer
//! ```
//! Exit status 2 as above; 1 with fewer than 2 APs (`silent FAIL: ...`).
//!
//! Run: `yakvm run --machine pc --smp 4 build/guests/smp_silent.bin`
#![no_std]
#![no_main]

use yakvm_guests::smp::{self, *};
use yakvm_guests::{exit, pc, say};

yakvm_guests::entry!(main);

fn main() {
    // Which APs go silent: the last two in the table (boot reads it again and reports
    // a bad one).
    let (dead, never) = match smp::mp_table() {
        Ok(mp) if mp.aps().count() >= 2 => {
            let last = mp.aps().last().unwrap_or(0);
            (mp.aps().filter(|&id| id != last).last().unwrap_or(0), last)
        }
        _ => {
            pc::uart_init(0, pc::MCR_DTR_RTS);
            say!("silent FAIL: needs 2 aps or more (--smp 3 or more)");
            exit(STATUS_FAILED);
        }
    };
    pc::uart_init(0, pc::MCR_DTR_RTS);
    say!("silent: cpu {dead} is started into cli; hlt, cpu {never} gets no SIPI");
    let (_, missing) = smp::boot(ap_main, |id| match id {
        id if id == dead => Start::Dead,
        id if id == never => Start::Never,
        _ => Start::Normal,
    });
    if missing != 0 {
        say!("smp FAIL: {missing} cpus did not answer");
        exit(STATUS_NO_ANSWER);
    }
    say!("silent FAIL: every cpu answered");
    exit(STATUS_FAILED)
}

fn ap_main(_cpu: usize) -> ! {
    smp::park()
}
