//! `send`: typing into a session without attaching to it, text as given
//! and keys named as tmux's `send-keys` names them, encoded for the
//! session's modes at that moment; refused once the program has exited.

use crate::harness::{DEADLINE, Server, poll, stderr, stdout};

/// Reads raw keys and prints each read as hex (`got 1b5b41`); `a` sets
/// application cursor keys (DECCKM) instead.
const KEY_READER: &str = r#"
import os, tty
tty.setraw(0)
os.write(1, b"ready\r\n")
while True:
    data = os.read(0, 64)
    if data == b"a":
        os.write(1, b"\x1b[?1happ-cursor\r\n")
    else:
        os.write(1, b"got " + data.hex().encode() + b"\r\n")
"#;

/// Waits until `history NAME` shows `text`.
fn wait_history(server: &Server, name: &str, text: &str) {
    let seen = poll(DEADLINE, || {
        let out = server.run("alice", &["history", name]);
        stdout(&out).contains(text).then_some(())
    });
    assert!(
        seen.is_some(),
        "no {text:?} in:\n{}",
        stdout(&server.run("alice", &["history", name]))
    );
}

/// `send ARGS...` as alice; asserts it succeeded.
fn send(server: &Server, args: &[&str]) {
    let out = server.run("alice", &[&["send"], args].concat());
    assert!(out.status.success(), "send {args:?}: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn keys_reach_a_program_as_its_terminal_would_send_them_for_its_modes() {
    let server = Server::start();
    let program = shell_words::quote(KEY_READER).into_owned();
    let out = server.run(
        "alice",
        &["new", "-d", "keys", "--", "python3", "-c", &program],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_history(&server, "keys", "ready");
    for (keys, got) in [
        (&["Up"][..], "got 1b5b41"),
        (&["C-c"], "got 03"),
        (&["M-x"], "got 1b78"),
        (&["F5"], "got 1b5b31357e"),
        (&["Enter"], "got 0d"),
    ] {
        send(&server, &[&["--keys", "keys"], keys].concat());
        wait_history(&server, "keys", got);
    }
    // The program sets application cursor keys: Up is now ESC O A.
    send(&server, &["--keys", "keys", "a"]);
    wait_history(&server, "keys", "app-cursor");
    send(&server, &["--keys", "keys", "Up"]);
    wait_history(&server, "keys", "got 1b4f41");
    // Text exactly as given, words joined by one space, and Enter.
    send(&server, &["keys", "--enter", "--", "-x", "é"]);
    wait_history(&server, "keys", "got 2d7820c3a90d");
}

#[test]
fn text_typed_into_a_shell_runs_and_an_exited_session_refuses_it() {
    let server = Server::start();
    assert!(server.run("alice", &["new", "-d", "sh"]).status.success());
    send(&server, &["sh", "--enter", "echo", "sent-$((2+3))"]);
    wait_history(&server, "sh", "sent-5");
    // paramiko too, as a script on a phone shortcut would.
    let out = server.paramiko(
        "alice",
        &["alice"],
        &["exec", "send sh --enter echo from-paramiko-$((4+4))"],
    );
    assert!(stdout(&out).contains("status=0"), "{}", stdout(&out));
    wait_history(&server, "sh", "from-paramiko-8");

    let out = server.run("alice", &["new", "-d", "done", "--", "true"]);
    assert!(out.status.success());
    server.wait_state("alice", "done", "exited");
    let out = server.run("alice", &["send", "done", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "keepsh: session 'done' has exited: nothing reads its input (start a new one with 'new')\n"
    );
    let out = server.run("alice", &["send", "nothing-here", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("keepsh: no session"),
        "{}",
        stderr(&out)
    );
}
