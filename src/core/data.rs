//! The data half of a node: sealing TUN packets and opening data messages
//! for peers with a settled path (direct, or through a relay), passing
//! relay frames on when we relay, and nothing else.
//!
//! [`DataPlane`] owns the per-packet hot state: which session each peer
//! sends on and to which address, the sessions it may open, and a snapshot
//! of cryptokey routing. It decides nothing: [`Node`](super::Node) (the
//! control half) publishes what the data half should do as [`DataUpdate`]s
//! (drained with `Node::poll_data_update`) whenever a session is installed,
//! rotated or dropped, a route moves or the allowed IPs change, and the
//! data half reports back what the control half's timers need as
//! [`Activity`] (coalesced: a peer's activity waits up to [`REPORT_EVERY`]
//! for its report, so a lone packet's round trip never waits on a wakeup
//! of the control half).
//!
//! It carries the steady relayed flow as well: packets for a peer routed
//! through a relay are framed and sealed for the hop, deliveries from that
//! relay opened, and, when we relay, Forward frames between members it
//! sends to directly re-sealed as Deliveries within the shared service's
//! limits. Everything it does not handle itself — handshakes, cookies,
//! STUN, control messages, introductions, packets for peers with no
//! settled path, a peer's data from an address or relay that is not its
//! route (roaming) — it hands back untouched ([`DataTun::Control`],
//! [`DataUdp::Control`]) or, for messages it already opened, as plaintext
//! ([`DataUdp::Opened`]).
//!
//! So the thread that runs it never does a Diffie-Hellman, never waits on a
//! timer and never allocates: the shell runs it on a thread of its own
//! (`daemon::data`), and the simulator runs both halves in one
//! ([`Split`], test-only) so every simulated packet crosses the same seam.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::node::{DropReason, PeerId, Via};
use super::routes::RouteTable;
use super::session::{self, SEAL_OVERHEAD, Session, SessionError};
use super::timers::REKEY_AFTER_MESSAGES;
use crate::relay::{Refusal, SharedService};
use crate::wire::{self, DATA_HEADER_LEN, Packet, RELAY_HEADER_LEN, RelayKind, TAG_LEN};

/// Longest a peer's activity waits for its report. The control half's
/// shortest timer that reads it (path failover) is 1 s, and reports carry
/// the events' own times, so lateness only delays what those timers see.
/// Each report wakes both threads of the daemon; at 20 ms those wakeups
/// fell between a ping's packets often enough to shuffle which cores the
/// next round trip woke on (0.34 against 0.27-0.30 ms in the peers bench).
pub const REPORT_EVERY: Duration = Duration::from_millis(250);

/// What relaying adds to a datagram: the frame's header and the hop's
/// data message framing (its padding is capped at the MTU).
const RELAY_COST: usize = RELAY_HEADER_LEN + DATA_HEADER_LEN + TAG_LEN;

/// The most send counters a batch reserves on a session at once: a
/// worker's packet reaches the receiver behind at most about two such
/// blocks of every other worker's, which must stay within its replay
/// window.
pub const COUNTER_BLOCK: u64 = 256;

/// [`session::stage`] for the data half's outcomes.
fn stage(payload: &[u8], out: &mut [u8]) -> Result<usize, DataTun> {
    session::stage(payload, out).map_err(|e| DataTun::Dropped(DropReason::Session(e)))
}

/// The largest packet a relayed path takes on an interface of `mtu`: a
/// relayed datagram must fit where a direct one does (past it, it would
/// leave in fragments and fail every GSO send).
pub(super) fn relay_budget(mtu: usize) -> usize {
    mtu.saturating_sub(RELAY_COST)
}

/// How often a send session past its rekey point asks again.
const REKEY_ASK_EVERY: Duration = Duration::from_secs(1);

/// What the data half does for one peer. `Default` is "nothing: hand it
/// all to the control half".
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    /// The peer's route: data messages from any other address (or, for a
    /// relayed peer, through any other member) go to the control half (the
    /// peer may have moved). A relayed peer's traffic is framed for the
    /// relay and sealed on the relay's own view, so it needs one.
    pub path: Option<Via>,
    /// Its Ed25519 public key, which names it in relay frames; zero for a
    /// peer the data half must not forward to or take deliveries from.
    pub key: [u8; 32],
    /// The sessions the data half opens (current and previous). A
    /// responder's unconfirmed session is not among them: its first data
    /// message confirms it, and that is the control half's business.
    pub rx: Vec<Session>,
    /// What to seal TUN packets on; `None` hands them over.
    pub tx: Option<TxView>,
}

#[derive(Debug, Clone)]
pub struct TxView {
    pub session: Session,
    /// Past this, each seal asks the control half for a rekey.
    pub rekey_at: Instant,
}

impl PeerView {
    /// Equal for the data half's purposes: same sessions, same route.
    pub fn same(&self, other: &PeerView) -> bool {
        self.path == other.path
            && self.key == other.key
            && self.rx.len() == other.rx.len()
            && self.rx.iter().zip(&other.rx).all(|(a, b)| a.same(b))
            && match (&self.tx, &other.tx) {
                (None, None) => true,
                (Some(a), Some(b)) => a.session.same(&b.session) && a.rekey_at == b.rekey_at,
                _ => false,
            }
    }

    /// The address data goes to and comes from, for a direct route.
    pub fn direct(&self) -> Option<SocketAddr> {
        match self.path {
            Some(Via::Direct(a)) => Some(a),
            _ => None,
        }
    }
}

/// What the control half publishes for the data half.
#[derive(Debug, Clone)]
pub enum DataUpdate {
    Peer {
        id: PeerId,
        view: PeerView,
    },
    /// Cryptokey routing changed (a reload).
    Routes(RouteTable),
    /// We relay for other members (`[relay] serve`), or no longer.
    Relay(Option<SharedService>),
}

/// What a peer did on the data half since its last report, for the
/// control half's timers and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    pub peer: PeerId,
    /// Data sent: first, first after the last receive, last.
    pub sent: Option<Sent>,
    /// Last data received, and on which path.
    pub received: Option<(Instant, Via)>,
    /// Last relay frame opened on this peer's session (it relays for us,
    /// or we for it): proof of the direct path to it, but no data of its.
    pub heard: Option<(Instant, SocketAddr)>,
    /// Last relay frame sealed on this peer's session.
    pub framed: Option<Instant>,
    /// Bytes on the wire, this peer's sessions (relay frames included).
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Of those, this peer's end-to-end datagrams through a relay.
    pub relay_tx_bytes: u64,
    pub relay_rx_bytes: u64,
    /// Packets for this peer dropped on the way to its relay (the frame
    /// or the hop's seal failed), as the control half counts its own.
    pub relay_drops: u64,
    /// A seal passed the rekey point.
    pub rekey: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub first: Instant,
    pub first_after_rx: Option<Instant>,
    pub last: Instant,
}

/// Result of [`DataPlane::handle_tun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataTun {
    /// `out[..len]` is a data message for `dst` (the peer, or its relay).
    Send {
        dst: SocketAddr,
        len: usize,
    },
    /// `out[..len]` is an IP packet for the TUN device: an ICMP error
    /// telling the sender the packet is too big for the relayed path.
    Reply {
        len: usize,
    },
    /// Not the data half's to send: give the packet to the control half.
    Control,
    Dropped(DropReason),
}

/// Result of [`DataPlane::handle_udp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataUdp {
    /// `out[..len]` is an inner IP packet for the TUN device.
    WriteTun {
        len: usize,
    },
    /// We relay: `out[..len]` is the frame, sealed for the member at `dst`.
    Forward {
        dst: SocketAddr,
        len: usize,
    },
    /// Opened on `peer`'s session, which came `via` there, but not an IP
    /// packet (a keepalive, a control message, a relay frame that is not
    /// steady traffic): `out[..len]` is the plaintext for the control
    /// half; `wire_len` is what it cost on the wire.
    Opened {
        peer: PeerId,
        via: Via,
        len: usize,
        wire_len: usize,
    },
    /// Not the data half's to open: give the datagram to the control half.
    Control,
    Dropped(DropReason),
}

#[derive(Debug, Default)]
struct DataPeer {
    view: PeerView,
    pending: Activity,
    /// Queued in `DataPlane::dirty`: since when.
    since: Option<Instant>,
    /// When this view's send session last asked for a rekey: once a
    /// second is plenty (the control half may be mid-handshake already).
    rekey_asked: Option<Instant>,
}

/// What a seal is for, as the control half's timers count it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seal {
    /// A TUN packet (keeps the peer's data timers running).
    Data { relayed: bool },
    /// A relay frame on a hop's session.
    Frame,
}

/// The data half. See the module docs.
#[derive(Debug)]
pub struct DataPlane {
    peers: Vec<DataPeer>,
    by_index: HashMap<u32, (PeerId, Session)>,
    /// Peers by Ed25519 key, as relay frames name them.
    by_key: HashMap<[u8; 32], PeerId>,
    routes: RouteTable,
    relay: Option<SharedService>,
    /// Peers with pending activity, in the order it began.
    dirty: Vec<PeerId>,
    /// A relay frame being built or taken apart, allocated once.
    frame: Vec<u8>,
    /// Padding stops at the interface MTU ([`DataPlane::set_mtu`]).
    mtu: usize,
    /// TUN packets left in the batch being sealed ([`DataPlane::begin_batch`]);
    /// 0 outside one.
    batch_left: u64,
    /// Send counters reserved for the batch: per session, the next one
    /// and the end of the block.
    reserved: Vec<(Session, u64, u64)>,
}

impl Default for DataPlane {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            by_index: HashMap::new(),
            by_key: HashMap::new(),
            routes: RouteTable::default(),
            relay: None,
            dirty: Vec::new(),
            frame: vec![0; RELAY_HEADER_LEN + wire::MAX_DATAGRAM + SEAL_OVERHEAD],
            mtu: usize::MAX,
            batch_left: 0,
            reserved: Vec::new(),
        }
    }
}

impl DataPlane {
    /// The TUN device's MTU: no padded packet grows past it.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    pub fn apply(&mut self, update: DataUpdate) {
        match update {
            DataUpdate::Routes(routes) => self.routes = routes,
            DataUpdate::Relay(service) => self.relay = service,
            DataUpdate::Peer { id, view } => {
                if self.peers.len() <= id.0 {
                    self.peers.resize_with(id.0 + 1, DataPeer::default);
                }
                let p = &mut self.peers[id.0];
                let same_tx = match (&p.view.tx, &view.tx) {
                    (Some(a), Some(b)) => a.session.same(&b.session),
                    _ => false,
                };
                if !same_tx {
                    p.rekey_asked = None;
                }
                for s in &p.view.rx {
                    self.by_index.remove(&s.local_index);
                }
                for s in &view.rx {
                    self.by_index.insert(s.local_index, (id, s.clone()));
                }
                if self.by_key.get(&p.view.key) == Some(&id) {
                    self.by_key.remove(&p.view.key);
                }
                if view.key != [0; 32] {
                    self.by_key.insert(view.key, id);
                }
                p.view = view;
            }
        }
    }

    /// The cryptokey routes it works from (tests: a second worker's copy).
    #[cfg(test)]
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The view the data half works from for `id` (tests, status).
    pub fn view(&self, id: PeerId) -> Option<&PeerView> {
        self.peers.get(id.0).map(|p| &p.view)
    }

    /// The next `n` calls of [`handle_tun`](Self::handle_tun) are one
    /// batch (one TUN read): each session they seal on reserves its
    /// counters a block at a time (the rest of the batch, at most
    /// [`COUNTER_BLOCK`]) instead of once per packet. Other workers'
    /// batches on the same session take numbers after the block, so a
    /// packet reaches the receiver behind at most about two blocks per
    /// other worker (one sealed before it, one while it waited in the
    /// open GSO run).
    pub fn begin_batch(&mut self, n: usize) {
        self.reserved.clear();
        self.batch_left = n as u64;
    }

    /// The batch is over: counters reserved and not used are let go (a
    /// block kept past its batch would send old numbers later, behind
    /// other workers', and risk falling out of the receiver's window).
    pub fn end_batch(&mut self) {
        self.reserved.clear();
        self.batch_left = 0;
    }

    /// The next send counter on `session`: from the batch's block
    /// (`reserved`), reserving one for the rest of the batch (`left`
    /// packets, at most [`COUNTER_BLOCK`]) first if it has none left;
    /// outside a batch, one on its own.
    fn counter(reserved: &mut Vec<(Session, u64, u64)>, left: u64, session: &Session) -> u64 {
        if left == 0 {
            return session.reserve(1);
        }
        if let Some((_, next, end)) = reserved.iter_mut().find(|(s, ..)| s.same(session))
            && next < end
        {
            *next += 1;
            return *next - 1;
        }
        let block = left.min(COUNTER_BLOCK);
        let first = session.reserve(block);
        reserved.retain(|(s, ..)| !s.same(session));
        reserved.push((session.clone(), first + 1, first + block));
        first
    }

    /// An IP packet read from the TUN device; `out` as for
    /// [`Node::handle_tun`](super::Node::handle_tun).
    pub fn handle_tun(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> DataTun {
        match stage(packet, out) {
            Ok(len) => self.handle_tun_in_place(now, out, len),
            Err(e) => e,
        }
    }

    /// As [`handle_tun`](Self::handle_tun) for a packet already where its
    /// datagram carries it, `buf[DATA_HEADER_LEN..][..len]` (the data plane
    /// writes TUN segments there): a direct path seals it where it lies.
    /// `Send { len }`/`Reply { len }`: `buf[..len]`; `Control`: the packet
    /// is still where it was.
    pub fn handle_tun_in_place(&mut self, now: Instant, buf: &mut [u8], len: usize) -> DataTun {
        let outcome = self.route_and_seal(now, buf, len);
        self.batch_left = self.batch_left.saturating_sub(1);
        outcome
    }

    fn route_and_seal(&mut self, now: Instant, buf: &mut [u8], len: usize) -> DataTun {
        let Some(packet) = buf.get(DATA_HEADER_LEN..DATA_HEADER_LEN + len) else {
            return DataTun::Dropped(DropReason::Session(SessionError::Buffer));
        };
        let (id, hdr, packet) = match self.routes.outbound(packet) {
            Ok(routed) => routed,
            Err(reason) => return DataTun::Dropped(reason),
        };
        // Bytes past the IP length (padding) stay behind.
        let len = packet.len();
        let Some(path) = self.peers.get(id.0).and_then(|p| p.view.path) else {
            return DataTun::Control;
        };
        match path {
            Via::Direct(dst) => {
                let data = Seal::Data { relayed: false };
                match self.seal(now, id, buf, len, self.mtu, data) {
                    Ok(len) => DataTun::Send { dst, len },
                    Err(other) => other,
                }
            }
            Via::Relay(r) => {
                // Check the hop first: a packet sealed end to end and then
                // handed over would cost a counter and a report for nothing.
                let Some(dst) = self.hop(now, r) else {
                    return DataTun::Control;
                };
                // Sealed end to end in the frame (out of `buf`, which
                // keeps the packet until that worked), then the frame
                // sealed for the hop.
                let mut frame = std::mem::take(&mut self.frame);
                let sealed = self.seal_relayed(now, id, r, buf, len, &hdr, &mut frame);
                self.frame = frame;
                match sealed {
                    Ok(len) => DataTun::Send { dst, len },
                    Err(DataTun::Dropped(reason)) => {
                        let p = &mut self.peers[id.0];
                        p.pending.relay_drops += 1;
                        Self::mark(&mut self.dirty, id, &mut p.since, now);
                        DataTun::Dropped(reason)
                    }
                    Err(other) => other,
                }
            }
        }
    }

    /// Packet `buf[DATA_HEADER_LEN..][..len]` for `id`, whose path is
    /// through member `r`: sealed end to end into a Forward frame in
    /// `frame`, the frame sealed for the hop into `buf`.
    #[allow(clippy::too_many_arguments)]
    fn seal_relayed(
        &mut self,
        now: Instant,
        id: PeerId,
        r: PeerId,
        buf: &mut [u8],
        len: usize,
        hdr: &wire::IpHeader,
        frame: &mut [u8],
    ) -> Result<usize, DataTun> {
        let inner = &mut frame[RELAY_HEADER_LEN..];
        stage(&buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len], inner)?;
        // The frame and the hop's seal must fit where a direct datagram
        // does: a packet that does not would leave in fragments (and fail
        // every GSO send), so its sender hears the relayed path's size
        // instead, as from a router.
        let budget = relay_budget(self.mtu);
        if len > budget {
            let packet = &inner[DATA_HEADER_LEN..DATA_HEADER_LEN + len];
            if let Some(n) = wire::too_big(packet, hdr, budget, buf) {
                return Err(DataTun::Reply { len: n });
            }
        }
        let n = self.seal(now, id, inner, len, budget, Seal::Data { relayed: true })?;
        let key = self.peers[id.0].view.key;
        let total = wire::emit_relay_header(RelayKind::Forward, &key, n, frame)
            .map_err(|e| DataTun::Dropped(DropReason::RelayFrame(e)))?;
        let staged = stage(&frame[..total], buf)?;
        // The packet is gone from `buf` now: a hop that cannot seal after
        // all (its counters ran out since `hop` looked) drops it.
        self.seal(now, r, buf, staged, self.mtu, Seal::Frame)
            .map_err(|e| match e {
                DataTun::Control => DataTun::Dropped(DropReason::Session(SessionError::Expired)),
                other => other,
            })
    }

    /// Where frames through member `r` go, if the data half can seal them
    /// on its session now.
    fn hop(&self, now: Instant, r: PeerId) -> Option<SocketAddr> {
        let h = &self.peers.get(r.0)?.view;
        h.tx.as_ref().filter(|t| t.session.is_valid(now))?;
        h.direct()
    }

    /// Seal the `len` bytes at `buf[DATA_HEADER_LEN..]` (padded, up to
    /// `limit`) on `id`'s send session where they lie and note it for the
    /// control half's timers: the sealed length, or the outcome for a
    /// packet the data half cannot send (no session, expired: `buf`
    /// untouched; an error).
    fn seal(
        &mut self,
        now: Instant,
        id: PeerId,
        buf: &mut [u8],
        len: usize,
        limit: usize,
        what: Seal,
    ) -> Result<usize, DataTun> {
        let p = &mut self.peers[id.0];
        let Some(tx) = &p.view.tx else {
            return Err(DataTun::Control);
        };
        let counter = Self::counter(&mut self.reserved, self.batch_left, &tx.session);
        let len = match tx.session.seal_in_place(now, counter, buf, len, limit) {
            Ok(len) => len,
            // Expired: the control half queues it and starts a handshake.
            Err(SessionError::Expired) => return Err(DataTun::Control),
            Err(e) => return Err(DataTun::Dropped(DropReason::Session(e))),
        };
        let rekey = (now >= tx.rekey_at || tx.session.messages_sent() >= REKEY_AFTER_MESSAGES)
            && p.rekey_asked
                .is_none_or(|t| now.saturating_duration_since(t) >= REKEY_ASK_EVERY);
        if rekey {
            p.rekey_asked = Some(now);
        }
        let a = &mut p.pending;
        match what {
            Seal::Data { relayed } => {
                a.sent = Some(match a.sent {
                    None => Sent {
                        first: now,
                        first_after_rx: a.received.map(|_| now),
                        last: now,
                    },
                    Some(s) => Sent {
                        first_after_rx: s.first_after_rx.or(a.received.map(|_| now)),
                        last: now,
                        ..s
                    },
                });
                if relayed {
                    a.relay_tx_bytes += len as u64;
                }
            }
            Seal::Frame => a.framed = Some(now),
        }
        a.tx_bytes += len as u64;
        a.rekey |= rekey;
        Self::mark(&mut self.dirty, id, &mut p.since, now);
        Ok(len)
    }

    /// A datagram from `from`; `out` as for
    /// [`Node::handle_udp`](super::Node::handle_udp).
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> DataUdp {
        let Ok(Packet::Data(d)) = wire::parse(datagram) else {
            return DataUdp::Control;
        };
        let Some((id, session)) = self.by_index.get(&d.receiver) else {
            return DataUdp::Control;
        };
        let id = *id;
        let via = Via::Direct(from);
        if self.peers[id.0].view.path != Some(via) {
            return DataUdp::Control;
        }
        let len = match session.decrypt(now, d.counter, d.ciphertext, out) {
            Ok(n) => n,
            Err(e) => return DataUdp::Dropped(DropReason::Session(e)),
        };
        let wire_len = DATA_HEADER_LEN + d.ciphertext.len();
        if len > 0 && matches!(out[0] >> 4, 4 | 6) {
            return self.deliver_ip(now, id, via, len, wire_len, out);
        }
        if wire::is_relay_frame(&out[..len])
            && let Some(done) = self.relay_frame(now, id, len, out)
        {
            let a = &mut self.peers[id.0].pending;
            a.heard = Some((now, from));
            a.rx_bytes += wire_len as u64;
            Self::mark(&mut self.dirty, id, &mut self.peers[id.0].since, now);
            return done;
        }
        DataUdp::Opened {
            peer: id,
            via,
            len,
            wire_len,
        }
    }

    /// `out[..len]` is an IP packet `id` sent us `via`: checked against
    /// cryptokey routing (the peer may only speak for its allowed_ips).
    fn deliver_ip(
        &mut self,
        now: Instant,
        id: PeerId,
        via: Via,
        len: usize,
        wire_len: usize,
        out: &[u8],
    ) -> DataUdp {
        let hdr = match self.routes.inbound(id, &out[..len]) {
            Ok(h) => h,
            Err(reason) => return DataUdp::Dropped(reason),
        };
        let p = &mut self.peers[id.0];
        let a = &mut p.pending;
        a.received = Some((now, via));
        if let Some(s) = &mut a.sent {
            s.first_after_rx = None;
        }
        a.rx_bytes += wire_len as u64;
        if matches!(via, Via::Relay(_)) {
            a.relay_rx_bytes += wire_len as u64;
        }
        Self::mark(&mut self.dirty, id, &mut p.since, now);
        DataUdp::WriteTun { len: hdr.total_len }
    }

    /// `out[..len]` is a relay frame member `hop` sent us: the
    /// steady flow (a data message delivered from a peer whose route is
    /// `hop`; a Forward between members we both reach directly, when we
    /// relay) is handled here; `None` leaves it to the control half, with
    /// `out` untouched.
    fn relay_frame(
        &mut self,
        now: Instant,
        hop: PeerId,
        len: usize,
        out: &mut [u8],
    ) -> Option<DataUdp> {
        let (kind, key, n) = match wire::parse_relay(&out[..len]) {
            Ok(f) => (f.kind, f.key, f.datagram.len()),
            Err(_) => return None,
        };
        let peer = self.by_key.get(&key).copied().filter(|p| *p != hop)?;
        let end = RELAY_HEADER_LEN + n;
        match kind {
            RelayKind::Deliver => {
                if self.peers[peer.0].view.path != Some(Via::Relay(hop)) {
                    return None;
                }
                // Out of `out`, which the datagram opens into.
                let mut frame = std::mem::take(&mut self.frame);
                frame[..n].copy_from_slice(&out[RELAY_HEADER_LEN..end]);
                let done = self.open_delivered(now, hop, peer, &frame[..n], out);
                self.frame = frame;
                done
            }
            RelayKind::Forward => {
                let service = self.relay.as_ref()?;
                let dst = self.hop(now, peer)?;
                if let Err(why) = service.lock().admit(now, hop.0, n) {
                    return Some(DataUdp::Dropped(DropReason::Relay(why)));
                }
                let src = self.peers[hop.0].view.key;
                // The datagram moves up to where the sealed frame carries
                // it, behind a Deliver header naming its sender.
                if out.len() < DATA_HEADER_LEN + end {
                    return Some(DataUdp::Dropped(DropReason::Session(SessionError::Buffer)));
                }
                out.copy_within(RELAY_HEADER_LEN..end, DATA_HEADER_LEN + RELAY_HEADER_LEN);
                let sealed = wire::emit_relay_header(
                    RelayKind::Deliver,
                    &src,
                    n,
                    &mut out[DATA_HEADER_LEN..],
                )
                .map_err(|e| DataTun::Dropped(DropReason::RelayFrame(e)))
                .and_then(|total| self.seal(now, peer, out, total, self.mtu, Seal::Frame));
                Some(match sealed {
                    Ok(len) => {
                        if let Some(s) = &self.relay {
                            s.lock().delivered(peer.0, n);
                        }
                        DataUdp::Forward { dst, len }
                    }
                    Err(DataTun::Dropped(reason)) => DataUdp::Dropped(reason),
                    Err(_) => DataUdp::Dropped(DropReason::Relay(Refusal::NoSession)),
                })
            }
            RelayKind::Introduce | RelayKind::Introduced => None,
        }
    }

    /// `datagram` came from `peer` through relay `hop`: a data message on
    /// one of `peer`'s sessions is opened here; anything else (handshakes)
    /// is the control half's, with `out` untouched.
    fn open_delivered(
        &mut self,
        now: Instant,
        hop: PeerId,
        peer: PeerId,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<DataUdp> {
        let Ok(Packet::Data(d)) = wire::parse(datagram) else {
            return None;
        };
        // A relay may only speak for the member it names: the index must
        // be one of that member's.
        let (owner, session) = self.by_index.get(&d.receiver)?;
        if *owner != peer {
            return Some(DataUdp::Dropped(DropReason::RelayMismatch));
        }
        let len = match session.decrypt(now, d.counter, d.ciphertext, out) {
            Ok(n) => n,
            Err(e) => return Some(DataUdp::Dropped(DropReason::Session(e))),
        };
        let via = Via::Relay(hop);
        let wire_len = datagram.len();
        Some(if len > 0 && matches!(out[0] >> 4, 4 | 6) {
            self.deliver_ip(now, peer, via, len, wire_len, out)
        } else {
            DataUdp::Opened {
                peer,
                via,
                len,
                wire_len,
            }
        })
    }

    fn mark(dirty: &mut Vec<PeerId>, id: PeerId, since: &mut Option<Instant>, now: Instant) {
        if since.is_none() {
            *since = Some(now);
            dirty.push(id);
        }
    }

    /// The next report due at `now`: a peer's activity once it is
    /// [`REPORT_EVERY`] old, a rekey request at once, everything when `all`.
    pub fn poll_activity(&mut self, now: Instant, all: bool) -> Option<Activity> {
        let at = self.dirty.iter().position(|id| {
            let p = &self.peers[id.0];
            all || p.pending.rekey
                || p.since
                    .is_some_and(|t| now.saturating_duration_since(t) >= REPORT_EVERY)
        })?;
        let id = self.dirty.swap_remove(at);
        let p = &mut self.peers[id.0];
        p.since = None;
        Some(Activity {
            peer: id,
            ..std::mem::take(&mut p.pending)
        })
    }

    /// When the next report falls due, if any activity waits for one.
    pub fn next_report(&self) -> Option<Instant> {
        self.dirty
            .iter()
            .filter_map(|id| self.peers[id.0].since)
            .min()
            .map(|t| t + REPORT_EVERY)
    }
}
