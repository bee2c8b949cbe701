//! Simulator tests of [`Node::reconfigure`] (a reload): what happens to the
//! sessions, routes and handshakes of kept, removed and added peers.

use std::time::Duration;

use ipnet::IpNet;

use super::sim::*;
use super::tests::delivered;
use super::*;

/// Node 1 knows 2 and 3; 2 and 3 know 1 (all with endpoints). Started and
/// connected.
fn star(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.add(1, vec![peer_cfg(2, true), peer_cfg(3, true)]);
    sim.add(2, vec![peer_cfg(1, true)]);
    sim.add(3, vec![peer_cfg(1, true)]);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.connected(0), 2, "{:?}", sim.nodes[0].events);
    sim
}

fn handshakes(sim: &Sim, i: usize, peer: PeerId) -> u64 {
    sim.nodes[i].node.peer_status(peer).unwrap().handshakes
}

#[test]
fn a_session_with_an_unchanged_peer_loses_nothing_across_a_reconfigure() {
    let mut sim = star(1);
    sim.add(4, vec![peer_cfg(1, true)]);
    sim.start_node(3);
    let before = handshakes(&sim, 0, PeerId(0));
    let mut outcome = None;
    // 3 s of packets both ways every 10 ms; the reload (3 removed, 4
    // added, 2 as it was) lands in the middle of the stream.
    for k in 0..300 {
        sim.send_ip(0, overlay(2), format!("a{k}.").as_bytes());
        sim.send_ip(1, overlay(1), format!("b{k}.").as_bytes());
        if k == 150 {
            outcome = Some(
                sim.reconfigure(
                    0,
                    1,
                    vec![peer_cfg(2, true), peer_cfg(4, true)],
                    RelayConfig::default(),
                )
                .unwrap(),
            );
        }
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_millis(100));
    let lost_ab: Vec<_> = (0..300)
        .filter(|k| delivered(&sim, 1, format!("a{k}.").as_bytes()) != 1)
        .collect();
    let lost_ba: Vec<_> = (0..300)
        .filter(|k| delivered(&sim, 0, format!("b{k}.").as_bytes()) != 1)
        .collect();
    assert_eq!(lost_ab, Vec::<usize>::new(), "1 → 2 lost or duplicated");
    assert_eq!(lost_ba, Vec::<usize>::new(), "2 → 1 lost or duplicated");
    assert_eq!(
        outcome,
        Some(Reconfigured {
            ids: vec![PeerId(0), PeerId(2)],
            added: vec![PeerId(2)],
            removed: vec![PeerId(1)],
        })
    );
    assert_eq!(
        handshakes(&sim, 0, PeerId(0)),
        before,
        "the kept session was not replaced"
    );
    assert_eq!(
        sim.nodes[0].node.peer_ids().collect::<Vec<_>>(),
        [PeerId(0), PeerId(2)]
    );
}

#[test]
fn a_removed_peers_session_is_gone_and_its_traffic_refused() {
    let mut sim = star(2);
    sim.send_ip(2, overlay(1), b"before");
    sim.run_for(Duration::from_millis(50));
    assert_eq!(delivered(&sim, 0, b"before"), 1);

    sim.reconfigure(0, 1, vec![peer_cfg(2, true)], RelayConfig::default())
        .unwrap();
    assert!(sim.nodes[0].node.peer_status(PeerId(1)).is_none());
    assert_eq!(
        sim.nodes[0].node.peer_allowed_ips(PeerId(1)),
        &[] as &[IpNet]
    );
    // Nothing is routed to it any more ...
    assert_eq!(
        sim.send_ip(0, overlay(3), b"to 3"),
        TunOutcome::Dropped(DropReason::NoRoute)
    );
    // ... its data on the old session is refused ...
    sim.nodes[0].drops.clear();
    assert!(matches!(
        sim.send_ip(2, overlay(1), b"after"),
        TunOutcome::Send { .. }
    ));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(delivered(&sim, 0, b"after"), 0);
    assert!(
        sim.nodes[0].drops.contains(&DropReason::UnknownIndex),
        "{:?}",
        sim.nodes[0].drops
    );
    // ... and so are its handshakes once it notices and tries again.
    for k in 0..30 {
        sim.send_ip(2, overlay(1), format!("retry{k}").as_bytes());
        sim.run_for(Duration::from_secs(1));
    }
    assert!(
        sim.nodes[0].drops.contains(&DropReason::UnknownPeer),
        "{:?}",
        sim.nodes[0].drops
    );
    assert_eq!(delivered(&sim, 0, b"retry"), 0);
    assert_eq!(sim.connected(2), 1, "3 never got a new session");
    // The kept peer is untouched.
    sim.send_ip(0, overlay(2), b"still");
    sim.run_for(Duration::from_millis(50));
    assert_eq!(delivered(&sim, 1, b"still"), 1);
}

#[test]
fn an_added_peer_handshakes_at_once() {
    let mut sim = Sim::new(3);
    sim.add(1, vec![peer_cfg(2, true)]);
    sim.add(2, vec![peer_cfg(1, true)]);
    sim.add(3, vec![peer_cfg(1, false)]);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.connected(2), 0, "1 does not know 3 yet");

    let r = sim
        .reconfigure(
            0,
            1,
            vec![peer_cfg(2, true), peer_cfg(3, true)],
            RelayConfig::default(),
        )
        .unwrap();
    assert_eq!(r.added, [PeerId(1)]);
    sim.run_for(Duration::from_millis(100));
    assert!(
        sim.nodes[0].events.contains(&Event::Connected {
            peer: PeerId(1),
            via: Via::Direct(underlay(3))
        }),
        "{:?}",
        sim.nodes[0].events
    );
    sim.send_ip(0, overlay(3), b"hi 3");
    sim.send_ip(2, overlay(1), b"hi 1");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(delivered(&sim, 2, b"hi 3"), 1);
    assert_eq!(delivered(&sim, 0, b"hi 1"), 1);
}

#[test]
fn changed_allowed_ips_move_routing_and_source_checks() {
    let lan: IpNet = "10.9.0.0/24".parse().unwrap();
    let host = std::net::Ipv4Addr::new(10, 9, 0, 5);
    let with_lan = |n: u8| {
        let mut p = peer_cfg(n, true);
        p.allowed_ips.push(lan);
        p
    };
    let mut sim = Sim::new(4);
    sim.add(1, vec![peer_cfg(2, true), with_lan(3)]);
    sim.add(2, vec![peer_cfg(1, true)]);
    sim.add(3, vec![peer_cfg(1, true)]);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    let (hs2, hs3) = (
        handshakes(&sim, 0, PeerId(0)),
        handshakes(&sim, 0, PeerId(1)),
    );

    // Before: the LAN is 3's, both ways.
    sim.send_ip(0, host, b"to lan 1");
    sim.send_packet(2, &ip_packet(host, overlay(1), b"from lan via 3"));
    sim.send_packet(1, &ip_packet(host, overlay(1), b"from lan via 2"));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(delivered(&sim, 2, b"to lan 1"), 1);
    assert_eq!(delivered(&sim, 0, b"from lan via 3"), 1);
    assert_eq!(delivered(&sim, 0, b"from lan via 2"), 0);
    assert!(sim.nodes[0].drops.contains(&DropReason::SourceNotAllowed));

    // The LAN moves to 2.
    sim.reconfigure(
        0,
        1,
        vec![with_lan(2), peer_cfg(3, true)],
        RelayConfig::default(),
    )
    .unwrap();
    sim.nodes[0].drops.clear();
    sim.send_ip(0, host, b"to lan 2");
    sim.send_packet(1, &ip_packet(host, overlay(1), b"from lan via 2, after"));
    sim.send_packet(2, &ip_packet(host, overlay(1), b"from lan via 3, after"));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(delivered(&sim, 1, b"to lan 2"), 1, "routed to 2 now");
    assert_eq!(delivered(&sim, 2, b"to lan 2"), 0);
    assert_eq!(delivered(&sim, 0, b"from lan via 2, after"), 1);
    assert_eq!(delivered(&sim, 0, b"from lan via 3, after"), 0);
    assert_eq!(sim.nodes[0].drops, [DropReason::SourceNotAllowed]);
    assert_eq!(
        sim.nodes[0].node.peer_allowed_ips(PeerId(0)),
        &[overlay_net(2), lan]
    );
    // Both sessions carried on.
    assert_eq!(handshakes(&sim, 0, PeerId(0)), hs2);
    assert_eq!(handshakes(&sim, 0, PeerId(1)), hs3);
}

fn overlay_net(n: u8) -> IpNet {
    format!("{}/32", overlay(n)).parse().unwrap()
}

#[test]
fn a_new_key_or_network_secret_is_refused_and_changes_nothing() {
    let mut sim = star(5);
    let err = sim
        .reconfigure(0, 9, vec![peer_cfg(2, true)], RelayConfig::default())
        .unwrap_err();
    assert_eq!(err, ReconfigureError::KeyChanged);
    let cfg = NodeConfig {
        secret: key(1),
        psk: crate::identity::NetworkSecret([7; 32]),
        peers: vec![peer_cfg(2, true)],
        relay: RelayConfig::default(),
    };
    let now = sim.now;
    let err = sim.nodes[0].node.reconfigure(now, cfg).unwrap_err();
    assert_eq!(err, ReconfigureError::PskChanged);
    assert!(err.to_string().contains("network secret"), "{err}");
    // Peer 3 is still there and still reached.
    assert_eq!(sim.nodes[0].node.peer_ids().count(), 2);
    sim.send_ip(0, overlay(3), b"still");
    sim.run_for(Duration::from_millis(50));
    assert_eq!(delivered(&sim, 2, b"still"), 1);
}

#[test]
fn a_changed_keepalive_and_endpoint_apply_to_a_kept_peer() {
    // 1 knows 3 at an address where nothing answers; the reload gives the
    // right one and a keepalive.
    let mut sim = Sim::new(6);
    let mut wrong = peer_cfg(3, true);
    wrong.endpoint = Some(underlay(99));
    sim.add(1, vec![wrong]);
    sim.add(3, vec![peer_cfg(1, false)]);
    sim.start_all();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.connected(0), 0);

    let mut right = peer_cfg(3, true);
    right.keepalive = Some(Duration::from_secs(5));
    right.name = "three".into();
    sim.reconfigure(0, 1, vec![right], RelayConfig::default())
        .unwrap();
    sim.run_for(Duration::from_millis(200));
    assert_eq!(sim.connected(0), 1, "{:?}", sim.nodes[0].drops);
    assert_eq!(sim.nodes[0].node.peer_name(PeerId(0)), "three");
    // The keepalive now keeps an idle pair's session fresh: keepalives
    // (empty data messages) go out every 5 s.
    let log_from = sim.wire_log.len();
    sim.run_for(Duration::from_secs(21));
    let keepalives = sim.wire_log[log_from..]
        .iter()
        .filter(|(f, _, b)| *f == underlay(1) && b[0] == crate::wire::TYPE_DATA)
        .count();
    assert!(keepalives >= 4, "{keepalives} data messages in 21 s");
}
