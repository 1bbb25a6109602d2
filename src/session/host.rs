//! The session process (`keepsh session-host`): one per session, started by
//! the server, detached from it (its own session id via setsid(2)), so that a
//! crash, `kill -9` or upgrade of the server loses no session and no byte.
//!
//! It reads a [`HostSpec`] (JSON) on stdin, binds its socket
//! `STATE_DIR/sessions/ID.sock` (0600), starts the PTY and program, answers
//! one [`Ready`] line (JSON) on stdout, then serves the protocol of
//! [`crate::protocol::wire`] to any number of connections until the session
//! ends (killed, exited and retained long enough, or orphaned too long); then
//! it removes its socket and exits. While no server is connected it keeps
//! reading its PTY into the ring buffer, so an outage's output is replayed on
//! the next attach.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tracing::Instrument;

use super::{AttachError, Attachment, SessionHandle, SessionSettings, SpawnError, SpawnSpec};
use crate::protocol::wire::{
    FromSession, Hello, ToSession, read_frame, read_preamble, write_frame, write_preamble,
};
use crate::protocol::{
    AttachRequest, Event, HistoryFormat, Request, SessionId, SessionInfo, SessionName,
};

/// The directory of session sockets inside `state_dir`.
pub fn sessions_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sessions")
}

/// The socket of session `id`.
pub fn socket_path(state_dir: &Path, id: SessionId) -> PathBuf {
    sessions_dir(state_dir).join(format!("{id}.sock"))
}

/// What the server asks a session process to run (stdin, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSpec {
    /// The session's id (also its socket's name).
    pub id: SessionId,
    /// The SSH login name that owns it.
    pub owner: String,
    /// Its name.
    pub name: SessionName,
    /// The program, environment, directory and size.
    pub spawn: SpawnSpec,
    /// Buffer size and timers.
    pub settings: SessionSettings,
}

/// The session process's one-line answer (stdout, JSON).
#[derive(Debug, Serialize, Deserialize)]
pub enum Ready {
    /// Listening, program started.
    Started,
    /// Nothing was started.
    Failed(SpawnError),
}

/// Why the session process could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// stdin did not hold a [`HostSpec`].
    #[error("reading the session spec from stdin: {0}")]
    Spec(#[from] serde_json::Error),
    /// The command line names another session than the spec.
    #[error("--session {0} does not match the spec on stdin")]
    WrongSession(String),
    /// The runtime or the socket could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the session process to its end; `session` is the id given on its
/// command line (for `ps`), which must match the spec's.
///
/// # Errors
/// [`HostError`] when the spec is unreadable or the runtime cannot start;
/// a program that cannot start is reported on stdout as [`Ready::Failed`].
pub fn run(state_dir: &Path, session: &str) -> Result<(), HostError> {
    let spec: HostSpec = serde_json::from_reader(std::io::stdin().lock())?;
    if spec.id.to_string() != session {
        return Err(HostError::WrongSession(session.to_owned()));
    }
    // Out of the server's session and process group: a signal to the
    // server's group (Ctrl-C in its terminal) or its death leaves us running.
    let _ = nix::unistd::setsid();
    // `ps -e` and `top` show "keepsh-session" rather than "exe" (the name
    // of /proc/self/exe, which started us).
    let _ = rustix::thread::set_name(c"keepsh-session");
    if let Some(soft) = spec.settings.program_open_files {
        // Inherited by the program; this process needs few descriptors.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(soft),
                maximum: limit.maximum,
            },
        );
    }
    let span = tracing::info_span!("session", id = %spec.id, owner = %spec.owner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(state_dir, spec).instrument(span));
    Ok(())
}

fn answer(ready: &Ready) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, ready);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve(state_dir: &Path, spec: HostSpec) {
    let path = socket_path(state_dir, spec.id);
    let listener = match bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            answer(&Ready::Failed(SpawnError::Process(format!(
                "cannot listen on {}: {error}",
                path.display()
            ))));
            return;
        }
    };
    let handle = match super::start(spec.id, spec.name, spec.owner, spec.spawn, spec.settings) {
        Ok(handle) => handle,
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            answer(&Ready::Failed(error));
            return;
        }
    };
    answer(&Ready::Started);
    tracing::info!(socket = %path.display(), "session process started");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (reader, writer) = stream.into_split();
                    tokio::spawn(connection(reader, writer, handle.clone()).in_current_span());
                }
                Err(error) => {
                    tracing::warn!(%error, "accept on the session socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = handle.ended() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("session ended; session process exits");
}

/// One connection: preambles, then a control connection or an attachment.
/// A peer that misbehaves (garbage, another version, a bad frame) gets its
/// connection closed and a line in the log; the session carries on.
async fn connection(mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf, handle: SessionHandle) {
    let info = handle.info();
    let hello = Hello {
        id: info.id,
        owner: info.owner,
        name: info.name,
    };
    if write_preamble(&mut writer, Some(&hello)).await.is_err() {
        return;
    }
    if let Err(error) = read_preamble(&mut reader).await {
        tracing::warn!(%error, "closed a connection on the session socket");
        return;
    }
    let first = match read_frame::<_, ToSession>(&mut reader).await {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "closed a connection on the session socket");
            return;
        }
    };
    match first {
        ToSession::Watch => control(reader, writer, handle).await,
        ToSession::Request(Request::Attach(request)) => {
            attachment(reader, writer, handle, request).await;
        }
        ToSession::Request(Request::History(format)) => history(writer, &handle, format).await,
        ToSession::Request(request) => {
            handle.send(request).await;
            requests(reader, &handle).await;
        }
        ToSession::Input(_) => {
            tracing::warn!("input before attach on the session socket; connection closed");
        }
    }
}

/// How often a control connection hears of output alone (offsets, last
/// activity); any other change is pushed at once. Without this, every PTY
/// read would cost an encoded snapshot on the socket during bulk output.
const OUTPUT_INFO_INTERVAL: Duration = Duration::from_millis(100);

/// Whether `a` and `b` differ at most in their output counters.
fn only_output_differs(a: &SessionInfo, b: &SessionInfo) -> bool {
    a.state == b.state
        && a.clients == b.clients
        && a.name == b.name
        && a.size == b.size
        && a.exit == b.exit
        && a.detached_at == b.detached_at
}

/// Pushes new snapshots (output alone at most every
/// [`OUTPUT_INFO_INTERVAL`]); forwards requests.
async fn control(reader: OwnedReadHalf, mut writer: OwnedWriteHalf, handle: SessionHandle) {
    let mut info = handle.watch();
    let push = async {
        loop {
            let sent = info.borrow_and_update().clone();
            if write_frame(&mut writer, &FromSession::Info(sent.clone()))
                .await
                .is_err()
            {
                return;
            }
            let output_due = tokio::time::Instant::now() + OUTPUT_INFO_INTERVAL;
            // Some(alive) on a change beyond output; None once output is due.
            let other_change = tokio::select! {
                changed = info.wait_for(|now| !only_output_differs(&sent, now)) => {
                    Some(changed.is_ok())
                }
                () = tokio::time::sleep_until(output_due) => None,
            };
            match other_change {
                Some(true) => {}
                Some(false) => return,
                None => {
                    let moved = {
                        let now = info.borrow();
                        now.output_offset != sent.output_offset
                            || now.buffer_start != sent.buffer_start
                    };
                    if !moved && info.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = push => {}
        () = requests(reader, &handle) => {}
    }
}

/// Forwards requests from a control connection until it closes.
async fn requests(mut reader: OwnedReadHalf, handle: &SessionHandle) {
    loop {
        match read_frame::<_, ToSession>(&mut reader).await {
            Ok(Some(ToSession::Request(request))) => handle.send(request).await,
            Ok(Some(other)) => {
                tracing::warn!(
                    ?other,
                    "unexpected message on a control connection; ignored"
                );
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "closed a control connection");
                return;
            }
        }
    }
}

/// Answers a history request in frames of at most [`HISTORY_CHUNK`] bytes,
/// then closes the connection, which ends the answer.
async fn history(mut writer: OwnedWriteHalf, handle: &SessionHandle, format: HistoryFormat) {
    let Ok(data) = handle.history(format).await else {
        return;
    };
    for chunk in data.chunks(HISTORY_CHUNK) {
        let event = Event::History {
            data: data.slice_ref(chunk),
        };
        if write_frame(&mut writer, &FromSession::Event(event))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Bytes per frame of a history answer (frames are at most 1 MiB).
const HISTORY_CHUNK: usize = 64 * 1024;

/// Binds an attachment: its events go out as frames; input and resizes come
/// in. Closing either way detaches.
async fn attachment(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    handle: SessionHandle,
    request: AttachRequest,
) {
    let Attachment {
        from,
        mut events,
        mut control,
    } = match handle.attach(request).await {
        Ok(attachment) => attachment,
        Err(AttachError::Refused(refusal)) => {
            let _ = write_frame(&mut writer, &FromSession::Event(Event::Refused(refusal))).await;
            return;
        }
        Err(AttachError::Gone) => return,
    };
    if write_frame(&mut writer, &FromSession::Event(Event::Attached { from }))
        .await
        .is_err()
    {
        return;
    }
    let pump = async {
        while let Some(event) = events.recv().await {
            if write_frame(&mut writer, &FromSession::Event(event))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let feed = async {
        loop {
            match read_frame::<_, ToSession>(&mut reader).await {
                Ok(Some(ToSession::Input(data))) => control.input(data).await,
                Ok(Some(ToSession::Request(Request::Resize { size, .. }))) => {
                    control.resize(size).await;
                }
                Ok(Some(ToSession::Request(Request::Detach { .. })) | None) => return,
                Ok(Some(other)) => {
                    tracing::warn!(?other, "unexpected message on an attachment; ignored");
                }
                Err(error) => {
                    tracing::warn!(%error, "closed an attachment's connection");
                    return;
                }
            }
        }
    };
    tokio::select! {
        () = pump => {}
        () = feed => {}
    }
}
