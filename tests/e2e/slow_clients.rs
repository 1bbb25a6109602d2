//! Slow and frozen clients: they never stall the session or the other
//! clients, never make memory grow without bound, and get a correct screen
//! back when they resume.

use std::time::{Duration, Instant};

use russh::client::{Handle, Msg};
use russh::{Channel, ChannelMsg};

use crate::harness::{DEADLINE, Server, Terminal, TestClient, block_on, session_processes};

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
    // ~100 MiB of base64 (75 MiB of zeros), then a final screen.
    let script = "echo waiting; read go; head -c 78643200 /dev/zero | base64 -w 100; \
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
            caught_up < 64 << 20,
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
