//! What the node checks share: nodes with fixed keys, addresses, seeds
//! and wall clock, so a world (and every message in it) comes out the same
//! on every run, and the checked-in seeds that carry its messages stay
//! valid.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kith::core::{Node, NodeConfig, PeerConfig, RelayConfig, Transmit};
use kith::identity::SecretKey;
use kith::relay::Limits;

/// The peer that talks to the node under test.
pub const A: u8 = 1;
/// The node under test.
pub const B: u8 = 2;
/// A stranger: it knows B's key, B does not list it.
pub const C: u8 = 3;
/// The wall clock every world starts at.
pub const UNIX: Duration = Duration::from_secs(1_800_000_000);

pub fn underlay(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 51871)
}

pub fn overlay(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, 0, n)
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// Node `us` with `peers` (each at its underlay address), its wall clock
/// at `unix` when `now`, its randomness from `seed`. Every node serves as
/// a relay, so relay admission is on the path too.
pub fn node(us: u8, peers: &[u8], now: Instant, unix: Duration, seed: u8) -> Node {
    let peers = peers
        .iter()
        .map(|&n| PeerConfig {
            name: format!("n{n}"),
            public_key: key(n).public(),
            allowed_ips: vec![format!("{}/32", overlay(n)).parse().expect("valid net")],
            endpoint: Some(underlay(n)),
            keepalive: None,
        })
        .collect();
    let cfg = NodeConfig {
        secret: key(us),
        psk: Default::default(),
        peers,
        relay: RelayConfig {
            serve: Some(Limits::default()),
            via: Vec::new(),
        },
    };
    Node::new(cfg, now, unix, [seed; 32])
}

/// A minimal IPv4 packet from `src` to `dst`.
pub fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    kith::wire::ipv4_packet(src, dst, 17, payload)
}

/// Carry every queued datagram between A (`a`) and B (`b`) until both
/// are quiet; returns what A sent, in order.
pub fn pump(a: &mut Node, b: &mut Node, now: Instant) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; 65_535];
    let mut sent = Vec::new();
    for _ in 0..16 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            assert_eq!(t.dst, underlay(B));
            b.handle_udp(now, underlay(A), &t.payload, &mut out);
            sent.push(t.payload);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            assert_eq!(t.dst, underlay(A));
            a.handle_udp(now, underlay(B), &t.payload, &mut out);
            moved = true;
        }
        if !moved {
            return sent;
        }
    }
    panic!("handshake did not settle");
}

/// Everything `node` queued to send, in order.
pub fn transmits(node: &mut Node) -> Vec<Transmit> {
    std::iter::from_fn(|| node.poll_transmit()).collect()
}

/// XOR `mask` over `genuine`; mask bytes past its end are appended.
pub fn masked(genuine: &[u8], mask: &[u8]) -> Vec<u8> {
    let mut d = genuine.to_vec();
    for (i, &m) in mask.iter().enumerate() {
        match d.get_mut(i) {
            Some(b) => *b ^= m,
            None => d.push(m),
        }
    }
    d
}
