//! The hard side's extra sockets for hard-NAT traversal
//! ([`crate::nat::punch`]), and the routes they leave behind.
//!
//! A pool is a set of UDP sockets opened for one peer; each one's packets
//! to the peer's public address get their own mapping on our
//! endpoint-dependent NAT. A reader task per socket hands datagrams to the
//! shell, but only those from the addresses the pool sends to: nobody else
//! has a reason to reach these ports. When one of them authenticates, that
//! socket becomes the route to its sender: every later packet to that
//! address leaves from it, so the peer keeps seeing the one mapping that got
//! through. The rest of the pool closes when the attempt ends; a route goes
//! when the peer's endpoint moves elsewhere or a new attempt starts.
//!
//! A route's socket carries the tunnel, so it leaves tokio: its reader
//! stops and the data plane reads and sends on it (`daemon::data`, handed
//! over with [`Pools::sockets`]) like the data socket, with GSO, GRO and
//! nothing allocated per packet. The control plane keeps a handle to send
//! its own datagrams (handshakes, keepalives) from the same port.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::socket::Udp;
use crate::core::PeerId;

/// A datagram that arrived on a pool socket.
pub struct PoolDatagram {
    pub peer: PeerId,
    pub socket: usize,
    pub from: SocketAddr,
    pub data: Vec<u8>,
}

struct Member {
    sock: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

impl Drop for Member {
    /// A dropped `JoinHandle` leaves its task running (and the socket
    /// open): stop the reader with the member.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Pool {
    peer: PeerId,
    targets: Vec<SocketAddr>,
    /// `None` once taken for a route (the slot keeps socket numbers stable).
    members: Vec<Option<Member>>,
}

/// A pool socket that got an authenticated answer: the way to `addr`.
struct Route {
    peer: PeerId,
    addr: SocketAddr,
    sock: Arc<Udp>,
}

/// Datagrams the readers may queue before they wait for the shell (the
/// route carries a hard-NAT peer's traffic through here).
const QUEUE: usize = 256;

pub struct Pools {
    pools: Vec<Pool>,
    routes: Vec<Route>,
    tx: mpsc::Sender<PoolDatagram>,
    rx: mpsc::Receiver<PoolDatagram>,
    /// Bumped whenever `routes` changes: the data plane needs the new set.
    generation: u64,
}

impl Pools {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            pools: Vec::new(),
            routes: Vec::new(),
            tx,
            rx,
            generation: 0,
        }
    }

    /// Open up to `n` sockets for `peer` that take datagrams from `targets`
    /// only. A new attempt means the old path failed: the peer's earlier
    /// pool and routes go.
    pub fn open(&mut self, peer: PeerId, n: usize, targets: Vec<SocketAddr>) -> io::Result<usize> {
        self.forget(peer);
        let mut members = Vec::with_capacity(n);
        for socket in 0..n {
            match self.member(peer, socket, &targets) {
                Ok(m) => members.push(Some(m)),
                // Out of file descriptors: punch with what we have.
                Err(e) if socket > 0 => {
                    debug!(error = %e, opened = socket, "hard NAT: fewer sockets than planned");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let opened = members.len();
        debug!(
            peer = peer.0,
            sockets = opened,
            ?targets,
            "hard NAT: socket pool open"
        );
        self.pools.push(Pool {
            peer,
            targets,
            members,
        });
        Ok(opened)
    }

    fn member(&self, peer: PeerId, socket: usize, targets: &[SocketAddr]) -> io::Result<Member> {
        let std = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        super::routes::mark_or_log(std::os::fd::AsRawFd::as_raw_fd(&std), "hard-NAT pool");
        std.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(std)?);
        let reader = tokio::spawn(read(
            sock.clone(),
            peer,
            socket,
            targets.to_vec(),
            self.tx.clone(),
        ));
        Ok(Member { sock, reader })
    }

    /// Send `payload` from pool socket `socket` of `peer` to each target.
    pub async fn send(&self, peer: PeerId, socket: usize, payload: &[u8]) {
        let Some(pool) = self.pools.iter().find(|p| p.peer == peer) else {
            return;
        };
        let Some(Some(m)) = pool.members.get(socket) else {
            return;
        };
        for dst in &pool.targets {
            if let Err(e) = m.sock.send_to(payload, dst).await {
                debug!(addr = %dst, error = %e, "hard NAT: pool send failed");
            }
        }
    }

    /// An authenticated packet came in on a pool socket: from now on that
    /// socket is the way to its sender. Call before the answer is sent.
    pub fn learn(&mut self, d: &PoolDatagram) {
        let Some(pool) = self.pools.iter_mut().find(|p| p.peer == d.peer) else {
            return;
        };
        let Some(member) = pool.members.get_mut(d.socket).and_then(Option::take) else {
            return;
        };
        // Its reader stops with `member` (the data plane reads it from
        // now on; two readers would split the peer's datagrams), and the
        // port lives on in a descriptor of its own.
        let sock = data_socket(&member.sock).or_else(|e| {
            // The pool may hold every descriptor we may open: the rest of
            // it makes room (this attempt has found its path).
            debug!(error = %e, "hard NAT: closing the rest of the pool to take the route's socket");
            pool.members.iter_mut().for_each(|m| *m = None);
            data_socket(&member.sock)
        });
        let sock = match sock {
            Ok(sock) => Arc::new(sock),
            Err(e) => {
                // It stays a pool socket (its reader still hands its
                // datagrams over), so a later answer may still make it a
                // route.
                warn!(peer = d.peer.0, error = %e, "hard NAT: a probe got through, but its socket cannot be taken for the route");
                pool.members[d.socket] = Some(member);
                return;
            }
        };
        info!(peer = d.peer.0, addr = %d.from, socket = d.socket, "hard NAT: a probe got through; this socket now carries the peer's traffic");
        self.routes.retain(|r| r.addr != d.from);
        self.routes.push(Route {
            peer: d.peer,
            addr: d.from,
            sock,
        });
        self.generation += 1;
    }

    /// The socket to send to `dst` from, when it is not the data socket.
    pub fn route(&self, dst: SocketAddr) -> Option<&Udp> {
        self.routes
            .iter()
            .find(|r| r.addr == dst)
            .map(|r| r.sock.as_ref())
    }

    /// A number that changes whenever the routes do.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every route's address and socket, for the data plane.
    pub fn sockets(&self) -> Vec<(SocketAddr, Arc<Udp>)> {
        let routes = self.routes.iter().map(|r| (r.addr, r.sock.clone()));
        routes.collect()
    }

    /// End the attempt: close the peer's pool sockets that are not routes.
    pub fn close(&mut self, peer: PeerId) {
        self.pools.retain(|p| p.peer != peer);
    }

    /// The peer is gone or starts over: drop its pool and routes.
    pub fn forget(&mut self, peer: PeerId) {
        self.close(peer);
        self.retain_routes(|p, _| p != peer);
    }

    /// Keep only the routes `keep(peer, addr)` still wants (the peer's
    /// current endpoint): a peer that moved on leaves no socket behind.
    pub fn retain_routes(&mut self, mut keep: impl FnMut(PeerId, SocketAddr) -> bool) {
        let before = self.routes.len();
        self.routes.retain(|r| keep(r.peer, r.addr));
        if self.routes.len() != before {
            self.generation += 1;
        }
    }

    /// Addresses a pool socket routes to for `peer`.
    pub fn routed(&self, peer: PeerId) -> impl Iterator<Item = SocketAddr> + '_ {
        self.routes
            .iter()
            .filter(move |r| r.peer == peer)
            .map(|r| r.addr)
    }

    pub async fn recv(&mut self) -> Option<PoolDatagram> {
        self.rx.recv().await
    }
}

/// A second descriptor for `sock`, set up as a data socket.
fn data_socket(sock: &UdpSocket) -> io::Result<Udp> {
    use std::os::fd::AsFd;
    let fd = sock.as_fd().try_clone_to_owned()?;
    Udp::adopt(std::net::UdpSocket::from(fd))
}

async fn read(
    sock: Arc<UdpSocket>,
    peer: PeerId,
    socket: usize,
    targets: Vec<SocketAddr>,
    tx: mpsc::Sender<PoolDatagram>,
) {
    let mut buf = vec![0u8; crate::wire::MAX_DATAGRAM];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here; the socket
            // still works.
            Err(e) => {
                debug!(error = %e, "hard NAT: pool socket read failed");
                continue;
            }
        };
        if !targets.contains(&from) {
            continue;
        }
        let d = PoolDatagram {
            peer,
            socket,
            from,
            data: buf[..n].to_vec(),
        };
        if tx.send(d).await.is_err() {
            return;
        }
    }
}
