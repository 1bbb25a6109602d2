//! The accept loop and russh's server configuration.
//!
//! keepsh runs its own accept loop rather than russh's `run_on_socket`,
//! which ends the whole server on any accept error (e.g. EMFILE, "Too many
//! open files"): here such errors are logged and retried after a pause.
//! Before the handshake, each connection waits for one of `max_startups`
//! slots, at most `max_startups_per_source` from one IP address (see
//! `admission`; released on authentication), and gets `login_grace_time`
//! from accept to authenticate. Sources whose connections fail or abandon
//! authentication are penalised (`penalty`): refused at accept for a while.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use russh::keys::PrivateKey;
use russh::server::Config as RusshConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::admission::{StartupPermit, Startups};
use crate::algorithms::{self, Kind};
use crate::config::ServerConfig;
use crate::front::{self, AuthProgress, Connection, Shared};
use crate::penalty::{Offence, Penalties, Verdict};
use crate::protocol::printable;

mod identification;
pub mod startup;
mod tcp;
use tcp::Tuned;

/// Pause after an accept error such as EMFILE, so a full fd table is not spun on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The russh configuration: the algorithms of `[server]`'s
/// `kex_algorithms`, `host_key_algorithms`, `ciphers` and `macs`
/// (`algorithms`), publickey and password only, no compression,
/// keepalives instead of an inactivity timeout. (TCP_NODELAY and quick
/// ACKs: `tcp::Tuned`, since russh applies `nodelay` only in its own
/// accept loop.)
pub fn russh_config(server: &ServerConfig, host_keys: Vec<PrivateKey>) -> RusshConfig {
    RusshConfig {
        server_id: russh::SshId::Standard(Cow::Owned(format!(
            "SSH-2.0-keepsh_{}",
            env!("CARGO_PKG_VERSION")
        ))),
        methods: front::auth_methods(),
        auth_rejection_time: Duration::from_secs(1),
        // OpenSSH probes with "none" first; answering it at once is not a leak.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: host_keys,
        // Failures are counted by the handler (sshd's MaxAuthTries:
        // password and publickey together, not the `none` probe); russh's
        // own count includes `none` and would cut one attempt short.
        max_auth_attempts: 0,
        // Idle attached users must not be cut off; half-open connections are
        // found by keepalives instead.
        inactivity_timeout: None,
        keepalive_interval: server.keepalive_interval,
        keepalive_max: server.keepalive_max,
        // Handle messages queued per connection (russh's default is 10):
        // room for several channels' output chunks in flight.
        event_buffer_size: 64,
        preferred: server.algorithms.preferred(),
        ..RusshConfig::default()
    }
}

/// Serves SSH on `listeners` until `shutdown` resolves.
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Arc<RusshConfig>,
    server: ServerConfig,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(Limits {
        startups: Startups::new(server.max_startups, server.max_startups_per_source),
        penalties: server.penalties.clone().map(Penalties::new),
        grace: server.login_grace_time,
        dead_peer: server.dead_peer_timeout(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&config),
            Arc::clone(&shared),
            Arc::clone(&limits),
        ));
    }
    shutdown.await;
    tasks.abort_all();
}

/// What bounds connections, shared by every listener.
struct Limits {
    startups: Arc<Startups>,
    /// `None` with `per_source_penalties = false`.
    penalties: Option<Penalties>,
    grace: Option<Duration>,
    /// TCP_USER_TIMEOUT of accepted sockets ([`ServerConfig::dead_peer_timeout`]).
    dead_peer: Option<Duration>,
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<RusshConfig>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
) {
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Some(penalties) = &limits.penalties
            && let Verdict::Refuse { remaining, log } = penalties.check(peer.ip(), Instant::now())
        {
            if log {
                tracing::info!(
                    source = %peer.ip(),
                    remaining = %humantime::format_duration(Duration::from_secs(remaining.as_secs() + 1)),
                    "source penalised for failed or abandoned logins; its connections are refused (logged once a minute)"
                );
            }
            drop(stream); // closed before the banner
            continue;
        }
        let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("connection", id, %peer);
        let connection = Accepted {
            stream: Tuned::new(stream, limits.dead_peer),
            peer,
            config: Arc::clone(&config),
            shared: Arc::clone(&shared),
            limits: Arc::clone(&limits),
        };
        tokio::spawn(serve(connection).instrument(span));
    }
}

/// A connection between accept and admission.
struct Accepted {
    stream: Tuned,
    peer: SocketAddr,
    config: Arc<RusshConfig>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
}

/// Runs one connection: waits for admission, then the handshake; closes it
/// if it has not authenticated within `login_grace_time` of being accepted;
/// penalises its source if it never authenticated.
async fn serve(accepted: Accepted) {
    let peer = accepted.peer;
    let limits = Arc::clone(&accepted.limits);
    let outcome = handshake_and_run(accepted).await;
    if let (Some(penalties), Some(offence)) = (&limits.penalties, outcome) {
        tracing::debug!(?offence, "source penalised");
        penalties.record(peer.ip(), offence, Instant::now());
    }
}

/// The connection's life; returns how it failed to authenticate, if it did.
async fn handshake_and_run(accepted: Accepted) -> Option<Offence> {
    let Accepted {
        stream,
        peer,
        config,
        shared,
        limits,
    } = accepted;
    tracing::debug!("connection accepted");
    let deadline = limits
        .grace
        .map(|grace| tokio::time::Instant::now() + grace);
    // Refused while queued: our own queue, not the client's doing: no penalty.
    let permit = admit(&limits.startups, peer, deadline).await?;
    let closer = stream.closer();
    let identification = stream.identification();
    let ended = move |error: &russh::Error| log_end(error, peer, &identification);
    let (progress, progress_rx) = watch::channel(AuthProgress::default());
    let handle = Arc::new(OnceLock::new());
    let handler = Connection::new(shared, Some(peer), Arc::clone(&handle), progress, permit);
    let handshake = russh::server::run_stream(config, stream, handler);
    // The banner exchange may itself hang on a silent client.
    let running = tokio::select! {
        running = handshake => match running {
            Ok(running) => running,
            Err(error) => {
                ended(&error);
                return Some(Offence::NoAuth);
            }
        },
        () = until(deadline) => {
            tracing::info!("login grace time exceeded before the banner; closed");
            return Some(Offence::GraceExceeded);
        }
    };
    let _ = handle.set(running.handle());
    let grace_exceeded = within_grace(running, deadline, closer, &progress_rx, ended).await;
    grace_exceeded.or_else(|| never_authenticated(&progress_rx.borrow()))
}

/// Waits for a startup slot (`max_startups`), at most until `deadline`.
async fn admit(
    startups: &Arc<Startups>,
    peer: SocketAddr,
    deadline: Option<tokio::time::Instant>,
) -> Option<StartupPermit> {
    if startups.would_wait(peer.ip()) {
        tracing::info!("max_startups or max_startups_per_source reached; waiting for a slot");
    }
    tokio::select! {
        permit = startups.admit(peer.ip()) => Some(permit),
        () = until(deadline) => {
            tracing::info!("login grace time exceeded waiting for a startup slot; closed");
            None
        }
    }
}

/// Runs the connection to its end, shutting its socket down at `deadline`
/// if it has not authenticated by then (`GraceExceeded`).
async fn within_grace(
    running: russh::server::RunningSession<Connection>,
    deadline: Option<tokio::time::Instant>,
    closer: Option<tcp::Closer>,
    progress: &watch::Receiver<AuthProgress>,
    ended: impl Fn(&russh::Error),
) -> Option<Offence> {
    tokio::pin!(running);
    let mut offence = None;
    let mut waiter = progress.clone();
    tokio::select! {
        result = &mut running => {
            if let Err(error) = result {
                ended(&error);
            }
            return None;
        }
        // Authenticated (or the handler is gone): no deadline any more.
        _ = waiter.wait_for(|p| p.authenticated) => drop(closer),
        () = until(deadline) => {
            tracing::info!("login grace time exceeded; closed");
            offence = Some(Offence::GraceExceeded);
            if let Some(closer) = closer {
                closer.shut();
            }
        }
    }
    if let Err(error) = running.await {
        ended(&error);
    }
    offence
}

/// How a connection that ended failed to authenticate, if it did.
fn never_authenticated(progress: &AuthProgress) -> Option<Offence> {
    if progress.authenticated {
        None
    } else if progress.failures > 0 {
        Some(Offence::AuthFail)
    } else {
        Some(Offence::NoAuth)
    }
}

/// Waits until `deadline`; for ever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Logs why a connection ended: a failed negotiation as sshd does (one
/// line naming the list, the peer, its identification and its offer, and
/// the `server.toml` line that would let it in), a peer that breaks the
/// protocol at info level (one line naming the problem), a plain
/// disconnect at debug.
fn log_end(error: &russh::Error, peer: SocketAddr, identification: &OnceLock<String>) {
    use russh::Error as E;
    match error {
        // TCP_USER_TIMEOUT (`tcp::Tuned`): output left unacknowledged.
        E::IO(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            tracing::info!("client stopped acknowledging output; closed");
        }
        E::IO(_) | E::Disconnect | E::HUP | E::ConnectionTimeout | E::SendError => {
            tracing::debug!(%error, "connection ended");
        }
        E::KeepaliveTimeout => tracing::info!("client stopped answering keepalives; closed"),
        E::NoCommonAlgo { kind, theirs, .. } => {
            let client = identification
                .get()
                .map_or("no identification", String::as_str);
            let offer: Vec<String> = theirs.iter().map(|t| printable(t)).collect();
            let (noun, fix) = match algorithm_kind(kind) {
                Some(kind) => (
                    kind.noun(),
                    algorithms::enabling_line(kind, theirs).map_or_else(
                        || " (keepsh implements none of them)".to_owned(),
                        |line| format!(" (to let it in, set {line} in [server])"),
                    ),
                ),
                None => ("compression method", String::new()),
            };
            tracing::info!(
                "no matching {noun} with {peer} ({client}): their offer: {}{fix}",
                offer.join(",")
            );
        }
        _ => tracing::info!(%error, "closed: the client broke the SSH protocol"),
    }
}

/// The list of ours that russh's `kind` names; `None` for compression,
/// which keepsh does not negotiate (it offers only `none`).
fn algorithm_kind(kind: &russh::AlgorithmKind) -> Option<Kind> {
    use russh::AlgorithmKind as K;
    match kind {
        K::Kex => Some(Kind::Kex),
        K::Key => Some(Kind::HostKey),
        K::Cipher => Some(Kind::Cipher),
        K::Mac => Some(Kind::Mac),
        K::Compression => None,
    }
}
