//! The colour text console of a PC's VGA (CGA-compatible), as a kernel that writes to the
//! screen uses it: the 80×25 text buffer at [`TEXT_BASE`] (two bytes a cell: the
//! character, code page 437, then its attribute) is ordinary guest RAM, and the CRT
//! controller's index and data ports (0x3d4, 0x3d5) keep its registers, among them the
//! cursor location (0x0e high byte, 0x0f low byte), so that a kernel reads back where it
//! left the cursor (xv6 does, at every character). Every register reads back what was
//! written last (the others have no effect here); the input status register (0x3da)
//! toggles its retrace bits at each read, so a driver waiting for a retrace goes on.
//!
//! With `--vga` the screen is mirrored to the console line by line: a row is written out
//! (its characters, trailing blanks removed, then `\n`) once the cursor has left it
//! downwards, or once the guest scrolled it up from the cursor's row (the rows down to the
//! cursor's moved up by one, and the cursor is at the start of its row).
//! The screen is read when the guest writes the cursor's low byte (register 0x0f, which
//! drivers write last); rows still under the cursor are not shown. To a terminal each
//! attribute's colours become ANSI SGR sequences; anything else gets the plain text.
//! Characters outside printable ASCII are shown as `.` (the text is code page 437, not
//! UTF-8), but for NUL, which is a blank.

use std::sync::Arc;

use crate::bus::{BusDevice, Ctx, Effect};
use crate::devices::Console;

/// The text buffer: 80×25 cells of (character, attribute).
pub const TEXT_BASE: u64 = 0xb_8000;
pub const COLUMNS: usize = 80;
pub const ROWS: usize = 25;
const CELLS: usize = COLUMNS * ROWS;
/// The CRT controller's index port; its data port follows.
pub const CRTC_INDEX: u16 = 0x3d4;
pub const CRTC_DATA: u16 = 0x3d5;
/// Input status register 1 (reads).
pub const INPUT_STATUS: u16 = 0x3da;
/// The CRTC's registers (0x00-0x18); higher indices read 0xff and are dropped.
const CRTC_REGISTERS: usize = 0x19;
const CURSOR_HIGH: u8 = 0x0e;
const CURSOR_LOW: u8 = 0x0f;
/// Input status: display enable off (bit 0), vertical retrace (bit 3).
const STATUS_RETRACE: u8 = 0x09;

/// VGA colour index (0-15) to ANSI SGR colour (0-7) and brightness.
const ANSI: [u8; 8] = [0, 4, 2, 6, 1, 5, 3, 7];

/// How the mirror shows the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mirror {
    /// Not at all (no `--vga`): the registers and the buffer still work.
    Off,
    /// Plain text (output is not a terminal).
    Text,
    /// Text with the attributes as ANSI colours (output is a terminal).
    Ansi,
}

/// Where the mirrored lines go.
pub trait Lines: Send {
    fn write_lines(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl Lines for Arc<Console> {
    fn write_lines(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write(bytes)
    }
}

/// The VGA's text console. See the [module documentation](self).
pub struct Vga<L: Lines> {
    index: u8,
    crtc: [u8; CRTC_REGISTERS],
    status_toggle: bool,
    mirror: Mirror,
    out: L,
    /// The screen as last read, and the cursor then.
    screen: Vec<u8>,
    cursor: usize,
    /// Rows above this one were written out.
    shown_rows: usize,
}

impl<L: Lines> Vga<L> {
    pub fn new(mirror: Mirror, out: L) -> Self {
        Self { index: 0, crtc: [0; CRTC_REGISTERS], status_toggle: false, mirror, out, screen: vec![0; CELLS * 2], cursor: 0, shown_rows: 0 }
    }

    /// Shows the screen from now on as `mirror` says.
    pub fn set_mirror(&mut self, mirror: Mirror) {
        self.mirror = mirror;
    }

    /// The cursor location (cell number) as the CRTC holds it.
    pub fn cursor(&self) -> u16 {
        u16::from_be_bytes([self.crtc[usize::from(CURSOR_HIGH)], self.crtc[usize::from(CURSOR_LOW)]])
    }

    pub fn read_port(&mut self, port: u16) -> u8 {
        match port {
            CRTC_INDEX => self.index,
            CRTC_DATA => self.crtc.get(usize::from(self.index)).copied().unwrap_or(0xff),
            INPUT_STATUS => {
                self.status_toggle = !self.status_toggle;
                if self.status_toggle { STATUS_RETRACE } else { 0 }
            }
            _ => 0xff,
        }
    }

    /// A write; `screen` reads the text buffer (80×25×2 bytes) when the mirror needs it.
    pub fn write_port(&mut self, port: u16, value: u8, screen: impl FnOnce(&mut [u8]) -> Option<()>) -> std::io::Result<()> {
        match port {
            CRTC_INDEX => self.index = value,
            CRTC_DATA => {
                if let Some(r) = self.crtc.get_mut(usize::from(self.index)) {
                    *r = value;
                }
                if self.index == CURSOR_LOW && self.mirror != Mirror::Off {
                    let mut now = vec![0; CELLS * 2];
                    if screen(&mut now).is_some() {
                        return self.follow(now);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The screen `now` with the cursor where the CRTC says: writes out the rows done.
    fn follow(&mut self, now: Vec<u8>) -> std::io::Result<()> {
        let cursor = usize::from(self.cursor()).min(CELLS - 1);
        let (row, old_row) = (cursor / COLUMNS, self.cursor / COLUMNS);
        let mut text = Vec::new();
        if row > old_row {
            // The cursor went down: the rows it left are done.
            for r in self.shown_rows.max(old_row)..row {
                self.render_row(&now, r, &mut text);
            }
            self.shown_rows = row;
        } else if row < old_row {
            // Home, or a cleared screen: nothing is done yet.
            self.shown_rows = row;
        } else if row > 0 && cursor % COLUMNS == 0 && now != self.screen && now[..row * COLUMNS * 2] == self.screen[COLUMNS * 2..(row + 1) * COLUMNS * 2] {
            // Scrolled: the rows down to the cursor's moved up one, the cursor at the start
            // of its row.
            self.render_row(&now, row - 1, &mut text);
            self.shown_rows = row;
        }
        self.screen = now;
        self.cursor = cursor;
        if text.is_empty() { Ok(()) } else { self.out.write_lines(&text) }
    }

    fn row<'s>(&self, screen: &'s [u8], row: usize) -> &'s [u8] {
        &screen[row * COLUMNS * 2..(row + 1) * COLUMNS * 2]
    }

    fn render_row(&self, screen: &[u8], row: usize, text: &mut Vec<u8>) {
        let cells = self.row(screen, row);
        let blank = |c: &[u8]| c[0] == b' ' || c[0] == 0;
        let len = cells.chunks(2).rposition(|c| !blank(c)).map_or(0, |i| i + 1);
        let mut attribute = None;
        for cell in cells.chunks(2).take(len) {
            if self.mirror == Mirror::Ansi && attribute != Some(cell[1]) {
                attribute = Some(cell[1]);
                text.extend(sgr(cell[1]).as_bytes());
            }
            text.push(match cell[0] {
                0 => b' ',
                c @ 0x20..=0x7e => c,
                _ => b'.',
            });
        }
        if attribute.is_some() {
            text.extend(b"\x1b[0m");
        }
        text.push(b'\n');
    }
}

/// The ANSI SGR sequence for a VGA attribute (bits 0-3 foreground, 4-6 background, 7
/// blink, shown as a bright background as most VGA setups do).
pub fn sgr(attribute: u8) -> String {
    let (fg, bg) = (attribute & 0xf, attribute >> 4);
    let fg_code = if fg & 8 != 0 { 90 } else { 30 } + ANSI[usize::from(fg & 7)];
    let bg_code = if bg & 8 != 0 { 100 } else { 40 } + ANSI[usize::from(bg & 7)];
    format!("\x1b[0;{fg_code};{bg_code}m")
}

impl<L: Lines> BusDevice for Vga<L> {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8], _: &Ctx) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.read_port((base + offset + i as u64) as u16);
        }
    }
    fn write(&mut self, base: u64, offset: u64, data: &[u8], ctx: &Ctx) -> std::io::Result<Effect> {
        for (i, &byte) in data.iter().enumerate() {
            self.write_port((base + offset + i as u64) as u16, byte, |out| ctx.mem.read(TEXT_BASE, out))?;
        }
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Clone)]
    struct Out(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Lines for Out {
        fn write_lines(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().extend(bytes);
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A guest that writes like xv6's `cgaputc`: a character at the cursor, the cursor
    /// moved (high byte, then low), scrolling at the last row.
    struct Screen {
        cells: Vec<u8>,
        pos: usize,
    }

    impl Screen {
        fn put(&mut self, vga: &mut Vga<Out>, text: &str, attribute: u8) {
            for c in text.bytes() {
                if c == b'\n' {
                    self.pos += COLUMNS - self.pos % COLUMNS;
                } else {
                    self.cells[self.pos * 2] = c;
                    self.cells[self.pos * 2 + 1] = attribute;
                    self.pos += 1;
                }
                if self.pos / COLUMNS >= ROWS - 1 {
                    self.cells.copy_within(COLUMNS * 2.., 0);
                    self.pos -= COLUMNS;
                    let from = self.pos * 2;
                    self.cells[from..].fill(0);
                }
                let cells = self.cells.clone();
                vga.write_port(CRTC_INDEX, CURSOR_HIGH, |_| None).unwrap();
                vga.write_port(CRTC_DATA, (self.pos >> 8) as u8, |_| None).unwrap();
                vga.write_port(CRTC_INDEX, CURSOR_LOW, |_| None).unwrap();
                vga.write_port(CRTC_DATA, self.pos as u8, |out| {
                    out.copy_from_slice(&cells);
                    Some(())
                })
                .unwrap();
            }
        }
    }

    #[test]
    fn crtc_registers_read_back() {
        let mut vga = Vga::new(Mirror::Off, Out::default());
        for (index, value) in [(0x0e, 0x07), (0x0f, 0xd0), (0x0a, 0x20), (0x18, 0x55)] {
            vga.write_port(CRTC_INDEX, index, |_| None).unwrap();
            vga.write_port(CRTC_DATA, value, |_| None).unwrap();
        }
        assert_eq!(vga.cursor(), 0x07d0);
        vga.write_port(CRTC_INDEX, 0x0a, |_| None).unwrap();
        assert_eq!((vga.read_port(CRTC_INDEX), vga.read_port(CRTC_DATA)), (0x0a, 0x20));
        vga.write_port(CRTC_INDEX, 0x40, |_| None).unwrap();
        assert_eq!(vga.read_port(CRTC_DATA), 0xff, "no such register");
        assert_ne!(vga.read_port(INPUT_STATUS), vga.read_port(INPUT_STATUS), "retrace toggles");
    }

    #[test]
    fn rows_are_mirrored_once_the_cursor_leaves_them() {
        let out = Out::default();
        let mut vga = Vga::new(Mirror::Text, out.clone());
        let mut screen = Screen { cells: vec![0; CELLS * 2], pos: 0 };
        screen.put(&mut vga, "hello, ", 0x07);
        screen.put(&mut vga, "world\nsecond line", 0x1e);
        assert_eq!(out.text(), "hello, world\n");
        screen.put(&mut vga, "\n", 0x07);
        assert_eq!(out.text(), "hello, world\nsecond line\n");
        screen.put(&mut vga, "\n", 0x07);
        assert_eq!(out.text(), "hello, world\nsecond line\n\n", "an empty line");
        // Past the last row: every line still comes out once, in order.
        for i in 0..40 {
            screen.put(&mut vga, &format!("line {i}\n"), 0x07);
        }
        screen.put(&mut vga, "\n\nend\n", 0x07);
        let expect: String = ["hello, world\n", "second line\n", "\n"].concat() + &(0..40).map(|i| format!("line {i}\n")).collect::<String>() + "\n\nend\n";
        assert_eq!(out.text(), expect);
    }

    #[test]
    fn a_terminal_gets_the_colours() {
        let out = Out::default();
        let mut vga = Vga::new(Mirror::Ansi, out.clone());
        let mut screen = Screen { cells: vec![0; CELLS * 2], pos: 0 };
        screen.put(&mut vga, "ab", 0x1e);
        screen.put(&mut vga, "c\n", 0x4f);
        assert_eq!(out.text(), "\x1b[0;93;44mab\x1b[0;97;41mc\x1b[0m\n");
        assert_eq!(sgr(0x07), "\x1b[0;37;40m");
    }

    #[test]
    fn off_means_no_output() {
        let out = Out::default();
        let mut vga = Vga::new(Mirror::Off, out.clone());
        let mut screen = Screen { cells: vec![0; CELLS * 2], pos: 0 };
        screen.put(&mut vga, "a\nb\n", 0x07);
        assert_eq!(out.text(), "");
    }
}
