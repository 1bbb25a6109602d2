//! Logging in: keys, passwords, refusals, attempt limits, login grace time.

use std::io::Read;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::{
    ALICE_PASSWORD, DEADLINE, Server, block_on, poll, run_with_deadline, stderr, stdout, wait_until,
};

#[test]
fn key_login_with_openssh_runs_a_command() {
    let server = Server::start();
    let out = server.run("alice", &["version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("keepsh "), "{}", stdout(&out));
}

#[test]
fn a_key_login_as_another_user_is_refused_and_the_server_carries_on() {
    let server = Server::start();
    // mallory's key is configured for nobody; alice's key is not bob's.
    let out = run_with_deadline(
        {
            let mut cmd = server.ssh_as("alice", "mallory");
            cmd.arg("version");
            cmd
        },
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(255), "unknown key accepted");
    let out = run_with_deadline(
        {
            let mut cmd = server.ssh_as("bob", "alice");
            cmd.arg("version");
            cmd
        },
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(255), "alice's key accepted for bob");
    assert!(server.run("bob", &["version"]).status.success());
}

#[test]
fn password_login_with_openssh_works_and_a_wrong_password_is_refused() {
    let server = Server::start();
    let askpass = |password: &str| {
        let script = server
            .dir
            .path()
            .join(format!("askpass-{}", password.len()));
        std::fs::write(&script, format!("#!/bin/sh\necho '{password}'\n")).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let mut cmd = server.ssh_with("alice", "alice", false);
        cmd.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
            "version",
        ])
        .env("SSH_ASKPASS", &script)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
        run_with_deadline(cmd, DEADLINE)
    };
    let ok = askpass(ALICE_PASSWORD);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = askpass("not the password");
    assert_eq!(wrong.status.code(), Some(255));
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn password_login_with_russh_and_failed_attempts_are_delayed() {
    let server = Server::start();
    block_on(async {
        let mut handle = server.russh_connect().await;
        let started = Instant::now();
        let wrong = handle
            .authenticate_password("alice", "wrong")
            .await
            .expect("auth exchange");
        assert!(!wrong.success());
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "a failed attempt answered after {:?}",
            started.elapsed()
        );
        let right = handle
            .authenticate_password("alice", ALICE_PASSWORD)
            .await
            .expect("auth exchange");
        assert!(right.success());
        // bob has no password: his login by password fails like a wrong one.
        let mut other = server.russh_connect().await;
        let bob = other
            .authenticate_password("bob", ALICE_PASSWORD)
            .await
            .expect("auth exchange");
        assert!(!bob.success());
    });
}

#[test]
fn max_auth_attempts_closes_the_connection() {
    // The test server allows 3 attempts.
    let server = Server::start();
    block_on(async {
        let mut handle = server.russh_connect().await;
        let mut answered = 0;
        for _ in 0..6 {
            match handle.authenticate_password("alice", "wrong").await {
                Ok(result) if !result.success() => answered += 1,
                Ok(_) => panic!("wrong password accepted"),
                Err(_) => break, // disconnected
            }
            if handle.is_closed() {
                break;
            }
        }
        // Three refusals; the fourth request is answered by a disconnect.
        assert!(answered <= 4, "{answered} attempts answered");
        let last = handle.authenticate_password("alice", ALICE_PASSWORD).await;
        assert!(
            last.is_err() || handle.is_closed(),
            "the connection stayed open after max_auth_attempts: {last:?}"
        );
    });
}

#[test]
fn a_silent_connection_is_closed_after_login_grace_time() {
    let server = Server::start_with(crate::harness::Options {
        server: "login_grace_time = \"3s\"",
        ..Default::default()
    });
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let started = Instant::now();
    let mut received = Vec::new();
    // Read the server's banner, then EOF when the grace time runs out.
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("no EOF after {:?}: {e}", started.elapsed()),
        }
    }
    assert!(received.starts_with(b"SSH-2.0-keepsh_"));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}"
    );
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn connections_beyond_the_per_source_limit_wait_for_a_slot() {
    let server = Server::start_with(crate::harness::Options {
        server: "max_startups_per_source = 2",
        ..Default::default()
    });
    let connect = || {
        let stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        stream
    };
    // The banner shows the connection was admitted to its handshake.
    let banner = |mut stream: &std::net::TcpStream| {
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("read");
        buf[..n].starts_with(b"SSH-2.0-")
    };
    let first = connect();
    assert!(banner(&first));
    let second = connect();
    assert!(banner(&second));
    // The third from the same address waits, not refused ...
    let third = connect();
    crate::harness::wait_until("the third connection to wait", DEADLINE, || {
        server.log().contains("waiting for a slot")
    });
    // ... and is admitted as soon as a slot frees.
    drop(first);
    assert!(banner(&third), "the waiting connection was not admitted");
    drop(second);
    drop(third);
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn a_storm_of_clients_from_one_address_is_served_in_turn() {
    let server = Server::start_with(crate::harness::Options {
        server: "max_startups_per_source = 4",
        ..Default::default()
    });
    let clients: Vec<std::process::Child> = (0..40)
        .map(|_| {
            let mut cmd = server.ssh("alice");
            cmd.arg("version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            cmd.spawn().expect("spawn ssh")
        })
        .collect();
    let mut failed = 0;
    for mut client in clients {
        let status =
            poll(DEADLINE * 2, || client.try_wait().expect("try_wait")).expect("a client hung");
        failed += usize::from(!status.success());
    }
    assert_eq!(failed, 0, "{failed} of 40 clients failed");
}

/// OpenSSH offering mallory's key (refused), then asking for a password
/// with `askpass`: `-o` options first, then `version`.
fn openssh_with_askpass(server: &Server, askpass: &std::path::Path, options: &[&str]) -> Output {
    let mut cmd = server.ssh_with("alice", "mallory", false);
    cmd.args(options)
        .arg("version")
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    run_with_deadline(cmd, DEADLINE)
}

#[test]
fn a_refused_key_and_a_password_typo_still_let_the_right_password_in() {
    // The test server allows 3 failures: the key and the typo are two.
    let server = Server::start();
    let (askpass, calls) = server.askpass(&["a typo", ALICE_PASSWORD]);
    let out = openssh_with_askpass(&server, &askpass, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("keepsh "));
    let asked = std::fs::read_to_string(calls).expect("askpass ran");
    assert_eq!(
        asked.trim(),
        "2",
        "the password was asked for {asked} times"
    );
}

#[test]
fn too_many_failures_end_in_a_disconnect_that_says_so() {
    let server = Server::start();
    let (askpass, calls) = server.askpass(&["wrong"]);
    let out = openssh_with_askpass(
        &server,
        &askpass,
        &[
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=10",
        ],
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("too many authentication failures"),
        "{}",
        stderr(&out)
    );
    // max_auth_attempts is 3 in the test server. (OpenSSH may show a 4th
    // prompt: it reads the third FAILURE before the DISCONNECT behind it.)
    let asked: u32 = std::fs::read_to_string(calls)
        .expect("askpass ran")
        .trim()
        .parse()
        .expect("a count");
    assert!((3..=4).contains(&asked), "asked {asked} times");
    let log = server.log();
    assert_eq!(log.matches("authentication failed").count(), 3, "{log}");
    assert!(log.contains("too many authentication failures"));
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn paramiko_logs_in_with_its_second_key_after_the_first_is_refused() {
    let server = Server::start();
    let out = server.paramiko("alice", &["mallory", "alice"], &["version"]);
    assert!(
        stdout(&out).starts_with("status=0 keepsh "),
        "{}",
        stdout(&out)
    );
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Connects to the server and sends `bytes`; returns the stream.
fn raw_client(server: &Server, bytes: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.write_all(bytes).expect("send");
    stream
}

/// Reads until EOF (or a reset); panics if none comes within the deadline.
pub fn until_closed(mut stream: std::net::TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

#[test]
fn clients_that_send_only_a_banner_are_closed_at_the_grace_time_and_lock_nobody_out() {
    let server = Server::start_with(crate::harness::Options {
        server: "login_grace_time = \"2s\"\nmax_startups = 128\nmax_startups_per_source = 64",
        ..Default::default()
    });
    assert!(server.run("alice", &["version"]).status.success());
    let baseline = open_fds(server.pid());
    let idle: Vec<_> = (0..50)
        .map(|_| raw_client(&server, b"SSH-2.0-x\r\n"))
        .collect();
    // A real login from the same address while they hang.
    assert!(server.run("alice", &["version"]).status.success());
    for stream in idle {
        until_closed(stream);
    }
    wait_until("the server's fds to return to baseline", DEADLINE, || {
        open_fds(server.pid()) <= baseline
    });
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn banner_only_clients_that_fill_the_per_source_slots_free_them_at_the_grace_time() {
    let server = Server::start_with(crate::harness::Options {
        server: "login_grace_time = \"2s\"\nmax_startups_per_source = 16",
        ..Default::default()
    });
    let idle: Vec<_> = (0..16)
        .map(|_| raw_client(&server, b"SSH-2.0-x\r\n"))
        .collect();
    for stream in idle {
        until_closed(stream);
    }
    // All 16 slots are free again: a real login is admitted at once.
    let started = Instant::now();
    assert!(server.run("alice", &["version"]).status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A TCP connection to the server from `source` (a loopback address).
fn connect_from(server: &Server, source: [u8; 4]) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from((source, 0)).into())
        .expect("bind to a loopback address");
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], server.port)).into())
        .expect("connect");
    let stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
}

/// OpenSSH from `source` as alice with `key_user`'s key, running `version`.
fn ssh_from(server: &Server, source: &str, key_user: &str) -> Output {
    let mut cmd = server.ssh_as("alice", key_user);
    cmd.args(["-b", source, "version"]);
    run_with_deadline(cmd, DEADLINE)
}

#[test]
fn a_penalised_source_is_refused_at_accept_while_others_log_in_until_it_expires() {
    let server = Server::start_with(crate::harness::Options {
        server: "penalty_exempt = []\npenalty_authfail = \"1s\"\npenalty_min = \"2s\"\npenalty_max = \"3s\"",
        ..Default::default()
    });
    // Two connections that fail to log in (mallory's key is nobody's).
    for _ in 0..2 {
        assert_eq!(
            ssh_from(&server, "127.0.0.2", "mallory").status.code(),
            Some(255)
        );
    }
    // The penalty (2 s) reached penalty_min: closed at accept, no banner.
    wait_until(
        "127.0.0.2 to be refused before the banner",
        DEADLINE,
        || {
            let mut stream = connect_from(&server, [127, 0, 0, 2]);
            let mut buf = [0u8; 64];
            // EOF (or a reset) with nothing read: refused; the banner: served.
            match stream.read(&mut buf) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        },
    );
    assert!(
        server.log().contains("source penalised"),
        "{}",
        server.log()
    );
    // Another source logs in at once.
    let started = Instant::now();
    assert!(ssh_from(&server, "127.0.0.3", "alice").status.success());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The penalty expires (at most penalty_max, 3 s): 127.0.0.2 gets in again.
    wait_until("127.0.0.2's penalty to expire", DEADLINE, || {
        ssh_from(&server, "127.0.0.2", "alice").status.success()
    });
}
