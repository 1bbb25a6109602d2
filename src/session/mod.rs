//! One persistent session: a PTY and its program, a ring buffer of its
//! output, and the attachments that watch it.
//!
//! This code runs in the session's own process ([`host`]). The state lives
//! in one task (`actor`); each connection task of the host sends it
//! `actor::Message`s, and typed bytes on a queue of their own
//! (`actor::Input`), through a [`Mailbox`]. Only the session's task touches
//! its PTY and ring buffer: no `Arc<Mutex<Session>>`.
//!
//! Invariant: nothing here names russh, and nothing here uses the server
//! side of keepsh: what crosses to it is [`crate::protocol`].

mod actor;
mod away;
mod catch_up;
pub mod history_file;
pub mod host;
mod keys;
mod lifecycle;
mod notify;
mod pacing;
pub mod pty;
pub mod replay;
pub mod ring;
pub mod screen;
pub mod text;
pub mod waiters;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::protocol::host::{HostSpec, SpawnError};
use crate::protocol::{SessionInfo, SessionState};

/// Messages queued for the session task (attach, resize, detach, control
/// requests, signals, history).
const MESSAGE_QUEUE: usize = 64;
/// Events queued per attachment. With output chunks of at most 32 KiB this
/// bounds what one slow client can make the session hold to 1 MiB.
const ATTACHMENT_QUEUE: usize = 32;

/// The session task's two queues and its published snapshot, as the host's
/// connection tasks hold them. Cheap to clone. When the task ends, `info`
/// reports its sender gone.
#[derive(Clone)]
struct Mailbox {
    messages: mpsc::Sender<actor::Message>,
    input: mpsc::Sender<actor::Input>,
    info: watch::Receiver<SessionInfo>,
}

/// Starts a session: opens its PTY, runs its program and spawns its task,
/// which writes its output under `state_dir` too (`history_file`).
///
/// # Errors
/// [`SpawnError`] when the PTY cannot be opened or the program not started.
fn start(spec: HostSpec, state_dir: &std::path::Path) -> Result<Mailbox, SpawnError> {
    let (pty, streams) = pty::spawn(&spec.spawn)?;
    let history = (spec.settings.history_file_bytes > 0).then(|| history_spec(&spec));
    let old = if spec.resume {
        resumed_output(state_dir, &spec)
    } else {
        Vec::new()
    };
    let info = first_info(&spec);
    let (messages, messages_rx) = mpsc::channel(MESSAGE_QUEUE);
    let (input, input_rx) = mpsc::channel(pty::INPUT_QUEUE);
    let (publish, info_rx) = watch::channel(info.clone());
    let span = tracing::info_span!("session", id = %info.id, owner = %info.owner);
    let history = history.and_then(|(limit, term, cwd)| {
        history_file(state_dir, limit, info_rx.clone(), (term, cwd), spec.resume)
    });
    // Boxed, as its task's future: moved by value (~10 KiB) through a few
    // frames, they left the main stack 50 KiB deeper for good.
    let mut actor = Box::new(actor::Actor::new(
        info,
        publish,
        pty,
        spec.settings,
        history,
    ));
    if !old.is_empty() {
        actor.replay(&old);
    }
    if !spec.spawn.preface.is_empty() {
        actor.preface(spec.spawn.preface.into_bytes());
    }
    let run = Box::pin(actor.run(streams, messages_rx, input_rx));
    tokio::spawn(run.instrument(span));
    Ok(Mailbox {
        messages,
        input,
        info: info_rx,
    })
}

/// The session's snapshot as it starts: orphaned, created now.
fn first_info(spec: &HostSpec) -> SessionInfo {
    let now = std::time::SystemTime::now();
    let command = if spec.spawn.command.is_empty() {
        vec![spec.spawn.shell.display().to_string()]
    } else {
        spec.spawn.command.clone()
    };
    SessionInfo {
        id: spec.id,
        name: spec.name.clone(),
        owner: spec.owner.clone(),
        state: SessionState::Orphaned,
        clients: 0,
        created: now,
        last_activity: now,
        detached_at: None,
        size: spec.spawn.size,
        command,
        exit: None,
        output_offset: 0,
        watchers: 0,
        doing: Default::default(),
        buffer_start: 0,
        history_on_disk: false,
    }
}

/// What the history file needs from `spec`: the limit (bytes), `TERM`
/// and where the program starts.
fn history_spec(spec: &HostSpec) -> (u64, Option<String>, std::path::PathBuf) {
    let term = spec.spawn.env.iter().find(|(k, _)| k == "TERM");
    let term = term.map(|(_, v)| v.clone());
    (
        spec.settings.history_file_bytes,
        term,
        spec.spawn.cwd.clone(),
    )
}

/// Starts the session's history file, or logs why it cannot (the session
/// then runs without).
fn history_file(
    state_dir: &std::path::Path,
    limit: u64,
    info: watch::Receiver<SessionInfo>,
    started: (Option<String>, std::path::PathBuf),
    resume: bool,
) -> Option<history_file::HistoryFile> {
    match history_file::HistoryFile::start(state_dir, limit, info, started, resume) {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::warn!(%error, "cannot create the history file; this session's output is kept in memory only");
            None
        }
    }
}

/// The output a restarted session starts with: the last `scrollback_bytes`
/// of its history files, from a line start (unreadable files: none,
/// logged).
fn resumed_output(state_dir: &std::path::Path, spec: &HostSpec) -> Vec<u8> {
    let all = match crate::protocol::host::read_history(state_dir, spec.id) {
        Ok(all) => all,
        Err(error) => {
            tracing::warn!(%error, "cannot read the history to restart from; starting without");
            return Vec::new();
        }
    };
    let keep = spec.settings.scrollback_bytes.min(all.len());
    let tail = &all[all.len() - keep..];
    if keep == all.len() {
        return tail.to_vec();
    }
    let start = tail
        .iter()
        .position(|&b| b == b'\n')
        .map_or(tail.len(), |i| i + 1);
    tail[start..].to_vec()
}

#[cfg(test)]
mod tests {
    //! Sessions at the session task's boundary: real `/bin/sh`, real PTY,
    //! no socket, no SSH.

    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::actor::{AttachmentId, Input, Message};
    use super::*;
    use crate::protocol::host::SessionSettings;
    use crate::protocol::{
        AttachReply, AttachRequest, ControlRequest, Event, ExitStatus, PtySize, SessionId,
    };

    const DEADLINE: Duration = Duration::from_secs(20);

    fn settings(scrollback_bytes: usize) -> SessionSettings {
        SessionSettings {
            scrollback_bytes,
            scrollback_lines: 2000,
            orphan_timeout: None,
            exited_retention: Duration::from_secs(60),
            program_open_files: None,
            kill_grace: Duration::from_secs(2),
            notify: None,
            away_summary: true,
            history_file_bytes: 0,
        }
    }

    fn start_sh(script: &str, scrollback_bytes: usize) -> Mailbox {
        let spawn = pty::tests::sh(script);
        start(
            HostSpec {
                id: SessionId::random(),
                owner: "tester".into(),
                name: "t".parse().expect("name"),
                spawn,
                settings: settings(scrollback_bytes),
                resume: false,
            },
            std::path::Path::new("/nonexistent"),
        )
        .expect("start /bin/sh")
    }

    fn byte_stream(from: Option<u64>) -> AttachRequest {
        AttachRequest {
            size: None,
            read_only: false,
            from,
            quiet: false,
            watch: false,
            tail: 0,
            pattern: None,
        }
    }

    /// A writable terminal of the default size.
    fn terminal() -> AttachRequest {
        AttachRequest {
            size: Some(PtySize::DEFAULT),
            read_only: false,
            from: None,
            quiet: false,
            watch: false,
            tail: 0,
            pattern: None,
        }
    }

    /// Attaches `id` as the host's attachment task does; returns its events.
    async fn attach(
        session: &Mailbox,
        id: AttachmentId,
        request: AttachRequest,
    ) -> mpsc::Receiver<Event> {
        let (events, events_rx) = mpsc::channel(ATTACHMENT_QUEUE);
        let (reply, answer) = oneshot::channel();
        let message = Message::Attach {
            id,
            request,
            events,
            reply,
        };
        assert!(session.messages.send(message).await.is_ok(), "session gone");
        match answer.await {
            Ok(AttachReply::Attached { .. }) => events_rx,
            other => panic!("not attached: {other:?}"),
        }
    }

    async fn typed(session: &Mailbox, id: AttachmentId, data: &'static [u8]) {
        let input = Input {
            id,
            data: Bytes::from_static(data),
        };
        assert!(session.input.send(input).await.is_ok(), "session gone");
    }

    /// Kills the session and waits until its task has ended.
    async fn kill(session: Mailbox) {
        let kill = Message::Control(ControlRequest::Kill);
        assert!(session.messages.send(kill).await.is_ok(), "session gone");
        let mut info = session.info.clone();
        let ended = async { while info.changed().await.is_ok() {} };
        tokio::time::timeout(DEADLINE, ended)
            .await
            .expect("the session ends after a kill");
    }

    /// Collects output until `needle` appears; returns (bytes, exit status).
    async fn read_until(
        events: &mut mpsc::Receiver<Event>,
        needle: &str,
    ) -> (Vec<u8>, Option<ExitStatus>) {
        let mut bytes = Vec::new();
        let mut next_offset = None;
        loop {
            let event = tokio::time::timeout(DEADLINE, events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {needle:?} in time; got {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
                .expect("queue open");
            match event {
                Event::Output { offset, data } => {
                    if let Some(expected) = next_offset {
                        assert_eq!(offset, expected, "gap or overlap in offsets");
                    }
                    next_offset = Some(offset + data.len() as u64);
                    bytes.extend_from_slice(&data);
                    if String::from_utf8_lossy(&bytes).contains(needle) {
                        return (bytes, None);
                    }
                }
                Event::Exited(status) => return (bytes, Some(status)),
                Event::Skipped { to, .. } => next_offset = Some(to),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_terminal_left_behind_is_redrawn_from_the_screen() {
        // Far more than the attachment's queue holds (32 events of up to
        // 32 KiB) and than the 16 KiB ring.
        let script = "read go; seq -f line-%g 1 300000; sleep 100";
        let session = start_sh(script, 16 * 1024);
        let mut stalled = attach(&session, 1, terminal()).await;
        typed(&session, 1, b"\n").await;
        let mut info = session.info.clone();
        tokio::time::timeout(DEADLINE, info.wait_for(|i| i.output_offset > 3_000_000))
            .await
            .expect("output produced while the client was stalled")
            .expect("session alive");
        // The redraw on attach, what fit in the queue, then a redraw of the
        // screen as it is now instead of the megabytes in between.
        let (mut redraws, mut output) = (0, 0);
        let screen = loop {
            match tokio::time::timeout(DEADLINE, stalled.recv()).await {
                Ok(Some(Event::Redraw { data })) => {
                    redraws += 1;
                    if redraws == 2 {
                        break data;
                    }
                }
                Ok(Some(Event::Output { data, .. })) => output += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(output < 3_000_000, "fed the whole backlog: {output} bytes");
        let mut terminal = vt100::Parser::new(
            std::num::NonZeroU16::new(24).expect("rows"),
            std::num::NonZeroU16::new(80).expect("cols"),
            0,
        );
        terminal.process(&screen);
        // The last line may be cut short where the output was when redrawn.
        let contents = terminal.screen().contents();
        let complete = contents.lines().count().saturating_sub(1);
        let lines: Vec<u32> = contents
            .lines()
            .take(complete)
            .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
            .collect();
        assert!(
            lines.len() >= 20,
            "screen: {:?}",
            terminal.screen().contents()
        );
        assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
        assert!(lines[0] > 30_000, "not the current screen: {lines:?}");
        kill(session).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_terminal_that_keeps_up_gets_every_byte_however_small_the_ring() {
        // 2.5 MB through a 16 KiB ring: without pacing, the program would
        // outrun the client and the ring wrap past it (a redraw).
        let script = "read go; seq -f line-%g 1 300000; echo END; sleep 100";
        let session = start_sh(script, 16 * 1024);
        let mut terminal = attach(&session, 1, terminal()).await;
        match tokio::time::timeout(DEADLINE, terminal.recv()).await {
            Ok(Some(Event::Redraw { .. })) => {}
            other => panic!("no redraw first: {other:?}"),
        }
        typed(&session, 1, b"\n").await;
        let mut text = Vec::new();
        while !text.ends_with(b"END\r\n") {
            match tokio::time::timeout(DEADLINE, terminal.recv()).await {
                Ok(Some(Event::Output { data, .. })) => text.extend_from_slice(&data),
                other => panic!("after {} bytes: {other:?}", text.len()),
            }
        }
        let lines: Vec<u32> = String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.strip_prefix("line-")?.parse().ok())
            .collect();
        assert_eq!(lines, (1..=300_000).collect::<Vec<_>>());
        kill(session).await;
    }

    #[tokio::test]
    async fn output_input_and_exit_flow_through_an_attachment() {
        let session = start_sh("echo ready; read line; echo got:$line; exit 5", 4096);
        let mut attachment = attach(&session, 1, byte_stream(None)).await;
        read_until(&mut attachment, "ready").await;
        typed(&session, 1, b"hello\n").await;
        let (bytes, _) = read_until(&mut attachment, "got:hello").await;
        assert!(String::from_utf8_lossy(&bytes).contains("got:hello"));
        let (_, exit) = read_until(&mut attachment, "\u{0}never").await;
        assert_eq!(
            exit,
            Some(ExitStatus {
                code: 5,
                signal: None
            })
        );
        let mut info = session.info.clone();
        tokio::time::timeout(DEADLINE, info.wait_for(|i| i.state == SessionState::Exited))
            .await
            .expect("exited in time")
            .expect("session alive");
    }

    /// Reads `events` until `END` shows; returns (count of b'x', skipped?).
    async fn drain_counting(events: &mut mpsc::Receiver<Event>) -> (usize, bool) {
        let (mut xs, mut skipped, mut tail) = (0, false, Vec::new());
        loop {
            match tokio::time::timeout(DEADLINE, events.recv()).await {
                Ok(Some(Event::Output { data, .. })) => {
                    xs += data.iter().filter(|&&b| b == b'x').count();
                    tail.extend_from_slice(&data);
                    tail.drain(..tail.len().saturating_sub(8));
                    if tail.windows(3).any(|w| w == b"END") {
                        return (xs, skipped);
                    }
                }
                Ok(Some(Event::Skipped { .. })) => skipped = true,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    const FLOOD: &str = "head -c 4194304 /dev/zero | tr -c x x; echo; echo END; sleep 100";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_never_stalls_the_others() {
        // 4 MiB of output, all of it kept by an 8 MiB ring buffer.
        let session = start_sh(FLOOD, 8 << 20);
        let mut stalled = attach(&session, 1, byte_stream(Some(0))).await;
        let mut reader = attach(&session, 2, byte_stream(Some(0))).await;
        assert_eq!(drain_counting(&mut reader).await, (4 << 20, false));
        // The stalled client holds no more than its queue ...
        assert!(stalled.len() <= ATTACHMENT_QUEUE);
        // ... and, once it reads again, is caught up from the ring buffer.
        assert_eq!(drain_counting(&mut stalled).await, (4 << 20, false));
        kill(session).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_left_behind_by_the_ring_buffer_is_told_what_it_skipped() {
        let session = start_sh(FLOOD, 64 * 1024);
        let mut stalled = attach(&session, 1, byte_stream(Some(0))).await;
        let mut info = session.info.clone();
        tokio::time::timeout(DEADLINE, info.wait_for(|i| i.output_offset > 4 << 20))
            .await
            .expect("all output produced while the client was stalled")
            .expect("session alive");
        let (xs, skipped) = drain_counting(&mut stalled).await;
        assert!(skipped);
        assert!((64 * 1024..4 << 20).contains(&xs), "{xs}");
        kill(session).await;
    }

    #[tokio::test]
    async fn a_read_only_attachment_neither_types_nor_decides_the_size() {
        let session = start_sh("echo ready; while read l; do echo got:$l; done", 4096);
        let mut writer = attach(&session, 1, byte_stream(None)).await;
        read_until(&mut writer, "ready").await;
        let big = PtySize::from_request(200, 50, PtySize::DEFAULT);
        let _viewer = attach(
            &session,
            2,
            AttachRequest {
                size: Some(big),
                read_only: true,
                from: None,
                quiet: false,
                watch: false,
                tail: 0,
                pattern: None,
            },
        )
        .await;
        // Both inputs travel the same queue in this order: had the first
        // been forwarded, "got:x" would come before "got:y".
        typed(&session, 2, b"x\n").await;
        typed(&session, 1, b"y\n").await;
        let (bytes, _) = read_until(&mut writer, "got:y").await;
        assert!(!String::from_utf8_lossy(&bytes).contains("got:x"));
        assert_eq!(session.info.borrow().size, PtySize::DEFAULT);
        kill(session).await;
    }

    #[tokio::test]
    async fn reattaching_from_an_offset_continues_without_gap_or_duplicate() {
        // A pause after line 50 puts the second attach mid-stream.
        let script = "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo n=$i; \
                      [ $i = 50 ] && sleep 0.3; done; sleep 100";
        let session = start_sh(script, 1 << 20);
        let mut first = attach(&session, 1, byte_stream(None)).await;
        let (part, _) = read_until(&mut first, "n=50\r\n").await;
        let detach = Message::Detach { id: 1 };
        assert!(session.messages.send(detach).await.is_ok());
        let mut second = attach(&session, 2, byte_stream(Some(part.len() as u64))).await;
        let rest = if String::from_utf8_lossy(&part).contains("n=200\r\n") {
            Vec::new() // everything came in the first read
        } else {
            read_until(&mut second, "n=200\r\n").await.0
        };
        let all = String::from_utf8_lossy(&[part, rest].concat()).into_owned();
        let numbers: Vec<u32> = all
            .split_whitespace()
            .filter_map(|t| t.strip_prefix("n=")?.parse().ok())
            .collect();
        assert_eq!(numbers, (1..=200).collect::<Vec<_>>());
        kill(session).await;
    }
}
