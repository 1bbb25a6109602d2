//! Per-source penalties, modelled on OpenSSH 9.8's `PerSourcePenalties`
//! (sshd_config(5), srclimit.c): a source whose connections fail to
//! authenticate, never try, or run out of `login_grace_time` collects
//! penalty time; once the time it has collected reaches `penalty_min`, new
//! connections from it are refused at accept, before the banner, until the
//! penalty runs out.
//!
//! A source is an IPv4 address or an IPv6 /64 (one host's usual share).
//! Penalties add up to at most `penalty_max` ahead of now, and expire by
//! themselves. The table holds at most `penalty_max_sources` sources;
//! when it is full of live penalties, new ones are not recorded (sshd's
//! `overflow:permissive`): a flood of addresses can use memory only up to
//! that bound and locks nobody out. `penalty_exempt` lists networks that
//! are never penalised (nothing is by default, loopback included).
//!
//! Invariant: the table's lock is held only for map edits, never across
//! I/O or an `.await`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// How often, at most, a refusal of one source is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The penalty settings (`[server] penalty_*`).
#[derive(Debug, Clone)]
pub struct PenaltyConfig {
    /// Added when a connection that tried to authenticate and failed ends
    /// (sshd's `authfail`, 5 s).
    pub authfail: Duration,
    /// Added when a connection ends without having tried (sshd's `noauth`,
    /// 1 s): scanners, and clients that break the protocol.
    pub noauth: Duration,
    /// Added when `login_grace_time` runs out (sshd's `grace-exceeded`, 10 s).
    pub grace_exceeded: Duration,
    /// Penalty collected before connections are refused (sshd's `min`, 15 s).
    pub min: Duration,
    /// The most penalty a source can be ahead of now (sshd's `max`, 10 min).
    pub max: Duration,
    /// Sources the table holds at most (sshd's `max-sources4`, 65,536).
    pub max_sources: usize,
    /// Networks never penalised (sshd's `PerSourcePenaltyExemptList`).
    pub exempt: Vec<IpNet>,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        PenaltyConfig {
            authfail: Duration::from_secs(5),
            noauth: Duration::from_secs(1),
            grace_exceeded: Duration::from_secs(10),
            min: Duration::from_secs(15),
            max: Duration::from_secs(600),
            max_sources: 65_536,
            exempt: Vec::new(),
        }
    }
}

/// How a connection that did not authenticate ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// It tried and failed.
    AuthFail,
    /// It never tried.
    NoAuth,
    /// `login_grace_time` ran out.
    GraceExceeded,
}

/// What to do with a new connection from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// Close it at once; `log` is true at most once a minute per source.
    Refuse {
        /// Penalty left.
        remaining: Duration,
        /// Whether this refusal should be logged.
        log: bool,
    },
}

struct Penalty {
    until: Instant,
    /// Once the collected penalty reached `min`: connections are refused.
    active: bool,
    logged: Option<Instant>,
}

/// The penalty table shared by every listener.
pub struct Penalties {
    config: PenaltyConfig,
    table: Mutex<HashMap<IpAddr, Penalty>>,
}

impl Penalties {
    /// An empty table with `config`.
    pub fn new(config: PenaltyConfig) -> Penalties {
        Penalties {
            config,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, HashMap<IpAddr, Penalty>> {
        // Plain map edits only: no panic can happen while it is held.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The source `ip` counts as: itself, or its /64 for IPv6 (an
    /// IPv4-mapped IPv6 address is its IPv4 address). `None` if exempt.
    fn source(&self, ip: IpAddr) -> Option<IpAddr> {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        };
        let exempt = self.config.exempt.iter().any(|net| net.contains(&ip));
        (!exempt).then_some(ip)
    }

    /// Whether a connection from `ip`, accepted at `now`, may be served.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let Some(source) = self.source(ip) else {
            return Verdict::Allow;
        };
        let mut table = self.table();
        let Some(penalty) = table.get_mut(&source) else {
            return Verdict::Allow;
        };
        if penalty.until <= now {
            table.remove(&source);
            return Verdict::Allow;
        }
        if !penalty.active {
            return Verdict::Allow;
        }
        let log = penalty
            .logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if log {
            penalty.logged = Some(now);
        }
        Verdict::Refuse {
            remaining: penalty.until - now,
            log,
        }
    }

    /// Adds the penalty for `offence` to `ip`'s source at `now`.
    pub fn record(&self, ip: IpAddr, offence: Offence, now: Instant) {
        let Some(source) = self.source(ip) else {
            return;
        };
        let amount = match offence {
            Offence::AuthFail => self.config.authfail,
            Offence::NoAuth => self.config.noauth,
            Offence::GraceExceeded => self.config.grace_exceeded,
        };
        if amount.is_zero() {
            return;
        }
        let mut table = self.table();
        if !table.contains_key(&source) && table.len() >= self.config.max_sources {
            table.retain(|_, p| p.until > now);
            if table.len() >= self.config.max_sources {
                return; // permissive when full
            }
        }
        let penalty = table.entry(source).or_insert(Penalty {
            until: now,
            active: false,
            logged: None,
        });
        let from = penalty.until.max(now);
        penalty.until = (from + amount).min(now + self.config.max);
        if penalty.until - now >= self.config.min {
            penalty.active = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn penalties() -> Penalties {
        Penalties::new(PenaltyConfig {
            max_sources: 2,
            exempt: vec!["10.9.0.0/16".parse().expect("cidr")],
            ..PenaltyConfig::default()
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn penalties_add_up_to_min_before_refusing_and_expire() {
        let p = penalties();
        let t = Instant::now();
        p.record(A, Offence::AuthFail, t);
        p.record(A, Offence::AuthFail, t);
        assert_eq!(p.check(A, t), Verdict::Allow, "10 s is below min (15 s)");
        p.record(A, Offence::AuthFail, t);
        let Verdict::Refuse { remaining, log } = p.check(A, t) else {
            panic!("15 s collected: refused");
        };
        assert_eq!(remaining, Duration::from_secs(15));
        assert!(log);
        assert!(
            matches!(p.check(A, t), Verdict::Refuse { log: false, .. }),
            "logged once a minute"
        );
        assert_eq!(p.check(A, t + Duration::from_secs(16)), Verdict::Allow);
    }

    #[test]
    fn penalties_are_capped_at_max() {
        let p = penalties();
        let t = Instant::now();
        for _ in 0..1000 {
            p.record(A, Offence::GraceExceeded, t);
        }
        let Verdict::Refuse { remaining, .. } = p.check(A, t) else {
            panic!("refused");
        };
        assert_eq!(remaining, Duration::from_secs(600));
    }

    #[test]
    fn ipv6_sources_are_64s_and_exempt_networks_are_never_penalised() {
        let p = penalties();
        let t = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        for _ in 0..3 {
            p.record(one, Offence::AuthFail, t);
        }
        assert!(matches!(p.check(same_64, t), Verdict::Refuse { .. }));
        assert_eq!(p.check(other_64, t), Verdict::Allow);
        let exempt: IpAddr = "10.9.8.7".parse().expect("ip");
        for _ in 0..10 {
            p.record(exempt, Offence::GraceExceeded, t);
        }
        assert_eq!(p.check(exempt, t), Verdict::Allow);
    }

    #[test]
    fn a_full_table_is_permissive_and_expired_sources_make_room() {
        let p = penalties(); // holds 2 sources
        let t = Instant::now();
        let ip = |n| IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n));
        for n in [1, 2, 3] {
            for _ in 0..3 {
                p.record(ip(n), Offence::AuthFail, t);
            }
        }
        assert!(matches!(p.check(ip(1), t), Verdict::Refuse { .. }));
        assert_eq!(p.check(ip(3), t), Verdict::Allow, "not recorded: full");
        let later = t + Duration::from_secs(20);
        for _ in 0..3 {
            p.record(ip(3), Offence::AuthFail, later);
        }
        assert!(matches!(p.check(ip(3), later), Verdict::Refuse { .. }));
    }
}
