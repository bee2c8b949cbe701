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

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

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
    member: Member,
}

/// Datagrams the readers may queue before they wait for the shell (the
/// route carries a hard-NAT peer's traffic through here).
const QUEUE: usize = 256;

pub struct Pools {
    pools: Vec<Pool>,
    routes: Vec<Route>,
    tx: mpsc::Sender<PoolDatagram>,
    rx: mpsc::Receiver<PoolDatagram>,
}

impl Pools {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            pools: Vec::new(),
            routes: Vec::new(),
            tx,
            rx,
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
        info!(peer = d.peer.0, addr = %d.from, socket = d.socket, "hard NAT: a probe got through; this socket now carries the peer's traffic");
        // It carries a tunnel now: the data socket's buffer sizes.
        super::socket::size_buffers(std::os::fd::AsRawFd::as_raw_fd(member.sock.as_ref()));
        self.routes.retain(|r| r.addr != d.from);
        self.routes.push(Route {
            peer: d.peer,
            addr: d.from,
            member,
        });
    }

    /// The socket to send to `dst` from, when it is not the data socket.
    pub fn route(&self, dst: SocketAddr) -> Option<&UdpSocket> {
        self.routes
            .iter()
            .find(|r| r.addr == dst)
            .map(|r| r.member.sock.as_ref())
    }

    /// End the attempt: close the peer's pool sockets that are not routes.
    pub fn close(&mut self, peer: PeerId) {
        self.pools.retain(|p| p.peer != peer);
    }

    /// The peer is gone or starts over: drop its pool and routes.
    pub fn forget(&mut self, peer: PeerId) {
        self.close(peer);
        self.routes.retain(|r| r.peer != peer);
    }

    /// Keep only the routes `keep(peer, addr)` still wants (the peer's
    /// current endpoint): a peer that moved on leaves no socket behind.
    pub fn retain_routes(&mut self, mut keep: impl FnMut(PeerId, SocketAddr) -> bool) {
        self.routes.retain(|r| keep(r.peer, r.addr));
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
