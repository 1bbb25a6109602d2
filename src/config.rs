//! `server.toml` → a validated [`Config`] (README "Configuration").
//!
//! Two stages, as ripgrep does: serde reads the raw TOML into `Raw*`
//! structs (unknown keys are errors; every value type checks itself, so
//! toml reports bad values with their position), then [`Config::load`]
//! resolves paths against the file's directory and checks what spans
//! several keys. Every error names the key, the line and the column.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::algorithms::{self, Algorithms, Kind};
use crate::auth::{
    InvalidUserName, PasswordHash, User, UserName, parse_authorized_key, read_authorized_keys,
};
use crate::penalty::PenaltyConfig;
use crate::protocol::{InvalidTerm, TermName};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source} (check the path given to --config)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key or value is wrong.
    #[error("{path}:{line}:{column}: {key}: {message} ({hint})")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted key, e.g. `server.keepalive_interval`, or `(file)`.
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: String,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[sessions]`.
    pub sessions: SessionsConfig,
    /// `[[users]]`: the SSH login names and their credentials. Empty means
    /// first-run mode: the OS user running keepsh may log in with its own keys.
    pub users: Vec<User>,
    /// `[notify]`; `None` when no command is set.
    pub notify: Option<NotifyConfig>,
}

/// `[notify]`: a command run (as the OS user running keepsh, without a
/// shell) when a session that no writable client is attached to rings the
/// bell, shows a desktop notification (OSC 9, OSC 777 `notify`) or exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The program and its arguments (`argv`, not a shell line).
    pub command: Vec<String>,
    /// At most one run per session per this long (`"never"`: once).
    pub min_interval: Duration,
}

/// `[server]`: listeners, keys and connection limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Host key files (OpenSSH format), generated as Ed25519 (mode 0600) if missing.
    pub host_keys: Vec<PathBuf>,
    /// Private state directory (mode 0700).
    pub state_dir: PathBuf,
    /// Interval of SSH keepalives (`keepalive@openssh.com`), sent when
    /// nothing came from the client for that long; `None` = off
    /// (sshd_config(5) ClientAliveInterval).
    pub keepalive_interval: Option<Duration>,
    /// Keepalives left unanswered before a connection is dropped as
    /// half-open: it is dropped at the next interval after the last one
    /// (sshd_config(5) ClientAliveCountMax).
    pub keepalive_max: usize,
    /// Time a connection has to authenticate; `None` = unlimited.
    pub login_grace_time: Option<Duration>,
    /// Failed authentication attempts before the connection is closed.
    pub max_auth_attempts: usize,
    /// Connections in their handshake (not yet authenticated) at once; more
    /// wait for a slot, within `login_grace_time`.
    pub max_startups: usize,
    /// Of those, from one IP address (like OpenSSH's `PerSourceMaxStartups`),
    /// so one source cannot take every slot.
    pub max_startups_per_source: usize,
    /// Per-source penalties (OpenSSH's `PerSourcePenalties`); `None` = off
    /// (`per_source_penalties = false`).
    pub penalties: Option<PenaltyConfig>,
    /// The algorithms offered (`kex_algorithms`, `host_key_algorithms`,
    /// `ciphers`, `macs`: sshd_config(5)'s lists and forms).
    pub algorithms: Algorithms,
    /// The program a `subsystem sftp` request runs (sshd_config(5)
    /// `Subsystem sftp`); `None` = SFTP refused (`sftp_server = ""`, or
    /// the default [`DEFAULT_SFTP_SERVER`] is not installed).
    pub sftp_server: Option<PathBuf>,
}

impl ServerConfig {
    /// The longest a vanished client (no answer, no TCP close) goes
    /// unnoticed: `keepalive_interval` × (`keepalive_max` + 1), after the
    /// last byte it sent. Also the TCP_USER_TIMEOUT of accepted sockets,
    /// so that output nobody acknowledges ends the connection as soon.
    /// `None` with keepalives off.
    pub fn dead_peer_timeout(&self) -> Option<Duration> {
        let intervals = u32::try_from(self.keepalive_max.saturating_add(1)).unwrap_or(u32::MAX);
        self.keepalive_interval
            .map(|interval| interval.saturating_mul(intervals))
    }
}

/// OpenSSH's SFTP server as Debian installs it (`openssh-sftp-server`):
/// `sftp_server`'s default when it exists.
pub const DEFAULT_SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// `[sessions]`: what sessions run and how long they live.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// The shell for shell requests; `None` = the OS user's login shell.
    pub shell: Option<PathBuf>,
    /// `TERM` when the client's `pty-req` gives none (or an invalid one).
    pub term: TermName,
    /// Ring buffer per session, in bytes.
    pub scrollback_bytes: usize,
    /// Most lines of history (newline-terminated lines of output above the
    /// screen) sent on attach and printed by `history` (tmux's
    /// `history-limit`, default 2000); the ring buffer bounds them too.
    pub scrollback_lines: usize,
    /// Kill sessions orphaned this long; `None` = never.
    pub orphan_timeout: Option<Duration>,
    /// Keep exited sessions listed this long.
    pub exited_retention: Duration,
    /// Sessions per login name.
    pub max_per_user: usize,
    /// What a shell request does (`on_shell`), per user.
    pub on_shell: OnShellRules,
    /// A "while you were away" line before the redraw of a terminal that
    /// attaches after output came while no client was attached.
    pub away_summary: bool,
    /// Bytes of each session's output kept on disk, in its history file
    /// (default 16 MiB; 0: none written).
    pub history_file_bytes: u64,
    /// How long a lost session's files are kept after its last activity
    /// (default 7 days).
    pub lost_retention: Duration,
}

/// `on_shell` as `[sessions]` and `[[users]]` set it.
#[derive(Debug, Clone, Default)]
pub struct OnShellRules {
    /// `[sessions] on_shell`: for users without their own.
    pub default: OnShell,
    /// The `on_shell` of each `[[users]]` entry that sets one, by login name.
    pub per_user: HashMap<String, OnShell>,
}

impl OnShellRules {
    /// What a shell request of login name `user` does.
    pub fn of(&self, user: &str) -> OnShell {
        self.per_user.get(user).copied().unwrap_or(self.default)
    }
}

/// What a shell request (`ssh host`, what phone apps send) does when the
/// login names no session (`alice+NAME` always attaches or creates NAME):
/// `[sessions] on_shell`, or a `[[users]]` entry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnShell {
    /// A new session; when the user has detached sessions, a line before
    /// the shell's output names them and how to reach them.
    #[default]
    New,
    /// The user's most recently detached session (as `attach` with no
    /// REF); a new one when none is detached.
    Attach,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    notify: RawNotify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNotify {
    command: Vec<String>,
    min_interval: ConfigDuration,
}

impl Default for RawNotify {
    fn default() -> Self {
        RawNotify {
            command: Vec::new(),
            min_interval: ConfigDuration(Some(Duration::from_secs(30))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Vec<Spanned<SocketAddr>>,
    host_keys: Vec<String>,
    state_dir: String,
    keepalive_interval: ConfigDuration,
    keepalive_max: Count,
    login_grace_time: ConfigDuration,
    max_auth_attempts: Count,
    max_startups: Count,
    max_startups_per_source: Count,
    per_source_penalties: bool,
    penalty_authfail: ConfigDuration,
    penalty_noauth: ConfigDuration,
    penalty_grace_exceeded: ConfigDuration,
    penalty_min: ConfigDuration,
    penalty_max: ConfigDuration,
    penalty_max_sources: Count,
    penalty_exempt: Vec<Spanned<String>>,
    kex_algorithms: Option<Spanned<AlgorithmList>>,
    host_key_algorithms: Option<Spanned<AlgorithmList>>,
    ciphers: Option<Spanned<AlgorithmList>>,
    macs: Option<Spanned<AlgorithmList>>,
    sftp_server: Option<Spanned<String>>,
}

impl RawServer {
    /// The list written for `kind`, if any.
    fn algorithms(&self, kind: Kind) -> Option<&Spanned<AlgorithmList>> {
        match kind {
            Kind::Kex => self.kex_algorithms.as_ref(),
            Kind::HostKey => self.host_key_algorithms.as_ref(),
            Kind::Cipher => self.ciphers.as_ref(),
            Kind::Mac => self.macs.as_ref(),
        }
    }
}

/// An algorithm list as sshd_config(5) writes it (`"+hmac-sha1"`,
/// `"-*-cbc"`, `"^aes128-gcm@openssh.com"`, `"a,b"`), or an array of
/// names, which replaces the defaults.
#[derive(Deserialize)]
#[serde(untagged)]
enum AlgorithmList {
    Text(String),
    Names(Vec<String>),
}

impl AlgorithmList {
    /// The sshd_config(5) form.
    fn spec(&self) -> String {
        match self {
            AlgorithmList::Text(text) => text.clone(),
            AlgorithmList::Names(names) => names.join(","),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        let defaults = PenaltyConfig::default();
        RawServer {
            listen: vec![Spanned::new(0..0, SocketAddr::from(([127, 0, 0, 1], 2222)))],
            host_keys: vec!["keys/ssh_host_ed25519_key".into()],
            state_dir: "state".into(),
            // A vanished phone is noticed within 24 s (DESIGN §7: 30 s).
            keepalive_interval: ConfigDuration(Some(Duration::from_secs(8))),
            keepalive_max: Count(2),
            login_grace_time: ConfigDuration(Some(Duration::from_secs(30))),
            max_auth_attempts: Count(6),
            max_startups: Count(64),
            max_startups_per_source: Count(16),
            per_source_penalties: true,
            penalty_authfail: ConfigDuration(Some(defaults.authfail)),
            penalty_noauth: ConfigDuration(Some(defaults.noauth)),
            penalty_grace_exceeded: ConfigDuration(Some(defaults.grace_exceeded)),
            penalty_min: ConfigDuration(Some(defaults.min)),
            penalty_max: ConfigDuration(Some(defaults.max)),
            penalty_max_sources: Count(defaults.max_sources),
            penalty_exempt: Vec::new(),
            kex_algorithms: None,
            host_key_algorithms: None,
            ciphers: None,
            macs: None,
            sftp_server: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSessions {
    shell: Option<Spanned<String>>,
    term: Spanned<String>,
    scrollback_bytes: ConfigSize,
    scrollback_lines: Count,
    orphan_timeout: ConfigDuration,
    exited_retention: ConfigDuration,
    max_per_user: Count,
    on_shell: OnShell,
    away_summary: bool,
    history_file_bytes: SizeOrOff,
    lost_retention: ConfigDuration,
}

impl Default for RawSessions {
    fn default() -> Self {
        RawSessions {
            shell: None,
            term: Spanned::new(0..0, "xterm-256color".into()),
            scrollback_bytes: ConfigSize(1024 * 1024),
            scrollback_lines: Count(2000),
            orphan_timeout: ConfigDuration(None),
            exited_retention: ConfigDuration(Some(Duration::from_secs(3600))),
            max_per_user: Count(100),
            on_shell: OnShell::New,
            away_summary: true,
            history_file_bytes: SizeOrOff(16 * 1024 * 1024),
            lost_retention: ConfigDuration(Some(Duration::from_secs(7 * 24 * 3600))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    password_hash: Option<PasswordHash>,
    #[serde(default)]
    authorized_keys: Vec<Spanned<String>>,
    authorized_keys_file: Option<Spanned<String>>,
    on_shell: Option<OnShell>,
}

/// `"30s"`, `"24h"`, `"1h 30m"` or `"never"`.
#[derive(Clone, Copy)]
struct ConfigDuration(Option<Duration>);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "never" {
            return Ok(ConfigDuration(None));
        }
        humantime::parse_duration(&text)
            .map(|d| ConfigDuration(Some(d)))
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration \"{text}\" ({e}; write e.g. \"30s\", \"24h\" or \"never\")"
                ))
            })
    }
}

/// `"1MiB"`, `"512KiB"`, `"64 kB"`, between 1 KiB and 1 GiB.
#[derive(Clone, Copy)]
struct ConfigSize(u64);

/// A size that may also be 0 (off): `history_file_bytes = 0` or `"0"`,
/// else as [`ConfigSize`] within 64 KiB to 64 GiB.
#[derive(Clone, Copy)]
struct SizeOrOff(u64);

impl<'de> Deserialize<'de> for SizeOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(0) => return Ok(SizeOrOff(0)),
            Raw::Number(n) => n.to_string(),
            Raw::Text(text) if text.trim() == "0" => return Ok(SizeOrOff(0)),
            Raw::Text(text) => text,
        };
        let size: bytesize::ByteSize = text.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid size \"{text}\" ({e}; write e.g. \"16MiB\", or 0 for none)"
            ))
        })?;
        if !(64 << 10..=64 << 30).contains(&size.as_u64()) {
            return Err(serde::de::Error::custom(format!(
                "size \"{text}\" out of range (use 64KiB to 64GiB, or 0 for none)"
            )));
        }
        Ok(SizeOrOff(size.as_u64()))
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let size: bytesize::ByteSize = text.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid size \"{text}\" ({e}; write e.g. \"1MiB\" or \"512KiB\")"
            ))
        })?;
        if !(1024..=1 << 30).contains(&size.as_u64()) {
            return Err(serde::de::Error::custom(format!(
                "size \"{text}\" out of range (use 1KiB to 1GiB)"
            )));
        }
        Ok(ConfigSize(size.as_u64()))
    }
}

/// A positive count.
#[derive(Clone, Copy)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=1_000_000).contains(&n) {
            return Err(serde::de::Error::custom(format!(
                "{n} is out of range (use a whole number from 1 to 1000000)"
            )));
        }
        Ok(Count(n as usize))
    }
}

impl Config {
    /// Reads and validates the file at `path`. Relative paths inside it are
    /// resolved against its directory.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if it cannot be read, [`ConfigError::Invalid`]
    /// naming the key, line and column of the first problem.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Validates `text` as if read from `path`, resolving relative paths
    /// against `base`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let resolver = Resolver { text, path, base };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            resolver.invalid(
                e.span(),
                e.message().trim().to_owned(),
                "see the example server.toml in the repository",
            )
        })?;
        let on_shell_per_user = raw
            .users
            .iter()
            .filter_map(|u| Some((u.name.get_ref().clone(), u.on_shell?)))
            .collect();
        let users = resolver.users(raw.users)?;
        let mut sessions = resolver.sessions(raw.sessions)?;
        sessions.on_shell.per_user = on_shell_per_user;
        Ok(Config {
            server: resolver.server(raw.server, users.is_empty())?,
            sessions,
            users,
            notify: (!raw.notify.command.is_empty()).then(|| NotifyConfig {
                command: raw.notify.command,
                // "never": once per session (for about a century).
                min_interval: raw
                    .notify
                    .min_interval
                    .0
                    .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600)),
            }),
        })
    }
}

/// The second stage: raw values → validated ones, with errors located in
/// the file's text and relative paths resolved against its directory.
struct Resolver<'a> {
    text: &'a str,
    path: &'a Path,
    base: &'a Path,
}

impl Resolver<'_> {
    /// The error for the value at `span` (the file's start when `None`).
    fn invalid(&self, span: Option<Range<usize>>, message: String, hint: &str) -> ConfigError {
        let (line, column, key) = locate(self.text, span.unwrap_or(0..0));
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key,
            line,
            column,
            message,
            hint: hint.to_owned(),
        }
    }

    /// `p`, relative to the file's directory unless absolute.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// `[[users]]`: names unique and valid, each with a credential.
    fn users(&self, raw: Vec<RawUser>) -> Result<Vec<User>, ConfigError> {
        let mut users: Vec<User> = Vec::new();
        for raw_user in raw {
            let span = raw_user.name.span();
            let name = raw_user.name.get_ref();
            if users.iter().any(|u| u.name.as_str() == name) {
                return Err(self.invalid(
                    Some(span),
                    format!("user \"{name}\" is defined twice"),
                    "merge the two [[users]] entries",
                ));
            }
            users.push(self.user(raw_user)?);
        }
        Ok(users)
    }

    fn user(&self, raw: RawUser) -> Result<User, ConfigError> {
        let span = raw.name.span();
        let name: UserName = raw.name.get_ref().parse().map_err(|e: InvalidUserName| {
            self.invalid(Some(span.clone()), e.to_string(), UserName::RULE)
        })?;
        let mut authorized_keys = Vec::new();
        for line in &raw.authorized_keys {
            let key = parse_authorized_key(line.get_ref()).map_err(|e| {
                self.invalid(
                    Some(line.span()),
                    e.to_string(),
                    "paste one line of a .pub file, e.g. \"ssh-ed25519 AAAA... me@host\"",
                )
            })?;
            authorized_keys.push(key);
        }
        let authorized_keys_file = match &raw.authorized_keys_file {
            Some(file) => {
                let resolved = self.resolve(file.get_ref());
                read_authorized_keys(&resolved).map_err(|e| {
                    self.invalid(Some(file.span()), e.to_string(), "fix or remove the file")
                })?;
                Some(resolved)
            }
            None => None,
        };
        let user = User {
            name,
            password_hash: raw.password_hash,
            authorized_keys,
            authorized_keys_file,
        };
        if !user.has_credential() {
            return Err(self.invalid(
                Some(span),
                format!("user \"{}\" has no credential", user.name),
                "add password_hash (from `keepsh hash-password`), authorized_keys or authorized_keys_file",
            ));
        }
        Ok(user)
    }

    /// `[server]`; `no_users` (first-run mode) allows loopback only.
    fn server(&self, raw: RawServer, no_users: bool) -> Result<ServerConfig, ConfigError> {
        self.check_listen(&raw.listen, no_users)?;
        if raw.host_keys.is_empty() {
            return Err(self.invalid(
                None,
                "server.host_keys is empty".into(),
                "name at least one key file, e.g. [\"keys/ssh_host_ed25519_key\"]",
            ));
        }
        let penalties = self.penalties(&raw)?;
        let algorithms = self.algorithms(&raw)?;
        let sftp_server = self.sftp_server(raw.sftp_server.as_ref())?;
        Ok(ServerConfig {
            listen: raw.listen.into_iter().map(Spanned::into_inner).collect(),
            host_keys: raw.host_keys.iter().map(|p| self.resolve(p)).collect(),
            state_dir: self.resolve(&raw.state_dir),
            keepalive_interval: raw.keepalive_interval.0,
            keepalive_max: raw.keepalive_max.0,
            login_grace_time: raw.login_grace_time.0,
            max_auth_attempts: raw.max_auth_attempts.0,
            max_startups: raw.max_startups.0,
            max_startups_per_source: raw.max_startups_per_source.0,
            penalties,
            algorithms,
            sftp_server,
        })
    }

    fn check_listen(
        &self,
        listen: &[Spanned<SocketAddr>],
        no_users: bool,
    ) -> Result<(), ConfigError> {
        if listen.is_empty() {
            return Err(self.invalid(
                None,
                "server.listen is empty".into(),
                "listen on at least one address, e.g. [\"127.0.0.1:2222\"]",
            ));
        }
        let open = listen.iter().find(|a| !a.get_ref().ip().is_loopback());
        match open {
            Some(open) if no_users => Err(self.invalid(
                Some(open.span()),
                format!(
                    "refusing to listen on {} with no [[users]] configured",
                    open.get_ref()
                ),
                "add a [[users]] entry with a credential, or listen on 127.0.0.1 only",
            )),
            _ => Ok(()),
        }
    }

    /// The `penalty_*` keys; `None` with `per_source_penalties = false`.
    fn penalties(&self, raw: &RawServer) -> Result<Option<PenaltyConfig>, ConfigError> {
        let mut exempt = Vec::new();
        for net in &raw.penalty_exempt {
            let text = net.get_ref();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            exempt.push(parsed.map_err(|_| {
                self.invalid(
                    Some(net.span()),
                    format!("\"{text}\" is not an address or a network"),
                    "write CIDRs such as \"192.0.2.0/24\" or \"2001:db8::/32\"",
                )
            })?);
        }
        let seconds = |d: ConfigDuration| d.0.unwrap_or(Duration::ZERO);
        Ok(raw.per_source_penalties.then(|| PenaltyConfig {
            authfail: seconds(raw.penalty_authfail),
            noauth: seconds(raw.penalty_noauth),
            grace_exceeded: seconds(raw.penalty_grace_exceeded),
            min: seconds(raw.penalty_min),
            max: seconds(raw.penalty_max),
            max_sources: raw.penalty_max_sources.0,
            exempt,
        }))
    }

    /// `kex_algorithms`, `host_key_algorithms`, `ciphers`, `macs`.
    fn algorithms(&self, raw: &RawServer) -> Result<Algorithms, ConfigError> {
        let mut offered = Algorithms::default();
        for kind in Kind::ALL {
            let Some(list) = raw.algorithms(kind) else {
                continue;
            };
            let names = algorithms::resolve(kind, &list.get_ref().spec()).map_err(|e| {
                self.invalid(
                    Some(list.span()),
                    e.to_string(),
                    &format!("supported: {}", kind.supported().join(", ")),
                )
            })?;
            offered.set(kind, names);
        }
        Ok(offered)
    }

    /// `sftp_server`: the default when installed, `""` off, else a file
    /// that must exist.
    fn sftp_server(&self, raw: Option<&Spanned<String>>) -> Result<Option<PathBuf>, ConfigError> {
        match raw {
            None => Ok(Some(PathBuf::from(DEFAULT_SFTP_SERVER)).filter(|p| p.exists())),
            Some(program) if program.get_ref().is_empty() => Ok(None),
            Some(program) => {
                let path = self.resolve(program.get_ref());
                if !path.is_file() {
                    return Err(self.invalid(
                        Some(program.span()),
                        format!("sftp server \"{}\" does not exist", path.display()),
                        "install openssh-sftp-server, name its sftp-server, or set sftp_server = \"\" to refuse SFTP",
                    ));
                }
                Ok(Some(path))
            }
        }
    }

    /// `[sessions]`.
    fn sessions(&self, raw: RawSessions) -> Result<SessionsConfig, ConfigError> {
        let term: TermName = raw.term.get_ref().parse().map_err(|e: InvalidTerm| {
            self.invalid(Some(raw.term.span()), e.to_string(), TermName::RULE)
        })?;
        let shell = match raw.shell {
            Some(shell) if !Path::new(shell.get_ref()).is_absolute() => {
                return Err(self.invalid(
                    Some(shell.span()),
                    format!("shell \"{}\" is not an absolute path", shell.get_ref()),
                    "write the full path, e.g. \"/bin/bash\"",
                ));
            }
            Some(shell) => Some(PathBuf::from(shell.into_inner())),
            None => None,
        };
        Ok(SessionsConfig {
            shell,
            term,
            scrollback_bytes: raw.scrollback_bytes.0 as usize,
            scrollback_lines: raw.scrollback_lines.0,
            orphan_timeout: raw.orphan_timeout.0,
            // "never" keeps exited sessions for ~a century.
            exited_retention: raw
                .exited_retention
                .0
                .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600)),
            max_per_user: raw.max_per_user.0,
            on_shell: OnShellRules {
                default: raw.on_shell,
                per_user: HashMap::new(),
            },
            away_summary: raw.away_summary,
            history_file_bytes: raw.history_file_bytes.0,
            // "never" keeps lost sessions for ~a century.
            lost_retention: raw
                .lost_retention
                .0
                .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600)),
        })
    }
}

/// 1-based line and column of `span.start` in `text`, and the dotted key
/// written on that line (`table.key`), or `(file)` when there is none.
fn locate(text: &str, span: Range<usize>) -> (usize, usize, String) {
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let current_line = text[line_start..].lines().next().unwrap_or("");
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = current_line
        .split_once('=')
        .map(|(k, _)| k.trim().to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    let key = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(file)".into(),
    };
    (line, column, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("server.toml"), Path::new("/base")).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let config = parse("").expect("defaults are valid");
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:2222".parse().expect("addr")]
        );
        assert_eq!(
            config.server.host_keys,
            vec![PathBuf::from("/base/keys/ssh_host_ed25519_key")]
        );
        assert_eq!(
            config.server.keepalive_interval,
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            config.server.dead_peer_timeout(),
            Some(Duration::from_secs(24))
        );
        assert_eq!(config.sessions.scrollback_bytes, 1 << 20);
        assert_eq!(config.sessions.scrollback_lines, 2000);
        assert_eq!(config.sessions.orphan_timeout, None);
        assert_eq!(config.sessions.max_per_user, 100);
        assert!(config.users.is_empty());
    }

    #[test]
    fn penalties_default_to_sshds_values_and_take_cidrs() {
        let penalties = parse("")
            .expect("defaults")
            .server
            .penalties
            .expect("on by default");
        assert_eq!(penalties.authfail, Duration::from_secs(5));
        assert_eq!(penalties.min, Duration::from_secs(15));
        assert_eq!(penalties.max, Duration::from_secs(600));
        assert!(penalties.exempt.is_empty(), "loopback is not exempt");
        let config = parse(
            "[server]\npenalty_exempt = [\"192.0.2.0/24\", \"2001:db8::1\"]\npenalty_max = \"1h\"\n",
        )
        .expect("valid");
        let penalties = config.server.penalties.expect("on");
        assert_eq!(penalties.exempt.len(), 2);
        assert_eq!(penalties.max, Duration::from_secs(3600));
        let off = parse("[server]\nper_source_penalties = false\n").expect("valid");
        assert!(off.server.penalties.is_none());
        let err = parse("[server]\npenalty_exempt = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(
            err.starts_with("server.toml:2:19: server.penalty_exempt:"),
            "{err}"
        );
        assert!(err.contains("not an address or a network"), "{err}");
    }

    #[test]
    fn algorithm_lists_take_sshd_forms_and_name_what_is_supported() {
        let config =
            parse("[server]\nmacs = \"+hmac-sha1\"\nciphers = [\"aes128-ctr\", \"aes256-ctr\"]\n")
                .expect("valid lists");
        assert_eq!(config.server.algorithms.mac.last(), Some(&"hmac-sha1"));
        assert_eq!(
            config.server.algorithms.cipher,
            vec!["aes128-ctr", "aes256-ctr"]
        );
        assert_eq!(
            config.server.algorithms.kex,
            crate::algorithms::Kind::Kex.defaults()
        );
        let err = parse("[server]\nmacs = \"+hmac-md5\"\n").unwrap_err();
        assert!(err.starts_with("server.toml:2:8: server.macs:"), "{err}");
        assert!(err.contains("unsupported MAC \"hmac-md5\""), "{err}");
        assert!(
            err.contains("supported: hmac-sha2-256-etm@openssh.com"),
            "{err}"
        );
        let err = parse("[server]\nkex_algorithms = \"-*\"\n").unwrap_err();
        assert!(err.contains("leaves no key exchange method"), "{err}");
    }

    #[test]
    fn the_repository_server_toml_is_valid() {
        let text = include_str!("../server.toml");
        parse(text).expect("server.toml at the root is valid");
    }

    #[test]
    fn sftp_server_defaults_to_openssh_s_and_can_be_turned_off() {
        let default = parse("").expect("defaults").server.sftp_server;
        let installed = Path::new(DEFAULT_SFTP_SERVER).exists();
        assert_eq!(default.is_some(), installed);
        let off = parse("[server]\nsftp_server = \"\"\n").expect("off");
        assert_eq!(off.server.sftp_server, None);
        let err = parse("[server]\nsftp_server = \"/no/such/sftp-server\"\n").unwrap_err();
        assert!(
            err.starts_with("server.toml:2:15: server.sftp_server:"),
            "{err}"
        );
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn the_algorithm_defaults_documented_in_server_toml_are_the_defaults() {
        use crate::algorithms::Kind;
        let text = include_str!("../server.toml");
        for kind in Kind::ALL {
            let line = format!("# {} = \"{}\"", kind.key(), kind.defaults().join(","));
            assert!(text.contains(&line), "server.toml lacks: {line}");
        }
    }

    #[test]
    fn history_file_bytes_is_a_size_or_zero_for_none() {
        let bytes = |value: &str| {
            parse(&format!("[sessions]\nhistory_file_bytes = {value}\n"))
                .map(|c| c.sessions.history_file_bytes)
        };
        assert_eq!(parse("").unwrap().sessions.history_file_bytes, 16 << 20);
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("\"0\""), Ok(0));
        assert_eq!(bytes("\"1MiB\""), Ok(1 << 20));
        let err = bytes("\"1KiB\"").unwrap_err();
        assert!(
            err.contains("sessions.history_file_bytes") && err.contains("64KiB"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_position_and_key() {
        let err = parse("[server]\nlisten = [\"127.0.0.1:1\"]\nlisen = 3\n").unwrap_err();
        assert!(err.starts_with("server.toml:3:1: server.lisen:"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_values_name_key_line_and_column() {
        let err = parse("[sessions]\norphan_timeout = \"soon\"\n").unwrap_err();
        assert!(
            err.starts_with("server.toml:2:18: sessions.orphan_timeout:"),
            "{err}"
        );
        assert!(err.contains("invalid duration"), "{err}");
        let err = parse("[sessions]\nscrollback_bytes = \"lots\"\n").unwrap_err();
        assert!(
            err.contains("sessions.scrollback_bytes") && err.contains("invalid size"),
            "{err}"
        );
        let err = parse("[server]\nmax_startups = 0\n").unwrap_err();
        assert!(
            err.contains("server.max_startups") && err.contains("out of range"),
            "{err}"
        );
        let err = parse("[server]\nlisten = [\"nowhere\"]\n").unwrap_err();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn never_and_sizes_parse() {
        let config = parse(
            "[sessions]\norphan_timeout = \"2h\"\nexited_retention = \"never\"\nscrollback_bytes = \"64KiB\"\n",
        )
        .expect("valid");
        assert_eq!(
            config.sessions.orphan_timeout,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(config.sessions.scrollback_bytes, 64 * 1024);
    }

    #[test]
    fn listening_beyond_loopback_needs_a_configured_user() {
        let err = parse("[server]\nlisten = [\"0.0.0.0:2222\"]\n").unwrap_err();
        assert!(err.contains("refusing to listen on 0.0.0.0:2222"), "{err}");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpgIMZrZ4fZ6dKvdPGWBqfbnIcUj0ezoW6YJwu8CXhR me";
        let ok = format!(
            "[server]\nlisten = [\"0.0.0.0:2222\"]\n[[users]]\nname = \"alice\"\nauthorized_keys = [\"{key}\"]\n"
        );
        parse(&ok).expect("a user with a key may listen anywhere");
    }

    #[test]
    fn users_need_valid_names_and_credentials() {
        let err = parse("[[users]]\nname = \"al ice\"\npassword_hash = \"x\"\n").unwrap_err();
        assert!(err.contains("users"), "{err}");
        let err = parse("[[users]]\nname = \"alice\"\n").unwrap_err();
        assert!(err.contains("has no credential"), "{err}");
        let err =
            parse("[[users]]\nname = \"alice\"\npassword_hash = \"plaintext\"\n").unwrap_err();
        assert!(
            err.contains("users.password_hash") && err.contains("hash-password"),
            "{err}"
        );
        let err =
            parse("[[users]]\nname = \"alice\"\nauthorized_keys = [\"ssh-ed25519 garbage\"]\n")
                .unwrap_err();
        assert!(err.contains("users.authorized_keys"), "{err}");
    }

    #[test]
    fn on_shell_is_set_for_all_and_per_user() {
        let key = "authorized_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn8f3I1ZtmYGk9IEPnQJN6Vz1ag8eQdXZzeM6QgC6eY t\"]";
        let text = format!(
            "[sessions]\non_shell = \"attach\"\n\
             [[users]]\nname = \"alice\"\n{key}\n\
             [[users]]\nname = \"bob\"\n{key}\non_shell = \"new\"\n"
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.sessions.on_shell.of("alice"), OnShell::Attach);
        assert_eq!(config.sessions.on_shell.of("bob"), OnShell::New);
        assert_eq!(
            parse("").expect("defaults").sessions.on_shell.of("x"),
            OnShell::New
        );
        let err = parse("[sessions]\non_shell = \"resume\"\n").unwrap_err();
        assert!(
            err.contains("on_shell") && err.contains("`new`") && err.contains("`attach`"),
            "{err}"
        );
    }

    #[test]
    fn notify_is_off_without_a_command_and_rate_limited_by_default() {
        assert_eq!(parse("").expect("defaults").notify, None);
        let config =
            parse("[notify]\ncommand = [\"/usr/bin/ntfy\", \"publish\"]\n").expect("valid");
        assert_eq!(
            config.notify,
            Some(NotifyConfig {
                command: vec!["/usr/bin/ntfy".into(), "publish".into()],
                min_interval: Duration::from_secs(30),
            })
        );
        let err = parse("[notify]\ncommand = \"ntfy publish\"\n").unwrap_err();
        assert!(err.contains("notify.command"), "{err}");
    }
}
