//! Per-source token bucket for handshake initiations: a flood from one
//! address costs the responder at most a few Diffie-Hellmans per second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Initiations per second each source may make, as WireGuard's limiter.
const RATE_PER_SEC: f64 = 20.0;
const BURST: f64 = 5.0;
/// Bound on remembered sources; idle ones are evicted first.
const MAX_SOURCES: usize = 4096;

/// Who an initiation is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Its source address, for one that came straight to us.
    Addr(IpAddr),
    /// The member a relay forwarded it for (by peer index).
    Member(usize),
}

#[derive(Debug, Default)]
pub struct HandshakeLimiter {
    buckets: HashMap<Source, (f64, Instant)>,
}

impl HandshakeLimiter {
    /// Take a token for `src`; false means drop the packet.
    pub fn allow(&mut self, now: Instant, src: Source) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&src) {
            // A source idle for a second has refilled completely: forgetting
            // it changes nothing.
            self.buckets
                .retain(|_, (_, t)| now.saturating_duration_since(*t) < Duration::from_secs(1));
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(src).or_insert((BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * RATE_PER_SEC;
        *tokens = (*tokens + refill).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::default();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(t0, Source::Addr(a))).count();
        assert_eq!(allowed, 5);
        assert!(
            l.allow(t0, Source::Addr(b)),
            "one source must not starve another"
        );
        // One second later: 20 more tokens, capped at the burst.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            (0..100).filter(|_| l.allow(later, Source::Addr(a))).count(),
            5
        );
    }
}
