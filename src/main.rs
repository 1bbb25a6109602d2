//! The `keepsh` binary: CLI, logging, configuration, serve. Nothing else.

use std::io::Read;
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

fn session_host(state_dir: &Path, session: &str) -> anyhow::Result<()> {
    keepsh::logging::to_session_file(state_dir, session);
    keepsh::session::host::run(state_dir, session)?;
    Ok(())
}

fn serve(path: &Path) -> anyhow::Result<()> {
    keepsh::logging::to_stderr();
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
        host_program: session_executable(),
        program_open_files,
    };
    keepsh::server::startup::serve(config, launch, shutdown_signal()).await?;
    Ok(())
}

/// The program session processes run: `keepsh-session` beside this binary,
/// held open for the server's lifetime; else this binary itself.
fn session_executable() -> PathBuf {
    let opened = std::env::current_exe()
        .map_err(|e| e.to_string())
        .and_then(|exe| keepsh::remote::open_session_executable(&exe).map_err(|e| e.to_string()));
    match opened {
        Ok(file) => {
            let path = keepsh::remote::fd_path(&file);
            // Open until the process ends: sessions start through its path.
            std::mem::forget(file);
            path
        }
        Err(why) => {
            tracing::warn!("sessions run as `keepsh session-host`, larger in memory: {why}");
            PathBuf::from(keepsh::remote::SELF_EXE)
        }
    }
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

/// SIGTERM or SIGINT (Ctrl-C), caught by signal-hook and waited for on a
/// thread of its own (tokio's signal handling is not compiled in: it would
/// cost every session process its signal registry; see `keepsh::child`).
async fn shutdown_signal() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) else {
        return std::future::pending().await;
    };
    let (caught, signal) = tokio::sync::oneshot::channel();
    let waiter = std::thread::Builder::new()
        .name("keepsh-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = caught.send(());
            }
        });
    if waiter.is_err() || signal.await.is_err() {
        std::future::pending::<()>().await;
    }
}
