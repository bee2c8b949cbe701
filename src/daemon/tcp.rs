//! The relay's TCP transport, for members whose network blocks UDP: kith
//! datagrams, length-prefixed ([`crate::wire::StreamDecoder`]), over TCP.
//!
//! Two roles, both transparent to the core, which keeps addressing peers by
//! socket address:
//! - **Serving** (`[relay] serve = true` with a `tcp_port`): a listener
//!   whose connections carry datagrams like the UDP socket does. Each
//!   connection gets a *stream address* of its own in the discard-only
//!   prefix `100::/64` (RFC 6666), which no UDP datagram can come from: a
//!   datagram read from the connection is handed to the core as if it came
//!   from that address, and whatever the core sends there goes back on the
//!   connection (or nowhere, once it closed). `status` shows the
//!   connection's real address instead ([`TcpTransport::display`]).
//! - **Using**: for each peer with a `tcp_port` (a relay reached by its UDP
//!   endpoint), [`TcpFallback`] decides per datagram whether UDP or TCP
//!   carries it; over TCP, datagrams read back are handed to the core as if
//!   they came from the peer's UDP endpoint.
//!
//! Each connection is one task that reads and writes (when either side
//! ends, both do); the loop hears of datagrams and of connections opening
//! and closing through one bounded channel, and writes through a bounded
//! channel per connection (full = dropped and counted, as a UDP socket's
//! full buffer would drop). Against strangers on the relay port: at most
//! [`MAX_INBOUND`] connections (when full, the oldest one that never
//! carried an authenticated datagram makes room), [`MAX_PER_IP`] per IPv4
//! address or IPv6 /64, frames no longer than [`MAX_STREAM_DATAGRAM`], and
//! a connection that has carried
//! no authenticated datagram for [`AUTH_WITHIN`] (at first) or [`IDLE`]
//! (later) is closed ([`TcpTransport::sweep`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::relay::fallback::{Send, TcpFallback, Transport};
use crate::wire::{StreamDecoder, TYPE_INITIATION, emit_stream_frame};

/// Inbound connections at most (each costs a task and two buffers).
pub const MAX_INBOUND: usize = 256;
/// Inbound connections from one IP address at most.
pub const MAX_PER_IP: usize = 8;
/// A new connection must carry an authenticated datagram this soon ...
pub const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// ... and then one at least this often (members keep their relays alive
/// every 25 s).
pub const IDLE: Duration = Duration::from_secs(90);
/// Longest datagram a stream may carry: a 9000-byte MTU's relayed datagram
/// with room to spare. Anything longer is not kith.
pub const MAX_STREAM_DATAGRAM: usize = 9 * 1024 + 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long ends the connection (the
/// other side stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued per connection before new ones are dropped.
const WRITE_QUEUE: usize = 1024;
const EVENT_QUEUE: usize = 1024;

/// Is `addr` one of the stream addresses inbound connections get?
pub fn is_stream_addr(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(ip) => ip.segments()[..4] == [0x100, 0, 0, 0],
        IpAddr::V4(_) => false,
    }
}

/// The `n`-th connection's stream address: `[100::n]`, port = low bits.
fn stream_addr(n: u64) -> SocketAddr {
    let ip = Ipv6Addr::new(
        0x100,
        0,
        0,
        0,
        (n >> 48) as u16,
        (n >> 32) as u16,
        (n >> 16) as u16,
        n as u16,
    );
    SocketAddr::new(IpAddr::V6(ip), 1)
}

/// A datagram that arrived over TCP, addressed as the core knows its sender.
pub struct TcpDatagram {
    pub from: SocketAddr,
    pub data: Vec<u8>,
}

/// What [`TcpTransport::recv`] has for the loop.
pub enum TcpIn {
    Datagram(TcpDatagram),
    /// A member's connection to us closed: nothing reaches that address
    /// any more (`Node::handle_path_lost`).
    Lost(SocketAddr),
}

enum Event {
    Datagram(TcpDatagram),
    /// A connection to a relay (by its UDP endpoint) is up.
    Connected {
        relay: SocketAddr,
        attempt: u64,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A member connected to us.
    Accepted {
        addr: SocketAddr,
        real: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
        abort: tokio::task::AbortHandle,
    },
    /// A connection to a relay closed or could not be opened.
    LinkClosed {
        relay: SocketAddr,
        attempt: u64,
    },
    InboundClosed {
        addr: SocketAddr,
    },
}

/// A relay we may reach over TCP.
struct Link {
    tcp: SocketAddr,
    fallback: TcpFallback,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    /// The last initiation sent, sent again as soon as a connection opens
    /// (it was dropped, or lost over UDP, while there was none).
    pending_initiation: Option<Vec<u8>>,
    /// Numbers connection attempts: events of one the shell has given up
    /// on (closed on purpose when UDP came back) are ignored, so closing
    /// it is not a failure that backs off the next one.
    attempt: u64,
}

/// A member connected to us.
struct Inbound {
    real: SocketAddr,
    writer: mpsc::Sender<Vec<u8>>,
    abort: tokio::task::AbortHandle,
    accepted: Instant,
    last_auth: Option<Instant>,
}

pub struct TcpTransport {
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    inbound: HashMap<SocketAddr, Inbound>,
    links: HashMap<SocketAddr, Link>,
    listen_port: Option<u16>,
    /// Datagrams TCP should have carried but dropped: a full queue, or no
    /// connection (yet, or any more).
    pub dropped: u64,
}

impl TcpTransport {
    /// Listen on `listen_port` (when serving) and know `links`: (a relay's
    /// UDP endpoint, its TCP address).
    pub async fn new(
        listen_port: Option<u16>,
        links: Vec<(SocketAddr, SocketAddr)>,
    ) -> io::Result<Self> {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        if let Some(port) = listen_port {
            let listener = listen(port)?;
            info!(port, "relay: listening on TCP");
            tokio::spawn(accept_loop(listener, events_tx.clone()));
        }
        let mut t = Self {
            events_tx,
            events_rx,
            inbound: HashMap::new(),
            links: HashMap::new(),
            listen_port,
            dropped: 0,
        };
        for (udp, tcp) in links {
            t.add_link(udp, tcp);
        }
        Ok(t)
    }

    /// Know a relay reachable over TCP at `tcp` whose UDP endpoint is
    /// `udp` (also when its endpoint name resolves late, or moves).
    pub fn add_link(&mut self, udp: SocketAddr, tcp: SocketAddr) {
        if self.links.get(&udp).is_some_and(|l| l.tcp == tcp) {
            return;
        }
        self.links.insert(
            udp,
            Link {
                tcp,
                fallback: TcpFallback::default(),
                writer: None,
                pending_initiation: None,
                attempt: 0,
            },
        );
    }

    /// Forget the relay at `udp` (its peer left the config, or its
    /// endpoint or `tcp_port` changed): its connection, if any, closes.
    pub fn remove_link(&mut self, udp: SocketAddr) {
        if let Some(link) = self.links.remove(&udp)
            && link.writer.is_some()
        {
            info!(relay = %udp, tcp = %link.tcp, "relay: closing the TCP connection to a relay no longer configured");
        }
    }

    /// Close a member's connection to us (the member left the config).
    pub fn close_inbound(&mut self, addr: SocketAddr) {
        if let Some(c) = self.inbound.remove(&addr) {
            debug!(from = %c.real, "relay: closing the TCP connection of a removed member");
            c.abort.abort();
        }
    }

    pub fn listen_port(&self) -> Option<u16> {
        self.listen_port
    }

    /// True when nothing can ever go over TCP (the common case): the data
    /// path then skips every lookup.
    pub fn idle(&self) -> bool {
        self.links.is_empty() && self.listen_port.is_none()
    }

    /// Do we reach any relay over TCP when UDP fails?
    pub fn has_links(&self) -> bool {
        !self.links.is_empty()
    }

    /// Might datagrams for `dst` go over TCP (checked once per GSO run)?
    pub fn involves(&self, dst: SocketAddr) -> bool {
        !self.idle() && (is_stream_addr(dst) || self.links.contains_key(&dst))
    }

    /// Hand `datagram` for `dst` to TCP if that is its way. Returns true
    /// when UDP must carry it too (or alone).
    pub fn send(&mut self, now: Instant, dst: SocketAddr, datagram: &[u8]) -> bool {
        if self.idle() {
            return true;
        }
        if is_stream_addr(dst) {
            // A member's connection, or one that closed: never UDP.
            let queued = self
                .inbound
                .get(&dst)
                .is_some_and(|c| queue(&c.writer, datagram));
            if !queued {
                self.dropped += 1;
            }
            return false;
        }
        let Some(link) = self.links.get_mut(&dst) else {
            return true;
        };
        let initiation = datagram.first() == Some(&TYPE_INITIATION);
        let how = link.fallback.on_send(now, initiation);
        if how == Send::Udp {
            return true;
        }
        if initiation {
            link.pending_initiation = Some(datagram.to_vec());
        }
        let queued = link.writer.as_ref().is_some_and(|w| queue(w, datagram));
        if !queued {
            self.dropped += 1;
        }
        if link.writer.is_none() && link.fallback.should_connect(now) {
            info!(relay = %dst, tcp = %link.tcp, "relay: UDP gets no answer; connecting over TCP");
            link.attempt += 1;
            tokio::spawn(connect(dst, link.tcp, link.attempt, self.events_tx.clone()));
        }
        how == Send::Both
    }

    /// An authenticated datagram from `src` arrived over UDP.
    pub fn on_udp_from(&mut self, src: SocketAddr) {
        if let Some(link) = self.links.get_mut(&src) {
            if link.fallback.transport() == Transport::Tcp {
                info!(relay = %src, "relay: UDP answers again; leaving TCP");
                // Closing tells the relay to answer over UDP too (it moves
                // us off the closed connection's address).
                link.writer = None;
                link.pending_initiation = None;
                link.attempt += 1;
                link.fallback.reset_connection();
            }
            link.fallback.on_udp_received();
        }
    }

    /// An authenticated datagram arrived on `from`'s connection (serving):
    /// it is a member's, keep it open.
    pub fn on_authenticated(&mut self, now: Instant, from: SocketAddr) {
        if let Some(c) = self.inbound.get_mut(&from) {
            c.last_auth = Some(now);
        }
    }

    /// Close inbound connections that carry nothing authenticated; returns
    /// their stream addresses (each for `Node::handle_path_lost`).
    pub fn sweep(&mut self, now: Instant) -> Vec<SocketAddr> {
        let stale: Vec<SocketAddr> = self
            .inbound
            .iter()
            .filter(|(_, c)| match c.last_auth {
                None => now.saturating_duration_since(c.accepted) >= AUTH_WITHIN,
                Some(t) => now.saturating_duration_since(t) >= IDLE,
            })
            .map(|(a, _)| *a)
            .collect();
        for a in &stale {
            if let Some(c) = self.inbound.remove(a) {
                debug!(from = %c.real, "relay: closing a TCP connection that carries nothing authenticated");
                c.abort.abort();
            }
        }
        stale
    }

    /// How datagrams for `addr` travel, for `status`: "tcp" for a member's
    /// connection to us and for a relay whose traffic takes TCP, else "udp".
    pub fn transport(&self, addr: SocketAddr) -> &'static str {
        let link_tcp = self
            .links
            .get(&addr)
            .is_some_and(|l| l.fallback.transport() == Transport::Tcp);
        if is_stream_addr(addr) || link_tcp {
            "tcp"
        } else {
            "udp"
        }
    }

    /// Is the relay at `udp` reached over a TCP connection that is up?
    pub fn connected_to(&self, udp: SocketAddr) -> bool {
        self.links
            .get(&udp)
            .is_some_and(|l| l.fallback.transport() == Transport::Tcp && l.fallback.connected())
    }

    /// `addr` as `status` shows it: a stream address as the connection's
    /// real remote address.
    pub fn display(&self, addr: SocketAddr) -> String {
        match self.inbound.get(&addr) {
            Some(c) => format!("{} (TCP)", c.real),
            None if is_stream_addr(addr) => "a closed TCP connection".to_string(),
            None => addr.to_string(),
        }
    }

    /// The next datagram read from any connection, or a member's connection
    /// gone (cancel-safe).
    pub async fn recv(&mut self) -> Option<TcpIn> {
        loop {
            match self.events_rx.recv().await? {
                Event::Datagram(d) => {
                    if let Some(link) = self.links.get_mut(&d.from) {
                        link.fallback.on_tcp_received();
                    }
                    return Some(TcpIn::Datagram(d));
                }
                Event::Connected {
                    relay,
                    attempt,
                    writer,
                } => {
                    let Some(link) = self.links.get_mut(&relay).filter(|l| l.attempt == attempt)
                    else {
                        continue; // dropping the writer closes it
                    };
                    if link.fallback.transport() == Transport::Udp {
                        // UDP came back while we were connecting: dropping
                        // the writer closes the connection.
                        link.attempt += 1;
                        link.fallback.reset_connection();
                        continue;
                    }
                    info!(relay = %relay, tcp = %link.tcp, "relay: connected over TCP");
                    link.fallback.on_connected();
                    if let Some(init) = link.pending_initiation.take() {
                        queue(&writer, &init);
                    }
                    link.writer = Some(writer);
                }
                Event::LinkClosed { relay, attempt } => {
                    if let Some(link) = self.links.get_mut(&relay).filter(|l| l.attempt == attempt)
                    {
                        link.writer = None;
                        link.fallback.on_closed(Instant::now());
                    }
                }
                Event::Accepted {
                    addr,
                    real,
                    writer,
                    abort,
                } => {
                    let from_ip = self
                        .inbound
                        .values()
                        .filter(|c| same_source(c.real, real))
                        .count();
                    if from_ip >= MAX_PER_IP {
                        debug!(from = %real, "relay: too many TCP connections from one address; closing the new one");
                        abort.abort();
                        continue;
                    }
                    if self.inbound.len() >= MAX_INBOUND {
                        // Full: a stranger holding slots open must not keep
                        // members out, so the oldest connection that never
                        // carried an authenticated datagram makes room.
                        let oldest = self
                            .inbound
                            .iter()
                            .filter(|(_, c)| c.last_auth.is_none())
                            .min_by_key(|(_, c)| c.accepted)
                            .map(|(a, _)| *a);
                        let Some(victim) = oldest else {
                            debug!(from = %real, "relay: TCP connections full of members; closing the new one");
                            abort.abort();
                            continue;
                        };
                        if let Some(c) = self.inbound.remove(&victim) {
                            debug!(from = %c.real, "relay: TCP connections full; closing the oldest unauthenticated one");
                            c.abort.abort();
                        }
                    }
                    debug!(from = %real, "relay: TCP connection accepted");
                    self.inbound.insert(
                        addr,
                        Inbound {
                            real,
                            writer,
                            abort,
                            accepted: Instant::now(),
                            last_auth: None,
                        },
                    );
                }
                Event::InboundClosed { addr } => {
                    if let Some(c) = self.inbound.remove(&addr) {
                        debug!(from = %c.real, "relay: TCP connection closed");
                        return Some(TcpIn::Lost(addr));
                    }
                }
            }
        }
    }
}

/// Do `a` and `b` count as one source for [`MAX_PER_IP`]? The same IPv4
/// address, or the same IPv6 /64 (what one host or home gets).
fn same_source(a: SocketAddr, b: SocketAddr) -> bool {
    match (a.ip(), b.ip()) {
        (std::net::IpAddr::V6(x), std::net::IpAddr::V6(y)) => {
            x.segments()[..4] == y.segments()[..4]
        }
        (x, y) => x == y,
    }
}

/// Queue one framed datagram; false when the connection's queue is full.
fn queue(writer: &mpsc::Sender<Vec<u8>>, datagram: &[u8]) -> bool {
    let mut frame = Vec::with_capacity(datagram.len() + 2);
    if emit_stream_frame(datagram, &mut frame).is_err() {
        return false;
    }
    writer.try_send(frame).is_ok()
}

async fn accept_loop(listener: TcpListener, events: mpsc::Sender<Event>) {
    // Tasks alive; a backstop for the loop's own cap, which it checks only
    // when it hears of the connection.
    let open = Arc::new(AtomicUsize::new(0));
    let next = AtomicU64::new(1);
    loop {
        let (stream, real) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                warn!(error = %e, "relay: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= 2 * MAX_INBOUND {
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let addr = stream_addr(next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let events2 = events.clone();
        let open2 = open.clone();
        // The loop hears of the connection before any datagram from it.
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Counted down however the task ends, aborted included.
            let _open = OpenGuard(open2);
            if go_rx.await.is_ok() {
                serve_connection(stream, addr, rx, &events2).await;
            }
            let _ = events2.send(Event::InboundClosed { addr }).await;
        });
        let abort = task.abort_handle();
        if events
            .send(Event::Accepted {
                addr,
                real,
                writer: tx,
                abort: abort.clone(),
            })
            .await
            .is_err()
        {
            abort.abort();
            return;
        }
        let _ = go_tx.send(());
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection until either direction ends: datagrams read are
/// reported as coming from `from`; frames from `rx` are written.
async fn serve_connection(
    stream: TcpStream,
    from: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    events: &mpsc::Sender<Event>,
) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    tokio::select! {
        () = read_loop(read, from, events) => {}
        () = write_loop(write, rx) => {}
    }
}

/// The relay's listener, marked like every underlay socket: its accepted
/// connections (and their SYN-ACKs) take the listener's mark, so they do
/// not follow a default route into the tunnel either.
fn listen(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    super::routes::mark_or_log(socket.as_raw_fd(), "relay TCP listener");
    socket.bind(SocketAddr::from(([0, 0, 0, 0], port)))?;
    socket.listen(1024)
}

/// A connection to a relay, marked (see [`listen`]).
async fn dial(tcp: SocketAddr) -> io::Result<TcpStream> {
    let socket = match tcp {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    super::routes::mark_or_log(socket.as_raw_fd(), "relay TCP");
    socket.connect(tcp).await
}

async fn connect(relay: SocketAddr, tcp: SocketAddr, attempt: u64, events: mpsc::Sender<Event>) {
    match tokio::time::timeout(CONNECT_TIMEOUT, dial(tcp)).await {
        Ok(Ok(stream)) => {
            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
            if events
                .send(Event::Connected {
                    relay,
                    attempt,
                    writer: tx,
                })
                .await
                .is_ok()
            {
                serve_connection(stream, relay, rx, &events).await;
            }
            info!(%relay, %tcp, "relay: TCP connection closed");
        }
        Ok(Err(e)) => debug!(%relay, %tcp, error = %e, "relay: TCP connect failed"),
        Err(_) => debug!(%relay, %tcp, "relay: TCP connect timed out"),
    }
    let _ = events.send(Event::LinkClosed { relay, attempt }).await;
}

/// Datagrams from the connection, as coming from `from`, until it closes
/// or breaks the framing.
async fn read_loop(mut read: OwnedReadHalf, from: SocketAddr, events: &mpsc::Sender<Event>) {
    let mut decoder = StreamDecoder::with_max(MAX_STREAM_DATAGRAM);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame() {
            let Ok(data) = frame else {
                debug!(%from, "relay: broken TCP framing; closing");
                return;
            };
            let d = TcpDatagram {
                from,
                data: data.to_vec(),
            };
            if events.send(Event::Datagram(d)).await.is_err() {
                return;
            }
        }
    }
}

/// Frames to the connection, several per write when they queue up. Ends
/// when the loop drops the sender, or a write stalls for [`WRITE_TIMEOUT`].
async fn write_loop(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut out = Vec::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        out.clear();
        out.extend_from_slice(&frame);
        while out.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(f) => out.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_addresses_are_never_udp_sources() {
        for n in [1u64, 2, 0xffff, 1 << 40] {
            let a = stream_addr(n);
            assert!(is_stream_addr(a), "{a}");
        }
        assert_ne!(stream_addr(1), stream_addr(2));
        for a in [
            "198.18.3.2:51871",
            "[2001:db8::1]:51871",
            "[::ffff:198.18.3.2]:1",
        ] {
            assert!(!is_stream_addr(a.parse().unwrap()), "{a}");
        }
    }
}
