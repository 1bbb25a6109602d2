//! Reattach benchmark: how long from starting `ssh -tt host attach X` until
//! the client has the last byte of a session's buffered output, against the
//! bare handshake (`ssh host version`). Real server binary, real OpenSSH
//! client, loopback.
//!
//! Run: `cargo bench --bench reattach`. Prints a Markdown table.

#[allow(dead_code, reason = "the bench uses part of the shared test harness")]
#[path = "../tests/e2e/harness.rs"]
mod harness;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::{DEADLINE, Options, Server, wait_until};

const RUNS: usize = 25;

/// Runs `cmd` until its stdout contains `sentinel`; returns the elapsed time.
fn time_until(mut cmd: std::process::Command, sentinel: &[u8]) -> Duration {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stdout.read(&mut buf).expect("read");
        assert!(n > 0, "ssh ended before the sentinel");
        seen.extend_from_slice(&buf[..n]);
        let tail = seen.len().saturating_sub(n + sentinel.len());
        if seen[tail..].windows(sentinel.len()).any(|w| w == sentinel) {
            break;
        }
    }
    let elapsed = start.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    )
}

fn main() {
    let server = Server::start_with(Options {
        sessions: "scrollback_bytes = \"1MiB\"",
        ..Default::default()
    });

    println!("| what | median ms | min ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    // With -tt, as the reattaches below: OpenSSH sets TCP_NODELAY only for
    // sessions with a terminal, so the two variants differ by Nagle's delay.
    let mut h_med = 0.0;
    for tty in [false, true] {
        let handshake: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let mut cmd = server.ssh("alice");
                if tty {
                    cmd.arg("-tt");
                }
                cmd.arg("version");
                time_until(cmd, b"keepsh ")
            })
            .collect();
        let (med, min, max) = stats(handshake);
        let label = if tty {
            "ssh -tt host version"
        } else {
            "ssh host version"
        };
        println!("| handshake: `{label}` | {med:.1} | {min:.1} | {max:.1} |");
        h_med = med;
    }

    for (label, bytes) in [("256 KiB", 256 * 1024u64), ("1 MiB (full ring)", 1_100_000)] {
        let name = format!("b{bytes}");
        // base64 of random data: 4/3 of the input, in 76-column lines.
        let script = format!(
            "sh -c 'head -c {} /dev/urandom | base64; echo BENCH-END; sleep 100000'",
            bytes * 3 / 4
        );
        let out = server.run("alice", &["new", "-d", &name, "--", &script]);
        assert!(out.status.success());
        wait_until("output produced", DEADLINE, || {
            server
                .session("alice", &name)
                .and_then(|s| s["output_offset"].as_u64())
                .is_some_and(|o| o >= bytes)
        });
        let samples: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let mut cmd = server.ssh("alice");
                cmd.args(["-tt", "attach", &name]);
                let t = time_until(cmd, b"BENCH-END");
                // The next attach must not race this one's detach.
                wait_until("detached", DEADLINE, || {
                    server
                        .session("alice", &name)
                        .is_some_and(|s| s["clients"] == 0)
                });
                t
            })
            .collect();
        let (med, min, max) = stats(samples);
        println!("| reattach, {label} buffered, to last byte | {med:.1} | {min:.1} | {max:.1} |");
        println!("| … beyond the handshake | {:.1} | | |", med - h_med);
    }
}
