//! SFTP and scp (which is SFTP since OpenSSH 9.0): OpenSSH's sftp-server
//! behind a `subsystem sftp` channel, judged by OpenSSH's sftp and scp and
//! by paramiko's SFTP client.

use std::path::Path;
use std::process::Output;

use crate::harness::{
    Client, DEADLINE, Options, Server, run_with_deadline, stderr, stdout, through_master,
};

/// 1 MiB that no compression or pattern could fake.
fn random_file(server: &Server, name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for byte in &mut data {
        // xorshift64*: deterministic, incompressible enough.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *byte = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
    }
    let path = server.dir.path().join(name);
    std::fs::write(&path, &data).expect("write test file");
    (path, data)
}

/// The file uploaded to `remote` and downloaded to `back` are `data`.
fn assert_round_trip(remote: &std::path::Path, back: &std::path::Path, data: &[u8]) {
    let uploaded = std::fs::read(remote).expect("uploaded");
    assert!(uploaded == data, "upload differs");
    let downloaded = std::fs::read(back).expect("downloaded");
    assert!(downloaded == data, "download differs");
}

/// Runs OpenSSH's `sftp -b` with `commands` (one per line) as alice,
/// through the master at `master` when given.
fn sftp_batch(server: &Server, commands: &[String], master: Option<&Path>) -> Output {
    let batch = server.dir.path().join("batch");
    std::fs::write(&batch, commands.join("\n") + "\n").expect("batch");
    let mut cmd = server.file_transfer("sftp", "alice");
    if let Some(master) = master {
        cmd = through_master(cmd, master);
    }
    cmd.arg("-b").arg(&batch).arg("alice@127.0.0.1");
    run_with_deadline(cmd, DEADLINE)
}

/// `put LOCAL REMOTE` then `get REMOTE BACK`.
fn put_get(local: &Path, remote: &Path, back: &Path) -> [String; 2] {
    [
        format!("put {} {}", local.display(), remote.display()),
        format!("get {} {}", remote.display(), back.display()),
    ]
}

#[test]
fn sftp_puts_and_gets_a_mebibyte_byte_identical() {
    let server = Server::start();
    let (local, data) = random_file(&server, "local.bin");
    let remote = server.dir.path().join("remote.bin");
    let back = server.dir.path().join("back.bin");
    let mut commands = vec!["pwd".to_owned()];
    commands.extend(put_get(&local, &remote, &back));
    let out = sftp_batch(&server, &commands, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_round_trip(&remote, &back, &data);
    // sshd's Subsystem runs in the user's home directory; so does keepsh's.
    let home = std::env::var("HOME").expect("HOME");
    assert!(
        stdout(&out).contains(&format!("Remote working directory: {home}")),
        "{}",
        stdout(&out)
    );
    // The channel ended with the program: nothing was left behind.
    assert!(
        server.log().contains("sftp subsystem ended status=0"),
        "{}",
        server.log()
    );
}

#[test]
fn scp_copies_both_ways_byte_identical() {
    let server = Server::start();
    let (local, data) = random_file(&server, "scp-local.bin");
    let remote = server.dir.path().join("scp-remote.bin");
    let back = server.dir.path().join("scp-back.bin");
    let mut up = server.file_transfer("scp", "alice");
    up.arg(&local)
        .arg(format!("alice@127.0.0.1:{}", remote.display()));
    let out = run_with_deadline(up, DEADLINE);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut down = server.file_transfer("scp", "alice");
    down.arg(format!("alice@127.0.0.1:{}", remote.display()))
        .arg(&back);
    let out = run_with_deadline(down, DEADLINE);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_round_trip(&remote, &back, &data);
}

#[test]
fn sftp_and_scp_through_one_controlmaster_connection_beside_its_shell() {
    let server = Server::start();
    let master = server.dir.path().join("cm");
    // The first command makes the master: a PTY attached to a new session.
    let mut cmd = through_master(server.ssh("alice"), &master);
    cmd.args(["-tt", "new", "beside-transfers"]);
    let mut shell = Client::spawn(cmd);
    shell.send("echo before-$((6*7))\n");
    shell.wait_for("before-42");
    let (local, data) = random_file(&server, "cm-local.bin");
    let remote = server.dir.path().join("cm-remote.bin");
    let back = server.dir.path().join("cm-back.bin");
    let out = sftp_batch(&server, &put_get(&local, &remote, &back), Some(&master));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_round_trip(&remote, &back, &data);
    let scp_back = server.dir.path().join("cm-scp-back.bin");
    let mut down = through_master(server.file_transfer("scp", "alice"), &master);
    down.arg(format!("alice@127.0.0.1:{}", remote.display()))
        .arg(&scp_back);
    let out = run_with_deadline(down, DEADLINE);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&scp_back).expect("scp download") == data);
    // The shell on the same connection carried on, and nothing logged in
    // a second time.
    shell.send("echo after-$((6*7))\n");
    shell.wait_for("after-42");
    let logins = server.log().matches("authenticated").count();
    assert_eq!(logins, 1, "{}", server.log());
    shell.send("exit\n");
    assert_eq!(shell.wait_exit(), 0);
    let mut exit = through_master(server.ssh("alice"), &master);
    exit.args(["-O", "exit"]);
    run_with_deadline(exit, DEADLINE);
}

#[test]
fn paramiko_sftp_round_trips_a_file_beside_a_shell() {
    let server = Server::start();
    let out = server.run("alice", &["new", "-d", "beside-sftp"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (local, _) = random_file(&server, "pm-local.bin");
    let remote = server.dir.path().join("pm-remote.bin");
    let out = server.paramiko(
        "alice",
        &["alice"],
        &[
            "sftp",
            &local.display().to_string(),
            &remote.display().to_string(),
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("same=True"), "{text}");
    assert!(text.contains("echo=ok"), "{text}");
}

#[test]
fn with_sftp_turned_off_the_subsystem_is_refused_and_the_server_carries_on() {
    let server = Server::start_with(Options {
        server: "sftp_server = \"\"",
        ..Default::default()
    });
    let out = sftp_batch(&server, &["pwd".to_owned()], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("subsystem request failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        server.log().contains("subsystem refused"),
        "{}",
        server.log()
    );
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn legacy_scp_and_mosh_server_are_told_what_to_use_instead() {
    let server = Server::start();
    let (local, _) = random_file(&server, "legacy.bin");
    let mut legacy = server.file_transfer("scp", "alice");
    legacy.arg("-O").arg(&local).arg(format!(
        "alice@127.0.0.1:{}",
        server.dir.path().join("x").display()
    ));
    let out = run_with_deadline(legacy, DEADLINE);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("use scp without -O"),
        "{}",
        stderr(&out)
    );
    // What a mobile app's "mosh" mode runs.
    let out = server.run("alice", &["mosh-server", "new", "-s", "-c", "256"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("keepsh keeps your session itself"), "{err}");
}
