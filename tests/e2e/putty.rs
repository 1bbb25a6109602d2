//! PuTTY's plink as a client: key and password login, exec with stdout,
//! stderr and exit status, a shell with a PTY, reattach. (russh's issue
//! #156 reported PuTTY receiving no data.)

use std::process::Command;

use crate::harness::{ALICE_PASSWORD, Client, DEADLINE, Server, run_with_deadline, stderr, stdout};

/// A plink command for alice against `server` that logs in with her
/// password (no key offered).
fn plink_password(server: &Server) -> Command {
    let mut cmd = plink_base(server);
    cmd.args(["-pw", ALICE_PASSWORD, "-noagent"]).args([
        "-P",
        &server.port.to_string(),
        "alice@127.0.0.1",
    ]);
    cmd
}

/// A plink command for alice against `server`, with her key converted to PPK.
fn plink(server: &Server) -> Command {
    let ppk = server.dir.path().join("alice.ppk");
    if !ppk.exists() {
        let out = run_with_deadline(
            {
                let mut cmd = Command::new("puttygen");
                cmd.arg(server.key("alice"))
                    .args(["-O", "private", "-o"])
                    .arg(&ppk);
                cmd
            },
            DEADLINE,
        );
        assert!(out.status.success(), "puttygen: {}", stderr(&out));
    }
    let mut cmd = plink_base(server);
    cmd.arg("-i")
        .arg(&ppk)
        .args(["-P", &server.port.to_string(), "alice@127.0.0.1"]);
    cmd
}

/// plink in batch mode, pinned to the server's host key fingerprint.
fn plink_base(server: &Server) -> Command {
    let printed = server.stdout();
    let fingerprint = printed
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .expect("the server printed its host key fingerprint");
    let mut cmd = Command::new("plink");
    cmd.args(["-batch", "-hostkey", fingerprint]);
    cmd
}

#[test]
fn plink_runs_commands_and_shells_and_reattaches() {
    let server = Server::start();
    let mut version = plink(&server);
    version.arg("version");
    let out = run_with_deadline(version, DEADLINE);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("keepsh "), "{}", stdout(&out));
    let mut missing = plink(&server);
    missing.args(["attach", "no-such-session"]);
    let out = run_with_deadline(missing, DEADLINE);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keepsh: no session"),
        "{}",
        stderr(&out)
    );

    let mut shell = plink_password(&server);
    shell.args(["-t", "new", "putty"]);
    let mut client = Client::in_terminal(&shell, 80, 24);
    client.send("echo from-putty-$((6*7))\n");
    client.wait_for("from-putty-42");
    // plink passes its terminal's SIGWINCH on as a window-change.
    client.resize(100, 30);
    server.wait_size("alice", "putty", (100, 30));
    client.send("stty size\n");
    client.wait_for("30 100");
    assert!(
        server
            .log()
            .contains("authenticated user=alice method=\"password\""),
        "{}",
        server.log()
    );
    client.kill();
    server.wait_state("alice", "putty", "orphaned");

    let mut again = plink(&server);
    again.args(["-t", "attach", "putty"]);
    let mut client = Client::in_terminal(&again, 100, 30);
    client.wait_for("30 100");
    client.send("exit 6\n");
    assert_eq!(client.wait_exit(), 6);
}
