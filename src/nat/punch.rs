//! Hard-NAT traversal: when ordinary hole punching cannot work, which side
//! does what, and how many probes it may spend. Pure state, driven by
//! explicit time; the daemon carries out its [`Action`]s.
//!
//! Ordinary punching (both sides send to each other's published candidates)
//! works when at least one side's NAT keeps one mapping for all destinations.
//! When one side is behind an endpoint-dependent ("symmetric") NAT, the
//! address its NAT gives it towards us is one nobody has observed, so our
//! filter never opens for it. Then (design §6):
//!
//! - the **hard** side (endpoint-dependent) opens many sockets and sends
//!   from each one to the easy side's public address: every socket gets its
//!   own mapping on the hard NAT, open for packets from exactly that address;
//! - the **easy** side (endpoint-independent) sends probes from its data
//!   socket to ports of the hard side's public IP: first the ports a
//!   sequential allocator would hand out next (port prediction), then random
//!   ones. A probe that lands on one of the hard side's mappings gets through
//!   (it comes from the address that mapping was made for) and is answered
//!   from that socket; the answer passes the easy side's filter because the
//!   easy side just sent to that port.
//!
//! With `s` hard-side sockets among `P` possible ports, each random probe
//! hits with chance `s/P`: 256 sockets and 2000 probes miss with chance
//! `(1 − 256/64512)^2000 ≈ 4·10⁻⁴` (the birthday bound, as in Tailscale's
//! "hard NAT" traversal).
//!
//! Every packet either side sends counts against a per-peer rate, a global
//! rate and a per-attempt total, so kith never looks like a port scan or a
//! flood. When an attempt spends its budget without a path it says so
//! ([`Action::Finished`] with [`Outcome::Spent`]) and the peer waits for a
//! relay; attempts for the same peer back off from 30 s up to 10 minutes.
//!
//! Both sides start when their DHT lookups show them each other's NAT facts;
//! lookups run every few seconds, so the easy side waits
//! [`Budget::easy_delay`] before probing to let the hard side's mappings
//! exist first.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{MappingBehaviour, NatBehaviour};

/// Lowest port a NAT hands out to a mapping (Linux and most routers keep
/// well-known ports for themselves).
pub const FIRST_DYNAMIC_PORT: u16 = 1024;

/// How much hard-NAT traversal may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Sockets the hard side opens per attempt.
    pub sockets: usize,
    /// Sockets all hard-side attempts together may hold open.
    pub max_sockets: usize,
    /// Packets per second for one peer (either side).
    pub peer_rate: u32,
    /// Packets per second over all peers.
    pub global_rate: u32,
    /// Packets one attempt for one peer may send in all.
    pub per_attempt: u32,
    /// How long the hard side keeps its sockets open for one attempt.
    pub hard_window: Duration,
    /// The hard side sends from every socket again this often, so that its
    /// mappings (30 s for unanswered UDP on Linux) last the whole window.
    pub hard_resend: Duration,
    /// The easy side starts probing this long after deciding to.
    pub easy_delay: Duration,
    /// Wait before the second attempt for a peer; doubles per attempt.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            sockets: 256,
            max_sockets: 1024,
            peer_rate: 200,
            global_rate: 400,
            per_attempt: 2000,
            hard_window: Duration::from_secs(30),
            hard_resend: Duration::from_secs(10),
            easy_delay: Duration::from_secs(5),
            first_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
        }
    }
}

/// What it takes to reach a peer directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Ordinary punching to the published candidates is enough (or we do
    /// not know enough to do better).
    Ordinary,
    /// We are behind the endpoint-dependent NAT: open sockets, send from
    /// each to these public addresses of the peer.
    Hard { targets: Vec<SocketAddr> },
    /// The peer is: probe its public IP, predicted ports first.
    Easy { ip: IpAddr, predicted: Vec<u16> },
    /// Both sides are behind endpoint-dependent NATs: no direct path can be
    /// punched, only a relay helps.
    BothHard,
}

/// Choose the strategy from both sides' NAT facts. `peer_mapped` /
/// `we_mapped` say whether either side has a router port mapping, which
/// needs no punching at all. Only the peer's own public address (what its
/// STUN servers saw) is ever a target: a record could name any address, and
/// probes must not be aimed at third parties. The data socket is IPv4.
/// The peer's NAT facts as far as probing may use them: its public address
/// only if it is a global unicast IPv4 address that the same signed record
/// also lists among its candidates. Probes go wherever that address says,
/// so a hostile member's record, or one lying STUN answer behind it, must
/// not aim port sweeps at loopback, a LAN, multicast or anyone's address
/// but the peer's own. (The lab's 198.18.0.0/15 counts as public.)
pub fn probe_safe(theirs: &NatBehaviour, listed: &[SocketAddr]) -> NatBehaviour {
    let mut t = *theirs;
    t.public = t
        .public
        .filter(|p| is_global_v4(p.ip()) && listed.iter().any(|c| c.ip() == p.ip()));
    t
}

/// Routable on the internet: not unspecified, loopback, private, shared
/// (carrier NAT), link-local, multicast, broadcast, documentation or
/// reserved.
fn is_global_v4(ip: std::net::IpAddr) -> bool {
    let std::net::IpAddr::V4(v4) = ip else {
        return false;
    };
    let o = v4.octets();
    let shared = o[0] == 100 && (o[1] & 0xc0) == 64;
    !(v4.is_unspecified()
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || shared
        || o[0] == 0
        || o[0] >= 240)
}

pub fn strategy(
    ours: Option<&NatBehaviour>,
    theirs: Option<&NatBehaviour>,
    we_mapped: bool,
    peer_mapped: bool,
    budget: &Budget,
) -> Strategy {
    use MappingBehaviour::*;
    let (Some(ours), Some(theirs)) = (ours, theirs) else {
        return Strategy::Ordinary;
    };
    if we_mapped || peer_mapped {
        return Strategy::Ordinary;
    }
    match (ours.mapping, theirs.mapping) {
        (EndpointDependent, EndpointDependent) => Strategy::BothHard,
        (EndpointDependent, EndpointIndependent) => match theirs.public {
            Some(public) if public.is_ipv4() => Strategy::Hard {
                targets: vec![public],
            },
            _ => Strategy::Ordinary,
        },
        (EndpointIndependent, EndpointDependent) => match theirs.public {
            Some(public) if public.is_ipv4() => Strategy::Easy {
                ip: public.ip(),
                predicted: predict(public.port(), theirs.sequential, budget.sockets + 64),
            },
            _ => Strategy::Ordinary,
        },
        // No NAT on either side, or one we do not know: the hard side's
        // ordinary initiations reach an un-NATed peer, whose answers go back
        // through the mapping they came in on.
        _ => Strategy::Ordinary,
    }
}

/// The next `n` ports a sequential allocator that last gave out `base`
/// hands out, `step` apart (the hard side's sockets take them in turn).
fn predict(base: u16, step: Option<i32>, n: usize) -> Vec<u16> {
    let Some(step) = step.filter(|s| *s != 0) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(n);
    let mut port = i32::from(base);
    for _ in 0..n {
        port += step;
        match u16::try_from(port) {
            Ok(p) if p >= FIRST_DYNAMIC_PORT => out.push(p),
            _ => break,
        }
    }
    out
}

/// Something for the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Send the peer's pending handshake initiation from the data socket
    /// to `dst` (easy side).
    Probe { peer: P, dst: SocketAddr },
    /// Open `sockets` extra sockets for the peer that accept packets from
    /// `targets` only (hard side).
    OpenPool {
        peer: P,
        sockets: usize,
        targets: Vec<SocketAddr>,
    },
    /// Send the peer's pending initiation from pool socket `socket` to
    /// every target (hard side; one packet per target).
    PoolSend { peer: P, socket: usize },
    /// The attempt is over: close the pool sockets no answer came to.
    ClosePool { peer: P },
    /// The attempt ended; worth one log line.
    Finished {
        peer: P,
        outcome: Outcome,
        probes: u32,
    },
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer answered: a direct path exists.
    Connected,
    /// The budget is spent without an answer: rely on a relay.
    Spent,
}

/// Our side of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Easy,
    Hard,
}

/// What `kith status` shows of a peer's hard-NAT traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPunch {
    pub role: Role,
    /// Packets sent by the current or last attempt.
    pub probes: u32,
    /// Attempts so far.
    pub attempts: u32,
    /// Running now.
    pub active: bool,
    /// How the last attempt ended.
    pub last: Option<Outcome>,
}

/// Ports to probe: predicted ones first, then every other port once in
/// random order (a lazy Fisher–Yates shuffle of the dynamic range).
#[derive(Debug, Clone)]
struct PortOrder {
    predicted: VecDeque<u16>,
    /// Ports `FIRST_DYNAMIC_PORT..=65535`, shuffled as they are drawn.
    pool: Vec<u16>,
    drawn: usize,
}

impl PortOrder {
    fn new(predicted: &[u16]) -> Self {
        let predicted: VecDeque<u16> = predicted.iter().copied().collect();
        // Predicted ports are probed first and must not come up again.
        let mut skip = vec![false; usize::from(u16::MAX) + 1];
        for p in &predicted {
            skip[usize::from(*p)] = true;
        }
        Self {
            pool: (FIRST_DYNAMIC_PORT..=u16::MAX)
                .filter(|p| !skip[usize::from(*p)])
                .collect(),
            predicted,
            drawn: 0,
        }
    }

    fn next(&mut self, rng: &mut StdRng) -> Option<u16> {
        if let Some(p) = self.predicted.pop_front() {
            return Some(p);
        }
        if self.drawn >= self.pool.len() {
            return None;
        }
        let pick = rng.random_range(self.drawn..self.pool.len());
        self.pool.swap(self.drawn, pick);
        self.drawn += 1;
        Some(self.pool[self.drawn - 1])
    }
}

#[derive(Debug)]
enum Work {
    Easy {
        ip: IpAddr,
        ports: PortOrder,
    },
    /// Next socket to send from; when the last round started.
    Hard {
        next_socket: usize,
        round: Instant,
    },
}

#[derive(Debug)]
struct Attempt<P> {
    peer: P,
    work: Work,
    /// No packets before this (the easy side's head start for the hard side).
    start_at: Instant,
    ends: Instant,
    sent: u32,
}

#[derive(Debug)]
struct History<P> {
    peer: P,
    role: Role,
    attempts: u32,
    /// Spent attempts since the last success: the backoff's exponent.
    failures: u32,
    probes: u32,
    last: Option<Outcome>,
    not_before: Option<Instant>,
    /// The last backoff reset a newer record bought (see
    /// [`Puncher::reset_backoff`]).
    record_reset: Option<Instant>,
}

/// Tick while an attempt is sending: fine enough that the rate is smooth.
const TICK: Duration = Duration::from_millis(10);

/// Token bucket in millipackets, so the rate is exact over any tick length.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    last: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Self {
            milli: 0,
            last: now,
        }
    }

    /// Refill at `rate` packets per second, holding at most a tick's worth
    /// (plus one packet) so an idle spell does not turn into a burst.
    fn refill(&mut self, now: Instant, rate: u32) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let add = elapsed.as_micros().saturating_mul(u128::from(rate)) / 1000;
        let cap = (TICK.as_millis() as u64 * u64::from(rate)).max(1000) + 1000;
        self.milli = (self.milli + u64::try_from(add).unwrap_or(u64::MAX)).min(cap);
    }

    fn take(&mut self) -> bool {
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Hard-NAT attempts for all peers, under one global budget.
#[derive(Debug)]
pub struct Puncher<P> {
    budget: Budget,
    attempts: Vec<(Attempt<P>, Bucket)>,
    history: Vec<History<P>>,
    global: Bucket,
    actions: VecDeque<Action<P>>,
    rng: StdRng,
}

impl<P: Copy + Eq + std::fmt::Debug> Puncher<P> {
    pub fn new(budget: Budget, now: Instant, seed: [u8; 32]) -> Self {
        Self {
            budget,
            attempts: Vec::new(),
            history: Vec::new(),
            global: Bucket::new(now),
            actions: VecDeque::new(),
            rng: StdRng::from_seed(seed),
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Start an attempt for `peer` if the strategy calls for one and none
    /// is running or backing off. Returns whether one started.
    pub fn start(&mut self, now: Instant, peer: P, strategy: &Strategy) -> bool {
        let role = match strategy {
            Strategy::Easy { .. } => Role::Easy,
            Strategy::Hard { .. } => Role::Hard,
            Strategy::Ordinary | Strategy::BothHard => return false,
        };
        if self.attempts.iter().any(|(a, _)| a.peer == peer) {
            return false;
        }
        let pools = self
            .attempts
            .iter()
            .filter(|(a, _)| matches!(a.work, Work::Hard { .. }))
            .count();
        if role == Role::Hard
            && (self.budget.sockets == 0
                || (pools + 1) * self.budget.sockets > self.budget.max_sockets)
        {
            // Another peer's attempt ends within the hard window.
            return false;
        }
        let h = self.history_mut(peer, role);
        if h.not_before.is_some_and(|t| now < t) {
            return false;
        }
        h.role = role;
        h.attempts += 1;
        h.probes = 0;
        h.not_before = None;
        let (work, start_at, ends) = match strategy {
            Strategy::Easy { ip, predicted } => {
                let start_at = now + self.budget.easy_delay;
                (
                    Work::Easy {
                        ip: *ip,
                        ports: PortOrder::new(predicted),
                    },
                    start_at,
                    // Long enough to spend the budget at the peer rate.
                    start_at
                        + Duration::from_millis(
                            u64::from(self.budget.per_attempt) * 1000
                                / u64::from(self.budget.peer_rate.max(1)),
                        )
                        + Duration::from_secs(5),
                )
            }
            Strategy::Hard { targets } => {
                self.actions.push_back(Action::OpenPool {
                    peer,
                    sockets: self.budget.sockets,
                    targets: targets.clone(),
                });
                (
                    Work::Hard {
                        next_socket: 0,
                        round: now,
                    },
                    now,
                    now + self.budget.hard_window,
                )
            }
            Strategy::Ordinary | Strategy::BothHard => return false,
        };
        let attempt = Attempt {
            peer,
            work,
            start_at,
            ends,
            sent: 0,
        };
        self.attempts.push((attempt, Bucket::new(start_at)));
        true
    }

    fn history_mut(&mut self, peer: P, role: Role) -> &mut History<P> {
        let i = match self.history.iter().position(|h| h.peer == peer) {
            Some(i) => i,
            None => {
                self.history.push(History {
                    peer,
                    role,
                    attempts: 0,
                    failures: 0,
                    probes: 0,
                    last: None,
                    not_before: None,
                    record_reset: None,
                });
                self.history.len() - 1
            }
        };
        &mut self.history[i]
    }

    /// The peer has a working path: stop its attempt and forget the backoff.
    /// Cheap when there is nothing to stop; call it whenever a session is up.
    pub fn connected(&mut self, peer: P) {
        self.finish(peer, Outcome::Connected);
        if let Some(h) = self.history.iter_mut().find(|h| h.peer == peer) {
            h.not_before = None;
            h.failures = 0;
        }
    }

    /// The peer restarted or moved (a newer record): its side starts a fresh
    /// attempt, so ours must not sit out a backoff the peer knows nothing of.
    /// At most once per `max_backoff`, though: records are the peer's to
    /// write, and one that publishes every few seconds must not buy a
    /// sweep of probes every time. False when ignored.
    pub fn reset_backoff(&mut self, now: Instant, peer: P) -> bool {
        let every = self.budget.max_backoff;
        let Some(h) = self.history.iter_mut().find(|h| h.peer == peer) else {
            return true; // nothing to reset
        };
        if h.record_reset
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return false;
        }
        h.record_reset = Some(now);
        h.not_before = None;
        h.failures = 0;
        true
    }

    /// The peer left the config: its attempt and history go, without an
    /// outcome (the shell drops its pool itself).
    pub fn forget(&mut self, peer: P) {
        self.attempts.retain(|(a, _)| a.peer != peer);
        self.history.retain(|h| h.peer != peer);
    }

    /// The attempt cannot go on (no sockets): end it as spent, backing off.
    pub fn failed(&mut self, peer: P) {
        self.finish(peer, Outcome::Spent);
    }

    fn finish(&mut self, peer: P, outcome: Outcome) {
        let Some(i) = self.attempts.iter().position(|(a, _)| a.peer == peer) else {
            return;
        };
        let (attempt, _) = self.attempts.swap_remove(i);
        if matches!(attempt.work, Work::Hard { .. }) {
            self.actions.push_back(Action::ClosePool { peer });
        }
        self.actions.push_back(Action::Finished {
            peer,
            outcome,
            probes: attempt.sent,
        });
        let (first, max) = (self.budget.first_backoff, self.budget.max_backoff);
        let h = self.history_mut(peer, Role::Easy);
        h.last = Some(outcome);
        h.probes = attempt.sent;
        if outcome == Outcome::Spent {
            let wait = first.saturating_mul(1 << h.failures.min(16)).min(max);
            h.failures += 1;
            h.not_before = Some(attempt.ends + wait);
        }
    }

    /// Send what the budget allows now; end attempts whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.global.refill(now, self.budget.global_rate);
        let mut i = 0;
        // Rotate the starting attempt so one peer cannot starve the others
        // of the global budget.
        if !self.attempts.is_empty() {
            let k = self.rng.random_range(0..self.attempts.len());
            self.attempts.rotate_left(k);
        }
        let mut spent = Vec::new();
        while i < self.attempts.len() {
            let budget = self.budget;
            let (a, bucket) = &mut self.attempts[i];
            i += 1;
            // The last probes get until `ends` to be answered.
            if now >= a.ends {
                spent.push(a.peer);
                continue;
            }
            if now < a.start_at {
                continue;
            }
            bucket.refill(now, budget.peer_rate);
            while a.sent < budget.per_attempt && bucket.milli >= 1000 && self.global.milli >= 1000 {
                let action = match &mut a.work {
                    Work::Easy { ip, ports } => match ports.next(&mut self.rng) {
                        Some(port) => Action::Probe {
                            peer: a.peer,
                            dst: SocketAddr::new(*ip, port),
                        },
                        None => break,
                    },
                    Work::Hard { next_socket, round } => {
                        if *next_socket >= budget.sockets {
                            if now.saturating_duration_since(*round) < budget.hard_resend {
                                break;
                            }
                            *next_socket = 0;
                            *round = now;
                        }
                        *next_socket += 1;
                        Action::PoolSend {
                            peer: a.peer,
                            socket: *next_socket - 1,
                        }
                    }
                };
                bucket.take();
                self.global.take();
                a.sent += 1;
                self.actions.push_back(action);
            }
        }
        for peer in spent {
            self.finish(peer, Outcome::Spent);
        }
    }

    /// When to call [`Self::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.attempts
            .iter()
            .map(|(a, bucket)| {
                let sending = match &a.work {
                    Work::Easy { .. } => a.sent < self.budget.per_attempt,
                    Work::Hard { next_socket, .. } => *next_socket < self.budget.sockets,
                };
                let next = if !sending {
                    match &a.work {
                        Work::Hard { round, .. } => (*round + self.budget.hard_resend).min(a.ends),
                        Work::Easy { .. } => a.ends,
                    }
                } else {
                    a.start_at.max(bucket.last + TICK)
                };
                next.min(a.ends)
            })
            .min()
    }

    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// What `kith status` shows for `peer`.
    pub fn status(&self, peer: P) -> Option<PeerPunch> {
        let h = self.history.iter().find(|h| h.peer == peer)?;
        let running = self.attempts.iter().find(|(a, _)| a.peer == peer);
        Some(PeerPunch {
            role: h.role,
            probes: running.map_or(h.probes, |(a, _)| a.sent),
            attempts: h.attempts,
            active: running.is_some(),
            last: h.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn behaviour(mapping: MappingBehaviour, public: &str, step: Option<i32>) -> NatBehaviour {
        NatBehaviour {
            mapping,
            port_preserving: false,
            sequential: step,
            public: Some(public.parse().unwrap()),
        }
    }

    fn easy() -> NatBehaviour {
        behaviour(
            MappingBehaviour::EndpointIndependent,
            "198.18.1.1:4000",
            None,
        )
    }

    fn hard(step: Option<i32>) -> NatBehaviour {
        behaviour(
            MappingBehaviour::EndpointDependent,
            "198.18.2.1:30000",
            step,
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Run the puncher in 1 ms steps for `secs`, collecting actions.
    fn run(p: &mut Puncher<u8>, start: Instant, secs: u64) -> Vec<(Duration, Action<u8>)> {
        let mut out = Vec::new();
        let mut t = start;
        while t <= start + Duration::from_secs(secs) {
            if p.poll_timeout().is_some_and(|d| d <= t) {
                p.handle_timeout(t);
            }
            while let Some(a) = p.poll_action() {
                out.push((t - start, a));
            }
            t += Duration::from_millis(1);
        }
        out
    }

    fn probes(actions: &[(Duration, Action<u8>)]) -> Vec<(Duration, SocketAddr)> {
        actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Probe { dst, .. } => Some((*t, *dst)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn probes_aim_only_at_the_peers_own_public_address() {
        let listed = [addr("198.18.2.1:4000"), addr("192.168.1.10:51871")];
        let ok = |public: &str| {
            let t = behaviour(MappingBehaviour::EndpointDependent, public, None);
            probe_safe(&t, &listed).public.is_some()
        };
        assert!(ok("198.18.2.1:4000"), "the lab's public range, listed");
        assert!(ok("198.18.2.1:9999"), "another port of the listed address");
        assert!(!ok("198.18.7.7:4000"), "public, but not in the record");
        let bad = [
            "127.0.0.1:4000",
            "192.168.1.10:51871",
            "10.0.0.1:4000",
            "100.64.0.1:4000",
            "169.254.1.1:4000",
            "224.0.0.1:4000",
            "255.255.255.255:4000",
            "0.0.0.0:4000",
            "240.0.0.1:4000",
        ];
        for public in bad {
            let t = behaviour(MappingBehaviour::EndpointDependent, public, None);
            let mut listed = listed.to_vec();
            listed.push(addr(public));
            assert!(probe_safe(&t, &listed).public.is_none(), "{public}");
        }
        // And a fact without a usable address means no probing at all.
        let b = Budget::default();
        let lying = behaviour(MappingBehaviour::EndpointDependent, "127.0.0.1:4000", None);
        let safe = probe_safe(&lying, &listed);
        assert_eq!(
            strategy(Some(&easy()), Some(&safe), false, false, &b),
            Strategy::Ordinary
        );
    }

    #[test]
    fn strategy_follows_both_mappings() {
        let b = Budget::default();
        let public = [addr("198.18.1.1:4000")];
        let s = |o: &NatBehaviour, t: &NatBehaviour| strategy(Some(o), Some(t), false, false, &b);
        assert_eq!(s(&easy(), &easy()), Strategy::Ordinary);
        assert_eq!(s(&hard(None), &hard(None)), Strategy::BothHard);
        assert_eq!(
            s(&hard(None), &easy()),
            Strategy::Hard {
                targets: public.to_vec()
            }
        );
        assert_eq!(
            s(&easy(), &hard(None)),
            Strategy::Easy {
                ip: "198.18.2.1".parse().unwrap(),
                predicted: vec![]
            }
        );
        let no_nat = behaviour(MappingBehaviour::NoNat, "198.18.3.1:51871", None);
        assert_eq!(s(&no_nat, &hard(None)), Strategy::Ordinary);
        assert_eq!(s(&hard(None), &no_nat), Strategy::Ordinary);
        // A router port mapping on either side needs no punching.
        assert_eq!(
            strategy(Some(&hard(None)), Some(&hard(None)), true, false, &b),
            Strategy::Ordinary
        );
        assert_eq!(
            strategy(Some(&easy()), Some(&hard(None)), false, true, &b),
            Strategy::Ordinary
        );
        // Not knowing either side's facts: ordinary.
        assert_eq!(
            strategy(None, Some(&hard(None)), false, false, &b),
            Strategy::Ordinary
        );
        // Without the peer's public address, or with an IPv6 one (the data
        // socket is IPv4), there is nothing to aim at.
        let mut unseen = easy();
        unseen.public = None;
        assert_eq!(
            strategy(Some(&hard(None)), Some(&unseen), false, false, &b),
            Strategy::Ordinary
        );
        let v6 = behaviour(
            MappingBehaviour::EndpointDependent,
            "[2001:db8::1]:4000",
            None,
        );
        assert_eq!(
            strategy(Some(&easy()), Some(&v6), false, false, &b),
            Strategy::Ordinary
        );
    }

    #[test]
    fn a_forgotten_peer_has_no_attempt_history_or_probes() {
        let now = Instant::now();
        let mut p = Puncher::new(Budget::default(), now, [1; 32]);
        let easy_side = strategy(Some(&easy()), Some(&hard(None)), false, false, p.budget());
        assert!(p.start(now, 7u8, &easy_side));
        assert!(p.status(7).is_some());
        p.forget(7);
        assert!(p.status(7).is_none());
        assert_eq!(p.poll_timeout(), None, "nothing left to do");
        let actions = run(&mut p, now, 10);
        assert!(probes(&actions).is_empty(), "{actions:?}");
        // A peer with the same id later starts afresh.
        assert!(p.start(now, 7u8, &easy_side));
    }

    #[test]
    fn sequential_allocators_are_predicted_from_the_last_mapping() {
        let b = Budget::default();
        let Strategy::Easy { predicted, .. } =
            strategy(Some(&easy()), Some(&hard(Some(2))), false, false, &b)
        else {
            panic!("easy side expected");
        };
        assert_eq!(&predicted[..3], &[30002, 30004, 30006]);
        assert_eq!(predicted.len(), b.sockets + 64);
        // Downwards, stopping before the reserved ports.
        assert_eq!(predict(1030, Some(-3), 10), vec![1027, 1024]);
        assert!(predict(65530, Some(4), 10).iter().all(|p| *p > 65530));
        assert!(predict(30000, None, 10).is_empty());
    }

    #[test]
    fn easy_side_waits_then_probes_within_rate_and_total() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [1; 32]);
        assert!(p.start(
            now,
            7,
            &strategy(Some(&easy()), Some(&hard(None)), false, false, &b)
        ));
        let actions = run(&mut p, now, 20);
        let sent = probes(&actions);
        assert_eq!(sent.len() as u32, b.per_attempt);
        assert!(sent[0].0 >= b.easy_delay, "first probe at {:?}", sent[0].0);
        // Every window of one second holds at most the rate (plus the one
        // packet a bucket may carry over).
        for (i, (t, _)) in sent.iter().enumerate() {
            let in_second = sent[i..]
                .iter()
                .take_while(|(u, _)| *u < *t + Duration::from_secs(1))
                .count();
            assert!(
                in_second as u32 <= b.peer_rate + 1,
                "{in_second} probes in the second after {t:?}"
            );
        }
        let ports: HashSet<u16> = sent.iter().map(|(_, d)| d.port()).collect();
        assert_eq!(ports.len(), sent.len(), "a port was probed twice");
        assert!(ports.iter().all(|p| *p >= FIRST_DYNAMIC_PORT));
        assert!(
            sent.iter()
                .all(|(_, d)| d.ip() == "198.18.2.1".parse::<IpAddr>().unwrap())
        );
        let finished: Vec<_> = actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Finished {
                    outcome, probes, ..
                } => Some((*outcome, *probes)),
                _ => None,
            })
            .collect();
        assert_eq!(finished, vec![(Outcome::Spent, b.per_attempt)]);
        let st = p.status(7).unwrap();
        assert_eq!(
            (st.role, st.active, st.attempts, st.last),
            (Role::Easy, false, 1, Some(Outcome::Spent))
        );
    }

    #[test]
    fn a_spent_attempt_backs_off_before_the_next() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [2; 32]);
        let s = strategy(Some(&easy()), Some(&hard(None)), false, false, &b);
        assert!(p.start(now, 1, &s));
        assert!(!p.start(now, 1, &s), "one attempt per peer at a time");
        run(&mut p, now, 20);
        let later = now + Duration::from_secs(21);
        assert!(!p.start(later, 1, &s), "backing off");
        assert!(p.start(later + b.first_backoff, 1, &s));
        // The second failure waits twice as long.
        let t = later + b.first_backoff;
        run(&mut p, t, 20);
        assert!(!p.start(t + Duration::from_secs(21) + b.first_backoff, 1, &s));
        assert!(p.start(t + Duration::from_secs(21) + 2 * b.first_backoff, 1, &s));
        assert_eq!(p.status(1).unwrap().attempts, 3);
    }

    #[test]
    fn a_newer_record_or_a_success_clears_the_backoff() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [7; 32]);
        let s = strategy(Some(&easy()), Some(&hard(None)), false, false, &b);
        let secs = Duration::from_secs;
        // Two failures: the second waits twice the first backoff.
        assert!(p.start(now, 1, &s));
        run(&mut p, now, 20);
        let t1 = now + secs(20) + b.first_backoff;
        assert!(p.start(t1, 1, &s));
        run(&mut p, t1, 20);
        assert!(!p.start(t1 + secs(20) + b.first_backoff, 1, &s));
        // The peer published a newer record (it restarted): start at once.
        let t2 = t1 + secs(21);
        assert!(!p.start(t2, 1, &s));
        assert!(p.reset_backoff(t2, 1));
        assert!(p.start(t2, 1, &s));
        // Another newer record soon after buys nothing more.
        run(&mut p, t2, 20);
        assert!(
            !p.reset_backoff(t2 + secs(25), 1),
            "one reset per max_backoff"
        );
        assert!(!p.start(t2 + secs(25), 1, &s));
        // A success resets the exponent: the next failure waits only the
        // first backoff again.
        let t3 = t2 + secs(25);
        p.connected(1);
        assert!(p.start(t3, 1, &s));
        run(&mut p, t3, 20);
        assert!(!p.start(t3 + secs(21), 1, &s));
        assert!(p.start(t3 + secs(20) + b.first_backoff, 1, &s));
    }

    #[test]
    fn all_peers_together_stay_within_the_global_rate() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [3; 32]);
        let s = strategy(Some(&easy()), Some(&hard(None)), false, false, &b);
        for peer in 0..4 {
            assert!(p.start(now, peer, &s));
        }
        let sent = probes(&run(&mut p, now, 12));
        let from = b.easy_delay + Duration::from_secs(1);
        let in_second = sent
            .iter()
            .filter(|(t, _)| *t >= from && *t < from + Duration::from_secs(1))
            .count();
        assert!(in_second as u32 <= b.global_rate + 1, "{in_second}");
        assert!(
            in_second as u32 >= b.global_rate - 10,
            "the budget is used: {in_second}"
        );
        // Shared fairly: no peer starves.
        let peers_seen = p.attempts.iter().filter(|(a, _)| a.sent > 100).count();
        assert_eq!(peers_seen, 4);
    }

    #[test]
    fn hard_side_opens_a_pool_and_resends_until_its_window_ends() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [4; 32]);
        let targets = vec![addr("198.18.1.1:4000")];
        let s = strategy(Some(&hard(None)), Some(&easy()), false, false, &b);
        assert!(p.start(now, 9, &s));
        let actions = run(&mut p, now, 31);
        assert_eq!(
            actions[0].1,
            Action::OpenPool {
                peer: 9,
                sockets: b.sockets,
                targets
            }
        );
        let sends: Vec<_> = actions
            .iter()
            .filter_map(|(t, a)| match a {
                Action::PoolSend { socket, .. } => Some((*t, *socket)),
                _ => None,
            })
            .collect();
        // Three rounds (0 s, 10 s, 20 s), each every socket once, in order.
        assert_eq!(sends.len(), 3 * b.sockets);
        for (round, chunk) in sends.chunks(b.sockets).enumerate() {
            assert!(chunk.iter().map(|(_, s)| *s).eq(0..b.sockets));
            let start = b.hard_resend * round as u32;
            assert!(
                chunk[0].0 >= start && chunk[0].0 < start + Duration::from_millis(20),
                "{:?}",
                chunk[0].0
            );
        }
        let tail: Vec<_> = actions
            .iter()
            .rev()
            .take(2)
            .map(|(_, a)| a.clone())
            .collect();
        assert_eq!(
            tail,
            vec![
                Action::Finished {
                    peer: 9,
                    outcome: Outcome::Spent,
                    probes: 3 * b.sockets as u32
                },
                Action::ClosePool { peer: 9 },
            ]
        );
    }

    #[test]
    fn hard_attempts_together_hold_at_most_max_sockets() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [6; 32]);
        let s = strategy(Some(&hard(None)), Some(&easy()), false, false, &b);
        let fit = b.max_sockets / b.sockets;
        for peer in 0..fit as u8 {
            assert!(p.start(now, peer, &s), "peer {peer}");
        }
        assert!(!p.start(now, 200, &s), "over the socket limit");
        p.connected(0);
        assert!(p.start(now, 200, &s), "room again");
    }

    #[test]
    fn connecting_ends_the_attempt_and_its_pool() {
        let now = Instant::now();
        let b = Budget::default();
        let mut p = Puncher::new(b, now, [5; 32]);
        let s = strategy(Some(&hard(None)), Some(&easy()), false, false, &b);
        assert!(p.start(now, 2, &s));
        run(&mut p, now, 1);
        p.connected(2);
        assert_eq!(p.poll_action(), Some(Action::ClosePool { peer: 2 }));
        assert!(matches!(
            p.poll_action(),
            Some(Action::Finished {
                outcome: Outcome::Connected,
                ..
            })
        ));
        assert_eq!(p.poll_timeout(), None);
        // A later loss of the path may start again at once.
        assert!(p.start(now + Duration::from_secs(2), 2, &s));
    }

    /// The birthday bound in practice: against a random allocator that gave
    /// the hard side's sockets random ports, the easy side's probes within
    /// one attempt's budget find one of them for (nearly) every seed.
    #[test]
    fn random_probes_find_a_random_pool_within_the_budget() {
        let b = Budget::default();
        let s = strategy(Some(&easy()), Some(&hard(None)), false, false, &b);
        let mut found = 0;
        let seeds = 200u8;
        for seed in 0..seeds {
            let mut nat = StdRng::from_seed([seed.wrapping_add(100); 32]);
            let pool: HashSet<u16> = (0..b.sockets)
                .map(|_| nat.random_range(FIRST_DYNAMIC_PORT..=u16::MAX))
                .collect();
            let now = Instant::now();
            let mut p = Puncher::new(b, now, [seed; 32]);
            p.start(now, 0, &s);
            let sent = probes(&run(&mut p, now, 16));
            if sent.iter().any(|(_, d)| pool.contains(&d.port())) {
                found += 1;
            }
        }
        assert!(
            found >= seeds - 2,
            "found the pool in {found} of {seeds} attempts"
        );
    }

    /// A sequential allocator (step 1, two ports taken by other hosts in
    /// between) is hit within the first probes.
    #[test]
    fn prediction_hits_a_sequential_allocator_at_once() {
        let b = Budget::default();
        let s = strategy(Some(&easy()), Some(&hard(Some(1))), false, false, &b);
        let pool: HashSet<u16> = (30003..30003 + b.sockets as u16).collect();
        let now = Instant::now();
        let mut p = Puncher::new(b, now, [9; 32]);
        p.start(now, 0, &s);
        let sent = probes(&run(&mut p, now, 7));
        let first = sent.iter().position(|(_, d)| pool.contains(&d.port()));
        assert_eq!(first, Some(2));
    }
}
