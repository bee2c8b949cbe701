//! Simulator tests of the core: two or three nodes on a virtual clock.

use std::time::Duration;

use super::sim::*;
use super::*;

/// Two nodes that know each other's endpoints.
pub(super) fn pair(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.add(1, vec![peer_cfg(2, true)]);
    sim.add(2, vec![peer_cfg(1, true)]);
    sim
}

pub(super) fn delivered(sim: &Sim, i: usize, marker: &[u8]) -> usize {
    sim.nodes[i]
        .tun
        .iter()
        .filter(|p| p.windows(marker.len()).any(|w| w == marker))
        .count()
}

#[test]
fn handshake_then_data_both_ways() {
    let mut sim = pair(1);
    sim.start_node(0);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.connected(0), 1, "initiator connected");
    assert_eq!(
        sim.connected(1),
        1,
        "responder connected after key confirmation"
    );
    assert!(matches!(
        sim.send_ip(0, overlay(2), b"hello b"),
        TunOutcome::Send { .. }
    ));
    assert!(matches!(
        sim.send_ip(1, overlay(1), b"hello a"),
        TunOutcome::Send { .. }
    ));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"hello b"), 1);
    assert_eq!(delivered(&sim, 0, b"hello a"), 1);
    // The packet arrives exactly as sent (padding stripped).
    assert_eq!(
        sim.nodes[1].tun[0],
        ip_packet(overlay(1), overlay(2), b"hello b")
    );
}

#[test]
fn a_responder_that_knew_no_address_connects_on_the_first_data() {
    let mut sim = Sim::new(42);
    sim.add(1, vec![peer_cfg(2, true)]);
    sim.add(2, vec![peer_cfg(1, false)]);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.connected(1), 1, "{:?}", sim.nodes[1].events);
    let st = sim.nodes[1].node.peer_status(PeerId(0)).unwrap();
    assert_eq!(st.endpoint, Some(underlay(1)), "learned from a's data");
    sim.send_ip(1, overlay(1), b"back");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 0, b"back"), 1);
}

#[test]
fn first_packet_queued_until_handshake() {
    let mut sim = pair(2);
    assert_eq!(sim.send_ip(0, overlay(2), b"early"), TunOutcome::Queued);
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"early"), 1);
}

#[test]
fn rekey_while_traffic_flows() {
    let mut sim = pair(3);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    let mut sent = 0;
    // Ten minutes of traffic both ways, one packet each per 100 ms.
    for _ in 0..6000 {
        sim.send_ip(0, overlay(2), b"a->b");
        sim.send_ip(1, overlay(1), b"b->a");
        sent += 1;
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        delivered(&sim, 1, b"a->b"),
        sent,
        "every packet a->b arrived across rekeys"
    );
    assert_eq!(
        delivered(&sim, 0, b"b->a"),
        sent,
        "every packet b->a arrived across rekeys"
    );
    let hs = sim.nodes[0].node.peer_status(PeerId(0)).unwrap().handshakes;
    // 600 s at one rekey per ~120 s, plus the first.
    assert!(
        (5..=8).contains(&hs),
        "expected periodic rekeys, saw {hs} handshakes"
    );
}

#[test]
fn replayed_data_rejected() {
    let mut sim = pair(4);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    let log_start = sim.wire_log.len();
    sim.send_ip(0, overlay(2), b"once");
    sim.run_for(Duration::from_millis(100));
    let (from, to, bytes) = sim.wire_log[log_start..]
        .iter()
        .find(|(_, to, b)| *to == underlay(2) && b[0] == crate::wire::TYPE_DATA)
        .cloned()
        .expect("data packet on the wire");
    assert_eq!(delivered(&sim, 1, b"once"), 1);
    let r = sim.deliver(from, to, &bytes).unwrap();
    assert!(
        matches!(r, UdpOutcome::Dropped(DropReason::Session(session_replay)) if matches!(session_replay, super::session::SessionError::Replay(_))),
        "{r:?}"
    );
    assert_eq!(delivered(&sim, 1, b"once"), 1, "replay reached the TUN");
}

#[test]
fn reordering_within_window_accepted() {
    let mut sim = pair(5);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    // Encrypt 3000 packets without delivering, then deliver newest first.
    let mut packets = Vec::new();
    for i in 0..3000u32 {
        let pkt = ip_packet(overlay(1), overlay(2), &i.to_be_bytes());
        let mut out = vec![0u8; pkt.len() + OVERHEAD];
        let now = sim.now;
        match sim.nodes[0].node.handle_tun(now, &pkt, &mut out) {
            TunOutcome::Send { len, .. } => packets.push(out[..len].to_vec()),
            other => panic!("{other:?}"),
        }
    }
    for p in packets.iter().rev() {
        let r = sim.deliver(underlay(1), underlay(2), p).unwrap();
        assert!(matches!(r, UdpOutcome::WriteTun { .. }), "{r:?}");
    }
    assert_eq!(sim.nodes[1].tun.len(), 3000);
}

#[test]
fn converges_under_20_percent_loss() {
    for seed in 0..10 {
        let mut sim = pair(100 + seed);
        sim.loss = 0.2;
        sim.jitter = Duration::from_millis(5);
        sim.start_all();
        sim.run_for(Duration::from_secs(30));
        assert!(
            sim.connected(0) >= 1 && sim.connected(1) >= 1,
            "seed {seed}: no session under 20% loss"
        );
        let mut sent = 0;
        for _ in 0..200 {
            sim.send_ip(0, overlay(2), b"lossy");
            sent += 1;
            sim.run_for(Duration::from_millis(50));
        }
        sim.run_for(Duration::from_secs(1));
        let got = delivered(&sim, 1, b"lossy");
        // 20% loss on one traversal: expect ~80%, never near zero.
        assert!(
            got * 100 >= sent * 65,
            "seed {seed}: only {got}/{sent} delivered"
        );
    }
}

#[test]
fn simultaneous_initiation_converges_without_flap() {
    let mut sim = pair(6);
    sim.latency = Duration::from_millis(30);
    sim.start_all(); // both initiate at the same instant
    sim.run_for(Duration::from_secs(1));
    for _ in 0..50 {
        sim.send_ip(0, overlay(2), b"x");
        sim.send_ip(1, overlay(1), b"y");
        sim.run_for(Duration::from_millis(200));
    }
    let hs_a = sim.nodes[0].node.peer_status(PeerId(0)).unwrap().handshakes;
    let hs_b = sim.nodes[1].node.peer_status(PeerId(0)).unwrap().handshakes;
    // Keep traffic up for another 90 s (< rekey time): no new handshakes.
    for _ in 0..450 {
        sim.send_ip(0, overlay(2), b"x");
        sim.send_ip(1, overlay(1), b"y");
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered(&sim, 1, b"x"), 500);
    assert_eq!(delivered(&sim, 0, b"y"), 500);
    assert_eq!(
        sim.nodes[0].node.peer_status(PeerId(0)).unwrap().handshakes,
        hs_a,
        "a flapped"
    );
    assert_eq!(
        sim.nodes[1].node.peer_status(PeerId(0)).unwrap().handshakes,
        hs_b,
        "b flapped"
    );
    assert_eq!(sim.connected(0), 1);
    assert_eq!(sim.connected(1), 1);
}

#[test]
fn unknown_initiator_rejected() {
    let mut sim = Sim::new(7);
    sim.add(1, vec![peer_cfg(2, true)]);
    sim.add(2, vec![peer_cfg(1, true)]);
    // Node 3 knows node 2, but node 2 does not list node 3.
    let c = sim.add(3, vec![peer_cfg(2, true)]);
    sim.start_node(c);
    sim.send_ip(c, overlay(2), b"let me in");
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.connected(c), 0);
    assert!(
        sim.nodes[1].drops.contains(&DropReason::UnknownPeer),
        "{:?}",
        sim.nodes[1].drops
    );
    assert!(sim.nodes[1].tun.is_empty());
    // Node 3 also cannot speak for another peer's address.
    assert_eq!(delivered(&sim, 1, b"let me in"), 0);
}

/// The names of the peers node `i` reported connected.
fn connected_to(sim: &Sim, i: usize) -> Vec<String> {
    let node = &sim.nodes[i];
    let mut names: Vec<String> = node
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Connected { peer, .. } => Some(node.node.peer_name(*peer).to_string()),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The network secret is the psk of every handshake. Every node lists
/// every other with its address and keeps sending to all of them: 1 and 2
/// share a secret and connect; 3 has another and 4 none, and neither ever
/// completes a handshake with anyone (message 2 does not decrypt: the
/// responder answered, the initiator refused the answer).
#[test]
fn only_nodes_with_the_same_network_secret_complete_a_handshake() {
    use crate::identity::NetworkSecret;
    let mut sim = Sim::new(11);
    let others = |me: u8| -> Vec<PeerConfig> {
        (1..=4)
            .filter(|n| *n != me)
            .map(|n| peer_cfg(n, true))
            .collect()
    };
    let ours = NetworkSecret([0x5a; 32]);
    sim.add_with_secret(1, others(1), ours.clone());
    sim.add_with_secret(2, others(2), ours);
    sim.add_with_secret(3, others(3), NetworkSecret([0xa5; 32]));
    sim.add(4, others(4));
    sim.start_all();
    for _ in 0..6 {
        for i in 0..4 {
            for n in (1..=4u8).filter(|n| usize::from(*n) != i + 1) {
                sim.send_ip(i, overlay(n), b"same secret?");
            }
        }
        sim.run_for(Duration::from_secs(20));
    }
    assert_eq!(connected_to(&sim, 0), ["n2"], "{:?}", sim.nodes[0].events);
    assert_eq!(connected_to(&sim, 1), ["n1"], "{:?}", sim.nodes[1].events);
    assert!(
        connected_to(&sim, 2).is_empty(),
        "{:?}",
        sim.nodes[2].events
    );
    assert!(
        connected_to(&sim, 3).is_empty(),
        "{:?}",
        sim.nodes[3].events
    );
    assert!(delivered(&sim, 0, b"same secret?") > 0);
    assert!(delivered(&sim, 1, b"same secret?") > 0);
    // Nothing reached a TUN across differing secrets: 1 and 2 hold only
    // each other's packets, 3 and 4 nothing at all.
    for (i, from) in [(0, overlay(2)), (1, overlay(1))] {
        assert!(
            sim.nodes[i].tun.iter().all(|p| p[12..16] == from.octets()),
            "node {} got a packet from a node with another secret",
            i + 1
        );
    }
    assert!(sim.nodes[2].tun.is_empty() && sim.nodes[3].tun.is_empty());
    for i in 0..4 {
        assert!(
            sim.nodes[i].drops.contains(&DropReason::HandshakeFailed),
            "node {}: {:?}",
            i + 1,
            sim.nodes[i].drops
        );
    }
}

#[test]
fn garbage_handshake_dropped_before_dh() {
    let mut sim = pair(8);
    let mut junk = vec![0u8; crate::wire::INITIATION_LEN];
    junk[0] = crate::wire::TYPE_INITIATION;
    let r = sim.deliver(underlay(9), underlay(2), &junk).unwrap();
    assert_eq!(r, UdpOutcome::Dropped(DropReason::BadMac));
}

#[test]
fn peer_restart_replaces_session() {
    let mut sim = pair(9);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    sim.send_ip(0, overlay(2), b"before");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"before"), 1);
    let old_init = sim
        .wire_log
        .iter()
        .find(|(from, _, b)| *from == underlay(1) && b[0] == crate::wire::TYPE_INITIATION)
        .cloned()
        .unwrap();
    let b_sessions_before = sim.nodes[1].node.session_indices(PeerId(0));

    sim.run_for(Duration::from_secs(3));
    sim.restart(0, 1, vec![peer_cfg(2, true)]);
    sim.start_node(0);
    sim.run_for(Duration::from_millis(200));
    // Both directions work on the new session.
    sim.send_ip(0, overlay(2), b"after-a");
    sim.send_ip(1, overlay(1), b"after-b");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(delivered(&sim, 1, b"after-a"), 1);
    assert_eq!(delivered(&sim, 0, b"after-b"), 1);
    assert_ne!(
        sim.nodes[1].node.session_indices(PeerId(0))[0],
        b_sessions_before[0],
        "b still sends on the old session"
    );
    // The old initiation, replayed, is refused before any DH: b processed
    // those very bytes before.
    let r = sim.deliver(old_init.0, old_init.1, &old_init.2).unwrap();
    assert_eq!(r, UdpOutcome::Dropped(DropReason::ReplayedInitiation));

    // A new initiation with an older timestamp (a restarted with its wall
    // clock an hour behind) is refused by the timestamp.
    sim.run_for(Duration::from_secs(3));
    sim.restart(0, 1, vec![peer_cfg(2, true)]);
    let hour_behind = Duration::from_secs(1_000_000);
    sim.act(0, |n, now| n.set_wall_clock(now, hour_behind));
    sim.start_node(0);
    sim.run_for(Duration::from_millis(200));
    assert!(
        sim.nodes[1].drops.contains(&DropReason::StaleInitiation),
        "b drops: {:?}",
        sim.nodes[1].drops
    );
}

#[test]
fn a_wall_clock_stepped_back_does_not_stop_rekeys() {
    let mut sim = pair(43);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    // a's clock is corrected far back (an RTC that was ahead, say); its
    // next initiations must still be newer than those b has seen.
    sim.act(0, |n, now| {
        n.set_wall_clock(now, Duration::from_secs(1_000_000))
    });
    let before = sim.nodes[1].node.session_indices(PeerId(0));
    for _ in 0..300 {
        sim.send_ip(0, overlay(2), b"tick");
        sim.run_for(Duration::from_secs(1));
    }
    assert!(delivered(&sim, 1, b"tick") >= 298);
    assert_ne!(sim.nodes[1].node.session_indices(PeerId(0))[0], before[0]);
    assert!(!sim.nodes[1].drops.contains(&DropReason::StaleInitiation));
}

#[test]
fn a_replayed_initiation_after_a_restart_moves_no_endpoint() {
    let mut sim = pair(41);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    let old_init = sim
        .wire_log
        .iter()
        .find(|(from, _, b)| *from == underlay(1) && b[0] == crate::wire::TYPE_INITIATION)
        .map(|(_, _, b)| b.clone())
        .unwrap();
    // b restarts: it has no timestamp of a's left to refuse the replay with.
    sim.restart(1, 2, vec![peer_cfg(1, true)]);
    sim.start_node(1);
    sim.run_for(Duration::from_millis(500));
    let ep = |sim: &Sim| sim.nodes[1].node.peer_status(PeerId(0)).unwrap().endpoint;
    assert_eq!(ep(&sim), Some(underlay(1)));
    // Someone replays a's captured initiation from elsewhere.
    let elsewhere: std::net::SocketAddr = "198.18.0.66:4444".parse().unwrap();
    let r = sim.deliver(elsewhere, underlay(2), &old_init).unwrap();
    assert_eq!(r, UdpOutcome::Handled, "it is mac1-valid and new to b");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        ep(&sim),
        Some(underlay(1)),
        "b still sends to a, not the replayer"
    );
    sim.send_ip(1, overlay(1), b"still a");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 0, b"still a"), 1);
}

#[test]
fn inner_source_must_be_allowed() {
    let mut sim = pair(10);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    // Node 1 claims to be 100.96.0.77, which is not in its allowed_ips at node 2.
    // Node 1 routes by destination, so it sends it.
    let spoof = ip_packet("100.96.0.77".parse().unwrap(), overlay(2), b"spoofed");
    assert!(matches!(
        sim.send_packet(0, &spoof),
        TunOutcome::Send { .. }
    ));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"spoofed"), 0);
    assert!(sim.nodes[1].drops.contains(&DropReason::SourceNotAllowed));
}

#[test]
fn roaming_moves_endpoint() {
    let mut sim = pair(11);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    // Node 1 moves to a new address (e.g. a new Wi-Fi network).
    let new_addr: std::net::SocketAddr = "198.18.5.5:40000".parse().unwrap();
    sim.nodes[0].addr = new_addr;
    sim.send_ip(0, overlay(2), b"from new place");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"from new place"), 1);
    assert!(
        sim.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, Event::EndpointChanged { to, .. } if *to == new_addr))
    );
    // Replies go to the new address.
    sim.send_ip(1, overlay(1), b"reply");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 0, b"reply"), 1);
}

#[test]
fn keepalive_keeps_quiet_peer_alive_and_gives_up_when_gone() {
    let mut sim = Sim::new(12);
    let mut p2 = peer_cfg(2, true);
    p2.keepalive = Some(Duration::from_secs(25));
    sim.add(1, vec![p2]);
    sim.add(2, vec![peer_cfg(1, true)]);
    sim.start_node(0);
    sim.run_for(Duration::from_secs(100));
    let keepalives = sim
        .wire_log
        .iter()
        .filter(|(f, _, b)| *f == underlay(1) && b[0] == crate::wire::TYPE_DATA && b.len() == 32)
        .count();
    assert!(
        keepalives >= 4,
        "persistent keepalive every 25 s, saw {keepalives}"
    );
    // Node 2 vanishes: node 1 retries with backoff, then gives up.
    sim.nodes[1].up = false;
    sim.send_ip(0, overlay(2), b"anyone?");
    sim.run_for(Duration::from_secs(200));
    let inits = sim
        .wire_log
        .iter()
        .filter(|(f, _, b)| *f == underlay(1) && b[0] == crate::wire::TYPE_INITIATION)
        .count();
    assert!(inits < 40, "handshake retries must back off, saw {inits}");
}

#[test]
fn candidates_are_all_tried_and_the_answering_one_wins() {
    let mut sim = Sim::new(13);
    // Node 1 knows no endpoint for node 2; node 2 knows none for node 1.
    sim.add(1, vec![peer_cfg(2, false)]);
    sim.add(2, vec![peer_cfg(1, false)]);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    assert!(
        sim.nodes[0]
            .events
            .contains(&Event::NeedCandidates { peer: PeerId(0) }),
        "a peer without any address must ask discovery"
    );
    assert_eq!(sim.connected(0), 0);
    // Discovery delivers two candidates: a dead LAN address and the real one.
    let dead: std::net::SocketAddr = "192.168.77.9:51871".parse().unwrap();
    sim.act(0, |node, now| {
        node.handle_candidates(now, PeerId(0), &[dead, underlay(2)])
    });
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.connected(0), 1);
    let inits_to = |addr| {
        sim.wire_log
            .iter()
            .filter(|(_, to, b)| *to == addr && b[0] == crate::wire::TYPE_INITIATION)
            .count()
    };
    assert_eq!(inits_to(dead), 1, "the dead candidate was tried");
    assert_eq!(inits_to(underlay(2)), 1);
    assert_eq!(
        sim.nodes[0].node.peer_status(PeerId(0)).unwrap().endpoint,
        Some(underlay(2)),
        "the path is the address that answered"
    );
    sim.send_ip(0, overlay(2), b"found you");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"found you"), 1);
}

#[test]
fn unanswered_handshake_asks_for_fresh_candidates() {
    let mut sim = pair(14);
    sim.nodes[1].up = false; // the peer moved away; its old address is silent
    sim.start_node(0);
    sim.run_for(Duration::from_secs(3));
    assert!(
        sim.nodes[0]
            .events
            .contains(&Event::NeedCandidates { peer: PeerId(0) })
    );
}

#[test]
fn probes_move_traffic_to_the_faster_lan_path() {
    let mut sim = pair(15);
    sim.latency = Duration::from_millis(20); // through the internet
    sim.lan_latency = Some(Duration::from_millis(1));
    let (lan1, lan2): (std::net::SocketAddr, std::net::SocketAddr) = (
        "192.168.50.1:51871".parse().unwrap(),
        "192.168.50.2:51871".parse().unwrap(),
    );
    sim.add_alias(0, lan1);
    sim.add_alias(1, lan2);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    // Connected over the public (static) endpoint first.
    assert_eq!(
        sim.nodes[0].node.peer_status(PeerId(0)).unwrap().endpoint,
        Some(underlay(2))
    );
    // Discovery learns the LAN address; probes find it faster.
    sim.act(0, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2), lan2])
    });
    sim.run_for(Duration::from_secs(3));
    let st = sim.nodes[0].node.peer_status(PeerId(0)).unwrap();
    assert_eq!(
        st.endpoint,
        Some(lan2),
        "the LAN path (1 ms) must win over the public one (20 ms)"
    );
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::EndpointChanged { to, .. } if *to == lan2))
    );
    // Data now flows over the LAN, and keeps flowing.
    let before = sim.wire_log.len();
    sim.send_ip(0, overlay(2), b"via lan");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"via lan"), 1);
    assert!(
        sim.wire_log[before..]
            .iter()
            .any(|(f, t, b)| *f == lan1 && *t == lan2 && b[0] == crate::wire::TYPE_DATA)
    );
    // Probes from the other address do not drag the path back (no flapping).
    sim.run_for(Duration::from_secs(60));
    let changes = sim.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::EndpointChanged { .. }))
        .count();
    assert_eq!(changes, 1, "{:?}", sim.nodes[0].events);
}

/// A connected pair where node 2 is also reachable at a second address,
/// which node 0 has as a candidate and has probed: returns that address.
fn pair_with_two_paths(seed: u64) -> (Sim, std::net::SocketAddr) {
    let mut sim = pair(seed);
    let alt: std::net::SocketAddr = "198.18.7.2:51871".parse().unwrap();
    sim.add_alias(1, alt);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    sim.act(0, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2), alt])
    });
    sim.run_for(Duration::from_secs(2));
    (sim, alt)
}

#[test]
fn dead_path_is_left_for_a_live_one() {
    let (mut sim, alt) = pair_with_two_paths(16);
    // The primary address of node 2 goes dark (its route broke); only alt works.
    sim.blackhole(underlay(2));
    sim.run_for(Duration::from_secs(60));
    assert_eq!(
        sim.nodes[0].node.peer_status(PeerId(0)).unwrap().endpoint,
        Some(alt)
    );
    sim.send_ip(0, overlay(2), b"still here");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"still here"), 1);
}

/// The shell says a path is gone (a relay's TCP connection to a member
/// closed): traffic moves to the peer's other live path at once, not after
/// the probes notice (tens of seconds).
#[test]
fn a_path_the_shell_lost_is_left_at_once() {
    let (mut sim, alt) = pair_with_two_paths(17);
    let endpoint = |sim: &Sim| sim.nodes[0].node.peer_status(PeerId(0)).unwrap().endpoint;
    assert_eq!(endpoint(&sim), Some(underlay(2)));
    sim.blackhole(underlay(2));
    sim.act(0, |n, now| n.handle_path_lost(now, underlay(2)));
    assert_eq!(
        endpoint(&sim),
        Some(alt),
        "moved without waiting for probes"
    );
    sim.send_ip(0, overlay(2), b"right away");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"right away"), 1);
    // A lost address that is no peer's endpoint changes nothing.
    sim.act(0, |n, now| n.handle_path_lost(now, underlay(9)));
    assert_eq!(endpoint(&sim), Some(alt));
}

#[test]
fn idle_peers_keep_their_session_and_nat_mappings() {
    let mut sim = pair(17);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    // Ten idle minutes: no application traffic at all.
    sim.run_for(Duration::from_secs(600));
    let st = sim.nodes[0].node.peer_status(PeerId(0)).unwrap();
    let age = sim
        .now
        .saturating_duration_since(st.last_handshake.unwrap());
    assert!(
        age < REJECT_AFTER_TIME,
        "session went stale while idle ({age:?})"
    );
    // Probes kept flowing both ways the whole time (they hold NAT mappings open).
    let last_from = |addr| {
        sim.wire_log
            .iter()
            .rev()
            .position(|(f, _, b)| *f == addr && b[0] == crate::wire::TYPE_DATA)
    };
    assert!(last_from(underlay(1)).is_some() && last_from(underlay(2)).is_some());
    // And traffic flows at once, without a new handshake round trip first.
    assert!(matches!(
        sim.send_ip(0, overlay(2), b"after idle"),
        TunOutcome::Send { .. }
    ));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"after idle"), 1);
}

#[test]
fn probes_from_elsewhere_do_not_hide_a_dead_path() {
    let mut sim = pair(18);
    sim.start_all();
    sim.run_for(Duration::from_secs(2));
    // Node 2 moves to an address node 1 does not know, and stays quiet
    // except for its path probes (which must not move node 1's endpoint).
    let moved: std::net::SocketAddr = "198.18.4.2:51871".parse().unwrap();
    sim.nodes[1].addr = moved;
    for _ in 0..60 {
        sim.send_ip(0, overlay(2), b"hello?");
        sim.run_for(Duration::from_secs(1));
    }
    // Node 1 noticed that nothing came back and went looking for node 2.
    let need = sim.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::NeedCandidates { .. }))
        .count();
    assert!(
        need >= 1,
        "no-reply must lead to a new handshake and a lookup: {:?}",
        sim.nodes[0].events
    );
}

/// A record as discovery would push it: candidates and NAT facts.
fn record(timestamp: u64, port: u16) -> crate::wire::RecordBody {
    use crate::discovery::{Candidate, CandidateKind};
    use crate::nat::{MappingBehaviour, NatBehaviour};
    crate::wire::RecordBody {
        timestamp,
        candidates: vec![
            Candidate {
                kind: CandidateKind::Reflexive,
                addr: std::net::SocketAddr::from(([203, 0, 113, 7], port)),
            },
            Candidate {
                kind: CandidateKind::Local,
                addr: "192.168.1.20:51871".parse().unwrap(),
            },
        ],
        relays: Vec::new(),
        nat: Some(NatBehaviour {
            mapping: MappingBehaviour::EndpointDependent,
            port_preserving: false,
            sequential: Some(2),
            public: Some(std::net::SocketAddr::from(([203, 0, 113, 7], port))),
        }),
    }
}

fn records_from(sim: &Sim, i: usize, peer: PeerId) -> Vec<crate::wire::RecordBody> {
    sim.nodes[i]
        .records
        .iter()
        .filter(|r| r.peer == peer)
        .map(|r| r.body.clone())
        .collect()
}

#[test]
fn pushed_record_reaches_a_connected_peer() {
    let mut sim = pair(19);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.nodes[1].records.is_empty(), "nothing pushed yet");
    let body = record(1_800_000_100, 40001);
    sim.act(0, |n, now| n.push_record(now, &body).unwrap());
    sim.run_for(Duration::from_millis(100));
    assert_eq!(records_from(&sim, 1, PeerId(0)), vec![body.clone()]);
    // A change goes out too, and replaces nothing but the record.
    let moved = record(1_800_000_200, 40002);
    sim.act(0, |n, now| n.push_record(now, &moved).unwrap());
    sim.run_for(Duration::from_millis(100));
    assert_eq!(records_from(&sim, 1, PeerId(0)), vec![body, moved]);
    assert!(sim.nodes[1].drops.is_empty(), "{:?}", sim.nodes[1].drops);
    assert!(sim.nodes[0].records.is_empty(), "node 2 pushed nothing");
}

#[test]
fn new_session_sends_the_record() {
    let mut sim = pair(20);
    // Both know their records before any session exists: nothing to send yet.
    let (r1, r2) = (record(1_800_000_000, 40001), record(1_800_000_000, 50002));
    sim.act(0, |n, now| n.push_record(now, &r1).unwrap());
    sim.act(1, |n, now| n.push_record(now, &r2).unwrap());
    assert!(sim.wire_log.is_empty(), "sent without a session");
    // Node 1 initiates; node 2 answers and confirms on the first data.
    sim.start_node(0);
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.connected(0), 1);
    assert_eq!(records_from(&sim, 1, PeerId(0)), vec![r1.clone()]);
    assert_eq!(records_from(&sim, 0, PeerId(0)), vec![r2]);
    // Every rekey sends it again (a lost copy or a restarted peer is
    // covered within one rekey interval).
    sim.run_for(Duration::from_secs(200));
    assert!(sim.nodes[0].node.peer_status(PeerId(0)).unwrap().handshakes >= 2);
    let again = records_from(&sim, 1, PeerId(0));
    assert!(again.len() >= 2, "{again:?}");
    assert!(again.iter().all(|b| *b == r1));
}

#[test]
fn malformed_record_is_dropped_and_the_session_lives_on() {
    use crate::wire::{ControlError, RecordWireError};
    let mut sim = pair(21);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    let mut good = vec![0u8; crate::wire::MAX_CONTROL_LEN];
    let n = crate::wire::emit_control(
        &crate::wire::Control::Record(record(1_800_000_000, 40001)),
        &mut good,
    )
    .unwrap();
    good.truncate(n);
    // The NAT mapping byte (7th from the end with an IPv4 public address:
    // mapping, flags, step, family, 4 + 2) set to a value that means nothing.
    let mut bad_mapping = good.clone();
    bad_mapping[n - 11] = 7;
    // The length field promises more than the message holds (the padding
    // of the transport is zeros, so past 16-byte padding it is short).
    let mut overlong = good.clone();
    overlong[1..3].copy_from_slice(&900u16.to_be_bytes());
    // A length beyond what a record may be, and a bare type byte (the
    // transport's zero padding then reads as an empty body).
    let huge = [crate::wire::CONTROL_RECORD, 0xff, 0xff];
    for (plain, want) in [
        (
            &bad_mapping[..],
            ControlError::Record(RecordWireError::UnknownNatMapping(7)),
        ),
        (
            &overlong[..],
            ControlError::Truncated {
                len: n.next_multiple_of(16),
                need: 903,
            },
        ),
        (
            &huge[..],
            ControlError::RecordTooLarge {
                len: 0xffff,
                max: 959,
            },
        ),
        (
            &[crate::wire::CONTROL_RECORD][..],
            ControlError::Record(RecordWireError::Empty),
        ),
    ] {
        sim.nodes[1].drops.clear();
        sim.act(0, |node, now| node.send_raw_control(now, PeerId(0), plain));
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.nodes[1].drops, vec![DropReason::Control(want)]);
    }
    assert!(
        sim.nodes[1].records.is_empty(),
        "a malformed record was passed on"
    );
    // The session is untouched: data and a good record still get through.
    sim.send_ip(0, overlay(2), b"after garbage");
    sim.act(0, |node, now| node.send_raw_control(now, PeerId(0), &good));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 1, b"after garbage"), 1);
    assert_eq!(
        records_from(&sim, 1, PeerId(0)),
        vec![record(1_800_000_000, 40001)]
    );
}

#[test]
fn an_older_record_never_replaces_a_newer_one_waiting() {
    let mut sim = pair(22);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    // Capture two pushes without delivering them, then hand them to node 2
    // newest first, as a reordering network would, without draining.
    let (newer, older) = (record(1_800_000_200, 40002), record(1_800_000_100, 40001));
    sim.loss = 1.0;
    let start = sim.wire_log.len();
    sim.act(0, |n, now| n.push_record(now, &newer).unwrap());
    sim.act(0, |n, now| n.push_record(now, &older).unwrap());
    sim.loss = 0.0;
    let sent: Vec<Vec<u8>> = sim.wire_log[start..]
        .iter()
        .map(|(_, _, b)| b.clone())
        .collect();
    assert_eq!(sent.len(), 2);
    let now = sim.now;
    for bytes in &sent {
        let mut out = vec![0u8; bytes.len()];
        let r = sim.nodes[1]
            .node
            .handle_udp(now, underlay(1), bytes, &mut out);
        assert_eq!(r, UdpOutcome::Handled);
    }
    let got = sim.nodes[1].node.poll_peer_record().map(|r| r.body);
    assert_eq!(got, Some(newer));
    assert_eq!(sim.nodes[1].node.poll_peer_record(), None);
}

/// Node 1 is an exit node (0.0.0.0/0 beside its /32) and node 3 a NAS
/// (its /32) at node 2: destinations go by longest prefix, and the exit
/// node may send from anywhere except the NAS's own address.
#[test]
fn nested_prefixes_route_by_longest_match_both_ways() {
    let mut sim = Sim::new(40);
    let mut exit = peer_cfg(1, true);
    exit.allowed_ips.push("0.0.0.0/0".parse().unwrap());
    sim.add(2, vec![exit, peer_cfg(3, true)]);
    let mut to_2 = peer_cfg(2, true);
    to_2.allowed_ips.push("0.0.0.0/0".parse().unwrap());
    sim.add(1, vec![to_2]);
    sim.add(3, vec![peer_cfg(2, true)]);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let outside: std::net::Ipv4Addr = "198.51.100.7".parse().unwrap();
    sim.send_ip(0, outside, b"to the exit");
    sim.send_ip(0, overlay(3), b"to the nas");
    sim.run_for(Duration::from_millis(200));
    assert_eq!(
        delivered(&sim, 1, b"to the exit"),
        1,
        "0/0 goes to the exit node"
    );
    assert_eq!(delivered(&sim, 2, b"to the nas"), 1, "the /32 beats 0/0");
    assert_eq!(delivered(&sim, 1, b"to the nas"), 0);
    // Node 1's replies from the internet are accepted; a packet from it
    // claiming the NAS's address is not (the NAS's /32 is the longer match).
    let from_outside = ip_packet(outside, overlay(2), b"reply");
    let spoof = ip_packet(overlay(3), overlay(2), b"as the nas");
    assert!(matches!(
        sim.send_packet(1, &from_outside),
        TunOutcome::Send { .. }
    ));
    assert!(matches!(
        sim.send_packet(1, &spoof),
        TunOutcome::Send { .. }
    ));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(delivered(&sim, 0, b"reply"), 1);
    assert_eq!(delivered(&sim, 0, b"as the nas"), 0);
    assert!(sim.nodes[0].drops.contains(&DropReason::SourceNotAllowed));
}

/// A minimal IPv6 packet (UDP next header; the core reads addresses and
/// the payload length only).
fn ip6_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let src: std::net::Ipv6Addr = src.parse().unwrap();
    let dst: std::net::Ipv6Addr = dst.parse().unwrap();
    let mut p = vec![0u8; 40 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..].copy_from_slice(payload);
    p
}

/// IPv6 inside the tunnel: node 1 has fd00:6b::1 and is an exit node for
/// ::/0 at node 2, which has fd00:6b::2. Destinations go by longest prefix,
/// replies from the IPv6 internet are accepted from the exit node, and a
/// source outside a peer's prefixes is refused, as for IPv4.
#[test]
fn ipv6_inner_packets_route_and_are_checked_like_ipv4() {
    let mut sim = Sim::new(41);
    let mut exit = peer_cfg(1, true);
    for net in ["fd00:6b::1/128", "::/0"] {
        exit.allowed_ips.push(net.parse().unwrap());
    }
    let mut nas = peer_cfg(3, true);
    nas.allowed_ips.push("fd00:6b::3/128".parse().unwrap());
    sim.add(2, vec![exit, nas]);
    let mut to_2 = peer_cfg(2, true);
    to_2.allowed_ips.push("fd00:6b::2/128".parse().unwrap());
    sim.add(1, vec![to_2.clone()]);
    sim.add(3, vec![to_2]);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    for (dst, payload) in [
        ("fd00:6b::1", &b"v6 to the exit node"[..]),
        ("2001:db8::7", b"v6 to the internet"),
        ("fd00:6b::3", b"v6 to the nas"),
    ] {
        assert!(matches!(
            sim.send_packet(0, &ip6_packet("fd00:6b::2", dst, payload)),
            TunOutcome::Send { .. }
        ));
    }
    sim.run_for(Duration::from_millis(200));
    assert_eq!(delivered(&sim, 1, b"v6 to the exit node"), 1);
    assert_eq!(delivered(&sim, 1, b"v6 to the internet"), 1);
    assert_eq!(
        delivered(&sim, 2, b"v6 to the nas"),
        1,
        "the /128 beats ::/0"
    );
    assert_eq!(delivered(&sim, 1, b"v6 to the nas"), 0);
    // Arrives exactly as sent.
    assert!(
        sim.nodes[2]
            .tun
            .contains(&ip6_packet("fd00:6b::2", "fd00:6b::3", b"v6 to the nas"))
    );

    // The exit node answers from the internet; it may not speak for the NAS.
    for (src, payload) in [
        ("2001:db8::7", &b"v6 reply"[..]),
        ("fd00:6b::3", b"v6 as the nas"),
    ] {
        assert!(matches!(
            sim.send_packet(1, &ip6_packet(src, "fd00:6b::2", payload)),
            TunOutcome::Send { .. }
        ));
    }
    // No IPv6 route for the NAS's peers beyond its /128: a destination
    // outside every prefix is dropped, not sent anywhere.
    assert!(matches!(
        sim.send_packet(2, &ip6_packet("fd00:6b::3", "2001:db8::9", b"nowhere")),
        TunOutcome::Dropped(DropReason::NoRoute)
    ));
    sim.run_for(Duration::from_millis(200));
    assert_eq!(delivered(&sim, 0, b"v6 reply"), 1);
    assert_eq!(delivered(&sim, 0, b"v6 as the nas"), 0);
    assert!(sim.nodes[0].drops.contains(&DropReason::SourceNotAllowed));
}
