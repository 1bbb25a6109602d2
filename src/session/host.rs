//! The session process (`keepsh session-host`): one per session, started by
//! the server, detached from it (its own session id via setsid(2)), so that a
//! crash, `kill -9` or upgrade of the server loses no session and no byte.
//!
//! It reads a [`HostSpec`] (JSON) on stdin, binds its socket
//! `STATE_DIR/sessions/ID.sock` (0600), starts the PTY and program, answers
//! one [`Ready`] line (JSON) on stdout (the contract is
//! [`crate::protocol::host`]), then serves the protocol of
//! [`crate::protocol::wire`] to any number of connections until the session
//! ends (killed, exited and retained long enough, or orphaned too long); then
//! it removes its socket and exits. While no server is connected it keeps
//! reading its PTY into the ring buffer, so an outage's output is replayed on
//! the next attach.
//!
//! Each connection is one task, which sends the session task its messages
//! directly: the first frame ([`Open`]) decides which.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::actor::{AttachmentId, Input, Message};
use super::{ATTACHMENT_QUEUE, Mailbox};
use crate::protocol::host::{HostSpec, Ready, SpawnError, socket_path};
use crate::protocol::wire::{Hello, read_frame, read_preamble, write_frame, write_preamble};
use crate::protocol::{
    AttachInput, AttachReply, AttachRequest, ControlRequest, HistoryFormat, Open, SessionInfo,
    Typed,
};

/// Why the session process could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// stdin did not hold a [`HostSpec`].
    #[error("reading the session spec from stdin: {0}")]
    Spec(#[from] serde_json::Error),
    /// The command line names another session than the spec.
    #[error("--session {0} does not match the spec on stdin")]
    WrongSession(String),
    /// stdin could not be read, or the runtime not set up.
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
    let spec = prepare(session)?;
    let span = tracing::info_span!("session", id = %spec.id, owner = %spec.owner);
    // The session's future on the heap, the spec's parsing and the
    // runtime's making in functions of their own: the frames under the
    // idle session stay small, since every page of the main stack that
    // the process once used stays resident (BENCHMARKS.md "Memory").
    let session = Box::pin(serve(state_dir, spec).instrument(span));
    runtime()?.block_on(session);
    Ok(())
}

/// The spec read from stdin and checked against `session`, and the
/// process set up for it (its own session id, its name, the program's
/// open-files limit). Not inlined into [`run`]: its temporaries (the
/// JSON parser's) would deepen the frame that runs the session.
#[inline(never)]
fn prepare(session: &str) -> Result<HostSpec, HostError> {
    let spec: HostSpec = serde_json::from_slice(&read_stdin()?)?;
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
    Ok(spec)
}

/// The session process's runtime: one thread, I/O and timers.
#[inline(never)]
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A session process waits on a handful of descriptors (its socket,
        // its PTY, a few connections): 64 events a wake-up, not 1,024
        // (12 KiB of buffer).
        .max_io_events_per_tick(64)
        .build()
}

/// All of stdin, read through a duplicate of fd 0: `std::io::stdin()`
/// would keep its 8 KiB buffer for the life of the process.
fn read_stdin() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut spec = Vec::new();
    let stdin = rustix::stdio::stdin().try_clone_to_owned()?;
    std::fs::File::from(stdin).read_to_end(&mut spec)?;
    Ok(spec)
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
            answer(&Ready::Failed(SpawnError::Listen {
                path,
                reason: error.to_string(),
            }));
            return;
        }
    };
    let session = match super::start(spec, state_dir) {
        Ok(session) => session,
        Err(error) => {
            let _ = std::fs::remove_file(&path);
            answer(&Ready::Failed(error));
            return;
        }
    };
    answer(&Ready::Started);
    tracing::info!(socket = %path.display(), "session process started");
    let mut next_id: AttachmentId = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    let (reader, writer) = stream.into_split();
                    let reader = BufReader::with_capacity(READ_AHEAD, reader);
                    let task = connection(reader, writer, session.clone(), next_id);
                    tokio::spawn(task.in_current_span());
                }
                Err(error) => {
                    tracing::warn!(%error, "accept on the session socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Once the session task has ended and dropped its queue. (Not
            // its snapshot's `changed()`: this future is the runtime's
            // root, and each wake of it costs the process an eventfd write
            // and one more epoll_wait, on every output and keystroke.)
            () = session.messages.closed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("session ended; session process exits");
}

/// Bytes read ahead on a connection: frames (a keystroke's is 7 bytes)
/// then cost one recv(2) each, or one for several, instead of three; a
/// larger frame (a paste) is read around the buffer.
const READ_AHEAD: usize = 512;

/// A connection's reading half, buffered.
type Reader = BufReader<OwnedReadHalf>;

/// One connection: preambles, then the role its first frame opens (`id`
/// names it if it becomes an attachment). A peer that misbehaves (garbage,
/// another version, a bad frame) gets its connection closed and a line in
/// the log; the session carries on.
async fn connection(
    mut reader: Reader,
    mut writer: OwnedWriteHalf,
    session: Mailbox,
    id: AttachmentId,
) {
    let hello = {
        let info = session.info.borrow();
        Hello {
            id: info.id,
            owner: info.owner.clone(),
            name: info.name.clone(),
        }
    };
    if write_preamble(&mut writer, Some(&hello)).await.is_err() {
        return;
    }
    if let Err(error) = read_preamble(&mut reader).await {
        tracing::warn!(%error, "closed a connection on the session socket");
        return;
    }
    let open = match read_frame::<_, Open>(&mut reader).await {
        Ok(Some(open)) => open,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "closed a connection on the session socket");
            return;
        }
    };
    match open {
        Open::Control => control(reader, writer, &session).await,
        Open::Attach(request) => attachment(reader, writer, &session, id, request).await,
        Open::History(format) => history(writer, &session, format).await,
        Open::Signal(signal) => {
            let _ = session.messages.send(Message::Signal(signal)).await;
        }
        Open::Send(typed) => send(writer, &session, typed).await,
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
        && a.watchers == b.watchers
        && a.doing == b.doing
        && a.name == b.name
        && a.size == b.size
        && a.exit == b.exit
        && a.detached_at == b.detached_at
}

/// Pushes new snapshots (output alone at most every
/// [`OUTPUT_INFO_INTERVAL`]); forwards requests.
async fn control(reader: Reader, mut writer: OwnedWriteHalf, session: &Mailbox) {
    let mut info = session.info.clone();
    let push = async {
        loop {
            let sent = info.borrow_and_update().clone();
            if write_frame(&mut writer, &sent).await.is_err() {
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
        () = requests(reader, session) => {}
    }
}

/// Forwards requests from a control connection until it closes.
async fn requests(mut reader: Reader, session: &Mailbox) {
    loop {
        match read_frame::<_, ControlRequest>(&mut reader).await {
            Ok(Some(request)) => {
                if session
                    .messages
                    .send(Message::Control(request))
                    .await
                    .is_err()
                {
                    return;
                }
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
async fn history(mut writer: OwnedWriteHalf, session: &Mailbox, format: HistoryFormat) {
    let (reply, answer) = oneshot::channel();
    let asked = Message::History { format, reply };
    if session.messages.send(asked).await.is_err() {
        return;
    }
    let Ok(data) = answer.await else {
        return;
    };
    for chunk in data.chunks(HISTORY_CHUNK) {
        if write_frame(&mut writer, &data.slice_ref(chunk))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Types `typed` into the session; answers how it went.
async fn send(mut writer: OwnedWriteHalf, session: &Mailbox, typed: Vec<Typed>) {
    let (reply, answer) = oneshot::channel();
    if session
        .messages
        .send(Message::Send { typed, reply })
        .await
        .is_err()
    {
        return;
    }
    if let Ok(answer) = answer.await {
        let _ = write_frame(&mut writer, &answer).await;
    }
}

/// Bytes per frame of a history answer (frames are at most 1 MiB).
const HISTORY_CHUNK: usize = 64 * 1024;

/// Binds attachment `id`: its events go out as frames; typed bytes and
/// resizes come in. Closing either way detaches.
async fn attachment(
    reader: Reader,
    mut writer: OwnedWriteHalf,
    session: &Mailbox,
    id: AttachmentId,
    request: AttachRequest,
) {
    let (events_tx, mut events) = mpsc::channel(ATTACHMENT_QUEUE);
    let (reply, answer) = oneshot::channel();
    let attach = Message::Attach {
        id,
        request,
        events: events_tx,
        reply,
    };
    if session.messages.send(attach).await.is_err() {
        return;
    }
    let Ok(answer) = answer.await else {
        return;
    };
    if !matches!(answer, AttachReply::Attached { .. }) {
        let _ = write_frame(&mut writer, &answer).await;
        return; // refused: nothing was bound
    }
    if write_frame(&mut writer, &answer).await.is_err() {
        let _ = session.messages.send(Message::Detach { id }).await;
        return;
    }
    let pump = async {
        while let Some(event) = events.recv().await {
            if write_frame(&mut writer, &event).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = pump => {}
        () = feed(reader, session, id) => {}
    }
    let _ = session.messages.send(Message::Detach { id }).await;
}

/// Passes attachment `id`'s typed bytes and resizes to the session until
/// its connection closes.
async fn feed(mut reader: Reader, session: &Mailbox, id: AttachmentId) {
    let mut gate = InputGate::default();
    loop {
        match read_frame::<_, AttachInput>(&mut reader).await {
            Ok(Some(AttachInput::Typed(data))) => {
                gate.pass(&session.input, Input { id, data }, INPUT_STALL)
                    .await;
            }
            Ok(Some(AttachInput::Resize(size))) => {
                let _ = session.messages.send(Message::Resize { id, size }).await;
            }
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "closed an attachment's connection");
                return;
            }
        }
    }
}

/// How long input from one client may wait for a program that does not read
/// it. Waiting back-pressures the client (a paste into a busy program): this
/// task stops reading the connection. But it also holds up that client's
/// connection, which could then not even notice its own close; past this,
/// input is dropped until the program reads again.
const INPUT_STALL: Duration = Duration::from_secs(5);

/// One attachment's input-stall policy (see [`INPUT_STALL`]).
#[derive(Default)]
struct InputGate {
    /// Input is being dropped: the program stopped reading it for longer
    /// than the stall.
    overflowing: bool,
}

impl InputGate {
    /// Queues `input` for the session, waiting at most `stall` for room;
    /// while overflowing, drops it unless there is room at once.
    async fn pass(&mut self, queue: &mpsc::Sender<Input>, input: Input, stall: Duration) {
        let id = input.id;
        let input = match queue.try_send(input) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                self.overflowing = false;
                return;
            }
            Err(mpsc::error::TrySendError::Full(input)) => input,
        };
        if self.overflowing {
            return; // still not read: dropped
        }
        if tokio::time::timeout(stall, queue.send(input))
            .await
            .is_err()
        {
            self.overflowing = true;
            tracing::warn!(
                attachment = id,
                "the program has not read its input for {stall:?}; dropping input until it does"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn input(data: &'static [u8]) -> Input {
        Input {
            id: 1,
            data: Bytes::from_static(data),
        }
    }

    #[tokio::test]
    async fn input_to_a_program_that_never_reads_stalls_once_then_is_dropped() {
        // A queue nobody reads, as for a program that never reads its input.
        let (queue, _unread) = mpsc::channel(2);
        let stall = Duration::from_millis(200);
        let mut gate = InputGate::default();
        gate.pass(&queue, input(b"a"), stall).await;
        gate.pass(&queue, input(b"b"), stall).await;
        assert!(!gate.overflowing, "room for two");
        let started = tokio::time::Instant::now();
        gate.pass(&queue, input(b"c"), stall).await;
        assert!(gate.overflowing, "the third waited, then overflowed");
        assert!(started.elapsed() >= stall);
        // From now on input returns at once instead of holding up the client.
        let again = tokio::time::Instant::now();
        for _ in 0..100 {
            gate.pass(&queue, input(b"x"), stall).await;
        }
        assert!(
            again.elapsed() < stall,
            "dropping waited {:?}",
            again.elapsed()
        );
    }

    #[tokio::test]
    async fn input_flows_again_once_the_program_reads() {
        let (queue, mut program) = mpsc::channel(1);
        let stall = Duration::from_millis(50);
        let mut gate = InputGate::default();
        gate.pass(&queue, input(b"a"), stall).await;
        gate.pass(&queue, input(b"b"), stall).await;
        assert!(gate.overflowing);
        assert_eq!(&program.recv().await.expect("queued").data[..], b"a");
        gate.pass(&queue, input(b"c"), stall).await;
        assert!(!gate.overflowing);
        assert_eq!(&program.recv().await.expect("queued").data[..], b"c");
    }
}
