//! The lab itself, without kith: links, a NAT router, captures, transfers,
//! iperf3 and the delay tool work on the raw underlay. If these fail,
//! e2e_tunnel failures say nothing about kith.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use kith::lab::{Capture, Lab, NatKind, RouterSpec, iperf, transfer};

fn lab() -> Lab {
    Lab::new().unwrap_or_else(|e| panic!("cannot build a lab: {e}"))
}

#[test]
fn link_ping_capture_and_transfer() {
    let lab = lab();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let (a_end, _) = lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24").unwrap();
    let b_ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    let stats = a.ping(b_ip, 3, Duration::from_millis(100)).unwrap();
    assert!(stats.all_received(), "{stats:?}");
    assert!(stats.avg_ms().is_some());

    let capture = Capture::start(&a, &a_end.name, &lab.dir().join("a.pcap")).unwrap();
    let marker = b"kith-lab-marker-0123";
    let receiver = b.spawn_in(|| {
        let sock = UdpSocket::bind("198.18.0.2:40000").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 100];
        sock.recv(&mut buf).unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    a.run_in(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            sock.send_to(marker, "198.18.0.2:40000").unwrap();
        }
    })
    .unwrap();
    assert_eq!(receiver.join().unwrap().unwrap(), marker.len());
    let pcap = capture.stop().unwrap();
    assert!(
        pcap.count_containing(marker) >= 1,
        "{} packets",
        pcap.count()
    );

    let report = transfer::tcp(&b, SocketAddr::new(b_ip, 40001), &a, 8 << 20).unwrap();
    assert!(report.intact(), "{report:?}");

    let perf = iperf::tcp(&b, &a, b_ip, 40002, 1).unwrap();
    assert!(perf.bits_per_second > 1e8, "{perf:?}");
}

#[test]
fn masquerade_router_lets_lan_out_and_nothing_in() {
    let lab = lab();
    let inet = lab.host("inet").unwrap();
    let router = lab
        .nat_router(&RouterSpec {
            name: "r1",
            kind: NatKind::Masquerade,
            upstream: &inet,
            upstream_addr: "198.18.1.1/24",
            wan_addr: "198.18.1.2/24",
            lan_addr: "192.168.1.1/24",
        })
        .unwrap();
    let home = lab.host("home").unwrap();
    router.attach(&home, "192.168.1.2/24").unwrap();
    // Give the internet a route to the LAN, so only the NAT can stop it.
    inet.add_route("192.168.1.0/24", router.public_ip().unwrap())
        .unwrap();

    let out = home
        .ping("198.18.1.1".parse().unwrap(), 2, Duration::from_millis(100))
        .unwrap();
    assert!(out.all_received(), "LAN → internet: {out:?}");
    let inward = inet
        .ping(
            "192.168.1.2".parse().unwrap(),
            2,
            Duration::from_millis(100),
        )
        .unwrap();
    assert_eq!(inward.received, 0, "internet → LAN must not pass the NAT");

    // The internet host sees the router's public address, not the LAN one.
    let seen = inet.spawn_in(|| {
        let sock = UdpSocket::bind("198.18.1.1:40000").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        sock.recv_from(&mut buf).unwrap().1
    });
    std::thread::sleep(Duration::from_millis(100));
    home.run_in(|| {
        UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .send_to(b"hi", "198.18.1.1:40000")
            .unwrap();
    })
    .unwrap();
    let from = seen.join().unwrap().unwrap();
    assert_eq!(from.ip(), IpAddr::V4(router.public_ip().unwrap()));
}

/// The delay tool: 50 ms each way on a host's internet uplink puts ping's
/// round trip at 100 ms or more (and well under 400 ms, so frames are not
/// held longer), where the plain veth answered in under 10 ms. Dropping
/// the link deletes its TAP devices.
#[test]
fn delayed_uplink_adds_its_delay_each_way() {
    let lab = lab();
    let internet = lab.internet().unwrap();
    let host = lab.host("a").unwrap();
    let up = internet.attach(&host).unwrap();
    let gateway = IpAddr::V4(up.subnet.gateway());
    let every = Duration::from_millis(100);

    let plain = host.ping(gateway, 5, every).unwrap();
    let (_, _, max) = plain.rtt_ms.expect("replies on the plain veth");
    assert!(plain.all_received(), "plain veth: {plain:?}");
    assert!(max < 10.0, "plain veth: {plain:?}");

    let link = internet
        .delay_uplink(&host, Duration::from_millis(50))
        .unwrap();
    // Address resolution across the new link costs a round trip of its own.
    host.ping(gateway, 1, every).unwrap();
    let delayed = host.ping(gateway, 10, every).unwrap();
    eprintln!("ping over the veth: {plain:?}; over 50 ms each way: {delayed:?}");
    let (min, _, max) = delayed.rtt_ms.expect("replies over the delayed link");
    assert!(delayed.all_received(), "delayed link: {delayed:?}");
    assert!(
        min >= 100.0,
        "50 ms each way, round trip {min} ms: {delayed:?}"
    );
    assert!(
        max < 400.0,
        "50 ms each way, round trip {max} ms: {delayed:?}"
    );

    let [(_, inet_end), (_, host_end)] = link.ends().clone();
    assert_eq!(
        host_end, up.iface.name,
        "the TAP device takes the veth's name"
    );
    drop(link);
    for (who, end, dev) in [
        ("internet", internet.host(), &inet_end),
        ("a", &host, &host_end),
    ] {
        assert!(
            end.ip(&["link", "show", dev]).is_err(),
            "{who}'s end {dev} outlived the delay link"
        );
    }
}

#[test]
fn dropping_the_lab_removes_its_namespaces() {
    let lab = lab();
    let a = lab.host("a").unwrap();
    let netns = a.netns().to_owned();
    assert!(std::path::Path::new(&format!("/run/netns/{netns}")).exists());
    drop(lab);
    assert!(!std::path::Path::new(&format!("/run/netns/{netns}")).exists());
}
