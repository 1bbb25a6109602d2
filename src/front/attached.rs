//! The channels of this server attached to each session, so that
//! `attach -d` (tmux's `attach -d`) can detach the others.
//!
//! One server serves a state directory, so every attachment of a session
//! goes through this table. A channel registers once attached and is
//! removed when its [`Registration`] drops (the channel's task ends); the
//! lock is held only to change the table, never across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::protocol::SessionId;

/// Each session's attached channels: a token and how to tell it to detach.
type Table = HashMap<SessionId, Vec<(u64, oneshot::Sender<()>)>>;

/// The attached channels, by session.
#[derive(Default)]
pub struct AttachedChannels {
    next: AtomicU64,
    table: Mutex<Table>,
}

/// One attached channel's place in the table; dropping it removes it.
pub struct Registration<'a> {
    channels: &'a AttachedChannels,
    session: SessionId,
    token: u64,
}

impl AttachedChannels {
    /// Registers a channel attached to `session`; the receiver resolves
    /// when another client detaches it.
    pub fn register(&self, session: SessionId) -> (Registration<'_>, oneshot::Receiver<()>) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().entry(session).or_default().push((token, tx));
        let registration = Registration {
            channels: self,
            session,
            token,
        };
        (registration, rx)
    }

    /// Tells every channel attached to `keep`'s session but `keep` to
    /// detach; returns how many were told.
    pub fn detach_others(&self, keep: &Registration<'_>) -> usize {
        let mut table = self.lock();
        let Some(channels) = table.get_mut(&keep.session) else {
            return 0;
        };
        let others: Vec<_> = channels
            .extract_if(.., |(token, _)| *token != keep.token)
            .collect();
        let told = others.len();
        for (_, detach) in others {
            let _ = detach.send(());
        }
        told
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere while holding it leaves the table usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut table = self.channels.lock();
        if let Some(channels) = table.get_mut(&self.session) {
            channels.retain(|(token, _)| *token != self.token);
            if channels.is_empty() {
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
        let channels = AttachedChannels::default();
        let (a, b) = (SessionId::random(), SessionId::random());
        let (keep, mut kept) = channels.register(a);
        let (_other, mut told) = channels.register(a);
        let (_elsewhere, mut untouched) = channels.register(b);
        assert_eq!(channels.detach_others(&keep), 1);
        assert!(told.try_recv().is_ok());
        assert!(kept.try_recv().is_err());
        assert!(untouched.try_recv().is_err());
        // Told once: it is out of the table.
        assert_eq!(channels.detach_others(&keep), 0);
        drop(keep);
        assert!(!channels.lock().contains_key(&a));
    }
}
