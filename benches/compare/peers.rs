//! keepsh's peers in the comparison: a private OpenSSH `sshd` on a loopback
//! port with its own config and keys (never the machine's own sshd or its
//! config), and `tmux` run inside it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{keygen, openssh};

/// The sshd binary Debian's `openssh-server` installs.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Installs Debian's `openssh-server` and `tmux` when they are missing.
pub fn ensure_installed() {
    let mut missing = Vec::new();
    if !Path::new(SSHD).exists() {
        missing.push("openssh-server");
    }
    if which("tmux").is_none() {
        missing.push("tmux");
    }
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {}", missing.join(" "));
    let sudo = if is_root() { None } else { Some("sudo") };
    let apt = |args: &[&str]| {
        let mut cmd = match sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        let status = cmd.status().expect("run apt-get");
        assert!(status.success(), "{cmd:?} failed");
    };
    apt(&["update", "-qq"]);
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(&missing);
    apt(&args);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The full path of `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// The user sshd logs in and tmux runs as: as root, a dedicated
/// `keepsh-bench` user with `/bin/sh` as its shell and an empty home
/// (created when missing), so the machine's dotfiles (e.g. root's
/// `.bashrc`, which bash sources for commands run by sshd) are not measured.
/// Otherwise the user running the benchmark.
pub fn bench_user() -> &'static str {
    static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        if !is_root() {
            eprintln!("not root: sshd runs commands through your own login shell and dotfiles");
            let out = Command::new("id").arg("-un").output().expect("id -un");
            return String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        let exists = Command::new("id")
            .arg(BENCH_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            let status = Command::new("useradd")
                .args(["--system", "--create-home", "--home-dir"])
                .arg(format!("/var/lib/{BENCH_USER}"))
                .args(["--shell", "/bin/sh", BENCH_USER])
                .status()
                .expect("run useradd");
            assert!(status.success(), "useradd {BENCH_USER} failed");
            // "*": no password, but not a locked account, which sshd
            // without PAM would refuse even for key authentication.
            let status = Command::new("usermod")
                .args(["--password", "*", BENCH_USER])
                .status()
                .expect("run usermod");
            assert!(status.success(), "usermod {BENCH_USER} failed");
        }
        BENCH_USER.to_owned()
    })
}

const BENCH_USER: &str = "keepsh-bench";

/// `program` run as [`bench_user`].
fn as_bench_user(program: &str) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", bench_user(), "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

/// A private sshd, killed on drop.
pub struct Sshd {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    key: PathBuf,
    user: String,
}

impl Sshd {
    /// Writes a host key, a client key and an sshd_config into `dir` (made
    /// readable for [`bench_user`], who reads its scripts) and starts sshd in
    /// the foreground on 127.0.0.1; waits until it listens.
    pub fn start(dir: &Path) -> Sshd {
        Sshd::start_on(dir, "127.0.0.1")
    }

    /// As [`Sshd::start`], listening on `address` (`0.0.0.0`: all).
    pub fn start_on(dir: &Path, address: &str) -> Sshd {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the bench dir");
        let host_key = dir.join("sshd_host_ed25519_key");
        let key = dir.join("sshd_client_key");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(key.with_extension("pub"), dir.join("sshd_authorized_keys"))
            .expect("authorized_keys");
        // Privilege separation needs its empty directory (made at boot by
        // the package on systemd machines, missing in containers).
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {address}\n\
                 Port {port}\n\
                 HostKey {host}\n\
                 AuthorizedKeysFile {dir}/sshd_authorized_keys\n\
                 PidFile none\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 StrictModes no\n\
                 MaxStartups 1000\n\
                 LogLevel ERROR\n",
                host = host_key.display(),
                dir = dir.display(),
            ),
        )
        .expect("write sshd_config");
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-o", "LogLevel=INFO", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server listening on")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("sshd did not start listening");
        Sshd {
            child,
            port,
            key,
            user: bench_user().to_owned(),
        }
    }

    /// An OpenSSH client command logged in to this sshd with key auth.
    pub fn ssh(&self) -> Command {
        self.ssh_logging("LogLevel=ERROR")
    }

    /// As [`Sshd::ssh`], to `host` (an address sshd listens on).
    pub fn ssh_at(&self, host: &str) -> Command {
        self.ssh_to("LogLevel=ERROR", host)
    }

    /// As [`Sshd::ssh`], with the client's `LogLevel=...`.
    pub fn ssh_logging(&self, log_level: &str) -> Command {
        self.ssh_to(log_level, "127.0.0.1")
    }

    fn ssh_to(&self, log_level: &str, host: &str) -> Command {
        let mut cmd = openssh(log_level, true);
        cmd.args(["-o", crate::KEX])
            .args(["-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30", "-i"])
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .arg(format!("{}@{host}", self.user))
            .env("TERM", crate::TERM);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (sshd cannot report an ephemeral one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A tmux server on its own socket (`tmux -L NAME`) with a config that only
/// turns the status line off, so a keystroke's echo is the only output.
pub struct Tmux {
    words: Vec<String>,
}

impl Tmux {
    /// Writes the config into `dir`; the server starts with the first session.
    pub fn new(dir: &Path, socket: &str) -> Tmux {
        let config = dir.join(format!("tmux-{socket}.conf"));
        std::fs::write(&config, "set -g status off\n").expect("write tmux.conf");
        let tmux = which("tmux").expect("tmux installed");
        let words = vec![
            tmux.display().to_string(),
            "-L".into(),
            format!("keepsh-bench-{socket}"),
            "-f".into(),
            config.display().to_string(),
        ];
        let tmux = Tmux { words };
        tmux.kill_server();
        tmux
    }

    /// `tmux ARGS` as a command line (to run through ssh).
    pub fn line(&self, args: &[&str]) -> Vec<String> {
        let mut words = self.words.clone();
        words.extend(args.iter().map(|a| a.to_string()));
        words
    }

    /// Runs `tmux ARGS` here, directly; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = as_bench_user(&self.words[0])
            .args(&self.words[1..])
            .args(args)
            .env("TERM", crate::TERM)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a detached session `name` running `command` (80x24 cells).
    pub fn new_session(&self, name: &str, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            name,
            command,
        ]);
    }

    /// Ends the server and all its sessions.
    pub fn kill_server(&self) {
        self.run(&["kill-server"]);
    }

    /// The server process's pid, when it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.run(&["display-message", "-p", "#{pid}"])
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.kill_server();
    }
}
