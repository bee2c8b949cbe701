//! End to end: `kith reload` and SIGHUP on a running daemon, with the real
//! binary in network namespaces, while a ping stream and a TCP connection
//! run to a peer the reloads never touch.
//!
//! Needs root (namespaces, TUN); without it this test fails with a message
//! saying so.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kith::identity::SecretKey;
use kith::lab::topology::wait_both_ways;
use kith::lab::{KithNode, KithSpec};

/// A prefix behind d (an extra address on d's kith0) that a's config routes
/// to d only after a reload.
const D_LAN: &str = "100.96.1.0/24";
const D_LAN_HOST: Ipv4Addr = Ipv4Addr::new(100, 96, 1, 4);

fn overlay(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(100, 96, 0, n))
}

fn endpoint(n: u8) -> Option<String> {
    Some(format!("198.18.0.{n}:51871"))
}

fn names(node: &KithNode) -> Vec<String> {
    let report = node.status().unwrap();
    report.peers.into_iter().map(|p| p.name).collect()
}

/// `kith reload` must succeed and say `what`.
fn reload_ok(node: &KithNode, what: &str) {
    let (code, out, err) = node.reload().unwrap();
    eprintln!("kith reload: {code} {out}{err}");
    assert_eq!(code, 0, "kith reload failed: {out}{err}");
    assert!(out.contains(what), "kith reload said {out:?}, not {what:?}");
}

#[test]
fn reload_adds_removes_and_reroutes_peers_without_losing_a_packet() {
    let lab = common::lab();
    let switch = lab.switch("sw").unwrap();
    let hosts: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let h = lab.host(name).unwrap();
            switch
                .attach(&h, &format!("198.18.0.{}/24", i + 1))
                .unwrap();
            h
        })
        .collect();
    let (a, c, d) = (&hosts[0], &hosts[2], &hosts[3]);
    let spec = |n: u8| KithSpec::new(&format!("100.96.0.{n}/16"), SecretKey::generate().unwrap());
    let (sa, sb, sc, sd) = (spec(1), spec(2), spec(3), spec(4));
    let bin = common::kith_bin();
    let knows_a = |s: &KithSpec| s.clone().peer("a", &sa, endpoint(1));
    let a_with = |peers: &[(&str, &KithSpec, u8)]| {
        peers.iter().fold(sa.clone(), |s, (name, other, n)| {
            s.peer(name, other, endpoint(*n))
        })
    };
    let mut node_a = lab
        .spawn_kith(a, &bin, a_with(&[("b", &sb, 2), ("c", &sc, 3)]))
        .unwrap();
    let mut node_b = lab.spawn_kith(&hosts[1], &bin, knows_a(&sb)).unwrap();
    let mut node_c = lab.spawn_kith(c, &bin, knows_a(&sc)).unwrap();
    let mut node_d = lab.spawn_kith(d, &bin, knows_a(&sd)).unwrap();
    for n in [&mut node_a, &mut node_b, &mut node_c, &mut node_d] {
        n.wait_ready(Duration::from_secs(10)).unwrap();
    }
    d.ip(&["addr", "add", &format!("{D_LAN_HOST}/32"), "dev", "kith0"])
        .unwrap();
    wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10)).unwrap();
    wait_both_ways(&mut node_a, &mut node_c, Duration::from_secs(10)).unwrap();

    // Both sides initiate at start, and one's first initiation may be
    // retried a second or two later into one more session: let that pass,
    // so a session replaced below is the reloads' doing.
    std::thread::sleep(Duration::from_secs(3));
    let b_handshake = |node: &KithNode| node.peer_status("b").unwrap().last_handshake_secs.unwrap();
    let (b_handshake_before, measured) = (b_handshake(&node_a), Instant::now());

    // 30 s of pings to b, every 50 ms: b is in every config below, as it was.
    let mut stream = a
        .ping_stream(overlay(2), 600, Duration::from_millis(50))
        .unwrap();
    let stream_started = Instant::now();
    // And a TCP connection to b, opened before the reloads and used after.
    let (more_tx, more_rx) = std::sync::mpsc::channel::<()>();
    let server = hosts[1].spawn_in(|| {
        let listener = TcpListener::bind((Ipv4Addr::new(100, 96, 0, 2), 5005)).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut all = Vec::new();
        conn.read_to_end(&mut all).map(|_| all.len())
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = a.spawn_in(move || -> std::io::Result<()> {
        let to_b = SocketAddr::from(([100, 96, 0, 2], 5005));
        let mut conn = TcpStream::connect_timeout(&to_b, Duration::from_secs(3))?;
        conn.write_all(&[1; 1000])?;
        let _ = more_rx.recv();
        conn.write_all(&[2; 1000])
    });

    // Add d: it connects.
    let d_entry = ("d", &sd, 4);
    node_a
        .rewrite_config(a_with(&[("b", &sb, 2), ("c", &sc, 3), d_entry]))
        .unwrap();
    reload_ok(&node_a, "added peer d");
    wait_both_ways(&mut node_a, &mut node_d, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the added peer d does not connect: {e}"));

    // Remove c: its traffic stops, status no longer lists it.
    node_a
        .rewrite_config(a_with(&[("b", &sb, 2), d_entry]))
        .unwrap();
    reload_ok(&node_a, "removed peer c");
    assert_eq!(names(&node_a), ["b", "d"]);
    let to_c = a.ping(overlay(3), 10, Duration::from_millis(100)).unwrap();
    let from_c = c.ping(overlay(1), 10, Duration::from_millis(100)).unwrap();
    assert_eq!(to_c.received, 0, "a still reaches the removed c: {to_c:?}");
    assert_eq!(
        from_c.received, 0,
        "the removed c still reaches a: {from_c:?}"
    );

    // Give d a /24 (where d has an address): a routes it to d and accepts
    // d's answers from it, only after the reload.
    let before = a
        .ping(IpAddr::V4(D_LAN_HOST), 3, Duration::from_millis(100))
        .unwrap();
    assert_eq!(
        before.received, 0,
        "{D_LAN} reached before it is d's: {before:?}"
    );
    let mut a_d_lan = a_with(&[("b", &sb, 2), d_entry]);
    a_d_lan.peers[1].allowed_ips.push(D_LAN.into());
    node_a.rewrite_config(a_d_lan.clone()).unwrap();
    reload_ok(&node_a, "peer d: allowed_ips");
    a.wait_reachable(IpAddr::V4(D_LAN_HOST), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{D_LAN} not routed to d after the reload: {e}"));
    let d_status = node_a.peer_status("d").unwrap();
    assert!(
        d_status.allowed_ips.contains(&D_LAN.to_string()),
        "{d_status:?}"
    );

    // An invalid file: kith reload fails with the error's place, and the
    // daemon runs on with what it had.
    let valid = a_d_lan
        .render(&node_a.config_path().with_extension("key"))
        .unwrap();
    let broken =
        format!("{valid}\n[[peer]]\nname = \"e\"\npublic_key = \"not a key\"\nallowed_ips = []\n");
    node_a.write_config_text(&broken).unwrap();
    let (code, out, err) = node_a.reload().unwrap();
    eprintln!("kith reload of an invalid file: {code} {out}{err}");
    assert_ne!(code, 0, "an invalid file reloaded: {out}");
    let bad_line = broken.lines().count() - 1; // the public_key line
    let located = format!("{}:{bad_line}:", node_a.config_path().display());
    assert!(err.contains(&located), "no {located} in {err:?}");
    assert!(err.contains("public_key"), "{err}");
    assert!(err.contains("previous config"), "{err}");
    // A change only a restart applies is refused the same way.
    let mut moved = a_d_lan.clone();
    moved.listen_port = 51999;
    node_a.rewrite_config(moved).unwrap();
    let (code, _, err) = node_a.reload().unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("listen_port") && err.contains("restart"),
        "{err}"
    );
    node_a.check_running().unwrap();
    assert_eq!(names(&node_a), ["b", "d"]);
    assert!(
        node_a
            .peer_status("d")
            .unwrap()
            .allowed_ips
            .contains(&D_LAN.to_string())
    );

    // SIGHUP with a valid change applies it: c is back.
    let mut with_c = a_with(&[("b", &sb, 2), d_entry, ("c", &sc, 3)]);
    with_c.peers[1].allowed_ips.push(D_LAN.into());
    node_a.rewrite_config(with_c).unwrap();
    node_a.sighup();
    node_a
        .wait_log(&["config reloaded", "added peer c"], Duration::from_secs(5))
        .unwrap();
    wait_both_ways(&mut node_a, &mut node_c, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("c re-added by SIGHUP does not connect: {e}"));
    let log = node_a.log();
    assert!(
        log.contains("not reloaded"),
        "the refused reloads are logged too"
    );

    // The stream to b ran through every reload and lost nothing.
    assert!(
        stream.running(),
        "the reloads took longer than the ping stream ({:?}); nothing was measured across the last ones",
        stream_started.elapsed()
    );
    let (b_handshake_after, since) = (b_handshake(&node_a), measured.elapsed().as_secs());
    more_tx.send(()).unwrap();
    client
        .join()
        .unwrap()
        .unwrap()
        .expect("the TCP connection to b broke across the reloads");
    let received = server.join().unwrap().unwrap().unwrap();
    assert_eq!(
        received, 2000,
        "bytes b got on the connection opened before the reloads"
    );
    let stats = stream.wait().unwrap();
    eprintln!("ping a → b across the reloads: {stats:?}");
    assert_eq!(stats.transmitted, 600, "{stats:?}");
    assert_eq!(
        stats.received, stats.transmitted,
        "pings to b lost across reloads: {stats:?}"
    );
    assert!(
        b_handshake_after + 1 >= b_handshake_before + since,
        "the session with b was replaced during the reloads (its handshake was \
         {b_handshake_before} s old before them, {b_handshake_after} s old {since} s later)"
    );
    for n in [&mut node_b, &mut node_c, &mut node_d] {
        n.check_running().unwrap();
    }
}
