//! One persistent session: a PTY and its program, a ring buffer of its
//! output, and the attachments that watch it.
//!
//! The state lives in one task (`actor`); everything else holds a
//! [`SessionHandle`] and speaks the messages of [`crate::protocol`]. Only the
//! session's task touches its PTY and ring buffer: no `Arc<Mutex<Session>>`.
//! Invariant: nothing here names a russh type.

mod actor;
pub mod pty;
pub mod ring;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::protocol::{
    AttachRequest, AttachmentId, Event, Input, PtySize, Request, SessionId, SessionInfo,
    SessionName, SessionState,
};
pub use pty::{SpawnError, SpawnSpec};

/// Control requests queued per session.
const REQUEST_QUEUE: usize = 64;
/// Events queued per attachment. With output chunks of at most 32 KiB this
/// bounds what one slow client can make the session hold to 1 MiB.
pub const ATTACHMENT_QUEUE: usize = 32;

/// Per-session limits and timers, from `[sessions]` in server.toml.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Ring buffer capacity in bytes.
    pub scrollback_bytes: usize,
    /// Kill a session that has had no client for this long; `None` = never.
    pub orphan_timeout: Option<Duration>,
    /// Keep an exited session (and its final output) listed for this long.
    pub exited_retention: Duration,
    /// Time between SIGHUP and SIGKILL on `kill`.
    pub kill_grace: Duration,
}

/// A request on the in-process transport: the serializable [`Request`] plus,
/// for `Attach`, the queue its events go to. (Over a socket, that queue is
/// the socket connection itself.)
struct Envelope {
    request: Request,
    events: Option<mpsc::Sender<Event>>,
}

/// How the front reaches one session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    requests: mpsc::Sender<Envelope>,
    input: mpsc::Sender<Input>,
    info: watch::Receiver<SessionInfo>,
}

/// Why an attach failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The session refused (e.g. `--from` outside the buffer).
    #[error("{0}")]
    Refused(String),
    /// The session has ended and been removed.
    #[error("the session has ended")]
    Gone,
}

/// Starts a session: opens its PTY, runs its program and spawns its task.
///
/// # Errors
/// [`SpawnError`] when the PTY cannot be opened or the program not started.
pub fn start(
    id: SessionId,
    name: SessionName,
    owner: String,
    spec: SpawnSpec,
    settings: SessionSettings,
) -> Result<SessionHandle, SpawnError> {
    let (pty, streams) = pty::spawn(&spec)?;
    let now = std::time::SystemTime::now();
    let command = if spec.command.is_empty() {
        vec![spec.shell.display().to_string()]
    } else {
        spec.command.clone()
    };
    let info = SessionInfo {
        id,
        name,
        owner,
        state: SessionState::Orphaned,
        clients: 0,
        created: now,
        last_activity: now,
        detached_at: None,
        size: spec.size,
        command,
        exit: None,
        output_offset: 0,
        buffer_start: 0,
    };
    let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
    let (input, input_rx) = mpsc::channel(pty::INPUT_QUEUE);
    let (publish, info_rx) = watch::channel(info.clone());
    let span = tracing::info_span!("session", id = %id, owner = %info.owner);
    let actor = actor::Actor::new(info, publish, pty, settings);
    tokio::spawn(actor.run(streams, requests_rx, input_rx).instrument(span));
    Ok(SessionHandle {
        requests,
        input,
        info: info_rx,
    })
}

impl SessionHandle {
    /// The latest published snapshot; never waits on the session's task.
    pub fn info(&self) -> SessionInfo {
        self.info.borrow().clone()
    }

    /// True once the session's task has ended (after `kill`, or after
    /// `exited_retention`). A gone session is removed from the registry.
    pub fn is_gone(&self) -> bool {
        self.info.has_changed().is_err()
    }

    /// Sends a control request. A request to a gone session is dropped: the
    /// caller learns of it from [`SessionHandle::is_gone`].
    pub async fn send(&self, request: Request) {
        let _ = self
            .requests
            .send(Envelope {
                request,
                events: None,
            })
            .await;
    }

    /// Waits until the session's program has exited or the session is gone,
    /// at most `limit`. Returns whether it did.
    pub async fn wait_exited(&self, limit: Duration) -> bool {
        let mut info = self.info.clone();
        let exited = info.wait_for(|i| i.state == SessionState::Exited);
        // Ok also when the sender is gone: the session has ended either way.
        tokio::time::timeout(limit, exited).await.is_ok()
    }

    /// Binds a new attachment. Its events (replay, then live output, then
    /// `Exited`) arrive on the returned [`Attachment::events`] in order.
    ///
    /// # Errors
    /// [`AttachError::Refused`] with the session's reason, or
    /// [`AttachError::Gone`] if the session ended.
    pub async fn attach(&self, request: AttachRequest) -> Result<Attachment, AttachError> {
        let (tx, mut events) = mpsc::channel(ATTACHMENT_QUEUE);
        let id = request.attachment;
        let read_only = request.read_only;
        self.requests
            .send(Envelope {
                request: Request::Attach(request),
                events: Some(tx),
            })
            .await
            .map_err(|_| AttachError::Gone)?;
        match events.recv().await {
            Some(Event::Attached { .. }) => Ok(Attachment {
                events,
                control: AttachmentControl {
                    id,
                    read_only,
                    handle: self.clone(),
                },
            }),
            Some(Event::Refused { reason }) => Err(AttachError::Refused(reason)),
            _ => Err(AttachError::Gone),
        }
    }
}

/// A bound attachment: the events to forward to the client, and the control
/// side for input and resizes.
pub struct Attachment {
    /// Output and the final `Exited`, in order. Closes when the session ends.
    pub events: mpsc::Receiver<Event>,
    /// Input, resizes; detaches when dropped.
    pub control: AttachmentControl,
}

/// The client-to-session side of an attachment. Dropping it detaches.
pub struct AttachmentControl {
    id: AttachmentId,
    read_only: bool,
    handle: SessionHandle,
}

impl AttachmentControl {
    /// Forwards typed bytes to the PTY. Waits (back-pressuring this client
    /// only) while the program does not read its input. Input of a read-only
    /// attachment is dropped.
    pub async fn input(&self, data: Bytes) {
        if self.read_only {
            return;
        }
        let _ = self
            .handle
            .input
            .send(Input {
                attachment: self.id,
                data,
            })
            .await;
    }

    /// The client's window changed.
    pub async fn resize(&self, size: PtySize) {
        self.handle
            .send(Request::Resize {
                attachment: self.id,
                size,
            })
            .await;
    }
}

impl Drop for AttachmentControl {
    fn drop(&mut self) {
        let envelope = Envelope {
            request: Request::Detach {
                attachment: self.id,
            },
            events: None,
        };
        // Drop cannot wait; if the queue is momentarily full, finish the send
        // on the runtime so a detach is never lost.
        if let Err(mpsc::error::TrySendError::Full(envelope)) =
            self.handle.requests.try_send(envelope)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let requests = self.handle.requests.clone();
            runtime.spawn(async move {
                let _ = requests.send(envelope).await;
            });
        }
    }
}
