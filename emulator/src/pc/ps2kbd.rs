//! A PS/2 keyboard behind the i8042 controller (ports 0x60 data, 0x64 status/command),
//! for guests whose console is the PC's screen and keyboard (`--vga`): the console's
//! bytes are typed as keys, in scan code set 1 (what the 8042 gives with translation on,
//! as after a BIOS: what xv6's and most hobby kernels' drivers decode), and each byte the
//! controller has for the guest raises IRQ1 (when the command byte's bit 0 allows).
//!
//! The controller (what `i8042.rs` does not do: the reset line stays there):
//! - status (0x64 read): bit 0 output buffer full, bit 2 system flag, bit 3 the last
//!   write was a command, bit 4 keyboard not inhibited;
//! - commands: 0x20 read the command byte, 0x60 write it (next data byte), 0xaa self
//!   test (0x55), 0xab keyboard interface test (0x00), 0xad / 0xae disable / enable the
//!   keyboard (command byte bit 4), 0xd2 write the next data byte to the output buffer as
//!   if the keyboard sent it; the others are ignored (0xd1, whose data byte is the output
//!   port, and the pulses: `i8042.rs`);
//! - the command byte starts as a BIOS leaves it: 0x45 (keyboard IRQ on, system flag,
//!   translation on).
//!
//! The keyboard (data bytes written to 0x60): 0xff reset (0xfa, then 0xaa), 0xf2
//! identify (0xfa 0xab 0x83), 0xee echo (0xee), 0xed, 0xf0 and 0xf3 take a parameter
//! (0xfa for each); anything else 0xfa. Replies go before typed keys; a key already in
//! the output buffer goes back to the front of the queue. Typed keys are never dropped,
//! even by a reset (as the UART's console input): they wait until the guest reads them.
//!
//! Typing: letters, digits, punctuation, space, Enter (`\n`, `\r`), Backspace (0x08,
//! 0x7f), Tab and Escape each give the key's make and break codes, with Left Shift
//! (0x2a/0xaa) around shifted characters and Left Ctrl (0x1d/0x9d) around control
//! characters (Ctrl-A is 0x01); other bytes (non-ASCII) are dropped.

use std::collections::VecDeque;

use super::i8042::{COMMAND_PORT, DATA_PORT};

const STATUS_OBF: u8 = 1 << 0;
const STATUS_SYSTEM: u8 = 1 << 2;
const STATUS_COMMAND: u8 = 1 << 3;
const STATUS_UNLOCKED: u8 = 1 << 4;

const CB_KEYBOARD_IRQ: u8 = 1 << 0;
const CB_KEYBOARD_DISABLED: u8 = 1 << 4;
/// The command byte a BIOS leaves: keyboard IRQ, system flag, translation.
const COMMAND_BYTE_AT_BOOT: u8 = 0x45;

const CMD_READ_COMMAND_BYTE: u8 = 0x20;
const CMD_WRITE_COMMAND_BYTE: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_INTERFACE_TEST: u8 = 0xab;
const CMD_DISABLE_KEYBOARD: u8 = 0xad;
const CMD_ENABLE_KEYBOARD: u8 = 0xae;
const CMD_WRITE_KEYBOARD_OUTPUT: u8 = 0xd2;
/// Write the output port (`i8042.rs` watches its reset bit): its data byte is no
/// keyboard command.
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const SELF_TEST_OK: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;

const KBD_ACK: u8 = 0xfa;
const KBD_RESET: u8 = 0xff;
const KBD_RESET_OK: u8 = 0xaa;
const KBD_IDENTIFY: u8 = 0xf2;
const KBD_ID: [u8; 2] = [0xab, 0x83];
const KBD_ECHO: u8 = 0xee;
const KBD_WITH_PARAMETER: [u8; 3] = [0xed, 0xf0, 0xf3];

const LEFT_SHIFT: u8 = 0x2a;
const LEFT_CTRL: u8 = 0x1d;
const BREAK: u8 = 0x80;

/// Set 1 make codes of the unshifted (`.0`) and shifted (`.1`) characters of a US keyboard.
const KEYS: [(u8, &[u8], &[u8]); 4] = [
    (0x02, b"1234567890-=", b"!@#$%^&*()_+"),
    (0x10, b"qwertyuiop[]", b"QWERTYUIOP{}"),
    (0x1e, b"asdfghjkl;'`", b"ASDFGHJKL:\"~"),
    (0x2b, b"\\zxcvbnm,./", b"|ZXCVBNM<>?"),
];
const ENTER: u8 = 0x1c;
const BACKSPACE: u8 = 0x0e;
const TAB: u8 = 0x0f;
const SPACE: u8 = 0x39;
const ESCAPE: u8 = 0x01;

/// The make code of `c` and whether it needs Shift.
fn make_code(c: u8) -> Option<(u8, bool)> {
    match c {
        b'\n' | b'\r' => return Some((ENTER, false)),
        0x08 | 0x7f => return Some((BACKSPACE, false)),
        b'\t' => return Some((TAB, false)),
        b' ' => return Some((SPACE, false)),
        0x1b => return Some((ESCAPE, false)),
        _ => {}
    }
    KEYS.iter().find_map(|(first, plain, shifted)| {
        let at = |row: &[u8]| row.iter().position(|&k| k == c).map(|i| first + i as u8);
        at(plain).map(|code| (code, false)).or_else(|| at(shifted).map(|code| (code, true)))
    })
}

/// The scan codes (set 1) that type `c`: empty for what no key gives.
pub fn scan_codes(c: u8) -> Vec<u8> {
    let with = |modifier: u8, code: u8| vec![modifier, code, code | BREAK, modifier | BREAK];
    match make_code(c) {
        Some((code, false)) => vec![code, code | BREAK],
        Some((code, true)) => with(LEFT_SHIFT, code),
        // Control characters: Ctrl and the letter (0x01 is Ctrl-A).
        None if (1..=26).contains(&c) => make_code(b'a' + c - 1).map_or(Vec::new(), |(code, _)| with(LEFT_CTRL, code)),
        None => Vec::new(),
    }
}

/// The keyboard and its side of the controller. See the [module documentation](self).
#[derive(Debug)]
pub struct Ps2Keyboard {
    command_byte: u8,
    /// A controller command waiting for its data byte.
    controller_pending: Option<u8>,
    /// A keyboard command waiting for its parameter.
    keyboard_pending: bool,
    last_was_command: bool,
    /// The output buffer, and whether it holds a typed key (else a reply).
    output: Option<(u8, bool)>,
    replies: VecDeque<u8>,
    keys: VecDeque<u8>,
    /// A byte arrived in the output buffer with IRQ1 allowed: an edge to raise.
    irq: bool,
}

impl Default for Ps2Keyboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Ps2Keyboard {
    pub fn new() -> Self {
        Self {
            command_byte: COMMAND_BYTE_AT_BOOT,
            controller_pending: None,
            keyboard_pending: false,
            last_was_command: false,
            output: None,
            replies: VecDeque::new(),
            keys: VecDeque::new(),
            irq: false,
        }
    }

    /// Console bytes, typed as keys.
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.keys.extend(bytes.iter().flat_map(|&c| scan_codes(c)));
        self.fill();
    }

    /// Scan codes typed and not yet read by the guest.
    pub fn backlog(&self) -> usize {
        self.keys.len() + usize::from(matches!(self.output, Some((_, true))))
    }

    /// Whether IRQ1 had an edge since the last call.
    pub fn take_irq(&mut self) -> bool {
        std::mem::take(&mut self.irq)
    }

    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            DATA_PORT => {
                let value = self.output.take().map_or(0, |(v, _)| v);
                self.fill();
                value
            }
            COMMAND_PORT => {
                let mut status = STATUS_SYSTEM | STATUS_UNLOCKED;
                if self.output.is_some() {
                    status |= STATUS_OBF;
                }
                if self.last_was_command {
                    status |= STATUS_COMMAND;
                }
                status
            }
            _ => 0xff,
        }
    }

    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            COMMAND_PORT => {
                self.last_was_command = true;
                self.controller_pending = None;
                match value {
                    CMD_READ_COMMAND_BYTE => self.reply(&[self.command_byte]),
                    CMD_WRITE_COMMAND_BYTE | CMD_WRITE_KEYBOARD_OUTPUT | CMD_WRITE_OUTPUT_PORT => self.controller_pending = Some(value),
                    CMD_SELF_TEST => self.reply(&[SELF_TEST_OK]),
                    CMD_INTERFACE_TEST => self.reply(&[INTERFACE_OK]),
                    CMD_DISABLE_KEYBOARD => self.command_byte |= CB_KEYBOARD_DISABLED,
                    CMD_ENABLE_KEYBOARD => {
                        self.command_byte &= !CB_KEYBOARD_DISABLED;
                        self.fill();
                    }
                    _ => {}
                }
            }
            DATA_PORT => {
                self.last_was_command = false;
                match self.controller_pending.take() {
                    Some(CMD_WRITE_COMMAND_BYTE) => {
                        self.command_byte = value;
                        self.fill();
                    }
                    Some(CMD_WRITE_KEYBOARD_OUTPUT) => self.reply(&[value]),
                    Some(_) => {}
                    None => self.keyboard_command(value),
                }
            }
            _ => {}
        }
    }

    fn keyboard_command(&mut self, value: u8) {
        if std::mem::take(&mut self.keyboard_pending) {
            return self.reply(&[KBD_ACK]);
        }
        match value {
            KBD_RESET => self.reply(&[KBD_ACK, KBD_RESET_OK]),
            KBD_IDENTIFY => self.reply(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_ECHO => self.reply(&[KBD_ECHO]),
            v if KBD_WITH_PARAMETER.contains(&v) => {
                self.keyboard_pending = true;
                self.reply(&[KBD_ACK]);
            }
            _ => self.reply(&[KBD_ACK]),
        }
    }

    /// Replies go before the keys: a key in the output buffer goes back to the queue.
    fn reply(&mut self, bytes: &[u8]) {
        if let Some((key, true)) = self.output {
            self.keys.push_front(key);
            self.output = None;
        }
        self.replies.extend(bytes);
        self.fill();
    }

    /// Loads the output buffer if it is empty: a reply, else a key (keyboard enabled).
    fn fill(&mut self) {
        if self.output.is_some() {
            return;
        }
        let next = match self.replies.pop_front() {
            Some(reply) => Some((reply, false)),
            None if self.command_byte & CB_KEYBOARD_DISABLED == 0 => self.keys.pop_front().map(|key| (key, true)),
            None => None,
        };
        if next.is_some() {
            self.output = next;
            self.irq |= self.command_byte & CB_KEYBOARD_IRQ != 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(k: &mut Ps2Keyboard) -> Vec<u8> {
        let mut got = Vec::new();
        while k.read(COMMAND_PORT) & STATUS_OBF != 0 {
            got.push(k.read(DATA_PORT));
        }
        got
    }

    #[test]
    fn typed_bytes_become_set_1_scan_codes() {
        assert_eq!(scan_codes(b'a'), [0x1e, 0x9e]);
        assert_eq!(scan_codes(b'B'), [0x2a, 0x30, 0xb0, 0xaa]);
        assert_eq!(scan_codes(b'\n'), [0x1c, 0x9c]);
        assert_eq!(scan_codes(b'1'), [0x02, 0x82]);
        assert_eq!(scan_codes(b'!'), [0x2a, 0x02, 0x82, 0xaa]);
        assert_eq!(scan_codes(b' '), [0x39, 0xb9]);
        assert_eq!(scan_codes(b'/'), [0x35, 0xb5]);
        assert_eq!(scan_codes(0x7f), [0x0e, 0x8e]);
        assert_eq!(scan_codes(0x03), [0x1d, 0x2e, 0xae, 0x9d], "Ctrl-C");
        assert_eq!(scan_codes(0xc3), [0u8; 0], "not a key");
    }

    #[test]
    fn keys_raise_irq1_one_byte_at_a_time() {
        let mut k = Ps2Keyboard::new();
        assert_eq!(k.read(COMMAND_PORT) & STATUS_OBF, 0);
        k.type_bytes(b"aB");
        assert!(k.take_irq());
        assert!(!k.take_irq(), "one edge per byte");
        assert_eq!(k.backlog(), 6);
        assert_eq!(k.read(DATA_PORT), 0x1e);
        assert!(k.take_irq(), "the next byte, the next edge");
        assert_eq!(drain(&mut k), [0x9e, 0x2a, 0x30, 0xb0, 0xaa]);
        assert_eq!(k.backlog(), 0);
    }

    #[test]
    fn controller_commands_and_the_command_byte() {
        let mut k = Ps2Keyboard::new();
        k.write(COMMAND_PORT, CMD_READ_COMMAND_BYTE);
        assert_eq!(k.read(COMMAND_PORT) & (STATUS_OBF | STATUS_COMMAND), STATUS_OBF | STATUS_COMMAND);
        assert_eq!(k.read(DATA_PORT), 0x45);
        k.write(COMMAND_PORT, CMD_SELF_TEST);
        k.write(COMMAND_PORT, CMD_INTERFACE_TEST);
        assert_eq!(drain(&mut k), [0x55, 0x00]);
        // IRQ off, keyboard disabled: keys wait, no edge.
        k.write(COMMAND_PORT, CMD_WRITE_COMMAND_BYTE);
        k.write(DATA_PORT, 0x54);
        k.take_irq();
        k.type_bytes(b"q");
        assert_eq!((k.read(COMMAND_PORT) & STATUS_OBF, k.take_irq()), (0, false));
        k.write(COMMAND_PORT, CMD_ENABLE_KEYBOARD);
        assert!(!k.take_irq(), "IRQ1 still off");
        assert_eq!(drain(&mut k), [0x10, 0x90]);
        k.write(COMMAND_PORT, CMD_WRITE_KEYBOARD_OUTPUT);
        k.write(DATA_PORT, 0x42);
        assert_eq!(drain(&mut k), [0x42]);
        k.write(COMMAND_PORT, CMD_WRITE_OUTPUT_PORT);
        k.write(DATA_PORT, 0xff);
        assert_eq!(drain(&mut k), [0u8; 0], "the output port's byte is no keyboard reset");
    }

    #[test]
    fn keyboard_commands_answer_before_keys() {
        let mut k = Ps2Keyboard::new();
        k.type_bytes(b"a");
        k.write(DATA_PORT, KBD_RESET);
        assert_eq!(drain(&mut k), [0xfa, 0xaa, 0x1e, 0x9e], "the key waits, is not lost");
        k.write(DATA_PORT, 0xed);
        k.write(DATA_PORT, 0x07);
        k.write(DATA_PORT, KBD_IDENTIFY);
        k.write(DATA_PORT, KBD_ECHO);
        k.write(DATA_PORT, 0xf4);
        assert_eq!(drain(&mut k), [0xfa, 0xfa, 0xfa, 0xab, 0x83, 0xee, 0xfa]);
    }

    #[test]
    fn any_input_is_safe() {
        let mut k = Ps2Keyboard::new();
        for port in 0x5e..0x68 {
            for value in 0..=u8::MAX {
                k.write(port, value);
                let _ = k.read(port);
                k.type_bytes(&[value]);
            }
        }
    }
}
