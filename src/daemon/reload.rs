//! Live reload (`kith reload`, SIGHUP): the daemon reads its config file
//! again, compares it with the config in effect and applies the
//! difference, leaving everything that did not change alone.
//!
//! Flow:
//! 1. [`ConfigSource::load`](crate::config::ConfigSource::load): the same
//!    reading and validation as at start (`--state-dir` included); an
//!    invalid file stops here with every error, and nothing changes;
//! 2. [`plan`]: the changes in words, or the ones only a restart can apply
//!    (TUN device, UDP socket, identity, network secret, DHT node, TCP
//!    listener): one of those refuses the whole file, and nothing changes;
//! 3. `Node::reconfigure`: peers matched by key keep their sessions; the
//!    removed ones' sessions, routes and relay membership go; the added
//!    ones get new ids and handshake at once;
//! 4. the shell's tables by peer id follow: discovery (static endpoints,
//!    cache, our published relays), DNS names, hard-NAT attempts and pool
//!    sockets, relay TCP links and inbound connections; then the STUN
//!    servers and port mapping, and the kernel routes;
//! 5. one info line says what changed.
//!
//! A refusal is logged too (one warning per error), so SIGHUP, which has no
//! one to answer, leaves the reason in the journal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::control::ReloadReport;
use super::{Shell, endpoint_name, node_config, tcp};
use crate::config::{Config, Endpoint, Peer};
use crate::core::PeerId;
use crate::nat::portmap::{Options, PortMapper};

/// What `new` changes from `old`, one entry per change in words ("added
/// peer nas", "peer vps: keepalive 25s"); `Err` with the changes that only
/// a restart applies, each saying why.
pub(super) fn plan(old: &Config, new: &Config) -> Result<Vec<String>, Vec<String>> {
    plan_on(old, new, super::cpus())
}

/// [`plan`] on a machine with `cpus` CPUs (`[interface] queues = "auto"`
/// depends on it).
fn plan_on(old: &Config, new: &Config, cpus: usize) -> Result<Vec<String>, Vec<String>> {
    let restart = needs_restart(old, new, cpus);
    if !restart.is_empty() {
        return Err(restart);
    }
    let mut changes = Vec::new();
    for p in &old.peers {
        if !new.peers.iter().any(|q| q.public_key == p.public_key) {
            changes.push(format!("removed peer {}", p.name));
        }
    }
    for q in &new.peers {
        match old.peers.iter().find(|p| p.public_key == q.public_key) {
            None => changes.push(format!("added peer {}", q.name)),
            Some(p) => {
                let what = peer_changes(p, q);
                if !what.is_empty() {
                    changes.push(format!("peer {}: {}", p.name, what.join(", ")));
                }
            }
        }
    }
    let (o, n) = (&old.relay, &new.relay);
    if o.serve != n.serve {
        changes.push(format!("[relay] serve = {}", n.serve));
    }
    if via_keys(old) != via_keys(new) {
        changes.push(format!("[relay] via = [{}]", n.via.join(", ")));
    }
    if (o.rate, o.max_rate) != (n.rate, n.max_rate) {
        changes.push(format!(
            "[relay] rate {} per member, {} in all",
            rate(n.rate),
            rate(n.max_rate)
        ));
    }
    let (o, n) = (&old.discovery, &new.discovery);
    if o.stun != n.stun {
        changes.push(format!("[discovery] stun = [{}]", n.stun.join(", ")));
    }
    if o.port_mapping != n.port_mapping {
        changes.push(format!("[discovery] port_mapping = {}", n.port_mapping));
    }
    Ok(changes)
}

/// The changes in `new` that only a restart applies: what is set up once
/// at start and cannot change under live sessions without losing them.
fn needs_restart(old: &Config, new: &Config, cpus: usize) -> Vec<String> {
    let (o, n) = (&old.interface, &new.interface);
    let dht = |d: &crate::config::Discovery| {
        (
            d.dht,
            d.bootstrap.clone(),
            d.dht_port,
            d.dht_server,
            d.state_dir.clone(),
        )
    };
    let listener = |c: &Config| c.relay.tcp_port.filter(|_| c.relay.serve);
    let checks = [
        (
            moved("[interface] name", &o.name, &n.name),
            "the TUN device is created at start",
        ),
        (
            moved(
                "[interface] address",
                &addresses(&o.addresses),
                &addresses(&n.addresses),
            ),
            "the TUN device's address is set at start",
        ),
        (
            differs(
                "[interface] private key",
                o.private_key.public() != n.private_key.public(),
            ),
            "it is this node's identity, which every session and every peer's config is bound to",
        ),
        (
            moved("[interface] listen_port", &o.listen_port, &n.listen_port),
            "the UDP socket is bound at start",
        ),
        (
            moved("[interface] mtu", &o.mtu, &n.mtu),
            "the TUN device and the data path's buffers are sized at start",
        ),
        (
            differs("[interface] busy_poll", o.busy_poll != n.busy_poll),
            "the data plane's thread reads it once, at start",
        ),
        (
            // Only a different worker count needs a restart ("auto" and
            // the number it means here are the same).
            moved("[interface] queues", &o.queues, &n.queues)
                .filter(|_| o.queues.count(cpus) != n.queues.count(cpus)),
            "the TUN device's queues and the data plane's workers are made at start",
        ),
        (
            differs("[network] id", old.network.id != new.network.id),
            "DHT records are published and looked up under it",
        ),
        (
            differs("[network] secret", old.network.secret != new.network.secret),
            "it is mixed into every handshake, so no peer that still has the old one could rekey",
        ),
        (
            differs(
                "[discovery] dht, bootstrap, dht_port, dht_server or state_dir",
                dht(&old.discovery) != dht(&new.discovery),
            ),
            "the DHT node and the state it keeps are set up at start",
        ),
        (
            differs(
                "[relay] tcp_port (or serve with a tcp_port)",
                listener(old) != listener(new),
            ),
            "the relay's TCP listener is bound at start",
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(what, why)| Some(format!("{} changed: {why}", what?)))
        .collect()
}

/// `what (old → new)` when the value changed.
fn moved<T: PartialEq + std::fmt::Display>(what: &str, old: &T, new: &T) -> Option<String> {
    (old != new).then(|| format!("{what} ({old} → {new})"))
}

/// An address list as written in the file, e.g. `100.96.0.1/16, fd00::1/64`.
fn addresses(list: &[ipnet::IpNet]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `what` when it changed (for values not worth showing, or secret).
fn differs(what: &str, changed: bool) -> Option<String> {
    changed.then(|| what.to_string())
}

/// What changed in a kept peer (same key), in words.
fn peer_changes(p: &Peer, q: &Peer) -> Vec<String> {
    let mut what = Vec::new();
    if p.name != q.name {
        what.push(format!("renamed to {}", q.name));
    }
    if p.allowed_ips != q.allowed_ips {
        let ips: Vec<String> = q.allowed_ips.iter().map(ToString::to_string).collect();
        what.push(format!("allowed_ips [{}]", ips.join(", ")));
    }
    if p.endpoint != q.endpoint {
        what.push(format!("endpoint {}", shown(q.endpoint.as_ref())));
    }
    if p.keepalive != q.keepalive {
        what.push(format!(
            "keepalive {}",
            shown(q.keepalive.map(|k| format!("{k:?}")))
        ));
    }
    if p.tcp_port != q.tcp_port {
        what.push(format!("tcp_port {}", shown(q.tcp_port)));
    }
    what
}

fn shown(v: Option<impl std::fmt::Display>) -> String {
    v.map_or("none".to_string(), |v| v.to_string())
}

fn rate(bytes_per_sec: Option<u64>) -> String {
    bytes_per_sec.map_or("unlimited".to_string(), |b| {
        format!("{:.1} Mbit/s", b as f64 * 8.0 / 1e6)
    })
}

/// The keys `[relay] via` names (a renamed relay is the same relay).
fn via_keys(cfg: &Config) -> Vec<[u8; 32]> {
    cfg.via_peers()
        .map(|(_, p)| *p.public_key.as_bytes())
        .collect()
}

/// A peer's static endpoint when it is an address (a name becomes one
/// when it resolves).
fn static_addr(p: &Peer) -> Option<SocketAddr> {
    match p.endpoint {
        Some(Endpoint::Addr(a)) => Some(a),
        _ => None,
    }
}

impl ReloadReport {
    fn refused(file: String, errors: Vec<String>, needs_restart: Vec<String>) -> Self {
        for e in &errors {
            warn!("{e}");
        }
        for r in &needs_restart {
            warn!("{r}; restart kith to apply it");
        }
        warn!(%file, "config not reloaded; still running on the previous config");
        Self {
            file,
            applied: false,
            changes: Vec::new(),
            errors,
            needs_restart,
        }
    }
}

impl Shell {
    /// Read the config file again and apply it, or refuse it (see the
    /// module docs); the answer for `kith reload`.
    pub(super) fn reload(&mut self, now: Instant) -> ReloadReport {
        let file = self.source.file.display().to_string();
        let new = match self.source.load() {
            Ok(cfg) => cfg,
            Err(errors) => {
                let errors = errors.0.iter().map(ToString::to_string).collect();
                return ReloadReport::refused(file, errors, Vec::new());
            }
        };
        let changes = match plan(&self.config, &new) {
            Ok(changes) => changes,
            Err(restart) => return ReloadReport::refused(file, Vec::new(), restart),
        };
        for w in &new.warnings {
            warn!("{w}");
        }
        if !changes.is_empty() {
            // Checked by `plan` already; the core has its own word on it.
            if let Err(e) = self.apply(now, &new) {
                return ReloadReport::refused(file, Vec::new(), vec![e.to_string()]);
            }
            info!(%file, changes = %changes.join("; "), "config reloaded");
        } else {
            info!(%file, "config reloaded: no changes");
        }
        self.config = new;
        ReloadReport {
            file,
            applied: true,
            changes,
            errors: Vec::new(),
            needs_restart: Vec::new(),
        }
    }

    /// Apply `new` (already planned) to the core and the shell's tables.
    fn apply(&mut self, now: Instant, new: &Config) -> Result<(), crate::core::ReconfigureError> {
        // What the core is about to forget of removed peers: where they
        // were reached (a member's TCP connection to us has an address of
        // its own).
        let reached: HashMap<PeerId, SocketAddr> = self
            .ids
            .iter()
            .filter_map(|&id| Some((id, self.node.peer_status(id)?.endpoint?)))
            .collect();
        let r = self.node.reconfigure(now, node_config(new))?;
        for &id in &r.removed {
            if let Some(p) = self.peer_config(id).cloned() {
                self.drop_tcp_link(id, &p);
            }
            if let Some(&addr) = reached.get(&id).filter(|a| tcp::is_stream_addr(**a)) {
                self.tcp.close_inbound(addr);
            }
            self.pools.forget(id);
            self.puncher.forget(id);
            self.names.set_endpoint(id, None);
            self.discovery.remove_peer(id);
            if let Some(seq) = self.record_seqs.get_mut(id.0) {
                *seq = None;
            }
        }
        for (&id, q) in r.ids.iter().zip(&new.peers) {
            let old = self.peer_config(id).cloned();
            match old {
                None => {
                    let key = q.public_key;
                    self.discovery
                        .add_peer(&mut self.node, now, id, key, static_addr(q));
                    self.add_tcp_link(q, static_addr(q));
                }
                Some(p) if p.endpoint != q.endpoint || p.tcp_port != q.tcp_port => {
                    self.drop_tcp_link(id, &p);
                    let addr = static_addr(q);
                    self.discovery
                        .set_static_endpoint(&mut self.node, now, id, addr);
                    self.add_tcp_link(q, addr);
                }
                Some(_) => {}
            }
            self.names.set_endpoint(id, endpoint_name(q));
        }
        self.ids = r.ids;
        self.discovery.set_relays(via_keys(new));
        if self.config.discovery.stun != new.discovery.stun {
            // The old servers are not asked again; the new ones as soon as
            // their names resolve.
            self.stun.set_servers(Vec::new(), now);
            self.names.set_stun(new.discovery.stun.clone());
        }
        if self.config.discovery.port_mapping != new.discovery.port_mapping {
            self.set_port_mapping(new.discovery.port_mapping);
        }
        self.sync_routes();
        Ok(())
    }

    /// The config entry of peer `id` (as of the config in effect).
    pub(super) fn peer_config(&self, id: PeerId) -> Option<&Peer> {
        let i = self.ids.iter().position(|&x| x == id)?;
        self.config.peers.get(i)
    }

    /// A relay reached over TCP at its `tcp_port` when UDP fails, from its
    /// UDP endpoint `udp` (a name's address comes when it resolves).
    fn add_tcp_link(&mut self, p: &Peer, udp: Option<SocketAddr>) {
        if let Some((udp, port)) = udp.zip(p.tcp_port) {
            self.tcp.add_link(udp, SocketAddr::new(udp.ip(), port));
        }
    }

    /// Forget the TCP link to `p` (as configured until now), if it had one.
    fn drop_tcp_link(&mut self, id: PeerId, p: &Peer) {
        let udp = self
            .discovery
            .peers
            .get(id.0)
            .and_then(|m| m.static_endpoint);
        if let Some(udp) = udp.filter(|_| p.tcp_port.is_some()) {
            self.tcp.remove_link(udp);
        }
    }

    /// Port mapping on or off: a new mapper, and the old one deletes its
    /// mapping on the router in the background (the data path never waits
    /// for a router).
    fn set_port_mapping(&mut self, on: bool) {
        let next = if on {
            PortMapper::spawn(self.listen.port(), Options::default())
        } else {
            PortMapper::disabled()
        };
        let old = std::mem::replace(&mut self.portmap, next);
        self.mapped = self.portmap.watch();
        let mapping = *self.mapped.borrow_and_update();
        self.discovery.set_mapped(mapping.map(|m| m.external));
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(3), old.shutdown())
                .await
                .is_err()
            {
                warn!("the router did not confirm removing the port mapping within 3 s");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn key(n: u8) -> String {
        SecretKey::from_seed([n; 32]).public().to_string()
    }

    /// A config with peers (name, key seed, allowed_ips) and `extra` TOML
    /// appended to `[interface]`.
    fn config(interface: &str, peers: &[(&str, u8, &str)], tail: &str) -> Config {
        let me = SecretKey::from_seed([1; 32]).to_base64();
        let mut text = format!(
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{me}\"\n{interface}\n"
        );
        for (name, n, ips) in peers {
            text.push_str(&format!(
                "[[peer]]\nname = \"{name}\"\npublic_key = \"{}\"\nallowed_ips = [{ips}]\n\
                 endpoint = \"198.18.0.{n}:51871\"\n",
                key(*n)
            ));
        }
        text.push_str(tail);
        crate::config::parse(std::path::Path::new("kith.toml"), &text).unwrap()
    }

    const B: (&str, u8, &str) = ("b", 2, "\"100.96.0.2/32\"");
    const C: (&str, u8, &str) = ("c", 3, "\"100.96.0.3/32\"");

    #[test]
    fn the_same_file_changes_nothing() {
        let a = config("", &[B, C], "");
        assert_eq!(plan(&a, &a.clone()), Ok(Vec::new()));
    }

    #[test]
    fn peers_are_matched_by_key_and_each_change_is_named() {
        let old = config("", &[B, C], "");
        let new = config(
            "",
            &[
                ("bee", 2, "\"100.96.0.2/32\", \"10.9.0.0/24\""),
                ("d", 4, "\"100.96.0.4/32\""),
            ],
            "[relay]\nvia = [\"bee\"]\n[discovery]\ndht = false\nstun = []\n",
        );
        let changes = plan(&old, &new).unwrap();
        assert_eq!(
            changes,
            [
                "removed peer c",
                "peer b: renamed to bee, allowed_ips [100.96.0.2/32, 10.9.0.0/24]",
                "added peer d",
                "[relay] via = [bee]",
                "[discovery] stun = []",
            ]
        );
    }

    #[test]
    fn what_needs_a_restart_refuses_the_whole_file_with_reasons() {
        let old = config("", &[B], "");
        let new = config(
            "name = \"kith1\"\nlisten_port = 4000",
            &[B, C],
            "[relay]\nserve = true\ntcp_port = 8443\n",
        );
        let reasons = plan(&old, &new).unwrap_err();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].starts_with("[interface] name (kith0 → kith1) changed: the TUN device"));
        assert!(reasons[1].contains("listen_port (51871 → 4000)"));
        assert!(reasons[1].contains("UDP socket"));
        assert!(reasons[2].contains("TCP listener"));
        let queues = config("queues = 2", &[B], "");
        assert_eq!(
            plan_on(&old, &queues, 2),
            Err(vec![
                "[interface] queues (\"auto\" → 2) changed: the TUN device's queues and the \
                 data plane's workers are made at start"
                    .to_string()
            ])
        );
        // "auto" is one worker on 2 CPUs: writing it down changes nothing.
        let one = config("queues = 1", &[B], "");
        assert_eq!(plan_on(&old, &one, 2), Ok(Vec::new()));
        assert!(
            plan_on(&old, &one, 8).is_err(),
            "auto is 4 workers on 8 CPUs"
        );
        // Serving without a TCP port is a live change.
        let live = config("", &[B], "[relay]\nserve = true\n");
        assert_eq!(
            plan(&old, &live),
            Ok(vec!["[relay] serve = true".to_string()])
        );
    }

    #[test]
    fn a_new_key_is_refused() {
        let old = config("", &[B], "");
        let mut new = old.clone();
        new.interface.private_key = SecretKey::from_seed([9; 32]);
        let reasons = plan(&old, &new).unwrap_err();
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains("private key"), "{reasons:?}");
    }
}
