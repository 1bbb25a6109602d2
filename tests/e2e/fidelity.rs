//! Screen fidelity, judged by tmux (a terminal emulator keepsh did not
//! write): a client that reattaches shows exactly what a client that stayed
//! attached shows — every cell with its attributes, the cursor, the scroll
//! region, origin, insert and wrap modes, the alternate screen and the one
//! behind it, input modes and the title — for programs that draw once and
//! never repaint, and for vim, less and top. Then the program writes
//! relative to the restored state, and the two must still agree.
//!
//! What tmux 3.3 does not keep (OSC 8 hyperlinks, the kitty keyboard
//! flags, palette changes) is checked in the bytes of the redraw with a
//! second parser (vte's, not keepsh's model).

use std::process::Command;

use crate::harness::{DEADLINE, Options, Server, poll, wait_until};
use crate::screen::sh;
use crate::tmux::{Pane, Tmux};

/// `ssh -tt alice ARGS` as a command line for a pane.
fn ssh_tt(server: &Server, args: &[&str]) -> Command {
    let mut cmd = server.ssh_as("alice", "alice");
    cmd.arg("-tt").args(args);
    cmd
}

/// Waits until `pane` shows `text`.
fn wait_text(tmux: &Tmux, pane: &Pane, text: &str) {
    if poll(DEADLINE, || tmux.text(pane).contains(text).then_some(())).is_none() {
        panic!("{text:?} never shown:\n{}", tmux.text(pane));
    }
}

/// Waits until both panes are in the same state; on a timeout, fails
/// showing the first rows that differ.
fn wait_same(tmux: &Tmux, stayed: &Pane, returned: &Pane) {
    if let Err(diff) = tmux.agree(stayed, returned, DEADLINE) {
        panic!(
            "panes differ:\n{diff}\n--- attached all along:\n{}\n--- reattached:\n{}",
            tmux.capture(stayed),
            tmux.capture(returned)
        );
    }
}

/// One session under the judge: `stayed` created it and stays attached.
struct Judged {
    server: Server,
    tmux: Tmux,
    stayed: Pane,
}

impl Judged {
    /// Starts `program` in session "judged" from a pane of 80×24.
    fn start(server: Server, program: &[&str], ready: &str) -> Judged {
        let quoted: Vec<String> = program.iter().map(|arg| sh(arg)).collect();
        let mut args = vec!["new", "judged", "--"];
        args.extend(quoted.iter().map(String::as_str));
        let tmux = Tmux::start();
        let stayed = tmux.pane(&ssh_tt(&server, &args), 80, 24);
        wait_text(&tmux, &stayed, ready);
        Judged {
            server,
            tmux,
            stayed,
        }
    }

    /// A client attaches, shows `ready`, and is closed; returns once the
    /// session has one client again.
    fn attach_and_drop(&self, ready: &str) {
        let dropped = self
            .tmux
            .pane(&ssh_tt(&self.server, &["attach", "judged"]), 80, 24);
        wait_text(&self.tmux, &dropped, ready);
        self.tmux.close(&dropped);
        self.wait_clients(1);
    }

    fn wait_clients(&self, clients: u64) {
        wait_until("the session's client count", DEADLINE, || {
            self.server
                .session("alice", "judged")
                .is_some_and(|s| s["clients"] == clients)
        });
    }

    /// A client reattaches and must come to the stayed client's state.
    fn reattach(&self, shown: &str) -> Pane {
        let returned = self
            .tmux
            .pane(&ssh_tt(&self.server, &["attach", "judged"]), 80, 24);
        wait_text(&self.tmux, &returned, shown);
        self.wait_clients(2);
        wait_same(&self.tmux, &self.stayed, &returned);
        returned
    }
}

/// Runs `program`, drops one client, types `while_away` into the stayed
/// one until it shows `changed`, and reattaches: both must agree.
fn reattach_matches(program: &[&str], ready: &str, while_away: &str, changed: &str) {
    let judged = Judged::start(Server::start(), program, ready);
    judged.attach_and_drop(ready);
    judged.tmux.send(&judged.stayed, while_away);
    wait_text(&judged.tmux, &judged.stayed, changed);
    judged.reattach(changed);
}

/// A program that prints what it is typed, with `\xHH` escapes decoded
/// (bash's `printf %b`), one line at a time, and never repaints: the test
/// drives it step by step. Echo is off so that typing draws nothing.
const PRINTER: &str =
    r#"stty -echo; printf 'ready\r\n'; while IFS= read -r line; do printf '%b' "$line"; done"#;

/// `bytes` as one line typed into [`PRINTER`].
fn step(bytes: &[u8]) -> String {
    let mut line: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b" .,:;-_=+/#@()[]<>{}!?*~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    line.push('\r');
    line
}

/// Every SGR attribute tmux keeps, colours in each form, wide and
/// combining characters, DEC line drawing, tab stops, a saved cursor, a
/// title, a scroll region below a header with origin mode, insert mode,
/// and input modes: drawn once on the primary screen.
const PRIMARY: &[u8] = b"\x1b]2;judge title\x07\x1b[H\x1b[2J\x1b[1;37;44m header \x1b[m\r\n\
    \x1b[1mB\x1b[2mD\x1b[22;3mI\x1b[4mU\x1b[4:2mW\x1b[4:3mC\x1b[4:4md\x1b[4:5me\x1b[24;5mK\
    \x1b[7mR\x1b[8mH\x1b[28;9mS\x1b[53mO\x1b[m plain\r\n\
    \x1b[31mr\x1b[91mR\x1b[38;5;99mp\x1b[38;2;10;200;30mt\x1b[48;5;22mb\x1b[48;2;1;2;3mB\
    \x1b[49;39m \x1b[4;58;5;196mu\x1b[58:2::0:255:0mg\x1b[m\r\n\
    wide \xe4\xb8\xad\xe6\x96\x87 combining e\xcc\x81 \x1b(0lqqk x\x1b(B\r\n\
    \x1b[3g\x1b[5;7H\x1bH\x1b[5;30H\x1bH\x1b)0\
    \x1b[10;5H\x1b[1;32m\x1b7\x1b[m\
    \x1b[41m\x1b[12;1Hred background line\x1b[K\x1b[m\
    \x1b[23;1H\x1b[7m status line \x1b[m\
    \x1b[12;20r\x1b[?6h\x1b[3;1H\x1b[3;35mregion\x1b[4h\
    \x1b[?1h\x1b=\x1b[?2004h\x1b[?1002h\x1b[?1006h step-1";

/// Writes relative to the restored state: scrolls inside the region, goes
/// back to the saved cursor, prints in line drawing through G1, moves by
/// tab stops, inserts, then leaves origin mode.
const PRIMARY_AFTER: &[u8] = b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nafter scroll\
    \x1b[1;1HX\x1b8saved\x0eqqqq\x0f\r\n\tT1\tT2 step-2\x1b[?6l\x1b[24;70Hend";

#[test]
fn a_program_that_draws_once_is_restored_with_its_scroll_region_saved_cursor_and_charsets() {
    let judged = Judged::start(Server::start(), &["bash", "-c", PRINTER], "ready");
    judged.attach_and_drop("ready");
    judged.tmux.send(&judged.stayed, &step(PRIMARY));
    wait_text(&judged.tmux, &judged.stayed, "step-1");
    let returned = judged.reattach("step-1");
    judged.tmux.send(&judged.stayed, &step(PRIMARY_AFTER));
    wait_text(&judged.tmux, &judged.stayed, "step-2");
    wait_text(&judged.tmux, &returned, "step-2");
    wait_same(&judged.tmux, &judged.stayed, &returned);
}

/// A shell-like primary screen before a program enters the alternate one.
const SHELL: &[u8] = b"\x1b[32muser@host\x1b[m:\x1b[34m~\x1b[m$ ls\r\n\
    \x1b[1;34mdir\x1b[m  file  \x1b[9mgone\x1b[m\r\n$ tui\r\n";

/// The alternate screen's content: a scroll region and attributes.
const ALTERNATE: &[u8] = b"\x1b[H\x1b[2J\x1b[7m TUI header \x1b[m\x1b[2;22r\x1b[22;1H\
    \x1b[2mdim line\x1b[m\r\n\x1b[5mblinking\x1b[m\r\n\x1b[53moverlined\x1b[m alt-1";

/// The shell's screen, then the alternate screen entered with `enter`;
/// the client reattaches while it is up, the program writes into the
/// region and leaves with `leave`: both clients show the shell's screen.
fn alternate_screen_is_restored_and_left(enter: &[u8], leave: &[u8]) {
    let judged = Judged::start(Server::start(), &["bash", "-c", PRINTER], "ready");
    judged.attach_and_drop("ready");
    judged
        .tmux
        .send(&judged.stayed, &step(&[SHELL, enter, ALTERNATE].concat()));
    wait_text(&judged.tmux, &judged.stayed, "alt-1");
    let returned = judged.reattach("alt-1");
    // Into the region, then back to the shell's screen.
    judged.tmux.send(
        &judged.stayed,
        &step(&[b"\r\nin region alt-2".as_slice(), leave, b"\x1b[m$ back-3"].concat()),
    );
    wait_text(&judged.tmux, &judged.stayed, "back-3");
    wait_text(&judged.tmux, &returned, "back-3");
    wait_same(&judged.tmux, &judged.stayed, &returned);
}

#[test]
fn the_primary_screen_behind_the_alternate_one_is_restored_and_shown_when_it_is_left() {
    // xterm's terminfo (smcup, rmcup).
    alternate_screen_is_restored_and_left(b"\x1b[?1049h", b"\x1b[?1049l");
}

#[test]
fn the_older_alternate_screens_47_and_1047_are_restored_and_left() {
    // rxvt's terminfo: the cursor saved apart, the screen cleared, 47.
    alternate_screen_is_restored_and_left(b"\x1b7\x1b[?47h", b"\x1b[2J\x1b[?47l\x1b8");
    // 1047, which leaves the cursor where the alternate screen had it.
    alternate_screen_is_restored_and_left(b"\x1b[?1047h", b"\x1b[?1047l");
}

#[test]
fn autowrap_off_and_a_pending_wrap_are_restored() {
    let judged = Judged::start(Server::start(), &["bash", "-c", PRINTER], "ready");
    judged.attach_and_drop("ready");
    // Row 5 filled to its last column: the cursor waits to wrap. Row 8:
    // autowrap off, the last column overwritten.
    let full: Vec<u8> = (0..80).map(|i| b'a' + (i % 26) as u8).collect();
    let mut draw = b"\x1b[8;75H\x1b[?7lno-wrap-here!\x1b[?7h\x1b[5;1H".to_vec();
    draw.extend_from_slice(&full);
    judged.tmux.send(&judged.stayed, &step(&draw));
    wait_text(&judged.tmux, &judged.stayed, "no-wr!");
    let returned = judged.reattach("no-wr!");
    judged
        .tmux
        .send(&judged.stayed, &step(b"wrapped-1\x1b[?7l"));
    wait_text(&judged.tmux, &judged.stayed, "wrapped-1");
    wait_text(&judged.tmux, &returned, "wrapped-1");
    wait_same(&judged.tmux, &judged.stayed, &returned);
}

/// A wide character printed at the last column wraps and leaves that cell
/// empty; the row below is then overwritten (row 3), erased (row 7),
/// pushed down by IL (row 12) or erased at its start (ECH, row 16). The
/// reattached client shows each row where it was, nothing of the row
/// below in the empty cell, and the same rows wrap (tmux ends a row's wrap
/// when the row below is cleared whole or moved, as the model does).
#[test]
fn rows_a_wide_character_wrapped_from_are_restored_whatever_came_below() {
    let judged = Judged::start(Server::start(), &["bash", "-c", PRINTER], "ready");
    judged.attach_and_drop("ready");
    let draw = "\x1b[2;1Hoverwritten\x1b[3;80H\u{4e2d}b\x1b[4;1Hxy\
        \x1b[6;1Herased\x1b[7;80H\u{6587}\x1b[8;1H\x1b[2K\
        \x1b[10;1Hmoved\x1b[11;80H\u{5b57}\x1b[12;1H\x1b[L\
        \x1b[14;1Hcut\x1b[15;80H\u{5b50}\x1b[16;1H\x1b[2X\x1b[16;4Hx\x1b[20;1Hstep-1";
    judged.tmux.send(&judged.stayed, &step(draw.as_bytes()));
    wait_text(&judged.tmux, &judged.stayed, "step-1");
    let returned = judged.reattach("step-1");
    judged.tmux.send(
        &judged.stayed,
        &step(b"\x1b[4;5Hz\x1b[8;1Hw\x1b[13;4Hq\x1b[18;1Hstep-2"),
    );
    wait_text(&judged.tmux, &judged.stayed, "step-2");
    wait_text(&judged.tmux, &returned, "step-2");
    wait_same(&judged.tmux, &judged.stayed, &returned);
    // The same rows wrap: rows 3 and 15 (tmux keeps a row's wrap when the
    // row below is overwritten or partly erased), not rows 7 and 11
    // (erasing the row below or IL there ends it). Spaces are left out: a
    // blank the redraw printed and a cell never written look alike, but
    // `-J` keeps the first.
    let joined = |pane| judged.tmux.joined(pane).replace(' ', "");
    assert_eq!(joined(&returned), joined(&judged.stayed));
    assert!(joined(&returned).starts_with("ready\noverwritten\nxybz\n\nerased\n\nw\n"));
}

/// A full-screen program: alternate screen, a title, colours, a scroll
/// region under a fixed header and above a status line, and bracketed
/// paste, application cursor keys and keypad, SGR mouse reporting and
/// focus events. It draws once and never repaints (no SIGWINCH handler):
/// each line it reads scrolls inside the region.
const TUI: &str = r#"
printf '\033]2;scripted tui\007\033[?2004h\033[?1h\033=\033[?1002h\033[?1006h\033[?1004h'
printf '\033[?1049h\033[H\033[2J'
printf '\033[H\033[1;37;44m header: scroll region below \033[m'
printf '\033[24;1H\033[7m status line \033[m\033[2;23r\033[23;1H'
printf '\033[32mready\033[m\n'
i=0
while :; do
  if read -r line; then
    i=$((i+1))
    printf '\033[1;31m%s\033[0;3m line\033[m \033[38;5;208m%s\033[m\n' "$i" "$line"
  fi
done
"#;

#[test]
fn a_scripted_tui_is_restored_cell_for_cell_with_its_modes() {
    let lines: String = (1..=40).map(|i| format!("away-{i}\r")).collect();
    reattach_matches(&["bash", "-c", TUI], "ready", &lines, "away-40");
}

#[test]
fn a_scripted_tui_keeps_its_modes_title_and_hyperlinks_in_the_redraw_bytes() {
    let server = Server::start();
    let script = concat!(
        r"printf '\033]8;id=doc;https://example.com/doc\033\\link\033]8;;\033\\ ",
        r"\033]4;1;rgb:12/34/56\033\\\033[>1u\033[>5u\033[>4;2m hyper-ready'; exec sleep 1000"
    );
    let stayed = server.tt("alice", &["new", "tui", "--", "bash", "-c", &sh(script)]);
    wait_until("the program's output", DEADLINE, || {
        stayed
            .terminal()
            .screen()
            .contents()
            .contains("hyper-ready")
    });
    let returned = server.tt("alice", &["attach", "tui"]);
    wait_until("the redraw", DEADLINE, || {
        returned
            .terminal()
            .screen()
            .contents()
            .contains("hyper-ready")
    });
    drop(stayed);
    let sequences = sequences(&returned.bytes());
    for wanted in [
        "OSC [\"8\", \"id=doc\", \"https://example.com/doc\"]",
        "OSC [\"4\", \"1\", \"rgb:12/34/56\"]",
        "CSI > [[1]] u",
        "CSI > [[5]] u",
        "CSI = [[5], [1]] u",
        "CSI > [[4], [2]] m",
    ] {
        assert!(
            sequences.iter().any(|s| s == wanted),
            "{wanted} not in the redraw: {sequences:?}"
        );
    }
}

/// Every escape sequence in `bytes`, read by vte's plain parser.
fn sequences(bytes: &[u8]) -> Vec<String> {
    #[derive(Default)]
    struct Seen(Vec<String>);
    impl vte::Perform for Seen {
        fn csi_dispatch(&mut self, params: &vte::Params, i: &[u8], _: bool, c: char) {
            let params: Vec<Vec<u16>> = params.iter().map(<[u16]>::to_vec).collect();
            self.0
                .push(format!("CSI {} {params:?} {c}", String::from_utf8_lossy(i)));
        }
        fn osc_dispatch(&mut self, params: &[&[u8]], _: bool) {
            let params: Vec<_> = params.iter().map(|p| String::from_utf8_lossy(p)).collect();
            self.0.push(format!("OSC {params:?}"));
        }
    }
    let mut seen = Seen::default();
    vte::Parser::new().advance(&mut seen, bytes);
    seen.0
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn vim_is_restored_cell_for_cell() {
    let program = if have("vim") { "vim" } else { "vi" };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("main.rs");
    let text: String = (1..=60)
        .map(|i| format!("fn f{i}() -> u32 {{ {i} }} // line {i}\n"))
        .collect();
    std::fs::write(&file, text).expect("write file");
    let file = file.to_string_lossy().into_owned();
    // -u NONE: no user vimrc; syntax colours, line numbers, mouse on.
    let vim = format!(
        "printf 'before vim\\n'; {program} -u NONE -i NONE -N -c 'syntax on' \
         -c 'set number mouse=a' {}; printf 'vim done\\n'; exec sleep 1000",
        sh(&file)
    );
    let judged = Judged::start(Server::start(), &["bash", "-c", &vim], "line 1");
    judged.attach_and_drop("line 1");
    judged.tmux.send(&judged.stayed, "Gotyped while away\x1b");
    wait_text(&judged.tmux, &judged.stayed, "typed while away");
    let returned = judged.reattach("typed while away");
    // Quit vim: both show the screen from before it started (the primary
    // screen the reattached client was given behind vim's).
    judged.tmux.send(&judged.stayed, ":q!\r");
    wait_text(&judged.tmux, &returned, "vim done");
    assert!(judged.tmux.text(&returned).contains("before vim"));
    wait_same(&judged.tmux, &judged.stayed, &returned);
}

/// A TUI on Python's `curses` (ncurses): the alternate screen, colours
/// and attributes, mouse reporting, and a log scrolled under a header
/// inside a scroll region. A key adds a log line; `!` quits.
const CURSES_TUI: &str = r#"
import curses, time

def main(screen):
    curses.mousemask(curses.ALL_MOUSE_EVENTS | curses.REPORT_MOUSE_POSITION)
    curses.start_color()
    curses.use_default_colors()
    curses.init_pair(1, curses.COLOR_BLACK, curses.COLOR_CYAN)
    curses.init_pair(2, curses.COLOR_YELLOW, -1)
    curses.init_pair(3, 202, 236)
    rows, cols = screen.getmaxyx()
    screen.addstr(0, 0, " keepsh curses judge ".ljust(cols), curses.color_pair(1) | curses.A_BOLD)
    log = screen.derwin(rows - 2, cols, 1, 0)
    log.scrollok(True)
    log.idlok(True)
    status = screen.derwin(1, cols, rows - 1, 0)
    styles = [curses.A_BOLD, curses.A_UNDERLINE, curses.A_REVERSE, curses.A_DIM,
              curses.A_ITALIC, curses.color_pair(2), curses.color_pair(3) | curses.A_BOLD]
    keys = 0
    def show():
        status.erase()
        status.addstr(0, 0, f" keys {keys} ", curses.A_REVERSE)
        status.addstr(0, 20, "! quits", curses.color_pair(2))
        log.noutrefresh()
        status.noutrefresh()
        curses.doupdate()
    log.addstr(0, 0, "curses ready")
    show()
    while True:
        key = screen.getch()
        if key == ord("!"):
            return
        keys += 1
        log.addstr("\n")
        log.addstr(f"key {keys}: {chr(key) if 32 <= key < 127 else key}", styles[keys % len(styles)])
        log.addstr(" " + "-" * (keys % 30) + "|")
        show()

curses.wrapper(main)
print("curses done", flush=True)
time.sleep(1000)
"#;

#[test]
fn a_curses_tui_is_restored_cell_for_cell_and_left_to_the_screen_before_it() {
    let program = format!(
        "printf 'before curses\\n'; exec python3 -c {}",
        sh(CURSES_TUI)
    );
    let judged = Judged::start(Server::start(), &["bash", "-c", &program], "curses ready");
    judged.attach_and_drop("curses ready");
    // Thirty keys while away: the log scrolls under the header.
    let away: String = ('a'..='z').chain('A'..='D').collect();
    judged.tmux.send(&judged.stayed, &away);
    wait_text(&judged.tmux, &judged.stayed, "keys 30");
    let returned = judged.reattach("keys 30");
    // More lines scroll inside the region on both, from the restored state.
    judged.tmux.send(&judged.stayed, "0123456789");
    wait_text(&judged.tmux, &returned, "keys 40");
    wait_same(&judged.tmux, &judged.stayed, &returned);
    judged.tmux.send(&judged.stayed, "!");
    wait_text(&judged.tmux, &returned, "curses done");
    assert!(judged.tmux.text(&returned).contains("before curses"));
    wait_same(&judged.tmux, &judged.stayed, &returned);
}

#[test]
fn less_is_restored_cell_for_cell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("text");
    let text: String = (1..=500).map(|i| format!("row {i}\n")).collect();
    std::fs::write(&file, text).expect("write file");
    let file = file.to_string_lossy().into_owned();
    // Two pages down while away.
    reattach_matches(&["less", &file], "row 1", "  ", "row 50");
}

#[test]
fn top_is_restored_cell_for_cell() {
    // top refreshes every 5 s; the screens agree between refreshes.
    // 'i' (idle processes off) changes the screen while away.
    reattach_matches(&["top", "-d", "5"], "load average", "i", "load average");
}

#[test]
fn reattach_after_the_ring_wrapped_mid_escape_sequence_shows_a_clean_screen() {
    // 4 KiB of ring and ~200 KiB of output that is almost all escape
    // sequences (truecolour on every character, no newline): the ring's
    // oldest byte is in the middle of one. Nothing is printed in the last
    // column: a line that autowrap scrolls in gets the current background
    // in xterm (and keepsh's model) but the default one in tmux 3.3, which
    // would judge the program's own output, not the restore.
    let server = Server::start_with(Options {
        sessions: "scrollback_bytes = \"4KiB\"",
        ..Options::default()
    });
    let script = r#"
i=0
while [ $i -lt 3000 ]; do
  i=$((i+1))
  printf '\033[%d;%dH\033[38;2;%d;%d;%dm\033[48;2;1;2;3m#' $((i % 24 + 1)) $((i % 77 + 1)) $((i % 256)) 7 9
  printf '\033[38;5;%dmx\033[1;4mw\033[m' $((i % 256))
done
printf '\033[1;1Hwrapped-done'
exec sleep 1000
"#;
    let judged = Judged::start(server, &["bash", "-c", script], "wrapped-done");
    wait_until("the ring to wrap many times", DEADLINE, || {
        judged
            .server
            .session("alice", "judged")
            .is_some_and(|s| s["output_offset"].as_u64() > Some(64 * 1024))
    });
    judged.reattach("wrapped-done");
}

#[test]
fn history_lands_in_tmuxs_scrollback_in_order_once_with_the_screen_below() {
    let server = Server::start();
    let script = "seq -f 'hist %g' 1 300; printf 'screen top\\n'; exec sleep 1000";
    let out = server.run(
        "alice",
        &["new", "-d", "judged", "--", "sh", "-c", &sh(script)],
    );
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    wait_until("the output", DEADLINE, || {
        crate::harness::stdout(&server.run("alice", &["history", "judged"])).contains("screen top")
    });
    let tmux = Tmux::start();
    let pane = tmux.pane(&ssh_tt(&server, &["attach", "judged"]), 80, 24);
    wait_text(&tmux, &pane, "screen top");
    // The screen is drawn first; wait for the history behind it too.
    let all = poll(DEADLINE, || {
        let all = tmux.scrollback(&pane);
        all.contains("hist 1\n").then_some(all)
    });
    let all = all.unwrap_or_else(|| panic!("no history:\n{}", tmux.scrollback(&pane)));
    let numbered: Vec<u32> = all
        .lines()
        .filter_map(|l| l.strip_prefix("hist "))
        .map(|n| n.trim().parse().expect("a number"))
        .collect();
    assert_eq!(numbered, (1..=300).collect::<Vec<_>>(), "{all}");
    // The screen as a client attached all along shows it.
    let screen = tmux.text(&pane);
    let rows: Vec<&str> = screen.lines().collect();
    assert_eq!(rows.first(), Some(&"hist 279"), "{screen}");
    assert_eq!(rows.get(22), Some(&"screen top"), "{screen}");
}
