//! The hard side's extra sockets for hard-NAT traversal
//! ([`crate::nat::punch`]), and the routes they leave behind.
//!
//! A pool is a set of UDP sockets opened for one peer; each one's packets
//! to the peer's public address get their own mapping on our
//! endpoint-dependent NAT. A reader task per socket hands datagrams to the
//! shell, but only those from the addresses the pool sends to: nobody else
//! has a reason to reach these ports. When one arrives, that socket becomes
//! the route to its sender: every later packet to that address leaves from
//! it, so the peer keeps seeing the one mapping that got through. The rest
//! of the pool closes when the attempt ends.

use std::collections::HashMap;
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

struct Pool {
    peer: PeerId,
    targets: Vec<SocketAddr>,
    /// `None` once closed (the slot keeps socket numbers stable).
    members: Vec<Option<Member>>,
}

/// Datagrams the readers may queue before they wait for the shell.
const QUEUE: usize = 1024;

pub struct Pools {
    pools: Vec<Pool>,
    /// Remote address → the pool socket that reaches it.
    routes: HashMap<SocketAddr, Arc<UdpSocket>>,
    tx: mpsc::Sender<PoolDatagram>,
    rx: mpsc::Receiver<PoolDatagram>,
}

impl Pools {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            pools: Vec::new(),
            routes: HashMap::new(),
            tx,
            rx,
        }
    }

    /// Open `n` sockets for `peer` that take datagrams from `targets` only.
    /// Replaces an earlier pool for the same peer (keeping its routes).
    pub fn open(&mut self, peer: PeerId, n: usize, targets: Vec<SocketAddr>) -> io::Result<()> {
        self.close(peer);
        self.pools.retain(|p| p.peer != peer);
        let mut members = Vec::with_capacity(n);
        for socket in 0..n {
            let std = match std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
                Ok(s) => s,
                // Out of file descriptors: punch with what we have.
                Err(e) if socket > 0 => {
                    debug!(error = %e, opened = socket, "hard NAT: fewer sockets than planned");
                    break;
                }
                Err(e) => return Err(e),
            };
            std.set_nonblocking(true)?;
            let sock = Arc::new(UdpSocket::from_std(std)?);
            let reader = tokio::spawn(read(
                sock.clone(),
                peer,
                socket,
                targets.clone(),
                self.tx.clone(),
            ));
            members.push(Some(Member { sock, reader }));
        }
        debug!(
            peer = peer.0,
            sockets = members.len(),
            ?targets,
            "hard NAT: socket pool open"
        );
        self.pools.push(Pool {
            peer,
            targets,
            members,
        });
        Ok(())
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

    /// A datagram came in on a pool socket: from now on that socket is the
    /// way to its sender.
    pub fn learn(&mut self, d: &PoolDatagram) {
        let Some(pool) = self.pools.iter().find(|p| p.peer == d.peer) else {
            return;
        };
        let Some(Some(m)) = pool.members.get(d.socket) else {
            return;
        };
        let known = self
            .routes
            .get(&d.from)
            .is_some_and(|s| Arc::ptr_eq(s, &m.sock));
        if !known {
            info!(peer = d.peer.0, addr = %d.from, socket = d.socket, "hard NAT: a probe got through; this socket now carries the peer's traffic");
            self.routes.insert(d.from, m.sock.clone());
        }
    }

    /// The socket to send to `dst` from, when it is not the data socket.
    pub fn route(&self, dst: SocketAddr) -> Option<&UdpSocket> {
        if self.routes.is_empty() {
            return None;
        }
        self.routes.get(&dst).map(|s| s.as_ref())
    }

    /// End the attempt: close every socket of the peer's pool that is not a
    /// route.
    pub fn close(&mut self, peer: PeerId) {
        let routes = &self.routes;
        for pool in self.pools.iter_mut().filter(|p| p.peer == peer) {
            for slot in pool.members.iter_mut() {
                let keep = slot
                    .as_ref()
                    .is_some_and(|m| routes.values().any(|r| Arc::ptr_eq(r, &m.sock)));
                if !keep && let Some(m) = slot.take() {
                    m.reader.abort();
                }
            }
        }
        self.pools.retain(|p| p.members.iter().any(Option::is_some));
    }

    /// The peer moved on (a new path, or gone): drop its routes and sockets.
    pub fn forget(&mut self, peer: PeerId) {
        let mut socks = Vec::new();
        for pool in self.pools.iter_mut().filter(|p| p.peer == peer) {
            for m in pool.members.iter_mut().filter_map(Option::take) {
                m.reader.abort();
                socks.push(m.sock);
            }
        }
        self.routes
            .retain(|_, s| !socks.iter().any(|x| Arc::ptr_eq(x, s)));
        self.pools.retain(|p| p.peer != peer);
    }

    /// Addresses a pool socket routes to for `peer`.
    pub fn routed(&self, peer: PeerId) -> Vec<SocketAddr> {
        let socks: Vec<&Arc<UdpSocket>> = self
            .pools
            .iter()
            .filter(|p| p.peer == peer)
            .flat_map(|p| p.members.iter().flatten().map(|m| &m.sock))
            .collect();
        self.routes
            .iter()
            .filter(|(_, s)| socks.iter().any(|x| Arc::ptr_eq(x, s)))
            .map(|(a, _)| *a)
            .collect()
    }

    pub async fn recv(&mut self) -> Option<PoolDatagram> {
        self.rx.recv().await
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for m in self
            .pools
            .iter_mut()
            .flat_map(|p| p.members.iter_mut())
            .flatten()
        {
            m.reader.abort();
        }
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
            Err(e) => {
                debug!(error = %e, "hard NAT: pool socket read failed");
                return;
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
