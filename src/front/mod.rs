//! The SSH front: everything that knows russh.
//!
//! One [`Connection`] per SSH connection implements russh's `Handler` as a
//! thin adapter: authentication, channel bookkeeping (`pty-req`, `env`),
//! and for a shell or exec request a task of the channel's own (`channel`)
//! that does the work and owns the attachment. It never waits on a session
//! and never touches a PTY or a ring buffer.
//!
//! Invariants:
//! - Every `want_reply` channel request gets exactly one success or failure
//!   (russh sends none on its own).
//! - A failed authentication leaves every offered method available until
//!   `max_auth_attempts` failures (password and publickey together, the
//!   `none` probe not counted: sshd's `MaxAuthTries`); then the connection
//!   is told "too many authentication failures" and closed.
//! - A connection ending only detaches: dropping the `Connection` drops its
//!   channels' tasks and so their attachments; sessions carry on.
//! - The russh `Channel` is split at open: its reading half is dropped
//!   (input arrives through `Handler::data`; a reader kept but never read
//!   would stall the whole connection after `channel_buffer_size` packets),
//!   its writing half goes to the channel's task, so output respects each
//!   channel's own window and a full channel never delays another.

mod attached;

pub use attached::AttachedChannels;
mod channel;
mod subsystem;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use russh::keys::{Algorithm, HashAlg};
use russh::server::{
    self as server, Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelWriteHalf, MethodKind, MethodSet};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admission::StartupPermit;
use crate::auth::{Authenticator, Login};
use crate::command::{self, Failure};
use crate::config::OnShellRules;
use crate::protocol::{PtySize, SignalName, TermName};
use crate::registry::Registry;
use channel::ToChannel;

/// Channels one connection may have open at once (sshd's `MaxSessions`).
const MAX_CHANNELS: usize = 10;
/// `env` requests accepted per channel (sshd accepts 128).
const MAX_ENV: usize = 64;

/// The authentication methods offered, in every USERAUTH_FAILURE too
/// (RFC 4252 §5.1): public key and password.
pub fn auth_methods() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
}

/// What every connection shares.
pub struct Shared {
    /// Credentials.
    pub authenticator: Authenticator,
    /// All sessions.
    pub registry: Registry,
    /// The shell for shell requests.
    pub shell: PathBuf,
    /// `TERM` when `pty-req` gives none.
    pub default_term: TermName,
    /// Sessions' working directory and `$HOME`.
    pub home: PathBuf,
    /// `$USER` of sessions (the OS user running keepsh).
    pub os_user: String,
    /// Failed authentication attempts allowed per connection (sshd's
    /// `MaxAuthTries`, `[server] max_auth_attempts`).
    pub max_auth_attempts: usize,
    /// The program of `subsystem sftp` (`[server] sftp_server`); `None`
    /// refuses it.
    pub sftp_server: Option<PathBuf>,
    /// What a shell request does, per user (`on_shell`).
    pub on_shell: OnShellRules,
    /// The channels attached to each session (for `attach -d`).
    pub attached: AttachedChannels,
}

/// How far a connection got with authentication: read by the server for
/// `login_grace_time` and per-source penalties.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthProgress {
    /// It authenticated.
    pub authenticated: bool,
    /// Failed password and publickey attempts.
    pub failures: usize,
}

/// Per-channel state.
#[derive(Default)]
struct ChannelState {
    /// `pty-req`: terminal type and size.
    pty: Option<(TermName, PtySize)>,
    /// Accepted `env` requests.
    env: Vec<(String, String)>,
    /// The channel's writing half, until a shell or exec request takes it
    /// (`None` then: later ones are refused).
    out: Option<ChannelWriteHalf<Msg>>,
    /// Input and resizes for the channel's task, once started.
    inbox: Option<mpsc::Sender<ToChannel>>,
    /// The channel attaches with the keyboard: `signal` requests pass.
    takes_signals: bool,
    task: Option<JoinHandle<()>>,
    /// Dropped with the state when the channel or its connection closes:
    /// the task's `closed` then says so to a command that waits.
    open: Option<watch::Sender<()>>,
}

impl ChannelState {
    /// Whether the channel's task has closed the channel (see `channel`).
    fn closed(&self) -> bool {
        self.task.as_ref().is_some_and(JoinHandle::is_finished)
    }
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // Ending the task drops its attachment, which detaches.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One SSH connection.
pub struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    login: Option<Login>,
    /// The connection's russh handle, set once its handshake started: for
    /// disconnecting after too many failures.
    handle: Arc<OnceLock<Handle>>,
    /// Failures and success, for the server (grace timer, penalties).
    progress: watch::Sender<AuthProgress>,
    /// Held until authentication: counts against `max_startups`.
    startup_permit: Option<StartupPermit>,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Connection {
    /// A handler for a new connection from `peer`; `handle` is filled in
    /// by the caller once russh has started the connection.
    pub fn new(
        shared: Arc<Shared>,
        peer: Option<SocketAddr>,
        handle: Arc<OnceLock<Handle>>,
        progress: watch::Sender<AuthProgress>,
        startup_permit: StartupPermit,
    ) -> Connection {
        Connection {
            shared,
            peer,
            login: None,
            handle,
            progress,
            startup_permit: Some(startup_permit),
            channels: HashMap::new(),
        }
    }

    fn owner(&self) -> &str {
        self.login.as_ref().map_or("", |l| l.user.as_str())
    }

    /// Logs a failed attempt and answers it with every method still
    /// offered; past `max_auth_attempts` failures, disconnects.
    fn failed(&mut self, user: &str, method: &str) -> Auth {
        self.progress.send_modify(|p| p.failures += 1);
        let failures = self.progress.borrow().failures;
        tracing::info!(user, method, failures, "authentication failed");
        if failures >= self.shared.max_auth_attempts {
            tracing::warn!(user, "too many authentication failures; disconnecting");
            if let Some(handle) = self.handle.get().cloned() {
                // Queued behind this attempt's USERAUTH_FAILURE.
                tokio::spawn(async move {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::NoMoreAuthMethodsAvailable,
                            "too many authentication failures".into(),
                            String::new(),
                        )
                        .await;
                });
            }
        }
        Auth::Reject {
            proceed_with_methods: Some(auth_methods()),
            partial_success: false,
        }
    }

    /// Starts `channel`'s task for a shell or exec request's `command`;
    /// false if the channel already ran one (or is unknown).
    fn start(
        &mut self,
        channel: ChannelId,
        command: Result<command::Command, Failure>,
        notice: Option<String>,
        session: &server::Session,
    ) -> bool {
        let owner = self.owner().to_owned();
        let shared = Arc::clone(&self.shared);
        let Some(state) = self.channels.get_mut(&channel) else {
            return false;
        };
        let Some(out) = state.out.take() else {
            return false;
        };
        state.takes_signals = channel::takes_signals(&command);
        let (inbox, receiver) = mpsc::channel(channel::INBOX);
        let (open, closed) = watch::channel(());
        state.open = Some(open);
        let start = channel::Start {
            shared,
            owner,
            command,
            notice,
            pty: state.pty.clone(),
            env: std::mem::take(&mut state.env),
            out,
            handle: session.handle(),
            connection: Arc::as_ptr(&self.handle) as attached::ConnectionKey,
            inbox: receiver,
            closed,
        };
        state.inbox = Some(inbox);
        state.task = Some(tokio::spawn(channel::run(start)));
        true
    }

    /// Starts `channel`'s task for `subsystem sftp`; false if SFTP is off
    /// or the channel already runs something (or is unknown).
    fn start_sftp(&mut self, channel: ChannelId) -> bool {
        let Some(program) = self.shared.sftp_server.clone() else {
            return false;
        };
        let Some(state) = self.channels.get_mut(&channel) else {
            return false;
        };
        let Some(out) = state.out.take() else {
            return false;
        };
        let (inbox, receiver) = mpsc::channel(channel::INBOX);
        let subsystem = subsystem::Subsystem {
            program,
            home: self.shared.home.clone(),
            env: channel::base_env(&self.shared),
            out,
            inbox: receiver,
        };
        state.inbox = Some(inbox);
        state.task = Some(tokio::spawn(subsystem::run(subsystem)));
        true
    }

    /// Passes `message` to `channel`'s task, if it runs; waits while its
    /// inbox is full (back-pressure on this connection's input).
    async fn pass(&mut self, channel: ChannelId, message: ToChannel) {
        if let Some(inbox) = self.channels.get(&channel).and_then(|c| c.inbox.clone()) {
            let _ = inbox.send(message).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.login.is_some() {
            tracing::info!(peer = ?self.peer, "connection closed; its sessions stay");
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        // The client's probe for the methods (RFC 4252 §5.2): not a failure.
        Ok(Auth::Reject {
            proceed_with_methods: Some(auth_methods()),
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let login = Login::parse(user);
        if self
            .shared
            .authenticator
            .check_password(&login.user, password)
            .await
        {
            tracing::info!(user = %login.user, method = "password", "authenticated");
            self.login = Some(login);
            Ok(Auth::Accept)
        } else {
            Ok(self.failed(&login.user, "password"))
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let login = Login::parse(user);
        // ssh-rsa signatures use SHA-1: refused, as OpenSSH does since 8.8.
        let allowed = !matches!(offer.algorithm, Algorithm::Rsa { hash: None })
            && self
                .shared
                .authenticator
                .check_key(&login.user, offer.public_key);
        if allowed {
            Ok(Auth::Accept)
        } else {
            // sshd counts a key it will not take as a failure too.
            Ok(self.failed(&login.user, "publickey"))
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let login = Login::parse(user);
        let allowed = !matches!(key.algorithm, Algorithm::Rsa { hash: None })
            && self
                .shared
                .authenticator
                .check_key(&login.user, key.public_key);
        if allowed {
            tracing::info!(
                user = %login.user,
                method = "publickey",
                key = %key.public_key.fingerprint(HashAlg::Sha256),
                "authenticated"
            );
            self.login = Some(login);
            Ok(Auth::Accept)
        } else {
            Ok(self.failed(&login.user, "publickey"))
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut server::Session) -> Result<(), Self::Error> {
        self.progress.send_modify(|p| p.authenticated = true);
        self.startup_permit = None; // no longer counts against max_startups
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        // Channels keepsh closed itself are gone from russh's table without a
        // `channel_close` call: count only those still open.
        self.channels.retain(|_, state| !state.closed());
        if self.channels.len() >= MAX_CHANNELS {
            tracing::warn!(
                limit = MAX_CHANNELS,
                "too many open channels on one connection; refused"
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let id = channel.id();
        let (_input, out) = channel.split();
        let state = self.channels.entry(id).or_default();
        state.out = Some(out);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel); // ends its task, which detaches
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            // A second pty-req, or one after the shell started, is refused (sshd does the same).
            Some(state) if state.pty.is_none() && state.out.is_some() => {
                let term = term
                    .parse::<TermName>()
                    .unwrap_or_else(|_| self.shared.default_term.clone());
                let size = PtySize::from_request(col_width, row_height, PtySize::DEFAULT);
                state.pty = Some((term, size));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        // Like sshd's AcceptEnv: locale and colour hints only, never
        // LD_PRELOAD, PATH, BASH_ENV and the like.
        let allowed = name == "LANG" || name == "COLORTERM" || name.starts_with("LC_");
        match self.channels.get_mut(&channel) {
            Some(state)
                if allowed
                    && state.out.is_some()
                    && state.env.len() < MAX_ENV
                    && value.len() <= 256
                    && !value.contains('\0') =>
            {
                state.env.push((name.to_owned(), value.to_owned()));
                session.channel_success(channel)?;
            }
            _ => session.channel_failure(channel)?,
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let target = self.login.as_ref().and_then(|l| l.target.clone());
        let command = channel::shell_command(&self.shared, self.owner(), target);
        let notice = match &command {
            Ok(command::Command::New { name: None, .. }) => {
                channel::shell_notice(&self.shared, self.owner())
            }
            _ => None,
        };
        if self.start(channel, command, notice, session) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let command = match std::str::from_utf8(data) {
            Ok(line) => command::parse(line),
            Err(_) => Err(Failure::usage(
                "the command is not UTF-8",
                "run 'help' for usage",
            )),
        };
        if self.start(channel, command, None, session) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        // RFC 4254 §6.5; only "sftp", as sshd's default `Subsystem`.
        if name == "sftp" && self.start_sftp(channel) {
            session.channel_success(channel)?;
        } else {
            tracing::info!(
                subsystem = %crate::protocol::printable(name),
                "subsystem refused"
            );
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        self.pass(channel, ToChannel::Eof).await;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let resized = match self.channels.get_mut(&channel) {
            Some(ChannelState {
                pty: Some((_, size)),
                ..
            }) => {
                *size = PtySize::from_request(col_width, row_height, *size);
                Some(*size)
            }
            _ => None,
        };
        if let Some(size) = resized {
            self.pass(channel, ToChannel::Resize(size)).await;
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let data = bytes::Bytes::copy_from_slice(data);
        self.pass(channel, ToChannel::Input(data)).await;
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: russh::Sig,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        // RFC 4254 §6.9; the reply (when wanted) says whether it was passed on.
        let takes = self.channels.get(&channel).is_some_and(|c| c.takes_signals);
        match signal_name(&signal).filter(|_| takes) {
            Some(name) => {
                self.pass(channel, ToChannel::Signal(name)).await;
                session.channel_success(channel)?;
            }
            None => {
                tracing::debug!(?signal, "signal request refused");
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }
}

/// The protocol's name for a russh signal; `None` for one outside RFC 4254
/// §6.10's list.
fn signal_name(signal: &russh::Sig) -> Option<SignalName> {
    use russh::Sig;
    Some(match signal {
        Sig::ABRT => SignalName::Abrt,
        Sig::ALRM => SignalName::Alrm,
        Sig::FPE => SignalName::Fpe,
        Sig::HUP => SignalName::Hup,
        Sig::ILL => SignalName::Ill,
        Sig::INT => SignalName::Int,
        Sig::KILL => SignalName::Kill,
        Sig::PIPE => SignalName::Pipe,
        Sig::QUIT => SignalName::Quit,
        Sig::SEGV => SignalName::Segv,
        Sig::TERM => SignalName::Term,
        Sig::USR1 => SignalName::Usr1,
        Sig::Custom(name) => return SignalName::from_rfc(name),
    })
}
