//! "While you were away": what a session did while no client was attached,
//! told in one line to the terminal that attaches next (before the redraw,
//! so that it lands in the terminal's scrollback above the screen).
//!
//! Counted from the moment the last client detached (or the session started
//! without one) until the next attach: bytes and lines of output, bells,
//! and whether the program exited. Nothing is said when no output came.

use std::time::{Duration, SystemTime};

/// What happened since the last client left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Away {
    since: SystemTime,
    bytes: u64,
    lines: u64,
    bells: u64,
}

impl Away {
    /// Nobody is attached from `since` on.
    pub fn since(since: SystemTime) -> Away {
        Away {
            since,
            bytes: 0,
            lines: 0,
            bells: 0,
        }
    }

    /// Output came: `chunk`, which rang `bells` bells.
    pub fn output(&mut self, chunk: &[u8], bells: u64) {
        self.bytes += chunk.len() as u64;
        self.lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        self.bells += bells;
    }

    /// The line for a terminal attaching at `now`, `exit` saying how the
    /// program ended if it did (e.g. "exited with code 0"); `None` when no
    /// output came.
    pub fn summary(&self, now: SystemTime, exit: Option<&str>) -> Option<String> {
        if self.bytes == 0 {
            return None;
        }
        let away = now.duration_since(self.since).unwrap_or_default();
        let away = humantime::format_duration(Duration::from_secs(away.as_secs().max(1)));
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut line = format!(
            "keepsh: while you were away ({away}): {} of output, {}, {}",
            bytesize::ByteSize(self.bytes),
            plural(self.lines, "line", "lines"),
            plural(self.bells, "bell", "bells"),
        );
        if let Some(exit) = exit {
            line.push_str("; the program ");
            line.push_str(exit);
        }
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_long_how_much_how_many_bells_and_the_exit() {
        let start = SystemTime::UNIX_EPOCH;
        let mut away = Away::since(start);
        let later = start + Duration::from_secs(2 * 3600 + 13 * 60 + 5);
        assert_eq!(away.summary(later, None), None, "no output, no line");
        away.output(b"one\ntwo\n\x07", 1);
        away.output(&[b'x'; 2048], 0);
        assert_eq!(
            away.summary(later, None).as_deref(),
            Some("keepsh: while you were away (2h 13m 5s): 2.0 KiB of output, 2 lines, 1 bell")
        );
        assert_eq!(
            away.summary(start, Some("exited with code 3")).as_deref(),
            Some(
                "keepsh: while you were away (1s): 2.0 KiB of output, 2 lines, 1 bell; \
                 the program exited with code 3"
            )
        );
    }
}
