//! Daemon: the tokio shell around [`core::Node`](crate::core::Node).
//!
//! Owns the OS surface: one UDP socket (kith and, later, STUN share it), the
//! TUN device, the clock, the OS random seed, signals and systemd
//! notification. It makes no protocol decisions: every packet and every
//! timeout goes to the node, and the node's outputs come back out.
//!
//! Flow, in one task:
//! - UDP readable → `handle_udp` → inner packet written to the TUN;
//! - TUN readable → `handle_tun` → datagram sent;
//! - deadline from `poll_timeout` → `handle_timeout`;
//! - after each step, drain `poll_transmit` and `poll_event` (events become
//!   the operator's log lines);
//! - `kith reload` or SIGHUP → [`reload`]: the file is read again, diffed
//!   against the running config and applied (or refused, changing nothing).
//!
//! A full TUN queue drops the packet (as a router would) instead of
//! stalling the UDP receive loop behind it.
//!
//! The same loop answers the control socket (`status`, `metrics`, `ping`)
//! and feeds the systemd watchdog, so a loop that stops turning stops
//! feeding it and systemd restarts the daemon; `STATUS=` follows the
//! peers' state ([`notify`]).

mod accept;
mod activity;
pub mod aead;
pub mod control;
mod data;
mod discover;
mod http;
mod metrics;
mod names;
pub mod nodump;
mod notify;
mod ping;
mod punch;
mod reflexive;
mod reload;
pub mod routes;
mod socket;
mod tcp;

use socket::Udp;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::config::{Config, ConfigSource, Endpoint};
use crate::core::{
    DataUpdate, Event, Node, NodeConfig, OVERHEAD, PeerConfig, PeerId, RelayCause, RelayConfig,
    TunOutcome, UdpOutcome, Via,
};
use crate::nat::punch::{Action, Outcome, Puncher, Role, Strategy};
use crate::relay::Limits;

/// Errors that stop the daemon from starting, each saying what to check.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot create TUN device {name}: {source}. kith needs CAP_NET_ADMIN (run as root or \
         through systemd/kith.service) and /dev/net/tun (load it with `modprobe tun`)"
    )]
    Tun { name: String, source: io::Error },
    #[error(
        "cannot bind UDP port {port}: {source}. Is another kith (or WireGuard) using it? Set \
         [interface] listen_port to a free port, or 0 for any (a port under 1024 also needs \
         CAP_NET_BIND_SERVICE: README, \"Install\")"
    )]
    Bind { port: u16, source: io::Error },
    #[error(
        "cannot listen on TCP port {port} for [relay] tcp_port: {source}. Is another service \
         using it? A port under 1024 needs CAP_NET_BIND_SERVICE: under systemd add it with \
         `systemctl edit kith` (README, \"Install\")"
    )]
    TcpBind { port: u16, source: io::Error },
    #[error(
        "interface {name} already exists: another kith network (or VPN) on this host uses it. \
         Give each network its own [interface] name (and listen_port)"
    )]
    InterfaceInUse { name: String },
    #[error(transparent)]
    StateDir(#[from] crate::discovery::cache::LockError),
    #[error(
        "cannot listen on {addr} for [metrics] listen: {source}. Is another exporter using the \
         port? Pick another one in [metrics] listen (on localhost), or remove the key"
    )]
    MetricsBind { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Routes(#[from] routes::RouteError),
    #[error("the data plane's thread stopped (see the log above for why)")]
    DataPlane,
    #[error("cannot start the data plane's thread: {0}")]
    DataThread(io::Error),
    #[error("cannot read OS randomness: {0}")]
    Random(getrandom::Error),
    #[error("{0}")]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Turn the validated config into the core's view. Endpoints given as
/// names start unknown: [`names`] resolves them in the background.
fn node_config(cfg: &Config) -> NodeConfig {
    let mut peers = Vec::with_capacity(cfg.peers.len());
    for p in &cfg.peers {
        let endpoint = match &p.endpoint {
            Some(Endpoint::Addr(a)) => Some(*a),
            None | Some(Endpoint::Host { .. }) => None,
        };
        peers.push(PeerConfig {
            name: p.name.clone(),
            public_key: p.public_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoint,
            keepalive: p.keepalive,
        });
    }
    NodeConfig {
        secret: cfg.interface.private_key.clone(),
        // The network secret is the psk2 of every handshake (design §3).
        psk: cfg.network.secret.clone().unwrap_or_default(),
        peers,
        relay: relay_config(cfg),
    }
}

/// `[relay]` in the core's terms: `via` names become peer ids.
fn relay_config(cfg: &Config) -> RelayConfig {
    let r = &cfg.relay;
    RelayConfig {
        serve: r.serve.then_some(Limits {
            per_member: r.rate,
            total: r.max_rate,
        }),
        via: cfg.via_peers().map(|(_, p)| p.public_key).collect(),
    }
}

/// CPUs this process may run on (what `[interface] queues = "auto"` reads).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The environment variable that turns TUN offload off (`off`): the
/// device a kernel without IFF_VNET_HDR gives, for tests and diagnosis.
pub const TUN_OFFLOAD_ENV: &str = "KITH_TUN_OFFLOAD";

/// The TUN device with `queues` queues (one descriptor each, for one
/// data-plane worker each); the first is the one the device was made with.
fn create_tun(cfg: &Config, queues: usize) -> Result<Vec<tun_rs::SyncDevice>, StartError> {
    let iface = &cfg.interface;
    // Opening an existing TUN by name would attach to it (or fail with a
    // bare EBUSY): a device of that name means another daemon owns it, as
    // ours vanish with the process that made them.
    if std::path::Path::new("/sys/class/net")
        .join(&iface.name)
        .exists()
    {
        return Err(StartError::InterfaceInUse {
            name: iface.name.clone(),
        });
    }
    let build = |offload: bool| {
        let mut builder = tun_rs::DeviceBuilder::new()
            .name(&iface.name)
            .mtu(iface.mtu)
            .offload(offload)
            .multi_queue(queues > 1);
        for address in &iface.addresses {
            builder = match *address {
                ipnet::IpNet::V4(n) => builder.ipv4(n.addr(), n.prefix_len(), None),
                ipnet::IpNet::V6(n) => builder.ipv6(n.addr(), n.prefix_len()),
            };
        }
        builder.build_sync()
    };
    let tun_error = |source| StartError::Tun {
        name: iface.name.clone(),
        source,
    };
    // Offload (IFF_VNET_HDR + TSO) lets one read carry up to 64 KiB of TCP;
    // kernels without it still get a working, slower device, and
    // KITH_TUN_OFFLOAD=off asks for that device (tests, diagnosis).
    let offload = std::env::var(TUN_OFFLOAD_ENV).map_or(true, |v| v != "off");
    if !offload {
        info!("TUN offload off ({TUN_OFFLOAD_ENV}=off): one packet per read and write");
    }
    let first = build(offload)
        .or_else(|e| {
            if !offload {
                return Err(e);
            }
            debug!(error = %e, "TUN offload unavailable; using plain TUN");
            build(false)
        })
        .map_err(tun_error)?;
    // Each further queue is another descriptor attached to the same device,
    // with the first one's offload settings.
    let mut all = Vec::with_capacity(queues);
    for _ in 1..queues {
        all.push(first.try_clone().map_err(tun_error)?);
    }
    all.insert(0, first);
    Ok(all)
}

/// Route every peer's `allowed_ips` through the TUN device (removing what
/// a crashed run of this network left first). A prefix that cannot be
/// routed is a warning, not a reason to stay down: the others work.
fn start_routes(cfg: &Config, tun: &tun_rs::SyncDevice) -> Result<routes::Routes, StartError> {
    let iface = &cfg.interface;
    let ifindex = tun.if_index().map_err(|source| StartError::Tun {
        name: iface.name.clone(),
        source,
    })?;
    let table = routes::table_id(iface.listen_port, &iface.name);
    let r = routes::Routes::new(&iface.name, ifindex, table, &iface.addresses)?;
    Ok(r)
}

/// What kith adds to a packet on the wire: IPv4 and UDP headers, the data
/// message header and the tag.
const WIRE_OVERHEAD: u32 = 20 + 8 + 16 + 16;

/// The MTU of the interface the IPv4 default route leaves by (where
/// kith's datagrams go), if there is one.
fn underlay_mtu() -> Option<u32> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let dev = routes.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let (dev, dst) = (f.next()?, f.next()?);
        (dst == "00000000").then(|| dev.to_string())
    })?;
    std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A warning when a full TUN packet, sealed, does not fit the underlay:
/// every such datagram would be fragmented (or dropped where fragments are).
fn mtu_warning(mtu: u16, underlay: u32) -> Option<String> {
    let need = u32::from(mtu) + WIRE_OVERHEAD;
    (need > underlay).then(|| {
        format!(
            "[interface] mtu = {mtu} needs {need}-byte datagrams, but the underlay's MTU is \
             {underlay}: full packets will be fragmented. Set mtu to at most {}",
            underlay.saturating_sub(WIRE_OVERHEAD)
        )
    })
}

/// The hard-NAT budget, with pool sockets capped to leave 256 descriptors
/// for everything else under the open-files limit.
fn punch_budget() -> crate::nat::punch::Budget {
    let mut budget = crate::nat::punch::Budget::default();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        let room = usize::try_from(lim.rlim_cur)
            .unwrap_or(usize::MAX)
            .saturating_sub(256);
        budget.max_sockets = budget.max_sockets.min(room);
        budget.sockets = budget.sockets.min(budget.max_sockets);
    }
    budget
}

/// Hard-NAT traversal may hold a thousand sockets: lift the soft limit on
/// open files to the hard one (systemd's default soft limit is 1024).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                debug!(
                    "cannot raise the open-files limit; hard-NAT traversal may open fewer sockets"
                );
            }
        }
    }
}

/// Run until SIGINT or SIGTERM. `cfg` was read from `source`, which a
/// reload reads again; `control` is the control socket's path.
pub async fn run(cfg: Config, source: ConfigSource, control: PathBuf) -> Result<(), StartError> {
    // Time to direct is measured from here.
    let started = Instant::now();
    for w in &cfg.warnings {
        warn!("{w}");
    }
    if let Some(note) = cfg.static_only_note() {
        info!("{note}");
    }
    let queues = create_tun(&cfg, cfg.interface.queues.count(cpus()))?;
    let tun = &queues[0];
    // Held until we exit: a second network sharing the directory would
    // overwrite our peer cache and DHT sequence.
    let _state_lock = match crate::discovery::cache::lock_state_dir(&cfg.discovery.state_dir) {
        Ok(lock) => Some(lock),
        Err(e @ crate::discovery::cache::LockError::InUse { .. }) => return Err(e.into()),
        // The cache is an optimisation: without a writable directory we
        // run without it (saving it warns as well).
        Err(e) => {
            warn!(error = %e, "running without the state directory's lock");
            None
        }
    };
    raise_fd_limit();
    let udp =
        Arc::new(
            Udp::bind(cfg.interface.listen_port).map_err(|source| StartError::Bind {
                port: cfg.interface.listen_port,
                source,
            })?,
        );
    let local = udp.local_addr()?;
    let (gso, gro) = udp.offloads();
    let routes = start_routes(&cfg, tun)?;
    if let Some(w) = underlay_mtu().and_then(|u| mtu_warning(cfg.interface.mtu, u)) {
        warn!("{w}");
    }
    let addresses: Vec<String> = cfg
        .interface
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    info!(
        interface = %cfg.interface.name,
        address = %addresses.join(", "),
        listen = %local,
        public_key = %cfg.interface.private_key.public(),
        peers = cfg.peers.len(),
        "kith is up"
    );
    debug!(
        tun_offload = tun.tcp_gso(),
        workers = queues.len(),
        udp_gso = gso,
        udp_gro = gro,
        "data path offloads"
    );

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(StartError::Random)?;
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let node_cfg = node_config(&cfg);
    let static_endpoints: Vec<_> = node_cfg.peers.iter().map(|p| p.endpoint).collect();
    // Relays we may reach over TCP: their UDP endpoint, and the same host
    // at their tcp_port.
    let tcp_links = cfg
        .peers
        .iter()
        .zip(&static_endpoints)
        .filter_map(|(p, ep)| Some((*ep)?).zip(p.tcp_port))
        .map(|(ep, port)| (ep, SocketAddr::new(ep.ip(), port)))
        .collect();
    let tcp_port = cfg.relay.tcp_port.filter(|_| cfg.relay.serve);
    let tcp = tcp::TcpTransport::new(tcp_port, tcp_links)
        .await
        .map_err(|source| StartError::TcpBind {
            port: tcp_port.unwrap_or(0),
            source,
        })?;
    let now = Instant::now();
    let mut punch_seed = seed;
    punch_seed[0] ^= 0x5a;
    let mut node = Node::new(node_cfg, now, unix_now, seed);
    node.set_mtu(usize::from(cfg.interface.mtu));
    node.start(now);
    // Discovery starts in the background: a slow or unreachable DHT never
    // holds up the tunnel to static and cached peers.
    let (mut discovery, found) = discover::Discovery::new(&cfg, &static_endpoints, local.port());
    discovery.start(&mut node, now);
    // Nothing waits for DNS: STUN starts when its names resolve, a named
    // endpoint becomes a candidate when it does.
    let stun = reflexive::Reflexive::default();
    let names = names::Names::spawn(
        cfg.discovery.stun.clone(),
        cfg.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let (host, port) = endpoint_name(p)?;
                Some((PeerId(i), host, port))
            })
            .collect(),
    );
    let portmap = if cfg.discovery.port_mapping {
        crate::nat::portmap::PortMapper::spawn(
            local.port(),
            crate::nat::portmap::Options::default(),
        )
    } else {
        crate::nat::portmap::PortMapper::disabled()
    };
    let mapped = portmap.watch();
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(8);
    if let Some(addr) = cfg.metrics.listen {
        let bound = http::serve(addr, control_tx.clone())
            .map_err(|source| StartError::MetricsBind { addr, source })?;
        info!(addr = %bound, "metrics on http://{bound}/metrics");
    }
    control::serve(&control, control_tx)?;
    notify::ready();

    let data = data::spawn(
        queues,
        udp.clone(),
        data::Options {
            busy_poll: cfg.interface.busy_poll,
            mtu: usize::from(cfg.interface.mtu),
        },
    )
    .map_err(StartError::DataThread)?;
    let mut shell = Shell {
        node,
        udp,
        data,
        order: activity::Order::default(),
        views: Vec::new(),
        discovery,
        found,
        control: control_rx,
        interface: cfg.interface.name.clone(),
        addresses: cfg.interface.addresses.clone(),
        routes,
        listen: local,
        stun,
        names,
        mapped,
        portmap,
        puncher: Puncher::new(punch_budget(), now, punch_seed),
        pools: punch::Pools::new(),
        pool_routes_sent: 0,
        control_data: 0,
        tcp,
        record_seqs: Vec::new(),
        started,
        metrics: metrics::Metrics::default(),
        pings: ping::Pings::default(),
        systemd_status: String::new(),
        ids: (0..cfg.peers.len()).map(PeerId).collect(),
        config: cfg,
        source,
    };
    shell.flush().await;
    // After the first handshakes left: nothing delays them.
    shell.sync_routes();
    let result = shell.run().await;
    notify::stopping();
    if let Err(errors) = shell.routes.clear() {
        for e in errors {
            warn!("{e}");
        }
    }
    // Remove our port mapping from the router on the way out.
    if tokio::time::timeout(Duration::from_secs(3), shell.portmap.shutdown())
        .await
        .is_err()
    {
        warn!("the router did not confirm removing the port mapping within 3 s");
    }
    result
}

struct Shell {
    node: Node,
    /// The data socket, shared with the data plane: the control plane
    /// sends its own datagrams (handshakes, STUN) on it directly.
    udp: Arc<Udp>,
    /// The data plane's thread (TUN and data socket reads, per-packet work).
    data: data::Handle,
    /// The workers' activity reports, in an order the core can read.
    order: activity::Order,
    /// Each peer's view as the core published it, and as last sent to the
    /// data plane (see [`Shell::publish`]).
    views: Vec<(crate::core::data::PeerView, crate::core::data::PeerView)>,
    discovery: discover::Discovery,
    /// Results of the DHT rendezvous (None when the DHT is off).
    found: Option<tokio::sync::mpsc::UnboundedReceiver<crate::discovery::rendezvous::Found>>,
    control: tokio::sync::mpsc::Receiver<control::Request>,
    interface: String,
    /// Our overlay addresses (for `status`).
    addresses: Vec<ipnet::IpNet>,
    /// The kernel routes for the peers' `allowed_ips` (a reload calls
    /// `apply` with the new peers' prefixes, [`routes::prefixes`]).
    routes: routes::Routes,
    listen: SocketAddr,
    /// STUN from the data socket.
    stun: reflexive::Reflexive,
    /// Background DNS of the STUN servers and named endpoints.
    names: names::Names,
    /// The router port mapping, as the port mapper last saw it.
    mapped: tokio::sync::watch::Receiver<Option<crate::nat::portmap::Mapping>>,
    portmap: crate::nat::portmap::PortMapper,
    /// Hard-NAT traversal: the plan, and the extra sockets it opens.
    puncher: Puncher<PeerId>,
    pools: punch::Pools,
    /// The generation of the hard-NAT routes the data plane last got.
    pool_routes_sent: u64,
    /// Data packets this plane sealed or opened itself (the slow path:
    /// relays reached over TCP, peers without a settled path).
    control_data: u64,
    /// The relay's TCP transport (serving, and reaching relays over TCP).
    tcp: tcp::TcpTransport,
    /// The seq of each peer's last record seen (indexed by peer).
    record_seqs: Vec<Option<i64>>,
    /// When `run` began: time to direct counts from here.
    started: Instant,
    /// The counters only the shell sees; the core's are copied in when
    /// rendered ([`metrics`]).
    metrics: metrics::Metrics,
    /// Running `kith ping` requests.
    pings: ping::Pings,
    /// The last `STATUS=` summary sent to systemd.
    systemd_status: String,
    /// Where the config came from, to read it again on a reload.
    source: ConfigSource,
    /// The config in effect (the one read at start, or the last reload's).
    config: Config,
    /// The core's id of each of `config.peers`, in order.
    ids: Vec<PeerId>,
}

/// A peer's endpoint when it is a DNS name (`names` resolves those).
fn endpoint_name(p: &crate::config::Peer) -> Option<(String, u16)> {
    match &p.endpoint {
        Some(Endpoint::Host { host, port }) => Some((host.clone(), *port)),
        _ => None,
    }
}

/// Wait for the next rendezvous result, or forever when there is none.
async fn next_found(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::discovery::rendezvous::Found>>,
) -> Option<crate::discovery::rendezvous::Found> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next tick of the systemd watchdog, or never when systemd does not
/// watch us.
async fn next_watchdog(watchdog: &mut Option<(tokio::time::Interval, Duration)>) -> Duration {
    match watchdog {
        Some((w, every)) => {
            w.tick().await;
            *every
        }
        None => std::future::pending().await,
    }
}

/// Messages from the data plane handled before the next flush.
const DRAIN: usize = 32;

impl Shell {
    async fn run(&mut self) -> Result<(), StartError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(discover::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Fed only while both planes turn: this loop, and the data plane's
        // heartbeat.
        let mut watchdog = notify::watchdog_interval().map(|every| {
            debug!(every = ?every, "feeding the systemd watchdog");
            let mut w = tokio::time::interval(every);
            w.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            (w, every)
        });
        // One buffer for everything the control plane opens or seals.
        let mut out = vec![0u8; crate::wire::MAX_DATAGRAM + OVERHEAD];
        loop {
            let deadline = [
                self.node.poll_timeout(),
                self.stun.poll_timeout(),
                self.puncher.poll_timeout(),
                self.pings.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: shutting down"); return Ok(()); }
                _ = int.recv() => { info!("SIGINT: shutting down"); return Ok(()); }
                _ = hup.recv() => {
                    // As `kith reload`; the outcome is in the log.
                    debug!("SIGHUP: reading the config file again");
                    self.reload(Instant::now());
                }
                m = self.data.up.recv() => {
                    let Some(m) = m else {
                        return Err(StartError::DataPlane);
                    };
                    self.on_data(m, &mut out);
                    // What else is waiting, up to a batch, before the flush.
                    for _ in 0..DRAIN {
                        match self.data.up.try_recv() {
                            Ok(m) => self.on_data(m, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                Some(m) = self.data.strangers.recv() => {
                    self.on_data(m, &mut out);
                    for _ in 0..DRAIN {
                        match self.data.strangers.try_recv() {
                            Ok(m) => self.on_data(m, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    self.node.handle_timeout(now);
                    self.stun.handle_timeout(now);
                    self.puncher.handle_timeout(now);
                    self.pings.handle_timeout(now, &mut self.node);
                }
                every = next_watchdog(&mut watchdog) => {
                    if self.data.alive(every) {
                        notify::watchdog();
                    } else {
                        warn!("the data plane has not turned for {every:?}: not feeding the watchdog");
                    }
                }
                Some(d) = self.pools.recv() => {
                    // Only an authenticated packet makes the socket a route,
                    // and before the answer goes out (in flush, below).
                    if self.on_datagram(d.from, &d.data, &mut out) {
                        self.pools.learn(&d);
                    }
                }
                Some(t) = self.tcp.recv() => match t {
                    tcp::TcpIn::Datagram(d) => {
                        // As if it came over UDP from the address the core knows.
                        if self.on_datagram(d.from, &d.data, &mut out) {
                            self.tcp.on_authenticated(Instant::now(), d.from);
                        }
                    }
                    tcp::TcpIn::Lost(addr) => self.node.handle_path_lost(Instant::now(), addr),
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    // Handshake timestamps follow the wall clock, corrections
                    // included (the core keeps them increasing).
                    if let Ok(unix) = SystemTime::now().duration_since(UNIX_EPOCH) {
                        self.node.set_wall_clock(now, unix);
                    }
                    for addr in self.tcp.sweep(now) {
                        self.node.handle_path_lost(now, addr);
                    }
                    if self.discovery.tick(&self.node, now) {
                        // New addresses, maybe a new NAT and router in front of us.
                        self.stun.rerun(now);
                        self.portmap.refresh();
                    }
                    self.plan_punching(now);
                }
                Ok(()) = self.mapped.changed() => {
                    let mapping = *self.mapped.borrow_and_update();
                    self.discovery.set_mapped(mapping.map(|m| m.external));
                }
                resolved = self.names.recv() => {
                    let now = Instant::now();
                    match resolved {
                        names::Resolved::Stun(servers) => self.stun.set_servers(servers, now),
                        names::Resolved::Endpoint { peer, host, addr } => {
                            // Unless a reload changed the name since.
                            let Some(p) = self
                                .peer_config(peer)
                                .filter(|p| endpoint_name(p) == Some((host, addr.port())))
                            else {
                                continue;
                            };
                            if let Some(port) = p.tcp_port {
                                self.tcp.add_link(addr, SocketAddr::new(addr.ip(), port));
                            }
                            info!(peer = %self.node.peer_name(peer), %addr, "endpoint name resolved");
                            self.discovery.set_static_endpoint(&mut self.node, now, peer, Some(addr));
                        }
                    }
                }
                Some(req) = self.control.recv() => self.on_control(req),
                found = next_found(&mut self.found) => match found {
                    Some(f) => {
                        let now = Instant::now();
                        self.note_record_seq(&f);
                        self.discovery.on_found(&mut self.node, now, f);
                        self.plan_punching(now);
                    }
                    None => self.found = None,
                },
            }
            self.flush().await;
        }
    }

    /// What the data plane handed over.
    fn on_data(&mut self, m: data::Up, out: &mut [u8]) {
        let now = Instant::now();
        match m {
            data::Up::Activity(a) => {
                if self.tcp.has_links() {
                    // Only an authenticated datagram proves UDP to a relay
                    // works (a relayed peer's data: its relay was heard).
                    let direct = match a.received {
                        Some((_, Via::Direct(from))) => Some(from),
                        _ => None,
                    };
                    for from in direct.into_iter().chain(a.heard.map(|(_, f)| f)) {
                        self.tcp.on_udp_from(from);
                    }
                }
                let (a, again) = self.order.fix(a);
                self.node.handle_activity(now, a);
                if let Some(again) = again {
                    self.node.handle_activity(now, again);
                }
            }
            data::Up::Tun(pkt) => match self.node.handle_tun(now, &pkt, out) {
                TunOutcome::Send { dst, len } => {
                    self.control_data += 1;
                    self.send_datagram(now, dst, &out[..len]);
                }
                TunOutcome::Reply { len } => {
                    // Counted with the data plane's own (one figure for both).
                    data::Stats::add(&self.data.stats.too_big, 1);
                    self.data.send(data::Down::Tun(out[..len].to_vec()));
                }
                TunOutcome::Queued => {}
                TunOutcome::Dropped(reason) => debug!(%reason, "TUN packet dropped"),
            },
            data::Up::Datagram { from, bytes } => {
                if self.on_datagram(from, &bytes, out) && self.tcp.has_links() {
                    self.tcp.on_udp_from(from);
                }
            }
            data::Up::Opened {
                peer,
                from,
                via,
                plain,
                wire_len,
            } => {
                let len = plain.len().min(out.len());
                out[..len].copy_from_slice(&plain[..len]);
                let r = self.node.handle_opened(now, peer, via, out, len, wire_len);
                if self.on_outcome(now, from, r, out, &[]) && self.tcp.has_links() {
                    self.tcp.on_udp_from(from);
                }
            }
        }
    }

    /// A datagram for the core (from the data plane, a hard-NAT pool
    /// socket or a TCP link). Returns whether it authenticated (data or a
    /// handshake step).
    fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8], out: &mut [u8]) -> bool {
        let now = Instant::now();
        if datagram.len() + OVERHEAD > out.len() {
            return false;
        }
        let r = self.node.handle_udp(now, from, datagram, out);
        self.on_outcome(now, from, r, out, datagram)
    }

    /// Act on what the core made of a datagram; `datagram` is the original
    /// (for STUN).
    fn on_outcome(
        &mut self,
        now: Instant,
        from: SocketAddr,
        r: UdpOutcome,
        out: &[u8],
        datagram: &[u8],
    ) -> bool {
        match r {
            UdpOutcome::WriteTun { len } => {
                self.control_data += 1;
                self.data.send(data::Down::Tun(out[..len].to_vec()));
                true
            }
            UdpOutcome::Dropped(reason) => {
                debug!(addr = %from, %reason, "datagram dropped");
                false
            }
            UdpOutcome::Stun => {
                self.stun.handle_datagram(now, from, datagram);
                false
            }
            UdpOutcome::Handled => true,
            UdpOutcome::Forward { dst, len } => {
                // We relay: the frame goes on to the other member.
                self.send_datagram(now, dst, &out[..len]);
                true
            }
        }
    }

    /// One datagram to `dst`, the way it must go: over TCP where the relay
    /// transport says so (a member's connection, a relay whose UDP gets no
    /// answer), else from the hard-NAT route's socket or the data socket.
    fn send_datagram(&mut self, now: Instant, dst: SocketAddr, datagram: &[u8]) {
        if !self.tcp.send(now, dst, datagram) {
            return;
        }
        let sent = match self.pools.route(dst) {
            Some(sock) => sock.send_to(datagram, dst),
            None => self.udp.send_to(datagram, dst),
        };
        if let Err(e) = sent {
            debug!(addr = %dst, error = %e, "UDP send failed");
        }
    }

    /// Tell the data plane what changed: the hard-NAT routes' sockets
    /// (before any view that needs them), then the core's views, except
    /// that a peer whose address is reached over TCP stays with the control
    /// plane (only it has those connections).
    fn publish(&mut self) {
        if self.pools.generation() != self.pool_routes_sent {
            self.pool_routes_sent = self.pools.generation();
            self.data.send(data::Down::Sockets(self.pools.sockets()));
        }
        while let Some(u) = self.node.poll_data_update() {
            match u {
                DataUpdate::Peer { id, view } => {
                    if self.views.len() <= id.0 {
                        self.views.resize_with(id.0 + 1, Default::default);
                    }
                    self.views[id.0].0 = view;
                }
                u @ (DataUpdate::Routes(_) | DataUpdate::Relay(_)) => {
                    self.data.send(data::Down::Update(u))
                }
            }
        }
        let nothing = crate::core::data::PeerView::default();
        for i in 0..self.views.len() {
            let (view, sent) = &self.views[i];
            // A relayed peer whose relay is masked is masked with it: the
            // data half finds no hop to seal on.
            let masked = view.direct().is_some_and(|a| self.tcp.involves(a));
            let wanted = if masked { &nothing } else { view };
            if !wanted.same(sent) {
                let wanted = wanted.clone();
                self.views[i].1 = wanted.clone();
                self.data.send(data::Down::Update(DataUpdate::Peer {
                    id: PeerId(i),
                    view: wanted,
                }));
            }
        }
    }

    async fn flush(&mut self) {
        let now = Instant::now();
        let local = self.discovery.local_addrs();
        if let Some(reflexive) = self.stun.poll_result(now, &local) {
            self.discovery.set_reflexive(reflexive);
            // Peers choose their hard-NAT strategy from these facts.
            self.discovery.set_nat(self.stun.behaviour);
        }
        // Records peers pushed, then ours if it changed: both may queue
        // datagrams (handshakes to new candidates, the push itself).
        while let Some(record) = self.node.poll_peer_record() {
            self.discovery.on_peer_record(&mut self.node, now, record);
        }
        if let Some(body) = self.discovery.take_push()
            && let Err(e) = self.node.push_record(now, &body)
        {
            warn!(error = %e, "cannot send our record to peers");
        }
        while let Some(t) = self.node.poll_transmit() {
            self.send_datagram(now, t.dst, &t.payload);
        }
        while let Some((dst, bytes)) = self.stun.poll_transmit() {
            if let Err(e) = self.udp.send_to(&bytes, dst) {
                debug!(addr = %dst, error = %e, "STUN send failed");
            }
        }
        while let Some(r) = self.node.poll_ping_reply() {
            let (node, tcp) = (&self.node, &self.tcp);
            self.pings
                .on_reply(&r, |seq, name| pong_line(node, tcp, seq, name, &r));
        }
        let mut events = false;
        while let Some(e) = self.node.poll_event() {
            events = true;
            self.discovery.on_event(&self.node, Instant::now(), &e);
            self.count_event(now, &e);
            match e {
                Event::Connected {
                    peer,
                    via: Via::Direct(_),
                }
                | Event::DirectAgain { peer, .. } => self.puncher.connected(peer),
                // Keys wiped: its routes are stale, but an attempt that is
                // running keeps its pool.
                Event::Disconnected { peer } => self.pools.retain_routes(|p, _| p != peer),
                // Its name may point elsewhere now.
                Event::HandshakeGaveUp { peer } => self.names.stale(peer),
                _ => {}
            }
            self.log_event(e);
        }
        if events || self.systemd_status.is_empty() {
            self.tell_systemd();
        }
        self.punch_actions().await;
        // Last: the core's calls above and the pools may have moved paths.
        self.publish();
    }

    /// The metrics an event moves: path changes, the first direct packet.
    fn count_event(&mut self, now: Instant, e: &Event) {
        let since_start = now.saturating_duration_since(self.started);
        match *e {
            Event::Connected {
                peer,
                via: Via::Direct(_),
            } => self.metrics.direct(peer.0, since_start),
            Event::DirectAgain { peer, .. } => {
                self.metrics.direct(peer.0, since_start);
                self.metrics.path_changed(peer.0);
            }
            Event::EndpointChanged { peer, .. }
            | Event::Relayed { peer, .. }
            | Event::RelayChanged { peer, .. } => self.metrics.path_changed(peer.0),
            _ => {}
        }
    }

    /// `STATUS=` for `systemctl status`, when the summary changed.
    fn tell_systemd(&mut self) {
        let (mut connected, mut relayed, mut peers) = (0, 0, 0);
        for id in self.node.peer_ids() {
            let Some(st) = self.node.peer_status(id) else {
                continue;
            };
            peers += 1;
            connected += usize::from(st.connected);
            relayed += usize::from(st.connected && st.relay.is_some());
        }
        let summary = notify::peer_summary(peers, connected, relayed);
        if summary != self.systemd_status {
            notify::status(&summary);
            self.systemd_status = summary;
        }
    }

    fn on_control(&mut self, req: control::Request) {
        let now = Instant::now();
        match req {
            control::Request::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            control::Request::Metrics { reply } => {
                let _ = reply.send(self.render_metrics(now));
            }
            control::Request::Reload { reply } => {
                let _ = reply.send(self.reload(now));
            }
            control::Request::Ping { peer, count, reply } => match self.find_peer(&peer) {
                Ok(id) => {
                    let name = self.node.peer_name(id).to_string();
                    self.pings.start(now, id, name, count, reply);
                    self.pings.handle_timeout(now, &mut self.node);
                }
                Err(message) => {
                    let _ = reply.try_send(control::PingLine::Error { message });
                }
            },
        }
    }

    /// A peer by its name or public key; the error lists the known ones.
    fn find_peer(&self, name_or_key: &str) -> Result<PeerId, String> {
        let found = self.node.peer_ids().find(|id| {
            self.node.peer_name(*id) == name_or_key
                || self
                    .node
                    .peer_status(*id)
                    .is_some_and(|s| s.public_key.to_string() == name_or_key)
        });
        found.ok_or_else(|| {
            let known: Vec<String> = self
                .node
                .peer_ids()
                .map(|id| format!("{:?}", self.node.peer_name(id)))
                .collect();
            if known.is_empty() {
                format!("unknown peer {name_or_key:?}: this node has no peers")
            } else {
                format!(
                    "unknown peer {name_or_key:?}; known peers: {} (a name or a public key)",
                    known.join(", ")
                )
            }
        })
    }

    /// The members the relay service `s` carried anything for.
    fn relay_members<'a>(
        &'a self,
        s: &'a crate::relay::RelayService,
    ) -> impl Iterator<Item = (PeerId, crate::relay::MemberStats)> + 'a {
        self.node
            .peer_ids()
            .filter_map(|id| Some(id).zip(s.member(id.0)))
            .filter(|(_, m)| *m != Default::default())
    }

    /// The Prometheus text: the shell's counters with the core's copied in.
    fn render_metrics(&mut self, now: Instant) -> String {
        let relay_service = self
            .node
            .relay_service()
            .map(|s| metrics::RelayServiceMetrics {
                refused_unknown: s.refused_unknown,
                refused_no_session: s.refused_no_session,
                members: self
                    .relay_members(&s)
                    .map(|(id, c)| metrics::RelayMemberMetrics {
                        name: self.node.peer_name(id).to_string(),
                        forwarded_bytes: c.forwarded_bytes,
                        forwarded_packets: c.forwarded_packets,
                        delivered_bytes: c.delivered_bytes,
                        dropped_rate: c.dropped_rate,
                    })
                    .collect(),
            });
        let m = &mut self.metrics;
        m.uptime = now.saturating_duration_since(self.started);
        for id in self.node.peer_ids() {
            if let Some(st) = self.node.peer_status(id) {
                m.set_peer(id.0, &st);
            }
        }
        // A reload leaves removed peers' ids as tombstones.
        let live: std::collections::HashSet<usize> = self.node.peer_ids().map(|id| id.0).collect();
        m.retain_peers(|i| live.contains(&i));
        let hs = self.node.handshake_stats();
        m.handshakes_refused = hs.refused;
        m.cookies_sent = hs.cookies_sent;
        m.tcp_dropped = self.tcp.dropped;
        m.control_data = self.control_data;
        m.data_drops = self.data.stats.drops().to_vec();
        m.relay_service = relay_service;
        metrics::render(m)
    }

    /// Start hard-NAT traversal for each peer without a path whose NAT and
    /// ours call for it (the puncher ignores repeats and backs off).
    fn plan_punching(&mut self, now: Instant) {
        // A route serves the peer's current endpoint only: one that moved
        // on (a faster path, roaming) leaves no socket behind.
        let node = &self.node;
        self.pools.retain_routes(|peer, addr| {
            node.peer_status(peer)
                .is_some_and(|s| s.endpoint == Some(addr))
        });
        for id in self.node.peer_ids() {
            // A relayed peer keeps trying: its probes are path pings on the
            // relayed session (`Node::probe_datagram`).
            let relayed = self.node.peer_status(id).is_some_and(|s| s.relay.is_some());
            if discover::has_session(&self.node, id, now) && !relayed {
                // Also ends attempts a session made moot after the first
                // connection (the core reports only that one).
                self.puncher.connected(id);
                continue;
            }
            let strategy = self.strategy(id);
            if !self.puncher.start(now, id, &strategy) {
                continue;
            }
            self.metrics.punch_started(id.0);
            let b = self.puncher.budget();
            let peer = self.node.peer_name(id);
            match strategy {
                Strategy::Easy { ip, ref predicted } => info!(
                    %peer, public = %ip, predicted = predicted.len(), rate = b.peer_rate, budget = b.per_attempt,
                    "hard NAT: the peer's NAT maps per destination; probing its ports"
                ),
                Strategy::Hard { .. } => info!(
                    %peer, sockets = b.sockets, rate = b.peer_rate,
                    "hard NAT: our NAT maps per destination; opening sockets towards the peer"
                ),
                Strategy::Ordinary | Strategy::BothHard => {}
            }
        }
    }

    /// A peer's newer record means it restarted or moved: its hard-NAT
    /// attempts start afresh, so ours must not sit out an old backoff.
    fn note_record_seq(&mut self, found: &crate::discovery::rendezvous::Found) {
        let crate::discovery::rendezvous::Found::Candidates { peer, seq, .. } = found else {
            return;
        };
        let Some(i) = self
            .discovery
            .peers
            .iter()
            .position(|m| m.public_key == Some(*peer))
        else {
            return;
        };
        if self.record_seqs.len() <= i {
            self.record_seqs.resize(i + 1, None);
        }
        if self.record_seqs[i].is_some_and(|old| old < *seq)
            && !self.puncher.reset_backoff(Instant::now(), PeerId(i))
        {
            debug!(peer = %self.node.peer_name(PeerId(i)), "hard NAT: newer record, but its backoff was reset recently; keeping it");
        }
        self.record_seqs[i] = Some(*seq);
    }

    /// What it takes to reach `id`, from both sides' NAT facts.
    fn strategy(&self, id: PeerId) -> Strategy {
        use crate::discovery::CandidateKind;
        let Some(meta) = self.discovery.peers.get(id.0) else {
            return Strategy::Ordinary;
        };
        let peer_mapped = meta.kinds.iter().any(|c| c.kind == CandidateKind::Mapped);
        let listed: Vec<SocketAddr> = meta.kinds.iter().map(|c| c.addr).collect();
        let theirs = meta
            .nat
            .as_ref()
            .map(|n| crate::nat::punch::probe_safe(n, &listed));
        crate::nat::punch::strategy(
            self.stun.behaviour.as_ref(),
            theirs.as_ref(),
            self.mapped.borrow().is_some(),
            peer_mapped,
            self.puncher.budget(),
        )
    }

    /// Carry out what the puncher decided.
    async fn punch_actions(&mut self) {
        while let Some(action) = self.puncher.poll_action() {
            match action {
                Action::Probe { peer, dst } => {
                    if let Some(msg) = self.node.probe_datagram(Instant::now(), peer)
                        && let Err(e) = self.udp.send_to(&msg, dst)
                    {
                        debug!(addr = %dst, error = %e, "hard NAT: probe send failed");
                    }
                }
                Action::OpenPool {
                    peer,
                    sockets,
                    targets,
                } => {
                    if let Err(e) = self.pools.open(peer, sockets, targets) {
                        warn!(peer = %self.node.peer_name(peer), error = %e, "hard NAT: cannot open sockets; giving up this attempt");
                        self.puncher.failed(peer);
                    }
                }
                Action::PoolSend { peer, socket } => {
                    if let Some(msg) = self.node.probe_datagram(Instant::now(), peer) {
                        self.pools.send(peer, socket, &msg).await;
                    }
                }
                Action::ClosePool { peer } => self.pools.close(peer),
                Action::Finished {
                    peer,
                    outcome,
                    probes,
                } => {
                    self.metrics
                        .punch_finished(peer.0, outcome == Outcome::Connected);
                    let peer = self.node.peer_name(peer);
                    match outcome {
                        Outcome::Connected => {
                            info!(%peer, probes, "hard NAT: direct path found")
                        }
                        Outcome::Spent => warn!(
                            %peer, probes,
                            "hard NAT: probe budget spent without a direct path; relying on a relay, trying again later"
                        ),
                    }
                }
            }
        }
    }

    /// Why `id` is relayed, for `status`: what the NAT facts say when they
    /// explain it, else what the core saw.
    /// `hop` is the relay's endpoint.
    fn relay_reason(&self, id: PeerId, hop: Option<SocketAddr>, cause: RelayCause) -> String {
        if let Some(ep) = hop.filter(|ep| self.tcp.transport(*ep) == "tcp") {
            return if self.tcp.connected_to(ep) {
                "UDP blocked here: reaching the relay over TCP".to_string()
            } else {
                "UDP blocked here: connecting to the relay over TCP".to_string()
            };
        }
        match (cause, self.strategy(id)) {
            (RelayCause::NoDirectPath, Strategy::BothHard) => {
                "both sides endpoint-dependent; no hole can be punched".to_string()
            }
            (RelayCause::NoDirectPath, _)
                if self
                    .puncher
                    .status(id)
                    .is_some_and(|p| p.last == Some(Outcome::Spent)) =>
            {
                "hard-NAT probing found no direct path; retrying later".to_string()
            }
            (cause, _) => relay_reason(cause).to_string(),
        }
    }

    /// Why no relay carries `id`'s traffic, in words that say what to add.
    fn no_common_relay(&self, id: PeerId) -> String {
        let listed = self.discovery.peers.get(id.0).map_or(0, |m| m.relays.len());
        let ours = self.node.peer_status(id).map_or(0, |s| s.peer_relays.len());
        match (listed, ours) {
            (0, _) => "the peer lists no relay in its record ([relay] via)".to_string(),
            (n, 0) => format!(
                "no common relay: the peer lists {n} relay(s), none of them a [[peer]] here; \
                 add one of them as a peer (the peer's [relay] via names them)"
            ),
            (_, _) => "its relays do not answer yet".to_string(),
        }
    }

    /// Why the path is what it is, where hard-NAT traversal has a say.
    fn punch_reason(
        &self,
        id: PeerId,
        endpoint: Option<SocketAddr>,
        connected: bool,
    ) -> Option<String> {
        let punch = self.puncher.status(id);
        if connected {
            let ep = endpoint?;
            if self.pools.routed(id).any(|a| a == ep) {
                return Some(
                    "direct through our endpoint-dependent NAT (a probe reached one of our extra sockets)"
                        .to_string(),
                );
            }
            let p = punch.filter(|p| p.role == Role::Easy && p.last == Some(Outcome::Connected))?;
            let meta = self.discovery.peers.get(id.0)?;
            if meta.kinds.iter().any(|c| c.addr == ep) {
                return None;
            }
            return Some(format!(
                "direct through the peer's endpoint-dependent NAT (port probing, {} probes)",
                p.probes
            ));
        }
        if self.strategy(id) == Strategy::BothHard {
            return Some(format!(
                "no path: both sides are behind endpoint-dependent NATs (needs a relay; {})",
                self.no_common_relay(id)
            ));
        }
        let p = punch?;
        if p.active {
            let side = match p.role {
                Role::Easy => "probing the peer's ports",
                Role::Hard => "extra sockets open towards the peer",
            };
            return Some(format!(
                "no path yet: hard-NAT traversal running ({side}, {} probes)",
                p.probes
            ));
        }
        (p.last == Some(Outcome::Spent)).then(|| {
            format!(
                "no path: hard-NAT probing spent its budget ({} probes); waiting for a relay, retrying later",
                p.probes
            )
        })
    }

    fn status(&self, now: Instant) -> control::StatusReport {
        let peers = self
            .node
            .peer_ids()
            .filter_map(|id| {
                let st = self.node.peer_status(id)?;
                let source = self.discovery.source(id);
                let relay = st.relay.filter(|_| st.connected).map(|(r, cause)| {
                    let hop = self.node.peer_status(r).and_then(|h| h.endpoint);
                    control::RelayPathReport {
                        via: self.node.peer_name(r).to_string(),
                        transport: hop.map_or("udp", |ep| self.tcp.transport(ep)).to_string(),
                        reason: self.relay_reason(id, hop, cause),
                        tx_bytes: st.relay_tx_bytes,
                        rx_bytes: st.relay_rx_bytes,
                        drops: st.relay_drops,
                    }
                });
                let peer_relays = st
                    .peer_relays
                    .iter()
                    .map(|r| self.node.peer_name(*r).to_string())
                    .collect();
                Some(control::PeerReport {
                    name: st.name,
                    public_key: st.public_key.to_string(),
                    allowed_ips: self
                        .node
                        .peer_allowed_ips(id)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    path: match (st.connected, &relay) {
                        (false, _) => "none",
                        (true, None) => "direct",
                        (true, Some(_)) => "relayed",
                    }
                    .to_string(),
                    path_reason: match &relay {
                        Some(r) => format!(
                            "relayed via {} ({}): {}",
                            r.via,
                            r.transport.to_uppercase(),
                            r.reason
                        ),
                        None => {
                            let why = self
                                .punch_reason(id, st.endpoint, st.connected)
                                .unwrap_or_else(|| {
                                    self.discovery.path_reason(id, st.endpoint, st.connected)
                                });
                            // No path at all: say whether a relay could
                            // help, and what to add if none can.
                            if st.connected || why.contains("relay") {
                                why
                            } else {
                                format!("{why}; {}", self.no_common_relay(id))
                            }
                        }
                    },
                    endpoint: st.endpoint.map(|e| self.tcp.display(e)),
                    last_handshake_secs: st
                        .last_handshake
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                    handshakes: st.handshakes,
                    rx_bytes: st.rx_bytes,
                    tx_bytes: st.tx_bytes,
                    candidates: st.candidates.iter().map(ToString::to_string).collect(),
                    candidates_source: source.map(|(s, _)| s.to_string()),
                    candidates_age_secs: source.map(|(_, age)| age),
                    punch: self.puncher.status(id).map(|p| control::PunchReport {
                        role: match p.role {
                            Role::Easy => "easy",
                            Role::Hard => "hard",
                        }
                        .to_string(),
                        probes: p.probes,
                        attempts: p.attempts,
                        active: p.active,
                        last: p.last.map(|o| {
                            match o {
                                Outcome::Connected => "connected",
                                Outcome::Spent => "spent",
                            }
                            .to_string()
                        }),
                    }),
                    relay,
                    peer_relays,
                })
            })
            .collect();
        control::StatusReport {
            interface: self.interface.clone(),
            public_key: self.node.public_key().to_string(),
            listen: self.listen.to_string(),
            addresses: self.addresses.iter().map(ToString::to_string).collect(),
            dht: self.discovery.dht_status(),
            nat: control::NatStatus {
                mapping: self.stun.behaviour.map(|b| match b.mapping {
                    crate::nat::MappingBehaviour::EndpointIndependent => {
                        "endpoint-independent".to_string()
                    }
                    crate::nat::MappingBehaviour::EndpointDependent => {
                        "endpoint-dependent".to_string()
                    }
                    crate::nat::MappingBehaviour::NoNat => "no NAT".to_string(),
                    crate::nat::MappingBehaviour::Unknown => "unknown".to_string(),
                }),
                public: self
                    .stun
                    .behaviour
                    .and_then(|b| b.public)
                    .map(|a| a.to_string()),
                sequential_step: self.stun.behaviour.and_then(|b| b.sequential),
                port_mapping: self
                    .mapped
                    .borrow()
                    .map(|m| format!("{} via {}", m.external, m.protocol)),
            },
            peers,
            tcp_dropped: self.tcp.dropped,
            control_data: self.control_data,
            data_drops: self
                .data
                .stats
                .drops()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            data_workers: self.data.sealed(),
            relay_service: self
                .node
                .relay_service()
                .map(|s| control::RelayServiceReport {
                    tcp_port: self.tcp.listen_port(),
                    refused_unknown: s.refused_unknown,
                    refused_no_session: s.refused_no_session,
                    members: self
                        .relay_members(&s)
                        .map(|(id, m)| control::RelayMemberReport {
                            name: self.node.peer_name(id).to_string(),
                            forwarded_bytes: m.forwarded_bytes,
                            forwarded_packets: m.forwarded_packets,
                            delivered_bytes: m.delivered_bytes,
                            dropped_rate: m.dropped_rate,
                            transport: self
                                .node
                                .peer_status(id)
                                .and_then(|p| p.endpoint)
                                .map(|ep| self.tcp.transport(ep).to_string()),
                        })
                        .collect(),
                }),
        }
    }

    /// Make the kernel's routes through the TUN device match every peer's
    /// `allowed_ips` in the config in effect (called after a reload applied).
    fn sync_routes(&mut self) {
        if let Err(errors) = self.routes.apply(&routes::prefixes(&self.config.peers)) {
            for e in errors {
                warn!("{e}");
            }
        }
    }

    fn log_event(&self, e: Event) {
        match e {
            Event::Connected {
                peer,
                via: Via::Direct(endpoint),
            } => {
                info!(peer = %self.node.peer_name(peer), addr = %endpoint, path = "direct", "peer connected")
            }
            Event::Connected {
                peer,
                via: Via::Relay(relay),
            } => {
                info!(peer = %self.node.peer_name(peer), relay = %self.node.peer_name(relay), path = "relayed", "peer connected")
            }
            Event::Relayed { peer, relay, cause } => {
                info!(peer = %self.node.peer_name(peer), relay = %self.node.peer_name(relay), reason = relay_reason(cause), "peer relayed")
            }
            Event::DirectAgain { peer, endpoint } => {
                info!(peer = %self.node.peer_name(peer), addr = %endpoint, path = "direct", "peer direct again")
            }
            Event::RelayChanged { peer, from, to } => {
                info!(peer = %self.node.peer_name(peer), from = %self.node.peer_name(from), relay = %self.node.peer_name(to), "peer moved to another relay")
            }
            Event::EndpointChanged { peer, from, to } => {
                info!(peer = %self.node.peer_name(peer), from = %from, addr = %to, "peer endpoint changed")
            }
            Event::HandshakeGaveUp { peer } => {
                warn!(peer = %self.node.peer_name(peer), "no handshake response for 90 s; giving up until there is traffic")
            }
            Event::Disconnected { peer } => {
                info!(peer = %self.node.peer_name(peer), "peer silent for 9 minutes; session keys wiped")
            }
            Event::NeedCandidates { peer } => {
                debug!(peer = %self.node.peer_name(peer), "no known address answers")
            }
        }
    }
}

/// The `kith ping` line for a pong: the path it came back on, in the
/// words `status` uses.
fn pong_line(
    node: &Node,
    tcp: &tcp::TcpTransport,
    seq: u32,
    name: &str,
    reply: &crate::core::PingReply,
) -> control::PingLine {
    let (path, endpoint, relay, transport) = match reply.via {
        Via::Direct(addr) => ("direct", Some(tcp.display(addr)), None, None),
        Via::Relay(r) => {
            let hop = node.peer_status(r).and_then(|h| h.endpoint);
            let transport = hop.map_or("udp", |ep| tcp.transport(ep)).to_string();
            (
                "relayed",
                None,
                Some(node.peer_name(r).to_string()),
                Some(transport),
            )
        }
    };
    control::PingLine::Pong {
        seq,
        peer: name.to_string(),
        path: path.to_string(),
        endpoint,
        relay,
        transport,
        rtt_us: u64::try_from(reply.rtt.as_micros()).unwrap_or(u64::MAX),
    }
}

/// Why a peer is relayed, in the words the log uses.
fn relay_reason(cause: RelayCause) -> &'static str {
    match cause {
        RelayCause::NoDirectPath => "no direct path answered; still probing for one",
        RelayCause::DirectPathLost => "the direct path stopped answering; still probing it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mtu_fits_an_ethernet_underlay_and_a_larger_one_does_not() {
        assert_eq!(mtu_warning(1420, 1500), None);
        assert_eq!(mtu_warning(1440, 1500), None);
        let w = mtu_warning(1500, 1500).expect("1560-byte datagrams on a 1500 link");
        assert!(w.contains("at most 1440"), "{w}");
        assert!(mtu_warning(1420, 1280).is_some());
    }
}
