//! End to end, issue 3: peers that know only each other's public key meet
//! through a private Mainline DHT of 8 `kith dht-node`s on the emulated
//! internet (198.18.0.0/15), in network namespaces, with the real binary.
//!
//! Needs root; without it these tests fail saying so. Each test has its own
//! lab (unique prefix), so they run in parallel. Every wait is a poll with a
//! generous deadline; the times are printed (run with `--nocapture`).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kith::lab::topology::{A_OVERLAY, B_OVERLAY};
use kith::lab::{KithNode, transfer};

/// Upper bound for a DHT rendezvous (daemon start → ping); it takes
/// seconds, the margin is for a loaded 2-core machine.
const RENDEZVOUS: Duration = Duration::from_secs(60);
const PING_INTERVAL: Duration = Duration::from_millis(100);

/// `ip:port` a peer's daemon listens on at `ip`.
fn listen_addr(node: &KithNode, ip: std::net::Ipv4Addr) -> String {
    SocketAddr::new(IpAddr::V4(ip), node.spec().listen_port).to_string()
}

#[test]
fn hosts_without_endpoints_meet_through_the_dht() {
    let lab = common::lab();
    let mut pair = common::dht_pair(&lab);
    let first = pair
        .wait_tunnel(RENDEZVOUS)
        .unwrap_or_else(|e| panic!("no tunnel through the DHT: {e}"));
    eprintln!("DHT rendezvous: daemon start → first ping reply after {first:?}");

    let ab = pair
        .a
        .ping(IpAddr::V4(B_OVERLAY), 5, PING_INTERVAL)
        .unwrap();
    let ba = pair
        .b
        .ping(IpAddr::V4(A_OVERLAY), 5, PING_INTERVAL)
        .unwrap();
    assert!(ab.all_received(), "a → b over the overlay: {ab:?}");
    assert!(ba.all_received(), "b → a over the overlay: {ba:?}");
    let report = transfer::tcp(
        &pair.b,
        SocketAddr::new(IpAddr::V4(B_OVERLAY), 5001),
        &pair.a,
        10 * 1024 * 1024,
    )
    .unwrap();
    assert!(report.intact(), "10 MiB a → b arrived damaged: {report:?}");

    // Whoever found the other in the DHT says so in its log and its status;
    // the other side may instead have learnt the address from the handshake.
    let mut resolved = Vec::new();
    for (node, peer, peer_ip) in [
        (&pair.node_a, "b", pair.b_up.addr()),
        (&pair.node_b, "a", pair.a_up.addr()),
    ] {
        let me = node.host().name().to_owned();
        let status = node.peer_status(peer).unwrap();
        let want = listen_addr(node, peer_ip);
        eprintln!("{me}'s view of {peer}: {status:?}");
        assert_eq!(status.path, "direct", "{me} → {peer}");
        assert_eq!(
            status.endpoint.as_deref(),
            Some(want.as_str()),
            "{me} → {peer}"
        );
        if node.log().contains("new candidates from the DHT") {
            assert_eq!(
                status.candidates_source.as_deref(),
                Some("dht"),
                "{me} logged candidates from the DHT, its status must say so"
            );
            assert!(status.candidates.contains(&want), "{me}: {status:?}");
            resolved.push(me);
        } else {
            assert_ne!(status.candidates_source.as_deref(), Some("dht"), "{me}");
        }
    }
    eprintln!("resolved through the DHT: {resolved:?}");
    assert!(
        !resolved.is_empty(),
        "neither side resolved the other in the DHT"
    );
}
