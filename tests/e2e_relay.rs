//! End to end, issue 7: relay fallback in real network namespaces with the
//! real binary. Each row builds a relay lab ([`kith::lab::relay`]): two
//! home sites on the emulated internet (DHT, STUN), one or two public hosts
//! that relay (`[relay] serve = true`), members that list them in
//! `[relay] via`. Every row asserts the path kind through `kith status`,
//! not only that packets arrive, and moves real TCP data across the change
//! it tests.
//!
//! Needs root. The labs are heavy for a 2-core machine, so the tests take
//! turns (`common::lab_in_turn`). Run with `--nocapture` for the times.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kith::daemon::control::{PeerReport, RelayMemberReport, StatusReport};
use kith::lab::nat::SiteKind;
use kith::lab::relay::{RelayPair, RelayPairSpec, relay_name};
use kith::lab::transfer::{self, TransferReport};
use kith::lab::{Capture, KithNode, Lab};

/// Daemon start → both sides report their path.
const CONNECT: Duration = Duration::from_secs(60);
/// The bound for leaving a dead path (direct or relay).
const FAILOVER: Duration = Duration::from_secs(3);
const TWENTY_MB: u64 = 20 * 1024 * 1024;
/// A paced transfer: 20 MB at this rate lasts 10 s, long enough to change
/// the path under it.
const PACE: u64 = 2 * 1024 * 1024;

fn start(lab: &Lab, spec: RelayPairSpec) -> RelayPair {
    RelayPair::start(lab, &common::kith_bin(), spec.clone())
        .unwrap_or_else(|e| panic!("building the relay lab {spec:?}: {e}"))
}

/// Waits until both sides report `path` for each other; prints the time.
fn connect(pair: &mut RelayPair, path: &str, row: &str) -> (PeerReport, PeerReport) {
    let r = pair
        .wait_path(path, CONNECT)
        .unwrap_or_else(|e| panic!("{row}: no {path} path: {e}"));
    eprintln!(
        "{row}: daemon start → first ping after {:?}, both {path} after {:?}",
        r.first_ping, r.on_path
    );
    eprintln!(
        "{row}: a's view of b: {:?}\n{row}: b's view of a: {:?}",
        r.ab, r.ba
    );
    (r.ab, r.ba)
}

/// Both views say relayed through `relay` over UDP, with a reason.
fn assert_relayed(ab: &PeerReport, ba: &PeerReport, relay: &str, row: &str) {
    for (me, view) in [("a", ab), ("b", ba)] {
        assert_eq!(view.path, "relayed", "{row}: {me}: {view:?}");
        let r = view
            .relay
            .as_ref()
            .unwrap_or_else(|| panic!("{row}: {me}: relayed without relay details: {view:?}"));
        assert_eq!(r.via, relay, "{row}: {me}: {view:?}");
        assert_eq!(r.transport, "udp", "{row}: {me}: {view:?}");
        assert!(
            view.path_reason
                .starts_with(&format!("relayed via {relay} (UDP): ")),
            "{row}: {me}: {view:?}"
        );
    }
}

/// b's overlay address on `port`, for a transfer from a.
fn b_listen(pair: &RelayPair, port: u16) -> SocketAddr {
    let ip = pair
        .node_b
        .spec()
        .overlay_ip()
        .expect("b's overlay address");
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// A paced 20 MB transfer a → b in the background.
fn paced_transfer(pair: &RelayPair, port: u16) -> JoinHandle<kith::lab::Result<TransferReport>> {
    let (a, b, listen) = (pair.a.clone(), pair.b.clone(), b_listen(pair, port));
    std::thread::spawn(move || transfer::tcp_paced(&b, listen, &a, TWENTY_MB, Some(PACE)))
}

fn assert_intact(handle: JoinHandle<kith::lab::Result<TransferReport>>, row: &str) {
    let report = handle
        .join()
        .unwrap_or_else(|_| panic!("{row}: transfer thread panicked"))
        .unwrap_or_else(|e| panic!("{row}: transfer failed: {e}"));
    eprintln!(
        "{row}: {} bytes in {:?} ({:.0} Mbit/s)",
        report.received_bytes,
        report.elapsed,
        report.mbit_per_s()
    );
    assert_eq!(
        report.received_bytes, report.sent_bytes,
        "{row}: length differs"
    );
    assert!(
        report.intact(),
        "{row}: content differs (BLAKE2b-512 mismatch)"
    );
}

/// Waits (30 s at most) until `pred` holds for `node`'s view of `peer`;
/// the time it took from `since`.
fn time_until(
    node: &mut KithNode,
    peer: &str,
    what: &str,
    since: Instant,
    pred: impl Fn(&PeerReport) -> bool,
) -> Duration {
    node.wait_peer(peer, what, Duration::from_secs(30), pred)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    since.elapsed()
}

/// The relay's report on member `name`, if it has one.
fn member(r: &StatusReport, name: &str) -> Option<RelayMemberReport> {
    r.relay_service
        .as_ref()?
        .members
        .iter()
        .find(|m| m.name == name)
        .cloned()
}

fn relay_of(p: &PeerReport) -> Option<&str> {
    p.relay.as_ref().map(|r| r.via.as_str())
}

#[test]
fn two_symmetric_nats_talk_through_the_relay() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "symmetric | symmetric";
    let mut pair = start(
        &lab,
        RelayPairSpec::sites(SiteKind::Symmetric, SiteKind::Symmetric),
    );
    let (ab, ba) = connect(&mut pair, "relayed", row);
    assert_relayed(&ab, &ba, "relay1", row);
    assert!(
        ab.path_reason.contains("both sides endpoint-dependent"),
        "{row}: {ab:?}"
    );
    assert_eq!(
        ab.peer_relays,
        ["relay1"],
        "{row}: b's record lists its relay"
    );

    let b_ip = IpAddr::V4(pair.node_b.spec().overlay_ip().unwrap());
    let ping = pair.a.ping(b_ip, 5, Duration::from_millis(100)).unwrap();
    assert!(ping.all_received(), "{row}: ping a → b: {ping:?}");
    let report = transfer::tcp(&pair.b, b_listen(&pair, 5001), &pair.a, TWENTY_MB).unwrap();
    eprintln!(
        "{row}: 20 MB through the relay at {:.0} Mbit/s",
        report.mbit_per_s()
    );
    assert!(
        report.intact(),
        "{row}: 20 MB through the relay: {report:?}"
    );

    // Both ends count it (the data plane reports within 20 ms); so does
    // the relay, per member.
    let counted = |p: &PeerReport| p.relay.as_ref().is_some_and(|r| r.tx_bytes > TWENTY_MB);
    let ab = pair
        .node_a
        .wait_peer(
            "b",
            "a's relayed bytes counted",
            Duration::from_secs(2),
            counted,
        )
        .unwrap_or_else(|e| panic!("{row}: {e:#}"));
    assert_eq!(
        ab.path, "relayed",
        "{row}: still relayed after the transfer"
    );
    let report = pair.relays[0].status().unwrap();
    eprintln!("{row}: relay service: {:?}", report.relay_service);
    let a = member(&report, "a").expect("a in the relay's report");
    let b = member(&report, "b").expect("b in the relay's report");
    assert!(a.forwarded_bytes > TWENTY_MB, "{row}: {a:?}");
    assert!(b.delivered_bytes > TWENTY_MB, "{row}: {b:?}");
    assert_eq!(a.dropped_rate, 0, "{row}: no limit set: {a:?}");
}

#[test]
fn a_site_without_udp_is_relayed_over_tcp() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "UDP blocked | cone";
    let mut pair = start(
        &lab,
        RelayPairSpec {
            tcp: true,
            ..RelayPairSpec::sites(SiteKind::UdpBlocked, SiteKind::Cone)
        },
    );
    let (ab, ba) = connect(&mut pair, "relayed", row);
    let via = |p: &PeerReport| p.relay.clone().expect("relay details");
    assert_eq!(via(&ab).via, "relay1", "{row}: {ab:?}");
    assert_eq!(
        via(&ab).transport,
        "tcp",
        "{row}: a reaches the relay over TCP: {ab:?}"
    );
    assert!(
        ab.path_reason.starts_with("relayed via relay1 (TCP): "),
        "{row}: {ab:?}"
    );
    assert_eq!(
        via(&ba).transport,
        "udp",
        "{row}: b's own hop is UDP: {ba:?}"
    );

    let report = transfer::tcp(&pair.b, b_listen(&pair, 5007), &pair.a, TWENTY_MB).unwrap();
    eprintln!(
        "{row}: 20 MB through the relay at {:.0} Mbit/s",
        report.mbit_per_s()
    );
    assert!(report.intact(), "{row}: {report:?}");
    let report = pair.relays[0].status().unwrap();
    eprintln!("{row}: relay service: {:?}", report.relay_service);
    let svc = report.relay_service.as_ref().unwrap();
    assert_eq!(svc.tcp_port, Some(kith::lab::relay::RELAY_TCP_PORT));
    let a = member(&report, "a").unwrap();
    assert_eq!(a.transport.as_deref(), Some("tcp"), "{row}: {a:?}");
    assert!(a.forwarded_bytes > TWENTY_MB, "{row}: {a:?}");

    // A stranger's connections to the relay port that carry nothing
    // authenticated are closed, and one address gets at most 8: the ninth
    // is closed at once (read first: the reads go newest first).
    let relay_tcp = SocketAddr::new(
        IpAddr::V4(pair.relay_hosts[0].1.addr()),
        kith::lab::relay::RELAY_TCP_PORT,
    );
    let closed_after = pair
        .b
        .run_in(move || {
            use std::io::{Read, Write};
            let start = Instant::now();
            let mut conns: Vec<std::net::TcpStream> = (0..9)
                .map(|_| {
                    std::net::TcpStream::connect_timeout(&relay_tcp, Duration::from_secs(5))
                        .unwrap()
                })
                .collect();
            // Junk that is framed but never authenticates.
            conns[0].write_all(&[0, 4, 0x84, 0, 0, 0]).unwrap();
            let mut times = Vec::new();
            for c in conns.iter_mut().rev() {
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = [0u8; 64];
                // Closed (EOF or reset) before the 30 s read timeout; a
                // timeout means the relay kept the connection.
                let n = c.read(&mut buf);
                let closed = match &n {
                    Ok(0) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => false,
                };
                assert!(
                    closed,
                    "the relay kept a stranger's connection or sent it something: {n:?}"
                );
                times.push(start.elapsed());
            }
            times
        })
        .unwrap();
    eprintln!("{row}: a stranger's idle TCP connections closed after {closed_after:?}");
    assert!(
        closed_after[0] < Duration::from_secs(5), /* half the relay's 10 s AUTH_WITHIN */
        "{row}: the ninth connection from one address was kept: {closed_after:?}"
    );
    assert!(
        closed_after[1] >= Duration::from_secs(5), /* half the relay's 10 s AUTH_WITHIN */
        "{row}: the first eight get their chance to authenticate: {closed_after:?}"
    );
    let ab = pair.node_a.peer_status("b").unwrap();
    assert_eq!(
        ab.path, "relayed",
        "{row}: the member is unaffected: {ab:?}"
    );

    // UDP comes back: a's next UDP copy reaches the relay, which answers
    // over UDP, and a leaves TCP.
    pair.site_a.router.unblock_udp().unwrap();
    let unblocked = Instant::now();
    pair.relays[0]
        .wait_status("a back on UDP", Duration::from_secs(30), |r| {
            member(r, "a").is_some_and(|m| m.transport.as_deref() == Some("udp"))
        })
        .unwrap_or_else(|e| panic!("{row}: a still on TCP 30 s after UDP came back: {e}"));
    eprintln!(
        "{row}: UDP unblocked → a reaches the relay over UDP after {:?}",
        unblocked.elapsed()
    );
    assert!(
        pair.node_a
            .log()
            .contains("relay: UDP answers again; leaving TCP"),
        "{row}: a says it left TCP"
    );
}

#[test]
fn symmetric_behind_symmetric_cgnat_and_cone_always_connect() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "symmetric behind symmetric CGNAT | cone";
    let mut pair = start(
        &lab,
        RelayPairSpec::sites(SiteKind::SymmetricCgnat, SiteKind::Cone),
    );
    let t = kith::lab::topology::wait_both_ways(&mut pair.node_a, &mut pair.node_b, CONNECT)
        .unwrap_or_else(|e| panic!("{row}: no path at all: {e}"))
        .saturating_duration_since(pair.started);
    let (ab, ba) = (
        pair.node_a.peer_status("b").unwrap(),
        pair.node_b.peer_status("a").unwrap(),
    );
    eprintln!(
        "{row}: first ping after {t:?}; a: {} ({}); b: {} ({})",
        ab.path, ab.path_reason, ba.path, ba.path_reason
    );
    for (me, view) in [("a", &ab), ("b", &ba)] {
        assert!(
            view.path == "direct" || view.path == "relayed",
            "{row}: {me}: never no path: {view:?}"
        );
    }
    let report = transfer::tcp(&pair.b, b_listen(&pair, 5002), &pair.a, TWENTY_MB).unwrap();
    assert!(report.intact(), "{row}: {report:?}");
}

#[test]
fn blocked_punching_starts_relayed_and_goes_direct_under_a_transfer() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "cone | cone, punching blocked";
    let mut pair = start(
        &lab,
        RelayPairSpec {
            cut: true,
            ..RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone)
        },
    );
    let (ab, ba) = connect(&mut pair, "relayed", row);
    assert_relayed(&ab, &ba, "relay1", row);

    let transfer = paced_transfer(&pair, 5003);
    std::thread::sleep(Duration::from_secs(3));
    pair.lift_cut().unwrap();
    let lifted = Instant::now();
    let a = time_until(&mut pair.node_a, "b", "a goes direct", lifted, |p| {
        p.path == "direct"
    });
    let b = time_until(&mut pair.node_b, "a", "b goes direct", lifted, |p| {
        p.path == "direct"
    });
    eprintln!("{row}: rule lifted → direct after {a:?} (a) / {b:?} (b)");
    assert_intact(transfer, row);
    let ab = pair.node_a.peer_status("b").unwrap();
    assert_eq!(ab.path, "direct", "{row}: {ab:?}");
    assert!(ab.relay.is_none(), "{row}: {ab:?}");
}

/// Hard-NAT traversal keeps running under a relayed session: a cone and a
/// symmetric site meet through the relay (neither's handshake gets through
/// the other's NAT), then a's port probes, now path pings on that session,
/// land on one of b's extra sockets and both go direct.
#[test]
fn a_relayed_cone_symmetric_pair_goes_direct_by_port_probing() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "cone | symmetric, with a relay";
    let mut pair = start(
        &lab,
        RelayPairSpec::sites(SiteKind::Cone, SiteKind::Symmetric),
    );
    let (ab, ba) = connect(&mut pair, "direct", row);
    for (me, node) in [("a", &mut pair.node_a), ("b", &mut pair.node_b)] {
        node.wait_log(&["peer relayed", "relay1"], Duration::from_secs(1))
            .or_else(|_| node.wait_log(&["peer connected", "relayed"], Duration::from_secs(1)))
            .unwrap_or_else(|e| panic!("{row}: {me} was never relayed first: {e}"));
        node.wait_log(&["peer direct again"], Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{row}: {me} did not leave the relay: {e}"));
    }
    assert!(ab.path_reason.contains("port probing"), "{row}: a: {ab:?}");
    assert!(
        ab.relay.is_none() && ba.relay.is_none(),
        "{row}: {ab:?} {ba:?}"
    );
    let report = transfer::tcp(&pair.b, b_listen(&pair, 5009), &pair.a, TWENTY_MB).unwrap();
    assert!(report.intact(), "{row}: {report:?}");
}

/// "Call me now" through a member that does not relay: a and b have no
/// DHT and no address for each other, only a session each with a public
/// member. Without introductions they never connect; with them, each gets
/// the other's signed record through it and both punch at once.
#[test]
fn a_mutual_peer_that_does_not_relay_introduces_a_cone_pair() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "cone | cone, mutual peer, no DHT";
    let mut pair = start(
        &lab,
        RelayPairSpec {
            serve: false,
            dht: false,
            ..RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone)
        },
    );
    let (ab, ba) = connect(&mut pair, "direct", row);
    for (me, view) in [("a", &ab), ("b", &ba)] {
        assert!(view.relay.is_none(), "{row}: {me}: {view:?}");
        assert_eq!(
            view.path_reason, "direct through the NATs (hole punched)",
            "{row}: {me}: {view:?}"
        );
    }
    for (me, node) in [("a", &mut pair.node_a), ("b", &mut pair.node_b)] {
        node.wait_log(
            &["introduced: connecting now", "relay1"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{row}: {me} logged no introduction: {e}"));
    }
    let m = pair.relays[0].status().unwrap();
    assert!(m.relay_service.is_none(), "{row}: relay1 serves: {m:?}");
    let report = transfer::tcp(&pair.b, b_listen(&pair, 5008), &pair.a, TWENTY_MB).unwrap();
    assert!(report.intact(), "{row}: {report:?}");
}

#[test]
fn a_dead_direct_path_falls_back_to_the_relay_within_3s() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "cone | cone, direct path then blocked";
    let mut pair = start(&lab, RelayPairSpec::sites(SiteKind::Cone, SiteKind::Cone));
    connect(&mut pair, "direct", row);

    let transfer = paced_transfer(&pair, 5004);
    std::thread::sleep(Duration::from_secs(2));
    pair.cut_direct().unwrap();
    let cut = Instant::now();
    let relayed = |p: &PeerReport| p.path == "relayed";
    let a = time_until(&mut pair.node_a, "b", "a falls back", cut, relayed);
    let b = time_until(&mut pair.node_b, "a", "b falls back", cut, relayed);
    eprintln!("{row}: direct path cut → relayed after {a:?} (a, sending) / {b:?} (b)");
    assert!(a <= FAILOVER, "{row}: a fell back after {a:?}");
    assert!(b <= FAILOVER, "{row}: b fell back after {b:?}");
    assert_intact(transfer, row);
    let ab = pair.node_a.peer_status("b").unwrap();
    assert_eq!(relay_of(&ab), Some("relay1"), "{row}: {ab:?}");
    assert!(
        ab.path_reason.contains("the direct path stopped answering"),
        "{row}: {ab:?}"
    );
}

#[test]
fn a_dead_relay_is_replaced_within_3s() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "symmetric | symmetric, relay killed";
    let mut pair = start(
        &lab,
        RelayPairSpec {
            relays: 2,
            ..RelayPairSpec::sites(SiteKind::Symmetric, SiteKind::Symmetric)
        },
    );
    let (ab, _) = connect(&mut pair, "relayed", row);
    let first = relay_of(&ab).expect("a relay").to_string();
    let dead = (0..2).find(|i| relay_name(*i) == first).unwrap();
    let other = relay_name(1 - dead);

    let transfer = paced_transfer(&pair, 5005);
    std::thread::sleep(Duration::from_secs(2));
    pair.relays[dead].kill().unwrap();
    let killed = Instant::now();
    let moved = |p: &PeerReport| relay_of(p) == Some(other.as_str());
    let a = time_until(&mut pair.node_a, "b", "a moves relay", killed, moved);
    let b = time_until(&mut pair.node_b, "a", "b moves relay", killed, moved);
    eprintln!("{row}: {first} killed → {other} after {a:?} (a, sending) / {b:?} (b)");
    assert!(a <= FAILOVER, "{row}: a moved after {a:?}");
    assert!(b <= FAILOVER, "{row}: b moved after {b:?}");
    for (me, node) in [("a", &mut pair.node_a), ("b", &mut pair.node_b)] {
        node.wait_log(
            &["peer moved to another relay", &first, &other],
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{row}: {me} logged no relay change: {e}"));
    }
    assert_intact(transfer, row);
}

#[test]
fn the_relay_refuses_strangers_and_sees_no_plaintext() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "refusals and privacy";
    let mut pair = start(
        &lab,
        RelayPairSpec {
            strangers: true,
            ..RelayPairSpec::sites(SiteKind::Symmetric, SiteKind::Symmetric)
        },
    );
    connect(&mut pair, "relayed", row);

    // A marker inside pings a → b: on b's TUN in the clear, never on the
    // relay's wire.
    let marker = "6b6974682d6d61726b"; // "kith-mark"
    let dir = lab.dir().to_owned();
    let relay_if = pair.relay_hosts[0].1.iface.name.clone();
    let on_relay =
        Capture::start(&pair.relay_hosts[0].0, &relay_if, &dir.join("relay.pcap")).unwrap();
    let on_b = Capture::start(&pair.b, "kith0", &dir.join("b-tun.pcap")).unwrap();
    let b_ip = pair.node_b.spec().overlay_ip().unwrap().to_string();
    pair.a
        .exec("ping", &["-c", "5", "-i", "0.1", "-p", marker, &b_ip])
        .unwrap();
    let (relay_pcap, b_pcap) = (on_relay.stop().unwrap(), on_b.stop().unwrap());
    let needle = b"kith-mark";
    assert!(
        b_pcap.count_containing(needle) >= 5,
        "{row}: the marker must reach b's TUN ({} packets there)",
        b_pcap.count()
    );
    assert!(
        relay_pcap.count() >= 10,
        "{row}: the pings went through the relay"
    );
    assert_eq!(
        relay_pcap.count_containing(needle),
        0,
        "{row}: the relay's wire carried the plaintext marker"
    );

    // a tries "ghost" (a key the relay does not know) and "offline" (a
    // member with no session) through the relay: both refused, counted.
    let svc = pair.relays[0]
        .wait_status("both refusals", Duration::from_secs(30), |r| {
            r.relay_service
                .as_ref()
                .is_some_and(|s| s.refused_unknown > 0 && s.refused_no_session > 0)
        })
        .unwrap_or_else(|e| panic!("{row}: refusals not counted: {e}"))
        .relay_service
        .unwrap();
    eprintln!("{row}: relay service: {svc:?}");
    for p in ["ghost", "offline"] {
        let view = pair.node_a.peer_status(p).unwrap();
        assert_eq!(view.path, "none", "{row}: {p}: {view:?}");
    }
}

#[test]
fn the_relay_holds_a_member_to_its_rate() {
    let (_turn, lab) = common::lab_in_turn();
    let row = "rate limit";
    let rate: u64 = 1_000_000; // "8 Mbit/s"
    let mut pair = start(
        &lab,
        RelayPairSpec {
            rate: Some("8 Mbit/s".into()),
            ..RelayPairSpec::sites(SiteKind::Symmetric, SiteKind::Symmetric)
        },
    );
    connect(&mut pair, "relayed", row);
    let report = transfer::udp(
        &pair.b,
        b_listen(&pair, 5006),
        &pair.a,
        2 * rate,
        Duration::from_secs(5),
    )
    .unwrap();
    let got = report.received_rate();
    eprintln!(
        "{row}: sent {:.0} kB/s, {:.0} kB/s arrived (rate {} kB/s)",
        report.sent_bytes as f64 / report.elapsed.as_secs_f64() / 1e3,
        got / 1e3,
        rate / 1000
    );
    // The bucket counts whole relayed frames (~10% more than the payload)
    // and lets a 250 ms burst through at the start.
    assert!(
        got > 0.6 * rate as f64 && got < 1.15 * rate as f64,
        "{row}: {got:.0} B/s arrived at twice a {rate} B/s limit"
    );
    let a = member(&pair.relays[0].status().unwrap(), "a").unwrap();
    assert!(a.dropped_rate > 0, "{row}: drops counted: {a:?}");
}
