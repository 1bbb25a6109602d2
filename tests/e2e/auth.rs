//! Logging in: keys, passwords, refusals, attempt limits, login grace time.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::harness::{ALICE_PASSWORD, DEADLINE, Server, block_on, run_with_deadline, stdout};

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
        let started = Instant::now();
        let status = loop {
            if let Some(status) = client.try_wait().expect("try_wait") {
                break status;
            }
            assert!(started.elapsed() < DEADLINE * 2, "a client hung");
            std::thread::sleep(Duration::from_millis(10));
        };
        failed += usize::from(!status.success());
    }
    assert_eq!(failed, 0, "{failed} of 40 clients failed");
}
