//! Simulator tests of the operator's ping ([`Node::ping`]): the pong names
//! the path it came back on and the round-trip time, direct or relayed.

use std::time::Duration;

use super::relay_tests::relayed;
use super::sim::*;
use super::tests::pair;
use super::*;
use crate::relay::Limits;

fn replies(sim: &mut Sim, i: usize) -> Vec<PingReply> {
    std::iter::from_fn(|| sim.nodes[i].node.poll_ping_reply()).collect()
}

#[test]
fn a_ping_reports_the_direct_path_and_its_rtt() {
    let mut sim = pair(31);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    let mut probes = Vec::new();
    for _ in 0..3 {
        let mut sent = None;
        sim.act(0, |n, now| sent = Some(n.ping(now, PeerId(0))));
        probes.push(sent.unwrap().expect("a session: the ping goes out"));
        sim.run_for(Duration::from_millis(200));
    }
    let got = replies(&mut sim, 0);
    assert_eq!(got.len(), 3, "{got:?}");
    for (r, probe) in got.iter().zip(&probes) {
        assert_eq!(r.peer, PeerId(0));
        assert_eq!(r.probe, *probe);
        assert_eq!(r.via, Via::Direct(underlay(2)));
        // 10 ms each way, no jitter.
        assert_eq!(r.rtt, 2 * sim.latency);
    }
    assert!(
        probes[0] != probes[1] && probes[1] != probes[2],
        "fresh ids"
    );
    // The peer answered our pings, not its own: nothing for it to report.
    assert!(replies(&mut sim, 1).is_empty());
}

#[test]
fn a_ping_to_a_relayed_peer_names_the_relay() {
    let mut sim = relayed(32, false, Limits::default());
    sim.start_all();
    sim.run_for(Duration::from_secs(3));
    let mut sent = None;
    sim.act(0, |n, now| sent = Some(n.ping(now, PeerId(0))));
    let probe = sent.unwrap().expect("relayed session");
    sim.run_for(Duration::from_millis(200));
    let got = replies(&mut sim, 0);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].probe, probe);
    assert_eq!(got[0].via, Via::Relay(PeerId(1)), "through relay 3");
    // Member → relay → member and back: four hops of 10 ms.
    assert_eq!(got[0].rtt, 4 * sim.latency);
}

#[test]
fn a_ping_without_a_session_starts_a_handshake_instead() {
    let mut sim = pair(33);
    let mut first = None;
    sim.act(0, |n, now| first = Some(n.ping(now, PeerId(0))));
    assert_eq!(first, Some(Err(PingError::NoSession)));
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.connected(0), 1, "the ping started a handshake");
    let mut second = None;
    sim.act(0, |n, now| second = Some(n.ping(now, PeerId(0))));
    assert!(matches!(second, Some(Ok(_))), "{second:?}");
    let mut unknown = None;
    sim.act(0, |n, now| unknown = Some(n.ping(now, PeerId(7))));
    assert_eq!(unknown, Some(Err(PingError::UnknownPeer)));
}

#[test]
fn an_unanswered_ping_reports_nothing() {
    let mut sim = pair(34);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    sim.blackhole(underlay(2));
    let mut sent = None;
    sim.act(0, |n, now| sent = Some(n.ping(now, PeerId(0))));
    assert!(matches!(sent, Some(Ok(_))));
    sim.run_for(Duration::from_secs(2));
    assert!(replies(&mut sim, 0).is_empty(), "no pong, no reply");
}

#[test]
fn only_the_newest_pings_are_remembered() {
    let mut sim = pair(35);
    sim.start_all();
    sim.run_for(Duration::from_millis(100));
    let mut probes = Vec::new();
    sim.act(0, |n, now| {
        for _ in 0..MAX_USER_PINGS + 3 {
            probes.push(n.ping(now, PeerId(0)).unwrap());
        }
    });
    sim.run_for(Duration::from_millis(200));
    let got: Vec<u64> = replies(&mut sim, 0).iter().map(|r| r.probe).collect();
    assert_eq!(got.len(), MAX_USER_PINGS, "the oldest three forgotten");
    assert_eq!(got, probes[3..], "answers for exactly the newest");
}
