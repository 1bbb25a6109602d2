//! Sessions survive the server: each lives in its own process, reached over a
//! Unix socket in the state directory; `kill -9` or a restart of the server
//! loses no session and no byte, and a misbehaving socket peer hurts nothing.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use keepsh::protocol::wire::{MAGIC, VERSION};

use crate::harness::{
    DEADLINE, Server, keepsh_binary, numbers, session_binary, session_processes, stderr, wait_until,
};

/// 3000 numbered lines, paused every 50 so output runs across the outage.
const PRODUCER: &str = "sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo n=$i; \
                        case $i in *50|*00) sleep 0.05;; esac; done; echo ALL-DONE; sleep 1000'";

fn socket(server: &Server, user: &str, name: &str) -> PathBuf {
    let id = server.session(user, name).expect("session")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    server
        .dir
        .path()
        .join("state/sessions")
        .join(format!("{id}.sock"))
}

/// The server stops (`signal`) while a client watches numbered output; a
/// new server on the same state dir reattaches to every line exactly once.
fn survives(signal: &str) {
    let mut server = Server::start();
    let out = server.run("alice", &["new", "-d", "counter", "--", PRODUCER]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut first = server.tt("alice", &["attach", "counter"]);
    first.wait_for("n=400\r\n");

    server.restart(signal);
    // The old client's connection went with the old server.
    first.wait_exit();
    let before = server.wait_state("alice", "counter", "orphaned")["output_offset"]
        .as_u64()
        .expect("offset");

    let mut second = server.stream("alice", &["attach", "counter"]);
    let output = second.wait_for("ALL-DONE");
    let after = server.session("alice", "counter").expect("session")["output_offset"]
        .as_u64()
        .expect("offset");
    assert!(after > before, "no output after the restart");
    assert_eq!(
        numbers(&output),
        (1..=3000).collect::<Vec<_>>(),
        "gap or duplicate across the restart"
    );
}

#[test]
fn kill_9_of_the_server_loses_no_session_and_no_line() {
    survives("KILL");
}

#[test]
fn a_graceful_stop_and_restart_loses_no_session_and_no_line() {
    survives("TERM");
}

#[test]
fn a_session_process_logs_to_its_own_file_which_outlives_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Server::start();
    let out = server.run("alice", &["new", "-d", "logged"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = server.session("alice", "logged").expect("session")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = server.dir.path().join(format!("state/logs/{id}.log"));
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    wait_until("the session's log", DEADLINE, || {
        read().contains("session started")
    });
    // With the span fields the server's log had for it.
    assert!(read().contains(&format!("id={id}")), "{}", read());
    let mode = std::fs::metadata(&path).expect("log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let logs = path.parent().expect("logs dir");
    assert_eq!(
        std::fs::metadata(logs).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    // The server says where.
    let said = format!("log={}", path.display());
    wait_until("the server's line", DEADLINE, || {
        server.log().contains(&said)
    });
    // After a kill -9 of the server, the next one's attach is logged there.
    server.restart("KILL");
    let mut client = server.tt("alice", &["attach", "logged"]);
    wait_until("the attach logged", DEADLINE, || {
        read().contains("attached")
    });
    client.kill();
}

#[test]
fn list_after_a_restart_shows_every_session_and_owners_stay_apart() {
    let mut server = Server::start();
    for (user, name) in [("alice", "work"), ("alice", "build"), ("bob", "notes")] {
        let out = server.run(user, &["new", "-d", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut attached = server.tt("alice", &["new", "live"]);
    attached.send("echo ready=$((6*7))\n");
    attached.wait_for("ready=42");

    server.restart("KILL");
    attached.wait_exit();

    let names = |user: &str| {
        let mut names: Vec<String> = server
            .list(user)
            .iter()
            .map(|s| format!("{}:{}", s["name"].as_str().expect("name"), s["state"]))
            .collect();
        names.sort();
        names
    };
    wait_until("the live session to be orphaned", DEADLINE, || {
        server
            .session("alice", "live")
            .is_some_and(|s| s["state"] == "orphaned")
    });
    assert_eq!(
        names("alice"),
        [
            "build:\"orphaned\"",
            "live:\"orphaned\"",
            "work:\"orphaned\""
        ]
    );
    assert_eq!(names("bob"), ["notes:\"orphaned\""]);

    // bob still cannot see or touch alice's sessions.
    for args in [["attach", "work"], ["kill", "work"]] {
        let out = server.run("bob", &args);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            stderr(&out),
            "keepsh: no session 'work' (see 'list' for your sessions)\n"
        );
    }
    // And alice's session works as before: its shell answers.
    let mut again = server.tt("alice", &["attach", "live"]);
    again.send("echo again=$((6*8))\n");
    again.wait_for("again=48");
}

#[test]
fn a_program_that_exits_while_the_server_is_down_shows_its_exit_code() {
    let mut server = Server::start();
    let flag = server.dir.path().join("go");
    let script = format!(
        "sh -c 'while [ ! -e {} ]; do sleep 0.02; done; exit 5'",
        flag.display()
    );
    let out = server.run("alice", &["new", "-d", "job", "--", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.wait_state("alice", "job", "orphaned");

    server.stop("KILL");
    std::fs::write(&flag, "").expect("flag");
    // The program is gone before any server is back.
    let marker = flag.display().to_string();
    wait_until("the program to exit", DEADLINE, || {
        !std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
    });
    server.restart("KILL");

    let job = server.wait_state("alice", "job", "exited");
    assert_eq!(job["exit_code"], 5);
}

#[test]
fn a_stale_socket_is_removed_and_list_carries_on() {
    let mut server = Server::start();
    for name in ["doomed", "kept"] {
        assert!(server.run("alice", &["new", "-d", name]).status.success());
    }
    let doomed = socket(&server, "alice", "doomed");
    let id = doomed
        .file_stem()
        .expect("id")
        .to_string_lossy()
        .into_owned();
    let pids: Vec<u32> = session_processes(server.dir.path())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&id))
        })
        .collect();
    assert_eq!(pids.len(), 1, "one process per session");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    // The running server notices, lists it as lost (its history file is
    // there) and removes its socket.
    server.wait_state("alice", "doomed", "lost");
    wait_until("its socket to be removed", DEADLINE, || !doomed.exists());
    assert!(server.session("alice", "kept").is_some());

    // A socket left behind while no server ran is removed at start.
    server.stop("KILL");
    let kept = socket_path_of(&server, "kept");
    let leftover = kept.with_file_name("00000000-0000-4000-8000-000000000000.sock");
    drop(UnixListener::bind(&leftover).expect("bind a socket nobody serves"));
    server.restart("KILL");
    assert!(!leftover.exists(), "stale socket left in place");
    let names: Vec<String> = server
        .list("alice")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(names, ["doomed", "kept"]);
    assert_eq!(
        server.session("alice", "doomed").expect("listed")["state"],
        "lost"
    );
    assert!(server.log().contains("stale socket"));
}

/// The only socket in the state dir (after the other session died).
fn socket_path_of(server: &Server, _name: &str) -> PathBuf {
    let dir = server.dir.path().join("state/sessions");
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("sessions dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    sockets.remove(0)
}

/// A preamble as the front sends it, with `version`.
fn preamble(version: u16) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes
}

/// Connects to a session socket, sends `bytes`, closes the sending side and
/// reads until the session closes the connection.
fn poke(socket: &PathBuf, bytes: &[u8]) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    stream.write_all(bytes).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    // Until the session closes it (a reset, if it left bytes unread).
    let mut rest = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        rest.extend_from_slice(&chunk[..n]);
    }
    assert!(rest.starts_with(MAGIC), "the session introduces itself");
}

#[test]
fn garbage_truncated_frames_and_unknown_versions_leave_the_session_running() {
    let server = Server::start();
    let out = server.run("alice", &["new", "-d", "victim"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let socket = socket(&server, "alice", "victim");

    poke(&socket, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut truncated = preamble(VERSION);
    truncated.extend_from_slice(&[0, 0, 0, 40, 1, 2, 3]);
    poke(&socket, &truncated);
    poke(&socket, &preamble(999));
    let mut oversized = preamble(VERSION);
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    poke(&socket, &oversized);

    wait_until("the session to log all four", DEADLINE, || {
        let log = server.log();
        log.contains("bad preamble")
            && log.contains("in the middle of a frame")
            && log.contains("speaks session protocol v999")
            && log.contains("exceeds the limit")
    });
    // The session is unharmed.
    let mut client = server.tt("alice", &["attach", "victim"]);
    client.send("echo alive=$((7*6))\n");
    client.wait_for("alive=42");
}

#[test]
fn a_session_of_another_protocol_version_is_listed_as_incompatible() {
    let mut server = Server::start();
    server.stop("KILL");
    // A session process from a future keepsh: it speaks v999.
    let path = server
        .dir
        .path()
        .join("state/sessions/6a0f3b1e-0000-4000-8000-000000000001.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    std::thread::spawn(move || {
        let hello =
            br#"{"id":"6a0f3b1e-0000-4000-8000-000000000001","owner":"alice","name":"future"}"#;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&999u16.to_be_bytes());
            bytes.extend_from_slice(&(hello.len() as u32).to_be_bytes());
            bytes.extend_from_slice(hello);
            let _ = stream.write_all(&bytes);
        }
    });
    server.restart("KILL");

    let future = server.session("alice", "future").expect("listed");
    assert_eq!(future["state"], "incompatible");
    let table = String::from_utf8_lossy(&server.run("alice", &["list"]).stdout).into_owned();
    let expected = format!("speaks session protocol v999; this keepsh speaks v{VERSION}");
    assert!(table.contains(&expected), "{table}");
    assert!(server.log().contains("speaks session protocol v999"));
    assert!(server.session("bob", "future").is_none());
    // It cannot be attached, with a clear error, and the server carries on.
    let out = server.run("alice", &["attach", "future"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no session 'future'"),
        "{}",
        stderr(&out)
    );
    assert!(
        server
            .run("alice", &["new", "-d", "fresh"])
            .status
            .success()
    );
}

#[test]
fn a_second_server_on_the_same_state_dir_is_refused() {
    let server = Server::start();
    let config = server.dir.path().join("server.toml");
    let out = crate::harness::keepsh(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "is in use by another keepsh server (stop that one, or give this one another state_dir)"
        ),
        "{err}"
    );
    // The first one is unaffected.
    assert!(server.run("alice", &["version"]).status.success());
}

/// The executable of session process `pid`, as /proc shows it (a file
/// replaced since it started ends with " (deleted)").
fn exe_of(pid: u32) -> String {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    exe.to_string_lossy().into_owned()
}

#[test]
fn replacing_the_binaries_and_restarting_keeps_sessions_on_their_own_build() {
    let mut server = Server::start();
    let dir = server.dir.path().to_owned();
    let install = || {
        // New files (new inodes) in place, as a package upgrade does.
        for (from, name) in [
            (keepsh_binary(), "keepsh"),
            (session_binary(), "keepsh-session"),
        ] {
            let _ = std::fs::remove_file(dir.join(name));
            std::fs::copy(from, dir.join(name)).expect("install the binaries");
        }
    };
    install();
    server.restart_from("TERM", &dir.join("keepsh"));
    let mut client = server.tt("alice", &["new", "old"]);
    client.send("echo before=$((2*21))\n");
    client.wait_for("before=42");
    // Sessions run the small session executable installed beside keepsh.
    let old = session_processes(&dir);
    assert_eq!(old.len(), 1);
    let installed = dir.join("keepsh-session").to_string_lossy().into_owned();
    assert_eq!(exe_of(old[0]), installed);

    install();
    server.restart_from("TERM", &dir.join("keepsh"));
    client.wait_exit();

    // The session process still runs the build it started with.
    assert_eq!(exe_of(old[0]), format!("{installed} (deleted)"));
    let mut again = server.tt("alice", &["attach", "old"]);
    again.send("echo after=$((2*22))\n");
    let output = again.wait_for("after=44");
    assert!(output.contains("before=42"), "the replay lost output");
    // New sessions run the new build, even when the file is replaced again
    // while this server runs (it holds the one it checked open).
    install();
    assert!(server.run("alice", &["new", "-d", "new"]).status.success());
    let new = session_processes(&dir);
    let new: Vec<_> = new.iter().filter(|pid| !old.contains(pid)).collect();
    assert_eq!(new.len(), 1);
    assert_eq!(exe_of(*new[0]), format!("{installed} (deleted)"));
}

#[test]
fn without_a_session_executable_of_its_build_keepsh_runs_sessions_itself() {
    let mut server = Server::start();
    let dir = server.dir.path().to_owned();
    std::fs::copy(keepsh_binary(), dir.join("keepsh")).expect("install keepsh");
    // None beside it.
    server.restart_from("TERM", &dir.join("keepsh"));
    assert!(
        server
            .run("alice", &["new", "-d", "alone"])
            .status
            .success()
    );
    let pids = session_processes(&dir);
    assert_eq!(pids.len(), 1);
    assert_eq!(exe_of(pids[0]), dir.join("keepsh").to_string_lossy());
    assert!(
        server
            .log()
            .contains("sessions run as `keepsh session-host`")
    );
    // One of another build: not used either, and the server says why.
    std::fs::write(dir.join("keepsh-session"), "#!/bin/sh\necho 999\n").expect("write");
    std::fs::set_permissions(
        dir.join("keepsh-session"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    server.restart_from("TERM", &dir.join("keepsh"));
    assert!(
        server
            .run("alice", &["new", "-d", "other"])
            .status
            .success()
    );
    let pids = session_processes(&dir);
    assert_eq!(pids.len(), 2);
    assert!(
        pids.iter()
            .all(|&pid| exe_of(pid) == dir.join("keepsh").to_string_lossy())
    );
}
