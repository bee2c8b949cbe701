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
    Flood, FloodPair, FloodSpec, INITIATIONS, Packets, SPOOFED_SOURCES, Sources,
};
use kith::lab::topology::{spawn_pair, wait_both_ways};
use kith::lab::{Capture, KithNode, KithSpec, iperf};

/// Seconds per iperf3 run: one without the flood, one under it.
const IPERF_SECS: u32 = 5;
/// The spoofed flood's rate, above the 20 000/s the issue asks for so a
/// busy machine's shortfall still clears it (the achieved rate is checked).
const SPOOFED_RATE: u32 = 25_000;
/// What the daemons' protocol timers are divided by in the replay test.
const DIVISOR: u32 = 10;
/// Packets per second from each peer's own address.
const REPLAY_RATE_PER_PEER: u32 = 1000;
/// How long the replay flood runs: 2.5 reject-after-times at the divisor.
const REPLAY_SECS: u64 = 45;

/// Handshake counters of one daemon, from `kith metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    refused: f64,
    cookies_sent: f64,
    handshakes_with_peer: f64,
}

impl Counters {
    fn read(node: &KithNode, peer: &str) -> Self {
        let m = node
            .metrics()
            .unwrap_or_else(|e| panic!("kith metrics in {}: {e}", node.host().netns()));
        Self {
            refused: m.value("kith_handshakes_refused_total"),
            cookies_sent: m.value("kith_cookies_sent_total"),
            handshakes_with_peer: m
                .value(&format!("kith_peer_handshakes_total{{peer=\"{peer}\"}}")),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            refused: self.refused - before.refused,
            cookies_sent: self.cookies_sent - before.cookies_sent,
            handshakes_with_peer: self.handshakes_with_peer - before.handshakes_with_peer,
        }
    }
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
    let a_overlay = IpAddr::V4(pair.node_a.spec().overlay_ip().unwrap());
    // b → a: the flood and the stream share a's socket and its one loop.
    let quiet = iperf::tcp(&pair.a, &pair.b, a_overlay, 5201, IPERF_SECS)
        .unwrap_or_else(|e| panic!("iperf3 without the flood: {e}"));

    let before = Counters::read(&pair.node_a, "b");
    let cpu_before = pair.node_a.cpu_seconds().expect("a's CPU time");
    let flood = pair.flood(SPOOFED_RATE).unwrap();
    let flood_started = Instant::now();
    let loaded = iperf::tcp(&pair.a, &pair.b, a_overlay, 5202, IPERF_SECS)
        .unwrap_or_else(|e| panic!("iperf3 under the flood: {e}"));
    // b restarts while a is still flooded: its new initiation must get
    // through the cookie round trip and the per-source limiter that 4096
    // strangers are hammering.
    pair.node_b.kill().unwrap();
    let restarted = Instant::now();
    pair.node_b.start().unwrap();
    let back = wait_both_ways(&mut pair.node_a, &mut pair.node_b, Duration::from_secs(20))
        .map(|_| restarted.elapsed())
        .unwrap_or_else(|e| panic!("b did not get back in under the flood: {e}"));
    let report = flood.stop().unwrap();
    let flood_time = flood_started.elapsed();
    let cpu = pair.node_a.cpu_seconds().expect("a's CPU time") - cpu_before;
    let during = Counters::read(&pair.node_a, "b").since(before);

    let ratio = loaded.bits_per_second / quiet.bits_per_second;
    eprintln!(
        "captured {} initiations from b to a\n\
         flood: {report}\n\
         TCP b → a: {:.3} Gbit/s without the flood, {:.3} Gbit/s under it ({:.0} %)\n\
         b restarted under the flood: both ways again after {back:?}\n\
         a during the flood ({:.1} s): {:.1} CPU s ({:.0} % of one core), \
         {} initiations refused ({:.0}/s), {} cookie replies ({:.0}/s)",
        pair.captured.len(),
        quiet.gbit_per_s(),
        loaded.gbit_per_s(),
        100.0 * ratio,
        flood_time.as_secs_f64(),
        cpu,
        100.0 * cpu / flood_time.as_secs_f64(),
        during.refused,
        during.refused / flood_time.as_secs_f64(),
        during.cookies_sent,
        during.cookies_sent / flood_time.as_secs_f64(),
    );

    // The flood was what the issue describes, and it reached a's handshake
    // defences (the kernel may shed some of it, not most).
    assert!(
        report.rate() >= 20_000.0,
        "the flood reached only {:.0} packets/s",
        report.rate()
    );
    assert_eq!(report.sources, SPOOFED_SOURCES as usize, "{report}");
    assert!(
        during.refused >= report.sent as f64 / 4.0,
        "a refused {} initiations of the {} sent: the flood did not reach it",
        during.refused,
        report.sent
    );
    assert!(
        during.cookies_sent >= 1.0,
        "a never asked for a cookie under the flood: {during:?}"
    );
    assert!(
        ratio >= 0.8,
        "the tunnel kept {:.0} % of its throughput under the flood ({:.3} of {:.3} Gbit/s)",
        100.0 * ratio,
        loaded.gbit_per_s(),
        quiet.gbit_per_s()
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
    let (a_before, b_before) = (Counters::read(&node_a, "b"), Counters::read(&node_b, "a"));

    let flood = Flood::start(
        internet.host(),
        FloodSpec {
            rate: 2 * REPLAY_RATE_PER_PEER,
            sources: Sources::AsCaptured,
            packets: Packets::Live(capture.path().to_owned()),
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
        Counters::read(&node_a, "b").since(a_before),
        Counters::read(&node_b, "a").since(b_before),
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
         a: {a_during:?}\nb: {b_during:?}",
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
        a_during.handshakes_with_peer >= 2.0 && b_during.handshakes_with_peer >= 2.0,
        "too few rekeys under the flood: a {a_during:?}, b {b_during:?}"
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
