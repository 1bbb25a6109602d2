//! Bad input gets one clear stderr line and the right exit status; nothing
//! else is disturbed.

use crate::harness::{DEADLINE, Server, block_on, request_replies, stderr, wait_until};
use russh::ChannelMsg;

/// Runs `args` as alice and checks the status and the one-line error.
fn check_error(server: &Server, args: &[&str], status: i32, contains: &str) {
    let out = server.run("alice", args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(status), "{args:?}: {err}");
    assert!(err.starts_with("keepsh: "), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.trim_end().ends_with(')'), "{args:?}: no hint: {err}");
    assert!(err.contains(contains), "{args:?}: {err}");
}

#[test]
fn malformed_commands_and_refs_get_one_line_errors_and_disturb_nothing() {
    let server = Server::start();
    assert!(server.run("alice", &["new", "-d", "keep"]).status.success());
    let mut watcher = server.tt("alice", &["attach", "keep"]);
    server.wait_state("alice", "keep", "attached");

    check_error(&server, &["frobnicate"], 2, "unrecognized subcommand");
    check_error(&server, &["list", "--yaml"], 2, "--yaml");
    check_error(&server, &["new", "'bad name!'"], 2, "A-Z a-z 0-9");
    check_error(&server, &["new", "-d", &"x".repeat(65)], 2, "1-64");
    check_error(&server, &["rename", "keep", "no/slash"], 2, "A-Z a-z 0-9");
    check_error(&server, &["new", "-d", "keep"], 1, "already exists");
    check_error(&server, &["attach", "nosuch"], 1, "no session 'nosuch'");
    check_error(&server, &["kill", "nosuch"], 1, "no session 'nosuch'");
    check_error(&server, &["attach", "abc"], 1, "no session 'abc'");
    check_error(
        &server,
        &["new", "-d", "x", "--", "/nonexistent/prog"],
        1,
        "not found",
    );
    check_error(
        &server,
        &["new", "-d", "x", "--", "no-such-command"],
        1,
        "not found",
    );
    check_error(&server, &["rename"], 2, "not provided: <REF> <NEW>");

    // The session and its client are untouched.
    let keep = server.wait_state("alice", "keep", "attached");
    assert_eq!(keep["clients"], 1);
    watcher.send("echo unharmed-$((5*5))\n");
    watcher.wait_for("unharmed-25");
    assert!(
        server.session("alice", "x").is_none(),
        "a failed new left a session"
    );
}

#[test]
fn absurd_window_sizes_are_clamped_and_the_session_carries_on() {
    let server = Server::start();
    block_on(async {
        let handle = server.russh_key("alice").await;
        let mut channel = handle.channel_open_session().await.expect("channel");
        channel
            .request_pty(true, "xterm", 0, 0, 0, 0, &[])
            .await
            .expect("pty-req 0x0");
        channel.exec(true, "new sized").await.expect("exec");
        wait_until("session created", DEADLINE, || {
            server.session("alice", "sized").is_some()
        });
        let size = |server: &Server| {
            let s = server.session("alice", "sized").expect("session");
            (
                s["cols"].as_u64().expect("cols"),
                s["rows"].as_u64().expect("rows"),
            )
        };
        // 0x0 in pty-req means "unknown": the default size.
        assert_eq!(size(&server), (80, 24));
        channel
            .window_change(65535, 65535, 0, 0)
            .await
            .expect("window-change");
        wait_until("clamped to 1024x512", DEADLINE, || {
            size(&server) == (1024, 512)
        });
        channel
            .window_change(0, 0, 0, 0)
            .await
            .expect("window-change");
        channel
            .window_change(100, 0, 0, 0)
            .await
            .expect("window-change");
        wait_until("zero dimension ignored", DEADLINE, || {
            size(&server) == (100, 512)
        });
        channel
            .data(&b"stty size; echo ok-$((6*7))\n"[..])
            .await
            .expect("type");
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ok-42") {
            match tokio::time::timeout(DEADLINE, channel.wait()).await {
                Ok(Some(ChannelMsg::Data { data })) => seen.extend_from_slice(&data),
                Ok(Some(_)) => {}
                other => panic!("channel ended early: {other:?}"),
            }
        }
        assert!(String::from_utf8_lossy(&seen).contains("512 100"));
    });
}

#[test]
fn requests_that_are_not_offered_are_refused_with_a_reply() {
    let server = Server::start();
    block_on(async {
        let handle = server.russh_key("alice").await;
        let mut channel = handle.channel_open_session().await.expect("channel");
        // env outside the allowlist, and a subsystem other than sftp:
        // refused, but answered.
        channel
            .set_env(true, "LD_PRELOAD", "/tmp/evil.so")
            .await
            .expect("env request sent");
        channel
            .set_env(true, "LANG", "C.UTF-8")
            .await
            .expect("env request sent");
        channel
            .request_subsystem(true, "netconf")
            .await
            .expect("subsystem request sent");
        let replies = request_replies(&mut channel, 3).await;
        assert_eq!(replies, [false, true, false]);
    });
}

#[test]
fn a_malformed_server_toml_is_a_clear_error_naming_key_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[sessions]\norphan_timeout = \"whenever\"\n",
    )
    .expect("write");
    let out = crate::harness::keepsh(&["check-config".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("server.toml:5:18: sessions.orphan_timeout"),
        "{err}"
    );
    assert!(err.contains("invalid duration"), "{err}");
    // Serving with it fails the same way, before listening.
    let out = crate::harness::keepsh(&["--config".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("sessions.orphan_timeout"));
    // And a valid one passes.
    std::fs::write(&path, "[server]\nlisten = [\"127.0.0.1:0\"]\n").expect("write");
    let out = crate::harness::keepsh(&["check-config".as_ref(), path.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn files_others_could_change_are_refused_as_sshds_strict_modes_does() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[server]\nlisten = [\"127.0.0.1:0\"]\n").expect("write");
    chmod(&config, 0o666);
    let real = config.canonicalize().expect("canonical");
    for args in [&["--config"][..], &["check-config"]] {
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        args.push(config.as_os_str());
        let out = crate::harness::keepsh(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "keepsh: {p} is writable by its group and others (mode 0666), who could change \
                 what keepsh trusts (run: chmod go-w {p})\n",
                p = real.display()
            )
        );
    }
    // The directory of the host keys, writable by others, is refused too,
    // before any key is generated in it.
    chmod(&config, 0o644);
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    chmod(&keys, 0o777);
    let out = crate::harness::keepsh(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{} is writable by its group and others",
            keys.canonicalize().expect("keys").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(!keys.join("ssh_host_ed25519_key").exists());
    // Private again: accepted, in a directory under /tmp (sticky, 1777).
    chmod(&keys, 0o700);
    let out = crate::harness::keepsh(&["check-config".as_ref(), config.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_state_dir_others_can_read_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(
        &state,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[server]\nlisten = [\"127.0.0.1:0\"]\n").expect("write");
    let out = crate::harness::keepsh(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is accessible by others (mode 755)"), "{err}");
    assert!(err.contains("chmod 700"), "{err}");
}

#[test]
fn refs_that_cannot_be_a_session_are_usage_errors_that_never_echo_raw_bytes() {
    let server = Server::start();
    check_error(
        &server,
        &["attach", "../x"],
        2,
        "invalid session name '../x'",
    );
    check_error(&server, &["kill", "''"], 2, "invalid session name ''");
    let long = "y".repeat(4096);
    check_error(
        &server,
        &["history", &long],
        2,
        "invalid session name 'yyyy",
    );
    let out = server.run("alice", &["history", &long]);
    assert!(stderr(&out).len() < 300, "{} bytes", stderr(&out).len());
    // A NUL and an escape sequence, which OpenSSH cannot send in a command.
    block_on(async {
        let handle = server.russh_key("alice").await;
        for command in [&b"kill a\0b"[..], b"attach \x1b]0;pwned\x07"] {
            let mut channel = handle.channel_open_session().await.expect("channel");
            channel.exec(true, command).await.expect("exec sent");
            let (mut err, mut status) = (Vec::new(), None);
            while let Ok(Some(msg)) = tokio::time::timeout(DEADLINE, channel.wait()).await {
                match msg {
                    ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            let err = String::from_utf8_lossy(&err);
            assert_eq!(status, Some(2), "{err}");
            assert!(err.contains("invalid session name"), "{err}");
            assert!(!err.trim_end().chars().any(char::is_control), "{err:?}");
        }
    });
    assert!(server.run("alice", &["version"]).status.success());
}

/// Sends `bytes` on a fresh TCP connection; returns whether the server
/// closed it (EOF or reset) within 5 s, long before the grace time.
fn closed_at_once(server: &Server, bytes: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_nul_banner_short_padding_and_ssh1_are_closed_at_once_with_a_reason() {
    let server = Server::start();
    assert!(server.run("alice", &["version"]).status.success());
    let baseline = crate::auth::open_fds(server.pid());
    // A packet of 16 bytes whose padding is 2 bytes (RFC 4253 §6 wants 4+):
    // length 12, padding length 2, a 9-byte payload, 2 bytes of padding.
    let mut short_padding = b"SSH-2.0-test\r\n".to_vec();
    short_padding.extend_from_slice(&12u32.to_be_bytes());
    short_padding.push(2);
    short_padding.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for (bytes, reason) in [
        (&b"SSH-2.0-x\0y\r\n"[..], "control character or NUL"),
        (b"SSH-1.5-old\r\n", "SSH protocol 1 is not supported"),
        (&short_padding, "fewer than the 4"),
    ] {
        assert!(closed_at_once(&server, bytes), "{reason}: kept open");
        wait_until(&format!("a log line saying {reason}"), DEADLINE, || {
            server.log().contains(reason)
        });
    }
    wait_until("the server's fds to return to baseline", DEADLINE, || {
        crate::auth::open_fds(server.pid()) <= baseline
    });
    assert!(server.run("alice", &["version"]).status.success());
}
