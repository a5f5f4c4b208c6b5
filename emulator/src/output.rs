//! The console's output (stdout in a run, a buffer in tests), written by a thread of its
//! own: a device that prints (the seed's serial port, the PC's UART) only appends its bytes
//! to a queue, so no vCPU thread waits on stdout (a terminal, a pipe, a file on a 9p
//! share), and nothing is written under a device's lock.
//!
//! The bytes go out in the order they were queued. The writer takes whatever is queued,
//! writes it, and flushes once nothing new has come for [`FLUSH_DELAY`] (a prompt without
//! its newline shows; a flush per byte would cost a system call per byte). A device wakes
//! the writer when it is idle or a line is complete; in between, the writer looks again
//! every `FLUSH_DELAY`. [`Console::flush`] waits until every byte queued so far is written
//! and flushed: the machine calls it when a run ends, so no byte is lost at exit. A
//! failed write ends the writer's writing; the error is returned by the next `write` (the
//! run then ends with it) and by `flush`.
//!
//! The console's lines and the emulator's messages (`eprintln!` on the vCPU threads: an
//! ignored access, `--trace`) often share a terminal, or a file with `2>&1`. The writer
//! holds the standard error's lock while it writes, as a message holds it while it is
//! written in pieces: a line never lands inside a message, nor a message inside a line.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Output without a newline (a prompt) waits at most this long to be flushed.
pub const FLUSH_DELAY: Duration = Duration::from_millis(20);

/// The console's output, shared by the seed's serial port and the PC's UART.
pub struct Console {
    queue: Arc<Queue>,
    writer: Option<JoinHandle<()>>,
}

struct Queue {
    state: Mutex<State>,
    /// Rung for the writer (bytes, a flush asked, the end) and for `flush`'s waiter.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    /// The writer waits without a timeout (nothing written is unflushed): a device rings.
    idle: bool,
    /// Flushes asked for (`Console::flush`) and done by the writer.
    asked: u64,
    done: u64,
    /// The console is dropped: the writer writes what is queued, flushes and ends.
    closing: bool,
    /// The output failed (its kind and message: `io::Error` is not `Clone`).
    error: Option<(io::ErrorKind, String)>,
}

impl State {
    fn error(&self) -> io::Result<()> {
        self.error.as_ref().map_or(Ok(()), |(kind, what)| Err(io::Error::new(*kind, what.clone())))
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Console {
    /// A console writing to `out` from a thread of its own.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        let queue = Arc::new(Queue { state: Mutex::new(State::default()), changed: Condvar::new() });
        let q = queue.clone();
        let writer = std::thread::Builder::new().name("yakvm-console".into()).spawn(move || write_out(&q, Box::new(out)));
        match writer {
            Ok(writer) => Self { queue, writer: Some(writer) },
            // No thread (the host is out of them): every write reports it.
            Err(e) => {
                queue.lock().error = Some((e.kind(), format!("cannot start the console's writer thread: {e}")));
                Self { queue, writer: None }
            }
        }
    }

    /// Queues `bytes` for the output.
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.queue.lock();
        state.error()?;
        state.bytes.extend_from_slice(bytes);
        if state.idle || bytes.contains(&b'\n') {
            state.idle = false;
            self.queue.changed.notify_all();
        }
        Ok(())
    }

    /// Waits until everything queued so far is written and flushed.
    pub fn flush(&self) -> io::Result<()> {
        let mut state = self.queue.lock();
        if self.writer.is_none() {
            return state.error();
        }
        state.asked += 1;
        let asked = state.asked;
        self.queue.changed.notify_all();
        while state.done < asked && state.error.is_none() {
            state = self.queue.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.error()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.queue.lock().closing = true;
        self.queue.changed.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: see the module's documentation.
fn write_out(queue: &Queue, mut out: Box<dyn Write + Send>) {
    let mut state = queue.lock();
    // Bytes written and not flushed yet.
    let mut unflushed = false;
    loop {
        if state.error.is_some() {
            // The output failed: queued bytes are dropped, flushes are answered (with the
            // error), and the thread waits for the end.
            state.bytes.clear();
            if state.closing {
                return;
            }
            queue.changed.notify_all();
            state = queue.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        if !state.bytes.is_empty() {
            let bytes = std::mem::take(&mut state.bytes);
            drop(state);
            let written = {
                let _messages = io::stderr().lock();
                out.write_all(&bytes)
            };
            state = queue.lock();
            if let Err(e) = written {
                state.error = Some((e.kind(), e.to_string()));
            }
            unflushed = true;
            continue;
        }
        let asked = state.asked;
        if asked > state.done || state.closing || (unflushed && state.idle) {
            drop(state);
            let flushed = {
                let _messages = io::stderr().lock();
                out.flush()
            };
            state = queue.lock();
            if let Err(e) = flushed {
                state.error = Some((e.kind(), e.to_string()));
            }
            unflushed = false;
            state.done = asked;
            queue.changed.notify_all();
            if state.closing && state.bytes.is_empty() {
                return;
            }
            continue;
        }
        if unflushed {
            // Written, not flushed: more may come (the rest of a line); flush after a
            // quiet `FLUSH_DELAY`.
            let (next, waited) = queue.changed.wait_timeout(state, FLUSH_DELAY).unwrap_or_else(PoisonError::into_inner);
            state = next;
            if waited.timed_out() && state.bytes.is_empty() {
                // Nothing came: flush at the next turn (as an idle writer).
                state.idle = true;
            }
            continue;
        }
        state.idle = true;
        state = queue.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test reads back, counting its flushes; it fails once `fail` is set.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<(Vec<u8>, u32, bool)>>);

    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut o = self.0.lock().unwrap();
            if o.2 {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"));
            }
            o.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    impl Out {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().0.clone()
        }
        fn flushes(&self) -> u32 {
            self.0.lock().unwrap().1
        }
    }

    /// Bytes from several threads come out whole and in each thread's order; `flush`
    /// returns once they are all out.
    #[test]
    fn every_byte_comes_out_in_order() {
        let out = Out::default();
        let console = Arc::new(Console::new(out.clone()));
        let writers: Vec<_> = (0..3u8)
            .map(|t| {
                let console = console.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        console.write(&[b'a' + t, (i % 251) as u8]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        console.flush().unwrap();
        let bytes = out.bytes();
        assert_eq!(bytes.len(), 6000);
        for t in 0..3u8 {
            let mine: Vec<u8> = bytes.chunks(2).filter(|c| c[0] == b'a' + t).map(|c| c[1]).collect();
            let expected: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
            assert_eq!(mine, expected, "thread {t}'s bytes");
        }
    }

    /// A prompt (no newline) is flushed once nothing more comes, without anyone asking.
    #[test]
    fn a_prompt_is_flushed_soon() {
        let out = Out::default();
        let console = Console::new(out.clone());
        console.write(b"login: ").unwrap();
        let start = Instant::now();
        while out.flushes() == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never flushed");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.bytes(), b"login: ");
    }

    /// Dropping the console writes what was queued: nothing is lost at the end.
    #[test]
    fn nothing_is_lost_when_the_console_goes() {
        let out = Out::default();
        let console = Console::new(out.clone());
        for _ in 0..100 {
            console.write(b"bye").unwrap();
        }
        drop(console);
        assert_eq!(out.bytes().len(), 300);
    }

    /// A failed output is reported by the next write and by flush.
    #[test]
    fn a_failed_output_is_reported() {
        let out = Out::default();
        let console = Console::new(out.clone());
        out.0.lock().unwrap().2 = true;
        console.write(b"x\n").unwrap();
        assert_eq!(console.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(console.write(b"y").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
