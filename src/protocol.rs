//! The messages between the SSH front and a session, and the validated values
//! they carry.
//!
//! Invariant: nothing here names russh, and every message is a plain
//! serializable value. They travel between the server and each session's
//! process over the session's Unix socket ([`wire`]); what the server gives
//! a new session process and hears back is [`host`].
//!
//! A connection's first frame, [`Open`], chooses its role, and each role
//! has its own messages: a control connection ([`ControlRequest`] in,
//! [`SessionInfo`] out), an attachment ([`AttachInput`] in, one
//! [`AttachReply`] then [`Event`]s out), a history answer, a signal.
//!
//! Naming: requests into a session are imperative (`Attach`, `Resize`,
//! `Kill`), events out of it are past tense (`Attached`, `Output`, `Exited`).

pub mod host;
pub mod wire;

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The largest number of columns a PTY is given, in cells. Clients may send
/// any `u32` in `pty-req` and `window-change` (RFC 4254 §6.2, §6.7); larger
/// values are clamped so that no absurd size reaches the kernel or the
/// session's screen model (32 bytes per cell, two grids: 1024 × 512 cells
/// is at most 32 MiB).
pub const MAX_PTY_COLS: u16 = 1024;

/// The largest number of rows a PTY is given, in cells (see [`MAX_PTY_COLS`]).
pub const MAX_PTY_ROWS: u16 = 512;

/// A PTY size in character cells: `1..=MAX_PTY_COLS` columns and
/// `1..=MAX_PTY_ROWS` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    cols: u16,
    rows: u16,
}

impl PtySize {
    /// The size used when a client asks for a PTY without giving one: 80×24.
    pub const DEFAULT: PtySize = PtySize { cols: 80, rows: 24 };

    /// Builds a size from the raw `u32` cells of a `pty-req` or
    /// `window-change` request, clamping each dimension to its maximum
    /// ([`MAX_PTY_COLS`], [`MAX_PTY_ROWS`]). A zero dimension means "unknown" and is
    /// replaced by the same dimension of `fallback` (RFC 4254 §6.2: "Zero
    /// dimension parameters MUST be ignored").
    pub fn from_request(cols: u32, rows: u32, fallback: PtySize) -> PtySize {
        let clamp = |value: u32, fallback: u16, max: u16| -> u16 {
            if value == 0 {
                fallback
            } else {
                value.min(u32::from(max)) as u16
            }
        };
        PtySize {
            cols: clamp(cols, fallback.cols, MAX_PTY_COLS),
            rows: clamp(rows, fallback.rows, MAX_PTY_ROWS),
        }
    }

    /// Width in cells.
    pub fn cols(self) -> u16 {
        self.cols
    }

    /// Height in cells.
    pub fn rows(self) -> u16 {
        self.rows
    }
}

/// A session's id: a UUID v4, shown in its hyphenated lowercase form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A new random (v4) id.
    pub fn random() -> SessionId {
        SessionId(Uuid::new_v4())
    }

    /// The first 8 hex digits, as `list` shows them.
    pub fn short(&self) -> String {
        self.0.simple().to_string()[..8].to_owned()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A session name: 1–64 characters of `[A-Za-z0-9._-]`, unique per user.
/// Unnamed sessions are given the lowest free integer, as tmux does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionName(String);

/// Why a string is not a valid [`SessionName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session name '{0}'")]
pub struct InvalidName(pub String);

impl SessionName {
    /// The longest name, in bytes (all valid characters are ASCII).
    pub const MAX_LEN: usize = 64;

    /// What a valid name looks like, for error messages.
    pub const RULE: &'static str = "use 1-64 characters of A-Z a-z 0-9 . _ -";

    /// The name of the `n`th unnamed session.
    pub fn numbered(n: u32) -> SessionName {
        SessionName(n.to_string())
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `s` is 1–64 characters of `[A-Za-z0-9._-]`: the alphabet of
/// session names and of login names (which keeps `+` free to separate a
/// session name at login).
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SessionName::MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl FromStr for SessionName {
    type Err = InvalidName;

    /// Parses a name.
    ///
    /// # Errors
    /// [`InvalidName`] when `s` is not [`is_name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_name(s) {
            Ok(SessionName(s.to_owned()))
        } else {
            Err(InvalidName(printable(s)))
        }
    }
}

/// A terminal type for `TERM`: 1–64 printable ASCII characters, no space
/// (a terminfo name such as `xterm-256color`). What a `pty-req` carries
/// (RFC 4254 §6.2) is used only when it is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermName(String);

/// Why a string is not a valid [`TermName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid term \"{0}\"")]
pub struct InvalidTerm(pub String);

impl TermName {
    /// What a valid terminal type looks like, for error messages.
    pub const RULE: &'static str = "use a terminfo name such as \"xterm-256color\"";

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TermName {
    type Err = InvalidTerm;

    /// # Errors
    /// [`InvalidTerm`] when `s` is empty, longer than 64 bytes or holds a
    /// space, a control or a non-ASCII character.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(TermName(s.to_owned()))
        } else {
            Err(InvalidTerm(printable(s)))
        }
    }
}

impl fmt::Display for TermName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` as it may be echoed in a one-line error or a log: control
/// characters escaped (`\u{1b}`), at most 64 characters, "..." when cut.
pub fn printable(text: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = text
        .chars()
        .take(SHOWN)
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if text.chars().nth(SHOWN).is_some() {
        shown.push_str("...");
    }
    shown
}

impl TryFrom<String> for SessionName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SessionName> for String {
    fn from(name: SessionName) -> String {
        name.0
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first frame from the front on a new connection to a session: what
/// the connection is for. Each role then has its own messages, so that
/// nothing can arrive where it means nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Open {
    /// A control connection: the session pushes a [`SessionInfo`] now and
    /// on every change; the front sends [`ControlRequest`]s.
    Control,
    /// An attachment: the session answers one [`AttachReply`]; when
    /// attached, [`Event`]s follow and the front sends [`AttachInput`].
    /// Closing the connection, from either side, detaches.
    Attach(AttachRequest),
    /// What the session holds of its past: the answer is frames of bytes
    /// (at most 64 KiB each) and ends when the session closes the
    /// connection.
    History(HistoryFormat),
    /// Deliver a signal to the PTY's foreground process group, as the
    /// terminal's own keys (^C) or a `kill` from another terminal would
    /// (RFC 4254 §6.9). Nothing follows.
    Signal(SignalName),
    /// Type into the session without attaching (`send`): the session
    /// answers one [`SendReply`] and closes.
    Send(Vec<Typed>),
}

/// What `send` types: text as it is, or a key encoded for the session's
/// modes at that moment (application cursor keys change what `Up` sends).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Typed {
    /// UTF-8 bytes, exactly.
    Text(String),
    /// A key, as tmux's `send-keys` names it.
    Key(Key),
}

/// A key with its modifiers (`C-a`, `M-x`, `C-Up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// The key.
    pub name: KeyName,
    /// Control held (`C-`).
    pub ctrl: bool,
    /// Meta (Alt) held (`M-`).
    pub meta: bool,
}

/// The keys `send --keys` names (tmux's spelling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyName {
    /// `Enter`.
    Enter,
    /// `Escape`.
    Escape,
    /// `Tab`.
    Tab,
    /// `BSpace`.
    BSpace,
    /// `Up`.
    Up,
    /// `Down`.
    Down,
    /// `Left`.
    Left,
    /// `Right`.
    Right,
    /// `Home`.
    Home,
    /// `End`.
    End,
    /// `PageUp` (`PgUp`).
    PageUp,
    /// `PageDown` (`PgDn`).
    PageDown,
    /// `F1`..`F12`.
    F(u8),
    /// One character (`a`, and `C-a`, `M-x`).
    Char(char),
}

/// The session's answer to [`Open::Send`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendReply {
    /// Queued for the program, in order.
    Sent,
    /// The program has exited: nothing reads its input.
    Exited,
}

impl AttachRequest {
    /// A watcher's request: output from the ring's end, starting with the
    /// last `tail` lines as text (0: none).
    pub fn watcher(tail: u32) -> AttachRequest {
        AttachRequest {
            size: None,
            read_only: true,
            from: None,
            quiet: true,
            watch: true,
            tail,
            pattern: None,
        }
    }

    /// A waiter's request (`wait --for`): no output at all, one
    /// [`Event::Matched`] once the output's text after the attach matches
    /// `pattern` (see `session::waiters` for the rules).
    pub fn waiter(pattern: String) -> AttachRequest {
        AttachRequest {
            pattern: Some(pattern),
            ..AttachRequest::watcher(0)
        }
    }
}

/// What a session is doing, for `list` (tmux's `#{pane_title}`,
/// `#{pane_current_command}`, `#{pane_current_path}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doing {
    /// The last title the program set (OSC 0/2).
    pub title: Option<String>,
    /// The PTY's foreground process, as `ps` names it (`/proc/PID/comm`).
    pub current_command: Option<String>,
    /// Its working directory (`/proc/PID/cwd`).
    pub cwd: Option<String>,
    /// Bells rung since a client last attached.
    pub bells: u64,
    /// The last non-empty line of the screen, at most 80 characters.
    pub last_line: Option<String>,
}

/// A request on a control connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The session's name changed (the registry checked uniqueness).
    Rename {
        /// The new name.
        name: SessionName,
    },
    /// End the session's program: SIGHUP to its process groups, then SIGKILL
    /// after a grace period. The session ends once the program has exited.
    Kill,
    /// End a session whose program has exited now, leaving its history and
    /// metadata files: the server starts its command again from them
    /// (`restart`).
    Release,
}

/// What an attachment's client sends, on its connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachInput {
    /// Keystrokes (or pasted bytes), as the client sent them, for the PTY.
    Typed(Bytes),
    /// The client changed its window (`window-change`, RFC 4254 §6.7).
    Resize(PtySize),
}

/// A signal a client may send (RFC 4254 §6.9), named as in §6.10 without
/// "SIG".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalName {
    /// SIGABRT.
    Abrt,
    /// SIGALRM.
    Alrm,
    /// SIGFPE.
    Fpe,
    /// SIGHUP.
    Hup,
    /// SIGILL.
    Ill,
    /// SIGINT.
    Int,
    /// SIGKILL.
    Kill,
    /// SIGPIPE.
    Pipe,
    /// SIGQUIT.
    Quit,
    /// SIGSEGV.
    Segv,
    /// SIGTERM.
    Term,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl SignalName {
    /// The name RFC 4254 §6.10 uses (`"INT"`), if it is one of them.
    pub fn from_rfc(name: &str) -> Option<SignalName> {
        use SignalName::*;
        Some(match name {
            "ABRT" => Abrt,
            "ALRM" => Alrm,
            "FPE" => Fpe,
            "HUP" => Hup,
            "ILL" => Ill,
            "INT" => Int,
            "KILL" => Kill,
            "PIPE" => Pipe,
            "QUIT" => Quit,
            "SEGV" => Segv,
            "TERM" => Term,
            "USR1" => Usr1,
            "USR2" => Usr2,
            _ => return None,
        })
    }
}

/// The form of an [`Open::History`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryFormat {
    /// The history lines and the screen as plain text, one line per `\n`
    /// (`history REF`, like `tmux capture-pane -p -S -`).
    Text,
    /// The ring buffer's bytes exactly as the program wrote them
    /// (`history REF --raw`).
    Raw,
}

/// The parameters of [`Open::Attach`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The client's window, when it sent a `pty-req`. `None` for a plain
    /// byte stream (no PTY on the client side); such an attachment never
    /// decides the session's size.
    pub size: Option<PtySize>,
    /// A read-only attachment's input is refused and it never decides the size.
    pub read_only: bool,
    /// Where the replay starts, as an absolute output offset in bytes: the
    /// raw bytes from there on, for scripts (`attach --from`). `None`: a
    /// terminal (`size` given) gets history lines and the screen redrawn
    /// ([`Event::Redraw`]); a byte stream gets everything the ring buffer
    /// still holds.
    pub from: Option<u64>,
    /// No "while you were away" line before a terminal's redraw
    /// (`attach --quiet`).
    pub quiet: bool,
    /// A watcher (`wait --for`): output from the ring's end (or `from`) as
    /// a read-only byte stream that is not a client: not counted in
    /// `clients`, no size, no input, no effect on "while you were away".
    pub watch: bool,
    /// For a watcher (`tail -f`): first the last `tail` lines of history
    /// and screen as text (one [`Event::Redraw`], `\n`-separated), taken at
    /// the offset its output then starts from. 0: none.
    pub tail: u32,
    /// A waiter (`wait --for`; with `watch`): a regular expression (the
    /// regex crate's syntax) for the output's text after the attach. The
    /// session sends no output, only [`Event::Matched`] or
    /// [`Event::Exited`], and holds no queue of output for it.
    pub pattern: Option<String>,
}

/// A session's answer to [`Open::Attach`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachReply {
    /// The attachment is bound; [`Event`]s follow, output from `from`.
    Attached {
        /// The absolute offset, in bytes, of the first byte of output to follow.
        from: u64,
    },
    /// The attachment was not bound; the session closes the connection.
    Refused(Refusal),
}

/// An event from a session to one attachment, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Event {
    /// Output of the session's program.
    Output {
        /// Absolute offset of `data[0]` since the session began, in bytes.
        offset: u64,
        /// Raw bytes as read from the PTY.
        data: Bytes,
    },
    /// Terminal bytes that are not program output: they bring the client's
    /// terminal to the session's screen (history lines, then every cell,
    /// the cursor, the modes and the title; see `session::screen`). Sent to
    /// a terminal on attach, in chunks, and again whenever it fell too far
    /// behind to be worth catching up byte by byte; the [`Event::Output`]
    /// that follows continues from the offset the screen was taken at.
    Redraw {
        /// The bytes, ready for the client's terminal.
        data: Bytes,
    },
    /// Output from `from` to `to` (bytes) was lost to this byte-stream
    /// attachment: it fell so far behind that the ring buffer wrapped past it.
    Skipped {
        /// First lost offset.
        from: u64,
        /// First offset sent again.
        to: u64,
    },
    /// The program exited; every byte of its output precedes this event.
    Exited(ExitStatus),
    /// A waiter's pattern matched the output's text (the last event a
    /// waiter gets).
    Matched,
}

/// Why a session refused an attach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// `from` is older than the ring buffer's oldest byte, or beyond its newest.
    #[error("offset {from} is outside the buffer: it holds output from offset {start} to {end}")]
    OutsideBuffer {
        /// The offset asked for, in bytes.
        from: u64,
        /// The oldest offset held.
        start: u64,
        /// One past the newest offset held.
        end: u64,
    },
    /// A waiter's pattern does not compile.
    #[error("invalid pattern: {reason}")]
    Pattern {
        /// The regex crate's error, in one line.
        reason: String,
    },
}

/// How a session's program ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code; for a program killed by a signal, 128 + the signal's
    /// number, as shells report it.
    pub code: u32,
    /// The signal's name without "SIG" (e.g. "HUP"), as `exit-signal`
    /// carries it (RFC 4254 §6.10), when a signal ended the program.
    pub signal: Option<String>,
}

/// A session's lifecycle state: `attached` while a client is, `orphaned`
/// while none is, `exited` once its program has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// One or more clients are attached.
    Attached,
    /// The program runs and no client is attached.
    Orphaned,
    /// The program has exited; the session is kept for `exited_retention`.
    Exited,
    /// Seen by the front only: the session's process speaks another
    /// version of the session protocol; it is listed but cannot be used.
    Incompatible,
    /// Seen by the front only: the session's process ended without a clean
    /// end (a reboot, an OOM kill, `kill -9`); its history and metadata
    /// files remain (`history`, `attach` shows them, `kill` removes them).
    Lost,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::Attached => "attached",
            SessionState::Orphaned => "orphaned",
            SessionState::Exited => "exited",
            SessionState::Incompatible => "incompatible",
            SessionState::Lost => "lost",
        })
    }
}

/// A snapshot of a session, published by the session whenever it changes so
/// that `list` never waits on a busy session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session's id.
    pub id: SessionId,
    /// Its current name.
    pub name: SessionName,
    /// The SSH login name that owns it.
    pub owner: String,
    /// Lifecycle state.
    pub state: SessionState,
    /// Attached clients (channels).
    pub clients: usize,
    /// When it was created.
    pub created: SystemTime,
    /// Last output or input.
    pub last_activity: SystemTime,
    /// When the last client detached, if it ever had one and has none now.
    pub detached_at: Option<SystemTime>,
    /// Current PTY size.
    pub size: PtySize,
    /// The command line it runs, as given (the shell for a shell request).
    pub command: Vec<String>,
    /// Set once the program has exited.
    pub exit: Option<ExitStatus>,
    /// Bytes of output produced so far (the ring buffer's end offset).
    pub output_offset: u64,
    /// Watchers attached (`tail -f`, `wait --for`): not clients.
    pub watchers: usize,
    /// What the session is doing, refreshed at most every 300 ms after
    /// output or input: see [`Doing`].
    pub doing: Doing,
    /// The oldest offset the ring buffer still holds, in bytes.
    pub buffer_start: u64,
    /// Its output is being written to its history file
    /// (`[sessions] history_file_bytes`); false when that is off or a write
    /// failed (then it is kept in memory only).
    pub history_on_disk: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_only() {
        assert!("work".parse::<SessionName>().is_ok());
        assert!("a.b_c-D9".parse::<SessionName>().is_ok());
        assert!("x".repeat(64).parse::<SessionName>().is_ok());
        for bad in ["", "has space", "a/b", "é", "a+b", &"x".repeat(65)] {
            assert!(bad.parse::<SessionName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn terminal_types_are_printable_ascii_without_spaces() {
        assert!("xterm-256color".parse::<TermName>().is_ok());
        assert!("screen.xterm-new".parse::<TermName>().is_ok());
        for bad in ["", "xterm 256", "x\u{1b}[2J", "tèrm", &"x".repeat(65)] {
            assert!(bad.parse::<TermName>().is_err(), "{bad:?} accepted");
        }
        let err = "a\u{7}b".parse::<TermName>().unwrap_err().to_string();
        assert!(!err.contains('\u{7}'), "{err}");
    }

    #[test]
    fn sizes_are_clamped_and_zero_means_keep() {
        let fallback = PtySize::DEFAULT;
        assert_eq!(PtySize::from_request(0, 0, fallback), fallback);
        let huge = PtySize::from_request(65535, 65535, fallback);
        assert_eq!((huge.cols(), huge.rows()), (MAX_PTY_COLS, MAX_PTY_ROWS));
        let odd = PtySize::from_request(120, 0, fallback);
        assert_eq!((odd.cols(), odd.rows()), (120, 24));
        let big = PtySize::from_request(u32::MAX, 1, fallback);
        assert_eq!((big.cols(), big.rows()), (MAX_PTY_COLS, 1));
    }

    #[test]
    fn an_invalid_name_cannot_be_smuggled_in_through_the_wire_encoding() {
        let encoded = postcard::to_allocvec(&"a b").expect("encode");
        assert!(postcard::from_bytes::<SessionName>(&encoded).is_err());
        let encoded = postcard::to_allocvec(&"ok.name").expect("encode");
        let name: SessionName = postcard::from_bytes(&encoded).expect("decode");
        assert_eq!(name.as_str(), "ok.name");
    }

    #[test]
    fn signal_names_are_rfc_4254_names_without_sig() {
        assert_eq!(SignalName::from_rfc("INT"), Some(SignalName::Int));
        assert_eq!(SignalName::from_rfc("USR2"), Some(SignalName::Usr2));
        for bad in ["SIGINT", "int", "", "WINCH"] {
            assert_eq!(SignalName::from_rfc(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn short_ids_are_eight_hex_digits_of_the_full_id() {
        let id = SessionId::random();
        assert_eq!(id.short().len(), 8);
        assert!(id.to_string().replace('-', "").starts_with(&id.short()));
    }
}
