//! A session's lifecycle as a type: each state carries its own deadline,
//! and each transition says what the session task must do ([`Effect`]).
//!
//! ```text
//! Running ──kill / orphan timeout──> Killing ──(grace)──> SIGKILL
//!    │                                  │
//!    └──────── program reaped ──────────┴──> Draining ──EOF or 500 ms──> Exited ──retention──> Ended
//!                                                      (killed: straight to Ended)
//! ```
//!
//! The PTY's EOF can come before the program is reaped (then the reap
//! declares the exit at once) or after it (then `Draining` waits for it, at
//! most [`EOF_GRACE`]: a background job may hold the PTY open for ever).

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::ExitStatus;

/// After the program exits, how long to wait for the PTY's EOF before
/// declaring the session exited.
pub(super) const EOF_GRACE: Duration = Duration::from_millis(500);

/// The timers of a session's lifecycle, from `[sessions]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timers {
    /// Kill a session that has had no client for this long; `None` = never.
    pub orphan_timeout: Option<Duration>,
    /// Between SIGHUP and SIGKILL on a kill.
    pub kill_grace: Duration,
    /// How long an exited session stays listed.
    pub exited_retention: Duration,
}

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// The program runs. With no client attached and an orphan timeout set,
    /// it is killed at `orphan_deadline`.
    Running {
        /// When an orphaned session is killed.
        orphan_deadline: Option<Instant>,
    },
    /// SIGHUP was sent to its process groups; SIGKILL follows at
    /// `sigkill_at` (`None` once sent).
    Killing {
        /// When SIGKILL is due.
        sigkill_at: Option<Instant>,
    },
    /// The program was reaped; its last output is read until the PTY's EOF
    /// or `eof_deadline`.
    Draining {
        /// How it ended.
        status: ExitStatus,
        /// When to stop waiting for the EOF.
        eof_deadline: Instant,
        /// It was killed: it ends as soon as it has exited.
        killed: bool,
    },
    /// The program has exited and every attachment is told; the session is
    /// listed until `until`.
    Exited {
        /// When it ends.
        until: Instant,
    },
    /// The session task ends.
    Ended,
}

/// What the session task does after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// Nothing.
    None,
    /// SIGHUP to the program's process groups.
    Hangup,
    /// SIGKILL to them.
    SigKill,
    /// Declare the session exited with this status: tell every attachment
    /// after its last byte, publish.
    Exit(ExitStatus),
}

impl Lifecycle {
    /// A new session's: running, orphaned (no client yet).
    pub fn start(now: Instant, timers: &Timers) -> Lifecycle {
        Lifecycle::Running {
            orphan_deadline: timers.orphan_timeout.map(|t| now + t),
        }
    }

    /// The next deadline of this state, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Lifecycle::Running { orphan_deadline } => *orphan_deadline,
            Lifecycle::Killing { sigkill_at } => *sigkill_at,
            Lifecycle::Draining { eof_deadline, .. } => Some(*eof_deadline),
            Lifecycle::Exited { until } => Some(*until),
            Lifecycle::Ended => None,
        }
    }

    /// Whether the program has not been reaped yet.
    pub fn running(&self) -> bool {
        matches!(self, Lifecycle::Running { .. } | Lifecycle::Killing { .. })
    }

    /// Whether the session task should stop.
    pub fn ended(&self) -> bool {
        *self == Lifecycle::Ended
    }

    /// The number of attached clients changed to `clients`: an orphan
    /// timeout starts when it drops to 0 and stops when a client attaches.
    pub fn clients(&mut self, clients: usize, now: Instant, timers: &Timers) {
        if let Lifecycle::Running { orphan_deadline } = self {
            *orphan_deadline = match clients {
                0 => timers.orphan_timeout.map(|t| now + t),
                _ => None,
            };
        }
    }

    /// `kill`: hang up a running program; an exited session ends at once.
    pub fn kill(&mut self, now: Instant, timers: &Timers) -> Effect {
        match self {
            Lifecycle::Running { .. } => {
                *self = Lifecycle::Killing {
                    sigkill_at: Some(now + timers.kill_grace),
                };
                Effect::Hangup
            }
            Lifecycle::Draining { killed, .. } if !*killed => {
                // Reaped, but a background job may still hold the PTY.
                *killed = true;
                Effect::Hangup
            }
            Lifecycle::Exited { .. } => {
                *self = Lifecycle::Ended;
                Effect::None
            }
            Lifecycle::Killing { .. } | Lifecycle::Draining { .. } | Lifecycle::Ended => {
                Effect::None
            }
        }
    }

    /// The program was reaped with `status`; `eof` says whether the PTY's
    /// output has already ended.
    pub fn reaped(
        &mut self,
        status: ExitStatus,
        eof: bool,
        now: Instant,
        timers: &Timers,
    ) -> Effect {
        let killed = match self {
            Lifecycle::Running { .. } => false,
            Lifecycle::Killing { .. } => true,
            _ => return Effect::None,
        };
        *self = Lifecycle::Draining {
            status,
            eof_deadline: now + EOF_GRACE,
            killed,
        };
        if eof {
            self.exit(now, timers)
        } else {
            Effect::None
        }
    }

    /// The PTY's output ended (EOF).
    pub fn eof(&mut self, now: Instant, timers: &Timers) -> Effect {
        self.exit(now, timers)
    }

    /// The state's deadline passed (`now` is at or after it).
    pub fn deadline_passed(&mut self, now: Instant, timers: &Timers) -> Effect {
        if self.deadline().is_none_or(|d| d > now) {
            return Effect::None;
        }
        match self {
            Lifecycle::Running { .. } => {
                tracing::info!("orphan timeout reached");
                self.kill(now, timers)
            }
            Lifecycle::Killing { sigkill_at } => {
                *sigkill_at = None;
                tracing::info!("program ignored SIGHUP; sending SIGKILL");
                Effect::SigKill
            }
            // Stop waiting for output a background job may hold back.
            Lifecycle::Draining { .. } => self.exit(now, timers),
            Lifecycle::Exited { .. } => {
                *self = Lifecycle::Ended;
                Effect::None
            }
            Lifecycle::Ended => Effect::None,
        }
    }

    /// Draining → exited (or ended, when killed).
    fn exit(&mut self, now: Instant, timers: &Timers) -> Effect {
        let Lifecycle::Draining { status, killed, .. } = self else {
            return Effect::None;
        };
        let status = status.clone();
        // A killed session goes away at once; `kill` waits for this.
        *self = if *killed {
            Lifecycle::Ended
        } else {
            Lifecycle::Exited {
                until: now + timers.exited_retention,
            }
        };
        Effect::Exit(status)
    }
}

#[cfg(test)]
mod tests {
    //! Table-driven: sequences of events and what each must do.

    use super::*;

    const TIMERS: Timers = Timers {
        orphan_timeout: Some(Duration::from_secs(60)),
        kill_grace: Duration::from_secs(2),
        exited_retention: Duration::from_secs(30),
    };

    #[derive(Debug, Clone, Copy)]
    enum Happens {
        Kill,
        Reaped {
            eof: bool,
        },
        Eof,
        /// `secs` after the start, the state's deadline is checked.
        At(u64),
        Clients(usize),
    }

    /// A state, written short.
    fn short(state: &Lifecycle) -> &'static str {
        match state {
            Lifecycle::Running { .. } => "running",
            Lifecycle::Killing { .. } => "killing",
            Lifecycle::Draining { .. } => "draining",
            Lifecycle::Exited { .. } => "exited",
            Lifecycle::Ended => "ended",
        }
    }

    fn effect(effect: &Effect) -> &'static str {
        match effect {
            Effect::None => "-",
            Effect::Hangup => "HUP",
            Effect::SigKill => "KILL",
            Effect::Exit(_) => "exit",
        }
    }

    /// A name, what happens in turn, and after each: (state, effect).
    type Case = (
        &'static str,
        &'static [Happens],
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn each_sequence_ends_where_it_should_doing_what_it_should() {
        use Happens::*;
        let status = ExitStatus {
            code: 0,
            signal: None,
        };
        let cases: &[Case] = &[
            (
                "a program exits, EOF follows; retention ends it",
                &[Reaped { eof: false }, Eof, At(29), At(31)],
                &[
                    ("draining", "-"),
                    ("exited", "exit"),
                    ("exited", "-"),
                    ("ended", "-"),
                ],
            ),
            (
                "EOF before the reap: exited at the reap",
                &[Eof, Reaped { eof: true }],
                &[("running", "-"), ("exited", "exit")],
            ),
            (
                "a background job holds the PTY: exited after the grace",
                &[Reaped { eof: false }, At(1)],
                &[("draining", "-"), ("exited", "exit")],
            ),
            (
                "kill: SIGHUP, then SIGKILL after the grace, then ended at the exit",
                &[Kill, At(1), At(3), Reaped { eof: true }],
                &[
                    ("killing", "HUP"),
                    ("killing", "-"),
                    ("killing", "KILL"),
                    ("ended", "exit"),
                ],
            ),
            (
                "a second kill does nothing more",
                &[Kill, Kill],
                &[("killing", "HUP"), ("killing", "-")],
            ),
            (
                "kill of an exited session ends it",
                &[Reaped { eof: true }, Kill],
                &[("exited", "exit"), ("ended", "-")],
            ),
            (
                "orphaned past the timeout: killed",
                &[At(59), At(61)],
                &[("running", "-"), ("killing", "HUP")],
            ),
            (
                "a client stops the orphan timeout",
                &[Clients(1), At(61)],
                &[("running", "-"), ("running", "-")],
            ),
        ];
        for (name, events, expected) in cases {
            let start = Instant::now();
            let mut state = Lifecycle::start(start, &TIMERS);
            let mut now = start;
            for (event, (want_state, want_effect)) in events.iter().zip(expected.iter()) {
                let done = match *event {
                    Kill => state.kill(now, &TIMERS),
                    Reaped { eof } => state.reaped(status.clone(), eof, now, &TIMERS),
                    Eof => state.eof(now, &TIMERS),
                    At(secs) => {
                        now = start + Duration::from_secs(secs);
                        state.deadline_passed(now, &TIMERS)
                    }
                    Clients(n) => {
                        state.clients(n, now, &TIMERS);
                        Effect::None
                    }
                };
                assert_eq!(
                    (short(&state), effect(&done)),
                    (*want_state, *want_effect),
                    "{name}: after {event:?}"
                );
            }
        }
    }

    #[test]
    fn without_an_orphan_timeout_a_session_waits_for_ever() {
        let timers = Timers {
            orphan_timeout: None,
            ..TIMERS
        };
        let state = Lifecycle::start(Instant::now(), &timers);
        assert_eq!(state.deadline(), None);
    }
}
