//! Admission before the handshake: how many unauthenticated connections may
//! be in their handshake at once, in all and per source address (README "Security model";
//! OpenSSH's `MaxStartups` and `PerSourceMaxStartups`, sshd_config(5)).
//!
//! Unlike sshd, which drops connections beyond the limits, keepsh makes them
//! wait for a slot (within `login_grace_time`): 200 phones reconnecting at
//! once are served in turn instead of refused, while one source can still
//! hold at most its share of the slots.
//!
//! Invariant: a connection holds its [`StartupPermit`] from admission until
//! it authenticates or closes; dropping the permit, or abandoning the wait,
//! frees everything it held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The admission limits shared by every listener.
pub struct Startups {
    total: Arc<Semaphore>,
    per_source: usize,
    /// Per source address: its semaphore and how many connections use it.
    sources: Mutex<HashMap<IpAddr, (Arc<Semaphore>, usize)>>,
}

/// One admitted, not yet authenticated connection; dropping it frees its slots.
pub struct StartupPermit {
    _total: OwnedSemaphorePermit,
    _source: OwnedSemaphorePermit,
    _user: SourceUser,
}

/// Counts a connection as a user of its source's entry, waiting or admitted;
/// the entry is removed with its last user.
struct SourceUser {
    source: IpAddr,
    startups: Arc<Startups>,
}

impl Startups {
    /// Limits of `total` connections in their handshake, `per_source` of
    /// them from one address.
    pub fn new(total: usize, per_source: usize) -> Arc<Startups> {
        Arc::new(Startups {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            sources: Mutex::new(HashMap::new()),
        })
    }

    fn sources(&self) -> MutexGuard<'_, HashMap<IpAddr, (Arc<Semaphore>, usize)>> {
        // Plain map edits only: no panic can happen while it is held.
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for a connection from `source`: first one of its
    /// source's, then one of the total. Returns at once when both are free.
    /// Cancel-safe: dropping the future frees whatever it had taken.
    pub async fn admit(self: &Arc<Self>, source: IpAddr) -> StartupPermit {
        let semaphore = {
            let mut sources = self.sources();
            let entry = sources
                .entry(source)
                .or_insert_with(|| (Arc::new(Semaphore::new(self.per_source)), 0));
            entry.1 += 1;
            Arc::clone(&entry.0)
        };
        let user = SourceUser {
            source,
            startups: Arc::clone(self),
        };
        // The semaphores are never closed, so acquiring cannot fail.
        let source_permit = semaphore
            .acquire_owned()
            .await
            .expect("admission semaphores are never closed");
        let total_permit = Arc::clone(&self.total)
            .acquire_owned()
            .await
            .expect("admission semaphores are never closed");
        StartupPermit {
            _total: total_permit,
            _source: source_permit,
            _user: user,
        }
    }

    /// Whether a connection from `source` would be admitted without waiting.
    pub fn would_wait(&self, source: IpAddr) -> bool {
        let source_full = self
            .sources()
            .get(&source)
            .is_some_and(|(s, _)| s.available_permits() == 0);
        source_full || self.total.available_permits() == 0
    }
}

impl Drop for SourceUser {
    fn drop(&mut self) {
        let mut sources = self.startups.sources();
        if let Some(entry) = sources.get_mut(&self.source) {
            entry.1 -= 1;
            if entry.1 == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Admission if it completes on the first poll (slots free), else `None`
    /// (the wait is abandoned).
    async fn admitted_now(startups: &Arc<Startups>, source: IpAddr) -> Option<StartupPermit> {
        futures_util::FutureExt::now_or_never(startups.admit(source))
    }

    #[tokio::test]
    async fn startups_wait_beyond_the_total_and_per_source_limits() {
        let startups = Startups::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = admitted_now(&startups, a).await.expect("first from a");
        let _a2 = admitted_now(&startups, a).await.expect("second from a");
        assert!(startups.would_wait(a));
        assert!(
            admitted_now(&startups, a).await.is_none(),
            "third from a waits"
        );
        let _b1 = admitted_now(&startups, b)
            .await
            .expect("b has its own share");
        assert!(
            admitted_now(&startups, b).await.is_none(),
            "the total of 3 is reached"
        );
        // A waiter is admitted as soon as a slot frees.
        let waiter = tokio::spawn({
            let startups = Arc::clone(&startups);
            async move { startups.admit(a).await }
        });
        drop(a1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("admitted once a slot freed")
            .expect("task");
    }

    #[tokio::test]
    async fn abandoned_waits_and_dropped_permits_leave_nothing_behind() {
        let startups = Startups::new(1, 1);
        let a: IpAddr = [10, 0, 0, 1].into();
        let held = admitted_now(&startups, a).await.expect("first");
        assert!(admitted_now(&startups, a).await.is_none()); // abandoned wait
        drop(held);
        assert!(startups.sources().is_empty());
        assert!(admitted_now(&startups, a).await.is_some());
    }
}
