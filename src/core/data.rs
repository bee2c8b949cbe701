//! The data half of a node: sealing TUN packets and opening data messages
//! for peers with a settled direct path, and nothing else.
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
//! of the control half). Everything it does not handle
//! itself — handshakes, cookies, STUN, control messages, relay frames,
//! packets for peers with no settled direct path, a peer's data from an
//! address that is not its route (roaming) — it hands back untouched
//! ([`DataTun::Control`], [`DataUdp::Control`]) or, for control messages it
//! already opened, as plaintext ([`DataUdp::Opened`]).
//!
//! So the thread that runs it never does a Diffie-Hellman, never waits on a
//! timer and never allocates: the shell runs it on a thread of its own
//! (`daemon::data`), and the simulator runs both halves in one
//! ([`Split`], test-only) so every simulated packet crosses the same seam.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::node::{DropReason, PeerId};
use super::routes::RouteTable;
use super::session::{Session, SessionError};
use super::timers::REKEY_AFTER_MESSAGES;
use crate::wire::{self, DATA_HEADER_LEN, Packet};

/// Longest a peer's activity waits for its report. The control half's
/// shortest timer that reads it (path failover) is 1 s.
pub const REPORT_EVERY: Duration = Duration::from_millis(20);

/// How often a send session past its rekey point asks again.
const REKEY_ASK_EVERY: Duration = Duration::from_secs(1);

/// What the data half does for one peer. `Default` is "nothing: hand it
/// all to the control half".
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    /// The direct address the peer's route uses. Data messages from any
    /// other address go to the control half (the peer may have moved).
    pub from: Option<SocketAddr>,
    /// The sessions the data half opens (current and previous). A
    /// responder's unconfirmed session is not among them: its first data
    /// message confirms it, and that is the control half's business.
    pub rx: Vec<Session>,
    /// Where and on what to seal TUN packets; `None` hands them over.
    pub tx: Option<TxView>,
}

#[derive(Debug, Clone)]
pub struct TxView {
    pub session: Session,
    pub dst: SocketAddr,
    /// Past this, each seal asks the control half for a rekey.
    pub rekey_at: Instant,
}

impl PeerView {
    /// Equal for the data half's purposes: same sessions, same addresses.
    pub fn same(&self, other: &PeerView) -> bool {
        self.from == other.from
            && self.rx.len() == other.rx.len()
            && self.rx.iter().zip(&other.rx).all(|(a, b)| a.same(b))
            && match (&self.tx, &other.tx) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.session.same(&b.session) && a.dst == b.dst && a.rekey_at == b.rekey_at
                }
                _ => false,
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
}

/// What a peer did on the data half since its last report, for the
/// control half's timers and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub peer: PeerId,
    /// Data sent: first, first after the last receive, last.
    pub sent: Option<Sent>,
    /// Last data received, and from where.
    pub received: Option<(Instant, SocketAddr)>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
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
    /// `out[..len]` is a data message for `dst`.
    Send {
        dst: SocketAddr,
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
    /// Opened on `peer`'s session, but not an IP packet (a keepalive, a
    /// control message, a relay frame): `out[..len]` is the plaintext for
    /// the control half; `wire_len` is what it cost on the wire.
    Opened {
        peer: PeerId,
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
    pending: Pending,
    /// When this view's send session last asked for a rekey: once a
    /// second is plenty (the control half may be mid-handshake already).
    rekey_asked: Option<Instant>,
}

/// Activity not yet reported.
#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    sent: Option<Sent>,
    received: Option<(Instant, SocketAddr)>,
    tx_bytes: u64,
    rx_bytes: u64,
    rekey: bool,
    /// Queued in `DataPlane::dirty`: since when.
    since: Option<Instant>,
}

/// The data half. See the module docs.
#[derive(Debug)]
pub struct DataPlane {
    peers: Vec<DataPeer>,
    by_index: HashMap<u32, (PeerId, Session)>,
    routes: RouteTable,
    /// Peers with pending activity, in the order it began.
    dirty: Vec<PeerId>,
    /// Padding scratch for [`Session::seal_padded`], allocated once.
    scratch: Vec<u8>,
    /// Padding stops at the interface MTU ([`DataPlane::set_mtu`]).
    mtu: usize,
}

impl Default for DataPlane {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            by_index: HashMap::new(),
            routes: RouteTable::default(),
            dirty: Vec::new(),
            scratch: vec![0; wire::MAX_DATAGRAM],
            mtu: usize::MAX,
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
                p.view = view;
            }
        }
    }

    /// The view the data half works from for `id` (tests, status).
    pub fn view(&self, id: PeerId) -> Option<&PeerView> {
        self.peers.get(id.0).map(|p| &p.view)
    }

    /// An IP packet read from the TUN device; `out` as for
    /// [`Node::handle_tun`](super::Node::handle_tun).
    pub fn handle_tun(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> DataTun {
        let hdr = match wire::parse_ip(packet) {
            Ok(h) => h,
            Err(e) => return DataTun::Dropped(DropReason::NotIp(e)),
        };
        let Some(id) = self.routes.lookup(hdr.dst) else {
            return DataTun::Dropped(DropReason::NoRoute);
        };
        let Some(p) = self.peers.get_mut(id.0) else {
            return DataTun::Control;
        };
        let Some(tx) = &p.view.tx else {
            return DataTun::Control;
        };
        let packet = &packet[..hdr.total_len];
        match tx
            .session
            .seal_padded(now, packet, self.mtu, &mut self.scratch, out)
        {
            Ok(len) => {
                let rekey = (now >= tx.rekey_at
                    || tx.session.messages_sent() >= REKEY_AFTER_MESSAGES)
                    && p.rekey_asked
                        .is_none_or(|t| now.saturating_duration_since(t) >= REKEY_ASK_EVERY);
                if rekey {
                    p.rekey_asked = Some(now);
                }
                let dst = tx.dst;
                let a = &mut p.pending;
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
                a.tx_bytes += len as u64;
                a.rekey |= rekey;
                Self::mark(&mut self.dirty, id, a, now);
                DataTun::Send { dst, len }
            }
            // Expired: the control half queues it and starts a handshake.
            Err(SessionError::Expired) => DataTun::Control,
            Err(e) => DataTun::Dropped(DropReason::Session(e)),
        }
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
        let p = &mut self.peers[id.0];
        if p.view.from != Some(from) {
            return DataUdp::Control;
        }
        let len = match session.decrypt(now, d.counter, d.ciphertext, out) {
            Ok(n) => n,
            Err(e) => return DataUdp::Dropped(DropReason::Session(e)),
        };
        let wire_len = DATA_HEADER_LEN + d.ciphertext.len();
        if len == 0 || !matches!(out[0] >> 4, 4 | 6) {
            return DataUdp::Opened {
                peer: id,
                len,
                wire_len,
            };
        }
        let hdr = match wire::parse_ip(&out[..len]) {
            Ok(h) => h,
            Err(e) => return DataUdp::Dropped(DropReason::NotIp(e)),
        };
        // Cryptokey routing: the peer may only speak for its allowed_ips.
        if self.routes.lookup(hdr.src) != Some(id) {
            return DataUdp::Dropped(DropReason::SourceNotAllowed);
        }
        let a = &mut p.pending;
        a.received = Some((now, from));
        if let Some(s) = &mut a.sent {
            s.first_after_rx = None;
        }
        a.rx_bytes += wire_len as u64;
        Self::mark(&mut self.dirty, id, a, now);
        DataUdp::WriteTun { len: hdr.total_len }
    }

    fn mark(dirty: &mut Vec<PeerId>, id: PeerId, a: &mut Pending, now: Instant) {
        if a.since.is_none() {
            a.since = Some(now);
            dirty.push(id);
        }
    }

    /// The next report due at `now`: a peer's activity once it is
    /// [`REPORT_EVERY`] old, a rekey request at once, everything when `all`.
    pub fn poll_activity(&mut self, now: Instant, all: bool) -> Option<Activity> {
        let at = self.dirty.iter().position(|id| {
            let p = &self.peers[id.0].pending;
            all || p.rekey
                || p.since
                    .is_some_and(|t| now.saturating_duration_since(t) >= REPORT_EVERY)
        })?;
        let id = self.dirty.swap_remove(at);
        let p = &mut self.peers[id.0];
        let a = std::mem::take(&mut p.pending);
        Some(Activity {
            peer: id,
            sent: a.sent,
            received: a.received,
            tx_bytes: a.tx_bytes,
            rx_bytes: a.rx_bytes,
            rekey: a.rekey,
        })
    }

    /// When the next report falls due, if any activity waits for one.
    pub fn next_report(&self) -> Option<Instant> {
        self.dirty
            .iter()
            .filter_map(|id| self.peers[id.0].pending.since)
            .min()
            .map(|t| t + REPORT_EVERY)
    }
}
