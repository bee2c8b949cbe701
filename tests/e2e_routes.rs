//! End to end: the kernel routes kith installs for the peers' `allowed_ips`
//! (a LAN behind a peer, an exit node's default route with kith's own
//! traffic kept out of it, IPv6 inside the tunnel), and that they are gone
//! after the daemon exits, cleanly or killed.
//!
//! Needs root (namespaces, TUN, routes); without it these tests fail with a
//! message saying so. Each test has its own lab.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use kith::daemon::routes::{FWMARK, PRIO_SUPPRESS, PRIO_TABLE, table_id};
use kith::identity::SecretKey;
use kith::lab::nat::StunServers;
use kith::lab::topology::{A_OVERLAY, B_OVERLAY, Pair, dht_spec, wait_both_ways};
use kith::lab::{Host, KithNode, KithSpec, LabDht, transfer};

const PING_INTERVAL: Duration = Duration::from_millis(100);
/// The lab's daemons listen on 51871, so this is kith's table there.
fn table() -> u32 {
    table_id(51871, "kith0")
}

fn key() -> SecretKey {
    SecretKey::generate().expect("OS randomness")
}

/// kith's policy rules in `host` for one family (`-4` or `-6`), as `ip
/// rule` prints them.
fn kith_rules(host: &Host, family: &str) -> Vec<String> {
    let text = host.ip(&[family, "rule", "show"]).unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{PRIO_SUPPRESS}:")) || l.starts_with(&format!("{PRIO_TABLE}:"))
        })
        .map(str::to_owned)
        .collect()
}

/// The routes of kith's table in `host` for one family.
fn table_routes(host: &Host, family: &str) -> String {
    host.ip(&[family, "route", "show", "table", &table().to_string()])
        .unwrap_or_default()
}

/// Polls `what` every 50 ms until it holds.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host `l` (192.168.77.10) on a LAN behind `b` is reached from `a`
/// through the tunnel, because `a` lists 192.168.77.0/24 in b's
/// allowed_ips; and `l` reaches a's overlay address back through `b`.
#[test]
fn a_lan_behind_a_peer_is_reached_through_the_tunnel() {
    let lab = common::lab();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let l = lab.host("l").unwrap();
    lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24").unwrap();
    lab.link(&b, "192.168.77.1/24", &l, "192.168.77.10/24")
        .unwrap();
    b.enable_forwarding().unwrap();
    l.add_default_route(Ipv4Addr::new(192, 168, 77, 1)).unwrap();
    let lan_host = IpAddr::V4(Ipv4Addr::new(192, 168, 77, 10));
    let before = a.ping(lan_host, 2, PING_INTERVAL).unwrap();
    assert_eq!(before.received, 0, "a must not reach the LAN without kith");

    let spec_a = KithSpec::new("100.96.0.1/16", key());
    let spec_b = KithSpec::new("100.96.0.2/16", key());
    let mut a_cfg = spec_a
        .clone()
        .peer("b", &spec_b, Some("198.18.0.2:51871".into()));
    a_cfg.peers[0].allowed_ips.push("192.168.77.0/24".into());
    let b_cfg = spec_b.peer("a", &spec_a, Some("198.18.0.1:51871".into()));
    let bin = common::kith_bin();
    let mut node_a = lab.spawn_kith(&a, &bin, a_cfg).unwrap();
    let mut node_b = lab.spawn_kith(&b, &bin, b_cfg).unwrap();
    node_a.wait_ready(Duration::from_secs(10)).unwrap();
    node_b.wait_ready(Duration::from_secs(10)).unwrap();

    let route = a.ip(&["route", "show", "192.168.77.0/24"]).unwrap();
    assert!(
        route.contains("dev kith0"),
        "a's route to b's LAN: {route:?}"
    );
    a.wait_reachable(lan_host, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a → b's LAN host: {e}\n{}", node_a.log_tail(20)));
    let there = a.ping(lan_host, 5, PING_INTERVAL).unwrap();
    let back = l.ping(IpAddr::V4(A_OVERLAY), 5, PING_INTERVAL).unwrap();
    eprintln!("a → 192.168.77.10 {there:?}\n192.168.77.10 → a {back:?}");
    assert!(there.all_received(), "a → b's LAN host: {there:?}");
    assert!(back.all_received(), "b's LAN host → a: {back:?}");
    node_a.check_running().unwrap();
    node_b.check_running().unwrap();
}

/// `a` uses the peer `exit` as its exit node (allowed_ips 0.0.0.0/0) and
/// reaches a web host behind it that nothing else routes to, while its own
/// underlay stays outside the tunnel: it finds the exit node through the
/// DHT (no endpoint configured) and publishes its record there, STUN from
/// its data socket sees its real address, and the tunnel's own UDP goes
/// straight to the exit node's public address.
#[test]
fn an_exit_node_carries_the_default_route_and_the_underlay_stays_out() {
    let (_turn, lab) = common::lab_in_turn();
    let bin = common::kith_bin();
    let internet = lab.internet().unwrap();
    let dht = LabDht::start_new(&lab, &internet, &bin, 4).unwrap();
    let stun = StunServers::start(&lab, &internet, &bin).unwrap();
    let a = lab.host("a").unwrap();
    let e = lab.host("exit").unwrap();
    let w = lab.host("web").unwrap();
    let a_up = internet.attach(&a).unwrap();
    let e_up = internet.attach(&e).unwrap();
    // The "internet" behind the exit node: 192.0.2.0/24, which no other
    // prefix covers and the emulated internet does not route.
    lab.link(&e, "192.0.2.1/24", &w, "192.0.2.10/24").unwrap();
    e.enable_forwarding().unwrap();
    w.add_default_route(Ipv4Addr::new(192, 0, 2, 1)).unwrap();
    let web = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let before = a.ping(web, 2, PING_INTERVAL).unwrap();
    assert_eq!(
        before.received, 0,
        "a must not reach the web host without kith"
    );

    let mut spec_a = dht_spec(&lab, "a", "100.96.0.1/16", key(), &dht);
    spec_a.discovery.stun = stun.addrs[..2].iter().map(ToString::to_string).collect();
    let spec_e = dht_spec(&lab, "exit", "100.96.0.2/16", key(), &dht);
    let mut a_cfg = spec_a.clone().peer("exit", &spec_e, None);
    a_cfg.peers[0].allowed_ips.push("0.0.0.0/0".into());
    let e_cfg = spec_e.peer("a", &spec_a, None);
    let mut node_a = lab.spawn_kith(&a, &bin, a_cfg).unwrap();
    let mut node_e = lab.spawn_kith(&e, &bin, e_cfg).unwrap();
    node_a.wait_ready(Duration::from_secs(10)).unwrap();
    node_e.wait_ready(Duration::from_secs(10)).unwrap();

    // The default route is in place before any peer is found.
    wait_for("a's policy rules", Duration::from_secs(5), || {
        kith_rules(&a, "-4").len() == 2
    });
    let rules = kith_rules(&a, "-4").join("\n");
    assert!(
        rules.contains(&format!(
            "not from all fwmark {FWMARK:#x} lookup {}",
            table()
        )),
        "{rules}"
    );
    assert!(
        rules.contains("lookup main suppress_prefixlength 0"),
        "{rules}"
    );
    let routes = table_routes(&a, "-4");
    assert!(routes.contains("default dev kith0"), "{routes:?}");
    // The host's own default route is untouched.
    let main = a.ip(&["-4", "route", "show", "default"]).unwrap();
    assert!(
        main.contains(&a_up.subnet.gateway().to_string()),
        "{main:?}"
    );

    a.wait_reachable(web, Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "a → web host through the exit node: {e}\n--- a ---\n{}\n--- exit ---\n{}",
                node_a.log_tail(30),
                node_e.log_tail(30)
            )
        });
    let pings = a.ping(web, 5, PING_INTERVAL).unwrap();
    eprintln!("a → 192.0.2.10 through the exit node: {pings:?}");
    assert!(pings.all_received(), "{pings:?}");

    // The tunnel's UDP goes to the exit node's public address directly.
    let peer = node_a
        .wait_peer("exit", "a direct path", Duration::from_secs(10), |p| {
            p.path == "direct"
        })
        .unwrap();
    let exit_addr = SocketAddr::from((e_up.addr(), 51871)).to_string();
    assert_eq!(peer.endpoint.as_deref(), Some(exit_addr.as_str()));

    // STUN from the data socket: the servers saw a's own address (through
    // the tunnel, the answer would have no way back).
    let report = node_a
        .wait_status("a STUN answer", Duration::from_secs(30), |r| {
            r.nat.public.is_some()
        })
        .unwrap();
    let public = report.nat.public.unwrap_or_default();
    assert!(
        public.starts_with(&format!("{}:", a_up.addr())),
        "STUN saw {public}, a is {}",
        a_up.addr()
    );

    // The DHT: a's record was stored on lab DHT nodes.
    let line = node_a
        .wait_log(&["published DHT record"], Duration::from_secs(60))
        .unwrap();
    let nodes: usize = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("nodes=")?.parse().ok())
        .unwrap_or(0);
    assert!(nodes > 0, "a's record reached no DHT node: {line}");
    node_e.check_running().unwrap();
}

/// IPv6 inside the tunnel: each node has an IPv4 and a ULA address (an
/// `address` list), ping and TCP (through the TUN offload path: a bulk
/// transfer each way) work over IPv6 both ways, and status lists both
/// addresses.
#[test]
fn ipv6_overlay_ping_and_tcp_both_ways() {
    let lab = common::lab();
    let (a6, b6): (Ipv6Addr, Ipv6Addr) =
        ("fd00:6b::1".parse().unwrap(), "fd00:6b::2".parse().unwrap());
    let mut spec_a = KithSpec::new("100.96.0.1/16", key());
    spec_a.extra_addresses = vec![format!("{a6}/64")];
    let mut spec_b = KithSpec::new("100.96.0.2/16", key());
    spec_b.extra_addresses = vec![format!("{b6}/64")];
    let mut pair = Pair::start_with(&lab, &common::kith_bin(), spec_a, spec_b).unwrap();
    pair.wait_tunnel(Duration::from_secs(10)).unwrap();
    let Pair { a, b, node_a, .. } = pair;

    a.wait_reachable(IpAddr::V6(b6), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a → b over IPv6: {e}\n{}", node_a.log_tail(20)));
    let ab = a.ping(IpAddr::V6(b6), 5, PING_INTERVAL).unwrap();
    let ba = b.ping(IpAddr::V6(a6), 5, PING_INTERVAL).unwrap();
    eprintln!("a → b {ab:?}\nb → a {ba:?}");
    assert!(ab.all_received(), "a → b over IPv6: {ab:?}");
    assert!(ba.all_received(), "b → a over IPv6: {ba:?}");

    const BYTES: u64 = 32 * 1024 * 1024;
    for (server, server_ip, client, dir) in [(&b, b6, &a, "a → b"), (&a, a6, &b, "b → a")] {
        let listen = SocketAddr::from((server_ip, 5001));
        let report = transfer::tcp(server, listen, client, BYTES)
            .unwrap_or_else(|e| panic!("TCP {dir} over IPv6: {e}"));
        eprintln!(
            "TCP {dir} over IPv6: {} bytes in {:?} ({:.0} Mbit/s)",
            report.received_bytes,
            report.elapsed,
            report.mbit_per_s()
        );
        assert_eq!(report.received_bytes, BYTES, "TCP {dir}: length differs");
        assert!(report.intact(), "TCP {dir}: content differs");
    }

    let status = node_a.status().unwrap();
    assert_eq!(status.addresses, ["100.96.0.1/16", "fd00:6b::1/64"]);
    let peer = node_a.peer_status("b").unwrap();
    assert_eq!(peer.allowed_ips, ["100.96.0.2/32", "fd00:6b::2/128"]);
    // IPv4 keeps working beside it.
    let v4 = a.ping(IpAddr::V4(B_OVERLAY), 3, PING_INTERVAL).unwrap();
    assert!(v4.all_received(), "{v4:?}");
}

/// Everything kith added is gone after SIGTERM; after SIGKILL the policy
/// rules stay behind (the kernel drops the routes with the device), and the
/// next start removes them before adding its own, so they never pile up.
#[test]
fn routes_and_rules_are_gone_after_exit_and_after_a_crash() {
    let lab = common::lab();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24").unwrap();
    let mut spec_a = KithSpec::new("100.96.0.1/16", key());
    spec_a.extra_addresses = vec!["fd00:6b::1/64".into()];
    let spec_b = KithSpec::new("100.96.0.2/16", key());
    let mut a_cfg = spec_a
        .clone()
        .peer("b", &spec_b, Some("198.18.0.2:51871".into()));
    a_cfg.peers[0]
        .allowed_ips
        .extend(["0.0.0.0/0", "::/0", "192.168.77.0/24"].map(String::from));
    let b_cfg = spec_b.peer("a", &spec_a, Some("198.18.0.1:51871".into()));
    let bin = common::kith_bin();
    let mut node_b = lab.spawn_kith(&b, &bin, b_cfg).unwrap();
    let mut node_a = lab.spawn_kith(&a, &bin, a_cfg).unwrap();
    node_b.wait_ready(Duration::from_secs(10)).unwrap();

    let installed = |node: &mut KithNode| {
        node.wait_ready(Duration::from_secs(10)).unwrap();
        wait_for("a's routes and rules", Duration::from_secs(5), || {
            kith_rules(&a, "-4").len() == 2
                && kith_rules(&a, "-6").len() == 2
                && table_routes(&a, "-4").contains("default dev kith0")
                && table_routes(&a, "-6").contains("default dev kith0")
        });
        let lan = a.ip(&["route", "show", "192.168.77.0/24"]).unwrap();
        assert!(lan.contains("dev kith0"), "{lan:?}");
    };
    let none_left = |when: &str| {
        assert_eq!(
            kith_rules(&a, "-4"),
            Vec::<String>::new(),
            "IPv4 rules {when}"
        );
        assert_eq!(
            kith_rules(&a, "-6"),
            Vec::<String>::new(),
            "IPv6 rules {when}"
        );
        assert_eq!(table_routes(&a, "-4").trim(), "", "IPv4 table {when}");
        assert_eq!(table_routes(&a, "-6").trim(), "", "IPv6 table {when}");
        let lan = a.ip(&["route", "show", "192.168.77.0/24"]).unwrap();
        assert_eq!(lan.trim(), "", "the LAN route {when}");
    };

    installed(&mut node_a);
    eprintln!(
        "a's rules:\n{}\n{}\ntable {}:\n{}{}",
        kith_rules(&a, "-4").join("\n"),
        kith_rules(&a, "-6").join("\n"),
        table(),
        table_routes(&a, "-4"),
        table_routes(&a, "-6")
    );
    // The tunnel works with the default route in place (b is on the link,
    // which the main table's own route covers).
    wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10)).unwrap();
    node_a.stop(Duration::from_secs(5)).unwrap();
    none_left("after SIGTERM");
    assert!(
        node_a.log().contains("SIGTERM: shutting down"),
        "a did not exit on SIGTERM:\n{}",
        node_a.log_tail(20)
    );

    node_a.start().unwrap();
    installed(&mut node_a);
    node_a.kill().unwrap();
    // Killed: no chance to clean up. The rules stay; the routes went with
    // the device.
    assert_eq!(kith_rules(&a, "-4").len(), 2, "IPv4 rules after SIGKILL");
    assert_eq!(kith_rules(&a, "-6").len(), 2, "IPv6 rules after SIGKILL");

    node_a.start().unwrap();
    installed(&mut node_a);
    node_a
        .wait_log(&["an earlier kith left behind"], Duration::from_secs(5))
        .unwrap();
    // Exactly one set, not the stale one plus ours.
    assert_eq!(kith_rules(&a, "-4").len(), 2, "{:?}", kith_rules(&a, "-4"));
    assert_eq!(kith_rules(&a, "-6").len(), 2, "{:?}", kith_rules(&a, "-6"));
    wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10)).unwrap();
    node_a.stop(Duration::from_secs(5)).unwrap();
    none_left("after a restart and SIGTERM");
}
