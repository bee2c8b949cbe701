//! End to end, issue 4: NAT traversal in real network namespaces with the
//! real binary. Each row of the table gets its own lab
//! ([`kith::lab::nat`]): the emulated internet with a DHT of 8 nodes and
//! three STUN endpoints, home sites behind nftables NAT routers (cone,
//! symmetric, sequential, cone behind a CGNAT, miniupnpd), daemons that know
//! only each other's public key. Each row asserts the path kind from `kith status --json`
//! (direct, and why: over the LAN, hole punched, the peer's port mapping)
//! and prints the time from daemon start to the first ping over it.
//!
//! Needs root; without it these tests fail saying so. The labs are heavy
//! (a dozen namespaces, 8 DHT nodes, routers, daemons) for a 2-core
//! machine, so the tests take turns (`common::lab_in_turn`). Run with `--nocapture` for
//! the times.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use kith::daemon::control::PunchReport;
use kith::lab::Lab;
use kith::lab::nat::{NatLab, NatPair, NatPairSpec, SiteKind};
use kith::lab::transfer;

/// Daemon start → first ping over a direct path; seconds in practice, the
/// margin is for a loaded machine (and 5% loss).
const DIRECT: Duration = Duration::from_secs(60);

fn start(lab: &Lab, spec: NatPairSpec) -> NatPair {
    NatPair::start(lab, &common::kith_bin(), spec)
        .unwrap_or_else(|e| panic!("building the NAT lab {spec:?}: {e}"))
}

/// Waits for the direct path, prints the row's time and both views.
fn connect(pair: &mut NatPair, row: &str) -> Duration {
    let t = pair
        .wait_direct(DIRECT)
        .unwrap_or_else(|e| panic!("{row}: no direct path: {e}"));
    eprintln!("{row}: daemon start → first ping over a direct path after {t:?}");
    let (ab, ba) = pair.reports().expect("status");
    eprintln!("{row}: a's view of b: {ab:?}\n{row}: b's view of a: {ba:?}");
    for (node, who) in [(&pair.node_a, "a"), (&pair.node_b, "b")] {
        eprintln!(
            "{row}: {who}'s NAT: {:?}",
            node.status().expect("status").nat
        );
    }
    t
}

/// `endpoint` (as `kith status` shows one), parsed.
fn addr_of(endpoint: Option<&str>) -> Option<SocketAddrV4> {
    endpoint.and_then(|e| e.parse().ok())
}

/// `endpoint`'s IP.
fn ip_of(endpoint: Option<&str>) -> Option<Ipv4Addr> {
    addr_of(endpoint).map(|a| *a.ip())
}

/// The hole-punched rows: each side reaches the other at its site's public
/// address, and says so.
fn assert_punched(pair: &NatPair, row: &str) {
    let (ab, ba) = pair.reports().expect("status");
    let b_public = pair.site_b.as_ref().and_then(|s| s.public_ip());
    let a_public = pair.site_a.public_ip();
    for (me, view, want) in [("a", &ab, b_public), ("b", &ba, a_public)] {
        assert_eq!(view.path, "direct", "{row}: {me}: {view:?}");
        assert_eq!(
            ip_of(view.endpoint.as_deref()),
            want,
            "{row}: {me} must talk to the peer's public (NAT) address: {view:?}"
        );
        assert_eq!(
            view.path_reason, "direct through the NATs (hole punched)",
            "{row}: {me}: {view:?}"
        );
    }
}

#[test]
fn cone_and_cone_punch_a_hole() {
    let (_turn, lab) = common::lab_in_turn();
    let spec = NatPairSpec {
        a: SiteKind::Cone,
        b: Some(SiteKind::Cone),
        loss: 0,
    };
    let mut pair = start(&lab, spec);
    connect(&mut pair, "cone | cone");
    assert_punched(&pair, "cone | cone");
}

#[test]
fn cone_behind_cgnat_and_cone_punch_a_hole() {
    let (_turn, lab) = common::lab_in_turn();
    let spec = NatPairSpec {
        a: SiteKind::Cgnat,
        b: Some(SiteKind::Cone),
        loss: 0,
    };
    let mut pair = start(&lab, spec);
    connect(&mut pair, "cone behind CGNAT | cone");
    assert_punched(&pair, "cone behind CGNAT | cone");
    // b sees a at the carrier's address, not the home router's.
    let carrier = pair.site_a.carrier.as_ref().expect("carrier").public_ip();
    assert_eq!(
        ip_of(pair.reports().unwrap().0.endpoint.as_deref()),
        pair.site_b.as_ref().unwrap().public_ip()
    );
    assert_eq!(
        ip_of(pair.reports().unwrap().1.endpoint.as_deref()),
        carrier
    );
}

#[test]
fn cone_with_loss_and_cone_punch_a_hole() {
    let (_turn, lab) = common::lab_in_turn();
    let spec = NatPairSpec {
        a: SiteKind::Cone,
        b: Some(SiteKind::Cone),
        loss: 5,
    };
    let mut pair = start(&lab, spec);
    connect(&mut pair, "cone, 5% loss each way | cone");
    assert_punched(&pair, "cone, 5% loss each way | cone");
}

/// The loss row again with 50 ms each way on a's uplink (the lab's delay
/// tool, [`kith::lab::DelayLink`]): every STUN answer, DHT reply and punch
/// from a takes 100 ms more to come back.
#[test]
fn cone_with_loss_and_delay_and_cone_punch_a_hole() {
    let (_turn, lab) = common::lab_in_turn();
    let spec = NatPairSpec {
        a: SiteKind::Cone,
        b: Some(SiteKind::Cone),
        loss: 5,
    }
    .with_delay(kith::lab::nat::ROW_DELAY);
    let row = "cone, 5% loss + 50 ms delay each way | cone";
    let mut pair = NatPair::start(&lab, &common::kith_bin(), spec)
        .unwrap_or_else(|e| panic!("building the NAT lab {spec:?}: {e}"));
    connect(&mut pair, row);
    assert_punched(&pair, row);
    // The delay is on the path: the overlay's round trip crosses a's
    // uplink twice.
    let b = std::net::IpAddr::V4(kith::lab::topology::B_OVERLAY);
    let stats = pair.a.ping(b, 5, Duration::from_millis(200)).expect("ping");
    assert!(
        stats.rtt_ms.is_some_and(|(min, _, _)| min >= 100.0),
        "{row}: round trip over the overlay {stats:?}, want 100 ms or more"
    );
}

#[test]
fn two_hosts_behind_one_nat_talk_over_the_lan() {
    let (_turn, lab) = common::lab_in_turn();
    let spec = NatPairSpec {
        a: SiteKind::Cone,
        b: None,
        loss: 0,
    };
    let mut pair = start(&lab, spec);
    let row = "same LAN behind one cone";
    connect(&mut pair, row);
    let (ab, ba) = pair.reports().unwrap();
    for (me, view, want) in [("a", &ab, pair.b_lan), ("b", &ba, pair.a_lan)] {
        assert_eq!(view.path, "direct", "{row}: {me}: {view:?}");
        assert_eq!(
            ip_of(view.endpoint.as_deref()),
            Some(want),
            "{row}: {me} must use the peer's LAN address: {view:?}"
        );
    }
    // Whoever found the other in the DHT knows the LAN candidate and says
    // so. The other may have been reached before its own lookup answered
    // (nothing filters on a LAN) and, connected, never looks up: it knows
    // only where the packets come from.
    let reasons = [ab.path_reason.as_str(), ba.path_reason.as_str()];
    assert!(
        reasons.contains(&"direct over the LAN"),
        "{row}: neither side says \"direct over the LAN\": {reasons:?}"
    );
    for r in reasons {
        assert!(
            [
                "direct over the LAN",
                "direct (to where the peer's packets come from)"
            ]
            .contains(&r),
            "{row}: unexpected path reason {r:?}"
        );
    }
}

/// The miniupnpd row, and the mapping's life: it exists while kith runs and
/// is gone after SIGTERM.
#[test]
fn miniupnpd_and_symmetric_connect_through_the_mapped_port() {
    let (_turn, lab) = common::lab_in_turn();
    let spec = NatPairSpec {
        a: SiteKind::Miniupnpd,
        b: Some(SiteKind::Symmetric),
        loss: 0,
    };
    let mut pair = start(&lab, spec);
    let row = "miniupnpd | symmetric";
    connect(&mut pair, row);
    let public = pair.site_a.public_ip().expect("router's public address");
    let port = pair.node_a.spec().listen_port;
    let local = SocketAddrV4::new(pair.a_lan, port);
    let upnp = pair.site_a.upnp.as_ref().expect("miniupnpd");
    let redirects = upnp.udp_redirects().expect("router ruleset");
    let mapped = redirects
        .iter()
        .find(|(_, to)| *to == local)
        .map(|(ext, _)| SocketAddrV4::new(public, *ext))
        .unwrap_or_else(|| {
            panic!(
                "{row}: miniupnpd has no UDP redirect to {local} while kith runs: {redirects:?}\n{}",
                upnp.ruleset().unwrap_or_default()
            )
        });
    eprintln!("{row}: miniupnpd maps {mapped} → {local}");
    let nat = pair.node_a.status().unwrap().nat;
    assert!(
        nat.port_mapping
            .as_deref()
            .is_some_and(|m| m.contains(&mapped.to_string())),
        "{row}: a's status must show the mapping {mapped}: {nat:?}"
    );
    let (ab, ba) = pair.reports().unwrap();
    assert_eq!(ab.path, "direct", "{row}: a: {ab:?}");
    assert_eq!(
        ip_of(ab.endpoint.as_deref()),
        pair.site_b.as_ref().unwrap().public_ip(),
        "{row}: a answers b at b's (symmetric) public address: {ab:?}"
    );
    assert_eq!(ba.path, "direct", "{row}: b: {ba:?}");
    assert_eq!(
        ba.endpoint.as_deref(),
        Some(mapped.to_string().as_str()),
        "{row}: b must reach a through the mapped port: {ba:?}"
    );
    assert_eq!(
        ba.path_reason, "direct via the peer's router port mapping",
        "{row}: b: {ba:?}"
    );

    // SIGTERM: the daemon deletes its mapping on the way out.
    pair.node_a.stop(Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = upnp.udp_redirects().expect("router ruleset");
        if !left.iter().any(|(_, to)| *to == local) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{row}: the mapping to {local} outlived the daemon by 10 s: {left:?}\n--- a's log ---\n{}",
            pair.node_a.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{row}: mapping gone after SIGTERM");
}

/// The hard-NAT rows (a behind a cone, b behind an endpoint-dependent NAT):
/// each side talks to the other's public address, and the path came from
/// hard-NAT traversal, not ordinary punching: a (the easy side) probed b's
/// ports, b (the hard side) opened extra sockets. b's path reason must
/// contain one of `b_reasons` (which of b's sockets a's probe reached).
/// Prints and returns both sides' probe reports (a's, b's).
fn assert_hard_nat_row(
    pair: &NatPair,
    row: &str,
    b_reasons: &[&str],
) -> (PunchReport, PunchReport) {
    let (ab, ba) = pair.reports().expect("status");
    assert_eq!(ab.path, "direct", "{row}: a: {ab:?}");
    assert_eq!(ba.path, "direct", "{row}: b: {ba:?}");
    assert_eq!(
        ip_of(ab.endpoint.as_deref()),
        pair.site_b.as_ref().and_then(|s| s.public_ip()),
        "{row}: a: {ab:?}"
    );
    assert_eq!(
        ip_of(ba.endpoint.as_deref()),
        pair.site_a.public_ip(),
        "{row}: b: {ba:?}"
    );
    let a_punch = ab
        .punch
        .clone()
        .unwrap_or_else(|| panic!("{row}: a did not probe: {ab:?}"));
    let b_punch = ba
        .punch
        .clone()
        .unwrap_or_else(|| panic!("{row}: b opened no sockets: {ba:?}"));
    assert_eq!(
        (a_punch.role.as_str(), b_punch.role.as_str()),
        ("easy", "hard"),
        "{row}"
    );
    assert!(
        a_punch.probes > 0 && a_punch.probes <= 2000,
        "{row}: {a_punch:?}"
    );
    assert!(
        ab.path_reason.contains("endpoint-dependent"),
        "{row}: a's reason: {}",
        ab.path_reason
    );
    assert!(
        b_reasons.iter().any(|r| ba.path_reason.contains(r)),
        "{row}: b's reason: {}, want one of {b_reasons:?}",
        ba.path_reason
    );
    eprintln!(
        "{row}: probes: a (easy) {} in attempt {}, b (hard) {} in attempt {}",
        a_punch.probes, a_punch.attempts, b_punch.probes, b_punch.attempts
    );
    (a_punch, b_punch)
}

#[test]
fn cone_and_symmetric_connect_by_birthday_probing() {
    let (_turn, lab) = common::lab_in_turn();
    let mut pair = start(
        &lab,
        NatPairSpec::sites(SiteKind::Cone, SiteKind::Symmetric),
    );
    let row = "cone | symmetric";
    connect(&mut pair, row);
    // A random port can only land on one of b's extra sockets.
    assert_hard_nat_row(&pair, row, &["extra sockets"]);
    assert_data_plane_carries_b(&pair, row);
    let (_, ba) = pair.reports().expect("status");
    assert!(
        ba.path_reason.contains("extra sockets"),
        "{row}: b's path moved off its extra socket: {ba:?}"
    );
}

/// Bulk TCP each way over the overlay arrives intact, and b's data-plane
/// threads carried it, not its control plane: b's workers sealed at least
/// a datagram per 2000 bytes b sent, and the control plane's slow path
/// (`control_data`) saw no more than the few packets of a path settling.
/// For a hard-NAT route this shows the route's own socket is the data
/// plane's, read and sent on by its threads.
fn assert_data_plane_carries_b(pair: &NatPair, row: &str) {
    const BYTES: u64 = 8 * 1024 * 1024;
    let overlay =
        |node: &kith::lab::KithNode| IpAddr::V4(node.spec().overlay_ip().expect("overlay address"));
    let before = pair.node_b.status().expect("b's status");
    let directions = [
        ("a → b", &pair.b, overlay(&pair.node_b), &pair.a),
        ("b → a", &pair.a, overlay(&pair.node_a), &pair.b),
    ];
    let mut rates = Vec::new();
    for (what, server, ip, client) in directions {
        let report = transfer::tcp(server, SocketAddr::new(ip, 5001), client, BYTES)
            .unwrap_or_else(|e| panic!("{row}: {what} transfer: {e}"));
        assert!(report.intact(), "{row}: {what} arrived damaged: {report:?}");
        rates.push(format!("{what} {:.0} Mbit/s", report.mbit_per_s()));
    }
    let after = pair.node_b.status().expect("b's status");
    let sum = |w: &[u64]| w.iter().sum::<u64>();
    let sealed = sum(&after.data_workers) - sum(&before.data_workers);
    let slow = after.control_data - before.control_data;
    eprintln!(
        "{row}: b's data plane sealed {sealed} datagrams, its control plane carried {slow} data packets; {}",
        rates.join(", ")
    );
    assert!(
        sealed >= BYTES / 2000,
        "{row}: b's data plane sealed only {sealed} datagrams for {BYTES} bytes"
    );
    assert!(
        slow < 100,
        "{row}: b's control plane carried {slow} data packets: the slow path, not the data plane"
    );
}

/// How many predicted ports the easy side's daemon had for its peer: the
/// `predicted` field of its "probing its ports" log line. Non-zero only when
/// the peer's record carried a sequential step.
fn predicted_ports(log: &str) -> Option<usize> {
    let line = log.lines().find(|l| l.contains("probing its ports"))?;
    let (_, rest) = line.split_once("predicted=")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// When the first line of `log` holding `needle` was written: its date and
/// its time of day in seconds (tracing's RFC 3339 UTC stamps).
fn logged_at<'a>(log: &'a str, needle: &str) -> Option<(&'a str, f64)> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut hms = time.split(':').map(|f| f.parse::<f64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    Some((date, h * 3600.0 + m * 60.0 + s))
}

/// b's NAT hands out ports in order ([`SiteKind::Sequential`]): b's daemon
/// measures the step with three STUN mappings and publishes it, and a
/// probes the ports b's new sockets will get before any random one. The
/// path lands on one of the first few dozen predicted ports, where birthday
/// probing hits a random one of b's ~260 new ports after about 250 probes.
#[test]
fn cone_and_sequential_connect_by_port_prediction() {
    let (_turn, lab) = common::lab_in_turn();
    let mut pair = start(
        &lab,
        NatPairSpec::sites(SiteKind::Cone, SiteKind::Sequential),
    );
    let row = "cone | sequential";
    let t = connect(&mut pair, row);
    // The predicted ports are the ones b's NAT handed out after the last
    // STUN mapping: first to b's DHT traffic and to its data socket's own
    // handshakes towards a (sent when b found a, just before it opened its
    // sockets), then to the extra sockets. a probes them in order, so it
    // usually reaches the data socket's mapping first, and b, answering
    // from its data socket, sees an ordinary punched path.
    let (a_punch, b_punch) = assert_hard_nat_row(
        &pair,
        row,
        &["extra sockets", "direct through the NATs (hole punched)"],
    );

    // b's daemon classified its NAT as sequential from its STUN mappings.
    // Other flows of b's may take ports between two STUN mappings; the
    // smallest step is still 1 unless they took one in both gaps, and
    // anything up to 16 is read as sequential.
    let nat = pair.node_b.status().expect("b's status").nat;
    assert_eq!(
        nat.mapping.as_deref(),
        Some("endpoint-dependent"),
        "{row}: {nat:?}"
    );
    let step = nat.sequential_step;
    assert!(
        step.is_some_and(|s| (1..=16).contains(&s)),
        "{row}: b's NAT must look sequential (step 1): {nat:?}"
    );

    // b published it: a had ports to predict.
    let log = pair.node_a.log();
    let predicted = predicted_ports(&log);
    assert!(
        predicted.is_some_and(|n| n > 0),
        "{row}: a predicted no ports for b (b's record carried no step?): {predicted:?}\n--- a's log ---\n{}",
        pair.node_a.log_tail(40)
    );
    // The path landed on a predicted port near the front of a's order: a's
    // probe to it is what let b's packets through a's port-dependent
    // filter. (Without prediction the hit is a random one of b's ~260 new
    // ports.)
    let (ab, _) = pair.reports().expect("status");
    let port = |a: Option<&str>| -> i64 {
        addr_of(a)
            .map(|a| i64::from(a.port()))
            .unwrap_or_else(|| panic!("{row}: no port in {a:?}"))
    };
    let (hit, public) = (port(ab.endpoint.as_deref()), port(nat.public.as_deref()));
    let step = i64::from(step.expect("checked above"));
    let offset = hit - public;
    assert!(
        offset % step == 0 && (1..=64).contains(&(offset / step)),
        "{row}: the path uses b's port {hit}, not among the first 64 predicted from {public} step {step}: {ab:?}"
    );
    // And when b's sockets were there before a's first probe (a probes
    // `easy_delay` after it decides), a's count is the prediction's alone:
    // a handful, where birthday probing needs ~250. When b found a's record
    // later (lookups run every few seconds), a kept probing further down
    // its list until b's packets came through the filter its earlier
    // probes had opened, and the count measures that lag instead.
    let easy_delay = kith::nat::punch::Budget::default().easy_delay.as_secs_f64();
    let a_probing = logged_at(&log, "probing its ports").map(|(d, t)| (d, t + easy_delay));
    let b_log = pair.node_b.log();
    let b_opened = logged_at(&b_log, "opening sockets towards the peer");
    match (a_probing, b_opened) {
        (Some((da, probing)), Some((db, opened))) if da == db && opened < probing => assert!(
            a_punch.probes <= 64,
            "{row}: b's sockets were open {:.1} s before a's first probe, yet a needed {} probes: {a_punch:?}",
            probing - opened,
            a_punch.probes
        ),
        _ => eprintln!(
            "{row}: b opened its sockets after a began probing ({a_probing:?} / {b_opened:?}): a's {} probes not judged",
            a_punch.probes
        ),
    }
    eprintln!(
        "{row}: direct after {t:?}; a predicted {} ports, the path on predicted port #{}, a sent {} probes; b opened {} sockets; b's step {step}",
        predicted.unwrap_or(0),
        offset / step,
        a_punch.probes,
        b_punch.probes
    );
}

/// Two endpoint-dependent NATs: nothing can be punched. Both sides learn
/// that from each other's records, say a relay is needed, and spend no
/// probes trying (the budget is for cases that can work).
#[test]
fn two_symmetric_nats_say_they_need_a_relay() {
    let (_turn, lab) = common::lab_in_turn();
    let mut pair = start(
        &lab,
        NatPairSpec::sites(SiteKind::Symmetric, SiteKind::Symmetric),
    );
    let row = "symmetric | symmetric";
    let needs_relay =
        |p: &kith::daemon::control::PeerReport| p.path_reason.contains("needs a relay");
    for (node, peer) in [(&mut pair.node_a, "b"), (&mut pair.node_b, "a")] {
        let report = node
            .wait_peer(peer, "the both-hard verdict", DIRECT, needs_relay)
            .unwrap_or_else(|e| panic!("{row}: {e}"));
        assert_eq!(report.path, "none", "{row}: {report:?}");
        assert_eq!(
            report.punch, None,
            "{row}: no probes for a hopeless case: {report:?}"
        );
        eprintln!("{row}: {peer}: {}", report.path_reason);
    }
}

/// `kith netcheck` behind every NAT kind, and directly on the internet,
/// against the three lab STUN endpoints: its mapping (and, behind the
/// sequential NAT, its allocator step) matches the router.
#[test]
fn netcheck_classifies_every_nat_kind() {
    let (_turn, lab) = common::lab_in_turn();
    let mut net = NatLab::new(&lab, &common::kith_bin()).expect("NAT lab");
    let mut sites = Vec::new();
    for (i, kind) in [
        SiteKind::Cone,
        SiteKind::Symmetric,
        SiteKind::Sequential,
        SiteKind::Cgnat,
        SiteKind::Miniupnpd,
    ]
    .into_iter()
    .enumerate()
    {
        let mut site = net
            .site(&lab, &format!("s{i}"), kind)
            .unwrap_or_else(|e| panic!("{} site: {e}", kind.name()));
        let (host, _) = site.add_host(&lab, &format!("h{i}")).expect("host");
        sites.push((site, host));
    }
    let (open, up) = net.public_host(&lab, "open").expect("public host");

    let report = net.netcheck(&open, false).expect("netcheck");
    eprintln!("no NAT: {report}");
    assert_eq!(report["mapping"], "no NAT", "on the internet: {report}");
    assert_eq!(
        report["public"].as_str().and_then(|p| ip_of(Some(p))),
        Some(up.addr())
    );

    for (site, host) in &sites {
        let kind = site.kind;
        let port_mapping = kind == SiteKind::Miniupnpd;
        let report = net
            .netcheck(host, port_mapping)
            .unwrap_or_else(|e| panic!("netcheck behind {}: {e}", kind.name()));
        eprintln!("{}: {report}", kind.name());
        assert_eq!(
            report["mapping"],
            kind.expected_mapping(),
            "behind {}: {report}",
            kind.name()
        );
        assert_eq!(
            report["sequential"].as_i64(),
            kind.expected_step().map(i64::from),
            "behind {}: allocator step: {report}",
            kind.name()
        );
        assert_eq!(
            report["public"].as_str().and_then(|p| ip_of(Some(p))),
            site.public_ip(),
            "behind {}: the public address is the outer router's",
            kind.name()
        );
        if port_mapping {
            let pm = &report["port_mapping"];
            let mapped: Vec<&str> = ["pcp", "nat_pmp", "upnp"]
                .into_iter()
                .filter(|p| !pm[p]["external"].is_null())
                .collect();
            assert!(
                !mapped.is_empty(),
                "behind miniupnpd the port-mapping report must show a mapping: {pm}"
            );
            eprintln!("miniupnpd mapped with {mapped:?}");
        }
    }
}
