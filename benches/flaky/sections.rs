//! The measurements over one link (see main.rs): every client runs in the
//! clients' namespace; the servers are asked about their clients over
//! loopback, which the link does not touch.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bench;
use crate::harness::{Client, poll, wait_until};
use crate::probe::{Stats, Stream, type_keys};
use crate::relay::{CLIENT, NEW_CLIENT};
use crate::report::Report;

const KEEPSH: &str = "keepsh";
const SSHD: &str = "sshd";
const TMUX: &str = "tmux in sshd";
/// How long a wait over the link may take before the bench gives up.
const SLOW: Duration = Duration::from_secs(90);
/// How long a vanished client is given to be noticed.
const NOTICE_BOUND: Duration = Duration::from_secs(60);
/// How long a reattach from a new address is given to take over.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);
/// The last line of the reattach's screen; `@` is not in base64.
const LAST: &[u8] = b"@@LAST@@";
/// Handshake and reattach runs, and echo keys, per peer (a lost packet
/// costs a retransmission timeout: the spread is wide);
/// `KEEPSH_FLAKY_RUNS` sets the runs.
const RUNS: usize = 15;

/// [`RUNS`], or `KEEPSH_FLAKY_RUNS`.
fn runs() -> usize {
    std::env::var("KEEPSH_FLAKY_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RUNS)
}
const KEYS: usize = 40;

/// A fresh session name for this link and section.
fn name(link: &str, what: &str) -> String {
    let link: String = link.chars().filter(char::is_ascii_digit).collect();
    format!("{what}{link}")
}

/// `user`'s session `name` as `list --json` has it (over loopback).
fn session(bench: &Bench, name: &str) -> serde_json::Value {
    bench.keepsh.session("alice", name).unwrap_or_default()
}

fn keepsh_new(bench: &Bench, name: &str, script: &str) {
    let script = shell_words::quote(script);
    let out = bench
        .keepsh
        .run("alice", &["new", "-d", name, "--", "sh", "-c", &script]);
    assert!(out.status.success(), "new {name}: {out:?}");
}

fn keepsh_kill(bench: &Bench, name: &str) {
    let _ = bench.keepsh.run("alice", &["kill", name]);
}

/// tmux's clients of session `name`.
fn tmux_clients(bench: &Bench, name: &str) -> usize {
    bench
        .tmux
        .run(&["list-clients", "-t", name])
        .lines()
        .count()
}

/// `ssh -tt tmux attach -t NAME` from `from`.
fn tmux_attach(bench: &Bench, from: std::net::Ipv4Addr, name: &str) -> Command {
    let mut args = vec!["-tt".to_owned()];
    args.extend(bench.tmux.line(&["attach", "-t", name]));
    bench.sshd_client(from, &args)
}

/// Seconds, for the report.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// 1. A client vanishes: seconds until the server detached it (the bound
///    if it did not), idle and with output flowing.
pub fn vanished(bench: &Bench, link: &'static str, report: &mut Report) {
    let scripts = [
        ("idle", "exec sleep 100000"),
        ("output flowing", "while :; do date; sleep 0.05; done"),
    ];
    for (label, script) in scripts {
        let what = format!(
            "vanished client noticed, {label} (s; {} = not noticed)",
            NOTICE_BOUND.as_secs()
        );
        let keepsh = name(link, &format!("v{}", label.len()));
        keepsh_new(bench, &keepsh, script);
        let client = Stream::spawn(bench.keepsh_client(CLIENT, &["-tt", "attach", &keepsh]));
        wait_until("the keepsh client attached", SLOW, || {
            session(bench, &keepsh)["clients"] == 1
        });
        let noticed = after_vanishing(bench, || session(bench, &keepsh)["clients"] == 0);
        drop(client);
        bench.link.restore(CLIENT);
        keepsh_kill(bench, &keepsh);
        report.add(
            link,
            what.clone(),
            KEEPSH,
            "s",
            Stats::of(vec![secs(noticed)]),
        );

        let tmux = format!("t{keepsh}");
        bench.tmux.new_session(&tmux, script);
        let client = Stream::spawn(tmux_attach(bench, CLIENT, &tmux));
        wait_until("the tmux client attached", SLOW, || {
            tmux_clients(bench, &tmux) == 1
        });
        let noticed = after_vanishing(bench, || tmux_clients(bench, &tmux) == 0);
        drop(client);
        bench.link.restore(CLIENT);
        bench.tmux.run(&["kill-session", "-t", &tmux]);
        report.add(link, what, TMUX, "s", Stats::of(vec![secs(noticed)]));
    }
}

/// Makes [`CLIENT`] vanish; how long until `gone` holds (at most
/// [`NOTICE_BOUND`]).
fn after_vanishing(bench: &Bench, mut gone: impl FnMut() -> bool) -> Duration {
    bench.link.vanish(CLIENT);
    let start = Instant::now();
    let _ = poll(NOTICE_BOUND, || gone().then_some(()));
    start.elapsed().min(NOTICE_BOUND)
}

/// 2. A client vanishes and comes back from another address with another
///    window: seconds until one client is listed and the size is the new
///    one's, and the clients listed then.
pub fn new_address(bench: &Bench, link: &'static str, report: &mut Report) {
    let keepsh = name(link, "na");
    keepsh_new(bench, &keepsh, "echo ready; exec sleep 100000");
    let attach = [&["-tt", "attach"][..], &[keepsh.as_str()]].concat();
    let old = Client::in_terminal(&bench.keepsh_client(CLIENT, &attach), 80, 24);
    wait_until("the first client", SLOW, || {
        session(bench, &keepsh)["clients"] == 1
    });
    bench.link.vanish(CLIENT);
    let start = Instant::now();
    let new = Client::in_terminal(&bench.keepsh_client(NEW_CLIENT, &attach), 100, 30);
    let taken = poll(TAKEOVER_BOUND, || {
        let s = session(bench, &keepsh);
        (s["clients"] == 1 && s["cols"] == 100 && s["rows"] == 30).then_some(())
    });
    let took = start.elapsed().min(TAKEOVER_BOUND);
    let clients = session(bench, &keepsh)["clients"]
        .as_f64()
        .unwrap_or(f64::NAN);
    drop((old, new));
    bench.link.restore(CLIENT);
    keepsh_kill(bench, &keepsh);
    let what = format!(
        "reattach from a new address: one client, new size (s; {} = not within)",
        TAKEOVER_BOUND.as_secs()
    );
    report.add(link, what.clone(), KEEPSH, "s", Stats::of(vec![secs(took)]));
    let listed = "... clients listed then";
    report.add(link, listed, KEEPSH, "clients", Stats::of(vec![clients]));
    eprintln!("keepsh took over: {}", taken.is_some());

    let tmux = format!("t{keepsh}");
    bench
        .tmux
        .new_session(&tmux, "echo ready; exec sleep 100000");
    let old = Client::in_terminal(&tmux_attach(bench, CLIENT, &tmux), 80, 24);
    wait_until("the first tmux client", SLOW, || {
        tmux_clients(bench, &tmux) == 1
    });
    bench.link.vanish(CLIENT);
    let start = Instant::now();
    let new = Client::in_terminal(&tmux_attach(bench, NEW_CLIENT, &tmux), 100, 30);
    let size = || {
        bench.tmux.run(&[
            "display-message",
            "-p",
            "-t",
            &tmux,
            "#{window_width}x#{window_height}",
        ])
    };
    let _ = poll(TAKEOVER_BOUND, || {
        (tmux_clients(bench, &tmux) == 1 && size().trim() == "100x30").then_some(())
    });
    let took = start.elapsed().min(TAKEOVER_BOUND);
    let clients = tmux_clients(bench, &tmux) as f64;
    drop((old, new));
    bench.link.restore(CLIENT);
    bench.tmux.run(&["kill-session", "-t", &tmux]);
    report.add(link, what, TMUX, "s", Stats::of(vec![secs(took)]));
    report.add(link, listed, TMUX, "clients", Stats::of(vec![clients]));
}

/// Writes 256 KiB of base64 into a file; a script that prints it and then
/// the line [`LAST`], then waits.
fn printer(bench: &Bench) -> String {
    let data = bench.dir.path().join("reattach.b64");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {} /dev/urandom | base64 > '{}'",
            192 * 1024,
            data.display()
        ))
        .status()
        .expect("make data");
    assert!(status.success());
    format!(
        "cat '{}'; printf '@@LA%sST@@'; exec sleep 100000",
        data.display()
    )
}

/// 3. Reattach after 256 KiB printed while detached: from starting the
///    client until the last line is on the screen; for keepsh also until
///    the history is in the scrollback (the screen comes twice).
pub fn reattach(bench: &Bench, link: &'static str, report: &mut Report) {
    let script = printer(bench);
    let keepsh = name(link, "ra");
    keepsh_new(bench, &keepsh, &script);
    wait_until("keepsh has the output", SLOW, || {
        session(bench, &keepsh)["output_offset"]
            .as_u64()
            .is_some_and(|o| o >= 256 * 1024)
    });
    let tmux = format!("t{keepsh}");
    bench.tmux.new_session(&tmux, &script);
    wait_until("tmux has the output", SLOW, || {
        bench
            .tmux
            .run(&["capture-pane", "-p", "-t", &tmux])
            .contains("@@LAST@@")
    });
    let (mut screen, mut history, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut t_screen, mut t_bytes) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        let start = Instant::now();
        let mut client = Stream::spawn(bench.keepsh_client(CLIENT, &["-tt", "attach", &keepsh]));
        let seen = client
            .wait_for_each(LAST, 2, SLOW)
            .unwrap_or_else(|e| panic!("{e}"));
        screen.push(seen[0] - start);
        history.push(seen[1] - start);
        bytes.push(client.received as f64 / 1024.0);
        drop(client);
        wait_until("keepsh detached", SLOW, || {
            session(bench, &keepsh)["clients"] == 0
        });

        let start = Instant::now();
        let mut client = Stream::spawn(tmux_attach(bench, CLIENT, &tmux));
        let at = client
            .wait_for(LAST, SLOW)
            .unwrap_or_else(|e| panic!("{e}"));
        t_screen.push(at - start);
        t_bytes.push(client.received as f64 / 1024.0);
        drop(client);
        wait_until("tmux detached", SLOW, || tmux_clients(bench, &tmux) == 0);
    }
    keepsh_kill(bench, &keepsh);
    bench.tmux.run(&["kill-session", "-t", &tmux]);
    let what = "reattach, 256 KiB while away: last line visible";
    report.add(link, what, KEEPSH, "ms", Stats::of_ms(&screen));
    report.add(link, what, TMUX, "ms", Stats::of_ms(&t_screen));
    let what = "... history in the scrollback, screen drawn again";
    report.add(link, what, KEEPSH, "ms", Stats::of_ms(&history));
    let what = "... KiB received by then";
    report.add(link, what, KEEPSH, "KiB", Stats::of(bytes));
    report.add(link, what, TMUX, "KiB", Stats::of(t_bytes));
}

/// 0. The baseline: from starting `ssh -tt` until a command's first output
///    (keepsh: `version`; sshd: `echo`), the handshake over the link.
pub fn handshake(bench: &Bench, link: &'static str, report: &mut Report) {
    let (mut k, mut s) = (Vec::new(), Vec::new());
    for _ in 0..runs() {
        let start = Instant::now();
        let mut client = Stream::spawn(bench.keepsh_client(CLIENT, &["-tt", "version"]));
        let at = client
            .wait_for(b"keepsh ", SLOW)
            .unwrap_or_else(|e| panic!("{e}"));
        k.push(at - start);
        let start = Instant::now();
        let args = ["-tt".to_owned(), "echo".to_owned(), "@@DO''NE@@".to_owned()];
        let mut client = Stream::spawn(bench.sshd_client(CLIENT, &args));
        let at = client
            .wait_for(b"@@DONE@@", SLOW)
            .unwrap_or_else(|e| panic!("{e}"));
        s.push(at - start);
    }
    let what = "ssh -tt: to a command's first output";
    report.add(link, what, KEEPSH, "ms", Stats::of_ms(&k));
    report.add(link, what, SSHD, "ms", Stats::of_ms(&s));
}

/// 4. Keystroke echo into `cat`: median and 90th percentile.
pub fn echo(bench: &Bench, link: &'static str, report: &mut Report) {
    let keepsh = name(link, "ec");
    let mut args = vec!["-tt".to_owned()];
    args.extend(bench.tmux.line(&["new-session", "cat"]));
    let clients = vec![
        bench.keepsh_client(CLIENT, &["-tt", "new", &keepsh, "--", "cat"]),
        bench.sshd_client(CLIENT, &["-tt".into(), "cat".into()]),
        bench.sshd_client(CLIENT, &args),
    ];
    let mut times = type_keys(clients, KEYS, SLOW).into_iter();
    let (k, s, t) = (
        times.next().unwrap_or_default(),
        times.next().unwrap_or_default(),
        times.next().unwrap_or_default(),
    );
    keepsh_kill(bench, &keepsh);
    bench.tmux.kill_server();
    for (peer, samples) in [(KEEPSH, k), (SSHD, s), (TMUX, t)] {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let mut sorted = ms.clone();
        sorted.sort_by(f64::total_cmp);
        let p90 = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
        report.add(link, "keystroke echo", peer, "ms", Stats::of(ms));
        report.add(
            link,
            "... 90th percentile",
            peer,
            "ms",
            Stats::of(vec![p90]),
        );
    }
}
