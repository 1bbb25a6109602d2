//! The six measurements of the comparison, and the targets keepsh is held to (BENCHMARKS.md).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bench;
use crate::harness::{DEADLINE, wait_until};
use crate::peers::{Tmux, bench_user};
use crate::probe::{Stats, Stream, parallel, pids_of, pss_by_mapping, pss_kib, type_keys};
use crate::report::{Report, num};

pub const KEEPSH: &str = "keepsh";
const SSHD: &str = "sshd";
const TMUX: &str = "tmux in sshd";
/// Printed after a program's output; `@` is not in base64's alphabet.
pub const DONE: &[u8] = b"@@DONE@@";
pub const MIB: u64 = 1024 * 1024;
/// Parallel `ssh ... new -d` clients while creating many sessions.
const CREATORS: usize = 4;

/// Machine, versions, ciphers and date.
pub fn context(bench: &Bench, report: &mut Report) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(String::new(), |kib| {
            format!("{:.1} GiB", kib as f64 / MIB as f64)
        });
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("")
        .trim_matches('"')
        .to_owned();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let git = output(Command::new("git").args(["describe", "--always", "--dirty"]));
    let mut ctx = vec![
        (
            "date",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ),
        ("machine", format!("{cpu}, {cores} cores, {memory}")),
        ("os", format!("{os}, Linux {}", kernel.trim())),
        (
            "keepsh",
            format!("{} ({})", env!("CARGO_PKG_VERSION"), git.trim()),
        ),
        (
            "OpenSSH client",
            stderr_of(Command::new("ssh").arg("-V")).trim().to_owned(),
        ),
        (
            "sshd",
            format!(
                "openssh-server {}",
                output(Command::new("dpkg-query").args([
                    "-W",
                    "-f",
                    "${Version}",
                    "openssh-server"
                ]))
            ),
        ),
        (
            "tmux",
            output(Command::new("tmux").arg("-V")).trim().to_owned(),
        ),
    ];
    let mut keepsh = bench.keepsh.ssh_debug("alice");
    keepsh.arg("version");
    let mut sshd = bench.sshd.ssh_logging("LogLevel=DEBUG1");
    sshd.arg("true");
    for (peer, cmd) in [("keepsh", &mut keepsh), ("sshd", &mut sshd)] {
        let log = stderr_of(cmd);
        let find = |prefix: &str| {
            log.lines()
                .find_map(|l| l.split_once(prefix).map(|(_, v)| v.trim().to_owned()))
                .unwrap_or_else(|| "?".into())
        };
        ctx.push((
            if peer == "keepsh" {
                "keepsh negotiated"
            } else {
                "sshd negotiated"
            },
            format!(
                "kex {}, host key {}, cipher {}",
                find("kex: algorithm:"),
                find("kex: host key algorithm:"),
                find("kex: server->client cipher:"),
            ),
        ));
    }
    ctx.push((
        "settings",
        format!(
            "keepsh: shell /bin/sh, scrollback_bytes 16 MiB; sshd: private config, user {}, \
             its login shell; tmux: default config with `status off`; all clients `ssh` with TERM={}{}",
            bench_user(),
            crate::TERM,
            if bench.quick { "; QUICK run (smaller sizes, fewer runs)" } else { "" },
        ),
    ));
    report.context = ctx.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn stderr_of(cmd: &mut Command) -> String {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default()
}

/// Time from starting `cmd` until it exits, which it must do with status 0.
fn time_to_exit(cmd: Command) -> Duration {
    let start = Instant::now();
    let mut client = Stream::spawn(cmd);
    client.wait_end(DEADLINE).expect("the client exits");
    assert_eq!(client.exit_code(), Some(0), "the client failed");
    start.elapsed()
}

/// 1. Connect + key auth + exec + exit: `ssh host version` on keepsh,
///    `ssh host true` on sshd; without and with `-tt`.
pub fn handshake(bench: &Bench, report: &mut Report) {
    let runs = bench.runs(25, 8);
    for tty in [false, true] {
        let (mut k, mut s) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let mut cmd = bench.keepsh_ssh();
            if tty {
                cmd.arg("-tt");
            }
            k.push(time_to_exit(cmd_arg(cmd, "version")));
            let mut cmd = bench.sshd.ssh();
            if tty {
                cmd.arg("-tt");
            }
            s.push(time_to_exit(cmd_arg(cmd, "true")));
        }
        let what = if tty { "ssh -tt" } else { "ssh" };
        report.add("handshake", what, KEEPSH, "ms", Stats::of_ms(&k));
        report.add("handshake", what, SSHD, "ms", Stats::of_ms(&s));
    }
}

fn cmd_arg(mut cmd: Command, arg: &str) -> Command {
    cmd.arg(arg);
    cmd
}

/// Writes `bytes` of base64 (76-column lines) of random data to `name` and
/// a script that prints it, then [`DONE`], then waits in `cat`; returns the
/// script's path and the data's exact size.
pub fn emitter(bench: &Bench, name: &str, bytes: u64) -> (String, u64) {
    let data = bench.path(&format!("{name}.b64"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {} /dev/urandom | base64 > '{}'",
            bytes * 3 / 4,
            data.display()
        ))
        .status()
        .expect("make data");
    assert!(status.success());
    let size = std::fs::metadata(&data).expect("data").len();
    let script = bench.path(&format!("{name}.sh"));
    std::fs::write(
        &script,
        format!("cat '{}'\necho '@@DO''NE@@'\nexec cat\n", data.display()),
    )
    .expect("write script");
    (script.display().to_string(), size)
}

/// 2. Bulk output: a program prints base64 inside a session; an attached
///    `ssh -tt` client reads it. MB/s of the program's output (10^6 bytes).
pub fn throughput(bench: &Bench, report: &mut Report) {
    let size = if bench.quick { 20 * MIB } else { 100 * MIB };
    let (emit, size) = emitter(bench, "throughput", size);
    let runs = bench.runs(5, 2);
    let tmux = Tmux::new(bench.dir.path(), "throughput");
    let without_history = crate::start_keepsh_without_history();
    let (mut plain, mut plain_bytes) = (Vec::new(), Vec::new());
    let (mut k, mut s, mut t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut k_bytes, mut s_bytes, mut t_bytes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut frozen, mut frozen_bytes) = (Vec::new(), Vec::new());
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    for run in 0..runs {
        let name = format!("tp{run}");
        let mut cmd = bench.keepsh_ssh();
        cmd.args(["-tt", "new", &name, "--", "sh", &emit]);
        let (d, n) = time_to_done(cmd, Duration::from_secs(300));
        k.push(rate(d));
        k_bytes.push(n as f64 / 1e6);
        kill_session(bench, &name);

        let mut cmd = without_history.ssh("alice");
        cmd.args(["-o", crate::KEX]).env("TERM", crate::TERM);
        cmd.args(["-tt", "new", &name, "--", "sh", &emit]);
        let (d, n) = time_to_done(cmd, Duration::from_secs(300));
        plain.push(rate(d));
        plain_bytes.push(n as f64 / 1e6);
        assert!(
            without_history
                .run("alice", &["kill", &name])
                .status
                .success()
        );

        let mut cmd = bench.sshd.ssh();
        cmd.args(["-tt", "sh", &emit]);
        let (d, n) = time_to_done(cmd, Duration::from_secs(300));
        s.push(rate(d));
        s_bytes.push(n as f64 / 1e6);

        let mut cmd = bench.sshd.ssh();
        cmd.arg("-tt")
            .args(tmux.line(&["new-session", &format!("sh {emit}")]));
        let (d, n) = time_to_done(cmd, Duration::from_secs(300));
        t.push(rate(d));
        t_bytes.push(n as f64 / 1e6);
        tmux.kill_server();

        let (d, n) = beside_a_frozen_client(bench, &format!("tpf{run}"), &emit);
        frozen.push(rate(d));
        frozen_bytes.push(n as f64 / 1e6);
    }
    let what = format!(
        "{} MB of base64 to an attached ssh -tt",
        num(size as f64 / 1e6)
    );
    report.add("throughput", what.clone(), KEEPSH, "MB/s", Stats::of(k));
    report.add("throughput", what.clone(), SSHD, "MB/s", Stats::of(s));
    report.add("throughput", what, TMUX, "MB/s", Stats::of(t));
    let what = "bytes received by the client";
    report.add("throughput", what, KEEPSH, "MB", Stats::of(k_bytes));
    report.add("throughput", what, SSHD, "MB", Stats::of(s_bytes));
    report.add("throughput", what, TMUX, "MB", Stats::of(t_bytes));
    let what = "the same, keepsh with history_file_bytes = 0 (no history file): MB/s";
    report.add("throughput", what, KEEPSH, "MB/s", Stats::of(plain));
    let what = "... bytes received by the client, no history file";
    report.add("throughput", what, KEEPSH, "MB", Stats::of(plain_bytes));
    let what = "the same, a second client of the session frozen (SIGSTOP): MB/s";
    report.add("throughput", what, KEEPSH, "MB/s", Stats::of(frozen));
    let what = "... bytes received by the live client";
    report.add("throughput", what, KEEPSH, "MB", Stats::of(frozen_bytes));
}

/// keepsh's bulk output with two `ssh -tt` clients attached to session
/// `name`, one of them stopped (SIGSTOP) before the output starts: the
/// time from typing `go` in the live one until [`DONE`] arrived there, and
/// the bytes it received.
fn beside_a_frozen_client(bench: &Bench, name: &str, emit: &str) -> (Duration, u64) {
    held_emitter(bench, name, emit);
    let attach = || attach_held(bench, name);
    // The live client first: an attach probes the clients already there
    // with a keepalive, and detaches a stopped one (as a vanished phone).
    let mut live = attach();
    let frozen = attach();
    signal(frozen.pid(), "STOP");
    let start = Instant::now();
    live.write(b"go\n");
    let done = live.wait_for(DONE, Duration::from_secs(300));
    let at = done.unwrap_or_else(|e| panic!("{e}"));
    signal(frozen.pid(), "CONT");
    kill_session(bench, name);
    (at - start, live.received)
}

/// Creates session `name`, detached: it prints `waiting`, reads a line,
/// then runs the emitter script `emit`.
pub fn held_emitter(bench: &Bench, name: &str, emit: &str) {
    let script = format!("echo waiting; read go; exec sh '{emit}'");
    let script = shell_words::quote(&script);
    let out = bench
        .keepsh
        .run("alice", &["new", "-d", name, "--", "sh", "-c", &script]);
    assert!(out.status.success(), "new {name}: {out:?}");
}

/// `ssh -tt attach NAME` to a [`held_emitter`] session, once it shows
/// `waiting`.
pub fn attach_held(bench: &Bench, name: &str) -> Stream {
    let mut cmd = bench.keepsh_ssh();
    cmd.args(["-tt", "attach", name]);
    let mut client = Stream::spawn(cmd);
    let waiting = client.wait_for(b"waiting", Duration::from_secs(30));
    waiting.unwrap_or_else(|e| panic!("{e}"));
    client
}

/// Sends signal `name` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Starts `cmd`; the time until [`DONE`] arrived and the bytes received.
fn time_to_done(cmd: Command, timeout: Duration) -> (Duration, u64) {
    time_to(cmd, DONE, timeout)
}

/// Starts `cmd`; the time until `sentinel` arrived and the bytes received.
fn time_to(cmd: Command, sentinel: &[u8], timeout: Duration) -> (Duration, u64) {
    let start = Instant::now();
    let mut client = Stream::spawn(cmd);
    let at = client
        .wait_for(sentinel, timeout)
        .unwrap_or_else(|e| panic!("{e}"));
    (at - start, client.received)
}

pub fn kill_session(bench: &Bench, name: &str) {
    let out = bench.keepsh.run("alice", &["kill", name]);
    assert!(out.status.success(), "kill {name}: {out:?}");
}

/// 3. Reattach: a session produced 256 KiB, then 10 MiB, while detached;
///    time from starting the client until it has the last byte (keepsh:
///    replay) or the final screen (tmux: redraw).
pub fn reattach(bench: &Bench, report: &mut Report) {
    // The baseline: the same client until a command's first output.
    let (mut k, mut s) = (Vec::new(), Vec::new());
    for _ in 0..bench.runs(25, 8) {
        let mut cmd = bench.keepsh_ssh();
        cmd.args(["-tt", "version"]);
        k.push(time_to(cmd, b"keepsh ", DEADLINE).0);
        let mut cmd = bench.sshd.ssh();
        cmd.args(["-tt", "echo", "@@DONE@@"]);
        s.push(time_to_done(cmd, DEADLINE).0);
    }
    let what = "ssh -tt: to a command's first output";
    let (k_hello, s_hello) = (Stats::of_ms(&k), Stats::of_ms(&s));
    report.add("reattach", what, KEEPSH, "ms", k_hello);
    report.add("reattach", what, SSHD, "ms", s_hello);

    let tmux = Tmux::new(bench.dir.path(), "reattach");
    for (label, bytes, runs) in [
        ("256 KiB", 256 * 1024, bench.runs(25, 8)),
        ("10 MiB", 10 * MIB, bench.runs(10, 4)),
    ] {
        let name = format!("ra{bytes}");
        let (emit, size) = emitter(bench, &name, bytes);
        let out = bench
            .keepsh
            .run("alice", &["new", "-d", &name, "--", "sh", &emit]);
        assert!(out.status.success(), "new: {out:?}");
        wait_until("output buffered", Duration::from_secs(60), || {
            bench
                .keepsh
                .session("alice", &name)
                .and_then(|s| s["output_offset"].as_u64())
                .is_some_and(|o| o >= size)
        });
        tmux.new_session(&name, &format!("sh {emit}"));
        wait_until("tmux drew the output", Duration::from_secs(60), || {
            tmux.run(&["capture-pane", "-p", "-t", &name])
                .contains("@@DONE@@")
        });
        let (mut k, mut t) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let mut cmd = bench.keepsh_ssh();
            cmd.args(["-tt", "attach", &name]);
            k.push(time_to_done(cmd, DEADLINE).0);
            wait_until("keepsh client detached", DEADLINE, || {
                bench
                    .keepsh
                    .session("alice", &name)
                    .is_some_and(|s| s["clients"] == 0)
            });
            let mut cmd = bench.sshd.ssh();
            cmd.arg("-tt").args(tmux.line(&["attach", "-t", &name]));
            t.push(time_to_done(cmd, DEADLINE).0);
            wait_until("tmux client detached", DEADLINE, || {
                tmux.run(&["list-clients", "-t", &name]).trim().is_empty()
            });
        }
        let what = format!("{label} buffered, to last byte / final screen");
        let (k, t) = (Stats::of_ms(&k), Stats::of_ms(&t));
        report.add("reattach", what.clone(), KEEPSH, "ms", k);
        report.add("reattach", what, TMUX, "ms", t);
        let what = format!("{label}: beyond the handshake");
        report.add(
            "reattach",
            what.clone(),
            KEEPSH,
            "ms",
            shifted(k, -k_hello.median),
        );
        report.add("reattach", what, TMUX, "ms", shifted(t, -s_hello.median));
        kill_session(bench, &name);
    }
}

fn shifted(s: Stats, by: f64) -> Stats {
    Stats {
        median: s.median + by,
        min: s.min + by,
        max: s.max + by,
        p99: s.p99 + by,
        n: s.n,
    }
}

/// 4. Keystroke echo: one key at a time into `cat` in an attached session,
///    timed until its echo (by the PTY's line discipline) is back; the
///    three peers take turns, one key each.
pub fn echo(bench: &Bench, report: &mut Report) {
    let keys = bench.runs(400, 100);
    let mut keepsh = bench.keepsh_ssh();
    keepsh.args(["-tt", "new", "echo", "--", "cat"]);
    let mut sshd = bench.sshd.ssh();
    sshd.args(["-tt", "cat"]);
    let tmux = Tmux::new(bench.dir.path(), "echo");
    let mut in_tmux = bench.sshd.ssh();
    in_tmux.arg("-tt").args(tmux.line(&["new-session", "cat"]));
    let times = type_keys(vec![keepsh, sshd, in_tmux], keys, DEADLINE);
    kill_session(bench, "echo");
    let what = "key to echo round trip";
    for (peer, samples) in [KEEPSH, SSHD, TMUX].into_iter().zip(&times) {
        report.add("echo", what, peer, "ms", Stats::of_ms(samples));
    }
}

/// 6. Reconnect storm: clients attach to as many sessions all at once;
///    how many got their session's screen, and the time to the last one.
pub fn storm(bench: &Bench, report: &mut Report) {
    let n = if bench.quick { 50 } else { 200 };
    let runs = bench.runs(3, 1);
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let script = bench.path("storm.sh");
    std::fs::write(&script, "printf 'storm-%s-ok\\n' \"$1\"\nexec cat\n").expect("write script");
    let script = script.display().to_string();
    parallel(CREATORS, &names, |name| {
        let out = bench.keepsh.run(
            "alice",
            &["new", "-d", name, "--", "sh", &script, &name[1..]],
        );
        assert!(out.status.success(), "new {name}: {out:?}");
    });
    let tmux = Tmux::new(bench.dir.path(), "storm");
    for name in &names {
        tmux.new_session(name, &format!("sh {script} {}", &name[1..]));
    }
    let (mut k, mut t, mut k_ok, mut t_ok) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (d, ok) = attach_all(&names, |name| {
            let mut cmd = bench.keepsh_ssh();
            cmd.args(["-tt", "attach", name]);
            cmd
        });
        k.push(d);
        k_ok.push(ok as f64);
        wait_until("keepsh clients detached", Duration::from_secs(60), || {
            bench.keepsh.list("alice").iter().all(|s| s["clients"] == 0)
        });
        let (d, ok) = attach_all(&names, |name| {
            let mut cmd = bench.sshd.ssh();
            cmd.arg("-tt").args(tmux.line(&["attach", "-t", name]));
            cmd
        });
        t.push(d);
        t_ok.push(ok as f64);
        wait_until("tmux clients detached", Duration::from_secs(60), || {
            tmux.run(&["list-clients"]).trim().is_empty()
        });
    }
    let what = format!("{n} clients attach at once: time to the last screen");
    report.add("storm", what.clone(), KEEPSH, "ms", Stats::of_ms(&k));
    report.add("storm", what, TMUX, "ms", Stats::of_ms(&t));
    let what = format!("of {n} clients, attached");
    report.add("storm", what.clone(), KEEPSH, "clients", Stats::of(k_ok));
    report.add("storm", what, TMUX, "clients", Stats::of(t_ok));
    parallel(CREATORS, &names, |name| kill_session(bench, name));
}

/// Starts one client per name at once; the time until the last has its
/// session's `storm-I-ok` line, and how many did within a minute.
fn attach_all(names: &[String], client: impl Fn(&str) -> Command) -> (Duration, usize) {
    let start = Instant::now();
    let mut clients: Vec<Stream> = names
        .iter()
        .map(|name| Stream::spawn(client(name)))
        .collect();
    let deadline = start + Duration::from_secs(60);
    let mut last = start;
    let mut ok = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(at) = c.wait_for(format!("storm-{i}-ok").as_bytes(), left) {
            ok += 1;
            last = last.max(at);
        }
    }
    (last - start, ok)
}

/// 5. Memory: PSS of keepsh's processes (server and any session processes)
///    and of tmux's server, beyond the shells, per idle session, at 100 and
///    1,000 sessions; both servers fresh.
pub fn memory(bench: &Bench, report: &mut Report) {
    // A fresh server: memory freed by earlier sections would otherwise be
    // reused by these sessions and hide their cost.
    let keepsh = crate::start_keepsh();
    // The server and its session processes (`keepsh-session`).
    let exes = [
        std::path::Path::new(env!("CARGO_BIN_EXE_keepsh")),
        std::path::Path::new(env!("CARGO_BIN_EXE_keepsh-session")),
    ];
    // This server's processes only: their command lines name its directory.
    let keepsh_pss = || {
        pids_of(&exes, keepsh.dir.path())
            .into_iter()
            .map(pss_kib)
            .sum::<u64>()
    };
    let tmux = Tmux::new(bench.dir.path(), "memory");
    tmux.new_session("base", "/bin/sh");
    let tmux_pid = tmux.server_pid().expect("tmux server");
    let (k_base, t_base) = (keepsh_pss(), pss_kib(tmux_pid));
    let mut made = 0;
    for n in [100, 1000] {
        let names: Vec<String> = (made..n).map(|i| format!("m{i}")).collect();
        parallel(CREATORS, &names, |name| {
            let out = keepsh.run("alice", &["new", "-d", name]);
            assert!(out.status.success(), "new {name}: {out:?}");
        });
        for name in &names {
            tmux.new_session(name, "/bin/sh");
        }
        made = n;
        let live = keepsh
            .list("alice")
            .iter()
            .filter(|s| s["state"] == "orphaned" || s["state"] == "attached")
            .count();
        assert_eq!(live, n, "keepsh serves every session");
        let per = |now: u64, base: u64| now.saturating_sub(base) as f64 / n as f64;
        let what = format!("PSS per idle session, {n} sessions");
        let k = per(keepsh_pss(), k_base);
        let t = per(pss_kib(tmux_pid), t_base);
        report.add("memory", what.clone(), KEEPSH, "KiB", Stats::of(vec![k]));
        report.add("memory", what, TMUX, "KiB", Stats::of(vec![t]));
    }
    // Where one idle session process's PSS lies (BENCHMARKS.md keeps it).
    let server = keepsh.pid();
    if let Some(&session) = pids_of(&exes, keepsh.dir.path())
        .iter()
        .find(|&&p| p != server)
    {
        eprintln!(
            "PSS of one idle session process ({} KiB), by mapping:",
            pss_kib(session)
        );
        for (kind, kib) in pss_by_mapping(session) {
            eprintln!("  {kib:>6} KiB  {kind}");
        }
    }
}

/// A status field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Concurrent wrong passwords (OpenSSH clients, one attempt each): the
/// server process's resident memory before, at its peak and once settled.
/// argon2id with the default parameters takes ~19 MiB per verification.
pub fn auth(_bench: &Bench, report: &mut Report) {
    const CLIENTS: usize = 30;
    // A fresh server: its peak (VmHWM) is this burst's.
    let keepsh = crate::start_keepsh();
    assert!(keepsh.run("alice", &["version"]).status.success());
    let pid = keepsh.pid();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let before = status_kib(pid, "VmRSS");
    let (askpass, _calls) = keepsh.askpass(&["not the password"]);
    let clients: Vec<usize> = (0..CLIENTS).collect();
    let refused = parallel(CLIENTS, &clients, |_| {
        let mut cmd = keepsh.ssh_with("alice", "alice", false);
        cmd.args(["-o", "PubkeyAuthentication=no", "-o"])
            .args(["PreferredAuthentications=password", "-o"])
            .args(["NumberOfPasswordPrompts=1", "version"])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
        crate::harness::run_with_deadline(cmd, DEADLINE * 3)
            .status
            .code()
            == Some(255)
    });
    assert!(
        refused.iter().all(|r| *r),
        "every wrong password is refused"
    );
    let peak = status_kib(pid, "VmHWM");
    // What stays once the burst is over: a reading after a fixed quiet
    // time, since "settled" is defined by it (not a synchronisation).
    std::thread::sleep(Duration::from_secs(2));
    let settled = status_kib(pid, "VmRSS");
    let what = |w: &str| format!("server RSS, {CLIENTS} concurrent wrong passwords: {w}");
    for (w, kib) in [
        ("before", before),
        ("peak", peak),
        ("settled 2 s after", settled),
    ] {
        report.add("auth", what(w), KEEPSH, "MiB", Stats::of(vec![mib(kib)]));
    }
}

/// Compares the keepsh rows with the targets keepsh is held to.
pub fn targets(report: &mut Report) {
    let mut targets = Vec::new();
    let median = |section: &str, what: &str, peer: &str| {
        report.find(section, what, peer).map(|r| r.stats.median)
    };
    if let (Some(k), Some(s), Some(t)) = (
        median("throughput", "", KEEPSH),
        median("throughput", "", SSHD),
        median("throughput", "", TMUX),
    ) {
        targets.push((
            "throughput ≥ tmux in sshd".to_owned(),
            format!("{} × tmux", num(k / t)),
            k >= t,
        ));
        targets.push((
            "throughput ≥ 0.8 × sshd".to_owned(),
            format!("{} × sshd", num(k / s)),
            k >= 0.8 * s,
        ));
    }
    if let (Some(k), Some(s)) = (
        median("handshake", "ssh", KEEPSH),
        median("handshake", "ssh", SSHD),
    ) {
        targets.push((
            "handshake ≤ 1.0 × sshd".to_owned(),
            format!("{} ms vs {} ms: {} ×", num(k), num(s), num(k / s)),
            k <= s,
        ));
    }
    for (label, limit) in [("256 KiB", 50.0), ("10 MiB", 500.0)] {
        if let Some(k) = median("reattach", &format!("{label}: beyond"), KEEPSH) {
            targets.push((
                format!("reattach, {label} buffered: < {limit} ms beyond the handshake"),
                format!("{} ms", num(k)),
                k < limit,
            ));
        }
    }
    if let (Some(k), Some(s)) = (median("echo", "", KEEPSH), median("echo", "", SSHD)) {
        targets.push((
            "keystroke echo median within 1 ms of sshd".to_owned(),
            format!("{} ms vs {} ms", num(k), num(s)),
            k - s < 1.0,
        ));
    }
    if let Some(k) = median("memory", "PSS per idle session, 1000", KEEPSH) {
        targets.push((
            "< 1 MiB per idle session; 1,000 sessions served".to_owned(),
            format!("{} KiB per session at 1,000", num(k)),
            k < 1024.0,
        ));
    }
    for kind in ["'never-printed-N'", "'[0-9]+ never-N'"] {
        if let (Some(alone), Some(watched)) = (
            median("waiters", "no waiter:", KEEPSH),
            median("waiters", &format!("100 `wait --for {kind}`:"), KEEPSH),
        ) {
            targets.push((
                format!("100 `wait --for {kind}`: throughput within 10 % of none"),
                format!("{} × none", num(watched / alone)),
                watched >= 0.9 * alone,
            ));
        }
    }
    let attached = report
        .find("storm", "of ", KEEPSH)
        .map(|r| (r.stats.min, r.what.clone()));
    if let Some((min, what)) = attached {
        let n: f64 = what
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(f64::NAN);
        targets.push((
            "reconnect storm: every client attaches".to_owned(),
            format!("{min} of {n} (worst run)"),
            min == n,
        ));
    }
    report.targets = targets;
}
