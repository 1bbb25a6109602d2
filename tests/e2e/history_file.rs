//! A session's output on disk (`[sessions] history_file_bytes`): the
//! history file holds what `history --raw` shows, its metadata names the
//! session, a clean end removes both, 0 writes nothing, and a write that
//! fails leaves the session serving from memory and says so once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{DEADLINE, Options, Server, poll, stdout, wait_until};

/// The files of `user`'s session `name` in the server's state directory:
/// (history, older segment, metadata).
fn files(server: &Server, user: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let session = server.session(user, name).expect("session listed");
    let id = session["id"].as_str().expect("id").to_owned();
    let dir = server.dir.path().join("state/sessions");
    (
        dir.join(format!("{id}.history")),
        dir.join(format!("{id}.history.1")),
        dir.join(format!("{id}.meta.json")),
    )
}

/// Both segments, oldest first.
fn on_disk(history: &Path, older: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(older).unwrap_or_default();
    bytes.extend(std::fs::read(history).unwrap_or_default());
    bytes
}

/// `kill -9` of every session process of `server` (as the OOM killer or
/// a reboot would end them: no clean end).
fn kill_session_processes(server: &Server) {
    for pid in crate::harness::session_processes(server.dir.path()) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

fn start_printing(server: &Server, name: &str, script: &str) {
    let script = crate::screen::sh(script);
    let out = server.run("alice", &["new", "-d", name, "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
}

#[test]
fn the_history_file_holds_the_output_and_a_clean_end_removes_it() {
    let server = Server::start_with(Options {
        sessions: "history_file_bytes = \"64KiB\"",
        ..Options::default()
    });
    // 20,000 numbered lines (~130 KB): the files keep the last 32 to 64 KiB.
    start_printing(&server, "count", "seq 1 20000; echo done; exec sleep 1000");
    wait_until("all output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "--raw", "count"])).ends_with("done\r\n")
    });
    let (history, older, meta) = files(&server, "alice", "count");
    let raw = server.run("alice", &["history", "--raw", "count"]).stdout;
    // Written within a batch interval of the output; a suffix of it.
    let kept = poll(DEADLINE, || {
        let kept = on_disk(&history, &older);
        kept.ends_with(b"done\r\n").then_some(kept)
    })
    .expect("the output reached the history file");
    assert!(
        (32 << 10..=64 << 10).contains(&kept.len()),
        "{}",
        kept.len()
    );
    assert!(raw.ends_with(&kept), "the file is not the output's end");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("file").permissions().mode() & 0o777
    };
    assert_eq!([mode(&history), mode(&older), mode(&meta)], [0o600; 3]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("meta")).expect("meta json");
    assert_eq!(json["name"], "count");
    assert_eq!(json["owner"], "alice");
    assert_eq!(json["command"][0], "sh");
    let listed = server.session("alice", "count").expect("listed");
    assert_eq!(listed["history_on_disk"], true);
    // A rename reaches the metadata; a kill removes every file.
    assert!(
        server
            .run("alice", &["rename", "count", "tally"])
            .status
            .success()
    );
    wait_until("the renamed metadata", DEADLINE, || {
        std::fs::read_to_string(&meta).is_ok_and(|m| m.contains("\"name\":\"tally\""))
    });
    assert!(server.run("alice", &["kill", "tally"]).status.success());
    wait_until("the files removed", DEADLINE, || {
        !history.exists() && !older.exists() && !meta.exists()
    });
}

#[test]
fn history_file_bytes_0_writes_nothing() {
    let server = Server::start_with(Options {
        sessions: "history_file_bytes = 0",
        ..Options::default()
    });
    start_printing(&server, "quiet", "echo hello; exec sleep 1000");
    wait_until("the output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "quiet"])).contains("hello")
    });
    assert_eq!(
        server.session("alice", "quiet").expect("listed")["history_on_disk"],
        false
    );
    let dir = server.dir.path().join("state/sessions");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("sessions dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".sock")), "{names:?}");
}

/// The file size limit (RLIMIT_FSIZE, inherited from the server) makes the
/// history's writes fail with EFBIG part way, as a full disk would: the
/// session keeps serving from its ring buffer, `list` says the history is
/// off the disk, and the log says why once.
#[test]
fn a_history_file_that_cannot_grow_leaves_the_session_serving_from_memory() {
    // `ulimit -f 1024`: 512 KiB in dash's 512-byte blocks.
    let server = Server::start_with_fd_limit(Options::default(), "-f 1024");
    start_printing(
        &server,
        "big",
        "seq 1 200000; echo first-done; read line; echo \"got $line\"; exec sleep 1000",
    );
    wait_until("all output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "--raw", "big"])).ends_with("first-done\r\n")
    });
    wait_until("history_on_disk false", DEADLINE, || {
        server
            .session("alice", "big")
            .is_some_and(|s| s["history_on_disk"] == false)
    });
    let (history, _, _) = files(&server, "alice", "big");
    let size = std::fs::metadata(&history).expect("history").len();
    assert!(size <= 512 << 10, "{size}");
    assert!(
        server
            .run("alice", &["send", "--enter", "big", "typed"])
            .status
            .success()
    );
    wait_until("the session answers", DEADLINE, || {
        stdout(&server.run("alice", &["history", "big"])).contains("got typed")
    });
    let failures = || {
        server
            .log()
            .matches("writing the history file failed")
            .count()
    };
    wait_until("the log line", Duration::from_secs(10), || failures() == 1);
    assert_eq!(failures(), 1, "{}", server.log());
}

/// `kill -9` of the session process and of the server (all processes gone,
/// files kept: as after a reboot), then a new server: the session is
/// `lost`; its history is what it printed, byte for byte; `attach` shows
/// it and says so (exit 1); another user cannot see it; `kill` removes it.
#[test]
fn a_session_whose_processes_were_killed_is_lost_with_its_history() {
    let mut server = Server::start();
    let script = "cd /tmp && seq -f 'step %g' 1 3000; echo waiting; exec sleep 1000";
    start_printing(&server, "agent", script);
    wait_until("all output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "--raw", "agent"])).ends_with("waiting\r\n")
    });
    let raw = server.run("alice", &["history", "--raw", "agent"]).stdout;
    let text = stdout(&server.run("alice", &["history", "agent"]));
    let (history, older, meta) = files(&server, "alice", "agent");
    wait_until("the output on disk", DEADLINE, || {
        on_disk(&history, &older) == raw
    });
    kill_session_processes(&server);
    server.restart("KILL");

    let listed = server.wait_state("alice", "agent", "lost");
    assert_eq!(listed["history_on_disk"], true);
    assert_eq!(listed["cwd"], "/tmp", "{listed}");
    assert_eq!(
        server.run("alice", &["history", "--raw", "agent"]).stdout,
        raw
    );
    // The text as the live session printed it: 2,000 history lines, the screen.
    assert!(text.ends_with("step 3000\nwaiting\n"), "{text}");
    assert_eq!(stdout(&server.run("alice", &["history", "agent"])), text);
    let attach = server
        .ssh("alice")
        .args(["-tt", "attach", "agent"])
        .output()
        .expect("ssh");
    assert_eq!(attach.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&attach.stdout);
    assert!(shown.contains("step 3000\r\nwaiting\r\n"), "{shown}");
    let said = String::from_utf8_lossy(&attach.stderr);
    assert!(said.contains("keepsh: session 'agent' was lost"), "{said}");
    // Isolation: another user's lost session looks exactly like a missing one.
    let bob = server.run("bob", &["history", "agent"]);
    assert_eq!(bob.status.code(), Some(1));
    assert!(crate::harness::stderr(&bob).starts_with("keepsh: no session 'agent'"));
    assert!(server.list("bob").is_empty());
    // `kill` removes its files; it is gone from the list.
    assert!(server.run("alice", &["kill", "agent"]).status.success());
    assert!(!history.exists() && !meta.exists());
    assert!(server.list("alice").is_empty());
}

/// A lost session is removed `lost_retention` after its last activity.
#[test]
fn a_lost_session_past_lost_retention_is_removed() {
    let server = Server::start_with(Options {
        sessions: "lost_retention = \"1s\"",
        ..Options::default()
    });
    start_printing(&server, "brief", "echo once; exec sleep 1000");
    wait_until("the output", DEADLINE, || {
        stdout(&server.run("alice", &["history", "brief"])).contains("once")
    });
    let (history, _, meta) = files(&server, "alice", "brief");
    kill_session_processes(&server);
    // Removed by the server's own sweep (every lost_retention, here 1 s),
    // with nobody listing sessions.
    wait_until("the files removed", DEADLINE, || {
        !history.exists() && !meta.exists()
    });
    assert!(server.list("alice").is_empty());
    assert!(
        server.log().contains("past lost_retention"),
        "{}",
        server.log()
    );
}

/// `restart` of a lost shell session: the same id and name, a login shell
/// in the directory it was in, after its old output and a line saying so.
#[test]
fn a_lost_session_restarts_in_its_directory_after_its_old_output() {
    let mut server = Server::start();
    let out = server.run("alice", &["new", "-d", "shell"]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let send = |server: &Server, text: &str| {
        let out = server.run("alice", &["send", "--enter", "shell", text]);
        assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    };
    send(&server, "cd /tmp && echo moved-$((6*7))");
    wait_until("the shell in /tmp", DEADLINE, || {
        stdout(&server.run("alice", &["history", "shell"])).contains("moved-42")
            && server
                .session("alice", "shell")
                .is_some_and(|s| s["cwd"] == "/tmp")
    });
    let (_, _, meta) = files(&server, "alice", "shell");
    wait_until("the directory in the metadata", DEADLINE, || {
        std::fs::read_to_string(&meta).is_ok_and(|m| m.contains("\"cwd\":\"/tmp\""))
    });
    kill_session_processes(&server);
    server.restart("KILL");
    server.wait_state("alice", "shell", "lost");

    let restarted = server.run("alice", &["restart", "-d", "shell"]);
    assert!(
        restarted.status.success(),
        "{}",
        crate::harness::stderr(&restarted)
    );
    assert_eq!(stdout(&restarted).trim(), id);
    server.wait_state("alice", "shell", "orphaned");
    send(&server, "pwd");
    wait_until("pwd after the restart", DEADLINE, || {
        let text = stdout(&server.run("alice", &["history", "shell"]));
        let after = text
            .split("[keepsh: restarted at")
            .nth(1)
            .unwrap_or_default();
        text.contains("moved-42") && after.contains("\n/tmp\n")
    });
    let listed = server.list("alice");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
}

/// `restart` of an exited session: its command runs again after its old
/// output, under the same id; a running one is refused.
#[test]
fn an_exited_session_restarts_and_a_running_one_is_refused() {
    let server = Server::start();
    start_printing(&server, "job", "echo run-once; exit 3");
    server.wait_state("alice", "job", "exited");
    let id = server.session("alice", "job").expect("listed")["id"].clone();
    let restarted = server.run("alice", &["restart", "-d", "job"]);
    assert!(
        restarted.status.success(),
        "{}",
        crate::harness::stderr(&restarted)
    );
    assert_eq!(stdout(&restarted).trim(), id.as_str().expect("id"));
    wait_until("the second run", DEADLINE, || {
        stdout(&server.run("alice", &["history", "job"]))
            .matches("run-once")
            .count()
            == 2
    });
    server.wait_state("alice", "job", "exited");
    start_printing(&server, "live", "exec sleep 1000");
    let refused = server.run("alice", &["restart", "live"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = crate::harness::stderr(&refused);
    assert!(
        err.starts_with("keepsh: session 'live' is still running"),
        "{err}"
    );
}
