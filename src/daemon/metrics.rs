//! Metrics: the counters behind `kith status`, in one struct ([`Metrics`]),
//! and their Prometheus text exposition ([`render`], pure), served by
//! `kith metrics` over the control socket and by the optional
//! `[metrics] listen` HTTP listener ([`super::http`]). Every metric is
//! documented in `docs/metrics.md`; a test keeps the two in step.
//!
//! Flow:
//! - what only the shell sees is counted here as it happens: path
//!   changes (from the core's events), hard-NAT attempts and outcomes (from
//!   the puncher), the time from start to each peer's first direct packet
//!   (a gauge per peer and the [`Histogram`] `kith_first_direct_seconds`);
//! - what the core counts per packet (bytes, handshakes, relayed bytes, the
//!   relay service's counters) stays in the core and is copied in by the
//!   daemon just before rendering, so the data path pays nothing for it.

use std::fmt::Write as _;
use std::time::Duration;

/// Every counter and gauge kith exports. Field docs name the metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Since `kith up` started: `kith_uptime_seconds`.
    pub uptime: Duration,
    /// One per configured peer (index = the core's `PeerId`).
    pub peers: Vec<PeerMetrics>,
    /// Initiations with a valid mac1 refused before any DH work (replays,
    /// under load without a cookie, over a rate or the global budget):
    /// `kith_handshakes_refused_total`.
    pub handshakes_refused: u64,
    /// Cookie replies we sent while under load: `kith_cookies_sent_total`.
    pub cookies_sent: u64,
    /// Datagrams the relay TCP transport dropped (no connection yet, a full
    /// queue): `kith_relay_tcp_dropped_total`.
    pub tcp_dropped: u64,
    /// Data packets the control plane carried itself (relays over TCP,
    /// peers without a settled path): `kith_control_data_packets_total`.
    pub control_data: u64,
    /// The data plane's drops by reason: `kith_data_dropped_total{reason}`.
    pub data_drops: Vec<(&'static str, u64)>,
    /// The relay service, with `[relay] serve = true`.
    pub relay_service: Option<RelayServiceMetrics>,
    /// Time from start to each peer's first direct packet, one observation
    /// per peer: `kith_first_direct_seconds`.
    pub first_direct: Histogram,
}

/// One peer's counters; every metric is labelled `peer="<name>"`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerMetrics {
    pub name: String,
    /// The slot of a peer a reload removed (ids are never reused): its
    /// counters are reset and it is not rendered.
    pub removed: bool,
    /// A session, direct or relayed: `kith_peer_connected` (1 or 0).
    pub connected: bool,
    /// Traffic goes through a relay: `kith_peer_relayed` (1 or 0).
    pub relayed: bool,
    /// Datagram bytes received from and sent to the peer, relayed ones
    /// included: `kith_peer_received_bytes_total`, `kith_peer_sent_bytes_total`.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Handshakes completed (each rekey is one): `kith_peer_handshakes_total`.
    pub handshakes: u64,
    /// The path changed: another endpoint, to or from a relay, another
    /// relay: `kith_peer_path_changes_total`.
    pub path_changes: u64,
    /// Hard-NAT traversal attempts started: `kith_peer_punch_attempts_total`.
    pub punch_attempts: u64,
    /// Attempts that ended with a direct path, and with the budget spent:
    /// `kith_peer_punch_outcomes_total{outcome="connected"|"spent"}`.
    pub punch_connected: u64,
    pub punch_spent: u64,
    /// From start to the first direct packet: `kith_peer_time_to_direct_seconds`.
    pub time_to_direct: Option<Duration>,
    /// End-to-end bytes through relays: `kith_peer_relayed_sent_bytes_total`,
    /// `kith_peer_relayed_received_bytes_total`.
    pub relay_tx_bytes: u64,
    pub relay_rx_bytes: u64,
    /// Packets for the peer no relay could take: `kith_peer_relay_drops_total`.
    pub relay_drops: u64,
}

/// What this node relays for others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayServiceMetrics {
    /// Frames refused: the key is no member (`reason="unknown"`), the
    /// destination has no session with us (`reason="no_session"`):
    /// `kith_relay_refused_total`.
    pub refused_unknown: u64,
    pub refused_no_session: u64,
    /// Per member that relayed anything.
    pub members: Vec<RelayMemberMetrics>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayMemberMetrics {
    pub name: String,
    /// Bytes and packets the member sent through us:
    /// `kith_relay_forwarded_bytes_total`, `kith_relay_forwarded_packets_total`.
    pub forwarded_bytes: u64,
    pub forwarded_packets: u64,
    /// Bytes delivered to the member from others: `kith_relay_delivered_bytes_total`.
    pub delivered_bytes: u64,
    /// Frames from the member over the rate limits: `kith_relay_rate_dropped_total`.
    pub dropped_rate: u64,
}

/// A Prometheus histogram with fixed buckets (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: Vec<u64>,
    sum: f64,
}

/// Buckets of `kith_first_direct_seconds`: a LAN peer in milliseconds, a
/// punched one in seconds, hard NAT in tens of seconds, a peer that starts
/// later in minutes.
pub const FIRST_DIRECT_BOUNDS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Default for Histogram {
    fn default() -> Self {
        Self::new(FIRST_DIRECT_BOUNDS)
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: Duration) {
        let v = value.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Metrics {
    /// The counters of peer `i`, growing the list for a peer seen first.
    fn peer(&mut self, i: usize) -> &mut PeerMetrics {
        if self.peers.len() <= i {
            self.peers.resize_with(i + 1, PeerMetrics::default);
        }
        &mut self.peers[i]
    }

    /// Peer `i`'s path changed (endpoint, relay, or between the two).
    pub fn path_changed(&mut self, i: usize) {
        self.peer(i).path_changes += 1;
    }

    pub fn punch_started(&mut self, i: usize) {
        self.peer(i).punch_attempts += 1;
    }

    pub fn punch_finished(&mut self, i: usize, connected: bool) {
        let p = self.peer(i);
        if connected {
            p.punch_connected += 1;
        } else {
            p.punch_spent += 1;
        }
    }

    /// Peer `i` is reached directly, `since_start` after the daemon
    /// started; only the first time counts.
    pub fn direct(&mut self, i: usize, since_start: Duration) {
        let p = self.peer(i);
        if p.time_to_direct.is_none() {
            p.time_to_direct = Some(since_start);
            self.first_direct.observe(since_start);
        }
    }

    /// Forget the peers a reload removed: `live(i)` is false for them.
    pub fn retain_peers(&mut self, live: impl Fn(usize) -> bool) {
        for (i, p) in self.peers.iter_mut().enumerate() {
            if !live(i) {
                *p = PeerMetrics {
                    removed: true,
                    ..PeerMetrics::default()
                };
            }
        }
    }

    /// The configured peers' counters.
    fn live_peers(&self) -> impl Iterator<Item = &PeerMetrics> {
        self.peers.iter().filter(|p| !p.removed)
    }

    /// Copy in the core's counters for peer `i` (see the module docs).
    pub fn set_peer(&mut self, i: usize, core: &crate::core::PeerStatus) {
        let p = self.peer(i);
        p.name.clone_from(&core.name);
        p.connected = core.connected;
        p.relayed = core.relay.is_some();
        p.rx_bytes = core.rx_bytes;
        p.tx_bytes = core.tx_bytes;
        p.handshakes = core.handshakes;
        p.relay_tx_bytes = core.relay_tx_bytes;
        p.relay_rx_bytes = core.relay_rx_bytes;
        p.relay_drops = core.relay_drops;
    }
}

/// Prometheus text exposition format 0.0.4 (what the HTTP listener sends
/// as `text/plain; version=0.0.4`).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family at a time: `# HELP` and `# TYPE`, then its samples.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A per-peer family: name, type, help, and the peer's value (`None`: no
/// sample for that peer).
type PeerFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PeerMetrics) -> Option<f64>,
);

/// The families with one sample per peer, `peer="<name>"`.
const PER_PEER: &[PeerFamily] = &[
    (
        "kith_peer_connected",
        "gauge",
        "1 while the peer has a session (direct or relayed), else 0.",
        |p| Some(f64::from(u8::from(p.connected))),
    ),
    (
        "kith_peer_relayed",
        "gauge",
        "1 while the peer's traffic goes through a relay, else 0.",
        |p| Some(f64::from(u8::from(p.relayed))),
    ),
    (
        "kith_peer_received_bytes_total",
        "counter",
        "Bytes of datagrams received from the peer (relayed ones included).",
        |p| Some(p.rx_bytes as f64),
    ),
    (
        "kith_peer_sent_bytes_total",
        "counter",
        "Bytes of datagrams sent to the peer (relayed ones included).",
        |p| Some(p.tx_bytes as f64),
    ),
    (
        "kith_peer_handshakes_total",
        "counter",
        "Handshakes completed with the peer (the first and every rekey).",
        |p| Some(p.handshakes as f64),
    ),
    (
        "kith_peer_path_changes_total",
        "counter",
        "Times the peer's path changed: another endpoint, to or from a relay, another relay.",
        |p| Some(p.path_changes as f64),
    ),
    (
        "kith_peer_punch_attempts_total",
        "counter",
        "Hard-NAT traversal attempts started towards the peer.",
        |p| Some(p.punch_attempts as f64),
    ),
    (
        "kith_peer_time_to_direct_seconds",
        "gauge",
        "Seconds from daemon start to the peer's first direct packet (absent until then).",
        |p| p.time_to_direct.map(|d| d.as_secs_f64()),
    ),
    (
        "kith_peer_relayed_sent_bytes_total",
        "counter",
        "End-to-end bytes sent to the peer through a relay.",
        |p| Some(p.relay_tx_bytes as f64),
    ),
    (
        "kith_peer_relayed_received_bytes_total",
        "counter",
        "End-to-end bytes received from the peer through a relay.",
        |p| Some(p.relay_rx_bytes as f64),
    ),
    (
        "kith_peer_relay_drops_total",
        "counter",
        "Packets for the peer dropped because no relay could carry them.",
        |p| Some(p.relay_drops as f64),
    ),
];

/// A label value as the exposition format wants it: backslash, double
/// quote and newline escaped (peer names are any printable text).
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The whole exposition: every family with `# HELP` and `# TYPE`, names
/// prefixed `kith_`, per-peer samples labelled `peer="<name>"`.
pub fn render(m: &Metrics) -> String {
    let mut w = Writer { out: String::new() };
    w.family(
        "kith_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    w.sample("kith_uptime_seconds", &[], m.uptime.as_secs_f64());
    w.family("kith_peers", "gauge", "Peers in the config.");
    w.sample("kith_peers", &[], m.live_peers().count());
    for (name, kind, help, value) in PER_PEER {
        w.family(name, kind, help);
        for p in m.live_peers() {
            if let Some(v) = value(p) {
                w.sample(name, &[("peer", &p.name)], v);
            }
        }
    }
    let name = "kith_peer_punch_outcomes_total";
    w.family(
        name,
        "counter",
        "Hard-NAT traversal attempts that ended, by outcome: connected (a direct path) or spent (budget used up).",
    );
    for p in m.live_peers() {
        for (outcome, n) in [("connected", p.punch_connected), ("spent", p.punch_spent)] {
            w.sample(name, &[("peer", &p.name), ("outcome", outcome)], n);
        }
    }
    w.family(
        "kith_handshakes_refused_total",
        "counter",
        "Handshake initiations refused before any DH work (replays, under load without a cookie, over a rate or budget).",
    );
    w.sample("kith_handshakes_refused_total", &[], m.handshakes_refused);
    w.family(
        "kith_cookies_sent_total",
        "counter",
        "Cookie replies sent while under handshake load.",
    );
    w.sample("kith_cookies_sent_total", &[], m.cookies_sent);
    w.family(
        "kith_relay_tcp_dropped_total",
        "counter",
        "Datagrams the relay TCP transport dropped (no connection yet, or a full queue).",
    );
    w.sample("kith_relay_tcp_dropped_total", &[], m.tcp_dropped);
    w.family(
        "kith_control_data_packets_total",
        "counter",
        "Data packets the control plane sealed or opened instead of the data plane (relays over TCP, peers without a settled path).",
    );
    w.sample("kith_control_data_packets_total", &[], m.control_data);
    w.family(
        "kith_data_dropped_total",
        "counter",
        "Packets the data plane dropped, by reason (see docs/metrics.md).",
    );
    for (reason, n) in &m.data_drops {
        w.sample("kith_data_dropped_total", &[("reason", reason)], *n);
    }
    if let Some(r) = &m.relay_service {
        relay_service(&mut w, r);
    }
    first_direct(&mut w, &m.first_direct);
    w.out
}

fn relay_service(w: &mut Writer, r: &RelayServiceMetrics) {
    let name = "kith_relay_refused_total";
    w.family(
        name,
        "counter",
        "Relay frames refused: the key is no member (unknown), or the destination has no session with us (no_session).",
    );
    w.sample(name, &[("reason", "unknown")], r.refused_unknown);
    w.sample(name, &[("reason", "no_session")], r.refused_no_session);
    type Field = fn(&RelayMemberMetrics) -> u64;
    let families: [(&str, &str, Field); 4] = [
        (
            "kith_relay_forwarded_bytes_total",
            "Bytes of end-to-end packets the member sent through this relay.",
            |m| m.forwarded_bytes,
        ),
        (
            "kith_relay_forwarded_packets_total",
            "End-to-end packets the member sent through this relay.",
            |m| m.forwarded_packets,
        ),
        (
            "kith_relay_delivered_bytes_total",
            "Bytes this relay delivered to the member from other members.",
            |m| m.delivered_bytes,
        ),
        (
            "kith_relay_rate_dropped_total",
            "Frames from the member dropped by the per-member or total rate limit.",
            |m| m.dropped_rate,
        ),
    ];
    for (name, help, field) in families {
        w.family(name, "counter", help);
        for m in &r.members {
            w.sample(name, &[("peer", &m.name)], field(m));
        }
    }
}

fn first_direct(w: &mut Writer, h: &Histogram) {
    let name = "kith_first_direct_seconds";
    w.family(
        name,
        "histogram",
        "Seconds from daemon start to each peer's first direct packet (one observation per peer).",
    );
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        w.sample(&bucket, &[("le", &bound.to_string())], cumulative);
    }
    w.sample(&bucket, &[("le", "+Inf")], h.count());
    w.sample(&format!("{name}_sum"), &[], h.sum);
    w.sample(&format!("{name}_count"), &[], h.count());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Metrics {
        let mut m = Metrics {
            uptime: Duration::from_millis(12_500),
            handshakes_refused: 3,
            cookies_sent: 1,
            tcp_dropped: 2,
            data_drops: vec![("udp_dropped", 6), ("stranger_queue_full", 0)],
            relay_service: Some(RelayServiceMetrics {
                refused_unknown: 4,
                refused_no_session: 5,
                members: vec![RelayMemberMetrics {
                    name: "laptop".into(),
                    forwarded_bytes: 1000,
                    forwarded_packets: 10,
                    delivered_bytes: 900,
                    dropped_rate: 1,
                }],
            }),
            ..Metrics::default()
        };
        m.peer(0).name = "nas".into();
        m.peer(1).name = "odd \"name\" \\ here".into();
        m.peers[0].rx_bytes = 2048;
        m.peers[0].tx_bytes = 1024;
        m.peers[0].connected = true;
        m.path_changed(0);
        m.path_changed(0);
        m.punch_started(1);
        m.punch_finished(1, false);
        m.direct(0, Duration::from_millis(300));
        // Only the first direct packet counts.
        m.direct(0, Duration::from_secs(20));
        m
    }

    /// Every sample line: (name, labels text, value).
    fn samples(text: &str) -> Vec<(String, String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                (name.into(), labels.into(), value.parse().unwrap())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    #[test]
    fn every_sample_belongs_to_a_family_with_help_and_type() {
        let text = render(&example());
        let mut families: Vec<(String, String)> = Vec::new();
        let mut helped = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().to_string());
            }
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(helped.last().map(String::as_str), Some(name), "HELP first");
                families.push((name.into(), kind.into()));
            }
        }
        let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a family twice: {names:?}");
        for (name, _, _) in samples(&text) {
            assert!(name.starts_with("kith_"), "{name}");
            let family = families
                .iter()
                .find(|(f, kind)| {
                    *f == name
                        || (kind == "histogram"
                            && ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| name == format!("{f}{s}")))
                })
                .unwrap_or_else(|| panic!("{name} has no # TYPE"));
            if family.1 == "counter" {
                assert!(name.ends_with("_total"), "a counter ends in _total: {name}");
            }
        }
    }

    #[test]
    fn per_peer_samples_carry_the_peer_label_escaped() {
        let text = render(&example());
        assert_eq!(
            value(&text, "kith_peer_received_bytes_total{peer=\"nas\"}"),
            2048.0
        );
        assert_eq!(
            value(&text, "kith_peer_sent_bytes_total{peer=\"nas\"}"),
            1024.0
        );
        assert_eq!(value(&text, "kith_peer_connected{peer=\"nas\"}"), 1.0);
        assert_eq!(
            value(&text, "kith_peer_path_changes_total{peer=\"nas\"}"),
            2.0
        );
        let odd = "peer=\"odd \\\"name\\\" \\\\ here\"";
        assert_eq!(
            value(&text, &format!("kith_peer_punch_attempts_total{{{odd}}}")),
            1.0
        );
        assert_eq!(
            value(
                &text,
                &format!("kith_peer_punch_outcomes_total{{{odd},outcome=\"spent\"}}")
            ),
            1.0
        );
        assert_eq!(escape_label("a\nb"), "a\\nb");
        // A peer never direct has no time-to-direct sample.
        assert_eq!(
            value(&text, "kith_peer_time_to_direct_seconds{peer=\"nas\"}"),
            0.3
        );
        assert!(!text.contains(&format!("kith_peer_time_to_direct_seconds{{{odd}}}")));
        assert_eq!(value(&text, "kith_peers"), 2.0);
        assert_eq!(value(&text, "kith_uptime_seconds"), 12.5);
    }

    #[test]
    fn a_peer_removed_by_a_reload_is_no_longer_rendered() {
        let mut m = example();
        m.retain_peers(|i| i != 0);
        let text = render(&m);
        assert!(!text.contains("peer=\"nas\""), "{text}");
        assert_eq!(value(&text, "kith_peers"), 1.0);
        // A peer added after it (the next id) is rendered as usual.
        m.peer(2).name = "new".into();
        let text = render(&m);
        assert_eq!(value(&text, "kith_peer_connected{peer=\"new\"}"), 0.0);
        assert_eq!(value(&text, "kith_peers"), 2.0);
    }

    #[test]
    fn the_first_direct_histogram_is_cumulative_and_counts_each_peer_once() {
        let mut m = example();
        m.direct(1, Duration::from_secs(7));
        let text = render(&m);
        let b = |le: &str| {
            value(
                &text,
                &format!("kith_first_direct_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(b("0.25"), 0.0);
        assert_eq!(b("0.5"), 1.0, "nas at 0.3 s");
        assert_eq!(b("5"), 1.0);
        assert_eq!(b("10"), 2.0, "and the other at 7 s");
        assert_eq!(b("300"), 2.0);
        assert_eq!(b("+Inf"), 2.0);
        assert_eq!(value(&text, "kith_first_direct_seconds_count"), 2.0);
        assert!((value(&text, "kith_first_direct_seconds_sum") - 7.3).abs() < 1e-9);
        // An empty histogram still has every bucket, at 0.
        let empty = render(&Metrics::default());
        assert_eq!(
            value(&empty, "kith_first_direct_seconds_bucket{le=\"+Inf\"}"),
            0.0
        );
    }

    #[test]
    fn the_relay_service_families_appear_only_when_serving() {
        let text = render(&example());
        assert_eq!(
            value(&text, "kith_relay_forwarded_bytes_total{peer=\"laptop\"}"),
            1000.0
        );
        assert_eq!(
            value(&text, "kith_relay_refused_total{reason=\"no_session\"}"),
            5.0
        );
        let plain = render(&Metrics::default());
        assert!(!plain.contains("kith_relay_forwarded"), "{plain}");
        assert!(plain.contains("kith_relay_tcp_dropped_total 0"), "{plain}");
        assert!(
            plain.contains("kith_control_data_packets_total 0"),
            "{plain}"
        );
        assert!(!plain.contains("kith_data_dropped_total{"), "{plain}");
    }

    #[test]
    fn data_plane_drops_by_reason() {
        let text = render(&example());
        assert_eq!(
            value(&text, "kith_data_dropped_total{reason=\"udp_dropped\"}"),
            6.0
        );
        assert_eq!(
            value(
                &text,
                "kith_data_dropped_total{reason=\"stranger_queue_full\"}"
            ),
            0.0
        );
    }

    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../docs/metrics.md");
        let text = render(&example());
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    docs.contains(&format!("`{name}`")),
                    "docs/metrics.md does not document {name}"
                );
            }
        }
    }
}
