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
//!   the operator's log lines).
//!
//! A full TUN queue drops the packet (as a router would) instead of
//! stalling the UDP receive loop behind it.

mod notify;
mod socket;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::config::{Config, Endpoint};
use crate::core::{Event, Node, NodeConfig, PeerConfig, TunOutcome, UdpOutcome, OVERHEAD};

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
         [interface] listen_port to a free port, or 0 for any"
    )]
    Bind { port: u16, source: io::Error },
    #[error("cannot read OS randomness: {0}")]
    Random(getrandom::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Turn the validated config into the core's view, resolving DNS names.
async fn node_config(cfg: &Config) -> NodeConfig {
    let mut peers = Vec::with_capacity(cfg.peers.len());
    for p in &cfg.peers {
        let endpoint = match &p.endpoint {
            None => None,
            Some(Endpoint::Addr(a)) => Some(*a),
            Some(Endpoint::Host { host, port }) => resolve(host, *port).await,
        };
        if p.endpoint.is_some() && endpoint.is_none() {
            warn!(peer = %p.name, "endpoint could not be resolved; waiting for the peer to reach us");
        }
        peers.push(PeerConfig {
            name: p.name.clone(),
            public_key: p.public_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoint,
            keepalive: p.keepalive,
        });
    }
    NodeConfig { secret: cfg.interface.private_key.clone(), psk: [0; 32], peers }
}

async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
        Ok(Ok(mut addrs)) => addrs.find(|a| a.is_ipv4()),
        Ok(Err(e)) => {
            warn!(host, error = %e, "DNS lookup failed");
            None
        }
        Err(_) => {
            warn!(host, "DNS lookup timed out after 5 s");
            None
        }
    }
}

fn create_tun(cfg: &Config) -> Result<tun_rs::AsyncDevice, StartError> {
    let iface = &cfg.interface;
    let mut builder = tun_rs::DeviceBuilder::new().name(&iface.name).mtu(iface.mtu);
    builder = match iface.address {
        ipnet::IpNet::V4(n) => builder.ipv4(n.addr(), n.prefix_len(), None),
        ipnet::IpNet::V6(n) => builder.ipv6(n.addr(), n.prefix_len()),
    };
    builder.build_async().map_err(|source| StartError::Tun { name: iface.name.clone(), source })
}

/// Run until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), StartError> {
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let tun = create_tun(&cfg)?;
    let udp = socket::bind_udp(cfg.interface.listen_port)
        .map_err(|source| StartError::Bind { port: cfg.interface.listen_port, source })?;
    let local = udp.local_addr()?;
    info!(
        interface = %cfg.interface.name,
        address = %cfg.interface.address,
        listen = %local,
        public_key = %cfg.interface.private_key.public(),
        peers = cfg.peers.len(),
        "kith is up"
    );

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(StartError::Random)?;
    let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now = Instant::now();
    let mut node = Node::new(node_config(&cfg).await, now, unix_now, seed);
    node.start(now);
    notify::ready();

    let mut shell = Shell { node, udp, tun, mtu: usize::from(cfg.interface.mtu) };
    shell.flush().await;
    let result = shell.run().await;
    notify::stopping();
    result
}

struct Shell {
    node: Node,
    udp: UdpSocket,
    tun: tun_rs::AsyncDevice,
    mtu: usize,
}

impl Shell {
    async fn run(&mut self) -> Result<(), StartError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // Buffers allocated once: the per-packet path does not allocate.
        let mut udp_in = vec![0u8; crate::wire::MAX_DATAGRAM];
        let mut tun_in = vec![0u8; crate::wire::MAX_DATAGRAM];
        let mut out = vec![0u8; crate::wire::MAX_DATAGRAM + OVERHEAD];
        loop {
            let deadline = self
                .node
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: shutting down"); return Ok(()); }
                _ = int.recv() => { info!("SIGINT: shutting down"); return Ok(()); }
                _ = hup.recv() => {
                    warn!("SIGHUP: config reload is not supported yet; restart kith to apply changes");
                }
                r = self.udp.recv_from(&mut udp_in) => {
                    let (n, from) = r?;
                    self.on_udp(from, &udp_in[..n], &mut out);
                    // Drain what else is waiting before going back to select.
                    for _ in 0..64 {
                        match self.udp.try_recv_from(&mut udp_in) {
                            Ok((n, from)) => self.on_udp(from, &udp_in[..n], &mut out),
                            Err(_) => break,
                        }
                    }
                }
                r = self.tun.recv(&mut tun_in) => {
                    let n = r?;
                    self.on_tun(&tun_in[..n], &mut out).await;
                    for _ in 0..64 {
                        match self.tun.try_recv(&mut tun_in) {
                            Ok(n) => self.on_tun(&tun_in[..n], &mut out).await,
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    self.node.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
    }

    fn on_udp(&mut self, from: SocketAddr, datagram: &[u8], out: &mut [u8]) {
        match self.node.handle_udp(Instant::now(), from, datagram, out) {
            UdpOutcome::WriteTun { len } => {
                if let Err(e) = self.tun.try_send(&out[..len]) {
                    debug!(error = %e, "TUN write failed; packet dropped");
                }
            }
            UdpOutcome::Dropped(reason) => debug!(addr = %from, %reason, "datagram dropped"),
            UdpOutcome::Stun | UdpOutcome::Handled => {}
        }
    }

    async fn on_tun(&mut self, packet: &[u8], out: &mut [u8]) {
        if packet.len() > self.mtu + 64 {
            debug!(len = packet.len(), "oversized TUN packet dropped");
            return;
        }
        match self.node.handle_tun(Instant::now(), packet, out) {
            TunOutcome::Send { dst, len } => {
                if let Err(e) = self.udp.send_to(&out[..len], dst).await {
                    debug!(addr = %dst, error = %e, "UDP send failed");
                }
            }
            TunOutcome::Queued => {}
            TunOutcome::Dropped(reason) => debug!(%reason, "TUN packet dropped"),
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if let Err(e) = self.udp.send_to(&t.payload, t.dst).await {
                debug!(addr = %t.dst, error = %e, "UDP send failed");
            }
        }
        while let Some(e) = self.node.poll_event() {
            self.log_event(e);
        }
    }

    fn log_event(&self, e: Event) {
        match e {
            Event::Connected { peer, endpoint } => {
                info!(peer = %self.node.peer_name(peer), addr = %endpoint, path = "direct", "peer connected")
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
        }
    }
}
