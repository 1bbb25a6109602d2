//! One attachment's cursor, and what it is sent next: a redraw, output from
//! the ring buffer, what it skipped, its exit.
//!
//! Rules (the actor's invariants, per attachment):
//! - Redraw bytes still pending go first, in chunks of at most
//!   [`CATCH_UP_CHUNK`] bytes; output then continues from the offset the
//!   redraw was taken at.
//! - A terminal whose cursor the ring buffer no longer holds is *resynced*:
//!   redrawn from the screen model at the ring's end, its cursor moved
//!   there (a frozen phone that wakes up sees the current screen at once).
//! - A byte stream whose cursor the ring no longer holds is told what it
//!   lost (`Skipped`) and resumes at the ring's oldest byte.
//! - Otherwise output from the cursor, at most [`CATCH_UP_CHUNK`] per event.
//! - `Exited` once, after every byte.
//!
//! The attachment's queue is bounded: [`Attachment::pump`] sends what fits
//! and reports [`Pumped::Full`], and the actor wakes it when there is room.

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::actor::AttachmentId;
use crate::protocol::{Event, ExitStatus, PtySize};

/// Largest output or redraw event sent when catching an attachment up, in bytes.
pub(super) const CATCH_UP_CHUNK: usize = 32 * 1024;

/// What an attachment is caught up from: the session's ring buffer, its
/// exit, and its screen model for a resync.
pub(super) trait Source {
    /// The ring buffer's oldest offset and one past its newest, in bytes.
    fn bounds(&self) -> (u64, u64);
    /// Up to `max` bytes of output from `offset` (within the bounds):
    /// `(offset, bytes)`.
    fn read(&self, offset: u64, max: usize) -> (u64, Bytes);
    /// How the program ended, once the session is exited.
    fn exit(&self) -> Option<&ExitStatus>;
    /// A redraw of the screen as of the ring's end, for a terminal that
    /// fell behind the ring buffer.
    fn resync(&mut self) -> Bytes;
}

/// One attachment: its queue, its cursor and what decides the PTY size.
pub(super) struct Attachment {
    /// Its id in this session process.
    pub id: AttachmentId,
    tx: mpsc::Sender<Event>,
    /// The client's window; `None` for a byte stream.
    pub size: Option<PtySize>,
    /// A read-only attachment neither types nor decides the size.
    pub read_only: bool,
    /// Fed from the screen model (a terminal), not byte-exact.
    terminal: bool,
    /// Redraw bytes still to send, before any output from `sent_upto`.
    redraw: Bytes,
    /// How many of them go in an event of their own (the first screen of
    /// an attach: a client can show it without waiting for the history).
    redraw_break: usize,
    /// Offset of the next output byte this attachment needs.
    sent_upto: u64,
    /// Logical clock of its last attach or input; the highest decides the size.
    pub last_active: u64,
    exit_sent: bool,
    /// Its queue was full: the actor waits for room before sending more.
    pub waiting: bool,
    /// It may hold the PTY's output back while its queue is full (a
    /// writable terminal that has kept up; see [`super::pacing`]).
    paces: bool,
    /// A watcher (`wait --for`), not a client.
    pub watcher: bool,
}

/// How an attachment's cursor moves once an event is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Advance {
    /// Output sent up to this offset (bytes).
    To(u64),
    /// This many bytes of the pending redraw sent.
    Redrawn(usize),
    /// `Exited` sent.
    ExitSent,
}

/// How a [`Attachment::pump`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pumped {
    /// Nothing more to send for now.
    CaughtUp,
    /// Its queue is full: wake it when there is room.
    Full,
    /// Its receiver is gone: detach it.
    Closed,
}

/// Whether [`Attachment::send_live`] delivered the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Live {
    /// Sent as it is.
    Sent,
    /// Not sent (behind, waiting or full): catch it up instead.
    Behind,
    /// Its receiver is gone: detach it.
    Closed,
}

impl Attachment {
    /// A new attachment whose output starts at `from`; a `terminal` starts
    /// with `redraw`.
    pub fn new(
        id: AttachmentId,
        tx: mpsc::Sender<Event>,
        size: Option<PtySize>,
        read_only: bool,
        terminal: bool,
        from: u64,
        last_active: u64,
    ) -> Attachment {
        Attachment {
            id,
            tx,
            size,
            read_only,
            terminal,
            redraw: Bytes::new(),
            redraw_break: 0,
            sent_upto: from,
            last_active,
            exit_sent: false,
            waiting: false,
            paces: terminal && !read_only,
            watcher: false,
        }
    }

    /// Whether it paces the program (see [`super::pacing`]).
    pub fn paces(&self) -> bool {
        self.paces
    }

    /// It held the output back too long: it no longer paces until it has
    /// caught up, or drains while far behind ([`Attachment::has_room`]).
    pub fn stop_pacing(&mut self) {
        self.paces = false;
    }

    /// Its queue has room again (the ring's end is at `end`). A writable
    /// terminal that stopped pacing (a stall past the bound: a phone that
    /// slept a moment, a busy machine) and now drains while `danger` bytes
    /// or more behind paces again: the program waits for it rather than
    /// wrap the ring past it. Less behind, the program runs ahead into the
    /// ring and it catches up, as before.
    pub fn has_room(&mut self, end: u64, danger: u64) {
        self.waiting = false;
        if end.saturating_sub(self.sent_upto) >= danger {
            self.caught_up();
        }
    }

    /// It has everything up to the ring's end: a writable terminal paces
    /// again.
    fn caught_up(&mut self) {
        self.paces = self.terminal && !self.read_only;
    }

    /// Sets the redraw sent before any output; its first `first` bytes
    /// are an event of their own.
    pub fn redraw_first(&mut self, redraw: Bytes, first: usize) {
        self.redraw = redraw;
        self.redraw_break = first;
    }

    /// The common case of live output: a caught-up attachment gets the
    /// chunk at `offset` itself, no copy.
    pub fn send_live(&mut self, offset: u64, chunk: &Bytes) -> Live {
        if self.waiting || self.sent_upto != offset || !self.redraw.is_empty() {
            return Live::Behind;
        }
        let event = Event::Output {
            offset,
            data: chunk.clone(),
        };
        match self.tx.try_send(event) {
            Ok(()) => {
                self.sent_upto = offset + chunk.len() as u64;
                self.caught_up();
                Live::Sent
            }
            Err(TrySendError::Closed(_)) => Live::Closed,
            Err(TrySendError::Full(_)) => Live::Behind,
        }
    }

    /// The next event this attachment needs, and how its cursor moves once
    /// it is sent; `None` when it is caught up.
    pub fn next_step(&mut self, source: &mut impl Source) -> Option<(Event, Advance)> {
        let (start, end) = source.bounds();
        if self.terminal && self.sent_upto < start {
            tracing::debug!(
                attachment = self.id,
                behind = end - self.sent_upto,
                "terminal fell behind; redrawing its screen"
            );
            self.redraw = source.resync();
            self.redraw_break = 0;
            self.sent_upto = end;
        }
        if !self.redraw.is_empty() {
            let limit = match self.redraw_break {
                0 => CATCH_UP_CHUNK,
                first => first.min(CATCH_UP_CHUNK),
            };
            let data = self.redraw.slice(..self.redraw.len().min(limit));
            let len = data.len();
            return Some((Event::Redraw { data }, Advance::Redrawn(len)));
        }
        if self.sent_upto < start {
            let skipped = Event::Skipped {
                from: self.sent_upto,
                to: start,
            };
            return Some((skipped, Advance::To(start)));
        }
        if self.sent_upto < end {
            let (offset, data) = source.read(self.sent_upto, CATCH_UP_CHUNK);
            let next = offset + data.len() as u64;
            return Some((Event::Output { offset, data }, Advance::To(next)));
        }
        match source.exit() {
            Some(status) if !self.exit_sent => {
                Some((Event::Exited(status.clone()), Advance::ExitSent))
            }
            _ => None,
        }
    }

    /// Moves the cursor past an event that was sent.
    pub fn advance(&mut self, advance: Advance) {
        match advance {
            Advance::To(offset) => self.sent_upto = offset,
            Advance::Redrawn(len) => {
                self.redraw.advance(len);
                self.redraw_break = self.redraw_break.saturating_sub(len);
            }
            Advance::ExitSent => self.exit_sent = true,
        }
    }

    /// Sends everything it is missing that fits in its queue. While
    /// [`Attachment::waiting`], sends nothing.
    pub fn pump(&mut self, source: &mut impl Source) -> Pumped {
        if self.waiting {
            return Pumped::CaughtUp;
        }
        while let Some((event, advance)) = self.next_step(source) {
            match self.tx.try_send(event) {
                Ok(()) => self.advance(advance),
                Err(TrySendError::Closed(_)) => return Pumped::Closed,
                Err(TrySendError::Full(_)) => {
                    self.waiting = true;
                    return Pumped::Full;
                }
            }
        }
        self.caught_up();
        Pumped::CaughtUp
    }

    /// Its queue's sender, to wait for room on.
    pub fn queue(&self) -> mpsc::Sender<Event> {
        self.tx.clone()
    }
}

#[cfg(test)]
mod tests {
    //! Table-driven: a ring buffer as a byte vector, no PTY, no program.

    use super::*;

    /// A ring buffer holding `data` from offset `start`, and an exit.
    struct Fake {
        start: u64,
        data: Vec<u8>,
        exit: Option<ExitStatus>,
        resyncs: usize,
    }

    impl Source for Fake {
        fn bounds(&self) -> (u64, u64) {
            (self.start, self.start + self.data.len() as u64)
        }
        fn read(&self, offset: u64, max: usize) -> (u64, Bytes) {
            let from = (offset - self.start) as usize;
            let to = (from + max).min(self.data.len());
            (offset, Bytes::copy_from_slice(&self.data[from..to]))
        }
        fn exit(&self) -> Option<&ExitStatus> {
            self.exit.as_ref()
        }
        fn resync(&mut self) -> Bytes {
            self.resyncs += 1;
            Bytes::from_static(b"SCREEN")
        }
    }

    /// An event, written short: `O@offset:len`, `R:len`, `S:from-to`, `X`.
    fn short(event: &Event) -> String {
        match event {
            Event::Output { offset, data } => format!("O@{offset}:{}", data.len()),
            Event::Redraw { data } => format!("R:{}", data.len()),
            Event::Skipped { from, to } => format!("S:{from}-{to}"),
            Event::Exited(_) => "X".to_owned(),
            Event::Matched => "M".to_owned(),
        }
    }

    struct Case {
        name: &'static str,
        terminal: bool,
        redraw: usize,
        /// Bytes of the redraw that are an event of their own.
        first: usize,
        cursor: u64,
        ring_start: u64,
        ring_len: usize,
        exited: bool,
        queue: usize,
        expect: &'static [&'static str],
        pumped: Pumped,
    }

    const CHUNK: usize = CATCH_UP_CHUNK;

    fn cases() -> Vec<Case> {
        let base = Case {
            name: "",
            terminal: false,
            redraw: 0,
            first: 0,
            cursor: 0,
            ring_start: 0,
            ring_len: 0,
            exited: false,
            queue: 32,
            expect: &[],
            pumped: Pumped::CaughtUp,
        };
        vec![
            Case {
                name: "caught up: nothing",
                ring_len: 100,
                cursor: 100,
                ..base
            },
            Case {
                name: "behind within the ring: output from the cursor in chunks",
                ring_len: CHUNK + 10,
                cursor: 0,
                expect: &["O@0:32768", "O@32768:10"],
                ..base
            },
            Case {
                name: "a byte stream the ring wrapped past: skipped, then the oldest byte on",
                ring_start: 1000,
                ring_len: 10,
                cursor: 400,
                expect: &["S:400-1000", "O@1000:10"],
                ..base
            },
            Case {
                name: "a terminal the ring wrapped past: resynced at the ring's end",
                terminal: true,
                ring_start: 1000,
                ring_len: 10,
                cursor: 400,
                expect: &["R:6"],
                ..base
            },
            Case {
                name: "a pending redraw goes first, in chunks",
                terminal: true,
                redraw: CHUNK + 1,
                first: CHUNK + 1,
                ring_len: 5,
                cursor: 0,
                expect: &["R:32768", "R:1", "O@0:5"],
                ..base
            },
            Case {
                name: "an attach's first screen is an event of its own, the rest in chunks",
                terminal: true,
                redraw: 4000 + CHUNK + 10,
                first: 4000,
                ring_len: 5,
                cursor: 0,
                expect: &["R:4000", "R:32768", "R:10", "O@0:5"],
                ..base
            },
            Case {
                name: "exited: the last bytes, then Exited once",
                ring_len: 3,
                cursor: 1,
                exited: true,
                expect: &["O@1:2", "X"],
                ..base
            },
            Case {
                name: "a full queue stops the pump without losing the cursor",
                ring_len: 3 * CHUNK,
                cursor: 0,
                queue: 2,
                expect: &["O@0:32768", "O@32768:32768"],
                pumped: Pumped::Full,
                ..base
            },
        ]
    }

    #[test]
    fn each_cursor_gets_what_the_rules_say() {
        for case in cases() {
            let mut source = Fake {
                start: case.ring_start,
                data: vec![b'x'; case.ring_len],
                exit: case.exited.then_some(ExitStatus {
                    code: 0,
                    signal: None,
                }),
                resyncs: 0,
            };
            let (tx, mut rx) = mpsc::channel(case.queue);
            let mut att = Attachment::new(1, tx, None, false, case.terminal, case.cursor, 0);
            att.redraw_first(Bytes::from(vec![b'r'; case.redraw]), case.first);
            assert_eq!(att.pump(&mut source), case.pumped, "{}", case.name);
            let mut got = Vec::new();
            while let Ok(event) = rx.try_recv() {
                got.push(short(&event));
            }
            assert_eq!(got, case.expect, "{}", case.name);
            if case.pumped == Pumped::CaughtUp {
                // Caught up means nothing more, not even a second Exited.
                assert!(att.next_step(&mut source).is_none(), "{}", case.name);
            }
        }
    }

    #[test]
    fn a_full_queue_resumes_where_it_stopped_once_woken() {
        let mut source = Fake {
            start: 0,
            data: vec![b'x'; 3 * CHUNK],
            exit: None,
            resyncs: 0,
        };
        let (tx, mut rx) = mpsc::channel(1);
        let mut att = Attachment::new(1, tx, None, false, false, 0, 0);
        let mut offsets = Vec::new();
        for _ in 0..10 {
            if att.pump(&mut source) == Pumped::CaughtUp && !att.waiting {
                break;
            }
            // What the actor does when woken: room again, not waiting.
            match rx.try_recv() {
                Ok(Event::Output { offset, .. }) => offsets.push(offset),
                other => panic!("{other:?}"),
            }
            att.waiting = false;
        }
        while let Ok(Event::Output { offset, .. }) = rx.try_recv() {
            offsets.push(offset);
        }
        assert_eq!(offsets, [0, CHUNK as u64, 2 * CHUNK as u64]);
    }

    #[test]
    fn live_output_goes_only_to_a_caught_up_attachment() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut att = Attachment::new(1, tx, None, false, false, 10, 0);
        let chunk = Bytes::from_static(b"abc");
        assert_eq!(att.send_live(7, &chunk), Live::Behind, "not its offset");
        assert_eq!(att.send_live(10, &chunk), Live::Sent);
        assert_eq!(att.send_live(13, &chunk), Live::Behind, "queue full");
        assert!(matches!(
            rx.try_recv(),
            Ok(Event::Output { offset: 10, .. })
        ));
        drop(rx);
        assert_eq!(att.send_live(13, &chunk), Live::Closed);
        let mut source = Fake {
            start: 0,
            data: vec![b'x'; 20],
            exit: None,
            resyncs: 0,
        };
        assert_eq!(att.pump(&mut source), Pumped::Closed);
        assert_eq!(source.resyncs, 0);
    }

    #[test]
    fn only_a_writable_terminal_paces_and_a_stopped_one_again_once_it_drains() {
        let chunk = Bytes::from_static(b"abc");
        // (terminal, read-only): whether it paces.
        for (terminal, read_only, paces) in [
            (true, false, true),
            (true, true, false),
            (false, false, false),
        ] {
            let (tx, _rx) = mpsc::channel(4);
            let att = Attachment::new(1, tx, None, read_only, terminal, 0, 0);
            assert_eq!(
                att.paces(),
                paces,
                "terminal {terminal}, read-only {read_only}"
            );
        }
        let (tx, mut rx) = mpsc::channel(1);
        let mut att = Attachment::new(1, tx, None, false, true, 0, 0);
        assert_eq!(att.send_live(0, &chunk), Live::Sent);
        assert_eq!(att.send_live(3, &chunk), Live::Behind, "queue full");
        att.stop_pacing();
        assert!(!att.paces());
        // Still behind: it does not pace yet.
        let mut source = Fake {
            start: 0,
            data: vec![b'x'; 9],
            exit: None,
            resyncs: 0,
        };
        assert_eq!(att.pump(&mut source), Pumped::Full);
        assert!(!att.paces());
        // It took something: room again, but only a little behind (6 of
        // the 9 bytes): it does not pace yet; far behind, it does.
        assert!(rx.try_recv().is_ok());
        att.has_room(9, 7);
        assert!(!att.paces());
        att.has_room(9, 6);
        assert!(att.paces());
        // Stopped again, then everything up to the ring's end sent: it paces.
        att.stop_pacing();
        assert_eq!(att.pump(&mut source), Pumped::CaughtUp);
        assert!(att.paces());
    }
}
