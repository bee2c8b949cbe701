//! Ready-made topologies shared by the demo, the bench and the tests.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Host, Iface, Internet, KithNode, KithSpec, Lab, LabDht, LabError, Result, Uplink};
use crate::identity::SecretKey;

/// Two hosts `a` and `b` on one veth link (198.18.0.1 and 198.18.0.2), each
/// running kith with the other as a peer at a static endpoint (overlay
/// 100.96.0.1 and 100.96.0.2 on `kith0`).
pub struct Pair {
    pub node_a: KithNode,
    pub node_b: KithNode,
    pub a: Host,
    pub b: Host,
    /// `a`'s end of the underlay link.
    pub a_link: Iface,
    /// `b`'s end of the underlay link.
    pub b_link: Iface,
}

pub const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const A_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 1);
pub const B_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 2);

impl Pair {
    /// Builds the hosts and link, writes fresh keys and configs, starts both
    /// daemons and waits until both TUN interfaces are up (not for the
    /// tunnel: see [`Pair::wait_tunnel`]).
    pub fn start(lab: &Lab, kith: &Path) -> Result<Self> {
        let key_a = SecretKey::generate().map_err(|e| LabError::io("key", e.into()))?;
        let key_b = SecretKey::generate().map_err(|e| LabError::io("key", e.into()))?;
        let spec_a = KithSpec::new("100.96.0.1/16", key_a);
        let spec_b = KithSpec::new("100.96.0.2/16", key_b);
        Self::start_with(lab, kith, spec_a, spec_b)
    }

    /// [`Pair::start`] with the caller's specs (e.g. environment, queues)
    /// for a (100.96.0.1) and b (100.96.0.2); each gets the other's
    /// underlay address as its peer's endpoint.
    pub fn start_with(lab: &Lab, kith: &Path, spec_a: KithSpec, spec_b: KithSpec) -> Result<Self> {
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let (a_link, b_link) = lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24")?;
        let endpoint = |ip: Ipv4Addr, spec: &KithSpec| Some(format!("{ip}:{}", spec.listen_port));
        let endpoints = (endpoint(B_UNDERLAY, &spec_b), endpoint(A_UNDERLAY, &spec_a));
        let (node_a, node_b, _) = spawn_pair(lab, kith, (&a, spec_a), (&b, spec_b), endpoints)?;
        Ok(Self {
            node_a,
            node_b,
            a,
            b,
            a_link,
            b_link,
        })
    }

    /// Waits until a ping over the overlay succeeds both ways; how long that took.
    pub fn wait_tunnel(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        wait_both_ways(&mut self.node_a, &mut self.node_b, timeout)?;
        Ok(start.elapsed())
    }
}

/// Introduces the two specs to each other as peers "b" and "a" (with
/// `endpoints.0` for b in a's config and `endpoints.1` for a in b's, if
/// any), starts both daemons and waits until both are up. Returns the nodes
/// and when they were started.
pub fn spawn_pair(
    lab: &Lab,
    kith: &Path,
    (a, spec_a): (&Host, KithSpec),
    (b, spec_b): (&Host, KithSpec),
    endpoints: (Option<String>, Option<String>),
) -> Result<(KithNode, KithNode, Instant)> {
    let spec_a_full = spec_a.clone().peer("b", &spec_b, endpoints.0);
    let spec_b_full = spec_b.peer("a", &spec_a, endpoints.1);
    let started = Instant::now();
    let mut node_a = lab.spawn_kith(a, kith, spec_a_full)?;
    let mut node_b = lab.spawn_kith(b, kith, spec_b_full)?;
    node_a.wait_ready(Duration::from_secs(10))?;
    node_b.wait_ready(Duration::from_secs(10))?;
    Ok((node_a, node_b, started))
}

/// Pings from `a`'s host to `b`'s overlay address until one answers, then
/// the other way, within `timeout` in all; returns when `a`'s first ping
/// was answered. On failure, a dead daemon is reported as such, else the
/// timeout with both logs' tails.
pub fn wait_both_ways(a: &mut KithNode, b: &mut KithNode, timeout: Duration) -> Result<Instant> {
    let start = Instant::now();
    let (a_ip, b_ip) = (a.spec().overlay_ip()?, b.spec().overlay_ip()?);
    let mut first = None;
    let result = a
        .host()
        .wait_reachable(IpAddr::V4(b_ip), timeout)
        .and_then(|_| {
            first = Some(Instant::now());
            let left = timeout.saturating_sub(start.elapsed());
            b.host().wait_reachable(IpAddr::V4(a_ip), left)
        });
    match (result, first) {
        (Ok(_), first) => Ok(first.unwrap_or_else(Instant::now)),
        (Err(e), _) => {
            // A dead daemon explains more than a timeout.
            a.check_running()?;
            b.check_running()?;
            Err(LabError::Timeout {
                what: "a ping over the overlay both ways".into(),
                timeout,
                detail: format!(
                    " ({e})\n--- log {} ---\n{}\n--- log {} ---\n{}",
                    a.host().name(),
                    a.log_tail(20),
                    b.host().name(),
                    b.log_tail(20)
                ),
            })
        }
    }
}

/// Nodes in the lab DHT of [`DhtPair`] (the issue asks for at least 8).
pub const DHT_NODES: usize = 8;
/// `[network] id` of the DHT topologies.
pub const NETWORK_ID: &str = "kith-lab";

/// Two hosts `a` and `b` on the emulated internet, each in its own /24
/// (see [`Internet`]), with a DHT of [`DHT_NODES`] nodes, running kith with
/// the DHT on and **no endpoint** for the other: they can only meet through
/// the DHT. Overlay addresses as in [`Pair`].
pub struct DhtPair {
    pub internet: Internet,
    pub dht: LabDht,
    pub a: Host,
    pub b: Host,
    pub a_up: Uplink,
    pub b_up: Uplink,
    pub node_a: KithNode,
    pub node_b: KithNode,
    /// Just before the daemons were started.
    pub started: Instant,
}

impl DhtPair {
    /// Builds the internet, the DHT (all nodes listening), the hosts, then
    /// starts both daemons and waits for their TUN interfaces.
    pub fn start(lab: &Lab, kith: &Path) -> Result<Self> {
        let internet = Internet::new(lab)?;
        let dht = LabDht::start_new(lab, &internet, kith, DHT_NODES)?;
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        let a_up = internet.attach(&a)?;
        let b_up = internet.attach(&b)?;
        let key = || SecretKey::generate().map_err(|e| LabError::io("key", e.into()));
        let spec_a = dht_spec(lab, "a", "100.96.0.1/16", key()?, &dht);
        let spec_b = dht_spec(lab, "b", "100.96.0.2/16", key()?, &dht);
        let (node_a, node_b, started) =
            spawn_pair(lab, kith, (&a, spec_a), (&b, spec_b), (None, None))?;
        Ok(Self {
            internet,
            dht,
            a,
            b,
            a_up,
            b_up,
            node_a,
            node_b,
            started,
        })
    }

    /// Waits until pings over the overlay pass both ways (a → b first);
    /// the time from daemon start to the first reply to `a`.
    pub fn wait_tunnel(&mut self, timeout: Duration) -> Result<Duration> {
        let left = timeout.saturating_sub(self.started.elapsed());
        let first = wait_both_ways(&mut self.node_a, &mut self.node_b, left)?;
        Ok(first.saturating_duration_since(self.started))
    }
}

/// A node spec with the DHT on in network [`NETWORK_ID`], bootstrapping from
/// every node of `dht`, its state under `<lab dir>/<name>-state`.
pub fn dht_spec(lab: &Lab, name: &str, overlay: &str, key: SecretKey, dht: &LabDht) -> KithSpec {
    let state = lab.dir().join(format!("{name}-state"));
    KithSpec::new(overlay, key).with_dht(NETWORK_ID, dht.bootstrap(), &state)
}
