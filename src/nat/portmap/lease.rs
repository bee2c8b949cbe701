//! The lease clock of one port mapping, sans-IO: time is an argument, the
//! shell does the requests.
//!
//! The shell loops: sleep until [`LeasePolicy::poll_timeout`], then take
//! [`LeasePolicy::poll_action`]: [`Due::Map`] (ask for a fresh mapping),
//! [`Due::Renew`] (refresh the one we hold) or [`Due::Expired`] (the lease
//! ran out: withdraw the candidate). Each request's result goes back in
//! through [`LeasePolicy::handle_granted`] or [`LeasePolicy::handle_failed`],
//! each returning its own small outcome type.
//!
//! Policy:
//! - renew at half the granted lifetime (so well before the gateway's
//!   expiry); a "permanent" UPnP lease (0) is still refreshed every
//!   `fallback_lease / 2`;
//! - a failed renewal asks for a fresh mapping at once (the gateway may have
//!   rebooted and forgotten us, or changed its external address); further
//!   failures back off from `min_retry`, doubling to `max_retry`; the
//!   mapping stays published until its lease really runs out;
//! - a gateway epoch (NAT-PMP/PCP "seconds since start of epoch") that
//!   moved inconsistently with our own clock means the gateway lost its
//!   state (RFC 6887 §8.5, RFC 6886 §3.6): map afresh at once.
#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::time::{Duration, Instant};

use super::Mapping;

/// Retry pacing; see [`super::Options`].
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    pub min_retry: Duration,
    pub max_retry: Duration,
    /// Refresh period base for leases the gateway granted as 0 (permanent).
    pub fallback_lease: Duration,
}

/// What a successful request returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub mapping: Mapping,
    /// The gateway's epoch (seconds since its mapping state began), for
    /// NAT-PMP and PCP; `None` for UPnP.
    pub epoch: Option<u32>,
}

/// What the shell should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Ask for a fresh mapping (try every protocol).
    Map,
    /// Renew the mapping held, with the same protocol.
    Renew,
    /// The lease ran out without a successful renewal: the mapping is gone.
    Expired(Mapping),
}

/// The result of [`LeasePolicy::handle_granted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    /// A mapping where there was none.
    New(Mapping),
    /// Same protocol and external address as before (the lease may differ).
    Renewed(Mapping),
    /// The external address or protocol changed.
    Changed { old: Mapping, new: Mapping },
    /// The gateway's epoch shows it lost its state (rebooted): the mapping
    /// in hand is kept, and a fresh one is due at once.
    Rebooted { old: Option<Mapping>, new: Mapping },
}

/// The result of [`LeasePolicy::handle_failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// A renewal failed: a fresh mapping is due at once; the old one stays
    /// published until its lease ends.
    RenewFailed { mapping: Mapping },
    /// A fresh mapping failed; the next attempt is at `retry_at`.
    Retry { retry_at: Instant, mapped: bool },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Unmapped {
        next_attempt: Instant,
    },
    Mapped {
        mapping: Mapping,
        /// `None`: a permanent (UPnP lease 0) mapping.
        expires: Option<Instant>,
        next: Instant,
        next_is: NextRequest,
    },
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextRequest {
    Renew,
    Remap,
}

/// The lease clock of one mapping. See the module docs.
#[derive(Debug, Clone)]
pub struct LeasePolicy {
    config: LeaseConfig,
    state: State,
    backoff: Duration,
    /// A request is out: no new action until its result is handled.
    pending: bool,
    /// The last epoch seen and when (our clock).
    epoch: Option<(u32, Instant)>,
}

impl LeasePolicy {
    /// A policy that wants a mapping right away.
    pub fn new(now: Instant, config: LeaseConfig) -> Self {
        Self {
            config,
            state: State::Unmapped { next_attempt: now },
            backoff: config.min_retry,
            pending: false,
            epoch: None,
        }
    }

    /// The mapping currently held, if any.
    pub fn mapping(&self) -> Option<Mapping> {
        match self.state {
            State::Mapped { mapping, .. } => Some(mapping),
            State::Unmapped { .. } | State::Stopped => None,
        }
    }

    /// When [`Self::poll_action`] next has something to say; `None` while a
    /// request is out or after [`Self::stop`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending {
            return None;
        }
        match self.state {
            State::Unmapped { next_attempt } => Some(next_attempt),
            State::Mapped { expires, next, .. } => {
                Some(expires.map_or(next, |expires| next.min(expires)))
            }
            State::Stopped => None,
        }
    }

    /// What is due at `now`, if anything. A returned [`Due::Map`] or
    /// [`Due::Renew`] must be answered with [`Self::handle_granted`] or
    /// [`Self::handle_failed`] before anything else is due.
    pub fn poll_action(&mut self, now: Instant) -> Option<Due> {
        if self.pending {
            return None;
        }
        match self.state {
            State::Unmapped { next_attempt } if now >= next_attempt => {
                self.pending = true;
                Some(Due::Map)
            }
            State::Mapped {
                mapping,
                expires: Some(expires),
                next,
                ..
            } if now >= expires => {
                self.state = State::Unmapped {
                    next_attempt: next.max(now),
                };
                self.epoch = None;
                Some(Due::Expired(mapping))
            }
            State::Mapped { next, next_is, .. } if now >= next => {
                self.pending = true;
                Some(match next_is {
                    NextRequest::Renew => Due::Renew,
                    NextRequest::Remap => Due::Map,
                })
            }
            State::Unmapped { .. } | State::Mapped { .. } | State::Stopped => None,
        }
    }

    /// The gateway granted `grant` at `now` (for a [`Due::Map`] or
    /// [`Due::Renew`]).
    pub fn handle_granted(&mut self, now: Instant, grant: Grant) -> Granted {
        self.pending = false;
        self.backoff = self.config.min_retry;
        let old = self.mapping();
        let new = grant.mapping;
        let protocol_changed = old.is_some_and(|o| o.protocol != new.protocol);
        let rebooted = match (self.epoch, grant.epoch) {
            (Some((prev, prev_at)), Some(epoch)) if !protocol_changed => {
                epoch_lost_state(prev, prev_at, epoch, now)
            }
            _ => false,
        };
        self.epoch = grant.epoch.map(|e| (e, now));
        let period = if new.lease.is_zero() {
            self.config.fallback_lease
        } else {
            new.lease
        };
        let expires = (!new.lease.is_zero()).then(|| now + new.lease);
        let (next, next_is) = if rebooted {
            (now, NextRequest::Remap)
        } else {
            // Half the lease, but never a busy loop on a silly 0-1 s grant.
            (
                now + (period / 2).max(Duration::from_secs(1)),
                NextRequest::Renew,
            )
        };
        if let State::Stopped = self.state {
            return Granted::Renewed(new);
        }
        self.state = State::Mapped {
            mapping: new,
            expires,
            next,
            next_is,
        };
        match old {
            _ if rebooted => Granted::Rebooted { old, new },
            None => Granted::New(new),
            Some(old) if old.protocol == new.protocol && old.external == new.external => {
                Granted::Renewed(new)
            }
            Some(old) => Granted::Changed { old, new },
        }
    }

    /// The request for the last [`Due`] failed at `now`.
    pub fn handle_failed(&mut self, now: Instant) -> Failed {
        self.pending = false;
        match &mut self.state {
            State::Mapped {
                mapping,
                next,
                next_is,
                ..
            } if *next_is == NextRequest::Renew => {
                *next_is = NextRequest::Remap;
                *next = now;
                Failed::RenewFailed { mapping: *mapping }
            }
            State::Mapped { next, .. } => {
                *next = now + self.backoff;
                let retry_at = *next;
                self.backoff = (self.backoff * 2).min(self.config.max_retry);
                Failed::Retry {
                    retry_at,
                    mapped: true,
                }
            }
            State::Unmapped { next_attempt } => {
                *next_attempt = now + self.backoff;
                let retry_at = *next_attempt;
                self.backoff = (self.backoff * 2).min(self.config.max_retry);
                Failed::Retry {
                    retry_at,
                    mapped: false,
                }
            }
            State::Stopped => Failed::Retry {
                retry_at: now,
                mapped: false,
            },
        }
    }

    /// Start over at once (network change, new gateway): forget the epoch
    /// and ask for a fresh mapping. The held mapping stays published until
    /// the new result replaces it or its lease ends.
    pub fn refresh(&mut self, now: Instant) {
        self.epoch = None;
        self.backoff = self.config.min_retry;
        match &mut self.state {
            State::Mapped { next, next_is, .. } => {
                *next = now;
                *next_is = NextRequest::Remap;
            }
            State::Unmapped { next_attempt } => *next_attempt = now,
            State::Stopped => {}
        }
    }

    /// Clean shutdown: nothing is due any more; returns the mapping to
    /// delete on the gateway.
    pub fn stop(&mut self) -> Option<Mapping> {
        let held = self.mapping();
        self.state = State::Stopped;
        self.pending = false;
        held
    }
}

/// Whether a gateway epoch moved inconsistently with our clock, meaning the
/// gateway lost its mapping state. RFC 6887 §8.5 (which refines RFC 6886
/// §3.6's "less than 7/8 of the elapsed time"):
///
/// > If the current epoch is less than the previous epoch value minus one,
/// > the server has lost state. [...] the client computes the difference
/// > between its current time and the time it last received a response
/// > (client delta) and the difference between the current epoch value and
/// > the previous epoch value (server delta). If client delta + 2 <
/// > server delta - server delta/16, or server delta + 2 < client delta -
/// > client delta/16, the server has lost state.
pub fn epoch_lost_state(prev: u32, prev_at: Instant, epoch: u32, now: Instant) -> bool {
    if epoch < prev.saturating_sub(1) {
        return true;
    }
    let client = now.saturating_duration_since(prev_at).as_secs();
    let server = u64::from(epoch.saturating_sub(prev));
    client + 2 < server - server / 16 || server + 2 < client - client / 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::portmap::Protocol;

    const MIN: Duration = Duration::from_secs(30);
    const HOUR: Duration = Duration::from_secs(3600);

    fn config() -> LeaseConfig {
        LeaseConfig {
            min_retry: MIN,
            max_retry: Duration::from_secs(600),
            fallback_lease: HOUR,
        }
    }

    fn mapping(port: u16, lease: Duration) -> Mapping {
        Mapping {
            protocol: Protocol::Pcp,
            external: format!("198.18.1.2:{port}").parse().unwrap(),
            lease,
        }
    }

    fn grant(port: u16, lease: Duration, epoch: Option<u32>) -> Grant {
        Grant {
            mapping: mapping(port, lease),
            epoch,
        }
    }

    /// Steps a virtual clock to the next wakeup.
    fn step(policy: &mut LeasePolicy) -> (Instant, Option<Due>) {
        let at = policy.poll_timeout().expect("something is scheduled");
        (at, policy.poll_action(at))
    }

    #[test]
    fn maps_then_renews_at_half_the_lease() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        assert_eq!(p.poll_timeout(), Some(t0));
        assert_eq!(p.poll_action(t0), Some(Due::Map));
        // A request is out: nothing else is due.
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.poll_action(t0 + HOUR), None);
        let g = p.handle_granted(t0, grant(4000, 2 * HOUR, Some(100)));
        assert_eq!(g, Granted::New(mapping(4000, 2 * HOUR)));
        assert_eq!(p.poll_timeout(), Some(t0 + HOUR));
        assert_eq!(p.poll_action(t0 + HOUR - Duration::from_secs(1)), None);
        let (at, due) = step(&mut p);
        assert_eq!((at, due), (t0 + HOUR, Some(Due::Renew)));
        let g = p.handle_granted(at, grant(4000, 2 * HOUR, Some(100 + 3600)));
        assert_eq!(g, Granted::Renewed(mapping(4000, 2 * HOUR)));
        assert_eq!(p.poll_timeout(), Some(t0 + 2 * HOUR));
    }

    #[test]
    fn changed_external_address_is_reported() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, None));
        let (at, _) = step(&mut p);
        let g = p.handle_granted(at, grant(4001, 2 * HOUR, None));
        assert_eq!(
            g,
            Granted::Changed {
                old: mapping(4000, 2 * HOUR),
                new: mapping(4001, 2 * HOUR)
            }
        );
    }

    #[test]
    fn failed_first_mapping_backs_off_and_caps() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..7 {
            assert_eq!(p.poll_action(now), Some(Due::Map));
            let Failed::Retry { retry_at, mapped } = p.handle_failed(now) else {
                panic!("expected a retry")
            };
            assert!(!mapped);
            delays.push((retry_at - now).as_secs());
            now = retry_at;
            assert_eq!(p.poll_timeout(), Some(now));
        }
        assert_eq!(delays, [30, 60, 120, 240, 480, 600, 600]);
        // Success resets the backoff.
        assert_eq!(p.poll_action(now), Some(Due::Map));
        p.handle_granted(now, grant(4000, 2 * HOUR, None));
        let (at, due) = step(&mut p);
        assert_eq!(due, Some(Due::Renew));
        p.handle_failed(at);
        assert_eq!(p.poll_action(at), Some(Due::Map));
        let Failed::Retry { retry_at, mapped } = p.handle_failed(at) else {
            panic!("expected a retry")
        };
        assert!(mapped);
        assert_eq!(retry_at - at, MIN);
    }

    #[test]
    fn failed_renewal_remaps_at_once_and_expires_at_lease_end() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, Some(10)));
        let (at, due) = step(&mut p);
        assert_eq!(due, Some(Due::Renew));
        assert_eq!(
            p.handle_failed(at),
            Failed::RenewFailed {
                mapping: mapping(4000, 2 * HOUR)
            }
        );
        // Remap right away; the mapping stays published meanwhile.
        assert_eq!(p.poll_timeout(), Some(at));
        assert_eq!(p.poll_action(at), Some(Due::Map));
        assert_eq!(p.mapping(), Some(mapping(4000, 2 * HOUR)));
        // Keep failing: retries back off, until the lease ends.
        let mut now = at;
        loop {
            p.handle_failed(now);
            let (next, due) = step(&mut p);
            now = next;
            match due {
                Some(Due::Map) => continue,
                Some(Due::Expired(m)) => {
                    assert_eq!(m, mapping(4000, 2 * HOUR));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(now, t0 + 2 * HOUR);
        assert_eq!(p.mapping(), None);
        // After expiry a fresh mapping is still wanted.
        let (_, due) = step(&mut p);
        assert_eq!(due, Some(Due::Map));
    }

    #[test]
    fn remap_after_failed_renewal_can_succeed() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, None));
        let (at, _) = step(&mut p);
        p.handle_failed(at);
        assert_eq!(p.poll_action(at), Some(Due::Map));
        let g = p.handle_granted(at, grant(4000, 2 * HOUR, None));
        assert_eq!(g, Granted::Renewed(mapping(4000, 2 * HOUR)));
        assert_eq!(step(&mut p), (at + HOUR, Some(Due::Renew)));
    }

    #[test]
    fn epoch_going_backwards_means_reboot_and_remap() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, Some(50_000)));
        let (at, due) = step(&mut p);
        assert_eq!(due, Some(Due::Renew));
        // The gateway restarted 20 s ago.
        let g = p.handle_granted(at, grant(4000, 2 * HOUR, Some(20)));
        assert_eq!(
            g,
            Granted::Rebooted {
                old: Some(mapping(4000, 2 * HOUR)),
                new: mapping(4000, 2 * HOUR)
            }
        );
        assert_eq!(p.poll_timeout(), Some(at));
        assert_eq!(p.poll_action(at), Some(Due::Map));
        // The fresh mapping's epoch is consistent: back to normal renewals.
        let g = p.handle_granted(at, grant(4000, 2 * HOUR, Some(20)));
        assert_eq!(g, Granted::Renewed(mapping(4000, 2 * HOUR)));
        assert_eq!(step(&mut p), (at + HOUR, Some(Due::Renew)));
    }

    #[test]
    fn epoch_that_lags_our_clock_means_reboot() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, Some(1000)));
        let (at, _) = step(&mut p);
        // An hour passed for us, the gateway's epoch moved 10 minutes: it
        // restarted and has been up 10 min less than that... still larger
        // than before, but inconsistent.
        let g = p.handle_granted(at, grant(4000, 2 * HOUR, Some(1600)));
        assert!(matches!(g, Granted::Rebooted { .. }), "{g:?}");
    }

    #[test]
    fn epoch_rule_tolerates_small_skew() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(!epoch_lost_state(1000, t0, 1000, t0));
        assert!(!epoch_lost_state(1000, t0, 999, t0)); // minus one is allowed
        assert!(epoch_lost_state(1000, t0, 997, t0));
        assert!(!epoch_lost_state(1000, t0, 4600, t0 + s(3600)));
        // 1/16 plus 2 s of drift either way is fine.
        assert!(!epoch_lost_state(1000, t0, 1000 + 3600 - 220, t0 + s(3600)));
        assert!(!epoch_lost_state(1000, t0, 1000 + 3600 + 240, t0 + s(3600)));
        // More is a lost state.
        assert!(epoch_lost_state(1000, t0, 1000 + 3600 - 300, t0 + s(3600)));
        assert!(epoch_lost_state(1000, t0, 1000 + 3600 + 400, t0 + s(3600)));
    }

    #[test]
    fn epoch_is_not_compared_across_protocols() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, Some(50_000)));
        p.refresh(t0);
        assert_eq!(p.poll_action(t0), Some(Due::Map));
        let mut natpmp = grant(4000, 2 * HOUR, Some(5));
        natpmp.mapping.protocol = Protocol::NatPmp;
        assert!(matches!(
            p.handle_granted(t0, natpmp),
            Granted::Changed { .. }
        ));
    }

    #[test]
    fn permanent_upnp_lease_is_refreshed_and_never_expires() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, Duration::ZERO, None));
        let mut now = t0;
        for _ in 0..5 {
            let (at, due) = step(&mut p);
            assert_eq!(at - now, HOUR / 2);
            assert_eq!(due, Some(Due::Renew));
            // Even failing renewals never expire a permanent mapping.
            p.handle_failed(at);
            assert_eq!(p.poll_action(at), Some(Due::Map));
            p.handle_granted(at, grant(4000, Duration::ZERO, None));
            now = at;
        }
    }

    #[test]
    fn stop_returns_the_mapping_and_silences_the_clock() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, 2 * HOUR, None));
        assert_eq!(p.stop(), Some(mapping(4000, 2 * HOUR)));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.poll_action(t0 + 10 * HOUR), None);
        assert_eq!(p.stop(), None);
    }

    #[test]
    fn short_grants_do_not_spin() {
        let t0 = Instant::now();
        let mut p = LeasePolicy::new(t0, config());
        p.poll_action(t0);
        p.handle_granted(t0, grant(4000, Duration::from_secs(1), None));
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    }
}
