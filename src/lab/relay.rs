//! The relay lab: two home sites on the NAT lab's internet and one or two
//! public hosts that relay for them (`[relay] serve = true`), for the relay
//! tests (`tests/e2e_relay.rs`), the demo and the benchmark.
//!
//! ```text
//!                   inet (198.18.0.0/15) ── dht, stun
//!        ┌──────────────┼─────────────┬─────────────┐
//!     router a       relay1        relay2       router b
//!     (site kind)   (public)     (optional)    (site kind)
//!        │                                         │
//!        a                                         b
//! ```
//!
//! `a` and `b` know each other only by key (they meet through the DHT) and
//! both list the relays, with their public endpoints, in `[relay] via`. The
//! relays know `a` and `b` by key only. [`RelayPair::cut_direct`] drops UDP
//! between the two sites' public addresses in the internet ([`UdpCut`]), so
//! no direct path can open (or an open one dies) until it is lifted.

use std::path::Path;
use std::time::{Duration, Instant};

use super::nat::{NatLab, Site, SiteKind};
use super::topology::wait_both_ways;
use super::{Host, KithNode, KithSpec, Lab, LabError, Result, UdpCut, Uplink};
use crate::daemon::control::PeerReport;
use crate::identity::SecretKey;

/// Overlay address of relay `i` (0-based): 100.96.0.11, .12, …
fn relay_overlay(i: usize) -> String {
    format!("100.96.0.{}/16", 11 + i)
}

/// Name of relay `i` (0-based) as a host and as a peer: relay1, relay2, …
pub fn relay_name(i: usize) -> String {
    format!("relay{}", i + 1)
}

/// What [`RelayPair::start`] builds.
#[derive(Debug, Clone)]
pub struct RelayPairSpec {
    pub a: SiteKind,
    pub b: SiteKind,
    /// Public hosts (0, 1 or 2): relays when `serve`, else mutual peers
    /// that only pass introductions.
    pub relays: usize,
    /// The public hosts relay (`[relay] serve = true`) and the members list
    /// them in `via`; when false they are plain members both sides know.
    pub serve: bool,
    /// Every node uses the lab's DHT; when false the members know only the
    /// public hosts' static endpoints, and find each other through them.
    pub dht: bool,
    /// Cut UDP between the two sites before the daemons start.
    pub cut: bool,
    /// The relays' `[relay] rate` (per member), e.g. "20 Mbit/s".
    pub rate: Option<String>,
    /// Give `a` two peers that are never up: "ghost", whose key the
    /// relays do not know, and "offline", a member they know that never
    /// connects to them. `a` tries both through the relays, which must
    /// refuse.
    pub strangers: bool,
    /// The relays also listen on TCP ([`RELAY_TCP_PORT`]) and the members
    /// know it (`[[peer]] tcp_port`).
    pub tcp: bool,
}

/// The relays' `[relay] tcp_port` when [`RelayPairSpec::tcp`] is set.
pub const RELAY_TCP_PORT: u16 = 443;

impl RelayPairSpec {
    /// `a` and `b` behind these sites, one relay, no cut, no limits.
    pub fn sites(a: SiteKind, b: SiteKind) -> Self {
        Self {
            a,
            b,
            relays: 1,
            serve: true,
            dht: true,
            cut: false,
            rate: None,
            strangers: false,
            tcp: false,
        }
    }
}

/// What [`RelayPair::wait_path`] saw, times since the members started.
#[derive(Debug, Clone)]
pub struct PathReached {
    /// Ping went through both ways (on whatever path).
    pub first_ping: Duration,
    /// Both sides reported the path asked for (status is polled every
    /// 100 ms, so this is up to that much late).
    pub on_path: Duration,
    /// a's report on b, b's on a.
    pub ab: PeerReport,
    pub ba: PeerReport,
}

/// Two members and their relays. Field order is drop order: daemons, the
/// cut, hosts, routers, the internet.
pub struct RelayPair {
    pub node_a: KithNode,
    pub node_b: KithNode,
    pub relays: Vec<KithNode>,
    cut: Option<UdpCut>,
    pub a: Host,
    pub b: Host,
    pub relay_hosts: Vec<(Host, Uplink)>,
    pub site_a: Site,
    pub site_b: Site,
    pub net: NatLab,
    /// Just before `a` and `b` were started (the relays run already).
    pub started: Instant,
}

impl RelayPair {
    pub fn start(lab: &Lab, kith: &Path, spec: RelayPairSpec) -> Result<Self> {
        let mut net = NatLab::new(lab, kith)?;
        let mut site_a = net.site(lab, "a", spec.a)?;
        let mut site_b = net.site(lab, "b", spec.b)?;
        let (a, _) = site_a.add_host(lab, "a")?;
        let (b, _) = site_b.add_host(lab, "b")?;
        let key = || SecretKey::generate().map_err(|e| LabError::io("key", e.into()));
        let node_spec = |name: &str, overlay: &str, key: SecretKey| {
            let mut s = net.node_spec(lab, name, overlay, key);
            s.discovery.dht = spec.dht;
            s
        };
        let mut spec_a = node_spec("a", "100.96.0.1/16", key()?);
        let mut spec_b = node_spec("b", "100.96.0.2/16", key()?);
        let mut relay_hosts = Vec::new();
        let mut relay_specs = Vec::new();
        for i in 0..spec.relays {
            let name = relay_name(i);
            let (host, up) = net.public_host(lab, &name)?;
            let mut r = node_spec(&name, &relay_overlay(i), key()?);
            r.relay.serve = Some(spec.serve);
            r.relay.rate = spec.rate.clone();
            if spec.tcp {
                r.relay.tcp_port = Some(RELAY_TCP_PORT);
            }
            relay_hosts.push((host, up));
            relay_specs.push(r);
        }
        let via: Vec<String> = (0..spec.relays).map(relay_name).collect();
        for (i, r) in relay_specs.iter_mut().enumerate() {
            let endpoint = format!("{}:{}", relay_hosts[i].1.addr(), r.listen_port);
            spec_a = spec_a.peer(&relay_name(i), r, Some(endpoint.clone()));
            spec_b = spec_b.peer(&relay_name(i), r, Some(endpoint));
            if spec.tcp {
                for s in [&mut spec_a, &mut spec_b] {
                    if let Some(p) = s.peers.last_mut() {
                        p.tcp_port = Some(RELAY_TCP_PORT);
                    }
                }
            }
            *r = r.clone().peer("a", &spec_a, None).peer("b", &spec_b, None);
        }
        if spec.serve && !via.is_empty() {
            spec_a.relay.via = Some(via.clone());
            spec_b.relay.via = Some(via);
        }
        let mut spec_a_full = spec_a.clone().peer("b", &spec_b, None);
        if spec.strangers {
            let ghost = KithSpec::new("100.96.0.21/16", key()?);
            let offline = KithSpec::new("100.96.0.22/16", key()?);
            spec_a_full = spec_a_full
                .peer("ghost", &ghost, None)
                .peer("offline", &offline, None);
            for r in &mut relay_specs {
                *r = r.clone().peer("offline", &offline, None);
            }
        }
        let spec_b_full = spec_b.peer("a", &spec_a, None);

        let mut relays = Vec::new();
        for (i, r) in relay_specs.into_iter().enumerate() {
            let mut node = lab.spawn_kith(&relay_hosts[i].0, kith, r)?;
            node.wait_ready(Duration::from_secs(10))?;
            relays.push(node);
        }
        let mut pair_cut = None;
        if spec.cut {
            pair_cut = Some(cut(&net, &site_a, &site_b)?);
        }
        let started = Instant::now();
        let mut node_a = lab.spawn_kith(&a, kith, spec_a_full)?;
        let mut node_b = lab.spawn_kith(&b, kith, spec_b_full)?;
        node_a.wait_ready(Duration::from_secs(10))?;
        node_b.wait_ready(Duration::from_secs(10))?;
        Ok(Self {
            node_a,
            node_b,
            relays,
            cut: pair_cut,
            a,
            b,
            relay_hosts,
            site_a,
            site_b,
            net,
            started,
        })
    }

    /// Drops UDP between the sites from now on (a direct path dies).
    pub fn cut_direct(&mut self) -> Result<()> {
        if self.cut.is_none() {
            self.cut = Some(cut(&self.net, &self.site_a, &self.site_b)?);
        }
        Ok(())
    }

    /// Lets UDP between the sites through again.
    pub fn lift_cut(&mut self) -> Result<()> {
        match self.cut.take() {
            Some(mut c) => c.lift(),
            None => Ok(()),
        }
    }

    /// Waits for ping both ways over the overlay, then for both sides to
    /// report `path` ("direct" or "relayed") for each other.
    pub fn wait_path(&mut self, path: &str, timeout: Duration) -> Result<PathReached> {
        let first = wait_both_ways(&mut self.node_a, &mut self.node_b, timeout)?
            .saturating_duration_since(self.started);
        let left = timeout
            .saturating_sub(self.started.elapsed())
            .max(Duration::from_secs(10));
        let what = format!("a {path} path");
        let a = self
            .node_a
            .wait_peer("b", &what, left, |p| p.path == path)?;
        let b = self
            .node_b
            .wait_peer("a", &what, left, |p| p.path == path)?;
        Ok(PathReached {
            first_ping: first,
            on_path: self.started.elapsed(),
            ab: a,
            ba: b,
        })
    }
}

fn cut(net: &NatLab, a: &Site, b: &Site) -> Result<UdpCut> {
    let missing = || LabError::Parse {
        cmd: "cutting UDP between two sites".into(),
        detail: "a site has no public address".into(),
    };
    let (a, b) = (
        a.public_ip().ok_or_else(missing)?,
        b.public_ip().ok_or_else(missing)?,
    );
    net.internet.cut_udp(a, b)
}
