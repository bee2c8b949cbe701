//! End to end, the data plane on its own thread: a 100 MB transfer that
//! crosses rekeys (the control plane installs new keys in the data plane
//! while it carries the stream) and a path change (the peer's address
//! moves; the data plane hands the first datagram from the new address to
//! the control plane, which follows it) arrives byte-identical.
//!
//! Needs root (namespaces, TUN).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kith::identity::SecretKey;
use kith::lab::topology::Pair;
use kith::lab::{KithSpec, transfer};

/// The daemons' protocol timers are divided by this
/// (`KITH_TEST_TIMER_DIVISOR`): a rekey every 4 s, so a test of seconds
/// sees several.
const TIMER_DIVISOR: &str = "30";

/// The lab's two-host pair, both daemons' specs changed by `tweak`.
fn pair_with(lab: &kith::lab::Lab, tweak: impl Fn(&mut KithSpec)) -> Pair {
    let spec = |addr: &str| {
        let mut s = KithSpec::new(addr, SecretKey::generate().unwrap());
        tweak(&mut s);
        s
    };
    Pair::start_with(
        lab,
        &common::kith_bin(),
        spec("100.96.0.1/16"),
        spec("100.96.0.2/16"),
    )
    .unwrap()
}

#[test]
fn hundred_megabytes_arrive_intact_across_rekeys_and_a_path_change() {
    let lab = common::lab();
    let pair = pair_with(&lab, |s| {
        s.env
            .push(("KITH_TEST_TIMER_DIVISOR".into(), TIMER_DIVISOR.into()))
    });
    let Pair {
        mut node_a,
        mut node_b,
        a,
        b,
        b_link,
        ..
    } = pair;
    // b's second address on the same link: where its traffic comes from
    // once the first is gone (promoted, not deleted with it).
    b.exec("ip", &["addr", "add", "198.18.0.3/24", "dev", &b_link.name])
        .unwrap();
    b.exec(
        "sysctl",
        &[
            "-qw",
            &format!("net.ipv4.conf.{}.promote_secondaries=1", b_link.name),
        ],
    )
    .unwrap();
    kith::lab::topology::wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10)).unwrap();
    let before = node_a.peer_status("b").unwrap();
    assert_eq!(
        before.endpoint.as_deref(),
        Some(format!("198.18.0.2:{}", node_b.spec().listen_port).as_str())
    );

    // ~12 s at 8 MB/s: long enough for three or four rekeys and the move.
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(100, 96, 0, 2)), 5001);
    let (bh, ah) = (b.clone(), a.clone());
    let started = Instant::now();
    let transfer = std::thread::spawn(move || {
        transfer::tcp_paced(&bh, listen, &ah, 100 * 1000 * 1000, Some(8_000_000))
    });
    std::thread::sleep(Duration::from_secs(5));
    // The path changes under the stream: b's first address goes, so its
    // datagrams (the stream's ACKs) leave from the second one and a must
    // follow them there.
    b.exec("ip", &["addr", "del", "198.18.0.2/24", "dev", &b_link.name])
        .unwrap();
    let report = transfer.join().unwrap().unwrap();
    eprintln!(
        "100 MB a → b across rekeys and a path change: {} bytes in {:?} ({:.0} Mbit/s)",
        report.received_bytes,
        report.elapsed,
        report.mbit_per_s()
    );
    assert_eq!(report.received_bytes, report.sent_bytes, "length differs");
    assert!(report.intact(), "content differs (BLAKE2b-512 mismatch)");

    let after = node_a.peer_status("b").unwrap();
    assert_eq!(
        after.endpoint.as_deref(),
        Some(format!("198.18.0.3:{}", node_b.spec().listen_port).as_str()),
        "a did not follow b to its new address\n{}",
        node_a.log_tail(30)
    );
    assert!(
        node_a.log().contains("endpoint changed"),
        "no path change in a's log\n{}",
        node_a.log_tail(30)
    );
    // Rekeys happened while the stream ran (one every few seconds).
    let rekeys = after.handshakes - before.handshakes;
    eprintln!(
        "{rekeys} handshakes during the {:?} transfer",
        started.elapsed()
    );
    assert!(
        rekeys >= 2,
        "expected rekeys during the transfer, saw {rekeys}\n{}",
        node_a.log_tail(30)
    );
    node_a.check_running().unwrap();
    node_b.check_running().unwrap();
}

/// The names of process `pid`'s data-plane threads (`kith-data-N`).
fn data_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| c.starts_with("kith-data"))
        .collect();
    names.sort();
    names
}

/// Both daemons with `[interface] queues = 2`: two workers each, and
/// sixteen TCP streams at once (100 MB in all) arrive intact, sealed by
/// both of the sender's workers (sixteen flows all hashed to one of two
/// queues: one run in 32768).
#[test]
fn two_queues_carry_parallel_streams_intact_on_both_workers() {
    let lab = common::lab();
    let pair = pair_with(&lab, |s| s.queues = Some(2));
    let Pair {
        mut node_a,
        mut node_b,
        a,
        b,
        ..
    } = pair;
    kith::lab::topology::wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10)).unwrap();
    for node in [&node_a, &node_b] {
        assert_eq!(node.status().unwrap().data_workers.len(), 2);
        assert_eq!(
            data_threads(node.pid().unwrap()),
            ["kith-data-0", "kith-data-1"]
        );
    }

    let before = node_a.status().unwrap().data_workers;
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| {
            let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(100, 96, 0, 2)), 5001 + i);
            let (bh, ah) = (b.clone(), a.clone());
            std::thread::spawn(move || {
                transfer::tcp(&bh, listen, &ah, 100 * 1000 * 1000 / u64::from(STREAMS))
            })
        })
        .collect();
    let mut total = 0;
    for (i, s) in streams.into_iter().enumerate() {
        let report = s.join().unwrap().unwrap();
        assert_eq!(
            report.received_bytes, report.sent_bytes,
            "stream {i}: length differs"
        );
        assert!(report.intact(), "stream {i}: content differs");
        total += report.received_bytes;
    }
    assert_eq!(total, 100 * 1000 * 1000);
    let after = node_a.status().unwrap().data_workers;
    eprintln!("datagrams a's workers sealed: before {before:?}, after {after:?}");
    for (w, (s0, s1)) in before.iter().zip(&after).enumerate() {
        // A 6.25 MB stream is ~4400 full datagrams.
        assert!(
            s1 - s0 > 1000,
            "worker {w} sealed {} datagrams: the flows did not spread over the queues\n{}",
            s1 - s0,
            node_a.log_tail(30)
        );
    }
    node_a.check_running().unwrap();
    node_b.check_running().unwrap();
}

/// Parallel streams in the two-queue test.
const STREAMS: u16 = 16;

/// A TUN without offload (no virtio-net header: what a kernel without
/// IFF_VNET_HDR gives, forced with `KITH_TUN_OFFLOAD=off`) carries bulk
/// TCP both ways intact: packets are read and written one at a time, with
/// no header in front and nothing merged.
#[test]
fn a_tun_without_offload_carries_bulk_tcp_intact() {
    let lab = common::lab();
    let pair = pair_with(&lab, |s| {
        s.env
            .push((kith::daemon::TUN_OFFLOAD_ENV.into(), "off".into()))
    });
    let Pair {
        mut node_a,
        mut node_b,
        a,
        b,
        ..
    } = pair;
    kith::lab::topology::wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10)).unwrap();
    for node in [&mut node_a, &mut node_b] {
        node.wait_log(&["TUN offload off"], Duration::from_secs(5))
            .expect("the daemon says its TUN has no offload");
    }
    let overlay = |n: u8| IpAddr::V4(Ipv4Addr::new(100, 96, 0, n));
    for (server, ip, client) in [(&b, overlay(2), &a), (&a, overlay(1), &b)] {
        let report = transfer::tcp(server, SocketAddr::new(ip, 5001), client, 10_000_000).unwrap();
        assert!(report.intact(), "to {ip}: {report:?}");
    }
    for node in [&node_a, &node_b] {
        let drops = node.status().unwrap().data_drops;
        let write_errors = drops.iter().find(|(k, _)| k == "tun_write_errors");
        assert_eq!(write_errors.map(|(_, n)| *n), Some(0), "{drops:?}");
    }
    node_a.check_running().unwrap();
    node_b.check_running().unwrap();
}
