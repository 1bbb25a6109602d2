//! Admission before the handshake: how many unauthenticated connections may
//! exist at once, in all and per source address (DESIGN §6; OpenSSH's
//! `MaxStartups` and `PerSourceMaxStartups`, sshd_config(5)).
//!
//! Invariant: a connection holds its [`StartupPermit`] from accept until it
//! authenticates or closes; dropping the permit frees both of its slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission of unauthenticated connections: at most `total` at once, and
/// at most `per_source` from one IP address (OpenSSH's `MaxStartups` and
/// `PerSourceMaxStartups`, sshd_config(5)).
pub struct Startups {
    total: Arc<Semaphore>,
    per_source: usize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted, not yet authenticated connection; dropping it frees its slots.
pub struct StartupPermit {
    _total: OwnedSemaphorePermit,
    source: IpAddr,
    startups: Arc<Startups>,
}

impl Startups {
    /// Limits of `total` connections, `per_source` of them from one address.
    pub fn new(total: usize, per_source: usize) -> Arc<Startups> {
        Arc::new(Startups {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            by_source: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a connection from `source`, or `None` if a limit is reached.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<StartupPermit> {
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        // Plain counter edits only: a panic cannot happen while it is held.
        let mut by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let count = by_source.entry(source).or_insert(0);
        if *count >= self.per_source {
            return None;
        }
        *count += 1;
        Some(StartupPermit {
            _total: total,
            source,
            startups: Arc::clone(self),
        })
    }
}

impl Drop for StartupPermit {
    fn drop(&mut self) {
        let mut by_source = self
            .startups
            .by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startups_are_limited_in_total_and_per_source() {
        let startups = Startups::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = startups.admit(a).expect("first from a");
        let _a2 = startups.admit(a).expect("second from a");
        assert!(
            startups.admit(a).is_none(),
            "third from a exceeds per-source"
        );
        let _b1 = startups.admit(b).expect("b has its own budget");
        assert!(startups.admit(b).is_none(), "total of 3 reached");
        drop(a1);
        assert!(startups.admit(a).is_some(), "a slot freed on drop");
    }
}
