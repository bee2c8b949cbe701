//! Building a Mainline DHT node (the `mainline` crate), shared by the
//! daemon's rendezvous actor and `kith dht-node`.
//!
//! `mainline` runs each node on its own OS thread; building one binds a
//! socket and is cheap, but we still build it outside the async runtime so
//! a slow bind or resolution never stalls the data path.

use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};

use tracing::warn;

/// How to run one DHT node.
#[derive(Debug, Clone)]
pub struct DhtSettings {
    /// Address to bind; `None` = all IPv4 interfaces.
    pub bind: Option<std::net::Ipv4Addr>,
    /// UDP port; 0 = any.
    pub port: u16,
    /// `host:port` bootstrap nodes; empty = start a new network.
    pub bootstrap: Vec<String>,
    /// Answer other nodes' queries and store their items.
    pub server: bool,
    /// Mark the node's socket as kith's own underlay traffic (the daemon,
    /// so a default route through the tunnel does not take the DHT with
    /// it: `daemon::routes`); `kith dht-node` has no tunnel.
    pub mark: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("no bootstrap node resolved to an IPv4 address ({0:?}); check [discovery] bootstrap")]
    NoBootstrap(Vec<String>),
    #[error(
        "cannot start the DHT node on port {port}: {source}. Set [discovery] dht_port to a free port, or 0"
    )]
    Bind { port: u16, source: std::io::Error },
}

/// Resolve `host:port` entries to IPv4 addresses (mainline speaks IPv4 only).
/// Entries that do not resolve are skipped; the caller logs what is left.
pub fn resolve_bootstrap(entries: &[String]) -> Vec<SocketAddrV4> {
    entries
        .iter()
        .filter_map(|e| e.to_socket_addrs().ok())
        .flatten()
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .collect()
}

/// Start a node. Blocking (DNS, bind): call from `spawn_blocking`.
pub fn build(settings: &DhtSettings) -> Result<mainline::Dht, DhtError> {
    let mut builder = mainline::Dht::builder();
    if settings.bootstrap.is_empty() {
        builder.no_bootstrap();
    } else {
        let resolved = resolve_bootstrap(&settings.bootstrap);
        if resolved.is_empty() {
            return Err(DhtError::NoBootstrap(settings.bootstrap.clone()));
        }
        let as_text: Vec<String> = resolved.iter().map(ToString::to_string).collect();
        builder.bootstrap(&as_text);
    }
    if let Some(ip) = settings.bind {
        builder.bind_address(ip);
    }
    if settings.port != 0 {
        builder.port(settings.port);
    }
    if settings.server {
        builder.server_mode();
    }
    let dht = builder.build().map_err(|source| DhtError::Bind {
        port: settings.port,
        source,
    })?;
    if settings.mark {
        // mainline keeps its socket to itself: find it by its port. Its
        // first bootstrap queries may leave before this; while its routing
        // table is empty it asks again.
        #[allow(deprecated)] // the blocking twin of the async `info`, fine here
        let port = dht.info().local_addr().port();
        match crate::daemon::routes::mark_udp_port(port) {
            Ok(1) => {}
            Ok(n) => warn!(port, sockets = n, "expected one DHT socket to mark"),
            Err(e) => {
                warn!(port, error = %e, "cannot mark the DHT socket; a default route through the tunnel would carry it")
            }
        }
    }
    Ok(dht)
}
