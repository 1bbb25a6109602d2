//! Exec request string → [`Command`]; results → what the user sees.
//!
//! This is the one place that turns an error into a stderr line
//! (`keepsh: <what went wrong> (<what to do>)`) and an exit status: 2 for a
//! usage error, 1 for an operational one (README "Usage").

use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use serde::Serialize;

mod apply;
mod keys;
mod lost;
mod wait;

pub use apply::{Context, Outcome};

use crate::protocol::{SessionInfo, SessionName, SessionState, Typed};
use crate::registry::RegistryError;

/// A parsed exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `new [-d] [NAME] [-- CMD ARGS...]`.
    New {
        /// The name, or the lowest free integer when `None`.
        name: Option<SessionName>,
        /// Print the id and exit instead of attaching.
        detach: bool,
        /// The program; empty means the user's shell.
        command: Vec<String>,
    },
    /// `attach [-d] [--quiet] [--read-only] [--from OFFSET] [REF]`.
    Attach {
        /// Which session; `None` means the most recently detached one.
        reference: Option<String>,
        /// Attach without input and without deciding the size.
        read_only: bool,
        /// Replay from this absolute output offset (bytes).
        from: Option<u64>,
        /// Detach every other client of the session (tmux's `attach -d`).
        detach_others: bool,
        /// No "while you were away" line.
        quiet: bool,
    },
    /// `history [--raw] REF`.
    History {
        /// Which session.
        reference: String,
        /// The ring buffer's bytes instead of text.
        raw: bool,
    },
    /// `list [--json]`.
    List {
        /// Print a JSON array instead of a table.
        json: bool,
    },
    /// `kill REF`.
    Kill {
        /// Which session.
        reference: String,
    },
    /// `restart [-d] REF`: a lost or exited session's command started
    /// again, after its old output.
    Restart {
        /// Which session.
        reference: String,
        /// Print its id instead of attaching.
        detach: bool,
    },
    /// `send REF [--enter] [--] TEXT...`, `send --keys REF KEY...`: type
    /// into a session without attaching.
    Send {
        /// Which session.
        reference: String,
        /// What to type, in order (text words joined by one space; a
        /// carriage return after them with `--enter`).
        typed: Vec<Typed>,
    },
    /// `wait REF [--for REGEX] [--timeout DURATION]`: until the program
    /// exits (its code), or until output after the call matches REGEX.
    Wait {
        /// Which session.
        reference: String,
        /// The pattern (checked to compile), on the output's text.
        pattern: Option<String>,
        /// Give up (exit status 124) after this long.
        timeout: Option<Duration>,
    },
    /// `tail [-n LINES] [-f] REF`: the last lines as text, and with `-f`
    /// new output as text as it comes, without attaching.
    Tail {
        /// Which session.
        reference: String,
        /// How many lines of history and screen first.
        lines: u32,
        /// Then follow the output.
        follow: bool,
    },
    /// `rename REF NEW`.
    Rename {
        /// Which session.
        reference: String,
        /// Its new name.
        new: SessionName,
    },
    /// `help`.
    Help,
    /// `version`.
    Version,
}

#[derive(Parser, Debug)]
#[command(
    name = "keepsh",
    no_binary_name = true,
    disable_help_flag = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct ExecLine {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    New {
        #[arg(short = 'd', long = "detach")]
        detach: bool,
        #[arg(value_parser = parse_name)]
        name: Option<SessionName>,
        #[arg(last = true)]
        command: Vec<String>,
    },
    Attach {
        #[arg(short = 'd', long)]
        detach_others: bool,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        read_only: bool,
        #[arg(long, value_name = "OFFSET")]
        from: Option<u64>,
        #[arg(value_name = "REF")]
        reference: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    History {
        #[arg(long)]
        raw: bool,
        #[arg(value_name = "REF")]
        reference: String,
    },
    Kill {
        #[arg(value_name = "REF")]
        reference: String,
    },
    Restart {
        #[arg(short = 'd', long = "detach")]
        detach: bool,
        #[arg(value_name = "REF")]
        reference: String,
    },
    Rename {
        #[arg(value_name = "REF")]
        reference: String,
        #[arg(value_parser = parse_name)]
        new: SessionName,
    },
    Wait(WaitArgs),
    Tail(TailArgs),
    Send(SendArgs),
    Help,
    Version,
}

/// `wait`'s arguments.
#[derive(clap::Args, Debug)]
struct WaitArgs {
    #[arg(long = "for", value_name = "REGEX")]
    pattern: Option<String>,
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    #[arg(value_name = "REF")]
    reference: String,
}

impl WaitArgs {
    fn into_command(self) -> Result<Command, Failure> {
        Ok(Command::Wait {
            reference: checked_ref(self.reference)?,
            pattern: self.pattern.map(wait::checked_pattern).transpose()?,
            timeout: self.timeout,
        })
    }
}

/// `tail`'s arguments.
#[derive(clap::Args, Debug)]
struct TailArgs {
    #[arg(short = 'n', long, value_name = "LINES", default_value_t = 10)]
    lines: u32,
    #[arg(short = 'f', long)]
    follow: bool,
    #[arg(value_name = "REF")]
    reference: String,
}

impl TailArgs {
    fn into_command(self) -> Result<Command, Failure> {
        Ok(Command::Tail {
            reference: checked_ref(self.reference)?,
            lines: self.lines,
            follow: self.follow,
        })
    }
}

/// `send`'s arguments.
#[derive(clap::Args, Debug)]
struct SendArgs {
    #[arg(long)]
    enter: bool,
    #[arg(long)]
    keys: bool,
    #[arg(value_name = "REF")]
    reference: String,
    #[arg(value_name = "TEXT", required = true)]
    words: Vec<String>,
}

impl SendArgs {
    fn into_command(self) -> Result<Command, Failure> {
        Ok(Command::Send {
            reference: checked_ref(self.reference)?,
            typed: typed(self.words, self.keys, self.enter),
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30s, 5m, 1h)"))
}

fn parse_name(s: &str) -> Result<SessionName, String> {
    s.parse::<SessionName>()
        .map_err(|_| SessionName::RULE.to_owned())
}

/// What a finished command gives the client: stdout, stderr, exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Bytes for the channel's data stream.
    pub stdout: Vec<u8>,
    /// Send `stdout` as it is, even to a client with a PTY (whose `\n`
    /// otherwise becomes `\r\n`): a program's raw output.
    pub verbatim: bool,
    /// Bytes for the channel's extended data stream 1 (stderr).
    pub stderr: String,
    /// The `exit-status` (RFC 4254 §6.10).
    pub status: u32,
}

impl Reply {
    /// Success with `stdout`, text.
    pub fn ok(stdout: impl Into<String>) -> Reply {
        Reply {
            stdout: stdout.into().into_bytes(),
            ..Reply::default()
        }
    }

    /// Success with `stdout` sent byte for byte.
    pub fn verbatim(stdout: impl Into<Vec<u8>>) -> Reply {
        Reply {
            stdout: stdout.into(),
            verbatim: true,
            ..Reply::default()
        }
    }
}

/// A failure as the user sees it: one stderr line and an exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 1 (operational) or 2 (usage).
    pub status: u32,
    /// `keepsh: <what> (<fix>)`, no newline.
    pub line: String,
}

impl Failure {
    /// A usage error (exit status 2).
    pub fn usage(what: impl std::fmt::Display, fix: &str) -> Failure {
        Failure {
            status: 2,
            line: format!("keepsh: {what} ({fix})"),
        }
    }

    /// An operational error (exit status 1).
    pub fn operational(what: impl std::fmt::Display, fix: &str) -> Failure {
        Failure {
            status: 1,
            line: format!("keepsh: {what} ({fix})"),
        }
    }
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Failure {
        Failure::operational(&error, error.hint())
    }
}

impl From<Failure> for Reply {
    fn from(failure: Failure) -> Reply {
        Reply {
            stderr: format!("{}\n", failure.line),
            status: failure.status,
            ..Reply::default()
        }
    }
}

/// What clients run to get what keepsh already gives: a mobile app's
/// "mosh" or "Eternal Terminal" mode (`mosh-server new ...`,
/// `etterminal ...`), and the legacy scp protocol (`scp -t`/`-f`, what
/// `scp -O` runs). Each gets a line saying what to do instead, exit 1.
fn replaced_program(words: &[String]) -> Option<Failure> {
    match words.first().map(String::as_str) {
        Some(program @ ("mosh-server" | "etterminal")) => Some(Failure::operational(
            format!("{program} is not needed: keepsh keeps your session itself"),
            "connect with plain ssh and run `attach`, or log in as USER+NAME",
        )),
        Some("scp") if words.iter().any(|w| w == "-t" || w == "-f") => Some(Failure::operational(
            "the legacy scp protocol (scp -O) is not served",
            "use scp without -O: OpenSSH 9.0 and later copy over SFTP",
        )),
        _ => None,
    }
}

/// Parses an exec request's string (split like a POSIX shell would).
///
/// # Errors
/// A usage [`Failure`] for unbalanced quotes, an unknown command or flag, a
/// missing or extra argument, or an invalid name.
pub fn parse(line: &str) -> Result<Command, Failure> {
    let words = shell_words::split(line)
        .map_err(|e| Failure::usage(format!("cannot parse command: {e}"), "check the quoting"))?;
    if let Some(failure) = replaced_program(&words) {
        return Err(failure);
    }
    let before_dashes = words.iter().take_while(|w| *w != "--");
    if before_dashes.clone().any(|w| w == "--help" || w == "-h") {
        return Ok(Command::Help);
    }
    let parsed = ExecLine::try_parse_from(&words).map_err(|e| {
        // clap's first paragraph, joined into one line (e.g. "the following
        // required arguments were not provided: <REF>").
        let rendered = e.render().to_string();
        let what = rendered
            .split("\n\n")
            .next()
            .unwrap_or("invalid command")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let what = what.trim_start_matches("error: ");
        // clap quotes the user's words: never echo them raw.
        Failure::usage(escape_controls(what), "run 'help' for usage")
    })?;
    parsed.command.into_command()
}

impl Sub {
    /// The validated command (REFs checked).
    fn into_command(self) -> Result<Command, Failure> {
        Ok(match self {
            Sub::New {
                detach,
                name,
                command,
            } => Command::New {
                name,
                detach,
                command,
            },
            Sub::Attach {
                detach_others,
                quiet,
                read_only,
                from,
                reference,
            } => Command::Attach {
                reference: reference.map(checked_ref).transpose()?,
                read_only,
                from,
                detach_others,
                quiet,
            },
            Sub::List { json } => Command::List { json },
            Sub::History { raw, reference } => Command::History {
                reference: checked_ref(reference)?,
                raw,
            },
            Sub::Kill { reference } => Command::Kill {
                reference: checked_ref(reference)?,
            },
            Sub::Restart { detach, reference } => Command::Restart {
                reference: checked_ref(reference)?,
                detach,
            },
            Sub::Rename { reference, new } => Command::Rename {
                reference: checked_ref(reference)?,
                new,
            },
            Sub::Wait(args) => args.into_command()?,
            Sub::Tail(args) => args.into_command()?,
            Sub::Send(args) => args.into_command()?,
            Sub::Help => Command::Help,
            Sub::Version => Command::Version,
        })
    }
}

/// What `send` types: each word a key (`--keys`), or the words joined by
/// one space; then a carriage return with `--enter`.
fn typed(words: Vec<String>, keys: bool, enter: bool) -> Vec<Typed> {
    let mut typed: Vec<Typed> = if keys {
        words.iter().map(|word| keys::parse(word)).collect()
    } else {
        vec![Typed::Text(words.join(" "))]
    };
    if enter {
        typed.push(Typed::Text("\r".into()));
    }
    typed
}

/// A REF as typed, if it can be one: a name, a full id and an id prefix
/// are all made of name characters, at most 64 of them.
///
/// # Errors
/// A usage [`Failure`] ("invalid session name '...'", the value escaped
/// and cut) for anything else: empty, `../x`, a NUL, 4 KiB.
fn checked_ref(reference: String) -> Result<String, Failure> {
    match reference.parse::<SessionName>() {
        Ok(_) => Ok(reference),
        Err(invalid) => Err(Failure::usage(invalid, SessionName::RULE)),
    }
}

/// `text` with control characters escaped and long runs cut, for a
/// one-line error that quotes what the user typed.
fn escape_controls(text: &str) -> String {
    const LONGEST: usize = 300;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LONGEST {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The text of `help`.
pub const HELP: &str = "\
keepsh: SSH sessions that outlive the connection

usage: ssh [-t] HOST COMMAND

  (no command)                      new session running your shell, attached
  new [NAME] [-- CMD ARGS...]       new session (optionally named / running CMD), attached
  new -d [NAME] [-- CMD ARGS...]    new session, detached; prints its id
  attach [-d] [--quiet] [--read-only] [--from OFFSET] [REF]
                                    attach (default: the most recently detached session;
                                    -d: detach its other clients first; --quiet: no
                                    while-you-were-away line)
  list [--json]                     your sessions
  history [--raw] REF               print a session's history lines and screen as text
                                    (--raw: the buffered output, byte for byte)
  kill REF                          end a session's programs (SIGHUP, then SIGKILL);
                                    a lost session: remove its files
  restart [-d] REF                  start a lost or exited session's command again, in
                                    its directory, after its old output; attached
                                    (-d: detached, prints its id)
  rename REF NEW                    rename a session
  wait [--for REGEX] [--timeout D] REF
                                    wait for the program's exit (its exit code), or for
                                    output matching REGEX (0); 124 on timeout
  tail [-n LINES] [-f] REF          the last LINES (10) as text; -f: then new output
                                    as text as it comes (not a client, no size taken)
  send REF [--enter] [--] TEXT...   type TEXT into a session (--enter: then Enter)
  send --keys REF KEY...            type keys, named as tmux's send-keys names them
                                    (Enter, Escape, Tab, BSpace, Up, F5, C-c, M-x...)
  help, version

REF is a name, a full id or a unique id prefix (4+ hex digits).
NAME is 1-64 characters of A-Z a-z 0-9 . _ -
Use `ssh -t` for new and attach so that you get a terminal.
Clients that cannot send a command: log in as USER+NAME to attach NAME (created if needed).
";

/// The text of `version`.
pub fn version() -> String {
    format!("keepsh {}\n", env!("CARGO_PKG_VERSION"))
}

/// One session as `list --json` prints it (README "Usage" lists the keys).
#[derive(Serialize)]
struct ListEntry<'a> {
    id: String,
    name: &'a str,
    state: SessionState,
    clients: usize,
    created: String,
    last_activity: String,
    cols: u16,
    rows: u16,
    command: String,
    exit_code: Option<u32>,
    output_offset: u64,
    watchers: usize,
    title: Option<&'a str>,
    current_command: Option<&'a str>,
    cwd: Option<&'a str>,
    bells: u64,
    last_line: Option<&'a str>,
    history_on_disk: bool,
}

/// Renders `list` output: an aligned table, or a JSON array with `json`.
pub fn render_list(sessions: &[SessionInfo], json: bool, now: SystemTime) -> String {
    if json {
        return list_json(sessions);
    }
    if sessions.is_empty() {
        return "no sessions (start one with: ssh -t HOST new NAME)\n".into();
    }
    let header = [
        "ID",
        "NAME",
        "STATE",
        "CLIENTS",
        "CREATED",
        "ACTIVITY",
        "SIZE",
        "RUNNING",
        "COMMAND",
        "LAST LINE",
    ];
    let rows: Vec<[String; 10]> = sessions.iter().map(|s| list_row(s, now)).collect();
    let mut columns: Vec<(&str, Vec<String>)> = header
        .iter()
        .enumerate()
        .map(|(i, &h)| (h, rows.iter().map(|r| r[i].clone()).collect()))
        .collect();
    fit(&mut columns, TABLE_WIDTH);
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = (0..rows.len())
        .map(|r| columns.iter().map(|(_, cells)| cells[r].clone()).collect())
        .collect();
    aligned(&header, &rows)
}

/// The width `list`'s table keeps to, in columns (cells), as a terminal's.
const TABLE_WIDTH: usize = 80;
/// The columns `list` drops first when its table is wider than
/// [`TABLE_WIDTH`], least useful first. `LAST LINE`, last, is cut to fit
/// before it is dropped; `COMMAND` stays (it says why an incompatible
/// session cannot be used).
const DROPPED_FIRST: [&str; 3] = ["CREATED", "SIZE", "CLIENTS"];

/// Drops columns in [`DROPPED_FIRST`]'s order, then cuts the last column,
/// until the table fits `width` (two spaces between columns). A table
/// whose kept columns alone are wider stays wider.
fn fit(columns: &mut Vec<(&str, Vec<String>)>, width: usize) {
    let column_width = |(header, cells): &(&str, Vec<String>)| {
        cells
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
            .max(header.len())
    };
    let total = |columns: &[(&str, Vec<String>)]| {
        columns.iter().map(column_width).sum::<usize>() + 2 * columns.len().saturating_sub(1)
    };
    for name in DROPPED_FIRST {
        if total(columns) <= width {
            return;
        }
        // The last column is cut first when that is enough.
        let last = columns.last().map(column_width).unwrap_or(0);
        let rest = total(columns) - last;
        if rest + 16 <= width {
            break;
        }
        columns.retain(|(header, _)| *header != name);
    }
    let excess = total(columns).saturating_sub(width);
    if let Some((header, cells)) = columns.last_mut()
        && excess > 0
    {
        let keep = column_width(&(header, cells.clone())).saturating_sub(excess);
        if keep < header.len() {
            columns.pop();
        } else {
            for cell in cells.iter_mut() {
                *cell = cell.chars().take(keep).collect();
            }
        }
    }
}

/// `list --json`: one object per session, keys as README documents them.
fn list_json(sessions: &[SessionInfo]) -> String {
    let entries: Vec<ListEntry<'_>> = sessions
        .iter()
        .map(|s| ListEntry {
            id: s.id.to_string(),
            name: s.name.as_str(),
            state: s.state,
            clients: s.clients,
            created: humantime::format_rfc3339_seconds(s.created).to_string(),
            last_activity: humantime::format_rfc3339_seconds(s.last_activity).to_string(),
            cols: s.size.cols(),
            rows: s.size.rows(),
            command: shell_words::join(&s.command),
            exit_code: s.exit.as_ref().map(|e| e.code),
            output_offset: s.output_offset,
            watchers: s.watchers,
            title: s.doing.title.as_deref(),
            current_command: s.doing.current_command.as_deref(),
            cwd: s.doing.cwd.as_deref(),
            bells: s.doing.bells,
            last_line: s.doing.last_line.as_deref(),
            history_on_disk: s.history_on_disk,
        })
        .collect();
    let mut out = serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

/// One session's cells in the `list` table.
fn list_row(s: &SessionInfo, now: SystemTime) -> [String; 10] {
    let state = match &s.exit {
        Some(exit) if s.state == SessionState::Exited => match &exit.signal {
            Some(signal) => format!("exited(SIG{signal})"),
            None => format!("exited({})", exit.code),
        },
        _ => s.state.to_string(),
    };
    [
        s.id.short(),
        s.name.to_string(),
        state,
        s.clients.to_string(),
        ago(now, s.created),
        ago(now, s.last_activity),
        format!("{}x{}", s.size.cols(), s.size.rows()),
        s.doing.current_command.clone().unwrap_or_default(),
        shell_words::join(&s.command),
        s.doing.last_line.clone().unwrap_or_default(),
    ]
}

/// `header` and `rows` as columns two spaces apart (the last one unpadded).
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// "5m ago": the largest unit of the time since `then`.
fn ago(now: SystemTime, then: SystemTime) -> String {
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match secs {
        0..60 => (secs, "s"),
        60..3600 => (secs / 60, "m"),
        3600..86400 => (secs / 3600, "h"),
        _ => (secs / 86400, "d"),
    };
    format!("{n}{unit} ago")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExitStatus, PtySize, SessionId};

    fn check(line: &str) -> Result<Command, Failure> {
        parse(line)
    }

    #[test]
    fn what_keepsh_replaces_gets_a_line_saying_what_to_do() {
        for line in [
            "mosh-server new -s -c 256 -l LANG=en_US.UTF-8",
            "etterminal --idpasskey x",
        ] {
            let failure = check(line).expect_err("refused");
            assert_eq!(failure.status, 1, "{line}");
            assert!(
                failure.line.contains("keepsh keeps your session itself"),
                "{}",
                failure.line
            );
            assert!(failure.line.contains("USER+NAME"), "{}", failure.line);
        }
        let failure = check("scp -t /tmp/x").expect_err("refused");
        assert!(
            failure.line.contains("use scp without -O"),
            "{}",
            failure.line
        );
        assert!(check("scp").is_err(), "not a keepsh command either");
    }

    #[test]
    fn refs_that_cannot_be_a_name_or_id_are_usage_errors_quoted_safely() {
        let long = "x".repeat(4096);
        for line in [
            "attach ../x",
            "kill ''",
            "history \"a\u{0}b\"",
            "kill \"\u{1b}]0;pwned\u{7}\"",
            &format!("attach {long}"),
        ] {
            let failure = check(line).expect_err(line);
            assert_eq!(failure.status, 2, "{line}");
            assert!(failure.line.contains("invalid session name"), "{line}");
            assert!(!failure.line.chars().any(char::is_control), "{line}");
            assert!(
                failure.line.len() < 200,
                "{line}: {} bytes",
                failure.line.len()
            );
        }
        assert!(check("kill 0123abcd").is_ok());
        assert!(check("attach 6f1e2c3a-0000-4000-8000-000000000000").is_ok());
    }

    #[test]
    fn clap_errors_never_echo_control_characters_or_long_words() {
        let failure = check(&format!("new \"\u{1b}[2J{}\"", "y".repeat(4096))).expect_err("bad");
        assert_eq!(failure.status, 2);
        assert!(
            !failure.line.chars().any(char::is_control),
            "{}",
            failure.line
        );
        assert!(failure.line.len() < 500, "{} bytes", failure.line.len());
    }

    #[test]
    fn commands_parse() {
        assert_eq!(check("list"), Ok(Command::List { json: false }));
        assert_eq!(check("list --json"), Ok(Command::List { json: true }));
        assert_eq!(
            check("new -d work -- sh -c 'echo hi'"),
            Ok(Command::New {
                name: Some("work".parse().expect("name")),
                detach: true,
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            })
        );
        assert_eq!(
            check("new"),
            Ok(Command::New {
                name: None,
                detach: false,
                command: vec![]
            })
        );
        assert_eq!(
            check("attach --read-only --from 42 abcd"),
            Ok(Command::Attach {
                reference: Some("abcd".into()),
                read_only: true,
                from: Some(42),
                detach_others: false,
                quiet: false,
            })
        );
        assert_eq!(
            check("attach -d work"),
            Ok(Command::Attach {
                reference: Some("work".into()),
                read_only: false,
                from: None,
                detach_others: true,
                quiet: false,
            })
        );
        assert_eq!(
            check("kill x"),
            Ok(Command::Kill {
                reference: "x".into()
            })
        );
        assert_eq!(
            check("restart -d x"),
            Ok(Command::Restart {
                reference: "x".into(),
                detach: true
            })
        );
        assert_eq!(check("help"), Ok(Command::Help));
        assert_eq!(check("new --help"), Ok(Command::Help));
        assert_eq!(check("version"), Ok(Command::Version));
    }

    #[test]
    fn usage_errors_are_one_line_with_status_2() {
        for line in [
            "frobnicate",
            "",
            "new 'unbalanced",
            "new 'bad name'",
            "rename a 'b c'",
            "kill",
            "restart",
            "list --yaml",
            "attach --from minus",
            "attach a b",
        ] {
            let failure = check(line).expect_err(line);
            assert_eq!(failure.status, 2, "{line}");
            assert!(
                failure.line.starts_with("keepsh: "),
                "{line}: {}",
                failure.line
            );
            assert!(!failure.line.contains('\n'), "{line}: {}", failure.line);
            assert!(failure.line.ends_with(')'), "{line}: {}", failure.line);
        }
        let failure = check("new 'a b'").expect_err("invalid name");
        assert!(failure.line.contains("A-Z a-z 0-9"), "{}", failure.line);
        let failure = check("kill").expect_err("missing REF");
        assert!(
            failure.line.contains("not provided: <REF>"),
            "{}",
            failure.line
        );
    }

    fn info(name: &str, state: SessionState, exit: Option<u32>) -> SessionInfo {
        SessionInfo {
            id: SessionId::random(),
            name: name.parse().expect("name"),
            owner: "alice".into(),
            state,
            clients: 0,
            created: SystemTime::UNIX_EPOCH,
            last_activity: SystemTime::UNIX_EPOCH,
            detached_at: None,
            size: PtySize::DEFAULT,
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            exit: exit.map(|code| ExitStatus { code, signal: None }),
            output_offset: 12,
            watchers: 0,
            doing: Default::default(),
            buffer_start: 0,
            history_on_disk: false,
        }
    }

    #[test]
    fn list_json_has_exactly_the_documented_keys() {
        let out = render_list(
            &[info("w", SessionState::Exited, Some(3))],
            true,
            SystemTime::now(),
        );
        let value: serde_json::Value = serde_json::from_str(&out).expect("json");
        let object = value[0].as_object().expect("object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "clients",
                "cols",
                "command",
                "created",
                "exit_code",
                "id",
                "last_activity",
                "name",
                "output_offset",
                "rows",
                "state",
                "watchers"
            ]
            .into_iter()
            .chain(["bells", "current_command", "cwd", "last_line", "title"])
            .chain(["history_on_disk"])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(object["state"], "exited");
        assert_eq!(object["exit_code"], 3);
        assert_eq!(object["command"], "sh -c 'exit 3'");
        assert_eq!(object["created"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn list_table_is_aligned() {
        let out = render_list(
            &[
                info("short", SessionState::Orphaned, None),
                info("a-much-longer-name", SessionState::Exited, Some(0)),
            ],
            false,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(120),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("STATE").expect("header");
        assert_eq!(&lines[1][col..col + 8], "orphaned");
        assert_eq!(&lines[2][col..col + 9], "exited(0)");
        assert!(lines[1].contains("2m ago"));
    }

    #[test]
    fn list_fits_80_columns_by_dropping_the_least_useful_columns_then_cutting_the_last() {
        let mut busy = info("build", SessionState::Attached, None);
        busy.command = vec!["cargo".into(), "test".into(), "--workspace".into()];
        busy.doing.current_command = Some("cargo".into());
        busy.doing.last_line = Some("test session::tests::a_long_test_name ... ok".repeat(2));
        let out = render_list(
            &[busy],
            false,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(120),
        );
        let header = out.lines().next().expect("header");
        assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
        for kept in ["ID", "NAME", "STATE", "ACTIVITY", "RUNNING", "LAST LINE"] {
            assert!(header.contains(kept), "{header}");
        }
        assert!(
            !header.contains("CREATED") && !header.contains("SIZE"),
            "{header}"
        );
        // The last line, cut to what is left.
        assert!(
            out.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("test sessi")),
            "{out}"
        );
    }
}
