//! Who may log in: argon2id password hashes and authorized_keys (README "Security model").
//!
//! Invariants: passwords and key material are never logged; an unknown user
//! costs the same argon2 work as a known one (no user-existence timing
//! oracle); russh adds the constant rejection delay (`auth_rejection_time`)
//! and counts attempts (`max_auth_attempts`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use russh::keys::PublicKey;
use russh::keys::ssh_key::AuthorizedKeys;
use serde::Deserialize;

use crate::protocol::{InvalidName, SessionName};

/// Why a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A line is not a public key in authorized_keys format.
    #[error("not a public key in authorized_keys format: {0}")]
    BadKey(String),
    /// An authorized_keys file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A password hash could not be computed.
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// An argon2 password hash in PHC string format
/// (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`), checked when read.
#[derive(Clone)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Checks that `text` is an argon2 PHC string.
    ///
    /// # Errors
    /// A message saying how to produce a valid one.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let parsed = argon2::password_hash::phc::PasswordHash::new(text)
            .map_err(|_| "not an argon2 PHC string".to_owned())?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(format!("algorithm {} is not argon2", parsed.algorithm));
        }
        Ok(PasswordHash(text.to_owned()))
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PasswordHash::parse(&text).map_err(|e| {
            serde::de::Error::custom(format!("{e} (generate one with `keepsh hash-password`)"))
        })
    }
}

/// Hashes `password` with argon2id, default parameters and a random salt.
///
/// # Errors
/// [`AuthError::Hash`] if the OS gives no randomness.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Parses one authorized_keys line (options allowed, ignored).
///
/// # Errors
/// [`AuthError::BadKey`] if the line holds no valid key.
pub fn parse_authorized_key(line: &str) -> Result<PublicKey, AuthError> {
    let bad = |e: &dyn std::fmt::Display| AuthError::BadKey(e.to_string());
    let mut entries = AuthorizedKeys::new(line);
    match entries.next() {
        Some(Ok(entry)) => Ok(entry.public_key().clone()),
        Some(Err(e)) => Err(bad(&e)),
        None => Err(bad(&"empty line")),
    }
}

/// Reads an authorized_keys file: one key per line, `#` comments and blank
/// lines skipped.
///
/// # Errors
/// [`AuthError::Read`] if the file cannot be read, [`AuthError::BadKey`]
/// naming the first bad line.
pub fn read_authorized_keys(path: &Path) -> Result<Vec<PublicKey>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse_authorized_key(line)
            .map_err(|e| AuthError::BadKey(format!("line {}: {e}", number + 1)))?;
        keys.push(key);
    }
    Ok(keys)
}

/// A configured user's login name: 1–64 characters of `[A-Za-z0-9._-]`
/// (the alphabet of session names, [`crate::protocol::is_name`]; no `+`,
/// which separates a session name at login).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserName(String);

/// Why a string is not a valid [`UserName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user name \"{0}\"")]
pub struct InvalidUserName(pub String);

impl UserName {
    /// What a valid name looks like, for error messages.
    pub const RULE: &'static str =
        "use 1-64 characters of A-Z a-z 0-9 . _ - (no '+': it separates a session name at login)";

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for UserName {
    type Err = InvalidUserName;

    /// # Errors
    /// [`InvalidUserName`] when `s` is not [`crate::protocol::is_name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if crate::protocol::is_name(s) {
            Ok(UserName(s.to_owned()))
        } else {
            Err(InvalidUserName(crate::protocol::printable(s)))
        }
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user who may log in (a `[[users]]` entry, or the first-run user).
#[derive(Debug, Clone)]
pub struct User {
    /// SSH login name.
    pub name: UserName,
    /// Argon2 PHC hash of the password, if password login is allowed.
    pub password_hash: Option<PasswordHash>,
    /// Keys given inline.
    pub authorized_keys: Vec<PublicKey>,
    /// An authorized_keys file, re-read on each login.
    pub authorized_keys_file: Option<PathBuf>,
}

impl User {
    /// Whether any credential is configured.
    pub fn has_credential(&self) -> bool {
        self.password_hash.is_some()
            || !self.authorized_keys.is_empty()
            || self.authorized_keys_file.is_some()
    }
}

/// The SSH login name split into the user and, for clients that cannot send
/// a command (`ssh alice+work@host`), the session to attach or create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The configured user name.
    pub user: String,
    /// The session named after `+`, if any.
    pub target: Option<Result<SessionName, InvalidName>>,
}

impl Login {
    /// Splits `alice+work` into `alice` and the session `work`.
    pub fn parse(login: &str) -> Login {
        match login.split_once('+') {
            Some((user, target)) => Login {
                user: user.to_owned(),
                target: Some(target.parse()),
            },
            None => Login {
                user: login.to_owned(),
                target: None,
            },
        }
    }
}

struct Credentials {
    password_hash: Option<PasswordHash>,
    keys: Vec<PublicKey>,
    keys_file: Option<PathBuf>,
}

/// Checks credentials against the configured users.
pub struct Authenticator {
    users: HashMap<String, Credentials>,
    /// Verified against for unknown users, so they cost the same time.
    dummy_hash: PasswordHash,
    /// Argon2 verifications at once (one per worker): each takes ~19 MiB
    /// and a core for tens of milliseconds, and unauthenticated clients can
    /// ask for them.
    verify_slots: tokio::sync::Semaphore,
    /// The verification workers' queue (see [`Verifiers`]).
    verifiers: Verifiers,
}

/// How long a verification worker keeps its buffer without a job: a burst
/// reuses it, and it is given back once the burst is over.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// One verification for a worker.
struct Job {
    password: String,
    hash: PasswordHash,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// A fixed set of threads that verify argon2 hashes, each reusing one
/// memory buffer (`m_cost` KiB, 19 MiB with the default parameters) for
/// every verification. Why not `spawn_blocking`: each verification there
/// may land on a new blocking thread, and glibc keeps each thread's freed
/// 19 MiB in that thread's arena; measured, 30 concurrent wrong passwords
/// took the server from 7 MiB to 398 MiB of RSS, for good. Here the
/// memory is at most one buffer per worker, whatever the burst, and a
/// worker idle for [`IDLE`] frees its buffer and has the allocator give
/// it back to the system.
struct Verifiers {
    queue: std::sync::Arc<Queue>,
    /// Workers that started; with none, verification fails closed.
    workers: usize,
}

/// Jobs waiting for a worker, shared by all of them. A condition variable
/// rather than a channel so that each idle worker waits with its own
/// deadline.
struct Queue {
    state: std::sync::Mutex<QueueState>,
    ready: std::sync::Condvar,
    /// How long a worker keeps its buffer without a job ([`IDLE`]).
    idle: std::time::Duration,
    /// Buffers freed by idle workers so far (logged with each).
    freed: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct QueueState {
    jobs: std::collections::VecDeque<Job>,
    /// The authenticator is gone: workers end.
    closed: bool,
}

impl Queue {
    fn new(idle: std::time::Duration) -> Queue {
        Queue {
            state: std::sync::Mutex::default(),
            ready: std::sync::Condvar::new(),
            idle,
            freed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next job; `None` once closed. Frees `blocks` (and has the
    /// allocator give the memory back) after `idle` without a job.
    fn next(&self, blocks: &mut Vec<argon2::Block>) -> Option<Job> {
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            let (next, wait) = self.ready.wait_timeout(state, self.idle).ok()?;
            state = next;
            if wait.timed_out() && !blocks.is_empty() && state.jobs.is_empty() {
                drop(state);
                *blocks = Vec::new();
                let freed = self
                    .freed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                give_back_freed_memory(freed);
                state = self.state.lock().ok()?;
            }
        }
    }
}

impl Verifiers {
    fn start(workers: usize) -> Verifiers {
        let queue = std::sync::Arc::new(Queue::new(IDLE));
        let mut started = 0;
        for n in 0..workers {
            let queue = std::sync::Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("keepsh-argon2-{n}"))
                .spawn(move || {
                    let mut blocks: Vec<argon2::Block> = Vec::new();
                    while let Some(job) = queue.next(&mut blocks) {
                        let verified = verify(&job.password, &job.hash, &mut blocks);
                        let _ = job.reply.send(verified);
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(error) => {
                    tracing::warn!(%error, "starting a password verification thread failed");
                }
            }
        }
        Verifiers {
            queue,
            workers: started,
        }
    }

    /// Verifies on a worker; false if none is running.
    async fn verify(&self, password: &str, hash: PasswordHash) -> bool {
        if self.workers == 0 {
            return false;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            password: password.to_owned(),
            hash,
            reply,
        };
        match self.queue.state.lock() {
            Ok(mut state) => state.jobs.push_back(job),
            Err(_) => return false,
        }
        self.queue.ready.notify_one();
        answer.await.unwrap_or(false)
    }
}

impl Drop for Verifiers {
    fn drop(&mut self) {
        if let Ok(mut state) = self.queue.state.lock() {
            state.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

/// Gives the argon2 buffer's pages back ([`crate::memory`]): without
/// this, the server's RSS stays at the peak of the last burst of logins.
fn give_back_freed_memory(freed: u64) {
    let released = crate::memory::give_back_freed_memory();
    tracing::debug!(
        released,
        freed,
        "argon2 worker idle: its buffer freed and memory given back"
    );
}

/// The hash an unknown user's password is checked against: argon2id with
/// the costliest parameters among `configured` (memory × passes), so that
/// a name that does not exist takes as long as one that does, whatever
/// parameters the configured hashes were made with; the argon2 crate's
/// defaults (19 MiB, 2 passes) when no user has a password.
///
/// # Errors
/// [`AuthError::Hash`] if the OS gives no randomness.
fn dummy_hash<'a>(
    configured: impl Iterator<Item = &'a PasswordHash>,
) -> Result<PasswordHash, AuthError> {
    use argon2::password_hash::phc;
    let params = configured
        .filter_map(|hash| {
            let parsed = phc::PasswordHash::new(&hash.0).ok()?;
            argon2::Params::try_from(&parsed).ok()
        })
        .max_by_key(|params| params.block_count() as u64 * u64::from(params.t_cost()))
        .unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"keepsh: no such user")
        .map(|hash| PasswordHash(hash.to_string()))
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches `hash`, computing argon2 in `blocks` (grown
/// to the hash's `m_cost` once, then reused). The comparison is constant
/// time (`password_hash::Output`'s equality).
fn verify(password: &str, hash: &PasswordHash, blocks: &mut Vec<argon2::Block>) -> bool {
    use argon2::password_hash::phc;
    let Ok(parsed) = phc::PasswordHash::new(&hash.0) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        Some(Ok(version)) => version,
        None => argon2::Version::default(),
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hasher = Argon2::new(algorithm, version, params);
    if hasher
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut blocks[..needed],
        )
        .is_err()
    {
        return false;
    }
    phc::Output::new(&out).is_ok_and(|out| &out == expected)
}

impl Authenticator {
    /// An authenticator for `users`.
    ///
    /// # Errors
    /// [`AuthError::Hash`] if the timing-equaliser hash cannot be made.
    pub fn new(users: &[User]) -> Result<Authenticator, AuthError> {
        let users: HashMap<String, Credentials> = users
            .iter()
            .map(|u| {
                (
                    u.name.as_str().to_owned(),
                    Credentials {
                        password_hash: u.password_hash.clone(),
                        keys: u.authorized_keys.clone(),
                        keys_file: u.authorized_keys_file.clone(),
                    },
                )
            })
            .collect();
        let dummy = dummy_hash(users.values().filter_map(|c| c.password_hash.as_ref()))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Authenticator {
            users,
            dummy_hash: dummy,
            verify_slots: tokio::sync::Semaphore::new(cores),
            verifiers: Verifiers::start(cores),
        })
    }

    /// Whether `user` exists and may log in with `password`. Runs argon2 on
    /// one of the verification threads (tens of milliseconds), at most one
    /// per core at once.
    pub async fn check_password(&self, user: &str, password: &str) -> bool {
        let Ok(_slot) = self.verify_slots.acquire().await else {
            return false;
        };
        let (hash, known) = match self.users.get(user).and_then(|c| c.password_hash.clone()) {
            Some(hash) => (hash, true),
            None => (self.dummy_hash.clone(), false),
        };
        let verified = self.verifiers.verify(password, hash).await;
        verified && known
    }

    /// Whether `user` may log in with `key`. An authorized_keys file is
    /// re-read on each call, so added keys work without a restart.
    pub fn check_key(&self, user: &str, key: &PublicKey) -> bool {
        let Some(credentials) = self.users.get(user) else {
            return false;
        };
        let matches = |k: &PublicKey| k.key_data() == key.key_data();
        if credentials.keys.iter().any(matches) {
            return true;
        }
        match &credentials.keys_file {
            Some(path) => match read_authorized_keys(path) {
                Ok(keys) => keys.iter().any(matches),
                Err(error) => {
                    tracing::warn!(%error, "authorized_keys_file unreadable");
                    false
                }
            },
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpgIMZrZ4fZ6dKvdPGWBqfbnIcUj0ezoW6YJwu8CXhR me@host";

    #[test]
    fn user_names_share_the_session_name_alphabet_and_never_hold_a_plus() {
        assert!("alice".parse::<UserName>().is_ok());
        assert!("a.b_c-9".parse::<UserName>().is_ok());
        for bad in ["", "alice+work", "al ice", "é", &"x".repeat(65)] {
            assert!(bad.parse::<UserName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn login_names_split_at_plus() {
        assert_eq!(Login::parse("alice").target, None);
        let login = Login::parse("alice+work");
        assert_eq!(login.user, "alice");
        assert_eq!(login.target, Some(Ok("work".parse().expect("valid"))));
        assert!(matches!(Login::parse("alice+a b").target, Some(Err(_))));
    }

    #[test]
    fn authorized_key_lines_parse_with_or_without_options() {
        parse_authorized_key(KEY).expect("plain line");
        parse_authorized_key(&format!("no-pty {KEY}")).expect("with options");
        assert!(parse_authorized_key("ssh-ed25519 AAAA").is_err());
        assert!(parse_authorized_key("").is_err());
    }

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let user = User {
            name: "alice".parse().expect("name"),
            password_hash: Some(PasswordHash::parse(&hash).expect("valid")),
            authorized_keys: vec![],
            authorized_keys_file: None,
        };
        let auth = Authenticator::new(&[user]).expect("authenticator");
        assert!(auth.check_password("alice", "s3cret").await);
        assert!(!auth.check_password("alice", "wrong").await);
        assert!(!auth.check_password("bob", "s3cret").await);
    }

    /// An unknown user costs what the costliest configured hash costs:
    /// cheaper or dearer than the crate's defaults alike.
    #[test]
    fn the_dummy_hash_takes_the_costliest_configured_parameters() {
        let made = |m: u32, t: u32| {
            let params = argon2::Params::new(m, t, 1, None).expect("params");
            let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            PasswordHash(argon2.hash_password(b"x").expect("hash").to_string())
        };
        let cost = |hash: &PasswordHash| {
            let parsed = argon2::password_hash::phc::PasswordHash::new(&hash.0).expect("phc");
            let params = argon2::Params::try_from(&parsed).expect("params");
            (params.m_cost(), params.t_cost())
        };
        let cheap = [made(8, 1), made(16, 1), made(8, 3)];
        assert_eq!(cost(&dummy_hash(cheap.iter()).expect("dummy")), (8, 3));
        let dear = [made(65536, 3)];
        assert_eq!(cost(&dummy_hash(dear.iter()).expect("dummy")), (65536, 3));
        let default = argon2::Params::default();
        assert_eq!(
            cost(&dummy_hash(std::iter::empty()).expect("dummy")),
            (default.m_cost(), default.t_cost())
        );
    }

    #[test]
    fn verification_reuses_its_buffer_and_agrees_with_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        let small = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(4096, 1, 1, None).expect("params"),
        );
        let mut blocks = Vec::new();
        for (text, argon2) in [
            (hash_password("s3cret").expect("hash"), Argon2::default()),
            (
                small.hash_password(b"s3cret").expect("hash").to_string(),
                small.clone(),
            ),
        ] {
            let hash = PasswordHash::parse(&text).expect("valid");
            for password in ["s3cret", "wrong", ""] {
                let ours = verify(password, &hash, &mut blocks);
                let theirs = argon2
                    .verify_password(password.as_bytes(), text.as_str())
                    .is_ok();
                assert_eq!(ours, theirs, "{password:?} against {text}");
            }
        }
        // The default parameters' 19 MiB (19456 blocks of 1 KiB), kept.
        assert_eq!(blocks.len(), 19456);
    }

    #[test]
    fn an_idle_worker_frees_its_buffer_and_a_closed_queue_ends_it() {
        let queue = std::sync::Arc::new(Queue::new(std::time::Duration::from_millis(1)));
        let worker = {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || {
                let mut blocks = vec![argon2::Block::default(); 16];
                let job = queue.next(&mut blocks);
                (job.is_none(), blocks.len())
            })
        };
        // Closed once the idle worker has freed its buffer.
        let started = std::time::Instant::now();
        while queue.freed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the idle worker never freed its buffer"
            );
            std::thread::yield_now();
        }
        queue.state.lock().expect("lock").closed = true;
        queue.ready.notify_all();
        assert_eq!(worker.join().expect("worker"), (true, 0));
    }

    #[test]
    fn keys_match_by_key_data_not_comment() {
        let key = parse_authorized_key(KEY).expect("key");
        let other_comment = parse_authorized_key(&KEY.replace("me@host", "other")).expect("key");
        let user = User {
            name: "alice".parse().expect("name"),
            password_hash: None,
            authorized_keys: vec![key],
            authorized_keys_file: None,
        };
        let auth = Authenticator::new(&[user]).expect("authenticator");
        assert!(auth.check_key("alice", &other_comment));
        assert!(!auth.check_key("bob", &other_comment));
    }
}
