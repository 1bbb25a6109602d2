//! One persistent session: a PTY and its program, a ring buffer of its
//! output, and the attachments that watch it.
//!
//! This code runs in the session's own process ([`host`]). The state lives
//! in one task (`actor`); the host's connection tasks hold a local
//! [`SessionHandle`] and speak the messages of [`crate::protocol`]. Only the
//! session's task touches its PTY and ring buffer: no `Arc<Mutex<Session>>`.
//! Invariant: nothing here names a russh type.

mod actor;
pub mod host;
pub mod pty;
pub mod ring;
pub mod screen;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::protocol::{
    AttachRequest, AttachmentId, Event, HistoryFormat, Input, PtySize, Refusal, Request, SessionId,
    SessionInfo, SessionName, SessionState,
};
pub use pty::{SpawnError, SpawnSpec};

/// Control requests queued per session.
const REQUEST_QUEUE: usize = 64;
/// Events queued per attachment. With output chunks of at most 32 KiB this
/// bounds what one slow client can make the session hold to 1 MiB.
pub const ATTACHMENT_QUEUE: usize = 32;

/// Per-session limits and timers, from `[sessions]` in server.toml.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionSettings {
    /// Ring buffer capacity in bytes.
    pub scrollback_bytes: usize,
    /// Most history lines sent before the screen on attach, and printed by
    /// `history` (see [`screen::history`]).
    pub scrollback_lines: usize,
    /// Kill a session that has had no client for this long; `None` = never.
    pub orphan_timeout: Option<Duration>,
    /// Keep an exited session (and its final output) listed for this long.
    pub exited_retention: Duration,
    /// The soft open-files limit (RLIMIT_NOFILE) the program starts with:
    /// the server raises its own to serve many sessions, and gives programs
    /// back the limit it was started with. `None`: inherit.
    pub program_open_files: Option<u64>,
    /// Time between SIGHUP and SIGKILL on `kill`.
    pub kill_grace: Duration,
}

/// A request inside the session process: the serializable [`Request`] plus,
/// for `Attach`, the queue its events go to (which the host's connection
/// task drains onto the attachment's socket connection).
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
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The session has ended (or, seen from the front, its process cannot
    /// be reached).
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

    /// A receiver of every new snapshot.
    pub fn watch(&self) -> watch::Receiver<SessionInfo> {
        self.info.clone()
    }

    /// Returns once the session's task has ended.
    pub async fn ended(&self) {
        let mut info = self.info.clone();
        while info.changed().await.is_ok() {}
    }

    /// Sends a control request. A request to a session whose task has
    /// ended is dropped (see [`SessionHandle::ended`]).
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

    /// What the session holds of its past (see [`Request::History`]), in
    /// one piece: at most the ring buffer's capacity for `Raw`.
    ///
    /// # Errors
    /// [`AttachError::Gone`] if the session ended.
    pub async fn history(&self, format: HistoryFormat) -> Result<Bytes, AttachError> {
        let (tx, mut events) = mpsc::channel(1);
        self.requests
            .send(Envelope {
                request: Request::History(format),
                events: Some(tx),
            })
            .await
            .map_err(|_| AttachError::Gone)?;
        match events.recv().await {
            Some(Event::History { data }) => Ok(data),
            _ => Err(AttachError::Gone),
        }
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
            Some(Event::Attached { from }) => Ok(Attachment {
                from,
                events,
                control: AttachmentControl {
                    id,
                    read_only,
                    handle: self.clone(),
                    overflowing: false,
                },
            }),
            Some(Event::Refused(refusal)) => Err(AttachError::Refused(refusal)),
            _ => Err(AttachError::Gone),
        }
    }
}

/// A bound attachment: the events to forward to the client, and the control
/// side for input and resizes.
pub struct Attachment {
    /// The absolute offset, in bytes, of the first byte of output to follow.
    pub from: u64,
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
    /// Input is being dropped: the program stopped reading it for longer
    /// than [`INPUT_STALL`].
    overflowing: bool,
}

/// How long input from one client may wait for a program that does not read
/// it. Waiting back-pressures the client (a paste into a busy program), but
/// it also holds up that client's connection, which could then not even
/// notice its own close; past this, input is dropped until the program reads
/// again.
pub const INPUT_STALL: Duration = Duration::from_secs(5);

impl AttachmentControl {
    /// Forwards typed bytes to the PTY. While the program does not read its
    /// input this waits, back-pressuring this client only, for at most
    /// [`INPUT_STALL`]; after that, input is dropped until the program reads
    /// again. Input of a read-only attachment is dropped.
    pub async fn input(&mut self, data: Bytes) {
        self.input_with_stall(data, INPUT_STALL).await;
    }

    async fn input_with_stall(&mut self, data: Bytes, stall: Duration) {
        if self.read_only {
            return;
        }
        let input = Input {
            attachment: self.id,
            data,
        };
        let input = match self.handle.input.try_send(input) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                self.overflowing = false;
                return;
            }
            Err(mpsc::error::TrySendError::Full(input)) => input,
        };
        if self.overflowing {
            return; // still not read: dropped
        }
        if tokio::time::timeout(stall, self.handle.input.send(input))
            .await
            .is_err()
        {
            self.overflowing = true;
            tracing::warn!(
                attachment = self.id,
                "the program has not read its input for {stall:?}; dropping input until it does"
            );
        }
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

#[cfg(test)]
mod tests {
    //! Sessions at the handle boundary: real `/bin/sh`, real PTY, no SSH.

    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::protocol::{ExitStatus, SessionState};

    const DEADLINE: Duration = Duration::from_secs(20);

    fn settings(scrollback_bytes: usize) -> SessionSettings {
        SessionSettings {
            scrollback_bytes,
            scrollback_lines: 2000,
            orphan_timeout: None,
            exited_retention: Duration::from_secs(60),
            program_open_files: None,
            kill_grace: Duration::from_secs(2),
        }
    }

    fn start_sh(script: &str, scrollback_bytes: usize) -> SessionHandle {
        let spec = SpawnSpec {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            shell: PathBuf::from("/bin/sh"),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: PathBuf::from("/"),
            size: PtySize::DEFAULT,
        };
        start(
            SessionId::random(),
            "t".parse().expect("name"),
            "tester".into(),
            spec,
            settings(scrollback_bytes),
        )
        .expect("start /bin/sh")
    }

    fn attach_request(attachment: AttachmentId, from: Option<u64>) -> AttachRequest {
        AttachRequest {
            attachment,
            size: None,
            read_only: false,
            from,
        }
    }

    /// Collects output until `needle` appears; returns (bytes, exit status).
    async fn read_until(
        events: &mut mpsc::Receiver<Event>,
        needle: &str,
    ) -> (Vec<u8>, Option<ExitStatus>) {
        let mut bytes = Vec::new();
        let mut next_offset = None;
        loop {
            let event = tokio::time::timeout(DEADLINE, events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {needle:?} in time; got {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
                .expect("queue open");
            match event {
                Event::Output { offset, data } => {
                    if let Some(expected) = next_offset {
                        assert_eq!(offset, expected, "gap or overlap in offsets");
                    }
                    next_offset = Some(offset + data.len() as u64);
                    bytes.extend_from_slice(&data);
                    if String::from_utf8_lossy(&bytes).contains(needle) {
                        return (bytes, None);
                    }
                }
                Event::Exited(status) => return (bytes, Some(status)),
                Event::Skipped { to, .. } => next_offset = Some(to),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_terminal_left_behind_is_redrawn_from_the_screen() {
        // Far more than the attachment's queue holds (32 events of up to
        // 32 KiB) and than the 16 KiB ring.
        let script = "read go; seq -f line-%g 1 300000; sleep 100";
        let session = start_sh(script, 16 * 1024);
        let mut stalled = session
            .attach(AttachRequest {
                attachment: 1,
                size: Some(PtySize::DEFAULT),
                read_only: false,
                from: None,
            })
            .await
            .expect("attach");
        stalled.control.input(Bytes::from_static(b"\n")).await;
        let mut info = session.info.clone();
        tokio::time::timeout(DEADLINE, info.wait_for(|i| i.output_offset > 3_000_000))
            .await
            .expect("output produced while the client was stalled")
            .expect("session alive");
        // The redraw on attach, what fit in the queue, then a redraw of the
        // screen as it is now instead of the megabytes in between.
        let (mut redraws, mut output) = (0, 0);
        let screen = loop {
            match tokio::time::timeout(DEADLINE, stalled.events.recv()).await {
                Ok(Some(Event::Redraw { data })) => {
                    redraws += 1;
                    if redraws == 2 {
                        break data;
                    }
                }
                Ok(Some(Event::Output { data, .. })) => output += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(output < 3_000_000, "fed the whole backlog: {output} bytes");
        let mut terminal = vt100::Parser::new(
            std::num::NonZeroU16::new(24).expect("rows"),
            std::num::NonZeroU16::new(80).expect("cols"),
            0,
        );
        terminal.process(&screen);
        // The last line may be cut short where the output was when redrawn.
        let contents = terminal.screen().contents();
        let complete = contents.lines().count().saturating_sub(1);
        let lines: Vec<u32> = contents
            .lines()
            .take(complete)
            .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
            .collect();
        assert!(
            lines.len() >= 20,
            "screen: {:?}",
            terminal.screen().contents()
        );
        assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
        assert!(lines[0] > 30_000, "not the current screen: {lines:?}");
        session.send(Request::Kill).await;
        assert!(session.wait_exited(DEADLINE).await);
    }

    #[tokio::test]
    async fn output_input_and_exit_flow_through_an_attachment() {
        let session = start_sh("echo ready; read line; echo got:$line; exit 5", 4096);
        let mut attachment = session
            .attach(attach_request(1, None))
            .await
            .expect("attach");
        read_until(&mut attachment.events, "ready").await;
        attachment
            .control
            .input(Bytes::from_static(b"hello\n"))
            .await;
        let (bytes, _) = read_until(&mut attachment.events, "got:hello").await;
        assert!(String::from_utf8_lossy(&bytes).contains("got:hello"));
        let (_, exit) = read_until(&mut attachment.events, "\u{0}never").await;
        assert_eq!(
            exit,
            Some(ExitStatus {
                code: 5,
                signal: None
            })
        );
        assert!(session.wait_exited(DEADLINE).await);
        assert_eq!(session.info().state, SessionState::Exited);
    }

    /// Reads `events` until `END` shows; returns (count of b'x', skipped?).
    async fn drain_counting(events: &mut mpsc::Receiver<Event>) -> (usize, bool) {
        let (mut xs, mut skipped, mut tail) = (0, false, Vec::new());
        loop {
            match tokio::time::timeout(DEADLINE, events.recv()).await {
                Ok(Some(Event::Output { data, .. })) => {
                    xs += data.iter().filter(|&&b| b == b'x').count();
                    tail.extend_from_slice(&data);
                    tail.drain(..tail.len().saturating_sub(8));
                    if tail.windows(3).any(|w| w == b"END") {
                        return (xs, skipped);
                    }
                }
                Ok(Some(Event::Skipped { .. })) => skipped = true,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    const FLOOD: &str = "head -c 4194304 /dev/zero | tr -c x x; echo; echo END; sleep 100";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_never_stalls_the_others() {
        // 4 MiB of output, all of it kept by an 8 MiB ring buffer.
        let session = start_sh(FLOOD, 8 << 20);
        let mut stalled = session
            .attach(attach_request(1, Some(0)))
            .await
            .expect("attach");
        let mut reader = session
            .attach(attach_request(2, Some(0)))
            .await
            .expect("attach");
        assert_eq!(drain_counting(&mut reader.events).await, (4 << 20, false));
        // The stalled client holds no more than its queue ...
        assert!(stalled.events.len() <= ATTACHMENT_QUEUE);
        // ... and, once it reads again, is caught up from the ring buffer.
        assert_eq!(drain_counting(&mut stalled.events).await, (4 << 20, false));
        session.send(Request::Kill).await;
        assert!(session.wait_exited(DEADLINE).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_left_behind_by_the_ring_buffer_is_told_what_it_skipped() {
        let session = start_sh(FLOOD, 64 * 1024);
        let mut stalled = session
            .attach(attach_request(1, Some(0)))
            .await
            .expect("attach");
        let mut info = session.info.clone();
        tokio::time::timeout(DEADLINE, info.wait_for(|i| i.output_offset > 4 << 20))
            .await
            .expect("all output produced while the client was stalled")
            .expect("session alive");
        let (xs, skipped) = drain_counting(&mut stalled.events).await;
        assert!(skipped);
        assert!((64 * 1024..4 << 20).contains(&xs), "{xs}");
        session.send(Request::Kill).await;
        assert!(session.wait_exited(DEADLINE).await);
    }

    #[tokio::test]
    async fn a_read_only_attachment_neither_types_nor_decides_the_size() {
        let session = start_sh("echo ready; while read l; do echo got:$l; done", 4096);
        let mut writer = session
            .attach(attach_request(1, None))
            .await
            .expect("attach");
        read_until(&mut writer.events, "ready").await;
        let big = PtySize::from_request(200, 50, PtySize::DEFAULT);
        let mut viewer = session
            .attach(AttachRequest {
                attachment: 2,
                size: Some(big),
                read_only: true,
                from: None,
            })
            .await
            .expect("attach read-only");
        // Both inputs travel the same queue in this order: had the first
        // been forwarded, "got:x" would come before "got:y".
        viewer.control.input(Bytes::from_static(b"x\n")).await;
        writer.control.input(Bytes::from_static(b"y\n")).await;
        let (bytes, _) = read_until(&mut writer.events, "got:y").await;
        assert!(!String::from_utf8_lossy(&bytes).contains("got:x"));
        assert_eq!(session.info().size, PtySize::DEFAULT);
        session.send(Request::Kill).await;
        assert!(session.wait_exited(DEADLINE).await);
    }

    #[tokio::test]
    async fn input_to_a_program_that_never_reads_stalls_once_then_is_dropped() {
        // Raw mode: in canonical mode the kernel discards what does not fit
        // in a line instead of making the writer wait.
        let session = start_sh("stty raw -echo; echo ready; sleep 100", 4096);
        let mut attachment = session
            .attach(attach_request(1, None))
            .await
            .expect("attach");
        read_until(&mut attachment.events, "ready").await;
        let stall = Duration::from_millis(200);
        let chunk = Bytes::from(vec![b'x'; 32 * 1024]);
        // Fill the PTY, the writer's queue and the session's input queue.
        let started = tokio::time::Instant::now();
        while !attachment.control.overflowing {
            attachment
                .control
                .input_with_stall(chunk.clone(), stall)
                .await;
            assert!(started.elapsed() < DEADLINE, "input never overflowed");
        }
        // From now on input returns at once instead of holding up the client.
        let again = tokio::time::Instant::now();
        for _ in 0..100 {
            attachment
                .control
                .input_with_stall(chunk.clone(), stall)
                .await;
        }
        assert!(
            again.elapsed() < stall,
            "dropping input waited {:?}",
            again.elapsed()
        );
        session.send(Request::Kill).await;
        assert!(session.wait_exited(DEADLINE).await);
    }

    #[tokio::test]
    async fn reattaching_from_an_offset_continues_without_gap_or_duplicate() {
        // A pause after line 50 puts the second attach mid-stream.
        let script = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo n=$i; \
                      [ $i = 50 ] && sleep 0.3; done; sleep 100";
        let session = start_sh(script, 1 << 20);
        let mut first = session
            .attach(attach_request(1, None))
            .await
            .expect("attach");
        let (part, _) = read_until(&mut first.events, "n=50\r\n").await;
        drop(first);
        let mut second = session
            .attach(attach_request(2, Some(part.len() as u64)))
            .await
            .expect("attach");
        let rest = if String::from_utf8_lossy(&part).contains("n=200\r\n") {
            Vec::new() // everything came in the first read
        } else {
            read_until(&mut second.events, "n=200\r\n").await.0
        };
        let all = String::from_utf8_lossy(&[part, rest].concat()).into_owned();
        let numbers: Vec<u32> = all
            .split_whitespace()
            .filter_map(|t| t.strip_prefix("n=")?.parse().ok())
            .collect();
        assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
        session.send(Request::Kill).await;
        assert!(session.wait_exited(DEADLINE).await);
    }
}
