//! What a session shows of its past, from its ring buffer and screen
//! model: the history lines above the screen, `history`'s text, and the
//! redraw an attach starts with. The session task uses these on its own
//! state; [`Replay`] rebuilds `history`'s text from output alone (a lost
//! session's history file, read by the server).

use bytes::Bytes;

use super::ring::RingBuffer;
use super::screen::{self, Screen};
use crate::protocol::PtySize;

/// How far back from the output's end a redraw looks for the start of an
/// unfinished escape sequence (OSC titles and hyperlinks fit; a longer
/// sequence cut by a redraw prints its remainder as text).
const UNFINISHED_SEARCH: u64 = 64 * 1024;

/// A session's past rebuilt from its output: a ring buffer holding all of
/// it and a screen model fed all of it.
pub struct Replay {
    ring: RingBuffer,
    screen: Screen,
    size: PtySize,
    lines: usize,
}

impl Replay {
    /// Replays `output` on a screen of `size`, keeping `lines` history
    /// lines (`scrollback_lines`). `cut`: output came before `output`
    /// (the oldest was dropped), so it starts inside a line: what comes
    /// before its first newline is not replayed.
    pub fn new(output: &[u8], cut: bool, size: PtySize, lines: usize) -> Replay {
        let start = if cut {
            output
                .iter()
                .position(|&b| b == b'\n')
                .map_or(output.len(), |i| i + 1)
        } else {
            0
        };
        let output = &output[start..];
        let mut ring = RingBuffer::new(output.len().max(1));
        ring.push(output);
        let mut screen = Screen::new(size);
        screen.process(output);
        Replay {
            ring,
            screen,
            size,
            lines,
        }
    }

    /// As `history` prints it: the history lines, then the screen, as text.
    pub fn text(&self) -> String {
        text(&self.ring, &self.screen, self.size, self.lines)
    }
}

/// The history lines above the screen (at most `lines`), with their SGR
/// and hyperlinks, rebuilt from the last `lines` + rows lines of `ring`.
pub(super) fn history_lines(ring: &RingBuffer, size: PtySize, lines: usize) -> String {
    let from = ring.tail_lines_start(lines + usize::from(size.rows()));
    let (_, output) = ring.read(from, usize::MAX);
    screen::history(&output, size)
}

/// `history`'s text: the history lines and the screen, escapes stripped,
/// trailing blank lines and spaces dropped, one final newline.
pub(super) fn text(ring: &RingBuffer, screen: &Screen, size: PtySize, lines: usize) -> String {
    let history = screen::plain(&history_lines(ring, size, lines));
    let mut text = String::with_capacity(history.len() + 1);
    if !history.is_empty() {
        text.push_str(&history);
        text.push('\n');
    }
    text.push_str(&screen.text());
    let trimmed = text.trim_end_matches(['\n', ' ']).len();
    text.truncate(trimmed);
    text.push('\n');
    text
}

/// Bytes that bring a terminal to the current screen, with `history`
/// lines in its scrollback, as of the ring's end: output then continues
/// from there; and how many of them first show the screen (see
/// [`Screen::restore`]). An escape sequence the output stopped inside is
/// repeated after the screen, so that the terminal reads the rest of it as
/// the program meant (see [`screen::unfinished_suffix`]).
pub(super) fn redraw(ring: &RingBuffer, screen: &Screen, history: &str) -> (Bytes, usize) {
    let (mut redraw, shown) = screen.restore(history);
    let (_, tail) = ring.read(ring.end().saturating_sub(UNFINISHED_SEARCH), usize::MAX);
    let unfinished = screen::unfinished_suffix(&tail);
    redraw.extend_from_slice(&tail[tail.len() - unfinished..]);
    let shown = if shown == redraw.len() - unfinished {
        redraw.len()
    } else {
        shown
    };
    (Bytes::from(redraw), shown)
}
