//! The relay's TCP transport, for members whose network blocks UDP: kith
//! datagrams, length-prefixed ([`crate::wire::StreamDecoder`]), over TCP.
//!
//! Two roles, both transparent to the core, which keeps addressing peers by
//! socket address:
//! - **Serving** (`[relay] serve = true` with a `tcp_port`): a listener
//!   whose connections carry datagrams like the UDP socket does. A datagram
//!   read from a connection is handed to the core as if it came from the
//!   connection's remote address, and whatever the core sends to that
//!   address goes back on the connection.
//! - **Using**: for each peer with a `tcp_port` (a relay reached by its UDP
//!   endpoint), [`TcpFallback`] decides per datagram whether UDP or TCP
//!   carries it; over TCP, datagrams read back are handed to the core as if
//!   they came from the peer's UDP endpoint.
//!
//! Each connection has a reader task and a writer task; the loop hears of
//! datagrams and of connections opening and closing through one bounded
//! channel, and writes through a bounded channel per connection (full =
//! dropped, as a UDP socket's full buffer would). Connections are capped,
//! and one idle for [`IDLE`] is closed (members send keepalives every
//! 25 s).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::relay::fallback::{Send, TcpFallback, Transport};
use crate::wire::{StreamDecoder, TYPE_INITIATION, emit_stream_frame};

/// Inbound connections at most (each costs two tasks and two buffers).
pub const MAX_INBOUND: usize = 256;
/// A connection that carries nothing for this long is closed.
pub const IDLE: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued per connection before new ones are dropped.
const WRITE_QUEUE: usize = 1024;
const EVENT_QUEUE: usize = 4096;

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
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A member connected to us (by its TCP address).
    Accepted {
        from: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// A connection to a relay closed or could not be opened.
    LinkClosed { relay: SocketAddr },
    InboundClosed { from: SocketAddr },
}

/// A relay we may reach over TCP.
struct Link {
    tcp: SocketAddr,
    fallback: TcpFallback,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    /// The last initiation sent, sent again as soon as a connection opens
    /// (it was dropped, or lost over UDP, while there was none).
    pending_initiation: Option<Vec<u8>>,
}

pub struct TcpTransport {
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    inbound: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    links: HashMap<SocketAddr, Link>,
    listen_port: Option<u16>,
    /// Frames dropped because a connection's queue was full or missing.
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
            let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
            info!(port, "relay: listening on TCP");
            tokio::spawn(accept_loop(listener, events_tx.clone()));
        }
        let links = links
            .into_iter()
            .map(|(udp, tcp)| {
                (
                    udp,
                    Link {
                        tcp,
                        fallback: TcpFallback::default(),
                        writer: None,
                        pending_initiation: None,
                    },
                )
            })
            .collect();
        Ok(Self {
            events_tx,
            events_rx,
            inbound: HashMap::new(),
            links,
            listen_port,
            dropped: 0,
        })
    }

    pub fn listen_port(&self) -> Option<u16> {
        self.listen_port
    }

    /// True when nothing can ever go over TCP (the common case): the data
    /// path then skips every lookup.
    pub fn idle(&self) -> bool {
        self.links.is_empty() && self.inbound.is_empty()
    }

    /// Might datagrams for `dst` go over TCP (checked once per GSO run)?
    pub fn involves(&self, dst: SocketAddr) -> bool {
        !self.idle() && (self.inbound.contains_key(&dst) || self.links.contains_key(&dst))
    }

    /// Hand `datagram` for `dst` to TCP if that is its way. Returns true
    /// when UDP must carry it too (or alone).
    pub fn send(&mut self, now: Instant, dst: SocketAddr, datagram: &[u8]) -> bool {
        if let Some(writer) = self.inbound.get(&dst) {
            if !queue(writer, datagram) {
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
        match &link.writer {
            Some(w) => {
                if !queue(w, datagram) {
                    self.dropped += 1;
                }
            }
            None => {
                if link.fallback.should_connect(now) {
                    info!(relay = %dst, tcp = %link.tcp, "relay: UDP gets no answer; connecting over TCP");
                    tokio::spawn(connect(dst, link.tcp, self.events_tx.clone()));
                }
            }
        }
        how == Send::Both
    }

    /// A datagram from `src` arrived over UDP.
    pub fn on_udp_from(&mut self, src: SocketAddr) {
        if let Some(link) = self.links.get_mut(&src) {
            if link.fallback.transport() == Transport::Tcp {
                info!(relay = %src, "relay: UDP answers again; leaving TCP");
                // Closing tells the relay to answer over UDP too (it moves
                // us off the closed connection's address).
                link.writer = None;
            }
            link.fallback.on_udp_received();
        }
    }

    /// How we reach the relay at `udp` ("udp" or "tcp"), for `status`.
    pub fn transport_to(&self, udp: SocketAddr) -> &'static str {
        match self.links.get(&udp).map(|l| l.fallback.transport()) {
            Some(Transport::Tcp) => "tcp",
            _ => "udp",
        }
    }

    /// Is `addr` a member connected to us over TCP?
    pub fn is_inbound(&self, addr: SocketAddr) -> bool {
        self.inbound.contains_key(&addr)
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
                Event::Connected { relay, writer } => {
                    let Some(link) = self.links.get_mut(&relay) else {
                        continue;
                    };
                    info!(relay = %relay, tcp = %link.tcp, "relay: connected over TCP");
                    link.fallback.on_connected();
                    if let Some(init) = link.pending_initiation.take() {
                        queue(&writer, &init);
                    }
                    link.writer = Some(writer);
                }
                Event::LinkClosed { relay } => {
                    if let Some(link) = self.links.get_mut(&relay) {
                        link.writer = None;
                        link.fallback.on_closed(Instant::now());
                    }
                }
                Event::Accepted { from, writer } => {
                    debug!(%from, "relay: TCP connection accepted");
                    self.inbound.insert(from, writer);
                }
                Event::InboundClosed { from } => {
                    debug!(%from, "relay: TCP connection closed");
                    self.inbound.remove(&from);
                    return Some(TcpIn::Lost(from));
                }
            }
        }
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
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                warn!(error = %e, "relay: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_INBOUND {
            debug!(%from, "relay: too many TCP connections; refusing one");
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (events, open) = (events.clone(), open.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
            tokio::spawn(write_loop(write, rx));
            if events
                .send(Event::Accepted { from, writer: tx })
                .await
                .is_ok()
            {
                read_loop(read, from, &events).await;
                let _ = events.send(Event::InboundClosed { from }).await;
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connect(relay: SocketAddr, tcp: SocketAddr, events: mpsc::Sender<Event>) {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(tcp)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            let (tx, rx) = mpsc::channel(WRITE_QUEUE);
            tokio::spawn(write_loop(write, rx));
            if events
                .send(Event::Connected { relay, writer: tx })
                .await
                .is_ok()
            {
                read_loop(read, relay, &events).await;
            }
            info!(%relay, %tcp, "relay: TCP connection closed");
        }
        Ok(Err(e)) => debug!(%relay, %tcp, error = %e, "relay: TCP connect failed"),
        Err(_) => debug!(%relay, %tcp, "relay: TCP connect timed out"),
    }
    let _ = events.send(Event::LinkClosed { relay }).await;
}

/// Datagrams from the connection, as coming from `from`, until it closes,
/// breaks the framing, or idles for [`IDLE`].
async fn read_loop(mut read: OwnedReadHalf, from: SocketAddr, events: &mpsc::Sender<Event>) {
    let mut decoder = StreamDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tokio::time::timeout(IDLE, read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
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

/// Frames to the connection, several per write when they queue up.
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
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}
