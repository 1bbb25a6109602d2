//! One task per started channel: it runs the channel's shell or exec
//! request (creating, finding, killing sessions) and, for an attachment,
//! carries input and resizes in while `writer::forward` carries output out.
//!
//! Why a task: a command may wait (a session process starting, `kill`'s
//! grace period of up to 10 s, a session answering an attach). Waiting here
//! instead of in the russh handler keeps the connection's loop running:
//! keepalives, and typing and output on its other channels (a ControlMaster
//! user's `kill` never pauses their shell next to it).
//!
//! Invariant: the task ends only after it has closed its channel (or the
//! connection is gone), so a finished task means a closed channel; the
//! handler counts open channels that way (russh forgets a channel the
//! server closed first and never reports the client's answering close).

use std::sync::Arc;

use bytes::Bytes;
use russh::ChannelWriteHalf;
use russh::server::{Handle, Msg};
use tokio::sync::{mpsc, watch};

use super::attached::{ConnectionKey, Detached, probe};
use super::{Shared, writer};
use crate::command::{Command, Context, Failure, Outcome, Reply};
use crate::config::OnShell;
use crate::protocol::host::SpawnSpec;
use crate::protocol::{PtySize, SessionName, SessionState, SignalName, TermName};
use crate::registry::Found;
use crate::remote::{AttachmentControl, SessionHandle};

/// Input and resize messages queued for a channel's task. When full, the
/// handler waits (back-pressure on the typing connection, as before).
pub const INBOX: usize = 64;

/// What the handler passes on to a started channel's task.
#[derive(Debug)]
pub enum ToChannel {
    /// Typed bytes (`Handler::data`).
    Input(Bytes),
    /// A `window-change` (RFC 4254 §6.7), already clamped.
    Resize(PtySize),
    /// A `signal` request (RFC 4254 §6.9).
    Signal(SignalName),
    /// The client's EOF (RFC 4254 §5.3): ends a subsystem's stdin; an
    /// attachment carries on (`ssh host attach x < /dev/null` watches).
    Eof,
}

/// A shell or exec request, with everything its task needs.
pub struct Start {
    /// Shared server state.
    pub shared: Arc<Shared>,
    /// The SSH user.
    pub owner: String,
    /// What to run: a parsed command or the error to report.
    pub command: Result<Command, Failure>,
    /// A line a session this channel creates starts its output with (see
    /// [`shell_notice`]).
    pub notice: Option<String>,
    /// `pty-req`'s terminal type and size, if any.
    pub pty: Option<(TermName, PtySize)>,
    /// Accepted `env` requests.
    pub env: Vec<(String, String)>,
    /// The channel's writing side: window-aware, so a full channel waits
    /// on its own and never holds russh's queue for the others.
    pub out: ChannelWriteHalf<Msg>,
    /// The connection, for `exit-signal` (not on the write half) and to
    /// be probed when another client attaches to the same session.
    pub handle: Handle,
    /// Which connection this channel is on.
    pub connection: ConnectionKey,
    /// Input and resizes from the handler.
    pub inbox: mpsc::Receiver<ToChannel>,
    /// Changes (to an error) when the channel or its connection closed.
    pub closed: watch::Receiver<()>,
}

/// Runs a started channel until it closes.
pub async fn run(mut start: Start) {
    let detach_others = matches!(
        start.command,
        Ok(Command::Attach {
            detach_others: true,
            ..
        })
    );
    let outcome = execute(&mut start).await;
    let crlf = start.pty.is_some();
    match outcome {
        Err(failure) => writer::send_reply(&start.out, failure.into(), crlf).await,
        Ok(Outcome::Reply(reply)) => writer::send_reply(&start.out, reply, crlf).await,
        Ok(Outcome::Attached(found, attachment)) => {
            attached(&mut start, found, attachment, detach_others).await;
        }
        Ok(Outcome::Follow(found, attachment)) => {
            tracing::info!(session = %found.id, name = %found.name, "channel follows (tail -f)");
            let mut closed = start.closed.clone();
            tokio::select! {
                () = writer::follow(&start.out, attachment.events, crlf) => {}
                // The client closed the channel: the watcher detaches.
                _ = closed.changed() => {}
            }
        }
    }
}

/// Streams an attachment until the client closes the channel, the session
/// ends, or another client's `attach -d` detaches it (then it says so on
/// stderr); with `detach_others`, it first detaches the session's other
/// channels.
async fn attached(
    start: &mut Start,
    found: Found,
    attachment: crate::remote::Attachment,
    detach_others: bool,
) {
    tracing::info!(session = %found.id, name = %found.name, "channel attached");
    let attached = &start.shared.attached;
    let (registration, detached) =
        attached.register(found.id, start.connection, start.handle.clone());
    if detach_others {
        let told = attached.detach_others(&registration);
        tracing::info!(session = %found.id, clients = told, "detached the other clients (attach -d)");
    } else {
        // A client on another connection that vanished must not stay
        // attached (and set the size): each is asked for a keepalive.
        for (token, handle) in attached.on_other_connections(&registration) {
            let shared = Arc::clone(&start.shared);
            let session = found.id;
            tokio::spawn(async move { probe(&shared.attached, session, token, handle).await });
        }
    }
    let crate::remote::Attachment { events, control } = attachment;
    let output = writer::forward(&start.out, &start.handle, events);
    tokio::select! {
        () = output => {}
        // The handler dropped its side: the client closed the channel.
        () = pump(&mut start.inbox, control, &found.handle) => {}
        Ok(why) = detached => {
            // The attachment's connection is closed by now (its events
            // were dropped with `output`): say why, then end.
            let why = match why {
                Detached::Replaced => "another client attached with -d",
                Detached::Unanswered => "another client attached and this one did not answer",
            };
            let reply = Reply {
                stderr: format!(
                    "keepsh: detached from session {}: {why} (attach again to take it back)\n",
                    found.name
                ),
                ..Reply::default()
            };
            writer::send_reply(&start.out, reply, start.pty.is_some()).await;
        }
    }
}

/// Forwards input, resizes and signals to the session until the handler
/// lets go.
async fn pump(
    inbox: &mut mpsc::Receiver<ToChannel>,
    mut control: AttachmentControl,
    session: &SessionHandle,
) {
    while let Some(message) = inbox.recv().await {
        match message {
            ToChannel::Input(data) => control.input(data).await,
            ToChannel::Resize(size) => control.resize(size).await,
            ToChannel::Signal(signal) => {
                if session.signal(signal).await.is_err() {
                    tracing::debug!(?signal, "signal to a session that is gone");
                }
            }
            ToChannel::Eof => {}
        }
    }
}

/// Whether a channel running `command` takes `signal` requests: one that
/// attaches with the keyboard (a read-only watcher may not interrupt).
pub fn takes_signals(command: &Result<Command, Failure>) -> bool {
    matches!(
        command,
        Ok(Command::New { detach: false, .. }
            | Command::Attach {
                read_only: false,
                ..
            })
    )
}

/// Carries out the command (see `command::apply`).
async fn execute(start: &mut Start) -> Result<Outcome, Failure> {
    let command = std::mem::replace(&mut start.command, Ok(Command::Help))?;
    let ctx = Context {
        registry: &start.shared.registry,
        owner: &start.owner,
        size: start.pty.as_ref().map(|(_, size)| *size),
        spawn: spawn_spec(start),
        closed: start.closed.clone(),
    };
    command.apply(ctx).await
}

/// The command of a shell request: `ssh alice+work@host` attaches `work`,
/// creating it if needed; a plain login creates a new session, or with
/// `on_shell = "attach"` attaches the most recently detached one (by id,
/// so that another client taking it meanwhile cannot make this fail) and
/// creates one only when none is detached.
pub fn shell_command(
    shared: &Shared,
    owner: &str,
    target: Option<Result<SessionName, crate::protocol::InvalidName>>,
) -> Result<Command, Failure> {
    match target {
        Some(Ok(name)) => match shared.registry.resolve(owner, name.as_str()) {
            Ok(_) => Ok(Command::Attach {
                reference: Some(name.to_string()),
                read_only: false,
                from: None,
                detach_others: false,
                quiet: false,
            }),
            Err(_) => Ok(Command::New {
                name: Some(name),
                detach: false,
                command: vec![],
            }),
        },
        Some(Err(invalid)) => Err(Failure::usage(
            format!("{invalid} after '+' in the login name"),
            SessionName::RULE,
        )),
        None => {
            let detached = match shared.on_shell.of(owner) {
                OnShell::Attach => shared.registry.last_detached(owner).ok(),
                OnShell::New => None,
            };
            Ok(match detached {
                Some(found) => Command::Attach {
                    reference: Some(found.id.to_string()),
                    read_only: false,
                    from: None,
                    detach_others: false,
                    quiet: false,
                },
                None => Command::New {
                    name: None,
                    detach: false,
                    command: vec![],
                },
            })
        }
    }
}

/// Most detached sessions a [`shell_notice`] names.
const NOTICE_NAMES: usize = 5;

/// For a shell request that starts a new session (`on_shell = "new"`) while
/// `owner` has detached sessions: one line naming them, most recently
/// detached first, and how to reach them, for the new session's output to
/// start with (as sshd's motd comes before the shell's output). `None`
/// when none is detached.
pub fn shell_notice(shared: &Shared, owner: &str) -> Option<String> {
    let mut detached: Vec<_> = shared
        .registry
        .list(owner)
        .into_iter()
        .filter(|info| info.state == SessionState::Orphaned)
        .collect();
    detached.sort_by_key(|info| std::cmp::Reverse(info.detached_at.unwrap_or(info.created)));
    let first = detached.first()?.name.to_string();
    let mut names: Vec<String> = detached
        .iter()
        .take(NOTICE_NAMES)
        .map(|info| info.name.to_string())
        .collect();
    if detached.len() > NOTICE_NAMES {
        names.push(format!("and {} more", detached.len() - NOTICE_NAMES));
    }
    let count = detached.len();
    let noun = if count == 1 { "session" } else { "sessions" };
    Some(format!(
        "keepsh: {count} detached {noun}: {} (to resume one: ssh -t HOST attach {first}, \
         or log in as {owner}+{first})\r\n",
        names.join(", ")
    ))
}

/// The environment every program keepsh starts gets: `HOME`, `USER`,
/// `LOGNAME` (the OS user running keepsh), keepsh's `PATH` and `LANG`.
pub fn base_env(shared: &Shared) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOME".to_owned(), shared.home.display().to_string()),
        ("USER".to_owned(), shared.os_user.clone()),
        ("LOGNAME".to_owned(), shared.os_user.clone()),
        (
            "PATH".to_owned(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
    ];
    if let Ok(lang) = std::env::var("LANG") {
        env.push(("LANG".to_owned(), lang));
    }
    env
}

/// The environment and program for a new session started from this channel
/// (its command is filled in by `new -- CMD`).
fn spawn_spec(start: &Start) -> SpawnSpec {
    let shared = &start.shared;
    let (term, size) = start
        .pty
        .clone()
        .unwrap_or_else(|| (shared.default_term.clone(), PtySize::DEFAULT));
    let mut env = base_env(shared);
    env.insert(0, ("TERM".to_owned(), term.to_string()));
    for (key, value) in &start.env {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    SpawnSpec {
        command: Vec::new(),
        shell: shared.shell.clone(),
        env,
        cwd: shared.home.clone(),
        size,
        preface: start.notice.clone().unwrap_or_default(),
    }
}
