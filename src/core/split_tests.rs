//! Tests of the seam between the data half and the control half: what the
//! data half holds after a handshake and a rekey, that it refuses expired
//! sessions on its own, that send counters stay unique whoever seals, and
//! that it hands over what is not its own.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::data::{DataTun, DataUdp, PeerView};
use super::routes::RouteTable;
use super::sim::*;
use super::tests::{delivered, pair};
use super::*;

/// The data half's send session and the control half's current one.
fn tx_index(sim: &Sim, i: usize) -> Option<u32> {
    sim.data_view(i, PeerId(0))
        .tx
        .map(|t| t.session.local_index)
}

fn rx_indices(sim: &Sim, i: usize) -> Vec<u32> {
    let view = sim.data_view(i, PeerId(0));
    view.rx.iter().map(|s| s.local_index).collect()
}

#[test]
fn keys_reach_the_data_half_on_handshake_and_rekey() {
    let mut sim = pair(71);
    assert_eq!(tx_index(&sim, 0), None, "no session, nothing to seal with");
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let [current, previous, next] = sim.nodes[0].node.session_indices(PeerId(0));
    let first = current.expect("a session after the handshake");
    assert_eq!(tx_index(&sim, 0), Some(first));
    // Both sides initiated at once: the loser's session is the previous.
    let want: Vec<u32> = [current, previous].into_iter().flatten().collect();
    assert_eq!(rx_indices(&sim, 0), want);
    if let Some(n) = next {
        assert!(!rx_indices(&sim, 0).contains(&n), "an unconfirmed session");
    }
    let view = sim.nodes[0].node.data.view(PeerId(0)).unwrap();
    assert_eq!(view.path, Some(Via::Direct(underlay(2))));
    assert!(view.tx.is_some());

    // Traffic past the rekey point: the data half asks, the control half
    // rekeys, and the data half seals on the new session, still opening
    // the old one for packets in flight.
    for _ in 0..1400 {
        sim.send_ip(0, overlay(2), b"tick");
        sim.send_ip(1, overlay(1), b"tock");
        sim.run_for(Duration::from_millis(100));
    }
    let [current, previous, _] = sim.nodes[0].node.session_indices(PeerId(0));
    let second = current.unwrap();
    assert_ne!(second, first, "rekeyed after 140 s of traffic");
    assert_eq!(tx_index(&sim, 0), Some(second));
    let rx = rx_indices(&sim, 0);
    assert!(rx.contains(&second), "{rx:?}");
    assert_eq!(rx.len(), 1 + usize::from(previous.is_some()));
    if let Some(p) = previous {
        assert!(rx.contains(&p));
    }
    assert_eq!(
        delivered(&sim, 1, b"tick"),
        1400,
        "nothing lost across the rekey"
    );
    assert_eq!(delivered(&sim, 0, b"tock"), 1400);
}

#[test]
fn the_data_half_carries_the_traffic_and_reports_it() {
    let mut sim = pair(72);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let before = sim.nodes[0].node.peer_status(PeerId(0)).unwrap();
    let pkt = ip_packet(overlay(1), overlay(2), b"fast path");
    let mut out = vec![0u8; pkt.len() + OVERHEAD];
    let now = sim.now;
    // Straight into the data half: it seals without the control half.
    let r = sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out);
    let DataTun::Send { dst, len } = r else {
        panic!("the data half should seal: {r:?}");
    };
    assert_eq!(dst, underlay(2));
    // The control half's counters move only with the report.
    let a = sim.nodes[0]
        .node
        .data
        .poll_activity(now, true)
        .expect("a report");
    assert_eq!(a.peer, PeerId(0));
    assert_eq!(a.tx_bytes, len as u64);
    assert!(a.sent.is_some() && a.received.is_none());
    sim.nodes[0].node.node.handle_activity(now, a);
    let after = sim.nodes[0].node.peer_status(PeerId(0)).unwrap();
    assert_eq!(after.tx_bytes, before.tx_bytes + len as u64);

    // The receiver's data half opens it and writes it to the TUN.
    let mut plain = vec![0u8; len + OVERHEAD];
    let r = sim.nodes[1]
        .node
        .data
        .handle_udp(now, underlay(1), &out[..len], &mut plain);
    assert_eq!(r, DataUdp::WriteTun { len: pkt.len() });
    assert_eq!(&plain[..pkt.len()], &pkt[..]);
    // The same datagram from elsewhere is the control half's (roaming);
    // and once opened, a second copy is a replay even there.
    let elsewhere = "198.18.9.9:4000".parse().unwrap();
    let r = sim.nodes[1]
        .node
        .data
        .handle_udp(now, elsewhere, &out[..len], &mut plain);
    assert_eq!(r, DataUdp::Control);
    let r = sim.nodes[1]
        .node
        .node
        .handle_udp(now, elsewhere, &out[..len], &mut plain);
    assert!(
        matches!(r, UdpOutcome::Dropped(DropReason::Session(_))),
        "{r:?}"
    );
}

#[test]
fn the_data_half_refuses_after_reject_after_time() {
    let mut sim = pair(73);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let pkt = ip_packet(overlay(1), overlay(2), b"old");
    let mut out = vec![0u8; pkt.len() + OVERHEAD];
    let now = sim.now;
    let DataTun::Send { len, .. } = sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out) else {
        panic!("no session");
    };
    let sealed = out[..len].to_vec();
    // Cut the link so no rekey replaces the session, and let it age out.
    sim.block(underlay(1), underlay(2));
    sim.run_for(REJECT_AFTER_TIME + Duration::from_secs(1));
    let now = sim.now;
    // The data half's own check, whatever the control half has done since:
    // a view still holding the old session would not seal or open with it.
    let r = sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out);
    assert!(
        matches!(r, DataTun::Control | DataTun::Dropped(_)),
        "sealed on an expired session: {r:?}"
    );
    let mut plain = vec![0u8; len + OVERHEAD];
    let r = sim.nodes[1]
        .node
        .data
        .handle_udp(now, underlay(1), &sealed, &mut plain);
    assert!(
        matches!(
            r,
            DataUdp::Control | DataUdp::Dropped(DropReason::Session(_))
        ),
        "opened on an expired session: {r:?}"
    );
    assert_eq!(delivered(&sim, 1, b"old"), 0);
}

#[test]
fn an_expired_session_in_the_data_half_is_refused_by_the_session_itself() {
    // Without the control half's help: the view is frozen at the old
    // session (the control half never publishes again).
    let mut sim = pair(74);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let later = sim.now + REJECT_AFTER_TIME;
    let pkt = ip_packet(overlay(1), overlay(2), b"late");
    let mut out = vec![0u8; pkt.len() + OVERHEAD];
    let now = sim.now;
    let DataTun::Send { len, .. } = sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out) else {
        panic!("no session");
    };
    assert_eq!(
        sim.nodes[0]
            .node
            .data
            .handle_tun(later, &pkt, &mut out.clone()),
        DataTun::Control,
        "the control half queues it and rekeys"
    );
    let mut plain = vec![0u8; len + OVERHEAD];
    let r = sim.nodes[1]
        .node
        .data
        .handle_udp(later, underlay(1), &out[..len], &mut plain);
    assert_eq!(
        r,
        DataUdp::Dropped(DropReason::Session(session::SessionError::Expired))
    );
}

/// Another worker's data half, as the daemon starts one per TUN queue:
/// these routes and `view` for peer 0.
fn worker(routes: &RouteTable, view: &PeerView) -> DataPlane {
    let mut dp = DataPlane::default();
    dp.apply(DataUpdate::Routes(routes.clone()));
    dp.apply(DataUpdate::Peer {
        id: PeerId(0),
        view: view.clone(),
    });
    dp
}

/// The counter of data message `d`.
fn counter_of(d: &[u8]) -> u64 {
    match crate::wire::parse(d) {
        Ok(crate::wire::Packet::Data(d)) => d.counter,
        other => panic!("not a data message: {other:?}"),
    }
}

/// The counter `dp` seals `pkt` with.
fn sealed_counter(dp: &mut DataPlane, now: Instant, pkt: &[u8]) -> u64 {
    let mut out = vec![0u8; pkt.len() + OVERHEAD];
    let DataTun::Send { len, .. } = dp.handle_tun(now, pkt, &mut out) else {
        panic!("not sealed");
    };
    counter_of(&out[..len])
}

/// A pair (seeded `seed`) whose first node has a session with the
/// second, and that node's data half's view of it and routes: what the
/// daemon gives each further worker.
fn settled(seed: u64) -> (Sim, PeerView, RouteTable) {
    let mut sim = pair(seed);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let data = &sim.nodes[0].node.data;
    let (view, routes) = (data.view(PeerId(0)).unwrap().clone(), data.routes().clone());
    (sim, view, routes)
}

#[test]
fn counters_are_never_reused_across_halves_batches_and_threads() {
    let (mut sim, view, routes) = settled(75);
    let session = view.tx.clone().unwrap().session;
    let now = sim.now;
    // Four workers sealing batches on the one session at once, each with
    // its own data half as the daemon's workers have, while the control
    // half seals its own messages on it too.
    let workers: Vec<_> = (0..4u8)
        .map(|w| {
            let (routes, view) = (routes.clone(), view.clone());
            std::thread::spawn(move || {
                let mut dp = worker(&routes, &view);
                let mut batches = Vec::new();
                for batch in 0..50u8 {
                    dp.begin_batch(20);
                    let mut seen = Vec::new();
                    for k in 0..20u8 {
                        let pkt = ip_packet(overlay(1), overlay(2), &[w, batch, k]);
                        let mut out = vec![0u8; pkt.len() + OVERHEAD];
                        let DataTun::Send { len, .. } = dp.handle_tun(now, &pkt, &mut out) else {
                            panic!("worker {w} did not seal");
                        };
                        seen.push(counter_of(&out[..len]));
                    }
                    dp.end_batch();
                    batches.push(seen);
                }
                batches
            })
        })
        .collect();
    let mut control = Vec::new();
    for _ in 0..100 {
        let pkt = ip_packet(overlay(1), overlay(2), b"ctl");
        let mut out = vec![0u8; pkt.len() + OVERHEAD];
        let now = sim.now;
        if let DataTun::Send { len, .. } = sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out) {
            control.push(counter_of(&out[..len]));
        }
        sim.act(0, |n, now| {
            let _ = n.ping(now, PeerId(0));
        });
    }
    let batches: Vec<Vec<u64>> = workers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // One reservation per batch: each batch's numbers are one block.
    for b in &batches {
        assert!(
            b.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch's counters are not one block: {b:?}"
        );
    }
    let mut all: Vec<u64> = batches.into_iter().flatten().collect();
    assert_eq!(all.len(), 4000);
    all.extend(control);
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a counter was used twice");
    // The pings the control half sealed took numbers of their own.
    assert!(session.messages_sent() >= all.len() as u64 + 100);
}

/// Two workers' data halves taking turns batch by batch on one session
/// (no threads, so the interleaving is certain): each batch's counters are
/// one block, reserved when its first packet is sealed, and what a batch
/// left unused is skipped, never handed out later.
#[test]
fn each_batch_seals_on_one_block_of_counters() {
    let (sim, view, routes) = settled(77);
    let (mut a, mut b) = (worker(&routes, &view), worker(&routes, &view));
    let now = sim.now;
    let pkt = ip_packet(overlay(1), overlay(2), b"batch");
    let seal = |dp: &mut DataPlane| sealed_counter(dp, now, &pkt);
    let start = view.tx.as_ref().unwrap().session.messages_sent();
    a.begin_batch(4);
    b.begin_batch(3);
    let a1 = seal(&mut a);
    let b1 = seal(&mut b);
    let a2 = seal(&mut a);
    let b2 = seal(&mut b);
    let b3 = seal(&mut b);
    b.end_batch();
    let a3 = seal(&mut a);
    // a's batch ends one packet early: its fourth number is let go.
    a.end_batch();
    a.begin_batch(2);
    let a4 = seal(&mut a);
    a.end_batch();
    assert_eq!([a1, a2, a3], [start, start + 1, start + 2], "a's block");
    assert_eq!(
        [b1, b2, b3],
        [start + 4, start + 5, start + 6],
        "b's block, after a's"
    );
    assert_eq!(a4, start + 7, "a's next batch starts after both blocks");
    // Outside a batch (the control half's way), one number at a time.
    assert_eq!(seal(&mut b), start + 9, "a's second block took two");
}

#[test]
fn a_removed_peer_leaves_the_data_half() {
    let mut sim = pair(76);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    assert!(tx_index(&sim, 0).is_some());
    // A reload that removes the peer takes it from the data half too.
    sim.reconfigure(0, 1, Vec::new(), RelayConfig::default())
        .expect("a valid reload");
    sim.run_for(Duration::from_millis(10));
    let view = sim.nodes[0].node.data.view(PeerId(0)).unwrap();
    assert!(view.tx.is_none() && view.rx.is_empty() && view.path.is_none());
    let pkt = ip_packet(overlay(1), overlay(2), b"gone");
    let mut out = vec![0u8; pkt.len() + OVERHEAD];
    let now = sim.now;
    assert_eq!(
        sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out),
        DataTun::Dropped(DropReason::NoRoute)
    );
}

#[test]
fn padding_never_takes_a_full_packet_past_the_mtu() {
    let mut sim = pair(77);
    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    let now = sim.now;
    let mtu = 1420;
    sim.nodes[0].node.data.set_mtu(mtu);
    let overhead = crate::wire::DATA_HEADER_LEN + crate::wire::TAG_LEN;
    // A packet that fills the MTU (1420 is not a multiple of 16) is not
    // padded; a smaller one is, to the next multiple of 16.
    for (len, want) in [(mtu, mtu), (1000, 1008), (1417, 1420)] {
        let pkt = ip_packet(overlay(1), overlay(2), &vec![7u8; len - 20]);
        assert_eq!(pkt.len(), len);
        let mut out = vec![0u8; len + OVERHEAD];
        let r = sim.nodes[0].node.data.handle_tun(now, &pkt, &mut out);
        assert_eq!(
            r,
            DataTun::Send {
                dst: underlay(2),
                len: want + overhead
            },
            "a {len}-byte packet"
        );
    }
}

/// The daemon writes a TUN segment where its datagram will carry it and
/// hands over only the packet's length: what the data half leaves to the
/// control half must still be there, unsealed, for the daemon to copy out.
#[test]
fn a_packet_left_to_the_control_half_stays_where_it_lies() {
    let mut sim = pair(78);
    let pkt = ip_packet(overlay(1), overlay(2), b"in place");
    let at = crate::wire::DATA_HEADER_LEN;
    let mut buf = vec![0x5au8; at + pkt.len() + OVERHEAD];
    buf[at..at + pkt.len()].copy_from_slice(&pkt);
    let before = buf.clone();
    let now = sim.now;
    // No session yet.
    let r = sim.nodes[0]
        .node
        .data
        .handle_tun_in_place(now, &mut buf, pkt.len());
    assert_eq!(r, DataTun::Control);
    assert_eq!(buf, before, "the packet moved or changed");

    sim.start_all();
    sim.run_for(Duration::from_millis(200));
    // The session aged out (the view is frozen at it).
    let later = sim.now + REJECT_AFTER_TIME;
    let r = sim.nodes[0]
        .node
        .data
        .handle_tun_in_place(later, &mut buf, pkt.len());
    assert_eq!(r, DataTun::Control);
    assert_eq!(buf, before, "the packet moved or changed");

    // Sealed where it lies, it is what the peer opens.
    let now = sim.now;
    let r = sim.nodes[0]
        .node
        .data
        .handle_tun_in_place(now, &mut buf, pkt.len());
    let DataTun::Send { len, .. } = r else {
        panic!("not sealed: {r:?}");
    };
    let mut plain = vec![0u8; len + OVERHEAD];
    let r = sim.nodes[1]
        .node
        .data
        .handle_udp(now, underlay(1), &buf[..len], &mut plain);
    assert_eq!(r, DataUdp::WriteTun { len: pkt.len() });
    assert_eq!(plain[..pkt.len()], pkt[..]);
}

/// A TUN read of many segments (a tiny MSS) reserves counters a block at
/// a time, so another worker's packets are never more than a block ahead.
#[test]
fn a_long_batch_reserves_its_counters_a_block_at_a_time() {
    let (sim, view, routes) = settled(79);
    let (mut a, mut b) = (worker(&routes, &view), worker(&routes, &view));
    let now = sim.now;
    let pkt = ip_packet(overlay(1), overlay(2), b"tiny");
    let seal = |dp: &mut DataPlane| sealed_counter(dp, now, &pkt);
    let start = view.tx.as_ref().unwrap().session.messages_sent();
    let block = crate::core::COUNTER_BLOCK;
    a.begin_batch(1000);
    let first: Vec<u64> = (0..block).map(|_| seal(&mut a)).collect();
    assert_eq!(first, (start..start + block).collect::<Vec<_>>());
    b.begin_batch(1);
    assert_eq!(seal(&mut b), start + block, "b's block comes right after");
    b.end_batch();
    assert_eq!(seal(&mut a), start + block + 1, "a's next block after b's");
    a.end_batch();
}
