//! 7. Waiters: the throughput of one attached client while 100 `wait
//!    --for` calls, each on its own pattern, wait on the same session
//!    (held to: within 10 % of none). All waiters together cost the session
//!    one pass over the text (`session::waiters`): memchr-fast between
//!    candidates when the patterns have a literal prefix, one DFA step per
//!    byte when they have none.

use std::time::{Duration, Instant};

use crate::Bench;
use crate::harness::wait_until;
use crate::probe::{Stats, Stream};
use crate::report::{Report, num};
use crate::sections::{DONE, KEEPSH, MIB, attach_held, emitter, held_emitter, kill_session};

/// The pattern of waiter N.
type Patterns = fn(usize) -> String;

/// Concurrent `wait --for` clients.
const WAITERS: usize = 100;

pub fn waiters(bench: &Bench, report: &mut Report) {
    let size = if bench.quick { 20 * MIB } else { 100 * MIB };
    let (emit, size) = emitter(bench, "waiters", size);
    let rate = |d: Duration| size as f64 / d.as_secs_f64() / 1e6;
    // A literal prefix (the session skips to candidates with memchr), and
    // none (one DFA step per byte of text: base64 is full of digits).
    let kinds: [(&str, Patterns); 3] = [
        ("no waiter", |_| String::new()),
        ("100 `wait --for 'never-printed-N'`", |i| {
            format!("never-printed-{i}")
        }),
        ("100 `wait --for '[0-9]+ never-N'`", |i| {
            format!("[0-9]+ never-{i}")
        }),
    ];
    let mut rates = vec![Vec::new(); kinds.len()];
    let mut received = vec![Vec::new(); kinds.len()];
    for run in 0..bench.runs(5, 2) {
        for (k, (_, pattern)) in kinds.iter().enumerate() {
            let count = if k == 0 { 0 } else { WAITERS };
            let patterns: Vec<String> = (0..count).map(pattern).collect();
            let (d, n) = with_waiters(bench, &format!("w{k}-{run}"), &emit, &patterns);
            rates[k].push(rate(d));
            received[k].push(n as f64 / 1e6);
        }
    }
    for (k, (label, _)) in kinds.iter().enumerate() {
        let what = format!(
            "{label}: {} MB to an attached ssh -tt",
            num(size as f64 / 1e6)
        );
        report.add("waiters", what, KEEPSH, "MB/s", Stats::of(rates[k].clone()));
        let what = format!("... bytes received by the client, {label}");
        report.add(
            "waiters",
            what,
            KEEPSH,
            "MB",
            Stats::of(received[k].clone()),
        );
    }
}

/// Session `name` prints the emitter's output to one attached `ssh -tt`
/// while a client per pattern runs `wait NAME --for PATTERN`; the time
/// from `go` until [`DONE`] arrived, and the bytes the client received.
fn with_waiters(bench: &Bench, name: &str, emit: &str, patterns: &[String]) -> (Duration, u64) {
    let count = patterns.len();
    held_emitter(bench, name, emit);
    let waiters: Vec<Stream> = patterns
        .iter()
        .map(|pattern| {
            let mut cmd = bench.keepsh_ssh();
            cmd.args(["wait", name, "--for", &shell_words::quote(pattern)]);
            Stream::spawn(cmd)
        })
        .collect();
    wait_until(
        "every waiter to be in place",
        Duration::from_secs(120),
        || {
            let out = bench.keepsh.run("alice", &["list", "--json"]);
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            list.as_array().is_some_and(|sessions| {
                sessions
                    .iter()
                    .any(|s| s["name"] == name && s["watchers"] == count)
            })
        },
    );
    let mut client = attach_held(bench, name);
    let start = Instant::now();
    client.write(b"go\n");
    let done = client.wait_for(DONE, Duration::from_secs(300));
    let at = done.unwrap_or_else(|e| panic!("{e}"));
    kill_session(bench, name);
    drop(waiters);
    (at - start, client.received)
}
