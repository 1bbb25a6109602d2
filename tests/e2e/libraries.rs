//! The SSH libraries behind the mobile apps, each driving the real server
//! as an app would: login, commands, a PTY attached to a session, a
//! window-change, a dropped connection and a reattach.

use crate::harness::{
    Client, DEADLINE, Options, Server, run_with_deadline, stderr, stdout, wait_until,
};

/// What every library client prints after the whole round: a command's
/// stdout and exit status, a failing command's stderr and exit status,
/// each login of `logins`, typed echo, window-change and reattach.
fn assert_the_whole_round(text: &str, logins: &[&str]) {
    assert!(text.contains("exec version status=0 out=keepsh "), "{text}");
    assert!(
        text.contains("exec attach status=1 out= err=keepsh: no session"),
        "{text}"
    );
    let logins = logins.iter().map(|l| format!("{l}=ok"));
    let rest = ["echo=ok", "resize=ok", "reattach=ok"].map(String::from);
    for fact in logins.chain(rest) {
        assert!(text.contains(&fact), "{fact}: {text}");
    }
}

/// A session for the clients to attach to.
fn phone(server: &Server) {
    let out = server.run("alice", &["new", "-d", "phone"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn libssh2_logs_in_runs_commands_attaches_resizes_and_reattaches() {
    let server = Server::start();
    phone(&server);
    let out = server.libssh2("alice", "all");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("version=1.10"), "{text}");
    assert_the_whole_round(&text, &["key", "password"]);
}

#[test]
fn libssh2_offering_only_hmac_sha1_is_refused_and_the_log_names_the_fix() {
    let server = Server::start();
    let out = server.libssh2("alice", "sha1-mac");
    let text = stdout(&out);
    assert!(text.contains("sha1-mac=refused"), "{text}");
    wait_until("the negotiation's log line", DEADLINE, || {
        server.log().contains("no matching MAC")
    });
    let log = server.log();
    assert!(log.contains("(SSH-2.0-libssh2_1.10"), "{log}");
    assert!(log.contains("their offer: hmac-sha1"), "{log}");
    assert!(
        log.contains("set macs = \"+hmac-sha1\" in [server]"),
        "{log}"
    );
}

#[test]
fn libssh_logs_in_runs_commands_attaches_resizes_and_reattaches() {
    let server = Server::start();
    phone(&server);
    let out = server.libssh("alice");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("version=0.10"), "{text}");
    assert_the_whole_round(&text, &["key", "password"]);
}

#[test]
fn node_ssh2_logs_in_runs_commands_attaches_resizes_and_reattaches() {
    let server = Server::start();
    phone(&server);
    let out = server.node_ssh2("alice");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert_the_whole_round(&text, &["key", "password"]);
}

#[test]
fn asyncssh_logs_in_runs_commands_attaches_resizes_and_reattaches() {
    let server = Server::start();
    phone(&server);
    let out = server.asyncssh("alice");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert_the_whole_round(&text, &["key", "password"]);
}

#[test]
fn go_x_crypto_ssh_logs_in_runs_commands_attaches_resizes_and_reattaches() {
    let server = Server::start();
    phone(&server);
    let out = server.go_ssh("alice");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("hostkey=ssh-ed25519"), "{text}");
    assert_the_whole_round(&text, &["key", "password"]);
    // Offering only AES-128 (what apps that trim x/crypto's list send).
    assert!(text.contains("only aes128-gcm@openssh.com=ok"), "{text}");
    assert!(text.contains("only aes128-ctr=ok"), "{text}");
}

#[test]
fn dropbear_logs_in_runs_commands_attaches_resizes_and_reattaches() {
    let server = Server::start();
    phone(&server);
    // Key login: exec with stdout, stderr and exit status.
    let mut cmd = server.dbclient("alice", Some("alice"));
    cmd.arg("version");
    let out = run_with_deadline(cmd, DEADLINE);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("keepsh "), "{}", stdout(&out));
    let mut cmd = server.dbclient("alice", Some("alice"));
    cmd.args(["attach", "no-such-session"]);
    let out = run_with_deadline(cmd, DEADLINE);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keepsh: no session"),
        "{}",
        stderr(&out)
    );
    // Password login with a PTY attached to the session (dbclient asks
    // for one only from a terminal); typed echo; the terminal resized.
    let mut cmd = server.dbclient("alice", None);
    cmd.env("DROPBEAR_PASSWORD", crate::harness::ALICE_PASSWORD)
        .args(["-t", "attach", "phone"]);
    let mut phone = Client::in_terminal(&cmd, 80, 24);
    phone.send("echo typed-$((6*7))\n");
    phone.wait_for("typed-42");
    phone.resize(100, 30);
    server.wait_size("alice", "phone", (100, 30));
    phone.send("stty size\n");
    phone.wait_for("30 100");
    // Dropped without a goodbye, then reattached: the screen comes back.
    phone.kill();
    let mut cmd = server.dbclient("alice", Some("alice"));
    cmd.args(["-t", "attach", "phone"]);
    let mut back = Client::in_terminal(&cmd, 100, 30);
    back.wait_for("30 100");
}

/// JSch 0.1.x's needs: an ECDSA P-256 host key and ecdh-sha2-nistp256.
const JSCH_OPT_IN: &str = "host_keys = [\"keys/ssh_host_ed25519_key\", \"keys/ssh_host_ecdsa_key\"]\n\
                           kex_algorithms = \"+ecdh-sha2-nistp256\"";

#[test]
fn jsch_logs_in_runs_commands_attaches_resizes_and_reattaches_with_the_ecdsa_opt_in() {
    let server = Server::start_with(Options {
        server: JSCH_OPT_IN,
        ..Default::default()
    });
    let key = server.dir.path().join("keys/ssh_host_ecdsa_key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("generated")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let printed = server.stdout();
    assert!(
        printed.contains("ssh_host_ecdsa_key (generated, ecdsa-sha2-nistp256): SHA256:"),
        "{printed}"
    );
    phone(&server);
    let out = server.jsch("alice", crate::harness::ALICE_PASSWORD);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("hostkey=ecdsa-sha2-nistp256"), "{text}");
    // JSch 0.1.x cannot read Ed25519 keys: password only.
    assert_the_whole_round(&text, &["password"]);
}

#[test]
fn without_the_opt_in_jsch_is_refused_and_the_log_names_the_fix() {
    let server = Server::start();
    let out = server.jsch("alice", crate::harness::ALICE_PASSWORD);
    assert!(!out.status.success(), "{}", stdout(&out));
    wait_until("the negotiation's log line", DEADLINE, || {
        server.log().contains("no matching key exchange method")
    });
    let log = server.log();
    assert!(log.contains("(SSH-2.0-JSCH-0.1."), "{log}");
    assert!(
        log.contains("set kex_algorithms = \"+ecdh-sha2-nistp256\" in [server]"),
        "{log}"
    );
}
