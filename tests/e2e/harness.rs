//! The shared test harness: a real `keepsh` server on 127.0.0.1 with an
//! ephemeral port and a temp dir, driven by the real OpenSSH client and by an
//! in-process russh client. Every wait has a deadline (one loop: [`poll`]);
//! nothing sleeps to synchronise; a test holding a server past
//! [`TEST_LIMIT`] aborts the run, and one without a server runs its
//! programs with [`run_with_deadline`].

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, load_secret_key};

/// Default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// alice's password in every test server.
pub const ALICE_PASSWORD: &str = "correct horse battery staple";

/// The longest any end-to-end test may run: a test still holding a
/// server past this aborts the test binary, naming the limit (a hang shows
/// as a failure within minutes, not as a CI run that never ends).
pub const TEST_LIMIT: Duration = Duration::from_secs(300);

/// How often [`poll`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The one poll-with-deadline loop: calls `probe` every 20 ms until it
/// yields a value, or `None` once `timeout` has passed.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `condition` until it holds or `timeout` passes; panics naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    if poll(timeout, || condition().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Aborts the test binary if it is not dropped within [`TEST_LIMIT`]:
/// dropping the sender is what stops it.
struct Watchdog {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TEST_LIMIT) {
                eprintln!("{test}: still running after {TEST_LIMIT:?}; aborting the test run");
                std::process::abort();
            }
        });
        Watchdog { _stop: tx }
    }
}

/// The keepsh binary under test.
pub fn keepsh_binary() -> &'static str {
    env!("CARGO_BIN_EXE_keepsh")
}

/// The session executable built with it (`keepsh-session`), which the
/// server finds beside its own binary.
pub fn session_binary() -> &'static str {
    env!("CARGO_BIN_EXE_keepsh-session")
}

/// Runs the keepsh binary with `args` to completion, with a deadline (a
/// server that starts instead of failing is killed and fails the test).
pub fn keepsh(args: &[&std::ffi::OsStr]) -> Output {
    let mut cmd = Command::new(keepsh_binary());
    cmd.args(args);
    run_with_deadline(cmd, DEADLINE)
}

/// argon2id hash of [`ALICE_PASSWORD`], computed once with `keepsh hash-password`.
fn alice_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut child = Command::new(keepsh_binary())
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run keepsh hash-password");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{ALICE_PASSWORD}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("hash-password output");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    })
}

/// Makes an Ed25519 key pair with ssh-keygen at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

/// Reads a captured stream into a shared buffer on a thread.
fn capture(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    capture_into(stream, Arc::clone(&buffer));
    buffer
}

/// Appends what `stream` yields to `sink`, on a thread.
fn capture_into(mut stream: impl Read + Send + 'static, sink: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return,
                Ok(n) => sink.lock().expect("buffer").extend_from_slice(&chunk[..n]),
            }
        }
    });
}

/// A running keepsh server.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its directory (config, keys, client keys).
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    /// The test's time limit, held as long as the server (`None` for the
    /// benchmark, which holds one server for its whole run).
    _watchdog: Option<Watchdog>,
}

/// Extra TOML for [`Server::start_with`].
#[derive(Default)]
pub struct Options {
    /// Lines added to `[server]`.
    pub server: &'static str,
    /// Lines added to `[sessions]`.
    pub sessions: &'static str,
    /// KEEPSH_LOG, when not the default `info,keepsh=debug`.
    pub log: Option<&'static str>,
    /// The address to listen on, when not `127.0.0.1:0` (the flaky-link
    /// bench listens on every address).
    pub listen: Option<&'static str>,
}

impl Server {
    /// A server with users alice (key + password) and bob (key), and
    /// `/bin/sh` as the shell.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// As [`Server::start`] with extra configuration.
    pub fn start_with(options: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Server::write_config(&dir, &options);
        let log = options.log.map(|log| ("KEEPSH_LOG", log));
        Server::launch(dir, &config, log.as_slice())
    }

    /// As [`Server::start`], with the server's open files limited by the
    /// shell's `ulimit` with `limit`: "-n 40" sets the soft and hard
    /// RLIMIT_NOFILE, "-S -n 256" the soft one only.
    pub fn start_with_fd_limit(options: Options, limit: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Server::write_config(&dir, &options);
        let script = format!("ulimit {limit} && exec \"$0\" \"$@\"");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, keepsh_binary(), "--config"])
            .arg(&config);
        Server::spawn(dir, cmd)
    }

    /// Writes the test users' keys and server.toml into `dir`.
    pub fn write_config(dir: &tempfile::TempDir, options: &Options) -> PathBuf {
        for user in ["alice", "bob", "mallory"] {
            keygen(&dir.path().join(user));
        }
        let public = |user: &str| {
            std::fs::read_to_string(dir.path().join(format!("{user}.pub")))
                .expect("pub key")
                .trim()
                .to_owned()
        };
        // Loopback is not exempt from per-source penalties by default; the
        // tests' own connections from 127.0.0.1 are (their raw sockets and
        // refused logins would otherwise lock the next test step out). The
        // penalty test uses 127.0.0.2 and 127.0.0.3.
        let exempt = if options.server.contains("penalty_exempt") {
            ""
        } else {
            "penalty_exempt = [\"127.0.0.1\"]"
        };
        let config = format!(
            r#"[server]
listen = ["{listen}"]
max_auth_attempts = 3
{exempt}
{server}
[sessions]
shell = "/bin/sh"
{sessions}
[[users]]
name = "alice"
password_hash = "{hash}"
authorized_keys = ["{alice}"]

[[users]]
name = "bob"
authorized_keys_file = "bob.pub"
"#,
            listen = options.listen.unwrap_or("127.0.0.1:0"),
            server = options.server,
            sessions = options.sessions,
            hash = alice_hash(),
            alice = public("alice"),
        );
        let config_path = dir.path().join("server.toml");
        std::fs::write(&config_path, config).expect("write config");
        config_path
    }

    /// Starts the binary on `config` in `dir` with extra environment; waits
    /// for its "listening on" line.
    pub fn launch(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(keepsh_binary());
        cmd.arg("--config").arg(config).envs(env.iter().copied());
        Server::spawn(dir, cmd)
    }

    /// Starts `cmd` (which runs keepsh); waits for its "listening on" line.
    fn spawn(dir: tempfile::TempDir, cmd: Command) -> Server {
        let (log, stdout) = (Arc::default(), Arc::default());
        let (child, port) = Server::spawn_process(cmd, &log, &stdout);
        Server {
            child,
            port,
            dir,
            log,
            stdout,
            _watchdog: Some(Watchdog::start()),
        }
    }

    /// Lifts [`TEST_LIMIT`] from this server (for the benchmark).
    #[allow(dead_code, reason = "the benchmark's; every test keeps the limit")]
    pub fn without_time_limit(mut self) -> Server {
        self._watchdog = None;
        self
    }

    /// Stops the server with `signal` ("KILL", "TERM"), waits for it to
    /// exit, and starts a new one on the same directory, configuration and
    /// state. Its port changes; its log and stdout continue the old ones
    /// (session processes still write to the first server's stderr).
    pub fn restart(&mut self, signal: &str) {
        self.restart_from(signal, Path::new(keepsh_binary()));
    }

    /// As [`Server::restart`], running the keepsh binary at `binary`.
    pub fn restart_from(&mut self, signal: &str, binary: &Path) {
        self.stop(signal);
        let mut cmd = Command::new(binary);
        cmd.arg("--config").arg(self.dir.path().join("server.toml"));
        let (child, port) = Server::spawn_process(cmd, &self.log, &self.stdout);
        self.child = child;
        self.port = port;
    }

    /// Sends `signal` to the server process and waits for it to exit (if
    /// it is still running).
    pub fn stop(&mut self, signal: &str) {
        if self.child.try_wait().expect("try_wait").is_some() {
            return;
        }
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exited = poll(DEADLINE, || self.child.try_wait().expect("try_wait"));
        assert!(exited.is_some(), "keepsh ignored SIG{signal}");
    }

    /// Starts `cmd`, appending its stderr to `log` and stdout to `stdout`;
    /// waits for its "listening on" line.
    fn spawn_process(
        mut cmd: Command,
        log: &Arc<Mutex<Vec<u8>>>,
        stdout: &Arc<Mutex<Vec<u8>>>,
    ) -> (Child, u16) {
        if !cmd.get_envs().any(|(key, _)| key == "KEEPSH_LOG") {
            cmd.env("KEEPSH_LOG", "info,keepsh=debug");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keepsh");
        capture_into(child.stderr.take().expect("stderr"), Arc::clone(log));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));

        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(stdout);
        std::thread::spawn(move || {
            let mut line = String::new();
            while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                    let _ = port_tx.send(port);
                }
                sink.lock()
                    .expect("stdout")
                    .extend_from_slice(line.as_bytes());
                line.clear();
            }
        });
        let port = match port_rx.recv_timeout(DEADLINE) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                panic!(
                    "keepsh did not start; log:\n{}",
                    String::from_utf8_lossy(&log.lock().expect("log"))
                );
            }
        };
        (child, port)
    }

    /// The server process's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout")).into_owned()
    }

    /// The server's log so far, then each session process's
    /// (`state/logs/ID.log`, as the sessions write them).
    pub fn log(&self) -> String {
        let mut log = String::from_utf8_lossy(&self.log.lock().expect("log")).into_owned();
        let logs = self.dir.path().join("state/logs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(logs)
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            log.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        log
    }

    /// Path of a test user's private key.
    pub fn key(&self, user: &str) -> PathBuf {
        self.dir.path().join(user)
    }

    /// An OpenSSH client command for `login` with key `key_user`'s key.
    pub fn ssh_as(&self, login: &str, key_user: &str) -> Command {
        self.ssh_with(login, key_user, true)
    }

    /// An OpenSSH client command; `batch` off lets it ask for a password.
    pub fn ssh_with(&self, login: &str, key_user: &str, batch: bool) -> Command {
        self.ssh_to(
            login,
            key_user,
            batch,
            self.port,
            "LogLevel=ERROR",
            "127.0.0.1",
        )
    }

    /// OpenSSH's `sftp` or `scp` (`program`) with `user`'s key and this
    /// server's port; the caller adds the batch file or the paths
    /// (`user@127.0.0.1:PATH`).
    pub fn file_transfer(&self, program: &str, user: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(self.key(user))
            .args(["-P", &self.port.to_string()]);
        cmd
    }

    /// An OpenSSH client command for `user` to `port` (e.g. a proxy's).
    pub fn ssh_via(&self, user: &str, port: u16) -> Command {
        self.ssh_to(user, user, true, port, "LogLevel=ERROR", "127.0.0.1")
    }

    /// An OpenSSH client command for `user` that logs the negotiation
    /// (LogLevel DEBUG1) on stderr.
    pub fn ssh_debug(&self, user: &str) -> Command {
        self.ssh_to(user, user, true, self.port, "LogLevel=DEBUG1", "127.0.0.1")
    }

    /// An OpenSSH client command for `user` to this server at `host` (an
    /// address it listens on besides loopback).
    #[allow(dead_code, reason = "the flaky-link benchmark's")]
    pub fn ssh_at(&self, user: &str, host: &str) -> Command {
        self.ssh_to(user, user, true, self.port, "LogLevel=ERROR", host)
    }

    fn ssh_to(
        &self,
        login: &str,
        key_user: &str,
        batch: bool,
        port: u16,
        log_level: &str,
        host: &str,
    ) -> Command {
        let mut cmd = openssh(log_level, batch);
        cmd.args(["-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-i"])
            .arg(self.key(key_user))
            .args(["-p", &port.to_string()])
            .arg(format!("{login}@{host}"));
        cmd
    }

    /// An OpenSSH client command for `user` with its own key.
    pub fn ssh(&self, user: &str) -> Command {
        self.ssh_as(user, user)
    }

    /// Runs `ssh user ARGS` to completion (stdin empty), with a deadline.
    pub fn run(&self, user: &str, args: &[&str]) -> Output {
        let mut cmd = self.ssh(user);
        cmd.args(args);
        run_with_deadline(cmd, DEADLINE)
    }

    /// `list --json` for `user`, parsed.
    pub fn list(&self, user: &str) -> Vec<serde_json::Value> {
        let out = self.run(user, &["list", "--json"]);
        assert!(out.status.success(), "list failed: {}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("list --json is JSON")
    }

    /// The `list --json` entry of `user`'s session `name`, if any.
    pub fn session(&self, user: &str, name: &str) -> Option<serde_json::Value> {
        self.list(user).into_iter().find(|s| s["name"] == name)
    }

    /// Waits until `user`'s session `name` is in `state`.
    pub fn wait_state(&self, user: &str, name: &str, state: &str) -> serde_json::Value {
        let mut last = None;
        wait_until(&format!("session {name} to be {state}"), DEADLINE, || {
            last = self.session(user, name);
            last.as_ref().is_some_and(|s| s["state"] == state)
        });
        last.expect("session present")
    }

    /// Waits until `user`'s session `name` has the size `(cols, rows)`: a
    /// client's window-change has arrived. (A client started `in_terminal`
    /// reads its terminal and its SIGWINCH in no fixed order, so a line
    /// typed right after a resize may overtake the window-change.)
    pub fn wait_size(&self, user: &str, name: &str, (cols, rows): (u16, u16)) {
        wait_until(
            &format!("session {name} to be {cols}x{rows}"),
            DEADLINE,
            || {
                self.session(user, name)
                    .is_some_and(|s| s["cols"] == cols && s["rows"] == rows)
            },
        );
    }

    /// Starts `ssh -tt user ARGS` with piped stdin and captured output.
    pub fn tt(&self, user: &str, args: &[&str]) -> Client {
        self.tt_as(user, user, args)
    }

    /// As [`Server::tt`], logging in as `login` with `key_user`'s key.
    pub fn tt_as(&self, login: &str, key_user: &str, args: &[&str]) -> Client {
        let mut cmd = self.ssh_as(login, key_user);
        cmd.arg("-tt").args(args);
        Client::spawn(cmd)
    }

    /// Starts `ssh user ARGS` (no PTY) with piped stdin and captured output.
    pub fn stream(&self, user: &str, args: &[&str]) -> Client {
        let mut cmd = self.ssh(user);
        cmd.args(args);
        Client::spawn(cmd)
    }

    /// Runs a scenario of `clients/paramiko_client.py` (paramiko, a client we
    /// did not write) as `user` offering the keys of `key_users` in order.
    pub fn paramiko(&self, user: &str, key_users: &[&str], scenario: &[&str]) -> Output {
        let keys: Vec<String> = key_users
            .iter()
            .map(|k| self.key(k).display().to_string())
            .collect();
        let mut cmd = python();
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/clients/paramiko_client.py"
        ))
        .args([&self.port.to_string(), user, &keys.join(",")])
        .args(scenario);
        run_with_deadline(cmd, DEADLINE * 3)
    }

    /// Dropbear's client, `dbclient` (Debian's `dropbear-bin`), to this
    /// server as `user`, with `key_user`'s key if any (else it asks for a
    /// password, read from `DROPBEAR_PASSWORD`), and a `HOME` of its own.
    pub fn dbclient(&self, user: &str, key_user: Option<&str>) -> Command {
        let home = self.dir.path().join("dbclient-home");
        std::fs::create_dir_all(&home).expect("dbclient home");
        let mut cmd = Command::new("dbclient");
        cmd.env("HOME", &home)
            .args(["-y", "-y", "-p", &self.port.to_string()]);
        if let Some(key_user) = key_user {
            // dbclient reads only its own key format.
            let converted = home.join(format!("{key_user}.dropbear"));
            if !converted.exists() {
                let mut convert = Command::new("dropbearconvert");
                convert
                    .args(["openssh", "dropbear"])
                    .arg(self.key(key_user))
                    .arg(&converted);
                let out = run_with_deadline(convert, DEADLINE);
                assert!(out.status.success(), "dropbearconvert: {}", stderr(&out));
            }
            cmd.arg("-i").arg(converted);
        }
        cmd.arg(format!("{user}@127.0.0.1"));
        cmd
    }

    /// Runs `clients/asyncssh_client.py` (asyncssh, PyPI) as `user`, with
    /// its key and alice's password.
    pub fn asyncssh(&self, user: &str) -> Output {
        let mut cmd = python();
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/clients/asyncssh_client.py"
        ));
        self.round(cmd, user, &[])
    }

    /// Runs a client program of `clients/` with the arguments they all take
    /// (`PORT USER KEY PASSWORD`: `user`'s key, alice's password), then
    /// `extra`; at most three deadlines.
    fn round(&self, mut cmd: Command, user: &str, extra: &[&str]) -> Output {
        cmd.arg(self.port.to_string())
            .arg(user)
            .arg(self.key(user))
            .arg(ALICE_PASSWORD)
            .args(extra);
        run_with_deadline(cmd, DEADLINE * 3)
    }

    /// Runs `clients/node_ssh2_client.js` (Node's `ssh2`, from npm into
    /// `target/test-node` by scripts/test) as `user`, with its key and
    /// alice's password.
    pub fn node_ssh2(&self, user: &str) -> Output {
        let mut cmd = Command::new("node");
        cmd.env(
            "NODE_PATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-node/node_modules"),
        )
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/clients/node_ssh2_client.js"
        ));
        self.round(cmd, user, &[])
    }

    /// Runs `clients/JschClient.java` (JSch 0.1.55, Debian's
    /// `libjsch-java`) as `user` with `password`, compiled with javac into
    /// this server's directory.
    pub fn jsch(&self, user: &str, password: &str) -> Output {
        let jar = "/usr/share/java/jsch.jar";
        let classes = self.dir.path().join("jsch-classes");
        let mut javac = Command::new("javac");
        javac
            .arg("-d")
            .arg(&classes)
            .args(["-cp", jar])
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/clients/JschClient.java"
            ));
        let built = run_with_deadline(javac, DEADLINE * 3);
        assert!(built.status.success(), "javac: {}", stderr(&built));
        let mut java = Command::new("java");
        java.arg("-cp")
            .arg(format!("{jar}:{}", classes.display()))
            .arg("JschClient")
            .args([&self.port.to_string(), user, password]);
        run_with_deadline(java, DEADLINE * 3)
    }

    /// Runs `clients/go_ssh_client.go` (Go's golang.org/x/crypto/ssh, from
    /// Debian's `golang-golang-x-crypto-dev`) as `user`, with its key and
    /// alice's password. It is built in GOPATH mode against Debian's
    /// sources, with the module proxy off: nothing is downloaded.
    pub fn go_ssh(&self, user: &str) -> Output {
        let binary = self.dir.path().join("go_ssh_client");
        let mut go = Command::new("go");
        go.env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOPROXY", "off")
            .env("GOCACHE", self.dir.path().join("go-cache"))
            .args(["build", "-o"])
            .arg(&binary)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/clients/go_ssh_client.go"
            ));
        let built = run_with_deadline(go, DEADLINE * 3);
        assert!(built.status.success(), "go build: {}", stderr(&built));
        self.round(Command::new(binary), user, &[])
    }

    /// Builds `clients/NAME.c` against `-lLIBRARY` with cc, into this
    /// server's directory; returns the program.
    fn c_client(&self, name: &str, library: &str) -> PathBuf {
        let binary = self.dir.path().join(name);
        let source = format!("{}/tests/e2e/clients/{name}.c", env!("CARGO_MANIFEST_DIR"));
        let mut cc = Command::new("cc");
        cc.arg("-o")
            .arg(&binary)
            .arg(source)
            .arg(format!("-l{library}"));
        let built = run_with_deadline(cc, DEADLINE * 3);
        assert!(built.status.success(), "cc {name}: {}", stderr(&built));
        binary
    }

    /// Runs `clients/libssh2_client.c` (libssh2 1.10, Debian's
    /// `libssh2-1-dev`) as `user` (its key, and alice's password) with
    /// `scenario`.
    pub fn libssh2(&self, user: &str, scenario: &str) -> Output {
        let client = Command::new(self.c_client("libssh2_client", "ssh2"));
        self.round(client, user, &[scenario])
    }

    /// Runs `clients/libssh_client.c` (libssh 0.10, Debian's `libssh-dev`)
    /// as `user`, with its key and alice's password.
    pub fn libssh(&self, user: &str) -> Output {
        let client = Command::new(self.c_client("libssh_client", "ssh"));
        self.round(client, user, &[])
    }

    /// An askpass program (`SSH_ASKPASS`) that answers the passwords in
    /// `answers` in turn, the last one from then on; it counts its calls
    /// in the file it returns alongside.
    pub fn askpass(&self, answers: &[&str]) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let script = self.dir.path().join(format!("askpass-{n}"));
        let calls = self.dir.path().join(format!("askpass-{n}.calls"));
        let mut body = format!(
            "#!/bin/sh\nn=$(cat '{calls}' 2>/dev/null || echo 0)\necho $((n+1)) > '{calls}'\ncase $n in\n",
            calls = calls.display()
        );
        for (i, answer) in answers.iter().enumerate() {
            let pattern = if i + 1 == answers.len() {
                "*".to_owned()
            } else {
                i.to_string()
            };
            body.push_str(&format!("{pattern}) echo '{answer}' ;;\n"));
        }
        body.push_str("esac\n");
        std::fs::write(&script, body).expect("askpass script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        (script, calls)
    }

    /// Connects an in-process russh client and authenticates `user` with its key.
    pub async fn russh_key(&self, user: &str) -> client::Handle<TestClient> {
        let handle = self.russh_connect().await;
        self.russh_login(handle, user).await
    }

    /// Authenticates `user` with its key on a connected russh client.
    pub async fn russh_login(
        &self,
        mut handle: client::Handle<TestClient>,
        user: &str,
    ) -> client::Handle<TestClient> {
        let key = load_secret_key(self.key(user), None).expect("load key");
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), None))
            .await
            .expect("publickey auth exchange");
        assert!(result.success(), "key login of {user} refused");
        handle
    }

    /// Connects an in-process russh client without authenticating.
    pub async fn russh_connect(&self) -> client::Handle<TestClient> {
        russh_connect_to(self.port, client::Config::default()).await
    }
}

/// Connects an in-process russh client with `config` to `port` on
/// loopback (the server, or a proxy in front of it), without
/// authenticating.
pub async fn russh_connect_to(port: u16, config: client::Config) -> client::Handle<TestClient> {
    tokio::time::timeout(
        DEADLINE,
        client::connect(Arc::new(config), ("127.0.0.1", port), TestClient),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Session processes outlive the server by design; a test's end
        // theirs too (their programs then get SIGHUP from the closed PTY).
        for pid in session_processes(self.dir.path()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if std::thread::panicking() {
            eprintln!("---- keepsh log ----\n{}", self.log());
        }
    }
}

/// A terminal emulator (the `vt100` crate, independent of keepsh's own
/// model) that keeps every line scrolled off its top, like a real terminal's
/// scrollback: what a user of an SSH client sees.
pub struct Terminal {
    parser: vt100::Parser<Scrolled>,
}

#[derive(Default)]
struct Scrolled {
    lines: Vec<String>,
}

impl vt100::Callbacks for Scrolled {
    fn on_scroll(&mut self, row: vt100::capture::RowContents<'_>, alternate_screen: bool) {
        if !alternate_screen {
            let mut text = String::new();
            let mut state = vt100::capture::BasicFormattedCaptureState::new();
            let _ = row.write_formatted_basic(&mut text, &mut state);
            self.lines
                .push(vt100::capture::basic_formatted_to_plain(&text).collect());
        }
    }
}

impl Terminal {
    /// A blank terminal of `cols` × `rows` cells.
    pub fn new(cols: u16, rows: u16) -> Terminal {
        let size = |n: u16| std::num::NonZeroU16::new(n).expect("non-zero size");
        Terminal {
            parser: vt100::Parser::new_with_callbacks(
                size(rows),
                size(cols),
                0,
                Scrolled::default(),
            ),
        }
    }

    /// An 80×24 terminal (what `ssh -tt` without a local terminal asks for)
    /// that was sent `bytes`.
    pub fn of(bytes: &[u8]) -> Terminal {
        let mut terminal = Terminal::new(80, 24);
        terminal.process(bytes);
        terminal
    }

    /// Feeds the terminal what a server sent.
    pub fn process(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
    }

    /// The screen.
    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    /// Scrollback rows, then the screen's, as plain text lines.
    pub fn all_text(&self) -> String {
        let mut text = self.parser.callbacks().lines.join("\n");
        text.push('\n');
        text.push_str(&self.screen().contents());
        text
    }

    /// Everything that decides what a user sees and what their keys send:
    /// every cell with its colours and attributes, the cursor, the alternate
    /// screen and the input modes, as one comparable string.
    pub fn state(&self) -> String {
        let s = self.screen();
        format!(
            "{}\ncursor {:?} hidden {} alternate {} modes {:?}",
            s.contents_formatted().escape_debug(),
            s.cursor_position(),
            s.hide_cursor(),
            s.alternate_screen(),
            s.input_mode_formatted(),
        )
    }
}

/// Numbers printed as `n=<i>` tokens in `output`, in order.
pub fn numbers(output: &str) -> Vec<u32> {
    output
        .split(|c: char| c.is_whitespace())
        .filter_map(|t| t.strip_prefix("n="))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Pids of the session processes (`keepsh session-host`) whose state
/// directory is inside `dir`.
pub fn session_processes(dir: &Path) -> Vec<u32> {
    let marker = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("session-host") && c.contains(&marker)
            })
        })
        .collect()
}

/// The Python that has paramiko and ssh-audit: `$KEEPSH_TEST_PYTHON`
/// (scripts/test's virtual environment), else `python3`.
pub fn python() -> Command {
    Command::new(std::env::var_os("KEEPSH_TEST_PYTHON").unwrap_or_else(|| "python3".into()))
}

/// An OpenSSH client with no user or system configuration, trusting any host
/// key (tests only); OpenSSH takes the first value of an option, so these
/// come first.
pub fn openssh(log_level: &str, batch: bool) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        log_level,
        "-o",
        if batch {
            "BatchMode=yes"
        } else {
            "BatchMode=no"
        },
    ]);
    cmd
}

/// Adds to an OpenSSH command (ssh, sftp or scp) the options that share
/// one master connection at `path` (ssh_config(5) ControlMaster auto,
/// ControlPersist 60 s): the first command through it logs in, the rest
/// open channels on that connection.
pub fn through_master(mut cmd: Command, path: &Path) -> Command {
    cmd.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60", "-o"])
        .arg(format!("ControlPath={}", path.display()));
    cmd
}

/// Waits for the replies (success or failure) to `count` channel requests.
pub async fn request_replies(channel: &mut russh::Channel<client::Msg>, count: usize) -> Vec<bool> {
    let mut replies = Vec::new();
    while replies.len() < count {
        match tokio::time::timeout(DEADLINE, channel.wait()).await {
            Ok(Some(russh::ChannelMsg::Success)) => replies.push(true),
            Ok(Some(russh::ChannelMsg::Failure)) => replies.push(false),
            Ok(Some(_)) => {}
            other => panic!("no reply to a channel request: {other:?}"),
        }
    }
    replies
}

/// The russh test client's handler: accepts any host key (tests only).
pub struct TestClient;

impl client::Handler for TestClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Runs `cmd` to completion with stdin empty; panics past `timeout`.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = capture(child.stdout.take().expect("stdout"));
    let err = capture(child.stderr.take().expect("stderr"));
    let Some(status) = poll(timeout, || child.try_wait().expect("try_wait")) else {
        let _ = child.kill();
        panic!("{cmd:?} did not finish within {timeout:?}");
    };
    // The pipes close with the process; wait for the readers to drain them.
    let drained = |b: &Arc<Mutex<Vec<u8>>>| Arc::strong_count(b) == 1;
    wait_until("output pipes to drain", DEADLINE, || {
        drained(&out) && drained(&err)
    });
    let take = |b: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().expect("buffer"));
    Output {
        status,
        stdout: take(out),
        stderr: take(err),
    }
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An interactive client process (OpenSSH, plink, dbclient...).
pub struct Client {
    child: Child,
    stdin: Option<Box<dyn Write + Send>>,
    output: Arc<Mutex<Vec<u8>>>,
    errors: Arc<Mutex<Vec<u8>>>,
    /// The terminal it runs in, for clients started by `in_terminal`.
    terminal: Option<pty_process::blocking::Pty>,
}

impl Client {
    /// Starts `cmd` (an OpenSSH command line) with piped stdio.
    pub fn spawn(mut cmd: Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssh");
        let output = capture(child.stdout.take().expect("stdout"));
        let errors = capture(child.stderr.take().expect("stderr"));
        Client {
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn Write + Send>),
            child,
            output,
            errors,
            terminal: None,
        }
    }

    /// Starts `cmd` in a terminal of `cols`×`rows` cells that the test
    /// owns (a PTY whose slave is the client's controlling terminal and
    /// stdio), as a person's terminal runs it: `resize` then sends it
    /// SIGWINCH, as a terminal window does. Its stderr is in `output`.
    pub fn in_terminal(cmd: &Command, cols: u16, rows: u16) -> Client {
        let (terminal, pts) = pty_process::blocking::open().expect("open a PTY");
        terminal
            .resize(pty_process::Size::new(rows, cols))
            .expect("size the PTY");
        let mut run = pty_process::blocking::Command::new(cmd.get_program()).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            run = match value {
                Some(value) => run.env(key, value),
                None => run.env_remove(key),
            };
        }
        let child = run.spawn(pts).expect("spawn in a PTY");
        let fd = |what| {
            std::fs::File::from(
                std::os::fd::AsFd::as_fd(&terminal)
                    .try_clone_to_owned()
                    .expect(what),
            )
        };
        let output = capture(fd("the PTY for reading"));
        Client {
            stdin: Some(Box::new(fd("the PTY for writing"))),
            child,
            output,
            errors: Arc::new(Mutex::new(Vec::new())),
            terminal: Some(terminal),
        }
    }

    /// Resizes the terminal of a client started by `in_terminal` to
    /// `cols`×`rows` cells; the kernel sends the client SIGWINCH.
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.terminal
            .as_ref()
            .expect("a client started in_terminal")
            .resize(pty_process::Size::new(rows, cols))
            .expect("resize the PTY");
    }

    /// Types `text`.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).expect("write to ssh");
        stdin.flush().expect("flush");
    }

    /// Writes `data` to the client's stdin from a thread (the client may
    /// stop reading it), then closes stdin.
    pub fn feed(&mut self, data: Vec<u8>) {
        let mut stdin = self.stdin.take().expect("stdin open");
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }

    /// Everything received so far, as bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.output.lock().expect("output").clone()
    }

    /// What an 80×24 terminal shows after everything received so far.
    pub fn terminal(&self) -> Terminal {
        Terminal::of(&self.bytes())
    }

    /// Everything received so far, lossily decoded.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("output")).into_owned()
    }

    /// What the client printed on stderr so far.
    pub fn errors(&self) -> String {
        String::from_utf8_lossy(&self.errors.lock().expect("errors")).into_owned()
    }

    /// Waits until the output contains `needle`; returns the output.
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(out) = poll(DEADLINE, || {
            Some(self.output()).filter(|o| o.contains(needle))
        }) {
            return out;
        }
        let _ = self.child.kill();
        panic!(
            "timed out waiting for {needle:?}; output so far:\n{}\nstderr:\n{}",
            self.output(),
            self.errors()
        );
    }

    /// The client's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the client process (SIGKILL): the connection drops without a goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the client to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        if let Some(status) = poll(DEADLINE, || self.child.try_wait().expect("try_wait")) {
            return status.code().unwrap_or(-1);
        }
        let _ = self.child.kill();
        panic!(
            "ssh did not exit; output:\n{}\nstderr:\n{}",
            self.output(),
            self.errors()
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an async test body on a fresh runtime with a deadline.
pub fn block_on<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), body)
                .await
                .expect("test finished within 60 s")
        })
}
