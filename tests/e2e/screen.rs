//! Screen fidelity: a client that reattaches sees exactly what a client that
//! stayed attached sees — every cell with its colours, the cursor, the
//! alternate screen and the input modes — for real full-screen programs and
//! a scripted one. Both are rendered with a terminal emulator in the test.

use std::time::Instant;

use crate::harness::{Client, DEADLINE, Options, Server, poll, stdout, wait_until};

/// Waits until `stayed` and `returned` render the same state; on a timeout,
/// fails showing both.
fn wait_same(stayed: &Client, returned: &Client) {
    let states = || (stayed.terminal().state(), returned.terminal().state());
    let same = || {
        let (a, b) = states();
        (a == b).then_some(())
    };
    if poll(DEADLINE, same).is_none() {
        let (a, b) = states();
        panic!("screens differ.\n--- attached all along:\n{a}\n--- reattached:\n{b}");
    }
}

/// `script` as one word of the exec request (ssh joins its arguments with
/// spaces; keepsh splits them like a POSIX shell).
fn sh(script: &str) -> String {
    shell_words::quote(script).into_owned()
}

/// Waits until `client`'s screen shows `text`.
fn wait_screen(client: &Client, text: &str) {
    wait_until(&format!("{text:?} on the screen"), DEADLINE, || {
        client.terminal().screen().contents().contains(text)
    });
}

/// The scenario every program goes through: `stayed` created the session
/// running `program` and stays; another client attaches, drops, the
/// program changes the screen (`while_away`, typed into `stayed`), and a
/// third client reattaches: it must render what `stayed` renders.
fn reattach_matches(program: &[&str], ready: &str, while_away: &str, changed: &str) {
    let server = Server::start();
    let quoted: Vec<String> = program.iter().map(|arg| sh(arg)).collect();
    let mut args = vec!["new", "fidelity", "--"];
    args.extend(quoted.iter().map(String::as_str));
    let mut stayed = server.tt("alice", &args);
    wait_screen(&stayed, ready);

    let mut dropped = server.tt("alice", &["attach", "fidelity"]);
    wait_screen(&dropped, ready);
    dropped.kill();
    wait_until("the dropped client to leave", DEADLINE, || {
        server
            .session("alice", "fidelity")
            .is_some_and(|s| s["clients"] == 1)
    });

    stayed.send(while_away);
    wait_screen(&stayed, changed);
    let returned = server.tt("alice", &["attach", "fidelity"]);
    wait_screen(&returned, changed);
    wait_same(&stayed, &returned);
}

/// A full-screen program written for the test: alternate screen, a title,
/// colours, a scroll region under a fixed header, and bracketed paste,
/// application cursor keys and keypad, SGR mouse reporting and focus
/// events. Like a real TUI it repaints on SIGWINCH (header, status line and
/// scroll region, which the screen model cannot carry; not the lines).
const TUI: &str = r#"
draw() {
  printf '\033[H\033[1;37;44m header: scroll region below \033[m'
  printf '\033[24;1H\033[7m status line \033[m\033[2;23r\033[23;1H'
}
trap draw WINCH
printf '\033]2;scripted tui\007\033[?2004h\033[?1h\033=\033[?1002h\033[?1006h\033[?1004h'
printf '\033[?1049h\033[H\033[2J'
draw
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
    let lines: String = (1..=40).map(|i| format!("away-{i}\n")).collect();
    reattach_matches(&["bash", "-c", TUI], "ready", &lines, "away-40");
}

#[test]
fn a_scripted_tui_keeps_its_modes_and_title_after_reattach() {
    let server = Server::start();
    let stayed = server.tt("alice", &["new", "tui", "--", "bash", "-c", &sh(TUI)]);
    wait_screen(&stayed, "ready");
    let returned = server.tt("alice", &["attach", "tui"]);
    wait_screen(&returned, "ready");
    let screen = returned.terminal();
    let screen = screen.screen();
    assert!(screen.alternate_screen());
    assert!(screen.bracketed_paste());
    assert!(screen.application_cursor());
    assert!(screen.application_keypad());
    assert_eq!(
        screen.mouse_protocol_mode(),
        vt100::MouseProtocolMode::ButtonMotion
    );
    assert_eq!(
        screen.mouse_protocol_encoding(),
        vt100::MouseProtocolEncoding::Sgr
    );
    // What vt100 does not track, seen in the bytes.
    let bytes = String::from_utf8_lossy(&returned.bytes()).into_owned();
    assert!(bytes.contains("\x1b]2;scripted tui\x07"), "title restored");
    assert!(bytes.contains("\x1b[?1004h"), "focus events restored");
}

fn have(program: &str) -> bool {
    std::process::Command::new("sh")
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
    let vim = [
        program,
        "-u",
        "NONE",
        "-i",
        "NONE",
        "-N",
        "-c",
        "syntax on",
        "-c",
        "set number mouse=a",
        &file,
    ];
    reattach_matches(&vim, "line 1", "Gotyped while away\x1b", "typed while away");
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
    // top refreshes every second; the screens agree between refreshes.
    // 'i' (idle processes off) changes the screen while away.
    reattach_matches(&["top", "-d", "1"], "load average", "i", "load average");
}

#[test]
fn reattach_after_the_ring_wrapped_mid_escape_sequence_shows_a_clean_screen() {
    // 4 KiB of ring and ~200 KiB of output that is almost all escape
    // sequences (truecolour on every character, no newline): the ring's
    // oldest byte is in the middle of one.
    let server = Server::start_with(Options {
        sessions: "scrollback_bytes = \"4KiB\"",
        ..Options::default()
    });
    let script = r#"
i=0
while [ $i -lt 3000 ]; do
  i=$((i+1))
  printf '\033[%d;%dH\033[38;2;%d;%d;%dm\033[48;2;1;2;3m#' $((i % 24 + 1)) $((i % 80 + 1)) $((i % 256)) 7 9
  printf '\033[38;5;%dmx\033[1;4mw\033[m' $((i % 256))
done
printf '\033[1;1Hwrapped-done'
exec sleep 1000
"#;
    let stayed = server.tt("alice", &["new", "wrap", "--", "bash", "-c", &sh(script)]);
    wait_screen(&stayed, "wrapped-done");
    wait_until("the ring to wrap many times", DEADLINE, || {
        server
            .session("alice", "wrap")
            .is_some_and(|s| s["output_offset"].as_u64() > Some(64 * 1024))
    });
    let returned = server.tt("alice", &["attach", "wrap"]);
    wait_screen(&returned, "wrapped-done");
    wait_same(&stayed, &returned);
}

#[test]
fn attach_from_an_offset_is_byte_exact_even_with_a_pty_and_says_where_the_buffer_starts() {
    let server = Server::start_with(Options {
        sessions: "scrollback_bytes = \"4KiB\"",
        ..Options::default()
    });
    // 10,000 bytes: "0123456789" 1000 times, raw, with an escape in each.
    let script = "i=0; while [ $i -lt 1000 ]; do i=$((i+1)); printf '0123\\033[1m45'; done; \
                  stty raw -echo; exec sleep 1000";
    assert!(
        server
            .run(
                "alice",
                &["new", "-d", "raw", "--", "bash", "-c", &sh(script)]
            )
            .status
            .success()
    );
    wait_until("10000 bytes of output", DEADLINE, || {
        server
            .session("alice", "raw")
            .is_some_and(|s| s["output_offset"] == 10_000)
    });
    let unit = "0123\x1b[1m45";
    // 9000 is inside the 4 KiB ring: exactly the 1000 bytes after it.
    let mut stream = server.stream("alice", &["attach", "--from", "9000", "raw"]);
    wait_until("1000 bytes", DEADLINE, || stream.bytes().len() >= 1000);
    assert_eq!(stream.output(), unit.repeat(100));
    // With a PTY too: the bytes, not a redraw.
    let mut tt = server.tt("alice", &["attach", "--from", "9990", "raw"]);
    wait_until("10 bytes", DEADLINE, || tt.bytes().len() >= 10);
    assert_eq!(tt.output(), unit);
    stream.kill();
    tt.kill();
    // 10 is long gone: a clear error naming the oldest offset.
    let refused = server.run("alice", &["attach", "--from", "10", "raw"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = crate::harness::stderr(&refused);
    assert!(
        err.contains("offset 10 is outside the buffer: it holds output from offset 5904 to 10000")
            && err.contains("use --from 5904"),
        "{err}"
    );
}

#[test]
fn history_prints_the_text_lines_and_history_raw_the_exact_bytes() {
    let server = Server::start();
    let script = "printf '\\033[1;32mgreen\\033[m\\n'; seq -f 'line %g' 1 100; \
                  printf 'last\\033[K'; exec sleep 1000";
    assert!(
        server
            .run(
                "alice",
                &["new", "-d", "hist", "--", "bash", "-c", &sh(script)]
            )
            .status
            .success()
    );
    wait_until("all output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "--raw", "hist"])).ends_with("last\x1b[K")
    });
    // Text: every line once, in order, without escapes, screen included.
    let text = stdout(&server.run("alice", &["history", "hist"]));
    let mut want = String::from("green\n");
    for i in 1..=100 {
        want.push_str(&format!("line {i}\n"));
    }
    want.push_str("last\n");
    assert_eq!(text, want);
    // Raw: the PTY's bytes (the line discipline turned \n into \r\n).
    let raw = server.run("alice", &["history", "--raw", "hist"]);
    let mut want = b"\x1b[1;32mgreen\x1b[m\r\n".to_vec();
    for i in 1..=100 {
        want.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    want.extend_from_slice(b"last\x1b[K");
    assert_eq!(raw.stdout, want);
    // Unknown session: the usual one-line error.
    let missing = server.run("alice", &["history", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(crate::harness::stderr(&missing).starts_with("keepsh: no session"));
}

#[test]
fn the_first_screen_of_a_reattach_has_the_history_in_the_scrollback() {
    let server = Server::start();
    let script = "seq -f 'hist %g' 1 300; exec sleep 1000";
    assert!(
        server
            .run(
                "alice",
                &["new", "-d", "lines", "--", "bash", "-c", &sh(script)]
            )
            .status
            .success()
    );
    wait_until("all output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "lines"])).contains("hist 300")
    });
    let client = server.tt("alice", &["attach", "lines"]);
    wait_screen(&client, "hist 300");
    let text = client.terminal().all_text();
    let seen = crate::harness::numbers(&text.replace("hist ", "n="));
    assert_eq!(seen, (1..=300).collect::<Vec<_>>());
}

#[test]
fn a_client_of_another_size_resizes_the_session_and_the_program_redraws() {
    let server = Server::start();
    // Prints its size at start and on every SIGWINCH.
    let script = r#"
show() { printf '\033[H\033[2Jsize %s\n' "$(stty size)"; }
trap show WINCH
show
while :; do read -r line; done
"#;
    let quoted = sh(script);
    let out = server.run(
        "alice",
        &["new", "-d", "sized", "--", "bash", "-c", &quoted],
    );
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    crate::harness::block_on(async {
        let handle = server.russh_key("alice").await;
        let mut channel = handle.channel_open_session().await.expect("channel");
        channel
            .request_pty(false, "xterm", 100, 30, 0, 0, &[])
            .await
            .expect("pty-req");
        channel.exec(false, "attach sized").await.expect("exec");
        let mut terminal = crate::harness::Terminal::new(100, 30);
        let start = Instant::now();
        // bash runs the trap once `read` returns: type a line.
        let mut typed = false;
        while !terminal.screen().contents().contains("size 30 100") {
            assert!(
                start.elapsed() < DEADLINE,
                "no redraw at 100x30:\n{}",
                terminal.screen().contents()
            );
            match tokio::time::timeout(std::time::Duration::from_millis(200), channel.wait()).await
            {
                Ok(Some(russh::ChannelMsg::Data { data })) => terminal.process(&data),
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => panic!("channel closed"),
            }
            if !typed && terminal.screen().contents().contains("size 24 80") {
                channel.data(&b"\n"[..]).await.expect("type");
                typed = true;
            }
        }
    });
    let session = server.session("alice", "sized").expect("session");
    assert_eq!(
        (session["cols"].as_u64(), session["rows"].as_u64()),
        (Some(100), Some(30))
    );
}
