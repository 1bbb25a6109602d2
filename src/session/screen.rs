//! The session's terminal model: what a terminal that never left would show.
//!
//! Every byte of output goes through a [`vt100`] parser sized to the PTY, so
//! that a client which (re)attaches gets the current screen drawn exactly —
//! characters, colours and attributes, cursor position and visibility,
//! alternate screen, title — and the input modes a program set (bracketed
//! paste, application cursor keys and keypad, mouse reporting, focus
//! events), instead of a replay of raw bytes that may start inside an escape
//! sequence. `vt100` was measured against `avt` (see BENCHMARKS.md): it is
//! faster and it keeps the input modes, which `avt` does not track.
//!
//! The model keeps no scrollback (at ~32 bytes per cell it would cost more
//! than the raw output): history lines are rebuilt on demand from the raw
//! ring buffer ([`history`]).
//!
//! What the model cannot dump — a scroll region (DECSTBM), the saved cursor,
//! character sets, the primary screen beneath the alternate one — only
//! full-screen programs use; [`Screen::needs_repaint`] says when to make the
//! program repaint itself (the session briefly resizes the PTY, as shpool
//! does).

use std::num::NonZeroU16;

use vt100::capture::{BasicFormattedCaptureState, RowContents};

use crate::protocol::PtySize;

/// Longest window title kept, in bytes (xterm has no limit; a title is one line).
const MAX_TITLE: usize = 1024;

/// A session's screen: a terminal emulator fed with the program's output.
pub struct Screen {
    parser: vt100::Parser<Extras>,
}

/// What the model tracks beyond `vt100`'s own state.
#[derive(Default)]
struct Extras {
    /// OSC 2 (or OSC 0) window title.
    title: Option<Vec<u8>>,
    /// OSC 1 (or OSC 0) icon name.
    icon: Option<Vec<u8>>,
    /// Focus reporting, DECSET 1004 (xterm), which `vt100` leaves unhandled.
    focus_events: bool,
}

impl vt100::Callbacks for Extras {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.title = Some(title[..title.len().min(MAX_TITLE)].to_vec());
    }

    fn set_window_icon_name(&mut self, _: &mut vt100::Screen, icon: &[u8]) {
        self.icon = Some(icon[..icon.len().min(MAX_TITLE)].to_vec());
    }

    fn unhandled_csi(
        &mut self,
        _: &mut vt100::Screen,
        i1: Option<u8>,
        _i2: Option<u8>,
        params: &[&[u16]],
        c: char,
    ) {
        if i1 == Some(b'?') && matches!(c, 'h' | 'l') && params.contains(&&[1004][..]) {
            self.focus_events = c == 'h';
        }
    }
}

fn dimensions(size: PtySize) -> (NonZeroU16, NonZeroU16) {
    let one = NonZeroU16::MIN;
    (
        NonZeroU16::new(size.rows()).unwrap_or(one),
        NonZeroU16::new(size.cols()).unwrap_or(one),
    )
}

impl Screen {
    /// A blank screen of `size` cells. Memory: 32 bytes per cell and grid,
    /// measured 62 KiB resident at 80×24 (`benches/model.rs`); the
    /// alternate grid's pages count once a program uses it.
    pub fn new(size: PtySize) -> Screen {
        let (rows, cols) = dimensions(size);
        Screen {
            parser: vt100::Parser::new_with_callbacks(rows, cols, 0, Extras::default()),
        }
    }

    /// Feeds the program's output, in the order it was read from the PTY.
    /// Any bytes are accepted; a sequence split across calls is carried over.
    pub fn process(&mut self, output: &[u8]) {
        self.parser.process(output);
    }

    /// Follows a resize of the PTY. Narrowing loses the cells beyond the new
    /// width (no reflow); the program repaints after its SIGWINCH.
    pub fn resize(&mut self, size: PtySize) {
        let (rows, cols) = dimensions(size);
        self.parser.set_size(rows, cols);
    }

    /// Whether a program on the alternate screen (vim, less, top…) may rely
    /// on state the dump cannot carry, such as a scroll region: after a
    /// restore it should be made to repaint.
    pub fn needs_repaint(&self) -> bool {
        self.parser.screen().alternate_screen()
    }

    /// Terminal bytes that bring any terminal of the model's size to this
    /// screen: first `history` (as returned by [`history`]) printed on the
    /// primary screen so that it scrolls into the terminal's own scrollback,
    /// then the alternate screen if the program uses it, every cell, the
    /// cursor, the attributes in effect, the input modes and the title.
    ///
    /// Modes the terminal may still have from an earlier program (mouse
    /// reporting, bracketed paste…) are switched off unless the model has
    /// them on.
    pub fn restore(&self, history: &str) -> Vec<u8> {
        let screen = self.parser.screen();
        let extras = self.parser.callbacks();
        let mut out = String::with_capacity(history.len() + 4096);
        // Primary screen, plain attributes, no scroll region, bottom row:
        // each line printed from here scrolls the one above it up.
        out.push_str("\x1b[?1049l\x1b[m\x1b[r\x1b[999;1H");
        if !history.is_empty() {
            for line in history.split('\n') {
                out.push_str("\r\n");
                out.push_str(line);
            }
            out.push_str("\x1b[m");
            // Scroll the last lines of history off the screen too, so that
            // drawing the screen below does not erase them.
            let (rows, _) = screen.size();
            for _ in 0..rows.get() {
                out.push_str("\r\n");
            }
        }
        if screen.alternate_screen() {
            out.push_str("\x1b[?1049h");
        }
        // Clears the screen, draws every cell, places and shows/hides the
        // cursor, sets the current attributes and the input modes.
        out.push_str(&screen.state_formatted());
        out.push_str(if extras.focus_events {
            "\x1b[?1004h"
        } else {
            "\x1b[?1004l"
        });
        let mut bytes = out.into_bytes();
        let osc = |out: &mut Vec<u8>, kind: &[u8], text: &[u8]| {
            out.extend_from_slice(b"\x1b]");
            out.extend_from_slice(kind);
            out.push(b';');
            out.extend_from_slice(text);
            out.push(b'\x07');
        };
        match (&extras.title, &extras.icon) {
            (Some(title), Some(icon)) if title == icon => osc(&mut bytes, b"0", title),
            (title, icon) => {
                if let Some(icon) = icon {
                    osc(&mut bytes, b"1", icon);
                }
                if let Some(title) = title {
                    osc(&mut bytes, b"2", title);
                }
            }
        }
        bytes
    }

    /// The visible screen as plain text, trailing blanks trimmed.
    pub fn text(&self) -> String {
        self.parser.screen().contents()
    }
}

/// Collects the rows a parser scrolls off the top of its primary screen.
struct Capture {
    text: String,
    state: BasicFormattedCaptureState,
}

impl vt100::Callbacks for Capture {
    fn on_scroll(&mut self, row: RowContents<'_>, alternate_screen: bool) {
        if !alternate_screen {
            // Writing into a String cannot fail.
            let _ = row.write_formatted_basic(&mut self.text, &mut self.state);
        }
    }
}

/// The lines of `output` that scrolled off the top of a `size` screen, with
/// their colours and attributes (SGR) inline, joined by `\n`; rows that
/// wrapped are joined into one line. `output` should begin at a line start
/// (see `RingBuffer::tail_lines_start`); rows of the alternate screen are
/// not history and are left out.
pub fn history(output: &[u8], size: PtySize) -> String {
    let (rows, cols) = dimensions(size);
    let capture = Capture {
        text: String::new(),
        state: BasicFormattedCaptureState::new(),
    };
    let mut parser = vt100::Parser::new_with_callbacks(rows, cols, 0, capture);
    parser.process(output);
    std::mem::take(&mut parser.callbacks_mut().text)
}

/// How many bytes at the end of `output` are an escape sequence (CSI, OSC,
/// DCS…) or a UTF-8 character not finished yet. A terminal brought to the
/// screen by [`Screen::restore`] must be sent these bytes too before the
/// output that follows, or it would print the sequence's remainder as text.
/// Only an escape sequence that starts within `output` is seen: pass at
/// least the last few KiB.
pub fn unfinished_suffix(output: &[u8]) -> usize {
    let mut len = 0;
    if let Some(esc) = output.iter().rposition(|&b| b == 0x1b)
        && !ends_in_ground_state(&output[esc..])
    {
        len = output.len() - esc;
    }
    let last = output.len().saturating_sub(3);
    if let Some(lead) = output[last..].iter().rposition(|&b| b >= 0xc0) {
        let lead = last + lead;
        if matches!(std::str::from_utf8(&output[lead..]), Err(e) if e.error_len().is_none()) {
            len = len.max(output.len() - lead);
        }
    }
    len
}

/// Whether a parser that read `bytes` is back in its ground state: the next
/// printable byte is printed rather than taken as part of a sequence.
fn ends_in_ground_state(bytes: &[u8]) -> bool {
    struct Probe(Option<char>);
    impl vte::Perform for Probe {
        fn print(&mut self, c: char) {
            self.0 = Some(c);
        }
    }
    let mut parser = vte::Parser::new();
    let mut probe = Probe(None);
    parser.advance(&mut probe, bytes);
    probe.0 = None;
    parser.advance(&mut probe, b"x");
    probe.0 == Some('x')
}

/// `formatted` (as returned by [`history`]) without its escape sequences.
pub fn plain(formatted: &str) -> String {
    vt100::capture::basic_formatted_to_plain(formatted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(cols: u32, rows: u32) -> PtySize {
        PtySize::from_request(cols, rows, PtySize::DEFAULT)
    }

    /// A terminal that saw `bytes` from the start.
    fn terminal(size: PtySize, bytes: &[u8]) -> vt100::Parser {
        let (rows, cols) = dimensions(size);
        let mut parser = vt100::Parser::new(rows, cols, 100);
        parser.process(bytes);
        parser
    }

    fn assert_same(a: &vt100::Screen, b: &vt100::Screen) {
        assert_eq!(a.contents_formatted(), b.contents_formatted());
        assert_eq!(a.cursor_position(), b.cursor_position());
        assert_eq!(a.hide_cursor(), b.hide_cursor());
        assert_eq!(a.alternate_screen(), b.alternate_screen());
        assert_eq!(a.input_mode_formatted(), b.input_mode_formatted());
    }

    #[test]
    fn a_restore_draws_the_same_screen_and_modes() {
        let size = size(40, 10);
        let program: &[u8] = b"prompt$ ls\r\n\x1b[1;31mred\x1b[m plain\r\n\
            \x1b[?1049h\x1b[H\x1b[2J\x1b[44mblue\x1b[3;5H\xe4\xb8\xad\xe6\x96\x87\
            \x1b[?1h\x1b=\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?25l\x1b[7;2H";
        let mut model = Screen::new(size);
        model.process(program);
        let reference = terminal(size, program);
        // A terminal that had shown something else with other modes on.
        let mut fresh = terminal(size, b"junk\x1b[?1000h\x1b[?2004h\x1b[5;5H");
        fresh.process(&model.restore(""));
        assert_same(fresh.screen(), reference.screen());
    }

    #[test]
    fn title_and_focus_reporting_are_restored() {
        let mut model = Screen::new(size(20, 5));
        model.process(b"\x1b]2;my title\x07\x1b[?1004h");
        let restore = String::from_utf8(model.restore("")).expect("utf-8");
        assert!(restore.contains("\x1b]2;my title\x07"), "{restore:?}");
        assert!(restore.contains("\x1b[?1004h"));
        model.process(b"\x1b]0;both\x07\x1b[?1004l");
        let restore = String::from_utf8(model.restore("")).expect("utf-8");
        assert!(restore.contains("\x1b]0;both\x07"), "{restore:?}");
        assert!(restore.contains("\x1b[?1004l"));
    }

    #[test]
    fn history_is_the_lines_above_the_screen() {
        let size = size(20, 3);
        let mut output = Vec::new();
        for i in 0..10 {
            output.extend_from_slice(format!("\x1b[32mline {i}\x1b[m\r\n").as_bytes());
        }
        let history = history(&output, size);
        let lines: Vec<String> = plain(&history).lines().map(str::to_owned).collect();
        // 10 lines and an empty one on a 3-row screen: 8 scrolled off.
        assert_eq!(
            lines,
            (0..8).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        assert!(history.contains("\x1b[32m"), "colours kept: {history:?}");
    }

    #[test]
    fn a_restore_with_history_fills_the_terminals_scrollback() {
        let size = size(20, 3);
        let mut output = Vec::new();
        for i in 0..10 {
            output.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let mut model = Screen::new(size);
        model.process(&output);
        let mut fresh = terminal(size, b"");
        fresh.process(&model.restore(&history(&output, size)));
        assert_same(fresh.screen(), terminal(size, &output).screen());
        fresh.screen_mut().set_scrollback(3);
        assert!(
            fresh
                .screen()
                .contents()
                .starts_with("line 5\nline 6\nline 7")
        );
    }

    /// The wrap test's output: colours and cursor moves on every cell.
    fn busy_output() -> Vec<u8> {
        let mut out = Vec::new();
        for i in 1..=600u32 {
            out.extend_from_slice(
                format!(
                    "\x1b[{};{}H\x1b[38;2;{};7;9m\x1b[48;2;1;2;3m#\x1b[38;5;{}mx\x1b[1;4mw\x1b[m",
                    i % 24 + 1,
                    i % 80 + 1,
                    i % 256,
                    i % 256
                )
                .as_bytes(),
            );
            if i % 7 == 0 {
                out.extend_from_slice(b"wrapping text that runs past the edge\r\n");
            }
        }
        out
    }

    #[test]
    fn unfinished_sequences_and_characters_are_found() {
        assert_eq!(unfinished_suffix(b"plain text"), 0);
        assert_eq!(unfinished_suffix(b"a\x1b[1;31mb"), 0);
        assert_eq!(unfinished_suffix(b"a\x1b[1;3"), 5);
        assert_eq!(unfinished_suffix(b"a\x1b"), 1);
        assert_eq!(unfinished_suffix(b"a\x1b]2;title"), 9);
        assert_eq!(unfinished_suffix(b"a\x1b]2;title\x07"), 0);
        assert_eq!(unfinished_suffix("a\u{4e2d}".as_bytes()), 0);
        assert_eq!(unfinished_suffix(&"a\u{4e2d}".as_bytes()[..3]), 2);
        assert_eq!(unfinished_suffix(b"\x1b[1m\xe4"), 1);
    }

    /// The seam: a restore taken after any byte of the output, followed by
    /// the rest of the output, ends in the same screen as the whole output.
    #[test]
    fn a_restore_at_any_byte_then_the_rest_of_the_output_matches() {
        let size = size(80, 24);
        let output = busy_output();
        let reference = terminal(size, &output);
        for cut in (0..output.len()).step_by(37) {
            let mut model = Screen::new(size);
            model.process(&output[..cut]);
            let mut fresh = terminal(size, b"");
            fresh.process(&model.restore(""));
            fresh.process(&output[cut - unfinished_suffix(&output[..cut])..cut]);
            fresh.process(&output[cut..]);
            assert_eq!(
                fresh.screen().contents_formatted(),
                reference.screen().contents_formatted(),
                "cut at {cut}"
            );
            assert_eq!(
                fresh.screen().cursor_position(),
                reference.screen().cursor_position()
            );
        }
    }
}
