//! The console: COM1 under a lock, so that the CPUs' lines do not mix (`say!`), and the
//! count of failed checks (`fail!`).

use crate::pc;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

/// Held while a CPU writes a line.
pub(super) static CONSOLE: AtomicBool = AtomicBool::new(false);

/// COM1 through `core::fmt`.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        pc::print(s);
        Ok(())
    }
}

/// Runs `f` with the console to itself (interrupts off meanwhile).
pub fn console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    pc::without_interrupts(|| {
        while CONSOLE.compare_exchange_weak(false, true, SeqCst, SeqCst).is_err() {
            core::hint::spin_loop();
        }
        let r = f(&mut Console);
        CONSOLE.store(false, SeqCst);
        r
    })
}

/// Prints one line on COM1, under the console lock: `say!("cpu {} online", n)`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::smp::console(|w| {
            let _ = core::fmt::Write::write_fmt(w, format_args!($($arg)*));
            let _ = core::fmt::Write::write_str(w, "\n");
        })
    };
}

/// Checks that failed (each printed its own line).
pub static FAILURES: AtomicU32 = AtomicU32::new(0);

/// Prints a line saying what failed and counts it: `fail!("cpu {} ...", n)`.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {{
        $crate::say!($($arg)*);
        $crate::smp::FAILURES.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }};
}
