//! `kith::core::Node::handle_udp` on arbitrary datagrams.
//!
//! Two nodes, A and B, each with the other as its one peer, complete a real
//! handshake; A then seals one more inner packet (`genuine`) that B has not
//! seen. The fuzz input is a datagram for B, either raw or as an XOR mask
//! over `genuine` (so the fuzzer explores the decrypt path with valid
//! indexes and counters):
//!
//! ```text
//! byte 0: bit 0  1 = mask over `genuine`, 0 = raw datagram
//!         bit 1  1 = from A's address, 0 = from an unknown address (roaming)
//!         bits 2..8  bytes to cut from the end of the datagram
//! rest:   the datagram, or the mask (longer than `genuine` = bytes appended)
//! ```
//!
//! Invariant: no panic; `WriteTun { len }` has `len <= out.len()` where `out`
//! is `datagram.len().max(64)` bytes, and happens if and only if the
//! datagram is exactly `genuine` (nothing unauthenticated reaches the TUN),
//! with `out[..len]` exactly A's inner packet; the same datagram a second
//! time is never written (replay).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kith::core::{Node, NodeConfig, PeerConfig, RelayConfig, TunOutcome, UdpOutcome};
use kith::identity::SecretKey;
use kith::relay::Limits;
use libfuzzer_sys::fuzz_target;

const A: u8 = 1;
const B: u8 = 2;

fn underlay(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 51871)
}

fn overlay(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 96, 0, n)
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn node(us: u8, them: u8, now: Instant) -> Node {
    let peer = PeerConfig {
        name: format!("n{them}"),
        public_key: key(them).public(),
        allowed_ips: vec![format!("{}/32", overlay(them)).parse().expect("valid net")],
        endpoint: Some(underlay(them)),
        keepalive: None,
    };
    let cfg = NodeConfig {
        secret: key(us),
        psk: Default::default(),
        peers: vec![peer],
        // Both serve as relays, so relay admission is on the path too.
        relay: RelayConfig {
            serve: Some(Limits::default()),
            via: Vec::new(),
        },
    };
    Node::new(cfg, now, Duration::from_secs(1_800_000_000), [us; 32])
}

/// A minimal IPv4 packet from `src` to `dst`.
fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(payload);
    p
}

/// Carry every queued datagram between the two nodes until both are quiet.
fn pump(a: &mut Node, b: &mut Node, now: Instant) {
    let mut out = vec![0u8; 65_535];
    for _ in 0..16 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            assert_eq!(t.dst, underlay(B));
            b.handle_udp(now, underlay(A), &t.payload, &mut out);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            assert_eq!(t.dst, underlay(A));
            a.handle_udp(now, underlay(B), &t.payload, &mut out);
            moved = true;
        }
        if !moved {
            return;
        }
    }
    panic!("handshake did not settle");
}

struct World {
    b: Node,
    now: Instant,
    /// A data message from A that B has not received yet.
    genuine: Vec<u8>,
    /// The inner packet sealed in `genuine`.
    inner: Vec<u8>,
}

fn world() -> World {
    let now = Instant::now();
    let mut a = node(A, B, now);
    let mut b = node(B, A, now);
    let mut out = vec![0u8; 2048];
    let first = ip_packet(overlay(A), overlay(B), b"first");
    assert_eq!(a.handle_tun(now, &first, &mut out), TunOutcome::Queued);
    pump(&mut a, &mut b, now);
    let inner = ip_packet(overlay(A), overlay(B), b"fuzz me");
    let TunOutcome::Send { dst, len } = a.handle_tun(now, &inner, &mut out) else {
        panic!("no session after the handshake");
    };
    assert_eq!(dst, underlay(B));
    World {
        b,
        now,
        genuine: out[..len].to_vec(),
        inner,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut w = world();
    let mut datagram = if mode & 1 == 1 {
        let mut d = w.genuine.clone();
        for (i, &m) in rest.iter().enumerate() {
            match d.get_mut(i) {
                Some(b) => *b ^= m,
                None => d.push(m),
            }
        }
        d
    } else {
        rest.to_vec()
    };
    datagram.truncate(datagram.len().saturating_sub(usize::from(mode >> 2)));
    let from = if mode & 2 == 2 {
        underlay(A)
    } else {
        underlay(77)
    };

    let mut out = vec![0u8; datagram.len().max(64)];
    let outcome = w.b.handle_udp(w.now, from, &datagram, &mut out);
    if let UdpOutcome::WriteTun { len } = outcome {
        assert!(
            len <= out.len(),
            "WriteTun of {len} bytes from a {} byte buffer",
            out.len()
        );
    }
    if datagram == w.genuine {
        assert_eq!(outcome, UdpOutcome::WriteTun { len: w.inner.len() });
        assert_eq!(&out[..w.inner.len()], &w.inner[..]);
    } else if let UdpOutcome::WriteTun { len } = outcome {
        panic!("unauthenticated datagram written to TUN ({len} bytes): {datagram:02x?}");
    }

    // Replay: the same bytes again never reach the TUN.
    let again = w.b.handle_udp(w.now, from, &datagram, &mut out);
    assert!(
        !matches!(again, UdpOutcome::WriteTun { .. }),
        "replayed: {again:?}"
    );

    // Whatever the datagram did, the timers and queues still work.
    w.b.handle_timeout(w.now + Duration::from_secs(1));
    while w.b.poll_transmit().is_some() {}
    while w.b.poll_event().is_some() {}
});
