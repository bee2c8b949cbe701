//! Discovery: finding peers' current candidate addresses without any server
//! of anyone's.
//!
//! Owns the DHT rendezvous (each node publishes a signed, encrypted BEP 44
//! record under its own key and resolves its peers' records), the on-disk
//! cache of last good candidates, and where each candidate came from. It
//! never chooses paths or opens tunnels: candidates go to the core, which
//! tries them.

pub mod cache;
pub mod dht;
pub mod record;
pub mod rendezvous;

use std::net::SocketAddr;

/// What kind of address a candidate is, in the publisher's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// A host address on one of the publisher's interfaces (LAN).
    Local,
    /// The publisher's address as a STUN server saw it.
    Reflexive,
    /// An address the publisher's router mapped for it (UPnP IGD, NAT-PMP, PCP).
    Mapped,
}

/// One address a peer may be reachable at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    pub kind: CandidateKind,
    pub addr: SocketAddr,
}

/// Where a peer's current candidates came from (shown by `kith status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `endpoint = "…"` in the config.
    Static,
    /// The peer's DHT record.
    Dht,
    /// The on-disk cache of the last candidates that worked.
    Cache,
    /// The address an authenticated packet from the peer came from.
    Roaming,
    /// The peer's record, pushed to us over an authenticated session.
    Peer,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Static => "static",
            Source::Dht => "dht",
            Source::Cache => "cache",
            Source::Roaming => "roaming",
            Source::Peer => "peer",
        })
    }
}
