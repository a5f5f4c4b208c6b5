//! The host's entropy: getrandom(2), for the virtio entropy device (`virtio::rng`).

use std::io;

/// Fills `buf` from the kernel's random pool (getrandom(2) without flags: it blocks only
/// until the pool is initialised at the host's boot, never afterwards).
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes at `rest.as_mut_ptr()`, a
        // live, writable slice of exactly that length that nothing else borrows.
        let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}
