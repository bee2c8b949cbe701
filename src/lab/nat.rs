//! The NAT lab: home sites behind NAT routers of a chosen kind, on the
//! emulated internet, with STUN servers and a DHT there, for the NAT
//! traversal tests (`tests/e2e_nat.rs`), the demo and the benchmark.
//!
//! Layout built by [`NatLab::new`] and [`NatLab::site`]:
//!
//! ```text
//!              inet (198.18.0.0/15)
//!   ┌────────────┬───┴──────────┬──────────────────┐
//!  dht (8 nodes) stun .2 .3    router (WAN .2)     carrier (CGNAT only)
//!               (kith stun-    │ lan 192.168.n/24   │ 100.65.n.0/24
//!                server, also  host, host, …       home router → lan 192.168.n/24
//!                .2:3479;
//!                coturn .4 .5
//!                for miniupnpd)
//! ```
//!
//! - [`StunServers`]: `kith stun-server` on three endpoints of one internet
//!   host (a client classifies its NAT's mapping by comparing the answers;
//!   a sequential allocator shows only in three mappings, two equal steps);
//!   coturn (RFC 5780) on two more addresses when a miniupnpd router needs
//!   its STUN check.
//! - [`SiteKind`]: cone, symmetric, sequential, CGNAT (a cone home router
//!   whose WAN sits on a 100.65.n.0/24 carrier segment behind a carrier cone
//!   router; or both layers symmetric), a miniupnpd router answering UPnP
//!   IGD, NAT-PMP and PCP, or a cone router that lets no UDP out but DNS.
//!   Every router drops unsolicited WAN packets silently
//!   ([`super::router::guard_chain`]).
//! - [`Site`]: one router (or two, for CGNAT) plus the hosts on its LAN;
//!   [`Site::set_loss`] adds random loss on its outer router,
//!   [`Site::set_delay`] latency on that router's link to the internet
//!   ([`super::DelayLink`]).
//! - [`NatPair`]: two kith daemons in two sites (or one LAN), meeting only
//!   through the DHT, STUN on, with [`NatPair::wait_direct`] timing the
//!   first ping over a direct path. [`NatPairSpec`] says where they live
//!   and the loss on `a`'s site; [`NatRow`] adds a delay on `a`'s uplink.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::miniupnpd::{Coturn, UpnpRouter, UpnpRouterSpec};
use super::router::{self, NatKind, Router};
use super::topology::{NETWORK_ID, spawn_pair, wait_both_ways};
use super::{
    DelayLink, Host, Internet, KithNode, KithSpec, Lab, LabDht, LabError, Result, Uplink, sys,
};
use crate::daemon::control::PeerReport;
use crate::identity::SecretKey;

/// The UDP port of the lab STUN servers.
pub const STUN_PORT: u16 = 3478;
/// Nodes in a NAT lab's DHT.
pub const DHT_NODES: usize = 8;

/// What stands between a home site and the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    /// A port-preserving `masquerade` router: endpoint-independent mapping,
    /// address-and-port-dependent filtering.
    Cone,
    /// `masquerade fully-random`: endpoint-dependent mapping.
    Symmetric,
    /// A sequential allocator ([`NatKind::Sequential`]): endpoint-dependent
    /// mapping, each new UDP flow on the next port.
    Sequential,
    /// A cone home router behind a carrier-grade cone NAT (two layers; the
    /// carrier segment is 100.65.n.0/24).
    Cgnat,
    /// A symmetric home router behind a symmetric carrier NAT (as
    /// [`SiteKind::Cgnat`], both layers `masquerade fully-random`).
    SymmetricCgnat,
    /// A cone router running miniupnpd (UPnP IGD, NAT-PMP, PCP).
    Miniupnpd,
    /// A cone router that drops all UDP from its LAN except DNS; TCP passes
    /// ([`router::udp_block_ruleset`]).
    UdpBlocked,
}

impl SiteKind {
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Cone => "cone",
            SiteKind::Symmetric => "symmetric",
            SiteKind::Sequential => "sequential",
            SiteKind::Cgnat => "cone behind CGNAT",
            SiteKind::SymmetricCgnat => "symmetric behind a symmetric CGNAT",
            SiteKind::Miniupnpd => "miniupnpd",
            SiteKind::UdpBlocked => "UDP blocked",
        }
    }

    /// The mapping behaviour STUN should see from behind this site
    /// (`kith netcheck`'s `mapping`).
    pub fn expected_mapping(self) -> &'static str {
        match self {
            SiteKind::Symmetric | SiteKind::Sequential | SiteKind::SymmetricCgnat => {
                "endpoint-dependent"
            }
            SiteKind::Cone | SiteKind::Cgnat | SiteKind::Miniupnpd => "endpoint-independent",
            // No STUN answer gets through.
            SiteKind::UdpBlocked => "not measured",
        }
    }

    /// The allocator step STUN should see from behind this site
    /// (`kith netcheck`'s `sequential`): 1 behind [`SiteKind::Sequential`],
    /// none elsewhere.
    pub fn expected_step(self) -> Option<i32> {
        match self {
            SiteKind::Sequential => Some(1),
            SiteKind::Cone
            | SiteKind::Symmetric
            | SiteKind::Cgnat
            | SiteKind::SymmetricCgnat
            | SiteKind::Miniupnpd
            | SiteKind::UdpBlocked => None,
        }
    }
}

/// `kith stun-server` on three endpoints of the internet host `stun`, and,
/// once asked for, coturn on two more addresses (for miniupnpd's RFC 5780
/// check).
///
/// Two answers tell an endpoint-independent mapping from a dependent one;
/// the third is what lets a client see a sequential allocator (kith's
/// classifier wants two equal-direction steps, [`crate::nat::classify`]).
pub struct StunServers {
    host: Host,
    uplink: Uplink,
    /// The `kith stun-server` endpoints: `.2` and `.3` of the subnet on
    /// [`STUN_PORT`], and `.2` on `STUN_PORT + 1`.
    pub addrs: [SocketAddrV4; 3],
    child: Child,
    coturn: Option<Coturn>,
}

impl StunServers {
    /// Attaches host `stun` to `internet` and starts `kith stun-server` on
    /// `.2` and `.3` of its subnet and on `.2`'s next port; returns once all
    /// three listen.
    pub fn start(lab: &Lab, internet: &Internet, kith: &Path) -> Result<Self> {
        let host = lab.host("stun")?;
        let uplink = internet.attach(&host)?;
        let second = uplink.subnet.addr(3);
        host.ip(&[
            "addr",
            "add",
            &uplink.subnet.cidr(3),
            "dev",
            &uplink.iface.name,
        ])?;
        let addrs = [
            SocketAddrV4::new(uplink.addr(), STUN_PORT),
            SocketAddrV4::new(second, STUN_PORT),
            SocketAddrV4::new(uplink.addr(), STUN_PORT + 1),
        ];
        let log = lab.dir().join("stun-server.log");
        let out = std::fs::File::create(&log)
            .map_err(|e| LabError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::io(format!("opening {}", log.display()), e))?;
        let mut cmd = host.command(kith);
        cmd.arg("stun-server");
        for a in addrs {
            cmd.arg("--listen").arg(a.to_string());
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("starting `{}`", sys::describe(&cmd)), e))?;
        let mut stun = Self {
            host,
            uplink,
            addrs,
            child,
            coturn: None,
        };
        stun.wait_listening(&log)?;
        Ok(stun)
    }

    fn wait_listening(&mut self, log: &Path) -> Result<()> {
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        loop {
            let ss = self.host.exec("ss", &["-Hulnp"]).unwrap_or_default();
            if self.addrs.iter().all(|a| ss.contains(&a.to_string())) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError::DaemonExited {
                    netns: self.host.netns().to_owned(),
                    status: status.to_string(),
                    log: log.to_owned(),
                    tail: std::fs::read_to_string(log).unwrap_or_default(),
                });
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    what: format!("kith stun-server listening on {:?}", self.addrs),
                    timeout,
                    detail: format!("; log {}", log.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `[discovery] stun` / `kith netcheck --stun`: all three endpoints.
    pub fn list(&self) -> Vec<String> {
        self.addrs.iter().map(ToString::to_string).collect()
    }

    /// The STUN servers' namespace.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// coturn on `.4` and `.5` (started on first use): the RFC 5780 server
    /// miniupnpd's STUN check needs. Its primary address.
    pub fn coturn(&mut self, lab: &Lab) -> Result<SocketAddrV4> {
        if let Some(c) = &self.coturn {
            return Ok(c.primary);
        }
        for octet in [4, 5] {
            self.host.ip(&[
                "addr",
                "add",
                &self.uplink.subnet.cidr(octet),
                "dev",
                &self.uplink.iface.name,
            ])?;
        }
        let sub = self.uplink.subnet;
        let coturn = Coturn::start(lab, &self.host, sub.addr(4), sub.addr(5))?;
        let primary = coturn.primary;
        self.coturn = Some(coturn);
        Ok(primary)
    }
}

impl Drop for StunServers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A home site: its router(s) and the hosts on its LAN.
pub struct Site {
    pub name: String,
    pub kind: SiteKind,
    /// The router the hosts are attached to (for CGNAT the inner, home one).
    pub router: Router,
    /// The carrier router in front of a CGNAT home router.
    pub carrier: Option<Router>,
    /// The running miniupnpd of a [`SiteKind::Miniupnpd`] site.
    pub upnp: Option<UpnpRouter>,
    /// `n` of the LAN 192.168.n.0/24.
    pub lan: u8,
    next_host: u8,
    /// The delayed uplink, once [`Site::set_delay`] made one.
    delay: Option<DelayLink>,
}

impl Site {
    /// The site's address on the internet (the carrier's for CGNAT).
    pub fn public_ip(&self) -> Option<Ipv4Addr> {
        self.carrier.as_ref().unwrap_or(&self.router).public_ip()
    }

    /// The router facing the internet.
    pub fn outer_router(&self) -> &Router {
        self.carrier.as_ref().unwrap_or(&self.router)
    }

    /// A new host `name` on the LAN (192.168.n.10, .11, …), routed through
    /// the site's router. Returns it with its LAN address.
    pub fn add_host(&mut self, lab: &Lab, name: &str) -> Result<(Host, Ipv4Addr)> {
        let host = lab.host(name)?;
        let ip = Ipv4Addr::new(192, 168, self.lan, self.next_host);
        self.next_host += 1;
        self.router.attach(&host, &format!("{ip}/24"))?;
        Ok((host, ip))
    }

    /// Drops `percent`% of the packets the outer router forwards, each way.
    pub fn set_loss(&self, percent: u8) -> Result<()> {
        self.outer_router().set_loss(percent)
    }

    /// Delays every packet on the outer router's link to `internet` by
    /// `delay`, each way ([`Internet::delay_uplink`] the first time; later
    /// calls change the delay). For cone, symmetric and CGNAT sites: a
    /// running miniupnpd would have its WAN interface replaced under it.
    pub fn set_delay(&mut self, internet: &Internet, delay: Duration) -> Result<()> {
        match &self.delay {
            Some(link) => link.set_delay(delay),
            None => {
                let link = internet.delay_uplink(&self.outer_router().host, delay)?;
                self.delay = Some(link);
            }
        }
        Ok(())
    }
}

/// The internet, its DHT and STUN servers; sites are added with
/// [`NatLab::site`]. Drop it after the daemons and sites using it.
pub struct NatLab {
    pub internet: Internet,
    pub dht: LabDht,
    pub stun: StunServers,
    kith: PathBuf,
    next_lan: u8,
}

impl NatLab {
    /// The internet, a DHT of [`DHT_NODES`] nodes and the STUN servers.
    pub fn new(lab: &Lab, kith: &Path) -> Result<Self> {
        let internet = Internet::new(lab)?;
        let dht = LabDht::start_new(lab, &internet, kith, DHT_NODES)?;
        let stun = StunServers::start(lab, &internet, kith)?;
        Ok(Self {
            internet,
            dht,
            stun,
            kith: kith.to_owned(),
            next_lan: 1,
        })
    }

    /// The kith binary the lab runs.
    pub fn kith(&self) -> &Path {
        &self.kith
    }

    /// A host directly on the internet (no NAT).
    pub fn public_host(&self, lab: &Lab, name: &str) -> Result<(Host, Uplink)> {
        let host = lab.host(name)?;
        let up = self.internet.attach(&host)?;
        Ok((host, up))
    }

    /// A home site `name` of `kind`: its router is `r<name>` (and the
    /// carrier `c<name>` for CGNAT); add hosts with [`Site::add_host`].
    pub fn site(&mut self, lab: &Lab, name: &str, kind: SiteKind) -> Result<Site> {
        let n = self.next_lan;
        self.next_lan = self
            .next_lan
            .checked_add(1)
            .ok_or_else(|| LabError::Parse {
                cmd: "adding a NAT site".into(),
                detail: "out of 192.168.n.0/24 LANs".into(),
            })?;
        let lan = format!("192.168.{n}.1/24");
        let rname = format!("r{name}");
        let (router, carrier, upnp) = match kind {
            SiteKind::Cone | SiteKind::Symmetric | SiteKind::Sequential | SiteKind::UdpBlocked => {
                let nat = match kind {
                    SiteKind::Symmetric => NatKind::Symmetric,
                    SiteKind::Sequential => NatKind::Sequential,
                    _ => NatKind::Cone,
                };
                let r = self.internet.nat_router(lab, &rname, nat, &lan)?;
                if kind == SiteKind::UdpBlocked {
                    r.block_udp()?;
                }
                (r, None, None)
            }
            SiteKind::Cgnat | SiteKind::SymmetricCgnat => {
                let nat = if kind == SiteKind::Cgnat {
                    NatKind::Cone
                } else {
                    NatKind::Symmetric
                };
                let carrier = self.internet.nat_router(
                    lab,
                    &format!("c{name}"),
                    nat,
                    &format!("100.65.{n}.1/24"),
                )?;
                let home = router::build_behind(
                    lab,
                    &rname,
                    nat,
                    &carrier,
                    &format!("100.65.{n}.2/24"),
                    &lan,
                )?;
                (home, Some(carrier), None)
            }
            SiteKind::Miniupnpd => {
                let stun = self.stun.coturn(lab)?;
                let subnet = self.internet.next_subnet()?;
                let upnp = UpnpRouter::build(
                    lab,
                    &UpnpRouterSpec {
                        name: &rname,
                        upstream: self.internet.host(),
                        upstream_addr: &subnet.cidr(1),
                        wan_addr: &subnet.cidr(2),
                        lan_addr: &lan,
                        stun,
                    },
                )?;
                // miniupnpd's own table has no input chain: add the guard.
                let guard = format!(
                    "table inet kithguard {{\n{}}}\n",
                    router::guard_chain(&upnp.router.wan.name)
                );
                router::load_ruleset(&upnp.router.host, &guard)?;
                (upnp.router.clone(), None, Some(upnp))
            }
        };
        Ok(Site {
            name: name.to_owned(),
            kind,
            router,
            carrier,
            upnp,
            lan: n,
            next_host: 10,
            delay: None,
        })
    }

    /// A daemon spec for host `name`: DHT on (network
    /// [`NETWORK_ID`], every lab node as bootstrap), the three lab STUN
    /// endpoints, port mapping off.
    pub fn node_spec(&self, lab: &Lab, name: &str, overlay: &str, key: SecretKey) -> KithSpec {
        let state = lab.dir().join(format!("{name}-state"));
        let mut spec =
            KithSpec::new(overlay, key).with_dht(NETWORK_ID, self.dht.bootstrap(), &state);
        spec.discovery.stun = self.stun.list();
        spec
    }

    /// `kith netcheck --json --stun A --stun B --stun C` in `host` (no port
    /// mapping probe unless `port_mapping`), parsed.
    pub fn netcheck(&self, host: &Host, port_mapping: bool) -> Result<serde_json::Value> {
        let mut cmd = host.command(&self.kith);
        cmd.args(["netcheck", "--json"]);
        for s in self.stun.list() {
            cmd.arg("--stun").arg(s);
        }
        if !port_mapping {
            cmd.arg("--no-port-mapping");
        }
        let out = sys::run(&mut cmd)?;
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            cmd: sys::describe(&cmd),
            detail: format!("{e}: {out}"),
        })
    }
}

/// The one-way delay of the NAT table's delayed row (issue 4: 50 ms).
pub const ROW_DELAY: Duration = Duration::from_millis(50);

/// Where the two peers of a [`NatPair`] live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatPairSpec {
    pub a: SiteKind,
    /// `None`: `b` is a second host on `a`'s LAN.
    pub b: Option<SiteKind>,
    /// Random loss on `a`'s outer router, percent each way.
    pub loss: u8,
}

impl NatPairSpec {
    /// Two sites of these kinds, no loss.
    pub fn sites(a: SiteKind, b: SiteKind) -> Self {
        Self {
            a,
            b: Some(b),
            loss: 0,
        }
    }

    /// This pair with `delay` each way on `a`'s uplink.
    pub fn with_delay(self, delay: Duration) -> NatRow {
        NatRow { spec: self, delay }
    }

    /// The rows of issue 4's NAT table, with their labels: for the
    /// benchmark.
    pub fn matrix() -> Vec<(&'static str, NatRow)> {
        use SiteKind::*;
        let lossy = Self {
            loss: 5,
            ..Self::sites(Cone, Cone)
        };
        vec![
            ("cone | cone", Self::sites(Cone, Cone).into()),
            ("cone behind CGNAT | cone", Self::sites(Cgnat, Cone).into()),
            (
                "miniupnpd | symmetric",
                Self::sites(Miniupnpd, Symmetric).into(),
            ),
            (
                "same LAN, one cone NAT",
                Self {
                    a: Cone,
                    b: None,
                    loss: 0,
                }
                .into(),
            ),
            ("cone 5% loss | cone", lossy.into()),
            ("cone 5% loss + 50 ms | cone", lossy.with_delay(ROW_DELAY)),
            ("cone | symmetric", Self::sites(Cone, Symmetric).into()),
            ("cone | sequential", Self::sites(Cone, Sequential).into()),
        ]
    }
}

/// One row of the NAT table as [`NatPair::start`] builds it: the pair and
/// its loss ([`NatPairSpec`], which converts with no delay) and a delay
/// each way on `a`'s outer router's internet link ([`Site::set_delay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatRow {
    pub spec: NatPairSpec,
    /// Zero: no delay tool on the link.
    pub delay: Duration,
}

impl From<NatPairSpec> for NatRow {
    fn from(spec: NatPairSpec) -> Self {
        spec.with_delay(Duration::ZERO)
    }
}

/// Two daemons, `a` and `b`, in home sites, with no endpoint for each
/// other: they meet through the lab DHT, learn their public addresses from
/// the lab STUN servers, and (behind miniupnpd) map their port.
///
/// Field order is drop order: daemons, then routers, then the internet.
pub struct NatPair {
    pub node_a: KithNode,
    pub node_b: KithNode,
    pub a: Host,
    pub b: Host,
    pub a_lan: Ipv4Addr,
    pub b_lan: Ipv4Addr,
    pub site_a: Site,
    /// `None` when `b` is on `a`'s LAN.
    pub site_b: Option<Site>,
    pub net: NatLab,
    /// Just before the daemons were started.
    pub started: Instant,
}

impl NatPair {
    /// Builds the NAT lab and the sites (loss and delay on `a`'s), then
    /// starts both daemons (`port_mapping` on behind miniupnpd) and waits
    /// for their TUNs. `row` is a [`NatPairSpec`] or a [`NatRow`].
    pub fn start(lab: &Lab, kith: &Path, row: impl Into<NatRow>) -> Result<Self> {
        let NatRow { spec, delay } = row.into();
        let mut net = NatLab::new(lab, kith)?;
        let mut site_a = net.site(lab, "a", spec.a)?;
        let mut site_b = spec.b.map(|k| net.site(lab, "b", k)).transpose()?;
        let (a, a_lan) = site_a.add_host(lab, "a")?;
        let (b, b_lan) = match site_b.as_mut() {
            Some(site) => site.add_host(lab, "b")?,
            None => site_a.add_host(lab, "b")?,
        };
        if spec.loss > 0 {
            site_a.set_loss(spec.loss)?;
        }
        if !delay.is_zero() {
            site_a.set_delay(&net.internet, delay)?;
        }
        let key = || SecretKey::generate().map_err(|e| LabError::io("key", e.into()));
        let mut spec_a = net.node_spec(lab, "a", "100.96.0.1/16", key()?);
        let mut spec_b = net.node_spec(lab, "b", "100.96.0.2/16", key()?);
        spec_a.discovery.port_mapping = spec.a == SiteKind::Miniupnpd;
        spec_b.discovery.port_mapping = spec.b.unwrap_or(spec.a) == SiteKind::Miniupnpd;
        let (node_a, node_b, started) =
            spawn_pair(lab, kith, (&a, spec_a), (&b, spec_b), (None, None))?;
        Ok(Self {
            node_a,
            node_b,
            a,
            b,
            a_lan,
            b_lan,
            site_a,
            site_b,
            net,
            started,
        })
    }

    /// Waits for the first ping reply a → b over the overlay (the time from
    /// daemon start, returned), then for pings both ways and for both
    /// daemons to report a direct path.
    pub fn wait_direct(&mut self, timeout: Duration) -> Result<Duration> {
        let left = timeout.saturating_sub(self.started.elapsed());
        let first = wait_both_ways(&mut self.node_a, &mut self.node_b, left)?
            .saturating_duration_since(self.started);
        let left = timeout
            .saturating_sub(self.started.elapsed())
            .max(Duration::from_secs(10));
        let direct = |p: &PeerReport| p.path == "direct";
        self.node_a.wait_peer("b", "a direct path", left, direct)?;
        self.node_b.wait_peer("a", "a direct path", left, direct)?;
        Ok(first)
    }

    /// Both daemons' view of each other: (a's report on b, b's on a).
    pub fn reports(&self) -> Result<(PeerReport, PeerReport)> {
        Ok((self.node_a.peer_status("b")?, self.node_b.peer_status("a")?))
    }

    /// `ip:port` daemon `node` listens on at `ip`.
    pub fn listen_addr(node: &KithNode, ip: Ipv4Addr) -> String {
        SocketAddrV4::new(ip, node.spec().listen_port).to_string()
    }
}
