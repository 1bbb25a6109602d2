//! `[notify]`: the user's command runs when a session that no writable
//! client is attached to rings the bell, shows a desktop notification
//! (OSC 9, OSC 777) or exits, with what happened in its environment; not
//! while a writable client is attached.

use std::path::Path;

use crate::harness::{DEADLINE, Options, Server, poll};

/// A server whose notify command appends one line per run to `runs`:
/// event, session name, message, user and whether the id is set.
fn server_noting_runs_in(runs: &Path, min_interval: &str) -> Server {
    let dir = runs.parent().expect("dir");
    let script = dir.join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "printf '%s|%s|%s|%s|%s\\n' \"$KEEPSH_EVENT\" \"$KEEPSH_SESSION\" \
             \"$KEEPSH_MESSAGE\" \"$KEEPSH_USER\" \"${{KEEPSH_SESSION_ID:+id}}\" >> '{}'\n",
            runs.display()
        ),
    )
    .expect("write the script");
    // The harness puts these lines in [sessions]; [notify] starts a table.
    let sessions = format!(
        "[notify]\ncommand = [\"/bin/sh\", \"{}\"]\nmin_interval = \"{min_interval}\"",
        script.display()
    );
    Server::start_with(Options {
        sessions: Box::leak(sessions.into_boxed_str()),
        ..Default::default()
    })
}

/// Waits until `runs` has `count` lines; returns them.
fn wait_runs(runs: &Path, count: usize) -> Vec<String> {
    let got = poll(DEADLINE, || {
        let text = std::fs::read_to_string(runs).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        (lines.len() >= count).then_some(lines)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{count} runs expected; got {:?}",
            std::fs::read_to_string(runs).unwrap_or_default()
        )
    })
}

#[test]
fn a_bell_a_desktop_notification_and_the_exit_of_an_unwatched_session_run_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let server = server_noting_runs_in(&runs, "0s");
    let script = "printf 'work\\a'; printf '\\033]9;build done\\007'; \
                  printf '\\033]777;notify;Agent;needs you\\033\\\\'; exit 3";
    let quoted = shell_words::quote(script).into_owned();
    let out = server.run("alice", &["new", "-d", "agent", "--", "sh", "-c", &quoted]);
    assert!(out.status.success());
    let mut lines = wait_runs(&runs, 4);
    // The runs are concurrent: their order in the file is not theirs.
    lines.sort();
    assert_eq!(
        lines,
        [
            "bell|agent|bell|alice|id",
            "exit|agent|exited with code 3|alice|id",
            "notification|agent|Agent: needs you|alice|id",
            "notification|agent|build done|alice|id",
        ]
    );
    assert!(
        server.log().contains("notify command ran"),
        "{}",
        server.log()
    );
}

#[test]
fn a_writable_client_attached_keeps_the_command_quiet_and_runs_are_rate_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = dir.path().join("runs");
    let server = server_noting_runs_in(&runs, "1h");
    // Two FIFOs: with one, the second `read` could open it while the
    // test still held it open from the first write, read its EOF and go
    // on before the client left (seen under load: the test then waited
    // for ever to write the second).
    let (go, then) = (dir.path().join("go"), dir.path().join("then"));
    let made = std::process::Command::new("mkfifo")
        .arg(&go)
        .arg(&then)
        .status();
    assert!(made.expect("run mkfifo").success());
    let fifo = |path: &Path| shell_words::quote(&path.to_string_lossy()).into_owned();
    let script = format!(
        "echo waiting; read x < {}; printf 'rang\\a\\n'; read y < {}; \
         printf '\\033]9;first\\007'; printf '\\033]9;second\\007'; exec sleep 1000",
        fifo(&go),
        fifo(&then)
    );
    let quoted = shell_words::quote(&script).into_owned();
    let out = server.run("alice", &["new", "-d", "agent", "--", "sh", "-c", &quoted]);
    assert!(out.status.success());
    // Rung while a writable client is attached: nothing runs.
    let mut client = server.tt("alice", &["attach", "agent"]);
    client.wait_for("waiting");
    std::fs::write(&go, "x\n").expect("write to the FIFO");
    client.wait_for("rang");
    client.kill();
    server.wait_state("alice", "agent", "orphaned");
    // Unwatched: the first notification runs it; the second comes within
    // min_interval (1 h) and does not.
    std::fs::write(&then, "y\n").expect("write to the FIFO");
    let lines = wait_runs(&runs, 1);
    assert_eq!(lines, ["notification|agent|first|alice|id"]);
    let skipped = poll(DEADLINE, || {
        server
            .log()
            .contains("notify command ran recently; skipped")
            .then_some(())
    });
    assert!(skipped.is_some(), "{}", server.log());
    assert_eq!(
        wait_runs(&runs, 1).len(),
        1,
        "the bell or the second ran too"
    );
}
