//! Per-channel output: the session's events, or a command's reply, to the
//! client, on the channel's own task (`channel`).
//!
//! Output goes through the channel's `ChannelWriteHalf`, which sends no more
//! than the client's window for that channel allows and otherwise waits, on
//! this channel only. Never `Handle::data`: russh queues what exceeds a
//! channel's window and, while any channel of a connection has such queued
//! data, stops taking messages for *every* channel of that connection
//! (`has_any_pending_data` in russh's server loop), so one paused terminal
//! would freeze its neighbours. The session never waits on this either: it
//! only `try_send`s into its bounded queue for the attachment, which its
//! process drains onto the socket read here.

use bytes::{Bytes, BytesMut};
use russh::server::{Handle, Msg};
use russh::{ChannelWriteHalf, Sig};

use crate::command::Reply;
use crate::protocol::Event;
use crate::remote::Events;
use crate::session::text::Text;

/// Forwards `events` to `channel` until the session exits (then sends
/// `exit-status` or `exit-signal`, EOF and close, RFC 4254 §6.10, §5.3) or
/// the connection is gone.
pub async fn forward(out: &ChannelWriteHalf<Msg>, handle: &Handle, mut events: Events) {
    let mut next = None;
    loop {
        let event = match next.take() {
            Some(event) => event,
            None => match events.next().await {
                Some(event) => event,
                None => break,
            },
        };
        match event {
            Event::Output { data, .. } => {
                // PTY reads are small (often 4 KiB); sending what is already
                // queued as one message saves a wake-up of russh's loop per read.
                let (data, after) = coalesce(data, &mut events).await;
                next = after;
                if out.data_bytes(data).await.is_err() {
                    return; // connection gone; the handler's drop detaches
                }
            }
            // As the session cut it: the first screen of an attach goes in
            // SSH packets of its own, so that a client on a slow link shows
            // it before the history's bytes have arrived.
            Event::Redraw { data } => {
                if out.data_bytes(data).await.is_err() {
                    return;
                }
            }
            Event::Exited(status) => {
                // RFC 4254 §6.10: exit-signal for a program a signal ended.
                let _ = match status.signal {
                    Some(name) => {
                        let signal = ssh_signal(&name);
                        handle
                            .exit_signal_request(
                                out.id(),
                                signal,
                                false,
                                String::new(),
                                String::new(),
                            )
                            .await
                    }
                    None => out.exit_status(status.code).await.map_err(|_| ()),
                };
                break;
            }
            Event::Skipped { from, to } => {
                tracing::debug!(from, to, "client fell behind the ring buffer");
            }
            // Only a waiter (`wait --for`) gets it, and it is not forwarded.
            Event::Matched => {}
        }
    }
    // Exited, or the session ended (killed) without a status for us.
    let _ = out.eof().await;
    let _ = out.close().await;
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

/// Appends the output events that have already arrived behind `first` (up
/// to [`COALESCE_LIMIT`] bytes), without waiting for more. Returns the data
/// and the first event that was not merged, if one was read.
async fn coalesce(first: Bytes, events: &mut Events) -> (Bytes, Option<Event>) {
    if first.len() >= COALESCE_LIMIT {
        return (first, None);
    }
    let mut merged: Option<BytesMut> = None;
    while merged.as_ref().map_or(first.len(), BytesMut::len) < COALESCE_LIMIT {
        match events.next_if_arrived().await {
            Some(Event::Output { data, .. }) => {
                merged
                    .get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&data);
            }
            Some(other) => return (merged.map_or(first, BytesMut::freeze), Some(other)),
            None => break,
        }
    }
    (merged.map_or(first, BytesMut::freeze), None)
}

/// `tail -f`: the first lines (a `Redraw` of text), then each output chunk
/// as text (escape sequences stripped), until the session exits (status 0)
/// or ends; `\n` becomes `\r\n` with `crlf`.
pub async fn follow(out: &ChannelWriteHalf<Msg>, mut events: Events, crlf: bool) {
    let mut text = Text::default();
    while let Some(event) = events.next().await {
        let chunk = match event {
            Event::Redraw { data } => String::from_utf8_lossy(&data).into_owned(),
            Event::Output { data, .. } => text.feed(&data),
            Event::Skipped { from, to } => format!("[keepsh: {} bytes skipped]\n", to - from),
            Event::Exited(_) | Event::Matched => break,
        };
        let chunk = if crlf {
            chunk.replace('\n', "\r\n")
        } else {
            chunk
        };
        if !chunk.is_empty() && out.data_bytes(chunk.into_bytes()).await.is_err() {
            return;
        }
    }
    let _ = out.exit_status(0).await;
    let _ = out.eof().await;
    let _ = out.close().await;
}

/// Sends a finished command's output, its exit status, EOF and close. With
/// `crlf` (the client has a PTY in raw mode), `\n` becomes `\r\n`.
pub async fn send_reply(out: &ChannelWriteHalf<Msg>, reply: Reply, crlf: bool) {
    let fix = |s: String| if crlf { s.replace('\n', "\r\n") } else { s };
    if !reply.stdout.is_empty() {
        let stdout = if reply.verbatim {
            reply.stdout
        } else {
            fix(String::from_utf8_lossy(&reply.stdout).into_owned()).into_bytes()
        };
        let _ = out.data_bytes(stdout).await;
    }
    if !reply.stderr.is_empty() {
        let _ = out.extended_data_bytes(1, fix(reply.stderr)).await;
    }
    let _ = out.exit_status(reply.status).await;
    let _ = out.eof().await;
    let _ = out.close().await;
}
