//! `send --keys` words → keys, in tmux's `send-keys` spelling: `Enter`,
//! `Escape`, `Tab`, `BSpace`, `Space`, `Up`, `Down`, `Left`, `Right`,
//! `Home`, `End`, `PageUp`/`PgUp`/`PPage`, `PageDown`/`PgDn`/`NPage`,
//! `F1`..`F12`, one character, each with any of the prefixes `C-` (or `^`)
//! and `M-`. Names are matched without regard to case, as tmux does; a word
//! that names no key is typed as it is (tmux does the same).

use crate::protocol::{Key, KeyName, Typed};

/// What `word` types.
pub(super) fn parse(word: &str) -> Typed {
    let (mut rest, mut ctrl, mut meta) = (word, false, false);
    loop {
        if rest.len() > 2 && (rest.starts_with("C-") || rest.starts_with("c-")) {
            (ctrl, rest) = (true, &rest[2..]);
        } else if rest.len() > 2 && (rest.starts_with("M-") || rest.starts_with("m-")) {
            (meta, rest) = (true, &rest[2..]);
        } else if rest.len() > 1 && rest.starts_with('^') {
            (ctrl, rest) = (true, &rest[1..]);
        } else {
            break;
        }
    }
    match name(rest) {
        Some(name) => Typed::Key(Key { name, ctrl, meta }),
        None => Typed::Text(word.to_owned()),
    }
}

fn name(word: &str) -> Option<KeyName> {
    let mut chars = word.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Some(KeyName::Char(c));
    }
    let lower = word.to_ascii_lowercase();
    Some(match lower.as_str() {
        "enter" => KeyName::Enter,
        "escape" => KeyName::Escape,
        "tab" => KeyName::Tab,
        "bspace" => KeyName::BSpace,
        "space" => KeyName::Char(' '),
        "up" => KeyName::Up,
        "down" => KeyName::Down,
        "left" => KeyName::Left,
        "right" => KeyName::Right,
        "home" => KeyName::Home,
        "end" => KeyName::End,
        "pageup" | "pgup" | "ppage" => KeyName::PageUp,
        "pagedown" | "pgdn" | "npage" => KeyName::PageDown,
        f => match f.strip_prefix('f')?.parse::<u8>() {
            Ok(n @ 1..=12) => KeyName::F(n),
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: KeyName, ctrl: bool, meta: bool) -> Typed {
        Typed::Key(Key { name, ctrl, meta })
    }

    #[test]
    fn tmux_key_names_with_their_prefixes_and_anything_else_as_text() {
        let cases = [
            ("Enter", key(KeyName::Enter, false, false)),
            ("enter", key(KeyName::Enter, false, false)),
            ("BSpace", key(KeyName::BSpace, false, false)),
            ("PgUp", key(KeyName::PageUp, false, false)),
            ("F5", key(KeyName::F(5), false, false)),
            ("C-c", key(KeyName::Char('c'), true, false)),
            ("^c", key(KeyName::Char('c'), true, false)),
            ("M-x", key(KeyName::Char('x'), false, true)),
            ("C-M-Up", key(KeyName::Up, true, true)),
            ("y", key(KeyName::Char('y'), false, false)),
            ("C-", Typed::Text("C-".into())),
            ("F13", Typed::Text("F13".into())),
            ("hello", Typed::Text("hello".into())),
            ("C-hello", Typed::Text("C-hello".into())),
        ];
        for (word, want) in cases {
            assert_eq!(parse(word), want, "{word}");
        }
    }
}
