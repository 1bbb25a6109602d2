//! keepsh beside sshd + tmux over a flaky link: what a phone on a bad
//! network gets. The clients (OpenSSH `ssh`) run in a network namespace
//! whose only way to the servers is a userspace relay that delays and
//! drops packets (`relay.rs`); keepsh and a private sshd (with tmux inside
//! it) listen in the machine's namespace, in the same run.
//!
//! For each link (150 ms each way and 5 % loss each way; 50 ms and 1 %):
//! - **vanished**: an attached client's traffic is dropped from one moment
//!   on (its TCP connection never closes): seconds until the server has
//!   detached it (keepsh: `list`; tmux: `list-clients`), idle and with
//!   output flowing, bounded;
//! - **new address**: the same, then the client comes back from another
//!   address with another window size: seconds until one client is listed
//!   and the size is the new one's (bounded), and the clients listed then;
//! - **reattach**: 256 KiB printed while nobody was attached: from starting
//!   `ssh -tt` until the last line is on the screen, and (keepsh) until the
//!   history is in the terminal's scrollback and the screen drawn again;
//! - **echo**: one key at a time into `cat`: median and 90th percentile.
//!
//! Run as root (network namespaces, TUN devices): `cargo bench --bench
//! flaky`. Not part of `.ci/run`. Writes `target/bench-flaky/results.md`
//! and `.json`. `KEEPSH_FLAKY_ONLY=reattach,echo` runs some sections, `KEEPSH_FLAKY_RUNS=40` more handshakes and reattaches (15).

#[allow(dead_code, reason = "the bench uses part of the shared test harness")]
#[path = "../../tests/e2e/harness.rs"]
mod harness;
#[allow(dead_code, reason = "shared with the comparison bench")]
#[path = "../compare/peers.rs"]
mod peers;
#[allow(dead_code, reason = "shared with the comparison bench")]
#[path = "../compare/probe.rs"]
mod probe;
mod relay;
#[allow(dead_code, reason = "shared with the comparison bench")]
#[path = "../compare/report.rs"]
mod report;
mod sections;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use harness::{Options, Server};
use peers::{Sshd, Tmux};
use relay::{Link, NETNS, SERVER};
use report::Report;

/// TERM every client sends.
pub const TERM: &str = "xterm-256color";
/// The key exchange every client uses (as in the comparison bench).
pub const KEX: &str = "KexAlgorithms=curve25519-sha256";

/// The links measured: (name, one-way delay, loss each way).
const LINKS: [(&str, Duration, f64); 2] = [
    ("150 ms + 5 %", Duration::from_millis(150), 0.05),
    ("50 ms + 1 %", Duration::from_millis(50), 0.01),
];

/// What every section needs.
pub struct Bench {
    /// The relay between the clients' namespace and the servers.
    pub link: Link,
    /// keepsh, listening on every address.
    pub keepsh: Server,
    /// The private sshd, listening on every address.
    pub sshd: Sshd,
    /// tmux, run through that sshd.
    pub tmux: Tmux,
    /// Scratch files.
    pub dir: tempfile::TempDir,
}

impl Bench {
    /// `ssh alice@SERVER ARGS` to keepsh from the clients' namespace, bound
    /// to `from`.
    pub fn keepsh_client(&self, from: Ipv4Addr, args: &[&str]) -> Command {
        let mut cmd = self.keepsh.ssh_at("alice", &SERVER.to_string());
        cmd.env("TERM", TERM).args(["-o", KEX]);
        in_netns(&cmd, from, args)
    }

    /// `ssh ARGS` to the sshd from the clients' namespace, bound to `from`.
    pub fn sshd_client(&self, from: Ipv4Addr, args: &[String]) -> Command {
        let cmd = self.sshd.ssh_at(&SERVER.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        in_netns(&cmd, from, &args)
    }
}

/// `cmd` (an OpenSSH command line) run in the clients' namespace from
/// address `from`, with `args` after its own.
fn in_netns(cmd: &Command, from: Ipv4Addr, args: &[&str]) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped
        .args(["netns", "exec", NETNS])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .args(["-o", &format!("BindAddress={from}")])
        .args(args);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn main() {
    if !is_root() {
        eprintln!("the flaky-link bench needs root (network namespaces, TUN devices)");
        return;
    }
    peers::ensure_installed();
    let only = std::env::var("KEEPSH_FLAKY_ONLY").ok();
    let selected = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = Bench {
        link: Link::start(),
        keepsh: Server::start_with(Options {
            listen: Some("0.0.0.0:0"),
            log: Some("warn"),
            ..Default::default()
        })
        .without_time_limit(),
        sshd: Sshd::start_on(dir.path(), "0.0.0.0"),
        tmux: Tmux::new(dir.path(), "flaky"),
        dir,
    };
    let mut report = Report::default();
    report.context.push((
        "link".into(),
        "clients in a network namespace, a userspace relay (TUN devices) delaying \
         and dropping IPv4 packets each way; servers on the machine's namespace"
            .into(),
    ));
    type Section = fn(&Bench, &'static str, &mut Report);
    let all: [(&str, Section); 5] = [
        ("handshake", sections::handshake),
        ("reattach", sections::reattach),
        ("echo", sections::echo),
        ("new-address", sections::new_address),
        ("vanished", sections::vanished),
    ];
    for (link, delay, loss) in LINKS {
        bench.link.set(delay, loss);
        for (name, run) in all {
            if selected(name) {
                eprintln!("== {link}: {name}");
                run(&bench, link, &mut report);
            }
        }
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-flaky");
    report.write(&out).expect("write the results");
    println!("{}", report.markdown());
    eprintln!("written to {}", out.display());
}
