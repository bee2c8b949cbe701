//! Path choice: which of a peer's addresses to send to.
//!
//! Once a session exists, every candidate address (and the current one) is
//! probed with an encrypted ping; pongs give each path an RTT. The node
//! sends on the fastest live path, so a LAN path beats a path through two
//! NATs, and a dead path is left as soon as another one answers. Pure
//! bookkeeping: the node sends the pings and feeds back the pongs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Probe quickly right after a session or new candidates appear ...
pub const PROBE_FAST: Duration = Duration::from_secs(1);
/// ... for this many rounds, then settle.
pub const FAST_ROUNDS: u32 = 5;
pub const PROBE_SLOW: Duration = Duration::from_secs(15);
/// A path that has not answered for this long is dead.
pub const PATH_ALIVE: Duration = Duration::from_secs(40);
/// ... and so is one whose last probes in a row went unanswered.
pub const LOST_IN_A_ROW: u32 = 2;

#[derive(Debug, Clone)]
pub struct PathState {
    pub addr: SocketAddr,
    ping: Option<(u64, Instant)>,
    /// Smoothed round-trip time (RFC 6298-style, α = 1/8).
    pub rtt: Option<Duration>,
    pub last_pong: Option<Instant>,
    /// Probes in a row that got no answer before the next round.
    lost: u32,
    /// The last [`Paths::probe_one`].
    echoed: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct Paths {
    entries: Vec<PathState>,
    rounds: u32,
}

impl Paths {
    /// Track exactly these addresses, keeping what we know of old ones.
    pub fn set_addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut next: Vec<PathState> = Vec::new();
        for addr in addrs {
            if next.iter().any(|p| p.addr == addr) {
                continue;
            }
            let old = self.entries.iter().find(|p| p.addr == addr).cloned();
            next.push(old.unwrap_or(PathState {
                addr,
                ping: None,
                rtt: None,
                last_pong: None,
                lost: 0,
                echoed: None,
            }));
        }
        self.entries = next;
        self.rounds = 0;
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.entries.iter().any(|p| p.addr == addr)
    }

    /// Start a probe round: one ping per path, ids from `next_id`.
    pub fn probe_round(
        &mut self,
        now: Instant,
        mut next_id: impl FnMut() -> u64,
    ) -> Vec<(SocketAddr, u64)> {
        self.rounds = self.rounds.saturating_add(1);
        self.entries
            .iter_mut()
            .map(|p| {
                if p.ping.is_some() {
                    p.lost = p.lost.saturating_add(1);
                }
                let id = next_id();
                p.ping = Some((id, now));
                (p.addr, id)
            })
            .collect()
    }

    /// A ping to `addr` alone, out of round, with id `id`: `false` (send
    /// nothing) if `addr` is not tracked or had one less than
    /// [`PROBE_FAST`] ago. Answering the other side's probe with one of
    /// ours is what gets a pair through two restricted NATs at once (our
    /// round's ping may have died at its NAT a moment before); the gap
    /// keeps two sides that do it to each other at the fast-round rate.
    pub fn probe_one(&mut self, now: Instant, addr: SocketAddr, id: u64) -> bool {
        let Some(p) = self.entries.iter_mut().find(|p| p.addr == addr) else {
            return false;
        };
        if p.echoed
            .is_some_and(|at| now.saturating_duration_since(at) < PROBE_FAST)
        {
            return false;
        }
        p.echoed = Some(now);
        p.ping = Some((id, now));
        true
    }

    /// When the next round is due.
    pub fn next_round(&self, now: Instant) -> Instant {
        now + if self.rounds < FAST_ROUNDS {
            PROBE_FAST
        } else {
            PROBE_SLOW
        }
    }

    /// A pong answering probe `id`: the address it proves; `None` if it
    /// matches no probe. Matched by
    /// id, not by source: a multi-homed peer may answer from another of its
    /// addresses, and what the pong proves is that our ping reached the
    /// address it was sent to.
    pub fn on_pong(&mut self, now: Instant, id: u64) -> Option<SocketAddr> {
        let p = self
            .entries
            .iter_mut()
            .find(|p| p.ping.is_some_and(|(sent, _)| sent == id))?;
        let (_, sent_at) = p.ping.take()?;
        let sample = now.saturating_duration_since(sent_at);
        p.rtt = Some(match p.rtt {
            Some(old) => (old * 7 + sample) / 8,
            None => sample,
        });
        p.last_pong = Some(now);
        p.lost = 0;
        Some(p.addr)
    }

    /// Answered recently, and not silent for the last probes in a row: a
    /// path that just broke (the peer moved) must not win on an RTT it had
    /// before.
    fn alive(&self, now: Instant, addr: SocketAddr) -> Option<&PathState> {
        self.entries.iter().find(|p| p.addr == addr).filter(|p| {
            p.lost < LOST_IN_A_ROW
                && p.last_pong
                    .is_some_and(|t| now.saturating_duration_since(t) < PATH_ALIVE)
        })
    }

    /// The path to switch to, if any: the fastest live one, when the
    /// current path is dead or unknown, or clearly (20 %) slower.
    pub fn better_than(&self, now: Instant, current: Option<SocketAddr>) -> Option<SocketAddr> {
        let best = self
            .entries
            .iter()
            .filter(|p| self.alive(now, p.addr).is_some())
            .min_by_key(|p| p.rtt.unwrap_or(Duration::MAX))?;
        let Some(cur) = current.and_then(|c| self.alive(now, c)) else {
            return (Some(best.addr) != current).then_some(best.addr);
        };
        let (Some(best_rtt), Some(cur_rtt)) = (best.rtt, cur.rtt) else {
            return None;
        };
        (best.addr != cur.addr && best_rtt * 10 < cur_rtt * 8).then_some(best.addr)
    }

    /// The shell says `addr` carries nothing now (its TCP connection
    /// closed): it is dead until it answers again, and the next rounds come
    /// fast, to find what works instead.
    pub fn mark_dead(&mut self, addr: SocketAddr) {
        if let Some(p) = self.entries.iter_mut().find(|p| p.addr == addr) {
            p.last_pong = None;
            p.ping = None;
            p.lost = LOST_IN_A_ROW;
        }
        self.rounds = 0;
    }

    pub fn rtt(&self, addr: SocketAddr) -> Option<Duration> {
        self.entries
            .iter()
            .find(|p| p.addr == addr)
            .and_then(|p| p.rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fastest_live_path_wins_with_hysteresis() {
        let t0 = Instant::now();
        let (wan, lan) = (a("198.18.0.2:1"), a("192.168.1.2:1"));
        let mut p = Paths::default();
        p.set_addrs([wan, lan]);
        let mut n = 0;
        let pings = p.probe_round(t0, || {
            n += 1;
            n
        });
        assert_eq!(pings.len(), 2);
        assert!(
            p.on_pong(t0 + Duration::from_millis(20), pings[0].1)
                .is_some()
        );
        assert_eq!(
            p.better_than(t0, Some(wan)),
            None,
            "only one path has answered, and it is current"
        );
        assert!(
            p.on_pong(t0, 999).is_none(),
            "a pong with the wrong id is ignored"
        );
        assert_eq!(
            p.on_pong(t0 + Duration::from_millis(1), pings[1].1),
            Some(lan)
        );
        assert_eq!(p.better_than(t0, Some(wan)), Some(lan));
        // 15 % better is not enough to move.
        let mut q = Paths::default();
        q.set_addrs([wan, lan]);
        let mut k = 10;
        let pings = q.probe_round(t0, || {
            k += 1;
            k
        });
        q.on_pong(t0 + Duration::from_millis(100), pings[0].1);
        q.on_pong(t0 + Duration::from_millis(85), pings[1].1);
        assert_eq!(q.better_than(t0, Some(wan)), None);
    }

    #[test]
    fn a_path_the_shell_lost_is_left_for_a_slower_live_one() {
        let t0 = Instant::now();
        let (tcp, udp) = (a("198.18.3.2:40000"), a("198.18.3.2:51871"));
        let mut p = Paths::default();
        p.set_addrs([tcp, udp]);
        let mut n = 0;
        let pings = p.probe_round(t0, || {
            n += 1;
            n
        });
        p.on_pong(t0 + Duration::from_millis(1), pings[0].1);
        p.on_pong(t0 + Duration::from_millis(2), pings[1].1);
        let now = t0 + Duration::from_millis(3);
        assert_eq!(
            p.better_than(now, Some(tcp)),
            None,
            "both alive, tcp faster"
        );
        p.mark_dead(tcp);
        assert_eq!(p.better_than(now, Some(tcp)), Some(udp));
        assert_eq!(p.next_round(now), now + PROBE_FAST, "probing fast again");
    }

    #[test]
    fn dead_current_path_is_left() {
        let t0 = Instant::now();
        let (old, new) = (a("198.18.0.2:1"), a("198.18.9.9:1"));
        let mut p = Paths::default();
        p.set_addrs([old, new]);
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let pings = p.probe_round(t0, &mut next);
        p.on_pong(t0, pings[0].1);
        let later = t0 + PATH_ALIVE;
        let pings = p.probe_round(later, &mut next);
        p.on_pong(later, pings[1].1);
        assert_eq!(
            p.better_than(later, Some(old)),
            Some(new),
            "old path silent for PATH_ALIVE"
        );
    }

    #[test]
    fn a_path_that_stops_answering_loses_its_old_rtt_advantage() {
        let t0 = Instant::now();
        let (old, new) = (a("198.18.3.2:1"), a("198.18.4.2:1"));
        let mut p = Paths::default();
        p.set_addrs([old]);
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let pings = p.probe_round(t0, &mut next);
        p.on_pong(t0 + Duration::from_micros(200), pings[0].1);
        // The peer moves: the old address goes silent, the new one is slower.
        p.set_addrs([old, new]);
        let mut t = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            let pings = p.probe_round(t, &mut next);
            p.on_pong(t + Duration::from_millis(5), pings[1].1); // only `new` answers
            t += PROBE_FAST;
        }
        assert_eq!(
            p.better_than(t, Some(new)),
            None,
            "must not switch back to the silent old path"
        );
        assert_eq!(p.better_than(t, Some(old)), Some(new));
    }

    #[test]
    fn probing_slows_down_and_set_addrs_keeps_history() {
        let t0 = Instant::now();
        let x = a("198.18.0.2:1");
        let mut p = Paths::default();
        p.set_addrs([x]);
        for _ in 0..FAST_ROUNDS {
            assert_eq!(p.next_round(t0), t0 + PROBE_FAST);
            let ids = p.probe_round(t0, || 3);
            p.on_pong(t0 + Duration::from_millis(4), ids[0].1);
        }
        assert_eq!(p.next_round(t0), t0 + PROBE_SLOW);
        p.set_addrs([x, a("10.0.0.1:1")]);
        assert_eq!(p.rtt(x), Some(Duration::from_millis(4)));
        assert_eq!(
            p.next_round(t0),
            t0 + PROBE_FAST,
            "new candidates: probe fast again"
        );
    }
}
