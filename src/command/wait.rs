//! `wait REF [--for REGEX] [--timeout DURATION]`: until the program exits
//! (exit status: its code, 128 + the signal's number for a signal), or
//! until output produced after the call matches REGEX (0). `--timeout`
//! gives up with status 124, as coreutils' `timeout` does.
//!
//! The session matches the pattern on its output's text (escape sequences
//! stripped, line feeds kept, across chunk boundaries; the rules are
//! `session::waiters`'), in one pass for all its waiters: a waiter holds
//! no output queue there and costs nothing per byte. A waiter is not a
//! client (`list` counts it in `watchers`), and one whose channel closes
//! stops.

use std::time::Duration;

use super::{Context, Failure, Reply};
use crate::protocol::{AttachRequest, Event};
use crate::registry::{Found, RegistryError};
use crate::remote::AttachError;
use crate::session::waiters;

/// coreutils `timeout`'s exit status when the time ran out.
const TIMED_OUT: u32 = 124;

/// `pattern` if it compiles.
///
/// # Errors
/// A usage [`Failure`] naming the problem.
pub(super) fn checked_pattern(pattern: String) -> Result<String, Failure> {
    match waiters::compile(&pattern) {
        Ok(_) => Ok(pattern),
        Err(what) => Err(Failure::usage(
            format!("invalid --for pattern: {}", super::escape_controls(&what)),
            "write a regular expression as the regex crate reads it, e.g. 'tests? passed'",
        )),
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

/// Until output after now matches `pattern` (checked already once): the
/// session matches it (see `session::waiters`) and says when.
async fn until_match(found: &Found, pattern: &str) -> Result<Reply, Failure> {
    let request = AttachRequest::waiter(pattern.to_owned());
    let gone = || Failure::from(RegistryError::NotFound(found.name.to_string()));
    let mut attachment = found.handle.attach(request).await.map_err(|e| match e {
        AttachError::Refused(refusal) => Failure::usage(refusal, "check the pattern"),
        AttachError::Connect(_) | AttachError::Ended => gone(),
    })?;
    while let Some(event) = attachment.events.next().await {
        match event {
            Event::Matched => return Ok(Reply::default()),
            Event::Exited(status) => {
                return Err(Failure::operational(
                    format!(
                        "the program of session '{}' exited with code {} before its output matched",
                        found.name, status.code
                    ),
                    "check the pattern against `history`",
                ));
            }
            Event::Output { .. } | Event::Redraw { .. } | Event::Skipped { .. } => {}
        }
    }
    Err(gone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_that_does_not_compile_is_a_usage_error_in_one_line() {
        let failure = checked_pattern("(unclosed".into()).unwrap_err();
        assert_eq!(failure.status, 2);
        assert!(failure.line.starts_with("keepsh: invalid --for pattern: "));
        assert!(!failure.line.contains('\n'));
    }
}
