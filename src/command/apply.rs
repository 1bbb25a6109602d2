//! Carrying out a [`Command`] for a channel: create, find, attach, list,
//! kill, rename (mini-redis's `Command::apply`). It runs on the channel's
//! own task, never in the russh handler, because it may wait: a session
//! process starting, `kill`'s grace period, a session answering an attach.

use std::time::{Duration, SystemTime};

use super::{Command, Failure, Reply, render_list};
use crate::protocol::host::SpawnSpec;
use crate::protocol::{
    AttachRequest, ControlRequest, HistoryFormat, PtySize, Refusal, SendReply, SessionName, Typed,
};
use crate::registry::{Found, Registry, RegistryError, Resolved};
use crate::remote::{AttachError, Attachment};

/// How long `kill` waits for the program to exit (its grace + margin).
pub(super) const KILL_WAIT: Duration = Duration::from_secs(10);

/// What applying a command needs from its channel.
pub struct Context<'a> {
    /// All sessions.
    pub registry: &'a Registry,
    /// The SSH user.
    pub owner: &'a str,
    /// The client's window, when it sent a `pty-req`: an attachment is then
    /// a terminal (redrawn, deciding the size); otherwise a byte stream.
    pub size: Option<PtySize>,
    /// A new session's program, environment and directory; `command` is
    /// filled in from `new -- CMD`.
    pub spawn: SpawnSpec,
    /// Changes (to an error) when the client closed the channel: a command
    /// that waits (`wait`) stops then.
    pub closed: tokio::sync::watch::Receiver<()>,
}

/// What a command ended in.
pub enum Outcome {
    /// A finished command's output.
    Reply(Reply),
    /// The channel is bound to a session.
    Attached(Found, Attachment),
    /// `tail -f`: a watcher whose first event is the last lines as text
    /// (a `Redraw`), then output, to be passed on as text.
    Follow(Found, Attachment),
}

impl Command {
    /// Carries the command out for `ctx`'s user.
    ///
    /// # Errors
    /// The [`Failure`] to report: no such session, a name taken, a session
    /// that cannot start or be reached, `--from` outside the buffer.
    pub async fn apply(self, ctx: Context<'_>) -> Result<Outcome, Failure> {
        let reply = match self {
            Command::New {
                name,
                detach,
                command,
            } => return new(&ctx, name, detach, command).await,
            // `detach_others` is the channel's to carry out, once attached.
            Command::Attach {
                reference,
                read_only,
                from,
                quiet,
                ..
            } => {
                let found = match reference {
                    Some(reference) => match ctx.registry.resolve_any(ctx.owner, &reference)? {
                        Resolved::Live(found) => found,
                        Resolved::Lost(meta) => {
                            return Ok(Outcome::Reply(super::lost::attach(&ctx, &meta)?));
                        }
                    },
                    None => ctx.registry.last_detached(ctx.owner)?,
                };
                return attach(&ctx, found, read_only, from, quiet).await;
            }
            Command::List { json } => {
                let sessions = ctx.registry.list(ctx.owner);
                Reply::ok(render_list(&sessions, json, SystemTime::now()))
            }
            Command::History { reference, raw } => history(&ctx, &reference, raw).await?,
            Command::Kill { reference } => kill(&ctx, &reference).await?,
            Command::Restart { reference, detach } => {
                return super::lost::restart(&ctx, &reference, detach).await;
            }
            Command::Rename { reference, new } => {
                let found = ctx.registry.rename(ctx.owner, &reference, new.clone())?;
                found
                    .handle
                    .send(ControlRequest::Rename { name: new })
                    .await;
                Reply::ok("")
            }
            Command::Send { reference, typed } => send(&ctx, &reference, typed).await?,
            Command::Tail {
                reference,
                lines,
                follow,
            } => return tail(&ctx, &reference, lines, follow).await,
            Command::Wait {
                reference,
                pattern,
                timeout,
            } => super::wait::wait(&ctx, &reference, pattern, timeout).await?,
            Command::Help => Reply::ok(super::HELP),
            Command::Version => Reply::ok(super::version()),
        };
        Ok(Outcome::Reply(reply))
    }
}

/// `new`: creates the session, then attaches to it or prints its id.
async fn new(
    ctx: &Context<'_>,
    name: Option<SessionName>,
    detach: bool,
    command: Vec<String>,
) -> Result<Outcome, Failure> {
    let spec = SpawnSpec {
        command,
        ..ctx.spawn.clone()
    };
    let found = ctx.registry.create(ctx.owner, name, spec).await?;
    if detach {
        return Ok(Outcome::Reply(Reply::ok(format!("{}\n", found.id))));
    }
    attach(ctx, found, false, None, false).await
}

/// Binds the channel to `found`.
pub(super) async fn attach(
    ctx: &Context<'_>,
    found: Found,
    read_only: bool,
    from: Option<u64>,
    quiet: bool,
) -> Result<Outcome, Failure> {
    let request = AttachRequest {
        size: ctx.size,
        read_only,
        from,
        quiet,
        watch: false,
        tail: 0,
        pattern: None,
    };
    let attachment = found.handle.attach(request).await.map_err(|e| match e {
        AttachError::Refused(refusal @ Refusal::OutsideBuffer { start, .. }) => {
            Failure::operational(
                refusal,
                &format!("use --from {start} for the oldest byte kept"),
            )
        }
        AttachError::Refused(refusal @ Refusal::Pattern { .. }) => {
            Failure::usage(refusal, "only `wait --for` sends a pattern")
        }
        AttachError::Connect(_) | AttachError::Ended => {
            tracing::info!(error = %e, "attach to a session that is gone");
            Failure::from(RegistryError::NotFound(found.name.to_string()))
        }
    })?;
    Ok(Outcome::Attached(found, attachment))
}

/// `history REF [--raw]`: from the session, or a lost one's files.
async fn history(ctx: &Context<'_>, reference: &str, raw: bool) -> Result<Reply, Failure> {
    let found = match ctx.registry.resolve_any(ctx.owner, reference)? {
        Resolved::Live(found) => found,
        Resolved::Lost(meta) => return super::lost::history(ctx, &meta, raw),
    };
    let format = if raw {
        HistoryFormat::Raw
    } else {
        HistoryFormat::Text
    };
    let data = found.handle.history(format).await.map_err(|error| {
        tracing::info!(%error, "history of a session that is gone");
        Failure::from(RegistryError::NotFound(found.name.to_string()))
    })?;
    Ok(match format {
        HistoryFormat::Raw => Reply::verbatim(data),
        HistoryFormat::Text => Reply::ok(String::from_utf8_lossy(&data)),
    })
}

/// `kill REF`: replies once the program is gone, so that a following
/// `list` no longer shows it.
/// `tail`: the last `lines` lines as text (from `history`); with `follow`,
/// a watcher that starts with them, at the same instant as its output.
async fn tail(
    ctx: &Context<'_>,
    reference: &str,
    lines: u32,
    follow: bool,
) -> Result<Outcome, Failure> {
    let found = ctx.registry.resolve(ctx.owner, reference)?;
    let gone = || Failure::from(RegistryError::NotFound(found.name.to_string()));
    if !follow {
        let text = found
            .handle
            .history(HistoryFormat::Text)
            .await
            .map_err(|_| gone())?;
        let text = String::from_utf8_lossy(&text);
        let skip = text.lines().count().saturating_sub(lines as usize);
        let last: String = text.lines().skip(skip).map(|l| format!("{l}\n")).collect();
        return Ok(Outcome::Reply(Reply::ok(last)));
    }
    let request = AttachRequest::watcher(lines);
    let attachment = found.handle.attach(request).await.map_err(|_| gone())?;
    Ok(Outcome::Follow(found, attachment))
}

/// `send`: types into the session; refused once its program has exited.
async fn send(ctx: &Context<'_>, reference: &str, typed: Vec<Typed>) -> Result<Reply, Failure> {
    let found = ctx.registry.resolve(ctx.owner, reference)?;
    match found.handle.type_in(typed).await {
        Ok(SendReply::Sent) => Ok(Reply::ok("")),
        Ok(SendReply::Exited) => Err(Failure::operational(
            format!(
                "session '{}' has exited: nothing reads its input",
                found.name
            ),
            "start a new one with 'new'",
        )),
        Err(error) => {
            tracing::info!(%error, "send to a session that is gone");
            Err(Failure::from(RegistryError::NotFound(
                found.name.to_string(),
            )))
        }
    }
}

async fn kill(ctx: &Context<'_>, reference: &str) -> Result<Reply, Failure> {
    let found = match ctx.registry.resolve_any(ctx.owner, reference)? {
        Resolved::Live(found) => found,
        Resolved::Lost(meta) => {
            crate::lost::remove(ctx.registry.state_dir(), meta.id);
            return Ok(Reply::ok(""));
        }
    };
    found.handle.send(ControlRequest::Kill).await;
    if !found.handle.wait_exited(KILL_WAIT).await {
        return Err(Failure::operational(
            format!("session '{}' did not exit after SIGKILL", found.name),
            "check for processes stuck in the kernel (state D)",
        ));
    }
    // Its process removes its history files before it ends: until then it
    // would be listed as lost once forgotten here.
    found.handle.wait_gone(KILL_WAIT).await;
    ctx.registry.remove(ctx.owner, found.id);
    Ok(Reply::ok(""))
}
