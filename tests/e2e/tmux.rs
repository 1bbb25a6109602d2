//! The screen judge: tmux, a real terminal emulator that keepsh did not
//! write. Each client under test is a command (OpenSSH `ssh -tt`) in a pane
//! of a private tmux server (`-f /dev/null`, its own socket, status line
//! off, each window sized with `resize-window`); a pane's state is read
//! back with `capture-pane -p -e -N` (characters with their SGR) and the
//! format variables tmux keeps for what a capture does not show.
//!
//! Captures are compared as cells (character plus attributes), not as
//! escape strings: tmux writes each SGR relative to the previous cell, so
//! one screen can be captured as different strings.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A private tmux server, killed on drop.
pub struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// A pane of the judge, by tmux's pane id (`%N`).
#[derive(Clone)]
pub struct Pane {
    id: String,
}

/// What tmux keeps of a pane beyond its cells (tmux(1) FORMATS).
const STATE: &str = "cursor #{cursor_x},#{cursor_y} visible #{cursor_flag} \
    alternate #{alternate_on} region #{scroll_region_upper}-#{scroll_region_lower} \
    origin #{origin_flag} insert #{insert_flag} wrap #{wrap_flag} \
    keypad #{keypad_flag} cursor-keys #{keypad_cursor_flag} \
    mouse any #{mouse_any_flag} button #{mouse_button_flag} sgr #{mouse_sgr_flag} \
    standard #{mouse_standard_flag} utf8 #{mouse_utf8_flag} \
    size #{pane_width}x#{pane_height} title #{pane_title}";

impl Tmux {
    /// Starts a tmux server with one idle session.
    pub fn start() -> Tmux {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmux = Tmux {
            socket: dir.path().join("judge.sock"),
            _dir: dir,
        };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "judge",
            "-x",
            "80",
            "-y",
            "24",
            "sleep 3600",
        ]);
        tmux.run(&["set-option", "-g", "status", "off"]);
        // The panes' programs see this TERM; xterm's is what most users have.
        tmux.run(&["set-option", "-g", "default-terminal", "xterm-256color"]);
        tmux
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(args);
        cmd
    }

    /// Runs a tmux command; fails the test if tmux does.
    fn run(&self, args: &[&str]) -> String {
        let out: Output = self.command(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `cmd` in a new window of `cols`×`rows` cells. The pane stays
    /// (dead) after the command ends, so that its last screen can be read.
    pub fn pane(&self, cmd: &Command, cols: u16, rows: u16) -> Pane {
        let mut line: Vec<String> = cmd
            .get_envs()
            .filter_map(|(key, value)| {
                Some(format!(
                    "{}={}",
                    key.to_string_lossy(),
                    shell_words::quote(&value?.to_string_lossy())
                ))
            })
            .collect();
        line.push(shell_words::quote(&cmd.get_program().to_string_lossy()).into_owned());
        line.extend(
            cmd.get_args()
                .map(|arg| shell_words::quote(&arg.to_string_lossy()).into_owned()),
        );
        let id = self
            .run(&[
                "new-window",
                "-d",
                "-t",
                "judge",
                "-P",
                "-F",
                "#{pane_id}",
                &format!("exec {}", line.join(" ")),
            ])
            .trim()
            .to_owned();
        self.run(&["set-option", "-p", "-t", &id, "remain-on-exit", "on"]);
        self.run(&[
            "resize-window",
            "-t",
            &id,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
        ]);
        Pane { id }
    }

    /// Types `keys` into `pane`, literally (`send-keys -l`).
    pub fn send(&self, pane: &Pane, keys: &str) {
        self.run(&["send-keys", "-t", &pane.id, "-l", keys]);
    }

    /// Ends the program in `pane` (its window is killed: the ssh client
    /// gets SIGHUP, as when a terminal window is closed).
    pub fn close(&self, pane: &Pane) {
        self.run(&["kill-window", "-t", &pane.id]);
    }

    /// The visible screen of `pane`, as SGR-formatted rows.
    pub fn capture(&self, pane: &Pane) -> String {
        self.run(&["capture-pane", "-p", "-e", "-N", "-t", &pane.id])
    }

    /// The visible screen of `pane` as text with each wrapped row joined
    /// to the row it wraps onto (`capture-pane -J`): which rows wrap,
    /// which a capture does not show and a resize reflows.
    pub fn joined(&self, pane: &Pane) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", &pane.id])
    }

    /// What `pane` holds as plain text: its scrollback (history), then
    /// the visible screen.
    pub fn scrollback(&self, pane: &Pane) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-t", &pane.id])
    }

    /// The title of `pane` (OSC 0/2).
    pub fn title(&self, pane: &Pane) -> String {
        self.run(&["display-message", "-p", "-t", &pane.id, "#{pane_title}"])
            .trim_end_matches('\n')
            .to_owned()
    }

    /// The visible screen of `pane` as plain text.
    pub fn text(&self, pane: &Pane) -> String {
        self.run(&["capture-pane", "-p", "-t", &pane.id])
    }

    /// Waits up to `timeout` for `returned` to come to the state of
    /// `stayed`; if it does not, the first rows that differ, one per line
    /// pair (the last row is the cursor, modes and title).
    pub fn agree(
        &self,
        stayed: &Pane,
        returned: &Pane,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let same = || (self.state(stayed) == self.state(returned)).then_some(());
        if crate::harness::poll(timeout, same).is_some() {
            return Ok(());
        }
        let (a, b) = (self.state(stayed), self.state(returned));
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .take(3)
            .map(|(row, (x, y))| {
                format!("row {row}:\n  attached all along: {x}\n  reattached:         {y}")
            })
            .collect();
        Err(diff.join("\n"))
    }

    /// Everything tmux keeps that decides what the user sees and what their
    /// keys send: every cell with its attributes, then the cursor, modes,
    /// scroll region and title. Two panes with equal states look and
    /// behave the same.
    pub fn state(&self, pane: &Pane) -> String {
        let mut state = cells(&self.capture(pane));
        state.push_str(&self.run(&["display-message", "-p", "-t", &pane.id, STATE]));
        state
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).output();
    }
}

/// A capture as one line per row of `character attributes` cells, so that
/// two captures of the same cells compare equal however tmux chose to
/// write them: SGR relative or not, a line-drawing character as itself
/// after SO (tmux's way) or as its Unicode box character, trailing blank
/// cells or not. tmux keeps a blank cell with a background colour in two
/// ways that look the same — printed (a space with its background in the
/// capture) or erased (a plain space, or nothing at a row's end) —
/// depending on what wrote it, where keepsh's model (like xterm's) keeps
/// one: so a space with no attribute compares as a plain space whatever
/// its colours, and trailing ones are left out. (keepsh's unit tests check
/// that the redraw keeps those backgrounds.)
pub fn cells(capture: &str) -> String {
    use vte::ansi::StandardCharset;
    struct Reader {
        pen: Sgr,
        /// Line drawing shifted in (SO), or designated into G0 (`ESC ( 0`).
        shifted: bool,
        g0_graphics: bool,
        row: Vec<String>,
        out: String,
    }
    impl Reader {
        fn end_row(&mut self) {
            while self.row.last().is_some_and(|cell| cell == " ") {
                self.row.pop();
            }
            self.out.push_str(&self.row.join(" "));
            self.out.push('\n');
            self.row.clear();
        }
    }
    impl vte::Perform for Reader {
        fn print(&mut self, c: char) {
            let c = if self.shifted || self.g0_graphics {
                StandardCharset::SpecialCharacterAndLineDrawing.map(c)
            } else {
                c
            };
            if c == ' ' && self.pen.flags.is_empty() {
                self.row.push(" ".into());
            } else {
                self.row.push(format!("{c}{}", self.pen.describe()));
            }
        }
        fn execute(&mut self, byte: u8) {
            match byte {
                b'\n' => self.end_row(),
                0x0e => self.shifted = true,
                0x0f => self.shifted = false,
                _ => {}
            }
        }
        fn esc_dispatch(&mut self, intermediates: &[u8], _: bool, byte: u8) {
            if intermediates == b"(" {
                self.g0_graphics = byte == b'0';
            }
        }
        fn csi_dispatch(&mut self, params: &vte::Params, _: &[u8], _: bool, action: char) {
            if action == 'm' {
                self.pen.apply(params);
            }
        }
    }
    let mut reader = Reader {
        pen: Sgr::default(),
        shifted: false,
        g0_graphics: false,
        row: Vec::new(),
        out: String::new(),
    };
    vte::Parser::new().advance(&mut reader, capture.as_bytes());
    if !reader.row.is_empty() {
        reader.end_row();
    }
    reader.out
}

/// The attributes in effect while reading a capture.
#[derive(Default, Clone)]
struct Sgr {
    /// Attribute codes that are on (1 bold … 53 overline; 4:n underline styles).
    flags: std::collections::BTreeSet<String>,
    fg: Option<String>,
    bg: Option<String>,
    underline: Option<String>,
}

impl Sgr {
    fn describe(&self) -> String {
        if self.flags.is_empty() && self.fg.is_none() && self.bg.is_none() {
            return String::new();
        }
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        format!(
            "[{} fg={} bg={} ul={}]",
            flags.join(","),
            self.fg.as_deref().unwrap_or("-"),
            self.bg.as_deref().unwrap_or("-"),
            self.underline.as_deref().unwrap_or("-")
        )
    }

    /// Applies one SGR (ECMA-48 §8.3.117, with xterm's colour forms).
    fn apply(&mut self, params: &vte::Params) {
        let groups: Vec<Vec<u16>> = params.iter().map(<[u16]>::to_vec).collect();
        let mut flat = groups.iter();
        while let Some(group) = flat.next() {
            let code = group[0];
            let mut extended = |target: &mut Option<String>| {
                let spec: Vec<u16> = if group.len() > 1 {
                    group[1..].to_vec()
                } else {
                    let kind = flat.next().map_or(0, |g| g[0]);
                    let count = if kind == 5 { 1 } else { 3 };
                    std::iter::once(kind)
                        .chain((0..count).filter_map(|_| flat.next().map(|g| g[0])))
                        .collect()
                };
                *target = Some(match spec.as_slice() {
                    [5, n] => format!("idx{n}"),
                    [2, r, g, b] | [2, _, r, g, b] => format!("#{r:02x}{g:02x}{b:02x}"),
                    other => format!("{other:?}"),
                });
            };
            match code {
                0 => *self = Sgr::default(),
                38 => extended(&mut self.fg),
                48 => extended(&mut self.bg),
                58 => extended(&mut self.underline),
                1..=9 | 53 => {
                    if code == 4 {
                        self.flags.retain(|f| !f.starts_with('4'));
                        match group.get(1) {
                            Some(0) => continue,
                            Some(style) => self.flags.insert(format!("4:{style}")),
                            None => self.flags.insert("4".into()),
                        };
                    } else {
                        self.flags.insert(code.to_string());
                    }
                }
                21 => {
                    self.flags.retain(|f| !f.starts_with('4'));
                    self.flags.insert("4:2".into());
                }
                22 => self.flags.retain(|f| f != "1" && f != "2"),
                23 | 25 | 27..=29 | 55 => {
                    let off = (code - 20).to_string();
                    let off = if code == 55 { "53".to_owned() } else { off };
                    self.flags.remove(&off);
                }
                24 => self.flags.retain(|f| !f.starts_with('4')),
                30..=37 => self.fg = Some(format!("c{}", code - 30)),
                39 => self.fg = None,
                40..=47 => self.bg = Some(format!("c{}", code - 40)),
                49 => self.bg = None,
                59 => self.underline = None,
                90..=97 => self.fg = Some(format!("c{}", code - 90 + 8)),
                100..=107 => self.bg = Some(format!("c{}", code - 100 + 8)),
                _ => {}
            }
        }
    }
}
