//! Lost sessions as commands see them (see [`crate::lost`]): `history`
//! and `attach` from their files, and `restart` of a lost or exited
//! session under its id and name, after its old output.

use std::time::SystemTime;

use super::apply::{Context, KILL_WAIT, Outcome};
use super::{Failure, Reply};
use crate::lost;
use crate::protocol::host::{SessionMeta, SpawnSpec};
use crate::protocol::{ControlRequest, SessionState};
use crate::registry::{Found, Resolved};
use crate::session::replay::Replay;

/// `history [--raw]` of a lost session: its files' bytes, or the text as
/// the session would have printed it.
///
/// # Errors
/// The history file cannot be read.
pub(super) fn history(ctx: &Context<'_>, meta: &SessionMeta, raw: bool) -> Result<Reply, Failure> {
    let (output, cut) = output(ctx, meta)?;
    Ok(if raw {
        Reply::verbatim(output)
    } else {
        let lines = ctx.registry.scrollback_lines();
        Reply::ok(Replay::new(&output, cut, meta.size, lines).text())
    })
}

/// A lost session's output from its history files, and whether older
/// output was dropped before it.
fn output(ctx: &Context<'_>, meta: &SessionMeta) -> Result<(Vec<u8>, bool), Failure> {
    lost::output(ctx.registry.state_dir(), meta).map_err(|error| {
        Failure::operational(
            format!(
                "cannot read the history of lost session '{}': {error}",
                meta.name
            ),
            "see the server's log",
        )
    })
}

/// `attach` to a lost session: its history lines and last screen as text,
/// as `history` prints them (a byte stream: the raw output), then one
/// line saying it was lost and what to do; exit status 1. As text, not a
/// redraw: the terminal goes back to the user's shell in its own modes.
pub(super) fn attach(ctx: &Context<'_>, meta: &SessionMeta) -> Result<Reply, Failure> {
    let (output, cut) = output(ctx, meta)?;
    let (stdout, verbatim) = match ctx.size {
        Some(_) => {
            let lines = ctx.registry.scrollback_lines();
            let text = Replay::new(&output, cut, meta.size, lines).text();
            (text.into_bytes(), false)
        }
        None => (output, true),
    };
    let last = humantime::format_rfc3339_seconds(meta.last_activity);
    Ok(Reply {
        stdout,
        verbatim,
        stderr: format!(
            "keepsh: session '{}' was lost: its process ended without a clean end \
             (last activity {last}); above is what it printed (start it again: \
             ssh -t HOST restart {id}; remove it: ssh HOST kill {id})\n",
            meta.name,
            id = meta.id
        ),
        status: 1,
    })
}

/// `restart`: a lost session, or an exited one (released first: its
/// process ends leaving its files), started again under its id and name,
/// after its old output; attached, or its id printed with `detach`.
pub(super) async fn restart(
    ctx: &Context<'_>,
    reference: &str,
    detach: bool,
) -> Result<Outcome, Failure> {
    let meta = match ctx.registry.resolve_any(ctx.owner, reference)? {
        Resolved::Lost(meta) => meta,
        Resolved::Live(found) => release(ctx, found).await?,
    };
    let found = ctx
        .registry
        .restart(&meta, restart_spec(ctx, &meta))
        .await?;
    if detach {
        return Ok(Outcome::Reply(Reply::ok(format!("{}\n", found.id))));
    }
    super::apply::attach(ctx, found, false, None, true).await
}

/// Ends exited session `found`'s process, keeping its files; its metadata.
async fn release(ctx: &Context<'_>, found: Found) -> Result<SessionMeta, Failure> {
    let info = found.handle.info();
    if info.state != SessionState::Exited {
        return Err(Failure::operational(
            format!("session '{}' is still running", found.name),
            "restart is for exited and lost sessions: attach to it, or kill it first",
        ));
    }
    if !info.history_on_disk {
        return Err(Failure::operational(
            format!(
                "session '{}' has no history file to restart from",
                found.name
            ),
            "start it again with 'new' (history_file_bytes is 0, or its file failed)",
        ));
    }
    found.handle.send(ControlRequest::Release).await;
    found.handle.wait_gone(KILL_WAIT).await;
    ctx.registry.remove(ctx.owner, found.id);
    lost::read(ctx.registry.state_dir(), found.id).ok_or_else(|| {
        Failure::operational(
            format!("session '{}' left no metadata to restart from", found.name),
            "see the server's log",
        )
    })
}

/// What a restarted session runs: its command (the login shell if it ran
/// the shell), in its last directory (the home directory if that is
/// gone), its size and TERM, this connection's environment otherwise; a
/// line after the old output says so.
fn restart_spec(ctx: &Context<'_>, meta: &SessionMeta) -> SpawnSpec {
    let shell = ctx.spawn.shell.display().to_string();
    let command = if meta.command == [shell] {
        Vec::new()
    } else {
        meta.command.clone()
    };
    let mut env = ctx.spawn.env.clone();
    if let Some(term) = &meta.term {
        env.retain(|(key, _)| key != "TERM");
        env.push(("TERM".to_owned(), term.clone()));
    }
    let cwd = if meta.cwd.is_dir() {
        meta.cwd.clone()
    } else {
        ctx.spawn.cwd.clone()
    };
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    SpawnSpec {
        command,
        env,
        cwd,
        size: meta.size,
        preface: format!("\r\n[keepsh: restarted at {now}; above is its output from before]\r\n"),
        ..ctx.spawn.clone()
    }
}
