//! Relay: what a member that serves as a relay (`[relay] serve = true`)
//! decides about each frame, and what it counts. Sans-IO, time as an
//! argument.
//!
//! Owns admission (the sender is a member with a live session, the
//! destination is a member with a live session, the sender's rate and the
//! total rate have room) and the per-member counters `kith status` shows.
//! It never sees a key: the node opens the hop session, asks
//! [`RelayService::admit`], and seals the untouched end-to-end datagram on
//! the destination's hop session. Frame layout: [`crate::wire`] (relay).
//!
//! Flow on the relay, per frame:
//! 1. the core decrypts a Forward from member S on S's session (so S has one);
//! 2. it looks up the destination key: not a member → [`Refusal::Unknown`];
//!    no live session → [`Refusal::NoSession`];
//! 3. [`RelayService::admit`] takes the frame's bytes from S's bucket and the
//!    total one, or refuses with [`Refusal::Rate`];
//! 4. the core sends a Deliver to the destination and calls
//!    [`RelayService::delivered`].
//!
//! Excess is dropped, never queued: the end-to-end TCP above sees loss and
//! slows down, which is what a rate limit is for.
//!
//! [`fallback`] decides, per relay a member reaches, when its traffic takes
//! the TCP transport because UDP gets no answer, and when it goes back.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod fallback;

use std::time::{Duration, Instant};

/// How long a bucket may save up: a member idle for a while may burst this
/// much of its rate at once (enough for a TCP window to open), no more.
pub const BURST: Duration = Duration::from_millis(250);

/// Bytes per second, refilled continuously, capped at [`BURST`] worth.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            rate: bytes_per_sec,
            tokens: Self::cap(bytes_per_sec),
            last: None,
        }
    }

    fn cap(rate: u64) -> f64 {
        // At least one large datagram, so a tiny rate still passes something.
        (rate as f64 * BURST.as_secs_f64()).max(65_535.0)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate as f64).min(Self::cap(self.rate));
        }
        // Never backwards: the node's two halves admit with clocks read a
        // moment apart, and a step back would grant that moment twice.
        self.last = self.last.max(Some(now));
    }

    /// Is there room for `bytes` now? Takes nothing.
    pub fn has(&mut self, now: Instant, bytes: usize) -> bool {
        self.refill(now);
        self.tokens >= bytes as f64
    }

    pub fn take(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }
}

/// Why a frame was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("relay destination is not a member of our config")]
    Unknown,
    #[error("relay destination has no live session with us")]
    NoSession,
    #[error("relay rate limit")]
    Rate,
    #[error("this node does not relay ([relay] serve = false)")]
    NotServing,
}

/// Counters of one member, as the relay sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberStats {
    /// End-to-end bytes this member sent through us.
    pub forwarded_bytes: u64,
    pub forwarded_packets: u64,
    /// Bytes we delivered to this member for others.
    pub delivered_bytes: u64,
    /// Frames of this member dropped by a rate limit.
    pub dropped_rate: u64,
}

/// Limits from `[relay]`, in bytes per second; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub per_member: Option<u64>,
    pub total: Option<u64>,
}

/// The relay's state: one bucket and counters per member (indexed by the
/// core's peer ids), one bucket for all.
#[derive(Debug, Clone)]
pub struct RelayService {
    limits: Limits,
    members: Vec<(Option<TokenBucket>, MemberStats)>,
    total: Option<TokenBucket>,
    pub refused_unknown: u64,
    pub refused_no_session: u64,
}

impl RelayService {
    pub fn new(limits: Limits, members: usize) -> Self {
        let mut s = Self {
            limits,
            members: Vec::new(),
            total: limits.total.map(TokenBucket::new),
            refused_unknown: 0,
            refused_no_session: 0,
        };
        s.reconfigure(limits, members);
        s
    }

    fn fresh_member(&self) -> (Option<TokenBucket>, MemberStats) {
        (
            self.limits.per_member.map(TokenBucket::new),
            MemberStats::default(),
        )
    }

    /// New limits and as many members as there are ids now (a reload adds
    /// ids, never takes them back). Counters stay; a bucket whose rate did
    /// not change keeps what it saved up.
    pub fn reconfigure(&mut self, limits: Limits, members: usize) {
        let old = std::mem::replace(&mut self.limits, limits);
        if limits.per_member != old.per_member {
            for (bucket, _) in &mut self.members {
                *bucket = limits.per_member.map(TokenBucket::new);
            }
        }
        if limits.total != old.total {
            self.total = limits.total.map(TokenBucket::new);
        }
        let fresh = self.fresh_member();
        self.members.resize(members.max(self.members.len()), fresh);
    }

    /// `member` left the config: its counters and bucket go with it.
    pub fn forget(&mut self, member: usize) {
        let fresh = self.fresh_member();
        if let Some(m) = self.members.get_mut(member) {
            *m = fresh;
        }
    }

    /// May member `from` send `bytes` through us now? Counts the outcome.
    pub fn admit(&mut self, now: Instant, from: usize, bytes: usize) -> Result<(), Refusal> {
        let Some((bucket, stats)) = self.members.get_mut(from) else {
            self.refused_unknown += 1;
            return Err(Refusal::Unknown);
        };
        let own = bucket.as_mut().is_none_or(|b| b.has(now, bytes));
        let all = self.total.as_mut().is_none_or(|b| b.has(now, bytes));
        if !(own && all) {
            stats.dropped_rate += 1;
            return Err(Refusal::Rate);
        }
        if let Some(b) = bucket {
            b.take(bytes);
        }
        if let Some(b) = &mut self.total {
            b.take(bytes);
        }
        stats.forwarded_bytes += bytes as u64;
        stats.forwarded_packets += 1;
        Ok(())
    }

    /// A frame was refused before admission (unknown or sessionless destination).
    pub fn refused(&mut self, why: Refusal) {
        match why {
            Refusal::Unknown => self.refused_unknown += 1,
            Refusal::NoSession => self.refused_no_session += 1,
            Refusal::Rate | Refusal::NotServing => {}
        }
    }

    pub fn delivered(&mut self, to: usize, bytes: usize) {
        if let Some((_, stats)) = self.members.get_mut(to) {
            stats.delivered_bytes += bytes as u64;
        }
    }

    pub fn member(&self, i: usize) -> Option<MemberStats> {
        self.members.get(i).map(|(_, s)| *s)
    }
}

/// The service both halves of a node use: the data half admits and counts
/// the steady flow of frames between members it sends to directly, the
/// control half configures it, reads it for `status` and handles the rest
/// (members reached over TCP or a hard-NAT pool, frames on a path being
/// set up). One set of buckets, so a limit holds whichever half forwards;
/// the lock is held for an admission's arithmetic only and is uncontended
/// but for a status read or a reload.
#[derive(Debug, Clone)]
pub struct SharedService(std::sync::Arc<std::sync::Mutex<RelayService>>);

impl SharedService {
    pub fn new(s: RelayService) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(s)))
    }

    /// A poisoned lock only means a thread panicked mid-admission, which
    /// leaves buckets and counters as valid as ever.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, RelayService> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The same service (not merely equal state).
    pub fn same(&self, other: &SharedService) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_at_twice_its_rate_gets_its_rate() {
        let t0 = Instant::now();
        let rate = 2_500_000; // 20 Mbit/s
        let mut r = RelayService::new(
            Limits {
                per_member: Some(rate),
                total: None,
            },
            2,
        );
        // 10 s of 1400-byte datagrams at twice the rate.
        let per_sec = 2 * rate / 1400;
        let gap = Duration::from_secs(1) / per_sec as u32;
        let mut passed = 0u64;
        for k in 0..per_sec * 10 {
            if r.admit(t0 + gap * k as u32, 0, 1400).is_ok() {
                passed += 1400;
            }
        }
        let got = passed as f64 / 10.0 / rate as f64;
        assert!((0.95..1.1).contains(&got), "got {got} of the rate");
        let s = r.member(0).unwrap();
        assert!(s.dropped_rate > per_sec * 4, "{s:?}");
        // The other member is untouched by the first one's excess.
        assert!(r.admit(t0 + Duration::from_secs(10), 1, 1400).is_ok());
    }

    #[test]
    fn the_total_limit_binds_all_members() {
        let t0 = Instant::now();
        let mut r = RelayService::new(
            Limits {
                per_member: None,
                total: Some(1_000_000),
            },
            3,
        );
        let mut passed = 0u64;
        for k in 0..30_000u32 {
            let at = t0 + Duration::from_micros(u64::from(k) * 100);
            if r.admit(at, (k % 3) as usize, 1000).is_ok() {
                passed += 1000;
            }
        }
        // 3 s at up to 10 MB/s offered; 1 MB/s (plus the first burst) passes.
        assert!(
            (3_000_000..3_400_000).contains(&passed),
            "passed {passed} bytes"
        );
    }

    #[test]
    fn a_reconfigure_keeps_counters_applies_new_limits_and_admits_new_members() {
        let t0 = Instant::now();
        let mut r = RelayService::new(Limits::default(), 1);
        assert!(r.admit(t0, 0, 1000).is_ok());
        assert_eq!(r.admit(t0, 1, 1000), Err(Refusal::Unknown));
        let limits = Limits {
            per_member: Some(100_000),
            total: None,
        };
        r.reconfigure(limits, 2);
        assert_eq!(r.member(0).unwrap().forwarded_bytes, 1000, "counters kept");
        assert!(r.admit(t0, 1, 1000).is_ok(), "the added member is admitted");
        // The new per-member limit binds: a burst of its cap, then nothing.
        let mut passed = 0;
        while r.admit(t0, 1, 1000).is_ok() {
            passed += 1000;
            assert!(passed < 1_000_000, "no limit applied");
        }
        assert!(r.admit(t0, 0, 1000).is_ok(), "member 0 has its own bucket");
        r.forget(1);
        assert_eq!(r.member(1), Some(MemberStats::default()));
    }

    #[test]
    fn no_limits_pass_everything_and_refusals_are_counted() {
        let t0 = Instant::now();
        let mut r = RelayService::new(Limits::default(), 1);
        for _ in 0..10_000 {
            assert!(r.admit(t0, 0, 1500).is_ok());
        }
        assert_eq!(r.admit(t0, 5, 10), Err(Refusal::Unknown));
        r.refused(Refusal::NoSession);
        assert_eq!((r.refused_unknown, r.refused_no_session), (1, 1));
        assert_eq!(r.member(0).unwrap().forwarded_packets, 10_000);
    }
}
