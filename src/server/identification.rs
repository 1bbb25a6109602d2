//! The client's identification string (RFC 4253 §4.2, e.g.
//! `SSH-2.0-libssh2_1.10.0`), noted as it is read, for the log lines of a
//! connection that ends before russh would tell us (a failed key exchange).

use std::sync::{Arc, OnceLock};

/// Longest identification line kept, as RFC 4253 §4.2 allows (255 bytes
/// with CR LF).
const MAX: usize = 255;

/// Collects the first line a client sends (clients send no other lines
/// before it, RFC 4253 §4.2), escaped and cut by `protocol::printable`.
#[derive(Default)]
pub struct Recorder {
    line: Vec<u8>,
    seen: Arc<OnceLock<String>>,
}

impl Recorder {
    /// What the connection's log lines read: set once the line is complete.
    pub fn seen(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.seen)
    }

    /// Whether the line is complete (then nothing more is looked at).
    pub fn done(&self) -> bool {
        self.seen.get().is_some()
    }

    /// Takes bytes the client sent, in order.
    pub fn observe(&mut self, bytes: &[u8]) {
        if self.done() {
            return;
        }
        let end = bytes.iter().position(|b| *b == b'\n');
        let take = end.map_or(bytes.len(), |e| e);
        let room = MAX.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..take.min(room)]);
        if end.is_some() || self.line.len() >= MAX {
            let text = String::from_utf8_lossy(&self.line);
            let _ = self
                .seen
                .set(crate::protocol::printable(text.trim_end_matches('\r')));
            self.line = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_kept_escaped_and_bounded() {
        let mut recorder = Recorder::default();
        recorder.observe(b"SSH-2.0-lib");
        assert!(!recorder.done());
        recorder.observe(b"ssh2_1.10.0\r\n\0\0\0binary");
        assert_eq!(
            recorder.seen().get().map(String::as_str),
            Some("SSH-2.0-libssh2_1.10.0")
        );
        let mut odd = Recorder::default();
        odd.observe(b"SSH-2.0-\x1b[31mred\n");
        assert!(!odd.seen().get().expect("line").contains('\x1b'));
        let mut long = Recorder::default();
        long.observe(&[b'x'; 1000]);
        assert!(long.seen().get().expect("cut").ends_with("..."));
    }
}
