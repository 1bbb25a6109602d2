//! The shell request: a real shell in a persistent session.

use crate::harness::Server;

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
    client.send("echo term=$TERM; stty size; echo ready\n");
    let out = client.wait_for("ready\r\n");
    assert!(out.contains("term=vt220"), "{out}");
    // A pipe has no window size: OpenSSH sends 80x24... or 0x0, which means "unknown".
    let session = server.wait_state("alice", "0", "attached");
    assert!(session["cols"].as_u64().is_some_and(|c| c >= 1));
}

#[test]
fn login_name_plus_session_attaches_or_creates_that_session() {
    let server = Server::start();
    let mut first = server.tt_as("alice+work", "alice", &[]);
    first.send("echo marker-one\n");
    first.wait_for("marker-one");
    first.kill();
    server.wait_state("alice", "work", "orphaned");
    let mut second = server.tt_as("alice+work", "alice", &[]);
    // The replay shows what the first client did.
    second.wait_for("marker-one");
    second.send("echo marker-two\n");
    second.wait_for("marker-two");
    assert_eq!(
        server.list("alice").len(),
        1,
        "a second session was created"
    );
}
