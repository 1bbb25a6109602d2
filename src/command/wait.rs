//! `wait REF [--for REGEX] [--timeout DURATION]`: until the program exits
//! (exit status: its code, 128 + the signal's number for a signal), or
//! until output produced after the call matches REGEX (0). `--timeout`
//! gives up with status 124, as coreutils' `timeout` does.
//!
//! The match is on the output's text (escape sequences stripped, line
//! feeds kept), across chunk boundaries, within the last [`WINDOW`] bytes
//! of text. The session holds nothing for a waiter but a watcher's bounded
//! queue (a watcher is not a client; see `AttachRequest::watch`), and a
//! waiter whose channel closes stops.

use std::time::Duration;

use regex::Regex;

use super::text::Text;
use super::{Context, Failure, Reply};
use crate::protocol::{AttachRequest, Event};
use crate::registry::{Found, RegistryError};

/// How much of the latest output text a pattern is matched against.
const WINDOW: usize = 64 * 1024;
/// coreutils `timeout`'s exit status when the time ran out.
const TIMED_OUT: u32 = 124;

/// `pattern` if it compiles.
///
/// # Errors
/// A usage [`Failure`] naming the problem.
pub(super) fn checked_pattern(pattern: String) -> Result<String, Failure> {
    match Regex::new(&pattern) {
        Ok(_) => Ok(pattern),
        Err(error) => {
            let what = error
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Err(Failure::usage(
                format!("invalid --for pattern: {}", super::escape_controls(&what)),
                "write a regular expression as the regex crate reads it, e.g. 'tests? passed'",
            ))
        }
    }
}

/// Carries out `wait`.
pub(super) async fn wait(
    ctx: &Context<'_>,
    reference: &str,
    pattern: Option<String>,
    timeout: Option<Duration>,
) -> Result<Reply, Failure> {
    let found = ctx.registry.resolve(ctx.owner, reference)?;
    let waited = async {
        match &pattern {
            None => until_exit(&found).await,
            Some(pattern) => until_match(&found, pattern).await,
        }
    };
    let limited = async {
        match timeout {
            Some(limit) => tokio::time::timeout(limit, waited)
                .await
                .unwrap_or_else(|_| Err(timed_out(&found, limit))),
            None => waited.await,
        }
    };
    let mut closed = ctx.closed.clone();
    tokio::select! {
        result = limited => result,
        // The client left: nobody to tell.
        _ = closed.changed() => Ok(Reply::default()),
    }
}

fn timed_out(found: &Found, limit: Duration) -> Failure {
    Failure {
        status: TIMED_OUT,
        line: format!(
            "keepsh: timed out after {} waiting on session '{}' (a longer --timeout, or none)",
            humantime::format_duration(limit),
            found.name
        ),
    }
}

/// Until the program exits: its code as the exit status.
async fn until_exit(found: &Found) -> Result<Reply, Failure> {
    match found.handle.exit_status().await {
        Some(status) => Ok(Reply {
            status: status.code,
            ..Reply::default()
        }),
        None => Err(RegistryError::NotFound(found.name.to_string()).into()),
    }
}

/// Until output after now matches `pattern` (compiled already once).
async fn until_match(found: &Found, pattern: &str) -> Result<Reply, Failure> {
    let regex = Regex::new(pattern).map_err(|e| Failure::usage(e, "check the pattern"))?;
    let request = AttachRequest::watcher(0);
    let gone = || Failure::from(RegistryError::NotFound(found.name.to_string()));
    let mut attachment = found.handle.attach(request).await.map_err(|_| gone())?;
    let mut text = Window::default();
    while let Some(event) = attachment.events.next().await {
        match event {
            Event::Output { data, .. } => {
                text.feed(&data);
                if regex.is_match(&text.window) {
                    return Ok(Reply::default());
                }
            }
            Event::Exited(status) => {
                return Err(Failure::operational(
                    format!(
                        "the program of session '{}' exited with code {} before its output matched",
                        found.name, status.code
                    ),
                    "check the pattern against `history`",
                ));
            }
            Event::Redraw { .. } | Event::Skipped { .. } => {}
        }
    }
    Err(gone())
}

/// The latest output as text, at most [`WINDOW`] bytes of it.
#[derive(Default)]
struct Window {
    text: Text,
    window: String,
}

impl Window {
    fn feed(&mut self, output: &[u8]) {
        self.window.push_str(&self.text.feed(output));
        if self.window.len() > WINDOW {
            let mut cut = self.window.len() - WINDOW;
            while !self.window.is_char_boundary(cut) {
                cut += 1;
            }
            self.window.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_stripped_of_escapes_and_matched_across_chunks() {
        let regex = Regex::new(r"tests? passed: \d+").expect("pattern");
        let mut text = Window::default();
        text.feed(b"\x1b[32mtests pa");
        assert!(!regex.is_match(&text.window));
        text.feed(b"ss\x1b[0med: 4");
        assert!(regex.is_match(&text.window), "{:?}", text.window);
        text.feed(&vec![b'x'; 2 * WINDOW]);
        assert_eq!(text.window.len(), WINDOW);
        assert!(!regex.is_match(&text.window));
    }

    #[test]
    fn a_pattern_that_does_not_compile_is_a_usage_error_in_one_line() {
        let failure = checked_pattern("(unclosed".into()).unwrap_err();
        assert_eq!(failure.status, 2);
        assert!(failure.line.starts_with("keepsh: invalid --for pattern: "));
        assert!(!failure.line.contains('\n'));
    }
}
