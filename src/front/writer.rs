//! Per-channel output: one task per attached channel forwards the session's
//! events to the client through russh's `Handle`.
//!
//! Why a task per channel: `Handle::data` waits while the client's window is
//! full, and russh's gate is per connection. Waiting here, off the handler,
//! keeps the connection's request loop (keepalives, input, resizes) running;
//! the session never waits on it, because it only `try_send`s into the
//! bounded event queue this task drains.

use bytes::{Bytes, BytesMut};
use russh::server::Handle;
use russh::{ChannelId, Sig};
use tokio::sync::mpsc;

use crate::command::Reply;
use crate::protocol::Event;

/// Forwards `events` to `channel` until the session exits (then sends
/// `exit-status` or `exit-signal`, EOF and close, RFC 4254 §6.10, §5.3) or
/// the connection is gone.
pub async fn forward(handle: Handle, channel: ChannelId, mut events: mpsc::Receiver<Event>) {
    let mut next = None;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => match events.recv().await {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Event::Output { data, .. } | Event::Redraw { data } => {
                // PTY reads are small (often 4 KiB); sending what is already
                // queued as one message saves a wake-up of russh's loop per read.
                let (data, after) = coalesce(data, &mut events);
                next = after;
                if handle.data(channel, data).await.is_err() {
                    return; // connection gone; the handler's drop detaches
                }
            }
            Event::Exited(status) => {
                // RFC 4254 §6.10: exit-signal for a program a signal ended.
                let _ = match status.signal {
                    Some(name) => {
                        let signal = ssh_signal(&name);
                        handle
                            .exit_signal_request(
                                channel,
                                signal,
                                false,
                                String::new(),
                                String::new(),
                            )
                            .await
                    }
                    None => handle.exit_status_request(channel, status.code).await,
                };
                break;
            }
            Event::Skipped { from, to } => {
                tracing::debug!(from, to, "client fell behind the ring buffer");
            }
            Event::Attached { .. } | Event::Refused(_) | Event::History { .. } => {}
        }
    }
    // Exited, or the session ended (killed) without a status for us.
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

/// The russh value for a signal name without "SIG".
fn ssh_signal(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_owned()),
    }
}

/// Most bytes merged into one `Handle::data` call: two SSH packets of 32 KiB.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Appends the output events already queued behind `first` (up to
/// [`COALESCE_LIMIT`] bytes). Returns the data and the first event that was
/// not merged, if one was taken off the queue.
fn coalesce(first: Bytes, events: &mut mpsc::Receiver<Event>) -> (Bytes, Option<Event>) {
    if first.len() >= COALESCE_LIMIT {
        return (first, None);
    }
    let mut merged: Option<BytesMut> = None;
    while merged.as_ref().map_or(first.len(), BytesMut::len) < COALESCE_LIMIT {
        match events.try_recv() {
            Ok(Event::Output { data, .. } | Event::Redraw { data }) => {
                merged
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&data);
            }
            Ok(other) => return (merged.map_or(first, BytesMut::freeze), Some(other)),
            Err(_) => break,
        }
    }
    (merged.map_or(first, BytesMut::freeze), None)
}

/// Sends a finished command's output, its exit status, EOF and close. With
/// `crlf` (the client has a PTY in raw mode), `\n` becomes `\r\n`.
pub async fn send_reply(handle: Handle, channel: ChannelId, reply: Reply, crlf: bool) {
    let fix = |s: String| if crlf { s.replace('\n', "\r\n") } else { s };
    if !reply.stdout.is_empty() {
        let stdout = if reply.verbatim {
            reply.stdout
        } else {
            fix(String::from_utf8_lossy(&reply.stdout).into_owned()).into_bytes()
        };
        let _ = handle.data(channel, bytes::Bytes::from(stdout)).await;
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
