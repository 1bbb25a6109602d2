//! keepsh beside its peers, in the same run, on the same machine, through the
//! same real client (OpenSSH `ssh`): a private `sshd` on a loopback port with
//! its own config and keys, and `tmux` inside that sshd. See BENCHMARKS.md.
//!
//! Run: `cargo bench --bench compare` (as root, or a user who may run sshd
//! and apt-get through sudo; Debian's `openssh-server` and `tmux` are
//! installed when missing). Writes `target/bench-compare/results.{json,md}`
//! and prints the Markdown.
//!
//! Environment: `KEEPSH_BENCH_QUICK=1` for smaller sizes and fewer runs
//! (while developing); `KEEPSH_BENCH_ONLY=throughput,echo` to run some
//! sections only (handshake, throughput, reattach, echo, storm, auth,
//! memory).

#[allow(dead_code, reason = "the bench uses part of the shared test harness")]
#[path = "../../tests/e2e/harness.rs"]
mod harness;
mod peers;
mod probe;
mod report;
mod sections;
mod waiters;

use std::path::PathBuf;
use std::process::Command;

use harness::{Options, Server};
use peers::Sshd;
use report::Report;

/// TERM every client sends.
pub const TERM: &str = "xterm-256color";
/// The key exchange every client uses. OpenSSH 9.2 would otherwise pick
/// sntrup761x25519 with sshd, which keepsh does not offer and which costs
/// the client ~80 ms of CPU here: the handshakes would not be comparable.
pub const KEX: &str = "KexAlgorithms=curve25519-sha256";

/// What every section needs: the servers, a scratch directory, the sizes.
pub struct Bench {
    /// Scratch files: data, scripts, sshd's keys and config.
    pub dir: tempfile::TempDir,
    /// keepsh, with a 16 MiB ring buffer and room for 1,000 sessions.
    pub keepsh: Server,
    /// The private sshd.
    pub sshd: Sshd,
    /// Smaller sizes and fewer runs.
    pub quick: bool,
}

impl Bench {
    /// `ssh alice@keepsh` with TERM set and the key exchange of [`KEX`].
    pub fn keepsh_ssh(&self) -> Command {
        let mut cmd = self.keepsh.ssh("alice");
        cmd.args(["-o", KEX]).env("TERM", TERM);
        cmd
    }

    /// `runs` normally, `quick` with KEEPSH_BENCH_QUICK.
    pub fn runs(&self, runs: usize, quick: usize) -> usize {
        if self.quick { quick } else { runs }
    }

    /// A file in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A keepsh server as the benchmark runs it: a 16 MiB ring buffer, room
/// for 1,000 sessions, warnings-only logs, history files on (the default).
pub fn start_keepsh() -> Server {
    Server::start_with(Options {
        sessions: "scrollback_bytes = \"16MiB\"\nmax_per_user = 1100",
        log: Some("warn"),
        ..Default::default()
    })
    .without_time_limit()
}

/// As [`start_keepsh`], with `history_file_bytes = 0`: the throughput
/// section's baseline for what writing the history costs.
pub fn start_keepsh_without_history() -> Server {
    Server::start_with(Options {
        sessions: "scrollback_bytes = \"16MiB\"\nhistory_file_bytes = 0",
        log: Some("warn"),
        ..Default::default()
    })
    .without_time_limit()
}

fn main() {
    peers::ensure_installed();
    let quick = std::env::var_os("KEEPSH_BENCH_QUICK").is_some();
    let only = std::env::var("KEEPSH_BENCH_ONLY").ok();
    let selected = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = Bench {
        keepsh: start_keepsh(),
        sshd: Sshd::start(dir.path()),
        dir,
        quick,
    };
    let mut report = Report::default();
    sections::context(&bench, &mut report);
    type Section = fn(&Bench, &mut Report);
    let all: [(&str, Section); 8] = [
        ("handshake", sections::handshake),
        ("throughput", sections::throughput),
        ("reattach", sections::reattach),
        ("echo", sections::echo),
        ("storm", sections::storm),
        ("auth", sections::auth),
        ("waiters", waiters::waiters),
        // Last: it leaves 1,000 sessions behind.
        ("memory", sections::memory),
    ];
    for (name, run) in all {
        if selected(name) {
            eprintln!("== {name}");
            run(&bench, &mut report);
        }
    }
    sections::targets(&mut report);
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-compare");
    report.write(&out).expect("write the results");
    println!("{}", report.markdown());
    eprintln!("written to {}", out.display());
}
