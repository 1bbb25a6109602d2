//! Several channels on one connection, as OpenSSH's ControlMaster and the
//! SSH libraries use them: closed channels free their slot, a full or
//! zero window holds up only its own channel, a waiting command holds up
//! nothing.

use crate::harness::{
    DEADLINE, Server, run_with_deadline, stderr, stdout, through_master, wait_until,
};

/// The `key=value` token `key` in `text`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn two_hundred_commands_over_one_controlmaster_connection_all_succeed() {
    let server = Server::start();
    let master = server.dir.path().join("cm");
    for i in 0..200 {
        let mut cmd = through_master(server.ssh("alice"), &master);
        cmd.arg("version");
        let out = run_with_deadline(cmd, DEADLINE);
        assert!(
            out.status.success() && stdout(&out).starts_with("keepsh "),
            "command {i} over the master failed: {}",
            stderr(&out)
        );
    }
    let logins = server.log().matches("authenticated").count();
    assert_eq!(logins, 1, "the master connection should log in once");
    let mut exit = through_master(server.ssh("alice"), &master);
    exit.args(["-O", "exit"]);
    run_with_deadline(exit, DEADLINE);
}

#[test]
fn paramiko_runs_two_hundred_channels_on_one_transport() {
    let server = Server::start();
    let out = server.paramiko("alice", &["alice"], &["sequential", "200"]);
    assert_eq!(field(&stdout(&out), "ok"), Some("200"), "{}", stdout(&out));
}

#[test]
fn the_eleventh_open_channel_is_refused_for_resource_shortage_and_the_ten_work() {
    let server = Server::start();
    let out = server.paramiko("alice", &["alice"], &["concurrent"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    // SSH_OPEN_RESOURCE_SHORTAGE is 4 (RFC 4254 §5.1).
    assert!(text.contains("eleventh=refused code=4"), "{text}");
    assert!(text.contains("first=keepsh "), "{text}");
    assert!(text.contains("after-close status=0"), "{text}");
}

#[test]
fn a_channel_whose_window_is_full_never_delays_another_channel() {
    let server = Server::start();
    for (name, program) in [("noisy", "yes noise"), ("quiet", "sh")] {
        let out = server.run("alice", &["new", "-d", name, "--", program]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = server.paramiko("alice", &["alice"], &["stalled"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let worst: f64 = field(&text, "quiet-worst")
        .and_then(|w| w.parse().ok())
        .expect("worst echo");
    assert!(worst < 2.0, "an echo took {worst} s beside a full channel");
}

#[test]
fn a_channel_opened_with_a_zero_window_never_delays_another_channel() {
    let server = Server::start();
    for (name, program) in [("noisy", "yes noise"), ("quiet", "sh")] {
        let out = server.run("alice", &["new", "-d", name, "--", program]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = server.paramiko("alice", &["alice"], &["zero_window"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(field(&text, "frozen-got"), Some("0"), "{text}");
}

#[test]
fn a_channel_open_with_a_zero_maximum_packet_size_is_refused_not_fatal() {
    let server = Server::start();
    let out = server.paramiko("alice", &["alice"], &["zero_packet"]);
    let text = stdout(&out);
    // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED (RFC 4254 §5.1).
    assert!(text.contains("zero-packet=refused code=1"), "{text}");
    assert!(text.contains("after status=0 keepsh"), "{text}");
}

#[test]
fn kill_on_one_channel_never_pauses_typing_on_another() {
    let server = Server::start();
    // A program that ignores SIGHUP: `kill` waits for its grace period
    // (2 s) before SIGKILL, and answers only then.
    let out = server.run(
        "alice",
        &[
            "new",
            "-d",
            "stubborn",
            "--",
            "sh -c 'trap \"\" HUP; while :; do sleep 1; done'",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        server
            .run("alice", &["new", "-d", "typing"])
            .status
            .success()
    );
    let out = server.paramiko("alice", &["alice"], &["echo_during", "kill", "stubborn"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(field(&text, "status"), Some("0"), "{text}");
    let echoes: u32 = field(&text, "echoes")
        .and_then(|e| e.parse().ok())
        .expect("echoes");
    let worst: f64 = field(&text, "worst")
        .and_then(|w| w.parse().ok())
        .expect("worst");
    assert!(
        echoes >= 3,
        "only {echoes} echoes during a 2 s kill: {text}"
    );
    assert!(worst < 1.0, "an echo took {worst} s while kill waited");
    wait_until("stubborn to be gone", DEADLINE, || {
        server.session("alice", "stubborn").is_none()
    });
}

#[test]
fn a_signal_request_reaches_the_foreground_job_and_is_answered() {
    let server = Server::start();
    // A program with no children that reports each signal it catches.
    let trapper = "bash -c 'for s in INT QUIT HUP USR1 USR2; do trap \"echo got-$s\" $s; done; \
                   echo armed; while :; do read -r -t 0.2 _; done'";
    for (name, program) in [("target", None), ("trapper", Some(trapper))] {
        let mut args = vec!["new", "-d", name];
        args.extend(program.iter().flat_map(|p| ["--", p]));
        let out = server.run("alice", &args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = server.paramiko("alice", &["alice"], &["signal"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for (key, want) in [
        // The shell's foreground job is interrupted; the shell carries on.
        ("int", "success"),
        ("kill", "success"),
        // Not a signal of RFC 4254 §6.10; a watcher may not interrupt;
        // a channel that runs nothing has nothing to signal.
        ("unknown", "failure"),
        ("read-only", "failure"),
        ("unstarted", "failure"),
        ("trapped-int", "success"),
        ("trapped-quit", "success"),
        ("trapped-hup", "success"),
        ("trapped-usr1", "success"),
        ("trapped-usr2", "success"),
        ("term", "success"),
        ("trapper-ended", "yes"),
    ] {
        assert_eq!(field(&text, key), Some(want), "{key}: {text}");
    }
    // paramiko ignores exit-signal; `list` tells what ended the program.
    wait_until("trapper to be listed as ended by SIGTERM", DEADLINE, || {
        stdout(&server.run("alice", &["list"])).contains("exited(SIGTERM)")
    });
}
