//! The shell request: a real shell in a persistent session.

use crate::harness::{Client, Options, Server, stderr, stdout};

#[test]
fn ssh_host_gives_a_working_shell_whose_exit_status_reaches_the_client() {
    let server = Server::start();
    let mut client = server.tt("alice", &[]);
    client.send("echo sum=$((40 + 2))\n");
    client.wait_for("sum=42");
    client.send("exit 7\n");
    assert_eq!(client.wait_exit(), 7);
    let session = server.wait_state("alice", "0", "exited");
    assert_eq!(session["exit_code"], 7);
}

#[test]
fn the_shell_gets_term_and_size_from_pty_req() {
    let server = Server::start();
    let mut cmd = server.ssh("alice");
    cmd.arg("-tt").env("TERM", "vt220");
    let mut client = crate::harness::Client::spawn(cmd);
    // Computed sentinels, so the echo of the typed line cannot match.
    client.send("echo term=$TERM; stty size; echo done-$((1+1))\n");
    let out = client.wait_for("done-2");
    assert!(out.contains("term=vt220"), "{out}");
    // Without a local terminal OpenSSH sends a 0x0 window, which means
    // "unknown" (RFC 4254 §6.2): the PTY gets the default 80x24.
    assert!(out.contains("24 80"), "{out}");
    let session = server.wait_state("alice", "0", "attached");
    assert_eq!(
        (session["cols"].as_u64(), session["rows"].as_u64()),
        (Some(80), Some(24))
    );
}

#[test]
fn login_name_plus_session_attaches_or_creates_that_session() {
    let server = Server::start();
    drop_and_come_back(&server, "alice+work", "work");
}

/// A shell as `login` (alice's key), dropped; session `name` orphaned;
/// the same login again comes back to it: the redraw shows what the
/// first client did, and it is alice's only session. Returns the client
/// that came back, still attached.
fn drop_and_come_back(server: &Server, login: &str, name: &str) -> Client {
    let mut first = server.tt_as(login, "alice", &[]);
    first.send("echo marker-$((10+1))\n");
    first.wait_for("marker-11");
    first.kill();
    server.wait_state("alice", name, "orphaned");
    let mut second = server.tt_as(login, "alice", &[]);
    second.wait_for("marker-11");
    second.send("echo marker-$((20+2))\n");
    second.wait_for("marker-22");
    assert_eq!(
        server.list("alice").len(),
        1,
        "a second session was created"
    );
    second
}

#[test]
fn with_on_shell_attach_a_plain_login_resumes_the_last_detached_session() {
    let server = Server::start_with(Options {
        sessions: "on_shell = \"attach\"",
        ..Default::default()
    });
    // OpenSSH: a shell, dropped, then a plain login again.
    let _back = drop_and_come_back(&server, "alice", "0");
    // None detached now: a plain login starts a new session.
    let mut third = server.tt("alice", &[]);
    third.send("echo marker-$((30+3))\n");
    third.wait_for("marker-33");
    assert_eq!(server.list("alice").len(), 2);
    // paramiko's invoke_shell, as phone apps open a shell (as bob, who
    // has no session yet).
    let out = server.paramiko("bob", &["bob"], &["shell_twice"]);
    let lines = stdout(&out);
    assert!(lines.contains("reattached=ok"), "{lines}");
    assert!(lines.contains("sessions=1"), "{lines}");
}

#[test]
fn a_plain_login_names_the_detached_sessions_before_the_new_shell() {
    let server = Server::start();
    // None detached: no notice.
    let mut first = server.tt("alice", &[]);
    first.send("echo first-$((1+1))\n");
    first.wait_for("first-2");
    assert!(!first.output().contains("detached"), "{}", first.output());
    first.kill();
    server.wait_state("alice", "0", "orphaned");
    assert!(server.run("alice", &["new", "-d", "work"]).status.success());
    let mut second = server.tt("alice", &[]);
    second.send("echo second-$((2+2))\n");
    let output = second.wait_for("second-4");
    // In the first redraw, as the screen's first line.
    let notice = "keepsh: 2 detached sessions: work, 0 (to resume one: \
                  ssh -t HOST attach work, or log in as alice+work)";
    let at = output.find(notice).unwrap_or_else(|| panic!("{output:?}"));
    assert!(at < output.find("second-4").expect("echo"), "{output:?}");
    // It is the session's own first output: a client attaching later sees
    // it too.
    let name = server
        .list("alice")
        .into_iter()
        .find(|s| s["state"] == "attached")
        .expect("the new session")["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let out = server.run("alice", &["history", &name]);
    assert!(
        stdout(&out).starts_with("keepsh: 2 detached sessions"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_program_inherits_its_terminal_and_no_other_descriptor() {
    let server = Server::start();
    // Other sessions are open while this one starts: none of their PTYs may
    // leak into it (a leaked master keeps that session's shell alive forever).
    for name in ["one", "two"] {
        let out = server.run("alice", &["new", "-d", name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = server.run("alice", &["new", "--", "ls", "-1", "/proc/self/fd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fds: Vec<String> = stdout(&out).split_whitespace().map(String::from).collect();
    // 0-2: the terminal; 3: ls's own handle on the directory it lists.
    assert_eq!(fds, ["0", "1", "2", "3"]);
}
