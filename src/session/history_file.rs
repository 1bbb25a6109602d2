//! The session's output on disk (`[sessions] history_file_bytes`), so that
//! what it printed outlives its process: `STATE/sessions/ID.history` and
//! the segment before it, `ID.history.1`, each at most half the limit
//! (when the current one is full it replaces the older, so the oldest
//! output goes as a whole segment), both 0600; beside them the session's
//! [`SessionMeta`], `ID.meta.json`, replaced (write, then rename) when it
//! changes.
//!
//! The session task never waits on the disk: [`HistoryFile::append`]
//! queues a chunk (a reference to it, not a copy), and a thread of its
//! own writes what is queued every [`BATCH_INTERVAL`] or [`BATCH_BYTES`],
//! whichever comes first, in one write. The thread ends after
//! [`WRITER_IDLE`] with nothing to write, leaving its files in the shared
//! state, and the next output or snapshot change starts another: an idle
//! session keeps no thread (once [`HistoryFile::reap`] joined it, and with
//! glibc's stack cache off, as the server starts session processes, its
//! stack is unmapped). No
//! fsync: a crash of the process loses at most the last batch; a power
//! failure what the kernel had not written back. A failed write (disk
//! full, I/O error, the file size limit), or a disk so slow that
//! [`MAX_PENDING`] bytes wait, is logged once and ends the writing: the
//! session carries on in memory (`history_on_disk: false`). A clean end
//! (the session killed, or its exit's retention over) removes the files;
//! a process that dies without one leaves them.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::protocol::SessionInfo;
#[cfg(test)]
use crate::protocol::host::read_history as read;
use crate::protocol::host::{SessionMeta, history_path, meta_path};

/// A batch is written once this much output is pending…
pub const BATCH_BYTES: usize = 256 * 1024;
/// …or this long after its first byte came.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Output waiting for the disk beyond which the history is given up
/// rather than held in memory without bound, in bytes.
pub const MAX_PENDING: usize = 8 * 1024 * 1024;
/// The metadata is rewritten for new activity alone at most this often
/// (a rename, a resize or an exit at once).
const META_INTERVAL: Duration = Duration::from_secs(5);
/// The writing thread ends after this long with nothing to write (less
/// than the session task's quiet time before it gives memory back, when
/// it reaps the thread).
pub const WRITER_IDLE: Duration = Duration::from_secs(1);

/// The writer's half of a session's history on disk; dropping it writes
/// what is pending and stops the thread (the files stay).
pub(super) struct HistoryFile {
    shared: Arc<Shared>,
    /// The last writing thread started, until joined.
    thread: Option<JoinHandle<()>>,
}

/// What the session task and the writing thread share.
struct Shared {
    pending: Mutex<Pending>,
    /// The writing thread waits here for work.
    wake: Condvar,
    /// Still writing: false once a write failed.
    on_disk: AtomicBool,
}

#[derive(Default)]
struct Pending {
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    size: usize,
    /// When the first pending byte came.
    since: Option<Instant>,
    /// The session's snapshot changed (not only its activity).
    meta_changed: bool,
    /// Stop after this batch (`Some(true)`: and remove the files).
    stop: Option<bool>,
    /// A writing thread runs and will see what is queued here.
    running: bool,
    /// The files while no thread runs (the last one ended idle).
    idle: Option<Writer>,
}

/// What the writing thread is to do next.
enum Batch<'a> {
    /// Write these chunks (and the metadata, if due); stop after them if
    /// `Some` (`Some(true)`: and remove the files).
    Write(Vec<Bytes>, Option<bool>),
    /// Nothing came for [`WRITER_IDLE`]: leave the files here and end.
    Idle(MutexGuard<'a, Pending>),
}

/// What the writing thread needs beside the pending output.
struct Writer {
    segments: Segments,
    meta: MetaFile,
    info: watch::Receiver<SessionInfo>,
    shared: Arc<Shared>,
}

impl HistoryFile {
    /// Starts writing session `info`'s output under `state_dir`, at most
    /// `limit` bytes (two segments of half), and its metadata (`term` and
    /// `cwd` are what its program started with). With `resume`, the files
    /// there are kept and written on (`restart`); otherwise they start
    /// empty.
    ///
    /// # Errors
    /// The files cannot be created (the caller logs it and runs without).
    pub(super) fn start(
        state_dir: &Path,
        limit: u64,
        info: watch::Receiver<SessionInfo>,
        (term, cwd): (Option<String>, PathBuf),
        resume: bool,
    ) -> std::io::Result<HistoryFile> {
        let id = info.borrow().id;
        let (path, segment) = (history_path(state_dir, id), limit.div_ceil(2).max(1));
        let segments = if resume {
            Segments::open(path, segment)?
        } else {
            Segments::create(path, segment)?
        };
        let meta = MetaFile {
            path: meta_path(state_dir, id),
            term,
            cwd,
            written: None,
        };
        HistoryFile::spawn(segments, meta, info)
    }

    /// Writes the first metadata, then starts the writing thread.
    fn spawn(
        segments: Segments,
        meta: MetaFile,
        info: watch::Receiver<SessionInfo>,
    ) -> std::io::Result<HistoryFile> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                running: true,
                ..Pending::default()
            }),
            wake: Condvar::new(),
            on_disk: AtomicBool::new(true),
        });
        let mut writer = Writer {
            segments,
            meta,
            info,
            shared: Arc::clone(&shared),
        };
        writer.write_meta(true)?;
        let thread = Some(start_thread(writer)?);
        Ok(HistoryFile { shared, thread })
    }

    /// Queues `chunk` for the disk; never waits on it (it may start the
    /// writing thread).
    pub(super) fn append(&mut self, chunk: &Bytes) {
        if !self.on_disk() {
            return;
        }
        let mut pending = self.shared.lock();
        if pending.size + chunk.len() > MAX_PENDING {
            (pending.chunks, pending.size) = (Vec::new(), 0);
            drop(pending);
            self.shared.gave_up(&format!(
                "the disk fell {MAX_PENDING} bytes behind the output"
            ));
            return;
        }
        pending.chunks.push(chunk.clone());
        pending.size += chunk.len();
        pending.since.get_or_insert_with(Instant::now);
        if pending.size >= BATCH_BYTES {
            self.shared.wake.notify_one();
        }
        // The output's path: the lock again only when no thread runs.
        let idle = !pending.running;
        drop(pending);
        if idle {
            self.run_writer();
        }
    }

    /// The session's snapshot changed (name, size, exit...): the metadata
    /// file is rewritten with the next batch, or at once without output.
    pub(super) fn info_changed(&mut self) {
        let mut pending = self.shared.lock();
        pending.meta_changed = true;
        let idle = !pending.running;
        drop(pending);
        self.shared.wake.notify_one();
        if idle {
            self.run_writer();
        }
    }

    /// Joins the writing thread if it ended (idle), so that its stack goes
    /// now rather than with the next thread.
    pub(super) fn reap(&mut self) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }

    /// Starts a writing thread with the files the last one left, unless
    /// one runs (it will see what is pending) or none holds them (stopped,
    /// or a thread could not start).
    fn run_writer(&mut self) {
        let mut pending = self.shared.lock();
        if pending.running {
            return;
        }
        let Some(writer) = pending.idle.take() else {
            return;
        };
        pending.running = true;
        drop(pending);
        if let Some(ended) = self.thread.take() {
            let _ = ended.join(); // it said it ended: a moment at most
        }
        match start_thread(writer) {
            Ok(thread) => self.thread = Some(thread),
            Err(error) => self
                .shared
                .gave_up(&format!("starting its writing thread: {error}")),
        }
    }

    /// Whether output still reaches the disk.
    pub(super) fn on_disk(&self) -> bool {
        self.shared.on_disk.load(Ordering::Relaxed)
    }

    /// The session ended cleanly: writes nothing more and removes its files.
    pub(super) fn remove(mut self) {
        self.stop(true);
    }

    /// Has the writing thread write what is pending and end (started
    /// for it if none runs), and waits for it.
    fn stop(&mut self, remove: bool) {
        self.shared.lock().stop = Some(remove);
        self.shared.wake.notify_one();
        self.run_writer();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writing thread: a small stack, as it only copies and writes.
fn start_thread(writer: Writer) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("keepsh-history".into())
        .stack_size(64 * 1024)
        .spawn(move || writer.run())
}

impl Drop for HistoryFile {
    fn drop(&mut self) {
        self.stop(false);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops writing, saying why once.
    fn gave_up(&self, why: &str) {
        if self.on_disk.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "writing the history file failed ({why}); this session's output is kept in memory only from now on"
            );
        }
    }
}

impl Writer {
    /// Writes batches until stopped, or idle (then the files are left in
    /// the shared state for the next thread).
    fn run(mut self) {
        // The batch, joined: one write each (its room kept between batches).
        let mut batch: Vec<u8> = Vec::new();
        let shared = Arc::clone(&self.shared);
        // A write past RLIMIT_FSIZE then fails with EFBIG, as a full disk
        // does with ENOSPC, instead of SIGXFSZ ending the session process
        // (setrlimit(2); the signal is sent to the writing thread).
        let xfsz = nix::sys::signal::SigSet::from(nix::sys::signal::Signal::SIGXFSZ);
        let _ = xfsz.thread_block();
        loop {
            let (chunks, stop) = match next_batch(&shared) {
                Batch::Write(chunks, stop) => (chunks, stop),
                Batch::Idle(mut pending) => {
                    pending.running = false;
                    pending.idle = Some(self);
                    return;
                }
            };
            batch.clear();
            chunks
                .iter()
                .for_each(|chunk| batch.extend_from_slice(chunk));
            drop(chunks);
            if !batch.is_empty()
                && self.shared.on_disk.load(Ordering::Relaxed)
                && let Err(error) = self.segments.write(&batch)
            {
                self.failed(&error);
            }
            if let Err(error) = self.write_meta(stop.is_some()) {
                self.failed(&error);
            }
            if let Some(remove) = stop {
                if remove {
                    self.segments.remove();
                    let _ = std::fs::remove_file(&self.meta.path);
                }
                return;
            }
        }
    }

    /// Writes the metadata if it changed: at once if more than its
    /// activity did (or when `last`), else once [`META_INTERVAL`] has
    /// passed since the last write.
    fn write_meta(&mut self, last: bool) -> std::io::Result<()> {
        let meta = self.meta.of(&self.info.borrow_and_update());
        let due = match &self.meta.written {
            None => true,
            Some((_, written)) if *written == meta => false,
            Some((at, written)) => {
                let quiet = SessionMeta {
                    last_activity: written.last_activity,
                    output_offset: written.output_offset,
                    ..meta.clone()
                };
                last || quiet != *written || at.elapsed() >= META_INTERVAL
            }
        };
        if due { self.meta.replace(meta) } else { Ok(()) }
    }

    fn failed(&self, error: &std::io::Error) {
        let path = self.segments.path.display();
        self.shared.gave_up(&format!("{path}: {error}"));
    }
}

/// Waits for a batch: [`BATCH_BYTES`] pending, [`BATCH_INTERVAL`] since
/// its first byte, a changed snapshot, or the end; or [`WRITER_IDLE`]
/// without any of them.
fn next_batch(shared: &Shared) -> Batch<'_> {
    let mut pending = shared.lock();
    loop {
        let due = pending.since.map(|since| since + BATCH_INTERVAL);
        let full = pending.size >= BATCH_BYTES;
        let late = due.is_some_and(|due| Instant::now() >= due);
        if full || late || pending.meta_changed || pending.stop.is_some() {
            break;
        }
        let wake = &shared.wake;
        pending = match due {
            Some(due) => {
                let wait = due.saturating_duration_since(Instant::now());
                let woken = wake.wait_timeout(pending, wait);
                woken.map_or_else(|e| e.into_inner().0, |(guard, _)| guard)
            }
            None => {
                let woken = wake.wait_timeout(pending, WRITER_IDLE);
                let (guard, idle) = woken.unwrap_or_else(|e| e.into_inner());
                let quiet = guard.since.is_none() && !guard.meta_changed;
                if idle.timed_out() && quiet && guard.stop.is_none() {
                    return Batch::Idle(guard);
                }
                guard
            }
        };
    }
    pending.since = None;
    pending.meta_changed = false;
    pending.size = 0;
    Batch::Write(std::mem::take(&mut pending.chunks), pending.stop)
}

/// The metadata file and what was last written to it.
struct MetaFile {
    path: PathBuf,
    term: Option<String>,
    /// Where the program started: the cwd until one is known.
    cwd: PathBuf,
    written: Option<(Instant, SessionMeta)>,
}

impl MetaFile {
    fn of(&self, info: &SessionInfo) -> SessionMeta {
        SessionMeta {
            id: info.id,
            name: info.name.clone(),
            owner: info.owner.clone(),
            command: info.command.clone(),
            term: self.term.clone(),
            cwd: info
                .doing
                .cwd
                .as_ref()
                .map_or_else(|| self.cwd.clone(), PathBuf::from),
            size: info.size,
            created: info.created,
            last_activity: info.last_activity,
            output_offset: info.output_offset,
            exit: info.exit.clone(),
        }
    }

    /// Writes `meta` to a temporary file beside the real one, then renames
    /// it over the real one (rename(2) is atomic: a reader sees the old
    /// file or the new one).
    fn replace(&mut self, meta: SessionMeta) -> std::io::Result<()> {
        let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        let temporary = self.path.with_extension("json.new");
        let mut file = private_file(&temporary)?;
        file.write_all(&json)?;
        drop(file);
        std::fs::rename(&temporary, &self.path)?;
        self.written = Some((Instant::now(), meta));
        Ok(())
    }
}

/// The two segments of the history: `path` (being written) and
/// `path.1` (the one before).
struct Segments {
    path: PathBuf,
    current: File,
    /// Bytes in `current`.
    written: u64,
    /// Bytes per segment.
    segment: u64,
}

impl Segments {
    /// Starts an empty history at `path` (a file left there is replaced).
    fn create(path: PathBuf, segment: u64) -> std::io::Result<Segments> {
        let _ = std::fs::remove_file(older(&path));
        let current = private_file(&path)?;
        Ok(Segments {
            path,
            current,
            written: 0,
            segment,
        })
    }

    /// Goes on with the history at `path`, creating it if there is none.
    fn open(path: PathBuf, segment: u64) -> std::io::Result<Segments> {
        let current = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        let written = current.metadata()?.len();
        Ok(Segments {
            path,
            current,
            written,
            segment,
        })
    }

    /// Appends `bytes`, starting a new segment (the current one becomes
    /// the older, replacing it) each time one is full.
    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.written >= self.segment {
                std::fs::rename(&self.path, older(&self.path))?;
                self.current = private_file(&self.path)?;
                self.written = 0;
            }
            let room = usize::try_from(self.segment.saturating_sub(self.written));
            let room = room.unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(bytes.len().min(room));
            self.current.write_all(now)?;
            self.written += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(older(&self.path));
    }
}

/// The segment before `path`: `path.1` (`older_history_path`).
fn older(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Creates (or truncates) `path` for writing, mode 0600.
fn private_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PtySize, SessionId, SessionState};
    use std::os::unix::fs::PermissionsExt;

    fn info() -> SessionInfo {
        let now = std::time::SystemTime::now();
        SessionInfo {
            id: SessionId::random(),
            name: "work".parse().expect("name"),
            owner: "alice".into(),
            state: SessionState::Orphaned,
            clients: 0,
            created: now,
            last_activity: now,
            detached_at: None,
            size: PtySize::DEFAULT,
            command: vec!["/bin/sh".into()],
            exit: None,
            output_offset: 0,
            watchers: 0,
            doing: Default::default(),
            buffer_start: 0,
            history_on_disk: true,
        }
    }

    fn start(dir: &Path, limit: u64) -> (HistoryFile, watch::Sender<SessionInfo>) {
        let sessions = crate::protocol::host::sessions_dir(dir);
        std::fs::create_dir_all(sessions).expect("sessions dir");
        let (publish, info) = watch::channel(info());
        let term = Some("xterm-256color".to_owned());
        let file =
            HistoryFile::start(dir, limit, info, (term, "/srv".into()), false).expect("start");
        (file, publish)
    }

    fn meta(dir: &Path, id: crate::protocol::SessionId) -> SessionMeta {
        let text = std::fs::read(meta_path(dir, id)).expect("meta file");
        serde_json::from_slice(&text).expect("meta json")
    }

    /// Whatever the chunks, the files hold a suffix of the output, in
    /// order, between half the limit and the limit (once that much came).
    #[test]
    fn the_files_hold_the_latest_output_within_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut all = Vec::new();
        let (mut file, publish) = start(dir.path(), 1000);
        let id = publish.borrow().id;
        for i in 0..300u32 {
            let chunk = format!("{i}:{}\n", "x".repeat((i % 17) as usize));
            file.append(&Bytes::from(chunk.clone()));
            all.extend_from_slice(chunk.as_bytes());
        }
        drop(file);
        let kept = read(dir.path(), id).expect("read");
        assert!((500..=1000).contains(&kept.len()), "{}", kept.len());
        assert!(all.ends_with(&kept));
        let modes = [history_path(dir.path(), id), meta_path(dir.path(), id)]
            .map(|p| std::fs::metadata(p).expect("file").permissions().mode() & 0o777);
        assert_eq!(modes, [0o600, 0o600]);
    }

    /// A batch is written within the interval without more output, and
    /// the metadata follows a rename at once.
    #[test]
    fn output_and_a_rename_reach_the_disk_without_an_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut file, publish) = start(dir.path(), 1 << 20);
        let id = publish.borrow().id;
        assert_eq!(meta(dir.path(), id).term.as_deref(), Some("xterm-256color"));
        assert_eq!(meta(dir.path(), id).cwd, PathBuf::from("/srv"));
        file.append(&Bytes::from_static(b"hello\n"));
        publish.send_modify(|i| i.name = "play".parse().expect("name"));
        file.info_changed();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (read(dir.path(), id).expect("read") != b"hello\n"
            || meta(dir.path(), id).name.as_str() != "play")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(read(dir.path(), id).expect("read"), b"hello\n");
        assert_eq!(meta(dir.path(), id).name.as_str(), "play");
        file.remove();
        assert!(read(dir.path(), id).expect("read").is_empty());
        assert!(!meta_path(dir.path(), id).exists());
    }

    /// A write that fails (here ENOSPC from /dev/full, as on a full
    /// disk) turns the history off; appending carries on without error.
    #[test]
    fn a_failed_write_turns_the_history_off() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return; // no /dev/full here
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (_publish, info) = watch::channel(info());
        let segments = Segments {
            path: dir.path().join("full.history"),
            current: full,
            written: 0,
            segment: 1 << 20,
        };
        let meta = MetaFile {
            path: dir.path().join("full.meta.json"),
            term: None,
            cwd: "/".into(),
            written: None,
        };
        let mut file = HistoryFile::spawn(segments, meta, info).expect("spawn");
        file.append(&Bytes::from(vec![b'x'; BATCH_BYTES]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while file.on_disk() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!file.on_disk());
        file.append(&Bytes::from_static(b"more"));
    }

    /// A disk that does not keep up (here: no writing thread at all) costs
    /// at most MAX_PENDING bytes of memory; then the history is given up.
    #[test]
    fn pending_output_is_bounded() {
        let mut file = HistoryFile {
            shared: Arc::new(Shared {
                // A thread "runs" and never writes.
                pending: Mutex::new(Pending {
                    running: true,
                    ..Pending::default()
                }),
                wake: Condvar::new(),
                on_disk: AtomicBool::new(true),
            }),
            thread: None,
        };
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        for _ in 0..MAX_PENDING / chunk.len() {
            file.append(&chunk);
        }
        assert!(file.on_disk());
        file.append(&Bytes::from_static(b"one byte too many"));
        assert!(!file.on_disk());
        assert!(file.shared.lock().chunks.capacity() == 0);
    }

    /// The writing thread ends once nothing came for WRITER_IDLE, leaving
    /// the files; the next output starts another, which writes it after
    /// what came before.
    #[test]
    fn the_writing_thread_ends_when_idle_and_output_starts_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut file, publish) = start(dir.path(), 1 << 20);
        let id = publish.borrow().id;
        let wait = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + WRITER_IDLE + Duration::from_secs(10);
            while !done() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(done(), "{what}");
        };
        let shared = Arc::clone(&file.shared);
        let idle = || {
            let pending = shared.lock();
            !pending.running && pending.idle.is_some()
        };
        file.append(&Bytes::from_static(b"one\n"));
        wait("the first line on disk", &|| {
            read(dir.path(), id).expect("read") == b"one\n"
        });
        wait("the thread ended idle", &idle);
        file.append(&Bytes::from_static(b"two\n"));
        assert!(file.shared.lock().running, "output starts a thread");
        let both = || read(dir.path(), id).expect("read") == b"one\ntwo\n";
        wait("the second line after the first", &both);
        wait("the thread ended idle again", &idle);
        file.reap();
        assert!(file.thread.is_none(), "joined");
        file.remove();
        assert!(!meta_path(dir.path(), id).exists(), "removed by a thread");
    }
}
