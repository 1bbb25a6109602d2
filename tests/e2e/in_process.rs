//! The server run inside another program (this test), as the binary runs
//! it: `server::startup::serve` with the session-host program given, and
//! a shutdown of the caller's choosing.

use std::path::Path;

use keepsh::config::Config;
use keepsh::server::startup::{Launch, serve};

use crate::harness::{
    DEADLINE, Options, Server, keepsh_binary, openssh, run_with_deadline, session_processes,
    stderr, stdout, wait_until,
};

/// `ssh alice@127.0.0.1 -p PORT ARGS` with alice's key in `dir`.
fn ssh(dir: &Path, port: u16, args: &[&str]) -> std::process::Output {
    let mut cmd = openssh("LogLevel=ERROR", true);
    cmd.args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(dir.join("alice"))
        .args(["-p", &port.to_string(), "alice@127.0.0.1"])
        .args(args);
    run_with_deadline(cmd, DEADLINE)
}

#[test]
fn the_server_runs_in_process_starting_sessions_with_the_program_it_is_given() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Server::write_config(&dir, &Options::default());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("valid config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let launch = Launch {
            host_program: keepsh_binary().into(),
            program_open_files: None,
        };
        let shutdown = async {
            let _ = stopped.await;
        };
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(serve(config, launch, shutdown))
    });
    wait_until("the in-process server to listen", DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let out = ssh(dir.path(), port, &["new", "-d", "inproc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&ssh(dir.path(), port, &["list"]));
    assert!(listed.contains("inproc"), "{listed}");
    // The session process is the keepsh binary, not this test program.
    let processes = session_processes(dir.path());
    assert_eq!(processes.len(), 1, "{processes:?}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", processes[0])).expect("exe");
    let binary = std::fs::canonicalize(keepsh_binary()).expect("binary");
    assert_eq!(exe, binary);

    let out = ssh(dir.path(), port, &["kill", "inproc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stop.send(()).expect("server running");
    let served = server.join().expect("server thread");
    assert!(served.is_ok(), "{served:?}");
    wait_until("the killed session's process to exit", DEADLINE, || {
        session_processes(dir.path()).is_empty()
    });
}
