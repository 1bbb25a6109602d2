//! What the server gives a new session process and hears back: the
//! contract of `keepsh session-host`.
//!
//! The server starts the process with a [`HostSpec`] as JSON on its stdin;
//! the process binds its socket ([`socket_path`], mode 0600), starts the
//! program and answers one [`Ready`] line (JSON) on stdout, then serves
//! [`super::wire`] on that socket until the session ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PtySize, SessionId, SessionName};

/// The directory of session sockets inside `state_dir`: `STATE/sessions`.
pub fn sessions_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sessions")
}

/// The socket of session `id`: `STATE/sessions/ID.sock`.
pub fn socket_path(state_dir: &Path, id: SessionId) -> PathBuf {
    sessions_dir(state_dir).join(format!("{id}.sock"))
}

/// The output of session `id` on disk: `STATE/sessions/ID.history`, the
/// segment before it [`older_history_path`] (see `session::history_file`).
pub fn history_path(state_dir: &Path, id: SessionId) -> PathBuf {
    sessions_dir(state_dir).join(format!("{id}.history"))
}

/// The older segment of session `id`'s history: `ID.history.1`.
pub fn older_history_path(state_dir: &Path, id: SessionId) -> PathBuf {
    sessions_dir(state_dir).join(format!("{id}.history.1"))
}

/// The output session `id`'s history files hold, oldest first (the older
/// segment, then the current one); empty if there are none.
///
/// # Errors
/// A file exists but cannot be read.
pub fn read_history(state_dir: &Path, id: SessionId) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for segment in [
        older_history_path(state_dir, id),
        history_path(state_dir, id),
    ] {
        match std::fs::read(&segment) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(out)
}

/// Removes session `id`'s history and metadata files (those that exist).
pub fn remove_history(state_dir: &Path, id: SessionId) {
    for path in [
        history_path(state_dir, id),
        older_history_path(state_dir, id),
        meta_path(state_dir, id),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

/// What is known of session `id` beside its history:
/// `STATE/sessions/ID.meta.json` (a [`SessionMeta`]).
pub fn meta_path(state_dir: &Path, id: SessionId) -> PathBuf {
    sessions_dir(state_dir).join(format!("{id}.meta.json"))
}

/// Where session processes write their logs: `STATE/logs`.
pub fn logs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The log of session `id`'s process: `STATE/logs/ID.log` (the one before
/// it, once it reached its cap, `ID.log.1`).
pub fn log_path(state_dir: &Path, id: SessionId) -> PathBuf {
    logs_dir(state_dir).join(format!("{id}.log"))
}

/// What the server asks a session process to run (its stdin, JSON).
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
    /// `restart`: the session's history files are there from before; its
    /// output starts with theirs (the ring buffer and the screen get the
    /// last of it) and goes on in them.
    #[serde(default)]
    pub resume: bool,
}

/// What to run in a new PTY.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// `argv`; empty means the login shell `shell` (started with argv[0]
    /// `-NAME`, as sshd and login(1) do).
    pub command: Vec<String>,
    /// The user's shell, for a shell request and as `$SHELL`.
    pub shell: PathBuf,
    /// The child's complete environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Initial window.
    pub size: PtySize,
    /// Bytes the session's output starts with, before the program's: a
    /// notice from keepsh (see `front::channel::shell_notice`); kept in the
    /// ring buffer and the screen like output. Usually empty.
    #[serde(default)]
    pub preface: String,
}

/// Per-session limits and timers, from `[sessions]` in server.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSettings {
    /// Ring buffer capacity in bytes.
    pub scrollback_bytes: usize,
    /// Most history lines sent before the screen on attach, and printed by
    /// `history`.
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
    /// `[notify]`: what to run when the session needs its user.
    #[serde(default)]
    pub notify: Option<NotifySpec>,
    /// A terminal that attaches after output came while no client was
    /// attached gets a "while you were away" line (`away_summary`).
    #[serde(default = "yes")]
    pub away_summary: bool,
    /// Bytes of output kept on disk (`history_file_bytes`); 0: none.
    #[serde(default)]
    pub history_file_bytes: u64,
}

fn yes() -> bool {
    true
}

/// A session as its metadata file records it (JSON, replaced with write
/// and rename when it changes): enough to list it, and to start its
/// command again, after its process is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The session's id.
    pub id: SessionId,
    /// Its name.
    pub name: SessionName,
    /// The SSH login name that owns it.
    pub owner: String,
    /// The command line it runs (the shell for a shell request).
    pub command: Vec<String>,
    /// `TERM` of its program, if it had one.
    pub term: Option<String>,
    /// The working directory: the foreground process's last known one,
    /// else where the program started.
    pub cwd: PathBuf,
    /// Its PTY size.
    pub size: PtySize,
    /// When it was created.
    pub created: std::time::SystemTime,
    /// Its last output or input (written at most every few seconds).
    pub last_activity: std::time::SystemTime,
    /// Bytes of output produced in all (the history file holds the last ones).
    pub output_offset: u64,
    /// How its program ended, once it has.
    pub exit: Option<super::ExitStatus>,
}

/// `[notify]` as a session process runs it (see `session::notify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifySpec {
    /// `argv` of the command, run without a shell.
    pub command: Vec<String>,
    /// At most one run per session per this long.
    pub min_interval: Duration,
}

/// The session process's one-line answer (its stdout, JSON).
#[derive(Debug, Serialize, Deserialize)]
pub enum Ready {
    /// Listening, program started.
    Started,
    /// Nothing was started.
    Failed(SpawnError),
}

/// Why a session process could not start its session.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum SpawnError {
    /// openpty(3) failed (e.g. out of PTYs).
    #[error("cannot open a PTY: {0}")]
    OpenPty(String),
    /// The program is not an executable file, or not found in the PATH.
    #[error("command not found: '{0}'")]
    NotFound(String),
    /// The program could not be executed.
    #[error("cannot start '{program}': {reason}")]
    Exec {
        /// argv[0].
        program: String,
        /// The OS's reason.
        reason: String,
    },
    /// The session's socket could not be bound.
    #[error("cannot listen on {path}: {reason}")]
    Listen {
        /// The socket's path.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
}
