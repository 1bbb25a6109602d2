//! A fresh start with no [[users]]: the OS user may log in from this machine
//! without editing anything; listening beyond loopback is refused.

use crate::harness::{DEADLINE, Server, openssh, run_with_deadline, stdout};

#[test]
fn with_no_users_a_client_key_is_generated_and_the_printed_command_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("home without ~/.ssh");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[server]\nlisten = [\"127.0.0.1:0\"]\n").expect("write");
    let home_path = home.path().to_str().expect("utf8").to_owned();
    let server = Server::launch(dir, &config, &[("HOME", &home_path)]);
    let host_key = server.dir.path().join("keys/ssh_host_ed25519_key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&host_key)
            .expect("host key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let printed = server.stdout();
    assert!(printed.contains("SHA256:"), "{printed}");
    let line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("ssh -i "))
        .unwrap_or_else(|| panic!("no ssh command printed:\n{printed}"));
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ssh"));
    let mut cmd = openssh("LogLevel=ERROR", true);
    cmd.args(words)
        .arg("version")
        .current_dir(server.dir.path());
    let out = run_with_deadline(cmd, DEADLINE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).starts_with("keepsh "));
}

#[test]
fn with_no_users_listening_beyond_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[server]\nlisten = [\"0.0.0.0:0\"]\n").expect("write");
    let out = crate::harness::keepsh(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
}
