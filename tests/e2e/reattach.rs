//! Detach and reattach: orphaned sessions keep running; a reattach replays
//! what was missed, then live output, with no gap and no duplicate.

use crate::harness::{
    ALICE_PASSWORD, DEADLINE, Options, Server, block_on, numbers, stdout, wait_until,
};

#[test]
fn a_client_killed_mid_output_reattaches_to_every_line_exactly_once() {
    // History lines enough for all 3000: the terminal's scrollback then
    // holds every line above the redrawn screen.
    let server = Server::start_with(Options {
        sessions: "scrollback_lines = 5000",
        ..Options::default()
    });
    // 3000 numbered lines, paused every 50, so output is still running when
    // the first client dies and when the second one attaches.
    let producer = "sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo n=$i; \
                    case $i in *50|*00) sleep 0.05;; esac; done; echo ALL-DONE; sleep 1000'";
    let out = server.run("alice", &["new", "-d", "counter", "--", producer]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));

    let mut first = server.tt("alice", &["attach", "counter"]);
    first.wait_for("n=400\r\n");
    first.kill();
    let orphaned = server.wait_state("alice", "counter", "orphaned");
    assert_eq!(orphaned["clients"], 0);
    let before = orphaned["output_offset"].as_u64().expect("offset");

    let mut second = server.tt("alice", &["attach", "counter"]);
    // A script attached without a PTY at the same time gets the raw bytes.
    let mut script = server.stream("alice", &["attach", "counter"]);
    second.wait_for("ALL-DONE");
    let after = server.session("alice", "counter").expect("session")["output_offset"]
        .as_u64()
        .expect("offset");
    assert!(
        after > before,
        "the session stopped producing while orphaned"
    );
    // What the user sees: history lines in the terminal's scrollback, the
    // screen, then live output.
    let terminal = second.terminal();
    assert_eq!(
        numbers(&terminal.all_text()),
        (1..=3000).collect::<Vec<_>>(),
        "gap or duplicate in the terminal"
    );
    let output = script.wait_for("ALL-DONE");
    assert_eq!(
        numbers(&output),
        (1..=3000).collect::<Vec<_>>(),
        "gap or duplicate in the byte stream"
    );
}

#[test]
fn list_shows_attached_orphaned_and_exited_states() {
    let server = Server::start();
    let script = "sh -c 'read line; echo bye; exit 4'";
    assert!(
        server
            .run("alice", &["new", "-d", "job", "--", script])
            .status
            .success()
    );
    let s = server.wait_state("alice", "job", "orphaned");
    assert_eq!(s["exit_code"], serde_json::Value::Null);

    let mut client = server.tt("alice", &["attach", "job"]);
    let s = server.wait_state("alice", "job", "attached");
    assert_eq!(s["clients"], 1);
    client.kill();
    server.wait_state("alice", "job", "orphaned");

    let mut client = server.tt("alice", &["attach", "job"]);
    server.wait_state("alice", "job", "attached");
    client.send("go\n");
    client.wait_for("bye");
    assert_eq!(
        client.wait_exit(),
        4,
        "exit status of the program reaches the client"
    );
    let s = server.wait_state("alice", "job", "exited");
    assert_eq!(s["exit_code"], 4);
    assert_eq!(s["clients"], 0);
    // The table shows it too.
    let table = stdout(&server.run("alice", &["list"]));
    assert!(table.contains("exited(4)"), "{table}");
}

#[test]
fn two_clients_see_the_same_output_and_either_can_type() {
    let server = Server::start();
    assert!(
        server
            .run("alice", &["new", "-d", "shared"])
            .status
            .success()
    );
    let mut a = server.tt("alice", &["attach", "shared"]);
    let mut b = server.tt("alice", &["attach", "shared"]);
    let s = server.wait_state("alice", "shared", "attached");
    wait_until("two clients", DEADLINE, || {
        server
            .session("alice", "shared")
            .is_some_and(|s| s["clients"] == 2)
    });
    drop(s);
    a.send("echo from-$((1+1))-a\n");
    a.wait_for("from-2-a");
    b.wait_for("from-2-a");
    b.send("echo from-$((2+1))-b\n");
    a.wait_for("from-3-b");
    b.wait_for("from-3-b");
    // One leaving does not disturb the other.
    a.kill();
    wait_until("one client left", DEADLINE, || {
        server
            .session("alice", "shared")
            .is_some_and(|s| s["clients"] == 1)
    });
    b.send("echo still-$((3+1))\n");
    b.wait_for("still-4");
}

#[test]
fn attach_without_a_ref_picks_the_most_recently_detached_session() {
    let server = Server::start();
    for name in ["a", "b"] {
        let cmd = format!("sh -c 'echo I-am-{name}; sleep 1000'");
        assert!(
            server
                .run("alice", &["new", "-d", name, "--", &cmd])
                .status
                .success()
        );
    }
    let mut client = server.tt("alice", &["attach", "a"]);
    client.wait_for("I-am-a");
    client.kill();
    server.wait_state("alice", "a", "orphaned");
    let mut again = server.tt("alice", &["attach"]);
    let out = again.wait_for("I-am-a");
    assert!(!out.contains("I-am-b"), "{out}");
    server.wait_state("alice", "a", "attached");
}

#[test]
fn attach_without_a_pty_is_a_byte_stream_with_input() {
    let server = Server::start();
    let echo = "sh -c 'echo ready; while read l; do echo got:$l; done'";
    assert!(
        server
            .run("alice", &["new", "-d", "pipe", "--", echo])
            .status
            .success()
    );
    let mut client = server.stream("alice", &["attach", "pipe"]);
    client.wait_for("ready");
    client.send("hello\n");
    client.wait_for("got:hello");
}

#[test]
fn attach_from_an_offset_replays_exactly_the_bytes_after_it() {
    let server = Server::start();
    let script = "sh -c 'printf abcdefghij; sleep 1000'";
    assert!(
        server
            .run("alice", &["new", "-d", "bytes", "--", script])
            .status
            .success()
    );
    wait_until("10 bytes of output", DEADLINE, || {
        server
            .session("alice", "bytes")
            .is_some_and(|s| s["output_offset"] == 10)
    });
    let mut client = server.stream("alice", &["attach", "--from", "4", "bytes"]);
    let out = client.wait_for("ghij");
    assert_eq!(out, "efghij");
    let refused = server.run("alice", &["attach", "--from", "99", "bytes"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = crate::harness::stderr(&refused);
    assert!(
        err.starts_with("keepsh: offset 99 is outside the buffer"),
        "{err}"
    );
}

#[test]
fn the_pty_size_follows_the_most_recently_active_client() {
    let server = Server::start();
    assert!(
        server
            .run("alice", &["new", "-d", "sized"])
            .status
            .success()
    );
    let size = |server: &Server| {
        let s = server.session("alice", "sized").expect("session");
        (
            s["cols"].as_u64().expect("cols"),
            s["rows"].as_u64().expect("rows"),
        )
    };
    block_on(async {
        let connect = |cols: u32, rows: u32| {
            let server = &server;
            async move {
                let mut handle = server.russh_connect().await;
                assert!(
                    handle
                        .authenticate_password("alice", ALICE_PASSWORD)
                        .await
                        .expect("auth")
                        .success()
                );
                let channel = handle.channel_open_session().await.expect("channel");
                channel
                    .request_pty(true, "xterm", cols, rows, 0, 0, &[])
                    .await
                    .expect("pty-req");
                channel.exec(true, "attach sized").await.expect("exec");
                (handle, channel)
            }
        };
        let (_phone_conn, phone) = connect(50, 20).await;
        wait_until("phone size", DEADLINE, || size(&server) == (50, 20));
        let (desktop_conn, desktop) = connect(200, 60).await;
        wait_until("desktop size (last attached)", DEADLINE, || {
            size(&server) == (200, 60)
        });
        phone.data(&b"true\n"[..]).await.expect("type");
        wait_until("phone size (last typed)", DEADLINE, || {
            size(&server) == (50, 20)
        });
        desktop
            .window_change(180, 50, 0, 0)
            .await
            .expect("window-change");
        desktop.data(&b"true\n"[..]).await.expect("type");
        wait_until("desktop's new size", DEADLINE, || {
            size(&server) == (180, 50)
        });
        drop(desktop);
        desktop_conn
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await
            .expect("disconnect");
        wait_until("back to the phone's size", DEADLINE, || {
            size(&server) == (50, 20)
        });
        drop(phone);
    });
}

#[test]
fn the_session_keeps_reading_while_nobody_is_attached() {
    let server = Server::start_with(crate::harness::Options {
        sessions: "scrollback_bytes = \"64KiB\"",
        ..Default::default()
    });
    // 1 MiB of output with no client: the program must not block on a full PTY.
    let script = "sh -c 'head -c 1048576 /dev/zero | tr -c x x; echo; echo FINISHED; sleep 1000'";
    assert!(
        server
            .run("alice", &["new", "-d", "flood", "--", script])
            .status
            .success()
    );
    wait_until("1 MiB produced", DEADLINE, || {
        server
            .session("alice", "flood")
            .is_some_and(|s| s["output_offset"].as_u64().is_some_and(|o| o > 1_048_576))
    });
    let mut client = server.stream("alice", &["attach", "flood"]);
    let out = client.wait_for("FINISHED");
    // Only the ring buffer's 64 KiB come back, starting at a line boundary.
    assert!(out.len() <= 64 * 1024, "replayed {} bytes", out.len());
}

#[test]
fn the_tilde_dot_escape_detaches_and_the_session_carries_on() {
    let server = Server::start();
    let mut client = server.tt("alice", &["new", "escape"]);
    client.send("echo before-$((2*3))\n");
    client.wait_for("before-6");
    // OpenSSH's escape: "~." at the start of a line closes the connection.
    client.send("\n~.");
    client.wait_exit();
    server.wait_state("alice", "escape", "orphaned");
    let mut again = server.tt("alice", &["attach", "escape"]);
    again.wait_for("before-6");
    again.send("echo after-$((3*3))\n");
    again.wait_for("after-9");
}

#[test]
fn attach_d_detaches_the_other_clients_and_tells_them_why() {
    let server = Server::start();
    assert!(server.run("alice", &["new", "-d", "work"]).status.success());
    // Two clients on the session: OpenSSH on two connections.
    let mut phone = server.tt("alice", &["attach", "work"]);
    phone.send("echo phone-$((1+1))\n");
    phone.wait_for("phone-2");
    let mut tablet = server.tt("alice", &["attach", "work"]);
    tablet.wait_for("phone-2");
    wait_until("two clients", DEADLINE, || {
        server
            .session("alice", "work")
            .is_some_and(|s| s["clients"] == 2)
    });
    let mut desk = server.tt("alice", &["attach", "-d", "work"]);
    for other in [&mut phone, &mut tablet] {
        assert_eq!(other.wait_exit(), 0, "{}", other.errors());
        assert!(
            other.errors().contains(
                "keepsh: detached from session work: another client attached with -d \
                 (attach again to take it back)"
            ),
            "{}",
            other.errors()
        );
    }
    desk.send("echo desk-$((3+3))\n");
    desk.wait_for("desk-6");
    assert_eq!(server.session("alice", "work").expect("work")["clients"], 1);
}

#[test]
fn a_terminal_attaching_after_output_came_unwatched_is_told_what_happened_above_the_screen() {
    let server = Server::start();
    let start = |name: &str, script: &str| {
        let quoted = shell_words::quote(script).into_owned();
        let out = server.run("alice", &["new", "-d", name, "--", "sh", "-c", &quoted]);
        assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    };
    start("away", "echo one; echo two; printf '\\a'; exec sleep 1000");
    start("quiet", "echo hi; exec sleep 1000");
    start("ended", "echo bye; exit 7");
    wait_until("output while nobody watched", DEADLINE, || {
        server
            .session("alice", "away")
            .is_some_and(|s| s["output_offset"].as_u64() >= Some(11))
    });
    let mut client = server.tt("alice", &["attach", "away"]);
    client.wait_for("two");
    let line = "of output, 2 lines, 1 bell";
    let output = client.wait_for(line);
    assert!(
        output.contains("keepsh: while you were away ("),
        "{output:?}"
    );
    // In the scrollback, above the redrawn screen.
    let terminal = client.terminal();
    assert!(terminal.all_text().contains(line));
    assert!(!terminal.screen().contents().contains(line));
    // Attached since: a second client is told nothing.
    let mut second = server.tt("alice", &["attach", "away"]);
    second.wait_for("two");
    assert!(!second.output().contains("while you were away"));

    let mut quiet = server.tt("alice", &["attach", "--quiet", "quiet"]);
    quiet.wait_for("hi");
    assert!(!quiet.output().contains("while you were away"));

    server.wait_state("alice", "ended", "exited");
    let mut ended = server.tt("alice", &["attach", "ended"]);
    ended.wait_for("the program exited with code 7");
}
