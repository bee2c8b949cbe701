//! End to end: start-up without DNS, names that resolve late, and several
//! networks on one host (issue 8, "Start-up and names", "Several networks").
//!
//! DNS is made unreachable inside the lab: host `a` gets its own
//! `resolv.conf` (through `ip netns exec`'s `/etc/netns`) naming a server
//! in 198.18.53.0/24, which `a` routes to `b`, and `b` does not forward:
//! every query is swallowed inside the lab, so lookups time out exactly as
//! on a machine that boots before its network. A capture on `a`'s link
//! shows the queries going out, so the test knows DNS really was asked and
//! really did not answer.
//!
//! Needs root; fails (never skips) without it.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use kith::identity::SecretKey;
use kith::lab::topology::{A_OVERLAY, B_OVERLAY};
use kith::lab::{Capture, Host, KithNode, KithSpec, Lab};

/// A DNS server address nothing answers at (see the module doc).
const DEAD_DNS: &str = "198.18.53.53";

/// `a` and `b` on one link (198.18.0.1, .2); `a` resolves names only
/// through `hosts` (written by the caller) and a DNS server that never
/// answers.
fn hosts_without_dns(lab: &Lab) -> (Host, Host, String) {
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let (a_if, _) = lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24").unwrap();
    a.ip(&["route", "add", "198.18.53.0/24", "via", "198.18.0.2"])
        .unwrap();
    // One quick try per lookup: the daemon's retries are what is tested.
    a.set_etc_file(
        "resolv.conf",
        &format!("nameserver {DEAD_DNS}\noptions timeout:2 attempts:1\n"),
    )
    .unwrap();
    a.set_etc_file("hosts", "127.0.0.1 localhost\n").unwrap();
    (a, b, a_if.name)
}

/// b: knows a's key but no address for it (dht off), so only a can open
/// the tunnel: what is timed is a's first handshake.
fn start_b(lab: &Lab, b: &Host, spec_b: &KithSpec, spec_a: &KithSpec) -> KithNode {
    let mut node = lab
        .spawn_kith(
            b,
            &common::kith_bin(),
            spec_b.clone().peer("a", spec_a, None),
        )
        .unwrap();
    node.wait_ready(Duration::from_secs(10)).unwrap();
    node
}

#[test]
fn with_dns_unreachable_and_named_stun_servers_a_static_peer_is_up_within_a_second() {
    let lab = common::lab();
    let (a, b, a_if) = hosts_without_dns(&lab);
    let capture = Capture::start(&a, &a_if, &lab.dir().join("a-link.pcap")).unwrap();
    let spec_a = KithSpec::new("100.96.0.1/16", SecretKey::generate().unwrap());
    let spec_b = KithSpec::new("100.96.0.2/16", SecretKey::generate().unwrap());
    let _node_b = start_b(&lab, &b, &spec_b, &spec_a);

    // a: the default STUN servers (names), a static IP endpoint for b.
    let mut spec = spec_a.peer("b", &spec_b, Some("198.18.0.2:51871".into()));
    spec.discovery.default_stun = true;
    let started = Instant::now();
    let mut node_a = lab.spawn_kith(&a, &common::kith_bin(), spec).unwrap();
    let report = node_a
        .wait_peer("b", "connected", Duration::from_secs(10), |p| {
            p.path == "direct"
        })
        .unwrap();
    let took = started.elapsed();
    eprintln!("a connected to b {took:?} after its start (DNS unreachable): {report:?}");
    assert!(
        took <= Duration::from_secs(1),
        "the tunnel to a static-IP peer took {took:?} with DNS unreachable (log:\n{})",
        node_a.log_tail(20)
    );
    a.wait_reachable(IpAddr::V4(B_OVERLAY), Duration::from_secs(5))
        .unwrap();

    // The lookups did go out and were never answered: they failed in the
    // background while the tunnel was already up.
    node_a
        .wait_log(
            &["DNS lookup failed; retrying in the background"],
            Duration::from_secs(15),
        )
        .unwrap();
    let pcap = capture.stop().unwrap();
    let queries = pcap.count_containing(b"\x06google\x03com");
    assert!(
        queries > 0,
        "no DNS query for the default STUN server left a: DNS was not exercised"
    );
    node_a.check_running().unwrap();
}

#[test]
fn a_static_endpoint_name_that_starts_resolving_later_is_reached() {
    let lab = common::lab();
    let (a, b, _) = hosts_without_dns(&lab);
    let spec_a = KithSpec::new("100.96.0.1/16", SecretKey::generate().unwrap());
    let spec_b = KithSpec::new("100.96.0.2/16", SecretKey::generate().unwrap());
    let _node_b = start_b(&lab, &b, &spec_b, &spec_a);
    let spec = spec_a.peer("b", &spec_b, Some("b.kith-lab.test:51871".into()));
    let mut node_a = lab.spawn_kith(&a, &common::kith_bin(), spec).unwrap();
    node_a.wait_ready(Duration::from_secs(10)).unwrap();

    // The name does not resolve yet: no path, and the daemon keeps trying.
    node_a
        .wait_log(
            &[
                "DNS lookup failed; retrying in the background",
                "b.kith-lab.test",
            ],
            Duration::from_secs(15),
        )
        .unwrap();
    let before = node_a.peer_status("b").unwrap();
    assert_eq!(before.path, "none", "{before:?}");

    // Now the name resolves (as when DNS comes back): b is reached.
    a.set_etc_file("hosts", "127.0.0.1 localhost\n198.18.0.2 b.kith-lab.test\n")
        .unwrap();
    let resolved_at = Instant::now();
    node_a
        .wait_peer("b", "connected", Duration::from_secs(60), |p| {
            p.path == "direct"
        })
        .unwrap();
    eprintln!(
        "b reached {:?} after its name started resolving",
        resolved_at.elapsed()
    );
    node_a
        .wait_log(
            &["endpoint name resolved", "198.18.0.2:51871"],
            Duration::from_secs(1),
        )
        .unwrap();
    a.wait_reachable(IpAddr::V4(B_OVERLAY), Duration::from_secs(5))
        .unwrap();
}

/// The peer-cache file's text in `dir` (empty when none was written).
fn cache_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("peers.json")).unwrap_or_default()
}

#[test]
fn two_networks_side_by_side_on_one_host() {
    let lab = common::lab();
    let switch = lab.switch("sw").unwrap();
    let h = lab.host("h").unwrap();
    let p1 = lab.host("p1").unwrap();
    let p2 = lab.host("p2").unwrap();
    switch.attach(&h, "198.18.0.1/24").unwrap();
    switch.attach(&p1, "198.18.0.2/24").unwrap();
    switch.attach(&p2, "198.18.0.3/24").unwrap();
    let bin = common::kith_bin();
    let state = |name: &str| lab.dir().join(format!("state-{name}"));

    // Network "one" on kith0:51871, network "two" on kith1:51872.
    let mut one = KithSpec::new("100.96.0.1/16", SecretKey::generate().unwrap());
    one.discovery.state_dir = Some(state("one").display().to_string());
    let mut two = KithSpec::new("100.97.0.1/16", SecretKey::generate().unwrap());
    two.interface = "kith1".into();
    two.listen_port = 51872;
    two.discovery.state_dir = Some(state("two").display().to_string());
    let peer1 = KithSpec::new("100.96.0.2/16", SecretKey::generate().unwrap());
    let peer2 = KithSpec::new("100.97.0.2/16", SecretKey::generate().unwrap());
    let at = |ip: &str, port: u16| Some(format!("{ip}:{port}"));

    let mut nodes = vec![
        lab.spawn_kith_named(
            &h,
            "one",
            &bin,
            one.clone().peer("p1", &peer1, at("198.18.0.2", 51871)),
        )
        .unwrap(),
        lab.spawn_kith_named(
            &h,
            "two",
            &bin,
            two.clone().peer("p2", &peer2, at("198.18.0.3", 51871)),
        )
        .unwrap(),
        lab.spawn_kith(
            &p1,
            &bin,
            peer1.clone().peer("h", &one, at("198.18.0.1", 51871)),
        )
        .unwrap(),
        lab.spawn_kith(
            &p2,
            &bin,
            peer2.clone().peer("h", &two, at("198.18.0.1", 51872)),
        )
        .unwrap(),
    ];
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(10)).unwrap();
    }
    h.wait_reachable(IpAddr::V4(B_OVERLAY), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("network one: h → p1: {e}"));
    h.wait_reachable("100.97.0.2".parse().unwrap(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("network two: h → p2: {e}"));
    p1.wait_reachable(IpAddr::V4(A_OVERLAY), Duration::from_secs(10))
        .unwrap();

    // Each daemon answers on its own socket about its own network only.
    let s1 = nodes[0].status().unwrap();
    let s2 = nodes[1].status().unwrap();
    assert_eq!(
        (s1.interface.as_str(), s2.interface.as_str()),
        ("kith0", "kith1")
    );
    let names = |s: &kith::daemon::control::StatusReport| {
        s.peers.iter().map(|p| p.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        (names(&s1), names(&s2)),
        (vec!["p1".to_string()], vec!["p2".to_string()])
    );

    // Each keeps its own state: the peer cache names only its own peer.
    let (k1, k2) = (
        peer1.key.public().to_string(),
        peer2.key.public().to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(cache_text(&state("one")).contains(&k1) && cache_text(&state("two")).contains(&k2))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (c1, c2) = (cache_text(&state("one")), cache_text(&state("two")));
    assert!(c1.contains(&k1) && !c1.contains(&k2), "state of one: {c1}");
    assert!(c2.contains(&k2) && !c2.contains(&k1), "state of two: {c2}");

    // A third config that claims a name, port or state directory already
    // in use fails at start and says which.
    let clash = |tag: &str, iface: &str, port: u16, state_dir: &Path| {
        let mut spec = KithSpec::new("100.98.0.1/16", SecretKey::generate().unwrap());
        spec.interface = iface.into();
        spec.listen_port = port;
        spec.discovery.state_dir = Some(state_dir.display().to_string());
        let mut node = lab.spawn_kith_named(&h, tag, &bin, spec).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.check_running().is_ok() {
            assert!(
                Instant::now() < deadline,
                "{tag}: the clashing daemon kept running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node.log()
    };
    let log = clash("same-iface", "kith0", 51873, &state("three"));
    assert!(log.contains("interface kith0 already exists"), "{log}");
    let log = clash("same-port", "kith2", 51871, &state("four"));
    assert!(log.contains("cannot bind UDP port 51871"), "{log}");
    let log = clash("same-state", "kith3", 51874, &state("one"));
    assert!(log.contains("is in use by another kith daemon"), "{log}");

    // And the two networks were not disturbed.
    h.wait_reachable(IpAddr::V4(B_OVERLAY), Duration::from_secs(5))
        .unwrap();
    for n in &mut nodes {
        n.check_running().unwrap();
    }
}
