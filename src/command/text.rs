//! A session's output as text: printed characters and line feeds, escape
//! sequences dropped (`wait --for`, `tail -f`). A sequence or a UTF-8
//! character split across chunks is carried over.

/// An incremental stripper of terminal output.
#[derive(Default)]
pub struct Text {
    parser: vte::Parser,
}

impl Text {
    /// The text of the next chunk of `output`.
    pub fn feed(&mut self, output: &[u8]) -> String {
        struct Printed(String);
        impl vte::Perform for Printed {
            fn print(&mut self, c: char) {
                self.0.push(c);
            }
            fn execute(&mut self, byte: u8) {
                if byte == b'\n' {
                    self.0.push('\n');
                }
            }
        }
        let mut printed = Printed(String::with_capacity(output.len()));
        self.parser.advance(&mut printed, output);
        printed.0
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
    }
}
