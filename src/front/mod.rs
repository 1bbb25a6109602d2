//! The SSH front: everything that knows russh.
//!
//! One [`Connection`] per SSH connection implements russh's `Handler` as a
//! thin adapter: each request becomes a registry call or a message to a
//! session through its handle. It never touches a PTY or a ring buffer.
//!
//! Invariants:
//! - Every `want_reply` channel request gets exactly one success or failure
//!   (russh sends none on its own).
//! - A connection ending only detaches: dropping the `Connection` drops its
//!   attachments, which detach; sessions carry on.
//! - The russh `Channel` object is dropped at open (input arrives through
//!   `Handler::data`); a `Channel` kept but never read would stall the
//!   whole connection after `channel_buffer_size` packets.
//! - Output runs in one task per attached channel (`writer`), so a full
//!   client window never blocks this handler.

mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use russh::keys::{Algorithm, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::task::JoinHandle;

use crate::admission::StartupPermit;
use crate::auth::{Authenticator, Login};
use crate::command::{self, Command, Failure, Reply};
use crate::protocol::{AttachRequest, HistoryFormat, PtySize, Refusal, Request, SessionName};
use crate::registry::{Found, Registry, RegistryError};
use crate::remote::{AttachError, AttachmentControl};
use crate::session::SpawnSpec;

/// Channels one connection may have open at once (sshd's `MaxSessions`).
const MAX_CHANNELS: usize = 10;
/// `env` requests accepted per channel (sshd accepts 128).
const MAX_ENV: usize = 64;
/// How long `kill` waits for the program to exit (its grace + margin).
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What every connection shares.
pub struct Shared {
    /// Credentials.
    pub authenticator: Authenticator,
    /// All sessions.
    pub registry: Registry,
    /// The shell for shell requests.
    pub shell: PathBuf,
    /// `TERM` when `pty-req` gives none.
    pub default_term: String,
    /// Sessions' working directory and `$HOME`.
    pub home: PathBuf,
    /// `$USER` of sessions (the OS user running keepsh).
    pub os_user: String,
}

static NEXT_ATTACHMENT: AtomicU64 = AtomicU64::new(1);

/// Per-channel state.
#[derive(Default)]
struct ChannelState {
    /// `pty-req`: terminal type and size.
    pty: Option<(String, PtySize)>,
    /// Accepted `env` requests.
    env: Vec<(String, String)>,
    /// A shell or exec request was handled: later ones are refused.
    started: bool,
    attachment: Option<AttachmentControl>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // The attachment detaches on drop; its writer has nothing left to do.
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

/// One SSH connection.
pub struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    login: Option<Login>,
    /// Set on successful authentication; read by the login-grace timer.
    authenticated: Arc<AtomicBool>,
    /// Held until authentication: counts against `max_startups`.
    startup_permit: Option<StartupPermit>,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Connection {
    /// A handler for a new connection from `peer`.
    pub fn new(
        shared: Arc<Shared>,
        peer: Option<SocketAddr>,
        authenticated: Arc<AtomicBool>,
        startup_permit: StartupPermit,
    ) -> Connection {
        Connection {
            shared,
            peer,
            login: None,
            authenticated,
            startup_permit: Some(startup_permit),
            channels: HashMap::new(),
        }
    }

    fn owner(&self) -> &str {
        self.login.as_ref().map_or("", |l| l.user.as_str())
    }

    fn has_pty(&self, channel: ChannelId) -> bool {
        self.channels.get(&channel).is_some_and(|c| c.pty.is_some())
    }

    /// The environment and program for a new session started from `channel`.
    fn spawn_spec(&self, channel: ChannelId, command: Vec<String>) -> SpawnSpec {
        let state = self.channels.get(&channel);
        let (term, size) = state
            .and_then(|c| c.pty.clone())
            .unwrap_or_else(|| (self.shared.default_term.clone(), PtySize::DEFAULT));
        let shared = &self.shared;
        let mut env = vec![
            ("TERM".to_owned(), term),
            ("HOME".to_owned(), shared.home.display().to_string()),
            ("USER".to_owned(), shared.os_user.clone()),
            ("LOGNAME".to_owned(), shared.os_user.clone()),
            (
                "PATH".to_owned(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            ),
        ];
        if let Ok(lang) = std::env::var("LANG") {
            env.push(("LANG".to_owned(), lang));
        }
        for (key, value) in state.map(|c| c.env.as_slice()).unwrap_or_default() {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        SpawnSpec {
            command,
            shell: shared.shell.clone(),
            env,
            cwd: shared.home.clone(),
            size,
        }
    }

    /// Binds `channel` to `found` and starts its writer task.
    async fn attach(
        &mut self,
        channel: ChannelId,
        found: Found,
        read_only: bool,
        from: Option<u64>,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let size = self
            .channels
            .get(&channel)
            .and_then(|c| c.pty.as_ref())
            .map(|(_, size)| *size);
        let request = AttachRequest {
            attachment: NEXT_ATTACHMENT.fetch_add(1, Ordering::Relaxed),
            size,
            read_only,
            from,
        };
        let attachment = found.handle.attach(request).await.map_err(|e| match e {
            AttachError::Refused(refusal @ Refusal::OutsideBuffer { start, .. }) => {
                Failure::operational(
                    refusal,
                    &format!("use --from {start} for the oldest byte kept"),
                )
            }
            AttachError::Gone => Failure::from(RegistryError::NotFound(found.name.to_string())),
        })?;
        tracing::info!(session = %found.id, name = %found.name, "channel attached");
        let writer = tokio::spawn(writer::forward(
            session.handle(),
            channel,
            attachment.events,
        ));
        if let Some(state) = self.channels.get_mut(&channel) {
            state.attachment = Some(attachment.control);
            state.writer = Some(writer);
        }
        Ok(())
    }

    /// Creates a session for this user (its own process).
    async fn create(&self, name: Option<SessionName>, spec: SpawnSpec) -> Result<Found, Failure> {
        self.shared
            .registry
            .create(self.owner(), name, spec)
            .await
            .map_err(Failure::from)
    }

    /// Creates a session (named `name`, running `command` or the shell) and
    /// attaches `channel` to it.
    async fn create_and_attach(
        &mut self,
        channel: ChannelId,
        name: Option<SessionName>,
        command: Vec<String>,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let spec = self.spawn_spec(channel, command);
        let found = self.create(name, spec).await?;
        self.attach(channel, found, false, None, session).await
    }

    /// Handles a shell request, or an exec request's command, on `channel`.
    async fn start(
        &mut self,
        channel: ChannelId,
        command: Result<Command, Failure>,
        session: &mut Session,
    ) -> Result<(), Failure> {
        let owner = self.owner().to_owned();
        let shared = Arc::clone(&self.shared);
        let registry = &shared.registry;
        let reply = match command? {
            Command::New {
                name,
                detach: false,
                command,
            } => {
                return self
                    .create_and_attach(channel, name, command, session)
                    .await;
            }
            Command::Attach {
                reference,
                read_only,
                from,
            } => {
                let found = match reference {
                    Some(reference) => registry.resolve(&owner, &reference)?,
                    None => registry.last_detached(&owner)?,
                };
                return self.attach(channel, found, read_only, from, session).await;
            }
            Command::New {
                name,
                detach: true,
                command,
            } => {
                let spec = self.spawn_spec(channel, command);
                let found = self.create(name, spec).await?;
                Reply::ok(format!("{}\n", found.id))
            }
            Command::List { json } => Reply::ok(command::render_list(
                &registry.list(&owner),
                json,
                SystemTime::now(),
            )),
            Command::History { reference, raw } => {
                let found = registry.resolve(&owner, &reference)?;
                let format = if raw {
                    HistoryFormat::Raw
                } else {
                    HistoryFormat::Text
                };
                let data =
                    found.handle.history(format).await.map_err(|_| {
                        Failure::from(RegistryError::NotFound(found.name.to_string()))
                    })?;
                match format {
                    HistoryFormat::Raw => Reply::verbatim(data),
                    HistoryFormat::Text => Reply::ok(String::from_utf8_lossy(&data)),
                }
            }
            Command::Kill { reference } => {
                let found = registry.resolve(&owner, &reference)?;
                found.handle.send(Request::Kill).await;
                // Reply once the program is gone, so that a following `list`
                // no longer shows it.
                if !found.handle.wait_exited(KILL_WAIT).await {
                    return Err(Failure::operational(
                        format!("session '{}' did not exit after SIGKILL", found.name),
                        "check for processes stuck in the kernel (state D)",
                    ));
                }
                registry.remove(&owner, found.id);
                Reply::ok("")
            }
            Command::Rename { reference, new } => {
                let found = registry.rename(&owner, &reference, new.clone())?;
                found.handle.send(Request::Rename { name: new }).await;
                Reply::ok("")
            }
            Command::Help => Reply::ok(command::HELP),
            Command::Version => Reply::ok(command::version()),
        };
        self.finish(channel, reply, session);
        Ok(())
    }

    /// Sends a command's result and closes the channel, from a task so that
    /// a full client window never blocks the handler.
    fn finish(&self, channel: ChannelId, reply: Reply, session: &mut Session) {
        let crlf = self.has_pty(channel);
        tokio::spawn(writer::send_reply(session.handle(), channel, reply, crlf));
    }

    /// Claims `channel` for a shell or exec request; false if it already ran one.
    fn claim(&mut self, channel: ChannelId) -> bool {
        match self.channels.get_mut(&channel) {
            Some(state) if !state.started => {
                state.started = true;
                true
            }
            _ => false,
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
        Ok(Auth::reject())
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
            tracing::info!(user = %login.user, method = "password", "authentication failed");
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // ssh-rsa signatures use SHA-1: refused, as OpenSSH does since 8.8.
        if matches!(offer.algorithm, Algorithm::Rsa { hash: None }) {
            return Ok(Auth::reject());
        }
        let login = Login::parse(user);
        if self
            .shared
            .authenticator
            .check_key(&login.user, offer.public_key)
        {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
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
            tracing::info!(user = %login.user, method = "publickey", "authentication failed");
            Ok(Auth::reject())
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::SeqCst);
        self.startup_permit = None; // no longer counts against max_startups
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            tracing::warn!("too many channels on one connection; refused");
            drop(reply); // rejects the open
            return Ok(());
        }
        self.channels.insert(channel.id(), ChannelState::default());
        // Input arrives through `data`; the Channel object must not be held unread.
        drop(channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel); // detaches
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let default_term = self.shared.default_term.clone();
        match self.channels.get_mut(&channel) {
            // A second pty-req, or one after the shell started, is refused (sshd does the same).
            Some(state) if state.pty.is_none() && !state.started => {
                let term = if !term.is_empty()
                    && term.len() <= 64
                    && term.bytes().all(|b| b.is_ascii_graphic())
                {
                    term.to_owned()
                } else {
                    default_term
                };
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Like sshd's AcceptEnv: locale and colour hints only, never
        // LD_PRELOAD, PATH, BASH_ENV and the like.
        let allowed = name == "LANG" || name == "COLORTERM" || name.starts_with("LC_");
        match self.channels.get_mut(&channel) {
            Some(state)
                if allowed
                    && !state.started
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.claim(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        session.channel_success(channel)?;
        let command = match self.login.as_ref().and_then(|l| l.target.clone()) {
            // `ssh alice+work@host`: attach `work`, creating it if needed.
            Some(Ok(name)) => match self.shared.registry.resolve(self.owner(), name.as_str()) {
                Ok(_) => Ok(Command::Attach {
                    reference: Some(name.to_string()),
                    read_only: false,
                    from: None,
                }),
                Err(_) => Ok(Command::New {
                    name: Some(name),
                    detach: false,
                    command: vec![],
                }),
            },
            Some(Err(invalid)) => Err(Failure::usage(
                format!("{invalid} after '+' in the login name"),
                SessionName::RULE,
            )),
            None => Ok(Command::New {
                name: None,
                detach: false,
                command: vec![],
            }),
        };
        if let Err(failure) = self.start(channel, command, session).await {
            self.finish(channel, failure.into(), session);
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.claim(channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        session.channel_success(channel)?;
        let command = match std::str::from_utf8(data) {
            Ok(line) => command::parse(line),
            Err(_) => Err(Failure::usage(
                "the command is not UTF-8",
                "run 'help' for usage",
            )),
        };
        if let Err(failure) = self.start(channel, command, session).await {
            self.finish(channel, failure.into(), session);
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel)
            && let Some((_, size)) = state.pty.as_mut()
        {
            *size = PtySize::from_request(col_width, row_height, *size);
            let size = *size;
            if let Some(attachment) = &mut state.attachment {
                attachment.resize(size).await;
            }
        }
        session.channel_success(channel)?;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(attachment) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.attachment.as_mut())
        {
            attachment.input(bytes::Bytes::copy_from_slice(data)).await;
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
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }
}
