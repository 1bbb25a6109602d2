//! How long sessions live: exited_retention, orphan_timeout, max_per_user,
//! and half-open connections found by keepalives.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{DEADLINE, Options, Server, block_on, russh_connect_to, stderr, wait_until};

#[test]
fn an_exited_session_is_removed_after_exited_retention() {
    let server = Server::start_with(Options {
        sessions: "exited_retention = \"1s\"",
        ..Default::default()
    });
    let script = "sh -c 'exit 2'";
    assert!(
        server
            .run("alice", &["new", "-d", "brief", "--", script])
            .status
            .success()
    );
    wait_until("the exited session to be removed", DEADLINE, || {
        server.session("alice", "brief").is_none()
    });
}

#[test]
fn an_orphaned_session_is_killed_after_orphan_timeout() {
    let server = Server::start_with(Options {
        sessions: "orphan_timeout = \"1s\"",
        ..Default::default()
    });
    assert!(
        server
            .run("alice", &["new", "-d", "lonely"])
            .status
            .success()
    );
    let mut client = server.tt("alice", &["new", "kept"]);
    client.send("echo attached-$((1+1))\n");
    client.wait_for("attached-2");
    wait_until("the orphaned session to be killed", DEADLINE, || {
        server.session("alice", "lonely").is_none()
    });
    // The attached one is untouched by the timeout.
    assert_eq!(
        server.session("alice", "kept").expect("kept")["state"],
        "attached"
    );
}

#[test]
fn max_per_user_is_enforced_with_a_clear_error() {
    let server = Server::start_with(Options {
        sessions: "max_per_user = 2",
        ..Default::default()
    });
    assert!(server.run("alice", &["new", "-d", "one"]).status.success());
    assert!(server.run("alice", &["new", "-d", "two"]).status.success());
    let out = server.run("alice", &["new", "-d", "three"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "keepsh: session limit reached (2 per user) (kill a session you no longer need)\n"
    );
    // The limit is per user.
    assert!(server.run("bob", &["new", "-d", "three"]).status.success());
}

/// A TCP proxy that can freeze: afterwards it neither reads nor writes but
/// keeps both sockets open, like a phone that vanished without closing TCP.
struct FreezingProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    fn start(target: u16) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        std::thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let server = TcpStream::connect(("127.0.0.1", target)).expect("connect");
            for (mut from, mut to) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        if flag.load(Ordering::SeqCst) {
                            // Hold the sockets open for the rest of the test.
                            std::thread::park();
                            continue;
                        }
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) if !flag.load(Ordering::SeqCst) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
        FreezingProxy { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_half_open_connection_is_detected_by_keepalives_and_never_blocks_a_reattach() {
    let server = Server::start_with(Options {
        server: "keepalive_interval = \"1s\"\nkeepalive_max = 2",
        ..Default::default()
    });
    let proxy = FreezingProxy::start(server.port);
    let mut cmd = server.ssh_via("alice", proxy.port);
    cmd.args(["-tt", "new", "phone"]);
    let mut phone = crate::harness::Client::spawn(cmd);
    phone.send("echo on-the-phone-$((3*3))\n");
    phone.wait_for("on-the-phone-9");
    proxy.freeze();
    // 8 MB of output while the phone is gone: far beyond its SSH window
    // (2 MiB) and its attachment queue, so its writer blocks. The session and
    // the other client must not stall.
    let mut desktop = server.tt("alice", &["attach", "phone"]);
    desktop.send("head -c 8000000 /dev/zero | tr -c x x | fold -w 100; echo desk-$((2*2))\n");
    desktop.wait_for("desk-4");
    // The frozen client is dropped by keepalives (1 s × 2) and detached.
    wait_until(
        "the frozen client to be detached",
        Duration::from_secs(15),
        || {
            server
                .session("alice", "phone")
                .is_some_and(|s| s["clients"] == 1)
        },
    );
    desktop.send("echo still-$((5+5))\n");
    desktop.wait_for("still-10");
}

#[test]
fn a_vanished_client_is_noticed_while_output_fills_its_window() {
    // Keepalives of 1 s × 2, so TCP_USER_TIMEOUT 3 s. The client's SSH
    // window (64 MiB) lets the server send more than the kernel's buffers
    // on the frozen path hold: its write waits, and while it waits russh's
    // keepalive timer cannot fire; the unacknowledged output (a zero
    // window) tells that the client is gone. Both end the connection 3 s
    // after the client's last sign of life, so when russh's loop happens
    // to be between two writes at that moment (about one run in eight),
    // the keepalive says it first: either line is the bound kept.
    let server = Server::start_with(Options {
        server: "keepalive_interval = \"1s\"\nkeepalive_max = 2",
        ..Default::default()
    });
    let proxy = FreezingProxy::start(server.port);
    block_on(async {
        let config = russh::client::Config {
            window_size: 64 << 20,
            ..Default::default()
        };
        let handle = russh_connect_to(proxy.port, config).await;
        let handle = server.russh_login(handle, "alice").await;
        let channel = handle.channel_open_session().await.expect("channel");
        channel
            .request_pty(false, "xterm", 80, 24, 0, 0, &[])
            .await
            .expect("pty-req");
        channel
            .exec(false, "new phone -- sh -c 'while :; do seq 1 100000; done'")
            .await
            .expect("exec");
        // Attached, not only started: a new session is `orphaned` until its
        // first client is bound, and the program may print 1 MiB before.
        wait_until("output to flow to the attached client", DEADLINE, || {
            server
                .session("alice", "phone")
                .is_some_and(|s| s["clients"] == 1 && s["output_offset"].as_u64() > Some(1 << 20))
        });
        let frozen = std::time::Instant::now();
        proxy.freeze();
        server.wait_state("alice", "phone", "orphaned");
        // 3 s, and the `list` that saw it.
        let noticed = frozen.elapsed();
        assert!(
            noticed < Duration::from_secs(8),
            "noticed after {noticed:?}"
        );
        let log = server.log();
        assert!(
            log.contains("client stopped acknowledging output; closed")
                || log.contains("client stopped answering keepalives; closed"),
            "{log}"
        );
        drop(channel);
    });
}

#[test]
fn an_attach_detaches_a_client_that_vanished_at_once_and_keeps_live_ones() {
    // Keepalives too slow to matter here: only the probe at attach can
    // find the vanished phone in time.
    let server = Server::start_with(Options {
        server: "keepalive_interval = \"60s\"",
        ..Default::default()
    });
    let proxy = FreezingProxy::start(server.port);
    let mut cmd = server.ssh_via("alice", proxy.port);
    cmd.args(["-tt", "new", "work"]);
    let mut phone = crate::harness::Client::spawn(cmd);
    phone.send("echo on-the-phone-$((3*3))\n");
    phone.wait_for("on-the-phone-9");
    let mut tablet = server.tt("alice", &["attach", "work"]);
    tablet.wait_for("on-the-phone-9");
    proxy.freeze();
    let mut desk = server.tt("alice", &["attach", "work"]);
    desk.send("echo desk-$((2*2))\n");
    desk.wait_for("desk-4");
    // The phone is gone within the probe's 3 s; the tablet answered.
    wait_until("the vanished phone to be detached", DEADLINE, || {
        server
            .session("alice", "work")
            .is_some_and(|s| s["clients"] == 2)
    });
    assert!(
        server
            .log()
            .contains("a client on another connection did not answer a keepalive; detached it"),
        "{}",
        server.log()
    );
    tablet.send("echo tablet-$((5+5))\n");
    tablet.wait_for("tablet-10");
}

#[test]
fn a_client_pasting_into_a_program_that_never_reads_can_still_drop_off() {
    let server = Server::start();
    // Raw mode and no reads: input piles up until the PTY refuses more.
    let script = "sh -c 'stty raw -echo; echo ready; sleep 100000'";
    assert!(
        server
            .run("alice", &["new", "-d", "deaf", "--", script])
            .status
            .success()
    );
    let mut client = server.stream("alice", &["attach", "deaf"]);
    client.wait_for("ready");
    client.feed(vec![b'x'; 16 << 20]);
    wait_until("input to back up", DEADLINE, || {
        server.log().contains("has not read its input")
    });
    client.kill();
    server.wait_state("alice", "deaf", "orphaned");
    // The session still answers a new client.
    let mut again = server.stream("alice", &["attach", "deaf"]);
    again.wait_for("ready");
}
