//! `[notify]`: the user's command, run when a session that no writable
//! client is attached to needs its user: it rang the bell, showed a desktop
//! notification (OSC 9 as iTerm2 reads it, OSC 777 `notify` as urxvt and
//! foot do), or exited.
//!
//! Rules:
//! - At most one run per session per `min_interval`; events in between are
//!   dropped, not queued.
//! - The command runs without a shell, as the OS user running keepsh,
//!   with `KEEPSH_USER`, `KEEPSH_SESSION` (name), `KEEPSH_SESSION_ID`,
//!   `KEEPSH_EVENT` (`bell`, `notification`, `exit`) and `KEEPSH_MESSAGE`
//!   added to the session process's environment; it is killed after
//!   [`RUN_TIMEOUT`]; its exit status and the start of its output (stdout
//!   and stderr on one pipe, in the order written) are logged. The session
//!   never waits for it.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::child::Child;
use crate::protocol::SessionInfo;
use crate::protocol::host::NotifySpec;

/// Longest a run may take before it is killed.
pub(super) const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a notification's text passed on.
const MAX_MESSAGE: usize = 1024;
/// Most bytes of the command's output logged.
const MAX_LOGGED: usize = 200;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// BEL outside any escape sequence.
    Bell,
    /// OSC 9 or OSC 777 `notify`.
    Notification,
    /// The program ended.
    Exit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bell => "bell",
            Kind::Notification => "notification",
            Kind::Exit => "exit",
        }
    }
}

/// A session's notify command and when it last ran.
pub(super) struct Notifier {
    spec: NotifySpec,
    last_run: Option<Instant>,
}

impl Notifier {
    pub fn new(spec: NotifySpec) -> Notifier {
        Notifier {
            spec,
            last_run: None,
        }
    }

    /// Whether an event at `now` may run the command; if so, it counts as
    /// a run.
    fn allow(&mut self, now: Instant) -> bool {
        let allowed = self
            .last_run
            .is_none_or(|last| now.duration_since(last) >= self.spec.min_interval);
        if allowed {
            self.last_run = Some(now);
        }
        allowed
    }

    /// Runs the command for `kind` with `message`, unless one ran less than
    /// `min_interval` ago. Returns at once.
    pub fn notify(&mut self, kind: Kind, message: &str, session: &SessionInfo) {
        if !self.allow(Instant::now()) {
            tracing::debug!(event = kind.name(), "notify command ran recently; skipped");
            return;
        }
        let Some((program, args)) = self.spec.command.split_first() else {
            return;
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("KEEPSH_USER", &session.owner)
            .env("KEEPSH_SESSION", session.name.as_str())
            .env("KEEPSH_SESSION_ID", session.id.to_string())
            .env("KEEPSH_EVENT", kind.name())
            .env("KEEPSH_MESSAGE", message)
            .stdin(Stdio::null());
        tokio::spawn(run(command, kind));
    }
}

/// Runs `command`, killed after [`RUN_TIMEOUT`]; logs how it ended.
async fn run(command: Command, kind: Kind) {
    let event = kind.name();
    let (mut child, mut output) = match start(command) {
        Ok(started) => started,
        Err(error) => {
            tracing::warn!(event, %error, "notify command could not start (check [notify] command)");
            return;
        }
    };
    let ran = async {
        let shown = read_start(&mut output).await;
        (child.wait().await, shown)
    };
    match tokio::time::timeout(RUN_TIMEOUT, ran).await {
        Ok((Ok(status), shown)) => {
            let shown = String::from_utf8_lossy(&shown).escape_debug().to_string();
            tracing::info!(event, %status, output = %shown, "notify command ran");
        }
        Ok((Err(error), _)) => {
            tracing::warn!(event, %error, "waiting for the notify command failed")
        }
        // Dropping `child` kills it.
        Err(_) => tracing::warn!(event, "notify command ran past 10 s; killed"),
    }
}

/// Starts `command` with its stdout and stderr on one pipe; returns the
/// child (killed if dropped) and the pipe's reading end. `command`, which
/// holds the writing ends, is dropped here, so that the pipe ends with the
/// program's output.
fn start(mut command: Command) -> std::io::Result<(Child, tokio::net::unix::pipe::Receiver)> {
    let (read, write) = std::io::pipe()?;
    command.stdout(write.try_clone()?).stderr(write);
    let child = Child::spawn(&mut command)?.kill_on_drop();
    drop(command);
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read.into())?;
    Ok((child, read))
}

/// The first [`MAX_LOGGED`] bytes of `output`; the rest is read and
/// dropped, so that the program never waits on a full pipe.
async fn read_start(output: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut shown = Vec::new();
    let _ = (&mut *output)
        .take(MAX_LOGGED as u64)
        .read_to_end(&mut shown)
        .await;
    let _ = tokio::io::copy(output, &mut tokio::io::sink()).await;
    shown
}

/// The desktop notifications in `output`: the text of each OSC 9 (iTerm2;
/// not ConEmu's `9;4;` progress reports) and the title and body of each
/// OSC 777 `notify` (urxvt, foot), ended by BEL or ST. A sequence split
/// across two chunks is missed.
pub(super) fn desktop_notifications(output: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for at in memchr::memmem::find_iter(output, b"\x1b]") {
        let rest = &output[at + 2..];
        let Some(end) = rest.iter().position(|&b| b == 0x07 || b == 0x1b) else {
            break;
        };
        let body = &rest[..end];
        let text = if let Some(text) = body.strip_prefix(b"9;") {
            if text.starts_with(b"4;") {
                continue;
            }
            String::from_utf8_lossy(text).into_owned()
        } else if let Some(text) = body.strip_prefix(b"777;notify;") {
            String::from_utf8_lossy(text).replacen(';', ": ", 1)
        } else {
            continue;
        };
        let mut text: String = text.chars().filter(|c| !c.is_control()).collect();
        if text.len() > MAX_MESSAGE {
            let cut = (0..=MAX_MESSAGE).rev().find(|&i| text.is_char_boundary(i));
            text.truncate(cut.unwrap_or(0));
        }
        found.push(text);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc_9_and_777_notify_are_found_and_progress_and_titles_are_not() {
        let output = b"text\x1b]9;build done\x07more\x1b]777;notify;Agent;needs you\x1b\\\
                       \x1b]9;4;1;50\x07\x1b]2;a title\x07\x1b]9;cut";
        assert_eq!(
            desktop_notifications(output),
            ["build done", "Agent: needs you"]
        );
        assert!(desktop_notifications(b"plain \x07 bell").is_empty());
    }

    #[test]
    fn one_run_per_min_interval() {
        let spec = NotifySpec {
            command: vec!["true".into()],
            min_interval: Duration::from_secs(30),
        };
        let mut notifier = Notifier::new(spec);
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let runs: Vec<bool> = [0, 10, 29, 30, 31, 61]
            .into_iter()
            .map(|s| notifier.allow(at(s)))
            .collect();
        assert_eq!(runs, [true, false, false, true, false, true]);
    }
}
