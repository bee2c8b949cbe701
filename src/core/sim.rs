//! A deterministic network simulator for [`Node`]s: a virtual clock, a
//! datagram network with latency, jitter (so reordering) and loss, and TUN
//! devices that record what they were handed. Time advances only to the
//! next delivery or the next node deadline (quinn-proto's `Pair` idea).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::identity::{NetworkSecret, SecretKey};

pub struct SimNode {
    /// Both halves: every packet crosses the data/control seam.
    pub node: super::split::Split,
    pub addr: SocketAddr,
    pub overlay: Ipv4Addr,
    /// Packets written to this node's TUN.
    pub tun: Vec<Vec<u8>>,
    pub events: Vec<Event>,
    /// Records peers pushed to this node.
    pub records: Vec<PeerRecord>,
    pub drops: Vec<DropReason>,
    pub up: bool,
    /// The network secret (psk) it was started with; zeros by default.
    psk: NetworkSecret,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

pub struct Sim {
    pub now: Instant,
    pub nodes: Vec<SimNode>,
    net: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    pub latency: Duration,
    /// One-way delay between two 192.168.x.y addresses in the same /24 (a
    /// LAN), if set.
    pub lan_latency: Option<Duration>,
    /// Further addresses of nodes (e.g. a LAN address beside the public one).
    aliases: Vec<(SocketAddr, usize)>,
    /// Addresses added by [`add_pool_port`](Self::add_pool_port), and the
    /// senders each has heard from: (node, port, remote).
    pool_ports: Vec<(usize, SocketAddr, Option<SocketAddr>)>,
    blackholes: Vec<SocketAddr>,
    /// Address pairs that cannot reach each other (either way).
    blocked: Vec<(SocketAddr, SocketAddr)>,
    /// Addresses behind a port-restricted NAT: inbound datagrams pass
    /// only from a remote the address has sent to (what makes punching a
    /// race of timing), with the (inside, remote) pairs opened so far.
    restricted: Vec<SocketAddr>,
    opened: Vec<(SocketAddr, SocketAddr)>,
    pub jitter: Duration,
    /// Probability each datagram is lost, 0.0..=1.0.
    pub loss: f64,
    rng: StdRng,
    /// Every datagram put on the wire, for tests that replay or inspect.
    pub wire_log: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    unix0: Duration,
    t0: Instant,
}

pub fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

pub fn underlay(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 51871)
}

pub fn overlay(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, 0, n)
}

/// A minimal IPv4 packet (UDP protocol number, the payload as it is: the
/// core does not look past addresses and length).
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    crate::wire::ipv4_packet(src, dst, 17, payload)
}

/// Peer entry for node `n` as seen by others.
pub fn peer_cfg(n: u8, with_endpoint: bool) -> PeerConfig {
    PeerConfig {
        name: format!("n{n}"),
        public_key: key(n).public(),
        allowed_ips: vec![format!("{}/32", overlay(n)).parse().unwrap()],
        endpoint: with_endpoint.then(|| underlay(n)),
        keepalive: None,
    }
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            nodes: Vec::new(),
            net: BinaryHeap::new(),
            seq: 0,
            latency: Duration::from_millis(10),
            lan_latency: None,
            aliases: Vec::new(),
            pool_ports: Vec::new(),
            blackholes: Vec::new(),
            blocked: Vec::new(),
            restricted: Vec::new(),
            opened: Vec::new(),
            jitter: Duration::ZERO,
            loss: 0.0,
            rng: StdRng::seed_from_u64(seed),
            wire_log: Vec::new(),
            unix0: Duration::from_secs(1_800_000_000),
        }
    }

    /// Add node number `n` (key n, underlay 198.18.0.n, overlay 100.96.0.n).
    pub fn add(&mut self, n: u8, peers: Vec<PeerConfig>) -> usize {
        self.add_with_relay(n, peers, RelayConfig::default())
    }

    /// [`add`](Self::add) with a `[relay]` section.
    pub fn add_with_relay(&mut self, n: u8, peers: Vec<PeerConfig>, relay: RelayConfig) -> usize {
        self.add_node(n, peers, relay, NetworkSecret::default())
    }

    /// [`add`](Self::add) with a network secret: the psk of its handshakes.
    pub fn add_with_secret(&mut self, n: u8, peers: Vec<PeerConfig>, psk: NetworkSecret) -> usize {
        self.add_node(n, peers, RelayConfig::default(), psk)
    }

    fn add_node(
        &mut self,
        n: u8,
        peers: Vec<PeerConfig>,
        relay: RelayConfig,
        psk: NetworkSecret,
    ) -> usize {
        let node = self.make_node(n, peers, relay, psk.clone());
        self.nodes.push(SimNode {
            node: super::split::Split::new(node),
            addr: underlay(n),
            overlay: overlay(n),
            tun: Vec::new(),
            events: Vec::new(),
            records: Vec::new(),
            drops: Vec::new(),
            up: true,
            psk,
        });
        self.nodes.len() - 1
    }

    fn make_node(
        &mut self,
        n: u8,
        peers: Vec<PeerConfig>,
        relay: RelayConfig,
        psk: NetworkSecret,
    ) -> Node {
        let cfg = NodeConfig {
            secret: key(n),
            psk,
            peers,
            relay,
        };
        // The wall clock advances with virtual time.
        let unix = self.unix0 + self.now.saturating_duration_since(self.t0);
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        Node::new(cfg, self.now, unix, seed)
    }

    /// Replace node `i` with a fresh process (same key and address), as a
    /// daemon restart does.
    pub fn restart(&mut self, i: usize, n: u8, peers: Vec<PeerConfig>) {
        let psk = self.nodes[i].psk.clone();
        let node = self.make_node(n, peers, RelayConfig::default(), psk);
        let s = &mut self.nodes[i];
        s.node = super::split::Split::new(node);
        s.up = true;
    }

    /// Reload node `i` (number `n`) with this peer set and `[relay]`, as
    /// the daemon does on `kith reload`, then put what it queued on the wire.
    pub fn reconfigure(
        &mut self,
        i: usize,
        n: u8,
        peers: Vec<PeerConfig>,
        relay: RelayConfig,
    ) -> Result<Reconfigured, ReconfigureError> {
        let cfg = NodeConfig {
            secret: key(n),
            psk: Default::default(),
            peers,
            relay,
        };
        let now = self.now;
        let r = self.nodes[i].node.reconfigure(now, cfg);
        self.flush(i);
        r
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[i].node.start(now);
            self.flush(i);
        }
    }

    pub fn start_node(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].node.start(now);
        self.flush(i);
    }

    /// Call into node `i` directly (e.g. as discovery would), then put
    /// what it queued on the wire.
    pub fn act(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant)) {
        let now = self.now;
        f(&mut self.nodes[i].node, now);
        self.flush(i);
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr).or_else(|| {
            self.aliases
                .iter()
                .find(|(a, _)| *a == addr)
                .map(|&(_, i)| i)
        })
    }

    /// Drop everything sent to `addr` from now on.
    pub fn blackhole(&mut self, addr: SocketAddr) {
        self.blackholes.push(addr);
    }

    /// Nothing passes between `a` and `b` (either way) until [`unblock`](Self::unblock).
    pub fn block(&mut self, a: SocketAddr, b: SocketAddr) {
        self.blocked.push((a, b));
    }

    pub fn unblock(&mut self, a: SocketAddr, b: SocketAddr) {
        self.blocked.retain(|&(x, y)| (x, y) != (a, b));
    }

    /// Put `addr` behind a port-restricted NAT (see `restricted`).
    pub fn restrict(&mut self, addr: SocketAddr) {
        self.restricted.push(addr);
    }

    /// Give node `i` a second address (it answers there too).
    pub fn add_alias(&mut self, i: usize, addr: SocketAddr) {
        self.aliases.push((addr, i));
    }

    /// Give node `i` an address it answers from once someone wrote to it
    /// there: what a hard-NAT pool socket's mapping looks like from outside
    /// (the shell routes a peer's traffic through the pool socket its answer
    /// came in on).
    pub fn add_pool_port(&mut self, i: usize, addr: SocketAddr) {
        self.aliases.push((addr, i));
        self.pool_ports.push((i, addr, None));
    }

    /// The address node `i` sends from towards `dst`: the one in the same
    /// /24 if it has one (as the kernel's routing would pick), else a pool
    /// port `dst` wrote to, else its main one.
    fn source_for(&self, i: usize, dst: SocketAddr) -> SocketAddr {
        let lan = self
            .aliases
            .iter()
            .find(|(a, n)| *n == i && same_lan(*a, dst));
        let pool = || {
            self.pool_ports
                .iter()
                .find(|&&(n, _, heard)| n == i && heard == Some(dst))
        };
        match (lan, pool()) {
            (Some(&(a, _)), _) | (None, Some(&(_, a, _))) => a,
            (None, None) => self.nodes[i].addr,
        }
    }

    /// Put a datagram on the simulated wire, subject to loss and latency.
    pub fn send_raw(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.wire_log.push((from, to, bytes.clone()));
        let blocked = self
            .blocked
            .iter()
            .any(|&(a, b)| (a, b) == (from, to) || (b, a) == (from, to));
        if self.restricted.contains(&from) && !self.opened.contains(&(from, to)) {
            self.opened.push((from, to));
        }
        if blocked
            || self.blackholes.contains(&to)
            || (self.loss > 0.0 && self.rng.random_bool(self.loss))
        {
            return;
        }
        let jitter = if self.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(self.rng.random_range(0..self.jitter.as_micros() as u64))
        };
        self.seq += 1;
        self.net.push(Reverse(InFlight {
            at: self.now
                + match self.lan_latency {
                    Some(lan) if same_lan(from, to) => lan,
                    _ => self.latency,
                }
                + jitter,
            seq: self.seq,
            from,
            to,
            bytes,
        }));
    }

    /// Drain node `i`'s transmits, events and records.
    fn flush(&mut self, i: usize) {
        // Whatever the call changed reaches the data half before the next packet.
        self.nodes[i].node.publish();
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            let from = self.source_for(i, t.dst);
            self.send_raw(from, t.dst, t.payload);
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            self.nodes[i].events.push(e);
        }
        while let Some(r) = self.nodes[i].node.poll_peer_record() {
            self.nodes[i].records.push(r);
        }
    }

    /// An application on node `i` sends `payload` to node `dst`'s overlay address.
    pub fn send_ip(&mut self, i: usize, dst: Ipv4Addr, payload: &[u8]) -> TunOutcome {
        let pkt = ip_packet(self.nodes[i].overlay, dst, payload);
        self.send_packet(i, &pkt)
    }

    pub fn send_packet(&mut self, i: usize, pkt: &[u8]) -> TunOutcome {
        let mut out = vec![0u8; pkt.len() + OVERHEAD];
        let now = self.now;
        let r = self.nodes[i].node.handle_tun(now, pkt, &mut out);
        match r {
            TunOutcome::Send { dst, len } => {
                let from = self.source_for(i, dst);
                out.truncate(len);
                self.send_raw(from, dst, out);
            }
            TunOutcome::Reply { len } => self.nodes[i].tun.push(out[..len].to_vec()),
            TunOutcome::Queued | TunOutcome::Dropped(_) => {}
        }
        self.flush(i);
        r
    }

    /// Deliver one datagram to the node at `to` right now.
    pub fn deliver(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Option<UdpOutcome> {
        let i = self.index_of(to)?;
        if !self.nodes[i].up {
            return None;
        }
        for port in self.pool_ports.iter_mut().filter(|p| p.1 == to) {
            port.2 = Some(from);
        }
        let mut out = vec![0u8; bytes.len() + OVERHEAD];
        let now = self.now;
        let r = self.nodes[i].node.handle_udp(now, from, bytes, &mut out);
        match r {
            UdpOutcome::WriteTun { len } => self.nodes[i].tun.push(out[..len].to_vec()),
            UdpOutcome::Forward { dst, len } => {
                let src = self.source_for(i, dst);
                self.send_raw(src, dst, out[..len].to_vec());
            }
            UdpOutcome::Dropped(d) => self.nodes[i].drops.push(d),
            _ => {}
        }
        self.flush(i);
        Some(r)
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let net = self.net.peek().map(|Reverse(f)| f.at);
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.node.poll_timeout())
            .min();
        match (net, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advance to the next event if it is before `until`; false when idle.
    pub fn step(&mut self, until: Instant) -> bool {
        let Some(at) = self.next_wakeup().filter(|&t| t <= until) else {
            return false;
        };
        self.now = self.now.max(at);
        while self.net.peek().is_some_and(|Reverse(f)| f.at <= self.now) {
            let Some(Reverse(f)) = self.net.pop() else {
                break;
            };
            // A restricted NAT filters when the datagram arrives: its
            // inside must have sent to the remote by then.
            if self.restricted.contains(&f.to) && !self.opened.contains(&(f.to, f.from)) {
                continue;
            }
            self.deliver(f.from, f.to, &f.bytes);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up
                && self.nodes[i]
                    .node
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
            {
                let now = self.now;
                self.nodes[i].node.handle_timeout(now);
                self.flush(i);
            }
        }
        true
    }

    /// Run the simulation for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    /// What node `i`'s data half does for `peer` (nothing, if it never heard of it).
    pub fn data_view(&self, i: usize, peer: PeerId) -> super::data::PeerView {
        self.nodes[i]
            .node
            .data
            .view(peer)
            .cloned()
            .unwrap_or_default()
    }

    pub fn connected(&self, i: usize) -> usize {
        self.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Connected { .. }))
            .count()
    }
}

/// Two home-LAN (192.168.0.0/16) addresses in the same /24.
fn same_lan(a: SocketAddr, b: SocketAddr) -> bool {
    match (a.ip(), b.ip()) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            x.octets()[..2] == [192, 168] && x.octets()[..3] == y.octets()[..3]
        }
        _ => false,
    }
}
