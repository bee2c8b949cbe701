//! Port mapping against a real miniupnpd router, one test per protocol.
//!
//! Topology (one lab per test, namespaces `<prefix>-net|rtr|home`):
//!
//! ```text
//!   net 198.18.1.254 (coturn on 198.18.1.1 and .3, on its lo)
//!    │ 198.18.1.0/24
//!   rtr 198.18.1.2 ── miniupnpd (UPnP IGD, NAT-PMP, PCP), nftables masquerade
//!    │ lan 192.168.7.0/24
//!   home 192.168.7.2 ── PortMapper (a thread in the namespace, its own runtime)
//! ```
//!
//! Each test forces one protocol, waits for the mapping, checks miniupnpd's
//! DNAT rule in the router, sends a UDP datagram from `net` to the mapped
//! public address and expects it on the home socket, then shuts the mapper
//! down and expects the rule gone. Needs root and `scripts/setup.sh`'s
//! packages (miniupnpd-nftables, coturn).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kith::lab::miniupnpd::{Coturn, UpnpRouter, UpnpRouterSpec};
use kith::lab::{Host, Lab, LabError};
use kith::nat::portmap::{self, Mapping, Options, PortMapper, Protocol};

const NET: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const NET_ALT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const HOME: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 7, 1);

struct Site {
    // Field order is drop order: daemons before the lab deletes namespaces.
    router: UpnpRouter,
    _coturn: Coturn,
    net: Host,
    home: Host,
    lab: Lab,
}

fn lab() -> Lab {
    match Lab::new() {
        Ok(lab) => lab,
        Err(e @ LabError::NotRoot) => panic!("e2e_portmap: {e}"),
        Err(e) => panic!("e2e_portmap: building the lab: {e}"),
    }
}

fn site() -> Site {
    let lab = lab();
    let net = lab.host("net").expect("net host");
    let home = lab.host("home").expect("home host");
    // coturn's two addresses live on `net`'s loopback (this kernel has no
    // dummy interfaces); `net` reaches the router over 198.18.1.0/24 (its
    // end is .254). coturn must answer before miniupnpd starts: its STUN
    // check runs at start-up.
    for addr in [NET, NET_ALT] {
        net.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"])
            .expect("coturn address");
    }
    let coturn = Coturn::start(&lab, &net, NET, NET_ALT).expect("coturn");
    let spec = UpnpRouterSpec {
        name: "rtr",
        upstream: &net,
        upstream_addr: "198.18.1.254/24",
        wan_addr: &format!("{WAN}/24"),
        lan_addr: &format!("{GATEWAY}/24"),
        stun: coturn.primary,
    };
    let router = UpnpRouter::build(&lab, &spec).unwrap_or_else(|e| {
        lab.keep_files();
        panic!("miniupnpd router: {e}")
    });
    router
        .router
        .attach(&home, &format!("{HOME}/24"))
        .expect("home on the LAN");
    Site {
        router,
        _coturn: coturn,
        net,
        home,
        lab,
    }
}

fn options(protocol: Protocol) -> Options {
    Options {
        protocols: vec![protocol],
        request_timeout: Duration::from_secs(4),
        upnp_search_timeout: Duration::from_secs(3),
        min_retry: Duration::from_secs(1),
        max_retry: Duration::from_secs(2),
        ..Options::default()
    }
}

/// What the home thread reports back.
enum Report {
    Mapped { port: u16, mapping: Mapping },
    Received { payload: Vec<u8>, from: SocketAddr },
    Failed(String),
    ShutDown,
}

fn run_case(protocol: Protocol) {
    let site = site();
    let (report_tx, report_rx) = mpsc::channel::<Report>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let home = site.home.spawn_in(move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("home socket");
        let port = socket.local_addr().expect("local addr").port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mapper = runtime.block_on(async {
            // Gateway discovery from /proc/thread-self/net/route.
            let mapper = PortMapper::spawn(port, options(protocol));
            let mut watch = mapper.watch();
            let got =
                tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|m| m.is_some()))
                    .await;
            match got {
                Ok(Ok(m)) => {
                    let mapping = m.expect("checked is_some");
                    let _ = report_tx.send(Report::Mapped { port, mapping });
                    Some(mapper)
                }
                _ => {
                    let _ = report_tx
                        .send(Report::Failed(format!("no {protocol} mapping within 20 s")));
                    None
                }
            }
        });
        let Some(mapper) = mapper else { return };
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut buf = [0u8; 64];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = report_tx.send(Report::Received {
                    payload: buf[..n].to_vec(),
                    from,
                });
            }
            Err(e) => {
                let _ = report_tx.send(Report::Failed(format!(
                    "no datagram on the home socket: {e}"
                )));
            }
        }
        let _ = go_rx.recv_timeout(Duration::from_secs(30));
        runtime.block_on(mapper.shutdown());
        let _ = report_tx.send(Report::ShutDown);
    });

    let fail = |msg: String| -> ! {
        site.lab.keep_files();
        panic!(
            "{protocol}: {msg}\nminiupnpd log ({}):\n{}",
            site.router.log_path().display(),
            tail(&site.router.log_text())
        )
    };
    let (port, mapping) = match report_rx.recv_timeout(Duration::from_secs(40)) {
        Ok(Report::Mapped { port, mapping }) => (port, mapping),
        Ok(Report::Failed(msg)) => fail(msg),
        Ok(_) => fail("unexpected report".into()),
        Err(e) => fail(format!("home thread silent: {e}")),
    };
    eprintln!("{protocol}: home port {port} mapped to {mapping:?}");
    assert_eq!(mapping.protocol, protocol);
    assert_eq!(mapping.external.ip(), WAN, "the router's public address");
    assert!(mapping.lease > Duration::ZERO, "{mapping:?}");

    // miniupnpd installed the forward.
    let redirects = site.router.udp_redirects().expect("nft list");
    let SocketAddr::V4(external) = mapping.external else {
        fail("IPv6 mapping".into())
    };
    let internal = SocketAddrV4::new(HOME, port);
    if !redirects.contains(&(external.port(), internal)) {
        fail(format!(
            "no DNAT {} → {internal} in the router: {redirects:?}\n{}",
            external.port(),
            site.router.ruleset().unwrap_or_default()
        ));
    }

    // A datagram from the internet to the mapped address reaches home.
    let target = mapping.external;
    let sender = site.net.spawn_in(move || {
        let socket = UdpSocket::bind((NET, 0)).expect("net socket");
        for _ in 0..20 {
            let _ = socket.send_to(b"hello through the mapping", target);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    match report_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Report::Received { payload, from }) => {
            assert_eq!(payload, b"hello through the mapping");
            assert_eq!(from.ip(), NET, "unsolicited sender seen unchanged");
        }
        Ok(Report::Failed(msg)) => fail(msg),
        Ok(_) => fail("unexpected report".into()),
        Err(e) => fail(format!("home thread silent: {e}")),
    }
    let _ = sender.join();

    // Shutdown deletes the mapping.
    let _ = go_tx.send(());
    match report_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Report::ShutDown) => {}
        Ok(Report::Failed(msg)) => fail(msg),
        Ok(_) => fail("unexpected report".into()),
        Err(e) => fail(format!("shutdown did not finish: {e}")),
    }
    let _ = home.join();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let redirects = site.router.udp_redirects().expect("nft list");
        if !redirects.iter().any(|(p, _)| *p == external.port()) {
            break;
        }
        if Instant::now() > deadline {
            fail(format!(
                "mapping still in the router after shutdown: {redirects:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn pcp_maps_forwards_and_deletes() {
    run_case(Protocol::Pcp);
}

#[test]
fn natpmp_maps_forwards_and_deletes() {
    run_case(Protocol::NatPmp);
}

#[test]
fn upnp_maps_forwards_and_deletes() {
    run_case(Protocol::Upnp);
}

#[test]
fn probe_sees_all_three_protocols() {
    let site = site();
    let report = site
        .home
        .run_in(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(portmap::probe_with(GATEWAY, 0, &options(Protocol::Pcp)))
        })
        .expect("entering home");
    // options() forced PCP only; probe them all.
    let all = Options {
        protocols: Protocol::ALL.to_vec(),
        ..options(Protocol::Pcp)
    };
    let report_all = site
        .home
        .run_in(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(portmap::probe_with(GATEWAY, 0, &all))
        })
        .expect("entering home");
    eprintln!(
        "probe: {}",
        serde_json::to_string_pretty(&report_all).unwrap_or_default()
    );
    assert_eq!(report.upnp.error.as_deref(), Some("not tried"));
    assert!(report.pcp.answered, "{report:?}");
    assert_eq!(
        report_all.answering(),
        Protocol::ALL.to_vec(),
        "{report_all:?}"
    );
    for protocol in Protocol::ALL {
        let r = report_all.get(protocol);
        assert_eq!(
            r.external.map(|a| a.ip()),
            Some(WAN.into()),
            "{protocol}: {r:?}"
        );
    }
    assert_eq!(report_all.mapped().map(|m| m.protocol), Some(Protocol::Pcp));
    // The probe cleans up after itself.
    let left = site.router.udp_redirects().expect("nft list");
    assert!(left.is_empty(), "probe left mappings behind: {left:?}");
}
