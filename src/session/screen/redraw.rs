//! The redraw: terminal bytes written from the model's state, which bring
//! any VT/xterm-family terminal to the same screen and the same modes.
//!
//! Nothing written here makes the viewer's terminal answer (no DA, DSR,
//! DECRQSS, `CSI 21 t`, OSC 10/11 `?` or OSC 52): the redraw is state, never
//! a replay of the program's requests (DESIGN §6).

use std::fmt::Write as _;

use alacritty_terminal::grid::{Dimensions, Grid};
use alacritty_terminal::index::{Column, Line, Point};
use alacritty_terminal::term::cell::{Cell, Flags};
use alacritty_terminal::term::{Term, TermMode};
use alacritty_terminal::vte::ansi::{
    CharsetIndex, Color, CursorShape, CursorStyle, KeyboardModes, ModifyOtherKeys, NamedColor,
    StandardCharset,
};

/// What a cell looks like apart from its character: the SGR and OSC 8
/// state a terminal must be in to print it.
#[derive(Clone, PartialEq)]
pub(super) struct Pen {
    fg: Color,
    bg: Color,
    flags: Flags,
    underline: Option<Color>,
    /// `(id, uri)` of the OSC 8 hyperlink; an id alacritty made up is `None`.
    link: Option<(Option<String>, String)>,
}

/// Cell flags that are attributes (SGR) rather than layout.
const ATTRIBUTES: Flags = Flags::BOLD
    .union(Flags::DIM)
    .union(Flags::ITALIC)
    .union(Flags::ALL_UNDERLINES)
    .union(Flags::BLINK)
    .union(Flags::INVERSE)
    .union(Flags::HIDDEN)
    .union(Flags::STRIKEOUT)
    .union(Flags::OVERLINE);

impl Pen {
    /// The terminal's state after `CSI m` and `OSC 8 ; ; ST`.
    pub(super) fn plain() -> Pen {
        Pen {
            fg: Color::Named(NamedColor::Foreground),
            bg: Color::Named(NamedColor::Background),
            flags: Flags::empty(),
            underline: None,
            link: None,
        }
    }

    pub(super) fn of(cell: &Cell) -> Pen {
        let link = cell.hyperlink().map(|link| {
            let id = (!link.id().ends_with("_alacritty")).then(|| link.id().to_owned());
            (id, link.uri().to_owned())
        });
        Pen {
            fg: cell.fg,
            bg: cell.bg,
            flags: cell.flags & ATTRIBUTES,
            underline: cell.underline_color(),
            link,
        }
    }

    /// Changes the terminal's pen to `to` (see [`Pen::switch`]).
    pub(super) fn set(&mut self, to: Pen, out: &mut String) {
        self.switch(&to, out);
        *self = to;
    }

    /// Writes what changes the terminal from `self` to `to`: one SGR that
    /// starts with a reset (so it does not depend on what each attribute's
    /// cancel code is), and an OSC 8 when the hyperlink changes.
    pub(super) fn switch(&self, to: &Pen, out: &mut String) {
        if (&self.fg, &self.bg, self.flags, &self.underline)
            != (&to.fg, &to.bg, to.flags, &to.underline)
        {
            out.push_str("\x1b[0");
            for (flag, code) in [
                (Flags::BOLD, "1"),
                (Flags::DIM, "2"),
                (Flags::ITALIC, "3"),
                (Flags::UNDERLINE, "4"),
                (Flags::DOUBLE_UNDERLINE, "4:2"),
                (Flags::UNDERCURL, "4:3"),
                (Flags::DOTTED_UNDERLINE, "4:4"),
                (Flags::DASHED_UNDERLINE, "4:5"),
                (Flags::BLINK, "5"),
                (Flags::INVERSE, "7"),
                (Flags::HIDDEN, "8"),
                (Flags::STRIKEOUT, "9"),
                (Flags::OVERLINE, "53"),
            ] {
                if to.flags.contains(flag) {
                    out.push(';');
                    out.push_str(code);
                }
            }
            color(out, to.fg, 30, 90, "38");
            color(out, to.bg, 40, 100, "48");
            if let Some(underline) = to.underline {
                color(out, underline, 0, 0, "58");
            }
            out.push('m');
        }
        if self.link != to.link {
            match &to.link {
                Some((Some(id), uri)) => {
                    let _ = write!(out, "\x1b]8;id={id};{uri}\x1b\\");
                }
                Some((None, uri)) => {
                    let _ = write!(out, "\x1b]8;;{uri}\x1b\\");
                }
                None => out.push_str("\x1b]8;;\x1b\\"),
            }
        }
    }
}

/// `;` and the SGR parameters of `color`: `base + n` for the eight basic
/// colours, `bright + n` for the bright ones, `extended;5;n` for the 256
/// palette and `extended;2;r;g;b` for direct colour. The default colour
/// adds nothing (the SGR starts with a reset).
fn color(out: &mut String, color: Color, base: u8, bright: u8, extended: &str) {
    match color {
        Color::Named(named) if (named as usize) < 8 && base > 0 => {
            let _ = write!(out, ";{}", base + named as u8);
        }
        Color::Named(named) if (named as usize) < 16 && base > 0 => {
            let _ = write!(out, ";{}", bright + named as u8 - 8);
        }
        Color::Named(named) if (named as usize) < 16 => {
            let _ = write!(out, ";{extended};5;{}", named as u8);
        }
        Color::Named(_) => {}
        Color::Indexed(index) => {
            let _ = write!(out, ";{extended};5;{index}");
        }
        Color::Spec(rgb) => {
            let _ = write!(out, ";{extended};2;{};{};{}", rgb.r, rgb.g, rgb.b);
        }
    }
}

/// The character a cell shows: alacritty keeps a tab's `\t` in the cell
/// where the tab started (for copying), which shows as a space.
pub(super) fn shown(cell: &Cell) -> char {
    if cell.c == '\t' { ' ' } else { cell.c }
}

/// Whether `cell` holds combining marks (alacritty may keep an empty list
/// where a cell had some: cargo fuzz, `screen`).
fn has_marks(cell: &Cell) -> bool {
    cell.zerowidth().is_some_and(|marks| !marks.is_empty())
}

/// Whether `cell` looks like a cell that was never written.
fn is_blank(cell: &Cell) -> bool {
    shown(cell) == ' ' && !has_marks(cell) && Pen::of(cell) == Pen::plain()
}

/// Whether `cell` looks like a cell erased (EL, ED, ECH) with `bg` as the
/// background: a space with no attribute but that colour.
fn is_erased(cell: &Cell, bg: Color) -> bool {
    shown(cell) == ' ' && !has_marks(cell) && Pen::of(cell) == Pen { bg, ..Pen::plain() }
}

/// Fewest blank cells skipped over with CUF rather than printed as spaces.
const MIN_SKIP: usize = 4;

/// Prints one cell: its pen, its character and any combining marks.
fn print(cell: &Cell, pen: &mut Pen, out: &mut String) {
    pen.set(Pen::of(cell), out);
    out.push(shown(cell));
    out.extend(cell.zerowidth().unwrap_or_default());
}

/// How much of row `line` of `grid` must be printed: the number of cells,
/// whether the row wraps (then all of them), and the background of the
/// erased cells that end it, if they have one. The bottom row of the
/// screen does not wrap, whatever its flag says: the row it wrapped onto
/// is gone (pushed off the screen by a scroll down, SD or RI), and no
/// redraw can print into a row below the screen (cargo fuzz, `screen`).
fn extent(grid: &Grid<Cell>, line: Line) -> (usize, bool, Option<Color>) {
    let row = &grid[line];
    let columns = row.len();
    let last = &row[Column(columns - 1)];
    let bottom = line.0 + 1 == grid.screen_lines() as i32;
    if last.flags.contains(Flags::WRAPLINE) && !bottom {
        return (columns, true, None);
    }
    let erased = (is_erased(last, last.bg) && last.bg != Pen::plain().bg).then_some(last.bg);
    let end = (0..columns)
        .rposition(|column| {
            let cell = &row[Column(column)];
            !is_blank(cell) && erased.is_none_or(|bg| !is_erased(cell, bg))
        })
        .map_or(0, |last| last + 1);
    (end, false, erased)
}

/// Writes the cells of one grid row (`line`, 0 at the top of the screen,
/// negative in history) from the cursor on, leaving `pen` as the terminal's
/// pen afterwards. Blank cells are skipped over (CUF) when `skip` (the row
/// is drawn on a cleared screen), printed as spaces otherwise; trailing
/// ones are left out, and trailing erased ones with a background are
/// erased again (EL), unless the row wraps onto the next one, which needs
/// the whole row printed. Returns whether the row wraps.
pub(super) fn row(
    grid: &Grid<Cell>,
    line: Line,
    skip: bool,
    pen: &mut Pen,
    out: &mut String,
) -> bool {
    let row = &grid[line];
    let (end, wraps, erased) = extent(grid, line);
    let mut blanks = 0;
    for column in 0..end {
        let cell = &row[Column(column)];
        if cell.flags.contains(Flags::WIDE_CHAR_SPACER) {
            continue;
        }
        if skip && is_blank(cell) && column + 1 < end {
            blanks += 1;
            continue;
        }
        if blanks >= MIN_SKIP {
            let _ = write!(out, "\x1b[{blanks}C");
        } else if blanks > 0 {
            pen.set(Pen::plain(), out);
            out.extend(std::iter::repeat_n(' ', blanks));
        }
        blanks = 0;
        // A wide character that did not fit left the last column empty
        // (alacritty's leading spacer): drawn as the blank it is, which
        // wraps the row the same way whatever the row below now holds
        // (cargo fuzz, `screen`: drawing nothing there put the next row's
        // first character in it once that was no longer the wide one).
        print(cell, pen, out);
    }
    if let Some(bg) = erased {
        pen.set(Pen { bg, ..Pen::plain() }, out);
        out.push_str("\x1b[K");
    }
    wraps
}

/// Draws a whole grid on a cleared screen, top to bottom, with ASCII in
/// GL (the cells hold what was shown, line drawing included; the
/// charsets are set after).
fn grid(grid: &Grid<Cell>, pen: &mut Pen, out: &mut String) {
    pen.set(Pen::plain(), out);
    out.push_str("\x1b(B\x0f\x1b[H\x1b[2J");
    let mut wrapped = false;
    for line in 0..grid.screen_lines() {
        let line = Line(line as i32);
        if !wrapped {
            let _ = write!(out, "\x1b[{};1H", line.0 + 1);
        }
        // A row the one above wraps onto starts at a pending wrap, which
        // only printing resolves (CUF would stay on the last column): its
        // blanks are printed (fuzz seed 118), and an empty one gets one
        // blank, or the row above would not be marked as wrapping (cargo
        // fuzz, `screen`).
        let (end, _, erased) = extent(grid, line);
        if wrapped && end == 0 {
            let bg = erased.unwrap_or(Pen::plain().bg);
            pen.set(Pen { bg, ..Pen::plain() }, out);
            out.push(' ');
        }
        wrapped = row(grid, line, !wrapped, pen, out);
    }
}

/// G0..G3 designations of `cursor_charsets` (SCS, `ESC ( B`, `ESC ( 0`…).
fn charsets(grid: &Grid<Cell>, saved: bool, out: &mut String) {
    let cursor = if saved {
        &grid.saved_cursor
    } else {
        &grid.cursor
    };
    for (index, intermediate) in [
        (CharsetIndex::G0, '('),
        (CharsetIndex::G1, ')'),
        (CharsetIndex::G2, '*'),
        (CharsetIndex::G3, '+'),
    ] {
        let final_byte = match cursor.charsets[index] {
            StandardCharset::Ascii => 'B',
            StandardCharset::SpecialCharacterAndLineDrawing => '0',
        };
        let _ = write!(out, "\x1b{intermediate}{final_byte}");
    }
}

/// Places the cursor at `point` of `grid`, written as a row `top` rows
/// lower (the top of the scroll region in origin mode, else 0), with the
/// pending-wrap state of a cursor that has just printed the last column if
/// `wrap`.
fn place(grid: &Grid<Cell>, point: Point, top: i32, wrap: bool, pen: &mut Pen, out: &mut String) {
    let line = Line(point.line.0.clamp(0, grid.screen_lines() as i32 - 1));
    let column = Column(point.column.0.min(grid.columns() - 1));
    let row = line.0 - top + 1;
    if wrap {
        let mut start = column;
        if start.0 > 0 && grid[line][start].flags.contains(Flags::WIDE_CHAR_SPACER) {
            start.0 -= 1;
        }
        let _ = write!(out, "\x1b[{row};{}H", start.0 + 1);
        print(&grid[line][start], pen, out);
    } else {
        let _ = write!(out, "\x1b[{row};{}H", column.0 + 1);
    }
}

/// The state every redraw starts from, whatever the terminal showed before:
/// primary screen, whole-screen scroll region, origin mode off, autowrap
/// on, insert mode off, cursor hidden while drawing, ASCII in G0, plain
/// pen, no hyperlink, default palette and colours (OSC 104/110/111/112),
/// no kitty keyboard flags, modifyOtherKeys off. The cursor ends on the
/// bottom row, from where printed lines scroll into the scrollback.
pub(super) const RESET: &str = "\x1b[?1049l\x1b[r\x1b[?6l\x1b[?7h\x1b[4l\x1b[?25l\
    \x1b(B\x0f\x1b[m\x1b]8;;\x1b\\\x1b]104\x1b\\\x1b]110\x1b\\\x1b]111\x1b\\\x1b]112\x1b\\\
    \x1b[<99u\x1b[=0;1u\x1b[>4;0m\x1b[999;1H";

/// Writes the screen and its state after [`RESET`] (and any history lines).
pub(super) fn state<T>(term: &Term<T>, out: &mut String) {
    let mode = *term.mode();
    let mut pen = Pen::plain();
    let (active, inactive) = term.keyboard_mode_stacks();
    let alternate = mode.contains(TermMode::ALT_SCREEN);
    if alternate {
        // The primary screen first, its saved cursor (which DECRC after
        // leaving the alternate screen restores), then the cursor that
        // leaving it restores (1049 saves it on the way in). (A saved
        // cursor apart from the cursor, DECSC before 47 or 1047, is then
        // overwritten in xterm, whose 1049 saves into DECSC's slot; tmux
        // keeps the two apart, and 1047 would lose what 1049 restores.)
        let primary = term.inactive_grid();
        grid(primary, &mut pen, out);
        keyboard_stack(inactive, out);
        saved_cursor(term, primary, &mut pen, out);
        charsets(primary, false, out);
        // 1049 saves origin mode with the cursor, over DECSC's (cargo
        // fuzz, `screen`): set first, as setting it homes the cursor;
        // with no scroll region yet it moves nothing else.
        let origin = term.saved_origin().0;
        if origin {
            out.push_str("\x1b[?6h");
        }
        place(primary, primary.cursor.point, 0, false, &mut pen, out);
        pen.set(Pen::of(&primary.cursor.template), out);
        out.push_str("\x1b[?1049h");
        if origin {
            out.push_str("\x1b[?6l");
        }
    }
    let screen = term.grid();
    grid(screen, &mut pen, out);
    keyboard_stack(active, out);
    tab_stops(term, out);
    // On the alternate screen, a cursor saved there (a terminal with one
    // saved cursor for both screens keeps the primary's otherwise).
    if !alternate || term.saved_on_alt() {
        saved_cursor(term, screen, &mut pen, out);
    }
    terminal_state(term, out);
    cursor(term, &mut pen, out);
    modes(mode, out);
}

/// The scroll region, origin mode and the cursor: its place and pending
/// wrap, pen and charsets.
fn cursor<T>(term: &Term<T>, pen: &mut Pen, out: &mut String) {
    let (screen, mode) = (term.grid(), *term.mode());
    let cursor = &screen.cursor;
    let mut top = 0;
    let region = term.scroll_region();
    if (region.start.0, region.end.0) != (0, screen.screen_lines() as i32) {
        let _ = write!(out, "\x1b[{};{}r", region.start.0 + 1, region.end.0);
    }
    let mut point = cursor.point;
    if mode.contains(TermMode::ORIGIN) {
        out.push_str("\x1b[?6h");
        top = region.start.0;
        // CUP cannot leave the region in origin mode: a cursor DECRC put
        // outside it (as tmux and the model do; xterm puts it inside) is
        // drawn on the region's nearest row (cargo fuzz, `screen`).
        point.line = point.line.clamp(region.start, region.end - 1);
    }
    // The model may keep a pending wrap with autowrap off; no terminal does.
    let wrap = cursor.input_needs_wrap && mode.contains(TermMode::LINE_WRAP);
    place(screen, point, top, wrap, pen, out);
    pen.switch(&Pen::of(&cursor.template), out);
    charsets(screen, false, out);
    out.push_str(shift(term.active_charset()));
}

/// The saved cursor of `screen` (DECSC): its place, pen, character sets,
/// the one in GL and origin mode (with no scroll region yet, origin mode
/// does not move it); then ASCII in GL again and origin mode off, for what
/// is drawn after.
fn saved_cursor<T>(term: &Term<T>, screen: &Grid<Cell>, pen: &mut Pen, out: &mut String) {
    let saved = &screen.saved_cursor;
    let (saved_origin, saved_charset) = term.saved_origin();
    if saved_origin {
        out.push_str("\x1b[?6h");
    }
    place(screen, saved.point, 0, false, pen, out);
    pen.set(Pen::of(&saved.template), out);
    charsets(screen, true, out);
    out.push_str(shift(saved_charset));
    out.push_str("\x1b7\x1b[?6l\x1b(B\x0f");
}

/// The locking shift that invokes `charset` into GL (SI, SO, LS2, LS3).
fn shift(charset: CharsetIndex) -> &'static str {
    match charset {
        CharsetIndex::G0 => "\x0f",
        CharsetIndex::G1 => "\x0e",
        CharsetIndex::G2 => "\x1bn",
        CharsetIndex::G3 => "\x1bo",
    }
}

/// Empties the kitty keyboard protocol stack of the screen in use (`CSI <
/// 99 u`), then pushes `stack` (`CSI > flags u`), oldest first.
fn keyboard_stack(stack: &[KeyboardModes], out: &mut String) {
    out.push_str("\x1b[<99u");
    for modes in stack {
        let _ = write!(out, "\x1b[>{}u", modes.bits());
    }
}

/// Clears every tab stop (TBC 3) and sets the model's (HTS).
fn tab_stops<T>(term: &Term<T>, out: &mut String) {
    out.push_str("\x1b[3g");
    for column in term.tab_stops() {
        let _ = write!(out, "\x1b[1;{}H\x1bH", column.0 + 1);
    }
}

/// Palette and colours (OSC 4, 10, 11, 12), the title and its stack (OSC 2,
/// XTWINOPS 22), the cursor style (DECSCUSR) and modifyOtherKeys.
fn terminal_state<T>(term: &Term<T>, out: &mut String) {
    let colors = term.colors();
    let hex = |rgb: alacritty_terminal::vte::ansi::Rgb| {
        format!("rgb:{:02x}/{:02x}/{:02x}", rgb.r, rgb.g, rgb.b)
    };
    for index in 0..256 {
        if let Some(rgb) = colors[index] {
            let _ = write!(out, "\x1b]4;{index};{}\x1b\\", hex(rgb));
        }
    }
    for (named, osc) in [
        (NamedColor::Foreground, 10),
        (NamedColor::Background, 11),
        (NamedColor::Cursor, 12),
    ] {
        if let Some(rgb) = colors[named] {
            let _ = write!(out, "\x1b]{osc};{}\x1b\\", hex(rgb));
        }
    }
    // A title never set is the terminal's own: pushed as it is, and not
    // replaced unless a pushed one was set.
    let (title, stack) = term.title();
    let mut replaced = false;
    for pushed in stack {
        if let Some(pushed) = pushed {
            let _ = write!(out, "\x1b]2;{pushed}\x1b\\");
            replaced = true;
        }
        out.push_str("\x1b[22;2t");
    }
    match title {
        Some(title) => {
            let _ = write!(out, "\x1b]2;{title}\x1b\\");
        }
        None if replaced => out.push_str("\x1b]2;\x1b\\"),
        None => {}
    }
    if let Some(uri) = term.working_directory() {
        let _ = write!(out, "\x1b]7;{uri}\x1b\\");
    }
    let style = term.cursor_style();
    if style == CursorStyle::default() {
        out.push_str("\x1b[0 q");
    } else {
        let steady = match style.shape {
            CursorShape::Underline => 4,
            CursorShape::Beam => 6,
            _ => 2,
        };
        let _ = write!(out, "\x1b[{} q", steady - u8::from(style.blinking));
    }
    let level = match term.modify_other_keys() {
        ModifyOtherKeys::Reset => 0,
        ModifyOtherKeys::EnableExceptWellDefined => 1,
        ModifyOtherKeys::EnableAll => 2,
    };
    if level > 0 {
        let _ = write!(out, "\x1b[>4;{level}m");
    }
}

/// The modes, set or reset each (DECSET/DECRST, SM/RM, DECKPAM/DECKPNM, the
/// kitty keyboard flags), the cursor's visibility last.
fn modes(mode: TermMode, out: &mut String) {
    let mut private = |on: bool, code: u16| {
        let _ = write!(out, "\x1b[?{code}{}", if on { 'h' } else { 'l' });
    };
    private(mode.contains(TermMode::APP_CURSOR), 1);
    private(mode.contains(TermMode::LINE_WRAP), 7);
    // All off first: resetting any mouse mode ends every one of them in
    // tmux, and setting one ends the others.
    let mice = [
        (TermMode::MOUSE_REPORT_CLICK, 1000),
        (TermMode::MOUSE_DRAG, 1002),
        (TermMode::MOUSE_MOTION, 1003),
    ];
    for (_, code) in mice {
        private(false, code);
    }
    for (flag, code) in mice {
        if mode.contains(flag) {
            private(true, code);
        }
    }
    private(mode.contains(TermMode::FOCUS_IN_OUT), 1004);
    private(mode.contains(TermMode::UTF8_MOUSE), 1005);
    private(mode.contains(TermMode::SGR_MOUSE), 1006);
    // On by default in the model, off by default in xterm: only a program's
    // reset is carried.
    if !mode.contains(TermMode::ALTERNATE_SCROLL) {
        private(false, 1007);
    }
    private(mode.contains(TermMode::BRACKETED_PASTE), 2004);
    out.push_str(if mode.contains(TermMode::INSERT) {
        "\x1b[4h"
    } else {
        "\x1b[4l"
    });
    out.push_str(if mode.contains(TermMode::LINE_FEED_NEW_LINE) {
        "\x1b[20h"
    } else {
        "\x1b[20l"
    });
    out.push_str(if mode.contains(TermMode::APP_KEYPAD) {
        "\x1b="
    } else {
        "\x1b>"
    });
    let kitty = (mode & TermMode::KITTY_KEYBOARD_PROTOCOL).bits() >> 18;
    let _ = write!(out, "\x1b[={kitty};1u");
    let visible = mode.contains(TermMode::SHOW_CURSOR);
    let _ = write!(out, "\x1b[?25{}", if visible { 'h' } else { 'l' });
}
