//! PuTTY's plink as a client: exec, a shell with a PTY, exit status,
//! reattach. (russh's issue #156 reported PuTTY receiving no data.)

use std::process::Command;

use crate::harness::{Client, DEADLINE, Server, run_with_deadline, stdout};

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
        assert!(
            out.status.success(),
            "puttygen: {}",
            crate::harness::stderr(&out)
        );
    }
    let printed = server.stdout();
    let fingerprint = printed
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .expect("the server printed its host key fingerprint");
    let mut cmd = Command::new("plink");
    cmd.args(["-batch", "-hostkey", fingerprint, "-i"])
        .arg(&ppk)
        .args(["-P", &server.port.to_string(), "alice@127.0.0.1"]);
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

    let mut shell = plink(&server);
    shell.args(["-t", "new", "putty"]);
    let mut client = Client::spawn(shell);
    client.send("echo from-putty-$((6*7))\n");
    client.wait_for("from-putty-42");
    client.kill();
    server.wait_state("alice", "putty", "orphaned");

    let mut again = plink(&server);
    again.args(["-t", "attach", "putty"]);
    let mut client = Client::spawn(again);
    client.wait_for("from-putty-42");
    client.send("exit 6\n");
    assert_eq!(client.wait_exit(), 6);
}
