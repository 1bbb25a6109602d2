//! Where keepsh's two executables log: the server to stderr, a session
//! process to a file of its own that outlives the server. Both are filtered
//! by `KEEPSH_LOG` (tracing-subscriber's `EnvFilter` syntax; default
//! `info,russh=warn`).

use std::io::IsTerminal;
use std::path::Path;

/// Bytes a session process's log file grows to before it is rotated (one
/// older file is kept: at most twice this per session).
const SESSION_LOG_BYTES: usize = 1024 * 1024;

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("KEEPSH_LOG")
        .unwrap_or_else(|_| "info,russh=warn".into())
}

/// Logs to stderr, with colours when it is a terminal.
pub fn to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A session process logs to `STATE/logs/ID.log` (0600 in a 0700
/// directory, rotated at [`SESSION_LOG_BYTES`]): it outlives the server
/// whose stderr it inherited. If `session` is not a session id or the file
/// cannot be opened, to that stderr.
pub fn to_session_file(state_dir: &Path, session: &str) {
    use file_rotate::{ContentLimit, FileRotate, compression::Compression, suffix::AppendCount};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let id = serde_json::Value::String(session.to_owned());
    let Ok(id) = serde_json::from_value::<crate::protocol::SessionId>(id) else {
        return to_stderr();
    };
    let dir = crate::protocol::host::logs_dir(state_dir);
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    let path = crate::protocol::host::log_path(state_dir, id);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true).mode(0o600);
    if made.is_err() || options.open(&path).is_err() {
        return to_stderr();
    }
    let file = FileRotate::new(
        &path,
        AppendCount::new(1),
        ContentLimit::BytesSurpassed(SESSION_LOG_BYTES),
        Compression::None,
        Some(options),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
}
