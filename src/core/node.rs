//! [`Node`]: all protocol state of one kith node, driven by explicit time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::limiter::HandshakeLimiter;
use super::noise::{self, Resolver, TIMESTAMP_LEN};
use super::paths::Paths;
use super::routes::RouteTable;
use super::session::{Session, SessionError};
use super::timers::*;
use crate::identity::{PublicKey, SecretKey};
use crate::wire::{
    self, DATA_HEADER_LEN, IpError, NOISE_INIT_LEN, NOISE_RESPONSE_LEN, Packet, TAG_LEN, WireError,
};

/// Packets held per peer while its handshake runs; the oldest is dropped first.
pub const MAX_QUEUED_PER_PEER: usize = 64;
/// Candidate addresses kept per peer (a DHT record carries at most this many).
pub const MAX_CANDIDATES: usize = 16;
/// Plaintext is padded to a multiple of this to blur packet sizes
/// (WireGuard whitepaper §5.4.6).
const PAD_TO: usize = 16;
/// Room the caller's output buffer needs beyond the inner packet.
pub const OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN + PAD_TO;

/// Index of a peer in the order of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    pub psk: [u8; 32],
    pub peers: Vec<PeerConfig>,
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
    #[error("cookie replies are not yet acted upon")]
    CookieIgnored,
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
    Dropped(DropReason),
}

/// Things an operator cares about, one per state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A first session with this peer (or the first after a disconnect).
    Connected { peer: PeerId, endpoint: SocketAddr },
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
}

struct Pending {
    state: snow::HandshakeState,
    local_index: u32,
    /// First attempt of this round (for giving up).
    started: Instant,
    attempts: u32,
    /// The initiation as sent, for hard-NAT probes to extra addresses:
    /// its answer must match `local_index`, so no older copy will do.
    msg: Vec<u8>,
}

struct Peer {
    cfg: PeerConfig,
    x25519: [u8; 32],
    /// mac1 key for messages we send to this peer.
    mac1_key: [u8; 32],
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
    /// When this side starts a rekey. Exactly one side of each pair rekeys
    /// early (the lower public key): if the side that initiated did, two
    /// simultaneous initiators would both count as responders and both
    /// rekey at once, forever doubling the handshakes.
    rekey_after: Duration,
}

impl Peer {
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
    static_secret: [u8; 32],
    psk: [u8; 32],
    /// mac1 key for messages addressed to us.
    our_mac1_key: [u8; 32],
    peers: Vec<Peer>,
    by_x25519: HashMap<[u8; 32], PeerId>,
    by_index: HashMap<u32, PeerId>,
    routes: RouteTable,
    limiter: HandshakeLimiter,
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
    /// Padding scratch for the send path, allocated once.
    scratch: Vec<u8>,
}

impl Node {
    /// `unix_now` is the wall clock at `now` (for handshake timestamps);
    /// `seed` feeds every random choice the node makes.
    pub fn new(cfg: NodeConfig, now: Instant, unix_now: Duration, seed: [u8; 32]) -> Self {
        let our_public = cfg.secret.public().x25519();
        let mut node = Self {
            public_key: cfg.secret.public(),
            static_secret: cfg.secret.x25519(),
            psk: cfg.psk,
            our_mac1_key: noise::mac1_key(&our_public),
            peers: Vec::with_capacity(cfg.peers.len()),
            by_x25519: HashMap::new(),
            by_index: HashMap::new(),
            routes: RouteTable::default(),
            limiter: HandshakeLimiter::default(),
            rng: StdRng::from_seed(seed),
            epoch: now,
            unix_at_epoch: unix_now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            peer_records: VecDeque::new(),
            record: None,
            scratch: vec![0u8; wire::MAX_DATAGRAM],
        };
        for (i, p) in cfg.peers.into_iter().enumerate() {
            let id = PeerId(i);
            let x25519 = p.public_key.x25519();
            for net in &p.allowed_ips {
                node.routes.insert(*net, id);
            }
            node.by_x25519.insert(x25519, id);
            node.peers.push(Peer {
                x25519,
                mac1_key: noise::mac1_key(&x25519),
                endpoint: p.endpoint,
                candidates: Vec::new(),
                paths: Paths::default(),
                cfg: p,
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
                rekey_after: if our_public < x25519 {
                    REKEY_AFTER_TIME
                } else {
                    RESPONDER_REKEY_AFTER_TIME
                },
            });
        }
        node
    }

    /// Begin handshakes with every peer whose endpoint is known, so a mesh
    /// is up before the first packet needs it.
    pub fn start(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            let id = PeerId(i);
            // Peers with no address yet make `initiate` ask for candidates.
            self.initiate(now, id);
            if let Some(k) = self.peers[i].cfg.keepalive {
                self.peers[i]
                    .timers
                    .set(Timer::PersistentKeepalive, now + k);
            }
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + use<> {
        (0..self.peers.len()).map(PeerId)
    }

    pub fn peer_name(&self, id: PeerId) -> &str {
        self.peers.get(id.0).map_or("?", |p| p.cfg.name.as_str())
    }

    pub fn peer_status(&self, id: PeerId) -> Option<PeerStatus> {
        let p = self.peers.get(id.0)?;
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
        })
    }

    /// Addresses a peer may be reachable at (from discovery, a cache or the
    /// config). Every handshake initiation goes to all of them at once; the
    /// first authenticated answer picks the path. Starts a handshake now if
    /// there is no usable session.
    pub fn handle_candidates(&mut self, now: Instant, id: PeerId, addrs: &[SocketAddr]) {
        let Some(p) = self.peers.get_mut(id.0) else {
            return;
        };
        p.candidates.clear();
        for a in addrs {
            if !p.candidates.contains(a) && p.candidates.len() < MAX_CANDIDATES {
                p.candidates.push(*a);
            }
        }
        p.paths
            .set_addrs(p.endpoint.iter().chain(p.candidates.iter()).copied());
        if p.current.as_ref().is_some_and(|s| s.is_valid(now)) {
            p.timers.set(Timer::PathProbe, now);
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
        for i in 0..self.peers.len() {
            self.send_record(now, PeerId(i));
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
        let hdr = match wire::parse_ip(packet) {
            Ok(h) => h,
            Err(e) => return TunOutcome::Dropped(DropReason::NotIp(e)),
        };
        let Some(id) = self.routes.lookup(hdr.dst) else {
            return TunOutcome::Dropped(DropReason::NoRoute);
        };
        let packet = &packet[..hdr.total_len];
        let p = &self.peers[id.0];
        if p.endpoint.is_none() && p.candidates.is_empty() {
            return TunOutcome::Dropped(DropReason::NoEndpoint);
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
        let dst = self.peers[id.0].endpoint?;
        let len = match self.seal(now, id, payload, out)? {
            Ok(len) => len,
            Err(e) => return Some(TunOutcome::Dropped(DropReason::Session(e))),
        };
        let p = &self.peers[id.0];
        let rekey = p
            .current
            .as_ref()
            .is_some_and(|s| s.messages_sent() >= REKEY_AFTER_MESSAGES)
            || p.last_handshake
                .is_some_and(|t| now.saturating_duration_since(t) >= p.rekey_after);
        self.after_send(now, id, !payload.is_empty());
        if rekey && self.peers[id.0].pending.is_none() {
            self.initiate(now, id);
        }
        Some(TunOutcome::Send { dst, len })
    }

    /// Pad `payload` to a multiple of [`PAD_TO`] and encrypt it on the
    /// current session into a data message in `out`; `None` when there is
    /// no usable session. Counts the bytes sent.
    fn seal(
        &mut self,
        now: Instant,
        id: PeerId,
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<Result<usize, SessionError>> {
        let padded = payload
            .len()
            .next_multiple_of(PAD_TO)
            .min(self.scratch.len());
        let p = &mut self.peers[id.0];
        let session = p.current.as_mut().filter(|s| s.is_valid(now))?;
        let plain: &[u8] = if padded == payload.len() {
            payload
        } else {
            self.scratch[..payload.len()].copy_from_slice(payload);
            self.scratch[payload.len()..padded].fill(0);
            &self.scratch[..padded]
        };
        let sealed = session.encrypt(now, plain, out);
        if let Ok(len) = sealed {
            p.tx_bytes += len as u64;
        }
        Some(sealed)
    }

    fn after_send(&mut self, now: Instant, id: PeerId, is_data: bool) {
        let p = &mut self.peers[id.0];
        p.timers.clear(Timer::PassiveKeepalive);
        if let Some(k) = p.cfg.keepalive {
            p.timers.set(Timer::PersistentKeepalive, now + k);
        }
        if is_data {
            p.timers
                .set_if_unset(Timer::NoReply, now + NO_REPLY_TIMEOUT);
        }
    }

    /// Queue an empty data message (keepalive) or start a handshake.
    fn send_keepalive(&mut self, now: Instant, id: PeerId) {
        let mut buf = [0u8; DATA_HEADER_LEN + TAG_LEN];
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

    fn timestamp(&self, now: Instant) -> [u8; TIMESTAMP_LEN] {
        noise::tai64n(self.unix_at_epoch + now.saturating_duration_since(self.epoch))
    }

    fn builder(&mut self) -> snow::Builder<'static> {
        snow::Builder::with_resolver(noise::params(), Box::new(Resolver::new(&mut self.rng)))
    }

    /// Send a handshake initiation (IK message 1: `-> e, es, s, ss`).
    fn initiate(&mut self, now: Instant, id: PeerId) {
        let p = &self.peers[id.0];
        if p.endpoint.is_none() && p.candidates.is_empty() {
            self.events.push_back(Event::NeedCandidates { peer: id });
            return;
        }
        let timestamp = self.timestamp(now);
        let (static_secret, psk, remote) = (self.static_secret, self.psk, self.peers[id.0].x25519);
        let state = self
            .builder()
            .local_private_key(&static_secret)
            .and_then(|b| b.remote_public_key(&remote))
            .and_then(|b| b.prologue(noise::PROLOGUE))
            .and_then(|b| b.psk(2, &psk))
            .and_then(|b| b.build_initiator());
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

        let (started, attempts) = match p.pending.take() {
            Some(old) => {
                self.by_index.remove(&old.local_index);
                (old.started, old.attempts + 1)
            }
            None => (now, 0),
        };
        let backoff = HANDSHAKE_RETRY_BASE
            .saturating_mul(1u32 << attempts.min(8))
            .min(HANDSHAKE_RETRY_MAX);
        // Up to a third of a second of jitter so peers restarted together
        // do not retry in lockstep.
        let jitter = Duration::from_millis(self.rng.random_range(0..334));
        let p = &mut self.peers[id.0];
        p.pending = Some(Pending {
            state,
            local_index,
            started,
            attempts,
            msg: msg.clone(),
        });
        p.timers.set(Timer::HandshakeRetry, now + backoff + jitter);
        // The same message to every address: the responder answers the
        // first copy and rejects the rest as replays (same timestamp).
        let targets = p
            .endpoint
            .iter()
            .chain(p.candidates.iter().filter(|c| Some(**c) != p.endpoint));
        for dst in targets {
            tracing::debug!(peer = %p.cfg.name, addr = %dst, attempt = attempts + 1, hs_stage = "initiation", "sending handshake initiation");
            self.transmits.push_back(Transmit {
                dst: *dst,
                payload: msg.clone(),
            });
        }
    }

    /// The handshake initiation to `id` now waiting for an answer, if any:
    /// what hard-NAT probes send to addresses that are not candidates.
    pub fn pending_initiation(&self, id: PeerId) -> Option<&[u8]> {
        self.peers
            .get(id.0)?
            .pending
            .as_ref()
            .map(|p| p.msg.as_slice())
    }

    fn check_mac1(&self, input: &[u8], mac1: &[u8; wire::MAC_LEN]) -> bool {
        noise::mac_eq(&noise::mac(&self.our_mac1_key, input), mac1)
    }

    /// IK message 1 as responder; answers with message 2 (`<- e, ee, se, psk`).
    fn handle_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        init: wire::Initiation<'_>,
    ) -> UdpOutcome {
        // Cheap checks first: mac1 proves the sender knows our public key;
        // the limiter caps what one source can make us spend on DH.
        if !self.check_mac1(init.mac1_input, &init.mac1) {
            return UdpOutcome::Dropped(DropReason::BadMac);
        }
        if !self.limiter.allow(now, from.ip()) {
            return UdpOutcome::Dropped(DropReason::RateLimited);
        }
        let (static_secret, psk) = (self.static_secret, self.psk);
        let state = self
            .builder()
            .local_private_key(&static_secret)
            .and_then(|b| b.prologue(noise::PROLOGUE))
            .and_then(|b| b.psk(2, &psk))
            .and_then(|b| b.build_responder());
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
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| self.by_x25519.get(&k).copied())
        else {
            return UdpOutcome::Dropped(DropReason::UnknownPeer);
        };
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
        let Ok(transport) = state.into_stateless_transport_mode() else {
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

        let session = Session::new(local_index, init.sender, transport, now, false);
        let p = &mut self.peers[id.0];
        p.last_timestamp = Some(timestamp);
        p.last_initiation = Some(now);
        if let Some(old) = p.next.replace(session) {
            self.by_index.remove(&old.local_index);
        }
        tracing::debug!(peer = %self.peers[id.0].cfg.name, addr = %from, hs_stage = "response", "answering handshake initiation");
        self.on_authenticated(id, from, true);
        self.transmits.push_back(Transmit {
            dst: from,
            payload: msg,
        });
        UdpOutcome::Handled
    }

    /// IK message 2 as initiator: the session is ready to send.
    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        resp: wire::Response<'_>,
    ) -> UdpOutcome {
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
        let Ok(transport) = pending.state.into_stateless_transport_mode() else {
            self.by_index.remove(&pending.local_index);
            return UdpOutcome::Dropped(DropReason::HandshakeFailed);
        };
        let session = Session::new(pending.local_index, resp.sender, transport, now, true);
        p.timers.clear(Timer::HandshakeRetry);
        let old_previous = p.previous.take();
        p.previous = p.current.replace(session);
        if let Some(old) = old_previous {
            self.by_index.remove(&old.local_index);
        }
        tracing::debug!(peer = %self.peers[id.0].cfg.name, addr = %from, hs_stage = "complete", "handshake complete (initiator)");
        self.on_authenticated(id, from, true);
        self.on_session(now, id);
        // Key confirmation: the responder may send only once it has heard
        // from us on the new session, so say something right away.
        let queued = std::mem::take(&mut self.peers[id.0].queue);
        if queued.is_empty() {
            self.send_keepalive(now, id);
        } else {
            let mut buf = vec![0u8; wire::MAX_DATAGRAM];
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
        p.timers.set(Timer::ZeroKeys, now + ZERO_KEYS_AFTER);
        if !p.connected {
            p.connected = true;
            if let Some(endpoint) = p.endpoint {
                self.events
                    .push_back(Event::Connected { peer: id, endpoint });
            }
        }
        // Tell the peer where we are now: it may have connected through a
        // stale candidate or the cache, and the DHT is minutes behind.
        self.send_record(now, id);
    }

    /// An authenticated packet from `from`: reset the silence timers and,
    /// if `roam`, move the endpoint there.
    fn on_authenticated(&mut self, id: PeerId, from: SocketAddr, roam: bool) {
        let p = &mut self.peers[id.0];
        // Only an answer on the path we send on proves that path works: a
        // moved peer's probes from elsewhere must not hide that our data
        // goes nowhere (the no-reply timer is what finds it a new path).
        if roam || p.endpoint.is_none_or(|e| e == from) {
            p.timers.clear(Timer::NoReply);
        }
        match p.endpoint {
            Some(old) if roam && old != from => self.change_endpoint(id, from),
            None => {
                p.endpoint = Some(from);
                p.paths
                    .set_addrs(p.endpoint.iter().chain(p.candidates.iter()).copied());
            }
            _ => {}
        }
    }

    fn change_endpoint(&mut self, id: PeerId, to: SocketAddr) {
        let p = &mut self.peers[id.0];
        let Some(from) = p.endpoint.replace(to) else {
            return;
        };
        if !p.paths.contains(to) {
            p.paths
                .set_addrs(p.endpoint.iter().chain(p.candidates.iter()).copied());
        }
        self.events
            .push_back(Event::EndpointChanged { peer: id, from, to });
    }

    /// Encrypt a control message on the current session and send it to
    /// `dst`, which need not be the endpoint (path probes test the others).
    fn send_control(&mut self, now: Instant, id: PeerId, dst: SocketAddr, msg: &wire::Control) {
        let mut plain = [0u8; wire::MAX_CONTROL_LEN];
        let Ok(n) = wire::emit_control(msg, &mut plain) else {
            return;
        };
        self.send_control_bytes(now, id, dst, &plain[..n]);
    }

    /// [`send_control`](Self::send_control) of a message already emitted.
    fn send_control_bytes(&mut self, now: Instant, id: PeerId, dst: SocketAddr, plain: &[u8]) {
        // Room for the padding too: `seal` pads to a multiple of PAD_TO.
        let mut buf = vec![0u8; plain.len() + OVERHEAD];
        if let Some(Ok(len)) = self.seal(now, id, plain, &mut buf) {
            buf.truncate(len);
            self.transmits.push_back(Transmit { dst, payload: buf });
        }
    }

    /// Our record, if [`push_record`](Self::push_record) gave one, to `id`'s
    /// endpoint on the current session (nothing without one).
    fn send_record(&mut self, now: Instant, id: PeerId) {
        let Some(dst) = self.peers[id.0].endpoint else {
            return;
        };
        // Taken out and put back: `seal` needs the whole node.
        let Some(msg) = self.record.take() else {
            return;
        };
        self.send_control_bytes(now, id, dst, &msg);
        self.record = Some(msg);
    }

    fn handle_control(&mut self, now: Instant, id: PeerId, from: SocketAddr, msg: wire::Control) {
        match msg {
            wire::Control::PathPing { id: probe } => {
                self.send_control(
                    now,
                    id,
                    from,
                    &wire::Control::PathPong {
                        id: probe,
                        observed: from,
                    },
                );
            }
            wire::Control::PathPong { id: probe, .. } => {
                let p = &mut self.peers[id.0];
                if !p.paths.on_pong(now, probe) {
                    return;
                }
                if let Some(better) = p.paths.better_than(now, p.endpoint) {
                    tracing::debug!(peer = %p.cfg.name, addr = %better, rtt = ?p.paths.rtt(better), "switching to a better path");
                    self.change_endpoint(id, better);
                }
            }
            wire::Control::Record(body) => {
                // One waiting record per peer, the newest written (datagrams
                // may arrive out of order): a peer that sends many before the
                // shell drains cannot grow the queue.
                match self.peer_records.iter_mut().find(|r| r.peer == id) {
                    Some(waiting) if body.timestamp >= waiting.body.timestamp => {
                        waiting.body = body;
                    }
                    Some(_) => {}
                    None => self.peer_records.push_back(PeerRecord { peer: id, body }),
                }
            }
        }
    }

    // ---------------------------------------------------------------- recv

    /// A datagram from the UDP socket. On `WriteTun`, `out[..len]` is the
    /// inner packet; `out` must be at least `datagram.len()`.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> UdpOutcome {
        match wire::parse(datagram) {
            Ok(Packet::Data(d)) => self.handle_data(now, from, d, out),
            Ok(Packet::Initiation(i)) => self.handle_initiation(now, from, i),
            Ok(Packet::Response(r)) => self.handle_response(now, from, r),
            Ok(Packet::CookieReply(_)) => UdpOutcome::Dropped(DropReason::CookieIgnored),
            Ok(Packet::Stun(_)) => UdpOutcome::Stun,
            Err(e) => UdpOutcome::Dropped(DropReason::Malformed(e)),
        }
    }

    fn handle_data(
        &mut self,
        now: Instant,
        from: SocketAddr,
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
        p.rx_bytes += (DATA_HEADER_LEN + d.ciphertext.len()) as u64;
        if slot == Slot::Next {
            // The initiator used the session: it is confirmed, promote it.
            let old_previous = p.previous.take();
            p.previous = p.current.take();
            p.current = p.next.take();
            if let Some(old) = old_previous {
                self.by_index.remove(&old.local_index);
            }
            self.on_session(now, id);
        }
        // Control messages (path probes) arrive on purpose from addresses
        // other than the path in use: they must not move it. Data from an
        // address we do not know means the peer moved: follow it.
        let is_control = len > 0 && !matches!(out[0] >> 4, 4 | 6);
        let known = self.peers[id.0].paths.contains(from);
        self.on_authenticated(id, from, !is_control && !known);
        // A peer that only receives still has to rekey before the session
        // is rejected.
        let p = &self.peers[id.0];
        let stale = p
            .last_handshake
            .is_some_and(|t| now.saturating_duration_since(t) >= RECV_REKEY_AFTER_TIME);
        if stale && p.rekey_after == REKEY_AFTER_TIME && p.pending.is_none() {
            self.initiate(now, id);
        }
        if len == 0 {
            return UdpOutcome::Handled; // keepalive
        }
        if is_control {
            return match wire::parse_control(&out[..len]) {
                Ok(msg) => {
                    self.handle_control(now, id, from, msg);
                    UdpOutcome::Handled
                }
                Err(e) => UdpOutcome::Dropped(DropReason::Control(e)),
            };
        }
        let hdr = match wire::parse_ip(&out[..len]) {
            Ok(h) => h,
            Err(e) => return UdpOutcome::Dropped(DropReason::NotIp(e)),
        };
        // Cryptokey routing: the peer may only speak for its allowed_ips.
        if self.routes.lookup(hdr.src) != Some(id) {
            return UdpOutcome::Dropped(DropReason::SourceNotAllowed);
        }
        self.peers[id.0]
            .timers
            .set_if_unset(Timer::PassiveKeepalive, now + KEEPALIVE_TIMEOUT);
        UdpOutcome::WriteTun { len: hdr.total_len }
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
                if now.saturating_duration_since(h.started) >= REKEY_ATTEMPT_TIME {
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
                p.timers.set(Timer::PathProbe, p.paths.next_round(now));
                // Probes keep an idle session alive too: without a rekey it
                // would expire, and with it the NAT mappings the probes hold
                // open, leaving both sides behind closed NATs.
                let rekey = p
                    .last_handshake
                    .is_some_and(|t| now.saturating_duration_since(t) >= p.rekey_after);
                if rekey && p.pending.is_none() {
                    self.initiate(now, id);
                }
                for (addr, probe) in pings {
                    self.send_control(now, id, addr, &wire::Control::PathPing { id: probe });
                }
            }
            Timer::PassiveKeepalive => {
                if self.peers[id.0]
                    .current
                    .as_ref()
                    .is_some_and(|s| s.is_valid(now))
                {
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
        if let Some(dst) = self.peers[id.0].endpoint {
            self.send_control_bytes(now, id, dst, plain);
        }
    }

    /// Indices of the sessions held for a peer (current, previous, next).
    pub(crate) fn session_indices(&self, id: PeerId) -> [Option<u32>; 3] {
        let p = &self.peers[id.0];
        [p.current.as_ref(), p.previous.as_ref(), p.next.as_ref()].map(|s| s.map(|s| s.local_index))
    }
}
