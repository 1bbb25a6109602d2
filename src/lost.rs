//! Lost sessions: those whose process ended without a clean end (a
//! reboot, an OOM kill, `kill -9`). A session process writes its history
//! and metadata files as it runs and removes them at a clean end
//! (`session::history_file`), so the metadata files of sessions that no
//! live process serves are the lost ones. They are found by reading the
//! state directory when asked (`list`, a reference, the server's sweep),
//! never held in memory; `[sessions] lost_retention` after its last
//! activity, a lost session's files are removed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::protocol::host::{SessionMeta, meta_path, read_history, remove_history, sessions_dir};
use crate::protocol::{Doing, SessionId, SessionInfo, SessionState};

/// Every session's metadata in `state_dir` for which `is_live` is false,
/// oldest first; the files of those whose last activity is more than
/// `retention` before `now` are removed instead (logged). Unreadable or
/// malformed metadata files are skipped (logged at debug level).
pub fn scan(
    state_dir: &Path,
    retention: Duration,
    now: SystemTime,
    is_live: impl Fn(SessionId) -> bool,
) -> Vec<SessionMeta> {
    let Ok(entries) = std::fs::read_dir(sessions_dir(state_dir)) else {
        return Vec::new();
    };
    let mut found: Vec<SessionMeta> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".meta.json"))
        .filter_map(|e| read_meta(&e.path()))
        .filter(|meta| !is_live(meta.id))
        .filter(|meta| {
            let expired = meta
                .last_activity
                .checked_add(retention)
                .is_some_and(|until| until < now);
            if expired {
                tracing::info!(session = %meta.id, name = %meta.name, owner = %meta.owner,
                    "lost session past lost_retention; its files removed");
                remove_history(state_dir, meta.id);
            }
            !expired
        })
        .collect();
    found.sort_by_key(|meta| meta.created);
    found
}

/// Session `id`'s metadata file, if it is there and readable.
pub fn read(state_dir: &Path, id: SessionId) -> Option<SessionMeta> {
    read_meta(&meta_path(state_dir, id))
}

fn read_meta(path: &Path) -> Option<SessionMeta> {
    let text = std::fs::read(path)
        .map_err(|error| tracing::debug!(%error, path = %path.display(), "unreadable metadata"))
        .ok()?;
    serde_json::from_slice(&text)
        .map_err(|error| tracing::debug!(%error, path = %path.display(), "malformed metadata"))
        .ok()
}

/// How `list` shows a lost session: state `lost`, its last known size,
/// activity, working directory and exit; `history_on_disk` while its
/// history file is there.
pub fn info(state_dir: &Path, meta: &SessionMeta) -> SessionInfo {
    let history = crate::protocol::host::history_path(state_dir, meta.id);
    SessionInfo {
        id: meta.id,
        name: meta.name.clone(),
        owner: meta.owner.clone(),
        state: SessionState::Lost,
        clients: 0,
        created: meta.created,
        last_activity: meta.last_activity,
        detached_at: None,
        size: meta.size,
        command: meta.command.clone(),
        exit: meta.exit.clone(),
        output_offset: meta.output_offset,
        watchers: 0,
        doing: Doing {
            cwd: Some(meta.cwd.display().to_string()),
            ..Doing::default()
        },
        buffer_start: meta.output_offset,
        history_on_disk: history.exists(),
    }
}

/// The output a lost session's history files hold, and whether older
/// output was dropped before it (so that it starts inside a line).
///
/// # Errors
/// A history file exists but cannot be read.
pub fn output(state_dir: &Path, meta: &SessionMeta) -> std::io::Result<(Vec<u8>, bool)> {
    let bytes = read_history(state_dir, meta.id)?;
    let cut = (bytes.len() as u64) < meta.output_offset;
    Ok((bytes, cut))
}

/// Removes a lost session's files (`kill`).
pub fn remove(state_dir: &Path, id: SessionId) {
    remove_history(state_dir, id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PtySize;

    fn meta(name: &str, owner: &str, last_activity: SystemTime) -> SessionMeta {
        SessionMeta {
            id: SessionId::random(),
            name: name.parse().expect("name"),
            owner: owner.into(),
            command: vec!["sh".into()],
            term: Some("xterm".into()),
            cwd: "/tmp".into(),
            size: PtySize::DEFAULT,
            created: last_activity,
            last_activity,
            output_offset: 5,
            exit: None,
        }
    }

    fn write(dir: &Path, meta: &SessionMeta) {
        let path = meta_path(dir, meta.id);
        std::fs::write(&path, serde_json::to_vec(meta).expect("json")).expect("write");
        let history = crate::protocol::host::history_path(dir, meta.id);
        std::fs::write(history, b"hello").expect("write history");
    }

    /// Live sessions are not lost; expired ones are removed; malformed
    /// files are skipped.
    #[test]
    fn the_scan_finds_the_lost_and_removes_the_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(sessions_dir(dir.path())).expect("sessions dir");
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let (lost, live, old) = (
            meta("lost", "alice", now - day),
            meta("live", "alice", now),
            meta("old", "bob", now - 8 * day),
        );
        for m in [&lost, &live, &old] {
            write(dir.path(), m);
        }
        let junk = sessions_dir(dir.path()).join("junk.meta.json");
        std::fs::write(junk, b"{not json").expect("junk");
        let found = scan(dir.path(), 7 * day, now, |id| id == live.id);
        assert_eq!(found, vec![lost.clone()]);
        assert!(!meta_path(dir.path(), old.id).exists());
        assert!(!crate::protocol::host::history_path(dir.path(), old.id).exists());
        let info = info(dir.path(), &lost);
        assert_eq!(info.state, SessionState::Lost);
        assert!(info.history_on_disk);
        assert_eq!(
            output(dir.path(), &lost).expect("output"),
            (b"hello".to_vec(), false)
        );
        remove(dir.path(), lost.id);
        assert!(scan(dir.path(), 7 * day, now, |id| id == live.id).is_empty());
    }
}
