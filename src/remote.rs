//! How the front reaches a session: its process, over its Unix socket.
//!
//! [`SessionHandle`] keeps one control connection per session, on which the
//! session pushes its [`SessionInfo`] on every change and the front sends
//! [`ControlRequest`]s (`Rename`, `Kill`); each attachment opens a connection
//! of its own, which carries the events out and input and resizes in, and
//! detaches when it closes: the channel's task reads the events straight off
//! it ([`Events`]), with no queue or task in between. A session whose process
//! is gone (ended, or killed) closes its connections, and its handle reports
//! [`SessionHandle::is_gone`]. Messages and framing: [`crate::protocol::wire`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::protocol::host::{HostSpec, Ready, SpawnError, log_path, socket_path};
use crate::protocol::wire::{
    self, Hello, WireError, holds_frame, read_frame, read_preamble, write_frame, write_preamble,
};
use crate::protocol::{
    AttachInput, AttachReply, AttachRequest, ControlRequest, Event, ExitStatus, HistoryFormat,
    Open, PtySize, Refusal, SendReply, SessionInfo, SessionState, SignalName, Typed,
};

/// Requests queued for a session's control connection.
const REQUEST_QUEUE: usize = 64;
/// How long a new session process may take to answer [`Ready`].
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The program a session process runs by default: this very build, which
/// `/proc/self/exe` still is after its file was replaced (an upgrade).
pub const SELF_EXE: &str = "/proc/self/exe";
/// The name of the session-process executable, installed beside `keepsh`.
pub const SESSION_EXE: &str = "keepsh-session";
/// glibc's tunables for a session process (ld.so(8) "Tunables", glibc ≥
/// 2.34), so that an idle session holds only what it uses (BENCHMARKS.md,
/// "Memory"):
/// - `glibc.pthread.stack_cache_size=0`: glibc keeps an ended thread's
///   stack for the next thread, its top pages resident; a session
///   process's threads (the PTY reader of a flood, the history writer) end
///   when idle, and their stacks go with them.
/// - `glibc.malloc.tcache_count=0`: no per-thread cache of freed blocks
///   (up to 7 of each size to 1 KiB); `malloc_trim`, run when the session
///   is quiet, cannot give back what a cache holds (8 KiB measured).
/// - `glibc.malloc.arena_max=1`: the history writer allocates from the
///   main heap, which is trimmed, instead of an arena of its own whose
///   first page stays (4 KiB).
const SESSION_TUNABLES: &str =
    "glibc.pthread.stack_cache_size=0:glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1";

/// Why [`open_session_executable`] found no usable `keepsh-session`.
#[derive(Debug, thiserror::Error)]
pub enum SessionExeError {
    /// It is not there, or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// Where it was looked for.
        path: PathBuf,
        /// open(2)'s error.
        source: std::io::Error,
    },
    /// It does not run, or does not say its session protocol version.
    #[error("{path} does not say its session protocol version: {detail}")]
    Unrunnable {
        /// The executable.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// It is another build, speaking another session protocol.
    #[error("{path} speaks session protocol v{theirs}; this keepsh speaks v{ours}", ours = wire::VERSION)]
    Incompatible {
        /// The executable.
        path: PathBuf,
        /// Its version.
        theirs: String,
    },
}

/// Opens `keepsh-session` ([`SESSION_EXE`], the session process alone: no
/// SSH or crypto linked, and built without PIE so that its read-only data
/// needs no relocation, which made each session process ~400 KiB larger:
/// BENCHMARKS.md, "Memory") beside `server_exe`, and checks that it speaks
/// this build's session protocol (`keepsh-session wire-version`). The
/// server keeps the file open and starts sessions through
/// `/proc/self/fd/N`: replacing the file later (an upgrade) changes nothing
/// for this server, as with [`SELF_EXE`].
///
/// # Errors
/// [`SessionExeError`] when it is missing or another build; the server
/// then runs sessions with its own binary (`keepsh session-host`).
pub fn open_session_executable(server_exe: &Path) -> Result<std::fs::File, SessionExeError> {
    let path = server_exe.with_file_name(SESSION_EXE);
    let file = std::fs::File::open(&path).map_err(|source| SessionExeError::Open {
        path: path.clone(),
        source,
    })?;
    let unrunnable = |detail: String| SessionExeError::Unrunnable {
        path: path.clone(),
        detail,
    };
    let out = std::process::Command::new(fd_path(&file))
        .arg("wire-version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| unrunnable(e.to_string()))?;
    if !out.status.success() {
        return Err(unrunnable(out.status.to_string()));
    }
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match theirs.parse::<u16>() {
        Ok(version) if version == wire::VERSION => Ok(file),
        Ok(_) => Err(SessionExeError::Incompatible { path, theirs }),
        Err(_) => Err(unrunnable(format!("it answered {theirs:?}"))),
    }
}

/// `/proc/self/fd/N` for `file`: a path to exactly the file this process
/// holds open, whatever happened to its name since.
pub fn fd_path(file: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Bytes read ahead from an attachment's connection: several output
/// frames, so that what has arrived goes to the client as one message.
const EVENTS_READ_AHEAD: usize = 128 * 1024;

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The session process could not start the session (e.g. command not found).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The session process could not be started, or given its spec.
    #[error("cannot start the session process: {0}")]
    Launch(std::io::Error),
    /// It exited, or stayed silent for [`START_TIMEOUT`], without answering.
    #[error("the session process did not answer: {0}")]
    NoAnswer(&'static str),
    /// Its answer was not a [`Ready`] line.
    #[error("the session process answered garbage: {0}")]
    BadAnswer(serde_json::Error),
    /// It started but its socket cannot be used.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// Why an attach failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The session refused (e.g. `--from` outside the buffer).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Its socket cannot be used (the session process is gone or broken).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The session closed the connection without answering: it is ending.
    #[error("the session has ended")]
    Ended,
}

/// Why a session socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens on it: the session process is gone (a stale socket).
    #[error("no session process listens on {path}: {source}")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// connect(2)'s error.
        source: std::io::Error,
    },
    /// The session speaks another protocol version.
    #[error("session {who} speaks session protocol v{theirs}; this keepsh speaks v{ours}", who = hello.as_ref().map_or_else(|| "?".to_owned(), |h| h.id.to_string()), ours = wire::VERSION)]
    Incompatible {
        /// Its version.
        theirs: u16,
        /// Who it says it is.
        hello: Option<Box<Hello>>,
    },
    /// It broke the protocol or the connection failed.
    #[error("session socket {path}: {source}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        source: WireError,
    },
}

/// The front's handle on one session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    path: Arc<PathBuf>,
    requests: mpsc::Sender<ControlRequest>,
    info: watch::Receiver<SessionInfo>,
}

/// Starts a session process (`program session-host`, a keepsh binary) for
/// `spec` and connects to it. The process is detached: it outlives this server.
///
/// # Errors
/// [`StartError::Spawn`] with the error the session process reports (e.g.
/// command not found); the other [`StartError`]s when it cannot be started
/// or reached.
pub async fn start(
    program: &Path,
    state_dir: &Path,
    spec: &HostSpec,
) -> Result<SessionHandle, StartError> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(program);
    command
        .arg0("keepsh")
        .arg("session-host")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--session")
        .arg(spec.id.to_string())
        // glibc: blocks of 64 KiB and more are mmapped, and so given back
        // when freed. A redraw's scratch emulator (about 4 MB for 2,000
        // history lines of 80 columns) otherwise stays in the session
        // process's heap after the attach (the soak bench saw 3 MB per
        // session held). The program's environment is its own (cleared).
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .env("GLIBC_TUNABLES", SESSION_TUNABLES)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = crate::child::Child::spawn(&mut command).map_err(StartError::Launch)?;
    let json = serde_json::to_vec(spec).map_err(StartError::BadAnswer)?;
    let pipes = child.stdin().and_then(|i| Ok((i, child.stdout()?)));
    let (Some(mut stdin), Some(stdout)) = pipes.map_err(StartError::Launch)? else {
        return Err(StartError::NoAnswer("no stdin or stdout"));
    };
    stdin.write_all(&json).await.map_err(StartError::Launch)?;
    drop(stdin);
    let log = log_path(state_dir, spec.id);
    tracing::info!(session = %spec.id, log = %log.display(), "session process started");
    let mut line = String::new();
    let answered =
        tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    // Reap it whenever it ends (through its pidfd: one descriptor in the
    // server per live session process); it is not killed with this handle.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    match answered {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => return Err(StartError::NoAnswer("it exited")),
        Ok(Err(e)) => return Err(StartError::Launch(e)),
        Err(_) => return Err(StartError::NoAnswer("timed out")),
    }
    match serde_json::from_str::<Ready>(&line).map_err(StartError::BadAnswer)? {
        Ready::Started => {}
        Ready::Failed(error) => return Err(error.into()),
    }
    Ok(connect(&socket_path(state_dir, spec.id)).await?)
}

/// Connects to the session listening on `path`.
///
/// # Errors
/// [`ConnectError`]: unreachable (stale socket), incompatible, or broken.
pub async fn connect(path: &Path) -> Result<SessionHandle, ConnectError> {
    let broken = |source: WireError| ConnectError::Protocol {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ConnectError::Unreachable {
            path: path.to_owned(),
            source,
        })?;
    let (mut reader, mut writer) = stream.into_split();
    handshake(&mut reader, &mut writer, path).await?;
    write_frame(&mut writer, &Open::Control)
        .await
        .map_err(broken)?;
    let first = match read_frame::<_, SessionInfo>(&mut reader).await {
        Ok(Some(info)) => info,
        Ok(None) => return Err(broken(WireError::Truncated)),
        Err(e) => return Err(broken(e)),
    };
    let span = tracing::info_span!("session", id = %first.id);
    let (publish, info) = watch::channel(first);
    let (requests, requests_rx) = mpsc::channel::<ControlRequest>(REQUEST_QUEUE);
    let control = control(reader, writer, publish, requests_rx, path.to_owned());
    tokio::spawn(control.instrument(span));
    Ok(SessionHandle {
        path: Arc::new(path.to_owned()),
        requests,
        info,
    })
}

/// A session's control connection: publishes the snapshots it pushes and
/// sends the requests queued for it, until either side ends; then the
/// handle is gone (`publish` dropped), and `socket` removed if stale.
async fn control(
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    publish: watch::Sender<SessionInfo>,
    mut requests: mpsc::Receiver<ControlRequest>,
    socket: PathBuf,
) {
    let reading = async {
        loop {
            match read_frame::<_, SessionInfo>(&mut reader).await {
                Ok(Some(info)) => {
                    publish.send_replace(info);
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "session's control connection failed");
                    return;
                }
            }
        }
    };
    let writing = async {
        while let Some(request) = requests.recv().await {
            if write_frame(&mut writer, &request).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reading => {}
        () = writing => {}
    }
    drop(publish);
    // If the process died without removing its socket (kill -9), remove it now.
    remove_if_stale(&socket).await;
}

/// Removes `socket` if no session process serves it any more. A dying
/// process may still accept a connection for a moment (its listener closes
/// after the connection we saw end), so a connection that yields no preamble
/// is retried, a few times, 50 ms apart.
async fn remove_if_stale(socket: &Path) {
    for _ in 0..20 {
        match UnixStream::connect(socket).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!("session process gone; removed its stale socket");
                let _ = std::fs::remove_file(socket);
                return;
            }
            // Removed by the process itself, or something we cannot judge.
            Err(_) => return,
            Ok(mut stream) => {
                let answered =
                    tokio::time::timeout(Duration::from_millis(500), read_preamble(&mut stream))
                        .await;
                if matches!(answered, Ok(Ok(_) | Err(WireError::Version { .. }))) {
                    return; // a live session process answers there
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Exchanges preambles.
async fn handshake(
    reader: &mut tokio::net::unix::OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
    path: &Path,
) -> Result<Hello, ConnectError> {
    let broken = |source: WireError| ConnectError::Protocol {
        path: path.to_owned(),
        source,
    };
    // The session speaks first: its preamble is read even from a session
    // that closes on ours (another version).
    let hello = match read_preamble(reader).await {
        Ok(Some(hello)) => hello,
        Ok(None) => return Err(broken(WireError::BadPreamble)),
        Err(WireError::Version { theirs, hello }) => {
            return Err(ConnectError::Incompatible { theirs, hello });
        }
        Err(e) => return Err(broken(e)),
    };
    write_preamble(writer, None).await.map_err(broken)?;
    Ok(hello)
}

impl SessionHandle {
    /// The latest snapshot the session pushed; never waits.
    pub fn info(&self) -> SessionInfo {
        self.info.borrow().clone()
    }

    /// True once the session's process has ended (or its connection broke).
    pub fn is_gone(&self) -> bool {
        self.info.has_changed().is_err()
    }

    /// Sends a control request. A request to a gone session is dropped: the
    /// caller learns of it from [`SessionHandle::is_gone`].
    pub async fn send(&self, request: ControlRequest) {
        let _ = self.requests.send(request).await;
    }

    /// Waits until the session's program has exited or the session is gone,
    /// at most `limit`. Returns whether it did.
    pub async fn wait_exited(&self, limit: Duration) -> bool {
        let mut info = self.info.clone();
        let exited = info.wait_for(|i| i.state == SessionState::Exited);
        tokio::time::timeout(limit, exited).await.is_ok()
    }

    /// Waits until the session's process has ended (its control connection
    /// closed), at most `limit`. Returns whether it did.
    pub async fn wait_gone(&self, limit: Duration) -> bool {
        let mut info = self.info.clone();
        let gone = async { while info.changed().await.is_ok() {} };
        tokio::time::timeout(limit, gone).await.is_ok()
    }

    /// Waits until the session's program has exited: how it ended; `None`
    /// if the session went away first.
    pub async fn exit_status(&self) -> Option<ExitStatus> {
        let mut info = self.info.clone();
        let exited = info.wait_for(|i| i.exit.is_some()).await.ok()?;
        exited.exit.clone()
    }

    /// Opens a connection of its own for `role`.
    async fn open(&self, role: &Open) -> Result<(OwnedReadHalf, OwnedWriteHalf), ConnectError> {
        let path = &*self.path;
        let stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ConnectError::Unreachable {
                    path: path.clone(),
                    source,
                })?;
        let (mut reader, mut writer) = stream.into_split();
        handshake(&mut reader, &mut writer, path).await?;
        write_frame(&mut writer, role)
            .await
            .map_err(|source| self.broken(source))?;
        Ok((reader, writer))
    }

    fn broken(&self, source: WireError) -> ConnectError {
        ConnectError::Protocol {
            path: (*self.path).clone(),
            source,
        }
    }

    /// What the session holds of its past (`history REF [--raw]`), read on a
    /// connection of its own: at most the ring buffer's capacity in bytes.
    ///
    /// # Errors
    /// [`ConnectError`] if the session cannot be reached or its answer
    /// breaks off.
    pub async fn history(&self, format: HistoryFormat) -> Result<Bytes, ConnectError> {
        let (mut reader, _writer) = self.open(&Open::History(format)).await?;
        let mut answer = BytesMut::new();
        loop {
            match read_frame::<_, Bytes>(&mut reader).await {
                Ok(Some(data)) => answer.extend_from_slice(&data),
                Ok(None) => return Ok(answer.freeze()),
                Err(source) => return Err(self.broken(source)),
            }
        }
    }

    /// Delivers `signal` to the session's foreground process group, on a
    /// connection of its own that closes at once.
    ///
    /// # Errors
    /// [`ConnectError`] if the session cannot be reached.
    pub async fn signal(&self, signal: SignalName) -> Result<(), ConnectError> {
        self.open(&Open::Signal(signal)).await.map(drop)
    }

    /// Types `typed` into the session (`send`), on a connection of its own.
    ///
    /// # Errors
    /// [`ConnectError`] if the session cannot be reached or closed without
    /// answering.
    pub async fn type_in(&self, typed: Vec<Typed>) -> Result<SendReply, ConnectError> {
        let (mut reader, _writer) = self.open(&Open::Send(typed)).await?;
        match read_frame::<_, SendReply>(&mut reader).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(self.broken(WireError::Truncated)),
            Err(source) => Err(self.broken(source)),
        }
    }

    /// Binds a new attachment on a connection of its own. Its events (replay,
    /// then live output, then `Exited`) are read from [`Attachment::events`].
    ///
    /// # Errors
    /// [`AttachError::Refused`] with the session's reason,
    /// [`AttachError::Connect`] if the session cannot be reached, or
    /// [`AttachError::Ended`] if it closed without answering.
    pub async fn attach(&self, request: AttachRequest) -> Result<Attachment, AttachError> {
        let read_only = request.read_only;
        let (reader, writer) = self.open(&Open::Attach(request)).await?;
        let mut reader = BufReader::with_capacity(EVENTS_READ_AHEAD, reader);
        match read_frame::<_, AttachReply>(&mut reader).await {
            Ok(Some(AttachReply::Attached { .. })) => {}
            Ok(Some(AttachReply::Refused(refusal))) => return Err(refusal.into()),
            Ok(None) => return Err(AttachError::Ended),
            Err(source) => return Err(self.broken(source).into()),
        }
        Ok(Attachment {
            events: Events { reader },
            control: AttachmentControl { read_only, writer },
        })
    }
}

/// A bound attachment: the events to forward to the client, and the control
/// side for input and resizes.
pub struct Attachment {
    /// Output and the final `Exited`, in order.
    pub events: Events,
    /// Input, resizes; dropping it (or `events`) detaches.
    pub control: AttachmentControl,
}

/// An attachment's events, read off its connection as the client takes
/// them: while the client does not, the session's queue for it fills and
/// the session catches it up or redraws it later (it never waits).
pub struct Events {
    reader: BufReader<OwnedReadHalf>,
}

impl Events {
    /// The next event; `None` once the session closed the connection (it
    /// ended or detached this attachment) or broke the protocol (logged).
    pub async fn next(&mut self) -> Option<Event> {
        match read_frame::<_, Event>(&mut self.reader).await {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "attachment's connection failed");
                None
            }
        }
    }

    /// The next event if it has already arrived whole, without waiting.
    pub async fn next_if_arrived(&mut self) -> Option<Event> {
        if holds_frame(self.reader.buffer()) {
            self.next().await
        } else {
            None
        }
    }
}

/// The client-to-session side of an attachment. Dropping it closes the
/// connection's sending side, which detaches.
pub struct AttachmentControl {
    read_only: bool,
    writer: OwnedWriteHalf,
}

impl AttachmentControl {
    /// Forwards typed bytes. While the program does not read its input the
    /// session stops reading this connection, back-pressuring this client
    /// only, for at most 5 s; after that the session drops input until the
    /// program reads again. Input of a read-only attachment is dropped here.
    pub async fn input(&mut self, data: Bytes) {
        if self.read_only {
            return;
        }
        let _ = write_frame(&mut self.writer, &AttachInput::Typed(data)).await;
    }

    /// The client's window changed.
    pub async fn resize(&mut self, size: PtySize) {
        let _ = write_frame(&mut self.writer, &AttachInput::Resize(size)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `keepsh-session` that is missing, or does not answer with this
    /// build's version, is refused with a message naming it.
    #[test]
    fn a_session_executable_of_another_build_is_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = dir.path().join("keepsh");
        let missing = open_session_executable(&server).expect_err("missing");
        assert!(matches!(missing, SessionExeError::Open { .. }), "{missing}");
        // echo(1) answers `wire-version` with those words, not a version.
        std::os::unix::fs::symlink("/bin/echo", dir.path().join(SESSION_EXE)).expect("symlink");
        let other = open_session_executable(&server).expect_err("another program");
        let message = other.to_string();
        assert!(
            matches!(other, SessionExeError::Unrunnable { .. }),
            "{message}"
        );
        assert!(
            message.ends_with("keepsh-session does not say its session protocol version: it answered \"wire-version\""),
            "{message}"
        );
    }
}
