//! Keys that `send --keys` names, as the bytes a terminal would send for
//! them (xterm's encoding, which tmux's `send-keys` follows), for the
//! session's modes at that moment: with application cursor keys (DECCKM)
//! set, `Up` is `ESC O A`, else `ESC [ A`.

use crate::protocol::{Key, KeyName, Typed};

/// The bytes for `typed`, in order, with `app_cursor` saying whether the
/// program set application cursor keys (DECCKM).
pub(super) fn encode(typed: &[Typed], app_cursor: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for item in typed {
        match item {
            Typed::Text(text) => out.extend_from_slice(text.as_bytes()),
            Typed::Key(key) => key_bytes(*key, app_cursor, &mut out),
        }
    }
    out
}

/// xterm's modifier parameter: 1 + 2 (Meta) + 4 (Control); 1 = none.
fn modifier(key: Key) -> u8 {
    1 + if key.meta { 2 } else { 0 } + if key.ctrl { 4 } else { 0 }
}

fn key_bytes(key: Key, app_cursor: bool, out: &mut Vec<u8>) {
    if let Some(sequence) = escape_sequence(key, app_cursor) {
        out.extend_from_slice(sequence.as_bytes());
        return;
    }
    // The rest: one byte (or character), ESC first for Meta.
    if key.meta {
        out.push(0x1b);
    }
    match key.name {
        KeyName::Enter => out.push(b'\r'),
        KeyName::Escape => out.push(0x1b),
        KeyName::Tab => out.push(b'\t'),
        KeyName::BSpace => out.push(0x7f),
        KeyName::Char(c) if key.ctrl => match control(c) {
            Some(byte) => out.push(byte),
            None => push_char(c, out),
        },
        KeyName::Char(c) => push_char(c, out),
        // F0 and F13 and beyond: nothing.
        _ => {}
    }
}

/// The escape sequence of a cursor key, Home, End, PageUp, PageDown or
/// F1-F12: CSI (SS3 for the cursor keys in application mode, and F1-F4)
/// and a final byte, or CSI number `~`; with a modifier, its parameter
/// after `1;` or the number.
fn escape_sequence(key: Key, app_cursor: bool) -> Option<String> {
    let modifiers = (key.ctrl || key.meta).then(|| modifier(key));
    let last = match key.name {
        KeyName::Up => 'A',
        KeyName::Down => 'B',
        KeyName::Right => 'C',
        KeyName::Left => 'D',
        KeyName::Home => 'H',
        KeyName::End => 'F',
        KeyName::F(n @ 1..=4) => ['P', 'Q', 'R', 'S'][usize::from(n - 1)],
        KeyName::PageUp | KeyName::PageDown | KeyName::F(5..=12) => {
            let number = match key.name {
                KeyName::PageUp => 5,
                KeyName::PageDown => 6,
                KeyName::F(n) => [15, 17, 18, 19, 20, 21, 23, 24][usize::from(n - 5)],
                _ => return None,
            };
            return Some(match modifiers {
                Some(m) => format!("\x1b[{number};{m}~"),
                None => format!("\x1b[{number}~"),
            });
        }
        _ => return None,
    };
    let ss3 = matches!(key.name, KeyName::F(_)) || app_cursor;
    Some(match modifiers {
        Some(m) => format!("\x1b[1;{m}{last}"),
        None if ss3 => format!("\x1bO{last}"),
        None => format!("\x1b[{last}"),
    })
}

/// The control character Control + `c` types (`C-a` is 0x01, `C-[` ESC,
/// `C-?` DEL), if there is one.
fn control(c: char) -> Option<u8> {
    match c.to_ascii_lowercase() {
        c @ 'a'..='z' => Some(c as u8 - b'a' + 1),
        '@' | ' ' | '2' => Some(0),
        '[' | '3' => Some(0x1b),
        '\\' | '4' => Some(0x1c),
        ']' | '5' => Some(0x1d),
        '^' | '6' => Some(0x1e),
        '_' | '7' | '/' => Some(0x1f),
        '?' | '8' => Some(0x7f),
        _ => None,
    }
}

fn push_char(c: char, out: &mut Vec<u8>) {
    let mut buf = [0; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: KeyName) -> Typed {
        Typed::Key(Key {
            name,
            ctrl: false,
            meta: false,
        })
    }

    #[test]
    fn keys_are_encoded_as_xterm_sends_them_for_the_modes() {
        let c = |name, ctrl, meta| Typed::Key(Key { name, ctrl, meta });
        let cases: &[(Typed, bool, &[u8])] = &[
            (key(KeyName::Up), false, b"\x1b[A"),
            (key(KeyName::Up), true, b"\x1bOA"),
            (key(KeyName::End), true, b"\x1bOF"),
            (c(KeyName::Left, true, false), true, b"\x1b[1;5D"),
            (key(KeyName::Enter), false, b"\r"),
            (key(KeyName::BSpace), false, b"\x7f"),
            (key(KeyName::PageDown), false, b"\x1b[6~"),
            (key(KeyName::F(1)), false, b"\x1bOP"),
            (key(KeyName::F(5)), false, b"\x1b[15~"),
            (key(KeyName::F(12)), false, b"\x1b[24~"),
            (c(KeyName::F(5), true, false), false, b"\x1b[15;5~"),
            (c(KeyName::Char('c'), true, false), false, b"\x03"),
            (c(KeyName::Char('x'), false, true), false, b"\x1bx"),
            (c(KeyName::Char('a'), true, true), false, b"\x1b\x01"),
            (key(KeyName::Char('é')), false, "é".as_bytes()),
            (Typed::Text("y es".into()), false, b"y es"),
        ];
        for (typed, app_cursor, want) in cases {
            assert_eq!(
                encode(std::slice::from_ref(typed), *app_cursor),
                *want,
                "{typed:?}, application cursor keys {app_cursor}"
            );
        }
    }
}
