//! The algorithms keepsh offers, judged by OpenSSH (each one negotiated on
//! its own) and by ssh-audit; a failed negotiation explains itself.

use std::process::Command;

use keepsh::algorithms::Kind;

use crate::harness::{DEADLINE, Options, Server, run_with_deadline, stderr, stdout, wait_until};

/// What this OpenSSH client implements of `query` (`ssh -Q cipher`).
fn openssh_has(query: &str) -> Vec<String> {
    let out = run_with_deadline(
        {
            let mut cmd = Command::new("ssh");
            cmd.args(["-Q", query]);
            cmd
        },
        DEADLINE,
    );
    stdout(&out).lines().map(str::to_owned).collect()
}

/// `ssh alice version` with these `-o` options.
fn version_with(server: &Server, options: &[&str]) -> std::process::Output {
    let mut cmd = server.ssh("alice");
    for option in options {
        cmd.args(["-o", option]);
    }
    cmd.arg("version");
    run_with_deadline(cmd, DEADLINE)
}

#[test]
fn a_client_with_only_ctr_and_non_etm_macs_connects_with_the_defaults() {
    // libssh2 1.10's offer: AES-CTR and plain HMAC-SHA2, no AEAD, no EtM.
    let server = Server::start();
    for options in [
        &["Ciphers=aes128-ctr", "MACs=hmac-sha2-256"][..],
        &["Ciphers=aes256-ctr", "MACs=hmac-sha2-512"],
        &["Ciphers=aes128-gcm@openssh.com"],
    ] {
        let out = version_with(&server, options);
        assert!(out.status.success(), "{options:?}: {}", stderr(&out));
    }
}

#[test]
fn every_supported_kex_cipher_and_mac_negotiates_with_openssh() {
    let server = Server::start_with(Options {
        server: "kex_algorithms = \"+ecdh-sha2-*,diffie-hellman-*\"\n\
                 ciphers = \"+aes*-cbc\"\nmacs = \"+hmac-sha1*\"",
        ..Default::default()
    });
    let mut tried = 0;
    for (kind, query, option, extra) in [
        (Kind::Kex, "kex", "KexAlgorithms", None),
        (Kind::Cipher, "cipher", "Ciphers", None),
        // A MAC is used only with a cipher that is not AEAD.
        (Kind::Mac, "mac", "MACs", Some("Ciphers=aes128-ctr")),
    ] {
        let theirs = openssh_has(query);
        for name in kind.supported() {
            if !theirs.iter().any(|t| t == name) {
                continue; // e.g. mlkem768x25519-sha256 before OpenSSH 9.9
            }
            let choice = format!("{option}={name}");
            let mut options = vec![choice.as_str()];
            options.extend(extra);
            let out = version_with(&server, &options);
            assert!(
                out.status.success() && stdout(&out).starts_with("keepsh "),
                "{choice}: {}",
                stderr(&out)
            );
            tried += 1;
        }
    }
    assert!(tried >= 20, "only {tried} algorithms tried");
}

#[test]
fn a_failed_negotiation_is_logged_with_the_offer_and_the_line_that_fixes_it() {
    let server = Server::start();
    for (options, want) in [
        (
            &["Ciphers=aes128-ctr", "MACs=hmac-sha1"][..],
            "no matching MAC with 127.0.0.1:",
        ),
        (
            &["Ciphers=aes128-cbc"],
            "no matching cipher with 127.0.0.1:",
        ),
        (
            &["KexAlgorithms=diffie-hellman-group1-sha1"],
            "no matching key exchange method with 127.0.0.1:",
        ),
    ] {
        let out = version_with(&server, options);
        assert_eq!(out.status.code(), Some(255), "{options:?} connected");
        wait_until("the negotiation's log line", DEADLINE, || {
            server.log().contains(want)
        });
    }
    let log = server.log();
    let mac = log
        .lines()
        .find(|l| l.contains("no matching MAC"))
        .expect("MAC line");
    assert!(mac.contains("(SSH-2.0-OpenSSH_"), "{mac}");
    assert!(mac.contains("their offer: hmac-sha1"), "{mac}");
    assert!(
        mac.contains("set macs = \"+hmac-sha1\" in [server]"),
        "{mac}"
    );
    let cipher = log
        .lines()
        .find(|l| l.contains("no matching cipher"))
        .expect("cipher line");
    assert!(cipher.contains("ciphers = \"+aes128-cbc\""), "{cipher}");
    let kex = log
        .lines()
        .find(|l| l.contains("no matching key exchange method"))
        .expect("kex line");
    assert!(kex.contains("keepsh implements none of them"), "{kex}");
    // The server carries on.
    assert!(server.run("alice", &["version"]).status.success());
}

#[test]
fn a_removed_algorithm_is_no_longer_offered() {
    let server = Server::start_with(Options {
        server: "ciphers = \"-aes128-ctr\"\nmacs = \"^hmac-sha2-512\"",
        ..Default::default()
    });
    let out = version_with(&server, &["Ciphers=aes128-ctr"]);
    assert_eq!(out.status.code(), Some(255));
    let out = version_with(&server, &["Ciphers=aes256-ctr", "MACs=hmac-sha2-512"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn ssh_audit_finds_no_failure_in_the_defaults() {
    let server = Server::start();
    let mut cmd = crate::harness::python();
    cmd.args(["-m", "ssh_audit"]);
    // The harness exempts 127.0.0.1 from per-source penalties, so the
    // connection-rate (DHEat) probe would only measure that exemption.
    cmd.args([
        "-n",
        "--skip-rate-test",
        "-p",
        &server.port.to_string(),
        "127.0.0.1",
    ]);
    let out = run_with_deadline(cmd, DEADLINE * 3);
    let report = stdout(&out);
    assert!(report.contains("(enc) aes128-ctr"), "{report}");
    assert!(report.contains("kex-strict-s-v00@openssh.com"), "{report}");
    assert!(!report.contains("[fail]"), "{report}");
    // ssh-audit's exit codes: 0 good, 2 warnings only (3 is a failure,
    // 1 a connection error).
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "exit {:?}: {report}",
        out.status.code()
    );
}
