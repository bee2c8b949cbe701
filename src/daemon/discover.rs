//! The daemon's side of discovery: which candidates each peer has and where
//! they came from, the cache, our own LAN candidates, and when to publish
//! and look up. The DHT work itself is the rendezvous actor's; the choice of
//! path is the core's.
//!
//! Our record (candidates and NAT facts) goes two ways when it changes: to
//! the DHT through the rendezvous actor, and to connected peers through the
//! core ([`Discovery::take_push`] → `Node::push_record`), so they need not
//! wait for their next lookup. Peers' records come back the same two ways
//! ([`Discovery::on_found`], [`Discovery::on_peer_record`]); the newer one
//! by the publisher's timestamp wins, since a lookup can return a record
//! older than the one the peer pushed.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::config::Config;
use crate::core::{Event, Node, PeerId, PeerRecord, Via};
use crate::discovery::cache::PeerCache;
use crate::discovery::dht::DhtSettings;
use crate::discovery::rendezvous::{self, Found, Rendezvous};
use crate::discovery::{Candidate, CandidateKind, Source};
use crate::identity::PublicKey;
use crate::nat::{NatBehaviour, ifaddrs};
use crate::wire::RecordBody;

/// Re-check our own addresses this often (a moved laptop republishes).
pub const TICK: Duration = Duration::from_secs(5);
/// Look up a peer with no session at most this often. Two peers behind NATs
/// punch through when both send at about the same time; each side starts
/// sending when its lookup finds the other, so this bounds the wait.
const LOOKUP_UNCONNECTED: Duration = Duration::from_secs(5);
/// Refresh a connected peer's candidates this often.
const LOOKUP_CONNECTED: Duration = Duration::from_secs(600);

/// A session younger than the reject time: a working path to `id`.
pub fn has_session(node: &Node, id: PeerId, now: Instant) -> bool {
    node.peer_status(id).is_some_and(|s| {
        s.connected
            && s.last_handshake.is_some_and(|t| {
                now.saturating_duration_since(t)
                    < crate::core::scaled(crate::core::REJECT_AFTER_TIME)
            })
    })
}

/// Per peer: what we know of its addresses.
#[derive(Debug, Clone, Default)]
pub struct PeerMeta {
    pub public_key: Option<PublicKey>,
    pub static_endpoint: Option<SocketAddr>,
    /// Latest candidates from discovery (DHT or cache).
    pub discovered: Vec<SocketAddr>,
    /// The same from the DHT, with what the peer says each one is.
    pub kinds: Vec<Candidate>,
    /// Where the current candidates came from, and when (unix seconds).
    pub source: Option<(Source, u64)>,
    /// How the peer's NAT maps its socket, as its record says (for choosing
    /// a hard-NAT traversal strategy).
    pub nat: Option<NatBehaviour>,
    /// Keys of the relays the peer's record lists (ours or not).
    pub relays: Vec<[u8; 32]>,
    /// When the peer wrote the record `discovered` came from (unix seconds,
    /// the peer's clock): an older record does not replace it.
    record_timestamp: Option<u64>,
    last_lookup: Option<Instant>,
}

pub struct Discovery {
    rendezvous: Option<Rendezvous>,
    pub peers: Vec<PeerMeta>,
    cache: PeerCache,
    state_dir: PathBuf,
    interface: String,
    listen_port: u16,
    local: Vec<Candidate>,
    /// Our address as STUN servers see it (when the mapping makes it useful).
    reflexive: Vec<Candidate>,
    /// The address our router forwards to us (PCP, NAT-PMP or UPnP).
    mapped: Option<Candidate>,
    /// How our NAT maps the data socket (from STUN).
    nat: Option<NatBehaviour>,
    /// What the record last carried: candidates, NAT facts, relays.
    published: (Vec<Candidate>, Option<NatBehaviour>, Vec<[u8; 32]>),
    /// Our changed record, waiting for the shell to hand it to the core.
    push: Option<RecordBody>,
    network: Option<String>,
    published_seq: Option<i64>,
    /// Keys of the members we may be reached through (`[relay] via`).
    relays: Vec<[u8; 32]>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Discovery {
    /// Set up discovery; returns the receiver of rendezvous results when the
    /// DHT is enabled.
    pub fn new(
        cfg: &Config,
        static_endpoints: &[Option<SocketAddr>],
        listen_port: u16,
    ) -> (Self, Option<tokio::sync::mpsc::UnboundedReceiver<Found>>) {
        let state_dir = cfg.discovery.state_dir.clone();
        let relays: Vec<[u8; 32]> = cfg
            .via_peers()
            .map(|(_, p)| *p.public_key.as_bytes())
            .collect();
        let cache = PeerCache::load(&state_dir).unwrap_or_else(|e| {
            warn!(error = %e, "starting with an empty candidate cache");
            PeerCache::default()
        });
        let (rendezvous, found) = match (&cfg.discovery.dht, &cfg.network.id) {
            (true, Some(id)) => {
                let settings = rendezvous::Settings {
                    identity: cfg.interface.private_key.clone(),
                    network_id: id.clone(),
                    secret: cfg.network.secret.clone(),
                    dht: DhtSettings {
                        bind: None,
                        port: cfg.discovery.dht_port,
                        bootstrap: cfg.discovery.bootstrap.clone(),
                        server: cfg.discovery.dht_server,
                        mark: true,
                    },
                    state_dir: state_dir.clone(),
                };
                let (handle, rx) = Rendezvous::spawn(settings);
                (Some(handle), Some(rx))
            }
            _ => (None, None),
        };
        let peers = cfg
            .peers
            .iter()
            .zip(static_endpoints)
            .map(|(p, ep)| PeerMeta {
                public_key: Some(p.public_key),
                static_endpoint: *ep,
                source: ep.map(|_| (Source::Static, unix_now())),
                ..PeerMeta::default()
            })
            .collect();
        let d = Self {
            rendezvous,
            peers,
            cache,
            state_dir,
            interface: cfg.interface.name.clone(),
            listen_port,
            local: Vec::new(),
            reflexive: Vec::new(),
            mapped: None,
            nat: None,
            published: (Vec::new(), None, Vec::new()),
            push: None,
            network: cfg.network.id.clone().filter(|_| cfg.discovery.dht),
            published_seq: None,
            relays,
        };
        (d, found)
    }

    /// At start: hand the cached candidates to the core.
    pub fn start(&mut self, node: &mut Node, now: Instant) {
        for i in 0..self.peers.len() {
            self.use_cache(node, now, PeerId(i));
        }
        let _ = self.tick(node, now);
    }

    /// The cached candidates of `id`, if any, to the core.
    fn use_cache(&mut self, node: &mut Node, now: Instant, id: PeerId) {
        let Some(meta) = self.peers.get_mut(id.0) else {
            return;
        };
        let Some(cached) = meta.public_key.and_then(|key| self.cache.get(&key)) else {
            return;
        };
        let cached = cached.candidates.clone();
        debug!(peer = %node.peer_name(id), n = cached.len(), "using cached candidates");
        meta.discovered = cached;
        meta.source = Some((Source::Cache, unix_now()));
        self.feed(node, now, id);
    }

    /// A peer a reload added, at core id `id`: known as the config's peers
    /// are at start (the core has its static endpoint; its cached
    /// candidates go to the core now), and looked up at the next tick.
    pub fn add_peer(
        &mut self,
        node: &mut Node,
        now: Instant,
        id: PeerId,
        key: PublicKey,
        static_endpoint: Option<SocketAddr>,
    ) {
        if self.peers.len() <= id.0 {
            self.peers.resize_with(id.0 + 1, PeerMeta::default);
        }
        self.peers[id.0] = PeerMeta {
            public_key: Some(key),
            static_endpoint,
            source: static_endpoint.map(|_| (Source::Static, unix_now())),
            ..PeerMeta::default()
        };
        self.use_cache(node, now, id);
    }

    /// A peer a reload removed: what we knew of it goes (it is never looked
    /// up again), its cache entry too.
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(meta) = self.peers.get_mut(id.0) else {
            return;
        };
        let key = meta.public_key.take();
        *meta = PeerMeta::default();
        if let Some(key) = key
            && self.cache.forget(&key)
            && let Err(e) = self.cache.save(&self.state_dir)
        {
            warn!(error = %e, "cannot save the candidate cache");
        }
    }

    /// The peer's static endpoint is `addr` now: a named endpoint resolved
    /// (again), or a reload changed it (`None`: it has none, or a name
    /// not resolved yet). The candidates the core tries change with it.
    pub fn set_static_endpoint(
        &mut self,
        node: &mut Node,
        now: Instant,
        id: PeerId,
        addr: Option<SocketAddr>,
    ) {
        let Some(meta) = self.peers.get_mut(id.0) else {
            return;
        };
        if meta.static_endpoint == addr {
            return;
        }
        meta.static_endpoint = addr;
        if meta.source.is_none() && addr.is_some() {
            meta.source = Some((Source::Static, unix_now()));
        }
        self.feed(node, now, id);
    }

    /// Our `[relay] via` changed (a reload): the record says so at once.
    pub fn set_relays(&mut self, relays: Vec<[u8; 32]>) {
        if relays != self.relays {
            self.relays = relays;
            self.republish();
        }
    }

    /// Give the core the union of the static endpoint and what discovery found.
    fn feed(&self, node: &mut Node, now: Instant, id: PeerId) {
        let meta = &self.peers[id.0];
        let addrs: Vec<SocketAddr> = meta
            .static_endpoint
            .iter()
            .chain(meta.discovered.iter())
            .copied()
            .collect();
        node.handle_candidates(now, id, &addrs);
    }

    /// Periodic work: republish when our addresses changed, look up peers.
    /// Returns true when our LAN addresses changed.
    pub fn tick(&mut self, node: &Node, now: Instant) -> bool {
        let local: Vec<Candidate> = ifaddrs::local_ipv4(&self.interface)
            .into_iter()
            .map(|ip| Candidate {
                kind: CandidateKind::Local,
                addr: SocketAddr::V4(SocketAddrV4::new(ip, self.listen_port)),
            })
            .collect();
        let changed = local != self.local;
        if changed {
            info!(candidates = ?local.iter().map(|c| c.addr).collect::<Vec<_>>(), "local addresses changed");
            self.local = local;
            self.republish();
        }
        for i in 0..self.peers.len() {
            let connected = has_session(node, PeerId(i), now);
            let every = if connected {
                LOOKUP_CONNECTED
            } else {
                LOOKUP_UNCONNECTED
            };
            if self.peers[i]
                .last_lookup
                .is_none_or(|t| now.saturating_duration_since(t) >= every)
            {
                self.lookup(now, PeerId(i));
            }
        }
        changed
    }

    /// Our LAN addresses with the data socket's port.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.iter().map(|c| c.addr).collect()
    }

    /// New STUN results.
    pub fn set_reflexive(&mut self, reflexive: Vec<SocketAddr>) {
        self.reflexive = reflexive
            .into_iter()
            .map(|addr| Candidate {
                kind: CandidateKind::Reflexive,
                addr,
            })
            .collect();
        self.republish();
    }

    /// A port mapping appeared, changed or went away.
    pub fn set_mapped(&mut self, mapped: Option<SocketAddr>) {
        self.mapped = mapped.map(|addr| Candidate {
            kind: CandidateKind::Mapped,
            addr,
        });
        self.republish();
    }

    /// New NAT facts from STUN (`None`: not measured). Republishes when
    /// they changed.
    pub fn set_nat(&mut self, nat: Option<NatBehaviour>) {
        if nat != self.nat {
            self.nat = nat;
            self.republish();
        }
    }

    /// Publish our candidates, NAT facts and relays if they differ from
    /// what the record carries. Candidates go mapped first (it needs no punching),
    /// then reflexive, then LAN.
    fn republish(&mut self) {
        let mut all: Vec<Candidate> = Vec::new();
        for c in self.mapped.iter().chain(&self.reflexive).chain(&self.local) {
            if !all.iter().any(|x| x.addr == c.addr) {
                all.push(*c);
            }
        }
        let record = (all, self.nat, self.relays.clone());
        if record == self.published {
            return;
        }
        self.published = record.clone();
        let (candidates, nat, relays) = record;
        // Connected peers hear it at once, with or without the DHT.
        self.push = Some(RecordBody {
            timestamp: unix_now(),
            candidates: candidates.clone(),
            relays: relays.clone(),
            nat,
        });
        if let Some(r) = &self.rendezvous {
            r.publish(candidates, nat, relays);
        }
    }

    /// Our record, if it changed since the last call: the shell hands it to
    /// `Node::push_record` (this type has no access to the node when our
    /// addresses change).
    pub fn take_push(&mut self) -> Option<RecordBody> {
        self.push.take()
    }

    /// Why the path to a peer is what it is, in words for `kith status`.
    pub fn path_reason(&self, id: PeerId, endpoint: Option<SocketAddr>, connected: bool) -> String {
        let Some(meta) = self.peers.get(id.0) else {
            return String::new();
        };
        if !connected {
            return if meta.static_endpoint.is_none() && meta.discovered.is_empty() {
                if self.rendezvous.is_some() {
                    "no path: no address known yet (waiting for the DHT)".to_string()
                } else {
                    // Nothing will look the peer up: only its own packets
                    // (or a name that starts resolving) give us a path.
                    "no path: no address known (the DHT is off and no endpoint answered; \
                     waiting for the peer to reach us)"
                        .to_string()
                }
            } else {
                "no path: none of the candidates answered yet".to_string()
            };
        }
        let Some(ep) = endpoint else {
            return "direct".to_string();
        };
        if meta.static_endpoint == Some(ep) {
            return "direct to the configured endpoint".to_string();
        }
        match meta.kinds.iter().find(|c| c.addr == ep).map(|c| c.kind) {
            Some(CandidateKind::Local) => "direct over the LAN".to_string(),
            Some(CandidateKind::Reflexive) => "direct through the NATs (hole punched)".to_string(),
            Some(CandidateKind::Mapped) => "direct via the peer's router port mapping".to_string(),
            // We may never have looked the peer up (it found us first):
            // an address on one of our own subnets is still the LAN.
            None if self.on_our_lan(ep) => "direct over the LAN".to_string(),
            None => "direct (to where the peer's packets come from)".to_string(),
        }
    }

    /// A private address in the same /24 as one of our LAN addresses.
    fn on_our_lan(&self, addr: SocketAddr) -> bool {
        let SocketAddr::V4(v4) = addr else {
            return false;
        };
        v4.ip().is_private()
            && self.local.iter().any(|c| match c.addr {
                SocketAddr::V4(ours) => ours.ip().octets()[..3] == v4.ip().octets()[..3],
                SocketAddr::V6(_) => false,
            })
    }

    fn lookup(&mut self, now: Instant, id: PeerId) {
        let (Some(r), Some(meta)) = (&self.rendezvous, self.peers.get_mut(id.0)) else {
            return;
        };
        if let Some(key) = meta.public_key {
            meta.last_lookup = Some(now);
            r.resolve(key);
        }
    }

    /// A result from the rendezvous actor.
    pub fn on_found(&mut self, node: &mut Node, now: Instant, found: Found) {
        match found {
            Found::Candidates { peer, body, seq } => {
                let Some(i) = self.peers.iter().position(|m| m.public_key == Some(peer)) else {
                    return;
                };
                let id = PeerId(i);
                debug!(peer = %node.peer_name(id), seq, candidates = ?body.candidates, "DHT record resolved");
                if !self.accept(node, now, id, Source::Dht, body) {
                    debug!(peer = %node.peer_name(id), seq, "DHT record older than the one the peer pushed; keeping that");
                }
                // Fed even when unchanged: for a peer without a session each
                // lookup is the next attempt to punch through.
                self.feed(node, now, id);
            }
            Found::Published { seq, .. } => {
                // Our first record is out: look up every peer without a
                // session again now, rather than at the next tick. A peer
                // that published before us is found at once, and its NAT
                // sees our packets seconds earlier.
                if self.published_seq.replace(seq).is_none() {
                    for i in 0..self.peers.len() {
                        if !has_session(node, PeerId(i), now) {
                            self.lookup(now, PeerId(i));
                        }
                    }
                }
            }
        }
    }

    /// A record a connected peer pushed to us, or one a mutual peer passed
    /// on in an introduction: its candidates go to the core at once when
    /// they changed (an unchanged one comes with every rekey and is not fed
    /// again, which would restart path probing), and always when introduced
    /// (the peer is initiating now, so we must too, even to addresses we
    /// already tried).
    pub fn on_peer_record(&mut self, node: &mut Node, now: Instant, record: PeerRecord) {
        let id = record.peer;
        let Some(meta) = self.peers.get(id.0) else {
            return;
        };
        let changed = meta.kinds != record.body.candidates || meta.nat != record.body.nat;
        if !self.accept(node, now, id, Source::Peer, record.body) {
            debug!(peer = %node.peer_name(id), "pushed record older than the one we hold; ignored");
            return;
        }
        if let Some(hop) = record.introduced_by {
            info!(peer = %node.peer_name(id), through = %node.peer_name(hop), "introduced: connecting now");
        }
        if changed || record.introduced_by.is_some() {
            self.feed(node, now, id);
        }
    }

    /// Take `body` as peer `id`'s record unless the one we hold was written
    /// later (by the peer's clock); false when it was not taken. The relays
    /// it lists go to the core at once (they cost nothing to keep current).
    fn accept(
        &mut self,
        node: &mut Node,
        now: Instant,
        id: PeerId,
        source: Source,
        body: RecordBody,
    ) -> bool {
        let Some(meta) = self.peers.get_mut(id.0) else {
            return false;
        };
        if meta.record_timestamp.is_some_and(|t| t > body.timestamp) {
            return false;
        }
        let addrs: Vec<SocketAddr> = body.candidates.iter().map(|c| c.addr).collect();
        if addrs != meta.discovered {
            let peer = node.peer_name(id);
            match source {
                Source::Peer => {
                    info!(peer = %peer, candidates = ?addrs, "new candidates from the peer")
                }
                _ => info!(peer = %peer, candidates = ?addrs, "new candidates from the DHT"),
            }
        }
        node.handle_peer_relays(now, id, &body.relays);
        meta.relays = body.relays;
        meta.discovered = addrs;
        meta.kinds = body.candidates;
        meta.nat = body.nat;
        meta.record_timestamp = Some(body.timestamp);
        meta.source = Some((source, unix_now()));
        true
    }

    /// React to core events: look peers up, remember what worked.
    pub fn on_event(&mut self, node: &Node, now: Instant, event: &Event) {
        match *event {
            Event::NeedCandidates { peer } => {
                let recent = self
                    .peers
                    .get(peer.0)
                    .and_then(|m| m.last_lookup)
                    .is_some_and(|t| now.saturating_duration_since(t) < TICK);
                if !recent {
                    self.lookup(now, peer);
                }
            }
            Event::Connected {
                peer,
                via: Via::Direct(endpoint),
            }
            | Event::DirectAgain { peer, endpoint }
            | Event::EndpointChanged {
                peer, to: endpoint, ..
            } => {
                self.remember(node, peer, endpoint);
            }
            _ => {}
        }
    }

    /// Cache the address that works first, then the other candidates.
    fn remember(&mut self, node: &Node, id: PeerId, working: SocketAddr) {
        // A member's TCP connection to us has an address of its own that
        // means nothing after it closes.
        if super::tcp::is_stream_addr(working) {
            return;
        }
        let Some(meta) = self.peers.get(id.0) else {
            return;
        };
        let Some(key) = meta.public_key else { return };
        let mut addrs = vec![working];
        addrs.extend(meta.discovered.iter().filter(|a| **a != working));
        if self.cache.remember(&key, addrs, unix_now())
            && let Err(e) = self.cache.save(&self.state_dir)
        {
            warn!(peer = %node.peer_name(id), error = %e, "cannot save the candidate cache");
        }
    }
}

impl Discovery {
    /// The DHT part of `kith status`.
    pub fn dht_status(&self) -> Option<super::control::DhtStatus> {
        Some(super::control::DhtStatus {
            network: self.network.clone()?,
            published_seq: self.published_seq,
            local_candidates: self.local.iter().map(|c| c.addr.to_string()).collect(),
        })
    }

    /// Where a peer's candidates came from, and how long ago.
    pub fn source(&self, id: PeerId) -> Option<(Source, u64)> {
        let (source, at) = self.peers.get(id.0)?.source?;
        Some((source, unix_now().saturating_sub(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{NodeConfig, PeerConfig};
    use crate::identity::SecretKey;
    use crate::nat::MappingBehaviour;

    /// A node with one peer ("b", no endpoint) and no DHT, and its discovery.
    fn setup(name: &str) -> (Discovery, Node, Instant) {
        let dir = std::env::temp_dir().join(format!("kith-discover-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let me = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]).public();
        let text = format!(
            "[interface]\naddress = \"100.96.0.1/16\"\nprivate_key = \"{}\"\n\
             [discovery]\ndht = false\nstate_dir = \"{}\"\n\
             [[peer]]\nname = \"b\"\npublic_key = \"{b}\"\nallowed_ips = [\"100.96.0.2/32\"]\n",
            me.to_base64(),
            dir.display()
        );
        let cfg = crate::config::parse(std::path::Path::new("test.toml"), &text).unwrap();
        let (discovery, found) = Discovery::new(&cfg, &[None], 51871);
        assert!(found.is_none(), "no DHT in this test");
        let now = Instant::now();
        let node = Node::new(
            NodeConfig {
                secret: me,
                psk: Default::default(),
                peers: vec![PeerConfig {
                    name: "b".into(),
                    public_key: b,
                    allowed_ips: vec!["100.96.0.2/32".parse().unwrap()],
                    endpoint: None,
                    keepalive: None,
                }],
                relay: Default::default(),
            },
            now,
            Duration::from_secs(1_800_000_000),
            [7; 32],
        );
        (discovery, node, now)
    }

    fn body(timestamp: u64, addr: &str) -> RecordBody {
        RecordBody {
            timestamp,
            candidates: vec![Candidate {
                kind: CandidateKind::Reflexive,
                addr: addr.parse().unwrap(),
            }],
            relays: Vec::new(),
            nat: Some(NatBehaviour {
                mapping: MappingBehaviour::EndpointDependent,
                port_preserving: false,
                sequential: Some(1),
                public: Some(addr.parse().unwrap()),
            }),
        }
    }

    fn found(timestamp: u64, addr: &str) -> Found {
        let b = body(timestamp, addr);
        Found::Candidates {
            peer: SecretKey::from_seed([2; 32]).public(),
            body: b,
            seq: 1,
        }
    }

    fn candidates(node: &Node) -> Vec<SocketAddr> {
        node.peer_status(PeerId(0)).unwrap().candidates
    }

    #[test]
    fn pushed_record_is_taken_and_fed_and_an_older_one_is_not() {
        let (mut d, mut node, now) = setup("push");
        let b = PeerId(0);
        let pushed = body(200, "203.0.113.7:40001");
        d.on_peer_record(
            &mut node,
            now,
            PeerRecord {
                peer: b,
                body: pushed.clone(),
                introduced_by: None,
            },
        );
        assert_eq!(d.peers[0].discovered, vec![pushed.candidates[0].addr]);
        assert_eq!(d.peers[0].kinds, pushed.candidates);
        assert_eq!(d.peers[b.0].nat, pushed.nat);
        assert_eq!(d.source(b).map(|(s, _)| s), Some(Source::Peer));
        assert_eq!(candidates(&node), vec![pushed.candidates[0].addr]);
        // An older push (reordered) and an older DHT record change nothing.
        let older = body(100, "198.51.100.9:1000");
        d.on_peer_record(
            &mut node,
            now,
            PeerRecord {
                peer: b,
                body: older,
                introduced_by: None,
            },
        );
        d.on_found(&mut node, now, found(150, "198.51.100.9:1000"));
        assert_eq!(d.peers[0].discovered, vec![pushed.candidates[0].addr]);
        assert_eq!(d.source(b).map(|(s, _)| s), Some(Source::Peer));
        assert_eq!(candidates(&node), vec![pushed.candidates[0].addr]);
        // A newer DHT record wins.
        d.on_found(&mut node, now, found(300, "198.51.100.9:2000"));
        assert_eq!(d.source(b).map(|(s, _)| s), Some(Source::Dht));
        assert_eq!(
            candidates(&node),
            vec!["198.51.100.9:2000".parse().unwrap()]
        );
    }

    #[test]
    fn an_introduced_record_is_fed_even_when_unchanged() {
        let (mut d, mut node, now) = setup("intro");
        let b = PeerId(0);
        let pushed = body(200, "203.0.113.7:40001");
        let record = |introduced_by| PeerRecord {
            peer: b,
            body: pushed.clone(),
            introduced_by,
        };
        d.on_peer_record(&mut node, now, record(None));
        let drain = |node: &mut Node| std::iter::from_fn(|| node.poll_transmit()).count();
        assert!(drain(&mut node) > 0, "the first record starts a handshake");
        d.on_peer_record(&mut node, now, record(None));
        assert_eq!(
            drain(&mut node),
            0,
            "the same record pushed again is not fed"
        );
        d.on_peer_record(&mut node, now, record(Some(PeerId(0))));
        let sent: Vec<_> = std::iter::from_fn(|| node.poll_transmit()).collect();
        assert!(
            sent.iter().any(|t| t.dst == pushed.candidates[0].addr),
            "introduced: a handshake to its candidates now"
        );
        // An older record stays refused, introduced or not (a replay).
        d.on_peer_record(
            &mut node,
            now,
            PeerRecord {
                peer: b,
                body: body(100, "198.51.100.9:1000"),
                introduced_by: Some(PeerId(0)),
            },
        );
        assert_eq!(drain(&mut node), 0);
        assert_eq!(candidates(&node), vec![pushed.candidates[0].addr]);
    }

    #[test]
    fn changes_are_pushed_once_with_candidates_and_nat() {
        let (mut d, _node, _now) = setup("take");
        assert_eq!(d.take_push(), None);
        d.set_reflexive(vec!["203.0.113.7:40001".parse().unwrap()]);
        let first = d.take_push().expect("new candidates are pushed");
        assert_eq!(first.candidates.len(), 1);
        assert_eq!(first.nat, None);
        assert_eq!(d.take_push(), None, "taken once");
        // The same candidates again: nothing to push.
        d.set_reflexive(vec!["203.0.113.7:40001".parse().unwrap()]);
        assert_eq!(d.take_push(), None);
        // New NAT facts alone are a change.
        let nat = body(0, "203.0.113.7:40001").nat;
        d.set_nat(nat);
        let second = d.take_push().expect("new NAT facts are pushed");
        assert_eq!(second.candidates, first.candidates);
        assert_eq!(second.nat, nat);
        d.set_nat(nat);
        assert_eq!(d.take_push(), None);
    }

    #[test]
    fn with_the_dht_off_status_never_says_it_waits_for_the_dht() {
        let (d, _node, _) = setup("dht-off");
        let why = d.path_reason(PeerId(0), None, false);
        assert!(!why.contains("waiting for the DHT"), "{why}");
        assert!(why.contains("the DHT is off"), "{why}");
    }
}
