//! The `keepsh` binary: CLI, logging, configuration, serve. Nothing else.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use keepsh::auth::hash_password;
use keepsh::config::Config;
use keepsh::server::startup::Launch;

#[derive(Parser)]
#[command(
    name = "keepsh",
    version,
    about = "An SSH server whose shells outlive the connection"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, default_value = "server.toml", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print an argon2id hash of the password read from stdin, for `password_hash`.
    HashPassword,
    /// Validate a configuration file; exit 0 if valid, 1 if not.
    CheckConfig {
        /// The file (default: --config).
        path: Option<PathBuf>,
    },
    /// Run one session's process (started by the server; see
    /// `session::host`). Reads its spec on stdin.
    #[command(hide = true)]
    SessionHost {
        /// The server's state directory (its `sessions/` holds the socket).
        #[arg(long)]
        state_dir: PathBuf,
        /// The session's id, so that `ps` shows which session this is.
        #[arg(long)]
        session: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::HashPassword) => hash_password_command(),
        Some(Cmd::CheckConfig { path }) => check_config(path.as_deref().unwrap_or(&cli.config)),
        Some(Cmd::SessionHost { state_dir, session }) => session_host(&state_dir, &session),
        None => serve(&cli.config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keepsh: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn hash_password_command() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("empty password (pipe it in: echo 'secret' | keepsh hash-password)");
    }
    println!("{}", hash_password(password)?);
    Ok(())
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if let Some(warning) = keepsh::strict_modes::check_config(path, &config)? {
        eprintln!("keepsh: warning: {warning}");
    }
    println!(
        "{}: ok ({} user(s), listening on {})",
        path.display(),
        config.users.len(),
        config
            .server
            .listen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Logs to stderr, filtered by KEEPSH_LOG (default `info,russh=warn`).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEEPSH_LOG")
                .unwrap_or_else(|_| "info,russh=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn session_host(state_dir: &Path, session: &str) -> anyhow::Result<()> {
    init_session_logging(state_dir, session);
    keepsh::session::host::run(state_dir, session)?;
    Ok(())
}

/// Bytes a session process's log file grows to before it is rotated (one
/// older file is kept: at most twice this per session).
const SESSION_LOG_BYTES: usize = 1024 * 1024;

/// A session process logs to `STATE/logs/ID.log` (0600 in a 0700
/// directory, rotated at [`SESSION_LOG_BYTES`]), filtered by KEEPSH_LOG as
/// the server's: it outlives the server whose stderr it inherited. If the
/// file cannot be opened, to that stderr.
fn init_session_logging(state_dir: &Path, session: &str) {
    use file_rotate::{ContentLimit, FileRotate, compression::Compression, suffix::AppendCount};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let id = serde_json::Value::String(session.to_owned());
    let Ok(id) = serde_json::from_value::<keepsh::protocol::SessionId>(id) else {
        return init_logging();
    };
    let dir = keepsh::protocol::host::logs_dir(state_dir);
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    let path = keepsh::protocol::host::log_path(state_dir, id);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).create(true).append(true).mode(0o600);
    if made.is_err() || options.open(&path).is_err() {
        return init_logging();
    }
    let file = FileRotate::new(
        &path,
        AppendCount::new(1),
        ContentLimit::BytesSurpassed(SESSION_LOG_BYTES),
        Compression::None,
        Some(options),
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEEPSH_LOG")
                .unwrap_or_else(|_| "info,russh=warn".into()),
        )
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
}

fn serve(path: &Path) -> anyhow::Result<()> {
    init_logging();
    close_inherited_fds_on_exec();
    let config = Config::load(path)?;
    // sshd_config(5) StrictModes: nothing others could change is trusted.
    if let Some(warning) = keepsh::strict_modes::check_config(path, &config)? {
        tracing::warn!("{warning}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve_async(config))
}

async fn serve_async(config: Config) -> anyhow::Result<()> {
    // Before anything opens sockets (discovery holds one per session).
    let program_open_files = raise_open_files_limit();
    let launch = Launch {
        host_program: PathBuf::from(keepsh::remote::SELF_EXE),
        program_open_files,
    };
    keepsh::server::startup::serve(config, launch, shutdown_signal()).await?;
    Ok(())
}

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard one: the
/// server holds a socket per session and one more per attached channel, so
/// 1,000 sessions need more than the common soft limit of 1,024. Returns the
/// soft limit it had, for session programs to start with (some still use
/// select(2), which cannot handle descriptors above 1,023), or `None` if
/// nothing changed.
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) if soft < hard => Some(hard),
        (Some(_), None) => None, // hard limit "unlimited": leave as is
        _ => return None,
    }?;
    let new = Rlimit {
        current: Some(raised),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => {
            tracing::info!(from = ?limit.current, to = raised, "raised the open files limit");
            limit.current
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open files limit; fewer sessions can be served");
            None
        }
    }
}

/// Marks every descriptor keepsh inherited beyond stdin, stdout and stderr
/// close-on-exec, so session programs get their terminal and nothing of
/// whoever started keepsh (sshd calls closefrom(3) at start for the same
/// reason). Descriptors keepsh opens itself are close-on-exec already.
fn close_inherited_fds_on_exec() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        tracing::warn!("cannot list /proc/self/fd; inherited descriptors may reach sessions");
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // EBADF: the directory listing's own descriptor, closed by now.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
