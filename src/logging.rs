//! Where keepsh's two executables log: the server to stderr, a session
//! process to a file of its own that outlives the server. Both are filtered
//! by `KEEPSH_LOG` (default `info,russh=warn`): the server takes
//! tracing-subscriber's `EnvFilter` syntax, a session process its
//! `target=level` directives (env_logger's syntax, which is that subset).
//!
//! A session process sets no tracing subscriber: its `tracing` events
//! reach `log` (tracing's `log` feature) and env_logger writes them, which
//! spares it tracing-subscriber's span registry (33 KiB per process, a
//! thousand processes on a busy host). Its session span is logged once,
//! with its fields, when it is created.

use std::io::IsTerminal;
use std::path::Path;

/// Bytes a session process's log file grows to before it is rotated (one
/// older file is kept: at most twice this per session).
const SESSION_LOG_BYTES: usize = 1024 * 1024;

/// The filter's environment variable, and what it is when unset.
const FILTER_VAR: &str = "KEEPSH_LOG";
const DEFAULT_FILTER: &str = "info,russh=warn";

/// tracing's `log` feature logs every entry to and exit from a span under
/// this target: each poll of a session's task. Always off.
const SPAN_ACTIVITY: &str = "tracing::span::active=off";

fn filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env(FILTER_VAR)
        .unwrap_or_else(|_| DEFAULT_FILTER.into())
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
/// whose stderr it inherited. Lines are `TIME LEVEL TARGET: MESSAGE`, TIME
/// in RFC 3339 (UTC, microseconds). If `session` is not a session id or
/// the file cannot be opened, to that stderr.
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
    let filter = std::env::var(FILTER_VAR).unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let logged = env_logger::Builder::new()
        .parse_filters(&format!("{filter},{SPAN_ACTIVITY}"))
        .target(env_logger::Target::Pipe(Box::new(file)))
        .format(|out, record| {
            use std::io::Write;
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            let (level, target) = (record.level(), record.target());
            writeln!(out, "{now} {level:>5} {target}: {}", record.args())
        })
        .try_init();
    if logged.is_err() {
        to_stderr();
    }
}
