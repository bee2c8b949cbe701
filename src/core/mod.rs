//! Core: the sans-IO protocol engine. One entry point, [`Node`].
//!
//! Owns the Noise handshakes, sessions and their replay windows, cryptokey
//! routing, per-peer timers and endpoint roaming. It never touches a socket,
//! never reads a clock and uses only the randomness it was handed: the
//! daemon (or a simulator) feeds it events with the current time and drains
//! what it wants sent.
//!
//! Data flow:
//! - TUN → [`Node::handle_tun`] → a data message written straight into the
//!   caller's buffer ([`TunOutcome::Send`]), or queued while a handshake runs;
//! - UDP → [`Node::handle_udp`] → plaintext written into the caller's buffer
//!   ([`UdpOutcome::WriteTun`]), or a handshake step whose reply is queued;
//! - [`Node::handle_timeout`] at [`Node::poll_timeout`] runs retries,
//!   keepalives, rekeys and expiry;
//! - [`Node::poll_transmit`] / [`Node::poll_event`] drain control traffic
//!   and operator-level events;
//! - [`Node::reconfigure`] applies a reloaded config: peers matched by key
//!   keep their sessions, removed ones become tombstones (their ids are
//!   never reused), added ones get new ids and start a handshake;
//! - [`Node::push_record`] sends our record (candidates, NAT facts) to every
//!   peer with a session, and again on each new session; records peers push
//!   to us come out of [`Node::poll_peer_record`] for discovery.
//!
//! - relaying: a peer with no direct path is reached through a member that
//!   relays ([`Via::Relay`]): the end-to-end datagram is framed
//!   (`wire::relay`) and sealed again on our session with the relay; a
//!   relay ([`RelayConfig::serve`]) turns a Forward into a Deliver for the
//!   destination's session ([`UdpOutcome::Forward`]), admitted by
//!   [`crate::relay::RelayService`]. Path probes keep looking for a direct
//!   path, which wins the moment it answers; a route that goes silent under
//!   traffic is probed and left within about 2 s ([`FAILOVER_QUIET`]).
//! - introductions: a peer we have no session with gets our record, signed
//!   (`intro`), through every member we have a direct session with; a
//!   member passes it on, and the target's record comes out of
//!   [`Node::poll_peer_record`] marked [`PeerRecord::introduced_by`], so
//!   discovery starts a handshake at once and both sides punch together.
//! - [`Node::ping`] sends the operator's path ping (`kith ping`) on the
//!   route the peer's traffic takes; its pong comes out of
//!   [`Node::poll_ping_reply`] with the path and the round-trip time.
//!
//! The per-packet paths allocate nothing: handshake traffic (rare) is the
//! only thing that goes through the queue.

#![cfg_attr(not(test), deny(clippy::disallowed_methods))]

pub mod aead;
mod cookie;
pub mod data;
mod intro;
mod limiter;
mod node;
mod noise;
mod paths;
mod replay;
mod routes;
mod session;
mod timers;

#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod ping_tests;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod split;
#[cfg(test)]
mod split_tests;
#[cfg(test)]
mod tests;

pub use data::{Activity, COUNTER_BLOCK, DataPlane, DataTun, DataUdp, DataUpdate};
pub use node::*;
pub use replay::{ReplayWindow, WINDOW as REPLAY_WINDOW};
pub use timers::*;
