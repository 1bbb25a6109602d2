//! The channels of this server attached to each session, so that a new
//! attachment can detach the others: all of them with `attach -d` (tmux's
//! `attach -d`), or those on other connections that do not answer a
//! keepalive within [`PROBE_DEADLINE`] (a phone that vanished, whose old
//! connection would otherwise still count as a client and set the size).
//!
//! One server serves a state directory, so every attachment of a session
//! goes through this table. A channel registers once attached and is
//! removed when its [`Registration`] drops (the channel's task ends); the
//! lock is held only to change the table, never across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::server::Handle;
use tokio::sync::oneshot;

use crate::protocol::SessionId;

/// How long a client attached on another connection has to answer a
/// keepalive when someone attaches to its session (DESIGN §2: a vanished
/// client never blocks a reattach).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// Why a channel is told to detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Another client attached with `attach -d`.
    Replaced,
    /// Another client attached and this one's connection did not answer a
    /// keepalive within [`PROBE_DEADLINE`].
    Unanswered,
}

/// One attached channel.
struct Entry<H> {
    token: u64,
    /// Which connection it is on (see [`ConnectionKey`]).
    connection: ConnectionKey,
    /// That connection, to probe (a russh [`Handle`]).
    handle: H,
    detach: oneshot::Sender<Detached>,
}

/// Tells connections apart: the address of the connection's handle cell
/// (`Connection::handle`), unique while the connection lives.
pub type ConnectionKey = usize;

/// The attached channels, by session, each with its connection's `H` (a
/// russh [`Handle`]).
pub struct AttachedChannels<H = Handle> {
    next: AtomicU64,
    table: Mutex<HashMap<SessionId, Vec<Entry<H>>>>,
}

impl<H> Default for AttachedChannels<H> {
    fn default() -> Self {
        AttachedChannels {
            next: AtomicU64::new(0),
            table: Mutex::new(HashMap::new()),
        }
    }
}

/// One attached channel's place in the table; dropping it removes it.
pub struct Registration<'a, H = Handle> {
    channels: &'a AttachedChannels<H>,
    session: SessionId,
    token: u64,
    connection: ConnectionKey,
}

impl<H: Clone> AttachedChannels<H> {
    /// Registers a channel of `connection` (reached through `handle`)
    /// attached to `session`; the receiver resolves when it is detached.
    pub fn register(
        &self,
        session: SessionId,
        connection: ConnectionKey,
        handle: H,
    ) -> (Registration<'_, H>, oneshot::Receiver<Detached>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (detach, rx) = oneshot::channel();
        let entry = Entry {
            token,
            connection,
            handle,
            detach,
        };
        self.lock().entry(session).or_default().push(entry);
        let registration = Registration {
            channels: self,
            session,
            token,
            connection,
        };
        (registration, rx)
    }

    /// Tells every channel attached to `keep`'s session but `keep` to
    /// detach ([`Detached::Replaced`]); returns how many were told.
    pub fn detach_others(&self, keep: &Registration<'_, H>) -> usize {
        let others: Vec<Entry<H>> = match self.lock().get_mut(&keep.session) {
            Some(entries) => entries.extract_if(.., |e| e.token != keep.token).collect(),
            None => Vec::new(),
        };
        let told = others.len();
        for entry in others {
            let _ = entry.detach.send(Detached::Replaced);
        }
        told
    }

    /// The channels attached to `keep`'s session on other connections than
    /// its own, to probe: their tokens and connections.
    pub fn on_other_connections(&self, keep: &Registration<'_, H>) -> Vec<(u64, H)> {
        self.lock()
            .get(&keep.session)
            .into_iter()
            .flatten()
            .filter(|e| e.connection != keep.connection)
            .map(|e| (e.token, e.handle.clone()))
            .collect()
    }

    /// Tells channel `token` of `session` to detach for `why`; false if it
    /// is gone already.
    pub fn detach(&self, session: SessionId, token: u64, why: Detached) -> bool {
        let entry = self.lock().get_mut(&session).and_then(|entries| {
            let at = entries.iter().position(|e| e.token == token)?;
            Some(entries.swap_remove(at))
        });
        entry.is_some_and(|entry| entry.detach.send(why).is_ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Vec<Entry<H>>>> {
        // A panic elsewhere while holding it leaves the table usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Probes channel `token` of `session` on `handle`'s connection: detaches
/// it ([`Detached::Unanswered`]) unless the client answers a keepalive
/// within [`PROBE_DEADLINE`].
pub async fn probe(channels: &AttachedChannels, session: SessionId, token: u64, handle: Handle) {
    let answered = match handle.ping() {
        Ok(reply) => matches!(
            tokio::time::timeout(PROBE_DEADLINE, reply).await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    };
    if !answered && channels.detach(session, token, Detached::Unanswered) {
        tracing::info!(%session, "a client on another connection did not answer a keepalive; detached it");
    }
}

impl<H> Drop for Registration<'_, H> {
    fn drop(&mut self) {
        let mut table = self
            .channels
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = table.get_mut(&self.session) {
            entries.retain(|e| e.token != self.token);
            if entries.is_empty() {
                table.remove(&self.session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_others_tells_every_other_channel_of_the_session_once() {
        let channels = AttachedChannels::<()>::default();
        let (a, b) = (SessionId::random(), SessionId::random());
        let (keep, mut kept) = channels.register(a, 1, ());
        let (_other, mut told) = channels.register(a, 2, ());
        let (_elsewhere, mut untouched) = channels.register(b, 2, ());
        assert_eq!(channels.detach_others(&keep), 1);
        assert_eq!(told.try_recv(), Ok(Detached::Replaced));
        assert!(kept.try_recv().is_err());
        assert!(untouched.try_recv().is_err());
        // Told once: it is out of the table.
        assert_eq!(channels.detach_others(&keep), 0);
        drop(keep);
        assert!(!channels.lock().contains_key(&a));
    }

    #[test]
    fn only_channels_on_other_connections_are_probed_and_detached_once() {
        let channels = AttachedChannels::<()>::default();
        let session = SessionId::random();
        let (keep, _) = channels.register(session, 1, ());
        let (_sibling, _) = channels.register(session, 1, ());
        let (phone, mut told) = channels.register(session, 2, ());
        let probed = channels.on_other_connections(&keep);
        assert_eq!(probed, [(phone.token, ())]);
        assert!(channels.detach(session, phone.token, Detached::Unanswered));
        assert_eq!(told.try_recv(), Ok(Detached::Unanswered));
        assert!(!channels.detach(session, phone.token, Detached::Unanswered));
    }
}
