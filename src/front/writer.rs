//! Per-channel output: one task per attached channel forwards the session's
//! events to the client through russh's `Handle`.
//!
//! Why a task per channel: `Handle::data` waits while the client's window is
//! full, and russh's gate is per connection. Waiting here, off the handler,
//! keeps the connection's request loop (keepalives, input, resizes) running;
//! the session never waits on it, because it only `try_send`s into the
//! bounded event queue this task drains.

use russh::ChannelId;
use russh::server::Handle;
use tokio::sync::mpsc;

use crate::command::Reply;
use crate::protocol::Event;

/// Forwards `events` to `channel` until the session exits (then sends
/// `exit-status`, EOF and close, RFC 4254 §6.10, §5.3) or the connection is
/// gone.
pub async fn forward(handle: Handle, channel: ChannelId, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Output { data, .. } => {
                if handle.data(channel, data).await.is_err() {
                    return; // connection gone; the handler's drop detaches
                }
            }
            Event::Exited(status) => {
                let _ = handle.exit_status_request(channel, status.code).await;
                break;
            }
            Event::Skipped { from, to } => {
                tracing::debug!(from, to, "client fell behind the ring buffer");
            }
            Event::Attached { .. } | Event::Refused { .. } => {}
        }
    }
    // Exited, or the session ended (killed) without a status for us.
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

/// Sends a finished command's output, its exit status, EOF and close. With
/// `crlf` (the client has a PTY in raw mode), `\n` becomes `\r\n`.
pub async fn send_reply(handle: Handle, channel: ChannelId, reply: Reply, crlf: bool) {
    let fix = |s: String| if crlf { s.replace('\n', "\r\n") } else { s };
    if !reply.stdout.is_empty() {
        let _ = handle
            .data(channel, bytes::Bytes::from(fix(reply.stdout)))
            .await;
    }
    if !reply.stderr.is_empty() {
        let _ = handle
            .extended_data(channel, 1, bytes::Bytes::from(fix(reply.stderr)))
            .await;
    }
    let _ = handle.exit_status_request(channel, reply.status).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}
