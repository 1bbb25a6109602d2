//! The exec commands: new -d, kill, rename, list, help, version.

use crate::harness::{DEADLINE, Server, stderr, stdout, wait_until};

/// Whether any process has `marker` in its command line.
fn process_running(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| {
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(marker)
        })
}

#[test]
fn new_detached_prints_the_id_and_list_shows_the_session() {
    let server = Server::start();
    let out = server.run("alice", &["new", "-d", "work"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let session = server.wait_state("alice", "work", "orphaned");
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["command"], "/bin/sh");
    assert_eq!(
        (session["cols"].as_u64(), session["rows"].as_u64()),
        (Some(80), Some(24))
    );
    // Unnamed sessions get the lowest free integer.
    for expected in ["0", "1"] {
        let out = server.run("alice", &["new", "-d", "--", "sleep", "1000"]);
        assert!(out.status.success());
        assert!(
            server.session("alice", expected).is_some(),
            "no session {expected}"
        );
    }
    let table = stdout(&server.run("alice", &["list"]));
    let header = table.lines().next().expect("header");
    assert!(
        header.starts_with("ID") && header.contains("STATE"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 4, "{table}");
}

#[test]
fn kill_ends_the_whole_process_group_and_forgets_the_session() {
    let server = Server::start();
    // A shell with a child that ignores nothing and a grandchild in the same group.
    let marker = format!("sleep 7{}", server.port);
    let script = format!("sh -c '{marker} & {marker}; true'");
    assert!(
        server
            .run("alice", &["new", "-d", "doomed", "--", &script])
            .status
            .success()
    );
    wait_until("the sleeps to start", DEADLINE, || process_running(&marker));
    let out = server.run("alice", &["kill", "doomed"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.session("alice", "doomed").is_none());
    wait_until("every process of the session to end", DEADLINE, || {
        !process_running(&marker)
    });
    // The name is free again.
    assert!(
        server
            .run("alice", &["new", "-d", "doomed"])
            .status
            .success()
    );
}

#[test]
fn kill_escalates_to_sigkill_when_sighup_is_ignored() {
    let server = Server::start();
    let marker = format!("sleep 8{}", server.port);
    let script = format!("sh -c 'trap \"\" HUP; {marker}; true'");
    assert!(
        server
            .run("alice", &["new", "-d", "stubborn", "--", &script])
            .status
            .success()
    );
    wait_until("the sleep to start", DEADLINE, || process_running(&marker));
    let out = server.run("alice", &["kill", "stubborn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the process to be killed", DEADLINE, || {
        !process_running(&marker)
    });
}

#[test]
fn rename_changes_the_name_used_by_attach_and_list() {
    let server = Server::start();
    let script = "sh -c 'echo renamed-ok; sleep 1000'";
    assert!(
        server
            .run("alice", &["new", "-d", "old", "--", script])
            .status
            .success()
    );
    let out = server.run("alice", &["rename", "old", "new-name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.session("alice", "old").is_none());
    assert!(server.session("alice", "new-name").is_some());
    let mut client = server.stream("alice", &["attach", "new-name"]);
    client.wait_for("renamed-ok");
    // By id prefix too.
    let id = server.session("alice", "new-name").expect("session")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = server.run("alice", &["rename", &id[..8], "third"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.session("alice", "third").is_some());
}

#[test]
fn help_and_version_answer() {
    let server = Server::start();
    let help = server.run("alice", &["help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("attach [-d] [--quiet] [--read-only] [--from OFFSET] [REF]"));
    let version = server.run("alice", &["version"]);
    assert_eq!(
        stdout(&version),
        format!("keepsh {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_exited_session_can_still_be_attached_for_its_final_output() {
    let server = Server::start();
    let script = "sh -c 'echo last-words; exit 9'";
    assert!(
        server
            .run("alice", &["new", "-d", "gone", "--", script])
            .status
            .success()
    );
    server.wait_state("alice", "gone", "exited");
    let out = server.run("alice", &["attach", "gone"]);
    assert_eq!(out.status.code(), Some(9));
    assert!(stdout(&out).contains("last-words"));
}

#[test]
fn a_program_ended_by_a_signal_is_listed_with_it() {
    let server = Server::start();
    let script = "sh -c 'kill -TERM $$'";
    assert!(
        server
            .run("alice", &["new", "-d", "termed", "--", script])
            .status
            .success()
    );
    let session = server.wait_state("alice", "termed", "exited");
    assert_eq!(
        session["exit_code"],
        128 + 15,
        "shells report 128 + the signal"
    );
    let table = stdout(&server.run("alice", &["list"]));
    assert!(table.contains("exited(SIGTERM)"), "{table}");
}

#[test]
fn attached_clients_of_a_killed_session_get_exit_signal() {
    let server = Server::start();
    assert!(
        server
            .run("alice", &["new", "-d", "victim"])
            .status
            .success()
    );
    crate::harness::block_on(async {
        let handle = server.russh_key("alice").await;
        let mut channel = handle.channel_open_session().await.expect("channel");
        channel.exec(true, "attach victim").await.expect("exec");
        server.wait_state("alice", "victim", "attached");
        let out = server.run("alice", &["kill", "victim"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let signal = loop {
            match tokio::time::timeout(DEADLINE, channel.wait()).await {
                Ok(Some(russh::ChannelMsg::ExitSignal { signal_name, .. })) => break signal_name,
                Ok(Some(russh::ChannelMsg::ExitStatus { exit_status })) => {
                    panic!("exit-status {exit_status} instead of exit-signal")
                }
                Ok(Some(_)) => {}
                other => panic!("channel ended without exit-signal: {other:?}"),
            }
        };
        assert!(matches!(signal, russh::Sig::HUP), "{signal:?}");
    });
}
