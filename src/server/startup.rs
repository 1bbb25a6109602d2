//! Starting to serve a configuration: everything between a validated
//! `Config` and the accept loops (mini-redis's `server::run(listener,
//! shutdown)`), so that the binary and a test run the same server; the
//! session-host program is a parameter ([`Launch`]) for that reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;

use crate::auth::{AuthError, Authenticator, User};
use crate::config::{Config, DEFAULT_SFTP_SERVER};
use crate::front::{AttachedChannels, Shared};
use crate::keys::{self, KeyError};
use crate::protocol::host::{NotifySpec, SessionSettings, sessions_dir};
use crate::registry::Registry;
use crate::state_dir::{StateDir, StateDirError};

/// Time between SIGHUP and SIGKILL when a session is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How this server starts session processes.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The keepsh binary whose `session-host` runs each session
    /// ([`crate::remote::SELF_EXE`] for the server binary itself).
    pub host_program: PathBuf,
    /// The soft open-files limit session programs start with (`None`:
    /// inherit this process's).
    pub program_open_files: Option<u64>,
}

/// Why the server could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The state directory cannot be used.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// A host key (or the first-run client key) cannot be loaded or made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An address cannot be listened on.
    #[error("listening on {addr}: {source} (is another server using the port?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener's address cannot be read.
    #[error("listening: {0}")]
    Listen(std::io::Error),
    /// The password checker cannot be set up.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Serves `config` until `shutdown` completes: opens and locks the state
/// directory, loads (or generates) the host keys, binds the listeners, sets
/// up first-run mode when no user is configured, adopts the sessions that
/// outlived a previous server, prints what it did on stdout (the host keys'
/// fingerprints, how to log in, "listening on ADDR" last), then runs the
/// accept loops ([`super::run`]).
///
/// # Errors
/// [`StartupError`] naming what could not be set up; nothing is served then.
pub async fn serve(
    mut config: Config,
    launch: Launch,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    // Held (open and locked) for the server's whole life.
    let state = StateDir::open(&config.server.state_dir)?;
    config.server.state_dir = state.path().to_owned();
    let host_keys = load_host_keys(&config)?;
    let listeners = bind(&config).await?;
    if config.users.is_empty() {
        let user = first_run_user(&config, &listeners[0])?;
        config.users.push(user);
    }
    // Sessions that outlived a previous server, before any client can ask.
    let found = state.discover().await;
    tracing::info!(
        live = found.live.len(),
        incompatible = found.incompatible.len(),
        stale = found.stale,
        "sessions found in {}",
        sessions_dir(state.path()).display()
    );
    match &config.server.sftp_server {
        Some(program) => tracing::info!("sftp and scp served by {}", program.display()),
        None => tracing::info!(
            "sftp and scp refused (sftp_server is \"\" or {} is not installed)",
            DEFAULT_SFTP_SERVER
        ),
    }
    // Last, so that a script waiting for it knows everything above is done.
    for listener in &listeners {
        println!(
            "listening on {}",
            listener.local_addr().map_err(StartupError::Listen)?
        );
    }
    let shared = Arc::new(shared(&config, launch)?);
    for handle in found.live {
        shared.registry.adopt(handle);
    }
    for info in found.incompatible {
        shared.registry.adopt_incompatible(info);
    }
    sweep_lost(&shared, config.sessions.lost_retention);
    let russh_config = Arc::new(super::russh_config(&config.server, host_keys));
    super::run(listeners, russh_config, config.server, shared, shutdown).await;
    tracing::info!("shutting down");
    Ok(())
}

/// Logs how many sessions are lost, removing those past `retention`; then
/// does so again even when nobody lists them ([`sweep`]).
fn sweep_lost(shared: &Arc<Shared>, retention: Duration) {
    let lost = shared.registry.lost(None);
    if !lost.is_empty() {
        tracing::info!(
            lost = lost.len(),
            "sessions lost (their process ended without a clean end): listed from their history files"
        );
    }
    tokio::spawn(sweep(Arc::clone(shared), retention));
}

/// Removes lost sessions past `retention` every `retention`, at most
/// every hour (on a blocking thread: it reads the state directory).
async fn sweep(shared: Arc<Shared>, retention: Duration) {
    let every = retention.clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let shared = Arc::clone(&shared);
        let _ = tokio::task::spawn_blocking(move || shared.registry.lost(None)).await;
    }
}

/// Loads (or generates) each host key, printing its type and fingerprint.
fn load_host_keys(config: &Config) -> Result<Vec<PrivateKey>, StartupError> {
    let mut host_keys = Vec::new();
    for path in &config.server.host_keys {
        let (key, generated) = keys::load_or_generate(path)?;
        let verb = if generated { "generated" } else { "loaded" };
        println!(
            "host key {} ({verb}, {}): {}",
            path.display(),
            key.algorithm().as_str(),
            keys::fingerprint(key.public_key())
        );
        host_keys.push(key);
    }
    Ok(host_keys)
}

async fn bind(config: &Config) -> Result<Vec<TcpListener>, StartupError> {
    let mut listeners = Vec::new();
    for &addr in &config.server.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// With no `[[users]]`: the OS user, with its own keys or a generated one;
/// prints how to log in on `listener`.
fn first_run_user(config: &Config, listener: &TcpListener) -> Result<User, StartupError> {
    let keys_dir = config.server.host_keys[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (user, client_key) = keys::first_run_user(&keys_dir)?;
    let addr = listener.local_addr().map_err(StartupError::Listen)?;
    let (name, port, ip) = (&user.name, addr.port(), addr.ip());
    match client_key {
        Some(key) => println!(
            "no [[users]] configured: log in as {name} with the generated key:\n  ssh -i {} -p {port} {name}@{ip}",
            key.display(),
        ),
        None => println!(
            "no [[users]] configured: log in as {name} with a key from ~/.ssh/authorized_keys:\n  ssh -p {port} {name}@{ip}",
        ),
    }
    Ok(user)
}

/// What every connection shares, from the configuration (also the fuzz
/// target `ssh`'s, which serves connections without listening).
///
/// # Errors
/// [`StartupError::Auth`] if the password checker cannot be set up.
pub fn shared(config: &Config, launch: Launch) -> Result<Shared, StartupError> {
    let settings = SessionSettings {
        scrollback_bytes: config.sessions.scrollback_bytes,
        scrollback_lines: config.sessions.scrollback_lines,
        orphan_timeout: config.sessions.orphan_timeout,
        exited_retention: config.sessions.exited_retention,
        program_open_files: launch.program_open_files,
        kill_grace: KILL_GRACE,
        notify: config.notify.as_ref().map(|notify| NotifySpec {
            command: notify.command.clone(),
            min_interval: notify.min_interval,
        }),
        away_summary: config.sessions.away_summary,
        history_file_bytes: config.sessions.history_file_bytes,
    };
    let state_dir = config.server.state_dir.clone();
    Ok(Shared {
        authenticator: Authenticator::new(&config.users)?,
        registry: Registry::new(state_dir, settings, config.sessions.max_per_user)
            .with_host_program(launch.host_program)
            .with_lost_retention(config.sessions.lost_retention),
        shell: config
            .sessions
            .shell
            .clone()
            .unwrap_or_else(keys::login_shell),
        default_term: config.sessions.term.clone(),
        home: keys::home_dir().unwrap_or_else(|| PathBuf::from("/")),
        os_user: keys::os_user_name(),
        max_auth_attempts: config.server.max_auth_attempts,
        sftp_server: config.server.sftp_server.clone(),
        on_shell: config.sessions.on_shell.clone(),
        attached: AttachedChannels::default(),
    })
}
