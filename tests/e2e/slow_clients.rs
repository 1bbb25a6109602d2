//! Slow and frozen clients: they never stall the session or the other
//! clients, never make memory grow without bound, and get a correct screen
//! back when they resume.

use std::time::{Duration, Instant};

use russh::client::{Handle, Msg};
use russh::{Channel, ChannelMsg};

use crate::harness::{Client, DEADLINE, Server, Terminal, TestClient, block_on, session_processes};

/// Peak resident memory (VmHWM) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Opens a channel with an 80×24 PTY running `attach flood`.
async fn attach(handle: &Handle<TestClient>) -> Channel<Msg> {
    let channel = handle.channel_open_session().await.expect("channel");
    channel
        .request_pty(false, "xterm", 80, 24, 0, 0, &[])
        .await
        .expect("pty-req");
    channel.exec(false, "attach flood").await.expect("exec");
    channel
}

/// Reads `channel` into `terminal` until its screen shows `text`; returns
/// the bytes read. Rendering the screen's text per chunk would cost more
/// than the flood, so it is looked at every 4 MiB and whenever the output
/// pauses.
async fn read_until(channel: &mut Channel<Msg>, terminal: &mut Terminal, text: &str) -> u64 {
    let start = Instant::now();
    let (mut received, mut since_check) = (0u64, 0usize);
    loop {
        if since_check == 0 && terminal.screen().contents().contains(text) {
            return received;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no {text:?} after {received} bytes; screen:\n{}",
            terminal.screen().contents()
        );
        match tokio::time::timeout(Duration::from_millis(100), channel.wait()).await {
            Ok(Some(ChannelMsg::Data { data })) => {
                terminal.process(&data);
                received += data.len() as u64;
                since_check += data.len();
                if since_check > 4 << 20 {
                    since_check = 0;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("channel closed"),
            Err(_) => since_check = 0, // a pause
        }
    }
}

#[test]
fn a_client_that_stops_reading_never_slows_another_and_recovers_the_screen() {
    let server = Server::start();
    // 32 MiB of base64 (24 MiB of zeros), then a final screen: the fast
    // client gets all of it (it paces the program), the frozen one none.
    let script = "echo waiting; read go; head -c 25165824 /dev/zero | base64 -w 100; \
                  clear; seq -f 'final %g' 1 10; echo FLOOD-DONE; exec sleep 1000";
    let quoted = shell_words::quote(script).into_owned();
    let out = server.run(
        "alice",
        &["new", "-d", "flood", "--", "bash", "-c", &quoted],
    );
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));

    block_on(async {
        // A frozen phone: attached, then it reads nothing (its connection
        // stalls once russh's channel queue is full, and TCP closes its
        // window).
        let frozen_handle = server.russh_key("alice").await;
        let mut frozen = attach(&frozen_handle).await;
        let mut frozen_screen = Terminal::new(80, 24);
        read_until(&mut frozen, &mut frozen_screen, "waiting").await;

        let fast_handle = server.russh_key("alice").await;
        let mut fast = attach(&fast_handle).await;
        let mut fast_screen = Terminal::new(80, 24);
        read_until(&mut fast, &mut fast_screen, "waiting").await;
        fast.data(&b"go\n"[..]).await.expect("type");
        let started = Instant::now();
        let received = read_until(&mut fast, &mut fast_screen, "FLOOD-DONE").await;
        eprintln!(
            "fast client: {:.1} MB in {:.2} s while another client read nothing",
            received as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        read_until(&mut fast, &mut fast_screen, "final 10").await;

        // Memory stayed bounded while one client held everything back.
        let sessions = session_processes(server.dir.path());
        let session_kib = peak_rss_kib(sessions[0]);
        let server_kib = peak_rss_kib(server.pid());
        eprintln!("peak RSS: session process {session_kib} KiB, server {server_kib} KiB");
        assert!(
            session_kib < 48 * 1024,
            "session process peaked at {session_kib} KiB"
        );
        assert!(server_kib < 96 * 1024, "server peaked at {server_kib} KiB");

        // The frozen client reads again: after what was in flight, it is
        // redrawn to the current screen rather than fed 100 MiB.
        let caught_up = read_until(&mut frozen, &mut frozen_screen, "FLOOD-DONE").await;
        assert!(
            caught_up < 16 << 20,
            "fed {caught_up} bytes instead of a redraw"
        );
        let want = fast_screen.state();
        let start = Instant::now();
        while frozen_screen.state() != want {
            let msg = tokio::time::timeout(DEADLINE - start.elapsed(), frozen.wait())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the resumed client's screen:\n{}\nwant:\n{want}",
                        frozen_screen.state()
                    )
                });
            if let Some(ChannelMsg::Data { data }) = msg {
                frozen_screen.process(&data);
            }
        }
    });
}

/// 20 MiB of numbered lines (`seq -w`: 7 digits and a newline each), then
/// the program exits.
const CAT_20_MIB: &str = "seq -w 1 2621440; echo FLOOD-DONE";
/// The lines [`CAT_20_MIB`] prints.
const CAT_LINES: u32 = 2_621_440;

/// Starts session `flood` detached: it prints `waiting`, reads a line from
/// `go` (a file, or the terminal when `None`), then runs [`CAT_20_MIB`].
fn start_cat(server: &Server, go: Option<&std::path::Path>) {
    let from = go.map_or(String::new(), |path| {
        format!("< {}", shell_words::quote(&path.to_string_lossy()))
    });
    let script = format!("echo waiting; read go {from}; {CAT_20_MIB}");
    let quoted = shell_words::quote(&script).into_owned();
    let out = server.run(
        "alice",
        &["new", "-d", "flood", "--", "bash", "-c", &quoted],
    );
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
}

/// Asserts that `output` holds every line of [`CAT_20_MIB`], in order.
fn assert_every_line(output: &[u8]) {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<u32> = text
        .split("\r\n")
        .filter(|l| l.len() == 7 && l.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|l| l.parse().ok())
        .collect();
    let first_wrong = lines.iter().zip(1..).position(|(&got, want)| got != want);
    assert!(
        first_wrong.is_none() && lines.len() == CAT_LINES as usize,
        "{} of {CAT_LINES} lines received; first out of order at {first_wrong:?}",
        lines.len()
    );
}

/// Stops (`STOP`) or resumes (`CONT`) a client process, as a phone that
/// sleeps or a terminal paused with ^S-like flow control would.
fn signal(client: &Client, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &client.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name}");
}

#[test]
fn a_cat_of_20_mib_reaches_a_client_that_keeps_up_complete_and_in_order() {
    let server = Server::start();
    start_cat(&server, None);
    let mut client = server.tt("alice", &["attach", "flood"]);
    client.wait_for("waiting");
    client.send("go\n");
    assert_eq!(client.wait_exit(), 0, "{}", client.errors());
    assert_every_line(&client.bytes());
}

#[test]
fn a_frozen_second_client_neither_costs_the_live_one_a_byte_nor_stops_the_program() {
    let server = Server::start();
    start_cat(&server, None);
    // The live client first: an attach probes the clients already there,
    // and a stopped one would not answer (and be detached, as a vanished
    // phone is).
    let mut live = server.tt("alice", &["attach", "flood"]);
    live.wait_for("waiting");
    let mut frozen = server.tt("alice", &["attach", "flood"]);
    frozen.wait_for("waiting");
    signal(&frozen, "STOP");
    live.send("go\n");
    // The program finishes and the live client gets every byte, although
    // the frozen one took nothing for all of it.
    assert_eq!(live.wait_exit(), 0, "{}", live.errors());
    assert_every_line(&live.bytes());
    server.wait_state("alice", "flood", "exited");
    // Resumed, the frozen client is brought to the end and told the exit.
    signal(&frozen, "CONT");
    assert_eq!(frozen.wait_exit(), 0, "{}", frozen.errors());
    let screen = frozen.terminal().screen().contents();
    assert!(screen.contains("FLOOD-DONE"), "{screen}");
}

#[test]
fn a_client_frozen_alone_does_not_stop_the_program() {
    let server = Server::start();
    // The program starts its output when the test writes to a FIFO, so
    // that the only client is frozen before any of it.
    let go = server.dir.path().join("go");
    let made = std::process::Command::new("mkfifo").arg(&go).status();
    assert!(made.expect("run mkfifo").success());
    start_cat(&server, Some(&go));
    let mut frozen = server.tt("alice", &["attach", "flood"]);
    frozen.wait_for("waiting");
    signal(&frozen, "STOP");
    std::fs::write(&go, "go\n").expect("write to the FIFO");
    // It paces the program until its queue is full, holds it for the
    // pacing bound, then stops pacing: the program runs to its end.
    server.wait_state("alice", "flood", "exited");
    signal(&frozen, "CONT");
    assert_eq!(frozen.wait_exit(), 0, "{}", frozen.errors());
    assert!(frozen.terminal().screen().contents().contains("FLOOD-DONE"));
}
