//! A session's output as text: printed characters and line feeds, escape
//! sequences dropped (`wait --for`, `tail -f`). A sequence or a UTF-8
//! character split across chunks is carried over.

/// An incremental stripper of terminal output.
///
/// vte parses the escape sequences; runs of printable ASCII (and CR, LF)
/// met while vte is in its ground state are copied in bulk instead of a
/// callback per character, which is most of a build log's bytes.
pub struct Text {
    parser: vte::Parser,
    /// vte is in its ground state (as far as its callbacks tell): the next
    /// printable ASCII byte is text.
    ground: bool,
}

impl Default for Text {
    fn default() -> Text {
        Text {
            parser: vte::Parser::new(),
            ground: true,
        }
    }
}

/// What vte hands over: printed characters, line feeds, and whether it is
/// back in its ground state.
struct Printed {
    text: String,
    ground: bool,
}

impl vte::Perform for Printed {
    fn print(&mut self, c: char) {
        self.text.push(c);
        // After invalid UTF-8, vte may hold the start of the next
        // character: only vte knows what the following bytes are.
        self.ground = c != char::REPLACEMENT_CHARACTER;
    }
    fn execute(&mut self, byte: u8) {
        if byte == b'\n' {
            self.text.push('\n');
        }
    }
    fn csi_dispatch(&mut self, _: &vte::Params, _: &[u8], _: bool, _: char) {
        self.ground = true;
    }
    fn esc_dispatch(&mut self, _: &[u8], _: bool, _: u8) {
        self.ground = true;
    }
    // Ended by BEL: ground. Ended by ESC `\`: the `\` is an esc_dispatch.
    fn osc_dispatch(&mut self, _: &[&[u8]], bell_terminated: bool) {
        self.ground |= bell_terminated;
    }
    // (A DCS ends by ESC `\` (an esc_dispatch follows) or CAN/SUB: the
    // next print says ground.)
}

/// A byte copied as it is in the ground state (CR and LF are handled
/// without vte too).
fn printable(byte: u8) -> bool {
    (0x20..0x7f).contains(&byte)
}

impl Text {
    /// The text of the next chunk of `output`.
    pub fn feed(&mut self, output: &[u8]) -> String {
        let mut printed = Printed {
            text: String::with_capacity(output.len()),
            ground: self.ground,
        };
        let mut rest = output;
        while !rest.is_empty() {
            if printed.ground {
                let run = rest
                    .iter()
                    .position(|&b| !printable(b))
                    .unwrap_or(rest.len());
                let (text, after) = rest.split_at(run);
                printed
                    .text
                    .push_str(std::str::from_utf8(text).expect("ASCII"));
                rest = after;
                match rest.first() {
                    None => break,
                    Some(b'\n') => printed.text.push('\n'),
                    Some(b'\r') => {}
                    Some(_) => {
                        // Anything else goes to vte a byte at a time, until
                        // one of its callbacks says it is back in the ground
                        // state.
                        printed.ground = false;
                        self.parser.advance(&mut printed, &rest[..1]);
                    }
                }
            } else {
                self.parser.advance(&mut printed, &rest[..1]);
            }
            rest = &rest[1..];
        }
        self.ground = printed.ground;
        printed.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_go_and_split_sequences_and_characters_are_carried_over() {
        let mut text = Text::default();
        assert_eq!(text.feed(b"\x1b[32mok\x1b["), "ok");
        assert_eq!(text.feed(b"0m done\r\n\xc3"), " done\n");
        assert_eq!(text.feed(b"\xa9\x07"), "\u{e9}");
        // A sequence vte ignores without a dispatch, a tab and a bell:
        // nothing printed, and plain text after them is text again.
        assert_eq!(
            text.feed(b"\x1b[1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18m"),
            ""
        );
        assert_eq!(
            text.feed(b"a\tb\x07c\x1b]0;title\x07d\x1bPq#0\x1b\\e"),
            "abcde"
        );
        assert_eq!(text.feed(b"\x1b]8;;http://x\x1b\\link\x1bPq\x18!"), "link!");
        assert_eq!(text.feed(b"\x1b[1\n2mf"), "\nf");
    }

    /// vte alone, a byte at a time (how it takes invalid UTF-8 depends on
    /// how it is cut), a callback per character: what the bulk path must
    /// equal.
    fn by_vte(output: &[u8], parser: &mut vte::Parser) -> String {
        struct Plain(String);
        impl vte::Perform for Plain {
            fn print(&mut self, c: char) {
                self.0.push(c);
            }
            fn execute(&mut self, byte: u8) {
                if byte == b'\n' {
                    self.0.push('\n');
                }
            }
        }
        let mut plain = Plain(String::new());
        for byte in output.chunks(1) {
            parser.advance(&mut plain, byte);
        }
        plain.0
    }

    #[test]
    fn the_bulk_path_prints_what_vte_alone_prints_for_any_bytes_and_splits() {
        const ALPHABET: &[u8] =
            b"\x1b\x1b[[];;0123mP\\q\r\n\x07\x18\x90\x9c\xc3\xa9\xe2\x82\xacab ~\x7f\t";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let expected = by_vte(&bytes, &mut vte::Parser::new());
            let mut text = Text::default();
            let mut got = String::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let cut = ((next() % 16) as usize).min(rest.len()).max(1);
                got.push_str(&text.feed(&rest[..cut]));
                rest = &rest[cut..];
            }
            assert_eq!(got, expected, "{bytes:?}");
        }
    }
}
