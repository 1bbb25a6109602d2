//! The server's private state directory: created with mode 0700 (or
//! refused when others may enter it, like tmux's socket directory), locked
//! for one server at a time, and searched for the sessions that outlived
//! the previous server. Its layout (`sessions/ID.sock`) is part of the
//! session-process contract, [`crate::protocol::host`].

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::host::{logs_dir, sessions_dir};
use crate::protocol::wire::{self, Hello};
use crate::protocol::{PtySize, SessionInfo, SessionState};
use crate::remote::{ConnectError, SessionHandle, connect};

/// How long a session socket found at start may take to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// It (or `sessions/` in it) could not be created or read.
    #[error("state directory {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Group or others may enter it.
    #[error(
        "state directory {path} is accessible by others (mode {mode:o}) (run: chmod 700 {path})"
    )]
    Permissions {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another server holds its lock.
    #[error(
        "state directory {0} is in use by another keepsh server (stop that one, or give this one another state_dir)"
    )]
    InUse(PathBuf),
}

/// An open, locked state directory. The lock (an exclusive flock(2) on
/// `server.lock`, close-on-exec so sessions do not inherit it) is held
/// until this is dropped: two servers on one directory would both adopt its
/// sessions.
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates (0700) or checks `path` and its `sessions/`, and locks it.
    ///
    /// # Errors
    /// [`StateDirError`]: it cannot be created, others may enter it, or
    /// another server holds it.
    pub fn open(path: &Path) -> Result<StateDir, StateDirError> {
        private_dir(path)?;
        let lock = lock(path)?;
        // Session processes get it absolute: they outlive this server's cwd.
        let path = std::fs::canonicalize(path).map_err(|source| StateDirError::Io {
            path: path.to_owned(),
            source,
        })?;
        private_dir(&sessions_dir(&path))?;
        Ok(StateDir { path, _lock: lock })
    }

    /// Its absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connects to the sessions that outlived the previous server.
    pub async fn discover(&self) -> Discovery {
        discover(&self.path).await
    }
}

/// Creates `dir` with mode 0700, or checks an existing one is private.
fn private_dir(dir: &Path) -> Result<(), StateDirError> {
    let io = |source| StateDirError::Io {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateDirError::Permissions {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn lock(dir: &Path) -> Result<File, StateDirError> {
    let path = dir.join("server.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StateDirError::Io {
            path: path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| StateDirError::InUse(dir.to_owned()))?;
    Ok(file)
}

/// The sessions found in a state directory at start.
#[derive(Default)]
pub struct Discovery {
    /// Running sessions, connected.
    pub live: Vec<SessionHandle>,
    /// Sessions speaking another protocol version, as `list` shows them.
    pub incompatible: Vec<SessionInfo>,
    /// Sockets nobody listened on any more; removed.
    pub stale: usize,
}

/// Connects to every session socket in `state_dir/sessions/`: live ones are
/// returned, stale ones (their process is gone) removed, incompatible ones
/// described for `list` and logged.
async fn discover(state_dir: &Path) -> Discovery {
    let mut found = Discovery::default();
    let dir = sessions_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&path)).await;
        match connected {
            Ok(Ok(handle)) => found.live.push(handle),
            Ok(Err(ConnectError::Unreachable { .. })) => {
                tracing::info!(socket = %path.display(), "removing the stale socket of a session process that is gone");
                let _ = std::fs::remove_file(&path);
                found.stale += 1;
            }
            Ok(Err(error @ ConnectError::Incompatible { .. })) => {
                tracing::warn!(%error, "session left running but unusable; attach to it with a keepsh of its version, or kill its process");
                if let ConnectError::Incompatible {
                    theirs,
                    hello: Some(hello),
                } = error
                {
                    found
                        .incompatible
                        .push(incompatible_info(*hello, theirs, &path));
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "session socket skipped"),
            Err(_) => {
                tracing::warn!(socket = %path.display(), "session socket did not answer; skipped")
            }
        }
    }
    prune_logs(state_dir, LOG_RETENTION);
    found
}

/// How long the log of a session that has ended is kept.
const LOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes the logs (`logs/ID.log`, `ID.log.1`) of sessions that have no
/// socket any more and were last written more than `retention` ago.
fn prune_logs(state_dir: &Path, retention: Duration) {
    let Ok(entries) = std::fs::read_dir(logs_dir(state_dir)) else {
        return;
    };
    let sessions = sessions_dir(state_dir);
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.split('.').next() else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > retention);
        if old && !sessions.join(format!("{id}.sock")).exists() {
            tracing::info!(log = %path.display(), "removing the log of a session that ended a while ago");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// What `list` shows of a session that speaks protocol `theirs`.
fn incompatible_info(hello: Hello, theirs: u16, path: &Path) -> SessionInfo {
    let created = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now());
    SessionInfo {
        id: hello.id,
        name: hello.name,
        owner: hello.owner,
        state: SessionState::Incompatible,
        clients: 0,
        created,
        last_activity: created,
        detached_at: None,
        size: PtySize::DEFAULT,
        command: vec![format!(
            "(speaks session protocol v{theirs}; this keepsh speaks v{})",
            wire::VERSION
        )],
        exit: None,
        output_offset: 0,
        watchers: 0,
        doing: Default::default(),
        buffer_start: 0,
        history_on_disk: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_logs_of_sessions_without_a_socket_are_removed_and_others_kept() {
        let state = tempfile::tempdir().expect("tempdir");
        let (logs, sessions) = (logs_dir(state.path()), sessions_dir(state.path()));
        std::fs::create_dir_all(&logs).expect("logs");
        std::fs::create_dir_all(&sessions).expect("sessions");
        for file in ["gone.log", "gone.log.1", "live.log"] {
            std::fs::write(logs.join(file), "line\n").expect("write");
        }
        std::fs::write(sessions.join("live.sock"), "").expect("socket stand-in");
        prune_logs(state.path(), Duration::from_secs(3600));
        assert!(logs.join("gone.log").exists(), "recent: kept");
        prune_logs(state.path(), Duration::ZERO);
        assert!(!logs.join("gone.log").exists() && !logs.join("gone.log.1").exists());
        assert!(
            logs.join("live.log").exists(),
            "its session still has a socket"
        );
    }
}
