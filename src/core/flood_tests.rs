//! Simulator tests of the handshake defences (`cookie.rs`) under floods:
//! the tunnel must live through them, rekeys included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::sim::*;
use super::tests::{delivered, pair};
use super::*;
use crate::wire;

const STEP: Duration = Duration::from_millis(10);

/// Steps of `STEP` in `d`.
fn steps(d: Duration) -> u32 {
    (d.as_millis() / STEP.as_millis()) as u32
}

/// The first session index node `i` holds for its peer 0.
fn session(sim: &Sim, i: usize) -> Option<u32> {
    sim.nodes[i].node.session_indices(PeerId(0))[0]
}

#[test]
fn a_replay_flood_spoofing_both_peers_lets_rekeys_through_for_ten_minutes() {
    let mut sim = pair(51);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    let mut rng = StdRng::seed_from_u64(52);
    // Everything the two peers put on the wire, replayed from the address
    // it came from: half of the flood the newest initiation of either
    // peer (it carries a valid mac1, and a valid mac2 once the peer has a
    // cookie), half anything captured.
    let mut captured: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    // The newest initiation from a (index 0) and from b (index 1).
    let mut newest_initiation = [None, None];
    let mut sessions = vec![session(&sim, 0)];
    let ten_minutes = steps(Duration::from_secs(600));
    for step in 0..ten_minutes {
        for entry in sim.wire_log.drain(..) {
            if entry.2[0] == wire::TYPE_INITIATION {
                newest_initiation[usize::from(entry.0 != underlay(1))] = Some(captured.len());
            }
            captured.push(entry);
        }
        for k in 0..10 {
            let pick = match newest_initiation[k % 4 / 2] {
                Some(h) if k % 2 == 0 => h,
                _ => rng.random_range(0..captured.len()),
            };
            let (from, to, bytes) = captured[pick].clone();
            sim.deliver(from, to, &bytes);
        }
        if step % 100 == 0 {
            sim.send_ip(0, overlay(2), b"a-to-b");
            sim.send_ip(1, overlay(1), b"b-to-a");
            let s = session(&sim, 0);
            if sessions.last() != Some(&s) {
                sessions.push(s);
            }
        }
        sim.run_for(STEP);
    }
    let sent = (ten_minutes / 100) as usize;
    let (a_got, b_got) = (delivered(&sim, 0, b"b-to-a"), delivered(&sim, 1, b"a-to-b"));
    assert!(
        a_got >= sent - 3 && b_got >= sent - 3,
        "delivered {b_got} and {a_got} of {sent}"
    );
    // Rekeyed every ~2 minutes all along, under load, with cookies.
    assert!(sessions.len() >= 5, "sessions: {sessions:?}");
    let (a, b) = (
        sim.nodes[0].node.handshake_stats(),
        sim.nodes[1].node.handshake_stats(),
    );
    assert!(a.cookies_accepted + b.cookies_accepted >= 4, "{a:?} {b:?}");
    assert!(a.refused + b.refused > 100_000, "{a:?} {b:?}");
}

/// An initiation to `responder` with a valid mac1 (anyone can compute it
/// from the public key in the DHT) and random bytes for the rest.
fn forged_initiation(rng: &mut StdRng, responder: u8) -> Vec<u8> {
    let mut noise_part = [0u8; wire::NOISE_INIT_LEN];
    rng.fill_bytes(&mut noise_part);
    let mut msg = vec![0u8; wire::INITIATION_LEN];
    wire::emit_initiation(&mut msg, rng.next_u32(), &noise_part).unwrap();
    let (mac1_at, mac2_at) = wire::mac_offsets(msg.len());
    let key = noise::mac1_key(&key(responder).public().x25519());
    let mac1 = noise::mac(&key, &msg[..mac1_at]);
    msg[mac1_at..mac2_at].copy_from_slice(&mac1);
    msg
}

#[test]
fn a_flood_from_5000_spoofed_sources_does_not_lock_out_a_roaming_peer() {
    let mut sim = pair(61);
    sim.start_all();
    sim.run_for(Duration::from_secs(1));
    let mut rng = StdRng::seed_from_u64(62);
    let spoofed: Vec<SocketAddr> = (0..5000u32)
        .map(|i| {
            let ip = Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8);
            SocketAddr::new(IpAddr::V4(ip), 1024 + (i % 60000) as u16)
        })
        .collect();
    let b = underlay(2);
    let roamed: SocketAddr = "198.18.7.7:40001".parse().unwrap();
    let mut before_roam = None;
    let mut sent_after = 0;
    // Each source once a second, for four minutes (two rekeys); a moves to
    // a new address after 30 s.
    for step in 0..steps(Duration::from_secs(240)) {
        for k in 0..50 {
            let from = spoofed[(step as usize * 50 + k) % spoofed.len()];
            let msg = forged_initiation(&mut rng, 2);
            sim.deliver(from, b, &msg);
        }
        if step == steps(Duration::from_secs(30)) {
            sim.nodes[0].addr = roamed;
            before_roam = session(&sim, 1);
        }
        if step % 100 == 0 && step > steps(Duration::from_secs(30)) {
            sim.send_ip(0, overlay(2), b"a-to-b");
            sim.send_ip(1, overlay(1), b"b-to-a");
            sent_after += 1;
        }
        sim.wire_log.clear();
        sim.nodes[1].drops.clear();
        sim.run_for(STEP);
    }
    let (a_got, b_got) = (delivered(&sim, 0, b"b-to-a"), delivered(&sim, 1, b"a-to-b"));
    assert!(
        a_got >= sent_after - 3 && b_got >= sent_after - 3,
        "delivered {b_got} and {a_got} of {sent_after}"
    );
    assert_eq!(
        sim.nodes[1].node.peer_status(PeerId(0)).unwrap().endpoint,
        Some(roamed)
    );
    assert_ne!(session(&sim, 1), before_roam, "no rekey after the roam");
    let stats = sim.nodes[1].node.handshake_stats();
    // The forgeries cost b a cookie reply each, not a DH.
    assert!(stats.cookies_sent > 1_000_000, "{stats:?}");
}
