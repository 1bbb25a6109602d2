//! Which sessions exist, who owns them and what they are called.
//!
//! Invariants:
//! - Each SSH login name has a private set of sessions. Every lookup is
//!   scoped to one owner, so another user's session looks exactly like a
//!   missing one (no existence oracle).
//! - Names are unique per owner. The registry's name is authoritative; the
//!   session is told of renames afterwards.
//! - The lock guards only maps: no I/O and no `.await` under it. Starting a
//!   program happens outside it, with the name reserved meanwhile.
//! - Sessions whose task has ended are pruned on every access.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::lost;
use crate::protocol::host::{
    HostSpec, SessionMeta, SessionSettings, SpawnError, SpawnSpec, socket_path,
};
use crate::protocol::{SessionId, SessionInfo, SessionName, SessionState};
use crate::remote::StartError;
use crate::remote::{self, SessionHandle};

/// The shortest id prefix accepted as a reference, in hex digits (as git and
/// docker do, a short prefix would match too much by accident).
pub const MIN_PREFIX: usize = 4;

/// Why a registry operation failed. Each maps to an operational error (exit
/// status 1) for the user.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No session of this user matches.
    #[error("no session '{0}'")]
    NotFound(String),
    /// An id prefix matches several sessions.
    #[error("'{reference}' matches {count} sessions")]
    Ambiguous {
        /// The reference given.
        reference: String,
        /// How many sessions it matches.
        count: usize,
    },
    /// The user already has a session with this name.
    #[error("a session named '{0}' already exists")]
    DuplicateName(SessionName),
    /// `sessions.max_per_user` reached.
    #[error("session limit reached ({0} per user)")]
    LimitReached(usize),
    /// No orphaned session to attach to.
    #[error("no detached session to attach")]
    NoneDetached,
    /// The session could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
}

impl RegistryError {
    /// What the user can do about it, for the `(...)` part of the error line.
    pub fn hint(&self) -> &'static str {
        match self {
            RegistryError::NotFound(_) => "see 'list' for your sessions",
            RegistryError::Ambiguous { .. } => "give more characters of the id, or the name",
            RegistryError::DuplicateName(_) => "choose another name, or attach to it",
            RegistryError::LimitReached(_) => "kill a session you no longer need",
            RegistryError::NoneDetached => "give a session to attach; see 'list'",
            RegistryError::Start(StartError::Spawn(
                SpawnError::NotFound(_) | SpawnError::Exec { .. },
            )) => "check the command and its PATH",
            RegistryError::Start(_) => "see the server's log",
        }
    }
}

/// A session found by reference.
#[derive(Clone)]
pub struct Found {
    /// Its id.
    pub id: SessionId,
    /// Its current name.
    pub name: SessionName,
    /// How to reach it.
    pub handle: SessionHandle,
}

struct Entry {
    id: SessionId,
    name: SessionName,
    /// `None` while the program is being started.
    handle: Option<SessionHandle>,
    /// A session process that speaks another protocol version: listed,
    /// never resolved.
    incompatible: Option<SessionInfo>,
}

/// A session found by reference: live, or lost (see [`crate::lost`]).
pub enum Resolved {
    /// A session with a process.
    Live(Found),
    /// A session whose process ended without a clean end: its files.
    Lost(SessionMeta),
}

/// The per-user table of sessions.
pub struct Registry {
    users: Mutex<HashMap<String, Vec<Entry>>>,
    state_dir: PathBuf,
    settings: SessionSettings,
    max_per_user: usize,
    /// The keepsh binary whose `session-host` runs each session.
    host_program: PathBuf,
    /// `lost_retention`.
    lost_retention: Duration,
}

impl Registry {
    /// An empty registry whose sessions get `settings`, at most
    /// `max_per_user` per login name, with their sockets in `state_dir`.
    pub fn new(state_dir: PathBuf, settings: SessionSettings, max_per_user: usize) -> Registry {
        Registry {
            users: Mutex::new(HashMap::new()),
            state_dir,
            settings,
            max_per_user,
            host_program: PathBuf::from(remote::SELF_EXE),
            lost_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Lost sessions' files are removed `retention` after their last
    /// activity (`lost_retention`; 7 days unless set).
    pub fn with_lost_retention(mut self, retention: Duration) -> Registry {
        self.lost_retention = retention;
        self
    }

    /// The state directory (sockets, history files).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// History lines sent on attach and printed by `history`
    /// (`scrollback_lines`).
    pub fn scrollback_lines(&self) -> usize {
        self.settings.scrollback_lines
    }

    /// `owner`'s lost sessions, oldest first (read from the state
    /// directory, outside the lock); with `owner` `None`, everyone's.
    pub fn lost(&self, owner: Option<&str>) -> Vec<SessionMeta> {
        let live: HashSet<SessionId> = self.lock().values().flatten().map(|e| e.id).collect();
        let mut lost = lost::scan(
            &self.state_dir,
            self.lost_retention,
            SystemTime::now(),
            |id| live.contains(&id),
        );
        lost.retain(|meta| owner.is_none_or(|owner| meta.owner == owner));
        lost
    }

    /// Finds `owner`'s session by reference among the live ones, else
    /// among the lost ones.
    ///
    /// # Errors
    /// `NotFound` or `Ambiguous`.
    pub fn resolve_any(&self, owner: &str, reference: &str) -> Result<Resolved, RegistryError> {
        match self.resolve(owner, reference) {
            Err(RegistryError::NotFound(_)) => {
                let mut lost = self.lost(Some(owner));
                let keys: Vec<(SessionId, &SessionName)> =
                    lost.iter().map(|m| (m.id, &m.name)).collect();
                let index = resolve_ref(&keys, reference)?;
                Ok(Resolved::Lost(lost.swap_remove(index)))
            }
            live => live.map(Resolved::Live),
        }
    }

    /// Sessions are started by the keepsh binary at `program` instead of
    /// this process's own (for running the server inside another program,
    /// such as a test).
    pub fn with_host_program(mut self, program: PathBuf) -> Registry {
        self.host_program = program;
        self
    }

    /// Adds a running session found at start (see `StateDir::discover`).
    pub fn adopt(&self, handle: SessionHandle) {
        let info = handle.info();
        let mut users = self.lock();
        users.entry(info.owner).or_default().push(Entry {
            id: info.id,
            name: info.name,
            handle: Some(handle),
            incompatible: None,
        });
    }

    /// Lists, for its owner, a session process that speaks another protocol
    /// version (`info.state` is `Incompatible`).
    pub fn adopt_incompatible(&self, info: SessionInfo) {
        let mut users = self.lock();
        users.entry(info.owner.clone()).or_default().push(Entry {
            id: info.id,
            name: info.name.clone(),
            handle: None,
            incompatible: Some(info),
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        // No code panics while holding this lock (it guards plain map edits),
        // so a poisoned lock still holds consistent data.
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        for entries in users.values_mut() {
            entries.retain(|e| e.handle.as_ref().is_none_or(|h| !h.is_gone()));
        }
        users.retain(|_, entries| !entries.is_empty());
        users
    }

    /// Creates a session for `owner`, named `name` or the lowest free
    /// integer, running `spec`.
    ///
    /// # Errors
    /// `DuplicateName`, `LimitReached`, or `Spawn` if the program cannot start.
    pub async fn create(
        &self,
        owner: &str,
        name: Option<SessionName>,
        spec: SpawnSpec,
    ) -> Result<Found, RegistryError> {
        self.start(owner, SessionId::random(), name, spec, false)
            .await
    }

    /// Starts lost session `meta` again (`restart`): its id and name,
    /// running `spec`, its output starting with its history files'.
    ///
    /// # Errors
    /// As [`Registry::create`] (`DuplicateName`: a live session took its
    /// name meanwhile).
    pub async fn restart(
        &self,
        meta: &SessionMeta,
        spec: SpawnSpec,
    ) -> Result<Found, RegistryError> {
        let name = Some(meta.name.clone());
        // The socket a killed process left behind (none is listening).
        let _ = std::fs::remove_file(socket_path(&self.state_dir, meta.id));
        self.start(&meta.owner, meta.id, name, spec, true).await
    }

    /// Reserves `name` (or the lowest free integer) for session `id` of
    /// `owner`, the entry marked as starting.
    fn reserve(
        &self,
        owner: &str,
        id: SessionId,
        name: Option<SessionName>,
    ) -> Result<SessionName, RegistryError> {
        let mut users = self.lock();
        let entries = users.entry(owner.to_owned()).or_default();
        if entries.len() >= self.max_per_user {
            return Err(RegistryError::LimitReached(self.max_per_user));
        }
        let name = match name {
            Some(name) if entries.iter().any(|e| e.name == name) => {
                return Err(RegistryError::DuplicateName(name));
            }
            Some(name) => name,
            None => (0..)
                .map(SessionName::numbered)
                .find(|n| entries.iter().all(|e| &e.name != n))
                .expect("fewer than u32::MAX sessions exist"),
        };
        entries.push(Entry {
            id,
            name: name.clone(),
            handle: None,
            incompatible: None,
        });
        Ok(name)
    }

    async fn start(
        &self,
        owner: &str,
        id: SessionId,
        name: Option<SessionName>,
        spec: SpawnSpec,
        resume: bool,
    ) -> Result<Found, RegistryError> {
        let name = self.reserve(owner, id, name)?;
        // Outside the lock: the session process starts the program.
        let host = HostSpec {
            id,
            owner: owner.to_owned(),
            name: name.clone(),
            spawn: spec,
            settings: self.settings.clone(),
            resume,
        };
        let started = remote::start(&self.host_program, &self.state_dir, &host).await;
        let mut users = self.lock();
        let entries = users.entry(owner.to_owned()).or_default();
        match started {
            Ok(handle) => {
                // A starting entry cannot be renamed (lookups skip it), so
                // its name is still the reserved one.
                if let Some(entry) = entries.iter_mut().find(|e| e.id == id) {
                    entry.handle = Some(handle.clone());
                }
                Ok(Found { id, name, handle })
            }
            Err(error) => {
                entries.retain(|e| e.id != id);
                Err(error.into())
            }
        }
    }

    /// Finds `owner`'s session by name, full id or unique id prefix.
    ///
    /// # Errors
    /// `NotFound` or `Ambiguous`.
    pub fn resolve(&self, owner: &str, reference: &str) -> Result<Found, RegistryError> {
        let users = self.lock();
        let live: Vec<&Entry> = users
            .get(owner)
            .map(|entries| entries.iter().filter(|e| e.handle.is_some()).collect())
            .unwrap_or_default();
        let keys: Vec<(SessionId, &SessionName)> = live.iter().map(|e| (e.id, &e.name)).collect();
        let index = resolve_ref(&keys, reference)?;
        Ok(found(live[index]))
    }

    /// `owner`'s running session whose last client left most recently (for
    /// `attach` with no reference).
    ///
    /// # Errors
    /// `NoneDetached` when no session is orphaned.
    pub fn last_detached(&self, owner: &str) -> Result<Found, RegistryError> {
        let users = self.lock();
        users
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let info = e.handle.as_ref()?.info();
                (info.state == SessionState::Orphaned)
                    .then(|| (info.detached_at.unwrap_or(info.created), e))
            })
            .max_by_key(|(at, _)| *at)
            .map(|(_, e)| found(e))
            .ok_or(RegistryError::NoneDetached)
    }

    /// Snapshots of `owner`'s sessions, live and lost, oldest first.
    pub fn list(&self, owner: &str) -> Vec<SessionInfo> {
        let mut infos = self.list_live(owner);
        let lost = self.lost(Some(owner));
        infos.extend(lost.iter().map(|meta| lost::info(&self.state_dir, meta)));
        infos.sort_by_key(|i| i.created);
        infos
    }

    fn list_live(&self, owner: &str) -> Vec<SessionInfo> {
        let users = self.lock();
        let mut infos: Vec<SessionInfo> = users
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let mut info = match (&e.handle, &e.incompatible) {
                    (Some(handle), _) => handle.info(),
                    (None, Some(info)) => info.clone(),
                    (None, None) => return None,
                };
                info.name = e.name.clone();
                Some(info)
            })
            .collect();
        infos.sort_by_key(|i| i.created);
        infos
    }

    /// Renames `owner`'s session `reference` to `new`. The caller tells the
    /// session (`ControlRequest::Rename`).
    ///
    /// # Errors
    /// `NotFound`, `Ambiguous`, or `DuplicateName`.
    pub fn rename(
        &self,
        owner: &str,
        reference: &str,
        new: SessionName,
    ) -> Result<Found, RegistryError> {
        let mut users = self.lock();
        let entries = users
            .get_mut(owner)
            .ok_or_else(|| RegistryError::NotFound(reference.to_owned()))?;
        let keys: Vec<(SessionId, &SessionName)> = entries
            .iter()
            .filter(|e| e.handle.is_some())
            .map(|e| (e.id, &e.name))
            .collect();
        let id = keys[resolve_ref(&keys, reference)?].0;
        if entries.iter().any(|e| e.name == new && e.id != id) {
            return Err(RegistryError::DuplicateName(new));
        }
        let entry = entries
            .iter_mut()
            .find(|e| e.id == id)
            .expect("resolve_ref returned an index into these entries");
        entry.name = new;
        Ok(found(entry))
    }

    /// Forgets a session at once (after `kill`), freeing its name.
    pub fn remove(&self, owner: &str, id: SessionId) {
        if let Some(entries) = self.lock().get_mut(owner) {
            entries.retain(|e| e.id != id);
        }
    }
}

fn found(entry: &Entry) -> Found {
    Found {
        id: entry.id,
        name: entry.name.clone(),
        handle: entry
            .handle
            .clone()
            .expect("only started entries are returned"),
    }
}

/// Resolves a reference among `(id, name)` pairs: an exact name first, then
/// a full id, then a unique prefix of at least [`MIN_PREFIX`] hex digits of
/// the id (hyphens optional, case-insensitive). Returns the index.
///
/// # Errors
/// `NotFound` when nothing matches, `Ambiguous` when a prefix matches several.
pub fn resolve_ref(
    sessions: &[(SessionId, &SessionName)],
    reference: &str,
) -> Result<usize, RegistryError> {
    if let Some(i) = sessions.iter().position(|(_, n)| n.as_str() == reference) {
        return Ok(i);
    }
    let wanted: String = reference.to_ascii_lowercase().replace('-', "");
    let is_hex = !wanted.is_empty() && wanted.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && wanted.len() >= MIN_PREFIX {
        let matches: Vec<usize> = sessions
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| id.to_string().replace('-', "").starts_with(&wanted))
            .map(|(i, _)| i)
            .collect();
        match matches.len() {
            0 => {}
            1 => return Ok(matches[0]),
            count => {
                return Err(RegistryError::Ambiguous {
                    reference: reference.to_owned(),
                    count,
                });
            }
        }
    }
    Err(RegistryError::NotFound(reference.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<(SessionId, SessionName)> {
        (0..n)
            .map(|i| (SessionId::random(), SessionName::numbered(i as u32)))
            .collect()
    }

    fn check(sessions: &[(SessionId, SessionName)], reference: &str) -> Result<usize, String> {
        let keys: Vec<(SessionId, &SessionName)> = sessions.iter().map(|(i, n)| (*i, n)).collect();
        resolve_ref(&keys, reference).map_err(|e| e.to_string())
    }

    #[test]
    fn names_ids_and_prefixes_resolve() {
        let sessions = ids(3);
        let id = sessions[2].0.to_string();
        assert_eq!(check(&sessions, "1"), Ok(1));
        assert_eq!(check(&sessions, &id), Ok(2));
        assert_eq!(check(&sessions, &id.to_uppercase()), Ok(2));
        assert_eq!(check(&sessions, &id.replace('-', "")[..12]), Ok(2));
    }

    #[test]
    fn short_or_unknown_references_are_not_found() {
        let sessions = ids(2);
        let id = sessions[0].0.to_string();
        assert!(
            check(&sessions, &id[..3])
                .unwrap_err()
                .contains("no session")
        );
        assert!(check(&sessions, "nope").unwrap_err().contains("no session"));
        assert!(check(&sessions, "").unwrap_err().contains("no session"));
    }

    #[test]
    fn a_prefix_shared_by_two_ids_is_ambiguous() {
        let a: SessionId =
            serde_json::from_str("\"abcd1234-0000-4000-8000-000000000001\"").expect("valid uuid");
        let b: SessionId =
            serde_json::from_str("\"abcd5678-0000-4000-8000-000000000002\"").expect("valid uuid");
        let sessions = vec![(a, SessionName::numbered(0)), (b, SessionName::numbered(1))];
        assert_eq!(
            check(&sessions, "abcd"),
            Err("'abcd' matches 2 sessions".to_owned())
        );
        assert_eq!(check(&sessions, "abcd5"), Ok(1));
    }

    #[test]
    fn a_name_wins_over_an_id_prefix() {
        let a: SessionId =
            serde_json::from_str("\"abcd1234-0000-4000-8000-000000000001\"").expect("valid uuid");
        let b = SessionId::random();
        let name: SessionName = "abcd".parse().expect("valid name");
        let sessions = vec![(a, SessionName::numbered(0)), (b, name)];
        assert_eq!(check(&sessions, "abcd"), Ok(1));
    }
}
