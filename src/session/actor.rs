//! The session task: the only code that touches a session's PTY, ring buffer,
//! screen model and attachments.
//!
//! Invariants:
//! - The PTY is read as fast as the fastest writable terminal takes the
//!   output, and never held back for longer than [`pacing::PACE_BOUND`]
//!   (see [`super::pacing`]); with no such client, at full speed. Output
//!   goes into the ring buffer and the screen model first, then to each
//!   attachment with `try_send`; the task never awaits a client.
//! - Each attachment has a bounded queue and a cursor (`sent_upto`, an
//!   absolute offset). When its queue is full the attachment waits for room
//!   and is then caught up from the ring buffer, so a slow client costs at
//!   most its queue and never stalls the PTY or the other clients.
//! - A terminal (an attachment with a size and no `--from`) starts with a
//!   redraw from the screen model at the ring's end: the screen, the
//!   history lines into its scrollback, the screen again. Behind, it is caught up byte for byte (its terminal's own
//!   scrollback gets every line) as long as the ring still holds its cursor;
//!   once the ring wraps past it, it is redrawn from the model instead (as
//!   mosh and tmux do). A byte stream that the ring wraps past is told what
//!   it missed (`Skipped`) and resumes at the ring's start. (The cursor's
//!   rules: [`super::catch_up`]; the lifecycle's: [`super::lifecycle`].)
//! - A redraw is taken at the ring's end and the cursor set there, and
//!   replay comes from the same cursor as live output, so there is neither a
//!   gap nor a duplicate at the seam.
//! - `Exited` is sent to an attachment only after every byte of output.
//! - The PTY size follows the writable, sized attachment that most recently
//!   attached or typed (tmux's `window-size latest`).

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use nix::sys::signal::Signal;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::away::Away;
use super::catch_up::{Attachment, Live, Pumped, Source};
use super::history_file::HistoryFile;
use super::keys;
use super::lifecycle::{Effect, Lifecycle, Timers};
use super::notify::{self, Notifier};
use super::pacing::{self, Pacing};
use super::pty::{Pty, PtyStreams};
use super::replay;
use super::ring::RingBuffer;
use super::screen::Screen;
use super::waiters::Waiters;
use crate::protocol::host::SessionSettings;
use crate::protocol::{
    AttachReply, AttachRequest, ControlRequest, Doing, Event, ExitStatus, HistoryFormat, PtySize,
    Refusal, SendReply, SessionInfo, SessionState, SignalName, Typed,
};

/// Identifies one attachment within its session process. Chosen by the
/// host when the connection opens; never on the wire.
pub(super) type AttachmentId = u64;

/// What a connection task of the host asks of the session task.
pub(super) enum Message {
    /// Bind attachment `id`: the answer on `reply`, then its events (replay,
    /// live output, `Exited`) on `events`, in order.
    Attach {
        /// Its id.
        id: AttachmentId,
        /// What the client asked for.
        request: AttachRequest,
        /// Its event queue ([`super::ATTACHMENT_QUEUE`] events).
        events: mpsc::Sender<Event>,
        /// Attached (from which offset) or refused.
        reply: oneshot::Sender<AttachReply>,
    },
    /// Attachment `id`'s client changed its window.
    Resize {
        /// Which attachment.
        id: AttachmentId,
        /// Its new size.
        size: PtySize,
    },
    /// Attachment `id`'s connection closed.
    Detach {
        /// Which attachment.
        id: AttachmentId,
    },
    /// A request from a control connection.
    Control(ControlRequest),
    /// A signal for the PTY's foreground process group (RFC 4254 §6.9).
    Signal(SignalName),
    /// Bytes for the program's input from `send` (no attachment).
    Send {
        /// Text and keys, in order.
        typed: Vec<Typed>,
        /// Sent, or refused.
        reply: oneshot::Sender<SendReply>,
    },
    /// What the session holds of its past, in one piece.
    History {
        /// Text or raw bytes.
        format: HistoryFormat,
        /// The answer.
        reply: oneshot::Sender<Bytes>,
    },
}

/// Keystrokes from attachment `id`, on the session's input queue: a queue
/// of its own, so that a program that does not read its input holds up
/// only the typing client, never requests or output.
pub(super) struct Input {
    /// Which attachment typed.
    pub id: AttachmentId,
    /// The bytes, as the client sent them.
    pub data: Bytes,
}

/// How soon after output, input or an attach `list`'s view of what the
/// session is doing is brought up to date.
const REFRESH: Duration = Duration::from_millis(300);
/// How long after its last wake (output, input, a message, a client's
/// room) a session process gives the heap its burst freed back to the
/// system ([`crate::memory`]): an attach's redraw, a `history` or a flood
/// of output leave free pages inside the heap that glibc keeps otherwise.
const TRIM_AFTER: Duration = Duration::from_secs(2);
/// Most characters of the screen's last line in `list`.
const LAST_LINE: usize = 80;

type WaitForRoom =
    Pin<Box<dyn Future<Output = (AttachmentId, Result<OwnedPermit<Event>, SendError<()>>)> + Send>>;

/// What woke the session task.
enum Wake {
    Output(Option<Bytes>),
    Message(Option<Message>),
    Input(Input),
    Room(AttachmentId, Result<OwnedPermit<Event>, SendError<()>>),
    Exit(ExitStatus),
    Deadline,
}

pub(super) struct Actor {
    info: SessionInfo,
    publish: watch::Sender<SessionInfo>,
    ring: RingBuffer,
    screen: Screen,
    pty: Pty,
    settings: SessionSettings,
    attachments: Vec<Attachment>,
    /// `wait --for` waiters: no output queues, one DFA step per text byte.
    waiters: Waiters,
    waiting: FuturesUnordered<WaitForRoom>,
    pending_input: Option<Bytes>,
    clock: u64,
    lifecycle: Lifecycle,
    timers: Timers,
    pacing: Pacing,
    /// `[notify]`, when set.
    notifier: Option<Notifier>,
    /// What happened since the last client left; `None` while one is
    /// attached.
    away: Option<Away>,
    /// When `info.doing` is next brought up to date (after output, input
    /// or an attach; `None`: nothing new).
    refresh_at: Option<Instant>,
    /// When the freed heap is next given back ([`TRIM_AFTER`] after the
    /// last wake but a timer; `None`: done since).
    trim_at: Option<Instant>,
    /// The PTY's output has ended (or is no longer read, after an exit).
    output_eof: bool,
    /// Output and snapshot on disk (`None`: `history_file_bytes = 0`, or
    /// the file could not be created).
    history: Option<HistoryFile>,
    /// Leave the history files at the end (`ControlRequest::Release`).
    keep_history: bool,
}

impl Actor {
    pub(super) fn new(
        mut info: SessionInfo,
        publish: watch::Sender<SessionInfo>,
        pty: Pty,
        settings: SessionSettings,
        history: Option<HistoryFile>,
    ) -> Actor {
        let timers = Timers {
            orphan_timeout: settings.orphan_timeout,
            kill_grace: settings.kill_grace,
            exited_retention: settings.exited_retention,
        };
        info.history_on_disk = history.is_some();
        publish.send_modify(|i| i.history_on_disk = info.history_on_disk);
        let screen = Screen::new(info.size);
        let notifier = settings.notify.clone().map(Notifier::new);
        Actor {
            info,
            publish,
            ring: RingBuffer::new(settings.scrollback_bytes),
            screen,
            pty,
            settings,
            attachments: Vec::new(),
            waiters: Waiters::default(),
            waiting: FuturesUnordered::new(),
            pending_input: None,
            clock: 0,
            lifecycle: Lifecycle::start(Instant::now(), &timers),
            timers,
            pacing: Pacing::default(),
            notifier,
            away: Some(Away::since(SystemTime::now())),
            refresh_at: None,
            // The start's own temporaries (spec, options, runtime set-up).
            trim_at: Some(Instant::now() + TRIM_AFTER),
            output_eof: false,
            history,
            keep_history: false,
        }
    }

    /// Output from before a restart (`HostSpec::resume`), into the ring
    /// buffer and the screen model: not into the history file, which holds
    /// it already, nor counted as output while away.
    pub(super) fn replay(&mut self, output: &[u8]) {
        self.ring.push(output);
        self.screen.process(output);
        let _ = self.screen.take_bells();
        self.info.output_offset = self.ring.end();
        self.info.buffer_start = self.ring.start();
        self.publish();
    }

    /// Output that comes before the program's (a notice from keepsh), into
    /// the ring buffer and the screen model as if the program wrote it.
    pub(super) fn preface(&mut self, text: Vec<u8>) {
        self.on_output(Bytes::from(text));
    }

    pub(super) async fn run(
        mut self: Box<Self>,
        streams: PtyStreams,
        mut messages: mpsc::Receiver<Message>,
        mut inputs: mpsc::Receiver<Input>,
    ) {
        tracing::info!(name = %self.info.name, "session started");
        let PtyStreams {
            mut output,
            mut exit,
        } = streams;
        let input_tx = self.pty.input.clone();
        let mut messages_open = true;
        let mut timer = Timer::default();
        while !self.lifecycle.ended() {
            let held = self.hold_output();
            let deadline = timer.set(self.next_deadline());
            // Select only picks what happened; the handling below may then
            // borrow `self` freely.
            let wake = tokio::select! {
                chunk = output.next(), if !self.output_eof && !held => Wake::Output(chunk),
                message = messages.recv(), if messages_open => Wake::Message(message),
                Some(input) = inputs.recv(), if self.pending_input.is_none() => Wake::Input(input),
                permit = input_tx.reserve(), if self.pending_input.is_some() => {
                    if let (Ok(permit), Some(data)) = (permit, self.pending_input.take()) {
                        permit.send(data);
                    }
                    continue;
                }
                Some((id, permit)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    Wake::Room(id, permit)
                }
                status = &mut exit, if self.lifecycle.running() => {
                    Wake::Exit(status.unwrap_or(ExitStatus { code: 1, signal: None }))
                }
                () = &mut timer.sleep, if deadline.is_some() => Wake::Deadline,
            };
            match wake {
                Wake::Message(None) => messages_open = false,
                Wake::Deadline => self.on_deadline(),
                wake => {
                    self.on_wake(wake);
                    self.trim_at = Some(Instant::now() + TRIM_AFTER);
                }
            }
        }
        self.finish();
    }

    /// Handles what woke the task (a closed message queue and a deadline
    /// are the loop's own business).
    fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Output(Some(chunk)) => self.on_output(chunk),
            Wake::Output(None) => {
                self.output_eof = true;
                let effect = self.lifecycle.eof(Instant::now(), &self.timers);
                self.apply(effect);
            }
            Wake::Message(Some(message)) => self.on_message(message),
            Wake::Input(input) => self.on_input(input),
            Wake::Room(id, permit) => self.on_room(id, permit),
            Wake::Exit(status) => {
                tracing::info!(code = status.code, signal = ?status.signal, "program exited");
                let (now, eof) = (Instant::now(), self.output_eof);
                let effect = self.lifecycle.reaped(status, eof, now, &self.timers);
                self.apply(effect);
            }
            Wake::Message(None) | Wake::Deadline => {}
        }
    }

    /// The session ended cleanly: nothing on disk to keep for it, unless
    /// it was released for a restart.
    fn finish(&mut self) {
        if let Some(history) = self.history.take()
            && !self.keep_history
        {
            history.remove();
        }
        tracing::info!("session ended");
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.lifecycle.deadline(),
            self.pacing.deadline(),
            self.refresh_at,
            self.trim_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Brings `info.doing` up to date within [`REFRESH`], once.
    fn refresh_soon(&mut self) {
        if self.refresh_at.is_none() {
            self.refresh_at = Some(Instant::now() + REFRESH);
        }
    }

    /// What the session is doing now: title, foreground process and its
    /// directory, last line; published if it changed.
    fn refresh(&mut self) {
        self.refresh_at = None;
        let foreground = self.pty.foreground();
        let proc = |what: &str| foreground.map(|pid| format!("/proc/{pid}/{what}"));
        let doing = Doing {
            title: self.screen.title(),
            current_command: proc("comm")
                .and_then(|path| std::fs::read_to_string(path).ok())
                .map(|comm| comm.trim_end().to_owned()),
            // The foreground process's, else what the shell announced (OSC 7).
            cwd: proc("cwd")
                .and_then(|path| std::fs::read_link(path).ok())
                .or_else(|| self.screen.working_directory())
                .map(|dir| dir.display().to_string()),
            bells: self.info.doing.bells,
            last_line: self.screen.last_line(LAST_LINE),
        };
        let changed = doing != self.publish.borrow().doing;
        self.info.doing = doing;
        if changed {
            self.publish();
        }
    }

    /// Whether the PTY's output waits for a pacing client (see
    /// [`pacing`]): the PTY reader then blocks, and so does the program.
    fn hold_output(&mut self) -> bool {
        let pacers = self.attachments.iter().filter(|a| a.paces());
        let hold = pacing::hold(self.lifecycle.running(), pacers.map(|a| a.waiting));
        self.pacing.update(hold, Instant::now)
    }

    fn on_deadline(&mut self) {
        let now = Instant::now();
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh();
        }
        if self.trim_at.is_some_and(|at| at <= now) {
            self.trim_at = None;
            if let Some(history) = &mut self.history {
                history.reap();
            }
            let released = crate::memory::give_back_freed_memory();
            let stack = crate::memory::give_back_unused_stack();
            tracing::trace!(released, stack, "quiet: freed memory given back");
        }
        if self.pacing.expired(now) {
            for att in self
                .attachments
                .iter_mut()
                .filter(|a| a.paces() && a.waiting)
            {
                tracing::debug!(
                    attachment = att.id,
                    "held the output too long; no longer paces"
                );
                att.stop_pacing();
            }
        }
        let effect = self.lifecycle.deadline_passed(now, &self.timers);
        self.apply(effect);
    }

    /// Carries out what a lifecycle transition asks for.
    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Hangup => {
                tracing::info!("killing: SIGHUP to the process groups");
                self.pty.signal_groups(Signal::SIGHUP);
            }
            Effect::SigKill => self.pty.signal_groups(Signal::SIGKILL),
            Effect::Exit(status) => self.exited(status),
        }
    }

    fn on_output(&mut self, chunk: Bytes) {
        let offset = self.ring.end();
        self.ring.push(&chunk);
        self.screen.process(&chunk);
        let bells = self.screen.take_bells();
        if let Some(away) = &mut self.away {
            away.output(&chunk, bells);
        }
        self.info.doing.bells += bells;
        self.refresh_soon();
        self.notify_output(&chunk, bells);
        self.wake_waiters(&chunk);
        let mut closed = Vec::new();
        for i in 0..self.attachments.len() {
            let caught_up = match self.attachments[i].send_live(offset, &chunk) {
                Live::Sent => true,
                Live::Closed => false,
                Live::Behind => self.pump(i),
            };
            if !caught_up {
                closed.push(self.attachments[i].id);
            }
        }
        for id in closed {
            self.detach(id);
        }
        // After the clients: it may start the history's writing thread.
        self.record(&chunk);
        // Output is the hot path: update the published snapshot in place
        // rather than cloning the whole of it per chunk.
        let (start, end, now) = (self.ring.start(), self.ring.end(), SystemTime::now());
        self.info.output_offset = end;
        self.info.buffer_start = start;
        self.info.last_activity = now;
        self.publish.send_modify(|info| {
            info.output_offset = end;
            info.buffer_start = start;
            info.last_activity = now;
        });
    }

    /// The waiters whose pattern `chunk` completed get `Matched` and leave.
    fn wake_waiters(&mut self, chunk: &[u8]) {
        let matched = self.waiters.feed(chunk);
        if matched.is_empty() {
            return;
        }
        for (id, events) in matched {
            tracing::info!(attachment = id, "waiter matched");
            let _ = events.try_send(Event::Matched);
        }
        self.publish_clients();
    }

    /// Bells and desktop notifications in `chunk`, for `[notify]` when no
    /// writable client is attached (bells rung while one is are dropped).
    fn notify_output(&mut self, chunk: &[u8], bells: u64) {
        if self.attachments.iter().any(|a| !a.read_only) {
            return;
        }
        let Some(notifier) = &mut self.notifier else {
            return;
        };
        if bells > 0 {
            notifier.notify(notify::Kind::Bell, "bell", &self.info);
        }
        for message in notify::desktop_notifications(chunk) {
            notifier.notify(notify::Kind::Notification, &message, &self.info);
        }
    }

    fn on_message(&mut self, message: Message) {
        match message {
            Message::Attach {
                id,
                request,
                events,
                reply,
            } => self.attach(id, request, events, reply),
            Message::Resize { id, size } => {
                if let Some(att) = self.attachments.iter_mut().find(|a| a.id == id) {
                    att.size = Some(size);
                    self.apply_size();
                }
            }
            Message::Detach { id } => self.detach(id),
            Message::Control(ControlRequest::Rename { name }) => {
                tracing::info!(%name, "renamed");
                self.info.name = name;
                self.publish();
            }
            Message::Control(ControlRequest::Kill) => self.kill(),
            Message::Control(ControlRequest::Release) => {
                tracing::info!("released for a restart: its history files stay");
                self.keep_history = true;
                self.kill();
            }
            Message::Signal(name) => {
                if self.info.exit.is_none() {
                    tracing::info!(signal = ?name, "signal to the foreground process group");
                    self.pty.signal_foreground(nix_signal(name));
                }
            }
            Message::History { format, reply } => {
                let _ = reply.send(self.history(format));
            }
            Message::Send { typed, reply } => {
                let answer = if self.info.exit.is_some() {
                    SendReply::Exited
                } else {
                    let data = keys::encode(&typed, self.screen.app_cursor());
                    self.type_in(Bytes::from(data));
                    SendReply::Sent
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// What the session holds of its past: the ring buffer's bytes, or the
    /// history lines and the screen as plain text.
    fn history(&self, format: HistoryFormat) -> Bytes {
        match format {
            HistoryFormat::Raw => self.ring.read(self.ring.start(), usize::MAX).1,
            HistoryFormat::Text => {
                let (size, lines) = (self.info.size, self.settings.scrollback_lines);
                Bytes::from(replay::text(&self.ring, &self.screen, size, lines))
            }
        }
    }

    /// Up to `scrollback_lines` lines above the screen, rebuilt from the
    /// ring buffer (see [`screen::history`]).
    fn history_lines(&self) -> String {
        let (size, lines) = (self.info.size, self.settings.scrollback_lines);
        replay::history_lines(&self.ring, size, lines)
    }

    fn attach(
        &mut self,
        id: AttachmentId,
        request: AttachRequest,
        events: mpsc::Sender<Event>,
        reply: oneshot::Sender<AttachReply>,
    ) {
        if let Some(pattern) = &request.pattern {
            self.add_waiter(id, pattern, events, reply);
            return;
        }
        let (start, end) = (self.ring.start(), self.ring.end());
        let watcher = request.watch;
        let terminal = request.size.is_some() && request.from.is_none() && !watcher;
        let from = match request.from {
            Some(from) if from < start || from > end => {
                let refusal = Refusal::OutsideBuffer { from, start, end };
                let _ = reply.send(AttachReply::Refused(refusal));
                return;
            }
            Some(from) => from,
            None if terminal || watcher => end,
            None => start,
        };
        if reply.send(AttachReply::Attached { from }).is_err() {
            return; // its connection closed meanwhile
        }
        self.clock += 1;
        let size = request.size.filter(|_| !watcher);
        let read_only = request.read_only || watcher;
        let mut attachment =
            Attachment::new(id, events, size, read_only, terminal, from, self.clock);
        attachment.watcher = watcher;
        self.attachments.push(attachment);
        tracing::info!(
            attachment = id,
            replay_bytes = end - from,
            terminal,
            read_only,
            watcher,
            "attached"
        );
        let (clients, now) = (self.clients(), Instant::now());
        self.lifecycle.clients(clients, now, &self.timers);
        self.apply_size();
        let index = self.attachments.len() - 1;
        self.first_events(index, &request, terminal, watcher);
        if !self.pump(index) {
            self.detach(id);
        }
        self.publish_clients();
    }

    /// A waiter (`wait --for`): matched from the output's end; refused if
    /// its pattern does not compile or the program has exited.
    fn add_waiter(
        &mut self,
        id: AttachmentId,
        pattern: &str,
        events: mpsc::Sender<Event>,
        reply: oneshot::Sender<AttachReply>,
    ) {
        let from = self.ring.end();
        if let Some(status) = &self.info.exit {
            let _ = reply.send(AttachReply::Attached { from });
            let _ = events.try_send(Event::Exited(status.clone()));
            return;
        }
        let added = self.waiters.add(id, pattern, events);
        let answer = match added {
            Ok(()) => AttachReply::Attached { from },
            Err(reason) => AttachReply::Refused(Refusal::Pattern { reason }),
        };
        if reply.send(answer).is_err() {
            self.waiters.remove(id);
            return;
        }
        tracing::info!(attachment = id, waiters = self.waiters.len(), "waiter");
        self.publish_clients();
    }

    /// What attachment `index` gets before output: a terminal its redraw
    /// (with the away line, unless quiet), a watcher with `tail` its last
    /// lines as text. A client (not a watcher) ends "away" and the bell
    /// count.
    fn first_events(
        &mut self,
        index: usize,
        request: &AttachRequest,
        terminal: bool,
        watcher: bool,
    ) {
        let away = if watcher { None } else { self.away.take() };
        if !watcher {
            // Bells are counted since a client last attached.
            self.info.doing.bells = 0;
            self.refresh_soon();
        }
        if terminal {
            let quiet = request.quiet || !self.settings.away_summary;
            let (redraw, shown) = self.first_redraw(away.filter(|_| !quiet));
            self.attachments[index].redraw_first(redraw, shown);
        } else if watcher && request.tail > 0 {
            let text = Bytes::from(last_lines(&self.history(HistoryFormat::Text), request.tail));
            let len = text.len();
            self.attachments[index].redraw_first(text, len);
        }
    }

    /// A terminal's first redraw: the screen, history lines and then
    /// `away`'s line if it has one into the terminal's scrollback, the
    /// screen again (see [`Screen::restore`]); and how many bytes first
    /// show the screen. Taken after the model took the client's size (as a
    /// terminal resized: cells cut or padded, no reflow), at the offset the
    /// output continues from; the program repaints for the new size.
    fn first_redraw(&self, away: Option<Away>) -> (Bytes, usize) {
        let mut history = self.history_lines();
        let exit = self.exit_text();
        if let Some(line) = away.and_then(|a| a.summary(SystemTime::now(), exit.as_deref())) {
            if !history.is_empty() {
                history.push('\n');
            }
            history.push_str(&line);
        }
        replay::redraw(&self.ring, &self.screen, &history)
    }

    fn detach(&mut self, id: AttachmentId) {
        if self.waiters.remove(id) {
            self.publish_clients();
            return;
        }
        let before = self.attachments.len();
        self.attachments.retain(|a| a.id != id);
        if self.attachments.len() == before {
            return;
        }
        if self.clients() == 0 && self.away.is_none() {
            self.away = Some(Away::since(SystemTime::now()));
        }
        tracing::info!(attachment = id, "detached");
        let (clients, now) = (self.clients(), Instant::now());
        self.lifecycle.clients(clients, now, &self.timers);
        self.apply_size();
        self.publish_clients();
    }

    fn on_input(&mut self, input: Input) {
        let Some(att) = self
            .attachments
            .iter_mut()
            .find(|a| a.id == input.id && !a.read_only)
        else {
            return;
        };
        self.clock += 1;
        att.last_active = self.clock;
        self.apply_size();
        self.type_in(input.data);
        self.refresh_soon();
        self.info.last_activity = SystemTime::now();
        // Input is frequent; the snapshot's activity time need not be exact
        // to the keystroke, so it is published with the next other change.
    }

    /// Hands `data` to the PTY writer, after any input still waiting for
    /// room there.
    fn type_in(&mut self, data: Bytes) {
        let data = match self.pending_input.take() {
            Some(pending) => Bytes::from([pending, data].concat()),
            None => data,
        };
        match self.pty.input.try_send(data) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(data)) => self.pending_input = Some(data),
        }
    }

    fn on_room(&mut self, id: AttachmentId, permit: Result<OwnedPermit<Event>, SendError<()>>) {
        let Some(index) = self.attachments.iter().position(|a| a.id == id) else {
            return;
        };
        // Half the ring behind, a client that drains sets the pace again.
        let (end, danger) = (self.ring.end(), self.ring.capacity() as u64 / 2);
        self.attachments[index].has_room(end, danger);
        let Ok(permit) = permit else {
            self.detach(id);
            return;
        };
        let mut feed = Feed::of(&self.ring, &self.screen, self.info.exit.as_ref());
        let att = &mut self.attachments[index];
        if let Some((event, advance)) = att.next_step(&mut feed) {
            permit.send(event);
            att.advance(advance);
        }
        if !self.pump(index) {
            self.detach(id);
        }
    }

    /// Sends attachment `index` everything it is missing that fits in its
    /// queue; when the queue fills, arranges to be woken when it has room.
    /// Returns false if the attachment's receiver is gone.
    fn pump(&mut self, index: usize) -> bool {
        let mut feed = Feed::of(&self.ring, &self.screen, self.info.exit.as_ref());
        let att = &mut self.attachments[index];
        let pumped = att.pump(&mut feed);
        if pumped == Pumped::Full {
            let (id, tx) = (att.id, att.queue());
            self.waiting
                .push(Box::pin(async move { (id, tx.reserve_owned().await) }));
        }
        pumped != Pumped::Closed
    }

    /// Gives the PTY (and the screen model) the size of the most recently
    /// active writable client that has one. Byte-stream and read-only
    /// clients never decide it.
    fn apply_size(&mut self) {
        let leader = self
            .attachments
            .iter()
            .filter(|a| !a.read_only)
            .filter_map(|a| a.size.map(|s| (a.last_active, s)))
            .max_by_key(|(active, _)| *active);
        if let Some((_, size)) = leader
            && size != self.info.size
            && self.info.exit.is_none()
        {
            self.pty.resize(size);
            self.screen.resize(size);
            self.info.size = size;
            self.publish();
        }
    }

    fn kill(&mut self) {
        let effect = self.lifecycle.kill(Instant::now(), &self.timers);
        self.apply(effect);
    }

    /// Declares the session exited: every attachment gets `Exited` after
    /// its last byte. Output a background job still writes is no longer read.
    fn exited(&mut self, status: ExitStatus) {
        self.output_eof = true;
        self.info.exit = Some(status);
        let message = self.exit_text();
        if let Some(notifier) = &mut self.notifier
            && !self.attachments.iter().any(|a| !a.read_only)
            && let Some(message) = message
        {
            notifier.notify(notify::Kind::Exit, &message, &self.info);
        }
        self.info.state = SessionState::Exited;
        let status = self.info.exit.clone().expect("set above");
        for events in self.waiters.take_all() {
            let _ = events.try_send(Event::Exited(status.clone()));
        }
        let mut closed = Vec::new();
        for i in 0..self.attachments.len() {
            if !self.pump(i) {
                closed.push(self.attachments[i].id);
            }
        }
        for id in closed {
            self.detach(id);
        }
        self.publish();
    }

    /// How the program ended, once it has: "exited with code N" or
    /// "was killed by signal NAME".
    fn exit_text(&self) -> Option<String> {
        let status = self.info.exit.as_ref()?;
        Some(match &status.signal {
            Some(signal) => format!("was killed by signal {signal}"),
            None => format!("exited with code {}", status.code),
        })
    }

    /// Attachments that are clients (watchers are not).
    fn clients(&self) -> usize {
        self.attachments.iter().filter(|a| !a.watcher).count()
    }

    fn publish_clients(&mut self) {
        self.info.clients = self.clients();
        self.info.watchers = self.attachments.len() - self.info.clients + self.waiters.len();
        if self.info.exit.is_none() {
            if self.info.clients == 0 {
                if self.info.state == SessionState::Attached {
                    self.info.detached_at = Some(SystemTime::now());
                }
                self.info.state = SessionState::Orphaned;
            } else {
                self.info.state = SessionState::Attached;
                self.info.detached_at = None;
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        self.publish.send_replace(self.info.clone());
        if let Some(history) = &mut self.history {
            history.info_changed();
        }
    }

    /// Appends `chunk` to the history file; says so once writing it failed.
    fn record(&mut self, chunk: &Bytes) {
        let Some(history) = &mut self.history else {
            return;
        };
        history.append(chunk);
        if self.info.history_on_disk && !history.on_disk() {
            self.info.history_on_disk = false;
            self.publish.send_modify(|i| i.history_on_disk = false);
        }
    }
}

/// What an attachment is caught up from: the ring buffer, the screen
/// model and the exit, borrowed for one pump.
struct Feed<'a> {
    ring: &'a RingBuffer,
    screen: &'a Screen,
    exit: Option<&'a ExitStatus>,
}

impl<'a> Feed<'a> {
    fn of(ring: &'a RingBuffer, screen: &'a Screen, exit: Option<&'a ExitStatus>) -> Feed<'a> {
        Feed { ring, screen, exit }
    }
}

impl Source for Feed<'_> {
    fn bounds(&self) -> (u64, u64) {
        (self.ring.start(), self.ring.end())
    }

    fn read(&self, offset: u64, max: usize) -> (u64, Bytes) {
        self.ring.read(offset, max)
    }

    fn exit(&self) -> Option<&ExitStatus> {
        self.exit
    }

    fn resync(&mut self) -> Bytes {
        replay::redraw(self.ring, self.screen, "").0
    }
}

/// The session task's one timer, moved only when its deadline changes: a
/// new `Sleep` for each turn of the loop, earlier than the one before,
/// made tokio wake its own driver (an eventfd write and one more
/// `epoll_wait` on each keystroke's way in and out).
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    at: Option<Instant>,
}

impl Default for Timer {
    fn default() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            at: None,
        }
    }
}

impl Timer {
    /// Arms the timer for `deadline` (`None`: the caller does not poll
    /// it); returns `deadline`.
    fn set(&mut self, deadline: Option<Instant>) -> Option<Instant> {
        if let Some(at) = deadline
            && self.at != deadline
        {
            self.sleep.as_mut().reset(at);
        }
        self.at = deadline;
        deadline
    }
}

/// The last `count` lines of `text` (each ended by `\n`).
fn last_lines(text: &[u8], count: u32) -> Vec<u8> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let start = memchr::memrchr_iter(b'\n', text)
        .nth(count.saturating_sub(1))
        .map_or(0, |at| at + 1);
    let mut lines = text[start..].to_vec();
    if !lines.is_empty() {
        lines.push(b'\n');
    }
    lines
}

/// The OS signal for a [`SignalName`].
fn nix_signal(name: SignalName) -> Signal {
    match name {
        SignalName::Abrt => Signal::SIGABRT,
        SignalName::Alrm => Signal::SIGALRM,
        SignalName::Fpe => Signal::SIGFPE,
        SignalName::Hup => Signal::SIGHUP,
        SignalName::Ill => Signal::SIGILL,
        SignalName::Int => Signal::SIGINT,
        SignalName::Kill => Signal::SIGKILL,
        SignalName::Pipe => Signal::SIGPIPE,
        SignalName::Quit => Signal::SIGQUIT,
        SignalName::Segv => Signal::SIGSEGV,
        SignalName::Term => Signal::SIGTERM,
        SignalName::Usr1 => Signal::SIGUSR1,
        SignalName::Usr2 => Signal::SIGUSR2,
    }
}
