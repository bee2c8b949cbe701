//! [`Node`]: all protocol state of one kith node, driven by explicit time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use zeroize::Zeroizing;

use super::cookie::{Guard, Jar, Verdict};
use super::data::{Activity, DataUpdate, PeerView, TxView, relay_budget};
use super::intro;
use super::limiter::Source;
use super::noise::{self, TIMESTAMP_LEN};
use super::paths::Paths;
use super::routes::RouteTable;
use super::session::{SEAL_OVERHEAD, Session, SessionError};
use super::timers::*;
use crate::identity::{NetworkSecret, PublicKey, SecretKey};
use crate::relay::{Limits, RelayService, SharedService, TokenBucket};
use crate::wire::{
    self, DATA_HEADER_LEN, IpError, NOISE_INIT_LEN, NOISE_RESPONSE_LEN, Packet, RELAY_HEADER_LEN,
    RelayKind, WireError,
};

/// Packets held per peer while its handshake runs; the oldest is dropped first.
pub const MAX_QUEUED_PER_PEER: usize = 64;
/// Candidate addresses kept per peer (a DHT record carries at most this many).
pub const MAX_CANDIDATES: usize = 16;
/// Room the caller's output buffer needs beyond the inner packet: enough
/// for a relayed one (sealed end to end, framed, sealed again for the hop).
pub const OVERHEAD: usize = 2 * SEAL_OVERHEAD + RELAY_HEADER_LEN;

/// A peer of this node, stable for the node's life: the position in the
/// config at start, and the next free number for each peer a
/// [`Node::reconfigure`] adds. A removed peer's id is never reused, so an id
/// the shell still holds (a table, an event in flight) names nothing live
/// rather than another peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub name: String,
    pub public_key: PublicKey,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<SocketAddr>,
    pub keepalive: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub secret: SecretKey,
    /// Pre-shared key mixed into every handshake (psk2); zeros without a
    /// network secret, as in WireGuard.
    pub psk: crate::identity::NetworkSecret,
    pub peers: Vec<PeerConfig>,
    pub relay: RelayConfig,
}

/// `[relay]` as the core sees it.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Relay for other members, within these limits (`serve = true`).
    pub serve: Option<Limits>,
    /// Peers we may be reached through (`via`), by key (each one of
    /// `NodeConfig::peers`): published in our record, and tried for a peer
    /// whose own list we do not know yet.
    pub via: Vec<PublicKey>,
}

/// What [`Node::reconfigure`] did to the peer set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// The id of each entry of the new `NodeConfig::peers`, in its order:
    /// a kept peer (same public key) keeps its id, an added one gets a new one.
    pub ids: Vec<PeerId>,
    pub added: Vec<PeerId>,
    pub removed: Vec<PeerId>,
}

/// Why [`Node::reconfigure`] refused a config: what it would change cannot
/// be changed under live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    #[error(
        "the private key changed: it is this node's identity, which every peer's sessions are bound to"
    )]
    KeyChanged,
    #[error(
        "the network secret changed: it is mixed into every handshake, so no peer that still has the old one could rekey"
    )]
    PskChanged,
}

/// How a datagram travels: straight to an address, or through a member
/// that relays it (inside our session with that member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    Direct(SocketAddr),
    Relay(PeerId),
}

/// Why a peer is relayed, for `status` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCause {
    /// No direct address answered (yet); probing continues.
    NoDirectPath,
    /// The direct path stopped answering.
    DirectPathLost,
}

/// A frame is held back this long without an answer on the route before
/// the route is probed ...
pub const FAILOVER_QUIET: Duration = Duration::from_millis(1000);
/// ... and given up (moving to a relay, or another relay) when the probe
/// goes unanswered this long: a dead path is left within about 2 s.
pub const FAILOVER_PROBE: Duration = Duration::from_millis(1000);
/// A relayed peer probes its direct candidates at least this often, so a
/// path that opens is used within seconds.
pub const RELAYED_PROBE: Duration = Duration::from_secs(2);
/// Keepalive towards the relays we are reached through (`via`) when the
/// config sets none: under the 30 s UDP timeout of common NATs.
pub const VIA_KEEPALIVE: Duration = Duration::from_secs(25);

/// [`Node::ping`]s waiting for their pong at once; a new one beyond this
/// forgets the oldest (its answer, if it comes, is then ignored).
pub const MAX_USER_PINGS: usize = 64;

/// A pong answering [`Node::ping`]: it came back over `via`, `rtt` after
/// the ping left. Drained with [`Node::poll_ping_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingReply {
    pub peer: PeerId,
    /// The probe id [`Node::ping`] returned.
    pub probe: u64,
    pub via: Via,
    pub rtt: Duration,
}

/// Why [`Node::ping`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error("no such peer")]
    UnknownPeer,
    #[error("no session with the peer yet; a handshake is under way")]
    NoSession,
    #[error("no known address and no relay for the peer")]
    Unreachable,
}

/// A [`Node::ping`] waiting for its pong.
#[derive(Debug, Clone, Copy)]
struct UserPing {
    probe: u64,
    peer: PeerId,
    sent: Instant,
}

/// A datagram the shell should send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// Why a packet was dropped. Operators see these at debug level only:
/// none of them is worth a log line per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("not an IP packet: {0}")]
    NotIp(IpError),
    #[error("no peer's allowed_ips contains the destination")]
    NoRoute,
    #[error("peer has no known endpoint")]
    NoEndpoint,
    #[error("malformed datagram: {0}")]
    Malformed(WireError),
    #[error("handshake message with a bad mac1 (not addressed to us)")]
    BadMac,
    #[error("handshake rate limit for this source")]
    RateLimited,
    #[error("handshake failed to decrypt or verify")]
    HandshakeFailed,
    #[error("initiator's key is not a configured peer")]
    UnknownPeer,
    #[error("initiation timestamp not newer than the last one (replay)")]
    StaleInitiation,
    #[error("initiations from this peer arrive too fast")]
    InitiationFlood,
    #[error("no session with that receiver index")]
    UnknownIndex,
    #[error("session: {0}")]
    Session(SessionError),
    #[error("inner source address not in the peer's allowed_ips")]
    SourceNotAllowed,
    #[error("malformed control message: {0}")]
    Control(wire::ControlError),
    #[error("cookie reply that does not answer our pending initiation")]
    BadCookie,
    #[error("under load: initiation without a valid mac2, answered with a cookie")]
    UnderLoad,
    #[error("initiation already processed (a byte-identical replay)")]
    ReplayedInitiation,
    #[error("over the global handshake budget")]
    OverBudget,
    #[error("relay frame: {0}")]
    RelayFrame(wire::RelayError),
    #[error("relay: {0}")]
    Relay(crate::relay::Refusal),
    #[error("relayed packet does not belong to the peer the relay named")]
    RelayMismatch,
    #[error("no relay with a live session can carry it")]
    NoRelay,
    #[error("malformed introduction: {0}")]
    Introduction(wire::IntroductionError),
    #[error("introduction not signed by the member it names, for us")]
    BadIntroduction,
    #[error("introduction with an older record than the last one acted on (a replay)")]
    StaleIntroduction,
}

/// Result of [`Node::handle_tun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunOutcome {
    /// `out[..len]` is a data message for `dst`.
    Send {
        dst: SocketAddr,
        len: usize,
    },
    /// Held until a handshake completes (it may have started one).
    Queued,
    /// `out[..len]` is an IP packet for the TUN device: the data half's
    /// ICMP error telling the sender its packet is too big for the
    /// relayed path ([`DataTun::Reply`](super::DataTun::Reply)).
    Reply {
        len: usize,
    },
    Dropped(DropReason),
}

/// Result of [`Node::handle_udp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpOutcome {
    /// `out[..len]` is an inner IP packet for the TUN device.
    WriteTun {
        len: usize,
    },
    /// Consumed (handshake step, keepalive); replies, if any, are queued.
    Handled,
    /// A STUN message: not ours, hand it to the NAT module.
    Stun,
    /// We relay: `out[..len]` is a datagram for `dst` (another member).
    Forward {
        dst: SocketAddr,
        len: usize,
    },
    Dropped(DropReason),
}

/// Things an operator cares about, one per state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A first session with this peer (or the first after a disconnect),
    /// on a direct path or through a relay.
    Connected { peer: PeerId, via: Via },
    /// A connected peer's traffic now goes through `relay`.
    Relayed {
        peer: PeerId,
        relay: PeerId,
        cause: RelayCause,
    },
    /// A relayed peer is reached directly again.
    DirectAgain { peer: PeerId, endpoint: SocketAddr },
    /// A relayed peer moved to another relay (the first stopped answering).
    RelayChanged {
        peer: PeerId,
        from: PeerId,
        to: PeerId,
    },
    /// The peer's packets now come from a different address.
    EndpointChanged {
        peer: PeerId,
        from: SocketAddr,
        to: SocketAddr,
    },
    /// A handshake went unanswered for [`REKEY_ATTEMPT_TIME`].
    HandshakeGaveUp { peer: PeerId },
    /// Long silence: keys wiped.
    Disconnected { peer: PeerId },
    /// No known address answers (or there is none): discovery should look
    /// the peer up and call [`Node::handle_candidates`].
    NeedCandidates { peer: PeerId },
}

/// A peer's record (candidates, NAT facts) that arrived on an authenticated
/// session: what it says about itself now, before the DHT has it. Drained
/// with [`Node::poll_peer_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub peer: PeerId,
    pub body: wire::RecordBody,
    /// It came in an introduction passed on by this mutual peer: the sender
    /// wants a handshake now, so its candidates are worth trying even when
    /// discovery already holds the same record.
    pub introduced_by: Option<PeerId>,
}

/// A snapshot for `status` and logs.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub candidates: Vec<SocketAddr>,
    pub connected: bool,
    pub last_handshake: Option<Instant>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub handshakes: u64,
    /// Set while traffic goes through a relay.
    pub relay: Option<(PeerId, RelayCause)>,
    /// Relays the peer says it is reachable through (our peers only).
    pub peer_relays: Vec<PeerId>,
    /// End-to-end bytes sent and received through relays, and packets we
    /// had to drop for want of a relay.
    pub relay_tx_bytes: u64,
    pub relay_rx_bytes: u64,
    pub relay_drops: u64,
}

/// What the handshake defences did (see `cookie.rs`), for `status` and
/// metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Initiations with a valid mac1 refused before any DH: replays,
    /// cookie-less under load, over a source's rate or the global budget.
    pub refused: u64,
    /// Cookie replies we sent (under load).
    pub cookies_sent: u64,
    /// Cookie replies from peers we accepted (they were under load).
    pub cookies_accepted: u64,
}

/// Where a route's failure detection stands (see [`FAILOVER_QUIET`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Failover {
    #[default]
    Quiet,
    Probing,
}

struct Pending {
    state: noise::Handshake,
    local_index: u32,
    /// First attempt of this round (for giving up).
    started: Instant,
    attempts: u32,
    /// The initiation as sent, for hard-NAT probes to extra addresses:
    /// its answer must match `local_index`, so no older copy will do.
    msg: Vec<u8>,
    /// Whether `msg` carries a mac2 keyed with a cookie.
    cookie_keyed: bool,
}

struct Peer {
    cfg: PeerConfig,
    x25519: [u8; 32],
    /// mac1 key for messages we send to this peer.
    mac1_key: [u8; 32],
    /// The cookie this peer last sent us (it is under load), for mac2.
    jar: Jar,
    /// The address we send to: the last one an authenticated packet came
    /// from, or the static endpoint until then.
    endpoint: Option<SocketAddr>,
    /// Other addresses to try with each handshake initiation.
    candidates: Vec<SocketAddr>,
    /// RTT and liveness of every known address, for choosing `endpoint`.
    paths: Paths,
    pending: Option<Pending>,
    /// Sending session.
    current: Option<Session>,
    /// Kept to decrypt packets still in flight after a rekey.
    previous: Option<Session>,
    /// Responder side, waiting for the initiator's first data packet
    /// (key confirmation) before we send on it.
    next: Option<Session>,
    last_timestamp: Option<[u8; TIMESTAMP_LEN]>,
    last_initiation: Option<Instant>,
    queue: VecDeque<Vec<u8>>,
    timers: TimerTable,
    connected: bool,
    last_handshake: Option<Instant>,
    rx_bytes: u64,
    tx_bytes: u64,
    handshakes: u64,
    /// Relays the peer lists (from its record), as our peers.
    relays: Vec<PeerId>,
    /// The relay we send through; `None` sends to `endpoint`.
    relay: Option<(PeerId, RelayCause)>,
    /// An authenticated packet arrived straight from the peer since the
    /// direct path last failed: until then a static or cached endpoint is
    /// only a guess, and an answer through a relay wins.
    direct_ok: bool,
    /// Relays that stopped answering for this peer; cleared when none is left.
    dead_relays: Vec<PeerId>,
    failover: Failover,
    /// Last authenticated packet on the route we send on.
    route_rx: Option<Instant>,
    relay_tx_bytes: u64,
    relay_rx_bytes: u64,
    relay_drops: u64,
    /// The probe id of the path pings hard-NAT probes carry while the peer
    /// is relayed (one for all the addresses an attempt sprays).
    hard_probe: Option<u64>,
    /// Our last introduction to this peer (see [`intro`]), and the last one
    /// from it we acted on, with its record.
    intro_sent: Option<Instant>,
    intro_heard: Option<(Instant, wire::RecordBody)>,
    /// What we pass on of this peer's introductions to others.
    intro_bucket: TokenBucket,
    /// When this side starts a rekey. Exactly one side of each pair rekeys
    /// early (the lower public key): if the side that initiated did, two
    /// simultaneous initiators would both count as responders and both
    /// rekey at once, forever doubling the handshakes.
    rekey_after: Duration,
    /// This side is the one that rekeys early (see `rekey_after`).
    rekeys_first: bool,
    /// A reconfigure removed it: a tombstone that keeps the ids after it
    /// (and any the shell still holds) valid. No keys, timers or routes,
    /// and in none of the lookup tables, so nothing reaches it.
    removed: bool,
}

impl Peer {
    /// A peer we have heard nothing from; `ours` is our X25519 public key.
    fn new(cfg: PeerConfig, ours: &[u8; 32]) -> Self {
        let x25519 = cfg.public_key.x25519();
        Self {
            x25519,
            mac1_key: noise::mac1_key(&x25519),
            jar: Jar::new(&x25519),
            endpoint: cfg.endpoint,
            candidates: Vec::new(),
            paths: Paths::default(),
            cfg,
            pending: None,
            current: None,
            previous: None,
            next: None,
            last_timestamp: None,
            last_initiation: None,
            queue: VecDeque::new(),
            timers: TimerTable::default(),
            connected: false,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            handshakes: 0,
            relays: Vec::new(),
            relay: None,
            direct_ok: false,
            dead_relays: Vec::new(),
            failover: Failover::Quiet,
            route_rx: None,
            relay_tx_bytes: 0,
            relay_rx_bytes: 0,
            relay_drops: 0,
            hard_probe: None,
            intro_sent: None,
            intro_heard: None,
            intro_bucket: TokenBucket::new(intro::INTRO_PASS_RATE),
            rekey_after: if ours < &x25519 {
                REKEY_AFTER_TIME
            } else {
                RESPONDER_REKEY_AFTER_TIME
            },
            rekeys_first: ours < &x25519,
            removed: false,
        }
    }

    /// Local indices of its sessions and of its handshake in flight.
    fn indices(&self) -> impl Iterator<Item = u32> + use<> {
        let sessions =
            [&self.current, &self.previous, &self.next].map(|s| s.as_ref().map(|s| s.local_index));
        let pending = self.pending.as_ref().map(|h| h.local_index);
        sessions.into_iter().chain([pending]).flatten()
    }

    /// Time exactly the endpoint and the candidates, keeping what is known
    /// of the ones that stay.
    fn track_paths(&mut self) {
        self.paths
            .set_addrs(self.endpoint.iter().chain(self.candidates.iter()).copied());
    }

    fn session_mut(&mut self, index: u32) -> Option<(&mut Session, Slot)> {
        if let Some(s) = self.current.as_mut().filter(|s| s.local_index == index) {
            return Some((s, Slot::Current));
        }
        if let Some(s) = self.next.as_mut().filter(|s| s.local_index == index) {
            return Some((s, Slot::Next));
        }
        if let Some(s) = self.previous.as_mut().filter(|s| s.local_index == index) {
            return Some((s, Slot::Previous));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Next,
    Previous,
}

/// The protocol engine. See the module docs for the flow.
pub struct Node {
    public_key: PublicKey,
    /// Signs our introductions.
    secret: SecretKey,
    /// The X25519 form of `secret`: our Noise static key.
    static_secret: Zeroizing<[u8; 32]>,
    psk: NetworkSecret,
    /// mac1 key for messages addressed to us.
    our_mac1_key: [u8; 32],
    peers: Vec<Peer>,
    by_x25519: HashMap<[u8; 32], PeerId>,
    /// Ed25519 public key → peer: how relay frames name members.
    by_key: HashMap<[u8; 32], PeerId>,
    by_index: HashMap<u32, PeerId>,
    routes: RouteTable,
    /// Padding stops here ([`Node::set_mtu`]).
    mtu: usize,
    /// Bumped by every change to `routes`, for the data half.
    routes_changed: u64,
    routes_published: u64,
    /// The views last published to the data half, by peer.
    published: Vec<PeerView>,
    /// The relay service last published to the data half.
    service_published: Option<SharedService>,
    /// Replays, cookies under load, per-source and global DH budgets.
    guard: Guard,
    /// The last handshake timestamp we sent: the next is always later.
    last_timestamp_sent: [u8; TIMESTAMP_LEN],
    handshake_stats: HandshakeStats,
    rng: StdRng,
    epoch: Instant,
    unix_at_epoch: Duration,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Records from peers, at most one per peer (the newest).
    peer_records: VecDeque<PeerRecord>,
    /// Our record as a control message, emitted once by
    /// [`Node::push_record`] and sent to every new session.
    record: Option<Vec<u8>>,
    /// The same record, for introductions.
    record_body: Option<wire::RecordBody>,
    /// A relay frame being built (sending, forwarding), allocated once.
    relay_buf: Vec<u8>,
    /// A delivered datagram being opened: apart from `relay_buf`, since
    /// opening it may send (a handshake response, a record) through a relay.
    relay_in: Vec<u8>,
    /// Relaying for others, when `[relay] serve = true`.
    service: Option<SharedService>,
    /// Our `[relay] via`.
    via: Vec<PeerId>,
    /// Pings the operator asked for (`kith ping`), oldest first, and the
    /// answers that came back, for [`Node::poll_ping_reply`].
    user_pings: VecDeque<UserPing>,
    ping_replies: VecDeque<PingReply>,
}

impl Node {
    /// `unix_now` is the wall clock at `now` (for handshake timestamps);
    /// `seed` feeds every random choice the node makes.
    pub fn new(cfg: NodeConfig, now: Instant, unix_now: Duration, seed: [u8; 32]) -> Self {
        let our_public = cfg.secret.public().x25519();
        let mut node = Self {
            public_key: cfg.secret.public(),
            secret: cfg.secret.clone(),
            static_secret: cfg.secret.x25519(),
            psk: cfg.psk,
            our_mac1_key: noise::mac1_key(&our_public),
            peers: Vec::with_capacity(cfg.peers.len()),
            by_x25519: HashMap::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            routes: RouteTable::default(),
            mtu: usize::MAX,
            routes_changed: 1,
            routes_published: 0,
            published: Vec::new(),
            service_published: None,
            guard: Guard::new(&our_public, now),
            last_timestamp_sent: [0; TIMESTAMP_LEN],
            handshake_stats: HandshakeStats::default(),
            rng: StdRng::from_seed(seed),
            epoch: now,
            unix_at_epoch: unix_now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            peer_records: VecDeque::new(),
            record: None,
            record_body: None,
            relay_buf: vec![0u8; wire::MAX_DATAGRAM + OVERHEAD],
            relay_in: vec![0u8; wire::MAX_DATAGRAM + OVERHEAD],
            service: None,
            via: Vec::new(),
            user_pings: VecDeque::new(),
            ping_replies: VecDeque::new(),
        };
        for p in cfg.peers {
            node.add_peer(p);
        }
        node.set_relay_config(&cfg.relay);
        node.rebuild_routes();
        node
    }

    /// A new peer at the next free id, in every lookup table but the
    /// routes (see [`rebuild_routes`](Self::rebuild_routes)).
    fn add_peer(&mut self, cfg: PeerConfig) -> PeerId {
        let id = PeerId(self.peers.len());
        let ours = self.public_key.x25519();
        let peer = Peer::new(cfg, &ours);
        self.by_x25519.insert(peer.x25519, id);
        self.by_key.insert(*peer.cfg.public_key.as_bytes(), id);
        self.peers.push(peer);
        id
    }

    /// `[relay]`: our relays by id, the service on or off (its counters
    /// kept across a change of limits), and the keepalive towards relays.
    fn set_relay_config(&mut self, relay: &RelayConfig) {
        self.via = relay
            .via
            .iter()
            .filter_map(|k| self.by_key.get(k.as_bytes()).copied())
            .collect();
        let members = self.peers.len();
        self.service = match (relay.serve, self.service.take()) {
            (None, _) => None,
            (Some(limits), Some(s)) => {
                s.lock().reconfigure(limits, members);
                Some(s)
            }
            (Some(limits), None) => Some(SharedService::new(RelayService::new(limits, members))),
        };
        // Peers must find us through our relays at any time, so the
        // sessions with them (and the NAT mappings under those) stay up
        // whether or not we have traffic.
        for &id in &self.via {
            let p = &mut self.peers[id.0];
            if p.cfg.keepalive.is_none() {
                p.cfg.keepalive = Some(VIA_KEEPALIVE);
            }
        }
    }

    /// The route table from every live peer's `allowed_ips`.
    fn rebuild_routes(&mut self) {
        let mut routes = RouteTable::default();
        for id in self.peer_ids() {
            for net in &self.peers[id.0].cfg.allowed_ips {
                routes.insert(*net, id);
            }
        }
        self.routes = routes;
        self.routes_changed += 1;
    }

    /// The TUN device's MTU: no padded packet grows past it (a relay frame,
    /// already larger, is not padded at all).
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    /// Begin handshakes with every peer whose endpoint is known, so a mesh
    /// is up before the first packet needs it.
    pub fn start(&mut self, now: Instant) {
        for id in self.peer_ids() {
            self.start_peer(now, id);
        }
    }

    fn start_peer(&mut self, now: Instant, id: PeerId) {
        // Peers with no address yet make `initiate` ask for candidates.
        self.initiate(now, id);
        if let Some(k) = self.peers[id.0].cfg.keepalive {
            self.peers[id.0]
                .timers
                .set(Timer::PersistentKeepalive, now + k);
        }
    }

    /// Apply a new config to the running node (a reload). Peers are matched
    /// by public key: a kept peer keeps its sessions, paths and counters
    /// (not one packet is lost), and takes its new name, `allowed_ips`,
    /// endpoint and keepalive; a removed one is dropped with its sessions,
    /// routes and relay membership (its traffic is refused from now on); an
    /// added one gets a new id and starts its handshake as at start. `[relay]`
    /// applies too. Refused, changing nothing, when the key or the network
    /// secret differ: every session is bound to them.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        cfg: NodeConfig,
    ) -> Result<Reconfigured, ReconfigureError> {
        if cfg.secret.public() != self.public_key {
            return Err(ReconfigureError::KeyChanged);
        }
        if cfg.psk != self.psk {
            return Err(ReconfigureError::PskChanged);
        }
        let keep: HashSet<[u8; 32]> = cfg.peers.iter().map(|p| *p.public_key.as_bytes()).collect();
        let before: HashMap<PeerId, PeerConfig> = self
            .peer_ids()
            .map(|id| (id, self.peers[id.0].cfg.clone()))
            .collect();
        let mut done = Reconfigured::default();
        for (&id, pc) in &before {
            if !keep.contains(pc.public_key.as_bytes()) {
                self.remove_peer(now, id);
                done.removed.push(id);
            }
        }
        done.removed.sort();
        for pc in cfg.peers {
            let id = match self.by_key.get(pc.public_key.as_bytes()) {
                Some(&id) => {
                    self.peers[id.0].cfg = pc;
                    id
                }
                None => {
                    let id = self.add_peer(pc);
                    done.added.push(id);
                    id
                }
            };
            done.ids.push(id);
        }
        self.set_relay_config(&cfg.relay);
        self.rebuild_routes();
        for &id in &done.ids {
            match before.get(&id) {
                None => self.start_peer(now, id),
                Some(old) => self.peer_changed(now, id, old),
            }
        }
        Ok(done)
    }

    /// A kept peer's settings went from `old` to what it holds now.
    fn peer_changed(&mut self, now: Instant, id: PeerId, old: &PeerConfig) {
        let session = self.has_session(now, id);
        let p = &mut self.peers[id.0];
        if p.cfg.keepalive != old.keepalive {
            match p.cfg.keepalive {
                Some(k) => p.timers.set(Timer::PersistentKeepalive, now + k),
                None => p.timers.clear(Timer::PersistentKeepalive),
            }
        }
        // A live session says where the peer is better than the config:
        // the new endpoint joins the candidates (the shell feeds it) and
        // wins if it answers. Without one, the new endpoint is the one to try.
        if p.cfg.endpoint != old.endpoint && !session {
            if let Some(ep) = p.cfg.endpoint {
                p.endpoint = Some(ep);
                p.track_paths();
            }
            // The handshake in flight went to the old address: the same
            // copy to the new one now, rather than at its next retry.
            match p.pending.as_ref().map(|h| (h.msg.clone(), h.attempts + 1)) {
                Some((msg, attempt)) => self.send_initiation_direct(id, &msg, attempt),
                None => self.initiate(now, id),
            }
        }
    }

    /// Drop `id`: its sessions and handshake (their indices answer nothing
    /// any more), its keys in the lookup tables (a handshake from it is an
    /// unknown peer's), its waiting record, its relay membership, and every
    /// route of other peers through it. It stays as a tombstone.
    fn remove_peer(&mut self, now: Instant, id: PeerId) {
        let p = &mut self.peers[id.0];
        for index in p.indices() {
            self.by_index.remove(&index);
        }
        self.by_x25519.remove(&p.x25519);
        self.by_key.remove(p.cfg.public_key.as_bytes());
        let ours = self.public_key.x25519();
        let mut tombstone = Peer::new(p.cfg.clone(), &ours);
        tombstone.removed = true;
        *p = tombstone;
        self.peer_records.retain(|r| r.peer != id);
        if let Some(s) = &self.service {
            s.lock().forget(id.0);
        }
        self.via.retain(|r| *r != id);
        let mut rerouted = Vec::new();
        for q in self.peer_ids() {
            let p = &mut self.peers[q.0];
            p.relays.retain(|r| *r != id);
            p.dead_relays.retain(|r| *r != id);
            if let Some((r, cause)) = p.relay
                && r == id
            {
                rerouted.push((q, cause));
            }
        }
        for (q, cause) in rerouted {
            // Another relay if there is one (its sessions are gone, so it
            // is not among the options); else the direct paths, probed now.
            match self.relay_options(now, q).first() {
                Some(&r) => self.set_relay(now, q, r, cause),
                None => {
                    let p = &mut self.peers[q.0];
                    p.relay = None;
                    p.failover = Failover::Quiet;
                    p.timers.clear(Timer::PathFailover);
                    p.timers.set(Timer::PathProbe, now);
                }
            }
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The live peers (not removed by a reconfigure), by id.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + use<> {
        let live: Vec<PeerId> = (0..self.peers.len())
            .filter(|&i| !self.peers[i].removed)
            .map(PeerId)
            .collect();
        live.into_iter()
    }

    /// Is `id` a peer of the current config?
    fn is_live(&self, id: PeerId) -> bool {
        self.peers.get(id.0).is_some_and(|p| !p.removed)
    }

    pub fn peer_name(&self, id: PeerId) -> &str {
        self.peers.get(id.0).map_or("?", |p| p.cfg.name.as_str())
    }

    /// The prefixes routed to `id` (empty for an unknown or removed id).
    pub fn peer_allowed_ips(&self, id: PeerId) -> &[IpNet] {
        self.peers
            .get(id.0)
            .filter(|p| !p.removed)
            .map_or(&[], |p| p.cfg.allowed_ips.as_slice())
    }

    /// `None` for an unknown or removed id.
    pub fn peer_status(&self, id: PeerId) -> Option<PeerStatus> {
        let p = self.peers.get(id.0).filter(|p| !p.removed)?;
        Some(PeerStatus {
            name: p.cfg.name.clone(),
            public_key: p.cfg.public_key,
            endpoint: p.endpoint,
            candidates: p.candidates.clone(),
            connected: p.connected,
            last_handshake: p.last_handshake,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            handshakes: p.handshakes,
            relay: p.relay,
            peer_relays: p.relays.clone(),
            relay_tx_bytes: p.relay_tx_bytes,
            relay_rx_bytes: p.relay_rx_bytes,
            relay_drops: p.relay_drops,
        })
    }

    /// What we relay for others, when serving: a snapshot (the data half
    /// counts into the same service).
    pub fn relay_service(&self) -> Option<RelayService> {
        self.service.as_ref().map(|s| s.lock().clone())
    }

    /// The relays a peer says (in its record) it can be reached through,
    /// as Ed25519 keys; those that are not our peers cannot carry anything
    /// for us and are left out. A peer we cannot reach directly is then
    /// tried through them.
    pub fn handle_peer_relays(&mut self, now: Instant, id: PeerId, keys: &[[u8; 32]]) {
        let relays: Vec<PeerId> = keys
            .iter()
            .filter_map(|k| self.by_key.get(k).copied())
            .filter(|r| *r != id)
            .collect();
        let Some(p) = self.peers.get_mut(id.0).filter(|p| !p.removed) else {
            return;
        };
        if p.relays == relays {
            return;
        }
        p.relays = relays;
        let has_session = p.current.as_ref().is_some_and(|s| s.is_valid(now));
        if !has_session && p.pending.is_none() {
            self.initiate(now, id);
        }
    }

    /// Relays `id` can be reached through right now: the ones it lists (or,
    /// until we know its list, ours), that we reach directly on a live
    /// session, except the ones that just failed for it.
    fn relay_options(&self, now: Instant, id: PeerId) -> Vec<PeerId> {
        let p = &self.peers[id.0];
        let listed: &[PeerId] = if p.relays.is_empty() {
            &self.via
        } else {
            &p.relays
        };
        listed
            .iter()
            .copied()
            .filter(|r| *r != id && !p.dead_relays.contains(r) && self.hop_ok(now, *r))
            .collect()
    }

    fn has_session(&self, now: Instant, id: PeerId) -> bool {
        self.peers[id.0]
            .current
            .as_ref()
            .is_some_and(|s| s.is_valid(now))
    }

    /// Can `r` carry frames for us now: a live session on a direct path?
    fn hop_ok(&self, now: Instant, r: PeerId) -> bool {
        let h = &self.peers[r.0];
        h.relay.is_none()
            && h.endpoint.is_some()
            && h.current.as_ref().is_some_and(|s| s.is_valid(now))
    }

    /// Where traffic for `id` goes now.
    fn route(&self, id: PeerId) -> Option<Via> {
        let p = &self.peers[id.0];
        match p.relay {
            Some((r, _)) => Some(Via::Relay(r)),
            None => p.endpoint.map(Via::Direct),
        }
    }

    /// Might `id` be reached at all (an address, or a relay to try)?
    fn reachable(&self, now: Instant, id: PeerId) -> bool {
        let p = &self.peers[id.0];
        p.endpoint.is_some() || !p.candidates.is_empty() || !self.relay_options(now, id).is_empty()
    }

    /// Could `id`'s traffic go through a relay if its route fails? Checked
    /// per data packet, so only the config-level lists (no session lookups).
    fn may_relay(&self, id: PeerId) -> bool {
        let p = &self.peers[id.0];
        p.relay.is_some() || p.relays.iter().chain(&self.via).any(|r| *r != id)
    }

    /// The shell lost the way to `addr` (a TCP connection to it closed): a
    /// peer we send there moves to its best other live path now if it has
    /// one, and every path of it is probed again quickly (the first to
    /// answer takes over).
    pub fn handle_path_lost(&mut self, now: Instant, addr: SocketAddr) {
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.endpoint != Some(addr) {
                continue;
            }
            p.paths.mark_dead(addr);
            p.timers.set(Timer::PathProbe, now);
            if let Some(better) = p.paths.better_than(now, Some(addr)) {
                self.change_endpoint(PeerId(i), better);
            }
        }
    }

    /// Addresses a peer may be reachable at (from discovery, a cache or the
    /// config). Every handshake initiation goes to all of them at once; the
    /// first authenticated answer picks the path. Starts a handshake now if
    /// there is no usable session.
    pub fn handle_candidates(&mut self, now: Instant, id: PeerId, addrs: &[SocketAddr]) {
        let Some(p) = self.peers.get_mut(id.0).filter(|p| !p.removed) else {
            return;
        };
        p.candidates.clear();
        for a in addrs {
            if !p.candidates.contains(a) && p.candidates.len() < MAX_CANDIDATES {
                p.candidates.push(*a);
            }
        }
        p.track_paths();
        if p.current.as_ref().is_some_and(|s| s.is_valid(now)) {
            p.timers.set(Timer::PathProbe, now);
        } else if let Some(pending) = &p.pending {
            // The initiation in flight stays the one to answer: a fresh one
            // would orphan the answer already on its way (through a relay,
            // or from a candidate the peer punched to), and arrive too soon
            // after it to be accepted. The same copy goes to every address
            // now (an introduction means "punch now").
            let (msg, attempt) = (pending.msg.clone(), pending.attempts + 1);
            self.send_initiation_direct(id, &msg, attempt);
        } else {
            self.initiate(now, id);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A record a peer pushed to us (see [`PeerRecord`]). Apart from
    /// [`poll_event`](Self::poll_event): it is data for discovery, not a
    /// state change for the operator's log.
    pub fn poll_peer_record(&mut self) -> Option<PeerRecord> {
        self.peer_records.pop_front()
    }

    /// The answer to a [`ping`](Self::ping), once its pong arrived.
    pub fn poll_ping_reply(&mut self) -> Option<PingReply> {
        self.ping_replies.pop_front()
    }

    /// Send one path ping to `id` on the path its traffic takes now (its
    /// endpoint, or through its relay), for the operator (`kith ping`); its
    /// pong comes out of [`poll_ping_reply`](Self::poll_ping_reply) with
    /// the path it came back on and the round-trip time. Returns the probe
    /// id. Without a session nothing is sent: a handshake starts (if none
    /// runs), so a later ping can get through.
    pub fn ping(&mut self, now: Instant, id: PeerId) -> Result<u64, PingError> {
        // A reload's tombstone is no peer.
        if !self.is_live(id) {
            return Err(PingError::UnknownPeer);
        }
        if !self.has_session(now, id) {
            if !self.reachable(now, id) {
                return Err(PingError::Unreachable);
            }
            if self.peers[id.0].pending.is_none() {
                self.initiate(now, id);
            }
            return Err(PingError::NoSession);
        }
        let via = self.route(id).ok_or(PingError::Unreachable)?;
        let probe = self.rng.next_u64();
        let sealed = self
            .seal_control(now, id, &wire::Control::PathPing { id: probe })
            .ok_or(PingError::NoSession)?;
        self.send_via(now, id, via, &sealed);
        if self.user_pings.len() >= MAX_USER_PINGS {
            self.user_pings.pop_front();
        }
        self.user_pings.push_back(UserPing {
            probe,
            peer: id,
            sent: now,
        });
        Ok(probe)
    }

    /// Our record changed (new candidates or NAT facts): send it to every
    /// peer with a usable session now, and to each peer whenever a new
    /// session with it starts (every rekey: that also covers a peer that
    /// connects later, restarted, or lost the first copy). Refuses a body
    /// the DHT could not carry either (more than 959 bytes) or its codec
    /// cannot write; the previous record, if any, stays.
    pub fn push_record(
        &mut self,
        now: Instant,
        body: &wire::RecordBody,
    ) -> Result<(), wire::ControlError> {
        let mut msg = vec![0u8; wire::MAX_CONTROL_LEN];
        let len = wire::emit_control(&wire::Control::Record(body.clone()), &mut msg)?;
        msg.truncate(len);
        self.record = Some(msg);
        self.record_body = Some(body.clone());
        for id in self.peer_ids() {
            self.send_record(now, id);
            // An introduction already sent carries the old record (often
            // just the LAN address before STUN answered): the peer may be
            // punching towards the wrong place, so tell it again now.
            if !self.has_session(now, id) {
                self.peers[id.0].intro_sent = None;
                self.introduce(now, id);
            }
        }
        Ok(())
    }

    /// The earliest moment [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.iter().filter_map(|p| p.timers.next()).min()
    }

    // ---------------------------------------------------------------- send

    /// An IP packet read from the TUN device. On `Send`, `out[..len]` holds
    /// the data message; `out` must be at least `packet.len() + OVERHEAD`.
    pub fn handle_tun(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> TunOutcome {
        let (id, hdr, packet) = match self.routes.outbound(packet) {
            Ok(routed) => routed,
            Err(reason) => return TunOutcome::Dropped(reason),
        };
        if !self.reachable(now, id) {
            return TunOutcome::Dropped(DropReason::NoEndpoint);
        }
        // Too big for the relay, as the data half answers it (packets come
        // here for a relay reached over TCP or a pool socket, or before
        // the data half has the view).
        let budget = relay_budget(self.mtu);
        if matches!(self.route(id), Some(Via::Relay(_)))
            && packet.len() > budget
            && let Some(len) = wire::too_big(packet, &hdr, budget, out)
        {
            return TunOutcome::Reply { len };
        }
        match self.encrypt_to(now, id, packet, out) {
            Some(outcome) => outcome,
            None => {
                let p = &mut self.peers[id.0];
                if p.queue.len() >= MAX_QUEUED_PER_PEER {
                    p.queue.pop_front();
                }
                p.queue.push_back(packet.to_vec());
                if p.pending.is_none() {
                    self.initiate(now, id);
                }
                TunOutcome::Queued
            }
        }
    }

    /// Encrypt on the current session; `None` when there is none usable.
    fn encrypt_to(
        &mut self,
        now: Instant,
        id: PeerId,
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<TunOutcome> {
        let (dst, len) = match self.route(id)? {
            Via::Direct(dst) => match self.seal(now, id, payload, self.mtu, out)? {
                Ok(len) => (dst, len),
                Err(e) => return Some(TunOutcome::Dropped(DropReason::Session(e))),
            },
            Via::Relay(r) => {
                // Sealed end to end straight into the frame, then the frame
                // sealed for the hop: one copy fewer than framing a sealed packet.
                let mut frame = std::mem::take(&mut self.relay_buf);
                let limit = relay_budget(self.mtu);
                let sealed = self.seal(now, id, payload, limit, &mut frame[RELAY_HEADER_LEN..]);
                let hop = match sealed {
                    None => {
                        self.relay_buf = frame;
                        return None;
                    }
                    Some(Err(e)) => Err(DropReason::Session(e)),
                    Some(Ok(n)) => {
                        self.seal_frame(now, RelayKind::Forward, id, r, &mut frame, n, out)
                    }
                };
                self.relay_buf = frame;
                match hop {
                    Ok(sent) => sent,
                    Err(reason) => {
                        self.peers[id.0].relay_drops += 1;
                        return Some(TunOutcome::Dropped(reason));
                    }
                }
            }
        };
        let p = &self.peers[id.0];
        let rekey = p
            .current
            .as_ref()
            .is_some_and(|s| s.messages_sent() >= REKEY_AFTER_MESSAGES)
            || p.last_handshake
                .is_some_and(|t| now.saturating_duration_since(t) >= scaled(p.rekey_after));
        self.after_send(now, id, !payload.is_empty());
        if rekey && self.peers[id.0].pending.is_none() {
            self.initiate(now, id);
        }
        Some(TunOutcome::Send { dst, len })
    }

    /// Pad `payload` to a multiple of [`PAD_TO`] (never past `limit`) and
    /// encrypt it on the current session into a data message in `out`;
    /// `None` when there is no usable session. Counts the bytes sent.
    fn seal(
        &mut self,
        now: Instant,
        id: PeerId,
        payload: &[u8],
        limit: usize,
        out: &mut [u8],
    ) -> Option<Result<usize, SessionError>> {
        let p = &mut self.peers[id.0];
        let session = p.current.as_ref().filter(|s| s.is_valid(now))?;
        let counter = session.reserve(1);
        let sealed = session.seal_padded(now, counter, payload, limit, out);
        if let Ok(len) = sealed {
            p.tx_bytes += len as u64;
        }
        Some(sealed)
    }

    /// `frame[RELAY_HEADER_LEN..][..len]` is a datagram (or an introduction,
    /// by `kind`) for `to`: frame it and seal it on our session with `r`
    /// into `out`.
    #[allow(clippy::too_many_arguments)]
    fn seal_frame(
        &mut self,
        now: Instant,
        kind: RelayKind,
        to: PeerId,
        r: PeerId,
        frame: &mut [u8],
        len: usize,
        out: &mut [u8],
    ) -> Result<(SocketAddr, usize), DropReason> {
        if !self.hop_ok(now, r) {
            return Err(DropReason::NoRelay);
        }
        let dst = self.peers[r.0].endpoint.ok_or(DropReason::NoRelay)?;
        let key = *self.peers[to.0].cfg.public_key.as_bytes();
        let n = wire::emit_relay_header(kind, &key, len, frame).map_err(DropReason::RelayFrame)?;
        match self.seal(now, r, &frame[..n], self.mtu, out) {
            Some(Ok(sealed)) => {
                if kind == RelayKind::Forward {
                    self.peers[to.0].relay_tx_bytes += len as u64;
                }
                self.after_send(now, r, false);
                Ok((dst, sealed))
            }
            Some(Err(e)) => Err(DropReason::Session(e)),
            None => Err(DropReason::NoRelay),
        }
    }

    /// Queue `datagram` (a handshake message or a sealed data message for
    /// `to`) on `via`: as it is, or framed for a relay.
    fn send_via(&mut self, now: Instant, to: PeerId, via: Via, datagram: &[u8]) {
        match via {
            Via::Direct(dst) => self.transmits.push_back(Transmit {
                dst,
                payload: datagram.to_vec(),
            }),
            Via::Relay(r) => {
                if let Err(reason) = self.send_frame(now, RelayKind::Forward, to, r, datagram) {
                    tracing::debug!(peer = %self.peer_name(to), relay = %self.peer_name(r), %reason, "cannot relay");
                    self.peers[to.0].relay_drops += 1;
                }
            }
        }
    }

    /// Queue `payload` for `to` framed as `kind` on our session with `r`.
    fn send_frame(
        &mut self,
        now: Instant,
        kind: RelayKind,
        to: PeerId,
        r: PeerId,
        payload: &[u8],
    ) -> Result<(), DropReason> {
        let mut frame = std::mem::take(&mut self.relay_buf);
        let end = RELAY_HEADER_LEN + payload.len();
        let mut out = vec![0u8; end + SEAL_OVERHEAD];
        let sent = if end <= frame.len() {
            frame[RELAY_HEADER_LEN..end].copy_from_slice(payload);
            self.seal_frame(now, kind, to, r, &mut frame, payload.len(), &mut out)
        } else {
            Err(DropReason::NoRelay)
        };
        self.relay_buf = frame;
        let (dst, len) = sent?;
        out.truncate(len);
        self.transmits.push_back(Transmit { dst, payload: out });
        Ok(())
    }

    /// "Call me now": ask every other peer we have a direct session with to
    /// pass our current record to `target`, which then has our candidates
    /// (and answers with its own) without waiting for the DHT, so both
    /// sides punch within a round trip. At most once per
    /// [`intro::INTRO_EVERY`]; nothing before [`push_record`](Self::push_record).
    fn introduce(&mut self, now: Instant, target: PeerId) {
        let p = &self.peers[target.0];
        if p.intro_sent
            .is_some_and(|t| now.saturating_duration_since(t) < intro::INTRO_EVERY)
        {
            return;
        }
        let hops: Vec<PeerId> = (0..self.peers.len())
            .map(PeerId)
            .filter(|m| *m != target && self.hop_ok(now, *m))
            .collect();
        for m in hops {
            self.introduce_via(now, target, m);
        }
    }

    /// One introduction for `target` through `hop`.
    fn introduce_via(&mut self, now: Instant, target: PeerId, hop: PeerId) {
        let Some(body) = self.record_body.as_ref() else {
            return;
        };
        let mut payload = vec![0u8; wire::MAX_INTRODUCTION_LEN];
        let Ok(n) = wire::emit_introduction(&[0; wire::INTRO_SIGNATURE_LEN], body, &mut payload)
        else {
            return;
        };
        payload.truncate(n);
        intro::sign(
            &self.secret,
            &self.peers[target.0].cfg.public_key,
            &mut payload,
        );
        match self.send_frame(now, RelayKind::Introduce, target, hop, &payload) {
            Ok(()) => {
                tracing::debug!(peer = %self.peer_name(target), through = %self.peer_name(hop), "sent an introduction");
                self.peers[target.0].intro_sent = Some(now);
            }
            Err(reason) => {
                tracing::debug!(peer = %self.peer_name(target), through = %self.peer_name(hop), %reason, "cannot send an introduction");
            }
        }
    }

    fn after_send(&mut self, now: Instant, id: PeerId, is_data: bool) {
        let may_relay = is_data && self.may_relay(id);
        let p = &mut self.peers[id.0];
        p.timers.clear(Timer::PassiveKeepalive);
        if let Some(k) = p.cfg.keepalive {
            p.timers.set(Timer::PersistentKeepalive, now + k);
        }
        if is_data {
            p.timers
                .set_if_unset(Timer::NoReply, now + scaled(NO_REPLY_TIMEOUT));
        }
        // Only a peer with somewhere else to go watches its route this
        // closely: for the rest, the no-reply handshake is the remedy.
        if may_relay && p.failover == Failover::Quiet {
            p.timers
                .set_if_unset(Timer::PathFailover, now + FAILOVER_QUIET);
        }
    }

    /// Queue an empty data message (keepalive) or start a handshake.
    fn send_keepalive(&mut self, now: Instant, id: PeerId) {
        let mut buf = [0u8; OVERHEAD];
        match self.encrypt_to(now, id, &[], &mut buf) {
            Some(TunOutcome::Send { dst, len }) => self.transmits.push_back(Transmit {
                dst,
                payload: buf[..len].to_vec(),
            }),
            _ => {
                if self.peers[id.0].pending.is_none() {
                    self.initiate(now, id);
                }
            }
        }
    }

    // ----------------------------------------------------------- handshake

    fn new_index(&mut self, id: PeerId) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_index.entry(i) {
                e.insert(id);
                return i;
            }
        }
    }

    /// The wall clock now, as last set by the shell, made strictly
    /// increasing: a clock stepped back (NTP at boot) must not make our
    /// next initiation look like a replay to the peer.
    fn timestamp(&mut self, now: Instant) -> [u8; TIMESTAMP_LEN] {
        let wall = noise::tai64n(self.unix_at_epoch + now.saturating_duration_since(self.epoch));
        let next = if wall > self.last_timestamp_sent {
            wall
        } else {
            noise::tai64n_after(&self.last_timestamp_sent)
        };
        self.last_timestamp_sent = next;
        next
    }

    /// The wall clock at `now`, from the shell (which reads it at each
    /// tick), so handshake timestamps follow clock corrections rather than
    /// the monotonic clock since start.
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: Duration) {
        self.epoch = now;
        self.unix_at_epoch = unix_now;
    }

    /// Counters of the handshake defences, for `status` and metrics.
    pub fn handshake_stats(&self) -> HandshakeStats {
        self.handshake_stats
    }

    /// Send a handshake initiation (IK message 1: `-> e, es, s, ss`).
    fn initiate(&mut self, now: Instant, id: PeerId) {
        if !self.is_live(id) {
            return;
        }
        if !self.has_session(now, id) {
            self.introduce(now, id);
        }
        if !self.reachable(now, id) {
            self.events.push_back(Event::NeedCandidates { peer: id });
            return;
        }
        let timestamp = self.timestamp(now);
        let remote = self.peers[id.0].x25519;
        let state = noise::initiator(&mut self.rng, &self.static_secret, &remote, &self.psk.0);
        let Ok(mut state) = state else {
            tracing::error!(peer = %self.peer_name(id), "cannot build a Noise initiator");
            return;
        };
        let mut noise_msg = [0u8; NOISE_INIT_LEN];
        if !matches!(
            state.write_message(&timestamp, &mut noise_msg),
            Ok(NOISE_INIT_LEN)
        ) {
            return;
        }
        let local_index = self.new_index(id);
        let mut msg = vec![0u8; wire::INITIATION_LEN];
        if wire::emit_initiation(&mut msg, local_index, &noise_msg).is_err() {
            return;
        }
        let p = &mut self.peers[id.0];
        let (mac1_at, _) = wire::mac_offsets(msg.len());
        let mac1 = noise::mac(&p.mac1_key, &msg[..mac1_at]);
        msg[mac1_at..mac1_at + wire::MAC_LEN].copy_from_slice(&mac1);
        let cookie_keyed = p.jar.seal_mac2(now, &mut msg);

        let (started, attempts) = match p.pending.take() {
            Some(old) => {
                self.by_index.remove(&old.local_index);
                (old.started, old.attempts + 1)
            }
            None => (now, 0),
        };
        let backoff = scaled(
            HANDSHAKE_RETRY_BASE
                .saturating_mul(1u32 << attempts.min(8))
                .min(HANDSHAKE_RETRY_MAX),
        );
        // Up to a third of a second of jitter so peers restarted together
        // do not retry in lockstep.
        let jitter = scaled(Duration::from_millis(self.rng.random_range(0..334)));
        let p = &mut self.peers[id.0];
        p.pending = Some(Pending {
            state,
            local_index,
            started,
            attempts,
            msg: msg.clone(),
            cookie_keyed,
        });
        p.timers.set(Timer::HandshakeRetry, now + backoff + jitter);
        self.send_initiation_direct(id, &msg, attempts + 1);
        // And through every relay that may carry it, at the same time: if
        // no direct address answers, the relay's copy does, and the pair
        // is connected within one round trip through it. Not for the rekey
        // of a healthy direct pair: the relay would see handshakes of a
        // pair that does not use it, and its copy, arriving first, would
        // look like a path change.
        let p = &self.peers[id.0];
        let healthy_direct = p.relay.is_none() && p.direct_ok && p.failover == Failover::Quiet;
        if healthy_direct && self.has_session(now, id) {
            return;
        }
        for r in self.relay_options(now, id) {
            tracing::debug!(peer = %self.peer_name(id), relay = %self.peer_name(r), attempt = attempts + 1, hs_stage = "initiation", "sending handshake initiation through a relay");
            self.send_via(now, id, Via::Relay(r), &msg);
        }
    }

    /// `msg` (an initiation) to the peer's endpoint and every candidate:
    /// the responder answers the first copy and rejects the rest as
    /// replays (same timestamp).
    fn send_initiation_direct(&mut self, id: PeerId, msg: &[u8], attempt: u32) {
        let p = &self.peers[id.0];
        let targets = p
            .endpoint
            .iter()
            .chain(p.candidates.iter().filter(|c| Some(**c) != p.endpoint));
        for dst in targets {
            tracing::debug!(peer = %p.cfg.name, addr = %dst, attempt, hs_stage = "initiation", "sending handshake initiation");
            self.transmits.push_back(Transmit {
                dst: *dst,
                payload: msg.to_vec(),
            });
        }
    }

    /// A session with `r` just started: peers waiting for a handshake that
    /// `r` may relay get our pending initiation through it now, rather than
    /// at their next retry.
    fn offer_relay(&mut self, now: Instant, r: PeerId) {
        for id in self.peer_ids() {
            if id == r || self.has_session(now, id) {
                continue;
            }
            if !self.relay_options(now, id).contains(&r) {
                continue;
            }
            match self.peers[id.0].pending.as_ref().map(|h| h.msg.clone()) {
                Some(msg) => self.send_via(now, id, Via::Relay(r), &msg),
                None => self.initiate(now, id),
            }
        }
    }

    /// What a hard-NAT probe to an address that is not a candidate carries:
    /// the handshake initiation waiting for an answer, or, for a peer we
    /// reach only through a relay, a path ping on the session, whose pong
    /// from wherever it landed is a direct path ([`Peer::hard_probe`]).
    /// `None`: nothing to probe with (no handshake waits, and the session,
    /// if any, is direct).
    pub fn probe_datagram(&mut self, now: Instant, id: PeerId) -> Option<Vec<u8>> {
        let p = self.peers.get(id.0).filter(|p| !p.removed)?;
        if let Some(h) = p.pending.as_ref() {
            return Some(h.msg.clone());
        }
        if p.relay.is_none() || !self.has_session(now, id) {
            return None;
        }
        let probe = match p.hard_probe {
            Some(probe) => probe,
            None => {
                let probe = self.rng.next_u64();
                self.peers[id.0].hard_probe = Some(probe);
                probe
            }
        };
        self.seal_control(now, id, &wire::Control::PathPing { id: probe })
    }

    fn check_mac1(&self, input: &[u8], mac1: &[u8; wire::MAC_LEN]) -> bool {
        noise::mac_eq(&noise::mac(&self.our_mac1_key, input), mac1)
    }

    /// IK message 1 as responder; answers with message 2 (`<- e, ee, se, psk`).
    fn handle_initiation(
        &mut self,
        now: Instant,
        via: Via,
        relayed_for: Option<PeerId>,
        init: wire::Initiation<'_>,
    ) -> UdpOutcome {
        // Cheap checks first: mac1 proves the sender knows our public key;
        // the limiter caps what one source can make us spend on DH. A
        // relayed one counts against the member the relay names (it
        // authenticated that member), not the relay's address, which every
        // relayed member shares.
        if !self.check_mac1(init.mac1_input, &init.mac1) {
            return UdpOutcome::Dropped(DropReason::BadMac);
        }
        let (from, source) = match (via, relayed_for) {
            (Via::Direct(from), _) => (Some(from), Source::Addr(from.ip())),
            (Via::Relay(_), Some(member)) => (None, Source::Member(member.0)),
            (Via::Relay(r), None) => (None, Source::Member(r.0)),
        };
        let Node { guard, rng, .. } = self;
        let refused = match guard.check(now, rng, from, source, &init) {
            Verdict::Process => None,
            Verdict::Replay => Some(DropReason::ReplayedInitiation),
            Verdict::RateLimited => Some(DropReason::RateLimited),
            Verdict::OverBudget => Some(DropReason::OverBudget),
            Verdict::Cookie(reply) => {
                if let Some(dst) = from {
                    self.transmits.push_back(Transmit {
                        dst,
                        payload: reply,
                    });
                    self.handshake_stats.cookies_sent += 1;
                }
                Some(DropReason::UnderLoad)
            }
        };
        if let Some(reason) = refused {
            self.handshake_stats.refused += 1;
            return UdpOutcome::Dropped(reason);
        }
        let state = noise::responder(&mut self.rng, &self.static_secret, &self.psk.0);
        let Ok(mut state) = state else {
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        };
        let mut timestamp = [0u8; TIMESTAMP_LEN];
        if !matches!(
            state.read_message(init.noise, &mut timestamp),
            Ok(TIMESTAMP_LEN)
        ) {
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        }
        // Only configured peers may talk to us (design §3): check the
        // initiator's static key right after message 1.
        let Some(id) = state
            .remote_static()
            .and_then(|k| self.by_x25519.get(&k).copied())
        else {
            return UdpOutcome::Dropped(DropReason::UnknownPeer);
        };
        // A relay may only speak for the member it names.
        if relayed_for.is_some_and(|m| m != id) {
            return UdpOutcome::Dropped(DropReason::RelayMismatch);
        }
        let p = &self.peers[id.0];
        // WireGuard §5.1: a timestamp not newer than the last one is a replay.
        if p.last_timestamp.is_some_and(|last| timestamp <= last) {
            return UdpOutcome::Dropped(DropReason::StaleInitiation);
        }
        if p.last_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_GAP)
        {
            return UdpOutcome::Dropped(DropReason::InitiationFlood);
        }
        let mut noise_msg = [0u8; NOISE_RESPONSE_LEN];
        if !matches!(
            state.write_message(&[], &mut noise_msg),
            Ok(NOISE_RESPONSE_LEN)
        ) {
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        }
        let Ok(keys) = state.into_transport() else {
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        };
        let local_index = self.new_index(id);
        let mut msg = vec![0u8; wire::RESPONSE_LEN];
        if wire::emit_response(&mut msg, local_index, init.sender, &noise_msg).is_err() {
            self.by_index.remove(&local_index);
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        }
        let (mac1_at, _) = wire::mac_offsets(msg.len());
        let mac1 = noise::mac(&self.peers[id.0].mac1_key, &msg[..mac1_at]);
        msg[mac1_at..mac1_at + wire::MAC_LEN].copy_from_slice(&mac1);

        let session = Session::new(local_index, init.sender, keys, now, false);
        let p = &mut self.peers[id.0];
        p.last_timestamp = Some(timestamp);
        p.last_initiation = Some(now);
        if let Some(old) = p.next.replace(session) {
            self.by_index.remove(&old.local_index);
        }
        tracing::debug!(peer = %self.peers[id.0].cfg.name, via = ?via, hs_stage = "response", "answering handshake initiation");
        // No `on_authenticated`: an initiation may be a replay (after our
        // restart there is no timestamp to compare it with), so it moves no
        // endpoint, proves no path and picks no relay. The initiator's
        // first data on the new session, right after our response, does.
        // Back the way it came: through the relay if it was relayed.
        self.send_via(now, id, via, &msg);
        UdpOutcome::Handled
    }

    /// A responder under load asks for mac2: keep its cookie and send the
    /// pending initiation again at once with mac2 keyed, to where the reply
    /// came from. The same bytes but mac2 (the responder spent no DH on the
    /// first copy), so no new ephemeral and no new index.
    fn handle_cookie_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        reply: wire::CookieReply<'_>,
    ) -> UdpOutcome {
        let Some(&id) = self.by_index.get(&reply.receiver) else {
            return UdpOutcome::Dropped(DropReason::BadCookie);
        };
        let p = &mut self.peers[id.0];
        let Some(pending) = p
            .pending
            .as_mut()
            .filter(|h| h.local_index == reply.receiver)
        else {
            return UdpOutcome::Dropped(DropReason::BadCookie);
        };
        let (mac1_at, mac2_at) = wire::mac_offsets(pending.msg.len());
        if !p.jar.accept(now, &reply, &pending.msg[mac1_at..mac2_at]) {
            return UdpOutcome::Dropped(DropReason::BadCookie);
        }
        self.handshake_stats.cookies_accepted += 1;
        // A copy already keyed was answered with a cookie because the
        // responder's secret rotated: key it again, but send it only once
        // per cookie, so two nodes can never loop on replies.
        let resend = !pending.cookie_keyed;
        pending.cookie_keyed = p.jar.seal_mac2(now, &mut pending.msg);
        if resend {
            tracing::debug!(peer = %p.cfg.name, %from, hs_stage = "initiation", "peer is under load: sending the initiation again with its cookie");
            let msg = pending.msg.clone();
            self.transmits.push_back(Transmit {
                dst: from,
                payload: msg,
            });
        }
        UdpOutcome::Handled
    }

    /// IK message 2 as initiator: the session is ready to send.
    fn handle_response(&mut self, now: Instant, via: Via, resp: wire::Response<'_>) -> UdpOutcome {
        let Some(&id) = self.by_index.get(&resp.receiver) else {
            return UdpOutcome::Dropped(DropReason::UnknownIndex);
        };
        if self.peers[id.0]
            .pending
            .as_ref()
            .is_none_or(|h| h.local_index != resp.receiver)
        {
            return UdpOutcome::Dropped(DropReason::UnknownIndex);
        }
        if !self.check_mac1(resp.mac1_input, &resp.mac1) {
            return UdpOutcome::Dropped(DropReason::BadMac);
        }
        let p = &mut self.peers[id.0];
        let Some(mut pending) = p.pending.take() else {
            return UdpOutcome::Dropped(DropReason::UnknownIndex);
        };
        let mut empty = [0u8; 0];
        if !matches!(pending.state.read_message(resp.noise, &mut empty), Ok(0)) {
            // A forged response must not cancel our handshake.
            p.pending = Some(pending);
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        }
        let Ok(keys) = pending.state.into_transport() else {
            self.by_index.remove(&pending.local_index);
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        };
        let session = Session::new(pending.local_index, resp.sender, keys, now, true);
        p.timers.clear(Timer::HandshakeRetry);
        let old_previous = p.previous.take();
        p.previous = p.current.replace(session);
        if let Some(old) = old_previous {
            self.by_index.remove(&old.local_index);
        }
        tracing::debug!(peer = %self.peers[id.0].cfg.name, via = ?via, hs_stage = "complete", "handshake complete (initiator)");
        // A response answers our pending initiation, so it is fresh; but a
        // relay's copy can beat the direct one without the direct path
        // having failed, so only a direct one moves the route.
        self.on_authenticated(now, id, via, matches!(via, Via::Direct(_)));
        if let Via::Direct(from) = via
            && self.peers[id.0].relay.is_some()
        {
            // Our initiation went there and the answer came back: a direct
            // path both ways, as good as a pong.
            self.go_direct(now, id, from);
        }
        self.on_session(now, id);
        // Key confirmation: the responder may send only once it has heard
        // from us on the new session, so say something right away.
        let queued = std::mem::take(&mut self.peers[id.0].queue);
        if queued.is_empty() {
            self.send_keepalive(now, id);
        } else {
            let mut buf = vec![0u8; wire::MAX_DATAGRAM + OVERHEAD];
            for pkt in queued {
                if let Some(TunOutcome::Send { dst, len }) =
                    self.encrypt_to(now, id, &pkt, &mut buf)
                {
                    self.transmits.push_back(Transmit {
                        dst,
                        payload: buf[..len].to_vec(),
                    });
                }
            }
        }
        UdpOutcome::Handled
    }

    /// A new session exists with `id`.
    fn on_session(&mut self, now: Instant, id: PeerId) {
        let p = &mut self.peers[id.0];
        p.timers.set_if_unset(Timer::PathProbe, now);
        p.last_handshake = Some(now);
        p.handshakes += 1;
        p.timers.set(Timer::ZeroKeys, now + scaled(ZERO_KEYS_AFTER));
        if !p.connected {
            p.connected = true;
            if let Some(via) = self.route(id) {
                self.events.push_back(Event::Connected { peer: id, via });
            }
        }
        // Tell the peer where we are now: it may have connected through a
        // stale candidate or the cache, and the DHT is minutes behind.
        // Through a relay this is also the "call me now": the peer learns
        // our current candidates one round trip after the handshake and
        // both sides' path probes punch at once.
        self.send_record(now, id);
        self.offer_relay(now, id);
        // And `id` may be the mutual peer of a peer we cannot reach yet.
        if self.hop_ok(now, id) {
            for t in self.peer_ids() {
                if t != id && !self.has_session(now, t) {
                    self.introduce_via(now, t, id);
                }
            }
        }
    }

    /// An authenticated packet for `id` arrived over `via`: reset the
    /// silence timers and, if `roam`, follow the peer there (a direct
    /// address it moved to, or a relay it switched to while our route was
    /// quiet).
    fn on_authenticated(&mut self, now: Instant, id: PeerId, via: Via, roam: bool) {
        let route = self.route(id);
        let p = &mut self.peers[id.0];
        // Only an answer on the path we send on proves that path works: a
        // moved peer's probes from elsewhere must not hide that our data
        // goes nowhere (the no-reply timer is what finds it a new path).
        if route == Some(via) || route.is_none() || (roam && matches!(via, Via::Direct(_))) {
            p.timers.clear(Timer::NoReply);
        }
        let quiet = p
            .route_rx
            .is_none_or(|t| now.saturating_duration_since(t) >= FAILOVER_QUIET);
        if route == Some(via) {
            p.timers.clear(Timer::PathFailover);
            p.failover = Failover::Quiet;
            p.route_rx = Some(now);
        }
        match via {
            Via::Direct(from) => {
                p.direct_ok = true;
                match p.endpoint {
                    Some(old) if roam && old != from => self.change_endpoint(id, from),
                    None => {
                        p.endpoint = Some(from);
                        p.track_paths();
                    }
                    _ => {}
                }
            }
            Via::Relay(r) => match p.relay {
                // A static or cached address nobody answered on is a guess;
                // the relay's answer is a fact.
                None if !p.direct_ok => self.set_relay(now, id, r, RelayCause::NoDirectPath),
                None if roam && quiet => self.set_relay(now, id, r, RelayCause::DirectPathLost),
                Some((cur, cause)) if cur != r && roam && quiet => {
                    self.set_relay(now, id, r, cause)
                }
                _ => {}
            },
        }
    }

    /// Send `id`'s traffic through `r` from now on.
    fn set_relay(&mut self, now: Instant, id: PeerId, r: PeerId, cause: RelayCause) {
        let p = &mut self.peers[id.0];
        let old = p.relay.replace((r, cause));
        p.route_rx = Some(now);
        p.failover = Failover::Quiet;
        p.timers.clear(Timer::PathFailover);
        // Keep looking for a direct path, faster than a settled peer does;
        // on a new session at once: the direct initiations that lost the
        // race to the relay have just opened our NAT towards the peer's
        // candidates, and probes now, from both sides, get through it.
        if !p.connected {
            p.timers.set(Timer::PathProbe, now);
            return; // `Connected` will say how
        }
        p.timers.set(Timer::PathProbe, now + RELAYED_PROBE);
        match old {
            None => self.events.push_back(Event::Relayed {
                peer: id,
                relay: r,
                cause,
            }),
            Some((from, _)) if from != r => self.events.push_back(Event::RelayChanged {
                peer: id,
                from,
                to: r,
            }),
            Some(_) => {}
        }
    }

    /// A direct path to a relayed peer answered: use it.
    fn go_direct(&mut self, now: Instant, id: PeerId, addr: SocketAddr) {
        let p = &mut self.peers[id.0];
        if p.relay.take().is_none() {
            return;
        }
        p.dead_relays.clear();
        p.direct_ok = true;
        p.route_rx = Some(now);
        p.failover = Failover::Quiet;
        p.timers.clear(Timer::PathFailover);
        if p.endpoint != Some(addr) {
            p.endpoint = Some(addr);
            if !p.paths.contains(addr) {
                p.track_paths();
            }
        }
        self.events.push_back(Event::DirectAgain {
            peer: id,
            endpoint: addr,
        });
    }

    /// The route to `id` stopped answering (probed and silent): move to a
    /// relay, or from a dead relay to another one.
    fn fail_route(&mut self, now: Instant, id: PeerId) {
        let options = self.relay_options(now, id);
        let p = &mut self.peers[id.0];
        match p.relay {
            None => {
                p.direct_ok = false;
                if let Some(&r) = options.first() {
                    tracing::debug!(peer = %p.cfg.name, "direct path silent: moving to a relay");
                    self.set_relay(now, id, r, RelayCause::DirectPathLost);
                }
            }
            Some((cur, cause)) => {
                p.dead_relays.push(cur);
                match options.iter().find(|r| **r != cur) {
                    Some(&next) => self.set_relay(now, id, next, cause),
                    // Nowhere else to go: give every relay another chance
                    // at the next failure (the no-reply handshake follows).
                    None => p.dead_relays.clear(),
                }
            }
        }
    }

    fn change_endpoint(&mut self, id: PeerId, to: SocketAddr) {
        let p = &mut self.peers[id.0];
        let Some(from) = p.endpoint.replace(to) else {
            return;
        };
        if !p.paths.contains(to) {
            p.track_paths();
        }
        self.events
            .push_back(Event::EndpointChanged { peer: id, from, to });
    }

    /// Encrypt a control message on the current session and send it over
    /// `via`, which need not be the route (path probes test the others).
    fn send_control(&mut self, now: Instant, id: PeerId, via: Via, msg: &wire::Control) {
        if let Some(sealed) = self.seal_control(now, id, msg) {
            self.send_via(now, id, via, &sealed);
        }
    }

    /// [`send_control`](Self::send_control) of a message already emitted.
    fn send_control_bytes(&mut self, now: Instant, id: PeerId, via: Via, plain: &[u8]) {
        if let Some(sealed) = self.seal_plain(now, id, plain) {
            self.send_via(now, id, via, &sealed);
        }
    }

    /// `msg` sealed on `id`'s current session, for the caller to send
    /// (a path probe may go where the route does not).
    fn seal_control(&mut self, now: Instant, id: PeerId, msg: &wire::Control) -> Option<Vec<u8>> {
        let mut plain = [0u8; wire::MAX_CONTROL_LEN];
        let n = wire::emit_control(msg, &mut plain).ok()?;
        self.seal_plain(now, id, &plain[..n])
    }

    fn seal_plain(&mut self, now: Instant, id: PeerId, plain: &[u8]) -> Option<Vec<u8>> {
        // Room for the padding too: `seal` pads to a multiple of PAD_TO.
        let mut buf = vec![0u8; plain.len() + SEAL_OVERHEAD];
        let len = self.seal(now, id, plain, self.mtu, &mut buf)?.ok()?;
        buf.truncate(len);
        Some(buf)
    }

    /// Our record, if [`push_record`](Self::push_record) gave one, to `id`
    /// on its route and current session (nothing without one).
    fn send_record(&mut self, now: Instant, id: PeerId) {
        let Some(via) = self.route(id) else {
            return;
        };
        // Taken out and put back: `seal` needs the whole node.
        let Some(msg) = self.record.take() else {
            return;
        };
        self.send_control_bytes(now, id, via, &msg);
        self.record = Some(msg);
    }

    fn handle_control(&mut self, now: Instant, id: PeerId, via: Via, msg: wire::Control) {
        match msg {
            wire::Control::PathPing { id: probe } => {
                let observed = match via {
                    Via::Direct(from) => from,
                    // Nothing to observe through a relay.
                    Via::Relay(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
                };
                self.send_control(
                    now,
                    id,
                    via,
                    &wire::Control::PathPong {
                        id: probe,
                        observed,
                    },
                );
                // A relayed peer's probe got through our NAT, so ours to
                // where it came from gets through its NAT now: ping back at
                // once instead of at the next round (seconds away).
                if let Via::Direct(from) = via
                    && self.peers[id.0].relay.is_some()
                {
                    let ping = self.rng.next_u64();
                    if self.peers[id.0].paths.probe_one(now, from, ping) {
                        self.send_control(now, id, via, &wire::Control::PathPing { id: ping });
                    }
                }
            }
            wire::Control::PathPong { id: probe, .. } => {
                // The operator's ping: reported, and no evidence for path
                // choice (it went where the traffic goes anyway).
                if let Some(at) = self
                    .user_pings
                    .iter()
                    .position(|u| u.probe == probe && u.peer == id)
                    && let Some(u) = self.user_pings.remove(at)
                {
                    self.ping_replies.push_back(PingReply {
                        peer: id,
                        probe,
                        via,
                        rtt: now.saturating_duration_since(u.sent),
                    });
                    return;
                }
                let p = &mut self.peers[id.0];
                if let Via::Direct(from) = via
                    && p.hard_probe == Some(probe)
                {
                    // A hard-NAT probe landed: where its answer comes from
                    // is a way through both NATs.
                    p.hard_probe = None;
                    tracing::debug!(peer = %p.cfg.name, addr = %from, "a hard-NAT probe got an answer: leaving the relay");
                    self.go_direct(now, id, from);
                    return;
                }
                let Some(addr) = p.paths.on_pong(now, probe) else {
                    return;
                };
                if p.relay.is_some() {
                    // Any direct answer beats the relay; the fastest of the
                    // live ones, if more answered.
                    let best = p.paths.better_than(now, None).unwrap_or(addr);
                    tracing::debug!(peer = %p.cfg.name, addr = %best, "a direct path answers: leaving the relay");
                    self.go_direct(now, id, best);
                } else if let Some(better) = p.paths.better_than(now, p.endpoint) {
                    tracing::debug!(peer = %p.cfg.name, addr = %better, rtt = ?p.paths.rtt(better), "switching to a better path");
                    self.change_endpoint(id, better);
                }
            }
            wire::Control::Record(body) => self.queue_peer_record(id, body, None),
        }
    }

    /// One waiting record per peer, the newest written (datagrams may
    /// arrive out of order): a peer that sends many before the shell drains
    /// cannot grow the queue. An introduction among them marks the waiting
    /// record, whichever is newer.
    fn queue_peer_record(
        &mut self,
        id: PeerId,
        body: wire::RecordBody,
        introduced_by: Option<PeerId>,
    ) {
        match self.peer_records.iter_mut().find(|r| r.peer == id) {
            Some(waiting) => {
                if body.timestamp >= waiting.body.timestamp {
                    waiting.body = body;
                }
                waiting.introduced_by = introduced_by.or(waiting.introduced_by);
            }
            None => self.peer_records.push_back(PeerRecord {
                peer: id,
                body,
                introduced_by,
            }),
        }
    }

    /// Mutual peer `hop` passes on an introduction from the member with key
    /// `src`: if it is signed by that member for us and we have no session
    /// with it, its record goes to discovery marked as introduced (which
    /// tries its candidates now), and we answer with ours through `hop`, so
    /// both sides initiate within a round trip of each other.
    fn on_introduced(
        &mut self,
        now: Instant,
        hop: PeerId,
        src: &[u8; 32],
        payload: &[u8],
    ) -> UdpOutcome {
        let Some(sender) = self.by_key.get(src).copied().filter(|s| *s != hop) else {
            return UdpOutcome::Dropped(DropReason::UnknownPeer);
        };
        let introduction = match wire::parse_introduction(payload) {
            Ok(i) => i,
            Err(e) => return UdpOutcome::Dropped(DropReason::Introduction(e)),
        };
        if !intro::verify(
            &self.peers[sender.0].cfg.public_key,
            &self.public_key,
            &introduction,
        ) {
            return UdpOutcome::Dropped(DropReason::BadIntroduction);
        }
        // The same record again within the dedupe interval is a copy
        // (through another mutual peer, or replayed); an older one than we
        // last acted on is a replay (a mutual peer alternating captured
        // records); a new one is news, and the same one later a retry.
        let (copy, older) = match self.peers[sender.0].intro_heard.as_ref() {
            Some((t, body)) => (
                now.saturating_duration_since(*t) < intro::INTRO_DEDUPE
                    && *body == introduction.body,
                introduction.body.timestamp < body.timestamp,
            ),
            None => (false, false),
        };
        if older {
            return UdpOutcome::Dropped(DropReason::StaleIntroduction);
        }
        if copy || self.has_session(now, sender) {
            return UdpOutcome::Handled;
        }
        self.peers[sender.0].intro_heard = Some((now, introduction.body.clone()));
        tracing::debug!(peer = %self.peer_name(sender), through = %self.peer_name(hop), "introduction: the peer asks for a handshake now");
        self.queue_peer_record(sender, introduction.body, Some(hop));
        // Always answered (the sender may not have heard from us since it
        // reached `hop`); the sender's dedupe ends the exchange there.
        self.introduce_via(now, sender, hop);
        UdpOutcome::Handled
    }

    // ---------------------------------------------------------------- recv

    /// A datagram from the UDP socket. On `WriteTun`, `out[..len]` is the
    /// inner packet; on `Forward` (we relay), a datagram to send on. `out`
    /// must be at least `datagram.len()` + [`OVERHEAD`].
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> UdpOutcome {
        match wire::parse(datagram) {
            Ok(Packet::Data(d)) => self.handle_data(now, Via::Direct(from), d, out),
            Ok(Packet::Initiation(i)) => self.handle_initiation(now, Via::Direct(from), None, i),
            Ok(Packet::Response(r)) => self.handle_response(now, Via::Direct(from), r),
            Ok(Packet::CookieReply(c)) => self.handle_cookie_reply(now, from, c),
            Ok(Packet::Stun(_)) => UdpOutcome::Stun,
            Err(e) => UdpOutcome::Dropped(DropReason::Malformed(e)),
        }
    }

    fn handle_data(
        &mut self,
        now: Instant,
        via: Via,
        d: wire::Data<'_>,
        out: &mut [u8],
    ) -> UdpOutcome {
        let Some(&id) = self.by_index.get(&d.receiver) else {
            return UdpOutcome::Dropped(DropReason::UnknownIndex);
        };
        let p = &mut self.peers[id.0];
        let Some((session, slot)) = p.session_mut(d.receiver) else {
            return UdpOutcome::Dropped(DropReason::UnknownIndex);
        };
        let len = match session.decrypt(now, d.counter, d.ciphertext, out) {
            Ok(n) => n,
            Err(e) => return UdpOutcome::Dropped(DropReason::Session(e)),
        };
        let wire_len = DATA_HEADER_LEN + d.ciphertext.len();
        self.after_open(now, id, slot, via, out, len, wire_len)
    }

    /// A data message for `id` that the data half opened (see
    /// [`data`](super::data)): not an IP packet, so ours to act on, as if
    /// [`handle_udp`](Self::handle_udp) had opened it; `out[..len]` is the
    /// plaintext. The data half opens only the current and previous
    /// sessions, arriving along the route (`via`: from its address, or
    /// delivered by its relay).
    pub fn handle_opened(
        &mut self,
        now: Instant,
        id: PeerId,
        via: Via,
        out: &mut [u8],
        len: usize,
        wire_len: usize,
    ) -> UdpOutcome {
        if !self.is_live(id) {
            return UdpOutcome::Dropped(DropReason::UnknownIndex);
        }
        self.after_open(now, id, Slot::Current, via, out, len, wire_len)
    }

    /// Everything an authentic data message on `slot` of `id`'s sessions
    /// does once opened into `out[..len]`.
    #[allow(clippy::too_many_arguments)]
    fn after_open(
        &mut self,
        now: Instant,
        id: PeerId,
        slot: Slot,
        via: Via,
        out: &mut [u8],
        len: usize,
        wire_len: usize,
    ) -> UdpOutcome {
        let wire_len = wire_len as u64;
        let p = &mut self.peers[id.0];
        p.rx_bytes += wire_len;
        if matches!(via, Via::Relay(_)) {
            p.relay_rx_bytes += wire_len;
        }
        let promoted = slot == Slot::Next;
        if promoted {
            // The initiator used the session: it is confirmed, promote it.
            let old_previous = p.previous.take();
            p.previous = p.current.take();
            p.current = p.next.take();
            if let Some(old) = old_previous {
                self.by_index.remove(&old.local_index);
            }
        }
        // Control messages (path probes, relay frames) arrive on purpose
        // over paths other than the route: they must not move it. Data from
        // an address we do not know means the peer moved: follow it; data
        // through a relay while our route is silent means it moved there.
        let is_control = len > 0 && !matches!(out[0] >> 4, 4 | 6);
        let roam = !is_control
            && match via {
                Via::Direct(from) => !self.peers[id.0].paths.contains(from),
                Via::Relay(_) => true,
            };
        self.on_authenticated(now, id, via, roam);
        if let Via::Direct(from) = via
            && !is_control
            && self.peers[id.0].relay.is_some()
        {
            // Data straight from a relayed peer: it went direct, so can we.
            self.go_direct(now, id, from);
        }
        if promoted {
            // After the route is known: the initiation it answered moved
            // nothing (see `handle_initiation`), this packet did.
            self.on_session(now, id);
        }
        self.rekey_if_stale(now, id);
        if len == 0 {
            return UdpOutcome::Handled; // keepalive
        }
        if wire::is_relay_frame(&out[..len]) {
            return match via {
                // One hop only: a relayed packet never carries another frame.
                Via::Relay(_) => UdpOutcome::Dropped(DropReason::RelayMismatch),
                Via::Direct(_) => self.handle_relay_frame(now, id, len, out),
            };
        }
        if is_control {
            return match wire::parse_control(&out[..len]) {
                Ok(msg) => {
                    self.handle_control(now, id, via, msg);
                    UdpOutcome::Handled
                }
                Err(e) => UdpOutcome::Dropped(DropReason::Control(e)),
            };
        }
        // Cryptokey routing: the peer may only speak for its allowed_ips.
        let hdr = match self.routes.inbound(id, &out[..len]) {
            Ok(h) => h,
            Err(reason) => return UdpOutcome::Dropped(reason),
        };
        self.peers[id.0]
            .timers
            .set_if_unset(Timer::PassiveKeepalive, now + scaled(KEEPALIVE_TIMEOUT));
        UdpOutcome::WriteTun { len: hdr.total_len }
    }

    /// A peer that only receives still has to rekey before the session is
    /// rejected.
    fn rekey_if_stale(&mut self, now: Instant, id: PeerId) {
        let p = &self.peers[id.0];
        let stale = p
            .last_handshake
            .is_some_and(|t| now.saturating_duration_since(t) >= scaled(RECV_REKEY_AFTER_TIME));
        if stale && p.rekeys_first && p.pending.is_none() {
            self.initiate(now, id);
        }
    }

    // ------------------------------------------------------ the data half

    /// What the data half should do differently since the last call: one
    /// peer's new view (sessions, addresses), or new routes. The shell
    /// drains it after every call into the node.
    pub fn poll_data_update(&mut self) -> Option<DataUpdate> {
        if self.routes_published != self.routes_changed {
            self.routes_published = self.routes_changed;
            return Some(DataUpdate::Routes(self.routes.clone()));
        }
        let same_service = match (&self.service, &self.service_published) {
            (Some(a), Some(b)) => a.same(b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same_service {
            self.service_published = self.service.clone();
            return Some(DataUpdate::Relay(self.service.clone()));
        }
        if self.published.len() < self.peers.len() {
            self.published
                .resize_with(self.peers.len(), PeerView::default);
        }
        for i in 0..self.peers.len() {
            let view = self.data_view(PeerId(i));
            if !view.same(&self.published[i]) {
                self.published[i] = view.clone();
                return Some(DataUpdate::Peer {
                    id: PeerId(i),
                    view,
                });
            }
        }
        None
    }

    /// What the data half may do for `id` now: send on the current session
    /// along its route (direct, or framed for its relay), open current and
    /// previous arriving that way. Nothing for a removed peer; only its key
    /// (relays forward to it) for one without a route.
    fn data_view(&self, id: PeerId) -> PeerView {
        let p = &self.peers[id.0];
        if p.removed {
            return PeerView::default();
        }
        let key = *p.cfg.public_key.as_bytes();
        let Some(path) = self.route(id) else {
            return PeerView {
                key,
                ..PeerView::default()
            };
        };
        let rx = [&p.current, &p.previous]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let tx = p.current.as_ref().map(|s| TxView {
            session: s.clone(),
            rekey_at: p.last_handshake.unwrap_or(s.created) + scaled(p.rekey_after),
        });
        PeerView {
            path: Some(path),
            key,
            rx,
            tx,
        }
    }

    /// What the data half did for a peer (see [`Activity`]): the same
    /// timers and counters [`handle_tun`](Self::handle_tun) and
    /// [`handle_udp`](Self::handle_udp) move per packet, moved once per
    /// report, in the order it happened.
    pub fn handle_activity(&mut self, now: Instant, a: Activity) {
        if !self.is_live(a.peer) {
            return;
        }
        let id = a.peer;
        let p = &mut self.peers[id.0];
        p.tx_bytes += a.tx_bytes;
        p.rx_bytes += a.rx_bytes;
        p.relay_tx_bytes += a.relay_tx_bytes;
        p.relay_rx_bytes += a.relay_rx_bytes;
        p.relay_drops += a.relay_drops;
        // The report's events in the order they happened (a send before a
        // receive at the same instant: the receive may answer it), so a
        // send the receive answered arms nothing after it, and one after
        // the receive is still waiting for its answer.
        #[derive(Clone, Copy)]
        enum Step {
            Sent {
                data: bool,
            },
            Received(Via),
            /// A relay frame opened on this peer's own session: proof of the
            /// direct path, as a control message is, but not data.
            Heard(SocketAddr),
        }
        let [first, first_after_rx, last] = a
            .sent
            .map_or([None; 3], |s| {
                [Some(s.first), s.first_after_rx, Some(s.last)]
            })
            .map(|t| t.map(|t| (t, 0, Step::Sent { data: true })));
        let mut steps = [
            first,
            first_after_rx,
            last,
            a.framed.map(|t| (t, 0, Step::Sent { data: false })),
            a.received.map(|(t, via)| (t, 1, Step::Received(via))),
            a.heard.map(|(t, from)| (t, 1, Step::Heard(from))),
        ];
        steps.sort_by_key(|s| s.map(|(t, rank, _)| (t, rank)));
        for (at, _, step) in steps.into_iter().flatten() {
            match step {
                Step::Sent { data } => self.after_send(at, id, data),
                Step::Received(via) => {
                    // Not a roam: the data half takes data only along the route.
                    self.on_authenticated(at, id, via, false);
                    self.peers[id.0]
                        .timers
                        .set_if_unset(Timer::PassiveKeepalive, at + scaled(KEEPALIVE_TIMEOUT));
                }
                Step::Heard(from) => self.on_authenticated(at, id, Via::Direct(from), false),
            }
        }
        if a.received.is_some() || a.heard.is_some() {
            self.rekey_if_stale(now, id);
        }
        if a.rekey && self.peers[id.0].pending.is_none() {
            self.initiate(now, id);
        }
    }

    /// `out[..len]` is a relay frame that member `hop` sent us on its
    /// session: forward it (we relay) or open what it delivers.
    fn handle_relay_frame(
        &mut self,
        now: Instant,
        hop: PeerId,
        len: usize,
        out: &mut [u8],
    ) -> UdpOutcome {
        let (kind, key, n) = match wire::parse_relay(&out[..len]) {
            Ok(f) => (f.kind, f.key, f.datagram.len()),
            Err(e) => return UdpOutcome::Dropped(DropReason::RelayFrame(e)),
        };
        // The datagram moves to a buffer of its own: passing on seals the
        // frame from there into `out`, delivering decrypts from there into `out`.
        let forward = kind.passed_on().is_some();
        let mut frame = std::mem::take(if forward {
            &mut self.relay_buf
        } else {
            &mut self.relay_in
        });
        let end = RELAY_HEADER_LEN + n;
        let outcome = if end > frame.len() {
            UdpOutcome::Dropped(DropReason::RelayFrame(wire::RelayError::BufferTooSmall {
                have: frame.len(),
                need: end,
            }))
        } else {
            frame[RELAY_HEADER_LEN..end].copy_from_slice(&out[RELAY_HEADER_LEN..end]);
            match kind {
                RelayKind::Forward | RelayKind::Introduce => {
                    self.forward(now, kind, hop, &key, &mut frame, n, out)
                }
                RelayKind::Deliver => {
                    self.open_delivered(now, hop, &key, &frame[RELAY_HEADER_LEN..end], out)
                }
                RelayKind::Introduced => {
                    self.on_introduced(now, hop, &key, &frame[RELAY_HEADER_LEN..end])
                }
            }
        };
        if forward {
            self.relay_buf = frame;
        } else {
            self.relay_in = frame;
        }
        outcome
    }

    /// Member `from` asks us to pass `frame[RELAY_HEADER_LEN..][..n]` to the
    /// member with key `to`: a datagram (Forward, only if we relay) or an
    /// introduction (Introduce, any member, within [`intro::INTRO_PASS_RATE`]).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        kind: RelayKind,
        from: PeerId,
        to: &[u8; 32],
        frame: &mut [u8],
        n: usize,
        out: &mut [u8],
    ) -> UdpOutcome {
        use crate::relay::Refusal;
        let relaying = kind == RelayKind::Forward;
        let refuse = |node: &mut Self, why: Refusal| {
            if let Some(s) = node.service.as_ref().filter(|_| relaying) {
                s.lock().refused(why);
            }
            tracing::debug!(peer = %node.peer_name(from), reason = %why, ?kind, "relay frame refused");
            UdpOutcome::Dropped(DropReason::Relay(why))
        };
        let Some(passed_on) = kind.passed_on() else {
            return UdpOutcome::Dropped(DropReason::NoRelay);
        };
        if relaying && self.service.is_none() {
            return UdpOutcome::Dropped(DropReason::Relay(Refusal::NotServing));
        }
        if !relaying && n > wire::MAX_INTRODUCTION_LEN {
            return UdpOutcome::Dropped(DropReason::RelayFrame(wire::RelayError::BufferTooSmall {
                have: wire::MAX_INTRODUCTION_LEN,
                need: n,
            }));
        }
        let Some(dst) = self.by_key.get(to).copied().filter(|d| *d != from) else {
            return refuse(self, Refusal::Unknown);
        };
        if !self.hop_ok(now, dst) {
            return refuse(self, Refusal::NoSession);
        }
        if relaying {
            if let Some(Err(why)) = self
                .service
                .as_ref()
                .map(|s| s.lock().admit(now, from.0, n))
            {
                return UdpOutcome::Dropped(DropReason::Relay(why));
            }
        } else {
            let bucket = &mut self.peers[from.0].intro_bucket;
            if !bucket.has(now, n) {
                return refuse(self, Refusal::Rate);
            }
            bucket.take(n);
        }
        let Some(addr) = self.peers[dst.0].endpoint else {
            return refuse(self, Refusal::NoSession);
        };
        let src = *self.peers[from.0].cfg.public_key.as_bytes();
        let Ok(total) = wire::emit_relay_header(passed_on, &src, n, frame) else {
            return UdpOutcome::Dropped(DropReason::NoRelay);
        };
        match self.seal(now, dst, &frame[..total], self.mtu, out) {
            Some(Ok(len)) => {
                if let Some(s) = self.service.as_ref().filter(|_| relaying) {
                    s.lock().delivered(dst.0, n);
                }
                self.after_send(now, dst, false);
                UdpOutcome::Forward { dst: addr, len }
            }
            Some(Err(e)) => UdpOutcome::Dropped(DropReason::Session(e)),
            None => refuse(self, Refusal::NoSession),
        }
    }

    /// A datagram relay `hop` delivers from the member with key `src`: the
    /// same handshake or data message as if it had come direct.
    fn open_delivered(
        &mut self,
        now: Instant,
        hop: PeerId,
        src: &[u8; 32],
        datagram: &[u8],
        out: &mut [u8],
    ) -> UdpOutcome {
        let Some(sender) = self.by_key.get(src).copied().filter(|s| *s != hop) else {
            return UdpOutcome::Dropped(DropReason::UnknownPeer);
        };
        let via = Via::Relay(hop);
        // A relay may only speak for the member it names: the index must be
        // one of that member's (initiations name themselves in Noise).
        let owned = |node: &Self, index: u32| node.by_index.get(&index) == Some(&sender);
        match wire::parse(datagram) {
            Ok(Packet::Data(d)) if owned(self, d.receiver) => self.handle_data(now, via, d, out),
            Ok(Packet::Response(r)) if owned(self, r.receiver) => self.handle_response(now, via, r),
            Ok(Packet::Data(_) | Packet::Response(_)) => {
                UdpOutcome::Dropped(DropReason::RelayMismatch)
            }
            Ok(Packet::Initiation(i)) => self.handle_initiation(now, via, Some(sender), i),
            // We send cookies only straight back to a source address, and
            // so does every kith responder.
            Ok(Packet::CookieReply(_)) => UdpOutcome::Dropped(DropReason::BadCookie),
            Ok(Packet::Stun(_)) => UdpOutcome::Dropped(DropReason::RelayMismatch),
            Err(e) => UdpOutcome::Dropped(DropReason::Malformed(e)),
        }
    }

    // -------------------------------------------------------------- timers

    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            let id = PeerId(i);
            let due: Vec<Timer> = self.peers[i].timers.expired(now).collect();
            for t in due {
                self.on_timer(now, id, t);
            }
        }
    }

    fn on_timer(&mut self, now: Instant, id: PeerId, t: Timer) {
        match t {
            Timer::HandshakeRetry => {
                let p = &mut self.peers[id.0];
                let Some(h) = &p.pending else { return };
                if now.saturating_duration_since(h.started) >= scaled(REKEY_ATTEMPT_TIME) {
                    let index = h.local_index;
                    p.pending = None;
                    p.queue.clear();
                    self.by_index.remove(&index);
                    self.events.push_back(Event::HandshakeGaveUp { peer: id });
                } else {
                    if h.attempts == 0 {
                        // The known addresses did not answer: look for fresh ones.
                        self.events.push_back(Event::NeedCandidates { peer: id });
                    }
                    self.initiate(now, id);
                }
            }
            Timer::PersistentKeepalive => {
                self.send_keepalive(now, id);
                if let Some(k) = self.peers[id.0].cfg.keepalive {
                    self.peers[id.0]
                        .timers
                        .set_if_unset(Timer::PersistentKeepalive, now + k);
                }
            }
            Timer::PathProbe => {
                let Node { peers, rng, .. } = self;
                let p = &mut peers[id.0];
                if !p.current.as_ref().is_some_and(|s| s.is_valid(now)) {
                    return; // the next session schedules probing again
                }
                let pings = p.paths.probe_round(now, || rng.next_u64());
                let mut next = p.paths.next_round(now);
                if p.relay.is_some() {
                    next = next.min(now + RELAYED_PROBE);
                }
                p.timers.set(Timer::PathProbe, next);
                // Probes keep an idle session alive too: without a rekey it
                // would expire, and with it the NAT mappings the probes hold
                // open, leaving both sides behind closed NATs.
                let rekey = p
                    .last_handshake
                    .is_some_and(|t| now.saturating_duration_since(t) >= scaled(p.rekey_after));
                if rekey && p.pending.is_none() {
                    self.initiate(now, id);
                }
                for (addr, probe) in pings {
                    self.send_control(
                        now,
                        id,
                        Via::Direct(addr),
                        &wire::Control::PathPing { id: probe },
                    );
                }
            }
            Timer::PathFailover => {
                let Some(via) = self.route(id) else { return };
                let Node { peers, rng, .. } = self;
                let p = &mut peers[id.0];
                if !p.current.as_ref().is_some_and(|s| s.is_valid(now)) {
                    return;
                }
                match p.failover {
                    Failover::Quiet => {
                        // Data went out and nothing came back: ask the route
                        // itself before leaving it (a one-way stream is quiet
                        // in the other direction and that is fine).
                        p.failover = Failover::Probing;
                        p.timers.set(Timer::PathFailover, now + FAILOVER_PROBE);
                        let probe = rng.next_u64();
                        self.send_control(now, id, via, &wire::Control::PathPing { id: probe });
                    }
                    Failover::Probing => {
                        p.failover = Failover::Quiet;
                        self.fail_route(now, id);
                    }
                }
            }
            Timer::PassiveKeepalive => {
                if self.has_session(now, id) {
                    self.send_keepalive(now, id);
                }
            }
            Timer::NoReply => {
                if self.peers[id.0].pending.is_none() {
                    tracing::debug!(peer = %self.peer_name(id), "no reply to data: new handshake");
                    self.initiate(now, id);
                }
            }
            Timer::ZeroKeys => {
                let p = &mut self.peers[id.0];
                for s in [p.current.take(), p.previous.take(), p.next.take()]
                    .into_iter()
                    .flatten()
                {
                    self.by_index.remove(&s.local_index);
                }
                let p = &mut self.peers[id.0];
                if p.connected {
                    p.connected = false;
                    self.events.push_back(Event::Disconnected { peer: id });
                }
            }
        }
    }
}

#[cfg(test)]
impl Node {
    /// Send `plain` as a control message to `id`'s endpoint on the current
    /// session, whatever it holds: what a buggy or hostile peer could send.
    pub(crate) fn send_raw_control(&mut self, now: Instant, id: PeerId, plain: &[u8]) {
        if let Some(via) = self.route(id) {
            self.send_control_bytes(now, id, via, plain);
        }
    }

    /// Indices of the sessions held for a peer (current, previous, next).
    pub(crate) fn session_indices(&self, id: PeerId) -> [Option<u32>; 3] {
        let p = &self.peers[id.0];
        [p.current.as_ref(), p.previous.as_ref(), p.next.as_ref()].map(|s| s.map(|s| s.local_index))
    }
}
