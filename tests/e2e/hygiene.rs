//! SSH hygiene: what is offered, what is refused, and a server that keeps
//! accepting when it runs out of file descriptors.

use std::net::TcpStream;

use russh::ChannelMsg;

use crate::harness::{
    DEADLINE, Server, block_on, request_replies, run_with_deadline, stderr, wait_until,
};

/// `ssh -v ARGS version` as alice; returns (success, stderr).
fn ssh_verbose(server: &Server, options: &[&str]) -> (bool, String) {
    let mut cmd = server.ssh_debug("alice");
    cmd.args(options).arg("version");
    let out = run_with_deadline(cmd, DEADLINE);
    (out.status.success(), stderr(&out))
}

#[test]
fn only_strong_algorithms_and_two_auth_methods_are_offered() {
    let server = Server::start();
    let (ok, log) = ssh_verbose(&server, &["-C"]);
    assert!(ok, "{log}");
    assert!(
        log.contains("compression: none"),
        "compression negotiated:\n{log}"
    );
    assert!(log.contains("Server host key: ssh-ed25519"), "{log}");
    assert!(
        log.contains("Authentications that can continue: publickey,password"),
        "{log}"
    );
    // A non-AEAD cipher, so that a MAC is negotiated at all.
    let (ok, log) = ssh_verbose(&server, &["-o", "Ciphers=aes256-ctr"]);
    assert!(
        ok && log.contains("-etm@openssh.com compression: none"),
        "{log}"
    );
    for (options, what) in [
        (
            ["Ciphers=aes256-ctr", "MACs=hmac-sha1,hmac-md5"],
            "no matching MAC",
        ),
        (
            ["HostKeyAlgorithms=ssh-rsa", "Ciphers=aes256-ctr"],
            "no matching host key type",
        ),
        (
            ["Ciphers=aes128-cbc,3des-cbc", "MACs=hmac-sha2-256"],
            "no matching cipher",
        ),
    ] {
        let (ok, log) = ssh_verbose(&server, &["-o", options[0], "-o", options[1]]);
        assert!(!ok, "{options:?} accepted");
        assert!(log.contains(what), "{options:?}:\n{log}");
    }
}

#[test]
fn forwarding_agent_and_x11_requests_are_refused() {
    let server = Server::start();
    block_on(async {
        let handle = server.russh_key("alice").await;
        assert!(
            handle
                .channel_open_direct_tcpip("127.0.0.1", 22, "127.0.0.1", 5000)
                .await
                .is_err(),
            "direct-tcpip (ssh -L) accepted"
        );
        assert!(
            handle.tcpip_forward("127.0.0.1", 0).await.is_err(),
            "tcpip-forward (ssh -R) accepted"
        );
        let mut channel = handle
            .channel_open_session()
            .await
            .expect("session channel");
        channel
            .agent_forward(true)
            .await
            .expect("agent request sent");
        channel
            .request_x11(true, false, "MIT-MAGIC-COOKIE-1", "00", 0)
            .await
            .expect("x11 request sent");
        let replies = request_replies(&mut channel, 2).await;
        assert_eq!(replies, [false, false]);
        // The connection is still good for what is offered.
        channel.exec(true, "version").await.expect("exec");
        let mut out = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout(DEADLINE, channel.wait()).await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => {
                    assert_eq!(exit_status, 0);
                    break;
                }
                _ => {}
            }
        }
        assert!(String::from_utf8_lossy(&out).starts_with("keepsh "));
    });
}

#[test]
fn running_out_of_file_descriptors_does_not_stop_the_server() {
    // Admission limits above the descriptor limit, so descriptors run out first.
    let options = crate::harness::Options {
        server: "max_startups = 1000\nmax_startups_per_source = 1000",
        ..Default::default()
    };
    let server = Server::start_with_fd_limit(options, "-n 40");
    // Far more connections than descriptors: accept fails with EMFILE.
    let flood: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", server.port)).ok())
        .collect();
    wait_until("accept to fail with EMFILE", DEADLINE, || {
        server.log().contains("accept failed")
    });
    drop(flood);
    wait_until("logins to work again", DEADLINE, || {
        server.run("alice", &["version"]).status.success()
    });
}

#[test]
fn the_server_raises_its_open_files_limit_but_programs_get_the_original() {
    let server = Server::start_with_fd_limit(crate::harness::Options::default(), "-S -n 256");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let soft: u64 = open_files
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("soft limit");
    assert!(soft > 256, "not raised: {open_files}");
    let out = server.run("alice", &["new", "--", "sh", "-c", "'ulimit -n'"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "256");
}
