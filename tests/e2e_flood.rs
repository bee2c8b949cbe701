//! End to end, handshake floods (issue 10): the real `kith` binary in
//! network namespaces on the emulated internet, flooded with initiations
//! a kith peer really sent, captured on the wire and replayed from a raw
//! socket (`kith::lab::flood`).
//!
//! - From 4096 spoofed sources at more than 20 000 packets/s: the tunnel
//!   keeps its throughput (measured without the flood first, in the same
//!   run) and a restarted peer gets back in at once.
//! - From each peer's own address at 1000 packets/s, for longer than the
//!   reject-after-time: rekeys keep getting through, the tunnel never
//!   stops carrying traffic. The daemons run with their protocol timers
//!   divided by 10 (`KITH_TEST_TIMER_DIVISOR`, test only) so that this
//!   takes 45 s instead of 8 minutes; the flood's rate and kith's rate
//!   limits are not scaled, so each rekey faces the same odds as at full
//!   length.
//!
//! Needs root (namespaces, TUN, raw sockets); without it these tests fail
//! with a message saying so. Both are heavy for a 2-core machine and take
//! turns.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use kith::identity::SecretKey;
use kith::lab::flood::{
    Flood, FloodPair, FloodSpec, HandshakeCounters, INITIATIONS, Packets, SPOOFED_SOURCES, Sources,
};
use kith::lab::topology::{spawn_pair, wait_both_ways};
use kith::lab::{Capture, KithNode, KithSpec};

/// Seconds per iperf3 run, and how many runs without and under the flood
/// (alternating, so a change in the shared machine's load meets both).
const IPERF_SECS: u32 = 3;
const IPERF_ROUNDS: u32 = 2;
/// The spoofed flood's rate, above the 20 000/s the issue asks for so a
/// busy machine's shortfall still clears it (the achieved rate is checked).
const SPOOFED_RATE: u32 = 25_000;
/// What the daemons' protocol timers are divided by in the replay test.
const DIVISOR: u32 = 10;
/// Packets per second from each peer's own address.
const REPLAY_RATE_PER_PEER: u32 = 1000;
/// How long the replay flood runs: 2.5 reject-after-times at the divisor.
const REPLAY_SECS: u64 = 45;

/// `kith_peer_handshakes_total` of `node` for `peer`: sessions made.
fn handshakes(node: &KithNode, peer: &str) -> f64 {
    node.metrics()
        .unwrap_or_else(|e| panic!("kith metrics in {}: {e}", node.host().netns()))
        .value(&format!("kith_peer_handshakes_total{{peer=\"{peer}\"}}"))
}

fn counters(node: &KithNode) -> HandshakeCounters {
    HandshakeCounters::read(node)
        .unwrap_or_else(|e| panic!("kith metrics in {}: {e}", node.host().netns()))
}

#[test]
fn a_flood_from_4096_spoofed_sources_keeps_the_tunnel_and_lets_a_restarted_peer_in() {
    let (_turn, lab) = common::lab_in_turn();
    let mut pair = FloodPair::start(&lab, &common::kith_bin())
        .unwrap_or_else(|e| panic!("building the flood lab: {e}"));
    assert!(
        !pair.captured.is_empty(),
        "no initiation from b to a was captured"
    );
    // b → a: the flood and the stream share a's socket and its loop.
    let c = pair
        .compare(SPOOFED_RATE, IPERF_ROUNDS, IPERF_SECS)
        .unwrap_or_else(|e| panic!("iperf3 without and under the flood: {e}"));

    // The flood alone for a while, then b restarts under it: its new
    // initiation must get through the cookie round trip and the
    // per-source limiter while 4096 strangers send.
    let before = counters(&pair.node_a);
    let cpu_before = pair.node_a.cpu_seconds().expect("a's CPU time");
    let flood = pair.flood(SPOOFED_RATE).unwrap();
    let alone = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let cpu_alone = pair.node_a.cpu_seconds().expect("a's CPU time") - cpu_before;
    let alone = alone.elapsed();
    pair.node_b.kill().unwrap();
    let restarted = Instant::now();
    pair.node_b.start().unwrap();
    let back = wait_both_ways(&mut pair.node_a, &mut pair.node_b, Duration::from_secs(20))
        .map(|_| restarted.elapsed())
        .unwrap_or_else(|e| panic!("b did not get back in under the flood: {e}"));
    let restart_flood = flood.stop().unwrap();
    let during_restart = counters(&pair.node_a).minus(before);

    let ratio = c.flooded_bps() / c.quiet_bps();
    let (sent, rate) = c.flood_sent();
    let (cpu, refused, cookies) = c.per_second();
    eprintln!(
        "captured {} initiations from b to a\n\
         TCP b → a, {IPERF_ROUNDS} × {IPERF_SECS} s each: {:.3} Gbit/s without the flood, \
         {:.3} under it ({:.0} %); runs {:?} / {:?} Gbit/s\n\
         floods during the runs: {sent} packets at {rate:.0}/s (slowest run {:.0}/s)\n\
         a under flood and stream: {cpu:.2} CPU s per s, {refused:.0} initiations refused/s, \
         {cookies:.0} cookie replies/s\n\
         a under the flood alone: {:.2} CPU s per s\n\
         b restarted under the flood ({restart_flood}): both ways again after {back:?}; \
         a meanwhile: {during_restart:?}",
        pair.captured.len(),
        c.quiet_bps() / 1e9,
        c.flooded_bps() / 1e9,
        100.0 * ratio,
        c.quiet.iter().map(|r| r.gbit_per_s()).collect::<Vec<_>>(),
        c.flooded.iter().map(|r| r.gbit_per_s()).collect::<Vec<_>>(),
        c.min_flood_rate(),
        cpu_alone / alone.as_secs_f64(),
    );

    // The flood was what the issue describes, and it reached a's handshake
    // defences (the kernel may shed some of it, not most).
    assert!(
        c.min_flood_rate() >= 20_000.0 && restart_flood.rate() >= 20_000.0,
        "the flood reached only {:.0} packets/s ({restart_flood})",
        c.min_flood_rate()
    );
    assert!(
        c.floods
            .iter()
            .chain([&restart_flood])
            .all(|f| f.sources == SPOOFED_SOURCES as usize),
        "not from {SPOOFED_SOURCES} sources: {:?}",
        c.floods
    );
    assert!(
        c.counters.refused >= sent as f64 / 2.0,
        "a refused {} initiations of the {sent} sent: the flood did not reach it",
        c.counters.refused
    );
    assert!(
        ratio >= 0.8,
        "the tunnel kept {:.0} % of its throughput under the flood",
        100.0 * ratio
    );
    // Under load b's new initiation was answered with a cookie first.
    assert!(
        during_restart.cookies_sent >= 1.0,
        "a never asked b for a cookie under the flood: {during_restart:?}"
    );
    assert!(
        back <= Duration::from_secs(5),
        "b took {back:?} to get back in under the flood"
    );
    pair.node_a.check_running().unwrap();
    pair.node_b.check_running().unwrap();
}

#[test]
fn replayed_initiations_from_each_peers_own_address_do_not_stop_rekeys() {
    let (_turn, lab) = common::lab_in_turn();
    let internet = lab.internet().unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let a_up = internet.attach(&a).unwrap();
    let b_up = internet.attach(&b).unwrap();
    let spec = |overlay: &str| {
        let mut spec = KithSpec::new(overlay, SecretKey::generate().unwrap());
        spec.env
            .push((kith::cli::TEST_TIMER_DIVISOR.into(), DIVISOR.to_string()));
        spec
    };
    let (spec_a, spec_b) = (spec("100.96.0.1/16"), spec("100.96.0.2/16"));
    let endpoints = (
        Some(format!("{}:{}", b_up.addr(), spec_b.listen_port)),
        Some(format!("{}:{}", a_up.addr(), spec_a.listen_port)),
    );
    // The attacker is the internet's router itself: every initiation
    // between a and b crosses a's link there, and it can send as either.
    let capture = Capture::start_filtered(
        internet.host(),
        &a_up.gateway_iface.name,
        &lab.dir().join("on-path.pcap"),
        INITIATIONS,
    )
    .unwrap();
    let (mut node_a, mut node_b, _) = spawn_pair(
        &lab,
        &common::kith_bin(),
        (&a, spec_a),
        (&b, spec_b),
        endpoints,
    )
    .unwrap_or_else(|e| panic!("starting kith: {e}"));
    wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("tunnel: {e}"));
    let (a_before, b_before) = (counters(&node_a), counters(&node_b));
    let (a_sessions, b_sessions) = (handshakes(&node_a, "b"), handshakes(&node_b, "a"));

    let flood = Flood::start(
        internet.host(),
        FloodSpec {
            rate: 2 * REPLAY_RATE_PER_PEER,
            sources: Sources::AsCaptured,
            packets: Packets::Live(capture.path().to_owned()),
            // Evenly paced whatever else the machine runs: a gap in the
            // flood is a free token for a rekey without the defences.
            nice: -10,
        },
    )
    .unwrap();
    let interval = Duration::from_millis(200);
    let count = (REPLAY_SECS * 1000 / interval.as_millis() as u64) as u32;
    let b_overlay = IpAddr::V4(node_b.spec().overlay_ip().unwrap());
    let a_overlay = IpAddr::V4(node_a.spec().overlay_ip().unwrap());
    let stream = a.ping_stream(b_overlay, count, interval).unwrap();
    let stream = stream.wait().unwrap();
    let report = flood.stop().unwrap();
    let end_ab = a.ping(b_overlay, 5, interval).unwrap();
    let end_ba = b.ping(a_overlay, 5, interval).unwrap();
    let captured = kith::lab::flood::initiations(&capture.stop().unwrap()).len();
    let (a_during, b_during) = (
        counters(&node_a).minus(a_before),
        counters(&node_b).minus(b_before),
    );
    let (a_rekeys, b_rekeys) = (
        handshakes(&node_a, "b") - a_sessions,
        handshakes(&node_b, "a") - b_sessions,
    );
    let reject_after = kith::core::REJECT_AFTER_TIME / DIVISOR;
    let (to_a, to_b) = (
        report.sent_to(std::net::SocketAddrV4::new(a_up.addr(), 51871)),
        report.sent_to(std::net::SocketAddrV4::new(b_up.addr(), 51871)),
    );
    eprintln!(
        "flood: {report}; {to_a} to a (from b's address), {to_b} to b (from a's); \
         {captured} distinct initiations captured on the path\n\
         timers divided by {DIVISOR}: reject after {reject_after:?}, flood for {:.1} s\n\
         a → b during the flood: {stream:?}\nat the end: a → b {end_ab:?}, b → a {end_ba:?}\n\
         a: {a_during:?}, {a_rekeys} new sessions with b\nb: {b_during:?}, {b_rekeys} new sessions with a",
        report.elapsed.as_secs_f64()
    );

    // The flood was the one asked for: each peer's own address, 1000
    // packets/s each, for longer than the reject-after-time.
    assert!(report.elapsed > reject_after * 2, "{report}");
    for (who, n) in [("a", to_a), ("b", to_b)] {
        let rate = n as f64 / report.elapsed.as_secs_f64();
        assert!(
            rate >= 0.9 * f64::from(REPLAY_RATE_PER_PEER),
            "only {rate:.0}/s went to {who}: {report:?}"
        );
    }
    assert_eq!(report.sources, 2, "sent as a and as b only: {report:?}");
    // It reached both daemons' handshake defences…
    for (who, during, n) in [("a", a_during, to_a), ("b", b_during, to_b)] {
        assert!(
            during.refused >= n as f64 / 2.0,
            "{who} refused {} of the {n} replays sent to it",
            during.refused
        );
    }
    // …and the rekeys got through it: sessions older than the
    // reject-after-time are refused, so without new ones the stream stops.
    assert!(
        a_rekeys >= 2.0 && b_rekeys >= 2.0,
        "too few rekeys under the flood: {a_rekeys} at a, {b_rekeys} at b"
    );
    assert!(
        f64::from(stream.received) >= 0.95 * f64::from(stream.transmitted),
        "the tunnel stopped carrying traffic under the flood: {stream:?}"
    );
    assert!(end_ab.all_received(), "a → b at the end: {end_ab:?}");
    assert!(end_ba.all_received(), "b → a at the end: {end_ba:?}");
    node_a.check_running().unwrap();
    node_b.check_running().unwrap();
}
