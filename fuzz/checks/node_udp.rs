//! `kith::core::Node::handle_udp` and the data half's
//! `kith::core::DataPlane::handle_udp` on arbitrary datagrams.
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
//! time is never written (replay). The data half, loaded with the views B
//! publishes, writes exactly the same (and only from A's address: from
//! anywhere else it hands the datagram to the control half), never calls a
//! garbage datagram an opened control message, and never writes a replay.

use std::time::{Duration, Instant};

use kith::core::{DataPlane, DataUdp, Node, TunOutcome, UdpOutcome};

use super::common::{A, B, UNIX, ip_packet, masked, node, overlay, pump, underlay};

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
    let mut a = node(A, &[B], now, UNIX, A);
    let mut b = node(B, &[A], now, UNIX, B);
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

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut w = world();
    let mut datagram = if mode & 1 == 1 {
        masked(&w.genuine, rest)
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
    data_half(&datagram, from);
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
}

/// The same datagram through B's data half, in a world of its own (the
/// halves share sessions, so one would see the other's replay marks).
fn data_half(datagram: &[u8], from: std::net::SocketAddr) {
    let mut w = world();
    let mut dp = DataPlane::default();
    while let Some(u) = w.b.poll_data_update() {
        dp.apply(u);
    }
    let mut out = vec![0u8; datagram.len().max(64)];
    let outcome = dp.handle_udp(w.now, from, datagram, &mut out);
    if let DataUdp::WriteTun { len } | DataUdp::Opened { len, .. } = outcome {
        assert!(len <= out.len(), "{len} bytes from a {} byte buffer", out.len());
    }
    if datagram == w.genuine && from == underlay(A) {
        assert_eq!(outcome, DataUdp::WriteTun { len: w.inner.len() });
        assert_eq!(&out[..w.inner.len()], &w.inner[..]);
    } else {
        assert!(
            !matches!(outcome, DataUdp::WriteTun { .. } | DataUdp::Opened { .. }),
            "the data half took an unauthenticated datagram: {outcome:?} {datagram:02x?}"
        );
    }
    let again = dp.handle_udp(w.now, from, datagram, &mut out);
    assert!(
        !matches!(again, DataUdp::WriteTun { .. } | DataUdp::Opened { .. }),
        "replayed through the data half: {again:?}"
    );
}
