//! End to end, operations: `kith ping`, `kith metrics`, the `[metrics]
//! listen` HTTP listener and the systemd notifications (READY, STATUS,
//! WATCHDOG from the data path's loop), with the real binary in network
//! namespaces.
//!
//! Needs root (namespaces, TUN); without it these tests fail with a message
//! saying so. Each test has its own lab, so they run in parallel.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kith::identity::SecretKey;
use kith::lab::topology::{A_UNDERLAY, B_OVERLAY, B_UNDERLAY, spawn_pair, wait_both_ways};
use kith::lab::{Host, KithNode, KithSpec, Lab};

const METRICS_PORT: u16 = 9586;

/// a and b on a link, each with the other at a static endpoint; `tweak`
/// adjusts a's spec. Returns once the tunnel works both ways.
fn pair(lab: &Lab, tweak: impl FnOnce(&mut KithSpec)) -> (Host, KithNode, KithNode, KithSpec) {
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24").unwrap();
    let mut spec_a = KithSpec::new("100.96.0.1/16", SecretKey::generate().unwrap());
    let spec_b = KithSpec::new("100.96.0.2/16", SecretKey::generate().unwrap());
    tweak(&mut spec_a);
    let endpoints = (
        Some(format!("{B_UNDERLAY}:51871")),
        Some(format!("{A_UNDERLAY}:51871")),
    );
    let (mut node_a, mut node_b, _) = spawn_pair(
        lab,
        &common::kith_bin(),
        (&a, spec_a),
        (&b, spec_b.clone()),
        endpoints,
    )
    .unwrap_or_else(|e| panic!("starting kith: {e}"));
    wait_both_ways(&mut node_a, &mut node_b, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("tunnel: {e}"));
    (a, node_a, node_b, spec_b)
}

/// `kith ARGS… --control <node's socket>`.
fn kith(node: &KithNode, args: &[&str]) -> Output {
    Command::new(common::kith_bin())
        .args(args)
        .arg("--control")
        .arg(node.control_path())
        .output()
        .expect("running kith")
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of the sample `series` (name and labels exactly as printed).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(s, _)| *s == series)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// One HTTP/1.1 exchange with a's metrics listener, from inside a's
/// namespace: the status line and the body.
fn http(a: &Host, request: &'static str) -> (String, String) {
    let answer = a
        .run_in(move || {
            let mut s = TcpStream::connect(("127.0.0.1", METRICS_PORT)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        })
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

fn scrape(a: &Host) -> String {
    let (status, body) = http(a, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

const RX: &str = "kith_peer_received_bytes_total{peer=\"b\"}";
const TX: &str = "kith_peer_sent_bytes_total{peer=\"b\"}";

#[test]
fn ping_reports_the_direct_path_and_metrics_count_the_traffic() {
    let lab = common::lab();
    let (a, mut node_a, _node_b, spec_b) = pair(&lab, |spec| {
        spec.metrics.listen = Some(format!("127.0.0.1:{METRICS_PORT}"));
    });

    // The status the probes below should agree with.
    let b = node_a.peer_status("b").unwrap();
    assert_eq!(b.path, "direct", "{b:?}");

    // kith ping by name: a pong per probe, over the direct path, with an RTT.
    let out = kith(&node_a, &["ping", "b", "-c", "3"]);
    assert!(out.status.success(), "kith ping b: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("pong from b via {B_UNDERLAY}:51871 in ");
    let rtts: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(" ms").next().unwrap().parse().unwrap())
        .collect();
    eprintln!("{stdout}");
    assert_eq!(rtts.len(), 3, "three pongs on the direct path:\n{stdout}");
    assert!(rtts.iter().all(|ms| *ms > 0.0), "RTTs measured: {rtts:?}");
    for seq in 1..=3 {
        assert!(stdout.contains(&format!("(seq {seq})")), "{stdout}");
    }

    // By public key, too.
    let key = spec_b.key.public().to_string();
    let out = kith(&node_a, &["ping", &key, "-c", "1"]);
    assert!(out.status.success(), "kith ping <key>: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&prefix),
        "{}",
        text(&out)
    );

    // An unknown peer: non-zero, and the error names the known ones.
    let out = kith(&node_a, &["ping", "nosuch"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown peer \"nosuch\"; known peers: \"b\""),
        "{}",
        text(&out)
    );

    // Metrics from the control socket and over HTTP: the same families.
    let out = kith(&node_a, &["metrics"]);
    assert!(out.status.success(), "kith metrics: {}", text(&out));
    let before = String::from_utf8_lossy(&out.stdout).into_owned();
    let http_before = scrape(&a);
    for t in [&before, &http_before] {
        assert!(
            t.contains("# HELP kith_peer_received_bytes_total ")
                && t.contains("# TYPE kith_peer_received_bytes_total counter"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE kith_first_direct_seconds histogram"),
            "{t}"
        );
        assert_eq!(metric(t, "kith_peers"), 1.0);
        assert_eq!(metric(t, "kith_peer_connected{peer=\"b\"}"), 1.0);
        assert!(metric(t, "kith_peer_handshakes_total{peer=\"b\"}") >= 1.0);
        // b was reached directly once: one sample in the histogram.
        assert_eq!(metric(t, "kith_first_direct_seconds_count"), 1.0, "{t}");
        assert_eq!(
            metric(t, "kith_first_direct_seconds_bucket{le=\"+Inf\"}"),
            1.0
        );
        assert!(metric(t, "kith_peer_time_to_direct_seconds{peer=\"b\"}") > 0.0);
    }

    // Traffic through the tunnel, then the byte counters have grown.
    let stats = a
        .ping(IpAddr::V4(B_OVERLAY), 20, Duration::from_millis(20))
        .unwrap();
    assert!(stats.all_received(), "{stats:?}");
    // Past the listener's render cache.
    std::thread::sleep(Duration::from_millis(300));
    let out = kith(&node_a, &["metrics"]);
    let after = String::from_utf8_lossy(&out.stdout).into_owned();
    let http_after = scrape(&a);
    // 20 echo requests and replies of 84 bytes, each sealed (+32).
    let grown = 20.0 * 100.0;
    for (was, now, via) in [
        (&before, &after, "kith metrics"),
        (&http_before, &http_after, "GET /metrics"),
    ] {
        for series in [RX, TX] {
            let (b, n) = (metric(was, series), metric(now, series));
            assert!(n >= b + grown, "{via}: {series} {b} → {n}");
        }
        assert_eq!(metric(now, "kith_first_direct_seconds_count"), 1.0);
    }

    // Hostile requests get errors, and the daemon serves on.
    let (status, _) = http(
        &a,
        "POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nkill",
    );
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    let (status, _) = http(&a, "GET /../../etc/shadow HTTP/1.1\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _) = http(&a, "garbage\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    node_a.check_running().unwrap();
    scrape(&a);
}

/// Datagrams a fake systemd received until `until` holds for them all or
/// `timeout` passes.
fn notifications(
    sock: &UnixDatagram,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn systemd_hears_ready_status_and_a_watchdog_fed_from_the_loop() {
    let lab = common::lab();
    let notify = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let path = notify.display().to_string();
    let (_a, mut node_a, _node_b, _) = pair(&lab, |spec| {
        spec.env = vec![
            ("NOTIFY_SOCKET".into(), path),
            // WatchdogSec=0.4s: fed every 200 ms.
            ("WATCHDOG_USEC".into(), "400000".into()),
        ];
    });
    let got = notifications(&sock, Duration::from_secs(10), |got| {
        got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 5
            && got.iter().any(|m| m == "STATUS=1 of 1 peer connected")
    });
    eprintln!("{got:?}");
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    assert!(
        got.iter().any(|m| m == "STATUS=1 of 1 peer connected"),
        "{got:?}"
    );
    assert!(
        got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 5,
        "the watchdog is fed while the loop runs: {got:?}"
    );
    // Only changes are reported: no STATUS= repeats while nothing changes.
    let statuses: Vec<&String> = got.iter().filter(|m| m.starts_with("STATUS=")).collect();
    let mut unique = statuses.clone();
    unique.dedup();
    assert_eq!(statuses, unique, "{got:?}");

    node_a.stop(Duration::from_secs(5)).unwrap();
    let tail = notifications(&sock, Duration::from_secs(3), |got| {
        got.iter().any(|m| m == "STOPPING=1")
    });
    assert!(tail.iter().any(|m| m == "STOPPING=1"), "{tail:?}");
    let _ = std::fs::remove_file(Path::new(&notify));
}
