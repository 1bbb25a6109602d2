//! Pacing: a session reads its PTY no faster than its fastest live terminal
//! takes the output, so that a client which keeps up receives every byte
//! (as under sshd, where the program waits for the client), and never waits
//! on any client for longer than [`PACE_BOUND`].
//!
//! Rules:
//! - A *pacer* is a writable terminal attachment (a PTY, no `--from`, not
//!   read-only) that has kept up. Byte streams and read-only clients never
//!   pace: with only those, or none, the PTY is read at full speed.
//! - Output is held back while there is a pacer and every pacer's queue is
//!   full; it flows again as soon as one of them has room.
//! - Held for [`PACE_BOUND`], every pacer whose queue is still full loses
//!   the right to pace (a frozen phone, a closed window), and reading
//!   resumes; such a client is caught up or redrawn as before, and paces
//!   again once it has caught up, or as soon as it takes output again while
//!   half the ring buffer or more behind: a stall past the bound lets the
//!   program run ahead into the ring, but not past a client that drains.
//! - Once the program has been reaped its last output is read at full
//!   speed (the lifecycle's EOF grace must not expire behind a client).

use std::time::Duration;

use tokio::time::Instant;

/// Longest the session holds its output back for its clients at once.
/// Long enough for a client's window to reopen across a link of a few
/// hundred ms round trip (it only needs room for one 32 KiB event), short
/// enough that an interactive program does not feel a frozen client.
pub(super) const PACE_BOUND: Duration = Duration::from_millis(100);

/// Whether the session holds its PTY's output back, and since when.
#[derive(Debug, Default)]
pub(super) struct Pacing {
    held_since: Option<Instant>,
}

impl Pacing {
    /// Output is held (`hold`) or flows; returns `hold`. A hold that goes
    /// on keeps the time it started.
    pub fn update(&mut self, hold: bool, now: impl FnOnce() -> Instant) -> bool {
        if !hold {
            self.held_since = None;
        } else if self.held_since.is_none() {
            self.held_since = Some(now());
        }
        hold
    }

    /// When the current hold reaches [`PACE_BOUND`].
    pub fn deadline(&self) -> Option<Instant> {
        self.held_since.map(|since| since + PACE_BOUND)
    }

    /// Whether the current hold has lasted [`PACE_BOUND`] at `now`: then the
    /// pacers whose queues are still full must stop pacing, and the hold
    /// ends.
    pub fn expired(&mut self, now: Instant) -> bool {
        let expired = self.deadline().is_some_and(|deadline| deadline <= now);
        if expired {
            self.held_since = None;
        }
        expired
    }
}

/// Whether output is held back, from the pacers' queues (`true`: full)
/// and whether the program still runs.
pub(super) fn hold(running: bool, mut pacers_full: impl Iterator<Item = bool>) -> bool {
    let Some(first) = pacers_full.next() else {
        return false;
    };
    running && first && pacers_full.all(|full| full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_held_only_while_every_pacer_is_full_and_the_program_runs() {
        let cases: &[(bool, &[bool], bool)] = &[
            (true, &[], false),
            (true, &[false], false),
            (true, &[true], true),
            (true, &[true, false], false),
            (true, &[true, true], true),
            (false, &[true], false),
        ];
        for &(running, pacers, want) in cases {
            assert_eq!(
                hold(running, pacers.iter().copied()),
                want,
                "running {running}, pacers full {pacers:?}"
            );
        }
    }

    #[test]
    fn a_hold_expires_after_the_bound_from_its_start_and_then_ends() {
        let start = Instant::now();
        let mut pacing = Pacing::default();
        assert!(!pacing.update(false, || start));
        assert_eq!(pacing.deadline(), None);
        assert!(pacing.update(true, || start));
        // Going on, it keeps its start.
        pacing.update(true, || start + Duration::from_millis(60));
        assert_eq!(pacing.deadline(), Some(start + PACE_BOUND));
        assert!(!pacing.expired(start + PACE_BOUND - Duration::from_millis(1)));
        assert!(pacing.expired(start + PACE_BOUND));
        assert_eq!(pacing.deadline(), None);
        // Room for a pacer ends a hold; the next one starts afresh.
        pacing.update(true, || start + Duration::from_secs(1));
        pacing.update(false, || start + Duration::from_secs(2));
        assert_eq!(pacing.deadline(), None);
    }
}
