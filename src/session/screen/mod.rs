//! The session's terminal model: what a terminal that never left would show.
//!
//! Every byte of output goes through an [`alacritty_terminal`] emulator
//! sized to the PTY, so that a client which (re)attaches gets the current
//! screen drawn exactly ([`redraw`]): every cell with its character,
//! colours, attributes (SGR 1–9, 21, 53, underline styles and colour) and
//! OSC 8 hyperlink; both screens (the primary one behind the alternate one);
//! the cursor, its pending wrap, style and saved copy (DECSC); the scroll
//! region (DECSTBM), origin mode, tab stops and character sets; every input
//! mode (bracketed paste, application cursor keys and keypad, mouse
//! reporting and encodings, focus events, kitty keyboard flags,
//! modifyOtherKeys); palette and colour changes (OSC 4/10/11/12); the title
//! and its stack. The emulator was chosen by measurement over `vt100`,
//! which keeps none of the second half (see BENCHMARKS.md); keepsh carries
//! a small patch to it (`vendor/alacritty_terminal`, reason in Cargo.toml).
//!
//! Not carried, as neither tmux nor the terminals of phone apps keep them:
//! left and right margins (DECLRMM/DECSLRM), images (sixel, kitty
//! graphics); DECCOLM is ignored, as xterm does by default. The older
//! alternate screens (47, 1047) and 1048 are kept like 1049's.
//!
//! The model never answers the program: requests that make a terminal
//! reply (DA, DSR, OSC 10/11 `?`…) and OSC 52 clipboard writes go to a
//! listener that drops them.
//!
//! The model keeps no scrollback (at 24 bytes per cell it would cost more
//! than the raw output): history lines are rebuilt on demand from the raw
//! ring buffer ([`history`]).

mod redraw;

use std::fmt::Write as _;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alacritty_terminal::event::{Event, EventListener};
use alacritty_terminal::grid::{Dimensions, Grid};
use alacritty_terminal::index::{Column, Line};
use alacritty_terminal::term::cell::{Cell, Flags};
use alacritty_terminal::term::{Config, Term, TermMode};
use alacritty_terminal::vte::ansi::{Processor, Timeout};

use crate::protocol::PtySize;

use redraw::Pen;

/// A session's screen: a terminal emulator fed with the program's output.
pub struct Screen {
    term: Term<Silent>,
    /// Bells rung since [`Screen::take_bells`] last looked (the emulator's
    /// listener counts them).
    bells: Arc<AtomicU64>,
    parser: Processor<Unsynchronized>,
}

/// Where the emulator's events go: nowhere, but for a count of bells. Its
/// answers to the program's requests (`Event::PtyWrite`) never reach the
/// session as input, and a clipboard write is not kept.
#[derive(Clone, Default)]
struct Silent {
    bells: Arc<AtomicU64>,
}

impl EventListener for Silent {
    fn send_event(&self, event: Event) {
        if let Event::Bell = event {
            self.bells.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Synchronized updates (DECSET 2026) are not held back: the model applies
/// output as it comes, so that a redraw is never older than the output
/// sent so far (and no buffer of up to 2 MiB waits for an end that may
/// never come).
#[derive(Default)]
struct Unsynchronized;

impl Timeout for Unsynchronized {
    fn set_timeout(&mut self, _: Duration) {}
    fn clear_timeout(&mut self) {}
    fn pending_timeout(&self) -> bool {
        false
    }
}

/// A grid size for the emulator, in cells.
struct Cells {
    columns: usize,
    lines: usize,
}

impl Dimensions for Cells {
    fn total_lines(&self) -> usize {
        self.lines
    }
    fn screen_lines(&self) -> usize {
        self.lines
    }
    fn columns(&self) -> usize {
        self.columns
    }
}

impl From<PtySize> for Cells {
    fn from(size: PtySize) -> Cells {
        Cells {
            columns: usize::from(size.cols().max(1)),
            lines: usize::from(size.rows().max(1)),
        }
    }
}

/// An emulator of `size` that keeps up to `history` lines scrolled off the
/// top of its primary screen.
fn emulator(size: PtySize, history: usize, listener: Silent) -> Term<Silent> {
    let config = Config {
        scrolling_history: history,
        kitty_keyboard: true,
        ..Config::default()
    };
    Term::new(config, &Cells::from(size), listener)
}

impl Screen {
    /// A blank screen of `size` cells. Memory: 24 bytes per cell, both
    /// grids allocated at once (measured in `benches/model.rs`).
    pub fn new(size: PtySize) -> Screen {
        let listener = Silent::default();
        Screen {
            bells: Arc::clone(&listener.bells),
            term: emulator(size, 0, listener),
            parser: Processor::new(),
        }
    }

    /// Feeds the program's output, in the order it was read from the PTY.
    /// Any bytes are accepted; a sequence split across calls is carried over.
    pub fn process(&mut self, output: &[u8]) {
        self.parser.advance(&mut self.term, output);
    }

    /// Whether the program set application cursor keys (DECCKM): then the
    /// cursor keys send `ESC O A` rather than `ESC [ A`.
    pub fn app_cursor(&self) -> bool {
        self.term.mode().contains(TermMode::APP_CURSOR)
    }

    /// The last title the program set (OSC 0/2), if any.
    pub fn title(&self) -> Option<String> {
        self.term.title().0.map(str::to_owned)
    }

    /// The directory the program last announced with OSC 7 (`file://HOST/
    /// PATH`, the path percent-decoded), if it did and it is a local path
    /// (the host is empty, `localhost` or this machine's name).
    pub fn working_directory(&self) -> Option<PathBuf> {
        let uri = self.term.working_directory()?.strip_prefix("file://")?;
        let (host, path) = uri.split_at(uri.find('/')?);
        let local = host.is_empty()
            || host == "localhost"
            || rustix::system::uname().nodename().to_str() == Ok(host);
        let path = percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
        local.then(|| PathBuf::from(std::ffi::OsString::from_vec(path)))
    }

    /// The last non-empty line of the visible screen, trimmed, at most
    /// `max` characters.
    pub fn last_line(&self, max: usize) -> Option<String> {
        let text = self.text();
        let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
        Some(line.chars().take(max).collect())
    }

    /// How many bells (BEL outside any escape sequence) the output rang
    /// since the last call.
    pub fn take_bells(&mut self) -> u64 {
        self.bells.swap(0, Ordering::Relaxed)
    }

    /// Follows a resize of the PTY. Wrapped lines of the primary screen are
    /// reflowed (as tmux and most terminals do); the scroll region resets.
    pub fn resize(&mut self, size: PtySize) {
        self.term.resize(Cells::from(size));
    }

    /// Terminal bytes that bring any terminal of the model's size to this
    /// screen, with `history` (as returned by [`history`]) in the
    /// terminal's own scrollback: both screens, the cursor and every mode
    /// and setting listed in this module's documentation. State the
    /// terminal may have from an earlier program (mouse reporting, a scroll
    /// region, palette changes…) is reset unless the model has it.
    ///
    /// The screen comes first, so that over a slow link it is visible
    /// after a screenful of bytes, as tmux's redraw is: what the terminal
    /// showed is scrolled into its scrollback, the screen drawn, then the
    /// history lines printed through a scroll region of the top two rows
    /// (DECSTBM 1;2: a line scrolled off a region that starts at the top
    /// goes to the scrollback in xterm, VTE, xterm.js, alacritty and tmux),
    /// and the screen drawn again over blanked rows. A terminal of one row
    /// gets the history first, then the screen.
    ///
    /// Returns the bytes and how many of them first show the screen (all
    /// of them without history): sent as a message of their own, a client
    /// can show them without waiting for the history's bytes.
    pub fn restore(&self, history: &str) -> (Vec<u8>, usize) {
        let rows = self.term.screen_lines();
        let mut out = String::with_capacity(history.len() + 16384);
        out.push_str(redraw::RESET);
        if history.is_empty() || rows < 2 {
            if !history.is_empty() {
                scroll_in(history.split('\n'), rows, &mut out);
            }
            redraw::state(&self.term, &mut out);
            let shown = out.len();
            return (out.into_bytes(), shown);
        }
        scroll_in(std::iter::empty(), rows, &mut out);
        redraw::state(&self.term, &mut out);
        let shown = out.len();
        out.push_str(redraw::RESET);
        // Rows 1 and 2 blank, the cursor home: the first line printed there
        // is the first to scroll off.
        out.push_str("\x1b[1;2r\x1b[2K\x1b[2;1H\x1b[2K\x1b[H");
        out.push_str(&history.replace('\n', "\r\n"));
        // The last line's last row into the scrollback: the first CRLF
        // either moves to row 2 (left blank) or scrolls, so that the second
        // always scrolls that row off.
        out.push_str("\r\n\r\n");
        out.push_str(redraw::RESET);
        // Blank row by row: clearing a screen that shows something (ED 2)
        // copies it into the scrollback in tmux (`scroll-on-clear`) and VTE.
        for row in 1..=rows {
            let _ = write!(out, "\x1b[{row};1H\x1b[2K");
        }
        redraw::state(&self.term, &mut out);
        (out.into_bytes(), shown)
    }

    /// The visible screen as plain text: rows joined by `\n` (a row that
    /// wraps joined to the next), trailing blanks trimmed.
    pub fn text(&self) -> String {
        let grid = self.term.grid();
        let mut text = String::new();
        for line in 0..grid.screen_lines() {
            let wraps = plain_row(grid, Line(line as i32), &mut text);
            if !wraps {
                let trimmed = text.trim_end_matches(' ').len();
                text.truncate(trimmed);
                text.push('\n');
            }
        }
        let trimmed = text.trim_end_matches(['\n', ' ']).len();
        text.truncate(trimmed);
        text
    }
}

/// Appends the characters of one row; returns whether it wraps.
fn plain_row(grid: &Grid<Cell>, line: Line, text: &mut String) -> bool {
    let row = &grid[line];
    for column in 0..grid.columns() {
        let cell = &row[Column(column)];
        if !cell
            .flags
            .intersects(Flags::WIDE_CHAR_SPACER | Flags::LEADING_WIDE_CHAR_SPACER)
        {
            text.push(redraw::shown(cell));
            text.extend(cell.zerowidth().unwrap_or_default());
        }
    }
    row[Column(grid.columns() - 1)]
        .flags
        .contains(Flags::WRAPLINE)
}

/// Most lines [`history`] keeps: alacritty's own limit on scrollback.
const MAX_HISTORY_ROWS: usize = 100_000;

/// The lines of `output` that scrolled off the top of a `size` screen, with
/// their colours, attributes (SGR) and hyperlinks (OSC 8) inline and reset
/// at each line's end, joined by `\n`; rows that wrapped are joined into
/// one line. `output` should begin at a line start (see
/// `RingBuffer::tail_lines_start`); rows of the alternate screen are not
/// history and are left out. At most the last 100,000 rows are kept.
pub fn history(output: &[u8], size: PtySize) -> String {
    let mut term = emulator(size, MAX_HISTORY_ROWS, Silent::default());
    Processor::<Unsynchronized>::new().advance(&mut term, output);
    let grid = term.grid();
    let mut text = String::new();
    let mut pen = Pen::plain();
    for line in (1..=grid.history_size()).rev() {
        let wraps = redraw::row(grid, Line(-(line as i32)), false, &mut pen, &mut text);
        if !wraps {
            pen.switch(&Pen::plain(), &mut text);
            pen = Pen::plain();
            text.push('\n');
        }
    }
    pen.switch(&Pen::plain(), &mut text);
    if text.ends_with('\n') {
        text.pop();
    }
    text
}

/// Prints `lines` at the bottom of a terminal of `rows` rows (after
/// [`redraw::RESET`]: the cursor on the bottom row), then scrolls them and
/// what the screen showed into its scrollback.
fn scroll_in<'a>(lines: impl Iterator<Item = &'a str>, rows: usize, out: &mut String) {
    for line in lines {
        out.push_str("\r\n");
        out.push_str(line);
    }
    for _ in 0..rows {
        out.push_str("\r\n");
    }
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

/// `formatted` (as returned by [`history`]) without its escape sequences:
/// the printed characters and the line feeds.
pub fn plain(formatted: &str) -> String {
    struct Text(String);
    impl vte::Perform for Text {
        fn print(&mut self, c: char) {
            self.0.push(c);
        }
        fn execute(&mut self, byte: u8) {
            if byte == b'\n' {
                self.0.push('\n');
            }
        }
    }
    let mut text = Text(String::with_capacity(formatted.len()));
    vte::Parser::new().advance(&mut text, formatted.as_bytes());
    text.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use alacritty_terminal::index::Point;

    fn size(cols: u32, rows: u32) -> PtySize {
        PtySize::from_request(cols, rows, PtySize::DEFAULT)
    }

    /// A terminal that saw `bytes` from the start.
    fn terminal(size: PtySize, bytes: &[u8]) -> vt100::Parser {
        let nonzero = |n: u16| std::num::NonZeroU16::new(n).expect("size");
        let mut parser = vt100::Parser::new(nonzero(size.rows()), nonzero(size.cols()), 100);
        parser.process(bytes);
        parser
    }

    /// Each cell of `screen` with what vt100 keeps of it. (A space printed
    /// and a cell never written look the same on a terminal; vt100's own
    /// formatted dump tells them apart, so it is not compared.)
    fn cells(screen: &vt100::Screen) -> Vec<String> {
        let (rows, cols) = screen.size();
        let mut cells = Vec::new();
        for row in 0..rows.get() {
            for col in 0..cols.get() {
                let cell = screen.cell(row, col).expect("in the screen");
                let text = match cell.contents() {
                    "" => " ",
                    text => text,
                };
                cells.push(format!(
                    "{row},{col} {text:?} {:?} {:?} {}{}{}{}{}",
                    cell.fgcolor(),
                    cell.bgcolor(),
                    u8::from(cell.bold()),
                    u8::from(cell.dim()),
                    u8::from(cell.italic()),
                    u8::from(cell.underline()),
                    u8::from(cell.inverse())
                ));
            }
        }
        cells
    }

    fn assert_same(a: &vt100::Screen, b: &vt100::Screen) {
        assert_eq!(cells(a), cells(b));
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
        fresh.process(&model.restore("").0);
        assert_same(fresh.screen(), reference.screen());
    }

    #[test]
    fn a_synchronized_update_is_applied_as_it_comes() {
        // Held back by a terminal until its end (DECRST 2026); the model
        // applies it at once, so a redraw is never older than the output.
        let mut model = Screen::new(size(20, 3));
        model.process(b"\x1b[?2026h\x1b[Hframe one");
        assert!(model.text().contains("frame one"), "{:?}", model.text());
        // Longer than vte's 2 MiB limit for an update it holds back.
        model.process("x".repeat(3 << 20).as_bytes());
        model.process(b"\x1b[2J\x1b[Hframe two\x1b[?2026l");
        assert!(model.text().starts_with("frame two"), "{:?}", model.text());
    }

    #[test]
    fn title_and_focus_reporting_are_restored() {
        let mut model = Screen::new(size(20, 5));
        model.process(b"\x1b]2;my title\x07\x1b[?1004h");
        let restore = String::from_utf8(model.restore("").0).expect("utf-8");
        assert!(restore.contains("\x1b]2;my title\x1b\\"), "{restore:?}");
        assert!(restore.contains("\x1b[?1004h"));
        model.process(b"\x1b]0;both\x07\x1b[?1004l");
        let restore = String::from_utf8(model.restore("").0).expect("utf-8");
        assert!(restore.contains("\x1b]2;both\x1b\\"), "{restore:?}");
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
        assert!(history.contains("\x1b[0;32m"), "colours kept: {history:?}");
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
        let (restore, shown) = model.restore(&history(&output, size));
        // The first part alone already shows the screen.
        let mut first = terminal(size, b"");
        first.process(&restore[..shown]);
        assert_same(first.screen(), terminal(size, &output).screen());
        assert!(shown < restore.len());
        let mut fresh = terminal(size, b"");
        fresh.process(&restore);
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
        let mut reference = Screen::new(size);
        reference.process(&output);
        let reference = snapshot(&reference);
        for cut in (0..output.len()).step_by(37) {
            let mut model = Screen::new(size);
            model.process(&output[..cut]);
            let mut fresh = Screen::new(size);
            fresh.process(&model.restore("").0);
            fresh.process(&output[cut - unfinished_suffix(&output[..cut])..cut]);
            fresh.process(&output[cut..]);
            assert!(snapshot(&fresh) == reference, "cut at {cut}");
        }
    }

    /// Everything of `screen` a redraw must carry, as text to compare.
    fn snapshot(screen: &Screen) -> String {
        let term = &screen.term;
        let mut out = String::new();
        let mut grids = vec![("active", term.grid())];
        if term
            .mode()
            .contains(alacritty_terminal::term::TermMode::ALT_SCREEN)
        {
            grids.push(("primary", term.inactive_grid()));
        }
        for (name, grid) in grids {
            out.push_str(&format!("{name} grid:\n"));
            for line in 0..grid.screen_lines() {
                let row = &grid[Line(line as i32)];
                for column in 0..grid.columns() {
                    let cell = &row[Column(column)];
                    let mut pen = String::new();
                    Pen::plain().switch(&Pen::of(cell), &mut pen);
                    let layout =
                        cell.flags & (Flags::WIDE_CHAR | Flags::WIDE_CHAR_SPACER | Flags::WRAPLINE);
                    out.push_str(&format!(
                        "{:?}{:?}{}{pen:?} ",
                        cell.c,
                        cell.zerowidth().filter(|marks| !marks.is_empty()),
                        layout.bits()
                    ));
                }
                out.push('\n');
            }
            let (cursor, saved) = (&grid.cursor, &grid.saved_cursor);
            out.push_str(&format!(
                "cursor {:?} wrap {} charsets {:?}\n",
                cursor.point,
                cursor.input_needs_wrap,
                [0, 1, 2, 3].map(|i| format!(
                    "{:?}",
                    cursor.charsets[[
                        alacritty_terminal::vte::ansi::CharsetIndex::G0,
                        alacritty_terminal::vte::ansi::CharsetIndex::G1,
                        alacritty_terminal::vte::ansi::CharsetIndex::G2,
                        alacritty_terminal::vte::ansi::CharsetIndex::G3
                    ][i]]
                ))
            ));
            let mut pen = String::new();
            Pen::plain().switch(&Pen::of(&cursor.template), &mut pen);
            out.push_str(&format!("pen {pen:?}\n"));
            if name == "active" {
                let mut saved_pen = String::new();
                Pen::plain().switch(&Pen::of(&saved.template), &mut saved_pen);
                out.push_str(&format!("saved {:?} {saved_pen:?}\n", saved.point));
            }
        }
        let mode = *term.mode() & !alacritty_terminal::term::TermMode::ALTERNATE_SCROLL;
        let colors: Vec<_> = (0..259)
            .filter_map(|i| term.colors()[i].map(|c| (i, c)))
            .collect();
        out.push_str(&format!(
            "mode {mode:?}\nsaved origin {:?}\nregion {:?}\ntabs {:?}\ncharset {:?}\ntitle {:?}\n\
             keyboard {:?}\nmodify {:?}\ncolors {colors:?}\nstyle {:?}\n",
            term.saved_origin(),
            term.scroll_region(),
            term.tab_stops().collect::<Vec<_>>(),
            term.active_charset(),
            term.title(),
            term.keyboard_mode_stacks(),
            term.modify_other_keys(),
            term.cursor_style(),
        ));
        out
    }

    /// A fresh model fed `screen`'s restore (after other output) must equal it.
    fn assert_round_trip(screen: &Screen, size: PtySize) {
        let mut fresh = Screen::new(size);
        fresh.process(
            b"junk\x1b[?1000h\x1b[2;3r\x1b]4;1;rgb:01/02/03\x07\x1b[>1u\x1b(0\x0e\x1b[5;5H",
        );
        fresh.process(&screen.restore("").0);
        let (want, got) = (snapshot(screen), snapshot(&fresh));
        if want != got {
            let diff: Vec<_> = want
                .lines()
                .zip(got.lines())
                .filter(|(a, b)| a != b)
                .take(4)
                .collect();
            panic!(
                "restore differs:\n{diff:#?}\n{}\n---\n{}",
                screen.text(),
                fresh.text()
            );
        }
    }

    /// Every attribute, both screens, the scroll region, origin mode, the
    /// saved cursor, charsets, tab stops, hyperlinks, colours, keyboard
    /// modes and the title survive a restore.
    #[test]
    fn a_restore_carries_every_attribute_and_setting_the_model_keeps() {
        let size = size(30, 8);
        let program: &[u8] = b"\x1b]2;first\x07\x1b[22;2t\x1b]2;second\x07\
            \x1b[2mdim\x1b[m \x1b[5mblink\x1b[m \x1b[8mhid\x1b[m \x1b[9mstrike\x1b[m\r\n\
            \x1b[4:2mdouble\x1b[4:3;58:2::255:0:0mcurly\x1b[59;4:4mdot\x1b[4:5mdash\x1b[m\r\n\
            \x1b[53mover\x1b[55m \x1b[21mtwice\x1b[m \x1b[38;5;1mix\x1b[31mnamed\x1b[m\r\n\
            \x1b]8;id=a;https://example.com/\x1b\\link\x1b]8;;\x1b\\ \x1b]8;;file:///x\x07f\x1b]8;;\x07\r\n\
            \xe4\xb8\xad\xe6\x96\x87e\xcc\x81 \x1b(0lqk\x1b(B \x1b)0\x0eq\x0f\r\n\
            \x1b[3g\x1b[1;5H\x1bH\x1b[1;12H\x1bH\
            \x1b]4;3;rgb:10/20/30\x07\x1b]11;rgb:00/00/40\x07\x1b[>1u\x1b[>5u\x1b[>4;2m\x1b[4 q\
            \x1b[6;2H\x1b[1;33m\x1b7\x1b[m\
            \x1b[?1049h\x1b[Halt screen\x1b[2;6r\x1b[?6h\x1b[3;1Hin region\x1b[4h\x1b[?7l\
            \x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?1004h\x1b[?1h\x1b=\x1b[?25l\x1b[7m";
        let mut screen = Screen::new(size);
        screen.process(program);
        assert_round_trip(&screen, size);
        // And back on the primary screen, with what the alternate one left.
        screen
            .process(b"\x1b[m\x1b[?1049l\x1b[?6l\x1b[r\x1b[4l\x1b[?7h\x1b[8;25Hend of row\x1b[>1u");
        assert_round_trip(&screen, size);
    }

    /// The older alternate screens (47, 1047) keep the cursor where it is
    /// on the way in and out; 1048 saves and restores it as DECSC/DECRC.
    #[test]
    fn the_older_alternate_screens_and_1048_are_kept_and_restored() {
        let size = size(20, 6);
        let mut screen = Screen::new(size);
        screen.process(b"primary\x1b[3;4H\x1b[?1048h\x1b[?47h\x1b[5;9Halt");
        assert_eq!(
            screen.term.grid().cursor.point,
            Point::new(Line(4), Column(11))
        );
        assert!(screen.text().contains("alt"));
        assert_round_trip(&screen, size);
        screen.process(b"\x1b[?47l");
        assert!(screen.text().contains("primary") && !screen.text().contains("alt"));
        assert_eq!(
            screen.term.grid().cursor.point,
            Point::new(Line(4), Column(11))
        );
        screen.process(b"\x1b[?1048l");
        assert_eq!(
            screen.term.grid().cursor.point,
            Point::new(Line(2), Column(3))
        );
        screen.process(b"\x1b[?1047hon 1047");
        assert!(screen.text().contains("on 1047"));
        assert_round_trip(&screen, size);
        screen.process(b"\x1b[?1047l");
        assert_eq!(
            screen.term.grid().cursor.point,
            Point::new(Line(2), Column(10))
        );
        assert_round_trip(&screen, size);
    }

    /// Line drawing designated on the primary screen does not turn the
    /// alternate screen's text into line drawing (fuzz seed 87).
    #[test]
    fn line_drawing_in_g0_before_the_alternate_screen_leaves_its_text_as_text() {
        let size = size(30, 4);
        let mut screen = Screen::new(size);
        screen.process(b"\x1b(0lqk\x1b[?1049h\x0etext on alt");
        assert_round_trip(&screen, size);
        let mut fresh = Screen::new(size);
        fresh.process(&screen.restore("").0);
        assert!(fresh.text().contains("text on alt"), "{}", fresh.text());
    }

    /// A row that a wrapped row continues onto, erased and then written
    /// further right, is drawn where it was (fuzz seed 118).
    #[test]
    fn a_continued_row_that_starts_with_blanks_is_drawn_in_place() {
        let size = size(20, 4);
        let mut screen = Screen::new(size);
        screen.process(b"\x1b[15Gwraps onto row two\x1b[2K, link");
        assert_round_trip(&screen, size);
    }

    /// The fuzz target's property: a fresh model fed the redraw redraws
    /// the same.
    fn assert_fixed_point(size: PtySize, output: &[u8]) {
        let mut screen = Screen::new(size);
        screen.process(output);
        let (redraw, _) = screen.restore("");
        let mut fresh = Screen::new(size);
        fresh.process(&redraw);
        assert_eq!(
            String::from_utf8_lossy(&fresh.restore("").0),
            String::from_utf8_lossy(&redraw)
        );
    }

    /// A row that wraps onto a row with nothing on it still wraps when
    /// redrawn (cargo fuzz, `screen`: replacement characters and tabs up
    /// to the last column).
    #[test]
    fn a_row_wrapping_onto_an_empty_row_is_still_marked_as_wrapping() {
        assert_fixed_point(size(12, 5), b"\xff\xff\t\xff\t\xff ");
    }

    /// A cursor that printed the last column waits to wrap; so does the
    /// restored one, for the next character the program prints.
    #[test]
    fn a_restore_keeps_the_pending_wrap() {
        let size = size(10, 3);
        let mut screen = Screen::new(size);
        screen.process(b"0123456789");
        assert_round_trip(&screen, size);
        let mut fresh = Screen::new(size);
        fresh.process(&screen.restore("").0);
        screen.process(b"x");
        fresh.process(b"x");
        assert_eq!(snapshot(&screen), snapshot(&fresh));
    }

    /// Every sequence in `bytes`, as `kind intermediates params final`,
    /// read by vte's plain parser (not the model).
    fn sequences(bytes: &[u8]) -> Vec<String> {
        #[derive(Default)]
        struct Seen(Vec<String>);
        impl vte::Perform for Seen {
            fn csi_dispatch(&mut self, params: &vte::Params, i: &[u8], _: bool, c: char) {
                let params: Vec<Vec<u16>> = params.iter().map(<[u16]>::to_vec).collect();
                self.0
                    .push(format!("CSI {} {params:?} {c}", String::from_utf8_lossy(i)));
            }
            fn osc_dispatch(&mut self, params: &[&[u8]], _: bool) {
                let params: Vec<_> = params.iter().map(|p| String::from_utf8_lossy(p)).collect();
                self.0.push(format!("OSC {params:?}"));
            }
            fn hook(&mut self, _: &vte::Params, i: &[u8], _: bool, c: char) {
                self.0
                    .push(format!("DCS {} {c}", String::from_utf8_lossy(i)));
            }
            fn esc_dispatch(&mut self, i: &[u8], _: bool, byte: u8) {
                self.0.push(format!(
                    "ESC {} {}",
                    String::from_utf8_lossy(i),
                    byte as char
                ));
            }
        }
        let mut seen = Seen::default();
        vte::Parser::new().advance(&mut seen, bytes);
        seen.0
    }

    /// The redraw never asks the viewer's terminal anything, even when the
    /// program did (DA, DSR, DECRQSS, window report, colour queries,
    /// clipboard read and write, DECRQM, kitty flags query).
    #[test]
    fn a_restore_holds_no_request_and_no_clipboard() {
        let mut screen = Screen::new(size(20, 4));
        screen.process(b"\x1b]2;t\x07\x1b[c\x1b[>c\x1b[6n\x1b[5n\x1bP$qm\x1b\\\x1b[21t\x1b]10;?\x07\x1b]11;?\x07\
            \x1b]4;1;?\x07\x1b]52;c;?\x07\x1b]52;c;c2VjcmV0\x07\x1b[?u\x1b[?2026$p\x1b[?m text");
        let restore = screen.restore("").0;
        let requests: Vec<String> = sequences(&restore)
            .into_iter()
            .filter(|seq| {
                let csi_final = seq.starts_with("CSI").then(|| seq.chars().last()).flatten();
                matches!(csi_final, Some('c' | 'n' | 'p'))
                    || (csi_final == Some('t') && !seq.contains("[[22], [2]]"))
                    || (csi_final == Some('u') && seq.starts_with("CSI ?"))
                    || (csi_final == Some('m') && seq.starts_with("CSI ?"))
                    || seq.starts_with("DCS")
                    || (seq.starts_with("OSC") && (seq.contains('?') || seq.contains("\"52\"")))
            })
            .collect();
        assert!(requests.is_empty(), "{requests:?}");
        assert!(!String::from_utf8_lossy(&restore).contains("c2VjcmV0"));
    }

    /// A row scrolled down to the bottom (SD) keeps its wrap flag with
    /// nothing below to continue onto; its blanks are not printed (cargo
    /// fuzz, `screen`: a redraw printed a blank in the last column that a
    /// fresh model then redrew without).
    #[test]
    fn a_wrapped_row_scrolled_to_the_bottom_is_drawn_as_it_looks() {
        assert_fixed_point(size(12, 5), b"            x\x1b[4T");
        assert_fixed_point(size(12, 5), b"0123456789ABx\x1b[4T");
    }

    /// Entering the alternate screen with origin mode set saves it with
    /// the cursor (1049 is DECSC too), and the redraw enters it so (cargo
    /// fuzz, `screen`: the redraw saved origin mode off).
    #[test]
    fn origin_mode_saved_by_entering_the_alternate_screen_is_kept() {
        assert_fixed_point(size(80, 24), b"\x1b[?6habcd\x1b[?1049h\x1b[?6lxy");
        assert_fixed_point(size(80, 24), b"\x1b[?6habcd\x1b[?1049h\x1b[?6lxy\x1b8");
    }

    /// Tabbing back (CBT) from a pending wrap leaves none (xterm, tmux;
    /// cargo fuzz, `screen`: the model kept it, and the redraw printed a
    /// character to restore it).
    #[test]
    fn a_backward_tab_from_a_pending_wrap_leaves_none() {
        assert_fixed_point(size(12, 5), b"0123456789AB\x1b[Z");
        let mut screen = Screen::new(size(12, 5));
        screen.process(b"0123456789AB\x1b[Zx");
        assert_eq!(screen.text().lines().next(), Some("01234567x9AB"));
    }

    /// A row keeps wrapping when its last cell is written again (xterm and
    /// tmux keep the wrap per row; cargo fuzz, `screen`: a cursor restored
    /// to a pending wrap there made the redraw print the cell again, and
    /// the row lost its wrap).
    #[test]
    fn overwriting_the_last_cell_of_a_wrapped_row_keeps_the_wrap() {
        assert_fixed_point(size(12, 5), b"0123456789AB\x1b7CD\x1b8");
        let mut screen = Screen::new(size(12, 5));
        screen.process(b"0123456789ABCD\x1b[1;12Hb");
        assert_eq!(screen.text().lines().next(), Some("0123456789AbCD"));
    }

    /// OSC 7 gives the directory when no process can be asked; a redraw
    /// carries it; another host's path is not this machine's directory.
    #[test]
    fn the_working_directory_comes_from_osc_7() {
        let mut screen = Screen::new(size(20, 5));
        assert_eq!(screen.working_directory(), None);
        screen.process(b"\x1b]7;file:///srv/my%20dir\x07");
        assert_eq!(
            screen.working_directory(),
            Some(PathBuf::from("/srv/my dir"))
        );
        assert_fixed_point(size(20, 5), b"\x1b]7;file://localhost/tmp\x1b\\x");
        let mut fresh = Screen::new(size(20, 5));
        fresh.process(&screen.restore("").0);
        assert_eq!(
            fresh.working_directory(),
            Some(PathBuf::from("/srv/my dir"))
        );
        screen.process(b"\x1b]7;file://elsewhere.example/home/me\x07");
        assert_eq!(screen.working_directory(), None);
    }

    /// Insert mode (IRM) printing into the second half of a wide
    /// character erases it, as xterm and tmux do (cargo fuzz, `screen`:
    /// the model kept the wide character with its spacer overwritten, and
    /// its redraw overflowed the row).
    #[test]
    fn insert_mode_over_half_a_wide_character_erases_it() {
        assert_fixed_point(size(12, 5), b"ab\xe4\xb2\x80cd\x1b[4h\x1b[4Gx");
        let mut screen = Screen::new(size(12, 5));
        screen.process(b"ab\xe4\xb2\x80cd\x1b[4h\x1b[4Gx");
        assert_eq!(screen.text().lines().next(), Some("ab x cd"));
        assert_fixed_point(size(12, 5), b"0123456789\xe4\xb2\x80\x1b[4h\x1b[1Gx");
    }

    /// A scroll region whose bottom lies past the screen is clamped first
    /// and then checked: top 6, bottom 80 on 5 rows is refused, as xterm
    /// and tmux refuse it (cargo fuzz, `screen`: the model kept an empty
    /// region that no redraw could set).
    #[test]
    fn a_scroll_region_below_the_screen_is_refused() {
        assert_fixed_point(size(12, 5), b"abc\x1b[6;80rde");
        let mut screen = Screen::new(size(12, 5));
        screen.process(b"\x1b[2;80r\x1b[6;80r\x1b[5Hx\n");
        // The region 2..5 still holds: the line feed at the bottom scrolls
        // rows 2 to 5 only.
        assert_eq!(screen.text().lines().nth(3), Some("x"));
    }

    /// A row that wraps for a wide character printed at its last column
    /// (the cell left empty, alacritty's leading spacer) still wraps the
    /// same way when the row below was overwritten, erased, or moved by
    /// IL (cargo fuzz, `screen`: the redraw printed the row below into
    /// that last cell, or a blank there that did not wrap).
    #[test]
    fn a_row_left_by_a_wide_character_still_wraps_whatever_came_below() {
        let size = size(12, 5);
        for output in [
            &b"0123456789A\xe4\xb8\xadb\x1b[1Gxy"[..],
            b"0123456789A\xe4\xb8\xad\x1b[2K",
            b"0123456789A\xe4\xb8\xad\x1b[L",
            b"0123456789A\x1b[41m\xe4\xb8\xad",
            // The wrap ended by IL: the spacer is a blank with a pen.
            b"0123456789A\x1b[4m\xe4\xb8\xad\x1b[m\x1b[L",
            // The cursor restored (DECRC) to a wrap pending on the spacer.
            b"0123456789AB\x1b7\x1b[1;12H\xe4\xb8\xad\x1b8",
            b"0123456789A\xe4\xb8\xadb\x1b[1G\x1b[2X\x1b[4Gx",
            // Found inputs, as the fuzzer wrote them.
            b"\x1b\x00\xdc\x1b[ht\x01\x80://19L\x931\xff\x00\x00\x00\x00\x00\x00\xfd\xcc\
              \xe4\xa4\xb3\x00\x19\x1b[1;L\x1b[49",
            b"wr0[J\x1b[0L;5H\xe4\xb8\xad\xe6\x96\x87J\x1b[0L;5Hr&\x1b0[J\x1b[0L;5H\
              \xe4\xb8\xad\xe6\x96\x87J\x1b[0L;5H\xe4\xb8\xad\xe6\x96\x87",
        ] {
            assert_fixed_point(size, output);
            let mut screen = Screen::new(size);
            screen.process(output);
            assert_round_trip(&screen, size);
        }
        let mut screen = Screen::new(size);
        screen.process(b"0123456789A\xe4\xb8\xadb\x1b[1Gxy");
        let mut fresh = Screen::new(size);
        fresh.process(&screen.restore("").0);
        // The first row wraps (its text runs on), its last cell empty.
        assert_eq!(fresh.text(), "0123456789A xyb");
        assert_eq!(fresh.text(), screen.text());
    }

    /// Clearing the whole row below (EL 2, EL 0 from its first column, ED
    /// 0 from there, ECH of every cell) or moving it (IL, DL) ends a row's wrap; clearing
    /// part of it does not (tmux's `grid_clear_lines` and
    /// `grid_move_lines`; tests/e2e/fidelity.rs compares with tmux).
    #[test]
    fn clearing_or_moving_the_row_below_ends_a_wrap() {
        for (output, wraps) in [
            ("\x1b[2K", false),
            ("\x1b[K", false),
            ("\x1b[J", false),
            ("\x1b[L", false),
            ("\x1b[M", false),
            ("\x1b[2X", true),
            ("\x1b[12X", false),
            ("\x1b[2Gx\x1b[K", true),
            ("\x1b[2Gx\x1b[J", true),
        ] {
            let mut screen = Screen::new(size(12, 5));
            screen.process(format!("0123456789ABcd\x1b[2;1H{output}").as_bytes());
            let last = &screen.term.grid()[Line(0)][Column(11)];
            assert_eq!(last.flags.contains(Flags::WRAPLINE), wraps, "{output:?}");
        }
    }

    /// A clear that takes half a wide character (EL, ED, ECH) erases all
    /// of it, as xterm does (cargo fuzz, `screen`: EL 1 left a spacer
    /// without its character, which the redraw lost).
    #[test]
    fn a_clear_over_half_a_wide_character_erases_all_of_it() {
        for (clear, shown) in [
            ("\x1b[3G\x1b[1K", "    cd"),
            ("\x1b[3G\x1b[1J", "    cd"),
            ("\x1b[4G\x1b[K", "ab"),
            ("\x1b[4G\x1b[J", "ab"),
            ("\x1b[4G\x1b[X", "ab  cd"),
            ("\x1b[3G\x1b[X", "ab  cd"),
        ] {
            let output = format!("ab\u{4e2d}cd{clear}");
            assert_fixed_point(size(12, 5), output.as_bytes());
            let mut screen = Screen::new(size(12, 5));
            screen.process(output.as_bytes());
            assert_eq!(screen.text(), shown, "{clear:?}");
        }
    }

    /// ICH, DCH and insert mode take or move whole wide characters (cargo
    /// fuzz, `screen`: ICH pushed one to the last column without its
    /// spacer, which a redraw wrapped onto the next row; insert mode left
    /// a spacer without its character) and leave a row's wrap on the row.
    #[test]
    fn inserting_or_deleting_characters_keeps_wide_characters_whole() {
        for (output, shown) in [
            ("0123456789\u{6587}\x1b[1G\x1b[@", " 0123456789"),
            ("ab\u{4e2d}cd\x1b[4G\x1b[@", "ab   cd"),
            ("ab\u{4e2d}cd\x1b[3G\x1b[P", "abcd"),
            ("ab\u{4e2d}cd\x1b[4G\x1b[P", "abcd"),
            ("0123456789ABcd\x1b[1;3H\x1b[2P", "01456789AB  cd"),
            ("0123456789ABcd\x1b[1;3H\x1b[2@", "01  23456789cd"),
            // Insert mode pushing one off the row to print another.
            (
                "012345678\u{4e2d}x\x1b[4h\x1b[10G\u{6587}",
                "012345678\u{6587}",
            ),
        ] {
            assert_fixed_point(size(12, 5), output.as_bytes());
            let mut screen = Screen::new(size(12, 5));
            screen.process(output.as_bytes());
            assert_eq!(screen.text(), shown, "{output:?}");
        }
        let found = b"\x17\x00\x00\xae\xae\xae\xae\xfe\xff\xff\xfc\xae\x14\x01\x00\x00\x00\x00\
            \x00\x00\xe4\xe6\x96\x87\x1b[\r\x00\x00\x00\x00@22;b\x87";
        assert_fixed_point(size(12, 5), found);
    }

    /// A cell whose wide character was erased keeps an empty list of
    /// combining marks in alacritty; it is still a blank (cargo fuzz,
    /// `screen`: the redraw printed it as a space where a fresh model
    /// skipped it).
    #[test]
    fn a_cell_that_lost_its_combining_marks_is_a_blank() {
        let output = "a\u{d514}\u{313}\x1b[3G \x1b[7Gz";
        assert_fixed_point(size(12, 5), output.as_bytes());
        let mut screen = Screen::new(size(12, 5));
        screen.process(output.as_bytes());
        assert_round_trip(&screen, size(12, 5));
    }

    /// DECRC can leave the cursor above the scroll region in origin mode
    /// (tmux and the model restore it where it was); no CUP can put it
    /// there, so the redraw puts it on the region's top row, where xterm's
    /// DECRC would (cargo fuzz, `screen`: the redraw wrote `CSI -1;8 H`).
    #[test]
    fn a_cursor_outside_the_region_in_origin_mode_is_drawn_inside_it() {
        let output = b"\x1b[?6hab\x1b7\x1b[3;9r\x1b8";
        assert_fixed_point(size(80, 24), output);
        let mut screen = Screen::new(size(80, 24));
        screen.process(output);
        assert_eq!(
            screen.term.grid().cursor.point,
            Point::new(Line(0), Column(2))
        );
        let mut fresh = Screen::new(size(80, 24));
        fresh.process(&screen.restore("").0);
        assert_eq!(
            fresh.term.grid().cursor.point,
            Point::new(Line(2), Column(2))
        );
    }
}
