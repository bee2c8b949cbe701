//! Simulator tests of relaying: members 1 and 2 reach each other through
//! relay 3 (and 4), with the direct path between them blocked or not.

use std::time::Duration;

use super::data::REPORT_EVERY;
use super::sim::*;
use super::tests::delivered;
use super::*;
use crate::relay::Limits;

const A: usize = 0;
const B: usize = 1;
const R1: usize = 2;
const R2: usize = 3;

/// A member's view: the other member (no endpoint) first, then the relays
/// (static endpoints, keepalive), all of them in `via`.
fn member(other: u8, relays: &[u8]) -> (Vec<PeerConfig>, RelayConfig) {
    let mut peers = vec![peer_cfg(other, false)];
    for &r in relays {
        let mut p = peer_cfg(r, true);
        p.keepalive = Some(Duration::from_secs(25));
        peers.push(p);
    }
    let via = relays.iter().map(|&r| key(r).public()).collect();
    (peers, RelayConfig { serve: None, via })
}

/// 1 and 2 with relays 3 (and 4 when `two`); the relays know both members.
pub(super) fn relayed(seed: u64, two: bool, limits: Limits) -> Sim {
    let relays: &[u8] = if two { &[3, 4] } else { &[3] };
    let mut sim = Sim::new(seed);
    let (p, r) = member(2, relays);
    sim.add_with_relay(1, p, r);
    let (p, r) = member(1, relays);
    sim.add_with_relay(2, p, r);
    for &n in relays {
        sim.add_with_relay(
            n,
            vec![peer_cfg(1, false), peer_cfg(2, false)],
            RelayConfig {
                serve: Some(limits),
                via: Vec::new(),
            },
        );
    }
    sim
}

fn relay_of(sim: &Sim, i: usize, peer: usize) -> Option<PeerId> {
    sim.nodes[i]
        .node
        .peer_status(PeerId(peer))
        .and_then(|s| s.relay.map(|(r, _)| r))
}

/// Send `n` numbered packets each way, 20 ms apart, stepping the sim.
fn exchange(sim: &mut Sim, n: usize, tag: &str) {
    for k in 0..n {
        sim.send_ip(A, overlay(2), format!("{tag} a{k}").as_bytes());
        sim.send_ip(B, overlay(1), format!("{tag} b{k}").as_bytes());
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_millis(200));
}

fn count(sim: &Sim, i: usize, tag: &str, side: char, n: usize) -> usize {
    (0..n)
        .filter(|k| delivered(sim, i, format!("{tag} {side}{k}").as_bytes()) > 0)
        .count()
}

#[test]
fn members_without_a_direct_path_connect_through_the_relay() {
    let mut sim = relayed(1, false, Limits::default());
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)), "a reaches b via r");
    assert_eq!(relay_of(&sim, B, 0), Some(PeerId(1)), "b reaches a via r");
    exchange(&mut sim, 20, "x");
    assert_eq!(count(&sim, B, "x", 'a', 20), 20);
    assert_eq!(count(&sim, A, "x", 'b', 20), 20);
    // The packets arrive exactly as sent, and the relay's TUN saw nothing.
    assert!(
        sim.nodes[B]
            .tun
            .contains(&ip_packet(overlay(1), overlay(2), b"x a0"))
    );
    assert!(sim.nodes[R1].tun.is_empty());
    let svc = sim.nodes[R1].node.relay_service().unwrap();
    assert!(svc.member(0).unwrap().forwarded_packets >= 20);
    assert!(svc.member(1).unwrap().forwarded_packets >= 20);
    // Through the relay, never around it: nothing went between 1 and 2.
    assert!(
        !sim.wire_log
            .iter()
            .any(|(f, t, _)| (*f, *t) == (underlay(1), underlay(2))
                || (*f, *t) == (underlay(2), underlay(1)))
    );
    let st = sim.nodes[A].node.peer_status(PeerId(0)).unwrap();
    assert!(st.relay_tx_bytes > 0 && st.relay_rx_bytes > 0, "{st:?}");
    assert!(st.connected);
}

#[test]
fn a_relayed_pair_goes_direct_when_punching_opens() {
    let mut sim = relayed(2, false, Limits::default());
    sim.block(underlay(1), underlay(2));
    sim.start_all();
    // Each knows the other's address (as from the DHT), but it is blocked.
    sim.act(A, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2)])
    });
    sim.act(B, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(1)])
    });
    sim.run_for(Duration::from_secs(4));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    exchange(&mut sim, 10, "before");
    assert_eq!(count(&sim, B, "before", 'a', 10), 10);
    // Relayed: the data half frames the peer's packets for the relay
    // and seals them on the hop, which it sends to directly.
    let view = sim.data_view(A, PeerId(0));
    assert_eq!(view.path, Some(Via::Relay(PeerId(1))), "{view:?}");
    assert!(view.tx.is_some());
    let hop = sim.data_view(A, PeerId(1));
    assert_eq!(hop.path, Some(Via::Direct(underlay(3))));
    sim.unblock(underlay(1), underlay(2));
    let lifted = sim.now;
    while relay_of(&sim, A, 0).is_some() || relay_of(&sim, B, 0).is_some() {
        assert!(
            sim.now - lifted < Duration::from_secs(5),
            "still relayed 5 s after the path opened"
        );
        exchange(&mut sim, 1, "switch");
    }
    let st = sim.nodes[A].node.peer_status(PeerId(0)).unwrap();
    assert_eq!(st.endpoint, Some(underlay(2)));
    assert!(sim.nodes[A].events.iter().any(|e| matches!(
        e,
        Event::DirectAgain {
            peer: PeerId(0),
            ..
        }
    )));
    exchange(&mut sim, 10, "after");
    assert_eq!(count(&sim, B, "after", 'a', 10), 10);
    assert_eq!(count(&sim, A, "after", 'b', 10), 10);
    // Direct again: the data half sends to the peer itself.
    let view = sim.data_view(A, PeerId(0));
    assert_eq!(view.path, Some(Via::Direct(underlay(2))));
}

/// Both members behind port-restricted NATs learn each other's address a
/// moment apart (as from an introduction), while already relayed: the
/// first side's datagrams die at the other NAT, the second side's get
/// through, and the pair is direct within a few round trips, not at the
/// next 2 s probe round.
#[test]
fn a_relayed_pair_behind_restricted_nats_goes_direct_at_once() {
    // Told after the relayed session, and while the relays' handshakes are
    // still under way (the session through the relay and the direct
    // initiations race).
    for (seed, settle) in (0..16).map(|s| (s, [500, 15][s as usize % 2])) {
        let mut sim = relayed(20 + seed, false, Limits::default());
        sim.restrict(underlay(1));
        sim.restrict(underlay(2));
        sim.start_all();
        sim.run_for(Duration::from_millis(settle));
        if settle > 100 {
            assert_eq!(
                relay_of(&sim, A, 0),
                Some(PeerId(1)),
                "seed {seed}: relayed first"
            );
        }
        sim.act(A, |n, now| {
            n.handle_candidates(now, PeerId(0), &[underlay(2)])
        });
        sim.run_for(Duration::from_millis(30));
        sim.act(B, |n, now| {
            n.handle_candidates(now, PeerId(0), &[underlay(1)])
        });
        let told = sim.now;
        let direct = |sim: &Sim, i: usize| {
            sim.nodes[i]
                .node
                .peer_status(PeerId(0))
                .is_some_and(|s| s.connected && s.relay.is_none())
        };
        while !direct(&sim, A) || !direct(&sim, B) {
            assert!(
                sim.now - told < Duration::from_millis(300),
                "seed {seed}: still relayed 300 ms after both know the direct addresses: {:?} {:?} {:?}",
                sim.nodes[A].node.peer_status(PeerId(0)),
                sim.nodes[B].node.peer_status(PeerId(0)),
                sim.nodes[A].drops
            );
            sim.run_for(Duration::from_millis(10));
        }
        exchange(&mut sim, 5, "direct");
        assert_eq!(count(&sim, B, "direct", 'a', 5), 5, "seed {seed}");
        assert_eq!(count(&sim, A, "direct", 'b', 5), 5, "seed {seed}");
    }
}

#[test]
fn a_direct_pair_falls_back_to_the_relay_within_3_s() {
    let mut sim = relayed(3, false, Limits::default());
    sim.start_all();
    sim.act(A, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2)])
    });
    sim.run_for(Duration::from_secs(3));
    exchange(&mut sim, 5, "warm");
    assert_eq!(relay_of(&sim, A, 0), None, "direct first");
    assert_eq!(relay_of(&sim, B, 0), None);
    sim.block(underlay(1), underlay(2));
    let cut = sim.now;
    exchange(&mut sim, 150, "cut"); // 3 s of traffic each way
    let moved = sim.nodes[A].events.iter().any(|e| {
        matches!(
            e,
            Event::Relayed {
                peer: PeerId(0),
                cause: RelayCause::DirectPathLost,
                ..
            }
        )
    });
    assert!(moved, "{:?}", sim.nodes[A].events);
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    assert_eq!(relay_of(&sim, B, 0), Some(PeerId(1)));
    // Packets sent more than ~2.5 s after the cut all arrive.
    let tail = (0..150).filter(|k| *k >= 125);
    for k in tail {
        assert!(
            delivered(&sim, B, format!("cut a{k}").as_bytes()) > 0,
            "a{k} lost ({:?} after the cut)",
            sim.now - cut
        );
        assert!(
            delivered(&sim, A, format!("cut b{k}").as_bytes()) > 0,
            "b{k} lost"
        );
    }
}

#[test]
fn a_dead_relay_is_left_for_another_within_3_s() {
    let mut sim = relayed(4, true, Limits::default());
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    exchange(&mut sim, 5, "warm");
    let first = relay_of(&sim, A, 0).expect("relayed");
    let (dead, other) = if first == PeerId(1) {
        (R1, PeerId(2))
    } else {
        (R2, PeerId(1))
    };
    sim.nodes[dead].up = false;
    exchange(&mut sim, 150, "kill");
    assert_eq!(relay_of(&sim, A, 0), Some(other));
    assert_eq!(relay_of(&sim, B, 0), Some(other));
    assert!(sim.nodes[A].events.iter().any(|e| matches!(
        e,
        Event::RelayChanged {
            peer: PeerId(0),
            ..
        }
    )));
    for k in 125..150 {
        assert!(
            delivered(&sim, B, format!("kill a{k}").as_bytes()) > 0,
            "a{k} lost"
        );
        assert!(
            delivered(&sim, A, format!("kill b{k}").as_bytes()) > 0,
            "b{k} lost"
        );
    }
}

#[test]
fn a_reload_that_removes_the_relay_in_use_moves_to_the_other() {
    let mut sim = relayed(5, true, Limits::default());
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    exchange(&mut sim, 5, "warm");
    let first = relay_of(&sim, A, 0).expect("relayed");
    let (gone, kept, other) = if first == PeerId(1) {
        (3, 4, PeerId(2))
    } else {
        (4, 3, PeerId(1))
    };
    let (peers, relay) = member(2, &[kept]);
    let r = sim.reconfigure(A, 1, peers, relay).unwrap();
    assert_eq!(r.removed, [first]);
    assert_eq!(r.ids, [PeerId(0), other], "kept peers keep their ids");
    assert_eq!(relay_of(&sim, A, 0), Some(other), "moved at once");
    assert!(sim.nodes[A].events.contains(&Event::RelayChanged {
        peer: PeerId(0),
        from: first,
        to: other
    }));
    // b still sends through the removed relay, which a no longer takes
    // from: it fails over as from a dead relay, and traffic flows again.
    exchange(&mut sim, 150, "moved");
    assert_eq!(
        relay_of(&sim, B, 0),
        Some(other),
        "relay {gone} left by b too"
    );
    for k in 125..150 {
        assert!(
            delivered(&sim, B, format!("moved a{k}").as_bytes()) > 0,
            "a{k} lost"
        );
        assert!(
            delivered(&sim, A, format!("moved b{k}").as_bytes()) > 0,
            "b{k} lost"
        );
    }
    assert!(sim.nodes[A].node.peer_status(first).is_none());
}

#[test]
fn the_relay_refuses_strangers_and_members_without_a_session() {
    // 1 lists 5 as a peer; the relay does not know 5.
    let mut sim = Sim::new(5);
    let (mut p, r) = member(2, &[3]);
    p.push(peer_cfg(5, false));
    sim.add_with_relay(1, p, r);
    let (p, r) = member(1, &[3]);
    sim.add_with_relay(2, p, r);
    sim.add_with_relay(
        3,
        vec![peer_cfg(1, false), peer_cfg(2, false)],
        RelayConfig {
            serve: Some(Limits::default()),
            via: Vec::new(),
        },
    );
    sim.add(5, vec![peer_cfg(3, true)]);
    sim.nodes[B].up = false; // 2 never talks to the relay
    sim.start_node(A);
    sim.start_node(R1);
    sim.run_for(Duration::from_secs(2));
    sim.send_ip(A, overlay(5), b"to the stranger");
    sim.send_ip(A, overlay(2), b"to the absent one");
    sim.run_for(Duration::from_secs(3));
    let svc = sim.nodes[R1].node.relay_service().unwrap();
    assert!(svc.refused_unknown > 0, "unknown destination refused");
    assert!(
        svc.refused_no_session > 0,
        "sessionless destination refused"
    );
    assert!(sim.nodes[3].tun.is_empty(), "nothing reached the stranger");
    assert!(
        sim.nodes[R1]
            .drops
            .iter()
            .any(|d| matches!(d, DropReason::Relay(crate::relay::Refusal::Unknown)))
    );
    // A node that is not a member cannot even get a session with the relay.
    sim.act(3, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(3)])
    });
    sim.run_for(Duration::from_secs(1));
    assert!(sim.nodes[R1].drops.contains(&DropReason::UnknownPeer));
}

#[test]
fn a_node_that_does_not_serve_forwards_nothing() {
    let mut sim = relayed(7, false, Limits::default());
    // Node 3 keeps its peers but stops serving.
    sim.restart(R1, 3, vec![peer_cfg(1, false), peer_cfg(2, false)]);
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    sim.send_ip(A, overlay(2), b"please relay");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(delivered(&sim, B, b"please relay"), 0);
    assert!(
        sim.nodes[R1]
            .drops
            .iter()
            .any(|d| matches!(d, DropReason::Relay(crate::relay::Refusal::NotServing)))
    );
}

#[test]
fn the_relays_rate_limit_holds() {
    // 125 kB/s per member: 1 sends 1000-byte packets at 250 kB/s for 4 s.
    let mut sim = relayed(
        8,
        false,
        Limits {
            per_member: Some(125_000),
            total: None,
        },
    );
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    let payload = vec![b'z'; 1000];
    let before = sim.nodes[B].tun.len();
    for _ in 0..1000 {
        sim.send_ip(A, overlay(2), &payload);
        sim.run_for(Duration::from_millis(4));
    }
    sim.run_for(Duration::from_millis(200));
    let got = (sim.nodes[B].tun.len() - before) as f64 * 1020.0 / 4.0;
    assert!(
        (100_000.0..170_000.0).contains(&got),
        "{got} B/s through a 125 kB/s limit"
    );
    let m = sim.nodes[R1]
        .node
        .relay_service()
        .unwrap()
        .member(0)
        .unwrap();
    assert!(m.dropped_rate > 300, "{m:?}");
}

// ------------------------------------------------------------ introductions

const M: usize = 2;

/// Our record as discovery would push it: our underlay address, our relays.
fn own_record(n: u8) -> crate::wire::RecordBody {
    crate::wire::RecordBody {
        timestamp: 1_800_000_000,
        candidates: vec![crate::discovery::Candidate {
            kind: crate::discovery::CandidateKind::Reflexive,
            addr: underlay(n),
        }],
        relays: Vec::new(),
        nat: None,
    }
}

/// 1 and 2 know neither each other's address nor any relay; both have a
/// session with 3, which does not relay.
fn introduced_pair(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.add(1, vec![peer_cfg(2, false), peer_cfg(3, true)]);
    sim.add(2, vec![peer_cfg(1, false), peer_cfg(3, true)]);
    sim.add(3, vec![peer_cfg(1, false), peer_cfg(2, false)]);
    for (i, n) in [(A, 1), (B, 2)] {
        sim.act(i, |node, now| {
            node.push_record(now, &own_record(n)).unwrap()
        });
    }
    sim
}

fn introductions(sim: &Sim, i: usize) -> Vec<&PeerRecord> {
    sim.nodes[i]
        .records
        .iter()
        .filter(|r| r.peer == PeerId(0) && r.introduced_by.is_some())
        .collect()
}

#[test]
fn a_mutual_peer_introduces_two_members_who_then_connect_direct() {
    let mut sim = introduced_pair(30);
    sim.start_all();
    // Sessions with 3 take a round trip (20 ms); the introductions one more
    // through 3 and the answer another.
    sim.run_for(Duration::from_millis(150));
    for (i, other) in [(A, 2), (B, 1)] {
        let got = introductions(&sim, i);
        assert!(
            !got.is_empty(),
            "node {i} was introduced: {:?}",
            sim.nodes[i].records
        );
        assert_eq!(got[0].body, own_record(other));
        assert_eq!(got[0].introduced_by, Some(PeerId(1)), "through 3");
    }
    assert_eq!(
        sim.connected(A),
        1,
        "only 3 so far: no address for the other"
    );
    // Discovery feeds the introduced candidates; both initiate at once.
    let started = sim.now;
    sim.act(A, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2)])
    });
    sim.act(B, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(1)])
    });
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.connected(A), 2, "a reaches b within a round trip");
    assert!(relay_of(&sim, A, 0).is_none(), "direct, not through 3");
    exchange(&mut sim, 5, "intro");
    assert_eq!(count(&sim, B, "intro", 'a', 5), 5);
    assert!(sim.now.duration_since(started) < Duration::from_secs(1));
    // 3 only passed introductions: it never relays data.
    assert!(sim.nodes[M].tun.is_empty());
    assert!(sim.nodes[M].node.relay_service().is_none());
    // Each side acted on at most a couple of copies (dedupe, answer once).
    assert!(
        introductions(&sim, A).len() <= 2,
        "{:?}",
        introductions(&sim, A)
    );
}

#[test]
fn introductions_stop_at_a_mutual_peer_without_a_session_to_the_target() {
    let mut sim = introduced_pair(31);
    sim.nodes[B].up = false;
    sim.start_node(A);
    sim.start_node(M);
    sim.run_for(Duration::from_secs(3));
    assert!(
        sim.nodes[M]
            .drops
            .contains(&DropReason::Relay(crate::relay::Refusal::NoSession)),
        "{:?}",
        sim.nodes[M].drops
    );
    assert!(introductions(&sim, A).is_empty());
    // Retried at most once per INTRO_EVERY while the handshake to 2 waits.
    let sent_to_m = sim
        .wire_log
        .iter()
        .filter(|(f, t, _)| *f == underlay(1) && *t == underlay(3))
        .count();
    assert!(sent_to_m < 12, "{sent_to_m} datagrams from 1 to 3 in 3 s");
}

#[test]
fn a_member_with_a_session_ignores_introductions() {
    let mut sim = introduced_pair(32);
    sim.start_all();
    sim.run_for(Duration::from_millis(150));
    sim.act(A, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2)])
    });
    sim.act(B, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(1)])
    });
    sim.run_for(Duration::from_millis(200));
    let before = introductions(&sim, A).len();
    // A new session with 3 (a rekey) sends no introduction for a peer we
    // reach: nothing new arrives.
    sim.run_for(Duration::from_secs(200));
    assert_eq!(sim.connected(A), 2);
    assert_eq!(introductions(&sim, A).len(), before);
}

#[test]
fn a_changed_record_is_introduced_again_at_once() {
    let mut sim = introduced_pair(33);
    sim.start_all();
    sim.run_for(Duration::from_millis(150));
    // STUN answered: a's record gains its public address in the same second.
    let mut moved = own_record(1);
    moved.candidates[0].addr = "198.18.9.9:4000".parse().unwrap();
    sim.act(A, |n, now| n.push_record(now, &moved).unwrap());
    sim.run_for(Duration::from_millis(50));
    let got: Vec<_> = introductions(&sim, B)
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(got.last(), Some(&moved), "{got:?}");
}

#[test]
fn a_relayed_peer_goes_direct_where_a_hard_nat_probe_lands() {
    let mut sim = relayed(34, false, Limits::default());
    sim.block(underlay(1), underlay(2));
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    // B is also reachable at an address nobody told A about (a port its
    // NAT opened for one of its pool sockets), and answers A from there.
    let hidden: std::net::SocketAddr = "198.18.0.200:40123".parse().unwrap();
    sim.add_pool_port(B, hidden);
    // The shell sprays probes; most go nowhere, one lands.
    for port in [1000u16, 2000] {
        let probe = {
            let now = sim.now;
            sim.nodes[A].node.probe_datagram(now, PeerId(0))
        }
        .expect("a relayed peer has something to probe with");
        sim.send_raw(
            underlay(1),
            std::net::SocketAddr::from(([198, 18, 0, 99], port)),
            probe,
        );
    }
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)), "no answer yet");
    let now = sim.now;
    let probe = sim.nodes[A].node.probe_datagram(now, PeerId(0)).unwrap();
    sim.send_raw(underlay(1), hidden, probe);
    // One round trip (10 ms each way): a moves on the pong itself.
    sim.run_for(Duration::from_millis(25));
    assert_eq!(relay_of(&sim, A, 0), None, "a left the relay");
    let st = sim.nodes[A].node.peer_status(PeerId(0)).unwrap();
    assert_eq!(st.endpoint, Some(hidden), "{st:?}");
    exchange(&mut sim, 10, "hard");
    assert_eq!(count(&sim, B, "hard", 'a', 10), 10);
    assert_eq!(count(&sim, A, "hard", 'b', 10), 10);
    assert_eq!(relay_of(&sim, B, 0), None, "b follows a's data direct");
}

#[test]
fn a_direct_peer_has_nothing_to_probe_with() {
    let mut sim = relayed(35, false, Limits::default());
    sim.start_all();
    sim.act(A, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2)])
    });
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), None);
    let now = sim.now;
    assert_eq!(sim.nodes[A].node.probe_datagram(now, PeerId(0)), None);
}

#[test]
fn a_healthy_direct_pair_rekeys_without_the_relay() {
    let mut sim = relayed(36, false, Limits::default());
    sim.start_all();
    sim.act(A, |n, now| {
        n.handle_candidates(now, PeerId(0), &[underlay(2)])
    });
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), None);
    let forwarded = |sim: &Sim| {
        let svc = sim.nodes[R1].node.relay_service().unwrap();
        svc.member(0).unwrap().forwarded_packets + svc.member(1).unwrap().forwarded_packets
    };
    let before = (sim.wire_log.len(), forwarded(&sim));
    // Past two rekeys (every 120 s), with some traffic and idle stretches.
    for k in 0..30 {
        exchange(&mut sim, 1, &format!("r{k}"));
        sim.run_for(Duration::from_secs(9));
    }
    let ab = [underlay(1), underlay(2)];
    let handshakes = sim.wire_log[before.0..]
        .iter()
        .filter(|(from, to, b)| {
            ab.contains(from) && ab.contains(to) && b[0] == crate::wire::TYPE_INITIATION
        })
        .count();
    assert!(handshakes >= 2, "it rekeyed: {handshakes}");
    assert_eq!(
        forwarded(&sim),
        before.1,
        "the relay carried nothing for the pair"
    );
    for i in [A, B] {
        assert!(
            !sim.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::Relayed { .. })),
            "{:?}",
            sim.nodes[i].events
        );
    }
}

#[test]
fn an_introduction_older_than_the_last_acted_on_is_refused() {
    let mut sim = introduced_pair(37);
    sim.start_all();
    sim.run_for(Duration::from_millis(150));
    let mut newer = own_record(1);
    newer.timestamp += 60;
    newer.candidates[0].addr = "198.18.9.9:4000".parse().unwrap();
    sim.act(A, |n, now| n.push_record(now, &newer).unwrap());
    sim.run_for(Duration::from_millis(50));
    assert_eq!(introductions(&sim, B).last().map(|r| &r.body), Some(&newer));
    // The old record comes round again (what a mutual peer replaying a
    // captured introduction delivers), past the dedupe interval.
    sim.run_for(Duration::from_secs(2));
    let acted = introductions(&sim, B).len();
    sim.act(A, |n, now| n.push_record(now, &own_record(1)).unwrap());
    sim.run_for(Duration::from_millis(50));
    assert!(
        sim.nodes[B].drops.contains(&DropReason::StaleIntroduction),
        "{:?}",
        sim.nodes[B].drops
    );
    assert_eq!(introductions(&sim, B).len(), acted, "not acted on");
}

/// The steady relayed flow never leaves the data halves: the sender's
/// frames and seals for the relay, the relay's forwards (and counts) within
/// its limits, the receiver's opens; only activity reaches the control
/// halves, which still count the relayed bytes.
#[test]
fn relayed_traffic_stays_in_the_data_halves() {
    use super::data::{DataTun, DataUdp};
    let mut sim = relayed(5, false, Limits::default());
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    assert_eq!(relay_of(&sim, B, 0), Some(PeerId(1)));
    exchange(&mut sim, 3, "warm");
    let forwarded = |sim: &Sim| {
        let svc = sim.nodes[R1].node.relay_service().unwrap();
        svc.member(0).unwrap().forwarded_packets
    };
    let relay_tx = |sim: &Sim| {
        sim.nodes[A]
            .node
            .peer_status(PeerId(0))
            .unwrap()
            .relay_tx_bytes
    };
    let (fwd_before, tx_before) = (forwarded(&sim), relay_tx(&sim));

    let now = sim.now;
    let pkt = ip_packet(overlay(1), overlay(2), b"steady");
    let mut sealed = vec![0u8; pkt.len() + OVERHEAD];
    let r = sim.nodes[A].node.data.handle_tun(now, &pkt, &mut sealed);
    let DataTun::Send { dst, len } = r else {
        panic!("the sender's data half handed a relayed packet over: {r:?}");
    };
    assert_eq!(dst, underlay(3), "framed for the relay");
    let mut passed = vec![0u8; len + OVERHEAD];
    let r = sim.nodes[R1]
        .node
        .data
        .handle_udp(now, underlay(1), &sealed[..len], &mut passed);
    let DataUdp::Forward { dst, len } = r else {
        panic!("the relay's data half did not forward: {r:?}");
    };
    assert_eq!(dst, underlay(2), "passed on to the destination");
    let mut plain = vec![0u8; len + OVERHEAD];
    let r = sim.nodes[B]
        .node
        .data
        .handle_udp(now, underlay(3), &passed[..len], &mut plain);
    let DataUdp::WriteTun { len: n } = r else {
        panic!("the receiver's data half did not open the delivery: {r:?}");
    };
    assert_eq!(plain[..n], pkt[..], "arrives as sent");
    // The same delivery again: refused by the hop session's replay window.
    let r = sim.nodes[B]
        .node
        .data
        .handle_udp(now, underlay(3), &passed[..len], &mut plain);
    assert!(matches!(r, DataUdp::Dropped(_)), "{r:?}");
    // The same datagram from another address: the control half's to judge
    // (the relay may have moved).
    let r = sim.nodes[B]
        .node
        .data
        .handle_udp(now, underlay(4), &passed[..len], &mut plain);
    assert_eq!(r, DataUdp::Control);

    sim.run_for(REPORT_EVERY + Duration::from_millis(30));
    assert_eq!(forwarded(&sim), fwd_before + 1, "the relay counted it");
    assert!(
        relay_tx(&sim) > tx_before,
        "the sender's control half counted it"
    );
    // Still relayed, still working both ways through the simulator.
    exchange(&mut sim, 5, "after");
    assert_eq!(count(&sim, B, "after", 'a', 5), 5);
    assert_eq!(count(&sim, A, "after", 'b', 5), 5);
}

/// The relay's data half enforces the same limit as its control half: one
/// bucket, whichever half forwards.
#[test]
fn the_relays_data_half_keeps_to_the_rate_limit() {
    use super::data::DataUdp;
    let limits = Limits {
        per_member: Some(2_000),
        total: None,
    };
    let mut sim = relayed(6, false, limits);
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    let now = sim.now + Duration::from_secs(2); // a full bucket
    let (mut passed, mut refused) = (0, 0);
    for k in 0..100 {
        let pkt = ip_packet(overlay(1), overlay(2), &[k as u8; 1300]);
        let mut sealed = vec![0u8; pkt.len() + OVERHEAD];
        let super::data::DataTun::Send { len, .. } =
            sim.nodes[A].node.data.handle_tun(now, &pkt, &mut sealed)
        else {
            panic!("not sent");
        };
        let mut out = vec![0u8; len + OVERHEAD];
        match sim.nodes[R1]
            .node
            .data
            .handle_udp(now, underlay(1), &sealed[..len], &mut out)
        {
            DataUdp::Forward { .. } => passed += 1,
            DataUdp::Dropped(DropReason::Relay(crate::relay::Refusal::Rate)) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    // A bucket holds at least 64 KiB: some 48 frames of 1360 bytes pass at
    // once, then the rate (2000 B/s) refuses the rest of the burst.
    assert!((40..=55).contains(&passed), "passed {passed}");
    assert_eq!(passed + refused, 100);
    let s = sim.nodes[R1].node.relay_service().unwrap();
    assert_eq!(s.member(0).unwrap().dropped_rate, refused as u64);
}

/// A relayed packet that would not fit where a direct one does (the frame
/// and the hop's seal add 67 bytes) is answered with ICMP "fragmentation
/// needed" for its sender's kernel, as a router would; one that fits, or
/// that may be fragmented, goes through the relay no larger than a full
/// direct datagram.
#[test]
fn a_relayed_packet_too_big_for_the_path_gets_an_icmp_error() {
    use super::data::DataTun;
    const MTU: usize = 1420;
    let mut sim = relayed(7, false, Limits::default());
    for i in [A, B, R1] {
        sim.nodes[i].node.data.set_mtu(MTU);
    }
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    let budget = MTU - 67;
    let packet = |len: usize, df: bool| {
        let mut p = ip_packet(overlay(1), overlay(2), &vec![7u8; len - 20]);
        if df {
            p[6] = 0x40;
        }
        p
    };
    let now = sim.now;
    let mut out = vec![0u8; 2048];
    let big = packet(MTU, true);
    let r = sim.nodes[A].node.data.handle_tun(now, &big, &mut out);
    let DataTun::Reply { len } = r else {
        panic!("a DF packet too big for the relay was sent: {r:?}");
    };
    let icmp = &out[..len];
    let h = crate::wire::parse_ip(icmp).unwrap();
    assert_eq!(
        h.dst,
        std::net::IpAddr::V4(overlay(1)),
        "back to the sender"
    );
    assert_eq!((icmp[20], icmp[21]), (3, 4));
    assert_eq!(
        usize::from(u16::from_be_bytes([icmp[26], icmp[27]])),
        budget
    );
    // At the budget it goes, no larger than a direct datagram can be.
    for (p, what) in [
        (packet(budget, true), "at the budget"),
        (packet(MTU, false), "without DF"),
    ] {
        let r = sim.nodes[A].node.data.handle_tun(now, &p, &mut out);
        let DataTun::Send { len, .. } = r else {
            panic!("{what}: {r:?}");
        };
        if what == "at the budget" {
            assert!(len <= MTU + 32, "{len} bytes on the wire");
        }
    }
    // The daemon-free path through the simulator: the ICMP error lands on
    // the sender's TUN, the fitting packet at the receiver.
    sim.send_packet(A, &big);
    assert!(sim.nodes[A].tun.iter().any(|p| p.get(20) == Some(&3)));
    let fits = packet(budget, true);
    sim.send_packet(A, &fits);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.nodes[B].tun.contains(&fits));
}

/// The control half answers a relayed packet too big for the path as the
/// data half does (it sees them while the data half has no view yet, or
/// when the relay is reached over TCP or a pool socket).
#[test]
fn the_control_half_answers_too_big_relayed_packets_too() {
    const MTU: usize = 1420;
    let mut sim = relayed(8, false, Limits::default());
    for i in [A, B, R1] {
        sim.nodes[i].node.node.set_mtu(MTU);
    }
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    assert_eq!(relay_of(&sim, A, 0), Some(PeerId(1)));
    let mut big = ip_packet(overlay(1), overlay(2), &[7u8; MTU - 20]);
    big[6] = 0x40; // Don't Fragment
    let mut out = vec![0u8; 2048];
    let now = sim.now;
    let r = sim.nodes[A].node.node.handle_tun(now, &big, &mut out);
    let TunOutcome::Reply { len } = r else {
        panic!("the control half sent a DF packet too big for the relay: {r:?}");
    };
    assert_eq!((out[20], out[21]), (3, 4), "fragmentation needed");
    assert_eq!(
        usize::from(u16::from_be_bytes([out[26], out[27]])),
        MTU - 67
    );
    assert!(len <= 576);
}
