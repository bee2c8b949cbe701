//! Per-peer deadlines. The shell sleeps until the earliest one; nothing here
//! ticks on a fixed period.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Protocol timing, in the spirit of WireGuard's (whitepaper §6.1).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// The side not designated to rekey waits longer, as a fallback.
pub const RESPONDER_REKEY_AFTER_TIME: Duration = Duration::from_secs(150);
/// The designated rekeyer of a pair that only receives rekeys this long
/// after the last handshake, early enough to finish before
/// [`REJECT_AFTER_TIME`] (WireGuard: reject − keepalive − rekey timeout).
pub const RECV_REKEY_AFTER_TIME: Duration = Duration::from_secs(165);
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Counters at or past this are never used (the last 2^13 are kept back as
/// in WireGuard; `u64::MAX` is reserved by snow).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// First handshake retry; doubled per attempt up to [`HANDSHAKE_RETRY_MAX`].
pub const HANDSHAKE_RETRY_BASE: Duration = Duration::from_secs(1);
pub const HANDSHAKE_RETRY_MAX: Duration = Duration::from_secs(16);
/// Stop retrying a handshake nobody asked for after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Send a keepalive if we received data but sent nothing for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Start a new handshake if we sent data and heard nothing for this long.
pub const NO_REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Forget all keys of a peer after this much silence.
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(540);
/// Minimum gap between accepted initiations from one peer.
pub const MIN_INITIATION_GAP: Duration = Duration::from_millis(50);

/// Test only: what the protocol timers above (and the cookie lifetime)
/// are divided by in this process; 1, as specified, unless the daemon
/// was started with `KITH_TEST_TIMER_DIVISOR` (read by `kith up`), which
/// lets an end-to-end test live through several rekeys and
/// reject-after-times in seconds (`tests/e2e_flood.rs`). Rates are not
/// timers and are never divided: the handshake limiter, the global
/// budget, the under-load threshold, [`MIN_INITIATION_GAP`]. Global
/// rather than an argument so that it touches no signature: nothing but
/// `kith up` ever sets it, and the simulator runs at 1.
static TEST_DIVISOR: AtomicU32 = AtomicU32::new(1);

/// Divide every protocol timer by `divisor` (at least 1) from now on;
/// test only (see [`TEST_DIVISOR`]).
pub fn set_test_timer_divisor(divisor: u32) {
    TEST_DIVISOR.store(divisor.max(1), Ordering::Relaxed);
}

/// A protocol timer as this process runs it: `d`, divided by the test
/// divisor when one is set.
pub fn scaled(d: Duration) -> Duration {
    match TEST_DIVISOR.load(Ordering::Relaxed) {
        1 => d,
        n => d / n,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Resend our initiation (backoff with jitter).
    HandshakeRetry,
    /// `keepalive = "…"` from the config.
    PersistentKeepalive,
    /// Acknowledge received data we had no reply to.
    PassiveKeepalive,
    /// Data sent, nothing heard back: the session may be dead.
    NoReply,
    /// Long silence: wipe keys.
    ZeroKeys,
    /// Ping every known address of the peer to time the paths.
    PathProbe,
    /// Data sent on a peer's route and nothing back: probe it, then leave
    /// it for a relay (or another relay).
    PathFailover,
}

const ALL: [Timer; 7] = [
    Timer::HandshakeRetry,
    Timer::PersistentKeepalive,
    Timer::PassiveKeepalive,
    Timer::NoReply,
    Timer::ZeroKeys,
    Timer::PathProbe,
    Timer::PathFailover,
];

#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    deadlines: [Option<Instant>; ALL.len()],
}

impl TimerTable {
    pub fn set(&mut self, t: Timer, at: Instant) {
        self.deadlines[t as usize] = Some(at);
    }

    /// Set only if not already armed (e.g. the first unanswered packet
    /// starts the no-reply clock; later ones must not push it back).
    pub fn set_if_unset(&mut self, t: Timer, at: Instant) {
        self.deadlines[t as usize].get_or_insert(at);
    }

    pub fn clear(&mut self, t: Timer) {
        self.deadlines[t as usize] = None;
    }

    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Remove and return every timer due at `now`.
    pub fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut due = [None; ALL.len()];
        for (i, t) in ALL.iter().enumerate() {
            if self.deadlines[i].is_some_and(|d| d <= now) {
                self.deadlines[i] = None;
                due[i] = Some(*t);
            }
        }
        due.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_and_expiry() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::NoReply, t0 + Duration::from_secs(15));
        t.set(Timer::PassiveKeepalive, t0 + Duration::from_secs(10));
        t.set_if_unset(Timer::NoReply, t0 + Duration::from_secs(99));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(10)));
        let due: Vec<_> = t.expired(t0 + Duration::from_secs(12)).collect();
        assert_eq!(due, vec![Timer::PassiveKeepalive]);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(15)));
    }
}
