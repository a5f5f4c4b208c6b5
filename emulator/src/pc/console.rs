//! The host side of the guest's console: the escape key that lets the user leave the
//! guest, and the terminal's raw mode.
//!
//! # The escape key
//!
//! As in QEMU's `-nographic`, Ctrl-A is the escape key, and the byte after it a command:
//!
//! | keys                | effect                                                   |
//! |---------------------|----------------------------------------------------------|
//! | Ctrl-A x            | quit                                                     |
//! | Ctrl-A h, Ctrl-A ?  | print help ([`HELP`])                                    |
//! | Ctrl-A Ctrl-A       | send one Ctrl-A to the guest                             |
//! | Ctrl-A, other byte  | nothing: both are dropped, as QEMU drops unknown commands |
//!
//! [`Escape`] keeps the state between buffers, so a Ctrl-A at the end of one read and
//! its command at the start of the next work the same as in one.
//!
//! # Raw mode
//!
//! [`RawMode`] puts the terminal in the mode QEMU's stdio backend uses: input raw (no line
//! editing, no echo, no signals from Ctrl-C or Ctrl-Z, which go to the guest; no CR-to-NL
//! or flow-control translation; 8-bit characters; reads return after one byte), but output
//! processing (`OPOST`) left on, unlike `cfmakeraw`. With it on, a guest that ends its
//! lines with a bare "\n" still gets a carriage return (the terminal's `ONLCR`, when set, as
//! it is by default), and a "\r\n" harmlessly becomes "\r\r\n". Signals are off as in
//! QEMU's `mon:stdio` (its `-nographic` console): Ctrl-C interrupts the guest's program,
//! not the VMM. The saved settings
//! are restored on drop, or earlier by [`RawMode::restore`].

use std::cell::Cell;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::termios::{
    tcgetattr, tcsetattr, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg,
    SpecialCharacterIndices, Termios,
};

/// The escape key, Ctrl-A.
pub const ESCAPE: u8 = 0x01;
/// After the escape key: quit.
const CMD_QUIT: u8 = b'x';
/// After the escape key: help.
const CMD_HELP: u8 = b'h';
/// After the escape key: help, too.
const CMD_HELP_ALT: u8 = b'?';

/// The help text for [`Key::Help`]. Its lines end in "\n" alone: in raw mode the
/// terminal's output processing (`ONLCR`) adds the carriage returns.
pub const HELP: &str = "C-a h    print this help\n\
                        C-a x    exit\n\
                        C-a C-a  send C-a\n";

/// What a key typed on the console means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Send this byte to the guest.
    Send(u8),
    /// The user asked to quit (Ctrl-A x).
    Quit,
    /// The user asked for help (Ctrl-A h or Ctrl-A ?).
    Help,
    /// Nothing to do: an escape key, waiting for its command, or an unknown command.
    Nothing,
}

/// The escape-key state machine. See the [module documentation](self).
#[derive(Debug, Default, Clone)]
pub struct Escape {
    /// The last byte was the escape key.
    escaped: bool,
}

impl Escape {
    /// A state machine not in the middle of an escape.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the next byte typed means.
    pub fn feed(&mut self, byte: u8) -> Key {
        if !std::mem::take(&mut self.escaped) {
            if byte == ESCAPE {
                self.escaped = true;
                return Key::Nothing;
            }
            return Key::Send(byte);
        }
        match byte {
            ESCAPE => Key::Send(ESCAPE),
            CMD_QUIT => Key::Quit,
            CMD_HELP | CMD_HELP_ALT => Key::Help,
            _ => Key::Nothing,
        }
    }

    /// Sorts a buffer of typed bytes, up to the first command for the caller: appends
    /// those for the guest to `to_guest` and returns the command with how many bytes of
    /// `input` it used.
    ///
    /// At a quit or help command, it stops just after the command's byte and returns
    /// `(Some(Key::Quit), used)` or `(Some(Key::Help), used)`: the bytes before the
    /// command are in `to_guest`, and the caller, after acting on the command, offers the
    /// rest, `&input[used..]`, again (for quit it may just stop). Otherwise it returns
    /// `(None, input.len())`. It uses at least one byte of a non-empty `input`, so a loop
    /// offering the rest until it is empty ends.
    pub fn filter(&mut self, input: &[u8], to_guest: &mut Vec<u8>) -> (Option<Key>, usize) {
        for (i, &byte) in input.iter().enumerate() {
            match self.feed(byte) {
                Key::Send(b) => to_guest.push(b),
                Key::Nothing => {}
                key @ (Key::Help | Key::Quit) => return (Some(key), i + 1),
            }
        }
        (None, input.len())
    }
}

/// The terminal in raw mode, restored to its saved settings on drop.
/// See the [module documentation](self).
#[derive(Debug)]
pub struct RawMode {
    /// A duplicate of the terminal's file descriptor.
    fd: OwnedFd,
    /// The settings before raw mode.
    saved: Termios,
    restored: Cell<bool>,
}

impl RawMode {
    /// Puts stdin in raw mode if it is a terminal; Ok(None) when it is not a terminal.
    pub fn enable() -> io::Result<Option<RawMode>> {
        Self::enable_on(io::stdin().as_fd())
    }

    /// Puts the terminal `fd` in raw mode; Ok(None) when `fd` is not a terminal.
    pub fn enable_on(fd: BorrowedFd<'_>) -> io::Result<Option<RawMode>> {
        if !fd.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        make_raw(&mut raw);
        let fd = fd.try_clone_to_owned()?;
        tcsetattr(&fd, SetArg::TCSANOW, &raw)?;
        Ok(Some(RawMode {
            fd,
            saved,
            restored: Cell::new(false),
        }))
    }

    /// Restores the saved terminal settings. Only the first call (or the drop, if there
    /// was none) does anything; a failure is ignored, there being nothing better to do
    /// with a terminal that went away.
    pub fn restore(&self) {
        if !self.restored.replace(true) {
            let _ = tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Raw input, 8-bit characters, output processing kept on: QEMU's stdio settings.
fn make_raw(t: &mut Termios) {
    t.input_flags.remove(
        InputFlags::IGNBRK
            | InputFlags::BRKINT
            | InputFlags::PARMRK
            | InputFlags::ISTRIP
            | InputFlags::INLCR
            | InputFlags::IGNCR
            | InputFlags::ICRNL
            | InputFlags::IXON,
    );
    t.output_flags.insert(OutputFlags::OPOST);
    t.local_flags.remove(
        LocalFlags::ECHO
            | LocalFlags::ECHONL
            | LocalFlags::ICANON
            | LocalFlags::IEXTEN
            | LocalFlags::ISIG,
    );
    t.control_flags
        .remove(ControlFlags::CSIZE | ControlFlags::PARENB);
    t.control_flags.insert(ControlFlags::CS8);
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filters all of `input` as a caller would, collecting the commands.
    fn filter_all(e: &mut Escape, input: &[u8]) -> (Vec<u8>, Vec<Key>) {
        let mut out = Vec::new();
        let mut keys = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let (key, used) = e.filter(rest, &mut out);
            assert!(used >= 1 && used <= rest.len());
            rest = &rest[used..];
            match key {
                Some(Key::Quit) => {
                    keys.push(Key::Quit);
                    break;
                }
                Some(key) => keys.push(key),
                None => assert!(rest.is_empty()),
            }
        }
        (out, keys)
    }

    #[test]
    fn plain_bytes_pass_through() {
        let mut e = Escape::new();
        let all: Vec<u8> = (0..=u8::MAX).filter(|&b| b != ESCAPE).collect();
        assert_eq!(filter_all(&mut e, &all), (all.clone(), vec![]));
        assert_eq!(e.feed(b'x'), Key::Send(b'x'));
        assert_eq!(e.feed(b'\r'), Key::Send(b'\r'));
        assert_eq!(filter_all(&mut e, b""), (vec![], vec![]));
    }

    #[test]
    fn ctrl_a_x_quits() {
        let mut e = Escape::new();
        assert_eq!(e.feed(ESCAPE), Key::Nothing);
        assert_eq!(e.feed(b'x'), Key::Quit);
        assert_eq!(
            filter_all(&mut Escape::new(), b"ls\x01xrest"),
            (b"ls".to_vec(), vec![Key::Quit])
        );
        // Only lower-case x, as in QEMU.
        assert_eq!(filter_all(&mut Escape::new(), b"\x01X"), (vec![], vec![]));
    }

    #[test]
    fn ctrl_a_ctrl_a_sends_one() {
        let mut e = Escape::new();
        assert_eq!(
            filter_all(&mut e, b"a\x01\x01b"),
            (b"a\x01b".to_vec(), vec![])
        );
        // Three: one sent, one escape waiting.
        assert_eq!(
            filter_all(&mut e, b"\x01\x01\x01"),
            (b"\x01".to_vec(), vec![])
        );
        assert_eq!(e.feed(b'x'), Key::Quit);
    }

    #[test]
    fn escape_split_across_buffers() {
        let mut e = Escape::new();
        assert_eq!(filter_all(&mut e, b"abc\x01"), (b"abc".to_vec(), vec![]));
        assert_eq!(filter_all(&mut e, b"xdef"), (vec![], vec![Key::Quit]));

        let mut e = Escape::new();
        assert_eq!(filter_all(&mut e, b"\x01"), (vec![], vec![]));
        assert_eq!(filter_all(&mut e, b"\x01z"), (b"\x01z".to_vec(), vec![]));
    }

    #[test]
    fn unknown_commands_are_dropped() {
        let mut e = Escape::new();
        assert_eq!(filter_all(&mut e, b"\x01c\x01sz"), (b"z".to_vec(), vec![]));
        assert_eq!(e.feed(b'x'), Key::Send(b'x'));
    }

    #[test]
    fn several_commands_in_one_buffer() {
        let mut e = Escape::new();
        assert_eq!(
            filter_all(&mut e, b"a\x01hb\x01?c"),
            (b"abc".to_vec(), vec![Key::Help, Key::Help])
        );
        assert_eq!(
            filter_all(&mut e, b"a\x01hb\x01xc"),
            (b"ab".to_vec(), vec![Key::Help, Key::Quit])
        );
    }

    #[test]
    fn filter_stops_after_a_command() {
        let mut e = Escape::new();
        let mut out = Vec::new();
        assert_eq!(e.filter(b"ab\x01hcd", &mut out), (Some(Key::Help), 4));
        assert_eq!(out, b"ab");
        assert_eq!(e.filter(b"cd", &mut out), (None, 2));
        assert_eq!(out, b"abcd");
        assert_eq!(e.filter(b"\x01", &mut out), (None, 1));
        assert_eq!(e.filter(b"xyz", &mut out), (Some(Key::Quit), 1));
        assert_eq!(e.filter(b"", &mut out), (None, 0));
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn raw_mode_is_none_on_a_pipe() {
        let (reader, writer) = io::pipe().unwrap();
        assert!(RawMode::enable_on(reader.as_fd()).unwrap().is_none());
        assert!(RawMode::enable_on(writer.as_fd()).unwrap().is_none());
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(RawMode::enable_on(null.as_fd()).unwrap().is_none());
        // Only call enable() itself when it cannot touch the user's terminal.
        if !io::stdin().is_terminal() {
            assert!(RawMode::enable().unwrap().is_none());
        }
    }

    #[test]
    fn raw_mode_on_a_pty_and_restore() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = tcgetattr(&pty.slave).unwrap();
        let raw = RawMode::enable_on(pty.slave.as_fd()).unwrap().unwrap();
        let t = tcgetattr(&pty.slave).unwrap();
        assert!(!t
            .local_flags
            .intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG));
        assert!(!t
            .input_flags
            .intersects(InputFlags::ICRNL | InputFlags::IXON));
        assert!(t.output_flags.contains(OutputFlags::OPOST));
        assert!(t.control_flags.contains(ControlFlags::CS8));
        assert_eq!(t.control_chars[SpecialCharacterIndices::VMIN as usize], 1);
        assert_eq!(t.control_chars[SpecialCharacterIndices::VTIME as usize], 0);

        raw.restore();
        assert_eq!(tcgetattr(&pty.slave).unwrap(), before);
        // Idempotent: a later change is not undone by another restore or the drop.
        let mut changed = before.clone();
        changed.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &changed).unwrap();
        raw.restore();
        drop(raw);
        assert_eq!(tcgetattr(&pty.slave).unwrap(), changed);

        // Drop alone restores.
        tcsetattr(&pty.slave, SetArg::TCSANOW, &before).unwrap();
        let raw = RawMode::enable_on(pty.slave.as_fd()).unwrap().unwrap();
        assert_ne!(tcgetattr(&pty.slave).unwrap(), before);
        drop(raw);
        assert_eq!(tcgetattr(&pty.slave).unwrap(), before);
    }
}
