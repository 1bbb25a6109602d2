//! What a reattaching client is sent: a clean screen after the ring buffer
//! wrapped mid-sequence, byte-exact output from an offset, history as text
//! and raw bytes, history in the terminal's scrollback, the size of the
//! newest client. (Screen fidelity, judged by tmux, is in `fidelity.rs`.)

use std::time::Instant;

use crate::harness::{Client, DEADLINE, Options, Server, stdout, wait_until};

/// `script` as one word of the exec request (ssh joins its arguments with
/// spaces; keepsh splits them like a POSIX shell).
pub fn sh(script: &str) -> String {
    shell_words::quote(script).into_owned()
}

/// Waits until `client`'s screen shows `text`.
fn wait_screen(client: &Client, text: &str) {
    wait_until(&format!("{text:?} on the screen"), DEADLINE, || {
        client.terminal().screen().contents().contains(text)
    });
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
