//! End to end: the real `kith` binary in network namespaces, over veth
//! links, judged with ping, TCP, and tcpdump on the underlay.
//!
//! Needs root (namespaces, TUN); without it these tests fail with a message
//! saying so. Each test has its own lab, so they run in parallel.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use kith::identity::SecretKey;
use kith::lab::topology::{A_OVERLAY, A_UNDERLAY, B_OVERLAY};
use kith::lab::{Capture, KithSpec, transfer};

const PING_INTERVAL: Duration = Duration::from_millis(100);

#[test]
fn ping_both_ways_over_the_overlay() {
    let lab = common::lab();
    let pair = common::pair(&lab);
    let ab = pair
        .a
        .ping(IpAddr::V4(B_OVERLAY), 5, PING_INTERVAL)
        .unwrap();
    let ba = pair
        .b
        .ping(IpAddr::V4(A_OVERLAY), 5, PING_INTERVAL)
        .unwrap();
    eprintln!("a→b {ab:?}\nb→a {ba:?}");
    assert!(ab.all_received(), "a → b over the overlay: {ab:?}");
    assert!(ba.all_received(), "b → a over the overlay: {ba:?}");
}

#[test]
fn hundred_megabytes_of_tcp_arrive_intact() {
    let lab = common::lab();
    let pair = common::pair(&lab);
    let listen = SocketAddr::new(IpAddr::V4(B_OVERLAY), 5001);
    let report = transfer::tcp(&pair.b, listen, &pair.a, 100 * 1024 * 1024).unwrap();
    eprintln!(
        "100 MiB a → b over kith: {} bytes in {:?} ({:.0} Mbit/s)",
        report.received_bytes,
        report.elapsed,
        report.mbit_per_s()
    );
    assert_eq!(report.received_bytes, report.sent_bytes, "length differs");
    assert!(report.intact(), "content differs (BLAKE2b-512 mismatch)");
}

#[test]
fn traffic_resumes_within_5s_after_sigkill_and_restart() {
    let lab = common::lab();
    let mut pair = common::pair(&lab);
    let a_pid = pair.node_a.pid();

    pair.node_b.kill().unwrap();
    let restarted = Instant::now();
    pair.node_b.start().unwrap();
    pair.node_b.wait_ready(Duration::from_secs(5)).unwrap();
    pair.a
        .wait_reachable(IpAddr::V4(B_OVERLAY), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a → b after b's restart: {e}"));
    let a_to_b = restarted.elapsed();
    pair.b
        .wait_reachable(IpAddr::V4(A_OVERLAY), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("b → a after b's restart: {e}"));
    let both = restarted.elapsed();
    eprintln!("after SIGKILL + restart of b: a→b works after {a_to_b:?}, both ways after {both:?}");

    assert_eq!(pair.node_a.pid(), a_pid, "a must not have been touched");
    pair.node_a.check_running().unwrap();
    assert!(
        both <= Duration::from_secs(5),
        "traffic resumed only after {both:?}"
    );
}

/// Proved at the receiver: a's own log counts c's initiations arriving and
/// refused for an unknown key, and a capture on a's TUN holds a's traffic
/// with b but nothing to or from c.
#[test]
fn unknown_node_gets_nothing_through() {
    let lab = common::lab();
    // a, b and c on one switch; a and b know each other, c knows a, a does not know c.
    let switch = lab.switch("sw").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let c = lab.host("c").unwrap();
    switch.attach(&a, "198.18.0.1/24").unwrap();
    switch.attach(&b, "198.18.0.2/24").unwrap();
    switch.attach(&c, "198.18.0.3/24").unwrap();
    let mut spec_a = KithSpec::new("100.96.0.1/16", SecretKey::generate().unwrap());
    // Drops are logged at debug: a's log is where its refusals show.
    spec_a.log_level = "debug".into();
    let spec_b = KithSpec::new("100.96.0.2/16", SecretKey::generate().unwrap());
    let spec_c = KithSpec::new("100.96.0.3/16", SecretKey::generate().unwrap());
    let at = |ip: &str| Some(format!("{ip}:51871"));
    let bin = common::kith_bin();
    let mut node_a = lab
        .spawn_kith(
            &a,
            &bin,
            spec_a.clone().peer("b", &spec_b, at("198.18.0.2")),
        )
        .unwrap();
    let mut node_b = lab
        .spawn_kith(
            &b,
            &bin,
            spec_b.clone().peer("a", &spec_a, at("198.18.0.1")),
        )
        .unwrap();
    let mut node_c = lab
        .spawn_kith(&c, &bin, spec_c.peer("a", &spec_a, at("198.18.0.1")))
        .unwrap();
    for node in [&mut node_a, &mut node_b, &mut node_c] {
        node.wait_ready(Duration::from_secs(10)).unwrap();
    }
    a.wait_reachable(IpAddr::V4(B_OVERLAY), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a → b: {e}"));
    let tun = Capture::start(&a, "kith0", &lab.dir().join("a-tun.pcap")).unwrap();

    // c tries for a few seconds: pings and a TCP connection to a's overlay.
    let c_to_a = c
        .ping(IpAddr::V4(A_OVERLAY), 20, Duration::from_millis(150))
        .unwrap();
    let a_listener = a.spawn_in(|| {
        let l = TcpListener::bind((A_OVERLAY, 5002)).unwrap();
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            if l.accept().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    std::thread::sleep(Duration::from_millis(100));
    let c_connected = c
        .run_in(|| {
            TcpStream::connect_timeout(&(A_OVERLAY, 5002).into(), Duration::from_secs(3)).is_ok()
        })
        .unwrap();
    let a_accepted = a_listener.join().unwrap().unwrap();
    let a_to_b = a.ping(IpAddr::V4(B_OVERLAY), 5, PING_INTERVAL).unwrap();
    let b_to_a = b.ping(IpAddr::V4(A_OVERLAY), 5, PING_INTERVAL).unwrap();
    let tun = tun.stop().unwrap();
    let c_overlay = [100, 96, 0, 3];
    let refused = node_a
        .log()
        .lines()
        .filter(|l| {
            l.contains("datagram dropped")
                && l.contains("addr=198.18.0.3:51871")
                && l.contains("reason=initiator's key is not a configured peer")
        })
        .count();
    eprintln!(
        "c→a {c_to_a:?}; c connected: {c_connected}; a accepted: {a_accepted}\na→b {a_to_b:?}\nb→a {b_to_a:?}\n\
         a refused {refused} initiations from c; a's TUN: {} packets, {} with b's overlay address, {} with c's",
        tun.count(),
        tun.count_containing(&B_OVERLAY.octets()),
        tun.count_containing(&c_overlay),
    );
    assert!(
        refused >= 1,
        "a's log shows no initiation from c refused for its key:\n{}",
        node_a.log_tail(40)
    );
    assert_eq!(
        tun.count_containing(&c_overlay),
        0,
        "something from (or to) c reached a's TUN"
    );
    assert!(
        tun.count_containing(&B_OVERLAY.octets()) >= 10,
        "positive control: a's TUN capture should hold the pings with b"
    );

    assert_eq!(
        c_to_a.received, 0,
        "an unknown node's pings reached a: {c_to_a:?}"
    );
    assert!(
        !c_connected && !a_accepted,
        "an unknown node opened TCP to a"
    );
    assert!(
        a_to_b.all_received(),
        "a → b broke while c knocked: {a_to_b:?}"
    );
    assert!(
        b_to_a.all_received(),
        "b → a broke while c knocked: {b_to_a:?}"
    );
    node_a.check_running().unwrap();
    node_b.check_running().unwrap();
}

/// The network secret is the psk of every handshake, with the real binary
/// and `[network] secret_file`: a and b share a secret file and connect; c
/// has another secret and d none. Everyone lists everyone with a static
/// endpoint, yet a never completes a handshake with c or d: each answers
/// a's initiations, and a drops the answers (message 2 does not decrypt).
#[test]
fn only_nodes_with_the_same_secret_file_connect() {
    let lab = common::lab();
    let switch = lab.switch("sw").unwrap();
    let names = ["a", "b", "c", "d"];
    let hosts: Vec<_> = names.iter().map(|n| lab.host(n).unwrap()).collect();
    for (i, h) in hosts.iter().enumerate() {
        switch.attach(h, &format!("198.18.0.{}/24", i + 1)).unwrap();
    }
    let write_secret = |name: &str, secret: kith::identity::NetworkSecret| {
        let path = lab.dir().join(name);
        std::fs::write(&path, format!("{}\n", *secret.to_base64())).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path.display().to_string()
    };
    let ours = write_secret("ours.secret", kith::identity::NetworkSecret([0x5a; 32]));
    let other = write_secret("other.secret", kith::identity::NetworkSecret([0xa5; 32]));
    let secrets = [Some(&ours), Some(&ours), Some(&other), None];
    let mut specs: Vec<KithSpec> = (0..4)
        .map(|i| {
            let mut spec = KithSpec::new(
                &format!("100.96.0.{}/16", i + 1),
                SecretKey::generate().unwrap(),
            );
            spec.network.secret_file = secrets[i].cloned();
            spec
        })
        .collect();
    specs[0].log_level = "debug".into();
    let bin = common::kith_bin();
    let mut nodes = Vec::new();
    for i in 0..4 {
        let mut spec = specs[i].clone();
        for j in (0..4).filter(|j| *j != i) {
            let endpoint = Some(format!("198.18.0.{}:51871", j + 1));
            spec = spec.peer(names[j], &specs[j], endpoint);
        }
        nodes.push(lab.spawn_kith(&hosts[i], &bin, spec).unwrap());
    }
    for node in &mut nodes {
        node.wait_ready(Duration::from_secs(10)).unwrap();
    }
    let overlay = |i: usize| IpAddr::V4(std::net::Ipv4Addr::new(100, 96, 0, i as u8 + 1));
    hosts[0]
        .wait_reachable(overlay(1), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("a → b, same secret: {e}"));
    // Both directions between a and each of c, d, while they retry.
    let mut tried = Vec::new();
    for j in [2, 3] {
        tried.push((
            j,
            "a→",
            hosts[0].ping(overlay(j), 15, PING_INTERVAL).unwrap(),
        ));
        tried.push((
            j,
            "→a",
            hosts[j].ping(overlay(0), 15, PING_INTERVAL).unwrap(),
        ));
    }
    let status = nodes[0].status().unwrap();
    let log = nodes[0].log();
    let failed_from = |j: usize| {
        let addr = format!("addr=198.18.0.{}:51871", j + 1);
        log.lines()
            .filter(|l| l.contains(&addr) && l.contains("reason=handshake failed"))
            .count()
    };
    for (j, way, stats) in &tried {
        eprintln!("{} {way} {stats:?}", names[*j]);
    }
    eprintln!(
        "a's answers dropped as undecryptable: from c {}, from d {}",
        failed_from(2),
        failed_from(3)
    );
    for (j, way, stats) in &tried {
        assert_eq!(stats.received, 0, "{} {way}: {stats:?}", names[*j]);
    }
    let handshake = |name: &str| {
        let p = status.peers.iter().find(|p| p.name == name).unwrap();
        p.last_handshake_secs
    };
    assert!(handshake("b").is_some(), "a and b share the secret");
    assert_eq!(handshake("c"), None, "another secret");
    assert_eq!(handshake("d"), None, "no secret");
    // The handshakes really ran into the secret: c and d answered, and a
    // could not decrypt their answers.
    for j in [2, 3] {
        assert!(
            failed_from(j) >= 1,
            "no answer from {} dropped at a:\n{}",
            names[j],
            nodes[0].log_tail(40)
        );
    }
    for node in &mut nodes {
        node.check_running().unwrap();
    }
}

#[test]
fn underlay_carries_no_plaintext() {
    let lab = common::lab();
    let pair = common::pair(&lab);
    let marker: &'static [u8] = b"KITH-PLAINTEXT-MARKER-7f3a9c";
    let underlay =
        Capture::start(&pair.a, &pair.a_link.name, &lab.dir().join("underlay.pcap")).unwrap();
    let tun = Capture::start(&pair.a, "kith0", &lab.dir().join("tun.pcap")).unwrap();

    // UDP: 50 datagrams a → b, each carrying the marker.
    let udp_rx = pair.b.spawn_in(move || {
        let sock = UdpSocket::bind((B_OVERLAY, 5003)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while let Ok(n) = sock.recv(&mut buf) {
            got += usize::from(buf[..n].windows(marker.len()).any(|w| w == marker));
        }
        got
    });
    std::thread::sleep(Duration::from_millis(100));
    pair.a
        .run_in(move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            for i in 0..50u32 {
                let mut msg = marker.to_vec();
                msg.extend(format!(" udp #{i}").as_bytes());
                sock.send_to(&msg, (B_OVERLAY, 5003)).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .unwrap();

    // TCP: a stream made of the marker repeated, b echoes a byte count back.
    let tcp_rx = pair.b.spawn_in(|| {
        let l = TcpListener::bind((B_OVERLAY, 5004)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        all.len()
    });
    std::thread::sleep(Duration::from_millis(100));
    let sent = pair
        .a
        .run_in(move || {
            let mut s =
                TcpStream::connect_timeout(&(B_OVERLAY, 5004).into(), Duration::from_secs(3))
                    .unwrap();
            let data = marker.repeat(2000);
            s.write_all(&data).unwrap();
            data.len()
        })
        .unwrap();

    let udp_got = udp_rx.join().unwrap().unwrap();
    let tcp_got = tcp_rx.join().unwrap().unwrap();
    let underlay = underlay.stop().unwrap();
    let tun = tun.stop().unwrap();
    eprintln!(
        "udp datagrams delivered: {udp_got}/50, tcp bytes delivered: {tcp_got}/{sent}; \
         underlay capture: {} packets, {} with marker; tun capture: {} packets, {} with marker",
        underlay.count(),
        underlay.count_containing(marker),
        tun.count(),
        tun.count_containing(marker)
    );
    assert!(
        udp_got >= 45,
        "UDP through the tunnel mostly lost: {udp_got}/50"
    );
    assert_eq!(tcp_got, sent, "TCP through the tunnel incomplete");
    assert!(
        underlay.count() >= 50,
        "the underlay capture saw too little to mean anything"
    );
    assert_eq!(
        underlay.count_containing(marker),
        0,
        "plaintext marker visible on the underlay"
    );
    assert!(
        tun.count_containing(marker) >= 50,
        "positive control: the TUN capture should show the marker"
    );
    // The underlay really is the path: it carries kith's UDP from a's address.
    let a_addr = A_UNDERLAY.octets();
    assert!(
        underlay
            .packets
            .iter()
            .any(|p| p.windows(4).any(|w| w == a_addr))
    );
}
